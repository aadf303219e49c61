//! `broker consume TOPIC --subscription NAME`: pulls messages and prints their
//! values, one per line (or whole messages as JSON lines with `--json`).
//!
//! Without `--follow` it pulls until the subscription has nothing more (or
//! `--max` is reached) and exits. With `--follow` it long-polls until Ctrl-C.
//! It starts at the subscription's committed offsets, as a Kafka consumer that
//! joins its group does (the broker's in-memory position may be past messages
//! that a reader pulled and never handled). Offsets are committed only after the
//! messages are printed (`--commit`, always in follow mode): a consumer that dies
//! before printing gets the same messages again on its next run, never loses them.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use clap::{Args, ValueEnum};
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use super::client::{self, Api, ConnectArgs, REQUEST_TIMEOUT};
use super::error::ApiFailure;
use super::output;

/// The most messages one pull asks for.
pub const PULL_MAX: u64 = 1000;

use crate::http::WAIT_MS_MAX;

/// `broker consume`.
#[derive(Debug, Args)]
pub struct ConsumeArgs {
    /// The broker.
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// The topic.
    pub topic: String,
    /// The subscription to read through (its position is shared by every reader).
    #[arg(long, short = 's')]
    pub subscription: String,
    /// Create the subscription when it does not exist.
    #[arg(long)]
    pub create: bool,
    /// Where a created subscription starts [default: the broker's].
    #[arg(long, value_enum, requires = "create")]
    pub from: Option<StartArg>,
    /// Keep waiting for new messages until Ctrl-C (commits after printing).
    #[arg(long)]
    pub follow: bool,
    /// Stop after this many messages.
    #[arg(long)]
    pub max: Option<u64>,
    /// Commit the offsets of printed messages.
    #[arg(long)]
    pub commit: bool,
    /// Print whole messages (partition, offset, key, headers...) as JSON lines.
    #[arg(long)]
    pub json: bool,
    /// How long one long poll waits in follow mode, in ms.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(0..=WAIT_MS_MAX))]
    pub wait_ms: u64,
}

/// Where a new subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StartArg {
    /// At the oldest message kept.
    Earliest,
    /// After the newest message: only new ones.
    Latest,
}

impl StartArg {
    /// The value in the request body.
    pub fn as_str(self) -> &'static str {
        match self {
            StartArg::Earliest => "earliest",
            StartArg::Latest => "latest",
        }
    }
}

/// Runs `broker consume`.
pub fn run(args: ConsumeArgs) -> anyhow::Result<()> {
    client::name("topic", &args.topic)?;
    client::name("subscription", &args.subscription)?;
    let api = Api::connect(&args.connect, true)?;
    client::run(consume(&api, &args))
}

/// Creates a subscription; one that exists already is fine.
pub async fn create_subscription(
    api: &Api,
    topic: &str,
    name: &str,
    start: Option<StartArg>,
) -> anyhow::Result<bool> {
    let mut body = json!({ "name": name });
    if let Some(start) = start {
        body["start"] = json!(start.as_str());
    }
    match api
        .post(&format!("/v1/topics/{topic}/subscriptions"), &body)
        .await
    {
        Ok(_) => Ok(true),
        Err(error) if is_conflict(&error) => Ok(false),
        Err(error) => Err(error),
    }
}

/// Whether the error is a 409: the thing exists already.
pub fn is_conflict(error: &anyhow::Error) -> bool {
    error
        .downcast_ref::<ApiFailure>()
        .is_some_and(|failure| failure.status == 409)
}

async fn consume(api: &Api, args: &ConsumeArgs) -> anyhow::Result<()> {
    let (topic, sub) = (&args.topic, &args.subscription);
    if args.create {
        create_subscription(api, topic, sub, args.from).await?;
    }
    resume_from_committed(api, topic, sub).await?;
    let commit = args.commit || args.follow;
    let wait_ms = if args.follow { args.wait_ms } else { 0 };
    let mut interrupted = std::pin::pin!(tokio::signal::ctrl_c());
    let mut printed: u64 = 0;
    loop {
        let want = match args.max {
            Some(max) if printed >= max => break,
            Some(max) => (max - printed).min(PULL_MAX),
            None => PULL_MAX,
        };
        let pull = pull(api, topic, sub, want, wait_ms);
        let answer = tokio::select! {
            answer = pull => answer?,
            _ = &mut interrupted => break,
        };
        let messages = output::array(&answer, "messages")?;
        if messages.is_empty() {
            if args.follow {
                continue;
            }
            break;
        }
        print_messages(messages, args.json)?;
        if commit {
            commit_offsets(api, topic, sub, messages).await?;
        }
        printed += messages.len() as u64;
    }
    Ok(())
}

