//! [`Auth`]: the users, the signing key and the ACL rule behind one handle that
//! the HTTP layer shares in an `Arc`.
//!
//! Readers (token checks, ACL decisions) take a snapshot of the user table under
//! a read lock held for a pointer copy. Changes are serialized by a mutex: each
//! edits a copy of the table, writes it to disk, and only then publishes it, so a
//! change is durable before anyone sees it and a failed write changes nothing.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};

use super::acl::{self, Action, Grant, Resource};
use super::config::AuthConfig;
use super::password;
use super::random::CryptoError;
use super::secret::SigningSecret;
use super::store::{self, USERS_FILE_NAME};
use super::token::{self, Claims, TOKEN_TYPE, Token, TokenKeys};
use super::users::{User, UserInfo, UserTable};
use crate::error::{ApiError, BrokerError};

/// The name of the admin user the first start creates.
pub const BOOTSTRAP_ADMIN_NAME: &str = "admin";

/// The one message for a wrong user name or a wrong password, so that a caller
/// cannot learn which names exist.
const INVALID_CREDENTIALS: &str = "invalid username or password";

/// Users, passwords, tokens and ACLs. `Send + Sync`: share it in an `Arc`.
pub struct Auth {
    /// `<data>/users.json`.
    users_path: PathBuf,
    /// The current user table; replaced whole after each persisted change.
    users: RwLock<Arc<UserTable>>,
    /// Held by a change from reading the table to publishing the new one.
    change: Mutex<()>,
    /// Signs and checks tokens.
    keys: TokenKeys,
    /// Lifetime of new tokens.
    token_ttl_secs: u64,
    /// The signing key's fingerprint, for logs.
    fingerprint: String,
    /// HMAC-SHA256(JWT secret, "receipts").
    receipt_key: [u8; 32],
    /// A hash checked against when the user name is unknown, so that a login
    /// takes as long whether or not the name exists. Made on first need.
    decoy_hash: OnceLock<Option<String>>,
}

/// What opening did that the caller must tell the operator.
#[derive(Default, Clone, PartialEq, Eq)]
pub struct Bootstrap {
    /// `Some(password)` when this start created the `admin` user with a random
    /// password: the caller prints it once; only its hash is stored. `None` when
    /// users existed, or `admin_password` was configured.
    pub created_admin_password: Option<String>,
}

impl fmt::Debug for Bootstrap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = self.created_admin_password.as_ref().map(|_| "<redacted>");
        f.debug_struct("Bootstrap")
            .field("created_admin_password", &shown)
            .finish()
    }
}

/// Who made a request: a user whose token checked out.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Principal {
    /// The user's name.
    pub name: String,
}

impl Auth {
    /// Opens the auth state in `data_dir` (created if missing): the signing secret
    /// (configured, or `<data>/jwt-secret`, made on first start) and the users in
    /// `<data>/users.json`. With no users yet, creates `admin` with
    /// `config.admin_password` or a random password returned in the
    /// [`Bootstrap`]. A damaged file is an error naming it.
    pub fn open(data_dir: &Path, config: &AuthConfig) -> Result<(Auth, Bootstrap), BrokerError> {
        config.validate()?;
        std::fs::create_dir_all(data_dir).map_err(|e| BrokerError::io(data_dir, e))?;
        let secret = SigningSecret::resolve(data_dir, config.jwt_secret.as_deref())?;
        let users_path = data_dir.join(USERS_FILE_NAME);
        let (table, bootstrap) = match store::load(&users_path)? {
            Some(table) if !table.is_empty() => (table, Bootstrap::default()),
            found => bootstrap_admin(&users_path, config, found.is_some())?,
        };
        let auth = Auth {
            users_path,
            users: RwLock::new(Arc::new(table)),
            change: Mutex::new(()),
            keys: TokenKeys::new(secret.bytes()),
            token_ttl_secs: config.token_ttl_secs,
            fingerprint: secret.fingerprint(),
            receipt_key: secret.receipt_key(),
            decoy_hash: OnceLock::new(),
        };
        tracing::info!(key = %auth.fingerprint, "auth ready");
        Ok((auth, bootstrap))
    }

