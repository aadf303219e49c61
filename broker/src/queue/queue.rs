//! A queue: competing consumers over partitioned logs, with leases, acks, nacks,
//! dead letters and redrive.
//!
//! # Layout
//!
//! ```text
//! <queue dir>/queue.json   the QueueSpec
//! <queue dir>/<p>/         partition p's messages (a log-engine log)
//! <queue dir>/state-<p>/   partition p's state journal (see `journal`)
//! ```
//!
//! # Decisions
//!
//! - Message ids are `"{partition}-{offset}"` ([`message_id`]).
//! - Messages are routed as topics route them: by the key's murmur2 hash, in turn
//!   without a key. A send is answered once the messages are stored as the queue's
//!   durability says, and only then can they be received.
//! - A receive serves the partitions in turn from a rotating start; in each, first
//!   the messages whose lease ran out or that were nacked (lowest offset first),
//!   then new ones. A message whose next delivery would exceed `max_deliveries` is
//!   not delivered: it is appended to the dead-letter queue (original key, value and
//!   headers plus the `mom.origin.*` headers), and only after that append succeeded
//!   recorded as dead-lettered, so a crash in between can duplicate it in the
//!   dead-letter queue but never lose it. Without a dead-letter queue it is dropped
//!   and counted. While a dead letter or a redrive is under way, its message is
//!   *claimed* in memory so that no other receive takes it; a claim is not
//!   journaled, and a crash simply leaves the message where it was.
//! - A message whose stored bytes fail their checks is leased but not delivered, and
//!   holds back no other; past `max_deliveries` it is dropped even with a
//!   dead-letter queue (there is no readable copy to move), and logged.
//! - Deliveries show the `mom.origin.*` headers of a dead letter (API.md: a dead
//!   letter "keeps where it came from in headers"); every other reserved header
//!   stays hidden. A redrive leaves them out of the message it sends back.
//! - Acks are counted only for the current delivery (see [`State::check_ack`]).
//!   With `fsync` durability an ack is answered after its event is fsynced.
//! - One `std::sync::Mutex` per partition guards its state, journal and claims. It
//!   is held for in-memory work and a journal `write`, never across an `.await` and
//!   never across an fsync.
//! - [`Queue::maintain`] fsyncs the journals, then deletes the message segments
//!   wholly below each partition's ack floor, and the journal segments below the last
//!   snapshot. Queue logs have no retention by time or size: a queue keeps a message
//!   until it is done.
//! - Time comes from a [`Clock`] (the system clock unless [`Queue::with_clock`]
//!   says otherwise), so tests can move it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::future::{BoxFuture, select_all};
use log_engine::{Clock, Log, Offset, RecordBatchBuilder, RecordRef, SystemClock, TimestampMs};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use super::event::Event;
use super::journal::Journal;
use super::receipt::Receipt;
use super::spec::{QueueSpec, VISIBILITY_TIMEOUT_MS_MAX, check_visibility_timeout};
use super::state::{OUTSTANDING_MAX, State};
use crate::config::Durability;
use crate::error::{ApiError, BrokerError};
use crate::fsutil;
use crate::idempotency::{IdempotencyWindow, Placement};
use crate::message::{self, NewMessage, StoredMessage};
use crate::partition::{Alone, LogSettings, Partition};
use crate::topic::Acks;

/// The file that holds a queue's [`QueueSpec`].
pub const QUEUE_FILE: &str = "queue.json";
/// The most messages one receive returns.
pub const RECEIVE_MESSAGES_MAX: usize = 1000;
/// The most bytes of keys and values one receive returns; the first message is
/// returned whatever its size. Leased messages past it are given back at once, their
/// delivery not counted.
pub const RECEIVE_BYTES_MAX: usize = 16 << 20;
/// The most receipts one ack or nack takes; bounds the journal batch it writes.
pub const RECEIPTS_MAX: usize = 10_000;
/// The most messages one receive pass dead-letters, on top of what it delivers, so
/// that a backlog of exhausted messages cannot make one request unbounded.
pub const DEAD_LETTERS_PER_PASS_MAX: usize = 256;
/// After a dead-letter append failed (the dead-letter queue is gone, led by
/// another node, or its storage failed), exhausted messages wait this long before
/// the next try: they stay in the queue, undelivered, meanwhile.
pub const DEAD_LETTER_RETRY_MS: i64 = 1_000;
/// Messages a redrive claims and moves at a time.
const REDRIVE_CHUNK: usize = 256;
/// The reserved headers a delivery shows: where a dead letter came from.
pub const ORIGIN_HEADER_PREFIX: &str = "mom.origin.";
/// Dead letters are appended in batches of about this size.
const DEAD_LETTER_BATCH_BYTES: usize = 1 << 20;

/// The id of the message at `offset` of `partition`: `"{partition}-{offset}"`.
pub fn message_id(partition: u32, offset: Offset) -> String {
    format!("{partition}-{}", offset.0)
}

/// The partition and offset of a message id; `None` when it is not one.
pub fn parse_message_id(id: &str) -> Option<(u32, Offset)> {
    let (partition, offset) = id.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(partition) || !digits(offset) {
        return None;
    }
    Some((partition.parse().ok()?, Offset(offset.parse().ok()?)))
}

/// One received message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The message id ([`message_id`]).
    pub id: String,
    /// The signed receipt that acks or nacks this delivery.
    pub receipt: String,
    /// The message.
    pub message: StoredMessage,
    /// Which delivery this is: 1 for the first.
    pub delivery_count: u32,
}

/// Numbers of one partition of a queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionStats {
    /// The partition.
    pub partition: u32,
    /// The first offset still stored.
    pub start: Offset,
    /// The offset the next message gets.
    pub end: Offset,
    /// Every message below is done.
    pub floor: Offset,
}

/// Numbers of a queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueStats {
    /// Messages not done (acked, dead-lettered or dropped), leased or not.
    pub depth: u64,
    /// Messages leased now.
    pub in_flight: u64,
    /// Messages moved to the dead-letter queue since the queue was created.
    pub dead_lettered: u64,
    /// Messages dropped after their last delivery (no dead-letter queue).
    pub dropped: u64,
    /// Per partition.
    pub partitions: Vec<PartitionStats>,
}

/// What one partition's lock guards.
#[derive(Debug)]
struct Cell {
    /// The lease and ack state.
    state: State,
    /// Where its events go.
    journal: Journal,
    /// Messages a dead letter or redrive is moving; no receive takes them.
    claimed: BTreeSet<Offset>,
}

/// A queue.
#[derive(Debug)]
pub struct Queue {
    /// Its settings.
    pub spec: QueueSpec,
    dir: PathBuf,
    partitions: Vec<Arc<Partition>>,
    /// One per partition, same index.
    cells: Vec<Mutex<Cell>>,
    /// Spreads messages without a key over the partitions.
    next_keyless: AtomicU64,
    /// The partition the next receive starts with.
    next_receive: AtomicUsize,
    /// No dead letter is tried before this time (ms), set by a failed one. Without
    /// it every waiting receive would try again as soon as the failed try released
    /// its messages, in a loop.
    dead_letter_retry_ms: AtomicI64,
    idempotency: IdempotencyWindow,
    /// Woken when a message may have become deliverable by something other than an
    /// append or the passing of time: a nack, a released claim, an ack that freed
    /// room under [`OUTSTANDING_MAX`].
    changed: Notify,
    clock: Arc<dyn Clock>,
}

/// Where one receive's reads go: the deliveries, within the receive's byte limit,
/// and the leased messages past it, to be given back.
struct Deliveries<'a> {
    to: &'a mut Vec<Delivery>,
    bytes_left: &'a mut usize,
    /// (offset, delivery) of the leased messages that did not fit.
    over: Vec<(Offset, u32)>,
}

impl Deliveries<'_> {
    /// Whether a message of `size` bytes fits, counting it when it does. The first
    /// fits whatever its size; once one does not, none after it does, so that a
    /// partition's messages are not delivered out of order.
    fn fits(&mut self, size: usize) -> bool {
        if self.over.is_empty() && (self.to.is_empty() || size <= *self.bytes_left) {
            *self.bytes_left = self.bytes_left.saturating_sub(size);
            return true;
        }
        *self.bytes_left = 0;
        false
    }
}

/// What a receive pass found.
struct Pass {
    deliveries: Vec<Delivery>,
    dead_lettered: usize,
    /// Per partition, the end the pass looked up to: a wait waits for more.
    ends: Vec<Offset>,
    /// When a lease runs out or a nacked message becomes available next.
    wake_ms: Option<TimestampMs>,
    now_ms: TimestampMs,
}

/// A message on its way to a dead-letter queue: its key, value and headers as it
/// was sent, followed by the `mom.origin.*` headers saying where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// The routing key.
    pub key: Option<Vec<u8>>,
    /// The payload.
    pub value: Vec<u8>,
    /// The message's headers, then the origin headers.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl DeadLetter {
    /// Key, value and header bytes of the message, as it was sent (the origin
    /// headers the broker adds are not counted).
    fn payload_bytes(&self) -> u64 {
        let headers: usize = self
            .headers
            .iter()
            .filter(|(k, _)| !k.starts_with(ORIGIN_HEADER_PREFIX))
            .map(|(k, v)| k.len() + v.len())
            .sum();
        (self.key.as_ref().map_or(0, Vec::len) + self.value.len() + headers) as u64
    }
}

/// Where a queue's exhausted messages go: its dead-letter queue, on this node or on
/// the node that leads it (see `cluster::dead_letters`).
pub trait DeadLetterSink: Send + Sync {
    /// The dead-letter queue's name.
    fn name(&self) -> &str;

