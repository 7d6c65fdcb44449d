//! `POST /api/v1/prompt`: one prompt, answered as JSON, text, or an NDJSON stream of unified
//! events; its session (unless ephemeral) counts the turn and keeps what the run changed.

use crate::request::{self, ApiError, OutputFormat, PromptSpec};
use crate::run::{self, Fresh, Outcome, Placement, Running};
use crate::sessions::{edit_session, new_session, session_data, session_error, update_session};
use crate::{body, check_backends, default_timeout, fail};
use gantry_guest::bindings::gantry::plugin::backends;
use gantry_guest::bindings::gantry::plugin::sessions::{self as host_sessions, Session};
use gantry_guest::handler::ResponseOutparam;
use gantry_guest::http::{self, Request};
use gantry_guest::json;
use gantry_guest::types::{AgentEvent, TaskState};
use serde_json::{Value, json};

/// `POST /api/v1/prompt`: a dry run, or a run answered in the format asked for.
pub fn prompt(request: Request, out: ResponseOutparam) {
    match prepare_prompt(request) {
        Err(e) => fail(out, &e),
        Ok(Prepared::DryRun(value)) => http::json(out, 200, &value),
        Ok(Prepared::Run(prompt)) => prompt.run(out),
    }
}

enum Prepared {
    DryRun(Value),
    Run(Box<PromptRun>),
}

/// A prompt ready to start: its request, where it runs, and its session.
struct PromptRun {
    spec: PromptSpec,
    placement: Placement,
    session: Option<Session>,
    /// The session was made by this request (removed if the run cannot start).
    new_session: bool,
    resume: Option<String>,
}

fn prepare_prompt(request: Request) -> Result<Prepared, ApiError> {
    let map = body(request)?;
    let spec = request::prompt_spec(&map, "")?;
    if spec.ephemeral && spec.session_id.is_some() {
        return Err(ApiError::bad(
            "an ephemeral prompt keeps no session: drop session_id or ephemeral",
        ));
    }
    check_backends([(spec.backend.as_str(), !spec.dry_run)])?;
    // A resumed session runs where it ran before, with the CLI's own session id.
    let session = match &spec.session_id {
        Some(id) => Some(host_sessions::get(id).map_err(session_error)?),
        None => None,
    };
    let resume = match &session {
        Some(s) if s.backend != spec.backend => {
            return Err(ApiError::bad(format!(
                "session {} belongs to backend {}, not {}",
                s.id, s.backend, spec.backend
            )));
        }
        Some(s) => session_data(s)["backend_session_id"]
            .as_str()
            .map(str::to_string),
        None => None,
    };
    let fixed = session.as_ref().and_then(|s| s.workspace_id.clone());
    if spec.dry_run {
        let placement = match fixed {
            Some(id) => Some(Placement {
                workspace_id: id,
                subdir: None,
                created: false,
            }),
            None => run::place(&spec, Fresh::No)?,
        };
        let argv = backends::preview(&spec.backend, &run::prompt_request(&spec, resume))
            .map_err(|m| ApiError::new(400, "refused", m))?;
        let mut value = json!({
            "backend": spec.backend,
            "dry_run": true,
            "command": argv,
            "exit_code": 0,
            "duration_ms": 0,
            "output": request::display_command(&argv),
            "token_usage": run::Usage::default().json(),
        });
        if let Some(p) = placement {
            value["workspace_id"] = p.workspace_id.into();
        }
        return Ok(Prepared::DryRun(value));
    }
    let placement = match fixed {
        Some(id) => Placement {
            workspace_id: id,
            subdir: None,
            created: false,
        },
        None => {
            let fresh = if spec.ephemeral {
                Fresh::ForCall
            } else {
                Fresh::Kept
            };
            run::place(&spec, fresh)?.expect("place creates a workspace when asked")
        }
    };
    let (session, new_session) = match session {
        Some(s) => (Some(s), false),
        None if spec.ephemeral => (None, false),
        None => match new_session(&spec, &placement) {
            Ok(s) => (Some(s), true),
            Err(e) => {
                placement.discard();
                return Err(e);
            }
        },
    };
    Ok(Prepared::Run(Box::new(PromptRun {
        spec,
        placement,
        session,
        new_session,
        resume,
    })))
}

