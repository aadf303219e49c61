//! What a bench run sends and when it stops: request bodies built once before
//! the clock starts, and a budget of requests (`--count`) and time
//! (`--duration`) that the workers draw tickets from.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::time::Instant;

/// Distinct bodies cycled through, so that consecutive requests do not carry
/// identical bytes (nothing on the way may shortcut them).
const BODY_VARIANTS: usize = 4;

/// The longest run: one hour, the default lifetime of the token it uses.
pub const DURATION_MAX: Duration = Duration::from_secs(3600);

/// The largest request body built, whatever the broker accepts.
pub const BODY_BYTES_MAX: usize = 64 << 20;

/// The JSON around one message's value in a body: `{"value":""},`.
const MESSAGE_JSON_BYTES: u64 = 13;

/// The characters of message values: plain ASCII, which JSON carries unescaped.
const VALUE_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// The request bodies of a run, ready to send.
#[derive(Debug, Clone)]
pub struct Bodies {
    /// Full batches, `batch` messages each.
    full: Vec<Bytes>,
    /// The last, shorter batch of a `--count` that is not a multiple of the
    /// batch size, with its message count.
    tail: Option<(Bytes, u64)>,
    /// Messages in a full batch.
    batch: u64,
}

impl Bodies {
    /// Bodies of `batch` messages of `message_size` bytes (and one tail batch
    /// for `count`), with `acks` when given. Fails when a body would exceed
    /// [`BODY_BYTES_MAX`].
    pub fn build(
        batch: u64,
        message_size: usize,
        count: Option<u64>,
        acks: Option<&str>,
    ) -> anyhow::Result<Bodies> {
        // Checked before anything is built: `{"value":"..."},` around each value.
        let estimate = batch.saturating_mul(message_size as u64 + MESSAGE_JSON_BYTES);
        if estimate > BODY_BYTES_MAX as u64 {
            anyhow::bail!(
                "a request of {batch} messages of {message_size} bytes would be about {estimate} \
                 bytes; the most is {BODY_BYTES_MAX}: lower --batch or --message-size"
            );
        }
        let mut random = XorShift(0x9E37_79B9_7F4A_7C15);
        let mut body = |messages: u64| -> anyhow::Result<Bytes> {
            let list: Vec<Value> = (0..messages)
                .map(|_| json!({ "value": random.text(message_size) }))
                .collect();
            let mut body = json!({ "messages": list });
            if let Some(acks) = acks {
                body["acks"] = json!(acks);
            }
            Ok(Bytes::from(serde_json::to_vec(&body)?))
        };
        let full = (0..BODY_VARIANTS)
            .map(|_| body(batch))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let tail = match count.map(|count| count % batch) {
            Some(rest) if rest > 0 => Some((body(rest)?, rest)),
            _ => None,
        };
        Ok(Bodies { full, tail, batch })
    }

    /// The body of request number `index` of `requests_total`, and its message
    /// count.
    pub fn get(&self, index: u64, requests_total: Option<u64>) -> (Bytes, u64) {
        if let (Some((tail, messages)), Some(total)) = (&self.tail, requests_total)
            && index + 1 == total
        {
            return (tail.clone(), *messages);
        }
        let variant = (index % self.full.len() as u64) as usize;
        let body = self.full.get(variant).cloned().unwrap_or_default();
        (body, self.batch)
    }

    /// The size of a full body, for the report.
    pub fn body_bytes(&self) -> usize {
        self.full.first().map_or(0, Bytes::len)
    }
}

/// Requests left to send: a fixed number (`--count`), a deadline
/// (`--duration`), or both (whichever ends first); and a stop switch for
/// failures.
#[derive(Debug)]
pub struct Budget {
    /// The number of requests, when counted.
    pub requests_total: Option<u64>,
    /// When no new request starts.
    pub deadline: Option<Instant>,
    /// The next request's number.
    next: AtomicU64,
    /// Set on a failure that ends the run.
    stopped: AtomicBool,
}

impl Budget {
    /// A budget for `count` messages in batches of `batch`, over `duration`.
    pub fn new(count: Option<u64>, batch: u64, duration: Option<Duration>) -> Budget {
        Budget {
            requests_total: count.map(|count| count.div_ceil(batch)),
            deadline: duration.map(|d| Instant::now() + d),
            next: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
        }
    }

    /// The number of the next request to send, `None` when the budget is spent.
    pub fn take(&self) -> Option<u64> {
        if self.is_over() {
            return None;
        }
        let index = self.next.fetch_add(1, Ordering::Relaxed);
        match self.requests_total {
            Some(total) if index >= total => None,
            _ => Some(index),
        }
    }

    /// Whether time is up or the run was stopped.
    pub fn is_over(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
            || self
                .deadline
                .is_some_and(|deadline| Instant::now() >= deadline)
    }

    /// Ends the run: no new request starts.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
    }
}

/// Parses `10s`, `500ms`, `2m`, `1h`, or a plain number of seconds; at most
/// [`DURATION_MAX`].
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 10s, 500ms or 2m"))?;
    let seconds = match unit.trim() {
        "" | "s" => number,
        "ms" => number / 1000.0,
        "m" | "min" => number * 60.0,
        "h" => number * 3600.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?}; use ms, s, m or h"
            ));
        }
    };
    let duration = Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))?;
    if duration.is_zero() || duration > DURATION_MAX {
        return Err(format!(
            "{text:?} is out of range: more than 0 and at most {} s",
            DURATION_MAX.as_secs()
        ));
    }
    Ok(duration)
}

/// A small, fast pseudo-random generator (xorshift64) for message contents.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// `len` characters of [`VALUE_ALPHABET`].
    fn text(&mut self, len: usize) -> String {
        (0..len)
            .map(|_| {
                let index = (self.next() % VALUE_ALPHABET.len() as u64) as usize;
                char::from(VALUE_ALPHABET.get(index).copied().unwrap_or(b'x'))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_and_bounds() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        for bad in ["", "s", "0s", "2h", "10x", "-1s", "1e9"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bodies_hold_the_batch_and_the_tail_makes_the_count_exact() -> anyhow::Result<()> {
        let bodies = Bodies::build(100, 10, Some(250), Some("leader"))?;
        let budget = Budget::new(Some(250), 100, None);
        assert_eq!(budget.requests_total, Some(3));
        let mut total = 0;
        while let Some(index) = budget.take() {
            let (body, messages) = bodies.get(index, budget.requests_total);
            let parsed: Value = serde_json::from_slice(&body)?;
            let list = parsed["messages"].as_array().map_or(0, Vec::len) as u64;
            assert_eq!(list, messages);
            assert_eq!(parsed["acks"], "leader");
            assert_eq!(
                parsed["messages"][0]["value"].as_str().map(str::len),
                Some(10)
            );
            total += messages;
        }
        assert_eq!(total, 250);
        assert_eq!(budget.take(), None);
        Ok(())
    }

    #[test]
    fn a_stopped_or_expired_budget_gives_no_more_tickets() {
        let budget = Budget::new(None, 10, Some(Duration::from_secs(60)));
        assert_eq!(budget.take(), Some(0));
        budget.stop();
        assert_eq!(budget.take(), None);
        let expired = Budget::new(None, 10, Some(Duration::ZERO));
        assert_eq!(expired.take(), None);
    }

    #[test]
    fn oversized_bodies_are_refused() {
        assert!(Bodies::build(1000, 1 << 20, None, None).is_err());
    }
}
