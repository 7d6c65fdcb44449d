//! Signed webhooks (the Web UI API's, item 6 of issue 15): a tenant registers URLs for some of
//! the document's eight events; each event makes one delivery per matching webhook in a
//! persisted outbox ([`outbox`]), and a worker POSTs it, signed, until a 2xx or its last
//! attempt ([`deliver`]). Where a webhook may point is checked when it is stored and before
//! every attempt ([`target`]). Every operation is scoped to the calling user's tenant and
//! checked against its permissions: `read` to look, `write` to change.

pub mod deliver;
pub mod outbox;
pub mod target;

use crate::config::WebhooksConfig;
use crate::events::EventKind;
use crate::store::{DeliveryRecord, StoreError, WebhookRecord, WebhookStore, now_ms};
use crate::users::{Denied, Permission, Principal};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

pub use outbox::{EventFeed, FeedEvent};

/// The bus as the outbox's consumer reads it.
#[async_trait::async_trait]
impl EventFeed for crate::events::EventBus {
    async fn since(
        &self,
        after_id: i64,
        limit: usize,
    ) -> crate::store::StoreResult<Vec<FeedEvent>> {
        let events = crate::events::EventBus::since(self, after_id, limit).await?;
        Ok(events
            .into_iter()
            .map(|e| FeedEvent {
                id: e.id,
                tenant: e.tenant.to_string(),
                kind: e.kind.as_str(),
                at_ms: e.at_ms,
                data: e.data,
            })
            .collect())
    }

    fn watch(&self) -> tokio::sync::watch::Receiver<i64> {
        crate::events::EventBus::watch(self)
    }
}

/// The most webhooks one tenant may hold.
pub const MAX_WEBHOOKS_PER_TENANT: usize = 100;
/// A caller's secret: at least this many characters…
pub const MIN_SECRET_CHARS: usize = 16;
/// …and at most this many.
pub const MAX_SECRET_CHARS: usize = 256;
/// The largest page of deliveries.
pub const MAX_PAGE: u32 = 100;

/// Why a webhook operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// No such webhook for the caller's tenant.
    #[error("webhook not found")]
    NotFound,
    /// No such delivery of that webhook.
    #[error("delivery not found")]
    DeliveryNotFound,
    /// The caller lacks a permission.
    #[error("{0}")]
    Forbidden(String),
    /// A field is wrong.
    #[error("{field}: {issue}")]
    Invalid {
        /// The field's name.
        field: &'static str,
        /// What is wrong with it.
        issue: String,
    },
    /// The tenant holds its maximum of webhooks.
    #[error("{0}")]
    LimitExceeded(String),
    /// The store failed.
    #[error(transparent)]
    Internal(#[from] StoreError),
}

impl From<Denied> for WebhookError {
    fn from(e: Denied) -> Self {
        WebhookError::Forbidden(e.to_string())
    }
}

fn invalid(field: &'static str, issue: impl Into<String>) -> WebhookError {
    WebhookError::Invalid {
        field,
        issue: issue.into(),
    }
}

/// A webhook as callers see it: never its secret, only whether it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    /// Its id.
    pub id: String,
    /// Where it is delivered.
    pub url: String,
    /// The events it receives.
    pub events: Vec<String>,
    /// Whether new events make deliveries for it.
    pub active: bool,
    /// Whether a secret is set (always, as stored by gantry; kept for the API's shape).
    pub has_secret: bool,
    /// Ms since the epoch.
    pub created_at: i64,
    /// Ms since the epoch.
    pub updated_at: i64,
}

