//! The Codex command line for one prompt request (pure: settings come in as a value).

use gantry_guest::adapter::{AgentSettings, check_extra_flags, check_request};
use gantry_guest::types::{ApprovalMode, CommandSpec, PromptRequest, RequestError, SandboxMode};

/// Extra flags callers may pass without the operator's say-so. (`-c`, `--enable`,
/// `--add-dir`, `--image`, `--output-schema` and the like change what the agent may touch or
/// read, so only the operator's `allowed_flags` can open them.)
pub const SAFE_FLAGS: &[&str] = &[
    // Keep no session files (the run cannot be resumed).
    "--ephemeral",
    // Fail on unknown configuration keys.
    "--strict-config",
];

/// The bypass, as refused when the operator has not set `allow_bypass`.
pub const BYPASS_FLAG: &str = "--dangerously-bypass-approvals-and-sandbox";

/// The model provider gantry defines when `base_url` is set.
const PROVIDER: &str = "gantry";

/// The variables Codex's built-in OpenAI provider reads a key from; with `base_url` set,
/// `api_key_env` may name any variable.
const KEY_VARS: &[&str] = &["OPENAI_API_KEY", "CODEX_API_KEY"];

/// The codex adapter's settings: the common ones, and `external_sandbox`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// The settings every agent adapter reads.
    pub common: AgentSettings,
    /// `external_sandbox`: the process runs inside gantry's sandbox, where Codex's own
    /// (bubblewrap, or its legacy Landlock mode) cannot start: every shell command would fail.
    /// Codex then runs with `danger-full-access` and gantry's sandbox bounds it.
    pub external_sandbox: bool,
}

/// Build `codex exec --json --skip-git-repo-check [options] -- PROMPT`, or for a resumed
/// session `codex exec resume --json --skip-git-repo-check [options] -- SESSION PROMPT`.
/// Configuration goes in `-c key=value` entries (values TOML), options with a value are one
/// `--option=value` entry, and the positional arguments follow `--`, so nothing a caller writes
/// is read as a flag. Codex needs nothing on stdin (the host gives it `/dev/null`).
pub fn build(request: &PromptRequest, codex: &Settings) -> Result<CommandSpec, RequestError> {
    let settings = &codex.common;
    check_request(request, "Codex")?;
    if request.prompt == "-" {
        return Err(RequestError::Invalid(
            "a prompt of \"-\" makes Codex read its prompt from stdin".into(),
        ));
    }
    if request.max_turns.is_some() {
        return Err(RequestError::Unsupported(
            "Codex has no limit on the number of turns".into(),
        ));
    }
    check_extra_flags(&request.extra_flags, SAFE_FLAGS, &settings.allowed_flags)?;

    let mut args: Vec<String> = vec!["exec".into()];
    if request.resume_session.is_some() {
        args.push("resume".into());
    }
    args.extend(["--json".into(), "--skip-git-repo-check".into()]);
    let mut config = |key: &str, value: &str| {
        args.push("-c".into());
        args.push(format!("{key}={value}"));
    };
    // No update checks, analytics or plugin sync; give up on a dead server at once.
    config("check_for_update_on_startup", "false");
    config("analytics.enabled", "false");
    config("features.plugins", "false");
    config("features.unbounded_connection_retries", "false");
    match &settings.base_url {
        Some(url) => {
            let retries = settings.max_retries.unwrap_or(0).to_string();
            let key_var = settings.api_key_env.as_deref().unwrap_or("OPENAI_API_KEY");
            let p = format!("model_providers.{PROVIDER}");
            config("model_provider", &toml_string(PROVIDER));
            config(&format!("{p}.name"), &toml_string(PROVIDER));
            config(&format!("{p}.base_url"), &toml_string(&responses_base(url)));
            config(&format!("{p}.env_key"), &toml_string(key_var));
            config(&format!("{p}.wire_api"), &toml_string("responses"));
            config(&format!("{p}.supports_websockets"), "false");
            config(&format!("{p}.request_max_retries"), &retries);
            config(&format!("{p}.stream_max_retries"), &retries);
        }
        None => {
            if let Some(name) = &settings.api_key_env
                && !KEY_VARS.contains(&name.as_str())
            {
                return Err(RequestError::Invalid(format!(
                    "the backend's `api_key_env` setting is {name:?}, but without `base_url` \
                     Codex reads its key only from {}",
                    KEY_VARS.join(" or ")
                )));
            }
            if settings.max_retries.is_some() {
                return Err(RequestError::Invalid(
                    "the backend's `max_retries` setting needs `base_url` (it configures \
                     gantry's model provider)"
                        .into(),
                ));
            }
        }
    }
    if let Some(system) = &request.system_prompt {
        // Codex sends these as a developer message ahead of the conversation.
        config("developer_instructions", &toml_string(system));
    }
    let (sandbox, approval, bypass) = if codex.external_sandbox {
        external_modes(request, settings)?
    } else {
        modes(request, settings)?
    };
    if let Some(sandbox) = sandbox {
        // `exec resume` has no --sandbox option; the configuration key works for both.
        config("sandbox_mode", &toml_string(sandbox));
    }
    if let Some(approval) = approval {
        config("approval_policy", &toml_string(approval));
    }
    if bypass {
        args.push(BYPASS_FLAG.into());
    }
    if let Some(model) = settings.model_for(request) {
        args.push(format!("--model={model}"));
    }
    args.extend(request.extra_flags.iter().cloned());
    args.push("--".into());
    if let Some(session) = &request.resume_session {
        args.push(session.clone());
    }
    args.push(request.prompt.clone());
    Ok(CommandSpec {
        args,
        env: vec![],
        stdin: None,
        files: vec![],
    })
}

