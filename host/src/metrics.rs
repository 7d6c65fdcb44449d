//! The node's counters, rendered in the Prometheus text exposition format (version 0.0.4) by
//! `prometheus-client`.
//!
//! Each family is a `prometheus-client` metric family: recording takes a read lock on the
//! family's label map (a write lock only for a label set's first sample) and bumps atomics.
//! Label sets are few (routes are manifest patterns, not raw paths), so the maps stay small.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeMetric, prometheus_text,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::time::Duration;

/// Upper bounds of the request latency histogram, in seconds.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: String,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
    method: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    backend: String,
    outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginErrorLabels {
    plugin: String,
    code: String,
}

fn latency_histogram() -> Histogram {
    Histogram::new(BUCKETS.iter().copied())
}

/// The families; clones share their values.
#[derive(Debug, Clone)]
struct Families {
    /// By (route pattern, method, status).
    requests: Family<RequestLabels, Counter>,
    /// By (route pattern, method).
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    /// By (backend, final state).
    runs: Family<RunLabels, Counter>,
    /// By (plugin, error code).
    plugin_errors: Family<PluginErrorLabels, Counter>,
    /// Responses whose body is still being sent.
    streaming: Gauge,
    /// Open WebSocket connections.
    websockets: Gauge,
    /// By route pattern: responses cut short after their head was sent.
    failed_streams: Family<StreamLabels, Counter>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StreamLabels {
    route: String,
}

/// gantry's metrics; one per node.
#[derive(Debug)]
pub struct Metrics {
    families: Families,
    /// The last minute's requests, per second.
    recent: RecentTraffic,
    /// The store whose size each scrape reads, once one is watched.
    store: std::sync::OnceLock<std::sync::Arc<dyn StoreGauges>>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            families: Families {
                requests: Family::default(),
                latency: Family::new_with_constructor(latency_histogram),
                runs: Family::default(),
                plugin_errors: Family::default(),
                streaming: Gauge::default(),
                websockets: Gauge::default(),
                failed_streams: Family::default(),
            },
            recent: RecentTraffic::default(),
            store: std::sync::OnceLock::new(),
        }
    }
}

/// What this node answered in the last minute (a sliding window of whole seconds).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Traffic {
    /// Requests answered.
    pub requests: u64,
    /// Of those, answered 5xx.
    pub server_errors: u64,
    /// Of those, answered 4xx.
    pub client_errors: u64,
    /// Mean time to the response head, in ms.
    pub average_ms: Option<f64>,
}

/// One second of traffic.
#[derive(Debug, Clone, Copy, Default)]
struct Second {
    /// Which second (since the epoch) the counts are of.
    at: u64,
    requests: u64,
    server_errors: u64,
    client_errors: u64,
    micros: u64,
}

/// The last 60 seconds of requests: a ring of per-second counts, each slot reset when a new
/// second reaches it, so the window costs 60 slots however busy the node is.
#[derive(Debug)]
struct RecentTraffic {
    seconds: std::sync::Mutex<[Second; 60]>,
}

impl Default for RecentTraffic {
    fn default() -> Self {
        RecentTraffic {
            seconds: std::sync::Mutex::new([Second::default(); 60]),
        }
    }
}

impl RecentTraffic {
    fn record(&self, now: u64, status: u16, elapsed: Duration) {
        let mut seconds = self.seconds.lock().unwrap_or_else(|p| p.into_inner());
        let slot = &mut seconds[(now % 60) as usize];
        if slot.at != now {
            *slot = Second {
                at: now,
                ..Second::default()
            };
        }
        slot.requests += 1;
        slot.server_errors += u64::from(status >= 500);
        slot.client_errors += u64::from((400..500).contains(&status));
        slot.micros += u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    }

