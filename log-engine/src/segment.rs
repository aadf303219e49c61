//! A segment: one `.log` file of batches with its `.index` and `.timeindex`.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::batch::{BatchHeader, BatchRef, HEADER_LEN};
use crate::error::{Error, IoContext, Result};
use crate::index::{IndexEntry, OffsetIndex, TimeEntry, TimeIndex};
use crate::offset::{FilePosition, Offset, TimestampMs};

/// How much a scan reads from the file at once.
const SCAN_CHUNK_BYTES: usize = 1 << 20;

/// The file name of a segment's log, index or time index: its base offset in 20
/// digits, so names sort like offsets.
pub(crate) fn file_name(base: Offset, extension: &str) -> String {
    format!("{:020}.{extension}", base.0)
}

/// Parses a `.log` file name back into its base offset.
pub(crate) fn parse_log_name(name: &str) -> Option<Offset> {
    let digits = name.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().map(Offset)
}

/// One segment. Appends come from the log's single writer; reads come from any
/// thread and see only whole batches below `size`.
#[derive(Debug)]
pub(crate) struct Segment {
    base: Offset,
    log_path: PathBuf,
    file: File,
    index: OffsetIndex,
    time_index: TimeIndex,
    /// Bytes of whole batches in the file. The writer stores it after the bytes are
    /// written, so a reader never reads a batch in the making.
    size: AtomicU64,
    /// The offset after the last record.
    next_offset: AtomicU64,
    /// The largest record timestamp, `i64::MIN` while empty.
    max_timestamp: AtomicI64,
    /// The end of the file's space reserved ahead of its size (only the writer
    /// touches it); `u64::MAX` once the file system refused.
    preallocated: AtomicU64,
    /// The end of the zeros written ahead of the batches (only the writer touches
    /// it): the file's length as the writer left it. At open, the end of the zeros
    /// recovery found after the batches, or 0.
    prefilled: AtomicU64,
    /// Bytes from the start known to be on disk: the size before the last fsync.
    /// Only the cache window reads it: a sync that ran across a truncation may leave
    /// it past the cut, which at worst names dirty pages the kernel then keeps.
    synced: AtomicU64,
    /// Bytes from the start the page cache was asked to drop (see
    /// [`Segment::drop_cache_below`]).
    cache_dropped: AtomicU64,
}

/// The least and the most space an active segment reserves ahead of its end at a
/// time: as much as it holds already, within these bounds, so that a log with
/// little traffic reserves little.
const PREALLOCATE_MIN: u64 = 64 * 1024;
const PREALLOCATE_MAX: u64 = 4 * 1024 * 1024;

/// An active segment writes zeros ahead of its end once it holds `PREFILL_FROM`
/// bytes (a log with little traffic writes none), as much as it holds and at most
/// `PREFILL_MAX` at a time: within the space it reserves, and small enough that
/// each stretch of zeros is one large write. Stretches end on `PREFILL_ALIGN`.
const PREFILL_FROM: u64 = 64 * 1024;
const PREFILL_MAX: u64 = 256 * 1024;
const PREFILL_ALIGN: u64 = 16 * 1024;

/// What the zeros written ahead come from: `PREFILL_MAX` and a batch's worth of
/// room. A zeroed static costs no memory until read, and reading it maps the
/// system's shared zero page.
static ZEROS: [u8; 2 * PREFILL_MAX as usize] = [0; 2 * PREFILL_MAX as usize];

/// The longest all-zero tail that recovery takes for room written ahead rather
/// than for damage.
const ZERO_TAIL_MAX: u64 = 4 * 1024 * 1024;

/// The page size the cache is dropped in (4 KiB on the usual systems; a larger
/// page only leaves a page more in the cache).
const PAGE_BYTES: u64 = 4096;

/// Where a scan of a segment's batches stopped.
#[derive(Debug)]
pub(crate) struct ScanOutcome {
    /// The position after the last good batch.
    pub(crate) valid_size: u64,
    /// What was wrong at `valid_size`, if the file goes on past it with anything
    /// but zeros.
    pub(crate) damage: Option<String>,
    /// The file goes on past `valid_size` with zeros only: room written ahead of
    /// the batches ([`Segment::append`]), which the active segment keeps for its
    /// appends and a sealed one cuts, without a warning.
    pub(crate) zero_tail: bool,
}

