//! The HTTP server: accept loop, routing to handler plugins, error answers, graceful drain.

pub mod auth;
pub mod conn;
pub mod limits;
pub mod router;
pub mod websocket;

use crate::config::{ConnectionLimits, WebSocketConfig};
use crate::manifest::ErrorEnvelope;
use crate::runtime::{CallFailure, GuestBody, Runtime};
use crate::tenants::{ApiKeys, TenantId};
use crate::users::Permission;
use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Incoming};
use hyper::header::{HeaderName, HeaderValue};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::collections::HashSet;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// What every request passes before a plugin sees it: connection limits, authentication, the
/// operator scope, the body size limit and the per-tenant rate limit.
#[derive(Debug)]
pub struct Gate {
    /// The API keys, by tenant.
    pub keys: ApiKeys,
    /// Body and rate limits.
    pub limits: limits::RateLimiter,
    /// Failed keys per client address.
    pub failed_auth: auth::AuthThrottle,
    /// Tenants that may call routes marked `operator` (besides `local`, without keys).
    pub operators: HashSet<TenantId>,
    /// Connection timeouts, caps and head sizes.
    pub connections: ConnectionLimits,
    /// WebSocket connections' limits.
    pub websocket: WebSocketConfig,
    /// Open WebSocket connections per user and per tenant, and per address while
    /// unauthenticated.
    pub sockets: websocket::SocketCounts,
}

impl Default for Gate {
    fn default() -> Self {
        Gate {
            keys: ApiKeys::default(),
            limits: limits::RateLimiter::new(limits::HttpLimits::default()),
            failed_auth: auth::AuthThrottle::default(),
            operators: HashSet::new(),
            connections: ConnectionLimits::default(),
            websocket: WebSocketConfig::default(),
            sockets: websocket::SocketCounts::default(),
        }
    }
}

impl Gate {
    /// Whether `tenant` may see node-wide figures: a configured operator, or the one tenant of a
    /// node without keys.
    pub fn is_operator(&self, tenant: &TenantId) -> bool {
        if self.keys.is_empty() {
            return *tenant == TenantId::local();
        }
        self.operators.contains(tenant)
    }
}

/// A request body as a plugin receives it: streamed under its deadline, or already read by the
/// gate.
pub type RequestBody = UnsyncBoxBody<Bytes, conn::RequestBodyError>;

/// Serve what `serving` holds (as a reload changes it) on `listener` until `shutdown`
/// resolves, then stop accepting and give in-flight requests up to `grace` to finish.
pub async fn serve(
    listener: TcpListener,
    serving: Arc<Serving>,
    gate: Arc<Gate>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> Result<()> {
    let graceful = GracefulShutdown::new();
    let limits = gate.connections;
    let timeouts = conn::Timeouts::of(&limits);
    let counts = conn::ConnectionCounts::new(limits.max_connections_per_address);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // The connection's watchdog times heads and idleness (`conn`); hyper's own header timer
    // would bound a kept-alive connection's idle time by the header timeout.
    builder
        .http1()
        .header_read_timeout(Option::<Duration>::None)
        .max_buf_size(limits.read_buffer_bytes);
    builder
        .http2()
        .max_header_list_size(u32::try_from(limits.read_buffer_bytes).unwrap_or(u32::MAX));
    // A connection over its address's cap is answered once, and needs no large heads for that.
    let mut refusing = builder.clone();
    refusing.http1().keep_alive(false).max_buf_size(8192);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of descriptors and the like: keep serving those we have.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let (slot, refused) = match counts.admit(peer.ip()) {
                    conn::Admission::Serve(slot) => (slot, false),
                    conn::Admission::Refuse(slot) => (slot, true),
                    conn::Admission::Close => {
                        tracing::debug!(%peer, "connection closed: far over its address's cap");
                        continue;
                    }
                };
                // A streamed answer goes out in several writes (head, chunks, end); with
                // Nagle's algorithm on, a write after the first waits for the client's delayed
                // ACK, which stalled about one request in a hundred for up to 40 ms.
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!(%peer, "TCP_NODELAY not set: {e}");
                }
                // Shared with a WebSocket the connection may become, which outlives it.
                let slot = conn::HeldConnection::new(slot);
                let activity = conn::Activity::new(tokio::time::Instant::now());
                let serving = serving.clone();
                let gate = gate.clone();
                let watched = activity.clone();
                let held = slot.clone();
                let service = service_fn(move |mut req: Request<Incoming>| {
                    let in_flight = watched.request_started();
                    req.extensions_mut().insert(held.clone());
                    // Each request, not each connection, takes the version serving now, and
                    // keeps it to its end (a stream or a WebSocket to theirs).
                    let site = serving.current();
                    let gate = gate.clone();
                    // Boxed: hyper keeps the space for a connection's request future for the
                    // connection's life, and this one (the whole call into a component) is
                    // kilobytes, which every idle keep-alive connection and stream would hold.
                    Box::pin(async move {
                        let (runtime, router) = (&site.runtime, &site.router);
                        let answer = if refused {
                            too_many_connections(runtime, router, &req)
                        } else {
                            dispatch(runtime, router, &gate, peer.ip(), req).await
                        };
                        let answer = answer.map(|body| conn::Answering::new(body, in_flight));
                        Ok::<_, Infallible>(answer)
                    })
                });
                let io = TokioIo::new(conn::WatchedIo::new(stream, activity.clone()));
                let serving = if refused { &refusing } else { &builder };
                // With upgrades: a `websocket = true` route takes the connection over.
                let conn = serving.serve_connection_with_upgrades(io, service).into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    let _slot = slot;
                    tokio::select! {
                        ended = conn => if let Err(e) = ended {
                            tracing::debug!(%peer, "connection ended: {e}");
                        },
                        () = activity.expired(&timeouts) => {
                            tracing::debug!(%peer, "connection closed: a request's head was too slow, or it idled too long");
                        }
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!("shutting down: draining in-flight requests");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections drained"),
        () = tokio::time::sleep(grace) => {
            tracing::warn!("shutdown grace period of {} ms over; closing open connections", grace.as_millis());
        }
    }
    Ok(())
}

