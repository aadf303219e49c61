//! A subscription: a named cursor over every partition of a topic. Each subscription
//! sees every message; it pulls at its own pace and commits what it processed.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Duration;

use futures_util::future::select_all;
use log_engine::{CursorStore, Offset, RecordRef};
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, BrokerError};
use crate::fsutil;
use crate::message::StoredMessage;
use crate::partition::Partition;

/// Where a new subscription starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartAt {
    /// At the oldest message still stored.
    #[default]
    Earliest,
    /// After the newest message: only what is produced from now on.
    Latest,
}

/// Where a seek moves a subscription.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeekTo {
    /// To an offset, in one partition or in all.
    Offset {
        /// The partition; all when `None`.
        partition: Option<u32>,
        /// The offset.
        offset: Offset,
    },
    /// To the oldest stored message of every partition.
    Earliest,
    /// To the end of every partition.
    Latest,
    /// To the first message at or after a time (ms since the epoch), per partition.
    Timestamp(i64),
}

/// The settings kept in `subscription.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct SubscriptionMeta {
    name: String,
    auto_commit: bool,
    created_ms: i64,
}

/// Per-partition numbers of a subscription.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionOffsets {
    /// The partition.
    pub partition: u32,
    /// The committed offset: the next one to read after a restart.
    pub committed: Offset,
    /// The partition's end.
    pub log_end_offset: Offset,
    /// Messages between the committed offset and the end.
    pub lag: u64,
}

/// Takes the records a pull returns, in the order it returns them.
pub trait PullSink {
    /// Takes one record of `partition`.
    fn take(&mut self, partition: u32, record: &RecordRef<'_>);
}

impl PullSink for Vec<StoredMessage> {
    fn take(&mut self, partition: u32, record: &RecordRef<'_>) {
        self.push(StoredMessage::from_record(partition, record));
    }
}

#[derive(Debug)]
struct Positions {
    /// The next offset to pull, per partition.
    next: Vec<Offset>,
    /// The partition the next pull starts with, so all are served in turn.
    first: usize,
}

/// One subscription.
#[derive(Debug)]
pub struct Subscription {
    /// Its name.
    pub name: String,
    /// Whether a pull commits the new positions.
    pub auto_commit: bool,
    dir: PathBuf,
    partitions: Vec<Arc<Partition>>,
    cursors: CursorStore,
    positions: tokio::sync::Mutex<Positions>,
    /// Whether the subscription is open. Whatever writes to `cursors` or hands out
    /// messages holds a read guard of it throughout and [`Subscription::close`] takes
    /// it for writing: a request that raced a delete either finished before the
    /// close or finds the subscription gone, never a closed cursor store.
    open: RwLock<bool>,
    /// Becomes true when the subscription closes, so that parked pulls end at once.
    closed: tokio::sync::watch::Sender<bool>,
}

/// The most message bytes (keys and values) one pull returns, so that a pull's
/// answer, and the broker's memory for it, stays bounded whatever `max` and the
/// messages' sizes (Kafka's `fetch.max.bytes` plays this part). A pull always
/// returns at least one message when one is there, however large.
pub const PULL_BYTES_MAX: usize = 16 << 20;

fn cursor_name(partition: usize) -> String {
    format!("p{partition}")
}

impl Subscription {
    /// Creates a subscription in `dir`, its positions at `start`, committed.
    pub fn create(
        dir: &Path,
        name: &str,
        start: StartAt,
        auto_commit: bool,
        partitions: Vec<Arc<Partition>>,
    ) -> Result<Subscription, BrokerError> {
        fsutil::begin_create(dir)?;
        let meta = SubscriptionMeta {
            name: name.to_owned(),
            auto_commit,
            created_ms: crate::message::now_ms(),
        };
        let cursors = CursorStore::open(dir.join("cursors"))?;
        for (i, p) in partitions.iter().enumerate() {
            let offset = match start {
                StartAt::Earliest => p.start(),
                StartAt::Latest => p.end(),
            };
            cursors.commit(&cursor_name(i), offset)?;
        }
        cursors.flush()?;
        let json =
            serde_json::to_vec_pretty(&meta).map_err(|e| BrokerError::Config(e.to_string()))?;
        fsutil::write_atomic(&dir.join("subscription.json"), &json, 0o644)?;
        fsutil::finish_create(dir)?;
        Self::from_parts(dir, meta, cursors, partitions)
    }

    /// Reopens a subscription; its positions are its committed offsets.
    pub fn open(dir: &Path, partitions: Vec<Arc<Partition>>) -> Result<Subscription, BrokerError> {
        let path = dir.join("subscription.json");
        let meta: SubscriptionMeta = fsutil::read_json(&path)?.ok_or(BrokerError::BadMetadata {
            path: path.clone(),
            reason: "missing".into(),
        })?;
        let cursors = CursorStore::open(dir.join("cursors"))?;
        Self::from_parts(dir, meta, cursors, partitions)
    }