impl Segment {
    /// Opens (or creates) the segment's files. An active segment's indexes are mapped
    /// with `index_bytes` of room; a sealed one's at their size. The size and next
    /// offset are not known until [`Segment::recover`] runs.
    pub(crate) fn open(
        dir: &Path,
        base: Offset,
        index_bytes: u64,
        active: bool,
    ) -> Result<Segment> {
        let log_path = dir.join(file_name(base, "log"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&log_path)
            .at(&log_path)?;
        let capacity = if active { index_bytes } else { 0 };
        let index = OffsetIndex::open(&dir.join(file_name(base, "index")), capacity)?;
        let time_capacity = if active { index_bytes * 2 } else { 0 };
        let time_index = TimeIndex::open(&dir.join(file_name(base, "timeindex")), time_capacity)?;
        Ok(Segment {
            base,
            log_path,
            file,
            index,
            time_index,
            size: AtomicU64::new(0),
            next_offset: AtomicU64::new(base.0),
            max_timestamp: AtomicI64::new(i64::MIN),
            preallocated: AtomicU64::new(0),
            prefilled: AtomicU64::new(0),
            synced: AtomicU64::new(0),
            cache_dropped: AtomicU64::new(0),
        })
    }

    pub(crate) fn base(&self) -> Offset {
        self.base
    }

    pub(crate) fn path(&self) -> &Path {
        &self.log_path
    }

    pub(crate) fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    pub(crate) fn next_offset(&self) -> Offset {
        Offset(self.next_offset.load(Ordering::Acquire))
    }

    /// The largest record timestamp, `None` while the segment is empty.
    pub(crate) fn max_timestamp(&self) -> Option<TimestampMs> {
        let ts = self.max_timestamp.load(Ordering::Acquire);
        (ts != i64::MIN || self.size() > 0).then_some(ts)
    }

    pub(crate) fn index_full(&self) -> bool {
        self.index.is_full() || self.time_index.is_full()
    }

    /// Writes a batch at the end. Only the log's writer calls this. Adds index entries
    /// when `index_due`.
    pub(crate) fn append(&self, bytes: &[u8], header: &BatchHeader, index_due: bool) -> Result<()> {
        let position = self.size.load(Ordering::Relaxed);
        let end = position + bytes.len() as u64;
        self.reserve(position, end);
        self.prefill(position, end);
        self.file.write_all_at(bytes, position).at(&self.log_path)?;
        let max_ts = self
            .max_timestamp
            .load(Ordering::Relaxed)
            .max(header.max_timestamp);
        if index_due && position > 0 {
            self.add_index_entries(header.base_offset, position, max_ts);
        }
        self.max_timestamp.store(max_ts, Ordering::Release);
        self.next_offset
            .store(header.next_offset().0, Ordering::Release);
        self.size
            .store(position + bytes.len() as u64, Ordering::Release);
        Ok(())
    }

    /// Reserves disk space ahead of the end before a write to `[position, end)`
    /// needs it, keeping the file's size (`FALLOC_FL_KEEP_SIZE`): a buffered write
    /// into reserved blocks skips the file system's delayed allocation, about a
    /// quarter of its cost here (docs/performance.md). Best effort: where the file
    /// system cannot, the write allocates as usual.
    fn reserve(&self, position: u64, end: u64) {
        let reserved = self.preallocated.load(Ordering::Relaxed);
        if end <= reserved {
            return;
        }
        let ahead = position.clamp(PREALLOCATE_MIN, PREALLOCATE_MAX);
        let from = reserved.max(position);
        let until = end + ahead;
        if preallocate(&self.file, from, until - from) {
            self.preallocated.store(until, Ordering::Relaxed);
        } else {
            self.preallocated.store(u64::MAX, Ordering::Relaxed);
        }
    }

    /// Writes zeros ahead of the end before a write to `[position, end)` reaches
    /// past the last ones, as much as the segment holds and at most `PREFILL_MAX`
    /// beyond `end`, once it holds `PREFILL_FROM`. One large write lets the page
    /// cache hold the coming bytes in large pages, which later appends only copy
    /// into: an append of 11 KiB then costs the kernel about half of what it costs
    /// when it makes its own pages (docs/performance.md). The file grows past its
    /// batches by at most `PREFILL_MAX`: sealing and closing cut it back, and
    /// recovery takes an all-zero tail for this room, not for damage. Best effort,
    /// like the reserve: a failed write of zeros only leaves the appends to make
    /// their own pages.
    fn prefill(&self, position: u64, end: u64) {
        let filled = self.prefilled.load(Ordering::Relaxed);
        if end <= filled || position < PREFILL_FROM {
            return;
        }
        let ahead = position.min(PREFILL_MAX);
        let until = ((end + ahead) & !(PREFILL_ALIGN - 1)).max(end);
        // A batch larger than the zeros is one large write of its own: the zeros
        // then cover its end and the room after it.
        let from = filled
            .max(position)
            .max(until.saturating_sub(ZEROS.len() as u64));
        let zeros = ZEROS.get(..(until - from) as usize).unwrap_or_default();
        if let Err(error) = self.file.write_all_at(zeros, from) {
            tracing::debug!(path = %self.log_path.display(), %error, "cannot write zeros ahead of the end");
        }
        // Stored even after a failure: the file may have grown, and the seal cuts it.
        self.prefilled.store(until, Ordering::Relaxed);
    }

    fn add_index_entries(&self, base_offset: Offset, position: u64, max_ts: TimestampMs) {
        let (Some(relative_offset), Ok(position)) =
            (base_offset.relative_to(self.base), u32::try_from(position))
        else {
            return;
        };
        self.index.push(IndexEntry {
            relative_offset,
            position: FilePosition(position),
        });
        self.time_index.push(TimeEntry {
            timestamp: max_ts,
            relative_offset,
        });
    }

    /// Reads up to `buf.len()` bytes at `position`, never past the whole batches;
    /// returns how many bytes were read.
    pub(crate) fn read_at(&self, position: u64, buf: &mut [u8]) -> Result<usize> {
        let size = self.size();
        let want = (size.saturating_sub(position) as usize).min(buf.len());
        self.pread_full(buf.get_mut(..want).unwrap_or_default(), position)
    }

    /// Fills `buf` from the file at `position`, stopping early only at the file's
    /// end; returns how many bytes were read.
    fn pread_full(&self, buf: &mut [u8], position: u64) -> Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            let rest = buf.get_mut(done..).unwrap_or_default();
            match self.file.read_at(rest, position + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io(&self.log_path, e)),
            }
        }
        Ok(done)
    }

    /// Reads and checks the batch header at `position`, which must be the batch whose
    /// base offset is `expected` (the next offset of the batch before it).
    pub(crate) fn header_at(&self, position: u64, expected: Offset) -> Result<BatchHeader> {
        let mut head = [0u8; HEADER_LEN];
        let n = self.read_at(position, &mut head)?;
        if n < HEADER_LEN {
            let reason = "batch header cut short by the end of the segment".to_owned();
            return Err(self.corrupt_batch(position, expected, reason));
        }
        let header = BatchHeader::parse(&head)
            .map_err(|e| self.corrupt_batch(position, expected, e.to_string()))?;
        if header.base_offset != expected {
            let reason = format!(
                "base offset {} where {expected} was expected",
                header.base_offset
            );
            return Err(self.corrupt_batch(position, expected, reason));
        }
        Ok(header)
    }

    /// The error for a damaged batch at `position` that should start at `offset`.
    pub(crate) fn corrupt_batch(&self, position: u64, offset: Offset, reason: String) -> Error {
        Error::CorruptBatch {
            path: self.log_path.clone(),
            position,
            offset,
            reason,
        }
    }

    /// The position of the batch that holds `offset`, with its header; `None` when the
    /// segment ends before `offset`. Walks the headers from the indexed batch at or
    /// before `offset`, checking that each one's base offset follows the batch before.
    pub(crate) fn find(&self, offset: Offset) -> Result<Option<(u64, BatchHeader)>> {
        if offset >= self.next_offset() {
            return Ok(None);
        }
        let (mut position, hint) = self.scan_start(offset);
        let mut expected = hint.unwrap_or(self.base);
        // The index entry is only a hint: if its batch is not there, walk from the
        // start of the file instead.
        let mut hinted = hint.is_some();
        let mut previous = None;
        let size = self.size();
        while position < size {
            let header = match self.header_at(position, expected) {
                Ok(header) => header,
                Err(_) if hinted => {
                    (position, expected, hinted) = (0, self.base, false);
                    continue;
                }
                Err(error) => return Err(reached_from(error, previous)),
            };
            hinted = false;
            if header.last_offset() >= offset {
                return Ok(Some((position, header)));
            }
            previous = Some(position);
            expected = header.next_offset();
            position += header.total_len() as u64;
        }
        Ok(None)
    }

    /// Where a forward scan for `offset` can start: the indexed batch at or before it
    /// (with the base offset the batch there must have), or the start of the file.
    fn scan_start(&self, offset: Offset) -> (u64, Option<Offset>) {
        let entry = offset
            .relative_to(self.base)
            .and_then(|relative| self.index.lookup(relative));
        match entry {
            Some(e) => (
                e.position.as_u64(),
                Some(e.relative_offset.absolute(self.base)),
            ),
            None => (0, None),
        }
    }

    /// Appends up to `len` bytes read at `position` (never past the whole batches) to
    /// `buf`, without zeroing them first; returns how many were read.
    pub(crate) fn read_append(
        &self,
        position: u64,
        len: usize,
        buf: &mut Vec<u8>,
    ) -> Result<usize> {
        use std::os::fd::AsRawFd;
        let size = self.size();
        let want = (size.saturating_sub(position) as usize).min(len);
        buf.reserve(want);
        let mut done = 0;
        while done < want {
            let spare = buf.spare_capacity_mut();
            let room = (want - done).min(spare.len());
            // SAFETY: the pointer and length describe the vector's spare capacity,
            // which pread only writes to; no reference to uninitialised bytes is made,
            // and the length is raised by exactly the bytes the kernel wrote.
            let n = unsafe {
                libc::pread(
                    self.file.as_raw_fd(),
                    spare.as_mut_ptr().cast::<libc::c_void>(),
                    room,
                    (position + done as u64) as libc::off_t,
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(Error::io(&self.log_path, e));
            }
            if n == 0 {
                break;
            }
            // SAFETY: pread initialised `n <= room` bytes right after the current end.
            unsafe { buf.set_len(buf.len() + n as usize) };
            done += n as usize;
        }
        Ok(done)
    }

    /// The first offset at or after which records have `timestamp >= target`
    /// according to batch maxima, with the batch position; `None` if no batch does.
    pub(crate) fn find_by_time(&self, target: TimestampMs) -> Result<Option<(u64, BatchHeader)>> {
        if self.max_timestamp().is_none_or(|max| max < target) {
            return Ok(None);
        }
        let start = match self.time_index.last_before(target) {
            Some(entry) => self.find(entry.relative_offset.absolute(self.base))?,
            None => self.find(self.base)?,
        };
        let Some((mut position, first)) = start else {
            return Ok(None);
        };
        let mut expected = first.base_offset;
        let mut previous = None;
        let size = self.size();
        while position < size {
            let header = self
                .header_at(position, expected)
                .map_err(|e| reached_from(e, previous))?;
            if header.max_timestamp >= target {
                return Ok(Some((position, header)));
            }
            previous = Some(position);
            expected = header.next_offset();
            position += header.total_len() as u64;
        }
        Ok(None)
    }

    /// Scans the batches from `start` to the end of the file, checking each one's
    /// header, CRC and offset continuity, and sets the segment's size, next offset and
    /// maximum timestamp from what is valid. Index entries at or past `start` are
    /// rebuilt. `start` must be 0 or the position of an indexed batch whose base
    /// offset is `start_offset`.
    pub(crate) fn recover_from(
        &self,
        start: u64,
        start_offset: Offset,
        index_interval_bytes: u32,
    ) -> Result<ScanOutcome> {
        let file_len = self.file.metadata().at(&self.log_path)?.len();
        // Entries after the scan start are rebuilt; the entry at the start (if any)
        // was checked by `recovery_start` and stays.
        let keep_below = FilePosition((start + 1).min(u64::from(u32::MAX)) as u32);
        self.index.truncate_to_position(keep_below);
        if let Some(relative) = start_offset.relative_to(self.base) {
            self.time_index
                .truncate_to_offset(crate::offset::RelativeOffset(relative.0.saturating_add(1)));
        }
        let mut max_ts = self.time_index.last().map_or(i64::MIN, |e| e.timestamp);
        if start == 0 {
            max_ts = i64::MIN;
        }
        let mut next = start_offset;
        let mut position = start;
        let mut since_index = 0u64;
        let mut buf = Vec::new();
        let mut buf_start = 0u64;
        let damage = loop {
            if position >= file_len {
                break None;
            }
            let available = file_len - position;
            let need = (HEADER_LEN as u64).min(available);
            let header_bytes =
                match self.window(&mut buf, &mut buf_start, position, need as usize, available)? {
                    Some(bytes) if bytes.len() >= HEADER_LEN => bytes,
                    _ => break Some("torn batch header at the end of the file".to_owned()),
                };
            let header = match BatchHeader::parse(header_bytes) {
                Ok(h) => h,
                Err(e) => break Some(e.to_string()),
            };
            if header.base_offset != next {
                break Some(format!(
                    "batch base offset {} where {} was expected",
                    header.base_offset, next
                ));
            }
            let total = header.total_len() as u64;
            if total > available {
                break Some("torn batch: it extends past the end of the file".to_owned());
            }
            let bytes = match self.window(
                &mut buf,
                &mut buf_start,
                position,
                total as usize,
                available,
            )? {
                Some(bytes) => bytes,
                None => break Some("torn batch".to_owned()),
            };
            if let Err(e) = BatchRef::parse(bytes, true) {
                break Some(e.to_string());
            }
            max_ts = max_ts.max(header.max_timestamp);
            if since_index >= u64::from(index_interval_bytes) && position > 0 {
                self.add_index_entries(header.base_offset, position, max_ts);
                since_index = 0;
            }
            since_index += total;
            position += total;
            next = header.next_offset();
        };
        let zero_tail = damage.is_some() && self.is_zero_tail(position, file_len)?;
        if zero_tail {
            // Room an append wrote ahead: appends can write into it as into their
            // own, and a seal cuts it (or a caller cuts it now).
            self.prefilled.store(file_len, Ordering::Relaxed);
        }
        self.max_timestamp.store(max_ts, Ordering::Release);
        self.next_offset.store(next.0, Ordering::Release);
        self.size.store(position, Ordering::Release);
        Ok(ScanOutcome {
            valid_size: position,
            damage: damage.filter(|_| !zero_tail),
            zero_tail,
        })
    }

    /// Whether the file holds only zeros from `position` to `file_len`, at most
    /// `ZERO_TAIL_MAX` of them: the room an append wrote ahead (see
    /// [`Segment::prefill`]).
    fn is_zero_tail(&self, position: u64, file_len: u64) -> Result<bool> {
        let len = file_len.saturating_sub(position);
        if len == 0 || len > ZERO_TAIL_MAX {
            return Ok(false);
        }
        let mut buf = vec![0u8; (len as usize).min(SCAN_CHUNK_BYTES)];
        let mut at = position;
        while at < file_len {
            let want = ((file_len - at) as usize).min(buf.len());
            let chunk = buf.get_mut(..want).unwrap_or_default();
            let n = self.pread_full(chunk, at)?;
            let read = chunk.get(..n).unwrap_or_default();
            if n == 0 || read.iter().any(|&b| b != 0) {
                return Ok(false);
            }
            at += n as u64;
        }
        Ok(true)
    }

    /// Makes `[position, position + len)` of the file available in `buf` (reading a
    /// chunk of at most `available` bytes when it is not), and returns it; `None` when
    /// the file is shorter.
    fn window<'b>(
        &self,
        buf: &'b mut Vec<u8>,
        buf_start: &mut u64,
        position: u64,
        len: usize,
        available: u64,
    ) -> Result<Option<&'b [u8]>> {
        let have = position >= *buf_start && position + len as u64 <= *buf_start + buf.len() as u64;
        if !have {
            buf.clear();
            let chunk = (SCAN_CHUNK_BYTES as u64).min(available) as usize;
            buf.resize(len.max(chunk), 0);
            let done = self.pread_full(buf, position)?;
            buf.truncate(done);
            *buf_start = position;
        }
        let from = (position - *buf_start) as usize;
        Ok(buf.get(from..from + len))
    }

    /// The start of the scan that recovers this segment: the last index entry whose
    /// batch is at most `trusted_below` (everything before it was fsynced) and whose
    /// header matches; position 0 when there is none.
    pub(crate) fn recovery_start(&self, trusted_below: Offset) -> (u64, Offset) {
        let Some(delta) = trusted_below.0.checked_sub(self.base.0) else {
            return (0, self.base);
        };
        let relative = crate::offset::RelativeOffset(delta.min(u64::from(u32::MAX)) as u32);
        let Some(entry) = self.index.lookup(relative) else {
            return (0, self.base);
        };
        let position = entry.position.as_u64();
        let offset = entry.relative_offset.absolute(self.base);
        let file_len = self.file.metadata().map_or(0, |m| m.len());
        if position >= file_len {
            return (0, self.base);
        }
        let mut head = [0u8; HEADER_LEN];
        let matches = self.file.read_exact_at(&mut head, position).is_ok()
            && BatchHeader::parse(&head).is_ok_and(|h| h.base_offset == offset);
        if matches {
            (position, offset)
        } else {
            (0, self.base)
        }
    }

    /// Cuts the file at `size` (the end of the last good batch) and syncs it.
    pub(crate) fn truncate_file(&self, size: u64) -> Result<()> {
        self.cut_file(size)?;
        self.file.sync_all().at(&self.log_path)
    }

    /// Cuts the file at `size` without syncing it: for zeros after the batches,
    /// which the next recovery would cut again if this cut were lost.
    pub(crate) fn cut_file(&self, size: u64) -> Result<()> {
        // Appends rewrite the positions past the cut: they are neither on disk nor
        // dropped from the cache.
        self.synced.fetch_min(size, Ordering::AcqRel);
        self.cache_dropped.fetch_min(size, Ordering::AcqRel);
        self.prefilled.fetch_min(size, Ordering::Relaxed);
        self.file.set_len(size).at(&self.log_path)?;
        self.index
            .truncate_to_position(FilePosition(size.min(u64::from(u32::MAX)) as u32));
        if let Some(relative) = self.next_offset().relative_to(self.base) {
            self.time_index.truncate_to_offset(relative);
        }
        Ok(())
    }

    /// Syncs the log file's data to disk.
    pub(crate) fn sync(&self) -> Result<()> {
        // Every batch below the size was written before the size was stored, so
        // the fsync covers it.
        let size = self.size();
        self.file.sync_data().at(&self.log_path)?;
        self.synced.fetch_max(size, Ordering::AcqRel);
        Ok(())
    }

    /// Bytes from the start known to be on disk.
    pub(crate) fn synced(&self) -> u64 {
        self.synced.load(Ordering::Acquire)
    }

    /// Treats what the segment holds now as on disk and its cached pages as not
    /// this process's to drop: for segments found on disk when the log opens.
    pub(crate) fn adopt(&self) {
        let size = self.size();
        self.synced.fetch_max(size, Ordering::AcqRel);
        self.cache_dropped.fetch_max(size, Ordering::AcqRel);
    }

    /// Bytes from the start the page cache was asked to drop.
    pub(crate) fn cache_dropped(&self) -> u64 {
        self.cache_dropped.load(Ordering::Acquire)
    }

    /// Asks the kernel to drop the cached pages of the bytes below `end` that are on
    /// disk (`POSIX_FADV_DONTNEED`; dirty pages would stay, so only synced bytes
    /// are named), from where the last call stopped. Best effort: the data stays in
    /// the file whatever the kernel does, and a reader of it reads it back in.
    pub(crate) fn drop_cache_below(&self, end: u64) {
        let end = end.min(self.synced());
        let from = self.cache_dropped.fetch_max(end, Ordering::AcqRel);
        if end > from {
            // The kernel drops whole pages only: starting at the page of `from` takes
            // the one the last call had to leave, half of it then still to come.
            let start = from & !(PAGE_BYTES - 1);
            drop_cached(&self.file, start, end - start);
        }
    }

    /// Shrinks the indexes to their entries: the segment is no longer active. The
    /// data is not synced here: the log's next sync covers sealed segments too.
    pub(crate) fn seal(&self) -> Result<()> {
        self.release_reserve();
        self.index.trim()?;
        self.time_index.trim()
    }

    /// Gives back the space reserved past the end and cuts the zeros written
    /// ahead (cutting a file at its own size frees the blocks beyond it). Best
    /// effort, like the reserve: a failure leaves at most one reserve unused until
    /// the segment is deleted, and zeros that recovery cuts, and must not stop the
    /// log the way a failed write does.
    fn release_reserve(&self) {
        let reserved = self.preallocated.swap(0, Ordering::Relaxed);
        let prefilled = self.prefilled.swap(0, Ordering::Relaxed);
        let size = self.size();
        if ((reserved > size && reserved != u64::MAX) || prefilled > size)
            && let Err(error) = self.file.set_len(size)
        {
            tracing::warn!(
                path = %self.log_path.display(),
                %error,
                "cannot give back the space reserved past a sealed segment"
            );
        }
    }

    /// Deletes the segment's three files. Readers that still hold the segment keep
    /// reading through their open handle and mapping until they drop it.
    pub(crate) fn delete_files(&self) -> Result<()> {
        for extension in ["index", "timeindex", "log"] {
            let path = self.log_path.with_extension(extension);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(&path, e)),
            }
        }
        Ok(())
    }

    /// The index, for recovery's consistency checks.
    pub(crate) fn last_index_entry(&self) -> Option<IndexEntry> {
        self.index.last()
    }
}

