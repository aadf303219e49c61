//! Opening a log directory: finding the segments, checking that they meet, and
//! recovering the active one after an unclean shutdown.
//!
//! The rules:
//! - The recovery point says below which offset everything was fsynced. Each segment
//!   is checked from its last index entry at or below it (or from its start): every
//!   batch's header, length, CRC and offset.
//! - Damage in records below the recovery point, or a gap or overlap between two
//!   segments, is lost data in the middle of the log: open fails with an error naming
//!   the file and the position, and nothing is changed.
//! - Damage above it is a torn tail (the process died before those bytes were
//!   synced, and a roll does not sync): the file is cut at the first bad byte, later
//!   segments are removed, and the indexes are rebuilt for everything scanned.
//! - Zeros after the last batch, and nothing else, are room the writer wrote
//!   ahead of its batches: the active segment keeps it for its next appends (a
//!   seal cuts it), a sealed segment is cut there.
//! - A clean-shutdown marker makes the recovery point the log end: only the bytes
//!   after the last index entry are checked.

use std::path::Path;
use std::sync::Arc;

use crate::config::LogConfig;
use crate::error::{Error, Result};
use crate::log::list_segment_bases;
use crate::offset::Offset;
use crate::segment::{self, Segment};

/// Opens and checks every segment of `dir`, creating the first one in an empty
/// directory. `trusted_below`: records below it are known to be fsynced.
pub(crate) fn open_segments(
    dir: &Path,
    config: &LogConfig,
    trusted_below: Offset,
) -> Result<Vec<Arc<Segment>>> {
    remove_orphan_indexes(dir)?;
    let bases = list_segment_bases(dir)?;
    let index_bytes = u64::from(config.index_bytes_max);
    if bases.is_empty() {
        let segment = Segment::open(dir, Offset::ZERO, index_bytes, true)?;
        return Ok(vec![Arc::new(segment)]);
    }
    let last = bases.len() - 1;
    let mut segments: Vec<Arc<Segment>> = Vec::with_capacity(bases.len());
    for (i, &base) in bases.iter().enumerate() {
        let mut segment = Segment::open(dir, base, index_bytes, i == last)?;
        let mut ends_log = i == last;
        if i == last {
            recover_active(&segment, trusted_below, config)?;
        } else if let Some(valid_size) = check_sealed(&segment, trusted_below, config)? {
            // The tail was not synced when the process died: cut it here, drop the
            // segments after it (they hold only later, unsynced records), and go on
            // with this one as the active segment.
            tracing::warn!(
                file = %segment.path().display(),
                position = valid_size,
                "truncating an unsynced torn tail that spans segments"
            );
            segment.truncate_file(valid_size)?;
            drop(segment);
            for later in bases.iter().skip(i + 1) {
                delete_segment_files(dir, *later)?;
            }
            segment = Segment::open(dir, base, index_bytes, true)?;
            recover_active(&segment, trusted_below, config)?;
            ends_log = true;
        }
        if let Some(previous) = segments.last()
            && previous.next_offset() != segment.base()
        {
            return Err(Error::SegmentDiscontinuity {
                path: previous.path().to_path_buf(),
                end: previous.next_offset(),
                next_base: segment.base(),
            });
        }
        segments.push(Arc::new(segment));
        if ends_log {
            break;
        }
    }
    Ok(segments)
}

fn delete_segment_files(dir: &Path, base: Offset) -> Result<()> {
    use crate::error::IoContext;
    for extension in ["log", "index", "timeindex"] {
        let path = dir.join(segment::file_name(base, extension));
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).at(&path),
        }
    }
    Ok(())
}

fn recover_active(segment: &Segment, trusted_below: Offset, config: &LogConfig) -> Result<()> {
    let (start, start_offset) = segment.recovery_start(trusted_below);
    let outcome = segment.recover_from(start, start_offset, config.index_interval_bytes)?;
    if let Some(reason) = outcome.damage {
        tracing::warn!(
            file = %segment.path().display(),
            position = outcome.valid_size,
            %reason,
            "truncating the damaged tail of the active segment"
        );
        segment.truncate_file(outcome.valid_size)?;
    }
    // A zero tail stays: the next appends write into it, and cutting it would cost
    // the open's sync a journal commit per log.
    //
    // The indexes are not synced here (an msync is an fsync): they are hints that the
    // next recovery checks again, so opening an idle log writes nothing.
    Ok(())
}

/// Checks a sealed segment from its last index entry below `trusted_below`. Damage
/// in records that were fsynced is corruption: an error. Damage after them is a torn
/// tail: returns where the valid part ends.
fn check_sealed(
    segment: &Segment,
    trusted_below: Offset,
    config: &LogConfig,
) -> Result<Option<u64>> {
    let (start, start_offset) = segment.recovery_start(trusted_below);
    let outcome = segment.recover_from(start, start_offset, config.index_interval_bytes)?;
    match outcome.damage {
        None if outcome.zero_tail => {
            cut_zero_tail(segment, outcome.valid_size)?;
            Ok(None)
        }
        None => Ok(None),
        Some(_) if segment.next_offset() >= trusted_below => Ok(Some(outcome.valid_size)),
        Some(reason) => Err(Error::Corrupt {
            path: segment.path().to_path_buf(),
            position: outcome.valid_size,
            reason: format!("{reason} (in a sealed segment: data after it would be lost)"),
        }),
    }
}

/// Cuts the zeros an append wrote ahead of the batches of a segment that a roll
/// sealed without cutting them. Not synced: a cut lost in a crash is made again by
/// the next recovery.
fn cut_zero_tail(segment: &Segment, valid_size: u64) -> Result<()> {
    tracing::debug!(
        file = %segment.path().display(),
        position = valid_size,
        "cutting the room written ahead of the last batch"
    );
    segment.cut_file(valid_size)
}

/// Deletes index files whose `.log` is gone (a crash in the middle of deleting a
/// segment leaves them).
fn remove_orphan_indexes(dir: &Path) -> Result<()> {
    use crate::error::IoContext;
    for entry in std::fs::read_dir(dir).at(dir)? {
        let path = entry.at(dir)?.path();
        let is_index = path
            .extension()
            .is_some_and(|e| e == "index" || e == "timeindex");
        let stem_is_base = path
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| segment::parse_log_name(&format!("{s}.log")))
            .is_some();
        if is_index && stem_is_base && !path.with_extension("log").exists() {
            std::fs::remove_file(&path).at(&path)?;
        }
    }
    Ok(())
}
