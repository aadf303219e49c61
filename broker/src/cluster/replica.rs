//! A partition's part in replication on this node: whether it leads the partition,
//! follows another node, or runs standalone; the leader's view of its followers; and
//! the partition's leader-epoch history, kept in its directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use log_engine::{Log, Offset};
use tokio::sync::{mpsc, watch};

use crate::error::{ApiError, BrokerError, ErrorCode};
use crate::fsutil;
use crate::replication::{Action, EpochHistory, LeaderConfig, LeaderState, NodeId};

/// The file of a partition's leader-epoch history.
const EPOCHS_FILE: &str = "leader-epochs";

/// What this node does for a partition.
#[derive(Debug)]
pub enum Role {
    /// No cluster: this node is the only copy, and leads.
    Standalone,
    /// This node leads the partition in `epoch`.
    Leader(Box<LeaderState>),
    /// This node copies the partition from `leader`.
    Follower {
        /// The leader it copies from.
        leader: NodeId,
        /// The leader's epoch.
        epoch: u32,
    },
    /// No node leads the partition, or this node holds no copy of it.
    Offline,
}

/// A leader's request to change the in-sync set, for the cluster to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IsrProposal {
    /// The epoch the leader proposes it in; a proposal from an older epoch is void.
    pub epoch: u32,
    /// The new in-sync set.
    pub isr: Vec<NodeId>,
}

