//! Invariant: with `min_insync_replicas` 3 and one of three replicas dead, an
//! `acks=all` produce is refused with 503 `not_enough_replicas` and stores nothing,
//! while `acks=leader` is still accepted; once the replica is back in sync,
//! `acks=all` is accepted again.
//!
//! A produce sent while the dead replica is still counted in sync waits for it, and
//! when the in-sync set shrinks below the minimum it is refused with 503
//! `not_enough_replicas` too (after its append, as Kafka's
//! `NOT_ENOUGH_REPLICAS_AFTER_APPEND`), never acknowledged by the leader alone; its
//! retry with the same `Idempotency-Key` once the replica is back answers the
//! offset of that append and stores nothing twice.
//!
//! Three brokers and a real ZooKeeper; replication factor 3.

use std::time::Duration;

use anyhow::ensure;
use serde_json::json;
use system_tests::{Cluster, keyed, scenario};

const TOPIC: &str = "guarded";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_all_needs_min_insync_replicas() -> anyhow::Result<()> {
    scenario(
        "cluster_acks_all_needs_min_insync_replicas",
        Duration::from_secs(180),
        async {
            let mut cluster = Cluster::start_with(3, &["--min-insync-replicas", "3"]).await?;
            let api = cluster.node(1).api().clone();
            let leader = Cluster::create_topic(&api, TOPIC, 1, 3).await?[0];
            api.produce(TOPIC, &[keyed("k", "v0")], "all", &[]).await?;

            let follower = (1..=3).find(|id| *id != leader).unwrap_or(2);
            cluster.node_mut(follower).kill9().await?;
            let path = format!("/v1/topics/{TOPIC}/messages");
            let pending = json!({"messages": [keyed("k", "pending")], "acks": "all"});
            let key = [("Idempotency-Key", "pending-1")];
            let to_leader = cluster.node(leader).api().clone();
            let (status, answer) = to_leader
                .call(reqwest::Method::POST, &path, Some(&pending), &key)
                .await?;
            ensure!(
                status == 503 && answer["error"]["code"] == "not_enough_replicas",
                "acks=all sent as the in-sync set shrank below 3 answered {status} {answer}"
            );
            let api = cluster.api_except(&[follower])?.clone();
            Cluster::wait_leaders(&api, TOPIC, &[follower], 2).await?;
            let ends_before = api.log_end_offsets(TOPIC).await?;

            let body = json!({"messages": [keyed("k", "refused")], "acks": "all"});
            let (status, answer) = api.post(&path, &body).await?;
            ensure!(
                status == 503 && answer["error"]["code"] == "not_enough_replicas",
                "acks=all with 2 of 3 in sync answered {status} {answer}"
            );
            ensure!(
                api.log_end_offsets(TOPIC).await? == ends_before,
                "a refused produce stored something"
            );
            api.produce(TOPIC, &[keyed("k", "v1")], "leader", &[])
                .await?;

            cluster.node_mut(follower).restart().await?;
            let api = cluster.node(leader).api().clone();
            Cluster::wait_leaders(&api, TOPIC, &[], 3).await?;
            let retried = api
                .produce(TOPIC, &[keyed("k", "pending")], "all", &key)
                .await?;
            ensure!(
                retried == [(0, 1)],
                "the retry answered {retried:?}, the first attempt appended at offset 1"
            );
            api.produce(TOPIC, &[keyed("k", "v2")], "all", &[]).await?;
            api.subscribe(TOPIC, "check", "earliest", false).await?;
            let read = api.pull_n(TOPIC, "check", 4, 1_000).await?;
            let values: Vec<&str> = read.iter().map(|m| m.value.as_str()).collect();
            ensure!(
                values == ["v0", "pending", "v1", "v2"],
                "read back {values:?}"
            );
            Ok(())
        },
    )
    .await
}
