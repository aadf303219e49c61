//! State events of a queue partition and their byte format.
//!
//! Every change of a partition's lease and ack state is one [`Event`]; the state
//! journal stores each event as the value of one log-engine record, and replaying
//! the events on a fresh [`super::State`] rebuilds the state exactly.
//!
//! # Byte format (version 1)
//!
//! Fixed-width integers, little-endian. Every event starts with two bytes:
//!
//! | byte | size | field | meaning |
//! |-----:|-----:|-------|---------|
//! | 0 | 1 | `version` | [`EVENT_FORMAT_VERSION`] |
//! | 1 | 1 | `kind` | 1 `Leased`, 2 `Acked`, 3 `Nacked`, 4 `DeadLettered`, 5 `Dropped`, 6 `Snapshot` |
//!
//! `Acked`, `DeadLettered`, `Dropped` ([`OFFSET_EVENT_LEN`] = 10 bytes):
//!
//! | byte | size | field |
//! |-----:|-----:|-------|
//! | 2 | 8 | `offset` (u64) |
//!
//! `Leased`, `Nacked` ([`TIMED_EVENT_LEN`] = 22 bytes):
//!
//! | byte | size | field |
//! |-----:|-----:|-------|
//! | 2 | 8 | `offset` (u64) |
//! | 10 | 4 | `delivery` (u32): the delivery count of the lease, or so far |
//! | 14 | 8 | `deadline_ms` (`Leased`) or `available_ms` (`Nacked`), i64 ms since the epoch |
//!
//! `Snapshot` ([`SNAPSHOT_HEADER_LEN`] = 46 bytes, then three arrays):
//!
//! | byte | size | field |
//! |-----:|-----:|-------|
//! | 2 | 8 | `floor` (u64) |
//! | 10 | 8 | `frontier` (u64) |
//! | 18 | 8 | `dead_lettered` (u64) |
//! | 26 | 8 | `dropped` (u64) |
//! | 34 | 4 | `R`: done runs (u32) |
//! | 38 | 4 | `L`: leases (u32) |
//! | 42 | 4 | `Q`: ready entries (u32) |
//! | 46 | 16·R | runs, ascending: `start` u64, `end` u64 (exclusive) |
//! | … | 20·L | leases, ascending: `offset` u64, `delivery` u32, `deadline_ms` i64 |
//! | … | 20·Q | ready, ascending: `offset` u64, `delivery` u32, `available_ms` i64 |
//!
//! A decoder refuses an unknown version or kind, a short buffer, and bytes left over;
//! the array lengths must account for the buffer exactly.

use log_engine::{Offset, TimestampMs};

use super::state::{Lease, Ready};

/// The event format version this crate writes and reads.
pub const EVENT_FORMAT_VERSION: u8 = 1;
/// The size of an `Acked`, `DeadLettered` or `Dropped` event.
pub const OFFSET_EVENT_LEN: usize = 2 + 8;
/// The size of a `Leased` or `Nacked` event.
pub const TIMED_EVENT_LEN: usize = 2 + 8 + 4 + 8;
/// The size of a snapshot before its arrays.
pub const SNAPSHOT_HEADER_LEN: usize = 2 + 4 * 8 + 3 * 4;
/// The size of one done run in a snapshot.
pub const RUN_LEN: usize = 16;
/// The size of one lease or ready entry in a snapshot.
pub const ENTRY_LEN: usize = 8 + 4 + 8;

const _: () = assert!(OFFSET_EVENT_LEN == 10);
const _: () = assert!(TIMED_EVENT_LEN == 22);
const _: () = assert!(SNAPSHOT_HEADER_LEN == 46);

const KIND_LEASED: u8 = 1;
const KIND_ACKED: u8 = 2;
const KIND_NACKED: u8 = 3;
const KIND_DEAD_LETTERED: u8 = 4;
const KIND_DROPPED: u8 = 5;
const KIND_SNAPSHOT: u8 = 6;

