//! Users: people who log in with a password and act as a gantry tenant. This module owns
//! their passwords (argon2id), permissions, the disabled flag, access tokens and their
//! revocation, and the backoff on failed logins. There is no default user and no default
//! secret: an operator adds users (`gantry users add`), an admin user adds more over HTTP.

pub mod backoff;
pub mod tokens;

use crate::store::{Store, StoreError, UserRecord, now_ms};
use crate::tenants::TenantId;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use backoff::{Backoff, address_key};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokens::{Claims, SigningKeys, TokenFault};

/// The shortest password accepted.
pub const MIN_PASSWORD_LEN: usize = 8;
/// The longest password accepted, in bytes (argon2 hashes whatever it is given).
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// The largest preferences object, in bytes of JSON.
pub const MAX_PREFERENCES_BYTES: usize = 16 * 1024;
/// The longest email accepted.
const MAX_EMAIL_LEN: usize = 254;

/// Failed logins of one username before it waits, and its longest wait.
const USERNAME_FREE_FAILURES: u32 = 5;
const USERNAME_MAX_WAIT: Duration = Duration::from_secs(300);
/// Failed logins from one address before it waits (it may try many names), and its longest
/// wait.
const ADDRESS_FREE_FAILURES: u32 = 20;
const ADDRESS_MAX_WAIT: Duration = Duration::from_secs(300);
/// After this long without a failed login, a name or address starts afresh.
const FORGET_FAILURES_AFTER: Duration = Duration::from_secs(900);

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Permission {
    /// See.
    Read,
    /// Create and change.
    Write,
    /// Run tasks.
    Execute,
    /// Manage the tenant's users.
    Admin,
}

impl Permission {
    /// Every permission, in order.
    pub const ALL: [Permission; 4] = [
        Permission::Read,
        Permission::Write,
        Permission::Execute,
        Permission::Admin,
    ];

    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::Write => "write",
            Permission::Execute => "execute",
            Permission::Admin => "admin",
        }
    }

    /// The permission named `name`.
    pub fn parse(name: &str) -> Option<Permission> {
        Permission::ALL.into_iter().find(|p| p.as_str() == name)
    }

    /// A user's permissions when none are named: all but `admin`.
    pub fn default_set() -> Vec<Permission> {
        vec![Permission::Read, Permission::Write, Permission::Execute]
    }
}

/// A user as others see it: no password hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Its id.
    pub id: String,
    /// Its tenant.
    pub tenant: TenantId,
    /// Its login name.
    pub username: String,
    /// Its email, if given.
    pub email: Option<String>,
    /// What it may do, in order.
    pub permissions: Vec<Permission>,
    /// Whether it is disabled.
    pub disabled: bool,
    /// Creation time, ms since the epoch.
    pub created_at: i64,
    /// Last login, ms since the epoch.
    pub last_login: Option<i64>,
}

impl User {
    fn of(record: &UserRecord) -> Result<User, UserError> {
        let tenant = TenantId::new(&record.tenant).map_err(UserError::Internal)?;
        Ok(User {
            id: record.id.clone(),
            tenant,
            username: record.username.clone(),
            email: record.email.clone(),
            permissions: permissions_of(record),
            disabled: record.disabled,
            created_at: record.created_at,
            last_login: record.last_login,
        })
    }
}

fn permissions_of(record: &UserRecord) -> Vec<Permission> {
    let mut permissions: Vec<Permission> = record
        .permissions
        .iter()
        .filter_map(|p| Permission::parse(p))
        .collect();
    permissions.sort();
    permissions.dedup();
    permissions
}

/// Who a request on a user route acts for: a user with a token, or an API key's service
/// user (the key's tenant, every permission).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The user's id (`service:<tenant>` for an API key).
    pub id: String,
    /// The tenant it acts as.
    pub tenant: TenantId,
    /// Its login name (the tenant's name for an API key).
    pub username: String,
    /// Its email.
    pub email: Option<String>,
    /// What it may do.
    pub permissions: Vec<Permission>,
    /// An API key rather than a user.
    pub service: bool,
    /// The token it presented: what logout revokes.
    pub token: Option<TokenRef>,
}

