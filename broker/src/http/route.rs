//! Routing in a cluster: a request about one topic or queue (produce, subscriptions,
//! queue sends, receives and acks, a description) runs on the node that leads it;
//! any other node forwards it there over gRPC and passes the answer back, so clients
//! may call any node. Creates, deletes, lists and cluster queries run where they
//! arrive.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::cluster::forward::{self, ForwardError};
use crate::cluster::layout::LogKind;
use crate::error::{ApiError, ErrorCode};

/// How long a forwarded request may take; above the longest long poll.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a node waits for a leader to be elected before it gives up on a request.
const LEADER_WAIT: Duration = Duration::from_secs(10);

/// The topic or queue a request must be served by its leader for, if any.
pub fn addressed_log(method: &Method, path: &str) -> Option<(LogKind, String)> {
    let mut parts = path.trim_start_matches('/').split('/');
    if parts.next()? != "v1" {
        return None;
    }
    let kind = match parts.next()? {
        "topics" => LogKind::Topic,
        "queues" => LogKind::Queue,
        _ => return None,
    };
    let name = parts.next()?;
    if name.is_empty() {
        return None;
    }
    match parts.next() {
        // Deleting is a cluster-wide change any node makes.
        None if *method == Method::DELETE => None,
        None => Some((kind, name.to_owned())),
        Some("partitions") => None,
        Some(_) => Some((kind, name.to_owned())),
    }
}

fn not_leader(message: impl Into<String>) -> Response {
    ApiError::new(ErrorCode::NotLeader, message).into_response()
}

/// Sends the request to the leader of the topic or queue it addresses, unless this
/// node leads it (or runs standalone).
pub async fn to_leader(State(app): State<AppState>, request: Request, next: Next) -> Response {
    let Some(node) = app.cluster.node() else {
        return next.run(request).await;
    };
    if !node.has_joined() && needs_the_cluster(request.uri().path()) {
        return ApiError::new(
            ErrorCode::Unavailable,
            "this node is still joining the cluster (registering with ZooKeeper and \
             reading its state); retry, or ask another node",
        )
        .into_response();
    }
    let Some((kind, name)) = addressed_log(request.method(), request.uri().path()) else {
        return next.run(request).await;
    };
    if node.is_cut_off() {
        // Waiting for a leader would wait for ZooKeeper: answer now.
        return ApiError::new(
            ErrorCode::Unavailable,
            "this node lost its ZooKeeper session: it leads nothing now and cannot tell \
             who does; retry, or ask another node",
        )
        .into_response();
    }
    let me = node.id();
    let exists = node.with_metadata(|meta| meta.logs.contains_key(&(kind, name.clone())));
    if !exists {
        // The handler answers 404 (or serves what this node has).
        return next.run(request).await;
    }
    let leader_known = |meta: &crate::cluster::node::Metadata| {
        meta.partition(kind, &name, 0)
            .and_then(|s| s.leader)
            .is_some_and(|l| meta.brokers.contains_key(&l))
    };
    if node.home(kind, &name).is_none() || !node.with_metadata(leader_known) {
        node.nudge();
        node.wait_for(LEADER_WAIT, leader_known).await;
    }
    let hops = forward::forwarded_hops(request.headers());
    match node.home(kind, &name) {
        Some(home) if home == me => {
            until_leading(node, kind, &name).await;
            return next.run(request).await;
        }
        None => return not_leader(format!("{} {name} has no leader now; retry", kind.noun())),
        Some(_) if hops > 0 => {
            return not_leader(format!(
                "this node does not lead {} {name} (any more); retry",
                kind.noun()
            ));
        }
        Some(_) => {}
    }
    let limit = app.broker.config.max_body_bytes;
    // The router's own (matched path, path parameters), should the request be
    // served here after all.
    let extensions = request.extensions().clone();
    let envelope = match forward::request_to_proto(request, hops, limit).await {
        Ok(envelope) => envelope,
        Err(ForwardError::BodyTooLarge { .. }) => {
            return ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!("the body is larger than {limit} bytes"),
            )
            .into_response();
        }
        Err(error) => return ApiError::bad_request(error.to_string()).into_response(),
    };
    // Once more after a failure: the leader may have changed meanwhile.
    for attempt in 0..2 {
        let target = node
            .home(kind, &name)
            .and_then(|home| Some((home, node.grpc_addr(home)?)));
        let Some((home, addr)) = target else {
            break;
        };
        if home == me {
            // The leadership moved here while the request waited: serve it here.
            let Ok(mut local) = forward::proto_to_request(envelope) else {
                return not_leader(format!(
                    "the leadership of {} {name} moved here; retry",
                    kind.noun()
                ));
            };
            *local.extensions_mut() = extensions;
            until_leading(node, kind, &name).await;
            return next.run(local).await;
        }
        // A leader that stopped answering (frozen, or cut off by the network) is
        // replaced within a session timeout: stop waiting for it then.
        let leader_moved = node.wait_for(FORWARD_TIMEOUT, |meta| {
            meta.partition(kind, &name, 0).and_then(|s| s.leader) != Some(home)
        });
        let forwarded = node.peers.forward(&addr, envelope.clone(), FORWARD_TIMEOUT);
        let answer = tokio::select! {
            answer = forwarded => answer,
            true = leader_moved => {
                tracing::debug!(home, "the leader changed while a forwarded request waited");
                continue;
            }
        };
        match answer {
            Ok(answer) if !is_not_leader(&answer) || attempt == 1 => {
                return forward::proto_to_response(answer);
            }
            Ok(_) => {}
            Err(error) => {
                tracing::debug!(%error, home, "forwarding failed");
                if attempt == 1 {
                    return not_leader(format!(
                        "the leader of {} {name} cannot be reached: {error}",
                        kind.noun()
                    ));
                }
            }
        }
        node.nudge();
        let before = node.home(kind, &name);
        node.wait_for(Duration::from_secs(3), |meta| {
            meta.partition(kind, &name, 0).and_then(|s| s.leader) != before
        })
        .await;
    }
    not_leader(format!(
        "{} {name} has no reachable leader now; retry",
        kind.noun()
    ))
}

