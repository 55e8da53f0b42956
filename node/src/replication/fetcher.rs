//! The follower side: one task per leader node fetches every partition this node follows
//! from it with the Kafka Fetch API (replica id set), truncating first through
//! OffsetForLeaderEpoch after a leader change. Also the leader's ISR upkeep.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::{
    ApiKey, BrokerId, FetchRequest, FetchResponse, OffsetForLeaderEpochRequest,
    OffsetForLeaderEpochResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use super::client::Connection;
use super::cluster::ClusterLink;
use crate::error::Result;
use crate::fsutil;
use crate::partition::replica::Role;
use crate::partition::{Partition, PartitionTable};
use crate::security::Security;
use crate::tiering::Tiering;

/// Fetch version followers use (topic names, current leader epoch, log start offset).
const FETCH_VERSION: i16 = 12;
const EPOCH_VERSION: i16 = 4;
const PARTITION_MAX_BYTES: i32 = 1 << 20;
const RESPONSE_MAX_BYTES: i32 = 10 << 20;

/// Settings of the follower side and the ISR upkeep.
#[derive(Debug, Clone, Copy)]
pub struct ReplicaSettings {
    /// How long a follower's fetch may wait at the leader for data.
    pub fetch_wait_max_ms: i32,
    /// Whether a follower fsyncs what it fetched before asking for more.
    pub flush: bool,
    /// A follower that has not caught up for this long leaves the ISR.
    pub lag_time_max_ms: i64,
}

/// The replication work of a node in a cluster: one fetcher task per leader it follows,
/// and the leader's side (follower progress, ISR changes). Owns the fetcher tasks.
pub struct Replicator {
    link: Arc<ClusterLink>,
    table: Arc<PartitionTable>,
    /// The bucket, where a follower too far behind its leader starts again from.
    tiering: Option<Arc<Tiering>>,
    settings: ReplicaSettings,
    /// How followers reach leaders (mutual TLS or not).
    security: Arc<Security>,
    shutdown: CancellationToken,
    /// Follower fetchers by leader id.
    fetchers: Mutex<HashMap<i32, tokio::task::JoinHandle<()>>>,
    /// Record bytes appended from leaders.
    fetched: AtomicU64,
    /// Follower logs rebuilt from the bucket.
    rebuilt: AtomicU64,
}

impl Replicator {
    /// Replication over `table` through `link`, until `shutdown`.
    pub fn new(
        link: Arc<ClusterLink>,
        table: Arc<PartitionTable>,
        tiering: Option<Arc<Tiering>>,
        settings: ReplicaSettings,
        security: Arc<Security>,
        shutdown: CancellationToken,
    ) -> Arc<Replicator> {
        Arc::new(Replicator {
            link,
            table,
            tiering,
            settings,
            security,
            shutdown,
            fetchers: Mutex::new(HashMap::new()),
            fetched: AtomicU64::new(0),
            rebuilt: AtomicU64::new(0),
        })
    }

    /// (record bytes copied from leaders, follower logs rebuilt from the bucket), for
    /// metrics.
    pub fn counters(&self) -> (u64, u64) {
        (
            self.fetched.load(Ordering::Relaxed),
            self.rebuilt.load(Ordering::Relaxed),
        )
    }

    fn followed_from(&self, leader: i32) -> Vec<Arc<Partition>> {
        self.table
            .all()
            .into_iter()
            .filter(|p| p.replica().role == Role::Follower { leader })
            .collect()
    }

    /// Start a fetcher for every leader this node follows and has none for.
    pub fn ensure_fetchers(self: &Arc<Self>) {
        let leaders: HashSet<i32> = self
            .table
            .all()
            .iter()
            .filter_map(|p| match p.replica().role {
                Role::Follower { leader } if leader >= 0 => Some(leader),
                _ => None,
            })
            .collect();
        let mut f = self.fetchers.lock();
        f.retain(|_, h| !h.is_finished());
        for l in leaders {
            let me = self.clone();
            f.entry(l)
                .or_insert_with(|| tokio::spawn(async move { me.fetch_from(l).await }));
        }
    }

