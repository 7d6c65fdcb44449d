//! Persistence: workspaces, tasks and their event logs, sessions and users, behind one trait so that a shared
//! PostgreSQL can be a second implementation. The default is [`Sqlite`]: one file in the data
//! directory, in WAL mode, with versioned migrations.

pub mod codec;
mod commands;
#[macro_use]
mod projects;
mod events;
mod postgres;
mod sqlite;
mod webhooks;
mod work_sessions;

pub use commands::*;
pub use events::*;
pub use projects::*;
pub use work_sessions::*;

pub use postgres::{Migrated, Postgres};
pub use sqlite::Sqlite;
pub use webhooks::*;

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
    /// The node that runs it (`None` on rows older than node leases).
    pub node: Option<String>,
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

/// Why a store operation failed, typed so that each caller can answer for it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The row is not there (for the caller's tenant).
    #[error("not found")]
    NotFound,
    /// The write conflicts with what is stored (a duplicate id or `seq`).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The store cannot answer now (locked, unreachable); worth retrying later.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// Anything else.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// The result of a store operation.
pub type StoreResult<T> = std::result::Result<T, StoreError>;

/// Workspace rows. Every read takes the tenant, so no query can cross tenants.
#[async_trait::async_trait]
pub trait WorkspaceStore: Send + Sync {
    /// Add a workspace.
    async fn create_workspace(&self, ws: &WorkspaceRecord) -> StoreResult<()>;
    /// A tenant's workspaces, oldest first.
    async fn list_workspaces(&self, tenant: &str) -> StoreResult<Vec<WorkspaceRecord>>;
    /// One of a tenant's workspaces.
    async fn get_workspace(&self, tenant: &str, id: &str) -> StoreResult<Option<WorkspaceRecord>>;
    /// Remove a workspace row (and its tasks and events); whether it existed. A task pending
    /// or running in it, on any node of the store, makes it a [`StoreError::Conflict`] that
    /// removes nothing: checked in the same statement, so no node deletes a workspace another
    /// node's task is working in.
    async fn delete_workspace(&self, tenant: &str, id: &str) -> StoreResult<bool>;
}

/// Task rows and their logs. A task's `last_seq` and `output_lines` follow its log: the store
/// keeps them as it appends, and nothing else writes them.
#[async_trait::async_trait]
pub trait TaskStore: Send + Sync {
    /// Add a task.
    async fn insert_task(&self, task: &TaskRecord) -> StoreResult<()>;
    /// Write a task's state, times, exit code, error and summary.
    async fn update_task(&self, task: &TaskRecord) -> StoreResult<()>;
    /// One of a tenant's tasks.
    async fn get_task(&self, tenant: &str, id: &str) -> StoreResult<Option<TaskRecord>>;
    /// A tenant's tasks, oldest first, optionally of one workspace.
    async fn list_tasks(
        &self,
        tenant: &str,
        workspace: Option<&str>,
    ) -> StoreResult<Vec<TaskRecord>>;
    /// Append events (their `seq`s follow the task's `last_seq`) in one transaction; a `seq`
    /// already logged is a [`StoreError::Conflict`] and appends nothing. With a `quota`, only
    /// the longest prefix of `events` that keeps the task's tenant within it is stored (the
    /// rest is dropped, not an error), judged against the tenant's stored output in the same
    /// transaction; without one, all of them. The tenant's stored output follows here too.
    async fn append_events(
        &self,
        task_id: &str,
        events: &[EventRecord],
        quota: Option<OutputQuota>,
    ) -> StoreResult<Appended>;
    /// Write a task's state (as [`TaskStore::update_task`]) and append `events` to its log (as
    /// [`TaskStore::append_events`], without a quota) in one transaction: a change of state
    /// and its log entry commit together.
    async fn update_task_and_append(
        &self,
        task: &TaskRecord,
        events: &[EventRecord],
    ) -> StoreResult<Appended>;
    /// Up to `limit` events of a task from `from_seq` on.
    async fn read_events(
        &self,
        task_id: &str,
        from_seq: u64,
        limit: usize,
    ) -> StoreResult<Vec<EventRecord>>;
}

