//! Offsets committed inside a transaction (TxnOffsetCommit): written to the group's offsets
//! partition as a transactional batch of the producer, held aside, and made the group's
//! committed offsets only when the transaction's commit marker reaches that partition
//! (dropped at an abort marker), as Kafka's group coordinator does.

use std::collections::HashMap;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;

use super::group::Group;
use super::records::{partition_for, Key, OffsetValue};
use super::{check_commit, CommitEntry, GroupCoordinator, PendingWrite, MAX_METADATA_BYTES};
use crate::error::Error;
use crate::fsutil;

/// Offsets a producer's open transaction holds: (group, topic, partition) to value.
pub(super) type TxnOffsets = HashMap<(String, String, i32), OffsetValue>;

/// What the offsets-topic replay keeps per producer until its marker: the offset records
/// of its open transaction.
#[derive(Default)]
pub(super) struct ReplayTxns {
    open: HashMap<i64, Vec<(Key, Option<Bytes>)>>,
}

impl ReplayTxns {
    /// A record of a transactional batch of `producer_id`.
    pub(super) fn hold(&mut self, producer_id: i64, key: Key, value: Option<Bytes>) {
        self.open.entry(producer_id).or_default().push((key, value));
    }

    /// The marker of `producer_id`: its records if it committed.
    pub(super) fn end(&mut self, producer_id: i64, commit: bool) -> Vec<(Key, Option<Bytes>)> {
        let held = self.open.remove(&producer_id).unwrap_or_default();
        if commit {
            held
        } else {
            Vec::new()
        }
    }

    /// Transactions still open at the end of the replay.
    pub(super) fn into_open(self) -> HashMap<i64, Vec<(Key, Option<Bytes>)>> {
        self.open
    }
}

/// The marker a control record's key says: Some(true) commit, Some(false) abort.
pub(super) fn control_commit(key: Option<&Bytes>) -> Option<bool> {
    let k = key?;
    if k.len() < 4 {
        return None;
    }
    match i16::from_be_bytes([k[2], k[3]]) {
        0 => Some(false),
        1 => Some(true),
        _ => None,
    }
}

impl GroupCoordinator {
    /// TxnOffsetCommit: offsets of `group` committed by `producer_id` at `epoch`, in its
    /// open transaction, with the member checks of [`check_commit`]; the offsets become
    /// visible when the transaction commits.
    #[allow(clippy::too_many_arguments)]
    pub fn txn_commit(
        &self,
        group: &str,
        producer_id: i64,
        epoch: i16,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        entries: Vec<CommitEntry>,
    ) -> std::result::Result<(Vec<i16>, Option<PendingWrite>), ResponseError> {
        self.check_available(group)?;
        {
            let groups = self.groups.lock();
            if let Some(g) = groups.get(group) {
                check_commit(g, generation, member_id, instance_id, true)?;
            } else if generation >= 0 {
                return Err(ResponseError::IllegalGeneration);
            }
        }
        let now = fsutil::now_ms();
        let mut codes = Vec::with_capacity(entries.len());
        let mut records = Vec::new();
        let mut held = Vec::new();
        for e in entries {
            let code = if e.metadata.len() > MAX_METADATA_BYTES {
                ResponseError::OffsetMetadataTooLarge.code()
            } else {
                let v = OffsetValue {
                    offset: e.offset,
                    leader_epoch: e.leader_epoch,
                    metadata: e.metadata.clone(),
                    commit_timestamp: now,
                };
                records.push((
                    Key::Offset {
                        group: group.to_string(),
                        topic: e.topic.clone(),
                        partition: e.partition,
                    },
                    Some(v.encode()),
                ));
                held.push(((group.to_string(), e.topic, e.partition), v));
                0
            };
            codes.push(code);
        }
        if records.is_empty() {
            return Ok((codes, None));
        }
        let write = self.write_as(group, records, Some((producer_id, epoch)));
        let pending = match write {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(group, error = %e, "transactional offset commit write failed");
                let code = match e {
                    Error::InvalidProducerEpoch(_) => ResponseError::ProducerFenced.code(),
                    Error::NotLeader(_) => ResponseError::NotCoordinator.code(),
                    other => other.code(),
                };
                return Ok((
                    codes
                        .into_iter()
                        .map(|c| if c == 0 { code } else { c })
                        .collect(),
                    None,
                ));
            }
        };
        self.txn_offsets
            .lock()
            .entry(producer_id)
            .or_default()
            .extend(held);
        Ok((codes, Some(pending)))
    }

    /// A transaction marker was written to offsets partition `p`: the offsets
    /// `producer_id` committed there become the groups' (commit) or are dropped (abort).
    pub fn complete_txn(&self, p: i32, producer_id: i64, commit: bool) {
        let Some(n) = self.log.offsets_partitions() else {
            return;
        };
        let mine = {
            let mut all = self.txn_offsets.lock();
            let Some(held) = all.get_mut(&producer_id) else {
                return;
            };
            let (mine, rest): (TxnOffsets, TxnOffsets) = held
                .drain()
                .partition(|((g, _, _), _)| partition_for(g, n) == p);
            *held = rest;
            if held.is_empty() {
                all.remove(&producer_id);
            }
            mine
        };
        if !commit {
            return;
        }
        let mut groups = self.groups.lock();
        for ((group, topic, partition), v) in mine {
            groups
                .entry(group.clone())
                .or_insert_with(|| Group::new(&group))
                .offsets
                .insert((topic, partition), v);
        }
    }

    /// Whether an open transaction holds an offset of `group` for `topic`-`partition`
    /// (OffsetFetch with require_stable answers UNSTABLE_OFFSET_COMMIT then).
    pub fn has_pending_txn_offset(&self, group: &str, topic: &str, partition: i32) -> bool {
        let key = (group.to_string(), topic.to_string(), partition);
        self.txn_offsets
            .lock()
            .values()
            .any(|held| held.contains_key(&key))
    }

    /// Forget what open transactions hold for the groups of offsets partition `p` of `n`
    /// (its leadership moved; the next leader replays them).
    pub(super) fn forget_txn_offsets(&self, p: i32, n: i32) {
        let mut all = self.txn_offsets.lock();
        for held in all.values_mut() {
            held.retain(|(g, _, _), _| partition_for(g, n) != p);
        }
        all.retain(|_, held| !held.is_empty());
    }

    /// After a replay: transactions still open hold their offsets until their markers.
    pub(super) fn hold_replayed(&self, open: HashMap<i64, Vec<(Key, Option<Bytes>)>>) {
        let mut all = self.txn_offsets.lock();
        for (pid, records) in open {
            for (key, value) in records {
                let (
                    Key::Offset {
                        group,
                        topic,
                        partition,
                    },
                    Some(v),
                ) = (key, value)
                else {
                    continue;
                };
                if let Ok(v) = OffsetValue::decode(v) {
                    all.entry(pid)
                        .or_default()
                        .insert((group, topic, partition), v);
                }
            }
        }
    }
}
