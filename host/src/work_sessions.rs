//! Working sessions of the Web UI API (`/api/sessions`): a user's session on a project, with
//! its settings, an expiry, and a history of what happened in it — settings changed, board
//! tasks executed, commands run, restores. (Not [`crate::sessions`], which are clinvk's
//! resumable conversations.) This module owns their rules over the rows of
//! [`crate::store::WorkSessionStore`].
//!
//! A session belongs to its user: every call takes the calling [`Principal`], acts as its
//! tenant, and treats another user's session (unless the caller is an admin) and another
//! tenant's exactly like an unknown id. Reads need `read`, changes `write`.
//!
//! A session is active until `expires_at` (its creation plus the configured TTL) and expired
//! from then on. The status is computed from the clock on every read, and the store's list
//! filter uses the same rule, so there is nothing to sweep and no moment where the two
//! disagree. An expired session can still be read, listed and deleted; changing it, restoring
//! it, or recording into it is refused.

use crate::projects::{self, ProjectError, Projects, StatusRestore, TaskRestore};
use crate::store::{
    BoardTaskStatus, SessionEventKind, SessionEventRecord, SessionLiveness, Store,
    WorkSessionQuery, WorkSessionRecord, WorkSessionRow, now_ms,
};
use crate::users::{Denied, Permission, Principal};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::time::Duration;

/// The longest page of a listing.
pub const MAX_PAGE: u32 = 100;
/// The largest settings object, in bytes of JSON (as a project's settings).
pub const MAX_SETTINGS_BYTES: usize = projects::MAX_JSON_BYTES;
/// The longest command line a `command_run` entry keeps, in bytes; longer ones are cut at a
/// character boundary (the command's own record keeps it whole).
pub const MAX_COMMAND_BYTES: usize = 4096;

/// Why a session operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum WorkSessionError {
    /// No such session for this caller (another user's or tenant's, or deleted).
    #[error("session not found")]
    NotFound,
    /// The project is not one of the caller's tenant's.
    #[error("project not found")]
    ProjectNotFound,
    /// The session is past its `expires_at`: it can be read and deleted, not changed.
    #[error("the session expired")]
    Expired,
    /// The caller lacks a permission.
    #[error("{0}")]
    Forbidden(String),
    /// A field is wrong.
    #[error("{field}: {issue}")]
    Invalid {
        /// The field, as the request names it.
        field: &'static str,
        /// What is wrong with it.
        issue: String,
    },
    /// Storage failed.
    #[error(transparent)]
    Internal(anyhow::Error),
}

impl From<crate::store::StoreError> for WorkSessionError {
    fn from(e: crate::store::StoreError) -> Self {
        WorkSessionError::Internal(e.into())
    }
}

fn invalid(field: &'static str, issue: impl Into<String>) -> WorkSessionError {
    WorkSessionError::Invalid {
        field,
        issue: issue.into(),
    }
}

impl From<Denied> for WorkSessionError {
    fn from(e: Denied) -> Self {
        WorkSessionError::Forbidden(e.to_string())
    }
}

/// A board error met on the way (the project or a task), in this module's terms.
fn board(e: ProjectError) -> WorkSessionError {
    match e {
        ProjectError::ProjectNotFound => WorkSessionError::ProjectNotFound,
        ProjectError::Forbidden(m) => WorkSessionError::Forbidden(m),
        ProjectError::Invalid { field, issue } => WorkSessionError::Invalid { field, issue },
        other => WorkSessionError::Internal(other.into()),
    }
}

/// Whether a session can be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionStatus {
    /// Before its `expires_at`.
    Active,
    /// At or past its `expires_at`.
    Expired,
}

impl SessionStatus {
    /// The name the API shows.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionStatus::Active => "active",
            SessionStatus::Expired => "expired",
        }
    }

    /// A session's status at `now` (ms since the epoch).
    pub fn of(record: &WorkSessionRecord, now: i64) -> SessionStatus {
        if now >= record.expires_at {
            SessionStatus::Expired
        } else {
            SessionStatus::Active
        }
    }
}

