//! `broker sub create|list|offsets|seek|delete`: a topic's subscriptions.

use clap::{ArgGroup, Args, Subcommand};
use serde_json::{Value, json};

use super::client::{self, Api, ConnectArgs};
use super::consume::{self, StartArg};
use super::output;

/// `broker sub ...`.
#[derive(Debug, Args)]
pub struct SubArgs {
    /// The broker.
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: SubCommand,
}

/// The subscription subcommands.
#[derive(Debug, Subcommand)]
pub enum SubCommand {
    /// Create a subscription.
    Create {
        /// The topic.
        topic: String,
        /// The subscription.
        name: String,
        /// Where it starts [default: the broker's].
        #[arg(long, value_enum)]
        from: Option<StartArg>,
    },
    /// List a topic's subscriptions with their lag.
    List {
        /// The topic.
        topic: String,
        /// Print the broker's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a subscription's committed offsets and lag per partition.
    Offsets {
        /// The topic.
        topic: String,
        /// The subscription.
        name: String,
        /// Print the broker's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Move a subscription's position.
    Seek(SeekArgs),
    /// Delete a subscription.
    Delete {
        /// The topic.
        topic: String,
        /// The subscription.
        name: String,
    },
}

/// `broker sub seek`: exactly one of `--to`, `--offset`, `--timestamp`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("target").required(true).args(["to", "offset", "timestamp"])))]
pub struct SeekArgs {
    /// The topic.
    pub topic: String,
    /// The subscription.
    pub name: String,
    /// The oldest kept or the newest message.
    #[arg(long, value_enum)]
    pub to: Option<StartArg>,
    /// This offset (of every partition, or of `--partition`).
    #[arg(long)]
    pub offset: Option<u64>,
    /// The partition `--offset` is for.
    #[arg(long, requires = "offset", conflicts_with_all = ["to", "timestamp"])]
    pub partition: Option<u32>,
    /// The first message stored at or after this time, ms since the epoch.
    #[arg(long)]
    pub timestamp: Option<i64>,
}

impl SeekArgs {
    /// The body of a seek request.
    pub fn body(&self) -> Value {
        match (self.to, self.offset, self.timestamp) {
            (Some(to), _, _) => json!({ "to": to.as_str() }),
            (None, Some(offset), _) => match self.partition {
                Some(partition) => json!({ "partition": partition, "offset": offset }),
                None => json!({ "offset": offset }),
            },
            (None, None, timestamp) => json!({ "timestamp": timestamp }),
        }
    }
}

/// Runs a subscription subcommand.
pub fn run(args: SubArgs) -> anyhow::Result<()> {
    let api = Api::connect(&args.connect, true)?;
    client::run(run_async(&api, args.command))
}

/// `/v1/topics/{topic}/subscriptions`, names checked.
fn subs_path(topic: &str) -> anyhow::Result<String> {
    Ok(format!(
        "/v1/topics/{}/subscriptions",
        client::name("topic", topic)?
    ))
}

/// `/v1/topics/{topic}/subscriptions/{name}`, names checked.
fn sub_path(topic: &str, name: &str) -> anyhow::Result<String> {
    Ok(format!(
        "{}/{}",
        subs_path(topic)?,
        client::name("subscription", name)?
    ))
}

async fn run_async(api: &Api, command: SubCommand) -> anyhow::Result<()> {
    match command {
        SubCommand::Create { topic, name, from } => {
            sub_path(&topic, &name)?;
            if consume::create_subscription(api, &topic, &name, from).await? {
                output::line(format!("Created subscription {name:?} on topic {topic:?}."))?;
            } else {
                anyhow::bail!("subscription {name:?} on topic {topic:?} exists already");
            }
        }
        SubCommand::List { topic, json } => {
            let answer = api.get(&subs_path(&topic)?).await?;
            if json {
                return Ok(output::json(&answer)?);
            }
            output::list(&answer, "subscriptions", &["name", "lag"])?;
        }
        SubCommand::Offsets { topic, name, json } => {
            let answer = api
                .get(&format!("{}/offsets", sub_path(&topic, &name)?))
                .await?;
            if json {
                return Ok(output::json(&answer)?);
            }
            output::list(
                &answer,
                "offsets",
                &["partition", "committed", "log_end_offset", "lag"],
            )?;
        }
        SubCommand::Seek(seek) => {
            let path = format!("{}/seek", sub_path(&seek.topic, &seek.name)?);
            api.post(&path, &seek.body()).await?;
            output::line(format!("Moved subscription {:?}.", seek.name))?;
        }
        SubCommand::Delete { topic, name } => {
            api.delete(&sub_path(&topic, &name)?).await?;
            output::line(format!("Deleted subscription {name:?} of topic {topic:?}."))?;
        }
    }
    Ok(())
}
