//! The JSON forms of typed values at the SQL boundary: a task's request and summary, and each
//! log event's `kind` and `data` columns. These are the only JSON encodings the host makes of
//! them; the forms are those gantry has always stored, so existing databases read back as they
//! were written.

use crate::contract::{
    AgentEvent, ApprovalMode, DoneInfo, EventBody, InitInfo, ModelUsage, OutputLine, OutputStream,
    PromptRequest, RunSummary, SandboxMode, StateChange, TaskState, TaskSummary, ToolResult,
    ToolUse, Usage,
};
use anyhow::{Context, Result, bail};
use serde_json::{Map, Value, json};

/// A task state's stored name.
pub fn task_state_name(state: TaskState) -> &'static str {
    match state {
        TaskState::Pending => "pending",
        TaskState::Running => "running",
        TaskState::Done => "done",
        TaskState::Failed => "failed",
        TaskState::Cancelled => "cancelled",
        TaskState::TimedOut => "timed_out",
        TaskState::Interrupted => "interrupted",
    }
}

/// The task state of a stored name.
pub fn task_state(name: &str) -> Result<TaskState> {
    Ok(match name {
        "pending" => TaskState::Pending,
        "running" => TaskState::Running,
        "done" => TaskState::Done,
        "failed" => TaskState::Failed,
        "cancelled" => TaskState::Cancelled,
        "timed_out" => TaskState::TimedOut,
        "interrupted" => TaskState::Interrupted,
        other => bail!("unknown task state {other:?}"),
    })
}

fn approval_name(mode: ApprovalMode) -> &'static str {
    match mode {
        ApprovalMode::Default => "default",
        ApprovalMode::Auto => "auto",
        ApprovalMode::None => "none",
        ApprovalMode::Always => "always",
    }
}

fn sandbox_name(mode: SandboxMode) -> &'static str {
    match mode {
        SandboxMode::Default => "default",
        SandboxMode::ReadOnly => "read-only",
        SandboxMode::Workspace => "workspace",
        SandboxMode::Full => "full",
    }
}

/// A prompt request as stored with its task.
pub fn request_json(r: &PromptRequest) -> Value {
    json!({
        "prompt": r.prompt,
        "args": r.args,
        "model": r.model,
        "system_prompt": r.system_prompt,
        "max_turns": r.max_turns,
        "approval_mode": approval_name(r.approval_mode),
        "sandbox_mode": sandbox_name(r.sandbox_mode),
        "extra_flags": r.extra_flags,
        "resume_session": r.resume_session,
    })
}

fn string(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_string)
}

fn strings(v: &Value, key: &str) -> Vec<String> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn number(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// The prompt request of a stored task.
pub fn request_from_json(v: &Value) -> Result<PromptRequest> {
    let approval_mode = match v.get("approval_mode").and_then(Value::as_str) {
        Some("auto") => ApprovalMode::Auto,
        Some("none") => ApprovalMode::None,
        Some("always") => ApprovalMode::Always,
        _ => ApprovalMode::Default,
    };
    let sandbox_mode = match v.get("sandbox_mode").and_then(Value::as_str) {
        Some("read-only") => SandboxMode::ReadOnly,
        Some("workspace") => SandboxMode::Workspace,
        Some("full") => SandboxMode::Full,
        _ => SandboxMode::Default,
    };
    Ok(PromptRequest {
        prompt: string(v, "prompt").context("a stored request without a prompt")?,
        args: strings(v, "args"),
        model: string(v, "model"),
        system_prompt: string(v, "system_prompt"),
        max_turns: v
            .get("max_turns")
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok()),
        approval_mode,
        sandbox_mode,
        extra_flags: strings(v, "extra_flags"),
        resume_session: string(v, "resume_session"),
    })
}

fn usage_json(u: &Usage) -> Value {
    json!({
        "type": "usage",
        "input_tokens": u.input_tokens,
        "output_tokens": u.output_tokens,
        "cached_tokens": u.cached_tokens,
        "reasoning_tokens": u.reasoning_tokens,
    })
}

fn usage(v: &Value) -> Usage {
    Usage {
        input_tokens: number(v, "input_tokens"),
        output_tokens: number(v, "output_tokens"),
        cached_tokens: number(v, "cached_tokens"),
        reasoning_tokens: number(v, "reasoning_tokens"),
    }
}