    fn from_parts(
        dir: &Path,
        meta: SubscriptionMeta,
        cursors: CursorStore,
        partitions: Vec<Arc<Partition>>,
    ) -> Result<Subscription, BrokerError> {
        let mut next = Vec::with_capacity(partitions.len());
        let mut moved_back = false;
        for (i, p) in partitions.iter().enumerate() {
            let Some(cursor) = cursors.get(&cursor_name(i)) else {
                // Every partition's offset is committed when the subscription is
                // created: its cursor file lost it. Reading again from the start
                // delivers messages twice but skips none.
                tracing::warn!(
                    subscription = %meta.name,
                    partition = i,
                    log_start = p.start().0,
                    "no committed offset (the cursor file lost it): the subscription reads the partition again from its start"
                );
                next.push(p.start());
                continue;
            };
            if cursor.offset > p.end() {
                // The log lost its tail (a crash before an fsync, or damage cut
                // away): new messages take those offsets again, and the commit
                // must not skip them.
                tracing::warn!(
                    subscription = %meta.name,
                    partition = i,
                    committed = cursor.offset.0,
                    log_end = p.end().0,
                    "a committed offset past the log end moved back to the end"
                );
                cursors.commit(&cursor_name(i), p.end())?;
                moved_back = true;
            }
            next.push(cursor.offset.min(p.end()));
        }
        if moved_back {
            cursors.flush()?;
        }
        Ok(Subscription {
            name: meta.name,
            auto_commit: meta.auto_commit,
            dir: dir.to_path_buf(),
            partitions,
            cursors,
            positions: tokio::sync::Mutex::new(Positions { next, first: 0 }),
            open: RwLock::new(true),
            closed: tokio::sync::watch::Sender::new(false),
        })
    }

    /// Holds the subscription open for the caller's writes and reads: a 404 when it
    /// was closed (deleted, alone or with its topic) since the request found it.
    fn hold_open(&self) -> Result<RwLockReadGuard<'_, bool>, ApiError> {
        let open = self.open.read().unwrap_or_else(|p| p.into_inner());
        if *open {
            Ok(open)
        } else {
            Err(ApiError::not_found(format!(
                "subscription {:?} was deleted while the request ran",
                self.name
            )))
        }
    }

    /// The subscription's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Returns up to `max` messages after the subscription's positions and moves the
    /// positions past them. When there are none, waits up to `wait` for one to arrive
    /// and returns as soon as it does.
    pub async fn pull(&self, max: usize, wait: Duration) -> Result<Vec<StoredMessage>, ApiError> {
        let mut out = Vec::with_capacity(max.min(1024));
        self.pull_into(max, wait, &mut out).await?;
        Ok(out)
    }

