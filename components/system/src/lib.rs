//! The `system` handler: the node's own routes, whatever API surfaces it serves.
//!
//! | method and path | what |
//! |---|---|
//! | `GET /health` | `ok`, `degraded` (a backend is unavailable) or `unhealthy` (the store is not answering, 503), with version, uptime, backends and session store figures; a caller without a key (tenant `anonymous`) gets the status alone |
//! | `GET /metrics` | Prometheus text: requests, latencies, runs, streams, instances, plugin errors |
//! | `GET /openapi.json` | the OpenAPI 3.1 document of every route this node serves |
//! | `GET /docs` | the same, as a page for people |

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
            ("GET" | "HEAD", "/docs") => http::respond(
                out,
                200,
                "text/html; charset=utf-8",
                docs_page(&document()).as_bytes(),
            ),
            (_, "/health" | "/metrics" | "/openapi.json" | "/docs") => {
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

/// A plain page listing every operation: method, path, summary, parameters and answers.
fn docs_page(doc: &Value) -> String {
    let mut html = String::from(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>gantry API</title>\
         <style>body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}\
         code{background:#f3f3f3;padding:0 .2em}h2{margin-top:2rem;border-bottom:1px solid #ddd}\
         .m{font-weight:bold;display:inline-block;min-width:4.5em}</style></head><body>",
    );
    let info = &doc["info"];
    html.push_str(&format!(
        "<h1>{} {}</h1><p>{}</p><p>The machine-readable document is <a href=\"/openapi.json\">/openapi.json</a>.</p>",
        escape(info["title"].as_str().unwrap_or("gantry")),
        escape(info["version"].as_str().unwrap_or("")),
        escape(info["description"].as_str().unwrap_or("")),
    ));
    let empty = Map::new();
    for (path, item) in doc["paths"].as_object().unwrap_or(&empty) {
        html.push_str(&format!("<h2><code>{}</code></h2>", escape(path)));
        if let Some(d) = item["description"].as_str() {
            html.push_str(&format!("<p>{}</p>", escape(d)));
        }
        for method in ["get", "post", "put", "patch", "delete"] {
            let Some(op) = item.get(method) else { continue };
            html.push_str(&format!(
                "<p><span class=\"m\">{}</span> {}</p>",
                method.to_uppercase(),
                escape(op["summary"].as_str().unwrap_or(""))
            ));
            if let Some(d) = op["description"].as_str() {
                html.push_str(&format!("<p>{}</p>", escape(d)));
            }
            let params: Vec<String> = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| {
                    Some(format!(
                        "<li><code>{}</code> ({}{}) {}</li>",
                        escape(p["name"].as_str()?),
                        escape(p["in"].as_str().unwrap_or("")),
                        if p["required"] == true {
                            ", required"
                        } else {
                            ""
                        },
                        escape(p["description"].as_str().unwrap_or(""))
                    ))
                })
                .collect();
            if !params.is_empty() {
                html.push_str(&format!("<p>Parameters:</p><ul>{}</ul>", params.concat()));
            }
            if let Some(responses) = op["responses"].as_object() {
                let answers: Vec<String> = responses
                    .iter()
                    .map(|(code, r)| {
                        format!(
                            "<li><code>{}</code> {}</li>",
                            escape(code),
                            escape(r["description"].as_str().unwrap_or(""))
                        )
                    })
                    .collect();
                html.push_str(&format!("<p>Answers:</p><ul>{}</ul>", answers.concat()));
            }
        }
    }
    html.push_str("</body></html>");
    html
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
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

    #[test]
    fn the_docs_page_escapes_text() {
        let doc = json!({
            "info": { "title": "t<", "version": "1", "description": "d&" },
            "paths": { "/a": { "get": { "summary": "<s>", "responses": { "200": { "description": "ok" } } } } }
        });
        let page = docs_page(&doc);
        assert!(page.contains("t&lt; 1"));
        assert!(page.contains("&lt;s&gt;"));
        assert!(!page.contains("<s>"));
    }
}
