//! Record batches: the unit of writing, storing, replicating and reading.
//!
//! # Byte format (version 1)
//!
//! All fixed-width integers are little-endian.
//!
//! | byte | size | field | meaning |
//! |-----:|-----:|-------|---------|
//! | 0  | 8 | `base_offset` | offset of the first record; written by the log on append |
//! | 8  | 4 | `batch_length` | bytes after this field (total size = 12 + `batch_length`) |
//! | 12 | 4 | `crc` | CRC-32 (IEEE) of bytes 16 to the end |
//! | 16 | 1 | `magic` | format version, [`FORMAT_VERSION`] |
//! | 17 | 1 | reserved | zero |
//! | 18 | 2 | `attributes` | bit flags; bits 0-2 compression (0 = none) |
//! | 20 | 4 | `leader_epoch` | epoch of the leader that wrote the batch |
//! | 24 | 4 | `last_offset_delta` | offset of the last record minus `base_offset` |
//! | 28 | 4 | `record_count` | number of records, `last_offset_delta + 1` |
//! | 32 | 8 | `first_timestamp` | timestamp of the first record, ms since the epoch |
//! | 40 | 8 | `max_timestamp` | largest record timestamp |
//! | 48 | 8 | `producer_id` | -1 when none |
//! | 56 | 2 | `producer_epoch` | -1 when none |
//! | 58 | 2 | reserved | zero |
//! | 60 | 4 | `base_sequence` | -1 when none |
//! | 64 | … | records | `record_count` records, back to back |
//!
//! Each record (varints are LEB128; "zigzag" ones are signed):
//!
//! | field | encoding |
//! |-------|----------|
//! | length | varint: bytes of the rest of the record |
//! | attributes | 1 byte, zero |
//! | timestamp delta | zigzag varint, relative to `first_timestamp` |
//! | offset delta | varint, relative to `base_offset` (the record's index) |
//! | key length | zigzag varint, -1 for no key |
//! | key | bytes |
//! | value length | varint |
//! | value | bytes |
//! | header count | varint |
//! | headers | each: name length varint, UTF-8 name, value length varint, value |
//!
//! The CRC leaves out the base offset, the length and itself, so the log assigns
//! offsets by rewriting the first 8 bytes and nothing else: the bytes a producer
//! encoded are the bytes on disk, on followers and in a consumer's hands.
#![deny(clippy::indexing_slicing)]

use crate::error::{Error, Result};
use crate::offset::{Offset, TimestampMs};
use crate::record::{Record, RecordRef};
use crate::varint;

/// The batch format version this crate writes and reads.
pub const FORMAT_VERSION: u8 = 1;
/// The size of a batch header in bytes.
pub const HEADER_LEN: usize = 64;
/// Bytes before `batch_length` counts: base offset and the length field itself.
pub const LOG_OVERHEAD: usize = 12;
/// The attribute bits that name a compression codec; only 0 (none) is supported.
const COMPRESSION_MASK: u16 = 0b111;
/// Where the CRC-covered part of a batch starts.
const CRC_START: usize = 16;
/// The size of the smallest possible record: length, attributes, timestamp delta,
/// offset delta, key length, value length and header count, one byte each.
const RECORD_LEN_MIN: usize = 7;

const _: () = assert!(HEADER_LEN == 60 + 4);
const _: () = assert!(CRC_START == LOG_OVERHEAD + 4);

/// The decoded fixed-size header of a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record.
    pub base_offset: Offset,
    /// Bytes after the length field.
    pub batch_length: u32,
    /// CRC-32 of bytes 16 to the end.
    pub crc: u32,
    /// Format version.
    pub magic: u8,
    /// Attribute flags.
    pub attributes: u16,
    /// Epoch of the leader that wrote the batch.
    pub leader_epoch: u32,
    /// Offset of the last record minus the base offset.
    pub last_offset_delta: u32,
    /// Number of records.
    pub record_count: u32,
    /// Timestamp of the first record.
    pub first_timestamp: TimestampMs,
    /// Largest record timestamp.
    pub max_timestamp: TimestampMs,
    /// Producer id, -1 when none.
    pub producer_id: i64,
    /// Producer epoch, -1 when none.
    pub producer_epoch: i16,
    /// Sequence number of the first record, -1 when none.
    pub base_sequence: i32,
}

