//! Sessions: conversations with a backend that a later prompt may resume, per tenant. The host
//! owns ids, times, the status vocabulary and the size bound; a surface keeps its own fields
//! in `data`.

use crate::store::{SessionPage, SessionQuery, SessionRecord, Store, now_ms};
use crate::tenants::TenantId;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The statuses a session may have.
pub const STATUSES: &[&str] = &["active", "completed", "error", "paused"];

/// The most sessions one page holds.
pub const MAX_PAGE: u32 = 1000;

/// The largest `data` a session may carry, in bytes of JSON.
pub const MAX_DATA_BYTES: usize = 64 * 1024;

/// Why a session operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// No such session for this tenant (another tenant's ids land here too).
    #[error("session not found")]
    NotFound,
    /// A field is out of bounds.
    #[error("{0}")]
    BadRequest(String),
    /// Storage failed.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<crate::store::StoreError> for SessionError {
    fn from(e: crate::store::StoreError) -> Self {
        SessionError::Internal(e.into())
    }
}

/// How long one store probe answers the health checks after it. A probe takes the store's
/// write lock (SQLite) or a transaction (PostgreSQL): a load balancer probing many times a
/// second must not queue every probe on the lock the node's runs write under.
const HEALTH_FRESH_FOR: Duration = Duration::from_millis(500);

/// Every tenant's sessions.
#[derive(Debug, Clone)]
pub struct Sessions {
    store: Arc<dyn Store>,
    health: Arc<HealthProbe>,
}

/// The last store probe: one probe at a time, and its answer reused while it is fresh and no
/// session was written since.
#[derive(Debug, Default)]
struct HealthProbe {
    /// Bumped by each session written here, so the count never lags this node's own writes.
    writes: AtomicU64,
    last: tokio::sync::Mutex<Option<ProbeAnswer>>,
}

#[derive(Debug, Clone, Copy)]
struct ProbeAnswer {
    at: Instant,
    writes: u64,
    available: bool,
    sessions: u64,
}

impl Sessions {
    /// Sessions kept in `store`.
    pub fn new(store: Arc<dyn Store>) -> Sessions {
        Sessions {
            store,
            health: Arc::default(),
        }
    }

    fn written(&self) {
        self.health.writes.fetch_add(1, Ordering::Relaxed);
    }

    /// Store a new session for `tenant`; its id and times are assigned here.
    pub async fn create(
        &self,
        tenant: &TenantId,
        backend: &str,
        status: &str,
        workspace_id: Option<String>,
        data: serde_json::Value,
    ) -> Result<SessionRecord, SessionError> {
        check(status, &data)?;
        if backend.is_empty() {
            return Err(SessionError::BadRequest("a session needs a backend".into()));
        }
        let now = now_ms();
        let record = SessionRecord {
            id: uuid::Uuid::new_v4().simple().to_string(),
            tenant: tenant.to_string(),
            backend: backend.to_string(),
            status: status.to_string(),
            workspace_id,
            created_at: now,
            updated_at: now,
            data,
        };
        self.store.create_session(&record).await?;
        self.written();
        Ok(record)
    }

    /// One of the tenant's sessions.
    pub async fn get(&self, tenant: &TenantId, id: &str) -> Result<SessionRecord, SessionError> {
        self.store
            .get_session(tenant.as_str(), id)
            .await?
            .ok_or(SessionError::NotFound)
    }

    /// Replace a session's status, workspace and data; its time becomes now.
    pub async fn update(
        &self,
        tenant: &TenantId,
        id: &str,
        status: &str,
        workspace_id: Option<String>,
        data: serde_json::Value,
    ) -> Result<SessionRecord, SessionError> {
        check(status, &data)?;
        let mut record = self.get(tenant, id).await?;
        record.status = status.to_string();
        record.workspace_id = workspace_id;
        record.data = data;
        record.updated_at = now_ms().max(record.updated_at);
        if !self.store.update_session(&record).await? {
            return Err(SessionError::NotFound);
        }
        Ok(record)
    }

