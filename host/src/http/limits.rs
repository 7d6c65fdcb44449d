//! Limits the server applies before any plugin runs: the request body size and a per-tenant
//! request rate (`governor`'s GCRA, a token bucket kept as one timestamp: one state per tenant;
//! per client address for callers without a key).

use crate::tenants::TenantId;

pub use crate::config::HttpLimits;
use governor::Quota;
use governor::middleware::StateInformationMiddleware;
use governor::nanos::Nanos;
use governor::state::StateStore;
use governor::state::keyed::{DashMapStateStore, ShrinkableKeyedStateStore};
use std::cell::Cell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
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
    /// Seconds until the bucket is full again (when allowed, counted in whole requests: up to
    /// one request's refill time more than the exact figure).
    pub reset_secs: u64,
    /// Seconds until the next request would be allowed (when refused).
    pub retry_after_secs: u64,
}

/// Buckets one quota keeps before full ones are forgotten.
const MAX_BUCKETS: usize = 4096;

/// Per tenant (for `anonymous`, per tenant and client network), the rate limiting state.
type Limiter = governor::RateLimiter<String, Buckets, CallClock, StateInformationMiddleware>;

/// One quota: the limiter of the tenants it applies to, and the figures its decisions report.
#[derive(Debug)]
struct Tier {
    per_minute: u32,
    /// Requests a full bucket holds.
    capacity: u32,
    /// The time to earn one request back.
    interval: Duration,
    buckets: Buckets,
    limiter: Limiter,
}

impl Tier {
    /// `None` when `per_minute` is 0 (not limited). A `burst` of 0 is one minute's worth.
    fn new(per_minute: u32, burst: u32) -> Option<Tier> {
        let rate = NonZeroU32::new(per_minute)?;
        let capacity = NonZeroU32::new(burst).unwrap_or(rate);
        let quota = Quota::per_minute(rate).allow_burst(capacity);
        let buckets = Buckets::default();
        Some(Tier {
            per_minute,
            capacity: capacity.get(),
            interval: quota.replenish_interval(),
            buckets: buckets.clone(),
            limiter: Limiter::new(quota, buckets, CallClock),
        })
    }

