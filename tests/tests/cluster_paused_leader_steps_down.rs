//! Invariant: a leader frozen (SIGSTOP) for longer than its ZooKeeper session is
//! replaced, and once it runs again (SIGCONT) it steps down by itself: within a
//! bounded time no node, itself included, names it leader, it is back in the
//! in-sync replicas of every partition, and every message acknowledged with
//! `acks=all` (before the freeze and while it lasted) is readable once, in its
//! key's send order, through a subscription on any node.
//!
//! Writes sent straight to the frozen node wait in its socket and reach it as it
//! wakes, while it still believes it leads. Such a write is acknowledged only if it
//! is really kept: an acknowledged one is read back once, any other at most once.
//!
//! Prints the time to elect a new leader after the freeze, and, after the wake,
//! the times until the old leader steps down and until it is in sync again.
//!
//! Three brokers, a real ZooKeeper (6 s sessions); a topic with 3 partitions and
//! replication factor 3.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use serde_json::{Value, json};
use system_tests::cluster::{SESSION_TIMEOUT_MS, produce_retrying, read_all};
use system_tests::{Api, Cluster, keyed, scenario};

const TOPIC: &str = "paused-orders";
/// How long the leader stays frozen: well past the 6 s session timeout.
const PAUSE: Duration = Duration::from_secs(10);
/// Keys, so each partition gets messages and each key has a send order.
const KEYS: usize = 6;
const BATCH: usize = 10;
/// Batches acknowledged before the freeze, during it, and after the wake.
const BATCHES_BEFORE: usize = 5;
const BATCHES_DURING: usize = 5;
const BATCHES_AFTER: usize = 2;
/// Writes sent to the frozen node, each on its own connection.
const WINDOW_WRITES: usize = 3;
/// How long the woken node may take to step down and to be in sync again.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// The messages acknowledged so far, in acknowledgement order.
#[derive(Default)]
struct Acked {
    values: Vec<String>,
}

impl Acked {
    /// Produces batch `n` of phase `phase` through `apis` until one acknowledges it.
    async fn produce(&mut self, apis: &[Api], phase: &str, n: usize) -> anyhow::Result<()> {
        let values: Vec<String> = (0..BATCH).map(|i| format!("{phase}-{n}-{i}")).collect();
        let messages: Vec<Value> = values
            .iter()
            .enumerate()
            .map(|(i, v)| keyed(&key_of(n * BATCH + i), v))
            .collect();
        produce_retrying(apis, TOPIC, &messages, &format!("{phase}-{n}")).await?;
        self.values.extend(values);
        Ok(())
    }
}

fn key_of(i: usize) -> String {
    format!("k{}", i % KEYS)
}

/// Sends one `acks=all` write to the frozen node; its value and the answer's
/// status (0: no answer).
async fn window_write(api: Api, n: usize) -> (String, u16, Value) {
    let value = format!("window-{n}");
    let body = json!({"messages": [keyed(&key_of(n), &value)], "acks": "all"});
    let path = format!("/v1/topics/{TOPIC}/messages");
    match api
        .call(reqwest::Method::POST, &path, Some(&body), &[])
        .await
    {
        Ok((status, answer)) => (value, status, answer),
        Err(error) => (value, 0, Value::String(format!("{error:#}"))),
    }
}

fn leaders(parts: &[Value]) -> Vec<u64> {
    parts
        .iter()
        .map(|p| p["leader"].as_u64().unwrap_or(0))
        .collect()
}

