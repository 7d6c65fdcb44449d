//! Reading clinvk request bodies: every field of the document, checked, with messages that say
//! which field is wrong and why. Pure functions over JSON, so they are tested natively.

use gantry_guest::types::{ApprovalMode, SandboxMode};
use serde_json::{Map, Value};

/// An answer that is not a success: status, stable code, message (the flat envelope).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    /// The methods the path does take (the `Allow` header of a 405).
    pub allow: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            allow: None,
        }
    }

    /// 405: the path exists, but takes only `methods`.
    pub fn not_allowed(methods: &'static str) -> ApiError {
        ApiError {
            allow: Some(methods),
            ..ApiError::new(405, "method_not_allowed", format!("use {methods}"))
        }
    }

    pub fn bad(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "bad_request", message)
    }
}

/// `output_format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Default,
    Text,
    Json,
    StreamJson,
}

/// One prompt as a request (or a parallel task, or a chain step) asks for it.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptSpec {
    /// A chain step's name.
    pub name: Option<String>,
    pub backend: String,
    pub prompt: String,
    pub model: Option<String>,
    pub workdir: Option<String>,
    pub workspace_id: Option<String>,
    pub session_id: Option<String>,
    pub ephemeral: bool,
    pub approval: ApprovalMode,
    pub sandbox: SandboxMode,
    pub output_format: OutputFormat,
    /// Accepted and kept; no backend flag takes it (as in clinvk).
    pub max_tokens: Option<u64>,
    pub max_turns: Option<u32>,
    pub system_prompt: Option<String>,
    pub verbose: bool,
    pub dry_run: bool,
    pub extra: Vec<String>,
    pub metadata: Option<Map<String, Value>>,
    pub timeout_ms: Option<u64>,
}

/// The largest prompt accepted, in bytes.
pub const MAX_PROMPT_BYTES: usize = 1 << 20;

/// Parse a JSON body into an object.
pub fn object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::new(
            400,
            "invalid_json",
            "the body must be a JSON object",
        )),
        Err(e) => Err(ApiError::new(
            400,
            "invalid_json",
            format!("the body is not valid JSON: {e}"),
        )),
    }
}

/// Field readers that name the field (with `at`, e.g. `tasks[2].`) in their errors.
pub struct Fields<'a> {
    map: &'a Map<String, Value>,
    at: &'a str,
}

impl<'a> Fields<'a> {
    pub fn new(map: &'a Map<String, Value>, at: &'a str) -> Self {
        Fields { map, at }
    }

    fn present(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn wrong(&self, key: &str, what: &str) -> ApiError {
        ApiError::bad(format!("{}{key} must be {what}", self.at))
    }

    pub fn string(&self, key: &str) -> Result<Option<String>, ApiError> {
        match self.present(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(self.wrong(key, "a string")),
        }
    }

    /// A string that, when given, is not empty.
    pub fn non_empty(&self, key: &str) -> Result<Option<String>, ApiError> {
        match self.string(key)? {
            Some(s) if s.trim().is_empty() => Err(self.wrong(key, "a non-empty string")),
            other => Ok(other),
        }
    }

    pub fn required(&self, key: &str) -> Result<String, ApiError> {
        self.non_empty(key)?
            .ok_or_else(|| ApiError::bad(format!("{}{key} is required", self.at)))
    }

    pub fn boolean(&self, key: &str) -> Result<bool, ApiError> {
        match self.present(key) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(self.wrong(key, "true or false")),
        }
    }

