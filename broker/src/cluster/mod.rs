//! Cluster mode: several nodes, one coordination service (ZooKeeper), partitions
//! replicated from leaders to followers, requests forwarded to leaders.

pub mod coord;
pub mod forward;
