//! [`Coordination`] over a real ZooKeeper ensemble, with the `zookeeper-async`
//! client.
//!
//! One client per [`ZkCoordination`]; every path is prefixed with the chroot (created
//! at connect when missing) and stripped from notifications.
//!
//! How the client behaves, and what this module adds:
//! - The client reconnects by itself after a lost connection (every
//!   [`RECONNECT_INTERVAL`] while no server accepts TCP) and resumes the same
//!   session if the server still has it: `Disconnected`, then `Connected` with the
//!   same generation.
//! - When the server answers that the session expired, the client starts a new
//!   session on the next connection by itself: `Expired`, then `Connected` with the
//!   next generation. A server that restarted without its data refuses the old
//!   session until the client has been away longer than the session timeout; only
//!   then does it answer "expired".
//! - The client does not restore watches on a new connection (ZooKeeper drops a
//!   connection's watches with it). So at every `Connected` after the first, each
//!   watch pending at the time fires once here, and the reader sets it again.
//! - The client queues requests while it reconnects and never times them out; here
//!   a request fails at once with `NotConnected` when the session is not connected,
//!   and after the session timeout otherwise (its outcome is then unknown).

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::{broadcast, watch};
use tokio::time::{Instant, timeout, timeout_at};
use tracing::{error, info, warn};
use zookeeper_async::{Acl, WatchedEvent, WatchedEventType, ZkError, ZkResult, ZkState, ZooKeeper};

use super::coord::{
    Changed, CoordError, Coordination, CreateMode, SessionState, Version, check_path,
};

/// How long the client waits before trying again when no server accepts a TCP
/// connection. Short, because a restarted server should be used as soon as it
/// listens; one attempt per interval costs little.
pub const RECONNECT_INTERVAL: Duration = Duration::from_millis(250);
/// The shortest session timeout accepted. The client pings every two thirds of the
/// timeout and counts its read timeout in whole seconds, which must not round to 0.
pub const SESSION_TIMEOUT_MIN: Duration = Duration::from_secs(2);
/// How many notifications the channel holds before a slow receiver lags.
const CHANGES_CAPACITY: usize = 1024;
/// How long a dropped client may take to close its session.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How many times `get` with a watch reads again when the node appears or vanishes
/// between its two requests.
const GET_ATTEMPTS_MAX: u32 = 3;

/// A session with a ZooKeeper ensemble, under a chroot. Dropping it closes the
/// session (its ephemeral nodes vanish at once) when a tokio runtime is at hand.
pub struct ZkCoordination {
    /// The client; shared with the task that closes it on drop.
    client: Arc<ZooKeeper>,
    /// What the client's callbacks update: session state, watches, notifications.
    shared: Arc<Shared>,
    /// The longest a request may take: the session timeout.
    request_timeout: Duration,
}

impl std::fmt::Debug for ZkCoordination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZkCoordination")
            .field("chroot", &self.shared.chroot)
            .field("state", &*self.shared.state.borrow())
            .finish_non_exhaustive()
    }
}

/// Which kind of watch is pending on a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum WatchKind {
    Data,
    Children,
}

/// The state the client's callbacks (run on its I/O and event tasks) share with the
/// requests.
struct Shared {
    /// The chroot, `""` for none.
    chroot: String,
    changes: broadcast::Sender<Changed>,
    state: watch::Sender<SessionState>,
    tracker: Mutex<Tracker>,
}

/// The session's history and the watches set on it.
#[derive(Default)]
struct Tracker {
    /// The generation of the current or last session; 0 before the first.
    generation: u64,
    /// Watches set and not fired yet, by relative path.
    pending: BTreeSet<(String, WatchKind)>,
}