    /// Appends `letters`, each to the partition its key picks, and returns once every
    /// in-sync replica has them (stored as the dead-letter queue's durability says).
    /// An error may come after some were appended: a retry can duplicate those.
    fn append<'a>(
        &'a self,
        letters: &'a [DeadLetter],
        now: TimestampMs,
    ) -> BoxFuture<'a, Result<(), ApiError>>;
}

/// Where a redrive sends a letter back: its origin queue, on this node or on the node
/// that leads it (see `cluster::dead_letters`).
pub trait RedriveTarget: Send + Sync {
    /// Sends `message` with idempotency key `key`: a retry with the same key sends
    /// nothing again.
    fn send_back<'a>(
        &'a self,
        message: &'a NewMessage<'static>,
        key: &'a str,
    ) -> BoxFuture<'a, Result<(), ApiError>>;
}

impl RedriveTarget for Queue {
    fn send_back<'a>(
        &'a self,
        message: &'a NewMessage<'static>,
        key: &'a str,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            self.send(std::slice::from_ref(message), Some(key)).await?;
            Ok(())
        })
    }
}

impl DeadLetterSink for Queue {
    fn name(&self) -> &str {
        Queue::name(self)
    }

    fn append<'a>(
        &'a self,
        letters: &'a [DeadLetter],
        now: TimestampMs,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(self.append_dead_letters(letters, now))
    }
}

/// Releases claims when dropped, also when the request's future is dropped
/// mid-way, so that a claimed message is never stranded.
struct ClaimGuard<'q> {
    queue: &'q Queue,
    partition: usize,
    offsets: Vec<Offset>,
}

impl Drop for ClaimGuard<'_> {
    fn drop(&mut self) {
        if self.offsets.is_empty() {
            return;
        }
        if let Some(mut cell) = self.queue.cell(self.partition) {
            for offset in &self.offsets {
                cell.claimed.remove(offset);
            }
        }
        self.queue.changed.notify_waiters();
    }
}

impl Queue {
    /// Creates the queue's directory, partitions and journals.
    pub fn create(
        dir: &Path,
        spec: QueueSpec,
        defaults: LogSettings,
        idempotency_window_ms: u64,
    ) -> Result<Queue, BrokerError> {
        spec.validate(u32::MAX)
            .map_err(|e| BrokerError::Config(e.message))?;
        fsutil::begin_create(dir)?;
        let json =
            serde_json::to_vec_pretty(&spec).map_err(|e| BrokerError::Config(e.to_string()))?;
        let queue = Self::open_parts(dir, spec, defaults, idempotency_window_ms)?;
        fsutil::write_atomic(&dir.join(QUEUE_FILE), &json, 0o644)?;
        fsutil::finish_create(dir)?;
        Ok(queue)
    }

    /// Opens a queue from its directory: replays each partition's journal and
    /// rebuilds the idempotency window from the logs' recent tails.
    pub fn open(
        dir: &Path,
        defaults: LogSettings,
        idempotency_window_ms: u64,
    ) -> Result<Queue, BrokerError> {
        let path = dir.join(QUEUE_FILE);
        let spec: QueueSpec =
            fsutil::read_json(&path)?.ok_or_else(|| BrokerError::BadMetadata {
                path: path.clone(),
                reason: "missing".into(),
            })?;
        spec.validate(u32::MAX)
            .map_err(|e| BrokerError::BadMetadata {
                path: path.clone(),
                reason: e.message,
            })?;
        fsutil::check_partition_dirs(dir, spec.partitions, defaults.clustered)?;
        let queue = Self::open_parts(dir, spec, defaults, idempotency_window_ms)?;
        queue.rebuild_idempotency();
        Ok(queue)
    }

    fn open_parts(
        dir: &Path,
        spec: QueueSpec,
        defaults: LogSettings,
        idempotency_window_ms: u64,
    ) -> Result<Queue, BrokerError> {
        let settings = LogSettings {
            retention_ms: None,
            retention_bytes: None,
            durability: spec.durability,
            ..defaults
        };
        let mut partitions = Vec::with_capacity(spec.partitions as usize);
        let mut cells = Vec::with_capacity(spec.partitions as usize);
        for p in 0..spec.partitions {
            let partition = Partition::open(&dir.join(p.to_string()), p, &settings)?;
            let (mut journal, mut state) = Journal::open(&dir.join(format!("state-{p}")))?;
            if state.clamp(partition.start(), partition.end()) {
                // The journal and the log disagree (a crash cut one of them short):
                // persist the fitted state, so later events replay on top of it.
                tracing::warn!(queue = %spec.name, partition = p, "queue state fitted to its log");
                journal.write_snapshot(&state, message::now_ms())?;
                journal.log().flush()?;
            }
            partitions.push(Arc::new(partition));
            cells.push(Mutex::new(Cell {
                state,
                journal,
                claimed: BTreeSet::new(),
            }));
        }
        Ok(Queue {
            spec,
            dir: dir.to_path_buf(),
            partitions,
            cells,
            next_keyless: AtomicU64::new(0),
            next_receive: AtomicUsize::new(0),
            dead_letter_retry_ms: AtomicI64::new(0),
            idempotency: IdempotencyWindow::new(idempotency_window_ms),
            changed: Notify::new(),
            clock: Arc::new(SystemClock),
        })
    }

    /// The same queue reading time from `clock` (for tests that move time).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Queue {
        self.clock = clock;
        self
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The queue's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The state journal of partition `p`: what a follower copies along with the
    /// partition's messages.
    pub fn journal_log(&self, p: usize) -> Option<Arc<Log>> {
        self.cell(p).map(|cell| Arc::clone(cell.journal.log()))
    }

    /// Rebuilds partition `p`'s state from its journal, fitted to its log: on a node
    /// that takes the partition over, whose journal and log were copied from the
    /// old leader.
    pub fn reload_state(&self, p: usize) -> Result<(), BrokerError> {
        let partition = self
            .partitions
            .get(p)
            .ok_or_else(|| BrokerError::Config(format!("no partition {p}")))?;
        let Some(mut cell) = self.cell(p) else {
            return Ok(());
        };
        let Cell {
            state,
            journal,
            claimed,
        } = &mut *cell;
        let mut fresh = journal.replay()?;
        if fresh.clamp(partition.start(), partition.end()) {
            journal.write_snapshot(&fresh, self.clock.now_ms())?;
            journal.log().flush()?;
        }
        *state = fresh;
        claimed.clear();
        drop(cell);
        self.changed.notify_waiters();
        Ok(())
    }

    /// Rebuilds the idempotency window from the recent tail of each partition, as
    /// the logs hold it now (after a start, or on becoming leader).
    pub fn rebuild_idempotency(&self) {
        let since = message::now_ms() - self.idempotency.window_ms();
        crate::idempotency::rebuild_window(&self.idempotency, &self.partitions, since);
    }

    /// The partitions.
    pub fn partitions(&self) -> &[Arc<Partition>] {
        &self.partitions
    }

