//! Cursors: named consumer positions in one log, persisted in a journal (Kafka's
//! committed offsets).
//!
//! A [`CursorStore`] lives in a directory of its own (the broker uses
//! `<log dir>/cursors`) and keeps every cursor in memory. Each commit or delete appends
//! one self-checking record to the file `journal` with a single `pwrite` and no fsync,
//! so a consumer can commit after every pull; [`CursorStore::flush`] makes the commits
//! so far durable.
//!
//! # Byte format (version 1)
//!
//! All fixed-width integers are little-endian. The journal opens with a header:
//!
//! | byte | size | field | meaning |
//! |-----:|-----:|-------|---------|
//! | 0 | 4 | `magic` | `CRSJ` |
//! | 4 | 4 | `version` | `JOURNAL_VERSION`, 1 |
//!
//! and continues with records back to back:
//!
//! | byte | size | field | meaning |
//! |-----:|-----:|-------|---------|
//! | 0 | 4 | `length` | bytes of the payload (total size = 8 + `length`) |
//! | 4 | 4 | `crc` | CRC-32 (IEEE) of the payload |
//! | 8 | 1 | `kind` | 1 = commit, 2 = delete |
//! | 9 | 1 | `name_length` | n, 1 to 249 |
//! | 10 | n | `name` | ASCII, `[A-Za-z0-9._-]`, not `.` or `..` |
//! | 10 + n | 8 | `offset` | the committed offset; zero in a delete |
//! | 18 + n | 4 | `metadata_length` | m, at most 4096; zero in a delete |
//! | 22 + n | m | `metadata` | opaque bytes of the consumer's |
//!
//! The payload is bytes 8 to the end. A later record for a name replaces an earlier
//! one; a delete removes the name.
//!
//! # Recovery
//!
//! Opening replays the records in order. The first record whose length runs past the
//! end of the file, whose CRC fails or whose payload is malformed ends the replay, and
//! the file is cut there: a half-written record is never read back, and later appends
//! follow good data. Records after the damage were written after the last fsync (an
//! fsync covers everything before it), so cutting them loses only unflushed commits.
//!
//! # Compaction
//!
//! When the journal is larger than both `COMPACT_BYTES_MIN` and `COMPACT_RATIO` times
//! the live entries, the commit or delete that crossed the bound rewrites it: one
//! commit record per live cursor goes to `journal.tmp`, which is fsynced, renamed over
//! `journal`, and the directory fsynced. A crash at any point leaves one whole journal,
//! the old or the new; a leftover `journal.tmp` is deleted on open.
#![deny(clippy::indexing_slicing)]

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::checkpoint::sync_dir;
use crate::error::{Error, IoContext, Result};
use crate::offset::Offset;

/// The journal's name inside the store's directory.
const JOURNAL_FILE: &str = "journal";
/// Where compaction writes the next journal before renaming it over `journal`.
const JOURNAL_TEMP_FILE: &str = "journal.tmp";
/// Keeps a second store, in this process or another, from appending to the journal.
const LOCK_FILE: &str = ".lock";
/// The first bytes of every journal, so a stray file is refused rather than cut.
const MAGIC: [u8; 4] = *b"CRSJ";
/// The journal format this module writes and reads.
const JOURNAL_VERSION: u32 = 1;
/// Magic and version.
const FILE_HEADER_LEN: usize = 8;
/// Length and CRC in front of each payload.
const RECORD_HEADER_LEN: usize = 8;
/// The payload without name and metadata: kind, name length, offset, metadata length.
const PAYLOAD_FIXED_LEN: usize = 1 + 1 + 8 + 4;
/// The smallest payload: a one-byte name and no metadata.
const PAYLOAD_LEN_MIN: usize = PAYLOAD_FIXED_LEN + 1;
/// The largest payload; a longer length field is damage, not a record.
const PAYLOAD_LEN_MAX: usize = PAYLOAD_FIXED_LEN + NAME_BYTES_MAX + METADATA_BYTES_MAX;
/// The record kind that sets a cursor.
const KIND_COMMIT: u8 = 1;
/// The record kind that removes a cursor.
const KIND_DELETE: u8 = 2;

/// The longest cursor name in bytes: Kafka's limit for topic names, which leaves room
/// for a suffix within a 255-byte file name should a cursor ever get a file of its own.
const NAME_BYTES_MAX: usize = 249;
/// The most metadata a cursor carries: room for a queue's acknowledgement bitmap over
/// a window of 32 768 offsets, and small enough that a commit stays one short `pwrite`
/// and compaction stays cheap.
const METADATA_BYTES_MAX: usize = 4096;

/// Compaction waits for at least this much journal: rewriting a small file every few
/// commits would cost two fsyncs to save a few kilobytes.
const COMPACT_BYTES_MIN: u64 = 1 << 20;
/// Compaction also waits for the journal to be this many times the live entries, so
/// each rewrite of the live entries is paid for by at least three times as many bytes
/// of appends: amortised, a commit costs a constant number of bytes written.
const COMPACT_RATIO: u64 = 4;

const _: () = assert!(FILE_HEADER_LEN == MAGIC.len() + 4);
const _: () = assert!(PAYLOAD_FIXED_LEN == 14);
const _: () = assert!(NAME_BYTES_MAX <= u8::MAX as usize);
const _: () = assert!(PAYLOAD_LEN_MAX <= u32::MAX as usize);
const _: () = {
    const fn is_send_sync<T: Send + Sync>() {}
    is_send_sync::<CursorStore>();
};

