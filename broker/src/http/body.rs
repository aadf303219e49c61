//! Messages in JSON: what clients send ([`MessageIn`] -> [`NewMessage`]) and what
//! they get back ([`PulledMessage`], [`ReceivedMessage`], borrowed from
//! [`StoredMessage`] and serialized without copying values), plus the one helper that
//! writes a JSON answer.
//!
//! Encoding rules:
//!
//! - `value` is UTF-8 text unless `value_encoding` is `"base64"` (standard alphabet,
//!   padding optional); invalid base64 is a 400.
//! - On output, `value_encoding` is `"utf8"` when the stored bytes are valid UTF-8,
//!   else `"base64"` (standard alphabet, padded).
//! - Keys are strings in, and strings out. A stored key that is not UTF-8 (no REST
//!   client can make one) comes out base64 with `"key_encoding": "base64"`.
//! - Headers are a string -> string map. REST only stores UTF-8 header values; a
//!   stored value that is not UTF-8 is left out of the output map rather than
//!   changed. A name repeated in one JSON object keeps its last value.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use utoipa::ToSchema;

use crate::config::Durability;
use crate::error::ApiError;
use crate::message::{Headers, NewMessage, StoredMessage};
use crate::queue::Delivery;

/// Standard base64, padded or not.
const BASE64_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The most headers one message may carry.
pub const HEADERS_PER_MESSAGE_MAX: usize = 256;

/// How a value is written in JSON.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ValueEncoding {
    /// UTF-8 text, as is.
    #[default]
    #[serde(alias = "utf-8")]
    Utf8,
    /// Bytes, in standard base64.
    Base64,
}

/// When a topic or queue answers a produce or send, as a setting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DurabilitySetting {
    /// After the messages are fsynced (concurrent requests share one fsync).
    #[default]
    Fsync,
    /// After the messages are written; fsynced every `flush_interval_ms`.
    Interval,
}

impl From<Durability> for DurabilitySetting {
    fn from(d: Durability) -> Self {
        match d {
            Durability::Fsync => DurabilitySetting::Fsync,
            Durability::Interval => DurabilitySetting::Interval,
        }
    }
}

impl From<DurabilitySetting> for Durability {
    fn from(d: DurabilitySetting) -> Self {
        match d {
            DurabilitySetting::Fsync => Durability::Fsync,
            DurabilitySetting::Interval => Durability::Interval,
        }
    }
}

/// What was made durable before a produce or send was answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DurabilityOutcome {
    /// The messages were fsynced on the leader.
    Fsync,
    /// The messages were written to the page cache; the next interval flush fsyncs
    /// them.
    Interval,
    /// Written without waiting for any fsync (`acks: "none"`).
    None,
}

impl DurabilityOutcome {
    /// The name it has in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            DurabilityOutcome::Fsync => "fsync",
            DurabilityOutcome::Interval => "interval",
            DurabilityOutcome::None => "none",
        }
    }
}

impl From<Durability> for DurabilityOutcome {
    fn from(d: Durability) -> Self {
        match d {
            Durability::Fsync => DurabilityOutcome::Fsync,
            Durability::Interval => DurabilityOutcome::Interval,
        }
    }
}

/// A message to produce or send. Strings borrow from the request body unless JSON
/// escapes make them differ from it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageIn<'a> {
    /// The routing key: messages with the same key go to the same partition, in order.
    #[serde(default, borrow)]
    #[schema(value_type = Option<String>)]
    pub key: Option<Cow<'a, str>>,
    /// The payload: UTF-8 text, or base64 when `value_encoding` is `"base64"`.
    #[serde(borrow)]
    #[schema(value_type = String)]
    pub value: Cow<'a, str>,
    /// How `value` is written. Defaults to `"utf8"`.
    #[serde(default)]
    pub value_encoding: Option<ValueEncoding>,
    /// Application headers; names starting with `mom.` are reserved.
    #[serde(default, borrow, deserialize_with = "headers_in")]
    #[schema(value_type = Option<HashMap<String, String>>)]
    pub headers: Headers<'a>,
}

impl<'a> MessageIn<'a> {
    /// The message to store; a 400 naming the message (`index` in the request) when
    /// its value is not valid base64 or it has too many headers.
    pub fn into_new(self, index: usize) -> Result<NewMessage<'a>, ApiError> {
        let value = match self.value_encoding.unwrap_or_default() {
            ValueEncoding::Utf8 => match self.value {
                Cow::Borrowed(text) => Cow::Borrowed(text.as_bytes()),
                Cow::Owned(text) => Cow::Owned(text.into_bytes()),
            },
            ValueEncoding::Base64 => {
                Cow::Owned(BASE64_LENIENT.decode(self.value.as_bytes()).map_err(|e| {
                    ApiError::bad_request(format!(
                        "messages[{index}].value is not valid base64: {e}"
                    ))
                })?)
            }
        };
        if self.headers.len() > HEADERS_PER_MESSAGE_MAX {
            return Err(ApiError::bad_request(format!(
                "messages[{index}] has {} headers, more than {HEADERS_PER_MESSAGE_MAX}",
                self.headers.len()
            )));
        }
        Ok(NewMessage {
            key: self.key,
            value,
            headers: self.headers,
        })
    }
}

