//! Subscription creates and deletes racing with each other, with the requests on the
//! subscription, and with the delete of its topic: every answer is one the contract
//! names (never a 500), and what is on disk is what the API says, before and after a
//! restart.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use serde_json::json;

use super::support::{Req, TestApp, req};

/// A request the racing tasks send.
#[derive(Clone, Copy, Debug)]
enum Op {
    CreateTopic,
    DeleteTopic,
    Create,
    Delete,
    Commit,
    Seek,
    Pull,
}

impl Op {
    fn request(self, token: &str) -> Req {
        let (method, path, body) = match self {
            Op::CreateTopic => (
                Method::POST,
                "/v1/topics",
                Some(json!({"name": "t", "partitions": 2})),
            ),
            Op::DeleteTopic => (Method::DELETE, "/v1/topics/t", None),
            Op::Create => (
                Method::POST,
                "/v1/topics/t/subscriptions",
                Some(json!({"name": "s", "auto_commit": true})),
            ),
            Op::Delete => (Method::DELETE, "/v1/topics/t/subscriptions/s", None),
            Op::Commit => (
                Method::POST,
                "/v1/topics/t/subscriptions/s/commit",
                Some(json!({"offsets": [{"partition": 0, "offset": 0}]})),
            ),
            Op::Seek => (
                Method::POST,
                "/v1/topics/t/subscriptions/s/seek",
                Some(json!({"to": "earliest"})),
            ),
            Op::Pull => (
                Method::GET,
                "/v1/topics/t/subscriptions/s/messages?wait_ms=20",
                None,
            ),
        };
        let request = req(method, path).token(token);
        match body {
            Some(body) => request.json(&body),
            None => request,
        }
    }

    /// What the contract lets the operation answer while the topic and the
    /// subscription come and go.
    fn allowed(self) -> &'static [StatusCode] {
        match self {
            Op::CreateTopic => &[StatusCode::CREATED, StatusCode::CONFLICT],
            Op::DeleteTopic | Op::Delete | Op::Commit | Op::Seek => {
                &[StatusCode::NO_CONTENT, StatusCode::NOT_FOUND]
            }
            Op::Create => &[
                StatusCode::CREATED,
                StatusCode::CONFLICT,
                StatusCode::NOT_FOUND,
            ],
            Op::Pull => &[StatusCode::OK, StatusCode::NOT_FOUND],
        }
    }
}

/// How many times each operation got each status.
type Tally = BTreeMap<(String, u16), usize>;

/// Runs each of `ops` in a task of its own, again and again, for `duration`.
async fn race(app: &Arc<TestApp>, ops: &[Op], duration: Duration) -> Tally {
    let until = Instant::now() + duration;
    let tasks: Vec<_> = ops
        .iter()
        .map(|&op| {
            let app = Arc::clone(app);
            tokio::spawn(async move {
                let mut tally = Tally::new();
                while Instant::now() < until {
                    let status = app.send(op.request(&app.token)).await.status;
                    *tally
                        .entry((format!("{op:?}"), status.as_u16()))
                        .or_default() += 1;
                    // A request answered without waiting (a 404) never gives its
                    // worker back: without this, such loops starve the others.
                    tokio::task::yield_now().await;
                }
                tally
            })
        })
        .collect();
    let mut tally = Tally::new();
    for task in tasks {
        for (key, count) in task.await.unwrap() {
            *tally.entry(key).or_default() += count;
        }
    }
    tally
}

/// Asserts that every answer in `tally` is one its operation may give.
#[track_caller]
fn assert_allowed(ops: &[Op], tally: &Tally) {
    for op in ops {
        for ((name, status), count) in tally {
            let allowed = op.allowed().iter().any(|s| s.as_u16() == *status);
            if *name == format!("{op:?}") {
                assert!(
                    allowed,
                    "{name} answered {status} {count} time(s): {tally:?}"
                );
            }
        }
    }
}

