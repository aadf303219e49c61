//! Time retention deletes the active segment too once its newest record is older than
//! the limit: the log rolls a new, empty active segment at its end, deletes the old
//! ones, and keeps its end, so the log start becomes the log end and the next append
//! continues the offsets. An empty or fresh active segment stays, size retention never
//! takes the active segment, and a crash between the roll and the deletion, or in the
//! middle of the deletion, reopens to a log that the next pass finishes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use log_engine::{Error, Log, LogConfig, ManualClock, Offset, ReadBound, Record};

const T0: i64 = 1_700_000_000_000;
const RETENTION_MS: u64 = 1000;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 1 << 20,
        retention_ms_max: Some(RETENTION_MS),
        ..LogConfig::default()
    }
}

fn open(dir: &Path, clock: &Arc<ManualClock>) -> Result<Log, Error> {
    Log::open_with_clock(dir, config(), clock.clone())
}

/// Appends `n` one-record batches stamped `ts` and raises the high watermark to the
/// log end, as a log that is not replicated does.
fn append(log: &Log, n: usize, ts: i64) -> Result<(), Error> {
    for i in 0..n {
        log.append_records(&[Record::new(format!("v{i}"), ts)])?;
    }
    log.set_high_watermark(log.log_end_offset());
    Ok(())
}

/// The base offsets of the segments on disk, oldest first.
fn bases(dir: &Path) -> Vec<u64> {
    common::segment_files(dir)
        .iter()
        .filter_map(|p| p.file_stem()?.to_str()?.parse().ok())
        .collect()
}

#[test]
fn an_expired_active_segment_is_rolled_and_deleted() -> TestResult {
    let dir = tempfile::tempdir()?;
    let clock = Arc::new(ManualClock::new(T0));
    let log = open(dir.path(), &clock)?;
    append(&log, 3, T0)?;
    assert_eq!(log.segment_count(), 1);

    clock.advance(RETENTION_MS as i64);
    let report = log.apply_retention()?;
    assert_eq!(report.segments_deleted, 0, "not older than the limit yet");
    assert_eq!(log.log_start_offset(), Offset(0));

    clock.advance(1);
    let report = log.apply_retention()?;
    assert_eq!(report.segments_deleted, 1);
    assert!(report.bytes_deleted > 0);
    assert_eq!(report.log_start_offset, Offset(3));
    assert_eq!(log.log_start_offset(), Offset(3));
    assert_eq!(log.log_end_offset(), Offset(3), "the end stays");
    assert_eq!(log.high_watermark(), Offset(3));
    assert_eq!(
        log.durable_offset(),
        Offset(3),
        "nothing below the start can come back after a crash"
    );
    assert_eq!(log.segment_count(), 1);
    assert_eq!(bases(dir.path()), [3]);
    for extension in ["index", "timeindex"] {
        let index = dir.path().join(format!("{:020}.{extension}", 3));
        assert!(index.exists(), "the new segment has its {extension}");
    }
    assert!(matches!(
        log.read(Offset(0), 1 << 20, ReadBound::LogEnd),
        Err(Error::OffsetOutOfRange { .. })
    ));
    assert!(log.read(Offset(3), 1 << 20, ReadBound::LogEnd)?.is_empty());

    let next = log.append_records(&[Record::new("after", T0 + 5000)])?;
    assert_eq!(next.base_offset, Offset(3), "the offsets continue");
    log.set_high_watermark(log.log_end_offset());
    let read = log.read(Offset(3), 1 << 20, ReadBound::HighWatermark)?;
    let values: Vec<Vec<u8>> = read
        .records()
        .map(|r| r.map(|r| r.value.to_vec()))
        .collect::<Result<_, _>>()?;
    assert_eq!(values, [b"after".to_vec()]);
    Ok(())
}

#[test]
fn an_empty_or_fresh_active_segment_stays() -> TestResult {
    let dir = tempfile::tempdir()?;
    let clock = Arc::new(ManualClock::new(T0));
    let log = open(dir.path(), &clock)?;
    for _ in 0..5 {
        clock.advance(1_000_000);
        assert_eq!(log.apply_retention()?.segments_deleted, 0);
    }
    assert_eq!(bases(dir.path()), [0], "an empty log never rolls");

    append(&log, 2, T0 + 5_000_000)?;
    clock.advance(RETENTION_MS as i64 / 2);
    assert_eq!(log.apply_retention()?.segments_deleted, 0);
    assert_eq!(log.log_start_offset(), Offset(0));

    clock.advance(RETENTION_MS as i64);
    assert_eq!(log.apply_retention()?.segments_deleted, 1);
    for _ in 0..5 {
        clock.advance(1_000_000);
        assert_eq!(
            log.apply_retention()?.segments_deleted,
            0,
            "the empty segment the roll made never expires"
        );
    }
    assert_eq!(bases(dir.path()), [2]);
    assert_eq!(log.log_start_offset(), Offset(2));
    assert_eq!(log.log_end_offset(), Offset(2));
    Ok(())
}

