//! The lease and ack state of one queue partition: a pure state machine, no I/O and
//! no clock (every operation that depends on time takes `now_ms`).
//!
//! Each offset of the partition's log is in exactly one of these conditions:
//!
//! - **done** (acked, dead-lettered, dropped or redriven): below the `floor`, or in
//!   the `done` run set above it;
//! - **leased** to a consumer until a deadline, with its delivery count;
//! - **ready**: delivered before, then nacked or its lease ran out; it may be
//!   delivered again from `available_ms` on;
//! - **new**: at or above the `frontier` (the lowest offset never delivered) and not
//!   done.
//!
//! Every offset below the frontier was delivered at least once, so it is done,
//! leased or ready. That bounds the done run set: its gaps below the frontier are
//! leases and ready entries, whose number [`OUTSTANDING_MAX`] caps.
//!
//! Every change is an [`Event`] applied by [`State::apply`]; the mutating operations
//! are thin wrappers that check and apply one, so a journal of the events replays
//! to the same state. The only change that is not an event is [`State::expire`]: a
//! lease whose deadline passed becomes ready, available at the deadline, which is a
//! function of time alone. Replayed and live states are therefore equal once both
//! are expired at the same `now`.

use std::collections::{BTreeMap, BTreeSet};

use log_engine::{Offset, TimestampMs};

use super::event::{Event, StateSnapshot};

/// The most messages of one partition that may be leased or waiting to be delivered
/// again at once. Beyond it, receives take no new messages from the frontier until
/// acks free room (as SQS caps in-flight messages), which bounds the state's memory
/// and the size of a snapshot (about 36 bytes per outstanding message).
pub const OUTSTANDING_MAX: usize = 100_000;

/// How many available ready entries [`State::candidates`] counts at most.
const READY_COUNT_CAP: usize = 4096;

/// A message handed to a consumer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    /// When the lease runs out, ms since the epoch.
    pub deadline_ms: TimestampMs,
    /// Which delivery this is (1 for the first).
    pub delivery: u32,
}

/// A message waiting to be delivered again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ready {
    /// From when it may be delivered, ms since the epoch.
    pub available_ms: TimestampMs,
    /// The deliveries so far.
    pub delivery: u32,
}

/// A set of u64 kept as disjoint, non-adjacent `[start, end)` runs, so that long
/// stretches of acknowledged offsets cost one entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct RunSet {
    /// start -> end (exclusive).
    runs: BTreeMap<u64, u64>,
    /// How many numbers the runs hold.
    count: u64,
}

impl RunSet {
    /// The run holding `x`.
    fn run_of(&self, x: u64) -> Option<(u64, u64)> {
        self.runs
            .range(..=x)
            .next_back()
            .filter(|(_, end)| x < **end)
            .map(|(s, e)| (*s, *e))
    }

    fn contains(&self, x: u64) -> bool {
        self.run_of(x).is_some()
    }

    /// Adds `[start, end)`, merging with the runs it overlaps or touches.
    fn insert_run(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let (mut new_start, mut new_end) = (start, end);
        let touching: Vec<(u64, u64)> = self
            .runs
            .range(..=end)
            .rev()
            .take_while(|(_, e)| **e >= start)
            .map(|(s, e)| (*s, *e))
            .collect();
        for (s, e) in touching {
            self.runs.remove(&s);
            self.count -= e - s;
            new_start = new_start.min(s);
            new_end = new_end.max(e);
        }
        self.runs.insert(new_start, new_end);
        self.count += new_end - new_start;
    }

    /// The smallest number at or after `x` that is not in the set.
    fn gap_at_or_after(&self, x: u64) -> u64 {
        self.run_of(x).map_or(x, |(_, end)| end)
    }

    /// Removes the first run if it starts at `at`, returning its end.
    fn pop_run_at(&mut self, at: u64) -> Option<u64> {
        let (start, end) = self.runs.first_key_value().map(|(s, e)| (*s, *e))?;
        if start != at {
            return None;
        }
        self.runs.remove(&start);
        self.count -= end - start;
        Some(end)
    }

