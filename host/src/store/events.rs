//! The rows of the event bus: each tenant's events in the order they happened, numbered by a
//! sequence of the tenant's own. `crate::events` owns their meaning; this is what the store
//! keeps and how it is asked.

use super::StoreResult;
use std::fmt;

stored_names! {
    /// What an event says happened. The first eight are the Web UI API document's webhook
    /// events; `command.*` carry a command's output to its watchers.
    EventKind {
        /// A task was created.
        TaskCreated => "task.created",
        /// A task changed: fields, status, queue or progress.
        TaskUpdated => "task.updated",
        /// A task's run ended well.
        TaskCompleted => "task.completed",
        /// A task's run failed (or timed out, or was interrupted with no retry left).
        TaskFailed => "task.failed",
        /// A project was created (or cloned).
        ProjectCreated => "project.created",
        /// A project changed (or was deleted).
        ProjectUpdated => "project.updated",
        /// Maintenance of the system is announced.
        SystemMaintenance => "system.maintenance",
        /// Something the tenant should know went wrong.
        SystemAlert => "system.alert",
        /// A line of a command's output.
        CommandOutput => "command.output",
        /// A command ended.
        CommandFinished => "command.finished",
    }
}

impl EventKind {
    /// The document's eight webhook events (not `command.*`, whose volume is a stream's).
    pub const WEBHOOK: &'static [EventKind] = &[
        EventKind::TaskCreated,
        EventKind::TaskUpdated,
        EventKind::TaskCompleted,
        EventKind::TaskFailed,
        EventKind::ProjectCreated,
        EventKind::ProjectUpdated,
        EventKind::SystemMaintenance,
        EventKind::SystemAlert,
    ];
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRow {
    /// Its place among every tenant's events (increasing; for durable consumers).
    pub id: i64,
    /// The tenant it belongs to.
    pub tenant: String,
    /// Its place among its tenant's events: 1, 2, 3, … with no gap and never reused.
    pub seq: u64,
    /// What happened.
    pub kind: EventKind,
    /// When, in ms since the epoch.
    pub at: i64,
    /// The project it concerns, if any.
    pub project_id: Option<String>,
    /// The task it concerns, if any.
    pub task_id: Option<String>,
    /// The command it concerns, if any.
    pub command_id: Option<String>,
    /// Its `data` object, as JSON text.
    pub data: String,
}

/// An event to append.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEventRow<'a> {
    /// What happened.
    pub kind: EventKind,
    /// When, in ms since the epoch.
    pub at: i64,
    /// The project it concerns, if any.
    pub project_id: Option<&'a str>,
    /// The task it concerns, if any.
    pub task_id: Option<&'a str>,
    /// The command it concerns, if any.
    pub command_id: Option<&'a str>,
    /// Its `data` object, as JSON text.
    pub data: &'a str,
}

/// The event bus's log. Appends number each tenant's events without a gap; reads take the
/// tenant (or, for durable consumers that serve every tenant, the global id).
#[async_trait::async_trait]
pub trait EventStore: Send + Sync {
    /// Append `events` to `tenant`'s log in one transaction, with consecutive sequence
    /// numbers: each one's global id and sequence number, in order.
    async fn append_bus_events(
        &self,
        tenant: &str,
        events: &[NewEventRow<'_>],
    ) -> StoreResult<Vec<(i64, u64)>>;
    /// `tenant`'s events with a sequence number above `after`, oldest first, at most `limit`.
    async fn events_after(
        &self,
        tenant: &str,
        after: u64,
        limit: u32,
    ) -> StoreResult<Vec<EventRow>>;
    /// Every tenant's events with a global id above `after_id`, oldest first, at most `limit`.
    async fn events_since(&self, after_id: i64, limit: u32) -> StoreResult<Vec<EventRow>>;
    /// The newest global id (0 when there is none).
    async fn last_event_id(&self) -> StoreResult<i64>;
    /// `tenant`'s newest sequence number (0 when it has had none).
    async fn event_head(&self, tenant: &str) -> StoreResult<u64>;
    /// `tenant`'s oldest kept sequence number, if any is kept.
    async fn oldest_event(&self, tenant: &str) -> StoreResult<Option<u64>>;
    /// Forget events older than `before` (ms), at most `limit` of them; how many went.
    async fn drop_events_before(&self, before: i64, limit: u32) -> StoreResult<u64>;
}

impl fmt::Display for EventRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} #{} of {}", self.kind, self.seq, self.tenant)
    }
}
