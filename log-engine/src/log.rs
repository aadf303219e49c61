//! The log: the ordered segments of one partition, one writer, many readers.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use event_listener::{Event, Listener};

use crate::batch::{BatchHeader, BatchRef, RecordBatch};
use crate::checkpoint::{self, CLEAN_SHUTDOWN_FILE, RecoveryPoint};
use crate::clock::{Clock, SystemClock};
use crate::config::LogConfig;
use crate::error::{Error, IoContext, Result};
use crate::offset::{Offset, TimestampMs};
use crate::record::{Record, RecordRef};
use crate::retention::{self, SegmentSummary};
use crate::segment::{self, Segment};

/// How often, at most, a sync rewrites the recovery point (Kafka checkpoints its
/// recovery point every minute by default).
const RECOVERY_POINT_INTERVAL_MS: i64 = 1000;

/// How many times a read that failed on a damaged batch while the log was truncated
/// runs again: the truncation, not damage, may have changed the bytes it read. A
/// bound, since each truncation is a new chance of the same race.
const READ_ATTEMPTS_MAX: u32 = 3;

/// The fewest bytes of the active segment [`Log::release_cache`] asks the kernel to
/// drop at once: each call costs about 40 us per MiB here, and fewer, larger calls
/// keep it off the appends' way.
const CACHE_DROP_MIN: u64 = 4 << 20;

/// Which watermark bounds a read or a wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadBound {
    /// Everything appended so far.
    LogEnd,
    /// Everything below the high watermark the caller set (the replicated part).
    HighWatermark,
    /// Everything that is fsynced.
    Durable,
    /// Everything below this offset (and below the log end).
    Offset(Offset),
}

/// Where an append put its records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendInfo {
    /// The offset of the first record.
    pub base_offset: Offset,
    /// The offset of the last record.
    pub last_offset: Offset,
}

impl AppendInfo {
    /// The offset after the last record: the log end right after this append.
    pub fn next_offset(&self) -> Offset {
        Offset(self.last_offset.0 + 1)
    }
}

/// Whole batches read from the log.
#[derive(Clone, Debug, Default)]
pub struct ReadBatches {
    bytes: Vec<u8>,
    from: Offset,
    next_offset: Offset,
}

impl ReadBatches {
    /// The batches as they are on disk, back to back.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The bytes, consuming the result.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// True when nothing was read.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Where the next read should start: after the last record returned, or the
    /// requested offset when nothing was read.
    pub fn next_offset(&self) -> Offset {
        self.next_offset
    }

    /// The batches. The first may start before the requested offset. The read checked
    /// them (CRC included); this only splits the bytes.
    pub fn batches(&self) -> Batches<'_> {
        Batches { rest: &self.bytes }
    }

    /// The records at or after the requested offset.
    pub fn records(&self) -> RecordsFrom<'_> {
        RecordsFrom {
            batches: self.batches(),
            current: None,
            from: self.from,
        }
    }
}

/// The records of consecutive batches at or after an offset.
#[derive(Clone, Debug)]
pub struct RecordsFrom<'a> {
    batches: Batches<'a>,
    current: Option<crate::batch::Records<'a>>,
    from: Offset,
}

impl<'a> Iterator for RecordsFrom<'a> {
    type Item = Result<RecordRef<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(records) = &mut self.current {
                match records.next() {
                    Some(Ok(record)) if record.offset < self.from => continue,
                    Some(item) => return Some(item),
                    None => self.current = None,
                }
            }
            match self.batches.next()? {
                Ok(batch) => self.current = Some(batch.records()),
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

/// An iterator over batches laid back to back.
#[derive(Clone, Debug)]
pub struct Batches<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Batches<'a> {
    type Item = Result<BatchRef<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        match BatchRef::parse(self.rest, false) {
            Ok((batch, rest)) => {
                self.rest = rest;
                Some(Ok(batch))
            }
            Err(e) => {
                self.rest = &[];
                Some(Err(e))
            }
        }
    }
}

/// What a retention pass removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Segments deleted.
    pub segments_deleted: usize,
    /// Bytes freed.
    pub bytes_deleted: u64,
    /// The log start offset afterwards.
    pub log_start_offset: Offset,
}

/// The state only the writer touches, behind the writer lock.
#[derive(Debug)]
struct Writer {
    /// The segment appends go to; always the last of `segments`.
    active: Arc<Segment>,
    /// Bytes appended to the active segment since its last index entry.
    since_index: u64,
    /// When the active segment was opened, for rolling by age.
    active_opened_ms: TimestampMs,
}

/// A segmented, append-only commit log in one directory.
///
/// `Log` is `Send + Sync`: share it in an `Arc`. Appends are serialised by an
/// internal writer lock; reads take no lock the writer holds and run concurrently
/// with appends and with each other.
#[derive(Debug)]
pub struct Log {
    dir: PathBuf,
    config: LogConfig,
    clock: Arc<dyn Clock>,
    /// The segments in offset order. Readers clone the `Arc` and let go of the lock at
    /// once; the writer replaces the list when it rolls, truncates or deletes.
    segments: RwLock<Arc<Vec<Arc<Segment>>>>,
    writer: Mutex<Writer>,
    /// True while one thread syncs. The others wait on `sync_done` and wake together
    /// when it finishes: most find their batch covered by that fsync and return, and
    /// one of the rest leads the next (group commit).
    syncing: Mutex<bool>,
    sync_done: Condvar,
    /// Segments sealed by a roll since the last sync; the next sync covers them.
    unsynced: Mutex<Vec<Arc<Segment>>>,
    /// A roll created a file since the last sync: the next sync syncs the directory.
    dir_unsynced: AtomicBool,
    recovery_point: RecoveryPoint,
    /// When the recovery point was last written (ms), for its rate limit.
    recovery_point_ms: AtomicI64,
    /// The offset the recovery point file holds. Below the durable offset when the
    /// rate limit held a write back: [`Log::checkpoint`] writes it later.
    recovery_point_offset: AtomicU64,
    /// How many times the log was truncated or reset (changed under the writer lock):
    /// a sync that ran across one does not publish what it synced, which may be gone.
    truncations: AtomicU64,
    log_start: AtomicU64,
    log_end: AtomicU64,
    high_watermark: AtomicU64,
    /// Whether a caller ever set the high watermark ([`Log::set_high_watermark`]);
    /// until then it is the log end.
    high_watermark_managed: AtomicBool,
    durable: AtomicU64,
    /// Messages appended since the last sync, for the flush policy.
    unflushed_messages: AtomicU64,
    last_sync_ms: AtomicI64,
    /// How many fsyncs of segment data the log made, for metrics and tests.
    fsyncs: AtomicU64,
    /// Set when a write or fsync failed; the message is in `failure`.
    failed: AtomicBool,
    failure: Mutex<Option<String>>,
    closed: AtomicBool,
    /// Woken on every change of a watermark.
    changed: Event,
    /// True while the clean-shutdown marker of the last close is still on disk: it is
    /// removed (durably) before the first change, so an idle log reopens without a
    /// single fsync.
    clean_marker: AtomicBool,
}