    /// A page of the tenant's sessions, newest first.
    pub async fn list(
        &self,
        tenant: &TenantId,
        query: &SessionQuery,
    ) -> Result<SessionPage, SessionError> {
        if let Some(status) = &query.status
            && !STATUSES.contains(&status.as_str())
        {
            return Err(SessionError::BadRequest(format!(
                "status must be one of {}",
                STATUSES.join(", ")
            )));
        }
        if query.limit == 0 || query.limit > MAX_PAGE {
            return Err(SessionError::BadRequest(format!(
                "limit must be between 1 and {MAX_PAGE}"
            )));
        }
        Ok(self.store.list_sessions(tenant.as_str(), query).await?)
    }

    /// Remove one of the tenant's sessions.
    pub async fn delete(&self, tenant: &TenantId, id: &str) -> Result<(), SessionError> {
        if self.store.delete_session(tenant.as_str(), id).await? {
            self.written();
            Ok(())
        } else {
            Err(SessionError::NotFound)
        }
    }

    /// Whether the store answers, and how many sessions it holds over all tenants. The answer
    /// is at most half a second old: probes share one look at the store (see
    /// `HEALTH_FRESH_FOR`), and a session written here makes the next probe look again.
    pub async fn health(&self) -> (bool, u64) {
        let mut last = self.health.last.lock().await;
        let writes = self.health.writes.load(Ordering::Relaxed);
        if let Some(answer) = *last
            && answer.writes == writes
            && answer.at.elapsed() < HEALTH_FRESH_FOR
        {
            return (answer.available, answer.sessions);
        }
        let (available, sessions) = match self.store.count_sessions().await {
            Ok(n) => (true, n),
            Err(e) => {
                tracing::error!("the session store did not answer: {e:#}");
                (false, 0)
            }
        };
        *last = Some(ProbeAnswer {
            at: Instant::now(),
            writes,
            available,
            sessions,
        });
        (available, sessions)
    }
}

fn check(status: &str, data: &serde_json::Value) -> Result<(), SessionError> {
    if !STATUSES.contains(&status) {
        return Err(SessionError::BadRequest(format!(
            "status must be one of {}",
            STATUSES.join(", ")
        )));
    }
    if !data.is_object() {
        return Err(SessionError::BadRequest(
            "session data must be a JSON object".into(),
        ));
    }
    if data.to_string().len() > MAX_DATA_BYTES {
        return Err(SessionError::BadRequest(format!(
            "session data is over {MAX_DATA_BYTES} bytes"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Sqlite;
    use serde_json::json;

    #[tokio::test]
    async fn health_reuses_a_fresh_probe_but_never_lags_this_nodes_own_writes() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(Sqlite::open(&dir.path().join("g.db")).unwrap());
        let sessions = Sessions::new(store.clone());
        let alice = TenantId::new("alice").unwrap();
        assert_eq!(sessions.health().await, (true, 0));
        let made = sessions
            .create(&alice, "claude", "active", None, json!({}))
            .await
            .unwrap();
        // Written here: the next probe looks again.
        assert_eq!(sessions.health().await, (true, 1));
        // Removed behind its back (another node, expiry): the fresh answer is reused...
        assert!(store.delete_session("alice", &made.id).await.unwrap());
        assert_eq!(sessions.health().await, (true, 1));
        // ...until it is half a second old.
        tokio::time::sleep(HEALTH_FRESH_FOR).await;
        assert_eq!(sessions.health().await, (true, 0));
        // A delete through the service counts as a write too.
        let made = sessions
            .create(&alice, "claude", "active", None, json!({}))
            .await
            .unwrap();
        assert_eq!(sessions.health().await, (true, 1));
        sessions.delete(&alice, &made.id).await.unwrap();
        assert_eq!(sessions.health().await, (true, 0));
    }
}
