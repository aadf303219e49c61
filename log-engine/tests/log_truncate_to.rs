//! `truncate_to` removes a tail (as a follower does when its tail diverged from its
//! leader's), across segments, and the log goes on from the new end.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use log_engine::{Log, LogConfig, Offset, ReadBound, Record};

fn config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 2048,
        index_interval_bytes: 200,
        index_bytes_max: 4096,
        ..LogConfig::default()
    }
}

fn values(log: &Log) -> Vec<String> {
    let read = log.read(log.log_start_offset(), 1 << 20, ReadBound::LogEnd);
    let mut out = Vec::new();
    let mut from = log.log_start_offset();
    let _ = read;
    while from < log.log_end_offset() {
        let read = log.read(from, 1 << 20, ReadBound::LogEnd).unwrap();
        for r in read.records() {
            out.push(String::from_utf8(r.unwrap().value.to_vec()).unwrap());
        }
        from = read.next_offset();
    }
    out
}

#[test]
fn truncate_to_cuts_at_batch_boundaries_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config()).unwrap();
    for b in 0..60u64 {
        let records: Vec<Record> = (0..5)
            .map(|i| Record::new(format!("v{}-{:080}", b * 5 + i, 0), 10))
            .collect();
        log.append_records(&records).unwrap();
    }
    log.flush().unwrap();
    assert_eq!(log.log_end_offset(), Offset(300));
    let segments = log.segment_count();
    assert!(segments > 5);

    assert_eq!(log.truncate_to(Offset(250)).unwrap(), Offset(250));
    assert_eq!(log.log_end_offset(), Offset(250));
    assert!(log.durable_offset() <= Offset(250));
    assert!(log.high_watermark() <= Offset(250));
    assert!(log.segment_count() < segments);

    // Inside a batch: the whole batch holding the offset goes.
    assert_eq!(log.truncate_to(Offset(123)).unwrap(), Offset(120));
    let all = values(&log);
    assert_eq!(all.len(), 120);
    assert!(
        all.iter()
            .enumerate()
            .all(|(i, v)| v.starts_with(&format!("v{i}-")))
    );

    let info = log.append_records(&[Record::new("new", 11)]).unwrap();
    assert_eq!(info.base_offset, Offset(120));
    log.close().unwrap();
    drop(log);

    let log = Log::open(dir.path(), config()).unwrap();
    assert_eq!(log.log_end_offset(), Offset(121));
    assert_eq!(values(&log).last().map(String::as_str), Some("new"));
    assert_eq!(
        log.truncate_to(Offset(500)).unwrap(),
        Offset(121),
        "past the end: no-op"
    );
    assert_eq!(log.truncate_to(Offset(0)).unwrap(), Offset(0));
    assert_eq!(log.segment_count(), 1);
    assert_eq!(
        log.append_records(&[Record::new("x", 1)])
            .unwrap()
            .base_offset,
        Offset(0)
    );
}

#[test]
fn reads_are_bounded_by_the_high_watermark_and_the_durable_offset() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config()).unwrap();
    for i in 0..10 {
        log.append_records(&[Record::new(format!("{i}"), 1)])
            .unwrap();
    }
    log.set_high_watermark(Offset(4));
    let read = log
        .read(Offset(0), 1 << 20, ReadBound::HighWatermark)
        .unwrap();
    assert_eq!(read.next_offset(), Offset(4));
    assert_eq!(read.records().count(), 4);
    assert!(
        log.read(Offset(4), 1 << 20, ReadBound::HighWatermark)
            .unwrap()
            .is_empty()
    );
    log.set_high_watermark(Offset(100));
    assert_eq!(log.high_watermark(), Offset(10), "clamped to the log end");

    assert_eq!(log.durable_offset(), Offset(0));
    assert!(
        log.read(Offset(0), 1 << 20, ReadBound::Durable)
            .unwrap()
            .is_empty()
    );
    log.flush().unwrap();
    assert_eq!(log.durable_offset(), Offset(10));
    let read = log
        .read(Offset(7), 1 << 20, ReadBound::Offset(Offset(9)))
        .unwrap();
    assert_eq!(read.records().count(), 2);
}

/// A flush that runs while the log is cut must never publish the end it saw before
/// the cut: the durable offset stays at or below the log end, and durable appends
/// after the cut wait for their own fsync.
#[test]
fn a_sync_across_a_truncation_never_claims_the_cut_records() {
    let dir = tempfile::tempdir().unwrap();
    let log = std::sync::Arc::new(Log::open(dir.path(), config()).unwrap());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flusher = {
        let log = std::sync::Arc::clone(&log);
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                log.flush().unwrap();
            }
        })
    };
    for round in 0..1500u64 {
        let records: Vec<Record> = (0..4)
            .map(|i| Record::new(format!("r{round}-{i}"), 10))
            .collect();
        log.append_records(&records).unwrap();
        let end = log.log_end_offset();
        log.truncate_to(Offset(end.0 - 2)).unwrap();
        std::thread::yield_now();
        assert!(
            log.durable_offset() <= log.log_end_offset(),
            "round {round}: durable {} past the end {}",
            log.durable_offset(),
            log.log_end_offset()
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    flusher.join().unwrap();
    log.flush().unwrap();
    assert_eq!(log.durable_offset(), log.log_end_offset());
}

#[test]
fn truncating_below_the_log_start_starts_the_log_over_there() {
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(log_engine::ManualClock::new(0));
    let config = LogConfig {
        retention_ms_max: Some(1000),
        ..config()
    };
    let log = Log::open_with_clock(dir.path(), config, clock.clone()).unwrap();
    for i in 0..50 {
        log.append_records(&[Record::new(format!("v{i}"), 0)])
            .unwrap();
    }
    log.set_high_watermark(log.log_end_offset());
    clock.advance(1001);
    log.apply_retention().unwrap();
    assert_eq!(log.log_start_offset(), Offset(50));
    assert_eq!(log.log_end_offset(), Offset(50));

    // A follower whose expired records diverged from its leader's: none of them is
    // left, so the log starts over, empty, where the leader's log and its own meet.
    assert_eq!(log.truncate_to(Offset(20)).unwrap(), Offset(20));
    assert_eq!(log.log_start_offset(), Offset(20));
    assert_eq!(log.log_end_offset(), Offset(20));
    assert_eq!(log.high_watermark(), Offset(20));
    assert_eq!(log.durable_offset(), Offset(20));
    let next = log.append_records(&[Record::new("x", 0)]).unwrap();
    assert_eq!(next.base_offset, Offset(20));
    assert_eq!(values(&log), ["x"]);
}