    pub fn count(&self, key: &str, max: u64) -> Result<Option<u64>, ApiError> {
        match self.present(key) {
            None => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) if n <= max => Ok(Some(n)),
                _ => Err(self.wrong(key, &format!("a whole number from 0 to {max}"))),
            },
        }
    }

    pub fn strings(&self, key: &str) -> Result<Vec<String>, ApiError> {
        match self.present(key) {
            None => Ok(vec![]),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| i.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| self.wrong(key, "a list of strings")),
            Some(_) => Err(self.wrong(key, "a list of strings")),
        }
    }

    pub fn array(&self, key: &str) -> Result<Option<&'a Vec<Value>>, ApiError> {
        match self.present(key) {
            None => Ok(None),
            Some(Value::Array(items)) => Ok(Some(items)),
            Some(_) => Err(self.wrong(key, "a list")),
        }
    }

    /// One of the values of an enum of the contract, by its name (`as_str`); `None` when
    /// absent.
    pub fn named<T: Copy>(
        &self,
        key: &str,
        all: &[T],
        name: fn(T) -> &'static str,
    ) -> Result<Option<T>, ApiError> {
        let choices: Vec<(&str, T)> = all.iter().map(|&v| (name(v), v)).collect();
        self.choice(key, &choices)
    }

    /// One of `choices`, by name; `None` when absent.
    pub fn choice<T: Copy>(&self, key: &str, choices: &[(&str, T)]) -> Result<Option<T>, ApiError> {
        let Some(value) = self.string(key)? else {
            return Ok(None);
        };
        choices
            .iter()
            .find(|(name, _)| *name == value)
            .map(|(_, v)| Some(*v))
            .ok_or_else(|| {
                let names: Vec<_> = choices.iter().map(|(n, _)| *n).collect();
                self.wrong(key, &format!("one of {}", names.join(", ")))
            })
    }
}

const FORMATS: &[(&str, OutputFormat)] = &[
    ("default", OutputFormat::Default),
    ("text", OutputFormat::Text),
    ("json", OutputFormat::Json),
    ("stream-json", OutputFormat::StreamJson),
];

/// Read one prompt (the body of `/prompt`, a parallel task, or a chain step). `at` prefixes
/// field names in errors. Unknown fields are ignored, as clinvk does.
pub fn prompt_spec(map: &Map<String, Value>, at: &str) -> Result<PromptSpec, ApiError> {
    let f = Fields::new(map, at);
    let prompt = f.required("prompt")?;
    if prompt.len() > MAX_PROMPT_BYTES {
        return Err(ApiError::bad(format!(
            "{at}prompt is longer than {MAX_PROMPT_BYTES} bytes"
        )));
    }
    let metadata = match map.get("metadata") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(m.clone()),
        Some(_) => return Err(f.wrong("metadata", "an object")),
    };
    let workdir = f.non_empty("workdir")?;
    if let Some(dir) = &workdir
        && !dir.starts_with('/')
    {
        return Err(f.wrong("workdir", "an absolute path"));
    }
    Ok(PromptSpec {
        name: f.string("name")?,
        backend: f.required("backend")?,
        prompt,
        model: f.non_empty("model")?,
        workdir,
        workspace_id: f.non_empty("workspace_id")?,
        session_id: f.non_empty("session_id")?,
        ephemeral: f.boolean("ephemeral")?,
        approval: f
            .named("approval_mode", ApprovalMode::ALL, ApprovalMode::as_str)?
            .unwrap_or(ApprovalMode::Default),
        sandbox: f
            .named("sandbox_mode", SandboxMode::ALL, SandboxMode::as_str)?
            .unwrap_or(SandboxMode::Default),
        output_format: f
            .choice("output_format", FORMATS)?
            .unwrap_or(OutputFormat::Default),
        max_tokens: f.count("max_tokens", u64::from(u32::MAX))?,
        max_turns: f.count("max_turns", u64::from(u32::MAX))?.map(|n| n as u32),
        system_prompt: f.string("system_prompt")?,
        verbose: f.boolean("verbose")?,
        dry_run: f.boolean("dry_run")?,
        extra: f.strings("extra")?,
        metadata,
        timeout_ms: f.count("timeout_ms", 7 * 24 * 3600 * 1000)?,
    })
}

/// `{{previous}}` replaced by the previous step's output.
pub fn substitute_previous(prompt: &str, previous: &str) -> String {
    prompt.replace("{{previous}}", previous)
}

