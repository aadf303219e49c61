//! One operator and one user session against a real `broker serve`: a user
//! added to the running broker's data directory can log in within a second;
//! an operator can promote and demote it, but not demote the last admin; the
//! token is saved with mode 0600; topic create, produce from stdin, consume
//! with commit (resuming at the committed offsets), messages given as arguments
//! (`queue send jobs 'resize img-1'`) and bench all work through the saved login;
//! errors read as sentences, also for a produce with nothing to send to a missing
//! topic; and removing the user locks its token out.

mod cli_support;

use std::time::Duration;

use cli_support::{Sandbox, TestResult, eventually, mode};

/// How long a running broker may take to notice a changed users file: its
/// maintenance reloads it every second.
const RELOAD_WITHIN: Duration = Duration::from_secs(5);

#[test]
fn cli_operator_and_user_commands_work_against_a_running_broker() -> TestResult {
    let mut sandbox = Sandbox::new()?;
    sandbox.start_server()?;

    let added = sandbox
        .run(&["user", "add", "alice"], "alice-password\n")?
        .ok()?;
    assert!(added.stdout.contains("Added user \"alice\""), "{added:?}");
    for kind in ["--topic", "--queue"] {
        for action in ["admin", "produce", "consume"] {
            let args = ["acl", "grant", "alice", kind, "cli.*", "--action", action];
            sandbox.run(&args, "")?.ok()?;
        }
    }
    let acl = sandbox.run(&["acl", "list", "alice"], "")?.ok()?;
    assert_eq!(
        acl.stdout.lines().filter(|l| l.contains("cli.*")).count(),
        6,
        "{acl:?}"
    );

    let promoted = sandbox.run(&["user", "promote", "alice"], "")?.ok()?;
    assert_eq!(promoted.stdout, "\"alice\" is an admin user.\n");
    let listed = sandbox.run(&["acl", "list", "alice"], "")?.ok()?;
    assert!(listed.stdout.contains("everything (admin)"), "{listed:?}");
    sandbox.run(&["user", "demote", "alice"], "")?.ok()?;
    let last = sandbox.run(&["user", "demote", "admin"], "")?;
    assert_eq!(last.status.code(), Some(1));
    assert!(last.stderr.contains("last admin"), "{last:?}");

    let login = eventually(RELOAD_WITHIN, || {
        Ok(sandbox
            .run(&["login", "--user", "alice"], "alice-password\n")?
            .ok()?)
    })?;
    assert!(login.stdout.contains("Logged in"), "{login:?}");
    assert_eq!(mode(&sandbox.credentials())?, 0o600);

    let created = sandbox
        .run(&["topic", "create", "cli.orders", "--partitions", "2"], "")?
        .ok()?;
    assert_eq!(
        created.stdout,
        "Created topic \"cli.orders\" with 2 partitions.\n"
    );

    let produced = sandbox
        .run(
            &["produce", "cli.orders", "--key", "k"],
            "first\nsecond\nthird\n",
        )?
        .ok()?;
    assert_eq!(
        produced.stdout,
        "Sent 3 messages to topic \"cli.orders\".\n"
    );

    let consume = [
        "consume",
        "cli.orders",
        "--subscription",
        "s1",
        "--create",
        "--from",
        "earliest",
        "--commit",
    ];
    let consumed = sandbox.run(&consume, "")?.ok()?;
    assert_eq!(
        consumed.stdout, "first\nsecond\nthird\n",
        "one key keeps the order"
    );
    let again = sandbox
        .run(&["consume", "cli.orders", "--subscription", "s1"], "")?
        .ok()?;
    assert_eq!(
        again.stdout, "",
        "the subscription moved past what it printed"
    );
    let offsets = sandbox
        .run(&["sub", "offsets", "cli.orders", "s1", "--json"], "")?
        .ok()?;
    let offsets: serde_json::Value = serde_json::from_str(&offsets.stdout)?;
    let committed: u64 = offsets["offsets"]
        .as_array()
        .ok_or("no offsets")?
        .iter()
        .filter_map(|o| o["committed"].as_u64())
        .sum();
    assert_eq!(committed, 3, "{offsets}");

    // A reader that pulled without committing (and died, say) leaves the broker's
    // position past what it never handled; the next consumer starts at the commit.
    sandbox
        .run(&["produce", "cli.orders", "--key", "k"], "fourth\nfifth\n")?
        .ok()?;
    let peeked = sandbox
        .run(
            &[
                "consume",
                "cli.orders",
                "--subscription",
                "s1",
                "--max",
                "1",
            ],
            "",
        )?
        .ok()?;
    assert_eq!(peeked.stdout, "fourth\n");
    let resumed = sandbox
        .run(
            &["consume", "cli.orders", "--subscription", "s1", "--commit"],
            "",
        )?
        .ok()?;
    assert_eq!(
        resumed.stdout, "fourth\nfifth\n",
        "resumed at the committed offsets"
    );

    let missing = sandbox.run(&["topic", "describe", "cli.nope"], "")?;
    assert!(!missing.status.success());
    assert_eq!(
        missing.stderr,
        "error: topic \"cli.nope\" does not exist (404 not_found)\n"
    );
    let nothing_to_nowhere = sandbox.run(&["produce", "cli.nope"], "")?;
    assert_eq!(nothing_to_nowhere.status.code(), Some(1));
    assert_eq!(nothing_to_nowhere.stderr, missing.stderr);

    let argued = sandbox
        .run(&["produce", "cli.orders", "fourth", "fifth"], "ignored\n")?
        .ok()?;
    assert_eq!(argued.stdout, "Sent 2 messages to topic \"cli.orders\".\n");
    sandbox.run(&["queue", "create", "cli.jobs"], "")?.ok()?;
    let sent = sandbox
        .run(&["queue", "send", "cli.jobs", "resize img-1"], "")?
        .ok()?;
    assert_eq!(sent.stdout, "Sent 1 message to queue \"cli.jobs\".\n");
    let received = sandbox
        .run(&["queue", "receive", "cli.jobs", "--ack"], "")?
        .ok()?;
    assert_eq!(received.stdout, "resize img-1\n");

    let bench = sandbox
        .run(
            &["bench", "--topic", "cli.bench", "--count", "2000", "--json"],
            "",
        )?
        .ok()?;
    let report: serde_json::Value = serde_json::from_str(bench.stdout.trim())?;
    assert_eq!(report["produce"]["messages"], 2000, "{report}");
    assert_eq!(report["produce"]["errors"], 0, "{report}");
    assert!(
        report["produce"]["msgs_per_sec"].as_f64() > Some(0.0),
        "{report}"
    );
    assert!(
        report["produce"]["latency_us"]["p99"].as_u64() > Some(0),
        "{report}"
    );
    assert!(report["produce"].get("durability").is_some(), "{report}");
    let compared = sandbox
        .run(
            &[
                "bench",
                "--topic",
                "cli.bench",
                "--count",
                "1000",
                "--compare-noop",
                "--rounds",
                "2",
                "--json",
            ],
            "",
        )?
        .ok()?;
    let compared: serde_json::Value = serde_json::from_str(compared.stdout.trim())?;
    assert_eq!(compared["produce"]["messages"], 2000, "{compared}");
    assert_eq!(compared["noop"]["messages"], 2000, "{compared}");
    let rounds = &compared["produce_vs_noop"]["round_throughput_ratios"];
    assert_eq!(rounds.as_array().map(Vec::len), Some(2), "{compared}");
    assert!(
        compared["produce_vs_noop"]["median_round_throughput_ratio"].as_f64() > Some(0.0),
        "{compared}"
    );
    let described = sandbox
        .run(&["topic", "describe", "cli.bench", "--json"], "")?
        .ok()?;
    let described: serde_json::Value = serde_json::from_str(&described.stdout)?;
    let stored: u64 = described["partitions"]
        .as_array()
        .ok_or("no partitions")?
        .iter()
        .filter_map(|p| p["log_end_offset"].as_u64())
        .sum();
    assert_eq!(stored, 4000, "{described}");

    sandbox.run(&["user", "remove", "alice"], "")?.ok()?;
    let refused = eventually(RELOAD_WITHIN, || {
        let listed = sandbox.run(&["topic", "list"], "")?;
        if listed.status.success() {
            return Err("alice's token still works".into());
        }
        Ok(listed)
    })?;
    assert!(refused.stderr.contains("(401 unauthorized)"), "{refused:?}");
    assert!(refused.stderr.contains("hint: log in again"), "{refused:?}");

    let logout = sandbox.run(&["logout"], "")?.ok()?;
    assert!(
        logout.stdout.starts_with("Logged out of http://127.0.0.1:"),
        "{logout:?}"
    );
    assert!(!sandbox.credentials().exists());
    Ok(())
}
