//! Errors the router and extractors produce: unknown routes, wrong methods, oversized
//! bodies, invalid names in paths, missing rights, wrong content types.

use std::time::Duration;

use axum::http::{Method, StatusCode, header};
use serde_json::json;

use super::support::{MAX_BODY_BYTES, TestApp, req};
use crate::auth::{Action, Grant, ResourceKind};

#[tokio::test]
async fn unknown_routes_are_404_and_wrong_methods_405_with_error_bodies() {
    let app = TestApp::start().await;
    for path in [
        "/",
        "/v1",
        "/v2/topics",
        "/v1/topicz",
        "/v1/topics/t/nothing/here",
    ] {
        app.get(path)
            .await
            .expect_error(StatusCode::NOT_FOUND, "not_found");
    }
    for (method, path) in [
        (Method::PUT, "/v1/topics"),
        (Method::DELETE, "/v1/topics/t/messages"),
        (Method::GET, "/v1/auth/token"),
        (Method::PATCH, "/v1/queues/q"),
        (Method::GET, "/v1/queues/q/receive"),
        (Method::POST, "/healthz"),
    ] {
        let resp = app.send(req(method.clone(), path).token(&app.token)).await;
        resp.expect_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
        assert!(resp.headers.contains_key(header::ALLOW), "{method} {path}");
    }
}

#[tokio::test]
async fn bodies_over_the_limit_are_413_and_store_nothing() {
    let app = TestApp::start().await;
    app.create_topic("t", json!({})).await;
    app.create_queue("q", json!({})).await;
    let big = "x".repeat(MAX_BODY_BYTES + 1);
    let body = json!({"messages": [{"value": big}]});
    for path in [
        "/v1/topics/t/messages",
        "/v1/queues/q/messages",
        "/v1/topics",
    ] {
        app.post(path, body.clone())
            .await
            .expect_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    }
    app.send(
        req(Method::POST, "/v1/bench/noop")
            .token(&app.token)
            .raw("application/octet-stream", big.clone().into_bytes()),
    )
    .await
    .expect_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    app.send(
        req(Method::POST, "/v1/queues/q/receive")
            .token(&app.token)
            .raw("application/json", big.into_bytes()),
    )
    .await
    .expect_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    assert_eq!(app.broker.topic("t").unwrap().partitions()[0].end().0, 0);
    assert_eq!(app.broker.queue("q").unwrap().stats().depth, 0);
    // Just under the limit is fine.
    let fits = "y".repeat(MAX_BODY_BYTES - 100);
    app.post(
        "/v1/topics/t/messages",
        json!({"messages": [{"value": fits}]}),
    )
    .await
    .expect(StatusCode::OK);
}

#[tokio::test]
async fn invalid_names_in_paths_are_400_before_any_lookup() {
    let app = TestApp::start().await;
    app.create_topic("t", json!({})).await;
    let long = "a".repeat(250);
    let names = ["..", ".", "a%2Fb", "a%20b", "%C3%A9", "%FF", long.as_str()];
    for name in names {
        for path in [
            format!("/v1/topics/{name}"),
            format!("/v1/topics/{name}/partitions"),
            format!("/v1/topics/{name}/subscriptions"),
            format!("/v1/topics/t/subscriptions/{name}"),
            format!("/v1/topics/t/subscriptions/{name}/offsets"),
            format!("/v1/queues/{name}"),
        ] {
            let resp = app.get(&path).await;
            resp.expect_error(StatusCode::BAD_REQUEST, "bad_request");
        }
        app.post(
            &format!("/v1/topics/{name}/messages"),
            json!({"messages": [{"value": "x"}]}),
        )
        .await
        .expect_error(StatusCode::BAD_REQUEST, "bad_request");
        app.delete(&format!("/v1/queues/{name}"))
            .await
            .expect_error(StatusCode::BAD_REQUEST, "bad_request");
    }
    for (method, path) in [
        (Method::POST, "/v1/topics//messages"),
        (Method::GET, "/v1/topics/t/subscriptions//messages"),
        (Method::POST, "/v1/queues//receive"),
        (Method::GET, "/v1/topics/"),
        (Method::GET, "/v1/queues/"),
    ] {
        let resp = app
            .send(
                req(method, path)
                    .token(&app.token)
                    .json(&json!({"messages": [{"value": "x"}]})),
            )
            .await;
        resp.expect_error(StatusCode::BAD_REQUEST, "bad_request");
    }
}

