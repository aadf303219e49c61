//! Entry points shared by the cargo-fuzz targets in `fuzz/` and by the tests that
//! replay their corpus on stable Rust. Not part of the supported API.

use std::path::{Path, PathBuf};

use crate::batch::{BatchHeader, BatchRef, HEADER_LEN, RecordBatch};
use crate::checkpoint::{CLEAN_SHUTDOWN_FILE, RecoveryPoint};
use crate::config::LogConfig;
use crate::error::{IoContext, Result};
use crate::log::{Log, ReadBound};
use crate::offset::Offset;
use crate::record::Record;
use crate::segment;

/// A bound on the read loop. Every read that makes progress takes at least one batch
/// of 71 bytes or more, so reaching it needs a `.log` of over 4 MiB: far more than a
/// fuzzer input.
const READS_MAX: usize = 1 << 16;

/// Decodes arbitrary bytes as a batch and walks every record; must never panic.
pub fn decode_batch(data: &[u8]) {
    if let Ok(batch) = RecordBatch::from_bytes(data.to_vec()) {
        let view = batch.as_ref();
        for record in view.records() {
            assert!(record.is_ok(), "a checked batch decodes");
        }
    }
    if let Ok((batch, _)) = BatchRef::parse(data, false) {
        for record in batch.records().flatten() {
            let _ = record.headers().count();
        }
    }
}

/// Splits a fuzzer input of [`open_log_dir`]: byte 0 is `n`, bytes `1..1 + n` are the
/// index part (cut short if the input is), the rest is the `.log` bytes.
pub fn split_log_dir_input(data: &[u8]) -> (&[u8], &[u8]) {
    let Some((&n, rest)) = data.split_first() else {
        return (&[], &[]);
    };
    rest.split_at(usize::from(n).min(rest.len()))
}

/// What the fuzzed directory tells recovery about the state it was left in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shutdown {
    /// A crash before the first fsync: no recovery point, no marker. Nothing is
    /// trusted, every batch is checked.
    Crash,
    /// A crash after an fsync: a recovery point past every offset the index part can
    /// name, so recovery trusts everything before the last index entry that matches
    /// its batch header.
    CrashAfterSync,
    /// A clean shutdown: the marker file tells recovery to trust the index.
    Clean,
}

/// The files of one segment of the fuzzed directory.
#[derive(Clone, Copy, Debug)]
struct SegmentFiles<'a> {
    base: Offset,
    log: &'a [u8],
    /// Written as both the `.index` and the `.timeindex`.
    index: &'a [u8],
}

/// Lays the fuzzer's bytes out as a log directory (see [`split_log_dir_input`]),
/// opens it, reads it to the end, appends, truncates, closes and reopens it.
///
/// The `.log` bytes are laid out as one segment at base offset 0 and, when they hold
/// a batch boundary past the middle, also as two: a sealed segment with the index
/// part, and an active one named by the base offset in the batch header found there.
/// Each layout is opened in every [`Shutdown`] state. After a crash with nothing
/// trusted, every batch is checked: opening may fail, but whatever opens must read
/// back cleanly and reopen as it was closed. When recovery is told to trust part of
/// the log, reads of that part may fail on damage there, but nothing may panic or
/// loop.
pub fn open_log_dir(data: &[u8]) {
    let (index, log) = split_log_dir_input(data);
    let whole = [SegmentFiles {
        base: Offset::ZERO,
        log,
        index,
    }];
    let cut = cut_in_two(log).map(|(at, base)| {
        let (first, second) = log.split_at(at);
        [
            SegmentFiles {
                base: Offset::ZERO,
                log: first,
                index,
            },
            SegmentFiles {
                base,
                log: second,
                index: &[],
            },
        ]
    });
    let layouts = [Some(whole.as_slice()), cut.as_ref().map(|c| c.as_slice())];
    for segments in layouts.into_iter().flatten() {
        for shutdown in [Shutdown::Crash, Shutdown::CrashAfterSync, Shutdown::Clean] {
            let Ok(dir) = TempDir::new() else { return };
            if write_dir(&dir.0, segments, shutdown).is_ok() {
                open_and_read(&dir.0, shutdown == Shutdown::Crash);
            }
        }
    }
}