/// Adds to a damaged header's error the batch a walk came from: its length field,
/// which the CRC does not cover, may be what is damaged.
fn reached_from(mut error: Error, previous: Option<u64>) -> Error {
    if let (Error::CorruptBatch { reason, .. }, Some(previous)) = (&mut error, previous) {
        reason.push_str(&format!(
            " (reached by the length of the batch at byte {previous})"
        ));
    }
    error
}

/// Reserves `len` bytes of `file` from `offset` without changing its size; false
/// when the file system cannot.
#[cfg(target_os = "linux")]
fn preallocate(file: &File, offset: u64, len: u64) -> bool {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
        return false;
    };
    // SAFETY: fallocate reads no memory of ours; the descriptor is open for as long
    // as `file` is borrowed.
    let result =
        unsafe { libc::fallocate(file.as_raw_fd(), libc::FALLOC_FL_KEEP_SIZE, offset, len) };
    result == 0
}

/// Asks the kernel to drop the cached pages of `len` bytes of `file` from
/// `offset`.
#[cfg(target_os = "linux")]
fn drop_cached(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
        return;
    };
    // SAFETY: posix_fadvise reads no memory of ours; the descriptor is open for as
    // long as `file` is borrowed.
    let result =
        unsafe { libc::posix_fadvise(file.as_raw_fd(), offset, len, libc::POSIX_FADV_DONTNEED) };
    if result != 0 {
        tracing::debug!(error = result, "posix_fadvise(DONTNEED) failed");
    }
}

#[cfg(not(target_os = "linux"))]
fn drop_cached(_file: &File, _offset: u64, _len: u64) {}

#[cfg(not(target_os = "linux"))]
fn preallocate(_file: &File, _offset: u64, _len: u64) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(file_name(Offset(42), "log"), "00000000000000000042.log");
        assert_eq!(parse_log_name("00000000000000000042.log"), Some(Offset(42)));
        assert_eq!(parse_log_name("42.log"), None);
        assert_eq!(parse_log_name("0000000000000000004x.log"), None);
        assert_eq!(parse_log_name("00000000000000000042.index"), None);
    }
}
