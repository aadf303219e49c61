//! `broker bench`: a load generator against a running broker.
//!
//! Workers (`--connections`, each with one HTTP/1.1 connection) send prebuilt
//! produce bodies (`--batch` messages of `--message-size` bytes) one request at
//! a time, until `--count` messages or `--duration` are done; consumers pull
//! through one subscription made for the run. It reports messages and
//! megabytes per second and request latency percentiles from HDR histograms.
//! `--mode noop` posts the same bodies to `POST /v1/bench/noop`, an endpoint
//! that reads the body and answers at once: the cost of HTTP, auth and JSON
//! with no storage, the baseline `--compare-noop` measures produce against.

mod conn;
mod report;
mod worker;
mod workload;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context as _;
use clap::{ArgGroup, Args, ValueEnum};
use reqwest::header::HeaderValue;
use serde_json::{Value, json};
use tokio::time::Instant;

use self::conn::Endpoint;
use self::report::{PhaseReport, Progress};
use self::worker::{ConsumeGoal, ConsumeJob, Counters, SendJob, Totals, Worked};
use self::workload::{Bodies, Budget, parse_duration};
use super::client::{self, Api, ConnectArgs};
use super::consume::{StartArg, create_subscription, is_conflict};
use super::password::{self, Purpose};
use super::produce::AcksArg;

/// The most concurrent connections.
pub const CONNECTIONS_MAX: u32 = 1024;

/// The longest consumers go on after the producers' `--duration` to catch up.
const CONSUMER_CATCH_UP: Duration = Duration::from_secs(30);

/// `broker bench`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("limit").required(true).multiple(true).args(["duration", "count"])))]
pub struct BenchArgs {
    /// The broker.
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Log in as this user for the run instead of using the saved login.
    #[arg(long)]
    pub user: Option<String>,
    /// The password of --user [default: read from stdin]. Prefer the
    /// environment variable: flags show in `ps`.
    #[arg(
        long,
        env = "BROKER_PASSWORD",
        hide_env_values = true,
        requires = "user"
    )]
    pub password: Option<String>,
    /// The topic to use; created when missing (which needs the admin right on
    /// it; an existing topic needs only produce or consume).
    #[arg(long, default_value = "bench")]
    pub topic: String,
    /// Partitions of the topic when it is created.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub partitions: u32,
    /// What to measure.
    #[arg(long, value_enum, default_value_t = Mode::Produce)]
    pub mode: Mode,
    /// Bytes per message value.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=(1 << 20)))]
    pub message_size: u64,
    /// Messages per produce request.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub batch: u64,
    /// Concurrent workers, each with its own connection (consumers as many
    /// again in `both` mode).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=i64::from(CONNECTIONS_MAX)))]
    pub connections: u32,
    /// How long to run: 10s, 500ms, 2m (at most 1h).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// How many messages to produce or consume.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_000_000_000_000))]
    pub count: Option<u64>,
    /// The `acks` of produce requests [default: the broker's].
    #[arg(long, value_enum)]
    pub acks: Option<AcksArg>,
    /// Run produce, then the no-op baseline with the same bodies, and compare.
    #[arg(long)]
    pub compare_noop: bool,
    /// With --compare-noop: alternate produce and no-op phases this many times, each
    /// for the whole --duration or --count, so that a shared machine's slow spells
    /// fall on both. The report sums each mode and adds every round's ratio and
    /// their median.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub rounds: u32,
    /// The most messages one consumer pull asks for.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub pull_max: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// What `broker bench` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Produce to the topic.
    Produce,
    /// Consume what the topic holds, from its start.
    Consume,
    /// Produce and consume at once (consumers read what the producers write).
    Both,
    /// Post produce bodies to the no-op endpoint: the HTTP baseline.
    Noop,
}

/// What a run measured, and the failure that ended it early, if any.
#[derive(Debug)]
struct Measured {
    /// The phases run, each with what it measured (up to the failure).
    phases: Vec<PhaseReport>,
    /// With `--compare-noop`: each complete round's throughput ratio.
    round_ratios: Vec<f64>,
    /// What ended the run early: an unreachable broker, a refused request.
    failure: Option<anyhow::Error>,
}

/// The settings of a run, shared by its phases.
struct Run {
    args: BenchArgs,
    api: Api,
    authorization: HeaderValue,
    bodies: Bodies,
}