/// A named position in the log, as committed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    /// The cursor's name: 1 to 249 bytes of `[A-Za-z0-9._-]`.
    pub name: String,
    /// The committed offset: by convention the next offset the consumer will read.
    pub offset: Offset,
    /// Opaque bytes committed with the offset, at most
    /// [`CursorStore::METADATA_BYTES_MAX`]; empty when none were given.
    pub metadata: Vec<u8>,
}

/// Named, persisted consumer positions for one log.
///
/// `CursorStore` is `Send + Sync`: share it in an `Arc`. Every method takes `&self`;
/// commits and deletes are serialised by an internal lock, and an fsync runs outside
/// it, so a flush does not hold up commits.
///
/// A commit returns once its record is in the kernel's page cache: it survives the
/// process being killed, and after [`CursorStore::flush`] it survives a power loss.
/// After one failed write or fsync the store refuses every later commit and delete
/// (the kernel may have dropped the dirty pages) until it is reopened.
#[derive(Debug)]
pub struct CursorStore {
    /// The store's directory; errors name it.
    dir: PathBuf,
    /// `dir/journal`, kept for error messages.
    journal_path: PathBuf,
    /// The journal size below which compaction never runs; `COMPACT_BYTES_MIN` except
    /// in tests, which compact small journals.
    compact_bytes_min: u64,
    /// Everything a commit touches.
    state: Mutex<State>,
    /// Serialises fsyncs: the flushes that queue here while one syncs usually find
    /// their commits already durable when their turn comes.
    sync_lock: Mutex<()>,
    /// Held for the life of the store: the directory's lock.
    _lock: File,
}

/// What a cursor holds besides its name.
#[derive(Debug)]
struct Entry {
    offset: Offset,
    metadata: Vec<u8>,
}

/// The store's state behind its lock.
#[derive(Debug)]
struct State {
    /// The journal. Compaction swaps in the new one; the `Arc` lets a flush fsync
    /// without holding the lock.
    file: Arc<File>,
    /// The live cursors, sorted by name.
    entries: BTreeMap<String, Entry>,
    /// The journal's length: where the next record goes.
    journal_bytes: u64,
    /// The length a compacted journal would have: the header and one commit record
    /// per live cursor.
    live_bytes: u64,
    /// Records appended since the store opened; only grows.
    appended: u64,
    /// How many of the `appended` records are known to be fsynced.
    synced: u64,
    /// The first write or fsync failure; once set, commits and deletes are refused.
    failure: Option<String>,
    /// Set by `close`; commits and deletes are refused afterwards.
    closed: bool,
    /// Reused to encode records, so a warm commit allocates nothing.
    scratch: Vec<u8>,
}

impl CursorStore {
    /// The longest cursor name, in bytes.
    pub const NAME_BYTES_MAX: usize = NAME_BYTES_MAX;
    /// The most metadata one cursor carries, in bytes.
    pub const METADATA_BYTES_MAX: usize = METADATA_BYTES_MAX;

    /// Opens the store in `dir`, creating the directory and an empty journal if
    /// needed. Replays the journal and cuts a torn or damaged tail.
    ///
    /// Fails if another open store holds the directory, or if `dir/journal` is not
    /// a cursor journal (it is then left untouched).
    pub fn open(dir: impl AsRef<Path>) -> Result<CursorStore> {
        Self::open_with_compaction(dir.as_ref(), COMPACT_BYTES_MIN)
    }

