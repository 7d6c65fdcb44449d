//! Plugin manifests: what a plugin is, where its component is, and what it is granted.

use crate::config::PluginLimits;
use anyhow::{Context, Result, bail};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The two kinds of plugin, one per world.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PluginKind {
    /// `world handler`: serves HTTP routes.
    Handler,
    /// `world backend`: adapts one agent CLI.
    Backend,
}

impl PluginKind {
    /// The lowercase name used in manifests and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            PluginKind::Handler => "handler",
            PluginKind::Backend => "backend",
        }
    }
}

/// Where a plugin's component comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ComponentSource {
    /// A `.wasm` file.
    File(PathBuf),
    /// A first-party component built into the binary (`bundled:NAME`).
    Bundled(String),
}

/// One route pattern: an exact path, or a prefix ending in `/...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    /// The pattern as written.
    pub pattern: String,
    /// Wall-clock limit for calls on this route (`None`: unlimited).
    pub timeout: Option<Duration>,
    /// Served without an API key (as tenant `anonymous`) even when keys are configured.
    pub public: bool,
    /// Served only to operators (the config's `operators`): node-wide figures.
    pub operator: bool,
    /// A WebSocket endpoint: an upgrade request here opens a connection that the plugin's
    /// `websocket-handler` export serves; `timeout` then limits each call, not the
    /// connection.
    pub websocket: bool,
    /// On a WebSocket route, how long one instance serves a connection.
    pub socket_instance: SocketInstance,
}

/// How long one instance of a WebSocket route's component lives (`socket_instance`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SocketInstance {
    /// One instance for the connection's whole life: the component keeps the connection's
    /// state in its memory, and an idle connection holds its instance.
    #[default]
    PerConnection,
    /// A fresh instance for every call: the component keeps its state with
    /// `websocket.keep`, and an idle connection holds no instance.
    PerCall,
}

/// A validated manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The plugin's name (the manifest file's stem unless `name` is set).
    pub name: String,
    /// Handler or backend.
    pub kind: PluginKind,
    /// The component.
    pub component: ComponentSource,
    /// A handler's routes.
    pub routes: Vec<RouteSpec>,
    /// Granted imports (`namespace:package/interface`, no version).
    pub imports: Vec<String>,
    /// A backend's binary: the only program it may have spawned.
    pub binary: Option<String>,
    /// Variables of gantry's own environment passed to a backend's processes (when set):
    /// typically the model API key. Everything else a child sees comes from the adapter.
    pub env: Vec<String>,
    /// A backend's model API (`https://api.anthropic.com`): its tasks reach it only through
    /// gantry's model proxy, which adds the key. The `base_url` setting, when set, overrides it.
    pub model_upstream: Option<String>,
    /// Extra paths a backend's tasks may read (absolute), beyond the system's and the
    /// binary's install tree.
    pub read_only: Vec<std::path::PathBuf>,
    /// Hosts a backend's tasks may reach through the egress proxy (see `[egress]`).
    pub egress: Vec<String>,
    /// Per-call limits.
    pub limits: PluginLimits,
    /// Settings, readable through `gantry:plugin/config`.
    pub settings: BTreeMap<String, String>,
    /// The shape of the errors the host itself answers on this handler's routes.
    pub error_envelope: ErrorEnvelope,
    /// The backends a handler may start tasks on (`backends = [...]`), so that one API surface
    /// cannot run a backend meant for another; `None` (no `backends` key) means any.
    pub backends: Option<Vec<String>>,
    /// `user_auth = true`: on this handler's routes, `Authorization: Bearer` may carry a user's
    /// access token (a JWT) as well as an API key, and the handler learns the user through
    /// `identity.user`. Refusals use the `/api` document's auth codes.
    pub user_auth: bool,
}

/// How the host words its own errors (401, 403, 404, 413, 429, plugin failures) on a handler's
/// routes, so that each API surface answers in one envelope.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorEnvelope {
    /// `{"error": {"code", "message", "plugin"?}}`.
    #[default]
    Gantry,
    /// `{"error": code, "message": message}` (the clinvk API's shape).
    Flat,
    /// `{"ok": false, "error": {"code", "message"}}` (the CLK API's shape).
    Clk,
    /// `{"data": null, "error": {"code", "message", "details"}, "meta": {"timestamp",
    /// "request_id", "version"}}` (the Claude CLI Web UI API's shape), with `X-Request-ID`.
    Webui,
}

