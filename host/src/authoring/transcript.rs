//! A CLI run as a file: what a backend adapter was asked, every line the CLI printed and on
//! which stream, and how it exited. `gantry plugin record` writes one from a real run;
//! `gantry plugin test` replays it through a backend component.
//!
//! The format is JSON Lines, one object with one key per line, so that a transcript is easy to
//! write by hand and to read in a diff:
//!
//! ```text
//! # Comments and blank lines are skipped.
//! {"request": {"prompt": "say hello", "model": "small"}}
//! {"stdout": "hello"}
//! {"stderr": "a warning"}
//! {"stdout": "the first 64 KiB of a longer line", "partial": true}
//! {"exit": 0}
//! ```
//!
//! - `request` (optional, before any output): the prompt request, with the keys of `/v1`'s
//!   prompt body (`prompt`, `args`, `model`, `system_prompt`, `max_turns`, `approval_mode`,
//!   `sandbox_mode`, `extra_flags`, `resume_session`); `{"prompt": "hello"}` when absent.
//! - `stdout` / `stderr`: one line without its newline; `"partial": true` marks a piece of a
//!   line longer than the host's limit, as the host hands it to the adapter.
//! - `exit` (required, last): the exit code, or `null` for a run ended by a signal.

use crate::contract::{OutputLine, OutputStream, PromptRequest, plain_request};
use crate::store::codec;
use anyhow::{Context, Result, bail};
use serde_json::{Map, Value, json};

/// One recorded run of a CLI.
#[derive(Debug, Clone, PartialEq)]
pub struct Transcript {
    /// What the adapter is asked to run.
    pub request: PromptRequest,
    /// The lines it printed, in the order they were read.
    pub lines: Vec<OutputLine>,
    /// How it exited: `None` when a signal ended it.
    pub exit_code: Option<i32>,
}

/// The request of a transcript that names none.
pub const DEFAULT_PROMPT: &str = "hello";

impl Transcript {
    /// Read a transcript; an error names the line and what is wrong with it.
    pub fn parse(text: &str) -> Result<Transcript> {
        let mut request = None;
        let mut lines = Vec::new();
        let mut exit = None;
        for (i, raw) in text.lines().enumerate() {
            let n = i + 1;
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            if exit.is_some() {
                bail!("line {n}: nothing may follow the `exit` line");
            }
            let entry: Map<String, Value> = serde_json::from_str(trimmed)
                .with_context(|| format!("line {n}: not a JSON object"))?;
            let partial = match entry.get("partial") {
                None => false,
                Some(Value::Bool(b)) => *b,
                Some(other) => bail!("line {n}: `partial` must be true or false, not {other}"),
            };
            let keys: Vec<&str> = entry
                .keys()
                .map(String::as_str)
                .filter(|k| *k != "partial")
                .collect();
            let [key] = keys[..] else {
                bail!(
                    "line {n}: expected one of `request`, `stdout`, `stderr` or `exit`, found {keys:?}"
                );
            };
            let value = &entry[key];
            if partial && !matches!(key, "stdout" | "stderr") {
                bail!("line {n}: only an output line can be `partial`");
            }
            match key {
                "request" => {
                    if request.is_some() || !lines.is_empty() {
                        bail!("line {n}: the `request` comes once, before any output");
                    }
                    request = Some(parse_request(value).with_context(|| format!("line {n}"))?);
                }
                "stdout" | "stderr" => {
                    let Some(text) = value.as_str() else {
                        bail!("line {n}: `{key}` must be a string");
                    };
                    if text.contains('\n') {
                        bail!("line {n}: `{key}` is one line: it cannot hold a newline");
                    }
                    lines.push(OutputLine {
                        stream: if key == "stdout" {
                            OutputStream::Stdout
                        } else {
                            OutputStream::Stderr
                        },
                        text: text.to_string(),
                        partial,
                    });
                }
                "exit" => {
                    exit = Some(match value {
                        Value::Null => None,
                        v => Some(
                            v.as_i64()
                                .and_then(|c| i32::try_from(c).ok())
                                .with_context(|| {
                                    format!("line {n}: `exit` must be an exit code or null")
                                })?,
                        ),
                    });
                }
                other => bail!(
                    "line {n}: unknown key `{other}`: expected `request`, `stdout`, `stderr` or `exit`"
                ),
            }
        }
        let Some(exit_code) = exit else {
            bail!("the transcript has no `exit` line: end it with {{\"exit\": CODE}}");
        };
        Ok(Transcript {
            request: request.unwrap_or_else(|| plain_request(DEFAULT_PROMPT)),
            lines,
            exit_code,
        })
    }

