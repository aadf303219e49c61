//! The answer to a pull, written as JSON straight from the records read, with no
//! message copied in between: `{"messages":[...]}`, each message as
//! [`super::body::PulledMessage`] serializes it (same fields, same order, same
//! encodings, reserved headers left out). Text that is valid UTF-8 and needs no
//! escape, the usual case, is copied as it is.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use log_engine::RecordRef;

use crate::message::RESERVED_HEADER_PREFIX;
use crate::subscription::PullSink;

/// Bytes of JSON besides the key, value and headers of one message: the field names,
/// numbers and punctuation, rounded up.
const JSON_BYTES_PER_MESSAGE: usize = 160;
/// The most bytes reserved up front for an answer; a larger one grows as it is
/// written.
const RESERVE_BYTES_MAX: usize = 1 << 20;
/// What the answer opens with.
const OPEN: &[u8] = b"{\"messages\":[";

/// A pull answer being written, with the counts the metrics need.
#[derive(Debug)]
pub struct PulledJson {
    /// The JSON so far: `OPEN`, then the messages taken, comma-separated.
    buf: Vec<u8>,
    /// Messages written.
    count: usize,
    /// Key, value and (shown) header bytes of the messages written.
    payload_bytes: u64,
    /// `{"partition":<p>,"offset":` for the partition of the last message taken:
    /// the messages of one partition come in runs.
    partition_start: Vec<u8>,
    /// The partition `partition_start` is for.
    partition: Option<u32>,
    /// `<t>}` for the timestamp of the last message taken: the messages of one
    /// produce request share theirs.
    timestamp_end: Vec<u8>,
    /// The timestamp `timestamp_end` is for.
    timestamp: Option<i64>,
}

impl PulledJson {
    /// An empty answer, with room for about `max` messages of `value_bytes_guess`.
    pub fn new(max: usize, value_bytes_guess: usize) -> PulledJson {
        let reserve = max
            .saturating_mul(value_bytes_guess + JSON_BYTES_PER_MESSAGE)
            .min(RESERVE_BYTES_MAX);
        let mut buf = Vec::with_capacity(reserve.max(64));
        buf.extend_from_slice(OPEN);
        PulledJson {
            buf,
            count: 0,
            payload_bytes: 0,
            partition_start: Vec::with_capacity(32),
            partition: None,
            timestamp_end: Vec::with_capacity(24),
            timestamp: None,
        }
    }

    /// Messages written.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Key, value and shown header bytes of the messages written.
    pub fn payload_bytes(&self) -> u64 {
        self.payload_bytes
    }

    /// The finished JSON.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf.extend_from_slice(b"]}");
        self.buf
    }
}

impl PullSink for PulledJson {
    fn take(&mut self, partition: u32, record: &RecordRef<'_>) {
        let out = &mut self.buf;
        if self.count > 0 {
            out.push(b',');
        }
        self.count += 1;
        if self.partition != Some(partition) {
            self.partition = Some(partition);
            self.partition_start.clear();
            self.partition_start.extend_from_slice(b"{\"partition\":");
            push_number(&mut self.partition_start, partition);
            self.partition_start.extend_from_slice(b",\"offset\":");
        }
        out.extend_from_slice(&self.partition_start);
        push_number(out, record.offset.0);
        out.extend_from_slice(b",\"key\":");
        let mut bytes = record.value.len();
        match record.key {
            None => out.extend_from_slice(b"null"),
            Some(key) => {
                bytes += key.len();
                if !push_text(out, key) {
                    out.extend_from_slice(b",\"key_encoding\":\"base64\"");
                }
            }
        }
        out.extend_from_slice(b",\"value\":");
        if push_text(out, record.value) {
            out.extend_from_slice(b",\"value_encoding\":\"utf8\"");
        } else {
            out.extend_from_slice(b",\"value_encoding\":\"base64\"");
        }
        out.extend_from_slice(b",\"headers\":{");
        let mut first = true;
        for (name, value) in record.headers() {
            if name.starts_with(RESERVED_HEADER_PREFIX) {
                continue;
            }
            bytes += name.len() + value.len();
            let Ok(value) = std::str::from_utf8(value) else {
                continue;
            };
            if !first {
                out.push(b',');
            }
            first = false;
            push_str(out, name);
            out.push(b':');
            push_str(out, value);
        }
        out.extend_from_slice(b"},\"timestamp\":");
        if self.timestamp != Some(record.timestamp) {
            self.timestamp = Some(record.timestamp);
            self.timestamp_end.clear();
            push_number(&mut self.timestamp_end, record.timestamp);
            self.timestamp_end.push(b'}');
        }
        out.extend_from_slice(&self.timestamp_end);
        self.payload_bytes += bytes as u64;
    }
}

