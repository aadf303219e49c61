//! Messages as the broker stores them: log-engine records whose headers may carry
//! the broker's own reserved entries (names starting with `mom.`), which clients
//! cannot set and never see.

use std::borrow::Cow;

use log_engine::{Offset, RecordBatch, RecordBatchBuilder, RecordRef, TimestampMs};

use crate::error::ApiError;
use crate::idempotency::RequestKey;

/// Header names starting with this are the broker's own.
pub const RESERVED_HEADER_PREFIX: &str = "mom.";
/// Carries a produce request's idempotency key, the message's index in the request
/// and the request's message count: `<index>/<count>:<key>`. The count lets a
/// restart tell a complete request from one a crash cut short.
pub const IDEMPOTENCY_HEADER: &str = "mom.idempotency";
/// Dead-lettered messages keep where they came from in these headers.
pub const ORIGIN_QUEUE_HEADER: &str = "mom.origin.queue";
/// The partition the dead-lettered message came from.
pub const ORIGIN_PARTITION_HEADER: &str = "mom.origin.partition";
/// The offset the dead-lettered message had.
pub const ORIGIN_OFFSET_HEADER: &str = "mom.origin.offset";
/// How many times it was delivered before it was dead-lettered.
pub const ORIGIN_DELIVERIES_HEADER: &str = "mom.origin.delivery_count";
/// When it was dead-lettered (ms since the epoch).
pub const ORIGIN_TIME_HEADER: &str = "mom.origin.dead_lettered_at";

/// Application headers of a message to store: name, value.
pub type Headers<'a> = Vec<(Cow<'a, str>, Cow<'a, str>)>;

/// A message a client sends. Its parts borrow from the request body where they can
/// (a JSON string without escapes), so a produce copies each value once: into the
/// batch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NewMessage<'a> {
    /// The routing key.
    pub key: Option<Cow<'a, str>>,
    /// The payload.
    pub value: Cow<'a, [u8]>,
    /// Application headers.
    pub headers: Headers<'a>,
}

impl NewMessage<'_> {
    /// The message with its own copies of what it borrowed.
    pub fn into_owned(self) -> NewMessage<'static> {
        let own = |s: Cow<'_, str>| Cow::Owned(s.into_owned());
        NewMessage {
            key: self.key.map(own),
            value: Cow::Owned(self.value.into_owned()),
            headers: self
                .headers
                .into_iter()
                .map(|(k, v)| (own(k), own(v)))
                .collect(),
        }
    }

    /// Checks that the message uses no reserved header.
    pub fn validate(&self) -> Result<(), ApiError> {
        match self
            .headers
            .iter()
            .find(|(k, _)| k.starts_with(RESERVED_HEADER_PREFIX))
        {
            Some((k, _)) => Err(ApiError::bad_request(format!(
                "header {k:?} is reserved: names starting with {RESERVED_HEADER_PREFIX:?} belong to the broker"
            ))),
            None => Ok(()),
        }
    }

    /// Its key, value and header bytes.
    pub fn payload_bytes(&self) -> u64 {
        let headers: usize = self.headers.iter().map(|(k, v)| k.len() + v.len()).sum();
        (self.key.as_ref().map_or(0, |k| k.len()) + self.value.len() + headers) as u64
    }
}

/// A message read back from a partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredMessage {
    /// The partition.
    pub partition: u32,
    /// The offset in the partition.
    pub offset: Offset,
    /// The routing key.
    pub key: Option<Vec<u8>>,
    /// The payload.
    pub value: Vec<u8>,
    /// Application headers (reserved ones removed).
    pub headers: Vec<(String, Vec<u8>)>,
    /// Milliseconds since the epoch, when the broker stored it.
    pub timestamp: TimestampMs,
}