impl Log {
    /// Opens the log in `dir`, creating the directory and an empty log if needed,
    /// and recovering from an unclean shutdown.
    pub fn open(dir: impl AsRef<Path>, config: LogConfig) -> Result<Log> {
        Self::open_with_clock(dir, config, Arc::new(SystemClock))
    }

    /// [`Log::open`] with a clock of the caller's (tests move time by hand).
    pub fn open_with_clock(
        dir: impl AsRef<Path>,
        config: LogConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Log> {
        config.validate()?;
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).at(&dir)?;
        let marker = dir.join(CLEAN_SHUTDOWN_FILE);
        let clean = marker.exists();
        let (recovery_point, point) = RecoveryPoint::open(&dir, config.lock_directory)?;
        let trusted_below = if clean {
            Offset(u64::MAX)
        } else {
            point.unwrap_or(Offset::ZERO)
        };
        let segments = crate::recovery::open_segments(&dir, &config, trusted_below)?;
        let (Some(first), Some(active)) = (segments.first(), segments.last()) else {
            return Err(Error::InvalidConfig("no segment after recovery".into()));
        };
        let start = first.base();
        let end = active.next_offset();
        if !clean {
            // What recovery kept is on disk from now on, so the durable offset is
            // honest. After a clean close everything already is.
            active.sync()?;
            checkpoint::sync_dir(&dir)?;
        }
        for segment in &segments {
            segment.adopt();
        }
        recovery_point.store(end)?;
        let now = clock.now_ms();
        let writer = Writer {
            active: Arc::clone(active),
            since_index: active
                .size()
                .saturating_sub(active.last_index_entry().map_or(0, |e| e.position.as_u64())),
            active_opened_ms: now,
        };
        tracing::debug!(dir = %dir.display(), %start, %end, clean, "log opened");
        Ok(Log {
            dir,
            config,
            clock,
            segments: RwLock::new(Arc::new(segments)),
            writer: Mutex::new(writer),
            syncing: Mutex::new(false),
            sync_done: Condvar::new(),
            unsynced: Mutex::new(Vec::new()),
            dir_unsynced: AtomicBool::new(false),
            recovery_point,
            recovery_point_ms: AtomicI64::new(now),
            recovery_point_offset: AtomicU64::new(end.0),
            truncations: AtomicU64::new(0),
            log_start: AtomicU64::new(start.0),
            log_end: AtomicU64::new(end.0),
            high_watermark: AtomicU64::new(end.0),
            high_watermark_managed: AtomicBool::new(false),
            durable: AtomicU64::new(end.0),
            unflushed_messages: AtomicU64::new(0),
            last_sync_ms: AtomicI64::new(now),
            fsyncs: AtomicU64::new(0),
            failed: AtomicBool::new(false),
            failure: Mutex::new(None),
            closed: AtomicBool::new(false),
            changed: Event::new(),
            clean_marker: AtomicBool::new(clean),
        })
    }

    /// The directory of the log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The configuration the log was opened with.
    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// The first offset still in the log.
    pub fn log_start_offset(&self) -> Offset {
        Offset(self.log_start.load(Ordering::Acquire))
    }

    /// The offset the next appended record gets.
    pub fn log_end_offset(&self) -> Offset {
        Offset(self.log_end.load(Ordering::Acquire))
    }

    /// The high watermark: records below it are replicated (as the caller judges).
    /// Until a caller sets it ([`Log::set_high_watermark`]) it is the log end: a log
    /// nobody replicates has everything committed. Once set, it starts from the log
    /// end at open and moves as the caller says.
    pub fn high_watermark(&self) -> Offset {
        if self.high_watermark_managed.load(Ordering::Acquire) {
            Offset(self.high_watermark.load(Ordering::Acquire))
        } else {
            self.log_end_offset()
        }
    }

    /// Records below this offset are fsynced.
    pub fn durable_offset(&self) -> Offset {
        Offset(self.durable.load(Ordering::Acquire))
    }

    /// The offset that `bound` stands for now.
    pub fn watermark(&self, bound: ReadBound) -> Offset {
        let end = self.log_end_offset();
        match bound {
            ReadBound::LogEnd => end,
            ReadBound::HighWatermark => self.high_watermark().min(end),
            ReadBound::Durable => self.durable_offset().min(end),
            ReadBound::Offset(offset) => offset.min(end),
        }
    }

    /// Raises the high watermark to `offset` (clamped to the log end) and wakes
    /// waiting readers. It never moves back: concurrent callers may finish in any
    /// order. Only [`Log::truncate_to`] lowers it.
    pub fn set_high_watermark(&self, offset: Offset) {
        let clamped = offset.min(self.log_end_offset());
        let previous = self.high_watermark.fetch_max(clamped.0, Ordering::AcqRel);
        self.high_watermark_managed.store(true, Ordering::Release);
        if previous < clamped.0 {
            self.changed.notify(usize::MAX);
        }
    }

    /// How many times the log has fsynced its data since it was opened. With group
    /// commit this grows slower than the number of durable appends.
    pub fn fsync_count(&self) -> u64 {
        self.fsyncs.load(Ordering::Relaxed)
    }

