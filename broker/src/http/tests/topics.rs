//! Topics: create, list, describe, delete, produce (encodings, keys, acks,
//! durability, idempotency, bad input).

use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use super::support::{TestApp, req};
use crate::config::Durability;

#[tokio::test]
async fn a_created_topic_is_described_listed_and_deleted() {
    let app = TestApp::start().await;
    let created = app
        .create_topic(
            "orders.eu-1_x",
            json!({"partitions": 3, "retention_ms": 60000, "retention_bytes": 1048576}),
        )
        .await;
    assert_eq!(created["name"], "orders.eu-1_x");
    assert_eq!(created["partition_count"], 3);
    assert_eq!(created["replication_factor"], 1);
    assert_eq!(created["retention_ms"], 60000);
    assert_eq!(created["retention_bytes"], 1048576);
    assert_eq!(created["durability"], "fsync");
    let partitions = created["partitions"].as_array().unwrap();
    assert_eq!(partitions.len(), 3);
    for (i, p) in partitions.iter().enumerate() {
        assert_eq!(p["partition"], i);
        assert_eq!(p["leader"], 1);
        assert_eq!(p["replicas"], json!([1]));
        assert_eq!(p["isr"], json!([1]));
        for field in [
            "log_start_offset",
            "log_end_offset",
            "high_watermark",
            "durable_offset",
        ] {
            assert_eq!(p[field], 0, "{field}");
        }
    }
    assert_eq!(
        app.get("/v1/topics/orders.eu-1_x")
            .await
            .expect(StatusCode::OK),
        created
    );

    let defaults = app
        .create_topic("plain", json!({"durability": "interval"}))
        .await;
    assert_eq!(defaults["partition_count"], 1);
    assert_eq!(defaults["retention_ms"], Value::Null);
    assert_eq!(defaults["durability"], "interval");

    let list = app.get("/v1/topics").await.expect(StatusCode::OK);
    assert_eq!(
        list["topics"],
        json!([
            {"name": "orders.eu-1_x", "partitions": 3, "replication_factor": 1,
             "retention_ms": 60000, "retention_bytes": 1048576, "durability": "fsync"},
            {"name": "plain", "partitions": 1, "replication_factor": 1,
             "retention_ms": null, "retention_bytes": null, "durability": "interval"},
        ])
    );

    let resp = app.delete("/v1/topics/plain").await;
    assert_eq!(resp.status, StatusCode::NO_CONTENT);
    assert!(resp.body.is_empty());
    app.get("/v1/topics/plain")
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    app.delete("/v1/topics/plain")
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    // The name is free again.
    app.create_topic("plain", json!({})).await;
}

#[tokio::test]
async fn bad_topic_settings_are_400_and_duplicates_409() {
    let app = TestApp::start().await;
    app.create_topic("t", json!({})).await;
    app.post("/v1/topics", json!({"name": "t", "partitions": 2}))
        .await
        .expect_error(StatusCode::CONFLICT, "already_exists");
    for body in [
        json!({"name": "x", "partitions": 0}),
        json!({"name": "x", "partitions": 5000}),
        json!({"name": "x", "partitions": -1}),
        json!({"name": "x", "partitions": "2"}),
        json!({"name": "x", "replication_factor": 2}),
        json!({"name": "x", "replication_factor": 0}),
        json!({"name": "x", "durability": "sometimes"}),
        json!({"name": "x", "partitons": 2}),
        json!({"name": ""}),
        json!({"name": ".."}),
        json!({"name": "a/b"}),
        json!({"name": "a".repeat(250)}),
        json!({"partitions": 1}),
        json!({"name": null}),
        json!("x"),
    ] {
        app.post("/v1/topics", body.clone())
            .await
            .expect_error(StatusCode::BAD_REQUEST, "bad_request");
    }
    let list = app.get("/v1/topics").await.expect(StatusCode::OK);
    assert_eq!(list["topics"].as_array().unwrap().len(), 1, "{list}");
    app.create_topic(&"a".repeat(249), json!({})).await;
}

