//! The delivery worker: it takes due deliveries from the outbox, POSTs each one's stored body
//! signed with its webhook's secret, and records the outcome: delivered on a 2xx, otherwise
//! another attempt after an exponential backoff with jitter, until the last attempt marks it
//! failed. At least once: an attempt whose outcome was not recorded (gantry was killed) is
//! made again after a restart, with the same delivery id and the same bytes.
//!
//! Concurrency is bounded twice: `max_in_flight` over the node, `max_in_flight_per_tenant` per
//! tenant, so that one tenant's slow receiver holds only its own share of the slots.

use super::target::{self, Allowed};
use crate::config::WebhooksConfig;
use crate::store::{AttemptRecord, DeliveryRecord, DeliveryStatus, WebhookStore, now_ms};
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use sha2::Sha256;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::Notify;

/// How long the worker sleeps when nothing is due and nothing wakes it: a safety net only
/// (new deliveries, redeliveries and finished attempts all wake it).
const IDLE: Duration = Duration::from_secs(30);
/// The most of a receiver's answer read (and thrown away) before the connection is dropped.
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// The longest error text kept with a delivery.
const MAX_ERROR_CHARS: usize = 500;

/// `sha256=<hex>`: HMAC-SHA256 of `body` with `secret`, as `X-Signature-256` carries it.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any size");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The wait after the `attempts`-th failed attempt: `base · 2^(attempts-1)`, capped, of which
/// a random part (`unit` in [0, 1)) is taken off so that many receivers failing together do
/// not retry in lockstep (at least half the wait remains).
pub fn backoff(config: &WebhooksConfig, attempts: u32, unit: f64) -> Duration {
    let exp = attempts.saturating_sub(1).min(40);
    let full = config
        .backoff_base_ms
        .saturating_mul(1u64 << exp)
        .min(config.backoff_cap_ms);
    let jitter = (full as f64 / 2.0 * unit.clamp(0.0, 1.0)) as u64;
    Duration::from_millis(full - jitter)
}

