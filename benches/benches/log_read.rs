//! Reads of a whole log and at random offsets, from the page cache.
//!
//! - `seq_read/{100B,1KiB}`: the whole log, 1 MiB per read. `read_into` with a reused
//!   buffer (bytes only; it checks every batch's CRC), the same plus decoding every
//!   record (`records+crc` checks each CRC a second time, as a caller that does not
//!   trust the read would), `commitlog` reading and visiting every message (it always
//!   checks CRCs), and `pread` of the segment files (the ceiling).
//! - `random_read/100B x100`: the batch holding a random offset (index lookup and one
//!   batch), against `commitlog` reading as many bytes from the same offset.
//!
//! `LOG_READ_RECORDS` sets the records per log (default 1 000 000 of 100 B; a fifth
//! as many of 1 KiB).
//!
//! `cargo bench -p benches --bench log_read [-- FILTER]`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Duration;

use benches::data::{Rng, Shape, commitlog_batch, engine_batch};
use benches::read::{
    READ_CHUNK_BYTES, commitlog_read_at, commitlog_scan_records, engine_read_at, engine_scan_bytes,
    engine_scan_records, fill_commitlog, fill_engine, plain_files_scan, segment_files,
};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use log_engine::Offset;

const BATCH_RECORDS: usize = 100;

fn records_100b() -> u64 {
    std::env::var("LOG_READ_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

fn sequential(c: &mut Criterion) {
    for (value_bytes, records) in [(100, records_100b()), (1024, records_100b() / 5)] {
        let shape = Shape::new(BATCH_RECORDS, value_bytes);
        let batches = records / BATCH_RECORDS as u64;
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let engine = fill_engine(a.path(), &engine_batch(shape).unwrap(), batches).unwrap();
        let other = fill_commitlog(b.path(), &commitlog_batch(shape).unwrap(), batches).unwrap();
        let files: Vec<_> = segment_files(a.path())
            .unwrap()
            .iter()
            .map(|p| std::fs::File::open(p).unwrap())
            .collect();
        let mut group = c.benchmark_group(format!("seq_read/{}", shape.size_label()));
        group
            .sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3))
            .throughput(Throughput::ElementsAndBytes {
                elements: batches * BATCH_RECORDS as u64,
                bytes: engine.size_bytes(),
            });
        let mut buf = Vec::with_capacity(2 * READ_CHUNK_BYTES);
        group.bench_function("log-engine read_into", |b| {
            b.iter(|| engine_scan_bytes(&engine, &mut buf).unwrap())
        });
        group.bench_function("log-engine records", |b| {
            b.iter(|| engine_scan_records(&engine, &mut buf, false).unwrap())
        });
        group.bench_function("log-engine records+crc", |b| {
            b.iter(|| engine_scan_records(&engine, &mut buf, true).unwrap())
        });
        group.bench_function("commitlog records", |b| {
            b.iter(|| commitlog_scan_records(&other).unwrap())
        });
        let mut chunk = vec![0u8; READ_CHUNK_BYTES];
        group.bench_function("plain-file pread", |b| {
            b.iter(|| plain_files_scan(&files, &mut chunk).unwrap())
        });
        group.finish();
    }
}

fn random(c: &mut Criterion) {
    let shape = Shape::new(BATCH_RECORDS, 100);
    let batches = records_100b() / BATCH_RECORDS as u64;
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let batch = engine_batch(shape).unwrap();
    let engine = fill_engine(a.path(), &batch, batches).unwrap();
    let other = fill_commitlog(b.path(), &commitlog_batch(shape).unwrap(), batches).unwrap();
    let end = engine.log_end_offset().get();
    let mut group = c.benchmark_group("random_read");
    group
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(1));
    let id = shape.to_string();
    let mut rng = Rng::new(7);
    let mut buf = Vec::new();
    group.bench_function(BenchmarkId::new("log-engine", &id), |b| {
        b.iter(|| engine_read_at(&engine, Offset(rng.below(end)), &mut buf).unwrap())
    });
    // The same bytes from the same offset: commitlog indexes every message, so it
    // starts at the offset itself rather than at its batch.
    let bytes = batch.len();
    group.bench_function(BenchmarkId::new("commitlog", &id), |b| {
        b.iter(|| black_box(commitlog_read_at(&other, rng.below(end), bytes).unwrap()))
    });
    group.finish();
}

criterion_group!(benches, sequential, random);
criterion_main!(benches);
