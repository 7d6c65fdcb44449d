//! Access tokens: HS256 JWTs with a key id, signed with keys kept in the data directory.
//!
//! `jsonwebtoken` is built without its crypto features; the provider installed here knows
//! HS256 alone (HMAC-SHA256 from `ring`, which rustls already brings), so a token naming any
//! other algorithm — `none` included — cannot be verified whatever its header says, and the
//! validation names HS256 besides.

use anyhow::{Context, Result, bail};
use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::signature::{Error as SignatureError, Signer, Verifier};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ring::rand::SecureRandom;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The shortest signing key accepted, in bytes (HS256's own output size).
pub const MIN_KEY_BYTES: usize = 32;

/// Bytes of a generated key.
const GENERATED_KEY_BYTES: usize = 32;

/// Seconds of clock skew tolerated on `exp` and `iat`.
const LEEWAY_SECS: u64 = 5;

/// What an access token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user's id.
    pub sub: String,
    /// The user's tenant.
    pub tenant: String,
    /// The token's own id, for revocation.
    pub jti: String,
    /// The user's token generation when it was issued (`gen`): a password change or disabling
    /// moves the user on, and ends every token of an earlier generation.
    #[serde(rename = "gen")]
    pub generation: i64,
    /// Issued at, s since the epoch.
    pub iat: i64,
    /// Expires at, s since the epoch.
    pub exp: i64,
}

/// Why a token was not honoured. Never says more to the caller than "invalid"; the reason is
/// for the log and the tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenFault {
    /// Not three base64url parts of JSON, or claims missing.
    #[error("malformed")]
    Malformed,
    /// An algorithm other than HS256 (`none` included).
    #[error("algorithm not accepted")]
    Algorithm,
    /// No `kid`, or one of no key held.
    #[error("unknown key id")]
    UnknownKey,
    /// The signature does not match.
    #[error("bad signature")]
    Signature,
    /// Past its `exp`.
    #[error("expired")]
    Expired,
}

/// One signing key and its id.
struct Key {
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

/// The node's signing keys: the first signs, every one verifies.
pub struct SigningKeys {
    keys: Vec<Key>,
}

impl std::fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<&str> = self.keys.iter().map(|k| k.kid.as_str()).collect();
        f.debug_struct("SigningKeys")
            .field("kids", &kids)
            .finish_non_exhaustive()
    }
}