    /// The total size of the segment files in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.snapshot().iter().map(|s| s.size()).sum()
    }

    /// The number of segments.
    pub fn segment_count(&self) -> usize {
        self.snapshot().len()
    }

    fn snapshot(&self) -> Arc<Vec<Arc<Segment>>> {
        match self.segments.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    fn replace_segments(&self, segments: Vec<Arc<Segment>>) {
        let mut guard = match self.segments.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        *guard = Arc::new(segments);
    }

    fn lock_writer(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Refuses every operation that writes once a write or fsync has failed.
    fn check_not_failed(&self) -> Result<()> {
        if !self.failed.load(Ordering::Acquire) {
            return Ok(());
        }
        let cause = self
            .failure
            .lock()
            .map(|f| f.clone().unwrap_or_default())
            .unwrap_or_default();
        Err(Error::PreviousIo {
            path: self.dir.clone(),
            cause,
        })
    }

    /// [`Log::check_not_failed`], and refuses appends after `close`.
    fn check_writable(&self) -> Result<()> {
        self.check_not_failed()?;
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed {
                path: self.dir.clone(),
            });
        }
        Ok(())
    }

    /// Records the first I/O failure; every later append is refused.
    fn latch<T>(&self, result: Result<T>) -> Result<T> {
        if let Err(error) = &result {
            if let Ok(mut failure) = self.failure.lock() {
                failure.get_or_insert_with(|| error.to_string());
            }
            self.failed.store(true, Ordering::Release);
            tracing::error!(dir = %self.dir.display(), %error, "log write failed; appends refused until reopened");
        }
        result
    }

    /// Appends a batch: assigns its offsets (rewriting its base offset and nothing
    /// else) and writes it. Durable when the flush policy says so; see
    /// [`Log::append_durable`] to wait for an fsync.
    pub fn append(&self, batch: &mut RecordBatch) -> Result<AppendInfo> {
        let (info, since) = self.append_at(batch, None)?;
        if self.flush_due(u64::from(batch.record_count())) {
            self.sync_to(info.next_offset(), since)?;
        }
        Ok(info)
    }

    /// Appends a batch and returns once it is fsynced. Appenders that wait at the
    /// same time share one fsync.
    pub fn append_durable(&self, batch: &mut RecordBatch) -> Result<AppendInfo> {
        let (info, since) = self.append_at(batch, None)?;
        self.unflushed_messages
            .fetch_add(u64::from(batch.record_count()), Ordering::Relaxed);
        self.sync_to(info.next_offset(), since)?;
        Ok(info)
    }

    /// Encodes `records` into one batch and appends it.
    pub fn append_records(&self, records: &[Record]) -> Result<AppendInfo> {
        let mut batch = RecordBatch::from_records(records)?;
        self.append(&mut batch)
    }

    /// Appends a batch that already carries its offsets, as a follower copies its
    /// leader: its base offset must be the log end. The bytes are written unchanged.
    pub fn append_replica(&self, batch: &mut RecordBatch) -> Result<AppendInfo> {
        let (info, since) = self.append_at(batch, Some(batch.base_offset()))?;
        if self.flush_due(u64::from(batch.record_count())) {
            self.sync_to(info.next_offset(), since)?;
        }
        Ok(info)
    }

    /// Writes `batch` at the log end; with `expected_base`, only if the log end is
    /// that offset. Returns where it went and the count of truncations it was written
    /// after, for a wait for its fsync.
    fn append_at(
        &self,
        batch: &mut RecordBatch,
        expected_base: Option<Offset>,
    ) -> Result<(AppendInfo, u64)> {
        self.check_writable()?;
        let len = batch.len();
        if len > self.config.batch_bytes_max as usize {
            return Err(Error::BatchTooLarge {
                size: len,
                limit: self.config.batch_bytes_max,
            });
        }
        let mut writer = self.lock_writer();
        self.check_writable()?;
        self.remove_clean_marker()?;
        let base = self.log_end_offset();
        if expected_base.is_some_and(|expected| expected != base) {
            return Err(Error::OffsetOutOfRange {
                offset: batch.base_offset(),
                start: self.log_start_offset(),
                end: base,
            });
        }
        let count = u64::from(batch.record_count());
        if self.roll_due(&writer, len as u64, base, count) {
            let rolled = self.roll(&mut writer, base);
            self.latch(rolled)?;
        }
        batch.set_base_offset(base);
        let view = batch.as_ref();
        let header = *view.header();
        let index_due = writer.since_index >= u64::from(self.config.index_interval_bytes);
        let written = writer.active.append(batch.as_bytes(), &header, index_due);
        self.latch(written)?;
        writer.since_index = if index_due {
            len as u64
        } else {
            writer.since_index + len as u64
        };
        let next = header.next_offset();
        self.log_end.store(next.0, Ordering::Release);
        let truncations = self.truncations.load(Ordering::Acquire);
        drop(writer);
        self.changed.notify(usize::MAX);
        let info = AppendInfo {
            base_offset: base,
            last_offset: header.last_offset(),
        };
        Ok((info, truncations))
    }

    /// Removes the clean-shutdown marker before the first change after a clean open,
    /// durably: a crash from now on must be seen as one. Under the writer lock.
    fn remove_clean_marker(&self) -> Result<()> {
        if !self.clean_marker.load(Ordering::Acquire) {
            return Ok(());
        }
        let marker = self.dir.join(CLEAN_SHUTDOWN_FILE);
        match std::fs::remove_file(&marker) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return self.latch(Err(Error::io(&marker, e))),
        }
        let synced = checkpoint::sync_dir(&self.dir);
        self.latch(synced)?;
        self.clean_marker.store(false, Ordering::Release);
        Ok(())
    }

    fn roll_due(&self, writer: &Writer, len: u64, base: Offset, count: u64) -> bool {
        let active = &writer.active;
        let size = active.size();
        if size == 0 {
            return false;
        }
        let too_big = size + len > self.config.segment_bytes_max;
        let age = self.clock.now_ms().saturating_sub(writer.active_opened_ms);
        let too_old = age >= self.config.segment_age_ms_max as i64;
        let offsets_exhausted =
            (base.0 + count).saturating_sub(active.base().0) > u64::from(u32::MAX);
        too_big || too_old || active.index_full() || offsets_exhausted
    }

    /// Seals the active segment and starts a new one at `base`. Under the writer lock.
    fn roll(&self, writer: &mut Writer, base: Offset) -> Result<()> {
        writer.active.seal()?;
        self.unsynced
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Arc::clone(&writer.active));
        let index_bytes = u64::from(self.config.index_bytes_max);
        let segment = Arc::new(Segment::open(&self.dir, base, index_bytes, true)?);
        // The new file's directory entry is synced by the next sync, with the data.
        self.dir_unsynced.store(true, Ordering::Release);
        let mut segments = self.snapshot().as_ref().clone();
        segments.push(Arc::clone(&segment));
        self.replace_segments(segments);
        tracing::debug!(dir = %self.dir.display(), %base, "segment rolled");
        writer.active = segment;
        writer.since_index = 0;
        writer.active_opened_ms = self.clock.now_ms();
        Ok(())
    }

    fn flush_due(&self, appended: u64) -> bool {
        let unflushed = self
            .unflushed_messages
            .fetch_add(appended, Ordering::Relaxed)
            + appended;
        let policy = self.config.flush;
        let by_count = policy.messages_max.is_some_and(|max| unflushed >= max);
        let by_time = policy.interval_ms.is_some_and(|interval| {
            let since = self.clock.now_ms() - self.last_sync_ms.load(Ordering::Relaxed);
            since >= interval as i64
        });
        by_count || by_time
    }

    /// Fsyncs everything appended so far; then drops what the cache window no
    /// longer holds ([`Log::release_cache`]).
    pub fn flush(&self) -> Result<()> {
        loop {
            let since = self.truncations.load(Ordering::Acquire);
            match self.sync_to(self.log_end_offset(), since) {
                // Cut meanwhile: sync what is left.
                Err(Error::Truncated { .. }) => continue,
                Err(error) => return Err(error),
                Ok(()) => {
                    self.release_cache();
                    return Ok(());
                }
            }
        }
    }

    /// With [`LogConfig::cache_window_bytes`] set, asks the kernel to drop from the
    /// page cache the fsynced bytes older than the newest `cache_window_bytes` of
    /// the log, at least 4 MiB of the active segment at a time (or a sealed
    /// segment's whole rest).
    /// [`Log::flush`] and [`Log::checkpoint`] call it; it walks the segments from the
    /// newest and stops at the first one already dropped whole, so it costs a few
    /// atomic loads when there is nothing to drop.
    pub fn release_cache(&self) {
        let Some(window) = self.config.cache_window_bytes else {
            return;
        };
        let segments = self.snapshot();
        let Some(last) = segments.len().checked_sub(1) else {
            return;
        };
        let mut newer = 0u64;
        for (i, segment) in segments.iter().enumerate().rev() {
            let size = segment.size();
            let dropped = segment.cache_dropped();
            let sealed = i < last;
            if sealed && dropped >= size {
                // Older segments were dropped whole before this one.
                break;
            }
            let keep_from = size.saturating_sub(window.saturating_sub(newer));
            let end = keep_from.min(segment.synced());
            if end >= dropped.saturating_add(CACHE_DROP_MIN) || (sealed && end == size) {
                segment.drop_cache_below(end);
            }
            newer = newer.saturating_add(size);
        }
    }

    /// Fsyncs if the flush policy's interval has passed with data unflushed, and
    /// writes a recovery point held back by its rate limit ([`Log::checkpoint`]); for
    /// a caller's timer, since the log owns no thread.
    pub fn flush_if_due(&self) -> Result<()> {
        let pending = self.durable_offset() < self.log_end_offset();
        if pending && self.flush_due(0) {
            self.flush()?;
        }
        self.checkpoint()
    }

    /// Returns once every record below `target` is fsynced. One thread at a time
    /// syncs; the others wait for it and usually find their records covered. Fails
    /// with `Truncated` if the log was truncated or reset after `since` (a count of
    /// truncations read with `target`) before the records were covered: they may be
    /// gone, and a reset may have moved the durable offset past them.
    fn sync_to(&self, target: Offset, since: u64) -> Result<()> {
        let covered = || {
            // The durable offset first: a reset raises it only after counting itself.
            let durable = self.durable_offset();
            let end = self.log_end_offset();
            if self.truncations.load(Ordering::Acquire) != since || end < target {
                return Err(Error::Truncated {
                    offset: target,
                    end,
                });
            }
            Ok(durable >= target)
        };
        loop {
            if covered()? {
                return Ok(());
            }
            {
                let mut syncing = self.syncing.lock().unwrap_or_else(|p| p.into_inner());
                while *syncing {
                    if covered()? {
                        return Ok(());
                    }
                    syncing = self
                        .sync_done
                        .wait(syncing)
                        .unwrap_or_else(|p| p.into_inner());
                }
                if covered()? {
                    return Ok(());
                }
                // A sync may still run after `close` (it finds nothing to do); not after a
                // failure.
                self.check_not_failed()?;
                *syncing = true;
            }
            let result = self.sync_now();
            *self.syncing.lock().unwrap_or_else(|p| p.into_inner()) = false;
            self.sync_done.notify_all();
            result?;
        }
    }

    /// Fsyncs the segments sealed since the last sync and the active one, then
    /// publishes the new durable offset. Called by one thread at a time.
    fn sync_now(&self) -> Result<()> {
        let (sealed, active, end, truncations) = {
            let writer = self.lock_writer();
            let sealed =
                std::mem::take(&mut *self.unsynced.lock().unwrap_or_else(|p| p.into_inner()));
            (
                sealed,
                Arc::clone(&writer.active),
                self.log_end_offset(),
                self.truncations.load(Ordering::Acquire),
            )
        };
        if self.dir_unsynced.swap(false, Ordering::AcqRel) {
            let synced = checkpoint::sync_dir(&self.dir);
            self.latch(synced)?;
        }
        for segment in sealed.iter().chain(std::iter::once(&active)) {
            let synced = segment.sync();
            self.fsyncs.fetch_add(1, Ordering::Relaxed);
            self.latch(synced)?;
        }
        let now = self.clock.now_ms();
        {
            // Published under the writer lock, which truncations hold, so that a cut
            // made while the fsync ran is never undone by publishing the old end.
            let _writer = self.lock_writer();
            if self.truncations.load(Ordering::Acquire) != truncations {
                self.changed.notify(usize::MAX);
                return Ok(());
            }
            self.durable.fetch_max(end.0, Ordering::AcqRel);
            // Only a hint for recovery, so written at most once per interval rather
            // than with every fsync (where it cost a write, and without the directory
            // lock an open and a close, on every durable append). One held back is
            // written by the next sync or `checkpoint` after the interval. A failure
            // costs a longer scan, no data.
            if self.recovery_point_due(now)
                && let Err(error) = self.store_recovery_point(now, end)
            {
                tracing::warn!(%error, "could not update the recovery point");
            }
        }
        self.unflushed_messages.store(0, Ordering::Relaxed);
        self.last_sync_ms.store(now, Ordering::Relaxed);
        self.changed.notify(usize::MAX);
        Ok(())
    }

    /// Writes the recovery point if the rate limit held it back (a sync made more of
    /// the log durable than the file says) and a second has passed since its last
    /// write, and drops what the cache window no longer holds
    /// ([`Log::release_cache`]). Costs a few atomic loads when nothing is pending, so
    /// a caller's periodic timer can call it often: the log owns no thread, and after
    /// a burst of syncs followed by silence no later sync would write it. A stale
    /// recovery point loses nothing but makes recovery after a crash scan more, and
    /// treat damage in synced records as a torn tail. An error (the write failed) is
    /// only reported: the log goes on, and a later call tries again.
    pub fn checkpoint(&self) -> Result<()> {
        self.release_cache();
        let now = self.clock.now_ms();
        if !self.recovery_point_due(now) {
            return Ok(());
        }
        // Under the writer lock, which truncations hold: a point read before a cut
        // must not be written after it.
        let _writer = self.lock_writer();
        if !self.recovery_point_due(now) {
            return Ok(());
        }
        self.store_recovery_point(now, self.durable_offset())
    }

    /// True when the recovery point file is behind the durable offset and its rate
    /// limit allows a write at `now`.
    fn recovery_point_due(&self, now: TimestampMs) -> bool {
        let stored = self.recovery_point_offset.load(Ordering::Acquire);
        let written_ms = self.recovery_point_ms.load(Ordering::Relaxed);
        self.durable_offset().0 > stored
            && now.saturating_sub(written_ms) >= RECOVERY_POINT_INTERVAL_MS
    }

    /// Writes `offset` to the recovery point file. Under the writer lock. The time is
    /// taken even when the write fails, so that a failing file is not retried on
    /// every sync; the offset only when it succeeds, so that `checkpoint` tries again.
    fn store_recovery_point(&self, now: TimestampMs, offset: Offset) -> Result<()> {
        self.recovery_point_ms.store(now, Ordering::Relaxed);
        self.recovery_point.store(offset)?;
        self.recovery_point_offset
            .store(offset.0, Ordering::Release);
        Ok(())
    }

    /// Reads whole batches starting with the one that holds `from`, up to `max_bytes`
    /// (at least one batch, whatever its size, so a reader always progresses), and only
    /// batches that end below `bound`. Empty when `from` is at the bound. One read
    /// returns batches of one segment: at a segment's end it stops, and the next read
    /// (from [`ReadBatches::next_offset`]) continues in the next segment.
    ///
    /// Every batch returned has been checked as it was read: header, length, CRC, and
    /// a base offset that follows the batch before it. A batch that fails is
    /// [`Error::CorruptBatch`], naming the file, the byte position and the offset;
    /// none of its bytes are returned. When it is not the first batch of the read, the
    /// read stops before it, and the read from there fails.
    pub fn read(&self, from: Offset, max_bytes: usize, bound: ReadBound) -> Result<ReadBatches> {
        let mut bytes = Vec::new();
        let next_offset = self.read_into(from, max_bytes, bound, &mut bytes)?;
        Ok(ReadBatches {
            bytes,
            from,
            next_offset,
        })
    }

    /// [`Log::read`] into a buffer of the caller's, which is cleared first; returns
    /// where the next read should start. The batches are checked as for
    /// [`Log::read`], so the caller need not check their CRCs again.
    pub fn read_into(
        &self,
        from: Offset,
        max_bytes: usize,
        bound: ReadBound,
        buf: &mut Vec<u8>,
    ) -> Result<Offset> {
        let mut attempts = 0;
        loop {
            let truncations = self.truncations.load(Ordering::Acquire);
            let read = self.read_once(from, max_bytes, bound, buf);
            attempts += 1;
            // A truncation during the read may have cut or rewritten the bytes under
            // it: that is not damage, and a read of the new log answers.
            let cut = self.truncations.load(Ordering::Acquire) != truncations;
            match read {
                Err(Error::CorruptBatch { .. }) if cut && attempts < READ_ATTEMPTS_MAX => {}
                other => return other,
            }
        }
    }

    fn read_once(
        &self,
        from: Offset,
        max_bytes: usize,
        bound: ReadBound,
        buf: &mut Vec<u8>,
    ) -> Result<Offset> {
        buf.clear();
        let upper = self.watermark(bound);
        self.check_in_range(from)?;
        if from >= upper {
            return Ok(from);
        }
        let segments = self.snapshot();
        let first = segments
            .partition_point(|s| s.base() <= from)
            .saturating_sub(1);
        for segment in segments.iter().skip(first) {
            if let Some((position, header)) = segment.find(from)? {
                if header.last_offset() >= upper {
                    return Ok(from);
                }
                return read_batches(segment, position, max_bytes, &header, upper, buf);
            }
        }
        Ok(from)
    }

    fn check_in_range(&self, offset: Offset) -> Result<()> {
        let start = self.log_start_offset();
        let end = self.log_end_offset();
        if offset < start || offset > end {
            return Err(Error::OffsetOutOfRange { offset, start, end });
        }
        Ok(())
    }

    /// The offset of the first record whose timestamp is at or after `timestamp`;
    /// `None` when every record is older.
    pub fn offset_for_timestamp(&self, timestamp: TimestampMs) -> Result<Option<Offset>> {
        let segments = self.snapshot();
        for segment in segments.iter() {
            let Some((position, header)) = segment.find_by_time(timestamp)? else {
                continue;
            };
            let mut buf = vec![0u8; header.total_len()];
            let n = segment.read_at(position, &mut buf)?;
            let corrupt = |reason| segment.corrupt_batch(position, header.base_offset, reason);
            let (batch, _) = BatchRef::parse(buf.get(..n).unwrap_or_default(), false)
                .map_err(|e| corrupt(e.to_string()))?;
            check_batch(&batch, header.base_offset).map_err(corrupt)?;
            for record in batch.records() {
                let record = record?;
                if record.timestamp >= timestamp {
                    return Ok(Some(record.offset.max(self.log_start_offset())));
                }
            }
        }
        Ok(None)
    }

    /// Waits until the watermark of `bound` passes `offset` (a record at `offset` is
    /// readable), or the log is closed ([`Log::is_closed`]): nothing more will come
    /// then. The future needs no particular runtime.
    pub async fn wait_for(&self, offset: Offset, bound: ReadBound) {
        loop {
            if self.watermark(bound) > offset || self.is_closed() {
                return;
            }
            let listener = self.changed.listen();
            if self.watermark(bound) > offset || self.is_closed() {
                return;
            }
            listener.await;
        }
    }

    /// Whether [`Log::close`] was called: appends are refused, and waits end.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Blocks the thread until a record at `offset` is readable within `bound`, the
    /// log is closed, or `timeout` passes; true when it is readable.
    pub fn wait_for_blocking(&self, offset: Offset, bound: ReadBound, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if self.watermark(bound) > offset {
                return true;
            }
            let listener = self.changed.listen();
            if self.watermark(bound) > offset {
                return true;
            }
            if self.is_closed() || listener.wait_deadline(deadline).is_none() {
                return self.watermark(bound) > offset;
            }
        }
    }

    /// Removes every record at or after `offset` (for a follower whose tail diverged
    /// from its leader's). Cuts at the start of the batch holding `offset`, so the new
    /// log end may be below `offset` when it falls inside a batch; returns it. Below
    /// the log start (retention deleted what was there), the log starts over, empty,
    /// at `offset`, as [`Log::reset_to`] does: the next append gets `offset`.
    pub fn truncate_to(&self, offset: Offset) -> Result<Offset> {
        self.check_writable()?;
        let mut writer = self.lock_writer();
        if offset >= self.log_end_offset() {
            return Ok(self.log_end_offset());
        }
        let result = if offset < self.log_start_offset() {
            self.reset_locked(&mut writer, offset).map(|()| offset)
        } else {
            self.truncate_locked(&mut writer, offset)
        };
        let end = self.latch(result)?;
        drop(writer);
        self.changed.notify(usize::MAX);
        Ok(end)
    }

    /// Removes every record and starts the log over, empty, at `offset` (which may be
    /// above or below the old log end): for a follower whose copy no longer meets its
    /// leader's log, which starts at `offset`. The old segments are deleted first, so
    /// a crash midway leaves an empty log, never a gap.
    pub fn reset_to(&self, offset: Offset) -> Result<()> {
        self.check_writable()?;
        let mut writer = self.lock_writer();
        let result = self.reset_locked(&mut writer, offset);
        self.latch(result)?;
        drop(writer);
        self.changed.notify(usize::MAX);
        Ok(())
    }

    fn reset_locked(&self, writer: &mut Writer, offset: Offset) -> Result<()> {
        self.remove_clean_marker()?;
        self.unsynced
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        for segment in self.snapshot().iter() {
            segment.delete_files()?;
        }
        checkpoint::sync_dir(&self.dir)?;
        let index_bytes = u64::from(self.config.index_bytes_max);
        let segment = Arc::new(Segment::open(&self.dir, offset, index_bytes, true)?);
        checkpoint::sync_dir(&self.dir)?;
        self.replace_segments(vec![Arc::clone(&segment)]);
        writer.active = segment;
        writer.since_index = 0;
        writer.active_opened_ms = self.clock.now_ms();
        self.log_start.store(offset.0, Ordering::Release);
        self.log_end.store(offset.0, Ordering::Release);
        // Counted once the new end is set (a waiter that reads the count and then the
        // end sees the end it belongs to) and before the durable offset moves (a
        // waiter that reads the durable offset and then the count sees the count).
        self.truncations.fetch_add(1, Ordering::AcqRel);
        self.high_watermark.store(offset.0, Ordering::Release);
        self.durable.store(offset.0, Ordering::Release);
        self.store_recovery_point(self.clock.now_ms(), offset)?;
        tracing::debug!(dir = %self.dir.display(), %offset, "log reset");
        Ok(())
    }

    fn truncate_locked(&self, writer: &mut Writer, offset: Offset) -> Result<Offset> {
        self.remove_clean_marker()?;
        let segments = self.snapshot();
        let keep = segments.partition_point(|s| s.base() <= offset).max(1);
        let index_bytes = u64::from(self.config.index_bytes_max);
        for segment in segments.iter().skip(keep) {
            segment.delete_files()?;
        }
        let mut kept: Vec<Arc<Segment>> = segments.iter().take(keep).cloned().collect();
        let last = kept
            .pop()
            .ok_or_else(|| Error::InvalidConfig("no segment".into()))?;
        let (cut, new_base) = if offset <= last.base() {
            (0, last.base())
        } else {
            match last.find(offset)? {
                Some((position, _)) => (position, last.base()),
                None => (last.size(), last.base()),
            }
        };
        last.truncate_file(cut)?;
        drop(last);
        let reopened = Arc::new(Segment::open(&self.dir, new_base, index_bytes, true)?);
        reopened.recover_from(0, new_base, self.config.index_interval_bytes)?;
        kept.push(Arc::clone(&reopened));
        checkpoint::sync_dir(&self.dir)?;
        let end = reopened.next_offset();
        let start = kept.first().map_or(end, |s| s.base());
        self.replace_segments(kept);
        writer.since_index = reopened.size().saturating_sub(
            reopened
                .last_index_entry()
                .map_or(0, |e| e.position.as_u64()),
        );
        writer.active = reopened;
        self.log_start.store(start.0, Ordering::Release);
        self.log_end.store(end.0, Ordering::Release);
        // Counted between the two, as in `reset_locked`.
        self.truncations.fetch_add(1, Ordering::AcqRel);
        self.high_watermark.fetch_min(end.0, Ordering::AcqRel);
        self.durable.fetch_min(end.0, Ordering::AcqRel);
        self.store_recovery_point(self.clock.now_ms(), self.durable_offset())?;
        Ok(end)
    }

    /// Deletes the oldest segments that the retention limits (size and age, from the
    /// configuration) no longer keep, of those wholly below the high watermark.
    ///
    /// By age the active segment goes too, once its newest record is older than
    /// `retention_ms_max` (as in Kafka): the log first rolls a new, empty active
    /// segment at the log end, then deletes the old ones. The log end stays, the log
    /// start becomes the log end, and the next append gets the offset it would have
    /// had. An empty active segment never expires. By size the active segment stays.
    ///
    /// Nothing at or above the high watermark is deleted, so the log start never
    /// passes it. A log whose caller never sets it (not replicated) has its log end
    /// as high watermark ([`Log::high_watermark`]).
    pub fn apply_retention(&self) -> Result<RetentionReport> {
        let now = self.clock.now_ms();
        let limits = retention::Limits {
            bytes_max: self.config.retention_bytes_max,
            ms_max: self.config.retention_ms_max,
        };
        // Read under the writer lock (the closure runs there): a truncation, which
        // holds it, may lower the high watermark.
        self.delete_leading(|summaries| {
            retention::expired_count(summaries, limits, now, self.high_watermark())
        })
    }

    /// Deletes the segments whose records all lie below `offset` (for a queue, what
    /// every consumer acknowledged). Never deletes the active segment.
    pub fn delete_below(&self, offset: Offset) -> Result<RetentionReport> {
        self.delete_leading(|summaries| retention::below_count(summaries, offset))
    }

    /// Deletes the oldest segments, as many as `count` answers from their summaries
    /// (under the writer lock, so no append changes them meanwhile). When that is
    /// every segment, a new active segment starts at the log end first.
    fn delete_leading(
        &self,
        count: impl FnOnce(&[SegmentSummary]) -> usize,
    ) -> Result<RetentionReport> {
        let mut writer = self.lock_writer();
        let segments = self.snapshot();
        let summaries: Vec<SegmentSummary> = segments
            .iter()
            .map(|s| SegmentSummary {
                size_bytes: s.size(),
                max_timestamp: s.max_timestamp(),
                next_offset: s.next_offset(),
            })
            .collect();
        let doomed = count(&summaries).min(segments.len());
        let mut report = RetentionReport {
            log_start_offset: self.log_start_offset(),
            ..RetentionReport::default()
        };
        if doomed == 0 {
            return Ok(report);
        }
        let rolled = doomed == segments.len();
        if rolled {
            self.roll_for_retention(&mut writer)?;
        } else {
            self.remove_clean_marker()?;
        }
        let truncations = self.truncations.load(Ordering::Acquire);
        let segments = self.snapshot();
        let (gone, kept) = segments.split_at(doomed);
        let start = kept.first().map_or(self.log_end_offset(), |s| s.base());
        self.replace_segments(kept.to_vec());
        self.log_start.store(start.0, Ordering::Release);
        drop(writer);
        if rolled {
            // The new segment's directory entry is made durable before any old file
            // goes: a crash that kept the deletions but not the creation would leave
            // no segment at all, and the log would reopen empty at offset 0 and hand
            // out old offsets again. A crash before the deletions reopens with the old
            // segments still there (the next pass deletes them).
            let synced = checkpoint::sync_dir(&self.dir);
            self.latch(synced)?;
        }
        for segment in gone {
            segment.delete_files()?;
            report.segments_deleted += 1;
            report.bytes_deleted += segment.size();
        }
        checkpoint::sync_dir(&self.dir)?;
        self.forget_unsynced(gone);
        if rolled {
            self.raise_durable_to(start, truncations);
        }
        report.log_start_offset = start;
        tracing::debug!(dir = %self.dir.display(), deleted = doomed, rolled, %start, "retention deleted segments");
        Ok(report)
    }

    /// Seals the active segment and starts a new, empty one at the log end, so that
    /// retention can delete the old one. Under the writer lock. Refused once the log
    /// failed or was closed, like an append.
    fn roll_for_retention(&self, writer: &mut Writer) -> Result<()> {
        self.check_writable()?;
        self.remove_clean_marker()?;
        let end = self.log_end_offset();
        let rolled = self.roll(writer, end);
        self.latch(rolled)
    }

    /// Drops deleted segments from those the next sync covers: their files are gone
    /// for good (the directory was synced after the deletion), so an fsync of them
    /// would only write back pages of files that no longer exist.
    fn forget_unsynced(&self, gone: &[Arc<Segment>]) {
        self.unsynced
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|s| !gone.iter().any(|g| Arc::ptr_eq(s, g)));
    }

    /// Retention deleted every record below `start` and synced the directory after
    /// the new segment at `start` was created and the old ones deleted: no record
    /// below `start` can come back after a crash, so the durable offset may say that
    /// everything below `start` is on disk. Raises it there, unless a truncation or
    /// reset since `truncations` (the count when the log start moved) changed the log.
    fn raise_durable_to(&self, start: Offset, truncations: u64) {
        let writer = self.lock_writer();
        if self.truncations.load(Ordering::Acquire) != truncations {
            return;
        }
        let previous = self.durable.fetch_max(start.0, Ordering::AcqRel);
        drop(writer);
        if previous < start.0 {
            self.changed.notify(usize::MAX);
        }
    }

    /// Fsyncs, trims the active segment's indexes and writes the clean-shutdown
    /// marker, so the next open skips the recovery scan. Appends are refused
    /// afterwards.
    pub fn close(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Ok(());
        }
        let healthy = !self.failed.load(Ordering::Acquire);
        self.flush()?;
        let writer = self.lock_writer();
        self.closed.store(true, Ordering::Release);
        // Waiters for new records stop waiting: none will come.
        self.changed.notify(usize::MAX);
        writer.active.seal()?;
        // Without the rate limit: this is the last chance, and the clean-shutdown
        // marker may not get written.
        let durable = self.durable_offset();
        if durable.0 > self.recovery_point_offset.load(Ordering::Acquire)
            && let Err(error) = self.store_recovery_point(self.clock.now_ms(), durable)
        {
            tracing::warn!(%error, "could not update the recovery point");
        }
        if healthy && !self.clean_marker.load(Ordering::Acquire) {
            self.clean_marker.store(true, Ordering::Release);
            let marker = self.dir.join(CLEAN_SHUTDOWN_FILE);
            File::create(&marker)
                .and_then(|f| f.sync_all())
                .at(&marker)?;
            checkpoint::sync_dir(&self.dir)?;
        }
        Ok(())
    }
}

