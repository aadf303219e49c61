//! Invariant: a graceful shutdown is prompt even while consumers are long-polling.
//! Idle consumers always have a pull or a receive parked (that is what `wait_ms` is
//! for), so SIGTERM must end parked polls at once (with an empty answer or a closed
//! connection) rather than wait them out: the process exits with status 0 within a
//! few seconds, well inside an orchestrator's grace period (Kubernetes: 30 s).

use std::time::{Duration, Instant};

use anyhow::ensure;
use serde_json::json;
use system_tests::{BrokerProcess, scenario};

const TOPIC: &str = "idle";
const SUB: &str = "consumer";
const QUEUE: &str = "idle-queue";
/// The longest wait the broker accepts: what an idle consumer asks for.
const PARKED_WAIT_MS: u64 = 30_000;
/// How long the polls are left parked before SIGTERM.
const PARK: Duration = Duration::from_millis(300);
/// The bound on a graceful shutdown with parked polls.
const SHUTDOWN_MAX: Duration = Duration::from_secs(5);

async fn run() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut broker = BrokerProcess::start(dir.path()).await?;
    let api = broker.api().clone();
    api.create_topic(TOPIC, 1).await?;
    api.subscribe(TOPIC, SUB, "latest", false).await?;
    api.create_queue(QUEUE, json!({})).await?;

    let puller = api.fresh()?;
    let pull = tokio::spawn(async move {
        let answer = puller.pull(TOPIC, SUB, 10, PARKED_WAIT_MS).await;
        (Instant::now(), answer.map(|m| m.len()))
    });
    let receiver = api.fresh()?;
    let receive = tokio::spawn(async move {
        let answer = receiver.receive(QUEUE, 10, PARKED_WAIT_MS, 30_000).await;
        (Instant::now(), answer.map(|m| m.len()))
    });
    tokio::time::sleep(PARK).await;
    ensure!(
        !pull.is_finished() && !receive.is_finished(),
        "the polls did not park"
    );

    let signalled = Instant::now();
    let took = broker.terminate_within(SHUTDOWN_MAX).await?;
    println!("graceful shutdown with two parked polls took {took:?}");
    for (what, task) in [("pull", pull), ("receive", receive)] {
        let (ended, answer) = task.await?;
        let after = ended.saturating_duration_since(signalled);
        println!("parked {what} ended {after:?} after SIGTERM: {answer:?}");
        if let Ok(count) = answer {
            ensure!(count == 0, "the parked {what} returned {count} messages");
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_sigterm_ends_long_polls() -> anyhow::Result<()> {
    scenario(
        "broker_sigterm_ends_long_polls",
        Duration::from_secs(30),
        run(),
    )
    .await
}
