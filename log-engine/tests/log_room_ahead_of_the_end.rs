//! The active segment reserves disk space ahead of its end and writes zeros into
//! the first of it; a roll or close cuts both back, so that sealed and closed
//! segment files hold their batches and nothing more. Zeros after the last batch,
//! as a killed writer leaves them, are not damage: the next open keeps them for the
//! active segment's appends and cuts them after a sealed segment; anything else
//! there is still damage.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg(target_os = "linux")]

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use log_engine::{Error, Log, LogConfig, Offset, ReadBound, Record};

mod common;

/// (size, bytes allocated on disk)
fn usage(path: &Path) -> (u64, u64) {
    let meta = std::fs::metadata(path).unwrap();
    (meta.len(), meta.blocks() * 512)
}

/// Whether `fallocate(FALLOC_FL_KEEP_SIZE)` works in `dir`.
fn can_reserve(dir: &Path) -> bool {
    use std::os::fd::AsRawFd;
    let probe = std::fs::File::create(dir.join("probe")).unwrap();
    // SAFETY: fallocate reads no memory; the descriptor lives as long as `probe`.
    let result =
        unsafe { libc::fallocate(probe.as_raw_fd(), libc::FALLOC_FL_KEEP_SIZE, 0, 1 << 20) };
    result == 0
}

fn append_kib(log: &Log, kib: usize) {
    for _ in 0..kib {
        log.append_records(&[Record::new(vec![b'x'; 1000], 0)])
            .unwrap();
    }
}

#[test]
fn the_active_segment_reserves_and_writes_ahead_and_a_seal_or_close_cuts_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes_max: 512 * 1024,
        ..LogConfig::default()
    };
    let log = Log::open(dir.path(), config.clone()).unwrap();
    append_kib(&log, 100);
    let [active] = common::segment_files(dir.path()).try_into().unwrap();
    let (length, allocated) = usage(&active);
    let data = log.size_bytes();
    assert!(
        length > data && length <= data + 256 * 1024,
        "the file goes on past its {data} bytes of batches with zeros, within 256 KiB: {length}"
    );
    assert!(zeros_from(&active, data), "only zeros after the batches");
    if !can_reserve(tempfile::tempdir().unwrap().path()) {
        eprintln!("this file system cannot reserve space; nothing more to check");
        return;
    }
    assert!(allocated >= data + 8192, "{allocated} for {data}");

    // Roll: the sealed segment keeps only what it holds.
    append_kib(&log, 600);
    let files = common::segment_files(dir.path());
    assert!(files.len() >= 2, "{files:?}");
    let (sealed_size, sealed_allocated) = usage(&files[0]);
    assert!(
        sealed_allocated < sealed_size + 8192,
        "{sealed_allocated} allocated for {sealed_size} sealed"
    );

    // Close gives back the active segment's reserve too, and cuts its zeros: the
    // files hold the batches and nothing more. A reopened log reads every record
    // and nothing more.
    let end = log.log_end_offset();
    let data = log.size_bytes();
    log.close().unwrap();
    let mut lengths = 0;
    for file in common::segment_files(dir.path()) {
        let (length, allocated) = usage(&file);
        assert!(
            allocated < length + 8192,
            "{file:?}: {allocated} for {length}"
        );
        lengths += length;
    }
    assert_eq!(
        lengths, data,
        "closed segment files hold their batches only"
    );
    drop(log);
    let log = Log::open(dir.path(), config).unwrap();
    assert_eq!(log.log_end_offset(), end);
    let mut read = 0u64;
    let mut next = Offset(0);
    while next < end {
        let batches = log.read(next, 1 << 20, ReadBound::LogEnd).unwrap();
        read += batches.records().count() as u64;
        next = batches.next_offset();
    }
    assert_eq!(read, end.0);
}

/// Whether `path` holds only zeros from `position` to its end.
fn zeros_from(path: &Path, position: u64) -> bool {
    let bytes = std::fs::read(path).unwrap();
    bytes
        .get(position as usize..)
        .is_some_and(|tail| tail.iter().all(|&b| b == 0))
}

/// Every record of `log`, as (offset, value) pairs.
fn values(log: &Log) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut next = log.log_start_offset();
    while next < log.log_end_offset() {
        let batches = log.read(next, 1 << 20, ReadBound::LogEnd).unwrap();
        for record in batches.records() {
            let record = record.unwrap();
            out.push((record.offset.0, record.value.to_vec()));
        }
        next = batches.next_offset();
    }
    out
}

fn append_numbered(log: &Log, count: u64) {
    for _ in 0..count {
        let value = format!("{:0>500}", log.log_end_offset().0);
        log.append_records(&[Record::new(value.into_bytes(), 0)])
            .unwrap();
    }
}

fn numbered(count: u64) -> Vec<(u64, Vec<u8>)> {
    (0..count)
        .map(|n| (n, format!("{n:0>500}").into_bytes()))
        .collect()
}

#[test]
fn a_killed_writers_zeros_are_kept_for_the_next_appends_and_cut_by_close() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(dir.path(), LogConfig::default()).unwrap();
        append_numbered(&log, 300);
        // Dropped without close, as a killed process leaves it.
    }
    let [active] = common::segment_files(dir.path()).try_into().unwrap();
    let length = usage(&active).0;
    {
        let log = Log::open(dir.path(), LogConfig::default()).unwrap();
        let data = log.size_bytes();
        assert!(
            length > data,
            "zeros were written ahead: {length} for {data}"
        );
        assert_eq!(usage(&active).0, length, "the open keeps them");
        assert!(zeros_from(&active, data));
        assert_eq!(log.log_end_offset(), Offset(300));
        assert_eq!(values(&log), numbered(300));
        append_numbered(&log, 10);
        // Killed again, after appends into those zeros.
    }
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    assert_eq!(values(&log), numbered(310));
    let data = log.size_bytes();
    log.close().unwrap();
    assert_eq!(usage(&active).0, data, "close cut the zeros");
    drop(log);
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    assert_eq!(values(&log), numbered(310));
}

#[test]
fn zeros_after_a_sealed_segment_are_cut_and_other_bytes_there_are_damage() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes_max: 16 * 1024,
        ..LogConfig::default()
    };
    {
        let log = Log::open(dir.path(), config.clone()).unwrap();
        append_numbered(&log, 200);
        log.close().unwrap();
    }
    let files = common::segment_files(dir.path());
    assert!(files.len() >= 3, "{files:?}");
    let sealed = &files[1];
    let sealed_length = usage(sealed).0;

    // As a roll whose cut failed would leave it: zeros after the sealed batches.
    let append_to = |path: &Path, bytes: &[u8]| {
        let mut file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
        file.write_all(bytes).unwrap();
    };
    append_to(sealed, &[0u8; 40 * 1024]);
    {
        let log = Log::open(dir.path(), config.clone()).unwrap();
        assert_eq!(values(&log), numbered(200));
        assert_eq!(usage(sealed).0, sealed_length, "the open cut the zeros");
        log.close().unwrap();
    }

    // A byte other than zero among them is damage in records below the recovery
    // point: the open fails and changes nothing.
    let mut tail = vec![0u8; 40 * 1024];
    tail[20 * 1024] = 1;
    append_to(sealed, &tail);
    match Log::open(dir.path(), config) {
        Err(Error::Corrupt { path, position, .. }) => {
            assert_eq!(&path, sealed);
            assert_eq!(position, sealed_length);
        }
        other => panic!("expected the sealed segment's damage, got {other:?}"),
    }
    assert_eq!(usage(sealed).0, sealed_length + 40 * 1024);
}
