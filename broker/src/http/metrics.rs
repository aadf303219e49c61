//! Prometheus metrics (prometheus-client, OpenMetrics text at `GET /metrics`).
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `broker_messages_in_total` | counter | `kind` (`topic`/`queue`), `name` |
//! | `broker_messages_out_total` | counter | `kind`, `name` |
//! | `broker_bytes_in_total` | counter | `kind`, `name` (key + value + header bytes) |
//! | `broker_bytes_out_total` | counter | `kind`, `name` |
//! | `broker_http_request_duration_seconds` | histogram | `method` (or `other`), `route` (pattern, or `unmatched`) |
//! | `broker_http_responses_total` | counter | `method`, `route`, `status` |
//! | `broker_partition_log_start_offset` | gauge | `kind`, `name`, `partition` |
//! | `broker_partition_log_end_offset` | gauge | `kind`, `name`, `partition` |
//! | `broker_subscription_lag` | gauge | `topic`, `subscription` |
//! | `broker_queue_depth` | gauge | `queue` |
//! | `broker_queue_in_flight` | gauge | `queue` |
//! | `broker_queue_dead_lettered` | gauge | `queue` (since creation) |
//! | `broker_queue_dropped` | gauge | `queue` (since creation) |
//!
//! Messages and bytes in are what this node appended as the leader of each partition
//! (produced, sent, dead-lettered into a queue, redriven back into one), counted by
//! the partitions themselves ([`crate::partition::AppendedCounts`]): they grow with
//! the log end offsets, a retry answered from the idempotency window adds nothing,
//! and a follower's replicated copies are not counted. They and the gauges are read
//! when scraped, by a [`Collector`] that walks the topics and queues. The other
//! counters are updated once per request, never per message.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::future::BoxFuture;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::error::ApiError;
use crate::registry::Broker;

/// The content type of the OpenMetrics text format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Latency buckets: 100 µs doubling up to about 26 s (long polls end beyond).
const LATENCY_BUCKET_START_SECS: f64 = 0.0001;
const LATENCY_BUCKETS: u16 = 19;

/// A topic or a queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A topic.
    Topic,
    /// A queue.
    Queue,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Topic => "topic",
            Kind::Queue => "queue",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResourceLabels {
    kind: &'static str,
    name: String,
}

/// The labels of a request. Both come from fixed sets, whatever the client sends
/// ([`method_label`], route patterns or [`UNMATCHED_ROUTE`]), so that requests cannot
/// add series without bound.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: &'static str,
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResponseLabels {
    method: &'static str,
    route: String,
    status: u16,
}

/// The methods HTTP defines (RFC 9110, and PATCH), each its own `method` label.
const KNOWN_METHODS: [(Method, &str); 9] = [
    (Method::GET, "GET"),
    (Method::HEAD, "HEAD"),
    (Method::POST, "POST"),
    (Method::PUT, "PUT"),
    (Method::DELETE, "DELETE"),
    (Method::CONNECT, "CONNECT"),
    (Method::OPTIONS, "OPTIONS"),
    (Method::TRACE, "TRACE"),
    (Method::PATCH, "PATCH"),
];

/// The `method` label of every method not in [`KNOWN_METHODS`]: HTTP lets a client
/// invent any number of them (each answered 405 or 404).
const OTHER_METHOD: &str = "other";

/// The `method` label of a request: its method when HTTP defines it, else
/// [`OTHER_METHOD`].
fn method_label(method: &Method) -> &'static str {
    KNOWN_METHODS
        .iter()
        .find(|(known, _)| known == method)
        .map_or(OTHER_METHOD, |&(_, label)| label)
}

type HistogramFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(
        LATENCY_BUCKET_START_SECS,
        2.0,
        LATENCY_BUCKETS,
    ))
}

/// The broker's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    messages_out: Family<ResourceLabels, Counter>,
    bytes_out: Family<ResourceLabels, Counter>,
    request_seconds: HistogramFamily,
    responses: Family<ResponseLabels, Counter>,
}

