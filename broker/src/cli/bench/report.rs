//! What a bench phase measured, as text for people and as JSON for machines,
//! and the progress bar shown while it runs.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};
use tokio::time::Instant;

use super::worker::{Counters, Totals};

/// How often the progress bar is redrawn.
const PROGRESS_TICK: Duration = Duration::from_millis(200);

/// One phase's results.
#[derive(Debug, Clone)]
pub struct PhaseReport {
    /// `produce`, `noop` or `consume`.
    pub phase: &'static str,
    /// What the workers measured, merged.
    pub totals: Totals,
    /// From the first request to the last answer.
    pub elapsed: Duration,
    /// The `durability` the broker's produce answers state.
    pub durability: Option<Value>,
}

impl PhaseReport {
    /// Adds a later phase of the same mode: its counts and latencies, and its time.
    pub fn merge(&mut self, later: PhaseReport) -> anyhow::Result<()> {
        self.totals.merge(&later.totals)?;
        self.elapsed += later.elapsed;
        if self.durability.is_none() {
            self.durability = later.durability;
        }
        Ok(())
    }

    /// Messages per second.
    pub fn msgs_per_sec(&self) -> f64 {
        per_sec(self.totals.messages as f64, self.elapsed)
    }

    /// Value megabytes (10^6 bytes) per second.
    pub fn mb_per_sec(&self) -> f64 {
        per_sec(self.totals.value_bytes as f64 / 1e6, self.elapsed)
    }

    /// A latency quantile in microseconds (0 when nothing was measured).
    fn quantile_us(&self, quantile: f64) -> u64 {
        if self.totals.latency_us.is_empty() {
            return 0;
        }
        self.totals.latency_us.value_at_quantile(quantile)
    }

    /// The report as JSON: counts, rates, and latencies in microseconds.
    pub fn to_json(&self) -> Value {
        let latency = &self.totals.latency_us;
        let mut report = json!({
            "messages": self.totals.messages,
            "value_bytes": self.totals.value_bytes,
            "requests": self.totals.requests,
            "errors": self.totals.errors,
            "elapsed_s": round3(self.elapsed.as_secs_f64()),
            "msgs_per_sec": round3(self.msgs_per_sec()),
            "mb_per_sec": round3(self.mb_per_sec()),
            "latency_us": {
                "p50": self.quantile_us(0.5),
                "p99": self.quantile_us(0.99),
                "p999": self.quantile_us(0.999),
                "max": latency.max(),
                "mean": round3(if latency.is_empty() { 0.0 } else { latency.mean() }),
            },
        });
        if self.phase == "consume" {
            report["empty_pulls"] = self.totals.empty_pulls.into();
        }
        if let Some(durability) = &self.durability {
            report["durability"] = durability.clone();
        }
        report
    }

    /// The report as two lines of text.
    pub fn to_text(&self) -> String {
        let durability = match &self.durability {
            Some(Value::String(text)) => format!("; durability: {text}"),
            Some(other) => format!("; durability: {other}"),
            None if self.phase == "produce" => "; durability: not stated by the broker".to_owned(),
            None => String::new(),
        };
        let empty_pulls = match self.totals.empty_pulls {
            0 => String::new(),
            1 => ", 1 empty pull".to_owned(),
            n => format!(", {n} empty pulls"),
        };
        let latency = if self.totals.latency_us.is_empty() {
            "none measured".to_owned()
        } else {
            format!(
                "p50 {}  p99 {}  p99.9 {}  max {}",
                millis(self.quantile_us(0.5)),
                millis(self.quantile_us(0.99)),
                millis(self.quantile_us(0.999)),
                millis(self.totals.latency_us.max()),
            )
        };
        format!(
            "{:<8} {} messages in {:.2} s: {:.0} msg/s, {:.2} MB/s ({} requests{empty_pulls}, \
             {} errors){durability}\n\
             {:<8} request latency: {latency}\n",
            format!("{}:", self.phase),
            self.totals.messages,
            self.elapsed.as_secs_f64(),
            self.msgs_per_sec(),
            self.mb_per_sec(),
            self.totals.requests,
            self.totals.errors,
            "",
        )
    }
}

/// Produce's messages per second over the baseline's.
pub fn throughput_ratio(produce: &PhaseReport, noop: &PhaseReport) -> f64 {
    ratio(produce.msgs_per_sec(), noop.msgs_per_sec())
}

