//! Who is calling: the tenant a request's key names, refusing ambiguous credentials, and a
//! per-address backoff on failed keys so that keys cannot be guessed at line rate. On a
//! `user_auth` route, a user's access token too.

use super::router::RouteTarget;
use crate::tenants::{AmbiguousCredentials, ApiKeys, TenantId, request_key};
use crate::users::backoff::{Backoff, address_key};
use crate::users::{Principal, TokenError, Users};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Failed keys an address may present before it has to wait.
const FREE_FAILURES: u32 = 10;
/// The longest an address waits after its last failed key.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// After this long without a failure an address starts afresh.
const FORGET_AFTER: Duration = Duration::from_secs(600);

/// Why a request was not let in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No key, or an unknown one (401).
    Unauthorized(&'static str),
    /// Two different keys (400).
    Ambiguous,
    /// Too many failed keys from this address lately (429, retry after this many seconds).
    Throttled(u64),
    /// On a `user_auth` route: no credentials (401 `AUTH_TOKEN_MISSING`).
    TokenMissing,
    /// On a `user_auth` route: a token or key not honoured (401 `AUTH_TOKEN_INVALID`).
    TokenInvalid,
    /// On a `user_auth` route: the token's user is disabled (401 `AUTH_ACCOUNT_DISABLED`).
    AccountDisabled,
    /// The store could not say (503).
    Unavailable,
}

/// Failed authentications per client address (an IPv6 client's /64), with exponential
/// backoff: after [`FREE_FAILURES`], each further failure doubles the wait, up to
/// [`MAX_BACKOFF`].
#[derive(Debug)]
pub struct AuthThrottle {
    by_address: Backoff<IpAddr>,
}

impl Default for AuthThrottle {
    fn default() -> Self {
        AuthThrottle {
            by_address: Backoff::new(FREE_FAILURES, MAX_BACKOFF, FORGET_AFTER),
        }
    }
}

impl AuthThrottle {
    /// Seconds `client` still has to wait before presenting a key, if any.
    pub fn blocked(&self, client: IpAddr, now: Instant) -> Option<u64> {
        self.by_address.blocked(&address_key(client), now)
    }

    /// Count a failed key from `client`.
    pub fn failed(&self, client: IpAddr, now: Instant) {
        self.by_address.failed(&address_key(client), now);
    }
}

/// The caller's tenant: none needed without keys; a public route's caller without a key is
/// `anonymous`; otherwise the tenant its key names.
pub fn authenticate(
    keys: &ApiKeys,
    throttle: &AuthThrottle,
    client: IpAddr,
    target: Option<&RouteTarget>,
    headers: &hyper::HeaderMap,
) -> Result<TenantId, Refusal> {
    if keys.is_empty() {
        return Ok(TenantId::local());
    }
    let key = request_key(headers).map_err(|AmbiguousCredentials| Refusal::Ambiguous)?;
    match key {
        Some(key) => {
            let now = Instant::now();
            if let Some(wait) = throttle.blocked(client, now) {
                return Err(Refusal::Throttled(wait));
            }
            keys.resolve(key).cloned().ok_or_else(|| {
                throttle.failed(client, now);
                Refusal::Unauthorized("unknown API key")
            })
        }
        None if target.is_some_and(|t| t.public) => Ok(TenantId::anonymous()),
        None => Err(Refusal::Unauthorized(
            "an API key is required: send Authorization: Bearer KEY or X-Api-Key: KEY",
        )),
    }
}

/// Whether a credential has a JWT's shape (three dot-separated parts); an API key does not
/// need to avoid dots, so a known key is always tried first.
fn looks_like_jwt(credential: &str) -> bool {
    credential.split('.').count() == 3
}

