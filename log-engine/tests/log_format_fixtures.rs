//! Log directories written by format version 1 and checked in under
//! `tests/fixtures/` must keep opening with the same records, and the deliberately
//! corrupt one must keep failing, naming its file. Regenerate them only with a new
//! format version: `cargo run -p log-engine --example make_fuzz_corpus -- --fixtures`.
//!
//! `v1-log` holds ten records in six batches over two segments (base offsets 0 and 7),
//! each segment with one index entry, closed cleanly. `v1-corrupt` is the same with one
//! byte flipped in the value of the last batch of the sealed first segment.

use std::path::{Path, PathBuf};

use log_engine::{
    BatchRef, Error, FORMAT_VERSION, Log, LogConfig, Offset, ReadBound, Record, RecordBatch,
};

type Result<T = (), E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

const T0: i64 = 1_700_000_000_000;
const FIRST_SEGMENT: &str = "00000000000000000000.log";

/// The files every fixture holds: the segments and what recovery reads beside them.
const FIXTURE_FILES: [&str; 8] = [
    ".clean-shutdown",
    "00000000000000000000.index",
    "00000000000000000000.log",
    "00000000000000000000.timeindex",
    "00000000000000000007.index",
    "00000000000000000007.log",
    "00000000000000000007.timeindex",
    "recovery-point",
];

/// One expected record: offset, timestamp, key, value, headers.
type Expected = (
    u64,
    i64,
    Option<&'static [u8]>,
    &'static [u8],
    &'static [(&'static str, &'static [u8])],
);

/// The records of `v1-log`, spelled out by hand rather than taken from the generator.
const RECORDS: [Expected; 10] = [
    (0, T0, Some(b"k1"), b"first", &[]),
    (1, T0 + 1, None, b"second", &[]),
    (2, T0 + 2, Some(b""), b"", &[]),
    (
        3,
        T0 + 10,
        Some(b"k2"),
        b"with headers",
        &[("trace", b"abc123"), ("empty", b"")],
    ),
    (4, T0 + 5, Some(&[0xff, 0x00]), &[0, 1, 2, 255], &[]),
    (5, T0 + 20, None, b"late", &[]),
    (6, T0 - 20, None, b"early", &[("order", b"back in time")]),
    (7, T0 + 30, Some(b"big"), &[b'x'; 150], &[]),
    (8, T0 + 40, Some(b"k1"), b"last batch a", &[]),
    (9, T0 + 41, Some(b"k2"), b"last batch b", &[]),
];

/// The base offset of each batch and the offset after it.
const BATCHES: [(u64, u64); 6] = [(0, 3), (3, 4), (4, 5), (5, 7), (7, 8), (8, 10)];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Copies the fixture into a fresh directory (opening a log writes to it), leaving
/// out the files named in `without`.
fn copy_fixture(name: &str, without: &[&str]) -> Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    for file in FIXTURE_FILES {
        if !without.contains(&file) {
            std::fs::copy(fixture(name).join(file), dir.path().join(file))
                .map_err(|e| format!("{name}/{file}: {e}"))?;
        }
    }
    Ok(dir)
}

/// The configuration the fixtures were written with.
fn config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 420,
        index_interval_bytes: 100,
        ..LogConfig::default()
    }
}

/// The states a closed log can be found in: as closed; after a crash that left a
/// recovery point; after a crash before any.
const SHUTDOWNS: [(&str, &[&str]); 3] = [
    ("clean", &[]),
    ("crash after a sync", &[".clean-shutdown"]),
    (
        "crash before a sync",
        &[".clean-shutdown", "recovery-point"],
    ),
];

/// A batch as read: its bytes and its records with their offsets.
type ReadBatch = (Vec<u8>, Vec<(Offset, Record)>);