/// Codex's sandbox mode, approval policy and whether to bypass both. `codex exec` never asks
/// for approval (its policy is `never`): what the sandbox does not allow fails. So approval
/// `auto` (approve edits, refuse riskier things) is the `workspace-write` sandbox, `none` is
/// the policy `never` said explicitly, and `always` is the bypass flag, which also turns the
/// sandbox off (and so contradicts an explicit `read-only` or `workspace` sandbox).
fn modes(
    request: &PromptRequest,
    settings: &AgentSettings,
) -> Result<(Option<&'static str>, Option<&'static str>, bool), RequestError> {
    let sandbox = match request.sandbox_mode {
        SandboxMode::Default => None,
        SandboxMode::ReadOnly => Some("read-only"),
        SandboxMode::Workspace => Some("workspace-write"),
        SandboxMode::Full => Some("danger-full-access"),
    };
    let contradiction = |approval: ApprovalMode| {
        Err(RequestError::Invalid(format!(
            "approval mode {} contradicts sandbox mode {}",
            approval.as_str(),
            sandbox.unwrap_or_default()
        )))
    };
    match request.approval_mode {
        ApprovalMode::Default => Ok((sandbox, None, false)),
        ApprovalMode::None => Ok((sandbox, Some("never"), false)),
        ApprovalMode::Auto => match request.sandbox_mode {
            SandboxMode::ReadOnly => contradiction(ApprovalMode::Auto),
            SandboxMode::Default => Ok((Some("workspace-write"), None, false)),
            _ => Ok((sandbox, None, false)),
        },
        ApprovalMode::Always => match request.sandbox_mode {
            SandboxMode::ReadOnly | SandboxMode::Workspace => contradiction(ApprovalMode::Always),
            _ if !settings.allow_bypass => Err(RequestError::FlagNotAllowed(BYPASS_FLAG.into())),
            _ => Ok((None, None, true)),
        },
    }
}