    /// Take one request from the bucket of `key` at `now`; the bucket of `overflow` instead
    /// when the limiter holds [`MAX_BUCKETS`] others that are not full.
    fn take(&self, key: String, overflow: impl FnOnce() -> String, now: Instant) -> RateDecision {
        let outcome = CallClock::at(now, || {
            let mut key = key;
            if self.buckets.0.len() >= MAX_BUCKETS && !self.buckets.0.contains_key(&key) {
                // A full bucket is the same as none: forget those (those full for at least one
                // refill interval). If that frees nothing, the newcomers share one bucket, so
                // no number of clients grows the map past its cap (by more than the newcomers
                // checked at the same moment: the count and the insert are not one step).
                self.limiter.retain_recent();
                if self.buckets.0.len() >= MAX_BUCKETS {
                    key = overflow();
                }
            }
            self.limiter.check_key(&key)
        });
        match outcome {
            Ok(state) => {
                let remaining = state.remaining_burst_capacity();
                RateDecision {
                    allowed: true,
                    limit: self.per_minute,
                    remaining,
                    // governor tells whole requests left, not the fraction of the next one.
                    reset_secs: ceil_secs(self.interval * (self.capacity - remaining)),
                    retry_after_secs: 0,
                }
            }
            Err(refused) => {
                // Until one request is earned back, then the rest of the bucket.
                let wait = refused.wait_time_from(now);
                RateDecision {
                    allowed: false,
                    limit: self.per_minute,
                    remaining: 0,
                    reset_secs: ceil_secs(wait + self.interval * (self.capacity - 1)),
                    retry_after_secs: ceil_secs(wait).max(1),
                }
            }
        }
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// The clock the limiters read: the `now` handed to [`RateLimiter::check`] while that call is
/// under way on this thread, the real time otherwise. governor reads its clock, while callers
/// (and tests) hand the time in; a check runs synchronously on one thread, so a thread-local is
/// exactly the call's.
#[derive(Debug, Clone, Copy, Default)]
struct CallClock;

thread_local! {
    static NOW: Cell<Option<Instant>> = const { Cell::new(None) };
}

impl CallClock {
    fn at<T>(now: Instant, f: impl FnOnce() -> T) -> T {
        let outer = NOW.replace(Some(now));
        let result = f();
        NOW.set(outer);
        result
    }
}

impl governor::clock::Clock for CallClock {
    type Instant = Instant;

    fn now(&self) -> Instant {
        NOW.get().unwrap_or_else(Instant::now)
    }
}

/// governor's DashMap state store, shared with [`Tier`]: the limiter tells how many keys it
/// holds, not whether it holds one, which the cap on keys needs.
#[derive(Debug, Clone, Default)]
struct Buckets(Arc<DashMapStateStore<String>>);

impl StateStore for Buckets {
    type Key = String;

    fn measure_and_replace<T, F, E>(&self, key: &String, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        self.0.measure_and_replace(key, f)
    }
}

impl ShrinkableKeyedStateStore<String> for Buckets {
    fn retain_recent(&self, drop_below: Nanos) {
        self.0.retain_recent(drop_below);
    }

    fn shrink_to_fit(&self) {
        self.0.shrink_to_fit();
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// One bucket per tenant, and for callers without a key (`anonymous`) one per client address:
/// otherwise one noisy client would use up the public routes for all, a load balancer's health
/// probes among them.
#[derive(Debug)]
pub struct RateLimiter {
    max_body: u64,
    /// For tenants without an override; `None` when off.
    default: Option<Tier>,
    /// Per tenant with an override; `None` for those exempt (an override of 0).
    overrides: HashMap<String, Option<Tier>>,
    /// Per user on `user_auth` routes; `None` when off.
    users: Option<Tier>,
    /// Per client network on `user_auth` routes, for callers without credentials.
    public: Option<Tier>,
}

impl RateLimiter {
    /// A limiter with `limits`.
    pub fn new(limits: HttpLimits) -> RateLimiter {
        let burst = limits.rate_limit_burst;
        RateLimiter {
            max_body: limits.max_request_body_bytes,
            default: Tier::new(limits.rate_limit_per_minute, burst),
            overrides: limits
                .rate_limit_tenants
                .iter()
                .map(|(tenant, &per_minute)| (tenant.clone(), Tier::new(per_minute, burst)))
                .collect(),
            users: Tier::new(limits.user_rate_limit_per_minute, 0),
            public: Tier::new(limits.public_rate_limit_per_minute, 0),
        }
    }

    /// On a `user_auth` route: take one request from the bucket of `user` (a principal's id),
    /// or of `client`'s network for a caller without credentials; `None` when that budget is
    /// off.
    pub fn check_user(
        &self,
        user: Option<&str>,
        client: IpAddr,
        now: Instant,
    ) -> Option<RateDecision> {
        match user {
            Some(id) => self
                .users
                .as_ref()
                .map(|tier| tier.take(format!("user:{id}"), || "user@overflow".into(), now)),
            None => self.public.as_ref().map(|tier| {
                tier.take(
                    format!("public@{}", client_network(client)),
                    || "public@overflow".into(),
                    now,
                )
            }),
        }
    }

    /// The body size limit.
    pub fn max_body(&self) -> u64 {
        self.max_body
    }

    /// Take one request from the bucket of `tenant` (of `tenant` at `client`, for anonymous
    /// callers) at time `now`; `None` when the tenant is not rate limited.
    pub fn check(&self, tenant: &TenantId, client: IpAddr, now: Instant) -> Option<RateDecision> {
        let name = tenant.as_str();
        let tier = match self.overrides.get(name) {
            Some(tier) => tier.as_ref(),
            None => self.default.as_ref(),
        }?;
        let key = if *tenant == TenantId::anonymous() {
            format!("{name}@{}", client_network(client))
        } else {
            name.to_string()
        };
        Some(tier.take(key, || format!("{name}@overflow"), now))
    }
}

/// The network a client counts as: its IPv4 address, or its IPv6 /64 (what one host is
/// usually given, and can pick addresses from at will).
pub(crate) fn client_network(client: IpAddr) -> IpAddr {
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

    /// The keys the default quota holds.
    fn keys(l: &RateLimiter) -> usize {
        l.default.as_ref().unwrap().buckets.0.len()
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
        assert_eq!(keys(&l), MAX_BUCKETS);
        // None is full yet: newcomers share one bucket rather than grow the map.
        let newcomer = |i: u32| IpAddr::V4(std::net::Ipv4Addr::from(0x0b00_0000 + i));
        for i in 0..5 {
            assert!(l.check(&anonymous, newcomer(i), t0).unwrap().allowed);
        }
        assert!(!l.check(&anonymous, newcomer(5), t0).unwrap().allowed);
        assert_eq!(keys(&l), MAX_BUCKETS + 1);
        // Ten seconds on, every one of them is full again: the next newcomer clears them.
        let later = t0 + Duration::from_secs(10);
        let d = l.check(&anonymous, HERE, later).unwrap();
        assert!(d.allowed);
        assert_eq!(keys(&l), 1);
    }

    #[test]
    fn the_rate_holds_over_time() {
        // 60/min without a burst: one request a second, however often they come.
        let l = limiter(60, 1);
        let t0 = Instant::now();
        let allowed = (0..100)
            .filter(|i| {
                let now = t0 + Duration::from_millis(100) * *i;
                l.check(&t("a"), HERE, now).unwrap().allowed
            })
            .count();
        assert_eq!(allowed, 10);
    }

    #[test]
    fn overrides_share_the_burst_and_report_their_own_figures() {
        // The burst applies to overrides too: `slow` (1/min) may make 2 at once.
        let l = limiter(60, 2);
        let t0 = Instant::now();
        for remaining in [1, 0] {
            let d = l.check(&t("slow"), HERE, t0).unwrap();
            assert!(d.allowed);
            assert_eq!((d.limit, d.remaining), (1, remaining));
        }
        let d = l.check(&t("slow"), HERE, t0).unwrap();
        assert!(!d.allowed);
        assert_eq!((d.limit, d.remaining), (1, 0));
        assert_eq!((d.retry_after_secs, d.reset_secs), (60, 120));
        // Half a minute on, it is still refused, for the other half.
        let d = l
            .check(&t("slow"), HERE, t0 + Duration::from_secs(30))
            .unwrap();
        assert!(!d.allowed);
        assert_eq!((d.retry_after_secs, d.reset_secs), (30, 90));
        assert!(
            l.check(&t("slow"), HERE, t0 + Duration::from_secs(60))
                .unwrap()
                .allowed
        );
        // The default quota's tenants are untouched by it.
        assert_eq!(l.check(&t("a"), HERE, t0).unwrap().limit, 60);
        // Limits off by default still apply to a tenant with an override.
        let l = RateLimiter::new(HttpLimits {
            rate_limit_per_minute: 0,
            rate_limit_tenants: [("slow".to_string(), 1)].into(),
            ..HttpLimits::default()
        });
        assert_eq!(l.check(&t("a"), HERE, t0), None);
        assert!(l.check(&t("slow"), HERE, t0).unwrap().allowed);
        assert!(!l.check(&t("slow"), HERE, t0).unwrap().allowed);
    }

    #[test]
    fn reset_is_exact_when_refused_and_at_most_one_refill_over_when_allowed() {
        // 30/min: one request back every 2 s; a bucket of 2.
        let l = limiter(30, 2);
        let t0 = Instant::now();
        assert!(l.check(&t("a"), HERE, t0).unwrap().allowed);
        let d = l.check(&t("a"), HERE, t0).unwrap();
        assert!(d.allowed);
        assert_eq!((d.remaining, d.reset_secs), (0, 4));
        let d = l
            .check(&t("a"), HERE, t0 + Duration::from_millis(500))
            .unwrap();
        assert!(!d.allowed);
        assert_eq!((d.retry_after_secs, d.reset_secs), (2, 4));
        // 3 s on, 1.5 requests are back: one is taken, half of one is left; the bucket is full
        // in 3 s, reported as 4 (two whole requests to earn back).
        let d = l.check(&t("a"), HERE, t0 + Duration::from_secs(3)).unwrap();
        assert!(d.allowed);
        assert_eq!((d.remaining, d.reset_secs), (0, 4));
    }

    #[test]
    fn one_bucket_across_threads() {
        let l = limiter(60, 10);
        let t0 = Instant::now();
        let allowed: usize = std::thread::scope(|s| {
            let workers: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        (0..50)
                            .filter(|_| l.check(&t("a"), HERE, t0).unwrap().allowed)
                            .count()
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).sum()
        });
        assert_eq!(allowed, 10);
    }

    #[test]
    fn users_have_their_own_budget_and_anonymous_callers_one_per_address() {
        let limits = RateLimiter::new(HttpLimits {
            user_rate_limit_per_minute: 2,
            public_rate_limit_per_minute: 1,
            ..HttpLimits::default()
        });
        let now = Instant::now();
        for _ in 0..2 {
            assert!(limits.check_user(Some("ann"), HERE, now).unwrap().allowed);
        }
        let refused = limits.check_user(Some("ann"), HERE, now).unwrap();
        assert!(!refused.allowed && refused.retry_after_secs >= 1);
        // Another user of the same tenant and address is not held back by Ann.
        assert!(limits.check_user(Some("bob"), HERE, now).unwrap().allowed);
        assert!(limits.check_user(None, HERE, now).unwrap().allowed);
        assert!(!limits.check_user(None, HERE, now).unwrap().allowed);
        let elsewhere = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 7));
        assert!(limits.check_user(None, elsewhere, now).unwrap().allowed);
        let off = RateLimiter::new(HttpLimits {
            user_rate_limit_per_minute: 0,
            ..HttpLimits::default()
        });
        assert!(off.check_user(Some("ann"), HERE, now).is_none());
    }
}
