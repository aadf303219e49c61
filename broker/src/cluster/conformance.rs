//! The behaviour every [`Coordination`] implementation must show, checked with two
//! sessions on the same tree. The in-memory tree runs it in a unit test, and the
//! system tests run it against a real ZooKeeper, so both answer the layers above
//! alike.
//!
//! Everything happens under [`BASE`], which must not exist when the suite starts and
//! is deleted when it passes.

use std::time::Duration;

use anyhow::{Context, bail, ensure};
use tokio::sync::broadcast;

use super::coord::{Changed, CoordError, Coordination, CreateMode};

/// The node the suite works under.
pub const BASE: &str = "/conformance";
/// The longest a watch may take to fire after the write that triggers it.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the suite listens to make sure a spent watch stays quiet.
const QUIET_PERIOD: Duration = Duration::from_millis(300);

/// Runs every check with `a` writing and `b` reading and watching; `a` and `b` must
/// be two sessions on the same tree, both connected. Fails on the first check that
/// does not hold, saying which.
pub async fn conformance(a: &dyn Coordination, b: &dyn Coordination) -> anyhow::Result<()> {
    let mut changes = b.changes();
    create_and_read(a, b).await.context("create and read")?;
    versions(a, b).await.context("versions")?;
    children_and_delete(a, b)
        .await
        .context("children and delete")?;
    data_watches(a, b, &mut changes)
        .await
        .context("data watches")?;
    child_watches(a, b, &mut changes)
        .await
        .context("child watches")?;
    ephemeral(a, b).await.context("ephemeral nodes")?;
    a.delete(BASE, None).await.context("deleting the base")?;
    ensure!(
        b.get(BASE, false).await?.is_none(),
        "the base is still there"
    );
    Ok(())
}

fn path(name: &str) -> String {
    format!("{BASE}/{name}")
}

async fn create_and_read(a: &dyn Coordination, b: &dyn Coordination) -> anyhow::Result<()> {
    match b.get(BASE, false).await? {
        None => {}
        Some(_) => bail!("{BASE} exists before the suite ran"),
    }
    let orphan = path("missing/child");
    let result = a.create(&orphan, Vec::new(), CreateMode::Persistent).await;
    ensure!(
        matches!(result, Err(CoordError::NoNode(_))),
        "create without a parent: {result:?}, expected NoNode"
    );
    a.create(BASE, b"base".to_vec(), CreateMode::Persistent)
        .await?;
    let read = b.get(BASE, false).await?;
    ensure!(
        read == Some((b"base".to_vec(), 0)),
        "the other session reads {read:?}, expected (\"base\", version 0)"
    );
    let again = a.create(BASE, Vec::new(), CreateMode::Persistent).await;
    ensure!(
        matches!(again, Err(CoordError::NodeExists(_))),
        "second create: {again:?}, expected NodeExists"
    );
    let deep = path("deep/er/still");
    a.ensure_path(&deep).await?;
    a.ensure_path(&deep).await.context("ensure_path twice")?;
    ensure!(
        b.get(&deep, false).await?.is_some(),
        "ensure_path left no node"
    );
    Ok(())
}

async fn versions(a: &dyn Coordination, b: &dyn Coordination) -> anyhow::Result<()> {
    let node = path("versioned");
    a.create(&node, b"v0".to_vec(), CreateMode::Persistent)
        .await?;
    let v1 = a.set(&node, b"v1".to_vec(), 0).await?;
    ensure!(v1 == 1, "the first set returned version {v1}, expected 1");
    let v2 = b.set(&node, b"v2".to_vec(), 1).await?;
    ensure!(v2 == 2, "the second set returned version {v2}, expected 2");
    let stale = a.set(&node, b"lost".to_vec(), 1).await;
    ensure!(
        matches!(stale, Err(CoordError::BadVersion(_))),
        "a set with a stale version: {stale:?}, expected BadVersion"
    );
    let read = a.get(&node, false).await?;
    ensure!(
        read == Some((b"v2".to_vec(), 2)),
        "after the stale set: {read:?}, expected (\"v2\", 2)"
    );
    let missing = a.set(&path("nothing"), Vec::new(), 0).await;
    ensure!(
        matches!(missing, Err(CoordError::NoNode(_))),
        "a set on a missing node: {missing:?}, expected NoNode"
    );
    Ok(())
}

