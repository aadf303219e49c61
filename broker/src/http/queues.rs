//! Queues: create, list, describe, delete, send, receive, ack, nack, redrive.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::body::{
    self, DurabilityOutcome, DurabilitySetting, MessageIn, ReceivedMessage, ReceivedMessages, json,
};
use super::extract::{Caller, IdempotencyKey, Json, JsonBody, JsonOrEmpty, Path, objects};
use super::metrics::Kind;
use super::subscriptions::WAIT_MS_MAX;
use super::{AppState, blocking};
use crate::auth::{Action, Resource};
use crate::cluster::dead_letters::RoutedQueue;
use crate::cluster::layout::LogKind;
use crate::error::{ApiError, ErrorBody};
use crate::message::NewMessage;
use crate::names;
use crate::queue::{
    DeadLetterSink, MAX_DELIVERIES_DEFAULT, Queue, QueueSpec, RECEIVE_MESSAGES_MAX, Receipt,
    RedriveTarget, VISIBILITY_TIMEOUT_MS_DEFAULT, message_id,
};

/// `POST /v1/queues`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateQueue {
    /// 1-249 characters of `[A-Za-z0-9._-]`, not `.` or `..`.
    pub name: String,
    /// How long a received message stays invisible to other consumers, 1 ms to 12 h.
    /// Defaults to 30000.
    #[serde(default)]
    pub visibility_timeout_ms: Option<u64>,
    /// Deliveries before a message is dead-lettered (or dropped). Defaults to 5.
    #[serde(default)]
    pub max_deliveries: Option<u32>,
    /// Where messages go after `max_deliveries`. It may be created later; while it
    /// does not exist, such messages are dropped and counted. Defaults to none.
    #[serde(default)]
    pub dead_letter_queue: Option<String>,
    /// Partitions, 1 to 1024. Defaults to 1.
    #[serde(default)]
    pub partitions: Option<u32>,
    /// Copies of each partition. Defaults to 1.
    #[serde(default)]
    pub replication_factor: Option<u32>,
    /// When sends and acks are answered. Defaults to the broker's `durability`.
    #[serde(default)]
    pub durability: Option<DurabilitySetting>,
}

/// A partition of a queue.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct QueuePartition {
    /// The partition.
    pub partition: u32,
    /// The node id of the leader.
    pub leader: u32,
    /// The node ids holding a copy.
    pub replicas: Vec<u32>,
    /// The replicas in sync with the leader.
    pub isr: Vec<u32>,
    /// The first offset still stored.
    pub log_start_offset: u64,
    /// The offset the next message gets.
    pub log_end_offset: u64,
    /// Every message below this offset is done.
    pub ack_floor: u64,
}

/// A queue, as `GET /v1/queues/{queue}` and `POST /v1/queues` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct QueueDescription {
    /// The name.
    pub name: String,
    /// Messages not done (acked, dead-lettered or dropped), leased or not.
    pub depth: u64,
    /// Messages leased to consumers now.
    pub in_flight: u64,
    /// Messages moved to the dead-letter queue since the queue was created.
    pub dead_lettered: u64,
    /// Messages dropped after their last delivery (no dead-letter queue).
    pub dropped: u64,
    /// The default lease of a received message.
    pub visibility_timeout_ms: u64,
    /// Deliveries before a message is dead-lettered.
    pub max_deliveries: u32,
    /// The dead-letter queue, if any.
    pub dead_letter_queue: Option<String>,
    /// The number of partitions.
    pub partition_count: u32,
    /// Copies of each partition.
    pub replication_factor: u32,
    /// When sends and acks are answered.
    pub durability: DurabilitySetting,
    /// Each partition, in order.
    pub partitions: Vec<QueuePartition>,
}

/// A queue in a listing.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct QueueSummary {
    /// The name.
    pub name: String,
    /// Messages not done, leased or not.
    pub depth: u64,
    /// Messages leased to consumers now.
    pub in_flight: u64,
    /// Messages moved to the dead-letter queue since creation.
    pub dead_lettered: u64,
    /// The number of partitions.
    pub partitions: u32,
    /// The dead-letter queue, if any.
    pub dead_letter_queue: Option<String>,
}

/// `GET /v1/queues`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct QueueList {
    /// The queues the caller has a right on, by name.
    pub queues: Vec<QueueSummary>,
}

