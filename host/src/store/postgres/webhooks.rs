//! [`WebhookStore`] on PostgreSQL: webhooks, the outbox of their deliveries, and the consumer's
//! cursor, which moves in the same transaction as the deliveries it made.
//!
//! Several nodes may each run a consumer. The cursor's row is locked while a batch is judged
//! and stored, it never moves back (`GREATEST`), and a batch drops the deliveries of events
//! another consumer already stored (see `enqueue_deliveries`). Sending is not claimed here:
//! the trait has no claim step (`due_deliveries` only reads), so one node's worker sends.

use super::{Postgres, bad_column, signed, unsigned};
use crate::store::{
    AttemptRecord, DeliveryRecord, DeliveryStatus, StoreError, StoreResult, WebhookRecord,
    WebhookStore,
};
use tokio_postgres::Row;

const WEBHOOK_COLUMNS: &str = "id, tenant, url, events, secret, active, created_at, updated_at";

const DELIVERY_COLUMNS: &str = "id, webhook_id, tenant, event, event_id, body, status, attempts, next_attempt_at, last_status, last_error, created_at, updated_at, delivered_at";

fn webhook(row: &Row) -> StoreResult<WebhookRecord> {
    let events: &str = row.try_get(3)?;
    Ok(WebhookRecord {
        id: row.try_get(0)?,
        tenant: row.try_get(1)?,
        url: row.try_get(2)?,
        events: serde_json::from_str(events).map_err(|e| bad_column("events", e.into()))?,
        secret: row.try_get(4)?,
        active: row.try_get(5)?,
        created_at: row.try_get(6)?,
        updated_at: row.try_get(7)?,
    })
}

fn delivery(row: &Row) -> StoreResult<DeliveryRecord> {
    let status: &str = row.try_get(6)?;
    let attempts: i64 = row.try_get(7)?;
    let last_status: Option<i64> = row.try_get(9)?;
    Ok(DeliveryRecord {
        id: row.try_get(0)?,
        webhook_id: row.try_get(1)?,
        tenant: row.try_get(2)?,
        event: row.try_get(3)?,
        event_id: row.try_get(4)?,
        body: row.try_get(5)?,
        status: DeliveryStatus::parse(status).ok_or_else(|| {
            bad_column(
                "status",
                anyhow::anyhow!("unknown delivery status {status:?}"),
            )
        })?,
        // Out of range is an error, as SQLite's conversion to these types makes it.
        attempts: u32::try_from(attempts).map_err(|e| bad_column("attempts", e.into()))?,
        next_attempt_at: row.try_get(8)?,
        last_status: last_status
            .map(u16::try_from)
            .transpose()
            .map_err(|e| bad_column("last_status", e.into()))?,
        last_error: row.try_get(10)?,
        created_at: row.try_get(11)?,
        updated_at: row.try_get(12)?,
        delivered_at: row.try_get(13)?,
    })
}

fn events_json(events: &[String]) -> String {
    serde_json::Value::from(events.to_vec()).to_string()
}

#[async_trait::async_trait]
impl WebhookStore for Postgres {
    async fn insert_webhook(&self, w: &WebhookRecord) -> StoreResult<()> {
        self.execute(
            &format!(
                "INSERT INTO webhooks ({WEBHOOK_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
            ),
            &[
                &w.id,
                &w.tenant,
                &w.url,
                &events_json(&w.events),
                &w.secret,
                &w.active,
                &w.created_at,
                &w.updated_at,
            ],
        )
        .await?;
        Ok(())
    }

    async fn get_webhook(&self, tenant: &str, id: &str) -> StoreResult<Option<WebhookRecord>> {
        self.query_opt(
            &format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE tenant = $1 AND id = $2"),
            &[&tenant, &id],
        )
        .await?
        .as_ref()
        .map(webhook)
        .transpose()
    }

    async fn list_webhooks(&self, tenant: &str) -> StoreResult<Vec<WebhookRecord>> {
        self.query(
            &format!(
                "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE tenant = $1 ORDER BY created_at, id"
            ),
            &[&tenant],
        )
        .await?
        .iter()
        .map(webhook)
        .collect()
    }

    async fn update_webhook(&self, w: &WebhookRecord) -> StoreResult<bool> {
        let n = self
            .execute(
                "UPDATE webhooks SET url = $3, events = $4, secret = $5, active = $6, updated_at = $7
                 WHERE tenant = $1 AND id = $2",
                &[
                    &w.tenant,
                    &w.id,
                    &w.url,
                    &events_json(&w.events),
                    &w.secret,
                    &w.active,
                    &w.updated_at,
                ],
            )
            .await?;
        Ok(n == 1)
    }

    async fn delete_webhook(&self, tenant: &str, id: &str) -> StoreResult<bool> {
        let n = self
            .execute(
                "DELETE FROM webhooks WHERE tenant = $1 AND id = $2",
                &[&tenant, &id],
            )
            .await?;
        Ok(n == 1)
    }

    async fn active_webhooks(&self) -> StoreResult<Vec<WebhookRecord>> {
        self.query(
            &format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE active ORDER BY created_at, id"),
            &[],
        )
        .await?
        .iter()
        .map(webhook)
        .collect()
    }

    async fn webhook_cursor(&self) -> StoreResult<i64> {
        Ok(self
            .query_opt("SELECT last_event_id FROM webhook_cursor WHERE id = 0", &[])
            .await?
            .map(|r| r.try_get(0))
            .transpose()?
            .unwrap_or(0))
    }