impl BatchHeader {
    /// The total size of the batch in bytes.
    pub fn total_len(&self) -> usize {
        LOG_OVERHEAD + self.batch_length as usize
    }

    /// The offset of the last record.
    pub fn last_offset(&self) -> Offset {
        Offset(self.base_offset.0 + u64::from(self.last_offset_delta))
    }

    /// The offset after the last record.
    pub fn next_offset(&self) -> Offset {
        Offset(self.last_offset().0 + 1)
    }

    /// Decodes and checks a header from the front of `buf`. Checks the magic byte,
    /// the reserved bytes, the length and the record count; not the CRC.
    pub fn parse(buf: &[u8]) -> Result<BatchHeader> {
        let head: &[u8; HEADER_LEN] = buf
            .get(..HEADER_LEN)
            .and_then(|h| h.try_into().ok())
            .ok_or(Error::InvalidBatch {
                reason: "shorter than a batch header",
            })?;
        let header = BatchHeader {
            base_offset: Offset(u64::from_le_bytes(take(head, 0))),
            batch_length: u32::from_le_bytes(take(head, 8)),
            crc: u32::from_le_bytes(take(head, 12)),
            magic: head[16],
            attributes: u16::from_le_bytes(take(head, 18)),
            leader_epoch: u32::from_le_bytes(take(head, 20)),
            last_offset_delta: u32::from_le_bytes(take(head, 24)),
            record_count: u32::from_le_bytes(take(head, 28)),
            first_timestamp: i64::from_le_bytes(take(head, 32)),
            max_timestamp: i64::from_le_bytes(take(head, 40)),
            producer_id: i64::from_le_bytes(take(head, 48)),
            producer_epoch: i16::from_le_bytes(take(head, 56)),
            base_sequence: i32::from_le_bytes(take(head, 60)),
        };
        let reserved = head[17] != 0 || head[58] != 0 || head[59] != 0;
        if header.magic != FORMAT_VERSION {
            return Err(Error::InvalidBatch {
                reason: "unknown format version (magic byte)",
            });
        }
        if reserved {
            return Err(Error::InvalidBatch {
                reason: "reserved header bytes are not zero",
            });
        }
        if header.attributes & COMPRESSION_MASK != 0 {
            return Err(Error::InvalidBatch {
                reason: "compressed batches are not supported",
            });
        }
        if (header.batch_length as usize) < HEADER_LEN - LOG_OVERHEAD {
            return Err(Error::InvalidBatch {
                reason: "batch length smaller than the header",
            });
        }
        if header.record_count == 0
            || u64::from(header.record_count) != u64::from(header.last_offset_delta) + 1
        {
            return Err(Error::InvalidBatch {
                reason: "record count does not match the last offset delta",
            });
        }
        let records_len = header.batch_length as usize - (HEADER_LEN - LOG_OVERHEAD);
        if records_len / RECORD_LEN_MIN < header.record_count as usize {
            return Err(Error::InvalidBatch {
                reason: "record count larger than the batch can hold",
            });
        }
        if header
            .base_offset
            .0
            .checked_add(u64::from(header.record_count))
            .is_none()
        {
            return Err(Error::InvalidBatch {
                reason: "offsets overflow 64 bits",
            });
        }
        if header.max_timestamp < header.first_timestamp {
            return Err(Error::InvalidBatch {
                reason: "max timestamp is before the first timestamp",
            });
        }
        Ok(header)
    }
}

/// Copies `N` bytes at `at` out of the header. The header is a fixed-size array and
/// every caller passes a constant in range, so the slice cannot fail.
fn take<const N: usize>(head: &[u8; HEADER_LEN], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(src) = head.get(at..at + N) {
        out.copy_from_slice(src);
    }
    out
}

