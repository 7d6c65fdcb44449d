//! A task's only way out: one listener in its network namespace that serves as both its
//! egress proxy and its model proxy.
//!
//! - `CONNECT host:port` and absolute-form `GET http://host/…` are the egress proxy: allowed
//!   only by the task's [`EgressPolicy`], and never into private address space unless the
//!   operator named that IP address exactly (a name is checked after it resolves).
//! - Origin-form requests (`POST /v1/messages`) go to the task's model upstream. The task holds
//!   a per-task token instead of the real API key; the proxy checks it and swaps in the key on
//!   the way out, so the key never enters the sandbox. It also reads token usage off the
//!   response as it streams past.
//!
//! Everything streams: request and response bodies are never buffered whole, and usage
//! scanning keeps at most one bounded line.
//!
//! The parts: [`EgressPolicy`] (`policy`) decides what the egress proxy may reach; `model`
//! is the model route (token swap, upstream exchange); `usage` reads token counts off model
//! responses; `relay` is the HTTP plumbing both share. This file serves the listener and
//! routes each request.

mod model;
mod policy;
mod relay;
#[cfg(test)]
mod test_support;
mod usage;

pub use model::ModelRoute;
/// Also the webhooks' TLS: one client configuration (ring, webpki roots).
pub(crate) use model::tls_connector;
pub use policy::EgressPolicy;
/// Also the webhooks' address check: one classifier of what is not on the public internet.
pub use policy::is_public;
pub use usage::ModelUsage;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use model::Upstream;
use policy::normalize_host;
use relay::{exchange, full, origin_form, relay, strip_hop_by_hop, text};
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::task::{JoinHandle, JoinSet};

/// Connections served at once per task; more are closed on accept.
const MAX_CONNECTIONS: usize = 64;
/// A client that has not sent its request head by then is dropped (slowloris).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// For name resolution and for each TCP connect attempt.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Public types

/// One task's proxy: its identity (for the log), its policy and model route.
#[derive(Debug)]
pub struct TaskEgress {
    /// Tenant of the task, for the log.
    pub tenant: String,
    /// Task id, for the log.
    pub task: String,
    /// Backend the task runs, for the log.
    pub backend: String,
    /// Hosts the task may reach through the egress proxy.
    pub policy: EgressPolicy,
    /// Where origin-form requests go; `None` answers them 404.
    pub model: Option<ModelRoute>,
    /// What the model proxy has counted.
    pub usage: ModelUsage,
}

/// A running task proxy. Dropping it stops accepting and closes every live connection.
#[derive(Debug)]
pub struct ProxyHandle {
    _accept: AbortOnDrop,
}

#[derive(Debug)]
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Serve `listener` until the returned handle is dropped. Call from within a tokio runtime.
pub fn serve(
    listener: std::net::TcpListener,
    egress: Arc<TaskEgress>,
) -> std::io::Result<ProxyHandle> {
    let upstream = egress
        .model
        .as_ref()
        .map(|m| Upstream::parse(&m.upstream))
        .transpose();
    let upstream =
        upstream.map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let proxy = Arc::new(Proxy {
        egress,
        upstream,
        local,
    });
    let accept = tokio::spawn(accept_loop(listener, proxy));
    Ok(ProxyHandle {
        _accept: AbortOnDrop(accept),
    })
}

// ---------------------------------------------------------------------------------------------
// Serving

struct Proxy {
    egress: Arc<TaskEgress>,
    upstream: Option<Upstream>,
    /// Our own address: absolute-form requests to it are model requests from a client that
    /// did not exempt loopback from `HTTP_PROXY`.
    local: SocketAddr,
}

type ProxyBody = UnsyncBoxBody<Bytes, hyper::Error>;
type Answer = Response<ProxyBody>;
/// A CONNECT tunnel to run once hyper hands over the connection.
type TunnelSlot = Mutex<Option<Pin<Box<dyn Future<Output = ()> + Send>>>>;

async fn accept_loop(listener: tokio::net::TcpListener, proxy: Arc<Proxy>) {
    // Owned here so that aborting this task (dropping the handle) aborts every connection.
    let mut connections = JoinSet::new();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(task = %proxy.egress.task, "egress proxy accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        if connections.len() >= MAX_CONNECTIONS {
            tracing::warn!(task = %proxy.egress.task, "egress proxy: too many connections, closing one");
            continue;
        }
        connections.spawn(serve_connection(stream, proxy.clone()));
    }
}

