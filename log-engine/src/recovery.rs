//! Opening a log directory: finding the segments, checking that they meet, and
//! recovering the active one after an unclean shutdown.
//!
//! The rules:
//! - Every segment but the last was fsynced when it rolled. Each is checked from its
//!   last index entry to its end (headers, CRCs, offsets). Damage there, or a gap or
//!   overlap between two segments, is lost data in the middle of the log: open fails
//!   with an error naming the file and the position, and nothing is changed.
//! - The last (active) segment is scanned from the last index entry below the
//!   recovery point (everything before it was fsynced), or from its start. The scan
//!   checks each batch's header, length, CRC and offset; at the first bad byte the
//!   file is cut, and the indexes are rebuilt for everything scanned.
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
    for (i, base) in bases.into_iter().enumerate() {
        let active = i == last;
        let segment = Segment::open(dir, base, index_bytes, active)?;
        if active {
            recover_active(&segment, trusted_below, config)?;
        } else {
            check_sealed(&segment, config)?;
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
    }
    Ok(segments)
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
    segment.flush_indexes()
}

fn check_sealed(segment: &Segment, config: &LogConfig) -> Result<()> {
    let (start, start_offset) = segment.recovery_start(Offset(u64::MAX));
    let outcome = segment.recover_from(start, start_offset, config.index_interval_bytes)?;
    match outcome.damage {
        None => Ok(()),
        Some(reason) => Err(Error::Corrupt {
            path: segment.path().to_path_buf(),
            position: outcome.valid_size,
            reason: format!("{reason} (in a sealed segment: data after it would be lost)"),
        }),
    }
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
