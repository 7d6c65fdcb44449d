//! The Claude CLI Web UI API over gantry's core: users and their access tokens
//! (`/api/auth/login`, `/refresh`, `/logout`; `/api/users`), the caller's profile and
//! preferences, health and system information, and the board — projects and the tasks planned
//! in them, with filters, search, history and bulk changes (`/api/projects`, `/api/tasks`).
//! Request and response shapes are the document's, in its envelope
//! `{data, error, meta: {timestamp, request_id, version}}`. Unlike the original there is no
//! default user or secret, a token's `alg` must be HS256, logging out revokes the token for
//! real, and every read and change is scoped to the caller's tenant and permissions: the host
//! does all of that (`gantry:plugin/users`, `gantry:plugin/projects`); this component checks
//! shapes and words answers.

mod board;
mod commands;
mod input;
mod queues;
mod sessions;
mod system;
mod webhooks;
mod ws;

use gantry_guest::handler::{Guest, IncomingRequest, ResponseOutparam};
use gantry_guest::http::{self, BodyError, Request};
use gantry_guest::identity::{self, Permission, UserInfo};
use gantry_guest::time::iso8601;
use gantry_guest::users::{self, FieldIssue, Issued, NewUser, User, UserError};
use serde_json::{Map, Value, json};

/// The API version `meta.version` names (as the host's own answers on these routes do).
const API_VERSION: &str = "1.0.0";
/// The largest body read.
pub(crate) const MAX_BODY: usize = 64 * 1024;
/// The document's page sizes: 50 by default, at most 100.
const DEFAULT_PAGE_SIZE: u64 = 50;
const MAX_PAGE_SIZE: u64 = 100;

struct WebUi;

/// An answer's status, code, message and details.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: u16,
    pub(crate) code: &'static str,
    pub(crate) message: String,
    pub(crate) details: Value,
    pub(crate) retry_after: Option<u32>,
}

impl ApiError {
    pub(crate) fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            details: json!({}),
            retry_after: None,
        }
    }

    /// The same validation error about a field named otherwise (a nested field's full name).
    pub(crate) fn renamed(self, field: &str) -> Self {
        match self.details.get("issue").and_then(Value::as_str) {
            Some(issue) if self.code == "VALIDATION_ERROR" => ApiError::invalid(field, issue),
            _ => self,
        }
    }

    /// 422 `VALIDATION_ERROR` naming the field and what is wrong with it.
    pub(crate) fn invalid(field: &str, issue: impl Into<String>) -> Self {
        let issue = issue.into();
        ApiError {
            details: json!({ "field": field, "issue": issue }),
            ..ApiError::new(
                422,
                "VALIDATION_ERROR",
                format!("Invalid input data: {field}: {issue}"),
            )
        }
    }
}

impl Guest for WebUi {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let request = Request::new(request);
        // The host put the id to answer with in the request (taken from the client or new).
        let request_id = request.header("x-request-id").unwrap_or_default();
        let path = request.path().trim_end_matches('/').to_string();
        let method = request.method().to_string();
        let result = dispatch(request, &method, &path);
        match result {
            Ok((status, data)) => {
                let body = json!({ "data": data, "error": null, "meta": meta(&request_id) });
                http::json_with(out, status, &[("x-request-id", request_id.as_str())], &body);
            }
            Err(e) => fail(out, &request_id, e),
        }
    }
}

