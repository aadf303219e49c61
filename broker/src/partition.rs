//! A partition: one log-engine log, and what the broker needs around it. In a cluster
//! a partition also knows whether this node leads it; standalone, it always does.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use log_engine::{AppendInfo, FlushPolicy, Log, LogConfig, Offset, ReadBound, RecordBatch};

use crate::cluster::replica::Replica;
use crate::config::Durability;
use crate::error::{ApiError, BrokerError, ErrorCode};
use crate::topic::Acks;

/// How long an `acks=all` append waits for the in-sync replicas.
pub const REPLICATION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// The fewest bytes one read of a partition asks for.
const READ_BYTES_MIN: usize = 16 << 10;
/// The most bytes one read of a partition asks for.
const READ_BYTES_MAX: usize = 4 << 20;
/// Bytes read per message wanted while the log holds none to measure.
const READ_BYTES_PER_MESSAGE_UNKNOWN: usize = 512;
/// The shortest age at which a partition's active segment rolls: a short retention
/// rolls a busy partition at most once a second, not on every append.
const SEGMENT_AGE_MS_MIN: u64 = 1000;

/// The age at which a partition's active segment rolls (on its next append): the
/// retention by age, at least [`SEGMENT_AGE_MS_MIN`] and at most the log's default
/// (7 days). Retention deletes whole segments, and the active segment only once its
/// newest record expired; a partition that gets a message now and then would keep
/// its oldest ones as long as the segment stays active. Rolled this often, no
/// record outlives its retention by more than about the retention again.
fn segment_age_ms(retention_ms: Option<u64>) -> u64 {
    let default = LogConfig::default().segment_age_ms_max;
    retention_ms.map_or(default, |ms| ms.clamp(SEGMENT_AGE_MS_MIN, default))
}

/// One partition of a topic or queue.
#[derive(Debug)]
pub struct Partition {
    /// Its number in the topic or queue, from 0.
    pub id: u32,
    /// The log; shared with readers (subscriptions, queue consumers).
    pub log: Arc<Log>,
    /// When appends are answered.
    pub durability: Durability,
    /// Its part in replication: leader, follower or standalone.
    pub replica: Replica,
    /// Raised after appends that the flusher must fsync.
    pub flush_hint: Arc<FlushHint>,
    /// What this node appended as leader since the partition was opened; the
    /// metrics read it.
    pub appended: AppendedCounts,
    /// Durable appends under way (see [`Partition::append`]).
    durable_in_flight: Arc<AtomicUsize>,
}

/// Whether an append is its request's only one, which lets a durable append run
/// on the request's own thread (see [`Partition::append`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alone {
    /// The request appends to this partition only.
    Yes,
    /// The request appends to other partitions at the same time.
    No,
}

