//! Entry points shared by the cargo-fuzz targets in `fuzz/` and by the tests that
//! replay their corpus on stable Rust. Not part of the supported API.

use crate::batch::{BatchRef, RecordBatch};
use crate::config::LogConfig;
use crate::log::{Log, ReadBound};
use crate::offset::Offset;

/// Decodes arbitrary bytes as a batch and walks every record; must never panic.
pub fn decode_batch(data: &[u8]) {
    if let Ok(batch) = RecordBatch::from_bytes(data.to_vec()) {
        let view = batch.as_ref();
        for record in view.records() {
            assert!(record.is_ok(), "a checked batch decodes");
        }
    }
    if let Ok((batch, _)) = BatchRef::parse(data, false) {
        for record in batch.records().flatten() {
            let _ = record.headers().count();
        }
    }
}

/// Lays the fuzzer's bytes out as a log directory (a segment file, and an index and
/// time index cut from the same bytes), opens it, and reads it to the end. Opening
/// may fail, but must not panic, and whatever opens must read back cleanly.
pub fn open_log_dir(data: &[u8]) {
    let Ok(dir) = tempfile_dir() else { return };
    let split = data.first().map_or(0, |b| usize::from(*b)).min(data.len());
    let (index, log) = data.split_at(split);
    let base = "00000000000000000000";
    let written = std::fs::write(dir.join(format!("{base}.log")), log).is_ok()
        && std::fs::write(dir.join(format!("{base}.index")), index).is_ok()
        && std::fs::write(dir.join(format!("{base}.timeindex")), index).is_ok();
    if written {
        let config = LogConfig {
            index_bytes_max: 4096,
            ..LogConfig::default()
        };
        if let Ok(log) = Log::open(&dir, config) {
            let mut from = log.log_start_offset();
            let end = log.log_end_offset();
            while from < end {
                match log.read(from, 4096, ReadBound::LogEnd) {
                    Ok(read) if read.next_offset() > from => from = read.next_offset(),
                    other => panic!("a recovered log reads to its end: {other:?} at {from}"),
                }
            }
            let _ = log.offset_for_timestamp(0);
            let _ = log.append_records(&[crate::record::Record::new("x", 0)]);
            let _ = log.truncate_to(Offset(end.0 / 2));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("log-engine-fuzz-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
