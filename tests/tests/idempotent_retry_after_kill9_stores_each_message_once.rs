//! Invariant: a client that lost the answer to a produce (the broker was SIGKILLed
//! mid-request) and retries it with the same `Idempotency-Key` after the restart gets
//! one offset per message, and in the end every message of the request is stored
//! exactly once, at the offsets the answer gives, whatever part of the request the
//! broker had stored before it died. A retry of an answered request answers the same.
//!
//! Concurrent producers send batches whose messages spread over every partition,
//! each with its own key; the broker is killed at a random moment (seed printed),
//! restarted, and every unanswered batch is retried. Several rounds on one data
//! directory.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde_json::Value;
use system_tests::{Api, BrokerProcess, Rng, keyed, scenario, seed};

const TOPIC: &str = "retried";
const PARTITIONS: u32 = 3;
const PRODUCERS: usize = 6;
/// Messages per request, over 12 routing keys, so that a request touches every
/// partition.
const BATCH: usize = 12;
const ROUNDS: u32 = 4;
const BATCHES_PER_PRODUCER_MAX: usize = 2_000;
const ACKED_BEFORE_KILL_MIN: usize = 100;
const KILL_DELAY_MS_MAX: u64 = 300;
const FIRST_ACKS_TIMEOUT: Duration = Duration::from_secs(15);
const PRODUCERS_STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Answered requests retried after each restart (a sample: each is one request).
const ANSWERED_RETRIES_MAX: usize = 40;
const PULL_MAX: usize = 1_000;

/// One produce request: its idempotency key and messages.
#[derive(Clone, Debug)]
struct Request {
    key: String,
    messages: Vec<Value>,
}

/// What one producer did in a round.
#[derive(Debug, Default)]
struct Report {
    answered: Vec<(Request, Vec<(u32, u64)>)>,
    unanswered: Option<Request>,
    failure: Option<(Instant, String)>,
}

async fn send(api: &Api, request: &Request) -> anyhow::Result<Vec<(u32, u64)>> {
    api.produce(
        TOPIC,
        &request.messages,
        "all",
        &[("Idempotency-Key", &request.key)],
    )
    .await
}

async fn produce(api: Api, producer: usize, round: u32, acked: Arc<AtomicUsize>) -> Report {
    let mut report = Report::default();
    for n in 0..BATCHES_PER_PRODUCER_MAX {
        let key = format!("r{round}-p{producer}-b{n}");
        let messages = (0..BATCH)
            .map(|i| keyed(&format!("route-{i}"), &format!("{key}-m{i}")))
            .collect();
        let request = Request { key, messages };
        match send(&api, &request).await {
            Ok(offsets) => {
                report.answered.push((request, offsets));
                acked.fetch_add(BATCH, Ordering::Relaxed);
            }
            Err(error) => {
                report.failure = Some((Instant::now(), format!("{error:#}")));
                report.unanswered = Some(request);
                break;
            }
        }
    }
    report
}

/// Everything answered so far: the request and where its messages are.
type Ledger = Vec<(Request, Vec<(u32, u64)>)>;