impl Principal {
    /// The service user of an API key's tenant: every permission, no token.
    pub fn service(tenant: &TenantId) -> Principal {
        Principal {
            id: format!("service:{tenant}"),
            tenant: tenant.clone(),
            username: tenant.to_string(),
            email: None,
            permissions: Permission::ALL.to_vec(),
            service: true,
            token: None,
        }
    }

    /// Whether it holds `permission`.
    pub fn may(&self, permission: Permission) -> bool {
        self.permissions.contains(&permission)
    }

    /// It holds `permission`, or [`Denied`]; each service's error makes that its 403.
    pub fn require(&self, permission: Permission) -> Result<(), Denied> {
        if self.may(permission) {
            Ok(())
        } else {
            Err(Denied(permission))
        }
    }
}

/// A permission the caller lacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("this needs the {} permission", .0.as_str())]
pub struct Denied(pub Permission);

/// The token a principal presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRef {
    /// Its id.
    pub jti: String,
    /// When it expires, s since the epoch.
    pub expires_at: i64,
}

/// A token handed out at login or refresh.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The JWT.
    pub access_token: String,
    /// Seconds it is honoured.
    pub expires_in: u64,
    /// Whose it is.
    pub user: User,
}

/// Why a token was not honoured.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Malformed, forged, expired, revoked, of an unknown key or user, or issued before the
    /// user's password changed (401 `AUTH_TOKEN_INVALID`).
    #[error("the token is invalid or expired")]
    Invalid(&'static str),
    /// The user is disabled (401 `AUTH_ACCOUNT_DISABLED`).
    #[error("the account is disabled")]
    Disabled,
    /// The store failed.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<StoreError> for TokenError {
    fn from(e: StoreError) -> Self {
        TokenError::Internal(e.into())
    }
}

/// Why a user operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// Wrong username or password (which one is not said).
    #[error("invalid username or password")]
    InvalidCredentials,
    /// The user is disabled.
    #[error("the account is disabled")]
    Disabled,
    /// Too many failed logins for this name or address: retry after this many seconds.
    #[error("too many failed logins; retry in {0} s")]
    Throttled(u64),
    /// The caller may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// No such user in the caller's tenant.
    #[error("user not found")]
    NotFound,
    /// The username is taken (on this node).
    #[error("username {0:?} is taken")]
    Conflict(String),
    /// A field is not acceptable.
    #[error("{field}: {issue}")]
    Invalid {
        /// The field's name.
        field: &'static str,
        /// What is wrong with it.
        issue: String,
    },
    /// Storage or hashing failed.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<StoreError> for UserError {
    fn from(e: StoreError) -> Self {
        UserError::Internal(e.into())
    }
}

fn invalid(field: &'static str, issue: impl Into<String>) -> UserError {
    UserError::Invalid {
        field,
        issue: issue.into(),
    }
}

/// A user to add.
#[derive(Debug, Clone)]
pub struct NewUser {
    /// Its tenant.
    pub tenant: TenantId,
    /// Its login name.
    pub username: String,
    /// Its email.
    pub email: Option<String>,
    /// Its password, in clear (hashed here, then dropped).
    pub password: String,
    /// What it may do.
    pub permissions: Vec<Permission>,
}

/// Every tenant's users.
#[derive(Debug, Clone)]
pub struct Users {
    store: Arc<dyn Store>,
    keys: Arc<SigningKeys>,
    token_ttl: Duration,
    by_name: Arc<Backoff<String>>,
    by_address: Arc<Backoff<IpAddr>>,
    /// A hash to verify against when the username is unknown, so that a login takes as long
    /// for a name that does not exist as for a wrong password.
    decoy: Arc<str>,
}

impl Users {
    /// Users kept in `store`, with tokens signed by `keys` and honoured for `token_ttl`.
    pub fn new(store: Arc<dyn Store>, keys: SigningKeys, token_ttl: Duration) -> Users {
        let decoy = hash_password("decoy password, never a user's")
            .unwrap_or_else(|_| "$argon2id$v=19$m=19456,t=2,p=1$AAAAAAAAAAAAAAAAAAAAAA$".into());
        Users {
            store,
            keys: Arc::new(keys),
            token_ttl,
            by_name: Arc::new(Backoff::new(
                USERNAME_FREE_FAILURES,
                USERNAME_MAX_WAIT,
                FORGET_FAILURES_AFTER,
            )),
            by_address: Arc::new(Backoff::new(
                ADDRESS_FREE_FAILURES,
                ADDRESS_MAX_WAIT,
                FORGET_FAILURES_AFTER,
            )),
            decoy: decoy.into(),
        }
    }

