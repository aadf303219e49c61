//! A follower's copy loop for one partition: truncate what the leader does not have,
//! then fetch from the leader over a long-lived gRPC stream and append its batches
//! byte for byte, adopting its high watermark.

use std::sync::Arc;
use std::time::Duration;

use log_engine::{BatchHeader, Log, Offset, RecordBatch};
use proto::v1::replication_client::ReplicationClient;
use proto::v1::{EpochEndRequest, FetchRequest, PartitionRef, ReplicaError};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use super::node::{ClusterNode, PartitionKey};
use crate::partition::Partition;
use crate::replication::{FollowerState, FollowerStep, NodeId};

/// The most bytes of batches one fetch answer carries.
pub const FETCH_MAX_BYTES: u32 = 4 << 20;
/// How long the leader holds a fetch with nothing new.
pub const FETCH_MAX_WAIT_MS: u32 = 500;

/// Why a round of copying ended.
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("the leader's address is unknown")]
    NoAddress,
    #[error("cannot reach the leader: {0}")]
    Unreachable(String),
    #[error("the leader answered {0}")]
    Status(#[from] tonic::Status),
    #[error("the leader refused: {0:?}")]
    Refused(ReplicaError),
    #[error("the leader sent a bad batch: {0}")]
    BadBatch(String),
    #[error("storage: {0}")]
    Storage(String),
}

/// Copies the partition from `leader` in `epoch` until the task is aborted (the role
/// changed). Failures are retried with a growing pause.
pub async fn follow(
    node: Arc<ClusterNode>,
    key: PartitionKey,
    partition: Arc<Partition>,
    leader: NodeId,
    epoch: u32,
) {
    let mut backoff = Backoff::default();
    loop {
        match follow_once(&node, &key, &partition, leader, epoch).await {
            Ok(()) => backoff.reset(),
            Err(error) => backoff.failed(&node, &key, leader, "messages", error).await,
        }
    }
}

/// The pause between rounds of copying: 50 ms after a round that ended well,
/// doubling to 1 s with each failure.
struct Backoff(Duration);

impl Default for Backoff {
    fn default() -> Self {
        Backoff(Duration::from_millis(50))
    }
}

impl Backoff {
    fn reset(&mut self) {
        *self = Backoff::default();
    }

    /// Reports a failed round and waits before the next. A failure that says the
    /// leader moved asks for a read of the cluster state; one that will not pass by
    /// itself (a bad batch, a storage error) is logged as a warning, the others at
    /// debug level.
    async fn failed(
        &mut self,
        node: &ClusterNode,
        key: &PartitionKey,
        leader: NodeId,
        what: &str,
        error: FetchError,
    ) {
        match error {
            FetchError::BadBatch(_) | FetchError::Storage(_) => {
                tracing::warn!(%error, ?key, leader, what, "copying from the leader failed");
            }
            FetchError::Refused(_) | FetchError::NoAddress | FetchError::Unreachable(_) => {
                tracing::debug!(%error, ?key, leader, what, "copying from the leader stopped");
                node.nudge();
            }
            FetchError::Status(_) => {
                tracing::debug!(%error, ?key, leader, what, "copying from the leader stopped");
            }
        }
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(Duration::from_secs(1));
    }
}

/// A client of `leader`'s replication service.
fn client(node: &ClusterNode, leader: NodeId) -> Result<ReplicationClient<Channel>, FetchError> {
    let addr = node.grpc_addr(leader).ok_or(FetchError::NoAddress)?;
    let channel = node
        .peers
        .channel(&addr)
        .map_err(|e| FetchError::Unreachable(e.to_string()))?;
    Ok(ReplicationClient::new(channel))
}

fn partition_ref(key: &PartitionKey) -> PartitionRef {
    PartitionRef {
        kind: key.0.to_proto(),
        name: key.1.clone(),
        partition: key.2,
    }
}

