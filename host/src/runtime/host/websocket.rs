//! `gantry:plugin/websocket`: the calling connection, for a component serving one. The host
//! keeps here what the connection's loop (`http::websocket`) acts on between calls: the queue
//! to the client, who authenticated, where in the tenant's events the connection is and which
//! of them it follows, a timer, and a close asked for.

use super::WebSocketView;
use super::bindings::gantry::plugin::identity::UserInfo;
use super::bindings::gantry::plugin::websocket as wit;
use crate::events::{Event, EventKind};
use crate::tenants::TenantId;
use crate::users::Principal;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Which cap an authenticated connection would have gone over, and the cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverConnections {
    /// The user already has this many open.
    User(u32),
    /// The user's tenant (its users and keys together) already has this many open.
    Tenant(u32),
}

impl OverConnections {
    /// The cap that was reached.
    pub fn cap(self) -> u32 {
        match self {
            OverConnections::User(cap) | OverConnections::Tenant(cap) => cap,
        }
    }

    /// Why the connection is closed, for its close frame.
    pub fn reason(self) -> String {
        match self {
            OverConnections::User(cap) => format!("at most {cap} open connections per user"),
            OverConnections::Tenant(cap) => format!("at most {cap} open connections per tenant"),
        }
    }
}

/// Checks a connection's token, and holds each user and tenant to its share of connections.
#[async_trait::async_trait]
pub trait SocketAuth: Send + Sync {
    /// The tenant and user a token (an access token or an API key) names, or why not.
    async fn authenticate(&self, token: &str) -> Result<(TenantId, Principal), String>;

    /// Count one more open connection for `who` and its tenant; the counts drop with the
    /// returned guard. Refused, counting nothing, when either is at its cap.
    fn admit(&self, who: &Principal) -> Result<Box<dyn Send + Sync>, OverConnections>;
}

/// What the connection follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topic {
    /// Events about one project (and its tasks).
    Project(String),
    /// Events about one task.
    Task(String),
    /// Every event of one kind.
    Kind(EventKind),
    /// The connection's user's commands.
    MyCommands,
}

impl Topic {
    /// Whether `event` is one this topic follows, for the connection's user `user_id`.
    pub fn matches(&self, event: &Event, user_id: Option<&str>) -> bool {
        match self {
            Topic::Project(id) => event.project_id.as_deref() == Some(id),
            Topic::Task(id) => event.task_id.as_deref() == Some(id),
            Topic::Kind(kind) => event.kind == *kind,
            Topic::MyCommands => {
                matches!(
                    event.kind,
                    EventKind::CommandOutput | EventKind::CommandFinished
                ) && user_id.is_some()
                    && event.data.get("user_id").and_then(|v| v.as_str()) == user_id
            }
        }
    }
}

/// A connection's state on the host side.
pub struct SocketHost {
    /// Text messages to the client, through its writer (bounded: backpressure).
    out: mpsc::Sender<String>,
    /// How long `send-text` waits for room before the client counts as too slow.
    send_wait: Duration,
    auth: Arc<dyn SocketAuth>,
    /// The user's connection slot, once authenticated.
    admitted: Option<Box<dyn Send + Sync>>,
    /// Set by `authenticate`.
    pub(crate) authenticated: bool,
    /// The last event seq handed to the component (or followed from), once following.
    pub(crate) cursor: Option<u64>,
    /// What it follows.
    pub(crate) topics: Vec<Topic>,
    /// When `on-timer` is due.
    pub(crate) wake_at: Option<tokio::time::Instant>,
    /// A close asked for (by the component, or by the host after a refusal). Messages sent
    /// before the call returns still go out first.
    pub(crate) closing: Option<(u16, String)>,
    /// The client stopped taking messages: every further send fails at once.
    stalled: bool,
    /// What the component kept for itself (`keep`), at most [`MAX_KEPT`] bytes.
    kept: Vec<u8>,
}

impl std::fmt::Debug for SocketHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketHost")
            .field("authenticated", &self.authenticated)
            .field("cursor", &self.cursor)
            .field("topics", &self.topics)
            .finish_non_exhaustive()
    }
}

impl SocketHost {
    /// A connection whose text messages go to `out`, a send waiting at most `send_wait`.
    pub fn new(out: mpsc::Sender<String>, send_wait: Duration, auth: Arc<dyn SocketAuth>) -> Self {
        SocketHost {
            out,
            send_wait,
            auth,
            admitted: None,
            authenticated: false,
            cursor: None,
            topics: Vec::new(),
            wake_at: None,
            closing: None,
            stalled: false,
            kept: Vec::new(),
        }
    }

    fn close(&mut self, code: u16, reason: &str) {
        if self.closing.is_none() {
            self.closing = Some((code, truncate_reason(reason)));
        }
    }
}

