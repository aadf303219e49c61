//! The leader-epoch history of one replica's log (Kafka's leader-epoch cache).
//!
//! Each entry says "from `start_offset` on, records were written by the leader of
//! `epoch`". Epochs and start offsets both strictly increase, so the history
//! answers "where does epoch E end in this log?", which is how a returning
//! follower finds the point where its log and the leader's diverge.

use thiserror::Error;

/// The version written on the first line of [`EpochHistory::encode`].
pub const EPOCH_HISTORY_FORMAT_VERSION: u32 = 1;

/// The most entries [`EpochHistory::decode`] accepts: one per leader change,
/// far more than a partition sees in its life, and a bound on what a corrupt
/// file can make the decoder allocate.
pub const EPOCH_HISTORY_ENTRIES_MAX: usize = 1 << 20;

/// One entry: records from `start_offset` on carry `epoch`, up to the next
/// entry's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    /// The leader epoch.
    pub epoch: u32,
    /// The first offset written under `epoch`.
    pub start_offset: u64,
}

/// Why [`EpochHistory::decode`] refused its input. Lines are numbered from 1.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum EpochHistoryError {
    /// The input has no version line.
    #[error("epoch history: empty input, expected a version line")]
    MissingVersion,
    /// The first line is not a version this code reads.
    #[error("epoch history: unsupported version {found:?}, expected {expected}")]
    UnsupportedVersion {
        /// The first line as found.
        found: String,
        /// The version this code reads.
        expected: u32,
    },
    /// The second line is missing or is not a count.
    #[error("epoch history: line 2 must be the entry count")]
    BadCount,
    /// The count is above [`EPOCH_HISTORY_ENTRIES_MAX`].
    #[error("epoch history: {count} entries, at most {max} allowed")]
    TooManyEntries {
        /// The count found.
        count: u64,
        /// The limit.
        max: usize,
    },
    /// A line is not `epoch start_offset`.
    #[error("epoch history: line {line} is not `epoch start_offset`")]
    BadEntry {
        /// The line number.
        line: usize,
    },
    /// An entry's epoch or start offset is not above the previous entry's.
    #[error("epoch history: line {line} does not increase on the line before")]
    NotIncreasing {
        /// The line number.
        line: usize,
    },
    /// The number of entry lines differs from the count.
    #[error("epoch history: count says {expected} entries, found {found}")]
    CountMismatch {
        /// The count line.
        expected: u64,
        /// The entry lines found.
        found: u64,
    },
}

/// The ordered (epoch, start offset) entries of one log.
///
/// Invariant: epochs and start offsets both strictly increase from one entry to
/// the next.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EpochHistory {
    /// Owned by the replica's log; changed only through the methods below so the
    /// invariant holds.
    entries: Vec<EpochEntry>,
}

impl EpochHistory {
    /// An empty history (an empty log, or one from before epochs were tracked).
    pub fn new() -> Self {
        Self::default()
    }

    /// The entries, oldest first.
    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    /// Whether the history has no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Records that `epoch` starts at `start_offset`: a leader starting its epoch
    /// at its log end, or a follower appending a batch whose leader epoch is newer
    /// than its latest.
    ///
    /// An epoch not newer than the latest is ignored. Entries starting at or
    /// after `start_offset` are replaced: they never had data.
    pub fn assign(&mut self, epoch: u32, start_offset: u64) {
        if self.latest().is_some_and(|(latest, _)| epoch <= latest) {
            return;
        }
        while self
            .entries
            .last()
            .is_some_and(|e| e.start_offset >= start_offset)
        {
            self.entries.pop();
        }
        self.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
    }

    /// The newest entry as (epoch, start offset).
    pub fn latest(&self) -> Option<(u32, u64)> {
        self.entries.last().map(|e| (e.epoch, e.start_offset))
    }

    /// Kafka's OffsetsForLeaderEpoch answer: the largest epoch E' <= `epoch` in
    /// the history and the offset where E' ends in this log, which is the start
    /// of the entry after E', or `log_end` if E' is the latest.
    ///
    /// `None` when `epoch` is below the first entry: this log has nothing written
    /// at or before that epoch, and the asking follower must truncate to its log
    /// start.
    pub fn end_offset_for(&self, epoch: u32, log_end: u64) -> Option<(u32, u64)> {
        let after = self.entries.partition_point(|e| e.epoch <= epoch);
        let found = self.entries.get(after.checked_sub(1)?)?;
        let end = self
            .entries
            .get(after)
            .map_or(log_end, |next| next.start_offset);
        Some((found.epoch, end))
    }

    /// After the log was truncated to `offset` (everything at or above removed),
    /// drops the entries starting at or after it.
    pub fn truncate_from(&mut self, offset: u64) {
        let keep = self.entries.partition_point(|e| e.start_offset < offset);
        self.entries.truncate(keep);
    }