/// The modes with `external_sandbox`: Codex's own sandbox stays off (`danger-full-access`)
/// and gantry's bounds the process, so sandbox modes `workspace` and `full` are what gantry
/// gives anyway and `read-only` cannot be had. Approval `auto` adds nothing, `none` is the
/// policy `never`, `always` the bypass flag (which needs `allow_bypass`).
fn external_modes(
    request: &PromptRequest,
    settings: &AgentSettings,
) -> Result<(Option<&'static str>, Option<&'static str>, bool), RequestError> {
    if request.sandbox_mode == SandboxMode::ReadOnly {
        return Err(RequestError::Unsupported(
            "this codex backend runs without Codex's own sandbox (external_sandbox), which \
             cannot start inside gantry's: read-only is not available"
                .into(),
        ));
    }
    let full = Some("danger-full-access");
    match request.approval_mode {
        ApprovalMode::Default | ApprovalMode::Auto => Ok((full, None, false)),
        ApprovalMode::None => Ok((full, Some("never"), false)),
        ApprovalMode::Always if settings.allow_bypass => Ok((None, None, true)),
        ApprovalMode::Always => Err(RequestError::FlagNotAllowed(BYPASS_FLAG.into())),
    }
}

/// The provider's base URL: `base_url` as for the other backends (the API server's root), with
/// `/v1` appended unless it already ends so (Codex posts to `BASE/responses`).
fn responses_base(url: &str) -> String {
    let url = url.trim_end_matches('/');
    if url.ends_with("/v1") {
        url.to_string()
    } else {
        format!("{url}/v1")
    }
}