    /// Keeps only the numbers in `[low, high)`.
    fn retain_within(&mut self, low: u64, high: u64) {
        let kept: Vec<(u64, u64)> = self
            .runs
            .iter()
            .map(|(s, e)| ((*s).max(low), (*e).min(high)))
            .filter(|(s, e)| s < e)
            .collect();
        self.runs.clear();
        self.count = 0;
        for (s, e) in kept {
            self.runs.insert(s, e);
            self.count += e - s;
        }
    }

    /// How many numbers of the set are below `end`.
    fn count_below(&self, end: u64) -> u64 {
        let above: u64 = self
            .runs
            .iter()
            .rev()
            .take_while(|(_, e)| **e > end)
            .map(|(s, e)| e - (*s).max(end))
            .sum();
        self.count - above
    }
}

/// The lease and ack state of one partition; see the module docs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    /// Every offset below is done.
    floor: Offset,
    /// Done offsets at or above the floor; never holds the floor itself.
    done: RunSet,
    /// The lowest offset never delivered (at least the floor).
    frontier: Offset,
    /// Leased messages, all below the frontier.
    leases: BTreeMap<Offset, Lease>,
    /// The leases by deadline, so expiry costs only what expires.
    lease_deadlines: BTreeSet<(TimestampMs, Offset)>,
    /// Messages waiting to be delivered again, all below the frontier.
    ready: BTreeMap<Offset, Ready>,
    /// The ready entries by the time they become available.
    ready_times: BTreeSet<(TimestampMs, Offset)>,
    /// Messages moved to the dead-letter queue.
    dead_lettered: u64,
    /// Messages dropped after their last delivery, with no dead-letter queue.
    dropped: u64,
}

impl State {
    /// The state of a partition nothing was delivered from.
    pub fn new() -> State {
        State::default()
    }

    /// Every offset below is done.
    pub fn floor(&self) -> Offset {
        self.floor
    }

    /// The lowest offset never delivered.
    pub fn frontier(&self) -> Offset {
        self.frontier
    }

    /// Messages moved to the dead-letter queue so far.
    pub fn dead_lettered(&self) -> u64 {
        self.dead_lettered
    }

    /// Messages dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The lease of `offset`, if leased.
    pub fn lease_of(&self, offset: Offset) -> Option<Lease> {
        self.leases.get(&offset).copied()
    }

    /// The ready entry of `offset`, if waiting to be delivered again.
    pub fn ready_of(&self, offset: Offset) -> Option<Ready> {
        self.ready.get(&offset).copied()
    }

    /// True when `offset` is acked, dead-lettered, dropped or redriven.
    pub fn is_done(&self, offset: Offset) -> bool {
        offset < self.floor || self.done.contains(offset.0)
    }

    /// Messages leased or waiting to be delivered again.
    pub fn outstanding(&self) -> usize {
        self.leases.len() + self.ready.len()
    }

    /// Moves every lease whose deadline is at or before `now_ms` to ready, available
    /// at its deadline. Returns how many moved.
    pub fn expire(&mut self, now_ms: TimestampMs) -> usize {
        let mut moved = 0;
        while let Some(&(deadline_ms, offset)) = self.lease_deadlines.first() {
            if deadline_ms > now_ms {
                break;
            }
            self.lease_deadlines.pop_first();
            if let Some(lease) = self.leases.remove(&offset) {
                let ready = Ready {
                    available_ms: deadline_ms,
                    delivery: lease.delivery,
                };
                self.insert_ready(offset, ready);
                moved += 1;
            }
        }
        moved
    }

