//! [`WebhookStore`] on SQLite: webhooks, the outbox of their deliveries, and the consumer's
//! cursor, which moves in the same transaction as the deliveries it made.

use super::Sqlite;
use crate::store::{
    AttemptRecord, DeliveryRecord, DeliveryStatus, StoreError, StoreResult, WebhookRecord,
    WebhookStore,
};
use rusqlite::{OptionalExtension, params, params_from_iter};

const WEBHOOK_COLUMNS: &str = "id, tenant, url, events, secret, active, created_at, updated_at";

const DELIVERY_COLUMNS: &str = "id, webhook_id, tenant, event, event_id, body, status, attempts, next_attempt_at, last_status, last_error, created_at, updated_at, delivered_at";

fn webhook(row: &rusqlite::Row<'_>) -> rusqlite::Result<WebhookRecord> {
    let events: String = row.get(3)?;
    Ok(WebhookRecord {
        id: row.get(0)?,
        tenant: row.get(1)?,
        url: row.get(2)?,
        events: serde_json::from_str(&events).map_err(|e| super::bad_column(3, e.into()))?,
        secret: row.get(4)?,
        active: row.get(5)?,
        created_at: row.get(6)?,
        updated_at: row.get(7)?,
    })
}

fn delivery(row: &rusqlite::Row<'_>) -> rusqlite::Result<DeliveryRecord> {
    let status: String = row.get(6)?;
    Ok(DeliveryRecord {
        id: row.get(0)?,
        webhook_id: row.get(1)?,
        tenant: row.get(2)?,
        event: row.get(3)?,
        event_id: row.get(4)?,
        body: row.get(5)?,
        status: DeliveryStatus::parse(&status).ok_or_else(|| {
            super::bad_column(6, anyhow::anyhow!("unknown delivery status {status:?}"))
        })?,
        attempts: row.get(7)?,
        next_attempt_at: row.get(8)?,
        last_status: row.get(9)?,
        last_error: row.get(10)?,
        created_at: row.get(11)?,
        updated_at: row.get(12)?,
        delivered_at: row.get(13)?,
    })
}

