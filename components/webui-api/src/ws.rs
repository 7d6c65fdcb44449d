//! `/ws/{session_id}`: the document's WebSocket protocol. The route gives every call a fresh
//! instance (`socket_instance = "per-call"`), so an idle connection holds none: the
//! connection's state ([`Conn`]) is read from the host (`websocket.kept`) on a call's first
//! use and kept there again when the call changed it ([`keep`]). The host does the framing,
//! keepalive, limits and backpressure, checks the token and scopes everything to the caller's
//! tenant (`gantry:plugin/websocket`); this module speaks the protocol.
//!
//! Client messages: `authenticate` (first, within the host's deadline; with an added
//! `resume_from`, the last `event_id` the client saw), `subscribe` / `unsubscribe` (channels
//! `project_updates` + `project_id`, `task_updates` + `task_id`, `queue_status`, `system`),
//! `execute_task`, `get_metrics`, `ping`. Server messages: `authenticated`, `subscribed`,
//! `unsubscribed` (additions), `task_update`, `task_completed`, `project_update` (an addition),
//! `command_output`, `command_completed` (an addition), `queue_status`, `performance_data`,
//! `notification`, `error`, `pong`. Every message that comes from an event carries its
//! `event_id`.

use crate::{ApiError, now_ms, queues, timestamp_ms};
use gantry_guest::host_info;
use gantry_guest::websocket::{self, Connection, Event, EventKind, Message, SocketError, Topic};
use gantry_guest::work_sessions::{self, WorkSessionStatus};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::cell::RefCell;

/// How often at most a `queue_status` subscriber is sent the queues, in ms.
const QUEUE_STATUS_EVERY_MS: u32 = 1000;

/// What a connection remembers between calls, kept with the host as JSON.
#[derive(Default, Serialize, Deserialize)]
struct Conn {
    session_id: String,
    /// The first message authenticated the connection.
    authenticated: bool,
    queue_status: bool,
    /// A queue snapshot is due at the next timer.
    queue_dirty: bool,
    timer_set: bool,
    /// The projects (`true`) and tasks (`false`) subscribed to, to tell a queue subscriber's
    /// task events from those it follows.
    followed: Vec<(bool, String)>,
    /// The `resume_from` of `authenticate`, followed from once the first subscription is in.
    pending_resume: Option<u64>,
}

/// This call's view of the connection: the state and the bytes it was read from.
struct Loaded {
    conn: Conn,
    kept: Vec<u8>,
}

thread_local! {
    static CONN: RefCell<Option<Loaded>> = const { RefCell::new(None) };
}

fn with<T>(f: impl FnOnce(&mut Conn) -> T) -> T {
    CONN.with(|c| {
        let mut c = c.borrow_mut();
        let loaded = c.get_or_insert_with(|| {
            let kept = websocket::kept();
            Loaded {
                conn: serde_json::from_slice(&kept).unwrap_or_default(),
                kept,
            }
        });
        f(&mut loaded.conn)
    })
}

/// Keep the connection's state with the host if this call changed it; every entry point ends
/// with this. The state is a few identifiers and at most the host's topics' worth of
/// followed ids, well inside what a connection may keep.
pub fn keep() {
    CONN.with(|c| {
        if let Some(loaded) = c.borrow_mut().as_mut() {
            let now = serde_json::to_vec(&loaded.conn).unwrap_or_default();
            if now != loaded.kept {
                match websocket::keep(&now) {
                    Ok(()) => loaded.kept = now,
                    // The earlier state stays with the host; say so (stderr reaches gantry's
                    // log) rather than drift silently.
                    Err(e) => eprintln!(
                        "the connection's state ({} bytes) was not kept: {e:?}",
                        now.len()
                    ),
                }
            }
        }
    });
}

fn send(kind: &str, data: Value) {
    send_value(json!({ "type": kind, "data": data, "timestamp": timestamp_ms(now_ms()) }));
}

fn send_value(message: Value) {
    // A send fails only when the connection is closing; the host then ends it.
    let _ = websocket::send_text(&message.to_string());
}

fn send_error(code: &str, message: &str, details: Value) {
    let mut data = json!({ "code": code, "message": message });
    if let (Some(d), Value::Object(extra)) = (data.as_object_mut(), details) {
        d.extend(extra);
    }
    send("error", data);
}

fn api_error(e: ApiError) {
    send_error(e.code, &e.message, e.details);
}

/// `on-open`: the path names the session the connection belongs to.
pub fn open(connection: &Connection) -> Result<(), (u16, String)> {
    let session = connection
        .path
        .strip_prefix("/ws/")
        .filter(|s| {
            !s.is_empty()
                && s.len() <= 128
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        })
        .ok_or((4404, "connect to /ws/{session_id}".to_string()))?;
    with(|c| c.session_id = session.to_string());
    Ok(())
}

