//! Hardened serving, seen from outside: connection timeouts and caps, odd input answered with
//! a 4xx in the route's own envelope, and node-wide figures for operators only.

mod common;

use common::{Client, Gantry, Setup, assert_error, test_handler_manifest};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ALICE: &str = "alice-key-0123456789abcdef";
const BOB: &str = "bob-key-0123456789abcdef";

/// The connection timeouts of [`node`], in ms.
const TIMEOUT_MS: u64 = 1000;
/// How long a test waits for the server to close a connection it should close.
const CLOSE_WITHIN: Duration = Duration::from_secs(10);

fn plugin(file: &str) -> String {
    std::fs::read_to_string(format!("{}/../plugins/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn clk_fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/clk/clk")
}

/// The bundled system, core and CLK handlers (CLK's backend the fixture program), the test
/// handler at `/t/...`, keys of Alice (an operator) and Bob, and `config`.
fn node(config: &str) -> (Setup, Gantry) {
    let backend = plugin("clk.toml").replace(
        "binary = \"clk\"",
        &format!("binary = {:?}", clk_fixture().display().to_string()),
    );
    let setup = Setup::new(&[
        ("system", plugin("system.toml")),
        ("core-api", plugin("core-api.toml")),
        ("clk-api", plugin("clk-api.toml")),
        ("clk", backend),
        (
            "test-handler",
            test_handler_manifest("routes = [\"/t/...\"]\nimports = [\"gantry:plugin\"]"),
        ),
    ]);
    let keys = format!("alice:{ALICE},bob:{BOB}");
    let g = setup.start_configured(
        &format!(
            "operators = [\"alice\"]
{config}"
        ),
        &keys,
    );
    (setup, g)
}

/// A node whose connection timeouts are all [`TIMEOUT_MS`].
fn short_timeouts() -> (Setup, Gantry) {
    node(&format!(
        "[http]\nheader_read_timeout_ms = {TIMEOUT_MS}\nbody_read_timeout_ms = {TIMEOUT_MS}\n\
         keep_alive_timeout_ms = {TIMEOUT_MS}\n"
    ))
}

/// Read from `stream` until the server closes it, for at most `limit`: what came, and when
/// the close came; `None` while it is still open.
async fn until_closed(stream: &mut TcpStream, limit: Duration) -> Option<(Vec<u8>, Instant)> {
    let mut answer = Vec::new();
    let read = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 8192];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok().map(|()| (answer, Instant::now()))
}

/// Open a connection and send `bytes`, leaving it open.
async fn send_raw(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    stream
}

