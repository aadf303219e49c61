//! The broker's configuration: one TOML file (`--config`), overridden by environment
//! variables, overridden by flags. Every default is documented on its field.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::auth::AuthConfig;
use crate::error::BrokerError;

/// The longest period of the flusher and of maintenance: one hour. A longer one
/// would leave `interval` data unsynced, or retention and reloads of the users
/// file undone, for hours; and the timer adds the period to the current instant,
/// which must not overflow.
pub const PERIOD_MS_MAX: u64 = 60 * 60 * 1000;

/// The longest idempotency window: 7 days, as long as Kafka keeps a producer's
/// state by default. Keys are compared with timestamps as `i64` milliseconds,
/// which a larger window could overflow.
pub const IDEMPOTENCY_WINDOW_MS_MAX: u64 = 7 * 24 * 60 * 60 * 1000;

/// The shortest ZooKeeper session timeout: 1 s. ZooKeeper itself grants no less
/// than two of its ticks.
pub const ZOOKEEPER_SESSION_TIMEOUT_MS_MIN: u64 = 1000;

/// The longest ZooKeeper session timeout: 10 minutes. ZooKeeper lowers what a
/// client asks to its `maxSessionTimeout` (40 s by default), and the node's own
/// clock deadline adds the timeout to the current instant, which must not
/// overflow.
pub const ZOOKEEPER_SESSION_TIMEOUT_MS_MAX: u64 = 10 * 60 * 1000;

/// When a produce is answered, as far as the disk is concerned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// The answer comes after the messages are fsynced (many concurrent requests share
    /// one fsync). The default.
    #[default]
    Fsync,
    /// The answer comes once the messages are written to the page cache; they are
    /// fsynced every `flush_interval_ms`. A crash of the machine (not of the process)
    /// can lose the last interval.
    Interval,
}

impl Durability {
    /// How the answer describes it.
    pub fn describe(self) -> &'static str {
        match self {
            Durability::Fsync => "fsync",
            Durability::Interval => "interval",
        }
    }
}

