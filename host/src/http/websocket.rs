//! WebSocket connections on routes whose manifest says `websocket = true`: the upgrade, the
//! framing (tokio-tungstenite), keepalive, size limits, backpressure and close codes are the
//! host's; what the messages mean is the plugin's (`runtime::Socket`).
//!
//! Close codes the host uses: 1001 (a peer that stopped answering pings, or shutdown), 1008
//! (over the user's or the tenant's connection cap), 1009 (a message over
//! `max_message_bytes`), 1011 (the component failed), 4401 (not authenticated in time), 4408
//! (too slow a consumer), 4410 (asked to resume from events no longer kept).

use super::Gate;
use super::auth;
use super::conn::HeldConnection;
use super::limits::client_network;
use super::router::RouteTarget;
use crate::config::WebSocketConfig;
use crate::events::Event;
use crate::runtime::{
    CallFailure, Caller, ClientMessage, ConnectionInfo, OverConnections, Runtime, Socket,
    SocketAuth, SocketHost, truncate_reason,
};
use crate::tenants::TenantId;
use crate::users::Principal;
use futures::{SinkExt, StreamExt};
use hyper::HeaderMap;
use hyper::header::HeaderValue;
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig as Framing};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// Query parameters that would put a credential in the URL (and so in logs and histories).
const TOKEN_PARAMETERS: &[&str] = &[
    "token",
    "access_token",
    "jwt",
    "api_key",
    "apikey",
    "key",
    "auth",
    "authorization",
    "bearer",
];

/// Events read from the store per round for one connection.
const EVENT_BATCH: usize = 128;

/// How long a closing connection's last frames may take (a slow consumer's close frame waits
/// behind what its socket already holds).
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Whether `headers` ask for a WebSocket upgrade (RFC 6455 4.2.1).
pub fn is_upgrade(method: &hyper::Method, headers: &HeaderMap) -> bool {
    let has_token = |name: hyper::header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    method == hyper::Method::GET
        && has_token(hyper::header::CONNECTION, "upgrade")
        && has_token(hyper::header::UPGRADE, "websocket")
}

/// Whether a query carries what looks like a credential.
pub fn token_in_query(query: Option<&str>) -> bool {
    query.is_some_and(|q| {
        form_urlencoded::parse(q.as_bytes()).any(|(name, _)| {
            TOKEN_PARAMETERS
                .iter()
                .any(|t| name.eq_ignore_ascii_case(t))
        })
    })
}

/// Open connections across the node: per user and per tenant once authenticated, per client
/// network while not yet (each holds a place among `[websocket] max_connections`, and on a
/// per-connection route an instance slot; an address that opens many and never authenticates
/// would otherwise hold them all until `auth_timeout_ms`).
#[derive(Debug, Default)]
pub struct SocketCounts {
    open: Arc<Mutex<HashMap<String, u32>>>,
}

/// One counted connection; its counts drop with it.
struct Counted {
    open: Arc<Mutex<HashMap<String, u32>>>,
    keys: Vec<String>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        for key in &self.keys {
            if let Some(n) = open.get_mut(key) {
                *n -= 1;
                if *n == 0 {
                    open.remove(key);
                }
            }
        }
    }
}

impl SocketCounts {
    /// Count one more connection of `who` and of its tenant, or say which cap it is at
    /// (counting neither).
    fn admit_user(
        &self,
        who: &Principal,
        per_user: u32,
        per_tenant: u32,
    ) -> Result<Counted, OverConnections> {
        let user = format!("user\n{}\n{}", who.tenant, who.id);
        let tenant = format!("tenant\n{}", who.tenant);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.get(&user).is_some_and(|n| *n >= per_user) {
            return Err(OverConnections::User(per_user));
        }
        if open.get(&tenant).is_some_and(|n| *n >= per_tenant) {
            return Err(OverConnections::Tenant(per_tenant));
        }
        Ok(self.count(&mut open, vec![user, tenant]))
    }

    /// Count one more connection from `client` that has not authenticated yet, or the cap.
    fn admit_unauthenticated(&self, client: IpAddr, cap: u32) -> Result<Counted, u32> {
        let key = format!("address\n{}", client_network(client));
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.get(&key).is_some_and(|n| *n >= cap) {
            return Err(cap);
        }
        Ok(self.count(&mut open, vec![key]))
    }

    fn count(&self, open: &mut HashMap<String, u32>, keys: Vec<String>) -> Counted {
        for key in &keys {
            *open.entry(key.clone()).or_default() += 1;
        }
        Counted {
            open: self.open.clone(),
            keys,
        }
    }
}