    /// The transcript as its file holds it: [`Transcript::parse`] reads it back as it was.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut push = |v: Value| {
            out.push_str(&v.to_string());
            out.push('\n');
        };
        push(json!({ "request": request_json(&self.request) }));
        for line in &self.lines {
            let key = match line.stream {
                OutputStream::Stdout => "stdout",
                OutputStream::Stderr => "stderr",
            };
            let mut entry = json!({ key: line.text });
            if line.partial {
                entry["partial"] = true.into();
            }
            push(entry);
        }
        push(json!({ "exit": self.exit_code }));
        out
    }
}

/// A request's JSON without the keys that hold their defaults, so a transcript shows what was
/// asked for.
fn request_json(request: &PromptRequest) -> Value {
    let mut full = codec::request_json(request);
    if let Some(map) = full.as_object_mut() {
        map.retain(|_, v| match v {
            Value::Null => false,
            Value::Array(a) => !a.is_empty(),
            Value::String(s) => s != "default",
            _ => true,
        });
    }
    full
}

fn parse_request(value: &Value) -> Result<PromptRequest> {
    let Some(map) = value.as_object() else {
        bail!("`request` must be an object");
    };
    // The keys are those of a request as stored, whatever the codec writes.
    let stored = codec::request_json(&plain_request(DEFAULT_PROMPT));
    let known: Vec<&str> = stored
        .as_object()
        .map(|m| m.keys().map(String::as_str).collect())
        .unwrap_or_default();
    if let Some(unknown) = map.keys().find(|k| !known.contains(&k.as_str())) {
        bail!(
            "unknown request key `{unknown}`: expected {}",
            known.join(", ")
        );
    }
    if !map.get("prompt").is_some_and(Value::is_string) {
        bail!("the request's `prompt` must be a string");
    }
    codec::request_from_json(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_it_writes() {
        let text = r#"
# a run
{"request": {"prompt": "say hi", "model": "small", "extra_flags": ["--x"]}}
{"stdout": "hi"}
{"stderr": "warn"}
{"stdout": "abc", "partial": true}
{"exit": 3}
"#;
        let t = Transcript::parse(text).unwrap();
        assert_eq!(t.request.prompt, "say hi");
        assert_eq!(t.request.model.as_deref(), Some("small"));
        assert_eq!(t.lines.len(), 3);
        assert!(t.lines[2].partial);
        assert_eq!(t.lines[1].stream, OutputStream::Stderr);
        assert_eq!(t.exit_code, Some(3));
        assert_eq!(Transcript::parse(&t.render()).unwrap(), t);
        let rendered = t.render();
        // Defaults are left out: the file shows what was asked for.
        assert!(
            rendered.contains(r#""prompt":"say hi""#) && !rendered.contains("approval_mode"),
            "{rendered}"
        );
    }

    #[test]
    fn a_signal_is_a_null_exit_and_the_request_has_a_default() {
        let t = Transcript::parse("{\"stdout\": \"x\"}\n{\"exit\": null}\n").unwrap();
        assert_eq!(t.exit_code, None);
        assert_eq!(t.request.prompt, DEFAULT_PROMPT);
    }

    #[test]
    fn bad_input_names_its_line() {
        let cases = [
            ("{\"stdout\": \"x\"}\n", "no `exit` line"),
            (
                "{\"exit\": 0}\n{\"stdout\": \"x\"}\n",
                "line 2: nothing may follow",
            ),
            ("not json\n{\"exit\": 0}\n", "line 1: not a JSON object"),
            (
                "{\"stdout\": 1}\n{\"exit\": 0}\n",
                "line 1: `stdout` must be a string",
            ),
            (
                "{\"stdout\": \"a\", \"stderr\": \"b\"}\n{\"exit\": 0}\n",
                "line 1: expected one of",
            ),
            ("{\"exit\": \"0\"}\n", "line 1: `exit` must be an exit code"),
            (
                "{\"exit\": 99999999999}\n",
                "line 1: `exit` must be an exit code",
            ),
            (
                "{\"stdout\": \"a\"}\n{\"request\": {\"prompt\": \"p\"}}\n{\"exit\": 0}\n",
                "line 2: the `request` comes once",
            ),
            (
                "{\"request\": {\"prompt\": \"p\", \"modle\": \"m\"}}\n{\"exit\": 0}\n",
                "unknown request key `modle`",
            ),
            (
                "{\"request\": {\"model\": \"m\"}}\n{\"exit\": 0}\n",
                "`prompt` must be a string",
            ),
            ("{\"exit\": 0, \"partial\": true}\n", "only an output line"),
            (
                "{\"stdout\": \"a\\nb\"}\n{\"exit\": 0}\n",
                "cannot hold a newline",
            ),
            ("{\"stdin\": \"a\"}\n{\"exit\": 0}\n", "unknown key `stdin`"),
        ];
        for (text, expected) in cases {
            let error = format!("{:#}", Transcript::parse(text).unwrap_err());
            assert!(error.contains(expected), "{text:?}: {error}");
        }
    }
}
