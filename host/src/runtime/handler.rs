//! Serving one HTTP request through a handler plugin, isolated in its own store.

use super::Runtime;
use super::call::CallLimit;
use super::host::HandlerHost;
use super::log_answer::LogPump;
use super::registry::PluginInstance;
use crate::metrics::Metrics;
use crate::tenants::TenantId;
use crate::users::Principal;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::task::AbortHandle;
use wasmtime::Trap;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// Why a call produced no response of the plugin's own. Each maps to a status and a stable
/// code in the error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallFailure {
    /// Every instance slot is busy.
    OverCapacity,
    /// The plugin trapped (a panic, an `unreachable`, a failed host call).
    Trap(String),
    /// The plugin used up its CPU budget.
    CpuDeadline(Duration),
    /// The plugin hit its memory cap.
    MemoryLimit(usize),
    /// The call ran past its route's wall-clock limit.
    Timeout(Duration),
    /// The plugin returned without setting a response.
    NoResponse,
    /// The plugin answered with a `wasi:http` error code instead of a response.
    HandlerError(String),
}

impl CallFailure {
    /// The HTTP status of the error answer.
    pub fn status(&self) -> u16 {
        match self {
            CallFailure::OverCapacity => 503,
            CallFailure::CpuDeadline(_) | CallFailure::Timeout(_) => 504,
            CallFailure::Trap(_)
            | CallFailure::MemoryLimit(_)
            | CallFailure::NoResponse
            | CallFailure::HandlerError(_) => 500,
        }
    }

    /// The stable error code.
    pub fn code(&self) -> &'static str {
        match self {
            CallFailure::OverCapacity => "over_capacity",
            CallFailure::Trap(_) => "plugin_trap",
            CallFailure::CpuDeadline(_) => "plugin_deadline",
            CallFailure::MemoryLimit(_) => "plugin_memory_limit",
            CallFailure::Timeout(_) => "plugin_timeout",
            CallFailure::NoResponse => "plugin_no_response",
            CallFailure::HandlerError(_) => "plugin_error",
        }
    }

    /// A message for the caller.
    pub fn message(&self) -> String {
        match self {
            CallFailure::OverCapacity => {
                "all component instance slots are busy; retry shortly".into()
            }
            CallFailure::Trap(t) => format!("the plugin trapped: {t}"),
            CallFailure::CpuDeadline(d) => CallLimit::CpuDeadline(*d).to_string(),
            CallFailure::MemoryLimit(m) => CallLimit::Memory(*m).to_string(),
            CallFailure::Timeout(d) => {
                format!(
                    "the call ran past its {} ms wall-clock limit",
                    d.as_millis()
                )
            }
            CallFailure::NoResponse => "the plugin returned without a response".into(),
            CallFailure::HandlerError(e) => format!("the plugin answered with an error: {e}"),
        }
    }

    pub(crate) fn from_error(e: wasmtime::Error) -> CallFailure {
        if let Some(limit) = e.downcast_ref::<CallLimit>() {
            return match *limit {
                CallLimit::CpuDeadline(d) => CallFailure::CpuDeadline(d),
                CallLimit::Memory(m) => CallFailure::MemoryLimit(m),
            };
        }
        let summary = match e.downcast_ref::<Trap>() {
            Some(trap) => trap.to_string(),
            None => format!("{e}"),
        };
        CallFailure::Trap(summary)
    }
}

/// A response body still being produced by its guest. Dropping it (the client went away, or
/// the body is done) ends the guest's call.
pub struct GuestBody {
    inner: HyperOutgoingBody,
    /// Set when the call failed; checked when the body ends.
    failed: Option<tokio::sync::oneshot::Receiver<CallFailure>>,
    /// Told when the body ends as an error.
    on_failure: Option<Box<dyn FnOnce() + Send>>,
    _call: AbortOnDrop,
    _open: Option<OpenResponse>,
}

/// Counts a guest's response in the `active streams` gauge while its body is being sent.
struct OpenResponse(std::sync::Arc<Metrics>);

impl OpenResponse {
    fn new(metrics: std::sync::Arc<Metrics>) -> Self {
        metrics.streaming(1);
        OpenResponse(metrics)
    }
}

impl Drop for OpenResponse {
    fn drop(&mut self) {
        self.0.streaming(-1);
    }
}

impl std::fmt::Debug for GuestBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestBody").finish_non_exhaustive()
    }
}

