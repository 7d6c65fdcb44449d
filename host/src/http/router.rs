//! The route table: exact paths and `/...` prefixes, longest match wins.

use anyhow::{Result, bail};
use std::collections::HashMap;
use std::time::Duration;

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTarget {
    /// The plugin's name.
    pub plugin: String,
    /// The pattern that matched, as written in the manifest.
    pub pattern: String,
    /// Wall-clock limit of the call (`None`: unlimited).
    pub timeout: Option<Duration>,
    /// Served without an API key.
    pub public: bool,
    /// Served to operators only.
    pub operator: bool,
    /// How the host words its own errors on this route.
    pub errors: crate::manifest::ErrorEnvelope,
    /// A user's access token is accepted here besides an API key (`user_auth`).
    pub user_auth: bool,
    /// A WebSocket endpoint (`websocket = true`).
    pub websocket: bool,
    /// How long one instance serves a connection there (`socket_instance`).
    pub socket_instance: crate::manifest::SocketInstance,
    /// The plugin does not import `gantry:plugin/identity`: it cannot tell users apart, so
    /// it acts for the whole tenant whoever calls.
    pub acts_for_tenant: bool,
}

/// The route table; built once at startup.
#[derive(Debug, Default)]
pub struct Router {
    exact: HashMap<String, RouteTarget>,
    /// Keyed by the prefix without its `/...` (the root wildcard `/...` is the empty key).
    prefix: HashMap<String, RouteTarget>,
}

impl Router {
    /// The route table of `plugins`' manifests; two plugins claiming a pattern is an error.
    pub fn for_plugins(plugins: &[crate::runtime::Plugin]) -> Result<Router> {
        let mut router = Router::default();
        for plugin in plugins {
            let manifest = &plugin.manifest;
            for route in &manifest.routes {
                router.add(
                    &route.pattern,
                    RouteTarget {
                        plugin: manifest.name.clone(),
                        pattern: route.pattern.clone(),
                        timeout: route.timeout,
                        public: route.public,
                        operator: route.operator,
                        errors: manifest.error_envelope,
                        user_auth: manifest.user_auth,
                        websocket: route.websocket,
                        socket_instance: route.socket_instance,
                        acts_for_tenant: !manifest
                            .imports
                            .iter()
                            .any(|i| i == "gantry:plugin/identity"),
                    },
                )?;
            }
        }
        Ok(router)
    }

    /// Add one route; two plugins (or one plugin twice) claiming a pattern is an error.
    pub fn add(&mut self, pattern: &str, target: RouteTarget) -> Result<()> {
        let (table, key) = match pattern.strip_suffix("/...") {
            Some(prefix) => (&mut self.prefix, prefix),
            None => (&mut self.exact, pattern),
        };
        if let Some(existing) = table.get(key) {
            bail!(
                "route {pattern} is claimed by both plugin {} and plugin {}",
                existing.plugin,
                target.plugin
            );
        }
        table.insert(key.to_string(), target);
        Ok(())
    }

    /// The target for a request path: an exact route (with or without a trailing `/`, as the
    /// APIs write `/api/health/`), else the longest matching prefix.
    pub fn lookup(&self, path: &str) -> Option<&RouteTarget> {
        let mut candidate = path.strip_suffix('/').unwrap_or(path);
        if let Some(t) = self.exact.get(path).or_else(|| self.exact.get(candidate)) {
            return Some(t);
        }
        loop {
            if let Some(t) = self.prefix.get(candidate) {
                return Some(t);
            }
            match candidate.rfind('/') {
                Some(i) => candidate = &candidate[..i],
                None => return None,
            }
        }
    }
}

/// Whether a request path is one the router will consider: rooted, with no `.`/`..` segments.
pub fn is_clean_path(path: &str) -> bool {
    path.starts_with('/') && !path.split('/').any(|s| s == "." || s == "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(plugin: &str, pattern: &str) -> RouteTarget {
        RouteTarget {
            plugin: plugin.into(),
            pattern: pattern.into(),
            timeout: None,
            public: false,
            operator: false,
            errors: Default::default(),
            user_auth: false,
            websocket: false,
            socket_instance: Default::default(),
            acts_for_tenant: true,
        }
    }

    fn router(routes: &[(&str, &str)]) -> Router {
        let mut r = Router::default();
        for (plugin, pattern) in routes {
            r.add(pattern, target(plugin, pattern)).unwrap();
        }
        r
    }

    fn hit(r: &Router, path: &str) -> Option<String> {
        r.lookup(path).map(|t| t.plugin.clone())
    }

    #[test]
    fn longest_match_wins() {
        let r = router(&[
            ("root", "/..."),
            ("api", "/api/..."),
            ("v1", "/api/v1/..."),
            ("health", "/health"),
            ("exact", "/api/v1/special"),
        ]);
        assert_eq!(hit(&r, "/health").as_deref(), Some("health"));
        assert_eq!(hit(&r, "/health/").as_deref(), Some("health"));
        assert_eq!(hit(&r, "/health/x").as_deref(), Some("root"));
        assert_eq!(hit(&r, "/api").as_deref(), Some("api"));
        assert_eq!(hit(&r, "/api/").as_deref(), Some("api"));
        assert_eq!(hit(&r, "/api/v2/x").as_deref(), Some("api"));
        assert_eq!(hit(&r, "/api/v1/prompt").as_deref(), Some("v1"));
        assert_eq!(hit(&r, "/api/v1/special").as_deref(), Some("exact"));
        assert_eq!(hit(&r, "/api/v1/special/x").as_deref(), Some("v1"));
        assert_eq!(hit(&r, "/").as_deref(), Some("root"));
        assert_eq!(hit(&r, "/apix").as_deref(), Some("root"));
    }

    #[test]
    fn no_match_without_wildcard() {
        let r = router(&[("health", "/health"), ("api", "/api/...")]);
        assert_eq!(hit(&r, "/"), None);
        assert_eq!(hit(&r, "/healthz"), None);
        assert_eq!(hit(&r, "/apix/y"), None);
    }

    #[test]
    fn conflicts_name_both_plugins() {
        let mut r = router(&[("a", "/x/...")]);
        let err = r.add("/x/...", target("b", "/x/...")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "route /x/... is claimed by both plugin a and plugin b"
        );
        // An exact route and a prefix over the same path do not conflict.
        r.add("/x", target("b", "/x")).unwrap();
    }

    #[test]
    fn clean_paths() {
        assert!(is_clean_path("/a/b"));
        assert!(!is_clean_path("/a/../b"));
        assert!(!is_clean_path("/a/./b"));
        assert!(!is_clean_path("a"));
    }
}