/// A borrowed, checked batch: its header parsed, its length matching the buffer.
#[derive(Clone, Copy, Debug)]
pub struct BatchRef<'a> {
    header: BatchHeader,
    bytes: &'a [u8],
}

impl<'a> BatchRef<'a> {
    /// Parses the batch at the front of `buf`, returning it and the rest of `buf`.
    /// Checks the header; the CRC only when `verify_crc`.
    pub fn parse(buf: &'a [u8], verify_crc: bool) -> Result<(BatchRef<'a>, &'a [u8])> {
        let header = BatchHeader::parse(buf)?;
        let total = header.total_len();
        let (bytes, rest) = buf.split_at_checked(total).ok_or(Error::InvalidBatch {
            reason: "batch extends past the end of the buffer",
        })?;
        let batch = BatchRef { header, bytes };
        if verify_crc {
            batch.verify_crc()?;
        }
        Ok((batch, rest))
    }

    /// The decoded header.
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    /// The whole batch as bytes.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The offset of the first record.
    pub fn base_offset(&self) -> Offset {
        self.header.base_offset
    }

    /// The offset after the last record.
    pub fn next_offset(&self) -> Offset {
        self.header.next_offset()
    }

    /// Checks the CRC.
    pub fn verify_crc(&self) -> Result<()> {
        let actual = crc32fast::hash(self.bytes.get(CRC_START..).unwrap_or_default());
        if actual == self.header.crc {
            Ok(())
        } else {
            Err(Error::ChecksumMismatch {
                expected: self.header.crc,
                actual,
            })
        }
    }

    /// The records of the batch, in offset order. Each item is an error if the
    /// record bytes are malformed (possible only when the CRC was not checked).
    pub fn records(&self) -> Records<'a> {
        Records {
            header: self.header,
            rest: self.bytes.get(HEADER_LEN..).unwrap_or_default(),
            index: 0,
        }
    }

    /// Decodes every record once, checking the structure: every record in bounds,
    /// offset deltas in order, no bytes left over.
    pub fn validate_records(&self) -> Result<()> {
        let mut records = self.records();
        for record in records.by_ref() {
            record?;
        }
        if records.rest.is_empty() {
            Ok(())
        } else {
            Err(Error::InvalidBatch {
                reason: "bytes left over after the last record",
            })
        }
    }
}

/// An iterator over the records of a batch.
#[derive(Clone, Debug)]
pub struct Records<'a> {
    header: BatchHeader,
    rest: &'a [u8],
    index: u32,
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<RecordRef<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.index >= self.header.record_count {
            return None;
        }
        match decode_record(self.rest, &self.header, self.index) {
            Ok((record, used)) => {
                self.rest = self.rest.get(used..).unwrap_or_default();
                self.index += 1;
                Some(Ok(record))
            }
            Err(error) => {
                self.index = self.header.record_count;
                Some(Err(error.into()))
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = (self.header.record_count - self.index) as usize;
        (left, Some(left))
    }
}

/// A decoding failure inside a record, as cheap as a static string: the hot decode
/// path builds no [`Error`] (whose drop is not trivial) until one is returned.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Malformed(&'static str);

const MALFORMED: Malformed = Malformed("malformed record");

impl From<Malformed> for Error {
    fn from(m: Malformed) -> Error {
        Error::InvalidBatch { reason: m.0 }
    }
}

