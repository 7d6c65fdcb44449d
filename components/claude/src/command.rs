//! The Claude Code command line for one prompt request (pure: settings come in as a value).

use gantry_guest::adapter::{AgentSettings, check_extra_flags, check_request};
use gantry_guest::types::{ApprovalMode, CommandSpec, PromptRequest, RequestError, SandboxMode};

/// Extra flags callers may pass without the operator's say-so: they change neither what the
/// agent may touch nor how it authenticates.
pub const SAFE_FLAGS: &[&str] = &[
    // Adds `stream_event` lines (raw SSE events; reported as raw events).
    "--include-partial-messages",
    // Models to fall back to when the main one is overloaded.
    "--fallback-model",
    // Reasoning effort (low, medium, high, xhigh, max).
    "--effort",
    // A spending cap for the run.
    "--max-budget-usd",
];

/// The bypass, as refused when the operator has not set `allow_bypass`.
pub const BYPASS_FLAG: &str = "--permission-mode=bypassPermissions";

/// The variables Claude Code reads its key from; `api_key_env` may name either.
const KEY_VARS: &[&str] = &["ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN"];

/// Build `claude -p --output-format stream-json --verbose [options] -- PROMPT`. Every option
/// with a value is one `--option=value` entry and the prompt follows `--`, so nothing a caller
/// writes is read as a flag.
pub fn build(
    request: &PromptRequest,
    settings: &AgentSettings,
) -> Result<CommandSpec, RequestError> {
    check_request(request, "Claude Code")?;
    if let Some(name) = &settings.api_key_env
        && !KEY_VARS.contains(&name.as_str())
    {
        return Err(RequestError::Invalid(format!(
            "the backend's `api_key_env` setting is {name:?}, but Claude Code reads its key only \
             from {}",
            KEY_VARS.join(" or ")
        )));
    }
    check_extra_flags(&request.extra_flags, SAFE_FLAGS, &settings.allowed_flags)?;

    let mut args: Vec<String> = ["-p", "--output-format", "stream-json", "--verbose"]
        .map(String::from)
        .to_vec();
    let mut env: Vec<(String, String)> = [
        // No update checks, telemetry, error reporting or other calls beyond the model API.
        ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),
        ("DISABLE_AUTOUPDATER", "1"),
        ("DISABLE_TELEMETRY", "1"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .to_vec();
    if let Some(url) = &settings.base_url {
        env.push(("ANTHROPIC_BASE_URL".into(), url.clone()));
    }
    if let Some(n) = settings.max_retries {
        env.push(("CLAUDE_CODE_MAX_RETRIES".into(), n.to_string()));
    }

    if let Some(model) = settings.model_for(request) {
        args.push(format!("--model={model}"));
    }
    if let Some(system) = &request.system_prompt {
        args.push(format!("--append-system-prompt={system}"));
    }
    if let Some(turns) = request.max_turns {
        if turns == 0 {
            return Err(RequestError::Invalid("max turns must be at least 1".into()));
        }
        args.push(format!("--max-turns={turns}"));
    }
    if let Some(session) = &request.resume_session {
        args.push(format!("--resume={session}"));
    }
    if let Some(mode) = permission_mode(request, settings)? {
        args.push(format!("--permission-mode={mode}"));
        if mode == "bypassPermissions" {
            // Claude Code refuses to bypass permissions as root unless told it is sandboxed;
            // gantry's own sandbox bounds the process.
            env.push(("IS_SANDBOX".into(), "1".into()));
        }
    }
    args.extend(request.extra_flags.iter().cloned());
    args.push("--".into());
    args.push(request.prompt.clone());
    Ok(CommandSpec {
        args,
        env,
        stdin: None,
        files: vec![],
    })
}

/// The `--permission-mode` for the request's approval and sandbox modes. Claude Code has no
/// write sandbox of its own: `read-only` becomes plan mode (read-only tools), `workspace` and
/// `full` add nothing (gantry's sandbox bounds writes).
fn permission_mode(
    request: &PromptRequest,
    settings: &AgentSettings,
) -> Result<Option<&'static str>, RequestError> {
    let approval = request.approval_mode;
    if request.sandbox_mode == SandboxMode::ReadOnly {
        return match approval {
            ApprovalMode::Default | ApprovalMode::None => Ok(Some("plan")),
            ApprovalMode::Auto | ApprovalMode::Always => Err(RequestError::Invalid(format!(
                "approval mode {} contradicts sandbox mode read-only",
                approval.as_str()
            ))),
        };
    }
    Ok(match approval {
        ApprovalMode::Default => None,
        ApprovalMode::Auto => Some("acceptEdits"),
        // Deny anything not pre-approved instead of asking.
        ApprovalMode::None => Some("dontAsk"),
        ApprovalMode::Always if settings.allow_bypass => Some("bypassPermissions"),
        ApprovalMode::Always => return Err(RequestError::FlagNotAllowed(BYPASS_FLAG.into())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(prompt: &str) -> PromptRequest {
        gantry_guest::adapter::plain_request(prompt)
    }

    fn settings() -> AgentSettings {
        AgentSettings {
            binary: "claude".into(),
            ..Default::default()
        }
    }

    fn args(r: &PromptRequest, s: &AgentSettings) -> Vec<String> {
        build(r, s).unwrap().args
    }

    #[test]
    fn minimal_command() {
        let spec = build(&request("say hello please"), &settings()).unwrap();
        assert_eq!(
            spec.args,
            [
                "-p",
                "--output-format",
                "stream-json",
                "--verbose",
                "--",
                "say hello please"
            ]
        );
        assert_eq!(
            spec.env,
            [
                (
                    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC".into(),
                    "1".into()
                ),
                ("DISABLE_AUTOUPDATER".into(), "1".into()),
                ("DISABLE_TELEMETRY".into(), "1".into()),
            ]
        );
        assert_eq!(spec.stdin, None);
        assert!(spec.files.is_empty());
    }

    #[test]
    fn every_field_maps_to_one_entry() {
        let mut r = request("--looks like a flag");
        r.model = Some("claude-opus-5-5".into());
        r.system_prompt = Some("-be terse".into());
        r.max_turns = Some(3);
        r.resume_session = Some("dfd55363-c50b-469d-ab9d-8762648ed106".into());
        r.extra_flags = vec![
            "--fallback-model=sonnet".into(),
            "--include-partial-messages".into(),
        ];
        assert_eq!(
            args(&r, &settings())[4..],
            [
                "--model=claude-opus-5-5",
                "--append-system-prompt=-be terse",
                "--max-turns=3",
                "--resume=dfd55363-c50b-469d-ab9d-8762648ed106",
                "--fallback-model=sonnet",
                "--include-partial-messages",
                "--",
                "--looks like a flag",
            ]
        );
    }

    #[test]
    fn settings_map_to_env_and_model() {
        let s = AgentSettings {
            base_url: Some("http://127.0.0.1:4000".into()),
            model: Some("claude-sonnet".into()),
            max_retries: Some(0),
            api_key_env: Some("ANTHROPIC_AUTH_TOKEN".into()),
            ..settings()
        };
        let spec = build(&request("p"), &s).unwrap();
        assert!(spec.args.contains(&"--model=claude-sonnet".to_string()));
        assert!(
            spec.env
                .contains(&("ANTHROPIC_BASE_URL".into(), "http://127.0.0.1:4000".into()))
        );
        assert!(
            spec.env
                .contains(&("CLAUDE_CODE_MAX_RETRIES".into(), "0".into()))
        );
        // The request's model wins over the setting.
        let mut r = request("p");
        r.model = Some("mine".into());
        assert!(args(&r, &s).contains(&"--model=mine".to_string()));
        // A key variable Claude Code does not read is a configuration error.
        let s = AgentSettings {
            api_key_env: Some("MY_KEY".into()),
            ..settings()
        };
        assert!(
            matches!(build(&request("p"), &s), Err(RequestError::Invalid(m)) if m.contains("MY_KEY"))
        );
    }

    #[test]
    fn approval_and_sandbox_modes() {
        let mode = |a, sb, bypass| {
            let mut r = request("p");
            r.approval_mode = a;
            r.sandbox_mode = sb;
            let s = AgentSettings {
                allow_bypass: bypass,
                ..settings()
            };
            build(&r, &s).map(|spec| {
                let flags: Vec<String> = spec
                    .args
                    .iter()
                    .filter(|a| a.starts_with("--permission-mode"))
                    .cloned()
                    .collect();
                let sandbox = spec.env.iter().any(|(k, v)| k == "IS_SANDBOX" && v == "1");
                (flags, sandbox)
            })
        };
        use ApprovalMode as A;
        use SandboxMode as S;
        let ok =
            |flags: &[&str], sandbox| Ok((flags.iter().map(|f| f.to_string()).collect(), sandbox));
        assert_eq!(mode(A::Default, S::Default, false), ok(&[], false));
        assert_eq!(
            mode(A::Auto, S::Workspace, false),
            ok(&["--permission-mode=acceptEdits"], false)
        );
        assert_eq!(
            mode(A::None, S::Full, false),
            ok(&["--permission-mode=dontAsk"], false)
        );
        assert_eq!(
            mode(A::Always, S::Default, false),
            Err(RequestError::FlagNotAllowed(BYPASS_FLAG.into()))
        );
        assert_eq!(
            mode(A::Always, S::Default, true),
            ok(&["--permission-mode=bypassPermissions"], true)
        );
        assert_eq!(
            mode(A::Default, S::ReadOnly, false),
            ok(&["--permission-mode=plan"], false)
        );
        assert_eq!(
            mode(A::None, S::ReadOnly, false),
            ok(&["--permission-mode=plan"], false)
        );
        assert!(matches!(
            mode(A::Auto, S::ReadOnly, false),
            Err(RequestError::Invalid(_))
        ));
        assert!(matches!(
            mode(A::Always, S::ReadOnly, true),
            Err(RequestError::Invalid(_))
        ));
    }

    #[test]
    fn extra_flags_are_checked() {
        let mut r = request("p");
        for flag in [
            "--dangerously-skip-permissions",
            "--permission-mode=bypassPermissions",
            "--add-dir=/",
            "--settings={}",
        ] {
            r.extra_flags = vec![flag.into()];
            assert_eq!(
                build(&r, &settings()),
                Err(RequestError::FlagNotAllowed(flag.into())),
                "{flag}"
            );
        }
        // The operator may allow more.
        r.extra_flags = vec!["--add-dir=/srv/data".into()];
        let s = AgentSettings {
            allowed_flags: vec!["--add-dir".into()],
            ..settings()
        };
        assert!(args(&r, &s).contains(&"--add-dir=/srv/data".to_string()));
        // A flag and its value as two entries: the value is refused.
        r.extra_flags = vec!["--effort".into(), "high".into()];
        assert!(
            matches!(build(&r, &settings()), Err(RequestError::FlagNotAllowed(f)) if f.starts_with("high"))
        );
    }

    #[test]
    fn refusals() {
        let mut r = request("p");
        r.args = vec!["x".into()];
        assert!(matches!(
            build(&r, &settings()),
            Err(RequestError::Unsupported(_))
        ));
        let mut r = request("p");
        r.max_turns = Some(0);
        assert!(matches!(
            build(&r, &settings()),
            Err(RequestError::Invalid(_))
        ));
        let mut r = request("p");
        r.resume_session = Some("--dangerously-skip-permissions".into());
        assert!(matches!(
            build(&r, &settings()),
            Err(RequestError::Invalid(_))
        ));
        assert!(matches!(
            build(&request(""), &settings()),
            Err(RequestError::Invalid(_))
        ));
    }
}
