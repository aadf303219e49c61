//! Durable appends from 8 threads, batches of 100 records of 100 B: the log engine's
//! `append_durable` (one fsync shared by every appender waiting at the same time)
//! against the `commitlog` crate behind a mutex with an `fdatasync` of its active
//! segment after every append. One iteration is one batch from each thread.
//!
//! `cargo bench -p benches --bench durable_append`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Mutex;
use std::time::Duration;

use benches::baseline::{DurableCommitLog, engine_config};
use benches::data::{Shape, commitlog_batch, engine_batch};
use benches::durable::{DurableRun, commitlog_durable, engine_durable};
use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use log_engine::Log;

const THREADS: usize = 8;

fn durable(c: &mut Criterion) {
    let shape = Shape::new(100, 100);
    let batch = engine_batch(shape).unwrap();
    let buf = commitlog_batch(shape).unwrap();
    let mut group = c.benchmark_group(format!("durable/{THREADS} threads"));
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::ElementsAndBytes {
            elements: (THREADS * shape.records) as u64,
            bytes: (THREADS * batch.len()) as u64,
        });
    let id = shape.to_string();
    group.bench_function(BenchmarkId::new("log-engine", &id), |b| {
        b.iter_custom(|iters| {
            let dir = tempfile::tempdir().unwrap();
            let log = Log::open(dir.path(), engine_config()).unwrap();
            engine_durable(&log, &batch, run(iters)).unwrap()
        })
    });
    group.bench_function(BenchmarkId::new("commitlog+fdatasync", &id), |b| {
        b.iter_custom(|iters| {
            let dir = tempfile::tempdir().unwrap();
            let log = Mutex::new(DurableCommitLog::open(dir.path()).unwrap());
            commitlog_durable(&log, &buf, run(iters)).unwrap()
        })
    });
    group.finish();
}

fn run(iters: u64) -> DurableRun {
    DurableRun {
        threads: THREADS,
        batches_per_thread: iters,
    }
}

criterion_group!(benches, durable);
criterion_main!(benches);
