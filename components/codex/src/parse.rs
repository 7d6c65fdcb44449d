//! Codex's `exec --json` lines as unified agent events.
//!
//! - `thread.started` → `init` (the thread id is the session id; the model is the one the run
//!   asked for, as Codex does not print it);
//! - `item.completed` `agent_message` → `message` (the text arrives whole);
//! - `item.started`/`item.completed` of `command_execution`, `file_change`, `mcp_tool_call` and
//!   `web_search` → `tool-use` (once, when first seen) and `tool-result` (on completion);
//! - `turn.completed` → `usage` then `done`. Codex reports usage **cumulative over the thread**:
//!   a resumed run's numbers include the earlier turns';
//! - `error` and `turn.failed` → `error` (once for the same message), `turn.failed` then `done`.
//!
//! `turn.started` is dropped; other lines (reasoning, todo lists, non-fatal `error` items such
//! as model-metadata warnings, lines that are not JSON) become `raw` events. On stderr, the
//! notices Codex prints on every run are dropped and everything else is `raw`.

use gantry_guest::adapter::Outcome;
use gantry_guest::config;
use gantry_guest::json::{str_at, string_at, u64_at};
use gantry_guest::lines::JsonLines;
use gantry_guest::types::{AgentEvent, InitInfo, PromptRequest, ToolResult, ToolUse, Usage};
use serde_json::{Value, json};
use std::collections::HashSet;

/// Stderr lines Codex prints on every run, of no interest.
const STDERR_NOISE: &[&str] = &[
    "Reading additional input from stdin...",
    "WARNING: proceeding, even though we could not create PATH aliases",
];

/// The parsing state of one run.
#[derive(Debug, Default)]
pub struct Parser {
    model: Option<String>,
    outcome: Outcome,
    /// Items whose `tool-use` was reported.
    started: HashSet<String>,
}

impl Parser {
    /// A parser for a run that asked for `model` (`None`: Codex's default).
    pub fn new(model: Option<String>) -> Parser {
        Parser {
            model,
            ..Parser::default()
        }
    }

    fn error(&mut self, message: String) -> Vec<AgentEvent> {
        self.outcome.error_event(message).into_iter().collect()
    }
}

impl JsonLines for Parser {
    const STDERR_NOISE: &'static [&'static str] = STDERR_NOISE;

    /// Codex does not print the model it runs with: the one asked for, else the `model`
    /// setting's, is reported.
    fn start(request: &PromptRequest) -> Parser {
        let setting = || config::get("model").filter(|m| !m.trim().is_empty());
        Parser::new(request.model.clone().or_else(setting))
    }

    fn outcome(&mut self) -> &mut Outcome {
        &mut self.outcome
    }

    /// The events of a line; `None` when it is not understood.
    fn event(&mut self, v: &Value) -> Option<Vec<AgentEvent>> {
        Some(match str_at(v, "type")? {
            "thread.started" => {
                let id = string_at(v, "thread_id")?;
                self.outcome.session_id = Some(id.clone());
                vec![AgentEvent::Init(InitInfo {
                    session_id: Some(id),
                    model: self.model.clone(),
                })]
            }
            "turn.started" => vec![],
            "item.started" => self.item(v.get("item")?, false)?,
            "item.completed" => self.item(v.get("item")?, true)?,
            "turn.completed" => {
                let mut events = Vec::new();
                if let Some(usage) = v.get("usage").and_then(usage) {
                    self.outcome.usage = Some(usage);
                    events.push(AgentEvent::Usage(usage));
                }
                events.push(self.outcome.done());
                events
            }
            "error" => self.error(string_at(v, "message")?),
            "turn.failed" => {
                let message = str_at(v, "error/message").unwrap_or("the turn failed");
                let mut events = self.error(message.to_string());
                events.push(self.outcome.done());
                events
            }
            _ => return None,
        })
    }
}

