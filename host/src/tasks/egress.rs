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

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::http::request::Parts;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::Value;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;
use subtle::ConstantTimeEq;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

/// Connections served at once per task; more are closed on accept.
const MAX_CONNECTIONS: usize = 64;
/// A client that has not sent its request head by then is dropped (slowloris).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// For name resolution and for each TCP connect attempt.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The usage scanner's line (or non-streamed body) buffer; larger ones are skipped.
const MAX_SCAN_BYTES: usize = 1 << 20;

// ---------------------------------------------------------------------------------------------
// Policy

/// What a task may reach besides the model upstream.
#[derive(Debug, Clone, Default)]
pub struct EgressPolicy {
    rules: Vec<Rule>,
}

#[derive(Debug, Clone)]
struct Rule {
    host: HostPattern,
    /// `None`: any port.
    port: Option<u16>,
}

#[derive(Debug, Clone)]
enum HostPattern {
    /// `*`: any host (public addresses only).
    Any,
    /// `*.example.com`, stored as `example.com`: strict subdomains only.
    Subdomains(String),
    /// `example.com`, lowercased, without a trailing dot.
    Name(String),
    /// `127.0.0.1`, `::1`.
    Ip(IpAddr),
}

impl EgressPolicy {
    /// Patterns: "*" (any public host), "example.com" (that host, any port), "example.com:443",
    /// "*.example.com" (subdomains only), "127.0.0.1:8123" / "[::1]:80" (IP literals).
    pub fn new(
        patterns: impl IntoIterator<Item = impl AsRef<str>>,
    ) -> Result<EgressPolicy, String> {
        let rules = patterns
            .into_iter()
            .map(|p| parse_rule(p.as_ref()))
            .collect::<Result<_, _>>()?;
        Ok(EgressPolicy { rules })
    }

    /// Whether some pattern matches `host:port`. Connecting also needs the address check.
    pub fn allows(&self, host: &str, port: u16) -> bool {
        self.matching(host, port).is_some()
    }

    /// `None` if no pattern matches; else whether one that matches names the host's IP address
    /// itself (the only way a private address is allowed: a name is always checked after it
    /// resolves, since whoever controls its DNS could point it at the metadata service or
    /// gantry's own loopback).
    fn matching(&self, host: &str, port: u16) -> Option<bool> {
        let host = normalize_host(host);
        let ip = host.parse::<IpAddr>().ok();
        let matches = self
            .rules
            .iter()
            .filter(|r| r.port.is_none_or(|p| p == port));
        matches
            .filter_map(|rule| match &rule.host {
                HostPattern::Any => Some(false),
                HostPattern::Ip(allowed) => (ip == Some(*allowed)).then_some(true),
                HostPattern::Name(name) => (ip.is_none() && host == *name).then_some(false),
                HostPattern::Subdomains(domain) => {
                    let sub = host
                        .strip_suffix(domain.as_str())
                        .and_then(|s| s.strip_suffix('.'));
                    (ip.is_none() && sub.is_some_and(|s| !s.is_empty())).then_some(false)
                }
            })
            .reduce(|a, b| a || b)
    }
}

fn parse_rule(raw: &str) -> Result<Rule, String> {
    let bad = |why: &str| format!("egress pattern {raw:?}: {why}");
    if raw.is_empty() || raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("empty or contains whitespace"));
    }
    let (host, port) = split_host_port(raw).ok_or_else(|| bad("malformed IPv6 literal"))?;
    let port = port
        .map(|p| p.parse::<u16>().ok().filter(|p| *p != 0))
        .map(|p| p.ok_or_else(|| bad("the port is not a number from 1 to 65535")))
        .transpose()?;
    let host = parse_host_pattern(host)
        .ok_or_else(|| bad("expected \"*\", a host name, \"*.domain\" or an IP literal"))?;
    Ok(Rule { host, port })
}

/// `host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 literal (which has no port).
fn split_host_port(s: &str) -> Option<(&str, Option<&str>)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        ip.parse::<std::net::Ipv6Addr>().ok()?;
        return match after {
            "" => Some((ip, None)),
            _ => Some((ip, Some(after.strip_prefix(':')?))),
        };
    }
    if s.matches(':').count() > 1 {
        return Some((s, None));
    }
    Some(s.split_once(':').map_or((s, None), |(h, p)| (h, Some(p))))
}

