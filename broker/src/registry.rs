//! The broker's state on one node: its topics and queues, users and settings, opened
//! from the data directory and kept there.
//!
//! Layout of the data directory:
//!
//! | path | what |
//! | --- | --- |
//! | `users.json`, `jwt-secret` | users, grants and the token secret (mode 0600) |
//! | `topics/<name>/topic.json` | a topic's settings |
//! | `topics/<name>/<partition>/` | a partition's log |
//! | `topics/<name>/subscriptions/<sub>/` | a subscription's settings and cursors |
//! | `queues/<name>/` | a queue's settings, partition logs and state journals |
//! | `trash/` | what a delete is removing; emptied on start |
//! | `<dir>/.creating` | in a topic, queue or subscription directory: its create has not finished; a start removes such a directory (its create was never answered) |

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use crate::auth::{Auth, Bootstrap};
use crate::config::BrokerConfig;
use crate::error::{ApiError, BrokerError};
use crate::fsutil;
use crate::partition::{FlushHint, LogSettings};
use crate::queue::{Queue, QueueSpec};
use crate::topic::{Topic, TopicSpec};

/// The node's id while it runs standalone.
pub const STANDALONE_NODE_ID: u32 = 1;

/// Everything one broker node serves.
#[derive(Debug)]
pub struct Broker {
    /// The configuration it was started with.
    pub config: BrokerConfig,
    /// Users, tokens and ACLs.
    pub auth: Auth,
    /// The secret that signs queue receipts.
    pub receipt_key: [u8; 32],
    topics: Catalog<Topic>,
    queues: Catalog<Queue>,
    /// Serialises creates and deletes, so two requests never race on one directory.
    admin_lock: std::sync::Mutex<()>,
    /// Raised by appends that the flusher must fsync.
    flush_hint: Arc<FlushHint>,
    /// Set when the node starts shutting down: parked long polls end at once.
    stopping: tokio::sync::watch::Sender<bool>,
    /// Held for the life of the broker: the data directory's lock, so two brokers
    /// never share one (the logs themselves are opened without a lock of their own).
    _lock: DataDirLock,
}

/// The exclusive lock of a data directory (`<data>/.lock`), released when dropped.
#[derive(Debug)]
pub struct DataDirLock {
    /// The locked directory.
    dir: PathBuf,
    /// The open lock file; its `flock` is the lock.
    _file: std::fs::File,
}

impl DataDirLock {
    /// Creates the directory when missing and takes its lock; refuses one that
    /// another broker holds.
    pub fn take(data: &Path) -> Result<DataDirLock, BrokerError> {
        fsutil::create_dir_all(data)?;
        Ok(DataDirLock {
            dir: data.to_owned(),
            _file: lock_data_dir(data)?,
        })
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}

impl Broker {
    /// Opens the data directory: takes its lock, then opens users, every topic and
    /// every queue.
    pub fn open(config: BrokerConfig) -> Result<(Broker, Bootstrap), BrokerError> {
        let lock = DataDirLock::take(&config.data_dir)?;
        Self::open_locked(config, lock)
    }

