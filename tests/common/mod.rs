//! The black-box harness: start the real `gantry` binary on 127.0.0.1 with a plugin
//! directory of the test's making, and speak HTTP to it.

#![allow(dead_code)]

pub mod agents;
pub mod postgres;
pub mod webui;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// The gantry binary under test.
pub fn gantry_bin() -> &'static str {
    env!("CARGO_BIN_EXE_gantry")
}

/// A test component built by the host's build script.
pub fn test_component(name: &str) -> PathBuf {
    Path::new(env!("GANTRY_COMPONENT_DIR")).join(format!("{}.wasm", name.replace('-', "_")))
}

/// A manifest for the test handler mounted at `/t/...`, with extra TOML appended.
pub fn test_handler_manifest(extra: &str) -> String {
    format!(
        "kind = \"handler\"\ncomponent = {:?}\n{extra}\n",
        test_component("test-handler").display().to_string()
    )
}

/// A plugin directory and data directory, kept for the life of the test, and the store: SQLite
/// in the data directory, or a fresh PostgreSQL database when the suite runs on PostgreSQL
/// (`GANTRY_TEST_STORE=postgres`).
pub struct Setup {
    pub dir: TempDir,
    /// The PostgreSQL store's URL, when the suite runs on PostgreSQL.
    pub store: Option<String>,
}

impl Setup {
    /// A fresh setup with these manifests (file stem, text).
    pub fn new(manifests: &[(&str, String)]) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("plugins")).unwrap();
        for (stem, text) in manifests {
            std::fs::write(
                dir.path().join("plugins").join(format!("{stem}.toml")),
                text,
            )
            .unwrap();
        }
        let store = postgres::selected().then(postgres::fresh_database);
        Setup { dir, store }
    }

    /// Give `cmd` (a `gantry` command) this setup's store.
    pub fn with_store<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        cmd.env_remove("GANTRY_NODE_ID");
        match &self.store {
            Some(url) => cmd.env("GANTRY_STORE", url),
            None => cmd.env_remove("GANTRY_STORE"),
        }
    }

    pub fn plugins(&self) -> PathBuf {
        self.dir.path().join("plugins")
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A command that serves this setup on a free port.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(gantry_bin());
        cmd.arg("serve")
            .arg("--addr")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(self.data())
            .arg("--plugins")
            .arg(self.plugins())
            .env_remove("GANTRY_ADDR")
            .env_remove("GANTRY_DATA_DIR")
            .env_remove("GANTRY_PLUGINS")
            .env_remove("GANTRY_CONFIG")
            .env_remove("GANTRY_API_KEYS")
            .env("RUST_LOG", "info");
        self.with_store(&mut cmd);
        cmd
    }

    /// Serve this setup.
    pub fn start(&self) -> Gantry {
        Gantry::spawn(self.command())
    }

    /// Serve this setup with `config` as its config file and `keys` (`tenant:key,…`) as its
    /// API keys.
    pub fn start_configured(&self, config: &str, keys: &str) -> Gantry {
        let file = self.dir.path().join("gantry.toml");
        std::fs::write(&file, config).unwrap();
        let mut cmd = self.command();
        cmd.arg("--config").arg(&file).env("GANTRY_API_KEYS", keys);
        Gantry::spawn(cmd)
    }

    /// Run a server that must fail to start; its exit status and stderr.
    pub fn start_failure(&self) -> (ExitStatus, String) {
        let out = self
            .command()
            .stdout(Stdio::null())
            .output()
            .expect("running gantry");
        (
            out.status,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// Send `signal` to the process group `pgid` (never to pid 0, 1 or -1: those reach far more).
pub fn signal_group(pgid: i32, signal: i32) {
    assert!(pgid > 1, "not a process group of a test's child: {pgid}");
    // SAFETY: kill(2) on a positive group id checked above.
    unsafe {
        libc::kill(-pgid, signal);
    }
}

/// A running gantry; killed on drop.
pub struct Gantry {
    pub child: Child,
    pub addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
}

impl Gantry {
    /// Spawn `cmd` and wait for its "listening" line.
    pub fn spawn(mut cmd: Command) -> Gantry {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning gantry");
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        out.read_line(&mut first).unwrap();
        let Some(addr) = first.trim().strip_prefix("gantry listening on http://") else {
            let status = child.wait().unwrap();
            std::thread::sleep(Duration::from_millis(100));
            panic!(
                "gantry did not start ({status}): stdout {first:?}, stderr:\n{}",
                stderr.lock().unwrap()
            );
        };
        let addr = addr.parse().unwrap();
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in out.lines() {});
        Gantry {
            child,
            addr,
            stderr,
        }
    }

    /// What the server logged so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Wait until the log contains `needle`, up to `limit`.
    pub fn wait_for_log(&self, needle: &str, limit: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.stderr().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Send SIGTERM.
    pub fn terminate(&self) {
        self.signal("TERM");
    }

    /// Send a signal by name (`TERM`, `INT`, `KILL`, `HUP`).
    pub fn signal(&self, name: &str) {
        let signal = match name {
            "TERM" => libc::SIGTERM,
            "INT" => libc::SIGINT,
            "KILL" => libc::SIGKILL,
            "HUP" => libc::SIGHUP,
            other => panic!("no such signal in these tests: {other}"),
        };
        let pid = i32::try_from(self.child.id()).unwrap();
        // kill(2) directly: procps-ng 4.0.2's `kill -SIG -PGID` sends to -1, every process.
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }

    /// Wait for the process to exit, up to `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Send one request on a new connection; the response head with its body still streaming.
    pub async fn send(&self, method: &str, path: &str, body: &str) -> Response<Incoming> {
        self.request(method, path, &[], body.to_string()).await
    }

    /// Send one request with headers on a new connection; the response head with its body
    /// still streaming.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: String,
    ) -> Response<Incoming> {
        request_to(self.addr, method, path, headers, body).await
    }

    /// Send one request with headers; status and the whole body.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (StatusCode, Bytes) {
        let response = self.request(method, path, headers, body.to_string()).await;
        let status = response.status();
        (
            status,
            response.into_body().collect().await.unwrap().to_bytes(),
        )
    }

    /// GET `path`; status, headers and the whole body.
    pub async fn get(&self, path: &str) -> (StatusCode, hyper::HeaderMap, Bytes) {
        let response = self.send("GET", path, "").await;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, headers, body)
    }

    /// GET `path` as JSON.
    pub async fn get_json(&self, path: &str) -> (StatusCode, serde_json::Value) {
        let (status, headers, body) = self.get(path).await;
        assert_eq!(
            headers.get("content-type").map(|v| v.to_str().unwrap()),
            Some("application/json"),
            "{path}: {}",
            String::from_utf8_lossy(&body)
        );
        (status, serde_json::from_slice(&body).unwrap())
    }
}