    async fn enqueue_deliveries(
        &self,
        deliveries: &[DeliveryRecord],
        cursor: i64,
    ) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // The row exists before it is locked, so two consumers' first batches also queue on it.
        tx.execute(
            &tx.prepare_cached(
                "INSERT INTO webhook_cursor (id, last_event_id) VALUES (0, 0) ON CONFLICT (id) DO NOTHING",
            )
            .await?,
            &[],
        )
        .await?;
        let stored: i64 = tx
            .query_one(
                &tx.prepare_cached(
                    "SELECT last_event_id FROM webhook_cursor WHERE id = 0 FOR UPDATE",
                )
                .await?,
                &[],
            )
            .await?
            .try_get(0)?;
        if cursor < stored {
            // Dropping `tx` rolls it back: nothing is written.
            return Err(StoreError::Conflict(format!(
                "the webhook cursor is at {stored}, past {cursor}"
            )));
        }
        let insert = tx
            .prepare_cached(&format!(
                "INSERT INTO webhook_deliveries ({DELIVERY_COLUMNS})
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
            ))
            .await?;
        // Events at or below the stored cursor were turned into deliveries already, by another
        // node's consumer that read the same cursor: theirs stand, these would be a second
        // copy. (A single consumer only ever hands events past the cursor: nothing is left
        // out.) Event id 0 is no event, so never a copy.
        for d in deliveries
            .iter()
            .filter(|d| d.event_id == 0 || d.event_id > stored)
        {
            tx.execute(
                &insert,
                &[
                    &d.id,
                    &d.webhook_id,
                    &d.tenant,
                    &d.event,
                    &d.event_id,
                    &d.body,
                    &d.status.as_str(),
                    &i64::from(d.attempts),
                    &d.next_attempt_at,
                    &d.last_status.map(i64::from),
                    &d.last_error,
                    &d.created_at,
                    &d.updated_at,
                    &d.delivered_at,
                ],
            )
            .await?;
        }
        tx.execute(
            &tx.prepare_cached(
                "UPDATE webhook_cursor SET last_event_id = GREATEST(last_event_id, $1) WHERE id = 0",
            )
            .await?,
            &[&cursor],
        )
        .await?;
        tx.commit().await?;
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
        // and hold back the others'. `stored` breaks ties in the order they were stored.
        self.query(
            &format!(
                "SELECT {DELIVERY_COLUMNS} FROM (
                     SELECT *, ROW_NUMBER() OVER (PARTITION BY tenant ORDER BY next_attempt_at, created_at, stored) AS rank
                     FROM webhook_deliveries
                     WHERE status = 'pending' AND next_attempt_at <= $1 AND id <> ALL($4::TEXT[])
                 ) due WHERE rank <= $2 ORDER BY next_attempt_at, created_at, stored LIMIT $3"
            ),
            &[
                &now,
                &signed(per_tenant as u64),
                &signed(limit as u64),
                &busy,
            ],
        )
        .await?
        .iter()
        .map(delivery)
        .collect()
    }

    async fn next_due(&self, busy: &[String]) -> StoreResult<Option<i64>> {
        Ok(self
            .query_opt(
                "SELECT MIN(next_attempt_at) FROM webhook_deliveries
                 WHERE status = 'pending' AND id <> ALL($1::TEXT[])",
                &[&busy],
            )
            .await?
            .map_or(Ok(None), |r| r.try_get(0))?)
    }

    async fn record_attempt(&self, id: &str, o: &AttemptRecord) -> StoreResult<()> {
        let delivered = (o.status == DeliveryStatus::Delivered).then_some(o.at);
        self.execute(
            "UPDATE webhook_deliveries SET status = $2, attempts = attempts + 1,
                 next_attempt_at = $3, last_status = $4, last_error = $5, updated_at = $6,
                 delivered_at = COALESCE($7, delivered_at)
             WHERE id = $1",
            &[
                &id,
                &o.status.as_str(),
                &o.next_attempt_at,
                &o.last_status.map(i64::from),
                &o.last_error,
                &o.at,
                &delivered,
            ],
        )
        .await?;
        Ok(())
    }

    async fn list_deliveries(
        &self,
        tenant: &str,
        webhook_id: &str,
        offset: u32,
        limit: u32,
    ) -> StoreResult<(Vec<DeliveryRecord>, u64)> {
        let total: i64 = self
            .query_opt(
                "SELECT COUNT(*) FROM webhook_deliveries WHERE tenant = $1 AND webhook_id = $2",
                &[&tenant, &webhook_id],
            )
            .await?
            .map_or(Ok(0), |r| r.try_get(0))?;
        // Newest first; `stored` stands in for SQLite's rowid among those stored together.
        let page = self
            .query(
                &format!(
                    "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE tenant = $1 AND webhook_id = $2
                     ORDER BY created_at DESC, stored DESC LIMIT $3 OFFSET $4"
                ),
                &[&tenant, &webhook_id, &i64::from(limit), &i64::from(offset)],
            )
            .await?
            .iter()
            .map(delivery)
            .collect::<StoreResult<_>>()?;
        Ok((page, unsigned(total)))
    }

    async fn redeliver(
        &self,
        tenant: &str,
        webhook_id: &str,
        id: &str,
        now: i64,
    ) -> StoreResult<Option<DeliveryRecord>> {
        self.query_opt(
            &format!(
                "UPDATE webhook_deliveries SET status = 'pending', attempts = 0,
                     next_attempt_at = $4, updated_at = $4
                 WHERE tenant = $1 AND webhook_id = $2 AND id = $3
                 RETURNING {DELIVERY_COLUMNS}"
            ),
            &[&tenant, &webhook_id, &id, &now],
        )
        .await?
        .as_ref()
        .map(delivery)
        .transpose()
    }
}
