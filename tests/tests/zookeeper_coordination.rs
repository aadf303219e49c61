//! Invariant: `ZkCoordination` behaves as the coordination contract says against a
//! real ZooKeeper: the conformance suite passes with two sessions; a server restart
//! over the same data keeps the session (same generation, ephemeral node kept,
//! pending watches fire once so readers set them again); a server that forgot every
//! session (restarted without its data) makes the client report `Expired`, then a
//! new session with the next generation, on which ephemeral nodes can be created
//! again.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use broker::cluster::conformance::conformance;
use broker::cluster::coord::{Changed, CoordError, Coordination, CreateMode, SessionState};
use broker::cluster::zk::ZkCoordination;
use system_tests::{ZooKeeperProcess, scenario};
use tokio::sync::{broadcast, watch};

/// The session timeout the clients ask for.
const SESSION_TIMEOUT: Duration = Duration::from_secs(6);
/// The longest a client may take to notice that the server is gone.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// The longest a client may take to resume its session once the server is back.
const RECONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// The longest a client may take to learn that its session is gone and start a new
/// one: the server refuses the old session until the client has been away longer
/// than the session timeout.
const NEW_SESSION_TIMEOUT: Duration = Duration::from_secs(45);
/// The longest a pending watch may take to fire after a reconnection.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(5);
/// The chroot of the scenario's clients.
const CHROOT: &str = "/mom";
const MEMBER: &str = "/member";
const WATCHED: &str = "/watched";

async fn connect(server: &ZooKeeperProcess) -> anyhow::Result<Arc<ZkCoordination>> {
    ZkCoordination::connect(&server.connect_string(), CHROOT, SESSION_TIMEOUT)
        .await
        .context("connecting to ZooKeeper")
}

/// Waits until the session state satisfies `wanted`; returns it.
async fn wait_state(
    session: &mut watch::Receiver<SessionState>,
    what: &str,
    limit: Duration,
    wanted: impl FnMut(&SessionState) -> bool,
) -> anyhow::Result<SessionState> {
    let outcome = match tokio::time::timeout(limit, session.wait_for(wanted)).await {
        Ok(Ok(state)) => Ok(*state),
        Ok(Err(_)) => Err(format!(
            "the session state channel closed while waiting for {what}"
        )),
        Err(_) => Err(format!("no {what} within {limit:?}")),
    };
    outcome.map_err(|error| anyhow::anyhow!("{error}; the state is {:?}", *session.borrow()))
}

/// Records every session state a receiver sees, from now on.
fn record_states(mut session: watch::Receiver<SessionState>) -> Arc<Mutex<Vec<SessionState>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    tokio::spawn(async move {
        while session.changed().await.is_ok() {
            let state = *session.borrow_and_update();
            record.lock().unwrap_or_else(|p| p.into_inner()).push(state);
        }
    });
    seen
}

async fn expect_change(
    changes: &mut broadcast::Receiver<Changed>,
    path: &str,
) -> anyhow::Result<()> {
    let wait = async {
        loop {
            match changes.recv().await {
                Ok(changed) if changed.path == path => return Ok(()),
                Ok(_) => {}
                Err(error) => return Err(error),
            }
        }
    };
    match tokio::time::timeout(NOTIFY_TIMEOUT, wait).await {
        Ok(result) => result.context("the notification channel"),
        Err(_) => bail!("no notification for {path} within {NOTIFY_TIMEOUT:?}"),
    }
}

