//! Timed append loops. Each call appends into a fresh temporary directory that is
//! removed afterwards, so a long benchmark never fills the disk; only the appends
//! are timed, not opening, closing or deleting.

use std::hint::black_box;
use std::time::{Duration, Instant};

use commitlog::message::MessageBuf;
use log_engine::{Log, RecordBatch};

use crate::BenchResult;
use crate::baseline::{PlainFile, engine_config, open_commitlog};
use crate::data::copy_message_buf;

/// The time the log engine takes to append `batch` `count` times (`Log::append`, no
/// fsync) to a new log.
pub fn engine_appends(batch: &RecordBatch, count: u64) -> BenchResult<Duration> {
    let dir = tempfile::tempdir()?;
    let log = Log::open(dir.path(), engine_config())?;
    let mut batch = batch.clone();
    let start = Instant::now();
    for _ in 0..count {
        black_box(log.append(&mut batch)?);
    }
    let elapsed = start.elapsed();
    check_end(
        log.log_end_offset().get(),
        count * u64::from(batch.record_count()),
    )?;
    Ok(elapsed)
}

/// The time the `commitlog` crate takes to append `buf` `count` times to a new log.
pub fn commitlog_appends(buf: &MessageBuf, count: u64) -> BenchResult<Duration> {
    let dir = tempfile::tempdir()?;
    let mut log = open_commitlog(dir.path())?;
    let mut buf = copy_message_buf(buf)?;
    let records = commitlog::message::MessageSet::len(&buf) as u64;
    let start = Instant::now();
    for _ in 0..count {
        black_box(log.append(&mut buf)?);
    }
    let elapsed = start.elapsed();
    check_end(log.next_offset(), count * records)?;
    Ok(elapsed)
}

/// The time `write_all` takes to write `bytes` `count` times to a new plain file.
pub fn plain_file_appends(bytes: &[u8], count: u64) -> BenchResult<Duration> {
    let dir = tempfile::tempdir()?;
    let mut file = PlainFile::create(&dir.path().join("plain"))?;
    let start = Instant::now();
    for _ in 0..count {
        file.append(bytes)?;
    }
    Ok(start.elapsed())
}

/// Checks that a log ends where the appends should have left it.
fn check_end(end: u64, expected: u64) -> BenchResult<()> {
    if end == expected {
        Ok(())
    } else {
        Err(format!("the log ends at {end} after appending {expected} records").into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{Shape, commitlog_batch, engine_batch};

    #[test]
    fn every_loop_appends_what_it_is_asked_to() -> BenchResult<()> {
        let shape = Shape::new(100, 100);
        engine_appends(&engine_batch(shape)?, 10)?;
        commitlog_appends(&commitlog_batch(shape)?, 10)?;
        plain_file_appends(engine_batch(shape)?.as_bytes(), 10)?;
        Ok(())
    }
}
