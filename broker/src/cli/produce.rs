//! `broker produce TOPIC [MESSAGE...]`: each argument after the topic, or else
//! each line of stdin, is a message, sent in batches (see [`super::lines`]) one
//! request at a time, so messages keep their order. Each
//! batch carries an `Idempotency-Key`, so a batch whose answer was lost (a
//! timeout, a broken connection, a 503) is sent again without duplicating it.

use std::io::BufRead;
use std::time::Duration;

use clap::{Args, ValueEnum};
use reqwest::Method;
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{Map, Value};

use super::client::{self, Api, ConnectArgs, REQUEST_TIMEOUT};
use super::error::{ApiFailure, TransportError};
use super::lines::{self, BatchLimits, LineBatcher, MessageTemplate};
use super::output;

/// How often a batch is sent before its failure is final.
const SEND_ATTEMPTS_MAX: u32 = 5;

/// The wait before the first resend; it doubles with each.
const RESEND_BACKOFF_FIRST: Duration = Duration::from_millis(100);

/// Random bytes naming one run in its batches' idempotency keys.
const RUN_ID_BYTES: usize = 12;

/// `broker produce`.
#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// The broker.
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// The topic.
    pub topic: String,
    /// Messages to send, one per argument [default: each line of stdin].
    pub messages: Vec<String>,
    /// The routing key of every message (same key, same partition, in order).
    #[arg(long)]
    pub key: Option<String>,
    /// A header of every message, NAME=VALUE; repeatable.
    #[arg(long = "header", short = 'H', value_parser = lines::parse_header)]
    pub headers: Vec<(String, String)>,
    /// When the broker answers [default: the broker's, all].
    #[arg(long, value_enum)]
    pub acks: Option<AcksArg>,
    /// The most lines per request.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub batch_lines: u32,
    /// How long a request waits for more lines after its first, in ms.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(0..=10_000))]
    pub linger_ms: u64,
}

/// `acks` of a produce request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AcksArg {
    /// After every in-sync replica has the messages.
    All,
    /// After the leader stored them as the topic's durability says.
    Leader,
    /// After the leader wrote them, without waiting for the disk.
    None,
}

impl AcksArg {
    /// The value in the request body.
    pub fn as_str(self) -> &'static str {
        match self {
            AcksArg::All => "all",
            AcksArg::Leader => "leader",
            AcksArg::None => "none",
        }
    }
}