/// The first batch boundary at or past the middle of `log` (or the last one before
/// it), with the base offset of the batch there: the header's if it parses, else the
/// offset after the batches before. `None` without a boundary inside `log`, or when
/// that base offset is 0 (the first segment's name).
fn cut_in_two(log: &[u8]) -> Option<(usize, Offset)> {
    let mut position = 0usize;
    let mut cut = None;
    for _ in 0..=log.len() / HEADER_LEN {
        let Some(header) = log.get(position..).and_then(|b| BatchHeader::parse(b).ok()) else {
            break;
        };
        position = position.checked_add(header.total_len())?;
        if position >= log.len() {
            break;
        }
        cut = Some((position, header.next_offset()));
        if position >= log.len() / 2 {
            break;
        }
    }
    let (at, next) = cut?;
    let base = log
        .get(at..)
        .and_then(|b| BatchHeader::parse(b).ok())
        .map_or(next, |h| h.base_offset);
    (base != Offset::ZERO).then_some((at, base))
}

fn write_dir(dir: &Path, segments: &[SegmentFiles<'_>], shutdown: Shutdown) -> Result<()> {
    for s in segments {
        let files = [("log", s.log), ("index", s.index), ("timeindex", s.index)];
        for (extension, bytes) in files {
            let path = dir.join(segment::file_name(s.base, extension));
            std::fs::write(&path, bytes).at(&path)?;
        }
    }
    match shutdown {
        Shutdown::Crash => {}
        Shutdown::CrashAfterSync => {
            let (point, _) = RecoveryPoint::open(dir, false)?;
            point.store(Offset(u64::from(u32::MAX)))?;
        }
        Shutdown::Clean => {
            let path = dir.join(CLEAN_SHUTDOWN_FILE);
            std::fs::write(&path, []).at(&path)?;
        }
    }
    Ok(())
}

/// Opens the log in `dir` and exercises it. `checked`: recovery checked every batch,
/// so every read must succeed.
fn open_and_read(dir: &Path, checked: bool) {
    let config = LogConfig {
        index_bytes_max: 4096,
        ..LogConfig::default()
    };
    let Ok(log) = Log::open(dir, config.clone()) else {
        return;
    };
    let mut from = log.log_start_offset();
    let end = log.log_end_offset();
    for _ in 0..READS_MAX {
        if from >= end {
            break;
        }
        match log.read(from, 4096, ReadBound::LogEnd) {
            Ok(read) if read.next_offset() > from => {
                for record in read.records() {
                    let _ = record.map(|r| r.headers().count());
                }
                from = read.next_offset();
            }
            _ if !checked => break,
            other => panic!("a recovered log reads to its end: {other:?} at {from}"),
        }
    }
    assert!(!checked || from >= end, "a recovered log reads to its end");
    let _ = log.offset_for_timestamp(0);
    let _ = log.offset_for_timestamp(i64::MAX);
    let _ = log.append_records(&[Record::new("x", 0)]);
    let _ = log.truncate_to(Offset(end.0 / 2));
    let end = log.log_end_offset();
    let closed = log.close();
    drop(log);
    if closed.is_ok() && checked {
        match Log::open(dir, config) {
            Ok(log) => assert_eq!(log.log_end_offset(), end, "a closed log reopens as it was"),
            Err(e) => panic!("a cleanly closed log reopens: {e}"),
        }
    }
}

/// A fresh directory for one run, removed on drop (also when a check panics). In
/// memory (`/dev/shm`) where there is one: the log fsyncs several times per open,
/// which on a disk costs more than the rest of a run, and what is fuzzed here is the
/// logic, not the disk.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> std::io::Result<TempDir> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let shm = Path::new("/dev/shm");
        let parent = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let dir = parent.join(format!("log-engine-fuzz-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
