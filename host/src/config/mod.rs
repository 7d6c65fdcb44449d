//! Settings, layered: embedded defaults < config file < `GANTRY_*` variables < flags.

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod commands;
mod sections;

pub use commands::CommandsConfig;
pub use sections::WebhooksConfig;

pub use sections::{
    CgroupLimits, ConnectionLimits, EgressConfig, EventsConfig, HttpLimits, IsolationMode,
    SandboxConfig, StorageConfig, TaskLimits, TelemetryConfig, TenantStorage,
    TenantStorageOverride, UsersConfig, WebSocketConfig, WorkdirPolicy,
};

/// The embedded default configuration (`host/default-config.toml`): every setting with its
/// default; the README documents each.
pub const DEFAULTS: &str = include_str!("../../default-config.toml");

/// gantry's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to serve on; port 0 picks a free port.
    pub addr: SocketAddr,
    /// Where gantry keeps its state.
    pub data_dir: PathBuf,
    /// The plugin directory.
    pub plugins: PathBuf,
    /// How long shutdown waits for in-flight requests, in ms.
    pub shutdown_grace_ms: u64,
    /// Log filter (RUST_LOG syntax).
    pub log: String,
    /// Component runtime limits.
    pub runtime: RuntimeConfig,
    /// Task supervisor limits.
    pub tasks: TaskLimits,
    /// Request body and rate limits.
    pub http: HttpLimits,
    /// Directories outside the workspaces that tenants may name as working directories.
    pub workdirs: WorkdirPolicy,
    /// Whether several tenants may be served with less than full task isolation.
    pub isolation: IsolationMode,
    /// What each task's sandbox holds.
    pub sandbox: SandboxConfig,
    /// What tasks may reach through their egress proxy, and the model keys it adds.
    #[serde(default)]
    pub egress: EgressConfig,
    /// Span export over OTLP; off unless an endpoint is set.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// Per-tenant caps on stored task output, and retention.
    #[serde(default)]
    pub storage: StorageConfig,
    /// Users of the `/api` surface: token lifetime and signing keys.
    #[serde(default)]
    pub users: UsersConfig,
    /// The Web UI API's command lines.
    #[serde(default)]
    pub commands: CommandsConfig,
    /// The event bus: how long events are kept.
    #[serde(default)]
    pub events: EventsConfig,
    /// WebSocket connections: caps, timeouts, sizes.
    #[serde(default)]
    pub websocket: WebSocketConfig,
    /// API keys by tenant: a key or a list of keys each.
    #[serde(default)]
    pub api_keys: std::collections::BTreeMap<String, KeyList>,
    /// A file of `tenant:key` lines.
    pub api_keys_file: Option<PathBuf>,
    /// Tenants that may read node-wide figures (`/metrics`). Without API keys, `local` is.
    #[serde(default)]
    pub operators: Vec<String>,
    /// `tenant:key` entries from `GANTRY_API_KEYS` (never from a file or flag).
    #[serde(skip)]
    pub api_keys_env: Option<Redacted>,
    /// Signed webhooks: attempt timeout, retries, and which private hosts they may reach.
    #[serde(default)]
    pub webhooks: WebhooksConfig,
    /// Where gantry keeps its rows: SQLite in the data directory (the default), or a
    /// PostgreSQL database several nodes share (`postgres://…`, also from `GANTRY_STORE`).
    #[serde(default)]
    pub store: StoreLocation,
    /// Connections this node keeps open to a PostgreSQL store at most.
    #[serde(default = "default_store_connections")]
    pub store_max_connections: usize,
    /// This node's id among the nodes sharing a store (also `GANTRY_NODE_ID`); empty: made
    /// once and kept in the data directory's `node-id`. Nodes sharing a data directory must
    /// each be given one.
    #[serde(default)]
    pub node_id: String,
}

fn default_store_connections() -> usize {
    16
}

