//! Messages from stdin, one per line, gathered into batches for `produce` and
//! `queue send`: a batch closes at [`BatchLimits::lines_max`] lines,
//! [`BatchLimits::bytes_max`] bytes, or [`BatchLimits::linger`] after its first
//! line, whichever comes first. So a pipe of a million lines goes out in full
//! batches, and a line typed at a terminal goes out at once (50 ms later).
//!
//! A thread reads stdin (blocking) into a bounded channel; the async side takes
//! batches from it while the previous batch is on the wire.

use std::io::{self, BufRead, Read};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The longest line read as one message. With a batch's other bytes it stays
/// under the broker's default body limit of 8 MiB, even once escaped as JSON.
pub const LINE_BYTES_MAX: usize = 1 << 20;

/// Lines read ahead of the batch being sent.
const READ_AHEAD_LINES: usize = 1024;

/// When a batch is complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// The most lines in one batch.
    pub lines_max: usize,
    /// The most line bytes in one batch (a longer single line goes alone).
    pub bytes_max: usize,
    /// How long a batch waits for more lines after its first.
    pub linger: Duration,
}

impl Default for BatchLimits {
    /// 500 lines, 1 MiB, 50 ms.
    fn default() -> BatchLimits {
        BatchLimits {
            lines_max: 500,
            bytes_max: 1 << 20,
            linger: Duration::from_millis(50),
        }
    }
}

/// A line, or why reading stopped.
type Item = Result<Vec<u8>, String>;

/// Reads `reader` line by line on a thread of its own and hands out batches.
#[derive(Debug)]
pub struct LineBatcher {
    /// Lines from the reading thread; closed at the end of input.
    lines: mpsc::Receiver<Item>,
    /// A line (or error) taken from the channel that did not fit the last batch.
    pending: Option<Item>,
    /// When a batch is complete.
    limits: BatchLimits,
}

impl LineBatcher {
    /// Starts reading `reader` (stdin, or a test's bytes).
    pub fn spawn(reader: impl BufRead + Send + 'static, limits: BatchLimits) -> LineBatcher {
        let (sender, lines) = mpsc::channel(READ_AHEAD_LINES);
        std::thread::spawn(move || read_lines(reader, &sender));
        LineBatcher {
            lines,
            pending: None,
            limits,
        }
    }

    /// The next batch, `None` at the end of input. A read error comes after the
    /// lines read before it have been handed out.
    pub async fn next_batch(&mut self) -> anyhow::Result<Option<Vec<Vec<u8>>>> {
        let first = match self.pending.take() {
            Some(item) => item,
            None => match self.lines.recv().await {
                Some(item) => item,
                None => return Ok(None),
            },
        };
        let first = first.map_err(anyhow::Error::msg)?;
        let deadline = Instant::now() + self.limits.linger;
        let mut bytes = first.len();
        let mut batch = vec![first];
        while batch.len() < self.limits.lines_max {
            let item = match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(item)) => item,
                Ok(None) | Err(_) => break,
            };
            match item {
                Ok(line) if bytes + line.len() <= self.limits.bytes_max => {
                    bytes += line.len();
                    batch.push(line);
                }
                other => {
                    self.pending = Some(other);
                    break;
                }
            }
        }
        Ok(Some(batch))
    }
}

