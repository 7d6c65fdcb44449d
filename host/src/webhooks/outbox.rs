//! The durable consumer: it turns the event bus's events into deliveries. It keeps its own
//! cursor (the global id of the last event it handled) in the store and moves it in the same
//! transaction as the deliveries of the batch, so a crash never loses an event's deliveries
//! and never makes them twice. It scans from its cursor on start and whenever the bus says a
//! new event was published.

use crate::store::{DeliveryRecord, DeliveryStatus, StoreResult, WebhookRecord, WebhookStore};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// Events read per batch.
const BATCH: usize = 256;

/// One event of the bus, as the consumer needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedEvent {
    /// Its global id: increasing, over all tenants.
    pub id: i64,
    /// Its tenant.
    pub tenant: String,
    /// Its name (`task.created`, …).
    pub kind: &'static str,
    /// When it happened, ms since the epoch.
    pub at_ms: i64,
    /// The document's `data` object for it.
    pub data: Value,
}

/// What the consumer reads: every tenant's events in order, and a signal for new ones
/// (`crate::events::EventBus` in gantry; a plain list in tests).
#[async_trait::async_trait]
pub trait EventFeed: Send + Sync + std::fmt::Debug {
    /// Every tenant's events with an id above `after_id`, oldest first, at most `limit`.
    async fn since(&self, after_id: i64, limit: usize) -> StoreResult<Vec<FeedEvent>>;
    /// Changes after each publish.
    fn watch(&self) -> watch::Receiver<i64>;
}

/// The body of one delivery, built once: `{"event","timestamp","data","webhook_id","delivery_id"}`.
pub fn payload(event: &FeedEvent, webhook_id: &str, delivery_id: &str) -> Vec<u8> {
    let body = json!({
        "event": event.kind,
        "timestamp": crate::projects::events::rfc3339(event.at_ms),
        "data": event.data,
        "webhook_id": webhook_id,
        "delivery_id": delivery_id,
    });
    serde_json::to_vec(&body).expect("a JSON value serializes")
}

/// The deliveries a batch of events makes: one per event and active webhook of its tenant
/// that asked for its kind and existed when it happened.
pub fn deliveries_for(
    events: &[FeedEvent],
    webhooks: &[WebhookRecord],
    now: i64,
) -> Vec<DeliveryRecord> {
    let mut out = Vec::new();
    for event in events {
        for hook in webhooks.iter().filter(|w| {
            w.active
                && w.tenant == event.tenant
                && w.created_at <= event.at_ms
                && w.events.iter().any(|e| e == event.kind)
        }) {
            let id = uuid::Uuid::new_v4().to_string();
            out.push(DeliveryRecord {
                body: payload(event, &hook.id, &id),
                id,
                webhook_id: hook.id.clone(),
                tenant: hook.tenant.clone(),
                event: event.kind.to_string(),
                event_id: event.id,
                status: DeliveryStatus::Pending,
                attempts: 0,
                next_attempt_at: Some(now),
                last_status: None,
                last_error: None,
                created_at: now,
                updated_at: now,
                delivered_at: None,
            });
        }
    }
    out
}

/// Handle every event past the cursor: one batch, its deliveries and the new cursor stored
/// together. How many events it handled.
pub async fn consume_once(
    feed: &dyn EventFeed,
    store: &dyn WebhookStore,
    wake: &Notify,
) -> StoreResult<usize> {
    let cursor = store.webhook_cursor().await?;
    let events = feed.since(cursor, BATCH).await?;
    let Some(last) = events.last().map(|e| e.id) else {
        return Ok(0);
    };
    let webhooks = store.active_webhooks().await?;
    let deliveries = deliveries_for(&events, &webhooks, crate::store::now_ms());
    store.enqueue_deliveries(&deliveries, last).await?;
    if !deliveries.is_empty() {
        wake.notify_one();
    }
    Ok(events.len())
}

/// The consumer's loop: forever, or until the bus is gone.
pub(crate) async fn run(feed: Arc<dyn EventFeed>, store: Arc<dyn WebhookStore>, wake: Arc<Notify>) {
    // Subscribed before the first scan, so an event published during it wakes the next one.
    let mut published = feed.watch();
    loop {
        published.borrow_and_update();
        match consume_once(feed.as_ref(), store.as_ref(), &wake).await {
            // A full batch: there may be more.
            Ok(n) if n >= BATCH => continue,
            Ok(_) => {
                if published.changed().await.is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!("webhook deliveries could not be made from the event bus: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