/// A cursor over record bytes that turns every out-of-bounds read into an error.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    #[inline(always)]
    fn advance(&mut self, n: usize) {
        self.rest = self.rest.get(n..).unwrap_or_default();
    }

    #[inline(always)]
    fn u64(&mut self) -> Result<u64, Malformed> {
        let (value, used) = varint::get_u64(self.rest).ok_or(MALFORMED)?;
        self.advance(used);
        Ok(value)
    }

    #[inline(always)]
    fn i64(&mut self) -> Result<i64, Malformed> {
        let (value, used) = varint::get_i64(self.rest).ok_or(MALFORMED)?;
        self.advance(used);
        Ok(value)
    }

    #[inline(always)]
    fn bytes(&mut self, len: u64) -> Result<&'a [u8], Malformed> {
        let len = usize::try_from(len).map_err(|_| MALFORMED)?;
        let (out, rest) = self.rest.split_at_checked(len).ok_or(MALFORMED)?;
        self.rest = rest;
        Ok(out)
    }

    #[inline(always)]
    fn byte(&mut self) -> Result<u8, Malformed> {
        let (&out, rest) = self.rest.split_first().ok_or(MALFORMED)?;
        self.rest = rest;
        Ok(out)
    }
}

#[inline]
fn decode_record<'a>(
    buf: &'a [u8],
    header: &BatchHeader,
    index: u32,
) -> Result<(RecordRef<'a>, usize), Malformed> {
    let (length, prefix) = varint::get_u64(buf).ok_or(MALFORMED)?;
    let length = usize::try_from(length).map_err(|_| MALFORMED)?;
    let body = buf
        .get(prefix..prefix.checked_add(length).ok_or(MALFORMED)?)
        .ok_or(MALFORMED)?;
    let mut r = Reader { rest: body };
    if r.byte()? != 0 {
        return Err(Malformed("record attributes are not zero"));
    }
    let timestamp = header
        .first_timestamp
        .checked_add(r.i64()?)
        .ok_or(MALFORMED)?;
    if r.u64()? != u64::from(index) {
        return Err(Malformed("record offset delta out of sequence"));
    }
    let key = match r.i64()? {
        -1 => None,
        len if len >= 0 => Some(r.bytes(len as u64)?),
        _ => return Err(MALFORMED),
    };
    let value_len = r.u64()?;
    let value = r.bytes(value_len)?;
    let header_count = u32::try_from(r.u64()?).map_err(|_| MALFORMED)?;
    let headers_raw = r.rest;
    for _ in 0..header_count {
        let (_, used) = decode_header(r.rest)?;
        r.advance(used);
    }
    if !r.rest.is_empty() {
        return Err(Malformed("record length does not match its fields"));
    }
    let record = RecordRef {
        offset: Offset(header.base_offset.0 + u64::from(index)),
        timestamp,
        key,
        value,
        headers_raw,
        header_count,
    };
    Ok((record, prefix + length))
}

/// Decodes one record header from the front of `buf`: its name, value and size.
pub(crate) fn decode_header(buf: &[u8]) -> Result<((&str, &[u8]), usize), Malformed> {
    let mut r = Reader { rest: buf };
    let key_len = r.u64()?;
    let key = std::str::from_utf8(r.bytes(key_len)?)
        .map_err(|_| Malformed("record header name is not UTF-8"))?;
    let value_len = r.u64()?;
    let value = r.bytes(value_len)?;
    Ok(((key, value), buf.len() - r.rest.len()))
}

/// An owned, valid batch ready to append: either built by [`RecordBatchBuilder`] or
/// checked by [`RecordBatch::from_bytes`]. The log trusts it and does not decode it
/// again on append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordBatch {
    bytes: Vec<u8>,
}

impl RecordBatch {
    /// Encodes `records` into a batch (no producer id, leader epoch 0).
    pub fn from_records(records: &[Record]) -> Result<RecordBatch> {
        let mut builder = RecordBatchBuilder::new();
        for record in records {
            let headers = record
                .headers
                .iter()
                .map(|h| (h.key.as_str(), h.value.as_slice()));
            builder.push_with_headers(
                record.key.as_deref(),
                &record.value,
                headers,
                record.timestamp,
            )?;
        }
        builder.finish()
    }

