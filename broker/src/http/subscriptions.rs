//! Subscriptions of a topic: create, list, describe, delete, pull, commit, offsets,
//! seek. Every one needs the consume right on the topic.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use log_engine::Offset;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::body::{self, PulledMessage, PulledMessages};
use super::extract::{Caller, Json, Path, Query, objects};
use super::metrics::Kind;
use super::pull_json::PulledJson;
use super::topics::lookup;
use super::{AppState, blocking};
use crate::auth::{Action, Resource};
use crate::cluster::layout::LogKind;
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::names;
use crate::subscription::{PartitionOffsets, SeekTo, StartAt, Subscription};
use crate::topic::Topic;

/// The most messages one pull returns.
pub const PULL_MAX: u32 = 10_000;
/// Value bytes per message assumed when sizing a pull's answer up front.
const VALUE_BYTES_GUESS: usize = 128;
/// Messages a pull returns when `max` is not given.
pub const PULL_DEFAULT: u32 = 100;
/// The longest a pull or receive waits for messages, in ms.
pub const WAIT_MS_MAX: u64 = 30_000;

/// Where a new subscription starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StartParam {
    /// At the oldest message still stored.
    #[default]
    Earliest,
    /// After the newest message: only what is produced from now on.
    Latest,
}

/// `POST /v1/topics/{topic}/subscriptions`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSubscription {
    /// 1-249 characters of `[A-Za-z0-9._-]`, not `.` or `..`.
    pub name: String,
    /// Where it starts. Defaults to `"earliest"`.
    #[serde(default)]
    pub start: Option<StartParam>,
    /// Whether each pull commits the new positions (flushed to disk periodically).
    /// Defaults to false.
    #[serde(default)]
    pub auto_commit: Option<bool>,
}

/// Offsets of a subscription in one partition.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SubscriptionOffset {
    /// The partition.
    pub partition: u32,
    /// The committed offset: the next one to read after a restart.
    pub committed: u64,
    /// The partition's end.
    pub log_end_offset: u64,
    /// Messages between the committed offset and the end.
    pub lag: u64,
}

impl From<PartitionOffsets> for SubscriptionOffset {
    fn from(o: PartitionOffsets) -> Self {
        SubscriptionOffset {
            partition: o.partition,
            committed: o.committed.0,
            log_end_offset: o.log_end_offset.0,
            lag: o.lag,
        }
    }
}

/// A subscription.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SubscriptionDescription {
    /// The name.
    pub name: String,
    /// The topic.
    pub topic: String,
    /// Whether pulls commit.
    pub auto_commit: bool,
    /// Messages after the committed offsets, over all partitions.
    pub lag: u64,
    /// Per partition.
    pub offsets: Vec<SubscriptionOffset>,
}

/// A subscription in a listing.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SubscriptionSummary {
    /// The name.
    pub name: String,
    /// Whether pulls commit.
    pub auto_commit: bool,
    /// Messages after the committed offsets, over all partitions.
    pub lag: u64,
}

/// `GET /v1/topics/{topic}/subscriptions`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SubscriptionList {
    /// The topic's subscriptions, by name.
    pub subscriptions: Vec<SubscriptionSummary>,
}

/// The query of a pull.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PullQuery {
    /// The most messages to return, 1 to 10000. Defaults to 100.
    pub max: Option<u32>,
    /// How long to wait for a message when there is none, 0 to 30000 ms. Defaults to 0.
    pub wait_ms: Option<u64>,
}

/// The answer to a pull.
#[derive(Debug, Serialize, ToSchema)]
pub struct PullResponse<'a> {
    /// The messages, in offset order within each partition.
    #[schema(value_type = Vec<PulledMessage<'static>>)]
    pub messages: PulledMessages<'a>,
}

/// A committed offset: the next offset to read in a partition.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommitOffset {
    /// The partition.
    pub partition: u32,
    /// The next offset to read (one past the last processed message).
    pub offset: u64,
}

/// `POST .../commit`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommitRequest {
    /// Offsets to commit.
    #[serde(deserialize_with = "objects")]
    pub offsets: Vec<CommitOffset>,
}

/// `GET .../offsets`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OffsetsResponse {
    /// Per partition.
    pub offsets: Vec<SubscriptionOffset>,
}

/// A named position for a seek.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SeekPosition {
    /// The oldest stored message of every partition.
    Earliest,
    /// The end of every partition.
    Latest,
}