    fn last_minute(&self, now: u64) -> Traffic {
        let seconds = self.seconds.lock().unwrap_or_else(|p| p.into_inner());
        let mut t = Traffic::default();
        let mut micros = 0u64;
        for s in seconds.iter().filter(|s| s.at + 60 > now && s.at <= now) {
            t.requests += s.requests;
            t.server_errors += s.server_errors;
            t.client_errors += s.client_errors;
            micros = micros.saturating_add(s.micros);
        }
        t.average_ms = (t.requests > 0).then(|| micros as f64 / 1000.0 / t.requests as f64);
        t
    }
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A store that can say how large it is; read at each scrape, so the figures are the store's
/// own at that moment.
pub trait StoreGauges: Send + Sync + std::fmt::Debug {
    /// Its size now.
    fn store_size(&self) -> StoreSize;
}

/// How large the store is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreSize {
    /// The database file, in bytes.
    pub database_bytes: u64,
    /// Its write-ahead log, in bytes.
    pub wal_bytes: u64,
    /// Task output stored, by tenant.
    pub tenants: Vec<TenantOutput>,
}

/// One tenant's stored task output.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantOutput {
    /// The tenant.
    pub tenant: String,
    /// Log entries.
    pub events: u64,
    /// Their bytes as stored.
    pub bytes: u64,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FileLabels {
    file: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantLabels {
    tenant: String,
}

/// Figures owned elsewhere, read when rendering.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauges {
    /// Tasks pending or running.
    pub active_runs: u64,
    /// Component instances alive.
    pub active_instances: u64,
    /// The instance cap.
    pub max_instances: u64,
}

/// The route label of a request no plugin serves.
pub const UNROUTED: &str = "unrouted";

