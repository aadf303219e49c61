//! Domain numbers of the log: offsets, relative offsets and file positions.

use std::fmt;

/// The position of a record in a log: the first record ever appended has offset 0 and
/// every later record the next number. Offsets are never reused, not even after
/// retention deletes the records below them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Offset(pub u64);

impl Offset {
    /// The first offset of a new log.
    pub const ZERO: Offset = Offset(0);

    /// The raw number.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// This offset moved `delta` records further, or `None` on overflow.
    pub fn checked_add(self, delta: u64) -> Option<Offset> {
        self.0.checked_add(delta).map(Offset)
    }

    /// The offset as seen from a segment based at `base`: `None` when it lies before
    /// `base` or too far after it for a [`RelativeOffset`].
    pub fn relative_to(self, base: Offset) -> Option<RelativeOffset> {
        let delta = self.0.checked_sub(base.0)?;
        u32::try_from(delta).ok().map(RelativeOffset)
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<u64> for Offset {
    fn from(value: u64) -> Self {
        Offset(value)
    }
}

/// An offset relative to the base offset of its segment, as the offset index stores it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RelativeOffset(pub u32);

impl RelativeOffset {
    /// The absolute offset in a segment based at `base`.
    pub fn absolute(self, base: Offset) -> Offset {
        Offset(base.0 + u64::from(self.0))
    }
}

/// A byte position inside a segment's `.log` file. Segments are capped below 4 GiB so
/// a position always fits in 32 bits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FilePosition(pub u32);

impl FilePosition {
    /// The position as a file offset for `pread`/`pwrite`.
    pub fn as_u64(self) -> u64 {
        u64::from(self.0)
    }
}

/// Milliseconds since the Unix epoch, as records carry them.
pub type TimestampMs = i64;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_offsets_round_trip_and_reject_out_of_range() {
        let base = Offset(100);
        assert_eq!(Offset(150).relative_to(base), Some(RelativeOffset(50)));
        assert_eq!(RelativeOffset(50).absolute(base), Offset(150));
        assert_eq!(Offset(99).relative_to(base), None);
        assert_eq!(Offset(100 + (1 << 32)).relative_to(base), None);
    }
}
