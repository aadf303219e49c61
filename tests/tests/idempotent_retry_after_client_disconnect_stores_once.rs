//! Invariant: a client that gives up on a produce or a send (it closes its connection
//! right after writing the request, as a timeout does) and retries with the same
//! `Idempotency-Key` finds each message stored once: the broker finishes the first
//! request although nobody waits for its answer, and the retry gets its answer.

use std::time::Duration;

use anyhow::{Context as _, ensure};
use serde_json::json;
use system_tests::{Api, BrokerProcess, scenario};
use tokio::io::AsyncWriteExt as _;

const TOPIC: &str = "payments";
const QUEUE: &str = "refunds";
const ROUNDS: usize = 20;

/// Writes the request on a connection of its own and closes it at once.
async fn write_and_go_away(api: &Api, path: &str, key: &str, body: &str) -> anyhow::Result<()> {
    let address = api.base().trim_start_matches("http://");
    let token = api.token().context("no login")?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nIdempotency-Key: {key}\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    stream.write_all(request.as_bytes()).await?;
    stream.shutdown().await?;
    drop(stream);
    Ok(())
}

async fn run() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = BrokerProcess::start(dir.path()).await?;
    let api = broker.api().clone();
    api.create_topic(TOPIC, 1).await?;
    api.create_queue(QUEUE, json!({})).await?;
    for round in 0..ROUNDS {
        let key = format!("payment-{round}");
        let messages = vec![json!({"value": format!("p-{round}")})];
        let body = json!({ "messages": messages }).to_string();
        write_and_go_away(&api, &format!("/v1/topics/{TOPIC}/messages"), &key, &body).await?;
        let offsets = api
            .produce(TOPIC, &messages, "leader", &[("Idempotency-Key", &key)])
            .await?;
        ensure!(
            offsets == [(0, round as u64)],
            "round {round}: the retry answered {offsets:?}"
        );

        let key = format!("refund-{round}");
        let messages = vec![json!({"value": format!("r-{round}")})];
        let body = json!({ "messages": messages }).to_string();
        write_and_go_away(&api, &format!("/v1/queues/{QUEUE}/messages"), &key, &body).await?;
        let ids = api
            .send_with(QUEUE, &messages, &[("Idempotency-Key", &key)])
            .await?;
        ensure!(
            ids == [format!("0-{round}")],
            "round {round}: the retry answered {ids:?}"
        );
    }
    let ends = api.log_end_offsets(TOPIC).await?;
    ensure!(ends == [ROUNDS as u64], "topic log ends {ends:?}");
    let (depth, _) = api.queue_depth(QUEUE).await?;
    ensure!(depth == ROUNDS as u64, "queue depth {depth}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_retry_after_client_disconnect_stores_once() -> anyhow::Result<()> {
    scenario(
        "idempotent_retry_after_client_disconnect_stores_once",
        Duration::from_secs(60),
        run(),
    )
    .await
}
