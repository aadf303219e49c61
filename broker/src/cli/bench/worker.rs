//! The bench's workers: each owns one HTTP/1.1 connection ([`Connection`]) and
//! sends one request at a time, timing each from send to the answer's last byte
//! into its own HDR histogram; the histograms are merged when the phase ends.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hdrhistogram::Histogram;
use hyper::Uri;
use hyper::header::HeaderValue;
use serde::Deserialize;
use serde_json::Value;
use tokio::time::Instant;

use super::conn::{Connection, Endpoint};
use super::workload::{Bodies, Budget};
use crate::cli::error::ApiFailure;

/// The longest latency recorded exactly, in microseconds (a minute); longer
/// ones are recorded as this.
pub const LATENCY_US_MAX: u64 = 60_000_000;

/// Significant digits of the latency histograms.
const LATENCY_SIGNIFICANT_DIGITS: u8 = 3;

/// Failed requests (5xx, timeouts, broken connections) a worker tolerates
/// before it ends the run; a 4xx or an unreachable broker ends it at once.
const ERRORS_MAX: u64 = 100;

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a consumer's pull waits for messages. An empty answer after that
/// wait means the subscription is drained.
pub const IDLE_WAIT_MS: u64 = 1000;

/// Running totals every worker adds to; the progress bar reads them.
#[derive(Debug, Default)]
pub struct Counters {
    /// Messages acknowledged (sent) or received (consumed).
    pub messages: AtomicU64,
    /// Requests answered with success.
    pub requests: AtomicU64,
    /// Requests that failed.
    pub errors: AtomicU64,
}

/// What one worker measured.
#[derive(Debug, Clone)]
pub struct Totals {
    /// Request latencies in microseconds.
    pub latency_us: Histogram<u64>,
    /// Messages acknowledged or received.
    pub messages: u64,
    /// Message value bytes acknowledged or received.
    pub value_bytes: u64,
    /// Requests answered with success (for consumers: pulls that returned
    /// messages); each one's latency is in `latency_us`.
    pub requests: u64,
    /// Consumer pulls that waited out their long poll and returned nothing:
    /// idleness, not service, so they are counted apart and not timed.
    pub empty_pulls: u64,
    /// Requests that failed.
    pub errors: u64,
    /// When the last message arrived (consumers): a phase's end, not counting
    /// the empty long poll that tells a drained subscription.
    pub last_message_at: Option<Instant>,
}

impl Totals {
    /// Empty totals.
    pub fn new() -> anyhow::Result<Totals> {
        Ok(Totals {
            latency_us: Histogram::new_with_bounds(1, LATENCY_US_MAX, LATENCY_SIGNIFICANT_DIGITS)?,
            messages: 0,
            value_bytes: 0,
            requests: 0,
            empty_pulls: 0,
            errors: 0,
            last_message_at: None,
        })
    }

    /// Adds another worker's totals.
    pub fn merge(&mut self, other: &Totals) -> anyhow::Result<()> {
        self.latency_us.add(&other.latency_us)?;
        self.messages += other.messages;
        self.value_bytes += other.value_bytes;
        self.requests += other.requests;
        self.empty_pulls += other.empty_pulls;
        self.errors += other.errors;
        self.last_message_at = self.last_message_at.max(other.last_message_at);
        Ok(())
    }

    fn record_latency(&mut self, started: Instant) {
        let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.latency_us
            .saturating_record(us.clamp(1, LATENCY_US_MAX));
    }
}

/// What one worker measured, and the failure that ended its run early, if any:
/// what was measured before a failure is reported with it.
#[derive(Debug)]
pub struct Worked {
    /// The counts and latencies.
    pub totals: Totals,
    /// The failure that stopped the worker (and, through the budget, the others).
    pub failure: Option<anyhow::Error>,
}

/// What the sending workers of a phase share.
#[derive(Debug)]
pub struct SendJob {
    /// The broker.
    pub endpoint: Endpoint,
    /// The request target: the topic's messages, or the no-op baseline.
    pub target: Uri,
    /// `Bearer <token>`.
    pub authorization: HeaderValue,
    /// The prebuilt bodies.
    pub bodies: Bodies,
    /// Value bytes per message.
    pub message_size: u64,
    /// Requests left.
    pub budget: Budget,
    /// For the progress bar.
    pub counters: Arc<Counters>,
    /// Produce answers are checked (one offset per message) and their
    /// `durability` kept; no-op answers are not read.
    pub is_produce: bool,
    /// The `durability` of the first produce answer.
    pub durability: OnceLock<Value>,
}

