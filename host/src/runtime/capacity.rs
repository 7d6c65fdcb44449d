//! Fair shares of the node's component instances and log readers.
//!
//! Three pools of instance slots, so that no kind of work can starve another: tenants'
//! handler calls (each tenant capped at its share of them), public routes called without a
//! key (a load balancer's `/health`: a reserve tenants' work never takes), and backend
//! adapters (which the supervisor's runs need to make progress, so a handler waiting on a
//! run can never hold the slot that run waits for). Log readers have their own counts: a
//! stream the host writes holds no instance while it waits.
//!
//! Handler calls are refused at once when over a limit (a 503 with `Retry-After`); adapter
//! calls and the short calls that shape a stream's batches wait for a slot instead.

use crate::config::RuntimeConfig;
use crate::tenants::TenantId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long an adapter call waits for a slot before it fails as over capacity.
const ADAPTER_WAIT: Duration = Duration::from_secs(30);

/// The limits the pools are sized by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shares {
    /// Tenants' handler instances, node-wide.
    pub max_instances: u32,
    /// What one tenant may hold of `max_instances`.
    pub per_tenant: u32,
    /// Handler instances for public routes called without a key.
    pub public_reserve: u32,
    /// Backend adapter instances.
    pub adapters: u32,
    /// Log readers, node-wide.
    pub max_streams: u32,
    /// Log readers per tenant.
    pub streams_per_tenant: u32,
    /// Instances serving WebSocket connections, node-wide: one for each connection served
    /// per connection, for its life; one for each call in progress on a per-call route.
    pub sockets: u32,
    /// Open WebSocket connections, node-wide.
    pub socket_connections: u32,
}

impl Shares {
    /// The shares `[runtime]` configures.
    pub fn from_config(rt: &RuntimeConfig) -> Shares {
        Shares {
            max_instances: rt.max_instances,
            per_tenant: rt.max_instances_per_tenant.min(rt.max_instances),
            public_reserve: rt.reserved_public_instances,
            adapters: rt.max_adapter_instances,
            max_streams: rt.max_streams,
            streams_per_tenant: rt.max_streams_per_tenant.min(rt.max_streams),
            sockets: 0,
            socket_connections: 0,
        }
    }

    /// The same, with room for `connections` WebSocket connections served by at most
    /// `instances` instances at once.
    pub fn with_sockets(mut self, connections: u32, instances: u32) -> Shares {
        self.socket_connections = connections;
        self.sockets = instances;
        self
    }

    /// `max_instances` for everything, and no per-tenant share below it: one tenant may use
    /// the whole node (embedding and tests).
    pub fn whole(max_instances: u32) -> Shares {
        Shares {
            max_instances,
            per_tenant: max_instances,
            public_reserve: 0,
            adapters: max_instances,
            max_streams: u32::MAX >> 3,
            streams_per_tenant: u32::MAX >> 3,
            sockets: max_instances,
            socket_connections: max_instances,
        }
    }

    /// Instance slots the engine's pool needs for all of it.
    pub fn pool_slots(&self) -> u32 {
        self.max_instances
            .saturating_add(self.public_reserve)
            .saturating_add(self.adapters)
            .saturating_add(self.sockets)
    }
}

/// Over a limit: the caller is told to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

/// The pools and the per-tenant counts.
#[derive(Debug)]
pub(crate) struct Capacity {
    shares: Shares,
    handlers: Arc<Semaphore>,
    public: Arc<Semaphore>,
    adapters: Arc<Semaphore>,
    streams: Arc<Semaphore>,
    sockets: Arc<Semaphore>,
    socket_connections: Arc<Semaphore>,
    /// Per tenant: its instance share and its log readers. Tenants are the configured keys'
    /// (plus `local` and `anonymous`), so the map stays small.
    tenants: Mutex<HashMap<TenantId, TenantShare>>,
}

#[derive(Debug, Clone)]
struct TenantShare {
    instances: Arc<Semaphore>,
    streams: Arc<Semaphore>,
}

/// A held instance slot (or log reader), released on drop.
#[derive(Debug)]
pub(crate) struct Permit {
    _node: OwnedSemaphorePermit,
    _tenant: Option<OwnedSemaphorePermit>,
}