/// `POST /v1/queues/{queue}/messages`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendRequest<'a> {
    /// The messages, at least one.
    #[serde(borrow, deserialize_with = "objects")]
    pub messages: Vec<MessageIn<'a>>,
}

/// The answer to a send.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SendResponse {
    /// The message ids (`"<partition>-<offset>"`), in request order.
    pub ids: Vec<String>,
    /// What was made durable before this answer.
    pub durability: DurabilityOutcome,
}

/// `POST /v1/queues/{queue}/receive`; the body may be left out.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReceiveRequest {
    /// The most messages to return, 1 to 1000. Defaults to 1.
    #[serde(default)]
    pub max: Option<u32>,
    /// How long to wait when nothing is deliverable, 0 to 30000 ms. Defaults to 0.
    #[serde(default)]
    pub wait_ms: Option<u64>,
    /// The lease of these deliveries. Defaults to the queue's.
    #[serde(default)]
    pub visibility_timeout_ms: Option<u64>,
}

/// The answer to a receive.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReceiveResponse<'a> {
    /// The deliveries.
    #[schema(value_type = Vec<ReceivedMessage<'static>>)]
    pub messages: ReceivedMessages<'a>,
}

/// `POST /v1/queues/{queue}/ack`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AckRequest {
    /// Receipts of deliveries, at most 10000.
    pub receipts: Vec<String>,
}

/// The answer to an ack.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AckResponse {
    /// Acks that counted: a stale, repeated or already done receipt does not.
    pub acked: usize,
}

/// `POST /v1/queues/{queue}/nack`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NackRequest {
    /// Receipts of deliveries, at most 10000.
    pub receipts: Vec<String>,
    /// Deliver again after this long, at most 12 h. Defaults to 0.
    #[serde(default)]
    pub delay_ms: Option<u64>,
}

/// The answer to a nack.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct NackResponse {
    /// Nacks that counted, by the rule of acks.
    pub nacked: usize,
}

/// `POST /v1/queues/{queue}/redrive`; the body may be left out.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedriveRequest {
    /// The most messages to move, at least 1. Defaults to all.
    #[serde(default)]
    pub max: Option<u64>,
}

/// The answer to a redrive.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RedriveResponse {
    /// Messages sent back to the queue they came from.
    pub moved: usize,
}

fn describe(app: &AppState, queue: &Queue) -> QueueDescription {
    let stats = queue.stats();
    let placement = app
        .cluster
        .placement(LogKind::Queue, queue.name(), queue.partitions().len());
    let partitions = stats
        .partitions
        .iter()
        .zip(placement)
        .map(|(p, place)| QueuePartition {
            partition: p.partition,
            leader: place.leader,
            replicas: place.replicas,
            isr: place.isr,
            log_start_offset: p.start.0,
            log_end_offset: p.end.0,
            ack_floor: p.floor.0,
        })
        .collect();
    let spec = &queue.spec;
    QueueDescription {
        name: spec.name.clone(),
        depth: stats.depth,
        in_flight: stats.in_flight,
        dead_lettered: stats.dead_lettered,
        dropped: stats.dropped,
        visibility_timeout_ms: spec.visibility_timeout_ms,
        max_deliveries: spec.max_deliveries,
        dead_letter_queue: spec.dead_letter_queue.clone(),
        partition_count: spec.partitions,
        replication_factor: spec.replication_factor,
        durability: spec.durability.into(),
        partitions,
    }
}

/// Checks a queue name from a path, then that the caller may `action` on it, then
/// looks it up: 400, 403, 404 in that order.
fn lookup(
    app: &AppState,
    caller: &Caller,
    name: &str,
    action: Action,
) -> Result<Arc<Queue>, ApiError> {
    names::validate("queue", name)?;
    caller.require(&app.broker, action, Resource::Queue(name))?;
    app.broker.queue(name)
}

/// Checks receipts' signatures: a 400 for the first that is malformed or was not
/// issued here, before anything changes.
fn verify_receipts(app: &AppState, receipts: &[String]) -> Result<Vec<Receipt>, ApiError> {
    receipts
        .iter()
        .map(|r| Receipt::verify(r, &app.broker.receipt_key))
        .collect()
}

