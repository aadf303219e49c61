//! [`Auth`]: the users, the signing key and the ACL rule behind one handle that
//! the HTTP layer shares in an `Arc`.
//!
//! Readers (token checks, ACL decisions) take a snapshot of the user table under
//! a read lock held for a pointer copy. Changes are serialized by a mutex: each
//! edits a copy of the table, writes it to disk, and only then publishes it, so a
//! change is durable before anyone sees it and a failed write changes nothing.
//!
//! Another process may change the users file too (`broker user add` on a running
//! broker's data directory). [`Auth::reload_if_changed`], called by the broker's
//! maintenance every second, notices that with one `stat` and loads the new file;
//! and every change first reloads a file changed behind its back, so that it edits
//! the newest table rather than undoing the other process's change.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};

use super::acl::{self, Action, Grant, Resource};
use super::config::AuthConfig;
use super::password;
use super::random::CryptoError;
use super::secret::SigningSecret;
use super::store::{self, FileStamp, USERS_FILE_NAME};
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
    /// Held by a change (or a reload) from reading the table to publishing the new
    /// one; it also guards what is known of the file on disk.
    change: Mutex<FileState>,
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
    /// Counts the tables published, so that requests that wait (long polls) can
    /// check their caller again when users or grants change.
    published: tokio::sync::watch::Sender<u64>,
}

/// What the user table reflects of the users file on disk.
#[derive(Debug, Default)]
struct FileState {
    /// The version of the file the table was loaded from (`None`: there was none).
    /// A version written by this process is not recorded: the next check reloads
    /// it once, which is cheap and cannot miss a write by another process that
    /// lands just after ours.
    loaded: Option<FileStamp>,
    /// The last version that could not be loaded and was reported (the inner
    /// `None`: the file was missing), so that a damaged file is reported once
    /// rather than on every check.
    refused: Option<Option<FileStamp>>,
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
    /// When the token was issued (Unix seconds), to check it again later against
    /// the user's `tokens_not_before`.
    pub issued_at: u64,
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
        // Stamped before reading: a write in between shows as a change, and the
        // next check loads it. A bootstrap stamps the file it has just written.
        let mut loaded = store::stamp(&users_path)?;
        let (table, bootstrap) = match store::load(&users_path)? {
            Some(table) if !table.is_empty() => (table, Bootstrap::default()),
            found => {
                let made = bootstrap_admin(&users_path, config, found.is_some())?;
                loaded = store::stamp(&users_path)?;
                made
            }
        };
        let auth = Auth {
            users_path,
            users: RwLock::new(Arc::new(table)),
            change: Mutex::new(FileState {
                loaded,
                refused: None,
            }),
            keys: TokenKeys::new(secret.bytes()),
            token_ttl_secs: config.token_ttl_secs,
            fingerprint: secret.fingerprint(),
            receipt_key: secret.receipt_key(),
            decoy_hash: OnceLock::new(),
            published: tokio::sync::watch::Sender::new(0),
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
        let who = Principal {
            name: claims.sub.clone(),
            issued_at: claims.iat,
        };
        self.check_user(&who)?;
        Ok(who)
    }

    /// That the token's user exists and the token is not older than the user's
    /// last password change.
    fn check_user(&self, who: &Principal) -> Result<(), ApiError> {
        let snapshot = self.snapshot();
        let Some(user) = snapshot.get(&who.name) else {
            return Err(ApiError::unauthorized(format!(
                "the token is for user {:?}, who no longer exists",
                who.name
            )));
        };
        if who.issued_at < user.tokens_not_before_unix_secs {
            return Err(ApiError::unauthorized(
                "the token was issued before the user's password was last set; request a new one",
            ));
        }
        Ok(())
    }

    /// Checks again, against the current users and grants, what a request checked
    /// when it came: that its token's user still exists, that the token is not
    /// older than the user's last password change, and that the right is still
    /// granted. For requests that wait (long polls), with [`Auth::changes`].
    pub fn still_allowed(
        &self,
        who: &Principal,
        action: Action,
        resource: Resource<'_>,
    ) -> Result<(), ApiError> {
        self.check_user(who)?;
        self.authorize(who, action, resource)
    }

    /// The users and grants now: how many tables were published. Read before a
    /// check, it tells whether anything changed since (see [`Auth::changes`]).
    pub fn version(&self) -> u64 {
        *self.published.borrow()
    }

