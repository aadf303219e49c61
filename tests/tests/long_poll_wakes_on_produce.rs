//! Invariant: a long poll returns as soon as a message is there, and not before its
//! wait runs out when none comes. A subscription pull with `wait_ms=5000` parked on
//! an empty subscription returns within a few milliseconds of a produce made over
//! another connection; a pull with `wait_ms=300` and no produce returns empty after
//! at least 300 ms. The same for a queue receive and a send. The topic and the queue
//! have several partitions and the messages go to different ones: a poll waits on
//! all of them.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use serde_json::json;
use system_tests::{Api, BrokerProcess, keyed, scenario};

const TOPIC: &str = "wake";
const SUB: &str = "waiter";
const QUEUE: &str = "wake-queue";
const TOPIC_PARTITIONS: u32 = 3;
const QUEUE_PARTITIONS: u32 = 2;
/// The wait of a parked poll: far longer than the wake-up may take.
const LONG_WAIT_MS: u64 = 5_000;
/// How long the poll is left parked before the produce.
const PARK: Duration = Duration::from_millis(300);
/// The bound on the time from the produce's answer to the poll's answer.
const WAKE_LATENCY_MAX: Duration = Duration::from_millis(200);
/// The wait of a poll that gets nothing.
const SHORT_WAIT_MS: u64 = 300;
/// How much longer than its wait an empty poll may take to answer.
const EMPTY_SLACK: Duration = Duration::from_millis(1_500);
/// Wake-ups measured per kind.
const ROUNDS: usize = 5;

/// One wake-up: from the produce request to the poll's answer, and from the
/// produce's answer to the poll's answer (negative when the poll answered first,
/// counted as zero).
#[derive(Clone, Copy, Debug)]
struct Wake {
    from_request: Duration,
    from_answer: Duration,
}

async fn pull_wake(consumer: Api, producer: &Api, round: usize) -> anyhow::Result<Wake> {
    let parked = tokio::spawn(async move {
        let messages = consumer.pull(TOPIC, SUB, 10, LONG_WAIT_MS).await;
        (Instant::now(), messages)
    });
    tokio::time::sleep(PARK).await;
    ensure!(
        !parked.is_finished(),
        "the pull returned before anything was produced"
    );
    let value = format!("wake-{round}");
    let requested = Instant::now();
    let key = format!("key-{round}");
    producer
        .produce(TOPIC, &[keyed(&key, &value)], "all", &[])
        .await?;
    let answered = Instant::now();
    let (returned, messages) = parked.await?;
    let messages = messages?;
    ensure!(
        messages.len() == 1 && messages[0].value == value,
        "the pull returned {messages:?}"
    );
    Ok(Wake {
        from_request: returned.saturating_duration_since(requested),
        from_answer: returned.saturating_duration_since(answered),
    })
}

async fn receive_wake(consumer: Api, producer: &Api, round: usize) -> anyhow::Result<Wake> {
    let parked = tokio::spawn(async move {
        let messages = consumer.receive(QUEUE, 10, LONG_WAIT_MS, 30_000).await;
        (Instant::now(), messages, consumer)
    });
    tokio::time::sleep(PARK).await;
    ensure!(
        !parked.is_finished(),
        "the receive returned before anything was sent"
    );
    let value = format!("wake-{round}");
    let requested = Instant::now();
    producer
        .send(QUEUE, &[keyed(&format!("key-{round}"), &value)])
        .await?;
    let answered = Instant::now();
    let (returned, messages, consumer) = parked.await?;
    let messages = messages?;
    ensure!(
        messages.len() == 1 && messages[0].value == value,
        "the receive returned {messages:?}"
    );
    consumer.ack(QUEUE, &[messages[0].receipt.clone()]).await?;
    Ok(Wake {
        from_request: returned.saturating_duration_since(requested),
        from_answer: returned.saturating_duration_since(answered),
    })
}

fn report(kind: &str, wakes: &[Wake]) -> anyhow::Result<()> {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mut from_answer: Vec<f64> = wakes.iter().map(|w| ms(w.from_answer)).collect();
    from_answer.sort_by(f64::total_cmp);
    let from_request: Vec<String> = wakes
        .iter()
        .map(|w| format!("{:.1}", ms(w.from_request)))
        .collect();
    let median = from_answer.get(from_answer.len() / 2).context("no wakes")?;
    println!(
        "{kind}: latency after the produce's answer: median {median:.2} ms, max {:.2} ms \
         (all {from_answer:.2?}); after its request: {from_request:?} ms",
        from_answer.last().context("no wakes")?
    );
    for w in wakes {
        ensure!(
            w.from_answer < WAKE_LATENCY_MAX,
            "{kind}: woke {:?} after the produce was answered (bound {WAKE_LATENCY_MAX:?})",
            w.from_answer
        );
    }
    Ok(())
}

/// Checks that an empty poll waits out its `wait_ms` (and not much longer).
async fn empty_wait<F>(kind: &str, poll: F) -> anyhow::Result<()>
where
    F: Future<Output = anyhow::Result<usize>>,
{
    let started = Instant::now();
    let count = poll.await?;
    let took = started.elapsed();
    println!("{kind}: empty poll with wait_ms={SHORT_WAIT_MS} returned after {took:?}");
    ensure!(count == 0, "{kind}: {count} messages from an empty source");
    let wait = Duration::from_millis(SHORT_WAIT_MS);
    ensure!(
        took >= wait,
        "{kind}: returned after {took:?}, before its wait"
    );
    ensure!(
        took < wait + EMPTY_SLACK,
        "{kind}: returned only after {took:?}"
    );
    Ok(())
}

async fn run() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut broker = BrokerProcess::start(dir.path()).await?;
    let api = broker.api().clone();
    api.create_topic(TOPIC, TOPIC_PARTITIONS).await?;
    api.subscribe(TOPIC, SUB, "latest", false).await?;
    api.create_queue(QUEUE, json!({ "partitions": QUEUE_PARTITIONS }))
        .await?;

    let mut wakes = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS {
        wakes.push(pull_wake(api.fresh()?, &api.fresh()?, round).await?);
    }
    report("subscription pull", &wakes)?;
    let mut wakes = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS {
        wakes.push(receive_wake(api.fresh()?, &api.fresh()?, round).await?);
    }
    report("queue receive", &wakes)?;

    empty_wait("subscription pull", async {
        Ok(api.pull(TOPIC, SUB, 10, SHORT_WAIT_MS).await?.len())
    })
    .await?;
    empty_wait("queue receive", async {
        Ok(api.receive(QUEUE, 10, SHORT_WAIT_MS, 30_000).await?.len())
    })
    .await?;
    broker.terminate().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_wakes_on_produce() -> anyhow::Result<()> {
    scenario("long_poll_wakes_on_produce", Duration::from_secs(60), run()).await
}