/// A command line as a reader would type it: words with anything but safe characters in
/// single quotes. For display only; gantry itself never runs a shell.
pub fn display_command(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            let safe = !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_=./:,@%+".contains(c));
            if safe {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: Value) -> Result<PromptSpec, ApiError> {
        prompt_spec(v.as_object().unwrap(), "")
    }

    #[test]
    fn reads_every_documented_field() {
        let s = spec(json!({
            "backend": "claude", "prompt": "explain", "model": "m", "workdir": "/w",
            "ephemeral": true, "approval_mode": "auto", "sandbox_mode": "read-only",
            "output_format": "stream-json", "max_tokens": 4096, "max_turns": 10,
            "system_prompt": "sys", "verbose": true, "dry_run": true, "extra": ["--x"],
            "metadata": {"project": "demo"}, "unknown_field": 1
        }))
        .unwrap();
        assert_eq!(s.backend, "claude");
        assert_eq!(s.approval, ApprovalMode::Auto);
        assert_eq!(s.sandbox, SandboxMode::ReadOnly);
        assert_eq!(s.output_format, OutputFormat::StreamJson);
        assert_eq!((s.max_tokens, s.max_turns), (Some(4096), Some(10)));
        assert!(s.ephemeral && s.verbose && s.dry_run);
        assert_eq!(s.extra, ["--x"]);
        assert_eq!(s.metadata.unwrap()["project"], "demo");
        assert_eq!(s.workdir.as_deref(), Some("/w"));
    }

    #[test]
    fn names_the_field_that_is_wrong() {
        let err = |v: Value| spec(v).unwrap_err().message;
        assert_eq!(err(json!({"backend": "claude"})), "prompt is required");
        assert_eq!(err(json!({"prompt": "p"})), "backend is required");
        assert_eq!(
            err(json!({"backend": "", "prompt": "p"})),
            "backend must be a non-empty string"
        );
        assert_eq!(
            err(json!({"backend": "c", "prompt": "p", "approval_mode": "yolo"})),
            "approval_mode must be one of default, auto, none, always"
        );
        assert_eq!(
            err(json!({"backend": "c", "prompt": "p", "sandbox_mode": "open"})),
            "sandbox_mode must be one of default, read-only, workspace, full"
        );
        assert_eq!(
            err(json!({"backend": "c", "prompt": "p", "output_format": "xml"})),
            "output_format must be one of default, text, json, stream-json"
        );
        assert_eq!(
            err(json!({"backend": "c", "prompt": "p", "max_turns": -1})),
            "max_turns must be a whole number from 0 to 4294967295"
        );
        assert_eq!(
            err(json!({"backend": "c", "prompt": "p", "extra": "--x"})),
            "extra must be a list of strings"
        );
        assert_eq!(
            err(json!({"backend": "c", "prompt": "p", "metadata": [1]})),
            "metadata must be an object"
        );
        assert_eq!(
            err(json!({"backend": "c", "prompt": "p", "workdir": "rel"})),
            "workdir must be an absolute path"
        );
        let at =
            prompt_spec(json!({"backend": "c"}).as_object().unwrap(), "tasks[1].").unwrap_err();
        assert_eq!(at.message, "tasks[1].prompt is required");
        assert_eq!(at.status, 400);
    }

    #[test]
    fn bodies_must_be_objects() {
        assert_eq!(object(b"[1]").unwrap_err().code, "invalid_json");
        assert_eq!(object(b"{").unwrap_err().code, "invalid_json");
        assert!(object(b"{}").unwrap().is_empty());
    }

    #[test]
    fn previous_and_display() {
        assert_eq!(substitute_previous("fix: {{previous}}!", "A"), "fix: A!");
        let argv: Vec<String> = ["claude", "-p", "it's x", "--model", "m-1"]
            .map(String::from)
            .into();
        assert_eq!(display_command(&argv), "claude -p 'it'\\''s x' --model m-1");
    }
}
