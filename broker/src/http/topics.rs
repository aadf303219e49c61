//! Topics: create, list, describe, delete, produce.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use log_engine::Offset;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::body::{self, DurabilityOutcome, DurabilitySetting, MessageIn, json};
use super::extract::{Caller, IdempotencyKey, Json, JsonBody, Path, objects};
use super::metrics::Kind;
use super::{AppState, blocking};
use crate::auth::{Action, Resource};
use crate::cluster::layout::LogKind;
use crate::error::{ApiError, ErrorBody};
use crate::message::NewMessage;
use crate::names;
use crate::topic::{Acks, Topic, TopicSpec};

/// The longest retention by age: the log compares ages as signed milliseconds.
pub const RETENTION_MS_MAX: u64 = i64::MAX as u64;

/// `POST /v1/topics`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTopic {
    /// 1-249 characters of `[A-Za-z0-9._-]`, not `.` or `..`.
    pub name: String,
    /// Partitions, 1 to 1024. Defaults to 1.
    #[serde(default)]
    pub partitions: Option<u32>,
    /// Copies of each partition; at most the number of nodes. Defaults to 1.
    #[serde(default)]
    pub replication_factor: Option<u32>,
    /// Delete whole segments older than this, at most 2^63 - 1. Defaults to none
    /// (keep).
    #[serde(default)]
    pub retention_ms: Option<u64>,
    /// Delete the oldest segments while a partition is larger. Defaults to none.
    #[serde(default)]
    pub retention_bytes: Option<u64>,
    /// When produces are answered. Defaults to the broker's `durability` setting.
    #[serde(default)]
    pub durability: Option<DurabilitySetting>,
}

/// A partition of a topic: where it lives and its offsets.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TopicPartition {
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
    /// Messages below this are committed (readable by consumers).
    pub high_watermark: u64,
    /// Messages below this are fsynced on the leader.
    pub durable_offset: u64,
}

/// A topic, as `GET /v1/topics/{topic}` and `POST /v1/topics` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TopicDescription {
    /// The name.
    pub name: String,
    /// Each partition, in order.
    pub partitions: Vec<TopicPartition>,
    /// The number of partitions.
    pub partition_count: u32,
    /// Copies of each partition.
    pub replication_factor: u32,
    /// Retention by age, if any.
    pub retention_ms: Option<u64>,
    /// Retention by size per partition, if any.
    pub retention_bytes: Option<u64>,
    /// When produces are answered.
    pub durability: DurabilitySetting,
    /// The number of subscriptions.
    pub subscription_count: usize,
}

/// A topic in a listing.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TopicSummary {
    /// The name.
    pub name: String,
    /// The number of partitions.
    pub partitions: u32,
    /// Copies of each partition.
    pub replication_factor: u32,
    /// Retention by age, if any.
    pub retention_ms: Option<u64>,
    /// Retention by size per partition, if any.
    pub retention_bytes: Option<u64>,
    /// When produces are answered.
    pub durability: DurabilitySetting,
}

/// `GET /v1/topics`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TopicList {
    /// The topics the caller has a right on, by name.
    pub topics: Vec<TopicSummary>,
}

/// How long a produce waits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AcksParam {
    /// Until every in-sync replica has the messages (standalone: as `leader`).
    #[default]
    All,
    /// Until the leader stored them as the topic's durability says.
    Leader,
    /// Until the leader wrote them, without waiting for an fsync.
    None,
}

impl From<AcksParam> for Acks {
    fn from(a: AcksParam) -> Acks {
        match a {
            AcksParam::All => Acks::All,
            AcksParam::Leader => Acks::Leader,
            AcksParam::None => Acks::None,
        }
    }
}

/// `POST /v1/topics/{topic}/messages`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProduceRequest<'a> {
    /// The messages, at least one.
    #[serde(borrow, deserialize_with = "objects")]
    pub messages: Vec<MessageIn<'a>>,
    /// How long to wait. Defaults to `"all"`.
    #[serde(default)]
    pub acks: Option<AcksParam>,
}

/// Where a message was stored.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PartitionOffset {
    /// The partition.
    pub partition: u32,
    /// The message's offset.
    pub offset: u64,
}

