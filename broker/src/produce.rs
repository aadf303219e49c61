//! Appending a request's messages to the partitions their keys pick: shared by topic
//! produces and queue sends.

use std::sync::Arc;

use futures_util::future::join_all;
use log_engine::Offset;

use crate::error::ApiError;
use crate::idempotency::{Failed, Placement, RequestKey, Stored};
use crate::message::{self, NewMessage};
use crate::partition::{Alone, Partition};
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
    idempotency_key: Option<RequestKey<'_>>,
    stored: &Stored,
    now_ms: i64,
) -> Result<Placement, Failed> {
    // Room for an even share each (all of them for one partition), so that the
    // usual request grows no list.
    let share = messages.len().div_ceil(partitions.len().max(1));
    let mut routed: Vec<Vec<(usize, &NewMessage<'_>)>> = (0..partitions.len())
        .map(|_| Vec::with_capacity(share))
        .collect();
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
    let alone = if routed.iter().filter(|msgs| !msgs.is_empty()).count() == 1 {
        Alone::Yes
    } else {
        Alone::No
    };
    let appends = routed
        .iter()
        .zip(partitions)
        .filter(|(msgs, _)| !msgs.is_empty())
        .map(|(msgs, partition)| async move {
            let batch = message::encode_batch(msgs, idempotency, &[], now_ms)
                .map_err(|error| (error, None))?;
            let payload_bytes = msgs.iter().map(|(_, m)| m.payload_bytes()).sum();
            match partition
                .append_acked(batch, payload_bytes, acks, alone)
                .await
            {
                Ok(info) => Ok((partition.id, info.base_offset, msgs)),
                Err(failed) => {
                    let appended = failed.appended.map(|i| (partition.id, i.base_offset, msgs));
                    Err((failed.error, appended))
                }
            }
        });
    let earlier_copied = copied(partitions, stored, acks);
    let (outcomes, earlier_copied) = futures_util::join!(join_all(appends), earlier_copied);
    if outcomes.iter().any(Result::is_err) || earlier_copied.is_err() {
        let mut now_stored = stored.clone();
        now_stored.extend(outcomes.iter().flat_map(placed));
        let error = outcomes
            .into_iter()
            .find_map(|outcome| outcome.err().map(|(error, _)| error))
            .or(earlier_copied.err())
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

/// With `acks=all`, waits until the messages an earlier attempt of the request
/// stored (`stored`, on this leader: a leader that takes over forgets them) are
/// copied as `acks=all` asks; that attempt may have failed after its append.
async fn copied(
    partitions: &[Arc<Partition>],
    stored: &Stored,
    acks: Acks,
) -> Result<(), ApiError> {
    if acks != Acks::All || stored.is_empty() {
        return Ok(());
    }
    let mut last: Vec<Option<Offset>> = vec![None; partitions.len()];
    for &(partition, offset) in stored.values() {
        if let Some(slot) = last.get_mut(partition as usize) {
            *slot = Some(slot.map_or(offset, |o| o.max(offset)));
        }
    }
    let waits = partitions
        .iter()
        .zip(last)
        .filter_map(|(p, last)| Some((p, last?)))
        .map(|(p, last)| p.wait_replicated(p.replica.leader_epoch(), last));
    join_all(waits).await.into_iter().collect()
}

/// A partition's append: the partition, the first offset, and its messages with
/// their index in the request.
type Appended<'m, T> = (u32, Offset, &'m Vec<(usize, T)>);

/// An append that failed: the error, and the append when it happened before the
/// failure (`acks=all` whose copies fell short).
type NotAcked<'m, T> = (ApiError, Option<Appended<'m, T>>);

/// Where a partition's append put each of its messages, by index in the request;
/// nothing for an append that failed before it stored anything.
fn placed<'o, T>(
    outcome: &'o Result<Appended<'_, T>, NotAcked<'_, T>>,
) -> impl Iterator<Item = (usize, (u32, Offset))> + 'o {
    let appended = match outcome {
        Ok(appended) | Err((_, Some(appended))) => Some(appended),
        Err((_, None)) => None,
    };
    appended.into_iter().flat_map(|&(partition, base, msgs)| {
        msgs.iter()
            .enumerate()
            .map(move |(j, (i, _))| (*i, (partition, Offset(base.0 + j as u64))))
    })
}
