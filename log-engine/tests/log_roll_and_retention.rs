//! Segments roll by size and by age; retention deletes whole old segments by size,
//! by age and below an offset, only below the high watermark, and moves the log
//! start. (An expired active segment: `log_retention_rolls_an_expired_active_segment`.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use log_engine::{Error, Log, LogConfig, ManualClock, Offset, ReadBound, Record};

const T0: i64 = 1_700_000_000_000;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 4096,
        index_interval_bytes: 256,
        index_bytes_max: 4096,
        retention_ms_max: None,
        ..LogConfig::default()
    }
}

fn fill(log: &Log, clock: &ManualClock, batches: usize) {
    for i in 0..batches {
        let records: Vec<Record> = (0..10)
            .map(|j| Record::new(vec![b'v'; 90], clock_now(clock) + (i * 10 + j) as i64 % 3))
            .collect();
        log.append_records(&records).unwrap();
    }
}

fn clock_now(clock: &ManualClock) -> i64 {
    use log_engine::Clock;
    clock.now_ms()
}

fn files_with(dir: &std::path::Path, extension: &str) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == extension)
        })
        .count()
}

/// The base offsets of the segments on disk, oldest first.
fn segment_bases(dir: &std::path::Path) -> Vec<u64> {
    let mut bases: Vec<u64> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".log")?.parse().ok()
        })
        .collect();
    bases.sort_unstable();
    bases
}

#[test]
fn segments_roll_by_size_and_retention_by_size_keeps_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let config = LogConfig {
        retention_bytes_max: Some(10_000),
        ..config()
    };
    let log = Log::open_with_clock(dir.path(), config, clock.clone()).unwrap();
    fill(&log, &clock, 40);
    // Retention deletes only below the high watermark; nothing here replicates.
    log.set_high_watermark(log.log_end_offset());
    let segments = log.segment_count();
    assert!(
        segments >= 8,
        "40 KiB in 4 KiB segments rolls, got {segments}"
    );
    assert_eq!(files_with(dir.path(), "log"), segments);
    assert_eq!(files_with(dir.path(), "index"), segments);

    let end = log.log_end_offset();
    let report = log.apply_retention().unwrap();
    assert!(report.segments_deleted > 0);
    assert!(log.size_bytes() >= 10_000, "keeps at least the limit");
    assert!(
        log.size_bytes() < 10_000 + 4096 + 1200,
        "deletes what is beyond it"
    );
    assert_eq!(log.log_end_offset(), end, "retention never touches the end");
    let start = log.log_start_offset();
    assert_eq!(report.log_start_offset, start);
    assert!(start > Offset(0));
    assert_eq!(files_with(dir.path(), "log"), log.segment_count());

    assert!(matches!(
        log.read(Offset(0), 1024, ReadBound::LogEnd),
        Err(Error::OffsetOutOfRange { .. })
    ));
    let read = log.read(start, 1 << 20, ReadBound::LogEnd).unwrap();
    assert_eq!(read.records().next().unwrap().unwrap().offset, start);

    drop(log);
    let log = Log::open_with_clock(dir.path(), config_with_size(), clock).unwrap();
    assert_eq!(log.log_start_offset(), start, "the start survives a reopen");
    assert_eq!(log.log_end_offset(), end);
}

fn config_with_size() -> LogConfig {
    LogConfig {
        retention_bytes_max: Some(10_000),
        ..config()
    }
}

#[test]
fn retention_by_age_deletes_segments_whose_newest_record_is_old() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let config = LogConfig {
        retention_ms_max: Some(60_000),
        ..config()
    };
    let log = Log::open_with_clock(dir.path(), config, clock.clone()).unwrap();
    fill(&log, &clock, 20);
    let old_end = log.log_end_offset();
    clock.advance(50_000);
    fill(&log, &clock, 20);
    log.set_high_watermark(log.log_end_offset());
    assert_eq!(log.apply_retention().unwrap().segments_deleted, 0);
    clock.advance(20_000);
    let report = log.apply_retention().unwrap();
    assert!(report.segments_deleted > 0);
    let start = log.log_start_offset();
    assert!(start <= old_end, "only segments made of old records go");
    assert!(start > Offset(0));
    clock.advance(1_000_000);
    let end = log.log_end_offset();
    log.apply_retention().unwrap();
    assert_eq!(
        log.segment_count(),
        1,
        "the expired active segment is replaced by an empty one"
    );
    assert_eq!(log.log_start_offset(), end);
    assert_eq!(log.log_end_offset(), end);
}

#[test]
fn retention_keeps_what_is_at_or_above_the_high_watermark() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let config = LogConfig {
        retention_ms_max: Some(1000),
        retention_bytes_max: Some(0),
        ..config()
    };
    let log = Log::open_with_clock(dir.path(), config, clock.clone()).unwrap();
    fill(&log, &clock, 40);
    clock.advance(10_000);
    assert!(log.segment_count() > 2);
    // A caller that manages the high watermark (a replicated log) and has had
    // nothing replicated yet.
    log.set_high_watermark(Offset(0));
    assert_eq!(log.high_watermark(), Offset(0), "where the log was opened");
    assert_eq!(log.apply_retention().unwrap().segments_deleted, 0);

    let second_base = Offset(segment_bases(dir.path())[1]);
    log.set_high_watermark(Offset(second_base.0 + 1));
    let report = log.apply_retention().unwrap();
    assert_eq!(
        report.segments_deleted, 1,
        "only the segment wholly below it"
    );
    assert_eq!(log.log_start_offset(), second_base);
    assert!(log.log_start_offset() <= log.high_watermark());
}

#[test]
fn segments_roll_by_age() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let config = LogConfig {
        segment_bytes_max: 1 << 20,
        segment_age_ms_max: 1000,
        ..config()
    };
    let log = Log::open_with_clock(dir.path(), config, clock.clone()).unwrap();
    log.append_records(&[Record::new("a", T0)]).unwrap();
    log.append_records(&[Record::new("b", T0)]).unwrap();
    assert_eq!(log.segment_count(), 1);
    clock.advance(1000);
    log.append_records(&[Record::new("c", T0)]).unwrap();
    assert_eq!(log.segment_count(), 2);
}

#[test]
fn delete_below_removes_only_whole_acknowledged_segments() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let log = Log::open_with_clock(dir.path(), config(), clock.clone()).unwrap();
    fill(&log, &clock, 30);
    let before = log.segment_count();
    let report = log.delete_below(Offset(5)).unwrap();
    assert_eq!(
        report.segments_deleted, 0,
        "the first segment still holds offsets >= 5"
    );
    let end = log.log_end_offset();
    let report = log.delete_below(Offset(end.0 / 2)).unwrap();
    assert!(report.segments_deleted > 0);
    assert!(log.log_start_offset() <= Offset(end.0 / 2));
    assert_eq!(log.segment_count(), before - report.segments_deleted);
    let report = log.delete_below(end).unwrap();
    assert_eq!(log.segment_count(), 1, "never the active segment");
    assert!(report.log_start_offset <= end);
    log.append_records(&[Record::new("after", T0)]).unwrap();
    assert_eq!(log.log_end_offset(), Offset(end.0 + 1));
}