#[test]
fn the_active_segment_waits_for_the_high_watermark() -> TestResult {
    let dir = tempfile::tempdir()?;
    let clock = Arc::new(ManualClock::new(T0));
    let log = open(dir.path(), &clock)?;
    log.append_records(&[Record::new("a", T0), Record::new("b", T0)])?;
    log.set_high_watermark(Offset(1));
    clock.advance(10 * RETENTION_MS as i64);
    assert_eq!(
        log.apply_retention()?.segments_deleted,
        0,
        "a record is not replicated yet"
    );
    log.set_high_watermark(Offset(2));
    assert_eq!(log.apply_retention()?.segments_deleted, 1);
    assert_eq!(log.log_start_offset(), Offset(2));
    Ok(())
}

#[test]
fn a_log_whose_high_watermark_nobody_sets_is_limited_by_its_end() -> TestResult {
    // A log embedded without replication: its caller never sets a high watermark.
    let dir = tempfile::tempdir()?;
    let clock = Arc::new(ManualClock::new(T0));
    let log = open(dir.path(), &clock)?;
    log.append_records(&[Record::new("a", T0), Record::new("b", T0)])?;
    clock.advance(10 * RETENTION_MS as i64);
    assert_eq!(log.apply_retention()?.segments_deleted, 1);
    assert_eq!(log.log_start_offset(), Offset(2));
    assert_eq!(log.log_end_offset(), Offset(2));
    Ok(())
}

#[test]
fn size_retention_never_deletes_the_active_segment() -> TestResult {
    let dir = tempfile::tempdir()?;
    let clock = Arc::new(ManualClock::new(T0));
    let config = LogConfig {
        retention_bytes_max: Some(0),
        retention_ms_max: None,
        ..config()
    };
    let log = Log::open_with_clock(dir.path(), config, clock.clone())?;
    append(&log, 10, T0)?;
    clock.advance(1_000_000);
    assert_eq!(log.apply_retention()?.segments_deleted, 0);
    assert_eq!(log.log_start_offset(), Offset(0));
    Ok(())
}

#[test]
fn sealed_and_active_segments_expire_together() -> TestResult {
    let dir = tempfile::tempdir()?;
    let clock = Arc::new(ManualClock::new(T0));
    let config = LogConfig {
        segment_bytes_max: 4096,
        index_interval_bytes: 256,
        ..config()
    };
    let log = Log::open_with_clock(dir.path(), config, clock.clone())?;
    for _ in 0..100 {
        log.append_records(&[Record::new(vec![b'x'; 200], T0)])?;
    }
    log.set_high_watermark(log.log_end_offset());
    let segments = log.segment_count();
    assert!(segments > 3, "{segments}");
    clock.advance(RETENTION_MS as i64 + 1);
    let report = log.apply_retention()?;
    assert_eq!(report.segments_deleted, segments);
    assert_eq!(log.log_start_offset(), Offset(100));
    assert_eq!(log.log_end_offset(), Offset(100));
    assert_eq!(bases(dir.path()), [100]);
    Ok(())
}

#[test]
fn start_and_end_survive_a_reopen_after_everything_expired() -> TestResult {
    let dir = tempfile::tempdir()?;
    let clock = Arc::new(ManualClock::new(T0));
    {
        let log = open(dir.path(), &clock)?;
        append(&log, 4, T0)?;
        clock.advance(RETENTION_MS as i64 + 1);
        log.apply_retention()?;
        log.close()?;
    }
    {
        let log = open(dir.path(), &clock)?;
        assert_eq!(log.log_start_offset(), Offset(4));
        assert_eq!(log.log_end_offset(), Offset(4));
        // Dropped without `close`: the next open recovers as after a crash.
    }
    let log = open(dir.path(), &clock)?;
    assert_eq!(log.log_start_offset(), Offset(4));
    assert_eq!(log.log_end_offset(), Offset(4));
    assert_eq!(
        log.append_records(&[Record::new("x", T0)])?.base_offset,
        Offset(4)
    );
    Ok(())
}

/// The directory as a roll for retention leaves it when the process dies before the
/// deletion: the old segments, and an empty segment at the log end.
/// The file of the segment at `base` with `extension`.
fn segment_file(dir: &Path, base: u64, extension: &str) -> std::path::PathBuf {
    dir.join(format!("{base:020}.{extension}"))
}

/// A log of three expired records, fsynced and closed as a crash would leave it
/// right after a retention pass rolled the new empty segment at offset 3, before it
/// deleted anything.
fn rolled_before_a_crash(dir: &Path, clock: &Arc<ManualClock>) -> TestResult {
    {
        let log = open(dir, clock)?;
        append(&log, 3, T0)?;
        log.flush()?;
    }
    std::fs::File::create(segment_file(dir, 3, "log"))?;
    Ok(())
}

