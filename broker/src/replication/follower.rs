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
