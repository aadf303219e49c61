//! Entry points shared by the cargo-fuzz targets in `fuzz/` and by the tests that
//! replay their corpus on stable Rust. Not part of the supported API.

use std::path::Path;

use crate::batch::{BatchRef, RecordBatch};
use crate::checkpoint::{CLEAN_SHUTDOWN_FILE, RecoveryPoint};
use crate::config::LogConfig;
use crate::error::{IoContext, Result};
use crate::log::{Log, ReadBound};
use crate::offset::Offset;

/// The name every file of the fuzzed segment starts with: base offset 0.
const SEGMENT_STEM: &str = "00000000000000000000";
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
/// index part (cut short if the input is), the rest is the `.log` file.
pub fn split_log_dir_input(data: &[u8]) -> (&[u8], &[u8]) {
    let Some((&n, rest)) = data.split_first() else {
        return (&[], &[]);
    };
    rest.split_at(usize::from(n).min(rest.len()))
}

/// What the fuzzed directory tells recovery about the state it was left in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shutdown {
    /// A crash before the first fsync: no recovery point, no marker. Every batch is
    /// checked.
    Crash,
    /// A crash after an fsync: a recovery point past every offset the index part can
    /// name, so recovery trusts everything before the last index entry that matches
    /// its batch header.
    CrashAfterSync,
    /// A clean shutdown: the marker file tells recovery to trust the segment.
    Clean,
}

/// Lays the fuzzer's bytes out as a log directory of one segment (see
/// [`split_log_dir_input`]: the index part is written as both the `.index` and the
/// `.timeindex`), opens it, reads it to the end, appends, truncates, closes and
/// reopens it.
///
/// The directory is laid out three times, once per [`Shutdown`] state. After a
/// crash with nothing trusted, every batch is checked: opening may fail, but whatever
/// opens must read back cleanly and reopen as it was closed. When recovery is told to
/// trust part of the segment, reads of that part may fail on damage there, but
/// nothing may panic or loop.
pub fn open_log_dir(data: &[u8]) {
    let (index, log) = split_log_dir_input(data);
    for shutdown in [Shutdown::Crash, Shutdown::CrashAfterSync, Shutdown::Clean] {
        let Ok(dir) = tempfile_dir() else { return };
        if write_segment(&dir, index, log, shutdown).is_ok() {
            open_and_read(&dir, shutdown == Shutdown::Crash);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

fn write_segment(dir: &Path, index: &[u8], log: &[u8], shutdown: Shutdown) -> Result<()> {
    let files = [("log", log), ("index", index), ("timeindex", index)];
    for (extension, bytes) in files {
        let path = dir.join(format!("{SEGMENT_STEM}.{extension}"));
        std::fs::write(&path, bytes).at(&path)?;
    }
    match shutdown {
        Shutdown::Crash => {}
        Shutdown::CrashAfterSync => {
            let (point, _) = RecoveryPoint::open(dir)?;
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
    let _ = log.append_records(&[crate::record::Record::new("x", 0)]);
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

/// A fresh directory for one input. In memory (`/dev/shm`) where there is one: the
/// log fsyncs several times per open, which on a disk costs more than the rest of a
/// run, and what is fuzzed here is the logic, not the disk.
fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
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
    Ok(dir)
}
