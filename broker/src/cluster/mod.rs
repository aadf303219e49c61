//! Cluster mode: several nodes, one coordination service (ZooKeeper), partitions
//! replicated from leaders to followers, requests forwarded to leaders.

pub mod auth_sync;
#[doc(hidden)]
pub mod conformance;
pub mod coord;
pub mod dead_letters;
pub mod fetcher;
pub mod forward;
pub mod layout;
pub mod memory;
pub mod node;
pub mod replica;
pub mod replication_service;
pub mod zk;
