//! The one error type of the crate.

use std::io;
use std::path::PathBuf;

use crate::offset::Offset;

/// A specialised `Result` for log operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the log engine. Each variant says what failed and
/// where, so an operator can find the file and the byte.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system call on a file failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The error from the operating system.
        source: io::Error,
    },
    /// An earlier write or fsync failed. The kernel may have dropped the dirty pages,
    /// so the log refuses every later append until it is reopened and recovered.
    #[error("the log at {path} refuses appends after an earlier I/O failure: {cause}")]
    PreviousIo {
        /// The log directory.
        path: PathBuf,
        /// What the first failure was.
        cause: String,
    },
    /// The log or cursor store was closed (its owner is shutting it down or deleting
    /// it): it takes no more writes.
    #[error("{path} is closed")]
    Closed {
        /// The log or cursor store directory.
        path: PathBuf,
    },
    /// A record batch is malformed: its bytes do not follow the format.
    #[error("invalid record batch: {reason}")]
    InvalidBatch {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A record batch's CRC does not match its contents.
    #[error("record batch CRC mismatch: stored {expected:#010x}, computed {actual:#010x}")]
    ChecksumMismatch {
        /// The CRC stored in the batch header.
        expected: u32,
        /// The CRC computed over the batch.
        actual: u32,
    },
    /// A batch is larger than the configured maximum.
    #[error("record batch of {size} bytes is larger than the limit of {limit} bytes")]
    BatchTooLarge {
        /// The size of the batch.
        size: usize,
        /// The configured limit.
        limit: u32,
    },
    /// Recovery found data that cannot be repaired by cutting a torn tail: a segment
    /// file that is damaged in a way that would lose data if it were truncated.
    #[error("corrupt log file {path} at byte {position}: {reason}")]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// The byte position of the damage.
        position: u64,
        /// What is wrong.
        reason: String,
    },
    /// A record batch read back from a segment fails its checks: its header, its
    /// length, its CRC or its base offset (which must follow the batch before it). The
    /// bytes on disk are not the bytes that were written, and none of the batch is
    /// returned. Reads from an earlier offset still return the batches before it.
    #[error("corrupt record batch in {path} at byte {position} (offset {offset}): {reason}")]
    CorruptBatch {
        /// The segment's `.log` file.
        path: PathBuf,
        /// The byte position of the batch in the file.
        position: u64,
        /// The base offset the batch should have: the offset of its first record.
        offset: Offset,
        /// What is wrong.
        reason: String,
    },
    /// Two adjacent segments do not meet: records between them are missing (a gap) or
    /// present twice (an overlap). Recovery refuses to paper over lost data.
    #[error(
        "segments do not meet: {path} ends at offset {end} but the next segment starts at {next_base}"
    )]
    SegmentDiscontinuity {
        /// The earlier segment's `.log` file.
        path: PathBuf,
        /// The offset after its last record.
        end: Offset,
        /// The base offset of the following segment.
        next_base: Offset,
    },
    /// A requested offset lies outside the log.
    #[error("offset {offset} is out of range: the log holds [{start}, {end})")]
    OffsetOutOfRange {
        /// The requested offset.
        offset: Offset,
        /// The log start offset.
        start: Offset,
        /// The log end offset.
        end: Offset,
    },
    /// The log was truncated or reset (as a follower whose tail diverged from its
    /// leader's) while records waited for their fsync: they may be gone.
    #[error(
        "the log was truncated (its end is now {end}) while the records below {offset} waited for their fsync"
    )]
    Truncated {
        /// The end of the records that waited.
        offset: Offset,
        /// The log end after the truncation.
        end: Offset,
    },
    /// The configuration is inconsistent.
    #[error("invalid log configuration: {0}")]
    InvalidConfig(String),
    /// A cursor name is empty, too long or holds a byte that is not allowed.
    #[error("invalid cursor name {name:?}: {reason}")]
    InvalidCursorName {
        /// The rejected name.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// Cursor metadata exceeds its size limit.
    #[error("cursor metadata of {size} bytes exceeds the limit of {limit} bytes")]
    CursorMetadataTooLarge {
        /// The size given.
        size: usize,
        /// The limit.
        limit: usize,
    },
}

impl Error {
    /// Wraps an `io::Error` with the path it concerns.
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// Attaches a path to I/O results.
pub(crate) trait IoContext<T> {
    /// Maps an `io::Error` to [`Error::Io`] naming `path`.
    fn at(self, path: &std::path::Path) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, path: &std::path::Path) -> Result<T> {
        self.map_err(|source| Error::io(path, source))
    }
}
