//! Topics: partitioned logs with publish/subscribe delivery.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use serde::{Deserialize, Serialize};

use crate::config::Durability;
use crate::error::{ApiError, BrokerError};
use crate::fsutil;
use crate::idempotency::{IdempotencyWindow, Placement};
use crate::message::{self, NewMessage};
use crate::names;
use crate::partition::{LogSettings, Partition};
use crate::subscription::{StartAt, Subscription};

/// The most partitions a topic or queue may have.
pub const PARTITIONS_MAX: u32 = 1024;

/// A topic's settings, as created and as kept in `topic.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicSpec {
    /// The name.
    pub name: String,
    /// The number of partitions.
    pub partitions: u32,
    /// Copies of each partition (1 standalone).
    pub replication_factor: u32,
    /// Retention by age.
    pub retention_ms: Option<u64>,
    /// Retention by size, per partition.
    pub retention_bytes: Option<u64>,
    /// When produces are answered.
    pub durability: Durability,
    /// Tells this topic from an earlier one of the same name: random, chosen when
    /// the topic is created, so that a cluster node that was away while the topic
    /// was deleted and created again drops its copy of the earlier one. 0 for a
    /// topic created before topics had one.
    #[serde(default)]
    pub incarnation: u64,
}

impl TopicSpec {
    /// Checks the settings.
    pub fn validate(&self, nodes: u32) -> Result<(), ApiError> {
        names::validate("topic", &self.name)?;
        if self.partitions == 0 || self.partitions > PARTITIONS_MAX {
            return Err(ApiError::bad_request(format!(
                "partitions must be between 1 and {PARTITIONS_MAX}"
            )));
        }
        if self.replication_factor == 0 {
            return Err(ApiError::bad_request(
                "replication_factor must be at least 1",
            ));
        }
        if self.replication_factor > nodes {
            return Err(ApiError::bad_request(format!(
                "replication_factor {} is not possible with {nodes} node(s)",
                self.replication_factor
            )));
        }
        Ok(())
    }
}

/// How long a produce waits, as the request's `acks` says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Acks {
    /// After every in-sync replica has the messages (standalone: as `leader`).
    #[default]
    All,
    /// After the leader stored them as the topic's durability says.
    Leader,
    /// After the leader wrote them, without waiting for an fsync.
    None,
}

/// A topic.
#[derive(Debug)]
pub struct Topic {
    /// Its settings.
    pub spec: TopicSpec,
    dir: PathBuf,
    partitions: Vec<Arc<Partition>>,
    subscriptions: RwLock<BTreeMap<String, Arc<Subscription>>>,
    /// Serialises the creates and deletes of subscriptions, and the topic's close:
    /// each runs from its first look at the map to its last file operation alone,
    /// so two of them never work on one subscription directory at once (as the
    /// broker's admin lock does for topics and queues). The map's own lock is held
    /// only briefly, so lookups do not wait for a create's fsyncs.
    lifecycle: Mutex<()>,
    /// Where a failed subscription create moves what it made: the broker's trash.
    trash: PathBuf,
    /// Spreads messages without a key over the partitions.
    next_keyless: AtomicU64,
    idempotency: IdempotencyWindow,
    /// Set (under the lifecycle lock) when the topic is closed: it takes no new
    /// subscription, whose directory a delete would be removing, and deletes none
    /// (the topic's delete removes them all).
    closed: AtomicBool,
}

impl Topic {
    /// Creates the topic's directory and partitions; `trash` is where deletes move
    /// directories before removing them.
    pub fn create(
        dir: &Path,
        spec: TopicSpec,
        defaults: LogSettings,
        idempotency_window_ms: u64,
        trash: &Path,
    ) -> Result<Topic, BrokerError> {
        fsutil::begin_create(dir)?;
        let json =
            serde_json::to_vec_pretty(&spec).map_err(|e| BrokerError::Config(e.to_string()))?;
        let topic = Self::open_partitions(dir, spec, defaults, idempotency_window_ms, trash)?;
        fsutil::write_atomic(&dir.join("topic.json"), &json, 0o644)?;
        fsutil::finish_create(dir)?;
        Ok(topic)
    }