/// Creates a queue.
#[utoipa::path(
    post,
    path = "/v1/queues",
    tag = "queues",
    security(("bearer" = [])),
    request_body = CreateQueue,
    responses(
        (status = 201, description = "Created", body = QueueDescription),
        (status = 400, description = "Malformed request or invalid settings", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "No admin right on the name, or no produce right on its dead-letter queue", body = ErrorBody),
        (status = 409, description = "A queue of that name exists", body = ErrorBody),
    )
)]
pub async fn create_queue(
    State(app): State<AppState>,
    caller: Caller,
    Json(req): Json<CreateQueue>,
) -> Result<Response, ApiError> {
    names::validate("queue", &req.name)?;
    let spec = QueueSpec {
        name: req.name,
        visibility_timeout_ms: req
            .visibility_timeout_ms
            .unwrap_or(VISIBILITY_TIMEOUT_MS_DEFAULT),
        max_deliveries: req.max_deliveries.unwrap_or(MAX_DELIVERIES_DEFAULT),
        dead_letter_queue: req.dead_letter_queue,
        partitions: req.partitions.unwrap_or(1),
        replication_factor: req.replication_factor.unwrap_or(1),
        durability: req
            .durability
            .map_or(app.broker.config.durability, Into::into),
        incarnation: crate::registry::new_incarnation()?,
    };
    // The values first (400), the right then (403), as for topics.
    spec.validate(u32::MAX)?;
    caller.require(&app.broker, Action::Admin, Resource::Queue(&spec.name))?;
    // Dead letters are sends into that queue on the creator's behalf.
    if let Some(dlq) = &spec.dead_letter_queue {
        caller.require(&app.broker, Action::Produce, Resource::Queue(dlq))?;
    }
    if let Some(node) = app.cluster.node() {
        let name = spec.name.clone();
        let (partitions, rf) = (spec.partitions, spec.replication_factor);
        let value = serde_json::to_value(&spec).map_err(ApiError::internal)?;
        node.create(LogKind::Queue, &name, value, partitions, rf)
            .await?;
        let queue = app.broker.queue(&name)?;
        return Ok(json(StatusCode::CREATED, &describe(&app, &queue)));
    }
    let broker = Arc::clone(&app.broker);
    let queue = blocking(move || broker.create_queue(spec)).await?;
    Ok(json(StatusCode::CREATED, &describe(&app, &queue)))
}

/// Lists the queues the caller has a right on, with their depth.
#[utoipa::path(
    get,
    path = "/v1/queues",
    tag = "queues",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The queues", body = QueueList),
        (status = 401, description = "No valid token", body = ErrorBody),
    )
)]
pub async fn list_queues(State(app): State<AppState>, caller: Caller) -> Response {
    let queues = app
        .broker
        .queues()
        .iter()
        .filter(|q| {
            app.broker
                .auth
                .can_see(&caller.0, Resource::Queue(q.name()))
        })
        .map(|q| {
            let stats = q.stats();
            QueueSummary {
                name: q.name().to_owned(),
                depth: stats.depth,
                in_flight: stats.in_flight,
                dead_lettered: stats.dead_lettered,
                partitions: q.spec.partitions,
                dead_letter_queue: q.spec.dead_letter_queue.clone(),
            }
        })
        .collect();
    json(StatusCode::OK, &QueueList { queues })
}

/// Describes a queue: settings, depth, leases, dead letters and partitions.
#[utoipa::path(
    get,
    path = "/v1/queues/{queue}",
    tag = "queues",
    security(("bearer" = [])),
    params(("queue" = String, Path, description = "The queue")),
    responses(
        (status = 200, description = "The queue", body = QueueDescription),
        (status = 400, description = "Invalid name", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "No right on the queue", body = ErrorBody),
        (status = 404, description = "No such queue", body = ErrorBody),
    )
)]
pub async fn get_queue(
    State(app): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    names::validate("queue", &name)?;
    caller.require_visible(&app.broker, Resource::Queue(&name))?;
    let queue = app.broker.queue(&name)?;
    Ok(json(StatusCode::OK, &describe(&app, &queue)))
}

