//! Invariant: a node restarted right after a SIGKILL (its previous ZooKeeper
//! session still alive, so it cannot register yet) acknowledges nothing until it has
//! joined the cluster: until then it answers 503 and `/readyz` is 503, and every
//! produce it acknowledges, before and after it joined, is in the topic's log as
//! the leader serves it. Queue acks it answers are kept too: no message it acked is
//! delivered again.
//!
//! Three brokers and a real ZooKeeper (6 s sessions); a topic and a queue with
//! replication factor 3. The restarted node is one that leads neither.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use serde_json::{Value, json};
use system_tests::cluster::{SETTLE_TIMEOUT, check_read_back, read_all};
use system_tests::{Api, Cluster, keyed, scenario, unkeyed};

const TOPIC: &str = "rejoin-orders";
const QUEUE: &str = "rejoin-jobs";
/// How long the restarted node is asked, every `PROBE_EVERY`: past its old
/// session's timeout, so that it joins meanwhile.
const PROBE_FOR: Duration = Duration::from_secs(12);
const PROBE_EVERY: Duration = Duration::from_millis(100);
const QUEUE_MESSAGES: usize = 40;

/// One produce of one message through `api`; the answer's status (0: no answer).
async fn produce_one(api: &Api, value: &str) -> u16 {
    let body = json!({"messages": [keyed("k", value)], "acks": "all"});
    let path = format!("/v1/topics/{TOPIC}/messages");
    match api
        .call(reqwest::Method::POST, &path, Some(&body), &[])
        .await
    {
        Ok((status, _)) => status,
        Err(_) => 0,
    }
}

/// Receives one queue message through `api` and acks it; the acked message's value
/// when the ack counted.
async fn receive_and_ack(api: &Api) -> Option<String> {
    let (status, got) = api
        .post(
            &format!("/v1/queues/{QUEUE}/receive"),
            &json!({"max": 1, "visibility_timeout_ms": 60_000}),
        )
        .await
        .ok()?;
    let message = got["messages"].get(0).filter(|_| status == 200)?.clone();
    let receipt = message["receipt"].clone();
    let (status, acked) = api
        .post(
            &format!("/v1/queues/{QUEUE}/ack"),
            &json!({"receipts": [receipt]}),
        )
        .await
        .ok()?;
    (status == 200 && acked["acked"] == 1).then(|| message["value"].as_str().map(str::to_owned))?
}

/// The node that leads the queue's partition, once one does and all 3 are in sync.
async fn queue_leader(api: &Api) -> anyhow::Result<u32> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let view = api.get_ok(&format!("/v1/queues/{QUEUE}")).await?;
        let partition = &view["partitions"][0];
        let leader = partition["leader"].as_u64().unwrap_or(0);
        let isr = partition["isr"].as_array().map_or(0, Vec::len);
        if leader != 0 && isr == 3 {
            return Ok(u32::try_from(leader)?);
        }
        ensure!(
            Instant::now() < deadline,
            "the queue did not settle: {view}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_node_serves_only_once_joined() -> anyhow::Result<()> {
    scenario(
        "cluster_restarted_node_serves_only_once_joined",
        Duration::from_secs(240),
        async {
            let mut cluster = Cluster::start(3).await?;
            let api = cluster.node(1).api().clone();
            let topic_leader = *Cluster::create_topic(&api, TOPIC, 1, 3)
                .await?
                .first()
                .context("no partition")?;
            api.create_queue(QUEUE, json!({"replication_factor": 3}))
                .await?;
            let sent: Vec<Value> = (0..QUEUE_MESSAGES)
                .map(|i| unkeyed(&format!("job-{i:02}")))
                .collect();
            api.send(QUEUE, &sent).await?;
            let queue_leader = queue_leader(&api).await?;
            let restarted = (1..=3)
                .find(|id| *id != topic_leader && *id != queue_leader)
                .unwrap_or(3);
            println!(
                "topic led by node {topic_leader}, queue by node {queue_leader}; \
                 restarting node {restarted}"
            );

            cluster.node_mut(restarted).kill9().await?;
            cluster.node_mut(restarted).restart().await?;
            let probe = cluster.node(restarted).api().fresh()?;
            let started = Instant::now();
            let mut acked = Vec::new();
            let mut acked_jobs = HashSet::new();
            let mut refused_while_joining = 0;
            let mut joined_after = None;
            let mut n = 0;
            while started.elapsed() < PROBE_FOR {
                let ready = probe.get("/readyz").await.map(|(s, _)| s).unwrap_or(0);
                let value = format!("probe-{n}");
                n += 1;
                match produce_one(&probe, &value).await {
                    200 => {
                        ensure!(
                            joined_after.is_some() || ready == 200,
                            "node {restarted} acknowledged {value} while /readyz said {ready}"
                        );
                        acked.push(("k".to_owned(), value));
                    }
                    503 if joined_after.is_none() => refused_while_joining += 1,
                    status => println!("{value}: {status}"),
                }
                if ready == 200 && joined_after.is_none() {
                    joined_after = Some(started.elapsed());
                }
                if let Some(job) = receive_and_ack(&probe).await {
                    acked_jobs.insert(job);
                }
                tokio::time::sleep(PROBE_EVERY).await;
            }
            let joined_after = joined_after.context("the restarted node never became ready")?;
            println!(
                "node {restarted} ready {:.2} s after its restart; {refused_while_joining} \
                 produces refused with 503 before; {} acknowledged in all; {} queue acks",
                joined_after.as_secs_f64(),
                acked.len(),
                acked_jobs.len()
            );
            ensure!(
                refused_while_joining > 0,
                "the node was never seen joining (ready at once?)"
            );

            let leader_api = cluster.node(topic_leader).api().clone();
            let pulled = read_all(&leader_api, TOPIC, "check").await?;
            check_read_back(&pulled, &acked)?;

            // Every job acked through the restarted node stays acked; the others are
            // delivered, each once.
            let queue_api = cluster.node(queue_leader).api().clone();
            let mut delivered = Vec::new();
            loop {
                let got = queue_api.receive(QUEUE, QUEUE_MESSAGES, 0, 60_000).await?;
                if got.is_empty() {
                    break;
                }
                delivered.extend(got.into_iter().map(|m| m.value));
            }
            let again: Vec<&String> = delivered
                .iter()
                .filter(|v| acked_jobs.contains(*v))
                .collect();
            ensure!(again.is_empty(), "acked jobs delivered again: {again:?}");
            ensure!(
                delivered.len() + acked_jobs.len() == QUEUE_MESSAGES,
                "{} delivered + {} acked, {QUEUE_MESSAGES} sent",
                delivered.len(),
                acked_jobs.len()
            );
            Ok(())
        },
    )
    .await
}
