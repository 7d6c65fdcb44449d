//! The CLK REST API over gantry's core: research tasks run a CLK command through a backend
//! plugin (`clk` by default: the generic `exec` adapter running `<binary> <command> <args…>`)
//! in the caller's workspaces. Request and response shapes are those of the CLK document;
//! unlike the original, workspaces and tasks survive a restart, the stream resumes from
//! `Last-Event-ID` and has no line cap, and `args` never meet a shell.
//!
//! Settings (all optional):
//! - `backend` — the backend plugin that runs CLK commands (`clk`);
//! - `modes` — the commands offered (`["init","idea","plan","run","loop","status"]`);
//! - `workflows` — the workflow templates, a list of `{name, path, description}` (the bundled
//!   `engineering` and `discovery` otherwise).

use gantry_guest::bindings::gantry::plugin::host_info;
use gantry_guest::bindings::gantry::plugin::tasks::{self, Event, StartRequest, Task, TaskError};
use gantry_guest::bindings::gantry::plugin::workspaces::{self, Workspace, WorkspaceError};
use gantry_guest::config;
use gantry_guest::handler::{Guest, IncomingRequest, ResponseOutparam};
use gantry_guest::http::{self, Request};
use gantry_guest::log_shaper::{self, Shaped};
use gantry_guest::responses::{self, FileAnswer, LogAnswer};
use gantry_guest::time::iso8601;
use gantry_guest::types::{EventBody, PromptRequest};
use serde_json::{Value, json};

const MAX_BODY: usize = 1 << 20;
const DEFAULT_MODES: &[&str] = &["init", "idea", "plan", "run", "loop", "status"];
const BUNDLED_WORKFLOWS: &str = include_str!("workflows.json");

struct Clk;

impl Guest for Clk {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let request = Request::new(request);
        let path = request.path().to_string();
        let method = request.method().to_string();
        let segments: Vec<&str> = path.trim_start_matches("/api/").split('/').collect();
        let result = match (method.as_str(), segments.as_slice()) {
            ("GET", ["healthz"]) => Ok((200, healthz())),
            ("GET", ["capabilities"]) => Ok((200, json!({ "ok": true, "modes": modes() }))),
            ("GET", ["workflows"]) => {
                workflows().map(|w| (200, json!({ "ok": true, "workflows": w })))
            }
            ("POST", ["workspaces"]) => create_workspace(request).map(|v| (201, v)),
            ("GET", ["workspaces"]) => list_workspaces().map(|v| (200, v)),
            ("DELETE", ["workspaces", id]) => workspaces::delete(id)
                .map(|()| (200, json!({ "ok": true })))
                .map_err(ws_error),
            ("POST", ["research"]) => start_research(request).map(|v| (202, v)),
            ("GET", ["research", id]) => research_task(id).map(|t| (200, task_json(&t))),
            ("GET", ["research", id, "stream"]) => return stream(&request, id, out),
            ("GET", ["research", id, "artifacts"]) => artifacts(id).map(|v| (200, v)),
            ("GET", ["research", id, "artifacts", rest @ ..]) => {
                return artifact(&request, id, &rest.join("/"), out);
            }
            ("POST", ["research", id, "cancel"]) => research_task(id)
                .and_then(|t| tasks::cancel(&t.id).map_err(task_error))
                .map(|_| (200, json!({ "ok": true }))),
            (
                _,
                [
                    "healthz" | "capabilities" | "workflows" | "workspaces" | "research",
                    ..,
                ],
            ) if known_path(&segments) => Err(ApiError(
                405,
                "method_not_allowed",
                format!("{method} is not allowed on {path}"),
            )),
            _ => Err(ApiError(404, "not_found", format!("no endpoint at {path}"))),
        };
        match result {
            Ok((status, value)) => http::json(out, status, &value),
            Err(e) => fail(out, e),
        }
    }
}

/// Whether a path names an endpoint under some method (for 405 against 404).
fn known_path(segments: &[&str]) -> bool {
    matches!(
        segments,
        ["healthz" | "capabilities" | "workflows" | "workspaces" | "research"]
            | ["workspaces" | "research", _]
            | ["research", _, "stream" | "artifacts" | "cancel"]
            | ["research", _, "artifacts", ..]
    )
}

