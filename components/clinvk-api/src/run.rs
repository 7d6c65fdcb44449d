//! Running one prompt as a gantry task: where it runs, starting it, following its log to the
//! end, and summing up what the agent said.

use crate::request::{ApiError, PromptSpec};
use gantry_guest::bindings::gantry::plugin::tasks::{self, StartRequest, TaskError};
use gantry_guest::bindings::gantry::plugin::workspaces::{self, WorkspaceError};
use gantry_guest::bindings::wasi::clocks::monotonic_clock;
use gantry_guest::types::{AgentEvent, EventBody, PromptRequest, TaskState};
use serde_json::{Value, json};

/// Where a run happens.
#[derive(Debug, Clone)]
pub struct Placement {
    pub workspace_id: String,
    pub subdir: Option<String>,
    /// Made for this request: the host removes it when the call ends (ephemeral), or it
    /// goes with its session.
    pub created: bool,
}

/// Whether `place` may make a workspace, and for how long it lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fresh {
    /// Never: a dry run only looks.
    No,
    /// Kept with a session.
    Kept,
    /// Removed by the host when this call ends, after its runs (also when the client goes
    /// away mid-run).
    ForCall,
}

impl Placement {
    /// Remove a kept workspace made for a request that could not start its run.
    pub fn discard(&self) {
        if self.created {
            let _ = workspaces::delete(&self.workspace_id);
        }
    }

    /// The directory the run works in, for people: `/workspaces/<id>[/subdir]` for a
    /// workspace of gantry's own, the attached directory's path for one the operator attached.
    pub fn working_dir(&self) -> Option<String> {
        let root = workspaces::display_path(&self.workspace_id).ok()?;
        Some(match &self.subdir {
            Some(sub) if !sub.is_empty() => format!("{root}/{sub}"),
            _ => root,
        })
    }
}

pub fn workspace_error(e: WorkspaceError) -> ApiError {
    match e {
        WorkspaceError::NotFound => ApiError::new(404, "not_found", "no such workspace"),
        WorkspaceError::BadPath(m) => ApiError::new(403, "workdir_not_allowed", m),
        WorkspaceError::Busy => {
            ApiError::new(409, "workspace_busy", "a task is running in this workspace")
        }
        WorkspaceError::BadName(m) => ApiError::bad(m),
        WorkspaceError::TooLarge(n) => ApiError::bad(format!("larger than {n} bytes")),
        WorkspaceError::Internal(m) => ApiError::new(500, "internal", m),
    }
}

pub fn task_error(e: TaskError) -> ApiError {
    match e {
        TaskError::NotFound => ApiError::new(404, "not_found", "no such run"),
        TaskError::BadRequest(m) => ApiError::bad(m),
        TaskError::Refused(m) => ApiError::new(400, "refused", m),
        TaskError::Busy(_) => ApiError::new(
            503,
            "over_capacity",
            "too many open streams or busy instances for this tenant; retry shortly",
        ),
        TaskError::Internal(m) => ApiError::new(500, "internal", m),
    }
}

/// Where `spec` runs: the workspace it names, the one holding its `workdir`, or (unless
/// `fresh` is `No`) a fresh one.
pub fn place(spec: &PromptSpec, fresh: Fresh) -> Result<Option<Placement>, ApiError> {
    if let Some(id) = &spec.workspace_id {
        let ws = workspaces::get(id).map_err(|e| match e {
            WorkspaceError::NotFound => {
                ApiError::new(404, "not_found", format!("no workspace {id}"))
            }
            other => workspace_error(other),
        })?;
        return Ok(Some(Placement {
            workspace_id: ws.id,
            subdir: None,
            created: false,
        }));
    }
    if let Some(dir) = &spec.workdir {
        let location = workspaces::locate(dir).map_err(workspace_error)?;
        return Ok(Some(Placement {
            workspace_id: location.workspace_id,
            subdir: Some(location.subdir).filter(|s| !s.is_empty()),
            created: false,
        }));
    }
    let ws = match fresh {
        Fresh::No => return Ok(None),
        Fresh::Kept => workspaces::create("clinvk session"),
        Fresh::ForCall => workspaces::create_for_call("clinvk run"),
    }
    .map_err(workspace_error)?;
    Ok(Some(Placement {
        workspace_id: ws.id,
        subdir: None,
        created: true,
    }))
}

