//! A broker on a temporary directory, its router, an admin token, and a small
//! request builder; requests go through `tower::ServiceExt::oneshot`, no socket.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, header};
use serde_json::Value;
use tower::ServiceExt as _;

use crate::auth::Grant;
use crate::config::BrokerConfig;
use crate::registry::Broker;

/// The password of `admin` in every test broker.
pub const ADMIN_PASSWORD: &str = "admin-password-for-tests";
/// The token signing secret of every test broker, so tests can forge tokens.
pub const JWT_SECRET: &str = "a-jwt-secret-for-the-http-tests-0123456789";
/// The body limit of test brokers (small, so 413 is cheap to provoke).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A broker, its router and an admin token.
pub struct TestApp {
    /// Holds the data directory until the test ends.
    pub dir: tempfile::TempDir,
    /// The broker behind the router.
    pub broker: Arc<Broker>,
    /// The router under test.
    pub router: Router,
    /// A token of `admin`.
    pub token: String,
}

impl TestApp {
    /// A broker with the test settings.
    pub async fn start() -> TestApp {
        Self::start_with(|_| {}).await
    }

    /// A broker with the test settings changed by `edit`.
    pub async fn start_with(edit: impl FnOnce(&mut BrokerConfig)) -> TestApp {
        let dir = tempfile::tempdir().unwrap();
        Self::open_in(dir, edit).await
    }

    /// The same broker after a clean stop and a start on its data directory, with
    /// the test settings (not those an `edit` of [`TestApp::start_with`] changed).
    /// Every request to the old one must have ended.
    pub async fn restart(self) -> TestApp {
        let TestApp {
            dir,
            broker,
            router,
            ..
        } = self;
        drop(router);
        broker.close().unwrap();
        drop(broker);
        Self::open_in(dir, |_| {}).await
    }

    async fn open_in(dir: tempfile::TempDir, edit: impl FnOnce(&mut BrokerConfig)) -> TestApp {
        let mut config = BrokerConfig {
            data_dir: dir.path().join("data"),
            admin_password: Some(ADMIN_PASSWORD.into()),
            jwt_secret: Some(JWT_SECRET.into()),
            max_body_bytes: MAX_BODY_BYTES,
            ..BrokerConfig::default()
        };
        edit(&mut config);
        let (broker, _) = tokio::task::spawn_blocking(move || Broker::open(config))
            .await
            .unwrap()
            .unwrap();
        let broker = Arc::new(broker);
        let router = super::super::router(Arc::clone(&broker));
        let mut app = TestApp {
            dir,
            broker,
            router,
            token: String::new(),
        };
        app.token = app.token_for("admin", ADMIN_PASSWORD).await;
        app
    }

    /// A token for a user, from the broker directly (argon2 on a blocking thread).
    pub async fn token_for(&self, user: &str, password: &str) -> String {
        let broker = Arc::clone(&self.broker);
        let (user, password) = (user.to_owned(), password.to_owned());
        tokio::task::spawn_blocking(move || broker.auth.issue_token(&user, &password))
            .await
            .unwrap()
            .unwrap()
            .access_token
    }

    /// Adds a non-admin user with `grants` and returns a token of theirs.
    pub async fn user_with(&self, name: &str, grants: &[Grant]) -> String {
        let broker = Arc::clone(&self.broker);
        let user = name.to_owned();
        let grants = grants.to_vec();
        tokio::task::spawn_blocking(move || {
            broker.auth.add_user(&user, "user-password-1", false)?;
            for grant in grants {
                broker.auth.grant(&user, grant)?;
            }
            Ok::<_, crate::error::ApiError>(())
        })
        .await
        .unwrap()
        .unwrap();
        self.token_for(name, "user-password-1").await
    }

    /// Sends a request built with [`req`].
    pub async fn send(&self, req: Req) -> Resp {
        let request = req.build();
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        Resp {
            status,
            headers,
            body,
        }
    }

    /// `GET path` as admin.
    pub async fn get(&self, path: &str) -> Resp {
        self.send(req(Method::GET, path).token(&self.token)).await
    }

    /// `POST path` with a JSON body, as admin.
    pub async fn post(&self, path: &str, body: Value) -> Resp {
        self.send(req(Method::POST, path).token(&self.token).json(&body))
            .await
    }

    /// `DELETE path` as admin.
    pub async fn delete(&self, path: &str) -> Resp {
        self.send(req(Method::DELETE, path).token(&self.token))
            .await
    }

