//! Prints each result as a ratio to its baselines, all measured in this one run (the
//! machine is shared and noisy, so only numbers from the same run compare). Plain
//! timing loops with `Instant`; every figure is the median of several repetitions,
//! the systems taking turns so that a noisy moment hits them alike.
//!
//! `cargo bench -p benches --bench ratios`; `BENCH_SCALE=0.2` (or `4`) scales every
//! amount of work. At the default scale it takes well under a minute.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Mutex;
use std::time::Instant;

use benches::BenchResult;
use benches::append::{commitlog_appends, engine_appends, plain_file_appends};
use benches::baseline::{DurableCommitLog, engine_config};
use benches::cursors::{cursor_commits, cursor_names, journal_record_bytes};
use benches::data::{Rng, Shape, commitlog_batch, engine_batch};
use benches::durable::{DurableRun, commitlog_durable, engine_durable};
use benches::read::{
    READ_CHUNK_BYTES, ScanTotals, commitlog_read_at, commitlog_scan_records, engine_read_at,
    engine_scan_bytes, engine_scan_records, fill_commitlog, fill_engine, plain_files_scan,
    segment_files,
};
use benches::stats::{median, percentile_sorted, rate};
use commitlog::CommitLog;
use log_engine::{Log, Offset};

/// Repetitions of each throughput measurement; the median is reported.
const REPS: usize = 5;
/// Appends per repetition at most (small batches are bound by calls, not bytes).
const APPEND_OPS: f64 = 50_000.0;
/// Bytes per append repetition at most: more than one 256 MiB segment, so the large
/// batches roll a segment in every repetition.
const APPEND_BYTES: f64 = 300.0 * 1024.0 * 1024.0;
/// Durable appends: threads, and batches each thread appends.
const DURABLE_THREADS: usize = 8;
const DURABLE_BATCHES_PER_THREAD: f64 = 250.0;
/// Records in the 100 B log that the reads use; the 1 KiB log holds a fifth as many.
const READ_RECORDS: f64 = 1_000_000.0;
/// Reads at random offsets, each timed alone.
const RANDOM_READS: f64 = 20_000.0;
/// Cursor commits per repetition.
const CURSOR_COMMITS: f64 = 50_000.0;

