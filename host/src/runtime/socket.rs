//! Serving one WebSocket connection through a handler plugin. Each call into it
//! (`on-message`, `on-events`, `on-timer`, `on-close`) has the plugin's CPU budget and the
//! route's wall-clock limit of its own; a call that fails ends the connection (the instance
//! cannot be trusted after a trap), never the node.
//!
//! A route's `socket_instance` says how long one instance serves: the connection's whole life
//! (the component keeps the connection's state in its memory), or one call (the connection
//! keeps only its call state between calls, and what the component `keep`s there, so an idle
//! connection holds no instance and no instance memory).

use super::Runtime;
use super::call::store_around;
use super::capacity::Capacity;
use super::capacity::Permit;
use super::handler::{CallFailure, Caller};
use super::host::NodeState;
use super::host::websocket_bindings::exports::gantry::plugin::websocket_handler as wit;
use super::host::websocket_bindings::{WebsocketServing, WebsocketServingPre};
use super::host::{ActiveInstance, HandlerHost, HandlerState, SocketHost, wit_event};
use super::registry::PluginInstance;
use crate::events::Event;
use crate::manifest::SocketInstance;
use crate::tenants::TenantId;
use crate::users::Principal;
use std::future::Future;
use std::sync::Arc;
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

/// One connection served by a component.
pub struct Socket {
    served: Served,
    /// Each call's wall-clock limit (the route's).
    timeout: Option<Duration>,
    plugin: String,
    metrics: Arc<crate::metrics::Metrics>,
    /// The connection's place among `[websocket] max_connections`, for its whole life.
    _connection: Permit,
}

/// How the connection's component is held between calls.
enum Served {
    /// One instance for the connection's life. `store` is declared before `_slot`, so it
    /// is dropped (and its pool slot freed) before the permit that counts the slot.
    Resident {
        store: wasmtime::Store<HandlerState>,
        instance: WebsocketServing,
        /// Its slot among `[websocket] max_instances`.
        _slot: Permit,
        _live: ActiveInstance,
    },
    /// A fresh instance for each call, in a store around the kept call state.
    PerCall {
        /// The call state between calls; `None` only while a call has it.
        parked: Option<Box<HandlerState>>,
        pre: WebsocketServingPre<HandlerState>,
        /// What a call needs of the node, and no more: holding the whole plugin set would
        /// keep every plugin of an older set alive after a reload, not just this one.
        engine: wasmtime::Engine,
        capacity: Arc<Capacity>,
        node: Arc<NodeState>,
    },
}

