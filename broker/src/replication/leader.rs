//! The leader's side of one partition: which followers are in sync, and where
//! the high watermark is.
//!
//! [`LeaderState`] is a pure state machine: it takes events (a local append, a
//! follower's fetch, a clock tick, the outcome of an ISR write) and returns
//! [`Action`]s for the runtime to carry out. It does no I/O and reads no clock;
//! time comes in as `now_ms`.
//!
//! The rules are Kafka's:
//! - the high watermark is the smallest log end over the ISR, the leader's own
//!   included; it never decreases and never passes the leader's log end;
//! - a follower is caught up at a fetch whose offset reaches the leader's log
//!   end, or reaches the leader's log end as it was at the follower's previous
//!   fetch (then it was caught up at that previous fetch);
//! - an ISR follower not caught up for longer than `replica_lag_time_max_ms` is
//!   proposed for removal; a follower outside the ISR whose log end reaches the
//!   high watermark and the start of this leader's epoch is proposed for
//!   addition;
//! - at most one ISR proposal is in flight; while it is, the high watermark is
//!   computed over the union of the committed ISR and the proposed one, so a
//!   follower being removed holds the high watermark back until its removal is
//!   committed (KIP-497).

use std::collections::BTreeMap;

use thiserror::Error;

use super::NodeId;

/// The leader's limits. Defaults match Kafka's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaderConfig {
    /// How long an ISR follower may go without being caught up before the leader
    /// proposes to remove it. Defaults to 30 000 ms.
    pub replica_lag_time_max_ms: u64,
    /// The smallest committed ISR that accepts `acks=all` writes. Defaults to 1.
    pub min_insync_replicas: usize,
}

impl Default for LeaderConfig {
    fn default() -> Self {
        Self {
            replica_lag_time_max_ms: 30_000,
            min_insync_replicas: 1,
        }
    }
}

/// What the runtime must do after an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Records up to (excluding) this offset are committed: publish the new high
    /// watermark and answer the `acks=all` produces it covers. Only ever
    /// increases, and never passes the leader's log end.
    AdvanceHighWatermark(u64),
    /// Write this ISR to the coordination service with a conditional write, then
    /// report [`LeaderState::on_isr_committed`] or
    /// [`LeaderState::on_isr_proposal_failed`]. It always holds the leader.
    ProposeIsr(Vec<NodeId>),
}

/// The committed ISR is smaller than `min_insync_replicas`: an `acks=all` write
/// must be refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("not enough in-sync replicas: {isr} in sync, {required} required")]
pub struct NotEnoughReplicas {
    /// The size of the committed ISR.
    pub isr: usize,
    /// The configured minimum.
    pub required: usize,
}

/// What the leader knows of one follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FollowerProgress {
    /// The follower's log end as of its last fetch; `None` before its first
    /// fetch in this epoch, counted as 0.
    log_end: Option<u64>,
    /// The last time the follower was known to be caught up.
    last_caught_up_ms: u64,
    /// The leader's log end at the follower's previous fetch (at the start of the
    /// epoch before the first fetch).
    last_fetch_leader_end: u64,
    /// The time of the follower's previous fetch (the start of the epoch before
    /// the first fetch).
    last_fetch_ms: u64,
}

/// One partition's replication state on its leader, for one leader epoch.
#[derive(Debug, Clone)]
pub struct LeaderState {
    /// This node.
    me: NodeId,
    /// The leader epoch this state serves.
    epoch: u32,
    /// The leader's log end at the start of the epoch: a follower must reach it
    /// to join the ISR, since records below it may differ from an older leader's.
    epoch_start_offset: u64,
    /// The leader's own log end (exclusive).
    log_end: u64,
    /// Records below it are committed.
    high_watermark: u64,
    /// The ISR as committed in the coordination service; always holds `me`.
    isr: Vec<NodeId>,
    /// The ISR proposed and not yet answered.
    proposed_isr: Option<Vec<NodeId>>,
    /// Every replica but the leader; fetches from other nodes are ignored.
    followers: BTreeMap<NodeId, FollowerProgress>,
    /// The limits.
    config: LeaderConfig,
}