/// The whole configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// The REST listen address. Defaults to 127.0.0.1:8080.
    pub listen: SocketAddr,
    /// Where topics, queues, users and secrets live. Defaults to `./data`.
    pub data_dir: PathBuf,
    /// The HS256 signing secret for tokens. Defaults to none: a random secret is made
    /// once and kept in `<data_dir>/jwt-secret` (mode 0600). A cluster shares one.
    pub jwt_secret: Option<String>,
    /// How long a token is valid. Defaults to 3600 seconds.
    pub token_ttl_secs: u64,
    /// The password of the `admin` user created on a first start with no users.
    /// Defaults to none: a random one is printed once. Only from the environment
    /// (`BROKER_ADMIN_PASSWORD`) or the file, never a flag (flags show in `ps`).
    pub admin_password: Option<String>,
    /// The largest request body accepted; beyond it the answer is 413. Defaults to
    /// 8 MiB.
    pub max_body_bytes: usize,
    /// The durability of topics and queues created without one. Defaults to `fsync`.
    pub durability: Durability,
    /// How often logs with `interval` durability are fsynced: 1 ms to
    /// [`PERIOD_MS_MAX`]. Defaults to 100 ms.
    pub flush_interval_ms: u64,
    /// The size at which a partition's segment rolls. Defaults to 256 MiB.
    pub segment_bytes: u64,
    /// The newest bytes of each partition's log kept in the page cache once
    /// fsynced: consumers near the end read from memory, older reads go to the
    /// disk, and a fast producer recycles a bounded set of cached pages instead of
    /// filling memory with its log. 0 leaves the page cache to the kernel. Defaults
    /// to 256 MiB.
    pub cache_window_bytes: u64,
    /// How long an `Idempotency-Key` is remembered: 1 ms to
    /// [`IDEMPOTENCY_WINDOW_MS_MAX`]. Defaults to 10 minutes.
    pub idempotency_window_ms: u64,
    /// How often retention, queue space reclamation and the reload of a changed
    /// users file run: 1 ms to [`PERIOD_MS_MAX`]. Defaults to 1000 ms.
    pub maintenance_interval_ms: u64,
    /// ZooKeeper's `host:port[,host:port...]`. Defaults to none: the node runs
    /// standalone.
    pub zookeeper: Option<String>,
    /// The chroot of the cluster's nodes in ZooKeeper. Defaults to `/mom`.
    pub zookeeper_chroot: String,
    /// The ZooKeeper session timeout; a node that ZooKeeper has not heard from for
    /// this long loses its leaderships. [`ZOOKEEPER_SESSION_TIMEOUT_MS_MIN`] to
    /// [`ZOOKEEPER_SESSION_TIMEOUT_MS_MAX`]. Defaults to 6000 ms.
    pub zookeeper_session_timeout_ms: u64,
    /// This node's id in the cluster (required with `zookeeper`).
    pub node_id: Option<u32>,
    /// The gRPC listen address for the other nodes. Defaults to the REST address
    /// with the port plus 1000.
    pub grpc_listen: Option<SocketAddr>,
    /// The REST address other nodes and clients use for this node. Defaults to the
    /// bound REST address.
    pub advertised_rest_addr: Option<String>,
    /// The gRPC address other nodes use for this node. Defaults to the bound gRPC
    /// address.
    pub advertised_grpc_addr: Option<String>,
    /// A follower that has not caught up with its leader for this long leaves the
    /// in-sync replicas. Defaults to 10000 ms.
    pub replica_lag_time_max_ms: u64,
    /// The fewest in-sync replicas (the leader included) with which an `acks=all`
    /// produce is accepted. Defaults to 1.
    pub min_insync_replicas: u32,
    /// How long a topic's or queue's preferred leader (its first replica) must have
    /// been back in every partition's in-sync replicas before the controller hands
    /// it the leadership again; 0 turns the rebalancing off. Up to
    /// [`PERIOD_MS_MAX`]. Defaults to 30000 ms.
    pub leader_rebalance_delay_ms: u64,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("data"),
            jwt_secret: None,
            token_ttl_secs: 3600,
            admin_password: None,
            max_body_bytes: 8 << 20,
            durability: Durability::Fsync,
            flush_interval_ms: 100,
            segment_bytes: 256 << 20,
            cache_window_bytes: 256 << 20,
            idempotency_window_ms: 10 * 60 * 1000,
            maintenance_interval_ms: 1000,
            zookeeper: None,
            zookeeper_chroot: "/mom".to_owned(),
            zookeeper_session_timeout_ms: 6000,
            node_id: None,
            grpc_listen: None,
            advertised_rest_addr: None,
            advertised_grpc_addr: None,
            replica_lag_time_max_ms: 10_000,
            min_insync_replicas: 1,
            leader_rebalance_delay_ms: 30_000,
        }
    }
}

