//! [`WorkSessionStore`] on PostgreSQL: working sessions and their history. A session's history
//! is ordered by an increasing `seq` (an identity column), not by time alone, so entries
//! written in the same millisecond keep the order they were written in.

use super::{Postgres, bad_column, unsigned};
use crate::store::{
    SessionEventKind, SessionEventRecord, SessionLiveness, StoreResult, WorkSessionQuery,
    WorkSessionRecord, WorkSessionRow, WorkSessionStore,
};
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

/// A session's columns and its project's name (`NULL` once the project is deleted).
const SESSION_SELECT: &str = "SELECT s.id, s.tenant, s.user_id, s.project_id, s.settings, s.created_at, s.last_accessed, s.expires_at,
        (SELECT p.name FROM projects p WHERE p.id = s.project_id AND p.tenant = s.tenant AND p.deleted_at IS NULL)
     FROM work_sessions s";

fn session(row: &Row) -> StoreResult<WorkSessionRow> {
    Ok(WorkSessionRow {
        session: WorkSessionRecord {
            id: row.try_get(0)?,
            tenant: row.try_get(1)?,
            user_id: row.try_get(2)?,
            project_id: row.try_get(3)?,
            settings: row.try_get(4)?,
            created_at: row.try_get(5)?,
            last_accessed: row.try_get(6)?,
            expires_at: row.try_get(7)?,
        },
        project_name: row.try_get(8)?,
    })
}

fn event(row: &Row) -> StoreResult<SessionEventRecord> {
    let kind: &str = row.try_get(2)?;
    Ok(SessionEventRecord {
        id: row.try_get(0)?,
        at: row.try_get(1)?,
        kind: SessionEventKind::parse(kind)
            .ok_or_else(|| bad_column("kind", anyhow::anyhow!("unknown session event {kind:?}")))?,
        user_id: row.try_get(3)?,
        data: row.try_get(4)?,
    })
}