/// Runs `broker bench`.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.compare_noop && args.mode != Mode::Produce {
        anyhow::bail!(
            "--compare-noop compares produce with the baseline: use it with --mode produce"
        );
    }
    if args.rounds > 1 && !args.compare_noop {
        anyhow::bail!("--rounds alternates produce with the baseline: use it with --compare-noop");
    }
    client::name("topic", &args.topic)?;
    let password = match (&args.user, &args.password) {
        (Some(user), None) => Some(password::read(
            &format!("Password for {user}: "),
            Purpose::Login,
        )?),
        (_, password) => password.clone(),
    };
    // Built before the clock starts: the client's JSON encoding is not measured.
    let acks = args.acks.map(AcksArg::as_str);
    let bodies = Bodies::build(args.batch, args.message_size as usize, args.count, acks)?;
    client::run(async move {
        let (api, token) = authenticate(&args, password).await?;
        let authorization = HeaderValue::from_str(&format!("Bearer {token}"))
            .context("the token is not a valid header value")?;
        let run = Run {
            args,
            api,
            authorization,
            bodies,
        };
        run.execute().await
    })
}

/// The API client and the token for the run: a fresh login with `--user`, else
/// the saved login or `BROKER_TOKEN`.
async fn authenticate(args: &BenchArgs, password: Option<String>) -> anyhow::Result<(Api, String)> {
    let saved = super::credentials::Credentials::load(&super::credentials::default_path()?)?;
    let env_token = std::env::var("BROKER_TOKEN").ok();
    let target = client::resolve(args.connect.url.as_deref(), env_token, &saved)?;
    let token = match (&args.user, password) {
        (Some(user), Some(password)) => {
            let anonymous = Api::new(&target.url, None)?;
            super::login::token(&anonymous, user, &password).await?.0
        }
        _ => {
            client::check_token(&target, client::now_unix_secs())?;
            target.token.map(|(token, _)| token).unwrap_or_default()
        }
    };
    Ok((Api::new(&target.url, Some(token.clone()))?, token))
}

impl Run {
    async fn execute(self) -> anyhow::Result<()> {
        let partitions = match self.args.mode {
            Mode::Noop => None,
            _ => Some(self.ensure_topic().await?),
        };
        if !self.args.json {
            eprintln!("{}", self.describe(partitions));
        }
        let measured = match self.args.mode {
            Mode::Produce if self.args.compare_noop => self.compare_rounds().await?,
            Mode::Produce => self.send_phase("produce").await?.into(),
            Mode::Noop => self.send_phase("noop").await?.into(),
            Mode::Consume => self.consume_only().await?.into(),
            Mode::Both => self.produce_and_consume().await?,
        };
        self.print(partitions, &measured)?;
        if let Some(failure) = measured.failure {
            return Err(
                failure.context("the run did not finish (the results printed cover it until then)")
            );
        }
        let errors: u64 = measured.phases.iter().map(|p| p.totals.errors).sum();
        if errors > 0 {
            anyhow::bail!("{errors} requests failed during the run");
        }
        Ok(())
    }

    /// Prints the results, as text or as one JSON object (which names the
    /// failure that ended the run early, if any, under `error`).
    fn print(&self, partitions: Option<u64>, measured: &Measured) -> anyhow::Result<()> {
        let mut results = serde_json::Map::new();
        let mut text = String::new();
        for phase in &measured.phases {
            results.insert(phase.phase.to_owned(), phase.to_json());
            text.push_str(&phase.to_text());
        }
        if let [produce, noop] = measured.phases.as_slice()
            && noop.phase == "noop"
        {
            let (json, sentence) = report::comparison(produce, noop, &measured.round_ratios);
            results.insert("produce_vs_noop".to_owned(), json);
            text.push_str(&sentence);
        }
        if let Some(failure) = &measured.failure {
            results.insert("error".to_owned(), super::error::sentence(failure).into());
        }
        if self.args.json {
            let mut object = self.settings_json(partitions);
            if let Value::Object(fields) = &mut object {
                fields.extend(results);
            }
            super::output::line(serde_json::to_string(&object)?)?;
        } else {
            super::output::text(&text)?;
        }
        Ok(())
    }

    /// The topic's partition count. The topic is created only when it does not
    /// exist: creating needs the admin right, and a user who may only produce
    /// and consume can bench a topic that exists.
    async fn ensure_topic(&self) -> anyhow::Result<u64> {
        let path = format!("/v1/topics/{}", self.args.topic);
        let topic = match self.api.get(&path).await {
            Ok(topic) => topic,
            Err(error) if has_status(&error, 404) => {
                let body = json!({ "name": self.args.topic, "partitions": self.args.partitions });
                match self.api.post("/v1/topics", &body).await {
                    Ok(_) => {}
                    // Created meanwhile by another run.
                    Err(error) if is_conflict(&error) => {}
                    Err(error) => return Err(error),
                }
                self.api.get(&path).await?
            }
            Err(error) => return Err(error),
        };
        Ok(super::topic::partition_count(&topic).unwrap_or(u64::from(self.args.partitions)))
    }

