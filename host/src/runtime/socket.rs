//! Serving one WebSocket connection through a handler plugin: one instance for the
//! connection's whole life, so the component keeps the connection's state in its memory. Each
//! call into it (`on-message`, `on-events`, `on-timer`, `on-close`) has the plugin's CPU budget
//! and the route's wall-clock limit of its own; a call that fails ends the connection (the
//! instance cannot be trusted after a trap), never the node.

use super::handler::{CallFailure, Caller};
use super::host::websocket_bindings::WebsocketServing;
use super::host::websocket_bindings::exports::gantry::plugin::websocket_handler as wit;
use super::host::{HandlerHost, HandlerState, SocketHost, wit_event};
use super::registry::PluginInstance;
use super::{Runtime, Slot};
use crate::events::Event;
use crate::tenants::TenantId;
use crate::users::Principal;
use std::future::Future;
use std::time::Duration;

/// The upgrade request, as the component sees it.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    /// The request's path.
    pub path: String,
    /// Its query, without `?`.
    pub query: Option<String>,
}

/// A client message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMessage {
    /// A text message.
    Text(String),
    /// A binary message.
    Binary(Vec<u8>),
}

/// One connection's instance.
pub struct Socket {
    store: wasmtime::Store<HandlerState>,
    instance: WebsocketServing,
    /// Each call's wall-clock limit (the route's).
    timeout: Option<Duration>,
    plugin: String,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
    _slot: Slot,
}

impl std::fmt::Debug for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Socket")
            .field("plugin", &self.plugin)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// Open a connection served by the handler plugin `plugin`: its instance (from the
    /// connections' own pool), and its `on-open`. `Ok(Err((code, reason)))` when the
    /// component refused the connection.
    pub async fn open_socket(
        &self,
        plugin: &str,
        caller: &Caller,
        timeout: Option<Duration>,
        info: ConnectionInfo,
        socket: SocketHost,
    ) -> Result<Result<Socket, (u16, String)>, CallFailure> {
        let Some(found) = self.plugins().plugin(plugin) else {
            return Err(CallFailure::Trap(format!("no plugin named {plugin:?}")));
        };
        let PluginInstance::Handler {
            socket: Some(pre), ..
        } = &found.instance
        else {
            return Err(CallFailure::Trap(format!(
                "plugin {plugin} serves no WebSocket connections"
            )));
        };
        let permit = self
            .plugins()
            .capacity()
            .socket()
            .map_err(|_| CallFailure::OverCapacity)?;
        let host = HandlerHost::new(
            self.services().clone(),
            self.plugins().node().clone(),
            self.plugins().capacity().clone(),
            caller,
        )
        .with_socket(socket);
        let (mut store, slot) = self
            .plugins()
            .new_store(found, &caller.tenant, host, permit);
        let instance = limited(timeout, pre.instantiate_async(&mut store)).await?;
        let mut socket = Socket {
            store,
            instance,
            timeout,
            plugin: plugin.to_string(),
            metrics: self.services().metrics.clone(),
            _slot: slot,
        };
        let connection = wit::Connection {
            path: info.path,
            query: info.query,
        };
        socket.store.data_mut().start_call();
        let opened = limited(
            socket.timeout,
            socket
                .instance
                .gantry_plugin_websocket_handler()
                .call_on_open(&mut socket.store, &connection),
        )
        .await;
        match socket.report(opened)? {
            Ok(()) => Ok(Ok(socket)),
            Err((code, reason)) => Ok(Err((code, reason))),
        }
    }
}

/// `call` within `timeout`, its failure typed.
async fn limited<T>(
    timeout: Option<Duration>,
    call: impl Future<Output = wasmtime::Result<T>>,
) -> Result<T, CallFailure> {
    match timeout {
        Some(limit) => match tokio::time::timeout(limit, call).await {
            Ok(r) => r.map_err(CallFailure::from_error),
            Err(_) => Err(CallFailure::Timeout(limit)),
        },
        None => call.await.map_err(CallFailure::from_error),
    }
}

impl Socket {
    /// Count and log a failed call; the connection ends with it.
    fn report<T>(&self, result: Result<T, CallFailure>) -> Result<T, CallFailure> {
        if let Err(failure) = &result {
            tracing::warn!(plugin = %self.plugin, code = failure.code(), "a WebSocket connection's call failed: {}", failure.message());
            self.metrics.plugin_error(&self.plugin, failure.code());
        }
        result
    }

    /// A message from the client.
    pub async fn on_message(&mut self, message: ClientMessage) -> Result<(), CallFailure> {
        let message = match message {
            ClientMessage::Text(t) => wit::Message::Text(t),
            ClientMessage::Binary(b) => wit::Message::Binary(b),
        };
        self.store.data_mut().start_call();
        let r = limited(
            self.timeout,
            self.instance
                .gantry_plugin_websocket_handler()
                .call_on_message(&mut self.store, &message),
        )
        .await;
        self.report(r)
    }

    /// Events the connection follows, in order; the cursor moves past them.
    pub async fn on_events(&mut self, events: &[Event]) -> Result<(), CallFailure> {
        let Some(last) = events.last().map(|e| e.seq) else {
            return Ok(());
        };
        let batch: Vec<_> = events.iter().map(wit_event).collect();
        self.store.data_mut().start_call();
        let r = limited(
            self.timeout,
            self.instance
                .gantry_plugin_websocket_handler()
                .call_on_events(&mut self.store, &batch),
        )
        .await;
        self.report(r)?;
        self.advance(last);
        Ok(())
    }

    /// The timer the component asked for has come.
    pub async fn on_timer(&mut self) -> Result<(), CallFailure> {
        self.state_mut().wake_at = None;
        self.store.data_mut().start_call();
        let r = limited(
            self.timeout,
            self.instance
                .gantry_plugin_websocket_handler()
                .call_on_timer(&mut self.store),
        )
        .await;
        self.report(r)
    }

    /// The connection closed with `code`.
    pub async fn on_close(&mut self, code: u16, reason: &str) -> Result<(), CallFailure> {
        self.store.data_mut().start_call();
        let r = limited(
            self.timeout,
            self.instance
                .gantry_plugin_websocket_handler()
                .call_on_close(&mut self.store, code, reason),
        )
        .await;
        self.report(r)
    }

    /// The connection's host-side state.
    pub fn state(&self) -> &SocketHost {
        self.store
            .data()
            .host
            .socket
            .as_ref()
            .expect("a socket's store serves a socket")
    }

    fn state_mut(&mut self) -> &mut SocketHost {
        self.store
            .data_mut()
            .host
            .socket
            .as_mut()
            .expect("a socket's store serves a socket")
    }

    /// Events up to `seq` have been handed over (or skipped as not followed).
    pub fn advance(&mut self, seq: u64) {
        let state = self.state_mut();
        if state.cursor.is_some_and(|c| c < seq) {
            state.cursor = Some(seq);
        }
    }

    /// Take the close the component (or a refusal) asked for.
    pub fn take_close(&mut self) -> Option<(u16, String)> {
        self.state_mut().closing.take()
    }

    /// The tenant the connection acts for (its user's, once authenticated).
    pub fn tenant(&self) -> &TenantId {
        &self.store.data().tenant
    }

    /// The authenticated user.
    pub fn user(&self) -> Option<&Principal> {
        self.store.data().host.user()
    }
}
