//! `broker topic create|list|describe|delete`.

use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};

use super::client::{self, Api, ConnectArgs};
use super::output;

/// `broker topic ...`.
#[derive(Debug, Args)]
pub struct TopicArgs {
    /// The broker.
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: TopicCommand,
}

/// The topic subcommands.
#[derive(Debug, Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    Create(CreateTopicArgs),
    /// List topics.
    List {
        /// Print the broker's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a topic's settings and partitions.
    Describe {
        /// The topic.
        name: String,
        /// Print the broker's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete a topic with its messages and subscriptions.
    Delete {
        /// The topic.
        name: String,
    },
}

/// `broker topic create`.
#[derive(Debug, Args)]
pub struct CreateTopicArgs {
    /// The topic: 1-249 of `[A-Za-z0-9._-]`.
    pub name: String,
    /// Partitions [default: the broker's, 1].
    #[arg(long)]
    pub partitions: Option<u32>,
    /// Copies of each partition [default: the broker's, 1].
    #[arg(long)]
    pub replication_factor: Option<u32>,
    /// Delete messages older than this many milliseconds [default: keep].
    #[arg(long)]
    pub retention_ms: Option<u64>,
    /// Keep at most this many bytes per partition [default: no limit].
    #[arg(long)]
    pub retention_bytes: Option<u64>,
}

impl CreateTopicArgs {
    /// The body of `POST /v1/topics`: only the settings given.
    pub fn body(&self) -> Value {
        let mut body = Map::new();
        body.insert("name".to_owned(), json!(self.name));
        let optional = [
            ("partitions", self.partitions.map(u64::from)),
            ("replication_factor", self.replication_factor.map(u64::from)),
            ("retention_ms", self.retention_ms),
            ("retention_bytes", self.retention_bytes),
        ];
        for (field, value) in optional {
            if let Some(value) = value {
                body.insert(field.to_owned(), json!(value));
            }
        }
        Value::Object(body)
    }
}

/// The number of partitions in a topic object: a count, or the list of them.
pub fn partition_count(topic: &Value) -> Option<u64> {
    match topic.get("partitions")? {
        Value::Array(list) => Some(list.len() as u64),
        other => other.as_u64(),
    }
}

/// Runs a topic subcommand.
pub fn run(args: TopicArgs) -> anyhow::Result<()> {
    let api = Api::connect(&args.connect, true)?;
    client::run(run_async(&api, args.command))
}

async fn run_async(api: &Api, command: TopicCommand) -> anyhow::Result<()> {
    match command {
        TopicCommand::Create(create) => {
            client::name("topic", &create.name)?;
            let topic = api.post("/v1/topics", &create.body()).await?;
            let partitions = partition_count(&topic).or(create.partitions.map(u64::from));
            let count = partitions.map_or(String::new(), |n| {
                format!(" with {n} partition{}", if n == 1 { "" } else { "s" })
            });
            output::line(format!("Created topic {:?}{count}.", create.name))?;
        }
        TopicCommand::List { json } => {
            let answer = api.get("/v1/topics").await?;
            if json {
                return Ok(output::json(&answer)?);
            }
            output::list(&answer, "topics", &["name", "partitions"])?;
        }
        TopicCommand::Describe { name, json } => {
            let path = format!("/v1/topics/{}", client::name("topic", &name)?);
            let topic = api.get(&path).await?;
            if json {
                return Ok(output::json(&topic)?);
            }
            output::describe(&topic, &PARTITION_COLUMNS)?;
        }
        TopicCommand::Delete { name } => {
            api.delete(&format!("/v1/topics/{}", client::name("topic", &name)?))
                .await?;
            output::line(format!("Deleted topic {name:?}."))?;
        }
    }
    Ok(())
}

/// The partition columns, in the API's order.
const PARTITION_COLUMNS: [&str; 8] = [
    "partition",
    "leader",
    "replicas",
    "isr",
    "log_start_offset",
    "log_end_offset",
    "high_watermark",
    "durable_offset",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_sends_only_the_settings_given() {
        let args = CreateTopicArgs {
            name: "t".to_owned(),
            partitions: Some(3),
            replication_factor: None,
            retention_ms: Some(60_000),
            retention_bytes: None,
        };
        assert_eq!(
            args.body(),
            json!({"name": "t", "partitions": 3, "retention_ms": 60000})
        );
    }

    #[test]
    fn partitions_are_counted_in_either_shape() {
        assert_eq!(partition_count(&json!({"partitions": 3})), Some(3));
        assert_eq!(
            partition_count(&json!({"partitions": [{"partition": 0}, {"partition": 1}]})),
            Some(2)
        );
        assert_eq!(partition_count(&json!({})), None);
    }
}
