//! Connection hygiene: what one client connection may hold, and for how long.
//!
//! - A per-address cap on open connections ([`ConnectionCounts`]).
//! - A watchdog per connection ([`Activity`]) that closes it when a request's head does not
//!   arrive in time (slow headers), or when it is kept alive without a request for too long.
//!   hyper's own `header_read_timeout` cannot tell the two apart (its timer starts when it
//!   begins waiting for the next request, so it would bound idle time by the header timeout);
//!   the watchdog sees the bytes arrive and the requests come and go, and knows which phase a
//!   connection is in.
//! - A deadline on each request body ([`DeadlineBody`]), so that an unfinished body cannot pin
//!   the connection, nor the buffer gantry reads a chunked body into.

use super::limits::client_network;
use crate::config::ConnectionLimits;
use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The timeouts of [`ConnectionLimits`] as durations (`None`: no limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// From a request's first byte (or the connection's opening) to the end of its head.
    pub header_read: Option<Duration>,
    /// From the end of a request's head to the end of its body.
    pub body_read: Option<Duration>,
    /// Kept alive without a request in flight.
    pub keep_alive: Option<Duration>,
}

impl Timeouts {
    /// The timeouts `limits` set.
    pub fn of(limits: &ConnectionLimits) -> Timeouts {
        let ms = |ms: u64| (ms > 0).then(|| Duration::from_millis(ms));
        Timeouts {
            header_read: ms(limits.header_read_timeout_ms),
            body_read: ms(limits.body_read_timeout_ms),
            keep_alive: ms(limits.keep_alive_timeout_ms),
        }
    }
}

/// Open connections per client network (an IPv4 address, an IPv6 /64).
#[derive(Debug)]
pub struct ConnectionCounts {
    limit: usize,
    by_network: Mutex<HashMap<IpAddr, usize>>,
}

/// What becomes of a new connection.
#[derive(Debug)]
pub enum Admission {
    /// Served.
    Serve(ConnectionSlot),
    /// Over the cap: answered once with 503 and closed.
    Refuse(ConnectionSlot),
    /// Far over the cap: closed unanswered, so that refusals cannot pile up either.
    Close,
}

/// One counted connection; uncounted when dropped.
#[derive(Debug)]
pub struct ConnectionSlot {
    counts: Arc<ConnectionCounts>,
    network: IpAddr,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut map = self.counts.lock();
        if let Some(n) = map.get_mut(&self.network) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.network);
            }
        }
    }
}

/// A connection's slot, shared: the HTTP connection holds it, and so does a WebSocket it is
/// upgraded to (found in the upgrade request's extensions), which outlives the HTTP exchange.
#[derive(Debug, Clone)]
pub struct HeldConnection {
    _slot: Arc<ConnectionSlot>,
}

impl HeldConnection {
    /// Share `slot`.
    pub fn new(slot: ConnectionSlot) -> HeldConnection {
        HeldConnection {
            _slot: Arc::new(slot),
        }
    }
}

