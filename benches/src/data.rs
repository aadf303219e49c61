//! Deterministic records and batches, encoded once outside every timed loop.

use std::fmt;

use commitlog::message::MessageBuf;
use log_engine::{RecordBatch, RecordBatchBuilder, TimestampMs};

use crate::BenchResult;

/// The timestamp of the first record of every batch (November 2023); later records
/// of a batch are one millisecond apart.
pub const TIMESTAMP_MS: TimestampMs = 1_700_000_000_000;

/// A small, fast pseudo-random generator (xorshift64*), so that benchmarks need no
/// extra crate and every run sees the same sequence.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed` (zero is replaced, xorshift needs a set bit).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..bound` (`bound` > 0); the bias is negligible for the small
    /// bounds benchmarks use.
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound.max(1)
    }
}

/// A record value of `len` pseudo-random bytes, different for every `seed`.
pub fn value(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ len as u64);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The shape of the batches a benchmark appends: how many records, of what size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// Records per batch.
    pub records: usize,
    /// Bytes of each record's value (no key, no headers).
    pub value_bytes: usize,
}

impl Shape {
    /// The shapes of the append benchmarks: 100 B and 1 KiB records, in batches of
    /// 1, 100 and 1000.
    pub const APPEND: [Shape; 6] = [
        Shape::new(1, 100),
        Shape::new(100, 100),
        Shape::new(1000, 100),
        Shape::new(1, 1024),
        Shape::new(100, 1024),
        Shape::new(1000, 1024),
    ];

    /// A shape of `records` records of `value_bytes` bytes.
    pub const fn new(records: usize, value_bytes: usize) -> Shape {
        Shape {
            records,
            value_bytes,
        }
    }

    /// The size of the records as a label: `100B`, `1KiB`.
    pub fn size_label(&self) -> String {
        if self.value_bytes.is_multiple_of(1024) {
            format!("{}KiB", self.value_bytes / 1024)
        } else {
            format!("{}B", self.value_bytes)
        }
    }
}

impl fmt::Display for Shape {
    /// `100B x1000`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} x{}", self.size_label(), self.records)
    }
}

/// The values of one batch of `shape`: the same for both logs.
pub fn values(shape: Shape) -> Vec<Vec<u8>> {
    (0..shape.records)
        .map(|i| value(shape.value_bytes, i as u64))
        .collect()
}

/// One log-engine batch of `shape`, encoded once. `Log::append` rewrites only its
/// base offset, so the same batch can be appended again and again.
pub fn engine_batch(shape: Shape) -> BenchResult<RecordBatch> {
    let values = values(shape);
    let capacity = values.iter().map(|v| v.len() + 16).sum::<usize>() + 64;
    let mut builder = RecordBatchBuilder::with_capacity(capacity);
    for (i, value) in values.iter().enumerate() {
        builder.push(None, value, TIMESTAMP_MS + i as TimestampMs)?;
    }
    Ok(builder.finish()?)
}

/// The same records as [`engine_batch`], as a `commitlog` message set. Its append
/// rewrites the offsets in place, so it too can be appended repeatedly.
pub fn commitlog_batch(shape: Shape) -> BenchResult<MessageBuf> {
    let mut buf = MessageBuf::default();
    for value in values(shape) {
        buf.push(value).map_err(debug_error)?;
    }
    Ok(buf)
}

/// A copy of a `commitlog` message set (the type is not `Clone`).
pub fn copy_message_buf(buf: &MessageBuf) -> BenchResult<MessageBuf> {
    use commitlog::message::MessageSet;
    MessageBuf::from_bytes(buf.bytes().to_vec()).map_err(debug_error)
}

/// Turns an error that implements only `Debug` (as `commitlog`'s message errors do)
/// into a [`crate::BenchError`].
pub fn debug_error(error: impl fmt::Debug) -> crate::BenchError {
    format!("{error:?}").into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use commitlog::message::MessageSet;

    #[test]
    fn both_logs_get_the_same_records() -> BenchResult<()> {
        let shape = Shape::new(10, 100);
        let batch = engine_batch(shape)?;
        let buf = commitlog_batch(shape)?;
        let engine: Vec<Vec<u8>> = batch
            .as_ref()
            .records()
            .map(|r| r.map(|r| r.value.to_vec()))
            .collect::<Result<_, _>>()?;
        let other: Vec<Vec<u8>> = buf.iter().map(|m| m.payload().to_vec()).collect();
        assert_eq!(engine, other);
        assert_eq!(engine, values(shape));
        Ok(())
    }

    #[test]
    fn labels_read_well() {
        assert_eq!(Shape::new(1000, 100).to_string(), "100B x1000");
        assert_eq!(Shape::new(1, 1024).to_string(), "1KiB x1");
    }
}