/// One version of what serves requests: the route table of a set of plugins and the
/// runtime that calls them, swapped together by a reload.
#[derive(Debug)]
pub struct Site {
    router: router::Router,
    runtime: Arc<Runtime>,
}

/// What serves requests now; [`Serving::replace`] swaps in the next version atomically.
#[derive(Debug)]
pub struct Serving {
    current: arc_swap::ArcSwap<Site>,
}

impl Serving {
    /// Serve `runtime`'s plugins; an error when their routes conflict.
    pub fn new(runtime: Arc<Runtime>) -> Result<Serving> {
        let router = router::Router::for_plugins(runtime.plugins().plugins())?;
        Ok(Serving {
            current: arc_swap::ArcSwap::from_pointee(Site { router, runtime }),
        })
    }

    /// Serve `runtime`'s plugins from the next request on. Their routes are checked first: on
    /// an error nothing changes. Requests already started finish on the version they took.
    pub fn replace(&self, runtime: Arc<Runtime>) -> Result<()> {
        let router = router::Router::for_plugins(runtime.plugins().plugins())?;
        self.current.store(Arc::new(Site { router, runtime }));
        Ok(())
    }

    /// The version serving now.
    pub fn current(&self) -> Arc<Site> {
        self.current.load_full()
    }
}

/// Bind `addr`, returning the listener and the address actually bound (port 0 picks one).
pub async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

/// Whether request spans go anywhere (an OTLP exporter is configured); set once at start.
pub static SPANS_EXPORTED: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

tokio::task_local! {
    /// The request id of the request being answered, on routes in the `webui` envelope: every
    /// answer the host writes for it carries the id in `meta.request_id`, without threading it
    /// through each early return.
    static REQUEST_ID: Option<String>;
}

/// The longest `X-Request-ID` taken from a request; a longer or odd one is replaced.
const MAX_REQUEST_ID: usize = 128;

/// The request's `X-Request-ID` when it is a sane token (letters, digits, `-`, `_`, `.`, `:`),
/// else a fresh UUID.
fn request_id(headers: &hyper::HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|id| {
            !id.is_empty()
                && id.len() <= MAX_REQUEST_ID
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
        })
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_string)
}

