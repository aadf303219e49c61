//! Cluster mode: several nodes, one coordination service (ZooKeeper), partitions
//! replicated from leaders to followers, requests forwarded to leaders.

#[doc(hidden)]
pub mod conformance;
pub mod coord;
pub mod forward;
pub mod memory;
pub mod zk;
