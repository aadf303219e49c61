//! Operations: `/healthz`, `/readyz`, `/metrics`, `/openapi.json`, and the
//! `POST /v1/bench/noop` baseline of `broker bench`.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::body::json;
use super::extract::{Caller, read_body};
use crate::error::{ApiError, ErrorBody};

/// The answer of the health and readiness checks.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Status {
    /// `"ok"` (`/healthz`), `"ready"` or `"unavailable"` (`/readyz`).
    pub status: String,
}

/// Whether the process is up (no authentication).
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "The process is up", body = Status))
)]
pub async fn healthz() -> Response {
    json(
        StatusCode::OK,
        &Status {
            status: "ok".into(),
        },
    )
}

/// Whether the node is ready to serve: its storage is open (no authentication).
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Ready", body = Status),
        (status = 503, description = "`unavailable`: not ready: its storage is gone or, in a cluster, it has no ZooKeeper session or is still joining", body = ErrorBody),
    )
)]
pub async fn readyz(State(app): State<AppState>) -> Response {
    // The broker is built only once its storage opened; its data directory
    // disappearing (an unmounted disk) is what makes it unready.
    if let Some(node) = app.cluster.node() {
        if !node.is_connected() {
            return ApiError::new(
                crate::error::ErrorCode::Unavailable,
                "no ZooKeeper session: this node cannot take part in the cluster now",
            )
            .into_response();
        }
        if !node.has_joined() {
            return ApiError::new(
                crate::error::ErrorCode::Unavailable,
                "this node is still joining the cluster",
            )
            .into_response();
        }
        if let Some(problem) = node.lost_cluster() {
            return ApiError::new(crate::error::ErrorCode::Unavailable, problem).into_response();
        }
    }
    if app.broker.data_dir().is_dir() {
        json(
            StatusCode::OK,
            &Status {
                status: "ready".into(),
            },
        )
    } else {
        ApiError::new(
            crate::error::ErrorCode::Unavailable,
            "the data directory is not available",
        )
        .into_response()
    }
}

/// Prometheus metrics in the OpenMetrics text format (no authentication).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "The metrics", body = String,
        content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8"))
)]
pub async fn metrics(State(app): State<AppState>) -> Response {
    super::metrics::scrape(&app.metrics)
}

/// This document (no authentication).
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document", body = Object))
)]
pub async fn openapi() -> Response {
    let doc = super::openapi::document();
    json(StatusCode::OK, &doc)
}

/// Internal: takes a body of any content up to the size limit without parsing it and
/// answers `{}`. `broker bench` compares produce against it, to tell the broker's
/// cost from HTTP's.
#[utoipa::path(
    post,
    path = "/v1/bench/noop",
    tag = "internal",
    security(("bearer" = [])),
    request_body(content = String, description = "Any bytes", content_type = "application/octet-stream"),
    responses(
        (status = 200, description = "Read and dropped", body = Object),
        (status = 401, description = "No valid token", body = ErrorBody),
    )
)]
pub async fn bench_noop(_caller: Caller, request: Request) -> Result<Response, ApiError> {
    read_body(request, &()).await?;
    Ok(json(StatusCode::OK, &serde_json::json!({})))
}