async fn dispatch(
    runtime: &Arc<Runtime>,
    router: &router::Router,
    gate: &Arc<Gate>,
    client: std::net::IpAddr,
    mut req: Request<Incoming>,
) -> Response<GuestBody> {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let target = router.lookup(&path).cloned();
    let envelope = target.as_ref().map(|t| t.errors).unwrap_or_default();
    let route = target
        .as_ref()
        .map_or(crate::metrics::UNROUTED, |t| t.pattern.as_str());
    // The route pattern, never the path, query or headers: those may carry what a tenant keeps
    // to itself. `otel.*` fields name and mark the span when it is exported over OTLP. Without
    // an exporter there is no span: recording its fields for the log alone cost 9 % of
    // `/health`'s throughput.
    let span = if !SPANS_EXPORTED.load(std::sync::atomic::Ordering::Relaxed) {
        tracing::Span::none()
    } else {
        tracing::info_span!(
        "http.request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = route,
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        )
    };
    // On the `webui` envelope's routes, the handler sees the id it must answer with, and the
    // answer carries it whoever wrote it.
    let id = (envelope == ErrorEnvelope::Webui).then(|| {
        let id = request_id(req.headers());
        if let Ok(value) = HeaderValue::from_str(&id) {
            req.headers_mut().insert("x-request-id", value);
        }
        id
    });
    let mut response = REQUEST_ID
        .scope(
            id.clone(),
            tracing::Instrument::instrument(
                gated(runtime, gate, client, target.as_ref(), envelope, req),
                span.clone(),
            ),
        )
        .await;
    if let Some(value) = id.and_then(|id| HeaderValue::from_str(&id).ok()) {
        response.headers_mut().insert("x-request-id", value);
    }
    let status = response.status().as_u16();
    // A body cut short after a 2xx head is counted as failed too.
    let metrics = runtime.services().metrics.clone();
    let failed_route = route.to_string();
    let response =
        response.map(|body| body.on_failure(move || metrics.stream_failed(&failed_route)));
    span.record("http.response.status_code", status);
    if status >= 500 {
        span.record("otel.status_code", "ERROR");
    }
    runtime
        .services()
        .metrics
        .request(route, method.as_str(), status, started.elapsed());
    tracing::debug!(%method, %path, status, elapsed_ms = started.elapsed().as_millis() as u64, "request");
    response
}