async fn insert_event<C: GenericClient>(
    tx: &C,
    tenant: &str,
    session_id: &str,
    e: &SessionEventRecord,
) -> StoreResult<()> {
    tx.execute(
        &tx.prepare_cached(
            "INSERT INTO work_session_history (id, tenant, session_id, at, kind, user_id, data)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .await?,
        &[
            &e.id,
            &tenant,
            &session_id,
            &e.at,
            &e.kind.as_str(),
            &e.user_id,
            &e.data,
        ],
    )
    .await?;
    Ok(())
}

#[async_trait::async_trait]
impl WorkSessionStore for Postgres {
    async fn insert_work_session(
        &self,
        s: &WorkSessionRecord,
        first: &SessionEventRecord,
    ) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute(
            &tx.prepare_cached(
                "INSERT INTO work_sessions (id, tenant, user_id, project_id, settings, created_at, last_accessed, expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .await?,
            &[
                &s.id,
                &s.tenant,
                &s.user_id,
                &s.project_id,
                &s.settings,
                &s.created_at,
                &s.last_accessed,
                &s.expires_at,
            ],
        )
        .await?;
        insert_event(&tx, &s.tenant, &s.id, first).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn get_work_session(
        &self,
        tenant: &str,
        id: &str,
    ) -> StoreResult<Option<WorkSessionRow>> {
        self.query_opt(
            &format!("{SESSION_SELECT} WHERE s.tenant = $1 AND s.id = $2 AND s.deleted_at IS NULL"),
            &[&tenant, &id],
        )
        .await?
        .as_ref()
        .map(session)
        .transpose()
    }

    async fn list_work_sessions(
        &self,
        tenant: &str,
        q: &WorkSessionQuery,
    ) -> StoreResult<(Vec<WorkSessionRow>, u64)> {
        let (limit, offset) = (i64::from(q.limit), i64::from(q.offset));
        let mut where_sql = String::from("s.tenant = $1 AND s.deleted_at IS NULL");
        let mut args: Vec<&(dyn ToSql + Sync)> = vec![&tenant];
        if let Some(user) = &q.user_id {
            args.push(user);
            where_sql += &format!(" AND s.user_id = ${}", args.len());
        }
        if let Some(project) = &q.project_id {
            args.push(project);
            where_sql += &format!(" AND s.project_id = ${}", args.len());
        }
        if let Some(liveness) = q.liveness {
            args.push(&q.now);
            // The same rule as `crate::work_sessions`' status: expired once `now` reaches
            // `expires_at`.
            let op = match liveness {
                SessionLiveness::Active => ">",
                SessionLiveness::Expired => "<=",
            };
            where_sql += &format!(" AND s.expires_at {op} ${}", args.len());
        }
        // Both from one snapshot, so the total agrees with the page.
        let mut client = self.client().await?;
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let total: i64 = tx
            .query_one(
                &tx.prepare_cached(&format!(
                    "SELECT COUNT(*) FROM work_sessions s WHERE {where_sql}"
                ))
                .await?,
                &args,
            )
            .await?
            .try_get(0)?;
        args.push(&limit);
        let limit_at = args.len();
        args.push(&offset);
        let offset_at = args.len();
        // Ids compare by their bytes, as on SQLite, whatever the database's collation.
        let found = tx
            .query(
                &tx.prepare_cached(&format!(
                    "{SESSION_SELECT} WHERE {where_sql} ORDER BY s.created_at DESC, s.id COLLATE \"C\" DESC LIMIT ${limit_at} OFFSET ${offset_at}"
                ))
                .await?,
                &args,
            )
            .await?;
        tx.commit().await?;
        let rows = found.iter().map(session).collect::<StoreResult<_>>()?;
        Ok((rows, unsigned(total)))
    }

    async fn update_work_session(
        &self,
        s: &WorkSessionRecord,
        event: Option<&SessionEventRecord>,
    ) -> StoreResult<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // The update locks the row: a deletion waits until the event is in.
        let n = tx
            .execute(
                &tx.prepare_cached(
                    "UPDATE work_sessions SET settings = $3, last_accessed = $4
                     WHERE tenant = $1 AND id = $2 AND deleted_at IS NULL",
                )
                .await?,
                &[&s.tenant, &s.id, &s.settings, &s.last_accessed],
            )
            .await?;
        if n == 0 {
            return Ok(false);
        }
        if let Some(e) = event {
            insert_event(&tx, &s.tenant, &s.id, e).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn delete_work_session(&self, tenant: &str, id: &str, at: i64) -> StoreResult<bool> {
        let n = self
            .execute(
                "UPDATE work_sessions SET deleted_at = $3 WHERE tenant = $1 AND id = $2 AND deleted_at IS NULL",
                &[&tenant, &id, &at],
            )
            .await?;
        Ok(n > 0)
    }

    async fn add_session_event(
        &self,
        tenant: &str,
        session_id: &str,
        e: &SessionEventRecord,
    ) -> StoreResult<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // FOR SHARE: a deletion (another node's) waits for this event rather than slipping in
        // between the check and the insert; other events need not wait.
        let live = tx
            .query_opt(
                &tx.prepare_cached(
                    "SELECT 1 FROM work_sessions WHERE tenant = $1 AND id = $2 AND deleted_at IS NULL FOR SHARE",
                )
                .await?,
                &[&tenant, &session_id],
            )
            .await?
            .is_some();
        if !live {
            return Ok(false);
        }
        insert_event(&tx, tenant, session_id, e).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn session_events(
        &self,
        tenant: &str,
        session_id: &str,
    ) -> StoreResult<Vec<SessionEventRecord>> {
        self.query(
            "SELECT id, at, kind, user_id, data FROM work_session_history
             WHERE tenant = $1 AND session_id = $2 ORDER BY seq",
            &[&tenant, &session_id],
        )
        .await?
        .iter()
        .map(event)
        .collect()
    }
}