    /// A token for the user when the password is right; else a 401 that does not
    /// say whether the name or the password was wrong.
    ///
    /// Costs an argon2 check (tens of milliseconds of CPU): call it from
    /// `tokio::task::spawn_blocking`, not on an async worker.
    pub fn issue_token(&self, username: &str, password: &str) -> Result<Token, ApiError> {
        let stored = self
            .snapshot()
            .get(username)
            .map(|u| u.password_hash.clone());
        let matches = match &stored {
            Some(hash) => password::verify(password, hash),
            None => {
                if let Some(decoy) = self.decoy_hash() {
                    password::verify(password, decoy);
                }
                false
            }
        };
        if !matches {
            return Err(ApiError::unauthorized(INVALID_CREDENTIALS));
        }
        let claims = Claims::new(username, token::now_unix_secs(), self.token_ttl_secs)
            .map_err(ApiError::internal)?;
        Ok(Token {
            access_token: self.keys.sign(&claims)?,
            token_type: TOKEN_TYPE,
            expires_in: self.token_ttl_secs,
        })
    }

    /// The user a bearer token (without the `Bearer ` prefix) stands for; a 401
    /// saying why when it is malformed, unsigned, signed with another algorithm
    /// or key, expired, for a user who no longer exists, or older than the user's
    /// last password change.
    pub fn verify(&self, bearer_token: &str) -> Result<Principal, ApiError> {
        let claims = self.keys.check(bearer_token)?;
        let snapshot = self.snapshot();
        let Some(user) = snapshot.get(&claims.sub) else {
            return Err(ApiError::unauthorized(format!(
                "the token is for user {:?}, who no longer exists",
                claims.sub
            )));
        };
        if claims.iat < user.tokens_not_before_unix_secs {
            return Err(ApiError::unauthorized(
                "the token was issued before the user's password was last set; request a new one",
            ));
        }
        Ok(Principal { name: claims.sub })
    }

    /// `Ok` when `who` may do `action` on `resource`, else a 403 naming the user,
    /// the action and the resource. See [`super::acl`] for the rule.
    pub fn authorize(
        &self,
        who: &Principal,
        action: Action,
        resource: Resource<'_>,
    ) -> Result<(), ApiError> {
        if self.can(who, action, resource) {
            return Ok(());
        }
        let needs = match resource {
            Resource::Cluster => "; only admin users may",
            Resource::Topic(_) | Resource::Queue(_) => "",
        };
        Err(ApiError::forbidden(format!(
            "user {:?} may not {action} on {resource}{needs}",
            who.name
        )))
    }

    /// Whether `who` may do `action` on `resource`.
    pub fn can(&self, who: &Principal, action: Action, resource: Resource<'_>) -> bool {
        self.snapshot()
            .get(&who.name)
            .is_some_and(|user| acl::permits(user.admin, &user.grants, action, resource))
    }

    /// Whether `who` has any right on `resource`: may describe it, and sees it in
    /// listings.
    pub fn can_see(&self, who: &Principal, resource: Resource<'_>) -> bool {
        self.snapshot()
            .get(&who.name)
            .is_some_and(|user| acl::sees(user.admin, &user.grants, resource))
    }

    /// Adds a user; 400 for a bad name or password, 409 when the name is taken.
    /// Costs an argon2 hash: call it from a blocking thread.
    pub fn add_user(&self, name: &str, password: &str, admin: bool) -> Result<(), ApiError> {
        crate::names::validate("user", name)?;
        password::validate(password)?;
        // Answer a taken name before spending a hash on it; `insert` checks again.
        if self.snapshot().get(name).is_some() {
            return Err(ApiError::already_exists(format!("user {name:?} exists")));
        }
        let user = User {
            name: name.to_owned(),
            password_hash: password::hash(password).map_err(ApiError::internal)?,
            admin,
            grants: Vec::new(),
            tokens_not_before_unix_secs: token::now_unix_secs(),
        };
        self.change(|table| table.insert(user))
    }

    /// Removes a user, whose tokens stop working at once; 404 when there is none,
    /// 400 for the last admin.
    pub fn remove_user(&self, name: &str) -> Result<(), ApiError> {
        self.change(|table| table.remove(name).map(drop))
    }

    /// Sets a user's password; the user's earlier tokens stop working. 404 when
    /// there is no such user, 400 for an empty password. Costs an argon2 hash.
    pub fn set_password(&self, name: &str, password: &str) -> Result<(), ApiError> {
        password::validate(password)?;
        if self.snapshot().get(name).is_none() {
            return Err(ApiError::not_found(format!("no user {name:?}")));
        }
        let hash = password::hash(password).map_err(ApiError::internal)?;
        self.change(|table| table.set_password_hash(name, hash, token::now_unix_secs()))
    }

