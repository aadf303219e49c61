//! `broker user add|list|remove|passwd|promote|demote`: users, changed in the
//! data directory.

use clap::{Args, Subcommand};

use super::data_dir::{self, DataDirArgs};
use super::output;
use super::password::{self, Purpose};

/// `broker user ...`.
#[derive(Debug, Args)]
pub struct UserArgs {
    /// Where the broker keeps its data.
    #[command(flatten)]
    pub data: DataDirArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: UserCommand,
}

/// The user subcommands.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user; the password is read from stdin (asked twice at a terminal).
    Add {
        /// The login name.
        name: String,
        /// Make the user an admin: every right, and user management.
        #[arg(long)]
        admin: bool,
    },
    /// List users with their rights.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove a user; their tokens stop working.
    Remove {
        /// The login name.
        name: String,
    },
    /// Set a user's password (read from stdin); their earlier tokens stop working.
    Passwd {
        /// The login name.
        name: String,
    },
    /// Make a user an admin: every right, and user management.
    Promote {
        /// The login name.
        name: String,
    },
    /// Make an admin an ordinary user again, keeping their grants; the last
    /// admin cannot be demoted.
    Demote {
        /// The login name.
        name: String,
    },
}

/// Runs a user subcommand.
pub fn run(args: UserArgs) -> anyhow::Result<()> {
    match args.command {
        UserCommand::Add { name, admin } => {
            crate::names::validate("user", &name).map_err(|e| anyhow::anyhow!(e.message))?;
            let auth = data_dir::open(&args.data)?;
            let password = password::read(&format!("Password for {name}: "), Purpose::New)?;
            auth.add_user(&name, &password, admin)
                .map_err(|e| anyhow::anyhow!(e.message))?;
            let role = if admin { "admin user" } else { "user" };
            output::line(format!("Added {role} {name:?}."))?;
            if !admin {
                output::line(format!(
                    "Give it rights with `broker acl grant {name} --topic NAME --action produce`."
                ))?;
            }
        }
        UserCommand::List { json } => {
            let auth = data_dir::open(&args.data)?;
            let users = auth.users();
            if json {
                output::json(&serde_json::json!({ "users": users }))?;
                return Ok(());
            }
            let mut rows = vec![vec![
                "NAME".to_owned(),
                "ADMIN".to_owned(),
                "GRANTS".to_owned(),
            ]];
            for user in users {
                let grants: Vec<String> = user.grants.iter().map(ToString::to_string).collect();
                let grants = if grants.is_empty() {
                    "-".to_owned()
                } else {
                    grants.join(", ")
                };
                rows.push(vec![user.name, user.admin.to_string(), grants]);
            }
            output::text(&output::render_table(&rows))?;
        }
        UserCommand::Remove { name } => {
            let auth = data_dir::open(&args.data)?;
            auth.remove_user(&name)
                .map_err(|e| anyhow::anyhow!(e.message))?;
            output::line(format!("Removed user {name:?}; its tokens no longer work."))?;
        }
        UserCommand::Passwd { name } => {
            let auth = data_dir::open(&args.data)?;
            if auth.user(&name).is_none() {
                anyhow::bail!("no user {name:?}");
            }
            let password = password::read(&format!("New password for {name}: "), Purpose::New)?;
            auth.set_password(&name, &password)
                .map_err(|e| anyhow::anyhow!(e.message))?;
            output::line(format!(
                "Changed the password of {name:?}; its earlier tokens no longer work."
            ))?;
        }
        UserCommand::Promote { name } => {
            let auth = data_dir::open(&args.data)?;
            auth.set_admin(&name, true)
                .map_err(|e| anyhow::anyhow!(e.message))?;
            output::line(format!("{name:?} is an admin user."))?;
        }
        UserCommand::Demote { name } => {
            let auth = data_dir::open(&args.data)?;
            auth.set_admin(&name, false)
                .map_err(|e| anyhow::anyhow!(e.message))?;
            output::line(format!(
                "{name:?} is no longer an admin user; its grants stay."
            ))?;
        }
    }
    Ok(())
}