#[test]
fn a_crash_before_the_deletion_reopens_with_the_old_segments_and_the_next_pass_deletes_them()
-> TestResult {
    let dir = tempfile::tempdir()?;
    let clock = Arc::new(ManualClock::new(T0));
    rolled_before_a_crash(dir.path(), &clock)?;
    let log = open(dir.path(), &clock)?;
    assert_eq!(log.segment_count(), 2);
    assert_eq!(log.log_start_offset(), Offset(0));
    assert_eq!(log.log_end_offset(), Offset(3));
    assert_eq!(
        log.read(Offset(0), 1 << 20, ReadBound::LogEnd)?
            .records()
            .count(),
        3
    );

    log.set_high_watermark(log.log_end_offset());
    clock.advance(RETENTION_MS as i64 + 1);
    let report = log.apply_retention()?;
    assert_eq!(
        report.segments_deleted, 1,
        "the old one; the empty one stays"
    );
    assert_eq!(log.log_start_offset(), Offset(3));
    assert_eq!(log.log_end_offset(), Offset(3));
    assert_eq!(bases(dir.path()), [3]);
    assert_eq!(
        log.append_records(&[Record::new("x", T0)])?.base_offset,
        Offset(3)
    );
    Ok(())
}

/// The directory as a crash in the middle of the deletion leaves it: the old
/// segment's `.log` gone, its index files still there.
#[test]
fn a_crash_during_the_deletion_reopens_at_the_end() -> TestResult {
    let dir = tempfile::tempdir()?;
    let clock = Arc::new(ManualClock::new(T0));
    rolled_before_a_crash(dir.path(), &clock)?;
    std::fs::remove_file(segment_file(dir.path(), 0, "log"))?;
    let log = open(dir.path(), &clock)?;
    assert_eq!(log.log_start_offset(), Offset(3));
    assert_eq!(log.log_end_offset(), Offset(3));
    assert!(!segment_file(dir.path(), 0, "index").exists());
    assert_eq!(
        log.append_records(&[Record::new("x", T0)])?.base_offset,
        Offset(3)
    );
    Ok(())
}

/// Appends, durable appends, reads and retention passes race; every append gets the
/// next offset, reads see only whole records at or after the start they checked or
/// are told the offset is gone, and the log ends with one empty segment at its end.
#[test]
fn appends_and_reads_racing_retention_keep_the_offsets() -> TestResult {
    const APPENDS: u64 = 400;
    let dir = tempfile::tempdir()?;
    let clock = Arc::new(ManualClock::new(T0 + 10 * RETENTION_MS as i64));
    let log = Arc::new(open(dir.path(), &clock)?);
    let done = Arc::new(AtomicBool::new(false));

    let retention = {
        let (log, done) = (Arc::clone(&log), Arc::clone(&done));
        std::thread::spawn(move || -> Result<usize, Error> {
            let mut deleted = 0;
            while !done.load(Ordering::Acquire) {
                deleted += log.apply_retention()?.segments_deleted;
                std::thread::yield_now();
            }
            Ok(deleted)
        })
    };
    let reader = {
        let (log, done) = (Arc::clone(&log), Arc::clone(&done));
        std::thread::spawn(move || -> Result<u64, Error> {
            let mut records = 0;
            while !done.load(Ordering::Acquire) {
                let from = log.log_start_offset();
                match log.read(from, 1 << 16, ReadBound::HighWatermark) {
                    Ok(read) => {
                        for record in read.records() {
                            assert!(record?.offset >= from);
                            records += 1;
                        }
                    }
                    Err(Error::OffsetOutOfRange { offset, start, .. }) => {
                        assert!(offset < start, "{offset} {start}");
                    }
                    Err(other) => return Err(other),
                }
                assert!(log.log_start_offset() <= log.log_end_offset());
                assert!(log.log_start_offset() <= log.high_watermark());
            }
            Ok(records)
        })
    };

    for i in 0..APPENDS {
        // Stamped long ago: every record is expired once the high watermark passes it.
        let mut batch = log_engine::RecordBatch::from_records(&[Record::new("v", T0)])?;
        let info = if i % 8 == 0 {
            log.append_durable(&mut batch)?
        } else {
            log.append(&mut batch)?
        };
        assert_eq!(
            info.base_offset,
            Offset(i),
            "every append gets the next offset"
        );
        log.set_high_watermark(info.next_offset());
        if i % 50 == 0 {
            log.flush()?;
        }
        if i % 100 == 99 {
            // Now and then the appender waits for a pass to delete everything, so
            // that rolls happen however the threads are scheduled.
            let deadline = Instant::now() + Duration::from_secs(10);
            while log.log_start_offset() < info.next_offset() {
                assert!(Instant::now() < deadline, "retention never caught up");
                std::thread::yield_now();
            }
        }
    }
    done.store(true, Ordering::Release);
    let deleted = retention.join().expect("retention thread")?;
    let _read = reader.join().expect("reader thread")?;
    assert!(deleted > 0);

    log.apply_retention()?;
    assert_eq!(log.log_start_offset(), Offset(APPENDS));
    assert_eq!(log.log_end_offset(), Offset(APPENDS));
    assert_eq!(bases(dir.path()), [APPENDS]);
    log.flush()?;
    assert_eq!(log.durable_offset(), Offset(APPENDS));
    drop(log);
    let log = open(dir.path(), &clock)?;
    assert_eq!(log.log_start_offset(), Offset(APPENDS));
    assert_eq!(log.log_end_offset(), Offset(APPENDS));
    Ok(())
}
