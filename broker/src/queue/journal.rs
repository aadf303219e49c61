//! The state journal of one queue partition: its [`Event`]s, one per record of a
//! log-engine [`Log`] of its own, replayed on open.
//!
//! - **Write ahead.** [`Journal::record`] appends an operation's events as one batch
//!   and applies them to the state only when the append succeeded, so the state
//!   never holds what the journal does not.
//! - **No fsync under a lock.** The journal's log never syncs on its own
//!   ([`FlushPolicy::MANUAL`]); the queue appends under the partition's lock and
//!   waits for durability after letting go of it ([`Log::flush`], which group
//!   commits concurrent waiters). With `fsync` durability, the events that make a
//!   message done (acks, dead letters, drops, redrives) are fsynced before the
//!   request is answered; leases and nacks are not (losing one to a power cut only
//!   delivers a message earlier again). Periodic maintenance fsyncs the rest.
//! - **Bounded.** After [`SNAPSHOT_EVERY_EVENTS`] events the journal appends a
//!   snapshot of the whole state; once that snapshot is durable, maintenance deletes
//!   the segments wholly below it ([`Journal::take_trim`]). Replay starts at the
//!   log's first record, which may precede the last snapshot: the events before it
//!   are applied and then replaced by it.

use std::path::Path;
use std::sync::Arc;

use log_engine::{FlushPolicy, Log, LogConfig, Offset, ReadBound, RecordBatchBuilder, TimestampMs};

use super::event::Event;
use super::state::State;
use crate::error::BrokerError;

/// Events between two snapshots. Replay reads at most about this many events plus
/// one snapshot (and what the not yet deleted segments hold).
pub const SNAPSHOT_EVERY_EVENTS: u64 = 10_000;
/// The journal's segment size: small, so that segments below a snapshot can go soon.
pub const JOURNAL_SEGMENT_BYTES: u64 = 4 << 20;
/// The largest journal batch. A snapshot of a partition at
/// [`super::OUTSTANDING_MAX`] takes about 3.6 MB; this leaves room to spare.
pub const JOURNAL_BATCH_BYTES_MAX: u32 = 16 << 20;
/// The journal's index size: 4 MiB segments need only about 1000 entries.
const JOURNAL_INDEX_BYTES: u32 = 64 << 10;
/// Bytes read per step of a replay.
const REPLAY_READ_BYTES: usize = 1 << 20;

/// The state journal of one partition.
#[derive(Debug)]
pub struct Journal {
    /// The events; shared so a caller can fsync it without holding the partition's
    /// lock.
    log: Arc<Log>,
    /// Events appended since the last snapshot (or, after a replay, since the last
    /// snapshot replayed).
    events_since_snapshot: u64,
    /// The offset of the last snapshot written and not yet trimmed below.
    trim_below: Option<Offset>,
}

impl Journal {
    /// Opens (or creates) the journal in `dir` and replays it into a state.
    pub fn open(dir: &Path) -> Result<(Journal, State), BrokerError> {
        let config = LogConfig {
            segment_bytes_max: JOURNAL_SEGMENT_BYTES,
            index_bytes_max: JOURNAL_INDEX_BYTES,
            batch_bytes_max: JOURNAL_BATCH_BYTES_MAX,
            flush: FlushPolicy::MANUAL,
            retention_bytes_max: None,
            retention_ms_max: None,
            // The broker locks its whole data directory instead: one descriptor
            // per log fewer.
            lock_directory: false,
            ..LogConfig::default()
        };
        let log = Log::open(dir, config)?;
        let mut journal = Journal {
            log: Arc::new(log),
            events_since_snapshot: 0,
            trim_below: None,
        };
        let state = journal.replay()?;
        Ok((journal, state))
    }

    /// Replays the journal from its first record into a new state (on open, and on
    /// a node that takes over the queue partition with a journal copied from the
    /// old leader).
    pub fn replay(&mut self) -> Result<State, BrokerError> {
        self.events_since_snapshot = 0;
        self.trim_below = None;
        let mut state = State::new();
        let mut from = self.log.log_start_offset();
        let end = self.log.log_end_offset();
        while from < end {
            let read = self.log.read(from, REPLAY_READ_BYTES, ReadBound::LogEnd)?;
            for record in read.records() {
                let record = record?;
                let event = Event::decode(record.value).map_err(|e| BrokerError::BadMetadata {
                    path: self.log.dir().to_path_buf(),
                    reason: format!("record {}: {e}", record.offset),
                })?;
                match event {
                    Event::Snapshot(_) => self.events_since_snapshot = 0,
                    _ => self.events_since_snapshot += 1,
                }
                state.apply(&event);
            }
            if read.next_offset() <= from {
                break;
            }
            from = read.next_offset();
        }
        Ok(state)
    }

    /// The journal's log.
    pub fn log(&self) -> &Arc<Log> {
        &self.log
    }