async fn round(
    broker: &mut BrokerProcess,
    ledger: &mut Ledger,
    rng: &mut Rng,
    round: u32,
) -> anyhow::Result<()> {
    let acked = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let api = broker.api().clone();
            tokio::spawn(produce(api, p, round, Arc::clone(&acked)))
        })
        .collect();
    let since = Instant::now();
    while acked.load(Ordering::Relaxed) < ACKED_BEFORE_KILL_MIN {
        ensure!(
            since.elapsed() < FIRST_ACKS_TIMEOUT,
            "round {round}: too few answers"
        );
        ensure!(
            !tasks.iter().all(|t| t.is_finished()),
            "round {round}: producers stopped"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let delay_ms = rng.range(0, KILL_DELAY_MS_MAX);
    tokio::time::sleep(Duration::from_millis(delay_ms)).await;
    let killed_at = Instant::now();
    broker.kill9().await?;
    let mut unanswered = Vec::new();
    for task in tasks {
        let report = tokio::time::timeout(PRODUCERS_STOP_TIMEOUT, task)
            .await
            .context("a producer did not stop after the kill")??;
        if let Some((at, error)) = &report.failure
            && *at < killed_at
        {
            bail!("round {round}: a produce failed while the broker was up: {error}");
        }
        ledger.extend(report.answered);
        unanswered.extend(report.unanswered);
    }
    broker.restart().await?;
    let api = broker.api();
    for request in &unanswered {
        let offsets = send(api, request)
            .await
            .with_context(|| format!("round {round}: retrying {} after the kill", request.key))?;
        ledger.push((request.clone(), offsets));
    }
    let sample = ledger.len().saturating_sub(ANSWERED_RETRIES_MAX);
    for (request, first) in &ledger[sample..] {
        let again = send(api, request).await?;
        ensure!(
            &again == first,
            "{}: a retry answered {again:?}, first {first:?}",
            request.key
        );
    }
    println!(
        "round {round}: killed {delay_ms} ms after {ACKED_BEFORE_KILL_MIN} answers; \
         {} requests retried after the restart",
        unanswered.len()
    );
    Ok(())
}

/// Reads the whole topic through a new subscription: (partition, offset) -> value.
async fn read_all(api: &Api, sub: &str) -> anyhow::Result<BTreeMap<(u32, u64), String>> {
    api.subscribe(TOPIC, sub, "earliest", false).await?;
    let total: u64 = api.high_watermarks(TOPIC).await?.iter().sum();
    let mut stored = BTreeMap::new();
    for _ in 0..total as usize / PULL_MAX + 20 {
        if stored.len() as u64 >= total {
            break;
        }
        let batch = api.pull(TOPIC, sub, PULL_MAX, 200).await?;
        ensure!(!batch.is_empty(), "an empty pull before the end");
        for m in batch {
            ensure!(
                stored.insert((m.partition, m.offset), m.value).is_none(),
                "pulled twice"
            );
        }
    }
    ensure!(
        stored.len() as u64 == total,
        "read {} of {total}",
        stored.len()
    );
    Ok(stored)
}

/// Every message of every request exactly once, at its answered offset. A message
/// stored without an answer for it is a duplicate the retry made or an orphan.
fn check(ledger: &Ledger, stored: &BTreeMap<(u32, u64), String>) -> anyhow::Result<()> {
    let mut placed = HashSet::new();
    for (request, offsets) in ledger {
        for (message, at) in request.messages.iter().zip(offsets) {
            let value = message["value"].as_str().context("a value")?;
            ensure!(
                stored.get(at).map(String::as_str) == Some(value),
                "{value} answered at {at:?}, stored there: {:?}",
                stored.get(at)
            );
            placed.insert(*at);
        }
    }
    let extra: Vec<_> = stored
        .iter()
        .filter(|(at, _)| !placed.contains(*at))
        .collect();
    ensure!(
        extra.is_empty(),
        "{} stored messages no answer accounts for (duplicates or orphans): {:?}",
        extra.len(),
        extra.iter().take(10).collect::<Vec<_>>()
    );
    Ok(())
}

async fn run() -> anyhow::Result<()> {
    let mut rng = Rng::new(seed()?);
    let dir = tempfile::tempdir()?;
    let mut broker = BrokerProcess::start(dir.path()).await?;
    broker.api().create_topic(TOPIC, PARTITIONS).await?;
    let mut ledger = Ledger::new();
    for r in 1..=ROUNDS {
        round(&mut broker, &mut ledger, &mut rng, r).await?;
        let stored = read_all(broker.api(), &format!("verify-{r}")).await?;
        check(&ledger, &stored)?;
        println!("round {r}: {} messages stored, each once", stored.len());
    }
    broker.terminate().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_retry_after_kill9_stores_each_message_once() -> anyhow::Result<()> {
    scenario(
        "idempotent_retry_after_kill9_stores_each_message_once",
        Duration::from_secs(90),
        run(),
    )
    .await
}