/// `POST .../seek`: exactly one of `offset` (with an optional `partition`; all
/// partitions without), `to`, or `timestamp`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SeekRequest {
    /// With `offset`: the partition to move; all when left out.
    #[serde(default)]
    pub partition: Option<u32>,
    /// Move to this offset (clamped to what the partition holds).
    #[serde(default)]
    pub offset: Option<u64>,
    /// Move to the start or the end.
    #[serde(default)]
    pub to: Option<SeekPosition>,
    /// Move to the first message at or after this time (ms since the Unix epoch).
    #[serde(default)]
    pub timestamp: Option<i64>,
}

impl SeekRequest {
    fn target(&self) -> Result<SeekTo, ApiError> {
        match (self.offset, self.to, self.timestamp) {
            (Some(offset), None, None) => Ok(SeekTo::Offset {
                partition: self.partition,
                offset: Offset(offset),
            }),
            (None, Some(to), None) if self.partition.is_none() => Ok(match to {
                SeekPosition::Earliest => SeekTo::Earliest,
                SeekPosition::Latest => SeekTo::Latest,
            }),
            (None, None, Some(ts)) if self.partition.is_none() && ts >= 0 => {
                Ok(SeekTo::Timestamp(ts))
            }
            (None, None, Some(_)) if self.partition.is_none() => Err(ApiError::bad_request(
                "timestamp: milliseconds since the Unix epoch, not negative",
            )),
            _ => Err(ApiError::bad_request(
                "a seek takes exactly one of {\"offset\"} (with an optional \"partition\"), \
                 {\"to\": \"earliest\"|\"latest\"} or {\"timestamp\"}",
            )),
        }
    }
}

fn subscription(
    app: &AppState,
    caller: &Caller,
    topic: &str,
    sub: &str,
) -> Result<(Arc<Topic>, Arc<Subscription>), ApiError> {
    names::validate("subscription", sub)?;
    let topic = lookup(app, caller, topic, Action::Consume)?;
    let sub = topic.subscription(sub)?;
    Ok((topic, sub))
}

fn description(topic: &Topic, sub: &Subscription) -> SubscriptionDescription {
    let offsets: Vec<SubscriptionOffset> = sub.offsets().into_iter().map(Into::into).collect();
    SubscriptionDescription {
        name: sub.name.clone(),
        topic: topic.name().to_owned(),
        auto_commit: sub.auto_commit,
        lag: offsets.iter().map(|o| o.lag).sum(),
        offsets,
    }
}

/// Creates a subscription: a cursor of its own over every partition.
#[utoipa::path(
    post,
    path = "/v1/topics/{topic}/subscriptions",
    tag = "subscriptions",
    security(("bearer" = [])),
    params(("topic" = String, Path, description = "The topic")),
    request_body = CreateSubscription,
    responses(
        (status = 201, description = "Created", body = SubscriptionDescription),
        (status = 400, description = "Malformed request or invalid name", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "No consume right on the topic", body = ErrorBody),
        (status = 404, description = "No such topic", body = ErrorBody),
        (status = 409, description = "A subscription of that name exists", body = ErrorBody),
    )
)]
pub async fn create_subscription(
    State(app): State<AppState>,
    caller: Caller,
    Path(topic): Path<String>,
    Json(req): Json<CreateSubscription>,
) -> Result<Response, ApiError> {
    names::validate("subscription", &req.name)?;
    let topic = lookup(&app, &caller, &topic, Action::Consume)?;
    let start = match req.start.unwrap_or_default() {
        StartParam::Earliest => StartAt::Earliest,
        StartParam::Latest => StartAt::Latest,
    };
    let auto_commit = req.auto_commit.unwrap_or(false);
    let creating = Arc::clone(&topic);
    let sub = blocking(move || creating.subscribe(&req.name, start, auto_commit)).await?;
    if let Some(node) = app.cluster.node()
        && let Err(error) = node.put_subscription(topic.name(), &sub).await
    {
        let undo = Arc::clone(&topic);
        let name = sub.name.clone();
        blocking(move || undo.unsubscribe(&name)).await?;
        return Err(error);
    }
    Ok(body::json(StatusCode::CREATED, &description(&topic, &sub)))
}

/// Lists a topic's subscriptions with their lag.
#[utoipa::path(
    get,
    path = "/v1/topics/{topic}/subscriptions",
    tag = "subscriptions",
    security(("bearer" = [])),
    params(("topic" = String, Path, description = "The topic")),
    responses(
        (status = 200, description = "The subscriptions", body = SubscriptionList),
        (status = 400, description = "Invalid name", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "No consume right on the topic", body = ErrorBody),
        (status = 404, description = "No such topic", body = ErrorBody),
    )
)]
pub async fn list_subscriptions(
    State(app): State<AppState>,
    caller: Caller,
    Path(topic): Path<String>,
) -> Result<Response, ApiError> {
    let topic = lookup(&app, &caller, &topic, Action::Consume)?;
    let subscriptions = topic
        .subscriptions()
        .iter()
        .map(|s| SubscriptionSummary {
            name: s.name.clone(),
            auto_commit: s.auto_commit,
            lag: s.lag(),
        })
        .collect();
    Ok(body::json(
        StatusCode::OK,
        &SubscriptionList { subscriptions },
    ))
}