impl Metrics {
    /// Count one answered request; `elapsed` is the time to its response head.
    pub fn request(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        self.recent.record(unix_secs(), status, elapsed);
        self.families
            .requests
            .get_or_create(&RequestLabels {
                route: route.to_string(),
                method: method.to_string(),
                status,
            })
            .inc();
        self.families
            .latency
            .get_or_create(&RouteLabels {
                route: route.to_string(),
                method: method.to_string(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// What this node answered in the last minute.
    pub fn last_minute(&self) -> Traffic {
        self.recent.last_minute(unix_secs())
    }

    /// Count one task that ended in `state`.
    pub fn run_ended(&self, backend: &str, state: &str) {
        self.families
            .runs
            .get_or_create(&RunLabels {
                backend: backend.to_string(),
                outcome: state.to_string(),
            })
            .inc();
    }

    /// Count a response whose body ended as an error after its head was sent.
    pub fn stream_failed(&self, route: &str) {
        self.families
            .failed_streams
            .get_or_create(&StreamLabels {
                route: route.to_string(),
            })
            .inc();
    }

    /// Count one failed plugin call.
    pub fn plugin_error(&self, plugin: &str, code: &str) {
        self.families
            .plugin_errors
            .get_or_create(&PluginErrorLabels {
                plugin: plugin.to_string(),
                code: code.to_string(),
            })
            .inc();
    }

    /// A response body started (+1) or ended (-1).
    pub fn streaming(&self, delta: i64) {
        self.families.streaming.inc_by(delta);
    }

    /// One more (`1`) or one fewer (`-1`) open WebSocket connection.
    pub fn websocket(&self, delta: i64) {
        self.families.websockets.inc_by(delta);
    }

    /// Open WebSocket connections.
    pub fn open_websockets(&self) -> u64 {
        self.families.websockets.get().max(0).unsigned_abs()
    }

    /// Read `store`'s size at each scrape. Only the first store given is watched.
    pub fn watch_store(&self, store: std::sync::Arc<dyn StoreGauges>) {
        let _ = self.store.set(store);
    }

    /// Everything, in the Prometheus text format.
    pub fn render(&self, gauges: Gauges) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Exposition {
            families: self.families.clone(),
            gauges,
            store: self.store.get().map(|s| s.store_size()),
        }));
        let mut out = String::with_capacity(4096);
        // Writing to a String fails only if an encoder does, and these do not.
        let _ = prometheus_text::encode(&mut out, &registry);
        out
    }
}

/// One scrape: the families and the gauges read for it.
///
/// A collector rather than `Registry::register`, for two things registration cannot do: the
/// gauges are handed to `render`, and a registered family with no samples yet is left out
/// entirely, while every family is announced (`# HELP`, `# TYPE`) from the start here. It also
/// writes the help texts as they are (registration appends a `.`).
#[derive(Debug)]
struct Exposition {
    families: Families,
    gauges: Gauges,
    /// The store's size, when a store is watched.
    store: Option<StoreSize>,
}

impl Collector for Exposition {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let f = &self.families;
        // Counter names are given without `_total`: the encoder adds it to samples, `# HELP`
        // and `# TYPE` alike.
        family(
            &mut encoder,
            "gantry_http_requests",
            "HTTP requests answered, by route pattern, method and status.",
            &f.requests,
        )?;
        family(
            &mut encoder,
            "gantry_http_request_duration_seconds",
            "Time from a request's arrival to its response head, by route pattern and method.",
            &f.latency,
        )?;
        family(
            &mut encoder,
            "gantry_runs",
            "Backend runs (tasks) ended, by backend and outcome.",
            &f.runs,
        )?;
        family(
            &mut encoder,
            "gantry_plugin_errors",
            "Plugin calls that failed, by plugin and error code.",
            &f.plugin_errors,
        )?;
        family(
            &mut encoder,
            "gantry_http_streams_failed",
            "Responses cut short after their head was sent (counted 2xx in gantry_http_requests), by route pattern.",
            &f.failed_streams,
        )?;
        let streaming = f.streaming.get().max(0).unsigned_abs();
        let websockets = f.websockets.get().max(0).unsigned_abs();
        for (name, help, value) in [
            (
                "gantry_active_runs",
                "Backend runs pending or running.",
                self.gauges.active_runs,
            ),
            (
                "gantry_active_streams",
                "Responses whose body is still being sent (streams among them).",
                streaming,
            ),
            (
                "gantry_component_instances",
                "Component instances alive.",
                self.gauges.active_instances,
            ),
            (
                "gantry_component_instances_max",
                "The cap on component instances alive at once.",
                self.gauges.max_instances,
            ),
            (
                "gantry_websocket_connections",
                "Open WebSocket connections.",
                websockets,
            ),
        ] {
            family(&mut encoder, name, help, &ConstGauge::new(value))?;
        }
        if let Some(store) = &self.store {
            store_families(&mut encoder, store)?;
        }
        Ok(())
    }
}

/// The store's size: its files, and the output each tenant stores.
fn store_families(
    encoder: &mut DescriptorEncoder,
    store: &StoreSize,
) -> Result<(), std::fmt::Error> {
    let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let files = Family::<FileLabels, Gauge>::default();
    for (file, bytes) in [("database", store.database_bytes), ("wal", store.wal_bytes)] {
        files.get_or_create(&FileLabels { file }).set(gauge(bytes));
    }
    family(
        encoder,
        "gantry_store_bytes",
        "Size of the store's files, in bytes: the database and its write-ahead log.",
        &files,
    )?;
    let events = Family::<TenantLabels, Gauge>::default();
    let bytes = Family::<TenantLabels, Gauge>::default();
    for t in &store.tenants {
        let labels = TenantLabels {
            tenant: t.tenant.clone(),
        };
        events.get_or_create(&labels).set(gauge(t.events));
        bytes.get_or_create(&labels).set(gauge(t.bytes));
    }
    family(
        encoder,
        "gantry_stored_output_events",
        "Task log entries stored, by tenant.",
        &events,
    )?;
    family(
        encoder,
        "gantry_stored_output_bytes",
        "Bytes of task log entries stored, by tenant.",
        &bytes,
    )
}