/// A connection's token, checked as a request's bearer credential would be on the route.
struct RouteAuth {
    runtime: Arc<Runtime>,
    gate: Arc<Gate>,
    target: RouteTarget,
    client: IpAddr,
    /// The connection's place among its address's unauthenticated ones, given up once a
    /// user is admitted.
    unauthenticated: Mutex<Option<Counted>>,
}

#[async_trait::async_trait]
impl SocketAuth for RouteAuth {
    async fn authenticate(&self, token: &str) -> Result<(TenantId, Principal), String> {
        let mut headers = HeaderMap::new();
        let value = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| "the token has characters no token has".to_string())?;
        headers.insert(hyper::header::AUTHORIZATION, value);
        // The route is public for the upgrade alone: the token must name a caller.
        let target = RouteTarget {
            public: false,
            ..self.target.clone()
        };
        let refused = |message: &str| message.to_string();
        match auth::authenticate_user(
            &self.gate.keys,
            &self.gate.failed_auth,
            &self.runtime.services().users,
            self.client,
            &target,
            &headers,
        )
        .await
        {
            Ok((tenant, Some(user))) => Ok((tenant, user)),
            Ok((_, None)) => Err(refused("the token names no user")),
            Err(auth::Refusal::TokenInvalid | auth::Refusal::Unauthorized(_)) => Err(refused(
                "the token is invalid, expired or revoked; log in again",
            )),
            Err(auth::Refusal::AccountDisabled) => Err(refused("the account is disabled")),
            Err(auth::Refusal::Throttled(wait)) => Err(format!(
                "too many failed API keys from this address; retry in {wait} s"
            )),
            Err(_) => Err(refused(
                "credentials could not be checked now; retry shortly",
            )),
        }
    }

    fn admit(&self, who: &Principal) -> Result<Box<dyn Send + Sync>, OverConnections> {
        // Authenticated: no longer one of its address's unauthenticated connections.
        drop(
            self.unauthenticated
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take(),
        );
        let config = &self.gate.websocket;
        self.gate
            .sockets
            .admit_user(
                who,
                config.max_connections_per_user,
                config.max_connections_per_tenant,
            )
            .map(|c| Box::new(c) as Box<dyn Send + Sync>)
    }
}

/// The framing limits of one connection: whole messages up to `max_message_bytes`, small
/// buffers (an idle connection should cost little).
fn framing(config: &WebSocketConfig) -> Framing {
    Framing::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(Some(config.max_message_bytes))
        .max_frame_size(Some(config.max_message_bytes))
}

