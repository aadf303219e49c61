//! Messages as the broker stores them: log-engine records whose headers may carry
//! the broker's own reserved entries (names starting with `mom.`), which clients
//! cannot set and never see.

use std::borrow::Cow;

use log_engine::{Offset, RecordBatch, RecordBatchBuilder, RecordRef, TimestampMs};

use crate::error::ApiError;

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
    idempotency: Option<(&str, usize)>,
    extra: &[(&str, String)],
    now: TimestampMs,
) -> Result<RecordBatch, ApiError> {
    let mut builder =
        RecordBatchBuilder::with_capacity(encoded_size_hint(messages, idempotency, extra));
    for &(index, message) in messages {
        let idem = idempotency.map(|(key, count)| format!("{index}/{count}:{key}"));
        let headers = message
            .headers
            .iter()
            .map(|(k, v)| (k.as_ref(), v.as_bytes()))
            .chain(idem.iter().map(|v| (IDEMPOTENCY_HEADER, v.as_bytes())))
            .chain(extra.iter().map(|(k, v)| (*k, v.as_bytes())));
        builder
            .push_with_headers(
                message.key.as_deref().map(str::as_bytes),
                &message.value,
                headers,
                now,
            )
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
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
    idempotency: Option<(&str, usize)>,
    extra: &[(&str, String)],
) -> usize {
    const PER_RECORD: usize = 24;
    const PER_HEADER: usize = 10;
    // `<index>/<count>:<key>` under its name.
    let idempotency = idempotency.map_or(0, |(key, _)| {
        IDEMPOTENCY_HEADER.len() + key.len() + 2 * 20 + 2 + PER_HEADER
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

/// Splits an idempotency header value into the message index, the request's
/// message count and the key.
pub fn parse_idempotency(value: &[u8]) -> Option<(usize, usize, &str)> {
    let text = std::str::from_utf8(value).ok()?;
    let (position, key) = text.split_once(':')?;
    let (index, count) = position.split_once('/')?;
    Some((index.parse().ok()?, count.parse().ok()?, key))
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
        for idempotency in [
            None,
            Some(("a-key-of-256-chars".repeat(14).as_str(), 1_000_000)),
        ] {
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
}