/// A session as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkSession {
    /// Its row.
    pub record: WorkSessionRecord,
    /// Its project's name (none once the project is deleted).
    pub project_name: Option<String>,
    /// Its status when it was read.
    pub status: SessionStatus,
}

impl WorkSession {
    fn of(row: WorkSessionRow, now: i64) -> WorkSession {
        WorkSession {
            status: SessionStatus::of(&row.session, now),
            record: row.session,
            project_name: row.project_name,
        }
    }
}

/// Which of the caller's sessions to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkSessionListing {
    /// Only active or only expired ones.
    pub status: Option<SessionStatus>,
    /// Only those on this project.
    pub project_id: Option<String>,
    /// Skip this many (newest first).
    pub offset: u32,
    /// At most this many (1 to [`MAX_PAGE`]).
    pub limit: u32,
}

/// What a restore is asked to bring back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestoreRequest {
    /// The instant to go back to, ms since the epoch: from the session's creation to now.
    pub restore_point: i64,
    /// Put the tasks executed in the session back to their status then.
    pub include_tasks: bool,
    /// Put the settings back to those in force then.
    pub include_settings: bool,
}

/// What a restore did.
#[derive(Debug, Clone, PartialEq)]
pub struct RestoreSummary {
    /// The instant restored to.
    pub restore_point: i64,
    /// Whether tasks were asked for.
    pub include_tasks: bool,
    /// Whether settings were asked for.
    pub include_settings: bool,
    /// The settings put back, when asked for.
    pub settings: Option<Value>,
    /// Each task executed in the session, and what happened to its status.
    pub tasks: Vec<TaskRestore>,
}

/// One entry of a session's history, typed.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionEvent {
    /// The session was made with these settings.
    Created {
        /// Its first settings.
        settings: Value,
    },
    /// Its settings changed to these.
    SettingsChanged {
        /// The settings after the change.
        settings: Value,
    },
    /// A board task was executed in it.
    TaskExecuted {
        /// The task.
        task_id: String,
        /// Its title then.
        title: String,
        /// Its status right after it was queued.
        status: BoardTaskStatus,
    },
    /// A command ran in it.
    CommandRun {
        /// The command's id.
        command_id: String,
        /// Its command line (cut to [`MAX_COMMAND_BYTES`]).
        command: String,
    },
    /// It was restored.
    Restored(RestoreSummary),
}

/// A history entry: when, by whom, what.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryItem {
    /// Its id.
    pub id: String,
    /// When, ms since the epoch.
    pub at: i64,
    /// Who.
    pub user_id: String,
    /// What happened.
    pub event: SessionEvent,
}

fn status_name(s: &str) -> Result<BoardTaskStatus, String> {
    BoardTaskStatus::parse(s).ok_or_else(|| format!("unknown task status {s:?}"))
}

fn text(v: &Value, key: &str) -> Result<String, String> {
    v.get(key)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| format!("no {key}"))
}

impl SessionEvent {
    fn kind(&self) -> SessionEventKind {
        match self {
            SessionEvent::Created { .. } => SessionEventKind::Created,
            SessionEvent::SettingsChanged { .. } => SessionEventKind::SettingsChanged,
            SessionEvent::TaskExecuted { .. } => SessionEventKind::TaskExecuted,
            SessionEvent::CommandRun { .. } => SessionEventKind::CommandRun,
            SessionEvent::Restored(_) => SessionEventKind::Restored,
        }
    }

    /// The settings in force after this entry, if it set them.
    fn settings(&self) -> Option<&Value> {
        match self {
            SessionEvent::Created { settings } | SessionEvent::SettingsChanged { settings } => {
                Some(settings)
            }
            SessionEvent::Restored(summary) => summary.settings.as_ref(),
            _ => None,
        }
    }