    /// One line on what is measured.
    fn describe(&self, partitions: Option<u64>) -> String {
        let a = &self.args;
        let target = match partitions {
            Some(p) => format!(
                "topic {:?} ({p} partition{})",
                a.topic,
                if p == 1 { "" } else { "s" }
            ),
            None => "the no-op endpoint".to_owned(),
        };
        let limit = match (a.count, a.duration) {
            (Some(count), Some(d)) => format!("{count} messages or {:.1} s", d.as_secs_f64()),
            (Some(count), None) => format!("{count} messages"),
            (None, Some(d)) => format!("{:.1} s", d.as_secs_f64()),
            (None, None) => String::new(),
        };
        format!(
            "bench {}: {target} at {}, {} connections, {} messages of {} B per request \
             ({} B bodies), acks {}, for {limit}",
            self.mode_name(),
            self.api.url(),
            a.connections,
            a.batch,
            a.message_size,
            self.bodies.body_bytes(),
            a.acks.map_or("as the broker defaults", AcksArg::as_str),
        )
    }

    fn mode_name(&self) -> &'static str {
        match self.args.mode {
            Mode::Produce => "produce",
            Mode::Consume => "consume",
            Mode::Both => "both",
            Mode::Noop => "noop",
        }
    }

    /// The run's settings, the head of the JSON report.
    fn settings_json(&self, partitions: Option<u64>) -> Value {
        let a = &self.args;
        json!({
            "url": self.api.url(),
            "mode": self.mode_name(),
            "topic": a.topic,
            "partitions": partitions,
            "connections": a.connections,
            "message_size": a.message_size,
            "batch": a.batch,
            "count": a.count,
            "duration_s": a.duration.map(|d| d.as_secs_f64()),
            "acks": a.acks.map(AcksArg::as_str),
        })
    }

    fn send_job(&self, phase: &'static str) -> anyhow::Result<SendJob> {
        let endpoint = Endpoint::new(self.api.url())?;
        let target = match phase {
            "noop" => endpoint.target("/v1/bench/noop")?,
            _ => endpoint.target(&format!("/v1/topics/{}/messages", self.args.topic))?,
        };
        Ok(SendJob {
            endpoint,
            target,
            authorization: self.authorization.clone(),
            bodies: self.bodies.clone(),
            message_size: self.args.message_size,
            budget: Budget::new(self.args.count, self.args.batch, self.args.duration),
            counters: Arc::new(Counters::default()),
            is_produce: phase == "produce",
            durability: OnceLock::new(),
        })
    }

    /// `--rounds` rounds of produce then the no-op baseline: each mode's phases
    /// merged, and each round's throughput ratio. A failure ends the rounds;
    /// what they measured until then is kept.
    async fn compare_rounds(&self) -> anyhow::Result<Measured> {
        let mut produce: Option<PhaseReport> = None;
        let mut noop: Option<PhaseReport> = None;
        let mut round_ratios = Vec::new();
        let mut failure = None;
        for _ in 0..self.args.rounds {
            let (round_produce, stopped) = self.send_phase("produce").await?;
            add_phase(&mut produce, round_produce.clone())?;
            if stopped.is_some() {
                failure = stopped;
                break;
            }
            let (round_noop, stopped) = self.send_phase("noop").await?;
            add_phase(&mut noop, round_noop.clone())?;
            if stopped.is_some() {
                failure = stopped;
                break;
            }
            round_ratios.push(report::throughput_ratio(&round_produce, &round_noop));
        }
        Ok(Measured {
            phases: produce.into_iter().chain(noop).collect(),
            round_ratios,
            failure,
        })
    }

    /// Produces (or posts to the no-op endpoint) with every connection; what
    /// was measured, and the failure that ended the phase early.
    async fn send_phase(&self, phase: &'static str) -> anyhow::Result<PhaseOutcome> {
        let job = Arc::new(self.send_job(phase)?);
        let progress = Progress::start(
            phase,
            self.args.count,
            self.args.duration,
            vec![(phase, Arc::clone(&job.counters))],
        );
        let started = Instant::now();
        let result = self.run_senders(&job).await;
        progress.finish();
        let worked = result?;
        let report = PhaseReport {
            phase,
            totals: worked.totals,
            elapsed: started.elapsed(),
            durability: job.durability.get().cloned(),
        };
        Ok((report, worked.failure))
    }

    async fn run_senders(&self, job: &Arc<SendJob>) -> anyhow::Result<Worked> {
        let mut workers = Vec::new();
        for _ in 0..self.args.connections {
            let totals = Totals::new()?;
            workers.push(tokio::spawn(worker::send(Arc::clone(job), totals)));
        }
        merge(workers).await
    }

    /// A subscription of its own for the run.
    async fn subscription(&self, start: StartArg) -> anyhow::Result<String> {
        let mut suffix = [0u8; 6];
        getrandom::fill(&mut suffix).map_err(|e| anyhow::anyhow!("no random bytes: {e}"))?;
        let name = format!(
            "bench-{}",
            suffix
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        create_subscription(&self.api, &self.args.topic, &name, Some(start)).await?;
        Ok(name)
    }

    fn consume_job(&self, sub: &str, goal: ConsumeGoal) -> anyhow::Result<ConsumeJob> {
        Ok(ConsumeJob {
            endpoint: Endpoint::new(self.api.url())?,
            path_before_max: format!(
                "/v1/topics/{}/subscriptions/{sub}/messages?wait_ms={}&max=",
                self.args.topic,
                worker::IDLE_WAIT_MS
            ),
            pull_max: self.args.pull_max,
            authorization: self.authorization.clone(),
            goal,
            counters: Arc::new(Counters::default()),
        })
    }

    async fn run_consumers(&self, job: &Arc<ConsumeJob>) -> anyhow::Result<Worked> {
        let mut workers = Vec::new();
        for _ in 0..self.args.connections {
            let totals = Totals::new()?;
            workers.push(tokio::spawn(worker::consume(Arc::clone(job), totals)));
        }
        merge(workers).await
    }

    /// Consumes what the topic holds, from its start, until `--count`, the
    /// duration, or the end. Running out of messages before `--count` is a
    /// failure: the count asked for was not measured.
    async fn consume_only(&self) -> anyhow::Result<PhaseOutcome> {
        let sub = self.subscription(StartArg::Earliest).await?;
        let goal = ConsumeGoal {
            target: AtomicU64::new(self.args.count.unwrap_or(u64::MAX)),
            reserved: AtomicU64::new(0),
            producers_done: AtomicBool::new(true),
            deadline: self.args.duration.map(|d| Instant::now() + d),
            budget: Budget::new(None, 1, None),
        };
        let job = Arc::new(self.consume_job(&sub, goal)?);
        let progress = Progress::start(
            "consume",
            self.args.count,
            self.args.duration,
            vec![("consume", Arc::clone(&job.counters))],
        );
        let started = Instant::now();
        let result = self.run_consumers(&job).await;
        progress.finish();
        self.delete_subscription(&sub).await;
        let Worked {
            totals,
            mut failure,
        } = result?;
        let timed_out = self.args.duration.is_some_and(|d| started.elapsed() >= d);
        if let Some(count) = self.args.count
            && failure.is_none()
            && !timed_out
            && totals.messages < count
        {
            failure = Some(anyhow::anyhow!(
                "consumed {} of the {count} messages asked for: topic {:?} holds no more \
                 (produce to it first, or use --mode both)",
                totals.messages,
                self.args.topic
            ));
        } else if totals.messages == 0 && failure.is_none() && !self.args.json {
            eprintln!(
                "note: topic {:?} had nothing to consume; try --mode both",
                self.args.topic
            );
        }
        let report = PhaseReport {
            phase: "consume",
            elapsed: consumed_for(&totals, started),
            totals,
            durability: None,
        };
        Ok((report, failure))
    }

    /// Producers and consumers at once; consumers read from the producers' first
    /// message and stop once they have read everything produced.
    async fn produce_and_consume(&self) -> anyhow::Result<Measured> {
        let sub = self.subscription(StartArg::Latest).await?;
        let send = Arc::new(self.send_job("produce")?);
        let goal = ConsumeGoal {
            target: AtomicU64::new(u64::MAX),
            reserved: AtomicU64::new(0),
            producers_done: AtomicBool::new(false),
            deadline: self
                .args
                .duration
                .map(|d| Instant::now() + d + CONSUMER_CATCH_UP),
            budget: Budget::new(None, 1, None),
        };
        let consume = Arc::new(self.consume_job(&sub, goal)?);
        let progress = Progress::start(
            "both",
            self.args.count,
            self.args.duration,
            vec![
                ("produce", Arc::clone(&send.counters)),
                ("consume", Arc::clone(&consume.counters)),
            ],
        );
        let started = Instant::now();
        let producing = async {
            let worked = self.run_senders(&send).await;
            let stopped = match &worked {
                Ok(worked) => worked.failure.is_some(),
                Err(_) => true,
            };
            let produced = worked.as_ref().map_or(0, |w| w.totals.messages);
            consume.goal.target.store(produced, Ordering::Relaxed);
            consume.goal.producers_done.store(true, Ordering::Relaxed);
            if stopped {
                consume.goal.budget.stop();
            }
            (worked, started.elapsed())
        };
        let consuming = async {
            let worked = self.run_consumers(&consume).await;
            let elapsed = worked
                .as_ref()
                .map_or_else(|_| started.elapsed(), |w| consumed_for(&w.totals, started));
            (worked, elapsed)
        };
        let ((produced, produce_elapsed), (consumed, consume_elapsed)) =
            tokio::join!(producing, consuming);
        progress.finish();
        self.delete_subscription(&sub).await;
        let (produced, consumed) = (produced?, consumed?);
        Ok(Measured {
            phases: vec![
                PhaseReport {
                    phase: "produce",
                    totals: produced.totals,
                    elapsed: produce_elapsed,
                    durability: send.durability.get().cloned(),
                },
                PhaseReport {
                    phase: "consume",
                    totals: consumed.totals,
                    elapsed: consume_elapsed,
                    durability: None,
                },
            ],
            round_ratios: Vec::new(),
            failure: produced.failure.or(consumed.failure),
        })
    }

    /// Removes the run's subscription; a failure is only reported.
    async fn delete_subscription(&self, sub: &str) {
        let path = format!("/v1/topics/{}/subscriptions/{sub}", self.args.topic);
        if let Err(error) = self.api.delete(&path).await {
            let error = super::error::sentence(&error);
            eprintln!("warning: could not delete the bench subscription {sub:?}: {error}");
        }
    }
}