    /// Opens the data directory whose lock the caller took: `broker serve` takes
    /// it, and binds its ports, before anything here can create the first admin.
    pub fn open_locked(
        config: BrokerConfig,
        lock: DataDirLock,
    ) -> Result<(Broker, Bootstrap), BrokerError> {
        let data = config.data_dir.clone();
        if lock.dir != data {
            return Err(BrokerError::Config(format!(
                "the lock taken is of {}, not of the data directory {}",
                lock.dir.display(),
                data.display()
            )));
        }
        fsutil::empty_trash(&data.join("trash"))?;
        let (auth, bootstrap) = Auth::open(&data, &config.auth_config())?;
        let receipt_key = auth.receipt_key();
        let broker = Broker {
            auth,
            receipt_key,
            topics: Catalog::new("topic", data.join("topics")),
            queues: Catalog::new("queue", data.join("queues")),
            admin_lock: std::sync::Mutex::new(()),
            stopping: tokio::sync::watch::Sender::new(false),
            flush_hint: Arc::default(),
            _lock: lock,
            config,
        };
        let settings = broker.log_settings();
        let window = broker.config.idempotency_window_ms;
        let trash = broker.trash();
        for dir in subdirs(&broker.topics.root)? {
            if fsutil::remove_if_unfinished(&dir, &trash)? {
                continue;
            }
            let topic = Topic::open(&dir, settings.clone(), window, &trash)?;
            broker
                .topics
                .insert(topic.name().to_owned(), Arc::new(topic));
        }
        for dir in subdirs(&broker.queues.root)? {
            if fsutil::remove_if_unfinished(&dir, &trash)? {
                continue;
            }
            let queue = Queue::open(&dir, settings.clone(), window)?;
            broker
                .queues
                .insert(queue.name().to_owned(), Arc::new(queue));
        }
        tracing::info!(
            data = %data.display(),
            topics = broker.topics.len(),
            queues = broker.queues.len(),
            "storage open"
        );
        Ok((broker, bootstrap))
    }

    /// The settings new partitions get unless a topic or queue says otherwise.
    pub fn log_settings(&self) -> LogSettings {
        LogSettings {
            segment_bytes: self.config.segment_bytes,
            retention_ms: None,
            retention_bytes: None,
            durability: self.config.durability,
            cache_window_bytes: self.config.cache_window(),
            flush_hint: Arc::clone(&self.flush_hint),
            clustered: self.config.zookeeper.is_some(),
        }
    }

    fn trash(&self) -> PathBuf {
        self.config.data_dir.join("trash")
    }

    /// Where deletes move directories before removing them (emptied on start); what
    /// [`Topic::unsubscribe`] takes.
    pub fn trash_dir(&self) -> PathBuf {
        self.trash()
    }

    /// How many nodes can hold replicas (1 standalone).
    pub fn node_count(&self) -> u32 {
        1
    }

    /// Creates a topic.
    pub fn create_topic(&self, spec: TopicSpec) -> Result<Arc<Topic>, ApiError> {
        self.create_topic_for(spec, self.node_count())
    }

    /// Creates this node's copy of a topic whose replicas the cluster placed over
    /// `nodes` nodes.
    pub fn create_topic_for(&self, spec: TopicSpec, nodes: u32) -> Result<Arc<Topic>, ApiError> {
        spec.validate(nodes)?;
        let _admin = self.admin_lock.lock().unwrap_or_else(|p| p.into_inner());
        let name = spec.name.clone();
        let (settings, window) = (self.log_settings(), self.config.idempotency_window_ms);
        let trash = self.trash();
        self.topics.create(&name, &trash, |dir| {
            Topic::create(dir, spec, settings, window, &trash)
        })
    }

    /// A topic by name.
    pub fn topic(&self, name: &str) -> Result<Arc<Topic>, ApiError> {
        self.topics.get(name)
    }

    /// Every topic, by name.
    pub fn topics(&self) -> Vec<Arc<Topic>> {
        self.topics.all()
    }

    /// Deletes a topic with its subscriptions and files.
    pub fn delete_topic(&self, name: &str) -> Result<(), ApiError> {
        let _admin = self.admin_lock.lock().unwrap_or_else(|p| p.into_inner());
        let topic = self.topics.remove(name)?;
        if let Err(error) = topic.close() {
            tracing::warn!(%error, topic = name, "closing a deleted topic failed");
        }
        fsutil::remove_dir_via_trash(topic.dir(), &self.trash()).map_err(ApiError::from)
    }

    /// Creates a queue.
    pub fn create_queue(&self, spec: QueueSpec) -> Result<Arc<Queue>, ApiError> {
        self.create_queue_for(spec, self.node_count())
    }