impl Body for GuestBody {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(None) => {
                let failure = self.failed.take().and_then(|mut f| f.try_recv().ok());
                if failure.is_some()
                    && let Some(tell) = self.on_failure.take()
                {
                    tell();
                }
                Poll::Ready(
                    failure
                        .map(|f| Err(wasmtime_wasi_http::Error::InternalError(Some(f.message())))),
                )
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl GuestBody {
    /// A complete body not produced by a guest.
    pub fn full(bytes: impl Into<Bytes>) -> GuestBody {
        GuestBody {
            inner: http_body_util::Full::new(bytes.into())
                .map_err(wasmtime_wasi_http::Error::from)
                .boxed_unsync(),
            failed: None,
            on_failure: None,
            _call: AbortOnDrop(None),
            _open: None,
        }
    }

    /// Call `tell` if the body ends as an error (its call failed after the head was sent).
    pub fn on_failure(mut self, tell: impl FnOnce() + Send + 'static) -> GuestBody {
        self.on_failure = Some(Box::new(tell));
        self
    }
}

/// Aborts the guest's task when dropped, unless it already finished.
struct AbortOnDrop(Option<AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(handle) = self.0.take() {
            handle.abort();
        }
    }
}

/// Who a handler call acts for, as the front resolved it.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The tenant every host call is scoped to.
    pub tenant: TenantId,
    /// On a `user_auth` route, the user (or an API key's service user); what `identity.user`
    /// and `users` answer for.
    pub user: Option<Principal>,
    /// The client's address, for the login backoff.
    pub client: Option<std::net::IpAddr>,
}

impl Caller {
    /// A caller known by its tenant alone.
    pub fn tenant(tenant: TenantId) -> Caller {
        Caller {
            tenant,
            user: None,
            client: None,
        }
    }
}

