//! Errors: API errors (the client's request cannot be served; each maps to one HTTP
//! status and one stable code) kept apart from fatal errors (storage is broken).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// An error a client sees: a status, a stable snake_case code and a sentence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    /// The kind of error.
    pub code: ErrorCode,
    /// What went wrong, for a person.
    pub message: String,
}

/// The stable error codes of the REST API, in snake_case in error bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// 400: the request is malformed.
    BadRequest,
    /// 401: no, bad, expired or forged token; wrong password.
    Unauthorized,
    /// 403: the ACL does not allow it.
    Forbidden,
    /// 404: no such topic, queue, subscription or route.
    NotFound,
    /// 405: the path exists but not with this method.
    MethodNotAllowed,
    /// 408: the request's body did not arrive in time.
    RequestTimeout,
    /// 409: a topic, queue or subscription of that name exists.
    AlreadyExists,
    /// 413: the body is larger than the limit.
    PayloadTooLarge,
    /// 422: an `Idempotency-Key` used again, within the window, for a request with
    /// other messages.
    IdempotencyKeyReused,
    /// 500: the broker failed (storage); the request may or may not have applied.
    Internal,
    /// 503: not enough in-sync replicas, or storage unavailable.
    NotEnoughReplicas,
    /// 503: the node is not ready (starting, or shutting down).
    Unavailable,
    /// 503: this node does not lead the partition and could not reach the node that
    /// does (a leader election is under way); retry.
    NotLeader,
    /// 504: the operation did not finish in time.
    Timeout,
}

impl ErrorCode {
    /// Every code, by status.
    pub const ALL: [ErrorCode; 14] = [
        ErrorCode::BadRequest,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::RequestTimeout,
        ErrorCode::AlreadyExists,
        ErrorCode::PayloadTooLarge,
        ErrorCode::IdempotencyKeyReused,
        ErrorCode::Internal,
        ErrorCode::NotEnoughReplicas,
        ErrorCode::Unavailable,
        ErrorCode::NotLeader,
        ErrorCode::Timeout,
    ];

    /// The code as it appears in error bodies.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::RequestTimeout => "request_timeout",
            ErrorCode::AlreadyExists => "already_exists",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::IdempotencyKeyReused => "idempotency_key_reused",
            ErrorCode::Internal => "internal",
            ErrorCode::NotEnoughReplicas => "not_enough_replicas",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::NotLeader => "not_leader",
            ErrorCode::Timeout => "timeout",
        }
    }

    /// The HTTP status of the code.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ErrorCode::AlreadyExists => StatusCode::CONFLICT,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::NotEnoughReplicas | ErrorCode::Unavailable | ErrorCode::NotLeader => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ErrorCode::Timeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ApiError {
    /// An error with a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
        }
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        Self::new(ErrorCode::BadRequest, message)
    }

    /// 401.
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        Self::new(ErrorCode::Unauthorized, message)
    }

    /// 403.
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        Self::new(ErrorCode::Forbidden, message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        Self::new(ErrorCode::NotFound, message)
    }

    /// 409.
    pub fn already_exists(message: impl Into<String>) -> ApiError {
        Self::new(ErrorCode::AlreadyExists, message)
    }

    /// 500, for a storage failure; the details go to the log, not to the client.
    pub fn internal(error: impl std::fmt::Display) -> ApiError {
        tracing::error!(%error, "request failed on a broker error");
        Self::new(
            ErrorCode::Internal,
            "the broker failed to serve the request; see its log",
        )
    }
}

/// The JSON error body: `{"error": {"code", "message"}}`.
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// The inside of an error body.
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// A stable snake_case code.
    #[schema(value_type = ErrorCode)]
    pub code: String,
    /// What went wrong, for a person.
    pub message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.as_str().to_owned(),
                message: self.message,
            },
        };
        (self.code.status(), axum::Json(body)).into_response()
    }
}

impl From<log_engine::Error> for ApiError {
    fn from(error: log_engine::Error) -> ApiError {
        match error {
            log_engine::Error::OffsetOutOfRange { offset, start, end } => ApiError::bad_request(
                format!("offset {offset} is out of range: the partition holds [{start}, {end})"),
            ),
            log_engine::Error::BatchTooLarge { size, limit } => ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!("the messages encode to {size} bytes, more than the limit of {limit}"),
            ),
            // Only a delete closes a log while requests run (a shutdown closes them
            // after the last request).
            log_engine::Error::Closed { .. } => {
                ApiError::not_found("the topic or queue was deleted while the request ran")
            }
            log_engine::Error::Truncated { .. } => ApiError::new(
                ErrorCode::NotLeader,
                "this node stopped leading the partition, and its copy of the messages was \
                 cut before they were synced; retry with the same Idempotency-Key",
            ),
            ref damaged @ log_engine::Error::CorruptBatch { offset, .. } => {
                tracing::error!(error = %damaged, "a read found a damaged batch");
                ApiError::new(
                    ErrorCode::Internal,
                    format!(
                        "the stored messages from offset {offset} are damaged (their checksum \
                         fails): nothing of them is served; the broker's log names the file \
                         and position"
                    ),
                )
            }
            other => ApiError::internal(other),
        }
    }
}

/// A fatal error of the broker process: it cannot start or go on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// The storage engine failed.
    #[error(transparent)]
    Storage(#[from] log_engine::Error),
    /// A file of the broker's own (metadata, users, secret) could not be read or
    /// written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A metadata file is not what the broker wrote.
    #[error("{path}: {reason}")]
    BadMetadata {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A path that must be a directory (the data directory) is something else,
    /// such as a regular file.
    #[error("{path} is not a directory")]
    NotADirectory {
        /// The path.
        path: std::path::PathBuf,
    },
}

impl BrokerError {
    /// An I/O error on a path.
    pub fn io(path: impl Into<std::path::PathBuf>, source: std::io::Error) -> BrokerError {
        BrokerError::Io {
            path: path.into(),
            source,
        }
    }
}

impl From<BrokerError> for ApiError {
    fn from(error: BrokerError) -> ApiError {
        match error {
            BrokerError::Storage(e) => e.into(),
            other => ApiError::internal(other),
        }
    }
}
