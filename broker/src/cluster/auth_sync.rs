//! Users and ACL grants shared by a cluster: the znode [`AUTH_USERS`] holds the
//! users table, the same document as `users.json` (argon2 hashes, never a
//! password), and is authoritative. Each node keeps its own `users.json` as a
//! copy, so `broker user ...` and `broker acl ...` (which edit that file) and
//! the REST API work on any node, and the node's [`Auth`] reads users locally.
//!
//! [`AuthSync::sync`] runs with every read of the cluster state (on a watch event
//! and every few seconds). It compares three tables: the node's (`local`), the
//! znode's (`remote`), and the one both last agreed on (`agreed`, with the znode
//! version it was read or written at):
//!
//! | local vs agreed | znode version | action |
//! | --- | --- | --- |
//! | any | no znode | create it with the local table |
//! | same | same | nothing |
//! | changed | same | upload local, conditional on that version |
//! | same | changed | write remote to `users.json` and load it |
//! | changed | changed | merge (below), upload, write locally |
//! | - | first sync of this process | take remote whole |
//!
//! The merge goes user by user against `agreed`: a user changed (added, removed,
//! edited) on one side only takes that side's state; a user changed on both sides
//! takes ZooKeeper's (the change that reached ZooKeeper first wins). If the result
//! had no admin, ZooKeeper's table is taken whole. A conditional write that finds
//! a newer version reads again and merges again, a bounded number of times.
//!
//! A first sync takes the cluster's table whole, rather than merging: the node's
//! file may be from before it was stopped, and merging it would bring back users
//! the cluster removed meanwhile. So a node joining a cluster that has users drops
//! the `admin` it made at its first start for the cluster's.
//!
//! A znode that is not a valid table (bad JSON, unknown version, a hash that is not
//! argon2, no users) is refused: the error is returned once per version and the
//! node keeps its users; nothing is uploaded over it until it is replaced.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::coord::{CoordError, Coordination, CreateMode, Version};
use super::layout::{AUTH, AUTH_USERS};
use crate::auth::Auth;
use crate::auth::store;
use crate::auth::users::UserTable;
use crate::error::BrokerError;

/// The largest table written to the znode. ZooKeeper refuses a request larger
/// than its `jute.maxbuffer`, 1 MiB by default, and the request carries the path
/// and a header besides the data: this leaves 48 KiB for them. About 4000 users
/// with a few grants each.
pub const USERS_ZNODE_BYTES_MAX: usize = 1_000_000;

/// How many times one sync reads and writes again after a conditional write found
/// that another node wrote first. Each round trip is a few milliseconds; more
/// contention than this waits for the next sync.
const ATTEMPTS_MAX: u32 = 4;

/// Why a sync of the users table failed. The node keeps its users in each case.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthSyncError {
    /// The coordination service failed or is unreachable.
    #[error("ZooKeeper: {0}")]
    Coordination(#[from] CoordError),
    /// The node's `users.json` could not be read or written.
    #[error(transparent)]
    Local(#[from] BrokerError),
    /// The table in the znode is not valid.
    #[error(
        "the users table in ZooKeeper ({AUTH_USERS}, version {version}) is refused: \
         {reason}; this node keeps its users until a valid table replaces it"
    )]
    BadTable {
        /// The znode version refused.
        version: Version,
        /// What is wrong, without quoting any hash.
        reason: String,
    },
    /// The table is too large for a znode.
    #[error(
        "the users table is {bytes} bytes, more than the {USERS_ZNODE_BYTES_MAX} a \
         ZooKeeper node holds; it is not shared"
    )]
    TooLarge {
        /// Its size as JSON.
        bytes: usize,
    },
    /// Other nodes kept writing the table while this one tried.
    #[error("the users table in ZooKeeper changed {attempts} times during one sync")]
    Contended {
        /// How many attempts were made.
        attempts: u32,
    },
}

/// What a sync did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synced {
    /// Both sides were as last agreed (or the znode holds a table refused before).
    Unchanged,
    /// This node's table went to the znode, now at `version`.
    Uploaded {
        /// The znode's version after the write.
        version: Version,
    },
    /// The znode's table replaced this node's.
    Adopted {
        /// The znode's version taken.
        version: Version,
    },
    /// Both had changed: the merge went to the znode and to this node.
    Merged {
        /// The znode's version after the write.
        version: Version,
    },
}