    /// Creates a topic as admin, with extra settings merged into `{"name"}`.
    pub async fn create_topic(&self, name: &str, settings: Value) -> Value {
        let mut body = serde_json::json!({ "name": name });
        merge(&mut body, settings);
        self.post("/v1/topics", body)
            .await
            .expect(StatusCode::CREATED)
    }

    /// Creates a queue as admin, with extra settings merged into `{"name"}`.
    pub async fn create_queue(&self, name: &str, settings: Value) -> Value {
        let mut body = serde_json::json!({ "name": name });
        merge(&mut body, settings);
        self.post("/v1/queues", body)
            .await
            .expect(StatusCode::CREATED)
    }

    /// Produces text values (no keys) and returns the answer.
    pub async fn produce(&self, topic: &str, values: &[&str]) -> Value {
        let messages: Vec<Value> = values
            .iter()
            .map(|v| serde_json::json!({ "value": v }))
            .collect();
        self.post(
            &format!("/v1/topics/{topic}/messages"),
            serde_json::json!({ "messages": messages }),
        )
        .await
        .expect(StatusCode::OK)
    }

    /// Sends text values to a queue and returns the ids.
    pub async fn send_to_queue(&self, queue: &str, values: &[&str]) -> Vec<String> {
        let messages: Vec<Value> = values
            .iter()
            .map(|v| serde_json::json!({ "value": v }))
            .collect();
        let answer = self
            .post(
                &format!("/v1/queues/{queue}/messages"),
                serde_json::json!({ "messages": messages }),
            )
            .await
            .expect(StatusCode::OK);
        answer["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|id| id.as_str().unwrap().to_owned())
            .collect()
    }
}

fn merge(into: &mut Value, from: Value) {
    if let (Value::Object(into), Value::Object(from)) = (into, from) {
        into.extend(from);
    }
}

/// A request under construction.
pub struct Req {
    builder: axum::http::request::Builder,
    body: Body,
}

/// Starts a request.
pub fn req(method: Method, path: &str) -> Req {
    Req {
        builder: Request::builder().method(method).uri(path),
        body: Body::empty(),
    }
}

impl Req {
    /// Adds `Authorization: Bearer <token>`.
    pub fn token(self, token: &str) -> Req {
        self.header(header::AUTHORIZATION.as_str(), &format!("Bearer {token}"))
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Req {
        self.builder = self.builder.header(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
        self
    }

    /// A JSON body.
    pub fn json(self, body: &Value) -> Req {
        self.raw("application/json", serde_json::to_vec(body).unwrap())
    }

    /// A body of any content type.
    pub fn raw(mut self, content_type: &str, body: impl Into<Bytes>) -> Req {
        self.builder = self.builder.header(header::CONTENT_TYPE, content_type);
        self.body = Body::from(body.into());
        self
    }

    fn build(self) -> Request<Body> {
        self.builder.body(self.body).unwrap()
    }
}

/// An answer.
#[derive(Debug)]
pub struct Resp {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl Resp {
    /// The body as JSON (`null` when empty).
    pub fn json(&self) -> Value {
        if self.body.is_empty() {
            return Value::Null;
        }
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Asserts the status and returns the JSON body.
    #[track_caller]
    pub fn expect(&self, status: StatusCode) -> Value {
        assert_eq!(self.status, status, "body: {}", self.text());
        self.json()
    }

    /// Asserts an error answer: the status, `{"error":{"code","message"}}` with the
    /// code, a non-empty message and a JSON content type. Returns the message.
    #[track_caller]
    pub fn expect_error(&self, status: StatusCode, code: &str) -> String {
        let body = self.expect(status);
        assert_eq!(body["error"]["code"], code, "body: {body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(!message.is_empty(), "no message: {body}");
        assert_eq!(
            self.headers.get(header::CONTENT_TYPE).unwrap(),
            "application/json"
        );
        message.to_owned()
    }
}

/// Flips one byte of `value` where a segment file of the partition in `dir` stores
/// it, as damage on the disk would.
pub fn damage_stored_value(dir: &std::path::Path, value: &[u8]) {
    let segment = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "log"))
        .unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    let at = bytes.windows(value.len()).position(|w| w == value).unwrap();
    bytes[at] ^= 0x20;
    std::fs::write(&segment, &bytes).unwrap();
}
