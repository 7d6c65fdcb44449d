//! The node's counters, rendered in the Prometheus text exposition format (version 0.0.4).
//!
//! Recording is a short mutex section per request: label sets are few (routes are manifest
//! patterns, not raw paths), so one map per family stays small and uncontended enough next to
//! a component call.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// Upper bounds of the request latency histogram, in seconds.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

#[derive(Debug, Default, Clone)]
struct Histogram {
    /// Per bucket (not cumulative); the last slot is `+Inf`.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKETS.len() + 1];
        }
        let i = BUCKETS
            .iter()
            .position(|&b| seconds <= b)
            .unwrap_or(BUCKETS.len());
        self.counts[i] += 1;
        self.sum += seconds;
        self.count += 1;
    }
}

/// gantry's metrics; one per node.
#[derive(Debug, Default)]
pub struct Metrics {
    /// By (route pattern, method, status).
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    /// By (route pattern, method).
    latency: Mutex<BTreeMap<(String, String), Histogram>>,
    /// By (backend, final state).
    runs: Mutex<BTreeMap<(String, String), u64>>,
    /// By (plugin, error code).
    plugin_errors: Mutex<BTreeMap<(String, String), u64>>,
    /// Responses whose body is still being sent.
    streaming: AtomicI64,
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Metrics {
    /// Count one answered request; `elapsed` is the time to its response head.
    pub fn request(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        *lock(&self.requests)
            .entry((route.to_string(), method.to_string(), status))
            .or_default() += 1;
        lock(&self.latency)
            .entry((route.to_string(), method.to_string()))
            .or_default()
            .observe(elapsed.as_secs_f64());
    }

    /// Count one task that ended in `state`.
    pub fn run_ended(&self, backend: &str, state: &str) {
        *lock(&self.runs)
            .entry((backend.to_string(), state.to_string()))
            .or_default() += 1;
    }

    /// Count one failed plugin call.
    pub fn plugin_error(&self, plugin: &str, code: &str) {
        *lock(&self.plugin_errors)
            .entry((plugin.to_string(), code.to_string()))
            .or_default() += 1;
    }

    /// A response body started (+1) or ended (-1).
    pub fn streaming(&self, delta: i64) {
        self.streaming.fetch_add(delta, Ordering::Relaxed);
    }

    /// Everything, in the Prometheus text format.
    pub fn render(&self, gauges: Gauges) -> String {
        let mut out = String::with_capacity(4096);
        family(
            &mut out,
            "gantry_http_requests_total",
            "counter",
            "HTTP requests answered, by route pattern, method and status.",
        );
        for ((route, method, status), n) in lock(&self.requests).iter() {
            let _ = writeln!(
                out,
                "gantry_http_requests_total{{route=\"{}\",method=\"{}\",status=\"{status}\"}} {n}",
                escape(route),
                escape(method)
            );
        }
        family(
            &mut out,
            "gantry_http_request_duration_seconds",
            "histogram",
            "Time from a request's arrival to its response head, by route pattern and method.",
        );
        for ((route, method), h) in lock(&self.latency).iter() {
            let labels = format!("route=\"{}\",method=\"{}\"", escape(route), escape(method));
            let mut cumulative = 0;
            for (i, bound) in BUCKETS.iter().enumerate() {
                cumulative += h.counts[i];
                let _ = writeln!(
                    out,
                    "gantry_http_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {cumulative}"
                );
            }
            cumulative += h.counts[BUCKETS.len()];
            let _ = writeln!(
                out,
                "gantry_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {cumulative}"
            );
            let _ = writeln!(
                out,
                "gantry_http_request_duration_seconds_sum{{{labels}}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "gantry_http_request_duration_seconds_count{{{labels}}} {}",
                h.count
            );
        }
        family(
            &mut out,
            "gantry_runs_total",
            "counter",
            "Backend runs (tasks) ended, by backend and outcome.",
        );
        for ((backend, outcome), n) in lock(&self.runs).iter() {
            let _ = writeln!(
                out,
                "gantry_runs_total{{backend=\"{}\",outcome=\"{}\"}} {n}",
                escape(backend),
                escape(outcome)
            );
        }
        family(
            &mut out,
            "gantry_plugin_errors_total",
            "counter",
            "Plugin calls that failed, by plugin and error code.",
        );
        for ((plugin, code), n) in lock(&self.plugin_errors).iter() {
            let _ = writeln!(
                out,
                "gantry_plugin_errors_total{{plugin=\"{}\",code=\"{}\"}} {n}",
                escape(plugin),
                escape(code)
            );
        }
        let streaming = self.streaming.load(Ordering::Relaxed).max(0);
        for (name, help, value) in [
            (
                "gantry_active_runs",
                "Backend runs pending or running.",
                gauges.active_runs,
            ),
            (
                "gantry_active_streams",
                "Responses whose body is still being sent (streams among them).",
                streaming as u64,
            ),
            (
                "gantry_component_instances",
                "Component instances alive.",
                gauges.active_instances,
            ),
            (
                "gantry_component_instances_max",
                "The cap on component instances alive at once.",
                gauges.max_instances,
            ),
        ] {
            family(&mut out, name, "gauge", help);
            let _ = writeln!(out, "{name} {value}");
        }
        out
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value with `\`, `"` and newlines escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
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
    }
}
