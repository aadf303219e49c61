//! Writes the seed corpora of the fuzz targets and the on-disk format fixtures.
//!
//! ```text
//! cargo run -p log-engine --example make_fuzz_corpus                # both
//! cargo run -p log-engine --example make_fuzz_corpus -- --corpus    # fuzz/corpus/*
//! cargo run -p log-engine --example make_fuzz_corpus -- --fixtures  # tests/fixtures/*
//! ```
//!
//! Everything is deterministic: running it twice gives the same bytes. Corpus files
//! are named `seed-*` and overwritten; other files in the corpus directories (inputs
//! a fuzzer found) are left alone. The fixture directories are rewritten whole, so
//! regenerate them only when the format version changes: the point of a fixture is
//! that old files keep opening.

use std::error::Error;
use std::path::Path;
use std::sync::Arc;

use log_engine::{FlushPolicy, Log, LogConfig, ManualClock, Record, RecordBatch};

type Result<T, E = Box<dyn Error>> = std::result::Result<T, E>;

/// A timestamp in November 2023, so that the values look like real ones.
const T0: i64 = 1_700_000_000_000;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let all = args.is_empty();
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    for arg in &args {
        if arg != "--corpus" && arg != "--fixtures" {
            return Err(
                format!("unknown argument {arg:?}: expected --corpus or --fixtures").into(),
            );
        }
    }
    if all || args.iter().any(|a| a == "--corpus") {
        let corpus = manifest.parent().unwrap_or(manifest).join("fuzz/corpus");
        let n = write_seeds(&corpus.join("decode_batch"), decode_batch_seeds()?)?;
        println!(
            "wrote {n} seeds to {}",
            corpus.join("decode_batch").display()
        );
        let n = write_seeds(&corpus.join("open_log_dir"), open_log_dir_seeds()?)?;
        println!(
            "wrote {n} seeds to {}",
            corpus.join("open_log_dir").display()
        );
    }
    if all || args.iter().any(|a| a == "--fixtures") {
        let fixtures = manifest.join("tests/fixtures");
        write_fixtures(&fixtures)?;
        println!("wrote fixtures to {}", fixtures.display());
    }
    Ok(())
}

fn write_seeds(dir: &Path, seeds: Vec<(String, Vec<u8>)>) -> Result<usize> {
    std::fs::create_dir_all(dir)?;
    for (name, bytes) in &seeds {
        std::fs::write(dir.join(format!("seed-{name}")), bytes)?;
    }
    Ok(seeds.len())
}

// ---------------------------------------------------------------------------------
// Raw encoding, independent of the crate's encoder so that seeds can break any rule.
// ---------------------------------------------------------------------------------

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_zigzag(out: &mut Vec<u8>, value: i64) {
    put_varint(out, ((value << 1) ^ (value >> 63)) as u64);
}

/// The fields of one record, each free to be wrong.
#[derive(Clone, Debug)]
struct RawRecord {
    attributes: u8,
    timestamp_delta: i64,
    offset_delta: u64,
    /// The key length as written; -1 for no key. `key` is written whatever it says.
    key_len: i64,
    key: Vec<u8>,
    /// The value length as written.
    value_len: u64,
    value: Vec<u8>,
    /// The header count as written.
    header_count: u64,
    /// Encoded headers, written as they are.
    headers: Vec<u8>,
}

impl RawRecord {
    fn new(offset_delta: u64, key: Option<&[u8]>, value: &[u8]) -> RawRecord {
        RawRecord {
            attributes: 0,
            timestamp_delta: 0,
            offset_delta,
            key_len: key.map_or(-1, |k| k.len() as i64),
            key: key.unwrap_or_default().to_vec(),
            value_len: value.len() as u64,
            value: value.to_vec(),
            header_count: 0,
            headers: Vec::new(),
        }
    }

    fn header(mut self, name: &[u8], value: &[u8]) -> RawRecord {
        put_varint(&mut self.headers, name.len() as u64);
        self.headers.extend_from_slice(name);
        put_varint(&mut self.headers, value.len() as u64);
        self.headers.extend_from_slice(value);
        self.header_count += 1;
        self
    }

    fn body(&self) -> Vec<u8> {
        let mut out = vec![self.attributes];
        put_zigzag(&mut out, self.timestamp_delta);
        put_varint(&mut out, self.offset_delta);
        put_zigzag(&mut out, self.key_len);
        out.extend_from_slice(&self.key);
        put_varint(&mut out, self.value_len);
        out.extend_from_slice(&self.value);
        put_varint(&mut out, self.header_count);
        out.extend_from_slice(&self.headers);
        out
    }