/// Sends requests until the budget is spent or a failure ends the run, adding to
/// `totals`.
pub async fn send(job: Arc<SendJob>, mut totals: Totals) -> Worked {
    let failure = send_into(&job, &mut totals).await.err();
    if failure.is_some() {
        job.budget.stop();
    }
    Worked { totals, failure }
}

async fn send_into(job: &SendJob, totals: &mut Totals) -> anyhow::Result<()> {
    let mut connection = Connection::new(job.endpoint.clone(), REQUEST_TIMEOUT);
    let mut checked = !job.is_produce;
    while let Some(index) = job.budget.take() {
        let (body, messages) = job.bodies.get(index, job.budget.requests_total);
        let started = Instant::now();
        let answer = connection.post(&job.target, &job.authorization, body).await;
        match answer {
            Ok(bytes) => {
                totals.record_latency(started);
                if !checked {
                    check_produce_answer(job, &bytes, messages)?;
                    checked = true;
                }
                totals.messages += messages;
                totals.value_bytes += messages * job.message_size;
                totals.requests += 1;
                job.counters.messages.fetch_add(messages, Ordering::Relaxed);
                job.counters.requests.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => failed(&job.budget, &job.counters, totals, error)?,
        }
    }
    Ok(())
}

/// Counts a failed request. A failure no retry can cure (a 4xx, an unreachable
/// broker) or one too many ends the run with that error.
fn failed(
    budget: &Budget,
    counters: &Counters,
    totals: &mut Totals,
    error: anyhow::Error,
) -> anyhow::Result<()> {
    totals.errors += 1;
    counters.errors.fetch_add(1, Ordering::Relaxed);
    let curable = crate::cli::produce::worth_resending(&error)
        || error
            .downcast_ref::<ApiFailure>()
            .is_some_and(|f| f.status >= 500);
    if !curable || totals.errors >= ERRORS_MAX {
        budget.stop();
        return Err(error);
    }
    tracing::warn!(%error, "a bench request failed");
    Ok(())
}

/// The first produce answer: one offset per message, and the durability it
/// states.
fn check_produce_answer(job: &SendJob, bytes: &[u8], messages: u64) -> anyhow::Result<()> {
    let answer: Value = serde_json::from_slice(bytes)?;
    let offsets = answer
        .get("offsets")
        .and_then(Value::as_array)
        .map_or(0, Vec::len) as u64;
    if offsets != messages {
        job.budget.stop();
        anyhow::bail!("the broker acknowledged {messages} messages with {offsets} offsets");
    }
    if let Some(durability) = answer.get("durability") {
        let _ = job.durability.set(durability.clone());
    }
    Ok(())
}

/// What the consuming workers of a phase share.
#[derive(Debug)]
pub struct ConsumeJob {
    /// The broker.
    pub endpoint: Endpoint,
    /// The pull's path and query up to the value of `max`, which each pull
    /// appends.
    pub path_before_max: String,
    /// The most messages one pull asks for.
    pub pull_max: u64,
    /// `Bearer <token>`.
    pub authorization: HeaderValue,
    /// When to stop.
    pub goal: ConsumeGoal,
    /// For the progress bar.
    pub counters: Arc<Counters>,
}

/// When consumers stop: once they have received `target` messages, once the
/// producers are done and a pull finds nothing, or at the deadline.
///
/// Concurrent pulls reserve what they ask for, so that together they never ask
/// for more than `target`: a pull that got less gives the rest back, and the
/// last pull to answer always sees every reservation settled.
#[derive(Debug)]
pub struct ConsumeGoal {
    /// Messages to receive; `u64::MAX` while unknown (producers still running).
    pub target: AtomicU64,
    /// Messages received plus those asked for by pulls in flight.
    pub reserved: AtomicU64,
    /// Whether every message to expect has been produced.
    pub producers_done: AtomicBool,
    /// No new pull starts after this.
    pub deadline: Option<Instant>,
    /// Ends the run on a failure.
    pub budget: Budget,
}

impl ConsumeGoal {
    /// Whether time is up or the run was stopped.
    fn is_over(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d) || self.budget.is_over()
    }

    /// Reserves up to `max` messages for a pull; `None` when the target is
    /// covered by what was received and what is asked for already.
    fn reserve(&self, max: u64) -> Option<u64> {
        let target = self.target.load(Ordering::Relaxed);
        let before = self
            .reserved
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |reserved| {
                let left = target.saturating_sub(reserved);
                (left > 0).then(|| reserved + left.min(max))
            })
            .ok()?;
        Some(target.saturating_sub(before).min(max))
    }

    /// Gives back what a pull asked for and did not get.
    fn release(&self, unused: u64) {
        self.reserved.fetch_sub(unused, Ordering::Relaxed);
    }
}