/// Announce one family and write its samples.
fn family(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: &impl EncodeMetric,
) -> Result<(), std::fmt::Error> {
    let samples = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
    metric.encode(samples)
}

/// The machine's CPU time counters (`/proc/stat`'s first line): busy and total jiffies.
fn cpu_times(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    // user nice system idle iowait irq softirq steal (guest time is inside user and nice).
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields.get(3)? + fields.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}

/// Percent of memory in use, from `/proc/meminfo`: what is not available to new programs.
fn memory_used(meminfo: &str) -> Option<f64> {
    let field = |name: &str| {
        meminfo.lines().find_map(|l| {
            l.strip_prefix(name)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse::<f64>()
                .ok()
        })
    };
    let total = field("MemTotal:")?;
    let available = field("MemAvailable:")?;
    (total > 0.0).then(|| ((total - available) / total * 100.0).clamp(0.0, 100.0))
}

/// The CPU reading a later one is measured against, and the use last measured.
#[derive(Debug, Clone, Copy)]
struct CpuReading {
    at: std::time::Instant,
    busy: u64,
    total: u64,
    percent: Option<f64>,
}

/// The previous CPU reading, so a reading covers the time since the last one.
static LAST_CPU: std::sync::Mutex<Option<CpuReading>> = std::sync::Mutex::new(None);

/// The shortest span a CPU reading covers; asked again sooner, the last one is given.
const CPU_SPAN: Duration = Duration::from_millis(100);

fn read_cpu() -> Option<(u64, u64)> {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .as_deref()
        .and_then(cpu_times)
}

/// Take the first CPU reading (at start), so that the first [`machine_load`] covers the time
/// since then.
pub fn prime_machine_load() {
    if let Some((busy, total)) = read_cpu() {
        let mut last = LAST_CPU.lock().unwrap_or_else(|p| p.into_inner());
        last.get_or_insert(CpuReading {
            at: std::time::Instant::now(),
            busy,
            total,
            percent: None,
        });
    }
}

/// The machine's CPU use since the last reading at least [`CPU_SPAN`] ago (never primed: since
/// boot) and its memory use, in percent; none where `/proc` does not tell. Never waits.
pub fn machine_load() -> (Option<f64>, Option<f64>) {
    let Some((busy, total)) = read_cpu() else {
        return (None, memory());
    };
    let now = std::time::Instant::now();
    let mut last = LAST_CPU.lock().unwrap_or_else(|p| p.into_inner());
    let cpu = match *last {
        Some(previous)
            if now.duration_since(previous.at) < CPU_SPAN && previous.percent.is_some() =>
        {
            previous.percent
        }
        previous => {
            let (busy0, total0) = previous.map_or((0, 0), |p| (p.busy, p.total));
            let dt = total.saturating_sub(total0);
            let percent = (dt > 0)
                .then(|| (busy.saturating_sub(busy0) as f64 / dt as f64 * 100.0).clamp(0.0, 100.0));
            *last = Some(CpuReading {
                at: now,
                busy,
                total,
                percent,
            });
            percent
        }
    };
    drop(last);
    (cpu, memory())
}