impl Webhook {
    fn of(r: &WebhookRecord) -> Webhook {
        Webhook {
            id: r.id.clone(),
            url: r.url.clone(),
            events: r.events.clone(),
            active: r.active,
            has_secret: !r.secret.is_empty(),
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// A new webhook's fields; `secret: None` has one generated.
#[derive(Clone, Default)]
pub struct NewWebhook {
    /// Where to deliver.
    pub url: String,
    /// Which events.
    pub events: Vec<String>,
    /// The HMAC key, or none to have one generated.
    pub secret: Option<String>,
    /// Whether it starts active.
    pub active: bool,
}

/// What to change; `None` keeps a field.
#[derive(Clone, Default)]
pub struct WebhookChange {
    /// A new URL (checked as on create).
    pub url: Option<String>,
    /// A new set of events.
    pub events: Option<Vec<String>>,
    /// A new secret.
    pub secret: Option<String>,
    /// Turn it on or off.
    pub active: Option<bool>,
}

/// A webhook just made, with its secret: the only time the secret is shown.
#[derive(Clone)]
pub struct Created {
    /// The webhook.
    pub webhook: Webhook,
    /// Its secret.
    pub secret: String,
}

// The secrets never reach a log line through `Debug`.
impl std::fmt::Debug for NewWebhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewWebhook")
            .field("url", &self.url)
            .field("events", &self.events)
            .field("secret", &self.secret.as_ref().map(|_| "[redacted]"))
            .field("active", &self.active)
            .finish()
    }
}

impl std::fmt::Debug for WebhookChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookChange")
            .field("url", &self.url)
            .field("events", &self.events)
            .field("secret", &self.secret.as_ref().map(|_| "[redacted]"))
            .field("active", &self.active)
            .finish()
    }
}

impl std::fmt::Debug for Created {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Created")
            .field("webhook", &self.webhook)
            .field("secret", &"[redacted]")
            .finish()
    }
}

/// A page of deliveries.
#[derive(Debug, Clone)]
pub struct DeliveryPage {
    /// Newest first.
    pub items: Vec<DeliveryRecord>,
    /// How many the webhook has.
    pub total: u64,
}

/// The webhooks service: the caller-facing operations, and the outbox's consumer and worker.
#[derive(Clone)]
pub struct Webhooks {
    store: Arc<dyn WebhookStore>,
    allowed: Arc<target::Allowed>,
    /// Wakes the worker: a new delivery or a redelivery.
    wake: Arc<Notify>,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks")
            .field("allowed", &self.allowed)
            .finish_non_exhaustive()
    }
}

impl Webhooks {
    /// The service over `store`; start its worker (and, with a feed, its consumer) with
    /// [`Webhooks::start`].
    pub fn new(store: Arc<dyn WebhookStore>, config: &WebhooksConfig) -> Webhooks {
        Webhooks {
            store,
            allowed: Arc::new(target::Allowed::new(&config.allowed_private_hosts)),
            wake: Arc::new(Notify::new()),
        }
    }

    /// Start the delivery worker, which sends what is pending (also what a previous run left),
    /// and, given the event bus, the consumer that makes deliveries from its events.
    pub fn start(&self, config: WebhooksConfig, feed: Option<Arc<dyn EventFeed>>) {
        let worker = deliver::Worker::new(
            self.store.clone(),
            Arc::new(config),
            self.allowed.clone(),
            self.wake.clone(),
        );
        tokio::spawn(worker.run());
        if let Some(feed) = feed {
            tokio::spawn(outbox::run(feed, self.store.clone(), self.wake.clone()));
        }
    }

    /// [`Webhooks::start`] on the one node of the store that holds the role of sending them:
    /// this node waits until the role is free (its holder's lease ran out: the node died) and
    /// then sends what is pending, its dead holder's deliveries included. One sender at a
    /// time, so no event is turned into deliveries twice.
    pub fn start_as(
        &self,
        config: WebhooksConfig,
        feed: Option<Arc<dyn EventFeed>>,
        role: NodeRole,
    ) {
        let this = Webhooks {
            store: self.store.clone(),
            allowed: self.allowed.clone(),
            wake: self.wake.clone(),
        };
        tokio::spawn(async move {
            loop {
                role.acquire().await;
                tracing::info!(node = %role.node, "this node sends the webhooks");
                let worker = deliver::Worker::new(
                    this.store.clone(),
                    Arc::new(config.clone()),
                    this.allowed.clone(),
                    this.wake.clone(),
                );
                let sending = tokio::spawn(worker.run());
                let consuming = feed.clone().map(|feed| {
                    tokio::spawn(outbox::run(feed, this.store.clone(), this.wake.clone()))
                });
                role.hold().await;
                sending.abort();
                if let Some(consuming) = consuming {
                    consuming.abort();
                }
                tracing::warn!(node = %role.node, "another node took over sending the webhooks");
            }
        });
    }

