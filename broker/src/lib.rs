//! The broker: topics (publish/subscribe) and queues (competing consumers) over a
//! REST API with JWT authentication, stored in `log_engine` logs.
#![deny(missing_docs)]

pub mod auth;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod error;
pub mod fsutil;
pub mod http;
pub mod idempotency;
pub mod message;
pub mod names;
pub mod partition;
pub mod partitioner;
pub mod produce;
pub mod queue;
pub mod registry;
pub mod replication;
pub mod server;
pub mod subscription;
pub mod topic;
