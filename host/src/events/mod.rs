//! The event bus: what happened in each tenant (`task.created`, `task.updated`,
//! `task.completed`, `task.failed`, `project.created`, `project.updated`, `system.alert`, a
//! command's output), persisted before anyone hears of it and numbered per tenant without a
//! gap — the loss-free rule of task logs, for events.
//!
//! Producers [`EventBus::publish`]; consumers never receive events pushed at them, they read
//! the log from where they are ([`EventBus::after`] for one tenant, [`EventBus::since`] for a
//! durable consumer of every tenant) and wait on [`EventBus::watch`] for more. So a consumer
//! that falls behind loses nothing while the events are kept (`[events] retention_secs`), and
//! one that asks for what is no longer kept learns so ([`Gap`]) instead of being handed a gap.

use crate::config::EventsConfig;
use crate::store::{EventRow, NewEventRow, Store, StoreError, now_ms};
use crate::tenants::TenantId;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::watch;

pub use crate::store::EventKind;

/// An event to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// What happened.
    pub kind: EventKind,
    /// The project it concerns, if any.
    pub project_id: Option<String>,
    /// The task it concerns, if any.
    pub task_id: Option<String>,
    /// The command it concerns, if any.
    pub command_id: Option<String>,
    /// The document's `data` object for this kind of event.
    pub data: serde_json::Value,
}

impl NewEvent {
    /// An event about nothing in particular (a `system.*` one).
    pub fn new(kind: EventKind, data: serde_json::Value) -> NewEvent {
        NewEvent {
            kind,
            project_id: None,
            task_id: None,
            command_id: None,
            data,
        }
    }

    /// The same, about `project_id`.
    pub fn project(mut self, project_id: &str) -> NewEvent {
        self.project_id = Some(project_id.to_string());
        self
    }

    /// The same, about `task_id`.
    pub fn task(mut self, task_id: &str) -> NewEvent {
        self.task_id = Some(task_id.to_string());
        self
    }

    /// The same, about `command_id`.
    pub fn command(mut self, command_id: &str) -> NewEvent {
        self.command_id = Some(command_id.to_string());
        self
    }
}

/// An event as published.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Its place among every tenant's events (increasing).
    pub id: i64,
    /// Its place among its tenant's events: 1, 2, 3, … — what a client resumes from.
    pub seq: u64,
    /// Whose it is.
    pub tenant: TenantId,
    /// What happened.
    pub kind: EventKind,
    /// When, in ms since the epoch.
    pub at_ms: i64,
    /// The project it concerns, if any.
    pub project_id: Option<String>,
    /// The task it concerns, if any.
    pub task_id: Option<String>,
    /// The command it concerns, if any.
    pub command_id: Option<String>,
    /// The document's `data` object for this kind of event.
    pub data: serde_json::Value,
}

impl Event {
    fn from_row(row: EventRow) -> Result<Event, StoreError> {
        let tenant = TenantId::new(&row.tenant).map_err(StoreError::Internal)?;
        // Written by `publish` from a `serde_json::Value`; anything else is a damaged row.
        let data = serde_json::from_str(&row.data)
            .map_err(|e| StoreError::Internal(anyhow::anyhow!("event {row}: {e}")))?;
        Ok(Event {
            id: row.id,
            seq: row.seq,
            tenant,
            kind: row.kind,
            at_ms: row.at,
            project_id: row.project_id,
            task_id: row.task_id,
            command_id: row.command_id,
            data,
        })
    }
}

/// A resume from before the oldest event still kept: the events between are gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("events after {asked} are no longer kept; the oldest kept is {oldest}")]
pub struct Gap {
    /// The sequence number the client asked to resume after.
    pub asked: u64,
    /// The oldest sequence number kept.
    pub oldest: u64,
}

/// How often a node of a shared store looks for events other nodes published.
const OTHER_NODES_EVERY: Duration = Duration::from_millis(250);

/// On a store several nodes share, events published elsewhere wake this node's waiters too:
/// the newest global id, and the head of each tenant someone here follows, read from the
/// store every [`OTHER_NODES_EVERY`] (until the bus is dropped).
async fn hear_other_nodes(inner: std::sync::Weak<Inner>) {
    let mut tick = tokio::time::interval(OTHER_NODES_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        match inner.store.last_event_id().await {
            Ok(id) => {
                inner.latest.send_if_modified(|latest| {
                    let newer = id > *latest;
                    *latest = (*latest).max(id);
                    newer
                });
            }
            Err(e) => {
                tracing::debug!("reading the event bus's head: {e}");
                continue;
            }
        }
        let followed: Vec<TenantId> = {
            let mut tenants = inner.tenants.lock().unwrap_or_else(|p| p.into_inner());
            tenants.retain(|_, tx| tx.receiver_count() > 0);
            tenants.keys().cloned().collect()
        };
        for tenant in followed {
            let Ok(seq) = inner.store.event_head(tenant.as_str()).await else {
                continue;
            };
            if let Some(tx) = inner
                .tenants
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&tenant)
            {
                tx.send_if_modified(|head| {
                    let newer = seq > *head;
                    *head = (*head).max(seq);
                    newer
                });
            }
        }
    }
}