impl ConnectionCounts {
    /// At most `limit` connections served per client network.
    pub fn new(limit: usize) -> Arc<ConnectionCounts> {
        Arc::new(ConnectionCounts {
            limit,
            by_network: Mutex::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.by_network.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Count a new connection from `client`: served below the cap, refused (with an answer)
    /// up to twice the cap, closed beyond.
    pub fn admit(self: &Arc<Self>, client: IpAddr) -> Admission {
        let network = client_network(client);
        let mut map = self.lock();
        let open = map.entry(network).or_insert(0);
        if *open >= self.limit.saturating_mul(2) {
            return Admission::Close;
        }
        *open += 1;
        let slot = ConnectionSlot {
            counts: self.clone(),
            network,
        };
        if *open > self.limit {
            Admission::Refuse(slot)
        } else {
            Admission::Serve(slot)
        }
    }

    /// Connections open from `client`'s network.
    pub fn open(&self, client: IpAddr) -> usize {
        self.lock()
            .get(&client_network(client))
            .copied()
            .unwrap_or(0)
    }
}

/// Where a connection is between requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading a request's head, since this instant.
    Head(Instant),
    /// Waiting for the next request, since this instant.
    Idle(Instant),
    /// This many requests in flight (more than one only with HTTP/2).
    Busy(usize),
}

/// One connection's phase, watched by [`Activity::expired`].
///
/// A change of phase wakes nobody: the watchdog looks again on its own, never later than the
/// phase's deadline nor than the shortest timeout after it last looked, which no phase entered
/// since can be due before. Waking it on every change woke the connection's own task while it
/// was being polled, and tokio answers that by waking an idle worker: a context switch per
/// request for nothing.
#[derive(Debug)]
pub struct Activity {
    phase: Mutex<Phase>,
}

impl Activity {
    /// A connection opened at `now`: its first request's head is due.
    pub fn new(now: Instant) -> Arc<Activity> {
        Arc::new(Activity {
            phase: Mutex::new(Phase::Head(now)),
        })
    }

    fn set(&self, f: impl FnOnce(Phase) -> Phase) {
        let mut phase = self.phase.lock().unwrap_or_else(|p| p.into_inner());
        *phase = f(*phase);
    }

    /// Bytes arrived at `now`: an idle connection is now reading a head.
    pub fn bytes_read(&self, now: Instant) {
        self.set(|phase| match phase {
            Phase::Idle(_) => Phase::Head(now),
            other => other,
        });
    }

    /// A request's head is in; the request is in flight until the returned guard is dropped
    /// (with its response's body, once that is sent or abandoned).
    pub fn request_started(self: &Arc<Self>) -> InFlight {
        self.set(|phase| match phase {
            Phase::Busy(n) => Phase::Busy(n + 1),
            Phase::Head(_) | Phase::Idle(_) => Phase::Busy(1),
        });
        InFlight(self.clone())
    }

    fn request_ended(&self, now: Instant) {
        self.set(|phase| match phase {
            Phase::Busy(n) if n > 1 => Phase::Busy(n - 1),
            _ => Phase::Idle(now),
        });
    }

    /// When the connection is to be closed if nothing changes (`None`: not while it is so).
    fn deadline(&self, timeouts: &Timeouts) -> Option<Instant> {
        match *self.phase.lock().unwrap_or_else(|p| p.into_inner()) {
            Phase::Head(since) => timeouts.header_read.map(|t| since + t),
            Phase::Idle(since) => timeouts.keep_alive.map(|t| since + t),
            // A request in flight is bounded by its body deadline and its route's timeout.
            Phase::Busy(_) => None,
        }
    }

    /// Resolves when the connection has been in one phase past that phase's timeout.
    pub async fn expired(&self, timeouts: &Timeouts) {
        // A phase entered after the watchdog looks is due no sooner than this after.
        let Some(recheck) = [timeouts.header_read, timeouts.keep_alive]
            .into_iter()
            .flatten()
            .min()
        else {
            return std::future::pending().await;
        };
        loop {
            let now = Instant::now();
            let Some(then) = look_again(self.deadline(timeouts), recheck, now) else {
                return;
            };
            tokio::time::sleep_until(then).await;
        }
    }
}

/// When a watchdog that looked at `now` is to look again (`None`: the phase is past its
/// `deadline`): at the deadline, or after `recheck`, the shortest timeout, if sooner.
fn look_again(deadline: Option<Instant>, recheck: Duration, now: Instant) -> Option<Instant> {
    match deadline {
        Some(deadline) if deadline <= now => None,
        Some(deadline) => Some(deadline.min(now + recheck)),
        None => Some(now + recheck),
    }
}

/// A request in flight on a connection; the connection may idle again once it is dropped.
#[derive(Debug)]
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_ended(Instant::now());
    }
}

