//! `POST /v1/auth/token`: a user name and password for a bearer token.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::body::json;
use super::extract::Json;
use super::{AppState, blocking};
use crate::error::{ApiError, ErrorBody};

/// `POST /v1/auth/token`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// The user.
    pub username: String,
    /// The user's password.
    pub password: String,
}

/// A bearer token.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenResponse {
    /// The JWT, to send as `Authorization: Bearer <access_token>`.
    pub access_token: String,
    /// Always `"Bearer"`.
    pub token_type: String,
    /// Seconds until the token expires.
    pub expires_in: u64,
}

/// Trades a user name and password for a bearer token (HS256 JWT).
#[utoipa::path(
    post,
    path = "/v1/auth/token",
    tag = "auth",
    request_body = TokenRequest,
    responses(
        (status = 200, description = "A token", body = TokenResponse),
        (status = 400, description = "Malformed request", body = ErrorBody),
        (status = 401, description = "Wrong user name or password", body = ErrorBody),
    )
)]
pub async fn issue_token(
    State(app): State<AppState>,
    Json(req): Json<TokenRequest>,
) -> Result<Response, ApiError> {
    let broker = Arc::clone(&app.broker);
    // Argon2 costs tens of milliseconds of CPU: not on an async worker.
    let token = blocking(move || broker.auth.issue_token(&req.username, &req.password)).await?;
    let answer = TokenResponse {
        access_token: token.access_token,
        token_type: token.token_type.to_owned(),
        expires_in: token.expires_in,
    };
    let mut response = json(StatusCode::OK, &answer);
    // RFC 6749 5.1: a response with a token is not to be cached.
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}