/// The reading thread: sends each line without its `\n` (or `\r\n`) until the
/// end of input, a read error, a line over [`LINE_BYTES_MAX`], or the receiver
/// going away.
fn read_lines(mut reader: impl BufRead, sender: &mpsc::Sender<Item>) {
    for number in 1u64.. {
        let mut line = Vec::new();
        let read = (&mut reader)
            .take(LINE_BYTES_MAX as u64 + 2)
            .read_until(b'\n', &mut line);
        let item = match read {
            Ok(0) => return,
            Ok(_) => {
                if line.last() == Some(&b'\n') {
                    line.pop();
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                }
                if line.len() > LINE_BYTES_MAX {
                    Err(format!(
                        "line {number} of stdin is longer than {LINE_BYTES_MAX} bytes; \
                         nothing from it on was sent"
                    ))
                } else {
                    Ok(line)
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => Err(format!("cannot read stdin at line {number}: {e}")),
        };
        let stop = item.is_err();
        if sender.blocking_send(item).is_err() || stop {
            return;
        }
    }
}

/// What each message of a batch carries besides its line.
#[derive(Debug, Clone, Default)]
pub struct MessageTemplate {
    /// The routing key of every message.
    pub key: Option<String>,
    /// Application headers of every message.
    pub headers: Map<String, Value>,
}

impl MessageTemplate {
    /// The API's message object for `line`: UTF-8 text as it is, other bytes in
    /// base64 with `"value_encoding": "base64"`.
    pub fn message(&self, line: &[u8]) -> Value {
        let mut message = Map::new();
        if let Some(key) = &self.key {
            message.insert("key".to_owned(), Value::String(key.clone()));
        }
        match std::str::from_utf8(line) {
            Ok(text) => {
                message.insert("value".to_owned(), Value::String(text.to_owned()));
            }
            Err(_) => {
                message.insert("value".to_owned(), Value::String(STANDARD.encode(line)));
                message.insert(
                    "value_encoding".to_owned(),
                    Value::String("base64".to_owned()),
                );
            }
        }
        if !self.headers.is_empty() {
            message.insert("headers".to_owned(), Value::Object(self.headers.clone()));
        }
        Value::Object(message)
    }

    /// `{"messages": [...]}` for a batch of lines, plus `extra` fields (`acks`).
    pub fn body(&self, lines: &[Vec<u8>], extra: &[(&str, Value)]) -> Value {
        let messages = lines.iter().map(|line| self.message(line)).collect();
        let mut body = Map::new();
        body.insert("messages".to_owned(), Value::Array(messages));
        for (name, value) in extra {
            body.insert((*name).to_owned(), value.clone());
        }
        Value::Object(body)
    }
}

/// Parses `NAME=VALUE` (a `--header` flag).
pub fn parse_header(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
        _ => Err(format!("{text:?} is not NAME=VALUE")),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use serde_json::json;

    use super::*;

    fn limits(lines_max: usize, bytes_max: usize, linger_ms: u64) -> BatchLimits {
        BatchLimits {
            lines_max,
            bytes_max,
            linger: Duration::from_millis(linger_ms),
        }
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    async fn sizes(batcher: &mut LineBatcher) -> anyhow::Result<Vec<usize>> {
        let mut sizes = Vec::new();
        while let Some(batch) = batcher.next_batch().await? {
            sizes.push(batch.len());
        }
        Ok(sizes)
    }

    #[test]
    fn a_full_pipe_goes_in_full_batches() -> anyhow::Result<()> {
        let input: String = (0..1200).map(|i| format!("line {i}\n")).collect();
        runtime().block_on(async {
            let mut batcher = LineBatcher::spawn(Cursor::new(input), limits(500, 1 << 20, 1000));
            let first = batcher.next_batch().await?.unwrap_or_default();
            assert_eq!(first.first().map(Vec::as_slice), Some(&b"line 0"[..]));
            assert_eq!(first.len(), 500);
            assert_eq!(sizes(&mut batcher).await?, [500, 200]);
            Ok(())
        })
    }

    #[test]
    fn bytes_close_a_batch_and_the_line_that_did_not_fit_starts_the_next() -> anyhow::Result<()> {
        let input = "aaaa\nbbbb\ncccc\ndddddddddddd\ne\n";
        runtime().block_on(async {
            let mut batcher = LineBatcher::spawn(Cursor::new(input), limits(100, 10, 1000));
            let mut batches = Vec::new();
            while let Some(batch) = batcher.next_batch().await? {
                batches.push(batch);
            }
            let text: Vec<Vec<String>> = batches
                .iter()
                .map(|b| {
                    b.iter()
                        .map(|l| String::from_utf8_lossy(l).into_owned())
                        .collect()
                })
                .collect();
            assert_eq!(
                text,
                [
                    vec!["aaaa", "bbbb"],
                    vec!["cccc"],
                    vec!["dddddddddddd"],
                    vec!["e"]
                ]
            );
            Ok(())
        })
    }

    #[test]
    fn a_slow_writer_gets_a_batch_per_linger() -> anyhow::Result<()> {
        let (reader, mut writer) = std::io::pipe()?;
        runtime().block_on(async {
            let mut batcher =
                LineBatcher::spawn(io::BufReader::new(reader), limits(500, 1 << 20, 30));
            use std::io::Write as _;
            writer.write_all(b"one\ntwo\n")?;
            let first = batcher.next_batch().await?.unwrap_or_default();
            assert_eq!(first, [b"one".to_vec(), b"two".to_vec()]);
            writer.write_all(b"three\r\n")?;
            drop(writer);
            assert_eq!(batcher.next_batch().await?, Some(vec![b"three".to_vec()]));
            assert_eq!(batcher.next_batch().await?, None);
            Ok(())
        })
    }

    #[test]
    fn a_too_long_line_ends_the_input_after_the_lines_before_it() -> anyhow::Result<()> {
        let mut input = b"ok\n".to_vec();
        input.extend(vec![b'x'; LINE_BYTES_MAX + 1]);
        input.extend(b"\nnever\n");
        runtime().block_on(async {
            let mut batcher = LineBatcher::spawn(Cursor::new(input), limits(500, 1 << 30, 1000));
            assert_eq!(batcher.next_batch().await?, Some(vec![b"ok".to_vec()]));
            let error = batcher.next_batch().await.unwrap_err().to_string();
            assert!(error.contains("line 2"), "{error}");
            Ok(())
        })
    }

    #[test]
    fn messages_carry_text_or_base64_with_key_and_headers() {
        let mut template = MessageTemplate {
            key: Some("k".to_owned()),
            ..MessageTemplate::default()
        };
        assert_eq!(template.message(b"hi"), json!({"key": "k", "value": "hi"}));
        template.key = None;
        template.headers.insert("h".to_owned(), json!("v"));
        assert_eq!(
            template.message(&[0xff, 0x00]),
            json!({"value": "/wA=", "value_encoding": "base64", "headers": {"h": "v"}})
        );
        let body = template.body(&[b"a".to_vec()], &[("acks", json!("all"))]);
        assert_eq!(
            body,
            json!({"messages": [{"value": "a", "headers": {"h": "v"}}], "acks": "all"})
        );
        assert_eq!(
            parse_header("a=b=c"),
            Ok(("a".to_owned(), "b=c".to_owned()))
        );
        assert!(parse_header("=x").is_err());
        assert!(parse_header("x").is_err());
    }
}