fn check(error: i32) -> Result<(), FetchError> {
    match ReplicaError::try_from(error) {
        Ok(ReplicaError::None) => Ok(()),
        Ok(other) => Err(FetchError::Refused(other)),
        Err(_) => Err(FetchError::Refused(ReplicaError::Storage)),
    }
}

async fn follow_once(
    node: &ClusterNode,
    key: &PartitionKey,
    partition: &Partition,
    leader: NodeId,
    epoch: u32,
) -> Result<(), FetchError> {
    let mut client = client(node, leader)?;
    let log = &partition.log;

    let (mut follower, mut step) = FollowerState::new(
        leader,
        epoch,
        &partition.replica.epoch_history(),
        log.log_end_offset().0,
    );
    follower.set_log_start(log.log_start_offset().0);
    let from = loop {
        match step {
            FollowerStep::AskEpochEnd { epoch: asked } => {
                let answer = client
                    .epoch_end(EpochEndRequest {
                        partition: Some(partition_ref(key)),
                        epoch: asked,
                        current_leader_epoch: epoch,
                    })
                    .await?
                    .into_inner();
                check(answer.error)?;
                let leader_has =
                    (answer.end_offset != u64::MAX).then_some((answer.epoch, answer.end_offset));
                step = follower.on_epoch_end(
                    leader_has,
                    &partition.replica.epoch_history(),
                    log.log_end_offset().0,
                );
            }
            FollowerStep::Truncate { to } => {
                let end = log
                    .truncate_to(Offset(to))
                    .map_err(|e| FetchError::Storage(e.to_string()))?;
                partition
                    .replica
                    .truncated(end.0)
                    .map_err(|e| FetchError::Storage(e.to_string()))?;
                if end.0 < to {
                    tracing::warn!(?key, to, end = end.0, "truncated below the asked offset");
                }
                tracing::info!(?key, end = end.0, "truncated to the leader's log");
                step = follower.on_truncated(end.0);
            }
            FollowerStep::Fetch { from } => break from,
        }
    };

    let request = |fetch_offset: u64| FetchRequest {
        partition: Some(partition_ref(key)),
        replica_id: node.id(),
        leader_epoch: epoch,
        fetch_offset,
        max_bytes: FETCH_MAX_BYTES,
        max_wait_ms: FETCH_MAX_WAIT_MS,
        from_log_start: false,
    };
    let (tx, rx) = mpsc::channel(2);
    tx.send(request(from))
        .await
        .map_err(|_| FetchError::Unreachable("the request stream closed".into()))?;
    let mut answers = client.fetch(ReceiverStream::new(rx)).await?.into_inner();
    while let Some(answer) = answers.message().await? {
        if answer.error == ReplicaError::OffsetOutOfRange as i32
            && answer.log_start_offset > log.log_end_offset().0
        {
            // The leader's retention passed this copy's end: start over there.
            log.reset_to(Offset(answer.log_start_offset))
                .map_err(|e| FetchError::Storage(e.to_string()))?;
            tracing::info!(
                ?key,
                start = answer.log_start_offset,
                "copy started over at the leader's log start"
            );
            tx.send(request(answer.log_start_offset))
                .await
                .map_err(|_| FetchError::Unreachable("the request stream closed".into()))?;
            continue;
        }
        check(answer.error)?;
        let end = append_batches(log, &answer.batches, |header| {
            partition
                .replica
                .record_epoch(header.leader_epoch, header.base_offset.0)
                .map_err(|e| FetchError::Storage(e.to_string()))
        })?;
        partition.flush_hint.set();
        let hw = follower.on_fetched(answer.high_watermark, end);
        log.set_high_watermark(Offset(hw));
        tx.send(request(end))
            .await
            .map_err(|_| FetchError::Unreachable("the request stream closed".into()))?;
    }
    Ok(())
}