/// Why the upgrade was not done; the caller answers with it.
#[derive(Debug)]
pub enum Refused {
    /// Not a valid upgrade request (400).
    BadRequest(&'static str, String),
    /// A credential in the URL (400).
    TokenInUrl,
    /// The client's address has this many connections not yet authenticated (429).
    TooManyUnauthenticated(u32),
    /// Over the node's connections, or the plugin failed to open one (503 / 500).
    Failed(CallFailure),
}

/// Answer an upgrade request on a `websocket = true` route: open the connection (its instance,
/// or its first one on a per-call route, for `on-open`), then switch protocols and serve it
/// in the background.
pub async fn upgrade(
    runtime: &Arc<Runtime>,
    gate: &Arc<Gate>,
    target: &RouteTarget,
    caller: Caller,
    mut req: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<crate::runtime::GuestBody>, Refused> {
    if token_in_query(req.uri().query()) {
        return Err(Refused::TokenInUrl);
    }
    let key = req
        .headers()
        .get(hyper::header::SEC_WEBSOCKET_KEY)
        .map(|k| k.as_bytes().to_vec());
    let version_ok = req
        .headers()
        .get(hyper::header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v == "13");
    let Some(key) = key.filter(|_| version_ok) else {
        return Err(Refused::BadRequest(
            "bad_upgrade",
            "a WebSocket upgrade needs Sec-WebSocket-Key and Sec-WebSocket-Version: 13".into(),
        ));
    };
    let config = gate.websocket.clone();
    let client = caller.client.unwrap_or(IpAddr::from([0, 0, 0, 0]));
    // Counted before an instance or a connection's place is taken for it.
    let unauthenticated = gate
        .sockets
        .admit_unauthenticated(client, config.max_unauthenticated_per_address)
        .map_err(Refused::TooManyUnauthenticated)?;
    // The connection's place among its address's connections (`http::serve`), held for the
    // socket's life rather than the HTTP exchange's.
    let held = req.extensions_mut().remove::<HeldConnection>();
    let (out, queued) = mpsc::channel(config.send_queue);
    let auth = Arc::new(RouteAuth {
        runtime: runtime.clone(),
        gate: gate.clone(),
        target: target.clone(),
        client,
        unauthenticated: Mutex::new(Some(unauthenticated)),
    });
    let host = SocketHost::new(out, Duration::from_millis(config.slow_consumer_ms), auth);
    let info = ConnectionInfo {
        path: req.uri().path().to_string(),
        query: req.uri().query().map(str::to_string),
    };
    let opened = runtime
        .open_socket(
            &target.plugin,
            &caller,
            target.socket_instance,
            target.timeout,
            info,
            host,
        )
        .await
        .map_err(Refused::Failed)?;
    let on_upgrade = hyper::upgrade::on(&mut req);
    let runtime = runtime.clone();
    tokio::spawn(async move {
        let _held = held;
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!("a WebSocket upgrade did not complete: {e}");
                return;
            }
        };
        let stream = WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            Role::Server,
            Some(framing(&config)),
        )
        .await;
        let metrics = runtime.services().metrics.clone();
        metrics.websocket(1);
        match opened {
            Ok(socket) => serve(&runtime, &config, socket, stream, queued).await,
            Err((code, reason)) => refuse(stream, code, &reason).await,
        }
        metrics.websocket(-1);
    });
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(&key);
    let mut response = hyper::Response::new(crate::runtime::GuestBody::full(""));
    *response.status_mut() = hyper::StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(
        hyper::header::CONNECTION,
        HeaderValue::from_static("Upgrade"),
    );
    headers.insert(
        hyper::header::UPGRADE,
        HeaderValue::from_static("websocket"),
    );
    if let Ok(accept) = HeaderValue::from_str(&accept) {
        headers.insert(hyper::header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    Ok(response)
}

type Stream = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// A connection the component refused in `on-open`: closed at once with its code.
async fn refuse(mut stream: Stream, code: u16, reason: &str) {
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: truncate_reason(reason).into(),
    };
    let _ = tokio::time::timeout(CLOSE_GRACE, stream.close(Some(frame))).await;
}

/// Write what the component sends, then the loop's control frames; end after a close.
async fn writer(
    mut sink: futures::stream::SplitSink<Stream, Message>,
    mut texts: mpsc::Receiver<String>,
    mut control: mpsc::Receiver<Message>,
) {
    let mut texts_open = true;
    loop {
        // What the component sent goes before the loop's frames, so a close never overtakes
        // the messages sent before it.
        let message = tokio::select! {
            biased;
            t = texts.recv(), if texts_open => match t {
                Some(t) => Message::text(t),
                // The instance is gone; its close frame may still come.
                None => {
                    texts_open = false;
                    continue;
                }
            },
            c = control.recv() => match c {
                Some(m) => m,
                None => break,
            },
        };
        if let Message::Close(None) = message {
            // The answer to the client's close, which the library queued: closing flushes it
            // (sending would be refused after the client's close).
            let _ = sink.close().await;
            break;
        }
        let closing = matches!(message, Message::Close(_));
        if sink.send(message).await.is_err() || closing {
            break;
        }
    }
}

/// How a connection ended.
struct Ending {
    code: u16,
    reason: String,
    /// The client sent the close (the library answers it); nothing more to send.
    by_client: bool,
}

impl Ending {
    fn host(code: u16, reason: impl Into<String>) -> Ending {
        Ending {
            code,
            reason: reason.into(),
            by_client: false,
        }
    }

    fn failed(failure: &CallFailure) -> Ending {
        match failure {
            // Not the handler's doing: the client may come back (1013, try again later).
            CallFailure::OverCapacity => Ending::host(
                1013,
                "the node is busy: reconnect later and resume from the last event_id",
            ),
            _ => Ending::host(1011, format!("the handler failed: {}", failure.code())),
        }
    }
}

