//! `gantry:plugin/work-sessions`: the Web UI API's working sessions for the calling user. The
//! caller's tenant, user and permissions come from the request's credentials, never from the
//! component; a call on a route without a user (no `user_auth`) is refused.

use super::WorkSessionsView;
use super::bindings::gantry::plugin::users::FieldIssue;
use super::bindings::gantry::plugin::work_sessions as wit;
use super::projects::task_status;
use crate::projects::{StatusRestore, TaskRestore};
use crate::users::Principal;
use crate::work_sessions::{
    HistoryItem, RestoreRequest, RestoreSummary, SessionEvent, SessionStatus, WorkSession,
    WorkSessionError, WorkSessionListing,
};

fn error(e: WorkSessionError) -> wit::WorkSessionError {
    match e {
        WorkSessionError::NotFound => wit::WorkSessionError::NotFound,
        WorkSessionError::ProjectNotFound => wit::WorkSessionError::ProjectNotFound,
        WorkSessionError::Expired => wit::WorkSessionError::Expired,
        WorkSessionError::Forbidden(m) => wit::WorkSessionError::Forbidden(m),
        WorkSessionError::Invalid { field, issue } => wit::WorkSessionError::Invalid(FieldIssue {
            field: field.to_string(),
            issue,
        }),
        WorkSessionError::Internal(e) => {
            tracing::error!("session operation failed: {e:#}");
            wit::WorkSessionError::Internal("internal error".into())
        }
    }
}

fn status(s: SessionStatus) -> wit::WorkSessionStatus {
    match s {
        SessionStatus::Active => wit::WorkSessionStatus::Active,
        SessionStatus::Expired => wit::WorkSessionStatus::Expired,
    }
}

fn session(s: WorkSession) -> wit::WorkSession {
    wit::WorkSession {
        id: s.record.id,
        project_id: s.record.project_id,
        project_name: s.project_name,
        user_id: s.record.user_id,
        status: status(s.status),
        created_at: s.record.created_at,
        last_accessed: s.record.last_accessed,
        expires_at: s.record.expires_at,
        settings_json: s.record.settings,
    }
}

fn outcome(t: TaskRestore) -> wit::TaskOutcome {
    wit::TaskOutcome {
        task_id: t.task_id,
        title: t.title,
        outcome: match t.outcome {
            StatusRestore::Restored { from, to } => wit::TaskRestore::Restored(wit::StatusChange {
                from: task_status(from),
                to: task_status(to),
            }),
            StatusRestore::Unchanged(s) => wit::TaskRestore::Unchanged(task_status(s)),
            StatusRestore::Skipped(reason) => wit::TaskRestore::Skipped(reason),
        },
    }
}

fn summary(s: RestoreSummary) -> wit::RestoreSummary {
    wit::RestoreSummary {
        restore_point: s.restore_point,
        include_tasks: s.include_tasks,
        include_settings: s.include_settings,
        settings_json: s.settings.map(|v| v.to_string()),
        tasks: s.tasks.into_iter().map(outcome).collect(),
    }
}

fn item(h: HistoryItem) -> wit::HistoryItem {
    let event = match h.event {
        SessionEvent::Created { settings } => wit::SessionEvent::Created(settings.to_string()),
        SessionEvent::SettingsChanged { settings } => {
            wit::SessionEvent::SettingsChanged(settings.to_string())
        }
        SessionEvent::TaskExecuted {
            task_id,
            title,
            status,
        } => wit::SessionEvent::TaskExecuted(wit::TaskExecuted {
            task_id,
            title,
            status: task_status(status),
        }),
        SessionEvent::CommandRun {
            command_id,
            command,
        } => wit::SessionEvent::CommandRun(wit::CommandRun {
            command_id,
            command,
        }),
        SessionEvent::Restored(s) => wit::SessionEvent::Restored(summary(s)),
    };
    wit::HistoryItem {
        id: h.id,
        at: h.at,
        user_id: h.user_id,
        event,
    }
}

impl WorkSessionsView<'_> {
    fn who(&self) -> Result<&Principal, wit::WorkSessionError> {
        self.user.ok_or_else(|| {
            wit::WorkSessionError::Forbidden(
                "this needs a logged-in user or an API key on a user_auth route".into(),
            )
        })
    }
}

impl wit::Host for WorkSessionsView<'_> {
    async fn create(
        &mut self,
        project_id: String,
        settings_json: Option<String>,
    ) -> Result<wit::WorkSession, wit::WorkSessionError> {
        let who = self.who()?;
        self.sessions
            .create(who, &project_id, settings_json.as_deref())
            .await
            .map(session)
            .map_err(error)
    }

    async fn get(&mut self, id: String) -> Result<wit::WorkSession, wit::WorkSessionError> {
        let who = self.who()?;
        self.sessions
            .get(who, &id)
            .await
            .map(session)
            .map_err(error)
    }

    async fn list_sessions(
        &mut self,
        q: wit::WorkSessionQuery,
    ) -> Result<wit::WorkSessionPage, wit::WorkSessionError> {
        let who = self.who()?;
        let listing = WorkSessionListing {
            status: q.status.map(|s| match s {
                wit::WorkSessionStatus::Active => SessionStatus::Active,
                wit::WorkSessionStatus::Expired => SessionStatus::Expired,
            }),
            project_id: q.project_id,
            offset: q.offset,
            limit: q.limit,
        };
        let (items, total) = self.sessions.list(who, listing).await.map_err(error)?;
        Ok(wit::WorkSessionPage {
            items: items.into_iter().map(session).collect(),
            total,
        })
    }

    async fn update_settings(
        &mut self,
        id: String,
        patch_json: String,
    ) -> Result<wit::WorkSession, wit::WorkSessionError> {
        let who = self.who()?;
        self.sessions
            .update_settings(who, &id, &patch_json)
            .await
            .map(session)
            .map_err(error)
    }

    async fn delete(&mut self, id: String) -> Result<i64, wit::WorkSessionError> {
        let who = self.who()?;
        self.sessions.delete(who, &id).await.map_err(error)
    }

    async fn history(
        &mut self,
        id: String,
    ) -> Result<Vec<wit::HistoryItem>, wit::WorkSessionError> {
        let who = self.who()?;
        let items = self.sessions.history(who, &id).await.map_err(error)?;
        Ok(items.into_iter().map(item).collect())
    }

    async fn restore(
        &mut self,
        id: String,
        r: wit::RestoreRequest,
    ) -> Result<wit::RestoreOutcome, wit::WorkSessionError> {
        let who = self.who()?;
        let request = RestoreRequest {
            restore_point: r.restore_point,
            include_tasks: r.include_tasks,
            include_settings: r.include_settings,
        };
        let (s, done) = self
            .sessions
            .restore(who, &id, request)
            .await
            .map_err(error)?;
        Ok(wit::RestoreOutcome {
            session: session(s),
            summary: summary(done),
        })
    }

    async fn record_task_executed(
        &mut self,
        id: String,
        task_id: String,
    ) -> Result<(), wit::WorkSessionError> {
        let who = self.who()?;
        self.sessions
            .record_task_executed(who, &id, &task_id)
            .await
            .map_err(error)
    }
}