/// One change of a partition's lease and ack state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The message was handed to a consumer: its `delivery`-th delivery, leased until
    /// `deadline_ms`.
    Leased {
        /// The message.
        offset: Offset,
        /// Which delivery this is (1 for the first).
        delivery: u32,
        /// When the lease runs out, ms since the epoch.
        deadline_ms: TimestampMs,
    },
    /// A consumer acknowledged the message (or a redrive moved it away): done.
    Acked {
        /// The message.
        offset: Offset,
    },
    /// A consumer gave the message back; it may be delivered again from
    /// `available_ms` on.
    Nacked {
        /// The message.
        offset: Offset,
        /// The deliveries so far.
        delivery: u32,
        /// When it may be delivered again, ms since the epoch.
        available_ms: TimestampMs,
    },
    /// The message used up its deliveries and was copied to the dead-letter queue.
    DeadLettered {
        /// The message.
        offset: Offset,
    },
    /// The message used up its deliveries and the queue has no dead-letter queue.
    Dropped {
        /// The message.
        offset: Offset,
    },
    /// The whole state; replaces whatever the events before it built.
    Snapshot(StateSnapshot),
}

/// A partition's whole state, as a [`Event::Snapshot`] carries it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StateSnapshot {
    /// Every offset below is done.
    pub floor: Offset,
    /// The lowest offset never delivered.
    pub frontier: Offset,
    /// Messages moved to the dead-letter queue so far.
    pub dead_lettered: u64,
    /// Messages dropped (no dead-letter queue) so far.
    pub dropped: u64,
    /// Done offsets above the floor as `[start, end)` runs, ascending, disjoint and
    /// not adjacent.
    pub done: Vec<(u64, u64)>,
    /// Leases, by offset, ascending.
    pub leases: Vec<(Offset, Lease)>,
    /// Messages waiting to be delivered again, by offset, ascending.
    pub ready: Vec<(Offset, Ready)>,
}

impl StateSnapshot {
    /// The encoded size of the snapshot event.
    pub fn encoded_len(&self) -> usize {
        SNAPSHOT_HEADER_LEN
            + RUN_LEN * self.done.len()
            + ENTRY_LEN * (self.leases.len() + self.ready.len())
    }
}

/// Why bytes are not an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid queue state event: {0}")]
pub struct DecodeError(pub &'static str);

impl Event {
    /// The offset the event is about; `None` for a snapshot.
    pub fn offset(&self) -> Option<Offset> {
        match self {
            Event::Leased { offset, .. }
            | Event::Acked { offset }
            | Event::Nacked { offset, .. }
            | Event::DeadLettered { offset }
            | Event::Dropped { offset } => Some(*offset),
            Event::Snapshot(_) => None,
        }
    }

    /// The encoded size of the event.
    pub fn encoded_len(&self) -> usize {
        match self {
            Event::Leased { .. } | Event::Nacked { .. } => TIMED_EVENT_LEN,
            Event::Acked { .. } | Event::DeadLettered { .. } | Event::Dropped { .. } => {
                OFFSET_EVENT_LEN
            }
            Event::Snapshot(snapshot) => snapshot.encoded_len(),
        }
    }

    /// Appends the event's bytes to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.push(EVENT_FORMAT_VERSION);
        match self {
            Event::Leased {
                offset,
                delivery,
                deadline_ms,
            } => timed(out, KIND_LEASED, *offset, *delivery, *deadline_ms),
            Event::Nacked {
                offset,
                delivery,
                available_ms,
            } => timed(out, KIND_NACKED, *offset, *delivery, *available_ms),
            Event::Acked { offset } => plain(out, KIND_ACKED, *offset),
            Event::DeadLettered { offset } => plain(out, KIND_DEAD_LETTERED, *offset),
            Event::Dropped { offset } => plain(out, KIND_DROPPED, *offset),
            Event::Snapshot(snapshot) => encode_snapshot(out, snapshot),
        }
        debug_assert_eq!(out.len() - start, self.encoded_len());
    }

    /// The event's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut out);
        out
    }

    /// Decodes one event that fills `bytes` exactly.
    pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
        let mut r = Reader { rest: bytes };
        if r.u8()? != EVENT_FORMAT_VERSION {
            return Err(DecodeError("unknown format version"));
        }
        let kind = r.u8()?;
        let event = match kind {
            KIND_LEASED => Event::Leased {
                offset: Offset(r.u64()?),
                delivery: r.u32()?,
                deadline_ms: r.i64()?,
            },
            KIND_NACKED => Event::Nacked {
                offset: Offset(r.u64()?),
                delivery: r.u32()?,
                available_ms: r.i64()?,
            },
            KIND_ACKED => Event::Acked {
                offset: Offset(r.u64()?),
            },
            KIND_DEAD_LETTERED => Event::DeadLettered {
                offset: Offset(r.u64()?),
            },
            KIND_DROPPED => Event::Dropped {
                offset: Offset(r.u64()?),
            },
            KIND_SNAPSHOT => Event::Snapshot(decode_snapshot(&mut r)?),
            _ => return Err(DecodeError("unknown event kind")),
        };
        if !r.rest.is_empty() {
            return Err(DecodeError("bytes left over after the event"));
        }
        Ok(event)
    }
}

