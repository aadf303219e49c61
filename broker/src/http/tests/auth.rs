//! `POST /v1/auth/token` and bearer tokens: missing, malformed, expired, forged,
//! `alg: none`.

use axum::http::{Method, StatusCode, header};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use super::support::{ADMIN_PASSWORD, JWT_SECRET, TestApp, req};

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims(iat: u64, exp: u64) -> serde_json::Value {
    json!({ "sub": "admin", "iat": iat, "exp": exp, "jti": "test" })
}

fn sign(claims: &serde_json::Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .unwrap()
}

#[tokio::test]
async fn a_password_buys_a_bearer_token_that_opens_the_api() {
    let app = TestApp::start().await;
    let resp = app
        .send(req(Method::POST, "/v1/auth/token").json(&json!({
            "username": "admin", "password": ADMIN_PASSWORD
        })))
        .await;
    assert_eq!(resp.headers[header::CACHE_CONTROL], "no-store");
    let answer = resp.expect(StatusCode::OK);
    assert_eq!(answer["token_type"], "Bearer");
    assert_eq!(answer["expires_in"], 3600);
    let token = answer["access_token"].as_str().unwrap();
    app.send(req(Method::GET, "/v1/topics").token(token))
        .await
        .expect(StatusCode::OK);
    // The scheme name is case-insensitive.
    app.send(req(Method::GET, "/v1/topics").header("authorization", &format!("bearer {token}")))
        .await
        .expect(StatusCode::OK);
}