#[tokio::test]
async fn json_endpoints_refuse_other_content_types() {
    let app = TestApp::start().await;
    app.create_topic("t", json!({})).await;
    let body = json!({"messages": [{"value": "x"}]}).to_string();
    for content_type in ["text/plain", "application/x-www-form-urlencoded"] {
        let message = app
            .send(
                req(Method::POST, "/v1/topics/t/messages")
                    .token(&app.token)
                    .raw(content_type, body.clone()),
            )
            .await
            .expect_error(StatusCode::BAD_REQUEST, "bad_request");
        assert!(message.contains("application/json"), "{message}");
    }
    app.send(
        req(Method::POST, "/v1/topics/t/messages")
            .token(&app.token)
            .raw("application/json; charset=utf-8", body),
    )
    .await
    .expect(StatusCode::OK);
}

#[tokio::test]
async fn rights_are_checked_per_action_and_name() {
    let app = TestApp::start().await;
    app.create_topic("orders", json!({})).await;
    app.create_topic("secret", json!({})).await;
    app.create_queue("jobs", json!({})).await;
    app.produce("orders", &["x"]).await;
    app.post("/v1/topics/orders/subscriptions", json!({"name": "s"}))
        .await
        .expect(StatusCode::CREATED);
    let producer = app
        .user_with(
            "producer",
            &[
                Grant::new(ResourceKind::Topic, "orders", Action::Produce),
                Grant::new(ResourceKind::Queue, "jobs", Action::Produce),
            ],
        )
        .await;
    let as_producer = |method: Method, path: &str| req(method, path).token(&producer);

    // Allowed: produce, send, describe and list what they have a right on.
    app.send(
        as_producer(Method::POST, "/v1/topics/orders/messages")
            .json(&json!({"messages": [{"value": "y"}]})),
    )
    .await
    .expect(StatusCode::OK);
    app.send(
        as_producer(Method::POST, "/v1/queues/jobs/messages")
            .json(&json!({"messages": [{"value": "y"}]})),
    )
    .await
    .expect(StatusCode::OK);
    app.send(as_producer(Method::GET, "/v1/topics/orders"))
        .await
        .expect(StatusCode::OK);
    app.send(as_producer(Method::GET, "/v1/topics/orders/partitions"))
        .await
        .expect(StatusCode::OK);
    app.send(as_producer(Method::GET, "/v1/cluster"))
        .await
        .expect(StatusCode::OK);
    let topics = app
        .send(as_producer(Method::GET, "/v1/topics"))
        .await
        .expect(StatusCode::OK);
    assert_eq!(topics["topics"].as_array().unwrap().len(), 1);
    assert_eq!(topics["topics"][0]["name"], "orders");
    let queues = app
        .send(as_producer(Method::GET, "/v1/queues"))
        .await
        .expect(StatusCode::OK);
    assert_eq!(queues["queues"][0]["name"], "jobs");

    // Forbidden: everything else, whether or not the name exists.
    let forbidden = [
        (Method::POST, "/v1/topics", json!({"name": "orders2"})),
        (Method::DELETE, "/v1/topics/orders", json!(null)),
        (Method::GET, "/v1/topics/secret", json!(null)),
        (Method::GET, "/v1/topics/no-such-topic", json!(null)),
        (Method::GET, "/v1/topics/secret/partitions", json!(null)),
        (
            Method::POST,
            "/v1/topics/secret/messages",
            json!({"messages": [{"value": "y"}]}),
        ),
        (
            Method::POST,
            "/v1/topics/orders/subscriptions",
            json!({"name": "mine"}),
        ),
        (Method::GET, "/v1/topics/orders/subscriptions", json!(null)),
        (
            Method::GET,
            "/v1/topics/orders/subscriptions/s",
            json!(null),
        ),
        (
            Method::GET,
            "/v1/topics/orders/subscriptions/s/messages",
            json!(null),
        ),
        (
            Method::GET,
            "/v1/topics/orders/subscriptions/s/offsets",
            json!(null),
        ),
        (
            Method::POST,
            "/v1/topics/orders/subscriptions/s/commit",
            json!({"offsets": []}),
        ),
        (
            Method::POST,
            "/v1/topics/orders/subscriptions/s/seek",
            json!({"offset": 0}),
        ),
        (
            Method::DELETE,
            "/v1/topics/orders/subscriptions/s",
            json!(null),
        ),
        (Method::POST, "/v1/queues", json!({"name": "jobs2"})),
        (Method::DELETE, "/v1/queues/jobs", json!(null)),
        (Method::POST, "/v1/queues/jobs/receive", json!({})),
        (Method::POST, "/v1/queues/jobs/ack", json!({"receipts": []})),
        (
            Method::POST,
            "/v1/queues/jobs/nack",
            json!({"receipts": []}),
        ),
        (Method::POST, "/v1/queues/jobs/redrive", json!({})),
    ];
    for (method, path, body) in forbidden {
        let resp = app
            .send(as_producer(method.clone(), path).json(&body))
            .await;
        resp.expect_error(StatusCode::FORBIDDEN, "forbidden");
    }
    // Nothing they were refused happened.
    assert!(app.broker.topic("orders2").is_err());
    assert!(app.broker.topic("orders").is_ok());
    assert_eq!(app.broker.topic("orders").unwrap().subscriptions().len(), 1);

    let consumer = app
        .user_with(
            "consumer",
            &[Grant::new(ResourceKind::Topic, "orders", Action::Consume)],
        )
        .await;
    app.send(req(Method::GET, "/v1/topics/orders/subscriptions/s/messages").token(&consumer))
        .await
        .expect(StatusCode::OK);
    app.send(
        req(Method::POST, "/v1/topics/orders/messages")
            .token(&consumer)
            .json(&json!({"messages": [{"value": "y"}]})),
    )
    .await
    .expect_error(StatusCode::FORBIDDEN, "forbidden");
}

