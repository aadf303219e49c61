//! Invariant: an acknowledged queue message is never delivered again, also not after
//! a SIGKILL and a restart; every unacknowledged one is delivered again, exactly
//! once here, with a delivery count that remembers the deliveries before the kill;
//! and a lease taken before the kill still holds after the restart until it runs
//! out. Depth and in-flight numbers agree with all that.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::ensure;
use serde_json::json;
use system_tests::{Api, BrokerProcess, Received, scenario, unkeyed};

const QUEUE: &str = "jobs";
const MESSAGES: usize = 200;
const SEND_BATCH: usize = 50;
/// Received before the kill...
const RECEIVED: usize = 100;
/// ...of which acknowledged.
const ACKED: usize = 60;
/// The lease of the first receive: long enough to outlast the steps up to the kill
/// and the restart, short enough to wait out.
const LEASE_MS: u64 = 5_000;
/// The lease of the receives after the restart: short, so a delivery that is not
/// acknowledged would show up again within the scenario.
const SHORT_LEASE_MS: u64 = 1_000;
/// How long receiving after the restart may take beyond the first lease.
const REDELIVERY_GRACE: Duration = Duration::from_secs(10);

async fn send_all(api: &Api) -> anyhow::Result<HashMap<String, String>> {
    let mut values_by_id = HashMap::new();
    for start in (0..MESSAGES).step_by(SEND_BATCH) {
        let values: Vec<String> = (start..start + SEND_BATCH)
            .map(|i| format!("job-{i:03}"))
            .collect();
        let messages: Vec<_> = values.iter().map(|v| unkeyed(v)).collect();
        let ids = api.send(QUEUE, &messages).await?;
        values_by_id.extend(ids.into_iter().zip(values));
    }
    ensure!(values_by_id.len() == MESSAGES, "ids are not distinct");
    Ok(values_by_id)
}

/// Receives `count` distinct messages, all first deliveries.
async fn receive_first(api: &Api, count: usize) -> anyhow::Result<Vec<Received>> {
    let mut out: Vec<Received> = Vec::with_capacity(count);
    for _ in 0..count {
        if out.len() >= count {
            break;
        }
        let batch = api.receive(QUEUE, count - out.len(), 200, LEASE_MS).await?;
        ensure!(
            !batch.is_empty(),
            "receive came back empty after {}",
            out.len()
        );
        out.extend(batch);
    }
    ensure!(out.len() == count, "received {} of {count}", out.len());
    let ids: HashSet<_> = out.iter().map(|m| &m.id).collect();
    ensure!(
        ids.len() == count,
        "a message was delivered twice under lease"
    );
    ensure!(
        out.iter().all(|m| m.delivery_count == 1),
        "not first deliveries"
    );
    Ok(out)
}

