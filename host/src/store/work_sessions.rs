//! The rows of the Web UI API's working sessions: a user's session on a project, with its
//! settings, and the history of what happened in it. `crate::work_sessions` owns their rules;
//! this is what the store keeps and how it is asked.

use super::StoreResult;
use std::fmt;

/// What a session history entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionEventKind {
    /// The session was made; `data` holds its first settings.
    Created,
    /// Its settings changed; `data` holds the settings after the change.
    SettingsChanged,
    /// A board task was executed in it; `data` holds the task's id, title and status then.
    TaskExecuted,
    /// A command ran in it; `data` holds the command's id and line.
    CommandRun,
    /// It was restored to an earlier point; `data` says what was restored.
    Restored,
}

impl SessionEventKind {
    /// Every kind, in order.
    pub const ALL: &'static [SessionEventKind] = &[
        SessionEventKind::Created,
        SessionEventKind::SettingsChanged,
        SessionEventKind::TaskExecuted,
        SessionEventKind::CommandRun,
        SessionEventKind::Restored,
    ];

    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionEventKind::Created => "created",
            SessionEventKind::SettingsChanged => "settings_changed",
            SessionEventKind::TaskExecuted => "task_executed",
            SessionEventKind::CommandRun => "command_run",
            SessionEventKind::Restored => "restored",
        }
    }

    /// The kind named `name`.
    pub fn parse(name: &str) -> Option<SessionEventKind> {
        Self::ALL.iter().copied().find(|k| k.as_str() == name)
    }
}

impl fmt::Display for SessionEventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A working session row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkSessionRecord {
    /// Its id (random).
    pub id: String,
    /// Its tenant.
    pub tenant: String,
    /// The user whose session it is.
    pub user_id: String,
    /// The project it works on.
    pub project_id: String,
    /// Its settings, a JSON object as text.
    pub settings: String,
    /// When it was made, ms since the epoch.
    pub created_at: i64,
    /// When its user last used it.
    pub last_accessed: i64,
    /// When it stops being active.
    pub expires_at: i64,
}

/// A working session with its project's name (none once the project is deleted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkSessionRow {
    /// The session.
    pub session: WorkSessionRecord,
    /// Its project's name.
    pub project_name: Option<String>,
}

/// One entry of a session's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionEventRecord {
    /// Its id (random).
    pub id: String,
    /// When, ms since the epoch.
    pub at: i64,
    /// What happened.
    pub kind: SessionEventKind,
    /// Who did it.
    pub user_id: String,
    /// The details, a JSON object as text (its shape depends on `kind`).
    pub data: String,
}

/// Whether a session is past its `expires_at` at the query's `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionLiveness {
    /// `expires_at` is after `now`.
    Active,
    /// `expires_at` is at or before `now`.
    Expired,
}

/// Which sessions to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkSessionQuery {
    /// Only this user's (all of the tenant's when none).
    pub user_id: Option<String>,
    /// Only those on this project.
    pub project_id: Option<String>,
    /// Only active or only expired ones, as of `now`.
    pub liveness: Option<SessionLiveness>,
    /// The instant `liveness` is judged at, ms since the epoch.
    pub now: i64,
    /// Skip this many (newest first).
    pub offset: u32,
    /// At most this many.
    pub limit: u32,
}

/// Working sessions and their history. Every read takes the tenant and skips deleted
/// sessions, so no query crosses tenants or sees what was deleted.
#[async_trait::async_trait]
pub trait WorkSessionStore: Send + Sync {
    /// Add a session with its first history entry, in one transaction.
    async fn insert_work_session(
        &self,
        session: &WorkSessionRecord,
        first: &SessionEventRecord,
    ) -> StoreResult<()>;
    /// One of a tenant's sessions, with its project's name.
    async fn get_work_session(&self, tenant: &str, id: &str)
    -> StoreResult<Option<WorkSessionRow>>;
    /// A page of a tenant's sessions, newest first, and how many match.
    async fn list_work_sessions(
        &self,
        tenant: &str,
        query: &WorkSessionQuery,
    ) -> StoreResult<(Vec<WorkSessionRow>, u64)>;
    /// Write a session's settings and `last_accessed`, and add `event` to its history, in one
    /// transaction; false (and nothing written) when it is gone.
    async fn update_work_session(
        &self,
        session: &WorkSessionRecord,
        event: Option<&SessionEventRecord>,
    ) -> StoreResult<bool>;
    /// Delete a session (softly: its row and history stay, hidden from every read); whether
    /// it existed.
    async fn delete_work_session(&self, tenant: &str, id: &str, at: i64) -> StoreResult<bool>;
    /// Add an entry to a session's history; false (and nothing written) when it is gone.
    async fn add_session_event(
        &self,
        tenant: &str,
        session_id: &str,
        event: &SessionEventRecord,
    ) -> StoreResult<bool>;
    /// A session's history, in the order it happened.
    async fn session_events(
        &self,
        tenant: &str,
        session_id: &str,
    ) -> StoreResult<Vec<SessionEventRecord>>;
}
