//! Invariant: after a SIGKILL and a restart, a subscription resumes at its committed
//! offsets (pulls after the commit are forgotten), and an `auto_commit`
//! subscription resumes at the start of its last pull (each pull commits what the
//! pulls before it returned, so the last one comes again). Nothing is skipped,
//! nothing is read twice past the resume point.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::ensure;
use system_tests::{Api, BrokerProcess, Pulled, keyed, scenario};

const TOPIC: &str = "resume";
const PARTITIONS: u32 = 3;
const MESSAGES: usize = 1_000;
const PRODUCE_BATCH: usize = 100;
const KEYS: usize = 10;
/// Pulled and committed before the kill.
const COMMITTED: usize = 300;
/// Pulled after the commit, not committed.
const UNCOMMITTED: usize = 200;
/// A pull's wait, so a pull never races a write that is not yet readable.
const PULL_WAIT_MS: u64 = 200;

/// Where each message is: (partition, offset) -> value.
type Placement = HashMap<(u32, u64), String>;

async fn produce_all(api: &Api) -> anyhow::Result<Placement> {
    let mut placement = Placement::new();
    for start in (0..MESSAGES).step_by(PRODUCE_BATCH) {
        let values: Vec<String> = (start..start + PRODUCE_BATCH)
            .map(|i| format!("m-{i:04}"))
            .collect();
        let messages: Vec<_> = values
            .iter()
            .enumerate()
            .map(|(j, v)| keyed(&format!("k{}", (start + j) % KEYS), v))
            .collect();
        let offsets = api.produce(TOPIC, &messages, "all", &[]).await?;
        placement.extend(offsets.into_iter().zip(values));
    }
    Ok(placement)
}

/// Checks that `pulled` continues every partition exactly at `from` (the next offset
/// per partition), carries the values produced there, and returns where each
/// partition now stands.
fn check_continues(
    pulled: &[Pulled],
    from: &[u64],
    placement: &Placement,
    what: &str,
) -> anyhow::Result<Vec<u64>> {
    let mut next = from.to_vec();
    for m in pulled {
        let p = m.partition as usize;
        ensure!(p < next.len(), "{what}: partition {p}");
        ensure!(
            m.offset == next[p],
            "{what}: partition {p} gave offset {} where {} was next",
            m.offset,
            next[p]
        );
        ensure!(
            placement.get(&(m.partition, m.offset)) == Some(&m.value),
            "{what}: {}/{} holds {:?}, produced there was {:?}",
            m.partition,
            m.offset,
            m.value,
            placement.get(&(m.partition, m.offset))
        );
        next[p] += 1;
    }
    Ok(next)
}

/// Pulls exactly `count` messages, checking they continue at `from`; returns the new
/// positions.
async fn pull_checked(
    api: &Api,
    sub: &str,
    count: usize,
    from: &[u64],
    placement: &Placement,
    what: &str,
) -> anyhow::Result<Vec<u64>> {
    let pulled = api.pull_n(TOPIC, sub, count, PULL_WAIT_MS).await?;
    ensure!(
        pulled.len() == count,
        "{what}: pulled {} of {count}",
        pulled.len()
    );
    check_continues(&pulled, from, placement, what)
}

async fn run() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut broker = BrokerProcess::start(dir.path()).await?;
    let api = broker.api().clone();
    api.create_topic(TOPIC, PARTITIONS).await?;
    let placement = produce_all(&api).await?;
    let ends = api.high_watermarks(TOPIC).await?;
    ensure!(
        ends.iter().sum::<u64>() == MESSAGES as u64,
        "ends {ends:?} after {MESSAGES} messages"
    );
    api.subscribe(TOPIC, "manual", "earliest", false).await?;
    api.subscribe(TOPIC, "auto", "earliest", true).await?;
    let zero = vec![0; PARTITIONS as usize];

    let committed = pull_checked(&api, "manual", COMMITTED, &zero, &placement, "manual").await?;
    let pairs: Vec<(u32, u64)> = (0..PARTITIONS).zip(committed.iter().copied()).collect();
    api.commit(TOPIC, "manual", &pairs).await?;
    ensure!(api.committed(TOPIC, "manual").await? == committed);
    let uncommitted = pull_checked(
        &api,
        "manual",
        UNCOMMITTED,
        &committed,
        &placement,
        "manual, uncommitted",
    )
    .await?;
    ensure!(
        api.committed(TOPIC, "manual").await? == committed,
        "pulls without a commit moved the committed offsets"
    );

    let auto_handled = pull_checked(&api, "auto", COMMITTED, &zero, &placement, "auto").await?;
    let last = api.pull(TOPIC, "auto", UNCOMMITTED, PULL_WAIT_MS).await?;
    ensure!(
        last.len() == UNCOMMITTED,
        "auto: the last pull gave {} of {UNCOMMITTED}",
        last.len()
    );
    let auto_pulled = check_continues(&last, &auto_handled, &placement, "auto, last pull")?;
    ensure!(
        api.committed(TOPIC, "auto").await? == auto_handled,
        "auto_commit: committed offsets are not the positions before the last pull"
    );
    println!(
        "before the kill: manual committed {committed:?}, pulled to {uncommitted:?}; \
         auto pulled to {auto_pulled:?}"
    );

    broker.kill9().await?;
    broker.restart().await?;
    let api = broker.api().clone();

    let manual_now = api.committed(TOPIC, "manual").await?;
    ensure!(
        manual_now == committed,
        "manual: committed {manual_now:?} after the restart, {committed:?} before"
    );
    let auto_now = api.committed(TOPIC, "auto").await?;
    ensure!(
        auto_now == auto_handled,
        "auto: committed {auto_now:?} after the restart, {auto_handled:?} before"
    );
    let rest = MESSAGES - COMMITTED;
    let manual_end = pull_checked(
        &api,
        "manual",
        rest,
        &committed,
        &placement,
        "manual, resumed",
    )
    .await?;
    let auto_end = pull_checked(
        &api,
        "auto",
        rest,
        &auto_handled,
        &placement,
        "auto, resumed",
    )
    .await?;
    ensure!(
        manual_end == ends && auto_end == ends,
        "not read to the ends {ends:?}"
    );
    for sub in ["manual", "auto"] {
        let extra = api.pull(TOPIC, sub, 10, 0).await?;
        ensure!(extra.is_empty(), "{sub}: messages past the end: {extra:?}");
    }
    broker.terminate().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_resumes_from_commit_after_kill9() -> anyhow::Result<()> {
    scenario(
        "subscription_resumes_from_commit_after_kill9",
        Duration::from_secs(60),
        run(),
    )
    .await
}