    /// Register a webhook for the caller's tenant.
    pub async fn create(&self, who: &Principal, new: NewWebhook) -> Result<Created, WebhookError> {
        who.require(Permission::Write)?;
        let events = events(new.events)?;
        let secret = match new.secret {
            Some(s) => secret(s)?,
            None => generate_secret(),
        };
        let url = self.url(&new.url).await?;
        let tenant = who.tenant.to_string();
        if self.store.list_webhooks(&tenant).await?.len() >= MAX_WEBHOOKS_PER_TENANT {
            return Err(WebhookError::LimitExceeded(format!(
                "a tenant may hold at most {MAX_WEBHOOKS_PER_TENANT} webhooks"
            )));
        }
        let now = now_ms();
        let record = WebhookRecord {
            id: uuid::Uuid::new_v4().to_string(),
            tenant,
            url,
            events,
            secret: secret.clone(),
            active: new.active,
            created_at: now,
            updated_at: now,
        };
        self.store.insert_webhook(&record).await?;
        Ok(Created {
            webhook: Webhook::of(&record),
            secret,
        })
    }

    /// The caller's tenant's webhooks, oldest first.
    pub async fn list(&self, who: &Principal) -> Result<Vec<Webhook>, WebhookError> {
        who.require(Permission::Read)?;
        let all = self.store.list_webhooks(who.tenant.as_str()).await?;
        Ok(all.iter().map(Webhook::of).collect())
    }

    /// One of them.
    pub async fn get(&self, who: &Principal, id: &str) -> Result<Webhook, WebhookError> {
        who.require(Permission::Read)?;
        Ok(Webhook::of(&self.record(who, id).await?))
    }

    /// Change one; every field is checked before anything is written.
    pub async fn update(
        &self,
        who: &Principal,
        id: &str,
        change: WebhookChange,
    ) -> Result<Webhook, WebhookError> {
        who.require(Permission::Write)?;
        let mut record = self.record(who, id).await?;
        if let Some(events_given) = change.events {
            record.events = events(events_given)?;
        }
        if let Some(s) = change.secret {
            record.secret = secret(s)?;
        }
        if let Some(url) = change.url {
            record.url = self.url(&url).await?;
        }
        if let Some(active) = change.active {
            record.active = active;
        }
        record.updated_at = now_ms();
        if !self.store.update_webhook(&record).await? {
            return Err(WebhookError::NotFound);
        }
        Ok(Webhook::of(&record))
    }

    /// Delete one, with its deliveries (pending ones are not sent).
    pub async fn delete(&self, who: &Principal, id: &str) -> Result<(), WebhookError> {
        who.require(Permission::Write)?;
        if !self.store.delete_webhook(who.tenant.as_str(), id).await? {
            return Err(WebhookError::NotFound);
        }
        Ok(())
    }