    /// Creates this node's copy of a queue whose replicas the cluster placed over
    /// `nodes` nodes.
    pub fn create_queue_for(&self, spec: QueueSpec, nodes: u32) -> Result<Arc<Queue>, ApiError> {
        spec.validate(nodes)?;
        let _admin = self.admin_lock.lock().unwrap_or_else(|p| p.into_inner());
        let name = spec.name.clone();
        let (settings, window) = (self.log_settings(), self.config.idempotency_window_ms);
        self.queues.create(&name, &self.trash(), |dir| {
            Queue::create(dir, spec, settings, window)
        })
    }

    /// A queue by name.
    pub fn queue(&self, name: &str) -> Result<Arc<Queue>, ApiError> {
        self.queues.get(name)
    }

    /// A queue by name, if it exists.
    pub fn find_queue(&self, name: &str) -> Option<Arc<Queue>> {
        self.queues.find(name)
    }

    /// Every queue, by name.
    pub fn queues(&self) -> Vec<Arc<Queue>> {
        self.queues.all()
    }

    /// Deletes a queue and its files.
    pub fn delete_queue(&self, name: &str) -> Result<(), ApiError> {
        let _admin = self.admin_lock.lock().unwrap_or_else(|p| p.into_inner());
        let queue = self.queues.remove(name)?;
        if let Err(error) = queue.close() {
            tracing::warn!(%error, queue = name, "closing a deleted queue failed");
        }
        fsutil::remove_dir_via_trash(queue.dir(), &self.trash()).map_err(ApiError::from)
    }

    /// Periodic work on every topic and queue: retention, queue space reclamation;
    /// and a reload of the users file when `broker user ...` changed it. Failures are
    /// logged; the next round tries again.
    pub fn maintain(&self) {
        if let Err(error) = self.auth.reload_if_changed() {
            tracing::warn!(%error, "the users file changed but cannot be loaded");
        }
        for topic in self.topics() {
            if let Err(error) = topic.maintain() {
                tracing::warn!(%error, topic = topic.name(), "maintenance failed");
            }
        }
        for queue in self.queues() {
            if let Err(error) = queue.maintain() {
                tracing::warn!(%error, queue = queue.name(), "maintenance failed");
            }
        }
    }

    /// Fsyncs every partition log, of topics and queues, led or followed, that holds
    /// messages not yet fsynced: `interval` logs, and messages produced with
    /// `acks: "none"` to `fsync` ones. Failures are logged; the next round tries
    /// again. Blocks on I/O.
    pub fn flush_logs(&self) {
        if !self.flush_hint.take() {
            return;
        }
        let topics = self.topics();
        let queues = self.queues();
        let partitions = topics
            .iter()
            .flat_map(|t| t.partitions())
            .chain(queues.iter().flat_map(|q| q.partitions()));
        for partition in partitions {
            if let Err(error) = partition.flush_unflushed() {
                tracing::warn!(%error, partition = partition.id, "fsync of appended messages failed");
            }
        }
    }

    /// Runs [`Broker::maintain`] every `maintenance_interval_ms` until `stop` fires.
    pub async fn run_maintenance(self: Arc<Self>, stop: tokio::sync::watch::Receiver<bool>) {
        let period = self.config.maintenance_interval_ms;
        self.every(period, stop, "maintenance", Broker::maintain)
            .await;
    }

    /// Runs [`Broker::flush_logs`] every `flush_interval_ms` until `stop` fires, on a
    /// blocking thread: an append to an `interval` log never waits for an fsync.
    pub async fn run_flusher(self: Arc<Self>, stop: tokio::sync::watch::Receiver<bool>) {
        let period = self.config.flush_interval_ms;
        self.every(period, stop, "flusher", Broker::flush_logs)
            .await;
    }

