//! A fast path for the body almost every produce and send carries:
//! `{"messages": [{"value": "...", "key": "..."}, ...]}` with plain strings (no
//! escapes) and no other fields. It reads that shape straight into borrowed
//! [`MessageIn`]s, without serde's field matching per message. Anything else
//! (headers, encodings, `acks`, escapes, numbers, a second field of the same name,
//! bad UTF-8) gives `None`, and the caller parses with serde, whose answer then
//! counts; a property test checks that whenever this gives messages, serde gives
//! the same.

use std::borrow::Cow;

use super::body::MessageIn;

/// The messages of a body of the plain shape, or `None`.
pub fn plain_messages(body: &[u8]) -> Option<Vec<MessageIn<'_>>> {
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
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.bytes.get(self.at) {
            self.at += 1;
        }
    }

    /// Takes `byte` after optional whitespace.
    fn expect(&mut self, byte: u8) -> Option<()> {
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

    /// A string without escapes or control characters, as valid UTF-8.
    fn string(&mut self) -> Option<&'a str> {
        self.expect(b'"')?;
        let rest = self.bytes.get(self.at..)?;
        let len = memchr::memchr2(b'"', b'\\', rest)?;
        if rest.get(len) != Some(&b'"') {
            return None;
        }
        let raw = rest.get(..len)?;
        let text = match content(raw)? {
            // SAFETY: `content` found every byte of `raw` below 0x80: ASCII, which
            // is valid UTF-8.
            Content::Ascii => unsafe { std::str::from_utf8_unchecked(raw) },
            Content::Other => std::str::from_utf8(raw).ok()?,
        };
        self.at += len + 1;
        Some(text)
    }

    /// Takes the field name `quoted` (with its quotes, written without escapes) if
    /// it comes next (after whitespace). A name spelt with escapes is not taken:
    /// serde reads such a body.
    fn field(&mut self, quoted: &[u8]) -> bool {
        self.skip_whitespace();
        let found = self
            .bytes
            .get(self.at..)
            .is_some_and(|rest| rest.starts_with(quoted));
        if found {
            self.at += quoted.len();
        }
        found
    }

    /// `{"value": "...", "key": "..."}`, the key optional, in either order.
    fn message(&mut self) -> Option<MessageIn<'a>> {
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
        Some(MessageIn {
            key: key.map(Cow::Borrowed),
            value: Cow::Borrowed(value?),
            value_encoding: None,
            headers: Vec::new(),
        })
    }
}

/// What a string's bytes hold, besides no control character.
enum Content {
    /// ASCII only.
    Ascii,
    /// Some byte at or above 0x80: UTF-8 to validate.
    Other,
}

/// Whether a string's content is ASCII; `None` when it holds a control character,
/// which JSON does not allow raw. Read as signed, a control character and every
/// byte from 0x80 up are below 0x20, so one comparison per byte, over the whole
/// string without an early exit, settles the usual case: message values are most
/// of a produce body.
fn content(bytes: &[u8]) -> Option<Content> {
    if !bytes
        .iter()
        .fold(false, |seen, &b| seen | ((b as i8) < 0x20))
    {
        return Some(Content::Ascii);
    }
    if bytes.iter().any(|&b| b < 0x20) {
        return None;
    }
    Some(Content::Other)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body<'a> {
        #[serde(borrow)]
        messages: Vec<MessageIn<'a>>,
    }

    /// What serde makes of `body`, in a comparable form.
    fn by_serde(body: &[u8]) -> Option<Vec<(Option<String>, String)>> {
        let parsed: Body<'_> = serde_json::from_slice(body).ok()?;
        Some(comparable(&parsed.messages))
    }

    fn comparable(messages: &[MessageIn<'_>]) -> Vec<(Option<String>, String)> {
        messages
            .iter()
            .map(|m| {
                assert!(m.headers.is_empty() && m.value_encoding.is_none());
                (m.key.as_deref().map(str::to_owned), m.value.to_string())
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
        for other in [
            &br#"{"messages":[{"value":"a\"b"}]}"#[..],
            br#"{"messages":[{"value":"a","headers":{}}]}"#,
            br#"{"messages":[{"value":"YQ==","value_encoding":"base64"}]}"#,
            br#"{"messages":[{"value":"a"}],"acks":"none"}"#,
            br#"{"messages":[{"value":"a","value":"b"}]}"#,
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
            for at in 0..20 {
                let mut text = "a".repeat(at);
                text.push_str(special);
                text.push_str(&"b".repeat(20 - at));
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
        let message = prop::collection::vec((field, text), 0..4).prop_map(|fields| {
            let inner: Vec<String> = fields
                .iter()
                .map(|(name, text)| format!("\"{name}\" : \"{text}\""))
                .collect();
            format!("{{ {} }}", inner.join(","))
        });
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
