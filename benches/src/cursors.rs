//! Cursor commits: `CursorStore::commit` per operation, against the plain-file
//! write of as many bytes as one journal record (the floor: one `write` call).

use std::time::{Duration, Instant};

use log_engine::{CursorStore, Offset};

use crate::BenchResult;

/// Bytes of one journal record besides the name: record header (length and CRC, 8)
/// and the fixed payload (kind, name length, offset, metadata length: 14).
const JOURNAL_RECORD_FIXED_BYTES: usize = 8 + 14;

/// `count` cursor names like a consumer group's: `group-0007`.
pub fn cursor_names(count: usize) -> Vec<String> {
    (0..count.max(1)).map(|i| format!("group-{i:04}")).collect()
}

/// The size of the journal record a commit of `name` without metadata writes.
pub fn journal_record_bytes(name: &str) -> usize {
    JOURNAL_RECORD_FIXED_BYTES + name.len()
}

/// The time `count` commits take in a new store, cycling through `names`, each
/// cursor moving forward by one. Compactions the journal needs on the way count.
pub fn cursor_commits(names: &[String], count: u64) -> BenchResult<Duration> {
    let dir = tempfile::tempdir()?;
    let store = CursorStore::open(dir.path())?;
    let mut cycle = names.iter().cycle();
    let start = Instant::now();
    for i in 0..count {
        let name = cycle.next().ok_or("no cursor names")?;
        store.commit(name, Offset(i))?;
    }
    let elapsed = start.elapsed();
    let Some(last) = count.checked_sub(1) else {
        return Ok(elapsed);
    };
    let name = names.get((last % names.len() as u64) as usize);
    match name.and_then(|name| store.get(name)) {
        Some(cursor) if cursor.offset == Offset(last) => Ok(elapsed),
        other => Err(format!("the last commit is not visible: {other:?}").into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_land() -> BenchResult<()> {
        cursor_commits(&cursor_names(3), 100)?;
        assert_eq!(journal_record_bytes("group-0001"), 32);
        Ok(())
    }
}