    fn open_with_compaction(dir: &Path, compact_bytes_min: u64) -> Result<CursorStore> {
        let dir = dir.to_path_buf();
        std::fs::create_dir_all(&dir).at(&dir)?;
        let lock = lock_dir(&dir)?;
        remove_temp_file(&dir)?;
        let journal_path = dir.join(JOURNAL_FILE);
        let (file, replay) = open_journal(&dir, &journal_path)?;
        let state = State {
            file: Arc::new(file),
            live_bytes: live_bytes(&replay.entries),
            entries: replay.entries,
            journal_bytes: replay.valid_bytes,
            appended: 0,
            synced: 0,
            failure: None,
            closed: false,
            scratch: Vec::new(),
        };
        let store = CursorStore {
            dir,
            journal_path,
            compact_bytes_min,
            state: Mutex::new(state),
            sync_lock: Mutex::new(()),
            _lock: lock,
        };
        store.compact_if_due(&mut store.lock())?;
        Ok(store)
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Sets the cursor `name` to `offset` with no metadata. Writes one journal record,
    /// without an fsync: see [`CursorStore::flush`] and [`CursorStore::commit_durable`].
    pub fn commit(&self, name: &str, offset: Offset) -> Result<()> {
        self.commit_with_metadata(name, offset, &[])
    }

    /// Sets the cursor `name` to `offset` and `metadata`, which replaces the metadata
    /// committed before. Fails with [`Error::CursorMetadataTooLarge`] above
    /// [`CursorStore::METADATA_BYTES_MAX`] bytes.
    ///
    /// On an I/O error the commit may or may not have reached the journal, and the
    /// store refuses further commits until reopened.
    pub fn commit_with_metadata(&self, name: &str, offset: Offset, metadata: &[u8]) -> Result<()> {
        validate_name(name)?;
        if metadata.len() > METADATA_BYTES_MAX {
            return Err(Error::CursorMetadataTooLarge {
                size: metadata.len(),
                limit: METADATA_BYTES_MAX,
            });
        }
        let mut state = self.lock();
        self.check_writable(&state)?;
        encode_record(&mut state.scratch, KIND_COMMIT, name, offset, metadata);
        self.append_scratch(&mut state)?;
        let added = record_bytes(name, metadata);
        match state.entries.get_mut(name) {
            Some(entry) => {
                let removed = record_bytes(name, &entry.metadata);
                entry.offset = offset;
                entry.metadata.clear();
                entry.metadata.extend_from_slice(metadata);
                state.live_bytes = state.live_bytes - removed + added;
            }
            None => {
                let metadata = metadata.to_vec();
                state
                    .entries
                    .insert(name.to_owned(), Entry { offset, metadata });
                state.live_bytes += added;
            }
        }
        self.compact_if_due(&mut state)
    }

    /// [`CursorStore::commit_with_metadata`], then [`CursorStore::flush`]: returns
    /// once the commit is on disk.
    pub fn commit_durable(&self, name: &str, offset: Offset, metadata: &[u8]) -> Result<()> {
        self.commit_with_metadata(name, offset, metadata)?;
        self.flush()
    }

    /// The cursor `name`, if it was committed and not deleted.
    pub fn get(&self, name: &str) -> Option<Cursor> {
        let state = self.lock();
        let entry = state.entries.get(name)?;
        Some(cursor(name, entry))
    }

    /// Every cursor, sorted by name.
    pub fn list(&self) -> Vec<Cursor> {
        let state = self.lock();
        state
            .entries
            .iter()
            .map(|(name, entry)| cursor(name, entry))
            .collect()
    }

    /// Removes the cursor `name`. Returns whether it existed; deleting a missing
    /// cursor writes nothing.
    pub fn delete(&self, name: &str) -> Result<bool> {
        validate_name(name)?;
        let mut state = self.lock();
        self.check_writable(&state)?;
        let Some(metadata_len) = state.entries.get(name).map(|e| e.metadata.len()) else {
            return Ok(false);
        };
        encode_record(&mut state.scratch, KIND_DELETE, name, Offset::ZERO, &[]);
        self.append_scratch(&mut state)?;
        state.entries.remove(name);
        state.live_bytes -= record_bytes_for(name.len(), metadata_len);
        self.compact_if_due(&mut state)?;
        Ok(true)
    }

    /// Fsyncs the journal: every commit and delete that returned before this call
    /// survives a crash. One caller syncs at a time; commits go on meanwhile.
    pub fn flush(&self) -> Result<()> {
        if self.pending().is_none() {
            return Ok(());
        }
        let _turn = self.sync_lock.lock().unwrap_or_else(|p| p.into_inner());
        let Some((file, target)) = self.pending() else {
            return Ok(());
        };
        {
            let state = self.lock();
            if state.failure.is_some() {
                return self.check_writable(&state);
            }
        }
        let synced = file.sync_data().at(&self.journal_path);
        let mut state = self.lock();
        self.latch(&mut state, synced)?;
        state.synced = state.synced.max(target);
        Ok(())
    }

    /// Flushes and refuses commits and deletes afterwards; `get` and `list` go on
    /// working. The directory stays locked until the store is dropped. Closing twice
    /// does nothing.
    pub fn close(&self) -> Result<()> {
        {
            let mut state = self.lock();
            if state.closed {
                return Ok(());
            }
            state.closed = true;
        }
        self.flush()
    }

    /// The journal and the number of records to sync, if any are not yet synced.
    fn pending(&self) -> Option<(Arc<File>, u64)> {
        let state = self.lock();
        (state.synced < state.appended).then(|| (Arc::clone(&state.file), state.appended))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check_writable(&self, state: &State) -> Result<()> {
        if let Some(cause) = &state.failure {
            return Err(Error::PreviousIo {
                path: self.dir.clone(),
                cause: cause.clone(),
            });
        }
        if state.closed {
            return Err(Error::Closed {
                path: self.dir.clone(),
            });
        }
        Ok(())
    }

    /// Records the first I/O failure; every later commit and delete is refused.
    fn latch<T>(&self, state: &mut State, result: Result<T>) -> Result<T> {
        if let Err(error) = &result {
            state.failure.get_or_insert_with(|| error.to_string());
            tracing::error!(
                dir = %self.dir.display(),
                %error,
                "cursor journal write failed; commits refused until reopened"
            );
        }
        result
    }

    /// Writes the record in `state.scratch` at the end of the journal.
    fn append_scratch(&self, state: &mut State) -> Result<()> {
        let written = state
            .file
            .write_all_at(&state.scratch, state.journal_bytes)
            .at(&self.journal_path);
        self.latch(state, written)?;
        state.journal_bytes += state.scratch.len() as u64;
        state.appended += 1;
        Ok(())
    }

    /// Rewrites the journal with only the live entries once it has outgrown them.
    fn compact_if_due(&self, state: &mut State) -> Result<()> {
        let due = state.journal_bytes > self.compact_bytes_min
            && state.journal_bytes > COMPACT_RATIO.saturating_mul(state.live_bytes);
        if !due {
            return Ok(());
        }
        let written = write_journal(&self.dir, &state.entries);
        let (file, bytes) = self.latch(state, written)?;
        debug_assert_eq!(
            bytes, state.live_bytes,
            "the compacted journal is the live set"
        );
        tracing::debug!(
            dir = %self.dir.display(),
            from = state.journal_bytes,
            to = bytes,
            "compacted the cursor journal"
        );
        state.file = Arc::new(file);
        state.journal_bytes = bytes;
        state.synced = state.appended;
        Ok(())
    }
}

fn cursor(name: &str, entry: &Entry) -> Cursor {
    Cursor {
        name: name.to_owned(),
        offset: entry.offset,
        metadata: entry.metadata.clone(),
    }
}

/// Checks a cursor name against the rules in [`Cursor::name`].
fn validate_name(name: &str) -> Result<()> {
    const _: () = assert!(NAME_BYTES_MAX == 249, "update the reason below");
    let reason = if name.is_empty() {
        "it is empty"
    } else if name.len() > NAME_BYTES_MAX {
        "it is longer than 249 bytes"
    } else if name == "." || name == ".." {
        "\".\" and \"..\" are reserved"
    } else if !name.bytes().all(is_name_byte) {
        "only A-Z, a-z, 0-9, '.', '_' and '-' are allowed"
    } else {
        return Ok(());
    };
    Err(Error::InvalidCursorName {
        // Bounded, so that a huge rejected name does not become a huge error.
        name: name.chars().take(NAME_BYTES_MAX + 1).collect(),
        reason,
    })
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')
}

/// The size of a commit record for a cursor with this name and metadata.
fn record_bytes(name: &str, metadata: &[u8]) -> u64 {
    record_bytes_for(name.len(), metadata.len())
}

fn record_bytes_for(name_len: usize, metadata_len: usize) -> u64 {
    (RECORD_HEADER_LEN + PAYLOAD_FIXED_LEN + name_len + metadata_len) as u64
}

/// The size of a journal holding exactly these entries.
fn live_bytes(entries: &BTreeMap<String, Entry>) -> u64 {
    let records: u64 = entries
        .iter()
        .map(|(name, entry)| record_bytes(name, &entry.metadata))
        .sum();
    FILE_HEADER_LEN as u64 + records
}

/// Encodes one record into `buf`, replacing what it held. The caller has checked the
/// name and the metadata against their limits.
fn encode_record(buf: &mut Vec<u8>, kind: u8, name: &str, offset: Offset, metadata: &[u8]) {
    debug_assert!(validate_name(name).is_ok());
    debug_assert!(metadata.len() <= METADATA_BYTES_MAX);
    let payload_len = PAYLOAD_FIXED_LEN + name.len() + metadata.len();
    buf.clear();
    buf.extend_from_slice(&(payload_len as u32).to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    buf.push(kind);
    buf.push(name.len() as u8);
    buf.extend_from_slice(name.as_bytes());
    buf.extend_from_slice(&offset.0.to_le_bytes());
    buf.extend_from_slice(&(metadata.len() as u32).to_le_bytes());
    buf.extend_from_slice(metadata);
    let crc = crc32fast::hash(buf.get(RECORD_HEADER_LEN..).unwrap_or_default());
    if let Some(slot) = buf.get_mut(4..RECORD_HEADER_LEN) {
        slot.copy_from_slice(&crc.to_le_bytes());
    }
    // Checked as it is written, as the replay checks it when it is read back.
    let payload = buf.get(RECORD_HEADER_LEN..).unwrap_or_default();
    debug_assert_eq!(parse_payload(payload).map(|op| op.name() == name), Ok(true));
}

/// One decoded record, borrowing its payload.
#[derive(Debug, PartialEq, Eq)]
enum Op<'a> {
    Commit {
        name: &'a str,
        offset: Offset,
        metadata: &'a [u8],
    },
    Delete {
        name: &'a str,
    },
}

impl Op<'_> {
    fn name(&self) -> &str {
        match self {
            Op::Commit { name, .. } | Op::Delete { name } => name,
        }
    }
}

/// Decodes a payload whose CRC has been checked. Every byte must be accounted for.
fn parse_payload(payload: &[u8]) -> std::result::Result<Op<'_>, &'static str> {
    let (&kind, rest) = payload.split_first().ok_or("empty payload")?;
    let (&name_len, rest) = rest.split_first().ok_or("no name length")?;
    let (name, rest) = rest
        .split_at_checked(usize::from(name_len))
        .ok_or("the name runs past the payload")?;
    let name = std::str::from_utf8(name)
        .ok()
        .filter(|name| validate_name(name).is_ok())
        .ok_or("invalid cursor name")?;
    let (offset, rest) = rest.split_first_chunk::<8>().ok_or("no offset")?;
    let offset = Offset(u64::from_le_bytes(*offset));
    let (metadata_len, metadata) = rest.split_first_chunk::<4>().ok_or("no metadata length")?;
    let metadata_len = u32::from_le_bytes(*metadata_len);
    if usize::try_from(metadata_len).ok() != Some(metadata.len()) {
        return Err("the metadata length does not match the payload");
    }
    if metadata.len() > METADATA_BYTES_MAX {
        return Err("the metadata is over its limit");
    }
    match kind {
        KIND_COMMIT => Ok(Op::Commit {
            name,
            offset,
            metadata,
        }),
        KIND_DELETE if offset == Offset::ZERO && metadata.is_empty() => Ok(Op::Delete { name }),
        KIND_DELETE => Err("a delete with an offset or metadata"),
        _ => Err("unknown record kind"),
    }
}

/// What replaying a journal found.
#[derive(Debug, Default)]
struct Replay {
    entries: BTreeMap<String, Entry>,
    /// The length of the good prefix: header and whole, checked records.
    valid_bytes: u64,
    /// Why the replay stopped before the end of the file, if it did.
    damage: Option<&'static str>,
}

/// Opens `journal`, creating an empty one if it is missing or empty, and replays it.
/// A damaged tail is cut off and the cut fsynced, so new records never sit in front
/// of old garbage that a later replay could mistake for more.
fn open_journal(dir: &Path, path: &Path) -> Result<(File, Replay)> {
    let file = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return fresh_journal(dir),
        Err(e) => return Err(Error::io(path, e)),
    };
    let file_bytes = file.metadata().at(path)?.len();
    if file_bytes == 0 {
        return fresh_journal(dir);
    }
    let replay = replay(&file, path, file_bytes)?;
    if let Some(reason) = replay.damage {
        tracing::warn!(
            file = %path.display(),
            position = replay.valid_bytes,
            reason,
            "truncating the damaged tail of the cursor journal"
        );
        file.set_len(replay.valid_bytes).at(path)?;
        file.sync_all().at(path)?;
    }
    Ok((file, replay))
}