    /// Add a user. The name must be free on the node.
    pub async fn create(&self, new: NewUser) -> Result<User, UserError> {
        check_username(&new.username)?;
        let email = check_email(new.email)?;
        check_password(&new.password)?;
        if new.permissions.is_empty() {
            return Err(invalid("permissions", "at least one permission is needed"));
        }
        let mut permissions = new.permissions;
        permissions.sort();
        permissions.dedup();
        let record = UserRecord {
            id: uuid::Uuid::new_v4().to_string(),
            tenant: new.tenant.to_string(),
            username: new.username.clone(),
            email,
            password_hash: hash_password(&new.password)?,
            permissions: permissions.iter().map(|p| p.as_str().to_string()).collect(),
            disabled: false,
            created_at: now_ms(),
            last_login: None,
            token_generation: 0,
        };
        match self.store.create_user(&record).await {
            Ok(()) => User::of(&record),
            Err(StoreError::Conflict(_)) => Err(UserError::Conflict(new.username)),
            Err(e) => Err(e.into()),
        }
    }

    /// A tenant's users, oldest first.
    pub async fn list(&self, tenant: &TenantId) -> Result<Vec<User>, UserError> {
        let records = self.store.list_users(tenant.as_str()).await?;
        records.iter().map(User::of).collect()
    }

    /// Every user on the node (the operator's view).
    pub async fn list_all(&self) -> Result<Vec<User>, UserError> {
        let records = self.store.list_all_users().await?;
        records.iter().map(User::of).collect()
    }

    /// One of a tenant's users.
    pub async fn get(&self, tenant: &TenantId, id: &str) -> Result<User, UserError> {
        let record = self.record(tenant, id).await?;
        User::of(&record)
    }

    async fn record(&self, tenant: &TenantId, id: &str) -> Result<UserRecord, UserError> {
        self.store
            .get_user(tenant.as_str(), id)
            .await?
            .ok_or(UserError::NotFound)
    }

    /// Disable one of a tenant's users: it can no longer log in, and every token it holds is
    /// refused from now on.
    pub async fn disable(&self, tenant: &TenantId, id: &str) -> Result<User, UserError> {
        let mut record = self.record(tenant, id).await?;
        record.disabled = true;
        record.token_generation += 1;
        if !self.store.update_user(&record).await? {
            return Err(UserError::NotFound);
        }
        User::of(&record)
    }

    /// The user named `username` on the node, for the operator's CLI.
    pub async fn by_name(&self, username: &str) -> Result<User, UserError> {
        let record = self
            .store
            .find_user_by_name(username)
            .await?
            .ok_or(UserError::NotFound)?;
        User::of(&record)
    }

    /// Set a user's password; tokens issued before now are refused from now on.
    pub async fn set_password(
        &self,
        tenant: &TenantId,
        id: &str,
        password: &str,
    ) -> Result<User, UserError> {
        check_password(password)?;
        let mut record = self.record(tenant, id).await?;
        record.password_hash = hash_password(password)?;
        record.token_generation += 1;
        if !self.store.update_user(&record).await? {
            return Err(UserError::NotFound);
        }
        User::of(&record)
    }

    /// Log in with a name and password, from `client`: a fresh token. Failures back off per
    /// name and per address; while either waits, even the right password is refused, so
    /// that guessing gains nothing from the wait ending early.
    pub async fn login(
        &self,
        username: &str,
        password: &str,
        client: Option<IpAddr>,
    ) -> Result<Issued, UserError> {
        let name = username.to_lowercase();
        let address = client.map(address_key);
        let now = Instant::now();
        let waits = [
            self.by_name.blocked(&name, now),
            address.and_then(|a| self.by_address.blocked(&a, now)),
        ];
        if let Some(wait) = waits.into_iter().flatten().max() {
            return Err(UserError::Throttled(wait));
        }
        let record = if username.is_empty() || password.len() > MAX_PASSWORD_BYTES {
            None
        } else {
            self.store.find_user_by_name(username).await?
        };
        let hash = record
            .as_ref()
            .map_or(&*self.decoy, |r| r.password_hash.as_str());
        let matches = verify_password(password, hash) && record.is_some();
        let Some(record) = record.filter(|_| matches) else {
            self.by_name.failed(&name, now);
            if let Some(a) = address {
                self.by_address.failed(&a, now);
            }
            return Err(UserError::InvalidCredentials);
        };
        if record.disabled {
            return Err(UserError::Disabled);
        }
        self.by_name.clear(&name);
        let login_at = now_ms();
        self.store
            .record_login(&record.tenant, &record.id, login_at)
            .await?;
        let mut user = User::of(&record)?;
        user.last_login = Some(login_at);
        self.issue(user, record.token_generation)
    }