async fn gated(
    runtime: &Arc<Runtime>,
    gate: &Arc<Gate>,
    client: std::net::IpAddr,
    target: Option<&router::RouteTarget>,
    envelope: ErrorEnvelope,
    mut req: Request<Incoming>,
) -> Response<GuestBody> {
    // Its head is in: the body is due within its own timeout from now.
    let head_read = tokio::time::Instant::now();
    let max_head = gate.connections.max_header_bytes;
    if head_size(&req) > max_head {
        let message = format!("the request's headers are larger than {max_head} bytes");
        return error_response(
            envelope,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            &message,
            None,
        );
    }
    let authenticated = match target.filter(|t| t.user_auth) {
        Some(target) => {
            let users = &runtime.services().users;
            let headers = req.headers();
            auth::authenticate_user(
                &gate.keys,
                &gate.failed_auth,
                users,
                client,
                target,
                headers,
            )
            .await
        }
        None => auth::authenticate(&gate.keys, &gate.failed_auth, client, target, req.headers())
            .map(|tenant| (tenant, None)),
    };
    let path = req.uri().path();
    let (tenant, user) = match authenticated {
        Ok(caller) => caller,
        Err(auth::Refusal::Unauthorized(message)) => return unauthorized(envelope, message),
        Err(auth::Refusal::TokenMissing) => {
            let message = "an access token is required: send Authorization: Bearer TOKEN \
                           (from POST /api/auth/login) or an API key";
            return refused_token(envelope, "AUTH_TOKEN_MISSING", message);
        }
        Err(auth::Refusal::TokenInvalid) => {
            let message = "the access token is invalid, expired or revoked; log in again";
            return refused_token(envelope, "AUTH_TOKEN_INVALID", message);
        }
        Err(auth::Refusal::AccountDisabled) => {
            let message = "the account is disabled";
            return refused_token(envelope, "AUTH_ACCOUNT_DISABLED", message);
        }
        Err(auth::Refusal::Unavailable) => {
            let message = "credentials could not be checked now; retry shortly";
            let mut response = error_response(
                envelope,
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                message,
                None,
            );
            response
                .headers_mut()
                .insert(hyper::header::RETRY_AFTER, HeaderValue::from_static("1"));
            return response;
        }
        Err(auth::Refusal::Ambiguous) => {
            let message = "the request names more than one API key: send one, in \
                           Authorization: Bearer KEY or X-Api-Key: KEY";
            return error_response(
                envelope,
                StatusCode::BAD_REQUEST,
                "ambiguous_credentials",
                message,
                None,
            );
        }
        Err(auth::Refusal::Throttled(wait)) => {
            let message = format!("too many failed API keys from this address; retry in {wait} s");
            let mut response = error_response(
                envelope,
                StatusCode::TOO_MANY_REQUESTS,
                "auth_throttled",
                &message,
                None,
            );
            if let Ok(value) = hyper::header::HeaderValue::from_str(&wait.to_string()) {
                response
                    .headers_mut()
                    .insert(hyper::header::RETRY_AFTER, value);
            }
            return response;
        }
    };
    // A plugin that cannot tell users apart acts for the whole tenant: a user's token there is
    // worth as much as the tenant's API key, so only a user who may write and execute has it.
    if let (Some(target), Some(who)) = (target, &user)
        && target.acts_for_tenant
        && !who.service
        && !(who.may(Permission::Write) && who.may(Permission::Execute))
    {
        let message = format!(
            "{} acts for the whole tenant: a user needs the write and execute permissions here",
            target.pattern
        );
        return error_response(envelope, StatusCode::FORBIDDEN, "forbidden", &message, None);
    }
    // Every request names its host (HTTP/1.1's `Host`, HTTP/2's `:authority`): handlers see
    // it as the request's authority.
    if req.uri().authority().is_none() && !req.headers().contains_key(hyper::header::HOST) {
        let message = "the request has no Host header";
        return error_response(
            envelope,
            StatusCode::BAD_REQUEST,
            "missing_host",
            message,
            None,
        );
    }
    // A raw dot segment is a way out of wherever a handler maps the path: refused for every
    // route, before any plugin sees it.
    if !router::is_clean_path(path) {
        let message = "the path has '.' or '..' segments";
        return error_response(envelope, StatusCode::FORBIDDEN, "bad_path", message, None);
    }
    let Some(target) = target else {
        let message = format!("no plugin serves {path}");
        return error_response(envelope, StatusCode::NOT_FOUND, "no_route", &message, None);
    };
    if target.operator && !gate.is_operator(&tenant) {
        let message = format!("{path} is for the node's operators only");
        return error_response(
            envelope,
            StatusCode::FORBIDDEN,
            "operator_only",
            &message,
            None,
        );
    }
    let now = Instant::now();
    let tenant_rate = gate.limits.check(&tenant, client, now);
    // A user_auth route has budgets per user too (the Web UI API's): a refusal of either
    // refuses, and its answers tell the user's budget. The tenant's key on a plugin that acts
    // for the whole tenant (`/v1`, `/api/v1`) is held to the tenant's budget alone, as before
    // those routes took users' tokens.
    let tenant_key_on_tenant_api =
        target.acts_for_tenant && user.as_ref().is_some_and(|who| who.service);
    let user_rate = (target.user_auth && !tenant_key_on_tenant_api)
        .then(|| {
            let id = user.as_ref().map(|u| u.id.as_str());
            gate.limits.check_user(id, client, now)
        })
        .flatten();
    let rate = match (tenant_rate, user_rate) {
        (Some(t), _) if !t.allowed => Some(t),
        (_, Some(u)) => Some(u),
        (t, None) => t,
    };
    if let Some(decision) = rate.filter(|d| !d.allowed) {
        let message = format!(
            "more than {} requests a minute; retry in {} s",
            decision.limit, decision.retry_after_secs
        );
        // The Web UI API's document says what a 429 carries: the limit, its window and when
        // the budget is whole again.
        let reset_at = std::time::SystemTime::now() + Duration::from_secs(decision.reset_secs);
        let details = serde_json::json!({
            "limit": decision.limit,
            "window": 60,
            "reset_at": rfc3339_utc(reset_at),
        });
        let mut response = error_response_with(
            envelope,
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            &message,
            None,
            details,
        );
        rate_headers(&mut response, &decision);
        return response;
    }
    if target.websocket {
        let caller = crate::runtime::Caller {
            tenant,
            user,
            client: Some(client),
        };
        return websocket_answer(runtime, gate, target, envelope, caller, req).await;
    }
    // The credentials are the host's business; plugins see the tenant instead.
    req.headers_mut().remove(hyper::header::AUTHORIZATION);
    req.headers_mut().remove("x-api-key");
    let body_timeout = conn::Timeouts::of(&gate.connections).body_read;
    let req = match limit_body(req, gate.limits.max_body(), head_read, body_timeout).await {
        Ok(req) => req,
        Err(BodyRefusal::TimedOut(message)) => {
            let mut response = error_response(
                envelope,
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                &message,
                None,
            );
            // What is left of the body would be read as the next request.
            response
                .headers_mut()
                .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
            return response;
        }
        Err(BodyRefusal::TooLarge(message)) => {
            return error_response(
                envelope,
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                &message,
                None,
            );
        }
        Err(BodyRefusal::Malformed(message)) => {
            return error_response(
                envelope,
                StatusCode::BAD_REQUEST,
                "bad_body",
                &message,
                None,
            );
        }
    };
    let caller = crate::runtime::Caller {
        tenant,
        user,
        client: Some(client),
    };
    let mut response = match runtime
        .handle(&target.plugin, target.timeout, &caller, req)
        .await
    {
        Ok(response) => response,
        Err(failure) => failure_response(envelope, &failure, &target.plugin),
    };
    if let Some(decision) = &rate {
        rate_headers(&mut response, decision);
    }
    response
}

