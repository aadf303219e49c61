//! An in-memory coordination tree with ZooKeeper's semantics, for unit tests of the
//! layers above the [`Coordination`] trait.
//!
//! A [`MemoryTree`] is the shared state (the "ensemble"); each
//! [`MemoryTree::session`] opens a [`MemoryCoordination`], a client with a session of
//! its own. Tests drive the session's life by hand: [`MemoryCoordination::disconnect`],
//! [`MemoryCoordination::reconnect`] and [`MemoryCoordination::expire`].
//!
//! What it models, as ZooKeeper does: versions start at 0 and grow by one per write;
//! a create needs the parent and fails on an existing node; a delete fails on a node
//! with children; ephemeral nodes belong to a session and vanish with it; watches are
//! one-shot and notify only the session that set them. Like [`super::zk`], it fires
//! every pending watch of a session once when that session reconnects or is replaced
//! by a new one, since a real client may have lost them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use futures_util::future::BoxFuture;
use tokio::sync::{broadcast, watch};

use super::coord::{
    Changed, CoordError, Coordination, CreateMode, SessionState, Version, check_path,
};

/// How many notifications a session's channel holds before a slow receiver lags.
const CHANGES_CAPACITY: usize = 1024;

/// Identifies one session of the tree (a new one after every expiry).
type SessionId = u64;

/// The shared tree that every [`MemoryCoordination`] of a test talks to.
#[derive(Clone, Debug, Default)]
pub struct MemoryTree {
    /// The nodes, the watches and the sessions, behind one lock: every request is
    /// atomic, as it is on a ZooKeeper server.
    inner: Arc<Mutex<Tree>>,
}

/// One node of the tree.
#[derive(Debug)]
struct Node {
    data: Vec<u8>,
    version: Version,
    /// The session that owns an ephemeral node; `None` for a persistent one.
    owner: Option<SessionId>,
    children: BTreeSet<String>,
}

/// What a session looks like to the tree.
#[derive(Debug)]
struct SessionEntry {
    /// The session's notification channel (the client holds another sender).
    changes: broadcast::Sender<Changed>,
    /// A disconnected session keeps its triggered watches until it reconnects.
    connected: bool,
}

/// Which kind of watch: on a node's data (and existence) or on its children.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum WatchKind {
    Data,
    Children,
}

#[derive(Debug)]
struct Tree {
    nodes: BTreeMap<String, Node>,
    /// Pending one-shot watches: (path, kind) -> the sessions that set them.
    watches: BTreeMap<(String, WatchKind), BTreeSet<SessionId>>,
    sessions: HashMap<SessionId, SessionEntry>,
    next_session: SessionId,
}

impl Default for Tree {
    fn default() -> Self {
        let root = Node {
            data: Vec::new(),
            version: 0,
            owner: None,
            children: BTreeSet::new(),
        };
        Tree {
            nodes: BTreeMap::from([("/".to_owned(), root)]),
            watches: BTreeMap::new(),
            sessions: HashMap::new(),
            next_session: 1,
        }
    }
}

