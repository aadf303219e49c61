//! The sparse, memory-mapped indexes of a segment.
//!
//! Both files are arrays of little-endian 64-bit words, preallocated to
//! `index_bytes_max` while their segment is active and trimmed to their entries when
//! it rolls or the log closes.
//!
//! - `.index`: one word per entry, `relative_offset: u32 | position: u32 << 32`. The
//!   position of the batch whose base offset is `base + relative_offset`.
//! - `.timeindex`: two words per entry: the largest timestamp seen in the segment up
//!   to and including that batch (i64), then `relative_offset: u32 | 1 << 32` (the
//!   bit marks a written entry, since timestamps may be zero).
//!
//! Entries are read and written as atomics: the one writer appends and publishes the
//! count with release ordering, readers load it with acquire ordering and never take
//! a lock. A reader that races with a truncation may see a stale entry; every entry
//! is a hint that the segment checks against the batch header it points to.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use memmap2::MmapMut;

use crate::error::{IoContext, Result};
use crate::offset::{FilePosition, RelativeOffset, TimestampMs};

/// A file of fixed-size entries of `W` words each, mapped into memory.
#[derive(Debug)]
struct MmapWords<const W: usize> {
    path: PathBuf,
    /// The mapping; `None` while the file is empty (an empty file cannot be mapped).
    map: Option<MmapMut>,
    /// Entries the mapping has room for.
    capacity: usize,
    /// Entries the file held before it was extended to `capacity`: past them it
    /// reads as zeros, so counting the written entries stops there.
    stored: usize,
    /// Entries that may be written: `capacity` while the segment is active, the
    /// entry count once trimmed.
    limit: AtomicUsize,
    /// Entries written. Only the writer stores it.
    len: AtomicUsize,
}

impl<const W: usize> MmapWords<W> {
    const ENTRY_BYTES: usize = 8 * W;

    /// Opens or creates the file and maps `capacity_bytes` of it (rounded down to
    /// whole entries). `len` entries are taken as written.
    fn open(path: &Path, capacity_bytes: u64) -> Result<MmapWords<W>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .at(path)?;
        let on_disk = file.metadata().at(path)?.len();
        let capacity_bytes = capacity_bytes.max(on_disk);
        let capacity = (capacity_bytes / Self::ENTRY_BYTES as u64) as usize;
        let mapped_bytes = (capacity * Self::ENTRY_BYTES) as u64;
        if on_disk < mapped_bytes {
            file.set_len(mapped_bytes).at(path)?;
        }
        let map = if capacity == 0 {
            None
        } else {
            // SAFETY: the file is private to this log (a lock file keeps other
            // processes out of the directory). `trim` shortens it while mapped, but
            // never below an entry a reader may load, so no access faults. Every
            // access through the mapping is atomic, so the writer and concurrent
            // readers never race.
            let map = unsafe { MmapMut::map_mut(&file) }.at(path)?;
            // Lookups jump around: no readahead, which would fault in (and zero)
            // megabytes of the preallocated, sparse tail of every index.
            map.advise(memmap2::Advice::Random).at(path)?;
            Some(map)
        };
        // The file handle is not kept: the mapping stays valid without it, and a log
        // with thousands of partitions would otherwise hold two more descriptors per
        // segment. `trim` reopens the file by path.
        drop(file);
        Ok(MmapWords {
            path: path.to_path_buf(),
            map,
            capacity,
            stored: (on_disk / Self::ENTRY_BYTES as u64).min(capacity as u64) as usize,
            limit: AtomicUsize::new(capacity),
            len: AtomicUsize::new(0),
        })
    }

    fn words(&self) -> &[AtomicU64] {
        match &self.map {
            // SAFETY: the mapping is page-aligned (so aligned for u64), holds
            // `capacity * W` words and lives as long as `self`. AtomicU64 has the size
            // and alignment of u64 and gives interior mutability for the writer.
            Some(map) => unsafe {
                std::slice::from_raw_parts(map.as_ptr().cast::<AtomicU64>(), self.capacity * W)
            },
            None => &[],
        }
    }

    fn word(&self, index: usize) -> u64 {
        self.words()
            .get(index)
            .map_or(0, |w| u64::from_le(w.load(Ordering::Relaxed)))
    }

    fn entry(&self, index: usize) -> [u64; W] {
        std::array::from_fn(|k| self.word(index * W + k))
    }

    fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    fn is_full(&self) -> bool {
        self.len() >= self.limit.load(Ordering::Relaxed)
    }

    /// Appends an entry; `false` when the file is full. Only the writer calls it.
    fn push(&self, entry: [u64; W]) -> bool {
        let len = self.len.load(Ordering::Relaxed);
        if len >= self.limit.load(Ordering::Relaxed) {
            return false;
        }
        let words = self.words();
        for (k, value) in entry.into_iter().enumerate() {
            if let Some(w) = words.get(len * W + k) {
                w.store(value.to_le(), Ordering::Relaxed);
            }
        }
        self.len.store(len + 1, Ordering::Release);
        true
    }

    /// Forgets the entries from `len` on and zeroes them, so a crash cannot bring
    /// them back.
    fn truncate(&self, len: usize) {
        let old = self.len.load(Ordering::Relaxed);
        if len >= old {
            return;
        }
        self.len.store(len, Ordering::Release);
        for w in self.words().get(len * W..old * W).unwrap_or_default() {
            w.store(0, Ordering::Relaxed);
        }
    }

    /// Shrinks the file to its entries, refusing further pushes. The
    /// mapping stays: readers only touch entries below `len`, which stay inside the
    /// shortened file, so no access reaches a page past its end.
    fn trim(&self) -> Result<()> {
        if let Some(map) = &self.map {
            map.flush_async().at(&self.path)?;
        }
        let len = self.len();
        self.limit.store(len, Ordering::Relaxed);
        // Not fsynced: after a crash an index is only a hint, checked and rebuilt.
        OpenOptions::new()
            .write(true)
            .open(&self.path)
            .and_then(|file| file.set_len((len * Self::ENTRY_BYTES) as u64))
            .at(&self.path)
    }
}

