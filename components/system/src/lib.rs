//! The `system` handler: `GET /health` reports status, version, uptime and the loaded plugins.

use gantry_guest::handler::{Guest, IncomingRequest, ResponseOutparam};
use gantry_guest::{host_info, http};
use serde_json::json;

struct System;

impl Guest for System {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let request = http::Request::new(request);
        match (request.method(), request.path()) {
            ("GET" | "HEAD", "/health") => health(out),
            (_, "/health") => http::error(out, 405, "method_not_allowed", "use GET /health"),
            (_, path) => http::error(out, 404, "not_found", &format!("no route for {path}")),
        }
    }
}

fn health(out: ResponseOutparam) {
    let info = host_info::info();
    let plugins: Vec<_> = info
        .plugins
        .iter()
        .map(|p| json!({ "name": p.name, "kind": p.kind, "routes": p.routes }))
        .collect();
    http::json(
        out,
        200,
        &json!({
            "status": "ok",
            "version": info.version,
            "uptime_seconds": info.uptime_ms as f64 / 1000.0,
            "active_instances": info.active_instances,
            "sandbox": info.sandbox,
            "plugins": plugins,
        }),
    );
}

gantry_guest::bindings::export_handler!(System);
