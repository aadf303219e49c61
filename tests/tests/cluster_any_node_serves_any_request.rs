//! Invariant: in a cluster, a client may call any node. A topic created through one
//! node exists on all; a produce sent to a node that does not lead the topic is
//! forwarded to the leader and answered, and a read through a third node sees it;
//! `GET /v1/cluster` and `GET /v1/topics/{t}/partitions` show the members, the
//! controller, the leaders and the in-sync replicas; a token issued by one node is
//! accepted by every node; a leader stopped with SIGTERM exits with status 0 and
//! hands its leadership over at once.
//!
//! Three brokers and a real ZooKeeper on loopback.

use std::time::Duration;

use anyhow::{Context, ensure};
use system_tests::cluster::sole_leader;
use system_tests::{Cluster, keyed, scenario};

const TOPIC: &str = "routed";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_node_serves_any_request() -> anyhow::Result<()> {
    scenario(
        "cluster_any_node_serves_any_request",
        Duration::from_secs(180),
        async {
            let cluster = Cluster::start(3).await?;
            let first = cluster.node(1).api();
            let leaders = Cluster::create_topic(first, TOPIC, 3, 3).await?;
            let leader = sole_leader(&leaders)?;
            let others: Vec<u32> = (1..=3).filter(|id| *id != leader).collect();

            // Every node knows the topic and the members.
            for id in 1..=3 {
                let api = cluster.node(id).api();
                let described = api.get_ok(&format!("/v1/topics/{TOPIC}")).await?;
                ensure!(
                    described["partitions"].as_array().map(Vec::len) == Some(3),
                    "node {id} describes {described}"
                );
                let members = api.get_ok("/v1/cluster").await?;
                ensure!(
                    members["brokers"].as_array().map(Vec::len) == Some(3),
                    "node {id} lists {members}"
                );
                ensure!(
                    members["controller"]
                        .as_u64()
                        .is_some_and(|c| (1..=3).contains(&c))
                );
            }

            // A token from one node works on another.
            let token_node = cluster.node(others[0]).api();
            let foreign = token_node.fresh()?;
            let reply = foreign.get("/v1/cluster").await?;
            ensure!(
                reply.0 == 200,
                "a token from node {} was refused",
                others[0]
            );

            // Produce through a node that does not lead: forwarded.
            let via = cluster.node(others[0]).api();
            let messages: Vec<_> = (0..30)
                .map(|i| keyed(&format!("k{}", i % 5), &format!("v{i}")))
                .collect();
            let placed = via.produce(TOPIC, &messages, "all", &[]).await?;
            ensure!(placed.len() == 30);

            // Read through the other non-leader, from a new subscription.
            let reader = cluster.node(others[1]).api();
            reader.subscribe(TOPIC, "audit", "earliest", false).await?;
            let pulled = reader.pull_n(TOPIC, "audit", 30, 2_000).await?;
            ensure!(pulled.len() == 30, "read {} of 30 messages", pulled.len());
            let mut values: Vec<String> = pulled.iter().map(|m| m.value.clone()).collect();
            values.sort();
            let mut sent: Vec<String> = (0..30).map(|i| format!("v{i}")).collect();
            sent.sort();
            ensure!(values == sent, "read back {values:?}");

            let parts = Cluster::partitions(first, TOPIC).await?;
            for part in &parts {
                let isr = part["isr"].as_array().context("isr")?;
                ensure!(isr.len() == 3, "partition not fully in sync: {part}");
                ensure!(
                    part["leader_rest_addr"]
                        .as_str()
                        .is_some_and(|a| !a.is_empty()),
                    "no leader address: {part}"
                );
            }

            // A leader stopped with SIGTERM exits cleanly and closes its ZooKeeper
            // session on the way: the others elect a new leader at once, not after
            // the session timeout.
            let mut cluster = cluster;
            let stopped = std::time::Instant::now();
            let took = cluster.node_mut(leader).terminate().await?;
            let api = cluster.node(others[0]).api().clone();
            let new_leaders = Cluster::wait_leaders(&api, TOPIC, &[leader], 2).await?;
            let failover = stopped.elapsed();
            println!(
                "SIGTERM: exited in {:.2} s; new leader {} after {:.2} s",
                took.as_secs_f64(),
                new_leaders[0],
                failover.as_secs_f64()
            );
            ensure!(
                failover < Duration::from_secs(5),
                "a graceful stop took {failover:?} to hand over the leadership"
            );
            Ok(())
        },
    )
    .await
}
