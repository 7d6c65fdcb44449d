//! The clinvk REST API under `/api/v1`, over gantry's tasks, workspaces and sessions.
//!
//! | method and path | what |
//! |---|---|
//! | `POST /api/v1/prompt` | run one prompt; JSON, text, or an NDJSON stream of unified events |
//! | `POST /api/v1/parallel` | run several prompts at once (`max_parallel`, `fail_fast`) |
//! | `POST /api/v1/chain` | run prompts in order, `{{previous}}` standing for the last output |
//! | `POST /api/v1/compare` | one prompt through several backends |
//! | `GET /api/v1/backends` | the backends and whether they can run |
//! | `GET /api/v1/sessions` | sessions (`backend`, `status`, `limit`, `offset`) |
//! | `GET`, `DELETE /api/v1/sessions/{id}` | one session; delete it |
//!
//! Where the document is weak, this is stricter: a run belongs to its request (a client that
//! goes away cancels it), `workdir` must lie in the caller's own workspaces, sessions persist
//! across restarts, and every error is `{"error": code, "message"}`.

mod request;
mod run;

use gantry_guest::bindings::gantry::plugin::backends;
use gantry_guest::bindings::gantry::plugin::sessions::{self, Session, SessionError};
use gantry_guest::bindings::gantry::plugin::tasks;
use gantry_guest::handler::{Guest, IncomingRequest, ResponseOutparam};
use gantry_guest::http::{self, BodyError, Request};
use request::{ApiError, Fields, OutputFormat, PromptSpec};
use run::{Fresh, Outcome, Placement, Running};
use serde_json::{Map, Value, json};
use std::collections::VecDeque;

/// The largest request body this handler reads (the host may set a smaller limit).
const MAX_BODY: usize = 4 << 20;

struct ClinvkApi;

impl Guest for ClinvkApi {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let request = Request::new(request);
        let path = request.path().to_string();
        let method = request.method().to_string();
        let route = path.trim_start_matches("/api/v1").trim_end_matches('/');
        let segments: Vec<&str> = route.trim_start_matches('/').split('/').collect();
        let result = match (method.as_str(), segments.as_slice()) {
            ("POST", ["prompt"]) => return prompt(request, out),
            ("POST", ["parallel"]) => body(request).and_then(parallel),
            ("POST", ["chain"]) => body(request).and_then(chain),
            ("POST", ["compare"]) => body(request).and_then(compare),
            ("GET", ["backends"]) => Ok(backends_json()),
            ("GET", ["sessions"]) => list_sessions(&request),
            ("GET", ["sessions", id]) => sessions::get(id)
                .map_err(session_error)
                .map(|s| session_json(&s)),
            ("DELETE", ["sessions", id]) => match delete_session(id) {
                Ok(()) => return http::respond(out, 204, "application/json", b""),
                Err(e) => Err(e),
            },
            (_, ["prompt" | "parallel" | "chain" | "compare"]) => {
                Err(ApiError::not_allowed("POST"))
            }
            (_, ["backends" | "sessions"]) => Err(ApiError::not_allowed("GET")),
            (_, ["sessions", _]) => Err(ApiError::not_allowed("GET, DELETE")),
            _ => Err(ApiError::new(
                404,
                "not_found",
                format!("no route for {method} {path}"),
            )),
        };
        match result {
            Ok(value) => http::json(out, 200, &value),
            Err(e) => fail(out, &e),
        }
    }
}

gantry_guest::bindings::export_handler!(ClinvkApi);

fn fail(out: ResponseOutparam, e: &ApiError) {
    let body = json!({ "error": e.code, "message": e.message });
    let allow: Vec<_> = e
        .allow
        .map(|methods| ("allow", methods))
        .into_iter()
        .collect();
    http::json_with(out, e.status, &allow, &body);
}

fn body(request: Request) -> Result<Map<String, Value>, ApiError> {
    match request.body(MAX_BODY) {
        Ok(bytes) => request::object(&bytes),
        Err(BodyError::TooLarge) => Err(ApiError::new(
            413,
            "payload_too_large",
            format!("the request body is larger than {MAX_BODY} bytes"),
        )),
        Err(BodyError::Unavailable) => Err(ApiError::bad("the request body could not be read")),
    }
}

