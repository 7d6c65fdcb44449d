//! Helpers for backend adapters: reading the common settings of an agent CLI's manifest,
//! checking the parts of a prompt request every agent adapter checks the same way, and summing
//! up a run.
//!
//! Everything here except [`operator_allowed_flags`], [`basic_info`] and [`AgentSettings::load`] is pure (no
//! host calls), so adapters can unit-test their logic natively with `cargo test`. The parsing
//! of output lines is in [`crate::lines`], test helpers in [`crate::testing`].

use crate::backend::gantry::plugin::config;
use crate::types::{
    AgentEvent, ApprovalMode, BackendInfo, DoneInfo, PromptRequest, RequestError, RunSummary,
    SandboxMode, Usage,
};

/// The `describe` of a backend `name` that runs its manifest's `binary` (needs the
/// `gantry:plugin/config` grant), asks it `--version` for availability, and supports none of
/// a request's optional parts (resume, system prompt, model, max turns): a new adapter's
/// start, whose fields it sets where it supports more.
pub fn basic_info(name: &str) -> BackendInfo {
    BackendInfo {
        name: name.to_string(),
        binary: config::get("binary").unwrap_or_default(),
        version_args: vec!["--version".into()],
        supports_resume: false,
        supports_system_prompt: false,
        supports_model: false,
        supports_max_turns: false,
    }
}

/// The extra flags the operator allows beyond the adapter's own allowlist: the
/// `allowed_flags` setting of the backend's manifest, a list of strings (needs the
/// `gantry:plugin/config` grant). Callers of the API cannot add to it.
pub fn operator_allowed_flags() -> Vec<String> {
    config::get("allowed_flags")
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default()
}

/// A setting that holds a list of strings. The host passes a TOML list of strings as JSON text.
pub fn string_list(name: &str, text: &str) -> Result<Vec<String>, RequestError> {
    serde_json::from_str(text).map_err(|_| {
        RequestError::Invalid(format!(
            "the backend's `{name}` setting must be a list of strings"
        ))
    })
}

/// The settings every agent-CLI adapter reads from its manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentSettings {
    /// `binary`: the program to run (the host fills it from the manifest's `binary`).
    pub binary: String,
    /// `base_url`: the model API's base URL to point the CLI at; the CLI's own when unset.
    pub base_url: Option<String>,
    /// `api_key_env`: the name of the environment variable the CLI reads its API key from.
    /// The adapter only names it; the host passes its value (see the manifest's `env`).
    pub api_key_env: Option<String>,
    /// `allowed_flags`: extra flags the operator allows callers to pass.
    pub allowed_flags: Vec<String>,
    /// `allow_bypass`: whether approval mode `always` may map to the CLI's bypass flag.
    pub allow_bypass: bool,
    /// `model`: the model to use when a request names none.
    pub model: Option<String>,
    /// `max_retries`: how often the CLI retries a failed model request (each adapter
    /// documents what it does when unset).
    pub max_retries: Option<u32>,
}

impl AgentSettings {
    /// Read the settings from the manifest (needs the `gantry:plugin/config` grant).
    pub fn load(default_binary: &str) -> Result<AgentSettings, RequestError> {
        Self::from_lookup(default_binary, config::get)
    }

    /// Read the settings through `get` (a setting's name to its value, as the host passes it:
    /// strings as they are, other TOML values as JSON text). Empty strings count as unset.
    pub fn from_lookup(
        default_binary: &str,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<AgentSettings, RequestError> {
        let text = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let invalid = |name: &str, what: &str| {
            RequestError::Invalid(format!("the backend's `{name}` setting {what}"))
        };
        let base_url = text("base_url");
        if let Some(url) = &base_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(invalid("base_url", "must be an http:// or https:// URL"));
        }
        let api_key_env = text("api_key_env");
        if let Some(name) = &api_key_env
            && !is_env_name(name)
        {
            return Err(invalid(
                "api_key_env",
                "must be an environment variable name (letters, digits, '_')",
            ));
        }
        let allowed_flags = match text("allowed_flags") {
            Some(list) => string_list("allowed_flags", &list)?,
            None => Vec::new(),
        };
        let allow_bypass = bool_setting("allow_bypass", text("allow_bypass").as_deref())?;
        let max_retries = match text("max_retries") {
            None => None,
            Some(n) => Some(
                n.trim()
                    .parse()
                    .map_err(|_| invalid("max_retries", "must be a whole number"))?,
            ),
        };
        Ok(AgentSettings {
            binary: text("binary").unwrap_or_else(|| default_binary.to_string()),
            base_url,
            api_key_env,
            allowed_flags,
            allow_bypass,
            model: text("model"),
            max_retries,
        })
    }