/// `on-message`.
pub fn message(message: Message) {
    let Message::Text(text) = message else {
        send_error("VALIDATION_ERROR", "messages are JSON text", json!({}));
        return;
    };
    let body = match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(body)) => body,
        _ => {
            send_error(
                "VALIDATION_ERROR",
                "a message is a JSON object with a `type`",
                json!({}),
            );
            return;
        }
    };
    let kind = body.get("type").and_then(Value::as_str).unwrap_or_default();
    let authenticated = with(|c| c.authenticated);
    if !authenticated {
        if kind == "authenticate" {
            authenticate(&body);
        } else {
            send_error(
                "AUTH_TOKEN_MISSING",
                "the first message must be {\"type\":\"authenticate\",\"token\":…}",
                json!({}),
            );
            websocket::close(4401, "authentication required");
        }
        return;
    }
    match kind {
        "authenticate" => send_error(
            "VALIDATION_ERROR",
            "the connection is already authenticated",
            json!({}),
        ),
        "ping" => {
            let stamp = body
                .get("timestamp")
                .cloned()
                .filter(Value::is_number)
                .unwrap_or_else(|| json!(now_ms()));
            send_value(json!({ "type": "pong", "timestamp": stamp }));
        }
        "subscribe" => subscribe(&body, true),
        "unsubscribe" => subscribe(&body, false),
        "execute_task" => execute(&body),
        "get_metrics" => metrics(&body),
        other => send_error(
            "VALIDATION_ERROR",
            &format!("unknown message type {other:?}"),
            json!({ "field": "type" }),
        ),
    }
}

fn authenticate(body: &Map<String, Value>) {
    let Some(token) = body.get("token").and_then(Value::as_str) else {
        send_error("AUTH_TOKEN_MISSING", "`token` is required", json!({}));
        websocket::close(4401, "authentication required");
        return;
    };
    let resume_from = match body.get("resume_from") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(n) => Some(n),
            None => {
                send_error(
                    "VALIDATION_ERROR",
                    "`resume_from` is the last event_id seen, a whole number",
                    json!({ "field": "resume_from" }),
                );
                return;
            }
        },
    };
    let user = match websocket::authenticate(token) {
        Ok(user) => user,
        Err(SocketError::TooManyConnections(cap)) => {
            send_error(
                "WEBSOCKET_CONNECTION_FAILED",
                &format!(
                    "at most {cap} connections are open at once for this user (or its tenant)"
                ),
                json!({ "limit": cap }),
            );
            return;
        }
        Err(SocketError::BadToken(why)) => {
            send_error("AUTH_TOKEN_INVALID", &why, json!({}));
            websocket::close(4401, "authentication failed");
            return;
        }
        Err(e) => {
            send_error("WEBSOCKET_CONNECTION_FAILED", &format!("{e:?}"), json!({}));
            websocket::close(4401, "authentication failed");
            return;
        }
    };
    // The connection belongs to one of the user's working sessions (`/api/sessions`): an
    // unknown or another user's session is refused like a bad token's connection would be.
    let session_id = with(|c| c.session_id.clone());
    match work_sessions::get(&session_id) {
        Ok(s) if s.status == WorkSessionStatus::Active => {}
        Ok(_) => {
            send_error(
                "SESSION_EXPIRED",
                "the session expired; start a new one with POST /api/sessions/",
                json!({ "session_id": session_id }),
            );
            websocket::close(4404, "session expired");
            return;
        }
        Err(e) => {
            let e = crate::sessions::error(e);
            let code = if e.status == 404 {
                "SESSION_NOT_FOUND"
            } else {
                e.code
            };
            send_error(code, &e.message, json!({ "session_id": session_id }));
            websocket::close(4404, "no such session");
            return;
        }
    }
    // Commands the user runs with `stream_output` come here as `command_output`.
    let _ = websocket::subscribe(&Topic::MyCommands);
    // A client resuming names its subscriptions again after this; what it missed is replayed
    // from its first subscription on, so none of it passes before the topics are known.
    let followed = match resume_from {
        Some(from) => from,
        None => match start_following(None) {
            Some(from) => from,
            None => return,
        },
    };
    let session_id = with(|c| {
        c.authenticated = true;
        c.pending_resume = resume_from;
        c.session_id.clone()
    });
    send(
        "authenticated",
        json!({
            "user_id": user.id,
            "username": user.username,
            "session_id": session_id,
            "event_id": followed,
        }),
    );
}