/// An error in the CLK envelope: status, stable code, message.
struct ApiError(u16, &'static str, String);

fn fail(out: ResponseOutparam, e: ApiError) {
    // Every over-capacity answer says when to come back.
    let retry: &[(&str, &str)] = if e.0 == 503 {
        &[("retry-after", "1")]
    } else {
        &[]
    };
    http::json_with(
        out,
        e.0,
        retry,
        &json!({ "ok": false, "error": { "code": e.1, "message": e.2 } }),
    );
}

fn ws_error(e: WorkspaceError) -> ApiError {
    match e {
        WorkspaceError::NotFound => {
            ApiError(404, "workspace_not_found", "Workspace not found.".into())
        }
        WorkspaceError::Busy => ApiError(
            409,
            "workspace_busy",
            "A task is pending or running in this workspace; cancel it first.".into(),
        ),
        WorkspaceError::BadPath(m) => ApiError(403, "forbidden_path", m),
        WorkspaceError::BadName(m) => ApiError(422, "invalid_request", m),
        WorkspaceError::TooLarge(n) => ApiError(
            413,
            "artifact_too_large",
            format!("The artifact is larger than {n} bytes."),
        ),
        WorkspaceError::Internal(m) => ApiError(500, "internal_error", m),
    }
}

fn task_error(e: TaskError) -> ApiError {
    match e {
        TaskError::NotFound => ApiError(404, "task_not_found", "Task not found.".into()),
        TaskError::BadRequest(m) => ApiError(400, "invalid_request", m),
        TaskError::Refused(m) => ApiError(400, "command_refused", m),
        TaskError::Busy(_) => ApiError(
            503,
            "over_capacity",
            "Too many open streams for this tenant; retry shortly.".into(),
        ),
        TaskError::Internal(m) => ApiError(500, "internal_error", m),
    }
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError(422, "invalid_request", message.into())
}

fn backend() -> String {
    config::get("backend").unwrap_or_else(|| "clk".into())
}

fn modes() -> Vec<String> {
    config::get("modes")
        .and_then(|m| serde_json::from_str(&m).ok())
        .unwrap_or_else(|| DEFAULT_MODES.iter().map(|m| m.to_string()).collect())
}

/// The workflow templates: the operator's, or the bundled set. A set that does not parse, or
/// an entry without a name and path, is the documented `template_load_failed`.
fn workflows() -> Result<Vec<Value>, ApiError> {
    let text = config::get("workflows").unwrap_or_else(|| BUNDLED_WORKFLOWS.to_string());
    let broken = || {
        ApiError(
            500,
            "template_load_failed",
            "Failed to load workflow templates.".into(),
        )
    };
    let list: Vec<Value> = serde_json::from_str(&text).map_err(|_| broken())?;
    list.into_iter()
        .map(|w| match (&w["name"], &w["path"]) {
            (Value::String(name), Value::String(path)) => Ok(json!({
                "name": name,
                "path": path,
                "description": w["description"].as_str().unwrap_or(""),
            })),
            _ => Err(broken()),
        })
        .collect()
}

fn healthz() -> Value {
    let info = host_info::info();
    json!({
        "ok": true,
        "version": info.version,
        "uptime_s": info.uptime_ms as f64 / 1000.0,
    })
}

fn json_body(request: Request) -> Result<serde_json::Map<String, Value>, ApiError> {
    let body = request.body(MAX_BODY).map_err(|_| {
        ApiError(
            413,
            "body_too_large",
            format!("The request body is larger than {MAX_BODY} bytes."),
        )
    })?;
    match serde_json::from_slice(&body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(invalid("The request body must be a JSON object.")),
        Err(e) => Err(ApiError(
            400,
            "invalid_json",
            format!("The request body is not valid JSON: {e}"),
        )),
    }
}

/// An optional string field; any other type is refused.
fn string_field(
    body: &serde_json::Map<String, Value>,
    key: &str,
) -> Result<Option<String>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(invalid(format!("`{key}` must be a string."))),
    }
}

fn workspace_path(id: &str) -> String {
    format!("/workspaces/{id}")
}