/// A random number in [0, 1) for the jitter.
fn random_unit() -> f64 {
    let mut bytes = [0u8; 8];
    // The system's generator; if it fails, no jitter is still a correct wait.
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

/// What the worker has in flight.
#[derive(Debug, Default)]
struct InFlight {
    ids: HashSet<String>,
    per_tenant: HashMap<String, usize>,
}

/// The worker: started once per node.
#[derive(Clone)]
pub(crate) struct Worker {
    store: Arc<dyn WebhookStore>,
    config: Arc<WebhooksConfig>,
    allowed: Arc<Allowed>,
    wake: Arc<Notify>,
    in_flight: Arc<Mutex<InFlight>>,
}

impl Worker {
    pub(crate) fn new(
        store: Arc<dyn WebhookStore>,
        config: Arc<WebhooksConfig>,
        allowed: Arc<Allowed>,
        wake: Arc<Notify>,
    ) -> Worker {
        Worker {
            store,
            config,
            allowed,
            wake,
            in_flight: Arc::default(),
        }
    }

    fn in_flight(&self) -> std::sync::MutexGuard<'_, InFlight> {
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Start what is due, then wait to be woken or for the next due time; forever.
    pub(crate) async fn run(self) {
        loop {
            let wait = match self.start_due().await {
                Ok(wait) => wait,
                Err(e) => {
                    tracing::warn!("webhook deliveries could not be read: {e}");
                    Some(Duration::from_secs(1))
                }
            };
            let notified = self.wake.notified();
            match wait {
                Some(wait) => {
                    let _ = tokio::time::timeout(wait, notified).await;
                }
                None => notified.await,
            }
        }
    }

    /// Start the due deliveries there is room for; how long to wait before looking again
    /// (`None`: until woken, since what is due waits for a slot that a finished attempt frees).
    async fn start_due(&self) -> Result<Option<Duration>, crate::store::StoreError> {
        let now = now_ms();
        let (busy, room) = {
            let f = self.in_flight();
            (
                f.ids.iter().cloned().collect::<Vec<_>>(),
                self.config.max_in_flight.saturating_sub(f.ids.len()),
            )
        };
        let mut left_waiting = false;
        if room > 0 {
            let due = self
                .store
                .due_deliveries(now, self.config.max_in_flight_per_tenant, room * 2, &busy)
                .await?;
            for d in due {
                if !self.admit(&d) {
                    left_waiting = true;
                    continue;
                }
                let worker = self.clone();
                tokio::spawn(async move { worker.attempt(d).await });
            }
        } else {
            left_waiting = true;
        }
        if left_waiting {
            return Ok(None);
        }
        let busy: Vec<String> = self.in_flight().ids.iter().cloned().collect();
        Ok(Some(match self.store.next_due(&busy).await? {
            Some(at) => {
                Duration::from_millis((at - now_ms()).clamp(0, IDLE.as_millis() as i64) as u64)
            }
            None => IDLE,
        }))
    }

    /// Take a slot for `d` if its tenant and the node have room.
    fn admit(&self, d: &DeliveryRecord) -> bool {
        let mut f = self.in_flight();
        let tenant = f.per_tenant.get(&d.tenant).copied().unwrap_or(0);
        if f.ids.len() >= self.config.max_in_flight
            || tenant >= self.config.max_in_flight_per_tenant
            || f.ids.contains(&d.id)
        {
            return false;
        }
        f.ids.insert(d.id.clone());
        *f.per_tenant.entry(d.tenant.clone()).or_default() += 1;
        true
    }

    fn release(&self, d: &DeliveryRecord) {
        let mut f = self.in_flight();
        f.ids.remove(&d.id);
        if let Some(n) = f.per_tenant.get_mut(&d.tenant) {
            *n -= 1;
            if *n == 0 {
                f.per_tenant.remove(&d.tenant);
            }
        }
    }

    /// One attempt, its outcome recorded; the slot is given back and the loop woken.
    async fn attempt(self, d: DeliveryRecord) {
        let outcome = self.send(&d).await;
        let attempts = d.attempts + 1;
        let at = now_ms();
        let record = match outcome {
            Ok(status) if (200..300).contains(&status) => AttemptRecord {
                status: DeliveryStatus::Delivered,
                next_attempt_at: None,
                last_status: Some(status),
                last_error: None,
                at,
            },
            other => {
                let (last_status, last_error) = match other {
                    Ok(status) => (
                        Some(status),
                        Some(format!("the receiver answered {status}")),
                    ),
                    Err(e) => (None, Some(e.chars().take(MAX_ERROR_CHARS).collect())),
                };
                let failed = attempts >= self.config.max_attempts;
                AttemptRecord {
                    status: if failed {
                        DeliveryStatus::Failed
                    } else {
                        DeliveryStatus::Pending
                    },
                    next_attempt_at: (!failed).then(|| {
                        at + backoff(&self.config, attempts, random_unit()).as_millis() as i64
                    }),
                    last_status,
                    last_error,
                    at,
                }
            }
        };
        tracing::debug!(
            delivery = %d.id,
            webhook = %d.webhook_id,
            attempt = attempts,
            status = record.status.as_str(),
            "webhook attempt"
        );
        if let Err(e) = self.store.record_attempt(&d.id, &record).await {
            // Not recorded: the delivery stays due and is attempted again (at least once).
            tracing::warn!(delivery = %d.id, "a webhook attempt's outcome was not stored: {e}");
        }
        self.release(&d);
        self.wake.notify_one();
    }

    /// POST the delivery once, within the attempt timeout: the receiver's status, or why
    /// there was none.
    async fn send(&self, d: &DeliveryRecord) -> Result<u16, String> {
        let Some(webhook) = self
            .store
            .get_webhook(&d.tenant, &d.webhook_id)
            .await
            .map_err(|e| format!("the webhook could not be read: {e}"))?
        else {
            return Err("the webhook is gone".into());
        };
        let timeout = Duration::from_millis(self.config.timeout_ms);
        let attempt = async {
            let target = target::resolve(&webhook.url, &self.allowed).await?;
            post(&target, &webhook.secret, d).await
        };
        tokio::time::timeout(timeout, attempt)
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {} ms", self.config.timeout_ms)))
    }
}

/// Connect to one of the checked addresses (never a fresh lookup) and POST the body.
async fn post(target: &target::Target, secret: &str, d: &DeliveryRecord) -> Result<u16, String> {
    let mut last = String::from("no address to connect to");
    let mut stream = None;
    for addr in &target.addrs {
        match TcpStream::connect(addr).await {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = format!("connecting to {addr}: {e}"),
        }
    }
    let stream = stream.ok_or(last)?;
    let _ = stream.set_nodelay(true);
    if target.url.scheme() == "https" {
        let name = tokio_rustls::rustls::pki_types::ServerName::try_from(target.host.clone())
            .map_err(|e| format!("{}: {e}", target.host))?;
        let tls = crate::tasks::egress::tls_connector()
            .connect(name, stream)
            .await
            .map_err(|e| format!("TLS with {}: {e}", target.host))?;
        exchange(TokioIo::new(tls), target, secret, d).await
    } else {
        exchange(TokioIo::new(stream), target, secret, d).await
    }
}

async fn exchange<T>(
    io: TokioIo<T>,
    target: &target::Target,
    secret: &str,
    d: &DeliveryRecord,
) -> Result<u16, String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let default_port = target.url.port().is_none();
    let host = match (target.host.parse::<std::net::Ipv6Addr>(), default_port) {
        (Ok(_), true) => format!("[{}]", target.host),
        (Ok(_), false) => format!("[{}]:{}", target.host, target.port),
        (Err(_), true) => target.host.clone(),
        (Err(_), false) => format!("{}:{}", target.host, target.port),
    };
    let path = match target.url.query() {
        Some(q) => format!("{}?{q}", target.url.path()),
        None => target.url.path().to_string(),
    };
    let request = hyper::Request::post(path)
        .header(hyper::header::HOST, host)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(hyper::header::USER_AGENT, "gantry-webhooks")
        .header("x-signature-256", signature(secret, &d.body))
        .header("x-delivery-id", &d.id)
        .header("x-event-type", &d.event)
        .body(Full::new(Bytes::from(d.body.clone())))
        .map_err(|e| format!("building the request: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("sending: {e}"))?;
    let status = response.status().as_u16();
    // Read a little of the answer so a keep-alive receiver sees a finished exchange; its
    // content is not used.
    let _ = http_body_util::Limited::new(response.into_body(), MAX_ANSWER_BYTES)
        .collect()
        .await;
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hmac_sha256_of_the_exact_bytes() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_ne!(signature("k", b"{\"a\":1}"), signature("k", b"{\"a\": 1}"));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_jitter_takes_at_most_half() {
        let config = WebhooksConfig {
            backoff_base_ms: 100,
            backoff_cap_ms: 1000,
            ..WebhooksConfig::default()
        };
        let ms = |n, unit| backoff(&config, n, unit).as_millis();
        assert_eq!(
            [ms(1, 0.0), ms(2, 0.0), ms(3, 0.0), ms(4, 0.0)],
            [100, 200, 400, 800]
        );
        assert_eq!(ms(5, 0.0), 1000);
        assert_eq!(ms(60, 0.0), 1000);
        assert_eq!(ms(3, 1.0), 200);
        for _ in 0..100 {
            let d = ms(3, random_unit());
            assert!((200..=400).contains(&d), "{d}");
        }
    }
}