/// One call into the component.
enum Callback<'a> {
    Open(&'a wit::Connection),
    Message(&'a wit::Message),
    Events(&'a [wit::Event]),
    Timer,
    Close(u16, &'a str),
}

impl Callback<'_> {
    /// Make the call; `on-open`'s refusal is the inner error, every other call's is `Ok`.
    async fn invoke(
        self,
        instance: &WebsocketServing,
        store: &mut wasmtime::Store<HandlerState>,
    ) -> wasmtime::Result<Result<(), (u16, String)>> {
        let handler = instance.gantry_plugin_websocket_handler();
        match self {
            Callback::Open(c) => handler.call_on_open(store, c).await,
            Callback::Message(m) => handler.call_on_message(store, m).await.map(Ok),
            Callback::Events(e) => handler.call_on_events(store, e).await.map(Ok),
            Callback::Timer => handler.call_on_timer(store).await.map(Ok),
            Callback::Close(code, reason) => {
                handler.call_on_close(store, code, reason).await.map(Ok)
            }
        }
    }
}

impl std::fmt::Debug for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Socket")
            .field("plugin", &self.plugin)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// Open a connection served by the handler plugin `plugin`, one instance serving it for
    /// `instance`'s span, and call its `on-open`. `Ok(Err((code, reason)))` when the
    /// component refused the connection.
    pub async fn open_socket(
        &self,
        plugin: &str,
        caller: &Caller,
        instance: SocketInstance,
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
        let connection = self
            .plugins()
            .capacity()
            .socket_connection()
            .map_err(|_| CallFailure::OverCapacity)?;
        let host = HandlerHost::new(
            self.services().clone(),
            self.plugins().node().clone(),
            self.plugins().capacity().clone(),
            caller,
        )
        .with_socket(socket);
        let plugins = self.plugins();
        let mut store =
            super::call::new_store(&plugins.engine, &found.context, &caller.tenant, host);
        let served = match instance {
            SocketInstance::PerConnection => {
                let _slot = plugins
                    .capacity()
                    .socket()
                    .map_err(|_| CallFailure::OverCapacity)?;
                let _live = plugins.node().instance_guard();
                let instance = match limited(timeout, pre.instantiate_async(&mut store)).await {
                    Ok(instance) => instance,
                    Err(failure) => {
                        // The store gives its slot back before the permit does.
                        drop(store);
                        return Err(failure);
                    }
                };
                Served::Resident {
                    store,
                    instance,
                    _slot,
                    _live,
                }
            }
            SocketInstance::PerCall => Served::PerCall {
                parked: Some(Box::new(store.into_data())),
                pre: pre.clone(),
                engine: plugins.engine.clone(),
                capacity: plugins.capacity().clone(),
                node: plugins.node().clone(),
            },
        };
        let mut socket = Socket {
            served,
            timeout,
            plugin: plugin.to_string(),
            metrics: self.services().metrics.clone(),
            _connection: connection,
        };
        let connection = wit::Connection {
            path: info.path,
            query: info.query,
        };
        match socket.call(Callback::Open(&connection)).await? {
            Ok(()) => Ok(Ok(socket)),
            Err((code, reason)) => Ok(Err((code, reason))),
        }
    }
}

/// The longest a per-call connection's call waits for an instance slot.
const SLOT_WAIT: Duration = Duration::from_secs(10);

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
    /// Make one call into the component (in a fresh instance when it is served per call);
    /// count and log its failure, with which the connection ends.
    async fn call(
        &mut self,
        callback: Callback<'_>,
    ) -> Result<Result<(), (u16, String)>, CallFailure> {
        let result = match &mut self.served {
            Served::Resident {
                store, instance, ..
            } => {
                store.data_mut().start_call();
                limited(self.timeout, callback.invoke(instance, store)).await
            }
            Served::PerCall {
                parked,
                pre,
                engine,
                capacity,
                node,
            } => {
                // A slot first, held until the store that used it is gone. Waiting longer
                // than the route's limit (or `SLOT_WAIT` on a route without one) means the
                // node is busy: over capacity, not the plugin's failure.
                let wait = self.timeout.unwrap_or(SLOT_WAIT).min(SLOT_WAIT);
                let slot = tokio::time::timeout(wait, capacity.socket_call())
                    .await
                    .map_err(|_| CallFailure::OverCapacity);
                match slot {
                    Err(failure) => Err(failure),
                    Ok(slot) => {
                        let state = parked.take().expect("a connection's calls do not overlap");
                        let mut store = store_around(engine, *state);
                        let live = node.instance_guard();
                        let result = limited(self.timeout, async {
                            let instance = pre.instantiate_async(&mut store).await?;
                            callback.invoke(&instance, &mut store).await
                        })
                        .await;
                        // The instance and its memory go with the store; the call state
                        // stays. The slot is freed before the live count falls, as a
                        // resident connection's is: once no instance is counted, a slot is
                        // free.
                        *parked = Some(Box::new(store.into_data()));
                        drop(slot);
                        drop(live);
                        result
                    }
                }
            }
        };
        match &result {
            Err(CallFailure::OverCapacity) => {
                tracing::warn!(plugin = %self.plugin, "a WebSocket connection's call found no instance slot in time");
            }
            Err(failure) => {
                tracing::warn!(plugin = %self.plugin, code = failure.code(), "a WebSocket connection's call failed: {}", failure.message());
                self.metrics.plugin_error(&self.plugin, failure.code());
            }
            Ok(_) => {}
        }
        result
    }

    /// A message from the client.
    pub async fn on_message(&mut self, message: ClientMessage) -> Result<(), CallFailure> {
        let message = match message {
            ClientMessage::Text(t) => wit::Message::Text(t),
            ClientMessage::Binary(b) => wit::Message::Binary(b),
        };
        self.call(Callback::Message(&message)).await.map(drop)
    }

    /// Events the connection follows, in order; the cursor moves past them.
    pub async fn on_events(&mut self, events: &[Event]) -> Result<(), CallFailure> {
        let Some(last) = events.last().map(|e| e.seq) else {
            return Ok(());
        };
        let batch: Vec<_> = events.iter().map(wit_event).collect();
        self.call(Callback::Events(&batch)).await.map(drop)?;
        self.advance(last);
        Ok(())
    }

    /// The timer the component asked for has come.
    pub async fn on_timer(&mut self) -> Result<(), CallFailure> {
        self.state_mut().wake_at = None;
        self.call(Callback::Timer).await.map(drop)
    }

    /// The connection closed with `code`.
    pub async fn on_close(&mut self, code: u16, reason: &str) -> Result<(), CallFailure> {
        self.call(Callback::Close(code, reason)).await.map(drop)
    }

    /// The call state the connection keeps.
    fn call_state(&self) -> &HandlerState {
        match &self.served {
            Served::Resident { store, .. } => store.data(),
            Served::PerCall { parked, .. } => parked
                .as_ref()
                .expect("a connection's calls do not overlap"),
        }
    }

    fn call_state_mut(&mut self) -> &mut HandlerState {
        match &mut self.served {
            Served::Resident { store, .. } => store.data_mut(),
            Served::PerCall { parked, .. } => parked
                .as_mut()
                .expect("a connection's calls do not overlap"),
        }
    }

    /// The connection's host-side state.
    pub fn state(&self) -> &SocketHost {
        self.call_state()
            .host
            .socket
            .as_ref()
            .expect("a socket's store serves a socket")
    }

    fn state_mut(&mut self) -> &mut SocketHost {
        self.call_state_mut()
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
        &self.call_state().tenant
    }

    /// The authenticated user.
    pub fn user(&self) -> Option<&Principal> {
        self.call_state().host.user()
    }
}