impl PromptRun {
    fn run(self, out: ResponseOutparam) {
        let running = match run::start(
            &self.spec,
            self.placement.clone(),
            self.resume.clone(),
            default_timeout(),
        ) {
            Ok(r) => r,
            Err(e) => {
                self.undo();
                return fail(out, &e);
            }
        };
        // The turn counts from here: a client that leaves mid-run ends the call before any
        // later write, and the session must still show the turn it asked for.
        self.begin_turn();
        let session_id = self.session.as_ref().map(|s| s.id.clone());
        if self.spec.output_format == OutputFormat::StreamJson {
            return self.stream(out, running, session_id);
        }
        let outcome = run::follow(&running, |_| Ok(()));
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => return fail(out, &e),
        };
        self.record(&outcome);
        if self.spec.output_format == OutputFormat::Text {
            let mut text = outcome.output.clone();
            if !text.ends_with('\n') {
                text.push('\n');
            }
            // Text has no field for the exit code: a header carries it.
            let code = outcome.exit_code.to_string();
            let headers = [
                ("content-type", "text/plain; charset=utf-8"),
                ("x-exit-code", code.as_str()),
            ];
            return http::respond_with(out, 200, &headers, text.as_bytes());
        }
        http::json(
            out,
            200,
            &prompt_result(
                &outcome,
                session_id.as_deref(),
                &self.placement,
                self.spec.ephemeral,
            ),
        );
    }

    /// NDJSON of unified events as the agent produces them, then one `done` with the result.
    fn stream(self, out: ResponseOutparam, running: Running, session_id: Option<String>) {
        let mut writer = http::start(out, 200, &[("content-type", "application/x-ndjson")]);
        let backend = self.spec.backend.clone();
        let outcome = run::follow(&running, |event| {
            // The final `done` below carries the whole result.
            match event {
                AgentEvent::Done(_) => return Ok(()),
                AgentEvent::Init(init) => self.note_backend_session(init.session_id.as_deref()),
                _ => {}
            }
            let event = json::agent_event(event);
            let mut line =
                serde_json::to_vec(&run::unified_event(&event, &backend, session_id.as_deref()))
                    .expect("JSON values serialize");
            line.push(b'\n');
            writer.write_all(&line).map_err(|_| run::Gone)
        });
        let outcome = match outcome {
            Ok(o) => o,
            // The client is gone (the run is cancelled), or the log failed: nothing to add.
            Err(e) => {
                if e.code != "client_closed" {
                    let line = json!({ "type": "error", "backend": backend, "content": { "message": e.message } });
                    let _ = writer.write_all(format!("{line}\n").as_bytes());
                }
                self.record_gone();
                return;
            }
        };
        self.record(&outcome);
        let mut content = prompt_result(
            &outcome,
            session_id.as_deref(),
            &self.placement,
            self.spec.ephemeral,
        );
        if let Value::Object(c) = &mut content {
            c.remove("backend");
            c.remove("session_id");
            c.insert("state".into(), outcome.state.as_str().into());
        }
        let mut done = json!({ "type": "done", "backend": backend, "content": content });
        if let Some(id) = &session_id {
            done["session_id"] = id.clone().into();
        }
        if writer.write_all(format!("{done}\n").as_bytes()).is_ok() {
            let _ = writer.finish();
        }
    }

    /// The run could not start: leave nothing behind (an ephemeral workspace goes with the
    /// call).
    fn undo(&self) {
        if self.new_session
            && let Some(s) = &self.session
        {
            let _ = host_sessions::delete(&s.id);
            self.placement.discard();
        }
    }

    /// Count the turn in the session as its run starts (an ephemeral run keeps nothing).
    fn begin_turn(&self) {
        if let Some(s) = &self.session {
            edit_session(s, |data| {
                data["turn_count"] = (data["turn_count"].as_u64().unwrap_or(0) + 1).into();
                if let Some(model) = &self.spec.model {
                    data["model"] = model.clone().into();
                }
                if let Some(meta) = &self.spec.metadata {
                    data["metadata"] = Value::Object(meta.clone());
                }
                None
            });
        }
    }

    /// The CLI named its own session mid-stream: keep it now, so the session can be resumed
    /// even if the client leaves before the end.
    fn note_backend_session(&self, id: Option<&str>) {
        let (Some(s), Some(id)) = (&self.session, id) else {
            return;
        };
        if self.resume.as_deref() == Some(id) {
            return; // a resumed session already has it
        }
        edit_session(s, |data| {
            data["backend_session_id"] = id.into();
            None
        });
    }

    /// Keep what the run changed in its session (an ephemeral run keeps nothing).
    fn record(&self, outcome: &Outcome) {
        if let Some(s) = &self.session {
            update_session(s, &self.spec, outcome);
        }
    }

    /// The client went away mid-stream: the run is cancelled; a new session shows it.
    fn record_gone(&self) {
        let outcome = Outcome::not_started(
            &self.spec.backend,
            TaskState::Cancelled,
            "the client went away".into(),
        );
        self.record(&outcome);
    }
}

fn prompt_result(
    outcome: &Outcome,
    session_id: Option<&str>,
    placement: &Placement,
    ephemeral: bool,
) -> Value {
    let mut v = json!({
        "backend": outcome.backend,
        "exit_code": outcome.exit_code,
        "duration_ms": outcome.duration_ms,
        "output": outcome.output,
        "token_usage": outcome.usage.json(),
        "model": outcome.model,
        "error": outcome.error,
    });
    if let Some(id) = session_id {
        v["session_id"] = id.into();
    }
    if !ephemeral || !placement.created {
        v["workspace_id"] = placement.workspace_id.clone().into();
    }
    v
}
