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
//! The routes are in [`prompt`] (`/prompt`), [`batch`] (`/parallel`, `/chain`, `/compare`) and
//! [`sessions`]; a run itself (placing, starting and following it) is in [`run`], the reading
//! of request bodies in [`request`].
//!
//! Where the document is weak, this is stricter: a run belongs to its request (a client that
//! goes away cancels it), `workdir` must lie in the caller's own workspaces, sessions persist
//! across restarts, and every error is `{"error": code, "message"}`.

mod batch;
mod prompt;
mod request;
mod run;
mod sessions;

use gantry_guest::bindings::gantry::plugin::backends;
use gantry_guest::handler::{Guest, IncomingRequest, ResponseOutparam};
use gantry_guest::http::{self, BodyError, Request};
use request::ApiError;
use serde_json::{Map, Value, json};

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
            ("POST", ["prompt"]) => return prompt::prompt(request, out),
            ("POST", ["parallel"]) => body(request).and_then(batch::parallel),
            ("POST", ["chain"]) => body(request).and_then(batch::chain),
            ("POST", ["compare"]) => body(request).and_then(batch::compare),
            ("GET", ["backends"]) => Ok(backends_json()),
            ("GET", ["sessions"]) => sessions::list(&request),
            ("GET", ["sessions", id]) => sessions::get(id),
            ("DELETE", ["sessions", id]) => match sessions::delete(id) {
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

pub(crate) fn fail(out: ResponseOutparam, e: &ApiError) {
    let body = json!({ "error": e.code, "message": e.message });
    let mut headers: Vec<_> = e
        .allow
        .map(|methods| ("allow", methods))
        .into_iter()
        .collect();
    // Every over-capacity answer says when to come back.
    if e.status == 503 {
        headers.push(("retry-after", "1"));
    }
    http::json_with(out, e.status, &headers, &body);
}

pub(crate) fn body(request: Request) -> Result<Map<String, Value>, ApiError> {
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

pub(crate) fn setting_u64(key: &str) -> Option<u64> {
    gantry_guest::config::get(key).and_then(|v| v.parse().ok())
}

pub(crate) fn default_timeout() -> Option<u64> {
    setting_u64("run_timeout_ms").filter(|&t| t > 0)
}

/// Every backend named is known and, where it is to run (not a dry run), can run here; else
/// the answer for the first that is not.
pub(crate) fn check_backends<'a>(
    wanted: impl IntoIterator<Item = (&'a str, bool)>,
) -> Result<(), ApiError> {
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