/// `broker serve` flags; each also reads an environment variable.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ServeArgs {
    /// A TOML file with any of the settings below (names as the flags, with `_`).
    #[arg(long, env = "BROKER_CONFIG")]
    pub config: Option<PathBuf>,
    /// The REST listen address [default: 127.0.0.1:8080].
    #[arg(long, env = "BROKER_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// The data directory [default: ./data].
    #[arg(long, env = "BROKER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The token signing secret [default: generated once, kept in the data directory].
    #[arg(long, env = "BROKER_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// Token lifetime in seconds [default: 3600].
    #[arg(long, env = "BROKER_TOKEN_TTL_SECS")]
    pub token_ttl_secs: Option<u64>,
    /// The largest request body in bytes [default: 8 MiB].
    #[arg(long, env = "BROKER_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Default durability of new topics and queues [default: fsync].
    #[arg(long, env = "BROKER_DURABILITY", value_enum)]
    pub durability: Option<Durability>,
    /// Fsync period of `interval` durability, in ms [default: 100].
    #[arg(long, env = "BROKER_FLUSH_INTERVAL_MS")]
    pub flush_interval_ms: Option<u64>,
    /// Segment size in bytes [default: 256 MiB].
    #[arg(long, env = "BROKER_SEGMENT_BYTES")]
    pub segment_bytes: Option<u64>,
    /// Newest bytes of each partition kept in the page cache once fsynced; 0: the
    /// kernel decides [default: 256 MiB].
    #[arg(long, env = "BROKER_CACHE_WINDOW_BYTES")]
    pub cache_window_bytes: Option<u64>,
    /// How long idempotency keys are remembered, in ms, at most 7 days
    /// [default: 600000].
    #[arg(long, env = "BROKER_IDEMPOTENCY_WINDOW_MS")]
    pub idempotency_window_ms: Option<u64>,
    /// How often retention, queue space reclamation and the reload of a changed
    /// users file run, in ms [default: 1000].
    #[arg(long, env = "BROKER_MAINTENANCE_INTERVAL_MS")]
    pub maintenance_interval_ms: Option<u64>,
    /// Joins the cluster coordinated by this ZooKeeper (`host:port[,...]`)
    /// [default: none, standalone].
    #[arg(long, env = "BROKER_ZOOKEEPER")]
    pub zookeeper: Option<String>,
    /// The cluster's chroot in ZooKeeper [default: /mom].
    #[arg(long, env = "BROKER_ZOOKEEPER_CHROOT")]
    pub zookeeper_chroot: Option<String>,
    /// ZooKeeper session timeout in ms [default: 6000].
    #[arg(long, env = "BROKER_ZOOKEEPER_SESSION_TIMEOUT_MS")]
    pub zookeeper_session_timeout_ms: Option<u64>,
    /// This node's id in the cluster; required with --zookeeper.
    #[arg(long, env = "BROKER_NODE_ID")]
    pub node_id: Option<u32>,
    /// The gRPC listen address for the other nodes [default: REST port + 1000].
    #[arg(long, env = "BROKER_GRPC_LISTEN")]
    pub grpc_listen: Option<SocketAddr>,
    /// The REST `host:port` other nodes and clients use [default: the bound address].
    #[arg(long, env = "BROKER_ADVERTISED_REST_ADDR")]
    pub advertised_rest_addr: Option<String>,
    /// The gRPC `host:port` other nodes use [default: the bound address].
    #[arg(long, env = "BROKER_ADVERTISED_GRPC_ADDR")]
    pub advertised_grpc_addr: Option<String>,
    /// Lag time after which a follower leaves the in-sync replicas, in ms
    /// [default: 10000].
    #[arg(long, env = "BROKER_REPLICA_LAG_TIME_MAX_MS")]
    pub replica_lag_time_max_ms: Option<u64>,
    /// Fewest in-sync replicas for an `acks=all` produce [default: 1].
    #[arg(long, env = "BROKER_MIN_INSYNC_REPLICAS")]
    pub min_insync_replicas: Option<u32>,
    /// How long a preferred leader must be back in sync before it leads again, in
    /// ms; 0: never [default: 30000].
    #[arg(long, env = "BROKER_LEADER_REBALANCE_DELAY_MS")]
    pub leader_rebalance_delay_ms: Option<u64>,
}