#[tokio::test]
async fn extreme_numbers_are_answered_without_a_500() {
    let app = TestApp::start().await;
    // A retention the log would read as negative (deleting everything) is refused.
    app.post("/v1/topics", json!({"name": "t", "retention_ms": u64::MAX}))
        .await
        .expect_error(StatusCode::BAD_REQUEST, "bad_request");
    app.create_topic(
        "t",
        json!({"retention_ms": i64::MAX, "retention_bytes": u64::MAX}),
    )
    .await;
    app.produce("t", &["a"]).await;
    app.post("/v1/topics/t/subscriptions", json!({"name": "s"}))
        .await
        .expect(StatusCode::CREATED);
    for body in [
        json!({"timestamp": i64::MAX}),
        json!({"timestamp": i64::MIN}),
        json!({"offset": u64::MAX}),
        json!({"partition": u32::MAX, "offset": 0}),
        json!({"partition": u64::MAX, "offset": 0}),
        json!({"offset": 1e300}),
    ] {
        let resp = app
            .post("/v1/topics/t/subscriptions/s/seek", body.clone())
            .await;
        assert!(resp.status.as_u16() < 500, "{body}: {}", resp.text());
    }
    for body in [
        json!({"offsets": [{"partition": u32::MAX, "offset": 0}]}),
        json!({"offsets": [{"partition": 0, "offset": u64::MAX}]}),
    ] {
        app.post("/v1/topics/t/subscriptions/s/commit", body)
            .await
            .expect_error(StatusCode::BAD_REQUEST, "bad_request");
    }
    app.post(
        "/v1/queues",
        json!({"name": "q", "visibility_timeout_ms": u64::MAX}),
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST, "bad_request");
    app.create_queue("q", json!({"max_deliveries": u32::MAX}))
        .await;
    app.send_to_queue("q", &["x"]).await;
    for body in [
        json!({"visibility_timeout_ms": u64::MAX}),
        json!({"wait_ms": u64::MAX}),
        json!({"max": u64::MAX}),
    ] {
        app.post("/v1/queues/q/receive", body)
            .await
            .expect_error(StatusCode::BAD_REQUEST, "bad_request");
    }
    let got = app
        .post("/v1/queues/q/receive", json!({}))
        .await
        .expect(StatusCode::OK);
    let receipt = got["messages"][0]["receipt"].clone();
    app.post(
        "/v1/queues/q/nack",
        json!({"receipts": [receipt], "delay_ms": u64::MAX}),
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST, "bad_request");
    let moved = app
        .post("/v1/queues/q/redrive", json!({"max": u64::MAX}))
        .await
        .expect(StatusCode::OK);
    assert_eq!(moved["moved"], 0);
    app.get("/v1/topics/t/subscriptions/s/messages?max=4294967296")
        .await
        .expect_error(StatusCode::BAD_REQUEST, "bad_request");
    app.get("/v1/topics/t/subscriptions/s/messages?wait_ms=18446744073709551616")
        .await
        .expect_error(StatusCode::BAD_REQUEST, "bad_request");
}

