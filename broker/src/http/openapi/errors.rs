//! The error responses of the document. Each error code has a response of its own
//! under `components.responses`, named by the code. A handler's `#[utoipa::path]`
//! lists its success and client-error (4xx) answers; the statuses that come from
//! elsewhere are added to every operation here, by the rules the server follows:
//!
//! - 413 `payload_too_large` and 408 `request_timeout` wherever there is a request
//!   body;
//! - 503 `unavailable` wherever the cluster routing can refuse a request
//!   ([`route::needs_the_cluster`]), and `not_leader` too wherever it forwards one to
//!   a leader ([`route::addressed_log`]);
//! - the 500, 503 and 504 that an operation's own work can give ([`OWN_ERRORS`]).
//!
//! A status the handler lists itself is left as it is. 405 belongs to no operation
//! (an operation is a method the path accepts): it is only under
//! `components.responses`.

use axum::http::Method;
use utoipa::openapi::path::Operation;
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, Response, ResponseBuilder};

use super::super::route;
use crate::error::ErrorCode::{
    self, Internal, NotEnoughReplicas, NotLeader, PayloadTooLarge, RequestTimeout, Timeout,
    Unavailable,
};

/// A change to the cluster's metadata (ZooKeeper), waited for until it is applied.
const METADATA_WAITED: &[ErrorCode] = &[Internal, Unavailable, Timeout];
/// A change to the cluster's metadata, not waited for.
const METADATA: &[ErrorCode] = &[Internal, Unavailable];
/// A write of messages that the in-sync replicas must copy.
const REPLICATED_WRITE: &[ErrorCode] = &[Internal, NotEnoughReplicas, NotLeader, Timeout];
/// A change to a queue's state that the in-sync replicas must copy.
const REPLICATED_STATE: &[ErrorCode] = &[Internal, NotLeader, Timeout];

/// The server errors each operation's own work can give (storage, cluster metadata,
/// replication), by operation id (the handler's name). Routing and bodies add
/// theirs. Every operation has an entry, so that a new one is thought about.
pub const OWN_ERRORS: &[(&str, &[ErrorCode])] = &[
    ("issue_token", &[Internal]),
    ("create_topic", METADATA_WAITED),
    ("list_topics", &[]),
    ("get_topic", &[]),
    ("delete_topic", METADATA_WAITED),
    ("produce", REPLICATED_WRITE),
    ("create_subscription", METADATA),
    ("list_subscriptions", &[]),
    ("get_subscription", &[]),
    ("delete_subscription", METADATA),
    // Reads (a damaged batch is a 500); with auto_commit, a metadata write.
    ("pull", METADATA),
    ("commit", METADATA),
    ("offsets", &[]),
    ("seek", METADATA),
    ("create_queue", METADATA_WAITED),
    ("list_queues", &[]),
    ("get_queue", &[]),
    ("delete_queue", METADATA_WAITED),
    ("send", REPLICATED_WRITE),
    ("receive", REPLICATED_STATE),
    ("ack", REPLICATED_STATE),
    // Its journal write is not waited for.
    ("nack", &[Internal]),
    // Sends to the origin queues, and acks in the dead-letter queue.
    ("redrive", REPLICATED_WRITE),
    ("describe_cluster", &[]),
    ("topic_partitions", &[]),
    ("healthz", &[]),
    // Its 503 is its own answer, listed by the handler.
    ("readyz", &[]),
    ("metrics", &[Internal]),
    ("openapi", &[]),
    ("bench_noop", &[]),
];

/// When a client gets `code`, for the response's description.
fn meaning(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::BadRequest => {
            "malformed JSON, wrong types, unknown fields, invalid names, values out of \
             range, bad receipts"
        }
        ErrorCode::Unauthorized => {
            "no, malformed, expired or forged token; wrong user name or password"
        }
        ErrorCode::Forbidden => "the caller's rights do not allow it",
        ErrorCode::NotFound => "no such topic, queue, subscription, or route",
        ErrorCode::MethodNotAllowed => {
            "the path exists, the method does not (the `Allow` header lists the methods)"
        }
        RequestTimeout => "the request's body did not arrive in full within 60 s of its headers",
        ErrorCode::AlreadyExists => "a topic, queue or subscription of that name exists",
        PayloadTooLarge => {
            "the body is larger than the broker's `max_body_bytes`, or its messages \
             encode to a batch larger than the storage takes"
        }
        ErrorCode::IdempotencyKeyReused => {
            "an `Idempotency-Key` used within the window for a request with other messages"
        }
        Internal => "the broker failed (storage); the request may or may not have applied",
        NotEnoughReplicas => {
            "fewer replicas are in sync than `min_insync_replicas` asks for; the messages \
             may be stored on the leader: retry with the same `Idempotency-Key`"
        }
        Unavailable => {
            "in a cluster, this node is still joining, has no ZooKeeper session, or could \
             not change the cluster's metadata: retry, or ask another node"
        }
        NotLeader => {
            "in a cluster, the leader of the topic or queue changed or cannot be reached \
             now: retry (a produce or send with the same `Idempotency-Key`)"
        }
        Timeout => {
            "in a cluster, the in-sync replicas did not copy the change in time, or a \
             created or deleted topic or queue did not settle in time; it may still apply"
        }
    }
}

