//! A byte damaged on disk after it was written (in a record's value, or anywhere in a
//! batch header), in a sealed segment or the active one, is never served: the read that
//! would return its batch fails with `Error::CorruptBatch` naming the segment file, the
//! batch's byte position and its offset, every read before it returns the records as
//! they were written, and the log past it stays readable. A batch cut by a read's byte
//! limit is not damage.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use log_engine::{BatchRef, Error, Log, LogConfig, Offset, ReadBound, RecordBatchBuilder};

mod common;

type Result<T = (), E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

const RECORDS_PER_BATCH: u64 = 10;
const BATCHES: u64 = 40;
const T0: i64 = 1_700_000_000_000;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 4096,
        index_interval_bytes: 1000,
        index_bytes_max: 4096,
        ..LogConfig::default()
    }
}

/// The value written at `offset`: its digits make a flipped bit look like another
/// plausible value, which a reader must not be handed.
fn value(offset: u64) -> Vec<u8> {
    format!("value-{offset:06}-xxxxxxxxxxxxxxxxxxxx").into_bytes()
}

/// A log of `BATCHES` batches over several segments, fsynced.
fn filled(dir: &Path) -> Result<Log> {
    let log = Log::open(dir, config())?;
    for b in 0..BATCHES {
        let mut builder = RecordBatchBuilder::new();
        for i in 0..RECORDS_PER_BATCH {
            let offset = b * RECORDS_PER_BATCH + i;
            builder.push(None, &value(offset), T0 + offset as i64)?;
        }
        log.append(&mut builder.finish()?)?;
    }
    log.flush()?;
    Ok(log)
}

/// Where a batch lies on disk.
#[derive(Clone, Debug)]
struct BatchAt {
    path: PathBuf,
    position: u64,
    base: Offset,
    next: Offset,
}

/// Every batch of every segment, oldest first. An open log's active segment ends
/// in the zeros written ahead of its batches.
fn layout(dir: &Path) -> Result<Vec<BatchAt>> {
    let mut out = Vec::new();
    for path in common::segment_files(dir) {
        let bytes = std::fs::read(&path)?;
        let mut rest = bytes.as_slice();
        let mut position = 0;
        while rest.iter().any(|&b| b != 0) {
            let (batch, tail) = BatchRef::parse(rest, true)?;
            out.push(BatchAt {
                path: path.clone(),
                position,
                base: batch.base_offset(),
                next: batch.next_offset(),
            });
            position += batch.as_bytes().len() as u64;
            rest = tail;
        }
    }
    Ok(out)
}

/// XORs the byte at `position` of `path` with `mask`, under the open log (as a
/// failing disk or a stray write would).
fn flip(path: &Path, position: u64, mask: u8) -> Result {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, position)?;
    byte[0] ^= mask;
    file.write_all_at(&byte, position)?;
    Ok(())
}

/// The file position of a digit in the value of the second record of `batch`.
fn value_byte(batch: &BatchAt) -> Result<u64> {
    let bytes = std::fs::read(&batch.path)?;
    let needle = value(batch.base.0 + 1);
    let from = batch.position as usize;
    let at = bytes[from..]
        .windows(needle.len())
        .position(|w| w == needle.as_slice())
        .ok_or("value not found")?;
    Ok((from + at + "value-00000".len()) as u64)
}

/// Reads from `from` to the log end, `max_bytes` at a time, checking that every record
/// returned is the one written at its offset; returns where it stopped and the error
/// that stopped it, if any.
fn read_until_error(log: &Log, from: Offset, max_bytes: usize) -> (Offset, Option<Error>) {
    let mut next = from;
    while next < log.log_end_offset() {
        let read = match log.read(next, max_bytes, ReadBound::LogEnd) {
            Ok(read) => read,
            Err(error) => return (next, Some(error)),
        };
        assert!(read.next_offset() > next, "a read below the end progresses");
        let mut expected = next;
        for record in read.records() {
            let record = record.expect("a returned batch decodes");
            assert_eq!(record.offset, expected, "offsets are dense");
            assert_eq!(record.value, value(record.offset.0), "at {}", record.offset);
            expected = Offset(expected.0 + 1);
        }
        assert_eq!(expected, read.next_offset());
        next = read.next_offset();
    }
    (next, None)
}

fn assert_names(error: &Error, at: &BatchAt) {
    match error {
        Error::CorruptBatch {
            path,
            position,
            offset,
            ..
        } => {
            assert_eq!(path, &at.path, "{error}");
            assert_eq!(*position, at.position, "{error}");
            assert_eq!(*offset, at.base, "{error}");
        }
        other => panic!("expected a corrupt batch at {at:?}, got {other}"),
    }
    let text = error.to_string();
    for part in [
        at.path.display().to_string(),
        format!("byte {}", at.position),
        format!("offset {}", at.base),
    ] {
        assert!(text.contains(&part), "{text:?} names {part:?}");
    }
}

