//! Reopening a log after a kill (no clean shutdown): the time is the recovery of what
//! was not yet flushed, plus a constant. Writes a 1 GiB log (`REOPEN_BYTES` to
//! change), flushes it, optionally appends an unflushed tail, drops the log without
//! closing it (as a kill would leave it, the page cache aside) and times `Log::open`,
//! printing the rate at which recovery checked the unflushed part.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use log_engine::{Log, LogConfig, RecordBatchBuilder};

fn batch() -> log_engine::RecordBatch {
    let mut builder = RecordBatchBuilder::with_capacity(1 << 20);
    let value = vec![b'x'; 1024];
    for _ in 0..1000 {
        builder.push(None, &value, 1_700_000_000_000).unwrap();
    }
    builder.finish().unwrap()
}

fn reopen(total_bytes: u64, unflushed_bytes: u64) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let mut batch = batch();
    {
        let log = Log::open(dir.path(), LogConfig::default()).unwrap();
        while log.size_bytes() < total_bytes - unflushed_bytes {
            log.append(&mut batch).unwrap();
        }
        log.flush().unwrap();
        let flushed = log.size_bytes();
        while log.size_bytes() < flushed + unflushed_bytes {
            log.append(&mut batch).unwrap();
        }
        // Dropped without `close()`: no clean-shutdown marker, as after a kill.
    }
    let started = Instant::now();
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    let open_s = started.elapsed().as_secs_f64();
    assert!(log.size_bytes() >= total_bytes);
    open_s
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let total: u64 = std::env::var("REOPEN_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1 << 30);
    for unflushed in [0u64, 64 << 20, 256 << 20] {
        let open_s = reopen(total, unflushed);
        let rate = if unflushed == 0 {
            String::new()
        } else {
            format!(
                ", unflushed part checked at {:.2} GB/s",
                unflushed as f64 / open_s / 1e9
            )
        };
        println!(
            "reopen after kill: {} MiB log, {} MiB unflushed: {:.3} s (target < 1 s plus the scan of the unflushed part{rate})",
            total >> 20,
            unflushed >> 20,
            open_s,
        );
    }
}
