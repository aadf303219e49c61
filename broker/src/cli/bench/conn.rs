//! One HTTP/1.1 connection to the broker, driven by hyper's connection API. A
//! bench worker sends one request at a time on it, so it needs no pool, and
//! the per-request work of a general-purpose client (parsing the URL, looking
//! the host up in a pool, its own request types) stays out of the latency the
//! bench measures: what is timed is the broker and the network, as far as a
//! client can make it so.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::cli::error::{ApiFailure, TransportError};

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A request body: the prebuilt produce bodies, or none for a pull.
type Body = http_body_util::Either<Full<Bytes>, Empty<Bytes>>;

/// Where the broker is: the address to connect to, the `Host` header and the
/// path prefix of its URL (empty unless the broker sits under a path).
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The base URL, for errors.
    base_url: String,
    /// `host:port` to connect to.
    address: String,
    /// The `Host` header.
    host: HeaderValue,
    /// The URL's path, without its trailing slash.
    prefix: String,
}

impl Endpoint {
    /// The broker at `base_url` (a normalized `http://` URL).
    pub fn new(base_url: &str) -> anyhow::Result<Endpoint> {
        let url = reqwest::Url::parse(base_url)?;
        let host = url
            .host_str()
            .ok_or_else(|| anyhow::anyhow!("{base_url:?} names no host"))?;
        let port = url
            .port_or_known_default()
            .ok_or_else(|| anyhow::anyhow!("{base_url:?} names no port"))?;
        let authority = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        Ok(Endpoint {
            base_url: base_url.to_owned(),
            address: format!("{host}:{port}"),
            host: HeaderValue::from_str(&authority)?,
            prefix: url.path().trim_end_matches('/').to_owned(),
        })
    }

    /// The request target for an API path (`/v1/...`, with its query).
    pub fn target(&self, path_and_query: &str) -> anyhow::Result<Uri> {
        Ok(format!("{}{path_and_query}", self.prefix).parse()?)
    }
}

/// A connection, opened on first use and again after it breaks.
pub struct Connection {
    endpoint: Endpoint,
    timeout: Duration,
    sender: Option<SendRequest<Body>>,
}

impl Connection {
    /// A connection to `endpoint` whose requests may take `timeout` each.
    pub fn new(endpoint: Endpoint, timeout: Duration) -> Connection {
        Connection {
            endpoint,
            timeout,
            sender: None,
        }
    }

    /// Posts a JSON body; the whole answer of a success, an [`ApiFailure`] for
    /// another status, a [`TransportError`] when no answer came.
    pub async fn post(
        &mut self,
        target: &Uri,
        authorization: &HeaderValue,
        body: Bytes,
    ) -> anyhow::Result<Bytes> {
        let request = Request::builder()
            .method(Method::POST)
            .uri(target.clone())
            .header(HOST, self.endpoint.host.clone())
            .header(AUTHORIZATION, authorization.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(Body::Left(Full::new(body)))?;
        self.send(request).await
    }

    /// Sends a GET; answers as [`Connection::post`].
    pub async fn get(&mut self, target: Uri, authorization: &HeaderValue) -> anyhow::Result<Bytes> {
        let request = Request::builder()
            .method(Method::GET)
            .uri(target)
            .header(HOST, self.endpoint.host.clone())
            .header(AUTHORIZATION, authorization.clone())
            .body(Body::Right(Empty::new()))?;
        self.send(request).await
    }

    async fn send(&mut self, request: Request<Body>) -> anyhow::Result<Bytes> {
        match tokio::time::timeout(self.timeout, self.exchange(request)).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(error)) => {
                // The connection may be half-way through an answer: start afresh.
                self.sender = None;
                Err(error)
            }
            Err(_) => {
                self.sender = None;
                Err(TransportError::Timeout {
                    url: self.endpoint.base_url.clone(),
                    secs: self.timeout.as_secs(),
                }
                .into())
            }
        }
    }

    async fn exchange(&mut self, request: Request<Body>) -> anyhow::Result<Bytes> {
        let base_url = &self.endpoint.base_url;
        let failed = |error: hyper::Error| TransportError::failed(base_url, &error);
        let sender = match &mut self.sender {
            Some(sender) if !sender.is_closed() => sender,
            slot => slot.insert(connect(&self.endpoint).await?),
        };
        if sender.ready().await.is_err() {
            // Closed while idle (the request is not sent yet): once more on a new one.
            *sender = connect(&self.endpoint).await?;
            sender.ready().await.map_err(failed)?;
        }
        let response = sender.send_request(request).await.map_err(failed)?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(failed)?
            .to_bytes();
        if !status.is_success() {
            return Err(ApiFailure::from_answer(status.as_u16(), &body).into());
        }
        Ok(body)
    }
}

