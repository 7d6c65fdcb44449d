//! The Web UI API's real-time half through the real `gantry` binary on loopback:
//!
//! - memory per idle WebSocket connection (authenticated, following a project), against a
//!   baseline measured in the same run: memory per idle HTTP keep-alive connection;
//! - fan-out: one project's task changes reaching 100 subscribed connections, latency from the
//!   change's request to each subscriber's message, p50 and p99, beside the change request's
//!   own latency;
//! - webhooks: deliveries/s of `task.created` to a receiver on loopback, beside the rate at
//!   which the tasks themselves were created (the baseline: what produces the events).
//!
//! Run with `cargo bench --bench realtime`. Loops are bounded in count; nothing is asserted.

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

const IDLE: usize = 1000;
const SUBSCRIBERS: usize = 100;
const CHANGES: usize = 200;
const DELIVERIES: usize = 300;
const PASSWORD: &str = "a bench password";

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;
type Client =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(addr: SocketAddr) -> Sender {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

async fn request(
    sender: &mut Sender,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Value,
) -> Value {
    sender.ready().await.unwrap();
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "bench")
        .header("content-type", "application/json");
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    let response = sender
        .send_request(req.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    assert!(
        status.is_success(),
        "{method} {path}: {status} {}",
        String::from_utf8_lossy(&bytes)
    );
    serde_json::from_slice(&bytes).unwrap_or(Value::Null)
}

/// The server's resident memory, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Let the server settle, then read its memory.
async fn settled_rss(pid: u32) -> u64 {
    tokio::time::sleep(Duration::from_millis(500)).await;
    rss_kib(pid)
}

async fn next_text(ws: &mut Client) -> Value {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).unwrap(),
            Some(Ok(_)) => continue,
            other => panic!("the connection ended: {other:?}"),
        }
    }
}

async fn subscriber(addr: SocketAddr, session: &str, token: &str, project: &str) -> Client {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws/{session}"))
        .await
        .unwrap();
    ws.send(Message::text(
        json!({"type": "authenticate", "token": token}).to_string(),
    ))
    .await
    .unwrap();
    assert_eq!(next_text(&mut ws).await["type"], "authenticated");
    ws.send(Message::text(
        json!({"type": "subscribe", "channel": "project_updates", "project_id": project})
            .to_string(),
    ))
    .await
    .unwrap();
    assert_eq!(next_text(&mut ws).await["type"], "subscribed");
    ws
}

fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99))
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&plugins).unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for file in ["system.toml", "webui-api.toml"] {
        std::fs::copy(root.join("plugins").join(file), plugins.join(file)).unwrap();
    }
    let config = dir.path().join("gantry.toml");
    std::fs::write(
        &config,
        "[http]\nuser_rate_limit_per_minute = 0\npublic_rate_limit_per_minute = 0\nmax_connections_per_address = 4096\n[websocket]\nmax_connections = 2048\nmax_connections_per_user = 2048\n[webhooks]\nallowed_private_hosts = [\"127.0.0.1\"]\n",
    )
    .unwrap();
    let mut add = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(["users", "add", "--tenant", "bench", "--username", "bench"])
        .arg("--data-dir")
        .arg(&data)
        .env_remove("GANTRY_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("gantry users add");
    writeln!(add.stdin.take().unwrap(), "{PASSWORD}").unwrap();
    assert!(add.wait().unwrap().success());
    let mut child = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(["serve", "--addr", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .arg("--plugins")
        .arg(&plugins)
        .arg("--config")
        .arg(&config)
        .env_remove("GANTRY_API_KEYS")
        .env_remove("GANTRY_CONFIG")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting gantry");
    let pid = child.id();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let addr: SocketAddr = first
        .trim()
        .strip_prefix("gantry listening on http://")
        .expect("gantry's listening line")
        .parse()
        .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut sender = connect(addr).await;
        let login = request(
            &mut sender,
            "POST",
            "/api/auth/login",
            None,
            json!({"username": "bench", "password": PASSWORD}),
        )
        .await;
        let token = login["data"]["access_token"].as_str().unwrap().to_string();
        let project = request(&mut sender, "POST", "/api/projects/", Some(&token), json!({"name": "bench"})).await;
        let project = project["data"]["id"].as_str().unwrap().to_string();
        let session = request(
            &mut sender,
            "POST",
            "/api/sessions/",
            Some(&token),
            json!({"project_id": project}),
        )
        .await;
        let session = session["data"]["session_id"].as_str().unwrap().to_string();
        let task = request(
            &mut sender,
            "POST",
            "/api/tasks/",
            Some(&token),
            json!({"title": "watched", "project_id": project}),
        )
        .await;
        let task = task["data"]["id"].as_str().unwrap().to_string();

        // Baseline: idle HTTP keep-alive connections, each having made one request.
        let before = settled_rss(pid).await;
        let mut http = Vec::with_capacity(IDLE);
        for _ in 0..IDLE {
            let mut s = connect(addr).await;
            request(&mut s, "GET", "/health", None, Value::Null).await;
            http.push(s);
        }
        let with_http = settled_rss(pid).await;
        drop(http);
        let per_http = (with_http.saturating_sub(before)) as f64 / IDLE as f64;

        // WebSocket connections, authenticated and following the project.
        let before = settled_rss(pid).await;
        let mut sockets = Vec::with_capacity(IDLE);
        for _ in 0..IDLE {
            sockets.push(subscriber(addr, &session, &token, &project).await);
        }
        let with_ws = settled_rss(pid).await;
        let per_ws = (with_ws.saturating_sub(before)) as f64 / IDLE as f64;
        println!(
            "idle connections ({IDLE})                 HTTP keep-alive (baseline) {per_http:>7.1} KiB each   WebSocket {per_ws:>7.1} KiB each   ratio {:.1}x",
            per_ws / per_http.max(0.1)
        );

        // Fan-out: keep SUBSCRIBERS of them, each read in its own task.
        sockets.truncate(SUBSCRIBERS);
        let (seen, mut heard) = tokio::sync::mpsc::unbounded_channel::<(u64, Instant)>();
        for mut ws in sockets {
            let seen = seen.clone();
            tokio::spawn(async move {
                while let Some(Ok(m)) = ws.next().await {
                    if let Message::Text(t) = m {
                        let v: Value = serde_json::from_str(&t).unwrap_or(Value::Null);
                        if v["type"] == "task_update"
                            && let Some(p) = v["data"]["progress_percentage"].as_u64()
                        {
                            let _ = seen.send((p, Instant::now()));
                        }
                    }
                }
            });
        }
        let mut fanout = Vec::with_capacity(CHANGES * SUBSCRIBERS);
        let mut own = Vec::with_capacity(CHANGES);
        for i in 0..CHANGES {
            // The priority changes each round; every subscriber hears of it.
            let priority = (i % 5) as u64 + 1;
            let start = Instant::now();
            request(
                &mut sender,
                "PUT",
                &format!("/api/tasks/{task}"),
                Some(&token),
                json!({"priority": priority, "title": format!("watched {i}")}),
            )
            .await;
            own.push(start.elapsed());
            for _ in 0..SUBSCRIBERS {
                let (_, at) = heard.recv().await.unwrap();
                fanout.push(at - start);
            }
        }
        let (p50, p99) = percentiles(own);
        let (f50, f99) = percentiles(fanout);
        println!(
            "one project's change to {SUBSCRIBERS} subscribers  PUT /api/tasks/{{id}} (baseline) p50 {:>9} p99 {:>9}   to every subscriber p50 {:>9} p99 {:>9}",
            ms(p50),
            ms(p99),
            ms(f50),
            ms(f99)
        );

        // Webhooks: a receiver on loopback that answers 200 and counts.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let (arrived, mut deliveries) = tokio::sync::mpsc::unbounded_channel::<Instant>();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let arrived = arrived.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let arrived = arrived.clone();
                            async move {
                                let _ = req.into_body().collect().await;
                                let _ = arrived.send(Instant::now());
                                Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                    Full::new(Bytes::new()),
                                ))
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        request(
            &mut sender,
            "POST",
            "/api/webhooks",
            Some(&token),
            json!({"url": url, "events": ["task.created"]}),
        )
        .await;
        let start = Instant::now();
        for i in 0..DELIVERIES {
            request(
                &mut sender,
                "POST",
                "/api/tasks/",
                Some(&token),
                json!({"title": format!("delivered {i}"), "project_id": project}),
            )
            .await;
        }
        let created = start.elapsed();
        let mut last = start;
        for _ in 0..DELIVERIES {
            last = deliveries.recv().await.unwrap();
        }
        let delivered = last - start;
        println!(
            "webhook deliveries ({DELIVERIES})              tasks created (baseline) {:>7.0}/s   deliveries {:>7.0}/s   ratio {:.2}x",
            DELIVERIES as f64 / created.as_secs_f64(),
            DELIVERIES as f64 / delivered.as_secs_f64(),
            created.as_secs_f64() / delivered.as_secs_f64()
        );
    });
    let _ = child.kill();
    let _ = child.wait();
}
