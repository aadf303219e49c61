//! Errors of the client commands, written as sentences for a person at a
//! terminal: `topic "x" does not exist (404 not_found)`.

use std::fmt;

use crate::error::ErrorBody;

/// How many causes of a transport error are quoted.
const CHAIN_DEPTH_MAX: usize = 8;

/// How much of an answer that is not the API's error body an error quotes.
const QUOTED_BODY_CHARS_MAX: usize = 200;

/// An error answer of the broker: its status and, from the body
/// `{"error": {"code", "message"}}`, the stable code and the sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiFailure {
    /// The HTTP status.
    pub status: u16,
    /// The API's snake_case code (`not_found`), or one made from the status when
    /// the body was not the API's error body.
    pub code: String,
    /// What went wrong, for a person.
    pub message: String,
}

impl ApiFailure {
    /// Reads an error answer. A body that is not the API's error body (a proxy's
    /// page, an empty body) becomes a sentence naming the status, quoting the
    /// body's start.
    pub fn from_answer(status: u16, body: &[u8]) -> ApiFailure {
        if let Ok(parsed) = serde_json::from_slice::<ErrorBody>(body) {
            return ApiFailure {
                status,
                code: parsed.error.code,
                message: parsed.error.message,
            };
        }
        let reason = reqwest::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("error");
        let code = reason.to_ascii_lowercase().replace([' ', '-'], "_");
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        let message = if text.is_empty() {
            format!("the broker answered {status} {reason} without an error body")
        } else {
            let quoted: String = text.chars().take(QUOTED_BODY_CHARS_MAX).collect();
            format!("the broker answered {status} {reason}: {quoted:?}")
        };
        ApiFailure {
            status,
            code,
            message,
        }
    }

    /// Whether the broker refused the token or the password.
    pub fn is_unauthorized(&self) -> bool {
        self.status == 401
    }
}

impl fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({} {})", self.message, self.status, self.code)
    }
}

impl std::error::Error for ApiFailure {}

/// A request that got no answer, or one that is not what the API describes.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// Nothing listens at the URL (connection refused, no route, bad host).
    #[error("cannot reach the broker at {url}: is it running?")]
    Unreachable {
        /// The broker's base URL.
        url: String,
    },
    /// The broker took longer than the request's time limit.
    #[error("the broker at {url} did not answer within {secs} s")]
    Timeout {
        /// The broker's base URL.
        url: String,
        /// The limit.
        secs: u64,
    },
    /// The connection failed in another way (reset, closed early).
    #[error("the request to {url} failed: {reason}")]
    Failed {
        /// The broker's base URL.
        url: String,
        /// What reqwest said, with its causes.
        reason: String,
    },
    /// A 2xx answer whose body is not the JSON the API describes.
    #[error("the broker at {url} answered with something that is not the API's JSON: {reason}")]
    BadAnswer {
        /// The broker's base URL.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl TransportError {
    /// Classifies a reqwest error for a request to the broker at `url` whose time
    /// limit was `timeout_secs`.
    pub fn from_reqwest(url: &str, timeout_secs: u64, error: &reqwest::Error) -> TransportError {
        let url = url.to_owned();
        if error.is_timeout() {
            TransportError::Timeout {
                url,
                secs: timeout_secs,
            }
        } else if error.is_connect() {
            TransportError::Unreachable { url }
        } else {
            TransportError::Failed {
                url,
                reason: chain(error),
            }
        }
    }

    /// A connection to the broker at `url` that failed with `error` (reset,
    /// closed early, not HTTP).
    pub fn failed(url: &str, error: &(dyn std::error::Error + 'static)) -> TransportError {
        TransportError::Failed {
            url: url.to_owned(),
            reason: chain(error),
        }
    }

    /// Whether the same request may succeed when sent again (with the same
    /// idempotency key): it timed out or the connection broke, but the broker
    /// was reachable.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            TransportError::Timeout { .. } | TransportError::Failed { .. }
        )
    }
}

/// A command's failure as one sentence: the error and its causes, as `{:#}`
/// shows them, without a cause that an outer error already quotes (an I/O error
/// naming its file quotes the operating system's error, which is also its
/// cause).
pub fn sentence(error: &anyhow::Error) -> String {
    chain(error.as_ref())
}

/// An error with its causes, `outer: inner: innermost` (a cause already quoted
/// by its parent is not repeated).
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    // Chains are a few links long; the bound only guards against a cycle.
    for _ in 0..CHAIN_DEPTH_MAX {
        let Some(cause) = source else { break };
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_body_becomes_a_sentence_with_status_and_code() {
        let body = br#"{"error":{"code":"not_found","message":"topic \"x\" does not exist"}}"#;
        let failure = ApiFailure::from_answer(404, body);
        assert_eq!(
            format!("error: {failure}"),
            "error: topic \"x\" does not exist (404 not_found)"
        );
        assert!(!failure.is_unauthorized());
    }

    #[test]
    fn other_bodies_are_described_by_their_status() {
        let failure = ApiFailure::from_answer(502, b"<html>Bad Gateway</html>");
        assert_eq!(failure.code, "bad_gateway");
        assert_eq!(
            failure.to_string(),
            "the broker answered 502 Bad Gateway: \"<html>Bad Gateway</html>\" (502 bad_gateway)"
        );
        let empty = ApiFailure::from_answer(405, b"");
        assert_eq!(
            empty.to_string(),
            "the broker answered 405 Method Not Allowed without an error body \
             (405 method_not_allowed)"
        );
        let long = ApiFailure::from_answer(500, "x".repeat(10_000).as_bytes());
        assert!(long.message.len() < QUOTED_BODY_CHARS_MAX + 100);
    }

    #[test]
    fn a_cause_quoted_by_its_error_is_not_repeated() {
        let missing = std::io::Error::from(std::io::ErrorKind::NotFound);
        let shown = missing.to_string();
        let error = anyhow::Error::from(crate::error::BrokerError::io("/x.toml", missing));
        assert_eq!(sentence(&error), format!("/x.toml: {shown}"));
        let error = error.context("cannot start");
        assert_eq!(sentence(&error), format!("cannot start: /x.toml: {shown}"));
    }

    #[test]
    fn unauthorized_is_recognised() {
        let body = br#"{"error":{"code":"unauthorized","message":"the token has expired"}}"#;
        assert!(ApiFailure::from_answer(401, body).is_unauthorized());
    }
}