/// The answer to a produce.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProduceResponse {
    /// One per message, in request order.
    pub offsets: Vec<PartitionOffset>,
    /// What was made durable before this answer.
    pub durability: DurabilityOutcome,
}

/// The description of a topic.
pub fn describe(app: &AppState, topic: &Topic) -> TopicDescription {
    let placement = app
        .cluster
        .placement(LogKind::Topic, topic.name(), topic.partitions().len());
    let partitions = topic
        .partitions()
        .iter()
        .zip(placement)
        .map(|(p, place)| TopicPartition {
            partition: p.id,
            leader: place.leader,
            replicas: place.replicas,
            isr: place.isr,
            log_start_offset: p.start().0,
            log_end_offset: p.end().0,
            high_watermark: p.log.high_watermark().0,
            durable_offset: p.log.durable_offset().0,
        })
        .collect();
    let spec = &topic.spec;
    TopicDescription {
        name: spec.name.clone(),
        partitions,
        partition_count: spec.partitions,
        replication_factor: spec.replication_factor,
        retention_ms: spec.retention_ms,
        retention_bytes: spec.retention_bytes,
        durability: spec.durability.into(),
        subscription_count: topic.subscriptions().len(),
    }
}

fn summary(topic: &Topic) -> TopicSummary {
    let spec = &topic.spec;
    TopicSummary {
        name: spec.name.clone(),
        partitions: spec.partitions,
        replication_factor: spec.replication_factor,
        retention_ms: spec.retention_ms,
        retention_bytes: spec.retention_bytes,
        durability: spec.durability.into(),
    }
}

/// Checks a topic name from a path, then that the caller may `action` on it, then
/// looks it up: 400, 403, 404 in that order.
pub fn lookup(
    app: &AppState,
    caller: &Caller,
    name: &str,
    action: Action,
) -> Result<Arc<Topic>, ApiError> {
    names::validate("topic", name)?;
    caller.require(&app.broker, action, Resource::Topic(name))?;
    app.broker.topic(name)
}

/// Creates a topic.
#[utoipa::path(
    post,
    path = "/v1/topics",
    tag = "topics",
    security(("bearer" = [])),
    request_body = CreateTopic,
    responses(
        (status = 201, description = "Created", body = TopicDescription),
        (status = 400, description = "Malformed request or invalid settings", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "No admin right on the name", body = ErrorBody),
        (status = 409, description = "A topic of that name exists", body = ErrorBody),
    )
)]
pub async fn create_topic(
    State(app): State<AppState>,
    caller: Caller,
    Json(req): Json<CreateTopic>,
) -> Result<Response, ApiError> {
    names::validate("topic", &req.name)?;
    if req.retention_ms.is_some_and(|ms| ms > RETENTION_MS_MAX) {
        return Err(ApiError::bad_request(format!(
            "retention_ms must be at most {RETENTION_MS_MAX}"
        )));
    }
    let spec = TopicSpec {
        name: req.name,
        partitions: req.partitions.unwrap_or(1),
        replication_factor: req.replication_factor.unwrap_or(1),
        retention_ms: req.retention_ms,
        retention_bytes: req.retention_bytes,
        durability: req
            .durability
            .map_or(app.broker.config.durability, Into::into),
        incarnation: crate::registry::new_incarnation()?,
    };
    // The values first (400), the right then (403); the replication factor against
    // the nodes there are is the create's own check.
    spec.validate(u32::MAX)?;
    caller.require(&app.broker, Action::Admin, Resource::Topic(&spec.name))?;
    if let Some(node) = app.cluster.node() {
        let name = spec.name.clone();
        let (partitions, rf) = (spec.partitions, spec.replication_factor);
        let value = serde_json::to_value(&spec).map_err(ApiError::internal)?;
        node.create(LogKind::Topic, &name, value, partitions, rf)
            .await?;
        let topic = app.broker.topic(&name)?;
        return Ok(json(StatusCode::CREATED, &describe(&app, &topic)));
    }
    let broker = Arc::clone(&app.broker);
    let topic = blocking(move || broker.create_topic(spec)).await?;
    Ok(json(StatusCode::CREATED, &describe(&app, &topic)))
}