fn parse_host_pattern(host: &str) -> Option<HostPattern> {
    if host == "*" {
        return Some(HostPattern::Any);
    }
    if let Ok(ip) = host.parse() {
        return Some(HostPattern::Ip(ip));
    }
    let (wildcard, name) = host.strip_prefix("*.").map_or((false, host), |n| (true, n));
    let name = normalize_host(name);
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    match (valid, wildcard) {
        (false, _) => None,
        (true, true) => Some(HostPattern::Subdomains(name)),
        (true, false) => Some(HostPattern::Name(name)),
    }
}

/// Lowercase, without IPv6 brackets or the trailing dot of a fully qualified name.
fn normalize_host(host: &str) -> String {
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}

/// Whether `ip` is on the public internet: a wildcard pattern must not lead into the host's
/// own or its LAN's services.
fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let s = v6.segments();
            if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0; 4] {
                // NAT64 reaches the IPv4 address in its low bits.
                return is_public_v4(Ipv4Addr::from(u128::from(v6) as u32));
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link local
                || (s[0] == 0x2001 && s[1] == 0x0db8)) // documentation
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0 // "this network"
        || a >= 240 // reserved
        || (a == 100 && (b & 0xc0) == 64) // CGNAT 100.64/10
        || (a == 198 && (b & 0xfe) == 18) // benchmarking 198.18/15
        || (a == 192 && b == 0 && c == 0)) // IETF protocol assignments
}

// ---------------------------------------------------------------------------------------------
// Public types

/// The model upstream of one task: where origin-form requests go, with which key.
#[derive(Clone)]
pub struct ModelRoute {
    /// Base URL of the upstream, e.g. "https://api.anthropic.com" or "http://127.0.0.1:4000/v1".
    pub upstream: String,
    /// The per-task token the task's CLI was given in place of the key.
    pub token: String,
    /// The real API key; `None` sends requests without one.
    pub key: Option<String>,
}

impl ModelRoute {
    /// The base URL the task's CLI is given: http://<listen addr><upstream path, without
    /// trailing slash>.
    pub fn local_base_url(&self, listen: SocketAddr) -> String {
        let path = self
            .upstream
            .parse::<Uri>()
            .map(|u| u.path().to_owned())
            .unwrap_or_default();
        format!("http://{listen}{}", path.trim_end_matches('/'))
    }
}

impl ModelRoute {
    /// The upstream as an egress allowlist entry (`host:port`), or why its URL is unusable.
    pub fn egress_pattern(&self) -> Result<String, String> {
        let u = Upstream::parse(&self.upstream)?;
        Ok(if u.host.contains(':') {
            format!("[{}]:{}", u.host, u.port)
        } else {
            format!("{}:{}", u.host, u.port)
        })
    }
}

impl fmt::Debug for ModelRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModelRoute")
            .field("upstream", &self.upstream)
            .field("token", &"<redacted>")
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Token counts the model proxy saw for one task.
#[derive(Debug, Default)]
pub struct ModelUsage {
    input: AtomicU64,
    output: AtomicU64,
    requests: AtomicU64,
}

impl ModelUsage {
    /// Input (prompt) tokens over all responses so far.
    pub fn input_tokens(&self) -> u64 {
        self.input.load(Ordering::Relaxed)
    }

    /// Output (completion) tokens over all responses so far.
    pub fn output_tokens(&self) -> u64 {
        self.output.load(Ordering::Relaxed)
    }

    /// Requests the model upstream answered.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    fn add(&self, tokens: Tokens) {
        self.input.fetch_add(tokens.input, Ordering::Relaxed);
        self.output.fetch_add(tokens.output, Ordering::Relaxed);
    }
}

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

/// The parsed model upstream.
struct Upstream {
    tls: bool,
    host: String,
    port: u16,
    /// For the Host header, as the operator wrote it.
    authority: String,
}

impl Upstream {
    fn parse(url: &str) -> Result<Upstream, String> {
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("model upstream {url:?}: {e}"))?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => {
                return Err(format!(
                    "model upstream {url:?}: must be http:// or https://"
                ));
            }
        };
        let authority = uri.authority().filter(|a| !a.as_str().contains('@'));
        let authority = authority.ok_or_else(|| format!("model upstream {url:?}: needs a host"))?;
        Ok(Upstream {
            tls,
            host: normalize_host(authority.host()),
            port: authority.port_u16().unwrap_or(if tls { 443 } else { 80 }),
            authority: authority.as_str().to_owned(),
        })
    }
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
        None => model(proxy, req).await,
        Some(a) if proxy.is_self(a.host(), a.port_u16().unwrap_or(80)) => model(proxy, req).await,
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

