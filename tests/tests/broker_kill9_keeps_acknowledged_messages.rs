//! Invariant: a message whose produce was answered (acks=all, default fsync
//! durability) survives a SIGKILL of the broker at any moment: after the restart it
//! is readable at the offset the answer gave, with its key and value; per key, the
//! messages are in send order; and no message appears that was never sent.
//! Messages whose produce was in flight at the kill may or may not be there.
//!
//! Concurrent producers (tokio tasks, each owning a disjoint set of keys and
//! numbering each key's messages) send keyed batches while the broker is killed at
//! a random moment (the seed is printed). Three rounds on the same data directory.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use system_tests::{Api, BrokerProcess, Pulled, Rng, keyed, scenario, seed};

const TOPIC: &str = "kill9-orders";
const PARTITIONS: u32 = 3;
/// Distinct routing keys; key `i` belongs to producer `i % PRODUCERS`.
const KEYS: usize = 20;
const PRODUCERS: usize = 4;
/// Messages per produce request.
const BATCH: usize = 10;
const ROUNDS: u32 = 3;
/// A bound on each producer's requests per round; the kill comes long before.
const BATCHES_PER_PRODUCER_MAX: usize = 2_000;
/// The kill waits for at least this many acknowledged messages in the round...
const ACKED_BEFORE_KILL_MIN: usize = 200;
/// ...and then for a random delay below this.
const KILL_DELAY_MS_MAX: u64 = 400;
/// The longest a round may take to acknowledge `ACKED_BEFORE_KILL_MIN` messages.
const FIRST_ACKS_TIMEOUT: Duration = Duration::from_secs(15);
/// The longest producers may take to notice the broker is gone.
const PRODUCERS_STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Messages per pull when reading back.
const PULL_MAX: usize = 1_000;

/// One acknowledged message: where the answer put it, and what it was.
#[derive(Clone, Debug)]
struct Acked {
    partition: u32,
    offset: u64,
    key: String,
    seq: u64,
}

/// What one producer did in one round.
#[derive(Debug, Default)]
struct ProducerReport {
    /// Messages whose produce was answered 200.
    acked: Vec<Acked>,
    /// Every message sent, answered or not: (key, seq).
    sent: Vec<(String, u64)>,
    /// The next sequence number of each of its keys.
    next_seq: HashMap<String, u64>,
    /// The failure that stopped it, and when; `None` when it ran out of batches.
    failure: Option<(Instant, String)>,
}

fn key_name(index: usize) -> String {
    format!("key-{index:02}")
}

fn value_of(key: &str, seq: u64) -> String {
    format!("{key}#{seq:08}")
}

fn parse_value(value: &str) -> anyhow::Result<(String, u64)> {
    let (key, seq) = value
        .split_once('#')
        .with_context(|| format!("a value this scenario never sends: {value:?}"))?;
    let seq = seq
        .parse()
        .with_context(|| format!("a value this scenario never sends: {value:?}"))?;
    Ok((key.to_owned(), seq))
}

/// Sends batches of its own keys until a request fails or the bound is reached.
async fn produce(
    api: Api,
    mut rng: Rng,
    mut next_seq: HashMap<String, u64>,
    acked_total: Arc<AtomicUsize>,
) -> ProducerReport {
    let keys: Vec<String> = next_seq.keys().cloned().collect();
    let mut report = ProducerReport::default();
    for _ in 0..BATCHES_PER_PRODUCER_MAX {
        let mut batch = Vec::with_capacity(BATCH);
        let mut messages = Vec::with_capacity(BATCH);
        for _ in 0..BATCH {
            let key = &keys[rng.range(0, keys.len() as u64) as usize];
            let seq = next_seq.entry(key.clone()).or_insert(0);
            messages.push(keyed(key, &value_of(key, *seq)));
            batch.push((key.clone(), *seq));
            *seq += 1;
        }
        report.sent.extend(batch.iter().cloned());
        match api.produce(TOPIC, &messages, "all", &[]).await {
            Ok(offsets) => {
                for ((partition, offset), (key, seq)) in offsets.into_iter().zip(batch) {
                    report.acked.push(Acked {
                        partition,
                        offset,
                        key,
                        seq,
                    });
                }
                acked_total.fetch_add(BATCH, Ordering::Relaxed);
            }
            Err(error) => {
                report.failure = Some((Instant::now(), format!("{error:#}")));
                break;
            }
        }
    }
    report.next_seq = next_seq;
    report
}

/// Everything the scenario knows across rounds.
#[derive(Default)]
struct Ledger {
    acked: Vec<Acked>,
    sent: HashSet<(String, u64)>,
    next_seq: HashMap<String, u64>,
}

