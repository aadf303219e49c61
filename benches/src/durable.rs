//! Durable appends from many threads at once: the log engine's group commit against
//! `commitlog` behind a mutex with an `fdatasync` after every append.

use std::sync::{Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use commitlog::message::MessageBuf;
use log_engine::{Log, RecordBatch};

use crate::BenchResult;
use crate::baseline::DurableCommitLog;
use crate::data::copy_message_buf;

/// How many threads append and how much each one appends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DurableRun {
    /// Appending threads.
    pub threads: usize,
    /// Batches each thread appends, one after the other.
    pub batches_per_thread: u64,
}

impl DurableRun {
    /// The batches appended by all threads together.
    pub fn batches(&self) -> u64 {
        self.threads as u64 * self.batches_per_thread
    }
}

/// The time `run.threads` threads take to each append `batch` with
/// `Log::append_durable`, `run.batches_per_thread` times, to `log`. The clock starts
/// when every thread is ready and stops when the last one is done.
pub fn engine_durable(log: &Log, batch: &RecordBatch, run: DurableRun) -> BenchResult<Duration> {
    let start_line = Barrier::new(run.threads + 1);
    thread::scope(|scope| {
        let workers: Vec<_> = (0..run.threads)
            .map(|_| {
                let mut batch = batch.clone();
                let start_line = &start_line;
                scope.spawn(move || -> BenchResult<()> {
                    start_line.wait();
                    for _ in 0..run.batches_per_thread {
                        log.append_durable(&mut batch)?;
                    }
                    Ok(())
                })
            })
            .collect();
        start_line.wait();
        let start = Instant::now();
        join_all(workers)?;
        Ok(start.elapsed())
    })
}

/// The same run against `commitlog`: each thread locks the log, appends `buf` and
/// syncs the segment before it unlocks (the crate has no group commit).
pub fn commitlog_durable(
    log: &Mutex<DurableCommitLog>,
    buf: &MessageBuf,
    run: DurableRun,
) -> BenchResult<Duration> {
    let start_line = Barrier::new(run.threads + 1);
    let bufs = (0..run.threads)
        .map(|_| copy_message_buf(buf))
        .collect::<BenchResult<Vec<_>>>()?;
    thread::scope(|scope| {
        let workers: Vec<_> = bufs
            .into_iter()
            .map(|mut buf| {
                let start_line = &start_line;
                scope.spawn(move || -> BenchResult<()> {
                    start_line.wait();
                    for _ in 0..run.batches_per_thread {
                        let mut log = log.lock().map_err(|_| "a durable appender panicked")?;
                        log.append_durable(&mut buf)?;
                    }
                    Ok(())
                })
            })
            .collect();
        start_line.wait();
        let start = Instant::now();
        join_all(workers)?;
        Ok(start.elapsed())
    })
}

fn join_all(workers: Vec<thread::ScopedJoinHandle<'_, BenchResult<()>>>) -> BenchResult<()> {
    for worker in workers {
        worker
            .join()
            .map_err(|_| "an appending thread panicked")??;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baseline::engine_config;
    use crate::data::{Shape, commitlog_batch, engine_batch};

    #[test]
    fn every_thread_appends_its_batches() -> BenchResult<()> {
        let shape = Shape::new(10, 100);
        let run = DurableRun {
            threads: 3,
            batches_per_thread: 4,
        };
        let dir = tempfile::tempdir()?;
        let log = Log::open(dir.path(), engine_config())?;
        engine_durable(&log, &engine_batch(shape)?, run)?;
        assert_eq!(log.durable_offset().get(), 120);

        let other = tempfile::tempdir()?;
        let baseline = Mutex::new(DurableCommitLog::open(other.path())?);
        commitlog_durable(&baseline, &commitlog_batch(shape)?, run)?;
        let end = baseline.lock().map_err(|_| "poisoned")?.next_offset();
        assert_eq!(end, 120);
        Ok(())
    }
}
