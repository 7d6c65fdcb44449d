//! The Gemini CLI command line for one prompt request (pure: settings come in as a value).

use gantry_guest::adapter::{AgentSettings, check_extra_flags, check_request};
use gantry_guest::types::{ApprovalMode, CommandSpec, PromptRequest, RequestError, SandboxMode};
use serde_json::json;

/// Extra flags callers may pass without the operator's say-so: none. (Gemini CLI's other
/// options load extensions, MCP servers, policies or more directories, or turn on its own
/// container sandbox; only the operator's `allowed_flags` can open them.)
pub const SAFE_FLAGS: &[&str] = &[];

/// The bypass, as refused when the operator has not set `allow_bypass`.
pub const BYPASS_FLAG: &str = "--approval-mode=yolo";

/// Where the CLI's settings go, relative to `$HOME`.
pub const SETTINGS_PATH: &str = ".gemini/settings.json";

/// The variable Gemini CLI reads its key from with API-key authentication.
const KEY_VAR: &str = "GEMINI_API_KEY";

/// Build `gemini --output-format stream-json [options] --prompt=PROMPT`, its environment and
/// its settings file. Options with a value are one `--option=value` entry (the prompt too),
/// so nothing a caller writes is read as a flag.
pub fn build(
    request: &PromptRequest,
    settings: &AgentSettings,
) -> Result<CommandSpec, RequestError> {
    check_request(request, "Gemini CLI")?;
    if request.system_prompt.is_some() {
        return Err(RequestError::Unsupported(
            "Gemini CLI can only replace its whole system prompt, from a file \
             (GEMINI_SYSTEM_MD), not add to it per run"
                .into(),
        ));
    }
    if request.max_turns.is_some() {
        return Err(RequestError::Unsupported(
            "Gemini CLI limits turns per session only (maxSessionTurns in its settings), not \
             per run"
                .into(),
        ));
    }
    if let Some(name) = &settings.api_key_env
        && name != KEY_VAR
    {
        return Err(RequestError::Invalid(format!(
            "the backend's `api_key_env` setting is {name:?}, but Gemini CLI reads its key only \
             from {KEY_VAR}"
        )));
    }
    check_extra_flags(&request.extra_flags, SAFE_FLAGS, &settings.allowed_flags)?;

    let mut args: Vec<String> = vec!["--output-format".into(), "stream-json".into()];
    // Without a model Gemini CLI routes each prompt itself (an extra classification request).
    if let Some(model) = settings.model_for(request) {
        args.push(format!("--model={model}"));
    }
    if let Some(session) = &request.resume_session {
        args.push(format!("--resume={session}"));
    }
    if let Some(mode) = approval_mode(request, settings)? {
        args.push(format!("--approval-mode={mode}"));
    }
    args.extend(request.extra_flags.iter().cloned());
    args.push(format!("--prompt={}", request.prompt));

    let mut env: Vec<(String, String)> = vec![
        // Skip the trusted-folder check (else: exit 55 in an untrusted folder).
        ("GEMINI_CLI_TRUST_WORKSPACE".into(), "true".into()),
        // One process instead of a relaunched child, so that signals reach the agent.
        ("GEMINI_CLI_NO_RELAUNCH".into(), "true".into()),
    ];
    if let Some(url) = &settings.base_url {
        env.push(("GOOGLE_GEMINI_BASE_URL".into(), url.clone()));
    }
    Ok(CommandSpec {
        args,
        env,
        stdin: None,
        files: vec![(SETTINGS_PATH.into(), settings_json(settings))],
    })
}

/// `.gemini/settings.json`: API-key authentication (else the CLI exits 41), no usage
/// statistics, telemetry or update checks, and `max_retries` retries (none by default).
pub fn settings_json(settings: &AgentSettings) -> String {
    let attempts = settings.max_retries.unwrap_or(0).saturating_add(1);
    let value = json!({
        "security": { "auth": { "selectedType": "gemini-api-key" } },
        "privacy": { "usageStatisticsEnabled": false },
        "telemetry": { "enabled": false },
        "general": {
            "enableAutoUpdate": false,
            "enableAutoUpdateNotification": false,
            "maxAttempts": attempts,
            "retryFetchErrors": false,
        },
    });
    let mut text = serde_json::to_string_pretty(&value).unwrap_or_default();
    text.push('\n');
    text
}

