//! The baselines: a plain file and the `commitlog` crate, configured like the log.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use commitlog::message::{MessageBuf, MessageSet};
use commitlog::{CommitLog, LogOptions};
use log_engine::LogConfig;

use crate::BenchResult;

/// Segments roll at this size in every log of the benchmarks: large enough that a
/// segment holds seconds of appends, small enough that a long run rolls several.
pub const SEGMENT_BYTES: u64 = 256 << 20;

/// The largest batch the benchmarks append (1000 records of 1 KiB are about 1 MiB),
/// with room to spare; `commitlog` refuses message sets over 1 MB by default.
pub const BATCH_BYTES_MAX: u32 = 8 << 20;

/// Bytes `commitlog` adds to each message (offset, size, CRC, metadata size).
const COMMITLOG_HEADER_BYTES: u64 = 20;

/// Bytes at the start of every `commitlog` segment file (its format magic).
const COMMITLOG_MAGIC_BYTES: u64 = 2;

/// The log-engine configuration of the benchmarks: [`SEGMENT_BYTES`] segments, no
/// fsync unless asked for, the other values at their defaults.
pub fn engine_config() -> LogConfig {
    LogConfig {
        segment_bytes_max: SEGMENT_BYTES,
        batch_bytes_max: BATCH_BYTES_MAX,
        ..LogConfig::default()
    }
}

/// `commitlog` options matching [`engine_config`]: [`SEGMENT_BYTES`] segments and an
/// index preallocated for a segment of 100-byte messages, so it never grows while
/// timed (`commitlog` indexes every message; the log engine every 4 KiB).
pub fn commitlog_options(dir: &Path) -> LogOptions {
    let mut options = LogOptions::new(dir);
    let index_entries = SEGMENT_BYTES / (COMMITLOG_HEADER_BYTES + 100);
    options
        .segment_max_bytes(SEGMENT_BYTES as usize)
        .message_max_bytes(BATCH_BYTES_MAX as usize)
        .index_max_items(index_entries as usize);
    options
}

/// Opens (or creates) a `commitlog` in `dir` with [`commitlog_options`].
pub fn open_commitlog(dir: &Path) -> BenchResult<CommitLog> {
    Ok(CommitLog::new(commitlog_options(dir))?)
}

/// The disk ceiling: one file that batches are written to back to back with
/// `write_all`, no index, no offsets.
#[derive(Debug)]
pub struct PlainFile {
    file: File,
}

impl PlainFile {
    /// Creates (or truncates) the file at `path`.
    pub fn create(path: &Path) -> BenchResult<PlainFile> {
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        Ok(PlainFile { file })
    }

    /// Writes `bytes` at the end of the file.
    pub fn append(&mut self, bytes: &[u8]) -> BenchResult<()> {
        Ok(self.file.write_all(bytes)?)
    }
}

/// A `commitlog` whose appends are durable: its own `flush` syncs only the index, so
/// this keeps the active segment file open and calls `fdatasync` on it after each
/// append.
pub struct DurableCommitLog {
    log: CommitLog,
    dir: PathBuf,
    /// The active segment's `.log` file, a second handle on the file `log` writes.
    active: File,
    /// Bytes in the active segment, to know when `commitlog` rolls to a new one.
    active_bytes: u64,
}

impl DurableCommitLog {
    /// Opens (or creates) the log in `dir` with [`commitlog_options`].
    pub fn open(dir: &Path) -> BenchResult<DurableCommitLog> {
        let log = open_commitlog(dir)?;
        let active_path = newest_segment(dir)?;
        let active = File::open(&active_path)?;
        let active_bytes = active.metadata()?.len();
        Ok(DurableCommitLog {
            log,
            dir: dir.to_path_buf(),
            active,
            active_bytes,
        })
    }

    /// Appends the messages of `buf` (rewriting their offsets) and syncs the segment.
    pub fn append_durable(&mut self, buf: &mut MessageBuf) -> BenchResult<()> {
        let len = buf.bytes().len() as u64;
        // `commitlog` rolls when the message set would not fit the segment.
        let rolls = self.active_bytes + len > SEGMENT_BYTES;
        self.log.append(buf)?;
        if rolls {
            self.active = File::open(newest_segment(&self.dir)?)?;
            self.active_bytes = COMMITLOG_MAGIC_BYTES;
        }
        self.active_bytes += len;
        self.active.sync_data()?;
        Ok(())
    }

    /// The offset the next message gets.
    pub fn next_offset(&self) -> u64 {
        self.log.next_offset()
    }
}

/// The newest `.log` file in `dir`: `commitlog` names segments by their base offset
/// in 20 digits, so the largest name is the active segment.
pub fn newest_segment(dir: &Path) -> BenchResult<PathBuf> {
    let mut newest: Option<PathBuf> = None;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "log") && newest.as_ref().is_none_or(|n| path > *n)
        {
            newest = Some(path);
        }
    }
    newest.ok_or_else(|| format!("no segment file in {}", dir.display()).into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{Shape, commitlog_batch};

    #[test]
    fn durable_commitlog_follows_its_active_segment() -> BenchResult<()> {
        let dir = tempfile::tempdir()?;
        let mut log = DurableCommitLog::open(dir.path())?;
        let mut buf = commitlog_batch(Shape::new(100, 100))?;
        for _ in 0..3 {
            log.append_durable(&mut buf)?;
        }
        assert_eq!(log.next_offset(), 300);
        assert_eq!(log.active_bytes, log.active.metadata()?.len());
        Ok(())
    }
}
