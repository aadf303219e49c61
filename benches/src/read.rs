//! Filling a log, scanning it whole and reading at random offsets, for the log
//! engine and for `commitlog`. Every scan checks that it saw every record, so a
//! read that returns too little fails instead of looking fast.

use std::hint::black_box;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use commitlog::message::{MessageBuf, MessageSet};
use commitlog::{CommitLog, ReadLimit};
use log_engine::{BatchRef, Log, Offset, ReadBound, RecordBatch};

use crate::BenchResult;
use crate::baseline::{engine_config, open_commitlog};

/// How much one read asks for: 1 MiB, a typical consumer fetch.
pub const READ_CHUNK_BYTES: usize = 1 << 20;

/// What a scan saw, so the work cannot be optimised away and can be checked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScanTotals {
    /// Records seen.
    pub records: u64,
    /// Bytes read (whole batches or messages as they are on disk), or, for a record
    /// scan, the sum of the value lengths.
    pub bytes: u64,
}

/// Opens a new log in `dir`, appends `batch` `count` times, closes it and opens it
/// again: its segment files then hold the batches and nothing more, for the plain
/// file reads to compare with (an open log's active segment goes on with the zeros
/// it writes ahead of its end).
pub fn fill_engine(dir: &Path, batch: &RecordBatch, count: u64) -> BenchResult<Log> {
    let log = Log::open(dir, engine_config())?;
    let mut batch = batch.clone();
    for _ in 0..count {
        log.append(&mut batch)?;
    }
    log.close()?;
    drop(log);
    Ok(Log::open(dir, engine_config())?)
}

/// Opens a new `commitlog` in `dir` and appends `buf` `count` times, then flushes.
pub fn fill_commitlog(dir: &Path, buf: &MessageBuf, count: u64) -> BenchResult<CommitLog> {
    let mut log = open_commitlog(dir)?;
    let mut buf = crate::data::copy_message_buf(buf)?;
    for _ in 0..count {
        log.append(&mut buf)?;
    }
    log.flush()?;
    Ok(log)
}

/// Reads the whole log with `read_into` into `buf`, [`READ_CHUNK_BYTES`] at a time;
/// returns the records (from the offsets) and the bytes read.
pub fn engine_scan_bytes(log: &Log, buf: &mut Vec<u8>) -> BenchResult<ScanTotals> {
    let start = log.log_start_offset();
    let end = log.log_end_offset();
    let mut at = start;
    let mut bytes = 0u64;
    while at < end {
        let next = log.read_into(at, READ_CHUNK_BYTES, ReadBound::LogEnd, buf)?;
        if next <= at {
            return Err(format!("read at {at} made no progress").into());
        }
        bytes += black_box(buf.len()) as u64;
        at = next;
    }
    Ok(ScanTotals {
        records: end.get() - start.get(),
        bytes,
    })
}

/// Reads the whole log like [`engine_scan_bytes`] and decodes every record, checking
/// each batch's CRC again when `verify_crc` (`read_into` checks it once already).
pub fn engine_scan_records(
    log: &Log,
    buf: &mut Vec<u8>,
    verify_crc: bool,
) -> BenchResult<ScanTotals> {
    let end = log.log_end_offset();
    let mut at = log.log_start_offset();
    let mut totals = ScanTotals::default();
    while at < end {
        let next = log.read_into(at, READ_CHUNK_BYTES, ReadBound::LogEnd, buf)?;
        if next <= at {
            return Err(format!("read at {at} made no progress").into());
        }
        let mut rest = buf.as_slice();
        while !rest.is_empty() {
            let (batch, tail) = BatchRef::parse(rest, verify_crc)?;
            for record in batch.records() {
                let record = record?;
                totals.records += 1;
                totals.bytes += black_box(record.value).len() as u64;
            }
            rest = tail;
        }
        at = next;
    }
    Ok(totals)
}