    /// Takes encoded bytes (from a leader, a file or a network peer) and checks every
    /// part of them: header, length, CRC, and each record's structure.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<RecordBatch> {
        let (batch, rest) = BatchRef::parse(&bytes, true)?;
        if !rest.is_empty() {
            return Err(Error::InvalidBatch {
                reason: "bytes after the end of the batch",
            });
        }
        batch.validate_records()?;
        Ok(RecordBatch { bytes })
    }

    /// The batch as a borrowed, parsed view.
    pub fn as_ref(&self) -> BatchRef<'_> {
        let header = header_of_valid(&self.bytes);
        BatchRef {
            header,
            bytes: &self.bytes,
        }
    }

    /// The encoded bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The encoded bytes, consuming the batch.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// The number of records.
    pub fn record_count(&self) -> u32 {
        u32::from_le_bytes(field(&self.bytes, 28))
    }

    /// The largest record timestamp.
    pub fn max_timestamp(&self) -> TimestampMs {
        i64::from_le_bytes(field(&self.bytes, 40))
    }

    /// The size in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Always false: a batch holds at least one record.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The base offset currently written in the batch.
    pub fn base_offset(&self) -> Offset {
        Offset(u64::from_le_bytes(field(&self.bytes, 0)))
    }

    /// Writes the base offset: the only bytes the log changes in a batch.
    pub(crate) fn set_base_offset(&mut self, offset: Offset) {
        if let Some(dst) = self.bytes.get_mut(0..8) {
            dst.copy_from_slice(&offset.0.to_le_bytes());
        }
    }

    /// Sets the leader epoch and recomputes the CRC (the epoch is covered by it).
    pub fn set_leader_epoch(&mut self, epoch: u32) {
        if let Some(dst) = self.bytes.get_mut(20..24) {
            dst.copy_from_slice(&epoch.to_le_bytes());
        }
        seal(&mut self.bytes);
    }
}

/// Reads a fixed field from a batch whose length was checked when it was built.
fn field<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(src) = bytes.get(at..at + N) {
        out.copy_from_slice(src);
    }
    out
}

/// The header of bytes already known to be a valid batch.
fn header_of_valid(bytes: &[u8]) -> BatchHeader {
    BatchHeader::parse(bytes).unwrap_or(BatchHeader {
        base_offset: Offset(0),
        batch_length: 0,
        crc: 0,
        magic: 0,
        attributes: 0,
        leader_epoch: 0,
        last_offset_delta: 0,
        record_count: 0,
        first_timestamp: 0,
        max_timestamp: 0,
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
    })
}

/// Fills in `batch_length` and the CRC of an encoded batch.
fn seal(bytes: &mut [u8]) {
    let batch_length = (bytes.len() - LOG_OVERHEAD) as u32;
    if let Some(dst) = bytes.get_mut(8..12) {
        dst.copy_from_slice(&batch_length.to_le_bytes());
    }
    let crc = crc32fast::hash(bytes.get(CRC_START..).unwrap_or_default());
    if let Some(dst) = bytes.get_mut(12..16) {
        dst.copy_from_slice(&crc.to_le_bytes());
    }
}

/// The largest batch the builder produces: its length must fit the u32 length field
/// and a segment position.
pub const BATCH_BYTES_MAX: usize = (i32::MAX as usize) - LOG_OVERHEAD;

/// Encodes records into a [`RecordBatch`] without building [`Record`] values first.
#[derive(Debug)]
pub struct RecordBatchBuilder {
    bytes: Vec<u8>,
    count: u32,
    first_timestamp: TimestampMs,
    max_timestamp: TimestampMs,
    leader_epoch: u32,
}

impl Default for RecordBatchBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl RecordBatchBuilder {
    /// An empty builder.
    pub fn new() -> RecordBatchBuilder {
        Self::with_capacity(HEADER_LEN + 256)
    }

    /// An empty builder whose buffer holds `bytes` without growing.
    pub fn with_capacity(bytes: usize) -> RecordBatchBuilder {
        let mut buf = Vec::with_capacity(bytes.max(HEADER_LEN));
        buf.resize(HEADER_LEN, 0);
        RecordBatchBuilder {
            bytes: buf,
            count: 0,
            first_timestamp: 0,
            max_timestamp: 0,
            leader_epoch: 0,
        }
    }

