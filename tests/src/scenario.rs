//! The frame around every scenario: the binary found (or built) before the clock
//! starts, a time bound on the scenario itself, and the brokers' output shown when
//! it fails.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::binary::broker_bin;
use crate::process::take_stashed_logs;

/// Runs `body`, the scenario `name`, within `limit`. Before the clock starts, the
/// `broker` binary is located (and built when needed, see [`crate::binary`]). When
/// the body fails or runs out of time, the output of every broker it started is
/// printed (the body's [`crate::BrokerProcess`]es stash it when dropped). Prints the
/// run time either way.
pub async fn scenario<F>(name: &str, limit: Duration, body: F) -> anyhow::Result<()>
where
    F: Future<Output = anyhow::Result<()>>,
{
    let bin = tokio::task::spawn_blocking(broker_bin).await??;
    println!("scenario {name}: broker binary {}", bin.display());
    take_stashed_logs();
    let started = Instant::now();
    let outcome = match tokio::time::timeout(limit, body).await {
        Ok(result) => result,
        Err(_) => Err(anyhow::anyhow!(
            "scenario {name} did not finish within {limit:?}"
        )),
    };
    let elapsed = started.elapsed();
    match &outcome {
        Ok(()) => println!("scenario {name}: passed in {:.2} s", elapsed.as_secs_f64()),
        Err(_) => {
            eprintln!(
                "scenario {name}: FAILED after {:.2} s",
                elapsed.as_secs_f64()
            );
            for logs in take_stashed_logs() {
                eprintln!("{logs}");
            }
        }
    }
    outcome
}
