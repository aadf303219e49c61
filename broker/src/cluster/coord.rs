//! The coordination service, as the cluster sees it: a small tree of versioned
//! nodes with ephemeral members and change notifications. ZooKeeper implements it
//! for real ([`super::zk::ZkCoordination`]); an in-memory tree
//! ([`super::memory::MemoryCoordination`]) implements it for unit tests of the layers
//! above.
//!
//! Paths are absolute (`/brokers/1`) and relative to the cluster's chroot: the
//! implementation adds the chroot. Every write that changes shared state names the
//! version it read ([`Coordination::set`]), so two writers can never both win.

use futures_util::future::BoxFuture;
use tokio::sync::{broadcast, watch};

/// A node's data version, as ZooKeeper counts it (0 after creation, +1 per write).
pub type Version = i32;

/// A node's data and the version it was read at.
pub type VersionedData = (Vec<u8>, Version);

/// Whether a node outlives the session that created it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CreateMode {
    /// Stays until deleted.
    Persistent,
    /// Removed when the creating session ends (membership, controller election).
    Ephemeral,
}

/// The state of this process's session with the coordination service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionState {
    /// Connected; `generation` grows by one with every new session, so a watcher
    /// can tell a reconnection of the same session (ephemeral nodes kept) from a new
    /// session (ephemeral nodes gone, to be created again).
    Connected {
        /// Counts sessions from 1.
        generation: u64,
    },
    /// The connection is lost; the session may still be alive on the server, and
    /// ephemeral nodes with it. No write can be trusted to have happened.
    Disconnected,
    /// The session ended (expired or closed): its ephemeral nodes are gone. The
    /// implementation starts a new session on its own.
    Expired,
}

impl SessionState {
    /// Whether requests can be made now.
    pub fn is_connected(self) -> bool {
        matches!(self, SessionState::Connected { .. })
    }
}

/// A change the service notified: the data of `path` changed or it was created or
/// deleted, or its children changed. Watches are set by [`Coordination::get`] and
/// [`Coordination::children`]; a notification is a nudge to read again (which sets
/// the watch again), not the new value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Changed {
    /// The path, relative to the chroot.
    pub path: String,
}

/// Why a coordination request failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CoordError {
    /// The node (or its parent, for a create) does not exist.
    #[error("no node {0}")]
    NoNode(String),
    /// A create found the node already there.
    #[error("node {0} exists")]
    NodeExists(String),
    /// A conditional write found another version: someone else wrote first.
    #[error("node {0} changed since it was read")]
    BadVersion(String),
    /// A delete found children under the node.
    #[error("node {0} has children")]
    NotEmpty(String),
    /// No session: the request was not sent, or its outcome is unknown.
    #[error("not connected to the coordination service")]
    NotConnected,
    /// Anything else the service answered.
    #[error("coordination service: {0}")]
    Other(String),
}

/// The operations the cluster needs from its coordination service.
pub trait Coordination: Send + Sync + 'static {
    /// Creates `path` with `data`. Fails with `NodeExists` if it is there and
    /// `NoNode` if its parent is not.
    fn create(
        &self,
        path: &str,
        data: Vec<u8>,
        mode: CreateMode,
    ) -> BoxFuture<'_, Result<(), CoordError>>;

    /// Creates `path` and any missing parents as empty persistent nodes; succeeds if
    /// it exists already.
    fn ensure_path(&self, path: &str) -> BoxFuture<'_, Result<(), CoordError>>;

    /// The data and version of `path`, `None` if it does not exist. With `watch`,
    /// sets a watch that fires when the node changes, is deleted, or (if absent now)
    /// is created.
    #[allow(clippy::type_complexity)]
    fn get(
        &self,
        path: &str,
        watch: bool,
    ) -> BoxFuture<'_, Result<Option<VersionedData>, CoordError>>;

    /// Replaces the data of `path` if its version is still `expected`; returns the
    /// new version. `BadVersion` if another write came first.
    fn set(
        &self,
        path: &str,
        data: Vec<u8>,
        expected: Version,
    ) -> BoxFuture<'_, Result<Version, CoordError>>;

    /// Deletes `path` if its version is `expected` (any version with `None`).
    fn delete(
        &self,
        path: &str,
        expected: Option<Version>,
    ) -> BoxFuture<'_, Result<(), CoordError>>;

    /// The names of the children of `path`, sorted. Sets a watch on the list when
    /// `watch` is set.
    fn children(&self, path: &str, watch: bool) -> BoxFuture<'_, Result<Vec<String>, CoordError>>;

    /// Notifications of watched changes. A receiver that lags loses notifications
    /// (`RecvError::Lagged`) and should then read everything again. When the
    /// session connects again (same or new session), every watch still pending fires
    /// once, since the connection may have lost it.
    fn changes(&self) -> broadcast::Receiver<Changed>;

    /// The session's state, as it changes. A receiver may miss states that did not
    /// last (`Expired` just before the next `Connected`): a new `generation` is what
    /// says the session was replaced.
    fn session(&self) -> watch::Receiver<SessionState>;

    /// Ends the session now, so its ephemeral nodes go at once rather than a
    /// session timeout later (a node that shuts down). Later requests fail.
    fn close(&self) -> BoxFuture<'_, ()>;
}

/// Checks that `path` is absolute with no empty segment and no trailing `/`, as
/// ZooKeeper requires; the error is `CoordError::Other`.
pub(crate) fn check_path(path: &str) -> Result<(), CoordError> {
    let valid = path == "/"
        || path
            .strip_prefix('/')
            .is_some_and(|rest| rest.split('/').all(|segment| !segment.is_empty()));
    if valid {
        Ok(())
    } else {
        Err(CoordError::Other(format!("invalid path {path:?}")))
    }
}
