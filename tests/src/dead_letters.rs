//! Helpers of the dead-letter scenarios: who leads a queue, and running a message
//! out of its deliveries.

use std::time::Duration;

use anyhow::ensure;

use crate::api::{Api, unkeyed};

/// The leader of partition 0 of `queue` (which leads all its partitions), as
/// `api`'s node describes it; an error while it has none.
pub async fn queue_leader(api: &Api, queue: &str) -> anyhow::Result<u32> {
    let body = api.get_ok(&format!("/v1/queues/{queue}")).await?;
    let leader = body["partitions"][0]["leader"].as_u64().unwrap_or(0) as u32;
    ensure!(leader != 0, "{queue} has no leader: {body}");
    Ok(leader)
}

/// Sends `value` to `queue` (one delivery per message, leased for `lease_ms`),
/// receives it once and lets its lease run out, then receives until `dlq` holds
/// `depth` messages (at most 30 s). Fails if the message is delivered again.
pub async fn exhaust(
    api: &Api,
    (queue, dlq): (&str, &str),
    lease_ms: u64,
    value: &str,
    depth: u64,
) -> anyhow::Result<()> {
    api.send(queue, &[unkeyed(value)]).await?;
    let got = api.receive(queue, 1, 5_000, lease_ms).await?;
    ensure!(
        got.len() == 1 && got[0].value == value,
        "first delivery of {value}: {:?}",
        got.iter().map(|m| &m.value).collect::<Vec<_>>()
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        tokio::time::sleep(Duration::from_millis(lease_ms + 100)).await;
        // The next receive finds the message exhausted and moves it.
        let again = api.receive(queue, 1, 0, lease_ms).await?;
        ensure!(again.is_empty(), "{value} was delivered a second time");
        let described = api.get_ok(&format!("/v1/queues/{dlq}")).await?;
        if described["depth"].as_u64() == Some(depth) {
            return Ok(());
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "{value} did not reach {dlq}: {described}"
        );
    }
}
