//! [`EventStore`] on PostgreSQL. A tenant's next sequence number comes from `bus_heads` in the
//! append's own transaction, whose row lock serialises the tenant's appenders: two appends
//! never share a number and none is skipped, whichever nodes make them.
//!
//! Global ids come from an identity, which hands them out before commit: two appends of
//! different tenants could commit out of order, and a durable consumer that had read past the
//! later one (`events_since`) would never see the earlier. So ids are taken, and committed,
//! under one advisory lock ([`BUS_LOCK`]), as SQLite's single writer does.

use super::{Postgres, bad_column, signed, unsigned};
use crate::store::{EventKind, EventRow, EventStore, NewEventRow, StoreResult};
use tokio_postgres::Row;

/// The advisory lock appends to the bus hold from taking their ids to commit ("bus" in ASCII;
/// unlike the migrations' lock).
const BUS_LOCK: i64 = 0x62_75_73;

const COLUMNS: &str = "id, tenant, seq, kind, at, project_id, task_id, command_id, data";

fn event(row: &Row) -> StoreResult<EventRow> {
    let kind: &str = row.try_get(3)?;
    Ok(EventRow {
        id: row.try_get(0)?,
        tenant: row.try_get(1)?,
        seq: unsigned(row.try_get(2)?),
        kind: EventKind::parse(kind)
            .ok_or_else(|| bad_column("kind", anyhow::anyhow!("unknown event kind {kind:?}")))?,
        at: row.try_get(4)?,
        project_id: row.try_get(5)?,
        task_id: row.try_get(6)?,
        command_id: row.try_get(7)?,
        data: row.try_get(8)?,
    })
}

#[async_trait::async_trait]
impl EventStore for Postgres {
    async fn append_bus_events(
        &self,
        tenant: &str,
        events: &[NewEventRow<'_>],
    ) -> StoreResult<Vec<(i64, u64)>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let count = signed(events.len() as u64);
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // The head moves past the whole batch at once; the batch takes the numbers below it.
        let last: i64 = tx
            .query_one(
                &tx.prepare_cached(
                    "INSERT INTO bus_heads (tenant, seq) VALUES ($1, $2)
                     ON CONFLICT (tenant) DO UPDATE SET seq = bus_heads.seq + $2 RETURNING seq",
                )
                .await?,
                &[&tenant, &count],
            )
            .await?
            .try_get(0)?;
        tx.execute(
            &tx.prepare_cached("SELECT pg_advisory_xact_lock($1)")
                .await?,
            &[&BUS_LOCK],
        )
        .await?;
        // One statement for the batch, so the lock is held for one round trip and the commit.
        // The rows go in (and take their ids) in the batch's order.
        let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
        let ats: Vec<i64> = events.iter().map(|e| e.at).collect();
        let projects: Vec<Option<&str>> = events.iter().map(|e| e.project_id).collect();
        let tasks: Vec<Option<&str>> = events.iter().map(|e| e.task_id).collect();
        let commands: Vec<Option<&str>> = events.iter().map(|e| e.command_id).collect();
        let data: Vec<&str> = events.iter().map(|e| e.data).collect();
        let rows = tx
            .query(
                &tx.prepare_cached(
                    "INSERT INTO bus_events (tenant, seq, kind, at, project_id, task_id, command_id, data)
                     SELECT $1, $2 + e.n, e.kind, e.at, e.project_id, e.task_id, e.command_id, e.data
                     FROM unnest($3::TEXT[], $4::BIGINT[], $5::TEXT[], $6::TEXT[], $7::TEXT[], $8::TEXT[])
                         WITH ORDINALITY AS e (kind, at, project_id, task_id, command_id, data, n)
                     ORDER BY e.n
                     RETURNING id, seq",
                )
                .await?,
                &[
                    &tenant,
                    &(last - count),
                    &kinds,
                    &ats,
                    &projects,
                    &tasks,
                    &commands,
                    &data,
                ],
            )
            .await?;
        let mut stored = rows
            .iter()
            .map(|r| Ok((r.try_get(0)?, unsigned(r.try_get(1)?))))
            .collect::<StoreResult<Vec<(i64, u64)>>>()?;
        stored.sort_unstable_by_key(|&(_, seq)| seq);
        tx.commit().await?;
        Ok(stored)
    }

    async fn events_after(
        &self,
        tenant: &str,
        after: u64,
        limit: u32,
    ) -> StoreResult<Vec<EventRow>> {
        self.query(
            &format!(
                "SELECT {COLUMNS} FROM bus_events WHERE tenant = $1 AND seq > $2 ORDER BY seq LIMIT $3"
            ),
            &[&tenant, &signed(after), &i64::from(limit)],
        )
        .await?
        .iter()
        .map(event)
        .collect()
    }

    async fn events_since(&self, after_id: i64, limit: u32) -> StoreResult<Vec<EventRow>> {
        self.query(
            &format!("SELECT {COLUMNS} FROM bus_events WHERE id > $1 ORDER BY id LIMIT $2"),
            &[&after_id, &i64::from(limit)],
        )
        .await?
        .iter()
        .map(event)
        .collect()
    }

    async fn last_event_id(&self) -> StoreResult<i64> {
        Ok(self
            .query_opt("SELECT COALESCE(MAX(id), 0) FROM bus_events", &[])
            .await?
            .map_or(Ok(0), |r| r.try_get(0))?)
    }

    async fn event_head(&self, tenant: &str) -> StoreResult<u64> {
        let seq: Option<i64> = self
            .query_opt("SELECT seq FROM bus_heads WHERE tenant = $1", &[&tenant])
            .await?
            .map(|r| r.try_get(0))
            .transpose()?;
        Ok(unsigned(seq.unwrap_or(0)))
    }

    async fn oldest_event(&self, tenant: &str) -> StoreResult<Option<u64>> {
        let seq: Option<i64> = self
            .query_opt(
                "SELECT MIN(seq) FROM bus_events WHERE tenant = $1",
                &[&tenant],
            )
            .await?
            .map_or(Ok(None), |r| r.try_get(0))?;
        Ok(seq.map(unsigned))
    }

    async fn drop_events_before(&self, before: i64, limit: u32) -> StoreResult<u64> {
        // SKIP LOCKED: two nodes pruning at once take different rows instead of one waiting
        // for the other's and counting none.
        self.execute(
            "DELETE FROM bus_events WHERE id IN (
                 SELECT id FROM bus_events WHERE at < $1 ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED
             )",
            &[&before, &i64::from(limit)],
        )
        .await
    }
}