    /// Opens a topic from its directory, with its subscriptions; a subscription
    /// whose creation never finished is removed through `trash`.
    pub fn open(
        dir: &Path,
        defaults: LogSettings,
        idempotency_window_ms: u64,
        trash: &Path,
    ) -> Result<Topic, BrokerError> {
        let path = dir.join("topic.json");
        let spec: TopicSpec =
            fsutil::read_json(&path)?.ok_or_else(|| BrokerError::BadMetadata {
                path: path.clone(),
                reason: "missing".into(),
            })?;
        fsutil::check_partition_dirs(dir, spec.partitions, defaults.clustered)?;
        let topic = Self::open_partitions(dir, spec, defaults, idempotency_window_ms, trash)?;
        let subs_dir = dir.join("subscriptions");
        if subs_dir.exists() {
            let entries =
                std::fs::read_dir(&subs_dir).map_err(|e| BrokerError::io(&subs_dir, e))?;
            let mut subs = BTreeMap::new();
            for entry in entries {
                let path = entry.map_err(|e| BrokerError::io(&subs_dir, e))?.path();
                if fsutil::remove_if_unfinished(&path, trash)? {
                    continue;
                }
                let sub = Subscription::open(&path, topic.partitions.clone())?;
                subs.insert(sub.name.clone(), Arc::new(sub));
            }
            *topic.subscriptions_mut() = subs;
        }
        topic.rebuild_idempotency();
        Ok(topic)
    }

    fn open_partitions(
        dir: &Path,
        spec: TopicSpec,
        defaults: LogSettings,
        idempotency_window_ms: u64,
        trash: &Path,
    ) -> Result<Topic, BrokerError> {
        let settings = LogSettings {
            retention_ms: spec.retention_ms,
            retention_bytes: spec.retention_bytes,
            durability: spec.durability,
            ..defaults
        };
        let partitions = (0..spec.partitions)
            .map(|p| Partition::open(&dir.join(p.to_string()), p, &settings).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Topic {
            spec,
            dir: dir.to_path_buf(),
            partitions,
            subscriptions: RwLock::new(BTreeMap::new()),
            lifecycle: Mutex::new(()),
            trash: trash.to_path_buf(),
            next_keyless: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            idempotency: IdempotencyWindow::new(idempotency_window_ms),
        })
    }

    /// The topic's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The partitions.
    pub fn partitions(&self) -> &[Arc<Partition>] {
        &self.partitions
    }

    /// The topic's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The partition a message goes to: by key hash, or in turn without a key.
    pub fn route(&self, key: Option<&str>) -> u32 {
        let count = self.partitions.len() as u32;
        crate::partitioner::route(key.map(str::as_bytes), count, &self.next_keyless)
    }

