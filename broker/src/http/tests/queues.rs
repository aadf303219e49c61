//! Queues through HTTP: create, list, describe, delete, send, receive (leases), ack,
//! nack, dead letters and redrive.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use super::support::{TestApp, damage_stored_value, req};

async fn receive(app: &TestApp, queue: &str, body: Value) -> Vec<Value> {
    app.post(&format!("/v1/queues/{queue}/receive"), body)
        .await
        .expect(StatusCode::OK)["messages"]
        .as_array()
        .unwrap()
        .clone()
}

/// A broker with queue `jobs` (50 ms leases, two deliveries) and its dead-letter
/// queue `jobs.dlq`.
async fn quick_jobs_with_a_dead_letter_queue() -> TestApp {
    let app = TestApp::start().await;
    app.create_queue("jobs.dlq", json!({})).await;
    app.create_queue(
        "jobs",
        json!({"visibility_timeout_ms": 50, "max_deliveries": 2, "dead_letter_queue": "jobs.dlq"}),
    )
    .await;
    app
}

fn receipts(messages: &[Value]) -> Vec<Value> {
    messages.iter().map(|m| m["receipt"].clone()).collect()
}

#[tokio::test]
async fn a_created_queue_is_described_listed_and_deleted() {
    let app = TestApp::start().await;
    let created = app.create_queue("jobs", json!({})).await;
    assert_eq!(created["name"], "jobs");
    assert_eq!(created["visibility_timeout_ms"], 30000);
    assert_eq!(created["max_deliveries"], 5);
    assert_eq!(created["dead_letter_queue"], Value::Null);
    assert_eq!(created["partition_count"], 1);
    assert_eq!(created["replication_factor"], 1);
    assert_eq!(created["durability"], "fsync");
    for field in ["depth", "in_flight", "dead_lettered", "dropped"] {
        assert_eq!(created[field], 0, "{field}");
    }
    assert_eq!(created["partitions"][0]["leader"], 1);
    let custom = app
        .create_queue(
            "jobs.custom",
            json!({"visibility_timeout_ms": 1000, "max_deliveries": 2,
                   "dead_letter_queue": "jobs.dlq", "partitions": 3,
                   "durability": "interval"}),
        )
        .await;
    assert_eq!(custom["partition_count"], 3);
    assert_eq!(custom["partitions"].as_array().unwrap().len(), 3);
    assert_eq!(custom["dead_letter_queue"], "jobs.dlq");
    assert_eq!(custom["durability"], "interval");
    app.post("/v1/queues", json!({"name": "jobs"}))
        .await
        .expect_error(StatusCode::CONFLICT, "already_exists");
    for body in [
        json!({"name": "x", "visibility_timeout_ms": 0}),
        json!({"name": "x", "max_deliveries": 0}),
        json!({"name": "x", "dead_letter_queue": "x"}),
        json!({"name": "x", "dead_letter_queue": "a/b"}),
        json!({"name": "x", "partitions": 0}),
        json!({"name": "x", "replication_factor": 3}),
        json!({"name": "x", "visibility": 5}),
        json!({"name": "a b"}),
        json!({"name": 5}),
    ] {
        app.post("/v1/queues", body)
            .await
            .expect_error(StatusCode::BAD_REQUEST, "bad_request");
    }
    app.send_to_queue("jobs", &["a", "b"]).await;
    let list = app.get("/v1/queues").await.expect(StatusCode::OK);
    assert_eq!(list["queues"][0]["name"], "jobs");
    assert_eq!(list["queues"][0]["depth"], 2);
    assert_eq!(list["queues"][0]["in_flight"], 0);
    assert_eq!(list["queues"][1]["name"], "jobs.custom");
    assert_eq!(list["queues"][1]["partitions"], 3);
    assert_eq!(list["queues"].as_array().unwrap().len(), 2);

    assert_eq!(
        app.delete("/v1/queues/jobs").await.status,
        StatusCode::NO_CONTENT
    );
    app.get("/v1/queues/jobs")
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    app.delete("/v1/queues/jobs")
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn received_messages_are_leased_until_acked() {
    let app = TestApp::start().await;
    app.create_queue("jobs", json!({})).await;
    let ids = app.send_to_queue("jobs", &["one", "two", "three"]).await;
    assert_eq!(ids, ["0-0", "0-1", "0-2"]);
    let got = receive(&app, "jobs", json!({"max": 2})).await;
    assert_eq!(got.len(), 2);
    assert_eq!(got[0]["id"], "0-0");
    assert_eq!(got[0]["value"], "one");
    assert_eq!(got[0]["value_encoding"], "utf8");
    assert_eq!(got[0]["delivery_count"], 1);
    assert_eq!(got[0]["key"], Value::Null);
    assert!(got[0]["timestamp"].as_i64().unwrap() > 0);
    assert!(got[0]["receipt"].as_str().unwrap().contains('.'));
    let described = app.get("/v1/queues/jobs").await.expect(StatusCode::OK);
    assert_eq!(described["depth"], 3);
    assert_eq!(described["in_flight"], 2);

    // The leased ones are invisible; the default receive takes one.
    let rest = receive(&app, "jobs", json!({})).await;
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0]["value"], "three");
    // No body at all is the same as `{}`.
    let resp = app
        .send(req(Method::POST, "/v1/queues/jobs/receive").token(&app.token))
        .await;
    assert_eq!(resp.expect(StatusCode::OK)["messages"], json!([]));

    let acked = app
        .post("/v1/queues/jobs/ack", json!({"receipts": receipts(&got)}))
        .await
        .expect(StatusCode::OK);
    assert_eq!(acked, json!({"acked": 2}));
    let again = app
        .post("/v1/queues/jobs/ack", json!({"receipts": receipts(&got)}))
        .await
        .expect(StatusCode::OK);
    assert_eq!(again, json!({"acked": 0}), "a repeated ack does not count");
    let described = app.get("/v1/queues/jobs").await.expect(StatusCode::OK);
    assert_eq!(described["depth"], 1);
    assert_eq!(described["in_flight"], 1);
}

