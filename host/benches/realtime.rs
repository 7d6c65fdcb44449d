//! The Web UI API's real-time half through the real `gantry` binary on loopback:
//!
//! - memory per idle WebSocket connection (authenticated, following a project), against a
//!   baseline measured in the same run: memory per idle HTTP keep-alive connection. Each is
//!   the server's resident memory gained from the 5,000th to the 10,000th connection, divided
//!   by 5,000 (the 10,000 idle connections on one node): the allocator reuses what an earlier phase freed before it takes more from the
//!   system, so the first connections of a kind can read as free. The baseline has a server
//!   of its own for the same reason;
//! - fan-out: one project's task changes reaching 100 subscribed connections, latency from the
//!   change's request to each subscriber's message, p50 and p99, beside the change request's
//!   own latency;
//! - webhooks: deliveries/s of `task.created` to a receiver on loopback, beside the rate at
//!   which the tasks themselves were created (the baseline: what produces the events): while
//!   they are created, and of a backlog built while the receiver held its answers.
//!
//! Run with `cargo bench --bench realtime`. Loops are bounded in count; nothing is asserted.

mod common;

use bytes::Bytes;
use common::table::{Ratio, Table};
use common::{Sender, Server, connect, ms, percentiles, runtime};
use futures::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

const IDLE: usize = 5000;
const SUBSCRIBERS: usize = 100;
const CHANGES: usize = 200;
const DELIVERIES: usize = 300;
const PASSWORD: &str = "a bench password";

type Client =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One request, which must succeed; its JSON answer.
async fn request(
    sender: &mut Sender,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Value,
) -> Value {
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    common::request(sender, method, path, token, body).await.1
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

/// The server's resident memory gained per connection from the `IDLE`th connection to the
/// `2 * IDLE`th, opened one after another by `open`; the connections, all still open.
async fn marginal_kib<C, F: Future<Output = C>>(
    pid: u32,
    mut open: impl FnMut() -> F,
) -> (f64, Vec<C>) {
    let mut open_now = Vec::with_capacity(2 * IDLE);
    for _ in 0..IDLE {
        open_now.push(open().await);
    }
    let first = settled_rss(pid).await;
    for _ in 0..IDLE {
        open_now.push(open().await);
    }
    let second = settled_rss(pid).await;
    (second.saturating_sub(first) as f64 / IDLE as f64, open_now)
}

/// The server's configuration: no request budgets, room for the idle connections, and a held
/// delivery that does not time out while the backlog is made.
const CONFIG: &str = "[http]\nuser_rate_limit_per_minute = 0\npublic_rate_limit_per_minute = 0\nmax_connections_per_address = 20480\n[websocket]\nmax_connections = 10240\nmax_connections_per_user = 10240\nmax_connections_per_tenant = 10240\n[webhooks]\nallowed_private_hosts = [\"127.0.0.1\"]\ntimeout_ms = 120000\n";

fn main() {
    let rt = runtime();
    // Baseline: idle HTTP keep-alive connections, each having made one request, on a server
    // of their own.
    let per_http = {
        let server = Server::start(&["system", "webui-api"], &[], CONFIG, None);
        let (addr, pid) = (server.addr, server.pid);
        rt.block_on(async {
            marginal_kib(pid, || async move {
                let mut s = connect(addr).await;
                request(&mut s, "GET", "/health", None, Value::Null).await;
                s
            })
            .await
            .0
        })
    };
    let server = Server::start(
        &["system", "webui-api"],
        &[],
        CONFIG,
        Some(("bench", PASSWORD)),
    );
    let (addr, pid) = (server.addr, server.pid);
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

        // WebSocket connections, authenticated and following the project.
        let (per_ws, mut sockets) =
            marginal_kib(pid, || subscriber(addr, &session, &token, &project)).await;
        println!(
            "idle connections ({IDLE} to {})         HTTP keep-alive (baseline) {per_http:>7.1} KiB each   WebSocket {per_ws:>7.1} KiB each   ratio {:.1}x",
            2 * IDLE,
            per_ws / per_http.max(0.1)
        );
        let mut table = Table::new("realtime");
        table.push(Ratio::at_most(
            format!("idle WebSocket connections ({IDLE} to {}), memory each, against 32 KiB", 2 * IDLE),
            format!("{per_ws:.1} KiB"),
            format!("32 KiB (an idle keep-alive connection: {per_http:.1} KiB)"),
            per_ws / 32.0,
            1.0,
        ));

        // Fan-out: keep SUBSCRIBERS of them, each read in its own task.
        sockets.truncate(SUBSCRIBERS);
        // Let the server finish closing the others before anything is timed.
        settled_rss(pid).await;
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
        table.push(Ratio::measured(
            format!("a project's change reaching {SUBSCRIBERS} subscribers, p50, vs the change request"),
            ms(f50),
            ms(p50),
            f50.as_secs_f64() / p50.as_secs_f64(),
        ));

        // Webhooks: a receiver on loopback that answers 200 and counts, once `open`: first
        // while the tasks are made (deliveries keep pace with the events), then a backlog built
        // while it holds its answers (the outbox's own rate).
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let (arrived, mut deliveries) = tokio::sync::mpsc::unbounded_channel::<Instant>();
        let (open, opened) = tokio::sync::watch::channel(true);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let arrived = arrived.clone();
                let opened = opened.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let arrived = arrived.clone();
                            let mut opened = opened.clone();
                            async move {
                                let _ = req.into_body().collect().await;
                                let _ = opened.wait_for(|open| *open).await;
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
        let create = |round: &'static str| {
            let token = token.clone();
            let project = project.clone();
            async move {
                let mut sender = connect(addr).await;
                let start = Instant::now();
                for i in 0..DELIVERIES {
                    request(
                        &mut sender,
                        "POST",
                        "/api/tasks/",
                        Some(&token),
                        json!({"title": format!("{round} {i}"), "project_id": project}),
                    )
                    .await;
                }
                start.elapsed()
            }
        };
        let start = Instant::now();
        let created = create("paced").await;
        let mut last = start;
        for _ in 0..DELIVERIES {
            last = deliveries.recv().await.unwrap();
        }
        let paced = last - start;
        open.send_replace(false);
        let made = create("backlog").await;
        let start = Instant::now();
        open.send_replace(true);
        let mut last = start;
        for _ in 0..DELIVERIES {
            last = deliveries.recv().await.unwrap();
        }
        let drained = last - start;
        let rate = |d: Duration| DELIVERIES as f64 / d.as_secs_f64();
        println!(
            "webhook deliveries ({DELIVERIES} each)         tasks created (baseline) {:>7.0}/s   delivered while created {:>7.0}/s (ratio {:.2}x)   a held backlog {:>7.0}/s (ratio {:.2}x)",
            rate(created),
            rate(paced),
            rate(paced) / rate(created),
            rate(drained),
            rate(drained) / rate(made)
        );
        table.push(Ratio::measured(
            "webhook deliveries while tasks are created, vs their creation".into(),
            format!("{:.0}/s", rate(paced)),
            format!("{:.0}/s", rate(created)),
            rate(paced) / rate(created),
        ));
        table.print();
    });
    drop(server);
}
