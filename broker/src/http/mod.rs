//! The REST API (axum): routes, extractors, error bodies, OpenAPI and metrics.

use std::sync::Arc;

use axum::Router;
use axum::routing::get;

use crate::registry::Broker;

pub mod extract;

/// The router for every endpoint of the REST API.
pub fn router(broker: Arc<Broker>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .with_state(broker)
}
