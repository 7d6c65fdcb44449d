//! Webhooks and their outbox: the rows behind `crate::webhooks`. Every read a caller can
//! reach takes the tenant; the consumer's and the worker's reads span tenants on purpose.

use super::StoreResult;

/// A registered webhook.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookRecord {
    /// Its id (a UUID).
    pub id: String,
    /// The tenant that owns it.
    pub tenant: String,
    /// Where deliveries are POSTed (checked when stored and again at each delivery).
    pub url: String,
    /// The event names it receives (`task.created`, …), in the order given.
    pub events: Vec<String>,
    /// The HMAC key of `X-Signature-256`.
    pub secret: String,
    /// Whether new events make deliveries for it.
    pub active: bool,
    /// Ms since the epoch.
    pub created_at: i64,
    /// Ms since the epoch.
    pub updated_at: i64,
}

impl std::fmt::Debug for WebhookRecord {
    // The secret never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookRecord")
            .field("id", &self.id)
            .field("tenant", &self.tenant)
            .field("url", &self.url)
            .field("events", &self.events)
            .field("secret", &"[redacted]")
            .field("active", &self.active)
            .finish_non_exhaustive()
    }
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    /// Not yet answered with a 2xx, attempts left.
    Pending,
    /// A receiver answered 2xx.
    Delivered,
    /// Every attempt failed.
    Failed,
}

impl DeliveryStatus {
    /// Its stored and API name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
        }
    }

    /// The status of a stored name.
    pub fn parse(name: &str) -> Option<DeliveryStatus> {
        [
            DeliveryStatus::Pending,
            DeliveryStatus::Delivered,
            DeliveryStatus::Failed,
        ]
        .into_iter()
        .find(|s| s.as_str() == name)
    }
}

/// One event for one webhook: the exact body sent on every attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecord {
    /// Its id (a UUID), also `delivery_id` in the body and `X-Delivery-ID`.
    pub id: String,
    /// The webhook it is for.
    pub webhook_id: String,
    /// The webhook's tenant.
    pub tenant: String,
    /// The event name (`task.created`, …).
    pub event: String,
    /// The global id of the bus event it came from (0 for none).
    pub event_id: i64,
    /// The body, built once: retries send these very bytes.
    pub body: Vec<u8>,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// Attempts made.
    pub attempts: u32,
    /// When the next attempt is due (ms since the epoch); none once delivered or failed.
    pub next_attempt_at: Option<i64>,
    /// The HTTP status of the last attempt, if one came back.
    pub last_status: Option<u16>,
    /// What went wrong with the last attempt.
    pub last_error: Option<String>,
    /// Ms since the epoch.
    pub created_at: i64,
    /// Ms since the epoch.
    pub updated_at: i64,
    /// When a receiver answered 2xx.
    pub delivered_at: Option<i64>,
}

/// The outcome of one attempt, as the worker decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    /// The new status.
    pub status: DeliveryStatus,
    /// The next attempt's time, when still pending.
    pub next_attempt_at: Option<i64>,
    /// The HTTP status, if one came back.
    pub last_status: Option<u16>,
    /// What went wrong, if anything.
    pub last_error: Option<String>,
    /// When this attempt ended (ms since the epoch).
    pub at: i64,
}

/// Webhook rows and the outbox of their deliveries.
#[async_trait::async_trait]
pub trait WebhookStore: Send + Sync {
    /// Store a new webhook.
    async fn insert_webhook(&self, w: &WebhookRecord) -> StoreResult<()>;
    /// One of the tenant's webhooks.
    async fn get_webhook(&self, tenant: &str, id: &str) -> StoreResult<Option<WebhookRecord>>;
    /// The tenant's webhooks, oldest first.
    async fn list_webhooks(&self, tenant: &str) -> StoreResult<Vec<WebhookRecord>>;
    /// Replace a webhook's fields (matched by tenant and id); false if it is not there.
    async fn update_webhook(&self, w: &WebhookRecord) -> StoreResult<bool>;
    /// Delete a webhook and its deliveries; false if it is not there.
    async fn delete_webhook(&self, tenant: &str, id: &str) -> StoreResult<bool>;
    /// Every tenant's active webhooks (for the consumer that makes deliveries).
    async fn active_webhooks(&self) -> StoreResult<Vec<WebhookRecord>>;
    /// The global id of the last bus event turned into deliveries (0 before the first).
    async fn webhook_cursor(&self) -> StoreResult<i64>;
    /// Store `deliveries` and move the cursor to `cursor`, in one transaction: a crash keeps
    /// both or neither. A cursor below the stored one is a conflict (another consumer went
    /// further), and nothing is written.
    async fn enqueue_deliveries(
        &self,
        deliveries: &[DeliveryRecord],
        cursor: i64,
    ) -> StoreResult<()>;
    /// Up to `limit` pending deliveries due at `now`, at most `per_tenant` of any one tenant
    /// (so that one tenant's backlog cannot fill the batch), oldest due first, without the
    /// ids in `busy` (those in flight). Nothing is claimed: one worker per store sends them.
    async fn due_deliveries(
        &self,
        now: i64,
        per_tenant: usize,
        limit: usize,
        busy: &[String],
    ) -> StoreResult<Vec<DeliveryRecord>>;
    /// When the earliest pending delivery not in `busy` is due, if any.
    async fn next_due(&self, busy: &[String]) -> StoreResult<Option<i64>>;
    /// Record one attempt's outcome (`attempts` goes up by one).
    async fn record_attempt(&self, id: &str, outcome: &AttemptRecord) -> StoreResult<()>;
    /// A webhook's deliveries, newest first, and how many it has.
    async fn list_deliveries(
        &self,
        tenant: &str,
        webhook_id: &str,
        offset: u32,
        limit: u32,
    ) -> StoreResult<(Vec<DeliveryRecord>, u64)>;
    /// Make a delivery of the tenant's webhook pending again, due at `now`, with a fresh
    /// round of attempts (same id, same body); none if it is not there.
    async fn redeliver(
        &self,
        tenant: &str,
        webhook_id: &str,
        id: &str,
        now: i64,
    ) -> StoreResult<Option<DeliveryRecord>>;
}
