//! Extractors shared by every handler: the authenticated caller, path names, JSON
//! bodies, query strings and the `Idempotency-Key` header, whose rejections become the
//! API's 400/401/413 error bodies (never axum's plain-text ones).

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use serde::de::{DeserializeOwned, DeserializeSeed, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::error::Category;

use super::AppState;
use crate::auth::{Action, Principal, Resource, bearer_token};
use crate::error::{ApiError, ErrorCode};
use crate::idempotency::IdempotencyWindow;
use crate::registry::Broker;

/// The request header that makes a produce or send idempotent.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// The authenticated caller: a handler that takes one cannot run without a valid
/// bearer token. With the [`Auth::version`](crate::auth::Auth::version) of the users
/// and grants its token was checked against.
#[derive(Clone, Debug)]
pub struct Caller(pub Principal, pub u64);

impl FromRequestParts<AppState> for Caller {
    type Rejection = Unauthorized;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, Unauthorized> {
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .map(|v| v.to_str().unwrap_or("\u{fffd}"));
        let token = bearer_token(header).map_err(Unauthorized)?;
        let auth = &app.broker.auth;
        let checked_against = auth.version();
        auth.verify(token)
            .map(|who| Caller(who, checked_against))
            .map_err(Unauthorized)
    }
}

/// A refused bearer token: the 401 error body, with `WWW-Authenticate: Bearer` as
/// RFC 6750 asks.
#[derive(Debug)]
pub struct Unauthorized(pub ApiError);

impl IntoResponse for Unauthorized {
    fn into_response(self) -> Response {
        let mut response = self.0.into_response();
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        response
    }
}

impl Caller {
    /// Checks the caller's right to `action` on `resource` (403 when missing).
    pub fn require(
        &self,
        broker: &Broker,
        action: Action,
        resource: Resource<'_>,
    ) -> Result<(), ApiError> {
        broker.auth.authorize(&self.0, action, resource)
    }

    /// Runs `work`, a request that may wait (a long poll), for as long as the caller
    /// keeps the right to do it: when the users or grants change meanwhile and the
    /// caller's user is gone, its password was set, or the right was revoked, the
    /// work is dropped and the request answers 401 or 403, as a new request would.
    ///
    /// A change is looked at before each step of the work, so nothing that arrives
    /// after it (a message produced or sent once the right is gone) is handed to the
    /// caller. Work dropped in the middle of a step is cut short as by a shutdown: a
    /// pull has taken nothing, a receive's leases run out and its messages are
    /// delivered again.
    pub async fn while_allowed<T>(
        &self,
        broker: &Broker,
        action: Action,
        resource: Resource<'_>,
        work: impl Future<Output = Result<T, ApiError>>,
    ) -> Result<T, ApiError> {
        let mut changes = broker.auth.changes();
        // A change since the request's first check counts as one made now.
        if *changes.borrow_and_update() != self.1 {
            changes.mark_changed();
        }
        let revoked = async {
            loop {
                if changes.changed().await.is_err() {
                    return std::future::pending().await;
                }
                if let Err(error) = broker.auth.still_allowed(&self.0, action, resource) {
                    return error;
                }
            }
        };
        tokio::select! {
            biased;
            error = revoked => Err(error),
            done = work => done,
        }
    }

    /// Checks that the caller has some right on `resource`, so may describe it (403
    /// when not). Asked before the resource is looked up, so that a caller cannot
    /// learn which names exist outside their rights.
    pub fn require_visible(&self, broker: &Broker, resource: Resource<'_>) -> Result<(), ApiError> {
        if broker.auth.can_see(&self.0, resource) {
            return Ok(());
        }
        Err(ApiError::forbidden(format!(
            "user {:?} has no right on {resource}",
            self.0.name
        )))
    }
}

/// Path parameters; a parameter that is not valid percent-encoded UTF-8 is a 400.
/// Names are checked by the handler (`names::validate`) before any lookup.
#[derive(Debug, Clone)]
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(rejection) => Err(path_rejection(rejection)),
        }
    }
}