    fn cell(&self, partition: usize) -> Option<MutexGuard<'_, Cell>> {
        self.cells
            .get(partition)
            .map(|c| c.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn partition(&self, index: usize) -> Result<(&Arc<Partition>, MutexGuard<'_, Cell>), ApiError> {
        match (self.partitions.get(index), self.cell(index)) {
            (Some(partition), Some(cell)) => Ok((partition, cell)),
            _ => Err(ApiError::internal(format!(
                "queue partition {index} is missing"
            ))),
        }
    }

    /// The partition a message goes to: by key hash, or in turn without a key.
    pub fn route(&self, key: Option<&[u8]>) -> u32 {
        let count = self.partitions.len() as u32;
        crate::partitioner::route(key, count, &self.next_keyless)
    }

    /// Appends messages, each to the partition its key picks, and returns each one's
    /// (partition, offset) in request order; the ids are [`message_id`]s of those.
    /// With an idempotency key seen within the window, appends nothing and returns
    /// the first answer.
    pub async fn send(
        &self,
        messages: &[NewMessage<'_>],
        idempotency_key: Option<&str>,
    ) -> Result<Arc<Placement>, ApiError> {
        if messages.is_empty() {
            return Err(ApiError::bad_request("messages must not be empty"));
        }
        for m in messages {
            m.validate()?;
        }
        if let Some(key) = idempotency_key {
            IdempotencyWindow::validate_key(key)?;
        }
        let request = crate::idempotency::RequestKey::of(idempotency_key, messages);
        self.idempotency
            .run(request, |stored| async move {
                crate::produce::append_routed(
                    &self.partitions,
                    messages,
                    |m| self.route(m.key.as_deref().map(str::as_bytes)),
                    crate::topic::Acks::All,
                    request,
                    &stored,
                    self.clock.now_ms(),
                )
                .await
            })
            .await
    }

    /// Receives up to `max` (1 to [`RECEIVE_MESSAGES_MAX`]) messages, each leased for
    /// `visibility_timeout_ms` (the queue's when `None`), with receipts signed with
    /// `receipt_key`. When nothing is deliverable, waits up to `wait` and returns as
    /// soon as something is: a send, a lease running out, a nack.
    ///
    /// Messages past `max_deliveries` met on the way are not delivered: they go to
    /// `dead_letter`, which the caller resolves from `spec.dead_letter_queue`; with
    /// `None` they are dropped and counted. A failed dead-letter append is logged and
    /// leaves the message to be tried again by a later receive.
    pub async fn receive(
        &self,
        max: usize,
        wait: Duration,
        visibility_timeout_ms: Option<u64>,
        receipt_key: &[u8; 32],
        dead_letter: Option<Arc<dyn DeadLetterSink>>,
    ) -> Result<Vec<Delivery>, ApiError> {
        if max == 0 || max > RECEIVE_MESSAGES_MAX {
            return Err(ApiError::bad_request(format!(
                "max must be between 1 and {RECEIVE_MESSAGES_MAX}"
            )));
        }
        let vt_ms = visibility_timeout_ms.unwrap_or(self.spec.visibility_timeout_ms);
        check_visibility_timeout(vt_ms)?;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let pass = self
                .pass(max, vt_ms, receipt_key, dead_letter.as_deref())
                .await?;
            if !pass.deliveries.is_empty() {
                return Ok(pass.deliveries);
            }
            if pass.dead_lettered > 0 {
                continue; // Progress; more may be deliverable behind them.
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(Vec::new());
            }
            let until = match pass.wake_ms {
                Some(wake) => {
                    let ms = (wake - pass.now_ms).max(1) as u64;
                    deadline.min(tokio::time::Instant::now() + Duration::from_millis(ms))
                }
                None => deadline,
            };
            let waits: Vec<_> = self
                .partitions
                .iter()
                .zip(&pass.ends)
                .map(|(p, end)| Box::pin(p.log.wait_for(*end, p.read_bound())))
                .collect();
            let new_data = async {
                if waits.is_empty() {
                    std::future::pending::<()>().await;
                } else {
                    select_all(waits).await;
                }
            };
            tokio::select! {
                () = tokio::time::sleep_until(until) => {}
                () = &mut notified => {}
                () = new_data => {}
            }
            // A wait also ends when the queue is deleted (its logs closed).
            if self.partitions.iter().any(|p| p.log.is_closed()) {
                return Err(ApiError::not_found(
                    "the queue was deleted while the receive waited",
                ));
            }
        }
    }

    /// One look at every partition: leases what can be delivered, dead-letters what
    /// is exhausted, and reads the leased messages.
    async fn pass(
        &self,
        max: usize,
        vt_ms: u64,
        receipt_key: &[u8; 32],
        dead_letter: Option<&dyn DeadLetterSink>,
    ) -> Result<Pass, ApiError> {
        let now = self.clock.now_ms();
        let count = self.partitions.len();
        let first = self.next_receive.fetch_add(1, Ordering::Relaxed) % count.max(1);
        let mut pass = Pass {
            deliveries: Vec::new(),
            dead_lettered: 0,
            ends: vec![Offset(0); count],
            wake_ms: None,
            now_ms: now,
        };
        let mut leased: Vec<(usize, Vec<(Offset, u32)>)> = Vec::new();
        // Declared before any lock is taken, so an early return drops the locks first
        // and then releases the claims.
        let mut doomed: Vec<(ClaimGuard<'_>, BTreeMap<Offset, u32>)> = Vec::new();
        let retry_ms = self.dead_letter_retry_ms.load(Ordering::Relaxed);
        let dead_paused = dead_letter.is_some() && now < retry_ms;
        if dead_paused {
            pass.wake_ms = Some(retry_ms);
        }
        let mut dead_left = if dead_paused {
            0
        } else {
            DEAD_LETTERS_PER_PASS_MAX
        };
        let mut durable: Vec<(usize, Arc<Log>)> = Vec::new();
        let deadline_ms = now + vt_ms as i64;
        for index in (0..count).map(|step| (first + step) % count) {
            let want = max - leased.iter().map(|(_, l)| l.len()).sum::<usize>();
            let (partition, mut cell) = self.partition(index)?;
            let end = partition.log.watermark(partition.read_bound());
            if let Some(slot) = pass.ends.get_mut(index) {
                *slot = end;
            }
            let (take, dead) = cell.pick(now, end, want, dead_left, self.spec.max_deliveries);
            dead_left -= dead.len();
            let mut events: Vec<Event> = take
                .iter()
                .map(|(offset, delivery)| Event::Leased {
                    offset: *offset,
                    delivery: *delivery,
                    deadline_ms,
                })
                .collect();
            let drop_dead = dead_letter.is_none() && !dead.is_empty();
            if drop_dead {
                events.extend(
                    dead.iter()
                        .map(|(offset, _)| Event::Dropped { offset: *offset }),
                );
            }
            let Cell {
                state,
                journal,
                claimed,
            } = &mut *cell;
            journal.record(state, &events, now)?;
            pass.wake_ms = min_some(pass.wake_ms, state.next_wake_ms(now));
            if drop_dead {
                pass.dead_lettered += dead.len();
                durable.push((index, Arc::clone(journal.log())));
            } else if !dead.is_empty() {
                claimed.extend(dead.iter().map(|(o, _)| *o));
                let guard = ClaimGuard {
                    queue: self,
                    partition: index,
                    offsets: dead.iter().map(|(o, _)| *o).collect(),
                };
                doomed.push((guard, dead.into_iter().collect()));
            }
            drop(cell);
            if !take.is_empty() {
                leased.push((index, take));
            }
        }
        self.make_durable(durable).await?;
        if let Some(dlq) = dead_letter {
            for (claim, so_far) in &doomed {
                pass.dead_lettered += self.dead_letter(claim, so_far, dlq, now).await;
            }
        }
        drop(doomed);
        // A damaged message (its stored bytes fail their checks) is not delivered and
        // does not hold back the others, of its partition or another: its lease runs
        // out, it is tried again, and past `max_deliveries` it is dropped (it has no
        // readable copy to dead-letter). Its error is the answer only when nothing
        // else was delivered.
        let mut failure = None;
        let mut bytes_left = RECEIVE_BYTES_MAX;
        let mut over = Vec::new();
        for (index, offsets) in leased {
            let mut out = Deliveries {
                to: &mut pass.deliveries,
                bytes_left: &mut bytes_left,
                over: Vec::new(),
            };
            let read = self.read_deliveries(index, &offsets, deadline_ms, receipt_key, &mut out);
            if !out.over.is_empty() {
                over.push((index, out.over));
            }
            if let Err(error) = read {
                tracing::warn!(queue = self.name(), partition = index, message = %error.message, "leased messages could not be read");
                failure.get_or_insert(error);
            }
        }
        if !over.is_empty() {
            self.give_back(over, now);
        }
        match failure {
            Some(error) if pass.deliveries.is_empty() => Err(error),
            _ => Ok(pass),
        }
    }

    /// Moves the claimed messages of one partition to `dlq`; returns how many moved.
    /// A failure is logged and leaves the messages where they were, to be tried again
    /// after [`DEAD_LETTER_RETRY_MS`].
    async fn dead_letter(
        &self,
        claim: &ClaimGuard<'_>,
        so_far: &BTreeMap<Offset, u32>,
        dlq: &dyn DeadLetterSink,
        now: TimestampMs,
    ) -> usize {
        match self.try_dead_letter(claim, so_far, dlq, now).await {
            Ok(moved) => moved,
            Err(error) => {
                self.dead_letter_retry_ms
                    .store(now + DEAD_LETTER_RETRY_MS, Ordering::Relaxed);
                tracing::warn!(queue = %self.name(), dlq = %dlq.name(), %error, "dead-lettering failed; trying again in {DEAD_LETTER_RETRY_MS} ms");
                0
            }
        }
    }

    async fn try_dead_letter(
        &self,
        claim: &ClaimGuard<'_>,
        deliveries: &BTreeMap<Offset, u32>,
        dlq: &dyn DeadLetterSink,
        now: TimestampMs,
    ) -> Result<usize, ApiError> {
        let index = claim.partition;
        let partition = self
            .partitions
            .get(index)
            .ok_or_else(|| ApiError::internal("dead letter from a missing partition"))?;
        let mut letters = Vec::with_capacity(claim.offsets.len());
        let mut moving = Vec::with_capacity(claim.offsets.len());
        let damaged = read_records(partition, &claim.offsets, |record| {
            let stored = StoredMessage::from_record(partition.id, &record);
            let so_far = deliveries.get(&record.offset).copied().unwrap_or(0);
            let mut headers = stored.headers;
            headers.extend(
                [
                    (message::ORIGIN_QUEUE_HEADER, self.name().to_owned()),
                    (message::ORIGIN_PARTITION_HEADER, partition.id.to_string()),
                    (message::ORIGIN_OFFSET_HEADER, record.offset.0.to_string()),
                    (message::ORIGIN_DELIVERIES_HEADER, so_far.to_string()),
                    (message::ORIGIN_TIME_HEADER, now.to_string()),
                ]
                .map(|(k, v)| (k.to_owned(), v.into_bytes())),
            );
            letters.push(DeadLetter {
                key: stored.key,
                value: stored.value,
                headers,
            });
            moving.push(record.offset);
            Ok(())
        })?;
        dlq.append(&letters, now).await?;
        // A damaged message has no readable copy to move: it is dropped, as without
        // a dead-letter queue, and said so.
        for lost in &damaged {
            tracing::error!(queue = %self.name(), partition = partition.id, offset = %lost.offset, error = %lost.error.message, "a damaged message reached max_deliveries and is dropped: it cannot be dead-lettered");
        }
        let offsets: Vec<Offset> = moving
            .into_iter()
            .chain(damaged.iter().map(|d| d.offset))
            .collect();
        let (moved, log) = self.record_done(
            index,
            &offsets,
            |offset| {
                if damaged.iter().any(|d| d.offset == offset) {
                    Event::Dropped { offset }
                } else {
                    Event::DeadLettered { offset }
                }
            },
            now,
        )?;
        self.make_durable(vec![(index, log)]).await?;
        Ok(moved)
    }

    /// Appends dead letters from another queue, in batches, each to the partition
    /// its key picks, each answered once the in-sync replicas have it: the other
    /// queue records its messages as moved right after, and a failover must not
    /// lose what it recorded.
    async fn append_dead_letters(
        &self,
        letters: &[DeadLetter],
        now: TimestampMs,
    ) -> Result<(), ApiError> {
        let mut routed: Vec<Vec<&DeadLetter>> = vec![Vec::new(); self.partitions.len()];
        for letter in letters {
            if let Some(slot) = routed.get_mut(self.route(letter.key.as_deref()) as usize) {
                slot.push(letter);
            }
        }
        for (partition, letters) in self.partitions.iter().zip(routed) {
            let mut builder = RecordBatchBuilder::new();
            let mut payload_bytes = 0;
            for letter in letters {
                let headers = letter
                    .headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_slice()));
                builder
                    .push_with_headers(letter.key.as_deref(), &letter.value, headers, now)
                    .map_err(ApiError::internal)?;
                payload_bytes += letter.payload_bytes();
                if builder.encoded_len() >= DEAD_LETTER_BATCH_BYTES {
                    let full = std::mem::take(&mut builder);
                    let full = full.finish().map_err(ApiError::internal)?;
                    partition
                        .append_acked(
                            full,
                            std::mem::take(&mut payload_bytes),
                            Acks::All,
                            Alone::No,
                        )
                        .await
                        .map_err(|failure| failure.error)?;
                }
            }
            if !builder.is_empty() {
                let rest = builder.finish().map_err(ApiError::internal)?;
                partition
                    .append_acked(rest, payload_bytes, Acks::All, Alone::No)
                    .await
                    .map_err(|failure| failure.error)?;
            }
        }
        Ok(())
    }

