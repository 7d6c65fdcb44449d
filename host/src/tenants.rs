//! Tenants and their API keys.
//!
//! Keys come from the config (`[api_keys]`: a tenant to a key or a list of keys), from a file
//! with a `tenant:key` per line (`api_keys_file`), and from `GANTRY_API_KEYS` (`tenant:key`
//! entries separated by commas or newlines). Keys are kept only as SHA-256 digests, are never
//! logged, and are looked up by digest so a lookup's timing says nothing about a key's bytes.
//! Without any key gantry serves one tenant, `local`, and only on a loopback address.

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

/// Keys shorter than this are refused: they can be guessed.
pub const MIN_KEY_LEN: usize = 16;

/// A tenant's name: 1 to 64 ASCII letters, digits, `-` or `_`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TenantId(Arc<str>);

impl TenantId {
    /// The tenant of a gantry without API keys.
    pub fn local() -> TenantId {
        TenantId(Arc::from("local"))
    }

    /// The caller of a public route that sent no key.
    pub fn anonymous() -> TenantId {
        TenantId(Arc::from("anonymous"))
    }

    /// gantry itself (startup checks); not a name a key can map to.
    pub fn system() -> TenantId {
        TenantId(Arc::from("(system)"))
    }

    /// A checked tenant name.
    pub fn new(name: &str) -> Result<TenantId> {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !ok {
            bail!("tenant name {name:?} must be 1 to 64 ASCII letters, digits, '-' or '_'");
        }
        Ok(TenantId(Arc::from(name)))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TenantId({})", self.0)
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The API keys of every tenant.
#[derive(Default)]
pub struct ApiKeys {
    by_digest: HashMap<[u8; 32], TenantId>,
}

impl fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the keys, not even their digests.
        f.debug_struct("ApiKeys")
            .field("keys", &self.by_digest.len())
            .finish()
    }
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

impl ApiKeys {
    /// Add one key for `tenant`; a key given to two tenants is an error.
    pub fn add(&mut self, tenant: &str, key: &str) -> Result<()> {
        let tenant = TenantId::new(tenant)?;
        let key = key.trim();
        if key.len() < MIN_KEY_LEN {
            bail!("an API key of tenant {tenant} is shorter than {MIN_KEY_LEN} characters");
        }
        if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
            bail!("an API key of tenant {tenant} contains whitespace or control characters");
        }
        match self.by_digest.insert(digest(key), tenant.clone()) {
            Some(other) if other != tenant => {
                bail!("one API key is given to both tenant {other} and tenant {tenant}")
            }
            _ => Ok(()),
        }
    }

    /// Add `tenant:key` entries separated by newlines or commas; `#` starts a comment line.
    pub fn add_list(&mut self, text: &str, source: &str) -> Result<()> {
        for (i, entry) in text
            .split(['\n', ','])
            .map(str::trim)
            .enumerate()
            .filter(|(_, e)| !e.is_empty() && !e.starts_with('#'))
        {
            let (tenant, key) = entry
                .split_once(':')
                .with_context(|| format!("{source}, entry {}: expected tenant:key", i + 1))?;
            self.add(tenant.trim(), key)
                .with_context(|| format!("{source}, entry {}", i + 1))?;
        }
        Ok(())
    }

    /// How many tenants have keys.
    pub fn tenant_count(&self) -> usize {
        self.by_digest
            .values()
            .collect::<std::collections::HashSet<_>>()
            .len()
    }

    /// Whether `tenant` has a key.
    pub fn has_tenant(&self, tenant: &TenantId) -> bool {
        self.by_digest.values().any(|t| t == tenant)
    }

    /// Whether no key is configured (gantry then serves the `local` tenant).
    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }

    /// The tenant a key belongs to.
    pub fn resolve(&self, key: &str) -> Option<&TenantId> {
        self.by_digest.get(&digest(key))
    }

    /// Refuse to serve a non-loopback address without keys: an open gateway that runs agents
    /// is remote code execution for anyone who can reach it.
    pub fn check_exposure(&self, addr: SocketAddr) -> Result<()> {
        if self.is_empty() && !addr.ip().is_loopback() {
            bail!(
                "refusing to serve {addr} without API keys: anyone reaching it could run agents; \
                 configure [api_keys], api_keys_file or GANTRY_API_KEYS, or bind a loopback address"
            );
        }
        Ok(())
    }
}

/// A request that names more than one key: two `Authorization` headers, two `X-Api-Key`
/// headers, or one of each with different keys. Which one would win is not for the server to
/// guess.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AmbiguousCredentials;

