//! Readers that follow the log while one writer appends and rolls segments each see a
//! gap-free, ordered prefix of what was written: the record at offset n is
//! `record-<n>`, offsets are consecutive with no duplicates, and no read returns a
//! record past the watermark of its bound (the log end, or the durable offset) as it
//! stood when the read returned.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log_engine::{Log, LogConfig, Offset, ReadBatches, ReadBound, Record};

type TestResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Records the writer appends in all.
const RECORDS_TOTAL: u64 = 20_000;
/// A batch holds between 1 and this many records.
const BATCH_RECORDS_MAX: u64 = 50;
/// The writer flushes after about one batch in this many.
const FLUSH_ONE_IN: u64 = 8;
/// The writer pauses after about one batch in this many, so readers catch up and wait.
const PAUSE_ONE_IN: u64 = 64;
/// The whole scenario must finish within this; a stuck reader fails instead of hanging.
const DEADLINE: Duration = Duration::from_secs(60);
/// How long a caught-up reader blocks before it checks the deadline again.
const WAIT_SLICE: Duration = Duration::from_millis(200);
/// Environment variable that replays a seed printed by an earlier run.
const SEED_VAR: &str = "LOG_ENGINE_READERS_SEED";

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+).into());
        }
    };
}

/// Small segments and a dense index, so the writer rolls a dozen segments and
/// readers cross segment boundaries and use index lookups while it does.
fn config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 32 * 1024,
        index_interval_bytes: 512,
        index_bytes_max: 64 * 1024,
        ..LogConfig::default()
    }
}

/// SplitMix64: a deterministic generator, so a printed seed replays the batch sizes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn seed() -> u64 {
    let from_env = std::env::var(SEED_VAR).ok().and_then(|s| s.parse().ok());
    from_env.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    })
}

fn expected_value(offset: u64) -> String {
    format!("record-{offset}")
}

/// How one reader follows the log.
#[derive(Clone, Copy, Debug)]
struct Follower {
    name: &'static str,
    bound: ReadBound,
    /// Passed to `read`; a read returns at least one batch whatever this is.
    max_bytes: usize,
    /// Consume at most this many records of each read, so the next read starts in the
    /// middle of a batch (the first batch returned then starts before `from`).
    records_per_read_max: Option<usize>,
}

const FOLLOWERS: [Follower; 5] = [
    Follower {
        name: "log-end, one batch per read",
        bound: ReadBound::LogEnd,
        max_bytes: 1,
        records_per_read_max: None,
    },
    Follower {
        name: "log-end, 4 KiB reads",
        bound: ReadBound::LogEnd,
        max_bytes: 4 * 1024,
        records_per_read_max: None,
    },
    Follower {
        name: "log-end, 1 MiB reads",
        bound: ReadBound::LogEnd,
        max_bytes: 1 << 20,
        records_per_read_max: None,
    },
    Follower {
        name: "log-end, mid-batch starts",
        bound: ReadBound::LogEnd,
        max_bytes: 2 * 1024,
        records_per_read_max: Some(7),
    },
    Follower {
        name: "durable, 8 KiB reads",
        bound: ReadBound::Durable,
        max_bytes: 8 * 1024,
        records_per_read_max: None,
    },
];

/// What one follower did, for the report.
#[derive(Debug, Default)]
struct FollowStats {
    reads: u64,
    waits: u64,
}

#[test]
fn concurrent_readers_see_a_gap_free_ordered_prefix() -> TestResult {
    let seed = seed();
    println!("seed {seed} (replay with {SEED_VAR}={seed})");
    let dir = tempfile::tempdir()?;
    let log = Log::open(dir.path(), config())?;
    let deadline = Instant::now() + DEADLINE;
    let writer_failed = AtomicBool::new(false);
    let results = thread::scope(|scope| {
        let readers: Vec<_> = FOLLOWERS
            .iter()
            .map(|f| scope.spawn(|| follow(&log, *f, deadline, &writer_failed)))
            .collect();
        let written = write_all(&log, seed);
        if written.is_err() {
            writer_failed.store(true, Ordering::Release);
        }
        let followed: Vec<_> = readers.into_iter().map(|r| r.join()).collect();
        (written, followed)
    });
    let (written, followed) = results;
    written.map_err(|e| format!("writer failed (seed {seed}): {e}"))?;
    for (follower, result) in FOLLOWERS.iter().zip(followed) {
        let stats = result
            .map_err(|_| format!("reader {:?} panicked (seed {seed})", follower.name))?
            .map_err(|e| format!("reader {:?} (seed {seed}): {e}", follower.name))?;
        println!("{}: {stats:?}", follower.name);
    }
    check_final_state(&log)?;
    log.close()?;
    Ok(())
}

