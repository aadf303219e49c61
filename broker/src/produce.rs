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
    messages: &[NewMessage<'_>],
    route: impl Fn(&NewMessage<'_>) -> u32,
    acks: Acks,
    idempotency_key: Option<&str>,
    stored: &Stored,
    now_ms: i64,
) -> Result<Placement, Failed> {
    let mut routed: Vec<Vec<(usize, &NewMessage<'_>)>> = vec![Vec::new(); partitions.len()];
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
            let batch = message::encode_batch(msgs, idempotency, &[], now_ms)?;
            let info = partition.append_acked(batch, acks).await?;
            Ok::<_, ApiError>((partition.id, info.base_offset, msgs))
        });
    let outcomes = join_all(appends).await;
    if outcomes.iter().any(Result::is_err) {
        let mut now_stored = stored.clone();
        now_stored.extend(outcomes.iter().flat_map(placed));
        let error = outcomes
            .into_iter()
            .find_map(Result::err)
            .unwrap_or_else(|| ApiError::internal("a failed append lost its error"));
        return Err(Failed {
            error,
            stored: now_stored,
        });
    }
    let mut placement = vec![(0u32, Offset(0)); messages.len()];
    let earlier = stored.iter().map(|(&i, &at)| (i, at));
    for (i, at) in earlier.chain(outcomes.iter().flat_map(placed)) {
        if let Some(slot) = placement.get_mut(i) {
            *slot = at;
        }
    }
    Ok(placement)
}

/// A partition's append: the partition, the first offset, and its messages with
/// their index in the request.
type Appended<'m, T> = (u32, Offset, &'m Vec<(usize, T)>);

/// Where a partition's append put each of its messages, by index in the request;
/// nothing for a failed append.
fn placed<'o, T>(
    outcome: &'o Result<Appended<'_, T>, ApiError>,
) -> impl Iterator<Item = (usize, (u32, Offset))> + 'o {
    let appended = outcome.as_ref().ok();
    appended.into_iter().flat_map(|&(partition, base, msgs)| {
        msgs.iter()
            .enumerate()
            .map(move |(j, (i, _))| (*i, (partition, Offset(base.0 + j as u64))))
    })
}