/// Where lines go, and in what they are wrapped.
pub struct Destination {
    /// `/v1/topics/{t}/messages` or `/v1/queues/{q}/messages`.
    pub path: String,
    /// `/v1/topics/{t}` or `/v1/queues/{q}`: looked up when there was nothing to
    /// send, so that a missing one is still an error.
    pub resource: String,
    /// `topic "t"` or `queue "q"`, for messages.
    pub what: String,
    /// Key and headers of every message.
    pub template: MessageTemplate,
    /// Other body fields (`acks`).
    pub extra: Vec<(&'static str, Value)>,
}

/// Runs `broker produce`.
pub fn run(args: ProduceArgs) -> anyhow::Result<()> {
    let topic = client::name("topic", &args.topic)?;
    let api = Api::connect(&args.connect, true)?;
    let destination = Destination {
        path: format!("/v1/topics/{topic}/messages"),
        resource: format!("/v1/topics/{topic}"),
        what: format!("topic {topic:?}"),
        template: template(args.key, args.headers),
        extra: args
            .acks
            .map(|acks| ("acks", Value::String(acks.as_str().to_owned())))
            .into_iter()
            .collect(),
    };
    let limits = BatchLimits {
        lines_max: args.batch_lines as usize,
        linger: Duration::from_millis(args.linger_ms),
        ..BatchLimits::default()
    };
    let input = input(args.messages)?;
    client::run(send_lines(&api, &destination, limits, input))
}

/// Where the messages come from: the arguments, one message each, or else the
/// lines of stdin. An argument is one line, as a message from stdin is.
pub fn input(messages: Vec<String>) -> anyhow::Result<Box<dyn BufRead + Send>> {
    if messages.is_empty() {
        return Ok(Box::new(std::io::BufReader::new(std::io::stdin())));
    }
    if let Some(index) = messages.iter().position(|m| m.contains(['\n', '\r'])) {
        anyhow::bail!(
            "message {} holds a line break: each message is one line, as on stdin",
            index + 1
        );
    }
    let mut bytes = messages.join("\n").into_bytes();
    bytes.push(b'\n');
    Ok(Box::new(std::io::Cursor::new(bytes)))
}

/// The message template of `--key` and `--header` flags.
pub fn template(key: Option<String>, headers: Vec<(String, String)>) -> MessageTemplate {
    let headers: Map<String, Value> = headers
        .into_iter()
        .map(|(name, value)| (name, Value::String(value)))
        .collect();
    MessageTemplate { key, headers }
}

/// Sends the lines of `input` to `destination` and prints how many went; on a
/// failure, says how many went before it. With nothing to send, checks that the
/// destination exists, so that a wrong name is told even then.
pub async fn send_lines(
    api: &Api,
    destination: &Destination,
    limits: BatchLimits,
    input: Box<dyn BufRead + Send>,
) -> anyhow::Result<()> {
    let mut batcher = LineBatcher::spawn(input, limits);
    let run_id = run_id()?;
    let mut sent: u64 = 0;
    for sequence in 0u64.. {
        let batch = match batcher.next_batch().await {
            Ok(Some(batch)) => batch,
            Ok(None) => break,
            Err(error) => return Err(note_sent(error, sent, destination)),
        };
        let body = destination.template.body(&batch, &destination.extra);
        let key = format!("{run_id}-{sequence}");
        if let Err(error) = send_batch(api, &destination.path, &body, &key).await {
            return Err(note_sent(error, sent, destination));
        }
        sent += batch.len() as u64;
    }
    if sent == 0 {
        api.get(&destination.resource).await?;
    }
    let noun = if sent == 1 { "message" } else { "messages" };
    output::line(format!("Sent {sent} {noun} to {}.", destination.what))?;
    Ok(())
}

/// Tells on stderr how many messages went before a failure (when any did), so a
/// rerun can skip them; returns the failure.
fn note_sent(error: anyhow::Error, sent: u64, destination: &Destination) -> anyhow::Error {
    if sent > 0 {
        eprintln!(
            "note: {sent} messages (the first {sent} lines) were sent to {} before this failure",
            destination.what
        );
    }
    error
}

/// Posts one batch, sending it again (same idempotency key) while the failure is
/// one a resend can cure.
async fn send_batch(api: &Api, path: &str, body: &Value, key: &str) -> anyhow::Result<Value> {
    let bytes = serde_json::to_vec(body)?;
    let mut headers = HeaderMap::new();
    headers.insert("idempotency-key", HeaderValue::from_str(key)?);
    let mut backoff = RESEND_BACKOFF_FIRST;
    let mut attempt = 1;
    loop {
        let result = api
            .request(
                Method::POST,
                path,
                Some(bytes.clone()),
                headers.clone(),
                REQUEST_TIMEOUT,
            )
            .await;
        match result {
            Err(error) if attempt < SEND_ATTEMPTS_MAX && worth_resending(&error) => {
                tracing::warn!(%error, attempt, "sending the batch again");
                tokio::time::sleep(backoff).await;
                backoff *= 2;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Whether a failed send may succeed when repeated: no answer though the broker
/// was reachable, or a 503/504 (not enough replicas, not ready, timed out).
pub fn worth_resending(error: &anyhow::Error) -> bool {
    if let Some(transport) = error.downcast_ref::<TransportError>() {
        return transport.is_retryable();
    }
    error
        .downcast_ref::<ApiFailure>()
        .is_some_and(|failure| matches!(failure.status, 503 | 504))
}

/// A random name for this run, so that two runs' batches never share a key.
fn run_id() -> anyhow::Result<String> {
    let mut bytes = [0u8; RUN_ID_BYTES];
    getrandom::fill(&mut bytes)
        .map_err(|e| anyhow::anyhow!("the operating system gave no random bytes: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_curable_failures_are_resent() {
        let failure = |status| anyhow::Error::from(ApiFailure::from_answer(status, b""));
        assert!(worth_resending(&failure(503)));
        assert!(worth_resending(&failure(504)));
        assert!(!worth_resending(&failure(400)));
        assert!(!worth_resending(&failure(401)));
        assert!(!worth_resending(&failure(500)));
        let unreachable = anyhow::Error::from(TransportError::Unreachable { url: "u".into() });
        assert!(!worth_resending(&unreachable));
        let timeout = anyhow::Error::from(TransportError::Timeout {
            url: "u".into(),
            secs: 1,
        });
        assert!(worth_resending(&timeout));
    }

    #[test]
    fn arguments_are_messages_of_one_line_each() -> anyhow::Result<()> {
        let mut lines = Vec::new();
        for line in input(vec!["resize img-1".to_owned(), String::new()])?.lines() {
            lines.push(line?);
        }
        assert_eq!(lines, ["resize img-1", ""]);
        let error = input(vec!["a".to_owned(), "b\nc".to_owned()])
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            error.as_deref(),
            Some("message 2 holds a line break: each message is one line, as on stdin")
        );
        Ok(())
    }

    #[test]
    fn run_ids_differ() -> anyhow::Result<()> {
        let (a, b) = (run_id()?, run_id()?);
        assert_eq!(a.len(), 2 * RUN_ID_BYTES);
        assert_ne!(a, b);
        Ok(())
    }
}