/// Whether the broker answered `error` with this status.
fn has_status(error: &anyhow::Error, status: u16) -> bool {
    error
        .downcast_ref::<super::error::ApiFailure>()
        .is_some_and(|failure| failure.status == status)
}

/// How long consumers took: until their last message, not counting the empty
/// long poll that found the subscription drained.
fn consumed_for(totals: &Totals, started: Instant) -> Duration {
    totals
        .last_message_at
        .map_or_else(|| started.elapsed(), |last| last.duration_since(started))
}

/// A phase's report, and the failure that ended it early, if any.
type PhaseOutcome = (PhaseReport, Option<anyhow::Error>);

impl From<PhaseOutcome> for Measured {
    fn from((report, failure): PhaseOutcome) -> Measured {
        Measured {
            phases: vec![report],
            round_ratios: Vec::new(),
            failure,
        }
    }
}

/// Adds a round's phase to the phases of its mode so far.
fn add_phase(total: &mut Option<PhaseReport>, round: PhaseReport) -> anyhow::Result<()> {
    match total {
        Some(total) => total.merge(round),
        None => {
            *total = Some(round);
            Ok(())
        }
    }
}

/// Waits for every worker and merges what they measured; the first failure is
/// kept with the totals.
async fn merge(workers: Vec<tokio::task::JoinHandle<Worked>>) -> anyhow::Result<Worked> {
    let mut merged = Worked {
        totals: Totals::new()?,
        failure: None,
    };
    for worker in workers {
        match worker.await {
            Ok(one) => {
                merged.totals.merge(&one.totals)?;
                if let Some(failure) = one.failure {
                    merged.failure.get_or_insert(failure);
                }
            }
            Err(join) => {
                merged
                    .failure
                    .get_or_insert(anyhow::anyhow!("a bench worker failed: {join}"));
            }
        }
    }
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worked(messages: u64, failure: Option<&str>) -> anyhow::Result<Worked> {
        let mut totals = Totals::new()?;
        totals.messages = messages;
        totals.requests = 1;
        Ok(Worked {
            totals,
            failure: failure.map(|f| anyhow::anyhow!(f.to_owned())),
        })
    }

    #[tokio::test]
    async fn what_workers_measured_before_a_failure_is_kept() -> anyhow::Result<()> {
        let (a, b) = (
            worked(100, None)?,
            worked(50, Some("the broker went away"))?,
        );
        let workers = vec![
            tokio::spawn(async move { a }),
            tokio::spawn(async move { b }),
        ];
        let merged = merge(workers).await?;
        assert_eq!((merged.totals.messages, merged.totals.requests), (150, 2));
        let failure = merged.failure.map(|f| f.to_string());
        assert_eq!(failure.as_deref(), Some("the broker went away"));
        Ok(())
    }
}