/// A response of `codes` (all of one status), each with its meaning.
fn response_of(codes: &[ErrorCode]) -> Response {
    let lines: Vec<String> = codes
        .iter()
        .map(|code| format!("`{code}`: {}.", meaning(*code)))
        .collect();
    ResponseBuilder::new()
        .description(lines.join(" "))
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
}

/// The error codes `operation` (`method` on the route `path`) can give beyond those
/// its handler lists.
fn codes_of(method: &Method, path: &str, operation: &Operation) -> Vec<ErrorCode> {
    let mut codes = Vec::new();
    if operation.request_body.is_some() {
        codes.extend([RequestTimeout, PayloadTooLarge]);
    }
    if route::needs_the_cluster(path) {
        codes.push(Unavailable);
    }
    if route::addressed_log(method, path).is_some() {
        codes.extend([Unavailable, NotLeader]);
    }
    let id = operation.operation_id.as_deref().unwrap_or_default();
    if let Some((_, own)) = OWN_ERRORS.iter().find(|(op, _)| *op == id) {
        codes.extend_from_slice(own);
    }
    let mut unique: Vec<ErrorCode> = Vec::with_capacity(codes.len());
    for code in codes {
        if !unique.contains(&code) {
            unique.push(code);
        }
    }
    unique
}

/// Adds the error responses: one per code under `components.responses`, and on each
/// operation those it can give that its handler does not list.
pub fn add(doc: &mut OpenApi) {
    let components = doc.components.get_or_insert_with(Default::default);
    for code in ErrorCode::ALL {
        components
            .responses
            .insert(code.as_str().to_owned(), response_of(&[code]).into());
    }
    for (path, item) in &mut doc.paths.paths {
        let operations = [
            (Method::GET, &mut item.get),
            (Method::PUT, &mut item.put),
            (Method::POST, &mut item.post),
            (Method::DELETE, &mut item.delete),
            (Method::OPTIONS, &mut item.options),
            (Method::HEAD, &mut item.head),
            (Method::PATCH, &mut item.patch),
            (Method::TRACE, &mut item.trace),
        ];
        for (method, operation) in operations {
            if let Some(operation) = operation {
                add_to(operation, &codes_of(&method, path, operation));
            }
        }
    }
}

/// Adds to `operation` a response per status of `codes` that it does not list: a
/// reference to the code's own response when one code has the status, else one
/// response naming them all.
fn add_to(operation: &mut Operation, codes: &[ErrorCode]) {
    let mut statuses: Vec<u16> = codes.iter().map(|c| c.status().as_u16()).collect();
    statuses.sort_unstable();
    statuses.dedup();
    for status in statuses {
        let key = status.to_string();
        if operation.responses.responses.contains_key(&key) {
            continue;
        }
        let of_status: Vec<ErrorCode> = codes
            .iter()
            .copied()
            .filter(|c| c.status().as_u16() == status)
            .collect();
        let response = match of_status.as_slice() {
            [one] => RefOr::Ref(Ref::from_response_name(one.as_str())),
            several => RefOr::T(response_of(several)),
        };
        operation.responses.responses.insert(key, response);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn every_operation_says_which_server_errors_its_own_work_gives() {
        let doc = super::super::document();
        let mut documented = BTreeSet::new();
        for item in doc.paths.paths.values() {
            let operations = [
                &item.get,
                &item.put,
                &item.post,
                &item.delete,
                &item.options,
                &item.head,
                &item.patch,
                &item.trace,
            ];
            for operation in operations.into_iter().flatten() {
                documented.insert(operation.operation_id.clone().unwrap_or_default());
            }
        }
        let listed: BTreeSet<String> = OWN_ERRORS.iter().map(|(op, _)| (*op).to_owned()).collect();
        assert_eq!(
            listed.len(),
            OWN_ERRORS.len(),
            "an operation is listed twice"
        );
        assert_eq!(listed, documented);
    }
}
