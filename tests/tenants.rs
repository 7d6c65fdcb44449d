//! Tenants and API keys, seen from outside: the real binary on loopback.

mod common;

use common::{Gantry, Setup, assert_error, test_handler_manifest};
use std::process::Command;

const ALICE: &str = "alice-key-0123456789abcdef";
const BOB: &str = "bob-key-0123456789abcdef";

fn setup() -> Setup {
    Setup::new(&[
        (
            "system",
            "kind = \"handler\"\ncomponent = \"bundled:system\"\nroutes = [{ path = \"/health\", public = true }]\nimports = [\"gantry:plugin/host-info\", \"gantry:plugin/backends\", \"gantry:plugin/metrics\", \"gantry:plugin/identity\"]\n".into(),
        ),
        (
            "test-handler",
            test_handler_manifest("routes = [\"/t/...\"]\nimports = [\"gantry:plugin\"]"),
        ),
    ])
}

fn with_keys(setup: &Setup) -> Gantry {
    let mut cmd = setup.command();
    cmd.env("GANTRY_API_KEYS", format!("alice:{ALICE}, bob:{BOB}"));
    Gantry::spawn(cmd)
}

async fn call(
    g: &Gantry,
    path: &str,
    header: Option<(&str, String)>,
) -> (u16, hyper::HeaderMap, serde_json::Value) {
    use http_body_util::{BodyExt, Full};
    let stream = tokio::net::TcpStream::connect(g.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut request = hyper::Request::get(path).header("host", "gantry");
    if let Some((name, value)) = header {
        request = request.header(name, value);
    }
    let response = sender
        .send_request(request.body(Full::new(bytes::Bytes::new())).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, serde_json::from_slice(&body).unwrap())
}

#[tokio::test]
async fn each_key_acts_as_its_tenant_and_plugins_never_see_it() {
    let setup = setup();
    let g = with_keys(&setup);
    let (status, _, body) = call(
        &g,
        "/t/whoami",
        Some(("authorization", format!("Bearer {ALICE}"))),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["tenant"], "alice");
    assert_eq!(body["authorization"], serde_json::Value::Null, "{body}");
    let (status, _, body) = call(&g, "/t/whoami", Some(("x-api-key", BOB.to_string()))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["tenant"], "bob");
    assert_eq!(body["x_api_key"], serde_json::Value::Null, "{body}");
    // The keys never reach the log.
    assert!(!g.stderr().contains(ALICE) && !g.stderr().contains(BOB));
}

#[tokio::test]
async fn missing_or_unknown_keys_get_401_json() {
    let setup = setup();
    let g = with_keys(&setup);
    for header in [
        None,
        Some((
            "authorization",
            "Bearer not-a-configured-key-000".to_string(),
        )),
        Some(("x-api-key", "not-a-configured-key-000".to_string())),
        Some(("authorization", format!("Basic {ALICE}"))),
    ] {
        let (status, headers, body) = call(&g, "/t/whoami", header.clone()).await;
        assert_eq!(status, 401, "{header:?}: {body}");
        assert_error(&body, "unauthorized", None);
        assert_eq!(headers.get("www-authenticate").unwrap(), "Bearer");
    }
    // Without a key, a caller cannot tell routes that exist from routes that do not.
    let (status, _, _) = call(&g, "/nowhere", None).await;
    assert_eq!(status, 401);
    let (status, _, body) = call(&g, "/nowhere", Some(("x-api-key", ALICE.to_string()))).await;
    assert_eq!(status, 404);
    assert_error(&body, "no_route", None);
}

#[tokio::test]
async fn public_routes_serve_without_a_key_but_refuse_a_wrong_one() {
    let setup = setup();
    let g = with_keys(&setup);
    let (status, _, body) = call(&g, "/health", None).await;
    assert_eq!(status, 200, "{body}");
    let (status, _, _) = call(
        &g,
        "/health",
        Some(("x-api-key", "wrong-key-0123456789abc".into())),
    )
    .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn without_keys_everyone_is_the_local_tenant() {
    let setup = setup();
    let g = setup.start();
    let (status, _, body) = call(&g, "/t/whoami", None).await;
    assert_eq!(status, 200);
    assert_eq!(body["tenant"], "local");
}

#[test]
fn a_non_loopback_address_needs_keys() {
    let setup = setup();
    let out = Command::new(common::gantry_bin())
        .args(["serve", "--addr", "0.0.0.0:0", "--plugins"])
        .arg(setup.plugins())
        .arg("--data-dir")
        .arg(setup.data())
        .env_remove("GANTRY_API_KEYS")
        .env_remove("GANTRY_CONFIG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("refusing to serve 0.0.0.0:0 without API keys"),
        "{stderr}"
    );
}

#[test]
fn bad_key_configuration_stops_startup() {
    let setup = setup();
    let out = setup
        .command()
        .env("GANTRY_API_KEYS", "alice:tiny7")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("GANTRY_API_KEYS, entry 1"), "{stderr}");
    assert!(
        !stderr.contains("tiny7"),
        "the key itself must not be echoed: {stderr}"
    );
}

/// Send `head` (request line and headers, without the blank line) over a fresh connection;
/// the status and the body as JSON.
async fn raw(g: &Gantry, head: &str) -> (u16, String, serde_json::Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(g.addr).await.unwrap();
    let request = format!("{head}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text[9..12].parse().unwrap();
    let (headers, body) = text.split_once("\r\n\r\n").unwrap();
    let json = serde_json::from_str(body).unwrap_or(serde_json::Value::Null);
    (status, headers.to_string(), json)
}

#[tokio::test]
async fn ambiguous_credentials_are_refused() {
    let setup = setup();
    let g = with_keys(&setup);
    let two_tenants = format!(
        "GET /t/whoami HTTP/1.1\r\nHost: gantry\r\nAuthorization: Bearer {ALICE}\r\nX-Api-Key: {BOB}"
    );
    let two_bearers = format!(
        "GET /t/whoami HTTP/1.1\r\nHost: gantry\r\nAuthorization: Bearer {ALICE}\r\nAuthorization: Bearer {BOB}"
    );
    let two_api_keys = format!(
        "GET /t/whoami HTTP/1.1\r\nHost: gantry\r\nX-Api-Key: {ALICE}\r\nX-Api-Key: {ALICE}"
    );
    for head in [two_tenants, two_bearers, two_api_keys] {
        let (status, _, body) = raw(&g, &head).await;
        assert_eq!(status, 400, "{head}");
        assert_error(&body, "ambiguous_credentials", None);
    }
    // The same key in both places is one key.
    let same = format!(
        "GET /t/whoami HTTP/1.1\r\nHost: gantry\r\nAuthorization: Bearer {ALICE}\r\nX-Api-Key: {ALICE}"
    );
    let (status, _, _) = raw(&g, &same).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_request_without_host_is_a_400_not_a_500() {
    let setup = setup();
    let g = with_keys(&setup);
    let (status, _, body) = raw(&g, "GET /health HTTP/1.1").await;
    assert_eq!(status, 400);
    assert_error(&body, "missing_host", None);
    let (status, _, _) = raw(&g, &format!("GET /t/whoami HTTP/1.1\r\nX-Api-Key: {ALICE}")).await;
    assert_eq!(status, 400);
    // With one, the same request is served.
    let (status, _, _) = raw(&g, "GET /health HTTP/1.1\r\nHost: gantry").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn wrong_keys_are_throttled_per_address_with_backoff() {
    let setup = setup();
    let g = with_keys(&setup);
    let wrong =
        |i: usize| format!("GET /t/whoami HTTP/1.1\r\nHost: gantry\r\nX-Api-Key: guess-{i:020}");
    let mut statuses = Vec::new();
    for i in 0..14 {
        statuses.push(raw(&g, &wrong(i)).await.0);
    }
    assert!(statuses[..10].iter().all(|&s| s == 401), "{statuses:?}");
    assert!(statuses[11..].iter().all(|&s| s == 429), "{statuses:?}");
    // While the address waits, even the right key is not tried.
    let right = format!("GET /t/whoami HTTP/1.1\r\nHost: gantry\r\nX-Api-Key: {ALICE}");
    let (status, headers, body) = raw(&g, &right).await;
    assert_eq!(status, 429);
    assert_error(&body, "auth_throttled", None);
    assert!(
        headers.to_ascii_lowercase().contains("retry-after:"),
        "{headers}"
    );
    // A request without a key to a public route is not held back.
    let (status, _, _) = raw(&g, "GET /health HTTP/1.1\r\nHost: gantry").await;
    assert_eq!(status, 200);
}