    /// The record with its length prefix.
    fn encode(&self) -> Vec<u8> {
        with_length(&self.body(), None)
    }
}

/// Prefixes `body` with its length, or with `length` when given (a lie).
fn with_length(body: &[u8], length: Option<u64>) -> Vec<u8> {
    let mut out = Vec::new();
    put_varint(&mut out, length.unwrap_or(body.len() as u64));
    out.extend_from_slice(body);
    out
}

/// A batch header and its records; `encode` fills in the length and CRC.
#[derive(Clone, Debug)]
struct RawBatch {
    base_offset: u64,
    magic: u8,
    attributes: u16,
    leader_epoch: u32,
    last_offset_delta: u32,
    record_count: u32,
    first_timestamp: i64,
    max_timestamp: i64,
    records: Vec<u8>,
}

impl RawBatch {
    fn new(records: &[RawRecord]) -> RawBatch {
        let count = records.len() as u32;
        RawBatch {
            base_offset: 0,
            magic: 1,
            attributes: 0,
            leader_epoch: 0,
            last_offset_delta: count.saturating_sub(1),
            record_count: count,
            first_timestamp: T0,
            max_timestamp: T0 + records.iter().map(|r| r.timestamp_delta).max().unwrap_or(0),
            records: records.iter().flat_map(RawRecord::encode).collect(),
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.records.len());
        out.extend_from_slice(&self.base_offset.to_le_bytes());
        out.extend_from_slice(&[0; 8]);
        out.push(self.magic);
        out.push(0);
        out.extend_from_slice(&self.attributes.to_le_bytes());
        out.extend_from_slice(&self.leader_epoch.to_le_bytes());
        out.extend_from_slice(&self.last_offset_delta.to_le_bytes());
        out.extend_from_slice(&self.record_count.to_le_bytes());
        out.extend_from_slice(&self.first_timestamp.to_le_bytes());
        out.extend_from_slice(&self.max_timestamp.to_le_bytes());
        out.extend_from_slice(&(-1i64).to_le_bytes());
        out.extend_from_slice(&(-1i16).to_le_bytes());
        out.extend_from_slice(&[0; 2]);
        out.extend_from_slice(&(-1i32).to_le_bytes());
        out.extend_from_slice(&self.records);
        let length = (out.len() - 12) as u32;
        set(&mut out, 8, &length.to_le_bytes());
        reseal(&mut out);
        out
    }
}

/// Recomputes the CRC of a batch at the front of `bytes` (over bytes 16 to the end),
/// so that a damaged structure gets past the CRC check to the decoder.
fn reseal(bytes: &mut [u8]) {
    if let Some(covered) = bytes.get(16..) {
        let crc = crc32fast::hash(covered);
        set(bytes, 12, &crc.to_le_bytes());
    }
}

/// Overwrites `bytes[at..]` with `value`, as far as `bytes` reaches.
fn set(bytes: &mut [u8], at: usize, value: &[u8]) {
    for (dst, src) in bytes.iter_mut().skip(at).zip(value) {
        *dst = *src;
    }
}

fn flip(bytes: &[u8], at: usize) -> Vec<u8> {
    let mut out = bytes.to_vec();
    if let Some(b) = out.get_mut(at) {
        *b ^= 0x5a;
    }
    out
}

fn with_base_offset(batch: &RecordBatch, base: u64) -> Vec<u8> {
    let mut bytes = batch.as_bytes().to_vec();
    set(&mut bytes, 0, &base.to_le_bytes());
    bytes
}

/// A value of `len` bytes that compresses badly and is easy to check by eye.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

// ---------------------------------------------------------------------------------
// decode_batch seeds.
// ---------------------------------------------------------------------------------

