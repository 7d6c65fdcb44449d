//! Claude Code's `--output-format stream-json --verbose` lines as unified agent events.
//!
//! - `system`/`init` → `init` (session id, model);
//! - `assistant` → a `message` per text block, a `tool-use` per tool call; the synthetic
//!   assistant message Claude Code prints for an API error (`is_api_error_message`, model
//!   `<synthetic>`) → `error`;
//! - `user` → a `tool-result` per tool result;
//! - `result` → `usage` (this invocation's requests, not the whole session), `error` when
//!   `is_error`, then `done`.
//!
//! Anything else (other `system` subtypes, `stream_event` from `--include-partial-messages`,
//! lines that are not JSON) becomes a `raw` event; stderr lines are `raw` too.

use gantry_guest::adapter::Outcome;
use gantry_guest::json::{is_true, str_at, string_at, u64_at};
use gantry_guest::lines::JsonLines;
use gantry_guest::types::{AgentEvent, InitInfo, ToolResult, ToolUse, Usage};
use serde_json::Value;

/// The parsing state of one run.
#[derive(Debug, Default)]
pub struct Parser {
    outcome: Outcome,
}

impl JsonLines for Parser {
    fn outcome(&mut self) -> &mut Outcome {
        &mut self.outcome
    }

    /// A line whose type is not mapped, or that maps to no event, is `raw`.
    fn event(&mut self, v: &Value) -> Option<Vec<AgentEvent>> {
        let events = self.events(v);
        (!events.is_empty()).then_some(events)
    }
}

impl Parser {
    fn events(&mut self, v: &Value) -> Vec<AgentEvent> {
        if self.outcome.session_id.is_none()
            && let Some(id) = string_at(v, "session_id")
        {
            self.outcome.session_id = Some(id);
        }
        match (str_at(v, "type"), str_at(v, "subtype")) {
            (Some("system"), Some("init")) => {
                let session_id = string_at(v, "session_id");
                if session_id.is_some() {
                    self.outcome.session_id.clone_from(&session_id);
                }
                vec![AgentEvent::Init(InitInfo {
                    session_id,
                    model: string_at(v, "model"),
                })]
            }
            (Some("assistant"), _) => self.assistant(v),
            (Some("user"), _) => user(v),
            (Some("result"), _) => self.result(v),
            _ => vec![],
        }
    }

    fn assistant(&mut self, v: &Value) -> Vec<AgentEvent> {
        let blocks = content(v);
        let api_error =
            is_true(v, "is_api_error_message") || str_at(v, "message/model") == Some("<synthetic>");
        if api_error {
            let text: Vec<&str> = blocks.iter().filter_map(|b| str_at(b, "text")).collect();
            let message = if text.is_empty() {
                str_at(v, "error").unwrap_or("API error").to_string()
            } else {
                text.join("\n")
            };
            return self.outcome.error_event(message).into_iter().collect();
        }
        let mut events = Vec::new();
        for block in blocks {
            match str_at(block, "type") {
                Some("text") => {
                    if let Some(text) = str_at(block, "text").filter(|t| !t.is_empty()) {
                        self.outcome.final_text = Some(text.to_string());
                        events.push(AgentEvent::Message(text.to_string()));
                    }
                }
                Some("tool_use" | "server_tool_use") => events.push(AgentEvent::ToolUse(ToolUse {
                    id: string_at(block, "id").unwrap_or_default(),
                    name: string_at(block, "name").unwrap_or_default(),
                    input: block
                        .get("input")
                        .map_or_else(|| "{}".into(), Value::to_string),
                })),
                // Thinking blocks and anything newer are not reported.
                _ => {}
            }
        }
        events
    }

    fn result(&mut self, v: &Value) -> Vec<AgentEvent> {
        let mut events = Vec::new();
        if let Some(usage) = v.get("usage").and_then(usage) {
            self.outcome.usage = Some(usage);
            events.push(AgentEvent::Usage(usage));
        }
        let is_error =
            is_true(v, "is_error") || str_at(v, "subtype").is_some_and(|s| s.starts_with("error"));
        if is_error {
            events.extend(self.outcome.error_event(result_error(v)));
        } else if let Some(text) = string_at(v, "result") {
            self.outcome.final_text = Some(text);
        }
        events.push(self.outcome.done());
        events
    }
}

