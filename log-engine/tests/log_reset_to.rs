//! `reset_to` empties a log and starts it over at any offset (a follower whose copy
//! no longer meets its leader's log): appends continue there, and a reopen finds the
//! new start, not the old records.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use log_engine::{Log, LogConfig, Offset, ReadBound, Record, RecordBatch};

fn config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 2048,
        index_interval_bytes: 200,
        index_bytes_max: 4096,
        ..LogConfig::default()
    }
}

fn fill(log: &Log, batches: u64) {
    for b in 0..batches {
        let records: Vec<Record> = (0..5)
            .map(|i| Record::new(format!("v{}-{:040}", b * 5 + i, 0), 10))
            .collect();
        log.append_records(&records).unwrap();
    }
}

/// A batch as a leader would send it: one record, placed at `base` by a leader
/// log that starts there.
fn replica_batch(base: u64, value: &str) -> RecordBatch {
    let dir = tempfile::tempdir().unwrap();
    let leader = Log::open(dir.path(), config()).unwrap();
    leader.reset_to(Offset(base)).unwrap();
    leader
        .append_records(&[Record::new(value.to_owned(), 10)])
        .unwrap();
    let read = leader
        .read(Offset(base), 1 << 20, ReadBound::LogEnd)
        .unwrap();
    RecordBatch::from_bytes(read.into_bytes()).unwrap()
}

#[test]
fn reset_moves_the_log_forward_and_back_and_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(dir.path(), config()).unwrap();
        fill(&log, 40);
        log.flush().unwrap();
        assert!(log.segment_count() > 3);

        // Forward, past the end: the leader's log starts later.
        log.reset_to(Offset(1_000)).unwrap();
        assert_eq!(log.log_start_offset(), Offset(1_000));
        assert_eq!(log.log_end_offset(), Offset(1_000));
        assert_eq!(log.segment_count(), 1);
        assert!(
            log.read(Offset(1_000), 1 << 20, ReadBound::LogEnd)
                .unwrap()
                .is_empty()
        );
        log.append_replica(&mut replica_batch(1_000, "after"))
            .unwrap();
        assert_eq!(log.log_end_offset(), Offset(1_001));

        // Back, below the old start.
        log.reset_to(Offset(10)).unwrap();
        assert_eq!(log.log_end_offset(), Offset(10));
        log.append_replica(&mut replica_batch(10, "ten")).unwrap();
        log.flush().unwrap();
    }
    let log = Log::open(dir.path(), config()).unwrap();
    assert_eq!(log.log_start_offset(), Offset(10));
    assert_eq!(log.log_end_offset(), Offset(11));
    let read = log.read(Offset(10), 1 << 20, ReadBound::LogEnd).unwrap();
    let values: Vec<Vec<u8>> = read.records().map(|r| r.unwrap().value.to_vec()).collect();
    assert_eq!(values, vec![b"ten".to_vec()]);
}
