//! Invariant: a SIGKILL while topics, queues and subscriptions are being created
//! never stops the broker from starting again. After the restart, every create that
//! was answered is there whole (all its partitions), and one that was not answered is
//! either there whole or not at all, in which case the same create succeeds.
//!
//! Creating a topic or queue with many partitions takes long enough (a directory
//! and files per partition) that a kill at a random moment (the seed is printed)
//! lands inside one; subscriptions are created in a loop meanwhile. Three rounds on
//! the same data directory.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, ensure};
use serde_json::{Value, json};
use system_tests::{Api, BrokerProcess, Rng, scenario, seed};

/// The topic whose subscriptions are created in a loop.
const BASE_TOPIC: &str = "base";
const BASE_PARTITIONS: u64 = 256;
/// Partitions of each topic and queue created while the kill comes.
const WIDE_PARTITIONS: u64 = 512;
const ROUNDS: u32 = 3;
/// The kill comes after a random delay in this range (creating a topic of
/// `WIDE_PARTITIONS` takes about half a second on a debug build, a queue twice as
/// long).
const KILL_DELAY_MS: (u64, u64) = (30, 700);

/// How one create ended before the kill.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// Answered with a 201.
    Created,
    /// Not answered: the broker died first.
    Unanswered,
}

/// Runs `POST path body`: created when answered 201, unanswered when the connection
/// failed; any other answer is an error.
async fn create(api: &Api, path: &str, body: &Value) -> anyhow::Result<Outcome> {
    match api.post(path, body).await {
        Ok((201, _)) => Ok(Outcome::Created),
        Ok((status, answer)) => anyhow::bail!("POST {path} {body}: {status} {answer}"),
        Err(_) => Ok(Outcome::Unanswered),
    }
}

/// The number of partitions a topic or queue description lists, or `None` on a 404.
async fn partition_count(api: &Api, path: &str) -> anyhow::Result<Option<u64>> {
    match api.get(path).await? {
        (404, _) => Ok(None),
        (200, answer) => {
            let partitions = answer["partitions"]
                .as_array()
                .with_context(|| format!("GET {path}: no partitions in {answer}"))?;
            Ok(Some(partitions.len() as u64))
        }
        (status, answer) => anyhow::bail!("GET {path}: {status} {answer}"),
    }
}

/// Checks one topic or queue after the restart: whole when it was answered, whole or
/// absent when not; an absent one is created again.
async fn check_whole(
    api: &Api,
    kind: &str,
    name: &str,
    outcome: Outcome,
    body: &Value,
) -> anyhow::Result<&'static str> {
    let path = format!("/v1/{kind}/{name}");
    match partition_count(api, &path).await? {
        Some(count) => {
            ensure!(
                count == WIDE_PARTITIONS,
                "{path} came back with {count} of its {WIDE_PARTITIONS} partitions"
            );
            Ok("whole")
        }
        None => {
            ensure!(
                outcome == Outcome::Unanswered,
                "{path} was created (201) and is gone after the restart"
            );
            let again = create(api, &format!("/v1/{kind}"), body).await?;
            ensure!(
                again == Outcome::Created,
                "{path} could not be created again"
            );
            Ok("absent, created again")
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let mut rng = Rng::new(seed()?);
    let data = tempfile::tempdir()?;
    let mut broker = BrokerProcess::start(data.path()).await?;
    let api = broker.api().clone();
    let base = json!({"name": BASE_TOPIC, "partitions": BASE_PARTITIONS});
    ensure!(create(&api, "/v1/topics", &base).await? == Outcome::Created);
    let mut subscribed = BTreeSet::new();

    for round in 0..ROUNDS {
        let api = broker.api().clone();
        let topic = json!({"name": format!("wide-{round}"), "partitions": WIDE_PARTITIONS});
        let queue = json!({"name": format!("wideq-{round}"), "partitions": WIDE_PARTITIONS});
        let topic_task = {
            let (api, topic) = (api.clone(), topic.clone());
            tokio::spawn(async move { create(&api, "/v1/topics", &topic).await })
        };
        let queue_task = {
            let (api, queue) = (api.clone(), queue.clone());
            tokio::spawn(async move { create(&api, "/v1/queues", &queue).await })
        };
        // Subscriptions made one after another: (name, outcome).
        let subs: Arc<Mutex<Vec<(String, Outcome)>>> = Arc::default();
        let subs_task = {
            let (api, subs) = (api.clone(), Arc::clone(&subs));
            tokio::spawn(async move {
                let path = format!("/v1/topics/{BASE_TOPIC}/subscriptions");
                for i in 0.. {
                    let name = format!("s-{round}-{i}");
                    let outcome = create(&api, &path, &json!({"name": name})).await?;
                    subs.lock()
                        .map_err(|_| anyhow::anyhow!("poisoned"))?
                        .push((name, outcome));
                    if outcome == Outcome::Unanswered {
                        break;
                    }
                }
                anyhow::Ok(())
            })
        };
        let delay = rng.range(KILL_DELAY_MS.0, KILL_DELAY_MS.1);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        broker.kill9().await?;
        let topic_outcome = topic_task.await??;
        let queue_outcome = queue_task.await??;
        subs_task.await??;

        broker
            .restart()
            .await
            .with_context(|| format!("round {round}: the broker does not start after the kill"))?;
        let api = broker.api().clone();
        let topic_state = check_whole(
            &api,
            "topics",
            &format!("wide-{round}"),
            topic_outcome,
            &topic,
        )
        .await?;
        let queue_state = check_whole(
            &api,
            "queues",
            &format!("wideq-{round}"),
            queue_outcome,
            &queue,
        )
        .await?;

        let listed: BTreeSet<String> = api
            .get_ok(&format!("/v1/topics/{BASE_TOPIC}/subscriptions"))
            .await?["subscriptions"]
            .as_array()
            .context("no subscriptions list")?
            .iter()
            .filter_map(|s| s["name"].as_str().map(str::to_owned))
            .collect();
        let subs = subs
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .clone();
        for (name, outcome) in &subs {
            match outcome {
                Outcome::Created => {
                    ensure!(listed.contains(name), "subscription {name} (201) is gone");
                    subscribed.insert(name.clone());
                }
                Outcome::Unanswered if listed.contains(name) => {
                    subscribed.insert(name.clone());
                }
                Outcome::Unanswered => {}
            }
        }
        ensure!(
            listed == subscribed,
            "subscriptions after the restart {listed:?}, made before {subscribed:?}"
        );
        println!(
            "round {round}: killed after {delay} ms; topic {topic_outcome:?}, {topic_state}; \
             queue {queue_outcome:?}, {queue_state}; {} subscriptions made",
            subs.len()
        );
    }
    broker.terminate().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_kill9_during_creates_starts_again() -> anyhow::Result<()> {
    scenario(
        "broker_kill9_during_creates_starts_again",
        Duration::from_secs(180),
        run(),
    )
    .await
}
