//! `gantry:plugin/config`: the plugin's settings from its manifest, read-only, with the call's
//! overrides (a task's model proxy in place of `base_url`) in front.

use super::PluginView;
use super::bindings::gantry::plugin::config;

impl config::Host for PluginView<'_> {
    fn get(&mut self, key: String) -> Option<String> {
        self.overrides
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.clone())
            .or_else(|| self.plugin.settings.get(&key).cloned())
    }

    fn entries(&mut self) -> Vec<(String, String)> {
        let mut entries = self.plugin.settings.clone();
        entries.extend(self.overrides.iter().cloned());
        entries.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::registry::PluginContext;
    use config::Host as _;

    #[test]
    fn overrides_stand_in_for_settings() {
        let plugin = PluginContext::for_tests(
            "claude",
            [("base_url", "https://api.example"), ("model", "m1")],
        );
        let overrides = [("base_url".to_string(), "http://10.0.0.1:3128".to_string())];
        let mut view = PluginView {
            plugin: &plugin,
            overrides: &overrides,
        };
        assert_eq!(
            view.get("base_url".into()).as_deref(),
            Some("http://10.0.0.1:3128")
        );
        assert_eq!(view.get("model".into()).as_deref(), Some("m1"));
        assert_eq!(view.get("missing".into()), None);
        assert_eq!(
            view.entries(),
            vec![
                ("base_url".to_string(), "http://10.0.0.1:3128".to_string()),
                ("model".to_string(), "m1".to_string())
            ]
        );
    }
}