/// An agent event as stored: `{"type": …, …}`.
pub fn agent_event_json(e: &AgentEvent) -> Value {
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
        AgentEvent::Usage(u) => usage_json(u),
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

fn agent_event(v: &Value) -> Result<AgentEvent> {
    let text = |key| string(v, key).unwrap_or_default();
    Ok(match v.get("type").and_then(Value::as_str) {
        Some("init") => AgentEvent::Init(InitInfo {
            session_id: string(v, "session_id"),
            model: string(v, "model"),
        }),
        Some("message") => AgentEvent::Message(text("text")),
        Some("tool_use") => AgentEvent::ToolUse(ToolUse {
            id: text("id"),
            name: text("name"),
            input: text("input"),
        }),
        Some("tool_result") => AgentEvent::ToolResult(ToolResult {
            id: text("id"),
            output: text("output"),
            is_error: v.get("is_error").and_then(Value::as_bool).unwrap_or(false),
        }),
        Some("usage") => AgentEvent::Usage(usage(v)),
        Some("error") => AgentEvent::Error(text("message")),
        Some("done") => AgentEvent::Done(DoneInfo {
            exit_code: v
                .get("exit_code")
                .and_then(Value::as_i64)
                .and_then(|c| i32::try_from(c).ok()),
            final_text: string(v, "final_text"),
            session_id: string(v, "session_id"),
        }),
        Some("raw") => AgentEvent::Raw(text("line")),
        other => bail!("unknown agent event type {other:?}"),
    })
}

/// A log event's `kind` and `data` columns.
pub fn event_columns(body: &EventBody) -> (&'static str, Value) {
    match body {
        EventBody::Output(line) => {
            let kind = output_kind(line.stream);
            let mut data = json!({ "line": line.text });
            if line.partial {
                data["partial"] = true.into();
            }
            (kind, data)
        }
        EventBody::Agent(event) => ("agent", agent_event_json(event)),
        EventBody::State(change) => {
            let mut data = Map::new();
            data.insert("state".into(), task_state_name(change.state).into());
            if let Some(reason) = &change.reason {
                data.insert("reason".into(), reason.clone().into());
            }
            if is_terminal(change.state) {
                data.insert("exit_code".into(), change.exit_code.into());
                data.insert("error".into(), change.error.clone().into());
            }
            ("state", Value::Object(data))
        }
    }
}

/// An event's columns as stored: its kind and its data as JSON text. An output line, nearly
/// every event of a busy log, is written straight to text, without a `Value` between.
pub fn event_text(body: &EventBody) -> (&'static str, String) {
    /// An output line's data, as [`event_columns`] has it.
    #[derive(serde::Serialize)]
    struct LineData<'a> {
        line: &'a str,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        partial: bool,
    }
    match body {
        EventBody::Output(line) => {
            let data = LineData {
                line: &line.text,
                partial: line.partial,
            };
            let text = serde_json::to_string(&data).expect("a struct of a string and a bool");
            (output_kind(line.stream), text)
        }
        other => {
            let (kind, data) = event_columns(other);
            (kind, data.to_string())
        }
    }
}

fn output_kind(stream: OutputStream) -> &'static str {
    match stream {
        OutputStream::Stdout => "stdout",
        OutputStream::Stderr => "stderr",
    }
}

fn is_terminal(state: TaskState) -> bool {
    !matches!(state, TaskState::Pending | TaskState::Running)
}

/// The event of stored `kind` and `data` columns.
pub fn event_body(kind: &str, data: &Value) -> Result<EventBody> {
    Ok(match kind {
        "stdout" | "stderr" => EventBody::Output(OutputLine {
            stream: if kind == "stdout" {
                OutputStream::Stdout
            } else {
                OutputStream::Stderr
            },
            text: string(data, "line").unwrap_or_default(),
            partial: data
                .get("partial")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        }),
        "agent" => EventBody::Agent(agent_event(data)?),
        "state" => EventBody::State(StateChange {
            state: task_state(
                data.get("state")
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
            )?,
            reason: string(data, "reason"),
            exit_code: data
                .get("exit_code")
                .and_then(Value::as_i64)
                .and_then(|c| i32::try_from(c).ok()),
            error: string(data, "error"),
        }),
        other => bail!("unknown event kind {other:?}"),
    })
}