impl Metrics {
    /// Metrics of `broker`, whose partitions, subscriptions and queues are read at
    /// each scrape.
    pub fn new(broker: Arc<Broker>) -> Metrics {
        let mut registry = Registry::with_prefix("broker");
        let messages_out = Family::<ResourceLabels, Counter>::default();
        let bytes_out = Family::<ResourceLabels, Counter>::default();
        let request_seconds = HistogramFamily::new_with_constructor(latency_histogram);
        let responses = Family::<ResponseLabels, Counter>::default();
        registry.register(
            "messages_out",
            "Messages pulled from a topic or received from a queue",
            messages_out.clone(),
        );
        registry.register(
            "bytes_out",
            "Key, value and header bytes of messages out",
            bytes_out.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to answer a request, per route and method",
            request_seconds.clone(),
        );
        registry.register(
            "http_responses",
            "Answers per route, method and status",
            responses.clone(),
        );
        registry.register_collector(Box::new(StorageCollector { broker }));
        Metrics {
            registry,
            messages_out,
            bytes_out,
            request_seconds,
            responses,
        }
    }

    fn labels(kind: Kind, name: &str) -> ResourceLabels {
        ResourceLabels {
            kind: kind.as_str(),
            name: name.to_owned(),
        }
    }

    /// Counts messages out.
    pub fn record_out(&self, kind: Kind, name: &str, messages: usize, bytes: u64) {
        if messages == 0 {
            return;
        }
        let labels = Self::labels(kind, name);
        self.messages_out
            .get_or_create(&labels)
            .inc_by(messages as u64);
        self.bytes_out.get_or_create(&labels).inc_by(bytes);
    }

    /// Forgets the counters out of a deleted topic or queue (the counters in go with
    /// its partitions).
    pub fn forget(&self, kind: Kind, name: &str) {
        let labels = Self::labels(kind, name);
        for family in [&self.messages_out, &self.bytes_out] {
            family.remove(&labels);
        }
    }

    fn observe(&self, method: &'static str, route: &str, status: StatusCode, seconds: f64) {
        let labels = RouteLabels {
            method,
            route: route.to_owned(),
        };
        self.request_seconds.get_or_create(&labels).observe(seconds);
        let labels = ResponseLabels {
            method: labels.method,
            route: labels.route,
            status: status.as_u16(),
        };
        self.responses.get_or_create(&labels).inc();
    }

    /// Every metric in the OpenMetrics text format.
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::with_capacity(16 << 10);
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// The `route` label of requests no route matched (answered by the router's
/// fallback: 404, or 400 for an empty name in a path).
const UNMATCHED_ROUTE: &str = "unmatched";

/// Middleware: times each request and counts its answer. It runs as a route layer,
/// where the matched route is known (405s included), and around the router's
/// fallback, where no route matched and the request counts as [`UNMATCHED_ROUTE`].
/// A layer of its own rather than `from_fn`, which clones the service below on
/// every request.
#[derive(Clone, Debug)]
pub struct TrackLayer(pub Arc<Metrics>);

impl<S> tower::Layer<S> for TrackLayer {
    type Service = Track<S>;

    fn layer(&self, inner: S) -> Track<S> {
        Track {
            inner,
            metrics: Arc::clone(&self.0),
        }
    }
}

/// The service [`TrackLayer`] wraps around another.
#[derive(Clone, Debug)]
pub struct Track<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S> tower::Service<Request> for Track<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let started = Instant::now();
        let method = method_label(req.method());
        let route = req.extensions().get::<MatchedPath>().cloned();
        let answer = self.inner.call(req);
        let metrics = Arc::clone(&self.metrics);
        Box::pin(async move {
            let response = answer.await?;
            let route = route.as_ref().map_or(UNMATCHED_ROUTE, MatchedPath::as_str);
            metrics.observe(
                method,
                route,
                response.status(),
                started.elapsed().as_secs_f64(),
            );
            Ok(response)
        })
    }
}

/// `GET /metrics`.
pub fn scrape(metrics: &Metrics) -> Response {
    match metrics.render() {
        Ok(text) => (
            [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))],
            text,
        )
            .into_response(),
        Err(e) => ApiError::internal(e).into_response(),
    }
}