/// The messages to store, in request order; a 400 for the first bad one, and for an
/// empty list.
pub fn new_messages(messages: Vec<MessageIn<'_>>) -> Result<Vec<NewMessage<'_>>, ApiError> {
    not_empty(messages)?
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            let m = m.into_new(i)?;
            // Here as well as in the append, so that it is a 400 before a 403.
            m.validate()?;
            Ok(m)
        })
        .collect()
}

/// The messages of a request; a 400 when there are none.
pub fn not_empty<T>(messages: Vec<T>) -> Result<Vec<T>, ApiError> {
    if messages.is_empty() {
        return Err(ApiError::bad_request("messages must not be empty"));
    }
    Ok(messages)
}

/// Runs the append of a request that carries an `Idempotency-Key` to its end, even
/// when the client goes away meanwhile (the request's future is dropped on a
/// disconnect): dropped half-way, its records could be stored while the key's entry
/// was forgotten, and the client's retry with the same key would store them again. A
/// retry that comes while it runs waits for it, and gets its answer.
pub async fn to_completion<T: Send + 'static>(
    append: impl Future<Output = Result<T, ApiError>> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::spawn(append).await.map_err(ApiError::internal)?
}

/// Key, value and header bytes of stored messages, for the byte counters.
pub fn stored_bytes<'a>(messages: impl Iterator<Item = &'a StoredMessage>) -> u64 {
    messages
        .map(|m| {
            let headers: usize = m.headers.iter().map(|(k, v)| k.len() + v.len()).sum();
            (m.key.as_ref().map_or(0, Vec::len) + m.value.len() + headers) as u64
        })
        .sum()
}

/// Reads a JSON object of string values into pairs, without a map in between; a
/// repeated name keeps its last value. `null` is no headers.
fn headers_in<'de: 'a, 'a, D: Deserializer<'de>>(d: D) -> Result<Headers<'a>, D::Error> {
    struct HeadersVisitor<'a>(PhantomData<&'a ()>);

    impl<'de: 'a, 'a> Visitor<'de> for HeadersVisitor<'a> {
        type Value = Headers<'a>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object of string header values")
        }

        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }

        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_map(self)
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut headers: Headers<'a> = Vec::new();
            while let Some((Borrowable(name), Borrowable(value))) = map.next_entry()? {
                match headers.iter_mut().find(|(n, _)| *n == name) {
                    Some(slot) => slot.1 = value,
                    None => headers.push((name, value)),
                }
            }
            Ok(headers)
        }
    }

    d.deserialize_option(HeadersVisitor(PhantomData))
}

/// A string that borrows from the input when it can: serde's `Cow<str>` alone
/// always copies.
struct Borrowable<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Borrowable<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct StrVisitor<'a>(PhantomData<&'a ()>);

        impl<'de: 'a, 'a> Visitor<'de> for StrVisitor<'a> {
            type Value = Borrowable<'a>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E: serde::de::Error>(
                self,
                v: &'de str,
            ) -> Result<Self::Value, E> {
                Ok(Borrowable(Cow::Borrowed(v)))
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Borrowable(Cow::Owned(v.to_owned())))
            }

            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Borrowable(Cow::Owned(v)))
            }
        }

        d.deserialize_str(StrVisitor(PhantomData))
    }
}

/// Bytes written as JSON text: as they are when valid UTF-8, else as base64.
#[derive(Clone, Copy, Debug)]
pub enum Text<'a> {
    /// Valid UTF-8.
    Utf8(&'a str),
    /// Anything else, written in base64.
    Base64(&'a [u8]),
}

impl<'a> Text<'a> {
    /// The text form of `bytes`.
    pub fn of(bytes: &'a [u8]) -> Text<'a> {
        match std::str::from_utf8(bytes) {
            Ok(text) => Text::Utf8(text),
            Err(_) => Text::Base64(bytes),
        }
    }

    /// How the text is encoded.
    pub fn encoding(self) -> ValueEncoding {
        match self {
            Text::Utf8(_) => ValueEncoding::Utf8,
            Text::Base64(_) => ValueEncoding::Base64,
        }
    }
}

impl Serialize for Text<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Text::Utf8(text) => s.serialize_str(text),
            Text::Base64(bytes) => {
                s.collect_str(&base64::display::Base64Display::new(bytes, &STANDARD))
            }
        }
    }
}