    fn read_deliveries(
        &self,
        index: usize,
        leased: &[(Offset, u32)],
        deadline_ms: TimestampMs,
        receipt_key: &[u8; 32],
        out: &mut Deliveries<'_>,
    ) -> Result<(), ApiError> {
        let partition = self
            .partitions
            .get(index)
            .ok_or_else(|| ApiError::internal("delivery from a missing partition"))?;
        let delivery_of: BTreeMap<Offset, u32> = leased.iter().copied().collect();
        let offsets: Vec<Offset> = delivery_of.keys().copied().collect();
        let damaged = read_records(partition, &offsets, |record| {
            let delivery = delivery_of.get(&record.offset).copied().unwrap_or(1);
            let size = record.key.map_or(0, <[u8]>::len) + record.value.len();
            if !out.fits(size) {
                out.over.push((record.offset, delivery));
                return Ok(());
            }
            let receipt = Receipt {
                queue: self.name().to_owned(),
                incarnation: self.spec.incarnation,
                partition: partition.id,
                offset: record.offset,
                delivery,
                deadline_ms,
            };
            let mut message = StoredMessage::from_record(partition.id, &record);
            // A dead letter shows where it came from (API.md); other reserved
            // headers stay hidden.
            message.headers.extend(
                record
                    .headers()
                    .filter(|(k, _)| k.starts_with(ORIGIN_HEADER_PREFIX))
                    .map(|(k, v)| (k.to_owned(), v.to_vec())),
            );
            out.to.push(Delivery {
                id: message_id(partition.id, record.offset),
                receipt: receipt.sign(receipt_key)?,
                message,
                delivery_count: delivery,
            });
            Ok(())
        })?;
        // The others were delivered; the pass logs the first damage.
        damaged
            .into_iter()
            .next()
            .map_or(Ok(()), |lost| Err(lost.error))
    }

    /// Gives leased messages back, to be delivered at once by the next receive, their
    /// delivery not counted: those one receive could not return within its byte
    /// limit. A failure leaves them leased, delivered again when the lease runs out.
    fn give_back(&self, over: Vec<(usize, Vec<(Offset, u32)>)>, now: TimestampMs) {
        for (index, offsets) in over {
            let events: Vec<Event> = offsets
                .into_iter()
                .map(|(offset, delivery)| Event::Nacked {
                    offset,
                    delivery: delivery.saturating_sub(1),
                    available_ms: now,
                })
                .collect();
            let recorded = self.partition(index).and_then(|(_, mut cell)| {
                let Cell { state, journal, .. } = &mut *cell;
                journal.record(state, &events, now).map_err(ApiError::from)
            });
            if let Err(error) = recorded {
                tracing::warn!(queue = self.name(), partition = index, message = %error.message, "messages over a receive's byte limit stay leased until their lease runs out");
            }
        }
        self.changed.notify_waiters();
    }

    /// Fsyncs the journals of done events (partition index, journal) when the
    /// queue's durability asks for it, on a blocking thread and outside every lock.
    /// In a cluster, also waits until the in-sync replicas copied those journal
    /// events, so that a failover keeps them.
    async fn make_durable(&self, logs: Vec<(usize, Arc<Log>)>) -> Result<(), ApiError> {
        if logs.is_empty() {
            return Ok(());
        }
        let copies: Vec<(usize, u64)> = logs
            .iter()
            .map(|(p, log)| (*p, log.log_end_offset().0))
            .collect();
        if self.spec.durability == Durability::Fsync {
            tokio::task::spawn_blocking(move || logs.iter().try_for_each(|(_, log)| log.flush()))
                .await
                .map_err(ApiError::internal)??;
        }
        for (p, end) in copies {
            if let Some(partition) = self.partitions.get(p) {
                partition
                    .replica
                    .journal_copied(end, crate::partition::REPLICATION_TIMEOUT)
                    .await?;
            }
        }
        Ok(())
    }