    /// After retention moved the log start to `log_start`, drops the entries
    /// wholly below it; the entry covering `log_start` stays, its start moved up
    /// to `log_start`.
    pub fn truncate_before(&mut self, log_start: u64) {
        let covering = self
            .entries
            .partition_point(|e| e.start_offset <= log_start);
        let Some(first_kept) = covering.checked_sub(1) else {
            return;
        };
        self.entries.drain(..first_kept);
        if let Some(first) = self.entries.first_mut() {
            first.start_offset = log_start;
        }
    }

    /// The text form:
    ///
    /// | line | content                                   |
    /// |------|-------------------------------------------|
    /// | 1    | the format version, `1`                   |
    /// | 2    | the entry count `n`                       |
    /// | 3..  | `n` lines `epoch start_offset`, in order  |
    ///
    /// Numbers are decimal; every line ends with `\n`.
    pub fn encode(&self) -> String {
        let mut out = format!("{EPOCH_HISTORY_FORMAT_VERSION}\n{}\n", self.entries.len());
        for e in &self.entries {
            out.push_str(&format!("{} {}\n", e.epoch, e.start_offset));
        }
        out
    }

    /// Reads the form written by [`EpochHistory::encode`], checking the version,
    /// the count and that entries strictly increase.
    pub fn decode(text: &str) -> Result<EpochHistory, EpochHistoryError> {
        let mut lines = text.lines();
        let version = lines.next().ok_or(EpochHistoryError::MissingVersion)?;
        if version.trim() != EPOCH_HISTORY_FORMAT_VERSION.to_string() {
            return Err(EpochHistoryError::UnsupportedVersion {
                found: version.chars().take(32).collect(),
                expected: EPOCH_HISTORY_FORMAT_VERSION,
            });
        }
        let count: u64 = lines
            .next()
            .and_then(|l| l.trim().parse().ok())
            .ok_or(EpochHistoryError::BadCount)?;
        if count > EPOCH_HISTORY_ENTRIES_MAX as u64 {
            return Err(EpochHistoryError::TooManyEntries {
                count,
                max: EPOCH_HISTORY_ENTRIES_MAX,
            });
        }
        let rest: Vec<&str> = lines.collect();
        if rest.len() as u64 != count {
            return Err(EpochHistoryError::CountMismatch {
                expected: count,
                found: rest.len() as u64,
            });
        }
        let mut history = EpochHistory::new();
        for (index, text) in rest.into_iter().enumerate() {
            let line = index + 3;
            let entry = parse_entry(text).ok_or(EpochHistoryError::BadEntry { line })?;
            if history.entries.last().is_some_and(|prev| {
                entry.epoch <= prev.epoch || entry.start_offset <= prev.start_offset
            }) {
                return Err(EpochHistoryError::NotIncreasing { line });
            }
            history.entries.push(entry);
        }
        Ok(history)
    }
}

