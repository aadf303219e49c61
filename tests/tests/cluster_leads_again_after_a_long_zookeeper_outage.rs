//! Invariant: after a ZooKeeper outage longer than the session timeout, the cluster
//! serves again once ZooKeeper is back. Cut off for longer than its session, each
//! leader stops leading (another node may have been elected meanwhile); ZooKeeper,
//! restarted over its data, keeps the sessions, so no election happens and the
//! partition states still name the old leaders, which must then lead again:
//! `acks=all` produces succeed and every acknowledged message is read back.
//!
//! While every node is cut off, a produce to any of them is answered 503 at once
//! (within `CUT_OFF_ANSWER`), not after waiting for a leader that cannot come.
//!
//! Prints the time from ZooKeeper's return to the first acknowledged produce.
//!
//! Three brokers (6 s sessions), a real ZooKeeper stopped with SIGKILL for longer
//! than the session timeout and started again over its data directory.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use serde_json::json;
use system_tests::cluster::{Batches, SESSION_TIMEOUT_MS, check_read_back, read_all};
use system_tests::{Cluster, keyed, scenario};

const TOPIC: &str = "zk-long-outage";
const BATCH: usize = 10;
const BATCHES: Batches<'static> = Batches {
    topic: TOPIC,
    size: BATCH,
    keys: BATCH,
    value_bytes: 0,
};
const BATCHES_BEFORE: usize = 3;
const BATCHES_AFTER: usize = 3;
/// How long ZooKeeper stays down: past the session timeout, so every node stops
/// leading before it returns.
const OUTAGE: Duration = Duration::from_millis(SESSION_TIMEOUT_MS + 3_000);
/// When, in the outage, the nodes are asked: past the session timeout.
const ASK_AT: Duration = Duration::from_millis(SESSION_TIMEOUT_MS + 1_000);
/// How long a cut-off node may take to refuse a produce.
const CUT_OFF_ANSWER: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leads_again_after_a_long_zookeeper_outage() -> anyhow::Result<()> {
    scenario(
        "cluster_leads_again_after_a_long_zookeeper_outage",
        Duration::from_secs(240),
        async {
            let mut cluster = Cluster::start(3).await?;
            let first = cluster.node(1).api().clone();
            let leaders = Cluster::create_topic(&first, TOPIC, 3, 3).await?;
            let all = cluster.fresh_apis(&[1, 2, 3])?;
            let mut acked = Vec::new();
            for n in 0..BATCHES_BEFORE {
                BATCHES.produce(&all, "before", n, &mut acked).await?;
            }

            cluster.zookeeper.stop().await?;
            let stopped_at = Instant::now();
            tokio::time::sleep_until((stopped_at + ASK_AT).into()).await;
            let path = format!("/v1/topics/{TOPIC}/messages");
            let body = json!({"messages": [keyed("k0", "cut-off")], "acks": "all"});
            let asks: Vec<_> = all
                .iter()
                .map(|api| {
                    let (api, path, body) = (api.clone(), path.clone(), body.clone());
                    tokio::spawn(async move {
                        let asked = Instant::now();
                        let reply = api.post(&path, &body).await;
                        (reply, asked.elapsed())
                    })
                })
                .collect();
            for (id, ask) in (1..).zip(asks) {
                let (reply, took) = ask.await?;
                let (status, answer) = reply?;
                ensure!(
                    status == 503 && took <= CUT_OFF_ANSWER,
                    "node {id}, cut off: {status} {answer} after {took:?}"
                );
            }
            tokio::time::sleep_until((stopped_at + OUTAGE).into()).await;
            cluster.zookeeper.restart().await?;
            let restarted_at = Instant::now();
            println!(
                "ZooKeeper serves again {:.2} s after it stopped (session timeout {} ms)",
                stopped_at.elapsed().as_secs_f64(),
                SESSION_TIMEOUT_MS
            );

            BATCHES.produce(&all, "after", 0, &mut acked).await?;
            println!(
                "first produce acknowledged {:.2} s after ZooKeeper serves again",
                restarted_at.elapsed().as_secs_f64()
            );
            for n in 1..BATCHES_AFTER {
                BATCHES.produce(&all, "after", n, &mut acked).await?;
            }
            let now = Cluster::wait_leaders(&first, TOPIC, &[], 3).await?;
            println!("leaders before the outage {leaders:?}, after {now:?}");

            for id in 1..=3 {
                let pulled = read_all(cluster.node(id).api(), TOPIC, &format!("v{id}")).await?;
                check_read_back(&pulled, &acked).with_context(|| format!("node {id}"))?;
            }
            println!("read {} messages back through every node", acked.len());
            Ok(())
        },
    )
    .await
}