/// Creates an empty journal. Also syncs the parent directory, which may have just
/// gained `dir`: a flushed commit is only durable if the path to it is.
fn fresh_journal(dir: &Path) -> Result<(File, Replay)> {
    let (file, valid_bytes) = write_journal(dir, &BTreeMap::new())?;
    match dir.parent() {
        Some(parent) if parent.as_os_str().is_empty() => sync_dir(Path::new("."))?,
        Some(parent) => sync_dir(parent)?,
        None => {}
    }
    let replay = Replay {
        valid_bytes,
        ..Replay::default()
    };
    Ok((file, replay))
}

/// Reads the header and the records of `file`, `file_bytes` long, in order.
fn replay(file: &File, path: &Path, file_bytes: u64) -> Result<Replay> {
    let mut reader = BufReader::new(file);
    let mut header = [0u8; FILE_HEADER_LEN];
    check_header(&mut reader, &mut header, file_bytes).map_err(|reason| Error::Corrupt {
        path: path.to_path_buf(),
        position: 0,
        reason: reason.into(),
    })?;
    let mut replay = Replay {
        valid_bytes: FILE_HEADER_LEN as u64,
        ..Replay::default()
    };
    let mut payload = Vec::with_capacity(PAYLOAD_LEN_MAX);
    while replay.valid_bytes < file_bytes {
        let left = file_bytes - replay.valid_bytes;
        match read_record(&mut reader, &mut payload, left).at(path)? {
            Err(reason) => {
                replay.damage = Some(reason);
                break;
            }
            Ok(op) => apply(&mut replay.entries, op),
        }
        replay.valid_bytes += (RECORD_HEADER_LEN + payload.len()) as u64;
    }
    Ok(replay)
}

