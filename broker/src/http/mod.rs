//! The REST API (axum): routes, extractors, error bodies, OpenAPI and metrics.
//!
//! - [`extract`]: the authenticated [`extract::Caller`], and JSON, query, path and
//!   header extractors whose rejections are the API's error bodies.
//! - `body`: JSON messages in and out, and the JSON answer helper; `pull_json`: a
//!   pull's answer written straight from the records read.
//! - `auth_routes`, `topics`, `subscriptions`, `queues`, `cluster`, `ops`: handlers,
//!   one file per resource, each with its `#[utoipa::path]`.
//! - `openapi`: the document at `/openapi.json`; `metrics`: `/metrics`.
//!
//! Every route is registered from its handler's `#[utoipa::path]` (method and path
//! come from there), so what is served and what is documented are the same.
//!
//! A request is checked in this order: route (404, 405), token (401), path, query
//! and body (400, 413), names (400), rights (403), existence (404); only then does
//! anything change. Blocking work (creating and deleting files, commits, argon2) runs
//! on tokio's blocking pool; no lock is held across an `.await`.

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::handler::Handler;
use axum::http::{Method, Uri};
use axum::routing::{MethodFilter, MethodRouter};
use utoipa::openapi::path::HttpMethod;

use crate::error::{ApiError, ErrorCode};
use crate::registry::Broker;

mod auth_routes;
mod body;
mod cluster;
pub mod extract;
mod fast_body;
mod metrics;
mod openapi;
mod ops;
mod pull_json;
mod queues;
pub mod route;
mod subscriptions;
mod topics;

#[cfg(test)]
mod tests;

pub use cluster::ClusterView;
pub use extract::BODY_READ_TIMEOUT;
pub use metrics::Metrics;
pub use subscriptions::WAIT_MS_MAX;

/// What every handler gets.
#[derive(Clone, Debug)]
pub struct AppState {
    /// Topics, queues, users.
    pub broker: Arc<Broker>,
    /// Counters and histograms.
    pub metrics: Arc<Metrics>,
    /// The nodes and where partitions live.
    pub cluster: Arc<ClusterView>,
}

/// The router for every endpoint of the REST API, for a node standing alone that
/// serves REST at `broker.config.listen`.
pub fn router(broker: Arc<Broker>) -> Router {
    let rest_addr = broker.config.listen;
    router_with(broker, ClusterView::standalone(rest_addr))
}

/// The router for every endpoint of the REST API, with the cluster as `cluster` sees
/// it.
pub fn router_with(broker: Arc<Broker>, cluster: ClusterView) -> Router {
    app(broker, cluster).0
}