/// A close reason fits in a control frame: at most 123 bytes, cut at a character boundary.
pub fn truncate_reason(reason: &str) -> String {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_string()
}

pub(crate) fn event_kind(kind: EventKind) -> wit::EventKind {
    match kind {
        EventKind::TaskCreated => wit::EventKind::TaskCreated,
        EventKind::TaskUpdated => wit::EventKind::TaskUpdated,
        EventKind::TaskCompleted => wit::EventKind::TaskCompleted,
        EventKind::TaskFailed => wit::EventKind::TaskFailed,
        EventKind::ProjectCreated => wit::EventKind::ProjectCreated,
        EventKind::ProjectUpdated => wit::EventKind::ProjectUpdated,
        EventKind::SystemMaintenance => wit::EventKind::SystemMaintenance,
        EventKind::SystemAlert => wit::EventKind::SystemAlert,
        EventKind::CommandOutput => wit::EventKind::CommandOutput,
        EventKind::CommandFinished => wit::EventKind::CommandFinished,
    }
}

fn from_event_kind(kind: wit::EventKind) -> EventKind {
    match kind {
        wit::EventKind::TaskCreated => EventKind::TaskCreated,
        wit::EventKind::TaskUpdated => EventKind::TaskUpdated,
        wit::EventKind::TaskCompleted => EventKind::TaskCompleted,
        wit::EventKind::TaskFailed => EventKind::TaskFailed,
        wit::EventKind::ProjectCreated => EventKind::ProjectCreated,
        wit::EventKind::ProjectUpdated => EventKind::ProjectUpdated,
        wit::EventKind::SystemMaintenance => EventKind::SystemMaintenance,
        wit::EventKind::SystemAlert => EventKind::SystemAlert,
        wit::EventKind::CommandOutput => EventKind::CommandOutput,
        wit::EventKind::CommandFinished => EventKind::CommandFinished,
    }
}

/// An event as the component sees it.
pub(crate) fn wit_event(event: &Event) -> wit::Event {
    wit::Event {
        seq: event.seq,
        kind: event_kind(event.kind),
        at: event.at_ms,
        project_id: event.project_id.clone(),
        task_id: event.task_id.clone(),
        command_id: event.command_id.clone(),
        data: event.data.to_string(),
    }
}

fn topic(t: wit::Topic) -> Topic {
    match t {
        wit::Topic::Project(id) => Topic::Project(id),
        wit::Topic::Task(id) => Topic::Task(id),
        wit::Topic::Kind(kind) => Topic::Kind(from_event_kind(kind)),
        wit::Topic::MyCommands => Topic::MyCommands,
    }
}

impl WebSocketView<'_> {
    fn socket(&mut self) -> Result<&mut SocketHost, wit::SocketError> {
        self.socket.as_mut().ok_or(wit::SocketError::NotAConnection)
    }

    fn who(&self) -> Result<&Principal, wit::SocketError> {
        match (self.socket.as_ref(), self.user.as_ref()) {
            (Some(s), Some(user)) if s.authenticated => Ok(user),
            (None, _) => Err(wit::SocketError::NotAConnection),
            _ => Err(wit::SocketError::NotAuthenticated),
        }
    }
}