fn main() -> BenchResult<()> {
    let scale = std::env::var("BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .unwrap_or(1.0);
    println!("ratios, scale {scale} (BENCH_SCALE), medians of {REPS} runs unless said");
    let mut sections = Vec::new();
    let (t, ()) = timed(|| append(scale))?;
    sections.push(format!("append {t:.1} s"));
    let (t, ()) = timed(|| durable(scale))?;
    sections.push(format!("durable {t:.1} s"));
    let (t, ()) = timed(|| reads(scale))?;
    sections.push(format!("reads {t:.1} s"));
    let (t, ()) = timed(|| cursors(scale))?;
    sections.push(format!("cursors {t:.1} s"));
    println!("took: {}", sections.join(", "));
    Ok(())
}

fn scaled(amount: f64, scale: f64) -> u64 {
    ((amount * scale) as u64).max(1)
}

/// `ratio 1.15 (target >= 2.0, MISSED)`.
fn verdict(ratio: f64, target: &str, met: bool) -> String {
    format!("ratio {ratio:.2} (target {target}, {})", word(met))
}

fn word(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

fn append(scale: f64) -> BenchResult<()> {
    for shape in Shape::APPEND {
        let batch = engine_batch(shape)?;
        let buf = commitlog_batch(shape)?;
        let count = scaled(APPEND_OPS, scale).min(scaled(APPEND_BYTES / batch.len() as f64, scale));
        let (mut engine, mut other, mut plain) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..REPS {
            engine.push(engine_appends(&batch, count)?.as_secs_f64());
            other.push(commitlog_appends(&buf, count)?.as_secs_f64());
            plain.push(plain_file_appends(batch.as_bytes(), count)?.as_secs_f64());
        }
        let records = (count * shape.records as u64) as f64;
        let bytes = (count * batch.len() as u64) as f64;
        let (engine, other, plain) = (median(&mut engine), median(&mut other), median(&mut plain));
        let ratio = other / engine;
        println!(
            "append {shape} ({count} appends, {:.0} MB a run): log-engine {}, commitlog {}, {}",
            bytes / 1e6,
            rate(records / engine, "rec/s"),
            rate(records / other, "rec/s"),
            verdict(ratio, ">= 2.0", ratio >= 2.0),
        );
        let ratio = plain / engine;
        println!(
            "append {shape}: {} vs plain file {}, {}",
            rate(bytes / engine, "B/s"),
            rate(bytes / plain, "B/s"),
            verdict(ratio, ">= 0.8", ratio >= 0.8),
        );
    }
    within_one_segment(scale)
}

/// 1 KiB x1000 again, but only 200 MB a run: no segment rolls, which shows what a
/// roll (it fsyncs the full segment it closes) costs the runs above.
fn within_one_segment(scale: f64) -> BenchResult<()> {
    let shape = Shape::new(1000, 1024);
    let batch = engine_batch(shape)?;
    let count = scaled(200e6 / batch.len() as f64, scale);
    let (mut engine, mut plain) = (Vec::new(), Vec::new());
    for _ in 0..REPS {
        engine.push(engine_appends(&batch, count)?.as_secs_f64());
        plain.push(plain_file_appends(batch.as_bytes(), count)?.as_secs_f64());
    }
    let bytes = (count * batch.len() as u64) as f64;
    let (engine, plain) = (median(&mut engine), median(&mut plain));
    let ratio = plain / engine;
    println!(
        "append {shape} within one segment (no roll, {:.0} MB a run): {} vs plain file {}, {}",
        bytes / 1e6,
        rate(bytes / engine, "B/s"),
        rate(bytes / plain, "B/s"),
        verdict(ratio, ">= 0.8", ratio >= 0.8),
    );
    Ok(())
}

fn durable(scale: f64) -> BenchResult<()> {
    let shape = Shape::new(100, 100);
    let batch = engine_batch(shape)?;
    let buf = commitlog_batch(shape)?;
    let run = DurableRun {
        threads: DURABLE_THREADS,
        batches_per_thread: scaled(DURABLE_BATCHES_PER_THREAD, scale),
    };
    let (mut engine, mut other) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let dir = tempfile::tempdir()?;
        let log = Log::open(dir.path(), engine_config())?;
        engine.push(engine_durable(&log, &batch, run)?.as_secs_f64());
        let dir = tempfile::tempdir()?;
        let log = Mutex::new(DurableCommitLog::open(dir.path())?);
        other.push(commitlog_durable(&log, &buf, run)?.as_secs_f64());
    }
    let records = (run.batches() * shape.records as u64) as f64;
    let (engine, other) = (median(&mut engine), median(&mut other));
    let ratio = other / engine;
    println!(
        "durable {} threads {shape} (median of 3): log-engine {}, commitlog+fdatasync {}, {}",
        run.threads,
        rate(records / engine, "rec/s"),
        rate(records / other, "rec/s"),
        verdict(ratio, ">= 4", ratio >= 4.0),
    );
    Ok(())
}

fn reads(scale: f64) -> BenchResult<()> {
    let records = scaled(READ_RECORDS, scale).max(100);
    for (value_bytes, records) in [(100, records), (1024, (records / 5).max(100))] {
        let shape = Shape::new(100, value_bytes);
        let batches = records / shape.records as u64;
        let (a, b) = (tempfile::tempdir()?, tempfile::tempdir()?);
        let engine = fill_engine(a.path(), &engine_batch(shape)?, batches)?;
        let other = fill_commitlog(b.path(), &commitlog_batch(shape)?, batches)?;
        sequential(shape, &engine, &other, a.path())?;
        if value_bytes == 100 {
            random(scale, shape, &engine, &other)?;
        }
    }
    Ok(())
}

fn sequential(
    shape: Shape,
    engine: &Log,
    other: &CommitLog,
    dir: &std::path::Path,
) -> BenchResult<()> {
    let files: Vec<_> = segment_files(dir)?
        .iter()
        .map(std::fs::File::open)
        .collect::<Result<_, _>>()?;
    let mut buf = Vec::with_capacity(2 * READ_CHUNK_BYTES);
    let mut chunk = vec![0u8; READ_CHUNK_BYTES];
    let mut times: [Vec<f64>; 5] = Default::default();
    let mut scans = [ScanTotals::default(); 4];
    for _ in 0..REPS {
        let [bytes, records, crc, baseline, plain] = &mut times;
        let (t, scan) = timed(|| engine_scan_bytes(engine, &mut buf))?;
        bytes.push(t);
        scans[0] = scan;
        let (t, scan) = timed(|| engine_scan_records(engine, &mut buf, false))?;
        records.push(t);
        scans[1] = scan;
        let (t, scan) = timed(|| engine_scan_records(engine, &mut buf, true))?;
        crc.push(t);
        scans[2] = scan;
        let (t, scan) = timed(|| commitlog_scan_records(other))?;
        baseline.push(t);
        scans[3] = scan;
        let (t, read) = timed(|| plain_files_scan(&files, &mut chunk))?;
        black_box(read);
        plain.push(t);
    }
    if scans[1] != scans[3] || scans[1] != scans[2] || scans[0].records != scans[1].records {
        return Err(format!("the scans disagree: {scans:?}").into());
    }
    let [bytes, records, crc, baseline, plain] = times.map(|mut t| median(&mut t));
    let size = engine.size_bytes() as f64;
    let count = scans[1].records as f64;
    let label = shape.size_label();
    let met = size / bytes >= 4e9;
    println!(
        "sequential read {label} ({} records, {:.0} MB): read_into {} (target >= 4 GB/s, {}), \
         plain-file pread {}",
        scans[1].records,
        size / 1e6,
        rate(size / bytes, "B/s"),
        word(met),
        rate(size / plain, "B/s"),
    );
    let ratio = baseline / records;
    println!(
        "sequential read {label}: log-engine {} (with CRC {}), commitlog (always CRC) {}, {}; \
         with CRC ratio {:.2}",
        rate(count / records, "rec/s"),
        rate(count / crc, "rec/s"),
        rate(count / baseline, "rec/s"),
        verdict(ratio, ">= 1.5", ratio >= 1.5),
        baseline / crc,
    );
    Ok(())
}

/// The seconds `f` takes, and what it returned.
fn timed<T>(f: impl FnOnce() -> BenchResult<T>) -> BenchResult<(f64, T)> {
    let start = Instant::now();
    let out = f()?;
    Ok((start.elapsed().as_secs_f64(), out))
}

fn random(scale: f64, shape: Shape, engine: &Log, other: &CommitLog) -> BenchResult<()> {
    let end = engine.log_end_offset().get();
    let reads = scaled(RANDOM_READS, scale);
    let bytes = engine_batch(shape)?.len();
    let mut buf = Vec::new();
    let mut engine_us = Vec::new();
    let mut other_us = Vec::new();
    let mut rng = Rng::new(42);
    for i in 0..reads + reads / 10 {
        let offset = rng.below(end);
        let (a, _) = timed(|| engine_read_at(engine, Offset(offset), &mut buf))?;
        let (b, _) = timed(|| commitlog_read_at(other, offset, bytes))?;
        // The first tenth warms the caches and the branch predictors; not counted.
        if i >= reads / 10 {
            engine_us.push(a * 1e6);
            other_us.push(b * 1e6);
        }
    }
    engine_us.sort_by(f64::total_cmp);
    other_us.sort_by(f64::total_cmp);
    let engine_median = percentile_sorted(&engine_us, 50.0);
    println!(
        "random read {shape} ({end} records, {reads} reads): log-engine median {:.2} us, \
         p99 {:.2} us (target < 5 us, {}); commitlog (same bytes from the offset) \
         median {:.2} us, p99 {:.2} us",
        engine_median,
        percentile_sorted(&engine_us, 99.0),
        word(engine_median < 5.0),
        percentile_sorted(&other_us, 50.0),
        percentile_sorted(&other_us, 99.0),
    );
    Ok(())
}

fn cursors(scale: f64) -> BenchResult<()> {
    let count = scaled(CURSOR_COMMITS, scale);
    let record = vec![7u8; journal_record_bytes(&cursor_names(1)[0])];
    let (one, many) = (cursor_names(1), cursor_names(1000));
    let mut times: [Vec<f64>; 3] = Default::default();
    for _ in 0..REPS {
        let [a, b, plain] = &mut times;
        a.push(cursor_commits(&one, count)?.as_secs_f64());
        b.push(cursor_commits(&many, count)?.as_secs_f64());
        plain.push(plain_file_appends(&record, count)?.as_secs_f64());
    }
    let [one, many, plain] = times.map(|mut t| median(&mut t) * 1e6 / count as f64);
    println!(
        "cursor commit ({count} commits): 1 cursor {one:.2} us/op ({}), 1000 cursors \
         {many:.2} us/op, plain-file write of {} B {plain:.2} us/op, ratio {:.2} (no target)",
        rate(1e6 / one, "commits/s"),
        record.len(),
        plain / one,
    );
    Ok(())
}
