//! What the cluster keeps in the coordination service, and where (paths relative to
//! the chroot, `/mom` by default):
//!
//! | path | mode | data |
//! | --- | --- | --- |
//! | `/brokers/<id>` | ephemeral | [`BrokerRegistration`]: the node's addresses |
//! | `/controller` | ephemeral | [`ControllerRecord`]: the elected controller |
//! | `/topics/<name>`, `/queues/<name>` | persistent | [`LogAssignment`]: settings and replicas |
//! | `/topics/<name>/partitions/<p>` | persistent | [`PartitionState`]: leader, epoch, in-sync replicas |
//! | `/topics/<name>/subscriptions/<sub>` | persistent | [`SubscriptionRecord`]: committed offsets |
//! | `/auth/users` | persistent | the users table: the `users.json` document, with argon2 hashes |
//!
//! Every value is JSON. A partition's state changes only by a conditional write on
//! the version its writer read: the controller when it elects a leader, the leader
//! when it shrinks or expands the in-sync set.

use serde::{Deserialize, Serialize};

use crate::replication::NodeId;

/// The parent of the member nodes.
pub const BROKERS: &str = "/brokers";
/// The controller's ephemeral node.
pub const CONTROLLER: &str = "/controller";
/// The parent of what the cluster shares about users.
pub const AUTH: &str = "/auth";
/// The cluster's users table (see [`super::auth_sync`]).
pub const AUTH_USERS: &str = "/auth/users";

/// Whether a replicated log belongs to a topic or a queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogKind {
    /// A topic.
    Topic,
    /// A queue.
    Queue,
}

impl LogKind {
    /// Both kinds.
    pub const ALL: [LogKind; 2] = [LogKind::Topic, LogKind::Queue];

    /// The kind's name in messages.
    pub fn noun(self) -> &'static str {
        match self {
            LogKind::Topic => "topic",
            LogKind::Queue => "queue",
        }
    }

    /// The parent path of this kind's logs.
    pub fn root(self) -> &'static str {
        match self {
            LogKind::Topic => "/topics",
            LogKind::Queue => "/queues",
        }
    }

    /// The kind as the protocol names it.
    pub fn to_proto(self) -> i32 {
        match self {
            LogKind::Topic => proto_kind::TOPIC,
            LogKind::Queue => proto_kind::QUEUE,
        }
    }

    /// The kind a protocol value names.
    pub fn from_proto(value: i32) -> Option<LogKind> {
        match value {
            proto_kind::TOPIC => Some(LogKind::Topic),
            proto_kind::QUEUE => Some(LogKind::Queue),
            _ => None,
        }
    }
}

/// The `LogKind` numbers of `cluster.proto`.
mod proto_kind {
    pub const TOPIC: i32 = 1;
    pub const QUEUE: i32 = 2;
}

/// The path of a member's registration.
pub fn broker_path(id: NodeId) -> String {
    format!("{BROKERS}/{id}")
}

/// The path of a topic's or queue's assignment.
pub fn log_path(kind: LogKind, name: &str) -> String {
    format!("{}/{name}", kind.root())
}

/// The parent of a log's partition states.
pub fn partitions_path(kind: LogKind, name: &str) -> String {
    format!("{}/{name}/partitions", kind.root())
}

/// The path of one partition's state.
pub fn partition_path(kind: LogKind, name: &str, partition: u32) -> String {
    format!("{}/{name}/partitions/{partition}", kind.root())
}

/// The parent of a topic's subscriptions.
pub fn subscriptions_path(topic: &str) -> String {
    format!("/topics/{topic}/subscriptions")
}

/// The path of a subscription's record.
pub fn subscription_path(topic: &str, sub: &str) -> String {
    format!("/topics/{topic}/subscriptions/{sub}")
}

/// A subscription as the cluster keeps it, so the node that takes a topic over
/// resumes it where it was committed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionRecord {
    /// Whether pulls commit.
    pub auto_commit: bool,
    /// The committed offset of each partition.
    pub committed: Vec<u64>,
    /// The leader epoch of the topic's partition 0 under which it was last
    /// written: a node that takes the topic over writes its own, and a deposed
    /// leader, whose epoch is older, may no longer write it (0 in records written
    /// before epochs were kept).
    #[serde(default)]
    pub epoch: u32,
}

/// A member's registration: who it is and where to reach it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRegistration {
    /// The node id.
    pub id: NodeId,
    /// Where it serves REST (`host:port`).
    pub rest_addr: String,
    /// Where it serves gRPC (`host:port`).
    pub grpc_addr: String,
}

/// The elected controller.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControllerRecord {
    /// Its node id.
    pub id: NodeId,
}

/// A topic or queue as created: its settings (the create request as each node's
/// registry takes it) and where each partition's replicas are.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogAssignment {
    /// Topic or queue.
    pub kind: LogKind,
    /// The settings, as the node's catalog stores them (`TopicSpec` or `QueueSpec`).
    pub spec: serde_json::Value,
    /// Per partition, the nodes that hold a copy; the first is the preferred leader.
    pub replicas: Vec<Vec<NodeId>>,
    /// Set when a delete has begun: every node then takes the log as gone (the
    /// controller no longer writes its partitions' states, each node removes its
    /// copy) while the delete removes what the coordination service holds of it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleting: bool,
}

/// A partition's leadership.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    /// The leader, `None` while no in-sync replica is alive.
    pub leader: Option<NodeId>,
    /// Grows with every change of leader; batches carry the epoch they were written
    /// in.
    pub leader_epoch: u32,
    /// The replicas known to have every acknowledged message; the leader is one.
    pub isr: Vec<NodeId>,
}