    /// The model a request runs with: its own, else the `model` setting.
    pub fn model_for<'a>(&'a self, request: &'a PromptRequest) -> Option<&'a str> {
        request.model.as_deref().or(self.model.as_deref())
    }
}

/// A boolean setting (`value` as the host passes it; unset or empty is `false`).
pub fn bool_setting(name: &str, value: Option<&str>) -> Result<bool, RequestError> {
    match value.map(str::trim) {
        None | Some("" | "false") => Ok(false),
        Some("true") => Ok(true),
        Some(_) => Err(RequestError::Invalid(format!(
            "the backend's `{name}` setting must be true or false"
        ))),
    }
}

/// Whether `name` can be an environment variable's name: ASCII letters, digits and `_`, not
/// starting with a digit.
pub fn is_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Check the caller's extra flags. Each must be one argv entry that starts with `-` (a flag
/// with a value is written `--flag=value`), and be allowed: equal to an entry of the adapter's
/// own allowlist (`builtin`) or of the operator's (`operator`, the `allowed_flags` setting), or
/// of the form `NAME=VALUE` where `NAME` is such an entry. The first refused flag is named in
/// [`RequestError::FlagNotAllowed`].
pub fn check_extra_flags(
    flags: &[String],
    builtin: &[&str],
    operator: &[String],
) -> Result<(), RequestError> {
    let allowed = |name: &str| builtin.contains(&name) || operator.iter().any(|f| f == name);
    for flag in flags {
        if !flag.starts_with('-') || flag.contains('\0') {
            return Err(RequestError::FlagNotAllowed(format!(
                "{flag} (extra flags are single argv entries starting with '-'; write a value \
                 as --flag=value)"
            )));
        }
        let name = flag.split_once('=').map_or(flag.as_str(), |(name, _)| name);
        if !(allowed(flag) || allowed(name)) {
            return Err(RequestError::FlagNotAllowed(flag.clone()));
        }
    }
    Ok(())
}

/// Whether `id` has the shape of the session ids the agent CLIs print (a UUID,
/// `8-4-4-4-12` hex digits). Anything else is refused before it reaches a CLI, where words
/// like `latest`, an index or a flag would mean something else.
pub fn is_session_id(id: &str) -> bool {
    let groups: Vec<&str> = id.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, len)| g.len() == len && g.chars().all(|c| c.is_ascii_hexdigit()))
}

/// A request with only its prompt set: every mode the CLI's default, no flags, no session.
pub fn plain_request(prompt: &str) -> PromptRequest {
    PromptRequest {
        prompt: prompt.into(),
        args: vec![],
        model: None,
        system_prompt: None,
        max_turns: None,
        approval_mode: ApprovalMode::Default,
        sandbox_mode: SandboxMode::Default,
        extra_flags: vec![],
        resume_session: None,
    }
}

/// The checks every agent-CLI adapter makes the same way: no positional arguments, a
/// non-empty prompt, no NUL characters in what goes on the command line, a non-empty model
/// name, a session id of the right shape. `cli` names the CLI in messages.
pub fn check_request(request: &PromptRequest, cli: &str) -> Result<(), RequestError> {
    if !request.args.is_empty() {
        return Err(RequestError::Unsupported(
            "positional args are for generic backends".into(),
        ));
    }
    if request.prompt.trim().is_empty() {
        return Err(RequestError::Invalid("the prompt is empty".into()));
    }
    let fields = [
        ("prompt", Some(&request.prompt)),
        ("model", request.model.as_ref()),
        ("system prompt", request.system_prompt.as_ref()),
        ("resume session", request.resume_session.as_ref()),
    ];
    for (what, value) in fields {
        if value.is_some_and(|v| v.contains('\0')) {
            return Err(RequestError::Invalid(format!(
                "the {what} contains a NUL character"
            )));
        }
    }
    if request.model.as_ref().is_some_and(|m| m.trim().is_empty()) {
        return Err(RequestError::Invalid("the model name is empty".into()));
    }
    if let Some(id) = &request.resume_session
        && !is_session_id(id)
    {
        return Err(RequestError::Invalid(format!(
            "{id:?} is not a {cli} session id (a UUID, as reported by the run's init event)"
        )));
    }
    Ok(())
}

/// What a run's output said about how it went, gathered line by line; [`Outcome::summary`]
/// sums it up once the process has exited.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The session id the CLI reported.
    pub session_id: Option<String>,
    /// The agent's final answer.
    pub final_text: Option<String>,
    /// Token usage as last reported.
    pub usage: Option<Usage>,
    /// An error the CLI reported in its output (an API error, a turn limit, ...): the run
    /// failed even if the process exits with 0.
    pub error: Option<String>,
    /// Whether the CLI printed its end-of-run record (see [`Outcome::done`]). A run that exits
    /// without one (cancelled, cut short) did not finish, whatever its exit code — unless
    /// `unreadable` says the record may have been there.
    pub finished: bool,
    /// Whether a stdout line could not be read (not JSON). The host splits lines longer than
    /// its limit into pieces: the end-of-run record (Claude Code's carries the whole final
    /// text) may have been one of them.
    pub unreadable: bool,
    /// The first line of stderr that reads as an error, else the first line: used to explain
    /// a non-zero exit that the output did not.
    pub stderr_error: Option<String>,
    /// Whether `stderr_error` reads as an error (a later line that does replaces one that
    /// does not).
    stderr_error_is_error: bool,
}