impl ZkCoordination {
    /// Connects to `hosts` (`"host:port,host:port"`), creates `chroot` (`"/mom"`, or
    /// `""` or `"/"` for none) when it is missing, and returns once the session is
    /// established. Should the server lose its data later, `ensure_path` creates the
    /// chroot again. Fails with `NotConnected` if that takes longer than
    /// `session_timeout`, and with `Other` on a bad argument.
    ///
    /// `session_timeout` is asked of the server, which bounds it by its
    /// `minSessionTimeout` and `maxSessionTimeout`; it is also the bound of every
    /// request. At least [`SESSION_TIMEOUT_MIN`].
    pub async fn connect(
        hosts: &str,
        chroot: &str,
        session_timeout: Duration,
    ) -> Result<Arc<ZkCoordination>, CoordError> {
        let chroot = match chroot {
            "" | "/" => "",
            chroot => {
                check_path(chroot)?;
                chroot
            }
        };
        if session_timeout < SESSION_TIMEOUT_MIN {
            return Err(CoordError::Other(format!(
                "session timeout {session_timeout:?} is below {SESSION_TIMEOUT_MIN:?}"
            )));
        }
        if hosts.contains('/') {
            return Err(CoordError::Other(format!(
                "hosts {hosts:?} contain a chroot; give it apart"
            )));
        }
        let deadline = Instant::now() + session_timeout;
        let shared = Arc::new(Shared::new(chroot));
        let events = Arc::clone(&shared);
        let connecting = ZooKeeper::connect_with_retry_time(
            hosts,
            session_timeout,
            move |event: WatchedEvent| events.on_event(event),
            RECONNECT_INTERVAL,
        );
        // The client keeps trying until a server accepts TCP: bound it here.
        let client = match timeout_at(deadline, connecting).await {
            Ok(Ok(client)) => client,
            Ok(Err(error)) => {
                return Err(CoordError::Other(format!("hosts {hosts:?}: {error}")));
            }
            Err(_) => {
                warn!(hosts, "no ZooKeeper server accepted a connection in time");
                return Err(CoordError::NotConnected);
            }
        };
        let states = Arc::clone(&shared);
        client.add_listener(move |state| states.on_state(state));
        let coordination = ZkCoordination {
            client: Arc::new(client),
            shared,
            request_timeout: session_timeout,
        };
        coordination.establish(deadline).await?;
        info!(hosts, chroot, "connected to ZooKeeper");
        Ok(Arc::new(coordination))
    }

    /// Waits for the first session, then creates the chroot.
    async fn establish(&self, deadline: Instant) -> Result<(), CoordError> {
        // A request is answered only once the session exists; the state listener may
        // have missed the first `Connected`, which was sent before it was added.
        match timeout_at(deadline, self.client.exists("/", false)).await {
            Ok(Ok(_)) => self.shared.connected(),
            Ok(Err(error)) => return Err(map_error(error, "/")),
            Err(_) => {
                warn!("ZooKeeper did not establish a session in time");
                return Err(CoordError::NotConnected);
            }
        }
        match timeout_at(deadline, self.ensure("/")).await {
            Ok(result) => result,
            Err(_) => Err(CoordError::NotConnected),
        }
    }

    /// The server's path for `path`, relative to the chroot.
    fn full_path(&self, path: &str) -> Result<String, CoordError> {
        check_path(path)?;
        let chroot = &self.shared.chroot;
        Ok(match (chroot.is_empty(), path) {
            (true, _) => path.to_owned(),
            (false, "/") => chroot.clone(),
            (false, _) => format!("{chroot}{path}"),
        })
    }