#[tokio::test]
async fn produce_answers_offsets_in_request_order_and_keys_keep_partitions() {
    let app = TestApp::start().await;
    app.create_topic("t", json!({"partitions": 4})).await;
    let messages: Vec<Value> = (0..40)
        .map(|i| json!({"key": format!("k{}", i % 5), "value": format!("v{i}")}))
        .collect();
    let answer = app
        .post("/v1/topics/t/messages", json!({"messages": messages}))
        .await
        .expect(StatusCode::OK);
    assert_eq!(answer["durability"], "fsync");
    let offsets = answer["offsets"].as_array().unwrap();
    assert_eq!(offsets.len(), 40);
    let mut partition_of_key = std::collections::HashMap::new();
    let mut next = [0u64; 4];
    for (i, o) in offsets.iter().enumerate() {
        let p = o["partition"].as_u64().unwrap();
        let key = format!("k{}", i % 5);
        assert_eq!(*partition_of_key.entry(key).or_insert(p), p);
        let slot = &mut next[p as usize];
        assert_eq!(
            o["offset"].as_u64().unwrap(),
            *slot,
            "offsets grow by one per partition"
        );
        *slot += 1;
    }
    let described = app.get("/v1/topics/t").await.expect(StatusCode::OK);
    let ends: Vec<u64> = described["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["log_end_offset"].as_u64().unwrap())
        .collect();
    assert_eq!(ends, next);
    // Durable and committed up to the end after an fsync produce.
    for p in described["partitions"].as_array().unwrap() {
        assert_eq!(p["durable_offset"], p["log_end_offset"]);
        assert_eq!(p["high_watermark"], p["log_end_offset"]);
    }
}

#[tokio::test]
async fn acks_and_topic_durability_are_stated_in_the_answer() {
    let app = TestApp::start_with(|c| c.durability = Durability::Interval).await;
    app.create_topic("by-default", json!({})).await;
    app.create_topic("synced", json!({"durability": "fsync"}))
        .await;
    let produce = |topic: &'static str, acks: Option<&'static str>| {
        let mut body = json!({"messages": [{"value": "x"}]});
        if let Some(acks) = acks {
            body["acks"] = json!(acks);
        }
        let app = &app;
        async move {
            app.post(&format!("/v1/topics/{topic}/messages"), body)
                .await
                .expect(StatusCode::OK)["durability"]
                .clone()
        }
    };
    assert_eq!(produce("by-default", None).await, "interval");
    assert_eq!(produce("synced", None).await, "fsync");
    assert_eq!(produce("synced", Some("all")).await, "fsync");
    assert_eq!(produce("synced", Some("leader")).await, "fsync");
    assert_eq!(produce("synced", Some("none")).await, "none");
    app.post(
        "/v1/topics/synced/messages",
        json!({"messages": [{"value": "x"}], "acks": "some"}),
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST, "bad_request");
}

#[tokio::test]
async fn the_flusher_fsyncs_what_interval_and_acks_none_produces_left_unsynced() {
    let app = TestApp::start_with(|c| {
        c.durability = Durability::Interval;
        c.flush_interval_ms = 50;
    })
    .await;
    app.create_topic("fast", json!({})).await;
    app.create_topic("synced", json!({"durability": "fsync"}))
        .await;
    let unsynced = |topic: &'static str| {
        let app = &app;
        async move {
            let described = app
                .get(&format!("/v1/topics/{topic}"))
                .await
                .expect(StatusCode::OK);
            let p = &described["partitions"][0];
            p["log_end_offset"].as_u64().unwrap() - p["durable_offset"].as_u64().unwrap()
        }
    };
    app.produce("fast", &["a", "b"]).await;
    app.post(
        "/v1/topics/synced/messages",
        json!({"messages": [{"value": "c"}], "acks": "none"}),
    )
    .await
    .expect(StatusCode::OK);
    // No append waits for an interval fsync, and no timer runs yet.
    assert_eq!(unsynced("fast").await, 2);
    assert_eq!(unsynced("synced").await, 1);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let flusher = tokio::spawn(Arc::clone(&app.broker).run_flusher(stop_rx));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while unsynced("fast").await + unsynced("synced").await > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the flusher never ran"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop_tx.send(true).unwrap();
    flusher.await.unwrap();
}

