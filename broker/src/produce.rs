//! Appending a request's messages to the partitions their keys pick: shared by topic
//! produces and queue sends.

use std::sync::Arc;

use futures_util::future::join_all;
use log_engine::Offset;

use crate::error::ApiError;
use crate::idempotency::{Failed, Placement, Stored};
use crate::message::{self, NewMessage};
use crate::partition::Partition;
use crate::topic::Acks;

/// Appends `messages`, each to partition `route(message)`, skipping those a cut-short
/// earlier attempt already `stored`; returns every message's (partition, offset) in
/// request order. Partitions are appended to concurrently, one batch each, and
/// answered as `acks` says. When some partitions fail, the error carries what the
/// others stored, so a retry with the same idempotency key appends only the rest.
pub async fn append_routed(
    partitions: &[Arc<Partition>],
    messages: &[NewMessage],
    route: impl Fn(&NewMessage) -> u32,
    acks: Acks,
    idempotency_key: Option<&str>,
    stored: &Stored,
    now_ms: i64,
) -> Result<Placement, Failed> {
    let mut routed: Vec<Vec<(usize, &NewMessage)>> = vec![Vec::new(); partitions.len()];
    for (i, m) in messages.iter().enumerate() {
        if stored.contains_key(&i) {
            continue;
        }
        let slot = routed
            .get_mut(route(m) as usize)
            .ok_or_else(|| ApiError::internal("a message was routed to a missing partition"))?;
        slot.push((i, m));
    }
    let idempotency = idempotency_key.map(|key| (key, messages.len()));
    let appends = routed
        .iter()
        .zip(partitions)
        .filter(|(msgs, _)| !msgs.is_empty())
        .map(|(msgs, partition)| async move {
            let batch = message::encode_batch(msgs.iter().copied(), idempotency, &[], now_ms)?;
            let info = partition.append_acked(batch, acks).await?;
            Ok::<_, ApiError>((partition.id, info.base_offset, msgs))
        });
    let mut placement = vec![(0u32, Offset(0)); messages.len()];
    let mut now_stored = stored.clone();
    let mut first_error = None;
    for outcome in join_all(appends).await {
        match outcome {
            Ok((p, base, msgs)) => {
                for (j, (i, _)) in msgs.iter().enumerate() {
                    now_stored.insert(*i, (p, Offset(base.0 + j as u64)));
                }
            }
            Err(error) => {
                first_error.get_or_insert(error);
            }
        }
    }
    if let Some(error) = first_error {
        return Err(Failed {
            error,
            stored: now_stored,
        });
    }
    for (i, at) in now_stored {
        if let Some(slot) = placement.get_mut(i) {
            *slot = at;
        }
    }
    Ok(placement)
}