/// Damage in `at` stops every read at it, names it, and leaves the rest readable.
fn check_damaged(log: &Log, at: &BatchAt) {
    for max_bytes in [1, 700, 1 << 20] {
        let (stopped, error) = read_until_error(log, log.log_start_offset(), max_bytes);
        assert_eq!(stopped, at.base, "reads stop at the damaged batch");
        assert_names(&error.expect("the damaged batch is an error"), at);
    }
    for inside in [at.base, Offset(at.next.0 - 1)] {
        let error = log.read(inside, 1 << 20, ReadBound::LogEnd).unwrap_err();
        assert_names(&error, at);
    }
    let (end, error) = read_until_error(log, at.next, 1 << 20);
    assert!(error.is_none(), "{error:?}");
    assert_eq!(end, log.log_end_offset());
}

#[test]
fn a_flipped_value_byte_in_a_sealed_segment_is_an_error_naming_the_batch() -> Result {
    let dir = tempfile::tempdir()?;
    let log = filled(dir.path())?;
    let batches = layout(dir.path())?;
    assert!(common::segment_files(dir.path()).len() >= 3);
    let sealed = &batches[2];
    assert_ne!(
        sealed.path,
        batches.last().unwrap().path,
        "a sealed segment"
    );
    let byte = value_byte(sealed)?;

    flip(&sealed.path, byte, 1)?;
    check_damaged(&log, sealed);
    let error = log.offset_for_timestamp(T0 + sealed.base.0 as i64 + 1);
    assert_names(&error.unwrap_err(), sealed);

    flip(&sealed.path, byte, 1)?;
    let (end, error) = read_until_error(&log, Offset::ZERO, 1 << 20);
    assert!(error.is_none(), "repaired, it reads again: {error:?}");
    assert_eq!(end, Offset(BATCHES * RECORDS_PER_BATCH));
    Ok(())
}

#[test]
fn a_flipped_value_byte_in_the_active_segment_is_an_error_naming_the_batch() -> Result {
    let dir = tempfile::tempdir()?;
    let log = filled(dir.path())?;
    let batches = layout(dir.path())?;
    let last = batches.last().unwrap();
    let in_active: Vec<&BatchAt> = batches.iter().filter(|b| b.path == last.path).collect();
    assert!(in_active.len() >= 2);
    for at in [in_active[0], last] {
        let byte = value_byte(at)?;
        flip(&at.path, byte, 0x10)?;
        check_damaged(&log, at);
        flip(&at.path, byte, 0x10)?;
    }
    Ok(())
}

/// Every header byte matters: the base offset and the length (outside the CRC) are
/// checked against the batches around them, the rest by the header checks and the CRC.
#[test]
fn a_damaged_header_byte_is_an_error_naming_the_batch() -> Result {
    let dir = tempfile::tempdir()?;
    let log = filled(dir.path())?;
    let batches = layout(dir.path())?;
    // Not the first batch of its segment, so that reads walk through the one before.
    let at = batches
        .iter()
        .skip(1)
        .find(|b| b.position > 0)
        .ok_or("no batch after the first of a segment")?;
    for byte in 0..log_engine::HEADER_LEN as u64 {
        for mask in [1u8 << (byte % 8), 0x80] {
            flip(&at.path, at.position + byte, mask)?;
            let read = log.read(at.base, 1 << 20, ReadBound::LogEnd);
            match read {
                Err(error) => assert_names(&error, at),
                Ok(read) => panic!(
                    "header byte {byte} ^ {mask:#x}: read {} bytes",
                    read.bytes().len()
                ),
            }
            let (stopped, error) = read_until_error(&log, Offset::ZERO, 1 << 20);
            assert_eq!(stopped, at.base, "header byte {byte} ^ {mask:#x}");
            assert!(error.is_some(), "header byte {byte} ^ {mask:#x}");
            flip(&at.path, at.position + byte, mask)?;
        }
    }
    Ok(())
}

/// A read whose byte limit ends inside a batch returns the batches before it; the cut
/// batch is the next read's first, not damage, whatever its bytes past the limit.
#[test]
fn a_batch_cut_by_the_read_limit_is_not_damage() -> Result {
    let dir = tempfile::tempdir()?;
    let log = filled(dir.path())?;
    for max_bytes in [1, 63, 64, 65, 300, 1000, 2000, 5000] {
        let (end, error) = read_until_error(&log, Offset::ZERO, max_bytes);
        assert!(error.is_none(), "max_bytes {max_bytes}: {error:?}");
        assert_eq!(end, log.log_end_offset());
    }

    let batches = layout(dir.path())?;
    let (before, damaged) = (&batches[4], &batches[5]);
    assert_eq!(before.path, damaged.path);
    let byte = value_byte(damaged)?;
    flip(&damaged.path, byte, 1)?;
    let segment_start = batches
        .iter()
        .find(|b| b.path == damaged.path)
        .ok_or("no segment")?;
    // Limits that end in the damaged batch's header, in its value, and just before it.
    for limit_end in [damaged.position + 10, byte, damaged.position] {
        let max_bytes = (limit_end - segment_start.position) as usize;
        let read = log.read(segment_start.base, max_bytes, ReadBound::LogEnd)?;
        assert_eq!(
            read.next_offset(),
            damaged.base,
            "stops before the cut batch"
        );
        assert_eq!(
            read.records().count() as u64,
            damaged.base.0 - segment_start.base.0
        );
    }
    assert!(before.next == damaged.base);
    Ok(())
}
