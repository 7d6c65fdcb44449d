//! Gemini CLI's `--output-format stream-json` lines as unified agent events.
//!
//! - `init` → `init` (session id; model `auto` when the CLI routes);
//! - `message` from the assistant → one `message` per chunk (`"delta":true`); the final text
//!   is the chunks of the last assistant message joined (chunks after a tool call start a new
//!   message); the echo of the user's prompt is dropped;
//! - `tool_use` → `tool-use`, `tool_result` → `tool-result`;
//! - `error` with severity `error` → `error` (warnings stay `raw`);
//! - `result` → `usage` (this invocation), `error` when its status is `error`, then `done`.
//!
//! Other lines become `raw` events. On stderr, the notices Gemini CLI prints on every run are
//! dropped and everything else (stack traces included) is `raw`.

use gantry_guest::adapter::Outcome;
use gantry_guest::json::{str_at, string_at, u64_at};
use gantry_guest::lines::JsonLines;
use gantry_guest::types::{AgentEvent, InitInfo, ToolResult, ToolUse, Usage};
use serde_json::Value;

/// Stderr lines Gemini CLI prints on (almost) every run, of no interest.
const STDERR_NOISE: &[&str] = &[
    "Warning: 256-color support not detected.",
    "Ripgrep is not available.",
    "YOLO mode is enabled.",
    "[STARTUP] Phase ",
];

/// The parsing state of one run.
#[derive(Debug, Default)]
pub struct Parser {
    outcome: Outcome,
    /// The text of the assistant message being received.
    text: String,
    /// Whether a tool call came after the last chunk (the next chunk starts a new message).
    text_closed: bool,
}

impl JsonLines for Parser {
    const STDERR_NOISE: &'static [&'static str] = STDERR_NOISE;

    fn outcome(&mut self) -> &mut Outcome {
        &mut self.outcome
    }

    /// The events of a line; `None` when it is not understood.
    fn event(&mut self, v: &Value) -> Option<Vec<AgentEvent>> {
        Some(match str_at(v, "type")? {
            "init" => {
                let session_id = string_at(v, "session_id");
                self.outcome.session_id.clone_from(&session_id);
                vec![AgentEvent::Init(InitInfo {
                    session_id,
                    model: string_at(v, "model"),
                })]
            }
            "message" => {
                let content = str_at(v, "content")?;
                match str_at(v, "role")? {
                    "user" => vec![],
                    "assistant" => {
                        let delta = gantry_guest::json::is_true(v, "delta");
                        if self.text_closed || !delta {
                            self.text.clear();
                            self.text_closed = false;
                        }
                        self.text.push_str(content);
                        if !self.text.is_empty() {
                            self.outcome.final_text = Some(self.text.clone());
                        }
                        if content.is_empty() {
                            vec![]
                        } else {
                            vec![AgentEvent::Message(content.to_string())]
                        }
                    }
                    _ => return None,
                }
            }
            "tool_use" => {
                let used = ToolUse {
                    id: string_at(v, "tool_id")?,
                    name: string_at(v, "tool_name")?,
                    input: v
                        .get("parameters")
                        .map_or_else(|| "{}".into(), Value::to_string),
                };
                self.text_closed = true;
                vec![AgentEvent::ToolUse(used)]
            }
            "tool_result" => {
                let result = ToolResult {
                    id: string_at(v, "tool_id")?,
                    output: string_at(v, "output")
                        .or_else(|| string_at(v, "error/message"))
                        .unwrap_or_default(),
                    is_error: str_at(v, "status") != Some("success"),
                };
                self.text_closed = true;
                vec![AgentEvent::ToolResult(result)]
            }
            "error" if str_at(v, "severity") == Some("error") => {
                self.error(string_at(v, "message").unwrap_or_else(|| "error".into()))
            }
            "result" => {
                let mut events = Vec::new();
                if let Some(usage) = v.get("stats").and_then(usage) {
                    self.outcome.usage = Some(usage);
                    events.push(AgentEvent::Usage(usage));
                }
                if str_at(v, "status") != Some("success") {
                    let message = str_at(v, "error/message").unwrap_or("the run failed");
                    events.extend(self.error(message.to_string()));
                }
                events.push(self.outcome.done());
                events
            }
            _ => return None,
        })
    }
}

