//! Broker state: topics and partitions on this node, the embedded metadata store, producer
//! ids, durability (group-committed fsync) and background retention and compaction.

pub mod metadata;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::config::{FlushPolicy, NodeConfig};
use crate::coordinator::group::GroupConfig;
use crate::coordinator::{CoordinatorConfig, GroupCoordinator};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::log::batch;
use crate::log::compaction;
use crate::log::config::{validate_for_node, LogConfig};
use crate::log::{AppendInfo, PartitionLog};
use metadata::{validate_topic_name, MetadataImage, MetadataStore, TopicMeta};

/// Name of the internal topic holding consumer group state and offsets.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Producer ids are reserved on disk in blocks of this size.
const PRODUCER_ID_BLOCK: i64 = 1000;

/// One partition hosted here.
pub struct Partition {
    pub topic: String,
    pub index: i32,
    /// Leader epoch stamped on appended batches.
    pub leader_epoch: std::sync::atomic::AtomicI32,
    pub log: Mutex<PartitionLog>,
    flush_lock: tokio::sync::Mutex<()>,
}

impl Partition {
    /// fsync the log until at least `offset` is durable; concurrent callers share one fsync.
    pub async fn flush_to(&self, offset: i64) -> Result<()> {
        let _turn = self.flush_lock.lock().await;
        let (file, upto) = {
            let log = self.log.lock();
            if log.durable_offset() >= offset {
                return Ok(());
            }
            log.sync_handle()
        };
        let res = tokio::task::spawn_blocking(move || file.sync_data()).await;
        match res {
            Ok(Ok(())) => {
                self.log.lock().mark_durable(upto);
                Ok(())
            }
            Ok(Err(e)) => {
                // After a failed fsync the page cache state is unknown: stop accepting writes.
                let err = Error::StorageFailed(format!(
                    "fsync of {}-{} failed: {e}",
                    self.topic, self.index
                ));
                self.log.lock().poison(err.to_string());
                Err(err)
            }
            Err(join) => Err(Error::StorageFailed(format!("fsync task failed: {join}"))),
        }
    }
}

/// What a topic looks like to a handler.
#[derive(Debug, Clone)]
pub struct TopicView {
    pub name: String,
    pub meta: TopicMeta,
}

/// The broker.
pub struct Broker {
    pub config: NodeConfig,
    /// Consumer groups and committed offsets.
    pub groups: GroupCoordinator,
    store: MetadataStore,
    image: RwLock<MetadataImage>,
    partitions: RwLock<HashMap<(String, i32), Arc<Partition>>>,
    /// Bumped after every append; long-polling fetches wait on it.
    appended: tokio::sync::watch::Sender<u64>,
    producer_ids: Mutex<(i64, i64)>,
    /// Serialises topic create/delete/alter so that image and disk change together.
    admin: Mutex<()>,
    shutting_down: AtomicBool,
    /// Tiered storage, when the node has `--object-store`.
    pub tiering: Option<Arc<crate::tiering::Tiering>>,
    _lock: std::fs::File,
}

fn partition_dir(data_dir: &Path, topic: &str, p: i32) -> PathBuf {
    data_dir.join(format!("{topic}-{p}"))
}

impl Broker {
    /// Open the data directory: take its lock, load metadata, open (and if the last shutdown
    /// was not clean, recover) every partition.
    pub fn open(config: NodeConfig) -> Result<Arc<Broker>> {
        let data = config.data_dir.clone();
        std::fs::create_dir_all(&data).map_err(|e| Error::io(data.display().to_string(), e))?;
        let store = MetadataStore::new(&data)?;
        let lock = lock_data_dir(&data.join("meta").join("lock"))?;
        let fresh = !store.exists();
        let image = store.load()?;
        store.save(&image)?;
        let marker = data.join("meta").join("clean_shutdown");
        let recover = !fresh && !marker.exists();
        let _ = std::fs::remove_file(&marker);
        if recover {
            tracing::info!(data_dir = %data.display(), "last shutdown was not clean: recovering active segments");
        }
        let tiering = match &config.tiering {
            Some(opts) => Some(Arc::new(crate::tiering::Tiering::open(opts.clone())?)),
            None => None,
        };
        let mut partitions = HashMap::new();
        for (name, meta) in &image.topics {
            let cfg = LogConfig::resolve(&meta.configs, &config.topic_defaults);
            for p in 0..meta.partitions {
                let dir = partition_dir(&data, name, p);
                // Tiering hook: tiered partitions load their manifest, and are rebuilt from
                // it when the local directory is gone.
                let log = match &tiering {
                    Some(t) if cfg.remote_storage => {
                        t.open_partition(&dir, meta.id, p, cfg.clone(), recover)?
                    }
                    _ => PartitionLog::open(&dir, meta.id, cfg.clone(), recover)?,
                };
                partitions.insert(
                    (name.clone(), p),
                    Arc::new(new_partition(name, p, meta.leader_epoch, log)),
                );
            }
        }
        remove_orphans(&data, &image)?;
        let block_end = image.producer_id_block_end;
        let (tx, _) = tokio::sync::watch::channel(0);
        let groups = GroupCoordinator::new(CoordinatorConfig {
            group: GroupConfig {
                initial_rebalance_delay: std::time::Duration::from_millis(
                    config.group_initial_rebalance_delay_ms,
                ),
                min_session_timeout_ms: config.group_min_session_timeout_ms,
                max_session_timeout_ms: config.group_max_session_timeout_ms,
            },
            offsets_retention: std::time::Duration::from_secs(
                config.offsets_retention_minutes * 60,
            ),
        });
        let broker = Arc::new(Broker {
            config,
            groups,
            store,
            image: RwLock::new(image),
            partitions: RwLock::new(partitions),
            appended: tx,
            producer_ids: Mutex::new((block_end, block_end)),
            admin: Mutex::new(()),
            shutting_down: AtomicBool::new(false),
            tiering,
            _lock: lock,
        });
        broker.groups.begin_load(&broker);
        Ok(broker)
    }