/// The tool results of a `user` line.
fn user(v: &Value) -> Vec<AgentEvent> {
    content(v)
        .iter()
        .filter(|b| str_at(b, "type") == Some("tool_result"))
        .map(|b| {
            AgentEvent::ToolResult(ToolResult {
                id: string_at(b, "tool_use_id").unwrap_or_default(),
                output: text_of(b.get("content")),
                is_error: is_true(b, "is_error"),
            })
        })
        .collect()
}

/// The message of an error `result`: its `result` text (an API error's message), else its
/// `errors`, with the terminal reason when that says more (`max_turns`, `aborted_streaming`).
fn result_error(v: &Value) -> String {
    let errors: Vec<&str> = v
        .get("errors")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let text = string_at(v, "result")
        .filter(|t| !t.is_empty())
        .or_else(|| (!errors.is_empty()).then(|| errors.join("; ")))
        .or_else(|| string_at(v, "subtype"))
        .unwrap_or_else(|| "the run failed".into());
    match str_at(v, "terminal_reason") {
        Some(reason) if !matches!(reason, "completed" | "api_error") && !text.contains(reason) => {
            format!("{text} ({reason})")
        }
        _ => text,
    }
}

/// `result.usage`, normalized: input counts every prompt token (Anthropic's `input_tokens`
/// excludes cache reads and writes, so they are added), cached the cache reads; output
/// includes thinking, reasoning is the thinking part.
fn usage(u: &Value) -> Option<Usage> {
    let n = |path: &str| u64_at(u, path).unwrap_or(0);
    if !u.is_object() {
        return None;
    }
    let cached = n("cache_read_input_tokens");
    Some(Usage {
        input_tokens: n("input_tokens") + cached + n("cache_creation_input_tokens"),
        output_tokens: n("output_tokens"),
        cached_tokens: cached,
        reasoning_tokens: n("output_tokens_details/thinking_tokens"),
    })
}

/// A tool result's content: a string, or a list of blocks whose text parts are joined.
fn text_of(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(blocks)) => blocks
            .iter()
            .filter_map(|b| str_at(b, "text"))
            .collect::<Vec<_>>()
            .join("\n"),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

