//! `gantry:plugin/host-info`: what this node runs — node-wide facts every handler may see
//! (never another tenant's data: the store figure is a count).

use super::NodeView;
use super::bindings::gantry::plugin::host_info;

impl host_info::Host for NodeView<'_> {
    async fn info(&mut self) -> host_info::NodeInfo {
        let (available, sessions) = self.services.sessions.health().await;
        host_info::NodeInfo {
            version: crate::VERSION.to_string(),
            uptime_ms: u64::try_from(self.node.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            active_instances: self.node.active_instances(),
            plugins: self.node.plugins.get().cloned().unwrap_or_default(),
            sandbox: self.services.tasks.isolation_level().to_string(),
            store: host_info::StoreInfo {
                available,
                sessions,
            },
        }
    }
}
