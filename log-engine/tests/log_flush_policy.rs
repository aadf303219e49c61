//! The flush policy decides when the log fsyncs on its own; durable appends from many
//! threads share fsyncs (group commit) and each returns only once its batch is durable.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use log_engine::{FlushPolicy, Log, LogConfig, ManualClock, Offset, Record};

fn open(dir: &std::path::Path, flush: FlushPolicy, clock: Arc<ManualClock>) -> Log {
    let config = LogConfig {
        flush,
        ..LogConfig::default()
    };
    Log::open_with_clock(dir, config, clock).unwrap()
}

#[test]
fn every_n_messages_syncs_once_n_are_appended() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(
        dir.path(),
        FlushPolicy::every_messages(3),
        Arc::new(ManualClock::new(0)),
    );
    log.append_records(&[Record::new("a", 0)]).unwrap();
    log.append_records(&[Record::new("b", 0)]).unwrap();
    assert_eq!(log.durable_offset(), Offset(0));
    log.append_records(&[Record::new("c", 0)]).unwrap();
    assert_eq!(log.durable_offset(), Offset(3));
    log.append_records(&[
        Record::new("d", 0),
        Record::new("e", 0),
        Record::new("f", 0),
    ])
    .unwrap();
    assert_eq!(log.durable_offset(), Offset(6), "a batch of 3 counts as 3");
}

#[test]
fn always_syncs_every_append() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(
        dir.path(),
        FlushPolicy::ALWAYS,
        Arc::new(ManualClock::new(0)),
    );
    for i in 1..=5 {
        log.append_records(&[Record::new("x", 0)]).unwrap();
        assert_eq!(log.durable_offset(), Offset(i));
    }
    assert_eq!(log.fsync_count(), 5);
}

#[test]
fn interval_syncs_on_append_or_on_the_callers_timer() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1000));
    let log = open(dir.path(), FlushPolicy::every_ms(100), clock.clone());
    log.append_records(&[Record::new("a", 0)]).unwrap();
    assert_eq!(log.durable_offset(), Offset(0));
    log.flush_if_due().unwrap();
    assert_eq!(log.durable_offset(), Offset(0), "not due yet");
    clock.advance(100);
    log.flush_if_due().unwrap();
    assert_eq!(
        log.durable_offset(),
        Offset(1),
        "due: the timer's call syncs"
    );
    log.append_records(&[Record::new("b", 0)]).unwrap();
    assert_eq!(log.durable_offset(), Offset(1));
    clock.advance(150);
    log.append_records(&[Record::new("c", 0)]).unwrap();
    assert_eq!(log.durable_offset(), Offset(3), "due: the append syncs");
}

#[test]
fn concurrent_durable_appends_share_fsyncs_and_each_is_durable_on_return() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(open(
        dir.path(),
        FlushPolicy::MANUAL,
        Arc::new(ManualClock::new(0)),
    ));
    let threads = 8;
    let appends_per_thread = 50;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for i in 0..appends_per_thread {
                    let records: Vec<Record> = (0..10)
                        .map(|j| Record::new(format!("{t}-{i}-{j}"), 0))
                        .collect();
                    let mut batch = log_engine::RecordBatch::from_records(&records).unwrap();
                    let info = log.append_durable(&mut batch).unwrap();
                    assert!(
                        log.durable_offset() >= info.next_offset(),
                        "returned before its batch was fsynced"
                    );
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
    let appends = (threads * appends_per_thread) as u64;
    assert_eq!(log.log_end_offset(), Offset(appends * 10));
    assert_eq!(log.durable_offset(), log.log_end_offset());
    let fsyncs = log.fsync_count();
    println!("{appends} durable appends took {fsyncs} fsyncs");
    assert!(fsyncs <= appends, "never more than one fsync per append");
}

/// The offset `recovery-point` holds (its first 8 bytes, little-endian).
fn recovery_point(dir: &std::path::Path) -> u64 {
    let bytes = std::fs::read(dir.join("recovery-point")).unwrap();
    u64::from_le_bytes(bytes[..8].try_into().unwrap())
}

#[test]
fn syncs_rewrite_the_recovery_point_at_most_once_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1000));
    let log = open(dir.path(), FlushPolicy::MANUAL, clock.clone());
    log.append_records(&[Record::new("a", 0)]).unwrap();
    log.flush().unwrap();
    assert_eq!(log.durable_offset(), Offset(1));
    assert_eq!(
        recovery_point(dir.path()),
        0,
        "written at open, not again yet"
    );

    clock.advance(1000);
    log.append_records(&[Record::new("b", 0)]).unwrap();
    log.flush().unwrap();
    assert_eq!(recovery_point(dir.path()), 2);
    clock.advance(999);
    log.append_records(&[Record::new("c", 0)]).unwrap();
    log.flush().unwrap();
    assert_eq!(recovery_point(dir.path()), 2);

    // A crash now: recovery scans from offset 2 and keeps everything synced.
    drop(log);
    let log = open(dir.path(), FlushPolicy::MANUAL, clock);
    assert_eq!(log.log_end_offset(), Offset(3));
}