fn check_header(
    reader: &mut impl Read,
    header: &mut [u8; FILE_HEADER_LEN],
    file_bytes: u64,
) -> std::result::Result<(), &'static str> {
    if file_bytes < FILE_HEADER_LEN as u64 {
        return Err("shorter than the journal header");
    }
    reader
        .read_exact(header)
        .map_err(|_| "cannot read the journal header")?;
    let (magic, version) = header.split_first_chunk::<4>().ok_or("short header")?;
    if *magic != MAGIC {
        return Err("not a cursor journal (wrong magic)");
    }
    let version = version.first_chunk::<4>().ok_or("short header")?;
    if u32::from_le_bytes(*version) != JOURNAL_VERSION {
        return Err("unsupported cursor journal version");
    }
    Ok(())
}

/// Reads the next record (of at most `left` bytes) into `payload`. The outer error
/// is an I/O failure; the inner one says why the bytes are not a whole, good record.
fn read_record<'p>(
    reader: &mut impl Read,
    payload: &'p mut Vec<u8>,
    left: u64,
) -> io::Result<std::result::Result<Op<'p>, &'static str>> {
    payload.clear();
    if left < RECORD_HEADER_LEN as u64 {
        return Ok(Err("a torn record header"));
    }
    let mut header = [0u8; RECORD_HEADER_LEN];
    reader.read_exact(&mut header)?;
    let [l0, l1, l2, l3, c0, c1, c2, c3] = header;
    let length = u32::from_le_bytes([l0, l1, l2, l3]);
    let crc = u32::from_le_bytes([c0, c1, c2, c3]);
    let length = usize::try_from(length).unwrap_or(usize::MAX);
    if !(PAYLOAD_LEN_MIN..=PAYLOAD_LEN_MAX).contains(&length) {
        return Ok(Err("a record length out of bounds"));
    }
    if (RECORD_HEADER_LEN + length) as u64 > left {
        return Ok(Err("a record runs past the end of the journal"));
    }
    payload.resize(length, 0);
    reader.read_exact(payload)?;
    if crc32fast::hash(payload) != crc {
        return Ok(Err("a record CRC mismatch"));
    }
    Ok(parse_payload(payload))
}

fn apply(entries: &mut BTreeMap<String, Entry>, op: Op<'_>) {
    match op {
        Op::Commit {
            name,
            offset,
            metadata,
        } => {
            let metadata = metadata.to_vec();
            entries.insert(name.to_owned(), Entry { offset, metadata });
        }
        Op::Delete { name } => {
            entries.remove(name);
        }
    }
}

/// Writes a journal holding exactly `entries` to the temporary file, fsyncs it,
/// renames it over `journal` and fsyncs the directory. Returns the open new journal
/// and its length.
fn write_journal(dir: &Path, entries: &BTreeMap<String, Entry>) -> Result<(File, u64)> {
    let temp_path = dir.join(JOURNAL_TEMP_FILE);
    let written = write_temp_journal(&temp_path, entries);
    if written.is_err() {
        // Best effort: open deletes a leftover temporary file anyway.
        let _ = std::fs::remove_file(&temp_path);
    }
    let (file, bytes) = written?;
    let journal_path = dir.join(JOURNAL_FILE);
    std::fs::rename(&temp_path, &journal_path).at(&journal_path)?;
    sync_dir(dir)?;
    Ok((file, bytes))
}