/// Send one request with headers to `addr` on a new connection; the response head with its
/// body still streaming.
pub async fn request_to(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: String,
) -> Response<Incoming> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    sender
        .send_request(request.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .unwrap()
}

impl Drop for Gantry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Assert gantry's error envelope.
pub fn assert_error(value: &serde_json::Value, code: &str, plugin: Option<&str>) {
    assert_eq!(value["error"]["code"], code, "{value}");
    assert!(
        value["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{value}"
    );
    match plugin {
        Some(p) => assert_eq!(value["error"]["plugin"], p, "{value}"),
        None => assert!(value["error"].get("plugin").is_none(), "{value}"),
    }
}

/// A tenant's calls: every request carries its API key.
pub struct Client<'a> {
    pub g: &'a Gantry,
    pub key: &'a str,
}

impl Client<'_> {
    /// A JSON request (`Null` sends no body); status and the answer as JSON (or as a JSON
    /// string when it is not JSON, `Null` when empty).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let (status, _, value) = self.call_full(method, path, body).await;
        (status, value)
    }

    /// As [`Client::call`], with the response headers.
    pub async fn call_full(
        &self,
        method: &str,
        path: &str,
        body: serde_json::Value,
    ) -> (u16, hyper::HeaderMap, serde_json::Value) {
        let body = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        let auth = format!("Bearer {}", self.key);
        let headers = [
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
        ];
        let response = self.g.request(method, path, &headers, body).await;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let value = if bytes.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned())
            })
        };
        (status, headers, value)
    }

    /// GET `path` with extra `headers`; status and the body as text.
    pub async fn raw(&self, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
        let auth = format!("Bearer {}", self.key);
        let mut all = vec![("authorization", auth.as_str())];
        all.extend_from_slice(headers);
        let (status, bytes) = self.g.call("GET", path, &all, "").await;
        (
            status.as_u16(),
            String::from_utf8_lossy(&bytes).into_owned(),
        )
    }
}

/// The core API's steps, as a tenant takes them (tasks on a backend named `sh` that runs
/// its prompt with `/bin/sh -c`).
pub trait CoreSteps {
    async fn workspace(&self, name: &str) -> String;
    async fn task(&self, ws: &str, script: &str) -> String;
    async fn wait_state(&self, task: &str, done: impl Fn(&str) -> bool) -> serde_json::Value;
}

impl CoreSteps for Client<'_> {
    async fn workspace(&self, name: &str) -> String {
        let (status, ws) = self
            .call(
                "POST",
                "/v1/workspaces",
                serde_json::json!({ "name": name }),
            )
            .await;
        assert_eq!(status, 201, "{ws}");
        ws["id"].as_str().unwrap().to_string()
    }

    async fn task(&self, ws: &str, script: &str) -> String {
        let (status, task) = self
            .call(
                "POST",
                "/v1/tasks",
                serde_json::json!({ "workspace_id": ws, "backend": "sh", "prompt": script }),
            )
            .await;
        assert_eq!(status, 201, "{task}");
        task["id"].as_str().unwrap().to_string()
    }

    async fn wait_state(&self, task: &str, done: impl Fn(&str) -> bool) -> serde_json::Value {
        for _ in 0..400 {
            let (_, t) = self
                .call("GET", &format!("/v1/tasks/{task}"), serde_json::Value::Null)
                .await;
            if done(t["state"].as_str().unwrap()) {
                return t;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("task {task} never reached the state");
    }
}
