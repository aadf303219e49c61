//! Request forwarding over gRPC: a node that does not lead a partition runs the
//! client's REST request on the leader (`mom.v1.Forward/Call`) and answers with the
//! leader's response.
//!
//! - Server: [`ForwardService`] runs each [`ForwardRequest`] through the node's own
//!   REST router, in process, and returns the response. It marks the request with
//!   [`FORWARDED_HOPS_HEADER`] so a handler can refuse to forward it again.
//! - Client: [`Peers`] keeps one lazily connected [`Channel`] per peer gRPC address;
//!   [`Peers::forward`] calls a peer, and [`Peers::channel`] hands the same channels
//!   to the replication client.
//! - Conversions: [`request_to_proto`] on the forwarding node, [`proto_to_response`]
//!   for the leader's answer.
//! - [`serve_grpc`] serves every gRPC service of a node on one listener;
//!   [`grpc_routes`] starts the set of services with forwarding.
//!
//! Hop-by-hop headers (`connection`, `transfer-encoding`, `content-length`, ...)
//! never cross: they describe one HTTP connection, not the request, and the length
//! is recomputed from the body on each side.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::uri::PathAndQuery;
use axum::http::{Method, Request, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use proto::v1::forward_client::ForwardClient;
use proto::v1::forward_server::{Forward, ForwardServer};
use proto::v1::{ForwardRequest, ForwardResponse, Header};
use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint, Server};
use tower::ServiceExt;

use crate::error::{ErrorBody, ErrorDetail};

/// The request header that counts how many nodes forwarded a request: the serving
/// node sets it to the request's `hops + 1`, replacing any value the client sent.
pub const FORWARDED_HOPS_HEADER: &str = "x-mom-forwarded-hops";

/// How long connecting to a peer may take. Short, so that forwarding to a dead peer
/// fails fast and the caller can answer or retry elsewhere; peers sit on the same
/// network, where a healthy connect takes milliseconds.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How often an HTTP/2 ping checks an open connection, idle or not, on both client
/// and server, so that a peer that vanished without closing its socket is noticed.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// How long a ping may go unanswered before the connection is closed.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Room in a gRPC message for everything but the body: method, path, headers and
/// framing. HTTP servers refuse request heads far smaller than this.
pub const ENVELOPE_BYTES_MAX: usize = 1 << 20;

/// The most peer channels [`Peers`] keeps. A cluster has far fewer nodes; the bound
/// only stops addresses that come and go (nodes restarted on new ports) from growing
/// the cache forever.
pub const PEER_CHANNELS_MAX: usize = 1024;

/// Headers that describe one HTTP connection rather than the request or response,
/// and so are not copied from one side to the other. `content-length` is among them
/// because each side knows the body and recomputes it.
const HOP_BY_HOP_HEADERS: [HeaderName; 8] = [
    header::CONNECTION,
    header::CONTENT_LENGTH,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// `keep-alive` and `proxy-connection` have no constant in `http`.
const HOP_BY_HOP_EXTRA: [&str; 2] = ["keep-alive", "proxy-connection"];

/// Why forwarding a request to a peer failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ForwardError {
    /// The peer's gRPC address is not a `host:port`.
    #[error("invalid peer address {addr:?}: {source}")]
    InvalidAddress {
        /// The address as given.
        addr: String,
        /// Why it is invalid.
        source: tonic::transport::Error,
    },
    /// No connection to the peer: it refused or did not answer the connect, or the
    /// connection broke. The request may have reached the peer if the connection
    /// broke after sending it.
    #[error("peer {addr} is unreachable: {source}")]
    Unreachable {
        /// The peer's gRPC address.
        addr: String,
        /// The status made on this side for the failure.
        source: Box<tonic::Status>,
    },
    /// The connection to the peer failed in another way (protocol error, message
    /// too large to decode).
    #[error("transport to peer {addr} failed: {source}")]
    Transport {
        /// The peer's gRPC address.
        addr: String,
        /// The status made on this side for the failure.
        source: Box<tonic::Status>,
    },
    /// The peer did not answer in time. The request may still run there.
    #[error("peer {addr} did not answer within {timeout_ms} ms")]
    Timeout {
        /// The peer's gRPC address.
        addr: String,
        /// The time allowed.
        timeout_ms: u64,
    },
    /// The peer answered with a gRPC error status: it refused or failed the call
    /// (not the REST request, whose errors come back as HTTP responses).
    #[error("peer {addr} answered with an error: {source}")]
    Status {
        /// The peer's gRPC address.
        addr: String,
        /// The peer's status.
        source: Box<tonic::Status>,
    },
    /// A body is larger than the limit.
    #[error("the body is larger than {limit} bytes")]
    BodyTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// Reading a body failed.
    #[error("reading the body failed: {source}")]
    Body {
        /// The body's error.
        source: axum::Error,
    },
}