impl BrokerConfig {
    /// Builds the configuration: defaults, then the file, then environment and flags
    /// (which clap has already merged into `args`).
    pub fn load(args: &ServeArgs) -> Result<BrokerConfig, BrokerError> {
        let mut config = match &args.config {
            Some(path) => Self::from_file(path)?,
            None => BrokerConfig::default(),
        };
        macro_rules! override_with {
            ($($field:ident),*) => {$(
                if let Some(value) = &args.$field {
                    config.$field = value.clone().into();
                }
            )*};
        }
        override_with!(
            listen,
            data_dir,
            token_ttl_secs,
            max_body_bytes,
            durability,
            flush_interval_ms,
            segment_bytes,
            cache_window_bytes,
            idempotency_window_ms,
            maintenance_interval_ms,
            zookeeper_chroot,
            zookeeper_session_timeout_ms,
            replica_lag_time_max_ms,
            min_insync_replicas,
            leader_rebalance_delay_ms
        );
        macro_rules! override_option {
            ($($field:ident),*) => {$(
                if let Some(value) = &args.$field {
                    config.$field = Some(value.clone());
                }
            )*};
        }
        override_option!(
            zookeeper,
            node_id,
            grpc_listen,
            advertised_rest_addr,
            advertised_grpc_addr
        );
        if let Some(secret) = &args.jwt_secret {
            config.jwt_secret = Some(secret.clone());
        }
        if let Ok(password) = std::env::var("BROKER_ADMIN_PASSWORD") {
            config.admin_password = Some(password);
        }
        config.validate()?;
        Ok(config)
    }

    /// Reads a TOML file.
    pub fn from_file(path: &Path) -> Result<BrokerConfig, BrokerError> {
        let text = std::fs::read_to_string(path).map_err(|e| BrokerError::io(path, e))?;
        toml::from_str(&text).map_err(|e| BrokerError::Config(format!("{}: {e}", path.display())))
    }

    /// The page cache window of partition logs, `None` when the kernel decides.
    pub fn cache_window(&self) -> Option<u64> {
        (self.cache_window_bytes > 0).then_some(self.cache_window_bytes)
    }

    /// The settings of [`crate::auth::Auth`] this configuration gives.
    pub fn auth_config(&self) -> AuthConfig {
        AuthConfig {
            token_ttl_secs: self.token_ttl_secs,
            jwt_secret: self.jwt_secret.clone(),
            admin_password: self.admin_password.clone(),
        }
    }

    /// Checks each value's range and the relations between values, so that a bad
    /// setting stops the start with a sentence naming it.
    pub fn validate(&self) -> Result<(), BrokerError> {
        let fail = |m: &str| Err(BrokerError::Config(m.to_owned()));
        self.auth_config().validate()?;
        if self.max_body_bytes < 1024 {
            return fail("max_body_bytes must be at least 1024");
        }
        in_range(
            "flush_interval_ms",
            self.flush_interval_ms,
            1,
            PERIOD_MS_MAX,
        )?;
        in_range(
            "maintenance_interval_ms",
            self.maintenance_interval_ms,
            1,
            PERIOD_MS_MAX,
        )?;
        if self.segment_bytes < 4096 || self.segment_bytes > (1 << 30) {
            return fail("segment_bytes must be between 4 KiB and 1 GiB");
        }
        in_range(
            "idempotency_window_ms",
            self.idempotency_window_ms,
            1,
            IDEMPOTENCY_WINDOW_MS_MAX,
        )?;
        if self.zookeeper.is_some() && self.node_id.is_none() {
            return fail("a node in a cluster (zookeeper set) needs a node_id");
        }
        if self.node_id == Some(0) {
            return fail("node_id must be positive");
        }
        if !self.zookeeper_chroot.starts_with('/') || self.zookeeper_chroot.ends_with('/') {
            return fail("zookeeper_chroot must start with / and not end with it (e.g. /mom)");
        }
        in_range(
            "zookeeper_session_timeout_ms",
            self.zookeeper_session_timeout_ms,
            ZOOKEEPER_SESSION_TIMEOUT_MS_MIN,
            ZOOKEEPER_SESSION_TIMEOUT_MS_MAX,
        )?;
        if self.replica_lag_time_max_ms == 0 {
            return fail("replica_lag_time_max_ms must be positive");
        }
        if self.min_insync_replicas == 0 {
            return fail("min_insync_replicas must be at least 1");
        }
        in_range(
            "leader_rebalance_delay_ms",
            self.leader_rebalance_delay_ms,
            0,
            PERIOD_MS_MAX,
        )?;
        Ok(())
    }
}

