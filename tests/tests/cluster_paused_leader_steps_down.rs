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
//! A commit sent straight to the frozen node, at offsets the new leader has and the
//! frozen node's copy does not, is not called a bad request when the node wakes: it
//! is a 503 to retry (or, once the node knows, forwarded and done).
//!
//! A write sent to another node while the leader is frozen, which that node
//! forwards to the frozen leader, is answered by the new leader once one is
//! elected (within `FORWARDED_ANSWER` of the freeze), not after the forward's own
//! timeout.
//!
//! Prints the time to elect a new leader after the freeze, and, after the wake,
//! the times until the old leader steps down and until it is in sync again.
//!
//! Three brokers, a real ZooKeeper (6 s sessions); a topic with 3 partitions and
//! replication factor 3.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use serde_json::{Value, json};
use system_tests::cluster::{
    Batches, SESSION_TIMEOUT_MS, check_read_back, leaders, read_all, sole_leader,
};
use system_tests::{Api, Cluster, Pulled, keyed, scenario};

const TOPIC: &str = "paused-orders";
/// How long the leader stays frozen: well past the 6 s session timeout.
const PAUSE: Duration = Duration::from_secs(10);
/// Keys, so each partition gets messages and each key has a send order.
const KEYS: usize = 6;
const BATCH: usize = 10;
const BATCHES: Batches<'static> = Batches {
    topic: TOPIC,
    size: BATCH,
    keys: KEYS,
    value_bytes: 0,
};
/// Batches acknowledged before the freeze, during it, and after the wake.
const BATCHES_BEFORE: usize = 5;
const BATCHES_DURING: usize = 5;
const BATCHES_AFTER: usize = 2;
/// Writes sent to the frozen node, each on its own connection.
const WINDOW_WRITES: usize = 3;
/// How long a write forwarded to the frozen leader may take: the session timeout,
/// the election, and a retry to the new leader.
const FORWARDED_ANSWER: Duration = Duration::from_secs(11);
/// How long the woken node may take to step down and to be in sync again.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(30);

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_leader_steps_down() -> anyhow::Result<()> {
    scenario(
        "cluster_paused_leader_steps_down",
        Duration::from_secs(240),
        async {
            let cluster = Cluster::start(3).await?;
            let first = cluster.node(1).api().clone();
            let old = sole_leader(&Cluster::create_topic(&first, TOPIC, 3, 3).await?)?;
            let others: Vec<u32> = (1..=3).filter(|id| *id != old).collect();
            let all = cluster.fresh_apis(&[1, 2, 3])?;
            let live = cluster.fresh_apis(&others)?;

            let (status, answer) = first
                .post(
                    &format!("/v1/topics/{TOPIC}/subscriptions"),
                    &json!({"name": "window"}),
                )
                .await?;
            ensure!(status == 201, "creating a subscription: {status} {answer}");
            let mut acked = Vec::new();
            for n in 0..BATCHES_BEFORE {
                BATCHES.produce(&all, "before", n, &mut acked).await?;
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

            let forwarded = {
                let api = live[0].clone();
                let body = json!({"messages": [keyed(&key_of(0), "forwarded-0")], "acks": "all"});
                tokio::spawn(async move {
                    let path = format!("/v1/topics/{TOPIC}/messages");
                    let key = [("Idempotency-Key", "forwarded-0")];
                    let reply = api
                        .call(reqwest::Method::POST, &path, Some(&body), &key)
                        .await;
                    (reply, paused_at.elapsed())
                })
            };

            let elected = Cluster::wait_leaders(&live[0], TOPIC, &[old], 2).await?;
            let elected_after = paused_at.elapsed();
            let new = sole_leader(&elected).context("after the election")?;
            println!(
                "node {new} leads {TOPIC} {:.2} s after the freeze (session timeout {} ms)",
                elected_after.as_secs_f64(),
                SESSION_TIMEOUT_MS
            );
            let (reply, took) = forwarded.await?;
            let (status, answer) = reply?;
            println!("a write forwarded to the frozen leader was answered {status} after {took:?}");
            ensure!(
                status == 200 && took <= FORWARDED_ANSWER,
                "a write forwarded to the frozen leader: {status} {answer} after {took:?}"
            );
            acked.push((key_of(0), "forwarded-0".to_owned()));
            for n in 0..BATCHES_DURING {
                BATCHES.produce(&live, "during", n, &mut acked).await?;
            }
            // A commit at the new leader's ends, sent to the frozen node.
            let ends: Vec<Value> = live[0]
                .log_end_offsets(TOPIC)
                .await?
                .iter()
                .enumerate()
                .map(|(p, end)| json!({"partition": p, "offset": end}))
                .collect();
            let window_commit = {
                let api = cluster.node(old).api().fresh()?;
                let body = json!({"offsets": ends});
                tokio::spawn(async move {
                    let path = format!("/v1/topics/{TOPIC}/subscriptions/window/commit");
                    api.call(reqwest::Method::POST, &path, Some(&body), &[])
                        .await
                })
            };
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
                        !l.is_empty() && l.iter().all(|l| *l != 0 && *l != old)
                    },
                )
                .await?;
            println!(
                "node {old} stepped down: every node names another leader {:.2} s after the wake",
                step_down.as_secs_f64()
            );
            cluster
                .wait_in_sync(&[1, 2, 3], TOPIC, 3, RECOVERY_TIMEOUT)
                .await?;
            println!(
                "node {old} is in sync again in every partition {:.2} s after the wake",
                resumed_at.elapsed().as_secs_f64()
            );
            let views = Cluster::partitions(cluster.node(old).api(), TOPIC).await?;
            ensure!(
                leaders(&views).iter().all(|l| *l != old),
                "node {old} names itself leader again: {views:?}"
            );

            // The woken node serves again (forwarding to the leader).
            let through_old = cluster.fresh_apis(&[old])?;
            for n in 0..BATCHES_AFTER {
                BATCHES
                    .produce(&through_old, "after", n, &mut acked)
                    .await?;
            }

            let (status, answer) = window_commit.await??;
            println!("commit sent to the frozen node at the new ends {ends:?}: {status} {answer}");
            ensure!(
                status == 204 || status == 503,
                "a commit sent to the frozen node: {status} {answer}"
            );

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
                check_read(&pulled, &acked, &window_outcomes)
                    .with_context(|| format!("{TOPIC} read through node {id}"))?;
                println!("read {} messages through node {id}", pulled.len());
            }
            Ok(())
        },
    )
    .await
}

/// Every acknowledged message read once, in its key's order, and nothing else (see
/// [`check_read_back`]); a write to the frozen node read once if acknowledged, at
/// most once otherwise, always with a key.
fn check_read(
    pulled: &[Pulled],
    acked: &[(String, String)],
    window: &[(String, u16, Value)],
) -> anyhow::Result<()> {
    let mut window_reads: HashMap<&str, usize> = HashMap::new();
    let mut rest = Vec::new();
    for message in pulled {
        if window.iter().any(|(value, _, _)| *value == message.value) {
            ensure!(
                message.key.is_some(),
                "{} read without a key",
                message.value
            );
            *window_reads.entry(message.value.as_str()).or_default() += 1;
        } else {
            rest.push(message.clone());
        }
    }
    for (value, status, _) in window {
        let seen = window_reads.get(value.as_str()).copied().unwrap_or(0);
        if *status == 200 {
            ensure!(
                seen == 1,
                "{value}, acknowledged by the woken node, read {seen} times"
            );
        } else {
            ensure!(seen <= 1, "{value} read {seen} times");
        }
    }
    check_read_back(&rest, acked)
}