    /// Cluster id.
    pub fn cluster_id(&self) -> String {
        self.image.read().cluster_id.clone()
    }

    /// All topics, sorted by name.
    pub fn topics(&self) -> Vec<TopicView> {
        self.image
            .read()
            .topics
            .iter()
            .map(|(n, m)| TopicView {
                name: n.clone(),
                meta: m.clone(),
            })
            .collect()
    }

    /// One topic by name.
    pub fn topic(&self, name: &str) -> Option<TopicView> {
        self.image.read().topics.get(name).map(|m| TopicView {
            name: name.to_string(),
            meta: m.clone(),
        })
    }

    /// One topic by id.
    pub fn topic_by_id(&self, id: uuid::Uuid) -> Option<TopicView> {
        self.image
            .read()
            .topics
            .iter()
            .find(|(_, m)| m.id == id)
            .map(|(n, m)| TopicView {
                name: n.clone(),
                meta: m.clone(),
            })
    }

    /// The partition, if hosted here.
    pub fn partition(&self, topic: &str, p: i32) -> Option<Arc<Partition>> {
        self.partitions.read().get(&(topic.to_string(), p)).cloned()
    }

    /// Subscribe to append notifications.
    pub fn subscribe_appends(&self) -> tokio::sync::watch::Receiver<u64> {
        self.appended.subscribe()
    }

    /// Node-level topic config defaults.
    pub fn topic_defaults(&self) -> &BTreeMap<String, String> {
        &self.config.topic_defaults
    }

    /// Create a topic. `partitions` and `replication_factor` of -1 take the node defaults.
    pub fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<TopicView> {
        validate_topic_name(name)?;
        let internal = name == OFFSETS_TOPIC;
        let partitions = if partitions == -1 {
            self.config.num_partitions
        } else {
            partitions
        };
        if partitions < 1 {
            return Err(Error::InvalidPartitions(format!(
                "{partitions} partitions requested; at least 1 is needed"
            )));
        }
        if partitions > 100_000 {
            return Err(Error::InvalidPartitions(format!(
                "{partitions} partitions is more than this node allows (100000)"
            )));
        }
        let rf = if replication_factor == -1 {
            1
        } else {
            replication_factor
        };
        if rf < 1 {
            return Err(Error::InvalidReplicationFactor(format!(
                "replication factor {rf} must be at least 1"
            )));
        }
        if rf > 1 {
            return Err(Error::InvalidReplicationFactor(format!(
                "replication factor {rf} is larger than the 1 available broker"
            )));
        }
        validate_for_node(
            &configs,
            &self.config.topic_defaults,
            self.tiering.is_some(),
        )?;
        let _admin = self.admin.lock();
        if self.image.read().topics.contains_key(name) {
            return Err(Error::TopicAlreadyExists(name.to_string()));
        }
        let meta = TopicMeta {
            id: uuid::Uuid::new_v4(),
            partitions,
            replication_factor: rf,
            configs,
            leader_epoch: 0,
            internal,
        };
        if validate_only {
            return Ok(TopicView {
                name: name.to_string(),
                meta,
            });
        }
        let mut next = self.image.read().clone();
        next.topics.insert(name.to_string(), meta.clone());
        self.store.save(&next)?;
        *self.image.write() = next;
        self.open_partitions(name, &meta, 0)?;
        tracing::info!(topic = name, partitions, "created topic");
        Ok(TopicView {
            name: name.to_string(),
            meta,
        })
    }