/// Stored headers written as a JSON object; values that are not UTF-8 are left out.
#[derive(Clone, Copy, Debug)]
pub struct HeadersOut<'a>(pub &'a [(String, Vec<u8>)]);

impl Serialize for HeadersOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        for (name, value) in self.0 {
            if let Ok(value) = std::str::from_utf8(value) {
                map.serialize_entry(name, value)?;
            }
        }
        map.end()
    }
}

/// A message pulled from a topic.
#[derive(Debug, Serialize, ToSchema)]
pub struct PulledMessage<'a> {
    /// The partition.
    pub partition: u32,
    /// The message's offset in the partition.
    pub offset: u64,
    /// The routing key, if the message has one.
    #[schema(value_type = Option<String>)]
    pub key: Option<Text<'a>>,
    /// Present (`"base64"`) only when the stored key is not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_encoding: Option<ValueEncoding>,
    /// The payload, as `value_encoding` says.
    #[schema(value_type = String)]
    pub value: Text<'a>,
    /// `"utf8"` when the payload is valid UTF-8, else `"base64"`.
    pub value_encoding: ValueEncoding,
    /// Application headers.
    #[schema(value_type = HashMap<String, String>)]
    pub headers: HeadersOut<'a>,
    /// When the broker stored the message, ms since the Unix epoch.
    pub timestamp: i64,
}

impl<'a> From<&'a StoredMessage> for PulledMessage<'a> {
    fn from(m: &'a StoredMessage) -> Self {
        let key = m.key.as_deref().map(Text::of);
        let value = Text::of(&m.value);
        PulledMessage {
            partition: m.partition,
            offset: m.offset.0,
            key,
            key_encoding: key
                .map(Text::encoding)
                .filter(|e| *e == ValueEncoding::Base64),
            value,
            value_encoding: value.encoding(),
            headers: HeadersOut(&m.headers),
            timestamp: m.timestamp,
        }
    }
}

/// Stored messages written as a JSON array of [`PulledMessage`]s, one at a time.
#[derive(Clone, Copy, Debug)]
pub struct PulledMessages<'a>(pub &'a [StoredMessage]);

impl Serialize for PulledMessages<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(PulledMessage::from))
    }
}

/// A message received from a queue.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReceivedMessage<'a> {
    /// The message id (`"<partition>-<offset>"`), stable across deliveries.
    pub id: &'a str,
    /// The signed receipt that acks or nacks this delivery.
    pub receipt: &'a str,
    /// The partition.
    pub partition: u32,
    /// The message's offset in the partition.
    pub offset: u64,
    /// The routing key, if the message has one.
    #[schema(value_type = Option<String>)]
    pub key: Option<Text<'a>>,
    /// Present (`"base64"`) only when the stored key is not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_encoding: Option<ValueEncoding>,
    /// The payload, as `value_encoding` says.
    #[schema(value_type = String)]
    pub value: Text<'a>,
    /// `"utf8"` when the payload is valid UTF-8, else `"base64"`.
    pub value_encoding: ValueEncoding,
    /// Application headers; a dead letter also shows where it came from
    /// (`mom.origin.queue`, `.partition`, `.offset`, `.delivery_count`,
    /// `.dead_lettered_at`).
    #[schema(value_type = HashMap<String, String>)]
    pub headers: HeadersOut<'a>,
    /// Which delivery this is: 1 for the first.
    pub delivery_count: u32,
    /// When the broker stored the message, ms since the Unix epoch.
    pub timestamp: i64,
}

impl<'a> From<&'a Delivery> for ReceivedMessage<'a> {
    fn from(d: &'a Delivery) -> Self {
        let m = PulledMessage::from(&d.message);
        ReceivedMessage {
            id: &d.id,
            receipt: &d.receipt,
            partition: m.partition,
            offset: m.offset,
            key: m.key,
            key_encoding: m.key_encoding,
            value: m.value,
            value_encoding: m.value_encoding,
            headers: m.headers,
            delivery_count: d.delivery_count,
            timestamp: m.timestamp,
        }
    }
}

/// Deliveries written as a JSON array of [`ReceivedMessage`]s, one at a time.
#[derive(Clone, Copy, Debug)]
pub struct ReceivedMessages<'a>(pub &'a [Delivery]);

impl Serialize for ReceivedMessages<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(ReceivedMessage::from))
    }
}

