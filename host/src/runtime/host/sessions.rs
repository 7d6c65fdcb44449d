//! `gantry:plugin/sessions`: the caller's sessions, always for the calling tenant. The host
//! keeps the indexed fields; what a surface shows of a session is its own JSON object.

use super::ServicesView;
use super::bindings::gantry::plugin::sessions as wit;
use crate::contract::SessionStatus;
use crate::sessions::SessionError;
use crate::store::{SessionQuery, SessionRecord};

/// A session status's stored name.
pub(crate) fn status_name(status: SessionStatus) -> &'static str {
    match status {
        SessionStatus::Active => "active",
        SessionStatus::Completed => "completed",
        SessionStatus::Error => "error",
        SessionStatus::Paused => "paused",
    }
}

fn status(name: &str) -> SessionStatus {
    match name {
        "completed" => SessionStatus::Completed,
        "error" => SessionStatus::Error,
        "paused" => SessionStatus::Paused,
        _ => SessionStatus::Active,
    }
}

fn session_error(e: SessionError) -> wit::SessionError {
    match e {
        SessionError::NotFound => wit::SessionError::NotFound,
        SessionError::BadRequest(m) => wit::SessionError::BadRequest(m),
        SessionError::Internal(e) => {
            tracing::error!("session operation failed: {e:#}");
            wit::SessionError::Internal("internal error".into())
        }
    }
}

fn session(r: SessionRecord) -> wit::Session {
    wit::Session {
        id: r.id,
        backend: r.backend,
        status: status(&r.status),
        workspace_id: r.workspace_id,
        created_at: r.created_at,
        updated_at: r.updated_at,
        data_json: r.data.to_string(),
    }
}

fn session_data(json: &str) -> Result<serde_json::Value, wit::SessionError> {
    serde_json::from_str(json)
        .map_err(|e| wit::SessionError::BadRequest(format!("data-json is not JSON: {e}")))
}

impl wit::Host for ServicesView<'_> {
    async fn create(&mut self, new: wit::Session) -> Result<wit::Session, wit::SessionError> {
        let data = session_data(&new.data_json)?;
        let sessions = &self.services.sessions;
        sessions
            .create(
                self.tenant,
                &new.backend,
                status_name(new.status),
                new.workspace_id,
                data,
            )
            .await
            .map(session)
            .map_err(session_error)
    }

    async fn get(&mut self, id: String) -> Result<wit::Session, wit::SessionError> {
        let sessions = &self.services.sessions;
        sessions
            .get(self.tenant, &id)
            .await
            .map(session)
            .map_err(session_error)
    }

    async fn update(&mut self, changed: wit::Session) -> Result<wit::Session, wit::SessionError> {
        let data = session_data(&changed.data_json)?;
        let sessions = &self.services.sessions;
        sessions
            .update(
                self.tenant,
                &changed.id,
                status_name(changed.status),
                changed.workspace_id,
                data,
            )
            .await
            .map(session)
            .map_err(session_error)
    }

    async fn list(&mut self, query: wit::Query) -> Result<wit::Page, wit::SessionError> {
        let query = SessionQuery {
            backend: query.backend,
            status: query.status.map(|s| status_name(s).to_string()),
            limit: query.limit,
            offset: query.offset,
        };
        let sessions = &self.services.sessions;
        let page = sessions
            .list(self.tenant, &query)
            .await
            .map_err(session_error)?;
        Ok(wit::Page {
            sessions: page.sessions.into_iter().map(session).collect(),
            total: page.total,
        })
    }

    async fn delete(&mut self, id: String) -> Result<(), wit::SessionError> {
        let sessions = &self.services.sessions;
        sessions
            .delete(self.tenant, &id)
            .await
            .map_err(session_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_both_ways() {
        for s in [
            SessionStatus::Active,
            SessionStatus::Completed,
            SessionStatus::Error,
            SessionStatus::Paused,
        ] {
            assert_eq!(status(status_name(s)), s);
        }
    }
}