/// `s` as a TOML basic string: quoted, with `"`, `\` and control characters escaped.
pub fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(prompt: &str) -> PromptRequest {
        gantry_guest::adapter::plain_request(prompt)
    }

    fn settings() -> AgentSettings {
        AgentSettings {
            binary: "codex".into(),
            ..Default::default()
        }
    }

    /// Build with the common settings `s` and no external sandbox.
    fn build(r: &PromptRequest, s: &AgentSettings) -> Result<CommandSpec, RequestError> {
        super::build(
            r,
            &Settings {
                common: s.clone(),
                external_sandbox: false,
            },
        )
    }

    fn args(r: &PromptRequest, s: &AgentSettings) -> Vec<String> {
        build(r, s).unwrap().args
    }

    /// The `-c` values of an argv, in order.
    fn configs(args: &[String]) -> Vec<String> {
        args.windows(2)
            .filter(|w| w[0] == "-c")
            .map(|w| w[1].clone())
            .collect()
    }

    /// The argv without its `-c` pairs.
    fn plain(args: &[String]) -> Vec<String> {
        let mut out = Vec::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            if a == "-c" {
                it.next();
            } else {
                out.push(a.clone());
            }
        }
        out
    }

    const BASE: [&str; 4] = [
        "check_for_update_on_startup=false",
        "analytics.enabled=false",
        "features.plugins=false",
        "features.unbounded_connection_retries=false",
    ];

    #[test]
    fn minimal_command() {
        let spec = build(&request("say hello please"), &settings()).unwrap();
        assert_eq!(
            plain(&spec.args),
            [
                "exec",
                "--json",
                "--skip-git-repo-check",
                "--",
                "say hello please"
            ]
        );
        assert_eq!(configs(&spec.args), BASE);
        assert!(spec.env.is_empty() && spec.files.is_empty());
        assert_eq!(spec.stdin, None);
    }

    #[test]
    fn base_url_defines_a_provider() {
        let s = AgentSettings {
            base_url: Some("http://127.0.0.1:8080".into()),
            ..settings()
        };
        assert_eq!(
            configs(&args(&request("p"), &s))[4..],
            [
                r#"model_provider="gantry""#,
                r#"model_providers.gantry.name="gantry""#,
                r#"model_providers.gantry.base_url="http://127.0.0.1:8080/v1""#,
                r#"model_providers.gantry.env_key="OPENAI_API_KEY""#,
                r#"model_providers.gantry.wire_api="responses""#,
                "model_providers.gantry.supports_websockets=false",
                "model_providers.gantry.request_max_retries=0",
                "model_providers.gantry.stream_max_retries=0",
            ]
        );
        let s = AgentSettings {
            api_key_env: Some("GATEWAY_KEY".into()),
            max_retries: Some(2),
            ..s
        };
        let c = configs(&args(&request("p"), &s));
        assert!(c.contains(&r#"model_providers.gantry.env_key="GATEWAY_KEY""#.to_string()));
        assert!(c.contains(&"model_providers.gantry.request_max_retries=2".to_string()));
        // Without base_url only the built-in provider's variables work, and retries cannot be set.
        for bad in [
            AgentSettings {
                api_key_env: Some("GATEWAY_KEY".into()),
                ..settings()
            },
            AgentSettings {
                max_retries: Some(1),
                ..settings()
            },
        ] {
            assert!(matches!(
                build(&request("p"), &bad),
                Err(RequestError::Invalid(_))
            ));
        }
        let ok = AgentSettings {
            api_key_env: Some("CODEX_API_KEY".into()),
            ..settings()
        };
        assert!(build(&request("p"), &ok).is_ok());
    }

    #[test]
    fn fields_map_to_options() {
        let mut r = request("-p looks like a flag");
        r.model = Some("gpt-5.5-codex".into());
        r.system_prompt = Some("Be \"terse\"\nplease".into());
        r.extra_flags = vec!["--ephemeral".into()];
        let a = args(&r, &settings());
        assert_eq!(
            plain(&a),
            [
                "exec",
                "--json",
                "--skip-git-repo-check",
                "--model=gpt-5.5-codex",
                "--ephemeral",
                "--",
                "-p looks like a flag",
            ]
        );
        assert_eq!(
            configs(&a)[4..],
            [r#"developer_instructions="Be \"terse\"\nplease""#]
        );
        // The model setting is the default.
        let s = AgentSettings {
            model: Some("dflt".into()),
            ..settings()
        };
        assert!(args(&request("p"), &s).contains(&"--model=dflt".to_string()));
    }

    #[test]
    fn resume() {
        let mut r = request("and now the second prompt");
        r.resume_session = Some("01a20775-94ea-7f63-ac6d-51b38a2d5f8a".into());
        r.sandbox_mode = SandboxMode::ReadOnly;
        let a = args(&r, &settings());
        assert_eq!(
            plain(&a),
            [
                "exec",
                "resume",
                "--json",
                "--skip-git-repo-check",
                "--",
                "01a20775-94ea-7f63-ac6d-51b38a2d5f8a",
                "and now the second prompt",
            ]
        );
        assert_eq!(configs(&a)[4..], [r#"sandbox_mode="read-only""#]);
        r.resume_session = Some("latest".into());
        assert!(matches!(
            build(&r, &settings()),
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
                let mut out = configs(&spec.args)[4..].to_vec();
                out.extend(spec.args.iter().filter(|a| *a == BYPASS_FLAG).cloned());
                out
            })
        };
        let ok = |v: &[&str]| Ok(v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(mode(A::Default, S::Default, false), ok(&[]));
        assert_eq!(
            mode(A::Default, S::ReadOnly, false),
            ok(&[r#"sandbox_mode="read-only""#])
        );
        assert_eq!(
            mode(A::Default, S::Workspace, false),
            ok(&[r#"sandbox_mode="workspace-write""#])
        );
        assert_eq!(
            mode(A::Default, S::Full, false),
            ok(&[r#"sandbox_mode="danger-full-access""#])
        );
        assert_eq!(
            mode(A::None, S::ReadOnly, false),
            ok(&[r#"sandbox_mode="read-only""#, r#"approval_policy="never""#])
        );
        assert_eq!(
            mode(A::Auto, S::Default, false),
            ok(&[r#"sandbox_mode="workspace-write""#])
        );
        assert_eq!(
            mode(A::Auto, S::Full, false),
            ok(&[r#"sandbox_mode="danger-full-access""#])
        );
        assert!(matches!(
            mode(A::Auto, S::ReadOnly, false),
            Err(RequestError::Invalid(_))
        ));
        assert_eq!(
            mode(A::Always, S::Default, false),
            Err(RequestError::FlagNotAllowed(BYPASS_FLAG.into()))
        );
        assert_eq!(mode(A::Always, S::Default, true), ok(&[BYPASS_FLAG]));
        assert_eq!(mode(A::Always, S::Full, true), ok(&[BYPASS_FLAG]));
        assert!(matches!(
            mode(A::Always, S::ReadOnly, true),
            Err(RequestError::Invalid(_))
        ));
        assert!(matches!(
            mode(A::Always, S::Workspace, true),
            Err(RequestError::Invalid(_))
        ));
    }

    #[test]
    fn external_sandbox_keeps_codex_sandbox_off() {
        use ApprovalMode as A;
        use SandboxMode as S;
        let mode = |a, sb, bypass| {
            let mut r = request("p");
            r.approval_mode = a;
            r.sandbox_mode = sb;
            let s = Settings {
                common: AgentSettings {
                    allow_bypass: bypass,
                    ..settings()
                },
                external_sandbox: true,
            };
            super::build(&r, &s).map(|spec| {
                let mut out = configs(&spec.args)[4..].to_vec();
                out.extend(spec.args.iter().filter(|a| *a == BYPASS_FLAG).cloned());
                out
            })
        };
        let ok = |v: &[&str]| Ok(v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let full = r#"sandbox_mode="danger-full-access""#;
        for sb in [S::Default, S::Workspace, S::Full] {
            assert_eq!(mode(A::Default, sb, false), ok(&[full]));
            assert_eq!(mode(A::Auto, sb, false), ok(&[full]));
            assert_eq!(
                mode(A::None, sb, false),
                ok(&[full, r#"approval_policy="never""#])
            );
            assert_eq!(mode(A::Always, sb, true), ok(&[BYPASS_FLAG]));
            assert_eq!(
                mode(A::Always, sb, false),
                Err(RequestError::FlagNotAllowed(BYPASS_FLAG.into()))
            );
        }
        for a in [A::Default, A::Auto, A::None, A::Always] {
            assert!(matches!(
                mode(a, S::ReadOnly, true),
                Err(RequestError::Unsupported(_))
            ));
        }
    }

    #[test]
    fn refusals() {
        let mut r = request("p");
        r.max_turns = Some(3);
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
        assert!(matches!(
            build(&request("-"), &settings()),
            Err(RequestError::Invalid(_))
        ));
        for flag in [
            "-c",
            "-c=sandbox_mode=danger-full-access",
            "--dangerously-bypass-approvals-and-sandbox",
            "--sandbox=danger-full-access",
            "--add-dir=/",
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
        r.extra_flags = vec!["--add-dir=/srv/data".into()];
        let s = AgentSettings {
            allowed_flags: vec!["--add-dir".into()],
            ..settings()
        };
        assert!(args(&r, &s).contains(&"--add-dir=/srv/data".to_string()));
    }

    #[test]
    fn base_urls_get_v1_once() {
        for (given, used) in [
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080/v1"),
            ("http://127.0.0.1:8080/", "http://127.0.0.1:8080/v1"),
            (
                "https://gw.example/openai/v1",
                "https://gw.example/openai/v1",
            ),
            (
                "https://gw.example/openai/v1/",
                "https://gw.example/openai/v1",
            ),
            ("https://gw.example/openai", "https://gw.example/openai/v1"),
        ] {
            assert_eq!(responses_base(given), used, "{given}");
        }
    }

    #[test]
    fn toml_strings() {
        assert_eq!(toml_string("plain"), r#""plain""#);
        assert_eq!(toml_string("a\"b\\c\td\u{7f}é"), r#""a\"b\\c\td\u007Fé""#);
    }
}
