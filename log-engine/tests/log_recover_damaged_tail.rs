//! Damage to the active segment (a cut at any byte, or any byte flipped) loses exactly
//! the batches from the damage on: everything wholly before it reads back intact, and
//! appends continue at the right offset.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::{Path, PathBuf};

use log_engine::{BatchRef, Log, LogConfig, Offset, ReadBound, Record};
use proptest::prelude::*;

mod common;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 2048,
        index_interval_bytes: 128,
        index_bytes_max: 4096,
        ..LogConfig::default()
    }
}

fn record(n: u64, size: usize) -> Record {
    let mut value = format!("record-{n}-").into_bytes();
    value.resize(value.len() + size, b'x');
    Record::new(value, 1_700_000_000_000 + n as i64).with_key(format!("k{}", n % 7))
}

fn active_segment(dir: &Path) -> PathBuf {
    common::segment_files(dir).pop().unwrap()
}

/// (end position in the file, next offset) of every batch in a segment file (which
/// may end in the zeros written ahead of its batches).
fn batch_ends(bytes: &[u8]) -> Vec<(usize, Offset)> {
    let mut ends = Vec::new();
    let mut rest = bytes;
    let mut position = 0;
    while rest.iter().any(|&b| b != 0) {
        let (batch, tail) = BatchRef::parse(rest, true).unwrap();
        position += batch.as_bytes().len();
        ends.push((position, batch.next_offset()));
        rest = tail;
    }
    ends
}

fn read_all(log: &Log) -> Vec<Record> {
    let mut out = Vec::new();
    let mut from = log.log_start_offset();
    while from < log.log_end_offset() {
        let read = log.read(from, 1024, ReadBound::LogEnd).unwrap();
        assert!(read.next_offset() > from, "a read below the end progresses");
        for r in read.records() {
            let r = r.unwrap();
            assert_eq!(
                r.offset.0,
                out.len() as u64,
                "offsets are dense and ordered"
            );
            out.push(r.to_owned_record());
        }
        from = read.next_offset();
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn damaged_active_segment_keeps_everything_before_the_damage(
        batch_sizes in proptest::collection::vec((1usize..6, 0usize..120), 1..40),
        at in any::<prop::sample::Index>(),
        flip in proptest::option::of(1u8..=255),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut written = Vec::new();
        {
            let log = Log::open(dir.path(), config()).unwrap();
            for (count, size) in batch_sizes {
                let records: Vec<Record> =
                    (0..count).map(|i| record(written.len() as u64 + i as u64, size)).collect();
                let info = log.append_records(&records).unwrap();
                prop_assert_eq!(info.base_offset.0, written.len() as u64);
                written.extend(records);
            }
            // Dropped without close: the next open recovers.
        }
        let active = active_segment(dir.path());
        let mut bytes = std::fs::read(&active).unwrap();
        prop_assume!(!bytes.is_empty());
        let base: u64 = active.file_stem().unwrap().to_str().unwrap().parse().unwrap();
        let ends = batch_ends(&bytes);
        let damage = at.index(bytes.len());
        match flip {
            Some(mask) => bytes[damage] ^= mask,
            None => bytes.truncate(damage),
        }
        std::fs::write(&active, &bytes).unwrap();
        let expected_end = ends
            .iter()
            .take_while(|(end, _)| *end <= damage)
            .last()
            .map_or(Offset(base), |(_, next)| *next);

        let log = Log::open(dir.path(), config()).unwrap();
        prop_assert_eq!(log.log_end_offset(), expected_end);
        let survivors = read_all(&log);
        prop_assert_eq!(&survivors[..], &written[..expected_end.0 as usize]);
        let info = log.append_records(&[record(expected_end.0, 3)]).unwrap();
        prop_assert_eq!(info.base_offset, expected_end);
        log.close().unwrap();
        drop(log);
        let log = Log::open(dir.path(), config()).unwrap();
        prop_assert_eq!(log.log_end_offset().0, expected_end.0 + 1);
        prop_assert_eq!(read_all(&log).len() as u64, expected_end.0 + 1);
    }
}