impl Outcome {
    /// Record an error reported in the output. Returns `false` when it repeats the one already
    /// recorded (so that it is reported once).
    pub fn note_error(&mut self, message: String) -> bool {
        if self.error.as_ref() == Some(&message) {
            return false;
        }
        self.error = Some(message);
        true
    }

    /// The `error` event for an error reported in the output, recorded with
    /// [`Outcome::note_error`]; none when it repeats the one already recorded.
    pub fn error_event(&mut self, message: String) -> Option<AgentEvent> {
        self.note_error(message.clone())
            .then_some(AgentEvent::Error(message))
    }

    /// The `done` event for the CLI's end-of-run record, which marks the run finished: the
    /// exit code is not known yet; the final text and session id are those seen so far.
    pub fn done(&mut self) -> AgentEvent {
        self.finished = true;
        AgentEvent::Done(DoneInfo {
            exit_code: None,
            final_text: self.final_text.clone(),
            session_id: self.session_id.clone(),
        })
    }

    /// Remember a stderr line (call it for the lines that are not known noise): the first
    /// that reads as an error (`Error…`, `error:`), else the first non-empty one, explains a
    /// failed exit.
    pub fn note_stderr(&mut self, line: &str) {
        let line = line.trim();
        let is_error = line.starts_with("Error") || line.starts_with("error:");
        if !line.is_empty()
            && (self.stderr_error.is_none() || (is_error && !self.stderr_error_is_error))
        {
            self.stderr_error = Some(line.to_string());
            self.stderr_error_is_error = is_error;
        }
    }