/// Reads the whole log, one segment per read (a read stops at the end of a segment).
fn read_all(log: &Log) -> Result<Vec<ReadBatch>> {
    let mut batches = Vec::new();
    let mut from = log.log_start_offset();
    for _ in 0..=log.segment_count() {
        if from >= log.log_end_offset() {
            break;
        }
        let read = log.read(from, 1 << 20, ReadBound::LogEnd)?;
        for batch in read.batches() {
            let batch = batch?;
            let mut records = Vec::new();
            for record in batch.records() {
                let record = record?;
                records.push((record.offset, record.to_owned_record()));
            }
            batches.push((batch.as_bytes().to_vec(), records));
        }
        from = read.next_offset();
    }
    Ok(batches)
}

fn expected_record(e: &Expected) -> Record {
    let (_, timestamp, key, value, headers) = *e;
    let mut record = Record::new(value, timestamp);
    record.key = key.map(<[u8]>::to_vec);
    for (name, value) in headers {
        record = record.with_header(*name, *value);
    }
    record
}

#[test]
fn fixtures_hold_the_expected_files() -> Result {
    for name in ["v1-log", "v1-corrupt"] {
        let mut found: Vec<String> = std::fs::read_dir(fixture(name))?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_, _>>()?;
        found.sort();
        assert_eq!(found, FIXTURE_FILES, "{name}");
    }
    assert_eq!(
        FORMAT_VERSION, 1,
        "a new format version needs new fixtures beside these"
    );
    Ok(())
}

#[test]
fn v1_log_opens_with_its_records() -> Result {
    let expected: Vec<(Offset, Record)> = RECORDS
        .iter()
        .map(|e| (Offset(e.0), expected_record(e)))
        .collect();
    for (shutdown, without) in SHUTDOWNS {
        let dir = copy_fixture("v1-log", without)?;
        let log = Log::open(dir.path(), config())?;
        assert_eq!(log.log_start_offset(), Offset(0), "{shutdown}");
        assert_eq!(log.log_end_offset(), Offset(10), "{shutdown}");
        assert_eq!(log.segment_count(), 2, "{shutdown}");
        let records: Vec<(Offset, Record)> = read_all(&log)?
            .into_iter()
            .flat_map(|(_, records)| records)
            .collect();
        assert_eq!(records, expected, "{shutdown}");
        for (offset, record) in &expected {
            let read = log.read(*offset, 1, ReadBound::LogEnd)?;
            let first = read
                .records()
                .next()
                .transpose()?
                .map(|r| (r.offset, r.to_owned_record()));
            assert_eq!(
                first.as_ref(),
                Some(&(*offset, record.clone())),
                "{shutdown}: from {offset}"
            );
        }
        log.close()?;
    }
    Ok(())
}

/// The batches on disk are byte for byte what the encoder writes today for the same
/// records (after the base offset, which the log assigns): a change of the encoding
/// shows up here, not in a field report.
#[test]
fn v1_log_batches_match_the_encoder_byte_for_byte() -> Result {
    let dir = copy_fixture("v1-log", &[])?;
    let log = Log::open(dir.path(), config())?;
    let mut found = Vec::new();
    for (bytes, records) in read_all(&log)? {
        let (batch, rest) = BatchRef::parse(&bytes, true)?;
        assert!(rest.is_empty());
        let header = batch.header();
        assert_eq!(header.magic, FORMAT_VERSION);
        assert_eq!((header.leader_epoch, header.attributes), (0, 0));
        let producer = (
            header.producer_id,
            header.producer_epoch,
            header.base_sequence,
        );
        assert_eq!(producer, (-1, -1, -1));
        let (base, next) = (batch.base_offset().get(), batch.next_offset().get());
        let records: Vec<Record> = records.into_iter().map(|(_, r)| r).collect();
        let encoded = RecordBatch::from_records(&records)?;
        assert_eq!(
            bytes.get(8..),
            encoded.as_bytes().get(8..),
            "batch at {base}"
        );
        assert_eq!(bytes.get(..8), Some(base.to_le_bytes().as_slice()));
        found.push((base, next));
    }
    assert_eq!(found, BATCHES);
    log.close()?;
    Ok(())
}