fn isr_lens(parts: &[Value]) -> Vec<usize> {
    parts
        .iter()
        .map(|p| p["isr"].as_array().map_or(0, Vec::len))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_leader_steps_down() -> anyhow::Result<()> {
    scenario(
        "cluster_paused_leader_steps_down",
        Duration::from_secs(240),
        async {
            let cluster = Cluster::start(3).await?;
            let first = cluster.node(1).api().clone();
            let created = first
                .post(
                    "/v1/topics",
                    &json!({"name": TOPIC, "partitions": 3, "replication_factor": 3}),
                )
                .await?;
            ensure!(created.0 == 201, "create answered {created:?}");
            let before = Cluster::wait_leaders(&first, TOPIC, &[], 3).await?;
            let old = before[0];
            ensure!(
                before.iter().all(|l| *l == old),
                "one node leads every partition of a topic: {before:?}"
            );
            let others: Vec<u32> = (1..=3).filter(|id| *id != old).collect();
            let all: Vec<Api> = (1..=3)
                .map(|id| cluster.node(id).api().fresh())
                .collect::<anyhow::Result<_>>()?;
            let live: Vec<Api> = others
                .iter()
                .map(|id| cluster.node(*id).api().fresh())
                .collect::<anyhow::Result<_>>()?;

            let mut acked = Acked::default();
            for n in 0..BATCHES_BEFORE {
                acked.produce(&all, "before", n).await?;
            }

            // Freeze the leader; writes sent to it now wait in its socket.
            cluster.node(old).pause()?;
            let paused_at = Instant::now();
            println!("froze node {old}, the leader of {TOPIC}");
            let mut window_tasks = Vec::new();
            for n in 0..WINDOW_WRITES {
                let api = cluster.node(old).api().fresh()?;
                window_tasks.push(tokio::spawn(window_write(api, n)));
            }

            let elected = Cluster::wait_leaders(&live[0], TOPIC, &[old], 2).await?;
            let elected_after = paused_at.elapsed();
            let new = elected[0];
            ensure!(
                elected.iter().all(|l| *l == new),
                "one node leads every partition after the election: {elected:?}"
            );
            println!(
                "node {new} leads {TOPIC} {:.2} s after the freeze (session timeout {} ms)",
                elected_after.as_secs_f64(),
                SESSION_TIMEOUT_MS
            );
            for n in 0..BATCHES_DURING {
                acked.produce(&live, "during", n).await?;
            }
            tokio::time::sleep_until((paused_at + PAUSE).into()).await;
            cluster.node(old).resume()?;
            let resumed_at = Instant::now();
            println!(
                "woke node {old} after {:.2} s frozen",
                paused_at.elapsed().as_secs_f64()
            );

            // Every node, the woken one included, names another leader.
            let step_down = cluster
                .wait_views(
                    &[1, 2, 3],
                    TOPIC,
                    &format!("a leader other than node {old}"),
                    RECOVERY_TIMEOUT,
                    |parts| {
                        let l = leaders(parts);
                        !l.is_empty() && l.iter().all(|l| *l != 0 && *l != u64::from(old))
                    },
                )
                .await?;
            println!(
                "node {old} stepped down: every node names another leader {:.2} s after the wake",
                step_down.as_secs_f64()
            );
            cluster
                .wait_views(
                    &[1, 2, 3],
                    TOPIC,
                    "3 in-sync replicas in every partition",
                    RECOVERY_TIMEOUT,
                    |parts| {
                        let lens = isr_lens(parts);
                        !lens.is_empty() && lens.iter().all(|n| *n == 3)
                    },
                )
                .await?;
            println!(
                "node {old} is in sync again in every partition {:.2} s after the wake",
                resumed_at.elapsed().as_secs_f64()
            );
            let views = Cluster::partitions(cluster.node(old).api(), TOPIC).await?;
            ensure!(
                leaders(&views).iter().all(|l| *l != u64::from(old)),
                "node {old} names itself leader again: {views:?}"
            );

            // The woken node serves again (forwarding to the leader).
            let through_old = [cluster.node(old).api().fresh()?];
            for n in 0..BATCHES_AFTER {
                acked.produce(&through_old, "after", n).await?;
            }

            let mut window_outcomes = Vec::new();
            for task in window_tasks {
                window_outcomes.push(task.await?);
            }
            for (value, status, answer) in &window_outcomes {
                println!("write to the frozen node {value}: {status} {answer}");
            }

            for id in 1..=3 {
                let api = cluster.node(id).api();
                let pulled = read_all(api, TOPIC, &format!("verify-{id}")).await?;
                check_read(id, &pulled, &acked.values, &window_outcomes)?;
                println!("read {} messages through node {id}", pulled.len());
            }
            Ok(())
        },
    )
    .await
}

/// Every acknowledged message read once, in its key's order; a write to the frozen
/// node read once if acknowledged, at most once otherwise; nothing else.
fn check_read(
    node: u32,
    pulled: &[system_tests::Pulled],
    acked: &[String],
    window: &[(String, u16, Value)],
) -> anyhow::Result<()> {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    let mut order: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for message in pulled {
        *counts.entry(message.value.as_str()).or_default() += 1;
        let key = message.key.clone().context("a message without key")?;
        if !message.value.starts_with("window-") {
            order.entry(key).or_default().push(message.value.as_str());
        }
    }
    for value in acked {
        let seen = counts.remove(value.as_str()).unwrap_or(0);
        ensure!(
            seen == 1,
            "through node {node}: acknowledged {value} read {seen} times"
        );
    }
    for (value, status, _) in window {
        let seen = counts.remove(value.as_str()).unwrap_or(0);
        if *status == 200 {
            ensure!(
                seen == 1,
                "through node {node}: {value}, acknowledged by the woken node, read {seen} times"
            );
        } else {
            ensure!(seen <= 1, "through node {node}: {value} read {seen} times");
        }
    }
    ensure!(
        counts.is_empty(),
        "through node {node}: messages never sent: {counts:?}"
    );
    // Within a key, the read order is the acknowledgement order.
    let mut expected: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for value in acked {
        let key = key_for_value(value)?;
        expected.entry(key).or_default().push(value.as_str());
    }
    ensure!(
        order == expected,
        "through node {node}: a key's messages are out of order"
    );
    Ok(())
}

/// The key a value was sent under: `{phase}-{batch}-{i}` went to key
/// `k{(batch * BATCH + i) % KEYS}`.
fn key_for_value(value: &str) -> anyhow::Result<String> {
    let mut parts = value.rsplitn(3, '-');
    let i: usize = parts.next().context("value")?.parse()?;
    let n: usize = parts.next().context("value")?.parse()?;
    Ok(key_of(n * BATCH + i))
}
