//! The sections of the config that other modules read: plain settings, validated here or
//! where they are used. They live in `config` (the bottom layer) so that no module above has to
//! be imported to describe its own settings.

use crate::tenants::TenantId;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Limits of the supervisor.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskLimits {
    /// Tasks running at once, over all tenants.
    pub max_running: usize,
    /// Tasks running at once per tenant; more wait, in order.
    pub max_running_per_tenant: usize,
    /// Between TERM and KILL when a task is cancelled or times out, in ms.
    pub kill_grace_ms: u64,
    /// A task's timeout unless its request sets one, in ms; 0 means none.
    pub default_timeout_ms: u64,
    /// Longer output lines are split into pieces of this many bytes.
    pub max_line_bytes: usize,
    /// Board tasks (the Web UI API's) one tenant may have waiting in its queues; more are
    /// refused with 503 `QUEUE_FULL`.
    #[serde(default = "default_max_queued")]
    pub max_queued_per_tenant: u32,
    /// How long this node's lease on its tasks holds without renewal, in ms. Another node
    /// sharing the store marks a node's unfinished tasks interrupted only once its lease has
    /// run out; it is renewed every third of this.
    #[serde(default = "default_node_lease_ms")]
    pub node_lease_ms: u64,
}

fn default_max_queued() -> u32 {
    10_000
}

fn default_node_lease_ms() -> u64 {
    30_000
}

impl Default for TaskLimits {
    fn default() -> Self {
        TaskLimits {
            max_running: 16,
            max_running_per_tenant: 4,
            kill_grace_ms: 5000,
            default_timeout_ms: 0,
            max_line_bytes: 64 * 1024,
            max_queued_per_tenant: default_max_queued(),
            node_lease_ms: default_node_lease_ms(),
        }
    }
}

/// Limits of the HTTP front, from the `[http]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpLimits {
    /// The largest request body, in bytes; larger ones get 413, chunked ones included.
    pub max_request_body_bytes: u64,
    /// Requests per minute per tenant; 0 turns rate limiting off.
    pub rate_limit_per_minute: u32,
    /// How many requests a tenant may make at once above the steady rate; 0 means as many as
    /// `rate_limit_per_minute`.
    pub rate_limit_burst: u32,
    /// Per-tenant overrides of `rate_limit_per_minute` (0 exempts the tenant).
    #[serde(default)]
    pub rate_limit_tenants: BTreeMap<String, u32>,
    /// On `user_auth` routes (the Web UI API), requests per minute per user (an API key's
    /// service user counts as one); 0 turns it off.
    #[serde(default = "default_user_rate")]
    pub user_rate_limit_per_minute: u32,
    /// On `user_auth` routes, requests per minute per client network of callers without
    /// credentials (logging in, health); 0 turns it off.
    #[serde(default = "default_public_rate")]
    pub public_rate_limit_per_minute: u32,
    /// Connection timeouts, caps and head sizes.
    #[serde(flatten)]
    pub connections: ConnectionLimits,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_request_body_bytes: 10 << 20,
            rate_limit_per_minute: 0,
            rate_limit_burst: 0,
            rate_limit_tenants: BTreeMap::new(),
            user_rate_limit_per_minute: default_user_rate(),
            public_rate_limit_per_minute: default_public_rate(),
            connections: ConnectionLimits::default(),
        }
    }
}

/// The Web UI API document's budgets: 200 requests a minute per user, 100 per address.
fn default_user_rate() -> u32 {
    200
}

fn default_public_rate() -> u32 {
    100
}

/// What one client connection may hold, from the `[http]` section. A timeout of 0 is none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionLimits {
    /// From a connection's first byte of a request (or its opening) to the end of the request's
    /// headers, in ms.
    pub header_read_timeout_ms: u64,
    /// From the end of a request's headers to the end of its body, in ms.
    pub body_read_timeout_ms: u64,
    /// How long a kept-alive connection may wait for its next request, in ms.
    pub keep_alive_timeout_ms: u64,
    /// Connections open at once from one IPv4 address or IPv6 /64.
    pub max_connections_per_address: usize,
    /// The largest request head (request line and headers) gantry answers, in bytes.
    pub max_header_bytes: usize,
    /// How much of a request head one connection buffers at most, in bytes; a longer head is
    /// refused by the HTTP layer itself.
    pub read_buffer_bytes: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 60_000,
            keep_alive_timeout_ms: 30_000,
            max_connections_per_address: 128,
            max_header_bytes: 64 << 10,
            read_buffer_bytes: 2 << 20,
        }
    }
}