/// A partition's replication state on this node.
#[derive(Debug)]
pub struct Replica {
    role: Mutex<Role>,
    epochs: Mutex<EpochHistory>,
    epochs_path: PathBuf,
    /// Where a leader sends its in-sync set proposals (set by the cluster).
    proposals: Mutex<Option<mpsc::UnboundedSender<IsrProposal>>>,
    /// Counts role changes, so a waiting produce notices it lost the leadership.
    changes: watch::Sender<u64>,
    /// How far each follower has copied the state journal that goes with this
    /// partition (queues), as their journal fetches say.
    journal_copied: watch::Sender<BTreeMap<NodeId, u64>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Replica {
    /// The replica of the partition in `dir`, with its epoch history: standalone,
    /// or offline in a cluster (until the cluster gives it a role).
    pub fn open(dir: &Path, clustered: bool) -> Result<Replica, BrokerError> {
        let epochs_path = dir.join(EPOCHS_FILE);
        let epochs = match std::fs::read_to_string(&epochs_path) {
            Ok(text) => EpochHistory::decode(&text).map_err(|e| BrokerError::BadMetadata {
                path: epochs_path.clone(),
                reason: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => EpochHistory::default(),
            Err(e) => return Err(BrokerError::io(&epochs_path, e)),
        };
        Ok(Replica {
            role: Mutex::new(if clustered {
                Role::Offline
            } else {
                Role::Standalone
            }),
            epochs: Mutex::new(epochs),
            epochs_path,
            proposals: Mutex::new(None),
            changes: watch::Sender::new(0),
            journal_copied: watch::Sender::new(BTreeMap::new()),
        })
    }

    /// Whether this node takes writes for the partition, and in which leader epoch
    /// (0 standalone).
    pub fn leader_epoch(&self) -> Option<u32> {
        match &*lock(&self.role) {
            Role::Standalone => Some(0),
            Role::Leader(state) => Some(state.epoch()),
            _ => None,
        }
    }

    /// Whether this partition runs without a cluster.
    pub fn is_standalone(&self) -> bool {
        matches!(&*lock(&self.role), Role::Standalone)
    }

    /// The leader this node follows, if it follows one.
    pub fn following(&self) -> Option<(NodeId, u32)> {
        match &*lock(&self.role) {
            Role::Follower { leader, epoch } => Some((*leader, *epoch)),
            _ => None,
        }
    }

    /// The in-sync replicas as this node, leading, sees them.
    pub fn isr(&self) -> Option<Vec<NodeId>> {
        match &*lock(&self.role) {
            Role::Leader(state) => Some(state.isr().to_vec()),
            _ => None,
        }
    }

    /// A receiver that changes whenever the role does.
    pub fn role_changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn set_role(&self, role: Role) {
        *lock(&self.role) = role;
        self.changes.send_modify(|n| *n += 1);
    }

    /// Becomes the leader in `epoch`: the epoch starts at the log end, and the high
    /// watermark advances as the in-sync `isr` copies.
    #[allow(clippy::too_many_arguments)]
    pub fn become_leader(
        &self,
        me: NodeId,
        epoch: u32,
        replicas: Vec<NodeId>,
        isr: Vec<NodeId>,
        log: &Log,
        now_ms: u64,
        config: LeaderConfig,
        proposals: mpsc::UnboundedSender<IsrProposal>,
    ) -> Result<(), BrokerError> {
        let end = log.log_end_offset().0;
        self.record_epoch(epoch, end)?;
        let mut state = LeaderState::new(
            me,
            epoch,
            replicas,
            isr,
            end,
            log.high_watermark().0,
            now_ms,
            config,
        );
        let actions = state.on_append(end);
        *lock(&self.proposals) = Some(proposals);
        self.journal_copied.send_modify(BTreeMap::clear);
        self.set_role(Role::Leader(Box::new(state)));
        self.apply(log, actions);
        Ok(())
    }

    /// Becomes a follower of `leader` in `epoch`.
    pub fn become_follower(&self, leader: NodeId, epoch: u32) {
        *lock(&self.proposals) = None;
        self.journal_copied.send_modify(BTreeMap::clear);
        self.set_role(Role::Follower { leader, epoch });
    }

    /// Stops serving the partition (no leader, or no copy here).
    pub fn go_offline(&self) {
        *lock(&self.proposals) = None;
        self.set_role(Role::Offline);
    }

    /// After a local append up to `log_end` (exclusive): advances the high watermark
    /// as the role allows.
    pub fn appended(&self, log: &Log, log_end: Offset) {
        let actions = match &mut *lock(&self.role) {
            Role::Standalone => {
                log.set_high_watermark(log_end);
                return;
            }
            Role::Leader(state) => state.on_append(log_end.0),
            _ => return,
        };
        self.apply(log, actions);
    }

    /// A follower fetched from `fetch_offset` in `epoch`: records its progress.
    /// Fails with the protocol's view of a stale or premature request.
    pub fn follower_fetched(
        &self,
        log: &Log,
        follower: NodeId,
        epoch: u32,
        fetch_offset: u64,
        now_ms: u64,
    ) -> Result<(), FetchRefusal> {
        let actions = match &mut *lock(&self.role) {
            Role::Leader(state) => {
                if epoch < state.epoch() {
                    return Err(FetchRefusal::FencedEpoch);
                }
                if epoch > state.epoch() {
                    return Err(FetchRefusal::UnknownEpoch);
                }
                state.on_fetch(follower, fetch_offset, now_ms)
            }
            _ => return Err(FetchRefusal::NotLeader),
        };
        self.apply(log, actions);
        Ok(())
    }

    /// A follower fetched the state journal from `fetch_offset` in `epoch`: it has
    /// everything below. Refused like a data fetch when this node does not lead.
    pub fn journal_fetched(
        &self,
        follower: NodeId,
        epoch: u32,
        fetch_offset: u64,
    ) -> Result<(), FetchRefusal> {
        match &*lock(&self.role) {
            Role::Leader(state) if epoch < state.epoch() => return Err(FetchRefusal::FencedEpoch),
            Role::Leader(state) if epoch > state.epoch() => return Err(FetchRefusal::UnknownEpoch),
            Role::Leader(_) => {}
            _ => return Err(FetchRefusal::NotLeader),
        }
        self.journal_copied.send_modify(|copied| {
            copied.insert(follower, fetch_offset);
        });
        Ok(())
    }

    /// Waits until every other in-sync replica has copied the state journal up to
    /// `end` (exclusive): an ack is answered only once a failover cannot lose it.
    /// Returns at once standalone; fails as [`Replica::while_leading`] does.
    pub async fn journal_copied(&self, end: u64, timeout: Duration) -> Result<(), ApiError> {
        if self.is_standalone() {
            return Ok(());
        }
        let epoch = self.leader_epoch();
        let mut copied = self.journal_copied.subscribe();
        let until = async {
            loop {
                let (Some(isr), Some(me)) = (self.isr(), self.me()) else {
                    return;
                };
                let done = {
                    let progress = copied.borrow_and_update();
                    isr.iter()
                        .filter(|n| **n != me)
                        .all(|n| progress.get(n).is_some_and(|at| *at >= end))
                };
                if done || copied.changed().await.is_err() {
                    return;
                }
            }
        };
        self.while_leading(epoch, until, timeout, "the change", "retry")
            .await
    }

    /// Runs `until` (a wait for the in-sync replicas) as long as this node still
    /// leads in `epoch`, the epoch it led in when the write was made. Fails with 503
    /// `not_leader` when the leadership changes first (the write may or may not be
    /// kept) and with 504 `timeout` when `timeout` passes; `what` names what was
    /// written and `retry` how to retry, in those errors. `None` (not leading when
    /// the write was made) fails at once.
    pub async fn while_leading(
        &self,
        epoch: Option<u32>,
        until: impl std::future::Future<Output = ()>,
        timeout: Duration,
        what: &str,
        retry: &str,
    ) -> Result<(), ApiError> {
        let lost_leadership = || {
            ApiError::new(
                ErrorCode::NotLeader,
                format!(
                    "the partition changed leader before its in-sync replicas had {what}; \
                     it may or may not be kept: {retry}"
                ),
            )
        };
        if epoch.is_none() {
            return Err(lost_leadership());
        }
        let mut changes = self.role_changes();
        let lost = async {
            while self.leader_epoch() == epoch {
                if changes.changed().await.is_err() {
                    break;
                }
            }
        };
        let kept = async {
            tokio::select! {
                () = until => self.leader_epoch() == epoch,
                () = lost => false,
            }
        };
        match tokio::time::timeout(timeout, kept).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(lost_leadership()),
            Err(_) => Err(ApiError::new(
                ErrorCode::Timeout,
                format!("the in-sync replicas did not copy {what} in time; {retry}"),
            )),
        }
    }

    fn me(&self) -> Option<NodeId> {
        match &*lock(&self.role) {
            Role::Leader(state) => Some(state.me()),
            _ => None,
        }
    }

    /// The passing of time: a leader drops followers that lag too long.
    pub fn tick(&self, log: &Log, now_ms: u64) {
        let actions = match &mut *lock(&self.role) {
            Role::Leader(state) => state.on_tick(now_ms),
            _ => return,
        };
        self.apply(log, actions);
    }

    /// The in-sync set as written in the coordination service, in `epoch`.
    pub fn isr_committed(&self, log: &Log, epoch: u32, isr: Vec<NodeId>) {
        let actions = match &mut *lock(&self.role) {
            Role::Leader(state) if state.epoch() == epoch => state.on_isr_committed(isr),
            _ => return,
        };
        self.apply(log, actions);
    }

    /// A proposal lost its conditional write; the leader may propose again.
    pub fn isr_proposal_failed(&self, epoch: u32) {
        if let Role::Leader(state) = &mut *lock(&self.role)
            && state.epoch() == epoch
        {
            state.on_isr_proposal_failed();
        }
    }

    /// Refuses an `acks=all` write when too few replicas are in sync.
    pub fn check_min_isr(&self) -> Result<(), ApiError> {
        match &*lock(&self.role) {
            Role::Leader(state) => state
                .check_min_isr()
                .map_err(|e| ApiError::new(ErrorCode::NotEnoughReplicas, e.to_string())),
            _ => Ok(()),
        }
    }

    fn apply(&self, log: &Log, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::AdvanceHighWatermark(hw) => log.set_high_watermark(Offset(hw)),
                Action::ProposeIsr(isr) => {
                    let epoch = self.leader_epoch().unwrap_or(0);
                    if let Some(tx) = &*lock(&self.proposals) {
                        let _ = tx.send(IsrProposal { epoch, isr });
                    }
                }
            }
        }
    }