    fn open_partitions(&self, name: &str, meta: &TopicMeta, from: i32) -> Result<()> {
        let cfg = LogConfig::resolve(&meta.configs, &self.config.topic_defaults);
        for p in from..meta.partitions {
            let dir = partition_dir(&self.config.data_dir, name, p);
            let log = PartitionLog::open(&dir, meta.id, cfg.clone(), false)?;
            self.partitions.write().insert(
                (name.to_string(), p),
                Arc::new(new_partition(name, p, meta.leader_epoch, log)),
            );
        }
        Ok(())
    }

    /// Create a topic if auto-creation allows it, returning it either way.
    pub fn get_or_auto_create(&self, name: &str) -> Result<Option<TopicView>> {
        if let Some(t) = self.topic(name) {
            return Ok(Some(t));
        }
        if !self.config.auto_create_topics {
            return Ok(None);
        }
        match self.create_topic(name, -1, -1, BTreeMap::new(), false) {
            Ok(t) => Ok(Some(t)),
            Err(Error::TopicAlreadyExists(_)) => Ok(self.topic(name)),
            Err(e) => Err(e),
        }
    }

    /// The internal offsets topic, created on first use.
    pub fn ensure_offsets_topic(&self) -> Result<TopicView> {
        if let Some(t) = self.topic(OFFSETS_TOPIC) {
            return Ok(t);
        }
        let mut configs = BTreeMap::new();
        configs.insert("cleanup.policy".to_string(), "compact".to_string());
        configs.insert("segment.bytes".to_string(), "104857600".to_string());
        match self.create_topic(
            OFFSETS_TOPIC,
            self.config.offsets_topic_partitions,
            1,
            configs,
            false,
        ) {
            Ok(t) => Ok(t),
            Err(Error::TopicAlreadyExists(_)) => self
                .topic(OFFSETS_TOPIC)
                .ok_or_else(|| Error::UnknownTopicOrPartition(OFFSETS_TOPIC.into())),
            Err(e) => Err(e),
        }
    }

    /// Delete a topic and its data.
    pub fn delete_topic(&self, name: &str) -> Result<uuid::Uuid> {
        let _admin = self.admin.lock();
        let meta = self
            .image
            .read()
            .topics
            .get(name)
            .cloned()
            .ok_or_else(|| Error::UnknownTopicOrPartition(name.to_string()))?;
        let mut next = self.image.read().clone();
        next.topics.remove(name);
        self.store.save(&next)?;
        *self.image.write() = next;
        // Tiering hook: the topic's objects in the bucket go too, in the background.
        if let Some(t) = &self.tiering {
            t.delete_topic_data(meta.id);
        }
        let mut parts = self.partitions.write();
        for p in 0..meta.partitions {
            parts.remove(&(name.to_string(), p));
            let dir = partition_dir(&self.config.data_dir, name, p);
            let doomed = dir.with_file_name(format!("{name}-{p}.{}-delete", meta.id.simple()));
            if std::fs::rename(&dir, &doomed).is_ok() {
                let _ = std::fs::remove_dir_all(&doomed);
            }
        }
        tracing::info!(topic = name, "deleted topic");
        Ok(meta.id)
    }

    /// Raise a topic's partition count.
    pub fn create_partitions(&self, name: &str, count: i32, validate_only: bool) -> Result<()> {
        let _admin = self.admin.lock();
        let meta = self
            .image
            .read()
            .topics
            .get(name)
            .cloned()
            .ok_or_else(|| Error::UnknownTopicOrPartition(name.to_string()))?;
        if count < meta.partitions {
            return Err(Error::InvalidPartitions(format!(
                "topic currently has {} partitions, which is higher than the requested {count}",
                meta.partitions
            )));
        }
        if count == meta.partitions {
            return Err(Error::InvalidPartitions(format!(
                "topic already has {count} partitions"
            )));
        }
        if count > 100_000 {
            return Err(Error::InvalidPartitions(format!(
                "{count} partitions is more than this node allows"
            )));
        }
        if validate_only {
            return Ok(());
        }
        let old = meta.partitions;
        let mut next = self.image.read().clone();
        let m = next.topics.get_mut(name).expect("present");
        m.partitions = count;
        let updated = m.clone();
        self.store.save(&next)?;
        *self.image.write() = next;
        self.open_partitions(name, &updated, old)?;
        tracing::info!(topic = name, from = old, to = count, "added partitions");
        Ok(())
    }