/// Runs the producers of one round and SIGKILLs the broker under them.
async fn round_of_producing(
    broker: &mut BrokerProcess,
    ledger: &mut Ledger,
    rng: &mut Rng,
    round: u32,
) -> anyhow::Result<()> {
    let acked_total = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::with_capacity(PRODUCERS);
    for producer in 0..PRODUCERS {
        let own: HashMap<String, u64> = (0..KEYS)
            .filter(|k| k % PRODUCERS == producer)
            .map(|k| {
                let key = key_name(k);
                let next = ledger.next_seq.get(&key).copied().unwrap_or(0);
                (key, next)
            })
            .collect();
        tasks.push(tokio::spawn(produce(
            broker.api().clone(),
            rng.fork(),
            own,
            Arc::clone(&acked_total),
        )));
    }
    let waiting_since = Instant::now();
    while acked_total.load(Ordering::Relaxed) < ACKED_BEFORE_KILL_MIN {
        ensure!(
            waiting_since.elapsed() < FIRST_ACKS_TIMEOUT,
            "round {round}: fewer than {ACKED_BEFORE_KILL_MIN} messages acknowledged in \
             {FIRST_ACKS_TIMEOUT:?}"
        );
        ensure!(
            !tasks.iter().all(|t| t.is_finished()),
            "round {round}: every producer stopped before the kill"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let delay_ms = rng.range(0, KILL_DELAY_MS_MAX);
    tokio::time::sleep(Duration::from_millis(delay_ms)).await;
    let killed_at = Instant::now();
    broker.kill9().await?;
    let mut acked_round = 0;
    let mut sent_round = 0;
    for task in tasks {
        let report = tokio::time::timeout(PRODUCERS_STOP_TIMEOUT, task)
            .await
            .context("a producer did not stop after the kill")??;
        if let Some((failed_at, error)) = &report.failure
            && *failed_at < killed_at
        {
            bail!("round {round}: a produce failed while the broker was up: {error}");
        }
        acked_round += report.acked.len();
        sent_round += report.sent.len();
        ledger.acked.extend(report.acked);
        ledger.sent.extend(report.sent);
        ledger.next_seq.extend(report.next_seq);
    }
    println!(
        "round {round}: killed {delay_ms} ms after {ACKED_BEFORE_KILL_MIN} acks; \
         {acked_round} acknowledged, {} in flight at the kill",
        sent_round - acked_round
    );
    Ok(())
}

/// Reads the whole topic through a new subscription from earliest, checking that
/// each pull continues each partition exactly where the last one left it.
async fn read_all(api: &Api, round: u32) -> anyhow::Result<BTreeMap<(u32, u64), Pulled>> {
    let sub = format!("verify-{round}");
    api.subscribe(TOPIC, &sub, "earliest", false).await?;
    let ends = api.high_watermarks(TOPIC).await?;
    ensure!(ends.len() == PARTITIONS as usize, "partitions: {ends:?}");
    let total: u64 = ends.iter().sum();
    let mut next = vec![0u64; ends.len()];
    let mut found = BTreeMap::new();
    let pulls_max = total as usize / PULL_MAX + 20;
    for _ in 0..pulls_max {
        if next.iter().zip(&ends).all(|(n, e)| n >= e) {
            break;
        }
        let batch = api.pull(TOPIC, &sub, PULL_MAX, 200).await?;
        ensure!(
            !batch.is_empty(),
            "pull came back empty at {next:?}, before the ends {ends:?}"
        );
        for message in batch {
            let p = message.partition as usize;
            ensure!(p < next.len(), "a message of partition {p}");
            ensure!(
                message.offset == next[p],
                "partition {p}: pulled offset {} where {} was next",
                message.offset,
                next[p]
            );
            next[p] += 1;
            found.insert((message.partition, message.offset), message);
        }
    }
    ensure!(
        next.iter().zip(&ends).all(|(n, e)| n >= e),
        "read up to {next:?}, not to the ends {ends:?}, in {pulls_max} pulls"
    );
    Ok(found)
}

/// Checks the invariants on everything stored.
fn check(ledger: &Ledger, found: &BTreeMap<(u32, u64), Pulled>, round: u32) -> anyhow::Result<()> {
    // Each stored message was sent, once, under its own key; per key, one partition
    // and increasing sequence numbers in offset order.
    let mut last: HashMap<String, (u32, u64)> = HashMap::new();
    let mut seen = HashSet::new();
    for ((partition, offset), message) in found {
        let (key, seq) = parse_value(&message.value)?;
        ensure!(
            message.key.as_deref() == Some(key.as_str()),
            "{partition}/{offset}: key {:?} with value {:?}",
            message.key,
            message.value
        );
        ensure!(
            ledger.sent.contains(&(key.clone(), seq)),
            "{partition}/{offset}: {:?} was never sent",
            message.value
        );
        ensure!(
            seen.insert((key.clone(), seq)),
            "{partition}/{offset}: {:?} is stored twice",
            message.value
        );
        if let Some((p, s)) = last.get(&key) {
            ensure!(
                *p == *partition,
                "key {key} is in partitions {p} and {partition}"
            );
            ensure!(
                *s < seq,
                "key {key}: seq {seq} at {partition}/{offset} after seq {s}: out of send order"
            );
        }
        last.insert(key, (*partition, seq));
    }
    // Every acknowledged message is where its answer put it.
    for acked in &ledger.acked {
        let stored = found
            .get(&(acked.partition, acked.offset))
            .with_context(|| format!("round {round}: acknowledged {acked:?} is lost"))?;
        ensure!(
            stored.key.as_deref() == Some(acked.key.as_str())
                && stored.value == value_of(&acked.key, acked.seq),
            "round {round}: acknowledged {acked:?} reads back as {stored:?}"
        );
    }
    let unanswered = found.len() - ledger.acked.len();
    println!(
        "round {round}: {} stored, all {} acknowledged among them, {unanswered} unanswered \
         ones kept",
        found.len(),
        ledger.acked.len()
    );
    Ok(())
}

async fn run() -> anyhow::Result<()> {
    let mut rng = Rng::new(seed()?);
    let dir = tempfile::tempdir()?;
    let mut broker = BrokerProcess::start(dir.path()).await?;
    broker.api().create_topic(TOPIC, PARTITIONS).await?;
    let mut ledger = Ledger::default();
    for round in 1..=ROUNDS {
        round_of_producing(&mut broker, &mut ledger, &mut rng, round).await?;
        broker.restart().await?;
        let found = read_all(broker.api(), round).await?;
        check(&ledger, &found, round)?;
    }
    broker.terminate().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_kill9_keeps_acknowledged_messages() -> anyhow::Result<()> {
    scenario(
        "broker_kill9_keeps_acknowledged_messages",
        Duration::from_secs(90),
        run(),
    )
    .await
}