async fn children_and_delete(a: &dyn Coordination, b: &dyn Coordination) -> anyhow::Result<()> {
    let list = path("list");
    a.create(&list, Vec::new(), CreateMode::Persistent).await?;
    ensure!(
        b.children(&list, false).await?.is_empty(),
        "a new node has children"
    );
    for name in ["c", "a", "b"] {
        a.create(
            &format!("{list}/{name}"),
            Vec::new(),
            CreateMode::Persistent,
        )
        .await?;
    }
    let names = b.children(&list, false).await?;
    ensure!(
        names == ["a", "b", "c"],
        "children {names:?}, expected a, b, c sorted"
    );
    let missing = b.children(&path("nothing"), false).await;
    ensure!(
        matches!(missing, Err(CoordError::NoNode(_))),
        "children of a missing node: {missing:?}, expected NoNode"
    );
    let not_empty = a.delete(&list, None).await;
    ensure!(
        matches!(not_empty, Err(CoordError::NotEmpty(_))),
        "delete with children: {not_empty:?}, expected NotEmpty"
    );
    let child = format!("{list}/a");
    a.set(&child, b"x".to_vec(), 0).await?;
    let stale = a.delete(&child, Some(0)).await;
    ensure!(
        matches!(stale, Err(CoordError::BadVersion(_))),
        "delete with a stale version: {stale:?}, expected BadVersion"
    );
    a.delete(&child, Some(1)).await?;
    let gone = a.delete(&child, None).await;
    ensure!(
        matches!(gone, Err(CoordError::NoNode(_))),
        "delete of a deleted node: {gone:?}, expected NoNode"
    );
    for name in ["b", "c"] {
        b.delete(&format!("{list}/{name}"), None).await?;
    }
    a.delete(&list, None).await?;
    for node in [path("deep/er/still"), path("deep/er"), path("deep")] {
        a.delete(&node, None).await?;
    }
    a.delete(&path("versioned"), None).await?;
    Ok(())
}

async fn data_watches(
    a: &dyn Coordination,
    b: &dyn Coordination,
    changes: &mut broadcast::Receiver<Changed>,
) -> anyhow::Result<()> {
    let node = path("watched");
    ensure!(
        b.get(&node, true).await?.is_none(),
        "the node exists too early"
    );
    a.create(&node, b"0".to_vec(), CreateMode::Persistent)
        .await?;
    expect_change(changes, &node).await.context("on create")?;

    let read = b.get(&node, true).await?;
    ensure!(
        read == Some((b"0".to_vec(), 0)),
        "read {read:?} after create"
    );
    a.set(&node, b"1".to_vec(), 0).await?;
    expect_change(changes, &node).await.context("on set")?;
    // The watch is spent: the next write goes unnoticed until b reads again.
    a.set(&node, b"2".to_vec(), 1).await?;
    expect_quiet(changes, &node).await.context("one-shot")?;

    ensure!(b.get(&node, true).await?.is_some(), "the node vanished");
    a.delete(&node, None).await?;
    expect_change(changes, &node).await.context("on delete")?;
    Ok(())
}

async fn child_watches(
    a: &dyn Coordination,
    b: &dyn Coordination,
    changes: &mut broadcast::Receiver<Changed>,
) -> anyhow::Result<()> {
    let kid = path("kid");
    b.children(BASE, true).await?;
    a.create(&kid, Vec::new(), CreateMode::Persistent).await?;
    expect_change(changes, BASE)
        .await
        .context("on a new child")?;

    // A data write under the node is not a change of the list.
    b.children(BASE, true).await?;
    a.set(&kid, b"data".to_vec(), 0).await?;
    expect_quiet(changes, BASE)
        .await
        .context("data of a child")?;
    a.delete(&kid, None).await?;
    expect_change(changes, BASE)
        .await
        .context("on a removed child")?;
    Ok(())
}

async fn ephemeral(a: &dyn Coordination, b: &dyn Coordination) -> anyhow::Result<()> {
    let node = path("member");
    a.create(&node, b"a".to_vec(), CreateMode::Ephemeral)
        .await?;
    let read = b.get(&node, false).await?;
    ensure!(
        read == Some((b"a".to_vec(), 0)),
        "the other session reads {read:?}"
    );
    let names = b.children(BASE, false).await?;
    ensure!(
        names == ["member"],
        "children {names:?}, expected the member"
    );
    let under = a
        .create(&format!("{node}/child"), Vec::new(), CreateMode::Persistent)
        .await;
    ensure!(
        matches!(under, Err(CoordError::Other(_))),
        "a child of an ephemeral node: {under:?}, expected an error"
    );
    a.delete(&node, None).await?;
    Ok(())
}

/// Waits for a notification about `path`, skipping others.
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
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => bail!("notification channel: {error}"),
        Err(_) => bail!("no notification for {path} within {NOTIFY_TIMEOUT:?}"),
    }
}

/// Fails if a notification about `path` arrives within [`QUIET_PERIOD`].
async fn expect_quiet(
    changes: &mut broadcast::Receiver<Changed>,
    path: &str,
) -> anyhow::Result<()> {
    match tokio::time::timeout(QUIET_PERIOD, expect_change(changes, path)).await {
        Err(_) => Ok(()),
        Ok(Ok(())) => bail!("an unexpected notification for {path}"),
        Ok(Err(error)) => Err(error),
    }
}