    /// Changes each time the users or grants do (a change here, a reload of the
    /// file, the cluster's copy).
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.published.subscribe()
    }

    /// Makes `table` the current one and tells the waiting requests.
    fn publish(&self, table: UserTable) {
        *self.users.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(table);
        self.published.send_modify(|n| *n += 1);
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

    /// Loads the users file again when another process changed it since it was
    /// last loaded (one `stat` when it did not): `Ok(true)` when it reloaded.
    ///
    /// A file that cannot be loaded (damaged, emptied of users, or removed) leaves
    /// the users in memory as they are; that version of the file is reported as an
    /// `Err` once, and later calls return `Ok(false)` until the file changes again.
    /// Costs no argon2 work: call it from a blocking thread all the same, as it
    /// reads a file.
    pub fn reload_if_changed(&self) -> Result<bool, BrokerError> {
        let mut state = self.change.lock().unwrap_or_else(PoisonError::into_inner);
        let stamp = store::stamp(&self.users_path)?;
        if stamp == state.loaded || state.refused == Some(stamp) {
            return Ok(false);
        }
        match self.reload(&mut state, stamp) {
            Ok(()) => Ok(true),
            Err(error) => {
                state.refused = Some(stamp);
                Err(error)
            }
        }
    }

    /// Loads the users file as the version `stamp` and publishes its table.
    fn reload(&self, state: &mut FileState, stamp: Option<FileStamp>) -> Result<(), BrokerError> {
        let keeping = "the broker keeps the users it had";
        let bad = |reason: String| BrokerError::BadMetadata {
            path: self.users_path.clone(),
            reason,
        };
        let table = match store::load(&self.users_path)? {
            Some(table) if !table.is_empty() => table,
            Some(_) => return Err(bad(format!("the file holds no users; {keeping}"))),
            None => {
                return Err(bad(format!(
                    "the file is gone; {keeping} and writes them again on the next change"
                )));
            }
        };
        let count = table.iter().count();
        // This process's own writes are reloaded once too (see `FileState`); they
        // are no news.
        let same = *self.snapshot() == table;
        self.publish(table);
        state.loaded = stamp;
        state.refused = None;
        if same {
            tracing::debug!(path = %self.users_path.display(), "reloaded the users file unchanged");
        } else {
            tracing::info!(
                path = %self.users_path.display(),
                users = count,
                "reloaded the users file, which another process changed"
            );
        }
        Ok(())
    }

    /// The current user table, as a cluster compares and shares it.
    pub(crate) fn users_table(&self) -> Arc<UserTable> {
        self.snapshot()
    }

    /// Replaces every user with `next` (a table that came from the cluster): on
    /// disk, then in memory. Only when the table is still `expected` and the file
    /// still the version loaded (or missing: it is written anew); else
    /// `Ok(false)`, changing nothing, so that the caller reads the newer table
    /// and merges. A file that could not be loaded is not written over: an error
    /// says so.
    pub(crate) fn replace_users(
        &self,
        expected: &UserTable,
        next: UserTable,
    ) -> Result<bool, BrokerError> {
        let mut state = self.change.lock().unwrap_or_else(PoisonError::into_inner);
        let _locked = store::lock(&self.users_path)?;
        let stamp = store::stamp(&self.users_path)?;
        if stamp.is_some() && stamp != state.loaded {
            if state.refused == Some(stamp) {
                return Err(BrokerError::BadMetadata {
                    path: self.users_path.clone(),
                    reason: "the file cannot be loaded, so the cluster's users are not written \
                             over it; fix or remove it"
                        .to_owned(),
                });
            }
            return Ok(false);
        }
        if *self.snapshot() != *expected {
            return Ok(false);
        }
        store::save(&self.users_path, &next)?;
        self.publish(next);
        // As after any write of ours, the stamp is left for the next check.
        state.refused = None;
        Ok(true)
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
        // The guard's data is only a cache of file stamps, so a poisoned one is fine
        // to take.
        let mut state = self.change.lock().unwrap_or_else(PoisonError::into_inner);
        // Build on the newest file: a change made by another process since the
        // last load must not be undone by writing our older table over it. A
        // missing file is written anew from the table in memory. The file lock
        // keeps other processes from writing between this read and our write.
        let _locked = store::lock(&self.users_path).map_err(ApiError::internal)?;
        let stamp = store::stamp(&self.users_path).map_err(ApiError::internal)?;
        if stamp.is_some() && stamp != state.loaded {
            self.reload(&mut state, stamp).map_err(ApiError::internal)?;
        }
        let mut next = UserTable::clone(&self.snapshot());
        let outcome = edit(&mut next)?;
        store::save(&self.users_path, &next)?;
        self.publish(next);
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
    let (password, bootstrap) = match config.checked_admin_password()? {
        Some(password) => (password.to_owned(), Bootstrap::default()),
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