/// Where the rows are kept.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum StoreLocation {
    /// `gantry.db` in the data directory.
    #[default]
    Sqlite,
    /// A PostgreSQL database, by its URL (which may hold a password: never shown).
    Postgres(String),
}

impl StoreLocation {
    /// `"sqlite"`, or `"postgres"`.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreLocation::Sqlite => "sqlite",
            StoreLocation::Postgres(_) => "postgres",
        }
    }

    /// Parse a setting: `sqlite` (or empty), or a `postgres://` / `postgresql://` URL.
    pub fn parse(text: &str) -> Result<StoreLocation> {
        let text = text.trim();
        if text.is_empty() || text == "sqlite" {
            return Ok(StoreLocation::Sqlite);
        }
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            return Ok(StoreLocation::Postgres(text.to_string()));
        }
        bail!(
            "store must be \"sqlite\" or a postgres:// URL (postgres://USER:PASSWORD@HOST:PORT/DATABASE)"
        )
    }
}

impl std::fmt::Debug for StoreLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreLocation::Sqlite => f.write_str("Sqlite"),
            StoreLocation::Postgres(_) => f.write_str("Postgres([redacted])"),
        }
    }
}

impl<'de> Deserialize<'de> for StoreLocation {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        StoreLocation::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Secret text: its `Debug` says nothing of it.
#[derive(Clone)]
pub struct Redacted(pub String);

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// One key or several.
#[derive(Clone, Deserialize)]
#[serde(untagged)]
pub enum KeyList {
    /// One key.
    One(String),
    /// Several keys.
    Many(Vec<String>),
}

impl std::fmt::Debug for KeyList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Limits of the component runtime.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Handler instances alive at once for tenants, over all plugins.
    pub max_instances: u32,
    /// Of `max_instances`, what one tenant may hold at once.
    pub max_instances_per_tenant: u32,
    /// Handler instances kept for public routes called without a key (`/health`): tenants'
    /// work never takes them.
    pub reserved_public_instances: u32,
    /// Backend adapter instances alive at once (building commands, parsing output); a call
    /// waits for one rather than fail.
    pub max_adapter_instances: u32,
    /// Log readers (event streams, followed logs) open at once over all tenants, and per
    /// tenant. A stream the host writes holds no instance while it waits.
    pub max_streams: u32,
    /// See `max_streams`.
    pub max_streams_per_tenant: u32,
    /// Granularity of the CPU deadline, in ms.
    pub epoch_tick_ms: u64,
    /// The largest memory cap a plugin may ask for, in MiB.
    pub max_memory_mb: u64,
    /// Limits for plugins whose manifests set none.
    pub plugin_defaults: PluginLimits,
}

/// Per-call limits of one plugin.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PluginLimits {
    /// Linear memory per instance, in MiB.
    pub memory_mb: u64,
    /// CPU time of one call, in ms.
    pub cpu_ms: u64,
    /// Wall-clock time of one call, in ms; 0 means none.
    pub timeout_ms: u64,
}

/// Values given on the command line or in the environment; each overrides the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--addr` / `GANTRY_ADDR`.
    pub addr: Option<String>,
    /// `--data-dir` / `GANTRY_DATA_DIR`.
    pub data_dir: Option<PathBuf>,
    /// `--plugins` / `GANTRY_PLUGINS`.
    pub plugins: Option<PathBuf>,
    /// `GANTRY_API_KEYS`.
    pub api_keys: Option<String>,
    /// `GANTRY_STORE` (environment only: a URL may hold a password).
    pub store: Option<String>,
    /// `GANTRY_NODE_ID`.
    pub node_id: Option<String>,
}

impl Overrides {
    /// The overrides only the environment gives: `GANTRY_STORE`, `GANTRY_NODE_ID`.
    pub fn with_store_env(mut self) -> Overrides {
        self.store = std::env::var("GANTRY_STORE")
            .ok()
            .filter(|s| !s.trim().is_empty());
        self.node_id = std::env::var("GANTRY_NODE_ID")
            .ok()
            .filter(|s| !s.trim().is_empty());
        self
    }
}

