//! [`WorkSessionStore`] on SQLite: working sessions and their history. A session's history is
//! ordered by an increasing `seq`, not by time alone, so entries written in the same
//! millisecond keep the order they happened in.

use super::Sqlite;
use crate::store::{
    SessionEventKind, SessionEventRecord, SessionLiveness, StoreResult, WorkSessionQuery,
    WorkSessionRecord, WorkSessionRow, WorkSessionStore,
};
use rusqlite::types::Value as Sql;
use rusqlite::{OptionalExtension, params, params_from_iter};

/// A session's columns and its project's name (`NULL` once the project is deleted).
const SESSION_SELECT: &str = "SELECT s.id, s.tenant, s.user_id, s.project_id, s.settings, s.created_at, s.last_accessed, s.expires_at,
        (SELECT p.name FROM projects p WHERE p.id = s.project_id AND p.tenant = s.tenant AND p.deleted_at IS NULL)
     FROM work_sessions s";

fn session(row: &rusqlite::Row<'_>) -> rusqlite::Result<WorkSessionRow> {
    Ok(WorkSessionRow {
        session: WorkSessionRecord {
            id: row.get(0)?,
            tenant: row.get(1)?,
            user_id: row.get(2)?,
            project_id: row.get(3)?,
            settings: row.get(4)?,
            created_at: row.get(5)?,
            last_accessed: row.get(6)?,
            expires_at: row.get(7)?,
        },
        project_name: row.get(8)?,
    })
}

fn event(row: &rusqlite::Row<'_>) -> rusqlite::Result<SessionEventRecord> {
    let kind: String = row.get(2)?;
    Ok(SessionEventRecord {
        id: row.get(0)?,
        at: row.get(1)?,
        kind: SessionEventKind::parse(&kind).ok_or_else(|| {
            super::bad_column(2, anyhow::anyhow!("unknown session event {kind:?}"))
        })?,
        user_id: row.get(3)?,
        data: row.get(4)?,
    })
}

fn insert_event(
    tx: &rusqlite::Transaction<'_>,
    tenant: &str,
    session_id: &str,
    e: &SessionEventRecord,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO work_session_history (id, tenant, session_id, at, kind, user_id, data)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        e.id,
        tenant,
        session_id,
        e.at,
        e.kind.as_str(),
        e.user_id,
        e.data
    ])?;
    Ok(())
}

/// Whether the session exists (not deleted), read inside the writing transaction.
fn live(tx: &rusqlite::Transaction<'_>, tenant: &str, id: &str) -> rusqlite::Result<bool> {
    Ok(tx
        .prepare_cached(
            "SELECT 1 FROM work_sessions WHERE tenant = ?1 AND id = ?2 AND deleted_at IS NULL",
        )?
        .query_row(params![tenant, id], |_| Ok(()))
        .optional()?
        .is_some())
}

#[async_trait::async_trait]
impl WorkSessionStore for Sqlite {
    async fn insert_work_session(
        &self,
        s: &WorkSessionRecord,
        first: &SessionEventRecord,
    ) -> StoreResult<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.prepare_cached(
            "INSERT INTO work_sessions (id, tenant, user_id, project_id, settings, created_at, last_accessed, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?
        .execute(params![
            s.id,
            s.tenant,
            s.user_id,
            s.project_id,
            s.settings,
            s.created_at,
            s.last_accessed,
            s.expires_at
        ])?;
        insert_event(&tx, &s.tenant, &s.id, first)?;
        tx.commit()?;
        Ok(())
    }

    async fn get_work_session(
        &self,
        tenant: &str,
        id: &str,
    ) -> StoreResult<Option<WorkSessionRow>> {
        Ok(self
            .query_row(
                &format!(
                    "{SESSION_SELECT} WHERE s.tenant = ?1 AND s.id = ?2 AND s.deleted_at IS NULL"
                ),
                params![tenant, id],
                session,
            )
            .optional()?)
    }

    async fn list_work_sessions(
        &self,
        tenant: &str,
        q: &WorkSessionQuery,
    ) -> StoreResult<(Vec<WorkSessionRow>, u64)> {
        let mut where_sql = String::from("s.tenant = ?1 AND s.deleted_at IS NULL");
        let mut args = vec![Sql::Text(tenant.to_string())];
        if let Some(user) = &q.user_id {
            args.push(Sql::Text(user.clone()));
            where_sql += &format!(" AND s.user_id = ?{}", args.len());
        }
        if let Some(project) = &q.project_id {
            args.push(Sql::Text(project.clone()));
            where_sql += &format!(" AND s.project_id = ?{}", args.len());
        }
        if let Some(liveness) = q.liveness {
            args.push(Sql::Integer(q.now));
            // The same rule as `crate::work_sessions`' status: expired once `now` reaches
            // `expires_at`.
            let op = match liveness {
                SessionLiveness::Active => ">",
                SessionLiveness::Expired => "<=",
            };
            where_sql += &format!(" AND s.expires_at {op} ?{}", args.len());
        }
        let conn = self.conn();
        let total: i64 = conn
            .prepare_cached(&format!(
                "SELECT COUNT(*) FROM work_sessions s WHERE {where_sql}"
            ))?
            .query_row(params_from_iter(args.iter()), |r| r.get(0))?;
        args.push(Sql::Integer(i64::from(q.limit)));
        let limit = args.len();
        args.push(Sql::Integer(i64::from(q.offset)));
        let offset = args.len();
        let mut stmt = conn.prepare_cached(&format!(
            "{SESSION_SELECT} WHERE {where_sql} ORDER BY s.created_at DESC, s.id DESC LIMIT ?{limit} OFFSET ?{offset}"
        ))?;
        let rows = stmt
            .query_map(params_from_iter(args.iter()), session)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok((rows, total.max(0) as u64))
    }

    async fn update_work_session(
        &self,
        s: &WorkSessionRecord,
        event: Option<&SessionEventRecord>,
    ) -> StoreResult<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let n = tx
            .prepare_cached(
                "UPDATE work_sessions SET settings = ?3, last_accessed = ?4
                 WHERE tenant = ?1 AND id = ?2 AND deleted_at IS NULL",
            )?
            .execute(params![s.tenant, s.id, s.settings, s.last_accessed])?;
        if n == 0 {
            return Ok(false);
        }
        if let Some(e) = event {
            insert_event(&tx, &s.tenant, &s.id, e)?;
        }
        tx.commit()?;
        Ok(true)
    }

    async fn delete_work_session(&self, tenant: &str, id: &str, at: i64) -> StoreResult<bool> {
        let n = self.execute(
            "UPDATE work_sessions SET deleted_at = ?3 WHERE tenant = ?1 AND id = ?2 AND deleted_at IS NULL",
            params![tenant, id, at],
        )?;
        Ok(n > 0)
    }

    async fn add_session_event(
        &self,
        tenant: &str,
        session_id: &str,
        e: &SessionEventRecord,
    ) -> StoreResult<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        if !live(&tx, tenant, session_id)? {
            return Ok(false);
        }
        insert_event(&tx, tenant, session_id, e)?;
        tx.commit()?;
        Ok(true)
    }

    async fn session_events(
        &self,
        tenant: &str,
        session_id: &str,
    ) -> StoreResult<Vec<SessionEventRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT id, at, kind, user_id, data FROM work_session_history
             WHERE tenant = ?1 AND session_id = ?2 ORDER BY seq",
        )?;
        let rows = stmt
            .query_map(params![tenant, session_id], event)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }
}
