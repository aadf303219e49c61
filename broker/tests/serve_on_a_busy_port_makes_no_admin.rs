//! A start that fails makes no first admin: `broker serve` on a port already
//! taken exits with a sentence before it writes any user, so the one-time
//! password of `admin` is printed by the start that goes on to serve. Its log
//! on stderr, not a terminal, has no colour codes.

mod cli_support;

use cli_support::{Sandbox, TestResult};

#[test]
fn serve_on_a_busy_port_makes_no_admin_and_a_later_start_prints_its_password() -> TestResult {
    let mut sandbox = Sandbox::new()?;
    let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
    let listen = taken.local_addr()?.to_string();

    let mut busy = sandbox.command(&["serve", "--listen", &listen]);
    busy.env_remove("BROKER_ADMIN_PASSWORD");
    let outcome = cli_support::run(busy, "")?;
    assert_eq!(outcome.status.code(), Some(1), "{outcome:?}");
    assert!(
        outcome
            .stderr
            .contains(&format!("cannot listen on {listen}")),
        "{outcome:?}"
    );
    assert!(!outcome.stdout.contains("Created user"), "{outcome:?}");

    assert!(
        !sandbox.data_dir().join("users.json").exists(),
        "the failed start made the first admin"
    );
    drop(taken);

    let log = sandbox.root.path().join("serve.log");
    let log_file = std::fs::File::create(&log)?;
    let printed = sandbox.start_server_with(|command| {
        command
            .env_remove("BROKER_ADMIN_PASSWORD")
            .env("BROKER_LOG", "info")
            .stderr(log_file);
    })?;
    assert!(
        printed
            .iter()
            .any(|line| line.starts_with("Created user `admin` with password: ")),
        "{printed:?}"
    );
    let logged = std::fs::read_to_string(&log)?;
    assert!(logged.contains("INFO"), "{logged}");
    assert!(
        !logged.contains('\u{1b}'),
        "colour codes in a log file: {logged:?}"
    );
    Ok(())
}