/// Lists the topics the caller has a right on.
#[utoipa::path(
    get,
    path = "/v1/topics",
    tag = "topics",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The topics", body = TopicList),
        (status = 401, description = "No valid token", body = ErrorBody),
    )
)]
pub async fn list_topics(State(app): State<AppState>, caller: Caller) -> Response {
    let topics = app
        .broker
        .topics()
        .iter()
        .filter(|t| {
            app.broker
                .auth
                .can_see(&caller.0, Resource::Topic(t.name()))
        })
        .map(|t| summary(t))
        .collect();
    json(StatusCode::OK, &TopicList { topics })
}

/// Describes a topic: its settings and each partition's offsets.
#[utoipa::path(
    get,
    path = "/v1/topics/{topic}",
    tag = "topics",
    security(("bearer" = [])),
    params(("topic" = String, Path, description = "The topic")),
    responses(
        (status = 200, description = "The topic", body = TopicDescription),
        (status = 400, description = "Invalid name", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "No right on the topic", body = ErrorBody),
        (status = 404, description = "No such topic", body = ErrorBody),
    )
)]
pub async fn get_topic(
    State(app): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    names::validate("topic", &name)?;
    caller.require_visible(&app.broker, Resource::Topic(&name))?;
    let topic = app.broker.topic(&name)?;
    Ok(json(StatusCode::OK, &describe(&app, &topic)))
}

