//! A cluster for a scenario: one real ZooKeeper and several real `broker serve`
//! processes on loopback, joined through it, sharing one token secret (so a token
//! from any node works on every node).

use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::api::{Api, Pulled, u64_field};
use crate::process::{BrokerProcess, free_port};
use crate::zookeeper::ZooKeeperProcess;

/// The token secret every node of a harness cluster shares.
pub const CLUSTER_JWT_SECRET: &str = "system-tests-cluster-secret-0123456789";
/// The ZooKeeper session timeout of harness nodes, the product's default.
pub const SESSION_TIMEOUT_MS: u64 = 6_000;
/// How long a scenario waits for the cluster to settle (members, leaders).
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one produce may keep failing over (503, 504, a node that does not
/// answer) before a scenario gives up: a leader's death is noticed within the
/// session timeout, and the election takes a few reads more.
pub const RETRY_FOR: Duration = Duration::from_secs(40);
/// How long a pull that finds nothing waits, when a scenario reads a topic to its
/// end: past it, the topic has nothing more.
const READ_ALL_WAIT_MS: u64 = 1_000;
/// The most pulls a read to the end makes: far above what the scenarios produce.
const READ_ALL_PULLS_MAX: usize = 1_000;

/// ZooKeeper and `n` brokers with node ids 1 to n.
#[derive(Debug)]
pub struct Cluster {
    /// The members, node id `i + 1` at index `i`.
    pub nodes: Vec<BrokerProcess>,
    /// The coordination service.
    pub zookeeper: ZooKeeperProcess,
    /// The members' data directories.
    dirs: TempDir,
}

impl Cluster {
    /// Starts ZooKeeper, then `n` brokers, and waits until all are members.
    pub async fn start(n: u32) -> anyhow::Result<Cluster> {
        Self::start_with(n, &[]).await
    }

    /// [`Cluster::start`] with `extra` flags given to every node (e.g.
    /// `--min-insync-replicas 3`).
    pub async fn start_with(n: u32, extra: &[&str]) -> anyhow::Result<Cluster> {
        let zookeeper = ZooKeeperProcess::start().await?;
        let dirs = tempfile::Builder::new()
            .prefix("cluster-")
            .tempdir()
            .context("a directory for the nodes' data")?;
        let mut nodes = Vec::new();
        for id in 1..=n {
            let data = dirs.path().join(format!("node-{id}"));
            let mut args = node_args(id, &zookeeper.connect_string(), free_port()?);
            args.extend(extra.iter().map(|a| (*a).to_owned()));
            nodes.push(BrokerProcess::start_with(&data, free_port()?, args).await?);
        }
        // Each node creates its own `admin` at its first start and refuses tokens
        // issued before that; tokens issued once every node exists work on all.
        for node in &mut nodes {
            node.login_again().await?;
        }
        let cluster = Cluster {
            nodes,
            zookeeper,
            dirs,
        };
        cluster.wait_members(n as usize).await?;
        Ok(cluster)
    }

    /// The member with node id `id`.
    pub fn node(&self, id: u32) -> &BrokerProcess {
        &self.nodes[(id - 1) as usize]
    }

    /// The member with node id `id`, to kill, pause or restart.
    pub fn node_mut(&mut self, id: u32) -> &mut BrokerProcess {
        &mut self.nodes[(id - 1) as usize]
    }

    /// The data directory of node `id`.
    pub fn data_dir(&self, id: u32) -> std::path::PathBuf {
        self.dirs.path().join(format!("node-{id}"))
    }

    /// A client of a running member other than those in `except`.
    pub fn api_except(&self, except: &[u32]) -> anyhow::Result<&Api> {
        self.nodes
            .iter()
            .enumerate()
            .find(|(i, n)| n.is_running() && !except.contains(&(*i as u32 + 1)))
            .map(|(_, n)| n.api())
            .context("no running member left")
    }

    /// Waits until `GET /v1/cluster` on every running member lists `count` live
    /// brokers and a controller.
    pub async fn wait_members(&self, count: usize) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
        loop {
            let mut settled = true;
            for node in self.nodes.iter().filter(|n| n.is_running()) {
                let (status, body) = node.api().get("/v1/cluster").await?;
                let alive = body["brokers"]
                    .as_array()
                    .map_or(0, |b| b.iter().filter(|b| b["alive"] == true).count());
                if status != 200 || alive != count || body["controller"].as_u64().unwrap_or(0) == 0
                {
                    settled = false;
                }
            }
            if settled {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("the cluster did not settle on {count} members within {SETTLE_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `GET /v1/topics/{topic}/partitions` through `api`.
    pub async fn partitions(api: &Api, topic: &str) -> anyhow::Result<Vec<Value>> {
        let body = api
            .get_ok(&format!("/v1/topics/{topic}/partitions"))
            .await?;
        Ok(body["partitions"]
            .as_array()
            .with_context(|| format!("partitions answer without partitions: {body}"))?
            .clone())
    }

    /// The leader of partition `p` of `topic` as `api`'s node sees it (0: none).
    pub async fn leader(api: &Api, topic: &str, p: usize) -> anyhow::Result<u32> {
        let parts = Self::partitions(api, topic).await?;
        let part = parts.get(p).with_context(|| format!("no partition {p}"))?;
        Ok(u64_field(part, "leader")? as u32)
    }

    /// Waits until `api`'s node sees every partition of `topic` led by a node not in
    /// `not`, with `isr_len` in-sync replicas each; returns the leaders.
    pub async fn wait_leaders(
        api: &Api,
        topic: &str,
        not: &[u32],
        isr_len: usize,
    ) -> anyhow::Result<Vec<u32>> {
        let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
        loop {
            if let Ok(parts) = Self::partitions(api, topic).await {
                let leaders: Vec<u32> = parts
                    .iter()
                    .map(|p| p["leader"].as_u64().unwrap_or(0) as u32)
                    .collect();
                let isr_ok = parts
                    .iter()
                    .all(|p| p["isr"].as_array().is_some_and(|i| i.len() == isr_len));
                if !leaders.is_empty()
                    && leaders.iter().all(|l| *l != 0 && !not.contains(l))
                    && isr_ok
                {
                    return Ok(leaders);
                }
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "{topic} did not get leaders outside {not:?} with {isr_len} in-sync replicas \
                     within {SETTLE_TIMEOUT:?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Cluster {
    /// Waits until the partitions of `topic` as each node of `ids` sees them satisfy
    /// `done`, polling every 100 ms for at most `timeout`; returns how long it took.
    /// `what` names the awaited state in the error.
    pub async fn wait_views(
        &self,
        ids: &[u32],
        topic: &str,
        what: &str,
        timeout: Duration,
        done: impl Fn(&[Value]) -> bool,
    ) -> anyhow::Result<Duration> {
        let started = tokio::time::Instant::now();
        let mut last = Vec::new();
        loop {
            last.clear();
            for id in ids {
                let view = Self::partitions(self.node(*id).api(), topic).await;
                last.push((*id, view.map_err(|e| format!("{e:#}"))));
            }
            if last.iter().all(|(_, v)| v.as_ref().is_ok_and(|p| done(p))) {
                return Ok(started.elapsed());
            }
            if started.elapsed() >= timeout {
                bail!("nodes {ids:?} did not see {what} within {timeout:?}; last views: {last:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Produces `messages` to `topic` with `acks=all` and the `Idempotency-Key`
/// `idempotency_key`, trying the nodes of `apis` in turn while the answer is 503 or
/// 504 or the node does not answer, for at most [`RETRY_FOR`]. A retry with the same
/// key stores nothing twice. Returns the (partition, offset) of each message.
pub async fn produce_retrying(
    apis: &[Api],
    topic: &str,
    messages: &[Value],
    idempotency_key: &str,
) -> anyhow::Result<Vec<(u32, u64)>> {
    let path = format!("/v1/topics/{topic}/messages");
    let body = json!({"messages": messages, "acks": "all"});
    let headers = [("Idempotency-Key", idempotency_key)];
    let started = tokio::time::Instant::now();
    for attempt in 0.. {
        let api = apis
            .get(attempt % apis.len().max(1))
            .context("no node to produce through")?;
        let reply = api
            .call(reqwest::Method::POST, &path, Some(&body), &headers)
            .await;
        let last = match reply {
            Ok((200, answer)) => return placements(&answer, messages.len()),
            Ok((status, answer)) if status == 503 || status == 504 => {
                format!("{status} {answer}")
            }
            Ok((status, answer)) => bail!("produce to {topic} answered {status}: {answer}"),
            Err(error) => format!("{error:#}"),
        };
        if started.elapsed() > RETRY_FOR {
            bail!("produce to {topic} failed for {RETRY_FOR:?}; last: {last}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("produce to {topic}: no attempt made")
}

/// The (partition, offset) pairs of a produce answer for `count` messages.
fn placements(answer: &Value, count: usize) -> anyhow::Result<Vec<(u32, u64)>> {
    let offsets = answer["offsets"]
        .as_array()
        .with_context(|| format!("produce answer without offsets: {answer}"))?;
    if offsets.len() != count {
        bail!("produce of {count} messages answered {answer}");
    }
    offsets
        .iter()
        .map(|o| {
            let partition = u32::try_from(u64_field(o, "partition")?)?;
            Ok((partition, u64_field(o, "offset")?))
        })
        .collect()
}

/// Subscribes `sub` to `topic` from the earliest offset through `api`, and pulls
/// until a pull that waited a second comes back empty: every message the topic
/// shows its readers, in the order pulled.
pub async fn read_all(api: &Api, topic: &str, sub: &str) -> anyhow::Result<Vec<Pulled>> {
    api.subscribe(topic, sub, "earliest", false).await?;
    let mut pulled = Vec::new();
    for _ in 0..READ_ALL_PULLS_MAX {
        let batch = api.pull(topic, sub, 1000, READ_ALL_WAIT_MS).await?;
        if batch.is_empty() {
            return Ok(pulled);
        }
        pulled.extend(batch);
    }
    bail!("{topic} did not end within {READ_ALL_PULLS_MAX} pulls")
}

/// The `broker serve` flags of cluster member `id`.
fn node_args(id: u32, zookeeper: &str, grpc_port: u16) -> Vec<String> {
    [
        "--zookeeper",
        zookeeper,
        "--node-id",
        &id.to_string(),
        "--grpc-listen",
        &format!("127.0.0.1:{grpc_port}"),
        "--jwt-secret",
        CLUSTER_JWT_SECRET,
        "--zookeeper-session-timeout-ms",
        &SESSION_TIMEOUT_MS.to_string(),
        "--replica-lag-time-max-ms",
        "5000",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}