fn memory() -> Option<f64> {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .as_deref()
        .and_then(memory_used)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histograms_and_gauges() {
        let m = Metrics::default();
        m.request("/api/v1/...", "GET", 200, Duration::from_micros(700));
        m.request("/api/v1/...", "GET", 200, Duration::from_millis(20));
        m.request("/api/v1/...", "POST", 400, Duration::from_millis(2));
        m.run_ended("claude", "done");
        m.plugin_error("x\"y", "plugin_trap");
        m.streaming(1);
        let text = m.render(Gauges {
            active_runs: 2,
            active_instances: 3,
            max_instances: 64,
        });
        assert!(text.contains(
            "gantry_http_requests_total{route=\"/api/v1/...\",method=\"GET\",status=\"200\"} 2"
        ));
        // Cumulative buckets: 0.7 ms falls in le=0.001, 20 ms in le=0.025.
        assert!(text.contains("gantry_http_request_duration_seconds_bucket{route=\"/api/v1/...\",method=\"GET\",le=\"0.0005\"} 0"));
        assert!(text.contains("gantry_http_request_duration_seconds_bucket{route=\"/api/v1/...\",method=\"GET\",le=\"0.001\"} 1"));
        assert!(text.contains("gantry_http_request_duration_seconds_bucket{route=\"/api/v1/...\",method=\"GET\",le=\"0.025\"} 2"));
        assert!(text.contains("gantry_http_request_duration_seconds_bucket{route=\"/api/v1/...\",method=\"GET\",le=\"+Inf\"} 2"));
        assert!(text.contains(
            "gantry_http_request_duration_seconds_count{route=\"/api/v1/...\",method=\"GET\"} 2"
        ));
        assert!(text.contains("gantry_runs_total{backend=\"claude\",outcome=\"done\"} 1"));
        assert!(
            text.contains("gantry_plugin_errors_total{plugin=\"x\\\"y\",code=\"plugin_trap\"} 1")
        );
        assert!(text.contains("gantry_active_runs 2\n"));
        assert!(text.contains("gantry_active_streams 1\n"));
        assert!(text.contains("gantry_component_instances 3\n"));
        // Every family is announced once.
        assert_eq!(text.matches("# TYPE gantry_runs_total counter").count(), 1);
        // A scrape in the 0.0.4 text format, not OpenMetrics: no `# EOF`.
        assert!(!text.contains("# EOF"));
    }

    /// The whole exposition with one sample per family (so in a fixed order), byte for byte as
    /// the hand-written renderer wrote it.
    #[test]
    fn renders_as_the_hand_written_exposition_did() {
        let m = Metrics::default();
        m.request("/v1/{id}", "GET", 200, Duration::from_millis(20));
        m.run_ended("codex", "failed");
        m.plugin_error("clk-api", "plugin_timeout");
        m.stream_failed("/v1/...");
        m.streaming(2);
        m.streaming(-1);
        let text = m.render(Gauges {
            active_runs: 1,
            active_instances: 4,
            max_instances: 64,
        });
        let labels = "route=\"/v1/{id}\",method=\"GET\"";
        let mut buckets = String::new();
        for bound in BUCKETS {
            let n = u8::from(*bound >= 0.02);
            buckets.push_str(&format!(
                "gantry_http_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {n}\n"
            ));
        }
        let expected = format!(
            "# HELP gantry_http_requests_total HTTP requests answered, by route pattern, method and status.
# TYPE gantry_http_requests_total counter
gantry_http_requests_total{{{labels},status=\"200\"}} 1
# HELP gantry_http_request_duration_seconds Time from a request's arrival to its response head, by route pattern and method.
# TYPE gantry_http_request_duration_seconds histogram
{buckets}gantry_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} 1
gantry_http_request_duration_seconds_sum{{{labels}}} 0.02
gantry_http_request_duration_seconds_count{{{labels}}} 1
# HELP gantry_runs_total Backend runs (tasks) ended, by backend and outcome.
# TYPE gantry_runs_total counter
gantry_runs_total{{backend=\"codex\",outcome=\"failed\"}} 1
# HELP gantry_plugin_errors_total Plugin calls that failed, by plugin and error code.
# TYPE gantry_plugin_errors_total counter
gantry_plugin_errors_total{{plugin=\"clk-api\",code=\"plugin_timeout\"}} 1
# HELP gantry_http_streams_failed_total Responses cut short after their head was sent (counted 2xx in gantry_http_requests), by route pattern.
# TYPE gantry_http_streams_failed_total counter
gantry_http_streams_failed_total{{route=\"/v1/...\"}} 1
# HELP gantry_active_runs Backend runs pending or running.
# TYPE gantry_active_runs gauge
gantry_active_runs 1
# HELP gantry_active_streams Responses whose body is still being sent (streams among them).
# TYPE gantry_active_streams gauge
gantry_active_streams 1
# HELP gantry_component_instances Component instances alive.
# TYPE gantry_component_instances gauge
gantry_component_instances 4
# HELP gantry_component_instances_max The cap on component instances alive at once.
# TYPE gantry_component_instances_max gauge
gantry_component_instances_max 64
# HELP gantry_websocket_connections Open WebSocket connections.
# TYPE gantry_websocket_connections gauge
gantry_websocket_connections 0
"
        );
        assert_eq!(text, expected);
    }

    #[derive(Debug)]
    struct FixedStore;

    impl StoreGauges for FixedStore {
        fn store_size(&self) -> StoreSize {
            StoreSize {
                database_bytes: 4096,
                wal_bytes: 0,
                tenants: vec![TenantOutput {
                    tenant: "alice".into(),
                    events: 3,
                    bytes: 120,
                }],
            }
        }
    }

    #[test]
    fn a_watched_store_shows_its_size() {
        let m = Metrics::default();
        assert!(!m.render(Gauges::default()).contains("gantry_store_bytes"));
        m.watch_store(std::sync::Arc::new(FixedStore));
        let text = m.render(Gauges::default());
        assert!(
            text.contains("gantry_store_bytes{file=\"database\"} 4096\n"),
            "{text}"
        );
        assert!(
            text.contains("gantry_store_bytes{file=\"wal\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("gantry_stored_output_events{tenant=\"alice\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("gantry_stored_output_bytes{tenant=\"alice\"} 120\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE gantry_store_bytes gauge\n"), "{text}");
    }

    #[test]
    fn families_without_samples_are_announced_and_streams_never_go_negative() {
        let m = Metrics::default();
        m.streaming(-1);
        let text = m.render(Gauges::default());
        for (name, kind) in [
            ("gantry_http_requests_total", "counter"),
            ("gantry_http_request_duration_seconds", "histogram"),
            ("gantry_runs_total", "counter"),
            ("gantry_plugin_errors_total", "counter"),
        ] {
            assert!(text.contains(&format!("# HELP {name} ")), "{text}");
            assert!(text.contains(&format!("# TYPE {name} {kind}\n")), "{text}");
            assert!(!text.contains(&format!("\n{name}")), "{text}");
        }
        assert!(text.contains("\ngantry_active_streams 0\n"), "{text}");
    }

    #[test]
    fn the_last_minute_slides_by_the_second() {
        let recent = RecentTraffic::default();
        let ms = Duration::from_millis;
        recent.record(1000, 200, ms(2));
        recent.record(1000, 503, ms(4));
        recent.record(1030, 404, ms(6));
        let t = recent.last_minute(1030);
        assert_eq!((t.requests, t.server_errors, t.client_errors), (3, 1, 1));
        assert_eq!(t.average_ms, Some(4.0));
        // A minute on, the first second has left the window; its slot is reused.
        let t = recent.last_minute(1060);
        assert_eq!((t.requests, t.client_errors), (1, 1));
        recent.record(1060, 200, ms(1));
        assert_eq!(recent.last_minute(1060).requests, 2);
        assert_eq!(recent.last_minute(2000), Traffic::default());
    }

    #[test]
    fn machine_load_is_read_from_proc_formats() {
        let stat = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3 4\n";
        assert_eq!(cpu_times(stat), Some((150, 1000)));
        assert_eq!(cpu_times("intr 1 2"), None);
        let meminfo = "MemTotal:       1000 kB\nMemFree:         100 kB\nMemAvailable:    250 kB\n";
        assert_eq!(memory_used(meminfo), Some(75.0));
        assert_eq!(memory_used("MemTotal: 0 kB\nMemAvailable: 0 kB\n"), None);
    }
}