fn plain(out: &mut Vec<u8>, kind: u8, offset: Offset) {
    out.push(kind);
    out.extend_from_slice(&offset.0.to_le_bytes());
}

fn timed(out: &mut Vec<u8>, kind: u8, offset: Offset, delivery: u32, at_ms: TimestampMs) {
    plain(out, kind, offset);
    out.extend_from_slice(&delivery.to_le_bytes());
    out.extend_from_slice(&at_ms.to_le_bytes());
}

fn encode_snapshot(out: &mut Vec<u8>, s: &StateSnapshot) {
    out.push(KIND_SNAPSHOT);
    for n in [s.floor.0, s.frontier.0, s.dead_lettered, s.dropped] {
        out.extend_from_slice(&n.to_le_bytes());
    }
    // The counts fit: a snapshot is bounded far below 4 G entries by the batch limit.
    for n in [s.done.len(), s.leases.len(), s.ready.len()] {
        out.extend_from_slice(&(n as u32).to_le_bytes());
    }
    for (start, end) in &s.done {
        out.extend_from_slice(&start.to_le_bytes());
        out.extend_from_slice(&end.to_le_bytes());
    }
    for (offset, lease) in &s.leases {
        entry(out, *offset, lease.delivery, lease.deadline_ms);
    }
    for (offset, ready) in &s.ready {
        entry(out, *offset, ready.delivery, ready.available_ms);
    }
}

fn entry(out: &mut Vec<u8>, offset: Offset, delivery: u32, at_ms: TimestampMs) {
    out.extend_from_slice(&offset.0.to_le_bytes());
    out.extend_from_slice(&delivery.to_le_bytes());
    out.extend_from_slice(&at_ms.to_le_bytes());
}

fn decode_snapshot(r: &mut Reader<'_>) -> Result<StateSnapshot, DecodeError> {
    let floor = Offset(r.u64()?);
    let frontier = Offset(r.u64()?);
    let dead_lettered = r.u64()?;
    let dropped = r.u64()?;
    let runs = r.u32()? as usize;
    let leases = r.u32()? as usize;
    let ready = r.u32()? as usize;
    // Checked before anything is allocated, so a bad count cannot ask for memory.
    let expected = runs
        .checked_mul(RUN_LEN)
        .and_then(|n| n.checked_add(leases.checked_mul(ENTRY_LEN)?))
        .and_then(|n| n.checked_add(ready.checked_mul(ENTRY_LEN)?));
    if expected != Some(r.rest.len()) {
        return Err(DecodeError("snapshot counts do not match its length"));
    }
    let done = (0..runs)
        .map(|_| Ok((r.u64()?, r.u64()?)))
        .collect::<Result<Vec<_>, DecodeError>>()?;
    let leases = (0..leases)
        .map(|_| {
            let (offset, delivery, deadline_ms) = r.entry()?;
            Ok((
                offset,
                Lease {
                    deadline_ms,
                    delivery,
                },
            ))
        })
        .collect::<Result<Vec<_>, DecodeError>>()?;
    let ready = (0..ready)
        .map(|_| {
            let (offset, delivery, available_ms) = r.entry()?;
            Ok((
                offset,
                Ready {
                    available_ms,
                    delivery,
                },
            ))
        })
        .collect::<Result<Vec<_>, DecodeError>>()?;
    Ok(StateSnapshot {
        floor,
        frontier,
        dead_lettered,
        dropped,
        done,
        leases,
        ready,
    })
}