    /// What may be delivered at `now_ms`, below `end` (the readable end), as
    /// (offset, deliveries so far): first the ready messages available now, lowest offset first, then new
    /// ones from the frontier, skipping done ones, while fewer than
    /// [`OUTSTANDING_MAX`] are outstanding. Call [`State::expire`] first so that run
    /// out leases count as ready. Lazy: taking `n` items costs about `n` steps
    /// (plus, for the ready part, one step per ready entry not yet available).
    pub fn candidates(
        &self,
        now_ms: TimestampMs,
        end: Offset,
    ) -> impl Iterator<Item = (Offset, u32)> + '_ {
        // Counting the available entries lets the offset-ordered scan stop after
        // the last of them instead of running through every delayed one; past the
        // cap they are dense enough that the caller stops the scan first.
        let available = self
            .ready_times
            .range(..=(now_ms, Offset(u64::MAX)))
            .take(READY_COUNT_CAP + 1)
            .count();
        let limit = if available > READY_COUNT_CAP {
            usize::MAX
        } else {
            available
        };
        let ready = self
            .ready
            .iter()
            // A ready message at or above `end` is not readable yet (a new leader
            // whose high watermark has not caught up): it waits.
            .filter(move |(offset, r)| r.available_ms <= now_ms && **offset < end)
            .take(limit)
            .map(|(offset, r)| (*offset, r.delivery));
        let room = OUTSTANDING_MAX.saturating_sub(self.outstanding());
        ready.chain(
            self.new_offsets(self.frontier, end)
                .take(room)
                .map(|o| (o, 0)),
        )
    }

    /// [`State::expire`], then the first `max` of [`State::candidates`].
    pub fn next_candidates(
        &mut self,
        now_ms: TimestampMs,
        max: usize,
        end: Offset,
    ) -> Vec<(Offset, u32)> {
        self.expire(now_ms);
        self.candidates(now_ms, end).take(max).collect()
    }

    /// Every offset at or after `from` and below `end` that is neither done nor
    /// leased, ascending, whenever it becomes available (for a redrive).
    pub fn undone_from(&self, from: Offset, end: Offset) -> impl Iterator<Item = Offset> + '_ {
        let ready = self.ready.range(from..).map(|(offset, _)| *offset);
        ready.chain(self.new_offsets(self.frontier.max(from), end))
    }

    /// Offsets at or after `from` (and the floor) and below `end` that are not done.
    /// Above the frontier that is every not-done offset.
    fn new_offsets(&self, from: Offset, end: Offset) -> impl Iterator<Item = Offset> + '_ {
        let mut next = from.0.max(self.floor.0);
        std::iter::from_fn(move || {
            next = self.done.gap_at_or_after(next);
            if next >= end.0 {
                return None;
            }
            let offset = Offset(next);
            next += 1;
            Some(offset)
        })
    }

    /// Leases `offset` for its `delivery`-th delivery until `deadline_ms`; false (and
    /// no change) when it is done.
    pub fn lease(&mut self, offset: Offset, delivery: u32, deadline_ms: TimestampMs) -> bool {
        self.apply(&Event::Leased {
            offset,
            delivery,
            deadline_ms,
        })
    }

    /// True when an ack of `delivery` of `offset` counts: that delivery is leased, or
    /// its lease ran out (or it was nacked) and it was not delivered again since.
    pub fn check_ack(&self, offset: Offset, delivery: u32) -> bool {
        self.lease_of(offset)
            .is_some_and(|l| l.delivery == delivery)
            || self
                .ready_of(offset)
                .is_some_and(|r| r.delivery == delivery)
    }

    /// Acknowledges `delivery` of `offset`: done, when [`State::check_ack`] says the
    /// ack counts; returns whether it did. A stale delivery or a done offset: false.
    pub fn ack(&mut self, offset: Offset, delivery: u32) -> bool {
        self.check_ack(offset, delivery) && self.apply(&Event::Acked { offset })
    }

    /// Gives `delivery` of `offset` back, to be delivered again from `available_ms`;
    /// the same rule as [`State::check_ack`] decides whether it counts.
    pub fn nack(&mut self, offset: Offset, delivery: u32, available_ms: TimestampMs) -> bool {
        self.check_ack(offset, delivery)
            && self.apply(&Event::Nacked {
                offset,
                delivery,
                available_ms,
            })
    }

    /// Records that `offset` moved to the dead-letter queue; false when done already.
    pub fn dead_letter(&mut self, offset: Offset) -> bool {
        self.apply(&Event::DeadLettered { offset })
    }

    /// Records that `offset` was dropped; false when done already.
    pub fn drop_message(&mut self, offset: Offset) -> bool {
        self.apply(&Event::Dropped { offset })
    }

    /// Marks `offset` done, whatever its condition, and moves the floor over the
    /// done offsets above it. False when it was done already (or is `u64::MAX`,
    /// which no log reaches).
    pub fn mark_done(&mut self, offset: Offset) -> bool {
        if self.is_done(offset) || offset.0 == u64::MAX {
            return false;
        }
        self.remove_entry(offset);
        self.done.insert_run(offset.0, offset.0 + 1);
        self.advance_floor();
        true
    }

    /// Messages not done below `end`, in flight or not.
    pub fn depth(&self, end: Offset) -> u64 {
        end.0
            .saturating_sub(self.floor.0)
            .saturating_sub(self.done.count_below(end.0))
    }

    /// Messages leased with a deadline after `now_ms`.
    pub fn in_flight(&self, now_ms: TimestampMs) -> u64 {
        let expired = self
            .lease_deadlines
            .range(..=(now_ms, Offset(u64::MAX)))
            .count();
        (self.leases.len() - expired) as u64
    }

    /// The earliest time after `now_ms` at which a lease runs out or a ready message
    /// becomes available: when a waiting receive should look again.
    pub fn next_wake_ms(&self, now_ms: TimestampMs) -> Option<TimestampMs> {
        let after = (now_ms.saturating_add(1), Offset(0));
        let lease = self.lease_deadlines.range(after..).next().map(|(t, _)| *t);
        let ready = self.ready_times.range(after..).next().map(|(t, _)| *t);
        lease.into_iter().chain(ready).min()
    }

    /// Applies one event; returns whether it changed the state. Events about done
    /// offsets change nothing (a journal never holds them, but replay stays safe).
    pub fn apply(&mut self, event: &Event) -> bool {
        match event {
            Event::Leased {
                offset,
                delivery,
                deadline_ms,
            } => {
                if self.is_done(*offset) {
                    return false;
                }
                let lease = Lease {
                    deadline_ms: *deadline_ms,
                    delivery: *delivery,
                };
                self.remove_entry(*offset);
                self.insert_lease(*offset, lease);
                self.pass_frontier(*offset);
                true
            }
            Event::Nacked {
                offset,
                delivery,
                available_ms,
            } => {
                if self.is_done(*offset) {
                    return false;
                }
                let ready = Ready {
                    available_ms: *available_ms,
                    delivery: *delivery,
                };
                self.remove_entry(*offset);
                self.insert_ready(*offset, ready);
                self.pass_frontier(*offset);
                true
            }
            Event::Acked { offset } => self.mark_done(*offset),
            Event::DeadLettered { offset } => {
                let changed = self.mark_done(*offset);
                self.dead_lettered += u64::from(changed);
                changed
            }
            Event::Dropped { offset } => {
                let changed = self.mark_done(*offset);
                self.dropped += u64::from(changed);
                changed
            }
            Event::Snapshot(snapshot) => {
                *self = State::from_snapshot(snapshot);
                true
            }
        }
    }

    /// The whole state, for a [`Event::Snapshot`].
    pub fn snapshot(&self) -> StateSnapshot {
        StateSnapshot {
            floor: self.floor,
            frontier: self.frontier,
            dead_lettered: self.dead_lettered,
            dropped: self.dropped,
            done: self.done.runs.iter().map(|(s, e)| (*s, *e)).collect(),
            leases: self.leases.iter().map(|(o, l)| (*o, *l)).collect(),
            ready: self.ready.iter().map(|(o, r)| (*o, *r)).collect(),
        }
    }

    /// The state a snapshot describes. Whatever the snapshot holds (it may come from
    /// a damaged journal), the result keeps the invariants: runs merged, entries
    /// below the floor or on done offsets left out, the frontier above every entry.
    pub fn from_snapshot(snapshot: &StateSnapshot) -> State {
        let mut state = State {
            floor: snapshot.floor,
            frontier: snapshot.frontier.max(snapshot.floor),
            dead_lettered: snapshot.dead_lettered,
            dropped: snapshot.dropped,
            ..State::default()
        };
        for (start, end) in &snapshot.done {
            state.done.insert_run((*start).max(state.floor.0), *end);
        }
        state.advance_floor();
        for (offset, lease) in &snapshot.leases {
            if !state.is_done(*offset) {
                state.remove_entry(*offset);
                state.insert_lease(*offset, *lease);
                state.pass_frontier(*offset);
            }
        }
        for (offset, ready) in &snapshot.ready {
            if !state.is_done(*offset) {
                state.remove_entry(*offset);
                state.insert_ready(*offset, *ready);
                state.pass_frontier(*offset);
            }
        }
        state
    }

    /// Fits the state to a log that holds `[start, end)`: offsets at or above `end`
    /// are forgotten (the log lost its tail in a crash, and those offsets will be
    /// given to new messages), offsets below `start` count as done (their segments
    /// were deleted). Returns whether anything changed.
    pub fn clamp(&mut self, start: Offset, end: Offset) -> bool {
        let before = self.clone();
        let low = self.floor.max(start).min(end);
        let outside: Vec<Offset> = self
            .leases
            .keys()
            .chain(self.ready.keys())
            .filter(|o| **o < low || **o >= end)
            .copied()
            .collect();
        for offset in outside {
            self.remove_entry(offset);
        }
        self.floor = low;
        self.frontier = self.frontier.max(low).min(end);
        self.done.retain_within(low.0, end.0);
        self.advance_floor();
        *self != before
    }

    fn insert_lease(&mut self, offset: Offset, lease: Lease) {
        self.leases.insert(offset, lease);
        self.lease_deadlines.insert((lease.deadline_ms, offset));
    }

    fn insert_ready(&mut self, offset: Offset, ready: Ready) {
        self.ready.insert(offset, ready);
        self.ready_times.insert((ready.available_ms, offset));
    }

    /// Removes the lease or ready entry of `offset`, if any.
    fn remove_entry(&mut self, offset: Offset) {
        if let Some(lease) = self.leases.remove(&offset) {
            self.lease_deadlines.remove(&(lease.deadline_ms, offset));
        }
        if let Some(ready) = self.ready.remove(&offset) {
            self.ready_times.remove(&(ready.available_ms, offset));
        }
    }

    fn pass_frontier(&mut self, offset: Offset) {
        self.frontier = self.frontier.max(Offset(offset.0.saturating_add(1)));
    }

    fn advance_floor(&mut self) {
        while let Some(end) = self.done.pop_run_at(self.floor.0) {
            self.floor = Offset(end);
        }
        self.frontier = self.frontier.max(self.floor);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn acks_move_the_floor_over_contiguous_done_offsets() {
        let mut s = State::new();
        let c = s.next_candidates(0, 3, Offset(3));
        assert_eq!(c, [(Offset(0), 0), (Offset(1), 0), (Offset(2), 0)]);
        for (o, _) in &c {
            assert!(s.lease(*o, 1, 100));
        }
        assert!(s.ack(Offset(1), 1));
        assert!(s.ack(Offset(2), 1));
        assert_eq!(s.floor(), Offset(0));
        assert_eq!(s.depth(Offset(3)), 1);
        assert!(
            !s.ack(Offset(2), 1),
            "an ack of a done offset does not count"
        );
        assert!(s.ack(Offset(0), 1));
        assert_eq!(s.floor(), Offset(3));
        assert_eq!(s.depth(Offset(3)), 0);
        assert_eq!(s.snapshot().done, []);
    }

    #[test]
    fn expired_leases_come_back_and_stale_receipts_do_not_count() {
        let mut s = State::new();
        assert!(s.lease(Offset(0), 1, 100));
        assert_eq!(s.in_flight(99), 1);
        assert_eq!(s.next_candidates(99, 10, Offset(1)), []);
        assert_eq!(s.next_wake_ms(50), Some(100));
        assert_eq!(s.next_candidates(100, 10, Offset(1)), [(Offset(0), 1)]);
        assert_eq!(s.in_flight(100), 0);
        assert!(
            s.check_ack(Offset(0), 1),
            "not delivered again yet: the ack counts"
        );
        assert!(s.lease(Offset(0), 2, 200));
        assert!(!s.ack(Offset(0), 1), "stale");
        assert!(s.nack(Offset(0), 2, 150));
        assert_eq!(s.next_candidates(149, 10, Offset(1)), []);
        assert_eq!(s.next_candidates(150, 10, Offset(1)), [(Offset(0), 2)]);
        assert!(s.dead_letter(Offset(0)));
        assert!(!s.dead_letter(Offset(0)));
        assert_eq!((s.dead_lettered(), s.floor()), (1, Offset(1)));
    }

    #[test]
    fn new_messages_stop_at_the_outstanding_limit() {
        let mut s = State::new();
        let end = Offset(OUTSTANDING_MAX as u64 + 10);
        let all = s.next_candidates(0, usize::MAX, end);
        assert_eq!(all.len(), OUTSTANDING_MAX);
        for (o, _) in all {
            s.lease(o, 1, 10);
        }
        assert_eq!(s.next_candidates(0, 10, end), []);
        assert!(s.ack(Offset(5), 1));
        assert_eq!(
            s.next_candidates(0, 10, end),
            [(Offset(OUTSTANDING_MAX as u64), 0)]
        );
    }

    #[test]
    fn clamp_forgets_a_lost_tail_and_a_deleted_head() {
        let mut s = State::new();
        for o in 0..10 {
            s.lease(Offset(o), 1, 100);
        }
        s.ack(Offset(8), 1);
        assert!(s.clamp(Offset(0), Offset(6)));
        assert_eq!(s.frontier(), Offset(6));
        assert_eq!(s.depth(Offset(6)), 6);
        assert_eq!(s.snapshot().done, []);
        assert!(s.clamp(Offset(2), Offset(6)));
        assert_eq!((s.floor(), s.outstanding()), (Offset(2), 4));
        assert!(!s.clamp(Offset(2), Offset(6)));
    }

    #[test]
    fn snapshots_restore_the_same_state_and_survive_garbage() {
        let mut s = State::new();
        for o in 0..20 {
            s.lease(Offset(o), 1, 100 + o as i64);
        }
        for o in [3, 4, 5, 9, 15] {
            s.ack(Offset(o), 1);
        }
        s.nack(Offset(7), 1, 50);
        s.expire(110);
        assert_eq!(State::from_snapshot(&s.snapshot()), s);
        let garbage = StateSnapshot {
            floor: Offset(5),
            frontier: Offset(1),
            done: vec![(9, 3), (0, 7), (6, 8), (u64::MAX - 1, u64::MAX)],
            leases: vec![(
                Offset(2),
                Lease {
                    deadline_ms: 1,
                    delivery: 1,
                },
            )],
            ..StateSnapshot::default()
        };
        let g = State::from_snapshot(&garbage);
        assert_eq!((g.floor(), g.outstanding()), (Offset(8), 0));
        assert!(g.frontier() >= g.floor());
    }

    /// What the model knows of one offset.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum M {
        New,
        Leased { delivery: u32, deadline: i64 },
        Ready { delivery: u32, available: i64 },
        Done,
    }

    #[derive(Clone, Debug)]
    enum Op {
        Append(u8),
        Receive { max: u8, vt: u8 },
        Ack(usize),
        Nack { pick: usize, delay: u8 },
        Advance(u8),
        Redrive(usize),
        Snapshot,
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..5).prop_map(Op::Append),
            (1u8..5, 1u8..40).prop_map(|(max, vt)| Op::Receive { max, vt }),
            any::<usize>().prop_map(Op::Ack),
            (any::<usize>(), 0u8..30).prop_map(|(pick, delay)| Op::Nack { pick, delay }),
            (0u8..40).prop_map(Op::Advance),
            any::<usize>().prop_map(Op::Redrive),
            Just(Op::Snapshot),
        ]
    }

    const MAX_DELIVERIES: u32 = 3;

    /// The live state, a model, and the journal of events with the state it replays to.
    struct Harness {
        live: State,
        replayed: State,
        journal: Vec<Event>,
        model: Vec<M>,
        deliveries: Vec<u32>,
        receipts: Vec<(Offset, u32)>,
        now: i64,
    }

    impl Harness {
        fn record(&mut self, event: Event) {
            let decoded = Event::decode(&event.encode()).unwrap();
            self.replayed.apply(&decoded);
            self.journal.push(decoded);
        }

        fn end(&self) -> Offset {
            Offset(self.model.len() as u64)
        }

        fn model_expire(&mut self) {
            for m in &mut self.model {
                if let M::Leased { delivery, deadline } = *m
                    && deadline <= self.now
                {
                    *m = M::Ready {
                        delivery,
                        available: deadline,
                    };
                }
            }
        }

        fn model_candidates(&self) -> Vec<(Offset, u32)> {
            let ready = self.model.iter().enumerate().filter_map(|(o, m)| match m {
                M::Ready {
                    delivery,
                    available,
                } if *available <= self.now => Some((Offset(o as u64), *delivery)),
                _ => None,
            });
            let new = self
                .model
                .iter()
                .enumerate()
                .filter(|(_, m)| **m == M::New)
                .map(|(o, _)| (Offset(o as u64), 0));
            ready.chain(new).collect()
        }

        fn step(&mut self, op: Op) {
            match op {
                Op::Append(n) => {
                    for _ in 0..n {
                        self.model.push(M::New);
                        self.deliveries.push(0);
                    }
                }
                Op::Receive { max, vt } => self.receive(max as usize, i64::from(vt)),
                Op::Ack(pick) => {
                    let Some(&(o, d)) = self.receipts.get(pick % self.receipts.len().max(1)) else {
                        return;
                    };
                    self.model_expire();
                    let m = &mut self.model[o.0 as usize];
                    let expected = matches!(*m, M::Leased { delivery, .. } | M::Ready { delivery, .. } if delivery == d);
                    assert_eq!(self.live.ack(o, d), expected, "ack {o} #{d} of {m:?}");
                    if expected {
                        *m = M::Done;
                        self.record(Event::Acked { offset: o });
                    }
                }
                Op::Nack { pick, delay } => {
                    let Some(&(o, d)) = self.receipts.get(pick % self.receipts.len().max(1)) else {
                        return;
                    };
                    self.model_expire();
                    let available = self.now + i64::from(delay);
                    let m = &mut self.model[o.0 as usize];
                    let expected = matches!(*m, M::Leased { delivery, .. } | M::Ready { delivery, .. } if delivery == d);
                    assert_eq!(self.live.nack(o, d, available), expected);
                    if expected {
                        *m = M::Ready {
                            delivery: d,
                            available,
                        };
                        self.record(Event::Nacked {
                            offset: o,
                            delivery: d,
                            available_ms: available,
                        });
                    }
                }
                Op::Advance(ms) => self.now += i64::from(ms),
                Op::Redrive(pick) => {
                    self.live.expire(self.now);
                    self.model_expire();
                    let undone: Vec<Offset> =
                        self.live.undone_from(Offset(0), self.end()).collect();
                    let expected: Vec<Offset> = (0..self.model.len())
                        .filter(|o| matches!(self.model[*o], M::New | M::Ready { .. }))
                        .map(|o| Offset(o as u64))
                        .collect();
                    assert_eq!(undone, expected);
                    if let Some(&o) = undone.get(pick % undone.len().max(1)) {
                        assert!(self.live.mark_done(o));
                        self.model[o.0 as usize] = M::Done;
                        self.record(Event::Acked { offset: o });
                    }
                }
                Op::Snapshot => {
                    let snapshot = self.live.snapshot();
                    self.record(Event::Snapshot(snapshot));
                }
            }
        }

        fn receive(&mut self, max: usize, vt: i64) {
            self.model_expire();
            let expected: Vec<_> = self.model_candidates().into_iter().take(max).collect();
            let got = self.live.next_candidates(self.now, max, self.end());
            assert_eq!(got, expected, "candidates at {}", self.now);
            for (o, so_far) in got {
                let i = o.0 as usize;
                assert_ne!(self.model[i], M::Done, "a done message is never delivered");
                assert_eq!(so_far, self.deliveries[i], "deliveries counted one by one");
                if so_far >= MAX_DELIVERIES {
                    assert!(self.live.dead_letter(o));
                    self.model[i] = M::Done;
                    self.record(Event::DeadLettered { offset: o });
                    continue;
                }
                let delivery = so_far + 1;
                let deadline = self.now + vt;
                assert!(self.live.lease(o, delivery, deadline));
                self.deliveries[i] = delivery;
                self.model[i] = M::Leased { delivery, deadline };
                self.receipts.push((o, delivery));
                self.record(Event::Leased {
                    offset: o,
                    delivery,
                    deadline_ms: deadline,
                });
            }
        }

        fn check(&mut self) {
            let end = self.end();
            let undone = self.model.iter().filter(|m| **m != M::Done).count() as u64;
            assert_eq!(self.live.depth(end), undone);
            let leased = self
                .model
                .iter()
                .filter(|m| matches!(m, M::Leased { deadline, .. } if *deadline > self.now))
                .count() as u64;
            assert_eq!(self.live.in_flight(self.now), leased);
            let mut live = self.live.clone();
            live.expire(self.now);
            let mut replayed = self.replayed.clone();
            replayed.expire(self.now);
            assert_eq!(replayed, live, "the journal replays to the live state");
            assert_eq!(State::from_snapshot(&live.snapshot()), live);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn the_state_machine_follows_the_model(ops in proptest::collection::vec(arb_op(), 1..120)) {
            let mut h = Harness {
                live: State::new(),
                replayed: State::new(),
                journal: Vec::new(),
                model: Vec::new(),
                deliveries: Vec::new(),
                receipts: Vec::new(),
                now: 1_000,
            };
            for op in ops {
                h.step(op);
                h.check();
            }
            let mut from_scratch = State::new();
            for event in &h.journal {
                from_scratch.apply(event);
            }
            from_scratch.expire(h.now);
            let mut live = h.live.clone();
            live.expire(h.now);
            prop_assert_eq!(&from_scratch, &live);
            // Nothing undone is lost: far in the future, every undone message comes back.
            h.now += 1_000_000;
            let end = h.end();
            let mut back: Vec<Offset> =
                h.live.next_candidates(h.now, usize::MAX, end).into_iter().map(|(o, _)| o).collect();
            back.sort();
            let undone: Vec<Offset> = (0..h.model.len())
                .filter(|o| h.model[*o] != M::Done)
                .map(|o| Offset(o as u64))
                .collect();
            prop_assert_eq!(back, undone);
        }
    }
}
