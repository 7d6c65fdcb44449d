//! gantry's core API under `/v1`: workspaces, their files, tasks, and task event streams.
//! It is a thin HTTP face over the `workspaces` and `tasks` host interfaces; the host scopes
//! every call to the caller's tenant.
//!
//! | method and path | what |
//! |---|---|
//! | `POST /v1/workspaces` `{"name"}` | create a workspace (201) |
//! | `GET /v1/backends[?refresh=true]` | the backends, available or not and why (`refresh` probes again) |
//! | `GET /v1/workspaces` | list them |
//! | `GET`, `DELETE /v1/workspaces/{id}` | one; delete (409 while a task runs in it) |
//! | `GET /v1/workspaces/{id}/files` | its files |
//! | `GET /v1/workspaces/{id}/files/{path}` | one file's bytes |
//! | `POST /v1/tasks` `{"workspace_id", "backend", "prompt", "subdir"?, ...}` | start a task (201), in the workspace or a directory inside it |
//! | `GET /v1/tasks[?workspace_id=]` | list tasks |
//! | `GET /v1/tasks/{id}` | one task |
//! | `POST /v1/tasks/{id}/cancel` | cancel it |
//! | `GET /v1/tasks/{id}/events[?from_seq=N][&format=ndjson][&follow=false]` | its log as SSE (or NDJSON), live until it ends (or only what is logged now, with `follow=false`); `Last-Event-ID` resumes |

use gantry_guest::bindings::gantry::plugin::backends;
use gantry_guest::bindings::gantry::plugin::tasks::{self, Event, StartRequest, Task, TaskError};
use gantry_guest::bindings::gantry::plugin::workspaces::{
    self, FileEntry, Workspace, WorkspaceError,
};
use gantry_guest::handler::{Guest, IncomingRequest, ResponseOutparam};
use gantry_guest::http::{self, Request};
use gantry_guest::json;
use gantry_guest::log_shaper::{self, Shaped};
use gantry_guest::responses::{self, FileAnswer, LogAnswer};
use gantry_guest::types::{ApprovalMode, PromptRequest, SandboxMode};
use serde_json::{Value, json};

/// The largest request body.
const MAX_BODY: usize = 1 << 20;

struct Core;

impl Guest for Core {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let request = Request::new(request);
        let path = request.path().to_string();
        let method = request.method().to_string();
        let segments: Vec<&str> = path.trim_start_matches("/v1/").split('/').collect();
        match (method.as_str(), segments.as_slice()) {
            ("GET", ["backends"]) => {
                let refresh = matches!(request.query("refresh").as_deref(), Some("true" | "1"));
                let list: Vec<Value> = backends::list(refresh).into_iter().map(backend_json).collect();
                http::json(out, 200, &json!({ "backends": list }))
            }
            ("POST", ["workspaces"]) => create_workspace(request, out),
            ("GET", ["workspaces"]) => answer(out, 200, workspaces::list().map(|l| json!({ "workspaces": l.into_iter().map(workspace_json).collect::<Vec<_>>() })).map_err(ws_error)),
            ("GET", ["workspaces", id]) => answer(out, 200, workspaces::get(id).map(workspace_json).map_err(ws_error)),
            ("DELETE", ["workspaces", id]) => match workspaces::delete(id) {
                Ok(()) => http::respond(out, 204, "application/json", b""),
                Err(e) => fail(out, ws_error(e)),
            },
            ("GET", ["workspaces", id, "files"]) => answer(out, 200, workspaces::list_files(id).map(|f| json!({ "files": f.into_iter().map(file_json).collect::<Vec<_>>() })).map_err(ws_error)),
            ("GET", ["workspaces", id, "files", rest @ ..]) if !rest.is_empty() => {
                // Streamed by the host from disk, whatever its size, with Range and ETag.
                let answer = FileAnswer {
                    headers: vec![("content-type".into(), "application/octet-stream".into())],
                    range: request.header("range"),
                    if_none_match: request.header("if-none-match"),
                    if_range: request.header("if-range"),
                };
                if let Err((e, out)) = responses::send_file(out, id, &file_path(rest), &answer) {
                    fail(out, ws_error(e));
                }
            }
            ("POST", ["tasks"]) => start_task(request, out),
            ("GET", ["tasks"]) => {
                let ws = request.query("workspace_id");
                answer(out, 200, tasks::list(ws.as_deref()).map(|l| json!({ "tasks": l.into_iter().map(task_json).collect::<Vec<_>>() })).map_err(task_error))
            }
            ("GET", ["tasks", id]) => answer(out, 200, tasks::get(id).map(task_json).map_err(task_error)),
            ("POST", ["tasks", id, "cancel"]) => answer(out, 200, tasks::cancel(id).map(task_json).map_err(task_error)),
            ("GET", ["tasks", id, "events"]) => events(&request, id, out),
            (_, route) => match allowed_methods(route) {
                Some(allow) => {
                    let message = format!("{method} is not allowed on {path}; use {allow}");
                    let body = json!({ "error": { "code": "method_not_allowed", "message": message } });
                    http::json_with(out, 405, &[("allow", allow)], &body)
                }
                None => http::error(out, 404, "not_found", &format!("no route for {path}")),
            },
        }
    }
}