impl MemoryTree {
    /// Opens a client with a new session, connected at generation 1.
    pub fn session(&self) -> MemoryCoordination {
        let (changes, _) = broadcast::channel(CHANGES_CAPACITY);
        let (state, _) = watch::channel(SessionState::Connected { generation: 1 });
        let id = self.lock().open_session(changes.clone());
        MemoryCoordination {
            tree: self.clone(),
            session: Mutex::new(ClientSession { id, generation: 1 }),
            changes,
            state,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Tree> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The session a [`MemoryCoordination`] holds now.
#[derive(Debug)]
struct ClientSession {
    id: SessionId,
    /// Counts this client's sessions from 1.
    generation: u64,
}

/// A client of a [`MemoryTree`] with its own session. Dropping it closes the session
/// (its ephemeral nodes vanish), as closing a ZooKeeper client does.
#[derive(Debug)]
pub struct MemoryCoordination {
    /// The shared tree.
    tree: MemoryTree,
    /// The current session; replaced by a new one after an expiry.
    session: Mutex<ClientSession>,
    /// This client's notifications, kept across its sessions.
    changes: broadcast::Sender<Changed>,
    /// This client's session state.
    state: watch::Sender<SessionState>,
}

impl MemoryCoordination {
    /// A new, empty tree (only the root `/`), shared by the sessions opened on it.
    pub fn new_tree() -> MemoryTree {
        MemoryTree::default()
    }

    /// Loses the connection: the state becomes `Disconnected` and requests fail with
    /// `NotConnected`. The session lives on (its ephemeral nodes stay); watches that
    /// trigger meanwhile fire at [`MemoryCoordination::reconnect`].
    pub fn disconnect(&self) {
        if !self.state.borrow().is_connected() {
            return;
        }
        let id = self.lock_session().id;
        if let Some(entry) = self.tree.lock().sessions.get_mut(&id) {
            entry.connected = false;
        }
        self.state.send_replace(SessionState::Disconnected);
    }

    /// Restores the connection: `Connected` with the same generation, or with the
    /// next one if the session expired meanwhile. Either way every watch the session
    /// had pending fires once (a real client may have lost them).
    pub fn reconnect(&self) {
        let state = *self.state.borrow();
        match state {
            SessionState::Connected { .. } => {}
            SessionState::Disconnected => {
                let session = self.lock_session();
                let nudges = self.tree.lock().reconnect(session.id);
                self.state.send_replace(SessionState::Connected {
                    generation: session.generation,
                });
                drop(session);
                self.nudge(nudges);
            }
            SessionState::Expired => self.start_new_session(Vec::new()),
        }
    }

    /// Ends the session as the server does when it expires: its ephemeral nodes
    /// vanish (firing the watches of other sessions on them) and the state becomes
    /// `Expired`. A connected client then starts a new session at once (`Connected`
    /// with the next generation) and its pending watches fire once; a disconnected
    /// one stays `Expired` until [`MemoryCoordination::reconnect`]. A receiver of
    /// [`Coordination::session`] may see only the last state: the new generation is
    /// what tells it the session changed.
    pub fn expire(&self) {
        let state = *self.state.borrow();
        if state == SessionState::Expired {
            return;
        }
        let id = self.lock_session().id;
        let nudges = self.tree.lock().close_session(id);
        self.state.send_replace(SessionState::Expired);
        if state.is_connected() {
            self.start_new_session(nudges);
        }
    }

    /// Opens the next session for this client, connected, and fires `nudges`.
    fn start_new_session(&self, nudges: Vec<String>) {
        let mut session = self.lock_session();
        session.id = self.tree.lock().open_session(self.changes.clone());
        session.generation += 1;
        self.state.send_replace(SessionState::Connected {
            generation: session.generation,
        });
        drop(session);
        self.nudge(nudges);
    }

    fn nudge(&self, paths: Vec<String>) {
        for path in paths {
            let _ = self.changes.send(Changed { path });
        }
    }

    fn lock_session(&self) -> MutexGuard<'_, ClientSession> {
        self.session
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `op` on the tree with this client's session, or fails with `NotConnected`.
    fn with_tree<T: Send + 'static>(
        &self,
        op: impl FnOnce(&mut Tree, SessionId) -> Result<T, CoordError>,
    ) -> BoxFuture<'static, Result<T, CoordError>> {
        let result = if self.state.borrow().is_connected() {
            let id = self.lock_session().id;
            op(&mut self.tree.lock(), id)
        } else {
            Err(CoordError::NotConnected)
        };
        Box::pin(std::future::ready(result))
    }
}

impl Drop for MemoryCoordination {
    fn drop(&mut self) {
        let id = self.lock_session().id;
        self.tree.lock().close_session(id);
    }
}

impl Coordination for MemoryCoordination {
    fn close(&self) -> BoxFuture<'_, ()> {
        let id = self.lock_session().id;
        self.tree.lock().close_session(id);
        Box::pin(async {})
    }