    /// The stored `data` column.
    fn data(&self) -> Value {
        match self {
            SessionEvent::Created { settings } | SessionEvent::SettingsChanged { settings } => {
                json!({ "settings": settings })
            }
            SessionEvent::TaskExecuted {
                task_id,
                title,
                status,
            } => json!({ "task_id": task_id, "title": title, "status": status.as_str() }),
            SessionEvent::CommandRun {
                command_id,
                command,
            } => json!({ "command_id": command_id, "command": command }),
            SessionEvent::Restored(s) => json!({
                "restore_point": s.restore_point,
                "include_tasks": s.include_tasks,
                "include_settings": s.include_settings,
                "settings": s.settings,
                "tasks": s.tasks.iter().map(|t| {
                    let mut v = json!({ "task_id": t.task_id, "title": t.title });
                    match &t.outcome {
                        StatusRestore::Restored { from, to } => {
                            v["outcome"] = json!("restored");
                            v["from"] = json!(from.as_str());
                            v["to"] = json!(to.as_str());
                        }
                        StatusRestore::Unchanged(s) => {
                            v["outcome"] = json!("unchanged");
                            v["to"] = json!(s.as_str());
                        }
                        StatusRestore::Skipped(reason) => {
                            v["outcome"] = json!("skipped");
                            v["reason"] = json!(reason);
                        }
                    }
                    v
                }).collect::<Vec<_>>(),
            }),
        }
    }

    /// The entry a stored row holds.
    fn parse(kind: SessionEventKind, data: &str) -> Result<SessionEvent, String> {
        let v: Value = serde_json::from_str(data).map_err(|e| e.to_string())?;
        let settings = || v.get("settings").cloned().unwrap_or_else(|| json!({}));
        Ok(match kind {
            SessionEventKind::Created => SessionEvent::Created {
                settings: settings(),
            },
            SessionEventKind::SettingsChanged => SessionEvent::SettingsChanged {
                settings: settings(),
            },
            SessionEventKind::TaskExecuted => SessionEvent::TaskExecuted {
                task_id: text(&v, "task_id")?,
                title: text(&v, "title")?,
                status: status_name(&text(&v, "status")?)?,
            },
            SessionEventKind::CommandRun => SessionEvent::CommandRun {
                command_id: text(&v, "command_id")?,
                command: text(&v, "command")?,
            },
            SessionEventKind::Restored => {
                let mut tasks = Vec::new();
                for t in v
                    .get("tasks")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let outcome = match text(t, "outcome")?.as_str() {
                        "restored" => StatusRestore::Restored {
                            from: status_name(&text(t, "from")?)?,
                            to: status_name(&text(t, "to")?)?,
                        },
                        "unchanged" => StatusRestore::Unchanged(status_name(&text(t, "to")?)?),
                        _ => StatusRestore::Skipped(text(t, "reason")?),
                    };
                    tasks.push(TaskRestore {
                        task_id: text(t, "task_id")?,
                        title: text(t, "title")?,
                        outcome,
                    });
                }
                SessionEvent::Restored(RestoreSummary {
                    restore_point: v.get("restore_point").and_then(Value::as_i64).unwrap_or(0),
                    include_tasks: v.get("include_tasks").and_then(Value::as_bool) == Some(true),
                    include_settings: v.get("include_settings").and_then(Value::as_bool)
                        == Some(true),
                    settings: v.get("settings").filter(|s| !s.is_null()).cloned(),
                    tasks,
                })
            }
        })
    }
}