/// Appends `RECORDS_TOTAL` records in batches of random sizes, flushing now and then,
/// and flushes at the end so the durable follower can finish.
fn write_all(log: &Log, seed: u64) -> TestResult {
    let mut rng = Rng(seed);
    let mut next = 0u64;
    while next < RECORDS_TOTAL {
        let count = (rng.below(BATCH_RECORDS_MAX) + 1).min(RECORDS_TOTAL - next);
        let records: Vec<Record> = (next..next + count)
            .map(|n| Record::new(expected_value(n), 1_700_000_000_000 + n as i64))
            .collect();
        let info = log.append_records(&records)?;
        ensure!(
            info.base_offset == Offset(next) && info.next_offset() == Offset(next + count),
            "append of {count} records at {next} went to {info:?}"
        );
        next += count;
        if rng.below(FLUSH_ONE_IN) == 0 {
            log.flush()?;
        }
        if rng.below(PAUSE_ONE_IN) == 0 {
            thread::sleep(Duration::from_millis(1));
        }
    }
    log.flush()?;
    Ok(())
}

/// Reads from offset 0 until `RECORDS_TOTAL`, waiting when caught up.
fn follow(
    log: &Log,
    follower: Follower,
    deadline: Instant,
    writer_failed: &AtomicBool,
) -> TestResult<FollowStats> {
    let mut stats = FollowStats::default();
    let mut from = Offset::ZERO;
    while from.0 < RECORDS_TOTAL {
        ensure!(
            Instant::now() < deadline,
            "no progress past {from} before the deadline (watermark {})",
            log.watermark(follower.bound)
        );
        ensure!(!writer_failed.load(Ordering::Acquire), "the writer failed");
        if log.watermark(follower.bound) <= from {
            stats.waits += 1;
            log.wait_for_blocking(from, follower.bound, WAIT_SLICE);
            continue;
        }
        let read = log.read(from, follower.max_bytes, follower.bound)?;
        // Watermarks only grow: whatever the read returned lies below this one.
        let limit = log.watermark(follower.bound);
        from = check_read(&read, from, limit, follower)?;
        stats.reads += 1;
    }
    ensure!(
        from.0 == RECORDS_TOTAL,
        "read past the end: next offset {from}"
    );
    Ok(stats)
}

/// Checks one read that started at `from` and returns where the next one starts.
fn check_read(
    read: &ReadBatches,
    from: Offset,
    limit: Offset,
    follower: Follower,
) -> TestResult<Offset> {
    let take = follower.records_per_read_max.unwrap_or(usize::MAX);
    let mut expected = from.0;
    for record in read.records().take(take) {
        let record = record?;
        ensure!(
            record.offset.0 == expected,
            "read from {from}: record at offset {} where {expected} was due",
            record.offset
        );
        ensure!(
            record.offset < limit && record.offset.0 < RECORDS_TOTAL,
            "read from {from}: record at offset {} is past the watermark {limit}",
            record.offset
        );
        let want = expected_value(expected);
        ensure!(
            record.value == want.as_bytes(),
            "offset {expected}: value {:?}, expected {want:?}",
            String::from_utf8_lossy(record.value)
        );
        expected += 1;
    }
    ensure!(
        expected > from.0,
        "read from {from} below the watermark {limit} returned no record"
    );
    if follower.records_per_read_max.is_none() {
        ensure!(
            read.next_offset().0 == expected,
            "read from {from}: next offset {} but the last record was {}",
            read.next_offset(),
            expected - 1
        );
    }
    Ok(Offset(expected))
}

/// Everything written is in the log and durable, across several segments.
fn check_final_state(log: &Log) -> TestResult {
    ensure!(
        log.log_end_offset().0 == RECORDS_TOTAL,
        "log end {} after writing {RECORDS_TOTAL} records",
        log.log_end_offset()
    );
    ensure!(
        log.durable_offset().0 == RECORDS_TOTAL,
        "durable offset {} after the final flush",
        log.durable_offset()
    );
    ensure!(
        log.segment_count() >= 3,
        "only {} segments: the test meant to read across rolls",
        log.segment_count()
    );
    Ok(())
}