/// A task's summary as stored.
pub fn summary_json(s: &TaskSummary) -> Value {
    let mut out = match &s.run {
        Some(run) => json!({
            "success": run.success,
            "session_id": run.session_id,
            "final_text": run.final_text,
            "error": run.error,
            "usage": run.usage.as_ref().map(usage_json),
        }),
        None => json!({}),
    };
    if let Some(m) = &s.model_usage {
        out["model_usage"] = json!({
            "requests": m.requests,
            "input_tokens": m.input_tokens,
            "output_tokens": m.output_tokens,
        });
    }
    out
}

/// The summary of a stored task.
pub fn summary_from_json(v: &Value) -> TaskSummary {
    let run = v
        .get("success")
        .and_then(Value::as_bool)
        .map(|success| RunSummary {
            success,
            session_id: string(v, "session_id"),
            final_text: string(v, "final_text"),
            usage: v.get("usage").filter(|u| u.is_object()).map(usage),
            error: string(v, "error"),
        });
    let model_usage = v.get("model_usage").map(|m| ModelUsage {
        requests: number(m, "requests"),
        input_tokens: number(m, "input_tokens"),
        output_tokens: number(m, "output_tokens"),
    });
    TaskSummary { run, model_usage }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(body: EventBody) {
        let (kind, data) = event_columns(&body);
        assert_eq!(event_body(kind, &data).unwrap(), body, "{kind} {data}");
        assert_eq!(
            event_text(&body),
            (kind, data.to_string()),
            "stored as text"
        );
    }

    /// Output lines skip the `Value`, and are stored as the same text.
    #[test]
    fn output_lines_are_stored_as_the_same_text() {
        for (text, partial) in [
            ("plain", false),
            ("quote \" backslash \\ tab \t nul \u{0} é 🦀", true),
            ("", false),
        ] {
            let line = EventBody::Output(OutputLine {
                stream: OutputStream::Stdout,
                text: text.into(),
                partial,
            });
            let (kind, data) = event_columns(&line);
            assert_eq!(event_text(&line), (kind, data.to_string()));
            round_trip(line);
        }
    }

    #[test]
    fn events_keep_their_stored_form_and_read_back() {
        let line = EventBody::Output(OutputLine {
            stream: OutputStream::Stderr,
            text: "oops".into(),
            partial: true,
        });
        assert_eq!(
            event_columns(&line),
            ("stderr", json!({"line": "oops", "partial": true}))
        );
        round_trip(line);
        let done = EventBody::State(StateChange {
            state: TaskState::Failed,
            reason: None,
            exit_code: Some(2),
            error: Some("exit 2".into()),
        });
        assert_eq!(
            event_columns(&done).1,
            json!({"state": "failed", "exit_code": 2, "error": "exit 2"})
        );
        round_trip(done);
        let running = EventBody::State(StateChange {
            state: TaskState::Running,
            reason: None,
            exit_code: None,
            error: None,
        });
        assert_eq!(event_columns(&running).1, json!({"state": "running"}));
        round_trip(running);
        round_trip(EventBody::Agent(AgentEvent::ToolUse(ToolUse {
            id: "t1".into(),
            name: "Write".into(),
            input: "{}".into(),
        })));
        round_trip(EventBody::Agent(AgentEvent::Done(DoneInfo {
            exit_code: Some(0),
            final_text: Some("ok".into()),
            session_id: None,
        })));
        assert!(event_body("nonsense", &json!({})).is_err());
    }

    #[test]
    fn requests_and_summaries_read_back() {
        let mut r = crate::contract::plain_request("hi");
        r.approval_mode = ApprovalMode::Always;
        r.sandbox_mode = SandboxMode::ReadOnly;
        r.max_turns = Some(3);
        assert_eq!(request_json(&r)["sandbox_mode"], "read-only");
        assert_eq!(request_from_json(&request_json(&r)).unwrap(), r);
        let s = TaskSummary {
            run: Some(RunSummary {
                success: true,
                session_id: Some("s".into()),
                final_text: None,
                usage: Some(Usage {
                    input_tokens: 1,
                    output_tokens: 2,
                    cached_tokens: 0,
                    reasoning_tokens: 0,
                }),
                error: None,
            }),
            model_usage: Some(ModelUsage {
                requests: 1,
                input_tokens: 5,
                output_tokens: 6,
            }),
        };
        let stored = summary_json(&s);
        assert_eq!(stored["usage"]["type"], "usage");
        assert_eq!(summary_from_json(&stored), s);
        let only_model = TaskSummary {
            run: None,
            model_usage: s.model_usage,
        };
        assert_eq!(summary_from_json(&summary_json(&only_model)), only_model);
    }
}