    fn create(
        &self,
        path: &str,
        data: Vec<u8>,
        mode: CreateMode,
    ) -> BoxFuture<'_, Result<(), CoordError>> {
        self.with_tree(|tree, id| {
            let owner = match mode {
                CreateMode::Persistent => None,
                CreateMode::Ephemeral => Some(id),
            };
            tree.create(path, data, owner)
        })
    }

    fn ensure_path(&self, path: &str) -> BoxFuture<'_, Result<(), CoordError>> {
        self.with_tree(|tree, _| tree.ensure_path(path))
    }

    fn get(
        &self,
        path: &str,
        watch: bool,
    ) -> BoxFuture<'_, Result<Option<(Vec<u8>, Version)>, CoordError>> {
        self.with_tree(|tree, id| {
            check_path(path)?;
            if watch {
                tree.add_watch(path, WatchKind::Data, id);
            }
            Ok(tree
                .nodes
                .get(path)
                .map(|node| (node.data.clone(), node.version)))
        })
    }

    fn set(
        &self,
        path: &str,
        data: Vec<u8>,
        expected: Version,
    ) -> BoxFuture<'_, Result<Version, CoordError>> {
        self.with_tree(|tree, _| tree.set(path, data, expected))
    }

    fn delete(
        &self,
        path: &str,
        expected: Option<Version>,
    ) -> BoxFuture<'_, Result<(), CoordError>> {
        self.with_tree(|tree, _| tree.delete(path, expected))
    }

    fn children(&self, path: &str, watch: bool) -> BoxFuture<'_, Result<Vec<String>, CoordError>> {
        self.with_tree(|tree, id| {
            check_path(path)?;
            let node = tree
                .nodes
                .get(path)
                .ok_or_else(|| CoordError::NoNode(path.to_owned()))?;
            let names = node.children.iter().cloned().collect();
            if watch {
                tree.add_watch(path, WatchKind::Children, id);
            }
            Ok(names)
        })
    }

    fn changes(&self) -> broadcast::Receiver<Changed> {
        self.changes.subscribe()
    }

    fn session(&self) -> watch::Receiver<SessionState> {
        self.state.subscribe()
    }
}

impl Tree {
    fn open_session(&mut self, changes: broadcast::Sender<Changed>) -> SessionId {
        let id = self.next_session;
        self.next_session += 1;
        let entry = SessionEntry {
            changes,
            connected: true,
        };
        self.sessions.insert(id, entry);
        id
    }

    /// Ends session `id`: drops its watches and deletes its ephemeral nodes (which
    /// fires the watches of other sessions). Returns the paths it was watching.
    fn close_session(&mut self, id: SessionId) -> Vec<String> {
        let watched = self.take_watches(id);
        self.sessions.remove(&id);
        let owned: Vec<String> = self
            .nodes
            .iter()
            .filter(|(_, node)| node.owner == Some(id))
            .map(|(path, _)| path.clone())
            .collect();
        for path in owned {
            // Ephemeral nodes have no children, so the delete cannot fail.
            let _ = self.delete(&path, None);
        }
        watched
    }

    /// Marks session `id` connected again; returns the paths it was watching, whose
    /// watches are now spent.
    fn reconnect(&mut self, id: SessionId) -> Vec<String> {
        if let Some(entry) = self.sessions.get_mut(&id) {
            entry.connected = true;
        }
        self.take_watches(id)
    }

    /// Removes every watch of session `id`; returns their paths, each once.
    fn take_watches(&mut self, id: SessionId) -> Vec<String> {
        let mut paths = BTreeSet::new();
        self.watches.retain(|(path, _), sessions| {
            if sessions.remove(&id) {
                paths.insert(path.clone());
            }
            !sessions.is_empty()
        });
        paths.into_iter().collect()
    }

    fn add_watch(&mut self, path: &str, kind: WatchKind, id: SessionId) {
        self.watches
            .entry((path.to_owned(), kind))
            .or_default()
            .insert(id);
    }