fn path_rejection(rejection: PathRejection) -> ApiError {
    if rejection.status().is_server_error() {
        return ApiError::internal(rejection.body_text());
    }
    ApiError::bad_request(format!("invalid path: {}", rejection.body_text()))
}

/// A JSON body; a malformed one is a 400 that says what is wrong, an oversized one a
/// 413, a wrong content type a 400.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if !json_content_type(req.headers()) {
            return Err(not_json());
        }
        let bytes = read_body(req, state).await?;
        parse(&bytes).map(Json)
    }
}

/// Parses a JSON body, borrowing strings from it where it can. The fast path is
/// plain serde_json; only a body that fails is parsed again, tracking the path of
/// the bad field for the error (`messages[3].value: invalid type ...`).
///
/// Every request body is a JSON object. serde would also fill a struct from an
/// array of its fields in order (`["name", 3]` for `{"name": ..., "partitions":
/// ...}`); that is refused here for the body, and by [`objects`] for the objects
/// a body lists.
fn parse<'de, T: Deserialize<'de>>(bytes: &'de [u8]) -> Result<T, ApiError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_some_and(|&b| b != b'{') {
        return Err(ApiError::bad_request(
            "invalid request body: expected a JSON object",
        ));
    }
    serde_json::from_slice(bytes).map_err(|error| {
        let mut deserializer = serde_json::Deserializer::from_slice(bytes);
        let (category, message) = match serde_path_to_error::deserialize::<_, T>(&mut deserializer)
        {
            Err(located) => (located.inner().classify(), located.to_string()),
            Ok(_) => (error.classify(), error.to_string()),
        };
        match category {
            Category::Data => ApiError::bad_request(format!("invalid request body: {message}")),
            Category::Syntax | Category::Eof | Category::Io => {
                ApiError::bad_request(format!("malformed JSON: {message}"))
            }
        }
    })
}

/// Deserializes a list whose items are structs, each only from a JSON object (not
/// from an array of its fields): `#[serde(deserialize_with = "objects")]`.
pub fn objects<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Items<T>(PhantomData<T>);

    impl<'de, T: Deserialize<'de>> Visitor<'de> for Items<T> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an array of objects")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
            while let Some(item) = seq.next_element_seed(Object(PhantomData))? {
                items.push(item);
            }
            Ok(items)
        }
    }

    deserializer.deserialize_seq(Items(PhantomData))
}

/// One struct, only from a JSON object.
struct Object<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> DeserializeSeed<'de> for Object<T> {
    type Value = T;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<T, D::Error> {
        T::deserialize(MapOnly(deserializer))
    }
}

/// A deserializer that reads a struct as a map, so that an array in its place is
/// an "invalid type" error naming the struct.
struct MapOnly<D>(D);

impl<'de, D: Deserializer<'de>> Deserializer<'de> for MapOnly<D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_any(visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_map(visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
        byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
        identifier ignored_any
    }
}

/// A JSON body, checked for its content type and size but not parsed: the handler
/// parses it with [`JsonBody::parse`] into a type that borrows from it.
#[derive(Debug, Clone)]
pub struct JsonBody(pub Bytes);

impl JsonBody {
    /// The body as `T`; a 400 that says what is wrong when it is not.
    pub fn parse<'a, T: Deserialize<'a>>(&'a self) -> Result<T, ApiError> {
        parse(&self.0)
    }

    /// The messages of a produce or send body, ready to store, and the request
    /// as `T` when serde read it. A body of the plain shape
    /// (`fast_body::plain_messages`) is read straight into messages (there is
    /// nothing else in it); anything else is parsed by serde, whose answer (or
    /// 400) then counts, and `messages_of` takes its messages out. A 400 for an
    /// empty list and for the first bad message.
    pub fn parse_messages<'a, T: Deserialize<'a>>(
        &'a self,
        messages_of: impl FnOnce(&mut T) -> Vec<super::body::MessageIn<'a>>,
    ) -> Result<(Vec<crate::message::NewMessage<'a>>, Option<T>), ApiError> {
        if let Some(messages) = super::fast_body::plain_messages(&self.0) {
            return super::body::not_empty(messages).map(|messages| (messages, None));
        }
        let mut request: T = self.parse()?;
        let messages = super::body::new_messages(messages_of(&mut request))?;
        Ok((messages, Some(request)))
    }
}

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if !json_content_type(req.headers()) {
            return Err(not_json());
        }
        read_body(req, state).await.map(JsonBody)
    }
}

