//! The active segment reserves disk space ahead of its end (without changing its
//! size, so recovery and readers see only what was written), and gives the reserve
//! back when it is sealed by a roll or by close.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg(target_os = "linux")]

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use log_engine::{Log, LogConfig, Offset, ReadBound, Record};

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
fn the_active_segment_reserves_ahead_and_sealed_segments_give_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes_max: 512 * 1024,
        ..LogConfig::default()
    };
    let log = Log::open(dir.path(), config.clone()).unwrap();
    append_kib(&log, 100);
    let [active] = common::segment_files(dir.path()).try_into().unwrap();
    let (size, allocated) = usage(&active);
    if !can_reserve(tempfile::tempdir().unwrap().path()) {
        eprintln!("this file system cannot reserve space; nothing to check");
        return;
    }
    assert!(allocated >= size + 8192, "{allocated} for {size}");
    assert!(
        size < 120 * 1024,
        "the size counts written bytes only: {size}"
    );

    // Roll: the sealed segment keeps only what it holds.
    append_kib(&log, 600);
    let files = common::segment_files(dir.path());
    assert!(files.len() >= 2, "{files:?}");
    let (sealed_size, sealed_allocated) = usage(&files[0]);
    assert!(
        sealed_allocated < sealed_size + 8192,
        "{sealed_allocated} allocated for {sealed_size} sealed"
    );

    // Close gives back the active segment's reserve too, and a reopened log reads
    // every record and nothing more.
    let end = log.log_end_offset();
    log.close().unwrap();
    for file in common::segment_files(dir.path()) {
        let (size, allocated) = usage(&file);
        assert!(allocated < size + 8192, "{file:?}: {allocated} for {size}");
    }
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