// ---------------------------------------------------------------------------------------------
// Model proxy

async fn model(proxy: &Proxy, req: Request<Incoming>) -> Answer {
    let egress = &proxy.egress;
    let (mut parts, body) = req.into_parts();
    // The path only: the query may carry the token.
    let path = parts.uri.path().to_owned();
    let method = parts.method.clone();
    let answer = match (&egress.model, &proxy.upstream) {
        (Some(route), Some(upstream)) => {
            strip_hop_by_hop(&mut parts.headers);
            if swap_token(&mut parts, route) {
                to_upstream(egress, upstream, parts, body).await
            } else {
                text(StatusCode::UNAUTHORIZED, "missing or wrong model token")
            }
        }
        _ => text(StatusCode::NOT_FOUND, "this task has no model upstream"),
    };
    let status = answer.status().as_u16();
    tracing::info!(tenant = %egress.tenant, task = %egress.task, backend = %egress.backend, %method, %path, status, "model proxy");
    answer
}

async fn to_upstream(
    egress: &Arc<TaskEgress>,
    up: &Upstream,
    mut parts: Parts,
    body: Incoming,
) -> Answer {
    parts.uri = origin_form(&parts.uri);
    if let Ok(host) = HeaderValue::from_str(&up.authority) {
        parts.headers.insert(header::HOST, host);
    }
    // Compressed responses would hide the usage figures from the scanner.
    parts.headers.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    let req = Request::from_parts(parts, body);
    match upstream_exchange(up, req).await {
        Ok((response, conn)) => {
            egress.usage.requests.fetch_add(1, Ordering::Relaxed);
            let sse = response
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("text/event-stream"));
            relay(
                response,
                conn,
                Some((UsageScanner::new(sse), egress.clone())),
            )
        }
        Err(e) => {
            tracing::warn!(task = %egress.task, upstream = %up.authority, "model upstream failed: {e}");
            text(StatusCode::BAD_GATEWAY, "model upstream unreachable")
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn upstream_exchange(
    up: &Upstream,
    req: Request<Incoming>,
) -> Result<(Response<Incoming>, AbortOnDrop), BoxError> {
    let stream = connect_any(&resolve(&up.host, up.port).await?).await?;
    if !up.tls {
        return Ok(exchange(stream, req).await?);
    }
    let name = ServerName::try_from(up.host.clone())?;
    let tls =
        tokio::time::timeout(CONNECT_TIMEOUT, tls_connector().connect(name, stream)).await??;
    Ok(exchange(tls, req).await?)
}

fn tls_connector() -> &'static TlsConnector {
    static TLS: OnceLock<TlsConnector> = OnceLock::new();
    TLS.get_or_init(|| {
        // Named explicitly: the process-wide default provider is ambiguous when several are built.
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        TlsConnector::from(Arc::new(config))
    })
}

/// Finds the task's token wherever the CLI's SDK put it and swaps in the real key there, or
/// removes it if there is no key, so that the token never goes upstream. False if absent.
fn swap_token(parts: &mut Parts, route: &ModelRoute) -> bool {
    let token = route.token.as_bytes();
    let mut found = false;
    for (name, prefix) in [
        ("x-api-key", ""),
        ("x-goog-api-key", ""),
        ("authorization", "Bearer "),
    ] {
        let Some(value) = parts.headers.get(name) else {
            continue;
        };
        let (head, given) = value.as_bytes().split_at(prefix.len().min(value.len()));
        if !head.eq_ignore_ascii_case(prefix.as_bytes()) || !ct_eq(given, token) {
            continue;
        }
        found = true;
        let real = route
            .key
            .as_ref()
            .and_then(|k| HeaderValue::from_str(&format!("{prefix}{k}")).ok());
        match real {
            Some(mut value) => {
                value.set_sensitive(true);
                parts.headers.insert(name, value);
            }
            None => drop(parts.headers.remove(name)),
        }
    }
    let swapped = parts
        .uri
        .query()
        .and_then(|q| swap_query_key(q, token, route.key.as_deref()));
    if let Some(query) = swapped {
        let sep = if query.is_empty() { "" } else { "?" };
        match format!("{}{sep}{query}", parts.uri.path()).parse() {
            Ok(uri) => (parts.uri, found) = (uri, true),
            Err(_) => return false,
        }
    }
    found
}

/// Gemini style `?key=`: the query with the token replaced (or removed), if it was there.
fn swap_query_key(query: &str, token: &[u8], key: Option<&str>) -> Option<String> {
    let mut found = false;
    let pairs: Vec<String> = query
        .split('&')
        .filter_map(|pair| match pair.strip_prefix("key=") {
            Some(given) if ct_eq(given.as_bytes(), token) => {
                found = true;
                key.map(|k| format!("key={}", percent_encode(k)))
            }
            _ => Some(pair.to_owned()),
        })
        .collect();
    found.then(|| pairs.join("&"))
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// HTTP plumbing

/// One request on a fresh HTTP/1.1 client connection; the guard ends that connection.
async fn exchange<I>(
    io: I,
    req: Request<Incoming>,
) -> hyper::Result<(Response<Incoming>, AbortOnDrop)>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    let conn = AbortOnDrop(tokio::spawn(async move {
        let _ = conn.await;
    }));
    let response = sender.send_request(req).await?;
    Ok((response, conn))
}

fn relay(
    response: Response<Incoming>,
    conn: AbortOnDrop,
    scan: Option<(UsageScanner, Arc<TaskEgress>)>,
) -> Answer {
    let (mut parts, inner) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let body = Relayed {
        inner,
        scan,
        _conn: conn,
    };
    Response::from_parts(parts, body.boxed_unsync())
}

/// Headers for one hop only, those the client named in `Connection`, and `Proxy-*`.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    let proxy: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("proxy-"))
        .cloned()
        .collect();
    for name in named.into_iter().chain(proxy) {
        headers.remove(name);
    }
    for name in "connection keep-alive te trailer transfer-encoding upgrade".split(' ') {
        headers.remove(name);
    }
}