async fn serve_connection(stream: TcpStream, proxy: Arc<Proxy>) {
    let tunnel = Arc::new(TunnelSlot::default());
    let slot = tunnel.clone();
    let service = service_fn(move |req| {
        let (proxy, slot) = (proxy.clone(), slot.clone());
        async move { Ok::<_, Infallible>(route(&proxy, req, &slot).await) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let conn = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    if let Err(e) = conn.await {
        tracing::debug!("egress proxy connection ended: {e}");
    }
    // The tunnel runs in this task so that it shares its connection slot and its abort.
    let pending = tunnel.lock().unwrap_or_else(PoisonError::into_inner).take();
    if let Some(tunnel) = pending {
        tunnel.await;
    }
}

async fn route(proxy: &Proxy, req: Request<Incoming>, tunnel: &TunnelSlot) -> Answer {
    if req.method() == Method::CONNECT {
        return connect(proxy, req, tunnel).await;
    }
    match req.uri().authority() {
        None => model::model(proxy, req).await,
        Some(a) if proxy.is_self(a.host(), a.port_u16().unwrap_or(80)) => {
            model::model(proxy, req).await
        }
        Some(_) => forward(proxy, req).await,
    }
}

impl Proxy {
    fn is_self(&self, host: &str, port: u16) -> bool {
        let host = normalize_host(host);
        let loopback =
            host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
        loopback && port == self.local.port()
    }
}

async fn connect(proxy: &Proxy, mut req: Request<Incoming>, tunnel: &TunnelSlot) -> Answer {
    let Some((host, port)) = req
        .uri()
        .authority()
        .and_then(|a| Some((a.host(), a.port_u16()?)))
    else {
        return text(StatusCode::BAD_REQUEST, "CONNECT needs host:port");
    };
    let mut upstream = match open_target(&proxy.egress, host, port).await {
        Ok(stream) => stream,
        Err(answer) => return answer,
    };
    let upgrade = hyper::upgrade::on(&mut req);
    let run = async move {
        match upgrade.await {
            Ok(upgraded) => {
                let mut client = TokioIo::new(upgraded);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            }
            Err(e) => tracing::debug!("CONNECT upgrade failed: {e}"),
        }
    };
    *tunnel.lock().unwrap_or_else(PoisonError::into_inner) = Some(Box::pin(run));
    let mut answer = Response::new(full(Bytes::new()));
    answer
        .extensions_mut()
        .insert(hyper::ext::ReasonPhrase::from_static(
            b"Connection Established",
        ));
    answer
}

/// Plain-HTTP forwarding of an absolute-form request.
async fn forward(proxy: &Proxy, req: Request<Incoming>) -> Answer {
    if req.uri().scheme_str() != Some("http") {
        return text(
            StatusCode::BAD_REQUEST,
            "only http:// in absolute form; use CONNECT",
        );
    }
    let Some(authority) = req.uri().authority().cloned() else {
        return text(StatusCode::BAD_REQUEST, "no host in the request target");
    };
    let port = authority.port_u16().unwrap_or(80);
    let stream = match open_target(&proxy.egress, authority.host(), port).await {
        Ok(stream) => stream,
        Err(answer) => return answer,
    };
    let (mut parts, body) = req.into_parts();
    parts.uri = origin_form(&parts.uri);
    strip_hop_by_hop(&mut parts.headers);
    if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
        parts.headers.insert(header::HOST, host);
    }
    match exchange(stream, Request::from_parts(parts, body)).await {
        Ok((response, conn)) => relay(response, conn, None),
        Err(e) => {
            tracing::info!(task = %proxy.egress.task, target = %authority, "egress upstream failed: {e}");
            text(StatusCode::BAD_GATEWAY, "the origin did not answer")
        }
    }
}

/// Checks `host:port` against the policy and the address rules, logs the decision, and
/// connects to the addresses that were checked (no second resolution to rebind).
async fn open_target(egress: &TaskEgress, host: &str, port: u16) -> Result<TcpStream, Answer> {
    let host = normalize_host(host);
    let decision = decide(egress, &host, port).await;
    let target = format!("{host}:{port}");
    let allowed = decision.is_ok();
    tracing::info!(tenant = %egress.tenant, task = %egress.task, backend = %egress.backend, target = %target, allowed, "egress");
    let addrs = decision?;
    connect_any(&addrs).await.map_err(|_| {
        text(
            StatusCode::BAD_GATEWAY,
            &format!("cannot connect to {target}"),
        )
    })
}

async fn decide(egress: &TaskEgress, host: &str, port: u16) -> Result<Vec<SocketAddr>, Answer> {
    let Some(literal) = egress.policy.matching(host, port) else {
        return Err(text(
            StatusCode::FORBIDDEN,
            "not in this task's egress allowlist",
        ));
    };
    let addrs = resolve(host, port)
        .await
        .map_err(|_| text(StatusCode::BAD_GATEWAY, "cannot resolve the host"))?;
    if !literal && addrs.iter().any(|a| !is_public(a.ip())) {
        return Err(text(StatusCode::FORBIDDEN, "resolves to a private address"));
    }
    Ok(addrs)
}

async fn resolve(host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
    let found = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::lookup_host((host, port))).await;
    let addrs: Vec<_> = found.map_err(|_| std::io::ErrorKind::TimedOut)??.collect();
    match addrs.is_empty() {
        true => Err(std::io::ErrorKind::NotFound.into()),
        false => Ok(addrs),
    }
}

async fn connect_any(addrs: &[SocketAddr]) -> std::io::Result<TcpStream> {
    let mut last = std::io::Error::from(std::io::ErrorKind::NotFound);
    for addr in addrs {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(e)) => last = e,
            Err(_) => last = std::io::ErrorKind::TimedOut.into(),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn absolute_form_http_goes_only_where_listed() {
        let (origin, seen) = echo_origin().await;
        let target = format!("http://{origin}/path?q=1");
        let (proxy, _h) = start(task(&[&origin.to_string()], None));
        let answer = send(proxy, &get(&target, "proxy-authorization: basic eA==\r\n")).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains("get /path?q=1 http/1.1"), "{answer}");
        assert!(answer.contains(&format!("host: {origin}")) && !answer.contains("proxy-auth"));
        // Not listed; only a wildcard (a private address); a name, which is not the IP.
        for patterns in [&["127.0.0.2"][..], &["*"], &["*", "localhost"]] {
            let (proxy, _h) = start(task(patterns, None));
            let answer = send(proxy, &get(&target, "")).await;
            assert!(answer.starts_with("HTTP/1.1 403"), "{patterns:?}: {answer}");
        }
        // A listed name that resolves to a private address (as one whose DNS a tenant controls
        // could) is refused: only an IP address named exactly reaches private space.
        let by_name = format!("localhost:{}", origin.port());
        let (proxy, _h) = start(task(&[by_name.as_str()], None));
        let answer = send(proxy, &get(&format!("http://{by_name}/path"), "")).await;
        assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
        assert_eq!(
            seen.load(Ordering::SeqCst),
            1,
            "refused requests reached the origin"
        );
    }

    #[tokio::test]
    async fn connect_tunnels_bytes_to_listed_targets() {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = echo.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        let connect = format!("CONNECT {target} HTTP/1.1\r\nhost: {target}\r\n\r\n");
        let (proxy, handle) = start(task(&[&target.to_string()], None));
        let mut s = TcpStream::connect(proxy).await.unwrap();
        s.write_all(connect.as_bytes()).await.unwrap();
        let head = read_head(&mut s).await;
        assert!(
            head.starts_with("HTTP/1.1 200 Connection Established\r\n"),
            "{head}"
        );
        s.write_all(b"ping").await.unwrap();
        let mut pong = [0; 4];
        let read = tokio::time::timeout(WAIT, s.read_exact(&mut pong)).await;
        assert_eq!((read.unwrap().unwrap(), &pong), (4, b"ping"));
        // Dropping the handle ends live tunnels too, not just the accept loop.
        drop(handle);
        let read = tokio::time::timeout(WAIT, s.read(&mut pong)).await;
        assert!(
            read.expect("the tunnel outlived the proxy")
                .is_ok_and(|n| n == 0)
        );

        let (proxy, _h) = start(task(&["*"], None));
        assert!(send(proxy, &connect).await.starts_with("HTTP/1.1 403"));
    }
}