/// The median of some ratios (0 for none).
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// How produce compares with the no-op baseline that sent the same bodies, over
/// all rounds and (with more than one) round by round.
pub fn comparison(produce: &PhaseReport, noop: &PhaseReport, rounds: &[f64]) -> (Value, String) {
    let throughput = throughput_ratio(produce, noop);
    let p50 = ratio(
        produce.quantile_us(0.5) as f64,
        noop.quantile_us(0.5) as f64,
    );
    let p99 = ratio(
        produce.quantile_us(0.99) as f64,
        noop.quantile_us(0.99) as f64,
    );
    let mut json = json!({
        "throughput_ratio": round3(throughput),
        "p50_latency_ratio": round3(p50),
        "p99_latency_ratio": round3(p99),
    });
    let mut text = format!(
        "produce reaches {:.1}% of the no-op baseline's msg/s; its p50 latency is {p50:.1}x, \
         its p99 {p99:.1}x the baseline's\n",
        throughput * 100.0
    );
    if rounds.len() > 1 {
        json["round_throughput_ratios"] = rounds.iter().map(|&r| round3(r)).collect();
        json["median_round_throughput_ratio"] = round3(median(rounds)).into();
        let listed: Vec<String> = rounds.iter().map(|r| format!("{r:.2}")).collect();
        text.push_str(&format!(
            "round by round: {} (median {:.2})\n",
            listed.join(", "),
            median(rounds)
        ));
    }
    (json, text)
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

fn per_sec(amount: f64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 { amount / secs } else { 0.0 }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Microseconds as milliseconds with a precision that suits their size.
fn millis(us: u64) -> String {
    let ms = us as f64 / 1000.0;
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else if ms < 100.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

/// A progress bar on stderr while a phase runs (hidden when stderr is not a
/// terminal): against `--count` messages, else against `--duration`.
pub struct Progress {
    bar: ProgressBar,
    ticker: tokio::task::JoinHandle<()>,
}

impl Progress {
    /// Starts showing `counters` of the phase `label`.
    pub fn start(
        label: &'static str,
        count: Option<u64>,
        duration: Option<Duration>,
        counters: Vec<(&'static str, Arc<Counters>)>,
    ) -> Progress {
        let target = if std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let by_count = count.is_some();
        let len = count
            .or(duration.map(|d| d.as_millis() as u64))
            .unwrap_or(0);
        let bar = ProgressBar::with_draw_target(Some(len), target);
        if let Ok(style) = ProgressStyle::with_template(
            "{prefix:>8} {elapsed_precise} [{bar:30}] {percent:>3}% {msg}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(label);
        let shown = bar.clone();
        let started = Instant::now();
        let ticker = tokio::spawn(async move {
            let mut interval = tokio::time::interval(PROGRESS_TICK);
            loop {
                interval.tick().await;
                let elapsed = started.elapsed();
                let mut parts = Vec::new();
                let mut total = 0;
                for (name, counters) in &counters {
                    let messages = counters.messages.load(Ordering::Relaxed);
                    let errors = counters.errors.load(Ordering::Relaxed);
                    total = total.max(messages);
                    let rate = per_sec(messages as f64, elapsed);
                    let mut part = format!("{name} {messages} msgs {rate:.0}/s");
                    if errors > 0 {
                        part.push_str(&format!(" {errors} errors"));
                    }
                    parts.push(part);
                }
                let position = if by_count {
                    total
                } else {
                    elapsed.as_millis() as u64
                };
                shown.set_position(position);
                shown.set_message(parts.join(" | "));
            }
        });
        Progress { bar, ticker }
    }

    /// Removes the bar.
    pub fn finish(self) {
        self.ticker.abort();
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(phase: &'static str, messages: u64, secs: u64, latency_us: u64) -> PhaseReport {
        let mut totals = Totals::new().unwrap();
        totals.messages = messages;
        totals.value_bytes = messages * 100;
        totals.requests = messages / 100;
        totals.latency_us.record(latency_us).unwrap();
        PhaseReport {
            phase,
            totals,
            elapsed: Duration::from_secs(secs),
            durability: None,
        }
    }

    #[test]
    fn rates_and_latencies_are_reported_in_both_forms() {
        let produce = report("produce", 10_000, 2, 1500);
        assert_eq!(produce.msgs_per_sec(), 5000.0);
        assert_eq!(produce.mb_per_sec(), 0.5);
        let json = produce.to_json();
        assert_eq!(json["messages"], 10_000);
        assert_eq!(json["latency_us"]["p50"], 1500);
        let text = produce.to_text();
        assert!(text.contains("5000 msg/s, 0.50 MB/s"), "{text}");
        assert!(text.contains("p50 1.50 ms"), "{text}");
        assert!(text.contains("durability: not stated"), "{text}");
    }

    #[test]
    fn empty_pulls_are_counted_apart_from_timed_requests() {
        let mut totals = Totals::new().unwrap();
        totals.empty_pulls = 8;
        let consume = PhaseReport {
            phase: "consume",
            totals,
            elapsed: Duration::from_secs(1),
            durability: None,
        };
        let text = consume.to_text();
        assert!(
            text.contains("(0 requests, 8 empty pulls, 0 errors)"),
            "{text}"
        );
        assert!(text.contains("request latency: none measured"), "{text}");
        assert_eq!(consume.to_json()["empty_pulls"], 8);
    }

    #[test]
    fn produce_is_compared_with_the_baseline() {
        // Below 2048 µs the histogram is exact.
        let produce = report("produce", 10_000, 2, 2000);
        let noop = report("noop", 10_000, 1, 500);
        let (json, text) = comparison(&produce, &noop, &[0.5]);
        assert_eq!(json["throughput_ratio"], 0.5);
        assert_eq!(json["p50_latency_ratio"], 4.0);
        assert!(text.contains("50.0% of the no-op baseline"), "{text}");
        assert!(json.get("round_throughput_ratios").is_none(), "{json}");
    }

    #[test]
    fn rounds_are_merged_and_their_ratios_listed() {
        let mut produce = report("produce", 10_000, 2, 2000);
        produce.merge(report("produce", 20_000, 2, 2000)).unwrap();
        assert_eq!(produce.msgs_per_sec(), 7500.0);
        assert_eq!(produce.totals.latency_us.len(), 2);
        let noop = report("noop", 30_000, 2, 500);
        let (json, text) = comparison(&produce, &noop, &[0.3, 0.9, 0.5]);
        assert_eq!(json["throughput_ratio"], 0.5);
        assert_eq!(json["round_throughput_ratios"], json!([0.3, 0.9, 0.5]));
        assert_eq!(json["median_round_throughput_ratio"], 0.5);
        assert!(text.contains("0.30, 0.90, 0.50 (median 0.50)"), "{text}");
        assert_eq!(median(&[0.4, 0.2, 0.6, 0.8]), 0.5);
        assert_eq!(median(&[]), 0.0);
    }
}