fn permits(n: u32) -> Arc<Semaphore> {
    Arc::new(Semaphore::new(
        (n as usize).min(Semaphore::MAX_PERMITS.min(u32::MAX as usize)),
    ))
}

impl Capacity {
    pub(crate) fn new(shares: Shares) -> Capacity {
        Capacity {
            shares,
            handlers: permits(shares.max_instances),
            public: permits(shares.public_reserve),
            adapters: permits(shares.adapters),
            streams: permits(shares.max_streams),
            sockets: permits(shares.sockets),
            socket_connections: permits(shares.socket_connections),
            tenants: Mutex::default(),
        }
    }

    fn tenant(&self, tenant: &TenantId) -> TenantShare {
        let mut tenants = self.tenants.lock().expect("capacity lock");
        tenants
            .entry(tenant.clone())
            .or_insert_with(|| TenantShare {
                instances: permits(self.shares.per_tenant),
                streams: permits(self.shares.streams_per_tenant),
            })
            .clone()
    }

    /// A place for one more open WebSocket connection, now or never (each user's share of
    /// them is held where the connection authenticates).
    pub(crate) fn socket_connection(&self) -> Result<Permit, Busy> {
        let node = self
            .socket_connections
            .clone()
            .try_acquire_owned()
            .map_err(|_| Busy)?;
        Ok(Permit {
            _node: node,
            _tenant: None,
        })
    }

    /// An instance for one WebSocket connection's life, now or never. Connections have their
    /// own pool, so open ones never take the slots requests need.
    pub(crate) fn socket(&self) -> Result<Permit, Busy> {
        let node = self.sockets.clone().try_acquire_owned().map_err(|_| Busy)?;
        Ok(Permit {
            _node: node,
            _tenant: None,
        })
    }

    /// An instance for one call of a connection served per call: it waits for a slot, as
    /// the connection has nothing else to do meanwhile (the route's limit bounds the wait).
    pub(crate) async fn socket_call(&self) -> Permit {
        let node = self
            .sockets
            .clone()
            .acquire_owned()
            .await
            .expect("the pool is never closed");
        Permit {
            _node: node,
            _tenant: None,
        }
    }

    /// A handler instance for `tenant`, now or never. A caller without a key takes the
    /// public reserve first.
    pub(crate) fn handler(&self, tenant: &TenantId) -> Result<Permit, Busy> {
        if *tenant == TenantId::anonymous()
            && let Ok(node) = self.public.clone().try_acquire_owned()
        {
            return Ok(Permit {
                _node: node,
                _tenant: None,
            });
        }
        let share = self
            .tenant(tenant)
            .instances
            .try_acquire_owned()
            .map_err(|_| Busy)?;
        let node = self
            .handlers
            .clone()
            .try_acquire_owned()
            .map_err(|_| Busy)?;
        Ok(Permit {
            _node: node,
            _tenant: Some(share),
        })
    }

    /// A handler instance for `tenant`, waiting for one within the tenant's share (for the
    /// short calls that shape a stream's batches).
    pub(crate) async fn handler_waiting(&self, tenant: &TenantId) -> Permit {
        let share = self.tenant(tenant).instances;
        let share = share.acquire_owned().await.expect("never closed");
        let node = self
            .handlers
            .clone()
            .acquire_owned()
            .await
            .expect("never closed");
        Permit {
            _node: node,
            _tenant: Some(share),
        }
    }

    /// An adapter instance, waiting up to half a minute for one.
    pub(crate) async fn adapter(&self) -> Result<Permit, Busy> {
        match tokio::time::timeout(ADAPTER_WAIT, self.adapters.clone().acquire_owned()).await {
            Ok(Ok(node)) => Ok(Permit {
                _node: node,
                _tenant: None,
            }),
            _ => Err(Busy),
        }
    }