impl Config {
    /// Load the defaults, then `file` if given, then the overrides.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Config> {
        let file_text = match file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading config file {}", path.display()))?,
            ),
            None => None,
        };
        let config =
            Self::from_layers(file_text.as_deref(), overrides).with_context(|| match file {
                Some(path) => format!("in config file {}", path.display()),
                None => "in the configuration".to_string(),
            })?;
        Ok(config)
    }

    /// Merge the layers given as text; the pure core of [`Config::load`].
    pub fn from_layers(file: Option<&str>, overrides: &Overrides) -> Result<Config> {
        let mut merged: toml::Table = DEFAULTS.parse().context("embedded defaults")?;
        if let Some(text) = file {
            let table: toml::Table = text.parse()?;
            merge(&mut merged, table);
        }
        let mut set = |key: &str, value: toml::Value| {
            merged.insert(key.to_string(), value);
        };
        if let Some(addr) = &overrides.addr {
            set("addr", toml::Value::String(addr.clone()));
        }
        if let Some(dir) = &overrides.data_dir {
            set("data_dir", path_value(dir)?);
        }
        if let Some(dir) = &overrides.plugins {
            set("plugins", path_value(dir)?);
        }
        if let Some(store) = &overrides.store {
            set("store", toml::Value::String(store.clone()));
        }
        if let Some(node) = &overrides.node_id {
            set("node_id", toml::Value::String(node.clone()));
        }
        let mut config: Config = toml::Value::Table(merged).try_into()?;
        config.api_keys_env = overrides.api_keys.clone().map(Redacted);
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<()> {
        const MAX_WARM_LAUNCHERS: usize = 64;
        // Tenants' task uids are uid_base + 0..65536: never system users, never past the
        // largest uid.
        if self.sandbox.uid_base < 1000 || self.sandbox.uid_base > u32::MAX - 65_537 {
            bail!(
                "sandbox.uid_base must be between 1000 and {} (tasks run as uid_base + 0..65536)",
                u32::MAX - 65_537
            );
        }
        let parent = &self.sandbox.cgroup_parent;
        if parent.is_empty()
            || parent.starts_with('.')
            || !parent
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            bail!(
                "sandbox.cgroup_parent is {parent:?}: one plain name (letters, digits, '-', '_', '.'), a cgroup of gantry's own"
            );
        }
        if self.sandbox.warm_launchers > MAX_WARM_LAUNCHERS {
            bail!(
                "sandbox.warm_launchers is {}: at most {MAX_WARM_LAUNCHERS} (each holds two processes and a cgroup while it waits)",
                self.sandbox.warm_launchers
            );
        }
        self.telemetry.validate().map_err(anyhow::Error::msg)?;
        self.users.validate().map_err(anyhow::Error::msg)?;
        self.commands.validate().map_err(anyhow::Error::msg)?;
        self.websocket.validate().map_err(anyhow::Error::msg)?;
        self.webhooks.validate().map_err(anyhow::Error::msg)?;
        if !self.node_id.is_empty()
            && (self.node_id.len() > 64
                || !self
                    .node_id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        {
            bail!("node_id must be 1 to 64 letters, digits, '-', '_' or '.'");
        }
        if self.store_max_connections == 0 || self.store_max_connections > 1000 {
            bail!("store_max_connections must be between 1 and 1000");
        }
        for operator in &self.operators {
            crate::tenants::TenantId::new(operator).context("in operators")?;
        }
        let conn = &self.http.connections;
        if conn.max_connections_per_address == 0 {
            bail!("http.max_connections_per_address must be at least 1");
        }
        // hyper's own floor for its read buffer.
        const MIN_READ_BUFFER: usize = 8192;
        if conn.read_buffer_bytes < MIN_READ_BUFFER.max(conn.max_header_bytes) {
            bail!(
                "http.read_buffer_bytes ({}) must be at least 8192 and at least \
                 http.max_header_bytes ({})",
                conn.read_buffer_bytes,
                conn.max_header_bytes
            );
        }
        let rt = &self.runtime;
        if rt.max_instances == 0 {
            bail!("runtime.max_instances must be at least 1");
        }
        for (name, value) in [
            ("max_instances_per_tenant", rt.max_instances_per_tenant),
            ("max_adapter_instances", rt.max_adapter_instances),
            ("max_streams", rt.max_streams),
            ("max_streams_per_tenant", rt.max_streams_per_tenant),
        ] {
            if value == 0 {
                bail!("runtime.{name} must be at least 1");
            }
        }
        if rt.epoch_tick_ms == 0 {
            bail!("runtime.epoch_tick_ms must be at least 1");
        }
        if rt.plugin_defaults.memory_mb > rt.max_memory_mb {
            bail!(
                "runtime.plugin_defaults.memory_mb ({}) is over runtime.max_memory_mb ({})",
                rt.plugin_defaults.memory_mb,
                rt.max_memory_mb
            );
        }
        Ok(())
    }

    /// Every configured API key, from the config, its key file and `GANTRY_API_KEYS`.
    pub fn api_keys(&self) -> Result<crate::tenants::ApiKeys> {
        let mut keys = crate::tenants::ApiKeys::default();
        for (tenant, list) in &self.api_keys {
            let list = match list {
                KeyList::One(k) => std::slice::from_ref(k),
                KeyList::Many(ks) => ks.as_slice(),
            };
            for key in list {
                keys.add(tenant, key).context("in [api_keys]")?;
            }
        }
        if let Some(path) = &self.api_keys_file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading api_keys_file {}", path.display()))?;
            keys.add_list(&text, &path.display().to_string())?;
        }
        if let Some(Redacted(text)) = &self.api_keys_env {
            keys.add_list(text, "GANTRY_API_KEYS")?;
        }
        Ok(keys)
    }

    /// The standard `OTEL_EXPORTER_OTLP_ENDPOINT` (given as `value`) over
    /// `[telemetry] otlp_endpoint`; unset or empty leaves the setting as it was.
    pub fn with_otlp_env(mut self, value: Option<&str>) -> Result<Config> {
        if let Some(endpoint) = value.map(str::trim).filter(|e| !e.is_empty()) {
            self.telemetry.otlp_endpoint = Some(endpoint.to_string());
            self.telemetry
                .validate()
                .map_err(anyhow::Error::msg)
                .context("in OTEL_EXPORTER_OTLP_ENDPOINT")?;
        }
        Ok(self)
    }

    /// The shutdown grace period.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
}

