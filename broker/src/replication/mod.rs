//! Log replication: which replicas are in sync, where the high watermark is, and
//! what a returning follower must truncate.
//!
//! Everything here is pure: state machines that take events and return what the
//! runtime must do, with time passed in as `now_ms`. The runtime does the I/O
//! (fetches, log truncation, coordination-service writes).

pub mod epochs;
pub mod follower;
pub mod leader;

pub use epochs::{EpochEntry, EpochHistory, EpochHistoryError};
pub use follower::{FollowerState, FollowerStep};
pub use leader::{Action, LeaderConfig, LeaderState, NotEnoughReplicas};

/// A broker node's id in the cluster.
pub type NodeId = u32;