/// How much task output a tenant keeps stored: its tasks' log entries, and their bytes as
/// stored (the kind and JSON of each entry, not the database's own overhead).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoredOutput {
    /// Log entries.
    pub events: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// Caps on a tenant's stored output; 0 is no cap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutputQuota {
    /// Log entries.
    pub max_events: u64,
    /// Bytes of log entries.
    pub max_bytes: u64,
}

impl OutputQuota {
    /// Whether `stored` plus one more entry of `bytes` stays within the caps.
    pub fn admits(&self, stored: StoredOutput, bytes: u64) -> bool {
        (self.max_events == 0 || stored.events < self.max_events)
            && (self.max_bytes == 0 || stored.bytes.saturating_add(bytes) <= self.max_bytes)
    }

    /// Whether `stored` is at or past a cap, so that no more output fits.
    pub fn is_reached(&self, stored: StoredOutput) -> bool {
        (self.max_events > 0 && stored.events >= self.max_events)
            || (self.max_bytes > 0 && stored.bytes >= self.max_bytes)
    }

    /// Whether there is any cap.
    pub fn is_capped(&self) -> bool {
        self.max_events > 0 || self.max_bytes > 0
    }
}

/// What an append stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Appended {
    /// How many of the events (a prefix) were stored.
    pub stored: usize,
    /// The tenant's stored output after the append.
    pub tenant: StoredOutput,
}

/// The questions of quotas and retention: how much each tenant stores, and removing what it no
/// longer keeps. Only finished tasks are ever removed, never a pending or running one.
#[async_trait::async_trait]
pub trait RetentionStore: Send + Sync {
    /// What `tenant`'s tasks store.
    async fn stored_output(&self, tenant: &str) -> StoreResult<StoredOutput>;
    /// What each tenant with stored output stores, by tenant.
    async fn stored_output_by_tenant(&self) -> StoreResult<Vec<(String, StoredOutput)>>;
    /// Delete `tenant`'s tasks (rows and logs) that finished before `before` (ms since the
    /// epoch); how many.
    async fn delete_finished_before(&self, tenant: &str, before: i64) -> StoreResult<u64>;
    /// Delete `tenant`'s tasks that finished before `finished_before`, oldest first, until it
    /// stores at most `max_bytes` (or none is left); how many.
    async fn trim_finished_to(
        &self,
        tenant: &str,
        max_bytes: u64,
        finished_before: i64,
    ) -> StoreResult<u64>;
    /// Give back the space deletions freed: the write-ahead log checkpointed and truncated,
    /// free pages released where the store can.
    async fn reclaim_space(&self) -> StoreResult<()>;
}

/// Session rows.
#[async_trait::async_trait]
pub trait SessionStore: Send + Sync {
    /// Add a session.
    async fn create_session(&self, session: &SessionRecord) -> StoreResult<()>;
    /// One of a tenant's sessions.
    async fn get_session(&self, tenant: &str, id: &str) -> StoreResult<Option<SessionRecord>>;
    /// Write a session's status, workspace, time and data; whether it existed.
    async fn update_session(&self, session: &SessionRecord) -> StoreResult<bool>;
    /// A page of a tenant's sessions, newest first.
    async fn list_sessions(&self, tenant: &str, query: &SessionQuery) -> StoreResult<SessionPage>;
    /// Remove a session; whether it existed.
    async fn delete_session(&self, tenant: &str, id: &str) -> StoreResult<bool>;
    /// Sessions over all tenants (a health figure); [`StoreError::Unavailable`] when the
    /// store cannot take a write.
    async fn count_sessions(&self) -> StoreResult<u64>;
}

/// A user row: someone who logs in with a password and acts as its tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// Its id (random).
    pub id: String,
    /// The tenant it acts as.
    pub tenant: String,
    /// Its login name, unique on the node (case-insensitively).
    pub username: String,
    /// An address for people, if given.
    pub email: Option<String>,
    /// The argon2id hash of its password, as a PHC string; never the password.
    pub password_hash: String,
    /// Its permissions by their stored names (`users::Permission` owns the mapping).
    pub permissions: Vec<String>,
    /// A disabled user can neither log in nor use a token it holds.
    pub disabled: bool,
    /// Creation time, ms since the epoch.
    pub created_at: i64,
    /// Its last successful login, ms since the epoch.
    pub last_login: Option<i64>,
    /// Bumped when its password changes or it is disabled; a token carries the generation it
    /// was issued in and is honoured only while that is still the user's.
    pub token_generation: i64,
}

