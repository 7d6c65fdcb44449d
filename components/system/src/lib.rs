//! The `system` handler: the node's own routes, whatever API surfaces it serves.
//!
//! | method and path | what |
//! |---|---|
//! | `GET /health` | `ok`, `degraded` (a backend is unavailable) or `unhealthy` (the store is not answering, 503), with version, uptime, backends, session store figures and the store's kind, this node's id and the live nodes; a caller without a key (tenant `anonymous`) gets the status alone |
//! | `GET /metrics` | Prometheus text: requests, latencies, runs, streams, instances, plugin errors |
//! | `GET /openapi.json` | the OpenAPI 3.1 document of every route this node serves |
//!
//! The page for people, `/docs`, is the `ui` plugin's: an explorer drawn from this document.

use gantry_guest::bindings::gantry::plugin::{backends, metrics};
use gantry_guest::handler::{Guest, IncomingRequest, ResponseOutparam};
use gantry_guest::{host_info, http, identity};
use serde_json::{Map, Value, json};

/// The document of the bundled plugins' routes; routes of other plugins are added when served.
const OPENAPI: &str = include_str!("../openapi.json");

struct System;

impl Guest for System {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let request = http::Request::new(request);
        let path = request.path().to_string();
        match (request.method(), path.as_str()) {
            ("GET" | "HEAD", "/health") => health(out),
            ("GET" | "HEAD", "/metrics") => http::respond(
                out,
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                metrics::render().as_bytes(),
            ),
            ("GET" | "HEAD", "/openapi.json") => http::json(out, 200, &document()),
            (_, "/health" | "/metrics" | "/openapi.json") => {
                error(out, 405, "method_not_allowed", &format!("use GET {path}"))
            }
            _ => error(out, 404, "not_found", &format!("no route for {path}")),
        }
    }
}

/// The flat envelope of the node's routes: `{"error": code, "message"}`.
fn error(out: ResponseOutparam, status: u16, code: &str, message: &str) {
    http::json(out, status, &json!({ "error": code, "message": message }));
}

/// The tenant of a public route's caller without a key.
const ANONYMOUS: &str = "anonymous";

fn health(out: ResponseOutparam) {
    let info = host_info::info();
    let backends: Vec<_> = backends::list(false)
        .into_iter()
        .map(|b| json!({ "name": b.name, "available": b.available }))
        .collect();
    let all_available = backends.iter().all(|b| b["available"] == true);
    let (status, code) = if !info.store.available {
        ("unhealthy", 503)
    } else if !all_available {
        ("degraded", 200)
    } else {
        ("ok", 200)
    };
    // A load balancer's probe needs the status; the node's figures (sessions of every tenant,
    // plugins, backends) are for callers the node knows.
    if identity::tenant() == ANONYMOUS {
        http::json(out, code, &json!({ "status": status }));
        return;
    }
    let cluster = host_info::cluster();
    let plugins: Vec<_> = info
        .plugins
        .iter()
        .map(|p| json!({ "name": p.name, "kind": p.kind.as_str(), "routes": p.routes }))
        .collect();
    http::json(
        out,
        code,
        &json!({
            "status": status,
            "version": info.version,
            "uptime": uptime(info.uptime_ms),
            "uptime_millis": info.uptime_ms,
            "uptime_seconds": info.uptime_ms as f64 / 1000.0,
            "backends": backends,
            "session_store": {
                "available": info.store.available,
                "session_count": info.store.sessions,
            },
            "active_instances": info.active_instances,
            "sandbox": info.sandbox,
            "store": {
                "kind": cluster.store_kind,
                "node_id": cluster.node_id,
                "live_nodes": cluster.live_nodes,
            },
            "plugins": plugins,
        }),
    );
}

/// `2m31s`, `1h0m5s`, `0s`: whole seconds, largest unit first.
fn uptime(ms: u64) -> String {
    let s = ms / 1000;
    let (h, m, s) = (s / 3600, s / 60 % 60, s % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

/// The bundled document, plus an entry for each route of a plugin it does not describe (a
/// plugin added from the plugin directory), so that every route served is listed.
fn document() -> Value {
    let mut doc: Value = serde_json::from_str(OPENAPI).expect("the bundled document is JSON");
    let described: Vec<String> = doc["paths"]
        .as_object()
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default();
    let mut extra = Map::new();
    for plugin in host_info::info().plugins {
        for route in &plugin.routes {
            let prefix = route.strip_suffix("/...");
            let covered = described.iter().any(|p| match prefix {
                Some(prefix) => p.starts_with(&format!("{prefix}/")) || p == prefix,
                None => p == route,
            });
            if covered {
                continue;
            }
            extra.insert(
                route.clone(),
                json!({
                    "description": format!(
                        "Served by plugin `{}`, which publishes no description{}.",
                        plugin.name,
                        if prefix.is_some() { "; `...` stands for any path below" } else { "" }
                    ),
                }),
            );
        }
    }
    if let Some(paths) = doc["paths"].as_object_mut() {
        paths.extend(extra);
    }
    doc
}

gantry_guest::bindings::export_handler!(System);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptime_reads_like_a_duration() {
        assert_eq!(uptime(0), "0s");
        assert_eq!(uptime(151_000), "2m31s");
        assert_eq!(uptime(3_605_999), "1h0m5s");
    }

    #[test]
    fn the_bundled_document_is_openapi_3_1() {
        let doc: Value = serde_json::from_str(OPENAPI).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        assert!(doc["paths"]["/api/v1/prompt"]["post"].is_object());
    }
}
