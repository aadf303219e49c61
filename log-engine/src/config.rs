//! The configuration of one log, with every default documented.

use crate::error::{Error, Result};

/// When the log calls `fdatasync` on its own. Whatever the policy, appenders that ask
/// for durability ([`crate::Log::append_durable`], [`crate::Log::flush`]) share one
/// fsync among all of them that wait at the same time (group commit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlushPolicy {
    /// Sync once this many messages were appended since the last sync. `Some(1)`
    /// syncs every append before it returns.
    pub messages_max: Option<u64>,
    /// Sync on an append when the last sync is older than this. The log owns no
    /// thread: a caller that needs the interval honoured while no appends arrive calls
    /// [`crate::Log::flush_if_due`] from its own timer.
    pub interval_ms: Option<u64>,
}

impl FlushPolicy {
    /// Every append is fsynced before it returns.
    pub const ALWAYS: FlushPolicy = FlushPolicy {
        messages_max: Some(1),
        interval_ms: None,
    };
    /// The log never syncs on its own; the caller decides (`flush`, `append_durable`).
    pub const MANUAL: FlushPolicy = FlushPolicy {
        messages_max: None,
        interval_ms: None,
    };

    /// Sync after every `messages` messages.
    pub fn every_messages(messages: u64) -> FlushPolicy {
        FlushPolicy {
            messages_max: Some(messages),
            interval_ms: None,
        }
    }

    /// Sync when the last sync is older than `interval_ms`.
    pub fn every_ms(interval_ms: u64) -> FlushPolicy {
        FlushPolicy {
            messages_max: None,
            interval_ms: Some(interval_ms),
        }
    }
}

impl Default for FlushPolicy {
    /// Defaults to [`FlushPolicy::MANUAL`]: durability is asked for per append.
    fn default() -> Self {
        FlushPolicy::MANUAL
    }
}

/// The configuration of a [`crate::Log`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// A segment rolls once its `.log` file reaches this size. Defaults to 1 GiB;
    /// at most 2 GiB, so file positions fit the index's 32 bits with room to spare.
    pub segment_bytes_max: u64,
    /// A segment rolls on the first append after it has been open this long.
    /// Defaults to 7 days.
    pub segment_age_ms_max: u64,
    /// The offset and time indexes get one entry per this many bytes of log.
    /// Defaults to 4 KiB.
    pub index_interval_bytes: u32,
    /// The size preallocated for each index file; a segment rolls when its index is
    /// full. Defaults to 10 MiB (about 1.3 M entries).
    pub index_bytes_max: u32,
    /// The largest batch the log accepts. Defaults to 8 MiB.
    pub batch_bytes_max: u32,
    /// When the log syncs on its own. Defaults to [`FlushPolicy::MANUAL`].
    pub flush: FlushPolicy,
    /// Retention deletes the oldest segments while the log is larger than this.
    /// Defaults to none (no size limit).
    pub retention_bytes_max: Option<u64>,
    /// Retention deletes segments whose newest record is older than this.
    /// Defaults to 7 days.
    pub retention_ms_max: Option<u64>,
    /// Keep the directory locked while the log is open, so a second handle or
    /// process is refused. Costs one file descriptor per log; an embedder that locks
    /// a parent directory itself (the broker locks its data directory) turns it off.
    /// Defaults to true.
    pub lock_directory: bool,
    /// Once data is fsynced, the log asks the kernel to drop it from the page cache
    /// except for the newest this many bytes of the log, which readers near the end
    /// still find in memory; older reads go to the disk. A log written fast then
    /// recycles a bounded set of cached pages instead of growing the cache into
    /// memory it has not touched. Defaults to none: the kernel decides, as it does
    /// for any file.
    pub cache_window_bytes: Option<u64>,
}

/// 1 GiB.
const SEGMENT_BYTES_DEFAULT: u64 = 1 << 30;
/// Positions are u32 and a batch may be up to `batch_bytes_max` past the roll
/// threshold, so segments stay well under 4 GiB.
const SEGMENT_BYTES_LIMIT: u64 = 2 << 30;
const WEEK_MS: u64 = 7 * 24 * 60 * 60 * 1000;

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes_max: SEGMENT_BYTES_DEFAULT,
            segment_age_ms_max: WEEK_MS,
            index_interval_bytes: 4096,
            index_bytes_max: 10 << 20,
            batch_bytes_max: 8 << 20,
            flush: FlushPolicy::default(),
            retention_bytes_max: None,
            retention_ms_max: Some(WEEK_MS),
            lock_directory: true,
            cache_window_bytes: None,
        }
    }
}

impl LogConfig {
    /// Checks the values and the relations between them.
    pub fn validate(&self) -> Result<()> {
        let fail = |msg: &str| Err(Error::InvalidConfig(msg.to_owned()));
        if self.segment_bytes_max == 0 || self.segment_bytes_max > SEGMENT_BYTES_LIMIT {
            return fail("segment_bytes_max must be between 1 byte and 2 GiB");
        }
        if self.index_bytes_max < 8 * 4 {
            return fail("index_bytes_max must hold at least 4 entries (32 bytes)");
        }
        if self.index_interval_bytes == 0 {
            return fail("index_interval_bytes must be positive");
        }
        if self.batch_bytes_max < 64 || self.batch_bytes_max > (1 << 30) {
            return fail("batch_bytes_max must be between 64 bytes and 1 GiB");
        }
        if self.flush.messages_max == Some(0) {
            return fail("flush.messages_max must be positive");
        }
        if self.segment_age_ms_max == 0 {
            return fail("segment_age_ms_max must be positive");
        }
        Ok(())
    }
}