    /// Runs `work` on a blocking thread every `period_ms` (never two rounds at once)
    /// until `stop` fires.
    async fn every(
        self: Arc<Self>,
        period_ms: u64,
        mut stop: tokio::sync::watch::Receiver<bool>,
        what: &'static str,
        work: fn(&Broker),
    ) {
        let period = std::time::Duration::from_millis(period_ms);
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    let broker = Arc::clone(&self);
                    if tokio::task::spawn_blocking(move || work(&broker)).await.is_err() {
                        tracing::error!(task = what, "a periodic task panicked");
                    }
                }
                _ = stop.changed() => return,
            }
        }
    }

    /// Flushes and closes every log and cursor store, writing the clean-shutdown
    /// markers.
    pub fn close(&self) -> Result<(), BrokerError> {
        let mut first_error = None;
        for topic in self.topics() {
            if let Err(e) = topic.close() {
                tracing::error!(error = %e, topic = topic.name(), "close failed");
                first_error.get_or_insert(e);
            }
        }
        for queue in self.queues() {
            if let Err(e) = queue.close() {
                tracing::error!(error = %e, queue = queue.name(), "close failed");
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Starts the shutdown: long polls waiting for data return what they have.
    pub fn begin_shutdown(&self) {
        self.stopping.send_replace(true);
    }

    /// Completes once the shutdown has begun; a long poll races its wait against it.
    pub async fn shutting_down(&self) {
        let mut stopping = self.stopping.subscribe();
        // An error means the sender is gone, which only happens when the broker is.
        let _ = stopping.wait_for(|stopping| *stopping).await;
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.config.data_dir
    }
}

/// The topics or the queues of the node by name, each in a directory `<root>/<name>`.
#[derive(Debug)]
struct Catalog<T> {
    /// "topic" or "queue", for messages.
    kind: &'static str,
    root: PathBuf,
    entries: RwLock<BTreeMap<String, Arc<T>>>,
}

impl<T> Catalog<T> {
    fn new(kind: &'static str, root: PathBuf) -> Catalog<T> {
        Catalog {
            kind,
            root,
            entries: RwLock::new(BTreeMap::new()),
        }
    }

    fn not_found(&self, name: &str) -> ApiError {
        ApiError::not_found(format!("{} {name:?} does not exist", self.kind))
    }

    fn get(&self, name: &str) -> Result<Arc<T>, ApiError> {
        self.find(name).ok_or_else(|| self.not_found(name))
    }

    fn find(&self, name: &str) -> Option<Arc<T>> {
        read(&self.entries).get(name).cloned()
    }

    fn all(&self) -> Vec<Arc<T>> {
        read(&self.entries).values().cloned().collect()
    }

    fn len(&self) -> usize {
        read(&self.entries).len()
    }

    fn insert(&self, name: String, item: Arc<T>) {
        write(&self.entries).insert(name, item);
    }

    fn remove(&self, name: &str) -> Result<Arc<T>, ApiError> {
        write(&self.entries)
            .remove(name)
            .ok_or_else(|| self.not_found(name))
    }

    /// Makes a new entry in `<root>/<name>` with `make`; a failure leaves no
    /// directory behind. The caller holds the admin lock.
    fn create(
        &self,
        name: &str,
        trash: &Path,
        make: impl FnOnce(&Path) -> Result<T, BrokerError>,
    ) -> Result<Arc<T>, ApiError> {
        if self.find(name).is_some() {
            return Err(ApiError::already_exists(format!(
                "{} {name:?} already exists",
                self.kind
            )));
        }
        let dir = self.root.join(name);
        let item = make(&dir).map_err(|e| {
            let _ = fsutil::remove_dir_via_trash(&dir, trash);
            ApiError::from(e)
        })?;
        let item = Arc::new(item);
        self.insert(name.to_owned(), Arc::clone(&item));
        Ok(item)
    }
}

/// A random incarnation for a new topic or queue (never 0): it tells the new one from
/// an earlier one of the same name.
pub fn new_incarnation() -> Result<u64, ApiError> {
    let mut bytes = [0u8; 8];
    crate::auth::random::fill(&mut bytes).map_err(ApiError::internal)?;
    Ok(u64::from_le_bytes(bytes).max(1))
}

/// Takes the exclusive lock of the data directory (`<data>/.lock`).
fn lock_data_dir(data: &Path) -> Result<std::fs::File, BrokerError> {
    let path = data.join(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| BrokerError::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(BrokerError::Config(format!(
            "the data directory {} is in use by another broker",
            data.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(BrokerError::io(&path, e)),
    }
}

/// The subdirectories of `dir` (none if it does not exist), sorted.
fn subdirs(dir: &Path) -> Result<Vec<PathBuf>, BrokerError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(BrokerError::io(dir, e)),
    };
    let mut dirs = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| BrokerError::io(dir, e))?.path();
        if path.is_dir() {
            dirs.push(path);
        }
    }
    dirs.sort();
    Ok(dirs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(data_dir: &Path) -> BrokerConfig {
        BrokerConfig {
            data_dir: data_dir.to_path_buf(),
            admin_password: Some("a-long-enough-password".into()),
            ..BrokerConfig::default()
        }
    }

    /// Asserts that each named outcome is a 404 (`None`: it succeeded).
    fn all_not_found(outcomes: &[(&str, Option<crate::error::ErrorCode>)]) {
        for (what, code) in outcomes {
            assert_eq!(*code, Some(crate::error::ErrorCode::NotFound), "{what}");
        }
    }

    fn topic_spec(name: &str, partitions: u32) -> TopicSpec {
        TopicSpec {
            name: name.into(),
            partitions,
            replication_factor: 1,
            retention_ms: None,
            retention_bytes: None,
            durability: crate::config::Durability::Fsync,
            incarnation: 0,
        }
    }

    #[test]
    fn partitions_of_topics_reopened_or_new_keep_the_configured_cache_window() {
        let dir = tempfile::tempdir().unwrap();
        let windows = |broker: &Broker| -> Vec<Option<u64>> {
            broker
                .topics()
                .iter()
                .flat_map(|t| t.partitions().to_vec())
                .map(|p| p.log.config().cache_window_bytes)
                .collect()
        };
        let mut config = config(dir.path());
        config.cache_window_bytes = 8 << 20;
        let (broker, _) = Broker::open(config.clone()).unwrap();
        broker.create_topic(topic_spec("t", 2)).unwrap();
        assert_eq!(windows(&broker), [Some(8 << 20); 2]);
        broker.close().unwrap();
        drop(broker);
        config.cache_window_bytes = 0;
        let (broker, _) = Broker::open(config).unwrap();
        assert_eq!(
            windows(&broker),
            [None; 2],
            "0 leaves the cache to the kernel"
        );
    }

    #[test]
    fn a_second_broker_on_one_data_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let (first, _) = Broker::open(config.clone()).unwrap();
        let second = Broker::open(config.clone());
        assert!(
            matches!(&second, Err(BrokerError::Config(m)) if m.contains("in use")),
            "{second:?}"
        );
        drop(first);
        assert!(
            Broker::open(config).is_ok(),
            "the lock goes with the broker"
        );
    }

    #[test]
    fn unfinished_creates_are_removed_and_damaged_directories_refused() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let (broker, _) = Broker::open(config.clone()).unwrap();
        let topic = broker.create_topic(topic_spec("t", 2)).unwrap();
        topic
            .subscribe("s", crate::subscription::StartAt::Earliest, false)
            .unwrap();
        broker.close().unwrap();
        drop((topic, broker));
        // What a crash leaves midway through creates: marked directories with part
        // of their files, and an empty one.
        let data = dir.path();
        for unfinished in ["topics/half", "queues/half", "topics/t/subscriptions/half"] {
            fsutil::begin_create(&data.join(unfinished)).unwrap();
            fsutil::create_dir_all(&data.join(unfinished).join("0")).unwrap();
        }
        fsutil::create_dir_all(&data.join("queues/empty")).unwrap();
        let (broker, _) = Broker::open(config.clone()).unwrap();
        let names = |items: Vec<String>| items.join(",");
        assert_eq!(
            names(
                broker
                    .topics()
                    .iter()
                    .map(|t| t.name().to_owned())
                    .collect()
            ),
            "t"
        );
        assert!(broker.queues().is_empty());
        let subs = broker.topic("t").unwrap().subscriptions();
        assert_eq!(names(subs.iter().map(|s| s.name.clone()).collect()), "s");
        for gone in [
            "topics/half",
            "queues/half",
            "queues/empty",
            "topics/t/subscriptions/half",
        ] {
            assert!(!data.join(gone).exists(), "{gone}");
        }
        broker.close().unwrap();
        drop(broker);
        // A finished directory that lost its settings file is damage: refused, kept.
        std::fs::remove_file(data.join("topics/t/subscriptions/s/subscription.json")).unwrap();
        let refused = Broker::open(config);
        assert!(
            matches!(&refused, Err(BrokerError::BadMetadata { reason, .. }) if reason == "missing"),
            "{refused:?}"
        );
        assert!(data.join("topics/t/subscriptions/s/cursors").exists());
    }

    #[tokio::test]
    async fn a_commit_past_a_log_end_cut_by_recovery_moves_back_to_the_end() {
        use crate::message::NewMessage;
        use crate::subscription::StartAt;
        use log_engine::Offset;

        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let message = |v: &'static str| NewMessage {
            key: None,
            value: v.as_bytes().into(),
            headers: Vec::new(),
        };
        let spec = topic_spec("t", 1);
        let (broker, _) = Broker::open(config.clone()).unwrap();
        let topic = broker.create_topic(spec).unwrap();
        for _ in 0..10 {
            let old = [message("old")];
            topic
                .produce(&old, crate::topic::Acks::Leader, None)
                .await
                .unwrap();
        }
        let sub = topic.subscribe("s", StartAt::Earliest, false).unwrap();
        sub.commit(&[(0, Offset(10))]).unwrap();
        // What recovery does to a tail that was never fsynced.
        topic.partitions()[0].log.truncate_to(Offset(4)).unwrap();
        broker.close().unwrap();
        drop((sub, topic, broker));

        let (broker, _) = Broker::open(config).unwrap();
        let topic = broker.topic("t").unwrap();
        let sub = topic.subscription("s").unwrap();
        assert_eq!(sub.committed(), [4]);
        topic
            .produce(&[message("new")], crate::topic::Acks::Leader, None)
            .await
            .unwrap();
        let pulled = sub.pull(10, std::time::Duration::ZERO).await.unwrap();
        let values: Vec<&[u8]> = pulled.iter().map(|m| m.value.as_slice()).collect();
        assert_eq!(
            values,
            [b"new".as_slice()],
            "the new message is not skipped"
        );
    }

    #[tokio::test]
    async fn requests_that_race_a_delete_are_404_not_500() {
        use crate::message::NewMessage;
        use crate::subscription::StartAt;

        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let (broker, _) = Broker::open(config).unwrap();
        let topic = broker.create_topic(topic_spec("t", 1)).unwrap();
        let sub = topic.subscribe("s", StartAt::Earliest, true).unwrap();
        let queue = broker.create_queue(QueueSpec::new("q")).unwrap();
        // Requests that looked the names up before the deletes.
        broker.delete_topic("t").unwrap();
        broker.delete_queue("q").unwrap();
        let message = [NewMessage {
            value: b"v".as_slice().into(),
            ..NewMessage::default()
        }];
        let produced = topic
            .produce(&message, crate::topic::Acks::Leader, None)
            .await;
        let subscribed = topic.subscribe("s", StartAt::Earliest, false);
        let unsubscribed = topic.unsubscribe("s");
        let committed = sub.commit(&[(0, log_engine::Offset(0))]);
        let sought = sub.seek(crate::subscription::SeekTo::Latest).await;
        let pulled = sub.pull(10, std::time::Duration::ZERO).await;
        let sent = queue.send(&message, None).await;
        all_not_found(&[
            ("produce", produced.err().map(|e| e.code)),
            ("subscribe", subscribed.err().map(|e| e.code)),
            ("unsubscribe", unsubscribed.err().map(|e| e.code)),
            ("commit", committed.err().map(|e| e.code)),
            ("seek", sought.err().map(|e| e.code)),
            ("pull", pulled.err().map(|e| e.code)),
            ("send", sent.err().map(|e| e.code)),
        ]);
    }

    #[tokio::test]
    async fn long_polls_waiting_when_their_topic_or_queue_is_deleted_end_with_404() {
        use crate::subscription::StartAt;
        use std::time::{Duration, Instant};

        let dir = tempfile::tempdir().unwrap();
        let (broker, _) = Broker::open(config(dir.path())).unwrap();
        let broker = std::sync::Arc::new(broker);
        let topic = broker.create_topic(topic_spec("t", 2)).unwrap();
        let sub = topic.subscribe("s", StartAt::Latest, false).unwrap();
        let queue = broker.create_queue(QueueSpec::new("q")).unwrap();
        let started = Instant::now();
        let wait = Duration::from_secs(20);
        let pull = tokio::spawn(async move { sub.pull(10, wait).await });
        let receive =
            tokio::spawn(async move { queue.receive(10, wait, None, &[0; 32], None).await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        broker.delete_topic("t").unwrap();
        broker.delete_queue("q").unwrap();
        let pulled = pull.await.unwrap().map(|m| m.len());
        let received = receive.await.unwrap().map(|d| d.len());
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        all_not_found(&[
            ("pull", pulled.err().map(|e| e.code)),
            ("receive", received.err().map(|e| e.code)),
        ]);
    }

    #[tokio::test]
    async fn requests_that_race_a_subscription_delete_are_404_not_500() {
        use crate::subscription::{SeekTo, StartAt};
        use log_engine::Offset;

        let dir = tempfile::tempdir().unwrap();
        let (broker, _) = Broker::open(config(dir.path())).unwrap();
        let topic = broker.create_topic(topic_spec("t", 2)).unwrap();
        let sub = topic.subscribe("s", StartAt::Earliest, true).unwrap();
        // Requests that looked the subscription up before the delete, the first
        // ones finding it created again.
        topic.unsubscribe("s").unwrap();
        let again = topic.subscribe("s", StartAt::Earliest, false).unwrap();
        topic.unsubscribe("s").unwrap();
        let committed = sub.commit(&[(0, Offset(0))]);
        let sought = sub.seek(SeekTo::Earliest).await;
        let pulled = sub.pull(10, std::time::Duration::ZERO).await;
        let restored = sub.restore(&[0, 0]).await;
        let deleted = topic.unsubscribe("s");
        let committed_again = again.commit(&[(1, Offset(0))]);
        all_not_found(&[
            ("commit", committed.err().map(|e| e.code)),
            ("seek", sought.err().map(|e| e.code)),
            ("pull", pulled.err().map(|e| e.code)),
            ("restore", restored.err().map(|e| e.code)),
            ("delete", deleted.err().map(|e| e.code)),
            (
                "commit to the second",
                committed_again.err().map(|e| e.code),
            ),
        ]);
        let subs = dir.path().join("topics/t/subscriptions");
        let left: Vec<_> = std::fs::read_dir(&subs).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[tokio::test]
    async fn a_pull_returns_at_most_its_byte_limit() {
        use crate::message::NewMessage;
        use crate::subscription::{PULL_BYTES_MAX, StartAt};
        use std::time::Duration;

        let dir = tempfile::tempdir().unwrap();
        let (broker, _) = Broker::open(config(dir.path())).unwrap();
        let topic = broker.create_topic(topic_spec("t", 2)).unwrap();
        let sub = topic.subscribe("s", StartAt::Earliest, false).unwrap();
        // Five messages of a third of the limit each, over two partitions.
        let size = PULL_BYTES_MAX / 3;
        for i in 0..5u8 {
            let message = [NewMessage {
                key: Some(format!("k{i}").into()),
                value: vec![i; size].into(),
                ..NewMessage::default()
            }];
            topic
                .produce(&message, crate::topic::Acks::Leader, None)
                .await
                .unwrap();
        }
        let mut counts = Vec::new();
        loop {
            let pulled = sub.pull(100, Duration::ZERO).await.unwrap();
            if pulled.is_empty() {
                break;
            }
            let bytes: usize = pulled
                .iter()
                .map(|m| m.value.len() + m.key.as_ref().map_or(0, |k| k.len()))
                .sum();
            assert!(bytes <= PULL_BYTES_MAX, "{bytes}");
            counts.push(pulled.len());
        }
        assert_eq!(counts, [2, 2, 1]);
    }

    #[tokio::test]
    async fn a_long_poll_waiting_when_its_subscription_is_deleted_ends_with_404() {
        use crate::message::NewMessage;
        use crate::subscription::StartAt;
        use std::time::{Duration, Instant};

        let dir = tempfile::tempdir().unwrap();
        let (broker, _) = Broker::open(config(dir.path())).unwrap();
        let topic = broker.create_topic(topic_spec("t", 2)).unwrap();
        let wait = Duration::from_secs(20);
        for auto_commit in [false, true] {
            let sub = topic.subscribe("s", StartAt::Latest, auto_commit).unwrap();
            let started = Instant::now();
            let pull = tokio::spawn(async move { sub.pull(10, wait).await });
            tokio::time::sleep(Duration::from_millis(100)).await;
            // Deleted, created again and given a message while the pull waits: the
            // pull ends at the delete and takes nothing from the new subscription.
            topic.unsubscribe("s").unwrap();
            let again = topic.subscribe("s", StartAt::Latest, false).unwrap();
            let message = [NewMessage {
                value: b"new".as_slice().into(),
                ..NewMessage::default()
            }];
            topic
                .produce(&message, crate::topic::Acks::Leader, None)
                .await
                .unwrap();
            let pulled = pull.await.unwrap().map(|m| m.len());
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "auto_commit {auto_commit}: {:?}",
                started.elapsed()
            );
            assert_eq!(
                pulled.err().map(|e| e.code),
                Some(crate::error::ErrorCode::NotFound),
                "auto_commit {auto_commit}"
            );
            let fresh = again.pull(10, Duration::ZERO).await.unwrap();
            assert_eq!(fresh.len(), 1, "auto_commit {auto_commit}");
            topic.unsubscribe("s").unwrap();
        }
    }

    #[test]
    fn a_missing_partition_directory_is_refused_not_made_anew() {
        for kind in ["topics", "queues"] {
            let dir = tempfile::tempdir().unwrap();
            let (broker, _) = Broker::open(config(dir.path())).unwrap();
            match kind {
                "topics" => drop(broker.create_topic(topic_spec("x", 2)).unwrap()),
                _ => {
                    let spec = QueueSpec {
                        partitions: 2,
                        ..QueueSpec::new("x")
                    };
                    drop(broker.create_queue(spec).unwrap());
                }
            }
            broker.close().unwrap();
            drop(broker);
            let gone = dir.path().join(kind).join("x").join("1");
            std::fs::remove_dir_all(&gone).unwrap();
            let refused = Broker::open(config(dir.path()));
            assert!(
                matches!(&refused, Err(BrokerError::BadMetadata { path, reason })
                    if *path == gone && reason.starts_with("missing")),
                "{kind}: {refused:?}"
            );
            assert!(!gone.exists(), "{kind}: nothing was made anew");
        }
    }
}