    /// Appends messages, each to the partition its key picks, and returns each one's
    /// (partition, offset) in request order. With an idempotency key seen within the
    /// window, appends nothing and returns the first answer.
    pub async fn produce(
        &self,
        messages: &[NewMessage<'_>],
        acks: Acks,
        idempotency_key: Option<&str>,
    ) -> Result<Arc<Placement>, ApiError> {
        if messages.is_empty() {
            return Err(ApiError::bad_request("messages must not be empty"));
        }
        for m in messages {
            m.validate()?;
        }
        let request = crate::idempotency::RequestKey::of(idempotency_key, messages);
        self.idempotency
            .run(request, |stored| async move {
                crate::produce::append_routed(
                    &self.partitions,
                    messages,
                    |m| self.route(m.key.as_deref()),
                    acks,
                    request,
                    &stored,
                    message::now_ms(),
                )
                .await
            })
            .await
    }

    /// Rebuilds the idempotency window from the recent tail of each partition, as
    /// the logs hold it now (after a start, or on becoming leader).
    pub fn rebuild_idempotency(&self) {
        let since = message::now_ms() - self.idempotency.window_ms();
        crate::idempotency::rebuild_window(&self.idempotency, &self.partitions, since);
    }

    fn subscriptions_mut(
        &self,
    ) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Arc<Subscription>>> {
        self.subscriptions
            .write()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn subscriptions_read(
        &self,
    ) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<Subscription>>> {
        self.subscriptions.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the lifecycle lock (see the field).
    fn lifecycle(&self) -> MutexGuard<'_, ()> {
        self.lifecycle.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn deleted(&self) -> ApiError {
        ApiError::not_found(format!(
            "topic {:?} was deleted while the request ran",
            self.name()
        ))
    }

    fn no_subscription(&self, name: &str) -> ApiError {
        ApiError::not_found(format!(
            "topic {:?} has no subscription {name:?}",
            self.name()
        ))
    }

    /// Creates a subscription. Its directory is complete on disk (it survives a
    /// restart) before it is seen; a create that fails leaves no directory behind.
    pub fn subscribe(
        &self,
        name: &str,
        start: StartAt,
        auto_commit: bool,
    ) -> Result<Arc<Subscription>, ApiError> {
        names::validate("subscription", name)?;
        let _turn = self.lifecycle();
        if self.closed.load(Ordering::Acquire) {
            return Err(self.deleted());
        }
        if self.subscriptions_read().contains_key(name) {
            return Err(ApiError::already_exists(format!(
                "subscription {name:?} already exists on topic {:?}",
                self.name()
            )));
        }
        let dir = self.dir.join("subscriptions").join(name);
        let partitions = self.partitions.clone();
        let sub =
            Subscription::create(&dir, name, start, auto_commit, partitions).map_err(|error| {
                if let Err(cleanup) = fsutil::remove_dir_via_trash(&dir, &self.trash) {
                    tracing::warn!(
                        error = %cleanup,
                        dir = %dir.display(),
                        "removing what a failed subscription create made failed"
                    );
                }
                ApiError::from(error)
            })?;
        let sub = Arc::new(sub);
        self.subscriptions_mut()
            .insert(name.to_owned(), Arc::clone(&sub));
        Ok(sub)
    }

    /// A subscription by name.
    pub fn subscription(&self, name: &str) -> Result<Arc<Subscription>, ApiError> {
        self.subscriptions_read()
            .get(name)
            .cloned()
            .ok_or_else(|| self.no_subscription(name))
    }

    /// All subscriptions, by name.
    pub fn subscriptions(&self) -> Vec<Arc<Subscription>> {
        self.subscriptions_read().values().cloned().collect()
    }

    /// Makes this node's copy of subscription `name` the one the cluster kept:
    /// created when missing (or remade when its setting differs), positions at
    /// `committed`.
    pub async fn restore_subscription(
        &self,
        name: &str,
        auto_commit: bool,
        committed: &[u64],
    ) -> Result<(), ApiError> {
        let existing = self.subscriptions_read().get(name).cloned();
        let sub = match existing {
            Some(sub) if sub.auto_commit == auto_commit => sub,
            Some(_) => {
                self.unsubscribe(name)?;
                self.subscribe(name, StartAt::Earliest, auto_commit)?
            }
            None => self.subscribe(name, StartAt::Earliest, auto_commit)?,
        };
        sub.restore(committed).await
    }

    /// Deletes a subscription and its files: closes it (requests that still hold
    /// it answer 404 from then on), then removes its directory. A 404 when the topic
    /// was deleted meanwhile: its delete removes the subscription with it.
    pub fn unsubscribe(&self, name: &str) -> Result<(), ApiError> {
        let _turn = self.lifecycle();
        if self.closed.load(Ordering::Acquire) {
            return Err(self.deleted());
        }
        let sub = self
            .subscriptions_mut()
            .remove(name)
            .ok_or_else(|| self.no_subscription(name))?;
        if let Err(error) = sub.close() {
            tracing::warn!(%error, subscription = name, "closing a deleted subscription failed");
        }
        fsutil::remove_dir_via_trash(sub.dir(), &self.trash).map_err(ApiError::from)
    }

    /// Marks the topic closed; a subscribe or unsubscribe running now either
    /// finished before (a subscription's directory goes with the topic's) or sees
    /// the mark.
    fn mark_closed(&self) {
        let _turn = self.lifecycle();
        self.closed.store(true, Ordering::Release);
    }

    /// Closes every log and cursor store cleanly.
    pub fn close(&self) -> Result<(), BrokerError> {
        self.mark_closed();
        for sub in self.subscriptions() {
            sub.close()?;
        }
        for p in &self.partitions {
            p.log.close()?;
        }
        Ok(())
    }

    /// Periodic work: retention, recovery points held back by their rate limit,
    /// auto-commit flushes.
    pub fn maintain(&self) -> Result<(), BrokerError> {
        for p in &self.partitions {
            p.log.apply_retention()?;
            p.log.checkpoint()?;
        }
        for sub in self.subscriptions() {
            if sub.auto_commit {
                sub.flush()?;
            }
        }
        Ok(())
    }
}