impl Runtime {
    /// Serve `request` for `caller` with the handler plugin named `plugin`: a fresh instance,
    /// its limits (and the wall-clock `timeout`), and its response streamed back as the guest
    /// writes it.
    pub async fn handle<B>(
        &self,
        plugin: &str,
        timeout: Option<Duration>,
        caller: &Caller,
        request: hyper::Request<B>,
    ) -> Result<hyper::Response<GuestBody>, CallFailure>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let result = self.call_handler(plugin, timeout, caller, request).await;
        // A failure of the call itself is counted where the call ends; these are the others.
        if let Err(
            failure @ (CallFailure::OverCapacity
            | CallFailure::NoResponse
            | CallFailure::HandlerError(_)),
        ) = &result
        {
            self.services().metrics.plugin_error(plugin, failure.code());
        }
        result
    }

    async fn call_handler<B>(
        &self,
        plugin: &str,
        timeout: Option<Duration>,
        caller: &Caller,
        request: hyper::Request<B>,
    ) -> Result<hyper::Response<GuestBody>, CallFailure>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let tenant = &caller.tenant;
        let Some(plugin) = self.plugins().plugin(plugin) else {
            return Err(CallFailure::Trap(format!("no plugin named {plugin:?}")));
        };
        let PluginInstance::Handler { proxy: pre, .. } = &plugin.instance else {
            return Err(CallFailure::Trap(format!(
                "plugin {} is not a handler",
                plugin.manifest.name
            )));
        };
        let host = HandlerHost::new(
            self.services().clone(),
            self.plugins().node().clone(),
            self.plugins().capacity().clone(),
            caller,
        );
        let (mut store, slot) = self.plugins().reserve(plugin, tenant, host)?;
        let (sender, mut receiver) = tokio::sync::oneshot::channel();
        let setup = (|| {
            let req = store
                .data_mut()
                .http()
                .new_incoming_request(Scheme::Http, request)?;
            let out = store.data_mut().http().new_response_outparam(sender)?;
            wasmtime::Result::Ok((req, out))
        })();
        let (req, out) = setup.map_err(CallFailure::from_error)?;
        let pre = pre.clone();
        let plugin_name = plugin.context.name.clone();
        let metrics = self.services().metrics.clone();
        // Failures are reported before the body's sender is dropped, so a body cut short ends
        // as an error rather than looking complete.
        let (failed_tx, failed_rx) = tokio::sync::oneshot::channel();
        let pump = LogPump {
            plugins: self.plugins().clone(),
            services: self.services().clone(),
            plugin: plugin.manifest.name.clone(),
            tenant: tenant.clone(),
        };
        // Boxed: it is polled here first and may then move to a task of its own, and a task is
        // as large as its largest state, which a stream's keeps for as long as the client
        // follows the log.
        let mut call = Box::pin(async move {
            let call = Box::pin(async {
                let proxy = pre.instantiate_async(&mut store).await?;
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, req, out)
                    .await
            });
            let result = match timeout {
                Some(limit) => match tokio::time::timeout(limit, call).await {
                    Ok(r) => r.map_err(CallFailure::from_error),
                    Err(_) => Err(CallFailure::Timeout(limit)),
                },
                None => call.await.map_err(CallFailure::from_error),
            };
            // Reported before the store (and with it the body's sender) is dropped.
            let mut failed_tx = Some(failed_tx);
            let mut report = move |failure: &CallFailure| {
                tracing::warn!(plugin = %plugin_name, code = failure.code(), "{}", failure.message());
                metrics.plugin_error(&plugin_name, failure.code());
                if let Some(tx) = failed_tx.take() {
                    let _ = tx.send(failure.clone());
                }
            };
            if let Err(failure) = &result {
                report(failure);
            }
            // A log handed to the host is answered after the instance is gone: waiting for
            // events holds no slot.
            let handoff = match &result {
                Ok(()) => store.data_mut().host.take_handoff(),
                Err(_) => None,
            };
            drop(store);
            drop(slot);
            if let Some((handoff, bound)) = handoff {
                pump.answer(handoff, bound, &mut report).await;
            }
            result
        });
        // The call runs in the request's own task until it answers. Most calls end in that
        // same poll, and need no task of their own: spawning one woke an idle worker for
        // nothing, a third context switch per request at one connection. A call still writing
        // its body (a stream, a log handed to the host) moves to a task of its own, so that
        // it goes on whether or not the client reads.
        let progress = std::future::poll_fn(|cx| {
            if let Poll::Ready(result) = call.as_mut().poll(cx) {
                return Poll::Ready(CallProgress::Ended(result));
            }
            Pin::new(&mut receiver).poll(cx).map(CallProgress::Answered)
        })
        .await;
        let refused = |code| CallFailure::HandlerError(format!("{code:?}"));
        let (response, guard) = match progress {
            CallProgress::Ended(result) => match receiver.try_recv() {
                Ok(Ok(response)) => (response, AbortOnDrop(None)),
                Ok(Err(code)) => return Err(refused(code)),
                // The guest dropped its outparam: the call's result says why.
                Err(_) => return Err(result.err().unwrap_or(CallFailure::NoResponse)),
            },
            CallProgress::Answered(Ok(Ok(response))) => {
                let task = tokio::spawn(call);
                (response, AbortOnDrop(Some(task.abort_handle())))
            }
            // Dropping the call ends it.
            CallProgress::Answered(Ok(Err(code))) => return Err(refused(code)),
            CallProgress::Answered(Err(_)) => {
                return Err(call.await.err().unwrap_or(CallFailure::NoResponse));
            }
        };
        Ok(response.map(|inner| GuestBody {
            inner,
            failed: Some(failed_rx),
            on_failure: None,
            _call: guard,
            _open: Some(OpenResponse::new(self.services().metrics.clone())),
        }))
    }
}

/// How far a handler call got in the request's own task.
enum CallProgress<A> {
    /// The call is over, answered or not.
    Ended(Result<(), CallFailure>),
    /// The guest answered (or dropped its outparam) and the call goes on.
    Answered(Result<A, tokio::sync::oneshot::error::RecvError>),
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// A body whose call failed after its head was sent ends as an error, and says so.
    #[tokio::test]
    async fn a_body_cut_short_ends_as_an_error_and_is_reported() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        tx.send(CallFailure::MemoryLimit(32 << 20)).unwrap();
        let told = Arc::new(AtomicBool::new(false));
        let body = GuestBody {
            inner: http_body_util::Full::new(Bytes::from_static(b"partial"))
                .map_err(wasmtime_wasi_http::Error::from)
                .boxed_unsync(),
            failed: Some(rx),
            on_failure: None,
            _call: AbortOnDrop(None),
            _open: None,
        }
        .on_failure({
            let told = told.clone();
            move || told.store(true, Ordering::SeqCst)
        });
        let err = body.collect().await.unwrap_err();
        assert!(err.to_string().contains("memory"), "{err}");
        assert!(told.load(Ordering::SeqCst));
        // A body that ends well tells nobody.
        let told = Arc::new(AtomicBool::new(false));
        let body = GuestBody::full("whole").on_failure({
            let told = told.clone();
            move || told.store(true, Ordering::SeqCst)
        });
        assert_eq!(body.collect().await.unwrap().to_bytes(), "whole");
        assert!(!told.load(Ordering::SeqCst));
    }
}