/// A request on a `websocket = true` route: the upgrade, or why not.
async fn websocket_answer(
    runtime: &Arc<Runtime>,
    gate: &Arc<Gate>,
    target: &router::RouteTarget,
    envelope: ErrorEnvelope,
    caller: crate::runtime::Caller,
    req: Request<Incoming>,
) -> Response<GuestBody> {
    if !websocket::is_upgrade(req.method(), req.headers()) {
        let message = format!(
            "{} is a WebSocket endpoint: connect with GET and Upgrade: websocket",
            target.pattern
        );
        let mut response = error_response(
            envelope,
            StatusCode::UPGRADE_REQUIRED,
            "upgrade_required",
            &message,
            None,
        );
        response.headers_mut().insert(
            hyper::header::UPGRADE,
            HeaderValue::from_static("websocket"),
        );
        return response;
    }
    match websocket::upgrade(runtime, gate, target, caller, req).await {
        Ok(response) => response,
        Err(websocket::Refused::TokenInUrl) => error_response(
            envelope,
            StatusCode::BAD_REQUEST,
            "token_in_url",
            "credentials never go in a URL (logs and histories keep it): connect without \
             them and send {\"type\":\"authenticate\",\"token\":…} as the first message",
            None,
        ),
        Err(websocket::Refused::TooManyUnauthenticated(cap)) => {
            let message = format!(
                "this address has {cap} WebSocket connections that have not authenticated yet; \
                 authenticate those, or close them"
            );
            let mut response = error_response(
                envelope,
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_unauthenticated",
                &message,
                None,
            );
            response
                .headers_mut()
                .insert(hyper::header::RETRY_AFTER, HeaderValue::from_static("1"));
            response
        }
        Err(websocket::Refused::BadRequest(code, message)) => {
            error_response(envelope, StatusCode::BAD_REQUEST, code, &message, None)
        }
        Err(websocket::Refused::Failed(failure)) => {
            failure_response(envelope, &failure, &target.plugin)
        }
    }
}

/// Why a request body was refused.
enum BodyRefusal {
    /// Over the limit (413).
    TooLarge(String),
    /// Not a valid body: bad chunk framing and the like (400).
    Malformed(String),
    /// Not all there by its deadline (408).
    TimedOut(String),
}

