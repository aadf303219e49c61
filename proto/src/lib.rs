//! `proto`: the node-to-node protocol of a broker cluster, generated from
//! `proto/mom/v1/cluster.proto`.
//!
//! Three services, all served by every node on its gRPC address:
//!
//! - `Replication`: a follower's fetch session with the leader of a partition
//!   ([`v1::replication_client::ReplicationClient`], [`v1::replication_server`]),
//!   and the epoch-end query a follower uses to truncate a divergent tail.
//! - `Forward`: runs a REST request on the node that leads the partition it
//!   addresses ([`v1::forward_client::ForwardClient`], [`v1::forward_server`]).
//! - `DeadLetters`: takes a queue's exhausted messages on the node that leads its
//!   dead-letter queue ([`v1::dead_letters_client::DeadLettersClient`],
//!   [`v1::dead_letters_server`]).
//!
//! The code is generated at build time without `protoc`: `protox` parses the files
//! and `tonic-prost-build` writes the messages, clients and servers.
#![deny(missing_docs)]

/// Package `mom.v1`: messages, clients and servers of the cluster protocol.
#[allow(missing_docs, clippy::all, clippy::pedantic, clippy::nursery)]
pub mod v1 {
    tonic::include_proto!("mom.v1");
}
