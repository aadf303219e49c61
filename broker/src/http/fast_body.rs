//! A fast path for the body almost every produce and send carries:
//! `{"messages": [{"value": "...", "key": "..."}, ...]}` with plain strings (no
//! escapes) and no other fields. It reads that shape straight into borrowed
//! [`NewMessage`]s, the messages to store, without serde's field matching per
//! message. Anything else (headers, encodings, `acks`, escapes, numbers, a second
//! field of the same name, bad UTF-8) gives `None`, and the caller parses with
//! serde, whose answer then counts; a property test checks that whenever this
//! gives messages, serde gives the same.

use std::borrow::Cow;

use crate::message::NewMessage;

/// The messages of a body of the plain shape, or `None`.
pub fn plain_messages(body: &[u8]) -> Option<Vec<NewMessage<'_>>> {
    let mut s = Scanner { bytes: body, at: 0 };
    s.expect(b'{')?;
    if s.string()? != "messages" {
        return None;
    }
    s.expect(b':')?;
    s.expect(b'[')?;
    let mut messages = Vec::with_capacity(body.len() / 64 + 1);
    if !s.next_is(b']') {
        loop {
            messages.push(s.message()?);
            if !s.comma_or(b']')? {
                break;
            }
        }
    }
    s.expect(b'}')?;
    s.skip_whitespace();
    (s.at == body.len()).then_some(messages)
}

struct Scanner<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Scanner<'a> {
    fn skip_whitespace(&mut self) {
        // Every JSON whitespace byte is at most a space: one comparison passes the
        // usual token.
        if self.bytes.get(self.at).is_none_or(|&b| b > b' ') {
            return;
        }
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.bytes.get(self.at) {
            self.at += 1;
        }
    }

    /// Takes `byte` after optional whitespace.
    fn expect(&mut self, byte: u8) -> Option<()> {
        // Bodies from programs seldom hold whitespace between tokens.
        if self.bytes.get(self.at) == Some(&byte) {
            self.at += 1;
            return Some(());
        }
        self.skip_whitespace();
        if self.bytes.get(self.at) == Some(&byte) {
            self.at += 1;
            return Some(());
        }
        None
    }

    /// Takes `byte` if it comes next (after whitespace).
    fn next_is(&mut self, byte: u8) -> bool {
        self.expect(byte).is_some()
    }

    /// After a list item: true on `,` (another follows), false on `close`.
    fn comma_or(&mut self, close: u8) -> Option<bool> {
        if self.next_is(b',') {
            return Some(true);
        }
        self.expect(close).map(|()| false)
    }

    /// Takes `token` if the bytes at hand start with it (no whitespace skipped).
    fn take(&mut self, token: &[u8]) -> bool {
        let found = self
            .bytes
            .get(self.at..)
            .is_some_and(|rest| rest.starts_with(token));
        if found {
            self.at += token.len();
        }
        found
    }

    /// A string without escapes or control characters, as valid UTF-8.
    fn string(&mut self) -> Option<&'a str> {
        self.expect(b'"')?;
        self.string_rest()
    }

    /// The rest of a string whose opening quote was taken: [`Scanner::string`].
    fn string_rest(&mut self) -> Option<&'a str> {
        let rest = self.bytes.get(self.at..)?;
        // One pass finds the closing quote of an ASCII string; any other special
        // byte first leaves the string to the careful reading below.
        let stop = first_special(rest)?;
        if rest.get(stop) == Some(&b'"') {
            let raw = rest.get(..stop)?;
            // SAFETY: `first_special` found no byte at or above 0x80 before `stop`:
            // `raw` is ASCII, which is valid UTF-8.
            let text = unsafe { std::str::from_utf8_unchecked(raw) };
            self.at += stop + 1;
            return Some(text);
        }
        // A backslash, a control character or a non-ASCII byte came first.
        let len = memchr::memchr2(b'"', b'\\', rest)?;
        if rest.get(len) != Some(&b'"') {
            return None;
        }
        let raw = rest.get(..len)?;
        // JSON allows no raw control character; the rest must be valid UTF-8.
        if raw.iter().any(|&b| b < 0x20) {
            return None;
        }
        let text = std::str::from_utf8(raw).ok()?;
        self.at += len + 1;
        Some(text)
    }

    /// Takes the field name `quoted` (with its quotes, written without escapes) if
    /// it comes next (after whitespace). A name spelt with escapes is not taken:
    /// serde reads such a body.
    fn field(&mut self, quoted: &[u8]) -> bool {
        self.skip_whitespace();
        self.take(quoted)
    }

    /// `{"value": "...", "key": "..."}`, the key optional, in either order.
    fn message(&mut self) -> Option<NewMessage<'a>> {
        let start = self.at;
        if let Some(message) = self.compact_message() {
            return Some(message);
        }
        self.at = start;
        self.expect(b'{')?;
        let mut value = None;
        let mut key = None;
        if !self.next_is(b'}') {
            loop {
                let slot = if self.field(b"\"value\"") {
                    &mut value
                } else if self.field(b"\"key\"") {
                    &mut key
                } else {
                    return None;
                };
                self.expect(b':')?;
                let text = self.string()?;
                if slot.replace(text).is_some() {
                    return None;
                }
                if !self.comma_or(b'}')? {
                    break;
                }
            }
        }
        Some(NewMessage {
            key: key.map(Cow::Borrowed),
            value: Cow::Borrowed(value?.as_bytes()),
            headers: Vec::new(),
        })
    }

    /// A message in one of the shapes programs write, without whitespace:
    /// `{"key":"..","value":".."}`, `{"value":".."}` or `{"value":"..","key":".."}`,
    /// each run of punctuation and field name compared whole. `None` for anything
    /// else, with the position left anywhere: [`Scanner::message`] then reads the
    /// message again the general way.
    fn compact_message(&mut self) -> Option<NewMessage<'a>> {
        let (key, value) = if self.take(b"{\"key\":\"") {
            let key = self.string_rest()?;
            if !self.take(b",\"value\":\"") {
                return None;
            }
            (Some(key), self.string_rest()?)
        } else if self.take(b"{\"value\":\"") {
            let value = self.string_rest()?;
            let key = if self.take(b",\"key\":\"") {
                Some(self.string_rest()?)
            } else {
                None
            };
            (key, value)
        } else {
            return None;
        };
        if !self.take(b"}") {
            return None;
        }
        Some(NewMessage {
            key: key.map(Cow::Borrowed),
            value: Cow::Borrowed(value.as_bytes()),
            headers: Vec::new(),
        })
    }
}

