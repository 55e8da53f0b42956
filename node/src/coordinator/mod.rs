//! The group coordinator: classic consumer groups and committed offsets, stored as records
//! in the compacted `__consumer_offsets` topic and rebuilt from it.
//!
//! The coordinator of a group is the leader of `__consumer_offsets` partition
//! hash(group) mod N. A standalone node leads every partition, so it coordinates every group;
//! the partition is still what state is written to and reloaded from, which is what lets
//! coordinators move with partition leadership once replication exists.
//!
//! Group logic lives in [`group`] as plain state; this module adds persistence, loading,
//! timers and the request-level checks. It reaches the rest of the node only through
//! [`OffsetsLog`] (implemented by the broker) and `partition`. A KIP-848 coordinator would sit beside
//! [`group::Group`] as a second group type sharing the offsets store and records.

pub mod group;
pub mod records;
mod txn_offsets;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::records::Compression;
use parking_lot::{Mutex, RwLock};

use crate::error::{Error, Result};
use crate::fsutil;
use crate::log::AppendInfo;
use crate::partition::Partition;
use group::{Group, GroupConfig, GroupState};
use records::{partition_for, GroupValue, Key, OffsetValue};

/// Kafka's checks of an offset commit against its group. A commit from outside the group
/// (generation -1) is allowed on an empty group, and, when transactional without a member
/// (KIP-447's producers that do not pass group metadata), on any group; every other
/// commit must come from a member of the current generation.
pub(crate) fn check_commit(
    g: &Group,
    generation: i32,
    member_id: &str,
    instance_id: Option<&str>,
    transactional: bool,
) -> std::result::Result<(), ResponseError> {
    if g.state == GroupState::Dead {
        return Err(ResponseError::CoordinatorNotAvailable);
    }
    let outside = generation < 0
        && if transactional {
            member_id.is_empty() && instance_id.is_none()
        } else {
            g.state == GroupState::Empty
        };
    if outside {
        return Ok(());
    }
    if g.state == GroupState::CompletingRebalance {
        return Err(ResponseError::RebalanceInProgress);
    }
    if let Some(i) = instance_id {
        if g.members
            .get(member_id)
            .and_then(|m| m.instance_id.as_deref())
            != Some(i)
            && g.members
                .values()
                .any(|m| m.instance_id.as_deref() == Some(i))
        {
            return Err(ResponseError::FencedInstanceId);
        }
    }
    if !g.members.contains_key(member_id) {
        return Err(ResponseError::UnknownMemberId);
    }
    if generation != g.generation {
        return Err(ResponseError::IllegalGeneration);
    }
    Ok(())
}

/// Kafka's offset.metadata.max.bytes.
pub const MAX_METADATA_BYTES: usize = 4096;

/// One partition's offset commit.
#[derive(Debug, Clone)]
pub struct CommitEntry {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
}

/// Settings of the coordinator.
#[derive(Debug, Clone, Copy)]
pub struct CoordinatorConfig {
    pub group: GroupConfig,
    pub offsets_retention: Duration,
}

/// Name of the internal topic holding consumer group state and offsets.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// What the coordinator needs of the node: the offsets topic and the write path. The
/// broker implements it; the coordinator knows nothing else of it.
pub trait OffsetsLog: Send + Sync + 'static {
    /// The offsets topic's partition count, if the topic exists.
    fn offsets_partitions(&self) -> Option<i32>;
    /// Create the offsets topic if it does not exist; its partition count.
    fn ensure_offsets_topic(&self) -> Result<i32>;
    /// A partition hosted here (of any topic: commits are checked against them).
    fn partition(&self, topic: &str, p: i32) -> Option<Arc<Partition>>;
    /// Append a batch the coordinator built to a partition it leads.
    fn append(&self, part: &Arc<Partition>, batch: Bytes) -> Result<AppendInfo>;
    /// Whether offsets partitions are replicated, so that leadership (and with it
    /// coordination) can be elsewhere.
    fn replicated(&self) -> bool;
}

/// The group coordinator.
pub struct GroupCoordinator {
    cfg: CoordinatorConfig,
    log: Arc<dyn OffsetsLog>,
    groups: Mutex<HashMap<String, Group>>,
    /// Offsets-topic partitions whose records are still being replayed.
    loading: RwLock<HashSet<i32>>,
    /// Offsets committed in open transactions, by producer id.
    txn_offsets: Mutex<HashMap<i64, txn_offsets::TxnOffsets>>,
}

