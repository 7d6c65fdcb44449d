//! The component host: one engine, the plugin registry, per-call isolation, and the host side
//! of the `gantry:plugin` interfaces.
//!
//! Every call gets a fresh `Store` instantiated from a pre-instantiated component in the pooling
//! allocator (copy-on-write memory images), with a memory cap, a CPU deadline (epoch
//! interruption, counting only the guest's own execution time) and, per route, a wall-clock
//! limit. A cap on live instances turns overload into a 503 instead of a queue.
//!
//! The runtime knows components, not routes: [`Plugins`] is the engine and the loaded plugins
//! (and, as [`crate::tasks::Adapters`], the backend adapters the supervisor calls);
//! [`Runtime`] adds the core services and serves one request through a handler.

mod backend;
mod cache;
mod call;
mod capacity;
mod handler;
mod host;
mod live;
mod log_answer;
pub mod registry;
mod socket;
pub mod world;

pub use cache::{CacheOutcome, ComponentCache};
pub use call::CallLimit;
pub use capacity::Shares;
pub use handler::{CallFailure, Caller, GuestBody};
pub use host::{
    NodeState, OverConnections, Services, SocketAuth, SocketHost, Topic, truncate_reason,
};
pub use live::LivePlugins;
pub use registry::Plugin;
pub use socket::{ClientMessage, ConnectionInfo, Socket};

use crate::backends::BackendPlugin;
use crate::config::{Config, RuntimeConfig};
use crate::manifest::Manifest;
use crate::tenants::TenantId;
use anyhow::{Context, Result};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use wasmtime::{Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// Core instances, memories and tables one component instance may use in the pool.
const CORE_INSTANCES_PER_COMPONENT: u32 = 32;
const MEMORIES_PER_COMPONENT: u32 = 4;
const TABLES_PER_COMPONENT: u32 = 16;
/// Bytes of each memory and table slot kept resident between instances: reset in place,
/// never handed back to the kernel. A component's stack and heap (a Rust guest's shadow stack
/// alone is 1 MiB) fit, so a fresh instance per request takes no page faults and its slot's
/// reset makes no `madvise` (whose TLB shootdown, on a virtual machine whose other vCPU is
/// not running, stalled about one request in a hundred for milliseconds).
const KEEP_RESIDENT: usize = 4 << 20;
/// Slots kept warm (resident, with their module's image) beyond those in use.
const MAX_UNUSED_WARM_SLOTS: u32 = 16;
/// What is kept resident without `PAGEMAP_SCAN`, where every kept byte is reset by `memset`
/// on each reuse whether the instance touched it or not.
const KEEP_RESIDENT_WITHOUT_SCAN: usize = 64 << 10;

/// Whether the kernel has the `PAGEMAP_SCAN` ioctl (Linux 6.7), with which wasmtime resets only
/// the pages an instance dirtied.
fn pagemap_scan_available() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .ok()
        .and_then(|release| kernel_at_least(&release, (6, 7)))
        .unwrap_or(false)
}

/// Whether a kernel release string (`6.18.44-fc-v1147`) is at least `(major, minor)`.
fn kernel_at_least(release: &str, (major, minor): (u32, u32)) -> Option<bool> {
    let mut parts = release.trim().split(['.', '-']);
    let got_major: u32 = parts.next()?.parse().ok()?;
    let got_minor: u32 = parts.next()?.parse().ok()?;
    Some((got_major, got_minor) >= (major, minor))
}

/// Build the engine every plugin shares, with instance slots for `rt`'s shares.
pub fn engine(rt: &RuntimeConfig) -> Result<Engine> {
    engine_for(rt, Shares::from_config(rt))
}

fn engine_for(rt: &RuntimeConfig, shares: Shares) -> Result<Engine> {
    let mut config = wasmtime::Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    config.memory_init_cow(true);
    config.parallel_compilation(true);
    // `perf` names a component's functions only from a map the engine writes as it loads
    // code (`/tmp/perf-PID.map`); off by default, since the file grows with every load.
    if std::env::var_os("GANTRY_PERFMAP").is_some() {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    // Slots for every pool, and a few more for startup checks while serving.
    let slots = shares.pool_slots().saturating_add(4);
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(slots)
        .total_core_instances(slots.saturating_mul(CORE_INSTANCES_PER_COMPONENT))
        .total_memories(slots.saturating_mul(MEMORIES_PER_COMPONENT))
        .total_tables(slots.saturating_mul(TABLES_PER_COMPONENT))
        .total_stacks(slots)
        .max_memories_per_component(MEMORIES_PER_COMPONENT)
        .max_tables_per_component(TABLES_PER_COMPONENT)
        .max_memory_size(usize::try_from(rt.max_memory_mb << 20).context("max_memory_mb")?)
        // Reset a returning slot's pages with memset instead of madvise: a fresh instance
        // per request would otherwise pay page faults for its stack and heap. With
        // `PAGEMAP_SCAN` (Linux 6.7+) only the pages the instance dirtied are reset, so a
        // large resident size costs what the instance touched, not its size.
        .pagemap_scan(wasmtime::Enabled::Auto)
        // Prefer a slot another instance just left over a never-used one, so the slots that
        // hold resident pages are about as many as the instances ever live at once.
        .max_unused_warm_slots(MAX_UNUSED_WARM_SLOTS);
    let keep = if pagemap_scan_available() {
        KEEP_RESIDENT
    } else {
        KEEP_RESIDENT_WITHOUT_SCAN
    };
    pool.linear_memory_keep_resident(keep)
        .table_keep_resident(keep);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Ok(Engine::new(&config)?)
}

/// Advance the engine's epoch every `tick` until the engine is gone.
fn start_epoch_ticker(engine: &Engine, tick: Duration) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("gantry-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(tick);
            }
        })
        .expect("spawning the epoch thread");
}