/// Whether a byte ends or interrupts a plain ASCII string: a quote, a backslash, a
/// control character or a byte of a longer UTF-8 sequence. Read as signed, a
/// control character and every byte from 0x80 up are below 0x20.
fn is_special(byte: u8) -> bool {
    byte == b'"' || byte == b'\\' || (byte as i8) < 0x20
}

/// Where the first [`is_special`] byte of `bytes` is, if any: sixteen bytes per
/// step on x86-64.
#[cfg(target_arch = "x86_64")]
fn first_special(bytes: &[u8]) -> Option<usize> {
    // SAFETY: SSE2 is part of x86-64 itself: every processor that runs this
    // code has it.
    unsafe { first_special_sse2(bytes) }
}

/// [`first_special`] with SSE2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse2")]
fn first_special_sse2(bytes: &[u8]) -> Option<usize> {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_cmplt_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };
    let quote = _mm_set1_epi8(b'"' as i8);
    let backslash = _mm_set1_epi8(b'\\' as i8);
    let space = _mm_set1_epi8(0x20);
    let mut chunks = bytes.chunks_exact(16);
    let mut at = 0;
    for chunk in &mut chunks {
        // SAFETY: `chunk` holds 16 bytes, what the unaligned load reads.
        let v = unsafe { _mm_loadu_si128(chunk.as_ptr().cast::<__m128i>()) };
        let hits = _mm_or_si128(
            _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash)),
            _mm_cmplt_epi8(v, space),
        );
        let mask = _mm_movemask_epi8(hits);
        if mask != 0 {
            return Some(at + mask.trailing_zeros() as usize);
        }
        at += 16;
    }
    let tail = chunks.remainder();
    tail.iter().position(|&b| is_special(b)).map(|i| at + i)
}