    /// A log reader for `tenant`, now or never.
    pub(crate) fn stream(&self, tenant: &TenantId) -> Result<Permit, Busy> {
        let share = self
            .tenant(tenant)
            .streams
            .try_acquire_owned()
            .map_err(|_| Busy)?;
        let node = self.streams.clone().try_acquire_owned().map_err(|_| Busy)?;
        Ok(Permit {
            _node: node,
            _tenant: Some(share),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shares() -> Shares {
        Shares {
            max_instances: 4,
            per_tenant: 2,
            public_reserve: 1,
            adapters: 1,
            max_streams: 3,
            streams_per_tenant: 2,
            sockets: 2,
            socket_connections: 3,
        }
    }

    #[test]
    fn connections_have_their_own_pool() {
        let c = Capacity::new(shares());
        let a = TenantId::new("a").unwrap();
        let held = [c.handler(&a).unwrap(), c.handler(&a).unwrap()];
        // The tenant's instance share is used up; connections are not counted in it.
        assert!(c.handler(&a).is_err());
        let sockets = [c.socket().unwrap(), c.socket().unwrap()];
        assert!(c.socket().is_err());
        drop(sockets);
        assert!(c.socket().is_ok());
        drop(held);
        // Connections are counted apart from the instances serving them, and need no slot.
        let open: Vec<_> = (0..3).map(|_| c.socket_connection().unwrap()).collect();
        assert!(c.socket_connection().is_err());
        drop(open);
        assert!(c.socket_connection().is_ok());
        assert_eq!(shares().pool_slots(), 4 + 1 + 1 + 2);
    }

    #[tokio::test]
    async fn a_per_call_connection_waits_for_an_instance() {
        let c = Arc::new(Capacity::new(shares()));
        let held = [c.socket().unwrap(), c.socket().unwrap()];
        let waiter = tokio::spawn({
            let c = c.clone();
            async move {
                c.socket_call().await;
            }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(held);
        waiter.await.unwrap();
    }

    #[test]
    fn one_tenant_cannot_take_more_than_its_share() {
        let c = Capacity::new(shares());
        let (a, b) = (TenantId::new("a").unwrap(), TenantId::new("b").unwrap());
        let held: Vec<_> = (0..2).map(|_| c.handler(&a).unwrap()).collect();
        assert_eq!(c.handler(&a).unwrap_err(), Busy);
        // The others still have theirs.
        let b1 = c.handler(&b).unwrap();
        let _b2 = c.handler(&b).unwrap();
        // The node is full now: a third tenant waits for a slot to come back.
        let third = TenantId::new("c").unwrap();
        assert_eq!(c.handler(&third).unwrap_err(), Busy);
        drop(b1);
        assert!(c.handler(&third).is_ok());
        drop(held);
        assert!(c.handler(&a).is_ok());
    }

    #[test]
    fn callers_without_a_key_have_a_reserve_tenants_cannot_take() {
        let c = Capacity::new(shares());
        let tenants: Vec<_> = ["a", "b"].map(|t| TenantId::new(t).unwrap()).into();
        let _held: Vec<_> = tenants
            .iter()
            .flat_map(|t| [c.handler(t).unwrap(), c.handler(t).unwrap()])
            .collect();
        let anonymous = TenantId::anonymous();
        let probe = c.handler(&anonymous).unwrap();
        // The reserve is one slot; the node's own are all taken.
        assert_eq!(c.handler(&anonymous).unwrap_err(), Busy);
        drop(probe);
        assert!(c.handler(&anonymous).is_ok());
    }

    #[test]
    fn streams_are_counted_per_tenant_and_per_node() {
        let c = Capacity::new(shares());
        let (a, b) = (TenantId::new("a").unwrap(), TenantId::new("b").unwrap());
        let _a: Vec<_> = (0..2).map(|_| c.stream(&a).unwrap()).collect();
        assert_eq!(c.stream(&a).unwrap_err(), Busy);
        let b1 = c.stream(&b).unwrap();
        // Three over the node.
        assert_eq!(c.stream(&b).unwrap_err(), Busy);
        drop(b1);
        assert!(c.stream(&b).is_ok());
    }

    #[tokio::test]
    async fn adapters_wait_for_a_slot() {
        let c = Arc::new(Capacity::new(shares()));
        let held = c.adapter().await.unwrap();
        let waiter = tokio::spawn({
            let c = c.clone();
            async move { c.adapter().await.is_ok() }
        });
        tokio::task::yield_now().await;
        drop(held);
        assert!(waiter.await.unwrap());
    }
}
