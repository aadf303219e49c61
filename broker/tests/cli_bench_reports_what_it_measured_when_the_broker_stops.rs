//! A broker that goes away in the middle of `broker bench` ends the run with an
//! error (exit 1), and the results measured until then are still printed.

mod cli_support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use cli_support::{Sandbox, TestResult};

/// How long the bench runs before the broker is stopped.
const RUN_BEFORE_STOP: Duration = Duration::from_millis(1500);

/// How long the bench may take to notice and report.
const REPORT_WITHIN: Duration = Duration::from_secs(60);

#[test]
fn cli_bench_reports_what_it_measured_when_the_broker_stops() -> TestResult {
    let mut sandbox = Sandbox::new()?;
    sandbox.start_server()?;
    let admin = cli_support::ADMIN_PASSWORD;
    sandbox
        .run(&["login", "--user", "admin"], &format!("{admin}\n"))?
        .ok()?;
    let mut bench = sandbox
        .command(&[
            "bench",
            "--duration",
            "10m",
            "--connections",
            "2",
            "--batch",
            "10",
            "--json",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    std::thread::sleep(RUN_BEFORE_STOP);
    sandbox.stop_server();
    let deadline = Instant::now() + REPORT_WITHIN;
    while bench.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = bench.kill();
            return Err("bench went on after the broker stopped".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = bench.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");
    let report: serde_json::Value = serde_json::from_str(stdout.trim())?;
    assert!(
        report["produce"]["messages"].as_u64() > Some(0),
        "what was measured is reported: {report}"
    );
    assert!(report["error"].is_string(), "{report}");
    assert!(stderr.contains("the run did not finish"), "{stderr}");
    Ok(())
}
