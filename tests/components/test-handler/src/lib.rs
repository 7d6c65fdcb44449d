//! A handler that misbehaves on request, for the host's isolation tests.
//!
//! Routes (all under whatever prefix the test manifest mounts):
//! - `/echo` — the method, path and body back as JSON;
//! - `/trap` — panics;
//! - `/loop` — spins forever (the CPU deadline must end it);
//! - `/oom` — allocates until the memory cap stops it;
//! - `/sleep?ms=N` — logs that it begins, waits N ms without using CPU, then answers;
//! - `/stream?lines=N&interval_ms=M` — streams N lines, one every M ms;
//! - `/silent?ms=N` — lets its response go unanswered, then waits N ms and returns;
//! - `/refuse` — answers with an error code instead of a response;
//! - `/config?key=K` — a setting from the manifest (needs the config grant);
//! - `/log?message=M` — logs M at info level;
//! - `/whoami` — the caller's tenant, and any credentials headers the handler can see.

use gantry_guest::bindings::wasi::clocks::monotonic_clock;
use gantry_guest::bindings::wasi::http::types::ErrorCode;
use gantry_guest::handler::{Guest, IncomingRequest, ResponseOutparam};
use gantry_guest::{config, http, identity, log};
use serde_json::json;

struct TestHandler;

impl Guest for TestHandler {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let request = http::Request::new(request);
        let path = request.path().to_string();
        let route = path.rsplit('/').next().unwrap_or("");
        let number = |name: &str, default: u64| {
            request
                .query(name)
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        match route {
            "echo" => {
                let method = request.method().to_string();
                match request.body(1 << 20) {
                    Ok(body) => http::json(
                        out,
                        200,
                        &json!({
                            "method": method,
                            "path": path,
                            "body": String::from_utf8_lossy(&body),
                        }),
                    ),
                    Err(_) => http::error(out, 413, "body_too_large", "body over 1 MiB"),
                }
            }
            "trap" => panic!("test-handler asked to trap"),
            "loop" => {
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "oom" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "silent" => {
                drop(out);
                let ms = number("ms", 0);
                if ms > 0 {
                    monotonic_clock::subscribe_duration(ms * 1_000_000).block();
                }
            }
            "refuse" => ResponseOutparam::set(
                out,
                Err(ErrorCode::InternalError(Some("refused on request".into()))),
            ),
            "sleep" => {
                let ms = number("ms", 100);
                log::info(&format!("sleep of {ms} ms begins"));
                monotonic_clock::subscribe_duration(ms * 1_000_000).block();
                http::json(out, 200, &json!({ "slept_ms": ms }));
            }
            "stream" => {
                let lines = number("lines", 10);
                let interval = number("interval_ms", 0);
                let mut body = http::start(out, 200, &[("content-type", "text/plain")]);
                for i in 0..lines {
                    if body.write_all(format!("line {i}\n").as_bytes()).is_err() {
                        // The client went away: stop working for nobody.
                        return;
                    }
                    if interval > 0 {
                        monotonic_clock::subscribe_duration(interval * 1_000_000).block();
                    }
                }
                let _ = body.finish();
            }
            "config" => {
                let key = request.query("key").unwrap_or_default();
                http::json(
                    out,
                    200,
                    &json!({ "key": key, "value": config::get(&key), "entries": config::entries() }),
                );
            }
            "whoami" => http::json(
                out,
                200,
                &json!({
                    "tenant": identity::tenant(),
                    "authorization": request.header("authorization"),
                    "x_api_key": request.header("x-api-key"),
                }),
            ),
            "log" => {
                let message = request.query("message").unwrap_or_default();
                log::info(&message);
                http::json(out, 200, &json!({ "logged": message }));
            }
            _ => http::error(out, 404, "not_found", &format!("no test route {path}")),
        }
    }
}

gantry_guest::bindings::export_handler!(TestHandler);