/// Users and revoked tokens. Reads that reach one user by id take its tenant, so no query
/// crosses tenants; only a login looks a user up by its node-wide name.
#[async_trait::async_trait]
pub trait UserStore: Send + Sync {
    /// Add a user; a taken username is a [`StoreError::Conflict`].
    async fn create_user(&self, user: &UserRecord) -> StoreResult<()>;
    /// One of a tenant's users.
    async fn get_user(&self, tenant: &str, id: &str) -> StoreResult<Option<UserRecord>>;
    /// The user with this name, on the whole node (names compare case-insensitively).
    async fn find_user_by_name(&self, username: &str) -> StoreResult<Option<UserRecord>>;
    /// A tenant's users, oldest first.
    async fn list_users(&self, tenant: &str) -> StoreResult<Vec<UserRecord>>;
    /// Every user of the node, by tenant and then oldest first (for the operator's CLI).
    async fn list_all_users(&self) -> StoreResult<Vec<UserRecord>>;
    /// Write a user's email, password hash, permissions, disabled flag and `token_generation`;
    /// whether it existed.
    async fn update_user(&self, user: &UserRecord) -> StoreResult<bool>;
    /// Note a successful login.
    async fn record_login(&self, tenant: &str, id: &str, at: i64) -> StoreResult<()>;
    /// Refuse the token `jti` from now on; it is kept until `expires_at` (s since the epoch),
    /// after which the token is refused for its age anyway.
    async fn revoke_token(&self, jti: &str, expires_at: i64) -> StoreResult<()>;
    /// Whether `jti` was revoked.
    async fn is_token_revoked(&self, jti: &str) -> StoreResult<bool>;
    /// Forget revocations of tokens that expired before `now` (s since the epoch); how many.
    async fn prune_revoked_tokens(&self, now: i64) -> StoreResult<u64>;
    /// A user's preferences (a JSON object as text) and when they were set. The user may be
    /// an API key's service user, which has no row.
    async fn get_preferences(
        &self,
        tenant: &str,
        user_id: &str,
    ) -> StoreResult<Option<(String, i64)>>;
    /// Replace a user's preferences.
    async fn set_preferences(
        &self,
        tenant: &str,
        user_id: &str,
        json: &str,
        at: i64,
    ) -> StoreResult<()>;
}

/// A node that shares the store, as its lease says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    /// Its id.
    pub id: String,
    /// When it first claimed its lease (ms since the epoch).
    pub started_at: i64,
    /// When its lease runs out unless renewed (ms since the epoch).
    pub expires_at: i64,
}

/// Nodes and their leases: who runs which tasks, and what happens to a node's tasks when it
/// is gone. A node's tasks are interrupted only by the node itself (at its start, for what its
/// previous run left) or by another node once the lease has expired — never while it lives.
#[async_trait::async_trait]
pub trait NodeStore: Send + Sync {
    /// Claim or renew `node`'s lease until `now + lease_ms`.
    async fn claim_lease(&self, node: &str, now: i64, lease_ms: i64) -> StoreResult<()>;
    /// Mark `node`'s pending and running tasks (and those of no node: older rows) interrupted;
    /// their ids.
    async fn interrupt_tasks_of(&self, node: &str, at: i64) -> StoreResult<Vec<String>>;
    /// Take over the nodes whose lease expired before `now`: their pending and running tasks
    /// become interrupted and the nodes are forgotten; the tasks' ids.
    async fn take_over_expired(&self, now: i64) -> StoreResult<Vec<String>>;
    /// The nodes whose lease holds at `now`.
    async fn live_nodes(&self, now: i64) -> StoreResult<Vec<NodeRecord>>;
    /// Let pending task `task_id` of `tenant` run if fewer than `max_all` tasks, and fewer than
    /// `max_tenant` of the tenant's, are running over every node of the store: it is marked
    /// running (from `now`) in the same step. Whether it may run. A store of one node leaves
    /// the limits to the node's own slots and always says yes.
    async fn claim_run_slot(
        &self,
        tenant: &str,
        task_id: &str,
        max_all: u64,
        max_tenant: u64,
        now: i64,
    ) -> StoreResult<bool>;
    /// Hold the node-wide role `role` (one node of the store at a time does that work, such
    /// as sending webhooks) until `now + lease_ms`: taken when nobody holds it or its holder's
    /// lease ran out, renewed when `node` holds it. Whether `node` holds it now. A store of one
    /// node always says yes.
    async fn claim_role(
        &self,
        role: &str,
        node: &str,
        now: i64,
        lease_ms: i64,
    ) -> StoreResult<bool>;
    /// What kind of store this is (`sqlite`, `postgres`), for `/health`.
    fn store_kind(&self) -> &'static str;
    /// How the node hears of logs growing and cancel requests: within this process on a store
    /// of one node, between nodes on a shared one.
    fn log_notifier(&self) -> std::sync::Arc<dyn LogNotifier>;
}