    /// Makes a user an admin or not; 404 when there is none, 400 to demote the
    /// last admin.
    pub fn set_admin(&self, name: &str, admin: bool) -> Result<(), ApiError> {
        self.change(|table| table.set_admin(name, admin))
    }

    /// Every user, in name order, without password hashes.
    pub fn users(&self) -> Vec<UserInfo> {
        self.snapshot().iter().map(User::info).collect()
    }

    /// One user, without the password hash.
    pub fn user(&self, name: &str) -> Option<UserInfo> {
        self.snapshot().get(name).map(User::info)
    }

    /// Gives a user a right (nothing when the user has it already); 404 for an
    /// unknown user, 400 for a bad pattern. Takes effect at once.
    pub fn grant(&self, user: &str, grant: Grant) -> Result<(), ApiError> {
        self.change(|table| table.grant(user, grant).map(drop))
    }

    /// Takes a right away; `Ok(false)` when the user did not have it, 404 for an
    /// unknown user. Takes effect at once.
    pub fn revoke(&self, user: &str, grant: &Grant) -> Result<bool, ApiError> {
        self.change(|table| table.revoke(user, grant))
    }

    /// A short, non-secret name of the token signing key (`sha256:` and 16 hex
    /// digits), for logs: two nodes accept each other's tokens exactly when their
    /// fingerprints are equal.
    pub fn signing_key_fingerprint(&self) -> String {
        self.fingerprint.clone()
    }

    /// The key that signs queue receipts: HMAC-SHA256(JWT secret, "receipts"). A
    /// secret, the same on every node that shares the JWT secret.
    pub fn receipt_key(&self) -> [u8; 32] {
        self.receipt_key
    }

    /// The current user table.
    fn snapshot(&self) -> Arc<UserTable> {
        Arc::clone(&self.users.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Applies `edit` to a copy of the table, persists the copy, then publishes
    /// it. An error from `edit` or from the disk leaves everything as it was.
    fn change<T>(
        &self,
        edit: impl FnOnce(&mut UserTable) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        // The guard protects no data of its own, so a poisoned one is fine to take.
        let _serialized = self.change.lock().unwrap_or_else(PoisonError::into_inner);
        let mut next = UserTable::clone(&self.snapshot());
        let outcome = edit(&mut next)?;
        store::save(&self.users_path, &next)?;
        *self.users.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(next);
        Ok(outcome)
    }

    /// The decoy hash, made on the first login with an unknown name.
    fn decoy_hash(&self) -> Option<&str> {
        self.decoy_hash
            .get_or_init(|| password::generate().and_then(|pw| password::hash(&pw)).ok())
            .as_deref()
    }
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("users_path", &self.users_path)
            .field("signing_key", &self.fingerprint)
            .field("token_ttl_secs", &self.token_ttl_secs)
            .finish_non_exhaustive()
    }
}

/// Creates the `admin` user in a users file that is missing (`file_exists` false)
/// or holds no user.
fn bootstrap_admin(
    path: &Path,
    config: &AuthConfig,
    file_exists: bool,
) -> Result<(UserTable, Bootstrap), BrokerError> {
    let crypto = |e: CryptoError| BrokerError::io(path, e.into());
    let (password, bootstrap) = match &config.admin_password {
        Some(password) => (password.clone(), Bootstrap::default()),
        None => {
            let password = password::generate().map_err(crypto)?;
            let bootstrap = Bootstrap {
                created_admin_password: Some(password.clone()),
            };
            (password, bootstrap)
        }
    };
    let admin = User {
        name: BOOTSTRAP_ADMIN_NAME.to_owned(),
        password_hash: password::hash(&password).map_err(crypto)?,
        admin: true,
        grants: Vec::new(),
        tokens_not_before_unix_secs: token::now_unix_secs(),
    };
    let table = UserTable::from_users(vec![admin]).map_err(|reason| BrokerError::BadMetadata {
        path: path.to_owned(),
        reason,
    })?;
    if file_exists {
        store::save(path, &table)?;
    } else if !store::create_new(path, &table)? {
        // Another process bootstrapped first: its admin stands, ours is dropped.
        let theirs = store::load(path)?.unwrap_or_default();
        return Ok((theirs, Bootstrap::default()));
    }
    tracing::info!(
        path = %path.display(),
        user = BOOTSTRAP_ADMIN_NAME,
        "created the first admin user"
    );
    Ok((table, bootstrap))
}

// The HTTP layer shares one `Auth` between tasks.
const _: () = {
    const fn shareable<T: Send + Sync>() {}
    shareable::<Auth>();
};