/// The number of leading indexes in `0..len` for which `pred` holds, given that it
/// holds for a prefix and fails for the rest.
fn partition_point(len: usize, pred: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0, len);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

/// One entry of the offset index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    pub(crate) relative_offset: RelativeOffset,
    pub(crate) position: FilePosition,
}

/// The sparse offset index of a segment: relative offset -> file position.
#[derive(Debug)]
pub(crate) struct OffsetIndex {
    words: MmapWords<1>,
}

impl OffsetIndex {
    /// Opens the index file, mapping `capacity_bytes`, and counts the entries that
    /// form a strictly increasing sequence of nonzero positions (a crash leaves zeros
    /// after the last written entry).
    pub(crate) fn open(path: &Path, capacity_bytes: u64) -> Result<OffsetIndex> {
        let index = OffsetIndex {
            words: MmapWords::open(path, capacity_bytes)?,
        };
        let mut len = 0;
        let mut previous: Option<IndexEntry> = None;
        while len < index.words.stored {
            let entry = index.raw_entry(len);
            let increasing = previous.is_none_or(|p| {
                entry.relative_offset > p.relative_offset && entry.position > p.position
            });
            if entry.position.0 == 0 || !increasing {
                break;
            }
            previous = Some(entry);
            len += 1;
        }
        index.words.len.store(len, Ordering::Release);
        Ok(index)
    }

    fn raw_entry(&self, i: usize) -> IndexEntry {
        let [word] = self.words.entry(i);
        IndexEntry {
            relative_offset: RelativeOffset(word as u32),
            position: FilePosition((word >> 32) as u32),
        }
    }

    /// The number of entries.
    pub(crate) fn len(&self) -> usize {
        self.words.len()
    }

    /// The last entry, if any.
    pub(crate) fn last(&self) -> Option<IndexEntry> {
        self.len().checked_sub(1).map(|i| self.raw_entry(i))
    }

    /// True when no more entries fit.
    pub(crate) fn is_full(&self) -> bool {
        self.words.is_full()
    }

    /// The entry with the largest relative offset at or below `target`.
    pub(crate) fn lookup(&self, target: RelativeOffset) -> Option<IndexEntry> {
        let count = partition_point(self.len(), |i| self.raw_entry(i).relative_offset <= target);
        count.checked_sub(1).map(|i| self.raw_entry(i))
    }

    /// Appends an entry; `false` when full.
    pub(crate) fn push(&self, entry: IndexEntry) -> bool {
        let word = u64::from(entry.relative_offset.0) | (u64::from(entry.position.0) << 32);
        self.words.push([word])
    }

    /// Drops every entry whose position is at or after `position`.
    pub(crate) fn truncate_to_position(&self, position: FilePosition) {
        let keep = (0..self.len())
            .take_while(|&i| self.raw_entry(i).position < position)
            .count();
        self.words.truncate(keep);
    }

    pub(crate) fn trim(&self) -> Result<()> {
        self.words.trim()
    }
}

/// One entry of the time index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TimeEntry {
    /// The largest timestamp in the segment up to and including this batch.
    pub(crate) timestamp: TimestampMs,
    /// The base offset of the batch, relative to the segment.
    pub(crate) relative_offset: RelativeOffset,
}

const TIME_ENTRY_PRESENT: u64 = 1 << 32;

/// The sparse time index of a segment: largest timestamp so far -> relative offset.
#[derive(Debug)]
pub(crate) struct TimeIndex {
    words: MmapWords<2>,
}