/// Deletes a topic with its subscriptions and messages.
#[utoipa::path(
    delete,
    path = "/v1/topics/{topic}",
    tag = "topics",
    security(("bearer" = [])),
    params(("topic" = String, Path, description = "The topic")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Invalid name", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "No admin right on the topic", body = ErrorBody),
        (status = 404, description = "No such topic", body = ErrorBody),
    )
)]
pub async fn delete_topic(
    State(app): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    names::validate("topic", &name)?;
    caller.require(&app.broker, Action::Admin, Resource::Topic(&name))?;
    if let Some(node) = app.cluster.node() {
        node.delete(LogKind::Topic, &name).await?;
    } else {
        let broker = Arc::clone(&app.broker);
        let deleted = name.clone();
        blocking(move || broker.delete_topic(&deleted)).await?;
    }
    app.metrics.forget(Kind::Topic, &name);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Produces messages. Each goes to the partition its key picks (in turn without a
/// key). With an `Idempotency-Key` seen on this topic within the window, nothing is
/// appended and the first answer comes back.
#[utoipa::path(
    post,
    path = "/v1/topics/{topic}/messages",
    tag = "topics",
    security(("bearer" = [])),
    params(
        ("topic" = String, Path, description = "The topic"),
        ("Idempotency-Key" = Option<String>, Header,
            description = "1-256 printable characters; a retry with the same key returns the first answer"),
    ),
    request_body = ProduceRequest<'_>,
    responses(
        (status = 200, description = "Stored", body = ProduceResponse),
        (status = 400, description = "Malformed request", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "No produce right on the topic", body = ErrorBody),
        (status = 404, description = "No such topic", body = ErrorBody),
        (status = 422, description = "Idempotency-Key used before for other messages", body = ErrorBody),
    )
)]
pub async fn produce(
    State(app): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    IdempotencyKey(key): IdempotencyKey,
    body: JsonBody,
) -> Result<Response, ApiError> {
    let (messages, req) =
        body.parse_messages(|req: &mut ProduceRequest<'_>| std::mem::take(&mut req.messages))?;
    let topic = lookup(&app, &caller, &name, Action::Produce)?;
    let acks: Acks = req.and_then(|req| req.acks).unwrap_or_default().into();
    let placement = match key {
        None => topic.produce(&messages, acks, None).await?,
        Some(key) => {
            let messages: Vec<NewMessage<'static>> =
                messages.into_iter().map(NewMessage::into_owned).collect();
            let topic = Arc::clone(&topic);
            body::to_completion(async move { topic.produce(&messages, acks, Some(&key)).await })
                .await?
        }
    };
    let durability = match acks {
        Acks::None => DurabilityOutcome::None,
        Acks::All | Acks::Leader => topic.spec.durability.into(),
    };
    Ok(body::json_bytes(
        StatusCode::OK,
        produce_answer(&placement, durability),
    ))
}

/// The JSON of a [`ProduceResponse`], written by hand: it is on every produce, and
/// serde spends more on its field names than on its numbers.
fn produce_answer(placement: &[(u32, Offset)], durability: DurabilityOutcome) -> Vec<u8> {
    let mut out = Vec::with_capacity(48 + 40 * placement.len());
    let mut entry = OffsetEntry::default();
    out.extend_from_slice(b"{\"offsets\":[");
    for (i, &(partition, offset)) in placement.iter().enumerate() {
        let text = entry.of(partition, offset);
        // The first entry without its leading comma.
        out.extend_from_slice(if i == 0 {
            text.get(1..).unwrap_or_default()
        } else {
            text
        });
    }
    out.extend_from_slice(b"],\"durability\":\"");
    out.extend_from_slice(durability.as_str().as_bytes());
    out.extend_from_slice(b"\"}");
    out
}

/// One entry of a produce answer, `,{"partition":<p>,"offset":<n>}`, kept written:
/// a request's messages come in runs of consecutive offsets of one partition, and
/// for the next offset of a run only its last digits change, in place.
#[derive(Debug, Default)]
struct OffsetEntry {
    text: Vec<u8>,
    /// Where the offset's digits start in `text`.
    digits_at: usize,
    /// The partition and offset `text` holds.
    holds: Option<(u32, Offset)>,
}

impl OffsetEntry {
    /// The entry for `offset` in `partition`.
    fn of(&mut self, partition: u32, offset: Offset) -> &[u8] {
        let next_in_run = self
            .holds
            .is_some_and(|(p, o)| p == partition && o.0.checked_add(1) == Some(offset.0));
        if !(next_in_run && self.count_up()) {
            let mut number = itoa::Buffer::new();
            self.text.clear();
            self.text.extend_from_slice(b",{\"partition\":");
            self.text
                .extend_from_slice(number.format(partition).as_bytes());
            self.text.extend_from_slice(b",\"offset\":");
            self.digits_at = self.text.len();
            self.text
                .extend_from_slice(number.format(offset.0).as_bytes());
            self.text.push(b'}');
        }
        self.holds = Some((partition, offset));
        &self.text
    }

    /// Adds one to the offset written in `text`; false, leaving `text` to be
    /// written anew, when that takes another digit (all nines).
    fn count_up(&mut self) -> bool {
        let end = self.text.len().saturating_sub(1);
        let Some(digits) = self.text.get_mut(self.digits_at..end) else {
            return false;
        };
        for digit in digits.iter_mut().rev() {
            if *digit == b'9' {
                *digit = b'0';
            } else {
                *digit += 1;
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hand_written_produce_answer_is_the_documented_one() {
        for durability in [
            DurabilityOutcome::Fsync,
            DurabilityOutcome::Interval,
            DurabilityOutcome::None,
        ] {
            let mut placement = vec![
                (0, Offset(0)),
                (0, Offset(1)),
                (2, Offset(u64::MAX)),
                (u32::MAX, Offset(7)),
                (u32::MAX, Offset(8)),
                (0, Offset(2)),
                (0, Offset(2)),
                (0, Offset(1)),
            ];
            // Runs that carry into every digit, and one that takes another digit.
            for start in [7, 97, 1_997, 9_999_999_997, u64::MAX - 2] {
                placement.extend((start..=start.saturating_add(4)).map(|o| (1, Offset(o))));
            }
            let text = produce_answer(&placement, durability);
            let parsed: ProduceResponse = serde_json::from_slice(&text).unwrap();
            let expected = ProduceResponse {
                offsets: placement
                    .iter()
                    .map(|&(partition, offset)| PartitionOffset {
                        partition,
                        offset: offset.0,
                    })
                    .collect(),
                durability,
            };
            assert_eq!(
                serde_json::to_value(&parsed).unwrap(),
                serde_json::to_value(&expected).unwrap()
            );
            let empty: ProduceResponse =
                serde_json::from_slice(&produce_answer(&[], durability)).unwrap();
            assert!(empty.offsets.is_empty());
        }
    }
}