/// Keeps a node's users in step with the cluster's. One per node; the node's run
/// loop calls [`AuthSync::sync_logged`].
#[derive(Debug, Default)]
pub struct AuthSync {
    /// What this node knows of the znode. A sync holds the lock throughout, so two
    /// syncs never interleave.
    state: tokio::sync::Mutex<SyncState>,
}

/// What this node knows of the znode.
#[derive(Debug, Default)]
struct SyncState {
    /// What the node and the znode last agreed on; `None` until the first sync of
    /// this process.
    agreed: Option<Agreed>,
    /// The last znode version refused and its bytes, so that it is reported once
    /// (bytes too, as a znode created again restarts its versions).
    refused: Option<(Version, Vec<u8>)>,
}

/// A table the node and the znode both held.
#[derive(Debug)]
struct Agreed {
    /// The table.
    table: Arc<UserTable>,
    /// The znode's version then.
    version: Version,
    /// The znode's bytes then. Compared with the version: a znode deleted and
    /// created again counts its versions from 0 anew, so a version alone may match
    /// another table.
    data: Vec<u8>,
}

impl Agreed {
    /// Whether the znode still holds this table.
    fn matches(&self, data: &[u8], version: Version) -> bool {
        self.version == version && self.data == data
    }
}

impl AuthSync {
    /// A sync that has not run yet: its first run takes the cluster's table, or
    /// shares this node's when the cluster has none.
    pub fn new() -> AuthSync {
        AuthSync::default()
    }

    /// Brings `auth`'s users and the znode in step, as the module doc describes,
    /// and sets a watch on the znode. A write of this sync fires that watch too, so
    /// the sync it prompts sets the watch again. Reads and writes `users.json` on
    /// the calling thread (a `stat`, and a small file when something changed).
    pub async fn sync(
        &self,
        coord: &dyn Coordination,
        auth: &Auth,
    ) -> Result<Synced, AuthSyncError> {
        let mut state = self.state.lock().await;
        for _ in 0..ATTEMPTS_MAX {
            if let Some(synced) = attempt(&mut state, coord, auth).await? {
                return Ok(synced);
            }
        }
        Err(AuthSyncError::Contended {
            attempts: ATTEMPTS_MAX,
        })
    }

    /// [`AuthSync::sync`], logging what it did: a refused table as an error, other
    /// failures as warnings (the next sync retries).
    pub async fn sync_logged(&self, coord: &dyn Coordination, auth: &Auth) {
        match self.sync(coord, auth).await {
            Ok(Synced::Unchanged) => {}
            Ok(Synced::Uploaded { version }) => {
                tracing::info!(path = AUTH_USERS, version, "shared this node's users");
            }
            Ok(Synced::Adopted { version }) => {
                tracing::info!(path = AUTH_USERS, version, "took the cluster's users");
            }
            Ok(Synced::Merged { version }) => {
                tracing::info!(
                    path = AUTH_USERS,
                    version,
                    "merged this node's user changes with the cluster's"
                );
            }
            Err(error @ AuthSyncError::BadTable { .. }) => {
                tracing::error!(%error, "cannot take the cluster's users");
            }
            Err(error) => tracing::warn!(%error, "syncing users with the cluster failed"),
        }
    }
}