fn push_number(out: &mut Vec<u8>, n: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Writes `bytes` as a JSON string: as text when they are valid UTF-8 (true), else
/// in standard padded base64 (false).
fn push_text(out: &mut Vec<u8>, bytes: &[u8]) -> bool {
    if is_plain_ascii(bytes) {
        out.push(b'"');
        out.extend_from_slice(bytes);
        out.push(b'"');
        return true;
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => {
            push_str(out, text);
            true
        }
        Err(_) => {
            out.push(b'"');
            out.extend_from_slice(STANDARD.encode(bytes).as_bytes());
            out.push(b'"');
            false
        }
    }
}

/// Writes `text` as a JSON string, escaped as serde_json escapes it.
fn push_str(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    if needs_escape(text.as_bytes()) {
        push_escaped(out, text.as_bytes());
    } else {
        out.extend_from_slice(text.as_bytes());
    }
    out.push(b'"');
}

fn is_special(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// Whether any byte must be escaped. Each chunk is scanned whole, without an early
/// exit, so the compiler can use vector instructions.
fn needs_escape(bytes: &[u8]) -> bool {
    bytes
        .chunks(64)
        .any(|chunk| chunk.iter().fold(false, |found, &b| found | is_special(b)))
}

/// Whether every byte is ASCII that a JSON string holds as it is (no control
/// character, `"` or `\`): the usual message, written without a UTF-8 check or an
/// escape. Scanned whole, without an early exit: over a value whose length is
/// known this counts fewer instructions than the body reader's sixteen-byte search
/// for a string's end (833 k against 845 k per pull of 1000 messages of 100 B).
fn is_plain_ascii(bytes: &[u8]) -> bool {
    // Read as signed, a control character and every byte from 0x80 up are below
    // 0x20: one comparison covers both.
    !bytes.iter().fold(false, |found, &b| {
        found | ((b as i8) < 0x20) | (b == b'"') | (b == b'\\')
    })
}

/// Writes the contents of a JSON string: runs of plain bytes as they are, `"`, `\`
/// and control characters escaped. Only ASCII bytes are escaped, so UTF-8 sequences
/// stay whole.
fn push_escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut rest = bytes;
    while let Some(at) = rest.iter().position(|&b| is_special(b)) {
        let (plain, tail) = rest.split_at(at);
        out.extend_from_slice(plain);
        let Some((&b, tail)) = tail.split_first() else {
            break;
        };
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            _ => {
                let hi = HEX.get(usize::from(b >> 4)).copied().unwrap_or(b'0');
                let lo = HEX.get(usize::from(b & 0xf)).copied().unwrap_or(b'0');
                out.extend_from_slice(&[b'\\', b'u', b'0', b'0', hi, lo]);
            }
        }
        rest = tail;
    }
    out.extend_from_slice(rest);
}

#[cfg(test)]
mod tests {
    use log_engine::{Offset, RecordBatchBuilder};
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::http::body::PulledMessages;
    use crate::message::StoredMessage;

    type Message<'a> = (Option<&'a [u8]>, &'a [u8], Vec<(&'a str, &'a [u8])>);