/// Directories outside gantry's own workspaces that a tenant may name as a working directory,
/// from the `[workdirs]` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkdirPolicy {
    /// Allowed prefixes by tenant; `"*"` applies to every tenant.
    #[serde(default)]
    pub allowed: std::collections::BTreeMap<String, Vec<PathBuf>>,
    /// Never allowed, even inside an allowed prefix. gantry's data directory is always refused.
    #[serde(default)]
    pub blocked: Vec<PathBuf>,
}

impl WorkdirPolicy {
    /// Prefixes as the kernel resolves them, so that a symlinked prefix still matches.
    pub(crate) fn resolved(&self) -> WorkdirPolicy {
        let resolve = |p: &PathBuf| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone());
        WorkdirPolicy {
            allowed: self
                .allowed
                .iter()
                .map(|(t, ps)| (t.clone(), ps.iter().map(resolve).collect()))
                .collect(),
            blocked: self.blocked.iter().map(resolve).collect(),
        }
    }

    /// Whether `tenant` may work in the resolved directory `dir`.
    pub(crate) fn permits(&self, tenant: &TenantId, dir: &Path, data_dir: &Path) -> bool {
        if dir.starts_with(data_dir) || self.blocked.iter().any(|b| dir.starts_with(b)) {
            return false;
        }
        [tenant.as_str(), "*"]
            .iter()
            .filter_map(|t| self.allowed.get(*t))
            .flatten()
            .any(|prefix| dir.starts_with(prefix))
    }
}

/// Whether gantry may serve several tenants with less than full isolation.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum IsolationMode {
    /// Several tenants only with full isolation (the default).
    #[default]
    Full,
    /// Serve several tenants whatever the sandbox holds (said at start and in `/health`).
    Weak,
}

/// `[sandbox]`: what every task's sandbox holds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxConfig {
    /// Run each task in its own namespaces (user, PID, mount, IPC, UTS, network).
    pub namespaces: bool,
    /// When gantry runs as root: a tenant's tasks run as uid and gid `uid_base + n`, `n` from
    /// the tenant's name (0..65536), so tenants do not share a uid.
    pub uid_base: u32,
    /// Extra paths every task may read (beyond the system's and its backend's install tree).
    pub read_only: Vec<PathBuf>,
    /// The cgroup (below the hierarchy's root) that holds one cgroup per task.
    pub cgroup_parent: String,
    /// Sandbox launchers kept started ahead of demand, each already in its namespaces and
    /// cgroups, so that a task's spawn pays only for what is its own (0: start each one when
    /// its task comes).
    pub warm_launchers: usize,
    /// Per-task cgroup limits.
    #[serde(flatten)]
    pub limits: CgroupLimits,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            namespaces: true,
            uid_base: 2_100_000_000,
            read_only: Vec::new(),
            cgroup_parent: "gantry".into(),
            warm_launchers: 2,
            limits: CgroupLimits::default(),
        }
    }
}

/// `[egress]`: what tasks may reach through their proxy, and the model keys it adds.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressConfig {
    /// Hosts every task may reach (`host`, `host:port`, `*.domain`, `*` for any public host;
    /// private and loopback addresses only when named exactly).
    #[serde(default)]
    pub allow: Vec<String>,
    /// More hosts per tenant.
    #[serde(default)]
    pub tenants: std::collections::BTreeMap<String, Vec<String>>,
    /// Model API keys per tenant, by the variable a backend's manifest names in `env`
    /// (`[egress.model_keys.alice] ANTHROPIC_API_KEY = "…"`); gantry's own variable of that
    /// name otherwise. The model proxy adds them; no task ever holds one.
    #[serde(default)]
    pub model_keys: std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>,
}

impl std::fmt::Debug for EgressConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EgressConfig")
            .field("allow", &self.allow)
            .field("tenants", &self.tenants)
            .field("model_keys", &"[redacted]")
            .finish()
    }
}