/// The `--approval-mode`. Gemini CLI's own sandbox is a container (`--sandbox`) and is not
/// used: `read-only` is plan mode (read-only tools), `workspace` and `full` add nothing
/// (gantry's sandbox bounds writes).
fn approval_mode(
    request: &PromptRequest,
    settings: &AgentSettings,
) -> Result<Option<&'static str>, RequestError> {
    let approval = request.approval_mode;
    if request.sandbox_mode == SandboxMode::ReadOnly {
        return match approval {
            ApprovalMode::Default | ApprovalMode::None => Ok(Some("plan")),
            ApprovalMode::Auto | ApprovalMode::Always => Err(RequestError::Invalid(format!(
                "approval mode {} contradicts sandbox mode {}",
                approval.as_str(),
                SandboxMode::ReadOnly.as_str()
            ))),
        };
    }
    Ok(match approval {
        ApprovalMode::Default => None,
        ApprovalMode::Auto => Some("auto_edit"),
        // Headless, "default" offers only the tools that need no approval.
        ApprovalMode::None => Some("default"),
        ApprovalMode::Always if settings.allow_bypass => Some("yolo"),
        ApprovalMode::Always => return Err(RequestError::FlagNotAllowed(BYPASS_FLAG.into())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn request(prompt: &str) -> PromptRequest {
        gantry_guest::adapter::plain_request(prompt)
    }

    fn settings() -> AgentSettings {
        AgentSettings {
            binary: "gemini".into(),
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
                "--output-format",
                "stream-json",
                "--prompt=say hello please"
            ]
        );
        assert_eq!(
            spec.env,
            [
                ("GEMINI_CLI_TRUST_WORKSPACE".into(), "true".into()),
                ("GEMINI_CLI_NO_RELAUNCH".into(), "true".into()),
            ]
        );
        assert_eq!(spec.stdin, None);
        assert_eq!(spec.files.len(), 1);
        assert_eq!(spec.files[0].0, ".gemini/settings.json");
        let file: Value = serde_json::from_str(&spec.files[0].1).unwrap();
        assert_eq!(
            file,
            json!({
                "security": { "auth": { "selectedType": "gemini-api-key" } },
                "privacy": { "usageStatisticsEnabled": false },
                "telemetry": { "enabled": false },
                "general": {
                    "enableAutoUpdate": false,
                    "enableAutoUpdateNotification": false,
                    "maxAttempts": 1,
                    "retryFetchErrors": false,
                },
            })
        );
    }

    #[test]
    fn fields_and_settings() {
        let mut r = request("--weird \"prompt\"");
        r.model = Some("gemini-2.5-flash".into());
        r.resume_session = Some("6efcf64b-0f78-457c-a704-6fc7252e6327".into());
        let s = AgentSettings {
            base_url: Some("http://127.0.0.1:4000".into()),
            max_retries: Some(2),
            model: Some("dflt".into()),
            api_key_env: Some("GEMINI_API_KEY".into()),
            ..settings()
        };
        let spec = build(&r, &s).unwrap();
        assert_eq!(
            spec.args,
            [
                "--output-format",
                "stream-json",
                "--model=gemini-2.5-flash",
                "--resume=6efcf64b-0f78-457c-a704-6fc7252e6327",
                "--prompt=--weird \"prompt\"",
            ]
        );
        assert!(spec.env.contains(&(
            "GOOGLE_GEMINI_BASE_URL".into(),
            "http://127.0.0.1:4000".into()
        )));
        let file: Value = serde_json::from_str(&spec.files[0].1).unwrap();
        assert_eq!(file["general"]["maxAttempts"], 3);
        // The model setting is the default; without either the CLI routes.
        assert!(args(&request("p"), &s).contains(&"--model=dflt".to_string()));
        assert!(
            !args(&request("p"), &settings())
                .iter()
                .any(|a| a.starts_with("--model"))
        );
        let bad = AgentSettings {
            api_key_env: Some("GOOGLE_API_KEY".into()),
            ..settings()
        };
        assert!(matches!(
            build(&request("p"), &bad),
            Err(RequestError::Invalid(_))
        ));
    }

    #[test]
    fn approval_and_sandbox_modes() {
        use ApprovalMode as A;
        use SandboxMode as S;
        let mode = |a, sb, bypass| {
            let mut r = request("p");
            r.approval_mode = a;
            r.sandbox_mode = sb;
            let s = AgentSettings {
                allow_bypass: bypass,
                ..settings()
            };
            build(&r, &s).map(|spec| {
                spec.args
                    .into_iter()
                    .filter(|a| a.starts_with("--approval-mode"))
                    .collect::<Vec<_>>()
            })
        };
        let ok = |v: &[&str]| Ok(v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(mode(A::Default, S::Default, false), ok(&[]));
        assert_eq!(mode(A::Default, S::Full, false), ok(&[]));
        assert_eq!(
            mode(A::Auto, S::Workspace, false),
            ok(&["--approval-mode=auto_edit"])
        );
        assert_eq!(
            mode(A::None, S::Default, false),
            ok(&["--approval-mode=default"])
        );
        assert_eq!(
            mode(A::Always, S::Default, false),
            Err(RequestError::FlagNotAllowed(BYPASS_FLAG.into()))
        );
        assert_eq!(
            mode(A::Always, S::Full, true),
            ok(&["--approval-mode=yolo"])
        );
        assert_eq!(
            mode(A::Default, S::ReadOnly, false),
            ok(&["--approval-mode=plan"])
        );
        assert_eq!(
            mode(A::None, S::ReadOnly, false),
            ok(&["--approval-mode=plan"])
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
    fn refusals() {
        let mut r = request("p");
        r.system_prompt = Some("be terse".into());
        assert!(matches!(
            build(&r, &settings()),
            Err(RequestError::Unsupported(_))
        ));
        let mut r = request("p");
        r.max_turns = Some(2);
        assert!(matches!(
            build(&r, &settings()),
            Err(RequestError::Unsupported(_))
        ));
        let mut r = request("p");
        r.args = vec!["x".into()];
        assert!(matches!(
            build(&r, &settings()),
            Err(RequestError::Unsupported(_))
        ));
        let mut r = request("p");
        r.resume_session = Some("latest".into());
        assert!(matches!(
            build(&r, &settings()),
            Err(RequestError::Invalid(_))
        ));
        for flag in [
            "--yolo",
            "-y",
            "--approval-mode=yolo",
            "--approvalMode=yolo",
            "--sandbox",
        ] {
            let mut r = request("p");
            r.extra_flags = vec![flag.into()];
            assert_eq!(
                build(&r, &settings()),
                Err(RequestError::FlagNotAllowed(flag.into())),
                "{flag}"
            );
        }
        let mut r = request("p");
        r.extra_flags = vec!["--include-directories=/srv/docs".into()];
        let s = AgentSettings {
            allowed_flags: vec!["--include-directories".into()],
            ..settings()
        };
        let a = args(&r, &s);
        // Extra flags go before the prompt.
        assert_eq!(
            a[a.len() - 2..],
            ["--include-directories=/srv/docs", "--prompt=p"]
        );
    }
}