/// Describes a subscription: its settings and offsets.
#[utoipa::path(
    get,
    path = "/v1/topics/{topic}/subscriptions/{subscription}",
    tag = "subscriptions",
    security(("bearer" = [])),
    params(
        ("topic" = String, Path, description = "The topic"),
        ("subscription" = String, Path, description = "The subscription"),
    ),
    responses(
        (status = 200, description = "The subscription", body = SubscriptionDescription),
        (status = 400, description = "Invalid name", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "No consume right on the topic", body = ErrorBody),
        (status = 404, description = "No such topic or subscription", body = ErrorBody),
    )
)]
pub async fn get_subscription(
    State(app): State<AppState>,
    caller: Caller,
    Path((topic, sub)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (topic, sub) = subscription(&app, &caller, &topic, &sub)?;
    Ok(body::json(StatusCode::OK, &description(&topic, &sub)))
}

/// Deletes a subscription and its offsets.
#[utoipa::path(
    delete,
    path = "/v1/topics/{topic}/subscriptions/{subscription}",
    tag = "subscriptions",
    security(("bearer" = [])),
    params(
        ("topic" = String, Path, description = "The topic"),
        ("subscription" = String, Path, description = "The subscription"),
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Invalid name", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "No consume right on the topic", body = ErrorBody),
        (status = 404, description = "No such topic or subscription", body = ErrorBody),
    )
)]
pub async fn delete_subscription(
    State(app): State<AppState>,
    caller: Caller,
    Path((topic, sub)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (topic, sub) = subscription(&app, &caller, &topic, &sub)?;
    if let Some(node) = app.cluster.node() {
        node.remove_subscription(topic.name(), &sub.name).await?;
    }
    blocking(move || topic.unsubscribe(&sub.name)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Pulls messages after the subscription's position and moves the position past
/// them. With `wait_ms`, an empty pull waits and returns as soon as a message
/// arrives.
#[utoipa::path(
    get,
    path = "/v1/topics/{topic}/subscriptions/{subscription}/messages",
    tag = "subscriptions",
    security(("bearer" = [])),
    params(
        ("topic" = String, Path, description = "The topic"),
        ("subscription" = String, Path, description = "The subscription"),
        PullQuery,
    ),
    responses(
        (status = 200, description = "Messages (maybe none)", body = PullResponse<'static>),
        (status = 400, description = "Invalid name or query", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "No consume right on the topic", body = ErrorBody),
        (status = 404, description = "No such topic or subscription", body = ErrorBody),
    )
)]
pub async fn pull(
    State(app): State<AppState>,
    caller: Caller,
    Path((topic, sub)): Path<(String, String)>,
    Query(query): Query<PullQuery>,
) -> Result<Response, ApiError> {
    let max = query.max.unwrap_or(PULL_DEFAULT);
    if !(1..=PULL_MAX).contains(&max) {
        return Err(ApiError::bad_request(format!(
            "max must be between 1 and {PULL_MAX}"
        )));
    }
    let wait_ms = query.wait_ms.unwrap_or(0);
    if wait_ms > WAIT_MS_MAX {
        return Err(ApiError::bad_request(format!(
            "wait_ms must be at most {WAIT_MS_MAX}"
        )));
    }
    let (topic, sub) = subscription(&app, &caller, &topic, &sub)?;
    // In a cluster, an auto-commit the pull makes is written to ZooKeeper after it.
    let shared = (sub.auto_commit && app.cluster.node().is_some()).then(|| sub.committed());
    let mut answer = PulledJson::new(max as usize, VALUE_BYTES_GUESS);
    // A shutdown ends a parked poll at once (a pull that is cut short has taken
    // nothing: it moves positions only after its last wait).
    let pulling = caller.while_allowed(
        &app.broker,
        Action::Consume,
        Resource::Topic(topic.name()),
        sub.pull_into(max as usize, Duration::from_millis(wait_ms), &mut answer),
    );
    tokio::select! {
        pulled = pulling => {
            pulled?;
        }
        () = app.broker.shutting_down() => answer = PulledJson::new(0, 0),
    }
    if let (Some(before), Some(node)) = (shared, app.cluster.node())
        && sub.committed() != before
    {
        node.put_subscription(topic.name(), &sub).await?;
    }
    app.metrics.record_out(
        Kind::Topic,
        topic.name(),
        answer.count(),
        answer.payload_bytes(),
    );
    Ok(body::json_bytes(StatusCode::OK, answer.finish()))
}

/// Commits offsets durably: after a restart the subscription resumes from them. A
/// commit past the subscription's position moves the position there too.
#[utoipa::path(
    post,
    path = "/v1/topics/{topic}/subscriptions/{subscription}/commit",
    tag = "subscriptions",
    security(("bearer" = [])),
    params(
        ("topic" = String, Path, description = "The topic"),
        ("subscription" = String, Path, description = "The subscription"),
    ),
    request_body = CommitRequest,
    responses(
        (status = 204, description = "Committed"),
        (status = 400, description = "Malformed request, unknown partition or offset past the end", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "No consume right on the topic", body = ErrorBody),
        (status = 404, description = "No such topic or subscription", body = ErrorBody),
    )
)]
pub async fn commit(
    State(app): State<AppState>,
    caller: Caller,
    Path((topic, sub)): Path<(String, String)>,
    Json(req): Json<CommitRequest>,
) -> Result<Response, ApiError> {
    let (topic, sub) = subscription(&app, &caller, &topic, &sub)?;
    let offsets: Vec<(u32, Offset)> = req
        .offsets
        .iter()
        .map(|o| (o.partition, Offset(o.offset)))
        .collect();
    let committing = Arc::clone(&sub);
    let partitions: Vec<u32> = offsets.iter().map(|(p, _)| *p).collect();
    let to_commit = offsets.clone();
    let committed = blocking(move || committing.commit(&to_commit)).await;
    if let Some(node) = app.cluster.node() {
        // An offset past this node's end may still be one the topic has: a leader
        // paused past its session has not yet learnt that it was replaced, and its
        // copy is behind. That is a 503 to retry, not a bad request.
        if let Err(error) = &committed
            && error.code == ErrorCode::BadRequest
        {
            for partition in partitions
                .iter()
                .filter(|p| (**p as usize) < topic.partitions().len())
            {
                node.confirm_leads(LogKind::Topic, topic.name(), *partition)
                    .await?;
            }
        }
        committed?;
        node.put_subscription(topic.name(), &sub).await?;
    } else {
        committed?;
    }
    sub.advance_to(&offsets).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The committed offset, end and lag of each partition.
#[utoipa::path(
    get,
    path = "/v1/topics/{topic}/subscriptions/{subscription}/offsets",
    tag = "subscriptions",
    security(("bearer" = [])),
    params(
        ("topic" = String, Path, description = "The topic"),
        ("subscription" = String, Path, description = "The subscription"),
    ),
    responses(
        (status = 200, description = "The offsets", body = OffsetsResponse),
        (status = 400, description = "Invalid name", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "No consume right on the topic", body = ErrorBody),
        (status = 404, description = "No such topic or subscription", body = ErrorBody),
    )
)]
pub async fn offsets(
    State(app): State<AppState>,
    caller: Caller,
    Path((topic, sub)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (_, sub) = subscription(&app, &caller, &topic, &sub)?;
    let offsets = sub.offsets().into_iter().map(Into::into).collect();
    Ok(body::json(StatusCode::OK, &OffsetsResponse { offsets }))
}

/// Moves the subscription's position (and commits it): to an offset, to the start
/// or end, or to a time.
#[utoipa::path(
    post,
    path = "/v1/topics/{topic}/subscriptions/{subscription}/seek",
    tag = "subscriptions",
    security(("bearer" = [])),
    params(
        ("topic" = String, Path, description = "The topic"),
        ("subscription" = String, Path, description = "The subscription"),
    ),
    request_body = SeekRequest,
    responses(
        (status = 204, description = "Moved"),
        (status = 400, description = "Malformed request or unknown partition", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "No consume right on the topic", body = ErrorBody),
        (status = 404, description = "No such topic or subscription", body = ErrorBody),
    )
)]
pub async fn seek(
    State(app): State<AppState>,
    caller: Caller,
    Path((topic, sub)): Path<(String, String)>,
    Json(req): Json<SeekRequest>,
) -> Result<Response, ApiError> {
    let target = req.target()?;
    let (topic, sub) = subscription(&app, &caller, &topic, &sub)?;
    sub.seek(target).await?;
    if let Some(node) = app.cluster.node() {
        node.put_subscription(topic.name(), &sub).await?;
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}