fn decode_batch_seeds() -> Result<Vec<(String, Vec<u8>)>> {
    let mut seeds: Vec<(String, Vec<u8>)> = Vec::new();
    let mut add = |name: &str, bytes: Vec<u8>| seeds.push((name.to_owned(), bytes));

    // Valid batches of various shapes.
    let one = RecordBatch::from_records(&[Record::new("hello", T0)])?;
    add("valid-one-record", one.as_bytes().to_vec());
    add(
        "valid-empty-value-no-key",
        RecordBatch::from_records(&[Record::new("", 0)])?.into_bytes(),
    );
    add(
        "valid-empty-key",
        RecordBatch::from_records(&[Record::new("v", T0).with_key("")])?.into_bytes(),
    );
    let headers = RecordBatch::from_records(&[
        Record::new("payload", T0)
            .with_key("user-42")
            .with_header("trace-id", pattern(16, 7))
            .with_header("ünïcödé", "")
            .with_header("", "empty-name"),
        Record::new("second", T0 + 5).with_header("h", "v"),
        Record::new("third", T0 + 2).with_key("k"),
    ])?;
    add("valid-key-and-headers", headers.as_bytes().to_vec());
    let many: Vec<Record> = (0..300)
        .map(|i| Record::new(format!("value-{i}"), T0 + i64::from(i % 17) - 8))
        .map(|r| {
            if r.value.len() % 2 == 0 {
                r.with_key("even")
            } else {
                r
            }
        })
        .collect();
    add(
        "valid-many-records",
        RecordBatch::from_records(&many)?.into_bytes(),
    );
    add(
        "valid-large-value",
        RecordBatch::from_records(&[Record::new(pattern(40_000, 1), T0).with_key("big")])?
            .into_bytes(),
    );
    add(
        "valid-extreme-timestamps",
        RecordBatch::from_records(&[
            Record::new("a", -1),
            Record::new("b", i64::MAX / 2),
            Record::new("c", -(i64::MAX / 2)),
        ])?
        .into_bytes(),
    );
    add(
        "valid-high-base-offset",
        with_base_offset(&headers, u64::MAX - 3),
    );
    let mut epoch = one.clone();
    epoch.set_leader_epoch(7);
    add("valid-leader-epoch", epoch.into_bytes());
    let mut producer = one.as_bytes().to_vec();
    set(&mut producer, 48, &42i64.to_le_bytes());
    set(&mut producer, 56, &3i16.to_le_bytes());
    set(&mut producer, 60, &100i32.to_le_bytes());
    reseal(&mut producer);
    add("valid-producer-fields", producer);
    let mut trailing = headers.as_bytes().to_vec();
    trailing.extend_from_slice(b"tail!");
    add("valid-then-trailing-bytes", trailing);
    let mut two = one.as_bytes().to_vec();
    two.extend_from_slice(&with_base_offset(&headers, 1));
    add("valid-two-batches", two);

    // Cut short at every interesting boundary.
    let bytes = headers.as_bytes();
    for at in [
        0,
        1,
        8,
        12,
        16,
        17,
        63,
        64,
        65,
        bytes.len() / 2,
        bytes.len() - 1,
    ] {
        add(
            &format!("truncated-at-{at}"),
            bytes.get(..at).unwrap_or(bytes).to_vec(),
        );
    }

    // One flipped byte in each header field and in the records; the CRC stays stale.
    let fields = [
        ("base-offset", 3),
        ("batch-length", 8),
        ("crc", 13),
        ("magic", 16),
        ("reserved-17", 17),
        ("attributes", 18),
        ("leader-epoch", 21),
        ("last-offset-delta", 24),
        ("record-count", 28),
        ("first-timestamp", 33),
        ("max-timestamp", 41),
        ("producer-id", 50),
        ("reserved-58", 58),
        ("first-record-length", 64),
        ("first-record-body", 70),
        ("last-byte", bytes.len() - 1),
    ];
    for (field, at) in fields {
        add(&format!("flipped-{field}"), flip(bytes, at));
    }

    // Header lies with a correct CRC, so that only the structure checks stand guard.
    let base = RawBatch::new(&[
        RawRecord::new(0, Some(b"k0"), b"v0"),
        RawRecord::new(1, None, b"v1").header(b"h", b"x"),
        RawRecord::new(2, Some(b""), b""),
    ]);
    let lies: [Lie; 9] = [
        ("magic-0", |b| b.magic = 0),
        ("magic-2", |b| b.magic = 2),
        ("compressed-attribute", |b| b.attributes = 1),
        ("count-one-more", |b| {
            b.record_count = 4;
            b.last_offset_delta = 3;
        }),
        ("count-one-less", |b| {
            b.record_count = 2;
            b.last_offset_delta = 1;
        }),
        ("count-huge", |b| {
            b.record_count = u32::MAX;
            b.last_offset_delta = u32::MAX - 1;
        }),
        ("count-zero", |b| {
            b.record_count = 0;
            b.last_offset_delta = u32::MAX;
        }),
        ("count-not-delta-plus-one", |b| b.last_offset_delta = 7),
        ("max-timestamp-before-first", |b| b.max_timestamp = T0 - 1),
    ];
    for (name, lie) in lies {
        let mut batch = base.clone();
        lie(&mut batch);
        add(&format!("resealed-{name}"), batch.encode());
    }
    let mut overflow = base.clone();
    overflow.base_offset = u64::MAX - 1;
    add("offsets-overflow", overflow.encode());

    // Lengths that lie.
    let encoded = base.encode();
    let mut huge = encoded.clone();
    set(&mut huge, 8, &u32::MAX.to_le_bytes());
    add("batch-length-huge", huge);
    let mut header_only = encoded.clone();
    set(&mut header_only, 8, &52u32.to_le_bytes());
    add("batch-length-header-only", header_only);
    let mut below_header = encoded.clone();
    set(&mut below_header, 8, &51u32.to_le_bytes());
    add("batch-length-below-header", below_header);
    let mut one_more = encoded.clone();
    set(
        &mut one_more,
        8,
        &((encoded.len() - 11) as u32).to_le_bytes(),
    );
    add("batch-length-one-past-end", one_more);

    // Records that break the rules inside a batch whose CRC is right.
    for (name, records) in bad_records() {
        let mut batch = RawBatch::new(&[RawRecord::new(0, Some(b"ok"), b"fine")]);
        batch.records.extend_from_slice(&records);
        batch.record_count = 2;
        batch.last_offset_delta = 1;
        add(&format!("record-{name}"), batch.encode());
    }
    let mut first_ts_max = RawBatch::new(&[RawRecord {
        timestamp_delta: 1,
        ..RawRecord::new(0, None, b"v")
    }]);
    first_ts_max.first_timestamp = i64::MAX;
    first_ts_max.max_timestamp = i64::MAX;
    add("record-timestamp-overflows", first_ts_max.encode());
    Ok(seeds)
}

