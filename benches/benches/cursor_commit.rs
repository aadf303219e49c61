//! Cursor commits, one `CursorStore::commit` per iteration (one journal record, no
//! fsync), for one cursor and for a thousand taking turns, against a plain-file
//! `write_all` of as many bytes as a journal record. Each sample uses a new store, so
//! journal compactions count at the rate a long run would see them.
//!
//! `cargo bench -p benches --bench cursor_commit`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use benches::append::plain_file_appends;
use benches::cursors::{cursor_commits, cursor_names, journal_record_bytes};
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};

fn commits(c: &mut Criterion) {
    let mut group = c.benchmark_group("cursor_commit");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(1));
    for cursors in [1, 1000] {
        let names = cursor_names(cursors);
        group.bench_function(format!("{cursors} cursors"), |b| {
            b.iter_custom(|iters| cursor_commits(&names, iters).unwrap())
        });
    }
    let record = vec![7u8; journal_record_bytes(&cursor_names(1)[0])];
    group.bench_function("plain-file write", |b| {
        b.iter_custom(|iters| plain_file_appends(&record, iters).unwrap())
    });
    group.finish();
}

criterion_group!(benches, commits);
criterion_main!(benches);