/// `?first, ?first+1, …`: `n` numbered parameters.
fn numbered(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("?{i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn events_json(events: &[String]) -> String {
    serde_json::Value::from(events.to_vec()).to_string()
}

#[async_trait::async_trait]
impl WebhookStore for Sqlite {
    async fn insert_webhook(&self, w: &WebhookRecord) -> StoreResult<()> {
        self.execute(
            &format!(
                "INSERT INTO webhooks ({WEBHOOK_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
            ),
            params![
                w.id,
                w.tenant,
                w.url,
                events_json(&w.events),
                w.secret,
                w.active,
                w.created_at,
                w.updated_at
            ],
        )?;
        Ok(())
    }

    async fn get_webhook(&self, tenant: &str, id: &str) -> StoreResult<Option<WebhookRecord>> {
        Ok(self
            .query_row(
                &format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE tenant = ?1 AND id = ?2"),
                params![tenant, id],
                webhook,
            )
            .optional()?)
    }

    async fn list_webhooks(&self, tenant: &str) -> StoreResult<Vec<WebhookRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE tenant = ?1 ORDER BY created_at, id"
        ))?;
        let rows = stmt.query_map(params![tenant], webhook)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    async fn update_webhook(&self, w: &WebhookRecord) -> StoreResult<bool> {
        let n = self.execute(
            "UPDATE webhooks SET url = ?3, events = ?4, secret = ?5, active = ?6, updated_at = ?7
             WHERE tenant = ?1 AND id = ?2",
            params![
                w.tenant,
                w.id,
                w.url,
                events_json(&w.events),
                w.secret,
                w.active,
                w.updated_at
            ],
        )?;
        Ok(n == 1)
    }

    async fn delete_webhook(&self, tenant: &str, id: &str) -> StoreResult<bool> {
        let n = self.execute(
            "DELETE FROM webhooks WHERE tenant = ?1 AND id = ?2",
            params![tenant, id],
        )?;
        Ok(n == 1)
    }

    async fn active_webhooks(&self) -> StoreResult<Vec<WebhookRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE active = 1 ORDER BY created_at, id"
        ))?;
        let rows = stmt.query_map([], webhook)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    async fn webhook_cursor(&self) -> StoreResult<i64> {
        Ok(self
            .query_row(
                "SELECT last_event_id FROM webhook_cursor WHERE id = 0",
                [],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0))
    }

    async fn enqueue_deliveries(
        &self,
        deliveries: &[DeliveryRecord],
        cursor: i64,
    ) -> StoreResult<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let stored: i64 = tx
            .query_row(
                "SELECT last_event_id FROM webhook_cursor WHERE id = 0",
                [],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0);
        if cursor < stored {
            return Err(StoreError::Conflict(format!(
                "the webhook cursor is at {stored}, past {cursor}"
            )));
        }
        {
            let mut insert = tx.prepare_cached(&format!(
                "INSERT INTO webhook_deliveries ({DELIVERY_COLUMNS})
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
            ))?;
            for d in deliveries {
                insert.execute(params![
                    d.id,
                    d.webhook_id,
                    d.tenant,
                    d.event,
                    d.event_id,
                    d.body,
                    d.status.as_str(),
                    d.attempts,
                    d.next_attempt_at,
                    d.last_status,
                    d.last_error,
                    d.created_at,
                    d.updated_at,
                    d.delivered_at
                ])?;
            }
        }
        tx.execute(
            "INSERT INTO webhook_cursor (id, last_event_id) VALUES (0, ?1)
             ON CONFLICT (id) DO UPDATE SET last_event_id = excluded.last_event_id",
            params![cursor],
        )?;
        tx.commit()?;
        Ok(())
    }

    async fn due_deliveries(
        &self,
        now: i64,
        per_tenant: usize,
        limit: usize,
        busy: &[String],
    ) -> StoreResult<Vec<DeliveryRecord>> {
        // At most `per_tenant` of each tenant, so one tenant's backlog cannot fill the batch
        // and hold back the others'.
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM (
                 SELECT *, ROW_NUMBER() OVER (PARTITION BY tenant ORDER BY next_attempt_at, created_at) AS rank
                 FROM webhook_deliveries
                 WHERE status = 'pending' AND next_attempt_at <= ?1 AND id NOT IN ({})
             ) WHERE rank <= ?2 ORDER BY next_attempt_at, created_at LIMIT ?3",
            numbered(4, busy.len())
        );
        let mut values: Vec<rusqlite::types::Value> = vec![
            now.into(),
            (per_tenant.min(i64::MAX as usize) as i64).into(),
            (limit.min(i64::MAX as usize) as i64).into(),
        ];
        values.extend(busy.iter().map(|id| id.clone().into()));
        let conn = self.conn();
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt.query_map(params_from_iter(values), delivery)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    async fn next_due(&self, busy: &[String]) -> StoreResult<Option<i64>> {
        let sql = format!(
            "SELECT MIN(next_attempt_at) FROM webhook_deliveries
             WHERE status = 'pending' AND id NOT IN ({})",
            numbered(1, busy.len())
        );
        let conn = self.conn();
        let mut stmt = conn.prepare(&sql)?;
        Ok(stmt.query_row(params_from_iter(busy), |r| r.get(0))?)
    }

    async fn record_attempt(&self, id: &str, o: &AttemptRecord) -> StoreResult<()> {
        let delivered = (o.status == DeliveryStatus::Delivered).then_some(o.at);
        self.execute(
            "UPDATE webhook_deliveries SET status = ?2, attempts = attempts + 1,
                 next_attempt_at = ?3, last_status = ?4, last_error = ?5, updated_at = ?6,
                 delivered_at = COALESCE(?7, delivered_at)
             WHERE id = ?1",
            params![
                id,
                o.status.as_str(),
                o.next_attempt_at,
                o.last_status,
                o.last_error,
                o.at,
                delivered
            ],
        )?;
        Ok(())
    }

    async fn list_deliveries(
        &self,
        tenant: &str,
        webhook_id: &str,
        offset: u32,
        limit: u32,
    ) -> StoreResult<(Vec<DeliveryRecord>, u64)> {
        let conn = self.conn();
        let total: i64 = conn
            .prepare_cached(
                "SELECT COUNT(*) FROM webhook_deliveries WHERE tenant = ?1 AND webhook_id = ?2",
            )?
            .query_row(params![tenant, webhook_id], |r| r.get(0))?;
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE tenant = ?1 AND webhook_id = ?2
             ORDER BY created_at DESC, rowid DESC LIMIT ?3 OFFSET ?4"
        ))?;
        let rows = stmt.query_map(params![tenant, webhook_id, limit, offset], delivery)?;
        Ok((rows.collect::<rusqlite::Result<_>>()?, total.max(0) as u64))
    }

    async fn redeliver(
        &self,
        tenant: &str,
        webhook_id: &str,
        id: &str,
        now: i64,
    ) -> StoreResult<Option<DeliveryRecord>> {
        let conn = self.conn();
        Ok(conn
            .prepare_cached(&format!(
                "UPDATE webhook_deliveries SET status = 'pending', attempts = 0,
                     next_attempt_at = ?4, updated_at = ?4
                 WHERE tenant = ?1 AND webhook_id = ?2 AND id = ?3
                 RETURNING {DELIVERY_COLUMNS}"
            ))?
            .query_row(params![tenant, webhook_id, id, now], delivery)
            .optional()?)
    }
}