/// A named way to make a batch header lie.
type Lie = (&'static str, fn(&mut RawBatch));

/// The second record (offset delta 1) of a batch, broken in one way each.
fn bad_records() -> Vec<(&'static str, Vec<u8>)> {
    let ok = || RawRecord::new(1, Some(b"key"), b"value");
    let mut out = vec![
        (
            "attributes-nonzero",
            RawRecord {
                attributes: 1,
                ..ok()
            }
            .encode(),
        ),
        (
            "offset-delta-repeated",
            RawRecord::new(0, None, b"v").encode(),
        ),
        ("offset-delta-skips", RawRecord::new(2, None, b"v").encode()),
        (
            "key-length-minus-2",
            RawRecord {
                key_len: -2,
                ..ok()
            }
            .encode(),
        ),
        (
            "key-length-past-end",
            RawRecord {
                key_len: 100,
                ..ok()
            }
            .encode(),
        ),
        (
            "key-length-huge",
            RawRecord {
                key_len: i64::MAX,
                ..ok()
            }
            .encode(),
        ),
        (
            "value-length-past-end",
            RawRecord {
                value_len: 6,
                ..ok()
            }
            .encode(),
        ),
        (
            "value-length-huge",
            RawRecord {
                value_len: u64::MAX,
                ..ok()
            }
            .encode(),
        ),
        (
            "header-count-missing-headers",
            RawRecord {
                header_count: 1000,
                ..ok()
            }
            .encode(),
        ),
        (
            "header-count-past-u32",
            RawRecord {
                header_count: 1 << 32,
                ..ok()
            }
            .encode(),
        ),
        (
            "header-name-not-utf8",
            ok().header(&[0xff, 0xfe], b"v").encode(),
        ),
        (
            "length-shorter-than-fields",
            with_length(&ok().body(), Some(5)),
        ),
        ("length-longer-than-fields", {
            let mut body = ok().body();
            body.extend_from_slice(b"extra");
            with_length(&body, None)
        }),
        (
            "length-past-batch-end",
            with_length(&ok().body(), Some(1000)),
        ),
        ("length-huge", with_length(&ok().body(), Some(u64::MAX))),
        ("length-zero", with_length(&[], None)),
    ];
    let mut overlong = vec![0u8];
    overlong.extend_from_slice(&[0xff; 10]);
    out.push(("varint-overlong", with_length(&overlong, None)));
    let mut unterminated = vec![0u8];
    unterminated.extend_from_slice(&[0x80; 5]);
    out.push(("varint-unterminated", with_length(&unterminated, None)));
    out
}

// ---------------------------------------------------------------------------------
// open_log_dir seeds: [index length n] [n bytes of index] [.log bytes].
// ---------------------------------------------------------------------------------

/// A segment's `.log` bytes, with the position and base offset of each batch.
struct Segment {
    log: Vec<u8>,
    batches: Vec<(u32, u64)>,
}

impl Segment {
    /// Lays out `batches` back to back from offset 0, assigning offsets.
    fn of(batches: &[RecordBatch]) -> Segment {
        let mut segment = Segment {
            log: Vec::new(),
            batches: Vec::new(),
        };
        let mut next = 0u64;
        for batch in batches {
            segment.batches.push((segment.log.len() as u32, next));
            segment
                .log
                .extend_from_slice(&with_base_offset(batch, next));
            next += u64::from(batch.record_count());
        }
        segment
    }

    /// An index with an entry for every `step`-th batch, skipping the first (an
    /// entry at position 0 reads as the end of the index).
    fn index(&self, step: usize) -> Vec<u8> {
        let entries = self.batches.iter().skip(step).step_by(step.max(1));
        entries
            .take(31)
            .flat_map(|&(pos, base)| entry(base as u32, pos))
            .collect()
    }
}

fn entry(relative_offset: u32, position: u32) -> [u8; 8] {
    (u64::from(relative_offset) | (u64::from(position) << 32)).to_le_bytes()
}

fn log_dir_input(index: &[u8], log: &[u8]) -> Vec<u8> {
    let index = index.get(..255).unwrap_or(index);
    let mut out = vec![index.len() as u8];
    out.extend_from_slice(index);
    out.extend_from_slice(log);
    out
}

/// `count` small batches of one to four records with keys, headers and timestamps
/// that go up and sometimes back.
fn small_batches(count: usize) -> Result<Vec<RecordBatch>> {
    (0..count)
        .map(|i| {
            let records: Vec<Record> = (0..=(i % 4))
                .map(|j| {
                    let ts = T0 + (i * 10 + j) as i64 - if j == 2 { 15 } else { 0 };
                    let mut r = Record::new(format!("batch {i} record {j}"), ts);
                    if i % 3 == 0 {
                        r = r.with_key(format!("key-{}", i % 5));
                    }
                    if j == 1 {
                        r = r.with_header("seq", (i as u32).to_le_bytes());
                    }
                    r
                })
                .collect();
            Ok(RecordBatch::from_records(&records)?)
        })
        .collect()
}

fn open_log_dir_seeds() -> Result<Vec<(String, Vec<u8>)>> {
    let mut seeds: Vec<(String, Vec<u8>)> = Vec::new();
    let mut add = |name: &str, bytes: Vec<u8>| seeds.push((name.to_owned(), bytes));

    add("empty", vec![0]);
    let one = Segment::of(&small_batches(1)?);
    add("one-batch", log_dir_input(&[], &one.log));
    let multi = Segment::of(&small_batches(24)?);
    add("multi-batch", log_dir_input(&[], &multi.log));
    let index = multi.index(4);
    add("multi-batch-indexed", log_dir_input(&index, &multi.log));
    add(
        "multi-batch-dense-index",
        log_dir_input(&multi.index(1), &multi.log),
    );
    add("real-writer", real_writer_segment()?);

    // Torn and damaged tails, as a crash leaves them.
    let last = multi.batches.last().map_or(0, |&(pos, _)| pos as usize);
    let cut = |at: usize| multi.log.get(..at).unwrap_or(&multi.log).to_vec();
    add("torn-header", log_dir_input(&index, &cut(last + 30)));
    add(
        "torn-body",
        log_dir_input(&index, &cut(multi.log.len() - 3)),
    );
    add("torn-length-field", log_dir_input(&index, &cut(last + 10)));
    let mut zeroed = multi.log.clone();
    zeroed.resize(multi.log.len() + 4096, 0);
    add("zeroed-tail", log_dir_input(&index, &zeroed));
    let mut zeroed_mid = multi.log.clone();
    zeroed_mid.truncate(last);
    zeroed_mid.resize(last + 2048, 0);
    add(
        "zeroed-tail-after-index",
        log_dir_input(&multi.index(2), &zeroed_mid),
    );
    let mut garbage = multi.log.clone();
    let middle = multi.batches.get(12).map_or(0, |&(pos, _)| pos as usize);
    set(&mut garbage, middle + 20, &pattern(100, 99));
    add("garbage-middle", log_dir_input(&index, &garbage));
    add(
        "flipped-crc-middle",
        log_dir_input(&index, &flip(&multi.log, middle + 13)),
    );
    add(
        "flipped-value-middle",
        log_dir_input(&index, &flip(&multi.log, middle + 80)),
    );
    let mut huge = multi.log.clone();
    set(&mut huge, last + 8, &u32::MAX.to_le_bytes());
    add("last-length-huge", log_dir_input(&index, &huge));

    // Offsets that do not follow on.
    let mut gap = multi.log.clone();
    let (pos, base) = multi.batches.get(5).copied().unwrap_or_default();
    set(&mut gap, pos as usize, &(base + 3).to_le_bytes());
    add("offset-gap", log_dir_input(&index, &gap));
    let batches = small_batches(6)?;
    let mut repeated = Segment::of(&batches).log;
    if let Some(b) = batches.get(2) {
        repeated.extend_from_slice(&with_base_offset(b, 3));
    }
    add("offset-repeated", log_dir_input(&[], &repeated));

    // Index entries that do not match the log.
    let past_end = [entry(4, 100_000), entry(9, 200_000)].concat();
    add("index-past-end", log_dir_input(&past_end, &multi.log));
    let (pos4, base4) = multi.batches.get(4).copied().unwrap_or_default();
    let mid_batch = [entry(base4 as u32, pos4 + 7)].concat();
    add("index-mid-batch", log_dir_input(&mid_batch, &multi.log));
    let wrong_offset = [entry(base4 as u32 + 1, pos4)].concat();
    add(
        "index-wrong-offset",
        log_dir_input(&wrong_offset, &multi.log),
    );
    let mut decreasing = index.clone();
    decreasing.extend_from_slice(&entry(1, 80));
    add("index-decreasing", log_dir_input(&decreasing, &multi.log));
    let partial = index.get(..13).unwrap_or(&index).to_vec();
    add("index-partial-entry", log_dir_input(&partial, &multi.log));
    add("index-only", log_dir_input(&index, &[]));
    // Valid as a time index (two words: timestamp, relative offset | 1 << 32) too.
    let (_, base8) = multi.batches.get(8).copied().unwrap_or_default();
    let mut time_shaped = entry(base4 as u32, pos4).to_vec();
    time_shaped.extend_from_slice(&(u64::from(base4 as u32) | 1 << 32).to_le_bytes());
    time_shaped.extend_from_slice(&(T0 + 90).to_le_bytes());
    time_shaped.extend_from_slice(&(u64::from(base8 as u32) | 1 << 32).to_le_bytes());
    add("index-time-shaped", log_dir_input(&time_shaped, &multi.log));

    // Batches whose CRC is right but whose records are not: recovery checks only
    // headers and CRCs, so these reach the readers.
    let mut bad = Segment::of(&small_batches(3)?).log;
    let next = bad_offset_after(&bad);
    for (i, (_, record)) in bad_records().into_iter().take(4).enumerate() {
        let mut batch = RawBatch::new(&[RawRecord::new(0, None, b"ok")]);
        batch.base_offset = next + 2 * i as u64;
        batch.records.extend_from_slice(&record);
        batch.record_count = 2;
        batch.last_offset_delta = 1;
        bad.extend_from_slice(&batch.encode());
    }
    add("crc-valid-bad-records", log_dir_input(&[], &bad));

    // Large values among small ones.
    let mut large = small_batches(3)?;
    large.push(RecordBatch::from_records(&[Record::new(
        pattern(60_000, 3),
        T0,
    )])?);
    large.extend(small_batches(2)?);
    let large = Segment::of(&large);
    add("large-value", log_dir_input(&large.index(2), &large.log));
    Ok(seeds)
}

/// The offset after the batches of `log` (laid out by [`Segment::of`]).
fn bad_offset_after(log: &[u8]) -> u64 {
    let mut rest = log;
    let mut next = 0;
    while let Ok((batch, tail)) = log_engine::BatchRef::parse(rest, false) {
        next = batch.next_offset().get();
        rest = tail;
    }
    next
}

/// A segment written by the log itself, with the index it keeps.
fn real_writer_segment() -> Result<Vec<u8>> {
    let dir = tempfile::tempdir()?;
    let config = LogConfig {
        index_interval_bytes: 256,
        ..LogConfig::default()
    };
    let log = Log::open_with_clock(dir.path(), config, Arc::new(ManualClock::new(T0)))?;
    for batch in small_batches(20)? {
        let records: Vec<Record> = batch
            .as_ref()
            .records()
            .map(|r| r.map(|r| r.to_owned_record()))
            .collect::<Result<_, _>>()?;
        log.append_records(&records)?;
    }
    log.close()?;
    drop(log);
    let stem = dir.path().join("00000000000000000000");
    let index = std::fs::read(stem.with_extension("index"))?;
    let log = std::fs::read(stem.with_extension("log"))?;
    Ok(log_dir_input(&index, &log))
}

// ---------------------------------------------------------------------------------
// On-disk format fixtures.
// ---------------------------------------------------------------------------------

/// The files of a closed log that a fixture keeps: the segments and the two small
/// files recovery reads. `.lock` is left out: it is empty and recreated on open.
fn fixture_file(name: &str) -> bool {
    name.ends_with(".log")
        || name.ends_with(".index")
        || name.ends_with(".timeindex")
        || name == "recovery-point"
        || name == ".clean-shutdown"
}

/// The records of the `v1-log` fixture, one inner list per batch. The test
/// `log_format_fixtures.rs` spells the same records out by hand.
fn fixture_batches() -> Vec<Vec<Record>> {
    vec![
        vec![
            Record::new("first", T0).with_key("k1"),
            Record::new("second", T0 + 1),
            Record::new("", T0 + 2).with_key(""),
        ],
        vec![
            Record::new("with headers", T0 + 10)
                .with_key("k2")
                .with_header("trace", "abc123")
                .with_header("empty", ""),
        ],
        vec![Record::new(vec![0u8, 1, 2, 255], T0 + 5).with_key(vec![0xff, 0x00])],
        vec![
            Record::new("late", T0 + 20),
            Record::new("early", T0 - 20).with_header("order", "back in time"),
        ],
        vec![Record::new("x".repeat(150), T0 + 30).with_key("big")],
        vec![
            Record::new("last batch a", T0 + 40).with_key("k1"),
            Record::new("last batch b", T0 + 41).with_key("k2"),
        ],
    ]
}

/// Writes `v1-log` (two segments with index entries, cleanly closed) and
/// `v1-corrupt` (the same, with one byte flipped in the last batch of the sealed
/// first segment, where even a scan from its last index entry finds it).
fn write_fixtures(dir: &Path) -> Result<()> {
    let good = dir.join("v1-log");
    let corrupt = dir.join("v1-corrupt");
    for d in [&good, &corrupt] {
        if d.exists() {
            std::fs::remove_dir_all(d)?;
        }
        std::fs::create_dir_all(d)?;
    }
    let work = tempfile::tempdir()?;
    let config = LogConfig {
        segment_bytes_max: 420,
        index_interval_bytes: 100,
        flush: FlushPolicy::MANUAL,
        ..LogConfig::default()
    };
    let log = Log::open_with_clock(work.path(), config, Arc::new(ManualClock::new(T0)))?;
    for records in fixture_batches() {
        log.append_records(&records)?;
    }
    log.close()?;
    drop(log);
    let mut names: Vec<String> = std::fs::read_dir(work.path())?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    names.retain(|n| fixture_file(n));
    names.sort();
    for name in &names {
        std::fs::copy(work.path().join(name), good.join(name))?;
        std::fs::copy(work.path().join(name), corrupt.join(name))?;
    }
    corrupt_last_batch(&corrupt.join("00000000000000000000.log"))?;
    Ok(())
}

/// Flips a byte in the value of the last batch of the segment at `path`: its CRC no
/// longer matches.
fn corrupt_last_batch(path: &Path) -> Result<()> {
    let mut bytes = std::fs::read(path)?;
    let mut last = 0;
    let mut rest: &[u8] = &bytes;
    while let Ok((batch, tail)) = log_engine::BatchRef::parse(rest, false) {
        if !tail.is_empty() {
            last += batch.as_bytes().len();
        }
        rest = tail;
    }
    let at = last + 64 + 10;
    let byte = bytes
        .get_mut(at)
        .ok_or("the fixture segment is too short to corrupt")?;
    *byte ^= 0x01;
    std::fs::write(path, bytes)?;
    Ok(())
}
