//! `GET /v1/cluster` and `GET /v1/topics/{topic}/partitions`: the nodes, and where
//! each partition's leader is.
//!
//! Standalone there is one node, which leads every partition. [`ClusterView`] is the
//! one place that answers "who are the nodes" and "where does this partition live";
//! topic and queue descriptions ask it too, so a cluster fills these answers by
//! replacing this view, not the handlers.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::body::json;
use super::extract::{Caller, Path};
use crate::auth::Resource;
use crate::cluster::layout::LogKind;
use crate::cluster::node::ClusterNode;
use crate::error::{ApiError, ErrorBody};
use crate::names;
use crate::registry::STANDALONE_NODE_ID;

/// What this node knows of the cluster.
#[derive(Clone, Debug)]
pub struct ClusterView {
    /// This node's id.
    node_id: u32,
    /// Where clients reach this node's REST API.
    rest_addr: String,
    /// The cluster member, when the node runs in a cluster.
    node: Option<Arc<ClusterNode>>,
}

/// Where one partition lives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PartitionPlacement {
    /// The partition.
    pub partition: u32,
    /// The node id of its leader.
    pub leader: u32,
    /// Where the leader serves REST (`host:port`).
    pub leader_rest_addr: String,
    /// The node ids holding a copy, the leader first.
    pub replicas: Vec<u32>,
    /// The replicas in sync with the leader.
    pub isr: Vec<u32>,
}

/// One broker node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BrokerNode {
    /// The node id.
    pub id: u32,
    /// Where it serves REST (`host:port`).
    pub rest_addr: String,
    /// Whether it is a live member.
    pub alive: bool,
}

/// The answer of `GET /v1/cluster`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ClusterDescription {
    /// Every known node.
    pub brokers: Vec<BrokerNode>,
    /// The node id of the controller.
    pub controller: u32,
}

/// The answer of `GET /v1/topics/{topic}/partitions`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PartitionsDescription {
    /// One per partition, in order.
    pub partitions: Vec<PartitionPlacement>,
}

impl ClusterView {
    /// A single node serving REST at `rest_addr`.
    pub fn standalone(rest_addr: SocketAddr) -> ClusterView {
        ClusterView {
            node_id: STANDALONE_NODE_ID,
            rest_addr: rest_addr.to_string(),
            node: None,
        }
    }

    /// A member of a cluster.
    pub fn clustered(node: Arc<ClusterNode>) -> ClusterView {
        ClusterView {
            node_id: node.id(),
            rest_addr: node.config().rest_addr.clone(),
            node: Some(node),
        }
    }

    /// The cluster member, if the node runs in a cluster.
    pub fn node(&self) -> Option<&Arc<ClusterNode>> {
        self.node.as_ref()
    }

    /// Every node.
    pub fn describe(&self) -> ClusterDescription {
        if let Some(node) = &self.node {
            return node.with_metadata(|meta| {
                let mut brokers: Vec<BrokerNode> = meta
                    .brokers
                    .values()
                    .map(|b| BrokerNode {
                        id: b.id,
                        rest_addr: b.rest_addr.clone(),
                        alive: true,
                    })
                    .collect();
                // Nodes that hold replicas but are not live members now.
                let mut absent: Vec<u32> = meta
                    .logs
                    .values()
                    .flat_map(|log| log.assignment.replicas.iter().flatten().copied())
                    .filter(|id| !meta.brokers.contains_key(id))
                    .collect();
                absent.sort_unstable();
                absent.dedup();
                brokers.extend(absent.into_iter().map(|id| BrokerNode {
                    id,
                    rest_addr: String::new(),
                    alive: false,
                }));
                ClusterDescription {
                    brokers,
                    controller: meta.controller.unwrap_or(0),
                }
            });
        }
        ClusterDescription {
            brokers: vec![BrokerNode {
                id: self.node_id,
                rest_addr: self.rest_addr.clone(),
                alive: true,
            }],
            controller: self.node_id,
        }
    }

    /// Where each of the `partitions` partitions of a topic or queue lives.
    /// Standalone: here, one replica.
    pub fn placement(
        &self,
        kind: LogKind,
        name: &str,
        partitions: usize,
    ) -> Vec<PartitionPlacement> {
        if let Some(node) = &self.node {
            return node.with_metadata(|meta| {
                (0..partitions as u32)
                    .map(|partition| {
                        let state = meta.partition(kind, name, partition);
                        let leader = state.and_then(|s| s.leader);
                        PartitionPlacement {
                            partition,
                            leader: leader.unwrap_or(0),
                            leader_rest_addr: leader
                                .and_then(|l| meta.brokers.get(&l))
                                .map(|b| b.rest_addr.clone())
                                .unwrap_or_default(),
                            replicas: meta.replicas(kind, name, partition).unwrap_or(&[]).to_vec(),
                            isr: state.map(|s| s.isr.clone()).unwrap_or_default(),
                        }
                    })
                    .collect()
            });
        }
        (0..partitions as u32)
            .map(|partition| PartitionPlacement {
                partition,
                leader: self.node_id,
                leader_rest_addr: self.rest_addr.clone(),
                replicas: vec![self.node_id],
                isr: vec![self.node_id],
            })
            .collect()
    }
}

/// The nodes of the cluster and its controller.
#[utoipa::path(
    get,
    path = "/v1/cluster",
    tag = "cluster",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The nodes", body = ClusterDescription),
        (status = 401, description = "No valid token", body = ErrorBody),
    )
)]
pub async fn describe_cluster(State(app): State<AppState>, _caller: Caller) -> Response {
    json(StatusCode::OK, &app.cluster.describe())
}

/// Where each partition of a topic is led, for clients that go to the leader.
#[utoipa::path(
    get,
    path = "/v1/topics/{topic}/partitions",
    tag = "cluster",
    security(("bearer" = [])),
    params(("topic" = String, Path, description = "The topic")),
    responses(
        (status = 200, description = "The partitions", body = PartitionsDescription),
        (status = 400, description = "Invalid topic name", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "No right on the topic", body = ErrorBody),
        (status = 404, description = "No such topic", body = ErrorBody),
    )
)]
pub async fn topic_partitions(
    State(app): State<AppState>,
    caller: Caller,
    Path(topic): Path<String>,
) -> Result<Response, ApiError> {
    names::validate("topic", &topic)?;
    caller.require_visible(&app.broker, Resource::Topic(&topic))?;
    let topic = app.broker.topic(&topic)?;
    let partitions = app
        .cluster
        .placement(LogKind::Topic, topic.name(), topic.partitions().len());
    Ok(json(StatusCode::OK, &PartitionsDescription { partitions }))
}
