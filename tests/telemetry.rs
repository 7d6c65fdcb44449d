//! Span export over OTLP: the real gantry binary, and a collector of the test's own on
//! 127.0.0.1 that records what reaches it.

mod common;

use bytes::Bytes;
use common::{Gantry, Setup};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What reached the collector: method, path, content type, body.
#[derive(Debug, Clone)]
struct Export {
    method: String,
    path: String,
    content_type: Option<String>,
    body: Bytes,
}

/// A stand-in OTLP/HTTP collector: answers every request 200 and keeps it.
struct Collector {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Export>>>,
}

impl Collector {
    async fn start(listener: tokio::net::TcpListener) -> Collector {
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let sink = sink.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let sink = sink.clone();
                        async move {
                            let method = req.method().to_string();
                            let path = req.uri().path().to_string();
                            let content_type = req
                                .headers()
                                .get("content-type")
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_string);
                            let body = req.into_body().collect().await?.to_bytes();
                            sink.lock().unwrap().push(Export {
                                method,
                                path,
                                content_type,
                                body,
                            });
                            Ok::<_, hyper::Error>(
                                Response::builder()
                                    .status(200)
                                    .header("content-type", "application/x-protobuf")
                                    .body(Full::new(Bytes::new()))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Collector { addr, seen }
    }

    async fn on_free_port() -> Collector {
        Collector::start(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()).await
    }

    fn exports(&self) -> Vec<Export> {
        self.seen.lock().unwrap().clone()
    }

    /// Poll until something arrived, up to `limit`.
    async fn wait_for_export(&self, limit: Duration) -> Vec<Export> {
        let start = Instant::now();
        loop {
            let exports = self.exports();
            if !exports.is_empty() || start.elapsed() > limit {
                return exports;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The bundled system plugin, serving `/health`.
fn system() -> Setup {
    Setup::new(&[(
        "system",
        "kind = \"handler\"\ncomponent = \"bundled:system\"\n\
         routes = [{ path = \"/health\", public = true }]\n\
         imports = [\"gantry:plugin/host-info\", \"gantry:plugin/backends\", \"gantry:plugin/metrics\", \"gantry:plugin/identity\"]\n"
            .to_string(),
    )])
}

/// A query string and a header that must never reach a span.
const SECRET_QUERY: &str = "token=query-secret-4711";
const SECRET_HEADER: &str = "header-secret-0815";

/// Serve `setup` with `configure` applied, make one request whose path, query string and
/// headers must not be exported, then stop gantry with SIGTERM (which flushes the exporter).
async fn serve_one_request(setup: &Setup, configure: impl FnOnce(&mut Command)) -> Gantry {
    let mut cmd = setup.command();
    cmd.env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_HEADERS")
        .env_remove("OTEL_SERVICE_NAME")
        .env_remove("OTEL_RESOURCE_ATTRIBUTES");
    configure(&mut cmd);
    let mut g = Gantry::spawn(cmd);
    let (status, body) = g
        .call(
            "GET",
            &format!("/health?{SECRET_QUERY}"),
            &[("x-secret", SECRET_HEADER)],
            "",
        )
        .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    g.terminate();
    let exit = g.wait_exit(Duration::from_secs(20));
    assert!(
        exit.is_some_and(|s| s.success()),
        "gantry did not exit cleanly on SIGTERM ({exit:?}):\n{}",
        g.stderr()
    );
    g
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// One export of the request's span: POST /v1/traces, protobuf, naming the route and the
/// service and nothing the caller sent besides.
fn assert_exported(exports: &[Export], service: &str, stderr: &str) {
    assert!(
        !exports.is_empty(),
        "no export arrived; gantry's log:\n{stderr}"
    );
    for export in exports {
        assert_eq!(export.method, "POST", "{export:?}");
        assert_eq!(export.path, "/v1/traces", "{export:?}");
        assert_eq!(
            export.content_type.as_deref(),
            Some("application/x-protobuf"),
            "{export:?}"
        );
        assert!(!export.body.is_empty(), "{export:?}");
        for secret in [SECRET_QUERY, SECRET_HEADER] {
            assert!(!contains(&export.body, secret), "{secret} was exported");
        }
    }
    let all: Vec<u8> = exports.iter().flat_map(|e| e.body.to_vec()).collect();
    assert!(contains(&all, "GET /health"), "no span named for the route");
    assert!(contains(&all, "http.route"), "no http.route attribute");
    assert!(contains(&all, service), "no service.name {service}");
    // The flush at exit was answered, not given up on.
    assert!(!stderr.contains("flushing spans"), "{stderr}");
}

// Multi-threaded: the collector must answer while the test thread waits for gantry to exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_the_configured_collector() {
    let collector = Collector::on_free_port().await;
    let setup = system();
    let config = setup.dir.path().join("gantry.toml");
    std::fs::write(
        &config,
        format!(
            "[telemetry]\notlp_endpoint = \"http://{}\"\nservice_name = \"gantry-under-test\"\n",
            collector.addr
        ),
    )
    .unwrap();
    let g = serve_one_request(&setup, |cmd| {
        cmd.arg("--config").arg(&config);
    })
    .await;
    let exports = collector.wait_for_export(Duration::from_secs(10)).await;
    assert_exported(&exports, "gantry-under-test", &g.stderr());
    assert!(g.stderr().contains("exporting spans over OTLP"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standard_variable_turns_export_on() {
    let collector = Collector::on_free_port().await;
    let setup = system();
    let g = serve_one_request(&setup, |cmd| {
        // A trailing slash, as operators write it.
        cmd.env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://{}/", collector.addr),
        );
    })
    .await;
    let exports = collector.wait_for_export(Duration::from_secs(10)).await;
    assert_exported(&exports, "gantry", &g.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_sent_without_an_endpoint() {
    // On the default OTLP/HTTP port if it is free, where an exporter built with no endpoint
    // would send.
    let listener = match tokio::net::TcpListener::bind("127.0.0.1:4318").await {
        Ok(listener) => listener,
        Err(_) => tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    };
    let collector = Collector::start(listener).await;
    let setup = system();
    let g = serve_one_request(&setup, |_| {}).await;
    // gantry has exited: anything it was going to export was sent, and answered, before that.
    assert!(collector.exports().is_empty(), "{:?}", collector.exports());
    assert!(!g.stderr().contains("exporting spans over OTLP"));
}