/// Appends the batches of a fetch answer at the log end, calling `each` before
/// every batch it appends; returns the new log end. Batches the log has already
/// are skipped.
fn append_batches(
    log: &Log,
    bytes: &[u8],
    mut each: impl FnMut(&BatchHeader) -> Result<(), FetchError>,
) -> Result<u64, FetchError> {
    let mut rest = bytes;
    while !rest.is_empty() {
        let header = BatchHeader::parse(rest).map_err(|e| FetchError::BadBatch(e.to_string()))?;
        let len = header.total_len();
        let (bytes, tail) = rest
            .split_at_checked(len)
            .ok_or_else(|| FetchError::BadBatch("a batch is cut short".into()))?;
        rest = tail;
        let end = log.log_end_offset();
        if header.next_offset() <= end {
            continue;
        }
        if header.base_offset != end {
            return Err(FetchError::BadBatch(format!(
                "batch at {} does not continue the log at {}",
                header.base_offset.0, end.0
            )));
        }
        let mut batch = RecordBatch::from_bytes(bytes.to_vec())
            .map_err(|e| FetchError::BadBatch(e.to_string()))?;
        each(&header)?;
        log.append_replica(&mut batch)
            .map_err(|e| FetchError::Storage(e.to_string()))?;
    }
    Ok(log.log_end_offset().0)
}

/// The base offset of the first batch in `bytes`, if there is one.
fn first_base(bytes: &[u8]) -> Option<u64> {
    BatchHeader::parse(bytes).ok().map(|h| h.base_offset.0)
}

/// Copies the state journal of a queue partition from `leader` in `epoch`, next to
/// its messages, until the task is aborted. The first answer starts the copy over
/// at the leader's journal start, so the copy is always a prefix of the leader's.
pub async fn follow_journal(
    node: Arc<ClusterNode>,
    key: PartitionKey,
    journal: Arc<Log>,
    leader: NodeId,
    epoch: u32,
) {
    let mut start_over = true;
    let mut backoff = Backoff::default();
    loop {
        match journal_once(&node, &key, &journal, leader, epoch, &mut start_over).await {
            Ok(()) => backoff.reset(),
            Err(error) => {
                backoff
                    .failed(&node, &key, leader, "queue journal", error)
                    .await;
            }
        }
    }
}

async fn journal_once(
    node: &ClusterNode,
    key: &PartitionKey,
    journal: &Log,
    leader: NodeId,
    epoch: u32,
    start_over: &mut bool,
) -> Result<(), FetchError> {
    let mut client = client(node, leader)?;
    let request = |fetch_offset: u64, from_log_start: bool| FetchRequest {
        partition: Some(PartitionRef {
            kind: proto::v1::LogKind::QueueState as i32,
            name: key.1.clone(),
            partition: key.2,
        }),
        replica_id: node.id(),
        leader_epoch: epoch,
        fetch_offset,
        max_bytes: FETCH_MAX_BYTES,
        max_wait_ms: FETCH_MAX_WAIT_MS,
        from_log_start,
    };
    let closed = || FetchError::Unreachable("the request stream closed".into());
    let (tx, rx) = mpsc::channel(2);
    tx.send(request(journal.log_end_offset().0, *start_over))
        .await
        .map_err(|_| closed())?;
    let mut answers = client.fetch(ReceiverStream::new(rx)).await?.into_inner();
    while let Some(answer) = answers.message().await? {
        if answer.error == ReplicaError::OffsetOutOfRange as i32 {
            // The leader trimmed below a snapshot past this copy's end.
            *start_over = true;
            tx.send(request(0, true)).await.map_err(|_| closed())?;
            continue;
        }
        check(answer.error)?;
        if *start_over {
            let start = first_base(&answer.batches).unwrap_or(answer.log_start_offset);
            journal
                .reset_to(Offset(start))
                .map_err(|e| FetchError::Storage(e.to_string()))?;
            *start_over = false;
        }
        let end = append_batches(journal, &answer.batches, |_| Ok(()))?;
        tx.send(request(end, false)).await.map_err(|_| closed())?;
    }
    Ok(())
}