/// The files under a directory, relative to it; `None` when it does not exist.
fn files(dir: &std::path::Path) -> Option<Vec<String>> {
    fn walk(root: &std::path::Path, dir: &std::path::Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                out.push(path.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    dir.exists().then(|| {
        walk(dir, dir, &mut out);
        out.sort();
        out
    })
}

/// Whether GET of the subscription finds it, and whether its directory is on disk
/// complete; they must agree.
async fn assert_api_and_disk_agree(app: &TestApp, when: &str) -> bool {
    let found = app.get("/v1/topics/t/subscriptions/s").await.status;
    let dir = app.broker.data_dir().join("topics/t/subscriptions/s");
    let on_disk = files(&dir);
    let complete = on_disk.as_ref().is_some_and(|f| {
        f.iter().any(|f| f == "subscription.json") && !f.contains(&".creating".into())
    });
    match found {
        StatusCode::OK => assert!(complete, "{when}: GET finds s, on disk: {on_disk:?}"),
        StatusCode::NOT_FOUND => assert!(
            on_disk.is_none(),
            "{when}: GET answers 404 for s, yet on disk: {on_disk:?}"
        ),
        other => panic!("{when}: GET of s answered {other}"),
    }
    found == StatusCode::OK
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_subscription_deleted_while_created_again_leaves_no_files_and_stays_deleted() {
    const ROUNDS: usize = 300;
    let app = Arc::new(TestApp::start().await);
    app.create_topic("t", json!({"partitions": 2})).await;
    let ops = [Op::Delete, Op::Create];
    let mut tally = Tally::new();
    for round in 0..ROUNDS {
        if !assert_api_and_disk_agree(&app, &format!("before round {round}")).await {
            app.send(Op::Create.request(&app.token)).await;
        }
        // One delete and one create at once: the create lands before the delete
        // (409, then the delete removes it), after it (a new subscription), or in
        // the middle of it.
        let tasks: Vec<_> = ops
            .iter()
            .map(|&op| {
                let app = Arc::clone(&app);
                tokio::spawn(async move { (op, app.send(op.request(&app.token)).await.status) })
            })
            .collect();
        for task in tasks {
            let (op, status) = task.await.unwrap();
            *tally
                .entry((format!("{op:?}"), status.as_u16()))
                .or_default() += 1;
        }
        assert_api_and_disk_agree(&app, &format!("after round {round}")).await;
        assert_allowed(&ops, &tally);
    }
    let before = app
        .get("/v1/topics/t/subscriptions")
        .await
        .expect(StatusCode::OK);
    let app = Arc::try_unwrap(app).ok().unwrap().restart().await;
    let after = app
        .get("/v1/topics/t/subscriptions")
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        before, after,
        "a restart brings back what the API had: {tally:?}"
    );
    assert_api_and_disk_agree(&app, "after the restart").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_racing_creates_and_deletes_of_their_subscription_answer_404_not_500() {
    let app = Arc::new(TestApp::start().await);
    app.create_topic("t", json!({"partitions": 2})).await;
    app.produce("t", &["a", "b", "c"]).await;
    let ops = [
        Op::Create,
        Op::Create,
        Op::Delete,
        Op::Delete,
        Op::Commit,
        Op::Seek,
        Op::Pull,
    ];
    let tally = race(&app, &ops, Duration::from_secs(2)).await;
    assert_allowed(&ops, &tally);
    for op in [Op::Commit, Op::Seek, Op::Pull] {
        let served = op.allowed()[0].as_u16();
        assert!(
            tally.contains_key(&(format!("{op:?}"), served)),
            "{op:?} was never served: {tally:?}"
        );
    }
    assert_api_and_disk_agree(&app, "after the race").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_racing_the_delete_of_their_topic_answer_404_not_500() {
    let app = Arc::new(TestApp::start().await);
    let ops = [
        Op::CreateTopic,
        Op::DeleteTopic,
        Op::Create,
        Op::Create,
        Op::Commit,
        Op::Commit,
        Op::Seek,
        Op::Pull,
    ];
    let tally = race(&app, &ops, Duration::from_secs(2)).await;
    assert_allowed(&ops, &tally);
}
