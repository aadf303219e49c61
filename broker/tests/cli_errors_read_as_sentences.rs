//! Failures that need no running broker print one `error: ...` sentence on
//! stderr, nothing on stdout, and exit with 1: nothing listening, no login, a
//! URL without its scheme, a data directory that holds no broker (left
//! uncreated, by `user add` too) or that is a file, a missing config file (its
//! cause said once).

mod cli_support;

use cli_support::{Sandbox, TestResult};

#[test]
fn cli_failures_without_a_broker_are_sentences_and_exit_codes() -> TestResult {
    let sandbox = Sandbox::new()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let url = format!("http://127.0.0.1:{port}");

    let mut unreachable = sandbox.command(&["topic", "list", "--url", &url]);
    unreachable.env("BROKER_TOKEN", "any");
    let outcome = cli_support::run(unreachable, "")?;
    assert_eq!(outcome.status.code(), Some(1));
    assert_eq!(outcome.stdout, "");
    assert_eq!(
        outcome.stderr,
        format!("error: cannot reach the broker at {url}: is it running?\n")
    );

    let outcome = sandbox.run(&["topic", "list", "--url", &url], "")?;
    assert_eq!(outcome.status.code(), Some(1));
    assert_eq!(
        outcome.stderr,
        format!(
            "error: not logged in to {url}: run `broker login --url {url}` (or set BROKER_TOKEN)\n"
        )
    );

    let outcome = sandbox.run(&["topic", "list", "--url", "localhost:19101"], "")?;
    assert_eq!(outcome.status.code(), Some(1));
    assert_eq!(
        outcome.stderr,
        "error: \"localhost:19101\" has no scheme: did you mean http://localhost:19101?\n"
    );

    for user_command in [&["user", "list"][..], &["user", "add", "bob"]] {
        let outcome = sandbox.run(user_command, "bob-password\n")?;
        assert_eq!(outcome.status.code(), Some(1));
        assert!(outcome.stderr.contains("holds no broker"), "{outcome:?}");
        assert!(outcome.stderr.contains("--data-dir"), "{outcome:?}");
        assert!(
            outcome
                .stderr
                .contains(&sandbox.data_dir().display().to_string()),
            "it says where it looked: {outcome:?}"
        );
        assert_eq!(outcome.stdout, "", "no admin was made: {outcome:?}");
        assert!(
            !sandbox.data_dir().exists(),
            "a typo must not create a data directory"
        );
    }

    let file = sandbox.root.path().join("a-file");
    std::fs::write(&file, "")?;
    let file = file.display().to_string();
    let outcome = sandbox.run(
        &["serve", "--data-dir", &file, "--listen", "127.0.0.1:0"],
        "",
    )?;
    assert_eq!(outcome.status.code(), Some(1));
    assert_eq!(
        outcome.stderr,
        format!("error: {file} is not a directory\n")
    );

    let config = sandbox.root.path().join("nonexistent.toml");
    let config = config.display().to_string();
    let outcome = sandbox.run(&["serve", "--config", &config], "")?;
    assert_eq!(outcome.status.code(), Some(1));
    let enoent = std::io::Error::from_raw_os_error(libc::ENOENT).to_string();
    assert_eq!(outcome.stderr, format!("error: {config}: {enoent}\n"));

    let outcome = sandbox.run(&["bench", "--url", &url], "")?;
    assert_eq!(
        outcome.status.code(),
        Some(2),
        "clap refuses a bench without bounds"
    );
    Ok(())
}