/// Reads the batches at `position` of `segment`, starting with the one `first` found
/// there: at least that one, then as many whole batches as fit in `max_bytes` and end
/// below `upper`. Returns the offset after the last batch kept.
///
/// Every batch kept is checked (header, length, CRC, base offset following the batch
/// before), so no damaged byte reaches a reader. A damaged first batch is an error
/// naming the file, the position and the offset; a damaged later one ends the read
/// before it, and the next read, which starts there, reports it. A batch cut by the
/// end of the buffer is not damage: it is the next read's first batch.
fn read_batches(
    segment: &Segment,
    position: u64,
    max_bytes: usize,
    first: &BatchHeader,
    upper: Offset,
    buf: &mut Vec<u8>,
) -> Result<Offset> {
    let first_len = first.total_len();
    buf.clear();
    let got = segment.read_append(position, max_bytes.max(first_len), buf)?;
    if got < first_len {
        let reason = format!(
            "batch of {first_len} bytes extends past the end of the segment's data at byte {}",
            position + got as u64
        );
        return Err(segment.corrupt_batch(position, first.base_offset, reason));
    }
    let mut kept = 0;
    let mut expected = first.base_offset;
    let mut rest = buf.as_slice();
    while !rest.is_empty() {
        let at = position + kept as u64;
        let (batch, tail) = match BatchRef::parse(rest, false) {
            Ok(parsed) => parsed,
            Err(error) if kept == 0 => {
                return Err(segment.corrupt_batch(at, expected, error.to_string()));
            }
            Err(_) => break,
        };
        let len = batch.as_bytes().len();
        if batch.header().last_offset() >= upper || (kept > 0 && kept + len > max_bytes) {
            break;
        }
        match check_batch(&batch, expected) {
            Ok(()) => {}
            Err(reason) if kept == 0 => return Err(segment.corrupt_batch(at, expected, reason)),
            Err(_) => break,
        }
        kept += len;
        expected = batch.next_offset();
        rest = tail;
    }
    if kept == 0 {
        let reason = "the batch ends at or after the read's bound".to_owned();
        return Err(segment.corrupt_batch(position, first.base_offset, reason));
    }
    buf.truncate(kept);
    Ok(expected)
}