#[tokio::test]
async fn wrong_credentials_are_401_and_malformed_bodies_400() {
    let app = TestApp::start().await;
    for body in [
        json!({"username": "admin", "password": "wrong"}),
        json!({"username": "nobody", "password": ADMIN_PASSWORD}),
    ] {
        app.send(req(Method::POST, "/v1/auth/token").json(&body))
            .await
            .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    for body in [
        json!({"username": "admin"}),
        json!({"username": 5, "password": "x"}),
        json!("admin:x"),
        json!({"username": "admin", "password": "x", "otp": 1}),
    ] {
        app.send(req(Method::POST, "/v1/auth/token").json(&body))
            .await
            .expect_error(StatusCode::BAD_REQUEST, "bad_request");
    }
    let message = app
        .send(req(Method::POST, "/v1/auth/token").raw("application/json", "{\"username\":"))
        .await
        .expect_error(StatusCode::BAD_REQUEST, "bad_request");
    assert!(message.contains("malformed JSON"), "{message}");
    app.send(
        req(Method::POST, "/v1/auth/token")
            .raw("text/plain", r#"{"username":"admin","password":"x"}"#),
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST, "bad_request");
}

#[tokio::test]
async fn missing_malformed_expired_forged_and_unsigned_tokens_are_401() {
    let app = TestApp::start().await;
    let now = now_secs();
    let expired = sign(&claims(now - 7200, now - 3600), JWT_SECRET.as_bytes());
    let forged = sign(
        &claims(now, now + 3600),
        b"another-secret-that-is-long-enough-0123456789",
    );
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims(now, now + 3600).to_string());
    let unsigned = format!("{header}.{payload}.");
    let valid = sign(&claims(now, now + 3600), JWT_SECRET.as_bytes());
    let mut tampered = valid.clone();
    tampered.pop();
    tampered.push(if valid.ends_with('A') { 'B' } else { 'A' });

    let missing = app.send(req(Method::GET, "/v1/topics")).await;
    missing.expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(missing.headers[header::WWW_AUTHENTICATE], "Bearer");
    for authorization in [
        format!("Basic {}", URL_SAFE_NO_PAD.encode("admin:x")),
        "Bearer".to_owned(),
        "Bearer not-a-jwt".to_owned(),
        format!("Bearer {expired}"),
        format!("Bearer {forged}"),
        format!("Bearer {unsigned}"),
        format!("Bearer {tampered}"),
    ] {
        let resp = app
            .send(req(Method::GET, "/v1/topics").header("authorization", &authorization))
            .await;
        resp.expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    // The same claims signed with the right key pass: the failures above are the
    // signature's, the expiry's and the algorithm's.
    app.send(req(Method::GET, "/v1/topics").token(&valid))
        .await
        .expect(StatusCode::OK);
}

#[tokio::test]
async fn authenticated_routes_need_a_token_and_public_ones_do_not() {
    let app = TestApp::start().await;
    app.create_topic("t", json!({})).await;
    app.create_queue("q", json!({})).await;
    let protected = [
        (Method::GET, "/v1/topics"),
        (Method::POST, "/v1/topics"),
        (Method::GET, "/v1/topics/t"),
        (Method::DELETE, "/v1/topics/t"),
        (Method::POST, "/v1/topics/t/messages"),
        (Method::GET, "/v1/topics/t/subscriptions"),
        (Method::GET, "/v1/topics/t/subscriptions/s/messages"),
        (Method::GET, "/v1/topics/t/partitions"),
        (Method::GET, "/v1/queues"),
        (Method::GET, "/v1/queues/q"),
        (Method::POST, "/v1/queues/q/messages"),
        (Method::POST, "/v1/queues/q/receive"),
        (Method::POST, "/v1/queues/q/ack"),
        (Method::POST, "/v1/queues/q/redrive"),
        (Method::GET, "/v1/cluster"),
        (Method::POST, "/v1/bench/noop"),
    ];
    for (method, path) in protected {
        let resp = app
            .send(req(method.clone(), path).json(&json!({"messages": [{"value": "x"}]})))
            .await;
        assert_eq!(resp.status, StatusCode::UNAUTHORIZED, "{method} {path}");
    }
    // Nothing happened without a token.
    assert_eq!(app.broker.topic("t").unwrap().partitions()[0].end().0, 0);
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        let resp = app.send(req(Method::GET, path)).await;
        assert_eq!(resp.status, StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn a_long_poll_ends_when_its_caller_loses_the_right_to_it() {
    use crate::auth::{Action, Grant, ResourceKind};
    use std::time::{Duration, Instant};

    let app = TestApp::start().await;
    app.create_queue("jobs", json!({})).await;
    app.create_topic("orders", json!({})).await;
    app.post("/v1/topics/orders/subscriptions", json!({"name": "s"}))
        .await
        .expect(StatusCode::CREATED);
    let grants = [
        Grant::new(ResourceKind::Queue, "jobs", Action::Consume),
        Grant::new(ResourceKind::Topic, "orders", Action::Consume),
    ];
    let receive = |token: &str| {
        req(Method::POST, "/v1/queues/jobs/receive")
            .token(token)
            .json(&json!({"wait_ms": 20000}))
    };
    let pull = |token: &str| {
        req(
            Method::GET,
            "/v1/topics/orders/subscriptions/s/messages?wait_ms=20000",
        )
        .token(token)
    };
    for (round, (name, status)) in [
        ("removed", StatusCode::UNAUTHORIZED),
        ("revoked", StatusCode::FORBIDDEN),
    ]
    .into_iter()
    .enumerate()
    {
        let token = app.user_with(name, &grants).await;
        let started = Instant::now();
        let waiting = async {
            let (received, pulled) =
                tokio::join!(app.send(receive(&token)), app.send(pull(&token)));
            (received.status, pulled.status)
        };
        let change = async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let broker = std::sync::Arc::clone(&app.broker);
            let grants = grants.clone();
            let user = name.to_owned();
            tokio::task::spawn_blocking(move || match round {
                0 => broker.auth.remove_user(&user),
                _ => grants
                    .iter()
                    .try_for_each(|g| broker.auth.revoke(&user, g).map(|_| ())),
            })
            .await
            .unwrap()
            .unwrap();
            // Sent after the change: nobody may take them for the caller.
            app.send_to_queue("jobs", &["after"]).await;
            app.produce("orders", &["after"]).await;
        };
        let ((received, pulled), ()) = tokio::join!(waiting, change);
        assert_eq!((received, pulled), (status, status), "{name}");
        assert!(started.elapsed() < Duration::from_secs(10), "{name}");
        let jobs = app.get("/v1/queues/jobs").await.expect(StatusCode::OK);
        assert_eq!(jobs["in_flight"], 0, "{name}: nothing leased to them");
        let messages = app
            .get("/v1/topics/orders/subscriptions/s/messages")
            .await
            .expect(StatusCode::OK);
        assert_eq!(messages["messages"].as_array().unwrap().len(), 1, "{name}");
        let got = app
            .post("/v1/queues/jobs/receive", json!({}))
            .await
            .expect(StatusCode::OK);
        let receipts: Vec<_> = got["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["receipt"].clone())
            .collect();
        assert_eq!(receipts.len(), 1, "{name}");
        app.post("/v1/queues/jobs/ack", json!({"receipts": receipts}))
            .await
            .expect(StatusCode::OK);
    }
}

#[tokio::test]
async fn a_change_of_rights_wins_over_work_ready_at_the_same_moment() {
    use crate::auth::{Action, Grant, Resource, ResourceKind};
    use crate::error::ErrorCode;
    use crate::http::extract::Caller;
    use std::future::Future as _;
    use std::task::Poll;

    let app = TestApp::start().await;
    let grant = Grant::new(ResourceKind::Queue, "jobs", Action::Consume);
    let allowed = || (Action::Consume, Resource::Queue("jobs"));

    // Revoked between the request's first check and its wait.
    let token = app.user_with("early", std::slice::from_ref(&grant)).await;
    let version = app.broker.auth.version();
    let caller = Caller(app.broker.auth.verify(&token).unwrap(), version);
    app.broker.auth.revoke("early", &grant).unwrap();
    let (action, resource) = allowed();
    let ready = async { Ok::<_, crate::error::ApiError>("delivered") };
    let answer = caller
        .while_allowed(&app.broker, action, resource, ready)
        .await;
    assert_eq!(answer.unwrap_err().code, ErrorCode::Forbidden);

    // Revoked while it waits, and its work made ready right after (a message sent
    // once the right is gone), both before the request runs again.
    let token = app.user_with("late", std::slice::from_ref(&grant)).await;
    let version = app.broker.auth.version();
    let caller = Caller(app.broker.auth.verify(&token).unwrap(), version);
    let (sent, arrives) = tokio::sync::oneshot::channel::<()>();
    let (action, resource) = allowed();
    let work = async {
        arrives.await.ok();
        Ok::<_, crate::error::ApiError>("delivered")
    };
    let mut waiting = std::pin::pin!(caller.while_allowed(&app.broker, action, resource, work));
    let first = std::future::poll_fn(|cx| Poll::Ready(waiting.as_mut().poll(cx).is_pending()));
    assert!(first.await, "the work waits for its message");
    app.broker.auth.revoke("late", &grant).unwrap();
    sent.send(()).unwrap();
    assert_eq!(waiting.await.unwrap_err().code, ErrorCode::Forbidden);
}
