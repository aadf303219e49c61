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

/// How many of the oldest segments the limits delete. The last (active) segment is
/// never counted. By size, as Kafka does: a segment goes while the log would still
/// hold at least `bytes_max` without it. By age: a segment goes when its newest
/// record is older than `ms_max`.
pub(crate) fn expired_count(
    segments: &[SegmentSummary],
    bytes_max: Option<u64>,
    ms_max: Option<u64>,
    now_ms: TimestampMs,
) -> usize {
    let total: u64 = segments.iter().map(|s| s.size_bytes).sum();
    let mut excess = bytes_max.map(|max| total.saturating_sub(max));
    let mut count = 0;
    for segment in segments.iter().take(segments.len().saturating_sub(1)) {
        let by_size = excess.is_some_and(|e| e >= segment.size_bytes && e > 0);
        let by_age = ms_max.is_some_and(|max| {
            segment.max_timestamp.is_some_and(|ts| {
                now_ms.saturating_sub(ts) > i64::try_from(max).unwrap_or(i64::MAX)
            })
        });
        if !by_size && !by_age {
            break;
        }
        excess = excess.map(|e| e.saturating_sub(segment.size_bytes));
        count += 1;
    }
    count
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

    fn seg(size: u64, ts: i64, next: u64) -> SegmentSummary {
        SegmentSummary {
            size_bytes: size,
            max_timestamp: Some(ts),
            next_offset: Offset(next),
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
        assert_eq!(expired_count(&s, Some(350), None, 0), 0);
        assert_eq!(expired_count(&s, Some(250), None, 0), 1);
        assert_eq!(expired_count(&s, Some(150), None, 0), 2);
        assert_eq!(
            expired_count(&s, Some(0), None, 0),
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
            seg(1, 0, 40),
        ];
        assert_eq!(expired_count(&s, None, Some(1000), 1050), 0);
        assert_eq!(expired_count(&s, None, Some(1000), 1101), 1);
        assert_eq!(expired_count(&s, None, Some(1000), 1501), 3);
        assert_eq!(expired_count(&s, None, None, i64::MAX), 0);
        assert_eq!(
            expired_count(&s, None, Some(u64::MAX), 1_000_000),
            0,
            "no overflow"
        );
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