fn content(v: &Value) -> &[Value] {
    gantry_guest::json::at(v, "message/content")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gantry_guest::lines::LineParser;
    use gantry_guest::testing::{self, stderr, stdout, usage};
    use gantry_guest::types::DoneInfo;

    const TURN: &str = include_str!("../../../tests/fixtures/claude/turn.jsonl");
    const RESUME: &str = include_str!("../../../tests/fixtures/claude/resume.jsonl");
    const TOOL: &str = include_str!("../../../tests/fixtures/claude/tool.jsonl");
    const API_ERROR: &str = include_str!("../../../tests/fixtures/claude/api_error.jsonl");
    const OVERLOADED: &str = include_str!("../../../tests/fixtures/claude/api_overloaded.jsonl");
    // Captured the same way as the fixtures (claude-code 2.1.330, fake model server).
    const MAX_TURNS: &str = include_str!("../testdata/max_turns.jsonl");
    const UNKNOWN_RESUME: &str = include_str!("../testdata/unknown_resume.jsonl");
    const UNKNOWN_RESUME_ERR: &str = include_str!("../testdata/unknown_resume.stderr.txt");
    const INTERRUPTED: &str = include_str!("../testdata/interrupted.jsonl");
    const ALL: &[&str] = &[
        TURN,
        RESUME,
        TOOL,
        API_ERROR,
        OVERLOADED,
        MAX_TURNS,
        UNKNOWN_RESUME,
        INTERRUPTED,
    ];

    fn run(out: &str, err: &str) -> (Parser, Vec<AgentEvent>) {
        testing::run(Parser::default(), out, err)
    }

    fn done(text: Option<&str>, session: &str) -> AgentEvent {
        AgentEvent::Done(DoneInfo {
            exit_code: None,
            final_text: text.map(Into::into),
            session_id: Some(session.into()),
        })
    }

    #[test]
    fn a_turn() {
        let sid = "dfd55363-c50b-469d-ab9d-8762648ed106";
        let (mut p, events) = run(TURN, "");
        assert_eq!(
            events,
            [
                AgentEvent::Init(InitInfo {
                    session_id: Some(sid.into()),
                    model: Some("claude-opus-5-5".into()),
                }),
                AgentEvent::Message("fake reply 1 to: say hello please".into()),
                AgentEvent::Usage(usage(120, 7, 20, 0)),
                done(Some("fake reply 1 to: say hello please"), sid),
            ]
        );
        let s = p.finish(Some(0));
        assert!(s.success);
        assert_eq!(s.session_id.as_deref(), Some(sid));
        assert_eq!(
            s.final_text.as_deref(),
            Some("fake reply 1 to: say hello please")
        );
        assert_eq!(s.usage, Some(usage(120, 7, 20, 0)));
        assert_eq!(s.error, None);
        // A clean stream with a failed exit is still a failure.
        assert_eq!(
            p.finish(Some(1)).error.as_deref(),
            Some("exited with status 1")
        );
        assert!(!p.finish(None).success);
    }

    #[test]
    fn a_resumed_turn_keeps_the_session() {
        let (mut p, events) = run(RESUME, "");
        let s = p.finish(Some(0));
        assert!(s.success);
        assert_eq!(
            s.session_id.as_deref(),
            Some("dfd55363-c50b-469d-ab9d-8762648ed106")
        );
        assert_eq!(
            s.final_text.as_deref(),
            Some("fake reply 2 to: and now the second prompt")
        );
        // This invocation's requests only, not the session's.
        assert_eq!(s.usage, Some(usage(120, 9, 20, 0)));
        assert_eq!(events.len(), 4);
    }

    #[test]
    fn a_tool_call() {
        let sid = "db875201-3d76-4c79-9d3c-7a281f5ed6ae";
        let (mut p, events) = run(TOOL, "");
        assert_eq!(
            events[1..],
            [
                AgentEvent::ToolUse(ToolUse {
                    id: "toolu_fake_3ef9ed2849f241fe".into(),
                    name: "Bash".into(),
                    input: r#"{"command":"echo hi","description":"Print hi"}"#.into(),
                }),
                AgentEvent::ToolResult(ToolResult {
                    id: "toolu_fake_3ef9ed2849f241fe".into(),
                    output: "hi".into(),
                    is_error: false,
                }),
                AgentEvent::Message(
                    "fake reply 1 to: please USE_TOOL now | tool output: hi".into()
                ),
                AgentEvent::Usage(usage(240, 18, 40, 0)),
                done(
                    Some("fake reply 1 to: please USE_TOOL now | tool output: hi"),
                    sid
                ),
            ]
        );
        assert!(p.finish(Some(0)).success);
    }

    #[test]
    fn api_errors() {
        for (fixture, status) in [(API_ERROR, "500"), (OVERLOADED, "529")] {
            let (mut p, events) = run(fixture, "");
            let errors: Vec<&String> = events
                .iter()
                .filter_map(|e| match e {
                    AgentEvent::Error(m) => Some(m),
                    _ => None,
                })
                .collect();
            // The synthetic assistant message and the result say the same: reported once.
            assert_eq!(errors.len(), 1, "{events:?}");
            assert!(
                errors[0].starts_with(&format!("API Error: {status} ")),
                "{}",
                errors[0]
            );
            assert!(matches!(events.last(), Some(AgentEvent::Done(d)) if d.final_text.is_none()));
            // No message events: the error text is not the agent's answer.
            assert!(!events.iter().any(|e| matches!(e, AgentEvent::Message(_))));
            let s = p.finish(Some(1));
            assert!(!s.success);
            assert_eq!(s.error.as_ref(), Some(errors[0]));
            assert_eq!(s.final_text, None);
            assert!(s.session_id.is_some());
            // Even with exit code 0 an API error fails the run.
            assert!(!p.finish(Some(0)).success);
        }
    }

    #[test]
    fn max_turns_unknown_resume_and_interruption() {
        let (mut p, events) = run(MAX_TURNS, "");
        assert!(events.iter().any(|e| matches!(e, AgentEvent::ToolUse(_))));
        let s = p.finish(Some(1));
        assert_eq!(
            s.error.as_deref(),
            Some("Reached maximum number of turns (1) (max_turns)")
        );
        assert_eq!(s.usage, Some(usage(120, 7, 20, 0)));

        let (mut p, events) = run(UNKNOWN_RESUME, UNKNOWN_RESUME_ERR);
        assert_eq!(events.len(), 4, "{events:?}"); // usage, error, done, raw stderr
        let s = p.finish(Some(1));
        assert_eq!(
            s.error.as_deref(),
            Some("No conversation found with session ID: 00000000-0000-4000-8000-000000000000")
        );
        assert_eq!(
            s.session_id.as_deref(),
            Some("00000000-0000-4000-8000-000000000000")
        );

        // SIGINT: a partial message, an interruption notice (raw), an error result, exit 0.
        let (mut p, events) = run(INTERRUPTED, "");
        assert!(events.contains(&AgentEvent::Message("fak".into())));
        assert!(events.contains(&AgentEvent::Raw(INTERRUPTED.lines().nth(2).unwrap().into())));
        let s = p.finish(Some(0));
        assert!(!s.success);
        assert!(s.error.unwrap().ends_with("(aborted_streaming)"));
        assert_eq!(s.final_text.as_deref(), Some("fak"));
    }

    #[test]
    fn a_run_without_its_result_line_did_not_finish() {
        // SIGTERM: Claude Code exits 143 at once, without a result line.
        let lines: Vec<&str> = TURN.lines().collect();
        let (mut p, _) = run(&lines[..2].join("\n"), "");
        let s = p.finish(Some(143));
        assert!(!s.success);
        assert_eq!(s.error.as_deref(), Some("exited with status 143"));
        assert_eq!(
            s.final_text.as_deref(),
            Some("fake reply 1 to: say hello please")
        );
        assert!(!p.finish(Some(0)).success);
    }

    #[test]
    fn a_result_line_split_by_the_host_is_not_a_failure() {
        // The host cuts lines longer than its limit (64 KiB by default) into pieces.
        let long = "x".repeat(100_000);
        let lines: Vec<&str> = TURN.lines().collect();
        let result = lines[2].replace(
            "\"result\":\"fake reply 1 to: say hello please\"",
            &format!("\"result\":\"{long}\""),
        );
        let mut p = Parser::default();
        for line in &lines[..2] {
            stdout(&mut p, line);
        }
        for piece in result.as_bytes().chunks(65536) {
            let piece = std::str::from_utf8(piece).unwrap();
            assert_eq!(stdout(&mut p, piece), [AgentEvent::Raw(piece.into())]);
        }
        let s = p.finish(Some(0));
        assert!(s.success, "{s:?}");
        assert_eq!(
            s.final_text.as_deref(),
            Some("fake reply 1 to: say hello please")
        );
    }

    #[test]
    fn anything_else_is_raw() {
        let mut p = Parser::default();
        for line in [
            "",
            "not json",
            "[1,2]",
            "{\"type\":\"stream_event\",\"event\":{}}",
            "{\"type\":\"system\",\"subtype\":\"status\"}",
            "{\"type\":\"assistant\",\"message\":{\"content\":\"oops\"}}",
            "{\"type\":\"user\",\"message\":{\"content\":[{\"type\":\"text\",\"text\":\"x\"}]}}",
            "{\"type\":42}",
            "null",
        ] {
            assert_eq!(
                stdout(&mut p, line),
                [AgentEvent::Raw(line.into())],
                "{line}"
            );
        }
        assert_eq!(
            stderr(&mut p, "some warning"),
            [AgentEvent::Raw("some warning".into())]
        );
        assert!(stderr(&mut p, "").is_empty());
        // Lines that are not JSON may have been pieces of a split result line.
        assert!(p.finish(Some(0)).success);
    }

    #[test]
    fn truncated_lines_never_panic() {
        for fixture in ALL {
            let mut p = Parser::default();
            for line in fixture.lines() {
                for cut in [line.len() / 2, line.len().saturating_sub(1), 1] {
                    let mut cut = cut;
                    while !line.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    let half = &line[..cut];
                    assert_eq!(stdout(&mut p, half), [AgentEvent::Raw(half.into())]);
                }
            }
            let s = p.finish(Some(0));
            // Nothing understood, but cut lines may have held the result: no verdict on them.
            assert!(s.success && s.final_text.is_none() && s.usage.is_none());
        }
    }
}
