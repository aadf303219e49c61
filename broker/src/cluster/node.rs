//! One node of a cluster: its membership, its view of the cluster's metadata, the
//! controller duties when it is elected, and the role of each partition here
//! (leader, follower, offline) kept in step with the partition states in the
//! coordination service.
//!
//! The node reads the coordination service when a watch fires and every
//! [`FULL_SYNC`] besides, so a lost notification delays a change but never loses
//! it. Decisions are written back only by conditional writes: the controller elects
//! leaders, a leader changes its in-sync set.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::coord::{CoordError, Coordination, CreateMode, SessionState, Version};
use super::forward::Peers;
use super::layout::{
    self, BROKERS, BrokerRegistration, CONTROLLER, ControllerRecord, LogAssignment, LogKind,
    PartitionState,
};
use super::replica::IsrProposal;
use crate::error::{ApiError, ErrorCode};
use crate::message;
use crate::partition::Partition;
use crate::queue::QueueSpec;
use crate::registry::Broker;
use crate::replication::{LeaderConfig, NodeId};
use crate::topic::TopicSpec;

/// How often the node reads the whole cluster state even without a notification.
pub const FULL_SYNC: Duration = Duration::from_secs(2);
/// The node holding the cluster's id.
const CLUSTER_ID: &str = "/cluster_id";
/// The file in the data directory that keeps the id of the cluster the node joined.
const CLUSTER_ID_FILE: &str = "cluster-id";

