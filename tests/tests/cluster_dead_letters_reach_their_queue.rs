//! Invariant: in a cluster, a message that used up its deliveries reaches the
//! dead-letter queue, and a redrive brings it back, also after the node that led
//! both queues was killed. A queue is placed beside the dead-letter queue it names
//! (same nodes, same order), so one node leads both and appends the dead letters.
//!
//! Three brokers and a real ZooKeeper; replication factor 3; the dead-letter queue
//! is created first, as an operator would, which puts the queue's own round-robin
//! turn on another node, and the queue right after through another node.

use std::time::Duration;

use anyhow::ensure;
use serde_json::{Value, json};
use system_tests::dead_letters::{exhaust, queue_leader};
use system_tests::{Cluster, scenario};

const QUEUE: &str = "jobs";
const DLQ: &str = "jobs.dlq";
/// The lease of a delivery; one delivery per message.
const LEASE_MS: u64 = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_reach_their_queue() -> anyhow::Result<()> {
    scenario(
        "cluster_dead_letters_reach_their_queue",
        Duration::from_secs(240),
        async {
            let mut cluster = Cluster::start(3).await?;
            let api = cluster.node(1).api().clone();
            api.create_queue(DLQ, json!({"replication_factor": 3}))
                .await?;
            // Right after, through another node, whose view may not have it yet.
            cluster
                .node(2)
                .api()
                .create_queue(
                    QUEUE,
                    json!({"replication_factor": 3, "max_deliveries": 1,
                       "visibility_timeout_ms": LEASE_MS, "dead_letter_queue": DLQ}),
                )
                .await?;
            let leader = queue_leader(&api, DLQ).await?;
            ensure!(
                queue_leader(&api, QUEUE).await? == leader,
                "{QUEUE} and {DLQ} are led apart"
            );
            // Through a node that leads neither: requests are forwarded.
            let other = cluster.api_except(&[leader])?.clone();
            exhaust(&other, (QUEUE, DLQ), LEASE_MS, "first", 1).await?;

            cluster.node_mut(leader).kill9().await?;
            let survivor = cluster.api_except(&[leader])?.clone();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            let (queue_leader, dlq_leader) = loop {
                let leaders = (
                    queue_leader(&survivor, QUEUE).await.unwrap_or(0),
                    queue_leader(&survivor, DLQ).await.unwrap_or(0),
                );
                if leaders.0 != 0 && leaders.0 != leader && leaders.1 != 0 && leaders.1 != leader {
                    break leaders;
                }
                ensure!(
                    tokio::time::Instant::now() < deadline,
                    "no new leaders after the kill: {leaders:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            ensure!(
                queue_leader == dlq_leader,
                "after the failover {QUEUE} is led by {queue_leader} and {DLQ} by {dlq_leader}"
            );
            exhaust(&survivor, (QUEUE, DLQ), LEASE_MS, "second", 2).await?;

            let (status, moved) = survivor
                .post(&format!("/v1/queues/{DLQ}/redrive"), &json!({}))
                .await?;
            ensure!(status == 200, "redrive: {status} {moved}");
            ensure!(moved["moved"] == json!(2), "redrive moved {moved}");
            let back = survivor.receive(QUEUE, 10, 5_000, 60_000).await?;
            let mut values: Vec<&str> = back.iter().map(|m| m.value.as_str()).collect();
            values.sort_unstable();
            ensure!(values == ["first", "second"], "redriven back: {values:?}");
            let dlq: Value = survivor.get_ok(&format!("/v1/queues/{DLQ}")).await?;
            ensure!(dlq["depth"] == json!(0), "{DLQ} after the redrive: {dlq}");
            Ok(())
        },
    )
    .await
}
