//! The broker: topics and the partitions hosted here, the write path (validation, append,
//! group-committed fsync, acks=all against the ISR), the read path (the one place that
//! decides which tier serves an offset), topic admin (forwarded to the controller, remote
//! or embedded), producer ids, and retention and compaction passes.
//!
//! Owned by the node's root. Calls `partition`, `metadata`, `log`, `tiering` (to open and
//! read tiered partitions) and the controller link (admin forwarding); implements the
//! coordinator's `OffsetsLog`. Nothing below calls it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kafka_protocol::error::ResponseError;

use crate::config::{FlushPolicy, NodeConfig};
use crate::coordinator::OffsetsLog;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::log::batch;
use crate::log::compaction;
use crate::log::config::{validate_for_node, LogConfig};
use crate::log::{AppendInfo, PartitionLog};
use crate::metadata::{validate_topic_name, ImageCell, TopicMeta};
use crate::partition::replica::ReplicaState;
pub use crate::partition::{Partition, PartitionTable};
use crate::replication::cluster::ClusterLink;

pub use crate::coordinator::OFFSETS_TOPIC;

/// min.insync.replicas as Kafka applies it: never more than the replication factor (a
/// topic with min.insync.replicas=2 and one replica still takes acks=all writes).
fn effective_min_isr(r: &ReplicaState, part: &Partition) -> i32 {
    let configured = part.log().config().min_insync_replicas;
    configured.min(r.replicas.len().max(1) as i32)
}

/// What a fetch read from one partition.
pub struct Read {
    /// Whole batches (None: nothing at or after the offset yet).
    pub records: Result<Option<bytes::Bytes>>,
    pub high_watermark: i64,
    /// The last stable offset (below it no transaction is open).
    pub last_stable_offset: i64,
    /// For a read_committed read: the aborted transactions the records may belong to.
    pub aborted: Vec<crate::log::txn::AbortedTxn>,
    /// The earliest offset readable from either tier.
    pub log_start_offset: i64,
}

/// Who reads, which decides how far: a follower to the log end, a read_uncommitted consumer
/// to the high watermark, a read_committed one to the last stable offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader {
    Follower,
    Uncommitted,
    Committed,
}

/// What a topic looks like to a handler.
#[derive(Debug, Clone)]
pub struct TopicView {
    pub name: String,
    pub meta: TopicMeta,
}

/// The broker.
pub struct Broker {
    pub config: Arc<NodeConfig>,
    /// Topics (and in a cluster, nodes and assignments), shared with the controller link.
    image: Arc<ImageCell>,
    table: Arc<PartitionTable>,
    /// Producer ids: (next, end) of the block in hand, refilled from the controller.
    producer_ids: tokio::sync::Mutex<(i64, i64)>,
    /// Tiered storage, when the node has `--object-store`.
    pub tiering: Option<Arc<crate::tiering::Tiering>>,
    /// The controller (remote, or embedded in a standalone node), whose images decide
    /// which partitions live here and who leads them, and which every topic change goes to.
    pub link: Arc<ClusterLink>,
    /// Whether logs opened later recover their active segment (the last shutdown was not
    /// clean).
    recover_on_open: bool,
}

fn partition_dir(data_dir: &Path, topic: &str, p: i32) -> PathBuf {
    data_dir.join(format!("{topic}-{p}"))
}

impl Broker {
    /// The broker over `config.data_dir` (whose lock the caller holds): what is hosted
    /// here comes from the controller's images through `link`; logs are opened as they are
    /// hosted (and recovered first if the last shutdown was not clean).
    pub fn open(
        config: Arc<NodeConfig>,
        image: Arc<ImageCell>,
        link: Arc<ClusterLink>,
    ) -> Result<Arc<Broker>> {
        let data = config.data_dir.clone();
        let meta = data.join("meta");
        std::fs::create_dir_all(&meta).map_err(|e| Error::io(meta.display().to_string(), e))?;
        let marker = meta.join("clean_shutdown");
        // A data directory that never held a partition has nothing to recover.
        let fresh = !std::fs::read_dir(&data)
            .map_err(|e| Error::io(data.display().to_string(), e))?
            .flatten()
            .any(|e| e.file_name() != "meta" && e.file_name() != crate::tiering::DISK_CACHE_DIR);
        let recover = !fresh && !marker.exists();
        let _ = std::fs::remove_file(&marker);
        if recover {
            tracing::info!(data_dir = %data.display(), "last shutdown was not clean: recovering active segments");
        }
        let tiering = match &config.tiering {
            Some(opts) => Some(Arc::new(crate::tiering::Tiering::open(opts.clone())?)),
            None => None,
        };
        Ok(Arc::new(Broker {
            config,
            image,
            table: Arc::new(PartitionTable::default()),
            producer_ids: tokio::sync::Mutex::new((0, 0)),
            tiering,
            link,
            recover_on_open: recover,
        }))
    }