/// A guess of the JSON size of stored messages, to size the answer's buffer once.
pub fn json_size_hint<'a>(messages: impl Iterator<Item = &'a StoredMessage>) -> usize {
    messages
        .map(|m| {
            let headers: usize = m.headers.iter().map(|(k, v)| k.len() + v.len() + 6).sum();
            // Base64 grows by 4/3; escapes are rare. Plus the field names and numbers.
            m.value.len() * 4 / 3 + m.key.as_ref().map_or(0, Vec::len) + headers + 160
        })
        .sum::<usize>()
        + 32
}

/// An answer with `status` of JSON already written.
pub fn json_bytes(status: StatusCode, json: Vec<u8>) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        json,
    )
        .into_response()
}

/// A JSON answer with `status`, serialized straight into a buffer of about
/// `size_hint` bytes.
pub fn json_response<T: Serialize + ?Sized>(
    status: StatusCode,
    value: &T,
    size_hint: usize,
) -> Response {
    let mut buf = Vec::with_capacity(size_hint.max(64));
    match serde_json::to_writer(&mut buf, value) {
        Ok(()) => json_bytes(status, buf),
        Err(e) => ApiError::internal(e).into_response(),
    }
}

/// A JSON answer of a small value.
pub fn json<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Response {
    json_response(status, value, 256)
}

#[cfg(test)]
mod tests {
    use log_engine::Offset;
    use serde_json::json;

    use super::*;

    fn parse(v: serde_json::Value) -> Result<Vec<u8>, ApiError> {
        let text = v.to_string();
        let m: MessageIn<'_> =
            serde_json::from_str(&text).map_err(|e| ApiError::bad_request(e.to_string()))?;
        m.into_new(0).map(|m| m.value.into_owned())
    }

    #[test]
    fn values_are_text_or_base64_and_headers_a_map() {
        let text = r#"{"value": "héllo", "key": "k", "headers": {"a": "1", "a": "2", "b": "3"}}"#;
        let m: MessageIn<'_> = serde_json::from_str(text).unwrap();
        assert!(
            matches!(m.value, Cow::Borrowed(_)),
            "a plain value is not copied"
        );
        let m = m.into_new(0).unwrap();
        assert_eq!(m.value, "héllo".as_bytes());
        assert_eq!(m.key.as_deref(), Some("k"));
        assert_eq!(
            m.headers,
            vec![("a".into(), "2".into()), ("b".into(), "3".into())]
        );
        let value = parse(json!({"value": "AAEC/w==", "value_encoding": "base64"})).unwrap();
        assert_eq!(value, vec![0, 1, 2, 255]);
        let value =
            parse(json!({"value": "AAEC/w", "value_encoding": "base64", "headers": null})).unwrap();
        assert_eq!(value, vec![0, 1, 2, 255]);
        let value = parse(json!({"value": "a\"bé"})).unwrap();
        assert_eq!(value, "a\"bé".as_bytes(), "escapes are decoded");
        for bad in [
            json!({"value": "not base64!", "value_encoding": "base64"}),
            json!({"value": "x", "value_encoding": "hex"}),
            json!({"value": 5}),
            json!({"key": "k"}),
            json!({"value": "x", "headers": {"a": 1}}),
            json!({"value": "x", "headers": ["a"]}),
            json!({"value": "x", "extra": true}),
        ] {
            assert!(parse(bad.clone()).is_err(), "{bad}");
        }
        assert!(new_messages(Vec::new()).is_err());
    }

    #[test]
    fn output_is_utf8_when_it_can_be_and_base64_otherwise() {
        let stored = StoredMessage {
            partition: 2,
            offset: Offset(7),
            key: Some(vec![0xff]),
            value: vec![0, 0xfe],
            headers: vec![("ok".into(), b"v".to_vec()), ("bin".into(), vec![0xff])],
            timestamp: 5,
        };
        let out = serde_json::to_value(PulledMessages(std::slice::from_ref(&stored))).unwrap();
        assert_eq!(
            out,
            json!([{
                "partition": 2, "offset": 7, "key": "/w==", "key_encoding": "base64",
                "value": "AP4=", "value_encoding": "base64", "headers": {"ok": "v"},
                "timestamp": 5
            }])
        );
        let text = StoredMessage {
            key: None,
            value: b"plain \"text\"".to_vec(),
            headers: Vec::new(),
            ..stored
        };
        let out = serde_json::to_value(PulledMessage::from(&text)).unwrap();
        assert_eq!(out["value"], "plain \"text\"");
        assert_eq!(out["value_encoding"], "utf8");
        assert_eq!(out["key"], serde_json::Value::Null);
        assert!(out.get("key_encoding").is_none());
    }
}