    /// The run's summary: a success only when the process exited with 0, the output reported
    /// no error, and the CLI printed its end-of-run record.
    pub fn summary(&self, exit_code: Option<i32>) -> RunSummary {
        let how = match exit_code {
            _ if self.error.is_some() => None,
            Some(0) if self.finished || self.unreadable => None,
            Some(0) => Some("exited with status 0 without reporting a result".to_string()),
            Some(code) => Some(format!("exited with status {code}")),
            None => Some("ended by a signal".to_string()),
        };
        let error = match how {
            None => self.error.clone(),
            Some(how) => Some(match &self.stderr_error {
                Some(line) => format!("{how}: {line}"),
                None => how,
            }),
        };
        RunSummary {
            success: exit_code == Some(0) && error.is_none(),
            session_id: self.session_id.clone(),
            final_text: self.final_text.clone(),
            usage: self.usage,
            error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<AgentSettings, RequestError> {
        AgentSettings::from_lookup("cli", |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
    }

    fn request(prompt: &str) -> PromptRequest {
        plain_request(prompt)
    }

    fn invalid(result: Result<impl std::fmt::Debug, RequestError>) -> String {
        match result {
            Err(RequestError::Invalid(m)) => m,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn settings_default_and_parse() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.binary, "cli");
        assert_eq!(
            s,
            AgentSettings {
                binary: "cli".into(),
                ..Default::default()
            }
        );
        let s = settings(&[
            ("binary", "/opt/cli"),
            ("base_url", "http://127.0.0.1:9"),
            ("api_key_env", "MY_KEY"),
            ("allowed_flags", r#"["--a","--b=1"]"#),
            ("allow_bypass", "true"),
            ("model", "m1"),
            ("max_retries", "3"),
        ])
        .unwrap();
        assert_eq!(s.binary, "/opt/cli");
        assert_eq!(s.base_url.as_deref(), Some("http://127.0.0.1:9"));
        assert_eq!(s.api_key_env.as_deref(), Some("MY_KEY"));
        assert_eq!(s.allowed_flags, ["--a", "--b=1"]);
        assert!(s.allow_bypass);
        assert_eq!(s.model.as_deref(), Some("m1"));
        assert_eq!(s.max_retries, Some(3));
        // Empty strings are unset.
        let s = settings(&[("model", ""), ("base_url", " ")]).unwrap();
        assert_eq!((s.model, s.base_url), (None, None));
    }

    #[test]
    fn bad_settings_are_named() {
        assert!(invalid(settings(&[("allowed_flags", "--a")])).contains("`allowed_flags`"));
        assert!(invalid(settings(&[("allow_bypass", "yes")])).contains("`allow_bypass`"));
        assert!(invalid(settings(&[("max_retries", "-1")])).contains("`max_retries`"));
        assert!(invalid(settings(&[("base_url", "localhost:1")])).contains("`base_url`"));
        assert!(invalid(settings(&[("api_key_env", "A=B")])).contains("`api_key_env`"));
    }

    #[test]
    fn bools() {
        assert_eq!(bool_setting("b", None), Ok(false));
        assert_eq!(bool_setting("b", Some("false")), Ok(false));
        assert_eq!(bool_setting("b", Some("true")), Ok(true));
        assert!(invalid(bool_setting("b", Some("1"))).contains("`b`"));
    }

    #[test]
    fn model_for_prefers_the_request() {
        let s = settings(&[("model", "dflt")]).unwrap();
        let mut r = request("p");
        assert_eq!(s.model_for(&r), Some("dflt"));
        r.model = Some("mine".into());
        assert_eq!(s.model_for(&r), Some("mine"));
    }

    #[test]
    fn extra_flags() {
        let op = vec!["--op".to_string(), "--exact=1".to_string()];
        let ok = |f: &[&str]| {
            let f: Vec<String> = f.iter().map(|s| s.to_string()).collect();
            check_extra_flags(&f, &["--own"], &op)
        };
        assert!(ok(&[]).is_ok());
        assert!(ok(&["--own", "--own=x", "--op=y", "--exact=1"]).is_ok());
        for bad in ["--exact=2", "--other", "value", "--own\0", "-"] {
            let refused = ok(&["--own", bad]);
            assert!(
                matches!(&refused, Err(RequestError::FlagNotAllowed(f)) if f.starts_with(bad)),
                "{bad}: {refused:?}"
            );
        }
    }

    #[test]
    fn session_ids() {
        assert!(is_session_id("dfd55363-c50b-469d-ab9d-8762648ed106"));
        assert!(is_session_id("01A20775-94EA-7F63-AC6D-51B38A2D5F8A"));
        for bad in [
            "latest",
            "5",
            "",
            "--resume",
            "dfd55363-c50b-469d-ab9d-8762648ed10",
            "dfd55363-c50b-469d-ab9d-8762648ed10g",
        ] {
            assert!(!is_session_id(bad), "{bad}");
        }
    }

    #[test]
    fn request_checks() {
        assert!(check_request(&request("hi"), "x").is_ok());
        let mut r = request("hi");
        r.args = vec!["a".into()];
        assert_eq!(
            check_request(&r, "x"),
            Err(RequestError::Unsupported(
                "positional args are for generic backends".into()
            ))
        );
        assert!(invalid(check_request(&request("  "), "x")).contains("empty"));
        assert!(invalid(check_request(&request("a\0b"), "x")).contains("NUL"));
        let mut r = request("hi");
        r.model = Some(String::new());
        assert!(invalid(check_request(&r, "x")).contains("model"));
        let mut r = request("hi");
        r.resume_session = Some("latest".into());
        assert!(invalid(check_request(&r, "codex")).contains("codex session id"));
    }

    #[test]
    fn summaries() {
        let mut o = Outcome::default();
        // No end-of-run record: not a success, even with exit code 0.
        let s = o.summary(Some(0));
        assert!(!s.success);
        assert_eq!(
            s.error.as_deref(),
            Some("exited with status 0 without reporting a result")
        );
        o.final_text = Some("hi".into());
        assert_eq!(
            o.done(),
            AgentEvent::Done(DoneInfo {
                exit_code: None,
                final_text: Some("hi".into()),
                session_id: None,
            })
        );
        assert!(o.summary(Some(0)).success);
        // Unreadable stdout may have hidden the record.
        let cut = Outcome {
            unreadable: true,
            ..Outcome::default()
        };
        assert!(cut.summary(Some(0)).success);
        assert_eq!(
            o.summary(Some(2)).error.as_deref(),
            Some("exited with status 2")
        );
        assert_eq!(o.summary(None).error.as_deref(), Some("ended by a signal"));
        o.note_stderr("");
        o.note_stderr("Some notice");
        assert_eq!(
            o.summary(Some(1)).error.as_deref(),
            Some("exited with status 1: Some notice")
        );
        o.note_stderr("Error: first");
        o.note_stderr("Error: second");
        o.note_stderr("Another notice");
        assert_eq!(
            o.summary(Some(1)).error.as_deref(),
            Some("exited with status 1: Error: first")
        );
        assert_eq!(
            o.error_event("API down".into()),
            Some(AgentEvent::Error("API down".into()))
        );
        assert!(!o.note_error("API down".into()));
        assert_eq!(o.error_event("API down".into()), None);
        let s = o.summary(Some(0));
        assert!(!s.success);
        assert_eq!(s.error.as_deref(), Some("API down"));
    }
}