fn origin_form(uri: &Uri) -> Uri {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    path.parse().unwrap_or_else(|_| Uri::from_static("/"))
}

fn text(status: StatusCode, message: &str) -> Answer {
    let mut answer = Response::new(full(format!("{message}\n")));
    *answer.status_mut() = status;
    let headers = answer.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    answer
}

fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    let body = Full::new(bytes.into());
    body.map_err(|never| match never {}).boxed_unsync()
}

/// A response body on its way back, scanned for usage if it comes from the model upstream.
struct Relayed {
    inner: Incoming,
    scan: Option<(UsageScanner, Arc<TaskEgress>)>,
    _conn: AbortOnDrop,
}

impl Relayed {
    /// Counts once: at the end of the body, or when a cut-short body is dropped.
    fn finish(&mut self) {
        if let Some((scanner, egress)) = self.scan.take() {
            egress.usage.add(scanner.finish());
        }
    }
}

impl Body for Relayed {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let (Some(data), Some((scanner, _))) = (frame.data_ref(), this.scan.as_mut()) {
                    scanner.feed(data);
                }
                if this.inner.is_end_stream() {
                    this.finish();
                }
            }
            _ => this.finish(),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Relayed {
    fn drop(&mut self) {
        self.finish();
    }
}

// ---------------------------------------------------------------------------------------------
// Usage scanning

#[derive(Debug, Default, Clone, Copy)]
struct Tokens {
    input: u64,
    output: u64,
}

/// Reads usage off one response. Server-sent events are parsed line by line; anything else
/// as one JSON document (Gemini's are pretty-printed over many lines). Streams repeat usage
/// cumulatively (Anthropic's `message_delta`, every Gemini chunk), so a response counts the
/// largest figure it showed for each side, never their sum.
#[derive(Debug)]
struct UsageScanner {
    sse: bool,
    buf: Vec<u8>,
    /// The current line outgrew the buffer: skip it up to its end.
    overflowed: bool,
    seen: Tokens,
}

impl UsageScanner {
    fn new(sse: bool) -> UsageScanner {
        UsageScanner {
            sse,
            buf: Vec::new(),
            overflowed: false,
            seen: Tokens::default(),
        }
    }