/// A pull's answer, read only as far as counting needs; values borrowed.
#[derive(Deserialize)]
struct Pulled<'a> {
    #[serde(borrow)]
    messages: Vec<PulledMessage<'a>>,
}

#[derive(Deserialize)]
struct PulledMessage<'a> {
    #[serde(borrow)]
    value: Cow<'a, str>,
}

/// Pulls until the goal is reached or a failure ends the run, adding to
/// `totals`.
pub async fn consume(job: Arc<ConsumeJob>, mut totals: Totals) -> Worked {
    let failure = consume_into(&job, &mut totals).await.err();
    if failure.is_some() {
        job.goal.budget.stop();
    }
    Worked { totals, failure }
}

async fn consume_into(job: &ConsumeJob, totals: &mut Totals) -> anyhow::Result<()> {
    let mut connection = Connection::new(job.endpoint.clone(), REQUEST_TIMEOUT);
    while !job.goal.is_over() {
        let Some(want) = job.goal.reserve(job.pull_max) else {
            break;
        };
        let started = Instant::now();
        let target = job
            .endpoint
            .target(&format!("{}{want}", job.path_before_max))?;
        let bytes = match connection.get(target, &job.authorization).await {
            Ok(bytes) => bytes,
            Err(error) => {
                job.goal.release(want);
                failed(&job.goal.budget, &job.counters, totals, error)?;
                continue;
            }
        };
        let pulled: Pulled<'_> = serde_json::from_slice(&bytes)?;
        let count = pulled.messages.len() as u64;
        job.goal.release(want.saturating_sub(count));
        if count == 0 {
            // An empty answer waited out the long poll: its time is idleness,
            // not service, and stays out of the requests and latencies.
            totals.empty_pulls += 1;
            if job.goal.producers_done.load(Ordering::Relaxed) {
                break;
            }
            continue;
        }
        totals.requests += 1;
        job.counters.requests.fetch_add(1, Ordering::Relaxed);
        totals.record_latency(started);
        totals.last_message_at = Some(Instant::now());
        totals.messages += count;
        totals.value_bytes += pulled
            .messages
            .iter()
            .map(|m| m.value.len() as u64)
            .sum::<u64>();
        job.counters.messages.fetch_add(count, Ordering::Relaxed);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn goal(target: u64) -> ConsumeGoal {
        ConsumeGoal {
            target: AtomicU64::new(target),
            reserved: AtomicU64::new(0),
            producers_done: AtomicBool::new(true),
            deadline: None,
            budget: Budget::new(None, 1, None),
        }
    }

    #[test]
    fn concurrent_pulls_never_ask_for_more_than_the_target() {
        let goal = goal(2500);
        assert_eq!(goal.reserve(1000), Some(1000));
        assert_eq!(goal.reserve(1000), Some(1000));
        assert_eq!(goal.reserve(1000), Some(500));
        assert_eq!(goal.reserve(1000), None);
        goal.release(300);
        assert_eq!(goal.reserve(1000), Some(300));
        assert_eq!(goal.reserve(1000), None);
    }

    #[test]
    fn an_unknown_target_reserves_full_pulls_until_it_is_known() {
        let goal = goal(u64::MAX);
        assert_eq!(goal.reserve(1000), Some(1000));
        assert_eq!(goal.reserve(1000), Some(1000));
        goal.target.store(1500, Ordering::Relaxed);
        assert_eq!(goal.reserve(1000), None, "two pulls in flight cover it");
        goal.release(1000);
        assert_eq!(goal.reserve(1000), Some(500));
    }
}
