//! Working sessions, `/api/sessions`: a user's session on a project with its settings, its
//! history (settings changed, tasks executed, commands run, restores) and restores to an
//! earlier point. The host keeps them and applies the caller's tenant, user and permissions
//! (`gantry:plugin/work-sessions`); this component checks shapes and words the answers.
//!
//! `PUT` merges: the document's update sends only the settings it changes (`theme`,
//! `auto_save` of a session made with `notifications` too), so the settings given replace
//! those keys and the others stay; a key set to `null` is removed (JSON merge patch, RFC 7396).
//!
//! Times are ISO 8601 with milliseconds, so that a history entry's `timestamp` can be handed
//! back as a `restore_point` and name exactly that moment.

use crate::board::task_status_name;
use crate::input::{only, opt_bool, opt_object, opt_string, parse_instant, query_int};
use crate::{Answer, ApiError, object, object_or_empty, string};
use gantry_guest::http::Request;
use gantry_guest::time::iso8601;
use gantry_guest::work_sessions::{
    self, HistoryItem, RestoreRequest, RestoreSummary, SessionEvent, TaskRestore, WorkSession,
    WorkSessionError, WorkSessionQuery, WorkSessionStatus,
};
use serde_json::{Map, Value, json};

/// The document's page size for lists, and the largest.
const DEFAULT_PAGE_SIZE: i64 = 50;
const MAX_PAGE_SIZE: i64 = 100;

/// The API's answer for a refused session call.
pub fn error(e: WorkSessionError) -> ApiError {
    match e {
        WorkSessionError::NotFound => {
            ApiError::new(404, "RESOURCE_NOT_FOUND", "Session not found.")
        }
        WorkSessionError::ProjectNotFound => {
            ApiError::new(404, "PROJECT_NOT_FOUND", "Project not found.")
        }
        WorkSessionError::Expired => ApiError::new(
            409,
            "SESSION_EXPIRED",
            "The session expired; it can be read and deleted, not changed. Start a new one.",
        ),
        WorkSessionError::Forbidden(m) => ApiError::new(403, "AUTH_INSUFFICIENT_PERMISSIONS", m),
        WorkSessionError::Invalid(issue) => ApiError::invalid(&issue.field, issue.issue),
        WorkSessionError::Internal(m) => ApiError::new(500, "DATABASE_ERROR", m),
    }
}

fn status_name(s: WorkSessionStatus) -> &'static str {
    match s {
        WorkSessionStatus::Active => "active",
        WorkSessionStatus::Expired => "expired",
    }
}

fn settings_value(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| json!({}))
}

/// A session in the document's shape (details: with its settings).
fn session_json(s: &WorkSession) -> Value {
    json!({
        "session_id": s.id,
        "project_id": s.project_id,
        "project_name": s.project_name,
        "user_id": s.user_id,
        "status": status_name(s.status),
        "created_at": iso8601(s.created_at),
        "last_accessed": iso8601(s.last_accessed),
        "expires_at": iso8601(s.expires_at),
        "settings": settings_value(&s.settings_json),
    })
}

fn task_outcome_json(t: &work_sessions::TaskOutcome) -> Value {
    let mut v = json!({ "task_id": t.task_id, "title": t.title });
    match &t.outcome {
        TaskRestore::Restored(change) => {
            v["outcome"] = json!("restored");
            v["from_status"] = json!(task_status_name(change.from));
            v["status"] = json!(task_status_name(change.to));
        }
        TaskRestore::Unchanged(s) => {
            v["outcome"] = json!("unchanged");
            v["status"] = json!(task_status_name(*s));
        }
        TaskRestore::Skipped(reason) => {
            v["outcome"] = json!("skipped");
            v["reason"] = json!(reason);
        }
    }
    v
}

fn summary_json(s: &RestoreSummary) -> Value {
    json!({
        "restore_point": iso8601(s.restore_point),
        "include_tasks": s.include_tasks,
        "include_settings": s.include_settings,
        "settings": s.settings_json.as_deref().map(settings_value),
        "tasks": s.tasks.iter().map(task_outcome_json).collect::<Vec<_>>(),
    })
}

fn history_json(h: &HistoryItem) -> Value {
    let (kind, details) = match &h.event {
        SessionEvent::Created(settings) => {
            ("created", json!({ "settings": settings_value(settings) }))
        }
        SessionEvent::SettingsChanged(settings) => (
            "settings_changed",
            json!({ "settings": settings_value(settings) }),
        ),
        SessionEvent::TaskExecuted(t) => (
            "task_executed",
            json!({ "task_id": t.task_id, "title": t.title, "status": task_status_name(t.status) }),
        ),
        SessionEvent::CommandRun(c) => (
            "command_run",
            json!({ "command_id": c.command_id, "command": c.command }),
        ),
        SessionEvent::Restored(s) => ("restored", summary_json(s)),
    };
    json!({
        "id": h.id,
        "type": kind,
        "timestamp": iso8601(h.at),
        "user_id": h.user_id,
        "details": details,
    })
}

/// `POST /api/sessions/`.
pub fn create(request: Request) -> Answer {
    let body = object(request)?;
    only(&body, &["project_id", "settings"])?;
    let project_id = string(&body, "project_id")?;
    let settings = opt_object(&body, "settings")?;
    let s = work_sessions::create(&project_id, settings.as_deref()).map_err(error)?;
    Ok((201, session_json(&s)))
}