    /// The partitions hosted here.
    pub fn table(&self) -> &Arc<PartitionTable> {
        &self.table
    }

    /// Wake long-polling fetches (new data, a moved high watermark, a role change).
    pub fn notify_appended(&self) {
        self.table.notify_appended();
    }

    /// The installed metadata, shared with the controller link.
    pub fn image(&self) -> &Arc<ImageCell> {
        &self.image
    }

    /// The partition, opened (or created) here if it is not yet. A local
    /// directory left by an older topic of the same name is removed first.
    pub(crate) fn host_partition(
        &self,
        name: &str,
        meta: &TopicMeta,
        p: i32,
    ) -> Result<Arc<Partition>> {
        if let Some(part) = self.partition(name, p) {
            let mut log = part.log();
            if log.topic_id() == meta.id {
                let cfg = LogConfig::resolve(&meta.configs, &self.config.topic_defaults);
                log.set_config(cfg);
                drop(log);
                return Ok(part);
            }
            drop(log);
            self.drop_partition(&part);
        }
        let dir = partition_dir(&self.config.data_dir, name, p);
        let cfg = LogConfig::resolve(&meta.configs, &self.config.topic_defaults);
        let open = |dir: &Path| -> Result<PartitionLog> {
            match &self.tiering {
                Some(t) if cfg.remote_storage => {
                    t.open_partition(dir, meta.id, p, cfg.clone(), self.recover_on_open)
                }
                _ => PartitionLog::open(dir, meta.id, cfg.clone(), self.recover_on_open),
            }
        };
        let mut log = open(&dir)?;
        if log.topic_id() != meta.id {
            drop(log);
            tracing::warn!(dir = %dir.display(), "removing the data of an older topic of the same name");
            let _ = std::fs::remove_dir_all(&dir);
            log = open(&dir)?;
        }
        let start = log.log_start_offset();
        let repl = ReplicaState {
            role: crate::partition::replica::Role::Follower { leader: -1 },
            leader_epoch: -1,
            ..ReplicaState::standalone(self.config.node_id, -1)
        };
        let part = Arc::new(Partition::new(name, p, repl, start, log));
        self.table.insert(part.clone());
        Ok(part)
    }

    /// Stop hosting a partition and delete its local data.
    pub(crate) fn drop_partition(&self, part: &Arc<Partition>) {
        self.table.remove(part);
        part.replica().role = crate::partition::replica::Role::Follower { leader: -1 };
        part.notify_state_change();
        let dir = partition_dir(&self.config.data_dir, &part.topic, part.index);
        let id = part.log().topic_id();
        let doomed = dir.with_file_name(format!(
            "{}-{}.{}-delete",
            part.topic,
            part.index,
            id.simple()
        ));
        if std::fs::rename(&dir, &doomed).is_ok() {
            let _ = std::fs::remove_dir_all(&doomed);
        }
        tracing::info!(topic = %part.topic, partition = part.index, "no longer hosted here; local data deleted");
    }

    /// Cluster id.
    pub fn cluster_id(&self) -> String {
        self.image.meta().cluster_id.clone()
    }

    /// All topics, sorted by name.
    pub fn topics(&self) -> Vec<TopicView> {
        self.image
            .meta()
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
        self.image.meta().topics.get(name).map(|m| TopicView {
            name: name.to_string(),
            meta: m.clone(),
        })
    }

    /// One topic by id.
    pub fn topic_by_id(&self, id: uuid::Uuid) -> Option<TopicView> {
        self.image
            .meta()
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
        self.table.get(topic, p)
    }

    /// Subscribe to append notifications.
    pub fn subscribe_appends(&self) -> tokio::sync::watch::Receiver<u64> {
        self.table.subscribe_appends()
    }

    /// Node-level topic config defaults.
    pub fn topic_defaults(&self) -> &BTreeMap<String, String> {
        &self.config.topic_defaults
    }