/// Refuse a body over `max` bytes: at once when its length is declared, else by reading it
/// (chunked bodies have no length; up to `max` bytes are held) so that a handler that never
/// reads its body cannot let an oversized one through. Either way the body is due `timeout`
/// after `head_read`: a body read here that is late is refused; one a handler reads fails.
async fn limit_body(
    req: Request<Incoming>,
    max: u64,
    head_read: tokio::time::Instant,
    timeout: Option<Duration>,
) -> Result<Request<RequestBody>, BodyRefusal> {
    let too_large =
        || BodyRefusal::TooLarge(format!("the request body is larger than {max} bytes"));
    let (parts, body) = req.into_parts();
    let body = conn::DeadlineBody::new(body, head_read, timeout);
    if let Some(declared) = parts
        .headers
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if declared > max {
            return Err(too_large());
        }
        // hyper holds the body to its declared length.
        return Ok(Request::from_parts(parts, body.boxed_unsync()));
    }
    if body.is_end_stream() {
        return Ok(Request::from_parts(parts, body.boxed_unsync()));
    }
    let limit = usize::try_from(max).unwrap_or(usize::MAX);
    let bytes = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return Err(too_large()),
        Err(e)
            if e.downcast_ref::<conn::RequestBodyError>()
                .is_some_and(|e| matches!(e, conn::RequestBodyError::TimedOut(_))) =>
        {
            return Err(BodyRefusal::TimedOut(e.to_string()));
        }
        // Bad framing (a malformed chunk size); or the client went away mid-body, and then
        // whatever is answered goes nowhere.
        Err(e) => {
            let message = format!("the request body could not be read: {e}");
            return Err(BodyRefusal::Malformed(message));
        }
    };
    let body = Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync();
    Ok(Request::from_parts(parts, body))
}

/// The size of a request's head as sent in HTTP/1.1: request line and header lines.
fn head_size<B>(req: &Request<B>) -> usize {
    // "METHOD TARGET HTTP/1.1\r\n", each "name: value\r\n", and the blank line.
    let target = req.uri().path_and_query().map_or(1, |p| p.as_str().len());
    let line = req.method().as_str().len() + 1 + target + 11;
    let headers: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + 2 + value.len() + 2)
        .sum();
    line + headers + 2
}

/// The one answer of a connection over its address's cap: 503 in the route's envelope, and the
/// connection closes.
fn too_many_connections<B>(
    runtime: &Runtime,
    router: &router::Router,
    req: &Request<B>,
) -> Response<GuestBody> {
    let target = router.lookup(req.uri().path());
    let envelope = target.map(|t| t.errors).unwrap_or_default();
    let route = target.map_or(crate::metrics::UNROUTED, |t| t.pattern.as_str());
    let message = "too many connections from this address; retry on one of those open";
    let mut response = error_response(
        envelope,
        StatusCode::SERVICE_UNAVAILABLE,
        "too_many_connections",
        message,
        None,
    );
    let headers = response.headers_mut();
    headers.insert(hyper::header::RETRY_AFTER, HeaderValue::from_static("1"));
    headers.insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
    let status = response.status().as_u16();
    runtime
        .services()
        .metrics
        .request(route, req.method().as_str(), status, Duration::ZERO);
    response
}

fn rate_headers(response: &mut Response<GuestBody>, d: &limits::RateDecision) {
    let headers = response.headers_mut();
    let mut set = |name: &'static str, value: u64| {
        headers.insert(HeaderName::from_static(name), HeaderValue::from(value));
    };
    set("x-ratelimit-limit", u64::from(d.limit));
    set("x-ratelimit-remaining", u64::from(d.remaining));
    set("x-ratelimit-reset", d.reset_secs);
    set("x-ratelimit-window", 60);
    if !d.allowed {
        set("retry-after", d.retry_after_secs);
    }
}

/// The tenant a request acts for, or the 401 that refuses it. Without configured keys every
/// request is the `local` tenant. A wrong key is refused everywhere; a missing one is fine only
/// on public routes. Unauthenticated callers learn nothing of which routes exist.
fn unauthorized(envelope: ErrorEnvelope, message: &str) -> Response<GuestBody> {
    let mut response = error_response(
        envelope,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        message,
        None,
    );
    response.headers_mut().insert(
        hyper::header::WWW_AUTHENTICATE,
        hyper::header::HeaderValue::from_static("Bearer"),
    );
    response
}

/// A 401 of a `user_auth` route: the Web UI API's code in its envelope; elsewhere (`/v1`,
/// `/api/v1`, which take users' tokens too) the API's own `unauthorized`.
fn refused_token(envelope: ErrorEnvelope, code: &str, message: &str) -> Response<GuestBody> {
    let code = match envelope {
        ErrorEnvelope::Webui => code,
        _ => "unauthorized",
    };
    let mut response = error_response(envelope, StatusCode::UNAUTHORIZED, code, message, None);
    response.headers_mut().insert(
        hyper::header::WWW_AUTHENTICATE,
        hyper::header::HeaderValue::from_static("Bearer"),
    );
    response
}

