//! Limits the server applies before any plugin runs: the request body size and a per-tenant
//! request rate (a token bucket per tenant; per client address for callers without a key).

use crate::tenants::TenantId;

pub use crate::config::HttpLimits;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What the rate limiter decided for one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateDecision {
    /// Whether the request may go on.
    pub allowed: bool,
    /// The tenant's requests per minute.
    pub limit: u32,
    /// Requests the tenant may still make right now.
    pub remaining: u32,
    /// Seconds until the bucket is full again.
    pub reset_secs: u64,
    /// Seconds until the next request would be allowed (when refused).
    pub retry_after_secs: u64,
}

/// Buckets kept before full ones are forgotten.
const MAX_BUCKETS: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// One token bucket per tenant, and for callers without a key (`anonymous`) one per client
/// address: otherwise one noisy client would use up the public routes for all, a load
/// balancer's health probes among them.
#[derive(Debug)]
pub struct RateLimiter {
    limits: HttpLimits,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    /// A limiter with `limits`.
    pub fn new(limits: HttpLimits) -> RateLimiter {
        RateLimiter {
            limits,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// The body size limit.
    pub fn max_body(&self) -> u64 {
        self.limits.max_request_body_bytes
    }

    /// Take one request from the bucket of `tenant` (of `tenant` at `client`, for anonymous
    /// callers) at time `now`; `None` when the tenant is not rate limited.
    pub fn check(&self, tenant: &TenantId, client: IpAddr, now: Instant) -> Option<RateDecision> {
        let name = tenant.as_str();
        let per_minute = self
            .limits
            .rate_limit_tenants
            .get(name)
            .copied()
            .unwrap_or(self.limits.rate_limit_per_minute);
        if per_minute == 0 {
            return None;
        }
        let capacity = f64::from(match self.limits.rate_limit_burst {
            0 => per_minute,
            b => b,
        });
        let rate = f64::from(per_minute) / 60.0; // tokens per second
        let mut key = if *tenant == TenantId::anonymous() {
            format!("{name}@{}", client_network(client))
        } else {
            name.to_string()
        };
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(&key) {
            // A full bucket is the same as none: forget those. If that frees nothing, the
            // newcomers share one bucket, so no number of clients grows the map past its cap.
            buckets.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.last).as_secs_f64() * rate < capacity
            });
            if buckets.len() >= MAX_BUCKETS {
                key = format!("{name}@overflow");
            }
        }
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: capacity,
            last: now,
        });
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(capacity);
        bucket.last = now;
        let allowed = bucket.tokens >= 1.0;
        if allowed {
            bucket.tokens -= 1.0;
        }
        let secs = |tokens: f64| Duration::from_secs_f64((tokens / rate).max(0.0)).as_secs_f64();
        Some(RateDecision {
            allowed,
            limit: per_minute,
            remaining: bucket.tokens.floor() as u32,
            reset_secs: secs(capacity - bucket.tokens).ceil() as u64,
            retry_after_secs: if allowed {
                0
            } else {
                secs(1.0 - bucket.tokens).ceil().max(1.0) as u64
            },
        })
    }
}

/// The network a client counts as: its IPv4 address, or its IPv6 /64 (what one host is
/// usually given, and can pick addresses from at will).
fn client_network(client: IpAddr) -> IpAddr {
    match client {
        IpAddr::V4(_) => client,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HERE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn t(name: &str) -> TenantId {
        TenantId::new(name).unwrap()
    }

    fn limiter(per_minute: u32, burst: u32) -> RateLimiter {
        RateLimiter::new(HttpLimits {
            rate_limit_per_minute: per_minute,
            rate_limit_burst: burst,
            rate_limit_tenants: [("vip".to_string(), 0), ("slow".to_string(), 1)].into(),
            ..HttpLimits::default()
        })
    }

    #[test]
    fn a_burst_then_refusals_then_refill() {
        let l = limiter(60, 3);
        let t0 = Instant::now();
        for remaining in [2, 1, 0] {
            let d = l.check(&t("a"), HERE, t0).unwrap();
            assert!(d.allowed);
            assert_eq!((d.limit, d.remaining), (60, remaining));
        }
        let refused = l.check(&t("a"), HERE, t0).unwrap();
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after_secs, 1);
        assert_eq!(refused.reset_secs, 3);
        // Another tenant has its own bucket.
        assert!(l.check(&t("b"), HERE, t0).unwrap().allowed);
        // One token per second at 60/min.
        let later = t0 + Duration::from_millis(1100);
        assert!(l.check(&t("a"), HERE, later).unwrap().allowed);
        assert!(!l.check(&t("a"), HERE, later).unwrap().allowed);
    }

    #[test]
    fn overrides_and_off() {
        let l = limiter(60, 0);
        let t0 = Instant::now();
        assert_eq!(l.check(&t("vip"), HERE, t0), None);
        assert!(l.check(&t("slow"), HERE, t0).unwrap().allowed);
        let d = l.check(&t("slow"), HERE, t0).unwrap();
        assert!(!d.allowed);
        assert_eq!(d.retry_after_secs, 60);
        assert_eq!(limiter(0, 0).check(&t("a"), HERE, t0), None);
    }

    #[test]
    fn callers_without_a_key_have_a_bucket_per_address() {
        let l = limiter(60, 1);
        let t0 = Instant::now();
        let allowed = |tenant: &TenantId, client: &str| {
            l.check(tenant, client.parse().unwrap(), t0)
                .unwrap()
                .allowed
        };
        let anonymous = TenantId::anonymous();
        assert!(allowed(&anonymous, "127.0.0.1"));
        assert!(!allowed(&anonymous, "127.0.0.1"));
        assert!(allowed(&anonymous, "127.0.0.2"));
        // An IPv6 host counts as its /64; the same address mapped into IPv6 as itself.
        assert!(allowed(&anonymous, "2001:db8::1"));
        assert!(!allowed(&anonymous, "2001:db8::ffff:2"));
        assert!(allowed(&anonymous, "2001:db8:0:1::1"));
        assert!(!allowed(&anonymous, "::ffff:127.0.0.2"));
        // A tenant with a key has one bucket wherever it calls from.
        assert!(allowed(&t("a"), "127.0.0.1"));
        assert!(!allowed(&t("a"), "127.0.0.2"));
    }

    #[test]
    fn full_buckets_are_forgotten_when_there_are_many() {
        let l = limiter(60, 5);
        let t0 = Instant::now();
        let anonymous = TenantId::anonymous();
        for i in 0..MAX_BUCKETS as u32 {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            assert!(l.check(&anonymous, ip, t0).unwrap().allowed);
        }
        assert_eq!(l.buckets.lock().unwrap().len(), MAX_BUCKETS);
        // None is full yet: newcomers share one bucket rather than grow the map.
        let newcomer = |i: u32| IpAddr::V4(std::net::Ipv4Addr::from(0x0b00_0000 + i));
        for i in 0..5 {
            assert!(l.check(&anonymous, newcomer(i), t0).unwrap().allowed);
        }
        assert!(!l.check(&anonymous, newcomer(5), t0).unwrap().allowed);
        assert_eq!(l.buckets.lock().unwrap().len(), MAX_BUCKETS + 1);
        // Ten seconds on, every one of them is full again: the next newcomer clears them.
        let later = t0 + Duration::from_secs(10);
        let d = l.check(&anonymous, HERE, later).unwrap();
        assert!(d.allowed);
        assert_eq!(l.buckets.lock().unwrap().len(), 1);
    }
}
