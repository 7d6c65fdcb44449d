//! The clinvk surface, through the real `gantry` binary on loopback, printed against baselines
//! measured in the same run:
//!
//! - `GET /health` and `GET /api/v1/backends`: latency (p50, p99) over one keep-alive
//!   connection, and requests/s over several;
//! - `POST /api/v1/prompt` (ephemeral, JSON) with a trivial CLI (`echo`, through the `exec`
//!   adapter) against spawning that same CLI directly: the latency gantry adds per prompt.
//!
//! Run with `cargo bench --bench clinvk`. Loops are bounded in count; nothing is asserted.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SEQUENTIAL: usize = 400;
const CONNECTIONS: usize = 4;
const PER_CONNECTION: usize = 300;
const PROMPTS: usize = 400;

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

async fn request(sender: &mut Sender, method: &str, path: &str, body: &'static str) -> Duration {
    let start = Instant::now();
    sender.ready().await.unwrap();
    let req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "bench")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap();
    let response = sender.send_request(req).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    assert!(
        status.is_success(),
        "{method} {path}: {status} {}",
        String::from_utf8_lossy(&bytes)
    );
    start.elapsed()
}

/// p50 and p99 of `samples`.
fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99))
}

fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

async fn endpoint(addr: SocketAddr, path: &'static str) {
    let mut sender = connect(addr).await;
    for _ in 0..20 {
        request(&mut sender, "GET", path, "").await;
    }
    let mut samples = Vec::with_capacity(SEQUENTIAL);
    for _ in 0..SEQUENTIAL {
        samples.push(request(&mut sender, "GET", path, "").await);
    }
    let (p50, p99) = percentiles(samples);
    let start = Instant::now();
    let workers: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            tokio::spawn(async move {
                let mut sender = connect(addr).await;
                for _ in 0..PER_CONNECTION {
                    request(&mut sender, "GET", path, "").await;
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let rate = (CONNECTIONS * PER_CONNECTION) as f64 / start.elapsed().as_secs_f64();
    println!(
        "GET {path:<18} p50 {:>8}  p99 {:>8}  {rate:>7.0} requests/s over {CONNECTIONS} connections",
        us(p50),
        us(p99)
    );
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for file in ["system.toml", "clinvk-api.toml"] {
        std::fs::copy(root.join("plugins").join(file), plugins.join(file)).unwrap();
    }
    std::fs::write(
        plugins.join("fake.toml"),
        "kind = \"backend\"\ncomponent = \"bundled:exec\"\nbinary = \"echo\"\nimports = [\"gantry:plugin/config\"]\n[settings]\nargs = [\"{prompt}\"]\n",
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(["serve", "--addr", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--plugins")
        .arg(&plugins)
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
        endpoint(addr, "/health").await;
        endpoint(addr, "/api/v1/backends").await;

        // The CLI alone: spawn, wait, read its line.
        let mut direct = Vec::with_capacity(PROMPTS);
        for _ in 0..PROMPTS + 10 {
            let start = Instant::now();
            let out = tokio::process::Command::new("echo")
                .arg("say hi")
                .stdin(Stdio::null())
                .output()
                .await
                .unwrap();
            assert!(out.status.success());
            direct.push(start.elapsed());
        }
        let (d50, d99) = percentiles(direct.split_off(10));

        let body =
            r#"{"backend":"fake","prompt":"say hi","ephemeral":true,"output_format":"json"}"#;
        let mut sender = connect(addr).await;
        for _ in 0..10 {
            request(&mut sender, "POST", "/api/v1/prompt", body).await;
        }
        let mut through = Vec::with_capacity(PROMPTS);
        let start = Instant::now();
        for _ in 0..PROMPTS {
            through.push(request(&mut sender, "POST", "/api/v1/prompt", body).await);
        }
        let rate = PROMPTS as f64 / start.elapsed().as_secs_f64();
        let (g50, g99) = percentiles(through);
        println!(
            "echo run directly       p50 {:>8}  p99 {:>8}",
            us(d50),
            us(d99)
        );
        println!(
            "POST /api/v1/prompt     p50 {:>8}  p99 {:>8}  {rate:>7.0} prompts/s on one connection",
            us(g50),
            us(g99)
        );
        println!(
            "added per prompt        p50 {:>8}  ({:.1}x the CLI alone)",
            us(g50.saturating_sub(d50)),
            g50.as_secs_f64() / d50.as_secs_f64()
        );
    });
    let _ = child.kill();
    let _ = child.wait();
}