/// A write that must be durable before the request is answered.
pub struct PendingWrite {
    pub partition: Arc<Partition>,
    pub last_offset: i64,
}

impl GroupCoordinator {
    /// A coordinator with nothing loaded yet.
    pub fn new(cfg: CoordinatorConfig, log: Arc<dyn OffsetsLog>) -> Self {
        GroupCoordinator {
            cfg,
            log,
            groups: Mutex::new(HashMap::new()),
            loading: RwLock::new(HashSet::new()),
            txn_offsets: Mutex::new(HashMap::new()),
        }
    }

    /// The group settings.
    pub fn group_config(&self) -> &GroupConfig {
        &self.cfg.group
    }

    /// Mark every existing offsets partition as loading (before the listener opens).
    pub fn begin_load(&self) {
        if let Some(n) = self.log.offsets_partitions() {
            self.loading.write().extend(0..n);
        }
    }

    /// Replay every offsets partition into memory.
    pub fn load_all(&self) {
        let Some(n) = self.log.offsets_partitions() else {
            return;
        };
        let started = Instant::now();
        for p in 0..n {
            if let Err(e) = self.load_partition(p) {
                tracing::error!(partition = p, error = %e, "failed to load group state; groups of this partition stay unavailable");
                continue;
            }
            self.loading.write().remove(&p);
        }
        let groups = self.groups.lock().len();
        tracing::info!(
            groups,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "loaded consumer group state"
        );
    }

    fn load_partition(&self, p: i32) -> Result<()> {
        let Some(part) = self.log.partition(OFFSETS_TOPIC, p) else {
            return Ok(());
        };
        let mut offset = part.log().log_start_offset();
        let now = Instant::now();
        let mut txns = txn_offsets::ReplayTxns::default();
        loop {
            let plan = {
                let log = part.log();
                log.plan_read(offset, 4 << 20, true, log.log_end_offset())?
            };
            let Some(plan) = plan else { break };
            let raw = plan.read()?;
            for set in crate::log::records::decode_all(&raw)? {
                for r in set.records {
                    offset = r.offset + 1;
                    if r.control {
                        if let Some(commit) = txn_offsets::control_commit(r.key.as_ref()) {
                            for (key, value) in txns.end(r.producer_id, commit) {
                                self.apply(&key, value, now)?;
                            }
                        }
                        continue;
                    }
                    let Some(key) = r.key.and_then(|k| Key::decode(k).ok().flatten()) else {
                        continue;
                    };
                    if r.transactional {
                        txns.hold(r.producer_id, key, r.value);
                        continue;
                    }
                    self.apply(&key, r.value, now)?;
                }
            }
        }
        self.hold_replayed(txns.into_open());
        Ok(())
    }

    fn apply(&self, key: &Key, value: Option<Bytes>, now: Instant) -> Result<()> {
        let mut groups = self.groups.lock();
        match (key, value) {
            (
                Key::Offset {
                    group,
                    topic,
                    partition,
                },
                Some(v),
            ) => {
                let v = OffsetValue::decode(v)?;
                groups
                    .entry(group.clone())
                    .or_insert_with(|| Group::new(group))
                    .offsets
                    .insert((topic.clone(), *partition), v);
            }
            (
                Key::Offset {
                    group,
                    topic,
                    partition,
                },
                None,
            ) => {
                if let Some(g) = groups.get_mut(group) {
                    g.offsets.remove(&(topic.clone(), *partition));
                }
            }
            (Key::Group { group }, Some(v)) => {
                let v = GroupValue::decode(v)?;
                groups
                    .entry(group.clone())
                    .or_insert_with(|| Group::new(group))
                    .restore(v, now);
            }
            (Key::Group { group }, None) => {
                groups.remove(group);
            }
        }
        Ok(())
    }