impl ForwardError {
    /// Sorts a failed call's status: a status made on this side (it carries the
    /// transport error as its source) is a connection failure; one without a source
    /// came from the peer.
    fn from_status(addr: &str, status: tonic::Status) -> ForwardError {
        let addr = addr.to_owned();
        let source = Box::new(status);
        if std::error::Error::source(&*source).is_none() {
            ForwardError::Status { addr, source }
        } else if source.code() == tonic::Code::Unavailable {
            ForwardError::Unreachable { addr, source }
        } else {
            ForwardError::Transport { addr, source }
        }
    }
}

/// The server side of `mom.v1.Forward`: runs forwarded requests through the node's
/// REST router, as if a client had sent them to this node.
#[derive(Clone, Debug)]
pub struct ForwardService {
    /// The node's full REST router; cloning it per request is cheap (shared inside).
    router: Router,
    /// The largest response body returned to the forwarding node, in bytes; the
    /// request body limit is the router's own, plus [`ENVELOPE_BYTES_MAX`] for the
    /// gRPC message (see [`ForwardService::into_server`]).
    body_bytes_max: usize,
}

impl ForwardService {
    /// A service running requests through `router` (the node's full REST router),
    /// returning response bodies of at most `body_bytes_max` bytes and accepting
    /// request bodies of as much.
    pub fn new(router: Router, body_bytes_max: usize) -> ForwardService {
        ForwardService {
            router,
            body_bytes_max,
        }
    }

    /// The gRPC service, accepting messages up to the body limit plus
    /// [`ENVELOPE_BYTES_MAX`].
    pub fn into_server(self) -> ForwardServer<ForwardService> {
        let message_bytes_max = self.body_bytes_max.saturating_add(ENVELOPE_BYTES_MAX);
        ForwardServer::new(self)
            .max_decoding_message_size(message_bytes_max)
            .max_encoding_message_size(message_bytes_max)
    }
}

#[tonic::async_trait]
impl Forward for ForwardService {
    async fn call(
        &self,
        request: tonic::Request<ForwardRequest>,
    ) -> Result<tonic::Response<ForwardResponse>, tonic::Status> {
        let request = proto_to_request(request.into_inner())?;
        tracing::debug!(method = %request.method(), uri = %request.uri(), "forwarded request");
        let response = match self.router.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        let response = response_to_proto(response, self.body_bytes_max)
            .await
            .map_err(|e| match e {
                ForwardError::BodyTooLarge { .. } => {
                    tonic::Status::resource_exhausted(e.to_string())
                }
                other => tonic::Status::internal(other.to_string()),
            })?;
        Ok(tonic::Response::new(response))
    }
}

/// The channels to peers, one per gRPC address, made on first use and kept.
///
/// A channel connects lazily and reconnects by itself after a failure; a call on a
/// channel whose peer is down fails within [`CONNECT_TIMEOUT`]. HTTP/2 keepalive
/// pings ([`KEEPALIVE_INTERVAL`], [`KEEPALIVE_TIMEOUT`]) notice a peer that vanished.
#[derive(Debug)]
pub struct Peers {
    /// The channels by peer gRPC address (`host:port`), at most
    /// [`PEER_CHANNELS_MAX`]. Locked only to look up or insert, never across an
    /// `.await`.
    channels: Mutex<HashMap<String, Channel>>,
    /// The largest forwarded body, in bytes, each way.
    body_bytes_max: usize,
}