/// Counters in and gauges, read from storage at scrape time.
#[derive(Debug)]
struct StorageCollector {
    broker: Arc<Broker>,
}

fn gauge<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    values: impl Iterator<Item = (L, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in values {
        let value = i64::try_from(value).unwrap_or(i64::MAX);
        ConstGauge::new(value).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

fn counter<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    values: impl Iterator<Item = (L, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in values {
        ConstCounter::new(value).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for StorageCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let topics = self.broker.topics();
        let queues = self.broker.queues();
        let appended: Vec<_> = topics
            .iter()
            .map(|t| (Kind::Topic, t.name(), t.partitions()))
            .chain(
                queues
                    .iter()
                    .map(|q| (Kind::Queue, q.name(), q.partitions())),
            )
            .map(|(kind, name, partitions)| {
                let labels = [
                    ("kind", kind.as_str().to_owned()),
                    ("name", name.to_owned()),
                ];
                let messages = partitions.iter().map(|p| p.appended.messages()).sum();
                let bytes = partitions.iter().map(|p| p.appended.payload_bytes()).sum();
                (labels, messages, bytes)
            })
            .collect();
        counter(
            &mut encoder,
            "messages_in",
            "Messages this node stored as leader: produced, sent, dead-lettered or redriven",
            appended
                .iter()
                .map(|(l, messages, _)| (l.clone(), *messages)),
        )?;
        counter(
            &mut encoder,
            "bytes_in",
            "Key, value and header bytes of messages in",
            appended.iter().map(|(l, _, bytes)| (l.clone(), *bytes)),
        )?;
        let partitions: Vec<(Kind, &str, u32, u64, u64)> = topics
            .iter()
            .flat_map(|t| t.partitions().iter().map(|p| (Kind::Topic, t.name(), p)))
            .chain(
                queues
                    .iter()
                    .flat_map(|q| q.partitions().iter().map(|p| (Kind::Queue, q.name(), p))),
            )
            .map(|(kind, name, p)| (kind, name, p.id, p.start().0, p.end().0))
            .collect();
        let labelled = |&(kind, name, id, start, end): &(Kind, &str, u32, u64, u64)| {
            let labels = vec![
                ("kind", kind.as_str().to_owned()),
                ("name", name.to_owned()),
                ("partition", id.to_string()),
            ];
            (labels, start, end)
        };
        gauge(
            &mut encoder,
            "partition_log_start_offset",
            "The first offset still stored",
            partitions
                .iter()
                .map(labelled)
                .map(|(l, start, _)| (l, start)),
        )?;
        gauge(
            &mut encoder,
            "partition_log_end_offset",
            "The offset the next message gets",
            partitions.iter().map(labelled).map(|(l, _, end)| (l, end)),
        )?;
        gauge(
            &mut encoder,
            "subscription_lag",
            "Messages after a subscription's committed offsets",
            topics.iter().flat_map(|t| {
                t.subscriptions().into_iter().map(|s| {
                    let labels = [
                        ("topic", t.name().to_owned()),
                        ("subscription", s.name.clone()),
                    ];
                    (labels, s.lag())
                })
            }),
        )?;
        let stats: Vec<_> = queues.iter().map(|q| (q.name(), q.stats())).collect();
        let per_queue = |pick: fn(&crate::queue::QueueStats) -> u64| {
            stats
                .iter()
                .map(move |(name, s)| ([("queue", (*name).to_owned())], pick(s)))
        };
        gauge(
            &mut encoder,
            "queue_depth",
            "Messages in a queue not yet done (acked, dead-lettered or dropped)",
            per_queue(|s| s.depth),
        )?;
        gauge(
            &mut encoder,
            "queue_in_flight",
            "Messages leased to consumers now",
            per_queue(|s| s.in_flight),
        )?;
        gauge(
            &mut encoder,
            "queue_dead_lettered",
            "Messages moved to the dead-letter queue since the queue was created",
            per_queue(|s| s.dead_lettered),
        )?;
        gauge(
            &mut encoder,
            "queue_dropped",
            "Messages dropped after their last delivery (no dead-letter queue)",
            per_queue(|s| s.dropped),
        )
    }
}
