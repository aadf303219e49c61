//! Invariant: everything the broker was told survives a graceful restart (SIGTERM,
//! exit status 0) and a SIGKILL: topics with their partitions and messages,
//! subscriptions with their committed offsets, queues with their settings, depths
//! and acknowledgements, users added by the operator with the CLI (with the broker
//! stopped), and their ACL grants; tokens issued before a restart stay valid.
//! Changes made right before the SIGKILL (a topic, a queue, a commit, an ack, a
//! deleted subscription) survive it too.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use serde_json::{Value, json};
use system_tests::command::Bounded;
use system_tests::{
    Api, BrokerProcess, broker_cli, broker_cli_on, expect, keyed, scenario, u64_field, unkeyed,
};

const ORDERS: &str = "orders.eu";
const ORDERS_PARTITIONS: u32 = 3;
const AUDIT: &str = "audit";
const EMAILS: &str = "emails";
const EMAILS_DLQ: &str = "emails.dlq";
const EMAILS_SENT: usize = 50;
const EMAILS_ACKED: usize = 20;
const USER: &str = "alice";
const USER_PASSWORD: &str = "alice-password-1";
/// The reader subscription on every topic: rewound and read in full at each check.
const READER: &str = "reader";

/// What each topic holds: topic -> (partition, offset) -> (key, value).
type Contents = BTreeMap<String, BTreeMap<(u32, u64), (Option<String>, String)>>;

async fn produce_into(
    api: &Api,
    contents: &mut Contents,
    topic: &str,
    messages: &[Value],
) -> anyhow::Result<()> {
    let offsets = api.produce(topic, messages, "all", &[]).await?;
    let stored = contents.entry(topic.to_owned()).or_default();
    for (at, m) in offsets.into_iter().zip(messages) {
        let key = m["key"].as_str().map(str::to_owned);
        let value = m["value"].as_str().context("a value")?.to_owned();
        ensure!(
            stored.insert(at, (key, value)).is_none(),
            "{at:?} given twice"
        );
    }
    Ok(())
}

/// Topics, messages, subscriptions at several positions, queues with acks.
async fn populate(api: &Api) -> anyhow::Result<(Contents, Vec<String>)> {
    let mut contents = Contents::new();
    api.create_topic(ORDERS, ORDERS_PARTITIONS).await?;
    api.create_topic(AUDIT, 1).await?;
    for batch in 0..3 {
        let messages: Vec<Value> = (0..40)
            .map(|i| {
                keyed(
                    &format!("customer-{}", i % 7),
                    &format!("order-{batch}-{i}"),
                )
            })
            .collect();
        produce_into(api, &mut contents, ORDERS, &messages).await?;
    }
    let audit: Vec<Value> = (0..30).map(|i| unkeyed(&format!("audit-{i}"))).collect();
    produce_into(api, &mut contents, AUDIT, &audit).await?;

    for topic in [ORDERS, AUDIT] {
        api.subscribe(topic, READER, "earliest", false).await?;
    }
    api.subscribe(ORDERS, "billing", "earliest", false).await?;
    let pulled = api.pull_n(ORDERS, "billing", 50, 200).await?;
    ensure!(pulled.len() == 50, "billing pulled {}", pulled.len());
    let mut next = vec![0u64; ORDERS_PARTITIONS as usize];
    for m in &pulled {
        next[m.partition as usize] = m.offset + 1;
    }
    let commit: Vec<(u32, u64)> = (0..ORDERS_PARTITIONS).zip(next).collect();
    api.commit(ORDERS, "billing", &commit).await?;
    api.subscribe(ORDERS, "shipping", "latest", true).await?;
    let late: Vec<Value> = (0..10)
        .map(|i| keyed(&format!("customer-{i}"), &format!("late-{i}")))
        .collect();
    produce_into(api, &mut contents, ORDERS, &late).await?;
    let shipped = api.pull_n(ORDERS, "shipping", 4, 200).await?;
    ensure!(shipped.len() == 4, "shipping pulled {}", shipped.len());

    api.create_queue(EMAILS_DLQ, json!({})).await?;
    api.create_queue(
        EMAILS,
        json!({"visibility_timeout_ms": 30_000, "max_deliveries": 3,
               "dead_letter_queue": EMAILS_DLQ}),
    )
    .await?;
    let emails: Vec<Value> = (0..EMAILS_SENT)
        .map(|i| unkeyed(&format!("email-{i:02}")))
        .collect();
    let ids = api.send(EMAILS, &emails).await?;
    let received = api.receive(EMAILS, EMAILS_ACKED, 200, 30_000).await?;
    ensure!(
        received.len() == EMAILS_ACKED,
        "received {}",
        received.len()
    );
    let receipts: Vec<String> = received.iter().map(|m| m.receipt.clone()).collect();
    ensure!(api.ack(EMAILS, &receipts).await? == EMAILS_ACKED as u64);
    let acked: Vec<&String> = received.iter().map(|m| &m.id).collect();
    let unacked_values = ids
        .iter()
        .zip(&emails)
        .filter(|(id, _)| !acked.contains(id))
        .filter_map(|(_, m)| m["value"].as_str().map(str::to_owned))
        .collect();
    Ok((contents, unacked_values))
}

