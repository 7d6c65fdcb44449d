//! The host side of the `gantry:plugin` interfaces a handler may import.
//!
//! Each interface reads only the calling plugin's own state (its name, its settings), the
//! caller's tenant, or node-wide facts that every handler may see; none of them reaches another
//! plugin's or another tenant's data.

use super::call::CallState;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;
use wasmtime::component::{HasSelf, Linker};

/// Host bindings of `world handler`; WASI types come from wasmtime-wasi(-http).
pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "gantry:plugin/handler",
        require_store_data_send: true,
        imports: {
            "gantry:plugin/tasks.start": async,
            "gantry:plugin/tasks.[method]subscription.next": async,
            "gantry:plugin/backends.list": async,
            "gantry:plugin/backends.preview": async,
            "gantry:plugin/tasks.wait-any": async,
        },
        with: {
            "gantry:plugin/tasks.subscription": crate::tasks::Subscription,
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
            "wasi:random": wasmtime_wasi::p2::bindings::random,
            "wasi:cli": wasmtime_wasi::p2::bindings::cli,
            "wasi:http": wasmtime_wasi_http::p2::bindings::http,
        },
    });
}

pub(crate) use bindings::gantry::plugin::{
    backends, config, host_info, identity, log, metrics, sessions, tasks, types, workspaces,
};

/// Node-wide facts for `host-info`.
#[derive(Debug)]
pub struct NodeState {
    started: Instant,
    active: AtomicU32,
    plugins: OnceLock<Vec<host_info::PluginInfo>>,
    services: OnceLock<Services>,
    metrics: crate::metrics::Metrics,
    max_instances: u32,
}

/// The core services handlers reach through `workspaces` and `tasks`.
#[derive(Debug, Clone)]
pub struct Services {
    /// Workspace directories.
    pub workspaces: Arc<crate::workspaces::Workspaces>,
    /// The process supervisor.
    pub tasks: crate::tasks::Supervisor,
    /// Which backends can run.
    pub backends: crate::backends::Availability,
    /// Resumable conversations.
    pub sessions: crate::sessions::Sessions,
}

impl NodeState {
    pub(crate) fn new(max_instances: u32) -> Self {
        NodeState {
            started: Instant::now(),
            active: AtomicU32::new(0),
            plugins: OnceLock::new(),
            services: OnceLock::new(),
            metrics: crate::metrics::Metrics::default(),
            max_instances,
        }
    }

    /// The node's counters.
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }

    /// The metrics in the Prometheus text format, with the gauges read now.
    pub fn render_metrics(&self) -> String {
        self.metrics.render(crate::metrics::Gauges {
            active_runs: self.services().map_or(0, |s| s.tasks.active() as u64),
            active_instances: u64::from(self.active_instances()),
            max_instances: u64::from(self.max_instances),
        })
    }

    /// Make the core services available to handlers (once, after the supervisor exists).
    pub fn set_services(&self, services: Services) {
        let _ = self.services.set(services);
    }

    /// The core services, if this node runs them.
    pub fn services(&self) -> Option<&Services> {
        self.services.get()
    }

    pub(crate) fn set_plugins(&self, plugins: Vec<(String, String, Vec<String>)>) {
        let infos = plugins
            .into_iter()
            .map(|(name, kind, routes)| host_info::PluginInfo { name, kind, routes })
            .collect();
        let _ = self.plugins.set(infos);
    }

    /// Component instances alive now.
    pub fn active_instances(&self) -> u32 {
        self.active.load(Ordering::Relaxed)
    }

    /// Count one instance as alive until the guard drops.
    pub(crate) fn instance_guard(self: &Arc<Self>) -> ActiveInstance {
        self.active.fetch_add(1, Ordering::Relaxed);
        ActiveInstance(self.clone())
    }
}

/// One live instance, counted in [`NodeState::active_instances`].
#[derive(Debug)]
pub(crate) struct ActiveInstance(Arc<NodeState>);

impl Drop for ActiveInstance {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Link the gantry host interfaces; the grant check has already refused any a plugin may not
/// use.
pub(crate) fn add_to_linker(linker: &mut Linker<CallState>) -> anyhow::Result<()> {
    types::add_to_linker::<_, HasSelf<CallState>>(linker, |s| s)?;
    log::add_to_linker::<_, HasSelf<CallState>>(linker, |s| s)?;
    config::add_to_linker::<_, HasSelf<CallState>>(linker, |s| s)?;
    host_info::add_to_linker::<_, HasSelf<CallState>>(linker, |s| s)?;
    identity::add_to_linker::<_, HasSelf<CallState>>(linker, |s| s)?;
    workspaces::add_to_linker::<_, HasSelf<CallState>>(linker, |s| s)?;
    tasks::add_to_linker::<_, HasSelf<CallState>>(linker, |s| s)?;
    backends::add_to_linker::<_, HasSelf<CallState>>(linker, |s| s)?;
    sessions::add_to_linker::<_, HasSelf<CallState>>(linker, |s| s)?;
    metrics::add_to_linker::<_, HasSelf<CallState>>(linker, |s| s)?;
    Ok(())
}

impl types::Host for CallState {}

const MAX_LOG_MESSAGE: usize = 8192;

impl log::Host for CallState {
    fn log(&mut self, level: types::Level, mut message: String) {
        if message.len() > MAX_LOG_MESSAGE {
            let mut cut = MAX_LOG_MESSAGE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push_str(" [truncated]");
        }
        let plugin = &*self.plugin.name;
        match level {
            types::Level::Trace => tracing::trace!(plugin, "{message}"),
            types::Level::Debug => tracing::debug!(plugin, "{message}"),
            types::Level::Info => tracing::info!(plugin, "{message}"),
            types::Level::Warn => tracing::warn!(plugin, "{message}"),
            types::Level::Error => tracing::error!(plugin, "{message}"),
        }
    }
}

impl config::Host for CallState {
    fn get(&mut self, key: String) -> Option<String> {
        self.setting_overrides
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.clone())
            .or_else(|| self.plugin.settings.get(&key).cloned())
    }

    fn entries(&mut self) -> Vec<(String, String)> {
        let mut entries: std::collections::BTreeMap<String, String> = self.plugin.settings.clone();
        entries.extend(self.setting_overrides.iter().cloned());
        entries.into_iter().collect()
    }
}

impl host_info::Host for CallState {
    fn info(&mut self) -> host_info::NodeInfo {
        host_info::NodeInfo {
            version: crate::VERSION.to_string(),
            uptime_ms: u64::try_from(self.node.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            active_instances: self.node.active_instances(),
            plugins: self.node.plugins.get().cloned().unwrap_or_default(),
            sandbox: match self.node.services() {
                Some(s) => s.tasks.isolation_level().to_string(),
                None => "off".into(),
            },
            store: {
                let (available, sessions) = self
                    .node
                    .services()
                    .map_or((false, 0), |s| s.sessions.health());
                host_info::StoreInfo {
                    available,
                    sessions,
                }
            },
        }
    }
}

impl metrics::Host for CallState {
    fn render(&mut self) -> String {
        self.node.render_metrics()
    }
}

impl identity::Host for CallState {
    fn tenant(&mut self) -> String {
        self.tenant.to_string()
    }
}