#[tokio::test]
async fn values_headers_and_keys_round_trip_in_utf8_and_base64() {
    let app = TestApp::start().await;
    app.create_topic("t", json!({})).await;
    app.post(
        "/v1/topics/t/messages",
        json!({"messages": [
            {"value": "héllo \"wörld\"\n", "key": "k1", "headers": {"trace": "abc", "n": "1"}},
            {"value": "AAEC/w==", "value_encoding": "base64"},
            {"value": "aGk=", "value_encoding": "base64"},
            {"value": "", "key": null, "headers": null, "value_encoding": null},
        ]}),
    )
    .await
    .expect(StatusCode::OK);
    app.post("/v1/topics/t/subscriptions", json!({"name": "s"}))
        .await
        .expect(StatusCode::CREATED);
    let pulled = app
        .get("/v1/topics/t/subscriptions/s/messages")
        .await
        .expect(StatusCode::OK);
    let m = pulled["messages"].as_array().unwrap();
    assert_eq!(m.len(), 4);
    assert_eq!(m[0]["value"], "héllo \"wörld\"\n");
    assert_eq!(m[0]["value_encoding"], "utf8");
    assert_eq!(m[0]["key"], "k1");
    assert_eq!(m[0]["headers"], json!({"trace": "abc", "n": "1"}));
    assert_eq!(m[0]["partition"], 0);
    assert_eq!(m[0]["offset"], 0);
    let now = crate::message::now_ms();
    let ts = m[0]["timestamp"].as_i64().unwrap();
    assert!((now - 60_000..=now).contains(&ts), "{ts} vs {now}");
    assert_eq!(m[1]["value"], "AAEC/w==");
    assert_eq!(m[1]["value_encoding"], "base64");
    assert_eq!(m[1]["key"], Value::Null);
    assert_eq!(m[1]["headers"], json!({}));
    // Base64 in, valid UTF-8 out: it comes back as text.
    assert_eq!(m[2]["value"], "hi");
    assert_eq!(m[2]["value_encoding"], "utf8");
    assert_eq!(m[3]["value"], "");
}