/// One read of the znode and what follows; `None` when another writer came first
/// and the caller should read again.
async fn attempt(
    state: &mut SyncState,
    coord: &dyn Coordination,
    auth: &Auth,
) -> Result<Option<Synced>, AuthSyncError> {
    // Loads a `broker user ...` change now rather than at the next maintenance.
    auth.reload_if_changed()?;
    let local = auth.users_table();
    let Some((data, version)) = coord.get(AUTH_USERS, true).await? else {
        return create(state, coord, local).await;
    };
    let agreed = state.agreed.as_ref().filter(|a| a.matches(&data, version));
    if let Some(agreed) = agreed {
        if *agreed.table == *local {
            return Ok(Some(Synced::Unchanged));
        }
        return upload(state, coord, local, version).await;
    }
    if state
        .refused
        .as_ref()
        .is_some_and(|(v, refused)| *v == version && *refused == data)
    {
        return Ok(Some(Synced::Unchanged));
    }
    let remote = match decode(&data) {
        Ok(remote) => remote,
        Err(reason) => {
            state.refused = Some((version, data));
            return Err(AuthSyncError::BadTable { version, reason });
        }
    };
    state.refused = None;
    let next = match &state.agreed {
        Some(agreed) if *agreed.table != *local => merge(&agreed.table, &local, &remote),
        _ => remote.clone(),
    };
    let merged = next != remote;
    let (mut data, mut version) = (data, version);
    if merged {
        data = encode(&next)?;
        match coord.set(AUTH_USERS, data.clone(), version).await {
            Ok(written) => version = written,
            Err(CoordError::BadVersion(_) | CoordError::NoNode(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
    // A local change since `local` was read makes this `false`; the agreed table
    // stays, so the next attempt merges that change too.
    let changed_here = next != *local;
    if changed_here && !auth.replace_users(&local, next.clone())? {
        return Ok(None);
    }
    state.agreed = Some(Agreed {
        table: Arc::new(next),
        version,
        data,
    });
    Ok(Some(if merged {
        Synced::Merged { version }
    } else if changed_here {
        Synced::Adopted { version }
    } else {
        Synced::Unchanged
    }))
}

/// Creates the znode with this node's table (the cluster has none yet, or an
/// operator deleted it).
async fn create(
    state: &mut SyncState,
    coord: &dyn Coordination,
    local: Arc<UserTable>,
) -> Result<Option<Synced>, AuthSyncError> {
    let data = encode(&local)?;
    coord.ensure_path(AUTH).await?;
    match coord
        .create(AUTH_USERS, data.clone(), CreateMode::Persistent)
        .await
    {
        Ok(()) => {
            state.agreed = Some(Agreed {
                table: local,
                version: 0,
                data,
            });
            Ok(Some(Synced::Uploaded { version: 0 }))
        }
        Err(CoordError::NodeExists(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Writes this node's table over the znode's version `expected`, which is the one
/// last agreed on.
async fn upload(
    state: &mut SyncState,
    coord: &dyn Coordination,
    local: Arc<UserTable>,
    expected: Version,
) -> Result<Option<Synced>, AuthSyncError> {
    let data = encode(&local)?;
    match coord.set(AUTH_USERS, data.clone(), expected).await {
        Ok(version) => {
            state.agreed = Some(Agreed {
                table: local,
                version,
                data,
            });
            Ok(Some(Synced::Uploaded { version }))
        }
        Err(CoordError::BadVersion(_) | CoordError::NoNode(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The znode's bytes for `table`, within [`USERS_ZNODE_BYTES_MAX`].
fn encode(table: &UserTable) -> Result<Vec<u8>, AuthSyncError> {
    let bytes = store::encode_compact(table)
        .map_err(|e| AuthSyncError::Coordination(CoordError::Other(e.to_string())))?;
    if bytes.len() > USERS_ZNODE_BYTES_MAX {
        return Err(AuthSyncError::TooLarge { bytes: bytes.len() });
    }
    Ok(bytes)
}

/// The table in the znode's bytes, checked as a `users.json` is at start; a
/// table without users is refused too, as it would lock everyone out.
fn decode(data: &[u8]) -> Result<UserTable, String> {
    if data.len() > USERS_ZNODE_BYTES_MAX {
        return Err(format!(
            "{} bytes, more than the limit of {USERS_ZNODE_BYTES_MAX}",
            data.len()
        ));
    }
    let table = store::decode(data)?;
    if table.is_empty() {
        return Err("the table holds no users".to_owned());
    }
    Ok(table)
}

/// The three-way merge of the module doc: user by user against `agreed`, a change
/// on one side only is kept, a user changed on both sides is `remote`'s. `remote`
/// whole if the merge had no admin.
fn merge(agreed: &UserTable, local: &UserTable, remote: &UserTable) -> UserTable {
    let names: BTreeSet<&str> = agreed
        .iter()
        .chain(local.iter())
        .chain(remote.iter())
        .map(|user| user.name.as_str())
        .collect();
    let users = names
        .into_iter()
        .filter_map(|name| {
            let (before, ours, theirs) = (agreed.get(name), local.get(name), remote.get(name));
            let only_ours_changed = ours != before && theirs == before;
            if only_ours_changed { ours } else { theirs }.cloned()
        })
        .collect();
    match UserTable::from_users(users) {
        Ok(merged) if merged.iter().any(|user| user.admin) => merged,
        _ => remote.clone(),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::time::Duration;

    use super::*;
    use crate::auth::users::User;
    use crate::auth::{
        Action, AuthConfig, Grant, Principal, Resource, ResourceKind, USERS_FILE_NAME,
    };
    use crate::cluster::memory::{MemoryCoordination, MemoryTree};

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    const SECRET: &str = "a secret the test cluster shares, 32+ bytes";
    const A_ADMIN_PASSWORD: &str = "admin password of a";
    const B_ADMIN_PASSWORD: &str = "admin password of b";

    fn config(admin_password: &str) -> AuthConfig {
        AuthConfig {
            jwt_secret: Some(SECRET.to_owned()),
            admin_password: Some(admin_password.to_owned()),
            ..AuthConfig::default()
        }
    }

    /// A cluster node, as far as users go: its data directory, its `Auth`, its
    /// session of the shared tree, its sync.
    struct Node {
        dir: tempfile::TempDir,
        auth: Auth,
        coord: MemoryCoordination,
        sync: AuthSync,
    }

    impl Node {
        /// A node that made its own `admin` with `admin_password` at first start.
        fn open(
            tree: &MemoryTree,
            admin_password: &str,
        ) -> Result<Node, Box<dyn std::error::Error>> {
            let dir = tempfile::tempdir()?;
            let (auth, _) = Auth::open(dir.path(), &config(admin_password))?;
            Ok(Node {
                dir,
                auth,
                coord: tree.session(),
                sync: AuthSync::new(),
            })
        }

        /// What `broker user ...` and `broker acl ...` open: the same data
        /// directory, from another process.
        fn operator(&self) -> Result<Auth, BrokerError> {
            Ok(Auth::open(self.dir.path(), &config("unused"))?.0)
        }

        async fn sync(&self) -> Result<Synced, AuthSyncError> {
            self.sync.sync(&self.coord, &self.auth).await
        }

        fn names(&self) -> Vec<String> {
            self.auth.users().into_iter().map(|u| u.name).collect()
        }

        fn grants(&self, user: &str) -> Vec<Grant> {
            self.auth.user(user).map(|u| u.grants).unwrap_or_default()
        }
    }

    /// Two nodes that have synced once: both hold `a`'s table, at version 0.
    async fn shared() -> Result<(Node, Node), Box<dyn std::error::Error>> {
        let tree = MemoryCoordination::new_tree();
        let a = Node::open(&tree, A_ADMIN_PASSWORD)?;
        let b = Node::open(&tree, B_ADMIN_PASSWORD)?;
        assert_eq!(a.sync().await?, Synced::Uploaded { version: 0 });
        assert_eq!(b.sync().await?, Synced::Adopted { version: 0 });
        Ok((a, b))
    }

    fn alice() -> Principal {
        Principal {
            name: "alice".to_owned(),
            issued_at: 0,
        }
    }

    #[tokio::test]
    async fn the_first_node_shares_its_users_and_a_joining_node_takes_them() -> TestResult {
        let (a, b) = shared().await?;
        assert!(b.auth.issue_token("admin", A_ADMIN_PASSWORD).is_ok());
        assert!(b.auth.issue_token("admin", B_ADMIN_PASSWORD).is_err());
        // The cluster's table is in b's file too, mode 0600, so b's next start has it.
        let path = b.dir.path().join(USERS_FILE_NAME);
        assert_eq!(
            std::fs::metadata(&path)?.permissions().mode() & 0o777,
            0o600
        );
        assert!(b.operator()?.issue_token("admin", A_ADMIN_PASSWORD).is_ok());
        assert_eq!(a.sync().await?, Synced::Unchanged);
        assert_eq!(b.sync().await?, Synced::Unchanged);
        Ok(())
    }

    #[tokio::test]
    async fn a_user_added_on_one_node_can_log_in_on_the_other() -> TestResult {
        let (a, b) = shared().await?;
        a.operator()?.add_user("alice", "alice's password", false)?;
        assert_eq!(a.sync().await?, Synced::Uploaded { version: 1 });
        assert_eq!(b.sync().await?, Synced::Adopted { version: 1 });
        assert!(b.auth.issue_token("alice", "alice's password").is_ok());
        assert_eq!(b.operator()?.users().len(), 2, "b's file has alice");
        Ok(())
    }

    #[tokio::test]
    async fn a_grant_on_one_node_applies_on_the_other() -> TestResult {
        let (a, b) = shared().await?;
        // Through the API of a: the running node's own change.
        a.auth.add_user("alice", "pw", false)?;
        a.sync().await?;
        b.sync().await?;
        let grant = Grant::new(ResourceKind::Topic, "orders.*", Action::Produce);
        b.operator()?.grant("alice", grant.clone())?;
        assert_eq!(b.sync().await?, Synced::Uploaded { version: 2 });
        assert_eq!(a.sync().await?, Synced::Adopted { version: 2 });
        let on = |topic| {
            a.auth
                .can(&alice(), Action::Produce, Resource::Topic(topic))
        };
        assert!(on("orders.eu"));
        assert!(!on("audit"));
        assert!(b.operator()?.revoke("alice", &grant)?);
        b.sync().await?;
        a.sync().await?;
        assert!(!on("orders.eu"));
        Ok(())
    }

    #[tokio::test]
    async fn a_user_removed_on_one_node_is_gone_on_the_other() -> TestResult {
        let (a, b) = shared().await?;
        a.auth.add_user("alice", "pw", false)?;
        a.sync().await?;
        b.sync().await?;
        assert!(b.auth.issue_token("alice", "pw").is_ok());
        b.operator()?.remove_user("alice")?;
        assert_eq!(b.sync().await?, Synced::Uploaded { version: 2 });
        assert_eq!(a.sync().await?, Synced::Adopted { version: 2 });
        assert!(a.auth.issue_token("alice", "pw").is_err());
        assert_eq!(a.names(), ["admin"]);
        Ok(())
    }

    #[tokio::test]
    async fn changes_to_different_users_on_two_nodes_are_merged() -> TestResult {
        let (a, b) = shared().await?;
        a.operator()?.add_user("alice", "pw", false)?;
        b.operator()?.add_user("bob", "pw", false)?;
        assert_eq!(a.sync().await?, Synced::Uploaded { version: 1 });
        assert_eq!(b.sync().await?, Synced::Merged { version: 2 });
        assert_eq!(a.sync().await?, Synced::Adopted { version: 2 });
        assert_eq!(b.sync().await?, Synced::Unchanged);
        assert_eq!(a.names(), ["admin", "alice", "bob"]);
        assert_eq!(b.names(), ["admin", "alice", "bob"]);
        assert_eq!(b.operator()?.users().len(), 3, "b's file has the merge");
        Ok(())
    }

    #[tokio::test]
    async fn a_user_changed_on_both_nodes_keeps_the_change_that_reached_zookeeper_first()
    -> TestResult {
        let (a, b) = shared().await?;
        a.auth.add_user("carol", "pw", false)?;
        a.sync().await?;
        b.sync().await?;
        let first = Grant::new(ResourceKind::Topic, "orders.*", Action::Produce);
        let second = Grant::new(ResourceKind::Queue, "jobs", Action::Consume);
        a.operator()?.grant("carol", first.clone())?;
        b.operator()?.grant("carol", second)?;
        b.operator()?.add_user("dave", "pw", false)?;
        assert_eq!(a.sync().await?, Synced::Uploaded { version: 2 });
        assert_eq!(b.sync().await?, Synced::Merged { version: 3 });
        a.sync().await?;
        for node in [&a, &b] {
            assert_eq!(node.grants("carol"), std::slice::from_ref(&first));
            assert_eq!(node.names(), ["admin", "carol", "dave"]);
        }
        Ok(())
    }

    fn user(name: &str, admin: bool) -> User {
        User {
            name: name.to_owned(),
            password_hash: format!("hash of {name}"),
            admin,
            grants: Vec::new(),
            tokens_not_before_unix_secs: 0,
        }
    }

    fn table(users: &[(&str, bool)]) -> UserTable {
        let users = users
            .iter()
            .map(|(name, admin)| user(name, *admin))
            .collect();
        UserTable::from_users(users).unwrap()
    }

    #[test]
    fn a_merge_that_would_leave_no_admin_takes_zookeepers_table() {
        let agreed = table(&[("root", true), ("toor", true)]);
        let local = table(&[("root", true), ("x", false)]);
        let remote = table(&[("toor", true), ("y", false)]);
        assert_eq!(merge(&agreed, &local, &remote), remote);
        // With an admin left, each side's change is kept.
        let remote = table(&[("root", true), ("toor", true), ("y", false)]);
        let merged = merge(&agreed, &local, &remote);
        assert_eq!(merged, table(&[("root", true), ("x", false), ("y", false)]));
    }

    #[tokio::test]
    async fn a_bad_table_in_zookeeper_is_refused_once_and_the_node_keeps_its_users() -> TestResult {
        let (a, b) = shared().await?;
        a.auth.add_user("alice", "pw", false)?;
        a.sync().await?;
        b.sync().await?;
        let good = String::from_utf8(store::encode_compact(&a.auth.users_table())?)?;
        let hash = a
            .auth
            .users_table()
            .get("alice")
            .unwrap()
            .password_hash
            .clone();
        let cases = [
            ("\u{0}garbage".to_owned(), "not a valid users file"),
            (r#"{"version":1,"users":[]}"#.to_owned(), "holds no users"),
            (
                good.replace(r#""version":1"#, r#""version":2"#),
                "version 2",
            ),
            (good.replace(&hash, "plaintext"), "PHC"),
        ];
        for (bad, expected) in cases {
            let (_, version) = a.coord.get(AUTH_USERS, false).await?.unwrap();
            a.coord.set(AUTH_USERS, bad.into_bytes(), version).await?;
            let error = b.sync().await.unwrap_err();
            let message = error.to_string();
            assert!(matches!(error, AuthSyncError::BadTable { .. }), "{message}");
            assert!(message.contains(expected), "{expected:?} not in {message}");
            assert!(message.contains(AUTH_USERS), "{message}");
            assert!(message.contains("keeps its users"), "{message}");
            assert!(!message.contains(&hash), "{message}");
            assert_eq!(b.sync().await?, Synced::Unchanged, "reported once");
            assert!(b.auth.issue_token("alice", "pw").is_ok());
            assert_eq!(b.operator()?.users().len(), 2, "b's file is untouched");
        }
        // Nothing is written over a refused table, even with a change here.
        b.auth.add_user("bob", "pw", false)?;
        assert_eq!(b.sync().await?, Synced::Unchanged);
        // An operator deletes the znode: the next node to sync shares its table.
        a.coord.delete(AUTH_USERS, None).await?;
        assert_eq!(b.sync().await?, Synced::Uploaded { version: 0 });
        assert!(a.sync().await.is_ok());
        assert_eq!(a.names(), ["admin", "alice", "bob"]);
        // A bad znode made anew (version 0), then replaced by a good one, also at
        // version 0: the good one is not mistaken for the refused one.
        a.coord.delete(AUTH_USERS, None).await?;
        let bad = b"not a table".to_vec();
        a.coord
            .create(AUTH_USERS, bad, CreateMode::Persistent)
            .await?;
        assert!(b.sync().await.is_err());
        a.coord.delete(AUTH_USERS, None).await?;
        let good = store::encode_compact(&table_without(&b.auth, "alice"))?;
        a.coord
            .create(AUTH_USERS, good, CreateMode::Persistent)
            .await?;
        assert_eq!(b.sync().await?, Synced::Adopted { version: 0 });
        assert_eq!(b.names(), ["admin", "bob"]);
        Ok(())
    }

    /// `auth`'s table without the user `name`.
    fn table_without(auth: &Auth, name: &str) -> UserTable {
        let users = auth
            .users_table()
            .iter()
            .filter(|u| u.name != name)
            .cloned()
            .collect();
        UserTable::from_users(users).unwrap()
    }

    #[tokio::test]
    async fn a_sync_watches_the_table_for_the_next_change() -> TestResult {
        let (a, b) = shared().await?;
        let mut changes = b.coord.changes();
        a.auth.add_user("alice", "pw", false)?;
        a.sync().await?;
        let changed = tokio::time::timeout(Duration::from_secs(5), changes.recv()).await??;
        assert_eq!(changed.path, AUTH_USERS);
        Ok(())
    }
}