impl EgressConfig {
    /// The model key in variable `var` for `tenant`: the tenant's own, else gantry's.
    pub fn model_key(&self, tenant: &str, var: &str) -> Option<String> {
        self.model_keys
            .get(tenant)
            .and_then(|keys| keys.get(var).cloned())
            .or_else(|| std::env::var(var).ok())
            .filter(|k| !k.is_empty())
    }
}

/// The limits of one task's cgroup.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CgroupLimits {
    /// Processes and threads at once.
    pub pids_max: u64,
    /// Memory (and, on v1 where it exists, memory plus swap), in bytes.
    pub memory_max_bytes: u64,
    /// CPU weight, 1–10000 (100 is the default share).
    pub cpu_weight: u64,
}

impl Default for CgroupLimits {
    fn default() -> Self {
        CgroupLimits {
            pids_max: 512,
            memory_max_bytes: 2 << 30,
            cpu_weight: 100,
        }
    }
}

/// Span export over OTLP, from the `[telemetry]` section. Off unless an endpoint is set here or in
/// `OTEL_EXPORTER_OTLP_ENDPOINT`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// The collector's OTLP/HTTP base URL (e.g. `http://127.0.0.1:4318`); spans go to
    /// `{otlp_endpoint}/v1/traces` as protobuf. None: nothing is exported.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    /// The `service.name` the exported spans carry.
    #[serde(default = "default_service_name")]
    pub service_name: String,
}

fn default_service_name() -> String {
    "gantry".to_string()
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            otlp_endpoint: None,
            service_name: default_service_name(),
        }
    }
}

impl TelemetryConfig {
    /// Where spans are sent, when export is on: the endpoint with `/v1/traces` appended, as
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` is read.
    pub fn traces_url(&self) -> Option<String> {
        let base = self.otlp_endpoint.as_deref()?.trim();
        (!base.is_empty()).then(|| format!("{}/v1/traces", base.trim_end_matches('/')))
    }

    /// An endpoint gantry can send to: plain `http://` (the exporter has no TLS of its own).
    pub(crate) fn validate(&self) -> Result<(), String> {
        let Some(endpoint) = self.otlp_endpoint.as_deref().map(str::trim) else {
            return Ok(());
        };
        if endpoint.is_empty() {
            return Ok(());
        }
        let Some(rest) = endpoint.strip_prefix("http://") else {
            return Err(format!(
                "telemetry.otlp_endpoint must be an http:// URL (OTLP/HTTP without TLS; send to a \
                 local collector), not {endpoint:?}"
            ));
        };
        let authority = rest.split('/').next().unwrap_or_default();
        if authority.is_empty() || authority.contains(['?', '#', '@']) {
            return Err(format!(
                "telemetry.otlp_endpoint must be http://HOST[:PORT][/PATH], not {endpoint:?}"
            ));
        }
        if self.service_name.trim().is_empty() {
            return Err("telemetry.service_name must not be empty".to_string());
        }
        Ok(())
    }
}

/// `[storage]`: how much task output each tenant may keep stored, and how long it is kept.
/// Every cap and budget here is per tenant; `tenants` overrides them for one.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Log entries a tenant's tasks may keep stored; past it, output is no longer stored.
    /// 0 means no cap.
    pub max_output_events: u64,
    /// Bytes of log entries (their stored JSON) a tenant's tasks may keep stored; past it,
    /// output is no longer stored. 0 means no cap.
    pub max_output_bytes: u64,
    /// Finished tasks (rows and logs) older than this many seconds are deleted; 0 keeps them.
    pub retention_max_age_secs: u64,
    /// When a tenant stores more output bytes than this, its oldest finished tasks are
    /// deleted until it does not; 0 means no budget.
    pub retention_max_bytes: u64,
    /// How often retention runs and the write-ahead log is truncated, in ms; 0 turns both off.
    pub retention_interval_ms: u64,
    /// Per-tenant overrides of the settings above.
    #[serde(default)]
    pub tenants: BTreeMap<String, TenantStorageOverride>,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            max_output_events: 5_000_000,
            max_output_bytes: 1 << 30,
            retention_max_age_secs: 30 * 24 * 3600,
            retention_max_bytes: 512 << 20,
            retention_interval_ms: 60_000,
            tenants: BTreeMap::new(),
        }
    }
}

