//! Exponential backoff on failed logins, per key (a username, a client address).
//!
//! A few failures are free, then each further one doubles the wait up to a cap, and a key that
//! has not failed for a while starts afresh. Logins use it per username and per address;
//! `http::auth::AuthThrottle` per address for failed API keys. Hand-written because the
//! rate-limit crate has quotas but no backoff.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Keys tracked at most; past that, keys that no longer block are dropped first, then the
/// least recently failed ones, so many keys cannot grow the map without bound.
pub const MAX_TRACKED: usize = 4096;

/// Failures per key, with exponential backoff.
#[derive(Debug)]
pub struct Backoff<K> {
    free: u32,
    max_wait: Duration,
    forget_after: Duration,
    failures: Mutex<HashMap<K, Failures>>,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    blocked_until: Instant,
}

impl<K: Hash + Eq + Clone> Backoff<K> {
    /// `free` failures per key before it waits; then 1 s, doubling each failure, up to
    /// `max_wait`. A key without a failure for `forget_after` starts afresh.
    pub fn new(free: u32, max_wait: Duration, forget_after: Duration) -> Self {
        Backoff {
            free,
            max_wait,
            forget_after,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Seconds `key` still has to wait, if any.
    pub fn blocked(&self, key: &K, now: Instant) -> Option<u64> {
        let map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let f = map.get(key)?;
        (f.blocked_until > now).then(|| (f.blocked_until - now).as_secs().max(1))
    }

    /// Count a failure of `key`.
    pub fn failed(&self, key: &K, now: Instant) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_TRACKED {
            map.retain(|_, f| f.blocked_until > now && now - f.last < self.forget_after);
        }
        if map.len() >= MAX_TRACKED {
            let mut lasts: Vec<Instant> = map.values().map(|f| f.last).collect();
            let cut = lasts.len() - MAX_TRACKED / 2;
            let (_, &mut oldest_kept, _) = lasts.select_nth_unstable(cut);
            map.retain(|_, f| f.last >= oldest_kept);
        }
        let f = map.entry(key.clone()).or_insert(Failures {
            count: 0,
            last: now,
            blocked_until: now,
        });
        if now - f.last > self.forget_after {
            f.count = 0;
        }
        f.count += 1;
        f.last = now;
        if f.count > self.free {
            let doublings = (f.count - self.free - 1).min(16);
            let wait = Duration::from_secs(1 << doublings).min(self.max_wait);
            f.blocked_until = now + wait;
        }
    }

    /// How many keys are tracked.
    pub fn tracked(&self) -> usize {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// Forget `key`'s failures (it succeeded).
    pub fn clear(&self, key: &K) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(key);
    }
}

/// The key an address is tracked under: IPv4 as is, IPv6 by its /64 (one host holds a /64).
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_back_off_per_key_and_a_success_clears_them() {
        let backoff = Backoff::new(3, Duration::from_secs(300), Duration::from_secs(900));
        let t0 = Instant::now();
        for _ in 0..3 {
            backoff.failed(&"ann", t0);
        }
        assert_eq!(
            backoff.blocked(&"ann", t0),
            None,
            "the first failures are free"
        );
        backoff.failed(&"ann", t0);
        assert_eq!(backoff.blocked(&"ann", t0), Some(1));
        backoff.failed(&"ann", t0);
        assert_eq!(
            backoff.blocked(&"ann", t0),
            Some(2),
            "each failure doubles it"
        );
        for _ in 0..30 {
            backoff.failed(&"ann", t0);
        }
        assert_eq!(backoff.blocked(&"ann", t0), Some(300), "up to the cap");
        assert_eq!(backoff.blocked(&"ben", t0), None, "per key");
        assert_eq!(backoff.blocked(&"ann", t0 + Duration::from_secs(300)), None);
        backoff.clear(&"ann");
        backoff.failed(&"ann", t0);
        assert_eq!(backoff.blocked(&"ann", t0), None, "cleared");
    }

    #[test]
    fn ipv6_addresses_count_by_their_64() {
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let b: IpAddr = "2001:db8::ffff".parse().unwrap();
        let c: IpAddr = "2001:db8:0:1::1".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key(c));
    }
}
