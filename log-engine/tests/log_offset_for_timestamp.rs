//! Finding the first offset at or after a timestamp, across segments and with
//! timestamps that are not monotonic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use log_engine::{Log, LogConfig, Offset, Record};

#[test]
fn offset_for_timestamp_finds_the_first_record_at_or_after() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes_max: 2048,
        index_interval_bytes: 100,
        index_bytes_max: 4096,
        ..LogConfig::default()
    };
    let log = Log::open(dir.path(), config).unwrap();
    // Timestamps 1000, 1010, 1020, ... one record per offset, in batches of 4.
    let ts = |offset: u64| 1000 + 10 * offset as i64;
    for b in 0..100u64 {
        let records: Vec<Record> = (0..4)
            .map(|i| Record::new(vec![b'x'; 40], ts(b * 4 + i)))
            .collect();
        log.append_records(&records).unwrap();
    }
    assert!(log.segment_count() > 3);
    assert_eq!(log.offset_for_timestamp(0).unwrap(), Some(Offset(0)));
    assert_eq!(log.offset_for_timestamp(1000).unwrap(), Some(Offset(0)));
    assert_eq!(log.offset_for_timestamp(1001).unwrap(), Some(Offset(1)));
    assert_eq!(
        log.offset_for_timestamp(ts(217)).unwrap(),
        Some(Offset(217))
    );
    assert_eq!(
        log.offset_for_timestamp(ts(217) - 5).unwrap(),
        Some(Offset(217))
    );
    assert_eq!(
        log.offset_for_timestamp(ts(399)).unwrap(),
        Some(Offset(399))
    );
    assert_eq!(log.offset_for_timestamp(ts(399) + 1).unwrap(), None);

    // A late record with an old timestamp does not hide newer ones before it.
    log.append_records(&[Record::new("late", 500)]).unwrap();
    assert_eq!(
        log.offset_for_timestamp(ts(300)).unwrap(),
        Some(Offset(300))
    );
    log.close().unwrap();
    drop(log);
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    assert_eq!(
        log.offset_for_timestamp(ts(217)).unwrap(),
        Some(Offset(217))
    );
}
