//! What the benches that drive the real `gantry` binary share: starting it on loopback with
//! chosen plugins, config and user; keep-alive HTTP/1.1 requests; percentiles.
// Each bench uses part of this.
#![allow(dead_code)]

pub mod table;

/// The allocator the `gantry` binary has (`host/src/main.rs`), for the benches that run
/// gantry in this process.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One keep-alive HTTP/1.1 connection's sending half.
pub type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// A manifest for a backend running `binary` with the prompt as its one argument.
pub fn exec_backend(binary: &str) -> String {
    format!(
        "kind = \"backend\"\ncomponent = \"bundled:exec\"\nbinary = {binary:?}\nimports = [\"gantry:plugin/config\"]\n[settings]\nargs = [\"{{prompt}}\"]\n"
    )
}

/// A `gantry serve` on 127.0.0.1, stopped when dropped.
pub struct Server {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its process id (to read its memory).
    pub pid: u32,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Serve the repository's `bundled` manifests (`plugins/NAME.toml`) and the `extra`
    /// (name, manifest) ones with `config`; with `user`, first add that user (username,
    /// password) to tenant `bench`.
    pub fn start(
        bundled: &[&str],
        extra: &[(&str, String)],
        config: &str,
        user: Option<(&str, &str)>,
    ) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let plugins = dir.path().join("plugins");
        let data = dir.path().join("data");
        std::fs::create_dir_all(&plugins).unwrap();
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for name in bundled {
            let file = format!("{name}.toml");
            std::fs::copy(root.join("plugins").join(&file), plugins.join(&file)).unwrap();
        }
        for (name, manifest) in extra {
            std::fs::write(plugins.join(format!("{name}.toml")), manifest).unwrap();
        }
        let config_file = dir.path().join("gantry.toml");
        std::fs::write(&config_file, config).unwrap();
        if let Some((username, password)) = user {
            let mut add = Command::new(env!("CARGO_BIN_EXE_gantry"))
                .args(["users", "add", "--tenant", "bench", "--username", username])
                .arg("--data-dir")
                .arg(&data)
                .env_remove("GANTRY_CONFIG")
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .spawn()
                .expect("gantry users add");
            writeln!(add.stdin.take().unwrap(), "{password}").unwrap();
            assert!(add.wait().unwrap().success());
        }
        let mut child = Command::new(env!("CARGO_BIN_EXE_gantry"))
            .args(["serve", "--addr", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .arg("--plugins")
            .arg(&plugins)
            .arg("--config")
            .arg(&config_file)
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
        let addr = first
            .trim()
            .strip_prefix("gantry listening on http://")
            .expect("gantry's listening line")
            .parse()
            .unwrap();
        Server {
            addr,
            pid: child.id(),
            child,
            _dir: dir,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The client's runtime: two workers, like the machine the figures come from.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A new keep-alive connection to `addr`.
pub async fn connect(addr: SocketAddr) -> Sender {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

/// One request, which must succeed: its latency (up to the whole body) and its JSON answer
/// (null when it is not JSON).
pub async fn request(
    sender: &mut Sender,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: impl Into<Bytes>,
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
        .send_request(req.body(Full::new(body.into())).unwrap())
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
pub fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99))
}

/// In milliseconds, two decimals.
pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// In microseconds.
pub fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}