    /// The latest epoch in the history.
    pub fn latest_epoch(&self) -> Option<u32> {
        lock(&self.epochs).latest().map(|(epoch, _)| epoch)
    }

    /// Where `epoch` ends in this log (Kafka's OffsetsForLeaderEpoch).
    pub fn epoch_end(&self, epoch: u32, log_end: u64) -> Option<(u32, u64)> {
        lock(&self.epochs).end_offset_for(epoch, log_end)
    }

    /// A copy of the epoch history.
    pub fn epoch_history(&self) -> EpochHistory {
        lock(&self.epochs).clone()
    }

    /// Records that `epoch` starts at `start` (a new leader, or a follower copying a
    /// batch of a newer epoch), and keeps the history on disk.
    pub fn record_epoch(&self, epoch: u32, start: u64) -> Result<(), BrokerError> {
        let mut epochs = lock(&self.epochs);
        if epochs.latest().is_some_and(|(latest, _)| latest >= epoch) {
            return Ok(());
        }
        epochs.assign(epoch, start);
        fsutil::write_atomic(&self.epochs_path, epochs.encode().as_bytes(), 0o644)
    }

    /// After the log was truncated to `end`: forgets the epochs that began at or
    /// after it.
    pub fn truncated(&self, end: u64) -> Result<(), BrokerError> {
        let mut epochs = lock(&self.epochs);
        epochs.truncate_from(end);
        fsutil::write_atomic(&self.epochs_path, epochs.encode().as_bytes(), 0o644)
    }
}

/// Why a leader refuses a follower's fetch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FetchRefusal {
    /// This node does not lead the partition.
    NotLeader,
    /// The follower follows an older epoch.
    FencedEpoch,
    /// The follower knows a newer epoch than this node.
    UnknownEpoch,
}
