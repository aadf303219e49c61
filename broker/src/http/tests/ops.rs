//! Health, readiness, metrics, the OpenAPI document (against the routes and
//! `docs/api.md`), the cluster view and the bench baseline.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::http::{Method, StatusCode, header};
use serde_json::json;

use super::support::{MAX_BODY_BYTES, Resp, TestApp, req};
use crate::error::ErrorCode;
use crate::http::ClusterView;

#[tokio::test]
async fn health_and_readiness_answer_without_a_token() {
    let app = TestApp::start().await;
    let health = app.send(req(Method::GET, "/healthz")).await;
    assert_eq!(health.expect(StatusCode::OK), json!({"status": "ok"}));
    let ready = app.send(req(Method::GET, "/readyz")).await;
    assert_eq!(ready.expect(StatusCode::OK), json!({"status": "ready"}));
    std::fs::rename(app.broker.data_dir(), app.dir.path().join("gone")).unwrap();
    app.send(req(Method::GET, "/readyz"))
        .await
        .expect_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    let health = app.send(req(Method::GET, "/healthz")).await;
    assert_eq!(health.status, StatusCode::OK);
}

#[tokio::test]
async fn metrics_count_messages_time_routes_and_show_storage_gauges() {
    let app = TestApp::start().await;
    app.create_topic("t", json!({"partitions": 2})).await;
    app.create_queue("q", json!({})).await;
    app.produce("t", &["abc", "de"]).await;
    app.post("/v1/topics/t/subscriptions", json!({"name": "s"}))
        .await
        .expect(StatusCode::CREATED);
    app.get("/v1/topics/t/subscriptions/s/messages?max=1")
        .await
        .expect(StatusCode::OK);
    app.send_to_queue("q", &["x", "y", "z"]).await;
    app.post("/v1/queues/q/receive", json!({}))
        .await
        .expect(StatusCode::OK);
    app.get("/v1/topics/missing").await;

    let resp = app.send(req(Method::GET, "/metrics")).await;
    assert_eq!(resp.status, StatusCode::OK);
    assert!(
        resp.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = resp.text();
    for line in [
        r#"broker_messages_in_total{kind="topic",name="t"} 2"#,
        r#"broker_bytes_in_total{kind="topic",name="t"} 5"#,
        r#"broker_messages_out_total{kind="topic",name="t"} 1"#,
        r#"broker_messages_in_total{kind="queue",name="q"} 3"#,
        r#"broker_messages_out_total{kind="queue",name="q"} 1"#,
        r#"broker_partition_log_end_offset{kind="topic",name="t",partition="0"} 1"#,
        r#"broker_partition_log_end_offset{kind="topic",name="t",partition="1"} 1"#,
        r#"broker_partition_log_end_offset{kind="queue",name="q",partition="0"} 3"#,
        r#"broker_subscription_lag{topic="t",subscription="s"} 2"#,
        r#"broker_queue_depth{queue="q"} 3"#,
        r#"broker_queue_in_flight{queue="q"} 1"#,
        r#"broker_queue_dead_lettered{queue="q"} 0"#,
        r#"broker_http_request_duration_seconds_count{method="POST",route="/v1/topics/{topic}/messages"} 1"#,
        r#"broker_http_responses_total{method="GET",route="/v1/topics/{topic}",status="404"} 1"#,
        "# EOF",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    // Deleting a topic forgets its counters.
    app.delete("/v1/topics/t").await;
    let text = app.send(req(Method::GET, "/metrics")).await.text();
    assert!(!text.contains(r#"name="t""#), "{text}");
}

/// The text of `GET /metrics`.
async fn scrape(app: &TestApp) -> String {
    let resp = app.send(req(Method::GET, "/metrics")).await;
    assert_eq!(resp.status, StatusCode::OK);
    resp.text()
}

#[tokio::test]
async fn metrics_count_requests_no_route_matched_under_one_route() {
    let app = TestApp::start().await;
    app.get("/v1/topics/t/bogus")
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    app.get("/nowhere")
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    app.get("/v1/queues/")
        .await
        .expect_error(StatusCode::BAD_REQUEST, "bad_request");
    let text = scrape(&app).await;
    for line in [
        r#"broker_http_responses_total{method="GET",route="unmatched",status="404"} 2"#,
        r#"broker_http_responses_total{method="GET",route="unmatched",status="400"} 1"#,
        r#"broker_http_request_duration_seconds_count{method="GET",route="unmatched"} 3"#,
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
}

/// The series (sample lines) of a metrics text.
fn series(text: &str) -> usize {
    text.lines().filter(|l| !l.starts_with('#')).count()
}

#[tokio::test]
async fn invented_methods_and_paths_add_no_metric_series() {
    let app = TestApp::start().await;
    let invented = |i: usize| Method::from_bytes(format!("M{i}").as_bytes()).unwrap();
    // One of each kind first: it makes the series that the rest must reuse.
    let requests = |i: usize| {
        [
            req(invented(i), "/healthz"),
            req(invented(i), &format!("/made/up/{i}")),
            req(Method::GET, &format!("/v1/topics/t/made-up-{i}")),
        ]
    };
    for request in requests(0) {
        app.send(request).await;
    }
    // A scrape is counted once answered: the first makes the series of scrapes.
    scrape(&app).await;
    let before = scrape(&app).await;
    for i in 1..=50 {
        let [method_only, both, path_only] = requests(i);
        assert_eq!(
            app.send(method_only).await.status,
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(app.send(both).await.status, StatusCode::NOT_FOUND);
        assert_eq!(app.send(path_only).await.status, StatusCode::NOT_FOUND);
    }
    let after = scrape(&app).await;
    assert_eq!(series(&after), series(&before), "{after}");
    for line in [
        r#"broker_http_responses_total{method="other",route="/healthz",status="405"} 51"#,
        r#"broker_http_responses_total{method="other",route="unmatched",status="404"} 51"#,
        r#"broker_http_responses_total{method="GET",route="unmatched",status="404"} 51"#,
    ] {
        assert!(after.contains(line), "missing {line:?} in\n{after}");
    }
    assert!(!after.contains("M1"), "{after}");
}

/// The value of each sample of `metric` whose labels start with `kind` and `name`,
/// summed over the other labels (partitions), by (kind, name).
fn per_log(text: &str, metric: &str) -> BTreeMap<(String, String), u64> {
    let mut sums = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line
            .strip_prefix(metric)
            .and_then(|r| r.strip_prefix("{kind=\""))
        else {
            continue;
        };
        let (kind, rest) = rest.split_once('"').unwrap();
        let name = rest
            .strip_prefix(",name=\"")
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        let value: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        *sums.entry((kind.to_owned(), name.to_owned())).or_default() += value;
    }
    sums
}

#[tokio::test]
async fn messages_in_count_what_is_stored_dead_letters_and_redrives_included() {
    let app = TestApp::start().await;
    app.create_topic("t", json!({"partitions": 2})).await;
    app.create_queue("jobs.dlq", json!({})).await;
    app.create_queue(
        "jobs",
        json!({"visibility_timeout_ms": 50, "max_deliveries": 1, "dead_letter_queue": "jobs.dlq"}),
    )
    .await;
    // Sent twice with one idempotency key: stored, and counted, once.
    for path in ["/v1/queues/jobs/messages", "/v1/topics/t/messages"] {
        for _ in 0..2 {
            app.send(
                req(Method::POST, path)
                    .token(&app.token)
                    .header("Idempotency-Key", "once")
                    .json(&json!({"messages": [{"value": "poison", "key": "k", "headers": {"h": "1"}}]})),
            )
            .await
            .expect(StatusCode::OK);
        }
    }
    app.produce("t", &["ab"]).await;
    let receive = |body: serde_json::Value| app.post("/v1/queues/jobs/receive", body);
    let got = receive(json!({})).await.expect(StatusCode::OK);
    assert_eq!(got["messages"][0]["value"], "poison");
    tokio::time::sleep(std::time::Duration::from_millis(80)).await;
    // Its lease ran out: the next delivery would exceed max_deliveries, so it is
    // dead-lettered, and then redriven back.
    let got = receive(json!({})).await.expect(StatusCode::OK);
    assert_eq!(got["messages"], json!([]));
    let moved = app
        .post("/v1/queues/jobs.dlq/redrive", json!({}))
        .await
        .expect(StatusCode::OK);
    assert_eq!(moved, json!({"moved": 1}));

    let text = scrape(&app).await;
    let key = |kind: &str, name: &str| (kind.to_owned(), name.to_owned());
    let messages_in = per_log(&text, "broker_messages_in_total");
    // Each message is 9 bytes of key, value and headers; "ab" is 2.
    let expected = BTreeMap::from([
        (key("queue", "jobs"), 2),
        (key("queue", "jobs.dlq"), 1),
        (key("topic", "t"), 2),
    ]);
    assert_eq!(messages_in, expected, "{text}");
    assert_eq!(per_log(&text, "broker_partition_log_end_offset"), expected);
    let bytes_in = BTreeMap::from([
        (key("queue", "jobs"), 18),
        (key("queue", "jobs.dlq"), 9),
        (key("topic", "t"), 11),
    ]);
    assert_eq!(per_log(&text, "broker_bytes_in_total"), bytes_in, "{text}");
}

#[tokio::test]
async fn the_cluster_view_names_this_node_as_leader_of_everything() {
    let app = TestApp::start().await;
    app.create_topic("t", json!({"partitions": 2})).await;
    let cluster = app.get("/v1/cluster").await.expect(StatusCode::OK);
    assert_eq!(
        cluster,
        json!({"brokers": [{"id": 1, "rest_addr": "127.0.0.1:8080", "alive": true}], "controller": 1})
    );
    let partitions = app
        .get("/v1/topics/t/partitions")
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        partitions,
        json!({"partitions": [
            {"partition": 0, "leader": 1, "leader_rest_addr": "127.0.0.1:8080", "replicas": [1], "isr": [1]},
            {"partition": 1, "leader": 1, "leader_rest_addr": "127.0.0.1:8080", "replicas": [1], "isr": [1]},
        ]})
    );
    app.get("/v1/topics/nope/partitions")
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");

    // The address is the view's: a server bound elsewhere passes its own.
    let view = ClusterView::standalone("10.0.0.7:9000".parse().unwrap());
    let router = crate::http::router_with(Arc::clone(&app.broker), view);
    let request = axum::http::Request::get("/v1/cluster")
        .header("authorization", format!("Bearer {}", app.token))
        .body(axum::body::Body::empty())
        .unwrap();
    let resp = tower::ServiceExt::oneshot(router, request).await.unwrap();
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["brokers"][0]["rest_addr"], "10.0.0.7:9000");
}

#[tokio::test]
async fn the_bench_baseline_reads_any_body_and_answers_an_empty_object() {
    let app = TestApp::start().await;
    let resp = app
        .send(
            req(Method::POST, "/v1/bench/noop")
                .token(&app.token)
                .raw("application/json", "not even json"),
        )
        .await;
    assert_eq!(resp.expect(StatusCode::OK), json!({}));
    let resp = app
        .send(req(Method::POST, "/v1/bench/noop").token(&app.token))
        .await;
    assert_eq!(resp.expect(StatusCode::OK), json!({}));
}

/// Every (method, path) the OpenAPI document lists.
fn documented(doc: &serde_json::Value) -> BTreeSet<(String, String)> {
    let mut operations = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if ["get", "post", "put", "delete", "patch", "head", "options"]
                .contains(&method.as_str())
            {
                operations.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    operations
}

#[tokio::test]
async fn the_openapi_document_lists_exactly_the_routed_operations() {
    let app = TestApp::start().await;
    let doc = app
        .send(req(Method::GET, "/openapi.json"))
        .await
        .expect(StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert_eq!(
        doc["paths"]["/v1/topics"]["post"]["security"],
        json!([{"bearer": []}])
    );
    assert!(doc["paths"]["/healthz"]["get"].get("security").is_none());
    assert!(doc["components"]["schemas"]["TopicDescription"].is_object());
    assert!(doc["components"]["schemas"]["PulledMessage"].is_object());

    let (_, routed) = super::super::app(
        Arc::clone(&app.broker),
        ClusterView::standalone("127.0.0.1:1".parse().unwrap()),
    );
    let routed: BTreeSet<(String, String)> = routed
        .iter()
        .map(|(method, path)| (method.to_string(), path.clone()))
        .collect();
    assert_eq!(routed, documented(&doc));
    // Each documented operation is served: never the router's 404 or 405.
    for (method, path) in &routed {
        let concrete = path
            .replace("{topic}", "t")
            .replace("{queue}", "q")
            .replace("{subscription}", "s");
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let resp = app
            .send(req(method.clone(), &concrete).token(&app.token))
            .await;
        assert_ne!(
            resp.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {concrete}"
        );
        assert!(
            !resp.text().contains("no route for"),
            "{method} {concrete}: {}",
            resp.text()
        );
    }
}

/// Every documented operation: (method, path) and its object.
fn operations(doc: &serde_json::Value) -> Vec<(Method, String, &serde_json::Value)> {
    let mut operations = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            if let Ok(method) = Method::from_bytes(method.to_uppercase().as_bytes()) {
                operations.push((method, path.clone(), operation));
            }
        }
    }
    operations
}

/// `path` with its parameters filled in.
fn concrete(path: &str) -> String {
    path.replace("{topic}", "t")
        .replace("{queue}", "q")
        .replace("{subscription}", "s")
}

/// The reference to the response of one error code.
fn code_ref(code: &str) -> serde_json::Value {
    json!({"$ref": format!("#/components/responses/{code}")})
}

/// The codes an error response names: the one it refers to, or those its
/// description lists.
fn codes_in(doc: &serde_json::Value, response: &serde_json::Value) -> BTreeSet<String> {
    let response = match response["$ref"].as_str() {
        Some(reference) => {
            let name = reference.rsplit('/').next().unwrap();
            &doc["components"]["responses"][name]
        }
        None => response,
    };
    let description = response["description"].as_str().unwrap();
    ErrorCode::ALL
        .iter()
        .map(|code| code.as_str())
        .filter(|code| description.contains(&format!("`{code}`")))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn every_operation_with_a_body_answers_413_as_documented() {
    let app = TestApp::start().await;
    let doc = app
        .send(req(Method::GET, "/openapi.json"))
        .await
        .expect(StatusCode::OK);
    let big = "x".repeat(MAX_BODY_BYTES + 1);
    let mut with_body = 0;
    for (method, path, operation) in operations(&doc) {
        let responses = &operation["responses"];
        if operation.get("requestBody").is_none() {
            assert!(responses.get("413").is_none(), "{method} {path}");
            continue;
        }
        with_body += 1;
        assert_eq!(
            responses["413"],
            code_ref("payload_too_large"),
            "{method} {path}"
        );
        let resp = app
            .send(
                req(method.clone(), &concrete(&path))
                    .token(&app.token)
                    .raw("application/json", big.clone().into_bytes()),
            )
            .await;
        resp.expect_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    }
    assert_eq!(with_body, 13);
}

#[tokio::test]
async fn the_openapi_document_lists_the_server_errors_of_each_operation() {
    let app = TestApp::start().await;
    let doc = app
        .send(req(Method::GET, "/openapi.json"))
        .await
        .expect(StatusCode::OK);
    let responses = |method: &str, path: &str| doc["paths"][path][method]["responses"].clone();
    let codes = |method: &str, path: &str, status: &str| {
        let response = &responses(method, path)[status];
        if response.is_null() {
            return BTreeSet::new();
        }
        codes_in(&doc, response)
    };
    let set =
        |codes: &[&str]| -> BTreeSet<String> { codes.iter().map(|c| (*c).to_owned()).collect() };
    let routed = set(&["not_leader", "unavailable"]);
    let replicated = set(&["not_enough_replicas", "not_leader", "unavailable"]);
    for (method, path, unavailable, timeout) in [
        ("post", "/v1/topics/{topic}/messages", &replicated, true),
        ("post", "/v1/queues/{queue}/messages", &replicated, true),
        ("post", "/v1/queues/{queue}/redrive", &replicated, true),
        ("post", "/v1/queues/{queue}/receive", &routed, true),
        ("post", "/v1/queues/{queue}/ack", &routed, true),
        ("post", "/v1/queues/{queue}/nack", &routed, false),
        (
            "get",
            "/v1/topics/{topic}/subscriptions/{subscription}/messages",
            &routed,
            false,
        ),
        ("get", "/v1/queues/{queue}", &routed, false),
        ("post", "/v1/topics", &set(&["unavailable"]), true),
        ("delete", "/v1/queues/{queue}", &set(&["unavailable"]), true),
        ("get", "/v1/topics", &set(&["unavailable"]), false),
        ("get", "/v1/cluster", &set(&["unavailable"]), false),
        ("post", "/v1/auth/token", &set(&[]), false),
        ("get", "/healthz", &set(&[]), false),
        ("get", "/metrics", &set(&[]), false),
    ] {
        assert_eq!(&codes(method, path, "503"), unavailable, "{method} {path}");
        let expected_timeout = if timeout { set(&["timeout"]) } else { set(&[]) };
        assert_eq!(
            codes(method, path, "504"),
            expected_timeout,
            "{method} {path}"
        );
    }
    assert_eq!(
        responses("post", "/v1/topics/{topic}/messages")["500"],
        code_ref("internal")
    );
    assert_eq!(responses("get", "/metrics")["500"], code_ref("internal"));
    assert!(responses("get", "/healthz").get("500").is_none());
    assert_eq!(codes("get", "/readyz", "503"), set(&["unavailable"]));

    // Every code has its response, and the schema and the description list them all.
    let all: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    let components = doc["components"]["responses"].as_object().unwrap();
    assert_eq!(
        components
            .keys()
            .map(String::as_str)
            .collect::<BTreeSet<_>>(),
        all.iter().copied().collect()
    );
    assert_eq!(
        doc["components"]["schemas"]["ErrorCode"]["enum"],
        json!(all)
    );
    let description = doc["info"]["description"].as_str().unwrap();
    for code in ErrorCode::ALL {
        let listed = format!("{code} {}", code.status().as_u16());
        assert!(description.contains(&listed), "{listed} in {description}");
    }
    // Every reference leads somewhere.
    for (method, path, operation) in operations(&doc) {
        for (status, response) in operation["responses"].as_object().unwrap() {
            if let Some(reference) = response["$ref"].as_str() {
                let name = reference.strip_prefix("#/components/responses/").unwrap();
                assert!(components.contains_key(name), "{method} {path} {status}");
            }
        }
    }
}

/// For each bound `schema` documents (`minimum` above 0, `maximum`), what `send`
/// answers for the value just past it (a 400) and, with `at`, for the bound itself
/// (a success).
async fn bounds_hold(
    what: &str,
    schema: &serde_json::Value,
    at: bool,
    send: impl AsyncFn(u64) -> Resp,
) {
    let min = schema["minimum"].as_u64().filter(|min| *min > 0);
    let max = schema["maximum"].as_u64();
    assert!(
        min.is_some() || max.is_some(),
        "{what}: no bounds in {schema}"
    );
    let mut cases = Vec::new();
    if let Some(min) = min {
        cases.extend([(min - 1, false), (min, true)]);
    }
    if let Some(max) = max {
        cases.extend([(max, true), (max + 1, false)]);
    }
    for (value, within) in cases {
        if within && !at {
            continue;
        }
        let resp = send(value).await;
        if within {
            assert!(
                resp.status.is_success(),
                "{what} = {value}: {}",
                resp.text()
            );
        } else {
            resp.expect_error(StatusCode::BAD_REQUEST, "bad_request");
        }
    }
}

#[tokio::test]
async fn values_past_the_documented_limits_are_400_and_those_at_them_are_not() {
    let app = TestApp::start().await;
    let doc = app
        .send(req(Method::GET, "/openapi.json"))
        .await
        .expect(StatusCode::OK);
    let property = |schema: &str, property: &str| {
        doc["components"]["schemas"][schema]["properties"][property].clone()
    };
    app.create_topic("t", json!({})).await;
    app.create_queue("q", json!({})).await;
    app.post("/v1/topics/t/subscriptions", json!({"name": "s"}))
        .await
        .expect(StatusCode::CREATED);
    let create_queue = async |setting: &str, value: u64| {
        let name = format!("{}-{value}", setting.replace('_', "-"));
        app.post("/v1/queues", json!({"name": name, setting: value}))
            .await
    };
    for setting in ["visibility_timeout_ms", "max_deliveries"] {
        let schema = property("CreateQueue", setting);
        bounds_hold(setting, &schema, true, async |v| {
            create_queue(setting, v).await
        })
        .await;
    }
    // A thousand partitions are slow to make: only the values past the bounds.
    let schema = property("CreateQueue", "partitions");
    bounds_hold("queue partitions", &schema, false, async |v| {
        create_queue("partitions", v).await
    })
    .await;
    for setting in ["partitions", "replication_factor"] {
        let schema = property("CreateTopic", setting);
        bounds_hold(setting, &schema, setting != "partitions", async |v| {
            let name = format!("{}-{v}", setting.replace('_', "-"));
            app.post("/v1/topics", json!({"name": name, setting: v}))
                .await
        })
        .await;
    }
    let name = property("CreateTopic", "name");
    let longest = name["maxLength"].as_u64().unwrap() as usize;
    app.create_topic(&"n".repeat(longest), json!({})).await;
    app.post("/v1/topics", json!({"name": "n".repeat(longest + 1)}))
        .await
        .expect_error(StatusCode::BAD_REQUEST, "bad_request");

    // A receive that waits the longest would wait: wait_ms only past its bound.
    for (setting, at) in [
        ("max", true),
        ("visibility_timeout_ms", true),
        ("wait_ms", false),
    ] {
        let schema = property("ReceiveRequest", setting);
        bounds_hold(setting, &schema, at, async |v| {
            app.post("/v1/queues/q/receive", json!({setting: v})).await
        })
        .await;
    }
    let pull = doc["paths"]["/v1/topics/{topic}/subscriptions/{subscription}/messages"]["get"]
        ["parameters"]
        .as_array()
        .unwrap()
        .clone();
    for (parameter, at) in [("max", true), ("wait_ms", false)] {
        let schema = &pull.iter().find(|p| p["name"] == parameter).unwrap()["schema"];
        bounds_hold(parameter, schema, at, async |v| {
            app.get(&format!(
                "/v1/topics/t/subscriptions/s/messages?{parameter}={v}"
            ))
            .await
        })
        .await;
    }
    let schema = property("NackRequest", "delay_ms");
    bounds_hold("delay_ms", &schema, true, async |v| {
        app.post("/v1/queues/q/nack", json!({"receipts": [], "delay_ms": v}))
            .await
    })
    .await;
    let schema = property("RedriveRequest", "max");
    bounds_hold("redrive max", &schema, true, async |v| {
        app.post("/v1/queues/q/redrive", json!({"max": v})).await
    })
    .await;

    let most = property("MessageIn", "headers")["maxProperties"]
        .as_u64()
        .unwrap();
    for (count, status) in [(most, StatusCode::OK), (most + 1, StatusCode::BAD_REQUEST)] {
        let headers: serde_json::Map<String, serde_json::Value> =
            (0..count).map(|i| (format!("h{i}"), json!("v"))).collect();
        let resp = app
            .post(
                "/v1/topics/t/messages",
                json!({"messages": [{"value": "x", "headers": headers}]}),
            )
            .await;
        assert_eq!(resp.status, status, "{count} headers: {}", resp.text());
    }
    let key = &doc["paths"]["/v1/topics/{topic}/messages"]["post"]["parameters"][1]["schema"];
    let longest = key["maxLength"].as_u64().unwrap() as usize;
    for (length, status) in [
        (longest, StatusCode::OK),
        (longest + 1, StatusCode::BAD_REQUEST),
    ] {
        let resp = app
            .send(
                req(Method::POST, "/v1/topics/t/messages")
                    .token(&app.token)
                    .header("Idempotency-Key", &"k".repeat(length))
                    .json(&json!({"messages": [{"value": "x"}]})),
            )
            .await;
        assert_eq!(resp.status, status, "a key of {length}: {}", resp.text());
    }
    // A seek takes exactly one alternative, as the document's oneOf says.
    let seeks = doc["components"]["schemas"]["SeekRequest"]["oneOf"]
        .as_array()
        .unwrap();
    assert_eq!(seeks.len(), 3);
    for body in [
        json!({"to": "earliest", "partition": 0}),
        json!({"offset": 0, "to": "latest"}),
        json!({"timestamp": -1}),
        json!({}),
    ] {
        app.post("/v1/topics/t/subscriptions/s/seek", body)
            .await
            .expect_error(StatusCode::BAD_REQUEST, "bad_request");
    }
}

#[tokio::test]
async fn docs_api_md_describes_exactly_the_documented_operations() {
    let app = TestApp::start().await;
    let doc = app
        .send(req(Method::GET, "/openapi.json"))
        .await
        .expect(StatusCode::OK);
    let reference =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/api.md")).unwrap();
    // Operations appear in the reference as headings: "### `METHOD /path`".
    let described: BTreeSet<(String, String)> = reference
        .lines()
        .filter_map(|line| line.strip_prefix("### `")?.strip_suffix('`'))
        .filter_map(|op| op.split_once(' '))
        .map(|(method, path)| (method.to_owned(), path.to_owned()))
        .collect();
    assert_eq!(described, documented(&doc));

    // Its error table ("| 503 | `a`, `b` | when |") has every code at its status,
    // and no other, and every error status an operation documents.
    let mut table: BTreeSet<(u16, String)> = BTreeSet::new();
    let errors = reference.split("### Errors").nth(1).unwrap();
    for row in errors.lines().take_while(|l| !l.starts_with("###")) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let Some(status) = cells.get(1).and_then(|c| c.parse::<u16>().ok()) else {
            continue;
        };
        for code in cells[2].split(", ") {
            table.insert((status, code.trim_matches('`').to_owned()));
        }
    }
    let codes: BTreeSet<(u16, String)> = ErrorCode::ALL
        .iter()
        .map(|c| (c.status().as_u16(), c.as_str().to_owned()))
        .collect();
    assert_eq!(table, codes);
    for (method, path, operation) in operations(&doc) {
        for status in operation["responses"].as_object().unwrap().keys() {
            let status: u16 = status.parse().unwrap();
            assert!(
                status < 400 || table.iter().any(|(s, _)| *s == status),
                "{method} {path}: {status} is not in the error table"
            );
        }
    }
}
