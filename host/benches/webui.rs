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

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TASKS: usize = 10_000;
const SEQUENTIAL: usize = 300;
const CONNECTIONS: usize = 4;
const PER_CONNECTION: usize = 150;
const LOGINS: usize = 40;
const RUNS: usize = 200;
const PASSWORD: &str = "a bench password";

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(addr: SocketAddr) -> Sender {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

/// One request: its latency and JSON answer.
async fn request(
    sender: &mut Sender,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: String,
) -> (Duration, Value) {
    let start = Instant::now();
    sender.ready().await.unwrap();
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "bench")
        .header("content-type", "application/json");
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let response = sender
        .send_request(req.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let elapsed = start.elapsed();
    assert!(
        status.is_success(),
        "{method} {path}: {status} {}",
        String::from_utf8_lossy(&bytes)
    );
    (
        elapsed,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// p50 and p99 of `samples`.
fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99))
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

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
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&plugins).unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for file in ["system.toml", "webui-api.toml"] {
        std::fs::copy(root.join("plugins").join(file), plugins.join(file)).unwrap();
    }
    std::fs::write(
        plugins.join("echo.toml"),
        "kind = \"backend\"\ncomponent = \"bundled:exec\"\nbinary = \"echo\"\nimports = [\"gantry:plugin/config\"]\n[settings]\nargs = [\"{prompt}\"]\n",
    )
    .unwrap();
    // The request budgets are the API's protection, not what is measured here.
    let config = dir.path().join("gantry.toml");
    std::fs::write(
        &config,
        "[http]\nuser_rate_limit_per_minute = 0\npublic_rate_limit_per_minute = 0\n[tasks]\nmax_running_per_tenant = 4\n",
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
    });
    let _ = child.kill();
    let _ = child.wait();
}
