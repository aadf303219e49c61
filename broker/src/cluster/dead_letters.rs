//! Dead letters across nodes: the leader of a queue moves its exhausted messages to
//! the dead-letter queue through the node that leads that queue, and a redrive sends
//! letters back through the node that leads their origin, so that a queue and its
//! dead-letter queue need not be led by one node.
//!
//! - [`RoutedQueue`]: a queue as the node that moves messages into it sees it; a
//!   [`DeadLetterSink`] and a [`RedriveTarget`] that act on this node's copy when
//!   it leads the queue (always, standalone) and otherwise call `mom.v1.DeadLetters`
//!   on the node that does.
//! - [`DeadLetterService`]: the other side, which acts on the copy it leads.
//!
//! A dead-letter call that fails after some letters were appended leaves them
//! appended; the queue tries again later and may append them twice (at least once,
//! as a crash between the append and the queue's record of it does on one node). A
//! redrive sends each letter with an idempotency key, so a retry sends it once.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use log_engine::TimestampMs;
use proto::v1::dead_letters_client::DeadLettersClient;
use proto::v1::dead_letters_server::{DeadLetters, DeadLettersServer};
use proto::v1::{
    AppendDeadLettersRequest, AppendDeadLettersResponse, Header, QueueMessage, RedriveRequest,
    RedriveResponse,
};
use tonic::{Request, Response, Status};

use super::forward::ENVELOPE_BYTES_MAX;
use super::layout::LogKind;
use super::node::ClusterNode;
use crate::error::{ApiError, ErrorCode};
use crate::message::NewMessage;
use crate::queue::{DeadLetter, DeadLetterSink, Queue, RedriveTarget};

/// How long one call to a queue's leader may take: it appends and waits for the
/// in-sync replicas, as an `acks=all` produce does. Short, since a receive waits for
/// its dead letters: a leader that does not answer in time is tried again after the
/// dead-letter pause, by when a frozen one has usually been replaced.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// A queue as seen from a node that moves messages into it: the dead-letter queue
/// from the leader of a queue, the origin from the leader of a dead-letter queue.
pub struct RoutedQueue {
    /// This node's copy of the queue.
    local: Arc<Queue>,
    /// The cluster member; `None` standalone, where the copy is the queue.
    node: Option<Arc<ClusterNode>>,
}

/// Where a queue is led from.
enum Leader<'a> {
    Here,
    /// Another node, reached through this one, at its gRPC address.
    At(&'a ClusterNode, String),
}

impl RoutedQueue {
    /// The queue `local` (this node's copy), reached through `node` in a cluster.
    pub fn new(local: Arc<Queue>, node: Option<Arc<ClusterNode>>) -> RoutedQueue {
        RoutedQueue { local, node }
    }

    fn leader(&self) -> Result<Leader<'_>, ApiError> {
        let Some(node) = &self.node else {
            return Ok(Leader::Here);
        };
        let name = self.local.name();
        let Some(home) = node.home(LogKind::Queue, name) else {
            return Err(ApiError::new(
                ErrorCode::NotLeader,
                format!("queue {name} has no leader now"),
            ));
        };
        if home == node.id() {
            return Ok(Leader::Here);
        }
        let addr = node.grpc_addr(home).ok_or_else(|| {
            ApiError::new(
                ErrorCode::NotLeader,
                format!("the leader of queue {name} (node {home}) is not registered"),
            )
        })?;
        Ok(Leader::At(node, addr))
    }

    /// The gRPC client of the leader at `addr`; only called in a cluster (see
    /// [`RoutedQueue::leader`]).
    fn client(
        &self,
        node: &ClusterNode,
        addr: &str,
    ) -> Result<DeadLettersClient<tonic::transport::Channel>, ApiError> {
        let limit = node.broker().config.max_body_bytes;
        let channel = node
            .peers
            .channel(addr)
            .map_err(|error| unreachable(self.local.name(), addr, &error.to_string()))?;
        let message_bytes_max = limit.saturating_add(ENVELOPE_BYTES_MAX);
        Ok(DeadLettersClient::new(channel)
            .max_encoding_message_size(message_bytes_max)
            .max_decoding_message_size(message_bytes_max))
    }

    /// Waits for `call`'s answer from the leader at `addr`, at most [`CALL_TIMEOUT`].
    async fn answer<T>(
        &self,
        addr: &str,
        call: impl Future<Output = Result<Response<T>, Status>>,
    ) -> Result<(), ApiError> {
        match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(status)) => Err(from_status(self.local.name(), addr, &status)),
            Err(_elapsed) => Err(unreachable(self.local.name(), addr, "no answer in time")),
        }
    }

    /// Sends `letters` to the leader at `addr`, in calls of at most the body limit
    /// each (at least one letter).
    async fn send(
        &self,
        node: &ClusterNode,
        addr: &str,
        letters: &[DeadLetter],
        now: TimestampMs,
    ) -> Result<(), ApiError> {
        let mut client = self.client(node, addr)?;
        for chunk in chunks(letters, node.broker().config.max_body_bytes) {
            let request = AppendDeadLettersRequest {
                queue: self.local.name().to_owned(),
                letters: chunk.iter().map(letter_to_proto).collect(),
                timestamp_ms: now,
            };
            self.answer(addr, client.append(request)).await?;
        }
        Ok(())
    }
}

