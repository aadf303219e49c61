//! The REST client behind the client commands: which broker (`--url`,
//! `BROKER_URL`, the last login, or the default), which token (`BROKER_TOKEN`, or
//! the saved login for that URL), and requests whose failures become sentences
//! (see [`super::error`]).

use std::time::Duration;

use anyhow::Context as _;
use reqwest::Method;
use reqwest::header::{CONTENT_TYPE, HeaderMap};
use serde_json::Value;

use super::credentials::{self, Credentials};
use super::error::{ApiFailure, TransportError};

/// The broker a client command talks to when nothing says otherwise.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long an ordinary request may take. Long polls add their wait to it.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the broker is: shared by every client command.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConnectArgs {
    /// The broker's URL [default: the last login's, else http://127.0.0.1:8080].
    #[arg(long, env = "BROKER_URL", global = true)]
    pub url: Option<String>,
}

/// The URL without trailing slashes, checked to be `http://host[:port]`. A
/// `host:port` without a scheme is refused with the URL it likely means.
pub fn normalize_url(url: &str) -> anyhow::Result<String> {
    let trimmed = url.trim().trim_end_matches('/');
    if trimmed.is_empty() {
        anyhow::bail!("the broker's URL is empty: give one like {DEFAULT_URL}");
    }
    if !trimmed.contains("://") {
        anyhow::bail!("{url:?} has no scheme: did you mean http://{trimmed}?");
    }
    let parsed = reqwest::Url::parse(trimmed)
        .with_context(|| format!("{url:?} is not a URL like {DEFAULT_URL}"))?;
    match parsed.scheme() {
        "http" => {}
        "https" => anyhow::bail!(
            "{url:?}: this build of broker speaks plain HTTP; put TLS in front with a proxy"
        ),
        other => anyhow::bail!("{url:?}: the scheme must be http, not {other}"),
    }
    if parsed.host().is_none() {
        anyhow::bail!("{url:?} names no host");
    }
    Ok(trimmed.to_owned())
}

/// Where a token comes from, which decides the advice when it is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// `BROKER_TOKEN`.
    Environment,
    /// The saved login for the URL.
    Saved {
        /// When the saved token expires, in Unix seconds.
        expires_at_unix_secs: u64,
    },
}

/// The broker URL and token a command will use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The normalized base URL.
    pub url: String,
    /// The bearer token, and where it came from.
    pub token: Option<(String, TokenSource)>,
}

/// Picks the URL (`--url`/`BROKER_URL`, else the last login's, else
/// [`DEFAULT_URL`]) and the token (`BROKER_TOKEN`, else the saved login for that
/// very URL: a token is never sent to another broker than the one that issued
/// it).
pub fn resolve(
    url_arg: Option<&str>,
    env_token: Option<String>,
    saved: &Credentials,
) -> anyhow::Result<Target> {
    let url = match url_arg {
        Some(url) => normalize_url(url)?,
        None => match &saved.current_url {
            Some(url) => url.clone(),
            None => DEFAULT_URL.to_owned(),
        },
    };
    let token = match env_token.filter(|t| !t.is_empty()) {
        Some(token) => Some((token, TokenSource::Environment)),
        None => saved.logins.get(&url).map(|login| {
            let source = TokenSource::Saved {
                expires_at_unix_secs: login.expires_at_unix_secs,
            };
            (login.token.clone(), source)
        }),
    };
    Ok(Target { url, token })
}

/// Seconds since the Unix epoch.
pub fn now_unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A connection to one broker, with or without a token.
#[derive(Debug, Clone)]
pub struct Api {
    /// One connection pool; HTTP/1.1.
    http: reqwest::Client,
    /// The normalized base URL.
    url: String,
    /// Sent as `Authorization: Bearer` on every request when present.
    token: Option<String>,
}

impl Api {
    /// A client for `url` (normalized) sending `token`.
    pub fn new(url: &str, token: Option<String>) -> anyhow::Result<Api> {
        let http = reqwest::Client::builder()
            .http1_only()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("broker-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("cannot set up the HTTP client")?;
        Ok(Api {
            http,
            url: url.to_owned(),
            token,
        })
    }

    /// The client for a client command: resolves URL and token from `args`, the
    /// environment and the saved logins. A command that needs a token
    /// (`needs_token`) fails here, before any request, when there is none or
    /// the saved one has expired.
    pub fn connect(args: &ConnectArgs, needs_token: bool) -> anyhow::Result<Api> {
        let saved = Credentials::load(&credentials::default_path()?)?;
        let env_token = std::env::var("BROKER_TOKEN").ok();
        let target = resolve(args.url.as_deref(), env_token, &saved)?;
        if needs_token {
            check_token(&target, now_unix_secs())?;
        }
        Api::new(&target.url, target.token.map(|(token, _)| token))
    }

    /// The broker's base URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sends a request with an optional JSON body (already encoded) and extra
    /// headers, within `timeout`; the answer's JSON, `Null` for an empty one
    /// (204). A non-2xx answer is an [`ApiFailure`]; no answer a
    /// [`TransportError`].
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        headers: HeaderMap,
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.url))
            .headers(headers)
            .timeout(timeout);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.header(CONTENT_TYPE, "application/json").body(body);
        }
        let failed =
            |e: reqwest::Error| TransportError::from_reqwest(&self.url, timeout.as_secs(), &e);
        let response = request.send().await.map_err(failed)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(failed)?;
        if !status.is_success() {
            return Err(ApiFailure::from_answer(status.as_u16(), &bytes).into());
        }
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| {
            TransportError::BadAnswer {
                url: self.url.clone(),
                reason: e.to_string(),
            }
            .into()
        })
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.request(Method::GET, path, None, HeaderMap::new(), REQUEST_TIMEOUT)
            .await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let bytes = serde_json::to_vec(body)?;
        self.request(
            Method::POST,
            path,
            Some(bytes),
            HeaderMap::new(),
            REQUEST_TIMEOUT,
        )
        .await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> anyhow::Result<()> {
        self.request(
            Method::DELETE,
            path,
            None,
            HeaderMap::new(),
            REQUEST_TIMEOUT,
        )
        .await
        .map(drop)
    }
}

