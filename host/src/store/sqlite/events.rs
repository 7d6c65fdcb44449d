//! [`EventStore`] on SQLite. A tenant's next sequence number comes from `bus_heads` in the
//! append's own transaction, so two appends never share a number and none is skipped.

use super::Sqlite;
use crate::store::{EventKind, EventRow, EventStore, NewEventRow, StoreResult};
use rusqlite::{OptionalExtension, params};

const COLUMNS: &str = "id, tenant, seq, kind, at, project_id, task_id, command_id, data";

fn event(row: &rusqlite::Row<'_>) -> rusqlite::Result<EventRow> {
    let kind: String = row.get(3)?;
    Ok(EventRow {
        id: row.get(0)?,
        tenant: row.get(1)?,
        seq: row.get::<_, i64>(2)?.max(0) as u64,
        kind: EventKind::parse(&kind)
            .ok_or_else(|| super::bad_column(3, anyhow::anyhow!("unknown event kind {kind:?}")))?,
        at: row.get(4)?,
        project_id: row.get(5)?,
        task_id: row.get(6)?,
        command_id: row.get(7)?,
        data: row.get(8)?,
    })
}

#[async_trait::async_trait]
impl EventStore for Sqlite {
    async fn append_bus_events(
        &self,
        tenant: &str,
        events: &[NewEventRow<'_>],
    ) -> StoreResult<Vec<(i64, u64)>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let count = events.len() as i64;
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        // The head moves past the whole batch at once; the batch takes the numbers below it.
        let last: i64 = tx
            .prepare_cached(
                "INSERT INTO bus_heads (tenant, seq) VALUES (?1, ?2)
             ON CONFLICT (tenant) DO UPDATE SET seq = seq + ?2 RETURNING seq",
            )?
            .query_row(params![tenant, count], |r| r.get(0))?;
        let mut stored = Vec::with_capacity(events.len());
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO bus_events (tenant, seq, kind, at, project_id, task_id, command_id, data)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            for (seq, e) in (last - count + 1..).zip(events) {
                insert.execute(params![
                    tenant,
                    seq,
                    e.kind.as_str(),
                    e.at,
                    e.project_id,
                    e.task_id,
                    e.command_id,
                    e.data
                ])?;
                stored.push((tx.last_insert_rowid(), seq as u64));
            }
        }
        tx.commit()?;
        Ok(stored)
    }

    async fn events_after(
        &self,
        tenant: &str,
        after: u64,
        limit: u32,
    ) -> StoreResult<Vec<EventRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM bus_events WHERE tenant = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3"
        ))?;
        let rows = stmt.query_map(
            params![tenant, after.min(i64::MAX as u64) as i64, limit],
            event,
        )?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    async fn events_since(&self, after_id: i64, limit: u32) -> StoreResult<Vec<EventRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM bus_events WHERE id > ?1 ORDER BY id LIMIT ?2"
        ))?;
        let rows = stmt.query_map(params![after_id, limit], event)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    async fn last_event_id(&self) -> StoreResult<i64> {
        Ok(
            self.query_row("SELECT COALESCE(MAX(id), 0) FROM bus_events", [], |r| {
                r.get(0)
            })?,
        )
    }

    async fn event_head(&self, tenant: &str) -> StoreResult<u64> {
        let seq: Option<i64> = self
            .query_row(
                "SELECT seq FROM bus_heads WHERE tenant = ?1",
                params![tenant],
                |r| r.get(0),
            )
            .optional()?;
        Ok(seq.unwrap_or(0).max(0) as u64)
    }

    async fn oldest_event(&self, tenant: &str) -> StoreResult<Option<u64>> {
        let seq: Option<i64> = self.query_row(
            "SELECT MIN(seq) FROM bus_events WHERE tenant = ?1",
            params![tenant],
            |r| r.get(0),
        )?;
        Ok(seq.map(|s| s.max(0) as u64))
    }

    async fn drop_events_before(&self, before: i64, limit: u32) -> StoreResult<u64> {
        let n = self.execute(
            "DELETE FROM bus_events WHERE id IN (SELECT id FROM bus_events WHERE at < ?1 ORDER BY id LIMIT ?2)",
            params![before, limit],
        )?;
        Ok(n as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_event(kind: EventKind, at: i64) -> NewEventRow<'static> {
        NewEventRow {
            kind,
            at,
            project_id: Some("p1"),
            task_id: None,
            command_id: None,
            data: "{}",
        }
    }

    /// Append one event; its global id and sequence number.
    async fn append(store: &Sqlite, tenant: &str, kind: EventKind, at: i64) -> (i64, u64) {
        store
            .append_bus_events(tenant, &[new_event(kind, at)])
            .await
            .unwrap()[0]
    }

    #[tokio::test]
    async fn each_tenant_counts_its_own_events_without_gaps_or_reuse() {
        let dir = tempfile::tempdir().unwrap();
        let store = Sqlite::open(&dir.path().join("g.db")).unwrap();
        let (a1, s1) = append(&store, "a", EventKind::TaskCreated, 10).await;
        let (_, t1) = append(&store, "b", EventKind::TaskCreated, 11).await;
        let (a2, s2) = append(&store, "a", EventKind::TaskUpdated, 12).await;
        assert_eq!((s1, t1, s2), (1, 1, 2));
        assert!(a2 > a1);
        let a = store.events_after("a", 0, 10).await.unwrap();
        assert_eq!(a.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2]);
        assert!(a.iter().all(|e| e.tenant == "a"));
        assert_eq!(
            store.events_after("a", 1, 10).await.unwrap()[0].kind,
            EventKind::TaskUpdated
        );
        assert_eq!(store.events_since(a1, 10).await.unwrap().len(), 2);
        // Retention drops old events; the head keeps counting from where it was.
        assert_eq!(store.drop_events_before(12, 100).await.unwrap(), 2);
        assert_eq!(store.oldest_event("a").await.unwrap(), Some(2));
        assert_eq!(store.oldest_event("b").await.unwrap(), None);
        let (_, s3) = append(&store, "a", EventKind::TaskUpdated, 13).await;
        assert_eq!(s3, 3);
        assert_eq!(store.event_head("a").await.unwrap(), 3);
        assert_eq!(store.event_head("nobody").await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_batch_takes_consecutive_numbers_in_one_go() {
        let dir = tempfile::tempdir().unwrap();
        let store = Sqlite::open(&dir.path().join("g.db")).unwrap();
        append(&store, "a", EventKind::TaskCreated, 1).await;
        let batch: Vec<_> = (0..5)
            .map(|i| new_event(EventKind::CommandOutput, 10 + i))
            .collect();
        let stored = store.append_bus_events("a", &batch).await.unwrap();
        assert_eq!(
            stored.iter().map(|(_, seq)| *seq).collect::<Vec<_>>(),
            vec![2, 3, 4, 5, 6]
        );
        assert!(stored.windows(2).all(|w| w[1].0 > w[0].0));
        let read = store.events_after("a", 1, 10).await.unwrap();
        assert_eq!(
            read.iter().map(|e| e.at).collect::<Vec<_>>(),
            vec![10, 11, 12, 13, 14]
        );
        assert!(store.append_bus_events("a", &[]).await.unwrap().is_empty());
        assert_eq!(store.event_head("a").await.unwrap(), 6);
    }
}