/// Opens a connection to `endpoint` and starts driving it.
async fn connect(endpoint: &Endpoint) -> Result<SendRequest<Body>, TransportError> {
    let unreachable = || TransportError::Unreachable {
        url: endpoint.base_url.clone(),
    };
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&endpoint.address))
        .await
        .map_err(|_| unreachable())?
        .map_err(|_| unreachable())?;
    stream
        .set_nodelay(true)
        .map_err(|e| TransportError::failed(&endpoint.base_url, &e))?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| TransportError::failed(&endpoint.base_url, &e))?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "a bench connection ended");
        }
    });
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// A server that answers each GET on a connection of its own with `answer`,
    /// then closes it; sends back the request targets it saw.
    async fn closing_server(
        answer: String,
    ) -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (seen, targets) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                        break;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let target = head.split(' ').nth(1).unwrap_or_default().to_owned();
                let _ = seen.send(target);
                let _ = stream.write_all(answer.as_bytes()).await;
                // The connection ends here: the client must open another.
            }
        });
        (url, targets)
    }

    const OK: &str = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";

    #[tokio::test]
    async fn a_connection_closed_by_the_broker_is_opened_again() {
        let (url, mut targets) = closing_server(OK.to_owned()).await;
        let endpoint = Endpoint::new(&url).unwrap();
        let mut connection = Connection::new(endpoint.clone(), Duration::from_secs(5));
        let token = HeaderValue::from_static("Bearer t");
        for _ in 0..3 {
            let answer = connection
                .get(endpoint.target("/v1/x?max=1").unwrap(), &token)
                .await
                .unwrap();
            assert_eq!(&answer[..], b"{}");
            assert_eq!(targets.recv().await.unwrap(), "/v1/x?max=1");
        }
    }

    #[tokio::test]
    async fn an_error_status_is_an_api_failure_with_its_code() {
        let body = r#"{"error":{"code":"forbidden","message":"no"}}"#;
        let answer = format!(
            "HTTP/1.1 403 Forbidden\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let (url, _targets) = closing_server(answer).await;
        let endpoint = Endpoint::new(&url).unwrap();
        let mut connection = Connection::new(endpoint.clone(), Duration::from_secs(5));
        let error = connection
            .post(
                &endpoint.target("/v1/topics/t/messages").unwrap(),
                &HeaderValue::from_static("Bearer t"),
                Bytes::from_static(b"{}"),
            )
            .await
            .unwrap_err();
        let failure = error.downcast_ref::<ApiFailure>().unwrap();
        assert_eq!(failure.status, 403);
        assert!(error.to_string().contains("forbidden"), "{error}");
    }

    #[tokio::test]
    async fn no_answer_within_the_limit_is_a_timeout_and_nothing_listening_is_unreachable() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        // Accepts and never answers.
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        let error = failed_get(&url, Duration::from_millis(200)).await;
        assert!(
            matches!(
                error.downcast_ref::<TransportError>(),
                Some(TransportError::Timeout { secs: 0, .. })
            ),
            "{error}"
        );

        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", closed.local_addr().unwrap());
        drop(closed);
        let error = failed_get(&url, Duration::from_secs(5)).await;
        assert!(
            matches!(
                error.downcast_ref::<TransportError>(),
                Some(TransportError::Unreachable { .. })
            ),
            "{error}"
        );
    }

    /// The error of a GET to the broker at `url` that must fail.
    async fn failed_get(url: &str, timeout: Duration) -> anyhow::Error {
        let endpoint = Endpoint::new(url).unwrap();
        let mut connection = Connection::new(endpoint.clone(), timeout);
        connection
            .get(
                endpoint.target("/v1/x").unwrap(),
                &HeaderValue::from_static("Bearer t"),
            )
            .await
            .unwrap_err()
    }

    #[test]
    fn a_url_with_a_path_prefixes_every_target() {
        let endpoint = Endpoint::new("http://broker.example:9000/mom").unwrap();
        assert_eq!(endpoint.address, "broker.example:9000");
        assert_eq!(endpoint.host, "broker.example:9000");
        assert_eq!(
            endpoint.target("/v1/bench/noop").unwrap().to_string(),
            "/mom/v1/bench/noop"
        );
        let plain = Endpoint::new("http://127.0.0.1").unwrap();
        assert_eq!(plain.address, "127.0.0.1:80");
        assert_eq!(plain.host, "127.0.0.1");
        assert_eq!(plain.target("/v1/x").unwrap().to_string(), "/v1/x");
    }
}
