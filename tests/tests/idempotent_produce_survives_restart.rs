//! Invariant: a produce repeated with the same `Idempotency-Key` appends nothing and
//! answers what the first one answered, also after a SIGKILL and a restart of the
//! broker, and after a graceful one (the window is rebuilt from the log, not only
//! kept in memory). The same for a send to a queue.

use std::time::Duration;

use anyhow::ensure;
use serde_json::Value;
use system_tests::{Api, BrokerProcess, keyed, scenario};

const TOPIC: &str = "payments";
const PARTITIONS: u32 = 2;
const KEY_A: &str = "payment-batch-42";
const KEY_B: &str = "payment-batch-43";
const QUEUE: &str = "refunds";
const QUEUE_PARTITIONS: u32 = 2;
const KEY_Q: &str = "refund-batch-7";

fn batch(name: &str, count: usize) -> Vec<Value> {
    (0..count)
        .map(|i| keyed(&format!("account-{}", i % 3), &format!("{name}-{i}")))
        .collect()
}

async fn produce_with_key(
    api: &Api,
    messages: &[Value],
    key: &str,
) -> anyhow::Result<Vec<(u32, u64)>> {
    api.produce(TOPIC, messages, "all", &[("Idempotency-Key", key)])
        .await
}

async fn send_with_key(api: &Api, messages: &[Value]) -> anyhow::Result<Vec<String>> {
    api.send_with(QUEUE, messages, &[("Idempotency-Key", KEY_Q)])
        .await
}

/// Every value stored, read through a new subscription from earliest, sorted.
async fn stored_values(api: &Api, sub: &str) -> anyhow::Result<Vec<String>> {
    api.subscribe(TOPIC, sub, "earliest", false).await?;
    let total: u64 = api.high_watermarks(TOPIC).await?.iter().sum();
    let pulled = api.pull_n(TOPIC, sub, total as usize + 1, 200).await?;
    let mut values: Vec<String> = pulled.into_iter().map(|m| m.value).collect();
    values.sort();
    Ok(values)
}

async fn run() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut broker = BrokerProcess::start(dir.path()).await?;
    let api = broker.api().clone();
    api.create_topic(TOPIC, PARTITIONS).await?;
    let a = batch("a", 6);
    let b = batch("b", 3);
    let q = batch("q", 4);
    api.create_queue(QUEUE, serde_json::json!({ "partitions": QUEUE_PARTITIONS }))
        .await?;
    let first_ids = send_with_key(&api, &q).await?;
    ensure!(send_with_key(&api, &q).await? == first_ids, "a send retry");
    ensure!(
        api.queue_depth(QUEUE).await? == (4, 0),
        "a send retry appended"
    );

    let first = produce_with_key(&api, &a, KEY_A).await?;
    let ends = api.log_end_offsets(TOPIC).await?;
    ensure!(
        ends.iter().sum::<u64>() == 6,
        "ends {ends:?} after 6 messages"
    );
    let again = produce_with_key(&api, &a, KEY_A).await?;
    ensure!(
        again == first,
        "a retry answered {again:?}, the first {first:?}"
    );
    ensure!(
        api.log_end_offsets(TOPIC).await? == ends,
        "a retry appended"
    );
    let other = produce_with_key(&api, &b, KEY_B).await?;
    ensure!(other != first, "another key got the first answer");
    let ends = api.log_end_offsets(TOPIC).await?;
    ensure!(
        ends.iter().sum::<u64>() == 9,
        "ends {ends:?} after 9 messages"
    );

    for stop in ["SIGKILL", "SIGTERM"] {
        if stop == "SIGKILL" {
            broker.kill9().await?;
        } else {
            broker.terminate().await?;
        }
        broker.restart().await?;
        let api = broker.api();
        ensure!(
            api.log_end_offsets(TOPIC).await? == ends,
            "the restart after {stop} changed the log ends"
        );
        let after = produce_with_key(api, &a, KEY_A).await?;
        ensure!(
            after == first,
            "a retry after {stop} and a restart answered {after:?}, the first {first:?}"
        );
        let after_b = produce_with_key(api, &b, KEY_B).await?;
        ensure!(
            after_b == other,
            "the second key's retry after {stop} answered {after_b:?}, first {other:?}"
        );
        let now = api.log_end_offsets(TOPIC).await?;
        ensure!(
            now == ends,
            "retries after {stop} and a restart appended: {ends:?} -> {now:?}"
        );
        let ids = send_with_key(api, &q).await?;
        ensure!(
            ids == first_ids,
            "a send retry after {stop} answered {ids:?}, first {first_ids:?}"
        );
        let depth = api.queue_depth(QUEUE).await?;
        ensure!(
            depth == (4, 0),
            "send retries after {stop} appended: {depth:?}"
        );
    }
    let api = broker.api().clone();

    let mut expected: Vec<String> = a
        .iter()
        .chain(&b)
        .filter_map(|m| m["value"].as_str().map(str::to_owned))
        .collect();
    expected.sort();
    let stored = stored_values(&api, "audit").await?;
    ensure!(
        stored == expected,
        "stored {stored:?}, sent once each {expected:?}"
    );
    println!(
        "first answer {first:?}, repeated identically before and after SIGKILL and SIGTERM restarts"
    );
    broker.terminate().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_produce_survives_restart() -> anyhow::Result<()> {
    scenario(
        "idempotent_produce_survives_restart",
        Duration::from_secs(60),
        run(),
    )
    .await
}
