//! Limits the server applies before any plugin runs: the request body size and a per-tenant
//! request rate (a token bucket per tenant).

use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Limits of the HTTP front, from the `[http]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpLimits {
    /// The largest request body, in bytes; larger ones get 413, chunked ones included.
    pub max_request_body_bytes: u64,
    /// Requests per minute per tenant; 0 turns rate limiting off.
    pub rate_limit_per_minute: u32,
    /// How many requests a tenant may make at once above the steady rate; 0 means as many as
    /// `rate_limit_per_minute`.
    pub rate_limit_burst: u32,
    /// Per-tenant overrides of `rate_limit_per_minute` (0 exempts the tenant).
    #[serde(default)]
    pub rate_limit_tenants: BTreeMap<String, u32>,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_request_body_bytes: 10 << 20,
            rate_limit_per_minute: 0,
            rate_limit_burst: 0,
            rate_limit_tenants: BTreeMap::new(),
        }
    }
}

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

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// One token bucket per tenant. Tenants are the configured ones plus `local` and
/// `anonymous`, so the map stays small.
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

    /// Take one request from `tenant`'s bucket at time `now`; `None` when the tenant is not
    /// rate limited.
    pub fn check(&self, tenant: &str, now: Instant) -> Option<RateDecision> {
        let per_minute = self
            .limits
            .rate_limit_tenants
            .get(tenant)
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
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = buckets.entry(tenant.to_string()).or_insert(Bucket {
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

#[cfg(test)]
mod tests {
    use super::*;

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
            let d = l.check("a", t0).unwrap();
            assert!(d.allowed);
            assert_eq!((d.limit, d.remaining), (60, remaining));
        }
        let refused = l.check("a", t0).unwrap();
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after_secs, 1);
        assert_eq!(refused.reset_secs, 3);
        // Another tenant has its own bucket.
        assert!(l.check("b", t0).unwrap().allowed);
        // One token per second at 60/min.
        let later = t0 + Duration::from_millis(1100);
        assert!(l.check("a", later).unwrap().allowed);
        assert!(!l.check("a", later).unwrap().allowed);
    }

    #[test]
    fn overrides_and_off() {
        let l = limiter(60, 0);
        let t0 = Instant::now();
        assert_eq!(l.check("vip", t0), None);
        assert!(l.check("slow", t0).unwrap().allowed);
        let d = l.check("slow", t0).unwrap();
        assert!(!d.allowed);
        assert_eq!(d.retry_after_secs, 60);
        assert_eq!(limiter(0, 0).check("a", t0), None);
    }
}