impl Parser {
    fn error(&mut self, message: String) -> Vec<AgentEvent> {
        self.outcome.error_event(message).into_iter().collect()
    }
}

/// `result.stats` (this invocation, every model including a routing call). Gemini's
/// `output_tokens` leaves out the thinking tokens, which `total_tokens` includes: they are
/// reported as reasoning and added to output, so that output includes reasoning as for the
/// other backends. Input (`input_tokens`) already includes the cached tokens.
fn usage(stats: &Value) -> Option<Usage> {
    if !stats.is_object() {
        return None;
    }
    let n = |key: &str| u64_at(stats, key).unwrap_or(0);
    let (input, output) = (n("input_tokens"), n("output_tokens"));
    let reasoning = n("total_tokens").saturating_sub(input + output);
    Some(Usage {
        input_tokens: input,
        output_tokens: output + reasoning,
        cached_tokens: n("cached"),
        reasoning_tokens: reasoning,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use gantry_guest::lines::LineParser;
    use gantry_guest::testing::{self, messages, stderr, stdout, usage};
    use gantry_guest::types::DoneInfo;

    const TURN: &str = include_str!("../../../tests/fixtures/gemini/turn.jsonl");
    const TURN_ERR: &str = include_str!("../../../tests/fixtures/gemini/turn.stderr.txt");
    const TURN_ROUTED: &str = include_str!("../../../tests/fixtures/gemini/turn_routed.jsonl");
    const RESUME: &str = include_str!("../../../tests/fixtures/gemini/resume.jsonl");
    const TOOL: &str = include_str!("../../../tests/fixtures/gemini/tool.jsonl");
    const TOOL_YOLO: &str = include_str!("../../../tests/fixtures/gemini/tool_yolo.jsonl");
    const TOOL_YOLO_ERR: &str = include_str!("../../../tests/fixtures/gemini/tool_yolo.stderr.txt");
    const API_ERROR: &str = include_str!("../../../tests/fixtures/gemini/api_error.jsonl");
    const API_ERROR_ERR: &str = include_str!("../../../tests/fixtures/gemini/api_error.stderr.txt");
    const API_INVALID: &str = include_str!("../../../tests/fixtures/gemini/api_invalid.jsonl");
    // Captured the same way as the fixtures (gemini-cli 0.61.0, fake model server).
    const DEAD_SERVER: &str = include_str!("../testdata/dead_server.jsonl");
    const MISSING_KEY_ERR: &str = include_str!("../testdata/missing_key.stderr.txt");
    const UNKNOWN_RESUME_ERR: &str = include_str!("../testdata/unknown_resume.stderr.txt");
    const ALL: &[&str] = &[
        TURN,
        TURN_ROUTED,
        RESUME,
        TOOL,
        TOOL_YOLO,
        API_ERROR,
        API_INVALID,
        DEAD_SERVER,
    ];

    fn run(out: &str, err: &str) -> (Parser, Vec<AgentEvent>) {
        testing::run(Parser::default(), out, err)
    }

    #[test]
    fn a_turn() {
        let sid = "6efcf64b-0f78-457c-a704-6fc7252e6327";
        let text = "fake reply 1 to: say hello please";
        let (mut p, events) = run(TURN, TURN_ERR);
        assert_eq!(
            events,
            [
                AgentEvent::Init(InitInfo {
                    session_id: Some(sid.into()),
                    model: Some("gemini-2.5-flash".into()),
                }),
                AgentEvent::Message("fake reply 1 ".into()),
                AgentEvent::Message("to: say hello ".into()),
                AgentEvent::Message("please".into()),
                // total 112 = 100 in + 7 out + 5 thinking.
                AgentEvent::Usage(usage(100, 12, 20, 5)),
                AgentEvent::Done(DoneInfo {
                    exit_code: None,
                    final_text: Some(text.into()),
                    session_id: Some(sid.into()),
                }),
            ]
        );
        let s = p.finish(Some(0));
        assert!(s.success);
        assert_eq!(s.session_id.as_deref(), Some(sid));
        assert_eq!(s.final_text.as_deref(), Some(text));
        assert_eq!(s.usage, Some(usage(100, 12, 20, 5)));
        assert!(!p.finish(Some(1)).success);
    }

    #[test]
    fn resumed_and_routed_turns() {
        let (mut p, _) = run(RESUME, "");
        let s = p.finish(Some(0));
        assert_eq!(
            s.session_id.as_deref(),
            Some("6efcf64b-0f78-457c-a704-6fc7252e6327")
        );
        assert_eq!(
            s.final_text.as_deref(),
            Some("fake reply 2 to: and now the second prompt")
        );
        assert_eq!(s.usage, Some(usage(100, 14, 20, 5)));

        // Routed: model "auto", usage sums the routing call and the answer.
        let (mut p, events) = run(TURN_ROUTED, "");
        assert!(matches!(&events[0], AgentEvent::Init(i) if i.model.as_deref() == Some("auto")));
        let s = p.finish(Some(0));
        assert_eq!(
            s.final_text.as_deref(),
            Some("fake reply 1 to: say hello please")
        );
        assert_eq!(s.usage, Some(usage(200, 22, 40, 10)));
    }

    #[test]
    fn tool_calls() {
        let (mut p, events) = run(TOOL, "");
        assert_eq!(
            events[1..3],
            [
                AgentEvent::ToolUse(ToolUse {
                    id: "list_directory__list_directory_1795421567343_0".into(),
                    name: "list_directory".into(),
                    input: r#"{"dir_path":"."}"#.into(),
                }),
                AgentEvent::ToolResult(ToolResult {
                    id: "list_directory__list_directory_1795421567343_0".into(),
                    output: "Directory is empty.".into(),
                    is_error: false,
                }),
            ]
        );
        let s = p.finish(Some(0));
        assert!(s.success);
        assert_eq!(
            s.final_text.as_deref(),
            Some(
                "fake reply 1 to: please USE_TOOL now | tool output: Directory /tmp/tmp.AARja0dqjN/gemini/wor"
            )
        );

        let (mut p, events) = run(TOOL_YOLO, TOOL_YOLO_ERR);
        assert!(events.contains(&AgentEvent::ToolUse(ToolUse {
            id: "run_shell_command__run_shell_command_1795421571032_0".into(),
            name: "run_shell_command".into(),
            input: r#"{"command":"echo hi","description":"Print hi"}"#.into(),
        })));
        // The YOLO and other notices on stderr are dropped.
        assert!(
            !events.iter().any(|e| matches!(e, AgentEvent::Raw(_))),
            "{events:?}"
        );
        let s = p.finish(Some(0));
        assert_eq!(
            s.final_text.as_deref(),
            Some("fake reply 1 to: please USE_TOOL now | tool output: hi")
        );
        assert_eq!(s.usage, Some(usage(200, 28, 40, 10)));
    }

    #[test]
    fn text_after_a_tool_call_is_a_new_message() {
        let mut p = Parser::default();
        for line in [
            r#"{"type":"message","role":"assistant","content":"Let me look.","delta":true}"#,
            r#"{"type":"tool_use","tool_name":"read_file","tool_id":"t1","parameters":{}}"#,
            r#"{"type":"tool_result","tool_id":"t1","status":"error","error":{"type":"x","message":"no such file"}}"#,
            r#"{"type":"message","role":"assistant","content":"It is ","delta":true}"#,
            r#"{"type":"message","role":"assistant","content":"missing.","delta":true}"#,
        ] {
            let events = stdout(&mut p, line);
            if line.contains("tool_result") {
                assert_eq!(
                    events,
                    [AgentEvent::ToolResult(ToolResult {
                        id: "t1".into(),
                        output: "no such file".into(),
                        is_error: true,
                    })]
                );
            }
        }
        assert_eq!(
            p.finish(Some(0)).final_text.as_deref(),
            Some("It is missing.")
        );
    }

    #[test]
    fn api_errors() {
        for (stdout, stderr, code) in [
            (API_ERROR, API_ERROR_ERR, 244),
            (API_INVALID, "", 144),
            (DEAD_SERVER, "", 1),
        ] {
            let (mut p, events) = run(stdout, stderr);
            let errors: Vec<&AgentEvent> = events
                .iter()
                .filter(|e| matches!(e, AgentEvent::Error(_)))
                .collect();
            assert_eq!(errors.len(), 1, "{events:?}");
            assert!(messages(&events).is_empty());
            assert!(matches!(
                events.last(),
                Some(AgentEvent::Done(_)) | Some(AgentEvent::Raw(_))
            ));
            let s = p.finish(Some(code));
            assert!(!s.success);
            assert!(
                s.error.as_ref().unwrap().starts_with("[API Error: "),
                "{:?}",
                s.error
            );
            assert_eq!(s.usage, Some(usage(0, 0, 0, 0)));
            assert!(!p.finish(Some(0)).success);
        }
        let (mut p, _) = run(API_ERROR, "");
        assert_eq!(
            p.finish(Some(244)).error.as_deref(),
            Some(
                r#"[API Error: {"error":{"code":500,"status":"INTERNAL","message":"fake model: internal server error (FAIL_500)"}}]"#
            )
        );
    }

    #[test]
    fn failures_explained_on_stderr() {
        let (mut p, events) = run("", MISSING_KEY_ERR);
        assert_eq!(events.len(), 2);
        assert_eq!(
            p.finish(Some(41)).error.as_deref(),
            Some(
                "exited with status 41: When using Gemini API, you must specify the \
                 GEMINI_API_KEY environment variable."
            )
        );
        let (mut p, _) = run("", UNKNOWN_RESUME_ERR);
        assert_eq!(
            p.finish(Some(42)).error.as_deref(),
            Some(
                "exited with status 42: Error resuming session: No previous sessions found for this project."
            )
        );
    }

    #[test]
    fn a_cancelled_run_did_not_finish() {
        // SIGTERM to a single-process Gemini CLI: exit 0, no result line.
        let lines: Vec<&str> = TURN.lines().collect();
        let (mut p, _) = run(&lines[..4].join("\n"), "");
        let s = p.finish(Some(0));
        assert!(!s.success);
        assert_eq!(
            s.error.as_deref(),
            Some("exited with status 0 without reporting a result")
        );
        assert_eq!(s.final_text.as_deref(), Some("fake reply 1 to: say hello "));
        assert_eq!(s.usage, None);
    }

    #[test]
    fn anything_else_is_raw() {
        let mut p = Parser::default();
        for line in [
            "",
            "{not json",
            "{}",
            r#"{"type":"error","severity":"warning","message":"Loop detected, stopping execution"}"#,
            r#"{"type":"message","role":"system","content":"x"}"#,
            r#"{"type":"message","role":"assistant"}"#,
            r#"{"type":"tool_use","tool_name":"x"}"#,
            r#"{"type":"future"}"#,
            "17",
        ] {
            assert_eq!(
                stdout(&mut p, line),
                [AgentEvent::Raw(line.into())],
                "{line}"
            );
        }
        // Lines that are not JSON may have been pieces of a split line.
        assert!(p.finish(Some(0)).success);
        // Stderr: the notices are dropped, anything else is raw.
        assert!(stderr(&mut p, "Ripgrep is not available. Falling back").is_empty());
        assert_eq!(
            stderr(&mut p, "    at main (cli.js:1)"),
            [AgentEvent::Raw("    at main (cli.js:1)".into())]
        );
        let line =
            r#"{"type":"error","severity":"error","message":"Maximum session turns exceeded"}"#;
        assert_eq!(
            stdout(&mut p, line),
            [AgentEvent::Error("Maximum session turns exceeded".into())]
        );
        assert!(!p.finish(Some(0)).success);
    }

    #[test]
    fn truncated_lines_never_panic() {
        for fixture in ALL {
            let mut p = Parser::default();
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
