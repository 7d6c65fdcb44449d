//! A WebSocket-serving handler for the host's tests: a tiny line protocol over text messages,
//! each answered with text.
//!
//! - `auth TOKEN` — authenticate; answers `user ID` or `error …`;
//! - `echo TEXT` — answers `TEXT`;
//! - `count` — how many messages this instance has had (on a per-connection route, the
//!   connection's; on a per-call route, always 1);
//! - `keep TEXT` — keeps TEXT with the host (`kept` or `error …`); `keep-bytes N` keeps N
//!   bytes; `kept` — answers what was kept;
//! - `follow [SEQ]` — follow the tenant's events after SEQ (or from now): `following N`;
//! - `sub project ID` / `sub task ID` / `sub kind KIND` — subscribe: `subscribed` or `error …`;
//! - `timer MS` — `timer` arrives after MS ms;
//! - `burst N` — sends N messages at once (backpressure);
//! - `close CODE` — closes with CODE;
//! - `trap` — panics; `spin` — loops forever (the CPU deadline ends it).
//!
//! Events arrive as `event SEQ KIND`. A connection to a path ending in `/refuse` is refused in
//! `on-open` with 4403. Plain HTTP requests get 404.

use gantry_guest::handler::{Guest as HttpGuest, IncomingRequest, ResponseOutparam};
use gantry_guest::http;
use gantry_guest::websocket::{self, Connection, EventKind, Guest, Message, Topic};
use std::cell::Cell;

struct TestSocket;

thread_local! {
    static MESSAGES: Cell<u64> = const { Cell::new(0) };
}

fn send(text: &str) {
    let _ = websocket::send_text(text);
}

fn kind(name: &str) -> Option<EventKind> {
    Some(match name {
        "task.created" => EventKind::TaskCreated,
        "task.updated" => EventKind::TaskUpdated,
        "project.created" => EventKind::ProjectCreated,
        "system.alert" => EventKind::SystemAlert,
        _ => return None,
    })
}

fn kind_name(kind: EventKind) -> &'static str {
    match kind {
        EventKind::TaskCreated => "task.created",
        EventKind::TaskUpdated => "task.updated",
        EventKind::TaskCompleted => "task.completed",
        EventKind::TaskFailed => "task.failed",
        EventKind::ProjectCreated => "project.created",
        EventKind::ProjectUpdated => "project.updated",
        EventKind::SystemMaintenance => "system.maintenance",
        EventKind::SystemAlert => "system.alert",
        EventKind::CommandOutput => "command.output",
        EventKind::CommandFinished => "command.finished",
    }
}

impl Guest for TestSocket {
    fn on_open(connection: Connection) -> Result<(), (u16, String)> {
        if connection.path.ends_with("/refuse") {
            return Err((4403, "refused by the component".into()));
        }
        Ok(())
    }

    fn on_message(message: Message) {
        MESSAGES.with(|m| m.set(m.get() + 1));
        let Message::Text(text) = message else {
            send("binary");
            return;
        };
        let (command, rest) = text.split_once(' ').unwrap_or((text.as_str(), ""));
        match command {
            "auth" => match websocket::authenticate(rest) {
                Ok(user) => send(&format!("user {}", user.id)),
                Err(e) => send(&format!("error {e:?}")),
            },
            "echo" => send(rest),
            "keep" => match websocket::keep(rest.as_bytes()) {
                Ok(()) => send("kept"),
                Err(e) => send(&format!("error {e:?}")),
            },
            "keep-bytes" => match websocket::keep(&vec![b'k'; rest.parse().unwrap_or(0)]) {
                Ok(()) => send("kept"),
                Err(e) => send(&format!("error {e:?}")),
            },
            "kept" => send(&String::from_utf8_lossy(&websocket::kept())),
            "count" => send(&MESSAGES.with(Cell::get).to_string()),
            "follow" => match websocket::follow(rest.parse().ok()) {
                Ok(from) => send(&format!("following {from}")),
                Err(e) => send(&format!("error {e:?}")),
            },
            "sub" => {
                let (what, id) = rest.split_once(' ').unwrap_or((rest, ""));
                let topic = match what {
                    "project" => Some(Topic::Project(id.into())),
                    "task" => Some(Topic::Task(id.into())),
                    "kind" => kind(id).map(Topic::Kind),
                    _ => None,
                };
                match topic.map(|t| websocket::subscribe(&t)) {
                    Some(Ok(())) => send("subscribed"),
                    Some(Err(e)) => send(&format!("error {e:?}")),
                    None => send("error unknown topic"),
                }
            }
            "timer" => websocket::wake_after(rest.parse().unwrap_or(10)),
            "burst" => {
                for i in 0..rest.parse::<u32>().unwrap_or(0) {
                    if let Err(e) = websocket::send_text(&format!("burst {i} {}", "x".repeat(1000)))
                    {
                        // The host closes a consumer too slow to take what it is sent.
                        let _ = e;
                        return;
                    }
                }
            }
            "close" => websocket::close(rest.parse().unwrap_or(1000), "asked to close"),
            "trap" => panic!("asked to trap"),
            "spin" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            _ => send("error unknown command"),
        }
    }

    fn on_events(events: Vec<websocket::Event>) {
        for e in events {
            send(&format!("event {} {}", e.seq, kind_name(e.kind)));
        }
    }

    fn on_timer() {
        send("timer");
    }

    fn on_close(_code: u16, _reason: String) {}
}

impl HttpGuest for TestSocket {
    fn handle(_request: IncomingRequest, out: ResponseOutparam) {
        http::respond(out, 404, "text/plain", b"connect with a WebSocket");
    }
}

gantry_guest::bindings::export_handler!(TestSocket);
gantry_guest::websocket_serving::export_websocket_handler!(TestSocket);
