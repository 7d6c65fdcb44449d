//! `gantry:plugin/log`: records in the host's log, tagged with the plugin's name.

use super::PluginView;
use super::bindings::gantry::plugin::log;
use crate::contract::{Level, types};

/// Longer messages are cut, so a chatty plugin cannot flood the log with one record.
const MAX_LOG_MESSAGE: usize = 8192;

impl types::Host for PluginView<'_> {}

impl log::Host for PluginView<'_> {
    fn log(&mut self, level: Level, mut message: String) {
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
            Level::Trace => tracing::trace!(plugin, "{message}"),
            Level::Debug => tracing::debug!(plugin, "{message}"),
            Level::Info => tracing::info!(plugin, "{message}"),
            Level::Warn => tracing::warn!(plugin, "{message}"),
            Level::Error => tracing::error!(plugin, "{message}"),
        }
    }
}