#[tokio::test]
async fn bad_receipts_and_receive_parameters_are_400_and_change_nothing() {
    let app = TestApp::start().await;
    app.create_queue("jobs", json!({})).await;
    app.create_queue("other", json!({})).await;
    app.send_to_queue("jobs", &["a"]).await;
    app.send_to_queue("other", &["b"]).await;
    let mine = receive(&app, "jobs", json!({})).await;
    let theirs = receive(&app, "other", json!({})).await;
    let good = mine[0]["receipt"].as_str().unwrap().to_owned();
    let (payload, _) = good.split_once('.').unwrap();
    let forged = format!("{payload}.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    for bad in [
        json!(["garbage"]),
        json!([""]),
        json!([good.clone(), forged]),
        json!([good.clone(), theirs[0]["receipt"].clone()]),
        json!([5]),
        json!("x"),
    ] {
        for op in ["ack", "nack"] {
            app.post(
                &format!("/v1/queues/jobs/{op}"),
                json!({"receipts": bad.clone()}),
            )
            .await
            .expect_error(StatusCode::BAD_REQUEST, "bad_request");
        }
    }
    app.post("/v1/queues/jobs/ack", json!({}))
        .await
        .expect_error(StatusCode::BAD_REQUEST, "bad_request");
    app.post(
        "/v1/queues/jobs/nack",
        json!({"receipts": [good.clone()], "delay_ms": -1}),
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST, "bad_request");
    for body in [
        json!({"max": 0}),
        json!({"max": 1001}),
        json!({"wait_ms": 30001}),
        json!({"visibility_timeout_ms": 0}),
        json!({"max": "1"}),
        json!({"maximum": 1}),
    ] {
        app.post("/v1/queues/jobs/receive", body)
            .await
            .expect_error(StatusCode::BAD_REQUEST, "bad_request");
    }
    let described = app.get("/v1/queues/jobs").await.expect(StatusCode::OK);
    assert_eq!(described["in_flight"], 1, "nothing was acked or nacked");
    let acked = app
        .post("/v1/queues/jobs/ack", json!({"receipts": [good]}))
        .await
        .expect(StatusCode::OK);
    assert_eq!(acked["acked"], 1);
}

#[tokio::test]
async fn a_receipt_of_a_deleted_queue_acks_nothing_in_its_successor() {
    let app = TestApp::start().await;
    app.create_queue("jobs", json!({})).await;
    app.send_to_queue("jobs", &["old"]).await;
    let old = receipts(&receive(&app, "jobs", json!({})).await);
    app.delete("/v1/queues/jobs")
        .await
        .expect(StatusCode::NO_CONTENT);
    app.create_queue("jobs", json!({})).await;
    app.send_to_queue("jobs", &["new"]).await;
    // The new message is at the same partition and offset, on its first delivery,
    // as the old receipt says.
    let new = receive(&app, "jobs", json!({})).await;
    assert_eq!(new[0]["delivery_count"], 1);
    for op in ["ack", "nack"] {
        let message = app
            .post(
                &format!("/v1/queues/jobs/{op}"),
                json!({"receipts": old.clone()}),
            )
            .await
            .expect_error(StatusCode::BAD_REQUEST, "bad_request");
        assert!(message.contains("earlier queue"), "{message}");
    }
    let described = app.get("/v1/queues/jobs").await.expect(StatusCode::OK);
    assert_eq!(
        (described["depth"].clone(), described["in_flight"].clone()),
        (json!(1), json!(1))
    );
    let acked = app
        .post("/v1/queues/jobs/ack", json!({"receipts": receipts(&new)}))
        .await
        .expect(StatusCode::OK);
    assert_eq!(acked["acked"], 1);
}