#[test]
fn v1_log_finds_offsets_by_timestamp_and_takes_appends() -> Result {
    let dir = copy_fixture("v1-log", &[])?;
    let log = Log::open(dir.path(), config())?;
    assert_eq!(log.offset_for_timestamp(T0 - 100)?, Some(Offset(0)));
    assert_eq!(log.offset_for_timestamp(T0 + 6)?, Some(Offset(3)));
    assert_eq!(log.offset_for_timestamp(T0 + 25)?, Some(Offset(7)));
    assert_eq!(log.offset_for_timestamp(T0 + 41)?, Some(Offset(9)));
    assert_eq!(log.offset_for_timestamp(T0 + 42)?, None);
    let appended = log.append_records(&[Record::new("new", T0 + 50)])?;
    assert_eq!(appended.base_offset, Offset(10));
    log.close()?;
    drop(log);
    let log = Log::open(dir.path(), config())?;
    assert_eq!(log.log_end_offset(), Offset(11));
    let read = log.read(Offset(10), 1 << 20, ReadBound::LogEnd)?;
    let values: Vec<Vec<u8>> = read
        .records()
        .map(|r| r.map(|r| r.value.to_vec()))
        .collect::<Result<_, _>>()?;
    assert_eq!(values, [b"new".to_vec()]);
    Ok(())
}

/// Each fixture file's name and bytes (`None` when missing).
type Snapshot = Vec<(&'static str, Option<Vec<u8>>)>;

/// The bytes of every fixture file in `dir`, to check that a failed open changed none.
fn snapshot(dir: &Path) -> Result<Snapshot> {
    Ok(FIXTURE_FILES
        .iter()
        .map(|f| (*f, std::fs::read(dir.join(f)).ok()))
        .collect())
}

/// With the recovery point (or the clean-shutdown marker) saying that the first
/// segment was fsynced, damage in it is a hole in the middle of the log.
#[test]
fn v1_corrupt_fails_to_open_naming_the_sealed_segment() -> Result {
    for (shutdown, without) in SHUTDOWNS.iter().take(2) {
        let dir = copy_fixture("v1-corrupt", without)?;
        let before = snapshot(dir.path())?;
        match Log::open(dir.path(), config()) {
            Err(Error::Corrupt { path, .. } | Error::SegmentDiscontinuity { path, .. }) => {
                assert_eq!(path, dir.path().join(FIRST_SEGMENT), "{shutdown}");
            }
            Err(other) => panic!("{shutdown}: expected a corrupt sealed segment, got {other}"),
            Ok(log) => panic!(
                "{shutdown}: a corrupt sealed segment opened, ending at {}",
                log.log_end_offset()
            ),
        }
        assert!(
            snapshot(dir.path())? == before,
            "{shutdown}: a failed open changes nothing"
        );
    }
    Ok(())
}

/// Without a recovery point nothing is known to be fsynced (a roll does not sync), so
/// the same damage reads as a torn tail: the log keeps the records before it and
/// nothing after, the later segment included.
#[test]
fn v1_corrupt_without_a_recovery_point_keeps_the_records_before_the_damage() -> Result {
    let (_, without) = SHUTDOWNS[2];
    let dir = copy_fixture("v1-corrupt", without)?;
    let log = Log::open(dir.path(), config())?;
    assert_eq!(log.log_end_offset(), Offset(5));
    assert_eq!(log.segment_count(), 1);
    let records: Vec<(Offset, Record)> = read_all(&log)?
        .into_iter()
        .flat_map(|(_, records)| records)
        .collect();
    let expected: Vec<(Offset, Record)> = RECORDS
        .iter()
        .take(5)
        .map(|e| (Offset(e.0), expected_record(e)))
        .collect();
    assert_eq!(records, expected);
    Ok(())
}