/// The methods a path of this API takes (its `Allow`), or None if it is no path of it.
fn allowed_methods(route: &[&str]) -> Option<&'static str> {
    Some(match route {
        ["backends"] => "GET",
        ["workspaces" | "tasks"] => "GET, POST",
        ["workspaces", _] => "GET, DELETE",
        ["workspaces", _, "files", ..] | ["tasks", _] | ["tasks", _, "events"] => "GET",
        ["tasks", _, "cancel"] => "POST",
        _ => return None,
    })
}

/// An error as the API answers it: status, code, message.
#[derive(Debug)]
struct ApiError(u16, &'static str, String);

/// What a client over its share is told.
const BUSY: &str = "too many open log streams (or busy instances) for this tenant; retry shortly";

fn fail(out: ResponseOutparam, e: ApiError) {
    let body = json!({ "error": { "code": e.1, "message": e.2 } });
    // Every over-capacity answer says when to come back.
    let retry: &[(&str, &str)] = if e.0 == 503 {
        &[("retry-after", "1")]
    } else {
        &[]
    };
    http::json_with(out, e.0, retry, &body);
}

fn answer(out: ResponseOutparam, status: u16, result: Result<Value, ApiError>) {
    match result {
        Ok(value) => http::json(out, status, &value),
        Err(e) => fail(out, e),
    }
}

fn ws_error(e: WorkspaceError) -> ApiError {
    match e {
        WorkspaceError::NotFound => ApiError(404, "not_found", "no such workspace or file".into()),
        WorkspaceError::Busy => ApiError(
            409,
            "workspace_busy",
            "a task is running in this workspace".into(),
        ),
        WorkspaceError::BadPath(m) => ApiError(400, "bad_path", m),
        WorkspaceError::BadName(m) => ApiError(400, "bad_name", m),
        WorkspaceError::TooLarge(n) => ApiError(
            413,
            "too_large",
            format!("the file is larger than {n} bytes"),
        ),
        WorkspaceError::Internal(m) => ApiError(500, "internal", m),
    }
}

fn task_error(e: TaskError) -> ApiError {
    match e {
        TaskError::NotFound => ApiError(404, "not_found", "no such task".into()),
        TaskError::BadRequest(m) => ApiError(400, "bad_request", m),
        TaskError::Refused(m) => ApiError(422, "refused", m),
        TaskError::Busy(_) => ApiError(503, "over_capacity", BUSY.into()),
        TaskError::Internal(m) => ApiError(500, "internal", m),
    }
}

fn backend_json(b: backends::Backend) -> Value {
    json!({
        "name": b.name,
        "binary": b.binary,
        "available": b.available,
        "version": b.version,
        "reason": b.reason,
        "supports": {
            "resume": b.supports_resume,
            "system_prompt": b.supports_system_prompt,
            "model": b.supports_model,
            "max_turns": b.supports_max_turns,
        },
        "checked_at": b.checked_at,
    })
}

fn workspace_json(w: Workspace) -> Value {
    json!({ "id": w.id, "name": w.name, "created_at": w.created_at })
}

fn file_json(f: FileEntry) -> Value {
    json!({ "path": f.path, "size": f.size, "modified": f.modified })
}

/// The file a `files/{path}` route names: its segments joined and percent-decoded as a path
/// (a `+` in a file name is a plus, `%2B` one too; `%20` is a space).
fn file_path(segments: &[&str]) -> String {
    http::percent_decode_path(&segments.join("/"))
}

fn task_json(t: Task) -> Value {
    json!({
        "id": t.id,
        "workspace_id": t.workspace_id,
        "backend": t.backend,
        "state": t.state.as_str(),
        "created_at": t.created_at,
        "started_at": t.started_at,
        "finished_at": t.finished_at,
        "exit_code": t.exit_code,
        "error": t.error,
        "request": json::request(&t.request),
        "summary": json::summary(t.summary.as_ref()),
        "last_seq": t.last_seq,
    })
}

fn json_body(request: Request) -> Result<Value, ApiError> {
    let body = request.body(MAX_BODY).map_err(|_| {
        ApiError(
            413,
            "too_large",
            format!("the body is larger than {MAX_BODY} bytes"),
        )
    })?;
    serde_json::from_slice(&body)
        .map_err(|e| ApiError(400, "bad_json", format!("the body is not JSON: {e}")))
}

fn create_workspace(request: Request, out: ResponseOutparam) {
    let result = json_body(request).and_then(|body| {
        let name = body["name"]
            .as_str()
            .ok_or_else(|| ApiError(400, "bad_request", "`name` (a string) is required".into()))?;
        workspaces::create(name)
            .map(workspace_json)
            .map_err(ws_error)
    });
    answer(out, 201, result);
}

fn string_field(body: &Value, key: &str) -> Result<Option<String>, ApiError> {
    match &body[key] {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        _ => Err(ApiError(
            400,
            "bad_request",
            format!("`{key}` must be a string"),
        )),
    }
}

fn string_list(body: &Value, key: &str) -> Result<Vec<String>, ApiError> {
    let refuse = || {
        ApiError(
            400,
            "bad_request",
            format!("`{key}` must be a list of strings"),
        )
    };
    match &body[key] {
        Value::Null => Ok(vec![]),
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(refuse),
        _ => Err(refuse()),
    }
}

fn start_task(request: Request, out: ResponseOutparam) {
    let result = json_body(request).and_then(|body| {
        let required = |key: &str| {
            string_field(&body, key)?.ok_or_else(|| {
                ApiError(
                    400,
                    "bad_request",
                    format!("`{key}` (a string) is required"),
                )
            })
        };
        let unknown = |key: &str, other: &str| {
            ApiError(400, "bad_request", format!("unknown {key} {other:?}"))
        };
        let approval_mode = match string_field(&body, "approval_mode")? {
            None => ApprovalMode::Default,
            Some(name) => {
                ApprovalMode::parse(&name).ok_or_else(|| unknown("approval_mode", &name))?
            }
        };
        let sandbox_mode = match string_field(&body, "sandbox_mode")? {
            None => SandboxMode::Default,
            Some(name) => {
                SandboxMode::parse(&name).ok_or_else(|| unknown("sandbox_mode", &name))?
            }
        };
        let extra_flags = string_list(&body, "extra_flags")?;
        let number = |key: &str| match &body[key] {
            Value::Null => Ok(None),
            v => v.as_u64().map(Some).ok_or_else(|| {
                ApiError(
                    400,
                    "bad_request",
                    format!("`{key}` must be a non-negative integer"),
                )
            }),
        };
        let start = StartRequest {
            workspace_id: required("workspace_id")?,
            backend: required("backend")?,
            setup: vec![],
            request: PromptRequest {
                prompt: required("prompt")?,
                args: string_list(&body, "args")?,
                model: string_field(&body, "model")?,
                system_prompt: string_field(&body, "system_prompt")?,
                max_turns: number("max_turns")?.map(|n| n.min(u32::MAX as u64) as u32),
                approval_mode,
                sandbox_mode,
                extra_flags,
                resume_session: string_field(&body, "resume_session")?,
            },
            timeout_ms: number("timeout_ms")?,
            subdir: string_field(&body, "subdir")?,
            // A task outlives the request that starts it; cancel ends it.
            bound_to_call: false,
        };
        tasks::start(&start).map(task_json).map_err(task_error)
    });
    answer(out, 201, result);
}

/// Where a log read starts: after `Last-Event-ID` (a seq), else at `from_seq`, else at 1. A
/// cursor that is not a seq is the caller's error, never silently the start.
fn cursor(last_event_id: Option<&str>, from_seq: Option<String>) -> Result<u64, ApiError> {
    let bad = |what: &str, value: &str| {
        ApiError(
            400,
            "bad_cursor",
            format!("{what} must be a sequence number, not {value:?}"),
        )
    };
    match (last_event_id, from_seq) {
        (Some(last), _) => last
            .trim()
            .parse::<u64>()
            .ok()
            .and_then(|seq| seq.checked_add(1))
            .ok_or_else(|| bad("Last-Event-ID", last)),
        (None, Some(from)) => from
            .parse::<u64>()
            .map(|seq| seq.max(1))
            .map_err(|_| bad("from_seq", &from)),
        (None, None) => Ok(1),
    }
}

/// The task's log as Server-Sent Events (`id` is the seq) or NDJSON, from `from_seq` or after
/// `Last-Event-ID`, until the task's final event.
fn events(request: &Request, id: &str, out: ResponseOutparam) {
    let from = match cursor(
        request.header("last-event-id").as_deref(),
        request.query("from_seq"),
    ) {
        Ok(from) => from,
        Err(e) => return fail(out, e),
    };
    let ndjson = request.query("format").as_deref() == Some("ndjson");
    // Without following, the log ends at what is there now.
    let until = match request.query("follow").as_deref() {
        Some("false" | "0") => match tasks::get(id) {
            Ok(t) => Some(t.last_seq),
            Err(e) => return fail(out, task_error(e)),
        },
        _ => None,
    };
    // Nothing logged in the window asked for: the answer is already complete.
    if until.is_some_and(|last| last < from) {
        return http::respond_with(out, 200, &[("content-type", content_type(ndjson))], b"");
    }
    let subscription = match tasks::subscribe(id, from) {
        Ok(s) => s,
        Err(e) => return fail(out, task_error(e)),
    };
    // The host follows the log from here, holding no instance while it waits; `shape` below
    // writes each batch.
    let state = ShapeState { ndjson, until };
    let answer = LogAnswer {
        status: 200,
        headers: vec![
            ("content-type".into(), content_type(ndjson).into()),
            ("cache-control".into(), "no-store".into()),
        ],
        state: serde_json::to_string(&state).expect("JSON values serialize"),
    };
    responses::stream_log(out, subscription, &answer);
}

fn content_type(ndjson: bool) -> &'static str {
    if ndjson {
        "application/x-ndjson"
    } else {
        "text/event-stream"
    }
}