    /// Cluster mode: this node started or stopped leading offsets partition `p`. Taking
    /// over replays the partition (groups answer COORDINATOR_LOAD_IN_PROGRESS meanwhile);
    /// giving up forgets its groups, which the new leader rebuilds from the same records.
    pub fn on_offsets_leadership(self: &Arc<Self>, p: i32, leading: bool) {
        let Some(n) = self.log.offsets_partitions() else {
            return;
        };
        self.groups.lock().retain(|g, _| partition_for(g, n) != p);
        self.forget_txn_offsets(p, n);
        if !leading {
            self.loading.write().remove(&p);
            tracing::info!(
                partition = p,
                "no longer coordinating the groups of this offsets partition"
            );
            return;
        }
        self.loading.write().insert(p);
        let me = self.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            // Replay only what is committed: wait (briefly) for the high watermark to reach
            // the log end, as a new leader's followers catch up.
            if let Some(part) = me.log.partition(OFFSETS_TOPIC, p) {
                part.wait_caught_up(Duration::from_secs(10));
            }
            let res = me.load_partition(p);
            if !me
                .log
                .partition(OFFSETS_TOPIC, p)
                .is_some_and(|x| x.is_leader())
            {
                return;
            }
            match res {
                Ok(()) => {
                    me.loading.write().remove(&p);
                    tracing::info!(
                        partition = p,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "coordinating the groups of this offsets partition"
                    );
                }
                Err(e) => tracing::error!(partition = p, error = %e, "failed to load group state"),
            }
        });
    }

    /// Every committed offset held here: (group, topic, partition, offset), for metrics.
    pub fn committed_offsets(&self) -> Vec<(String, String, i32, i64)> {
        let groups = self.groups.lock();
        let mut out = Vec::new();
        for (id, g) in groups.iter() {
            for ((t, p), v) in &g.offsets {
                out.push((id.clone(), t.clone(), *p, v.offset));
            }
        }
        out
    }

    /// Check that the coordinator can serve `group` now.
    pub fn check_available(&self, group: &str) -> std::result::Result<(), ResponseError> {
        if group.is_empty() {
            return Err(ResponseError::InvalidGroupId);
        }
        let n = match self.log.offsets_partitions() {
            Some(n) => n,
            None => self
                .log
                .ensure_offsets_topic()
                .map_err(|_| ResponseError::CoordinatorNotAvailable)?,
        };
        let p = partition_for(group, n);
        if self.log.replicated()
            && !self
                .log
                .partition(OFFSETS_TOPIC, p)
                .is_some_and(|x| x.is_leader())
        {
            return Err(ResponseError::NotCoordinator);
        }
        if self.loading.read().contains(&p) {
            return Err(ResponseError::CoordinatorLoadInProgress);
        }
        Ok(())
    }

    /// Append records for `group` to its offsets partition.
    fn write(&self, group: &str, records: Vec<(Key, Option<Bytes>)>) -> Result<PendingWrite> {
        self.write_as(group, records, None)
    }

    /// Append records for `group` to its offsets partition, as a transactional batch of
    /// `producer` (id, epoch) when given (TxnOffsetCommit), without a sequence either way.
    fn write_as(
        &self,
        group: &str,
        records: Vec<(Key, Option<Bytes>)>,
        producer: Option<(i64, i16)>,
    ) -> Result<PendingWrite> {
        let partitions = self.log.ensure_offsets_topic()?;
        let p = partition_for(group, partitions);
        let part = self
            .log
            .partition(OFFSETS_TOPIC, p)
            .ok_or_else(|| Error::UnknownTopicOrPartition(format!("{OFFSETS_TOPIC}-{p}")))?;
        let now = fsutil::now_ms();
        let recs: Vec<_> = records
            .into_iter()
            .enumerate()
            .map(|(i, (k, v))| {
                let mut r = crate::log::records::plain_record(i as i64, now, Some(k.encode()), v);
                if let Some((id, epoch)) = producer {
                    r.transactional = true;
                    r.producer_id = id;
                    r.producer_epoch = epoch;
                }
                r
            })
            .collect();
        let batch = crate::log::records::encode(&recs, Compression::None)?;
        let info = self.log.append(&part, batch.into())?;
        Ok(PendingWrite {
            partition: part,
            last_offset: info.last_offset,
        })
    }

    fn persist_group(&self, g: &mut Group) {
        if !g.needs_persist {
            return;
        }
        g.needs_persist = false;
        if let Err(e) = self.write(
            &g.id.clone(),
            vec![(
                Key::Group {
                    group: g.id.clone(),
                },
                Some(g.to_record().encode()),
            )],
        ) {
            tracing::warn!(group = %g.id, error = %e, "failed to persist group metadata");
            g.needs_persist = true;
        }
    }

    /// Run `f` on the group (created if missing when `create`), then persist it if needed.
    pub fn with_group<T>(
        &self,
        group: &str,
        create: bool,
        f: impl FnOnce(&mut Group, &GroupConfig) -> T,
    ) -> Option<T> {
        let mut groups = self.groups.lock();
        if !groups.contains_key(group) {
            if !create {
                return None;
            }
            groups.insert(group.to_string(), Group::new(group));
        }
        let g = groups.get_mut(group).expect("present");
        let out = f(g, &self.cfg.group);
        self.persist_group(g);
        Some(out)
    }

    /// Commit offsets. Returns per-partition codes and the write to wait for.
    #[allow(clippy::too_many_arguments)]
    pub fn commit(
        &self,
        group: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        entries: Vec<CommitEntry>,
    ) -> std::result::Result<(Vec<i16>, Option<PendingWrite>), ResponseError> {
        self.check_available(group)?;
        let mut groups = self.groups.lock();
        match groups.get(group) {
            None if generation >= 0 => return Err(ResponseError::IllegalGeneration),
            None => {
                groups.insert(group.to_string(), Group::new(group));
            }
            Some(g) => check_commit(g, generation, member_id, instance_id, false)?,
        }
        let now = fsutil::now_ms();
        let mut codes = Vec::with_capacity(entries.len());
        let mut writes = Vec::new();
        let mut accepted = Vec::new();
        for e in entries {
            let code = if e.metadata.len() > MAX_METADATA_BYTES {
                ResponseError::OffsetMetadataTooLarge.code()
            } else if self.log.partition(&e.topic, e.partition).is_none() {
                ResponseError::UnknownTopicOrPartition.code()
            } else {
                let v = OffsetValue {
                    offset: e.offset,
                    leader_epoch: e.leader_epoch,
                    metadata: e.metadata.clone(),
                    commit_timestamp: now,
                };
                writes.push((
                    Key::Offset {
                        group: group.to_string(),
                        topic: e.topic.clone(),
                        partition: e.partition,
                    },
                    Some(v.encode()),
                ));
                accepted.push(((e.topic, e.partition), v));
                0
            };
            codes.push(code);
        }
        if writes.is_empty() {
            return Ok((codes, None));
        }
        let pending = match self.write(group, writes) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(group, error = %e, "offset commit write failed");
                let code = e.code();
                return Ok((
                    codes
                        .into_iter()
                        .map(|c| if c == 0 { code } else { c })
                        .collect(),
                    None,
                ));
            }
        };
        let g = groups.get_mut(group).expect("present");
        for (k, v) in accepted {
            g.offsets.insert(k, v);
        }
        Ok((codes, Some(pending)))
    }

    /// Committed offsets of a group: all of them when `wanted` is None.
    pub fn fetch_offsets(
        &self,
        group: &str,
        wanted: Option<Vec<(String, i32)>>,
    ) -> std::result::Result<Vec<(String, i32, Option<OffsetValue>)>, ResponseError> {
        self.check_available(group)?;
        let groups = self.groups.lock();
        let g = groups.get(group);
        Ok(match wanted {
            Some(list) => list
                .into_iter()
                .map(|(t, p)| {
                    let v = g.and_then(|g| g.offsets.get(&(t.clone(), p)).cloned());
                    (t, p, v)
                })
                .collect(),
            None => g
                .map(|g| {
                    g.offsets
                        .iter()
                        .map(|((t, p), v)| (t.clone(), *p, Some(v.clone())))
                        .collect()
                })
                .unwrap_or_default(),
        })
    }

    /// (group id, protocol type, state) of every group.
    pub fn list(&self) -> Vec<(String, String, GroupState)> {
        let groups = self.groups.lock();
        let mut out: Vec<_> = groups
            .values()
            .map(|g| {
                (
                    g.id.clone(),
                    g.protocol_type.clone().unwrap_or_default(),
                    g.state,
                )
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Delete an empty group with its offsets.
    pub fn delete_group(
        &self,
        group: &str,
    ) -> std::result::Result<Option<PendingWrite>, ResponseError> {
        self.check_available(group)?;
        let mut groups = self.groups.lock();
        let Some(g) = groups.get(group) else {
            return Err(ResponseError::GroupIdNotFound);
        };
        if g.state != GroupState::Empty {
            return Err(ResponseError::NonEmptyGroup);
        }
        let mut tombstones: Vec<(Key, Option<Bytes>)> = g
            .offsets
            .keys()
            .map(|(t, p)| {
                (
                    Key::Offset {
                        group: group.to_string(),
                        topic: t.clone(),
                        partition: *p,
                    },
                    None,
                )
            })
            .collect();
        tombstones.push((
            Key::Group {
                group: group.to_string(),
            },
            None,
        ));
        let pending = self.write(group, tombstones).map_err(|e| e.kafka_code())?;
        groups.remove(group);
        Ok(Some(pending))
    }

    /// Delete committed offsets of some partitions; refused for topics an active group uses.
    pub fn delete_offsets(
        &self,
        group: &str,
        partitions: Vec<(String, i32)>,
    ) -> std::result::Result<(Vec<i16>, Option<PendingWrite>), ResponseError> {
        self.check_available(group)?;
        let mut groups = self.groups.lock();
        let Some(g) = groups.get_mut(group) else {
            return Err(ResponseError::GroupIdNotFound);
        };
        let mut codes = Vec::new();
        let mut tombstones = Vec::new();
        for (t, p) in partitions {
            if g.state != GroupState::Empty && g.subscribed_to(&t) {
                codes.push(ResponseError::GroupSubscribedToTopic.code());
                continue;
            }
            if self.log.partition(&t, p).is_none() {
                codes.push(ResponseError::UnknownTopicOrPartition.code());
                continue;
            }
            if g.offsets.remove(&(t.clone(), p)).is_some() {
                tombstones.push((
                    Key::Offset {
                        group: group.to_string(),
                        topic: t,
                        partition: p,
                    },
                    None,
                ));
            }
            codes.push(0);
        }
        if tombstones.is_empty() {
            return Ok((codes, None));
        }
        let pending = self.write(group, tombstones).map_err(|e| e.kafka_code())?;
        Ok((codes, Some(pending)))
    }

    /// Timers: session expiry, rebalance deadlines, offset expiry of empty groups.
    pub fn tick(&self, expire_offsets: bool) {
        let now = Instant::now();
        let now_ms = fsutil::now_ms();
        let retention_ms = self.cfg.offsets_retention.as_millis() as i64;
        let mut groups = self.groups.lock();
        let mut dead = Vec::new();
        for g in groups.values_mut() {
            g.tick(&self.cfg.group, now);
            if expire_offsets && g.state == GroupState::Empty {
                let expired = expired_offsets(g, now_ms, retention_ms);
                if !expired.is_empty() {
                    let tombstones = expired
                        .iter()
                        .map(|(t, p)| {
                            (
                                Key::Offset {
                                    group: g.id.clone(),
                                    topic: t.clone(),
                                    partition: *p,
                                },
                                None,
                            )
                        })
                        .collect();
                    if self.write(&g.id.clone(), tombstones).is_ok() {
                        for k in &expired {
                            g.offsets.remove(k);
                        }
                        tracing::info!(group = %g.id, expired = expired.len(), "expired committed offsets");
                    }
                }
                if g.offsets.is_empty() && g.members.is_empty() {
                    dead.push(g.id.clone());
                }
            }
            self.persist_group(g);
        }
        for id in dead {
            if self
                .write(&id, vec![(Key::Group { group: id.clone() }, None)])
                .is_ok()
            {
                groups.remove(&id);
            }
        }
    }
}

/// Offsets of an empty group older than the retention, measured from the later of the
/// commit and the moment the group became empty (Kafka's rule since 2.1).
pub fn expired_offsets(g: &Group, now_ms: i64, retention_ms: i64) -> Vec<(String, i32)> {
    g.offsets
        .iter()
        .filter(|(_, v)| now_ms - v.commit_timestamp.max(g.state_timestamp) > retention_ms)
        .map(|(k, _)| k.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_counts_from_when_the_group_emptied() {
        let mut g = Group::new("g");
        g.state_timestamp = 1_000;
        g.offsets.insert(
            ("t".into(), 0),
            OffsetValue {
                offset: 1,
                leader_epoch: -1,
                metadata: String::new(),
                commit_timestamp: 500,
            },
        );
        g.offsets.insert(
            ("t".into(), 1),
            OffsetValue {
                offset: 1,
                leader_epoch: -1,
                metadata: String::new(),
                commit_timestamp: 5_000,
            },
        );
        assert!(expired_offsets(&g, 1_500, 1_000).is_empty());
        assert_eq!(
            expired_offsets(&g, 2_500, 1_000),
            vec![("t".to_string(), 0)]
        );
        assert_eq!(expired_offsets(&g, 7_000, 1_000).len(), 2);
    }
}
