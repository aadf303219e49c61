//! The follower's side of one partition: where to truncate when it starts
//! following a leader, then where to fetch from (KIP-101 and KIP-279).
//!
//! [`FollowerState`] is a pure state machine driven by the runtime:
//!
//! 1. [`FollowerState::new`] returns [`FollowerStep::AskEpochEnd`] with the
//!    follower's latest epoch (or [`FollowerStep::Fetch`] for a log with no
//!    epochs);
//! 2. the runtime sends OffsetsForLeaderEpoch to the leader, which answers with
//!    [`EpochHistory::end_offset_for`] over its own log, and passes the answer to
//!    [`FollowerState::on_epoch_end`], which returns [`FollowerStep::Truncate`];
//! 3. the runtime truncates the log and its [`EpochHistory`]
//!    ([`EpochHistory::truncate_from`]) and calls [`FollowerState::on_truncated`],
//!    which returns [`FollowerStep::Fetch`], or another
//!    [`FollowerStep::AskEpochEnd`] when the leader answered with an epoch this
//!    log does not have (each such round asks a strictly older epoch, so the
//!    rounds end);
//! 4. on each fetch answer the runtime appends, assigns the batches' epochs to
//!    its history, and calls [`FollowerState::on_fetched`].
//!
//! A fetch answer with a fenced or unknown leader epoch, or from a node that is
//! not the leader, means this state is stale: the runtime re-reads the partition
//! metadata and starts a new [`FollowerState`]. Nothing here models it.

use super::NodeId;
use super::epochs::EpochHistory;

/// What the runtime must do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FollowerStep {
    /// Ask the leader where `epoch` ends in its log (OffsetsForLeaderEpoch).
    AskEpochEnd {
        /// The epoch to ask about.
        epoch: u32,
    },
    /// Truncate the local log and its epoch history to `to` (exclusive); a
    /// truncation at or above the log end changes nothing.
    Truncate {
        /// The new log end.
        to: u64,
    },
    /// Fetch from the leader starting at `from`.
    Fetch {
        /// The first offset to fetch: the local log end.
        from: u64,
    },
}

/// Where the follower is in the truncate-then-fetch sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the leader's answer about `epoch`.
    AwaitingEpochEnd { epoch: u32 },
    /// Waiting for the truncation to `to`; then ask about `then_ask`, or fetch.
    Truncating { to: u64, then_ask: Option<u32> },
    /// Fetching.
    Fetching,
}

/// One partition's replication state on a follower, for one leader epoch.
#[derive(Debug, Clone)]
pub struct FollowerState {
    /// The leader followed.
    leader: NodeId,
    /// The leader's epoch.
    leader_epoch: u32,
    /// The offset to truncate to when the leader has nothing in common with this
    /// log; set by the runtime from its log.
    log_start: u64,
    /// Records below it are committed, as far as this follower knows.
    high_watermark: u64,
    /// The step in progress.
    phase: Phase,
}

impl FollowerState {
    /// Starts following `leader` at `leader_epoch`, from a log ending at
    /// `log_end` whose epochs are `history`.
    ///
    /// With no epochs (an empty log) the follower fetches at once; otherwise it
    /// first asks where its latest epoch ends in the leader's log. The log start
    /// is 0 until [`FollowerState::set_log_start`]; the high watermark starts at 0.
    pub fn new(
        leader: NodeId,
        leader_epoch: u32,
        history: &EpochHistory,
        log_end: u64,
    ) -> (FollowerState, FollowerStep) {
        let phase = match history.latest() {
            None => Phase::Fetching,
            Some((epoch, _)) => Phase::AwaitingEpochEnd { epoch },
        };
        let state = FollowerState {
            leader,
            leader_epoch,
            log_start: 0,
            high_watermark: 0,
            phase,
        };
        let step = state.current_step(log_end);
        (state, step)
    }

    /// Sets the offset to truncate to when the leader has nothing in common with
    /// this log: the local log start. Defaults to 0.
    pub fn set_log_start(&mut self, log_start: u64) {
        self.log_start = log_start;
    }