/// The names of `list[field]`, sorted.
fn names(list: &Value, field: &str) -> anyhow::Result<Vec<String>> {
    let mut names = list[field]
        .as_array()
        .with_context(|| format!("no {field} array in {list}"))?
        .iter()
        .map(|t| t["name"].as_str().map(str::to_owned).context("a name"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    names.sort();
    Ok(names)
}

/// Picks `fields` (those present) from `object`.
fn pick(object: &Value, fields: &[&str]) -> Value {
    let picked: serde_json::Map<String, Value> = fields
        .iter()
        .filter(|f| !object[**f].is_null())
        .map(|f| ((*f).to_owned(), object[*f].clone()))
        .collect();
    Value::Object(picked)
}

/// Topic settings (those the broker shows) that must survive.
const TOPIC_SETTINGS: &[&str] = &[
    "partition_count",
    "replication_factor",
    "retention_ms",
    "retention_bytes",
    "durability",
];
/// Queue numbers and settings (those the broker shows) that must survive.
const QUEUE_FIELDS: &[&str] = &[
    "depth",
    "in_flight",
    "dead_lettered",
    "dropped",
    "visibility_timeout_ms",
    "max_deliveries",
    "dead_letter_queue",
    "partition_count",
    "replication_factor",
    "durability",
    "partitions",
];

/// Everything that must survive, as the API describes it: topics and their
/// partitions, subscriptions and their committed offsets, queues and their numbers
/// and settings. Nothing time-dependent is in it.
async fn snapshot(api: &Api) -> anyhow::Result<Value> {
    let mut topics = serde_json::Map::new();
    for topic in names(&api.get_ok("/v1/topics").await?, "topics")? {
        let detail = api.topic(&topic).await?;
        let partitions: Vec<Value> = detail["partitions"]
            .as_array()
            .with_context(|| format!("no partitions in {detail}"))?
            .iter()
            .map(|p| {
                pick(
                    p,
                    &[
                        "partition",
                        "log_start_offset",
                        "log_end_offset",
                        "high_watermark",
                        "durable_offset",
                    ],
                )
            })
            .collect();
        let subs_list = api
            .get_ok(&format!("/v1/topics/{topic}/subscriptions"))
            .await?;
        let mut subs = serde_json::Map::new();
        for sub in names(&subs_list, "subscriptions")? {
            subs.insert(sub.clone(), json!(api.committed(&topic, &sub).await?));
        }
        let settings = pick(&detail, TOPIC_SETTINGS);
        topics.insert(
            topic,
            json!({"settings": settings, "partitions": partitions, "subscriptions": subs}),
        );
    }
    let mut queues = serde_json::Map::new();
    for queue in names(&api.get_ok("/v1/queues").await?, "queues")? {
        let detail = api.queue(&queue).await?;
        queues.insert(queue, pick(&detail, QUEUE_FIELDS));
    }
    Ok(json!({"topics": topics, "queues": queues}))
}

/// Rewinds the reader of each topic and reads it in full: exactly `contents`.
async fn check_contents(api: &Api, contents: &Contents) -> anyhow::Result<()> {
    for (topic, expected) in contents {
        let path = format!("/v1/topics/{topic}/subscriptions/{READER}/seek");
        let (status, body) = api.post(&path, &json!({"to": "earliest"})).await?;
        ensure!(status == 204, "seek {topic}: {status} {body}");
        let pulled = api.pull_n(topic, READER, expected.len() + 1, 200).await?;
        let got: BTreeMap<(u32, u64), (Option<String>, String)> = pulled
            .into_iter()
            .map(|m| ((m.partition, m.offset), (m.key, m.value)))
            .collect();
        if &got != expected {
            let lost: Vec<_> = expected.keys().filter(|k| !got.contains_key(k)).collect();
            let extra: Vec<_> = got.keys().filter(|k| !expected.contains_key(k)).collect();
            bail!("{topic}: stored messages differ; lost {lost:?}, extra {extra:?}");
        }
    }
    Ok(())
}

/// Whether `broker <args> --help` succeeds and mentions `needle` (the operator CLI
/// is being written alongside these tests).
async fn cli_has(args: &[&str], needle: &str) -> anyhow::Result<bool> {
    let mut args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    args.push("--help".to_owned());
    Ok(match broker_cli(args, None).await? {
        Bounded::Exited(out) => {
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains(needle)
        }
        Bounded::TimedOut => false,
    })
}

/// With the broker stopped, adds `alice` (password on stdin) and grants her produce
/// on topics `orders.*` and consume on queue `emails` with the CLI, then starts the
/// broker again. `false` when this broker's CLI cannot do that yet.
async fn add_user_offline(broker: &mut BrokerProcess) -> anyhow::Result<bool> {
    if !cli_has(&["user", "add"], "--data-dir").await?
        || !cli_has(&["acl", "grant"], "--action").await?
    {
        println!("skipped users and grants: no `broker user add` or `broker acl grant` yet");
        return Ok(false);
    }
    broker.terminate().await?;
    let dir = broker.data_dir().to_path_buf();
    broker_cli_on(
        &["user", "add", USER],
        &dir,
        Some(format!("{USER_PASSWORD}\n")),
    )
    .await?;
    let topic_grant = [
        "acl", "grant", USER, "--topic", "orders.*", "--action", "produce",
    ];
    broker_cli_on(&topic_grant, &dir, None).await?;
    let queue_grant = [
        "acl", "grant", USER, "--queue", EMAILS, "--action", "consume",
    ];
    broker_cli_on(&queue_grant, &dir, None).await?;
    broker.restart().await?;
    println!("added {USER} and her grants with the CLI while the broker was stopped");
    Ok(true)
}

/// The produce `alice` makes under her grant; repeated with its idempotency key at
/// every check, so it proves the grant without changing what is stored.
fn alice_produce() -> Value {
    json!({"messages": [{"key": "customer-0", "value": "from alice"}]})
}

const ALICE_IDEMPOTENCY_KEY: &str = "alice-1";

/// Produces as `alice` (under her idempotency key); the answer.
async fn produce_as_alice(api: &Api) -> anyhow::Result<Value> {
    let alice = api.login_as(USER, USER_PASSWORD).await?;
    let reply = alice
        .call(
            reqwest::Method::POST,
            &format!("/v1/topics/{ORDERS}/messages"),
            Some(&alice_produce()),
            &[("Idempotency-Key", ALICE_IDEMPOTENCY_KEY)],
        )
        .await?;
    expect(reply, 200, "alice produces under her grant")
}

/// What `alice` may do, by her grants: log in; produce to `orders.eu` (the same
/// answer as the first time: nothing appended); not produce to `audit`; see only
/// `orders.eu` and `emails` in listings. A wrong password is refused.
async fn check_user(api: &Api, first_answer: &Value) -> anyhow::Result<()> {
    let answer = produce_as_alice(api).await?;
    ensure!(
        &answer == first_answer,
        "alice's repeated produce answered {answer}, first {first_answer}"
    );
    let alice = api.login_as(USER, USER_PASSWORD).await?;
    let (status, body) = alice
        .post(
            &format!("/v1/topics/{AUDIT}/messages"),
            &json!({"messages": [{"value": "from alice"}]}),
        )
        .await?;
    ensure!(
        status == 403,
        "alice produced to {AUDIT} without a grant: {status} {body}"
    );
    let topics = names(&alice.get_ok("/v1/topics").await?, "topics")?;
    ensure!(topics == [ORDERS], "alice sees topics {topics:?}");
    let queues = names(&alice.get_ok("/v1/queues").await?, "queues")?;
    ensure!(queues == [EMAILS], "alice sees queues {queues:?}");
    let (status, body) = api
        .post(
            "/v1/auth/token",
            &json!({"username": USER, "password": "wrong"}),
        )
        .await?;
    ensure!(status == 401, "a wrong password: {status} {body}");
    Ok(())
}

/// Everything at once: contents, the snapshot, the user, and the receipt of the
/// queue's unacked messages last (it changes the queue).
async fn check_all(
    api: &Api,
    expected: &Value,
    contents: &Contents,
    user: Option<&Value>,
    when: &str,
) -> anyhow::Result<()> {
    let now = snapshot(api).await?;
    if &now != expected {
        bail!("{when}: the state changed\nbefore: {expected:#}\nafter:  {now:#}");
    }
    check_contents(api, contents)
        .await
        .with_context(|| when.to_owned())?;
    if let Some(first_answer) = user {
        check_user(api, first_answer)
            .await
            .with_context(|| when.to_owned())?;
    }
    Ok(())
}

/// A topic, a queue and a subscription made, used and deleted right before the
/// SIGKILL: each change must be stored when its answer comes, not at the next
/// maintenance round.
const LATE_TOPIC: &str = "late.topic";
const LATE_QUEUE: &str = "late.queue";
const LATE_SUB: &str = "late-sub";
/// The subscription deleted right before the SIGKILL.
const DELETED_SUB: &str = "shipping";

async fn late_changes(api: &Api) -> anyhow::Result<()> {
    api.create_topic(LATE_TOPIC, 1).await?;
    let messages: Vec<Value> = (0..3).map(|i| unkeyed(&format!("late-{i}"))).collect();
    api.produce(LATE_TOPIC, &messages, "all", &[]).await?;
    api.subscribe(LATE_TOPIC, LATE_SUB, "earliest", false)
        .await?;
    api.commit(LATE_TOPIC, LATE_SUB, &[(0, 2)]).await?;
    api.create_queue(LATE_QUEUE, json!({})).await?;
    let messages: Vec<Value> = (0..5).map(|i| unkeyed(&format!("late-{i}"))).collect();
    api.send(LATE_QUEUE, &messages).await?;
    let received = api.receive(LATE_QUEUE, 2, 200, 30_000).await?;
    ensure!(received.len() == 2, "late receive: {received:?}");
    ensure!(api.ack(LATE_QUEUE, &[received[0].receipt.clone()]).await? == 1);
    let path = format!("/v1/topics/{ORDERS}/subscriptions/{DELETED_SUB}");
    let (status, body) = api.delete(&path).await?;
    ensure!(status == 204, "delete {DELETED_SUB}: {status} {body}");
    Ok(())
}

/// Checks the late changes after the restart, and returns `expected` with them.
async fn expect_late_changes(api: &Api, mut expected: Value) -> anyhow::Result<Value> {
    let now = snapshot(api).await?;
    let topic = &now["topics"][LATE_TOPIC];
    ensure!(
        topic["partitions"][0]["log_end_offset"] == json!(3),
        "{LATE_TOPIC} after the SIGKILL: {topic}"
    );
    ensure!(
        topic["subscriptions"][LATE_SUB] == json!([2]),
        "{LATE_SUB} after the SIGKILL: {topic}"
    );
    let queue = &now["queues"][LATE_QUEUE];
    ensure!(
        queue["depth"] == json!(4) && queue["in_flight"] == json!(1),
        "{LATE_QUEUE} after the SIGKILL (5 sent, 2 leased, 1 acked): {queue}"
    );
    ensure!(
        now["topics"][ORDERS]["subscriptions"][DELETED_SUB].is_null(),
        "{DELETED_SUB}, deleted before the SIGKILL, is back"
    );
    if let Some(subs) = expected["topics"][ORDERS]["subscriptions"].as_object_mut() {
        subs.remove(DELETED_SUB);
    }
    expected["topics"][LATE_TOPIC] = topic.clone();
    expected["queues"][LATE_QUEUE] = queue.clone();
    Ok(expected)
}

async fn run() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut broker = BrokerProcess::start(dir.path()).await?;
    let (mut contents, unacked) = populate(broker.api()).await?;
    let user = if add_user_offline(&mut broker).await? {
        let answer = produce_as_alice(broker.api()).await?;
        let at = &answer["offsets"][0];
        let stored = contents.entry(ORDERS.to_owned()).or_default();
        let place = (
            u32::try_from(u64_field(at, "partition")?)?,
            u64_field(at, "offset")?,
        );
        stored.insert(
            place,
            (Some("customer-0".to_owned()), "from alice".to_owned()),
        );
        Some(answer)
    } else {
        None
    };
    let user = user.as_ref();
    let expected = snapshot(broker.api()).await?;
    let emails = &expected["queues"][EMAILS];
    ensure!(
        u64_field(emails, "depth")? == (EMAILS_SENT - EMAILS_ACKED) as u64
            && u64_field(emails, "in_flight")? == 0,
        "queue numbers before any restart: {emails}"
    );
    check_all(broker.api(), &expected, &contents, user, "before restarts").await?;

    let old_api = broker.api().fresh()?;
    let took = broker.terminate().await?;
    println!("graceful shutdown took {took:?}");
    broker.restart().await?;
    check_all(broker.api(), &expected, &contents, user, "after SIGTERM").await?;
    old_api
        .get_ok("/v1/topics")
        .await
        .context("a token from before the restart")?;

    late_changes(broker.api()).await?;
    broker.kill9().await?;
    broker.restart().await?;
    let expected = expect_late_changes(broker.api(), expected).await?;
    check_all(broker.api(), &expected, &contents, user, "after SIGKILL").await?;

    let mut got = Vec::new();
    for _ in 0..EMAILS_SENT {
        let batch = broker
            .api()
            .receive(EMAILS, EMAILS_SENT, 200, 30_000)
            .await?;
        if batch.is_empty() {
            break;
        }
        got.extend(batch.into_iter().map(|m| m.value));
    }
    got.sort();
    ensure!(
        got == unacked,
        "queue after the restarts: {got:?}, unacked {unacked:?}"
    );
    broker.terminate().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_keeps_everything() -> anyhow::Result<()> {
    scenario(
        "broker_restart_keeps_everything",
        Duration::from_secs(60),
        run(),
    )
    .await
}
