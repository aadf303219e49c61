//! The leader's side of replication: answers followers' fetches with its batches,
//! records how far each follower has copied, and tells where a leader epoch ends.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use log_engine::{Log, Offset, ReadBound};
use proto::v1::replication_server::Replication;
use proto::v1::{
    EpochEndRequest, EpochEndResponse, FetchRequest, FetchResponse, PartitionRef, ReplicaError,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::layout::LogKind;
use super::node::ClusterNode;
use super::replica::FetchRefusal;
use crate::partition::Partition;

/// The `Replication` gRPC service of a node.
#[derive(Clone, Debug)]
pub struct ReplicationService {
    node: Arc<ClusterNode>,
}

impl ReplicationService {
    /// The service of `node`.
    pub fn new(node: Arc<ClusterNode>) -> ReplicationService {
        ReplicationService { node }
    }

    fn partition(&self, at: Option<&PartitionRef>) -> Option<Arc<Partition>> {
        let at = at?;
        let kind = LogKind::from_proto(at.kind)?;
        self.node.local_partition(kind, &at.name, at.partition)
    }

    /// What a fetch reads: a partition's messages, or a queue partition's state
    /// journal (with the partition, whose leadership it shares).
    fn target(&self, at: Option<&PartitionRef>) -> Option<Target> {
        let at = at?;
        if at.kind == proto::v1::LogKind::QueueState as i32 {
            let partition = self
                .node
                .local_partition(LogKind::Queue, &at.name, at.partition)?;
            let journal = self.node.queue_journal(&at.name, at.partition)?;
            return Some(Target::Journal(partition, journal));
        }
        self.partition(Some(at)).map(Target::Data)
    }
}

/// What a fetch reads.
enum Target {
    /// A partition's messages.
    Data(Arc<Partition>),
    /// The state journal of a queue partition.
    Journal(Arc<Partition>, Arc<Log>),
}

fn refusal(error: ReplicaError, partition: Option<&Partition>) -> FetchResponse {
    FetchResponse {
        error: error as i32,
        leader_epoch: partition
            .and_then(|p| p.replica.leader_epoch())
            .unwrap_or(0),
        ..FetchResponse::default()
    }
}

/// Answers one fetch: the batches from its offset, waiting up to its `max_wait_ms`
/// for some when there are none yet.
async fn answer(target: &Target, follower: u32, request: &FetchRequest) -> FetchResponse {
    let now = super::node::now_ms();
    let (partition, log, noted) = match target {
        Target::Data(partition) => (
            partition,
            &partition.log,
            partition.replica.follower_fetched(
                &partition.log,
                follower,
                request.leader_epoch,
                request.fetch_offset,
                now,
            ),
        ),
        Target::Journal(partition, journal) => (
            partition,
            journal,
            partition
                .replica
                .journal_fetched(follower, request.leader_epoch, request.fetch_offset),
        ),
    };
    match noted {
        Ok(()) => {}
        Err(FetchRefusal::NotLeader) => return refusal(ReplicaError::NotLeader, Some(partition)),
        Err(FetchRefusal::FencedEpoch) => {
            return refusal(ReplicaError::FencedEpoch, Some(partition));
        }
        Err(FetchRefusal::UnknownEpoch) => {
            return refusal(ReplicaError::UnknownEpoch, Some(partition));
        }
    }
    let from = if request.from_log_start {
        log.log_start_offset()
    } else {
        Offset(request.fetch_offset)
    };
    if from < log.log_start_offset() || from > log.log_end_offset() {
        return FetchResponse {
            log_start_offset: log.log_start_offset().0,
            log_end_offset: log.log_end_offset().0,
            ..refusal(ReplicaError::OffsetOutOfRange, Some(partition))
        };
    }
    if from == log.log_end_offset() && request.max_wait_ms > 0 {
        let wait = Duration::from_millis(u64::from(request.max_wait_ms));
        let _ = tokio::time::timeout(wait, log.wait_for(from, ReadBound::LogEnd)).await;
    }
    let max_bytes = (request.max_bytes as usize).max(1);
    let batches = match log.read(from, max_bytes, ReadBound::LogEnd) {
        Ok(read) => read.into_bytes(),
        Err(error) => {
            tracing::warn!(%error, "reading for a follower failed");
            return refusal(ReplicaError::Storage, Some(partition));
        }
    };
    FetchResponse {
        error: ReplicaError::None as i32,
        leader_epoch: request.leader_epoch,
        high_watermark: log.high_watermark().0,
        log_start_offset: log.log_start_offset().0,
        log_end_offset: log.log_end_offset().0,
        batches,
    }
}

type FetchStream = Pin<Box<dyn Stream<Item = Result<FetchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Replication for ReplicationService {
    type FetchStream = FetchStream;

    async fn fetch(
        &self,
        request: Request<Streaming<FetchRequest>>,
    ) -> Result<Response<Self::FetchStream>, Status> {
        let mut requests = request.into_inner();
        let (tx, rx) = mpsc::channel(2);
        let service = self.clone();
        tokio::spawn(async move {
            let broker = Arc::clone(service.node.broker());
            loop {
                // A node that shuts down ends its fetch streams, so its gRPC server
                // can stop (followers reconnect to the next leader).
                let next = tokio::select! {
                    next = requests.message() => next,
                    () = broker.shutting_down() => break,
                };
                let request = match next {
                    Ok(Some(request)) => request,
                    Ok(None) => break,
                    Err(status) => {
                        tracing::debug!(%status, "a follower's fetch stream ended");
                        break;
                    }
                };
                let reply = match service.target(request.partition.as_ref()) {
                    Some(target) => answer(&target, request.replica_id, &request).await,
                    None => refusal(ReplicaError::UnknownPartition, None),
                };
                if tx.send(Ok(reply)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn epoch_end(
        &self,
        request: Request<EpochEndRequest>,
    ) -> Result<Response<EpochEndResponse>, Status> {
        let request = request.into_inner();
        let Some(partition) = self.partition(request.partition.as_ref()) else {
            return Ok(Response::new(EpochEndResponse {
                error: ReplicaError::UnknownPartition as i32,
                ..EpochEndResponse::default()
            }));
        };
        let error = match partition.replica.leader_epoch() {
            None => Some(ReplicaError::NotLeader),
            Some(mine) if request.current_leader_epoch < mine => Some(ReplicaError::FencedEpoch),
            Some(mine) if request.current_leader_epoch > mine => Some(ReplicaError::UnknownEpoch),
            Some(_) => None,
        };
        if let Some(error) = error {
            return Ok(Response::new(EpochEndResponse {
                error: error as i32,
                ..EpochEndResponse::default()
            }));
        }
        let end = partition.log.log_end_offset().0;
        let (epoch, end_offset) = partition
            .replica
            .epoch_end(request.epoch, end)
            .unwrap_or((0, u64::MAX));
        Ok(Response::new(EpochEndResponse {
            error: ReplicaError::None as i32,
            epoch,
            end_offset,
        }))
    }
}
