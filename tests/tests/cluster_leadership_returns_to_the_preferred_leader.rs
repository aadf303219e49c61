//! Invariant: after a failover, the leadership of a topic goes back to its preferred
//! leader (its first replica) once that node has been back in sync for the
//! rebalance delay, so that leaders stay spread over the nodes; and the move loses
//! and duplicates nothing: producers keep producing with `acks=all` through it, and
//! every acknowledged message is read back once, in its key's order.
//!
//! Three brokers and a real ZooKeeper, a rebalance delay of 1 s; a topic with 3
//! partitions and replication factor 3.

use std::time::Duration;

use anyhow::ensure;
use system_tests::cluster::{Batches, check_read_back, leaders, read_all};
use system_tests::{Cluster, scenario};

const TOPIC: &str = "rebalanced";
const BATCHES: Batches<'static> = Batches {
    topic: TOPIC,
    size: 20,
    keys: 8,
    value_bytes: 40,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_returns_to_the_preferred_leader() -> anyhow::Result<()> {
    scenario(
        "cluster_leadership_returns_to_the_preferred_leader",
        Duration::from_secs(240),
        async {
            let mut cluster =
                Cluster::start_with(3, &["--leader-rebalance-delay-ms", "1000"]).await?;
            let first = cluster.node(1).api().clone();
            let preferred = Cluster::create_topic(&first, TOPIC, 3, 3).await?[0];
            let parts = Cluster::partitions(&first, TOPIC).await?;
            ensure!(
                parts
                    .iter()
                    .all(|p| p["replicas"][0].as_u64() == Some(u64::from(preferred))),
                "a new topic is led by its first replica: {parts:?}"
            );
            let apis = cluster.fresh_apis(&[1, 2, 3])?;
            let mut acked = Vec::new();
            for n in 0..5 {
                BATCHES.produce(&apis, "before", n, &mut acked).await?;
            }

            cluster.node_mut(preferred).kill9().await?;
            let survivor = cluster.api_except(&[preferred])?.clone();
            Cluster::wait_leaders(&survivor, TOPIC, &[preferred], 2).await?;
            for n in 0..5 {
                BATCHES.produce(&apis, "down", n, &mut acked).await?;
            }

            // Back: it catches up, rejoins the in-sync sets and, a second later,
            // leads again, while the producers go on.
            cluster.node_mut(preferred).restart().await?;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            let mut n = 0;
            loop {
                BATCHES.produce(&apis, "back", n, &mut acked).await?;
                n += 1;
                let now = leaders(&Cluster::partitions(&survivor, TOPIC).await?);
                if now.iter().all(|l| *l == preferred) {
                    break;
                }
                ensure!(
                    tokio::time::Instant::now() < deadline,
                    "the leadership did not return to node {preferred}: {now:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            for n in 0..5 {
                BATCHES.produce(&apis, "after", n, &mut acked).await?;
            }
            cluster
                .wait_views(
                    &[1, 2, 3],
                    TOPIC,
                    "every partition led by the preferred leader",
                    Duration::from_secs(10),
                    |parts| leaders(parts).iter().all(|l| *l == preferred),
                )
                .await?;

            let pulled = read_all(cluster.node(preferred).api(), TOPIC, "check").await?;
            check_read_back(&pulled, &acked)?;
            // Settled: it does not move again.
            tokio::time::sleep(Duration::from_secs(3)).await;
            let settled = leaders(&Cluster::partitions(&survivor, TOPIC).await?);
            ensure!(
                settled.iter().all(|l| *l == preferred),
                "the leadership moved again: {settled:?}"
            );
            Ok(())
        },
    )
    .await
}