/// The API version `meta.version` names in the `webui` envelope.
pub const WEBUI_API_VERSION: &str = "1.0.0";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    name: Option<String>,
    kind: PluginKind,
    component: String,
    #[serde(default)]
    routes: Vec<RawRoute>,
    #[serde(default)]
    imports: Vec<String>,
    binary: Option<String>,
    #[serde(default)]
    env: Vec<String>,
    model_upstream: Option<String>,
    #[serde(default)]
    read_only: Vec<std::path::PathBuf>,
    #[serde(default)]
    egress: Vec<String>,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    settings: toml::Table,
    #[serde(default)]
    error_envelope: ErrorEnvelope,
    backends: Option<Vec<String>>,
    #[serde(default)]
    user_auth: bool,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawRoute {
    Path(String),
    Table {
        path: String,
        timeout_ms: Option<u64>,
        #[serde(default)]
        public: bool,
        #[serde(default)]
        operator: bool,
        #[serde(default)]
        websocket: bool,
        // Read as text so a wrong value is named (an untagged enum's error would not).
        socket_instance: Option<String>,
    },
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    memory_mb: Option<u64>,
    cpu_ms: Option<u64>,
    timeout_ms: Option<u64>,
}

impl Manifest {
    /// Read and validate the manifest at `path`; relative component paths resolve against its
    /// directory.
    pub fn load(path: &Path, defaults: &PluginLimits, max_memory_mb: u64) -> Result<Manifest> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading manifest {}", path.display()))?;
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .context("manifest file name is not UTF-8")?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, stem, base, defaults, max_memory_mb)
            .with_context(|| format!("in manifest {}", path.display()))
    }

    /// Validate manifest text; `stem` names the plugin unless the manifest does.
    pub fn parse(
        text: &str,
        stem: &str,
        base: &Path,
        defaults: &PluginLimits,
        max_memory_mb: u64,
    ) -> Result<Manifest> {
        let raw: RawManifest = toml::from_str(text)?;
        let name = raw.name.unwrap_or_else(|| stem.to_string());
        if !is_plugin_name(&name) {
            bail!("plugin name {name:?} must be non-empty ASCII letters, digits, '-' or '_'");
        }
        let component = match raw.component.strip_prefix("bundled:") {
            Some(bundled) => ComponentSource::Bundled(bundled.to_string()),
            None => ComponentSource::File(base.join(&raw.component)),
        };
        let limits = PluginLimits {
            memory_mb: raw.limits.memory_mb.unwrap_or(defaults.memory_mb),
            cpu_ms: raw.limits.cpu_ms.unwrap_or(defaults.cpu_ms),
            timeout_ms: raw.limits.timeout_ms.unwrap_or(defaults.timeout_ms),
        };
        if limits.memory_mb == 0 || limits.memory_mb > max_memory_mb {
            bail!(
                "limits.memory_mb = {} must be between 1 and runtime.max_memory_mb ({max_memory_mb})",
                limits.memory_mb
            );
        }
        if limits.cpu_ms == 0 {
            bail!("limits.cpu_ms must be at least 1");
        }
        let routes = raw
            .routes
            .into_iter()
            .map(|r| {
                let (pattern, timeout_ms, public, operator, websocket, socket_instance) = match r
                {
                    RawRoute::Path(p) => (p, limits.timeout_ms, false, false, false, None),
                    RawRoute::Table {
                        path,
                        timeout_ms,
                        public,
                        operator,
                        websocket,
                        socket_instance,
                    } => (
                        path,
                        timeout_ms.unwrap_or(limits.timeout_ms),
                        public,
                        operator,
                        websocket,
                        socket_instance,
                    ),
                };
                check_route(&pattern)?;
                if public && operator {
                    bail!("route {pattern:?} cannot be both `public` and `operator`");
                }
                let socket_instance = match socket_instance.as_deref() {
                    None => None,
                    Some("per-connection") => Some(SocketInstance::PerConnection),
                    Some("per-call") => Some(SocketInstance::PerCall),
                    Some(other) => bail!(
                        "route {pattern:?}: `socket_instance` is \"per-connection\" or \"per-call\", not {other:?}"
                    ),
                };
                if socket_instance.is_some() && !websocket {
                    bail!(
                        "route {pattern:?} sets `socket_instance` but is no WebSocket endpoint: add `websocket = true` or remove it"
                    );
                }
                Ok(RouteSpec {
                    pattern,
                    timeout: (timeout_ms > 0).then(|| Duration::from_millis(timeout_ms)),
                    public,
                    operator,
                    websocket,
                    socket_instance: socket_instance.unwrap_or_default(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        match raw.kind {
            PluginKind::Handler => {
                if routes.is_empty() {
                    bail!("a handler needs at least one route");
                }
                if raw.binary.is_some()
                    || !raw.env.is_empty()
                    || raw.model_upstream.is_some()
                    || !raw.read_only.is_empty()
                    || !raw.egress.is_empty()
                {
                    bail!(
                        "`binary`, `env`, `model_upstream`, `read_only` and `egress` are for \
                         backends; a handler spawns nothing"
                    );
                }
            }
            PluginKind::Backend => {
                if !routes.is_empty() {
                    bail!("a backend serves no routes");
                }
                match &raw.binary {
                    None => bail!("a backend must name the `binary` it may spawn"),
                    Some(b) if b.is_empty() || b.contains('\0') => {
                        bail!("`binary` must be a program name or path")
                    }
                    Some(_) => {}
                }
            }
        }
        for import in &raw.imports {
            check_import_name(import)?;
        }
        if let Some(ws) = routes.iter().find(|r| r.websocket)
            && !raw.imports.iter().any(|i| i == "gantry:plugin/websocket")
        {
            bail!(
                "route {:?} is a WebSocket endpoint: add \"gantry:plugin/websocket\" to `imports`",
                ws.pattern
            );
        }
        if raw.user_auth && raw.kind == PluginKind::Backend {
            bail!("`user_auth` is about a handler's routes; a backend serves none");
        }
        if let Some(backends) = &raw.backends {
            if raw.kind == PluginKind::Backend {
                bail!("`backends` names what a handler may start; a backend starts nothing");
            }
            if let Some(bad) = backends.iter().find(|b| !is_plugin_name(b)) {
                bail!("`backends` entry {bad:?} is not a plugin name");
            }
        }
        if let Some(url) = &raw.model_upstream {
            let rest = url
                .strip_prefix("https://")
                .or_else(|| url.strip_prefix("http://"));
            if rest.is_none_or(|r| {
                r.is_empty() || r.starts_with('/') || r.contains(char::is_whitespace)
            }) {
                bail!("`model_upstream` {url:?} must be an http:// or https:// URL with a host");
            }
        }
        for path in &raw.read_only {
            if !path.is_absolute() {
                bail!(
                    "`read_only` entry {} must be an absolute path",
                    path.display()
                );
            }
        }
        for host in &raw.egress {
            if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/') {
                bail!("`egress` entry {host:?} must be a host, host:port, *.domain or \"*\"");
            }
        }
        for var in &raw.env {
            let ok = !var.is_empty()
                && !var.starts_with(|c: char| c.is_ascii_digit())
                && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok {
                bail!("env entry {var:?} must be a variable name (letters, digits, '_')");
            }
        }
        let settings = raw
            .settings
            .into_iter()
            .map(|(k, v)| {
                let value = match v {
                    toml::Value::String(s) => s,
                    toml::Value::Integer(i) => i.to_string(),
                    toml::Value::Float(f) => f.to_string(),
                    toml::Value::Boolean(b) => b.to_string(),
                    // A list of strings reaches the component as a JSON array.
                    toml::Value::Array(items) if items.iter().all(|i| i.is_str()) => {
                        let items: Vec<&str> = items.iter().filter_map(|i| i.as_str()).collect();
                        serde_json::to_string(&items)?
                    }
                    other => bail!(
                        "setting {k:?} must be a string, number, boolean or list of strings, not {}",
                        other.type_str()
                    ),
                };
                Ok((k, value))
            })
            .collect::<Result<_>>()?;
        Ok(Manifest {
            error_envelope: raw.error_envelope,
            backends: raw.backends,
            user_auth: raw.user_auth,
            name,
            kind: raw.kind,
            component,
            routes,
            imports: raw.imports,
            binary: raw.binary,
            env: raw.env,
            model_upstream: raw.model_upstream,
            read_only: raw.read_only,
            egress: raw.egress,
            limits,
            settings,
        })
    }
}

/// Non-empty ASCII letters, digits, `-` and `_`.
fn is_plugin_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// A route is `/`-rooted, has no empty, `.` or `..` segment, and may end in `/...`.
fn check_route(pattern: &str) -> Result<()> {
    let body = pattern.strip_suffix("/...").unwrap_or(pattern);
    if !pattern.starts_with('/') {
        bail!("route {pattern:?} must start with '/'");
    }
    if body.is_empty() || body == "/" {
        // "/" and "/..." are fine.
        return Ok(());
    }
    for segment in body[1..].split('/') {
        if segment.is_empty() || segment == "." || segment == ".." || segment.contains("...") {
            bail!(
                "route {pattern:?} is not an exact path or a prefix ending in '/...' (bad segment {segment:?})"
            );
        }
        if segment
            .chars()
            .any(|c| c.is_control() || c == '?' || c == '#')
        {
            bail!("route {pattern:?} has a character not allowed in a path");
        }
    }
    Ok(())
}

/// Grants name an interface (`ns:pkg/iface`) or a whole package (`ns:pkg`), without version.
fn check_import_name(name: &str) -> Result<()> {
    let valid = |part: &str| {
        !part.is_empty()
            && part
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    };
    let (package, interface) = match name.split_once('/') {
        Some((p, i)) => (p, Some(i)),
        None => (name, None),
    };
    let ok = match package.split_once(':') {
        Some((ns, pkg)) => valid(ns) && valid(pkg) && interface.is_none_or(valid),
        None => false,
    };
    if !ok {
        bail!(
            "import grant {name:?} must look like \"namespace:package/interface\" or \"namespace:package\" (no version)"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULTS: PluginLimits = PluginLimits {
        memory_mb: 64,
        cpu_ms: 1000,
        timeout_ms: 30_000,
    };

    fn parse(text: &str) -> Result<Manifest> {
        Manifest::parse(text, "demo", Path::new("/plugins"), &DEFAULTS, 512)
    }

    #[test]
    fn handler_manifest_with_route_forms() {
        let m = parse(
            r#"
            kind = "handler"
            component = "demo.wasm"
            routes = ["/health", { path = "/events/...", timeout_ms = 0, public = true }, { path = "/metrics", operator = true }]
            imports = ["gantry:plugin/log", "wasi:http/outgoing-handler"]
            [limits]
            memory_mb = 16
            [settings]
            greeting = "hi"
            retries = 3
            args = ["-c", "say \"{prompt}\""]
            "#,
        )
        .unwrap();
        assert_eq!(m.name, "demo");
        assert_eq!(
            m.component,
            ComponentSource::File(PathBuf::from("/plugins/demo.wasm"))
        );
        assert_eq!(m.routes[0].timeout, Some(Duration::from_secs(30)));
        assert_eq!(m.routes[1].timeout, None);
        assert!(!m.routes[0].public);
        assert!(m.routes[1].public);
        assert!(m.routes[2].operator && !m.routes[1].operator);
        assert_eq!(m.limits.memory_mb, 16);
        assert_eq!(m.limits.cpu_ms, 1000);
        assert_eq!(m.settings["retries"], "3");
        assert_eq!(m.settings["args"], r#"["-c","say \"{prompt}\""]"#);
        assert!(!m.user_auth, "off unless asked for");
        let m = parse(
            "kind = \"handler\"\ncomponent = \"x.wasm\"\nroutes = [\"/api/auth/...\"]\nuser_auth = true\nerror_envelope = \"webui\"",
        )
        .unwrap();
        assert!(m.user_auth);
        assert_eq!(m.error_envelope, ErrorEnvelope::Webui);
        let m = parse(
            "kind = \"handler\"\ncomponent = \"x.wasm\"\nimports = [\"gantry:plugin/websocket\"]\nroutes = [{ path = \"/a\", websocket = true }, { path = \"/b\", websocket = true, socket_instance = \"per-call\" }]",
        )
        .unwrap();
        assert_eq!(m.routes[0].socket_instance, SocketInstance::PerConnection);
        assert_eq!(m.routes[1].socket_instance, SocketInstance::PerCall);
    }

    #[test]
    fn bundled_backend() {
        let m = parse(
            "kind = \"backend\"\ncomponent = \"bundled:exec\"\nbinary = \"echo\"\nenv = [\"API_KEY\"]",
        )
        .unwrap();
        assert_eq!(m.component, ComponentSource::Bundled("exec".into()));
        assert_eq!(m.binary.as_deref(), Some("echo"));
        assert_eq!(m.env, ["API_KEY"]);
    }

    #[test]
    fn bad_manifests_are_refused_with_reasons() {
        let cases = [
            (
                "kind = \"handler\"\ncomponent = \"x.wasm\"",
                "at least one route",
            ),
            ("kind = \"backend\"\ncomponent = \"x.wasm\"", "binary"),
            (
                "kind = \"backend\"\ncomponent = \"x.wasm\"\nbinary = \"b\"\nenv = [\"A=B\"]",
                "variable name",
            ),
            (
                "kind = \"handler\"\ncomponent = \"x.wasm\"\nroutes = [\"/a\"]\nenv = [\"KEY\"]",
                "for backends",
            ),
            (
                "kind = \"backend\"\ncomponent = \"x.wasm\"\nbinary = \"b\"\nroutes = [\"/a\"]",
                "no routes",
            ),
            ("kind = \"gadget\"\ncomponent = \"x.wasm\"", "kind"),
            (
                "kind = \"handler\"\ncomponent = \"x.wasm\"\nroutes = [\"health\"]",
                "start with '/'",
            ),
            (
                "kind = \"handler\"\ncomponent = \"x.wasm\"\nroutes = [\"/a/../b\"]",
                "bad segment",
            ),
            (
                "kind = \"handler\"\ncomponent = \"x.wasm\"\nroutes = [\"/a/...x\"]",
                "bad segment",
            ),
            (
                "kind = \"handler\"\ncomponent = \"x.wasm\"\nroutes = [\"/a\"]\nimports = [\"gantry:plugin/log@0.2.0\"]",
                "no version",
            ),
            (
                "kind = \"handler\"\ncomponent = \"x.wasm\"\nroutes = [\"/a\"]\n[limits]\nmemory_mb = 4096",
                "max_memory_mb",
            ),
            (
                "kind = \"handler\"\ncomponent = \"x.wasm\"\nroutes = [\"/a\"]\ncolour = 1",
                "colour",
            ),
            (
                "kind = \"handler\"\ncomponent = \"x.wasm\"\nroutes = [{ path = \"/m\", public = true, operator = true }]",
                "both `public` and `operator`",
            ),
            (
                "name = \"a b\"\nkind = \"handler\"\ncomponent = \"x.wasm\"\nroutes = [\"/a\"]",
                "plugin name",
            ),
            (
                "kind = \"backend\"\ncomponent = \"x.wasm\"\nbinary = \"b\"\nuser_auth = true",
                "`user_auth`",
            ),
            (
                "kind = \"handler\"\ncomponent = \"x.wasm\"\nroutes = [{ path = \"/a\", socket_instance = \"per-call\" }]",
                "no WebSocket endpoint",
            ),
            (
                "kind = \"handler\"\ncomponent = \"x.wasm\"\nimports = [\"gantry:plugin/websocket\"]\nroutes = [{ path = \"/a\", websocket = true, socket_instance = \"per-message\" }]",
                "per-call",
            ),
            (
                "kind = \"handler\"\ncomponent = \"x.wasm\"\nroutes = [\"/a\"]\nuser_auth = \"yes\"",
                "user_auth",
            ),
        ];
        for (text, needle) in cases {
            let err = format!("{:#}", parse(text).unwrap_err());
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }

    #[test]
    fn route_patterns() {
        for ok in ["/", "/...", "/health", "/api/v1/...", "/a-b/c_d"] {
            check_route(ok).unwrap();
        }
        for bad in [
            "", "x", "//a", "/a//b", "/a/./b", "/a/..", "/a/...b", "/a?b",
        ] {
            assert!(check_route(bad).is_err(), "{bad}");
        }
    }
}
