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
            plugins: self.node.plugins(),
            sandbox: self.services.tasks.isolation_level().to_string(),
            store: host_info::StoreInfo {
                available,
                sessions,
            },
        }
    }

    async fn cluster(&mut self) -> host_info::ClusterInfo {
        let tasks = &self.services.tasks;
        host_info::ClusterInfo {
            store_kind: tasks.store_kind().to_string(),
            node_id: tasks.node_id().to_string(),
            // A store that cannot answer lists no node; `info` says it is unavailable.
            live_nodes: tasks.live_nodes().await.unwrap_or_default(),
        }
    }

    async fn recent_traffic(&mut self) -> host_info::Traffic {
        let t = self.services.metrics.last_minute();
        host_info::Traffic {
            requests: t.requests,
            server_errors: t.server_errors,
            client_errors: t.client_errors,
            average_response_ms: t.average_ms,
        }
    }

    async fn check_store(&mut self) -> host_info::StoreCheck {
        let started = std::time::Instant::now();
        let (available, _) = self.services.sessions.health().await;
        host_info::StoreCheck {
            available,
            response_ms: started.elapsed().as_secs_f64() * 1000.0,
        }
    }

    async fn node_load(&mut self) -> host_info::Load {
        let (cpu_usage, memory_usage) = crate::metrics::machine_load();
        host_info::Load {
            cpu_usage,
            memory_usage,
            websocket_connections: self.services.metrics.open_websockets(),
        }
    }
}