/// The caller on a `user_auth` route: its tenant, and the user it acts as. An API key (in
/// `Authorization: Bearer` or `X-Api-Key`) is its tenant's service user with every permission;
/// any other bearer credential of a JWT's shape must be a valid, unrevoked access token of an
/// enabled user. Without configured keys a request without credentials is tenant `local`'s
/// service user, as everywhere else on such a node. A public route's caller without
/// credentials is `anonymous`, with no user.
pub async fn authenticate_user(
    keys: &ApiKeys,
    throttle: &AuthThrottle,
    users: &Users,
    client: IpAddr,
    target: &RouteTarget,
    headers: &hyper::HeaderMap,
) -> Result<(TenantId, Option<Principal>), Refusal> {
    let credential = request_key(headers).map_err(|AmbiguousCredentials| Refusal::Ambiguous)?;
    let Some(credential) = credential else {
        if keys.is_empty() {
            let local = TenantId::local();
            let service = Principal::service(&local);
            return Ok((local, Some(service)));
        }
        if target.public {
            return Ok((TenantId::anonymous(), None));
        }
        return Err(Refusal::TokenMissing);
    };
    if !looks_like_jwt(credential) && !keys.is_empty() {
        // An API key, under the same backoff as on every other route.
        let now = Instant::now();
        if let Some(wait) = throttle.blocked(client, now) {
            return Err(Refusal::Throttled(wait));
        }
        return match keys.resolve(credential) {
            Some(tenant) => Ok((tenant.clone(), Some(Principal::service(tenant)))),
            None => {
                throttle.failed(client, now);
                Err(Refusal::TokenInvalid)
            }
        };
    }
    if let Some(tenant) = keys.resolve(credential) {
        return Ok((tenant.clone(), Some(Principal::service(tenant))));
    }
    if looks_like_jwt(credential) {
        // A token is not counted against the address: guessing a 256-bit HMAC gains nothing
        // from speed, and an expired token of a real client must not lock its address out.
        return match users.authenticate(credential).await {
            Ok(user) => Ok((user.tenant.clone(), Some(user))),
            Err(TokenError::Invalid(reason)) => {
                tracing::debug!(%client, reason, "access token refused");
                Err(Refusal::TokenInvalid)
            }
            Err(TokenError::Disabled) => Err(Refusal::AccountDisabled),
            Err(TokenError::Internal(e)) => {
                tracing::error!("checking an access token: {e:#}");
                Err(Refusal::Unavailable)
            }
        };
    }
    // No keys configured, and not a token: the node's one tenant, as everywhere else.
    let local = TenantId::local();
    let service = Principal::service(&local);
    Ok((local, Some(service)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::users::backoff::MAX_TRACKED;

    #[test]
    fn jwts_have_three_parts() {
        assert!(looks_like_jwt("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."));
        assert!(looks_like_jwt("a.b.c"));
        assert!(!looks_like_jwt("alice-key-0123456789abcdef"));
        assert!(!looks_like_jwt("key.with.two.dots.more"));
    }

    #[test]
    fn failed_keys_back_off_per_address() {
        let throttle = AuthThrottle::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..FREE_FAILURES {
            throttle.failed(a, t0);
        }
        assert_eq!(throttle.blocked(a, t0), None, "the first failures are free");
        throttle.failed(a, t0);
        assert_eq!(throttle.blocked(a, t0), Some(1));
        throttle.failed(a, t0);
        assert_eq!(
            throttle.blocked(a, t0),
            Some(2),
            "each failure doubles the wait"
        );
        for _ in 0..20 {
            throttle.failed(a, t0);
        }
        assert_eq!(throttle.blocked(a, t0), Some(60), "capped");
        assert_eq!(
            throttle.blocked(a, t0 + MAX_BACKOFF),
            None,
            "and over in time"
        );
        assert_eq!(
            throttle.blocked(b, t0),
            None,
            "another address is not held back"
        );
    }

    #[test]
    fn many_blocked_addresses_do_not_grow_the_map_without_bound() {
        let throttle = AuthThrottle::default();
        let t0 = Instant::now();
        for n in 0..(MAX_TRACKED as u32 * 3) {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + n));
            let at = t0 + Duration::from_millis(u64::from(n));
            for _ in 0..=FREE_FAILURES {
                throttle.failed(ip, at);
            }
        }
        let tracked = throttle.by_address.tracked();
        assert!(tracked <= MAX_TRACKED, "{tracked} addresses tracked");
        // The newest offender is still held back.
        let newest = IpAddr::V4(std::net::Ipv4Addr::from(
            0x0a00_0000 + MAX_TRACKED as u32 * 3 - 1,
        ));
        assert!(
            throttle
                .blocked(newest, t0 + Duration::from_secs(13))
                .is_some()
        );
    }

    #[test]
    fn ipv6_clients_count_by_their_64() {
        let throttle = AuthThrottle::default();
        let t0 = Instant::now();
        for i in 0..=FREE_FAILURES {
            throttle.failed(format!("2001:db8::{i}").parse().unwrap(), t0);
        }
        assert!(
            throttle
                .blocked("2001:db8::ffff".parse().unwrap(), t0)
                .is_some()
        );
        assert!(
            throttle
                .blocked("2001:db8:0:1::1".parse().unwrap(), t0)
                .is_none()
        );
    }
}
