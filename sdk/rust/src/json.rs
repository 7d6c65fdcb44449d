//! JSON: the forms the APIs print of the contract's values (one definition of each, used by
//! every handler), and lookups of fields in JSON that a CLI printed (for adapters).
//!
//! The forms are those gantry printed when the host still passed them as JSON text:
//!
//! - a task event: `{"seq", "kind", "data", "at"}` ([`event`]), where `kind` is `stdout`,
//!   `stderr`, `agent` or `state` ([`event_kind`]) and `data` is [`event_data`];
//! - an agent event: `{"type": "init" | "message" | ..., ...}` ([`agent_event`]);
//! - a task's request ([`request`]) and summary ([`summary`]).
//!
//! Enum names come from the enums' `as_str` (see [`crate::types`]).

use crate::bindings::gantry::plugin::tasks::Event;
use crate::types::{
    AgentEvent, EventBody, ModelUsage, OutputLine, PromptRequest, RunSummary, StateChange,
    TaskSummary, Usage,
};
use serde_json::{Value, json};

/// A task event: `{"seq", "kind", "data", "at"}`.
pub fn event(e: &Event) -> Value {
    json!({
        "seq": e.seq,
        "kind": event_kind(&e.body),
        "data": event_data(&e.body),
        "at": e.at,
    })
}

/// The kind of a task event: the stream's name for an output line, `agent`, or `state`.
pub fn event_kind(body: &EventBody) -> &'static str {
    match body {
        EventBody::Output(line) => line.stream.as_str(),
        EventBody::Agent(_) => "agent",
        EventBody::State(_) => "state",
    }
}

/// The payload of a task event: [`output_line`], [`agent_event`] or [`state_change`].
pub fn event_data(body: &EventBody) -> Value {
    match body {
        EventBody::Output(line) => output_line(line),
        EventBody::Agent(e) => agent_event(e),
        EventBody::State(change) => state_change(change),
    }
}

/// An output line: `{"line"}`, plus `"partial": true` for a piece of a longer line.
pub fn output_line(line: &OutputLine) -> Value {
    let mut data = json!({ "line": line.text });
    if line.partial {
        data["partial"] = true.into();
    }
    data
}

/// A change of state: `{"state"}`, plus `"reason"` when there is one; a terminal state also
/// has `"exit_code"` and `"error"` (null when absent).
pub fn state_change(change: &StateChange) -> Value {
    let mut data = json!({ "state": change.state.as_str() });
    if let Some(reason) = &change.reason {
        data["reason"] = reason.as_str().into();
    }
    if change.state.is_terminal() {
        data["exit_code"] = json!(change.exit_code);
        data["error"] = json!(change.error);
    }
    data
}

/// An agent event: `{"type", ...}` with the event's fields (absent options are null).
pub fn agent_event(e: &AgentEvent) -> Value {
    match e {
        AgentEvent::Init(i) => {
            json!({"type": "init", "session_id": i.session_id, "model": i.model})
        }
        AgentEvent::Message(text) => json!({"type": "message", "text": text}),
        AgentEvent::ToolUse(t) => {
            json!({"type": "tool_use", "id": t.id, "name": t.name, "input": t.input})
        }
        AgentEvent::ToolResult(t) => {
            json!({"type": "tool_result", "id": t.id, "output": t.output, "is_error": t.is_error})
        }
        AgentEvent::Usage(u) => usage(u),
        AgentEvent::Error(message) => json!({"type": "error", "message": message}),
        AgentEvent::Done(d) => json!({
            "type": "done",
            "exit_code": d.exit_code,
            "final_text": d.final_text,
            "session_id": d.session_id,
        }),
        AgentEvent::Raw(line) => json!({"type": "raw", "line": line}),
    }
}

/// Token usage, as the `usage` agent event: `{"type": "usage", "input_tokens",
/// "output_tokens", "cached_tokens", "reasoning_tokens"}`.
pub fn usage(u: &Usage) -> Value {
    json!({
        "type": "usage",
        "input_tokens": u.input_tokens,
        "output_tokens": u.output_tokens,
        "cached_tokens": u.cached_tokens,
        "reasoning_tokens": u.reasoning_tokens,
    })
}

/// A prompt request: `{"prompt", "args", "model", "system_prompt", "max_turns",
/// "approval_mode", "sandbox_mode", "extra_flags", "resume_session"}`.
pub fn request(r: &PromptRequest) -> Value {
    json!({
        "prompt": r.prompt,
        "args": r.args,
        "model": r.model,
        "system_prompt": r.system_prompt,
        "max_turns": r.max_turns,
        "approval_mode": r.approval_mode.as_str(),
        "sandbox_mode": r.sandbox_mode.as_str(),
        "extra_flags": r.extra_flags,
        "resume_session": r.resume_session,
    })
}