impl wit::Host for WebSocketView<'_> {
    async fn send_text(&mut self, text: String) -> Result<(), wit::SocketError> {
        let socket = self.socket()?;
        if socket.stalled {
            return Err(wit::SocketError::TooSlow);
        }
        match tokio::time::timeout(socket.send_wait, socket.out.send(text)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => {
                socket.close(1006, "closed");
                Err(wit::SocketError::Closed)
            }
            Err(_) => {
                socket.stalled = true;
                socket.closing = None;
                socket.close(
                    4408,
                    "too slow: messages piled up; reconnect and resume from the last event_id you received",
                );
                Err(wit::SocketError::TooSlow)
            }
        }
    }

    async fn close(&mut self, code: u16, reason: String) {
        if let Ok(socket) = self.socket() {
            // Codes a peer may send (RFC 6455 7.4): 1000, or the application's 4000-4999.
            let code = if code == 1000 || (4000..5000).contains(&code) {
                code
            } else {
                1000
            };
            socket.close(code, &reason);
        }
    }

    async fn authenticate(&mut self, token: String) -> Result<UserInfo, wit::SocketError> {
        let socket = self.socket()?;
        if socket.authenticated {
            return Err(wit::SocketError::NotAuthenticated);
        }
        let auth = socket.auth.clone();
        let (tenant, user) = auth
            .authenticate(&token)
            .await
            .map_err(wit::SocketError::BadToken)?;
        let slot = match auth.admit(&user) {
            Ok(slot) => slot,
            Err(over) => {
                socket.close(1008, &over.reason());
                return Err(wit::SocketError::TooManyConnections(over.cap()));
            }
        };
        socket.admitted = Some(slot);
        socket.authenticated = true;
        let info = super::identity::user_info(&user);
        *self.tenant = tenant.clone();
        self.bound.retarget(tenant);
        *self.user = Some(user);
        Ok(info)
    }

    async fn follow(&mut self, after: Option<u64>) -> Result<u64, wit::SocketError> {
        let tenant = self.who()?.tenant.clone();
        let events = &self.services.events;
        let from = match after {
            Some(after) => {
                // Asking for what retention dropped is an error the client can act on.
                match events.after(&tenant, after, 1).await {
                    // Something after it is kept: it is behind the head.
                    Ok(Ok(next)) if !next.is_empty() => after,
                    // Nothing after it: at the head, or (a cursor from elsewhere) past it.
                    Ok(Ok(_)) => after.min(events.head(&tenant).await.map_err(internal)?),
                    Ok(Err(gap)) => return Err(wit::SocketError::Gap(gap.oldest)),
                    Err(e) => return Err(internal(e)),
                }
            }
            None => events.head(&tenant).await.map_err(internal)?,
        };
        self.socket()?.cursor = Some(from);
        Ok(from)
    }

    async fn subscribe(&mut self, t: wit::Topic) -> Result<(), wit::SocketError> {
        let who = self.who()?.clone();
        let t = topic(t);
        let found = match &t {
            Topic::Project(id) => self.services.projects.get_project(&who, id).await.is_ok(),
            Topic::Task(id) => self.services.projects.get_task(&who, id).await.is_ok(),
            Topic::Kind(_) | Topic::MyCommands => true,
        };
        if !found {
            return Err(wit::SocketError::NotFound);
        }
        let socket = self.socket()?;
        if !socket.topics.contains(&t) {
            // A bound on the filter each event goes through.
            if socket.topics.len() >= MAX_TOPICS {
                return Err(wit::SocketError::NotFound);
            }
            socket.topics.push(t);
        }
        Ok(())
    }

    async fn unsubscribe(&mut self, t: wit::Topic) {
        let t = topic(t);
        if let Ok(socket) = self.socket() {
            socket.topics.retain(|x| *x != t);
        }
    }

    async fn keep(&mut self, state: Vec<u8>) -> Result<(), wit::KeepError> {
        let socket = self.socket().map_err(|_| wit::KeepError::NotAConnection)?;
        if state.len() > MAX_KEPT {
            return Err(wit::KeepError::TooLarge(MAX_KEPT as u32));
        }
        socket.kept = state;
        socket.kept.shrink_to_fit();
        Ok(())
    }

    async fn kept(&mut self) -> Vec<u8> {
        self.socket().map(|s| s.kept.clone()).unwrap_or_default()
    }

    async fn wake_after(&mut self, ms: u32) {
        if let Ok(socket) = self.socket() {
            socket.wake_at =
                Some(tokio::time::Instant::now() + Duration::from_millis(u64::from(ms)));
        }
    }
}

/// Topics one connection may follow at once.
const MAX_TOPICS: usize = 256;

/// What one connection's component may keep between calls (`keep`), in bytes: its state is
/// meant to be a few identifiers, and a thousand idle connections hold all of theirs.
pub const MAX_KEPT: usize = 16 * 1024;

fn internal(e: crate::store::StoreError) -> wit::SocketError {
    tracing::error!("reading events for a connection: {e}");
    wit::SocketError::Closed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventKind, data: serde_json::Value) -> Event {
        Event {
            id: 1,
            seq: 1,
            tenant: TenantId::new("a").unwrap(),
            kind,
            at_ms: 0,
            project_id: Some("p".into()),
            task_id: Some("t".into()),
            command_id: None,
            data,
        }
    }

    #[test]
    fn topics_match_their_events_and_commands_only_their_users() {
        let e = event(EventKind::TaskUpdated, serde_json::json!({}));
        assert!(Topic::Project("p".into()).matches(&e, None));
        assert!(!Topic::Project("q".into()).matches(&e, None));
        assert!(Topic::Task("t".into()).matches(&e, None));
        assert!(Topic::Kind(EventKind::TaskUpdated).matches(&e, None));
        assert!(!Topic::Kind(EventKind::TaskCreated).matches(&e, None));
        let out = event(
            EventKind::CommandOutput,
            serde_json::json!({"user_id": "u1"}),
        );
        assert!(Topic::MyCommands.matches(&out, Some("u1")));
        assert!(!Topic::MyCommands.matches(&out, Some("u2")));
        assert!(!Topic::MyCommands.matches(&out, None));
        assert!(!Topic::MyCommands.matches(&e, Some("u1")));
    }

    #[test]
    fn close_reasons_fit_a_control_frame() {
        assert_eq!(truncate_reason("short"), "short");
        let long = "é".repeat(100);
        let cut = truncate_reason(&long);
        assert!(cut.len() <= 123 && long.starts_with(&cut));
    }
}
