//! The `broker` command line: `serve`; operator commands on the data directory
//! (`user`, `acl`); client commands for people at a terminal, over the REST API
//! (`login`, `logout`, `topic`, `produce`, `consume`, `queue`, `sub`); and the
//! load generator `bench`. One file per command group; this one parses and
//! dispatches, and turns failures into `error: <sentence>` and exit code 1.

mod acl;
mod bench;
mod client;
mod consume;
mod credentials;
mod data_dir;
mod error;
mod lines;
mod login;
mod output;
mod password;
mod produce;
mod queue;
mod sub;
mod topic;
mod user;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{BrokerConfig, ServeArgs};

use self::error::ApiFailure;

/// A message broker: topics and queues over REST.
#[derive(Debug, Parser)]
#[command(name = "broker", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the broker (defaults: 127.0.0.1:8080, ./data, standalone).
    #[command(after_help = SERVE_ENVIRONMENT_HELP)]
    Serve(Box<ServeArgs>),
    /// Manage users in the data directory (works while the broker runs).
    User(user::UserArgs),
    /// Manage users' rights in the data directory.
    Acl(acl::AclArgs),
    /// Log in to a broker and keep the token for later commands.
    Login(login::LoginArgs),
    /// Forget the token of a broker.
    Logout(login::LogoutArgs),
    /// Create, list, describe and delete topics.
    Topic(topic::TopicArgs),
    /// Send messages to a topic: the arguments after it, or else each line of
    /// stdin.
    Produce(produce::ProduceArgs),
    /// Print a topic's messages through a subscription.
    Consume(consume::ConsumeArgs),
    /// Work with queues: create, send, receive, ack...
    Queue(queue::QueueArgs),
    /// Work with a topic's subscriptions.
    Sub(sub::SubArgs),
    /// Measure a running broker: throughput and latency.
    Bench(bench::BenchArgs),
}

/// The settings of `broker serve` that have no flag, shown after its flags.
const SERVE_ENVIRONMENT_HELP: &str = "\
Settings without a flag:
  BROKER_ADMIN_PASSWORD  The password of the user `admin` that a start with no users
                         creates; ignored once users exist. Also the config key
                         `admin_password`. Never a flag: flags show in `ps`.
                         [default: random, printed once]
  BROKER_LOG             What the broker logs on stderr, as a tracing filter
                         (`warn`, `debug`, `broker=debug,info`); read by every
                         command before any config file. [default: info]

Each flag above also reads the environment variable shown and the config key of
its name with `_` (`--flush-interval-ms`: `flush_interval_ms`).";

/// The entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let serving = matches!(cli.command, Command::Serve(_));
    // The server logs its progress; the other commands speak for themselves
    // and log only warnings.
    init_tracing(if serving { "info" } else { "warn" });
    let env_token = std::env::var("BROKER_TOKEN").is_ok_and(|token| !token.is_empty());
    let refused_hint = unauthorized_hint(&cli.command, env_token);
    match dispatch(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", error::sentence(&error));
            let refused = error
                .downcast_ref::<ApiFailure>()
                .is_some_and(ApiFailure::is_unauthorized);
            if refused && let Some(hint) = refused_hint {
                eprintln!("hint: {hint}");
            }
            ExitCode::FAILURE
        }
    }
}

/// What to advise when the broker refuses a command's token (401), by where the
/// token came from: `BROKER_TOKEN` (`env_token`) wins over the saved login, so a
/// new `broker login` would not help then.
fn unauthorized_hint(command: &Command, env_token: bool) -> Option<&'static str> {
    match command {
        Command::Serve(_)
        | Command::User(_)
        | Command::Acl(_)
        | Command::Login(_)
        | Command::Logout(_) => None,
        // A run with --user logs in for itself: a 401 is about that password.
        Command::Bench(args) if args.user.is_some() => None,
        _ if env_token => Some(
            "the broker refused the token in BROKER_TOKEN: set a valid one, or unset \
             BROKER_TOKEN to use the saved login of `broker login`",
        ),
        _ => Some("log in again with `broker login`"),
    }
}

fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => serve(&args),
        Command::User(args) => user::run(args),
        Command::Acl(args) => acl::run(args),
        Command::Login(args) => login::login(args),
        Command::Logout(args) => login::logout(args),
        Command::Topic(args) => topic::run(args),
        Command::Produce(args) => produce::run(args),
        Command::Consume(args) => consume::run(args),
        Command::Queue(args) => queue::run(args),
        Command::Sub(args) => sub::run(args),
        Command::Bench(args) => bench::run(args),
    }
}

/// Whether the command failed only because stdout was closed (`| head`): not an
/// error for the person who closed it.
fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn serve(args: &ServeArgs) -> anyhow::Result<()> {
    let config = BrokerConfig::load(args)?;
    return_large_allocations();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(crate::server::serve(config))
}

/// Makes buffers of 1 MiB and more come from `mmap`, so that freeing one gives it
/// back to the system. Without a fixed threshold, glibc raises it after the first
/// such free and keeps later ones in per-thread arenas: each password check
/// (argon2, 19 MiB) on a new blocking thread left its memory behind, and an idle
/// broker that had issued a few tokens held 70 MiB instead of 12 (docs/performance.md).
/// A fixed mmap threshold also fixes the trim threshold, at 128 KiB unless set: every
/// pull that freed its half-megabyte read buffer then gave the pages back and faulted
/// them in again on the next (a fifth of the broker's CPU when consuming), so each
/// arena keeps up to 2 MiB free at its top, glibc's own ratio to the mmap threshold.
fn return_large_allocations() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a parameter of the allocator; it runs before the
    // runtime starts any thread.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 2 << 20);
    }
}

fn init_tracing(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BROKER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    // Colours only for a person at a terminal, not in files or the journal.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

#[cfg(test)]
mod tests;