/// Checks what parsing a batch does not: its CRC, and that its base offset (which the
/// CRC does not cover) is `expected`, the next offset of the batch before it.
fn check_batch(batch: &BatchRef<'_>, expected: Offset) -> Result<(), String> {
    batch.verify_crc().map_err(|e| e.to_string())?;
    if batch.base_offset() != expected {
        return Err(format!(
            "base offset {} where {expected} was expected",
            batch.base_offset()
        ));
    }
    Ok(())
}

/// Lists the segment base offsets in `dir`, sorted.
pub(crate) fn list_segment_bases(dir: &Path) -> Result<Vec<Offset>> {
    let mut bases = Vec::new();
    for entry in std::fs::read_dir(dir).at(dir)? {
        let entry = entry.at(dir)?;
        if let Some(base) = entry.file_name().to_str().and_then(segment::parse_log_name) {
            bases.push(base);
        }
    }
    bases.sort();
    Ok(bases)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_for_records_that_a_truncation_cut_fails() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), LogConfig::default()).unwrap();
        log.append_records(&[Record::new("a", 0), Record::new("b", 0)])
            .unwrap();
        log.append_records(&[Record::new("c", 0)]).unwrap();
        let since = log.truncations.load(Ordering::Acquire);
        assert_eq!(log.truncate_to(Offset(2)).unwrap(), Offset(2));

        let cut = log.sync_to(Offset(3), since);
        assert!(
            matches!(
                cut,
                Err(Error::Truncated {
                    offset: Offset(3),
                    end: Offset(2)
                })
            ),
            "{cut:?}"
        );
        log.flush().unwrap();
        assert_eq!(log.durable_offset(), Offset(2));
    }

    #[test]
    fn a_crash_between_the_retention_roll_and_the_deletion_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(crate::clock::ManualClock::new(0));
        let config = LogConfig {
            retention_ms_max: Some(1000),
            ..LogConfig::default()
        };
        let open = || Log::open_with_clock(dir.path(), config.clone(), clock.clone()).unwrap();
        let log = open();
        log.append_records(&[Record::new("a", 0), Record::new("b", 0)])
            .unwrap();
        log.roll_for_retention(&mut log.lock_writer()).unwrap();
        // The process dies after the roll and before the deletion, with nothing synced
        // (a process crash keeps the page cache).
        drop(log);

        let log = open();
        assert_eq!(log.segment_count(), 2);
        assert_eq!(log.log_start_offset(), Offset(0));
        assert_eq!(log.log_end_offset(), Offset(2));
        let read = log.read(Offset(0), 1 << 20, ReadBound::LogEnd).unwrap();
        assert_eq!(read.records().count(), 2);

        clock.advance(1001);
        let report = log.apply_retention().unwrap();
        assert_eq!(report.segments_deleted, 1, "the empty active segment stays");
        assert_eq!(log.log_start_offset(), Offset(2));
        assert_eq!(log.log_end_offset(), Offset(2));
        let next = log.append_records(&[Record::new("c", 0)]).unwrap();
        assert_eq!(next.base_offset, Offset(2));
    }

    #[test]
    fn retention_leaves_no_deleted_segment_for_the_next_sync() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(crate::clock::ManualClock::new(0));
        let config = LogConfig {
            retention_ms_max: Some(1000),
            ..LogConfig::default()
        };
        let log = Log::open_with_clock(dir.path(), config, clock.clone()).unwrap();
        log.append_records(&[Record::new("a", 0)]).unwrap();
        log.set_high_watermark(log.log_end_offset());
        clock.advance(1001);
        assert_eq!(log.apply_retention().unwrap().segments_deleted, 1);
        assert!(
            log.unsynced.lock().unwrap().is_empty(),
            "the old active segment is gone, not waiting for an fsync"
        );
        let before = log.fsync_count();
        log.flush().unwrap();
        assert_eq!(log.fsync_count(), before, "nothing left to sync");
        assert_eq!(log.durable_offset(), Offset(1));
    }

    #[test]
    fn waiting_across_a_reset_past_the_records_fails() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), LogConfig::default()).unwrap();
        log.append_records(&[Record::new("a", 0)]).unwrap();
        let since = log.truncations.load(Ordering::Acquire);
        log.reset_to(Offset(50)).unwrap();
        assert_eq!(log.durable_offset(), Offset(50));

        let gone = log.sync_to(Offset(1), since);
        assert!(matches!(gone, Err(Error::Truncated { .. })), "{gone:?}");
    }
}