/// The engine and the loaded plugins: everything needed to call a component. One set is one
/// version of the plugin directory: a reload makes the next set ([`Plugins::reload`]) over
/// the same engine, instance slots and node state, and whoever holds the old set (a request
/// or a run in flight) finishes on it.
#[derive(Debug)]
pub struct Plugins {
    engine: Engine,
    cache: ComponentCache,
    plugins: Vec<Plugin>,
    by_name: HashMap<String, usize>,
    backends: Vec<Arc<BackendPlugin>>,
    capacity: Arc<capacity::Capacity>,
    node: Arc<NodeState>,
}

impl Plugins {
    /// Build the engine and load every plugin `config` names. Fails on the first plugin that
    /// cannot load, with a one-line reason naming it.
    pub async fn start(config: &Config) -> Result<Plugins> {
        Self::start_with(config, plugin_manifests(config)?).await
    }

    /// Build the engine as [`Plugins::start`] does and load `manifests` alone: for the tools
    /// that call a plugin with no server (`gantry plugin test`).
    pub async fn start_with(config: &Config, manifests: Vec<Manifest>) -> Result<Plugins> {
        let rt = &config.runtime;
        let shares = Shares::from_config(rt).with_sockets(
            config.websocket.max_connections,
            config.websocket.max_instances,
        );
        let engine = engine_for(rt, shares)?;
        start_epoch_ticker(&engine, Duration::from_millis(rt.epoch_tick_ms));
        let cache = ComponentCache::open(&config.data_dir.join("cache"), &engine)?;
        Self::load_shared(engine, &cache, manifests, shares).await
    }

    /// Load the given manifests over `engine`, with `max_instances` slots for any tenant
    /// (see [`Shares::whole`]).
    pub async fn load(
        engine: Engine,
        cache: &ComponentCache,
        manifests: Vec<Manifest>,
        max_instances: u32,
    ) -> Result<Plugins> {
        Self::load_shared(engine, cache, manifests, Shares::whole(max_instances)).await
    }

    /// Load the given manifests over `engine`, sharing instances as `shares` says.
    pub async fn load_shared(
        engine: Engine,
        cache: &ComponentCache,
        manifests: Vec<Manifest>,
        shares: Shares,
    ) -> Result<Plugins> {
        let node = Arc::new(NodeState::new(shares.max_instances));
        let capacity = Arc::new(capacity::Capacity::new(shares));
        let plugins = Self::load_into(engine, cache.clone(), manifests, capacity, node).await?;
        plugins.announce();
        Ok(plugins)
    }

    /// The next version of these plugins: `manifests` loaded and checked over the same
    /// engine, compiled-component cache, instance slots and node state. An error leaves this
    /// set as it is; components that did not change come from the cache, not compiled again.
    pub async fn reload(&self, manifests: Vec<Manifest>) -> Result<Plugins> {
        Self::load_into(
            self.engine.clone(),
            self.cache.clone(),
            manifests,
            self.capacity.clone(),
            self.node.clone(),
        )
        .await
    }

    async fn load_into(
        engine: Engine,
        cache: ComponentCache,
        manifests: Vec<Manifest>,
        capacity: Arc<capacity::Capacity>,
        node: Arc<NodeState>,
    ) -> Result<Plugins> {
        let linkers = registry::Linkers::new(&engine)?;
        let mut plugins = Vec::new();
        let mut by_name = HashMap::new();
        for manifest in manifests {
            if by_name.contains_key(&manifest.name) {
                anyhow::bail!("two manifests name plugin {}", manifest.name);
            }
            let plugin = registry::load(&engine, &linkers, &cache, manifest).await?;
            by_name.insert(plugin.manifest.name.clone(), plugins.len());
            plugins.push(plugin);
        }
        let backends = plugins
            .iter()
            .filter_map(Plugin::backend_plugin)
            .map(Arc::new)
            .collect();
        Ok(Plugins {
            engine,
            cache,
            plugins,
            by_name,
            backends,
            capacity,
            node,
        })
    }