/// The route for a request: the method and the path's segments after `/api/`.
fn dispatch(request: Request, method: &str, path: &str) -> Answer {
    let segments: Vec<&str> = path.trim_start_matches("/api/").split('/').collect();
    let not_allowed = || {
        Err(ApiError::new(
            405,
            "METHOD_NOT_ALLOWED",
            format!("{method} is not allowed on {path}"),
        ))
    };
    match (method, segments.as_slice()) {
        (_, ["commands", rest @ ..]) => commands::dispatch(request, method, rest),
        ("POST", ["auth", "login"]) => login(request),
        ("POST", ["auth", "refresh"]) => refresh(),
        ("POST", ["auth", "logout"]) => logout(),
        ("GET", ["health"]) => system::health(),
        ("GET", ["health", "detailed"]) => system::detailed(),
        ("GET", ["system", "info"]) => system::info(),
        ("GET", ["users", "profile"]) => system::profile(),
        ("PUT", ["users", "preferences"]) => system::set_preferences(request),
        ("POST", ["users"]) => create_user(request),
        ("GET", ["users"]) => list_users(&request),
        ("POST", ["users", id, "disable"]) => disable_user(id),
        ("POST", ["projects"]) => board::create_project(request),
        ("GET", ["projects"]) => board::list_projects(&request),
        ("GET", ["projects", id]) => board::get_project(id),
        ("PUT", ["projects", id]) => board::update_project(request, id),
        ("DELETE", ["projects", id]) => board::delete_project(id),
        ("GET", ["projects", id, "tasks"]) => board::list_tasks(&request, Some(id)),
        ("POST", ["projects", id, "clone"]) => board::clone_project(request, id),
        ("GET", ["projects", id, "analytics"]) => board::analytics(&request, id),
        ("POST", ["tasks"]) => board::create_task(request),
        ("GET", ["tasks"]) => board::list_tasks(&request, None),
        ("POST", ["tasks", "bulk"]) => board::bulk(request),
        ("GET", ["tasks", id]) => board::get_task(id),
        ("PUT", ["tasks", id]) => board::update_task(request, id),
        ("DELETE", ["tasks", id]) => board::delete_task(id),
        ("GET", ["tasks", id, "history"]) => board::task_history(id),
        ("POST", ["tasks", id, "execute"]) => queues::execute(request, id),
        ("POST", ["tasks", id, "cancel"]) => queues::cancel(request, id),
        ("POST", ["tasks", id, "retry"]) => queues::retry(id),
        ("GET", ["queues", "status"]) => queues::status(),
        ("GET", ["queues", "metrics"]) => queues::metrics(&request),
        ("POST", ["queues", "pause"]) => queues::pause_or_resume(request, true),
        ("POST", ["queues", "resume"]) => queues::pause_or_resume(request, false),
        ("DELETE", ["queues", "clear"]) => queues::clear(request),
        ("POST", ["queues", "priority"]) => queues::set_priority(request),
        (_, ["sessions", rest @ ..]) => sessions::route(request, method, rest),
        ("POST", ["webhooks"]) => webhooks::create(request),
        ("GET", ["webhooks"]) => webhooks::list(),
        ("GET", ["webhooks", id]) => webhooks::get(id),
        ("PUT", ["webhooks", id]) => webhooks::update(request, id),
        ("DELETE", ["webhooks", id]) => webhooks::delete(id),
        ("GET", ["webhooks", id, "deliveries"]) => webhooks::deliveries(&request, id),
        ("POST", ["webhooks", id, "deliveries", d, "redeliver"]) => webhooks::redeliver(id, d),
        (
            _,
            ["auth", "login" | "refresh" | "logout"]
            | ["health"]
            | ["health", "detailed"]
            | ["system", "info"]
            | ["users"]
            | ["users", "profile" | "preferences"]
            | ["users", _, "disable"]
            | ["projects"]
            | ["projects", _]
            | ["projects", _, "tasks" | "clone" | "analytics"]
            | ["tasks"]
            | ["tasks", _]
            | ["tasks", _, "history" | "execute" | "cancel" | "retry"]
            | [
                "queues",
                "status" | "metrics" | "pause" | "resume" | "clear" | "priority",
            ]
            | ["webhooks"]
            | ["webhooks", _]
            | ["webhooks", _, "deliveries"]
            | ["webhooks", _, "deliveries", _, "redeliver"],
        ) => not_allowed(),
        _ => Err(ApiError::new(
            404,
            "RESOURCE_NOT_FOUND",
            format!("no endpoint at {path}"),
        )),
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Milliseconds since the epoch, now.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// An instant in ms since the epoch as the document's timestamps, to the second.
pub(crate) fn timestamp_ms(ms: i64) -> String {
    timestamp(ms.max(0) as u64 / 1000)
}

/// `secs` since the epoch in whole seconds, as the document's timestamps
/// (`2025-07-30T12:00:00Z`).
fn timestamp(secs: u64) -> String {
    let full = iso8601(secs as i64 * 1000);
    match full.split_once('.') {
        Some((seconds, _)) => format!("{seconds}Z"),
        None => full,
    }
}

fn meta(request_id: &str) -> Value {
    json!({ "timestamp": timestamp(now_secs()), "request_id": request_id, "version": API_VERSION })
}

fn fail(out: ResponseOutparam, request_id: &str, e: ApiError) {
    let retry = e.retry_after.map(|s| s.to_string());
    let mut headers = vec![("x-request-id", request_id)];
    if let Some(retry) = &retry {
        headers.push(("retry-after", retry.as_str()));
    }
    if e.status == 401 {
        headers.push(("www-authenticate", "Bearer"));
    }
    let body = json!({
        "data": null,
        "error": { "code": e.code, "message": e.message, "details": e.details },
        "meta": meta(request_id),
    });
    http::json_with(out, e.status, &headers, &body);
}

pub(crate) type Answer = Result<(u16, Value), ApiError>;

/// The request's JSON object; a body that is not one is a 422 naming `body`.
pub(crate) fn object(request: Request) -> Result<Map<String, Value>, ApiError> {
    parse_object(&read_body(request)?)
}

fn read_body(request: Request) -> Result<Vec<u8>, ApiError> {
    request.body(MAX_BODY).map_err(|e| match e {
        BodyError::TooLarge => ApiError::new(
            413,
            "VALIDATION_VALUE_TOO_LONG",
            format!("the body is larger than {MAX_BODY} bytes"),
        ),
        BodyError::Unavailable => ApiError::new(400, "BAD_REQUEST", "the body could not be read"),
    })
}

fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::invalid("body", "must be a JSON object")),
        Err(e) => Err(ApiError::invalid("body", format!("is not JSON: {e}"))),
    }
}