/// One tenant's overrides of `[storage]`; an unset field keeps the section's value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantStorageOverride {
    /// Overrides `max_output_events`.
    pub max_output_events: Option<u64>,
    /// Overrides `max_output_bytes`.
    pub max_output_bytes: Option<u64>,
    /// Overrides `retention_max_age_secs`.
    pub retention_max_age_secs: Option<u64>,
    /// Overrides `retention_max_bytes`.
    pub retention_max_bytes: Option<u64>,
}

/// One tenant's storage settings, overrides applied (0: no cap, no budget, kept forever).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TenantStorage {
    /// Log entries its tasks may keep stored.
    pub max_output_events: u64,
    /// Bytes of log entries its tasks may keep stored.
    pub max_output_bytes: u64,
    /// Finished tasks older than this many seconds are deleted.
    pub retention_max_age_secs: u64,
    /// Past this many stored bytes, its oldest finished tasks are deleted.
    pub retention_max_bytes: u64,
}

impl StorageConfig {
    /// `tenant`'s settings: the section's, with the tenant's overrides.
    pub fn for_tenant(&self, tenant: &str) -> TenantStorage {
        let o = self.tenants.get(tenant).cloned().unwrap_or_default();
        TenantStorage {
            max_output_events: o.max_output_events.unwrap_or(self.max_output_events),
            max_output_bytes: o.max_output_bytes.unwrap_or(self.max_output_bytes),
            retention_max_age_secs: o
                .retention_max_age_secs
                .unwrap_or(self.retention_max_age_secs),
            retention_max_bytes: o.retention_max_bytes.unwrap_or(self.retention_max_bytes),
        }
    }
}

/// `[users]`: the users of the `/api` surface and their access tokens.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsersConfig {
    /// How long an access token is honoured, in seconds (its `expires_in`).
    pub token_ttl_secs: u64,
    /// The file of HS256 signing keys, one `KID:HEX` line each, the first signing and all
    /// verifying; relative paths are under the data directory. Created (one random 32-byte
    /// key, mode 0600) when missing; refused when others may read it.
    pub signing_key_file: std::path::PathBuf,
    /// How long a working session (`/api/sessions`) stays active after it is made, in
    /// seconds (its `expires_at`).
    #[serde(default = "default_session_ttl_secs")]
    pub session_ttl_secs: u64,
}

fn default_session_ttl_secs() -> u64 {
    2 * 3600
}

impl Default for UsersConfig {
    fn default() -> Self {
        UsersConfig {
            token_ttl_secs: 3600,
            signing_key_file: "jwt-signing-keys".into(),
            session_ttl_secs: default_session_ttl_secs(),
        }
    }
}

impl UsersConfig {
    /// The signing key file, resolved against the data directory.
    pub fn signing_key_path(&self, data_dir: &Path) -> std::path::PathBuf {
        data_dir.join(&self.signing_key_file)
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.token_ttl_secs == 0 || self.token_ttl_secs > 30 * 24 * 3600 {
            return Err("users.token_ttl_secs must be between 1 and 2592000 (30 days)".into());
        }
        if self.session_ttl_secs == 0 || self.session_ttl_secs > 30 * 24 * 3600 {
            return Err("users.session_ttl_secs must be between 1 and 2592000 (30 days)".into());
        }
        if self.signing_key_file.as_os_str().is_empty() {
            return Err("users.signing_key_file must name a file".into());
        }
        Ok(())
    }
}

/// `[events]`: the per-tenant event bus (what WebSocket subscribers and webhooks are fed).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    /// Events older than this many seconds are forgotten (a client resuming from before that
    /// is told so, never handed a gap); 0 keeps them.
    pub retention_secs: u64,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            retention_secs: 7 * 24 * 3600,
        }
    }
}