/// A connection's socket, telling its [`Activity`] when bytes arrive.
#[derive(Debug)]
pub struct WatchedIo<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T> WatchedIo<T> {
    /// `inner`, watched by `activity`.
    pub fn new(inner: T, activity: Arc<Activity>) -> Self {
        WatchedIo { inner, activity }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WatchedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.bytes_read(Instant::now());
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WatchedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A response body that holds its request's [`InFlight`] until it is sent or abandoned.
#[derive(Debug)]
pub struct Answering<B> {
    body: B,
    _in_flight: InFlight,
}

impl<B> Answering<B> {
    /// `body`, ending `in_flight` when dropped.
    pub fn new(body: B, in_flight: InFlight) -> Self {
        Answering {
            body,
            _in_flight: in_flight,
        }
    }
}

impl<B: Body + Unpin> Body for Answering<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RequestBodyError {
    /// The connection failed, or the framing was bad.
    #[error(transparent)]
    Http(#[from] hyper::Error),
    /// The body did not arrive within its deadline.
    #[error("the request body did not arrive within {} ms", .0.as_millis())]
    TimedOut(Duration),
}

impl From<RequestBodyError> for wasmtime_wasi_http::Error {
    fn from(e: RequestBodyError) -> Self {
        match e {
            RequestBodyError::Http(e) => e.into(),
            RequestBodyError::TimedOut(_) => wasmtime_wasi_http::Error::ConnectionReadTimeout,
        }
    }
}

/// A request body that fails once its deadline passes, whoever is reading it.
#[derive(Debug)]
pub struct DeadlineBody<B> {
    body: B,
    /// `None`: no deadline.
    deadline: Option<(Pin<Box<Sleep>>, Duration)>,
}

impl<B> DeadlineBody<B> {
    /// `body`, due `timeout` after `start` (`None`: whenever).
    pub fn new(body: B, start: Instant, timeout: Option<Duration>) -> Self {
        DeadlineBody {
            body,
            deadline: timeout.map(|t| (Box::pin(tokio::time::sleep_until(start + t)), t)),
        }
    }
}

impl<B> Body for DeadlineBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<RequestBodyError>,
{
    type Data = Bytes;
    type Error = RequestBodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RequestBodyError>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.body).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        // Polled while the body waits: the timer wakes this task when the deadline passes.
        if let Some((sleep, timeout)) = &mut this.deadline
            && sleep.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Some(Err(RequestBodyError::TimedOut(*timeout))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUTS: Timeouts = Timeouts {
        header_read: Some(Duration::from_secs(10)),
        body_read: Some(Duration::from_secs(60)),
        keep_alive: Some(Duration::from_secs(30)),
    };

    #[test]
    fn a_connection_goes_head_busy_idle_head() {
        let t0 = Instant::now();
        let a = Activity::new(t0);
        assert_eq!(a.deadline(&TIMEOUTS), Some(t0 + Duration::from_secs(10)));
        // Bytes of the head do not extend its deadline.
        a.bytes_read(t0 + Duration::from_secs(5));
        assert_eq!(a.deadline(&TIMEOUTS), Some(t0 + Duration::from_secs(10)));
        let first = a.request_started();
        assert_eq!(a.deadline(&TIMEOUTS), None, "no deadline while answering");
        // HTTP/2: a second request while the first is in flight.
        let second = a.request_started();
        drop(first);
        assert_eq!(a.deadline(&TIMEOUTS), None, "one is still in flight");
        drop(second);
        let idle = a.deadline(&TIMEOUTS).unwrap();
        assert!(idle >= t0 + Duration::from_secs(30), "kept alive: {idle:?}");
        // The next request's first byte starts its header deadline.
        let t1 = Instant::now() + Duration::from_secs(1);
        a.bytes_read(t1);
        assert_eq!(a.deadline(&TIMEOUTS), Some(t1 + Duration::from_secs(10)));
        let off = Timeouts {
            header_read: None,
            body_read: None,
            keep_alive: None,
        };
        assert_eq!(a.deadline(&off), None);
    }

    /// No phase a connection enters after the watchdog looks can be due before it looks again,
    /// though nothing wakes it.
    #[test]
    fn the_watchdog_looks_again_before_any_new_phase_is_due() {
        let s = Duration::from_secs;
        let t0 = Instant::now();
        let recheck = s(10);
        // Kept alive since t0: due at t0 + 30 s, but a head may start at any moment and is
        // due 10 s after it does.
        let a = Activity::new(t0);
        a.set(|_| Phase::Idle(t0));
        let next = look_again(a.deadline(&TIMEOUTS), recheck, t0).unwrap();
        assert_eq!(next, t0 + s(10));
        a.bytes_read(t0 + s(1));
        assert!(next <= a.deadline(&TIMEOUTS).unwrap());
        // Looking again at t0 + 10 s: that head is due at t0 + 11 s.
        let next = look_again(a.deadline(&TIMEOUTS), recheck, t0 + s(10)).unwrap();
        assert_eq!(next, t0 + s(11));
        assert_eq!(look_again(a.deadline(&TIMEOUTS), recheck, t0 + s(11)), None);
        // Answering: no deadline of its own, looked at again after the shortest timeout.
        let _busy = a.request_started();
        assert_eq!(
            look_again(a.deadline(&TIMEOUTS), recheck, t0),
            Some(t0 + s(10))
        );
    }

    #[tokio::test]
    async fn the_watchdog_fires_on_a_slow_head_and_on_idleness_only() {
        let ms = Duration::from_millis;
        let timeouts = Timeouts {
            header_read: Some(ms(50)),
            body_read: None,
            keep_alive: Some(ms(100)),
        };
        let a = Activity::new(Instant::now());
        let start = Instant::now();
        a.expired(&timeouts).await;
        assert!(start.elapsed() >= ms(50));
        // Busy: the watchdog waits for the request to end, then for the keep-alive timeout.
        let in_flight = a.request_started();
        let watchdog = {
            let a = a.clone();
            tokio::spawn(async move { a.expired(&timeouts).await })
        };
        tokio::time::sleep(ms(300)).await;
        assert!(!watchdog.is_finished(), "closed while answering");
        let ended = Instant::now();
        drop(in_flight);
        watchdog.await.unwrap();
        assert!(ended.elapsed() >= ms(100));
    }

    #[test]
    fn connections_are_capped_per_network_and_refusals_too() {
        let counts = ConnectionCounts::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let served: Vec<_> = (0..2).map(|_| counts.admit(a)).collect();
        assert!(served.iter().all(|s| matches!(s, Admission::Serve(_))));
        let refused: Vec<_> = (0..2).map(|_| counts.admit(a)).collect();
        assert!(refused.iter().all(|s| matches!(s, Admission::Refuse(_))));
        assert!(matches!(counts.admit(a), Admission::Close));
        assert!(matches!(counts.admit(b), Admission::Serve(_)));
        drop(refused);
        assert_eq!(counts.open(a), 2);
        drop(served);
        assert_eq!(counts.open(a), 0);
        assert!(counts.lock().get(&a).is_none(), "no entry left behind");
        // An IPv6 host counts as its /64.
        let _v6: Vec<_> = (0..2)
            .map(|i| counts.admit(format!("2001:db8::{i}").parse().unwrap()))
            .collect();
        assert!(matches!(
            counts.admit("2001:db8::ffff".parse().unwrap()),
            Admission::Refuse(_)
        ));
        assert!(matches!(
            counts.admit("2001:db8:0:1::1".parse().unwrap()),
            Admission::Serve(_)
        ));
    }

    /// A body whose sender never sends.
    struct Stalled;

    impl Body for Stalled {
        type Data = Bytes;
        type Error = RequestBodyError;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, RequestBodyError>>> {
            Poll::Pending
        }
    }

    #[tokio::test]
    async fn a_body_that_does_not_arrive_fails_at_its_deadline() {
        use http_body_util::BodyExt;
        let start = Instant::now();
        let body = DeadlineBody::new(Stalled, start, Some(Duration::from_millis(50)));
        let err = body.collect().await.unwrap_err();
        assert!(matches!(err, RequestBodyError::TimedOut(_)), "{err}");
        assert!(start.elapsed() >= Duration::from_millis(50));
        // Without a deadline it waits as long as its sender.
        let body = DeadlineBody::new(Stalled, Instant::now(), None);
        let waited = tokio::time::timeout(Duration::from_millis(200), body.collect()).await;
        assert!(waited.is_err());
    }
}