/// The request's JSON object, or an empty one for an empty body (for actions whose fields
/// are all optional).
pub(crate) fn object_or_empty(request: Request) -> Result<Map<String, Value>, ApiError> {
    let bytes = read_body(request)?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    parse_object(&bytes)
}

/// A required string field.
pub(crate) fn string(body: &Map<String, Value>, field: &str) -> Result<String, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Err(ApiError::invalid(field, "Field is required")),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(ApiError::invalid(field, "must be a string")),
    }
}

/// An optional string field.
fn optional_string(body: &Map<String, Value>, field: &str) -> Result<Option<String>, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::invalid(field, "must be a string")),
    }
}

pub(crate) fn permission_name(p: Permission) -> &'static str {
    match p {
        Permission::Read => "read",
        Permission::Write => "write",
        Permission::Execute => "execute",
        Permission::Admin => "admin",
    }
}

fn permission(name: &str) -> Option<Permission> {
    [
        Permission::Read,
        Permission::Write,
        Permission::Execute,
        Permission::Admin,
    ]
    .into_iter()
    .find(|p| permission_name(*p) == name)
}

fn user_json(u: &User) -> Value {
    json!({
        "id": u.id,
        "username": u.username,
        "email": u.email,
        "permissions": u.permissions.iter().map(|p| permission_name(*p)).collect::<Vec<_>>(),
        "is_active": !u.disabled,
        "created_at": iso8601(u.created_at),
        "last_login": u.last_login.map(iso8601),
    })
}

pub(crate) fn user_error(e: UserError) -> ApiError {
    match e {
        UserError::InvalidCredentials => ApiError::new(
            401,
            "AUTH_INVALID_CREDENTIALS",
            "Invalid username or password.",
        ),
        UserError::AccountDisabled => {
            ApiError::new(401, "AUTH_ACCOUNT_DISABLED", "The account is disabled.")
        }
        UserError::Throttled(seconds) => ApiError {
            details: json!({
                "retry_after": seconds,
                "reset_at": timestamp(now_secs() + u64::from(seconds)),
            }),
            retry_after: Some(seconds),
            ..ApiError::new(
                429,
                "RATE_LIMIT_EXCEEDED",
                format!("Too many failed logins. Please try again in {seconds} s."),
            )
        },
        UserError::Forbidden(m) => ApiError::new(403, "AUTH_INSUFFICIENT_PERMISSIONS", m),
        UserError::NotFound => ApiError::new(404, "RESOURCE_NOT_FOUND", "User not found."),
        UserError::Conflict(m) => ApiError::new(409, "RESOURCE_ALREADY_EXISTS", m),
        UserError::Invalid(FieldIssue { field, issue }) => ApiError::invalid(&field, issue),
        UserError::Internal(m) => ApiError::new(500, "DATABASE_ERROR", m),
    }
}