    /// Replace (or, with `incremental`, patch) a topic's config overrides.
    pub fn alter_topic_configs(
        &self,
        name: &str,
        f: impl FnOnce(&mut BTreeMap<String, String>) -> Result<()>,
        validate_only: bool,
    ) -> Result<()> {
        let _admin = self.admin.lock();
        let mut next = self.image.read().clone();
        let m = next
            .topics
            .get_mut(name)
            .ok_or_else(|| Error::UnknownTopicOrPartition(name.to_string()))?;
        let mut configs = m.configs.clone();
        f(&mut configs)?;
        validate_for_node(
            &configs,
            &self.config.topic_defaults,
            self.tiering.is_some(),
        )?;
        // Tiering hook: once on, remote storage stays on (as in Kafka): turning it off would
        // make the tiered data unreachable while the bucket still holds it.
        let was = LogConfig::resolve(&m.configs, &self.config.topic_defaults).remote_storage;
        if was && !LogConfig::resolve(&configs, &self.config.topic_defaults).remote_storage {
            return Err(Error::InvalidConfig {
                key: "remote.storage.enable".into(),
                value: "false".into(),
                reason: "remote storage cannot be turned off once it is on".into(),
            });
        }
        if validate_only {
            return Ok(());
        }
        m.configs = configs;
        let meta = m.clone();
        self.store.save(&next)?;
        *self.image.write() = next;
        let cfg = LogConfig::resolve(&meta.configs, &self.config.topic_defaults);
        for p in 0..meta.partitions {
            if let Some(part) = self.partition(name, p) {
                part.log.lock().set_config(cfg.clone());
            }
        }
        Ok(())
    }

    /// Validate and append a producer's record set to a partition. Runs synchronously so that
    /// requests on one connection are appended in the order they arrived.
    pub fn append(
        &self,
        part: &Arc<Partition>,
        data: impl AsRef<[u8]>,
    ) -> Result<(AppendInfo, i64)> {
        let data = data.as_ref();
        let spans = batch::validate_produce_records(data)?;
        let (info, log_start) = {
            let mut log = part.log.lock();
            // The partition's current leader epoch (standalone: the topic's, which is 0).
            let epoch = part.leader_epoch.load(Ordering::Relaxed).max(0);
            let info = log.append(data, &spans, epoch, fsutil::now_ms())?;
            (info, log.log_start_offset())
        };
        if !info.duplicate {
            self.appended.send_modify(|v| *v = v.wrapping_add(1));
        }
        Ok((info, log_start))
    }

    /// The earliest readable offset. Tiering hook: the bucket's start when it holds data.
    pub fn earliest_offset(&self, part: &Arc<Partition>) -> Result<i64> {
        let (tiered, topic_id, local_start) = {
            let log = part.log.lock();
            (
                log.config().remote_storage,
                log.topic_id(),
                log.log_start_offset(),
            )
        };
        match &self.tiering {
            Some(t) if tiered => t.earliest(topic_id, part.index, local_start),
            _ => Ok(local_start),
        }
    }

    /// ListOffsets by time: (offset, timestamp) of the first record whose timestamp is at
    /// least `ts`. Tiering hook: segments only in the bucket are searched too.
    pub async fn offset_for_timestamp(
        &self,
        part: &Arc<Partition>,
        ts: i64,
    ) -> Result<Option<(i64, i64)>> {
        let tiered = part.log.lock().config().remote_storage;
        match &self.tiering {
            Some(t) if tiered => t.offset_for_timestamp(part, ts).await,
            _ => part.log.lock().offset_for_timestamp(ts),
        }
    }

    /// ListOffsets MAX_TIMESTAMP: (offset, timestamp) of the record with the largest
    /// timestamp. Tiering hook: segments only in the bucket count too.
    pub async fn max_timestamp_offset(&self, part: &Arc<Partition>) -> Result<Option<(i64, i64)>> {
        let tiered = part.log.lock().config().remote_storage;
        match &self.tiering {
            Some(t) if tiered => t.max_timestamp_offset(part).await,
            _ => part.log.lock().max_timestamp_offset(),
        }
    }

    /// DeleteRecords: advance the log start to `offset` (-1: the high watermark); returns
    /// the new low watermark. Tiering hook: on tiered partitions the bucket's start moves
    /// first, so earliest never reports deleted records.
    pub async fn delete_records(&self, part: &Arc<Partition>, offset: i64) -> Result<i64> {
        let (tiered, leo) = {
            let log = part.log.lock();
            (log.config().remote_storage, log.log_end_offset())
        };
        let offset = if offset == -1 { leo } else { offset };
        match &self.tiering {
            Some(t) if tiered => t.delete_records(part, offset).await,
            _ => part.log.lock().delete_records_before(offset),
        }
    }