    fn feed(&mut self, mut data: &[u8]) {
        while self.sse {
            let Some(i) = data.iter().position(|&b| b == b'\n') else {
                break;
            };
            self.push(&data[..i]);
            let line = std::mem::take(&mut self.buf);
            if !self.overflowed {
                self.line(&line);
            }
            (self.buf, self.overflowed) = (line, false);
            self.buf.clear();
            data = &data[i + 1..];
        }
        self.push(data);
    }

    fn push(&mut self, data: &[u8]) {
        if self.overflowed {
            return;
        }
        if self.buf.len() + data.len() > MAX_SCAN_BYTES {
            (self.buf, self.overflowed) = (Vec::new(), true);
        } else {
            self.buf.extend_from_slice(data);
        }
    }

    fn finish(mut self) -> Tokens {
        if !self.overflowed {
            let rest = std::mem::take(&mut self.buf);
            self.line(&rest);
        }
        self.seen
    }

    fn line(&mut self, line: &[u8]) {
        let json = line.strip_prefix(b"data:").unwrap_or(line).trim_ascii();
        if !matches!(json.first(), Some(b'{' | b'[')) {
            return;
        }
        if let Ok(value) = serde_json::from_slice::<Value>(json) {
            self.observe(&value);
        }
    }

    fn observe(&mut self, v: &Value) {
        if let Value::Array(items) = v {
            for item in items {
                self.observe(item);
            }
            return;
        }
        // Anthropic and OpenAI (top level, Anthropic's `message_start`, OpenAI Responses'
        // `response.completed`), with chat-completions' names as a fallback.
        for usage in [&v["usage"], &v["message"]["usage"], &v["response"]["usage"]] {
            let input = usage["input_tokens"]
                .as_u64()
                .or(usage["prompt_tokens"].as_u64());
            let output = usage["output_tokens"]
                .as_u64()
                .or(usage["completion_tokens"].as_u64());
            self.take(input, output);
        }
        let gemini = &v["usageMetadata"];
        self.take(
            gemini["promptTokenCount"].as_u64(),
            gemini["candidatesTokenCount"].as_u64(),
        );
    }