/// A new random cluster id (32 hex digits).
fn new_cluster_id() -> Result<String, CoordError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| CoordError::Other(format!("no randomness: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// How often a node taking a topic over tries to write a subscription record that
/// keeps changing under it.
const CLAIM_ATTEMPTS: usize = 10;
/// How long a create or delete waits for the cluster to carry it out.
const CREATE_WAIT: Duration = Duration::from_secs(15);
/// How often leaders check their followers' lag.
const TICK: Duration = Duration::from_millis(100);
/// How often a node that cannot register yet says so (it retries every tick).
const REGISTER_WARN_EVERY: Duration = Duration::from_secs(10);
/// How many times a delete lists a node again that gained children while it was
/// being emptied.
const DELETE_RELISTS_MAX: u32 = 16;

/// A node's settings in a cluster.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This node's id, unique in the cluster.
    pub node_id: NodeId,
    /// Where other nodes and clients reach its REST API.
    pub rest_addr: String,
    /// Where other nodes reach its gRPC services.
    pub grpc_addr: String,
    /// In-sync rules for partitions this node leads.
    pub leader: LeaderConfig,
    /// The coordination session's timeout: a node cut off from the coordination
    /// service for longer stops leading.
    pub session_timeout: Duration,
    /// As controller, how long a log's preferred leader must have been alive and in
    /// every partition's in-sync set before it leads again; `None`: never.
    pub leader_rebalance_delay: Option<Duration>,
}

/// One topic or queue as the cluster describes it.
#[derive(Clone, Debug)]
pub struct LogMeta {
    /// Its settings and replicas.
    pub assignment: LogAssignment,
    /// Each partition's state and its version, `None` until the controller wrote it.
    pub states: Vec<Option<(PartitionState, Version)>>,
}

/// What this node knows of the cluster.
#[derive(Clone, Debug, Default)]
pub struct Metadata {
    /// Live members.
    pub brokers: BTreeMap<NodeId, BrokerRegistration>,
    /// The elected controller.
    pub controller: Option<NodeId>,
    /// Every topic and queue.
    pub logs: BTreeMap<(LogKind, String), LogMeta>,
    /// Topics and queues marked for deletion whose delete has not finished (the node
    /// that took it may have stopped midway); the controller finishes them.
    pub deleting: Vec<(LogKind, String)>,
}

impl Metadata {
    /// The state of one partition.
    pub fn partition(&self, kind: LogKind, name: &str, p: u32) -> Option<&PartitionState> {
        self.logs
            .get(&(kind, name.to_owned()))?
            .states
            .get(p as usize)?
            .as_ref()
            .map(|(state, _)| state)
    }

    /// The replicas of one partition.
    pub fn replicas(&self, kind: LogKind, name: &str, p: u32) -> Option<&[NodeId]> {
        self.logs
            .get(&(kind, name.to_owned()))?
            .assignment
            .replicas
            .get(p as usize)
            .map(Vec::as_slice)
    }
}

/// A partition of a topic or queue.
pub type PartitionKey = (LogKind, String, u32);

/// A cluster member.
pub struct ClusterNode {
    config: NodeConfig,
    coord: Arc<dyn Coordination>,
    broker: Arc<Broker>,
    /// gRPC channels to the other nodes.
    pub peers: Peers,
    meta: RwLock<Metadata>,
    /// Bumped after every read of the cluster state.
    synced: watch::Sender<u64>,
    fetchers: Mutex<HashMap<PartitionKey, JoinHandle<()>>>,
    controller: AtomicBool,
    /// Set while this node may lead partitions: its session is live.
    may_lead: AtomicBool,
    /// Set once the node registered and read the cluster state: before that it
    /// knows neither the topics nor who leads them, and answers no request.
    joined: AtomicBool,
    /// Asks the run loop for a read of the cluster state.
    nudges: tokio::sync::Notify,
    /// Shares users and grants with the cluster, at every read of its state.
    auth_sync: super::auth_sync::AuthSync,
    /// Why the node refuses to act on the cluster state, if it does.
    lost_cluster: Mutex<Option<String>>,
    /// As controller: since when each log led by another node has had its
    /// preferred leader ready to lead again.
    preferred_ready: Mutex<HashMap<(LogKind, String), Instant>>,
}

impl std::fmt::Debug for ClusterNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterNode")
            .field("node_id", &self.config.node_id)
            .finish_non_exhaustive()
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The wall clock in ms since the epoch, as the replication state machines take it.
pub(crate) fn now_ms() -> u64 {
    message::now_ms().max(0) as u64
}

impl ClusterNode {
    /// A node of the cluster behind `coord`, serving `broker`'s topics and queues.
    pub fn new(config: NodeConfig, coord: Arc<dyn Coordination>, broker: Arc<Broker>) -> Self {
        ClusterNode {
            config,
            coord,
            peers: Peers::new(broker.config.max_body_bytes),
            broker,
            meta: RwLock::new(Metadata::default()),
            synced: watch::Sender::new(0),
            fetchers: Mutex::new(HashMap::new()),
            controller: AtomicBool::new(false),
            may_lead: AtomicBool::new(false),
            joined: AtomicBool::new(false),
            nudges: tokio::sync::Notify::new(),
            lost_cluster: Mutex::new(None),
            auth_sync: super::auth_sync::AuthSync::new(),
            preferred_ready: Mutex::new(HashMap::new()),
        }
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.config.node_id
    }

    /// This node's settings.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// The broker this node serves.
    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// The coordination service.
    pub fn coord(&self) -> &Arc<dyn Coordination> {
        &self.coord
    }

    /// A copy of the cluster metadata as last read.
    pub fn metadata(&self) -> Metadata {
        read(&self.meta).clone()
    }

    /// Runs `f` over the metadata without copying it.
    pub fn with_metadata<R>(&self, f: impl FnOnce(&Metadata) -> R) -> R {
        f(&read(&self.meta))
    }

    /// Whether the coordination session is live.
    pub fn is_connected(&self) -> bool {
        self.coord.session().borrow().is_connected()
    }

    /// Whether the node has registered and read the cluster state once, so that it
    /// can serve requests (it answers 503 before).
    pub fn has_joined(&self) -> bool {
        self.joined.load(Ordering::Acquire)
    }

    /// Whether this node is cut off from the cluster: its session ended or was
    /// silent for longer than the session timeout, so it leads nothing and its view
    /// of who leads may be stale.
    pub fn is_cut_off(&self) -> bool {
        !self.may_lead.load(Ordering::Acquire)
    }

    /// Whether this node is the controller.
    pub fn is_controller(&self) -> bool {
        self.controller.load(Ordering::Acquire)
    }

    /// A receiver that changes after each read of the cluster state.
    pub fn synced(&self) -> watch::Receiver<u64> {
        self.synced.subscribe()
    }

    /// The gRPC address of a live member.
    pub fn grpc_addr(&self, node: NodeId) -> Option<String> {
        read(&self.meta)
            .brokers
            .get(&node)
            .map(|b| b.grpc_addr.clone())
    }

    /// The local partition of a topic or queue, if this node has it.
    pub fn local_partition(&self, kind: LogKind, name: &str, p: u32) -> Option<Arc<Partition>> {
        let partitions = match kind {
            LogKind::Topic => self.broker.topic(name).ok()?.partitions().to_vec(),
            LogKind::Queue => self.broker.find_queue(name)?.partitions().to_vec(),
        };
        partitions.get(p as usize).cloned()
    }

    /// The state journal of a local queue partition.
    pub fn queue_journal(&self, name: &str, p: u32) -> Option<Arc<log_engine::Log>> {
        self.broker.find_queue(name)?.journal_log(p as usize)
    }

    /// Writes a new topic or queue: the controller then places its leaders, and
    /// every node creates its copy. Fails with `NodeExists` if the name is taken.
    pub async fn create_log(
        &self,
        assignment: &LogAssignment,
        name: &str,
    ) -> Result<(), CoordError> {
        let data = serde_json::to_vec(assignment).map_err(|e| CoordError::Other(e.to_string()))?;
        self.coord.ensure_path(assignment.kind.root()).await?;
        self.coord
            .create(
                &layout::log_path(assignment.kind, name),
                data,
                CreateMode::Persistent,
            )
            .await?;
        self.coord
            .ensure_path(&layout::partitions_path(assignment.kind, name))
            .await
    }

    /// Deletes a topic or queue from the cluster: marks its assignment as being
    /// deleted, then deletes its partitions' states and subscriptions, then the
    /// assignment. Every node deletes its copy once it sees the mark.
    pub async fn delete_log(&self, kind: LogKind, name: &str) -> Result<(), CoordError> {
        let path = layout::log_path(kind, name);
        self.mark_deleting(&path).await?;
        self.delete_tree(&path).await
    }

    /// Marks the assignment at `path` as being deleted, so that the controller stops
    /// writing the states the delete removes (it writes one for every partition it
    /// finds without). `NoNode` if the log is gone: the assignment is the last thing
    /// deleted. An assignment no node can read is deleted without the mark.
    async fn mark_deleting(&self, path: &str) -> Result<(), CoordError> {
        loop {
            let Some((data, version)) = self.coord.get(path, false).await? else {
                return Err(CoordError::NoNode(path.to_owned()));
            };
            let Ok(mut assignment) = serde_json::from_slice::<LogAssignment>(&data) else {
                return Ok(());
            };
            if assignment.deleting {
                return Ok(());
            }
            assignment.deleting = true;
            let data =
                serde_json::to_vec(&assignment).map_err(|e| CoordError::Other(e.to_string()))?;
            match self.coord.set(path, data, version).await {
                Ok(_) => return Ok(()),
                Err(CoordError::BadVersion(_)) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Deletes `path` and everything under it, children first. A node that gained a
    /// child meanwhile (a controller pass that read the log before the mark) is
    /// listed again, a few times at most.
    async fn delete_tree(&self, path: &str) -> Result<(), CoordError> {
        let mut relists = 0;
        let mut stack = vec![(path.to_owned(), false)];
        while let Some((node, expanded)) = stack.pop() {
            if expanded {
                match self.coord.delete(&node, None).await {
                    Ok(()) | Err(CoordError::NoNode(_)) => {}
                    Err(CoordError::NotEmpty(_)) if relists < DELETE_RELISTS_MAX => {
                        relists += 1;
                        stack.push((node, false));
                    }
                    Err(e) => return Err(e),
                }
                continue;
            }
            let children = match self.coord.children(&node, false).await {
                Ok(children) => children,
                Err(CoordError::NoNode(_)) => continue,
                Err(e) => return Err(e),
            };
            stack.push((node.clone(), true));
            stack.extend(children.into_iter().map(|c| (format!("{node}/{c}"), false)));
        }
        Ok(())
    }

    /// Keeps a subscription's settings and committed offsets in the cluster, so
    /// the node that takes the topic over resumes it there. Called by the topic's
    /// leader after every change (create, commit, seek, auto-committing pull).
    ///
    /// Fenced by the leader epoch: a 503 `not_leader` when this node does not lead
    /// the topic's partition 0, or when a node that took the topic over since has
    /// written the record (see `ClusterNode::load_subscriptions`), so that a
    /// deposed leader that has not heard of it yet cannot acknowledge a commit the
    /// new leader would not know.
    pub async fn put_subscription(
        &self,
        topic: &str,
        sub: &crate::subscription::Subscription,
    ) -> Result<(), ApiError> {
        let not_leader = || {
            ApiError::new(
                ErrorCode::NotLeader,
                format!("this node no longer leads topic {topic:?}; retry"),
            )
        };
        let epoch = self
            .local_partition(LogKind::Topic, topic, 0)
            .and_then(|p| p.replica.leader_epoch())
            .ok_or_else(not_leader)?;
        let record = layout::SubscriptionRecord {
            auto_commit: sub.auto_commit,
            committed: sub.committed(),
            epoch,
        };
        let data = serde_json::to_vec(&record).map_err(ApiError::internal)?;
        let path = layout::subscription_path(topic, &sub.name);
        for _ in 0..3 {
            let written = match self.coord.get(&path, false).await.map_err(coord_error)? {
                Some((current, version)) => {
                    let written_by = serde_json::from_slice::<layout::SubscriptionRecord>(&current)
                        .map_or(0, |r| r.epoch);
                    if written_by > epoch {
                        return Err(not_leader());
                    }
                    self.coord
                        .set(&path, data.clone(), version)
                        .await
                        .map(|_| ())
                }
                None => {
                    self.coord
                        .ensure_path(&layout::subscriptions_path(topic))
                        .await
                        .map_err(coord_error)?;
                    self.coord
                        .create(&path, data.clone(), CreateMode::Persistent)
                        .await
                }
            };
            match written {
                Ok(()) => return Ok(()),
                Err(CoordError::BadVersion(_) | CoordError::NodeExists(_)) => continue,
                Err(e) => return Err(coord_error(e)),
            }
        }
        Err(ApiError::new(
            ErrorCode::Unavailable,
            "the subscription changed concurrently; retry",
        ))
    }

    /// Asks ZooKeeper, not this node's view, whether this node leads `partition`
    /// of a log: a leader that was paused past its session does not know yet that
    /// another node took over, and its copy of the log may be behind. A 503
    /// `not_leader` when it does not lead (or the state cannot be read).
    pub async fn confirm_leads(
        &self,
        kind: LogKind,
        name: &str,
        partition: u32,
    ) -> Result<(), ApiError> {
        let path = layout::partition_path(kind, name, partition);
        let state = self.coord.get(&path, false).await.map_err(coord_error)?;
        let leader = state
            .and_then(|(data, _)| serde_json::from_slice::<PartitionState>(&data).ok())
            .and_then(|state| state.leader);
        if leader == Some(self.id()) {
            return Ok(());
        }
        Err(ApiError::new(
            ErrorCode::NotLeader,
            format!("this node no longer leads partition {partition} of {name:?}; retry"),
        ))
    }

    /// Removes a subscription from the cluster.
    pub async fn remove_subscription(&self, topic: &str, name: &str) -> Result<(), ApiError> {
        ignore_no_node(
            self.coord
                .delete(&layout::subscription_path(topic, name), None)
                .await,
        )
        .map_err(coord_error)
    }

    /// Makes this node's subscriptions of `topic` those the cluster keeps: before it
    /// starts leading the topic, in leader epoch `epoch`. Each record is written
    /// back with that epoch first, so that the deposed leader's writes fail from
    /// then on (see [`ClusterNode::put_subscription`]) and what it wrote before is
    /// what this node reads.
    async fn load_subscriptions(&self, topic: &str, epoch: u32) -> Result<(), ApiError> {
        let Ok(local) = self.broker.topic(topic) else {
            return Ok(());
        };
        let parent = layout::subscriptions_path(topic);
        let names = match self.coord.children(&parent, false).await {
            Ok(names) => names,
            Err(CoordError::NoNode(_)) => Vec::new(),
            Err(e) => return Err(coord_error(e)),
        };
        for name in &names {
            let path = layout::subscription_path(topic, name);
            let Some(record) = self.claim_subscription(&path, epoch).await? else {
                continue;
            };
            local
                .restore_subscription(name, record.auto_commit, &record.committed)
                .await?;
        }
        for sub in local.subscriptions() {
            if !names.contains(&sub.name) {
                local.unsubscribe(&sub.name)?;
            }
        }
        Ok(())
    }

    /// Writes the subscription record at `path` back with leader epoch `epoch`
    /// (unless a newer epoch wrote it) and returns it; `None` when it is gone or
    /// unreadable.
    async fn claim_subscription(
        &self,
        path: &str,
        epoch: u32,
    ) -> Result<Option<layout::SubscriptionRecord>, ApiError> {
        for _ in 0..CLAIM_ATTEMPTS {
            let Some((data, version)) = self.coord.get(path, false).await.map_err(coord_error)?
            else {
                return Ok(None);
            };
            let mut record: layout::SubscriptionRecord = match serde_json::from_slice(&data) {
                Ok(record) => record,
                Err(error) => {
                    tracing::warn!(%error, path, "unreadable subscription record");
                    return Ok(None);
                }
            };
            if record.epoch >= epoch {
                return Ok(Some(record));
            }
            record.epoch = epoch;
            let claimed = serde_json::to_vec(&record).map_err(ApiError::internal)?;
            match self.coord.set(path, claimed, version).await {
                Ok(_) => return Ok(Some(record)),
                // The deposed leader wrote meanwhile: read its write, and try again.
                Err(CoordError::BadVersion(_)) => continue,
                Err(CoordError::NoNode(_)) => return Ok(None),
                Err(e) => return Err(coord_error(e)),
            }
        }
        Err(ApiError::new(
            ErrorCode::Unavailable,
            "a subscription kept changing while this node took its topic over; retrying",
        ))
    }

    /// Waits until the metadata satisfies `done` or `timeout` passes.
    pub async fn wait_for(&self, timeout: Duration, done: impl Fn(&Metadata) -> bool) -> bool {
        let mut synced = self.synced();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if done(&read(&self.meta)) {
                return true;
            }
            if tokio::time::timeout_at(deadline, synced.changed())
                .await
                .is_err()
            {
                return done(&read(&self.meta));
            }
        }
    }

    /// The node that serves requests about a topic or queue: the leader of its
    /// partition 0 (the controller keeps a log's partitions led by one node).
    pub fn home(&self, kind: LogKind, name: &str) -> Option<NodeId> {
        read(&self.meta).partition(kind, name, 0)?.leader
    }

    /// Creates a topic or queue in the cluster and waits until this node has its
    /// copy and every partition a leader.
    pub async fn create(
        &self,
        kind: LogKind,
        name: &str,
        spec: serde_json::Value,
        partitions: u32,
        replication_factor: u32,
    ) -> Result<(), ApiError> {
        // A queue goes beside its dead-letter queue (same nodes, same order, so the
        // same node usually leads both): its dead letters then need no network hop.
        let beside = match kind {
            LogKind::Queue => spec.get("dead_letter_queue").and_then(|v| v.as_str()),
            LogKind::Topic => None,
        };
        let order = match beside {
            Some(dlq) => self.placement_of(LogKind::Queue, dlq).await,
            None => None,
        };
        let (live, start) = self.with_metadata(|meta| {
            (
                meta.brokers.keys().copied().collect::<Vec<_>>(),
                meta.logs.len(),
            )
        });
        let replicas = match order {
            Some(order) => {
                layout::assign_replicas_beside(partitions, replication_factor, &live, &order)
            }
            None => layout::assign_replicas(partitions, replication_factor, &live, start),
        }
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let assignment = LogAssignment {
            kind,
            spec,
            replicas,
            deleting: false,
        };
        match self.create_log(&assignment, name).await {
            Ok(()) => {}
            Err(CoordError::NodeExists(_)) => {
                return Err(ApiError::already_exists(format!(
                    "{} {name} exists",
                    kind.noun()
                )));
            }
            Err(e) => return Err(coord_error(e)),
        }
        self.nudge();
        let ready = self
            .wait_for(CREATE_WAIT, |meta| {
                meta.logs.get(&(kind, name.to_owned())).is_some_and(|log| {
                    log.states
                        .iter()
                        .all(|s| s.as_ref().is_some_and(|(s, _)| s.leader.is_some()))
                })
            })
            .await;
        let local = self.wait_local(kind, name, true).await;
        if ready && local {
            Ok(())
        } else {
            Err(ApiError::new(
                ErrorCode::Timeout,
                format!(
                    "{} {name} is created but its leaders are not elected yet",
                    kind.noun()
                ),
            ))
        }
    }

    /// The nodes of a log's partition 0, its leader first, as ZooKeeper has them
    /// (this node's view may not have a log created a moment ago on another node);
    /// `None` when there is no such log or it cannot be read.
    async fn placement_of(&self, kind: LogKind, name: &str) -> Option<Vec<NodeId>> {
        let (data, _) = self
            .coord
            .get(&layout::log_path(kind, name), false)
            .await
            .ok()??;
        let assignment: LogAssignment = serde_json::from_slice(&data).ok()?;
        let replicas = assignment.replicas.first()?;
        let leader = match self
            .coord
            .get(&layout::partition_path(kind, name, 0), false)
            .await
        {
            Ok(Some((data, _))) => serde_json::from_slice::<PartitionState>(&data)
                .ok()
                .and_then(|state| state.leader),
            _ => None,
        };
        Some(layout::leader_first(replicas, leader))
    }

    /// Deletes a topic or queue from the cluster and waits until this node's copy is
    /// gone.
    pub async fn delete(&self, kind: LogKind, name: &str) -> Result<(), ApiError> {
        match self.delete_log(kind, name).await {
            Ok(()) => {}
            Err(CoordError::NoNode(_)) => {
                return Err(ApiError::not_found(format!("no {} {name}", kind.noun())));
            }
            Err(e) => return Err(coord_error(e)),
        }
        self.nudge();
        if self.wait_local(kind, name, false).await {
            Ok(())
        } else {
            Err(ApiError::new(
                ErrorCode::Timeout,
                format!(
                    "{} {name} is deleted but its files are not removed yet",
                    kind.noun()
                ),
            ))
        }
    }

    async fn wait_local(&self, kind: LogKind, name: &str, present: bool) -> bool {
        let deadline = tokio::time::Instant::now() + CREATE_WAIT;
        loop {
            let exists = match kind {
                LogKind::Topic => self.broker.topic(name).is_ok(),
                LogKind::Queue => self.broker.find_queue(name).is_some(),
            };
            if exists == present {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            self.nudge();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Asks for a read of the cluster state soon.
    pub fn nudge(&self) {
        self.nudges.notify_one();
    }

    /// Runs the node until `stop` turns true: registers it, keeps its metadata and
    /// partition roles current, and acts as controller when elected.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut changes = self.coord.changes();
        let mut session = self.coord.session();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut registered: Option<u64> = None;
        let mut disconnected_since: Option<Instant> = None;
        let mut last_sync: Option<Instant> = None;
        let mut register_warned: Option<Instant> = None;
        let mut dirty = true;
        loop {
            let state = *session.borrow_and_update();
            match state {
                SessionState::Connected { generation } => {
                    disconnected_since = None;
                    if registered != Some(generation) {
                        match self.register().await {
                            Ok(()) => {
                                registered = Some(generation);
                                self.may_lead.store(true, Ordering::Release);
                                dirty = true;
                            }
                            // Retried every tick; said again every REGISTER_WARN_EVERY.
                            Err(error) => {
                                if register_warned
                                    .is_none_or(|at| at.elapsed() >= REGISTER_WARN_EVERY)
                                {
                                    register_warned = Some(Instant::now());
                                    tracing::warn!(%error, "cannot register with the coordination service yet; answering 503 until then");
                                } else {
                                    tracing::debug!(%error, "cannot register yet");
                                }
                            }
                        }
                    } else if !self.may_lead.load(Ordering::Acquire) {
                        // The same session is back after a disconnection long enough
                        // to stop leading. The session never expired, so its
                        // registration stood throughout and no leader was replaced
                        // for its absence: it leads again what the states, read
                        // first, still give it.
                        tracing::info!("coordination session resumed: leading again");
                        self.may_lead.store(true, Ordering::Release);
                        dirty = true;
                    }
                }
                SessionState::Disconnected => {
                    disconnected_since.get_or_insert_with(Instant::now);
                }
                SessionState::Expired => {
                    if registered.take().is_some() {
                        tracing::warn!("coordination session expired: no longer leading");
                    }
                    self.step_down_everywhere();
                }
            }
            if disconnected_since
                .is_some_and(|since| since.elapsed() >= self.config.session_timeout)
                && self.may_lead.load(Ordering::Acquire)
            {
                tracing::warn!("cut off from the coordination service: no longer leading");
                self.step_down_everywhere();
            }
            if registered.is_some()
                && state.is_connected()
                && (dirty || last_sync.is_none_or(|at| at.elapsed() >= FULL_SYNC))
            {
                match self.sync().await {
                    Ok(()) => {
                        dirty = false;
                        last_sync = Some(Instant::now());
                        self.joined.store(true, Ordering::Release);
                    }
                    Err(error) => tracing::warn!(%error, "reading the cluster state failed"),
                }
            }
            tokio::select! {
                _ = stop.changed() => break,
                _ = session.changed() => {}
                change = changes.recv() => {
                    if let Err(tokio::sync::broadcast::error::RecvError::Closed) = change {
                        break;
                    }
                    dirty = true;
                }
                _ = self.nudges.notified() => dirty = true,
                _ = tick.tick() => self.tick_leaders(),
            }
            if *stop.borrow() {
                break;
            }
        }
        for (_, fetcher) in lock(&self.fetchers).drain() {
            fetcher.abort();
        }
        // Leaving: stop leading, then end the session so the others elect new
        // leaders now rather than a session timeout later.
        self.step_down_everywhere();
        self.coord.close().await;
        tracing::info!(node = self.config.node_id, "left the cluster");
    }

    async fn register(&self) -> Result<(), CoordError> {
        self.coord.ensure_path(BROKERS).await?;
        let me = BrokerRegistration {
            id: self.config.node_id,
            rest_addr: self.config.rest_addr.clone(),
            grpc_addr: self.config.grpc_addr.clone(),
        };
        let data = serde_json::to_vec(&me).map_err(|e| CoordError::Other(e.to_string()))?;
        let path = layout::broker_path(me.id);
        match self.coord.create(&path, data, CreateMode::Ephemeral).await {
            Ok(()) => {
                tracing::info!(node = me.id, "joined the cluster");
                Ok(())
            }
            // Left by this node's previous session, which ends within the session
            // timeout; or another node has this id.
            Err(CoordError::NodeExists(_)) => Err(CoordError::Other(format!(
                "node id {} is registered by another session (a previous run of this node \
                 whose session has not expired yet, or another node with the same id)",
                me.id
            ))),
            Err(e) => Err(e),
        }
    }

    /// Stops leading every partition at once (the session is gone, so another node
    /// may be elected).
    fn step_down_everywhere(&self) {
        self.may_lead.store(false, Ordering::Release);
        self.controller.store(false, Ordering::Release);
        for partition in self.all_local_partitions() {
            if partition.1.replica.leader_epoch().is_some() && !partition.1.replica.is_standalone()
            {
                partition.1.replica.go_offline();
            }
        }
    }

    fn all_local_partitions(&self) -> Vec<(PartitionKey, Arc<Partition>)> {
        let mut out = Vec::new();
        for topic in self.broker.topics() {
            for p in topic.partitions() {
                out.push((
                    (LogKind::Topic, topic.name().to_owned(), p.id),
                    Arc::clone(p),
                ));
            }
        }
        for queue in self.broker.queues() {
            for p in queue.partitions() {
                out.push((
                    (LogKind::Queue, queue.name().to_owned(), p.id),
                    Arc::clone(p),
                ));
            }
        }
        out
    }

    fn tick_leaders(&self) {
        let now = now_ms();
        for (_, partition) in self.all_local_partitions() {
            partition.replica.tick(&partition.log, now);
        }
    }

    /// Why the node refuses to act on the cluster state, if it does: ZooKeeper does
    /// not hold the cluster this node belongs to (see `check_cluster_id`).
    pub fn lost_cluster(&self) -> Option<String> {
        lock(&self.lost_cluster).clone()
    }

    /// Checks that ZooKeeper holds this node's cluster: `/cluster_id` matches the id
    /// the node keeps in its data directory since it first joined. The first node of
    /// a new cluster writes the id; a node that joins takes it. A ZooKeeper that lost
    /// its data (no id) or holds another cluster's (another id) would read as "every
    /// topic was deleted"; the node then refuses to act, rather than delete its logs.
    async fn check_cluster_id(&self) -> Result<bool, CoordError> {
        let path = self.broker.data_dir().join(CLUSTER_ID_FILE);
        let local = match std::fs::read_to_string(&path) {
            Ok(text) => Some(text.trim().to_owned()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(CoordError::Other(format!("{}: {e}", path.display()))),
        };
        let read = |data: Vec<u8>| String::from_utf8_lossy(&data).trim().to_owned();
        let remote = match self.coord.get(CLUSTER_ID, false).await? {
            Some((data, _)) => Some(read(data)),
            None if local.is_none() => {
                let id = new_cluster_id()?;
                match self
                    .coord
                    .create(CLUSTER_ID, id.clone().into_bytes(), CreateMode::Persistent)
                    .await
                {
                    Ok(()) => {
                        tracing::info!(cluster = id, "created the cluster id");
                        Some(id)
                    }
                    Err(CoordError::NodeExists(_)) => self
                        .coord
                        .get(CLUSTER_ID, false)
                        .await?
                        .map(|(data, _)| read(data)),
                    Err(e) => return Err(e),
                }
            }
            None => None,
        };
        let problem = match (&local, &remote) {
            (_, None) => Some(format!(
                "ZooKeeper holds no cluster id, but this node belongs to cluster {}: \
                 ZooKeeper lost its data. The node keeps its logs and serves nothing \
                 until ZooKeeper's data is restored",
                local.as_deref().unwrap_or("?")
            )),
            (Some(mine), Some(theirs)) if mine != theirs => Some(format!(
                "ZooKeeper holds cluster {theirs}, but this node belongs to cluster {mine}; \
                 it keeps its logs and serves nothing"
            )),
            (None, Some(theirs)) => {
                crate::fsutil::write_atomic(&path, theirs.as_bytes(), 0o644)
                    .map_err(|e| CoordError::Other(e.to_string()))?;
                tracing::info!(cluster = %theirs, "joined the cluster");
                None
            }
            _ => None,
        };
        let mut lost = lock(&self.lost_cluster);
        if problem != *lost {
            if let Some(problem) = &problem {
                tracing::error!("{problem}");
            }
            lost.clone_from(&problem);
        }
        Ok(problem.is_none())
    }

    /// Reads the whole cluster state (setting watches), then acts on it.
    async fn sync(self: &Arc<Self>) -> Result<(), CoordError> {
        if !self.check_cluster_id().await? {
            self.step_down_everywhere();
            return Ok(());
        }
        self.auth_sync
            .sync_logged(self.coord.as_ref(), &self.broker.auth)
            .await;
        let meta = self.read_metadata().await?;
        *self.meta.write().unwrap_or_else(|p| p.into_inner()) = meta.clone();
        self.synced.send_modify(|n| *n += 1);
        self.elect_controller(&meta).await?;
        if self.is_controller() {
            self.control(&meta).await?;
        }
        self.materialize(&meta).await;
        self.reconcile(&meta).await;
        Ok(())
    }

    async fn read_metadata(&self) -> Result<Metadata, CoordError> {
        let coord = &self.coord;
        coord.ensure_path(BROKERS).await?;
        let mut meta = Metadata::default();
        for child in coord.children(BROKERS, true).await? {
            let path = format!("{BROKERS}/{child}");
            if let Some((data, _)) = coord.get(&path, false).await? {
                match serde_json::from_slice::<BrokerRegistration>(&data) {
                    Ok(b) => {
                        meta.brokers.insert(b.id, b);
                    }
                    Err(error) => tracing::warn!(%error, path, "unreadable registration"),
                }
            }
        }
        meta.controller = match coord.get(CONTROLLER, true).await? {
            Some((data, _)) => serde_json::from_slice::<ControllerRecord>(&data)
                .ok()
                .map(|c| c.id),
            None => None,
        };
        for kind in LogKind::ALL {
            coord.ensure_path(kind.root()).await?;
            for name in coord.children(kind.root(), true).await? {
                let Some((data, _)) = coord.get(&layout::log_path(kind, &name), false).await?
                else {
                    continue;
                };
                let assignment: LogAssignment = match serde_json::from_slice(&data) {
                    Ok(a) => a,
                    Err(error) => {
                        tracing::warn!(%error, name, "unreadable assignment");
                        continue;
                    }
                };
                if assignment.deleting {
                    meta.deleting.push((kind, name));
                    continue;
                }
                let mut states = Vec::with_capacity(assignment.replicas.len());
                for p in 0..assignment.replicas.len() as u32 {
                    let path = layout::partition_path(kind, &name, p);
                    let state = match coord.get(&path, true).await? {
                        Some((data, version)) => serde_json::from_slice::<PartitionState>(&data)
                            .ok()
                            .map(|s| (s, version)),
                        None => None,
                    };
                    states.push(state);
                }
                meta.logs
                    .insert((kind, name), LogMeta { assignment, states });
            }
        }
        Ok(meta)
    }

    async fn elect_controller(&self, meta: &Metadata) -> Result<(), CoordError> {
        let me = self.config.node_id;
        match meta.controller {
            Some(id) => self.controller.store(id == me, Ordering::Release),
            None => {
                let data = serde_json::to_vec(&ControllerRecord { id: me })
                    .map_err(|e| CoordError::Other(e.to_string()))?;
                match self
                    .coord
                    .create(CONTROLLER, data, CreateMode::Ephemeral)
                    .await
                {
                    Ok(()) => {
                        tracing::info!(node = me, "elected controller");
                        self.controller.store(true, Ordering::Release);
                        self.nudge();
                    }
                    Err(CoordError::NodeExists(_)) => self.nudge(),
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// The controller's duties: finish the deletes marked and not finished, give
    /// every partition a live leader from its in-sync replicas, and drop dead nodes
    /// from in-sync sets.
    async fn control(&self, meta: &Metadata) -> Result<(), CoordError> {
        for (kind, name) in &meta.deleting {
            match self.delete_tree(&layout::log_path(*kind, name)).await {
                Ok(()) => tracing::info!(kind = ?kind, name, "delete finished"),
                Err(error) => {
                    tracing::warn!(%error, kind = ?kind, name, "delete not finished; the next pass retries");
                }
            }
        }
        let alive: Vec<NodeId> = meta.brokers.keys().copied().collect();
        lock(&self.preferred_ready).retain(|key, _| meta.logs.contains_key(key));
        for ((kind, name), log) in &meta.logs {
            let rebalance = self.rebalance_to(&(*kind, name.clone()), log, &alive);
            // Partition 0's leader, which the others follow so one node leads the log.
            let mut home: Option<NodeId> = None;
            for (p, replicas) in log.assignment.replicas.iter().enumerate() {
                let path = layout::partition_path(*kind, name, p as u32);
                let current = log.states.get(p).cloned().flatten();
                if p == 0 {
                    home = current.as_ref().and_then(|(s, _)| s.leader);
                }
                let next = match &current {
                    None => {
                        let isr: Vec<NodeId> = replicas
                            .iter()
                            .copied()
                            .filter(|r| alive.contains(r))
                            .collect();
                        let Some(leader) = layout::elect_leader(replicas, &isr, &alive) else {
                            continue;
                        };
                        PartitionState {
                            leader: Some(leader),
                            leader_epoch: 1,
                            isr,
                        }
                    }
                    Some((state, _)) => {
                        let preferred = if p == 0 { rebalance } else { home };
                        match decide(state, replicas, &alive, preferred) {
                            Some(next) => next,
                            None => continue,
                        }
                    }
                };
                if p == 0 {
                    home = next.leader;
                }
                let data =
                    serde_json::to_vec(&next).map_err(|e| CoordError::Other(e.to_string()))?;
                let written = match &current {
                    None => self
                        .coord
                        .create(&path, data, CreateMode::Persistent)
                        .await
                        .map(|_| ()),
                    Some((_, version)) => self.coord.set(&path, data, *version).await.map(|_| ()),
                };
                match written {
                    Ok(()) => tracing::info!(
                        kind = ?kind, name, partition = p, leader = ?next.leader,
                        epoch = next.leader_epoch, isr = ?next.isr, "partition state written"
                    ),
                    // Someone wrote first; the next read sees it and decides again.
                    Err(
                        CoordError::BadVersion(_)
                        | CoordError::NodeExists(_)
                        | CoordError::NoNode(_),
                    ) => {
                        self.nudge();
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// The preferred leader of `log` (its first replica) when it should lead again:
    /// another live node leads, and the preferred one has been alive and in every
    /// partition's in-sync set for the rebalance delay, as this controller saw it.
    /// As Kafka's preferred-leader election, it gives the leadership back after a
    /// failover, so that leaders stay spread over the nodes.
    fn rebalance_to(
        &self,
        key: &(LogKind, String),
        log: &LogMeta,
        alive: &[NodeId],
    ) -> Option<NodeId> {
        let delay = self.config.leader_rebalance_delay?;
        let preferred = *log.assignment.replicas.first()?.first()?;
        let leader = log.states.first()?.as_ref()?.0.leader;
        let in_sync = |s: &Option<(PartitionState, Version)>| {
            s.as_ref().is_some_and(|(s, _)| s.isr.contains(&preferred))
        };
        let ready = leader.is_some_and(|l| l != preferred && alive.contains(&l))
            && alive.contains(&preferred)
            && log.states.iter().all(in_sync);
        let mut since = lock(&self.preferred_ready);
        if !ready {
            since.remove(key);
            return None;
        }
        let first = *since.entry(key.clone()).or_insert_with(Instant::now);
        if first.elapsed() < delay {
            return None;
        }
        since.remove(key);
        tracing::info!(kind = ?key.0, name = key.1, from = ?leader, to = preferred, "giving the leadership back to the preferred leader");
        Some(preferred)
    }

    /// Creates local copies of new topics and queues, deletes those the cluster
    /// deleted.
    async fn materialize(&self, meta: &Metadata) {
        for ((kind, name), log) in &meta.logs {
            let local = match kind {
                LogKind::Topic => self.broker.topic(name).ok().map(|t| t.spec.incarnation),
                LogKind::Queue => self.broker.find_queue(name).map(|q| q.spec.incarnation),
            };
            let exists = match local {
                Some(incarnation) if !is_incarnation_of(incarnation, log) => {
                    // Deleted and created again while this node was away: the local
                    // copy is the earlier one's.
                    self.stop_fetchers(*kind, name).await;
                    let deleted = match kind {
                        LogKind::Topic => self.broker.delete_topic(name),
                        LogKind::Queue => self.broker.delete_queue(name),
                    };
                    if let Err(error) = deleted {
                        tracing::warn!(%error, kind = ?kind, name, "cannot delete the copy of an earlier one");
                        continue;
                    }
                    false
                }
                found => found.is_some(),
            };
            if exists {
                continue;
            }
            let created = match kind {
                LogKind::Topic => serde_json::from_value::<TopicSpec>(log.assignment.spec.clone())
                    .map_err(|e| e.to_string())
                    .and_then(|spec| {
                        self.broker
                            .create_topic_for(spec, u32::MAX)
                            .map(|_| ())
                            .map_err(|e| e.message)
                    }),
                LogKind::Queue => serde_json::from_value::<QueueSpec>(log.assignment.spec.clone())
                    .map_err(|e| e.to_string())
                    .and_then(|spec| {
                        self.broker
                            .create_queue_for(spec, u32::MAX)
                            .map(|_| ())
                            .map_err(|e| e.message)
                    }),
            };
            match created {
                Ok(()) => tracing::info!(kind = ?kind, name, "created the local copy"),
                Err(error) => {
                    tracing::warn!(%error, kind = ?kind, name, "cannot create the local copy")
                }
            }
        }
        for topic in self.broker.topics() {
            if !meta
                .logs
                .contains_key(&(LogKind::Topic, topic.name().to_owned()))
            {
                self.stop_fetchers(LogKind::Topic, topic.name()).await;
                if let Err(error) = self.broker.delete_topic(topic.name()) {
                    tracing::warn!(%error, topic = topic.name(), "cannot delete the local copy");
                }
            }
        }
        for queue in self.broker.queues() {
            if !meta
                .logs
                .contains_key(&(LogKind::Queue, queue.name().to_owned()))
            {
                self.stop_fetchers(LogKind::Queue, queue.name()).await;
                if let Err(error) = self.broker.delete_queue(queue.name()) {
                    tracing::warn!(%error, queue = queue.name(), "cannot delete the local copy");
                }
            }
        }
    }

    async fn stop_fetchers(&self, kind: LogKind, name: &str) {
        let keys: Vec<PartitionKey> = lock(&self.fetchers)
            .keys()
            .filter(|(k, n, _)| *k == kind && n == name)
            .cloned()
            .collect();
        for key in keys {
            self.stop_fetcher(&key).await;
        }
    }

    /// Puts every local partition in the role its state says.
    async fn reconcile(self: &Arc<Self>, meta: &Metadata) {
        let me = self.config.node_id;
        let may_lead = self.may_lead.load(Ordering::Acquire);
        for (key, partition) in self.all_local_partitions() {
            let (kind, name, p) = &key;
            let replicas = meta.replicas(*kind, name, *p).unwrap_or(&[]);
            let state = meta.partition(*kind, name, *p);
            let replica = &partition.replica;
            match state {
                Some(state) if state.leader == Some(me) && may_lead => {
                    if replica.leader_epoch() == Some(state.leader_epoch) {
                        replica.isr_committed(
                            &partition.log,
                            state.leader_epoch,
                            state.isr.clone(),
                        );
                        continue;
                    }
                    self.stop_fetcher(&key).await;
                    if let Err(error) = self.take_over(&key, state.leader_epoch).await {
                        tracing::warn!(%error, ?key, "cannot take the partition over yet");
                        replica.go_offline();
                        self.nudge();
                        continue;
                    }
                    let (tx, rx) = mpsc::unbounded_channel();
                    if let Err(error) = replica.become_leader(
                        me,
                        state.leader_epoch,
                        replicas.to_vec(),
                        state.isr.clone(),
                        &partition.log,
                        now_ms(),
                        self.config.leader,
                        tx,
                    ) {
                        tracing::error!(%error, ?key, "cannot take the leadership");
                        replica.go_offline();
                        continue;
                    }
                    tracing::info!(?key, epoch = state.leader_epoch, "leading");
                    tokio::spawn(Arc::clone(self).write_isr_proposals(key.clone(), partition, rx));
                }
                Some(state) if replicas.contains(&me) && state.leader.is_some_and(|l| l != me) => {
                    let leader = state.leader.unwrap_or_default();
                    let running = lock(&self.fetchers)
                        .get(&key)
                        .is_some_and(|f| !f.is_finished());
                    if replica.following() == Some((leader, state.leader_epoch)) && running {
                        continue;
                    }
                    self.stop_fetcher(&key).await;
                    replica.become_follower(leader, state.leader_epoch);
                    tracing::info!(?key, leader, epoch = state.leader_epoch, "following");
                    let data = super::fetcher::follow(
                        Arc::clone(self),
                        key.clone(),
                        Arc::clone(&partition),
                        leader,
                        state.leader_epoch,
                    );
                    let journal = self.queue_journal(name, *p).map(|journal| {
                        super::fetcher::follow_journal(
                            Arc::clone(self),
                            key.clone(),
                            journal,
                            leader,
                            state.leader_epoch,
                        )
                    });
                    let fetcher = tokio::spawn(async move {
                        match journal {
                            Some(journal) => {
                                futures_util::future::join(data, journal).await;
                            }
                            None => data.await,
                        }
                    });
                    lock(&self.fetchers).insert(key, fetcher);
                }
                _ => {
                    if replica.leader_epoch().is_some() || replica.following().is_some() {
                        tracing::info!(?key, "not serving");
                    }
                    self.stop_fetcher(&key).await;
                    replica.go_offline();
                }
            }
        }
    }

    /// What a node does before it leads a partition: it takes over the consumer
    /// state the old leader kept (a queue partition's state from the copied
    /// journal; a topic's subscriptions from the cluster) and the idempotency keys
    /// its log holds.
    async fn take_over(&self, key: &PartitionKey, epoch: u32) -> Result<(), ApiError> {
        let (kind, name, p) = key;
        match kind {
            LogKind::Queue => {
                if let Some(queue) = self.broker.find_queue(name) {
                    let p = *p as usize;
                    let reloading = Arc::clone(&queue);
                    tokio::task::spawn_blocking(move || reloading.reload_state(p))
                        .await
                        .map_err(ApiError::internal)??;
                    queue.rebuild_idempotency();
                }
            }
            LogKind::Topic => {
                if *p == 0 {
                    self.load_subscriptions(name, epoch).await?;
                }
                if let Ok(topic) = self.broker.topic(name) {
                    topic.rebuild_idempotency();
                }
            }
        }
        Ok(())
    }

    async fn stop_fetcher(&self, key: &PartitionKey) {
        let fetcher = lock(&self.fetchers).remove(key);
        if let Some(fetcher) = fetcher {
            fetcher.abort();
            // Wait until it is gone: no copy may land after a role change.
            let _ = fetcher.await;
        }
    }

    /// Writes a leader's in-sync set proposals, each conditional on the state it
    /// read still naming this node as leader in the proposal's epoch.
    async fn write_isr_proposals(
        self: Arc<Self>,
        key: PartitionKey,
        partition: Arc<Partition>,
        mut proposals: mpsc::UnboundedReceiver<IsrProposal>,
    ) {
        let (kind, name, p) = &key;
        let path = layout::partition_path(*kind, name, *p);
        while let Some(proposal) = proposals.recv().await {
            let outcome = async {
                let Some((data, version)) = self.coord.get(&path, false).await? else {
                    return Ok(false);
                };
                let Ok(mut state) = serde_json::from_slice::<PartitionState>(&data) else {
                    return Ok(false);
                };
                if state.leader != Some(self.config.node_id) || state.leader_epoch != proposal.epoch
                {
                    return Ok(false);
                }
                state.isr = proposal.isr.clone();
                let data =
                    serde_json::to_vec(&state).map_err(|e| CoordError::Other(e.to_string()))?;
                self.coord.set(&path, data, version).await?;
                Ok::<bool, CoordError>(true)
            }
            .await;
            match outcome {
                Ok(true) => {
                    tracing::info!(?key, isr = ?proposal.isr, "in-sync replicas changed");
                    partition
                        .replica
                        .isr_committed(&partition.log, proposal.epoch, proposal.isr);
                }
                Ok(false) | Err(_) => {
                    if let Err(error) = outcome {
                        tracing::warn!(%error, ?key, "writing the in-sync replicas failed");
                    }
                    partition.replica.isr_proposal_failed(proposal.epoch);
                    self.nudge();
                }
            }
        }
    }
}

/// The controller's decision for a partition with a state: a new leader when the
/// leader is gone, or a smaller in-sync set when members died. `None` when nothing
/// changes.
///
/// `preferred` is the leader of the log's partition 0: a partition whose in-sync set
/// holds it is led by it, so one node leads the whole log.
fn decide(
    state: &PartitionState,
    replicas: &[NodeId],
    alive: &[NodeId],
    preferred: Option<NodeId>,
) -> Option<PartitionState> {
    let eligible = |n: NodeId| state.isr.contains(&n) && alive.contains(&n);
    let leader_alive = state.leader.is_some_and(|l| alive.contains(&l));
    let realign = preferred.filter(|&p| state.leader != Some(p) && eligible(p));
    if !leader_alive || realign.is_some() {
        let leader = realign.or_else(|| layout::elect_leader(replicas, &state.isr, alive));
        if leader.is_none() && state.leader.is_none() {
            return None;
        }
        let isr = match leader {
            Some(_) => state
                .isr
                .iter()
                .copied()
                .filter(|r| alive.contains(r))
                .collect(),
            // Nobody to elect: keep the in-sync set, so its first member to return
            // takes over with everything that was acknowledged.
            None => state.isr.clone(),
        };
        return Some(PartitionState {
            leader,
            leader_epoch: state.leader_epoch + 1,
            isr,
        });
    }
    let isr: Vec<NodeId> = state
        .isr
        .iter()
        .copied()
        .filter(|r| alive.contains(r))
        .collect();
    (isr != state.isr).then_some(PartitionState {
        leader: state.leader,
        leader_epoch: state.leader_epoch,
        isr,
    })
}

/// A coordination failure as a client sees it.
pub fn coord_error(error: CoordError) -> ApiError {
    match error {
        CoordError::NotConnected => ApiError::new(
            ErrorCode::Unavailable,
            "this node is not connected to ZooKeeper; retry or use another node",
        ),
        other => ApiError::new(ErrorCode::Unavailable, format!("cluster metadata: {other}")),
    }
}

fn ignore_no_node(result: Result<(), CoordError>) -> Result<(), CoordError> {
    match result {
        Err(CoordError::NoNode(_)) => Ok(()),
        other => other,
    }
}

/// Whether a local topic or queue of `incarnation` is the one `log` assigns.
fn is_incarnation_of(incarnation: u64, log: &LogMeta) -> bool {
    let assigned = log
        .assignment
        .spec
        .get("incarnation")
        .and_then(|v| v.as_u64());
    assigned.unwrap_or(0) == incarnation
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::memory::{MemoryCoordination, MemoryTree};
    use crate::config::BrokerConfig;

    /// A node with its own data directory on the shared in-memory tree; its
    /// session handle, to cut it off; its stop switch.
    struct TestNode {
        node: Arc<ClusterNode>,
        session: Arc<MemoryCoordination>,
        stop: watch::Sender<bool>,
        _dir: tempfile::TempDir,
    }

    async fn start_node(id: NodeId, tree: &MemoryTree) -> TestNode {
        let dir = tempfile::tempdir().unwrap();
        let config = BrokerConfig {
            data_dir: dir.path().join("data"),
            admin_password: Some("node-test-password".into()),
            jwt_secret: Some("a-jwt-secret-for-the-node-tests-0123456789".into()),
            ..BrokerConfig::default()
        };
        let (broker, _) = tokio::task::spawn_blocking(move || Broker::open(config))
            .await
            .unwrap()
            .unwrap();
        let session = Arc::new(tree.session());
        let coord: Arc<dyn Coordination> = Arc::clone(&session) as Arc<dyn Coordination>;
        let config = NodeConfig {
            node_id: id,
            // Nothing listens there: followers' fetches fail and retry, which these
            // tests do not need.
            rest_addr: "127.0.0.1:9".into(),
            grpc_addr: "127.0.0.1:9".into(),
            leader: LeaderConfig::default(),
            session_timeout: Duration::from_millis(300),
            leader_rebalance_delay: None,
        };
        let node = Arc::new(ClusterNode::new(config, coord, Arc::new(broker)));
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(Arc::clone(&node).run(stopped));
        TestNode {
            node,
            session,
            stop,
            _dir: dir,
        }
    }

    /// Nodes 1 and 2 on `tree`, once each sees both as members.
    async fn two_members(tree: &MemoryTree) -> [TestNode; 2] {
        let nodes = [start_node(1, tree).await, start_node(2, tree).await];
        eventually("both nodes are members", || {
            nodes
                .iter()
                .all(|n| n.node.with_metadata(|m| m.brokers.len() == 2))
        })
        .await;
        nodes
    }

    fn topic_spec(name: &str, partitions: u32, replication_factor: u32) -> serde_json::Value {
        serde_json::to_value(TopicSpec {
            name: name.into(),
            partitions,
            replication_factor,
            retention_ms: None,
            retention_bytes: None,
            durability: crate::config::Durability::Fsync,
            incarnation: 0,
        })
        .unwrap()
    }

    /// Whether both partitions of topic `t` on `node` pass `check`.
    fn both_partitions(node: &ClusterNode, check: impl Fn(&Partition) -> bool) -> bool {
        (0..2).all(|p| {
            node.local_partition(LogKind::Topic, "t", p)
                .is_some_and(|p| check(&p))
        })
    }

    async fn eventually(what: &str, check: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !check() {
            assert!(tokio::time::Instant::now() < deadline, "never: {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_deposed_leader_cannot_write_a_subscription_the_new_leader_claimed() {
        let tree = MemoryCoordination::new_tree();
        let nodes = two_members(&tree).await;
        nodes[0]
            .node
            .create(LogKind::Topic, "t", topic_spec("t", 1, 2), 1, 2)
            .await
            .unwrap();
        let leader = nodes[0].node.home(LogKind::Topic, "t").unwrap();
        let (old, new) = if leader == 1 {
            (&nodes[0].node, &nodes[1].node)
        } else {
            (&nodes[1].node, &nodes[0].node)
        };
        eventually("the leader leads", || {
            old.local_partition(LogKind::Topic, "t", 0)
                .is_some_and(|p| p.replica.leader_epoch() == Some(1))
        })
        .await;
        let topic = old.broker().topic("t").unwrap();
        let sub = topic
            .subscribe("s", crate::subscription::StartAt::Earliest, false)
            .unwrap();
        old.put_subscription("t", &sub).await.unwrap();
        let messages: Vec<crate::message::NewMessage<'static>> = (0..3)
            .map(|i| crate::message::NewMessage {
                value: format!("m{i}").into_bytes().into(),
                ..Default::default()
            })
            .collect();
        topic
            .produce(&messages, crate::topic::Acks::Leader, None)
            .await
            .unwrap();
        sub.commit(&[(0, log_engine::Offset(2))]).unwrap();
        old.put_subscription("t", &sub).await.unwrap();

        // Another node takes the topic over in epoch 2 while the old leader, not
        // told yet, goes on: the commit it wrote first is what the new one reads,
        // and its writes after the claim are refused.
        let path = layout::subscription_path("t", "s");
        let claimed = new.claim_subscription(&path, 2).await.unwrap().unwrap();
        assert_eq!((claimed.committed, claimed.epoch), (vec![2], 2));
        let refused = old.put_subscription("t", &sub).await.unwrap_err();
        assert_eq!(refused.code, ErrorCode::NotLeader, "{refused:?}");
        let again = new.claim_subscription(&path, 2).await.unwrap().unwrap();
        assert_eq!(again.epoch, 2, "a claim in the same epoch changes nothing");
        for n in &nodes {
            n.stop.send_replace(true);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn leadership_moves_when_the_leaders_session_ends() {
        let tree = MemoryCoordination::new_tree();
        let nodes = two_members(&tree).await;
        let too_many = nodes[0]
            .node
            .create(LogKind::Topic, "t", topic_spec("t", 2, 3), 2, 3)
            .await
            .unwrap_err();
        assert_eq!(too_many.code, ErrorCode::BadRequest, "{too_many:?}");
        nodes[0]
            .node
            .create(LogKind::Topic, "t", topic_spec("t", 2, 2), 2, 2)
            .await
            .unwrap();
        eventually("every node has its copy", || {
            nodes.iter().all(|n| n.node.broker().topic("t").is_ok())
        })
        .await;
        let leader = nodes[0].node.home(LogKind::Topic, "t").unwrap();
        let (old, new) = if leader == 1 {
            (&nodes[0], &nodes[1])
        } else {
            (&nodes[1], &nodes[0])
        };
        let leads_in = |node: &ClusterNode, epoch| {
            both_partitions(node, |p| p.replica.leader_epoch() == Some(epoch))
        };
        eventually("the leader leads both partitions", || {
            leads_in(&old.node, 1)
        })
        .await;

        // The leader is cut off, and its session ends.
        old.session.disconnect();
        old.session.expire();
        eventually("the other node leads in epoch 2", || leads_in(&new.node, 2)).await;
        assert!(
            both_partitions(&old.node, |p| p.replica.leader_epoch().is_none()),
            "the cut-off node stopped leading"
        );

        // It comes back with a new session and follows.
        old.session.reconnect();
        let new_id = new.node.id();
        eventually("the old leader follows the new one", || {
            both_partitions(&old.node, |p| p.replica.following() == Some((new_id, 2)))
        })
        .await;

        // Deleting the topic removes every copy.
        new.node.delete(LogKind::Topic, "t").await.unwrap();
        eventually("no node keeps a copy", || {
            nodes.iter().all(|n| n.node.broker().topic("t").is_err())
        })
        .await;
        for n in &nodes {
            n.stop.send_replace(true);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_copy_of_an_earlier_topic_of_the_same_name_is_replaced() {
        let tree = MemoryCoordination::new_tree();
        let nodes = two_members(&tree).await;
        let mut spec = topic_spec("t", 2, 2);
        spec["incarnation"] = serde_json::json!(1);
        nodes[0]
            .node
            .create(LogKind::Topic, "t", spec, 2, 2)
            .await
            .unwrap();
        let incarnations = || {
            nodes
                .iter()
                .map(|n| n.node.broker().topic("t").map_or(0, |t| t.spec.incarnation))
                .collect::<Vec<_>>()
        };
        eventually("both nodes hold the topic", || incarnations() == [1, 1]).await;

        // What a node that was away finds: the name assigned to a topic created
        // again (deleted and made anew while it was down).
        let coord = &nodes[0].session;
        let path = layout::log_path(LogKind::Topic, "t");
        let (data, version) = coord.get(&path, false).await.unwrap().unwrap();
        let mut assignment: serde_json::Value = serde_json::from_slice(&data).unwrap();
        assignment["spec"]["incarnation"] = serde_json::json!(2);
        let data = serde_json::to_vec(&assignment).unwrap();
        coord.set(&path, data, version).await.unwrap();
        for n in &nodes {
            n.node.nudge();
        }
        eventually("both nodes replaced their copies", || {
            incarnations() == [2, 2]
        })
        .await;
        for n in &nodes {
            n.stop.send_replace(true);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_log_marked_for_deletion_gets_no_new_partition_state_and_goes() {
        let tree = MemoryCoordination::new_tree();
        let nodes = two_members(&tree).await;
        nodes[0]
            .node
            .create(LogKind::Topic, "t", topic_spec("t", 2, 2), 2, 2)
            .await
            .unwrap();
        let coord = &nodes[0].session;
        let state_path = layout::partition_path(LogKind::Topic, "t", 1);
        assert!(coord.get(&state_path, false).await.unwrap().is_some());

        // Unmarked, a partition without a state gets one again from the controller.
        coord.delete(&state_path, None).await.unwrap();
        nodes[0].node.nudge();
        nodes[1].node.nudge();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while coord.get(&state_path, false).await.unwrap().is_none() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the state never came back"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        // Marked, it does not, and every node removes its copy.
        nodes[0]
            .node
            .mark_deleting(&layout::log_path(LogKind::Topic, "t"))
            .await
            .unwrap();
        coord.delete(&state_path, None).await.unwrap();
        nodes[0].node.nudge();
        nodes[1].node.nudge();
        eventually("no node keeps a copy", || {
            nodes.iter().all(|n| n.node.broker().topic("t").is_err())
        })
        .await;
        assert!(coord.get(&state_path, false).await.unwrap().is_none());

        // The node that marked it went no further (as if it stopped midway): the
        // controller finishes the delete, and the name is free again.
        let topic = layout::log_path(LogKind::Topic, "t");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while coord.get(&topic, false).await.unwrap().is_some() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the delete never finished"
            );
            nodes[0].node.nudge();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        nodes[1]
            .node
            .create(LogKind::Topic, "t", topic_spec("t", 2, 2), 2, 2)
            .await
            .unwrap();
        for n in &nodes {
            n.stop.send_replace(true);
        }
    }

    fn state(leader: Option<NodeId>, epoch: u32, isr: &[NodeId]) -> PartitionState {
        PartitionState {
            leader,
            leader_epoch: epoch,
            isr: isr.to_vec(),
        }
    }

    #[test]
    fn a_dead_leader_is_replaced_from_the_live_in_sync_set() {
        let next = decide(&state(Some(1), 3, &[1, 2, 3]), &[1, 2, 3], &[2, 3], None).unwrap();
        assert_eq!(next, state(Some(2), 4, &[2, 3]));
    }

    #[test]
    fn no_in_sync_survivor_leaves_the_partition_offline_keeping_its_isr() {
        let next = decide(&state(Some(1), 3, &[1]), &[1, 2, 3], &[2, 3], None).unwrap();
        assert_eq!(next, state(None, 4, &[1]));
        // Already offline, still nobody: nothing to write.
        assert_eq!(decide(&next, &[1, 2, 3], &[2, 3], None), None);
        // The in-sync member returns: it leads.
        let back = decide(&next, &[1, 2, 3], &[1, 2, 3], None).unwrap();
        assert_eq!(back, state(Some(1), 5, &[1]));
    }

    #[test]
    fn dead_followers_leave_the_in_sync_set() {
        let next = decide(&state(Some(1), 3, &[1, 2, 3]), &[1, 2, 3], &[1, 2], None).unwrap();
        assert_eq!(next, state(Some(1), 3, &[1, 2]));
        assert_eq!(decide(&next, &[1, 2, 3], &[1, 2], None), None);
    }

    #[test]
    fn partitions_follow_the_leader_of_partition_0_when_it_is_in_sync() {
        let s = state(Some(2), 4, &[1, 2, 3]);
        let next = decide(&s, &[1, 2, 3], &[1, 2, 3], Some(3)).unwrap();
        assert_eq!(next, state(Some(3), 5, &[1, 2, 3]));
        // Not in sync here: stays.
        let lagging = state(Some(2), 4, &[1, 2]);
        assert_eq!(decide(&lagging, &[1, 2, 3], &[1, 2, 3], Some(3)), None);
    }
}
