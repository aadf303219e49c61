//! Queues: competing consumers with leases, acks, nacks and dead letters.
//!
//! - [`spec`]: the settings ([`QueueSpec`]), kept in `queue.json`.
//! - [`state`]: the pure lease and ack state machine of one partition.
//! - [`event`]: its events and their byte format.
//! - [`journal`]: the events persisted in a log of their own, with snapshots.
//! - [`queue`]: the [`Queue`] that puts messages, state and journal together.
//! - [`receipt`]: signed receipts.

pub mod event;
pub mod journal;
#[allow(clippy::module_inception, reason = "the Queue type, one file")]
pub mod queue;
pub mod receipt;
pub mod spec;
pub mod state;

pub use event::{Event, StateSnapshot};
pub use journal::{Journal, SNAPSHOT_EVERY_EVENTS};
pub use queue::{
    DeadLetter, DeadLetterSink, Delivery, PartitionStats, Queue, QueueStats, RECEIPTS_MAX,
    RECEIVE_BYTES_MAX, RECEIVE_MESSAGES_MAX, RedriveTarget, message_id, parse_message_id,
};
pub use receipt::Receipt;
pub use spec::{
    MAX_DELIVERIES_DEFAULT, QueueSpec, VISIBILITY_TIMEOUT_MS_DEFAULT, VISIBILITY_TIMEOUT_MS_MAX,
};
pub use state::{Lease, OUTSTANDING_MAX, Ready, State};