/// The router, and the (method, path) of every operation it serves.
fn app(broker: Arc<Broker>, cluster: ClusterView) -> (Router, Vec<(Method, String)>) {
    let max_body_bytes = broker.config.max_body_bytes;
    let state = AppState {
        metrics: Arc::new(Metrics::new(Arc::clone(&broker))),
        broker,
        cluster: Arc::new(cluster),
    };
    let routes = Routes::default()
        .add::<auth_routes::__path_issue_token, _, _>(auth_routes::issue_token)
        .add::<topics::__path_create_topic, _, _>(topics::create_topic)
        .add::<topics::__path_list_topics, _, _>(topics::list_topics)
        .add::<topics::__path_get_topic, _, _>(topics::get_topic)
        .add::<topics::__path_delete_topic, _, _>(topics::delete_topic)
        .add::<topics::__path_produce, _, _>(topics::produce)
        .add::<subscriptions::__path_create_subscription, _, _>(subscriptions::create_subscription)
        .add::<subscriptions::__path_list_subscriptions, _, _>(subscriptions::list_subscriptions)
        .add::<subscriptions::__path_get_subscription, _, _>(subscriptions::get_subscription)
        .add::<subscriptions::__path_delete_subscription, _, _>(subscriptions::delete_subscription)
        .add::<subscriptions::__path_pull, _, _>(subscriptions::pull)
        .add::<subscriptions::__path_commit, _, _>(subscriptions::commit)
        .add::<subscriptions::__path_offsets, _, _>(subscriptions::offsets)
        .add::<subscriptions::__path_seek, _, _>(subscriptions::seek)
        .add::<queues::__path_create_queue, _, _>(queues::create_queue)
        .add::<queues::__path_list_queues, _, _>(queues::list_queues)
        .add::<queues::__path_get_queue, _, _>(queues::get_queue)
        .add::<queues::__path_delete_queue, _, _>(queues::delete_queue)
        .add::<queues::__path_send, _, _>(queues::send)
        .add::<queues::__path_receive, _, _>(queues::receive)
        .add::<queues::__path_ack, _, _>(queues::ack)
        .add::<queues::__path_nack, _, _>(queues::nack)
        .add::<queues::__path_redrive, _, _>(queues::redrive)
        .add::<cluster::__path_describe_cluster, _, _>(cluster::describe_cluster)
        .add::<cluster::__path_topic_partitions, _, _>(cluster::topic_partitions)
        .add::<ops::__path_healthz, _, _>(ops::healthz)
        .add::<ops::__path_readyz, _, _>(ops::readyz)
        .add::<ops::__path_metrics, _, _>(ops::metrics)
        .add::<ops::__path_openapi, _, _>(ops::openapi)
        .add::<ops::__path_bench_noop, _, _>(ops::bench_noop);
    let mut router = routes
        .router
        .method_not_allowed_fallback(method_not_allowed);
    if state.cluster.node().is_some() {
        // Standalone, this node leads every log: no layer for requests to pass
        // through (each layer costs every request a clone of the service below).
        router = router.route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            route::to_leader,
        ));
    }
    let router = router
        .route_layer(metrics::TrackLayer(Arc::clone(&state.metrics)))
        // The fallback is timed and counted too, under the route `unmatched`.
        .fallback(not_found.layer(metrics::TrackLayer(Arc::clone(&state.metrics))))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state);
    (router, routes.operations)
}

/// Routes under construction, with the operations they serve.
struct Routes {
    router: Router<AppState>,
    operations: Vec<(Method, String)>,
}

impl Default for Routes {
    fn default() -> Self {
        Routes {
            router: Router::new(),
            operations: Vec::new(),
        }
    }
}

impl Routes {
    /// Serves `handler` at the method(s) and path of its `#[utoipa::path]` (`P`).
    fn add<P, H, T>(mut self, handler: H) -> Self
    where
        P: utoipa::Path,
        H: Handler<T, AppState>,
        T: 'static,
    {
        let path = P::path();
        let mut methods = MethodRouter::new();
        for method in P::methods() {
            let (filter, method) = method_of(&method);
            methods = methods.on(filter, handler.clone());
            self.operations.push((method, path.clone()));
        }
        self.router = self.router.route(&path, methods);
        self
    }
}

fn method_of(method: &HttpMethod) -> (MethodFilter, Method) {
    match method {
        HttpMethod::Get => (MethodFilter::GET, Method::GET),
        HttpMethod::Post => (MethodFilter::POST, Method::POST),
        HttpMethod::Put => (MethodFilter::PUT, Method::PUT),
        HttpMethod::Delete => (MethodFilter::DELETE, Method::DELETE),
        HttpMethod::Options => (MethodFilter::OPTIONS, Method::OPTIONS),
        HttpMethod::Head => (MethodFilter::HEAD, Method::HEAD),
        HttpMethod::Patch => (MethodFilter::PATCH, Method::PATCH),
        HttpMethod::Trace => (MethodFilter::TRACE, Method::TRACE),
    }
}

/// Runs blocking work (file creation and deletion, fsyncs, argon2) on the blocking
/// pool.
async fn blocking<T, F>(work: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, ApiError> + Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(ApiError::internal)?
}

/// No route: 404, except that an empty name in a topic or queue path is a 400.
async fn not_found(uri: Uri) -> ApiError {
    let path = uri.path();
    let named = ["/v1/topics/", "/v1/queues/"]
        .iter()
        .any(|prefix| path.starts_with(prefix));
    if named && (path.contains("//") || path.ends_with('/')) {
        return ApiError::bad_request(format!(
            "{path}: a name in the path is empty; names are 1 to 249 characters"
        ));
    }
    ApiError::not_found(format!("no route for {path}"))
}

/// A route without the method asked for: 405.
async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!("{} does not accept {method}", uri.path()),
    )
}
