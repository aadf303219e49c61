//! `broker queue create|list|describe|delete|send|receive|ack|nack|redrive`.

use std::io::{self, Write};
use std::time::Duration;

use clap::{Args, Subcommand};
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::{Map, Value, json};

use super::client::{self, Api, ConnectArgs, REQUEST_TIMEOUT};
use super::consume::value_bytes;
use super::lines::{self, BatchLimits};
use super::output;
use super::produce::{self, Destination};
use crate::http::WAIT_MS_MAX;

/// The most messages one receive asks for.
const RECEIVE_MAX: u64 = 1000;

/// `broker queue ...`.
#[derive(Debug, Args)]
pub struct QueueArgs {
    /// The broker.
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: QueueCommand,
}

/// The queue subcommands.
#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Create a queue.
    Create(CreateQueueArgs),
    /// List queues with their depth.
    List {
        /// Print the broker's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a queue's settings and counts.
    Describe {
        /// The queue.
        name: String,
        /// Print the broker's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete a queue with its messages.
    Delete {
        /// The queue.
        name: String,
    },
    /// Send messages: the arguments after the queue, or else each line of stdin.
    Send {
        /// The queue.
        name: String,
        /// Messages to send, one per argument [default: each line of stdin].
        messages: Vec<String>,
        /// The routing key of every message.
        #[arg(long)]
        key: Option<String>,
        /// A header of every message, NAME=VALUE; repeatable.
        #[arg(long = "header", short = 'H', value_parser = lines::parse_header)]
        headers: Vec<(String, String)>,
    },
    /// Receive messages and print their values (or, with --json, whole messages
    /// with their receipts).
    Receive(ReceiveArgs),
    /// Acknowledge messages by their receipts: they are not delivered again.
    Ack {
        /// The queue.
        name: String,
        /// Receipts from `receive --json`.
        #[arg(required = true)]
        receipts: Vec<String>,
    },
    /// Give messages back for redelivery.
    Nack {
        /// The queue.
        name: String,
        /// Receipts from `receive --json`.
        #[arg(required = true)]
        receipts: Vec<String>,
        /// Redeliver after this many ms.
        #[arg(long)]
        delay_ms: Option<u64>,
    },
    /// Move messages of a dead-letter queue back to the queues they came from.
    Redrive {
        /// The dead-letter queue.
        name: String,
        /// Move at most this many.
        #[arg(long)]
        max: Option<u64>,
    },
}

/// `broker queue create`.
#[derive(Debug, Args)]
pub struct CreateQueueArgs {
    /// The queue: 1-249 of `[A-Za-z0-9._-]`.
    pub name: String,
    /// How long a received message stays invisible to others, in ms [default: the broker's, 30000].
    #[arg(long)]
    pub visibility_timeout_ms: Option<u64>,
    /// Deliveries before a message is dead-lettered [default: the broker's, 5].
    #[arg(long)]
    pub max_deliveries: Option<u32>,
    /// Where messages go after max deliveries [default: dropped].
    #[arg(long)]
    pub dead_letter_queue: Option<String>,
    /// Partitions [default: the broker's, 1].
    #[arg(long)]
    pub partitions: Option<u32>,
    /// Copies of each partition [default: the broker's, 1].
    #[arg(long)]
    pub replication_factor: Option<u32>,
}

impl CreateQueueArgs {
    /// The body of `POST /v1/queues`: only the settings given.
    pub fn body(&self) -> Value {
        let mut body = Map::new();
        body.insert("name".to_owned(), json!(self.name));
        let numbers = [
            ("visibility_timeout_ms", self.visibility_timeout_ms),
            ("max_deliveries", self.max_deliveries.map(u64::from)),
            ("partitions", self.partitions.map(u64::from)),
            ("replication_factor", self.replication_factor.map(u64::from)),
        ];
        for (field, value) in numbers {
            if let Some(value) = value {
                body.insert(field.to_owned(), json!(value));
            }
        }
        if let Some(dlq) = &self.dead_letter_queue {
            body.insert("dead_letter_queue".to_owned(), json!(dlq));
        }
        Value::Object(body)
    }
}

/// `broker queue receive`.
#[derive(Debug, Args)]
pub struct ReceiveArgs {
    /// The queue.
    pub name: String,
    /// Receive at most this many.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=RECEIVE_MAX))]
    pub max: u64,
    /// Wait up to this long for a message, in ms (the broker waits at most 30000).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=WAIT_MS_MAX))]
    pub wait_ms: u64,
    /// The lease of these messages, in ms [default: the queue's].
    #[arg(long)]
    pub visibility_timeout_ms: Option<u64>,
    /// Acknowledge the messages once printed.
    #[arg(long)]
    pub ack: bool,
    /// Print whole messages, receipts included, as JSON lines.
    #[arg(long)]
    pub json: bool,
}

/// Runs a queue subcommand.
pub fn run(args: QueueArgs) -> anyhow::Result<()> {
    let api = Api::connect(&args.connect, true)?;
    client::run(run_async(&api, args.command))
}

async fn run_async(api: &Api, command: QueueCommand) -> anyhow::Result<()> {
    match command {
        QueueCommand::Create(create) => {
            client::name("queue", &create.name)?;
            api.post("/v1/queues", &create.body()).await?;
            output::line(format!("Created queue {:?}.", create.name))?;
        }
        QueueCommand::List { json } => {
            let answer = api.get("/v1/queues").await?;
            if json {
                return Ok(output::json(&answer)?);
            }
            output::list(&answer, "queues", &["name", "depth", "in_flight"])?;
        }
        QueueCommand::Describe { name, json } => {
            let queue = api
                .get(&format!("/v1/queues/{}", client::name("queue", &name)?))
                .await?;
            if json {
                return Ok(output::json(&queue)?);
            }
            output::describe(&queue, &["partition", "leader", "replicas", "isr"])?;
        }
        QueueCommand::Delete { name } => {
            api.delete(&format!("/v1/queues/{}", client::name("queue", &name)?))
                .await?;
            output::line(format!("Deleted queue {name:?}."))?;
        }
        QueueCommand::Send {
            name,
            messages,
            key,
            headers,
        } => {
            let name = client::name("queue", &name)?;
            let destination = Destination {
                path: format!("/v1/queues/{name}/messages"),
                resource: format!("/v1/queues/{name}"),
                what: format!("queue {name:?}"),
                template: produce::template(key, headers),
                extra: Vec::new(),
            };
            let input = produce::input(messages)?;
            produce::send_lines(api, &destination, BatchLimits::default(), input).await?;
        }
        QueueCommand::Receive(receive_args) => receive(api, &receive_args).await?,
        QueueCommand::Ack { name, receipts } => {
            let path = format!("/v1/queues/{}/ack", client::name("queue", &name)?);
            let answer = api.post(&path, &json!({ "receipts": receipts })).await?;
            let acked = answer.get("acked").and_then(Value::as_u64).unwrap_or(0);
            output::line(format!(
                "Acknowledged {acked} of {} (a receipt whose lease ran out no longer counts).",
                receipts.len()
            ))?;
        }
        QueueCommand::Nack {
            name,
            receipts,
            delay_ms,
        } => {
            let path = format!("/v1/queues/{}/nack", client::name("queue", &name)?);
            let mut body = json!({ "receipts": receipts });
            if let Some(delay_ms) = delay_ms {
                body["delay_ms"] = json!(delay_ms);
            }
            api.post(&path, &body).await?;
            output::line(format!("Gave back {} message(s).", receipts.len()))?;
        }
        QueueCommand::Redrive { name, max } => {
            let path = format!("/v1/queues/{}/redrive", client::name("queue", &name)?);
            let body = max.map_or_else(|| json!({}), |max| json!({ "max": max }));
            let answer = api.post(&path, &body).await?;
            let moved = answer.get("moved").and_then(Value::as_u64).unwrap_or(0);
            output::line(format!("Moved {moved} message(s) back."))?;
        }
    }
    Ok(())
}

/// Receives, prints, and with `--ack` acknowledges once printed.
async fn receive(api: &Api, args: &ReceiveArgs) -> anyhow::Result<()> {
    let name = client::name("queue", &args.name)?;
    let mut body = json!({ "max": args.max, "wait_ms": args.wait_ms });
    if let Some(ms) = args.visibility_timeout_ms {
        body["visibility_timeout_ms"] = json!(ms);
    }
    let timeout = REQUEST_TIMEOUT + Duration::from_millis(args.wait_ms);
    let answer = api
        .request(
            Method::POST,
            &format!("/v1/queues/{name}/receive"),
            Some(serde_json::to_vec(&body)?),
            HeaderMap::new(),
            timeout,
        )
        .await?;
    let messages = output::array(&answer, "messages")?;
    let mut out = io::BufWriter::new(io::stdout().lock());
    for message in messages {
        if args.json {
            serde_json::to_writer(&mut out, message)?;
        } else {
            out.write_all(&value_bytes(message)?)?;
        }
        out.write_all(b"\n")?;
    }
    out.flush()?;
    drop(out);
    if args.ack && !messages.is_empty() {
        let receipts: Vec<&Value> = messages.iter().filter_map(|m| m.get("receipt")).collect();
        api.post(
            &format!("/v1/queues/{name}/ack"),
            &json!({ "receipts": receipts }),
        )
        .await?;
    } else if !args.ack && !args.json && !messages.is_empty() {
        eprintln!(
            "note: not acknowledged; they are delivered again when their lease runs out \
             (use --ack, or --json for the receipts)"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_sends_only_the_settings_given() {
        let args = CreateQueueArgs {
            name: "jobs".to_owned(),
            visibility_timeout_ms: None,
            max_deliveries: Some(3),
            dead_letter_queue: Some("jobs.dlq".to_owned()),
            partitions: None,
            replication_factor: None,
        };
        assert_eq!(
            args.body(),
            json!({"name": "jobs", "max_deliveries": 3, "dead_letter_queue": "jobs.dlq"})
        );
    }
}
