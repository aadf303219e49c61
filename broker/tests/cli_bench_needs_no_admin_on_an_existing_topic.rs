//! `broker bench` by a user who may only produce and consume: it measures a
//! topic that exists without trying to create it (which needs the admin
//! right), and `--mode consume --count N` on a topic holding fewer than N
//! messages fails with what it measured instead of reporting success.

mod cli_support;

use std::time::Duration;

use cli_support::{Sandbox, TestResult, eventually};

/// How long a running broker may take to notice a changed users file.
const RELOAD_WITHIN: Duration = Duration::from_secs(5);

#[test]
fn cli_bench_needs_only_produce_and_consume_on_an_existing_topic() -> TestResult {
    let mut sandbox = Sandbox::new()?;
    sandbox.start_server()?;
    sandbox
        .run(&["user", "add", "dan"], "dan-password\n")?
        .ok()?;
    for action in ["produce", "consume"] {
        let args = [
            "acl", "grant", "dan", "--topic", "dan.*", "--action", action,
        ];
        sandbox.run(&args, "")?.ok()?;
    }
    let admin = cli_support::ADMIN_PASSWORD;
    sandbox
        .run(&["login", "--user", "admin"], &format!("{admin}\n"))?
        .ok()?;
    for topic in ["dan.load", "dan.empty"] {
        sandbox.run(&["topic", "create", topic], "")?.ok()?;
    }

    let produce = [
        "bench", "--user", "dan", "--topic", "dan.load", "--count", "500", "--json",
    ];
    let bench = eventually(RELOAD_WITHIN, || {
        Ok(sandbox.run(&produce, "dan-password\n")?.ok()?)
    })?;
    let report: serde_json::Value = serde_json::from_str(bench.stdout.trim())?;
    assert_eq!(report["produce"]["messages"], 500, "{report}");

    let consume = [
        "bench",
        "--user",
        "dan",
        "--topic",
        "dan.empty",
        "--mode",
        "consume",
        "--count",
        "10",
        "--connections",
        "2",
        "--json",
    ];
    let empty = sandbox.run(&consume, "dan-password\n")?;
    assert_eq!(empty.status.code(), Some(1), "{empty:?}");
    let report: serde_json::Value = serde_json::from_str(empty.stdout.trim())?;
    assert_eq!(report["consume"]["messages"], 0, "{report}");
    assert_eq!(report["consume"]["requests"], 0, "{report}");
    assert!(
        report["consume"]["empty_pulls"].as_u64() >= Some(1),
        "{report}"
    );
    assert!(
        empty
            .stderr
            .contains("consumed 0 of the 10 messages asked for"),
        "{empty:?}"
    );

    let missing = [
        "bench", "--user", "dan", "--topic", "dan.new", "--count", "10",
    ];
    let refused = sandbox.run(&missing, "dan-password\n")?;
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert!(
        refused
            .stderr
            .contains("may not admin on topic \"dan.new\""),
        "creating a missing topic still needs the admin right: {refused:?}"
    );
    Ok(())
}
