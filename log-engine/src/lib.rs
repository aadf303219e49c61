//! `log_engine`: a segmented, append-only commit log, the storage core of the broker
//! and usable on its own in any Rust program.
//!
//! A [`Log`] lives in one directory. Records are appended in [`RecordBatch`]es, the
//! unit of writing, storing, replicating and reading; each batch carries a CRC and its
//! offsets. The log is split into segments with sparse memory-mapped indexes, rolls
//! them by size and age, deletes old ones by retention, and recovers from a crash by
//! checking what was not yet known to be on disk. Named [`CursorStore`] positions let
//! consumers remember where they are.
//!
//! ```
//! use log_engine::{Log, LogConfig, ReadBound, Record};
//!
//! # fn main() -> Result<(), log_engine::Error> {
//! let dir = tempfile::tempdir().map_err(|e| log_engine::Error::InvalidConfig(e.to_string()))?;
//! let log = Log::open(dir.path(), LogConfig::default())?;
//! let appended = log.append_records(&[Record::new("hello", 1), Record::new("world", 2)])?;
//! log.flush()?;
//! let read = log.read(appended.base_offset, 1 << 20, ReadBound::Durable)?;
//! let values: Vec<&[u8]> = read.records().map(|r| r.map(|r| r.value)).collect::<Result<_, _>>()?;
//! assert_eq!(values, [b"hello".as_slice(), b"world".as_slice()]);
//! log.close()?;
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod batch;
mod checkpoint;
mod clock;
mod config;
mod cursor;
mod error;
mod index;
mod log;
mod offset;
mod record;
mod recovery;
mod retention;
mod segment;
mod varint;

#[doc(hidden)]
pub mod fuzzing;

pub use batch::{
    BATCH_BYTES_MAX, BatchHeader, BatchRef, FORMAT_VERSION, HEADER_LEN, RecordBatch,
    RecordBatchBuilder, Records,
};
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{FlushPolicy, LogConfig};
pub use cursor::{Cursor, CursorStore};
pub use error::{Error, Result};
pub use log::{AppendInfo, Batches, Log, ReadBatches, ReadBound, RecordsFrom, RetentionReport};
pub use offset::{FilePosition, Offset, RelativeOffset, TimestampMs};
pub use record::{Header, Record, RecordRef};

/// The README's examples, compiled and run as doctests so they cannot drift.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