impl DeadLetterSink for RoutedQueue {
    fn name(&self) -> &str {
        self.local.name()
    }

    fn append<'a>(
        &'a self,
        letters: &'a [DeadLetter],
        now: TimestampMs,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            match self.leader()? {
                Leader::Here => DeadLetterSink::append(&*self.local, letters, now).await,
                Leader::At(node, addr) => self.send(node, &addr, letters, now).await,
            }
        })
    }
}

impl RedriveTarget for RoutedQueue {
    fn send_back<'a>(
        &'a self,
        message: &'a NewMessage<'static>,
        key: &'a str,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            let (node, addr) = match self.leader()? {
                Leader::Here => return self.local.send_back(message, key).await,
                Leader::At(node, addr) => (node, addr),
            };
            let request = RedriveRequest {
                queue: self.local.name().to_owned(),
                message: Some(message_to_proto(message)),
                idempotency_key: key.to_owned(),
            };
            let mut client = self.client(node, &addr)?;
            self.answer(&addr, client.redrive(request)).await
        })
    }
}

/// Splits `letters` into runs of at most `limit` bytes of keys, values and headers
/// each; a letter larger than that goes alone.
fn chunks(letters: &[DeadLetter], limit: usize) -> Vec<&[DeadLetter]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, letter) in letters.iter().enumerate() {
        let size = letter_bytes(letter);
        if i > start && bytes + size > limit {
            out.extend(letters.get(start..i));
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    out.extend(letters.get(start..).filter(|rest| !rest.is_empty()));
    out
}

fn letter_bytes(letter: &DeadLetter) -> usize {
    let headers: usize = letter.headers.iter().map(|(k, v)| k.len() + v.len()).sum();
    letter.key.as_ref().map_or(0, Vec::len) + letter.value.len() + headers
}

fn letter_to_proto(letter: &DeadLetter) -> QueueMessage {
    QueueMessage {
        key: letter.key.clone(),
        value: letter.value.clone(),
        headers: letter
            .headers
            .iter()
            .map(|(name, value)| Header {
                name: name.clone(),
                value: value.clone(),
            })
            .collect(),
    }
}

fn letter_from_proto(letter: QueueMessage) -> DeadLetter {
    DeadLetter {
        key: letter.key,
        value: letter.value,
        headers: letter
            .headers
            .into_iter()
            .map(|h| (h.name, h.value))
            .collect(),
    }
}

/// A message sent back; its headers are strings, as every message a client sends.
fn message_to_proto(message: &NewMessage<'_>) -> QueueMessage {
    QueueMessage {
        key: message.key.as_ref().map(|k| k.as_bytes().to_vec()),
        value: message.value.to_vec(),
        headers: message
            .headers
            .iter()
            .map(|(name, value)| Header {
                name: name.to_string(),
                value: value.as_bytes().to_vec(),
            })
            .collect(),
    }
}

fn message_from_proto(message: QueueMessage) -> NewMessage<'static> {
    let text = |bytes: Vec<u8>| {
        String::from_utf8(bytes)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    };
    NewMessage {
        key: message.key.map(|k| text(k).into()),
        value: message.value.into(),
        headers: message
            .headers
            .into_iter()
            .map(|h| (h.name.into(), text(h.value).into()))
            .collect(),
    }
}