/// `GET /api/sessions/?status=&project_id=&page=&page_size=`.
pub fn list(request: &Request) -> Answer {
    let status = match request.query("status").as_deref() {
        None | Some("") => None,
        Some("active") => Some(WorkSessionStatus::Active),
        Some("expired") => Some(WorkSessionStatus::Expired),
        Some(_) => return Err(ApiError::invalid("status", "must be active or expired")),
    };
    let project_id = request.query("project_id").filter(|p| !p.is_empty());
    let page = query_int(request, "page", 1, 1..=i64::from(u32::MAX))?;
    let page_size = query_int(request, "page_size", DEFAULT_PAGE_SIZE, 1..=MAX_PAGE_SIZE)?;
    let offset = u32::try_from((page - 1) * page_size)
        .map_err(|_| ApiError::invalid("page", "is past the last session"))?;
    let found = work_sessions::list_sessions(&WorkSessionQuery {
        status,
        project_id,
        offset,
        limit: page_size as u32,
    })
    .map_err(error)?;
    let sessions: Vec<Value> = found
        .items
        .iter()
        .map(|s| {
            let mut v = session_json(s);
            // The document's list leaves the settings to the details.
            if let Some(o) = v.as_object_mut() {
                o.remove("settings");
            }
            v
        })
        .collect();
    Ok((
        200,
        json!({
            "sessions": sessions,
            "total": found.total,
            "page": page,
            "page_size": page_size,
        }),
    ))
}

/// `GET /api/sessions/{id}`.
pub fn get(id: &str) -> Answer {
    let s = work_sessions::get(id).map_err(error)?;
    Ok((200, session_json(&s)))
}

/// `PUT /api/sessions/{id}`: merge the given settings into the session's.
pub fn update(request: Request, id: &str) -> Answer {
    let body = object(request)?;
    only(&body, &["settings"])?;
    let Some(patch) = opt_object(&body, "settings")? else {
        return Err(ApiError::invalid("settings", "Field is required"));
    };
    let s = work_sessions::update_settings(id, &patch).map_err(error)?;
    Ok((200, session_json(&s)))
}

/// `DELETE /api/sessions/{id}`.
pub fn delete(id: &str) -> Answer {
    let at = work_sessions::delete(id).map_err(error)?;
    Ok((
        200,
        json!({ "session_id": id, "deleted": true, "deleted_at": iso8601(at) }),
    ))
}

/// `GET /api/sessions/{id}/history`.
pub fn history(id: &str) -> Answer {
    let items = work_sessions::history(id).map_err(error)?;
    Ok((
        200,
        json!({
            "session_id": id,
            "history": items.iter().map(history_json).collect::<Vec<_>>(),
            "total": items.len(),
        }),
    ))
}

/// `POST /api/sessions/{id}/restore`.
pub fn restore(request: Request, id: &str) -> Answer {
    let body = object_or_empty(request)?;
    only(
        &body,
        &["restore_point", "include_tasks", "include_settings"],
    )?;
    let point = string(&body, "restore_point")?;
    let restore_point = parse_instant("restore_point", &point)?;
    let include_tasks = opt_bool(&body, "include_tasks")?.unwrap_or(false);
    let include_settings = opt_bool(&body, "include_settings")?.unwrap_or(true);
    let done = work_sessions::restore(
        id,
        RestoreRequest {
            restore_point,
            include_tasks,
            include_settings,
        },
    )
    .map_err(error)?;
    let mut data = session_json(&done.session);
    data["restored"] = summary_json(&done.summary);
    Ok((200, data))
}

/// The optional `session_id` of `POST /api/tasks/{id}/execute`: checked to be an active
/// session of the caller before the task is executed, so a bad one executes nothing.
pub fn session_for_execute(body: &Map<String, Value>) -> Result<Option<String>, ApiError> {
    let Some(id) = opt_string(body, "session_id")? else {
        return Ok(None);
    };
    let s = work_sessions::get(&id).map_err(|e| {
        let mut refused = error(e);
        if refused.status == 404 {
            refused.details = json!({ "field": "session_id" });
        }
        refused.renamed("session_id")
    })?;
    if s.status != WorkSessionStatus::Active {
        return Err(error(WorkSessionError::Expired));
    }
    Ok(Some(id))
}

/// Record the execution of `task_id` in the session `session_id` (after it was queued).
pub fn record_execution(session_id: &str, task_id: &str) -> Result<(), ApiError> {
    work_sessions::record_task_executed(session_id, task_id).map_err(error)
}

/// The routes under `/api/sessions`: `rest` is the path's segments after `sessions`.
pub fn route(request: Request, method: &str, rest: &[&str]) -> Answer {
    match (method, rest) {
        ("POST", []) => create(request),
        ("GET", []) => list(&request),
        ("GET", [id]) => get(id),
        ("PUT", [id]) => update(request, id),
        ("DELETE", [id]) => delete(id),
        ("GET", [id, "history"]) => history(id),
        ("POST", [id, "restore"]) => restore(request, id),
        (_, [] | [_] | [_, "history" | "restore"]) => Err(ApiError::new(
            405,
            "METHOD_NOT_ALLOWED",
            format!("{method} is not allowed on {}", request.path()),
        )),
        _ => Err(ApiError::new(
            404,
            "RESOURCE_NOT_FOUND",
            format!("no endpoint at {}", request.path()),
        )),
    }
}
