//! The recovery point (below it, recovery trusts the log as fsynced) reaches the
//! durable end within about a second of the last sync, even when appends stop after a
//! burst: a sync writes it at most once a second, and `checkpoint` (or
//! `flush_if_due`) writes one that this limit held back. So after a crash, damage in
//! fsynced records is reported as corruption instead of being cut as a torn tail.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::Path;
use std::sync::Arc;

use log_engine::{BatchRef, Error, Log, LogConfig, ManualClock, Offset, Record};

mod common;

type Result<T = (), E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

const BURST: u64 = 2500;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 16 * 1024,
        index_interval_bytes: 512,
        ..LogConfig::default()
    }
}

/// The offset in the `recovery-point` file (16 bytes: offset, CRC, version).
fn recovery_point(dir: &Path) -> Result<u64> {
    let bytes = std::fs::read(dir.join("recovery-point"))?;
    let offset: [u8; 8] = bytes.get(..8).ok_or("short file")?.try_into()?;
    Ok(u64::from_le_bytes(offset))
}

/// `BURST` durable appends of one record each, within one millisecond.
fn burst(log: &Log, first: u64) -> Result {
    for n in first..first + BURST {
        log.append_durable(&mut log_engine::RecordBatch::from_records(&[Record::new(
            format!("message-{n}"),
            n as i64,
        )])?)?;
    }
    Ok(())
}

#[test]
fn a_burst_of_syncs_then_silence_is_checkpointed_after_the_interval() -> Result {
    let dir = tempfile::tempdir()?;
    let clock = Arc::new(ManualClock::new(1_000_000));
    let log = Log::open_with_clock(dir.path(), config(), clock.clone())?;
    burst(&log, 0)?;
    assert_eq!(log.durable_offset(), Offset(BURST));
    assert_eq!(
        recovery_point(dir.path())?,
        0,
        "syncs within a second of the last write do not write it"
    );

    clock.advance(999);
    log.checkpoint()?;
    assert_eq!(recovery_point(dir.path())?, 0, "the rate limit holds");
    clock.advance(1);
    log.checkpoint()?;
    assert_eq!(
        recovery_point(dir.path())?,
        BURST,
        "written once the interval passed"
    );

    // A second burst: the hot path still writes at most once a second, and a timer
    // that calls `flush_if_due` catches up.
    clock.advance(5);
    burst(&log, BURST)?;
    assert_eq!(recovery_point(dir.path())?, BURST);
    clock.advance(1000);
    log.flush_if_due()?;
    assert_eq!(recovery_point(dir.path())?, 2 * BURST);

    // Nothing pending: nothing changes, whatever the time.
    clock.advance(10_000);
    log.checkpoint()?;
    assert_eq!(recovery_point(dir.path())?, 2 * BURST);

    // Records appended but not fsynced are not covered.
    log.append_records(&[Record::new("unsynced", 0)])?;
    clock.advance(10_000);
    log.checkpoint()?;
    assert_eq!(recovery_point(dir.path())?, 2 * BURST);
    Ok(())
}

/// After the checkpoint, a crash and a byte flipped in fsynced records of a sealed
/// segment: the open fails naming the file, instead of cutting the log there (and
/// dropping every later segment) as it would with a stale recovery point.
#[test]
fn damage_below_a_checkpointed_recovery_point_is_corruption_after_a_crash() -> Result {
    let dir = tempfile::tempdir()?;
    let clock = Arc::new(ManualClock::new(1_000_000));
    let log = Log::open_with_clock(dir.path(), config(), clock.clone())?;
    burst(&log, 0)?;
    clock.advance(1000);
    log.checkpoint()?;
    assert_eq!(recovery_point(dir.path())?, BURST);
    drop(log); // no close: the next open recovers from the recovery point

    let segments = common::segment_files(dir.path());
    assert!(segments.len() >= 3, "{segments:?}");
    // The last batch of the first segment: recovery scans a sealed segment from its
    // last index entry below the recovery point.
    let sealed = &segments[0];
    let bytes = std::fs::read(sealed)?;
    let mut rest = bytes.as_slice();
    let mut last = 0;
    while !rest.is_empty() {
        let (batch, tail) = BatchRef::parse(rest, true)?;
        if !tail.is_empty() {
            last += batch.as_bytes().len();
        }
        rest = tail;
    }
    let mut damaged = bytes.clone();
    damaged[bytes.len() - 2] ^= 1;
    std::fs::write(sealed, &damaged)?;

    match Log::open(dir.path(), config()) {
        Err(Error::Corrupt { path, position, .. }) => {
            assert_eq!(&path, sealed);
            assert_eq!(position, last as u64);
        }
        Err(other) => panic!("expected corruption in {}, got {other}", sealed.display()),
        Ok(log) => panic!(
            "damage in fsynced records was cut as a torn tail: the log ends at {}",
            log.log_end_offset()
        ),
    }
    Ok(())
}