/// The server restarts over its data: the sessions resume.
async fn restart_keeps_the_session(
    server: &mut ZooKeeperProcess,
    a: &ZkCoordination,
    b: &ZkCoordination,
) -> anyhow::Result<()> {
    a.create(MEMBER, b"a".to_vec(), CreateMode::Ephemeral)
        .await?;
    b.create(WATCHED, b"w".to_vec(), CreateMode::Persistent)
        .await?;
    let mut changes = b.changes();
    ensure!(
        b.get(WATCHED, true).await?.is_some(),
        "{WATCHED} is missing"
    );

    let mut session = a.session();
    server.stop().await?;
    wait_state(&mut session, "Disconnected", DISCONNECT_TIMEOUT, |s| {
        *s == SessionState::Disconnected
    })
    .await?;
    let refused = a.get(MEMBER, false).await;
    ensure!(
        refused == Err(CoordError::NotConnected),
        "a request without a server: {refused:?}, expected NotConnected"
    );

    server.restart().await?;
    for (name, client) in [("a", a), ("b", b)] {
        let state = wait_state(&mut client.session(), "Connected", RECONNECT_TIMEOUT, |s| {
            s.is_connected()
        })
        .await
        .with_context(|| format!("session {name} after the restart"))?;
        ensure!(
            state == SessionState::Connected { generation: 1 },
            "session {name} is {state:?} after the restart, expected the same session"
        );
    }
    expect_change(&mut changes, WATCHED)
        .await
        .context("the pending watch after the reconnection")?;
    let member = b.get(MEMBER, false).await?;
    ensure!(
        member == Some((b"a".to_vec(), 0)),
        "the ephemeral node after the restart: {member:?}"
    );
    a.set(MEMBER, b"a2".to_vec(), 0)
        .await
        .context("a write after the restart")?;
    Ok(())
}

/// The server restarts without its data: the sessions expire and new ones start.
async fn fresh_server_expires_the_session(
    server: &mut ZooKeeperProcess,
    a: &ZkCoordination,
) -> anyhow::Result<()> {
    let seen = record_states(a.session());
    let mut session = a.session();
    server.stop().await?;
    wait_state(&mut session, "Disconnected", DISCONNECT_TIMEOUT, |s| {
        *s == SessionState::Disconnected
    })
    .await?;
    server.restart_with_fresh_data().await?;
    let state = wait_state(
        &mut session,
        "a new session",
        NEW_SESSION_TIMEOUT,
        |s| matches!(s, SessionState::Connected { generation } if *generation > 1),
    )
    .await?;
    ensure!(
        state == SessionState::Connected { generation: 2 },
        "after the expiry: {state:?}, expected generation 2"
    );
    let seen = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
    println!("session states seen: {seen:?}");
    let expired_at = seen
        .iter()
        .position(|s| *s == SessionState::Expired)
        .with_context(|| format!("Expired never reported; states seen: {seen:?}"))?;
    ensure!(
        !seen[expired_at..].contains(&SessionState::Connected { generation: 1 }),
        "the old session came back after Expired: {seen:?}"
    );

    // The server knows nothing: the chroot comes back with `ensure_path`.
    let create = a.create(MEMBER, b"a".to_vec(), CreateMode::Ephemeral).await;
    ensure!(
        matches!(create, Err(CoordError::NoNode(_))),
        "a create before the chroot exists again: {create:?}"
    );
    a.ensure_path("/")
        .await
        .context("creating the chroot again")?;
    a.create(MEMBER, b"a".to_vec(), CreateMode::Ephemeral)
        .await
        .context("the ephemeral node on the new session")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zookeeper_coordination() -> anyhow::Result<()> {
    scenario("zookeeper_coordination", Duration::from_secs(240), async {
        let mut server = ZooKeeperProcess::start().await?;
        let a = connect(&server).await?;
        let b = connect(&server).await?;
        for client in [&a, &b] {
            let state = *client.session().borrow();
            ensure!(
                state == SessionState::Connected { generation: 1 },
                "a new client is {state:?}"
            );
        }
        conformance(a.as_ref(), b.as_ref())
            .await
            .context("the conformance suite")?;
        restart_keeps_the_session(&mut server, &a, &b).await?;
        fresh_server_expires_the_session(&mut server, &a).await?;
        Ok(())
    })
    .await
}
