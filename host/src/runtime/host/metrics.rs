//! `gantry:plugin/metrics`: the node's counters in the Prometheus text format.

use super::NodeView;
use super::bindings::gantry::plugin::metrics;

impl metrics::Host for NodeView<'_> {
    fn render(&mut self) -> String {
        self.node.render_metrics(self.services)
    }
}
