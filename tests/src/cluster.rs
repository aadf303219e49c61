//! A cluster for a scenario: one real ZooKeeper and several real `broker serve`
//! processes on loopback, joined through it, sharing one token secret (so a token
//! from any node works on every node).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::api::{Api, Pulled, keyed, u64_field};
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

    /// Fresh clients (own connections, same token) of the members `ids`, e.g. for
    /// producers that fail over between nodes.
    pub fn fresh_apis(&self, ids: &[u32]) -> anyhow::Result<Vec<Api>> {
        ids.iter().map(|id| self.node(*id).api().fresh()).collect()
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

    /// Creates `topic` with `partitions` partitions and `replication_factor` replicas
    /// through `api` (201 required), then waits until `api`'s node sees every
    /// partition led with all `replication_factor` replicas in sync; returns the
    /// leaders, partition `p` at index `p`.
    pub async fn create_topic(
        api: &Api,
        topic: &str,
        partitions: u32,
        replication_factor: u32,
    ) -> anyhow::Result<Vec<u32>> {
        let body = json!({
            "name": topic,
            "partitions": partitions,
            "replication_factor": replication_factor,
        });
        let (status, answer) = api.post("/v1/topics", &body).await?;
        ensure!(
            status == 201,
            "creating topic {topic} answered {status} {answer}"
        );
        Self::wait_leaders(api, topic, &[], replication_factor as usize).await
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
                let leaders = leaders(&parts);
                let isr_ok = isr_lens(&parts).iter().all(|n| *n == isr_len);
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

    /// Waits until each node of `ids` sees `isr_len` in-sync replicas in every
    /// partition of `topic`, for at most `timeout`; returns how long it took.
    pub async fn wait_in_sync(
        &self,
        ids: &[u32],
        topic: &str,
        isr_len: usize,
        timeout: Duration,
    ) -> anyhow::Result<Duration> {
        let what = format!("{isr_len} in-sync replicas in every partition");
        self.wait_views(ids, topic, &what, timeout, |parts| {
            let lens = isr_lens(parts);
            !lens.is_empty() && lens.iter().all(|n| *n == isr_len)
        })
        .await
    }
}

/// The leader of each partition in a partitions answer (0: none).
pub fn leaders(parts: &[Value]) -> Vec<u32> {
    parts
        .iter()
        .map(|p| p["leader"].as_u64().map_or(0, |l| l as u32))
        .collect()
}

/// The number of in-sync replicas of each partition in a partitions answer.
pub fn isr_lens(parts: &[Value]) -> Vec<usize> {
    parts
        .iter()
        .map(|p| p["isr"].as_array().map_or(0, Vec::len))
        .collect()
}

/// The node that leads every partition in `leaders` (one node leads all the
/// partitions of a topic); an error when they differ or there are none.
pub fn sole_leader(leaders: &[u32]) -> anyhow::Result<u32> {
    let first = *leaders.first().context("a topic without partitions")?;
    ensure!(
        leaders.iter().all(|l| *l == first),
        "one node leads every partition of a topic: {leaders:?}"
    );
    Ok(first)
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

/// The numbered batches a scenario produces to one topic: batch `n` of a phase holds
/// `size` messages; message `i` has the key `k{(n * size + i) % keys}` and the value
/// `{phase}-{n}-{i}`, padded with `.` to `value_bytes`.
#[derive(Clone, Copy, Debug)]
pub struct Batches<'a> {
    /// The topic.
    pub topic: &'a str,
    /// Messages per batch.
    pub size: usize,
    /// Distinct keys, used in turn.
    pub keys: usize,
    /// The least value length.
    pub value_bytes: usize,
}

impl Batches<'_> {
    /// Produces batch `n` of `phase` through `apis` with [`produce_acked`] (the
    /// idempotency key `{topic}-{phase}-{n}`), then appends it to `acked`.
    pub async fn produce(
        &self,
        apis: &[Api],
        phase: &str,
        n: usize,
        acked: &mut Vec<(String, String)>,
    ) -> anyhow::Result<()> {
        let sent: Vec<(String, String)> = (0..self.size)
            .map(|i| {
                let mut value = format!("{phase}-{n}-{i}");
                let padding = self.value_bytes.saturating_sub(value.len());
                value.extend(std::iter::repeat_n('.', padding));
                (format!("k{}", (n * self.size + i) % self.keys), value)
            })
            .collect();
        let key = format!("{}-{phase}-{n}", self.topic);
        produce_acked(apis, self.topic, sent, &key, acked).await
    }
}

/// Produces the (key, value) messages `sent` with [`produce_retrying`] and the
/// `Idempotency-Key` `idempotency_key`; once they are acknowledged, appends them to
/// `acked`.
pub async fn produce_acked(
    apis: &[Api],
    topic: &str,
    sent: Vec<(String, String)>,
    idempotency_key: &str,
    acked: &mut Vec<(String, String)>,
) -> anyhow::Result<()> {
    let messages: Vec<Value> = sent.iter().map(|(k, v)| keyed(k, v)).collect();
    produce_retrying(apis, topic, &messages, idempotency_key).await?;
    acked.extend(sent);
    Ok(())
}

/// How many examples of each kind of fault a read-back error shows.
const FAULT_EXAMPLES: usize = 5;
/// How much of a value a read-back error shows.
const VALUE_SHOWN: usize = 32;