fn unreachable(name: &str, addr: &str, why: &str) -> ApiError {
    ApiError::new(
        ErrorCode::Unavailable,
        format!("the leader of queue {name} at {addr} cannot be reached: {why}"),
    )
}

/// An error of this node's copy of a queue as the gRPC status its caller turns back
/// into it ([`from_status`]).
fn to_status(error: ApiError) -> Status {
    match error.code {
        ErrorCode::NotLeader => Status::failed_precondition(error.message),
        ErrorCode::NotFound => Status::not_found(error.message),
        ErrorCode::BadRequest | ErrorCode::IdempotencyKeyReused => {
            Status::invalid_argument(error.message)
        }
        _ => Status::unavailable(error.message),
    }
}

/// The leader's refusal as this node's error; a not-found, not-leader or bad-request
/// answer keeps its meaning, anything else is a 503 to retry.
fn from_status(name: &str, addr: &str, status: &Status) -> ApiError {
    let code = match status.code() {
        tonic::Code::NotFound => ErrorCode::NotFound,
        tonic::Code::FailedPrecondition => ErrorCode::NotLeader,
        tonic::Code::InvalidArgument => ErrorCode::BadRequest,
        _ => ErrorCode::Unavailable,
    };
    ApiError::new(
        code,
        format!(
            "the call to the leader of queue {name} at {addr} failed: {}",
            status.message()
        ),
    )
}

/// The `DeadLetters` gRPC service of a node.
#[derive(Clone, Debug)]
pub struct DeadLetterService {
    node: Arc<ClusterNode>,
}

impl DeadLetterService {
    /// The service of `node`.
    pub fn new(node: Arc<ClusterNode>) -> DeadLetterService {
        DeadLetterService { node }
    }

    fn queue(&self, name: &str) -> Result<Arc<Queue>, Status> {
        self.node
            .broker()
            .find_queue(name)
            .ok_or_else(|| Status::not_found(format!("no queue {name:?} on this node")))
    }

    /// The gRPC service, taking messages of up to the body limit plus
    /// [`ENVELOPE_BYTES_MAX`].
    pub fn into_server(self) -> DeadLettersServer<DeadLetterService> {
        let limit = self.node.broker().config.max_body_bytes;
        DeadLettersServer::new(self)
            .max_decoding_message_size(limit.saturating_add(ENVELOPE_BYTES_MAX))
    }
}

#[tonic::async_trait]
impl DeadLetters for DeadLetterService {
    async fn append(
        &self,
        request: Request<AppendDeadLettersRequest>,
    ) -> Result<Response<AppendDeadLettersResponse>, Status> {
        let request = request.into_inner();
        let queue = self.queue(&request.queue)?;
        let letters: Vec<DeadLetter> = request.letters.into_iter().map(letter_from_proto).collect();
        tracing::debug!(queue = %request.queue, letters = letters.len(), "dead letters from another node");
        DeadLetterSink::append(&*queue, &letters, request.timestamp_ms)
            .await
            .map_err(to_status)?;
        Ok(Response::new(AppendDeadLettersResponse {}))
    }

    async fn redrive(
        &self,
        request: Request<RedriveRequest>,
    ) -> Result<Response<RedriveResponse>, Status> {
        let request = request.into_inner();
        let queue = self.queue(&request.queue)?;
        let message = request
            .message
            .map(message_from_proto)
            .ok_or_else(|| Status::invalid_argument("a redrive needs a message"))?;
        queue
            .send_back(&message, &request.idempotency_key)
            .await
            .map_err(to_status)?;
        Ok(Response::new(RedriveResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(bytes: usize) -> DeadLetter {
        DeadLetter {
            key: None,
            value: vec![0; bytes],
            headers: Vec::new(),
        }
    }

    #[test]
    fn letters_go_in_chunks_of_at_most_the_limit_and_a_large_one_alone() {
        let letters: Vec<DeadLetter> = [4, 4, 3, 10, 1, 1].map(letter).into();
        let sizes: Vec<Vec<usize>> = chunks(&letters, 8)
            .iter()
            .map(|c| c.iter().map(letter_bytes).collect())
            .collect();
        assert_eq!(sizes, [vec![4, 4], vec![3], vec![10], vec![1, 1]]);
        assert!(chunks(&[], 8).is_empty());
    }
}
