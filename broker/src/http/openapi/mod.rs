//! The OpenAPI document served at `/openapi.json`, generated with utoipa from the
//! handlers' `#[utoipa::path]` attributes. The router takes each route's method and
//! path from the same attributes (see `super::Routes`), and a test checks that the
//! routed operations and the documented ones are the same set, so the document
//! cannot drift from the code. The error responses that do not come from one
//! handler (413, and the 500, 503 and 504 of storage and the cluster) are added by
//! [`errors`], and the list of error codes comes from [`ErrorCode::ALL`]. The limits
//! the server checks on values are written into the schemas by [`limits`].

use std::sync::OnceLock;

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{auth_routes, body, cluster, ops, queues, subscriptions, topics};
use crate::error::{ErrorBody, ErrorCode, ErrorDetail};

mod errors;
mod limits;

/// The name of the bearer security scheme in the document.
pub const BEARER_SCHEME: &str = "bearer";

#[derive(OpenApi)]
#[openapi(
    info(title = "mom broker REST API"),
    paths(
        auth_routes::issue_token,
        topics::create_topic,
        topics::list_topics,
        topics::get_topic,
        topics::delete_topic,
        topics::produce,
        subscriptions::create_subscription,
        subscriptions::list_subscriptions,
        subscriptions::get_subscription,
        subscriptions::delete_subscription,
        subscriptions::pull,
        subscriptions::commit,
        subscriptions::offsets,
        subscriptions::seek,
        queues::create_queue,
        queues::list_queues,
        queues::get_queue,
        queues::delete_queue,
        queues::send,
        queues::receive,
        queues::ack,
        queues::nack,
        queues::redrive,
        cluster::describe_cluster,
        cluster::topic_partitions,
        ops::healthz,
        ops::readyz,
        ops::metrics,
        ops::openapi,
        ops::bench_noop,
    ),
    components(schemas(
        ErrorBody,
        ErrorDetail,
        ErrorCode,
        body::ValueEncoding,
        body::DurabilitySetting,
        body::DurabilityOutcome,
        body::MessageIn<'_>,
    )),
    modifiers(&BearerScheme),
    tags(
        (name = "auth", description = "Tokens"),
        (name = "topics", description = "Topics: partitioned logs, publish/subscribe"),
        (name = "subscriptions", description = "A topic's subscriptions: cursors of their own"),
        (name = "queues", description = "Queues: competing consumers with leases and dead letters"),
        (name = "cluster", description = "Nodes and partition leaders"),
        (name = "operations", description = "Health, readiness, metrics, this document"),
        (name = "internal", description = "For the broker's own tools"),
    )
)]
struct ApiDoc;

/// Adds the bearer (JWT) security scheme that authenticated operations name.
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let mut http = Http::new(HttpAuthScheme::Bearer);
        http.bearer_format = Some("JWT".into());
        http.description = Some("A token from POST /v1/auth/token".into());
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(BEARER_SCHEME, SecurityScheme::Http(http));
    }
}

/// The document.
pub fn document() -> &'static utoipa::openapi::OpenApi {
    static DOC: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc = ApiDoc::openapi();
        doc.info.version = env!("CARGO_PKG_VERSION").into();
        doc.info.description = Some(description());
        errors::add(&mut doc);
        let missing = limits::add(&mut doc);
        if !missing.is_empty() {
            tracing::warn!(
                ?missing,
                "the OpenAPI document lacks the limits of these values"
            );
        }
        doc
    })
}

/// The document's description, with every error code and its status.
fn description() -> String {
    let codes: Vec<String> = ErrorCode::ALL
        .iter()
        .map(|code| format!("{code} {}", code.status().as_u16()))
        .collect();
    format!(
        "Topics (publish/subscribe) and queues (competing consumers) over REST with JWT \
         bearer tokens. Errors are `{{\"error\": {{\"code\", \"message\"}}}}` with a \
         stable snake_case code: {}. Each code is described under `components.responses`.",
        codes.join(", ")
    )
}
