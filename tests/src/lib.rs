//! The harness of the black-box system tests: real `broker` processes, driven over
//! the REST API of `API.md` with a real HTTP client, killed with SIGKILL, stopped
//! with SIGTERM and restarted over the same data directory.
//!
//! - [`binary`]: finds the `broker` executable (`BROKER_BIN`, or
//!   `target/<profile>/broker` next to the test executable, built with
//!   `cargo build -p broker` once per test process so it is never stale).
//! - [`BrokerProcess`]: one `broker serve` on a free loopback port, with
//!   `BROKER_ADMIN_PASSWORD` and `BROKER_LOG=warn` (`SYSTEM_TESTS_BROKER_LOG`
//!   sets another filter), output to files; `start`,
//!   `kill9`, `terminate` (exit status 0 required), `restart` (same directory and
//!   port); killed when dropped.
//! - [`Api`]: HTTP calls returning `(status, json)` and typed helpers that fail on
//!   any answer the contract does not promise.
//! - [`Cluster`]: a real ZooKeeper ([`ZooKeeperProcess`]) and several brokers
//!   joined through it, sharing one token secret.
//! - [`scenario`]: the time bound around a scenario, and the brokers' output printed
//!   when it fails.
//! - [`ZooKeeperProcess`]: one standalone ZooKeeper server on a free loopback port
//!   over a temporary directory, for the cluster scenarios; `start`, `stop`
//!   (SIGKILL), `restart` (same port and data), `restart_with_fresh_data` (every
//!   session forgotten); killed when dropped.
//! - [`dead_letters`]: who leads a queue; running a message out of its deliveries.
//! - [`Rng`] and [`seed`]: seeded randomness; the seed is printed, and
//!   `SYSTEM_TESTS_SEED` replays it.
//!
//! Every wait has a bound (see the constants), so no scenario can hang. Each
//! scenario is one file under `tests/tests/`, one test per file: a test binary runs
//! one scenario, and cargo runs the binaries one after another, which keeps timing
//! measurements (long-poll latency) free of interference from other scenarios.
#![deny(missing_docs)]

pub mod api;
pub mod binary;
pub mod cluster;
pub mod command;
pub mod dead_letters;
pub mod process;
pub mod rng;
mod scenario;
pub mod zookeeper;

pub use api::{Api, Pulled, Received, Reply, expect, keyed, u64_field, unkeyed};
pub use cluster::Cluster;
pub use process::{ADMIN_PASSWORD, BrokerProcess, broker_cli, broker_cli_on, free_port};
pub use rng::{Rng, seed};
pub use scenario::scenario;
pub use zookeeper::ZooKeeperProcess;