/// What shaping a log answer needs to know between batches.
#[derive(serde::Serialize, serde::Deserialize)]
struct ShapeState {
    ndjson: bool,
    /// The last seq to send (`follow=false`), or none to follow the log to its end.
    until: Option<u64>,
}

impl log_shaper::Guest for Core {
    fn shape(state: String, events: Vec<Event>, _end: Option<Task>) -> Shaped {
        let ShapeState { ndjson, until } =
            serde_json::from_str(&state).expect("the state this component wrote");
        let mut chunk = String::new();
        let mut done = false;
        for e in events {
            if until.is_some_and(|last| e.seq > last) {
                done = true;
                break;
            }
            done = until == Some(e.seq);
            let (kind, data) = (json::event_kind(&e.body), json::event_data(&e.body));
            if ndjson {
                chunk.push_str(&format!(
                    "{{\"seq\":{},\"kind\":\"{kind}\",\"at\":{},\"data\":{data}}}\n",
                    e.seq, e.at
                ));
            } else {
                chunk.push_str(&format!("id: {}\nevent: {kind}\ndata: {data}\n\n", e.seq));
            }
        }
        Shaped {
            bytes: chunk.into_bytes(),
            state,
            done,
        }
    }
}

gantry_guest::bindings::export_handler!(Core);
gantry_guest::log_shaping::export_log_shaper!(Core);

#[cfg(test)]
mod tests {
    use super::{cursor, file_path};

    #[test]
    fn cursors_are_seqs_or_a_400() {
        assert_eq!(cursor(None, None).unwrap(), 1);
        assert_eq!(cursor(Some(" 3 "), None).unwrap(), 4);
        assert_eq!(cursor(None, Some("7".into())).unwrap(), 7);
        assert_eq!(cursor(None, Some("0".into())).unwrap(), 1);
        for (last, from) in [
            (Some("18446744073709551615"), None),
            (Some("abc"), None),
            (Some("-1"), None),
            (None, Some("x".into())),
            (None, Some("-3".into())),
        ] {
            let e = cursor(last, from).unwrap_err();
            assert_eq!((e.0, e.1), (400, "bad_cursor"));
        }
    }

    #[test]
    fn file_paths_are_decoded_as_paths() {
        assert_eq!(file_path(&["a+b.txt"]), "a+b.txt");
        assert_eq!(file_path(&["c%2B%2B", "x%20y.md"]), "c++/x y.md");
        assert_eq!(file_path(&["%E2%9C%93", "100%"]), "\u{2713}/100%");
    }
}