    /// The pull answer for `messages` written both ways: straight from the records,
    /// and through `StoredMessage` and serde.
    fn both_ways(messages: &[Message<'_>]) -> (Vec<u8>, Vec<u8>, u64) {
        let mut builder = RecordBatchBuilder::with_capacity(1024);
        for (key, value, headers) in messages {
            builder
                .push_with_headers(*key, value, headers.iter().copied(), 42)
                .unwrap();
        }
        let batch = builder.finish().unwrap();
        let mut direct = PulledJson::new(messages.len(), 8);
        let mut stored = Vec::new();
        for (i, record) in batch.as_ref().records().enumerate() {
            let mut record = record.unwrap();
            record.offset = Offset(100 + i as u64);
            // Runs of partitions and of timestamps, and changes between them.
            record.timestamp = 42 + (i / 2) as i64;
            let partition = if i % 3 == 2 { 0 } else { 3 };
            direct.take(partition, &record);
            stored.push(StoredMessage::from_record(partition, &record));
        }
        let bytes = direct.payload_bytes();
        let mut via_serde = b"{\"messages\":".to_vec();
        serde_json::to_writer(&mut via_serde, &PulledMessages(&stored)).unwrap();
        via_serde.push(b'}');
        (direct.finish(), via_serde, bytes)
    }

    #[test]
    fn writes_what_serde_writes() {
        let controls: Vec<u8> = (0u8..0x20).chain(*b"\"\\/\x7f").collect();
        let controls = String::from_utf8(controls).unwrap();
        let long = "x".repeat(300) + "\"" + &"é".repeat(100);
        let messages: Vec<Message<'_>> = vec![
            (None, b"plain", vec![]),
            (
                Some(b"k"),
                "héllo \"q\" \\ \n".as_bytes(),
                vec![("a", b"1")],
            ),
            (
                Some(&[0xff, 0]),
                &[0, 0xfe, 1],
                vec![
                    ("mom.idempotency", b"0/1:x"),
                    ("bin", &[0xff]),
                    ("b\"n", b"v\t"),
                ],
            ),
            (Some(b""), b"", vec![("mom.origin.queue", b"q")]),
            (Some(controls.as_bytes()), controls.as_bytes(), vec![]),
            (None, long.as_bytes(), vec![("h", long.as_bytes())]),
        ];
        let (direct, via_serde, _) = both_ways(&messages);
        assert_eq!(
            String::from_utf8(direct.clone()).unwrap(),
            String::from_utf8(via_serde).unwrap()
        );
        let parsed: serde_json::Value = serde_json::from_slice(&direct).unwrap();
        assert_eq!(parsed["messages"][1]["value"], "héllo \"q\" \\ \n");
        assert_eq!(parsed["messages"][2]["headers"], json!({"b\"n": "v\t"}));
        assert_eq!(parsed["messages"][2]["key_encoding"], "base64");
    }

    /// Bytes around the edges of the plain-ASCII path: controls, quote, backslash,
    /// DEL, and the first bytes past ASCII (UTF-8 lead and continuation bytes).
    fn edge_bytes() -> impl Strategy<Value = Vec<u8>> {
        let byte = prop_oneof![
            4 => b'a'..=b'z',
            1 => 0u8..0x20,
            1 => Just(b'"'),
            1 => Just(b'\\'),
            1 => 0x7eu8..=0x81,
            1 => 0xc2u8..=0xc3,
            1 => 0xbfu8..=0xc0,
        ];
        proptest::collection::vec(byte, 0..40)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn any_key_and_value_are_written_as_serde_writes_them(
            key in proptest::option::of(edge_bytes()),
            value in edge_bytes(),
        ) {
            let messages: Vec<Message<'_>> = vec![(key.as_deref(), value.as_slice(), vec![])];
            let (direct, via_serde, _) = both_ways(&messages);
            prop_assert_eq!(
                String::from_utf8(direct).unwrap(),
                String::from_utf8(via_serde).unwrap()
            );
        }
    }

    #[test]
    fn counts_what_the_stored_messages_count() {
        let messages: Vec<Message<'_>> = vec![
            (
                Some(b"key"),
                b"value",
                vec![("a", b"12"), ("mom.x", b"hidden")],
            ),
            (None, b"v", vec![("bin", &[0xff, 0xfe])]),
        ];
        let (_, _, bytes) = both_ways(&messages);
        // key 3 + value 5 + header 3, then value 1 + header 5.
        assert_eq!(bytes, 17);
    }

    #[test]
    fn an_empty_answer_is_an_empty_list() {
        let out = PulledJson::new(0, 0).finish();
        assert_eq!(out, b"{\"messages\":[]}");
    }
}