impl SigningKeys {
    /// The keys of `path` (`KID:HEX` lines, `#` comments), creating the file with one random
    /// key and mode 0600 when it is missing. A file others may read is refused: whoever reads
    /// it can mint tokens for any user.
    pub fn load_or_create(path: &Path) -> Result<SigningKeys> {
        if !path.exists() {
            let kid = hex::encode(random_bytes(6)?);
            let secret = hex::encode(random_bytes(GENERATED_KEY_BYTES)?);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            // Written whole under a name of its own, then linked into place: nodes sharing a
            // data directory that start together agree on the one key that got there first,
            // and none reads a file half written.
            let tmp = path.with_extension(format!("new-{}", hex::encode(random_bytes(8)?)));
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .with_context(|| format!("creating the signing key file {}", tmp.display()))?;
            writeln!(
                file,
                "# gantry's HS256 signing keys, KID:HEX: the first signs, all verify.\n{kid}:{secret}"
            )?;
            file.sync_all()?;
            drop(file);
            let linked = std::fs::hard_link(&tmp, path);
            let _ = std::fs::remove_file(&tmp);
            match linked {
                Ok(()) => {
                    tracing::info!(file = %path.display(), kid = %kid, "generated a token signing key");
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("creating the signing key file {}", path.display())
                    });
                }
            }
        }
        let mode = std::fs::metadata(path)
            .with_context(|| format!("reading {}", path.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            bail!(
                "the signing key file {} has mode {:o}: others may read it; chmod 600 it",
                path.display(),
                mode & 0o777
            );
        }
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the signing key file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    /// Keys from `KID:HEX` lines.
    pub fn parse(text: &str) -> Result<SigningKeys> {
        let mut keys = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (kid, secret) = line
                .split_once(':')
                .with_context(|| format!("line {}: expected KID:HEX", i + 1))?;
            let kid = kid.trim();
            if kid.is_empty()
                || kid.len() > 64
                || !kid
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                bail!(
                    "line {}: a key id is 1 to 64 letters, digits, '-' or '_'",
                    i + 1
                );
            }
            let secret = hex::decode(secret.trim())
                .map_err(|_| anyhow::anyhow!("line {}: the key is not hex", i + 1))?;
            if secret.len() < MIN_KEY_BYTES {
                bail!("line {}: a key needs at least {MIN_KEY_BYTES} bytes", i + 1);
            }
            if keys.iter().any(|k: &Key| k.kid == kid) {
                bail!("line {}: key id {kid} appears twice", i + 1);
            }
            keys.push(Key {
                kid: kid.to_string(),
                encoding: EncodingKey::from_secret(&secret)?,
                decoding: DecodingKey::from_secret(&secret)?,
            });
        }
        if keys.is_empty() {
            bail!("no signing key");
        }
        install_provider();
        Ok(SigningKeys { keys })
    }

    /// One random key, kept nowhere: for commands that issue no token.
    pub fn ephemeral() -> Result<SigningKeys> {
        Self::parse(&format!(
            "ephemeral:{}",
            hex::encode(random_bytes(GENERATED_KEY_BYTES)?)
        ))
    }

    /// A signed token of `claims`, under the first key.
    pub fn sign(&self, claims: &Claims) -> Result<String> {
        let key = &self.keys[0];
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(key.kid.clone());
        Ok(jsonwebtoken::encode(&header, claims, &key.encoding)?)
    }

    /// The claims of `token` if one of these keys signed it with HS256 and it has not expired
    /// (at `now`, s since the epoch). Revocation and the user's state are the caller's to check.
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims, TokenFault> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
            ErrorKind::InvalidAlgorithmName | ErrorKind::UnsupportedAlgorithm => {
                TokenFault::Algorithm
            }
            _ => TokenFault::Malformed,
        })?;
        if header.alg != Algorithm::HS256 {
            return Err(TokenFault::Algorithm);
        }
        let kid = header.kid.ok_or(TokenFault::UnknownKey)?;
        let key = self
            .keys
            .iter()
            .find(|k| k.kid == kid)
            .ok_or(TokenFault::UnknownKey)?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECS;
        // `exp` is checked below against the caller's clock, so that tests can move it.
        validation.validate_exp = false;
        // `iat`, `jti` and `tenant` are required by `Claims` itself.
        validation.set_required_spec_claims(&["exp", "sub"]);
        let data = jsonwebtoken::decode::<Claims>(token, &key.decoding, &validation).map_err(
            |e| match e.kind() {
                ErrorKind::InvalidSignature => TokenFault::Signature,
                ErrorKind::InvalidAlgorithm | ErrorKind::UnsupportedAlgorithm => {
                    TokenFault::Algorithm
                }
                _ => TokenFault::Malformed,
            },
        )?;
        let claims = data.claims;
        if claims.exp.saturating_add(LEEWAY_SECS as i64) <= now {
            return Err(TokenFault::Expired);
        }
        Ok(claims)
    }
}

/// `n` bytes from the system's secure random source.
pub fn random_bytes(n: usize) -> Result<Vec<u8>> {
    let mut bytes = vec![0u8; n];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("the system's random source failed"))?;
    Ok(bytes)
}

/// HS256 over ring's HMAC-SHA256: the only algorithm the provider builds.
struct Hs256(ring::hmac::Key);

impl Hs256 {
    fn for_algorithm(alg: &Algorithm, secret: &[u8]) -> jsonwebtoken::errors::Result<Hs256> {
        if *alg != Algorithm::HS256 {
            return Err(ErrorKind::UnsupportedAlgorithm.into());
        }
        Ok(Hs256(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret)))
    }
}

impl Signer<Vec<u8>> for Hs256 {
    fn try_sign(&self, msg: &[u8]) -> Result<Vec<u8>, SignatureError> {
        Ok(ring::hmac::sign(&self.0, msg).as_ref().to_vec())
    }
}

impl JwtSigner for Hs256 {
    fn algorithm(&self) -> Algorithm {
        Algorithm::HS256
    }
}

impl Verifier<Vec<u8>> for Hs256 {
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> Result<(), SignatureError> {
        // Constant-time comparison inside ring.
        ring::hmac::verify(&self.0, msg, signature).map_err(|_| SignatureError::new())
    }
}

impl JwtVerifier for Hs256 {
    fn algorithm(&self) -> Algorithm {
        Algorithm::HS256
    }
}

static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: |alg, key| Ok(Box::new(Hs256::for_algorithm(alg, key.as_bytes())?)),
    verifier_factory: |alg, key| {
        Ok(Box::new(Hs256::for_algorithm(
            alg,
            key.try_get_as_bytes()?,
        )?))
    },
    key_utils: KeyUtils::new_unimplemented(),
};