    /// A page of one webhook's deliveries, newest first.
    pub async fn deliveries(
        &self,
        who: &Principal,
        id: &str,
        offset: u32,
        limit: u32,
    ) -> Result<DeliveryPage, WebhookError> {
        who.require(Permission::Read)?;
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(invalid(
                "page_size",
                format!("must be from 1 to {MAX_PAGE}"),
            ));
        }
        self.record(who, id).await?;
        let (items, total) = self
            .store
            .list_deliveries(who.tenant.as_str(), id, offset, limit)
            .await?;
        Ok(DeliveryPage { items, total })
    }

    /// Send a delivery again: pending now, with a fresh round of attempts, the same id and
    /// the same body.
    pub async fn redeliver(
        &self,
        who: &Principal,
        id: &str,
        delivery: &str,
    ) -> Result<DeliveryRecord, WebhookError> {
        who.require(Permission::Write)?;
        self.record(who, id).await?;
        let record = self
            .store
            .redeliver(who.tenant.as_str(), id, delivery, now_ms())
            .await?
            .ok_or(WebhookError::DeliveryNotFound)?;
        self.wake.notify_one();
        Ok(record)
    }

    async fn record(&self, who: &Principal, id: &str) -> Result<WebhookRecord, WebhookError> {
        self.store
            .get_webhook(who.tenant.as_str(), id)
            .await?
            .ok_or(WebhookError::NotFound)
    }

    /// A URL checked as a delivery would check it (its host resolved now).
    async fn url(&self, raw: &str) -> Result<String, WebhookError> {
        let target = target::resolve(raw, &self.allowed)
            .await
            .map_err(|issue| invalid("url", issue))?;
        Ok(target.url.to_string())
    }
}

/// The events, each one of the document's eight ([`EventKind::WEBHOOK`]), without repeats,
/// at least one.
fn events(given: Vec<String>) -> Result<Vec<String>, WebhookError> {
    if given.is_empty() {
        return Err(invalid("events", "must name at least one event"));
    }
    let mut out: Vec<String> = Vec::new();
    for e in given {
        if !EventKind::parse(&e).is_some_and(|k| EventKind::WEBHOOK.contains(&k)) {
            let known: Vec<&str> = EventKind::WEBHOOK.iter().map(|k| k.as_str()).collect();
            return Err(invalid(
                "events",
                format!("unknown event {e:?}; the events are {}", known.join(", ")),
            ));
        }
        if !out.contains(&e) {
            out.push(e);
        }
    }
    Ok(out)
}

fn secret(given: String) -> Result<String, WebhookError> {
    let n = given.chars().count();
    if !(MIN_SECRET_CHARS..=MAX_SECRET_CHARS).contains(&n) {
        return Err(invalid(
            "secret",
            format!("must be {MIN_SECRET_CHARS} to {MAX_SECRET_CHARS} characters"),
        ));
    }
    if given.chars().any(char::is_control) {
        return Err(invalid("secret", "must not contain control characters"));
    }
    Ok(given)
}

/// 32 random bytes, hex, with a prefix that says what it is.
fn generate_secret() -> String {
    let mut bytes = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .expect("the system's random generator works");
    format!("whsec_{}", hex::encode(bytes))
}

/// A node-wide role held through the store's leases ([`crate::store::NodeStore::claim_role`]).
#[derive(Debug)]
pub struct NodeRole {
    store: Arc<dyn crate::store::Store>,
    name: &'static str,
    node: String,
    lease: Duration,
}

impl NodeRole {
    /// Role `name` for `node`, its lease `lease` long (claimed and renewed every third of it).
    pub fn new(
        store: Arc<dyn crate::store::Store>,
        name: &'static str,
        node: &str,
        lease: Duration,
    ) -> NodeRole {
        NodeRole {
            store,
            name,
            node: node.to_string(),
            lease,
        }
    }

    async fn claim(&self) -> bool {
        let lease_ms = i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX);
        match self
            .store
            .claim_role(self.name, &self.node, now_ms(), lease_ms)
            .await
        {
            Ok(held) => held,
            Err(e) => {
                tracing::warn!(role = self.name, "claiming a node role: {e}");
                false
            }
        }
    }

    /// Wait until this node holds the role.
    async fn acquire(&self) {
        while !self.claim().await {
            tokio::time::sleep(self.lease / 3).await;
        }
    }

    /// Keep renewing the role; return once a renewal finds another node holding it (this node
    /// failed to renew in time). A renewal that cannot reach the store keeps trying: the role
    /// is this node's until its lease runs out.
    async fn hold(&self) {
        loop {
            tokio::time::sleep(self.lease / 3).await;
            let lease_ms = i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX);
            match self
                .store
                .claim_role(self.name, &self.node, now_ms(), lease_ms)
                .await
            {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => tracing::warn!(role = self.name, "renewing a node role: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests;