#[tokio::test]
async fn nacked_and_expired_messages_come_back_with_a_higher_delivery_count() {
    let app = TestApp::start().await;
    app.create_queue("jobs", json!({"visibility_timeout_ms": 100}))
        .await;
    app.send_to_queue("jobs", &["a"]).await;
    let first = receive(&app, "jobs", json!({})).await;
    assert_eq!(first[0]["delivery_count"], 1);
    let nacked = app
        .post(
            "/v1/queues/jobs/nack",
            json!({"receipts": receipts(&first)}),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(nacked, json!({"nacked": 1}));
    let second = receive(&app, "jobs", json!({"visibility_timeout_ms": 60000})).await;
    assert_eq!(second[0]["id"], first[0]["id"]);
    assert_eq!(second[0]["delivery_count"], 2);
    // The old receipt is stale now.
    let acked = app
        .post("/v1/queues/jobs/ack", json!({"receipts": receipts(&first)}))
        .await
        .expect(StatusCode::OK);
    assert_eq!(acked["acked"], 0);
    let nacked = app
        .post(
            "/v1/queues/jobs/nack",
            json!({"receipts": receipts(&second), "delay_ms": 10}),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(nacked["nacked"], 1);
    // The queue's own 100 ms lease runs out; a waiting receive gets it again.
    let third = receive(&app, "jobs", json!({"wait_ms": 5000})).await;
    assert_eq!(third[0]["delivery_count"], 3);
    let fourth = receive(&app, "jobs", json!({"wait_ms": 5000})).await;
    assert_eq!(fourth[0]["delivery_count"], 4);
    let acked = app
        .post(
            "/v1/queues/jobs/ack",
            json!({"receipts": receipts(&fourth)}),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(acked["acked"], 1);
    assert!(
        receive(&app, "jobs", json!({"wait_ms": 300}))
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn exhausted_messages_are_dead_lettered_and_redriven_back() {
    let app = quick_jobs_with_a_dead_letter_queue().await;
    app.send(
        req(Method::POST, "/v1/queues/jobs/messages")
            .token(&app.token)
            .json(&json!({"messages": [{"value": "poison", "key": "k", "headers": {"h": "1"}}]})),
    )
    .await
    .expect(StatusCode::OK);
    for delivery in 1..=2 {
        let got = receive(&app, "jobs", json!({"wait_ms": 5000})).await;
        assert_eq!(got[0]["delivery_count"], delivery);
        tokio::time::sleep(Duration::from_millis(80)).await;
    }
    // The third delivery would exceed max_deliveries: it goes to the DLQ instead.
    assert!(
        receive(&app, "jobs", json!({"wait_ms": 100}))
            .await
            .is_empty()
    );
    let jobs = app.get("/v1/queues/jobs").await.expect(StatusCode::OK);
    assert_eq!(jobs["dead_lettered"], 1);
    assert_eq!(jobs["depth"], 0);
    let dead = receive(&app, "jobs.dlq", json!({"visibility_timeout_ms": 50})).await;
    assert_eq!(dead[0]["value"], "poison");
    assert_eq!(dead[0]["key"], "k");
    assert_eq!(dead[0]["headers"]["h"], "1");
    assert_eq!(dead[0]["headers"]["mom.origin.queue"], "jobs");
    assert_eq!(dead[0]["headers"]["mom.origin.delivery_count"], "2");
    tokio::time::sleep(Duration::from_millis(80)).await;

    for body in [
        json!({"max": 0}),
        json!({"max": "all"}),
        json!({"limit": 1}),
    ] {
        app.post("/v1/queues/jobs.dlq/redrive", body)
            .await
            .expect_error(StatusCode::BAD_REQUEST, "bad_request");
    }
    let moved = app
        .send(req(Method::POST, "/v1/queues/jobs.dlq/redrive").token(&app.token))
        .await
        .expect(StatusCode::OK);
    assert_eq!(moved, json!({"moved": 1}));
    let back = receive(&app, "jobs", json!({"wait_ms": 5000})).await;
    assert_eq!(back[0]["value"], "poison");
    assert_eq!(back[0]["delivery_count"], 1);
    assert!(back[0]["headers"].get("mom.origin.queue").is_none());
    let dlq = app.get("/v1/queues/jobs.dlq").await.expect(StatusCode::OK);
    assert_eq!(dlq["depth"], 0);
    let moved = app
        .post("/v1/queues/jobs.dlq/redrive", json!({"max": 10}))
        .await
        .expect(StatusCode::OK);
    assert_eq!(moved, json!({"moved": 0}));
}

#[tokio::test]
async fn a_retried_send_with_the_same_idempotency_key_returns_the_first_ids() {
    let app = TestApp::start().await;
    app.create_queue("jobs", json!({"partitions": 2})).await;
    let send = |key: &'static str| {
        let app = &app;
        async move {
            app.send(
                req(Method::POST, "/v1/queues/jobs/messages")
                    .token(&app.token)
                    .header("Idempotency-Key", key)
                    .json(&json!({"messages": [{"value": "a"}, {"value": "b", "value_encoding": "base64"}]})),
            )
            .await
        }
    };
    // One base64 character decodes to nothing: the request fails, and the key with it.
    send("k1")
        .await
        .expect_error(StatusCode::BAD_REQUEST, "bad_request");
    let send_ok = |key: &'static str| {
        let app = &app;
        async move {
            app.send(
                req(Method::POST, "/v1/queues/jobs/messages")
                    .token(&app.token)
                    .header("Idempotency-Key", key)
                    .json(&json!({"messages": [{"value": "a"}, {"value": "/wA=", "value_encoding": "base64"}]})),
            )
            .await
            .expect(StatusCode::OK)
        }
    };
    let first = send_ok("k1").await;
    assert_eq!(first, send_ok("k1").await);
    assert_eq!(first["ids"].as_array().unwrap().len(), 2);
    let described = app.get("/v1/queues/jobs").await.expect(StatusCode::OK);
    assert_eq!(described["depth"], 2);
    let got = receive(&app, "jobs", json!({"max": 10})).await;
    let mut values: Vec<_> = got
        .iter()
        .map(|m| (m["value"].clone(), m["value_encoding"].clone()))
        .collect();
    values.sort_by_key(|(v, _)| v.to_string());
    assert_eq!(
        values,
        [
            (json!("/wA="), json!("base64")),
            (json!("a"), json!("utf8"))
        ]
    );
    app.post("/v1/queues/jobs/messages", json!({"messages": []}))
        .await
        .expect_error(StatusCode::BAD_REQUEST, "bad_request");
    app.post(
        "/v1/queues/nope/messages",
        json!({"messages": [{"value": "x"}]}),
    )
    .await
    .expect_error(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn a_damaged_message_does_not_fail_the_deliveries_of_other_partitions() {
    let app = TestApp::start().await;
    app.create_queue("jobs", json!({"partitions": 2})).await;
    let ids = app.send_to_queue("jobs", &["first-job", "other-job"]).await;
    let partitions: Vec<&str> = ids.iter().map(|id| id.split('-').next().unwrap()).collect();
    assert_ne!(
        partitions[0], partitions[1],
        "one message per partition: {ids:?}"
    );
    let partition = app
        .broker
        .data_dir()
        .join("queues/jobs")
        .join(partitions[0]);
    damage_stored_value(&partition, b"first-job");

    let got = receive(&app, "jobs", json!({"max": 10})).await;
    let values: Vec<&str> = got.iter().map(|m| m["value"].as_str().unwrap()).collect();
    assert_eq!(values, ["other-job"]);
}

#[tokio::test]
async fn a_damaged_message_holds_back_no_other_and_is_dropped_once_exhausted() {
    let app = quick_jobs_with_a_dead_letter_queue().await;
    for value in ["before", "damaged", "after"] {
        app.send_to_queue("jobs", &[value]).await;
    }
    damage_stored_value(&app.broker.data_dir().join("queues/jobs/0"), b"damaged");

    let got = receive(&app, "jobs", json!({"max": 10})).await;
    let values: Vec<&str> = got.iter().map(|m| m["value"].as_str().unwrap()).collect();
    assert_eq!(values, ["before", "after"]);
    let acked = app
        .post("/v1/queues/jobs/ack", json!({"receipts": receipts(&got)}))
        .await
        .expect(StatusCode::OK);
    assert_eq!(acked["acked"], 2);

    // Its second delivery: nothing else is there, so the damage is the answer.
    tokio::time::sleep(Duration::from_millis(80)).await;
    app.post("/v1/queues/jobs/receive", json!({}))
        .await
        .expect_error(StatusCode::INTERNAL_SERVER_ERROR, "internal");
    // A third would exceed max_deliveries: with no readable copy to dead-letter, it
    // is dropped and counted.
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert!(
        receive(&app, "jobs", json!({"wait_ms": 100}))
            .await
            .is_empty()
    );
    let jobs = app.get("/v1/queues/jobs").await.expect(StatusCode::OK);
    assert_eq!(
        (&jobs["depth"], &jobs["dropped"], &jobs["dead_lettered"]),
        (&json!(0), &json!(1), &json!(0)),
        "{jobs}"
    );
    let dlq = app.get("/v1/queues/jobs.dlq").await.expect(StatusCode::OK);
    assert_eq!(dlq["depth"], 0, "{dlq}");
}