fn create_workspace(request: Request) -> Result<Value, ApiError> {
    let body = json_body(request)?;
    let name = string_field(&body, "name")?.ok_or_else(|| invalid("`name` is required."))?;
    let ws = workspaces::create(&name).map_err(ws_error)?;
    Ok(json!({ "ok": true, "workspace_id": ws.id, "path": workspace_path(&ws.id) }))
}

fn list_workspaces() -> Result<Value, ApiError> {
    let list = workspaces::list().map_err(ws_error)?;
    let items: Vec<Value> = list
        .into_iter()
        .map(|w: Workspace| {
            json!({
                "id": w.id,
                "name": w.name,
                "path": workspace_path(&w.id),
                "created_at": iso8601(w.created_at),
            })
        })
        .collect();
    Ok(json!({ "ok": true, "workspaces": items }))
}

fn prompt(command: &str, args: Vec<String>) -> PromptRequest {
    PromptRequest {
        args,
        ..gantry_guest::adapter::plain_request(command)
    }
}

/// `args` with `--workflow W` added for `run`, unless either documented form is there.
fn with_workflow(command: &str, mut args: Vec<String>, workflow: Option<String>) -> Vec<String> {
    if let Some(workflow) = workflow {
        let present = args
            .iter()
            .any(|a| a == "--workflow" || a.starts_with("--workflow="));
        if command == "run" && !present {
            args.push("--workflow".into());
            args.push(workflow);
        }
    }
    args
}

fn start_research(request: Request) -> Result<Value, ApiError> {
    let body = json_body(request)?;
    let command =
        string_field(&body, "command")?.ok_or_else(|| invalid("`command` is required."))?;
    let modes = modes();
    if !modes.contains(&command) {
        return Err(ApiError(
            400,
            "invalid_command",
            format!("Unknown command {command:?}; one of: {}.", modes.join(", ")),
        ));
    }
    let args = match body.get("args") {
        None | Some(Value::Null) => vec![],
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| i.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| invalid("`args` must be a list of strings."))?,
        Some(_) => return Err(invalid("`args` must be a list of strings.")),
    };
    let workflow = string_field(&body, "workflow")?;
    if let Some(w) = &workflow
        && !workflows()?.iter().any(|t| t["name"] == w.as_str())
    {
        return Err(ApiError(
            400,
            "workflow_not_found",
            format!("Unknown workflow {w:?}; GET /api/workflows lists them."),
        ));
    }
    let (workspace, ephemeral) = match string_field(&body, "workspace_id")? {
        Some(id) => (workspaces::get(&id).map_err(ws_error)?, false),
        None => (
            workspaces::create(&format!("{command}-ephemeral")).map_err(ws_error)?,
            true,
        ),
    };
    // CLK initialises a workspace before its first command, within the same task.
    let initialised = workspaces::exists(&workspace.id, ".clk").map_err(ws_error)?;
    let setup = if command != "init" && !initialised {
        vec![prompt("init", vec![])]
    } else {
        vec![]
    };
    let args = with_workflow(&command, args, workflow);
    let task = tasks::start(&StartRequest {
        workspace_id: workspace.id.clone(),
        backend: backend(),
        setup,
        request: prompt(&command, args),
        timeout_ms: None,
        subdir: None,
        // Research tasks outlive the request that starts them.
        bound_to_call: false,
    })
    .map_err(|e| {
        // A workspace made for this request alone goes with it.
        if ephemeral {
            let _ = workspaces::delete(&workspace.id);
        }
        task_error(e)
    })?;
    Ok(json!({ "ok": true, "task_id": task.id, "workspace_id": workspace.id }))
}

/// A task started through this API (another backend's tasks are not research tasks).
fn research_task(id: &str) -> Result<Task, ApiError> {
    let task = tasks::get(id).map_err(task_error)?;
    if task.backend != backend() {
        return Err(task_error(TaskError::NotFound));
    }
    Ok(task)
}

fn task_json(t: &Task) -> Value {
    json!({
        "ok": true,
        "task_id": t.id,
        "workspace_id": t.workspace_id,
        "command": t.request.prompt,
        "args": t.request.args,
        "status": t.state.as_str(),
        "created_at": iso8601(t.created_at),
        "started_at": t.started_at.map(iso8601),
        "finished_at": t.finished_at.map(iso8601),
        "exit_code": t.exit_code,
        "line_count": t.output_lines,
        "error": t.error,
    })
}

