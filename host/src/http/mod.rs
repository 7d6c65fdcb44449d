//! The HTTP server: accept loop, routing to handler plugins, error answers, graceful drain.

pub mod router;

use crate::runtime::{CallFailure, GuestBody, Runtime};
use crate::tenants::{ApiKeys, TenantId, request_key};
use anyhow::{Context, Result};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// Serve `runtime` on `listener` until `shutdown` resolves, then stop accepting and give
/// in-flight requests up to `grace` to finish.
pub async fn serve(
    listener: TcpListener,
    runtime: Arc<Runtime>,
    keys: Arc<ApiKeys>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> Result<()> {
    let graceful = GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
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
                let runtime = runtime.clone();
                let keys = keys.clone();
                let service = service_fn(move |req| {
                    let runtime = runtime.clone();
                    let keys = keys.clone();
                    async move { Ok::<_, Infallible>(dispatch(&runtime, &keys, req).await) }
                });
                let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(%peer, "connection ended: {e}");
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

/// Bind `addr`, returning the listener and the address actually bound (port 0 picks one).
pub async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

async fn dispatch(
    runtime: &Runtime,
    keys: &ApiKeys,
    mut req: Request<Incoming>,
) -> Response<GuestBody> {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let target = runtime.router().lookup(&path).cloned();
    let response = match authenticate(keys, target.as_ref(), req.headers()) {
        Err(refusal) => unauthorized(refusal),
        // A raw dot segment is a way out of wherever a handler maps the path: refused for
        // every route, before any plugin sees it.
        Ok(_) if !router::is_clean_path(&path) => error_response(
            StatusCode::FORBIDDEN,
            "bad_path",
            "the path has '.' or '..' segments",
            None,
        ),
        Ok(tenant) => match target {
            None => error_response(
                StatusCode::NOT_FOUND,
                "no_route",
                &format!("no plugin serves {path}"),
                None,
            ),
            Some(target) => {
                // The credentials are the host's business; plugins see the tenant instead.
                req.headers_mut().remove(hyper::header::AUTHORIZATION);
                req.headers_mut().remove("x-api-key");
                match runtime.handle(&target, &tenant, req).await {
                    Ok(response) => response,
                    Err(failure) => failure_response(&failure, &target.plugin),
                }
            }
        },
    };
    tracing::debug!(%method, %path, status = response.status().as_u16(), elapsed_ms = started.elapsed().as_millis() as u64, "request");
    response
}

/// The tenant a request acts for, or the 401 that refuses it. Without configured keys every
/// request is the `local` tenant. A wrong key is refused everywhere; a missing one is fine only
/// on public routes. Unauthenticated callers learn nothing of which routes exist.
fn authenticate(
    keys: &ApiKeys,
    target: Option<&router::RouteTarget>,
    headers: &hyper::HeaderMap,
) -> Result<TenantId, &'static str> {
    if keys.is_empty() {
        return Ok(TenantId::local());
    }
    match request_key(headers) {
        Some(key) => keys.resolve(key).cloned().ok_or("unknown API key"),
        None if target.is_some_and(|t| t.public) => Ok(TenantId::anonymous()),
        None => Err("an API key is required: send Authorization: Bearer KEY or X-Api-Key: KEY"),
    }
}

fn unauthorized(message: &str) -> Response<GuestBody> {
    let mut response = error_response(StatusCode::UNAUTHORIZED, "unauthorized", message, None);
    response.headers_mut().insert(
        hyper::header::WWW_AUTHENTICATE,
        hyper::header::HeaderValue::from_static("Bearer"),
    );
    response
}

fn failure_response(failure: &CallFailure, plugin: &str) -> Response<GuestBody> {
    let status =
        StatusCode::from_u16(failure.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = error_response(status, failure.code(), &failure.message(), Some(plugin));
    if matches!(failure, CallFailure::OverCapacity) {
        response.headers_mut().insert(
            hyper::header::RETRY_AFTER,
            hyper::header::HeaderValue::from_static("1"),
        );
    }
    response
}

/// gantry's own error envelope: `{"error": {"code", "message", "plugin"?}}`.
pub fn error_response(
    status: StatusCode,
    code: &str,
    message: &str,
    plugin: Option<&str>,
) -> Response<GuestBody> {
    let mut error = serde_json::json!({ "code": code, "message": message });
    if let Some(plugin) = plugin {
        error["plugin"] = plugin.into();
    }
    let body =
        serde_json::to_vec(&serde_json::json!({ "error": error })).expect("JSON values serialize");
    let mut response = Response::new(GuestBody::full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}
