//! A change of [`State`] as data: what a commit writes to the metadata log.
//!
//! [`Delta::between`] compares two states record by record (a partition, a topic's
//! settings, a node, one user's SCRAM credentials, one ACL, one quota entity) and keeps only
//! what differs, so an ISR change is one partition record and a node failure that moves a
//! thousand leaders is a thousand partition records in one delta. [`Delta::apply`] replays it.
//! The invariant the stores rely on, checked by the property tests:
//! `Delta::between(a, b).apply(a) == b` for any two states.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use strata_security::acl::AclBinding;
use strata_security::quota::{QuotaEntity, QuotaKey, QuotaValue};
use strata_security::scram::{ScramCredential, ScramMechanism};

use super::{NodeRecord, PartitionRecord, State, TopicRecord};
use crate::error::{Error, Result};

/// The changes that turn the state at version `from` into the state at version `to`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delta {
    /// [`State::version`] the delta applies to.
    pub from: u64,
    /// [`State::version`] after it.
    pub to: u64,
    /// Record changes, applied in order.
    pub changes: Vec<Change>,
}

/// A topic's settings without its partitions (those travel as [`Change::Partition`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    /// Kafka topic id; a different id under the same name is a new topic.
    pub topic_id: uuid::Uuid,
    /// The complete set of config overrides.
    pub configs: BTreeMap<String, String>,
    /// Internal topic flag.
    pub internal: bool,
    /// Partition count; new partitions follow as [`Change::Partition`] records.
    pub partitions: u32,
}

/// One record's new value (`None`: the record is gone).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    /// The cluster id (only ever set once, when the state is created).
    ClusterId { cluster_id: String },
    /// The counters handed out by the controller.
    Counters {
        next_broker_epoch: i64,
        producer_id_block_end: i64,
    },
    /// The node sets of placement: excluded nodes and the last balanced set.
    Placement {
        excluded_nodes: BTreeSet<i32>,
        balanced_for: BTreeSet<i32>,
    },
    /// A node's registration.
    Node { id: i32, record: Option<NodeRecord> },
    /// A topic's settings, or its deletion.
    Topic {
        name: String,
        meta: Option<TopicMeta>,
    },
    /// One partition of a topic.
    Partition {
        topic: String,
        index: u32,
        record: PartitionRecord,
    },
    /// A user's SCRAM credentials.
    Scram {
        user: String,
        credentials: Option<BTreeMap<ScramMechanism, ScramCredential>>,
    },
    /// One ACL added (`present`) or removed.
    Acl { binding: AclBinding, present: bool },
    /// One quota entity's values.
    Quota {
        entity: QuotaEntity,
        quotas: Option<BTreeMap<QuotaKey, QuotaValue>>,
    },
}

fn meta(t: &TopicRecord) -> TopicMeta {
    TopicMeta {
        topic_id: t.topic_id,
        configs: t.configs.clone(),
        internal: t.internal,
        partitions: u32::try_from(t.partitions.len()).unwrap_or(u32::MAX),
    }
}

/// Keyed records that differ between two maps: `(key, Some(new))` for added or changed,
/// `(key, None)` for removed.
fn map_diff<'a, K: Ord + Clone, V: PartialEq + Clone>(
    before: &'a BTreeMap<K, V>,
    after: &'a BTreeMap<K, V>,
) -> impl Iterator<Item = (K, Option<V>)> + 'a {
    let removed = before
        .keys()
        .filter(|k| !after.contains_key(*k))
        .map(|k| (k.clone(), None));
    let changed = after
        .iter()
        .filter(|(k, v)| before.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), Some(v.clone())));
    removed.chain(changed)
}

impl Delta {
    /// What changed from `before` to `after`.
    pub fn between(before: &State, after: &State) -> Delta {
        let mut changes = Vec::new();
        if before.cluster_id != after.cluster_id {
            changes.push(Change::ClusterId {
                cluster_id: after.cluster_id.clone(),
            });
        }
        if (before.next_broker_epoch, before.producer_id_block_end)
            != (after.next_broker_epoch, after.producer_id_block_end)
        {
            changes.push(Change::Counters {
                next_broker_epoch: after.next_broker_epoch,
                producer_id_block_end: after.producer_id_block_end,
            });
        }
        if before.excluded_nodes != after.excluded_nodes
            || before.balanced_for != after.balanced_for
        {
            changes.push(Change::Placement {
                excluded_nodes: after.excluded_nodes.clone(),
                balanced_for: after.balanced_for.clone(),
            });
        }
        changes.extend(
            map_diff(&before.nodes, &after.nodes).map(|(id, record)| Change::Node { id, record }),
        );
        for name in before.topics.keys() {
            if !after.topics.contains_key(name) {
                changes.push(Change::Topic {
                    name: name.clone(),
                    meta: None,
                });
            }
        }
        for (name, t) in &after.topics {
            let old = before.topics.get(name);
            if old == Some(t) {
                continue;
            }
            // The same topic (same id) keeps the partitions that did not change.
            let kept = old.filter(|o| o.topic_id == t.topic_id);
            let new_meta = meta(t);
            if kept.map(|k| meta(k)).as_ref() != Some(&new_meta) {
                changes.push(Change::Topic {
                    name: name.clone(),
                    meta: Some(new_meta),
                });
            }
            for (i, p) in t.partitions.iter().enumerate() {
                if kept.and_then(|o| o.partitions.get(i)) != Some(p) {
                    changes.push(Change::Partition {
                        topic: name.clone(),
                        index: u32::try_from(i).unwrap_or(u32::MAX),
                        record: p.clone(),
                    });
                }
            }
        }
        changes.extend(
            map_diff(&before.scram_credentials, &after.scram_credentials)
                .map(|(user, credentials)| Change::Scram { user, credentials }),
        );
        changes.extend(
            before
                .acls
                .difference(&after.acls)
                .map(|b| Change::Acl {
                    binding: b.clone(),
                    present: false,
                })
                .chain(after.acls.difference(&before.acls).map(|b| Change::Acl {
                    binding: b.clone(),
                    present: true,
                })),
        );
        changes.extend(
            map_diff(&before.client_quotas, &after.client_quotas)
                .map(|(entity, quotas)| Change::Quota { entity, quotas }),
        );
        Delta {
            from: before.version,
            to: after.version,
            changes,
        }
    }

