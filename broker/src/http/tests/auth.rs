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
