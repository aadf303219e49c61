//! Appends of 100 B and 1 KiB records in batches of 1, 100 and 1000: the log engine
//! against a plain file (`write_all` of the same batch bytes, the disk ceiling) and
//! the `commitlog` crate (the same records), all in the same run.
//!
//! Each sample appends into a fresh directory that is deleted afterwards, so the disk
//! never fills; flat sampling keeps every sample the same size (a few hundred MB at
//! most, enough to roll 256 MiB segments on the large batches).
//!
//! `cargo bench -p benches --bench log_append [-- FILTER]`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use benches::append::{commitlog_appends, engine_appends, plain_file_appends};
use benches::data::{Shape, commitlog_batch, engine_batch};
use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};

fn append(c: &mut Criterion) {
    for value_bytes in [100, 1024] {
        let size = Shape::new(1, value_bytes).size_label();
        let mut group = c.benchmark_group(format!("append/{size}"));
        group
            .sampling_mode(SamplingMode::Flat)
            .sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3));
        for records in [1, 100, 1000] {
            let shape = Shape::new(records, value_bytes);
            let batch = engine_batch(shape).unwrap();
            let buf = commitlog_batch(shape).unwrap();
            let id = format!("x{records}");
            group.throughput(Throughput::ElementsAndBytes {
                elements: records as u64,
                bytes: batch.len() as u64,
            });
            group.bench_function(BenchmarkId::new("log-engine", &id), |b| {
                b.iter_custom(|iters| engine_appends(&batch, iters).unwrap())
            });
            group.bench_function(BenchmarkId::new("commitlog", &id), |b| {
                b.iter_custom(|iters| commitlog_appends(&buf, iters).unwrap())
            });
            group.bench_function(BenchmarkId::new("plain-file", &id), |b| {
                b.iter_custom(|iters| plain_file_appends(batch.as_bytes(), iters).unwrap())
            });
        }
        group.finish();
    }
}

criterion_group!(benches, append);
criterion_main!(benches);