/// The backend request for `spec`.
pub fn prompt_request(spec: &PromptSpec, resume: Option<String>) -> PromptRequest {
    PromptRequest {
        prompt: spec.prompt.clone(),
        args: vec![],
        model: spec.model.clone(),
        system_prompt: spec.system_prompt.clone(),
        max_turns: spec.max_turns,
        approval_mode: spec.approval,
        sandbox_mode: spec.sandbox,
        extra_flags: spec.extra.clone(),
        resume_session: resume,
    }
}

/// Milliseconds on the monotonic clock.
pub fn now_ms() -> u64 {
    monotonic_clock::now() / 1_000_000
}

/// A run that has started.
#[derive(Debug)]
pub struct Running {
    pub task_id: String,
    pub backend: String,
    pub started_ms: u64,
}

/// Start `spec` at `placement`; the run ends with this call if the call ends first.
pub fn start(
    spec: &PromptSpec,
    placement: Placement,
    resume: Option<String>,
    default_timeout_ms: Option<u64>,
) -> Result<Running, ApiError> {
    let started_ms = now_ms();
    let task = tasks::start(&StartRequest {
        workspace_id: placement.workspace_id.clone(),
        backend: spec.backend.clone(),
        setup: vec![],
        request: prompt_request(spec, resume),
        timeout_ms: spec.timeout_ms.or(default_timeout_ms),
        subdir: placement.subdir,
        bound_to_call: true,
    })
    .map_err(task_error)?;
    Ok(Running {
        task_id: task.id,
        backend: spec.backend.clone(),
        started_ms,
    })
}

/// Token counts, as the document names them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input: u64,
    pub output: u64,
    pub cached: u64,
    pub reasoning: u64,
}

impl Usage {
    fn of(u: &gantry_guest::types::Usage) -> Usage {
        Usage {
            input: u.input_tokens,
            output: u.output_tokens,
            cached: u.cached_tokens,
            reasoning: u.reasoning_tokens,
        }
    }

    pub fn add(self, o: Usage) -> Usage {
        Usage {
            input: self.input + o.input,
            output: self.output + o.output,
            cached: self.cached + o.cached,
            reasoning: self.reasoning + o.reasoning,
        }
    }

    pub fn json(&self) -> Value {
        json!({
            "input_tokens": self.input,
            "output_tokens": self.output,
            "cached_tokens": self.cached,
            "reasoning_tokens": self.reasoning,
        })
    }
}

/// How a run ended, and what the agent said.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub backend: String,
    /// The task's final state.
    pub state: TaskState,
    /// -1 when the process never exited on its own (not started, killed).
    pub exit_code: i32,
    pub duration_ms: u64,
    pub output: String,
    pub usage: Usage,
    pub model: Option<String>,
    pub error: Option<String>,
    /// The CLI's own session id, for resuming.
    pub backend_session: Option<String>,
}

impl Outcome {
    pub fn succeeded(&self) -> bool {
        self.state == TaskState::Done
    }

    /// An outcome for a run that never started.
    pub fn not_started(backend: &str, state: TaskState, error: String) -> Outcome {
        Outcome {
            backend: backend.to_string(),
            state,
            exit_code: -1,
            duration_ms: 0,
            output: String::new(),
            usage: Usage::default(),
            model: None,
            error: Some(error),
            backend_session: None,
        }
    }

    /// The result object of the batch endpoints.
    pub fn result_json(&self) -> Value {
        let mut v = json!({
            "backend": self.backend,
            "exit_code": self.exit_code,
            "duration_ms": self.duration_ms,
            "output": self.output,
            "token_usage": self.usage.json(),
            "model": self.model,
            "error": self.error,
        });
        if self.state == TaskState::Cancelled {
            v["cancelled"] = true.into();
        }
        v
    }
}

/// What the agent events of a run add up to.
#[derive(Debug, Default)]
struct Tally {
    messages: Vec<String>,
    errors: Vec<String>,
    usage: Option<Usage>,
    model: Option<String>,
    backend_session: Option<String>,
}

impl Tally {
    fn see(&mut self, event: &AgentEvent) {
        match event {
            AgentEvent::Init(init) => {
                self.model = init.model.clone().or(self.model.take());
                self.backend_session = init.session_id.clone().or(self.backend_session.take());
            }
            AgentEvent::Message(text) => self.messages.push(text.clone()),
            AgentEvent::Usage(u) => self.usage = Some(Usage::of(u)),
            AgentEvent::Error(message) => self.errors.push(message.clone()),
            AgentEvent::Done(done) => {
                self.backend_session = done.session_id.clone().or(self.backend_session.take());
            }
            _ => {}
        }
    }
}

