//! Idle streams through the real `gantry` binary on loopback: 10,000 clients following one
//! running task's log as Server-Sent Events (`GET /v1/tasks/{id}/events`, the `core-api`
//! plugin), and the server's resident memory per stream against the 32 KiB target, beside a
//! baseline measured in the same run: the same number of idle HTTP/1.1 keep-alive connections,
//! each having made one request.
//!
//! The task is `sleep` through the `exec` adapter, so the streams stay open and quiet. Each
//! client is a bare socket that reads the answer's head and then nothing: what an idle
//! subscriber costs the server, not the client.
//!
//! Run with `cargo bench --bench streams` (it needs 20,000 open files: its own 10,000 sockets
//! and gantry's). Loops are bounded in count; nothing is asserted.

mod common;

use common::table::{Ratio, Table};
use common::{Server, connect, exec_backend, request, runtime};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const STREAMS: usize = 10_000;
/// Connections opened at once while the streams are made.
const OPENING: usize = 16;
const TARGET_KIB: f64 = 32.0;

/// The server's resident memory, in KiB, once it stops moving.
async fn settled_rss(pid: u32) -> u64 {
    let read = || {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap()
    };
    let mut last = read();
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = read();
        if now.abs_diff(last) < 64 {
            return now;
        }
        last = now;
    }
    last
}

/// A bare socket that sent `GET path` and read the answer's head (and whatever came with
/// it); it reads nothing more.
async fn open(addr: SocketAddr, path: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nhost: bench\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "the server closed {path}");
        head.extend_from_slice(&buf[..n]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{path}: {}",
        String::from_utf8_lossy(&head)
    );
    stream
}

/// `STREAMS` sockets of `path`, opened `OPENING` at a time.
async fn open_many(addr: SocketAddr, path: &str) -> Vec<TcpStream> {
    let mut all = Vec::with_capacity(STREAMS);
    while all.len() < STREAMS {
        let batch = OPENING.min(STREAMS - all.len());
        let opening: Vec<_> = (0..batch)
            .map(|_| {
                let path = path.to_string();
                tokio::spawn(async move { open(addr, &path).await })
            })
            .collect();
        for o in opening {
            all.push(o.await.unwrap());
        }
    }
    all
}

/// A fresh server with a running, quiet task; the growth of its resident memory while
/// `STREAMS` clients open `path` (`{task}` is the task's id) and idle, per client, in KiB.
/// Each measurement has a server of its own, so that neither reuses memory the other freed;
/// a burst of short requests first warms the instance slots and the allocator.
fn per_connection(path: &str) -> f64 {
    let server = Server::start(
        &["system", "core-api"],
        &[("sleeper", exec_backend("sleep"))],
        &format!(
            "[http]\nmax_connections_per_address = {n}\nkeep_alive_timeout_ms = 600000\n\
             public_rate_limit_per_minute = 0\n\
             [runtime]\nmax_instances = 64\nmax_instances_per_tenant = 64\nreserved_public_instances = 32\nmax_streams = {n}\nmax_streams_per_tenant = {n}\n",
            n = STREAMS + 100
        ),
        None,
    );
    let (addr, pid) = (server.addr, server.pid);
    runtime().block_on(async {
        let mut sender = connect(addr).await;
        let (_, ws) = request(&mut sender, "POST", "/v1/workspaces", None, json!({"name": "bench"}).to_string()).await;
        let workspace = ws["id"].as_str().unwrap().to_string();
        let (_, task) = request(
            &mut sender,
            "POST",
            "/v1/tasks",
            None,
            json!({"workspace_id": workspace, "backend": "sleeper", "prompt": "600"}).to_string(),
        )
        .await;
        let task = task["id"].as_str().unwrap().to_string();
        let started = Instant::now();
        loop {
            let (_, t) = request(&mut sender, "GET", &format!("/v1/tasks/{task}"), None, "").await;
            if t["state"] == "running" || t["status"] == "running" {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "the task did not start: {t}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let path = path.replace("{task}", &task);
        // Warm what any traffic warms once (the instance slots a burst of requests takes, the
        // allocator's arenas) with a burst of short-lived connections: not counted.
        for _ in 0..8 {
            let warm: Vec<_> = (0..OPENING)
                .map(|_| {
                    tokio::spawn(async move {
                        request(&mut connect(addr).await, "GET", "/health", None, "").await;
                    })
                })
                .collect();
            for w in warm {
                w.await.unwrap();
            }
        }
        let before = settled_rss(pid).await;
        let start = Instant::now();
        let clients = open_many(addr, &path).await;
        let opened = start.elapsed();
        let after = settled_rss(pid).await;
        // Still serving: a request on a fresh connection answers.
        let (_, health) = request(&mut connect(addr).await, "GET", "/health", None, "").await;
        assert_ne!(health, Value::Null);
        let each = after.saturating_sub(before) as f64 / STREAMS as f64;
        println!(
            "{STREAMS} idle clients of {path}: {each:.1} KiB each (server RSS {before} -> {after} KiB), opened in {:.1} s",
            opened.as_secs_f64()
        );
        drop(clients);
        each
    })
}

fn main() {
    let idle = per_connection("/health");
    let streams = per_connection("/v1/tasks/{task}/events");
    let mut table = Table::new("streams");
    table.push(Ratio::at_most(
        format!("{STREAMS} idle SSE subscribers, memory each, against 32 KiB"),
        format!("{streams:.1} KiB"),
        format!("{TARGET_KIB} KiB (an idle keep-alive connection: {idle:.1} KiB)"),
        streams / TARGET_KIB,
        1.0,
    ));
    table.print();
}