    /// Runs `request` if the session is connected, within the request timeout.
    async fn call<T>(
        &self,
        path: &str,
        request: impl Future<Output = ZkResult<T>>,
    ) -> Result<T, CoordError> {
        if !self.shared.state.borrow().is_connected() {
            return Err(CoordError::NotConnected);
        }
        match timeout(self.request_timeout, request).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(map_error(error, path)),
            Err(_) => Err(CoordError::NotConnected),
        }
    }

    async fn create_node(
        &self,
        path: &str,
        data: Vec<u8>,
        mode: CreateMode,
    ) -> Result<(), CoordError> {
        let full = self.full_path(path)?;
        let mode = match mode {
            CreateMode::Persistent => zookeeper_async::CreateMode::Persistent,
            CreateMode::Ephemeral => zookeeper_async::CreateMode::Ephemeral,
        };
        let acl = Acl::open_unsafe().clone();
        self.call(path, self.client.create(&full, data, acl, mode))
            .await
            .map(drop)
    }

    async fn get_node(
        &self,
        path: &str,
        watch: bool,
    ) -> Result<Option<(Vec<u8>, Version)>, CoordError> {
        let full = self.full_path(path)?;
        if !watch {
            return match self.call(path, self.client.get_data(&full, false)).await {
                Ok((data, stat)) => Ok(Some((data, stat.version))),
                Err(CoordError::NoNode(_)) => Ok(None),
                Err(error) => Err(error),
            };
        }
        self.shared.watching(path, WatchKind::Data);
        for _ in 0..GET_ATTEMPTS_MAX {
            // A read of a missing node sets no watch; `exists` sets one that fires
            // when the node is created.
            match self.call(path, self.client.get_data(&full, true)).await {
                Ok((data, stat)) => return Ok(Some((data, stat.version))),
                Err(CoordError::NoNode(_)) => {}
                Err(error) => return Err(error),
            }
            if self
                .call(path, self.client.exists(&full, true))
                .await?
                .is_none()
            {
                return Ok(None);
            }
        }
        // The node came and went between the reads; the watch `exists` set has
        // fired or will, so the caller reads again.
        Ok(None)
    }

    /// Creates the missing nodes of `path`, the chroot's included: a server that
    /// lost its data gets the chroot back with the first `ensure_path`.
    async fn ensure(&self, path: &str) -> Result<(), CoordError> {
        let full = self.full_path(path)?;
        for prefix in prefixes(&full) {
            let create = self.client.create(
                prefix,
                Vec::new(),
                Acl::open_unsafe().clone(),
                zookeeper_async::CreateMode::Persistent,
            );
            match self.call(path, create).await {
                Ok(_) | Err(CoordError::NodeExists(_)) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    async fn set_node(
        &self,
        path: &str,
        data: Vec<u8>,
        expected: Version,
    ) -> Result<Version, CoordError> {
        let full = self.full_path(path)?;
        let stat = self
            .call(path, self.client.set_data(&full, data, Some(expected)))
            .await?;
        Ok(stat.version)
    }

    async fn delete_node(&self, path: &str, expected: Option<Version>) -> Result<(), CoordError> {
        let full = self.full_path(path)?;
        self.call(path, self.client.delete(&full, expected)).await
    }

    async fn list_children(&self, path: &str, watch: bool) -> Result<Vec<String>, CoordError> {
        let full = self.full_path(path)?;
        if watch {
            self.shared.watching(path, WatchKind::Children);
        }
        let mut names = self
            .call(path, self.client.get_children(&full, watch))
            .await?;
        names.sort_unstable();
        Ok(names)
    }
}

impl Drop for ZkCoordination {
    fn drop(&mut self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let client = Arc::clone(&self.client);
        runtime.spawn(async move {
            // Ends the client's tasks and the session; its ephemeral nodes go now
            // rather than after the session timeout.
            let _ = timeout(CLOSE_TIMEOUT, client.close()).await;
        });
    }
}

impl Coordination for ZkCoordination {
    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let _ = timeout(CLOSE_TIMEOUT, self.client.close()).await;
        })
    }

    fn create(
        &self,
        path: &str,
        data: Vec<u8>,
        mode: CreateMode,
    ) -> BoxFuture<'_, Result<(), CoordError>> {
        let path = path.to_owned();
        Box::pin(async move { self.create_node(&path, data, mode).await })
    }

    fn ensure_path(&self, path: &str) -> BoxFuture<'_, Result<(), CoordError>> {
        let path = path.to_owned();
        Box::pin(async move { self.ensure(&path).await })
    }

    fn get(
        &self,
        path: &str,
        watch: bool,
    ) -> BoxFuture<'_, Result<Option<(Vec<u8>, Version)>, CoordError>> {
        let path = path.to_owned();
        Box::pin(async move { self.get_node(&path, watch).await })
    }

    fn set(
        &self,
        path: &str,
        data: Vec<u8>,
        expected: Version,
    ) -> BoxFuture<'_, Result<Version, CoordError>> {
        let path = path.to_owned();
        Box::pin(async move { self.set_node(&path, data, expected).await })
    }

    fn delete(
        &self,
        path: &str,
        expected: Option<Version>,
    ) -> BoxFuture<'_, Result<(), CoordError>> {
        let path = path.to_owned();
        Box::pin(async move { self.delete_node(&path, expected).await })
    }

    fn children(&self, path: &str, watch: bool) -> BoxFuture<'_, Result<Vec<String>, CoordError>> {
        let path = path.to_owned();
        Box::pin(async move { self.list_children(&path, watch).await })
    }

    fn changes(&self) -> broadcast::Receiver<Changed> {
        self.shared.changes.subscribe()
    }

    fn session(&self) -> watch::Receiver<SessionState> {
        self.shared.state.subscribe()
    }
}