/// Checks a read of a topic (`pulled`) against the (key, value) messages `acked`,
/// in acknowledgement order, with distinct values: every acknowledged message is
/// read exactly once and under its key, the messages of a key are read in their
/// acknowledgement order, and nothing else is read. The error names the missing,
/// duplicated, unknown (never acknowledged), keyless, misplaced (under another key)
/// and out-of-order messages.
pub fn check_read_back(pulled: &[Pulled], acked: &[(String, String)]) -> anyhow::Result<()> {
    let mut sent_key: HashMap<&str, &str> = HashMap::new();
    let mut sent_order: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (key, value) in acked {
        sent_key.insert(value, key);
        sent_order.entry(key).or_default().push(value);
    }
    let mut counts: HashMap<&str, usize> = HashMap::new();
    let mut read_order: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut unknown = Vec::new();
    let mut keyless = Vec::new();
    let mut misplaced = Vec::new();
    for message in pulled {
        let value = message.value.as_str();
        let count = counts.entry(value).or_default();
        *count += 1;
        let Some(&key) = sent_key.get(value) else {
            unknown.push(shown(value));
            continue;
        };
        match message.key.as_deref() {
            None => keyless.push(shown(value)),
            Some(read) if read != key => {
                misplaced.push(format!("{} under {read}, sent under {key}", shown(value)));
            }
            // Only a value's first reading counts for the order.
            Some(_) if *count == 1 => read_order.entry(key).or_default().push(value),
            Some(_) => {}
        }
    }
    let mut missing = Vec::new();
    let mut duplicated = Vec::new();
    for (_, value) in acked {
        match counts.get(value.as_str()).copied().unwrap_or(0) {
            0 => missing.push(shown(value)),
            1 => {}
            n => duplicated.push(format!("{} read {n} times", shown(value))),
        }
    }
    let mut out_of_order = Vec::new();
    for (key, sent) in &sent_order {
        // The key's messages read once and under it, in the order of reading and
        // in the order of sending.
        let read = read_order.get(key).map_or(&[][..], Vec::as_slice);
        let sent_read: Vec<&str> = sent.iter().copied().filter(|v| read.contains(v)).collect();
        if let Some(at) = read.iter().zip(&sent_read).position(|(r, s)| r != s) {
            out_of_order.push(format!(
                "key {key}: read {} where {} was sent",
                shown(read[at]),
                shown(sent_read[at])
            ));
        }
    }
    let faults: Vec<String> = [
        ("missing", missing),
        ("duplicated", duplicated),
        ("never acknowledged", unknown),
        ("without a key", keyless),
        ("under another key", misplaced),
        ("out of order", out_of_order),
    ]
    .into_iter()
    .filter(|(_, list)| !list.is_empty())
    .map(|(what, list)| {
        let examples: Vec<&String> = list.iter().take(FAULT_EXAMPLES).collect();
        format!("{} {what}, e.g. {examples:?}", list.len())
    })
    .collect();
    ensure!(
        faults.is_empty(),
        "read {} messages, {} acknowledged: {}",
        pulled.len(),
        acked.len(),
        faults.join("; ")
    );
    Ok(())
}

/// `value` for an error message: long (padded) values cut short.
fn shown(value: &str) -> String {
    match value.char_indices().nth(VALUE_SHOWN) {
        Some((end, _)) => format!("{}… ({} bytes)", &value[..end], value.len()),
        None => value.to_owned(),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn read(pairs: &[(&str, &str)]) -> Vec<Pulled> {
        pairs
            .iter()
            .enumerate()
            .map(|(i, (k, v))| Pulled {
                partition: 0,
                offset: i as u64,
                key: (!k.is_empty()).then(|| (*k).to_owned()),
                value: (*v).to_owned(),
            })
            .collect()
    }

    fn acked(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn fault(pulled: &[(&str, &str)], sent: &[(&str, &str)]) -> String {
        match check_read_back(&read(pulled), &acked(sent)) {
            Ok(()) => String::from("no fault"),
            Err(e) => format!("{e:#}"),
        }
    }

    const SENT: [(&str, &str); 3] = [("a", "a1"), ("b", "b1"), ("a", "a2")];

    #[test]
    fn a_read_of_each_acknowledged_message_in_key_order_passes() {
        // Keys interleave freely across partitions; only each key's order counts.
        assert_eq!(
            fault(&[("a", "a1"), ("a", "a2"), ("b", "b1")], &SENT),
            "no fault"
        );
    }

    #[test]
    fn each_fault_is_named() {
        let cases: [(&[(&str, &str)], &str); 6] = [
            (&[("a", "a1"), ("a", "a2")], "1 missing, e.g. [\"b1\"]"),
            (
                &[("a", "a1"), ("b", "b1"), ("b", "b1"), ("a", "a2")],
                "1 duplicated, e.g. [\"b1 read 2 times\"]",
            ),
            (
                &[("a", "a1"), ("b", "b1"), ("a", "a2"), ("c", "c1")],
                "1 never acknowledged, e.g. [\"c1\"]",
            ),
            (
                &[("a", "a1"), ("", "b1"), ("a", "a2")],
                "1 without a key, e.g. [\"b1\"]",
            ),
            (
                &[("a", "a1"), ("a", "b1"), ("a", "a2")],
                "1 under another key, e.g. [\"b1 under a, sent under b\"]",
            ),
            (
                &[("a", "a2"), ("b", "b1"), ("a", "a1")],
                "1 out of order, e.g. [\"key a: read a2 where a1 was sent\"]",
            ),
        ];
        for (pulled, expected) in cases {
            let error = fault(pulled, &SENT);
            assert!(error.contains(expected), "{error} lacks {expected}");
        }
    }

    #[test]
    fn long_values_are_cut_short() {
        let long = format!("v:{}", ".".repeat(100));
        assert_eq!(shown(&long), format!("v:{}… (102 bytes)", ".".repeat(30)));
        assert_eq!(shown("short"), "short");
    }
}