/// A JSON body that may be left out: an empty body (or only whitespace) stands for
/// `T::default()`, for requests whose fields are all optional (receive, redrive).
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonOrEmpty<T>(pub T);

impl<T: DeserializeOwned + Default, S: Send + Sync> FromRequest<S> for JsonOrEmpty<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let is_json = json_content_type(req.headers());
        let bytes = read_body(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(JsonOrEmpty(T::default()));
        }
        if !is_json {
            return Err(not_json());
        }
        parse(&bytes).map(JsonOrEmpty)
    }
}

/// Whether the request says its body is JSON (`application/json`, or
/// `application/<something>+json`), parameters such as `charset` allowed.
fn json_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match essence.strip_prefix("application/") {
        Some(subtype) => subtype == "json" || subtype.ends_with("+json"),
        None => false,
    }
}

fn not_json() -> ApiError {
    ApiError::bad_request("the body must be JSON, with Content-Type: application/json")
}

fn too_large() -> ApiError {
    ApiError::new(
        ErrorCode::PayloadTooLarge,
        "the request body is larger than the limit",
    )
}

/// How long a request's whole body may take to arrive once its headers have:
/// a client that sends a body more slowly than this (or stops half-way) holds a
/// connection and a request task only this long.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Reads the whole body within [`BODY_READ_TIMEOUT`]: 408 when it does not
/// arrive in time, 413 when it is over the limit, 400 when it cannot be read.
pub async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    match tokio::time::timeout(BODY_READ_TIMEOUT, Bytes::from_request(req, state)).await {
        Ok(read) => read.map_err(bytes_rejection),
        Err(_) => Err(ApiError::new(
            ErrorCode::RequestTimeout,
            format!(
                "the request body did not arrive within {} s",
                BODY_READ_TIMEOUT.as_secs()
            ),
        )),
    }
}

/// A failure to read the body: 413 when it is over the limit, else 400.
pub fn bytes_rejection(rejection: BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        too_large()
    } else {
        ApiError::bad_request(format!(
            "the request body could not be read: {}",
            rejection.body_text()
        ))
    }
}

/// A query string; a malformed one is a 400.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Query(value)),
            Err(rejection) => Err(query_rejection(rejection)),
        }
    }
}

fn query_rejection(rejection: QueryRejection) -> ApiError {
    ApiError::bad_request(format!("invalid query string: {}", rejection.body_text()))
}

/// The optional `Idempotency-Key` header, checked: 1 to 256 printable characters,
/// else a 400.
#[derive(Debug, Clone, Default)]
pub struct IdempotencyKey(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let Some(value) = parts.headers.get(IDEMPOTENCY_KEY_HEADER) else {
            return Ok(IdempotencyKey(None));
        };
        let key = value.to_str().map_err(|_| {
            ApiError::bad_request("Idempotency-Key must be printable ASCII characters")
        })?;
        IdempotencyWindow::validate_key(key)?;
        Ok(IdempotencyKey(Some(key.to_owned())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types_are_recognised() {
        let mut headers = HeaderMap::new();
        assert!(!json_content_type(&headers));
        for (value, json) in [
            ("application/json", true),
            ("application/json; charset=utf-8", true),
            ("Application/JSON", true),
            ("application/cloudevents+json", true),
            ("text/json", false),
            ("application/x-www-form-urlencoded", false),
        ] {
            headers.insert(header::CONTENT_TYPE, value.parse().unwrap());
            assert_eq!(json_content_type(&headers), json, "{value}");
        }
    }
}