async fn run() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut broker = BrokerProcess::start(dir.path()).await?;
    let api = broker.api().clone();
    api.create_queue(
        QUEUE,
        json!({"visibility_timeout_ms": 30_000, "max_deliveries": 5}),
    )
    .await?;
    let values_by_id = send_all(&api).await?;
    ensure!(api.queue_depth(QUEUE).await? == (MESSAGES as u64, 0));

    let leased_at = Instant::now();
    let received = receive_first(&api, RECEIVED).await?;
    for m in &received {
        ensure!(
            values_by_id.get(&m.id) == Some(&m.value),
            "{m:?} was not sent"
        );
    }
    let (to_ack, to_leave) = received.split_at(ACKED);
    let receipts: Vec<String> = to_ack.iter().map(|m| m.receipt.clone()).collect();
    ensure!(api.ack(QUEUE, &receipts).await? == ACKED as u64);
    let acked: HashSet<String> = to_ack.iter().map(|m| m.id.clone()).collect();
    let leased: HashSet<String> = to_leave.iter().map(|m| m.id.clone()).collect();
    let unacked = (MESSAGES - ACKED) as u64;
    let leased_count = (RECEIVED - ACKED) as u64;
    ensure!(api.queue_depth(QUEUE).await? == (unacked, leased_count));
    ensure!(
        leased_at.elapsed() < Duration::from_millis(LEASE_MS / 2),
        "too slow to kill under the lease: {:?}",
        leased_at.elapsed()
    );

    broker.kill9().await?;
    broker.restart().await?;
    let api = broker.api().clone();
    let lease_end = leased_at + Duration::from_millis(LEASE_MS);
    let (depth, in_flight) = api.queue_depth(QUEUE).await?;
    ensure!(
        depth == unacked,
        "depth {depth} after the restart, {unacked} unacked"
    );
    if Instant::now() < lease_end {
        ensure!(
            in_flight == leased_count,
            "in_flight {in_flight} after the restart, {leased_count} leases still running"
        );
    }
    println!(
        "restarted {:?} after the leases began; depth {depth}, in flight {in_flight}",
        leased_at.elapsed()
    );

    let redelivered = receive_rest(&api, &acked, &leased, lease_end, &values_by_id).await?;
    ensure!(redelivered.len() as u64 == unacked);
    for (id, count) in &redelivered {
        let expected = if leased.contains(id) { 2 } else { 1 };
        ensure!(
            *count == expected,
            "{id}: delivery_count {count}, expected {expected}"
        );
    }
    ensure!(api.queue_depth(QUEUE).await? == (0, 0));
    let stale: Vec<String> = to_leave.iter().map(|m| m.receipt.clone()).collect();
    let counted = api.ack(QUEUE, &stale).await?;
    ensure!(
        counted == 0,
        "{counted} receipts of leases that ran out (and were delivered again) counted as acks"
    );
    let late = api
        .receive(QUEUE, 10, SHORT_LEASE_MS + 500, SHORT_LEASE_MS)
        .await?;
    ensure!(
        late.is_empty(),
        "delivered after everything was acked: {late:?}"
    );
    broker.terminate().await?;
    Ok(())
}

/// Receives (short leases, acking each batch at once) until every unacked message
/// came; checks that no acked message comes, none comes twice, and no message leased
/// before the kill comes before its lease ran out. Returns id -> delivery count.
async fn receive_rest(
    api: &Api,
    acked: &HashSet<String>,
    leased: &HashSet<String>,
    lease_end: Instant,
    values_by_id: &HashMap<String, String>,
) -> anyhow::Result<HashMap<String, u64>> {
    let wanted = MESSAGES - ACKED;
    let deadline = lease_end + REDELIVERY_GRACE;
    let mut got: HashMap<String, u64> = HashMap::new();
    while got.len() < wanted {
        ensure!(
            Instant::now() < deadline,
            "only {} of {wanted} unacked messages came back by {REDELIVERY_GRACE:?} after \
             the leases ran out",
            got.len()
        );
        let batch = api.receive(QUEUE, 50, 500, SHORT_LEASE_MS).await?;
        let answered_at = Instant::now();
        for m in &batch {
            ensure!(
                !acked.contains(&m.id),
                "acked message {m:?} delivered again"
            );
            ensure!(
                values_by_id.get(&m.id) == Some(&m.value),
                "{m:?} was never sent"
            );
            ensure!(
                !(leased.contains(&m.id) && answered_at < lease_end),
                "{m:?} delivered again while its lease from before the kill still ran"
            );
            let previous = got.insert(m.id.clone(), m.delivery_count);
            ensure!(previous.is_none(), "{m:?} delivered twice");
        }
        let receipts: Vec<String> = batch.iter().map(|m| m.receipt.clone()).collect();
        if !receipts.is_empty() {
            let n = api.ack(QUEUE, &receipts).await?;
            ensure!(
                n == receipts.len() as u64,
                "acked {n} of {}",
                receipts.len()
            );
        }
    }
    let missing: Vec<_> = values_by_id
        .keys()
        .filter(|id| !acked.contains(*id) && !got.contains_key(*id))
        .collect();
    ensure!(missing.is_empty(), "never delivered again: {missing:?}");
    Ok(got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_acks_survive_kill9() -> anyhow::Result<()> {
    scenario("queue_acks_survive_kill9", Duration::from_secs(60), run()).await
}
