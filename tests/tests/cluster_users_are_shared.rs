//! Invariant: in a cluster, users and grants are the cluster's, not a node's. A
//! user added with `broker user add` on one node's data directory, and granted a
//! right there with `broker acl grant`, logs in and uses the right on another node;
//! a user removed with `broker user remove` on a third node can no longer log in
//! anywhere, and the user's tokens stop working.
//!
//! Three brokers and a real ZooKeeper on loopback.

use std::time::Duration;

use anyhow::{bail, ensure};
use serde_json::json;
use system_tests::{ADMIN_PASSWORD, Api, Cluster, broker_cli_on, scenario};

const TOPIC: &str = "orders.eu";
const OTHER_TOPIC: &str = "audit";
const USER: &str = "alice";
const PASSWORD: &str = "alice-password-1";
/// How long a change of users may take to reach every node: a node reads the
/// cluster state at least every two seconds.
const SHARE_TIMEOUT: Duration = Duration::from_secs(20);
/// How often a scenario checks whether a change arrived.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// `POST /v1/auth/token` as the user on `api`'s node: the status.
async fn login_status(api: &Api) -> anyhow::Result<u16> {
    let body = json!({"username": USER, "password": PASSWORD});
    Ok(Api::new(api.base().to_owned())?
        .post("/v1/auth/token", &body)
        .await?
        .0)
}

/// Logs in as the user on `api`'s node and produces to `TOPIC`, until both work or
/// [`SHARE_TIMEOUT`] passes; the logged-in client.
async fn wait_login_and_produce(api: &Api, node: u32) -> anyhow::Result<Api> {
    let deadline = tokio::time::Instant::now() + SHARE_TIMEOUT;
    let body = json!({"messages": [{"value": format!("from {USER} on node {node}")}]});
    let path = format!("/v1/topics/{TOPIC}/messages");
    loop {
        let mut last = String::from("no login yet");
        if let Ok(user) = api.login_as(USER, PASSWORD).await {
            let (status, reply) = user.post(&path, &body).await?;
            if status == 200 {
                return Ok(user);
            }
            last = format!("produce answered {status} {reply}");
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "{USER} could not log in and produce on node {node} within {SHARE_TIMEOUT:?}: {last}"
            );
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Waits until the user's login on `api`'s node answers 401, at most
/// [`SHARE_TIMEOUT`].
async fn wait_login_refused(api: &Api, node: u32) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + SHARE_TIMEOUT;
    loop {
        let status = login_status(api).await?;
        if status == 401 {
            return Ok(());
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "{USER}, removed on node 2, still logs in on node {node} ({status}) after \
             {SHARE_TIMEOUT:?}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_are_shared() -> anyhow::Result<()> {
    scenario(
        "cluster_users_are_shared",
        Duration::from_secs(180),
        async {
            let cluster = Cluster::start(3).await?;
            let admin = cluster.node(1).api();
            for topic in [TOPIC, OTHER_TOPIC] {
                Cluster::create_topic(admin, topic, 1, 3).await?;
            }

            // Added and granted on node 1's data directory, with the node running.
            let node1 = cluster.data_dir(1);
            broker_cli_on(
                &["user", "add", USER],
                &node1,
                Some(format!("{PASSWORD}\n")),
            )
            .await?;
            let grant = [
                "acl", "grant", USER, "--topic", "orders.*", "--action", "produce",
            ];
            broker_cli_on(&grant, &node1, None).await?;

            // Used on node 3: the login and the grant arrived.
            let on_node3 = wait_login_and_produce(cluster.node(3).api(), 3).await?;
            let on_node1 = wait_login_and_produce(cluster.node(1).api(), 1).await?;
            wait_login_and_produce(cluster.node(2).api(), 2).await?;
            // Every node knows the user now, so no forward target answers 401.
            let (status, body) = on_node3
                .post(
                    &format!("/v1/topics/{OTHER_TOPIC}/messages"),
                    &json!({"messages": [{"value": "outside the grant"}]}),
                )
                .await?;
            ensure!(
                status == 403,
                "produce outside the grant answered {status} {body}"
            );

            // Removed on node 2's data directory: gone on node 1, tokens included.
            broker_cli_on(&["user", "remove", USER], &cluster.data_dir(2), None).await?;
            wait_login_refused(cluster.node(1).api(), 1).await?;
            let (status, body) = on_node1
                .post(
                    &format!("/v1/topics/{TOPIC}/messages"),
                    &json!({"messages": [{"value": "after removal"}]}),
                )
                .await?;
            ensure!(
                status == 401,
                "a removed user's token answered {status} {body}"
            );
            for node in [2, 3] {
                wait_login_refused(cluster.node(node).api(), node).await?;
            }

            // The `admin` each node made at its first start (with the harness's one
            // password) gave way to the first node's, which logs in everywhere.
            for node in 1..=3 {
                let api = cluster.node(node).api();
                api.login_as("admin", ADMIN_PASSWORD)
                    .await?
                    .get_ok("/v1/cluster")
                    .await?;
            }
            Ok(())
        },
    )
    .await
}