impl Parser {
    /// An item's events; `None` for item types that are not mapped.
    fn item(&mut self, item: &Value, completed: bool) -> Option<Vec<AgentEvent>> {
        let id = string_at(item, "id").unwrap_or_default();
        let kind = str_at(item, "type")?;
        if kind == "agent_message" {
            if !completed {
                return Some(vec![]);
            }
            let text = string_at(item, "text")?;
            self.outcome.final_text = Some(text.clone());
            return Some(vec![AgentEvent::Message(text)]);
        }
        let (name, input) = match kind {
            "command_execution" => (
                kind.to_string(),
                json!({ "command": item.get("command").unwrap_or(&Value::Null) }),
            ),
            "file_change" => (
                kind.to_string(),
                json!({ "changes": item.get("changes").unwrap_or(&Value::Null) }),
            ),
            "mcp_tool_call" => (
                format!(
                    "{}.{}",
                    str_at(item, "server").unwrap_or("mcp"),
                    str_at(item, "tool").unwrap_or("tool")
                ),
                item.get("arguments").cloned().unwrap_or(Value::Null),
            ),
            "web_search" => (
                kind.to_string(),
                json!({ "query": item.get("query").unwrap_or(&Value::Null) }),
            ),
            _ => return None,
        };
        let mut events = Vec::new();
        if self.started.insert(id.clone()) {
            events.push(AgentEvent::ToolUse(ToolUse {
                id: id.clone(),
                name,
                input: input.to_string(),
            }));
        }
        if completed {
            let status = str_at(item, "status").unwrap_or("completed");
            let failed = matches!(status, "failed" | "declined")
                || item
                    .get("exit_code")
                    .and_then(Value::as_i64)
                    .is_some_and(|c| c != 0)
                || item.get("error").is_some_and(|e| !e.is_null());
            let output = match kind {
                "command_execution" => string_at(item, "aggregated_output").unwrap_or_default(),
                "mcp_tool_call" => match item.get("error") {
                    Some(e) if !e.is_null() => {
                        string_at(e, "message").unwrap_or_else(|| e.to_string())
                    }
                    _ => item.get("result").map(Value::to_string).unwrap_or_default(),
                },
                "file_change" => status.to_string(),
                _ => String::new(),
            };
            events.push(AgentEvent::ToolResult(ToolResult {
                id,
                output,
                is_error: failed,
            }));
        }
        Some(events)
    }
}

