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
        if self.isr.contains(&follower)
            && fetch_offset < self.high_watermark
            && self.proposed_isr.is_none()
        {
            // An in-sync follower whose log went below the high watermark lost
            // committed records (a node restarted with an empty disk): it leaves at
            // once, so it cannot be elected with a partial log.
            let isr = self
                .isr
                .iter()
                .copied()
                .filter(|n| *n != follower)
                .collect();
            actions.push(self.propose(isr));
            return actions;
        }
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
        let high_watermark = self.high_watermark;
        let lagging = |node: &NodeId| {
            self.followers.get(node).is_some_and(|p| {
                now_ms.saturating_sub(p.last_caught_up_ms) > lag_max_ms
                    || p.log_end.is_some_and(|end| end < high_watermark)
            })
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

    /// This node.
    pub fn me(&self) -> NodeId {
        self.me
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LAG_MS: u64 = 10_000;

    fn config(min_insync_replicas: usize) -> LeaderConfig {
        LeaderConfig {
            replica_lag_time_max_ms: LAG_MS,
            min_insync_replicas,
        }
    }

    /// Leader 1 of replicas 1, 2, 3, all in sync, log end 100, HW 100, at t=0.
    fn three_replicas() -> LeaderState {
        LeaderState::new(1, 5, vec![1, 2, 3], vec![1, 2, 3], 100, 100, 0, config(2))
    }

    fn hw_advances(actions: &[Action]) -> Vec<u64> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::AdvanceHighWatermark(hw) => Some(*hw),
                Action::ProposeIsr(_) => None,
            })
            .collect()
    }

    fn proposals(actions: &[Action]) -> Vec<Vec<NodeId>> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::ProposeIsr(isr) => Some(isr.clone()),
                Action::AdvanceHighWatermark(_) => None,
            })
            .collect()
    }

    #[test]
    fn the_high_watermark_is_the_smallest_log_end_in_the_isr() {
        let mut leader = three_replicas();
        assert!(leader.on_append(110).is_empty());
        assert!(leader.on_fetch(2, 110, 1).is_empty(), "3 has not fetched");
        assert_eq!(
            leader.on_fetch(3, 105, 2),
            vec![Action::AdvanceHighWatermark(105)]
        );
        assert_eq!(
            leader.on_fetch(3, 110, 3),
            vec![Action::AdvanceHighWatermark(110)]
        );
        assert_eq!(leader.high_watermark(), 110);
        assert!(leader.is_committed(110));
        assert!(!leader.is_committed(111));
        assert_eq!(leader.follower_log_end(2), Some(110));
    }

    #[test]
    fn an_in_sync_follower_below_the_high_watermark_leaves_at_once() {
        // Node 3 comes back with an empty disk while still in the ISR.
        let mut leader = three_replicas();
        assert_eq!(proposals(&leader.on_fetch(3, 0, 1)), vec![vec![1, 2]]);
        assert_eq!(leader.high_watermark(), 100);
        leader.on_isr_committed(vec![1, 2]);
        // It copies, and comes back once it reached the high watermark.
        assert!(proposals(&leader.on_fetch(3, 50, 2)).is_empty());
        assert_eq!(proposals(&leader.on_fetch(3, 100, 3)), vec![vec![1, 2, 3]]);
    }

    #[test]
    fn the_high_watermark_never_passes_the_leader_log_end() {
        let mut leader = three_replicas();
        assert!(leader.on_fetch(2, 500, 1).is_empty());
        assert!(leader.on_fetch(3, 500, 1).is_empty());
        assert_eq!(
            leader.on_append(120),
            vec![Action::AdvanceHighWatermark(120)]
        );
        assert_eq!(leader.high_watermark(), 120);
        let above = LeaderState::new(1, 1, vec![1], vec![1], 50, 80, 0, config(1));
        assert_eq!(above.high_watermark(), 50);
    }

    #[test]
    fn the_high_watermark_never_decreases() {
        let mut leader = three_replicas();
        leader.on_append(110);
        leader.on_fetch(2, 110, 1);
        leader.on_fetch(3, 110, 1);
        assert_eq!(leader.high_watermark(), 110);
        // A follower whose log went backwards is dropped; the HW stays.
        assert_eq!(proposals(&leader.on_fetch(3, 90, 2)), vec![vec![1, 2]]);
        assert_eq!(leader.high_watermark(), 110);
        assert!(leader.on_isr_committed(vec![1, 2, 3]).is_empty());
        assert_eq!(leader.high_watermark(), 110);
    }

    #[test]
    fn a_single_replica_commits_on_append() {
        let mut leader = LeaderState::new(7, 1, vec![7], vec![7], 0, 0, 0, config(1));
        assert_eq!(leader.on_append(3), vec![Action::AdvanceHighWatermark(3)]);
        assert!(leader.on_tick(1_000_000).is_empty());
    }

    #[test]
    fn a_slow_follower_is_dropped_and_the_high_watermark_moves_on_only_once_committed() {
        let mut leader = three_replicas();
        leader.on_append(200);
        // Follower 2 keeps up; follower 3 never fetches.
        leader.on_fetch(2, 200, 5_000);
        assert!(
            leader.on_tick(LAG_MS).is_empty(),
            "3 still within the lag time"
        );
        let actions = leader.on_tick(LAG_MS + 1);
        assert_eq!(proposals(&actions), vec![vec![1, 2]]);
        // While the drop is in flight, 3 still holds the high watermark.
        assert_eq!(leader.high_watermark(), 100);
        leader.on_append(210);
        assert!(hw_advances(&leader.on_fetch(2, 210, LAG_MS + 2)).is_empty());
        assert_eq!(leader.isr(), &[1, 2, 3]);
        assert_eq!(
            leader.on_isr_committed(vec![1, 2]),
            vec![Action::AdvanceHighWatermark(210)]
        );
        assert_eq!(leader.isr(), &[1, 2]);
    }

    #[test]
    fn a_follower_behind_but_reaching_the_previous_end_stays_caught_up() {
        let mut leader = three_replicas();
        leader.on_fetch(3, 100, 0);
        // Follower 2 is always one batch behind, but reaches the end the leader
        // had at its previous fetch.
        for step in 1..=5u64 {
            let end = 100 + 10 * step;
            leader.on_append(end);
            leader.on_fetch(2, end - 10, step * 8_000);
            leader.on_fetch(3, end, step * 8_000);
        }
        assert!(proposals(&leader.on_tick(5 * 8_000 + 1)).is_empty());
        // Follower 2 stops fetching.
        assert_eq!(
            proposals(&leader.on_tick(4 * 8_000 + LAG_MS + 1)),
            vec![vec![1, 3]]
        );
    }

    #[test]
    fn a_caught_up_follower_is_added_back() {
        let mut leader = LeaderState::new(1, 5, vec![1, 2, 3], vec![1, 2], 100, 100, 0, config(2));
        leader.on_append(120);
        assert!(
            leader.on_fetch(3, 90, 1).is_empty(),
            "below the high watermark"
        );
        assert_eq!(
            leader.on_fetch(2, 120, 2),
            vec![Action::AdvanceHighWatermark(120)]
        );
        assert!(
            leader.on_fetch(3, 110, 3).is_empty(),
            "below the high watermark"
        );
        assert_eq!(proposals(&leader.on_fetch(3, 120, 4)), vec![vec![1, 2, 3]]);
        // While the addition is in flight, 3 counts for the high watermark.
        leader.on_append(130);
        assert!(leader.on_fetch(2, 130, 5).is_empty());
        assert_eq!(
            leader.on_fetch(3, 130, 6),
            vec![Action::AdvanceHighWatermark(130)]
        );
        assert!(leader.on_isr_committed(vec![1, 2, 3]).is_empty());
        assert_eq!(leader.isr(), &[1, 2, 3]);
    }

    #[test]
    fn a_follower_rejoins_only_from_the_start_of_the_epoch() {
        // The high watermark lags the epoch start: 3 at 90 has reached the high
        // watermark but may hold records the new leader does not.
        let mut leader = LeaderState::new(1, 5, vec![1, 2, 3], vec![1, 2], 100, 80, 0, config(1));
        assert!(proposals(&leader.on_fetch(3, 90, 1)).is_empty());
        assert_eq!(proposals(&leader.on_fetch(3, 100, 2)), vec![vec![1, 2, 3]]);
    }

    #[test]
    fn a_proposal_in_flight_suppresses_another() {
        let mut leader = LeaderState::new(1, 5, vec![1, 2, 3], vec![1], 100, 100, 0, config(1));
        assert_eq!(proposals(&leader.on_fetch(2, 100, 1)), vec![vec![1, 2]]);
        assert!(proposals(&leader.on_fetch(3, 100, 2)).is_empty());
        assert_eq!(leader.proposed_isr(), Some(&[1, 2][..]));
        assert!(leader.on_isr_proposal_failed().is_empty());
        assert_eq!(leader.proposed_isr(), None);
        assert_eq!(proposals(&leader.on_fetch(3, 100, 3)), vec![vec![1, 3]]);
        assert!(leader.on_tick(LAG_MS * 10).is_empty(), "tick waits too");
    }

    #[test]
    fn a_failed_proposal_can_be_made_again() {
        let mut leader = three_replicas();
        leader.on_fetch(2, 100, 1);
        assert_eq!(proposals(&leader.on_tick(LAG_MS + 1)), vec![vec![1, 2]]);
        leader.on_isr_proposal_failed();
        assert_eq!(proposals(&leader.on_tick(LAG_MS + 1)), vec![vec![1, 2]]);
    }

    #[test]
    fn fetches_from_unknown_nodes_are_ignored() {
        let mut leader = LeaderState::new(1, 5, vec![1, 2], vec![1], 100, 100, 0, config(1));
        assert!(leader.on_fetch(9, 100, 1).is_empty());
        assert!(
            leader.on_fetch(1, 100, 1).is_empty(),
            "the leader does not fetch"
        );
        assert_eq!(leader.follower_log_end(9), None);
        assert_eq!(leader.follower_log_end(2), None);
        assert_eq!(leader.isr(), &[1]);
    }

    #[test]
    fn the_min_isr_check_counts_the_committed_isr() {
        let mut leader = three_replicas();
        assert_eq!(leader.check_min_isr(), Ok(()));
        leader.on_fetch(2, 100, 1);
        leader.on_tick(LAG_MS + 1);
        // A drop in flight does not yet shrink the committed ISR.
        assert_eq!(leader.check_min_isr(), Ok(()));
        leader.on_isr_committed(vec![1]);
        assert_eq!(
            leader.check_min_isr(),
            Err(NotEnoughReplicas {
                isr: 1,
                required: 2
            })
        );
    }

    #[test]
    fn the_leader_is_always_in_the_isr() {
        let mut leader =
            LeaderState::new(1, 5, vec![1, 2, 3], vec![2, 3, 3, 8], 0, 0, 0, config(1));
        assert_eq!(leader.isr(), &[1, 2, 3]);
        leader.on_isr_committed(vec![3]);
        assert_eq!(leader.isr(), &[1, 3]);
        assert_eq!(proposals(&leader.on_tick(LAG_MS + 1)), vec![vec![1]]);
    }

    /// An event for the leader of replicas 1, 2, 3.
    #[derive(Debug, Clone)]
    enum Op {
        Append(u64),
        /// A follower (2 or 3) fetches, its log end moving up by a share of the
        /// gap to the leader's (in percent).
        Fetch(NodeId, u64),
        Tick,
        CommitProposal,
        FailProposal,
        /// The clock moves on by this many milliseconds.
        Wait(u64),
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (1u64..20).prop_map(Op::Append),
            (2u32..4, 0u64..=100).prop_map(|(f, share)| Op::Fetch(f, share)),
            Just(Op::Tick),
            Just(Op::CommitProposal),
            Just(Op::FailProposal),
            (0u64..2 * LAG_MS).prop_map(Op::Wait),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// The high watermark only increases, never passes the leader's log end,
        /// and never passes the log end of any member of the committed or the
        /// proposed ISR; proposals hold the leader and come one at a time.
        #[test]
        fn the_high_watermark_is_safe(ops in proptest::collection::vec(arb_op(), 1..80)) {
            let mut leader = LeaderState::new(1, 1, vec![1, 2, 3], vec![1, 2, 3], 0, 0, 0, config(1));
            let mut ends: BTreeMap<NodeId, u64> = BTreeMap::new();
            let mut now_ms = 0;
            let mut last_hw = 0;
            for op in ops {
                let in_flight = leader.proposed_isr().map(<[NodeId]>::to_vec);
                let actions = match op {
                    Op::Append(n) => leader.on_append(leader.log_end() + n),
                    Op::Fetch(f, share) => {
                        let end = ends.entry(f).or_insert(0);
                        *end += (leader.log_end() - *end) * share / 100;
                        let end = *end;
                        leader.on_fetch(f, end, now_ms)
                    }
                    Op::Tick => leader.on_tick(now_ms),
                    Op::CommitProposal => match &in_flight {
                        Some(isr) => leader.on_isr_committed(isr.clone()),
                        None => Vec::new(),
                    },
                    Op::FailProposal => leader.on_isr_proposal_failed(),
                    Op::Wait(ms) => {
                        now_ms += ms;
                        Vec::new()
                    }
                };
                for action in &actions {
                    match action {
                        Action::AdvanceHighWatermark(hw) => {
                            prop_assert!(*hw > last_hw);
                            last_hw = *hw;
                        }
                        Action::ProposeIsr(isr) => {
                            prop_assert!(in_flight.is_none(), "a second proposal in flight");
                            prop_assert!(isr.contains(&1));
                        }
                    }
                }
                let hw = leader.high_watermark();
                prop_assert_eq!(hw, last_hw);
                prop_assert!(hw <= leader.log_end());
                let members = leader.isr().iter().chain(leader.proposed_isr().unwrap_or(&[]));
                for &m in members.filter(|&&m| m != 1) {
                    prop_assert!(hw <= ends.get(&m).copied().unwrap_or(0),
                        "hw {} above member {}'s log end", hw, m);
                }
            }
        }
    }
}