/// The `webui` envelope's code for one of the host's own: the document's where it has one.
fn webui_code(code: &str) -> String {
    match code {
        "unauthorized" => "AUTH_TOKEN_INVALID".into(),
        "rate_limited" | "auth_throttled" => "RATE_LIMIT_EXCEEDED".into(),
        "operator_only" => "AUTH_INSUFFICIENT_PERMISSIONS".into(),
        "no_route" => "RESOURCE_NOT_FOUND".into(),
        "over_capacity" => "SYSTEM_OVERLOADED".into(),
        "store_unavailable" => "DATABASE_ERROR".into(),
        // The document's codes are upper case; the host's own become so.
        other => other.to_ascii_uppercase(),
    }
}

fn failure_response(
    envelope: ErrorEnvelope,
    failure: &CallFailure,
    plugin: &str,
) -> Response<GuestBody> {
    let status =
        StatusCode::from_u16(failure.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let message = failure.message();
    let mut response = error_response(envelope, status, failure.code(), &message, Some(plugin));
    if matches!(failure, CallFailure::OverCapacity) {
        response.headers_mut().insert(
            hyper::header::RETRY_AFTER,
            hyper::header::HeaderValue::from_static("1"),
        );
    }
    response
}

/// An error the host answers itself, in the route's envelope: gantry's
/// `{"error": {"code", "message", "plugin"?}}`, the flat `{"error": code, "message"}`, CLK's
/// `{"ok": false, "error": {"code", "message"}}`, or the Web UI API's
/// `{"data": null, "error": {"code", "message", "details"}, "meta": {…}}`.
pub fn error_response(
    envelope: ErrorEnvelope,
    status: StatusCode,
    code: &str,
    message: &str,
    plugin: Option<&str>,
) -> Response<GuestBody> {
    error_response_with(
        envelope,
        status,
        code,
        message,
        plugin,
        serde_json::json!({}),
    )
}

/// [`error_response`] with `details`, which only the `webui` envelope has room for.
fn error_response_with(
    envelope: ErrorEnvelope,
    status: StatusCode,
    code: &str,
    message: &str,
    plugin: Option<&str>,
    details: serde_json::Value,
) -> Response<GuestBody> {
    let value = match envelope {
        ErrorEnvelope::Gantry => {
            let mut error = serde_json::json!({ "code": code, "message": message });
            if let Some(plugin) = plugin {
                error["plugin"] = plugin.into();
            }
            serde_json::json!({ "error": error })
        }
        ErrorEnvelope::Flat => serde_json::json!({ "error": code, "message": message }),
        ErrorEnvelope::Clk => serde_json::json!({
            "ok": false,
            "error": { "code": code, "message": message },
        }),
        ErrorEnvelope::Webui => {
            let request_id = REQUEST_ID
                .try_with(Clone::clone)
                .ok()
                .flatten()
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
            let timestamp = rfc3339_utc(std::time::SystemTime::now());
            serde_json::json!({
                "data": null,
                "error": { "code": webui_code(code), "message": message, "details": details },
                "meta": {
                    "timestamp": timestamp,
                    "request_id": request_id,
                    "version": crate::manifest::WEBUI_API_VERSION,
                },
            })
        }
    };
    let body = serde_json::to_vec(&value).expect("JSON values serialize");
    let mut response = Response::new(GuestBody::full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

/// `at` as RFC 3339 UTC with seconds (`2025-07-30T12:00:00Z`), as the document's timestamps.
fn rfc3339_utc(at: std::time::SystemTime) -> String {
    let secs = at
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let at = std::time::UNIX_EPOCH + Duration::from_secs(1_753_876_800);
        assert_eq!(rfc3339_utc(at), "2025-07-30T12:00:00Z");
        assert_eq!(rfc3339_utc(std::time::UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn request_ids_are_taken_when_sane() {
        let mut headers = hyper::HeaderMap::new();
        headers.insert("x-request-id", HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&headers), "abc-123");
        headers.insert("x-request-id", HeaderValue::from_static("a b<script>"));
        let fresh = request_id(&headers);
        assert_eq!(fresh.len(), 36, "{fresh}");
        assert_eq!(request_id(&hyper::HeaderMap::new()).len(), 36);
    }
}