impl Peers {
    /// No channels yet; forwarded request and response bodies of at most
    /// `body_bytes_max` bytes.
    pub fn new(body_bytes_max: usize) -> Peers {
        Peers {
            channels: Mutex::new(HashMap::new()),
            body_bytes_max,
        }
    }

    /// The channel to the peer at `grpc_addr` (`host:port`), made if there is none.
    /// Channels are cheap to clone and shared by every client using them, e.g.
    /// `ReplicationClient::new(peers.channel(addr)?)`.
    ///
    /// Must be called within a Tokio runtime: a new channel spawns its worker task.
    pub fn channel(&self, grpc_addr: &str) -> Result<Channel, ForwardError> {
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(channel) = channels.get(grpc_addr) {
            return Ok(channel.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{grpc_addr}")).map_err(|source| {
            ForwardError::InvalidAddress {
                addr: grpc_addr.to_owned(),
                source,
            }
        })?;
        let channel = endpoint
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true)
            .connect_lazy();
        if channels.len() >= PEER_CHANNELS_MAX {
            // Any one will do: a dropped channel is made again on its next use.
            if let Some(old) = channels.keys().next().cloned() {
                channels.remove(&old);
            }
        }
        channels.insert(grpc_addr.to_owned(), channel.clone());
        Ok(channel)
    }

    /// Forgets the channel to `grpc_addr` (a node left, or moved to another address).
    pub fn remove(&self, grpc_addr: &str) {
        self.channels
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(grpc_addr);
    }

    /// Runs `request` on the peer at `grpc_addr`, waiting at most `timeout` for the
    /// answer. When the time is up the call is cancelled, but the peer may already
    /// have applied the request.
    pub async fn forward(
        &self,
        grpc_addr: &str,
        request: ForwardRequest,
        timeout: Duration,
    ) -> Result<ForwardResponse, ForwardError> {
        let message_bytes_max = self.body_bytes_max.saturating_add(ENVELOPE_BYTES_MAX);
        let mut client = ForwardClient::new(self.channel(grpc_addr)?)
            .max_decoding_message_size(message_bytes_max)
            .max_encoding_message_size(message_bytes_max);
        match tokio::time::timeout(timeout, client.call(request)).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(ForwardError::from_status(grpc_addr, status)),
            Err(_elapsed) => Err(ForwardError::Timeout {
                addr: grpc_addr.to_owned(),
                timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            }),
        }
    }
}

/// The gRPC services of a node, starting with forwarding. Add the others with
/// [`Routes::add_service`], e.g.
/// `grpc_routes(forward).add_service(ReplicationServer::new(replication))`.
pub fn grpc_routes(forward: ForwardService) -> Routes {
    Routes::new(forward.into_server())
}

/// Serves `routes` (see [`grpc_routes`]) on an already bound listener until
/// `shutdown` completes, then lets calls in flight finish. Tests bind port 0.
pub async fn serve_grpc(
    listener: TcpListener,
    routes: Routes,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    Server::builder()
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}

/// The request a client sent to this node, as a [`ForwardRequest`] that has been
/// forwarded `hops` times before; a body over `body_bytes_max` bytes is refused.
pub async fn request_to_proto(
    request: Request<Body>,
    hops: u32,
    body_bytes_max: usize,
) -> Result<ForwardRequest, ForwardError> {
    let (parts, body) = request.into_parts();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or("/", PathAndQuery::as_str)
        .to_owned();
    let hops_header = HeaderName::from_static(FORWARDED_HOPS_HEADER);
    let headers = headers_to_proto(&parts.headers, |name| *name != hops_header);
    Ok(ForwardRequest {
        method: parts.method.as_str().to_owned(),
        path_and_query,
        headers,
        body: collect_body(body, body_bytes_max).await?,
        hops,
    })
}