    /// Sets the leader epoch written in the header. Defaults to 0.
    pub fn leader_epoch(mut self, epoch: u32) -> RecordBatchBuilder {
        self.leader_epoch = epoch;
        self
    }

    /// The number of records pushed so far.
    pub fn len(&self) -> u32 {
        self.count
    }

    /// True when no record was pushed.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The encoded size so far.
    pub fn encoded_len(&self) -> usize {
        self.bytes.len()
    }

    /// Appends a record without headers.
    pub fn push(&mut self, key: Option<&[u8]>, value: &[u8], timestamp: TimestampMs) -> Result<()> {
        self.push_with_headers(key, value, std::iter::empty(), timestamp)
    }

    /// The delta of a record's `timestamp` from the batch's first (the record's own
    /// when it is the first), refusing a record past the most a batch holds.
    fn timestamp_delta(&mut self, timestamp: TimestampMs) -> Result<i64> {
        if self.count == u32::MAX {
            return Err(Error::InvalidBatch {
                reason: "too many records for one batch",
            });
        }
        if self.count == 0 {
            self.first_timestamp = timestamp;
            self.max_timestamp = timestamp;
        }
        // A match, not `ok_or`: that builds (and drops) the error on every record.
        match timestamp.checked_sub(self.first_timestamp) {
            Some(delta) => Ok(delta),
            None => Err(Error::InvalidBatch {
                reason: "timestamp delta overflows",
            }),
        }
    }

