//! Which segments retention deletes: pure functions of the segments' summaries, the
//! limits and the time, so they are tested without files.

use crate::offset::{Offset, TimestampMs};

/// What retention needs to know of a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SegmentSummary {
    /// The size of its `.log` file.
    pub(crate) size_bytes: u64,
    /// Its newest record's timestamp; `None` while empty.
    pub(crate) max_timestamp: Option<TimestampMs>,
    /// The offset after its last record.
    pub(crate) next_offset: Offset,
}

/// The limits [`expired_count`] applies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Keep at least this many bytes; `None`: no limit by size.
    pub(crate) bytes_max: Option<u64>,
    /// Keep records at most this old; `None`: no limit by age.
    pub(crate) ms_max: Option<u64>,
}

/// How many of the oldest segments the limits delete; `segments.len()` when every
/// one goes, the active (last) one included, which the caller then rolls first.
///
/// - By size, as Kafka does: a segment goes while the log would still hold at least
///   `bytes_max` without it. Never the active segment.
/// - By age: a segment goes when its newest record is older than `ms_max`, the
///   active segment too. An empty segment has no age and never goes by it, so a
///   log whose records all expired rolls once and then keeps its one empty segment.
/// - Only segments wholly below `high_watermark` go, as in Kafka: the log start
///   never passes the high watermark, so retention never removes records that
///   followers have not copied yet, nor makes the log start run ahead of what
///   consumers may read.
pub(crate) fn expired_count(
    segments: &[SegmentSummary],
    limits: Limits,
    now_ms: TimestampMs,
    high_watermark: Offset,
) -> usize {
    let total: u64 = segments.iter().map(|s| s.size_bytes).sum();
    let mut excess = limits.bytes_max.map(|max| total.saturating_sub(max));
    let active = segments.len().saturating_sub(1);
    let mut count = 0;
    for (i, segment) in segments.iter().enumerate() {
        let by_size = i != active && excess.is_some_and(|e| e >= segment.size_bytes && e > 0);
        let by_age = limits
            .ms_max
            .is_some_and(|max| is_older_than(segment, max, now_ms));
        let replicated = segment.next_offset <= high_watermark;
        if !(by_size || by_age) || !replicated {
            break;
        }
        excess = excess.map(|e| e.saturating_sub(segment.size_bytes));
        count += 1;
    }
    count
}

/// True when the segment's newest record is more than `ms_max` older than `now_ms`;
/// false for an empty segment.
fn is_older_than(segment: &SegmentSummary, ms_max: u64, now_ms: TimestampMs) -> bool {
    let max = i64::try_from(ms_max).unwrap_or(i64::MAX);
    segment
        .max_timestamp
        .is_some_and(|ts| now_ms.saturating_sub(ts) > max)
}

/// How many of the oldest segments hold only records below `offset`. The last
/// (active) segment is never counted.
pub(crate) fn below_count(segments: &[SegmentSummary], offset: Offset) -> usize {
    segments
        .iter()
        .take(segments.len().saturating_sub(1))
        .take_while(|s| s.next_offset <= offset)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every offset below it counts as replicated.
    const ALL: Offset = Offset(u64::MAX);

    fn seg(size: u64, ts: i64, next: u64) -> SegmentSummary {
        SegmentSummary {
            size_bytes: size,
            max_timestamp: Some(ts),
            next_offset: Offset(next),
        }
    }

    fn empty(next: u64) -> SegmentSummary {
        SegmentSummary {
            size_bytes: 0,
            max_timestamp: None,
            next_offset: Offset(next),
        }
    }

    fn by_size(bytes_max: u64) -> Limits {
        Limits {
            bytes_max: Some(bytes_max),
            ms_max: None,
        }
    }

    fn by_age(ms_max: u64) -> Limits {
        Limits {
            bytes_max: None,
            ms_max: Some(ms_max),
        }
    }

    #[test]
    fn size_limit_keeps_at_least_the_limit() {
        let s = [
            seg(100, 0, 10),
            seg(100, 0, 20),
            seg(100, 0, 30),
            seg(50, 0, 35),
        ];
        assert_eq!(expired_count(&s, by_size(350), 0, ALL), 0);
        assert_eq!(expired_count(&s, by_size(250), 0, ALL), 1);
        assert_eq!(expired_count(&s, by_size(150), 0, ALL), 2);
        assert_eq!(
            expired_count(&s, by_size(0), 0, ALL),
            3,
            "never the active segment"
        );
    }

    #[test]
    fn age_limit_deletes_old_segments_in_order() {
        let s = [
            seg(1, 100, 10),
            seg(1, 500, 20),
            seg(1, 200, 30),
            seg(1, 1400, 40),
        ];
        assert_eq!(expired_count(&s, by_age(1000), 1050, ALL), 0);
        assert_eq!(expired_count(&s, by_age(1000), 1101, ALL), 1);
        assert_eq!(expired_count(&s, by_age(1000), 1501, ALL), 3);
        assert_eq!(expired_count(&s, Limits::default(), i64::MAX, ALL), 0);
        assert_eq!(
            expired_count(&s, by_age(u64::MAX), 1_000_000, ALL),
            0,
            "no overflow"
        );
    }

    #[test]
    fn age_limit_counts_an_expired_active_segment_too() {
        let s = [seg(1, 100, 10), seg(1, 300, 20)];
        assert_eq!(expired_count(&s, by_age(1000), 1200, ALL), 1);
        assert_eq!(
            expired_count(&s, by_age(1000), 1301, ALL),
            2,
            "every segment, the active one included"
        );
        let only = [seg(1, 300, 20)];
        assert_eq!(expired_count(&only, by_age(1000), 1301, ALL), 1);
        assert_eq!(
            expired_count(&only, by_size(0), 1301, ALL),
            0,
            "size never deletes the active segment"
        );
    }

    #[test]
    fn an_empty_active_segment_never_expires() {
        let rolled = [empty(20)];
        assert_eq!(expired_count(&rolled, by_age(0), i64::MAX, ALL), 0);
        assert_eq!(expired_count(&rolled, by_size(0), i64::MAX, ALL), 0);
        let s = [seg(1, 100, 20), empty(20)];
        assert_eq!(
            expired_count(&s, by_age(1000), 5000, ALL),
            1,
            "the sealed segment goes, the empty active one stays"
        );
    }

    #[test]
    fn nothing_at_or_above_the_high_watermark_goes() {
        let s = [seg(1, 100, 10), seg(1, 100, 20), seg(1, 100, 30)];
        assert_eq!(expired_count(&s, by_age(10), 5000, Offset(0)), 0);
        assert_eq!(expired_count(&s, by_age(10), 5000, Offset(19)), 1);
        assert_eq!(expired_count(&s, by_age(10), 5000, Offset(20)), 2);
        assert_eq!(expired_count(&s, by_age(10), 5000, Offset(30)), 3);
        assert_eq!(expired_count(&s, by_size(0), 5000, Offset(10)), 1);
    }

    #[test]
    fn below_counts_whole_segments_only() {
        let s = [seg(1, 0, 10), seg(1, 0, 20), seg(1, 0, 30)];
        assert_eq!(below_count(&s, Offset(9)), 0);
        assert_eq!(below_count(&s, Offset(10)), 1);
        assert_eq!(below_count(&s, Offset(25)), 2);
        assert_eq!(below_count(&s, Offset(1000)), 2);
    }
}