/// The key a request carries: `Authorization: Bearer KEY` or `X-Api-Key: KEY` (both may be
/// sent if they name the same key); `None` when it carries none (or another scheme).
pub fn request_key(headers: &hyper::HeaderMap) -> Result<Option<&str>, AmbiguousCredentials> {
    fn single<'a>(
        headers: &'a hyper::HeaderMap,
        name: &str,
    ) -> Result<Option<&'a hyper::header::HeaderValue>, AmbiguousCredentials> {
        let mut values = headers.get_all(name).iter();
        let first = values.next();
        if values.next().is_some() {
            return Err(AmbiguousCredentials);
        }
        Ok(first)
    }
    let bearer = single(headers, "authorization")?.and_then(|value| {
        let (scheme, key) = value.to_str().ok()?.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
    });
    let header = single(headers, "x-api-key")?.and_then(|v| v.to_str().ok().map(str::trim));
    match (bearer, header) {
        (Some(a), Some(b)) if a != b => Err(AmbiguousCredentials),
        (a, b) => Ok(a.or(b)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "alpha-key-0123456789";
    const KEY_B: &str = "bravo-key-0123456789";

    #[test]
    fn keys_resolve_to_their_tenant() {
        let mut keys = ApiKeys::default();
        keys.add("alice", KEY_A).unwrap();
        keys.add_list(&format!("# comment\nbob:{KEY_B}, alice:{KEY_A}\n"), "test")
            .unwrap();
        assert_eq!(keys.resolve(KEY_A).unwrap().as_str(), "alice");
        assert_eq!(keys.resolve(KEY_B).unwrap().as_str(), "bob");
        assert!(keys.resolve("alpha-key-012345678").is_none());
        assert!(!format!("{keys:?}").contains("alpha"));
    }

    #[test]
    fn bad_keys_and_tenants_are_refused() {
        let mut keys = ApiKeys::default();
        assert!(keys.add("alice", "short").is_err());
        assert!(keys.add("al ice", KEY_A).is_err());
        assert!(keys.add("", KEY_A).is_err());
        assert!(keys.add("alice", "has space in the middle!").is_err());
        keys.add("alice", KEY_A).unwrap();
        let err = keys.add("bob", KEY_A).unwrap_err().to_string();
        assert!(err.contains("both tenant alice and tenant bob"), "{err}");
        let err = keys
            .add_list("no-colon-here-at-all", "GANTRY_API_KEYS")
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("GANTRY_API_KEYS, entry 1"),
            "{err:#}"
        );
    }

    #[test]
    fn exposure_needs_keys_off_loopback() {
        let mut keys = ApiKeys::default();
        keys.check_exposure("127.0.0.1:80".parse().unwrap())
            .unwrap();
        keys.check_exposure("[::1]:80".parse().unwrap()).unwrap();
        assert!(keys.check_exposure("0.0.0.0:80".parse().unwrap()).is_err());
        assert!(
            keys.check_exposure("192.0.2.1:80".parse().unwrap())
                .is_err()
        );
        keys.add("alice", KEY_A).unwrap();
        keys.check_exposure("0.0.0.0:80".parse().unwrap()).unwrap();
    }

    #[test]
    fn keys_from_headers() {
        let mut h = hyper::HeaderMap::new();
        assert_eq!(request_key(&h), Ok(None));
        h.insert("x-api-key", KEY_A.parse().unwrap());
        assert_eq!(request_key(&h), Ok(Some(KEY_A)));
        // The same key twice over is one key; two different keys are refused.
        h.insert("authorization", format!("Bearer {KEY_A}").parse().unwrap());
        assert_eq!(request_key(&h), Ok(Some(KEY_A)));
        h.insert("authorization", format!("Bearer {KEY_B}").parse().unwrap());
        assert_eq!(request_key(&h), Err(AmbiguousCredentials));
        h.insert("authorization", "Basic abc".parse().unwrap());
        assert_eq!(request_key(&h), Ok(Some(KEY_A)));
        // Two headers of one name, even with one key, are refused.
        let mut h = hyper::HeaderMap::new();
        h.append("x-api-key", KEY_A.parse().unwrap());
        h.append("x-api-key", KEY_A.parse().unwrap());
        assert_eq!(request_key(&h), Err(AmbiguousCredentials));
        let mut h = hyper::HeaderMap::new();
        h.append("authorization", format!("Bearer {KEY_A}").parse().unwrap());
        h.append("authorization", format!("Bearer {KEY_B}").parse().unwrap());
        assert_eq!(request_key(&h), Err(AmbiguousCredentials));
    }
}