/// Reads the whole `commitlog` [`READ_CHUNK_BYTES`] at a time and visits every
/// message (its read checks each message's CRC-32C).
pub fn commitlog_scan_records(log: &CommitLog) -> BenchResult<ScanTotals> {
    let end = log.next_offset();
    let mut at = 0;
    let mut totals = ScanTotals::default();
    while at < end {
        let messages = log.read(at, ReadLimit::max_bytes(READ_CHUNK_BYTES))?;
        let mut next = at;
        for message in messages.iter() {
            totals.records += 1;
            totals.bytes += black_box(message.payload()).len() as u64;
            next = message.offset() + 1;
        }
        if next <= at {
            return Err(format!("commitlog read at {at} made no progress").into());
        }
        at = next;
    }
    Ok(totals)
}

/// The `.log` files of a log engine directory, in offset order.
pub fn segment_files(dir: &Path) -> BenchResult<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "log") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// The read ceiling: `pread`s the files whole into `buf`, [`READ_CHUNK_BYTES`] at a
/// time; returns the bytes read.
pub fn plain_files_scan(files: &[std::fs::File], buf: &mut [u8]) -> BenchResult<u64> {
    let mut total = 0u64;
    for file in files {
        let mut position = 0u64;
        loop {
            let n = file.read_at(buf, position)?;
            if n == 0 {
                break;
            }
            position += n as u64;
        }
        total += position;
    }
    Ok(total)
}

/// Reads the batch holding `offset` (index lookup, then one batch) into `buf`;
/// returns its size, after checking that it does hold `offset`.
pub fn engine_read_at(log: &Log, offset: Offset, buf: &mut Vec<u8>) -> BenchResult<usize> {
    log.read_into(offset, 1, ReadBound::LogEnd, buf)?;
    let (batch, _) = BatchRef::parse(buf, false)?;
    if batch.base_offset() > offset || batch.next_offset() <= offset {
        return Err(format!("the batch read for {offset} does not hold it").into());
    }
    Ok(buf.len())
}

/// Reads `max_bytes` of messages from `offset` of a `commitlog` (its index finds the
/// message, then one read); returns the number of messages.
pub fn commitlog_read_at(log: &CommitLog, offset: u64, max_bytes: usize) -> BenchResult<usize> {
    let messages = log.read(offset, ReadLimit::max_bytes(max_bytes))?;
    match messages.iter().next() {
        Some(first) if first.offset() == offset => Ok(messages.len()),
        _ => Err(format!("commitlog read at {offset} does not start there").into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{Shape, commitlog_batch, engine_batch};

    #[test]
    fn scans_see_every_record_of_both_logs() -> BenchResult<()> {
        let shape = Shape::new(100, 100);
        let (a, b) = (tempfile::tempdir()?, tempfile::tempdir()?);
        let engine = fill_engine(a.path(), &engine_batch(shape)?, 300)?;
        let other = fill_commitlog(b.path(), &commitlog_batch(shape)?, 300)?;
        let mut buf = Vec::new();
        let expected = ScanTotals {
            records: 30_000,
            bytes: 3_000_000,
        };
        assert_eq!(engine_scan_records(&engine, &mut buf, true)?, expected);
        assert_eq!(engine_scan_records(&engine, &mut buf, false)?, expected);
        assert_eq!(commitlog_scan_records(&other)?, expected);
        let scanned = engine_scan_bytes(&engine, &mut buf)?;
        assert_eq!(scanned.bytes, engine.size_bytes());
        let files: Vec<_> = segment_files(a.path())?
            .iter()
            .map(std::fs::File::open)
            .collect::<Result<_, _>>()?;
        let mut chunk = vec![0; READ_CHUNK_BYTES];
        assert_eq!(plain_files_scan(&files, &mut chunk)?, engine.size_bytes());
        assert!(engine_read_at(&engine, Offset(12_345), &mut buf)? > 10_000);
        assert_eq!(commitlog_read_at(&other, 12_345, 12_000)?, 100);
        Ok(())
    }
}