/// Deletes a queue and its messages.
#[utoipa::path(
    delete,
    path = "/v1/queues/{queue}",
    tag = "queues",
    security(("bearer" = [])),
    params(("queue" = String, Path, description = "The queue")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Invalid name", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "No admin right on the queue", body = ErrorBody),
        (status = 404, description = "No such queue", body = ErrorBody),
    )
)]
pub async fn delete_queue(
    State(app): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    names::validate("queue", &name)?;
    caller.require(&app.broker, Action::Admin, Resource::Queue(&name))?;
    if let Some(node) = app.cluster.node() {
        node.delete(LogKind::Queue, &name).await?;
    } else {
        let broker = Arc::clone(&app.broker);
        let deleted = name.clone();
        blocking(move || broker.delete_queue(&deleted)).await?;
    }
    app.metrics.forget(Kind::Queue, &name);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Sends messages. With an `Idempotency-Key` seen on this queue within the window,
/// nothing is appended and the first answer comes back.
#[utoipa::path(
    post,
    path = "/v1/queues/{queue}/messages",
    tag = "queues",
    security(("bearer" = [])),
    params(
        ("queue" = String, Path, description = "The queue"),
        ("Idempotency-Key" = Option<String>, Header,
            description = "1-256 printable characters; a retry with the same key returns the first answer"),
    ),
    request_body = SendRequest<'_>,
    responses(
        (status = 200, description = "Stored", body = SendResponse),
        (status = 400, description = "Malformed request", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "No produce right on the queue", body = ErrorBody),
        (status = 404, description = "No such queue", body = ErrorBody),
        (status = 422, description = "Idempotency-Key used before for other messages", body = ErrorBody),
    )
)]
pub async fn send(
    State(app): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    IdempotencyKey(key): IdempotencyKey,
    body: JsonBody,
) -> Result<Response, ApiError> {
    let (messages, _) =
        body.parse_messages(|req: &mut SendRequest<'_>| std::mem::take(&mut req.messages))?;
    let queue = lookup(&app, &caller, &name, Action::Produce)?;
    let count = messages.len();
    let placement = match key {
        None => queue.send(&messages, None).await?,
        Some(key) => {
            let messages: Vec<NewMessage<'static>> =
                messages.into_iter().map(NewMessage::into_owned).collect();
            let queue = Arc::clone(&queue);
            body::to_completion(async move { queue.send(&messages, Some(&key)).await }).await?
        }
    };
    let answer = SendResponse {
        ids: placement
            .iter()
            .map(|&(partition, offset)| message_id(partition, offset))
            .collect(),
        durability: queue.spec.durability.into(),
    };
    Ok(body::json_response(
        StatusCode::OK,
        &answer,
        32 + 24 * count,
    ))
}

/// Receives messages, each leased to this caller until its visibility timeout runs
/// out. With `wait_ms`, an empty receive waits and returns as soon as something is
/// deliverable.
#[utoipa::path(
    post,
    path = "/v1/queues/{queue}/receive",
    tag = "queues",
    security(("bearer" = [])),
    params(("queue" = String, Path, description = "The queue")),
    request_body(content = Option<ReceiveRequest>, description = "May be left out"),
    responses(
        (status = 200, description = "Deliveries (maybe none)", body = ReceiveResponse<'static>),
        (status = 400, description = "Malformed request", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "No consume right on the queue", body = ErrorBody),
        (status = 404, description = "No such queue", body = ErrorBody),
    )
)]
pub async fn receive(
    State(app): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    JsonOrEmpty(req): JsonOrEmpty<ReceiveRequest>,
) -> Result<Response, ApiError> {
    let max = req.max.unwrap_or(1) as usize;
    if !(1..=RECEIVE_MESSAGES_MAX).contains(&max) {
        return Err(ApiError::bad_request(format!(
            "max must be between 1 and {RECEIVE_MESSAGES_MAX}"
        )));
    }
    let wait_ms = req.wait_ms.unwrap_or(0);
    if wait_ms > WAIT_MS_MAX {
        return Err(ApiError::bad_request(format!(
            "wait_ms must be at most {WAIT_MS_MAX}"
        )));
    }
    let queue = lookup(&app, &caller, &name, Action::Consume)?;
    let dead_letter = queue
        .spec
        .dead_letter_queue
        .as_deref()
        .and_then(|dlq| app.broker.find_queue(dlq))
        // In a cluster, another node may lead the dead-letter queue.
        .map(|local| {
            Arc::new(RoutedQueue::new(local, app.cluster.node().cloned()))
                as Arc<dyn DeadLetterSink>
        });
    let receive = caller.while_allowed(
        &app.broker,
        Action::Consume,
        Resource::Queue(queue.name()),
        queue.receive(
            max,
            Duration::from_millis(wait_ms),
            req.visibility_timeout_ms,
            &app.broker.receipt_key,
            dead_letter,
        ),
    );
    // A shutdown ends a parked receive at once. One cut short after it leased
    // messages leaves them leased: they are delivered again when the lease runs out.
    let deliveries = tokio::select! {
        received = receive => received?,
        () = app.broker.shutting_down() => Vec::new(),
    };
    app.metrics.record_out(
        Kind::Queue,
        queue.name(),
        deliveries.len(),
        body::stored_bytes(deliveries.iter().map(|d| &d.message)),
    );
    let hint = body::json_size_hint(deliveries.iter().map(|d| &d.message)) + 200 * deliveries.len();
    let answer = ReceiveResponse {
        messages: ReceivedMessages(&deliveries),
    };
    Ok(body::json_response(StatusCode::OK, &answer, hint))
}