/// Reads fixed-width little-endian integers off the front of a buffer.
struct Reader<'a> {
    rest: &'a [u8],
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let (head, rest) = self
            .rest
            .split_first_chunk::<N>()
            .ok_or(DecodeError("shorter than its kind needs"))?;
        self.rest = rest;
        Ok(*head)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(u8::from_le_bytes(self.take()?))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.take()?))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.take()?))
    }

    fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_le_bytes(self.take()?))
    }

    fn entry(&mut self) -> Result<(Offset, u32, TimestampMs), DecodeError> {
        Ok((Offset(self.u64()?), self.u32()?, self.i64()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_event() -> impl Strategy<Value = Event> {
        let offset = any::<u64>().prop_map(Offset);
        prop_oneof![
            (offset.clone(), any::<u32>(), any::<i64>()).prop_map(|(offset, delivery, at)| {
                Event::Leased {
                    offset,
                    delivery,
                    deadline_ms: at,
                }
            }),
            (offset.clone(), any::<u32>(), any::<i64>()).prop_map(|(offset, delivery, at)| {
                Event::Nacked {
                    offset,
                    delivery,
                    available_ms: at,
                }
            }),
            offset.clone().prop_map(|offset| Event::Acked { offset }),
            offset
                .clone()
                .prop_map(|offset| Event::DeadLettered { offset }),
            offset.prop_map(|offset| Event::Dropped { offset }),
            arb_snapshot().prop_map(Event::Snapshot),
        ]
    }

    fn arb_snapshot() -> impl Strategy<Value = StateSnapshot> {
        let entry = (any::<u64>(), any::<u32>(), any::<i64>());
        (
            any::<[u64; 4]>(),
            proptest::collection::vec((any::<u64>(), any::<u64>()), 0..5),
            proptest::collection::vec(entry, 0..5),
            proptest::collection::vec(entry, 0..5),
        )
            .prop_map(|(n, done, leases, ready)| StateSnapshot {
                floor: Offset(n[0]),
                frontier: Offset(n[1]),
                dead_lettered: n[2],
                dropped: n[3],
                done,
                leases: leases
                    .into_iter()
                    .map(|(o, delivery, deadline_ms)| {
                        (
                            Offset(o),
                            Lease {
                                deadline_ms,
                                delivery,
                            },
                        )
                    })
                    .collect(),
                ready: ready
                    .into_iter()
                    .map(|(o, delivery, available_ms)| {
                        (
                            Offset(o),
                            Ready {
                                available_ms,
                                delivery,
                            },
                        )
                    })
                    .collect(),
            })
    }

    proptest! {
        #[test]
        fn events_round_trip_and_truncations_fail(event in arb_event()) {
            let bytes = event.encode();
            prop_assert_eq!(bytes.len(), event.encoded_len());
            prop_assert_eq!(Event::decode(&bytes), Ok(event));
            for cut in 0..bytes.len() {
                prop_assert!(Event::decode(&bytes[..cut]).is_err());
            }
            let mut longer = bytes.clone();
            longer.push(0);
            prop_assert!(Event::decode(&longer).is_err());
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Event::decode(&bytes);
        }
    }

    #[test]
    fn the_format_is_stable() {
        let event = Event::Leased {
            offset: Offset(0x0102),
            delivery: 3,
            deadline_ms: -1,
        };
        let expected = [
            1, 1, 2, 1, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 255, 255, 255, 255, 255, 255, 255, 255,
        ];
        assert_eq!(event.encode(), expected);
        assert_eq!(
            Event::Acked { offset: Offset(7) }.encode(),
            [1, 2, 7, 0, 0, 0, 0, 0, 0, 0]
        );
        let mut wrong_version = expected;
        wrong_version[0] = 2;
        assert!(Event::decode(&wrong_version).is_err());
        let mut huge_counts = Event::Snapshot(StateSnapshot::default()).encode();
        huge_counts[34..38].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Event::decode(&huge_counts).is_err());
    }
}