    /// As [`Subscription::pull`], handing each message to `sink` as it is read rather
    /// than copying it; returns how many it took. The sink is given nothing unless
    /// the pull returns messages.
    pub async fn pull_into<S: PullSink>(
        &self,
        max: usize,
        wait: Duration,
        sink: &mut S,
    ) -> Result<usize, ApiError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut first = true;
        let mut closed = self.closed.subscribe();
        loop {
            let snapshot = {
                let mut positions = self.positions.lock().await;
                let _open = self.hold_open()?;
                if self.auto_commit && std::mem::take(&mut first) {
                    // A reader coming back for more has handled what the pulls
                    // before returned: commit up to there, as Kafka's auto-commit
                    // does at each poll. A crash then delivers the last pull again
                    // instead of skipping it (at least once, not at most once).
                    self.commit_changed(&positions.next)?;
                }
                let taken = self.collect(&mut positions, max, sink)?;
                if taken > 0 || tokio::time::Instant::now() >= deadline {
                    return Ok(taken);
                }
                positions.next.clone()
            };
            let waits = self
                .partitions
                .iter()
                .zip(snapshot)
                .map(|(p, next)| Box::pin(p.log.wait_for(next, p.read_bound())));
            // A wait ends when a message arrives, when the subscription closes (the
            // next round then answers 404) or when the topic is deleted.
            let woken = async {
                tokio::select! {
                    _ = select_all(waits) => {}
                    _ = closed.wait_for(|closed| *closed) => {}
                }
            };
            if tokio::time::timeout_at(deadline, woken).await.is_err() {
                return Ok(0);
            }
            // The topic's delete closes its logs.
            if self.partitions.iter().any(|p| p.log.is_closed()) {
                return Err(ApiError::not_found(
                    "the topic was deleted while the pull waited",
                ));
            }
        }
    }

    /// Reads up to `max` messages, partitions in turn, into `sink`, and advances the
    /// positions; returns how many it read.
    fn collect<S: PullSink>(
        &self,
        positions: &mut Positions,
        max: usize,
        sink: &mut S,
    ) -> Result<usize, ApiError> {
        let count = self.partitions.len();
        let mut taken = 0;
        let mut bytes_left = PULL_BYTES_MAX;
        // A partition that cannot be read (damaged data) does not hold back the
        // others: its error is the answer only when nothing else was read.
        let mut failure = None;
        for step in 0..count {
            let index = (positions.first + step) % count;
            let (Some(partition), Some(next)) =
                (self.partitions.get(index), positions.next.get_mut(index))
            else {
                continue;
            };
            if *next < partition.start() {
                tracing::warn!(
                    subscription = %self.name,
                    partition = index,
                    position = next.0,
                    log_start = partition.start().0,
                    skipped = partition.start().0 - next.0,
                    "retention removed messages this subscription had not read: it goes on at the log start"
                );
                *next = partition.start();
            }
            let budget = Budget {
                messages: max - taken,
                bytes_left: &mut bytes_left,
                first: taken == 0,
            };
            match read_partition(partition, next, budget, sink) {
                Ok(n) => taken += n,
                Err(Partial { taken: n, error }) => {
                    taken += n;
                    failure.get_or_insert(error);
                }
            }
            if taken >= max || bytes_left == 0 {
                break;
            }
        }
        positions.first = (positions.first + 1) % count.max(1);
        match failure {
            Some(error) if taken == 0 => Err(error),
            _ => Ok(taken),
        }
    }

    /// Commits the offsets of `next` that differ from the committed ones (an idle
    /// reader's long polls write nothing).
    fn commit_changed(&self, next: &[Offset]) -> Result<(), ApiError> {
        for (i, offset) in next.iter().enumerate() {
            let name = cursor_name(i);
            if self.cursors.get(&name).map(|c| c.offset) != Some(*offset) {
                self.cursors
                    .commit(&name, *offset)
                    .map_err(ApiError::internal)?;
            }
        }
        Ok(())
    }

    /// Commits offsets (the next offset to read, per partition) durably.
    pub fn commit(&self, offsets: &[(u32, Offset)]) -> Result<(), ApiError> {
        for (partition, offset) in offsets {
            let p = self.partition(*partition)?;
            if *offset > p.end() {
                return Err(ApiError::bad_request(format!(
                    "offset {offset} is past the end ({}) of partition {partition}",
                    p.end()
                )));
            }
        }
        let _open = self.hold_open()?;
        for (partition, offset) in offsets {
            self.cursors
                .commit(&cursor_name(*partition as usize), *offset)
                .map_err(ApiError::internal)?;
        }
        self.cursors.flush().map_err(ApiError::internal)
    }

    /// Moves the position of each partition in `offsets` up to its offset where it
    /// is behind, after a commit of them: a pull that starts after a commit was
    /// answered returns nothing below it (a commit past the position, as after a
    /// pull served by a leader that had just been replaced, says the messages below
    /// were handled).
    pub async fn advance_to(&self, offsets: &[(u32, Offset)]) {
        let mut positions = self.positions.lock().await;
        for (partition, offset) in offsets {
            if let Some(next) = positions.next.get_mut(*partition as usize)
                && *next < *offset
            {
                *next = *offset;
            }
        }
    }

    fn partition(&self, id: u32) -> Result<&Arc<Partition>, ApiError> {
        self.partitions.get(id as usize).ok_or_else(|| {
            ApiError::bad_request(format!(
                "partition {id} does not exist; the topic has {}",
                self.partitions.len()
            ))
        })
    }

    /// Committed offsets, ends and lag per partition.
    pub fn offsets(&self) -> Vec<PartitionOffsets> {
        self.partitions
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let end = p.end();
                // As committed, also below the log start when retention removed
                // messages the subscription never read: the lag counts them, as
                // Kafka's does, until a pull and a commit go past them.
                let committed = self
                    .cursors
                    .get(&cursor_name(i))
                    .map_or(p.start(), |c| c.offset);
                PartitionOffsets {
                    partition: i as u32,
                    committed,
                    log_end_offset: end,
                    lag: end.0.saturating_sub(committed.0),
                }
            })
            .collect()
    }

    /// The total lag over all partitions.
    pub fn lag(&self) -> u64 {
        self.offsets().iter().map(|o| o.lag).sum()
    }

    /// Moves the positions and commits them, so the move survives a restart. A
    /// seek of one partition moves and commits that one only: the others keep
    /// their positions and their commits.
    pub async fn seek(&self, to: SeekTo) -> Result<(), ApiError> {
        let mut positions = self.positions.lock().await;
        let mut next = positions.next.clone();
        let mut moved = Vec::with_capacity(next.len());
        for (i, p) in self.partitions.iter().enumerate() {
            let target = match to {
                SeekTo::Earliest => p.start(),
                SeekTo::Latest => p.end(),
                SeekTo::Offset { partition, offset } => {
                    if partition.is_some_and(|id| id as usize != i) {
                        continue;
                    }
                    offset.clamp(p.start(), p.end())
                }
                SeekTo::Timestamp(ts) => p.log.offset_for_timestamp(ts)?.unwrap_or(p.end()),
            };
            if let Some(slot) = next.get_mut(i) {
                *slot = target;
                moved.push((i, target));
            }
        }
        if let SeekTo::Offset {
            partition: Some(id),
            ..
        } = to
        {
            self.partition(id)?;
        }
        let _open = self.hold_open()?;
        for (i, offset) in moved {
            self.cursors
                .commit(&cursor_name(i), offset)
                .map_err(ApiError::internal)?;
        }
        self.cursors.flush().map_err(ApiError::internal)?;
        positions.next = next;
        Ok(())
    }

    /// The committed offset of each partition, in partition order.
    pub fn committed(&self) -> Vec<u64> {
        self.offsets().iter().map(|o| o.committed.0).collect()
    }

    /// Commits `committed` (one offset per partition, clamped to what the partition
    /// holds) and moves the positions there: a node that takes the topic over
    /// restores the subscription as the cluster kept it.
    pub async fn restore(&self, committed: &[u64]) -> Result<(), ApiError> {
        let mut positions = self.positions.lock().await;
        let next: Vec<Offset> = self
            .partitions
            .iter()
            .enumerate()
            .map(|(i, p)| {
                committed
                    .get(i)
                    .map_or(p.start(), |o| Offset(*o).clamp(p.start(), p.end()))
            })
            .collect();
        let _open = self.hold_open()?;
        self.commit_changed(&next)?;
        self.cursors.flush().map_err(ApiError::internal)?;
        positions.next = next;
        Ok(())
    }

    /// Closes the subscription: waits for the requests writing to it, flushes and
    /// closes the cursor store, and ends parked pulls. Every request that comes to
    /// it afterwards is a 404. Closing twice does nothing.
    pub fn close(&self) -> Result<(), BrokerError> {
        let mut open = self.open.write().unwrap_or_else(|p| p.into_inner());
        *open = false;
        self.closed.send_replace(true);
        self.cursors.close()?;
        Ok(())
    }

    /// Flushes auto-committed positions to disk.
    pub fn flush(&self) -> Result<(), BrokerError> {
        self.cursors.flush()?;
        Ok(())
    }
}