/// Acknowledges deliveries: their messages are done and never delivered again.
#[utoipa::path(
    post,
    path = "/v1/queues/{queue}/ack",
    tag = "queues",
    security(("bearer" = [])),
    params(("queue" = String, Path, description = "The queue")),
    request_body = AckRequest,
    responses(
        (status = 200, description = "Acknowledged", body = AckResponse),
        (status = 400, description = "Malformed request, or a receipt that is malformed, forged or of another queue", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "No consume right on the queue", body = ErrorBody),
        (status = 404, description = "No such queue", body = ErrorBody),
    )
)]
pub async fn ack(
    State(app): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Json(req): Json<AckRequest>,
) -> Result<Response, ApiError> {
    let queue = lookup(&app, &caller, &name, Action::Consume)?;
    let receipts = verify_receipts(&app, &req.receipts)?;
    let acked = queue.ack(&receipts).await?;
    Ok(json(StatusCode::OK, &AckResponse { acked }))
}

/// Gives deliveries back, to be delivered again after `delay_ms`.
#[utoipa::path(
    post,
    path = "/v1/queues/{queue}/nack",
    tag = "queues",
    security(("bearer" = [])),
    params(("queue" = String, Path, description = "The queue")),
    request_body = NackRequest,
    responses(
        (status = 200, description = "Given back", body = NackResponse),
        (status = 400, description = "Malformed request, or a receipt that is malformed, forged or of another queue", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "No consume right on the queue", body = ErrorBody),
        (status = 404, description = "No such queue", body = ErrorBody),
    )
)]
pub async fn nack(
    State(app): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Json(req): Json<NackRequest>,
) -> Result<Response, ApiError> {
    let queue = lookup(&app, &caller, &name, Action::Consume)?;
    let receipts = verify_receipts(&app, &req.receipts)?;
    let nacked = queue.nack(&receipts, req.delay_ms.unwrap_or(0)).await?;
    Ok(json(StatusCode::OK, &NackResponse { nacked }))
}

/// On a dead-letter queue: sends its messages back to the queues they came from,
/// with their delivery counts reset.
#[utoipa::path(
    post,
    path = "/v1/queues/{queue}/redrive",
    tag = "queues",
    security(("bearer" = [])),
    params(("queue" = String, Path, description = "The dead-letter queue")),
    request_body(content = Option<RedriveRequest>, description = "May be left out"),
    responses(
        (status = 200, description = "Moved", body = RedriveResponse),
        (status = 400, description = "Malformed request", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "No admin right on the queue", body = ErrorBody),
        (status = 404, description = "No such queue", body = ErrorBody),
    )
)]
pub async fn redrive(
    State(app): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    JsonOrEmpty(req): JsonOrEmpty<RedriveRequest>,
) -> Result<Response, ApiError> {
    if req.max == Some(0) {
        return Err(ApiError::bad_request("max must be at least 1"));
    }
    let max = req
        .max
        .map_or(usize::MAX, |m| m.try_into().unwrap_or(usize::MAX));
    let queue = lookup(&app, &caller, &name, Action::Admin)?;
    let broker = Arc::clone(&app.broker);
    let node = app.cluster.node().cloned();
    // A letter goes back only to a queue the caller may send to; the others stay.
    let moved = queue
        .redrive(max, move |origin| {
            let allowed = broker
                .auth
                .can(&caller.0, Action::Produce, Resource::Queue(origin));
            let local = allowed.then(|| broker.find_queue(origin)).flatten()?;
            // In a cluster, another node may lead the origin.
            Some(Arc::new(RoutedQueue::new(local, node.clone())) as Arc<dyn RedriveTarget>)
        })
        .await?;
    Ok(json(StatusCode::OK, &RedriveResponse { moved }))
}
