//! Sessions: `GET /api/v1/sessions[/{id}]`, `DELETE /api/v1/sessions/{id}`, and what a prompt
//! run keeps in its session (the session's own fields live in its `data-json`).

use crate::request::{ApiError, PromptSpec};
use crate::run::{self, Outcome, Placement};
use gantry_guest::bindings::gantry::plugin::sessions::{self, Session, SessionError};
use gantry_guest::bindings::gantry::plugin::workspaces::{self, WorkspaceError};
use gantry_guest::http::Request;
use gantry_guest::types::SessionStatus;
use serde_json::{Value, json};

pub fn session_error(e: SessionError) -> ApiError {
    match e {
        SessionError::NotFound => ApiError::new(404, "not_found", "no such session"),
        SessionError::BadRequest(m) => ApiError::bad(m),
        SessionError::Internal(m) => ApiError::new(500, "internal", m),
    }
}

pub fn session_data(s: &Session) -> Value {
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

pub fn new_session(spec: &PromptSpec, placement: &Placement) -> Result<Session, ApiError> {
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
        status: SessionStatus::Active,
        workspace_id: Some(placement.workspace_id.clone()),
        created_at: 0,
        updated_at: 0,
        data_json: data.to_string(),
    })
    .map_err(session_error)
}

/// Change a session's data (read again first: another request may have used it meanwhile);
/// `edit` may also give its new status.
pub fn edit_session(s: &Session, edit: impl FnOnce(&mut Value) -> Option<SessionStatus>) {
    let current = sessions::get(&s.id).unwrap_or_else(|_| s.clone());
    let mut data = session_data(&current);
    let status = edit(&mut data);
    let _ = sessions::update(&Session {
        status: status.unwrap_or(current.status),
        data_json: data.to_string(),
        ..current
    });
}

/// The end of a turn (counted by `begin_turn`): its usage, model, CLI session and status.
pub fn update_session(s: &Session, spec: &PromptSpec, outcome: &Outcome) {
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
            SessionStatus::Active
        } else {
            SessionStatus::Error
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
        "status": s.status.as_str(),
        "turn_count": data["turn_count"].as_u64().unwrap_or(0),
        "token_usage": data["token_usage"],
        "tags": data["tags"].as_array().cloned().unwrap_or_default(),
        "title": data["title"].as_str().unwrap_or(""),
        "metadata": data["metadata"],
        "backend_session_id": data["backend_session_id"],
    })
}

/// `GET /api/v1/sessions/{id}`.
pub fn get(id: &str) -> Result<Value, ApiError> {
    sessions::get(id)
        .map_err(session_error)
        .map(|s| session_json(&s))
}

/// `GET /api/v1/sessions`: newest first, filtered by `backend` and `status`.
pub fn list(request: &Request) -> Result<Value, ApiError> {
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
    let status = match request.query("status").filter(|s| !s.is_empty()) {
        None => None,
        Some(name) => Some(SessionStatus::parse(&name).ok_or_else(|| {
            let names: Vec<_> = SessionStatus::ALL.iter().map(|s| s.as_str()).collect();
            ApiError::bad(format!("status must be one of {}", names.join(", ")))
        })?),
    };
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

/// `DELETE /api/v1/sessions/{id}`, with the workspace made for it.
pub fn delete(id: &str) -> Result<(), ApiError> {
    let s = sessions::get(id).map_err(session_error)?;
    let data = session_data(&s);
    // A workspace made for the session goes with it (refused while a run uses it).
    if data["owns_workspace"] == true
        && let Some(ws) = &s.workspace_id
    {
        match workspaces::delete(ws) {
            Ok(()) | Err(WorkspaceError::NotFound) => {}
            Err(e) => return Err(run::workspace_error(e)),
        }
    }
    sessions::delete(id).map_err(session_error)
}
