//! `Idempotency-Key` deduplication: a retried request with the same key, within the
//! window, appends nothing and gets the first answer again.
//!
//! The key travels with the messages in the log (a reserved header), so the window is
//! rebuilt from the log's recent tail when the broker starts, and a retry after a
//! restart is recognised too.
//!
//! So does a fingerprint of the request's messages (CRC-32 of their keys, values and
//! headers): a key used again, within the window, for a request with other messages
//! is refused with 422 `idempotency_key_reused` rather than answered with the first
//! request's offsets while the new messages are dropped (as Stripe and the IETF
//! `Idempotency-Key` draft do). Records stored before fingerprints were kept match any
//! request.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};

use log_engine::{Offset, TimestampMs};
use tokio::sync::Notify;

use crate::error::ApiError;
use crate::message::{NewMessage, now_ms};

/// An `Idempotency-Key` with the fingerprint of its request's messages
/// ([`crate::message::fingerprint`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestKey<'a> {
    /// The key, as the client sent it.
    pub key: &'a str,
    /// The fingerprint of the request's messages.
    pub fingerprint: u32,
}

impl<'a> RequestKey<'a> {
    /// The request key of `messages` sent with `key`, if any (the fingerprint is
    /// computed only then).
    pub fn of(key: Option<&'a str>, messages: &[NewMessage<'_>]) -> Option<RequestKey<'a>> {
        key.map(|key| RequestKey {
            key,
            fingerprint: crate::message::fingerprint(messages),
        })
    }
}

/// The longest key accepted.
pub const KEY_LEN_MAX: usize = 256;
/// Keys remembered per topic or queue; the oldest are forgotten first beyond it.
pub const KEYS_MAX: usize = 100_000;

/// The answer to a produce or send: one (partition, offset) per message, in order.
pub type Placement = Vec<(u32, Offset)>;

/// The messages of a request that a crash cut short which are already stored, by
/// their index in the request: a retry appends only the others.
pub type Stored = std::collections::BTreeMap<usize, (u32, Offset)>;

/// A request that failed after some of its messages were stored: a retry with the
/// same key appends only the others.
#[derive(Debug)]
pub struct Failed {
    /// Why it failed.
    pub error: ApiError,
    /// The messages of the request stored so far (by earlier attempts too).
    pub stored: Stored,
}

impl From<ApiError> for Failed {
    fn from(error: ApiError) -> Failed {
        Failed {
            error,
            stored: Stored::new(),
        }
    }
}

#[derive(Debug)]
enum Entry {
    /// A request with this key is being served; others wait for it.
    Pending(Arc<Notify>),
    /// Served: the answer, when, and the request's fingerprint (none for records
    /// stored without one).
    Done(Arc<Placement>, TimestampMs, Option<u32>),
    /// Cut short (found so in the log after a restart or a failover, or failed after
    /// storing part of it): the messages already stored, when, and the fingerprint.
    Partial(Arc<Stored>, TimestampMs, Option<u32>),
}

/// The answer to a key used again for a request with other messages.
fn reused(key: &str) -> ApiError {
    ApiError::new(
        crate::error::ErrorCode::IdempotencyKeyReused,
        format!(
            "Idempotency-Key {key:?} was used within the idempotency window for a request \
             with other messages; a new request needs a new key"
        ),
    )
}

/// Whether a request with `fingerprint` may take the entry remembered with `kept`.
fn same_request(kept: Option<u32>, fingerprint: u32) -> bool {
    kept.is_none_or(|kept| kept == fingerprint)
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    /// Keys in the order they completed, for expiry and the size bound.
    order: VecDeque<(String, TimestampMs)>,
}

/// The recent keys of one topic or queue.
#[derive(Debug)]
pub struct IdempotencyWindow {
    window_ms: i64,
    inner: Mutex<Inner>,
}

/// Removes a pending entry if its request is dropped before it finished.
struct PendingGuard<'a> {
    window: &'a IdempotencyWindow,
    key: &'a str,
    notify: Arc<Notify>,
    armed: bool,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            let mut inner = self.window.lock();
            if matches!(inner.entries.get(self.key), Some(Entry::Pending(_))) {
                inner.entries.remove(self.key);
            }
        }
        self.notify.notify_waiters();
    }
}

