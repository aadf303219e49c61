//! Invariant: a message whose produce was answered with `acks=all` survives the
//! SIGKILL of its partition's leader: after a new leader takes over, it is readable
//! from the surviving nodes, once, in its key's send order; and no message appears
//! that was never sent. Producers retry a failed request with the same
//! Idempotency-Key, against any live node, so a retry after the failover appends
//! nothing twice.
//!
//! Also measures the time from the leader's death to the first acknowledged produce
//! after it (target: under the 6 s session timeout plus 2 s).
//!
//! Three brokers, a real ZooKeeper; a topic with 3 partitions and replication
//! factor 3.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde_json::json;
use system_tests::cluster::{check_read_back, read_all};
use system_tests::{Api, Cluster, keyed, scenario};

const TOPIC: &str = "failover-orders";
const PRODUCERS: usize = 3;
/// Keys per producer; key names carry the producer's number.
const KEYS_PER_PRODUCER: usize = 4;
const BATCH: usize = 5;
/// Acknowledged messages before the kill.
const ACKED_BEFORE_KILL: usize = 150;
/// Batches each producer gets acknowledged after the kill before it stops.
const BATCHES_AFTER_KILL: usize = 20;
/// How long one batch may keep failing before the scenario gives up.
const RETRY_FOR: Duration = Duration::from_secs(40);

#[derive(Default)]
struct Shared {
    /// Every acknowledged message: (key, seq).
    acked: Vec<(String, u64)>,
    /// When the leader was killed.
    killed_at: Option<Instant>,
    /// When the first produce was acknowledged after the kill.
    first_ack_after_kill: Option<Instant>,
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

fn value_of(key: &str, seq: u64) -> String {
    format!("{key}#{seq:06}")
}

async fn produce_loop(
    producer: usize,
    apis: Vec<Api>,
    shared: Arc<Mutex<Shared>>,
) -> anyhow::Result<usize> {
    let keys: Vec<String> = (0..KEYS_PER_PRODUCER)
        .map(|k| format!("p{producer}-k{k}"))
        .collect();
    let mut next_seq: HashMap<String, u64> = HashMap::new();
    let mut after_kill = 0;
    let mut target = 0usize;
    for batch_no in 0.. {
        let killed = lock(&shared).killed_at.is_some();
        if killed && after_kill >= BATCHES_AFTER_KILL {
            return Ok(batch_no);
        }
        let mut batch = Vec::new();
        let mut values = Vec::new();
        for i in 0..BATCH {
            let key = &keys[(batch_no + i) % keys.len()];
            let seq = next_seq.entry(key.clone()).or_default();
            batch.push(keyed(key, &value_of(key, *seq)));
            values.push((key.clone(), *seq));
            *seq += 1;
        }
        let idempotency = format!("producer-{producer}-batch-{batch_no}");
        let body = json!({"messages": batch, "acks": "all"});
        let started = Instant::now();
        loop {
            let api = &apis[target % apis.len()];
            let path = format!("/v1/topics/{TOPIC}/messages");
            let reply = api
                .call(
                    reqwest::Method::POST,
                    &path,
                    Some(&body),
                    &[("Idempotency-Key", &idempotency)],
                )
                .await;
            match reply {
                Ok((200, _)) => break,
                Ok((status, answer)) if status == 503 || status == 504 => {
                    let _ = answer;
                }
                Ok((status, answer)) => bail!("produce answered {status}: {answer}"),
                Err(_) => {}
            }
            // Another node, after a pause: the node may be dead or not leading yet.
            target += 1;
            if started.elapsed() > RETRY_FOR {
                bail!("producer {producer}: batch {batch_no} failed for {RETRY_FOR:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut shared = lock(&shared);
        shared.acked.extend(values);
        if let Some(killed) = shared.killed_at {
            after_kill += 1;
            let now = Instant::now();
            if now > killed && shared.first_ack_after_kill.is_none() {
                shared.first_ack_after_kill = Some(now);
            }
        }
    }
    Ok(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kill_loses_no_acknowledged_message() -> anyhow::Result<()> {
    scenario(
        "cluster_leader_kill_loses_no_acknowledged_message",
        Duration::from_secs(240),
        async {
            let mut cluster = Cluster::start(3).await?;
            let first = cluster.node(1).api().clone();
            let leader = Cluster::create_topic(&first, TOPIC, 3, 3).await?[0];

            let apis = cluster.fresh_apis(&[1, 2, 3])?;
            let shared = Arc::new(Mutex::new(Shared::default()));
            let producers: Vec<_> = (0..PRODUCERS)
                .map(|p| {
                    let apis = apis.clone();
                    let shared = Arc::clone(&shared);
                    tokio::spawn(produce_loop(p, apis, shared))
                })
                .collect();

            let deadline = Instant::now() + Duration::from_secs(60);
            while lock(&shared).acked.len() < ACKED_BEFORE_KILL {
                ensure!(
                    Instant::now() < deadline,
                    "producers too slow before the kill"
                );
                ensure!(
                    producers.iter().all(|p| !p.is_finished()),
                    "a producer stopped before the kill"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            cluster.node_mut(leader).kill9().await?;
            lock(&shared).killed_at = Some(Instant::now());
            println!("killed node {leader}, the leader of {TOPIC}");

            for producer in producers {
                producer.await??;
            }
            let (acked, failover) = {
                let shared = lock(&shared);
                let failover = shared
                    .first_ack_after_kill
                    .zip(shared.killed_at)
                    .map(|(ack, kill)| ack - kill)
                    .context("no produce was acknowledged after the kill")?;
                (shared.acked.clone(), failover)
            };
            println!(
                "failover: first acknowledged produce {:.2} s after the leader's death; \
                 {} messages acknowledged",
                failover.as_secs_f64(),
                acked.len()
            );

            let survivor = cluster.api_except(&[leader])?.clone();
            let new_leaders = Cluster::wait_leaders(&survivor, TOPIC, &[leader], 2).await?;
            println!("new leaders: {new_leaders:?}");
            let pulled = read_all(&survivor, TOPIC, "verify").await?;
            // Every message read was sent: unacknowledged ones (in flight at the
            // kill) were retried with their key until acknowledged, so all are in
            // `acked`, which holds each key's messages in their send order.
            let acked: Vec<(String, String)> = acked
                .iter()
                .map(|(key, seq)| (key.clone(), value_of(key, *seq)))
                .collect();
            check_read_back(&pulled, &acked)
                .with_context(|| format!("{TOPIC} read from a survivor"))?;
            ensure!(
                failover < Duration::from_secs(8),
                "failover took {failover:?}, over the session timeout plus 2 s"
            );
            Ok(())
        },
    )
    .await
}
