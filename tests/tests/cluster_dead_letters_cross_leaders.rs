//! Invariant: in a cluster, a message that used up its deliveries reaches the
//! dead-letter queue, and a redrive brings it back, also when different nodes lead
//! the queue and its dead-letter queue, and after the dead-letter queue's leader was
//! killed. The queue's leader appends dead letters through the dead-letter queue's
//! leader, and a redrive sends letters back through the origin's leader.
//!
//! Three brokers and a real ZooKeeper; replication factor 3; the queue is created
//! before its dead-letter queue, so nothing places them together, and the
//! dead-letter queue is made again until another node leads it.

use std::time::Duration;

use anyhow::{Context, ensure};
use serde_json::{Value, json};
use system_tests::dead_letters::{exhaust, queue_leader};
use system_tests::{Api, Cluster, expect, scenario};

const QUEUE: &str = "jobs";
const DLQ: &str = "jobs.dlq";
/// The lease of a delivery; one delivery per message.
const LEASE_MS: u64 = 300;

/// Takes the one dead letter, checks where it says it came from, and gives it back.
async fn check_letter(api: &Api, value: &str) -> anyhow::Result<()> {
    let path = format!("/v1/queues/{DLQ}/receive");
    let got = expect(
        api.post(&path, &json!({"max": 10, "wait_ms": 2000}))
            .await?,
        200,
        "receive from the dead-letter queue",
    )?;
    let letters = got["messages"].as_array().context("messages")?;
    ensure!(letters.len() == 1, "dead letters: {got}");
    let letter = &letters[0];
    ensure!(letter["value"] == json!(value), "dead letter: {letter}");
    ensure!(
        letter["headers"]["mom.origin.queue"] == json!(QUEUE),
        "origin headers: {letter}"
    );
    let receipt = letter["receipt"].clone();
    let nack = format!("/v1/queues/{DLQ}/nack");
    expect(
        api.post(&nack, &json!({"receipts": [receipt], "delay_ms": 0}))
            .await?,
        200,
        "nack the dead letter",
    )?;
    Ok(())
}

/// Redrives through `api` and receives the letter back from the queue.
async fn redrive(api: &Api, value: &str) -> anyhow::Result<()> {
    let (status, moved) = api
        .post(&format!("/v1/queues/{DLQ}/redrive"), &json!({}))
        .await?;
    ensure!(status == 200, "redrive: {status} {moved}");
    ensure!(moved["moved"] == json!(1), "redrive moved {moved}");
    let back = api.receive(QUEUE, 10, 5_000, 60_000).await?;
    let values: Vec<&str> = back.iter().map(|m| m.value.as_str()).collect();
    ensure!(values == [value], "redriven back: {values:?}");
    ack_all(api, &back).await?;
    let dlq: Value = api.get_ok(&format!("/v1/queues/{DLQ}")).await?;
    ensure!(dlq["depth"] == json!(0), "{DLQ} after the redrive: {dlq}");
    Ok(())
}

async fn ack_all(api: &Api, got: &[system_tests::Received]) -> anyhow::Result<()> {
    let receipts: Vec<String> = got.iter().map(|m| m.receipt.clone()).collect();
    ensure!(api.ack(QUEUE, &receipts).await? == receipts.len() as u64);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_cross_leaders() -> anyhow::Result<()> {
    scenario(
        "cluster_dead_letters_cross_leaders",
        Duration::from_secs(300),
        async {
            let mut cluster = Cluster::start(3).await?;
            let api = cluster.node(1).api().clone();
            api.create_queue(
                QUEUE,
                json!({"replication_factor": 3, "max_deliveries": 1,
                       "visibility_timeout_ms": LEASE_MS, "dead_letter_queue": DLQ}),
            )
            .await?;
            let jobs_leader = queue_leader(&api, QUEUE).await?;
            let mut dlq_leader = 0;
            for _ in 0..4 {
                api.create_queue(DLQ, json!({"replication_factor": 3}))
                    .await?;
                dlq_leader = queue_leader(&api, DLQ).await?;
                if dlq_leader != jobs_leader {
                    break;
                }
                expect(
                    api.delete(&format!("/v1/queues/{DLQ}")).await?,
                    204,
                    "delete the dead-letter queue",
                )?;
            }
            ensure!(
                dlq_leader != jobs_leader,
                "{DLQ} is led by {QUEUE}'s leader {jobs_leader} after four creates"
            );

            // Through the node that leads the dead-letter queue: the receive is
            // forwarded to the queue's leader, which appends the letter back here.
            let at_dlq = cluster.node(dlq_leader).api().clone();
            exhaust(&at_dlq, (QUEUE, DLQ), LEASE_MS, "first", 1).await?;
            check_letter(&at_dlq, "first").await?;
            // The redrive runs on the dead-letter queue's leader, which sends the
            // letter to the queue's leader.
            redrive(&at_dlq, "first").await?;

            cluster.node_mut(dlq_leader).kill9().await?;
            let survivor = cluster.api_except(&[dlq_leader])?.clone();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            loop {
                let now = queue_leader(&survivor, DLQ).await.unwrap_or(0);
                if now != 0 && now != dlq_leader {
                    break;
                }
                ensure!(
                    tokio::time::Instant::now() < deadline,
                    "{DLQ} has no new leader after the kill"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            exhaust(&survivor, (QUEUE, DLQ), LEASE_MS, "second", 1).await?;
            check_letter(&survivor, "second").await?;
            redrive(&survivor, "second").await?;
            Ok(())
        },
    )
    .await
}