/// How a task ended: the run summary's fields (`"usage"` as [`usage`], or null), plus
/// `"model_usage"` when the model proxy saw traffic; only `{"model_usage"}` without a run
/// summary; null without either (or without a summary).
pub fn summary(s: Option<&TaskSummary>) -> Value {
    let Some(s) = s else {
        return Value::Null;
    };
    let mut value = match &s.run {
        Some(run) => run_summary(run),
        None if s.model_usage.is_some() => json!({}),
        None => return Value::Null,
    };
    if let Some(m) = &s.model_usage {
        value["model_usage"] = model_usage(m);
    }
    value
}

/// A run summary: `{"success", "session_id", "final_text", "error", "usage"}`.
pub fn run_summary(s: &RunSummary) -> Value {
    json!({
        "success": s.success,
        "session_id": s.session_id,
        "final_text": s.final_text,
        "error": s.error,
        "usage": s.usage.as_ref().map(usage),
    })
}

/// Model API traffic: `{"requests", "input_tokens", "output_tokens"}`.
pub fn model_usage(m: &ModelUsage) -> Value {
    json!({
        "requests": m.requests,
        "input_tokens": m.input_tokens,
        "output_tokens": m.output_tokens,
    })
}

/// The value at `path` in `v`: keys (or array indexes) separated by `/`, such as `type` or
/// `message/content/0`.
pub fn at<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('/').try_fold(v, |v, key| match v {
        Value::Array(items) => items.get(key.parse::<usize>().ok()?),
        _ => v.get(key),
    })
}

/// The string at `path` (see [`at`]).
pub fn str_at<'a>(v: &'a Value, path: &str) -> Option<&'a str> {
    at(v, path).and_then(Value::as_str)
}

/// The string at `path`, owned.
pub fn string_at(v: &Value, path: &str) -> Option<String> {
    str_at(v, path).map(str::to_string)
}

/// The unsigned integer at `path`.
pub fn u64_at(v: &Value, path: &str) -> Option<u64> {
    at(v, path).and_then(Value::as_u64)
}

/// The boolean at `path`.
pub fn bool_at(v: &Value, path: &str) -> Option<bool> {
    at(v, path).and_then(Value::as_bool)
}