impl LeaderState {
    /// The state of a leader starting `epoch` with its log ending at `log_end`.
    ///
    /// Followers start with an unknown log end and caught up as of `now_ms`, so
    /// an ISR follower has the full lag time to fetch. The given ISR keeps only
    /// members of `replicas` and always gets `me`; a `high_watermark` above
    /// `log_end` is lowered to it.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        me: NodeId,
        epoch: u32,
        replicas: Vec<NodeId>,
        isr: Vec<NodeId>,
        log_end: u64,
        high_watermark: u64,
        now_ms: u64,
        config: LeaderConfig,
    ) -> Self {
        let progress = FollowerProgress {
            log_end: None,
            last_caught_up_ms: now_ms,
            last_fetch_leader_end: log_end,
            last_fetch_ms: now_ms,
        };
        let followers = replicas
            .into_iter()
            .filter(|&r| r != me)
            .map(|r| (r, progress))
            .collect();
        let mut state = Self {
            me,
            epoch,
            epoch_start_offset: log_end,
            log_end,
            high_watermark: high_watermark.min(log_end),
            isr: Vec::new(),
            proposed_isr: None,
            followers,
            config,
        };
        state.isr = state.sanitize_isr(isr);
        state
    }

    /// The leader appended locally; its log now ends at `log_end`. A log end
    /// below the current one is ignored: a leader never truncates its own log
    /// within its epoch.
    pub fn on_append(&mut self, log_end: u64) -> Vec<Action> {
        self.log_end = self.log_end.max(log_end);
        self.advance_high_watermark().into_iter().collect()
    }

    /// `follower` fetched from `fetch_offset`, which is its log end: it holds
    /// every record below it. Fetches from nodes that are not replicas are
    /// ignored.
    pub fn on_fetch(&mut self, follower: NodeId, fetch_offset: u64, now_ms: u64) -> Vec<Action> {
        let leader_end = self.log_end;
        let Some(progress) = self.followers.get_mut(&follower) else {
            return Vec::new();
        };
        if fetch_offset >= leader_end {
            progress.last_caught_up_ms = progress.last_caught_up_ms.max(now_ms);
        } else if fetch_offset >= progress.last_fetch_leader_end {
            progress.last_caught_up_ms = progress.last_caught_up_ms.max(progress.last_fetch_ms);
        }
        progress.log_end = Some(fetch_offset);
        progress.last_fetch_leader_end = leader_end;
        progress.last_fetch_ms = now_ms;

        let mut actions: Vec<Action> = self.advance_high_watermark().into_iter().collect();
        if self.should_add(follower, fetch_offset) {
            let mut isr = self.isr.clone();
            isr.push(follower);
            actions.push(self.propose(isr));
        }
        actions
    }

    /// The clock reached `now_ms`: proposes to remove the ISR followers not
    /// caught up for longer than `replica_lag_time_max_ms`.
    pub fn on_tick(&mut self, now_ms: u64) -> Vec<Action> {
        if self.proposed_isr.is_some() {
            return Vec::new();
        }
        let lag_max_ms = self.config.replica_lag_time_max_ms;
        let lagging = |node: &NodeId| {
            self.followers
                .get(node)
                .is_some_and(|p| now_ms.saturating_sub(p.last_caught_up_ms) > lag_max_ms)
        };
        if !self.isr.iter().any(lagging) {
            return Vec::new();
        }
        let isr = self.isr.iter().copied().filter(|n| !lagging(n)).collect();
        vec![self.propose(isr)]
    }

    /// The ISR now committed in the coordination service, after this leader's
    /// proposal or a change by the controller. Ends any proposal in flight.
    /// Members that are not replicas are dropped, and the leader is kept: a
    /// controller that removes the leader also elects another, which reaches
    /// this node as a leadership change.
    pub fn on_isr_committed(&mut self, isr: Vec<NodeId>) -> Vec<Action> {
        self.isr = self.sanitize_isr(isr);
        self.proposed_isr = None;
        self.advance_high_watermark().into_iter().collect()
    }

    /// The conditional write of the proposed ISR lost (the ISR changed
    /// meanwhile). Ends the proposal so a later event may propose again.
    pub fn on_isr_proposal_failed(&mut self) -> Vec<Action> {
        self.proposed_isr = None;
        self.advance_high_watermark().into_iter().collect()
    }

    /// Records below it are committed.
    pub fn high_watermark(&self) -> u64 {
        self.high_watermark
    }

    /// The committed ISR.
    pub fn isr(&self) -> &[NodeId] {
        &self.isr
    }

    /// The ISR proposed and not yet answered, if any.
    pub fn proposed_isr(&self) -> Option<&[NodeId]> {
        self.proposed_isr.as_deref()
    }

    /// The leader's log end.
    pub fn log_end(&self) -> u64 {
        self.log_end
    }

    /// The leader epoch.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// A follower's log end as of its last fetch; `None` for a follower that has
    /// not fetched in this epoch, or a node that is not a follower.
    pub fn follower_log_end(&self, follower: NodeId) -> Option<u64> {
        self.followers.get(&follower).and_then(|p| p.log_end)
    }

    /// Whether the committed ISR is large enough for an `acks=all` write.
    pub fn check_min_isr(&self) -> Result<(), NotEnoughReplicas> {
        if self.isr.len() >= self.config.min_insync_replicas {
            Ok(())
        } else {
            Err(NotEnoughReplicas {
                isr: self.isr.len(),
                required: self.config.min_insync_replicas,
            })
        }
    }

    /// Whether an `acks=all` produce whose batch ends at `offset_end`
    /// (exclusive) may be answered: the high watermark reached it.
    pub fn is_committed(&self, offset_end: u64) -> bool {
        self.high_watermark >= offset_end
    }

    /// Keeps the replicas of `isr` once each, in order, and puts the leader
    /// first if it is missing.
    fn sanitize_isr(&self, isr: Vec<NodeId>) -> Vec<NodeId> {
        let mut out: Vec<NodeId> = Vec::with_capacity(isr.len() + 1);
        if !isr.contains(&self.me) {
            out.push(self.me);
        }
        for node in isr {
            let known = node == self.me || self.followers.contains_key(&node);
            if known && !out.contains(&node) {
                out.push(node);
            }
        }
        out
    }

    /// Whether `follower` is outside the ISR, caught up to the high watermark and
    /// to the start of this epoch, with no proposal in flight.
    fn should_add(&self, follower: NodeId, fetch_offset: u64) -> bool {
        self.proposed_isr.is_none()
            && !self.isr.contains(&follower)
            && fetch_offset >= self.high_watermark
            && fetch_offset >= self.epoch_start_offset
    }

    /// Records `isr` as the proposal in flight and returns its action.
    fn propose(&mut self, isr: Vec<NodeId>) -> Action {
        debug_assert!(self.proposed_isr.is_none());
        debug_assert!(isr.contains(&self.me));
        self.proposed_isr = Some(isr.clone());
        Action::ProposeIsr(isr)
    }

    /// A member's log end as counted for the high watermark.
    fn member_log_end(&self, node: NodeId) -> u64 {
        if node == self.me {
            self.log_end
        } else {
            self.followers
                .get(&node)
                .and_then(|p| p.log_end)
                .unwrap_or(0)
        }
    }

    /// Raises the high watermark to the smallest log end over the committed ISR
    /// and the proposed one, if that is higher than it is.
    fn advance_high_watermark(&mut self) -> Option<Action> {
        let proposed = self.proposed_isr.as_deref().unwrap_or(&[]);
        let floor = self
            .isr
            .iter()
            .chain(proposed)
            .map(|&n| self.member_log_end(n))
            .min()
            .unwrap_or(self.log_end)
            .min(self.log_end);
        if floor <= self.high_watermark {
            return None;
        }
        self.high_watermark = floor;
        Some(Action::AdvanceHighWatermark(floor))
    }
}