/// The leader's answer as this node's response. An answer that is not valid HTTP
/// (status out of range, bad header) becomes a `502 Bad Gateway` error body.
pub fn proto_to_response(response: ForwardResponse) -> Response {
    let status = u16::try_from(response.status)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok());
    let Some(status) = status else {
        return bad_gateway(format!(
            "the leader answered with status {}",
            response.status
        ));
    };
    let headers = match headers_from_proto(response.headers) {
        Ok(headers) => headers,
        Err(reason) => return bad_gateway(format!("the leader answered with {reason}")),
    };
    let mut out = Response::new(Body::from(response.body));
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    out
}

/// How many times the request in `headers` was forwarded: the value of
/// [`FORWARDED_HOPS_HEADER`], or 0 when it is absent or not a number.
pub fn forwarded_hops(headers: &HeaderMap) -> u32 {
    headers
        .get(FORWARDED_HOPS_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A forwarded request as an HTTP request for the router, marked with its hop count.
pub fn proto_to_request(request: ForwardRequest) -> Result<Request<Body>, tonic::Status> {
    let method = Method::from_bytes(request.method.as_bytes()).map_err(|_| {
        tonic::Status::invalid_argument(format!("invalid method {:?}", request.method))
    })?;
    let uri = origin_form_uri(&request.path_and_query).ok_or_else(|| {
        tonic::Status::invalid_argument(format!("invalid path {:?}", request.path_and_query))
    })?;
    let mut headers =
        headers_from_proto(request.headers).map_err(tonic::Status::invalid_argument)?;
    headers.insert(
        HeaderName::from_static(FORWARDED_HOPS_HEADER),
        HeaderValue::from(request.hops.saturating_add(1)),
    );
    if !request.body.is_empty() {
        headers.insert(
            header::CONTENT_LENGTH,
            HeaderValue::from(request.body.len()),
        );
    }
    let mut out = Request::new(Body::from(request.body));
    *out.method_mut() = method;
    *out.uri_mut() = uri;
    *out.headers_mut() = headers;
    Ok(out)
}

/// `path_and_query` as a URI in origin form (starting with `/`), or `None`.
fn origin_form_uri(path_and_query: &str) -> Option<Uri> {
    if !path_and_query.starts_with('/') {
        return None;
    }
    let path_and_query = path_and_query.parse::<PathAndQuery>().ok()?;
    Uri::builder().path_and_query(path_and_query).build().ok()
}

/// The router's response as a [`ForwardResponse`]; a body over `body_bytes_max`
/// bytes is refused.
async fn response_to_proto(
    response: Response,
    body_bytes_max: usize,
) -> Result<ForwardResponse, ForwardError> {
    let (parts, body) = response.into_parts();
    Ok(ForwardResponse {
        status: u32::from(parts.status.as_u16()),
        headers: headers_to_proto(&parts.headers, |_| true),
        body: collect_body(body, body_bytes_max).await?,
    })
}

/// The end-to-end headers of `headers` that `keep` accepts, in order, one entry per
/// value.
fn headers_to_proto(headers: &HeaderMap, keep: impl Fn(&HeaderName) -> bool) -> Vec<Header> {
    headers
        .iter()
        .filter(|(name, _)| !is_hop_by_hop(name) && keep(name))
        .map(|(name, value)| Header {
            name: name.as_str().to_owned(),
            value: value.as_bytes().to_vec(),
        })
        .collect()
}

/// The end-to-end headers of `headers` as a map, or what is invalid.
fn headers_from_proto(headers: Vec<Header>) -> Result<HeaderMap, String> {
    let mut out = HeaderMap::with_capacity(headers.len());
    for Header { name, value } in headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("invalid header name {name:?}"))?;
        let value = HeaderValue::from_bytes(&value)
            .map_err(|_| format!("invalid value for header {name}"))?;
        if !is_hop_by_hop(&name) {
            out.append(name, value);
        }
    }
    Ok(out)
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP_HEADERS.contains(name) || HOP_BY_HOP_EXTRA.contains(&name.as_str())
}