/// One pull of at most `max` messages, waiting up to `wait_ms` for the first.
pub async fn pull(
    api: &Api,
    topic: &str,
    sub: &str,
    max: u64,
    wait_ms: u64,
) -> anyhow::Result<Value> {
    let path =
        format!("/v1/topics/{topic}/subscriptions/{sub}/messages?max={max}&wait_ms={wait_ms}");
    let timeout = REQUEST_TIMEOUT + Duration::from_millis(wait_ms);
    api.request(Method::GET, &path, None, HeaderMap::new(), timeout)
        .await
}

/// Prints each message's value (base64 ones decoded) or, with `json`, the whole
/// message; one per line, flushed before any commit.
fn print_messages(messages: &[Value], json: bool) -> anyhow::Result<()> {
    let mut out = io::BufWriter::new(io::stdout().lock());
    for message in messages {
        if json {
            serde_json::to_writer(&mut out, message)?;
        } else {
            out.write_all(&value_bytes(message)?)?;
        }
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

/// A message's value as bytes: text as it is, base64 decoded.
pub fn value_bytes(message: &Value) -> anyhow::Result<Vec<u8>> {
    let value = message
        .get("value")
        .and_then(Value::as_str)
        .context("a message without a value")?;
    match message.get("value_encoding").and_then(Value::as_str) {
        Some("base64") => STANDARD
            .decode(value)
            .context("a message's base64 value does not decode"),
        _ => Ok(value.as_bytes().to_vec()),
    }
}

/// The commit body for pulled messages: per partition, the offset after the
/// last one (Kafka's convention: a committed offset is the next to read).
pub fn commit_body(messages: &[Value]) -> Value {
    let mut next: BTreeMap<u64, u64> = BTreeMap::new();
    for message in messages {
        let partition = message.get("partition").and_then(Value::as_u64);
        let offset = message.get("offset").and_then(Value::as_u64);
        if let (Some(partition), Some(offset)) = (partition, offset) {
            let entry = next.entry(partition).or_insert(0);
            *entry = (*entry).max(offset + 1);
        }
    }
    let offsets: Vec<Value> = next
        .into_iter()
        .map(|(partition, offset)| json!({"partition": partition, "offset": offset}))
        .collect();
    json!({ "offsets": offsets })
}

/// Moves the subscription's position back to its committed offsets, partition by
/// partition.
async fn resume_from_committed(api: &Api, topic: &str, sub: &str) -> anyhow::Result<()> {
    let base = format!("/v1/topics/{topic}/subscriptions/{sub}");
    let offsets = api.get(&format!("{base}/offsets")).await?;
    for entry in output::array(&offsets, "offsets")? {
        let partition = entry.get("partition").and_then(Value::as_u64);
        let committed = entry.get("committed").and_then(Value::as_u64);
        let (Some(partition), Some(committed)) = (partition, committed) else {
            anyhow::bail!(
                "the broker's answer about committed offsets has no partition or offset: {entry}"
            );
        };
        api.post(
            &format!("{base}/seek"),
            &json!({"partition": partition, "offset": committed}),
        )
        .await?;
    }
    Ok(())
}

async fn commit_offsets(
    api: &Api,
    topic: &str,
    sub: &str,
    messages: &[Value],
) -> anyhow::Result<()> {
    let path = format!("/v1/topics/{topic}/subscriptions/{sub}/commit");
    api.post(&path, &commit_body(messages)).await.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_name_the_next_offset_of_each_partition() {
        let messages = [
            json!({"partition": 1, "offset": 7}),
            json!({"partition": 0, "offset": 3}),
            json!({"partition": 1, "offset": 8}),
        ];
        assert_eq!(
            commit_body(&messages),
            json!({"offsets": [{"partition": 0, "offset": 4}, {"partition": 1, "offset": 9}]})
        );
    }

    #[test]
    fn values_are_printed_as_bytes() -> anyhow::Result<()> {
        assert_eq!(value_bytes(&json!({"value": "hi"}))?, b"hi");
        assert_eq!(
            value_bytes(&json!({"value": "/wA=", "value_encoding": "base64"}))?,
            [0xff, 0x00]
        );
        assert!(value_bytes(&json!({})).is_err());
        Ok(())
    }
}