/// Refuses, with advice, a target without a token or with an expired saved one.
pub fn check_token(target: &Target, now_unix_secs: u64) -> anyhow::Result<()> {
    let url = &target.url;
    match &target.token {
        None => anyhow::bail!(
            "not logged in to {url}: run `broker login --url {url}` (or set BROKER_TOKEN)"
        ),
        Some((
            _,
            TokenSource::Saved {
                expires_at_unix_secs,
            },
        )) if *expires_at_unix_secs <= now_unix_secs => {
            anyhow::bail!("the login to {url} has expired: run `broker login --url {url}` again")
        }
        Some(_) => Ok(()),
    }
}

/// Checks a topic, queue or subscription name as the broker will, so that a bad
/// name is told before any request and every name is safe in a URL path.
pub fn name<'a>(what: &str, name: &'a str) -> anyhow::Result<&'a str> {
    crate::names::validate(what, name).map_err(|e| anyhow::anyhow!(e.message))?;
    Ok(name)
}

/// Runs a client command's future on a current-thread runtime made for it: the
/// commands are I/O bound and sequential, and need no threads.
pub fn run<T>(future: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(future)
}

#[cfg(test)]
mod tests {
    use super::super::credentials::Login;
    use super::*;

    fn saved() -> Credentials {
        let mut credentials = Credentials::default();
        credentials.insert(
            "http://a:1",
            Login {
                username: "alice".to_owned(),
                token: "saved-token".to_owned(),
                expires_at_unix_secs: 100,
            },
        );
        credentials
    }

    #[test]
    fn urls_are_normalized_and_checked() -> anyhow::Result<()> {
        assert_eq!(normalize_url("http://h:8080/")?, "http://h:8080");
        assert_eq!(normalize_url(" http://h ")?, "http://h");
        assert!(
            normalize_url("https://h")
                .unwrap_err()
                .to_string()
                .contains("plain HTTP")
        );
        assert_eq!(
            normalize_url("localhost:19101").unwrap_err().to_string(),
            "\"localhost:19101\" has no scheme: did you mean http://localhost:19101?"
        );
        assert!(normalize_url("127.0.0.1:8080").is_err());
        assert!(normalize_url(" ").is_err());
        assert!(normalize_url("ftp://h").is_err());
        Ok(())
    }

    #[test]
    fn the_url_comes_from_the_flag_then_the_last_login_then_the_default() -> anyhow::Result<()> {
        assert_eq!(
            resolve(Some("http://b:2/"), None, &saved())?.url,
            "http://b:2"
        );
        assert_eq!(resolve(None, None, &saved())?.url, "http://a:1");
        assert_eq!(
            resolve(None, None, &Credentials::default())?.url,
            DEFAULT_URL
        );
        Ok(())
    }

    #[test]
    fn saved_tokens_go_only_to_their_url_and_the_environment_wins() -> anyhow::Result<()> {
        let own = resolve(Some("http://a:1"), None, &saved())?;
        assert_eq!(
            own.token,
            Some((
                "saved-token".to_owned(),
                TokenSource::Saved {
                    expires_at_unix_secs: 100
                }
            ))
        );
        assert_eq!(resolve(Some("http://b:2"), None, &saved())?.token, None);
        let env = resolve(Some("http://b:2"), Some("env-token".to_owned()), &saved())?;
        assert_eq!(
            env.token,
            Some(("env-token".to_owned(), TokenSource::Environment))
        );
        Ok(())
    }

    #[test]
    fn missing_and_expired_tokens_are_refused_with_advice() -> anyhow::Result<()> {
        let target = resolve(Some("http://a:1"), None, &saved())?;
        assert!(check_token(&target, 99).is_ok());
        let expired = check_token(&target, 100).unwrap_err().to_string();
        assert!(
            expired.contains("expired") && expired.contains("broker login"),
            "{expired}"
        );
        let none = resolve(Some("http://b:2"), None, &saved())?;
        let missing = check_token(&none, 0).unwrap_err().to_string();
        assert_eq!(
            missing,
            "not logged in to http://b:2: run `broker login --url http://b:2` (or set BROKER_TOKEN)"
        );
        Ok(())
    }

    #[test]
    fn a_closed_port_is_reported_as_unreachable() -> anyhow::Result<()> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let url = format!("http://127.0.0.1:{port}");
        let api = Api::new(&url, None)?;
        let error = run(api.get("/v1/topics")).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("cannot reach the broker at {url}: is it running?")
        );
        Ok(())
    }

    #[test]
    fn bad_names_are_refused_before_any_request() {
        assert!(name("topic", "orders.eu").is_ok());
        let error = name("topic", "a/b").unwrap_err().to_string();
        assert!(error.contains("'/'"), "{error}");
        assert!(name("topic", "..").is_err());
    }
}