/// Everything gantry persists.
pub trait Store:
    WorkspaceStore
    + TaskStore
    + RetentionStore
    + SessionStore
    + UserStore
    + BoardStore
    + EventStore
    + NodeStore
    + CommandStore
    + WorkSessionStore
    + WebhookStore
    + fmt::Debug
    + 'static
{
}

impl<T> Store for T where
    T: WorkspaceStore
        + TaskStore
        + RetentionStore
        + SessionStore
        + UserStore
        + BoardStore
        + EventStore
        + NodeStore
        + CommandStore
        + WorkSessionStore
        + WebhookStore
        + fmt::Debug
        + 'static
{
}

/// How far a task's log has come.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogProgress {
    /// The last `seq` appended.
    pub last_seq: u64,
    /// Nothing more will be appended.
    pub ended: bool,
}

/// "Task X has new events": the writer of a task's log announces each append, and followers
/// wait for the next announcement instead of polling the store. In-process here
/// ([`LocalNotifier`]); a store shared by several nodes fills it with its own channel.
pub trait LogNotifier: Send + Sync + fmt::Debug {
    /// Announce that `task_id`'s log has reached `progress`.
    fn announce(&self, task_id: &str, progress: LogProgress);
    /// Follow `task_id`'s progress, if its log is still being written where this notifier
    /// hears of it.
    fn follow(&self, task_id: &str) -> Option<tokio::sync::watch::Receiver<LogProgress>>;
    /// Start announcing `task_id` (before its first append).
    fn open(&self, task_id: &str);
    /// Ask the node that runs `task_id` to cancel it (a task this node does not run). One
    /// node alone has nobody to ask.
    fn request_cancel(&self, task_id: &str) {
        let _ = task_id;
    }
    /// The cancel requests other nodes send for tasks, once (the supervisor takes them); one
    /// node alone hears none.
    fn cancel_requests(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<String>> {
        None
    }
}

/// A [`LogNotifier`] within one process: a watch channel per task whose log is being written.
#[derive(Debug, Default)]
pub struct LocalNotifier {
    channels: std::sync::Mutex<
        std::collections::HashMap<String, tokio::sync::watch::Sender<LogProgress>>,
    >,
}

impl LogNotifier for LocalNotifier {
    fn announce(&self, task_id: &str, progress: LogProgress) {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = channels.get(task_id) {
            tx.send_replace(progress);
        }
        // An ended log has nothing more to announce; followers keep their receiver, which
        // still holds the last value.
        if progress.ended {
            channels.remove(task_id);
        }
    }

    fn follow(&self, task_id: &str) -> Option<tokio::sync::watch::Receiver<LogProgress>> {
        let channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        channels
            .get(task_id)
            .map(tokio::sync::watch::Sender::subscribe)
    }

    fn open(&self, task_id: &str) {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        channels
            .entry(task_id.to_string())
            .or_insert_with(|| tokio::sync::watch::channel(LogProgress::default()).0);
    }
}