    /// Tell `host-info` that these are the plugins loaded now (at start, and once a reload
    /// has swapped them in).
    pub fn announce(&self) {
        self.node.set_plugins(
            self.plugins
                .iter()
                .map(|p| {
                    let m = &p.manifest;
                    host::bindings::gantry::plugin::host_info::PluginInfo {
                        name: m.name.clone(),
                        kind: match m.kind {
                            crate::manifest::PluginKind::Handler => {
                                crate::contract::PluginKind::Handler
                            }
                            crate::manifest::PluginKind::Backend => {
                                crate::contract::PluginKind::Backend
                            }
                        },
                        routes: m.routes.iter().map(|r| r.pattern.clone()).collect(),
                    }
                })
                .collect(),
        );
    }

    /// The loaded plugins, in load order.
    pub fn plugins(&self) -> &[Plugin] {
        &self.plugins
    }

    /// A loaded plugin by name.
    pub fn plugin(&self, name: &str) -> Option<&Plugin> {
        self.by_name.get(name).map(|&i| &self.plugins[i])
    }

    /// The backend plugins, in load order.
    pub fn backends(&self) -> Vec<Arc<BackendPlugin>> {
        self.backends.clone()
    }

    /// Node-wide state (uptime, live instances).
    pub fn node(&self) -> &Arc<NodeState> {
        &self.node
    }

    /// How instances and log readers are shared.
    pub(crate) fn capacity(&self) -> &Arc<capacity::Capacity> {
        &self.capacity
    }

    /// A fresh store for one call (or one run) of `plugin`, in the slot `permit` holds.
    pub(crate) fn new_store<H: Send + 'static>(
        &self,
        plugin: &Plugin,
        tenant: &TenantId,
        host: H,
        permit: capacity::Permit,
    ) -> (wasmtime::Store<call::CallState<H>>, Slot) {
        let slot = Slot {
            _permit: permit,
            _live: self.node.instance_guard(),
        };
        let store = call::new_store(&self.engine, &plugin.context, tenant, host);
        (store, slot)
    }

    /// A handler slot for `tenant` (refused when over its share) and a fresh store in it.
    pub(crate) fn reserve<H: Send + 'static>(
        &self,
        plugin: &Plugin,
        tenant: &TenantId,
        host: H,
    ) -> Result<(wasmtime::Store<call::CallState<H>>, Slot), CallFailure> {
        let permit = self
            .capacity
            .handler(tenant)
            .map_err(|_| CallFailure::OverCapacity)?;
        Ok(self.new_store(plugin, tenant, host, permit))
    }
}

/// An instance slot: a capacity permit, and one count in the live instances, until dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    _permit: capacity::Permit,
    _live: host::ActiveInstance,
}

/// The loaded plugins with the core services their handlers reach: what serves a request.
#[derive(Debug)]
pub struct Runtime {
    plugins: Arc<Plugins>,
    services: Services,
}

impl Runtime {
    /// Serve `plugins`' handlers over `services`.
    pub fn new(plugins: Arc<Plugins>, services: Services) -> Runtime {
        Runtime { plugins, services }
    }

    /// The loaded plugins.
    pub fn plugins(&self) -> &Arc<Plugins> {
        &self.plugins
    }

    /// The core services.
    pub fn services(&self) -> &Services {
        &self.services
    }

    /// The node's metrics in the Prometheus text format.
    pub fn render_metrics(&self) -> String {
        self.plugins.node.render_metrics(&self.services)
    }
}

/// The manifests to load: the plugin directory's, or the bundled ones when the default
/// directory does not exist.
pub fn plugin_manifests(config: &Config) -> Result<Vec<Manifest>> {
    let rt = &config.runtime;
    let dir = &config.plugins;
    if !dir.exists() && dir.as_path() == Path::new("plugins") {
        tracing::info!("no ./plugins directory; serving the plugins bundled into gantry");
        return registry::bundled_manifests(&rt.plugin_defaults, rt.max_memory_mb);
    }
    registry::read_manifests(dir, &rt.plugin_defaults, rt.max_memory_mb)
}

#[cfg(test)]
mod kernel_tests {
    use super::kernel_at_least;

    #[test]
    fn kernel_releases_compare_by_major_then_minor() {
        assert_eq!(kernel_at_least("6.18.44-fc-v1147\n", (6, 7)), Some(true));
        assert_eq!(kernel_at_least("6.7.0", (6, 7)), Some(true));
        assert_eq!(kernel_at_least("6.6.87-generic", (6, 7)), Some(false));
        assert_eq!(kernel_at_least("5.15.0-105-generic", (6, 7)), Some(false));
        assert_eq!(kernel_at_least("7.0-rc1", (6, 7)), Some(true));
        assert_eq!(kernel_at_least("garbage", (6, 7)), None);
    }
}