#[tokio::test]
async fn a_bad_message_fails_the_whole_produce_and_stores_nothing() {
    let app = TestApp::start().await;
    app.create_topic("t", json!({})).await;
    let bad_batches = [
        json!({"messages": []}),
        json!({"messages": [{"value": "ok"}, {"value": "%%%", "value_encoding": "base64"}]}),
        json!({"messages": [{"value": "ok"}, {"value": "x", "headers": {"mom.idempotency": "x"}}]}),
        json!({"messages": [{"value": "ok"}, {"value": 12}]}),
        json!({"messages": [{"value": "ok"}, {}]}),
        json!({"messages": [{"value": "ok", "value_encoding": "utf16"}]}),
        json!({"messages": [{"value": "ok", "headers": {"n": 1}}]}),
        json!({"messages": [{"value": "ok", "key": 7}]}),
        json!({"messages": {"value": "ok"}}),
        json!({"message": [{"value": "ok"}]}),
        json!({}),
    ];
    for body in bad_batches {
        let message = app
            .post("/v1/topics/t/messages", body.clone())
            .await
            .expect_error(StatusCode::BAD_REQUEST, "bad_request");
        assert!(message.len() > 10, "{body}: {message}");
    }
    let malformed = app
        .send(
            req(Method::POST, "/v1/topics/t/messages")
                .token(&app.token)
                .raw("application/json", r#"{"messages": [{"value": "ok"}"#),
        )
        .await;
    malformed.expect_error(StatusCode::BAD_REQUEST, "bad_request");
    assert_eq!(app.broker.topic("t").unwrap().partitions()[0].end().0, 0);
    app.post(
        "/v1/topics/missing/messages",
        json!({"messages": [{"value": "x"}]}),
    )
    .await
    .expect_error(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn a_retried_produce_with_the_same_idempotency_key_returns_the_first_answer() {
    let app = TestApp::start().await;
    app.create_topic("t", json!({"partitions": 2})).await;
    let body = json!({"messages": [{"value": "a"}, {"value": "b"}, {"value": "c"}]});
    let produce = |key: &'static str| {
        let body = body.clone();
        let app = &app;
        async move {
            app.send(
                req(Method::POST, "/v1/topics/t/messages")
                    .token(&app.token)
                    .header("Idempotency-Key", key)
                    .json(&body),
            )
            .await
            .expect(StatusCode::OK)
        }
    };
    let first = produce("request-1").await;
    let again = produce("request-1").await;
    assert_eq!(first, again);
    let other = produce("request-2").await;
    assert_ne!(first["offsets"], other["offsets"]);
    let total = stored(&app, "t");
    assert_eq!(total, 6, "the retry appended nothing");
    // The same key for other messages: refused, nothing stored.
    let message = app
        .send(
            req(Method::POST, "/v1/topics/t/messages")
                .token(&app.token)
                .header("Idempotency-Key", "request-1")
                .json(&json!({"messages": [{"value": "different"}]})),
        )
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused");
    assert!(message.contains("request-1"), "{message}");
    let total = stored(&app, "t");
    assert_eq!(total, 6, "the refused request appended nothing");
    let too_long = "k".repeat(300);
    for key in ["", too_long.as_str()] {
        app.send(
            req(Method::POST, "/v1/topics/t/messages")
                .token(&app.token)
                .header("Idempotency-Key", key)
                .json(&body),
        )
        .await
        .expect_error(StatusCode::BAD_REQUEST, "bad_request");
    }
}

/// Messages stored in every partition of `topic`.
fn stored(app: &TestApp, topic: &str) -> u64 {
    let topic = app.broker.topic(topic).unwrap();
    topic.partitions().iter().map(|p| p.end().0).sum()
}

/// Partition 0's log start, log end, high watermark and durable offset, as described.
async fn partition_offsets(app: &TestApp, topic: &str) -> [u64; 4] {
    let described = app
        .get(&format!("/v1/topics/{topic}"))
        .await
        .expect(StatusCode::OK);
    let p = &described["partitions"][0];
    [
        "log_start_offset",
        "log_end_offset",
        "high_watermark",
        "durable_offset",
    ]
    .map(|field| p[field].as_u64().unwrap())
}

#[tokio::test]
async fn retention_by_age_empties_an_idle_partition_whose_only_segment_expired() {
    let app = TestApp::start_with(|c| c.maintenance_interval_ms = 20).await;
    app.create_topic("short", json!({"retention_ms": 200}))
        .await;
    app.post("/v1/topics/short/subscriptions", json!({"name": "s"}))
        .await
        .expect(StatusCode::CREATED);
    app.produce("short", &["expires"]).await;
    assert_eq!(partition_offsets(&app, "short").await, [0, 1, 1, 1]);

    // Nothing is appended from here on: only the maintenance timer can expire it.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let maintenance = tokio::spawn(Arc::clone(&app.broker).run_maintenance(stop_rx));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while partition_offsets(&app, "short").await[0] == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "retention never deleted the expired message"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop_tx.send(true).unwrap();
    maintenance.await.unwrap();
    assert_eq!(
        partition_offsets(&app, "short").await,
        [1, 1, 1, 1],
        "start, end, high watermark and durable offset meet"
    );
    let pulled = app
        .get("/v1/topics/short/subscriptions/s/messages?wait_ms=0")
        .await
        .expect(StatusCode::OK);
    assert_eq!(pulled, json!({"messages": []}));
    let sub = app
        .get("/v1/topics/short/subscriptions/s")
        .await
        .expect(StatusCode::OK);
    // Its commit stays below the new start: the lag counts the removed message,
    // as Kafka's consumer lag does, until a commit goes past it.
    assert_eq!(sub["lag"], 1);

    let answer = app.produce("short", &["next"]).await;
    assert_eq!(answer["offsets"][0]["offset"], 1, "the offsets go on");
    let pulled = app
        .get("/v1/topics/short/subscriptions/s/messages?wait_ms=0")
        .await
        .expect(StatusCode::OK);
    let messages = pulled["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1, "{pulled}");
    assert_eq!(messages[0]["value"], "next");
    assert_eq!(messages[0]["offset"], 1);
}