/// Parses one `epoch start_offset` line.
fn parse_entry(text: &str) -> Option<EpochEntry> {
    let mut fields = text.split_ascii_whitespace();
    let epoch = fields.next()?.parse().ok()?;
    let start_offset = fields.next()?.parse().ok()?;
    if fields.next().is_some() {
        return None;
    }
    Some(EpochEntry {
        epoch,
        start_offset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn history(entries: &[(u32, u64)]) -> EpochHistory {
        let mut h = EpochHistory::new();
        for &(epoch, start) in entries {
            h.assign(epoch, start);
        }
        h
    }

    fn pairs(h: &EpochHistory) -> Vec<(u32, u64)> {
        h.entries()
            .iter()
            .map(|e| (e.epoch, e.start_offset))
            .collect()
    }

    #[test]
    fn assign_appends_newer_epochs() {
        let h = history(&[(1, 0), (3, 10), (4, 25)]);
        assert_eq!(pairs(&h), vec![(1, 0), (3, 10), (4, 25)]);
        assert_eq!(h.latest(), Some((4, 25)));
    }

    #[test]
    fn assign_ignores_an_epoch_not_newer_than_the_latest() {
        let mut h = history(&[(2, 0), (5, 10)]);
        h.assign(5, 20);
        h.assign(3, 30);
        assert_eq!(pairs(&h), vec![(2, 0), (5, 10)]);
    }

    #[test]
    fn assign_replaces_entries_that_never_had_data() {
        let mut h = history(&[(1, 0), (2, 10)]);
        h.assign(3, 10);
        assert_eq!(pairs(&h), vec![(1, 0), (3, 10)]);
        h.assign(4, 5);
        assert_eq!(pairs(&h), vec![(1, 0), (4, 5)]);
    }

    #[test]
    fn end_offset_for_finds_the_largest_epoch_at_or_below() {
        let h = history(&[(1, 0), (3, 10), (6, 25)]);
        assert_eq!(h.end_offset_for(0, 40), None);
        assert_eq!(h.end_offset_for(1, 40), Some((1, 10)));
        assert_eq!(h.end_offset_for(2, 40), Some((1, 10)));
        assert_eq!(h.end_offset_for(3, 40), Some((3, 25)));
        assert_eq!(h.end_offset_for(5, 40), Some((3, 25)));
        assert_eq!(h.end_offset_for(6, 40), Some((6, 40)));
        assert_eq!(h.end_offset_for(99, 40), Some((6, 40)));
        assert_eq!(EpochHistory::new().end_offset_for(7, 0), None);
    }

    #[test]
    fn truncate_from_drops_entries_at_or_after_the_offset() {
        let mut h = history(&[(1, 0), (3, 10), (6, 25)]);
        h.truncate_from(25);
        assert_eq!(pairs(&h), vec![(1, 0), (3, 10)]);
        h.truncate_from(11);
        assert_eq!(pairs(&h), vec![(1, 0), (3, 10)]);
        h.truncate_from(0);
        assert!(h.is_empty());
    }

    #[test]
    fn truncate_before_keeps_the_covering_entry() {
        let mut h = history(&[(1, 0), (3, 10), (6, 25)]);
        h.truncate_before(12);
        assert_eq!(pairs(&h), vec![(3, 12), (6, 25)]);
        h.truncate_before(25);
        assert_eq!(pairs(&h), vec![(6, 25)]);
        let mut later = history(&[(2, 50)]);
        later.truncate_before(10);
        assert_eq!(pairs(&later), vec![(2, 50)]);
    }

    #[test]
    fn encode_writes_version_count_and_entries() {
        let h = history(&[(1, 0), (3, 10)]);
        assert_eq!(h.encode(), "1\n2\n1 0\n3 10\n");
        assert_eq!(EpochHistory::new().encode(), "1\n0\n");
    }

    #[test]
    fn decode_refuses_malformed_input() {
        use EpochHistoryError as E;
        let decode = EpochHistory::decode;
        assert_eq!(decode(""), Err(E::MissingVersion));
        assert!(matches!(
            decode("2\n0\n"),
            Err(E::UnsupportedVersion { .. })
        ));
        assert_eq!(decode("1\n"), Err(E::BadCount));
        assert_eq!(decode("1\nx\n"), Err(E::BadCount));
        assert!(matches!(
            decode("1\n99999999999\n"),
            Err(E::TooManyEntries { .. })
        ));
        assert_eq!(decode("1\n1\n1\n"), Err(E::BadEntry { line: 3 }));
        assert_eq!(decode("1\n1\n1 2 3\n"), Err(E::BadEntry { line: 3 }));
        assert_eq!(
            decode("1\n2\n1 0\n1 5\n"),
            Err(E::NotIncreasing { line: 4 })
        );
        assert_eq!(
            decode("1\n2\n1 5\n2 5\n"),
            Err(E::NotIncreasing { line: 4 })
        );
        assert_eq!(
            decode("1\n2\n1 0\n"),
            Err(E::CountMismatch {
                expected: 2,
                found: 1
            })
        );
        assert_eq!(
            decode("1\n1\n1 0\n2 5\n"),
            Err(E::CountMismatch {
                expected: 1,
                found: 2
            })
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn decode_never_panics(text in ".{0,200}") {
            let _ = EpochHistory::decode(&text);
        }

        #[test]
        fn decode_never_panics_on_near_valid_input(
            lines in proptest::collection::vec("[0-9 ]{0,12}", 0..8)
        ) {
            let _ = EpochHistory::decode(&lines.join("\n"));
        }

        #[test]
        fn encode_then_decode_round_trips(
            steps in proptest::collection::vec((0u32..50, 0u64..1_000), 0..20)
        ) {
            let mut h = EpochHistory::new();
            for (epoch, start) in steps {
                h.assign(epoch, start);
            }
            let decoded = EpochHistory::decode(&h.encode());
            prop_assert_eq!(decoded, Ok(h));
        }

        #[test]
        fn the_history_stays_strictly_increasing(
            steps in proptest::collection::vec((0u8..4, 0u32..50, 0u64..1_000), 0..30)
        ) {
            let mut h = EpochHistory::new();
            for (op, epoch, offset) in steps {
                match op {
                    0 | 1 => h.assign(epoch, offset),
                    2 => h.truncate_from(offset),
                    _ => h.truncate_before(offset),
                }
                for pair in h.entries().windows(2) {
                    prop_assert!(pair[0].epoch < pair[1].epoch);
                    prop_assert!(pair[0].start_offset < pair[1].start_offset);
                }
            }
        }
    }
}