/// Counts one durable append under way until dropped: it goes with the append to
/// the blocking pool, so that an append whose request was dropped meanwhile is
/// still counted while it runs.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    /// Counts one more; returns it and how many were under way before.
    fn enter(count: &Arc<AtomicUsize>) -> (InFlight, usize) {
        let before = count.fetch_add(1, Ordering::AcqRel);
        (InFlight(Arc::clone(count)), before)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Messages appended to a partition by [`Partition::append`] (produces, sends, dead
/// letters, redriven messages), and their key, value and client header bytes: the
/// metrics' messages and bytes in. Only the leader appends this way; a follower's
/// replicated copies go to the log directly and are not counted.
#[derive(Debug, Default)]
pub struct AppendedCounts {
    messages: AtomicU64,
    payload_bytes: AtomicU64,
}

impl AppendedCounts {
    fn add(&self, messages: u64, payload_bytes: u64) {
        self.messages.fetch_add(messages, Ordering::Relaxed);
        self.payload_bytes
            .fetch_add(payload_bytes, Ordering::Relaxed);
    }

    /// Messages appended.
    pub fn messages(&self) -> u64 {
        self.messages.load(Ordering::Relaxed)
    }

    /// Their key, value and client header bytes (not the headers the broker adds).
    pub fn payload_bytes(&self) -> u64 {
        self.payload_bytes.load(Ordering::Relaxed)
    }
}

/// Set when some partition holds appends not yet fsynced; the broker's flusher
/// walks its logs only then, so that an idle broker with thousands of logs costs
/// nothing (walking 10,000 of them ten times a second took 2% of a core).
#[derive(Debug, Default)]
pub struct FlushHint(AtomicBool);

impl FlushHint {
    /// Some log has appends to fsync: set after they are written.
    pub fn set(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Whether any log was appended to since the last call, clearing the hint.
    pub fn take(&self) -> bool {
        self.0.swap(false, Ordering::AcqRel)
    }
}

/// Retention and segment settings of a partition's log.
#[derive(Clone, Debug, Default)]
pub struct LogSettings {
    /// Segment size.
    pub segment_bytes: u64,
    /// Retention by age, if any.
    pub retention_ms: Option<u64>,
    /// Retention by size, if any.
    pub retention_bytes: Option<u64>,
    /// Durability of appends.
    pub durability: Durability,
    /// The newest bytes of each log kept in the page cache once fsynced; `None`:
    /// the kernel decides ([`LogConfig::cache_window_bytes`]).
    pub cache_window_bytes: Option<u64>,
    /// Raised by appends the flusher must fsync; shared by a broker's partitions.
    pub flush_hint: Arc<FlushHint>,
    /// Whether the broker is a cluster member: its partitions then open offline and
    /// take writes only once the cluster makes this node their leader (standalone,
    /// they lead from the start).
    pub clustered: bool,
}

/// A failed [`Partition::append_acked`]: the error, and where the batch went when
/// the failure came after the local append (replication).
#[derive(Debug)]
pub struct AckFailure {
    /// What failed.
    pub error: ApiError,
    /// The local append, when it happened.
    pub appended: Option<AppendInfo>,
}

impl AckFailure {
    fn before_append(error: ApiError) -> AckFailure {
        AckFailure {
            error,
            appended: None,
        }
    }
}

impl Partition {
    /// Opens (or creates) the partition's log in `dir`.
    pub fn open(dir: &Path, id: u32, settings: &LogSettings) -> Result<Partition, BrokerError> {
        let config = LogConfig {
            segment_bytes_max: settings.segment_bytes,
            segment_age_ms_max: segment_age_ms(settings.retention_ms),
            retention_ms_max: settings.retention_ms,
            retention_bytes_max: settings.retention_bytes,
            // The log never fsyncs on its own: `fsync` appends wait for a shared
            // fsync (`append_durable`), and the broker's flusher fsyncs the rest
            // from a thread of its own (`Broker::run_flusher`), so that no append
            // waits for an interval fsync.
            flush: FlushPolicy::MANUAL,
            // The broker locks its whole data directory instead: one descriptor
            // per log fewer.
            lock_directory: false,
            cache_window_bytes: settings.cache_window_bytes,
            ..LogConfig::default()
        };
        let log = Log::open(dir, config)?;
        // Standalone, everything on disk is committed. In a cluster the high
        // watermark restarts from here too: it only holds back what followers had
        // not copied, and a leader re-learns that from their fetches.
        log.set_high_watermark(log.log_end_offset());
        Ok(Partition {
            id,
            log: Arc::new(log),
            durability: settings.durability,
            replica: Replica::open(dir, settings.clustered)?,
            flush_hint: Arc::clone(&settings.flush_hint),
            appended: AppendedCounts::default(),
            durable_in_flight: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// Appends a batch whose messages carry `payload_bytes` of keys, values and
    /// client headers, and counts them in [`Partition::appended`]. With `fsync`
    /// durability and `wait_durable`, returns after the batch is fsynced;
    /// concurrent appends share the fsync. Consumers see the batch once this
    /// returns.
    ///
    /// The append and its fsync run on a blocking-pool thread, except for a
    /// request's only append when no other durable append to the partition is
    /// under way: that one runs on the request's own thread (`block_in_place`),
    /// which saves the two hand-overs between threads a lone request would
    /// otherwise wait for. Under concurrency the pool keeps the async workers free
    /// while appends wait for their shared fsync.
    pub async fn append(
        &self,
        mut batch: RecordBatch,
        payload_bytes: u64,
        wait_durable: bool,
        alone: Alone,
    ) -> Result<AppendInfo, ApiError> {
        let Some(epoch) = self.replica.leader_epoch() else {
            return Err(ApiError::new(
                ErrorCode::NotLeader,
                format!("this node does not lead partition {}", self.id),
            ));
        };
        if epoch != 0 {
            batch.set_leader_epoch(epoch);
        }
        let info = if wait_durable && self.durability == Durability::Fsync {
            let (counted, others) = InFlight::enter(&self.durable_in_flight);
            let multi_thread = tokio::runtime::Handle::current().runtime_flavor()
                == tokio::runtime::RuntimeFlavor::MultiThread;
            if alone == Alone::Yes && others == 0 && multi_thread {
                let appended = tokio::task::block_in_place(|| self.log.append_durable(&mut batch));
                drop(counted);
                appended?
            } else {
                let log = Arc::clone(&self.log);
                tokio::task::spawn_blocking(move || {
                    let appended = log.append_durable(&mut batch);
                    drop(counted);
                    appended
                })
                .await
                .map_err(ApiError::internal)??
            }
        } else {
            let info = self.log.append(&mut batch)?;
            self.flush_hint.set();
            info
        };
        self.replica.appended(&self.log, info.next_offset());
        let messages = info.next_offset().0 - info.base_offset.0;
        self.appended.add(messages, payload_bytes);
        Ok(info)
    }

    /// Appends a batch and answers as `acks` says: `none` once written, `leader`
    /// once stored as the durability setting says, `all` once every in-sync replica
    /// has it too (refused with `not_enough_replicas` when fewer than the minimum
    /// are in sync, before the append or, as Kafka's
    /// `NOT_ENOUGH_REPLICAS_AFTER_APPEND`, after it). Standalone, `all` is `leader`.
    /// A failure after the local append carries where the batch went, so that a
    /// retry with the same idempotency key waits for those records instead of
    /// appending them again.
    pub async fn append_acked(
        &self,
        batch: RecordBatch,
        payload_bytes: u64,
        acks: Acks,
        alone: Alone,
    ) -> Result<AppendInfo, AckFailure> {
        if acks != Acks::All || self.replica.is_standalone() {
            return self
                .append(batch, payload_bytes, acks != Acks::None, alone)
                .await
                .map_err(AckFailure::before_append);
        }
        self.replica
            .check_min_isr()
            .map_err(AckFailure::before_append)?;
        let epoch = self.replica.leader_epoch();
        let info = self
            .append(batch, payload_bytes, true, alone)
            .await
            .map_err(AckFailure::before_append)?;
        let last = Offset(info.next_offset().0.saturating_sub(1));
        match self.wait_replicated(epoch, last).await {
            Ok(()) => Ok(info),
            Err(error) => Err(AckFailure {
                error,
                appended: Some(info),
            }),
        }
    }

    /// Waits until every in-sync replica has the records up to `last` (inclusive),
    /// appended while leading in `epoch`, and at least `min_insync_replicas` are in
    /// sync then. Returns at once standalone.
    pub async fn wait_replicated(&self, epoch: Option<u32>, last: Offset) -> Result<(), ApiError> {
        if self.replica.is_standalone() {
            return Ok(());
        }
        self.replica
            .while_leading(
                epoch,
                self.log.wait_for(last, ReadBound::HighWatermark),
                REPLICATION_TIMEOUT,
                &format!("the messages of partition {}", self.id),
                "retry with the same Idempotency-Key",
            )
            .await?;
        // The wait also ends when the log is closed (the topic or queue deleted).
        if self.log.high_watermark() <= last {
            return Err(log_engine::Error::Closed {
                path: self.log.dir().to_path_buf(),
            }
            .into());
        }
        // The high watermark also passes the records when the in-sync set shrinks
        // to fewer replicas than they need.
        self.replica.check_min_isr().map_err(|error| {
            ApiError::new(
                ErrorCode::NotEnoughReplicas,
                format!(
                    "{}; the messages are stored on the leader but not on enough replicas: \
                     retry with the same Idempotency-Key",
                    error.message
                ),
            )
        })
    }

    /// Fsyncs what was appended since the last fsync, if anything. The broker's
    /// flusher calls it every `flush_interval_ms`. Blocks on I/O.
    pub fn flush_unflushed(&self) -> Result<(), BrokerError> {
        if self.log.durable_offset() < self.log.log_end_offset()
            && let Err(error) = self.log.flush()
        {
            // The next round tries again.
            self.flush_hint.set();
            return Err(error.into());
        }
        Ok(())
    }

    /// The bound consumers read up to.
    pub fn read_bound(&self) -> ReadBound {
        ReadBound::HighWatermark
    }

    /// The first offset still stored.
    pub fn start(&self) -> Offset {
        self.log.log_start_offset()
    }

    /// The offset the next message gets.
    pub fn end(&self) -> Offset {
        self.log.log_end_offset()
    }

    /// How many bytes to read for about `messages` messages: the log's own bytes per
    /// message (batch overhead included) and an eighth more, so that a pull usually
    /// takes one read and copies little that it does not use; a reader that still
    /// wants more reads again. Between 16 KiB and 4 MiB.
    pub fn read_bytes_for(&self, messages: usize) -> usize {
        let stored = self.end().0.saturating_sub(self.start().0);
        let per_message = match self.log.size_bytes().checked_div(stored) {
            Some(average) => usize::try_from(average).unwrap_or(usize::MAX),
            None => READ_BYTES_PER_MESSAGE_UNKNOWN,
        };
        messages
            .saturating_mul(per_message.saturating_add(per_message / 8))
            .clamp(READ_BYTES_MIN, READ_BYTES_MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fsync_partition(dir: &Path) -> Arc<Partition> {
        let settings = LogSettings {
            segment_bytes: 1 << 20,
            durability: Durability::Fsync,
            ..LogSettings::default()
        };
        Arc::new(Partition::open(dir, 0, &settings).unwrap())
    }

    fn batch(value: &str) -> RecordBatch {
        let mut builder = log_engine::RecordBatchBuilder::with_capacity(64);
        builder.push(None, value.as_bytes(), 1).unwrap();
        builder.finish().unwrap()
    }

    /// A lone durable append runs on the request's thread, concurrent ones on the
    /// blocking pool; either way each is stored once, in order, and fsynced.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn durable_appends_alone_and_together_are_each_stored_once() {
        let dir = tempfile::tempdir().unwrap();
        let partition = fsync_partition(dir.path());
        let first = partition
            .append(batch("a"), 1, true, Alone::Yes)
            .await
            .unwrap();
        assert_eq!(first.base_offset, Offset(0));
        let appends = (0..16).map(|i| {
            let partition = Arc::clone(&partition);
            let alone = if i % 2 == 0 { Alone::Yes } else { Alone::No };
            tokio::spawn(async move { partition.append(batch("b"), 1, true, alone).await })
        });
        let mut offsets: Vec<u64> = Vec::new();
        for append in appends {
            offsets.push(append.await.unwrap().unwrap().base_offset.0);
        }
        offsets.sort_unstable();
        assert_eq!(offsets, (1..17).collect::<Vec<u64>>());
        assert_eq!(partition.durable_in_flight.load(Ordering::Acquire), 0);
        assert_eq!(partition.log.durable_offset(), Offset(17));
    }

    #[test]
    fn segments_roll_at_the_retention_age_within_bounds() {
        let week = LogConfig::default().segment_age_ms_max;
        assert_eq!(segment_age_ms(None), week);
        assert_eq!(segment_age_ms(Some(60_000)), 60_000);
        assert_eq!(segment_age_ms(Some(1)), SEGMENT_AGE_MS_MIN);
        assert_eq!(segment_age_ms(Some(0)), SEGMENT_AGE_MS_MIN);
        assert_eq!(segment_age_ms(Some(u64::MAX)), week);
    }
}
