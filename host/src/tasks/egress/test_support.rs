//! Helpers shared by the proxy's tests: a task, a running proxy, origins to reach, and raw
//! HTTP/1.1 to talk to them.

use super::{EgressPolicy, ModelRoute, ModelUsage, ProxyHandle, TaskEgress, serve};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub(super) const TOKEN: &str = "tok-123";
pub(super) const KEY: &str = "real-key-456";
pub(super) const WAIT: Duration = Duration::from_secs(5);

pub(super) fn route(upstream: String, key: Option<&str>) -> ModelRoute {
    let (token, key) = (TOKEN.to_owned(), key.map(str::to_owned));
    ModelRoute {
        upstream,
        token,
        key,
    }
}

pub(super) fn task(patterns: &[&str], model: Option<ModelRoute>) -> Arc<TaskEgress> {
    let policy = EgressPolicy::new(patterns).unwrap();
    let (tenant, task, backend) = ("acme".into(), "t1".into(), "claude".into());
    let usage = ModelUsage::default();
    Arc::new(TaskEgress {
        tenant,
        task,
        backend,
        policy,
        model,
        usage,
    })
}

pub(super) fn start(egress: Arc<TaskEgress>) -> (SocketAddr, ProxyHandle) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    (
        listener.local_addr().unwrap(),
        serve(listener, egress).unwrap(),
    )
}

/// `$T` and `$K` stand for the token and the key.
pub(super) fn fill(s: &str) -> String {
    s.replace("$T", TOKEN).replace("$K", KEY)
}

pub(super) async fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(s.read_u8().await.unwrap());
    }
    String::from_utf8(head).unwrap()
}

/// Reads one request (head, then a `content-length` body) and returns its head, lowercased.
pub(super) async fn read_request(s: &mut TcpStream) -> String {
    let head = read_head(s).await.to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "));
    let mut body = vec![0; length.map_or(0, |n| n.parse().unwrap())];
    s.read_exact(&mut body).await.unwrap();
    head
}

/// An HTTP origin answering each request with its own (lowercased) head; counts them.
pub(super) async fn echo_origin() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (addr, seen) = (
        listener.local_addr().unwrap(),
        Arc::new(AtomicUsize::new(0)),
    );
    let count = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let head = read_request(&mut s).await;
                let reply = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", head.len());
                s.write_all((reply + &head).as_bytes()).await.unwrap();
            });
        }
    });
    (addr, seen)
}

/// Sends `request` and reads until the proxy closes (requests say `connection: close`).
pub(super) async fn send(proxy: SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let read = tokio::time::timeout(WAIT, s.read_to_end(&mut out)).await;
    read.expect("no answer").unwrap();
    String::from_utf8(out).unwrap()
}

pub(super) fn get(target: &str, extra: &str) -> String {
    format!("GET {target} HTTP/1.1\r\nhost: x\r\n{extra}connection: close\r\n\r\n")
}