/// Reads up to `max` messages of one partition from `*next` into `sink`, advancing
/// `*next` past each; returns how many it read.
/// A read of a partition that failed after it took `taken` messages.
struct Partial {
    taken: usize,
    error: ApiError,
}

/// What a pull may still take from the partitions it has not read yet.
struct Budget<'a> {
    /// Messages.
    messages: usize,
    /// Bytes of keys and values; set to zero when the next message did not fit.
    bytes_left: &'a mut usize,
    /// Nothing was taken yet: the first message is taken whatever its size.
    first: bool,
}

fn read_partition<S: PullSink>(
    partition: &Partition,
    next: &mut Offset,
    budget: Budget<'_>,
    sink: &mut S,
) -> Result<usize, Partial> {
    let max = budget.messages;
    let mut taken = 0;
    let bound = partition.read_bound();
    let failed = |taken, error: ApiError| Partial { taken, error };
    while taken < max && *next < partition.log.watermark(bound) {
        let bytes = partition.read_bytes_for(max - taken);
        let read = match partition.log.read(*next, bytes, bound) {
            // Retention moved the start past `next` since it was checked: read on
            // from the new start, as a pull that came a moment later would.
            Err(log_engine::Error::OffsetOutOfRange { start, .. }) if *next < start => {
                *next = start;
                continue;
            }
            read => read.map_err(|e| failed(taken, e.into()))?,
        };
        let before = *next;
        for record in read.records() {
            let record = record.map_err(|e| failed(taken, ApiError::internal(e)))?;
            if taken >= max {
                break;
            }
            let size = record.key.map_or(0, <[u8]>::len) + record.value.len();
            if size > *budget.bytes_left && !(budget.first && taken == 0) {
                *budget.bytes_left = 0;
                return Ok(taken);
            }
            *budget.bytes_left = budget.bytes_left.saturating_sub(size);
            sink.take(partition.id, &record);
            *next = Offset(record.offset.0 + 1);
            taken += 1;
        }
        if *next == before {
            break;
        }
    }
    Ok(taken)
}