    fn take(&mut self, input: Option<u64>, output: Option<u64>) {
        self.seen.input = self.seen.input.max(input.unwrap_or(0));
        self.seen.output = self.seen.output.max(output.unwrap_or(0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    const TOKEN: &str = "tok-123";
    const KEY: &str = "real-key-456";
    const WAIT: Duration = Duration::from_secs(5);

    fn route(upstream: String, key: Option<&str>) -> ModelRoute {
        let (token, key) = (TOKEN.to_owned(), key.map(str::to_owned));
        ModelRoute {
            upstream,
            token,
            key,
        }
    }

    fn task(patterns: &[&str], model: Option<ModelRoute>) -> Arc<TaskEgress> {
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

    fn start(egress: Arc<TaskEgress>) -> (SocketAddr, ProxyHandle) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        (
            listener.local_addr().unwrap(),
            serve(listener, egress).unwrap(),
        )
    }

    /// `$T` and `$K` stand for the token and the key.
    fn fill(s: &str) -> String {
        s.replace("$T", TOKEN).replace("$K", KEY)
    }

    async fn read_head(s: &mut TcpStream) -> String {
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(s.read_u8().await.unwrap());
        }
        String::from_utf8(head).unwrap()
    }

    /// Reads one request (head, then a `content-length` body) and returns its head, lowercased.
    async fn read_request(s: &mut TcpStream) -> String {
        let head = read_head(s).await.to_ascii_lowercase();
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "));
        let mut body = vec![0; length.map_or(0, |n| n.parse().unwrap())];
        s.read_exact(&mut body).await.unwrap();
        head
    }

    /// An HTTP origin answering each request with its own (lowercased) head; counts them.
    async fn echo_origin() -> (SocketAddr, Arc<AtomicUsize>) {
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
                    let reply =
                        format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", head.len());
                    s.write_all((reply + &head).as_bytes()).await.unwrap();
                });
            }
        });
        (addr, seen)
    }

    /// Sends `request` and reads until the proxy closes (requests say `connection: close`).
    async fn send(proxy: SocketAddr, request: &str) -> String {
        let mut s = TcpStream::connect(proxy).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        let read = tokio::time::timeout(WAIT, s.read_to_end(&mut out)).await;
        read.expect("no answer").unwrap();
        String::from_utf8(out).unwrap()
    }

    fn get(target: &str, extra: &str) -> String {
        format!("GET {target} HTTP/1.1\r\nhost: x\r\n{extra}connection: close\r\n\r\n")
    }

    #[test]
    fn policy_rejects_malformed_patterns() {
        let bad = "a b|*.|host:notaport|host:0|[::1|[nope]:80|ex/ample|a..b|*.*.x".split('|');
        for bad in bad.chain([""]) {
            assert!(EgressPolicy::new([bad]).is_err(), "{bad:?} was accepted");
        }
        let good = "* example.com Example.COM.:443 *.example.com 127.0.0.1:8123 [::1]:80 ::1";
        EgressPolicy::new(good.split(' ')).unwrap();
    }

    #[test]
    fn policy_matches_hosts_ports_and_wildcards() {
        let p =
            EgressPolicy::new("Example.com api.test:443 *.wild.org [::1]:80 10.0.0.1".split(' '));
        let p = p.unwrap();
        assert!(p.allows("EXAMPLE.com.", 8080) && !p.allows("sub.example.com", 443));
        assert!(p.allows("api.test", 443) && !p.allows("api.test", 80));
        assert!(
            p.allows("a.b.wild.org", 1) && !p.allows("wild.org", 1) && !p.allows("xwild.org", 1)
        );
        assert!(p.allows("[::1]", 80) && p.allows("::1", 80) && !p.allows("::1", 81));
        assert!(p.allows("10.0.0.1", 22) && !p.allows("10.0.0.2", 22));
        assert_eq!(
            p.matching("x.wild.org", 1),
            Some(false),
            "a wildcard names no host"
        );
        assert_eq!(p.matching("10.0.0.1", 1), Some(true));
        assert!(
            EgressPolicy::new(["*"])
                .unwrap()
                .allows("anything.at.all", 1)
        );
        assert!(!EgressPolicy::default().allows("example.com", 443));
    }

    #[test]
    fn private_addresses_are_not_public() {
        let private = "127.0.0.1 10.1.2.3 172.16.0.1 192.168.1.1 169.254.169.254 100.64.0.1 0.0.0.0 \
            224.0.0.1 255.255.255.255 192.0.2.1 ::1 :: fd00::1 fe80::1 ff02::1 2001:db8::1 \
            ::ffff:127.0.0.1 64:ff9b::a00:1";
        for ip in private.split_whitespace() {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in "1.1.1.1 100.128.0.1 2606:4700::1111 ::ffff:8.8.8.8".split(' ') {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

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

    #[tokio::test]
    async fn model_proxy_swaps_the_token_for_the_key_where_it_was() {
        let (upstream, seen) = echo_origin().await;
        let egress = task(&[], Some(route(format!("http://{upstream}"), Some(KEY))));
        let (proxy, _h) = start(egress.clone());
        let cases = [
            (
                "/v1/messages?beta=true",
                "x-api-key: $T\r\n",
                "x-api-key: $K",
            ),
            (
                "/v1/responses",
                "authorization: Bearer $T\r\n",
                "authorization: bearer $K",
            ),
            (
                "/v1beta/m:gen",
                "x-goog-api-key: $T\r\n",
                "x-goog-api-key: $K",
            ),
            (
                "/v1beta/m:gen?alt=sse&key=$T",
                "",
                "get /v1beta/m:gen?alt=sse&key=$K ",
            ),
            // A client that sends even loopback through HTTP_PROXY.
            (
                &format!("http://{proxy}/v1/messages"),
                "x-api-key: $T\r\n",
                "x-api-key: $K",
            ),
        ];
        for (target, auth, expected) in cases {
            let answer = send(proxy, &get(&fill(target), &fill(auth))).await;
            assert!(answer.starts_with("HTTP/1.1 200"), "{target}: {answer}");
            assert!(answer.contains(&fill(expected)), "{target}: {answer}");
            assert!(answer.contains(&format!("host: {upstream}")) && !answer.contains(TOKEN));
        }
        assert_eq!(seen.load(Ordering::SeqCst), cases.len());
        assert_eq!(egress.usage.requests(), cases.len() as u64);

        // No key configured: the token is removed, not forwarded.
        let (proxy, _h) = start(task(&[], Some(route(format!("http://{upstream}"), None))));
        let answer = send(
            proxy,
            &get(&fill("/m?key=$T&x=1"), &fill("x-api-key: $T\r\n")),
        )
        .await;
        assert!(
            answer.contains("get /m?x=1 ") && !answer.contains("x-api-key"),
            "{answer}"
        );
        assert!(!answer.contains(TOKEN));
    }

    #[tokio::test]
    async fn model_proxy_refuses_a_wrong_or_missing_token() {
        let (upstream, seen) = echo_origin().await;
        let (proxy, _h) = start(task(
            &[],
            Some(route(format!("http://{upstream}"), Some(KEY))),
        ));
        let wrong = [
            "x-api-key: tok-12",
            "authorization: Bearer tok-1234",
            "authorization: $T",
        ];
        for auth in wrong
            .map(|h| fill(h) + "\r\n")
            .into_iter()
            .chain([String::new()])
        {
            let answer = send(proxy, &get("/v1/messages?key=nope", &auth)).await;
            assert!(answer.starts_with("HTTP/1.1 401"), "{auth}: {answer}");
            assert!(!answer.contains(TOKEN) && !answer.contains(KEY));
        }
        assert_eq!(seen.load(Ordering::SeqCst), 0, "the upstream saw a request");
        let (proxy, _h) = start(task(&[], None));
        let answer = send(proxy, &get("/v1/messages", "")).await;
        assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    }

    /// An upstream that sends the first event, then the rest once `go` fires.
    async fn two_part_upstream(go: tokio::sync::oneshot::Receiver<()>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let chunk = |event: &str| format!("{:x}\r\n{event}\n\n\r\n", event.len() + 2);
        let head =
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked";
        let first = r#"data: {"type":"message_start","message":{"usage":{"input_tokens":25,"output_tokens":1}}}"#;
        let first = format!("{head}\r\n\r\n{}", chunk(first));
        let delta = r#"data: {"type":"message_delta","usage":{"output_tokens":15}}"#;
        let rest = chunk(delta) + &chunk(r#"data: {"type":"message_stop"}"#) + "0\r\n\r\n";
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            read_request(&mut s).await;
            s.write_all(first.as_bytes()).await.unwrap();
            go.await.unwrap();
            s.write_all(rest.as_bytes()).await.unwrap();
        });
        addr
    }

    #[tokio::test]
    async fn model_proxy_streams_events_and_counts_usage() {
        let (go, wait) = tokio::sync::oneshot::channel();
        let upstream = two_part_upstream(wait).await;
        let egress = task(&[], Some(route(format!("http://{upstream}"), Some(KEY))));
        let (proxy, _h) = start(egress.clone());
        let mut s = TcpStream::connect(proxy).await.unwrap();
        let head = "POST /v1/messages HTTP/1.1\r\nhost: x\r\nx-api-key: $T\r\nconnection: close";
        s.write_all(fill(&format!("{head}\r\ncontent-length: 2\r\n\r\n{{}}")).as_bytes())
            .await
            .unwrap();
        let mut got = Vec::new();
        while !String::from_utf8_lossy(&got).contains("message_start") {
            let mut buf = [0; 4096];
            let read = tokio::time::timeout(WAIT, s.read(&mut buf)).await;
            let n = read.expect("the first event was held back").unwrap();
            assert!(n > 0, "closed early");
            got.extend_from_slice(&buf[..n]);
        }
        go.send(()).unwrap();
        tokio::time::timeout(WAIT, s.read_to_end(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert!(String::from_utf8_lossy(&got).contains("message_stop"));
        // The proxy counts when it sees the body end, which may be just after the client does.
        let usage = &egress.usage;
        for _ in 0..100 {
            if usage.output_tokens() > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            (
                usage.input_tokens(),
                usage.output_tokens(),
                usage.requests()
            ),
            (25, 15, 1)
        );
    }

    #[tokio::test]
    async fn unreachable_or_non_tls_upstream_is_a_bad_gateway() {
        let fake = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = fake.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = fake.accept().await {
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await;
            }
        });
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        for upstream in [format!("https://{addr}"), format!("http://{closed}")] {
            let (proxy, _h) = start(task(&[], Some(route(upstream, Some(KEY)))));
            let answer = send(proxy, &get("/v1/messages", &fill("x-api-key: $T\r\n"))).await;
            assert!(
                answer.starts_with("HTTP/1.1 502") && !answer.contains(KEY),
                "{answer}"
            );
        }
    }

    /// Feeds `payload` in 7-byte pieces, so that lines split across chunks.
    fn scan(sse: bool, payload: &str) -> (u64, u64) {
        let mut scanner = UsageScanner::new(sse);
        payload.as_bytes().chunks(7).for_each(|c| scanner.feed(c));
        let tokens = scanner.finish();
        (tokens.input, tokens.output)
    }

    #[test]
    fn usage_of_anthropic_messages() {
        let stream = concat!(
            "event: message_start\r\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",",
            "\"usage\":{\"input_tokens\":472,\"cache_read_input_tokens\":0,\"output_tokens\":2}}}\r\n\r\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{}}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":89}}\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        );
        assert_eq!(scan(true, stream), (472, 89));
        let body = r#"{"id":"m","content":[],"usage":{"input_tokens":12,"output_tokens":34}}"#;
        assert_eq!(scan(false, body), (12, 34));
    }

    #[test]
    fn usage_of_openai_responses() {
        let stream = concat!(
            "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"usage\":null}}\n\n",
            "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\"}\n\n",
            "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"usage\":",
            "{\"input_tokens\":1200,\"output_tokens\":300,\"total_tokens\":1500}}}\n\n",
        );
        assert_eq!(scan(true, stream), (1200, 300));
    }

    #[test]
    fn usage_of_gemini_streams_and_pretty_bodies() {
        let usage = |out: u64| {
            format!(
                "\"usageMetadata\": {{\"promptTokenCount\": 50, \"candidatesTokenCount\": {out}}}"
            )
        };
        let stream: String = [3, 9, 17]
            .map(|n| format!("data: {{{}}}\r\n\r\n", usage(n)))
            .concat();
        assert_eq!(scan(true, &stream), (50, 17));
        let body = format!(
            "[{{\n  \"candidates\": [],\n  {}\n}},\n{{\n  {}\n}}]",
            usage(2),
            usage(5)
        );
        assert_eq!(scan(false, &body), (50, 5));
    }

    #[test]
    fn usage_scanner_skips_oversized_lines_and_keeps_going() {
        let pad = "x".repeat(MAX_SCAN_BYTES);
        let huge = format!("data: {{\"usage\":{{\"input_tokens\":999,\"pad\":\"{pad}\"}}}}\n");
        let after = "data: {\"usage\":{\"input_tokens\":3,\"output_tokens\":4}}\n";
        assert_eq!(scan(true, &(huge.clone() + after)), (3, 4));
        assert_eq!(scan(false, &huge), (0, 0));
    }

    #[test]
    fn the_upstream_becomes_an_allowlist_entry_or_is_refused() {
        let route = |upstream: &str| ModelRoute {
            upstream: upstream.into(),
            token: "t".into(),
            key: None,
        };
        let pattern = |u: &str| route(u).egress_pattern();
        assert_eq!(
            pattern("https://API.example.com/v1").unwrap(),
            "api.example.com:443"
        );
        assert_eq!(pattern("http://127.0.0.1:4000").unwrap(), "127.0.0.1:4000");
        assert_eq!(pattern("http://[::1]/x").unwrap(), "[::1]:80");
        for bad in [
            "ftp://example.com",
            "http://user@example.com",
            "example.com",
        ] {
            assert!(pattern(bad).is_err(), "{bad}");
        }
        // What it gives is a pattern the policy takes.
        assert!(EgressPolicy::new([pattern("http://[::1]/x").unwrap()]).is_ok());
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let model = route("https://api.example.com/v1/".into(), Some(KEY));
        let listen: SocketAddr = "127.0.0.1:9000".parse().unwrap();
        assert_eq!(model.local_base_url(listen), "http://127.0.0.1:9000/v1");
        let bare = route("http://h:1".into(), None);
        assert_eq!(bare.local_base_url(listen), "http://127.0.0.1:9000");
        let egress = task(&["*"], Some(model.clone()));
        for shown in [format!("{model:?}"), format!("{egress:?}")] {
            assert!(shown.contains("api.example.com"), "{shown}");
            assert!(!shown.contains(TOKEN) && !shown.contains(KEY), "{shown}");
        }
    }
}