impl TimeIndex {
    /// Opens the file and counts the written entries (marked, with offsets strictly
    /// and timestamps weakly increasing).
    pub(crate) fn open(path: &Path, capacity_bytes: u64) -> Result<TimeIndex> {
        let index = TimeIndex {
            words: MmapWords::open(path, capacity_bytes)?,
        };
        let mut len = 0;
        let mut previous: Option<TimeEntry> = None;
        while len < index.words.stored {
            let [_, tagged] = index.words.entry(len);
            let entry = index.raw_entry(len);
            let increasing = previous.is_none_or(|p| {
                entry.relative_offset > p.relative_offset && entry.timestamp >= p.timestamp
            });
            if tagged >> 32 != 1 || !increasing {
                break;
            }
            previous = Some(entry);
            len += 1;
        }
        index.words.len.store(len, Ordering::Release);
        Ok(index)
    }

    fn raw_entry(&self, i: usize) -> TimeEntry {
        let [timestamp, tagged] = self.words.entry(i);
        TimeEntry {
            timestamp: timestamp as i64,
            relative_offset: RelativeOffset(tagged as u32),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.words.len()
    }

    pub(crate) fn last(&self) -> Option<TimeEntry> {
        self.len().checked_sub(1).map(|i| self.raw_entry(i))
    }

    /// The last entry whose timestamp is below `target`: every batch before its
    /// offset holds only older records.
    pub(crate) fn last_before(&self, target: TimestampMs) -> Option<TimeEntry> {
        let count = partition_point(self.len(), |i| self.raw_entry(i).timestamp < target);
        count.checked_sub(1).map(|i| self.raw_entry(i))
    }

    pub(crate) fn push(&self, entry: TimeEntry) -> bool {
        let tagged = u64::from(entry.relative_offset.0) | TIME_ENTRY_PRESENT;
        self.words.push([entry.timestamp as u64, tagged])
    }

    pub(crate) fn is_full(&self) -> bool {
        self.words.is_full()
    }

    /// Drops every entry at or after `relative_offset`.
    pub(crate) fn truncate_to_offset(&self, relative_offset: RelativeOffset) {
        let keep = (0..self.len())
            .take_while(|&i| self.raw_entry(i).relative_offset < relative_offset)
            .count();
        self.words.truncate(keep);
    }

    pub(crate) fn trim(&self) -> Result<()> {
        self.words.trim()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn lookup_finds_the_last_entry_at_or_below(
            gaps in proptest::collection::vec(1u32..1000, 0..200),
            probe in 0u32..250_000,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("x.index");
            let index = OffsetIndex::open(&path, 8 * 256).unwrap();
            let mut entries = Vec::new();
            let (mut rel, mut pos) = (0u32, 0u32);
            for gap in gaps {
                rel += gap;
                pos += gap * 3;
                let e = IndexEntry { relative_offset: RelativeOffset(rel), position: FilePosition(pos) };
                prop_assert!(index.push(e));
                entries.push(e);
            }
            let expected = entries.iter().rev().find(|e| e.relative_offset.0 <= probe).copied();
            prop_assert_eq!(index.lookup(RelativeOffset(probe)), expected);
            drop(index);
            let reopened = OffsetIndex::open(&path, 8 * 256).unwrap();
            prop_assert_eq!(reopened.len(), entries.len());
            prop_assert_eq!(reopened.lookup(RelativeOffset(probe)), expected);
        }
    }

    #[test]
    fn trim_shrinks_the_file_and_reopen_extends_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.index");
        let index = OffsetIndex::open(&path, 1024).unwrap();
        for i in 1..=3 {
            index.push(IndexEntry {
                relative_offset: RelativeOffset(i),
                position: FilePosition(i * 100),
            });
        }
        index.trim().unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 24);
        assert!(index.is_full());
        drop(index);
        let index = OffsetIndex::open(&path, 1024).unwrap();
        assert_eq!(index.len(), 3);
        assert!(!index.is_full());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 1024);
    }

    #[test]
    fn time_index_finds_the_scan_start() {
        let dir = tempfile::tempdir().unwrap();
        let index = TimeIndex::open(&dir.path().join("t"), 1024).unwrap();
        for (ts, rel) in [(0, 0), (10, 5), (20, 9), (20, 12), (35, 20)] {
            index.push(TimeEntry {
                timestamp: ts,
                relative_offset: RelativeOffset(rel),
            });
        }
        assert_eq!(index.last_before(0), None);
        assert_eq!(index.last_before(15).map(|e| e.relative_offset.0), Some(5));
        assert_eq!(index.last_before(21).map(|e| e.relative_offset.0), Some(12));
        assert_eq!(index.last().map(|e| e.timestamp), Some(35));
    }
}