/// `[websocket]`: connections upgraded on a manifest's `websocket = true` routes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSocketConfig {
    /// Open connections per user (per key for callers without a user); more are closed with
    /// 1008 (policy violation).
    pub max_connections_per_user: u32,
    /// Open connections of one tenant's users together (API keys included), so that no
    /// tenant holds the node's connections and instance slots; more are closed with 1008.
    pub max_connections_per_tenant: u32,
    /// Open connections on the node; more are refused with 503 before the upgrade.
    pub max_connections: u32,
    /// Component instances serving connections at once, node-wide: the engine's pool keeps
    /// a slot for each. A connection on a `socket_instance = "per-connection"` route holds
    /// one for its life (none free: 503 before the upgrade); one on a `"per-call"` route
    /// holds one only during a call, and its call waits for a slot.
    pub max_instances: u32,
    /// A connection that has not authenticated within this many ms is closed with 4401.
    pub auth_timeout_ms: u64,
    /// Connections from one client address (an IPv6 /64) that have not authenticated yet;
    /// more upgrades are refused with 429 before an instance is taken for them.
    pub max_unauthenticated_per_address: u32,
    /// The largest message a client may send, in bytes; larger ones close the connection
    /// with 1009 (message too big).
    pub max_message_bytes: usize,
    /// A ping goes out after this many ms without traffic; a peer silent for two of these
    /// is closed with 1001 (going away).
    pub ping_interval_ms: u64,
    /// Messages waiting to be written to one connection; a consumer that lets this many pile
    /// up for `slow_consumer_ms` is closed with 4408 and told the last event it was given.
    pub send_queue: usize,
    /// How long a full send queue is tolerated, in ms.
    pub slow_consumer_ms: u64,
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        WebSocketConfig {
            max_connections_per_user: 50,
            max_connections_per_tenant: 256,
            max_connections: 1024,
            max_instances: 1024,
            auth_timeout_ms: 10_000,
            max_unauthenticated_per_address: 16,
            max_message_bytes: 64 * 1024,
            ping_interval_ms: 30_000,
            send_queue: 256,
            slow_consumer_ms: 5_000,
        }
    }
}

impl WebSocketConfig {
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.max_connections_per_user == 0
            || self.max_connections_per_tenant == 0
            || self.max_connections == 0
            || self.max_instances == 0
            || self.max_unauthenticated_per_address == 0
        {
            return Err(
                "websocket.max_connections, max_instances, max_connections_per_user, \
                 max_connections_per_tenant and max_unauthenticated_per_address must be at \
                 least 1"
                    .into(),
            );
        }
        if self.auth_timeout_ms == 0 || self.ping_interval_ms == 0 || self.slow_consumer_ms == 0 {
            return Err(
                "websocket.auth_timeout_ms, ping_interval_ms and slow_consumer_ms must be above 0"
                    .into(),
            );
        }
        if !(1024..=16 << 20).contains(&self.max_message_bytes) {
            return Err("websocket.max_message_bytes must be between 1024 and 16777216".into());
        }
        if self.send_queue == 0 {
            return Err("websocket.send_queue must be at least 1".into());
        }
        Ok(())
    }
}

/// `[webhooks]`: how signed webhooks are delivered.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// One attempt's limit (connect, send and the receiver's answer), in ms.
    pub timeout_ms: u64,
    /// Attempts per delivery before it is marked failed.
    pub max_attempts: u32,
    /// The wait before the second attempt, in ms; it doubles for each later one.
    pub backoff_base_ms: u64,
    /// The longest wait between two attempts, in ms.
    pub backoff_cap_ms: u64,
    /// Deliveries in flight at once, over all tenants.
    pub max_in_flight: usize,
    /// Deliveries in flight at once for one tenant, so that one slow receiver cannot hold
    /// every slot.
    pub max_in_flight_per_tenant: usize,
    /// Hosts (names or IP addresses) a webhook may reach although they resolve to loopback,
    /// private, link-local or other non-public addresses. Empty by default: only public
    /// addresses are reached.
    pub allowed_private_hosts: Vec<String>,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            timeout_ms: 10_000,
            max_attempts: 8,
            backoff_base_ms: 1_000,
            backoff_cap_ms: 15 * 60 * 1000,
            max_in_flight: 32,
            max_in_flight_per_tenant: 4,
            allowed_private_hosts: Vec::new(),
        }
    }
}

impl WebhooksConfig {
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.timeout_ms == 0 || self.max_attempts == 0 {
            return Err("webhooks.timeout_ms and webhooks.max_attempts must be above 0".into());
        }
        if self.backoff_base_ms == 0 || self.backoff_cap_ms < self.backoff_base_ms {
            return Err(
                "webhooks.backoff_base_ms must be above 0 and at most webhooks.backoff_cap_ms"
                    .into(),
            );
        }
        if self.max_in_flight == 0 || self.max_in_flight_per_tenant == 0 {
            return Err(
                "webhooks.max_in_flight and webhooks.max_in_flight_per_tenant must be above 0"
                    .into(),
            );
        }
        Ok(())
    }
}