/// The task's output lines as SSE, `seq` from 0 and `id` equal to it, then the terminal
/// status. `Last-Event-ID: N` resumes with line N+1. The host follows the log, holding no
/// instance while it waits; [`Clk::shape`] writes each batch.
fn stream(request: &Request, id: &str, out: ResponseOutparam) {
    let task = match research_task(id) {
        Ok(t) => t,
        Err(e) => return fail(out, e),
    };
    let resume_after = request
        .header("last-event-id")
        .and_then(|v| v.trim().parse::<u64>().ok());
    let subscription = match tasks::subscribe(&task.id, 1) {
        Ok(s) => s,
        Err(e) => return fail(out, task_error(e)),
    };
    let state = StreamState {
        line_seq: 0,
        resume_after,
    };
    let answer = LogAnswer {
        status: 200,
        headers: vec![
            ("content-type".into(), "text/event-stream".into()),
            ("cache-control".into(), "no-store".into()),
        ],
        state: serde_json::to_string(&state).expect("JSON values serialize"),
    };
    responses::stream_log(out, subscription, &answer);
}

/// Where a stream is between batches: the next line's `seq`, and the last one the client
/// already has.
#[derive(serde::Serialize, serde::Deserialize)]
struct StreamState {
    line_seq: u64,
    resume_after: Option<u64>,
}

impl log_shaper::Guest for Clk {
    fn shape(state: String, events: Vec<Event>, end: Option<Task>) -> Shaped {
        let mut state: StreamState =
            serde_json::from_str(&state).expect("the state this component wrote");
        let mut chunk = String::new();
        for e in events {
            let EventBody::Output(line) = e.body else {
                continue;
            };
            let seq = state.line_seq;
            state.line_seq += 1;
            if state.resume_after.is_some_and(|last| seq <= last) {
                continue;
            }
            let mut payload = json!({ "line": line.text, "seq": seq });
            if line.partial {
                payload["partial"] = true.into();
            }
            chunk.push_str(&format!("id: {seq}\ndata: {payload}\n\n"));
        }
        if let Some(t) = end {
            let end = json!({ "status": t.state.as_str(), "exit_code": t.exit_code });
            chunk.push_str(&format!("data: {end}\n\n"));
        }
        Shaped {
            bytes: chunk.into_bytes(),
            state: serde_json::to_string(&state).expect("JSON values serialize"),
            done: false,
        }
    }
}

fn artifacts(id: &str) -> Result<Value, ApiError> {
    let task = research_task(id)?;
    let files = workspaces::list_files(&task.workspace_id).map_err(ws_error)?;
    let items: Vec<Value> = files
        .into_iter()
        .map(|f| json!({ "path": f.path, "size": f.size, "modified": iso8601(f.modified) }))
        .collect();
    Ok(json!({ "ok": true, "task_id": task.id, "artifacts": items }))
}

/// One artifact's bytes with the MIME type of its extension. Every path that could leave the
/// workspace is a 403, decided before anything is read: the host checks again on open.
fn artifact(request: &Request, id: &str, raw_path: &str, out: ResponseOutparam) {
    let task = match research_task(id) {
        Ok(t) => t,
        Err(e) => return fail(out, e),
    };
    let path = http::percent_decode_path(raw_path);
    let escapes = path.is_empty()
        || path.starts_with('/')
        || path.contains('\0')
        || path.contains('\\')
        || path
            .split('/')
            .any(|s| s == ".." || s == "." || s.is_empty());
    if escapes {
        return fail(
            out,
            ApiError(
                403,
                "forbidden_path",
                "The path leaves the workspace.".into(),
            ),
        );
    }
    // Streamed by the host from disk, whatever its size, with Range and ETag; an active type
    // (HTML, SVG) goes out as a sandboxed attachment.
    let answer = FileAnswer {
        headers: vec![("content-type".into(), mime_type(&path))],
        range: request.header("range"),
        if_none_match: request.header("if-none-match"),
        if_range: request.header("if-range"),
    };
    match responses::send_file(out, &task.workspace_id, &path, &answer) {
        Ok(()) => {}
        Err((WorkspaceError::NotFound, out)) => fail(
            out,
            ApiError(404, "artifact_not_found", format!("No artifact at {path}.")),
        ),
        Err((e, out)) => fail(out, ws_error(e)),
    }
}