/// Apply a JSON merge patch (RFC 7396): an object's members replace the target's, `null`
/// removes one, nested objects merge the same way, anything else replaces. (Ten lines; the
/// `json-patch` crate would add a dependency tree for them.)
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(members) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (key, value) in members {
            if value.is_null() {
                t.remove(key);
            } else {
                merge_patch(t.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

/// A settings object from its JSON text, within the size limit.
fn settings_object(field: &'static str, text: &str) -> Result<Value, WorkSessionError> {
    if text.len() > MAX_SETTINGS_BYTES {
        return Err(invalid(
            field,
            format!("must be at most {MAX_SETTINGS_BYTES} bytes of JSON"),
        ));
    }
    match serde_json::from_str::<Value>(text) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(invalid(field, "must be a JSON object")),
        Err(e) => Err(invalid(field, format!("is not JSON: {e}"))),
    }
}

/// Cut `line` to at most `max` bytes at a character boundary.
fn cut(line: &str, max: usize) -> &str {
    if line.len() <= max {
        return line;
    }
    let mut end = max;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    &line[..end]
}

/// The working sessions service.
#[derive(Debug, Clone)]
pub struct WorkSessions {
    store: Arc<dyn Store>,
    projects: Projects,
    ttl_ms: i64,
}

impl WorkSessions {
    /// Sessions over `store`, on the projects of `projects`, each active for `ttl` after it is
    /// made.
    pub fn new(store: Arc<dyn Store>, projects: Projects, ttl: Duration) -> WorkSessions {
        WorkSessions {
            store,
            projects,
            ttl_ms: i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX),
        }
    }

    /// One of the caller's sessions, deleted or not the caller's being not found.
    async fn row(&self, who: &Principal, id: &str) -> Result<WorkSession, WorkSessionError> {
        let row = self
            .store
            .get_work_session(who.tenant.as_str(), id)
            .await?
            .ok_or(WorkSessionError::NotFound)?;
        if row.session.user_id != who.id && !who.may(Permission::Admin) {
            return Err(WorkSessionError::NotFound);
        }
        Ok(WorkSession::of(row, now_ms()))
    }

    /// One of the caller's sessions that is still active.
    async fn active(&self, who: &Principal, id: &str) -> Result<WorkSession, WorkSessionError> {
        let session = self.row(who, id).await?;
        if session.status == SessionStatus::Expired {
            return Err(WorkSessionError::Expired);
        }
        Ok(session)
    }

    fn entry(who: &Principal, at: i64, event: &SessionEvent) -> SessionEventRecord {
        SessionEventRecord {
            id: uuid::Uuid::new_v4().to_string(),
            at,
            kind: event.kind(),
            user_id: who.id.clone(),
            data: event.data().to_string(),
        }
    }

    /// Start a session on one of the caller's tenant's projects (needs `write`).
    pub async fn create(
        &self,
        who: &Principal,
        project_id: &str,
        settings: Option<&str>,
    ) -> Result<WorkSession, WorkSessionError> {
        who.require(Permission::Write)?;
        let settings = match settings {
            Some(text) => settings_object("settings", text)?,
            None => json!({}),
        };
        if project_id.trim().is_empty() {
            return Err(invalid("project_id", "must not be empty"));
        }
        self.projects
            .get_project(who, project_id)
            .await
            .map_err(board)?;
        let now = now_ms();
        let record = WorkSessionRecord {
            id: uuid::Uuid::new_v4().to_string(),
            tenant: who.tenant.as_str().to_string(),
            user_id: who.id.clone(),
            project_id: project_id.to_string(),
            settings: settings.to_string(),
            created_at: now,
            last_accessed: now,
            expires_at: now.saturating_add(self.ttl_ms),
        };
        let first = Self::entry(who, now, &SessionEvent::Created { settings });
        self.store.insert_work_session(&record, &first).await?;
        self.row(who, &record.id).await
    }

    /// One of the caller's sessions (needs `read`).
    pub async fn get(&self, who: &Principal, id: &str) -> Result<WorkSession, WorkSessionError> {
        who.require(Permission::Read)?;
        self.row(who, id).await
    }

    /// A page of the caller's own sessions, newest first, and how many match (needs `read`).
    pub async fn list(
        &self,
        who: &Principal,
        listing: WorkSessionListing,
    ) -> Result<(Vec<WorkSession>, u64), WorkSessionError> {
        who.require(Permission::Read)?;
        if !(1..=MAX_PAGE).contains(&listing.limit) {
            return Err(invalid("limit", format!("must be from 1 to {MAX_PAGE}")));
        }
        let now = now_ms();
        let query = WorkSessionQuery {
            user_id: Some(who.id.clone()),
            project_id: listing.project_id,
            liveness: listing.status.map(|s| match s {
                SessionStatus::Active => SessionLiveness::Active,
                SessionStatus::Expired => SessionLiveness::Expired,
            }),
            now,
            offset: listing.offset,
            limit: listing.limit,
        };
        let (rows, total) = self
            .store
            .list_work_sessions(who.tenant.as_str(), &query)
            .await?;
        Ok((
            rows.into_iter().map(|r| WorkSession::of(r, now)).collect(),
            total,
        ))
    }

    /// Change an active session's settings with a JSON merge patch (RFC 7396: given members
    /// replace, `null` removes; needs `write`). A change is a `settings_changed` entry with the
    /// settings after it; a patch that changes nothing only counts as an access.
    pub async fn update_settings(
        &self,
        who: &Principal,
        id: &str,
        patch: &str,
    ) -> Result<WorkSession, WorkSessionError> {
        who.require(Permission::Write)?;
        let patch = settings_object("settings", patch)?;
        let session = self.active(who, id).await?;
        let mut settings: Value =
            serde_json::from_str(&session.record.settings).unwrap_or_else(|_| json!({}));
        let before = settings.clone();
        merge_patch(&mut settings, &patch);
        let text = settings.to_string();
        if text.len() > MAX_SETTINGS_BYTES {
            return Err(invalid(
                "settings",
                format!("would be more than {MAX_SETTINGS_BYTES} bytes of JSON"),
            ));
        }
        let now = now_ms();
        let mut record = session.record;
        record.settings = text;
        record.last_accessed = now;
        let event = (settings != before)
            .then(|| Self::entry(who, now, &SessionEvent::SettingsChanged { settings }));
        if !self
            .store
            .update_work_session(&record, event.as_ref())
            .await?
        {
            return Err(WorkSessionError::NotFound);
        }
        self.row(who, id).await
    }

    /// Delete one of the caller's sessions, expired or not (needs `write`); when. Its history
    /// is kept in the store, out of every read.
    pub async fn delete(&self, who: &Principal, id: &str) -> Result<i64, WorkSessionError> {
        who.require(Permission::Write)?;
        self.row(who, id).await?;
        let at = now_ms();
        if !self
            .store
            .delete_work_session(who.tenant.as_str(), id, at)
            .await?
        {
            return Err(WorkSessionError::NotFound);
        }
        Ok(at)
    }

    /// What happened in one of the caller's sessions, in order (needs `read`).
    pub async fn history(
        &self,
        who: &Principal,
        id: &str,
    ) -> Result<Vec<HistoryItem>, WorkSessionError> {
        who.require(Permission::Read)?;
        self.row(who, id).await?;
        self.items(who, id).await
    }

    async fn items(&self, who: &Principal, id: &str) -> Result<Vec<HistoryItem>, WorkSessionError> {
        let rows = self.store.session_events(who.tenant.as_str(), id).await?;
        rows.into_iter()
            .map(|r| -> Result<HistoryItem, WorkSessionError> {
                let event = SessionEvent::parse(r.kind, &r.data).map_err(|e| {
                    WorkSessionError::Internal(anyhow::anyhow!(
                        "session history entry {}: {e}",
                        r.id
                    ))
                })?;
                Ok(HistoryItem {
                    id: r.id,
                    at: r.at,
                    user_id: r.user_id,
                    event,
                })
            })
            .collect()
    }

    /// Bring an active session back to `request.restore_point` (needs `write`): its settings
    /// to the last ones set at or before it, and with `include_tasks` each task executed in
    /// the session to the status it had then (from the task's own history; see
    /// [`Projects::restore_status`] for the tasks it leaves alone). The restore is itself a
    /// history entry. A restore point before the session was made or in the future is
    /// invalid.
    pub async fn restore(
        &self,
        who: &Principal,
        id: &str,
        request: RestoreRequest,
    ) -> Result<(WorkSession, RestoreSummary), WorkSessionError> {
        who.require(Permission::Write)?;
        let session = self.active(who, id).await?;
        let now = now_ms();
        let point = request.restore_point;
        if point < session.record.created_at {
            return Err(invalid(
                "restore_point",
                "is before the session was created",
            ));
        }
        if point > now {
            return Err(invalid("restore_point", "is in the future"));
        }
        let history = self.items(who, id).await?;
        let settings = request
            .include_settings
            .then(|| {
                history
                    .iter()
                    .take_while(|h| h.at <= point)
                    .filter_map(|h| h.event.settings())
                    .last()
                    .cloned()
            })
            .flatten();
        let mut tasks = Vec::new();
        if request.include_tasks {
            let mut seen: Vec<&str> = Vec::new();
            for h in &history {
                let SessionEvent::TaskExecuted { task_id, title, .. } = &h.event else {
                    continue;
                };
                if seen.contains(&task_id.as_str()) {
                    continue;
                }
                seen.push(task_id);
                let note = format!("restored by session {id}");
                let outcome = match self
                    .projects
                    .restore_status(who, task_id, point, &note)
                    .await
                {
                    Ok(t) => t,
                    Err(ProjectError::TaskNotFound) => TaskRestore {
                        task_id: task_id.clone(),
                        title: title.clone(),
                        outcome: StatusRestore::Skipped("the task was deleted".into()),
                    },
                    Err(e) => return Err(board(e)),
                };
                tasks.push(outcome);
            }
        }
        let summary = RestoreSummary {
            restore_point: point,
            include_tasks: request.include_tasks,
            include_settings: request.include_settings,
            settings,
            tasks,
        };
        let mut record = session.record;
        if let Some(s) = &summary.settings {
            record.settings = s.to_string();
        }
        record.last_accessed = now_ms();
        let event = Self::entry(
            who,
            record.last_accessed,
            &SessionEvent::Restored(summary.clone()),
        );
        if !self
            .store
            .update_work_session(&record, Some(&event))
            .await?
        {
            return Err(WorkSessionError::NotFound);
        }
        Ok((self.row(who, id).await?, summary))
    }

    /// Record in an active session of the caller that a board task was executed in it: the
    /// task's title and its status right after its latest execution (queued). Called by the
    /// surface once `execute` has succeeded (needs `execute`, as executing does).
    pub async fn record_task_executed(
        &self,
        who: &Principal,
        id: &str,
        task_id: &str,
    ) -> Result<(), WorkSessionError> {
        who.require(Permission::Execute)?;
        self.active(who, id).await?;
        let task = match self.projects.get_task(who, task_id).await {
            Ok(t) => t,
            Err(ProjectError::TaskNotFound) => {
                return Err(invalid("task_id", "no such task"));
            }
            Err(e) => return Err(board(e)),
        };
        // The status right after its latest execution, from its history: by now the queue
        // may have started or even finished it.
        let history = self.projects.history(who, task_id).await.map_err(board)?;
        let status = projects::status_after_last_execution(&history)
            .ok_or_else(|| invalid("task_id", "the task was never executed"))?;
        let event = SessionEvent::TaskExecuted {
            task_id: task.record.id.clone(),
            title: task.record.title.clone(),
            status,
        };
        self.add(who, id, &event).await
    }

    /// Record in an active session of the caller that a command ran in it (for the commands
    /// module; needs `execute`). The line is kept up to [`MAX_COMMAND_BYTES`].
    pub async fn record_command_run(
        &self,
        who: &Principal,
        id: &str,
        command_id: &str,
        command: &str,
    ) -> Result<(), WorkSessionError> {
        who.require(Permission::Execute)?;
        self.active(who, id).await?;
        let event = SessionEvent::CommandRun {
            command_id: command_id.to_string(),
            command: cut(command, MAX_COMMAND_BYTES).to_string(),
        };
        self.add(who, id, &event).await
    }

    async fn add(
        &self,
        who: &Principal,
        id: &str,
        event: &SessionEvent,
    ) -> Result<(), WorkSessionError> {
        let entry = Self::entry(who, now_ms(), event);
        if self
            .store
            .add_session_event(who.tenant.as_str(), id, &entry)
            .await?
        {
            Ok(())
        } else {
            Err(WorkSessionError::NotFound)
        }
    }

    /// Check that `id` is an active session of the caller and mark it used now (for the
    /// WebSocket at `/ws/{session_id}`; needs `read`). The session as it is now.
    pub async fn touch(&self, who: &Principal, id: &str) -> Result<WorkSession, WorkSessionError> {
        who.require(Permission::Read)?;
        let session = self.active(who, id).await?;
        let mut record = session.record;
        record.last_accessed = now_ms();
        if !self.store.update_work_session(&record, None).await? {
            return Err(WorkSessionError::NotFound);
        }
        self.row(who, id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_merge_patch_replaces_removes_and_merges() {
        let mut settings = json!({"theme": "dark", "auto_save": true, "notifications": true,
            "editor": {"font": "mono", "size": 12}});
        merge_patch(
            &mut settings,
            &json!({"theme": "light", "notifications": null, "editor": {"size": 14}}),
        );
        assert_eq!(
            settings,
            json!({"theme": "light", "auto_save": true, "editor": {"font": "mono", "size": 14}})
        );
        merge_patch(&mut settings, &json!({"editor": "plain"}));
        assert_eq!(settings["editor"], json!("plain"));
    }

    #[test]
    fn every_event_reads_back_as_written() {
        let events = vec![
            SessionEvent::Created {
                settings: json!({"a": 1}),
            },
            SessionEvent::SettingsChanged {
                settings: json!({"a": 2}),
            },
            SessionEvent::TaskExecuted {
                task_id: "t1".into(),
                title: "Build".into(),
                status: BoardTaskStatus::Queued,
            },
            SessionEvent::CommandRun {
                command_id: "c1".into(),
                command: "ls -la".into(),
            },
            SessionEvent::Restored(RestoreSummary {
                restore_point: 42,
                include_tasks: true,
                include_settings: false,
                settings: None,
                tasks: vec![
                    TaskRestore {
                        task_id: "t1".into(),
                        title: "Build".into(),
                        outcome: StatusRestore::Restored {
                            from: BoardTaskStatus::Failed,
                            to: BoardTaskStatus::Pending,
                        },
                    },
                    TaskRestore {
                        task_id: "t2".into(),
                        title: "Test".into(),
                        outcome: StatusRestore::Skipped("busy".into()),
                    },
                    TaskRestore {
                        task_id: "t3".into(),
                        title: "Ship".into(),
                        outcome: StatusRestore::Unchanged(BoardTaskStatus::Completed),
                    },
                ],
            }),
        ];
        for e in events {
            let back = SessionEvent::parse(e.kind(), &e.data().to_string()).unwrap();
            assert_eq!(back, e);
        }
    }

    #[test]
    fn a_long_command_is_cut_on_a_character_boundary() {
        let line = "é".repeat(MAX_COMMAND_BYTES);
        let kept = cut(&line, MAX_COMMAND_BYTES);
        assert!(kept.len() <= MAX_COMMAND_BYTES);
        assert!(line.starts_with(kept));
        assert_eq!(cut("ls", MAX_COMMAND_BYTES), "ls");
    }

    #[test]
    fn a_session_expires_when_the_clock_reaches_expires_at() {
        let record = WorkSessionRecord {
            id: "s".into(),
            tenant: "t".into(),
            user_id: "u".into(),
            project_id: "p".into(),
            settings: "{}".into(),
            created_at: 0,
            last_accessed: 0,
            expires_at: 100,
        };
        assert_eq!(SessionStatus::of(&record, 99), SessionStatus::Active);
        assert_eq!(SessionStatus::of(&record, 100), SessionStatus::Expired);
    }
}
