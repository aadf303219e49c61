//! `broker acl grant|revoke|list`: users' rights on topics and queues, changed in
//! the data directory. See [`crate::auth::acl`] for the rule.

use clap::{ArgGroup, Args, Subcommand, ValueEnum};

use super::data_dir::{self, DataDirArgs};
use super::output;
use crate::auth::{Action, Grant, ResourceKind};

/// `broker acl ...`.
#[derive(Debug, Args)]
pub struct AclArgs {
    /// Where the broker keeps its data.
    #[command(flatten)]
    pub data: DataDirArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: AclCommand,
}

/// The acl subcommands.
#[derive(Debug, Subcommand)]
pub enum AclCommand {
    /// Give a user a right on topics or queues.
    Grant(GrantArgs),
    /// Take a right away.
    Revoke(GrantArgs),
    /// List rights, of one user or of all.
    List {
        /// Only this user's.
        user: Option<String>,
    },
}

/// One right: a user, a pattern of topic or queue names, an action.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("resource").required(true).args(["topic", "queue"])))]
pub struct GrantArgs {
    /// The user.
    pub user: String,
    /// Topics: an exact name, a prefix ending in `*` (`orders.*`), or `*`.
    #[arg(long, value_name = "PATTERN")]
    pub topic: Option<String>,
    /// Queues: an exact name, a prefix ending in `*`, or `*`.
    #[arg(long, value_name = "PATTERN")]
    pub queue: Option<String>,
    /// What the user may do there.
    #[arg(long, value_enum)]
    pub action: ActionArg,
}

/// An action as a flag value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ActionArg {
    /// Publish to topics, send to queues.
    Produce,
    /// Subscribe and pull; receive, ack and nack.
    Consume,
    /// Create, delete and configure.
    Admin,
}

impl From<ActionArg> for Action {
    fn from(action: ActionArg) -> Action {
        match action {
            ActionArg::Produce => Action::Produce,
            ActionArg::Consume => Action::Consume,
            ActionArg::Admin => Action::Admin,
        }
    }
}

impl GrantArgs {
    /// The grant the flags describe.
    pub fn grant(&self) -> anyhow::Result<Grant> {
        let (kind, pattern) = match (&self.topic, &self.queue) {
            (Some(pattern), None) => (ResourceKind::Topic, pattern),
            (None, Some(pattern)) => (ResourceKind::Queue, pattern),
            _ => anyhow::bail!("give exactly one of --topic and --queue"),
        };
        let grant = Grant::new(kind, pattern.clone(), self.action.into());
        grant.validate().map_err(|e| anyhow::anyhow!(e.message))?;
        Ok(grant)
    }
}

/// Runs an acl subcommand.
pub fn run(args: AclArgs) -> anyhow::Result<()> {
    let auth = data_dir::open(&args.data)?;
    match args.command {
        AclCommand::Grant(grant_args) => {
            let grant = grant_args.grant()?;
            auth.grant(&grant_args.user, grant.clone())
                .map_err(|e| anyhow::anyhow!(e.message))?;
            output::line(format!("Granted {grant} to {:?}.", grant_args.user))?;
        }
        AclCommand::Revoke(grant_args) => {
            let grant = grant_args.grant()?;
            let had = auth
                .revoke(&grant_args.user, &grant)
                .map_err(|e| anyhow::anyhow!(e.message))?;
            let what = if had { "Revoked" } else { "Nothing to revoke:" };
            let note = if had { "" } else { " was not granted" };
            output::line(format!("{what} {grant} of {:?}{note}.", grant_args.user))?;
        }
        AclCommand::List { user } => {
            let users = match &user {
                Some(name) => match auth.user(name) {
                    Some(info) => vec![info],
                    None => anyhow::bail!("no user {name:?}"),
                },
                None => auth.users(),
            };
            let mut rows = vec![
                ["USER", "KIND", "PATTERN", "ACTION"]
                    .map(String::from)
                    .to_vec(),
            ];
            for info in users {
                if info.admin {
                    rows.push(vec![
                        info.name.clone(),
                        "*".into(),
                        "*".into(),
                        "everything (admin)".into(),
                    ]);
                }
                for grant in &info.grants {
                    rows.push(vec![
                        info.name.clone(),
                        grant.resource.to_string(),
                        grant.pattern.clone(),
                        grant.action.to_string(),
                    ]);
                }
            }
            output::text(&output::render_table(&rows))?;
        }
    }
    Ok(())
}