/// The content type of an artifact, by its extension: `mime_guess`'s table, text types in
/// UTF-8, and `application/octet-stream` for what it does not know.
/// Types a browser renders as an active document (scripts run in them).
const ACTIVE: &[&str] = &[
    "text/html",
    "application/xhtml+xml",
    "image/svg+xml",
    "text/xml",
    "application/xml",
    "application/xslt+xml",
    "message/rfc822",
];

fn mime_type(path: &str) -> String {
    let ext = path
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    // Kept by hand: the registered types this API has always sent, where mime_guess's table
    // still has older ones (text/x-yaml, text/x-toml, text/xml, text/plain for Python).
    let essence = match ext.as_str() {
        "yaml" | "yml" => "application/yaml",
        "toml" => "application/toml",
        "xml" => "application/xml",
        "py" => "text/x-python",
        // TypeScript, not an MPEG transport stream, in an agent's workspace.
        "ts" | "tsx" | "mts" | "cts" => "application/octet-stream",
        _ => match mime_guess::from_ext(&ext).first_raw() {
            // No new kind of active content: a type a browser would run as a document stays
            // bytes unless this API always served it so (html and svg, above in the table).
            Some(t) if ACTIVE.contains(&t) && !matches!(ext.as_str(), "html" | "htm" | "svg") => {
                "application/octet-stream"
            }
            Some(t) => t,
            None => "application/octet-stream",
        },
    };
    if essence.starts_with("text/") {
        format!("{essence}; charset=utf-8")
    } else {
        essence.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::mime_type;

    #[test]
    fn content_types_by_extension() {
        // Every extension the hand-written table knew, with the type it gave.
        for (path, expected) in [
            ("a.json", "application/json"),
            ("a.md", "text/markdown; charset=utf-8"),
            ("a.markdown", "text/markdown; charset=utf-8"),
            ("a.txt", "text/plain; charset=utf-8"),
            ("a.log", "text/plain; charset=utf-8"),
            ("a.yaml", "application/yaml"),
            ("a.yml", "application/yaml"),
            ("a.toml", "application/toml"),
            ("a.csv", "text/csv; charset=utf-8"),
            ("a.html", "text/html; charset=utf-8"),
            ("a.htm", "text/html; charset=utf-8"),
            ("a.css", "text/css; charset=utf-8"),
            ("a.js", "text/javascript; charset=utf-8"),
            ("a.py", "text/x-python; charset=utf-8"),
            ("a.rs", "text/x-rust; charset=utf-8"),
            ("a.xml", "application/xml"),
            ("a.png", "image/png"),
            ("a.jpg", "image/jpeg"),
            ("a.jpeg", "image/jpeg"),
            ("a.gif", "image/gif"),
            ("a.svg", "image/svg+xml"),
            ("a.pdf", "application/pdf"),
            ("a.zip", "application/zip"),
            ("a.gz", "application/gzip"),
        ] {
            assert_eq!(mime_type(path), expected, "{path}");
        }
        // Case does not matter.
        assert_eq!(mime_type("out/REPORT.MD"), "text/markdown; charset=utf-8");
        assert_eq!(mime_type("v1.2/data.JSON"), "application/json");
        // What the table does not know, or a name without an extension, is bytes.
        for path in ["a.unknownext", "Makefile", "v1.2/notes", ".env", "a."] {
            assert_eq!(mime_type(path), "application/octet-stream", "{path}");
        }
        // The crate's table reaches further than the old one did.
        assert_eq!(mime_type("a.sh"), "application/x-sh");
        assert_eq!(mime_type("a.webp"), "image/webp");
        // But no further into active content, and TypeScript is not video.
        for path in ["a.xhtml", "a.xht", "a.xsl", "a.mht", "a.ts", "a.tsx"] {
            assert_eq!(mime_type(path), "application/octet-stream", "{path}");
        }
    }
}

gantry_guest::bindings::export_handler!(Clk);
gantry_guest::log_shaping::export_log_shaper!(Clk);