/// The bus. Cheap to clone; every clone is the same bus.
#[derive(Clone)]
pub struct EventBus {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    /// The newest global event id, so waiters wake on each publish.
    latest: watch::Sender<i64>,
    /// Each tenant's newest sequence number, so a tenant's followers wake on its events alone.
    tenants: std::sync::Mutex<std::collections::HashMap<TenantId, watch::Sender<u64>>>,
}

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBus")
            .field("latest", &*self.inner.latest.borrow())
            .finish()
    }
}

impl EventBus {
    /// The bus over `store`'s event log.
    pub async fn open(store: Arc<dyn Store>) -> Result<EventBus, StoreError> {
        let last = store.last_event_id().await?;
        let shared = store.store_kind() != "sqlite";
        let bus = EventBus {
            inner: Arc::new(Inner {
                store,
                latest: watch::channel(last).0,
                tenants: Default::default(),
            }),
        };
        if shared {
            tokio::spawn(hear_other_nodes(Arc::downgrade(&bus.inner)));
        }
        Ok(bus)
    }

    /// Persist one event and wake every waiter; the event as stored.
    pub async fn publish(&self, tenant: &TenantId, event: NewEvent) -> Result<Event, StoreError> {
        let mut stored = self.publish_all(tenant, vec![event]).await?;
        Ok(stored.remove(0))
    }

    /// Persist `events` in one transaction, with consecutive sequence numbers, and wake every
    /// waiter once; the events as stored, in order.
    pub async fn publish_all(
        &self,
        tenant: &TenantId,
        events: Vec<NewEvent>,
    ) -> Result<Vec<Event>, StoreError> {
        let at = now_ms();
        let data: Vec<String> = events.iter().map(|e| e.data.to_string()).collect();
        let rows: Vec<NewEventRow<'_>> = events
            .iter()
            .zip(&data)
            .map(|(event, data)| NewEventRow {
                kind: event.kind,
                at,
                project_id: event.project_id.as_deref(),
                task_id: event.task_id.as_deref(),
                command_id: event.command_id.as_deref(),
                data,
            })
            .collect();
        let numbers = self
            .inner
            .store
            .append_bus_events(tenant.as_str(), &rows)
            .await?;
        drop(rows);
        let Some(&(id, seq)) = numbers.last() else {
            return Ok(Vec::new());
        };
        if let Some(tx) = self
            .inner
            .tenants
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(tenant)
        {
            tx.send_if_modified(|head| {
                let newer = seq > *head;
                if newer {
                    *head = seq;
                }
                newer
            });
        }
        self.inner.latest.send_if_modified(|latest| {
            let newer = id > *latest;
            if newer {
                *latest = id;
            }
            newer
        });
        Ok(events
            .into_iter()
            .zip(numbers)
            .map(|(event, (id, seq))| Event {
                id,
                seq,
                tenant: tenant.clone(),
                kind: event.kind,
                at_ms: at,
                project_id: event.project_id,
                task_id: event.task_id,
                command_id: event.command_id,
                data: event.data,
            })
            .collect())
    }

    /// [`publish`](Self::publish) for a producer whose own change has already been made and
    /// must not be undone by a failure to tell of it: the failure is logged.
    pub async fn announce(&self, tenant: &TenantId, event: NewEvent) {
        self.announce_all(tenant, vec![event]).await;
    }

    /// [`publish_all`](Self::publish_all), logging a failure as [`announce`](Self::announce)
    /// does.
    pub async fn announce_all(&self, tenant: &TenantId, events: Vec<NewEvent>) {
        let Some(kind) = events.first().map(|e| e.kind) else {
            return;
        };
        let count = events.len();
        if let Err(e) = self.publish_all(tenant, events).await {
            tracing::warn!(tenant = %tenant, event = %kind, count, "publishing events: {e}");
        }
    }

    /// `tenant`'s events after sequence number `after`, oldest first, at most `limit`; a
    /// [`Gap`] when some after `after` are no longer kept.
    pub async fn after(
        &self,
        tenant: &TenantId,
        after: u64,
        limit: usize,
    ) -> Result<Result<Vec<Event>, Gap>, StoreError> {
        let store = &self.inner.store;
        let rows = store
            .events_after(tenant.as_str(), after, limit.min(u32::MAX as usize) as u32)
            .await?;
        // The first event after `after` that is kept, when some after it was dropped.
        let oldest = match rows.first() {
            Some(first) => (first.seq > after + 1).then_some(first.seq),
            // Nothing after `after` is kept: a gap only if some was written and dropped.
            None => {
                let head = store.event_head(tenant.as_str()).await?;
                (head > after).then_some(head + 1)
            }
        };
        if let Some(oldest) = oldest {
            return Ok(Err(Gap {
                asked: after,
                oldest,
            }));
        }
        rows.into_iter()
            .map(Event::from_row)
            .collect::<Result<_, _>>()
            .map(Ok)
    }