    /// The leader's answer to [`FollowerStep::AskEpochEnd`]: `Some((epoch,
    /// end_offset))`, the largest epoch at or below the one asked in the leader's
    /// log and where it ends there; `None` when the leader has no epoch at or
    /// below it (Kafka's UNDEFINED_EPOCH_OFFSET). `history` and `log_end` are the
    /// local log's.
    ///
    /// - The answer's epoch is in this log too: truncate to where either log
    ///   leaves it, `min(leader end, own end for it, log_end)`; then fetch.
    /// - It is not: truncate to where this log's largest older epoch ends, then
    ///   ask again about that epoch.
    /// - No answer, an answer above the epoch asked (the leader broke the
    ///   protocol), or nothing in this log at or below the answer: truncate to
    ///   the log start; then fetch.
    ///
    /// Outside the waiting step the answer is stale and ignored; the current
    /// step is returned.
    pub fn on_epoch_end(
        &mut self,
        leader_answer: Option<(u32, u64)>,
        history: &EpochHistory,
        log_end: u64,
    ) -> FollowerStep {
        let Phase::AwaitingEpochEnd { epoch: asked } = self.phase else {
            return self.current_step(log_end);
        };
        let to_log_start = Phase::Truncating {
            to: self.log_start.min(log_end),
            then_ask: None,
        };
        self.phase = match leader_answer {
            Some((answer, leader_end)) if answer <= asked => {
                match history.end_offset_for(answer, log_end) {
                    Some((own, own_end)) if own == answer => Phase::Truncating {
                        to: leader_end.min(own_end).min(log_end),
                        then_ask: None,
                    },
                    Some((own, own_end)) => Phase::Truncating {
                        to: own_end.min(log_end),
                        then_ask: Some(own),
                    },
                    None => to_log_start,
                }
            }
            _ => to_log_start,
        };
        self.current_step(log_end)
    }

    /// The runtime truncated the log as asked; it now ends at `log_end`.
    /// Returns the fetch, or the next question when another round is needed.
    /// Outside the truncation step the current step is returned.
    pub fn on_truncated(&mut self, log_end: u64) -> FollowerStep {
        if let Phase::Truncating { then_ask, .. } = self.phase {
            self.phase = match then_ask {
                Some(epoch) => Phase::AwaitingEpochEnd { epoch },
                None => Phase::Fetching,
            };
        }
        self.current_step(log_end)
    }

    /// A fetch answer was appended; the log now ends at `log_end_after_append`.
    /// Returns the follower's high watermark: the leader's, capped at the local
    /// log end, never lower than before.
    pub fn on_fetched(&mut self, leader_high_watermark: u64, log_end_after_append: u64) -> u64 {
        let candidate = leader_high_watermark.min(log_end_after_append);
        self.high_watermark = self.high_watermark.max(candidate);
        self.high_watermark
    }

    /// The step in progress, for a log ending at `log_end`.
    pub fn current_step(&self, log_end: u64) -> FollowerStep {
        match self.phase {
            Phase::AwaitingEpochEnd { epoch } => FollowerStep::AskEpochEnd { epoch },
            Phase::Truncating { to, .. } => FollowerStep::Truncate { to },
            Phase::Fetching => FollowerStep::Fetch { from: log_end },
        }
    }

    /// The leader followed.
    pub fn leader(&self) -> NodeId {
        self.leader
    }

    /// The leader's epoch.
    pub fn leader_epoch(&self) -> u32 {
        self.leader_epoch
    }