/// Serve an open connection until it ends.
async fn serve(
    runtime: &Runtime,
    config: &WebSocketConfig,
    mut socket: Socket,
    stream: Stream,
    queued: mpsc::Receiver<String>,
) {
    let (sink, mut incoming) = stream.split();
    let (control, control_rx) = mpsc::channel::<Message>(4);
    let mut writing = tokio::spawn(writer(sink, queued, control_rx));
    let auth_deadline = Instant::now() + Duration::from_millis(config.auth_timeout_ms);
    let ping_every = Duration::from_millis(config.ping_interval_ms);
    let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
    let mut last_heard = Instant::now();
    let bus = runtime.services().events.clone();
    let mut heads: Option<tokio::sync::watch::Receiver<u64>> = None;
    let ending = loop {
        if let Some((code, reason)) = socket.take_close() {
            break Ending::host(code, reason);
        }
        let state = socket.state();
        let authenticated = state.authenticated;
        let wake_at = state.wake_at;
        let following = state.cursor;
        if let Some(cursor) = following {
            let heads = heads.get_or_insert_with(|| bus.watch_tenant(socket.tenant()));
            // A fresh receiver's first value may lag the store: look once, then on change.
            if *heads.borrow_and_update() > cursor || cursor == 0 {
                if let Err(end) = pump(&mut socket, &bus).await {
                    break end;
                }
                if let Some((code, reason)) = socket.take_close() {
                    break Ending::host(code, reason);
                }
            }
        }
        tokio::select! {
            frame = incoming.next() => {
                let message = match frame {
                    None => break Ending { code: 1006, reason: "the client went away".into(), by_client: true },
                    Some(Ok(m)) => m,
                    Some(Err(WsError::Capacity(e))) => {
                        break Ending::host(1009, format!("message too big: {e}"));
                    }
                    Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => {
                        break Ending { code: 1006, reason: "closed".into(), by_client: true };
                    }
                    Some(Err(e)) => break Ending::host(1002, format!("protocol error: {e}")),
                };
                last_heard = Instant::now();
                let call = match message {
                    Message::Text(t) => ClientMessage::Text(t.to_string()),
                    Message::Binary(b) => ClientMessage::Binary(b.to_vec()),
                    Message::Close(frame) => {
                        let (code, reason) = frame
                            .map(|f| (u16::from(f.code), f.reason.to_string()))
                            .unwrap_or((1005, String::new()));
                        break Ending { code, reason, by_client: true };
                    }
                    // Pings are answered by the library; pongs only show the peer lives.
                    Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
                };
                if let Err(failure) = socket.on_message(call).await {
                    break Ending::failed(&failure);
                }
            }
            () = tokio::time::sleep_until(auth_deadline), if !authenticated => {
                break Ending::host(4401, "authentication required: the first message must be {\"type\":\"authenticate\",\"token\":…}");
            }
            () = sleep_until_some(wake_at), if wake_at.is_some() => {
                if let Err(failure) = socket.on_timer().await {
                    break Ending::failed(&failure);
                }
            }
            changed = wait_changed(heads.as_mut()), if heads.is_some() => {
                if changed.is_err() {
                    heads = None;
                }
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > ping_every * 2 {
                    break Ending::host(1001, "no answer to pings");
                }
                let _ = control.try_send(Message::Ping(Default::default()));
            }
        }
    };
    // The component hears of the end (it may not send anything more).
    if !matches!(ending.code, 1011 | 1013) {
        let _ = socket.on_close(ending.code, &ending.reason).await;
    }
    drop(socket);
    if !ending.by_client {
        let frame = CloseFrame {
            code: CloseCode::from(ending.code),
            reason: truncate_reason(&ending.reason).into(),
        };
        let _ = control.send(Message::Close(Some(frame))).await;
    } else if ending.code != 1006 {
        // The library queued the answer to the client's close; writing a close flushes it.
        let _ = control.send(Message::Close(None)).await;
    }
    drop(control);
    if tokio::time::timeout(CLOSE_GRACE, &mut writing)
        .await
        .is_err()
    {
        writing.abort();
    }
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn wait_changed(
    heads: Option<&mut tokio::sync::watch::Receiver<u64>>,
) -> Result<(), tokio::sync::watch::error::RecvError> {
    match heads {
        Some(h) => h.changed().await,
        None => std::future::pending().await,
    }
}

/// Hand the connection the events it follows that it has not had, in batches; the cursor
/// moves past every event read, followed or not.
async fn pump(socket: &mut Socket, bus: &crate::events::EventBus) -> Result<(), Ending> {
    loop {
        let Some(cursor) = socket.state().cursor else {
            return Ok(());
        };
        let tenant = socket.tenant().clone();
        let events = match bus.after(&tenant, cursor, EVENT_BATCH).await {
            Ok(Ok(events)) => events,
            Ok(Err(gap)) => {
                return Err(Ending::host(
                    4410,
                    format!("{gap}; reload the state and follow from now"),
                ));
            }
            Err(e) => {
                tracing::error!("reading events for a connection: {e}");
                return Err(Ending::host(1011, "events cannot be read now"));
            }
        };
        let Some(last) = events.last().map(|e| e.seq) else {
            return Ok(());
        };
        let read = events.len();
        let followed: Vec<Event> = {
            let state = socket.state();
            let user = socket.user().map(|u| u.id.as_str());
            events
                .into_iter()
                .filter(|e| state.topics.iter().any(|t| t.matches(e, user)))
                .collect()
        };
        if let Err(failure) = socket.on_events(&followed).await {
            return Err(Ending::failed(&failure));
        }
        socket.advance(last);
        if socket.state().closing.is_some() || read < EVENT_BATCH {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upgrades_are_recognised_by_their_tokens() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        h.insert("upgrade", HeaderValue::from_static("WebSocket"));
        assert!(is_upgrade(&hyper::Method::GET, &h));
        assert!(!is_upgrade(&hyper::Method::POST, &h));
        h.insert("upgrade", HeaderValue::from_static("h2c"));
        assert!(!is_upgrade(&hyper::Method::GET, &h));
    }

    #[test]
    fn credentials_in_the_query_are_spotted() {
        assert!(token_in_query(Some("token=abc")));
        assert!(token_in_query(Some("x=1&Access_Token=abc")));
        assert!(token_in_query(Some("api%5Fkey=abc")));
        assert!(!token_in_query(Some("resume_from=12")));
        assert!(!token_in_query(None));
    }

    #[test]
    fn each_user_has_its_own_cap() {
        let sockets = SocketCounts::default();
        let tenant = TenantId::new("t").unwrap();
        let a = Principal::service(&tenant);
        let first = sockets.admit_user(&a, 2, 10).unwrap();
        let _second = sockets.admit_user(&a, 2, 10).unwrap();
        assert_eq!(
            sockets.admit_user(&a, 2, 10).err(),
            Some(OverConnections::User(2))
        );
        drop(first);
        assert!(sockets.admit_user(&a, 2, 10).is_ok());
        let other = Principal::service(&TenantId::new("u").unwrap());
        assert!(sockets.admit_user(&other, 2, 10).is_ok());
    }

    /// A user of `tenant` other than its API key's.
    fn user_of(tenant: &TenantId, id: &str) -> Principal {
        Principal {
            id: id.to_string(),
            username: id.to_string(),
            service: false,
            ..Principal::service(tenant)
        }
    }

    #[test]
    fn a_tenants_users_share_its_cap_and_a_refusal_counts_nothing() {
        let sockets = SocketCounts::default();
        let tenant = TenantId::new("t").unwrap();
        let (a, b, c) = (
            user_of(&tenant, "a"),
            user_of(&tenant, "b"),
            Principal::service(&tenant),
        );
        let a1 = sockets.admit_user(&a, 2, 3).unwrap();
        let _a2 = sockets.admit_user(&a, 2, 3).unwrap();
        let _b1 = sockets.admit_user(&b, 2, 3).unwrap();
        // b is under its own cap, but the tenant is at its.
        assert_eq!(
            sockets.admit_user(&b, 2, 3).err(),
            Some(OverConnections::Tenant(3))
        );
        assert_eq!(
            sockets.admit_user(&c, 2, 3).err(),
            Some(OverConnections::Tenant(3))
        );
        // The user's cap is told first when both are reached.
        assert_eq!(
            sockets.admit_user(&a, 2, 3).err(),
            Some(OverConnections::User(2))
        );
        // Another tenant is not touched by it.
        let other = user_of(&TenantId::new("u").unwrap(), "a");
        assert!(sockets.admit_user(&other, 2, 3).is_ok());
        // The refusals above counted nothing: one closed makes room for exactly one.
        drop(a1);
        let _b2 = sockets.admit_user(&b, 2, 3).unwrap();
        assert_eq!(
            sockets.admit_user(&c, 2, 3).err(),
            Some(OverConnections::Tenant(3))
        );
    }

    #[test]
    fn unauthenticated_connections_count_per_network_apart_from_users() {
        let sockets = SocketCounts::default();
        let here: IpAddr = "2001:db8::1".parse().unwrap();
        let same_host: IpAddr = "2001:db8::2".parse().unwrap();
        let elsewhere: IpAddr = "2001:db8:1::1".parse().unwrap();
        let first = sockets.admit_unauthenticated(here, 2).unwrap();
        let _second = sockets.admit_unauthenticated(same_host, 2).unwrap();
        assert_eq!(sockets.admit_unauthenticated(here, 2).err(), Some(2));
        assert!(sockets.admit_unauthenticated(elsewhere, 2).is_ok());
        // A user's count is another.
        let user = Principal::service(&TenantId::new("t").unwrap());
        assert!(sockets.admit_user(&user, 1, 1).is_ok());
        drop(first);
        assert!(sockets.admit_unauthenticated(same_host, 2).is_ok());
    }
}
