//! Invariant: a follower that lost its whole data directory copies every partition
//! again from the leader before it counts as in sync. Proof: once it is back in the
//! in-sync replicas, the two other nodes are SIGKILLed, so the refilled node is the
//! only copy left; it takes over as leader and serves every message acknowledged
//! with `acks=all` (before its crash and while it was away) once, in its key's send
//! order, and nothing else.
//!
//! Prints the time for the leader to drop the crashed follower from the in-sync
//! replicas, the time from the restart until it is in sync again, and the time from
//! the kills until it leads.
//!
//! Three brokers, a real ZooKeeper (6 s sessions, 5 s replica lag); a topic with 3
//! partitions and replication factor 3.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use system_tests::cluster::{Batches, check_read_back, read_all, sole_leader};
use system_tests::{Cluster, scenario};

const TOPIC: &str = "refilled";
const KEYS: usize = 12;
const BATCH: usize = 32;
/// The size of each value: with the batch counts below, each partition holds
/// more than one fetch answer's worth (4 MiB), so the copy takes several rounds.
const VALUE_BYTES: usize = 16 << 10;
const BATCHES: Batches<'static> = Batches {
    topic: TOPIC,
    size: BATCH,
    keys: KEYS,
    value_bytes: VALUE_BYTES,
};
/// Batches acknowledged before the follower's crash, and while it is away.
const BATCHES_BEFORE: usize = 14;
const BATCHES_AWAY: usize = 14;
/// How long the in-sync replicas may take to change after a crash or a restart.
const ISR_TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_follower_recopies_the_log() -> anyhow::Result<()> {
    scenario(
        "cluster_empty_follower_recopies_the_log",
        Duration::from_secs(240),
        async {
            let mut cluster = Cluster::start(3).await?;
            let first = cluster.node(1).api().clone();
            let leaders = Cluster::create_topic(&first, TOPIC, 3, 3).await?;
            let leader = sole_leader(&leaders)?;
            let followers: Vec<u32> = (1..=3).filter(|id| *id != leader).collect();
            let (refilled, other) = (followers[1], followers[0]);
            let all = cluster.fresh_apis(&[1, 2, 3])?;
            let survivors = cluster.fresh_apis(&[leader, other])?;

            let mut acked = Vec::new();
            for n in 0..BATCHES_BEFORE {
                BATCHES.produce(&all, "before", n, &mut acked).await?;
            }

            // The follower crashes and its disk is lost.
            cluster.node_mut(refilled).kill9().await?;
            let crashed_at = Instant::now();
            let dir = cluster.data_dir(refilled);
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
            ensure!(!dir.exists(), "{} is still there", dir.display());
            println!("killed node {refilled}, a follower, and removed its data directory");
            for n in 0..BATCHES_AWAY {
                BATCHES.produce(&survivors, "away", n, &mut acked).await?;
            }
            // Out of the in-sync replicas before it returns, so that being back in
            // them below means it caught up.
            cluster
                .wait_in_sync(&[leader, other], TOPIC, 2, ISR_TIMEOUT)
                .await?;
            println!(
                "node {refilled} left the in-sync replicas {:.2} s after its crash",
                crashed_at.elapsed().as_secs_f64()
            );

            cluster.node_mut(refilled).restart().await?;
            let restarted_at = Instant::now();
            println!("restarted node {refilled} over an empty data directory");
            cluster
                .wait_in_sync(&[1, 2, 3], TOPIC, 3, ISR_TIMEOUT)
                .await?;
            let resynced = restarted_at.elapsed();
            let mib = (acked.len() * VALUE_BYTES) as f64 / f64::from(1 << 20);
            println!(
                "node {refilled} is in sync again {:.2} s after its restart \
                 ({} messages, {mib:.1} MiB of values)",
                resynced.as_secs_f64(),
                acked.len()
            );

            // Leave the refilled node as the only copy.
            cluster.node_mut(leader).kill9().await?;
            cluster.node_mut(other).kill9().await?;
            let killed_at = Instant::now();
            println!("killed nodes {leader} and {other}");
            let api = cluster.node(refilled).api().clone();
            let taken = Cluster::wait_leaders(&api, TOPIC, &[leader, other], 1).await?;
            ensure!(
                taken.iter().all(|l| *l == refilled),
                "the refilled node should lead every partition: {taken:?}"
            );
            println!(
                "node {refilled} leads {TOPIC} {:.2} s after the kills",
                killed_at.elapsed().as_secs_f64()
            );

            let pulled = read_all(&api, TOPIC, "verify").await?;
            check_read_back(&pulled, &acked)
                .with_context(|| format!("{TOPIC} read from node {refilled}"))?;
            let ends: u64 = api.high_watermarks(TOPIC).await?.iter().sum();
            ensure!(
                ends == acked.len() as u64,
                "node {refilled} holds {ends} messages, {} were acknowledged",
                acked.len()
            );
            println!(
                "read all {} messages from node {refilled} alone",
                pulled.len()
            );
            Ok(())
        },
    )
    .await
}