    /// Fires the watches of `kind` on `path`: each connected session that set one is
    /// notified once and the watch is spent; a disconnected session keeps it.
    fn trigger(&mut self, path: &str, kind: WatchKind) {
        let key = (path.to_owned(), kind);
        let Some(sessions) = self.watches.remove(&key) else {
            return;
        };
        let mut kept = BTreeSet::new();
        for id in sessions {
            match self.sessions.get(&id) {
                Some(entry) if entry.connected => {
                    let _ = entry.changes.send(Changed {
                        path: path.to_owned(),
                    });
                }
                Some(_) => {
                    kept.insert(id);
                }
                None => {}
            }
        }
        if !kept.is_empty() {
            self.watches.insert(key, kept);
        }
    }

    fn create(
        &mut self,
        path: &str,
        data: Vec<u8>,
        owner: Option<SessionId>,
    ) -> Result<(), CoordError> {
        check_path(path)?;
        let (parent, name) = split(path).ok_or_else(|| CoordError::NodeExists(path.to_owned()))?;
        let parent_node = self
            .nodes
            .get_mut(parent)
            .ok_or_else(|| CoordError::NoNode(path.to_owned()))?;
        if parent_node.owner.is_some() {
            return Err(CoordError::Other(format!(
                "cannot create {path}: ephemeral nodes have no children"
            )));
        }
        if !parent_node.children.insert(name.to_owned()) {
            return Err(CoordError::NodeExists(path.to_owned()));
        }
        let node = Node {
            data,
            version: 0,
            owner,
            children: BTreeSet::new(),
        };
        self.nodes.insert(path.to_owned(), node);
        self.trigger(path, WatchKind::Data);
        self.trigger(parent, WatchKind::Children);
        Ok(())
    }

