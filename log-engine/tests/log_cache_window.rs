//! With a cache window, fsynced data older than the newest `cache_window_bytes` of
//! the log leaves the page cache; the window's bytes stay, and everything still
//! reads back from the disk.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg(target_os = "linux")]

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use log_engine::{Log, LogConfig, Offset, ReadBound, Record};

mod common;

const MIB: u64 = 1 << 20;

/// How many bytes of `path` are in the page cache (`mincore` over a mapping, which
/// itself reads nothing in).
fn resident_bytes(path: &Path) -> u64 {
    let file = File::open(path).unwrap();
    if file.metadata().unwrap().len() == 0 {
        return 0;
    }
    // SAFETY: the mapping is only passed to mincore, never read; the test does not
    // change the file while it is mapped.
    let map = unsafe { memmap2::Mmap::map(&file) }.unwrap();
    let pages = map.len().div_ceil(4096);
    let mut flags = vec![0u8; pages];
    // SAFETY: `map` is a live mapping of `map.len()` bytes and `flags` holds one
    // byte per 4 KiB page of it.
    let result = unsafe { libc::mincore(map.as_ptr() as *mut _, map.len(), flags.as_mut_ptr()) };
    assert_eq!(result, 0, "mincore failed");
    flags.iter().filter(|&&f| f & 1 == 1).count() as u64 * 4096
}

/// Whether this file system drops clean pages on `POSIX_FADV_DONTNEED` (tmpfs, for
/// one, cannot: its pages are the data).
fn can_drop(dir: &Path) -> bool {
    let path = dir.join("probe");
    std::fs::write(&path, vec![7u8; MIB as usize]).unwrap();
    let file = File::open(&path).unwrap();
    file.sync_data().unwrap();
    // SAFETY: posix_fadvise reads no memory; the descriptor lives as long as `file`.
    let result = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    result == 0 && resident_bytes(&path) < MIB / 2
}

/// A temporary directory on a file system that drops clean pages when asked;
/// `None`, after saying so, where it does not.
fn droppable_dir() -> Option<tempfile::TempDir> {
    let dir = tempfile::tempdir().unwrap();
    if can_drop(tempfile::tempdir_in(dir.path()).unwrap().path()) {
        Some(dir)
    } else {
        eprintln!("this file system keeps dropped pages; nothing to check");
        None
    }
}

/// Appends `mib` MiB in batches of 16 records of 4000 bytes, each record's first
/// bytes its index.
fn append_mib(log: &Log, mib: u64, first: &mut u64) {
    let batches = mib * MIB / (16 * 4000);
    for _ in 0..batches {
        let records: Vec<Record> = (0..16)
            .map(|_| {
                let mut value = vec![b'v'; 4000];
                value[..8].copy_from_slice(&first.to_le_bytes());
                *first += 1;
                Record::new(value, 0)
            })
            .collect();
        log.append_records(&records).unwrap();
    }
}

fn config(window: Option<u64>) -> LogConfig {
    LogConfig {
        segment_bytes_max: 3 * MIB,
        cache_window_bytes: window,
        ..LogConfig::default()
    }
}

#[test]
fn flushed_segments_behind_the_window_leave_the_cache_and_still_read_back() {
    let Some(dir) = droppable_dir() else {
        return;
    };
    let log = Log::open(dir.path().join("log"), config(Some(4 * MIB))).unwrap();
    let mut written = 0;
    append_mib(&log, 14, &mut written);
    log.flush().unwrap();

    let files = common::segment_files(&dir.path().join("log"));
    assert!(files.len() >= 5, "{files:?}");
    let (older, newest) = files.split_at(files.len() - 2);
    // The two newest segments (the sealed one before the active one and the active
    // one) hold the window; everything before it is gone from the cache.
    for file in older {
        assert!(
            resident_bytes(file) <= 4096,
            "{} still has {} bytes cached",
            file.display(),
            resident_bytes(file)
        );
    }
    let kept: u64 = newest.iter().map(|f| resident_bytes(f)).sum();
    assert!(kept >= 2 * MIB, "only {kept} bytes of the window cached");

    // Dropped from the cache, not from the log: every record reads back, in order.
    let mut next = 0u64;
    let mut from = Offset::ZERO;
    while from < log.log_end_offset() {
        let read = log.read(from, 1 << 20, ReadBound::LogEnd).unwrap();
        for record in read.records() {
            let record = record.unwrap();
            assert_eq!(record.value[..8], next.to_le_bytes());
            next += 1;
        }
        from = read.next_offset();
    }
    assert_eq!(next, written);
}

#[test]
fn without_a_window_the_kernel_keeps_what_it_keeps() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config(None)).unwrap();
    let mut written = 0;
    append_mib(&log, 8, &mut written);
    log.flush().unwrap();
    log.checkpoint().unwrap();
    let files = common::segment_files(dir.path());
    let cached: u64 = files.iter().map(|f| resident_bytes(f)).sum();
    // Nothing asked the kernel to drop anything; a machine short of memory may
    // still have evicted some.
    assert!(cached >= 6 * MIB, "{cached} bytes cached of 8 MiB written");
}

#[test]
fn unflushed_bytes_are_never_named_and_checkpoint_drops_after_a_durable_append() {
    let Some(dir) = droppable_dir() else {
        return;
    };
    let log = Log::open(dir.path().join("log"), config(Some(MIB))).unwrap();
    let mut written = 0;
    // Three sealed segments and some, none fsynced: nothing is dropped.
    append_mib(&log, 10, &mut written);
    log.release_cache();
    let files = common::segment_files(&dir.path().join("log"));
    let first = files.first().unwrap();
    assert!(resident_bytes(first) >= 2 * MIB);

    // A durable append syncs everything; the next checkpoint drops what lies
    // behind the window.
    let mut last = log_engine::RecordBatch::from_records(&[Record::new("last", 0)]).unwrap();
    log.append_durable(&mut last).unwrap();
    log.checkpoint().unwrap();
    assert!(resident_bytes(first) <= 4096, "{}", resident_bytes(first));
}