    /// A token for `user`, of its current token `generation`.
    fn issue(&self, user: User, user_generation: i64) -> Result<Issued, UserError> {
        let iat = now_secs();
        let ttl = self.token_ttl.as_secs();
        let claims = Claims {
            sub: user.id.clone(),
            tenant: user.tenant.to_string(),
            jti: uuid::Uuid::new_v4().simple().to_string(),
            generation: user_generation,
            iat,
            exp: iat + ttl as i64,
        };
        let access_token = self.keys.sign(&claims)?;
        Ok(Issued {
            access_token,
            expires_in: ttl,
            user,
        })
    }

    /// The principal a token stands for: signed by a key of ours with HS256, unexpired, not
    /// revoked, of a user that exists, is enabled, and has not changed its password since.
    pub async fn authenticate(&self, token: &str) -> Result<Principal, TokenError> {
        let claims = self.keys.verify(token, now_secs()).map_err(|fault| {
            let reason = match fault {
                TokenFault::Malformed => "malformed",
                TokenFault::Algorithm => "algorithm not accepted",
                TokenFault::UnknownKey => "unknown key id",
                TokenFault::Signature => "bad signature",
                TokenFault::Expired => "expired",
            };
            TokenError::Invalid(reason)
        })?;
        if self.store.is_token_revoked(&claims.jti).await? {
            return Err(TokenError::Invalid("revoked"));
        }
        let tenant = TenantId::new(&claims.tenant).map_err(|_| TokenError::Invalid("malformed"))?;
        let record = self
            .store
            .get_user(tenant.as_str(), &claims.sub)
            .await?
            .ok_or(TokenError::Invalid("unknown user"))?;
        if record.disabled {
            return Err(TokenError::Disabled);
        }
        if claims.generation != record.token_generation {
            return Err(TokenError::Invalid("issued before the password changed"));
        }
        Ok(Principal {
            permissions: permissions_of(&record),
            id: record.id,
            tenant,
            username: record.username,
            email: record.email,
            service: false,
            token: Some(TokenRef {
                jti: claims.jti,
                expires_at: claims.exp,
            }),
        })
    }

    /// A fresh token for the principal's user; the one it presented is revoked.
    pub async fn refresh(&self, principal: &Principal) -> Result<Issued, UserError> {
        let Some(token) = &principal.token else {
            return Err(UserError::Forbidden(
                "an API key has no token to refresh; log in as a user".into(),
            ));
        };
        let record = self.record(&principal.tenant, &principal.id).await?;
        if record.disabled {
            return Err(UserError::Disabled);
        }
        let issued = self.issue(User::of(&record)?, record.token_generation)?;
        self.store
            .revoke_token(&token.jti, token.expires_at)
            .await?;
        self.prune_revoked().await;
        Ok(issued)
    }

    /// Revoke the token the principal presented; revocations are forgotten once their tokens
    /// have expired.
    pub async fn logout(&self, principal: &Principal) -> Result<(), UserError> {
        let Some(token) = &principal.token else {
            return Err(UserError::Forbidden(
                "an API key cannot be logged out; remove it from the configuration".into(),
            ));
        };
        self.store
            .revoke_token(&token.jti, token.expires_at)
            .await?;
        self.prune_revoked().await;
        Ok(())
    }

    /// Forget revocations of tokens that have expired anyway. Done at each revocation, which
    /// keeps the table to the tokens still alive without a timer of its own.
    async fn prune_revoked(&self) {
        if let Err(e) = self.store.prune_revoked_tokens(now_secs()).await {
            tracing::warn!("pruning revoked tokens: {e}");
        }
    }