    /// Applies the delta to `state`, which must be at version `from`. `origin` names where
    /// the delta was read from, for the error. On error `state` may be half-changed: callers
    /// replay onto a state they discard on failure.
    pub fn apply(&self, state: &mut State, origin: &str) -> Result<()> {
        let broken = |reason: String| Error::BrokenLog {
            origin: origin.to_string(),
            reason,
        };
        if state.version != self.from {
            return Err(broken(format!(
                "a change from version {} follows version {}",
                self.from, state.version
            )));
        }
        for change in &self.changes {
            match change {
                Change::ClusterId { cluster_id } => state.cluster_id = cluster_id.clone(),
                Change::Counters {
                    next_broker_epoch,
                    producer_id_block_end,
                } => {
                    state.next_broker_epoch = *next_broker_epoch;
                    state.producer_id_block_end = *producer_id_block_end;
                }
                Change::Placement {
                    excluded_nodes,
                    balanced_for,
                } => {
                    state.excluded_nodes = excluded_nodes.clone();
                    state.balanced_for = balanced_for.clone();
                }
                Change::Node { id, record } => set(&mut state.nodes, *id, record.clone()),
                Change::Topic { name, meta: None } => {
                    state.topics.remove(name);
                }
                Change::Topic {
                    name,
                    meta: Some(m),
                } => {
                    let count = m.partitions as usize;
                    let t = Arc::make_mut(state.topics.entry(name.clone()).or_insert_with(|| {
                        Arc::new(TopicRecord {
                            topic_id: m.topic_id,
                            configs: BTreeMap::new(),
                            internal: false,
                            partitions: Vec::new(),
                        })
                    }));
                    if t.topic_id != m.topic_id {
                        t.partitions.clear();
                    }
                    t.topic_id = m.topic_id;
                    t.configs = m.configs.clone();
                    t.internal = m.internal;
                    // New partitions are placeholders until their records follow.
                    t.partitions.resize(count, placeholder());
                }
                Change::Partition {
                    topic,
                    index,
                    record,
                } => {
                    let slot = state
                        .topics
                        .get_mut(topic)
                        .and_then(|t| Arc::make_mut(t).partitions.get_mut(*index as usize))
                        .ok_or_else(|| {
                            broken(format!(
                                "partition {topic}-{index} changed but never created"
                            ))
                        })?;
                    *slot = record.clone();
                }
                Change::Scram { user, credentials } => set(
                    &mut state.scram_credentials,
                    user.clone(),
                    credentials.clone(),
                ),
                Change::Acl { binding, present } => {
                    if *present {
                        state.acls.insert(binding.clone());
                    } else {
                        state.acls.remove(binding);
                    }
                }
                Change::Quota { entity, quotas } => {
                    set(&mut state.client_quotas, entity.clone(), quotas.clone())
                }
            }
        }
        // Only topics whose settings changed can have gained placeholders.
        let grown = self.changes.iter().filter_map(|c| match c {
            Change::Topic {
                name,
                meta: Some(_),
            } => Some(name),
            _ => None,
        });
        if let Some((name, i)) = grown
            .filter_map(|name| Some((name, state.topics.get(name)?)))
            .find_map(|(name, t)| {
                t.partitions
                    .iter()
                    .position(|p| p.replicas.is_empty())
                    .map(|i| (name, i))
            })
        {
            return Err(broken(format!(
                "partition {name}-{i} created without its record"
            )));
        }
        state.version = self.to;
        Ok(())
    }

    /// Compact JSON, the form the stores write.
    pub fn to_json(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self).map_err(Error::EncodeState)
    }

    /// Parses [`Delta::to_json`]'s output.
    pub fn from_json(bytes: &[u8], origin: &str) -> Result<Delta> {
        serde_json::from_slice(bytes).map_err(|source| Error::CorruptState {
            path: origin.to_string(),
            source,
        })
    }
}

fn set<K: Ord, V>(map: &mut BTreeMap<K, V>, key: K, value: Option<V>) {
    match value {
        Some(v) => {
            map.insert(key, v);
        }
        None => {
            map.remove(&key);
        }
    }
}

fn placeholder() -> PartitionRecord {
    PartitionRecord {
        replicas: Vec::new(),
        leader: super::NO_LEADER,
        leader_epoch: 0,
        isr: Vec::new(),
        partition_epoch: 0,
        target_replicas: None,
        original_replicas: None,
    }
}

#[cfg(test)]
mod tests;