/// Why replicas cannot be placed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("replication_factor {wanted} needs {wanted} live nodes, and {live} are live")]
pub struct TooFewNodes {
    /// Replicas asked for.
    pub wanted: u32,
    /// Live nodes.
    pub live: usize,
}

/// Places `partitions` partitions with `replication_factor` replicas each over the
/// `live` nodes: every partition of one log gets the same nodes, those at `start`,
/// `start + 1`, ... so one node leads the whole log (it serves the log's
/// subscriptions and queue state), and logs created in turn spread their leaders
/// round robin.
pub fn assign_replicas(
    partitions: u32,
    replication_factor: u32,
    live: &[NodeId],
    start: usize,
) -> Result<Vec<Vec<NodeId>>, TooFewNodes> {
    let mut nodes = live.to_vec();
    nodes.sort_unstable();
    nodes.dedup();
    let n = nodes.len();
    if replication_factor == 0 || replication_factor as usize > n {
        return Err(TooFewNodes {
            wanted: replication_factor,
            live: n,
        });
    }
    Ok((0..partitions as usize)
        .map(|_| {
            (0..replication_factor as usize)
                .filter_map(|i| nodes.get((start + i) % n).copied())
                .collect()
        })
        .collect())
}

/// Places a log beside another whose replicas are `order` (its leader first): the
/// same nodes in the same order as far as they are live and `replication_factor`
/// goes, then other live nodes, so both logs have the same first choice of leader
/// and, while their in-sync sets agree, elect the same one after a failover.
pub fn assign_replicas_beside(
    partitions: u32,
    replication_factor: u32,
    live: &[NodeId],
    order: &[NodeId],
) -> Result<Vec<Vec<NodeId>>, TooFewNodes> {
    let mut rest = live.to_vec();
    rest.sort_unstable();
    rest.dedup();
    let mut nodes: Vec<NodeId> = order.iter().copied().filter(|n| rest.contains(n)).collect();
    rest.retain(|n| !nodes.contains(n));
    nodes.extend(rest);
    if replication_factor == 0 || replication_factor as usize > nodes.len() {
        return Err(TooFewNodes {
            wanted: replication_factor,
            live: nodes.len(),
        });
    }
    nodes.truncate(replication_factor as usize);
    Ok(vec![nodes; partitions as usize])
}

/// `replicas` with `leader` moved to the front (when it is one of them).
pub fn leader_first(replicas: &[NodeId], leader: Option<NodeId>) -> Vec<NodeId> {
    let mut order = replicas.to_vec();
    if let Some(at) = leader.and_then(|l| order.iter().position(|r| *r == l)) {
        let leader = order.remove(at);
        order.insert(0, leader);
    }
    order
}

/// The leader to elect for a partition whose leader is gone or not alive: the first
/// replica, in assignment order, that is in the in-sync set and alive. `None` if
/// there is none (the partition stays offline rather than lose acknowledged data).
pub fn elect_leader(replicas: &[NodeId], isr: &[NodeId], alive: &[NodeId]) -> Option<NodeId> {
    replicas
        .iter()
        .copied()
        .find(|r| isr.contains(r) && alive.contains(r))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_spread_round_robin() {
        let placed = assign_replicas(4, 2, &[3, 1, 2], 0).unwrap();
        assert_eq!(placed, vec![vec![1, 2]; 4]);
        let next = assign_replicas(2, 2, &[3, 1, 2], 2).unwrap();
        assert_eq!(next, vec![vec![3, 1]; 2]);
        let shifted = assign_replicas(1, 3, &[1, 2, 3], 1).unwrap();
        assert_eq!(shifted, vec![vec![2, 3, 1]]);
    }

    #[test]
    fn a_log_placed_beside_another_has_its_nodes_in_its_order() {
        let order = leader_first(&[2, 3, 1], Some(3));
        assert_eq!(order, [3, 2, 1]);
        assert_eq!(
            assign_replicas_beside(2, 3, &[1, 2, 3], &order).unwrap(),
            vec![vec![3, 2, 1]; 2]
        );
        assert_eq!(
            assign_replicas_beside(1, 2, &[1, 2, 3], &order).unwrap(),
            vec![vec![3, 2]]
        );
        // More replicas than the other log has, or one of its nodes gone: the live
        // nodes after them.
        assert_eq!(
            assign_replicas_beside(1, 3, &[1, 2, 3, 4], &[3]).unwrap(),
            vec![vec![3, 1, 2]]
        );
        assert_eq!(
            assign_replicas_beside(1, 2, &[1, 2, 4], &[3, 2]).unwrap(),
            vec![vec![2, 1]]
        );
        assert_eq!(
            assign_replicas_beside(1, 4, &[1, 2, 3], &order),
            Err(TooFewNodes { wanted: 4, live: 3 })
        );
    }

    #[test]
    fn too_few_nodes_is_refused() {
        assert_eq!(
            assign_replicas(1, 3, &[1, 2], 0),
            Err(TooFewNodes { wanted: 3, live: 2 })
        );
        assert!(assign_replicas(1, 0, &[1], 0).is_err());
    }

    #[test]
    fn leader_comes_from_live_in_sync_replicas() {
        assert_eq!(elect_leader(&[1, 2, 3], &[1, 2, 3], &[2, 3]), Some(2));
        assert_eq!(elect_leader(&[1, 2, 3], &[1, 3], &[2, 3]), Some(3));
        assert_eq!(elect_leader(&[1, 2, 3], &[1], &[2, 3]), None);
    }

    #[test]
    fn state_round_trips_as_json() {
        let state = PartitionState {
            leader: Some(2),
            leader_epoch: 7,
            isr: vec![2, 3],
        };
        let json = serde_json::to_vec(&state).unwrap();
        assert_eq!(
            serde_json::from_slice::<PartitionState>(&json).unwrap(),
            state
        );
    }
}