    /// The preferences of `who` (a JSON object as text, `{}` until set) and when they were
    /// set.
    pub async fn preferences(&self, who: &Principal) -> Result<(String, Option<i64>), UserError> {
        Ok(
            match self
                .store
                .get_preferences(who.tenant.as_str(), &who.id)
                .await?
            {
                Some((json, at)) => (json, Some(at)),
                None => ("{}".into(), None),
            },
        )
    }

    /// Replace the preferences of `who` with `json`, a JSON object of at most
    /// [`MAX_PREFERENCES_BYTES`]; when they were stored.
    pub async fn set_preferences(&self, who: &Principal, json: &str) -> Result<i64, UserError> {
        if json.len() > MAX_PREFERENCES_BYTES {
            return Err(invalid(
                "preferences",
                format!("must be at most {MAX_PREFERENCES_BYTES} bytes of JSON"),
            ));
        }
        let compact = match serde_json::from_str::<serde_json::Value>(json) {
            Ok(v @ serde_json::Value::Object(_)) => v.to_string(),
            Ok(_) => return Err(invalid("preferences", "must be a JSON object")),
            Err(e) => return Err(invalid("preferences", format!("is not JSON: {e}"))),
        };
        let at = now_ms();
        self.store
            .set_preferences(who.tenant.as_str(), &who.id, &compact, at)
            .await?;
        Ok(at)
    }

    /// Seconds a token is honoured.
    pub fn token_ttl(&self) -> Duration {
        self.token_ttl
    }
}

fn now_secs() -> i64 {
    now_ms() / 1000
}

/// An argon2id hash of `password` (the crate's defaults: 19 MiB, 2 passes, 1 lane), with a
/// random 16-byte salt, as a PHC string.
pub fn hash_password(password: &str) -> Result<String, UserError> {
    let salt = tokens::random_bytes(16)?;
    let hash = argon2::Argon2::default()
        .hash_password_with_salt(password.as_bytes(), &salt)
        .map_err(|e| UserError::Internal(anyhow::anyhow!("hashing a password: {e}")))?;
    Ok(hash.to_string())
}

/// Whether `password` matches the PHC string `hash` (whose own parameters are used).
pub fn verify_password(password: &str, hash: &str) -> bool {
    argon2::Argon2::default()
        .verify_password(password.as_bytes(), hash)
        .is_ok()
}

/// A username: 3 to 64 ASCII letters, digits, `.`, `_` or `-`, starting with a letter or digit.
pub fn check_username(username: &str) -> Result<(), UserError> {
    let ok_chars = username
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !(3..=64).contains(&username.len()) {
        return Err(invalid("username", "must be 3 to 64 characters"));
    }
    if !ok_chars || !username.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(invalid(
            "username",
            "must be ASCII letters, digits, '.', '_' or '-', starting with a letter or digit",
        ));
    }
    Ok(())
}

/// A password: at least [`MIN_PASSWORD_LEN`] characters, at most [`MAX_PASSWORD_BYTES`] bytes.
pub fn check_password(password: &str) -> Result<(), UserError> {
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(invalid(
            "password",
            format!("must be at least {MIN_PASSWORD_LEN} characters"),
        ));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(invalid(
            "password",
            format!("must be at most {MAX_PASSWORD_BYTES} bytes"),
        ));
    }
    Ok(())
}