/// Whether the value at `path` is `true`.
pub fn is_true(v: &Value, path: &str) -> bool {
    bool_at(v, path) == Some(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{
        ApprovalMode, DoneInfo, InitInfo, OutputStream, SandboxMode, TaskState, ToolResult, ToolUse,
    };

    fn text(v: &Value) -> String {
        v.to_string()
    }

    fn usage_of(i: u64, o: u64, c: u64, r: u64) -> Usage {
        Usage {
            input_tokens: i,
            output_tokens: o,
            cached_tokens: c,
            reasoning_tokens: r,
        }
    }

    #[test]
    fn events() {
        let out = |stream, partial| {
            EventBody::Output(OutputLine {
                stream,
                text: "hi".into(),
                partial,
            })
        };
        let e = Event {
            seq: 3,
            body: out(OutputStream::Stderr, false),
            at: 1700,
        };
        assert_eq!(
            text(&event(&e)),
            r#"{"at":1700,"data":{"line":"hi"},"kind":"stderr","seq":3}"#
        );
        assert_eq!(event_kind(&out(OutputStream::Stdout, true)), "stdout");
        assert_eq!(
            text(&event_data(&out(OutputStream::Stdout, true))),
            r#"{"line":"hi","partial":true}"#
        );
        let state = |state, reason: Option<&str>, exit_code, error: Option<&str>| {
            EventBody::State(StateChange {
                state,
                reason: reason.map(Into::into),
                exit_code,
                error: error.map(Into::into),
            })
        };
        let running = state(TaskState::Running, None, None, None);
        assert_eq!(event_kind(&running), "state");
        assert_eq!(text(&event_data(&running)), r#"{"state":"running"}"#);
        assert_eq!(
            text(&event_data(&state(TaskState::Done, None, Some(0), None))),
            r#"{"error":null,"exit_code":0,"state":"done"}"#
        );
        assert_eq!(
            text(&event_data(&state(
                TaskState::TimedOut,
                None,
                None,
                Some("timed out after 5 ms")
            ))),
            r#"{"error":"timed out after 5 ms","exit_code":null,"state":"timed_out"}"#
        );
        assert_eq!(
            text(&event_data(&state(
                TaskState::Cancelled,
                Some("cancelled before it started"),
                None,
                None
            ))),
            r#"{"error":null,"exit_code":null,"reason":"cancelled before it started","state":"cancelled"}"#
        );
        let agent = EventBody::Agent(AgentEvent::Message("m".into()));
        assert_eq!(event_kind(&agent), "agent");
        assert_eq!(
            text(&event_data(&agent)),
            r#"{"text":"m","type":"message"}"#
        );
    }

    #[test]
    fn agent_events() {
        let cases = [
            (
                AgentEvent::Init(InitInfo {
                    session_id: Some("s".into()),
                    model: None,
                }),
                r#"{"model":null,"session_id":"s","type":"init"}"#,
            ),
            (
                AgentEvent::ToolUse(ToolUse {
                    id: "t".into(),
                    name: "Bash".into(),
                    input: "{}".into(),
                }),
                r#"{"id":"t","input":"{}","name":"Bash","type":"tool_use"}"#,
            ),
            (
                AgentEvent::ToolResult(ToolResult {
                    id: "t".into(),
                    output: "o".into(),
                    is_error: true,
                }),
                r#"{"id":"t","is_error":true,"output":"o","type":"tool_result"}"#,
            ),
            (
                AgentEvent::Usage(usage_of(1, 2, 3, 4)),
                r#"{"cached_tokens":3,"input_tokens":1,"output_tokens":2,"reasoning_tokens":4,"type":"usage"}"#,
            ),
            (
                AgentEvent::Error("e".into()),
                r#"{"message":"e","type":"error"}"#,
            ),
            (
                AgentEvent::Done(DoneInfo {
                    exit_code: Some(0),
                    final_text: None,
                    session_id: Some("s".into()),
                }),
                r#"{"exit_code":0,"final_text":null,"session_id":"s","type":"done"}"#,
            ),
            (AgentEvent::Raw("r".into()), r#"{"line":"r","type":"raw"}"#),
        ];
        for (e, expect) in cases {
            assert_eq!(text(&agent_event(&e)), expect);
        }
    }

    #[test]
    fn requests() {
        let mut r = crate::adapter::plain_request("p");
        assert_eq!(
            text(&request(&r)),
            r#"{"approval_mode":"default","args":[],"extra_flags":[],"max_turns":null,"model":null,"prompt":"p","resume_session":null,"sandbox_mode":"default","system_prompt":null}"#
        );
        r.approval_mode = ApprovalMode::Always;
        r.sandbox_mode = SandboxMode::ReadOnly;
        r.max_turns = Some(3);
        let v = request(&r);
        assert_eq!(
            (&v["approval_mode"], &v["sandbox_mode"], &v["max_turns"]),
            (&json!("always"), &json!("read-only"), &json!(3))
        );
    }

    #[test]
    fn summaries() {
        let run = RunSummary {
            success: true,
            session_id: Some("s".into()),
            final_text: Some("t".into()),
            usage: Some(usage_of(1, 2, 0, 0)),
            error: None,
        };
        let model = ModelUsage {
            requests: 2,
            input_tokens: 10,
            output_tokens: 20,
        };
        assert_eq!(summary(None), Value::Null);
        let only_run = TaskSummary {
            run: Some(run.clone()),
            model_usage: None,
        };
        assert_eq!(
            text(&summary(Some(&only_run))),
            r#"{"error":null,"final_text":"t","session_id":"s","success":true,"usage":{"cached_tokens":0,"input_tokens":1,"output_tokens":2,"reasoning_tokens":0,"type":"usage"}}"#
        );
        let both = TaskSummary {
            run: Some(RunSummary { usage: None, ..run }),
            model_usage: Some(model),
        };
        assert_eq!(
            text(&summary(Some(&both))),
            r#"{"error":null,"final_text":"t","model_usage":{"input_tokens":10,"output_tokens":20,"requests":2},"session_id":"s","success":true,"usage":null}"#
        );
        let only_model = TaskSummary {
            run: None,
            model_usage: Some(model),
        };
        assert_eq!(
            text(&summary(Some(&only_model))),
            r#"{"model_usage":{"input_tokens":10,"output_tokens":20,"requests":2}}"#
        );
        let neither = TaskSummary {
            run: None,
            model_usage: None,
        };
        assert_eq!(summary(Some(&neither)), Value::Null);
    }

    #[test]
    fn fields_at_paths() {
        let v = json!({"type": "x", "n": 3, "ok": true, "message": {"content": [{"text": "a"}]}});
        assert_eq!(str_at(&v, "type"), Some("x"));
        assert_eq!(
            string_at(&v, "message/content/0/text").as_deref(),
            Some("a")
        );
        assert_eq!(u64_at(&v, "n"), Some(3));
        assert_eq!(bool_at(&v, "ok"), Some(true));
        assert!(is_true(&v, "ok") && !is_true(&v, "n"));
        assert_eq!(str_at(&v, "n"), None);
        assert_eq!(at(&v, "message/content/x"), None);
        assert_eq!(at(&v, "missing/deeper"), None);
        assert_eq!(str_at(&json!("s"), "type"), None);
    }
}