/// The whole body, refused once it passes `limit` bytes.
async fn collect_body(body: Body, limit: usize) -> Result<Vec<u8>, ForwardError> {
    let mut out = Vec::new();
    let mut chunks = body.into_data_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|source| ForwardError::Body { source })?;
        if chunk.len() > limit.saturating_sub(out.len()) {
            return Err(ForwardError::BodyTooLarge { limit });
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// A `502 Bad Gateway` with the API's error body: the leader's answer was unusable.
fn bad_gateway(message: String) -> Response {
    tracing::warn!(%message, "unusable answer to a forwarded request");
    let body = ErrorBody {
        error: ErrorDetail {
            code: "bad_gateway".to_owned(),
            message,
        },
    };
    (StatusCode::BAD_GATEWAY, axum::Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use axum::routing::{get, post};
    use tokio::sync::oneshot;

    use super::*;

    /// Answers `POST /echo` with 201, the body and an `x-echo` header; `GET /hops`
    /// with the hop header's value; `GET /slow` after five seconds.
    fn app() -> Router {
        Router::new()
            .route(
                "/echo",
                post(|headers: HeaderMap, body: bytes::Bytes| async move {
                    let kind = headers
                        .get(header::CONTENT_TYPE)
                        .cloned()
                        .unwrap_or(HeaderValue::from_static("none"));
                    (
                        StatusCode::CREATED,
                        [(HeaderName::from_static("x-echo"), kind)],
                        body,
                    )
                }),
            )
            .route(
                "/hops",
                get(|headers: HeaderMap| async move { forwarded_hops(&headers).to_string() }),
            )
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    "late"
                }),
            )
    }

    /// A gRPC server for `app()` on a free port: its address and its stop switch.
    async fn start() -> (String, oneshot::Sender<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let routes = grpc_routes(ForwardService::new(app(), 1 << 20));
        tokio::spawn(serve_grpc(listener, routes, async {
            let _ = stop_rx.await;
        }));
        (addr, stop_tx)
    }

    fn request(method: &str, path_and_query: &str, body: &[u8], hops: u32) -> ForwardRequest {
        ForwardRequest {
            method: method.to_owned(),
            path_and_query: path_and_query.to_owned(),
            headers: vec![Header {
                name: "content-type".to_owned(),
                value: b"text/plain".to_vec(),
            }],
            body: body.to_vec(),
            hops,
        }
    }

    fn header<'a>(headers: &'a [Header], name: &str) -> Option<&'a [u8]> {
        headers
            .iter()
            .find(|h| h.name == name)
            .map(|h| h.value.as_slice())
    }

    #[tokio::test]
    async fn forward_round_trips_status_headers_and_body() {
        let (addr, _stop) = start().await;
        let peers = Peers::new(1 << 20);
        let timeout = Duration::from_secs(5);
        let response = peers
            .forward(&addr, request("POST", "/echo?x=1", b"hello", 0), timeout)
            .await
            .unwrap();
        assert_eq!(response.status, 201);
        assert_eq!(
            header(&response.headers, "x-echo"),
            Some(&b"text/plain"[..])
        );
        assert_eq!(header(&response.headers, "content-length"), None);
        assert_eq!(response.body, b"hello");

        let response = peers
            .forward(&addr, request("GET", "/hops", b"", 2), timeout)
            .await
            .unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.body, b"3");

        let response = proto_to_response(response);
        assert_eq!(response.status(), StatusCode::OK);
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .unwrap();
        assert_eq!(&body[..], b"3");
    }

    #[tokio::test]
    async fn client_hop_header_is_replaced() {
        let (addr, _stop) = start().await;
        let mut forwarded = request("GET", "/hops", b"", 0);
        forwarded.headers.push(Header {
            name: FORWARDED_HOPS_HEADER.to_owned(),
            value: b"0".to_vec(),
        });
        let response = Peers::new(1 << 20)
            .forward(&addr, forwarded, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(response.body, b"1");
    }

    #[tokio::test]
    async fn closed_port_fails_fast_as_unreachable() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let started = Instant::now();
        let error = Peers::new(1 << 20)
            .forward(
                &addr,
                request("GET", "/hops", b"", 0),
                Duration::from_secs(10),
            )
            .await
            .unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        assert!(
            matches!(error, ForwardError::Unreachable { .. }),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn slow_answer_times_out() {
        let (addr, _stop) = start().await;
        let error = Peers::new(1 << 20)
            .forward(
                &addr,
                request("GET", "/slow", b"", 0),
                Duration::from_millis(200),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(
                error,
                ForwardError::Timeout {
                    timeout_ms: 200,
                    ..
                }
            ),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn invalid_request_is_invalid_argument() {
        let (addr, _stop) = start().await;
        let peers = Peers::new(1 << 20);
        let cases = [
            request("BAD METHOD", "/echo", b"", 0),
            request("GET", "no-slash", b"", 0),
            ForwardRequest {
                headers: vec![Header {
                    name: "bad name".to_owned(),
                    value: b"v".to_vec(),
                }],
                ..request("GET", "/hops", b"", 0)
            },
        ];
        for case in cases {
            let error = peers
                .forward(&addr, case, Duration::from_secs(5))
                .await
                .unwrap_err();
            match error {
                ForwardError::Status { source, .. } => {
                    assert_eq!(source.code(), tonic::Code::InvalidArgument);
                }
                other => panic!("expected a status, got {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn invalid_address_is_refused() {
        let error = Peers::new(1 << 20).channel("not a host:port").unwrap_err();
        assert!(
            matches!(error, ForwardError::InvalidAddress { .. }),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn request_to_proto_keeps_end_to_end_headers_only() {
        let request = Request::builder()
            .method(Method::PUT)
            .uri("http://node-a:8080/v1/topics/t?x=1")
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CONNECTION, "keep-alive")
            .header(header::CONTENT_LENGTH, "2")
            .header(FORWARDED_HOPS_HEADER, "7")
            .body(Body::from("{}"))
            .unwrap();
        let forwarded = request_to_proto(request, 1, 16).await.unwrap();
        assert_eq!(forwarded.method, "PUT");
        assert_eq!(forwarded.path_and_query, "/v1/topics/t?x=1");
        assert_eq!(forwarded.hops, 1);
        assert_eq!(forwarded.body, b"{}");
        let names: Vec<&str> = forwarded.headers.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["content-type"]);
    }

    #[tokio::test]
    async fn request_to_proto_refuses_a_large_body() {
        let request = Request::builder()
            .method(Method::POST)
            .uri("/echo")
            .body(Body::from(vec![0u8; 17]))
            .unwrap();
        let error = request_to_proto(request, 0, 16).await.unwrap_err();
        assert!(
            matches!(error, ForwardError::BodyTooLarge { limit: 16 }),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn unusable_answer_is_bad_gateway() {
        let bad_status = ForwardResponse {
            status: 1000,
            headers: Vec::new(),
            body: Vec::new(),
        };
        assert_eq!(
            proto_to_response(bad_status).status(),
            StatusCode::BAD_GATEWAY
        );
        let bad_header = ForwardResponse {
            status: 200,
            headers: vec![Header {
                name: "x".to_owned(),
                value: b"line\nbreak".to_vec(),
            }],
            body: Vec::new(),
        };
        assert_eq!(
            proto_to_response(bad_header).status(),
            StatusCode::BAD_GATEWAY
        );
    }

    #[tokio::test]
    async fn proto_to_response_drops_hop_by_hop_headers() {
        let response = proto_to_response(ForwardResponse {
            status: 404,
            headers: vec![
                Header {
                    name: "transfer-encoding".to_owned(),
                    value: b"chunked".to_vec(),
                },
                Header {
                    name: "content-length".to_owned(),
                    value: b"999".to_vec(),
                },
                Header {
                    name: "content-type".to_owned(),
                    value: b"application/json".to_vec(),
                },
            ],
            body: b"{}".to_vec(),
        });
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let names: Vec<&str> = response.headers().keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["content-type"]);
    }
}