impl IdempotencyWindow {
    /// A window that remembers keys for `window_ms` (the configuration bounds it;
    /// a longer one counts as the longest an `i64` holds, never as a negative).
    pub fn new(window_ms: u64) -> IdempotencyWindow {
        IdempotencyWindow {
            window_ms: i64::try_from(window_ms).unwrap_or(i64::MAX),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Makes the keys a scan of the log `found` (see [`rebuild_window`]) the
    /// window's finished keys, in one step: requests in progress keep theirs, and so
    /// do requests that finished after the scan began (`scan_started`); every other
    /// finished key is forgotten, since the log's tail may have been cut since this
    /// node last led. Between the two, no request finds a key missing that the log
    /// holds.
    fn replace_finished(&self, found: Vec<(String, Entry)>, scan_started: TimestampMs) {
        let mut inner = self.lock();
        let mut entries = std::mem::take(&mut inner.entries);
        entries.retain(|_, entry| match entry {
            Entry::Pending(_) => true,
            Entry::Done(_, at, _) | Entry::Partial(_, at, _) => *at >= scan_started,
        });
        for (key, entry) in found {
            entries.entry(key).or_insert(entry);
        }
        // One place in the order per key, oldest first.
        let mut order: Vec<(String, TimestampMs)> = entries
            .iter()
            .filter_map(|(key, entry)| match entry {
                Entry::Pending(_) => None,
                Entry::Done(_, at, _) | Entry::Partial(_, at, _) => Some((key.clone(), *at)),
            })
            .collect();
        order.sort_by_key(|(_, at)| *at);
        inner.entries = entries;
        inner.order = order.into();
        self.expire(&mut inner, now_ms());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks a key from a request header.
    pub fn validate_key(key: &str) -> Result<(), ApiError> {
        if key.is_empty() || key.len() > KEY_LEN_MAX || key.chars().any(char::is_control) {
            return Err(ApiError::bad_request(format!(
                "Idempotency-Key must be 1 to {KEY_LEN_MAX} printable characters"
            )));
        }
        Ok(())
    }

    /// Runs `serve` once per key: with no key it just runs; with a key seen within the
    /// window it returns the first answer; while a request with the key is in progress,
    /// it waits for that one. A failed request leaves only what it stored, so a retry
    /// appends the rest. `serve` gets the messages of the request already stored
    /// (empty, unless an earlier attempt was cut short) and appends only the others.
    pub async fn run<F, Fut>(
        &self,
        request: Option<RequestKey<'_>>,
        serve: F,
    ) -> Result<Arc<Placement>, ApiError>
    where
        F: FnOnce(Arc<Stored>) -> Fut,
        Fut: Future<Output = Result<Placement, Failed>>,
    {
        let Some(RequestKey { key, fingerprint }) = request else {
            return serve(Arc::default())
                .await
                .map(Arc::new)
                .map_err(|f| f.error);
        };
        let mut stored = Arc::default();
        let notify = loop {
            let waiting = {
                let mut inner = self.lock();
                let now = now_ms();
                self.expire(&mut inner, now);
                match inner.entries.get(key) {
                    Some(Entry::Done(_, _, kept) | Entry::Partial(_, _, kept))
                        if !same_request(*kept, fingerprint) =>
                    {
                        return Err(reused(key));
                    }
                    Some(Entry::Done(answer, _, _)) => return Ok(Arc::clone(answer)),
                    Some(Entry::Pending(notify)) => Arc::clone(notify),
                    Some(Entry::Partial(partial, _, _)) => {
                        stored = Arc::clone(partial);
                        let notify = Arc::new(Notify::new());
                        inner
                            .entries
                            .insert(key.to_owned(), Entry::Pending(Arc::clone(&notify)));
                        break notify;
                    }
                    None => {
                        let notify = Arc::new(Notify::new());
                        inner
                            .entries
                            .insert(key.to_owned(), Entry::Pending(Arc::clone(&notify)));
                        break notify;
                    }
                }
            };
            let notified = waiting.notified();
            // The entry may have completed between the lock and `notified`.
            if !matches!(self.lock().entries.get(key), Some(Entry::Pending(_))) {
                continue;
            }
            notified.await;
        };
        let mut guard = PendingGuard {
            window: self,
            key,
            notify,
            armed: true,
        };
        let result = serve(stored).await;
        match &result {
            Ok(answer) => {
                self.remember_at(key, Arc::new(answer.clone()), now_ms(), Some(fingerprint));
                guard.armed = false;
            }
            Err(failed) if !failed.stored.is_empty() => {
                let stored = Arc::new(failed.stored.clone());
                self.remember_partial(key, stored, now_ms(), Some(fingerprint));
                guard.armed = false;
            }
            Err(_) => {}
        }
        drop(guard);
        result.map(Arc::new).map_err(|f| f.error)
    }

    /// Records a key whose request completed at `at_ms`, with its fingerprint (none
    /// when the log kept none).
    pub fn remember_at(
        &self,
        key: &str,
        answer: Arc<Placement>,
        at_ms: TimestampMs,
        fingerprint: Option<u32>,
    ) {
        let mut inner = self.lock();
        inner
            .entries
            .insert(key.to_owned(), Entry::Done(answer, at_ms, fingerprint));
        inner.order.push_back((key.to_owned(), at_ms));
        self.expire(&mut inner, now_ms());
    }

    /// Records a request found cut short in the log, with what of it is stored.
    pub fn remember_partial(
        &self,
        key: &str,
        stored: Arc<Stored>,
        at_ms: TimestampMs,
        fingerprint: Option<u32>,
    ) {
        let mut inner = self.lock();
        inner
            .entries
            .insert(key.to_owned(), Entry::Partial(stored, at_ms, fingerprint));
        inner.order.push_back((key.to_owned(), at_ms));
        self.expire(&mut inner, now_ms());
    }

    fn expire(&self, inner: &mut Inner, now: TimestampMs) {
        while let Some((key, at)) = inner.order.front() {
            let too_many = inner.order.len() > KEYS_MAX;
            if !too_many && now - *at < self.window_ms {
                break;
            }
            let key = key.clone();
            let at = *at;
            inner.order.pop_front();
            let stale = matches!(
                inner.entries.get(&key),
                Some(Entry::Done(_, t, _) | Entry::Partial(_, t, _)) if *t == at
            );
            if stale {
                inner.entries.remove(&key);
            }
        }
    }

    /// Per partition (of `partitions`), the lowest offset of a message stored by a
    /// request whose key is still within the window; `None` where there is none.
    /// Records from there on must stay in the log: after a restart the window is
    /// rebuilt from them, and a retry is recognised only if they are still there.
    pub fn oldest_offsets(&self, partitions: usize, now: TimestampMs) -> Vec<Option<Offset>> {
        let mut oldest: Vec<Option<Offset>> = vec![None; partitions];
        let mut lower = |partition: u32, offset: Offset| {
            if let Some(slot) = oldest.get_mut(partition as usize) {
                *slot = Some(slot.map_or(offset, |o| o.min(offset)));
            }
        };
        let inner = self.lock();
        for entry in inner.entries.values() {
            match entry {
                Entry::Done(placement, at, _) if now - *at < self.window_ms => {
                    for &(partition, offset) in placement.iter() {
                        lower(partition, offset);
                    }
                }
                Entry::Partial(stored, at, _) if now - *at < self.window_ms => {
                    for &(partition, offset) in stored.values() {
                        lower(partition, offset);
                    }
                }
                _ => {}
            }
        }
        oldest
    }

    /// The window length in milliseconds.
    pub fn window_ms(&self) -> i64 {
        self.window_ms
    }
}

/// The most bytes of each partition's tail scanned to rebuild an idempotency window.
pub const IDEMPOTENCY_SCAN_BYTES_MAX: u64 = 64 << 20;

/// Makes the idempotency keys found in the partitions' records newer than
/// `since_ms` the finished keys of `window` (in one step, keeping the requests in
/// progress and those finished while the scan ran), scanning at most
/// [`IDEMPOTENCY_SCAN_BYTES_MAX`] per partition. Called on a start, and by a node
/// that becomes leader, as the logs hold it then.
pub fn rebuild_window(
    window: &IdempotencyWindow,
    partitions: &[Arc<crate::partition::Partition>],
    since_ms: i64,
) {
    /// What the log holds of one key's request.
    #[derive(Default)]
    struct Seen {
        /// The request's message count.
        count: usize,
        /// The request's fingerprint, when its records carry one.
        fingerprint: Option<u32>,
        /// Per message index: where it is and when it was stored (the newest copy
        /// wins, should a retry have stored a request a crash had cut short).
        messages: std::collections::BTreeMap<usize, (u32, Offset, i64)>,
    }
    let scan_started = now_ms();
    let mut found: std::collections::BTreeMap<String, Seen> = std::collections::BTreeMap::new();
    for partition in partitions {
        let log = &partition.log;
        let Ok(Some(mut from)) = log.offset_for_timestamp(since_ms) else {
            continue;
        };
        let mut scanned = 0u64;
        while from < log.log_end_offset() && scanned < IDEMPOTENCY_SCAN_BYTES_MAX {
            let Ok(read) = log.read(from, 1 << 20, log_engine::ReadBound::LogEnd) else {
                break;
            };
            scanned += read.bytes().len() as u64;
            for record in read.records().flatten() {
                let Some(idem) =
                    crate::message::reserved_header(&record, crate::message::IDEMPOTENCY_HEADER)
                        .and_then(crate::message::parse_idempotency)
                else {
                    continue;
                };
                let index = idem.index;
                let seen = found.entry(idem.key.to_owned()).or_default();
                seen.count = idem.count;
                seen.fingerprint = idem.fingerprint;
                let copy = (partition.id, record.offset, record.timestamp);
                let newer = seen
                    .messages
                    .get(&index)
                    .is_none_or(|(_, _, at)| *at <= record.timestamp);
                if newer {
                    seen.messages.insert(index, copy);
                }
            }
            if read.next_offset() <= from {
                break;
            }
            from = read.next_offset();
        }
    }
    let mut entries = Vec::with_capacity(found.len());
    for (key, seen) in found {
        let at = seen
            .messages
            .values()
            .map(|(_, _, at)| *at)
            .max()
            .unwrap_or(0);
        let complete =
            seen.messages.len() == seen.count && seen.messages.keys().copied().eq(0..seen.count);
        if complete {
            let placement: Placement = seen
                .messages
                .into_values()
                .map(|(p, o, _)| (p, o))
                .collect();
            entries.push((key, Entry::Done(Arc::new(placement), at, seen.fingerprint)));
        } else {
            // A request a crash cut short: its retry appends only what is missing.
            let stored: Stored = seen
                .messages
                .into_iter()
                .map(|(i, (p, o, _))| (i, (p, o)))
                .collect();
            entries.push((key, Entry::Partial(Arc::new(stored), at, seen.fingerprint)));
        }
    }
    window.replace_finished(entries, scan_started);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn key(key: &str, fingerprint: u32) -> RequestKey<'_> {
        RequestKey { key, fingerprint }
    }

    #[tokio::test]
    async fn a_key_is_served_once_and_replayed() {
        let window = IdempotencyWindow::new(60_000);
        let calls = AtomicUsize::new(0);
        let serve = |_| async {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok(vec![(0, Offset(7))])
        };
        let first = window.run(Some(key("k", 1)), serve).await.unwrap();
        let second = window.run(Some(key("k", 1)), serve).await.unwrap();
        assert_eq!(first, second);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        window.run(None, serve).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_failed_request_can_be_retried() {
        let window = IdempotencyWindow::new(60_000);
        let failed = window
            .run(Some(key("k", 1)), |_| async {
                Err(ApiError::bad_request("no").into())
            })
            .await;
        assert!(failed.is_err());
        let ok = window
            .run(Some(key("k", 1)), |_| async { Ok(vec![(1, Offset(1))]) })
            .await;
        assert_eq!(*ok.unwrap(), vec![(1, Offset(1))]);
    }

    #[tokio::test]
    async fn a_retry_after_a_partial_failure_appends_only_the_rest() {
        let window = IdempotencyWindow::new(60_000);
        let failed = window
            .run(Some(key("k", 1)), |_| async {
                Err(Failed {
                    error: ApiError::bad_request("partition 1 failed"),
                    stored: Stored::from([(0, (0, Offset(5)))]),
                })
            })
            .await;
        assert!(failed.is_err());
        let ok = window
            .run(Some(key("k", 1)), |stored| async move {
                assert_eq!(*stored, Stored::from([(0, (0, Offset(5)))]));
                Ok(vec![(0, Offset(5)), (1, Offset(9))])
            })
            .await;
        assert_eq!(*ok.unwrap(), vec![(0, Offset(5)), (1, Offset(9))]);
    }

    #[tokio::test]
    async fn concurrent_requests_with_one_key_run_once() {
        let window = Arc::new(IdempotencyWindow::new(60_000));
        let calls = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let window = Arc::clone(&window);
                let calls = Arc::clone(&calls);
                tokio::spawn(async move {
                    window
                        .run(Some(key("same", 1)), |_| async {
                            calls.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                            Ok(vec![(0, Offset(1))])
                        })
                        .await
                })
            })
            .collect();
        for task in tasks {
            assert_eq!(*task.await.unwrap().unwrap(), vec![(0, Offset(1))]);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    fn found(keys: std::ops::Range<usize>, at: TimestampMs) -> Vec<(String, Entry)> {
        keys.map(|i| {
            let placement = Arc::new(vec![(0, Offset(i as u64))]);
            (format!("k{i}"), Entry::Done(placement, at, Some(1)))
        })
        .collect()
    }

    #[tokio::test]
    async fn a_rebuild_from_the_log_keeps_what_the_log_holds_and_requests_under_way() {
        let window = IdempotencyWindow::new(60_000);
        let unserved = |_| async { Err::<Placement, Failed>(ApiError::internal("served").into()) };
        // Found again by each take-over: more than half the bound, twice, is still
        // one entry per key, and none is forgotten.
        let keys = KEYS_MAX / 2 + 1;
        let at = now_ms() - 1_000;
        for _ in 0..3 {
            window.replace_finished(found(0..keys, at), now_ms());
        }
        for i in [0, keys / 2, keys - 1] {
            let answer = window.run(Some(key(&format!("k{i}"), 1)), unserved).await;
            assert_eq!(*answer.unwrap(), vec![(0, Offset(i as u64))], "k{i}");
        }
        // A key finished before the scan and not in the log is forgotten (the log was
        // cut); one finished while the scan ran stays.
        window.remember_at("cut", Arc::new(vec![(0, Offset(9))]), now_ms() - 10, None);
        let scan_started = now_ms();
        window.remember_at("during", Arc::new(vec![(0, Offset(8))]), scan_started, None);
        window.replace_finished(found(0..1, at), scan_started);
        let during = window.run(Some(key("during", 1)), unserved).await;
        assert_eq!(*during.unwrap(), vec![(0, Offset(8))]);
        let cut = window
            .run(Some(key("cut", 1)), |_| async { Ok(vec![(0, Offset(10))]) })
            .await;
        assert_eq!(*cut.unwrap(), vec![(0, Offset(10))], "served anew");
    }

    #[tokio::test]
    async fn a_key_used_again_for_other_messages_is_refused() {
        let window = IdempotencyWindow::new(60_000);
        let serve = |_| async { Ok(vec![(0, Offset(7))]) };
        window.run(Some(key("k", 1)), serve).await.unwrap();
        let reused = window.run(Some(key("k", 2)), serve).await.unwrap_err();
        assert_eq!(reused.code, crate::error::ErrorCode::IdempotencyKeyReused);
        assert!(reused.message.contains("new key"), "{}", reused.message);
        // A partly stored request too; and one remembered without a fingerprint
        // (stored before fingerprints) takes any.
        window.remember_partial("p", Arc::new(Stored::new()), now_ms(), Some(3));
        assert!(window.run(Some(key("p", 4)), serve).await.is_err());
        window.remember_at("old", Arc::new(vec![(0, Offset(1))]), now_ms(), None);
        let old = window.run(Some(key("old", 9)), serve).await.unwrap();
        assert_eq!(*old, vec![(0, Offset(1))]);
    }

    #[tokio::test]
    async fn a_window_too_long_for_an_i64_still_remembers_keys() {
        let window = IdempotencyWindow::new(u64::MAX);
        assert_eq!(window.window_ms(), i64::MAX);
        let first = window
            .run(Some(key("k", 1)), |_| async { Ok(vec![(0, Offset(3))]) })
            .await
            .unwrap();
        let again = window
            .run(Some(key("k", 1)), |_| async { Ok(vec![(0, Offset(4))]) })
            .await
            .unwrap();
        assert_eq!(
            first, again,
            "the second request is answered from the window"
        );
    }
}
