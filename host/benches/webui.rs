//! The Web UI API through the real `gantry` binary on loopback, printed beside `GET /health`
//! (the plainest component route) measured in the same run:
//!
//! - `POST /api/auth/login`: argon2id on every login, so its rate is the point;
//! - listing among 10,000 tasks: a filtered page (status, tags, minimum priority, sorted) and a
//!   full-text search (`auth* AND NOT legacy`), latency over one connection and requests/s
//!   over several;
//! - create + execute with a trivial backend (`echo` through the `exec` adapter): the two
//!   requests' latency, and how many tasks a second go from created to completed.
//!
//! Run with `cargo bench --bench webui`. Loops are bounded in count; nothing is asserted.

mod common;

use common::table::{Ratio, Table};
use common::{Server, connect, exec_backend, ms, percentiles, request, runtime};
use serde_json::json;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const TASKS: usize = 10_000;
const SEQUENTIAL: usize = 300;
const CONNECTIONS: usize = 4;
const PER_CONNECTION: usize = 150;
const LOGINS: usize = 40;
const RUNS: usize = 200;
const PASSWORD: &str = "a bench password";

/// Latency over one connection and requests/s over several, of `GET path`; p50 returned.
async fn endpoint(addr: SocketAddr, label: &str, path: &str, token: Option<&str>) -> Duration {
    let mut sender = connect(addr).await;
    for _ in 0..10 {
        request(&mut sender, "GET", path, token, String::new()).await;
    }
    let mut samples = Vec::with_capacity(SEQUENTIAL);
    for _ in 0..SEQUENTIAL {
        samples.push(
            request(&mut sender, "GET", path, token, String::new())
                .await
                .0,
        );
    }
    let (p50, p99) = percentiles(samples);
    let start = Instant::now();
    let workers: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let path = path.to_string();
            let token = token.map(str::to_string);
            tokio::spawn(async move {
                let mut sender = connect(addr).await;
                for _ in 0..PER_CONNECTION {
                    request(&mut sender, "GET", &path, token.as_deref(), String::new()).await;
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let rate = (CONNECTIONS * PER_CONNECTION) as f64 / start.elapsed().as_secs_f64();
    println!(
        "{label:<34} p50 {:>9}  p99 {:>9}  {rate:>7.0} requests/s over {CONNECTIONS} connections",
        ms(p50),
        ms(p99)
    );
    p50
}

fn main() {
    // The request budgets are the API's protection, not what is measured here.
    let server = Server::start(
        &["system", "webui-api"],
        &[("echo", exec_backend("echo"))],
        "[http]\nuser_rate_limit_per_minute = 0\npublic_rate_limit_per_minute = 0\n[tasks]\nmax_running_per_tenant = 4\n",
        Some(("bench", PASSWORD)),
    );
    let addr = server.addr;
    let rt = runtime();
    rt.block_on(async {
        let health = endpoint(addr, "GET /health (baseline)", "/health", None).await;

        let login = json!({ "username": "bench", "password": PASSWORD }).to_string();
        let mut sender = connect(addr).await;
        let mut samples = Vec::with_capacity(LOGINS);
        let mut token = String::new();
        let start = Instant::now();
        for _ in 0..LOGINS {
            let (took, answer) =
                request(&mut sender, "POST", "/api/auth/login", None, login.clone()).await;
            samples.push(took);
            token = answer["data"]["access_token"].as_str().unwrap().to_string();
        }
        let rate = LOGINS as f64 / start.elapsed().as_secs_f64();
        let (p50, p99) = percentiles(samples);
        println!(
            "{:<34} p50 {:>9}  p99 {:>9}  {rate:>7.1} logins/s on one connection",
            "POST /api/auth/login (argon2id)",
            ms(p50),
            ms(p99)
        );
        let token = token.as_str();

        // 10,000 tasks over 4 connections; a tenth tagged for the filter, some "legacy".
        let (_, project) = request(
            &mut sender,
            "POST",
            "/api/projects/",
            Some(token),
            json!({ "name": "bench", "settings": { "backend": "echo" } }).to_string(),
        )
        .await;
        let project = project["data"]["id"].as_str().unwrap().to_string();
        let start = Instant::now();
        let fillers: Vec<_> = (0..CONNECTIONS)
            .map(|c| {
                let project = project.clone();
                let token = token.to_string();
                tokio::spawn(async move {
                    let mut sender = connect(addr).await;
                    for i in (c..TASKS).step_by(CONNECTIONS) {
                        let tags = if i % 10 == 0 { json!(["security", "backend"]) } else { json!(["ui"]) };
                        let title = if i % 7 == 0 {
                            format!("Legacy authentication cleanup {i}")
                        } else {
                            format!("Implement authentication step {i}")
                        };
                        let body = json!({
                            "title": title,
                            "description": "Add JWT-based authentication to the API",
                            "project_id": project,
                            "priority": (i % 10) as i64,
                            "tags": tags,
                        });
                        request(&mut sender, "POST", "/api/tasks/", Some(&token), body.to_string())
                            .await;
                    }
                })
            })
            .collect();
        for f in fillers {
            f.await.unwrap();
        }
        println!(
            "{:<34} {:.0} tasks/s over {CONNECTIONS} connections",
            format!("POST /api/tasks/ ({TASKS})"),
            TASKS as f64 / start.elapsed().as_secs_f64()
        );
        let filtered = endpoint(
            addr,
            "GET /api/tasks/ filtered",
            "/api/tasks/?status=pending&tags=security&priority=0&sort=priority&order=desc&page_size=50",
            Some(token),
        )
        .await;
        let searched = endpoint(
            addr,
            "GET /api/tasks/ searched",
            "/api/tasks/?search=auth%2A%20AND%20NOT%20legacy&page_size=50",
            Some(token),
        )
        .await;

        // Create + execute, then wait for every run to complete (on a fresh connection: the
        // first one has idled past the keep-alive timeout meanwhile).
        let mut sender = connect(addr).await;
        let mut pairs = Vec::with_capacity(RUNS);
        let mut ids = Vec::with_capacity(RUNS);
        let start = Instant::now();
        for i in 0..RUNS {
            let body = json!({ "title": format!("run {i}"), "project_id": project }).to_string();
            let (created, answer) =
                request(&mut sender, "POST", "/api/tasks/", Some(token), body).await;
            let id = answer["data"]["id"].as_str().unwrap().to_string();
            let (executed, _) = request(
                &mut sender,
                "POST",
                &format!("/api/tasks/{id}/execute"),
                Some(token),
                String::new(),
            )
            .await;
            pairs.push(created + executed);
            ids.push(id);
        }
        for id in &ids {
            loop {
                let (_, t) = request(
                    &mut sender,
                    "GET",
                    &format!("/api/tasks/{id}"),
                    Some(token),
                    String::new(),
                )
                .await;
                match t["data"]["status"].as_str() {
                    Some("completed") => break,
                    Some("queued" | "running") => tokio::time::sleep(Duration::from_millis(5)).await,
                    other => panic!("task {id} ended {other:?}: {t}"),
                }
            }
        }
        let rate = RUNS as f64 / start.elapsed().as_secs_f64();
        let (p50, p99) = percentiles(pairs);
        println!(
            "{:<34} p50 {:>9}  p99 {:>9}  {rate:>7.1} tasks/s created to completed",
            "create + execute (echo)",
            ms(p50),
            ms(p99)
        );
        println!(
            "ratios to GET /health p50: filtered list {:.1}x, search {:.1}x",
            filtered.as_secs_f64() / health.as_secs_f64(),
            searched.as_secs_f64() / health.as_secs_f64()
        );
        let mut table = Table::new("webui");
        table.push(Ratio::measured(
            "filtered task list among 10,000, p50, vs GET /health".into(),
            ms(filtered),
            ms(health),
            filtered.as_secs_f64() / health.as_secs_f64(),
        ));
        table.push(Ratio::measured(
            "full-text search among 10,000, p50, vs GET /health".into(),
            ms(searched),
            ms(health),
            searched.as_secs_f64() / health.as_secs_f64(),
        ));
        table.print();
    });
    drop(server);
}