fn setting_u64(key: &str) -> Option<u64> {
    gantry_guest::config::get(key).and_then(|v| v.parse().ok())
}

fn default_timeout() -> Option<u64> {
    setting_u64("run_timeout_ms").filter(|&t| t > 0)
}

/// Every backend named is known and, where it is to run (not a dry run), can run here; else
/// the answer for the first that is not.
fn check_backends<'a>(wanted: impl IntoIterator<Item = (&'a str, bool)>) -> Result<(), ApiError> {
    let known = backends::list(false);
    for (name, to_run) in wanted {
        match known.iter().find(|b| b.name == name) {
            None => {
                let names: Vec<_> = known.iter().map(|b| b.name.as_str()).collect();
                return Err(ApiError::new(
                    400,
                    "unknown_backend",
                    format!("no backend named {name:?} (known: {})", names.join(", ")),
                ));
            }
            Some(b) if to_run && !b.available => {
                return Err(ApiError::new(
                    503,
                    "backend_unavailable",
                    format!(
                        "backend {name} cannot run here: {}",
                        b.reason.as_deref().unwrap_or("its binary did not answer")
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

fn backends_json() -> Value {
    let list: Vec<Value> = backends::list(false)
        .into_iter()
        .map(|b| {
            json!({
                "name": b.name,
                "available": b.available,
                "version": b.version,
                "reason": b.reason,
            })
        })
        .collect();
    json!({ "backends": list })
}

// ---- POST /api/v1/prompt ----

fn prompt(request: Request, out: ResponseOutparam) {
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
        Some(id) => Some(sessions::get(id).map_err(session_error)?),
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
            if event["type"] == "done" {
                return Ok(());
            }
            if event["type"] == "init" {
                self.note_backend_session(event["session_id"].as_str());
            }
            let mut line =
                serde_json::to_vec(&run::unified_event(event, &backend, session_id.as_deref()))
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
            c.insert("state".into(), outcome.state.clone().into());
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
            let _ = sessions::delete(&s.id);
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
            "cancelled",
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

// ---- sessions ----

fn session_error(e: SessionError) -> ApiError {
    match e {
        SessionError::NotFound => ApiError::new(404, "not_found", "no such session"),
        SessionError::BadRequest(m) => ApiError::bad(m),
        SessionError::Internal(m) => ApiError::new(500, "internal", m),
    }
}

fn session_data(s: &Session) -> Value {
    serde_json::from_str(&s.data_json).unwrap_or_else(|_| json!({}))
}

/// A title from the first line of the prompt, at most 80 characters.
fn title(prompt: &str) -> String {
    let line = prompt.lines().next().unwrap_or("").trim();
    let mut t: String = line.chars().take(80).collect();
    if line.chars().count() > 80 {
        t.push('…');
    }
    t
}

fn new_session(spec: &PromptSpec, placement: &Placement) -> Result<Session, ApiError> {
    let data = json!({
        "working_dir": placement.working_dir(),
        "model": spec.model,
        "initial_prompt": spec.prompt,
        "title": title(&spec.prompt),
        "turn_count": 0,
        "token_usage": run::Usage::default().json(),
        "tags": ["api"],
        "metadata": spec.metadata,
        "backend_session_id": null,
        "owns_workspace": placement.created,
    });
    sessions::create(&Session {
        id: String::new(),
        backend: spec.backend.clone(),
        status: "active".into(),
        workspace_id: Some(placement.workspace_id.clone()),
        created_at: 0,
        updated_at: 0,
        data_json: data.to_string(),
    })
    .map_err(session_error)
}

/// Change a session's data (read again first: another request may have used it meanwhile);
/// `edit` may also give its new status.
fn edit_session(s: &Session, edit: impl FnOnce(&mut Value) -> Option<&'static str>) {
    let current = sessions::get(&s.id).unwrap_or_else(|_| s.clone());
    let mut data = session_data(&current);
    let status = edit(&mut data).map(str::to_string);
    let _ = sessions::update(&Session {
        status: status.unwrap_or_else(|| current.status.clone()),
        data_json: data.to_string(),
        ..current
    });
}

/// The end of a turn (counted by `begin_turn`): its usage, model, CLI session and status.
fn update_session(s: &Session, spec: &PromptSpec, outcome: &Outcome) {
    edit_session(s, |data| {
        let before = run::Usage {
            input: data["token_usage"]["input_tokens"].as_u64().unwrap_or(0),
            output: data["token_usage"]["output_tokens"].as_u64().unwrap_or(0),
            cached: data["token_usage"]["cached_tokens"].as_u64().unwrap_or(0),
            reasoning: data["token_usage"]["reasoning_tokens"]
                .as_u64()
                .unwrap_or(0),
        };
        data["token_usage"] = before.add(outcome.usage).json();
        if let Some(model) = outcome.model.clone().or_else(|| spec.model.clone()) {
            data["model"] = model.into();
        }
        if let Some(id) = &outcome.backend_session {
            data["backend_session_id"] = id.clone().into();
        }
        // An `error` session may still be resumed: the next good turn makes it active again.
        Some(if outcome.succeeded() {
            "active"
        } else {
            "error"
        })
    });
}

fn session_json(s: &Session) -> Value {
    let data = session_data(s);
    json!({
        "id": s.id,
        "backend": s.backend,
        "created_at": gantry_guest::time::iso8601(s.created_at),
        "last_used": gantry_guest::time::iso8601(s.updated_at),
        "working_dir": data["working_dir"],
        "workspace_id": s.workspace_id,
        "model": data["model"],
        "initial_prompt": data["initial_prompt"].as_str().unwrap_or(""),
        "status": s.status,
        "turn_count": data["turn_count"].as_u64().unwrap_or(0),
        "token_usage": data["token_usage"],
        "tags": data["tags"].as_array().cloned().unwrap_or_default(),
        "title": data["title"].as_str().unwrap_or(""),
        "metadata": data["metadata"],
        "backend_session_id": data["backend_session_id"],
    })
}

fn list_sessions(request: &Request) -> Result<Value, ApiError> {
    let number = |name: &str, default: u32, min: u32, max: u32| -> Result<u32, ApiError> {
        match request.query(name) {
            None => Ok(default),
            Some(v) => v
                .parse::<u32>()
                .ok()
                .filter(|n| (min..=max).contains(n))
                .ok_or_else(|| {
                    ApiError::bad(format!("{name} must be a whole number from {min} to {max}"))
                }),
        }
    };
    let limit = number("limit", 100, 1, 1000)?;
    let offset = number("offset", 0, 0, u32::MAX)?;
    let status = request.query("status").filter(|s| !s.is_empty());
    if let Some(s) = &status
        && !["active", "completed", "error", "paused"].contains(&s.as_str())
    {
        return Err(ApiError::bad(
            "status must be one of active, completed, error, paused",
        ));
    }
    let page = sessions::list(&sessions::Query {
        backend: request.query("backend").filter(|b| !b.is_empty()),
        status,
        limit,
        offset,
    })
    .map_err(session_error)?;
    let list: Vec<Value> = page.sessions.iter().map(session_json).collect();
    Ok(json!({ "sessions": list, "total": page.total, "limit": limit, "offset": offset }))
}

fn delete_session(id: &str) -> Result<(), ApiError> {
    let s = sessions::get(id).map_err(session_error)?;
    let data = session_data(&s);
    // A workspace made for the session goes with it (refused while a run uses it).
    if data["owns_workspace"] == true
        && let Some(ws) = &s.workspace_id
    {
        match gantry_guest::bindings::gantry::plugin::workspaces::delete(ws) {
            Ok(()) => {}
            Err(gantry_guest::bindings::gantry::plugin::workspaces::WorkspaceError::NotFound) => {}
            Err(e) => return Err(run::workspace_error(e)),
        }
    }
    sessions::delete(id).map_err(session_error)
}

// ---- parallel, chain, compare ----

/// Run `jobs`, at most `max_parallel` at once; with `fail_fast`, the first failure cancels the
/// rest. Outcomes in job order. Every job is ephemeral: workspaces made here are removed.
fn run_batch(jobs: Vec<PromptSpec>, max_parallel: usize, fail_fast: bool) -> Vec<Outcome> {
    let timeout = default_timeout();
    let mut outcomes: Vec<Option<Outcome>> = (0..jobs.len()).map(|_| None).collect();
    let mut pending: VecDeque<usize> = (0..jobs.len()).collect();
    let mut running: Vec<(usize, Running)> = Vec::new();
    let mut stopping = false;
    loop {
        while !stopping && running.len() < max_parallel.max(1) {
            let Some(i) = pending.pop_front() else { break };
            let spec = &jobs[i];
            if spec.dry_run {
                outcomes[i] = Some(dry_run_outcome(spec));
                continue;
            }
            let started = run::place(spec, Fresh::ForCall).and_then(|p| {
                let p = p.expect("place creates a workspace when asked");
                run::start(spec, p, None, timeout)
            });
            match started {
                Ok(r) => running.push((i, r)),
                Err(e) => {
                    outcomes[i] = Some(Outcome::not_started(&spec.backend, "failed", e.message));
                    stopping |= fail_fast;
                }
            }
        }
        if running.is_empty() {
            break;
        }
        let ids: Vec<String> = running.iter().map(|(_, r)| r.task_id.clone()).collect();
        let ended = match tasks::wait_any(&ids) {
            Ok(id) => id,
            Err(_) => ids[0].clone(),
        };
        let at = running
            .iter()
            .position(|(_, r)| r.task_id == ended)
            .unwrap_or(0);
        let (i, r) = running.swap_remove(at);
        let outcome = run::follow(&r, |_| Ok(()))
            .unwrap_or_else(|e| Outcome::not_started(&r.backend, "failed", e.message));
        if !outcome.succeeded() && fail_fast && !stopping {
            stopping = true;
            for (_, other) in &running {
                let _ = tasks::cancel(&other.task_id);
            }
        }
        outcomes[i] = Some(outcome);
    }
    outcomes
        .into_iter()
        .zip(jobs)
        .map(|(o, job)| {
            o.unwrap_or_else(|| {
                Outcome::not_started(
                    &job.backend,
                    "cancelled",
                    "not started: an earlier task failed (fail_fast)".into(),
                )
            })
        })
        .collect()
}

fn dry_run_outcome(spec: &PromptSpec) -> Outcome {
    match backends::preview(&spec.backend, &run::prompt_request(spec, None)) {
        Ok(argv) => Outcome {
            output: request::display_command(&argv),
            exit_code: 0,
            state: "done".into(),
            error: None,
            ..Outcome::not_started(&spec.backend, "done", String::new())
        },
        Err(m) => Outcome::not_started(&spec.backend, "failed", m),
    }
}

fn prompt_list(map: &Map<String, Value>, key: &str, max: u64) -> Result<Vec<PromptSpec>, ApiError> {
    let items = Fields::new(map, "")
        .array(key)?
        .ok_or_else(|| ApiError::bad(format!("{key} is required")))?;
    if items.is_empty() || items.len() as u64 > max {
        return Err(ApiError::bad(format!("{key} must hold 1 to {max} items")));
    }
    let specs = items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let at = format!("{key}[{i}].");
            let obj = item
                .as_object()
                .ok_or_else(|| ApiError::bad(format!("{key}[{i}] must be an object")))?;
            request::prompt_spec(obj, &at)
        })
        .collect::<Result<Vec<_>, _>>()?;
    check_backends(specs.iter().map(|s| (s.backend.as_str(), !s.dry_run)))?;
    for (i, s) in specs.iter().enumerate() {
        if s.session_id.is_some() {
            return Err(ApiError::bad(format!(
                "{key}[{i}].session_id: these runs are ephemeral and resume no session"
            )));
        }
    }
    Ok(specs)
}

fn parallel(map: Map<String, Value>) -> Result<Value, ApiError> {
    let max_tasks = setting_u64("max_parallel_tasks").unwrap_or(100);
    let specs = prompt_list(&map, "tasks", max_tasks)?;
    let f = Fields::new(&map, "");
    let max_parallel = match f.count("max_parallel", 1000)? {
        Some(0) => return Err(ApiError::bad("max_parallel must be at least 1")),
        Some(n) => n as usize,
        None => specs.len(),
    };
    let fail_fast = f.boolean("fail_fast")?;
    let started = run::now_ms();
    let outcomes = run_batch(specs, max_parallel, fail_fast);
    let completed = outcomes.iter().filter(|o| o.succeeded()).count();
    let cancelled = outcomes.iter().filter(|o| o.state == "cancelled").count();
    Ok(json!({
        "total_tasks": outcomes.len(),
        "completed": completed,
        "failed": outcomes.len() - completed - cancelled,
        "cancelled": cancelled,
        "total_duration_ms": run::now_ms().saturating_sub(started),
        "results": outcomes.iter().map(Outcome::result_json).collect::<Vec<_>>(),
    }))
}

fn chain(map: Map<String, Value>) -> Result<Value, ApiError> {
    let max_steps = setting_u64("max_chain_steps").unwrap_or(50);
    let specs = prompt_list(&map, "steps", max_steps)?;
    let f = Fields::new(&map, "");
    let stop_on_failure = f.boolean("stop_on_failure")?;
    let pass_working_dir = f.boolean("pass_working_dir")?;
    let timeout = default_timeout();
    let started = run::now_ms();
    let mut previous = String::new();
    let mut shared: Option<Placement> = None;
    let mut results = Vec::new();
    let mut completed = 0;
    let mut failed_step = 0;
    for (i, mut spec) in specs.into_iter().enumerate() {
        spec.prompt = request::substitute_previous(&spec.prompt, &previous);
        let own_place = spec.workspace_id.is_some() || spec.workdir.is_some();
        let placement = match (&shared, own_place) {
            (Some(p), false) => Ok(Placement {
                created: false,
                ..p.clone()
            }),
            _ => run::place(&spec, Fresh::ForCall)
                .map(|p| p.expect("place creates a workspace when asked")),
        };
        let outcome = placement.and_then(|p| {
            if pass_working_dir && shared.is_none() {
                shared = Some(p.clone());
            }
            let r = run::start(&spec, p, None, timeout)?;
            run::follow(&r, |_| Ok(()))
        });
        let outcome =
            outcome.unwrap_or_else(|e| Outcome::not_started(&spec.backend, "failed", e.message));
        let mut v = outcome.result_json();
        v["step"] = (i + 1).into();
        v["name"] = spec
            .name
            .clone()
            .unwrap_or_else(|| format!("step-{}", i + 1))
            .into();
        results.push(v);
        previous = outcome.output.clone();
        if outcome.succeeded() {
            completed += 1;
        } else {
            if failed_step == 0 {
                failed_step = i + 1;
            }
            if stop_on_failure {
                break;
            }
        }
    }
    Ok(json!({
        "total_steps": results.len(),
        "completed_steps": completed,
        "failed_step": failed_step,
        "total_duration_ms": run::now_ms().saturating_sub(started),
        "results": results,
    }))
}

fn compare(map: Map<String, Value>) -> Result<Value, ApiError> {
    let f = Fields::new(&map, "");
    let prompt = f.required("prompt")?;
    let names = f.strings("backends")?;
    if names.is_empty() || names.len() > 10 {
        return Err(ApiError::bad("backends must hold 1 to 10 backend names"));
    }
    for (i, n) in names.iter().enumerate() {
        if names[..i].contains(n) {
            return Err(ApiError::bad(format!("backend {n} is named twice")));
        }
    }
    let sequential = f.boolean("sequential")?;
    let mut jobs = Vec::new();
    for name in &names {
        let mut one = map.clone();
        one.insert("backend".into(), name.clone().into());
        one.insert("prompt".into(), prompt.clone().into());
        one.remove("session_id");
        jobs.push(request::prompt_spec(&one, "")?);
    }
    check_backends(jobs.iter().map(|j| (j.backend.as_str(), !j.dry_run)))?;
    let started = run::now_ms();
    let parallel = if sequential { 1 } else { jobs.len() };
    let outcomes = run_batch(jobs, parallel, false);
    let results: Vec<Value> = outcomes
        .iter()
        .map(|o| {
            let mut v = o.result_json();
            if let Value::Object(m) = &mut v {
                m.remove("cancelled");
            }
            v
        })
        .collect();
    Ok(json!({
        "prompt": prompt,
        "backends": names,
        "total_duration_ms": run::now_ms().saturating_sub(started),
        "results": results,
    }))
}