    async fn fetch_from(&self, leader: i32) {
        let link = &self.link;
        let me = link.me;
        let mut conn: Option<Connection> = None;
        let mut idle_rounds = 0;
        tracing::info!(leader, "fetcher started");
        loop {
            if self.shutdown.is_cancelled() {
                return;
            }
            let parts = self.followed_from(leader);
            if parts.is_empty() {
                // Metadata may hand us partitions again shortly; leave after a quiet second.
                idle_rounds += 1;
                if idle_rounds > 10 {
                    tracing::info!(leader, "fetcher stopped: nothing to follow");
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            idle_rounds = 0;
            let view = link.view();
            let Some((host, addr)) = view
                .nodes
                .get(&leader)
                .map(|n| (n.host.clone(), format!("{}:{}", n.host, n.port)))
            else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            if conn.is_none() {
                let tls = match self.security.peer_tls(&host) {
                    Ok(t) => t,
                    Err(e) => {
                        tracing::warn!(leader, error = %e, "cannot set up TLS to the leader");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                match Connection::connect(&addr, me, tls).await {
                    Ok(c) => conn = Some(c),
                    Err(e) => {
                        tracing::debug!(leader, error = %e, "cannot reach the leader");
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        continue;
                    }
                }
            }
            let c = conn.as_mut().expect("connected");
            let res = self.round(c, me, &parts).await;
            if let Err(e) = res {
                tracing::debug!(leader, error = %e, "fetch from the leader failed; reconnecting");
                conn = None;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }

    /// One round: truncate what needs it, then one Fetch for every followed partition.
    async fn round(&self, c: &mut Connection, me: i32, parts: &[Arc<Partition>]) -> Result<()> {
        let pending: Vec<&Arc<Partition>> = parts
            .iter()
            .filter(|p| p.replica().truncate_pending)
            .collect();
        if !pending.is_empty() {
            truncate(c, me, &pending).await?;
        }
        let mut topics: BTreeMap<String, Vec<FetchPartition>> = BTreeMap::new();
        let mut sent = Vec::new();
        for p in parts {
            let (epoch, pending) = {
                let r = p.replica();
                (r.leader_epoch, r.truncate_pending)
            };
            if pending {
                continue;
            }
            let (leo, start) = {
                let log = p.log();
                (log.log_end_offset(), log.log_start_offset())
            };
            let mut fp = FetchPartition::default();
            fp.partition = p.index;
            fp.current_leader_epoch = epoch;
            fp.fetch_offset = leo;
            fp.last_fetched_epoch = -1;
            fp.log_start_offset = start;
            fp.partition_max_bytes = PARTITION_MAX_BYTES;
            topics.entry(p.topic.clone()).or_default().push(fp);
            sent.push((p.clone(), epoch, leo));
        }
        if sent.is_empty() {
            return Ok(());
        }
        let mut req = FetchRequest::default();
        req.replica_id = BrokerId(me);
        req.max_wait_ms = self.settings.fetch_wait_max_ms;
        req.min_bytes = 1;
        req.max_bytes = RESPONSE_MAX_BYTES;
        req.session_epoch = -1;
        req.topics = topics
            .into_iter()
            .map(|(t, ps)| {
                let mut ft = FetchTopic::default();
                ft.topic = TopicName(StrBytes::from_string(t));
                ft.partitions = ps;
                ft
            })
            .collect();
        let resp: FetchResponse = c.call(ApiKey::Fetch, FETCH_VERSION, &req).await?;
        let mut backoff = false;
        let mut moved = Vec::new();
        let mut below_start = Vec::new();
        for t in resp.responses {
            for pd in t.partitions {
                let Some((part, epoch, leo)) = sent.iter().find(|(p, _, _)| {
                    p.topic == t.topic.0.as_str() && p.index == pd.partition_index
                }) else {
                    continue;
                };
                // Metadata may have moved on while the fetch was out.
                if part.replica().leader_epoch != *epoch || part.is_leader() {
                    continue;
                }
                if pd.error_code == ResponseError::OffsetOutOfRange.code() {
                    if pd.log_start_offset > *leo && self.tiered(part) {
                        // Retention or DeleteRecords emptied the bucket's copy too: its
                        // manifest still holds the epochs and producer state at its end.
                        below_start.push((part.clone(), *epoch, *leo, pd.log_start_offset));
                    } else if pd.log_start_offset > *leo {
                        part.log().reset_to(pd.log_start_offset)?;
                        part.reset_high_watermark(pd.log_start_offset);
                    } else {
                        part.replica().truncate_pending = true;
                    }
                    continue;
                }
                if pd.error_code == ResponseError::OffsetMovedToTieredStorage.code() {
                    moved.push((part.clone(), *epoch, *leo));
                    continue;
                }
                if pd.error_code != 0 {
                    tracing::debug!(topic = %part.topic, partition = part.index, code = pd.error_code, "leader refused the fetch");
                    backoff = true;
                    continue;
                }
                let records = pd.records.unwrap_or_default();
                let new_leo = if records.is_empty() {
                    *leo
                } else {
                    if part.log().log_end_offset() != *leo {
                        continue;
                    }
                    let new_leo = part.log().append_replicated(&records)?;
                    self.fetched
                        .fetch_add(records.len() as u64, Ordering::Relaxed);
                    if self.settings.flush {
                        part.flush_to(new_leo).await?;
                    }
                    new_leo
                };
                part.advance_high_watermark(pd.high_watermark.min(new_leo));
            }
        }
        for (part, epoch, leo) in moved {
            if !self.rebuild_from_bucket(&part, epoch, leo).await {
                backoff = true;
            }
        }
        for (part, epoch, leo, start) in below_start {
            if self.rebuild_from_bucket(&part, epoch, leo).await {
                continue;
            }
            // Nothing in the bucket past this log: start empty at the leader's log start.
            let r = part.replica();
            if r.leader_epoch == epoch && !r.is_leader() {
                let mut log = part.log();
                if log.log_end_offset() == leo {
                    log.reset_to(start)?;
                    drop(log);
                    drop(r);
                    part.reset_high_watermark(start);
                }
            }
        }
        if backoff {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// Whether the partition is tiered and this node can read the bucket.
    fn tiered(&self, part: &Partition) -> bool {
        self.tiering.is_some() && part.log().config().remote_storage
    }

    /// The leader answered OFFSET_MOVED_TO_TIERED_STORAGE: this follower's log (ending at
    /// `leo`) is below the leader's local start, and what lies between is in the bucket.
    /// Rather than copy it, start again at the end of the bucket's copy with the epoch
    /// history and producer state the bucket holds there, and fetch only the hot tail from
    /// the leader, as Kafka's followers do. False when it could not (yet): no object store
    /// here, the bucket unreachable, or nothing in it past `leo`.
    async fn rebuild_from_bucket(&self, part: &Arc<Partition>, epoch: i32, leo: i64) -> bool {
        let Some(t) = &self.tiering else {
            tracing::warn!(topic = %part.topic, partition = part.index, "the leader keeps this partition's older data in the bucket, and this node has no --object-store to read it: it cannot catch up");
            return false;
        };
        let topic_id = part.log().topic_id();
        let point = match t.restore_point(topic_id, part.index).await {
            Ok(Some(point)) if point.end_offset > leo => point,
            Ok(_) => {
                tracing::debug!(topic = %part.topic, partition = part.index, leo, "the bucket holds nothing past this log yet");
                return false;
            }
            Err(e) => {
                tracing::warn!(topic = %part.topic, partition = part.index, error = %e, "cannot read the bucket's copy to catch up from");
                return false;
            }
        };
        let end = point.end_offset;
        {
            let r = part.replica();
            if r.leader_epoch != epoch || r.is_leader() {
                return false;
            }
            let mut log = part.log();
            if log.log_end_offset() != leo {
                return false;
            }
            if let Err(e) = log.reset_to_restored(end, point.epochs, point.producers) {
                tracing::error!(topic = %part.topic, partition = part.index, error = %e, "rebuilding the log from the bucket failed");
                return false;
            }
            log.set_remote_upto(Some(end));
        }
        part.advance_high_watermark(end);
        self.rebuilt.fetch_add(1, Ordering::Relaxed);
        tracing::info!(topic = %part.topic, partition = part.index, from = leo, to = end, "follower skipped to the end of the bucket's copy; fetching only the leader's local tail");
        true
    }
}

/// Ask the leader where each partition's latest local epoch ends, and cut the log there.
async fn truncate(c: &mut Connection, me: i32, parts: &[&Arc<Partition>]) -> Result<()> {
    let mut topics: BTreeMap<String, Vec<OffsetForLeaderPartition>> = BTreeMap::new();
    let mut asked = Vec::new();
    for p in parts {
        let epoch = p.replica().leader_epoch;
        let latest = p.log().latest_epoch();
        let Some(latest) = latest else {
            // Nothing written in any epoch: nothing can diverge.
            p.replica().truncate_pending = false;
            continue;
        };
        let mut op = OffsetForLeaderPartition::default();
        op.partition = p.index;
        op.current_leader_epoch = epoch;
        op.leader_epoch = latest;
        topics.entry(p.topic.clone()).or_default().push(op);
        asked.push(((*p).clone(), epoch));
    }
    if asked.is_empty() {
        return Ok(());
    }
    let mut req = OffsetForLeaderEpochRequest::default();
    req.replica_id = BrokerId(me);
    req.topics = topics
        .into_iter()
        .map(|(t, ps)| {
            let mut ot = OffsetForLeaderTopic::default();
            ot.topic = TopicName(StrBytes::from_string(t));
            ot.partitions = ps;
            ot
        })
        .collect();
    let resp: OffsetForLeaderEpochResponse = c
        .call(ApiKey::OffsetForLeaderEpoch, EPOCH_VERSION, &req)
        .await?;
    for t in resp.topics {
        for r in t.partitions {
            let Some((part, epoch)) = asked
                .iter()
                .find(|(p, _)| p.topic == t.topic.0.as_str() && p.index == r.partition)
            else {
                continue;
            };
            if part.replica().leader_epoch != *epoch {
                continue;
            }
            if r.error_code != 0 {
                tracing::debug!(topic = %part.topic, partition = part.index, code = r.error_code, "OffsetForLeaderEpoch refused");
                continue;
            }
            let target = {
                let mut log = part.log();
                let leo = log.log_end_offset();
                let target = if r.leader_epoch < 0 || r.end_offset < 0 {
                    // The leader has no epoch at or below ours: none of our batches are its.
                    log.log_start_offset()
                } else {
                    // Kafka's rule: the leader's end of that epoch, but never past the end of
                    // the same epoch here.
                    let (local_epoch, local_end) = log.epoch_end_offset(r.leader_epoch);
                    let local = if local_epoch == r.leader_epoch {
                        local_end
                    } else {
                        leo
                    };
                    r.end_offset.min(local).min(leo)
                };
                log.truncate_to(target)?;
                log.log_end_offset()
            };
            if part.high_watermark() > target {
                part.reset_high_watermark(target);
            }
            part.replica().truncate_pending = false;
            tracing::info!(topic = %part.topic, partition = part.index, leader_epoch = r.leader_epoch, end_offset = r.end_offset, log_end = target, "follower truncated to the leader's log");
        }
    }
    Ok(())
}

impl Replicator {
    /// Leader upkeep until shutdown: drop followers that stopped keeping up from the ISR.
    pub async fn isr_maintenance(&self) {
        let link = &self.link;
        let lag = self.settings.lag_time_max_ms;
        let every = Duration::from_millis((lag / 4).clamp(50, 1000) as u64);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = self.shutdown.cancelled() => return,
            }
            let now = fsutil::now_ms();
            for p in self.table.all() {
                let shrink = p.replica().isr_to_shrink(now, lag);
                if let Some(isr) = shrink {
                    tracing::info!(topic = %p.topic, partition = p.index, isr = ?isr, "followers fell behind; shrinking the ISR");
                    // Sent apart: an unanswered change is sent again until the image decides
                    // it, and the other partitions' upkeep must not wait for that.
                    let link = link.clone();
                    tokio::spawn(async move {
                        if let Err(e) = link.alter_isr(&p, isr).await {
                            tracing::warn!(topic = %p.topic, partition = p.index, error = %e, "ISR shrink not committed");
                        }
                    });
                }
            }
        }
    }

    /// Leader side of a follower's fetch: record its progress, move the high watermark, and
    /// propose it back into the ISR once it has caught up.
    pub fn on_replica_fetch(&self, part: &Arc<Partition>, replica: i32, fetch_offset: i64) {
        let leo = part.log().log_end_offset();
        if fetch_offset > leo {
            // The follower has batches this leader does not: it gets OFFSET_OUT_OF_RANGE and
            // truncates; it has not caught up with anything.
            return;
        }
        let now = fsutil::now_ms();
        let expand = {
            let mut r = part.replica();
            if !r.is_leader() {
                return;
            }
            r.on_follower_fetch(replica, fetch_offset, leo, now);
            drop(r);
            if part.recompute_high_watermark() {
                // Consumers long-polling for committed data; not on every follower fetch, or
                // followers' fetches would wake each other forever.
                self.table.notify_appended();
            }
            let hw = part.high_watermark();
            let r = part.replica();
            let epoch_start = {
                let log = part.log();
                log.epochs()
                    .iter()
                    .rev()
                    .find(|(e, _)| *e == r.leader_epoch)
                    .map(|(_, s)| *s)
                    .unwrap_or(0)
            };
            r.isr_to_expand(replica, hw, epoch_start)
        };
        if let Some(isr) = expand {
            let link = self.link.clone();
            let part = part.clone();
            tokio::spawn(async move {
                if let Err(e) = link.alter_isr(&part, isr).await {
                    tracing::debug!(topic = %part.topic, partition = part.index, error = %e, "ISR expansion not committed");
                }
            });
        }
    }
}