    /// Checks receipts (all of this queue, partitions that exist, not too many) and
    /// groups them by partition.
    fn group<'r>(
        &self,
        receipts: &'r [Receipt],
    ) -> Result<BTreeMap<usize, Vec<&'r Receipt>>, ApiError> {
        if receipts.len() > RECEIPTS_MAX {
            return Err(ApiError::bad_request(format!(
                "at most {RECEIPTS_MAX} receipts per request"
            )));
        }
        let mut groups: BTreeMap<usize, Vec<&Receipt>> = BTreeMap::new();
        for receipt in receipts {
            if receipt.queue != self.name() {
                return Err(ApiError::bad_request(format!(
                    "a receipt of queue {:?} cannot be used on queue {:?}",
                    receipt.queue,
                    self.name()
                )));
            }
            if receipt.incarnation != self.spec.incarnation {
                return Err(ApiError::bad_request(format!(
                    "the receipt is of an earlier queue named {:?}, deleted since",
                    self.name()
                )));
            }
            if receipt.partition as usize >= self.partitions.len() {
                return Err(ApiError::bad_request(format!(
                    "a receipt names partition {}, the queue has {}",
                    receipt.partition,
                    self.partitions.len()
                )));
            }
            groups
                .entry(receipt.partition as usize)
                .or_default()
                .push(receipt);
        }
        Ok(groups)
    }

    /// Acknowledges deliveries; returns how many acks counted. A stale receipt (the
    /// message was delivered again since), a repeated one, or one of a message that
    /// is done already does not count. Receipts of another queue: 400, and nothing
    /// changes. With `fsync` durability the acks are on disk when this returns.
    pub async fn ack(&self, receipts: &[Receipt]) -> Result<usize, ApiError> {
        let groups = self.group(receipts)?;
        let now = self.clock.now_ms();
        let mut acked = 0;
        let mut durable = Vec::new();
        let mut room = false;
        for (index, receipts) in groups {
            let (_, mut cell) = self.partition(index)?;
            let Cell {
                state,
                journal,
                claimed,
            } = &mut *cell;
            let mut seen = BTreeSet::new();
            let events: Vec<Event> = receipts
                .iter()
                .filter(|r| counts(state, claimed, r) && seen.insert(r.offset))
                .map(|r| Event::Acked { offset: r.offset })
                .collect();
            if events.is_empty() {
                continue;
            }
            room |= state.outstanding() >= OUTSTANDING_MAX;
            journal.record(state, &events, now)?;
            acked += events.len();
            durable.push((index, Arc::clone(journal.log())));
        }
        if room {
            self.changed.notify_waiters();
        }
        self.make_durable(durable).await?;
        Ok(acked)
    }

    /// Gives deliveries back, to be delivered again after `delay_ms` (at most
    /// [`VISIBILITY_TIMEOUT_MS_MAX`]); returns how many counted, by the rule of
    /// [`Queue::ack`].
    pub async fn nack(&self, receipts: &[Receipt], delay_ms: u64) -> Result<usize, ApiError> {
        if delay_ms > VISIBILITY_TIMEOUT_MS_MAX {
            return Err(ApiError::bad_request(format!(
                "delay_ms must be at most {VISIBILITY_TIMEOUT_MS_MAX}"
            )));
        }
        let groups = self.group(receipts)?;
        let now = self.clock.now_ms();
        let available_ms = now + delay_ms as i64;
        let mut nacked = 0;
        for (index, receipts) in groups {
            let (_, mut cell) = self.partition(index)?;
            let Cell {
                state,
                journal,
                claimed,
            } = &mut *cell;
            let mut seen = BTreeSet::new();
            let events: Vec<Event> = receipts
                .iter()
                .filter(|r| counts(state, claimed, r) && seen.insert(r.offset))
                .map(|r| Event::Nacked {
                    offset: r.offset,
                    delivery: r.delivery,
                    available_ms,
                })
                .collect();
            journal.record(state, &events, now)?;
            nacked += events.len();
        }
        if nacked > 0 {
            self.changed.notify_waiters();
        }
        Ok(nacked)
    }

    /// On a dead-letter queue: sends up to `max` of its messages that are not done
    /// (and not leased) back to the queue their `mom.origin.queue` header names, as
    /// new messages (delivery count from zero, origin headers left out), and marks
    /// them done here. A message whose origin `resolve` does not know stays. Each
    /// message is sent with an idempotency key of its own, so a redrive repeated
    /// after a failure does not send it twice within the origin's window.
    pub async fn redrive(
        &self,
        max: usize,
        resolve: impl Fn(&str) -> Option<Arc<dyn RedriveTarget>>,
    ) -> Result<usize, ApiError> {
        let mut moved = 0;
        for index in 0..self.partitions.len() {
            let mut from = Offset(0);
            while moved < max {
                let Some((claim, next)) = self.claim_for_redrive(index, from, max - moved)? else {
                    break;
                };
                from = next;
                moved += self.redrive_claimed(&claim, &resolve).await?;
            }
        }
        Ok(moved)
    }

    /// Claims up to `max` (and [`REDRIVE_CHUNK`]) messages at or after `from` that a
    /// redrive may move; returns them and where to look next.
    fn claim_for_redrive(
        &self,
        index: usize,
        from: Offset,
        max: usize,
    ) -> Result<Option<(ClaimGuard<'_>, Offset)>, ApiError> {
        let now = self.clock.now_ms();
        let (partition, mut cell) = self.partition(index)?;
        let end = partition.log.watermark(partition.read_bound());
        // Leases that ran out are not leased any more: redrive those too, as a
        // receive would deliver them.
        cell.state.expire(now);
        let offsets: Vec<Offset> = cell
            .state
            .undone_from(from, end)
            .filter(|o| !cell.claimed.contains(o))
            .take(max.min(REDRIVE_CHUNK))
            .collect();
        let Some(last) = offsets.last() else {
            return Ok(None);
        };
        let next = Offset(last.0 + 1);
        cell.claimed.extend(offsets.iter().copied());
        drop(cell);
        let claim = ClaimGuard {
            queue: self,
            partition: index,
            offsets,
        };
        Ok(Some((claim, next)))
    }

    async fn redrive_claimed(
        &self,
        claim: &ClaimGuard<'_>,
        resolve: &impl Fn(&str) -> Option<Arc<dyn RedriveTarget>>,
    ) -> Result<usize, ApiError> {
        let partition = self
            .partitions
            .get(claim.partition)
            .ok_or_else(|| ApiError::internal("redrive from a missing partition"))?;
        let mut found: Vec<(Offset, String, NewMessage<'static>)> = Vec::new();
        let damaged = read_records(partition, &claim.offsets, |record| {
            if let Some(origin) = message::reserved_header(&record, message::ORIGIN_QUEUE_HEADER) {
                let origin = String::from_utf8_lossy(origin).into_owned();
                found.push((record.offset, origin, to_new_message(&record)));
            }
            Ok(())
        })?;
        for lost in damaged {
            tracing::warn!(queue = self.name(), partition = partition.id, offset = %lost.offset, error = %lost.error.message, "a damaged dead letter stays where it is: it cannot be redriven");
        }
        let key_prefix = redrive_key_prefix(self.name(), self.spec.incarnation, partition.id);
        let mut done = Vec::new();
        let mut failure = None;
        for (offset, origin, message) in found {
            let Some(target) = resolve(&origin) else {
                continue;
            };
            let key = format!("{key_prefix}:{}", offset.0);
            match target.send_back(&message, &key).await {
                Ok(_) => done.push(offset),
                Err(error) => {
                    failure = Some(error);
                    break;
                }
            }
        }
        let now = self.clock.now_ms();
        let (moved, log) = self.record_done(
            claim.partition,
            &done,
            |offset| Event::Acked { offset },
            now,
        )?;
        self.make_durable(vec![(claim.partition, log)]).await?;
        match failure {
            Some(error) => Err(error),
            None => Ok(moved),
        }
    }

    /// Records `event(offset)` for each of `offsets` not done yet (a stale receipt
    /// may have acked one meanwhile); returns how many, and the journal to fsync.
    fn record_done(
        &self,
        index: usize,
        offsets: &[Offset],
        event: impl Fn(Offset) -> Event,
        now: TimestampMs,
    ) -> Result<(usize, Arc<Log>), ApiError> {
        let (_, mut cell) = self.partition(index)?;
        let Cell { state, journal, .. } = &mut *cell;
        let events: Vec<Event> = offsets
            .iter()
            .filter(|o| !state.is_done(**o))
            .map(|o| event(*o))
            .collect();
        journal.record(state, &events, now)?;
        Ok((events.len(), Arc::clone(journal.log())))
    }

    /// The queue's numbers.
    pub fn stats(&self) -> QueueStats {
        let now = self.clock.now_ms();
        let mut stats = QueueStats {
            depth: 0,
            in_flight: 0,
            dead_lettered: 0,
            dropped: 0,
            partitions: Vec::with_capacity(self.partitions.len()),
        };
        for (index, partition) in self.partitions.iter().enumerate() {
            let Some(cell) = self.cell(index) else {
                continue;
            };
            let end = partition.log.watermark(partition.read_bound());
            stats.depth += cell.state.depth(end);
            stats.in_flight += cell.state.in_flight(now);
            stats.dead_lettered += cell.state.dead_lettered();
            stats.dropped += cell.state.dropped();
            stats.partitions.push(PartitionStats {
                partition: partition.id,
                start: partition.start(),
                end: partition.end(),
                floor: cell.state.floor(),
            });
        }
        stats
    }

    /// Periodic work: an fsync of each journal, then the deletion of message segments
    /// wholly below the ack floor and of journal segments below the last snapshot,
    /// and the recovery points their rate limit held back.
    /// Blocks on I/O: call it from a blocking context.
    pub fn maintain(&self) -> Result<(), BrokerError> {
        let keyed = self
            .idempotency
            .oldest_offsets(self.partitions.len(), self.clock.now_ms());
        for (index, partition) in self.partitions.iter().enumerate() {
            let Some(mut cell) = self.cell(index) else {
                continue;
            };
            // Messages sent with an Idempotency-Key stay on disk for the window,
            // acked or not, so that a retry after a restart is still recognised.
            let floor = match keyed.get(index).copied().flatten() {
                Some(oldest) => cell.state.floor().min(oldest),
                None => cell.state.floor(),
            };
            let trim = cell.journal.take_trim();
            let journal = Arc::clone(cell.journal.log());
            drop(cell);
            // The acks behind the floor are durable before the messages go.
            journal.flush()?;
            partition.log.delete_below(floor)?;
            if let Some(snapshot) = trim {
                journal.delete_below(snapshot)?;
            }
            journal.checkpoint()?;
            partition.log.checkpoint()?;
        }
        Ok(())
    }

    /// Closes every log cleanly (fsynced, with a clean-shutdown marker). Later
    /// operations fail.
    pub fn close(&self) -> Result<(), BrokerError> {
        let mut first_error = None;
        for (index, partition) in self.partitions.iter().enumerate() {
            let journal = self.cell(index).map(|c| Arc::clone(c.journal.log()));
            let closed = journal
                .map_or(Ok(()), |j| j.close())
                .and_then(|()| partition.log.close());
            if let Err(error) = closed {
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), |e| Err(e.into()))
    }
}

/// Offsets with a delivery count each.
type Picked = Vec<(Offset, u32)>;

impl Cell {
    /// Picks what a receive takes from this partition: up to `want` messages to
    /// lease, as (offset, the delivery this will be), and up to `dead_max` exhausted
    /// ones, as (offset, deliveries so far). Skips claimed messages.
    fn pick(
        &mut self,
        now: TimestampMs,
        end: Offset,
        want: usize,
        dead_max: usize,
        max_deliveries: u32,
    ) -> (Picked, Picked) {
        self.state.expire(now);
        let frontier = self.state.frontier();
        let mut take = Vec::new();
        let mut dead = Vec::new();
        for (offset, so_far) in self.state.candidates(now, end) {
            let new = offset >= frontier;
            if self.claimed.contains(&offset) {
                // New messages are taken in order: none skips a claimed one, or the
                // frontier would pass it and it could be lost when the claim ends.
                if new {
                    break;
                }
                continue;
            }
            if so_far >= max_deliveries {
                if dead.len() < dead_max {
                    dead.push((offset, so_far));
                }
            } else if take.len() < want {
                take.push((offset, so_far + 1));
            } else if new {
                break; // New messages are never exhausted: nothing more to find.
            }
            if take.len() >= want && dead.len() >= dead_max {
                break;
            }
        }
        (take, dead)
    }
}

/// Calls `f` with the record at each of `offsets` (ascending) that the partition
/// still holds.
/// Whether an ack or nack of `receipt` counts: it is of the message's current
/// delivery ([`State::check_ack`]), and the message is not being moved (to the
/// dead-letter queue, or back from it by a redrive): the move is its next delivery,
/// and an ack that counted meanwhile would leave it both acked and moved.
fn counts(state: &State, claimed: &BTreeSet<Offset>, receipt: &Receipt) -> bool {
    !claimed.contains(&receipt.offset) && state.check_ack(receipt.offset, receipt.delivery)
}

