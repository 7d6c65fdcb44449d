//! HTTP plumbing shared by the egress and model routes: one-request client connections,
//! relaying responses back (scanned for usage on the model route), hop-by-hop headers and
//! the proxy's own short answers.

use super::usage::UsageScanner;
use super::{AbortOnDrop, Answer, ProxyBody, TaskEgress};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite};

/// One request on a fresh HTTP/1.1 client connection; the guard ends that connection.
pub(super) async fn exchange<I>(
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

pub(super) fn relay(
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
pub(super) fn strip_hop_by_hop(headers: &mut HeaderMap) {
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

pub(super) fn origin_form(uri: &Uri) -> Uri {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    path.parse().unwrap_or_else(|_| Uri::from_static("/"))
}

pub(super) fn text(status: StatusCode, message: &str) -> Answer {
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

pub(super) fn full(bytes: impl Into<Bytes>) -> ProxyBody {
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