/// Whether a request needs the cluster's state: everything under `/v1/` but a token
/// (users are kept on every node).
pub fn needs_the_cluster(path: &str) -> bool {
    path.starts_with("/v1/") && path != "/v1/auth/token"
}

/// Waits (up to [`LEADER_WAIT`]) until this node, elected, has taken over the log
/// (consumer state, idempotency keys), rather than serve from a state not restored
/// yet.
async fn until_leading(node: &crate::cluster::node::ClusterNode, kind: LogKind, name: &str) {
    let deadline = tokio::time::Instant::now() + LEADER_WAIT;
    while !leads_locally(node, kind, name) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether this node takes writes on every partition of the log that the cluster
/// says it leads (false while it is still taking one over).
fn leads_locally(node: &crate::cluster::node::ClusterNode, kind: LogKind, name: &str) -> bool {
    let me = node.id();
    let led: Vec<u32> = node.with_metadata(|meta| {
        meta.logs
            .get(&(kind, name.to_owned()))
            .map(|log| {
                log.states
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.as_ref().is_some_and(|(s, _)| s.leader == Some(me)))
                    .map(|(p, _)| p as u32)
                    .collect()
            })
            .unwrap_or_default()
    });
    led.iter().all(|p| {
        node.local_partition(kind, name, *p)
            .is_none_or(|part| part.replica.leader_epoch().is_some())
    })
}

fn is_not_leader(answer: &proto::v1::ForwardResponse) -> bool {
    answer.status == 503
        && std::str::from_utf8(&answer.body).is_ok_and(|b| b.contains("\"not_leader\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_about_one_log_go_to_its_leader() {
        let t = |m: Method, p: &str| addressed_log(&m, p);
        let topic = Some((LogKind::Topic, "orders".to_owned()));
        assert_eq!(t(Method::POST, "/v1/topics/orders/messages"), topic);
        assert_eq!(
            t(Method::GET, "/v1/topics/orders/subscriptions/s/messages"),
            topic
        );
        assert_eq!(t(Method::GET, "/v1/topics/orders"), topic);
        assert_eq!(t(Method::DELETE, "/v1/topics/orders"), None);
        assert_eq!(t(Method::GET, "/v1/topics/orders/partitions"), None);
        assert_eq!(t(Method::POST, "/v1/topics"), None);
        assert_eq!(t(Method::GET, "/v1/cluster"), None);
        assert_eq!(
            t(Method::POST, "/v1/queues/jobs/ack"),
            Some((LogKind::Queue, "jobs".to_owned()))
        );
    }
}