    fn ensure_path(&mut self, path: &str) -> Result<(), CoordError> {
        check_path(path)?;
        let mut end = 0;
        while end < path.len() {
            end = path[end + 1..]
                .find('/')
                .map_or(path.len(), |at| end + 1 + at);
            match self.create(&path[..end], Vec::new(), None) {
                Ok(()) | Err(CoordError::NodeExists(_)) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    fn set(&mut self, path: &str, data: Vec<u8>, expected: Version) -> Result<Version, CoordError> {
        check_path(path)?;
        let node = self
            .nodes
            .get_mut(path)
            .ok_or_else(|| CoordError::NoNode(path.to_owned()))?;
        if node.version != expected {
            return Err(CoordError::BadVersion(path.to_owned()));
        }
        node.data = data;
        node.version = node.version.wrapping_add(1);
        let version = node.version;
        self.trigger(path, WatchKind::Data);
        Ok(version)
    }

    fn delete(&mut self, path: &str, expected: Option<Version>) -> Result<(), CoordError> {
        check_path(path)?;
        let (parent, name) =
            split(path).ok_or_else(|| CoordError::Other("the root cannot be deleted".into()))?;
        let node = self
            .nodes
            .get(path)
            .ok_or_else(|| CoordError::NoNode(path.to_owned()))?;
        if expected.is_some_and(|version| version != node.version) {
            return Err(CoordError::BadVersion(path.to_owned()));
        }
        if !node.children.is_empty() {
            return Err(CoordError::NotEmpty(path.to_owned()));
        }
        self.nodes.remove(path);
        if let Some(parent_node) = self.nodes.get_mut(parent) {
            parent_node.children.remove(name);
        }
        self.trigger(path, WatchKind::Data);
        self.trigger(path, WatchKind::Children);
        self.trigger(parent, WatchKind::Children);
        Ok(())
    }
}

/// `/a/b` -> (`/a`, `b`); `/a` -> (`/`, `a`); `None` for the root.
fn split(path: &str) -> Option<(&str, &str)> {
    let (parent, name) = path.rsplit_once('/')?;
    if name.is_empty() {
        return None;
    }
    Some((if parent.is_empty() { "/" } else { parent }, name))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    async fn next_change(changes: &mut broadcast::Receiver<Changed>) -> Option<String> {
        tokio::time::timeout(Duration::from_millis(100), changes.recv())
            .await
            .ok()
            .and_then(Result::ok)
            .map(|changed| changed.path)
    }

    #[tokio::test]
    async fn conforms() {
        let tree = MemoryCoordination::new_tree();
        let (a, b) = (tree.session(), tree.session());
        crate::cluster::conformance::conformance(&a, &b)
            .await
            .unwrap();
        // Runs again on the same tree: the suite cleans up after itself.
        crate::cluster::conformance::conformance(&b, &a)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn expiry_removes_ephemeral_nodes_and_starts_a_new_session() {
        let tree = MemoryCoordination::new_tree();
        let (a, b) = (tree.session(), tree.session());
        let session = a.session();
        let mut b_changes = b.changes();
        let mut a_changes = a.changes();
        a.create("/member", Vec::new(), CreateMode::Ephemeral)
            .await
            .unwrap();
        a.create("/kept", Vec::new(), CreateMode::Persistent)
            .await
            .unwrap();
        assert!(b.get("/member", true).await.unwrap().is_some());
        assert!(a.get("/kept", true).await.unwrap().is_some());

        a.expire();
        assert_eq!(
            next_change(&mut b_changes).await.as_deref(),
            Some("/member")
        );
        assert_eq!(b.get("/member", false).await.unwrap(), None);
        assert!(b.get("/kept", false).await.unwrap().is_some());
        assert_eq!(*session.borrow(), SessionState::Connected { generation: 2 });
        // The pending watch of the old session fires once for the new one.
        assert_eq!(next_change(&mut a_changes).await.as_deref(), Some("/kept"));
        a.create("/member", Vec::new(), CreateMode::Ephemeral)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_disconnected_session_refuses_requests_and_keeps_its_nodes() {
        let tree = MemoryCoordination::new_tree();
        let (a, b) = (tree.session(), tree.session());
        let mut a_changes = a.changes();
        a.create("/member", Vec::new(), CreateMode::Ephemeral)
            .await
            .unwrap();
        a.create("/watched", Vec::new(), CreateMode::Persistent)
            .await
            .unwrap();
        assert!(a.get("/watched", true).await.unwrap().is_some());

        a.disconnect();
        assert_eq!(*a.session().borrow(), SessionState::Disconnected);
        assert_eq!(a.get("/member", false).await, Err(CoordError::NotConnected));
        assert!(b.get("/member", false).await.unwrap().is_some());
        b.set("/watched", b"x".to_vec(), 0).await.unwrap();
        assert_eq!(next_change(&mut a_changes).await, None);

        a.reconnect();
        assert_eq!(
            *a.session().borrow(),
            SessionState::Connected { generation: 1 }
        );
        assert_eq!(
            next_change(&mut a_changes).await.as_deref(),
            Some("/watched")
        );
        assert!(a.get("/member", false).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn expiry_while_disconnected_shows_at_reconnect() {
        let tree = MemoryCoordination::new_tree();
        let (a, b) = (tree.session(), tree.session());
        a.create("/member", Vec::new(), CreateMode::Ephemeral)
            .await
            .unwrap();
        a.disconnect();
        a.expire();
        assert_eq!(*a.session().borrow(), SessionState::Expired);
        assert_eq!(b.get("/member", false).await.unwrap(), None);
        a.reconnect();
        assert_eq!(
            *a.session().borrow(),
            SessionState::Connected { generation: 2 }
        );
        a.create("/member", Vec::new(), CreateMode::Ephemeral)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn dropping_a_client_closes_its_session() {
        let tree = MemoryCoordination::new_tree();
        let (a, b) = (tree.session(), tree.session());
        a.create("/member", Vec::new(), CreateMode::Ephemeral)
            .await
            .unwrap();
        drop(a);
        assert_eq!(b.get("/member", false).await.unwrap(), None);
    }

    #[tokio::test]
    async fn invalid_paths_are_refused() {
        let tree = MemoryCoordination::new_tree();
        let a = tree.session();
        for path in ["", "relative", "/trailing/", "/double//slash"] {
            let result = a.create(path, Vec::new(), CreateMode::Persistent).await;
            assert!(
                matches!(result, Err(CoordError::Other(_))),
                "{path:?}: {result:?}"
            );
        }
        assert!(matches!(
            a.delete("/", None).await,
            Err(CoordError::Other(_))
        ));
        assert!(matches!(
            a.create("/", Vec::new(), CreateMode::Persistent).await,
            Err(CoordError::NodeExists(_))
        ));
    }
}