impl Shared {
    fn new(chroot: &str) -> Shared {
        Shared {
            chroot: chroot.to_owned(),
            changes: broadcast::channel(CHANGES_CAPACITY).0,
            state: watch::channel(SessionState::Disconnected).0,
            tracker: Mutex::new(Tracker::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Tracker> {
        self.tracker
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records a watch about to be set, so that it fires after a reconnection.
    fn watching(&self, path: &str, kind: WatchKind) {
        self.lock().pending.insert((path.to_owned(), kind));
    }

    /// The client's connection state changed (called on its I/O task).
    #[allow(deprecated)] // `NotConnected` is what the client reports for an expiry.
    fn on_state(&self, state: ZkState) {
        match state {
            ZkState::Connected | ZkState::ConnectedReadOnly => self.connected(),
            ZkState::Connecting => {
                let _tracker = self.lock();
                if self.state.borrow().is_connected() {
                    warn!("connection to ZooKeeper lost; reconnecting");
                    self.state.send_replace(SessionState::Disconnected);
                }
            }
            ZkState::NotConnected => {
                let _tracker = self.lock();
                warn!("ZooKeeper session expired; starting a new one");
                self.state.send_replace(SessionState::Expired);
            }
            ZkState::Closed | ZkState::AuthFailed => {
                let _tracker = self.lock();
                if state == ZkState::AuthFailed {
                    error!("ZooKeeper authentication failed");
                }
                self.state.send_replace(SessionState::Disconnected);
            }
            ZkState::Associating => {}
        }
    }

    /// A session is established: the first, the same one again, or a new one after
    /// an expiry. Fires every pending watch after a reconnection.
    fn connected(&self) {
        let mut tracker = self.lock();
        let previous = *self.state.borrow();
        let (generation, reconnected) = match previous {
            SessionState::Connected { .. } => return,
            SessionState::Disconnected if tracker.generation == 0 => (1, false),
            SessionState::Disconnected => (tracker.generation, true),
            SessionState::Expired => (tracker.generation + 1, true),
        };
        tracker.generation = generation;
        let pending = std::mem::take(&mut tracker.pending);
        self.state
            .send_replace(SessionState::Connected { generation });
        drop(tracker);
        if reconnected {
            info!(
                generation,
                new_session = previous == SessionState::Expired,
                "ZooKeeper session connected again"
            );
        }
        let paths: BTreeSet<String> = pending.into_iter().map(|(path, _)| path).collect();
        for path in paths {
            let _ = self.changes.send(Changed { path });
        }
    }

    /// A watch fired (called on the client's event task).
    fn on_event(&self, event: WatchedEvent) {
        let Some(full) = event.path else {
            return;
        };
        let path = match full.strip_prefix(self.chroot.as_str()) {
            Some("") => "/".to_owned(),
            Some(rest) if rest.starts_with('/') => rest.to_owned(),
            _ => {
                warn!(path = full, "notification outside the chroot ignored");
                return;
            }
        };
        let kinds: &[WatchKind] = match event.event_type {
            WatchedEventType::NodeChildrenChanged => &[WatchKind::Children],
            WatchedEventType::NodeCreated | WatchedEventType::NodeDataChanged => &[WatchKind::Data],
            WatchedEventType::NodeDeleted => &[WatchKind::Data, WatchKind::Children],
            _ => return,
        };
        {
            let mut tracker = self.lock();
            for kind in kinds {
                tracker.pending.remove(&(path.clone(), *kind));
            }
        }
        let _ = self.changes.send(Changed { path });
    }
}

/// `/a/b/c` -> `/a`, `/a/b`, `/a/b/c`; nothing for `/` or `""`.
fn prefixes(path: &str) -> impl Iterator<Item = &str> {
    path.char_indices()
        .skip(1)
        .filter(|&(_, c)| c == '/')
        .map(|(at, _)| at)
        .chain((path.len() > 1).then_some(path.len()))
        .filter_map(move |end| path.get(..end))
}

/// Maps the client's error for a request on `path` (relative to the chroot).
fn map_error(error: ZkError, path: &str) -> CoordError {
    match error {
        ZkError::NoNode => CoordError::NoNode(path.to_owned()),
        ZkError::NodeExists => CoordError::NodeExists(path.to_owned()),
        ZkError::BadVersion => CoordError::BadVersion(path.to_owned()),
        ZkError::NotEmpty => CoordError::NotEmpty(path.to_owned()),
        ZkError::ConnectionLoss
        | ZkError::SessionExpired
        | ZkError::SessionMoved
        | ZkError::OperationTimeout => CoordError::NotConnected,
        other => CoordError::Other(format!("{other:?} on {path}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_of_a_path() {
        assert_eq!(
            prefixes("/a/b/c").collect::<Vec<_>>(),
            ["/a", "/a/b", "/a/b/c"]
        );
        assert_eq!(prefixes("/mom").collect::<Vec<_>>(), ["/mom"]);
        assert!(prefixes("/").next().is_none());
        assert!(prefixes("").next().is_none());
    }

    #[test]
    fn errors_keep_the_relative_path() {
        assert_eq!(
            map_error(ZkError::NoNode, "/a"),
            CoordError::NoNode("/a".into())
        );
        assert_eq!(
            map_error(ZkError::ConnectionLoss, "/a"),
            CoordError::NotConnected
        );
        assert!(matches!(
            map_error(ZkError::NoChildrenForEphemerals, "/a/b"),
            CoordError::Other(_)
        ));
    }

    #[tokio::test]
    async fn connect_fails_in_time_without_a_server() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let started = std::time::Instant::now();
        let result =
            ZkCoordination::connect(&format!("127.0.0.1:{port}"), "/mom", SESSION_TIMEOUT_MIN)
                .await;
        assert_eq!(result.err(), Some(CoordError::NotConnected));
        assert!(started.elapsed() < SESSION_TIMEOUT_MIN * 2);
    }

    #[tokio::test]
    async fn connect_refuses_bad_arguments() {
        let timeout = Duration::from_secs(6);
        for (hosts, chroot) in [("127.0.0.1:1/x", "/mom"), ("127.0.0.1:1", "mom")] {
            let result = ZkCoordination::connect(hosts, chroot, timeout).await;
            assert!(
                matches!(result, Err(CoordError::Other(_))),
                "{hosts} {chroot}"
            );
        }
    }
}
