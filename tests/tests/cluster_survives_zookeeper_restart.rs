//! Invariant: a ZooKeeper outage shorter than the session timeout costs the cluster
//! nothing but the outage. While ZooKeeper is down every node answers `/readyz`
//! with 503; once it is back (same data, so the sessions resume) every node answers
//! 200 again, the members and leaders are those of before, `acks=all` produces
//! succeed, every message acknowledged before and after is readable once, and a
//! topic created after the restart works on every node.
//!
//! Prints how long the nodes took to notice the outage, to reconnect after the
//! restart, and to acknowledge a produce again.
//!
//! Three brokers (6 s sessions), a real ZooKeeper stopped with SIGKILL and started
//! again over its data directory.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use system_tests::cluster::{Batches, SESSION_TIMEOUT_MS, check_read_back, read_all};
use system_tests::{Api, Cluster, scenario};

const TOPIC: &str = "zk-bounce";
/// A topic created once ZooKeeper is back.
const LATER_TOPIC: &str = "zk-later";
const KEYS: usize = 6;
const BATCH: usize = 10;
const BATCHES: Batches<'static> = Batches {
    topic: TOPIC,
    size: BATCH,
    keys: KEYS,
    value_bytes: 0,
};
const BATCHES_BEFORE: usize = 5;
const BATCHES_AFTER: usize = 5;
/// How long ZooKeeper stays down before it is started again: a third of the session
/// timeout, so that with its start (one to two seconds for the JVM) the outage stays
/// well within the sessions.
const OUTAGE: Duration = Duration::from_millis(SESSION_TIMEOUT_MS / 3);
/// How long the nodes may take to see ZooKeeper gone, or back.
const NOTICE_TIMEOUT: Duration = Duration::from_secs(10);

/// Waits until `/readyz` answers `status` on every node; returns how long it took.
async fn wait_readyz(apis: &[Api], status: u16) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        let mut answers = Vec::new();
        for api in apis {
            answers.push(api.get("/readyz").await.map(|(s, _)| s).unwrap_or(0));
        }
        if answers.iter().all(|s| *s == status) {
            return Ok(started.elapsed());
        }
        ensure!(
            started.elapsed() < NOTICE_TIMEOUT,
            "/readyz did not answer {status} on every node within {NOTICE_TIMEOUT:?}: {answers:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads `topic` through node `id` from a new subscription, and checks the read
/// against `acked` with [`check_read_back`].
async fn check_read(
    cluster: &Cluster,
    id: u32,
    topic: &str,
    acked: &[(String, String)],
) -> anyhow::Result<()> {
    let pulled = read_all(cluster.node(id).api(), topic, &format!("verify-{id}")).await?;
    check_read_back(&pulled, acked).with_context(|| format!("{topic} read through node {id}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_zookeeper_restart() -> anyhow::Result<()> {
    scenario(
        "cluster_survives_zookeeper_restart",
        Duration::from_secs(240),
        async {
            let mut cluster = Cluster::start(3).await?;
            let first = cluster.node(1).api().clone();
            let leaders = Cluster::create_topic(&first, TOPIC, 3, 3).await?;
            let all = cluster.fresh_apis(&[1, 2, 3])?;
            let controller = first.get_ok("/v1/cluster").await?["controller"].clone();

            let mut acked = Vec::new();
            for n in 0..BATCHES_BEFORE {
                BATCHES.produce(&all, "before", n, &mut acked).await?;
            }
            wait_readyz(&all, 200).await?;

            cluster.zookeeper.stop().await?;
            let stopped_at = Instant::now();
            let noticed = wait_readyz(&all, 503).await?;
            println!(
                "every node answers /readyz 503 {:.2} s after ZooKeeper stopped",
                noticed.as_secs_f64()
            );
            tokio::time::sleep_until((stopped_at + OUTAGE).into()).await;
            cluster.zookeeper.restart().await?;
            let restarted_at = Instant::now();
            println!(
                "ZooKeeper serves again {:.2} s after it stopped",
                stopped_at.elapsed().as_secs_f64()
            );
            let reconnected = wait_readyz(&all, 200).await?;
            println!(
                "every node answers /readyz 200 {:.2} s after ZooKeeper serves again \
                 ({:.2} s after it stopped)",
                reconnected.as_secs_f64(),
                stopped_at.elapsed().as_secs_f64()
            );

            cluster.wait_members(3).await?;
            let after = first.get_ok("/v1/cluster").await?;
            ensure!(
                after["controller"] == controller,
                "the controller changed from {controller} to {}: a session was lost",
                after["controller"]
            );
            for id in 1..=3 {
                let seen = Cluster::wait_leaders(cluster.node(id).api(), TOPIC, &[], 3).await?;
                ensure!(
                    seen == leaders,
                    "node {id} sees leaders {seen:?}, before the outage {leaders:?}"
                );
            }

            BATCHES.produce(&all, "after", 0, &mut acked).await?;
            println!(
                "first produce acknowledged {:.2} s after ZooKeeper serves again",
                restarted_at.elapsed().as_secs_f64()
            );
            for n in 1..BATCHES_AFTER {
                BATCHES.produce(&all, "after", n, &mut acked).await?;
            }
            for id in 1..=3 {
                check_read(&cluster, id, TOPIC, &acked).await?;
            }

            // A topic created now: every node knows it, and it takes writes.
            Cluster::create_topic(cluster.node(2).api(), LATER_TOPIC, 3, 3)
                .await
                .context("a topic created after the restart")?;
            for id in 1..=3 {
                Cluster::wait_leaders(cluster.node(id).api(), LATER_TOPIC, &[], 3)
                    .await
                    .with_context(|| format!("node {id} on {LATER_TOPIC}"))?;
            }
            let mut later = Vec::new();
            for n in 0..BATCHES_AFTER {
                Batches {
                    topic: LATER_TOPIC,
                    ..BATCHES
                }
                .produce(&all, "later", n, &mut later)
                .await?;
            }
            for id in 1..=3 {
                check_read(&cluster, id, LATER_TOPIC, &later).await?;
            }
            println!(
                "read {} + {} messages back through every node",
                acked.len(),
                later.len()
            );
            Ok(())
        },
    )
    .await
}