/// Follow the tenant's events after `from` (or from now); a resume from what is no longer
/// kept is said, never a silent gap, and follows from now.
fn start_following(from: Option<u64>) -> Option<u64> {
    match websocket::follow(from) {
        Ok(from) => Some(from),
        Err(SocketError::Gap(oldest)) => {
            send_error(
                "RESUME_GAP",
                "events after resume_from are no longer kept; reload the state you show",
                json!({ "oldest_event_id": oldest }),
            );
            websocket::follow(None).ok()
        }
        Err(e) => {
            send_error("WEBSOCKET_CONNECTION_FAILED", &format!("{e:?}"), json!({}));
            None
        }
    }
}

fn subscribe(body: &Map<String, Value>, on: bool) {
    let channel = body
        .get("channel")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let id = |field: &str| {
        body.get(field)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let topics: Vec<Topic> = match channel {
        "project_updates" => match id("project_id") {
            Some(p) => vec![Topic::Project(p)],
            None => return missing("project_id"),
        },
        "task_updates" => match id("task_id") {
            Some(t) => vec![Topic::Task(t)],
            None => return missing("task_id"),
        },
        "queue_status" => vec![
            Topic::Kind(EventKind::TaskCreated),
            Topic::Kind(EventKind::TaskUpdated),
            Topic::Kind(EventKind::TaskCompleted),
            Topic::Kind(EventKind::TaskFailed),
        ],
        "system" => vec![
            Topic::Kind(EventKind::SystemAlert),
            Topic::Kind(EventKind::SystemMaintenance),
        ],
        _ => {
            send_error(
                "VALIDATION_ERROR",
                "`channel` is one of project_updates, task_updates, queue_status, system",
                json!({ "field": "channel" }),
            );
            return;
        }
    };
    for topic in &topics {
        if on {
            if let Err(e) = websocket::subscribe(topic) {
                let (code, message) = match (e, channel) {
                    (SocketError::NotFound, "project_updates") => {
                        ("PROJECT_NOT_FOUND", "Project not found.")
                    }
                    (SocketError::NotFound, _) => ("TASK_NOT_FOUND", "Task not found."),
                    _ => ("WEBSOCKET_CONNECTION_FAILED", "the subscription failed"),
                };
                send_error(code, message, json!({}));
                return;
            }
        } else {
            websocket::unsubscribe(topic);
        }
    }
    let followed = match channel {
        "project_updates" => id("project_id").map(|p| (true, p)),
        "task_updates" => id("task_id").map(|t| (false, t)),
        _ => None,
    };
    with(|c| {
        if channel == "queue_status" {
            c.queue_status = on;
        }
        if let Some(f) = followed {
            c.followed.retain(|x| *x != f);
            if on {
                c.followed.push(f);
            }
        }
    });
    let mut data = json!({ "channel": channel });
    for field in ["project_id", "task_id"] {
        if let Some(v) = id(field) {
            data[field] = json!(v);
        }
    }
    send(if on { "subscribed" } else { "unsubscribed" }, data);
    if on && let Some(from) = with(|c| c.pending_resume.take()) {
        start_following(Some(from));
    }
    if on && channel == "queue_status" {
        queue_status();
    }
}

fn missing(field: &str) {
    send_error(
        "VALIDATION_REQUIRED_FIELD",
        &format!("`{field}` is required for this channel"),
        json!({ "field": field }),
    );
}

fn execute(body: &Map<String, Value>) {
    let Some(task_id) = body.get("task_id").and_then(Value::as_str) else {
        return missing("task_id");
    };
    let queue = match body.get("priority").and_then(Value::as_str) {
        None => gantry_guest::projects::QueueName::Normal,
        Some(p) => match queues::queue("priority", p) {
            Ok(q) => q,
            Err(e) => return api_error(e),
        },
    };
    match queues::execute_task(task_id, queue, None, 0) {
        Ok(queued) => {
            // The connection's session keeps the execution in its history.
            let session_id = with(|c| c.session_id.clone());
            let mut data = queues::queued_json(&queued);
            // A `task_update` carries the task's progress, as the bus's do: the queue may
            // already have started it (`running`) by the time this answer is made.
            data["progress_percentage"] = json!(queued.task.progress);
            if let Err(e) = work_sessions::record_task_executed(&session_id, task_id) {
                data["session_error"] = json!(crate::sessions::error(e).message);
            }
            send("task_update", data);
        }
        Err(e) => {
            let mut e = e;
            if let Value::Object(d) = &mut e.details {
                d.insert("task_id".into(), json!(task_id));
            }
            api_error(e)
        }
    }
}

fn queue_status() {
    match queues::status() {
        Ok((_, data)) => send("queue_status", data),
        Err(e) => api_error(e),
    }
}

fn metrics(body: &Map<String, Value>) {
    let wanted: Vec<&str> = match body.get("metrics").and_then(Value::as_array) {
        Some(list) => list.iter().filter_map(Value::as_str).collect(),
        None => vec!["performance"],
    };
    for metric in wanted {
        match metric {
            "performance" => performance(),
            "queue_status" => queue_status(),
            "system_health" => {
                let info = host_info::info();
                let check = host_info::check_store();
                send(
                    "system_health",
                    json!({
                        "status": if check.available { "healthy" } else { "unhealthy" },
                        "uptime": info.uptime_ms / 1000,
                        "database": {
                            "status": if check.available { "healthy" } else { "unhealthy" },
                            "response_time": check.response_ms,
                        },
                    }),
                );
            }
            other => send_error(
                "VALIDATION_ERROR",
                &format!("unknown metric {other:?}: performance, queue_status or system_health"),
                json!({ "field": "metrics" }),
            ),
        }
    }
}

/// `performance_data`: the node's CPU and memory, its open connections, and the caller's
/// tasks per minute and queue sizes, all measured now.
fn performance() {
    let load = host_info::node_load();
    let report = gantry_guest::projects::report_queues(now_ms() - 60_000);
    let (per_minute, sizes) = match &report {
        Ok(r) => {
            let mut sizes = Map::new();
            for q in &r.queues {
                sizes.insert(queues::queue_short_name(q.name).into(), json!(q.waiting));
            }
            (json!(r.completed as f64), Value::Object(sizes))
        }
        Err(_) => (Value::Null, Value::Null),
    };
    send(
        "performance_data",
        json!({
            "cpu_usage": load.cpu_usage,
            "memory_usage": load.memory_usage,
            "active_connections": load.websocket_connections,
            "tasks_per_minute": per_minute,
            "queue_sizes": sizes,
        }),
    );
}

/// `on-events`: each as the document's message, with its `event_id`.
pub fn events(events: Vec<Event>) {
    let queue_status = with(|c| c.queue_status);
    for e in events {
        let data: Value = serde_json::from_str(&e.data).unwrap_or_else(|_| json!({}));
        let at = timestamp_ms(e.at);
        let message = match e.kind {
            EventKind::TaskCreated | EventKind::TaskUpdated => Some((
                "task_update",
                json!({
                    "task_id": data["task_id"],
                    "project_id": data["project_id"],
                    "status": data["status"],
                    "progress_percentage": data["progress_percentage"],
                    "updated_at": data["updated_at"],
                }),
            )),
            EventKind::TaskCompleted | EventKind::TaskFailed => Some((
                "task_completed",
                json!({
                    "task_id": data["task_id"],
                    "project_id": data["project_id"],
                    "status": data["status"],
                    "completed_at": data["completed_at"],
                    "duration": data["duration"],
                    "exit_code": data["exit_code"],
                }),
            )),
            EventKind::ProjectCreated | EventKind::ProjectUpdated => {
                Some(("project_update", data.clone()))
            }
            EventKind::SystemAlert | EventKind::SystemMaintenance => Some((
                "notification",
                json!({
                    "level": data.get("level").cloned().unwrap_or(json!("info")),
                    "title": data["title"],
                    "message": data["message"],
                    "actions": [{ "label": "Dismiss", "action": "dismiss" }],
                }),
            )),
            EventKind::CommandOutput => Some(("command_output", data.clone())),
            EventKind::CommandFinished => Some(("command_completed", data.clone())),
        };
        let task_event = matches!(
            e.kind,
            EventKind::TaskCreated
                | EventKind::TaskUpdated
                | EventKind::TaskCompleted
                | EventKind::TaskFailed
        );
        // Queue subscribers follow every task event for the snapshot alone; the task's own
        // message goes to those who follow the task or its project (the host sends only what
        // some topic follows, so a queue-only subscriber's task events are not theirs to show).
        if let Some((kind, data)) = message
            && (!task_event || !queue_status || follows_task(&e))
        {
            send_value(json!({ "type": kind, "data": data, "timestamp": at, "event_id": e.seq }));
        }
        if task_event && queue_status {
            with(|c| c.queue_dirty = true);
        }
    }
    let arm = with(|c| {
        let arm = c.queue_dirty && !c.timer_set;
        if arm {
            c.timer_set = true;
        }
        arm
    });
    if arm {
        websocket::wake_after(QUEUE_STATUS_EVERY_MS);
    }
}

/// Whether the connection follows `e`'s task or project itself (besides the queues).
fn follows_task(e: &Event) -> bool {
    with(|c| {
        c.followed.iter().any(|f| {
            Some(&f.1)
                == if f.0 {
                    e.project_id.as_ref()
                } else {
                    e.task_id.as_ref()
                }
        })
    })
}

/// `on-timer`: a throttled queue snapshot.
pub fn timer() {
    let due = with(|c| {
        c.timer_set = false;
        std::mem::take(&mut c.queue_dirty) && c.queue_status
    });
    if due {
        queue_status();
    }
}