    /// Create a topic. `partitions` and `replication_factor` of -1 take the node defaults.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<TopicView> {
        validate_topic_name(name)?;
        validate_for_node(
            &configs,
            &self.config.topic_defaults,
            self.tiering.is_some(),
        )?;
        let partitions = if partitions == -1 && name != OFFSETS_TOPIC {
            self.config.num_partitions
        } else {
            partitions
        };
        let meta = self
            .link
            .create_topic(
                name,
                partitions,
                replication_factor,
                configs,
                Vec::new(),
                validate_only,
            )
            .await?;
        if !validate_only {
            tracing::info!(
                topic = name,
                partitions = meta.partitions,
                "created topic (through the controller)"
            );
        }
        Ok(TopicView {
            name: name.to_string(),
            meta,
        })
    }

    /// Create a topic with an explicit replica assignment (partition i on
    /// `assignments[i]`, the first replica preferred as leader), as
    /// `kafka-topics.sh --replica-assignment` asks.
    pub async fn create_topic_assigned(
        &self,
        name: &str,
        assignments: Vec<Vec<i32>>,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<TopicView> {
        validate_topic_name(name)?;
        let link = &self.link;
        validate_for_node(
            &configs,
            &self.config.topic_defaults,
            self.tiering.is_some(),
        )?;
        let meta = link
            .create_topic(name, -1, -1, configs, assignments, validate_only)
            .await?;
        if !validate_only {
            tracing::info!(
                topic = name,
                partitions = meta.partitions,
                "created topic with a replica assignment (through the controller)"
            );
        }
        Ok(TopicView {
            name: name.to_string(),
            meta,
        })
    }

    /// Create a topic if auto-creation allows it, returning it either way.
    pub async fn get_or_auto_create(&self, name: &str) -> Result<Option<TopicView>> {
        if let Some(t) = self.topic(name) {
            return Ok(Some(t));
        }
        if !self.config.auto_create_topics {
            return Ok(None);
        }
        match self
            .create_topic(name, -1, -1, BTreeMap::new(), false)
            .await
        {
            Ok(t) => Ok(Some(t)),
            Err(Error::TopicAlreadyExists(_)) => Ok(self.topic(name)),
            Err(e) => Err(e),
        }
    }

    /// The transaction topic's settings: (partitions, replication factor, configs), those
    /// of the offsets topic with its own partition count.
    fn txn_topic_spec(&self) -> (i32, i16, BTreeMap<String, String>) {
        let (_, rf, configs) = self.offsets_topic_spec();
        (self.config.transaction_state_partitions, rf, configs)
    }

    /// The internal transaction topic, created on first use.
    pub async fn ensure_txn_topic(&self) -> Result<TopicView> {
        if let Some(t) = self.topic(crate::txn::TXN_TOPIC) {
            return Ok(t);
        }
        let (partitions, rf, configs) = self.txn_topic_spec();
        match self
            .create_topic(crate::txn::TXN_TOPIC, partitions, rf, configs, false)
            .await
        {
            Ok(t) => Ok(t),
            Err(Error::TopicAlreadyExists(_)) => {
                self.topic(crate::txn::TXN_TOPIC).ok_or_else(|| {
                    Error::ControllerUnavailable("the transaction topic is being created".into())
                })
            }
            Err(e) => Err(e),
        }
    }

    /// Ask the controller for the transaction topic in the background (the coordinator
    /// answers "not available" meanwhile).
    pub fn request_txn_topic(&self) {
        if self.topic(crate::txn::TXN_TOPIC).is_some() {
            return;
        }
        let (partitions, rf, configs) = self.txn_topic_spec();
        let link = self.link.clone();
        tokio::spawn(async move {
            let r = link
                .create_topic(
                    crate::txn::TXN_TOPIC,
                    partitions,
                    rf,
                    configs,
                    Vec::new(),
                    false,
                )
                .await;
            if let Err(e) = r {
                if !matches!(e, Error::TopicAlreadyExists(_)) {
                    tracing::warn!(error = %e, "could not create the transaction topic");
                }
            }
        });
    }

    /// The offsets topic's settings: (partitions, replication factor, configs).
    fn offsets_topic_spec(&self) -> (i32, i16, BTreeMap<String, String>) {
        let mut configs = BTreeMap::new();
        configs.insert("cleanup.policy".to_string(), "compact".to_string());
        configs.insert("segment.bytes".to_string(), "104857600".to_string());
        // Never tiered, whatever the node defaults say: the coordinator loads groups from
        // the local log.
        configs.insert("remote.storage.enable".to_string(), "false".to_string());
        // The controller's offsets.topic.replication.factor applies.
        let rf = -1;
        (self.config.offsets_topic_partitions, rf, configs)
    }

    /// The internal offsets topic, created on first use.
    pub async fn ensure_offsets_topic(&self) -> Result<TopicView> {
        if let Some(t) = self.topic(OFFSETS_TOPIC) {
            return Ok(t);
        }
        let (partitions, rf, configs) = self.offsets_topic_spec();
        match self
            .create_topic(OFFSETS_TOPIC, partitions, rf, configs, false)
            .await
        {
            Ok(t) => Ok(t),
            Err(Error::TopicAlreadyExists(_)) => self
                .topic(OFFSETS_TOPIC)
                .ok_or_else(|| Error::UnknownTopicOrPartition(OFFSETS_TOPIC.into())),
            Err(e) => Err(e),
        }
    }

    /// Delete a topic and its data.
    pub async fn delete_topic(&self, name: &str) -> Result<uuid::Uuid> {
        if self.topic(name).is_none() {
            return Err(Error::UnknownTopicOrPartition(name.to_string()));
        }
        // Every node drops the topic's partitions (and its tiered data) when the
        // controller's image without it arrives.
        self.link.delete_topic(name).await
    }

    /// Raise a topic's partition count.
    pub async fn create_partitions(
        &self,
        name: &str,
        count: i32,
        validate_only: bool,
    ) -> Result<()> {
        self.link
            .create_partitions(name, count, validate_only)
            .await
    }

    /// Replace (or, with `incremental`, patch) a topic's config overrides.
    pub async fn alter_topic_configs(
        &self,
        name: &str,
        f: impl FnOnce(&mut BTreeMap<String, String>) -> Result<()>,
        validate_only: bool,
    ) -> Result<()> {
        let m = self
            .topic(name)
            .ok_or_else(|| Error::UnknownTopicOrPartition(name.to_string()))?
            .meta;
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
        // Every node applies the new configs when the controller's image arrives.
        self.link
            .alter_topic_configs(name, configs, validate_only)
            .await
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
        // The partition's current leader epoch; read
        // before the log's lock (the lock order is replica state, then log).
        let epoch = part.leader_epoch().max(0);
        let (info, log_start) = {
            let mut log = part.log();
            let info = log.append(data, &spans, epoch, fsutil::now_ms())?;
            (info, log.log_start_offset())
        };
        if !info.duplicate {
            part.recompute_high_watermark();
            self.table.notify_appended();
        }
        Ok((info, log_start))
    }

    /// Append a transaction marker (a coordinator's WriteTxnMarkers) to a partition led
    /// here.
    pub fn append_marker(
        &self,
        part: &Arc<Partition>,
        marker: crate::log::txn::Marker,
        producer_id: i64,
        producer_epoch: i16,
        coordinator_epoch: i32,
    ) -> Result<AppendInfo> {
        let epoch = {
            let r = part.replica();
            if !r.is_leader() {
                return Err(Error::NotLeader(part.name()));
            }
            r.leader_epoch.max(0)
        };
        let info = part.log().append_marker(
            marker,
            producer_id,
            producer_epoch,
            coordinator_epoch,
            epoch,
            fsutil::now_ms(),
        )?;
        part.recompute_high_watermark();
        self.table.notify_appended();
        Ok(info)
    }

    /// The bucket serving `part` below its local log start: Some only for a tiered
    /// partition on a node with tiered storage. The one place that decides which tier
    /// serves an offset; every read path below asks it.
    fn remote_tier(&self, part: &Partition) -> Option<(&Arc<crate::tiering::Tiering>, uuid::Uuid)> {
        let t = self.tiering.as_ref()?;
        let log = part.log();
        log.config().remote_storage.then(|| (t, log.topic_id()))
    }

    /// Fetch: up to `limit` bytes of whole batches from `offset` (at least one batch when
    /// `first`), as far as the `reader` may read, from the local log or, below its start,
    /// the bucket.
    pub async fn read(
        &self,
        part: &Arc<Partition>,
        offset: i64,
        limit: usize,
        first: bool,
        reader: Reader,
    ) -> Read {
        let follower = reader == Reader::Follower;
        let (plan, hw, lso, aborted, start) = {
            let log = part.log();
            let leo = log.log_end_offset();
            let hw = part.high_watermark();
            let lso = log.first_unstable_offset().map_or(hw, |f| f.min(hw));
            let bound = match reader {
                Reader::Follower => leo,
                Reader::Uncommitted => hw,
                Reader::Committed => lso,
            };
            let aborted = if reader == Reader::Committed {
                log.aborted_between(offset, bound)
            } else {
                Vec::new()
            };
            (
                log.plan_read(offset, limit, first, bound),
                hw,
                lso,
                aborted,
                log.log_start_offset(),
            )
        };
        let mut read = Read {
            records: plan.and_then(|p| p.map(|p| p.read_bytes()).transpose()),
            high_watermark: hw,
            last_stable_offset: lso,
            aborted,
            log_start_offset: start,
        };
        if let Some((t, topic_id)) = self.remote_tier(part) {
            // The log start a client sees is the bucket's.
            let earliest = t.earliest(topic_id, part.index, start);
            if let Ok(e) = &earliest {
                read.log_start_offset = *e;
            }
            if offset < start && reader == Reader::Committed {
                let mut remote = t.aborted(topic_id, part.index, offset, lso);
                remote.retain(|a| !read.aborted.contains(a));
                read.aborted.splice(0..0, remote);
            }
            if offset < start && matches!(read.records, Err(Error::OffsetOutOfRange { .. })) {
                read.records = match (follower, earliest) {
                    // Bucket failures map to their Kafka codes like local ones.
                    (false, _) => match t.read(topic_id, part.index, offset, limit, first).await {
                        // Compaction left nothing in the bucket from `offset` on: the next
                        // records are the local log's.
                        Ok(None) => {
                            let log = part.log();
                            let bound = if reader == Reader::Committed { lso } else { hw };
                            log.plan_read(start, limit, first, bound)
                                .and_then(|p| p.map(|p| p.read_bytes()).transpose())
                        }
                        other => other,
                    },
                    // How far the bucket reaches is not known yet: retriable.
                    (true, Err(e)) => Err(e),
                    // Below what the bucket holds too: out of range, and the follower
                    // restarts its log at the start it is given.
                    (true, Ok(e)) if offset < e => read.records,
                    // A replica never copies the bucket's data through the leader: it
                    // rebuilds its state from the bucket and fetches from there (Kafka's
                    // OFFSET_MOVED_TO_TIERED_STORAGE).
                    (true, Ok(_)) => Err(Error::Kafka {
                        code: ResponseError::OffsetMovedToTieredStorage,
                        message: format!(
                            "{}: offset {offset} is below the local log start {start}; it is in the bucket",
                            part.name()
                        ),
                    }),
                };
            }
        }
        read
    }

    /// The earliest readable offset. Tiering hook: the bucket's start when it holds data.
    pub fn earliest_offset(&self, part: &Arc<Partition>) -> Result<i64> {
        let local_start = part.log().log_start_offset();
        match self.remote_tier(part) {
            Some((t, topic_id)) => t.earliest(topic_id, part.index, local_start),
            None => Ok(local_start),
        }
    }

    /// ListOffsets by time: (offset, timestamp) of the first record whose timestamp is at
    /// least `ts`. Tiering hook: segments only in the bucket are searched too.
    pub async fn offset_for_timestamp(
        &self,
        part: &Arc<Partition>,
        ts: i64,
    ) -> Result<Option<(i64, i64)>> {
        match self.remote_tier(part) {
            Some((t, _)) => t.offset_for_timestamp(part, ts).await,
            None => part.log().offset_for_timestamp(ts),
        }
    }

    /// ListOffsets MAX_TIMESTAMP: (offset, timestamp) of the record with the largest
    /// timestamp. Tiering hook: segments only in the bucket count too.
    pub async fn max_timestamp_offset(&self, part: &Arc<Partition>) -> Result<Option<(i64, i64)>> {
        match self.remote_tier(part) {
            Some((t, _)) => t.max_timestamp_offset(part).await,
            None => part.log().max_timestamp_offset(),
        }
    }

    /// DeleteRecords: advance the log start to `offset` (-1: the high watermark); returns
    /// the new low watermark. Tiering hook: on tiered partitions the bucket's start moves
    /// first, so earliest never reports deleted records.
    pub async fn delete_records(&self, part: &Arc<Partition>, offset: i64) -> Result<i64> {
        let offset = if offset == -1 {
            part.log_end_offset()
        } else {
            offset
        };
        match self.remote_tier(part) {
            Some((t, _)) => t.delete_records(part, offset).await,
            None => part.log().delete_records_before(offset),
        }
    }

    /// Complete a write the client waits for: durable per the flush policy, and with
    /// acks=all in a cluster, replicated to the whole ISR (the high watermark passed it)
    /// with at least min.insync.replicas members, as Kafka's produce purgatory decides.
    pub async fn complete_write(
        &self,
        part: &Arc<Partition>,
        last_offset: i64,
        acks: i16,
        timeout: std::time::Duration,
    ) -> Result<()> {
        if self.must_sync(acks) {
            part.flush_to(last_offset + 1).await?;
        }
        if acks != -1 {
            return Ok(());
        }
        let mut rx = part.subscribe_high_watermark();
        let epoch = part.leader_epoch();
        let deadline = tokio::time::Instant::now() + timeout;
        let name = || format!("{}-{}", part.topic, part.index);
        loop {
            let hw = *rx.borrow_and_update();
            {
                let r = part.replica();
                if !r.is_leader() || r.leader_epoch != epoch {
                    return Err(Error::NotLeader(name()));
                }
                if hw > last_offset {
                    let min_isr = effective_min_isr(&r, part);
                    if (r.isr.len() as i32) < min_isr {
                        return Err(Error::Kafka {
                            code: ResponseError::NotEnoughReplicasAfterAppend,
                            message: format!(
                                "{}: written, but the ISR {:?} is smaller than min.insync.replicas={min_isr}",
                                name(),
                                r.isr
                            ),
                        });
                    }
                    return Ok(());
                }
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Err(_) => {
                    return Err(Error::Kafka {
                        code: ResponseError::RequestTimedOut,
                        message: format!("{}: not replicated to the ISR in time", name()),
                    })
                }
                Ok(Err(_)) => return Err(Error::NotLeader(name())),
                Ok(Ok(())) => {}
            }
        }
    }

    /// Refuse a write this node cannot take (not the leader; for acks=all,
    /// an ISR below min.insync.replicas).
    pub fn check_writable(&self, part: &Arc<Partition>, acks: i16) -> Result<()> {
        let r = part.replica();
        if !r.is_leader() {
            return Err(Error::NotLeader(format!("{}-{}", part.topic, part.index)));
        }
        if acks == -1 {
            let min_isr = effective_min_isr(&r, part);
            if (r.isr.len() as i32) < min_isr {
                return Err(Error::Kafka {
                    code: ResponseError::NotEnoughReplicas,
                    message: format!(
                        "the ISR {:?} is smaller than min.insync.replicas={min_isr}",
                        r.isr
                    ),
                });
            }
        }
        Ok(())
    }

    /// Whether a produce with `acks` must wait for an fsync under the flush policy.
    pub fn must_sync(&self, acks: i16) -> bool {
        match self.config.flush_policy {
            FlushPolicy::Always => true,
            FlushPolicy::AcksAll => acks == -1,
            FlushPolicy::Never => false,
        }
    }

    /// Allocate a new producer id, from blocks the controller reserves durably (so ids are
    /// never reused).
    pub async fn allocate_producer_id(&self) -> Result<i64> {
        let mut ids = self.producer_ids.lock().await;
        if ids.0 >= ids.1 {
            *ids = self.link.allocate_producer_id_block(0).await?;
        }
        let id = ids.0;
        ids.0 += 1;
        Ok(id)
    }

    /// Hand out producer ids from `floor` up only (a restore's producer state holds the
    /// ids below it): a new block from the controller replaces the one in hand.
    pub async fn producer_ids_from(&self, floor: i64) -> Result<()> {
        let mut ids = self.producer_ids.lock().await;
        *ids = self.link.allocate_producer_id_block(floor).await?;
        Ok(())
    }

    /// Remove the partition directories of partitions not hosted here (a topic deleted, or
    /// a replica moved away, while this node was down). Called once the first image is
    /// applied, when every partition this node hosts is open.
    pub fn remove_unhosted_dirs(&self) -> Result<()> {
        let data = &self.config.data_dir;
        for entry in
            std::fs::read_dir(data).map_err(|e| Error::io(data.display().to_string(), e))?
        {
            let Ok(entry) = entry else { continue };
            let name = entry.file_name().to_string_lossy().to_string();
            let Some((topic, p)) = name.rsplit_once('-') else {
                continue;
            };
            let looks_like_partition =
                !topic.is_empty() && (p.parse::<i32>().is_ok() || p == "delete");
            if name == "meta" || !entry.path().is_dir() || !looks_like_partition {
                continue;
            }
            let hosted = p
                .parse::<i32>()
                .ok()
                .is_some_and(|p| self.table.get(topic, p).is_some());
            if !hosted {
                tracing::warn!(dir = %entry.path().display(), "removing the directory of a partition not hosted here");
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        Ok(())
    }

    /// Every hosted partition.
    pub fn all_partitions(&self) -> Vec<Arc<Partition>> {
        self.table.all()
    }

    /// Run retention over every partition once.
    pub fn run_retention(&self) {
        let now = fsutil::now_ms();
        for p in self.all_partitions() {
            let mut log = p.log();
            if let Err(e) = log.apply_retention(now) {
                tracing::warn!(topic = %p.topic, partition = p.index, error = %e, "retention failed");
            }
        }
    }

    /// Forget the state of producers idle for `expiration_ms` in every partition
    /// (producer.id.expiration.ms).
    pub fn expire_producers(&self, expiration_ms: i64) {
        let now = fsutil::now_ms();
        let mut gone = 0;
        for p in self.all_partitions() {
            gone += p.log().expire_producers(now, expiration_ms);
        }
        if gone > 0 {
            tracing::info!(producers = gone, "expired idle producer state");
        }
    }

    /// Compact every compacted partition whose dirty ratio is high enough.
    pub fn run_compaction(&self) {
        let now = fsutil::now_ms();
        for p in self.all_partitions() {
            let mut log = p.log();
            if !log.config().compact || log.dirty_ratio() < log.config().min_cleanable_dirty_ratio {
                continue;
            }
            if let Err(e) = compaction::compact(&mut log, now) {
                tracing::warn!(topic = %p.topic, partition = p.index, error = %e, "compaction failed");
            }
        }
    }

    /// Clean shutdown: fsync every log, snapshot producer state, write the clean marker.
    pub fn shutdown(&self) -> Result<()> {
        let failed = std::sync::atomic::AtomicBool::new(false);
        // Closing is mostly waiting for fsyncs, which the disk completes side by side.
        let parts = self.all_partitions();
        let _ = crate::fsutil::for_each_parallel(&parts, |p| {
            if let Err(e) = p.log().close() {
                failed.store(true, std::sync::atomic::Ordering::Relaxed);
                tracing::error!(topic = %p.topic, partition = p.index, error = %e, "close failed");
            }
            Ok(())
        });
        if !failed.into_inner() {
            let marker = self.config.data_dir.join("meta").join("clean_shutdown");
            fsutil::write_atomic(&marker, b"clean\n")?;
        }
        Ok(())
    }
}

/// The coordinator's view of the broker: the offsets topic and the write path.
impl OffsetsLog for Broker {
    fn offsets_partitions(&self) -> Option<i32> {
        self.topic(OFFSETS_TOPIC).map(|t| t.meta.partitions)
    }

    /// Its creation is asked of the controller in the background and the coordinator
    /// answers "not available" meanwhile (clients retry; FindCoordinator creates it as well,
    /// and waits).
    fn ensure_offsets_topic(&self) -> Result<i32> {
        if let Some(t) = self.topic(OFFSETS_TOPIC) {
            return Ok(t.meta.partitions);
        }
        let (partitions, rf, configs) = self.offsets_topic_spec();
        let link = self.link.clone();
        tokio::spawn(async move {
            let r = link
                .create_topic(OFFSETS_TOPIC, partitions, rf, configs, Vec::new(), false)
                .await;
            if let Err(e) = r {
                if !matches!(e, Error::TopicAlreadyExists(_)) {
                    tracing::warn!(error = %e, "could not create the offsets topic");
                }
            }
        });
        Err(Error::ControllerUnavailable(
            "the offsets topic is being created".into(),
        ))
    }

    fn partition(&self, topic: &str, p: i32) -> Option<Arc<Partition>> {
        self.table.get(topic, p)
    }

    fn append(&self, part: &Arc<Partition>, batch: bytes::Bytes) -> Result<AppendInfo> {
        Broker::append(self, part, batch).map(|(info, _)| info)
    }

    fn replicated(&self) -> bool {
        true
    }
}