/// Refuses a setting outside `min..=max`, naming it and the range.
fn in_range(name: &str, value: u64, min: u64, max: u64) -> Result<(), BrokerError> {
    if (min..=max).contains(&value) {
        return Ok(());
    }
    Err(BrokerError::Config(format!(
        "{name} is {value}; it must be {min} to {max}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_values_are_overridden_by_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broker.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9000\"\nsegment_bytes = 65536\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path.clone()),
            segment_bytes: Some(1 << 20),
            ..ServeArgs::default()
        };
        let config = BrokerConfig::load(&args).unwrap();
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.segment_bytes, 1 << 20);
        assert_eq!(config.token_ttl_secs, 3600);
        std::fs::write(&path, "lisen = 1\n").unwrap();
        assert!(
            BrokerConfig::from_file(&path).is_err(),
            "unknown keys are refused"
        );
    }

    #[test]
    fn the_cache_window_defaults_to_256_mib_and_zero_leaves_the_cache_to_the_kernel() {
        assert_eq!(BrokerConfig::default().cache_window(), Some(256 << 20));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broker.toml");
        std::fs::write(&path, "cache_window_bytes = 0\n").unwrap();
        let config = BrokerConfig::from_file(&path).unwrap();
        assert_eq!(config.cache_window(), None);
        let args = ServeArgs {
            config: Some(path),
            cache_window_bytes: Some(64 << 20),
            ..ServeArgs::default()
        };
        let config = BrokerConfig::load(&args).unwrap();
        assert_eq!(config.cache_window(), Some(64 << 20));
    }

    #[test]
    fn durations_out_of_range_are_refused_by_name() {
        let cases = [
            ("idempotency_window_ms", 0),
            ("idempotency_window_ms", u64::MAX),
            ("idempotency_window_ms", IDEMPOTENCY_WINDOW_MS_MAX + 1),
            ("flush_interval_ms", 0),
            ("flush_interval_ms", u64::MAX),
            ("maintenance_interval_ms", 0),
            ("maintenance_interval_ms", PERIOD_MS_MAX + 1),
            ("zookeeper_session_timeout_ms", 999),
            ("zookeeper_session_timeout_ms", u64::MAX),
            ("replica_lag_time_max_ms", 0),
            ("leader_rebalance_delay_ms", PERIOD_MS_MAX + 1),
            ("token_ttl_secs", u64::MAX),
        ];
        for (name, value) in cases {
            let mut config = BrokerConfig::default();
            match name {
                "idempotency_window_ms" => config.idempotency_window_ms = value,
                "flush_interval_ms" => config.flush_interval_ms = value,
                "maintenance_interval_ms" => config.maintenance_interval_ms = value,
                "zookeeper_session_timeout_ms" => config.zookeeper_session_timeout_ms = value,
                "replica_lag_time_max_ms" => config.replica_lag_time_max_ms = value,
                "leader_rebalance_delay_ms" => config.leader_rebalance_delay_ms = value,
                _ => config.token_ttl_secs = value,
            }
            let error = config.validate().unwrap_err().to_string();
            assert!(error.contains(name), "{name} = {value}: {error}");
        }
        let longest = BrokerConfig {
            idempotency_window_ms: IDEMPOTENCY_WINDOW_MS_MAX,
            maintenance_interval_ms: PERIOD_MS_MAX,
            ..BrokerConfig::default()
        };
        assert!(longest.validate().is_ok());
    }

    #[test]
    fn the_maintenance_interval_has_a_flag() {
        let args = ServeArgs {
            maintenance_interval_ms: Some(250),
            ..ServeArgs::default()
        };
        assert_eq!(
            BrokerConfig::load(&args).unwrap().maintenance_interval_ms,
            250
        );
        let args = ServeArgs {
            idempotency_window_ms: Some(0),
            ..ServeArgs::default()
        };
        let error = BrokerConfig::load(&args).unwrap_err().to_string();
        assert_eq!(
            error,
            format!(
                "invalid configuration: idempotency_window_ms is 0; it must be 1 to \
                 {IDEMPOTENCY_WINDOW_MS_MAX}"
            )
        );
    }
}