    /// Records below it are committed, as far as this follower knows.
    pub fn high_watermark(&self) -> u64 {
        self.high_watermark
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn history(entries: &[(u32, u64)]) -> EpochHistory {
        let mut h = EpochHistory::new();
        for &(epoch, start) in entries {
            h.assign(epoch, start);
        }
        h
    }

    #[test]
    fn an_empty_log_fetches_at_once() {
        let (state, step) = FollowerState::new(1, 3, &EpochHistory::new(), 0);
        assert_eq!(step, FollowerStep::Fetch { from: 0 });
        assert_eq!((state.leader(), state.leader_epoch()), (1, 3));
    }

    #[test]
    fn a_log_with_epochs_asks_about_its_latest() {
        let h = history(&[(1, 0), (2, 10)]);
        let (_, step) = FollowerState::new(1, 3, &h, 15);
        assert_eq!(step, FollowerStep::AskEpochEnd { epoch: 2 });
    }

    #[test]
    fn the_same_epoch_truncates_to_the_shorter_log() {
        let h = history(&[(1, 0), (2, 10)]);
        let (mut state, _) = FollowerState::new(1, 3, &h, 15);
        let step = state.on_epoch_end(Some((2, 12)), &h, 15);
        assert_eq!(step, FollowerStep::Truncate { to: 12 });
        assert_eq!(state.on_truncated(12), FollowerStep::Fetch { from: 12 });

        let (mut longer, _) = FollowerState::new(1, 3, &h, 15);
        assert_eq!(
            longer.on_epoch_end(Some((2, 20)), &h, 15),
            FollowerStep::Truncate { to: 15 }
        );
        assert_eq!(longer.on_truncated(15), FollowerStep::Fetch { from: 15 });
    }

    #[test]
    fn an_older_epoch_both_have_truncates_to_where_the_first_leaves_it() {
        // We wrote epoch 2 from 10 to 15 as leader; the new leader has epoch 1
        // up to 12, then its own epoch 3.
        let h = history(&[(1, 0), (2, 10)]);
        let (mut state, _) = FollowerState::new(1, 3, &h, 15);
        assert_eq!(
            state.on_epoch_end(Some((1, 12)), &h, 15),
            FollowerStep::Truncate { to: 10 }
        );
        assert_eq!(state.on_truncated(10), FollowerStep::Fetch { from: 10 });
    }

    #[test]
    fn an_epoch_we_lack_takes_another_round() {
        // Ours: epoch 1 on 0..5, epoch 3 on 5..8. Leader: epoch 1 on 0..4,
        // epoch 2 on 4..6, epoch 4 from 6. It answers (2, 6) for epoch 3.
        let mut h = history(&[(1, 0), (3, 5)]);
        let (mut state, _) = FollowerState::new(1, 4, &h, 8);
        assert_eq!(
            state.on_epoch_end(Some((2, 6)), &h, 8),
            FollowerStep::Truncate { to: 5 }
        );
        h.truncate_from(5);
        assert_eq!(
            state.on_truncated(5),
            FollowerStep::AskEpochEnd { epoch: 1 }
        );
        assert_eq!(
            state.on_epoch_end(Some((1, 4)), &h, 5),
            FollowerStep::Truncate { to: 4 }
        );
        assert_eq!(state.on_truncated(4), FollowerStep::Fetch { from: 4 });
    }

    #[test]
    fn no_common_epoch_truncates_to_the_log_start() {
        let h = history(&[(2, 40), (3, 50)]);
        let (mut state, _) = FollowerState::new(1, 5, &h, 60);
        state.set_log_start(40);
        assert_eq!(
            state.on_epoch_end(None, &h, 60),
            FollowerStep::Truncate { to: 40 }
        );
        assert_eq!(state.on_truncated(40), FollowerStep::Fetch { from: 40 });

        // The leader's answer is older than anything in this log.
        let (mut older, _) = FollowerState::new(1, 5, &h, 60);
        assert_eq!(
            older.on_epoch_end(Some((1, 45)), &h, 60),
            FollowerStep::Truncate { to: 0 }
        );
    }

    #[test]
    fn an_answer_above_the_asked_epoch_truncates_to_the_log_start() {
        let h = history(&[(1, 0), (2, 10)]);
        let (mut state, _) = FollowerState::new(1, 5, &h, 15);
        assert_eq!(
            state.on_epoch_end(Some((4, 12)), &h, 15),
            FollowerStep::Truncate { to: 0 }
        );
    }

    #[test]
    fn stale_answers_and_truncations_are_ignored() {
        let (mut state, _) = FollowerState::new(1, 3, &EpochHistory::new(), 7);
        let h = history(&[(1, 0)]);
        assert_eq!(
            state.on_epoch_end(Some((1, 2)), &h, 7),
            FollowerStep::Fetch { from: 7 }
        );
        assert_eq!(state.on_truncated(7), FollowerStep::Fetch { from: 7 });
    }

    #[test]
    fn the_follower_high_watermark_is_capped_and_monotonic() {
        let (mut state, _) = FollowerState::new(1, 3, &EpochHistory::new(), 0);
        assert_eq!(state.on_fetched(10, 6), 6);
        assert_eq!(state.on_fetched(10, 12), 10);
        assert_eq!(state.on_fetched(8, 12), 10);
        assert_eq!(state.high_watermark(), 10);
    }

    /// One replica's log as the leader epoch of each offset (offset = index), and
    /// its epoch history.
    #[derive(Debug, Clone, Default)]
    struct Replica {
        log: Vec<u32>,
        history: EpochHistory,
    }

    /// A step of the cluster's history.
    #[derive(Debug, Clone)]
    enum Op {
        /// This replica becomes leader of a new epoch and appends this many.
        Elect(usize, usize),
        /// The leader appends this many.
        Append(usize),
        /// This replica follows the leader, then copies up to this many.
        Sync(usize, usize),
    }

    const REPLICAS: usize = 3;

    fn arb_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..REPLICAS, 0usize..4).prop_map(|(r, n)| Op::Elect(r, n)),
            (1usize..4).prop_map(Op::Append),
            (0..REPLICAS, 0usize..6).prop_map(|(r, n)| Op::Sync(r, n)),
        ]
    }

    fn common_prefix(a: &[u32], b: &[u32]) -> usize {
        a.iter().zip(b).take_while(|(x, y)| x == y).count()
    }

    /// Runs the follower's steps against the leader until it fetches; returns
    /// the fetch offset. The number of rounds is bounded by the epochs in the
    /// follower's history.
    fn reconcile(
        follower: &mut Replica,
        leader: &Replica,
        epoch: u32,
    ) -> Result<u64, TestCaseError> {
        let leader_end = leader.log.len() as u64;
        let (mut state, mut step) =
            FollowerState::new(0, epoch, &follower.history, follower.log.len() as u64);
        let rounds_max = 2 * follower.history.entries().len() + 2;
        for _ in 0..rounds_max {
            step = match step {
                FollowerStep::AskEpochEnd { epoch: asked } => {
                    let answer = leader.history.end_offset_for(asked, leader_end);
                    state.on_epoch_end(answer, &follower.history, follower.log.len() as u64)
                }
                FollowerStep::Truncate { to } => {
                    let to = usize::try_from(to).map_err(|e| TestCaseError::fail(e.to_string()))?;
                    follower.log.truncate(to);
                    follower.history.truncate_from(to as u64);
                    state.on_truncated(follower.log.len() as u64)
                }
                FollowerStep::Fetch { from } => return Ok(from),
            };
        }
        Err(TestCaseError::fail(format!(
            "no fetch after {rounds_max} steps"
        )))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// After reconciling, a follower's log is a prefix of the leader's, and no
        /// shorter than what the two logs had in common.
        #[test]
        fn a_follower_truncates_to_exactly_the_common_prefix(
            ops in proptest::collection::vec(arb_op(), 1..40)
        ) {
            let mut replicas = vec![Replica::default(); REPLICAS];
            let mut leader = 0;
            let mut epoch = 1;
            replicas[leader].history.assign(epoch, 0);
            for op in ops {
                match op {
                    Op::Elect(r, n) => {
                        epoch += 1;
                        leader = r;
                        let new = &mut replicas[leader];
                        new.history.assign(epoch, new.log.len() as u64);
                        new.log.extend(std::iter::repeat_n(epoch, n));
                    }
                    Op::Append(n) => replicas[leader].log.extend(std::iter::repeat_n(epoch, n)),
                    Op::Sync(f, n) => {
                        if f == leader {
                            continue;
                        }
                        let source = replicas[leader].clone();
                        let follower = &mut replicas[f];
                        let common = common_prefix(&follower.log, &source.log);
                        let from = reconcile(follower, &source, epoch)?;
                        prop_assert_eq!(from, follower.log.len() as u64);
                        prop_assert!(source.log.starts_with(&follower.log),
                            "follower {:?} is not a prefix of leader {:?}", follower.log, source.log);
                        prop_assert!(follower.log.len() >= common,
                            "truncated to {} below the common prefix {}", follower.log.len(), common);
                        for (offset, &e) in source.log.iter().enumerate().skip(follower.log.len()).take(n) {
                            follower.history.assign(e, offset as u64);
                            follower.log.push(e);
                        }
                    }
                }
            }
        }
    }
}