fn install_provider() {
    // Installed once per process; a second call finds it there.
    let _ = PROVIDER.install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "k1:0001020304050607080900010203040506070809000102030405060708090001";

    fn claims(exp: i64) -> Claims {
        Claims {
            sub: "u1".into(),
            tenant: "alice".into(),
            jti: "j1".into(),
            generation: 0,
            iat: exp - 60,
            exp,
        }
    }

    /// base64url without padding, as JWTs use.
    fn b64(bytes: &[u8]) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    #[test]
    fn nodes_starting_together_on_one_data_directory_share_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwt-signing-keys");
        let start = std::sync::Arc::new(std::sync::Barrier::new(8));
        let nodes: Vec<_> = (0..8)
            .map(|_| {
                let (path, start) = (path.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    SigningKeys::load_or_create(&path).unwrap()
                })
            })
            .collect();
        let keys: Vec<SigningKeys> = nodes.into_iter().map(|n| n.join().unwrap()).collect();
        // What one node signs, every other verifies.
        let token = keys[0].sign(&claims(1000)).unwrap();
        for other in &keys {
            assert_eq!(other.verify(&token, 900).unwrap(), claims(1000));
        }
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file is left behind");
    }

    #[test]
    fn a_signed_token_verifies_until_it_expires() {
        let keys = SigningKeys::parse(KEY).unwrap();
        let token = keys.sign(&claims(1000)).unwrap();
        assert_eq!(keys.verify(&token, 900).unwrap(), claims(1000));
        assert_eq!(
            keys.verify(&token, 1000 + LEEWAY_SECS as i64),
            Err(TokenFault::Expired)
        );
    }

    #[test]
    fn forged_tokens_are_refused_for_their_reason() {
        let keys = SigningKeys::parse(KEY).unwrap();
        let token = keys.sign(&claims(1000)).unwrap();
        let (head, rest) = token.split_once('.').unwrap();
        let (body, sig) = rest.split_once('.').unwrap();
        // Same header and claims, another signature.
        let bad_sig = format!("{head}.{body}.{}", b64(&[7u8; 32]));
        assert_eq!(keys.verify(&bad_sig, 900), Err(TokenFault::Signature));
        // `alg: none`, with and without a signature: the header does not even parse, as the
        // library knows no such algorithm.
        let none = b64(br#"{"alg":"none","typ":"JWT","kid":"k1"}"#);
        for token in [format!("{none}.{body}."), format!("{none}.{body}.{sig}")] {
            assert!(matches!(
                keys.verify(&token, 900),
                Err(TokenFault::Algorithm | TokenFault::Malformed)
            ));
        }
        // Another HMAC algorithm, correctly signed with the same secret: still refused.
        let hs512 = b64(br#"{"alg":"HS512","typ":"JWT","kid":"k1"}"#);
        assert_eq!(
            keys.verify(&format!("{hs512}.{body}.{}", b64(&[1u8; 64])), 900),
            Err(TokenFault::Algorithm)
        );
        // A key id no key has, or none.
        let other = SigningKeys::parse(&KEY.replace("k1:", "k2:")).unwrap();
        let theirs = other.sign(&claims(1000)).unwrap();
        assert_eq!(keys.verify(&theirs, 900), Err(TokenFault::UnknownKey));
        let no_kid = b64(br#"{"alg":"HS256","typ":"JWT"}"#);
        assert_eq!(
            keys.verify(&format!("{no_kid}.{body}.{}", b64(&[0u8; 32])), 900),
            Err(TokenFault::UnknownKey)
        );
        assert_eq!(keys.verify("not a token", 900), Err(TokenFault::Malformed));
    }

    #[test]
    fn rotation_verifies_old_keys_and_signs_with_the_first() {
        let old = SigningKeys::parse(KEY).unwrap();
        let token = old.sign(&claims(1000)).unwrap();
        let rotated =
            SigningKeys::parse(&format!("# new first\nk2:{}\n{KEY}", "ff".repeat(32))).unwrap();
        assert!(rotated.verify(&token, 900).is_ok());
        let fresh = rotated.sign(&claims(1000)).unwrap();
        assert_eq!(
            jsonwebtoken::decode_header(&fresh).unwrap().kid.as_deref(),
            Some("k2")
        );
    }

    #[test]
    fn key_files_are_made_private_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        let made = SigningKeys::load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = SigningKeys::load_or_create(&path).unwrap();
        let token = made.sign(&claims(1000)).unwrap();
        assert!(again.verify(&token, 900).is_ok(), "the same key, kept");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = SigningKeys::load_or_create(&path).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
        for bad in ["k1:abcd", "k1:zz", "nokey", "bad kid:00", ""] {
            assert!(SigningKeys::parse(bad).is_err(), "{bad:?}");
        }
    }
}