    /// Every tenant's events with a global id above `after_id`, oldest first (for durable
    /// consumers such as the webhook outbox, which keep their own cursor).
    pub async fn since(&self, after_id: i64, limit: usize) -> Result<Vec<Event>, StoreError> {
        self.inner
            .store
            .events_since(after_id, limit.min(u32::MAX as usize) as u32)
            .await?
            .into_iter()
            .map(Event::from_row)
            .collect()
    }

    /// `tenant`'s newest sequence number (0 before its first event): where a new subscriber
    /// starts.
    pub async fn head(&self, tenant: &TenantId) -> Result<u64, StoreError> {
        self.inner.store.event_head(tenant.as_str()).await
    }

    /// The newest global id so far; `changed().await` wakes after each publish.
    pub fn watch(&self) -> watch::Receiver<i64> {
        self.inner.latest.subscribe()
    }

    /// `tenant`'s newest sequence number as publishes happen on this node: `changed().await`
    /// wakes after each of its events (and no other tenant's). Its first value may be behind
    /// the store; a follower reads the store from its own cursor anyway.
    pub fn watch_tenant(&self, tenant: &TenantId) -> watch::Receiver<u64> {
        self.inner
            .tenants
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(tenant.clone())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// Forget events older than `config.retention_secs`, in the background, every
    /// `every` (until the bus is dropped).
    pub fn keep_for(&self, config: &EventsConfig, every: Duration) {
        if config.retention_secs == 0 {
            return;
        }
        let keep_ms = config
            .retention_secs
            .saturating_mul(1000)
            .min(i64::MAX as u64) as i64;
        let inner: Weak<Inner> = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let Some(inner) = inner.upgrade() else { return };
                let before = now_ms().saturating_sub(keep_ms);
                // In slices, so the store's lock is never held for long.
                loop {
                    match inner.store.drop_events_before(before, 5000).await {
                        Ok(5000) => tokio::task::yield_now().await,
                        Ok(_) => break,
                        Err(e) => {
                            tracing::warn!("forgetting old events: {e}");
                            break;
                        }
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Sqlite;

    async fn bus() -> (tempfile::TempDir, EventBus) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(Sqlite::open(&dir.path().join("g.db")).unwrap());
        (dir, EventBus::open(store).await.unwrap())
    }

    #[tokio::test]
    async fn readers_see_their_tenant_only_in_order_and_are_woken() {
        let (_dir, bus) = bus().await;
        let a = TenantId::new("a").unwrap();
        let b = TenantId::new("b").unwrap();
        let mut watch = bus.watch();
        let e1 = bus
            .publish(
                &a,
                NewEvent::new(EventKind::TaskCreated, serde_json::json!({"n": 1})).task("t1"),
            )
            .await
            .unwrap();
        assert!(watch.has_changed().unwrap());
        watch.borrow_and_update();
        bus.publish(
            &b,
            NewEvent::new(EventKind::ProjectCreated, serde_json::json!({})),
        )
        .await
        .unwrap();
        bus.publish(
            &a,
            NewEvent::new(EventKind::TaskUpdated, serde_json::json!({"n": 2})),
        )
        .await
        .unwrap();
        assert_eq!(*watch.borrow_and_update(), e1.id + 2);
        let seen = bus.after(&a, 0, 10).await.unwrap().unwrap();
        assert_eq!(seen.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(seen[0].data["n"], 1);
        assert_eq!(seen[0].task_id.as_deref(), Some("t1"));
        assert_eq!(bus.after(&a, 1, 10).await.unwrap().unwrap().len(), 1);
        assert!(bus.after(&a, 2, 10).await.unwrap().unwrap().is_empty());
        assert_eq!(bus.head(&b).await.unwrap(), 1);
        assert_eq!(bus.since(0, 10).await.unwrap().len(), 3);
    }

    #[tokio::test]
    async fn resuming_from_before_what_is_kept_is_a_gap_not_silence() {
        let (_dir, bus) = bus().await;
        let a = TenantId::new("a").unwrap();
        for _ in 0..3 {
            bus.publish(
                &a,
                NewEvent::new(EventKind::TaskUpdated, serde_json::json!({})),
            )
            .await
            .unwrap();
        }
        bus.inner
            .store
            .drop_events_before(i64::MAX, 2)
            .await
            .unwrap();
        // #1 and #2 are gone: resuming after 0 or 1 misses something; after 2 does not.
        assert_eq!(
            bus.after(&a, 0, 10).await.unwrap(),
            Err(Gap {
                asked: 0,
                oldest: 3
            })
        );
        assert!(bus.after(&a, 1, 10).await.unwrap().is_err());
        assert_eq!(bus.after(&a, 2, 10).await.unwrap().unwrap().len(), 1);
        bus.inner
            .store
            .drop_events_before(i64::MAX, 10)
            .await
            .unwrap();
        assert_eq!(
            bus.after(&a, 2, 10).await.unwrap(),
            Err(Gap {
                asked: 2,
                oldest: 4
            })
        );
        assert!(bus.after(&a, 3, 10).await.unwrap().unwrap().is_empty());
    }
}