/// `turn.completed.usage`: OpenAI's counting already has input include the cached tokens and
/// output include the reasoning tokens.
fn usage(u: &Value) -> Option<Usage> {
    if !u.is_object() {
        return None;
    }
    let n = |key: &str| u64_at(u, key).unwrap_or(0);
    Some(Usage {
        input_tokens: n("input_tokens"),
        output_tokens: n("output_tokens"),
        cached_tokens: n("cached_input_tokens"),
        reasoning_tokens: n("reasoning_output_tokens"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use gantry_guest::lines::LineParser;
    use gantry_guest::testing::{self, errors, stderr, stdout, usage};
    use gantry_guest::types::DoneInfo;

    const TURN: &str = include_str!("../../../tests/fixtures/codex/turn.jsonl");
    const TURN_ERR: &str = include_str!("../../../tests/fixtures/codex/turn.stderr.txt");
    const RESUME: &str = include_str!("../../../tests/fixtures/codex/resume.jsonl");
    const TOOL: &str = include_str!("../../../tests/fixtures/codex/tool.jsonl");
    const TOOL_ERR: &str = include_str!("../../../tests/fixtures/codex/tool.stderr.txt");
    const API_ERROR: &str = include_str!("../../../tests/fixtures/codex/api_error.jsonl");
    const API_ERROR_ERR: &str = include_str!("../../../tests/fixtures/codex/api_error.stderr.txt");
    const API_INVALID: &str = include_str!("../../../tests/fixtures/codex/api_invalid.jsonl");
    const API_INVALID_ERR: &str =
        include_str!("../../../tests/fixtures/codex/api_invalid.stderr.txt");
    // Captured the same way as the fixtures (codex 0.169.0, fake model server).
    const UNKNOWN_MODEL: &str = include_str!("../testdata/unknown_model.jsonl");
    const MISSING_KEY: &str = include_str!("../testdata/missing_key.jsonl");
    const DEAD_SERVER: &str = include_str!("../testdata/dead_server.jsonl");
    const UNKNOWN_RESUME_ERR: &str = include_str!("../testdata/unknown_resume.stderr.txt");
    const ALL: &[&str] = &[
        TURN,
        RESUME,
        TOOL,
        API_ERROR,
        API_INVALID,
        UNKNOWN_MODEL,
        MISSING_KEY,
        DEAD_SERVER,
    ];

    fn run(model: Option<&str>, out: &str, err: &str) -> (Parser, Vec<AgentEvent>) {
        testing::run(Parser::new(model.map(Into::into)), out, err)
    }

    #[test]
    fn a_turn() {
        let tid = "01a20776-a8fb-7543-83cc-474c2de6cbdd";
        let text = "fake reply 1 to: say hello please";
        let (mut p, events) = run(Some("gpt-5.5-codex"), TURN, TURN_ERR);
        assert_eq!(
            events,
            [
                AgentEvent::Init(InitInfo {
                    session_id: Some(tid.into()),
                    model: Some("gpt-5.5-codex".into()),
                }),
                AgentEvent::Message(text.into()),
                AgentEvent::Usage(usage(100, 7, 20, 5)),
                AgentEvent::Done(DoneInfo {
                    exit_code: None,
                    final_text: Some(text.into()),
                    session_id: Some(tid.into()),
                }),
            ]
        );
        let s = p.finish(Some(0));
        assert!(s.success);
        assert_eq!(s.session_id.as_deref(), Some(tid));
        assert_eq!(s.final_text.as_deref(), Some(text));
        assert_eq!(s.usage, Some(usage(100, 7, 20, 5)));
        assert!(!p.finish(Some(143)).success);
    }

    #[test]
    fn a_resumed_turn_reports_thread_totals() {
        let (mut p, events) = run(None, RESUME, "");
        assert!(matches!(&events[0], AgentEvent::Init(i) if i.model.is_none()));
        let s = p.finish(Some(0));
        assert_eq!(
            s.session_id.as_deref(),
            Some("01a20776-a8fb-7543-83cc-474c2de6cbdd")
        );
        assert_eq!(
            s.final_text.as_deref(),
            Some("fake reply 2 to: and now the second prompt")
        );
        // Cumulative over the thread: the first turn's request (in 100, out 7, cached 20,
        // reasoning 5) plus this one's (100, 9, 20, 5).
        assert_eq!(s.usage, Some(usage(200, 16, 40, 10)));
    }

    #[test]
    fn a_tool_call() {
        let (mut p, events) = run(None, TOOL, TOOL_ERR);
        assert_eq!(
            events[1..4],
            [
                AgentEvent::ToolUse(ToolUse {
                    id: "item_0".into(),
                    name: "command_execution".into(),
                    input: r#"{"command":"/bin/bash -lc 'echo hi'"}"#.into(),
                }),
                AgentEvent::ToolResult(ToolResult {
                    id: "item_0".into(),
                    output: "hi\n".into(),
                    is_error: false,
                }),
                AgentEvent::Message(
                    "fake reply 1 to: please USE_TOOL now | tool output: hi".into()
                ),
            ]
        );
        assert_eq!(events.len(), 6, "{events:?}");
        let s = p.finish(Some(0));
        assert!(s.success);
        assert_eq!(s.usage, Some(usage(200, 18, 40, 10)));
    }

    #[test]
    fn api_errors() {
        for (stdout, stderr, expect) in [
            (
                API_ERROR,
                API_ERROR_ERR,
                "We’re currently experiencing high demand, which may cause temporary errors.",
            ),
            (
                API_INVALID,
                API_INVALID_ERR,
                r#"{"error": {"message": "fake model: invalid request (FAIL_API)", "type": "invalid_request_error", "param": null, "code": "invalid_request"}}"#,
            ),
            (
                MISSING_KEY,
                "",
                "Missing environment variable: `OPENAI_API_KEY`.",
            ),
            (DEAD_SERVER, "", "Connection failed: error sending request"),
        ] {
            let (mut p, events) = run(None, stdout, stderr);
            // `error` and `turn.failed` carry the same message: reported once.
            assert_eq!(errors(&events), [expect]);
            assert!(matches!(events.last(), Some(AgentEvent::Done(d)) if d.final_text.is_none()));
            // The stderr notice is dropped.
            assert!(
                !events.iter().any(|e| matches!(e, AgentEvent::Raw(_))),
                "{events:?}"
            );
            let s = p.finish(Some(1));
            assert!(!s.success);
            assert_eq!(s.error.as_deref(), Some(expect));
            assert!(s.session_id.is_some());
            assert!(!p.finish(Some(0)).success);
        }
    }

    #[test]
    fn warnings_and_stderr_errors() {
        // A non-fatal error item (model metadata warning) is raw; the run succeeds.
        let (mut p, events) = run(Some("gpt-unknown"), UNKNOWN_MODEL, "");
        assert_eq!(
            events[1],
            AgentEvent::Raw(UNKNOWN_MODEL.lines().nth(1).unwrap().into())
        );
        assert!(errors(&events).is_empty());
        assert!(p.finish(Some(0)).success);
        // An unknown session: nothing on stdout, the reason on stderr.
        let (mut p, events) = run(None, "", UNKNOWN_RESUME_ERR);
        assert_eq!(
            events,
            [AgentEvent::Raw(UNKNOWN_RESUME_ERR.trim_end().into())]
        );
        let s = p.finish(Some(1));
        assert_eq!(
            s.error.as_deref(),
            Some(
                "exited with status 1: Error: thread/resume: thread/resume failed: no rollout found \
                 for thread id 00000000-0000-4000-8000-000000000000 (code -32600)"
            )
        );
    }

    #[test]
    fn other_items() {
        let mut p = Parser::new(None);
        let mut parse = |line: &str| stdout(&mut p, line);
        // A patch that only completes: tool use and result together.
        let events = parse(
            r#"{"type":"item.completed","item":{"id":"item_3","type":"file_change","changes":[{"path":"a.txt","kind":"add"}],"status":"completed"}}"#,
        );
        let AgentEvent::ToolUse(used) = &events[0] else {
            panic!("{events:?}")
        };
        assert_eq!(
            (used.id.as_str(), used.name.as_str()),
            ("item_3", "file_change")
        );
        assert_eq!(
            serde_json::from_str::<Value>(&used.input).unwrap(),
            json!({"changes": [{"path": "a.txt", "kind": "add"}]})
        );
        assert_eq!(
            events[1..],
            [AgentEvent::ToolResult(ToolResult {
                id: "item_3".into(),
                output: "completed".into(),
                is_error: false,
            }),]
        );
        // A failed command.
        parse(
            r#"{"type":"item.started","item":{"id":"item_4","type":"command_execution","command":"false","status":"in_progress"}}"#,
        );
        let events = parse(
            r#"{"type":"item.completed","item":{"id":"item_4","type":"command_execution","command":"false","aggregated_output":"","exit_code":1,"status":"failed"}}"#,
        );
        assert_eq!(
            events,
            [AgentEvent::ToolResult(ToolResult {
                id: "item_4".into(),
                output: String::new(),
                is_error: true,
            })]
        );
        // An MCP call.
        let events = parse(
            r#"{"type":"item.started","item":{"id":"item_5","type":"mcp_tool_call","server":"docs","tool":"search","arguments":{"q":"x"},"status":"in_progress"}}"#,
        );
        assert!(
            matches!(&events[..], [AgentEvent::ToolUse(t)] if t.name == "docs.search" && t.input == r#"{"q":"x"}"#)
        );
        let events = parse(
            r#"{"type":"item.completed","item":{"id":"item_5","type":"mcp_tool_call","server":"docs","tool":"search","arguments":{"q":"x"},"error":{"message":"boom"},"status":"failed"}}"#,
        );
        assert!(
            matches!(&events[..], [AgentEvent::ToolResult(r)] if r.output == "boom" && r.is_error)
        );
        // Reasoning and todo lists are kept raw; turn.started is dropped.
        for line in [
            r#"{"type":"item.completed","item":{"id":"item_6","type":"reasoning","text":"hmm"}}"#,
            r#"{"type":"item.updated","item":{"id":"item_7","type":"todo_list","items":[]}}"#,
        ] {
            assert_eq!(parse(line), [AgentEvent::Raw(line.into())]);
        }
        assert!(parse(r#"{"type":"turn.started"}"#).is_empty());
    }

    #[test]
    fn anything_else_is_raw() {
        let mut p = Parser::new(None);
        for line in [
            "",
            "garbage",
            "{}",
            r#"{"type":"thread.started"}"#,
            r#"{"type":"item.completed"}"#,
            r#"{"type":"item.completed","item":{"type":"agent_message"}}"#,
            r#"{"type":"something.new","x":1}"#,
            r#"{"type":"error"}"#,
            "[]",
        ] {
            assert_eq!(
                stdout(&mut p, line),
                [AgentEvent::Raw(line.into())],
                "{line}"
            );
        }
        assert_eq!(
            stderr(&mut p, "thread 'main' panicked"),
            [AgentEvent::Raw("thread 'main' panicked".into())]
        );
        // Lines that are not JSON may have been pieces of a split line.
        assert!(p.finish(Some(0)).success);
    }

    #[test]
    fn a_run_without_turn_completed_did_not_finish() {
        let lines: Vec<&str> = TURN.lines().collect();
        let (mut p, _) = run(None, &lines[..3].join("\n"), "");
        let s = p.finish(Some(0));
        assert!(!s.success);
        assert_eq!(
            s.error.as_deref(),
            Some("exited with status 0 without reporting a result")
        );
        assert_eq!(
            s.final_text.as_deref(),
            Some("fake reply 1 to: say hello please")
        );
    }

    #[test]
    fn truncated_lines_never_panic() {
        for fixture in ALL {
            let mut p = Parser::new(None);
            for line in fixture.lines() {
                let mut cut = line.len() / 2;
                while !line.is_char_boundary(cut) {
                    cut -= 1;
                }
                let half = &line[..cut];
                assert_eq!(stdout(&mut p, half), [AgentEvent::Raw(half.into())]);
            }
            let s = p.finish(Some(0));
            // Nothing understood, but cut lines may have held the result: no verdict on them.
            assert!(s.success && s.final_text.is_none() && s.usage.is_none());
        }
    }
}