    /// Appends `events` as one batch, then applies them to `state`; on an error
    /// nothing is applied. Writes a snapshot when one is due. Not durable by itself:
    /// see [`Log::flush`].
    pub fn record(
        &mut self,
        state: &mut State,
        events: &[Event],
        now_ms: TimestampMs,
    ) -> Result<(), BrokerError> {
        if events.is_empty() {
            return Ok(());
        }
        self.append(events, now_ms)?;
        for event in events {
            state.apply(event);
        }
        self.events_since_snapshot += events.len() as u64;
        if self.events_since_snapshot >= SNAPSHOT_EVERY_EVENTS {
            // The events are in; a failed snapshot only postpones the trimming.
            if let Err(error) = self.write_snapshot(state, now_ms) {
                tracing::warn!(dir = %self.log.dir().display(), %error, "queue state snapshot failed");
            }
        }
        Ok(())
    }

    /// Appends a snapshot of `state`, which must be the state the journal's events
    /// build. Segments below it may be deleted once it is durable.
    pub fn write_snapshot(
        &mut self,
        state: &State,
        now_ms: TimestampMs,
    ) -> Result<(), BrokerError> {
        // Counted as written even when it fails, so a state too large to snapshot is
        // tried again after the next period, not on every event.
        self.events_since_snapshot = 0;
        let info = self.append(&[Event::Snapshot(state.snapshot())], now_ms)?;
        self.trim_below = Some(info);
        Ok(())
    }

    /// Takes the offset of the last snapshot not trimmed below yet. The caller
    /// deletes the segments below it once the journal is fsynced.
    pub fn take_trim(&mut self) -> Option<Offset> {
        self.trim_below.take()
    }

    fn append(&self, events: &[Event], now_ms: TimestampMs) -> Result<Offset, BrokerError> {
        let bytes: usize = events.iter().map(|e| e.encoded_len() + 16).sum();
        let mut builder = RecordBatchBuilder::with_capacity(bytes + 64);
        let mut value = Vec::with_capacity(64);
        for event in events {
            value.clear();
            event.encode_into(&mut value);
            builder.push(None, &value, now_ms)?;
        }
        let mut batch = builder.finish()?;
        Ok(self.log.append(&mut batch)?.base_offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_rebuilds_the_state_and_snapshots_bound_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state-0");
        let (mut journal, mut state) = Journal::open(&path).unwrap();
        let mut expected = State::new();
        // Enough events for a few snapshots, a few hundred KiB of journal.
        let rounds = (SNAPSHOT_EVERY_EVENTS as usize * 5) / 2;
        for o in 0..rounds as u64 {
            let lease = Event::Leased {
                offset: Offset(o),
                delivery: 1,
                deadline_ms: 1_000 + o as i64,
            };
            let events = if o % 3 == 0 {
                vec![lease]
            } else {
                vec![lease, Event::Acked { offset: Offset(o) }]
            };
            journal.record(&mut state, &events, 1).unwrap();
            for e in &events {
                expected.apply(e);
            }
        }
        assert_eq!(state, expected);
        let trim = journal.take_trim().expect("a snapshot was written");
        journal.log().flush().unwrap();
        journal.log().delete_below(trim).unwrap();
        let since = journal.events_since_snapshot;
        drop(journal);
        let (journal, replayed) = Journal::open(&path).unwrap();
        assert_eq!(replayed, expected);
        assert_eq!(journal.events_since_snapshot, since);
    }

    #[test]
    fn segments_below_a_durable_snapshot_go_and_replay_still_agrees() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state-0");
        let (mut journal, mut state) = Journal::open(&path).unwrap();
        // Leases with long deadlines: about 9 MiB of journal before the snapshot.
        let per_batch = 1000u64;
        for batch in 0..400u64 {
            let events: Vec<Event> = (0..per_batch)
                .map(|i| Event::Leased {
                    offset: Offset(batch * per_batch + i),
                    delivery: 1,
                    deadline_ms: 5,
                })
                .chain((0..per_batch).map(|i| Event::Acked {
                    offset: Offset(batch * per_batch + i),
                }))
                .collect();
            journal.record(&mut state, &events, 1).unwrap();
        }
        assert!(journal.log().segment_count() > 2);
        let trim = journal.take_trim().unwrap();
        journal.log().flush().unwrap();
        let report = journal.log().delete_below(trim).unwrap();
        assert!(report.segments_deleted > 0);
        journal.log().close().unwrap();
        drop(journal);
        let (_, replayed) = Journal::open(&path).unwrap();
        assert_eq!(replayed, state);
        assert_eq!(replayed.floor(), Offset(400 * per_batch));
    }

    #[test]
    fn a_record_that_is_no_event_fails_the_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state-0");
        {
            let log = Log::open(&path, LogConfig::default()).unwrap();
            log.append_records(&[log_engine::Record::new("junk", 1)])
                .unwrap();
            log.close().unwrap();
        }
        let error = Journal::open(&path).unwrap_err();
        assert!(matches!(error, BrokerError::BadMetadata { .. }), "{error}");
    }
}
