//! Persistence: workspaces, tasks and their event logs, behind one trait so that a shared
//! PostgreSQL can be a second implementation. The default is [`Sqlite`]: one file in the data
//! directory, in WAL mode, with versioned migrations.

pub mod codec;
mod sqlite;

pub use sqlite::Sqlite;

use crate::contract::{EventBody, PromptRequest, TaskSummary};

use anyhow::Result;
use serde::Serialize;
use std::fmt;
use std::str::FromStr;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A workspace row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkspaceRecord {
    /// Its id (random, unguessable).
    pub id: String,
    /// The owning tenant.
    pub tenant: String,
    /// A name for people.
    pub name: String,
    /// Creation time, ms since the epoch.
    pub created_at: i64,
    /// An operator-allowed directory outside the data directory that this workspace is
    /// (attached, never deleted by gantry); `None` for gantry's own directories.
    pub path: Option<String>,
}

pub use crate::contract::TaskState;

impl TaskState {
    /// Whether the task has ended.
    pub fn is_terminal(self) -> bool {
        !matches!(self, TaskState::Pending | TaskState::Running)
    }

    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        codec::task_state_name(self)
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TaskState {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        codec::task_state(s)
    }
}

impl Serialize for TaskState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A task row.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRecord {
    /// Its id.
    pub id: String,
    /// The owning tenant.
    pub tenant: String,
    /// The workspace it runs in.
    pub workspace_id: String,
    /// The backend plugin that runs it.
    pub backend: String,
    /// The request of its main run.
    pub request: PromptRequest,
    /// Its state.
    pub state: TaskState,
    /// When it was created, started and finished (ms since the epoch).
    pub created_at: i64,
    /// When its process started.
    pub started_at: Option<i64>,
    /// When it ended.
    pub finished_at: Option<i64>,
    /// The process's exit code, if it exited.
    pub exit_code: Option<i32>,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// How it ended: the adapter's summary and the model proxy's counts.
    pub summary: Option<TaskSummary>,
    /// The last sequence number of its event log (0: none yet).
    pub last_seq: u64,
    /// How many output lines (stdout and stderr events) its log holds.
    pub output_lines: u64,
}

/// One entry of a task's event log.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    /// Position in the task's log, from 1, without gaps.
    pub seq: u64,
    /// What it holds.
    pub body: EventBody,
    /// When it was recorded (ms since the epoch).
    pub at: i64,
}

impl EventRecord {
    /// Whether it is an output line of the process.
    pub fn is_output(&self) -> bool {
        matches!(self.body, EventBody::Output(_))
    }
}

/// A session row: a conversation a later prompt may resume.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionRecord {
    /// Its id.
    pub id: String,
    /// The owning tenant.
    pub tenant: String,
    /// The backend plugin it talks to.
    pub backend: String,
    /// `active`, `completed`, `error` or `paused`.
    pub status: String,
    /// The workspace its runs use.
    pub workspace_id: Option<String>,
    /// Creation time, ms since the epoch.
    pub created_at: i64,
    /// Last change, ms since the epoch.
    pub updated_at: i64,
    /// The surface's own fields (a JSON object).
    pub data: serde_json::Value,
}

/// Which sessions to list, newest first.
#[derive(Debug, Clone, Default)]
pub struct SessionQuery {
    /// Only this backend's.
    pub backend: Option<String>,
    /// Only those with this status.
    pub status: Option<String>,
    /// At most this many.
    pub limit: u32,
    /// After skipping this many.
    pub offset: u32,
}

/// One page of sessions.
#[derive(Debug, Clone)]
pub struct SessionPage {
    /// The page.
    pub sessions: Vec<SessionRecord>,
    /// How many match, over all pages.
    pub total: u64,
}

/// What gantry persists. Every read takes the tenant, so no query can cross tenants.
pub trait Store: Send + Sync + fmt::Debug + 'static {
    /// Add a workspace.
    fn create_workspace(&self, ws: &WorkspaceRecord) -> Result<()>;
    /// A tenant's workspaces, oldest first.
    fn list_workspaces(&self, tenant: &str) -> Result<Vec<WorkspaceRecord>>;
    /// One of a tenant's workspaces.
    fn get_workspace(&self, tenant: &str, id: &str) -> Result<Option<WorkspaceRecord>>;
    /// Remove a workspace row (and its tasks and events); whether it existed.
    fn delete_workspace(&self, tenant: &str, id: &str) -> Result<bool>;
    /// Add a task.
    fn insert_task(&self, task: &TaskRecord) -> Result<()>;
    /// Write a task's state, times, exit code, error and summary.
    fn update_task(&self, task: &TaskRecord) -> Result<()>;
    /// One of a tenant's tasks.
    fn get_task(&self, tenant: &str, id: &str) -> Result<Option<TaskRecord>>;
    /// A tenant's tasks, oldest first, optionally of one workspace.
    fn list_tasks(&self, tenant: &str, workspace: Option<&str>) -> Result<Vec<TaskRecord>>;
    /// Append events (their `seq`s follow the task's `last_seq`) in one transaction.
    fn append_events(&self, task_id: &str, events: &[EventRecord]) -> Result<()>;
    /// Up to `limit` events of a task from `from_seq` on.
    fn read_events(&self, task_id: &str, from_seq: u64, limit: usize) -> Result<Vec<EventRecord>>;
    /// Mark every pending or running task interrupted (at startup); their ids.
    fn interrupt_unfinished(&self, at: i64) -> Result<Vec<String>>;
    /// Add a session.
    fn create_session(&self, session: &SessionRecord) -> Result<()>;
    /// One of a tenant's sessions.
    fn get_session(&self, tenant: &str, id: &str) -> Result<Option<SessionRecord>>;
    /// Write a session's status, workspace, time and data; whether it existed.
    fn update_session(&self, session: &SessionRecord) -> Result<bool>;
    /// A page of a tenant's sessions, newest first.
    fn list_sessions(&self, tenant: &str, query: &SessionQuery) -> Result<SessionPage>;
    /// Remove a session; whether it existed.
    fn delete_session(&self, tenant: &str, id: &str) -> Result<bool>;
    /// Sessions over all tenants (a health figure); an error when the store cannot take a
    /// write.
    fn count_sessions(&self) -> Result<u64>;
}