/// The client of a stream went away.
#[derive(Debug)]
pub struct Gone;

/// Follow a run's log to its end. `on_event` sees each agent event as it is logged; when it
/// says the client is gone, the run is cancelled.
pub fn follow(
    run: &Running,
    mut on_event: impl FnMut(&AgentEvent) -> Result<(), Gone>,
) -> Result<Outcome, ApiError> {
    let mut tally = Tally::default();
    {
        let sub = tasks::subscribe(&run.task_id, 1).map_err(task_error)?;
        loop {
            let events = sub.next(256).map_err(task_error)?;
            if events.is_empty() {
                break;
            }
            for event in &events {
                let EventBody::Agent(event) = &event.body else {
                    continue;
                };
                tally.see(event);
                if on_event(event).is_err() {
                    let _ = tasks::cancel(&run.task_id);
                    return Err(ApiError::new(499, "client_closed", "the client went away"));
                }
            }
        }
    }
    let task = tasks::get(&run.task_id).map_err(task_error)?;
    // The adapter's summary of the run, when it has one, over what the events said.
    let summary = task.summary.and_then(|s| s.run);
    let summary = summary.as_ref();
    let output = summary
        .and_then(|s| s.final_text.clone())
        .unwrap_or_else(|| tally.messages.join("\n"));
    let usage = match summary.and_then(|s| s.usage.as_ref()) {
        Some(u) => Usage::of(u),
        None => tally.usage.unwrap_or_default(),
    };
    let succeeded = task.state == TaskState::Done;
    let error = if succeeded {
        None
    } else {
        task.error
            .or_else(|| (!tally.errors.is_empty()).then(|| tally.errors.join("; ")))
            .or_else(|| Some(format!("the run ended {}", task.state.as_str())))
    };
    Ok(Outcome {
        backend: run.backend.clone(),
        state: task.state,
        exit_code: task.exit_code.unwrap_or(-1),
        duration_ms: now_ms().saturating_sub(run.started_ms),
        output,
        usage,
        model: tally.model,
        error,
        backend_session: summary
            .and_then(|s| s.session_id.clone())
            .or(tally.backend_session),
    })
}

/// One NDJSON line of the unified stream: `{"type", "backend", "session_id"?, "content"}`.
pub fn unified_event(event: &Value, backend: &str, session_id: Option<&str>) -> Value {
    let kind = event["type"].as_str().unwrap_or("raw").to_string();
    let mut content = event.as_object().cloned().unwrap_or_default();
    content.remove("type");
    if kind == "init" {
        // The CLI's own id is not the session id a client resumes with.
        if let Some(id) = content.remove("session_id") {
            content.insert("backend_session_id".into(), id);
        }
    }
    let mut line = json!({ "type": kind, "backend": backend, "content": content });
    if let Some(id) = session_id {
        line["session_id"] = id.into();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_keeps_model_session_messages_and_usage() {
        use gantry_guest::types::{DoneInfo, InitInfo};
        let mut t = Tally::default();
        t.see(&AgentEvent::Init(InitInfo {
            session_id: Some("s1".into()),
            model: Some("m".into()),
        }));
        t.see(&AgentEvent::Message("a".into()));
        t.see(&AgentEvent::Usage(gantry_guest::testing::usage(3, 4, 0, 1)));
        t.see(&AgentEvent::Message("b".into()));
        t.see(&AgentEvent::Done(DoneInfo {
            exit_code: Some(0),
            final_text: None,
            session_id: None,
        }));
        assert_eq!(t.messages, ["a", "b"]);
        assert_eq!(t.model.as_deref(), Some("m"));
        assert_eq!(t.backend_session.as_deref(), Some("s1"));
        assert_eq!(t.usage.unwrap().output, 4);
    }

    #[test]
    fn unified_events_name_backend_and_session() {
        let line = unified_event(
            &json!({"type": "init", "session_id": "cli-1", "model": "m"}),
            "claude",
            Some("g-1"),
        );
        assert_eq!(
            line,
            json!({"type": "init", "backend": "claude", "session_id": "g-1",
                   "content": {"model": "m", "backend_session_id": "cli-1"}})
        );
        let line = unified_event(&json!({"type": "message", "text": "hi"}), "codex", None);
        assert_eq!(
            line,
            json!({"type": "message", "backend": "codex", "content": {"text": "hi"}})
        );
    }
}