/// Where the first [`is_special`] byte of `bytes` is, if any.
#[cfg(not(target_arch = "x86_64"))]
fn first_special(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| is_special(b))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde::Deserialize;

    use super::*;
    use crate::http::body::MessageIn;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body<'a> {
        #[serde(borrow)]
        messages: Vec<MessageIn<'a>>,
    }

    /// What serde makes of `body`, in a comparable form.
    fn by_serde(body: &[u8]) -> Option<Vec<(Option<String>, String)>> {
        let parsed: Body<'_> = serde_json::from_slice(body).ok()?;
        let messages: Vec<NewMessage<'_>> = parsed
            .messages
            .into_iter()
            .enumerate()
            .map(|(i, m)| m.into_new(i))
            .collect::<Result<_, _>>()
            .ok()?;
        Some(comparable(&messages))
    }

    fn comparable(messages: &[NewMessage<'_>]) -> Vec<(Option<String>, String)> {
        messages
            .iter()
            .map(|m| {
                assert!(m.headers.is_empty());
                let value = String::from_utf8(m.value.to_vec()).unwrap();
                (m.key.as_deref().map(str::to_owned), value)
            })
            .collect()
    }

    #[test]
    fn the_plain_shape_is_read_and_anything_else_left_to_serde() {
        let plain = r#" { "messages" : [ {"value":"a"}, {"key":"k","value":"b"},
            {"value":"hé", "key":""} ] } "#;
        let messages = plain_messages(plain.as_bytes()).unwrap();
        assert_eq!(
            comparable(&messages),
            vec![
                (None, "a".to_owned()),
                (Some("k".to_owned()), "b".to_owned()),
                (Some(String::new()), "hé".to_owned()),
            ]
        );
        assert!(matches!(messages[0].value, Cow::Borrowed(_)));
        assert_eq!(plain_messages(br#"{"messages":[]}"#).unwrap().len(), 0);
        // The compact shapes, and compact messages that turn out otherwise part way.
        let compact = r#"{"messages":[{"key":"k","value":"a"},{"value":"b"},{"value":"c","key":""},{"key":"k2","value":"é"},{"value":"d" ,"key":"k3"},{"key":"k4","value":"e" }]}"#;
        assert_eq!(
            comparable(&plain_messages(compact.as_bytes()).unwrap()),
            vec![
                (Some("k".to_owned()), "a".to_owned()),
                (None, "b".to_owned()),
                (Some(String::new()), "c".to_owned()),
                (Some("k2".to_owned()), "é".to_owned()),
                (Some("k3".to_owned()), "d".to_owned()),
                (Some("k4".to_owned()), "e".to_owned()),
            ]
        );
        for other in [
            &br#"{"messages":[{"value":"a\"b"}]}"#[..],
            br#"{"messages":[{"value":"a","headers":{}}]}"#,
            br#"{"messages":[{"value":"YQ==","value_encoding":"base64"}]}"#,
            br#"{"messages":[{"value":"a"}],"acks":"none"}"#,
            br#"{"messages":[{"value":"a","value":"b"}]}"#,
            br#"{"messages":[{"key":"a","value":"b","key":"c"}]}"#,
            br#"{"messages":[{"value":"a","key":"b","key":"c"}]}"#,
            br#"{"messages":[{"value":"a","key":"b","value":"c"}]}"#,
            br#"{"messages":[{"key":"a","key":"b"}]}"#,
            br#"{"messages":[{"key":"a","value":"b"c"}]}"#,
            br#"{"messages":[{"key":"k"}]}"#,
            br#"{"messages":[{"value":null}]}"#,
            br#"{"messages":[{"value":"a"},]}"#,
            br#"{"messages":[{"value":"a"}]} x"#,
            br#"{"messages":[{"value":"a"}]"#,
            b"{\"messages\":[{\"value\":\"a\tb\"}]}",
            b"{\"messages\":[{\"value\":\"\xff\"}]}",
            br#"{"messages":[{"value":"a"}]}{}"#,
            br#"{"messages":[{"val\u0075e":"a"}]}"#,
            br#"{"messages":[{"valuex":"a"}]}"#,
        ] {
            assert!(
                plain_messages(other).is_none(),
                "{}",
                String::from_utf8_lossy(other)
            );
        }
    }

    #[test]
    fn strings_are_read_alike_wherever_a_special_byte_falls() {
        for special in ["\"", "\\\\", "\u{1}", "\u{1f}", "é", "\u{7f}", "€"] {
            for at in 0..40 {
                let mut text = "a".repeat(at);
                text.push_str(special);
                text.push_str(&"b".repeat(40 - at));
                let quoted = format!("\"{text}\"");
                let body = format!("{{\"messages\":[{{\"value\":{quoted}}}]}}");
                let fast = plain_messages(body.as_bytes()).map(|m| comparable(&m));
                // A raw quote ends the string early and leaves the body malformed.
                let parsed = by_serde(body.as_bytes());
                if let Some(fast) = &fast {
                    assert_eq!(Some(fast), parsed.as_ref(), "{body}");
                }
                let plain = !matches!(special, "\"" | "\\\\" | "\u{1}" | "\u{1f}");
                assert_eq!(fast.is_some(), plain, "{body}");
            }
        }
    }

    /// Bodies near the plain shape: plain ones, and ones with one byte changed,
    /// dropped or added, which serde may or may not accept.
    fn bodies() -> impl Strategy<Value = Vec<u8>> {
        let text = prop_oneof![
            Just(String::new()),
            "[a-z0-9 ]{0,12}",
            "\\PC{0,6}",
            Just("a\\\"b".to_owned()),
            Just("\\u00e9".to_owned()),
            "[\\x00-\\x1fa]{1,3}",
        ];
        let field = prop_oneof![
            4 => Just("value"),
            3 => Just("key"),
            1 => Just("headers"),
            1 => Just("value_encoding"),
            1 => Just("Value"),
        ];
        // Spaced, or compact as programs write it (the shapes the compact reading
        // takes whole).
        let message = (prop::collection::vec((field, text), 0..4), any::<bool>()).prop_map(
            |(fields, compact)| {
                let inner: Vec<String> = fields
                    .iter()
                    .map(|(name, text)| {
                        if compact {
                            format!("\"{name}\":\"{text}\"")
                        } else {
                            format!("\"{name}\" : \"{text}\"")
                        }
                    })
                    .collect();
                if compact {
                    format!("{{{}}}", inner.join(","))
                } else {
                    format!("{{ {} }}", inner.join(","))
                }
            },
        );
        let body =
            (prop::collection::vec(message, 0..5), any::<bool>()).prop_map(|(messages, spaces)| {
                let sep = if spaces { ",\n " } else { "," };
                format!("{{\"messages\":[{}]}}", messages.join(sep)).into_bytes()
            });
        (body, any::<u16>(), any::<u8>(), 0..4u8).prop_map(|(mut bytes, at, byte, how)| {
            let at = usize::from(at) % (bytes.len() + 1);
            match how {
                0 => {}
                1 if at < bytes.len() => bytes[at] = byte,
                2 if at < bytes.len() => {
                    bytes.remove(at);
                }
                _ => bytes.insert(at, byte),
            }
            bytes
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        #[test]
        fn the_wide_search_finds_the_first_special_byte(
            bytes in prop::collection::vec(prop_oneof![
                8 => b'a'..=b'z',
                1 => any::<u8>(),
            ], 0..80)
        ) {
            prop_assert_eq!(
                first_special(&bytes),
                bytes.iter().position(|&b| is_special(b))
            );
        }

        #[test]
        fn whatever_the_fast_path_reads_serde_reads_the_same(body in bodies()) {
            if let Some(messages) = plain_messages(&body) {
                prop_assert_eq!(
                    Some(comparable(&messages)),
                    by_serde(&body),
                    "{}",
                    String::from_utf8_lossy(&body)
                );
            }
        }
    }
}