    /// Whether a produce with `acks` must wait for an fsync under the flush policy.
    pub fn must_sync(&self, acks: i16) -> bool {
        match self.config.flush_policy {
            FlushPolicy::Always => true,
            FlushPolicy::AcksAll => acks == -1,
            FlushPolicy::Never => false,
        }
    }

    /// Allocate a new producer id, reserving blocks durably so ids are never reused.
    pub fn allocate_producer_id(&self) -> Result<i64> {
        let mut ids = self.producer_ids.lock();
        if ids.0 >= ids.1 {
            let _admin = self.admin.lock();
            let mut next = self.image.read().clone();
            next.producer_id_block_end = ids.1 + PRODUCER_ID_BLOCK;
            self.store.save(&next)?;
            ids.1 = next.producer_id_block_end;
            *self.image.write() = next;
        }
        let id = ids.0;
        ids.0 += 1;
        Ok(id)
    }

    /// Every hosted partition.
    pub fn all_partitions(&self) -> Vec<Arc<Partition>> {
        self.partitions.read().values().cloned().collect()
    }

    /// Run retention over every partition once.
    pub fn run_retention(&self) {
        let now = fsutil::now_ms();
        for p in self.all_partitions() {
            let mut log = p.log.lock();
            if let Err(e) = log.apply_retention(now) {
                tracing::warn!(topic = %p.topic, partition = p.index, error = %e, "retention failed");
            }
        }
    }

    /// Compact every compacted partition whose dirty ratio is high enough.
    pub fn run_compaction(&self) {
        let now = fsutil::now_ms();
        for p in self.all_partitions() {
            let mut log = p.log.lock();
            if !log.config().compact || log.dirty_ratio() < log.config().min_cleanable_dirty_ratio {
                continue;
            }
            if let Err(e) = compaction::compact(&mut log, now) {
                tracing::warn!(topic = %p.topic, partition = p.index, error = %e, "compaction failed");
            }
        }
    }

    /// Start shutting down: long-polling fetches answer now instead of waiting out max_wait.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
        self.appended.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Whether shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }

    /// Clean shutdown: fsync every log, snapshot producer state, write the clean marker.
    pub fn shutdown(&self) -> Result<()> {
        self.shutting_down.store(true, Ordering::Relaxed);
        let mut ok = true;
        for p in self.all_partitions() {
            if let Err(e) = p.log.lock().close() {
                ok = false;
                tracing::error!(topic = %p.topic, partition = p.index, error = %e, "close failed");
            }
        }
        if ok {
            let marker = self.config.data_dir.join("meta").join("clean_shutdown");
            fsutil::write_atomic(&marker, b"clean\n")?;
        }
        Ok(())
    }
}

fn new_partition(topic: &str, index: i32, leader_epoch: i32, log: PartitionLog) -> Partition {
    Partition {
        topic: topic.to_string(),
        index,
        leader_epoch: std::sync::atomic::AtomicI32::new(leader_epoch),
        log: Mutex::new(log),
        flush_lock: tokio::sync::Mutex::new(()),
    }
}

/// Take an exclusive lock on the data directory so two nodes never share it.
fn lock_data_dir(path: &Path) -> Result<std::fs::File> {
    use std::os::unix::io::AsRawFd;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| Error::io(path.display().to_string(), e))?;
    // SAFETY: flock on a valid open file descriptor owned by `f`.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        return Err(Error::io(
            format!(
                "{} (is another strata-node using this data directory?)",
                path.display()
            ),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(f)
}

/// Remove partition directories no topic owns (a crash between metadata save and delete).
fn remove_orphans(data: &Path, image: &MetadataImage) -> Result<()> {
    for entry in std::fs::read_dir(data).map_err(|e| Error::io(data.display().to_string(), e))? {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name().to_string_lossy().to_string();
        let looks_like_partition = name
            .rsplit_once('-')
            .is_some_and(|(t, p)| !t.is_empty() && (p.parse::<i32>().is_ok() || p == "delete"));
        if name == "meta" || !entry.path().is_dir() || !looks_like_partition {
            continue;
        }
        let owned = name.rsplit_once('-').is_some_and(|(t, p)| {
            p.parse::<i32>()
                .ok()
                .is_some_and(|p| image.topics.get(t).is_some_and(|m| p < m.partitions))
        });
        if !owned {
            tracing::warn!(dir = %entry.path().display(), "removing directory that belongs to no topic");
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    Ok(())
}