/// The status, the head and the JSON body of one raw answer (`Null` when not JSON).
fn parse(answer: &[u8]) -> (u16, String, Value) {
    let text = String::from_utf8_lossy(answer);
    assert!(text.starts_with("HTTP/1.1 "), "not an answer: {text:?}");
    let status = text[9..12].parse().unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (
        status,
        head.to_ascii_lowercase(),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

/// CLK's envelope: `{"ok": false, "error": {"code", "message"}}`.
fn assert_clk_error(value: &Value, code: &str) {
    assert_eq!(value["ok"], false, "{value}");
    assert_eq!(value["error"]["code"], code, "{value}");
    assert!(value["error"]["message"].is_string(), "{value}");
}

/// The clinvk and system envelope: `{"error": code, "message"}`.
fn assert_flat_error(value: &Value, code: &str) {
    assert_eq!(value["error"], code, "{value}");
    assert!(value["message"].is_string(), "{value}");
}

#[tokio::test]
async fn slow_heads_slow_bodies_and_idle_connections_are_closed() {
    let (_setup, g) = short_timeouts();
    let timeout = Duration::from_millis(TIMEOUT_MS);
    let head = async {
        let start = Instant::now();
        let mut s = send_raw(g.addr, b"GET /health HTTP/1.1\r\nHost: gantry\r\n").await;
        let (answer, at) = until_closed(&mut s, CLOSE_WITHIN)
            .await
            .expect("a head that never ends keeps its connection");
        assert!(at - start >= timeout, "closed early: {:?}", at - start);
        // Nothing to answer: the request never was one.
        assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    };
    let chunked = async {
        let start = Instant::now();
        let mut s = send_raw(
            g.addr,
            format!(
                "POST /t/echo HTTP/1.1\r\nHost: gantry\r\nX-Api-Key: {ALICE}\r\n\
                 Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
            )
            .as_bytes(),
        )
        .await;
        let (answer, at) = until_closed(&mut s, CLOSE_WITHIN)
            .await
            .expect("an unfinished chunked body keeps its connection");
        assert!(at - start >= timeout, "closed early: {:?}", at - start);
        let (status, head, body) = parse(&answer);
        assert_eq!(status, 408, "{head}");
        assert_error(&body, "body_timeout", None);
        assert!(head.contains("connection: close"), "{head}");
    };
    let declared = async {
        // A handler reading a body that stops short: its read fails, and the connection ends.
        let mut s = send_raw(
            g.addr,
            format!(
                "POST /t/echo HTTP/1.1\r\nHost: gantry\r\nX-Api-Key: {ALICE}\r\n\
                 Content-Length: 100\r\n\r\nshort"
            )
            .as_bytes(),
        )
        .await;
        until_closed(&mut s, CLOSE_WITHIN)
            .await
            .expect("a body that stops short keeps its connection");
    };
    let idle = async {
        let mut s = send_raw(g.addr, b"GET /health HTTP/1.1\r\nHost: gantry\r\n\r\n").await;
        let (answer, _) = until_closed(&mut s, CLOSE_WITHIN)
            .await
            .expect("an idle kept-alive connection stays open");
        assert!(answer.starts_with(b"HTTP/1.1 200"));
    };
    let busy = async {
        // A request in flight for longer than every timeout is not cut off.
        let (status, body) = g
            .call(
                "GET",
                &format!("/t/sleep?ms={}", 2 * TIMEOUT_MS),
                &[("x-api-key", ALICE)],
                "",
            )
            .await;
        assert_eq!(status, 200, "{body:?}");
    };
    tokio::join!(head, chunked, declared, idle, busy);
}

#[tokio::test]
async fn connections_are_capped_per_address() {
    let (_setup, g) = node("[http]\nmax_connections_per_address = 2\n");
    let health = b"GET /health HTTP/1.1\r\nHost: gantry\r\nConnection: close\r\n\r\n";
    let mut first = send_raw(g.addr, b"").await;
    let _second = send_raw(g.addr, b"").await;
    // Over the cap: one answer each, up to as many again; beyond that, closed unanswered.
    let mut third = send_raw(g.addr, b"").await;
    let _fourth = send_raw(g.addr, b"").await;
    let mut fifth = send_raw(g.addr, b"").await;
    let (answer, _) = until_closed(&mut fifth, CLOSE_WITHIN)
        .await
        .expect("far over the cap, a connection is closed at once");
    assert!(answer.is_empty());
    third.write_all(health).await.unwrap();
    let (answer, _) = until_closed(&mut third, CLOSE_WITHIN).await.unwrap();
    let (status, head, body) = parse(&answer);
    assert_eq!(status, 503, "{head}");
    assert!(head.contains("retry-after: 1"), "{head}");
    assert_flat_error(&body, "too_many_connections");
    // A connection served under the cap is served as always.
    first.write_all(health).await.unwrap();
    let (answer, _) = until_closed(&mut first, CLOSE_WITHIN).await.unwrap();
    assert_eq!(parse(&answer).0, 200);
    // Once it is gone, a new one is served (the server notices the close on its own time).
    let deadline = Instant::now() + CLOSE_WITHIN;
    loop {
        let mut s = send_raw(g.addr, health).await;
        let (answer, _) = until_closed(&mut s, CLOSE_WITHIN).await.unwrap();
        if parse(&answer).0 == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no room after a connection closed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn over_long_names_in_file_and_artifact_paths_are_4xx() {
    let (_setup, g) = short_timeouts();
    let alice = Client { g: &g, key: ALICE };
    let (status, ws) = alice
        .call("POST", "/v1/workspaces", json!({ "name": "w" }))
        .await;
    assert_eq!(status, 201, "{ws}");
    let id = ws["id"].as_str().unwrap();
    let long = "a".repeat(300);
    let deep = vec!["b".repeat(250); 20].join("/");
    for name in [&long, &deep] {
        let (status, body) = alice
            .call(
                "GET",
                &format!("/v1/workspaces/{id}/files/{name}"),
                Value::Null,
            )
            .await;
        assert_eq!(status, 400, "{body}");
        assert_error(&body, "bad_path", None);
    }

    // CLK: a task's artifact.
    let headers = [("x-api-key", ALICE), ("content-type", "application/json")];
    let (status, body) = g
        .call(
            "POST",
            "/api/research",
            &headers,
            &json!({ "command": "idea", "args": ["x"], "workspace_id": id }).to_string(),
        )
        .await;
    assert_eq!(status, 202, "{body:?}");
    let task = serde_json::from_slice::<Value>(&body).unwrap()["task_id"]
        .as_str()
        .unwrap()
        .to_string();
    for name in [&long, &deep] {
        let (status, body) = g
            .call(
                "GET",
                &format!("/api/research/{task}/artifacts/{name}"),
                &headers,
                "",
            )
            .await;
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert!(status.is_client_error(), "{status}: {body}");
        assert_clk_error(&body, "forbidden_path");
    }
}

#[tokio::test]
async fn a_megabyte_header_is_431_with_a_body_in_the_routes_envelope() {
    let (_setup, g) = short_timeouts();
    let big = "a".repeat(1 << 20);
    let headers = [("x-api-key", ALICE), ("x-big", big.as_str())];
    let json = |bytes: &[u8]| serde_json::from_slice::<Value>(bytes).unwrap();
    let (status, body) = g.call("GET", "/v1/workspaces", &headers, "").await;
    assert_eq!(status, 431);
    assert_error(&json(&body), "headers_too_large", None);
    let (status, body) = g.call("GET", "/api/workspaces", &headers, "").await;
    assert_eq!(status, 431);
    assert_clk_error(&json(&body), "headers_too_large");
    let (status, body) = g.call("GET", "/health", &headers, "").await;
    assert_eq!(status, 431);
    assert_flat_error(&json(&body), "headers_too_large");
    // The node goes on serving.
    let (status, _) = g.call("GET", "/health", &[], "").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn host_errors_on_clks_routes_use_clks_envelope() {
    let (_setup, g) = short_timeouts();
    let json = |bytes: &[u8]| serde_json::from_slice::<Value>(bytes).unwrap();
    // No key.
    let (status, body) = g.call("GET", "/api/workspaces", &[], "").await;
    assert_eq!(status, 401);
    assert_clk_error(&json(&body), "unauthorized");
    // A body over the limit (10 MiB), refused on its declared length.
    let mut s = send_raw(
        g.addr,
        format!(
            "POST /api/workspaces HTTP/1.1\r\nHost: gantry\r\nX-Api-Key: {ALICE}\r\n\
             Content-Length: 20000000\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    let (answer, _) = until_closed(&mut s, CLOSE_WITHIN).await.unwrap();
    let (status, head, body) = parse(&answer);
    assert_eq!(status, 413, "{head}");
    assert_clk_error(&body, "payload_too_large");
}

#[tokio::test]
async fn metrics_are_for_operators_and_anonymous_health_is_the_status_alone() {
    let (_setup, g) = short_timeouts();
    let alice = Client { g: &g, key: ALICE };
    let bob = Client { g: &g, key: BOB };
    let (status, body) = bob.call("GET", "/metrics", Value::Null).await;
    assert_eq!(status, 403, "{body}");
    assert_flat_error(&body, "operator_only");
    let (status, body) = alice.call("GET", "/metrics", Value::Null).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.as_str()
            .unwrap()
            .contains("gantry_http_requests_total"),
        "{body}"
    );
    let (status, _, body) = g.get("/metrics").await;
    assert_eq!(status, 401, "{body:?}");

    let (status, health) = g.get_json("/health").await;
    assert_eq!(status, 200);
    let fields: Vec<&String> = health.as_object().unwrap().keys().collect();
    assert_eq!(fields, ["status"], "{health}");
    // A caller the node knows sees the node.
    let (status, health) = bob.call("GET", "/health", Value::Null).await;
    assert_eq!(status, 200);
    assert!(health["version"].is_string(), "{health}");
    assert!(health["session_store"].is_object(), "{health}");
}
