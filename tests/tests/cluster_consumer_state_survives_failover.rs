//! Invariant: consumer state survives the loss of the node that held it. After the
//! leader of a topic is killed, its subscription resumes on the new leader from the
//! last commit (what was pulled but not committed comes again, nothing committed
//! does). After the leader of a queue is killed, no acknowledged message is
//! delivered again, and every unacknowledged one is, once its lease ran out.
//!
//! Three brokers and a real ZooKeeper; replication factor 3.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::ensure;
use serde_json::json;
use system_tests::{Cluster, keyed, scenario, unkeyed};

const TOPIC: &str = "state-topic";
const QUEUE: &str = "state-queue";
const SUB: &str = "billing";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_state_survives_failover() -> anyhow::Result<()> {
    scenario(
        "cluster_consumer_state_survives_failover",
        Duration::from_secs(240),
        async {
            let mut cluster = Cluster::start(3).await?;
            let api = cluster.node(1).api().clone();

            // A subscription: 50 messages, 20 pulled and committed, 10 more pulled.
            Cluster::create_topic(&api, TOPIC, 1, 3).await?;
            let messages: Vec<_> = (0..50).map(|i| keyed("k", &format!("m{i:02}"))).collect();
            api.produce(TOPIC, &messages, "all", &[]).await?;
            api.subscribe(TOPIC, SUB, "earliest", false).await?;
            let first = api.pull_n(TOPIC, SUB, 20, 1_000).await?;
            ensure!(first.len() == 20, "pulled {}", first.len());
            api.commit(TOPIC, SUB, &[(0, first[19].offset + 1)]).await?;
            let uncommitted = api.pull_n(TOPIC, SUB, 10, 1_000).await?;
            ensure!(uncommitted.len() == 10);

            let leader = Cluster::leader(&api, TOPIC, 0).await?;
            cluster.node_mut(leader).kill9().await?;
            let survivor = cluster.api_except(&[leader])?.clone();
            Cluster::wait_leaders(&survivor, TOPIC, &[leader], 2).await?;
            let committed = survivor.committed(TOPIC, SUB).await?;
            ensure!(
                committed == vec![first[19].offset + 1],
                "committed after the failover: {committed:?}"
            );
            let resumed = survivor.pull_n(TOPIC, SUB, 30, 1_000).await?;
            let values: Vec<&str> = resumed.iter().map(|m| m.value.as_str()).collect();
            let expected: Vec<String> = (20..50).map(|i| format!("m{i:02}")).collect();
            ensure!(
                values == expected.iter().map(String::as_str).collect::<Vec<_>>(),
                "the subscription resumed with {values:?}"
            );
            cluster.node_mut(leader).restart().await?;
            cluster.wait_members(3).await?;

            // A queue: 20 messages, 10 received, 6 of them acknowledged.
            let api = cluster.node(leader).api().clone();
            api.create_queue(
                QUEUE,
                json!({"partitions": 1, "replication_factor": 3, "visibility_timeout_ms": 2000}),
            )
            .await?;
            let sent: Vec<_> = (0..20).map(|i| unkeyed(&format!("q{i:02}"))).collect();
            api.send(QUEUE, &sent).await?;
            let received = api.receive(QUEUE, 10, 1_000, 2_000).await?;
            ensure!(received.len() == 10, "received {}", received.len());
            let acked: Vec<String> = received.iter().take(6).map(|m| m.value.clone()).collect();
            let receipts: Vec<String> =
                received.iter().take(6).map(|m| m.receipt.clone()).collect();
            ensure!(api.ack(QUEUE, &receipts).await? == 6);

            let queue_leader = {
                let body = api.get_ok(&format!("/v1/queues/{QUEUE}")).await?;
                body["partitions"][0]["leader"].as_u64().unwrap_or(0) as u32
            };
            ensure!(queue_leader != 0, "the queue has no leader");
            cluster.node_mut(queue_leader).kill9().await?;
            let survivor = cluster.api_except(&[queue_leader])?.clone();

            // Every unacknowledged message comes (the 4 leased ones after their lease),
            // no acknowledged one does.
            let mut seen: HashSet<String> = HashSet::new();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            while seen.len() < 14 && tokio::time::Instant::now() < deadline {
                let reply = survivor
                    .post(
                        &format!("/v1/queues/{QUEUE}/receive"),
                        &json!({"max": 20, "wait_ms": 1000, "visibility_timeout_ms": 60000}),
                    )
                    .await;
                let Ok((200, body)) = reply else {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                };
                for m in body["messages"].as_array().cloned().unwrap_or_default() {
                    let value = m["value"].as_str().unwrap_or_default().to_owned();
                    ensure!(
                        !acked.contains(&value),
                        "acknowledged message {value} was delivered again"
                    );
                    seen.insert(value);
                }
            }
            let expected: HashSet<String> = (0..20)
                .map(|i| format!("q{i:02}"))
                .filter(|v| !acked.contains(v))
                .collect();
            ensure!(
                seen == expected,
                "after the failover the queue delivered {seen:?}, expected {expected:?}"
            );
            Ok(())
        },
    )
    .await
}
