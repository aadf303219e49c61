//! Shared helpers for the benchmarks of `log_engine`.
//!
//! Every measurement here has a baseline that does the same work on the same bytes:
//! a plain file (the disk ceiling) and the `commitlog` crate (an existing Rust commit
//! log). The criterion benches in `benches/` and the `ratios` report both call these
//! helpers, so the two measure exactly the same loops.
//!
//! - [`data`]: deterministic record values and batches encoded once, for both logs.
//! - [`baseline`]: the plain file and the `commitlog` crate, opened for a benchmark.
//! - [`append`]: timed append loops, each into a fresh directory.
//! - [`durable`]: many threads appending with an fsync per append.
//! - [`cursors`]: cursor commits.
//! - [`read`]: filling a log, scanning it whole and reading at random offsets.
//! - [`stats`]: medians, percentiles and human-readable rates for the report.
#![deny(missing_docs)]

pub mod append;
pub mod baseline;
pub mod cursors;
pub mod data;
pub mod durable;
pub mod read;
pub mod stats;

/// The error type of the helpers: whatever failed, with its message.
pub type BenchError = Box<dyn std::error::Error + Send + Sync>;

/// A specialised `Result` for the helpers.
pub type BenchResult<T> = Result<T, BenchError>;