#[tokio::test]
async fn arrays_in_place_of_objects_are_400_and_change_nothing() {
    let app = TestApp::start().await;
    app.create_topic("t", json!({})).await;
    app.create_queue("q", json!({})).await;
    app.send_to_queue("q", &["x"]).await;
    app.post("/v1/topics/t/subscriptions", json!({"name": "s"}))
        .await
        .expect(StatusCode::CREATED);
    for (path, body) in [
        ("/v1/auth/token", json!(["admin", "password"])),
        ("/v1/topics", json!(["t2"])),
        ("/v1/queues", json!(["q2"])),
        ("/v1/topics/t/messages", json!([[["k", "v", null, null]]])),
        ("/v1/topics/t/messages", json!({"messages": [["k", "v"]]})),
        ("/v1/queues/q/messages", json!({"messages": [[null, "v"]]})),
        ("/v1/queues/q/receive", json!([1])),
        ("/v1/topics/t/subscriptions", json!(["s2"])),
        ("/v1/topics/t/subscriptions/s/seek", json!([0, 5])),
        (
            "/v1/topics/t/subscriptions/s/commit",
            json!({"offsets": [[0, 0]]}),
        ),
    ] {
        let message = app
            .post(path, body.clone())
            .await
            .expect_error(StatusCode::BAD_REQUEST, "bad_request");
        assert!(
            message.contains("object") || message.contains("sequence"),
            "{path} {body}: {message}"
        );
    }
    let topics = app.get("/v1/topics").await.expect(StatusCode::OK);
    assert_eq!(topics["topics"].as_array().map(Vec::len), Some(1));
    let queues = app.get("/v1/queues").await.expect(StatusCode::OK);
    assert_eq!(queues["queues"].as_array().map(Vec::len), Some(1));
    assert_eq!(app.broker.topic("t").unwrap().partitions()[0].end().0, 0);
    let q = app.broker.queue("q").unwrap().stats();
    assert_eq!((q.depth, q.in_flight), (1, 0));
    let subs = app
        .get("/v1/topics/t/subscriptions")
        .await
        .expect(StatusCode::OK);
    assert_eq!(subs["subscriptions"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn bad_values_are_400_before_missing_rights_are_403() {
    let app = TestApp::start().await;
    app.create_topic("orders", json!({})).await;
    app.create_queue("jobs", json!({})).await;
    let nobody = app.user_with("nobody", &[]).await;
    for (path, body) in [
        ("/v1/topics", json!({"name": "x", "partitions": 0})),
        ("/v1/topics", json!({"name": "x", "replication_factor": 0})),
        (
            "/v1/queues",
            json!({"name": "x", "visibility_timeout_ms": 0}),
        ),
        (
            "/v1/queues",
            json!({"name": "x", "dead_letter_queue": "a/b"}),
        ),
        ("/v1/topics/orders/messages", json!({"messages": []})),
        (
            "/v1/topics/orders/messages",
            json!({"messages": [{"value": "!!", "value_encoding": "base64"}]}),
        ),
        (
            "/v1/queues/jobs/messages",
            json!({"messages": [{"value": "x", "headers": {"mom.a": "b"}}]}),
        ),
    ] {
        let resp = app
            .send(req(Method::POST, path).token(&nobody).json(&body))
            .await;
        resp.expect_error(StatusCode::BAD_REQUEST, "bad_request");
    }
    // Valid values without the right: 403.
    for (path, body) in [
        ("/v1/topics", json!({"name": "x"})),
        (
            "/v1/topics/orders/messages",
            json!({"messages": [{"value": "v"}]}),
        ),
    ] {
        app.send(req(Method::POST, path).token(&nobody).json(&body))
            .await
            .expect_error(StatusCode::FORBIDDEN, "forbidden");
    }
}

#[tokio::test]
async fn dead_letters_are_sends_a_creator_or_redriver_needs_the_right_for() {
    let app = TestApp::start().await;
    app.create_queue("victim", json!({})).await;
    app.create_queue("jobs.dlq", json!({})).await;
    let bob = app
        .user_with(
            "bob",
            &[
                Grant::new(ResourceKind::Queue, "jobs*", Action::Admin),
                Grant::new(ResourceKind::Queue, "jobs*", Action::Produce),
                Grant::new(ResourceKind::Queue, "jobs*", Action::Consume),
            ],
        )
        .await;
    let create = |name: &str, dlq: &str| {
        req(Method::POST, "/v1/queues").token(&bob).json(&json!({
            "name": name, "visibility_timeout_ms": 50, "max_deliveries": 1,
            "dead_letter_queue": dlq,
        }))
    };
    let refused = app
        .send(create("jobs", "victim"))
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    assert!(refused.contains("produce"), "{refused}");
    app.get("/v1/queues/jobs")
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    app.send(create("jobs", "jobs.dlq"))
        .await
        .expect(StatusCode::CREATED);

    // A letter from `victim` in bob's dead-letter queue stays on his redrive.
    app.create_queue(
        "victim.work",
        json!({"visibility_timeout_ms": 50, "max_deliveries": 1, "dead_letter_queue": "jobs.dlq"}),
    )
    .await;
    app.send_to_queue("victim.work", &["theirs"]).await;
    app.send_to_queue("jobs", &["his"]).await;
    for queue in ["victim.work", "jobs"] {
        for _ in 0..2 {
            app.post(&format!("/v1/queues/{queue}/receive"), json!({}))
                .await
                .expect(StatusCode::OK);
            tokio::time::sleep(Duration::from_millis(80)).await;
        }
    }
    let dlq = app.get("/v1/queues/jobs.dlq").await.expect(StatusCode::OK);
    assert_eq!(dlq["depth"], 2);
    let moved = app
        .send(req(Method::POST, "/v1/queues/jobs.dlq/redrive").token(&bob))
        .await
        .expect(StatusCode::OK);
    assert_eq!(moved, json!({"moved": 1}));
    let dlq = app.get("/v1/queues/jobs.dlq").await.expect(StatusCode::OK);
    assert_eq!(dlq["depth"], 1, "the letter of victim.work stays");
    let back = app.get("/v1/queues/jobs").await.expect(StatusCode::OK);
    assert_eq!(back["depth"], 1, "his own letter went back");
    let moved = app
        .post("/v1/queues/jobs.dlq/redrive", json!({}))
        .await
        .expect(StatusCode::OK);
    assert_eq!(moved, json!({"moved": 1}), "an admin user moves the rest");
}

#[tokio::test(start_paused = true)]
async fn a_body_that_stops_arriving_is_a_408_once_its_deadline_passes() {
    use axum::body::{Body, Bytes};
    use futures_util::StreamExt as _;
    use tower::ServiceExt as _;

    let app = TestApp::start().await;
    app.create_topic("orders", json!({})).await;
    let first = Bytes::from_static(br#"{"messages":[{"value":"x"}"#);
    let stalled = futures_util::stream::once(async move { Ok::<_, std::io::Error>(first) })
        .chain(futures_util::stream::pending());
    let request = axum::http::Request::builder()
        .method(Method::POST)
        .uri("/v1/topics/orders/messages")
        .header(header::AUTHORIZATION, format!("Bearer {}", app.token))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stalled))
        .unwrap();
    let started = tokio::time::Instant::now();
    let response = app.router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
    let waited = started.elapsed();
    assert!(waited >= crate::http::BODY_READ_TIMEOUT, "{waited:?}");
    assert!(waited < crate::http::BODY_READ_TIMEOUT * 2, "{waited:?}");
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"]["code"], "request_timeout");
    let topic = app.get("/v1/topics/orders").await.expect(StatusCode::OK);
    assert_eq!(
        topic["partitions"][0]["log_end_offset"], 0,
        "nothing stored"
    );
}