/// The calling user, if it holds `needed`: 403 otherwise (the host checks again).
fn caller_with(needed: Permission) -> Result<UserInfo, ApiError> {
    let user = identity::user()
        .ok_or_else(|| ApiError::new(401, "AUTH_TOKEN_MISSING", "An access token is required."))?;
    if !user.permissions.contains(&needed) {
        return Err(ApiError::new(
            403,
            "AUTH_INSUFFICIENT_PERMISSIONS",
            format!("This needs the {} permission.", permission_name(needed)),
        ));
    }
    Ok(user)
}

fn token_json(issued: &Issued, with_user: bool) -> Value {
    let mut data = json!({
        "access_token": issued.access_token,
        "token_type": "bearer",
        "expires_in": issued.expires_in,
    });
    if with_user {
        data["user"] = json!({
            "id": issued.user.id,
            "username": issued.user.username,
            "email": issued.user.email,
        });
    }
    data
}

fn login(request: Request) -> Answer {
    let body = object(request)?;
    let username = string(&body, "username")?;
    let password = string(&body, "password")?;
    let issued = users::login(&username, &password).map_err(user_error)?;
    Ok((200, token_json(&issued, true)))
}

fn refresh() -> Answer {
    let issued = users::refresh().map_err(user_error)?;
    Ok((200, token_json(&issued, false)))
}

fn logout() -> Answer {
    users::logout().map_err(user_error)?;
    Ok((
        200,
        json!({ "message": "Logged out; the token is revoked." }),
    ))
}

fn create_user(request: Request) -> Answer {
    caller_with(Permission::Admin)?;
    let body = object(request)?;
    let username = string(&body, "username")?;
    let password = string(&body, "password")?;
    let email = optional_string(&body, "email")?;
    let permissions = match body.get("permissions") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_str().and_then(permission).ok_or_else(|| {
                    ApiError::invalid(
                        "permissions",
                        "each must be one of read, write, execute, admin",
                    )
                })
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(ApiError::invalid("permissions", "must be a list")),
    };
    let user = users::create(&NewUser {
        username,
        email,
        password,
        permissions,
    })
    .map_err(user_error)?;
    Ok((201, user_json(&user)))
}

/// A positive page query parameter, at most `max`.
fn page_param(request: &Request, name: &str, default: u64, max: u64) -> Result<u64, ApiError> {
    let Some(raw) = request.query(name) else {
        return Ok(default);
    };
    match raw.parse::<u64>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(ApiError::invalid(
            name,
            format!("must be a whole number from 1 to {max}"),
        )),
    }
}

fn list_users(request: &Request) -> Answer {
    caller_with(Permission::Admin)?;
    let page = page_param(request, "page", 1, u64::from(u32::MAX))?;
    let page_size = page_param(request, "page_size", DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)?;
    let all = users::list().map_err(user_error)?;
    let total = all.len() as u64;
    let pages = total.div_ceil(page_size);
    let items: Vec<Value> = all
        .iter()
        .skip(((page - 1) * page_size) as usize)
        .take(page_size as usize)
        .map(user_json)
        .collect();
    Ok((
        200,
        json!({
            "items": items,
            "total": total,
            "page": page,
            "page_size": page_size,
            "pages": pages,
            "has_next": page < pages,
            "has_previous": page > 1,
        }),
    ))
}

fn disable_user(id: &str) -> Answer {
    caller_with(Permission::Admin)?;
    let user = users::disable(id).map_err(user_error)?;
    Ok((200, user_json(&user)))
}

impl gantry_guest::websocket::Guest for WebUi {
    fn on_open(connection: gantry_guest::websocket::Connection) -> Result<(), (u16, String)> {
        let opened = ws::open(&connection);
        ws::keep();
        opened
    }

    fn on_message(message: gantry_guest::websocket::Message) {
        ws::message(message);
        ws::keep();
    }

    fn on_events(events: Vec<gantry_guest::websocket::Event>) {
        ws::events(events);
        ws::keep();
    }

    fn on_timer() {
        ws::timer();
        ws::keep();
    }

    fn on_close(_code: u16, _reason: String) {}
}

gantry_guest::bindings::export_handler!(WebUi);
gantry_guest::websocket_serving::export_websocket_handler!(WebUi);