fn write_temp_journal(path: &Path, entries: &BTreeMap<String, Entry>) -> Result<(File, u64)> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .at(path)?;
    let mut writer = BufWriter::new(&file);
    let mut bytes = FILE_HEADER_LEN as u64;
    writer.write_all(&MAGIC).at(path)?;
    writer.write_all(&JOURNAL_VERSION.to_le_bytes()).at(path)?;
    let mut record = Vec::new();
    for (name, entry) in entries {
        encode_record(
            &mut record,
            KIND_COMMIT,
            name,
            entry.offset,
            &entry.metadata,
        );
        writer.write_all(&record).at(path)?;
        bytes += record.len() as u64;
    }
    writer.flush().at(path)?;
    drop(writer);
    file.sync_all().at(path)?;
    Ok((file, bytes))
}

fn remove_temp_file(dir: &Path) -> Result<()> {
    let path = dir.join(JOURNAL_TEMP_FILE);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Takes the directory's lock file, so that two stores never append to one journal.
fn lock_dir(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK_FILE);
    let file = File::create(&path).at(&path)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::io(
            &path,
            io::Error::new(
                io::ErrorKind::WouldBlock,
                "the cursor directory is in use by another store",
            ),
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io(&path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cursor_of(name: &str, offset: u64, metadata: &[u8]) -> Cursor {
        Cursor {
            name: name.into(),
            offset: Offset(offset),
            metadata: metadata.to_vec(),
        }
    }

    fn journal_len(dir: &Path) -> u64 {
        std::fs::metadata(dir.join(JOURNAL_FILE)).unwrap().len()
    }

    #[test]
    fn cursor_commit_get_list_delete() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let store = CursorStore::open(dir.path().join("cursors"))?;
        assert_eq!(store.get("a"), None);
        store.commit("b", Offset(7))?;
        store.commit("a", Offset(3))?;
        store.commit("a", Offset(5))?;
        assert_eq!(store.get("a"), Some(cursor_of("a", 5, b"")));
        assert_eq!(
            store.list(),
            [cursor_of("a", 5, b""), cursor_of("b", 7, b"")]
        );
        assert!(store.delete("a")?);
        assert!(!store.delete("a")?);
        assert_eq!(store.get("a"), None);
        assert_eq!(store.list(), [cursor_of("b", 7, b"")]);
        store.close()?;
        Ok(())
    }

    #[test]
    fn flushed_commits_survive_reopen() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = CursorStore::open(dir.path())?;
            store.commit_with_metadata("group-1", Offset(10), b"acks")?;
            store.commit("group-2", Offset(20))?;
            store.delete("group-2")?;
            store.commit_durable("group-3", Offset(30), b"")?;
            store.flush()?;
        }
        let store = CursorStore::open(dir.path())?;
        assert_eq!(
            store.list(),
            [
                cursor_of("group-1", 10, b"acks"),
                cursor_of("group-3", 30, b"")
            ]
        );
        Ok(())
    }

    /// Writes a journal with a few records, then one more; returns the state before
    /// the last record, the journal's length before it and the whole journal.
    fn journal_with_last_record(last_is_delete: bool) -> (Vec<Cursor>, u64, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let store = CursorStore::open(dir.path()).unwrap();
        store.commit("alpha", Offset(1)).unwrap();
        store
            .commit_with_metadata("beta", Offset(2), b"meta")
            .unwrap();
        store.commit("alpha", Offset(3)).unwrap();
        let before_state = store.list();
        let before_len = journal_len(dir.path());
        if last_is_delete {
            store.delete("beta").unwrap();
        } else {
            store
                .commit_with_metadata("beta", Offset(4), b"new metadata")
                .unwrap();
        }
        drop(store);
        let bytes = std::fs::read(dir.path().join(JOURNAL_FILE)).unwrap();
        assert!(bytes.len() as u64 > before_len);
        (before_state, before_len, bytes)
    }

    #[test]
    fn cursor_journal_cut_inside_the_last_record_reopens_with_the_earlier_state() -> Result<()> {
        for last_is_delete in [false, true] {
            let (before, before_len, bytes) = journal_with_last_record(last_is_delete);
            for cut in before_len..bytes.len() as u64 {
                let dir = tempfile::tempdir().unwrap();
                std::fs::write(dir.path().join(JOURNAL_FILE), &bytes[..cut as usize]).unwrap();
                let store = CursorStore::open(dir.path())?;
                assert_eq!(store.list(), before, "cut at {cut}");
                assert_eq!(journal_len(dir.path()), before_len, "cut at {cut}");
                store.commit("gamma", Offset(9))?;
                drop(store);
                let store = CursorStore::open(dir.path())?;
                let mut expected = before.clone();
                expected.push(cursor_of("gamma", 9, b""));
                assert_eq!(store.list(), expected, "cut at {cut}");
            }
        }
        Ok(())
    }

    #[test]
    fn cursor_flipped_byte_in_the_last_record_drops_only_that_record() -> Result<()> {
        for last_is_delete in [false, true] {
            let (before, before_len, bytes) = journal_with_last_record(last_is_delete);
            for position in before_len as usize..bytes.len() {
                for flip in [0x01, 0x80, 0xff] {
                    let mut damaged = bytes.clone();
                    damaged[position] ^= flip;
                    let dir = tempfile::tempdir().unwrap();
                    std::fs::write(dir.path().join(JOURNAL_FILE), &damaged).unwrap();
                    let store = CursorStore::open(dir.path())?;
                    assert_eq!(store.list(), before, "byte {position} ^ {flip:#x}");
                    assert_eq!(journal_len(dir.path()), before_len);
                }
            }
        }
        Ok(())
    }

    #[test]
    fn cursor_damage_in_a_middle_record_drops_it_and_everything_after() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let store = CursorStore::open(dir.path())?;
        store.commit("a", Offset(1))?;
        let first_end = journal_len(dir.path());
        store.commit("b", Offset(2))?;
        store.commit("c", Offset(3))?;
        drop(store);
        let path = dir.path().join(JOURNAL_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[first_end as usize + RECORD_HEADER_LEN + 2] ^= 0x20;
        std::fs::write(&path, &bytes).unwrap();
        let store = CursorStore::open(dir.path())?;
        assert_eq!(store.list(), [cursor_of("a", 1, b"")]);
        assert_eq!(journal_len(dir.path()), first_end);
        Ok(())
    }

    #[test]
    fn invalid_cursor_names_are_rejected() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let store = CursorStore::open(dir.path())?;
        let too_long = "x".repeat(NAME_BYTES_MAX + 1);
        for name in [
            "",
            ".",
            "..",
            "a/b",
            "a b",
            "é",
            "a\0",
            "a:b",
            too_long.as_str(),
        ] {
            let rejected = |r: Result<()>| matches!(r, Err(Error::InvalidCursorName { .. }));
            assert!(rejected(store.commit(name, Offset(1))), "{name:?}");
            assert!(rejected(store.delete(name).map(|_| ())), "{name:?}");
            assert_eq!(store.get(name), None);
        }
        let longest = "y".repeat(NAME_BYTES_MAX);
        for name in ["a", "...", ".hidden", "A-z_0.9", longest.as_str()] {
            store.commit(name, Offset(2))?;
        }
        drop(store);
        assert_eq!(CursorStore::open(dir.path())?.list().len(), 5);
        Ok(())
    }

    #[test]
    fn cursor_metadata_round_trips_and_over_limit_is_rejected() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let store = CursorStore::open(dir.path())?;
        let largest: Vec<u8> = (0..METADATA_BYTES_MAX).map(|i| i as u8).collect();
        store.commit_with_metadata("big", Offset(1), &largest)?;
        store.commit_with_metadata("small", Offset(2), b"\x00\x01")?;
        let over = vec![0u8; METADATA_BYTES_MAX + 1];
        let error = store.commit_with_metadata("big", Offset(3), &over);
        assert!(matches!(
            error,
            Err(Error::CursorMetadataTooLarge { size, limit })
                if size == METADATA_BYTES_MAX + 1 && limit == METADATA_BYTES_MAX
        ));
        store.commit("small", Offset(4))?;
        drop(store);
        let store = CursorStore::open(dir.path())?;
        assert_eq!(
            store.list(),
            [cursor_of("big", 1, &largest), cursor_of("small", 4, b"")]
        );
        Ok(())
    }

    #[test]
    fn cursor_record_bytes_match_the_documented_format() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let store = CursorStore::open(dir.path())?;
        store.commit_with_metadata("ab", Offset(0x0102), b"\x07")?;
        store.delete("ab")?;
        drop(store);
        let bytes = std::fs::read(dir.path().join(JOURNAL_FILE)).unwrap();
        #[rustfmt::skip]
        let expected: &[u8] = &[
            b'C', b'R', b'S', b'J', 1, 0, 0, 0,
            // commit: length 17, CRC, kind, name length, name, offset, metadata
            17, 0, 0, 0, 0x25, 0x8f, 0x62, 0x07, 1, 2, b'a', b'b',
            0x02, 0x01, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 7,
            // delete: length 16, CRC, kind, name length, name, zero offset and metadata
            16, 0, 0, 0, 0xed, 0xde, 0xe0, 0xbc, 2, 2, b'a', b'b',
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        assert_eq!(bytes, expected);
        Ok(())
    }

    #[test]
    fn cursor_journal_stays_bounded_under_repeated_commits() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let store = CursorStore::open(dir.path())?;
        store.commit_with_metadata("keep", Offset(1), b"kept")?;
        let record = record_bytes("hot", b"");
        let commits = 3 * COMPACT_BYTES_MIN / record;
        for i in 0..commits {
            store.commit("hot", Offset(i))?;
            if i % 1000 == 0 {
                assert!(journal_len(dir.path()) <= COMPACT_BYTES_MIN + record);
            }
        }
        assert!(journal_len(dir.path()) <= COMPACT_BYTES_MIN + record);
        drop(store);
        let store = CursorStore::open(dir.path())?;
        assert_eq!(
            store.list(),
            [
                cursor_of("hot", commits - 1, b""),
                cursor_of("keep", 1, b"kept")
            ]
        );
        Ok(())
    }

    #[test]
    fn cursor_directory_is_locked_while_a_store_is_open() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let store = CursorStore::open(dir.path())?;
        assert!(matches!(
            CursorStore::open(dir.path()),
            Err(Error::Io { .. })
        ));
        drop(store);
        CursorStore::open(dir.path())?;
        Ok(())
    }

    #[test]
    fn closed_cursor_store_refuses_commits_but_reads() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let store = CursorStore::open(dir.path())?;
        store.commit("a", Offset(1))?;
        store.close()?;
        store.close()?;
        assert!(matches!(
            store.commit("a", Offset(2)),
            Err(Error::Closed { .. })
        ));
        assert!(matches!(store.delete("a"), Err(Error::Closed { .. })));
        assert_eq!(store.get("a"), Some(cursor_of("a", 1, b"")));
        Ok(())
    }

    #[test]
    fn foreign_file_in_place_of_the_cursor_journal_is_refused_untouched() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(JOURNAL_FILE);
        for contents in [&b"not a journal at all"[..], b"CRS", b"CRSJ\x02\0\0\0"] {
            std::fs::write(&path, contents).unwrap();
            let opened = CursorStore::open(dir.path());
            assert!(matches!(opened, Err(Error::Corrupt { .. })), "{contents:?}");
            assert_eq!(std::fs::read(&path).unwrap(), contents);
        }
        Ok(())
    }

    #[test]
    fn cursor_compaction_leftovers_are_ignored() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let store = CursorStore::open(dir.path())?;
        store.commit("a", Offset(1))?;
        drop(store);
        let temp = dir.path().join(JOURNAL_TEMP_FILE);
        std::fs::write(&temp, b"half a compaction").unwrap();
        let store = CursorStore::open(dir.path())?;
        assert_eq!(store.list(), [cursor_of("a", 1, b"")]);
        assert!(!temp.exists());
        Ok(())
    }

    #[test]
    fn cursor_commits_from_many_threads_all_land() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(CursorStore::open_with_compaction(dir.path(), 4096)?);
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let store = Arc::clone(&store);
                std::thread::spawn(move || -> Result<()> {
                    for i in 0..500 {
                        store.commit(&format!("t{t}"), Offset(i))?;
                        if i % 100 == 0 {
                            store.flush()?;
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap()?;
        }
        let expected: Vec<_> = (0..4)
            .map(|t| cursor_of(&format!("t{t}"), 499, b""))
            .collect();
        assert_eq!(store.list(), expected);
        drop(store);
        assert_eq!(CursorStore::open(dir.path())?.list(), expected);
        Ok(())
    }

    #[derive(Clone, Debug)]
    enum ModelOp {
        Commit(usize, u64, Vec<u8>),
        Delete(usize),
        Flush,
        Reopen,
    }

    const MODEL_NAMES: [&str; 5] = ["a", "bb", "consumer-1", "q.acks", "Z_9"];
    /// Small enough that a few dozen operations compact several times.
    const MODEL_COMPACT_BYTES_MIN: u64 = 256;

    fn arb_op() -> impl Strategy<Value = ModelOp> {
        let name = 0..MODEL_NAMES.len();
        prop_oneof![
            6 => (name.clone(), 0u64..1000, proptest::collection::vec(any::<u8>(), 0..40))
                .prop_map(|(n, o, m)| ModelOp::Commit(n, o, m)),
            2 => name.prop_map(ModelOp::Delete),
            1 => Just(ModelOp::Flush),
            1 => Just(ModelOp::Reopen),
        ]
    }

    fn model_list(model: &BTreeMap<&str, (u64, Vec<u8>)>) -> Vec<Cursor> {
        model
            .iter()
            .map(|(name, (offset, metadata))| cursor_of(name, *offset, metadata))
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn cursor_store_matches_a_btreemap_model(
            ops in proptest::collection::vec(arb_op(), 1..200),
        ) {
            let dir = tempfile::tempdir()?;
            let open = || CursorStore::open_with_compaction(dir.path(), MODEL_COMPACT_BYTES_MIN);
            let mut store = open()?;
            let mut model: BTreeMap<&str, (u64, Vec<u8>)> = BTreeMap::new();
            for op in ops {
                match op {
                    ModelOp::Commit(n, offset, metadata) => {
                        store.commit_with_metadata(MODEL_NAMES[n], Offset(offset), &metadata)?;
                        model.insert(MODEL_NAMES[n], (offset, metadata));
                    }
                    ModelOp::Delete(n) => {
                        let existed = store.delete(MODEL_NAMES[n])?;
                        prop_assert_eq!(existed, model.remove(MODEL_NAMES[n]).is_some());
                    }
                    ModelOp::Flush => store.flush()?,
                    ModelOp::Reopen => {
                        drop(store);
                        store = open()?;
                    }
                }
                prop_assert_eq!(store.list(), model_list(&model));
                let state = store.lock();
                prop_assert_eq!(state.live_bytes, live_bytes(&state.entries));
                prop_assert_eq!(state.journal_bytes, journal_len(dir.path()));
                prop_assert!(
                    state.journal_bytes <= MODEL_COMPACT_BYTES_MIN
                        || state.journal_bytes <= COMPACT_RATIO * state.live_bytes,
                    "journal of {} bytes for {} live bytes", state.journal_bytes, state.live_bytes
                );
            }
            drop(store);
            prop_assert_eq!(open()?.list(), model_list(&model));
        }

        #[test]
        fn cursor_arbitrary_journal_bytes_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..400),
        ) {
            let dir = tempfile::tempdir()?;
            let mut journal = MAGIC.to_vec();
            journal.extend_from_slice(&JOURNAL_VERSION.to_le_bytes());
            journal.extend_from_slice(&bytes);
            std::fs::write(dir.path().join(JOURNAL_FILE), &journal)?;
            let store = CursorStore::open(dir.path())?;
            store.commit("after", Offset(1))?;
            let cursors = store.list();
            drop(store);
            prop_assert_eq!(CursorStore::open(dir.path())?.list(), cursors);
        }
    }
}