fn read_records(
    partition: &Partition,
    offsets: &[Offset],
    mut f: impl FnMut(RecordRef<'_>) -> Result<(), ApiError>,
) -> Result<Vec<Damaged>, ApiError> {
    let bound = partition.read_bound();
    let mut damaged = Vec::new();
    let mut i = 0;
    while let Some(&want) = offsets.get(i) {
        if want < partition.start() || want >= partition.log.watermark(bound) {
            tracing::warn!(partition = partition.id, offset = %want, "queue message missing from its log");
            i += 1;
            continue;
        }
        let bytes = partition.read_bytes_for(offsets.len() - i);
        let read = match partition.log.read(want, bytes, bound) {
            Ok(read) => read,
            // A read stops before a damaged batch, and a read from inside it fails:
            // this message is damaged, the ones after it may not be.
            Err(error @ log_engine::Error::CorruptBatch { .. }) => {
                damaged.push(Damaged {
                    offset: want,
                    error: error.into(),
                });
                i += 1;
                continue;
            }
            Err(error) => return Err(error.into()),
        };
        let before = i;
        for record in read.records() {
            let record = record.map_err(ApiError::internal)?;
            while offsets.get(i).is_some_and(|o| *o < record.offset) {
                i += 1;
            }
            if offsets.get(i) == Some(&record.offset) {
                f(record)?;
                i += 1;
            }
            if i >= offsets.len() {
                break;
            }
        }
        if i == before {
            tracing::warn!(partition = partition.id, offset = %want, "queue message unreadable");
            i += 1;
        }
    }
    Ok(damaged)
}

/// A message whose stored bytes fail their checks: it cannot be delivered,
/// dead-lettered or redriven.
struct Damaged {
    offset: Offset,
    error: ApiError,
}

/// A dead letter as a new message for its origin queue: its key, value and
/// application headers, the reserved ones left out.
fn to_new_message(record: &RecordRef<'_>) -> NewMessage<'static> {
    NewMessage {
        key: record
            .key
            .map(|k| String::from_utf8_lossy(k).into_owned().into()),
        value: record.value.to_vec().into(),
        headers: record
            .headers()
            .filter(|(k, _)| !k.starts_with(message::RESERVED_HEADER_PREFIX))
            .map(|(k, v)| {
                (
                    k.to_owned().into(),
                    String::from_utf8_lossy(v).into_owned().into(),
                )
            })
            .collect(),
    }
}

/// The idempotency key prefix of messages redriven from `partition` of queue
/// `dlq`: a hash of the name keeps keys short whatever the name's length. The
/// incarnation is in it because a queue made again under the same name reuses the
/// offsets of the one before: their letters must not share keys in the origin's
/// idempotency window (a redrive would be taken for a retry and send nothing).
fn redrive_key_prefix(dlq: &str, incarnation: u64, partition: u32) -> String {
    let mut hasher = Sha256::new();
    hasher.update(dlq.as_bytes());
    hasher.update(incarnation.to_be_bytes());
    let digest = hasher.finalize();
    let hash: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("mom-redrive:{hash}:{partition}")
}

fn min_some(a: Option<TimestampMs>, b: Option<TimestampMs>) -> Option<TimestampMs> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use log_engine::ManualClock;

    const KEY: [u8; 32] = [3; 32];

    fn settings(segment_bytes: u64) -> LogSettings {
        LogSettings {
            segment_bytes,
            retention_ms: None,
            retention_bytes: None,
            durability: Durability::Fsync,
            cache_window_bytes: None,
            flush_hint: Arc::default(),
            clustered: false,
        }
    }

    fn msg(value: &str) -> NewMessage<'static> {
        NewMessage {
            value: value.as_bytes().to_vec().into(),
            ..NewMessage::default()
        }
    }

    fn spec(name: &str) -> QueueSpec {
        QueueSpec {
            visibility_timeout_ms: 1_000,
            max_deliveries: 3,
            ..QueueSpec::new(name)
        }
    }

    fn create(dir: &Path, spec: QueueSpec) -> Queue {
        Queue::create(&dir.join(&spec.name), spec, settings(1 << 20), 60_000).unwrap()
    }

    fn clocked(queue: Queue) -> (Queue, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(message::now_ms()));
        (queue.with_clock(clock.clone()), clock)
    }

    async fn receive(queue: &Queue, max: usize) -> Vec<Delivery> {
        queue
            .receive(max, Duration::ZERO, None, &KEY, None)
            .await
            .unwrap()
    }

    fn receipts(deliveries: &[Delivery]) -> Vec<Receipt> {
        deliveries
            .iter()
            .map(|d| Receipt::verify(&d.receipt, &KEY).unwrap())
            .collect()
    }

    fn values(deliveries: &[Delivery]) -> Vec<String> {
        let mut v: Vec<String> = deliveries
            .iter()
            .map(|d| String::from_utf8(d.message.value.clone()).unwrap())
            .collect();
        v.sort();
        v
    }

    fn header<'a>(delivery: &'a Delivery, name: &str) -> Option<&'a [u8]> {
        delivery
            .message
            .headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
    }

    #[test]
    fn every_operation_can_run_on_a_multi_threaded_runtime() {
        fn send<T: Send>(_: T) {}
        let dir = tempfile::tempdir().unwrap();
        let queue = create(dir.path(), spec("jobs"));
        let receipts: Vec<Receipt> = Vec::new();
        send(queue.send(&[], None));
        send(queue.receive(1, Duration::ZERO, None, &KEY, None));
        send(queue.ack(&receipts));
        send(queue.nack(&receipts, 0));
        send(queue.redrive(1, |_| None));
    }

    #[test]
    fn message_ids_round_trip() {
        assert_eq!(message_id(3, Offset(42)), "3-42");
        assert_eq!(parse_message_id("3-42"), Some((3, Offset(42))));
        for bad in ["", "3", "3-", "-4", "a-1", "1-+2", "1-2-3", "99999999999-1"] {
            assert_eq!(parse_message_id(bad), None, "{bad}");
        }
        for name in [
            message::ORIGIN_QUEUE_HEADER,
            message::ORIGIN_PARTITION_HEADER,
            message::ORIGIN_OFFSET_HEADER,
            message::ORIGIN_DELIVERIES_HEADER,
            message::ORIGIN_TIME_HEADER,
        ] {
            assert!(name.starts_with(ORIGIN_HEADER_PREFIX));
        }
    }

    #[tokio::test]
    async fn send_receive_ack_and_the_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let queue = create(
            dir.path(),
            QueueSpec {
                partitions: 2,
                ..spec("jobs")
            },
        );
        let sent: Vec<NewMessage<'static>> = (0..5).map(|i| msg(&format!("m{i}"))).collect();
        let placement = queue.send(&sent, None).await.unwrap();
        assert_eq!(placement.len(), 5);
        assert!(placement.iter().any(|(p, _)| *p == 0) && placement.iter().any(|(p, _)| *p == 1));
        let got = receive(&queue, 10).await;
        assert_eq!(values(&got), ["m0", "m1", "m2", "m3", "m4"]);
        for d in &got {
            assert_eq!(d.delivery_count, 1);
            let (p, o) = parse_message_id(&d.id).unwrap();
            assert!(placement.contains(&(p, o)));
        }
        assert!(
            receive(&queue, 10).await.is_empty(),
            "leased messages are invisible"
        );
        let stats = queue.stats();
        assert_eq!((stats.depth, stats.in_flight), (5, 5));
        let receipts = receipts(&got);
        assert_eq!(queue.ack(&receipts[..2]).await.unwrap(), 2);
        assert_eq!(
            queue.ack(&receipts).await.unwrap(),
            3,
            "repeated acks do not count"
        );
        assert_eq!(queue.ack(&receipts).await.unwrap(), 0);
        let stats = queue.stats();
        assert_eq!((stats.depth, stats.in_flight), (0, 0));
        assert!(receive(&queue, 10).await.is_empty());
        queue.close().unwrap();
    }

    #[tokio::test]
    async fn a_receive_returns_at_most_its_byte_limit_and_gives_the_rest_back_uncounted() {
        let dir = tempfile::tempdir().unwrap();
        // One delivery each: a message given back counted as delivered would be dropped.
        let queue = create(
            dir.path(),
            QueueSpec {
                max_deliveries: 1,
                ..spec("jobs")
            },
        );
        let big = |i: u8| NewMessage {
            value: vec![i; RECEIVE_BYTES_MAX / 3 + 1].into(),
            ..NewMessage::default()
        };
        for i in 0..4 {
            queue.send(&[big(i)], None).await.unwrap();
        }
        queue.send(&[msg("small")], None).await.unwrap();
        let first = receive(&queue, 10).await;
        let size = |d: &[Delivery]| d.iter().map(|d| d.message.value.len()).sum::<usize>();
        assert_eq!(first.len(), 2, "two fit, a third would not");
        assert!(size(&first) <= RECEIVE_BYTES_MAX);
        let stats = queue.stats();
        assert_eq!((stats.in_flight, stats.dropped), (2, 0));
        let second = receive(&queue, 10).await;
        let offsets: Vec<u64> = second
            .iter()
            .map(|d| parse_message_id(&d.id).unwrap().1.0)
            .collect();
        assert_eq!(offsets, [2, 3, 4], "the rest, in order");
        assert!(second.iter().all(|d| d.delivery_count == 1));
        assert_eq!(second[2].message.value, b"small");
        let stats = queue.stats();
        assert_eq!((stats.in_flight, stats.dropped), (5, 0));
        queue.close().unwrap();
    }

    #[tokio::test]
    async fn bad_requests_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let queue = create(dir.path(), spec("jobs"));
        queue.send(&[msg("a")], None).await.unwrap();
        let got = receive(&queue, 1).await;
        let mut foreign = receipts(&got);
        foreign.push(Receipt {
            queue: "other".into(),
            ..foreign[0].clone()
        });
        let error = queue.ack(&foreign).await.unwrap_err();
        assert_eq!(error.code, crate::error::ErrorCode::BadRequest);
        let mut far = receipts(&got);
        far[0].partition = 7;
        assert!(queue.nack(&far, 0).await.is_err());
        assert_eq!(queue.stats().in_flight, 1, "nothing was acked");
        assert!(
            queue
                .receive(0, Duration::ZERO, None, &KEY, None)
                .await
                .is_err()
        );
        assert!(
            queue
                .receive(1, Duration::ZERO, Some(0), &KEY, None)
                .await
                .is_err()
        );
        assert!(
            queue
                .nack(&receipts(&got), VISIBILITY_TIMEOUT_MS_MAX + 1)
                .await
                .is_err()
        );
        assert!(queue.send(&[], None).await.is_err());
        let reserved = NewMessage {
            headers: vec![("mom.origin.queue".into(), "x".into())],
            ..msg("a")
        };
        assert!(queue.send(&[reserved], None).await.is_err());
        assert_eq!(queue.ack(&receipts(&got)).await.unwrap(), 1);
    }

    #[tokio::test]
    async fn an_expired_lease_redelivers_and_the_stale_receipt_does_not_count() {
        let dir = tempfile::tempdir().unwrap();
        let (queue, clock) = clocked(create(dir.path(), spec("jobs")));
        queue.send(&[msg("a"), msg("b")], None).await.unwrap();
        let first = receive(&queue, 2).await;
        clock.advance(999);
        assert!(receive(&queue, 2).await.is_empty());
        clock.advance(1);
        assert_eq!(queue.stats().in_flight, 0);
        // "b"'s lease ran out but nobody took it since: its ack still counts.
        let b = receipts(&first)
            .into_iter()
            .zip(&first)
            .find(|(_, d)| d.message.value == b"b")
            .map(|(r, _)| r)
            .unwrap();
        assert_eq!(queue.ack(std::slice::from_ref(&b)).await.unwrap(), 1);
        let second = receive(&queue, 2).await;
        assert_eq!(values(&second), ["a"]);
        assert_eq!(second[0].delivery_count, 2);
        assert_eq!(queue.ack(&receipts(&first)).await.unwrap(), 0, "stale");
        assert_eq!(queue.ack(&receipts(&second)).await.unwrap(), 1);
        assert_eq!(queue.stats().depth, 0);
    }

    #[tokio::test]
    async fn a_visibility_timeout_per_receive_and_a_nack_with_delay() {
        let dir = tempfile::tempdir().unwrap();
        let (queue, clock) = clocked(create(dir.path(), spec("jobs")));
        queue.send(&[msg("a")], None).await.unwrap();
        let first = queue
            .receive(1, Duration::ZERO, Some(10), &KEY, None)
            .await
            .unwrap();
        assert_eq!(receipts(&first)[0].deadline_ms, clock.now_ms() + 10);
        assert_eq!(queue.nack(&receipts(&first), 500).await.unwrap(), 1);
        assert_eq!(
            queue.nack(&receipts(&first), 0).await.unwrap(),
            1,
            "not redelivered yet"
        );
        assert_eq!(queue.nack(&receipts(&first), 500).await.unwrap(), 1);
        assert_eq!(queue.stats().in_flight, 0);
        clock.advance(499);
        assert!(receive(&queue, 1).await.is_empty());
        clock.advance(1);
        let second = receive(&queue, 1).await;
        assert_eq!(second[0].delivery_count, 2);
        assert_eq!(queue.nack(&receipts(&first), 0).await.unwrap(), 0, "stale");
        assert_eq!(queue.nack(&receipts(&second), 0).await.unwrap(), 1);
        assert_eq!(receive(&queue, 1).await[0].delivery_count, 3);
    }

    #[tokio::test]
    async fn an_ack_or_nack_of_a_message_being_moved_does_not_count() {
        let dir = tempfile::tempdir().unwrap();
        let queue = create(dir.path(), spec("jobs"));
        queue.send(&[msg("a")], None).await.unwrap();
        let got = receipts(&receive(&queue, 1).await);
        let offset = got[0].offset;
        // What a receive does while it moves the message to the dead-letter queue
        // after its lease ran out (and a redrive, on a dead-letter queue).
        queue.partition(0).unwrap().1.claimed.insert(offset);
        assert_eq!(queue.ack(&got).await.unwrap(), 0);
        assert_eq!(queue.nack(&got, 0).await.unwrap(), 0);
        // A move that failed releases its claim: the receipt counts again.
        queue.partition(0).unwrap().1.claimed.remove(&offset);
        assert_eq!(queue.ack(&got).await.unwrap(), 1);
    }

    #[tokio::test]
    async fn exhausted_messages_go_to_the_dead_letter_queue_and_redrive_back() {
        let dir = tempfile::tempdir().unwrap();
        let jobs = QueueSpec {
            max_deliveries: 2,
            dead_letter_queue: Some("jobs-dlq".into()),
            partitions: 3,
            ..spec("jobs")
        };
        let (jobs, clock) = clocked(create(dir.path(), jobs));
        let jobs = Arc::new(jobs);
        let dlq = Arc::new(create(
            dir.path(),
            QueueSpec {
                partitions: 2,
                ..spec("jobs-dlq")
            },
        ));
        let original = NewMessage {
            key: Some("k".into()),
            value: b"payload".to_vec().into(),
            headers: vec![("h".into(), "v".into())],
        };
        let placement = jobs
            .send(&[original.clone(), msg("ok")], None)
            .await
            .unwrap();
        let (p, offset) = placement[0];
        let mut last = Vec::new();
        for count in 1..=2 {
            let got = jobs
                .receive(2, Duration::ZERO, None, &KEY, Some(Arc::clone(&dlq) as _))
                .await
                .unwrap();
            let poison: Vec<Delivery> = got
                .iter()
                .filter(|d| d.message.value == b"payload")
                .cloned()
                .collect();
            assert_eq!(poison[0].delivery_count, count);
            let ok: Vec<Delivery> = got
                .into_iter()
                .filter(|d| d.message.value == b"ok")
                .collect();
            jobs.ack(&receipts(&ok)).await.unwrap();
            last = poison;
            clock.advance(1_000);
        }
        let got = jobs
            .receive(2, Duration::ZERO, None, &KEY, Some(Arc::clone(&dlq) as _))
            .await
            .unwrap();
        assert!(
            got.is_empty(),
            "the third delivery goes to the dead-letter queue"
        );
        assert_eq!(
            jobs.ack(&receipts(&last)).await.unwrap(),
            0,
            "done: dead-lettered"
        );
        let stats = jobs.stats();
        assert_eq!((stats.depth, stats.dead_lettered, stats.dropped), (0, 1, 0));

        let dead = receive(&dlq, 10).await;
        assert_eq!(dead.len(), 1);
        let d = &dead[0];
        assert_eq!(d.delivery_count, 1);
        assert_eq!(d.message.key.as_deref(), Some(b"k".as_slice()));
        assert_eq!(d.message.value, b"payload");
        assert_eq!(header(d, "h"), Some(b"v".as_slice()));
        assert_eq!(
            header(d, message::ORIGIN_QUEUE_HEADER),
            Some(b"jobs".as_slice())
        );
        let text = |name| String::from_utf8(header(d, name).unwrap().to_vec()).unwrap();
        assert_eq!(text(message::ORIGIN_PARTITION_HEADER), p.to_string());
        assert_eq!(text(message::ORIGIN_OFFSET_HEADER), offset.0.to_string());
        assert_eq!(text(message::ORIGIN_DELIVERIES_HEADER), "2");
        assert_eq!(
            text(message::ORIGIN_TIME_HEADER),
            clock.now_ms().to_string()
        );
        assert!(header(d, message::IDEMPOTENCY_HEADER).is_none());

        // Leased in the dead-letter queue: a redrive leaves it alone.
        let resolve =
            |name: &str| (name == "jobs").then(|| Arc::clone(&jobs) as Arc<dyn RedriveTarget>);
        assert_eq!(dlq.redrive(10, resolve).await.unwrap(), 0);
        dlq.nack(&receipts(&dead), 60_000).await.unwrap();
        assert_eq!(
            dlq.redrive(10, |_| None).await.unwrap(),
            0,
            "unknown origin: stays"
        );
        assert_eq!(dlq.stats().depth, 1);
        assert_eq!(dlq.redrive(10, resolve).await.unwrap(), 1);
        assert_eq!(dlq.redrive(10, resolve).await.unwrap(), 0);
        assert_eq!(dlq.stats().depth, 0);

        let back = receive(&jobs, 10).await;
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].delivery_count, 1, "a fresh count");
        assert_eq!(back[0].message.key.as_deref(), Some(b"k".as_slice()));
        assert_eq!(back[0].message.headers, [("h".to_owned(), b"v".to_vec())]);
        assert_eq!(
            back[0].message.partition, p,
            "the key routes it where it was"
        );
    }

    /// Queue `jobs`: one delivery per message, dead letters to `jobs-dlq`.
    fn jobs_with_one_delivery(dir: &Path) -> (Queue, Arc<ManualClock>) {
        let jobs = QueueSpec {
            max_deliveries: 1,
            dead_letter_queue: Some("jobs-dlq".into()),
            ..spec("jobs")
        };
        clocked(create(dir, jobs))
    }

    #[tokio::test]
    async fn a_dead_letter_queue_made_again_under_its_name_redrives_its_own_letters() {
        let dir = tempfile::tempdir().unwrap();
        let (jobs, clock) = jobs_with_one_delivery(dir.path());
        let jobs = Arc::new(jobs);
        let resolve =
            |name: &str| (name == "jobs").then(|| Arc::clone(&jobs) as Arc<dyn RedriveTarget>);
        for (incarnation, value) in [(1, "first"), (2, "second")] {
            // Each incarnation starts at offset 0 again, as a deleted and
            // recreated queue does.
            let generation = dir.path().join(format!("generation-{incarnation}"));
            let dlq = Arc::new(create(
                &generation,
                QueueSpec {
                    incarnation,
                    ..spec("jobs-dlq")
                },
            ));
            jobs.send(&[msg(value)], None).await.unwrap();
            for _ in 0..2 {
                jobs.receive(1, Duration::ZERO, None, &KEY, Some(Arc::clone(&dlq) as _))
                    .await
                    .unwrap();
                clock.advance(2_000);
            }
            assert_eq!(dlq.stats().depth, 1, "{value} dead-lettered");
            assert_eq!(dlq.redrive(10, resolve).await.unwrap(), 1);
            let back = receive(&jobs, 10).await;
            let values: Vec<&[u8]> = back.iter().map(|d| d.message.value.as_slice()).collect();
            assert_eq!(values, [value.as_bytes()], "{value} is back in its queue");
            jobs.ack(&receipts(&back)).await.unwrap();
        }
    }

    #[tokio::test]
    async fn after_a_failed_dead_letter_exhausted_messages_wait_before_the_next_try() {
        let dir = tempfile::tempdir().unwrap();
        let (jobs, clock) = jobs_with_one_delivery(dir.path());
        let closed = Arc::new(create(&dir.path().join("gone"), spec("jobs-dlq")));
        closed.close().unwrap();
        let dlq = Arc::new(create(dir.path(), spec("jobs-dlq")));
        jobs.send(&[msg("a")], None).await.unwrap();
        let receive_with = |dlq: &Arc<Queue>, wait_ms| {
            jobs.receive(
                1,
                Duration::from_millis(wait_ms),
                None,
                &KEY,
                Some(Arc::clone(dlq) as _),
            )
        };
        assert_eq!(receive_with(&dlq, 0).await.unwrap().len(), 1);
        clock.advance(2_000);
        // The dead-letter queue refuses the append: the message stays, undelivered.
        assert!(receive_with(&closed, 50).await.unwrap().is_empty());
        assert_eq!(jobs.stats().depth, 1);
        // No try before the pause is over, whatever the dead-letter queue.
        assert!(receive_with(&dlq, 50).await.unwrap().is_empty());
        assert_eq!(dlq.stats().depth, 0);
        clock.advance(DEAD_LETTER_RETRY_MS);
        assert!(receive_with(&dlq, 0).await.unwrap().is_empty());
        assert_eq!(dlq.stats().depth, 1, "moved once the pause is over");
        assert_eq!(jobs.stats().dead_lettered, 1);
    }

    #[tokio::test]
    async fn without_a_dead_letter_queue_exhausted_messages_are_dropped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let (queue, clock) = clocked(create(
            dir.path(),
            QueueSpec {
                max_deliveries: 1,
                ..spec("jobs")
            },
        ));
        queue.send(&[msg("a"), msg("b")], None).await.unwrap();
        assert_eq!(receive(&queue, 2).await.len(), 2);
        clock.advance(1_000);
        assert!(receive(&queue, 2).await.is_empty());
        let stats = queue.stats();
        assert_eq!((stats.depth, stats.dropped, stats.dead_lettered), (0, 2, 0));
    }

    #[tokio::test]
    async fn a_reopen_after_a_crash_keeps_acks_and_leases() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs");
        let (queue, clock) = clocked(create(dir.path(), spec("jobs")));
        let sent: Vec<NewMessage<'static>> = (0..5).map(|i| msg(&format!("m{i}"))).collect();
        queue.send(&sent, Some("once")).await.unwrap();
        let got = receive(&queue, 4).await;
        assert_eq!(values(&got), ["m0", "m1", "m2", "m3"]);
        let r = receipts(&got);
        queue.ack(&r[..2]).await.unwrap();
        // No close: the process dies with m2 and m3 in flight and m4 never delivered.
        drop(queue);
        let queue = Queue::open(&path, settings(1 << 20), 60_000)
            .unwrap()
            .with_clock(clock.clone());
        assert_eq!(queue.send(&sent, Some("once")).await.unwrap().len(), 5);
        let stats = queue.stats();
        assert_eq!(
            (stats.depth, stats.in_flight),
            (3, 2),
            "the retried send added nothing"
        );
        let fresh = receive(&queue, 10).await;
        assert_eq!(values(&fresh), ["m4"]);
        assert_eq!(
            queue.ack(&r[2..3]).await.unwrap(),
            1,
            "receipts survive a restart"
        );
        clock.advance(1_000);
        let again = receive(&queue, 10).await;
        assert_eq!(values(&again), ["m3", "m4"]);
        assert!(again.iter().all(|d| d.delivery_count == 2));
        assert_eq!(queue.ack(&r).await.unwrap(), 0);
        queue.ack(&receipts(&again)).await.unwrap();
        queue.close().unwrap();
        drop(queue);
        let queue = Queue::open(&path, settings(1 << 20), 60_000).unwrap();
        assert_eq!(queue.stats().depth, 0);
        assert!(
            receive(&queue, 10).await.is_empty(),
            "acked is never delivered again"
        );
    }

    #[tokio::test]
    async fn a_long_poll_returns_soon_after_a_send_or_a_nack() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Arc::new(create(
            dir.path(),
            QueueSpec {
                partitions: 4,
                ..spec("jobs")
            },
        ));
        let started = std::time::Instant::now();
        let empty = queue
            .receive(1, Duration::from_millis(150), None, &KEY, None)
            .await
            .unwrap();
        assert!(empty.is_empty());
        assert!(started.elapsed() >= Duration::from_millis(150));

        let waiter = {
            let queue = Arc::clone(&queue);
            tokio::spawn(async move {
                let started = std::time::Instant::now();
                let got = queue
                    .receive(5, Duration::from_secs(20), None, &KEY, None)
                    .await
                    .unwrap();
                (got, started.elapsed())
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        queue.send(&[msg("hello")], None).await.unwrap();
        let (got, waited) = waiter.await.unwrap();
        assert_eq!(values(&got), ["hello"]);
        assert!(waited < Duration::from_secs(5), "{waited:?}");

        let waiter = {
            let queue = Arc::clone(&queue);
            tokio::spawn(async move {
                queue
                    .receive(5, Duration::from_secs(20), None, &KEY, None)
                    .await
                    .unwrap()
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(queue.nack(&receipts(&got), 0).await.unwrap(), 1);
        let again = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(again[0].delivery_count, 2);

        // A lease running out (1 s) wakes a waiting receive too.
        let started = std::time::Instant::now();
        let third = queue
            .receive(5, Duration::from_secs(20), None, &KEY, None)
            .await
            .unwrap();
        assert_eq!(third[0].delivery_count, 3);
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(800), "{waited:?}");
        assert!(waited < Duration::from_secs(5), "{waited:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn competing_consumers_each_get_every_message_once() {
        let dir = tempfile::tempdir().unwrap();
        let spec = QueueSpec {
            partitions: 3,
            visibility_timeout_ms: 60_000,
            durability: Durability::Interval,
            ..spec("jobs")
        };
        let queue = Arc::new(create(dir.path(), spec));
        let total = 300;
        for chunk in 0..10 {
            let batch: Vec<NewMessage<'static>> = (0..total / 10)
                .map(|i| msg(&format!("{}", chunk * (total / 10) + i)))
                .collect();
            queue.send(&batch, None).await.unwrap();
        }
        let consumers: Vec<_> = (0..4)
            .map(|_| {
                let queue = Arc::clone(&queue);
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    loop {
                        let got = queue
                            .receive(7, Duration::from_millis(100), None, &KEY, None)
                            .await
                            .unwrap();
                        if got.is_empty() {
                            return seen;
                        }
                        assert_eq!(queue.ack(&receipts(&got)).await.unwrap(), got.len());
                        seen.extend(got.into_iter().map(|d| d.id));
                    }
                })
            })
            .collect();
        let mut all = Vec::new();
        for consumer in consumers {
            all.extend(consumer.await.unwrap());
        }
        let count = all.len();
        all.sort();
        all.dedup();
        assert_eq!((count, all.len()), (total, total));
        assert_eq!(queue.stats().depth, 0);
    }

    #[tokio::test]
    async fn maintenance_reclaims_the_space_below_the_ack_floor() {
        let dir = tempfile::tempdir().unwrap();
        let spec = spec("jobs");
        let queue = Queue::create(&dir.path().join("jobs"), spec, settings(4096), 60_000).unwrap();
        let body = "x".repeat(200);
        for _ in 0..100 {
            queue.send(&[msg(&body)], None).await.unwrap();
        }
        let log = Arc::clone(&queue.partitions()[0].log);
        let segments = log.segment_count();
        assert!(segments > 4, "{segments}");
        let mut got = receive(&queue, 100).await;
        assert_eq!(got.len(), 100);
        got.sort_by_key(|d| d.message.offset);
        // The first message is not acked: it holds the floor, nothing goes.
        queue.ack(&receipts(&got[1..])).await.unwrap();
        queue.maintain().unwrap();
        assert_eq!(log.segment_count(), segments);
        assert_eq!(queue.stats().partitions[0].floor, Offset(0));
        queue.ack(&receipts(&got[..1])).await.unwrap();
        queue.maintain().unwrap();
        assert_eq!(log.segment_count(), 1, "only the active segment stays");
        let stats = queue.stats();
        assert_eq!(stats.partitions[0].floor, Offset(100));
        assert!(
            stats.partitions[0].start >= Offset(90),
            "{:?}",
            stats.partitions[0]
        );
        // Reopened, the queue still knows everything below the start is done.
        queue.close().unwrap();
        drop((queue, log));
        let queue = Queue::open(&dir.path().join("jobs"), settings(4096), 60_000).unwrap();
        queue.send(&[msg("new")], None).await.unwrap();
        assert_eq!(values(&receive(&queue, 10).await), ["new"]);
    }

    #[tokio::test]
    async fn messages_sent_with_a_key_stay_on_disk_for_the_window_so_a_retry_is_recognised() {
        for window_ms in [60_000, 1] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("jobs");
            let queue = Queue::create(&path, spec("jobs"), settings(4096), window_ms).unwrap();
            let first = queue
                .send(&[msg("charge 42")], Some("order-42"))
                .await
                .unwrap();
            let body = "x".repeat(200);
            for _ in 0..100 {
                queue.send(&[msg(&body)], None).await.unwrap();
            }
            let got = receive(&queue, 200).await;
            assert_eq!(queue.ack(&receipts(&got)).await.unwrap(), 101);
            tokio::time::sleep(Duration::from_millis(5)).await;
            queue.maintain().unwrap();
            let start = queue.stats().partitions[0].start;
            queue.close().unwrap();
            drop(queue);
            if window_ms == 1 {
                assert!(start > Offset(0), "past the window the space goes: {start}");
                continue;
            }
            assert_eq!(start, Offset(0), "the keyed message's segment stays");
            // A crash, then the client's retry: recognised, nothing sent again.
            let queue = Queue::open(&path, settings(4096), window_ms).unwrap();
            let again = queue
                .send(&[msg("charge 42")], Some("order-42"))
                .await
                .unwrap();
            assert_eq!(again, first);
            assert_eq!(queue.stats().depth, 0);
        }
    }
}