fn check_email(email: Option<String>) -> Result<Option<String>, UserError> {
    let Some(email) = email.map(|e| e.trim().to_string()) else {
        return Ok(None);
    };
    let well_formed = email.len() <= MAX_EMAIL_LEN
        && !email.contains(char::is_whitespace)
        && email
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'));
    if !well_formed {
        return Err(invalid("email", "must be an address like name@example.com"));
    }
    Ok(Some(email))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn users(dir: &std::path::Path) -> Users {
        let store: Arc<dyn Store> =
            Arc::new(crate::store::Sqlite::open(&dir.join("g.db")).unwrap());
        Users::new(
            store,
            SigningKeys::ephemeral().unwrap(),
            Duration::from_secs(60),
        )
    }

    fn ann(tenant: &str) -> NewUser {
        NewUser {
            tenant: TenantId::new(tenant).unwrap(),
            username: "ann".into(),
            email: Some("ann@example.com".into()),
            password: "correct horse".into(),
            permissions: Permission::default_set(),
        }
    }

    #[test]
    fn passwords_hash_with_argon2id_and_verify() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(verify_password("correct horse", &hash));
        assert!(!verify_password("correct horsf", &hash));
        assert!(!verify_password("correct horse", "not a hash"));
        assert_ne!(hash, hash_password("correct horse").unwrap(), "salted");
    }

    #[tokio::test]
    async fn login_token_refresh_and_logout() {
        let dir = tempfile::tempdir().unwrap();
        let users = users(dir.path()).await;
        let ann = users.create(ann("alice")).await.unwrap();
        let issued = users.login("ann", "correct horse", None).await.unwrap();
        assert_eq!(issued.user.id, ann.id);
        let me = users.authenticate(&issued.access_token).await.unwrap();
        assert_eq!(me.tenant.as_str(), "alice");
        assert!(me.may(Permission::Write) && !me.may(Permission::Admin));
        let fresh = users.refresh(&me).await.unwrap();
        assert!(matches!(
            users.authenticate(&issued.access_token).await,
            Err(TokenError::Invalid("revoked"))
        ));
        let me = users.authenticate(&fresh.access_token).await.unwrap();
        users.logout(&me).await.unwrap();
        assert!(matches!(
            users.authenticate(&fresh.access_token).await,
            Err(TokenError::Invalid("revoked"))
        ));
    }

    #[tokio::test]
    async fn disabling_refuses_logins_and_tokens_held() {
        let dir = tempfile::tempdir().unwrap();
        let users = users(dir.path()).await;
        let ann = users.create(ann("alice")).await.unwrap();
        let issued = users.login("ann", "correct horse", None).await.unwrap();
        let bob = TenantId::new("bob").unwrap();
        assert!(matches!(
            users.disable(&bob, &ann.id).await,
            Err(UserError::NotFound)
        ));
        users.disable(&ann.tenant, &ann.id).await.unwrap();
        assert!(matches!(
            users.authenticate(&issued.access_token).await,
            Err(TokenError::Disabled)
        ));
        assert!(matches!(
            users.login("ann", "correct horse", None).await,
            Err(UserError::Disabled)
        ));
    }

    #[tokio::test]
    async fn failed_logins_back_off_per_name_and_address() {
        let dir = tempfile::tempdir().unwrap();
        let users = users(dir.path()).await;
        users.create(ann("alice")).await.unwrap();
        let here: IpAddr = "192.0.2.7".parse().unwrap();
        for _ in 0..USERNAME_FREE_FAILURES {
            assert!(matches!(
                users.login("ann", "wrong password", Some(here)).await,
                Err(UserError::InvalidCredentials)
            ));
        }
        // One more failure starts the wait; then even the right password waits.
        let _ = users.login("ANN", "wrong password", Some(here)).await;
        assert!(matches!(
            users.login("ann", "correct horse", Some(here)).await,
            Err(UserError::Throttled(_))
        ));
        // Unknown names count against the address.
        for i in 0..ADDRESS_FREE_FAILURES {
            let _ = users.login(&format!("nobody{i}"), "x", Some(here)).await;
        }
        assert!(matches!(
            users.login("someone", "x", Some(here)).await,
            Err(UserError::Throttled(_))
        ));
    }

    #[tokio::test]
    async fn bad_fields_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let users = users(dir.path()).await;
        type Change = fn(&mut NewUser);
        let cases: [(Change, &str); 4] = [
            (|u| u.username = "a".into(), "username"),
            (|u| u.username = "ann smith".into(), "username"),
            (|u| u.password = "short".into(), "password"),
            (|u| u.email = Some("nope".into()), "email"),
        ];
        for (change, field) in cases {
            let mut new = ann("alice");
            change(&mut new);
            match users.create(new).await {
                Err(UserError::Invalid { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
        users.create(ann("alice")).await.unwrap();
        assert!(matches!(
            users.create(ann("bob")).await,
            Err(UserError::Conflict(_))
        ));
        assert!(
            users
                .list(&TenantId::new("bob").unwrap())
                .await
                .unwrap()
                .is_empty()
        );
    }
}