impl StoredMessage {
    /// Copies a record, leaving out the reserved headers.
    pub fn from_record(partition: u32, record: &RecordRef<'_>) -> StoredMessage {
        StoredMessage {
            partition,
            offset: record.offset,
            key: record.key.map(<[u8]>::to_vec),
            value: record.value.to_vec(),
            headers: record
                .headers()
                .filter(|(k, _)| !k.starts_with(RESERVED_HEADER_PREFIX))
                .map(|(k, v)| (k.to_owned(), v.to_vec()))
                .collect(),
            timestamp: record.timestamp,
        }
    }
}

/// The value of a reserved header of a record, if present.
pub fn reserved_header<'a>(record: &RecordRef<'a>, name: &str) -> Option<&'a [u8]> {
    record.headers().find(|(k, _)| *k == name).map(|(_, v)| v)
}

/// Encodes messages into one batch. `indexed` pairs each message with its index in
/// the request (for the idempotency header); `extra` adds reserved headers to every
/// message.
pub fn encode_batch(
    messages: &[(usize, &NewMessage<'_>)],
    idempotency: Option<(RequestKey<'_>, usize)>,
    extra: &[(&str, String)],
    now: TimestampMs,
) -> Result<RecordBatch, ApiError> {
    let mut builder =
        RecordBatchBuilder::with_capacity(encoded_size_hint(messages, idempotency, extra));
    for &(index, message) in messages {
        let key = message.key.as_deref().map(str::as_bytes);
        let pushed = if message.headers.is_empty() && idempotency.is_none() && extra.is_empty() {
            // Most messages: the builder's step for a record without headers skips
            // walking the chain below, twice per message.
            builder.push(key, &message.value, now)
        } else {
            let idem = idempotency.map(|(request, count)| {
                format!(
                    "{index}/{count}/{:08x}:{}",
                    request.fingerprint, request.key
                )
            });
            let headers = message
                .headers
                .iter()
                .map(|(k, v)| (k.as_ref(), v.as_bytes()))
                .chain(idem.iter().map(|v| (IDEMPOTENCY_HEADER, v.as_bytes())))
                .chain(extra.iter().map(|(k, v)| (*k, v.as_bytes())));
            builder.push_with_headers(key, &message.value, headers, now)
        };
        pushed.map_err(|e| ApiError::bad_request(e.to_string()))?;
    }
    builder
        .finish()
        .map_err(|e| ApiError::bad_request(e.to_string()))
}

/// About the encoded size of a batch of `messages`: their bytes plus a generous
/// per-record and per-header allowance for lengths and varints, so that the
/// builder's buffer is allocated once.
fn encoded_size_hint(
    messages: &[(usize, &NewMessage<'_>)],
    idempotency: Option<(RequestKey<'_>, usize)>,
    extra: &[(&str, String)],
) -> usize {
    const PER_RECORD: usize = 24;
    const PER_HEADER: usize = 10;
    // `<index>/<count>/<fingerprint>:<key>` under its name.
    let idempotency = idempotency.map_or(0, |(request, _)| {
        IDEMPOTENCY_HEADER.len() + request.key.len() + 2 * 20 + 8 + 3 + PER_HEADER
    });
    let extra: usize = idempotency
        + extra
            .iter()
            .map(|(k, v)| k.len() + v.len() + PER_HEADER)
            .sum::<usize>();
    let records: usize = messages
        .iter()
        .map(|(_, m)| {
            let headers: usize = m
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.len() + PER_HEADER)
                .sum();
            m.key.as_ref().map_or(0, |k| k.len()) + m.value.len() + headers + extra + PER_RECORD
        })
        .sum();
    log_engine::HEADER_LEN + records
}

/// What an idempotency header says of its record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdempotencyHeader<'a> {
    /// The message's index in its request.
    pub index: usize,
    /// The request's message count.
    pub count: usize,
    /// The request's fingerprint; none in records stored before fingerprints.
    pub fingerprint: Option<u32>,
    /// The key.
    pub key: &'a str,
}

/// Parses an idempotency header value: `<index>/<count>/<fingerprint, hex>:<key>`,
/// or `<index>/<count>:<key>` as records stored before fingerprints have it.
pub fn parse_idempotency(value: &[u8]) -> Option<IdempotencyHeader<'_>> {
    let text = std::str::from_utf8(value).ok()?;
    let (position, key) = text.split_once(':')?;
    let mut parts = position.split('/');
    let index = parts.next()?.parse().ok()?;
    let count = parts.next()?.parse().ok()?;
    let fingerprint = match parts.next() {
        Some(hex) => Some(u32::from_str_radix(hex, 16).ok()?),
        None => None,
    };
    if parts.next().is_some() {
        return None;
    }
    Some(IdempotencyHeader {
        index,
        count,
        fingerprint,
        key,
    })
}

/// The fingerprint of a request's messages, kept with its idempotency key: CRC-32 of
/// each message's key, value and headers, each with its length.
pub fn fingerprint(messages: &[NewMessage<'_>]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    let mut field = |bytes: &[u8]| {
        hasher.update(&(bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
    };
    for m in messages {
        match &m.key {
            Some(key) => field(key.as_bytes()),
            None => field(b"\xff no key"),
        }
        field(&m.value);
        field(&(m.headers.len() as u64).to_le_bytes());
        for (name, value) in &m.headers {
            field(name.as_bytes());
            field(value.as_bytes());
        }
    }
    hasher.finalize()
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> TimestampMs {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_size_hint_holds_the_whole_batch() {
        let long_key = "k".repeat(300);
        let messages = [
            NewMessage::default(),
            NewMessage {
                key: Some(long_key.as_str().into()),
                value: vec![7; 5000].into(),
                headers: vec![("h".into(), "v".repeat(200).into()); 40],
            },
            NewMessage {
                value: b"x".as_slice().into(),
                ..NewMessage::default()
            },
        ];
        let indexed: Vec<(usize, &NewMessage<'_>)> = messages.iter().enumerate().collect();
        let extra = [(ORIGIN_QUEUE_HEADER, "q".repeat(249))];
        let long = "a-key-of-256-chars".repeat(14);
        let request = RequestKey {
            key: &long,
            fingerprint: u32::MAX,
        };
        for idempotency in [None, Some((request, 1_000_000))] {
            let hint = encoded_size_hint(&indexed, idempotency, &extra);
            let batch = encode_batch(&indexed, idempotency, &extra, 1).unwrap();
            assert!(batch.len() <= hint, "{} > {hint}", batch.len());
            assert!(
                hint < batch.len() * 2,
                "{hint} is far above {}",
                batch.len()
            );
        }
    }

    #[test]
    fn idempotency_headers_are_read_with_and_without_a_fingerprint() {
        let message = NewMessage {
            value: b"v".as_slice().into(),
            ..NewMessage::default()
        };
        let request = RequestKey {
            key: "order:42/7",
            fingerprint: fingerprint(std::slice::from_ref(&message)),
        };
        let batch = encode_batch(&[(3, &message)], Some((request, 5)), &[], 1).unwrap();
        let batch = batch.as_ref();
        let record = batch.records().next().unwrap().unwrap();
        let header = reserved_header(&record, IDEMPOTENCY_HEADER).unwrap();
        assert_eq!(
            parse_idempotency(header),
            Some(IdempotencyHeader {
                index: 3,
                count: 5,
                fingerprint: Some(request.fingerprint),
                key: "order:42/7",
            })
        );
        let old = parse_idempotency(b"1/2:k").unwrap();
        assert_eq!(
            (old.index, old.count, old.fingerprint, old.key),
            (1, 2, None, "k")
        );
        for bad in [
            &b"1/2/zz:k"[..],
            b"1/2/3/4:k",
            b"1:k",
            b"x/2:k",
            b"no colon",
        ] {
            assert_eq!(parse_idempotency(bad), None, "{bad:?}");
        }
        let other = NewMessage {
            value: b"w".as_slice().into(),
            ..NewMessage::default()
        };
        assert_ne!(request.fingerprint, fingerprint(&[other]));
    }
}