    /// Appends a record.
    pub fn push_with_headers<'h>(
        &mut self,
        key: Option<&[u8]>,
        value: &[u8],
        headers: impl Iterator<Item = (&'h str, &'h [u8])> + Clone,
        timestamp: TimestampMs,
    ) -> Result<()> {
        let delta = self.timestamp_delta(timestamp)?;
        let key_len: i64 = key.map_or(-1, |k| k.len() as i64);
        let mut header_count = 0u64;
        let mut headers_len = 0usize;
        for (name, val) in headers.clone() {
            header_count += 1;
            headers_len += varint::len_u64(name.len() as u64)
                + name.len()
                + varint::len_u64(val.len() as u64)
                + val.len();
        }
        let body_len = 1
            + varint::len_i64(delta)
            + varint::len_u64(u64::from(self.count))
            + varint::len_i64(key_len)
            + key.map_or(0, <[u8]>::len)
            + varint::len_u64(value.len() as u64)
            + value.len()
            + varint::len_u64(header_count)
            + headers_len;
        let total = self.bytes.len() + varint::len_u64(body_len as u64) + body_len;
        if total > BATCH_BYTES_MAX {
            return Err(Error::BatchTooLarge {
                size: total,
                limit: BATCH_BYTES_MAX as u32,
            });
        }
        let out = &mut self.bytes;
        out.reserve(total - out.len());
        varint::put_u64(out, body_len as u64);
        out.push(0);
        varint::put_i64(out, delta);
        varint::put_u64(out, u64::from(self.count));
        varint::put_i64(out, key_len);
        if let Some(key) = key {
            out.extend_from_slice(key);
        }
        varint::put_u64(out, value.len() as u64);
        out.extend_from_slice(value);
        varint::put_u64(out, header_count);
        for (name, val) in headers {
            varint::put_u64(out, name.len() as u64);
            out.extend_from_slice(name.as_bytes());
            varint::put_u64(out, val.len() as u64);
            out.extend_from_slice(val);
        }
        self.count += 1;
        self.max_timestamp = self.max_timestamp.max(timestamp);
        Ok(())
    }

    /// Writes the header and returns the finished batch; an error when empty.
    pub fn finish(self) -> Result<RecordBatch> {
        if self.count == 0 {
            return Err(Error::InvalidBatch {
                reason: "a batch needs at least one record",
            });
        }
        let mut bytes = self.bytes;
        let mut head = [0u8; HEADER_LEN];
        head[16] = FORMAT_VERSION;
        head[20..24].copy_from_slice(&self.leader_epoch.to_le_bytes());
        head[24..28].copy_from_slice(&(self.count - 1).to_le_bytes());
        head[28..32].copy_from_slice(&self.count.to_le_bytes());
        head[32..40].copy_from_slice(&self.first_timestamp.to_le_bytes());
        head[40..48].copy_from_slice(&self.max_timestamp.to_le_bytes());
        head[48..56].copy_from_slice(&(-1i64).to_le_bytes());
        head[56..58].copy_from_slice(&(-1i16).to_le_bytes());
        head[60..64].copy_from_slice(&(-1i32).to_le_bytes());
        if let Some(dst) = bytes.get_mut(..HEADER_LEN) {
            dst.copy_from_slice(&head);
        }
        seal(&mut bytes);
        Ok(RecordBatch { bytes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Header;
    use proptest::prelude::*;

    fn arb_record() -> impl Strategy<Value = Record> {
        (
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..16)),
            proptest::collection::vec(any::<u8>(), 0..64),
            proptest::collection::vec(
                ("[a-z]{0,8}", proptest::collection::vec(any::<u8>(), 0..8)),
                0..3,
            ),
            -1_000_000i64..1_000_000,
        )
            .prop_map(|(key, value, headers, ts)| Record {
                key,
                value,
                headers: headers
                    .into_iter()
                    .map(|(key, value)| Header { key, value })
                    .collect(),
                timestamp: 1_700_000_000_000 + ts,
            })
    }

    proptest! {
        #[test]
        fn batches_round_trip(records in proptest::collection::vec(arb_record(), 1..20), base in 0u64..1 << 40) {
            let mut batch = RecordBatch::from_records(&records).unwrap();
            batch.set_base_offset(Offset(base));
            let again = RecordBatch::from_bytes(batch.as_bytes().to_vec()).unwrap();
            let view = again.as_ref();
            prop_assert_eq!(view.base_offset(), Offset(base));
            prop_assert_eq!(view.next_offset(), Offset(base + records.len() as u64));
            prop_assert_eq!(view.header().max_timestamp, records.iter().map(|r| r.timestamp).max().unwrap());
            let decoded: Vec<Record> = view.records().map(|r| r.unwrap().to_owned_record()).collect();
            prop_assert_eq!(decoded, records.clone());
            for (i, r) in view.records().enumerate() {
                prop_assert_eq!(r.unwrap().offset, Offset(base + i as u64));
            }
        }

        #[test]
        fn any_flipped_byte_after_the_offset_is_detected(
            records in proptest::collection::vec(arb_record(), 1..5),
            at in any::<prop::sample::Index>(),
            bit in 0u8..8,
        ) {
            let batch = RecordBatch::from_records(&records).unwrap();
            let mut bytes = batch.into_bytes();
            let i = 8 + at.index(bytes.len() - 8);
            bytes[i] ^= 1 << bit;
            prop_assert!(RecordBatch::from_bytes(bytes).is_err());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = RecordBatch::from_bytes(bytes.clone());
            if let Ok((batch, _)) = BatchRef::parse(&bytes, false) {
                for record in batch.records() {
                    let _ = record.map(|r| r.headers().count());
                }
            }
        }
    }

    #[test]
    fn assigning_the_base_offset_keeps_the_crc_valid() {
        let mut batch = RecordBatch::from_records(&[Record::new("a", 1)]).unwrap();
        batch.set_base_offset(Offset(42));
        assert!(batch.as_ref().verify_crc().is_ok());
        assert_eq!(batch.base_offset(), Offset(42));
    }

    #[test]
    fn empty_batches_are_refused() {
        assert!(RecordBatchBuilder::new().finish().is_err());
    }
}