fn path_value(path: &Path) -> Result<toml::Value> {
    match path.to_str() {
        Some(s) => Ok(toml::Value::String(s.to_string())),
        None => bail!("path {} is not valid UTF-8", path.display()),
    }
}

/// Deep-merge `over` into `base`: tables merge key by key, anything else replaces.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_store_is_sqlite_or_a_postgres_url_that_is_never_shown() {
        let c = Config::from_layers(None, &Overrides::default()).unwrap();
        assert_eq!(c.store, StoreLocation::Sqlite);
        assert_eq!(c.store_max_connections, 16);
        let over = Overrides {
            store: Some("postgres://gantry:s3cret@127.0.0.1:5432/gantry".into()),
            node_id: Some("node-a".into()),
            ..Overrides::default()
        };
        let c = Config::from_layers(Some("store = \"sqlite\""), &over).unwrap();
        assert_eq!(c.store.kind(), "postgres");
        assert_eq!(c.node_id, "node-a");
        assert!(!format!("{c:?}").contains("s3cret"), "{c:?}");
        let err =
            Config::from_layers(Some("store = \"mysql://x\""), &Overrides::default()).unwrap_err();
        assert!(format!("{err:#}").contains("postgres://"), "{err:#}");
        for bad in ["node_id = \"a b\"", "store_max_connections = 0"] {
            assert!(
                Config::from_layers(Some(bad), &Overrides::default()).is_err(),
                "{bad}"
            );
        }
    }
    use super::*;

    #[test]
    fn defaults_alone_are_valid() {
        let c = Config::from_layers(None, &Overrides::default()).unwrap();
        assert_eq!(c.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.plugins, PathBuf::from("plugins"));
        assert_eq!(c.runtime.plugin_defaults.memory_mb, 64);
        // The file's storage defaults are the code's.
        assert_eq!(c.storage, StorageConfig::default());
    }

    #[test]
    fn storage_overrides_apply_per_tenant_and_typos_are_refused() {
        let o = Overrides::default();
        let file = "[storage]\nmax_output_bytes = 100\ntenants = { ci = { max_output_bytes = 0, retention_max_age_secs = 60 } }\n";
        let c = Config::from_layers(Some(file), &o).unwrap();
        let ci = c.storage.for_tenant("ci");
        assert_eq!((ci.max_output_bytes, ci.retention_max_age_secs), (0, 60));
        assert_eq!(ci.max_output_events, 5_000_000, "unset: the section's");
        assert_eq!(c.storage.for_tenant("alice").max_output_bytes, 100);
        let typo = "[storage]\ntenants = { ci = { max_output_byte = 0 } }\n";
        let err = Config::from_layers(Some(typo), &o).unwrap_err();
        assert!(format!("{err:#}").contains("max_output_byte"), "{err:#}");
    }

    #[test]
    fn file_merges_tables_and_overrides_win() {
        let file = r#"
            addr = "127.0.0.1:9000"
            [runtime]
            max_instances = 3
        "#;
        let over = Overrides {
            addr: Some("127.0.0.1:0".into()),
            data_dir: Some("/tmp/x".into()),
            ..Overrides::default()
        };
        let c = Config::from_layers(Some(file), &over).unwrap();
        assert_eq!(c.addr.port(), 0);
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.runtime.max_instances, 3);
        // Untouched keys of a merged table keep their defaults.
        assert_eq!(c.runtime.epoch_tick_ms, 10);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        let o = Overrides::default();
        let err = Config::from_layers(Some("adress = \"x\""), &o).unwrap_err();
        assert!(format!("{err:#}").contains("adress"), "{err:#}");
        assert!(Config::from_layers(Some("addr = \"nonsense\""), &o).is_err());
        assert!(Config::from_layers(Some("[runtime]\nmax_instances = 0"), &o).is_err());
        let err = Config::from_layers(Some("[sandbox]\nwarm_launchers = 65"), &o).unwrap_err();
        assert!(format!("{err:#}").contains("at most 64"), "{err:#}");
        let off = Config::from_layers(Some("[sandbox]\nwarm_launchers = 0"), &o).unwrap();
        assert_eq!(off.sandbox.warm_launchers, 0);
        let bad_addr = Overrides {
            addr: Some("localhost".into()),
            ..Overrides::default()
        };
        assert!(Config::from_layers(None, &bad_addr).is_err());
    }

    #[test]
    fn connection_limits_and_operators() {
        let o = Overrides::default();
        let c = Config::from_layers(None, &o).unwrap();
        assert_eq!(c.http.connections, ConnectionLimits::default());
        assert!(c.operators.is_empty());
        let file = "operators = [\"ops\"]\n[http]\nheader_read_timeout_ms = 250\n";
        let c = Config::from_layers(Some(file), &o).unwrap();
        assert_eq!(c.http.connections.header_read_timeout_ms, 250);
        assert_eq!(c.http.connections.keep_alive_timeout_ms, 30_000);
        assert_eq!(c.operators, ["ops"]);
        for bad in [
            // Flattened settings still refuse what they do not know.
            "[http]\nheader_timeout_ms = 1",
            "[http]\nmax_connections_per_address = 0",
            "[http]\nread_buffer_bytes = 4096",
            "[http]\nmax_header_bytes = 4000000",
            "operators = [\"not a tenant\"]",
            // The cgroup sweep removes what is under it: one name of gantry's own.
            "[sandbox]\ncgroup_parent = \"\"",
            "[sandbox]\ncgroup_parent = \"../system.slice\"",
            "[sandbox]\ncgroup_parent = \"a/b\"",
            "[websocket]\nmax_instances = 0",
        ] {
            assert!(Config::from_layers(Some(bad), &o).is_err(), "{bad}");
        }
    }

    #[test]
    fn api_keys_from_every_source() {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), "carol:carol-key-0123456789\n").unwrap();
        let text = format!(
            "api_keys_file = {:?}\n[api_keys]\nalice = \"alice-key-0123456789\"\nbob = [\"bob-key-0123456789a\", \"bob-key-0123456789b\"]\n",
            file.path().display().to_string()
        );
        let over = Overrides {
            api_keys: Some("dave:dave-key-0123456789".into()),
            ..Overrides::default()
        };
        let c = Config::from_layers(Some(&text), &over).unwrap();
        let debug = format!("{c:?}");
        assert!(
            !debug.contains("alice-key") && !debug.contains("dave-key"),
            "{debug}"
        );
        let keys = c.api_keys().unwrap();
        for (key, tenant) in [
            ("alice-key-0123456789", "alice"),
            ("bob-key-0123456789b", "bob"),
            ("carol-key-0123456789", "carol"),
            ("dave-key-0123456789", "dave"),
        ] {
            assert_eq!(keys.resolve(key).unwrap().as_str(), tenant);
        }
    }

    #[test]
    fn telemetry_is_off_by_default_and_set_by_file_or_env() {
        let c = Config::from_layers(None, &Overrides::default()).unwrap();
        assert_eq!(c.telemetry, TelemetryConfig::default());
        assert_eq!(c.telemetry.traces_url(), None);
        assert_eq!(c.telemetry.service_name, "gantry");
        let file =
            "[telemetry]\notlp_endpoint = \"http://127.0.0.1:4318/\"\nservice_name = \"gw\"\n";
        let c = Config::from_layers(Some(file), &Overrides::default()).unwrap();
        assert_eq!(
            c.telemetry.traces_url().as_deref(),
            Some("http://127.0.0.1:4318/v1/traces")
        );
        assert_eq!(c.telemetry.service_name, "gw");
        let c = Config::from_layers(Some(file), &Overrides::default())
            .unwrap()
            .with_otlp_env(Some("http://collector:4318"))
            .unwrap();
        assert_eq!(
            c.telemetry.traces_url().as_deref(),
            Some("http://collector:4318/v1/traces")
        );
        let c = Config::from_layers(None, &Overrides::default()).unwrap();
        assert_eq!(
            c.with_otlp_env(Some("")).unwrap().telemetry.otlp_endpoint,
            None
        );
        let c = Config::from_layers(None, &Overrides::default()).unwrap();
        assert!(c.with_otlp_env(Some("https://collector")).is_err());
        for bad in [
            "https://collector:4318",
            "collector:4318",
            "http://",
            "http://u@h:1",
        ] {
            let file = format!("[telemetry]\notlp_endpoint = {bad:?}\n");
            let err = Config::from_layers(Some(&file), &Overrides::default()).unwrap_err();
            assert!(
                format!("{err:#}").contains("otlp_endpoint"),
                "{bad}: {err:#}"
            );
        }
        let unknown = "[telemetry]\nendpoint = \"http://x\"\n";
        assert!(Config::from_layers(Some(unknown), &Overrides::default()).is_err());
    }
}
