//! Topic administration: create, delete, grow, reconfigure. Validation follows Kafka's rules and
//! error codes so a node can pass results through to its Kafka client unchanged.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::{
    place, Cluster, Event, Load, PartitionRecord, TopicRecord, MAX_PARTITIONS, NO_LEADER,
    OFFSETS_TOPIC, TRANSACTION_STATE_TOPIC,
};
use crate::error::{Error, Result};

/// Kafka's limit on topic name length (249, so `{name}-{partition}` directory names fit).
const MAX_TOPIC_NAME_LEN: usize = 249;

/// A topic to create, as CreateTopics carries it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NewTopic {
    /// Topic name.
    pub name: String,
    /// Partition count, or -1 for the default.
    pub partitions: i32,
    /// Replication factor, or -1 for the default.
    pub replication_factor: i32,
    /// Config overrides.
    pub configs: BTreeMap<String, String>,
    /// Explicit assignment: partition `i` gets `assignments[i]`. Empty: the controller places.
    pub assignments: Vec<Vec<i32>>,
    /// The id to give the topic (a restore from a bucket recreates a topic under the id its
    /// data is filed by). None: a new random id.
    pub topic_id: Option<uuid::Uuid>,
    /// First leader epoch of each partition (a restored partition's epochs continue above
    /// those in its bucket copy). Empty: 0 everywhere.
    pub leader_epochs: Vec<i32>,
}

/// The result for one topic of a batch request.
#[derive(Debug)]
pub struct TopicOutcome {
    /// The topic the request named.
    pub name: String,
    /// The topic as created, deleted or grown (or as it would be, with validate_only).
    pub result: Result<TopicRecord>,
}

/// Kafka's topic name rules: 1..=249 characters of `[a-zA-Z0-9._-]`, and not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<()> {
    let invalid = |reason: &str| {
        Err(Error::InvalidTopicName {
            name: name.to_string(),
            reason: reason.to_string(),
        })
    };
    if name.is_empty() {
        return invalid("the name is empty");
    }
    if name == "." || name == ".." {
        return invalid("'.' and '..' are not allowed");
    }
    if name.len() > MAX_TOPIC_NAME_LEN {
        return invalid("longer than 249 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return invalid("only ASCII letters, digits, '.', '_' and '-' are allowed");
    }
    Ok(())
}

/// Kafka refuses names that differ only in '.' versus '_', because metric names conflate them.
fn collision_key(name: &str) -> String {
    name.replace('.', "_")
}

fn is_internal(name: &str) -> bool {
    name == OFFSETS_TOPIC || name == TRANSACTION_STATE_TOPIC
}

impl Cluster {
    /// Creates topics (or only validates them). Each topic succeeds or fails on its own.
    pub fn create_topics(&mut self, topics: &[NewTopic], validate_only: bool) -> Vec<TopicOutcome> {
        let mut seen = BTreeSet::new();
        let mut outcomes = Vec::with_capacity(topics.len());
        for t in topics {
            let result = if seen.insert(t.name.as_str()) {
                self.create_topic(t, validate_only)
            } else {
                Err(Error::InvalidRequest {
                    reason: format!("topic {} appears twice in the request", t.name),
                })
            };
            outcomes.push(TopicOutcome {
                name: t.name.clone(),
                result,
            });
        }
        self.finish();
        outcomes
    }

    fn create_topic(&mut self, t: &NewTopic, validate_only: bool) -> Result<TopicRecord> {
        validate_topic_name(&t.name)?;
        if self.state.topics.contains_key(&t.name) {
            return Err(Error::TopicAlreadyExists {
                name: t.name.clone(),
            });
        }
        let key = collision_key(&t.name);
        if let Some(other) = self.state.topics.keys().find(|n| collision_key(n) == key) {
            return Err(Error::InvalidTopicName {
                name: t.name.clone(),
                reason: format!(
                    "collides with existing topic {other} ('.' and '_' are equivalent)"
                ),
            });
        }
        let topic_id = match t.topic_id {
            None => new_topic_id(&self.state.topics),
            Some(id) if id.is_nil() => {
                return Err(Error::InvalidRequest {
                    reason: format!("topic {}: the nil topic id cannot be given", t.name),
                })
            }
            Some(id) => {
                if let Some((other, _)) = self.state.topics.iter().find(|(_, r)| r.topic_id == id) {
                    return Err(Error::InvalidRequest {
                        reason: format!("topic {}: id {id} is already topic {other}'s", t.name),
                    });
                }
                id
            }
        };
        let alive = self.placement_nodes();
        let mut partitions = if t.assignments.is_empty() {
            self.placed_partitions(t, &alive)?
        } else {
            self.assigned_partitions(t)?
        };
        if !t.leader_epochs.is_empty() {
            if t.leader_epochs.len() != partitions.len() || t.leader_epochs.iter().any(|e| *e < 0) {
                return Err(Error::InvalidRequest {
                    reason: format!(
                        "topic {}: {} first leader epochs for {} partitions",
                        t.name,
                        t.leader_epochs.len(),
                        partitions.len()
                    ),
                });
            }
            for (p, e) in partitions.iter_mut().zip(&t.leader_epochs) {
                p.leader_epoch = *e;
            }
        }
        let record = TopicRecord {
            topic_id,
            configs: t.configs.clone(),
            internal: is_internal(&t.name),
            partitions,
        };
        if !validate_only {
            self.events.push(Event::TopicCreated {
                topic: t.name.clone(),
                partitions: record.partitions.len(),
                replication_factor: record.replication_factor(),
            });
            self.state_mut()
                .topics
                .insert(t.name.clone(), Arc::new(record.clone()));
        }
        Ok(record)
    }

    fn placed_partitions(&self, t: &NewTopic, alive: &[i32]) -> Result<Vec<PartitionRecord>> {
        let offsets = t.name == OFFSETS_TOPIC;
        let partitions = match (t.partitions, offsets) {
            (-1, true) => self.config.offsets_topic_num_partitions,
            (-1, false) => self.config.num_partitions,
            (n, _) => n,
        };
        let rf = match (t.replication_factor, offsets) {
            (-1, true) => self.config.offsets_topic_replication_factor,
            (-1, false) => self.config.default_replication_factor,
            (n, _) => n,
        };
        let count = check_partition_count(&t.name, partitions)?;
        let rf = check_replication_factor(&t.name, rf, alive.len())?;
        let mut load = Load::of(self.state(), alive);
        Ok(place(&mut load, alive, count, rf)
            .into_iter()
            .map(new_partition)
            .collect())
    }

    /// Honours an explicit assignment: every replica registered, no duplicates, one
    /// replication factor, at least one replica alive per partition. The leader is the first
    /// alive replica and the ISR the alive ones, as Kafka does.
    fn assigned_partitions(&self, t: &NewTopic) -> Result<Vec<PartitionRecord>> {
        if t.partitions != -1 || t.replication_factor != -1 {
            return Err(Error::InvalidRequest {
                reason: format!(
                    "topic {}: partitions and replication factor must be -1 with an explicit assignment",
                    t.name
                ),
            });
        }
        let bad = |reason: String| Error::InvalidReplicaAssignment {
            topic: t.name.clone(),
            reason,
        };
        check_partition_count(
            &t.name,
            i32::try_from(t.assignments.len()).unwrap_or(i32::MAX),
        )?;
        let rf = t.assignments.first().map_or(0, Vec::len);
        let mut partitions = Vec::with_capacity(t.assignments.len());
        for (i, replicas) in t.assignments.iter().enumerate() {
            if replicas.is_empty() {
                return Err(bad(format!("partition {i} has no replicas")));
            }
            if replicas.len() != rf {
                return Err(bad(format!(
                    "partition {i} has {} replicas, partition 0 has {rf}",
                    replicas.len()
                )));
            }
            for (j, r) in replicas.iter().enumerate() {
                if replicas[..j].contains(r) {
                    return Err(bad(format!("partition {i} names node {r} twice")));
                }
                if !self.state.nodes.contains_key(r) {
                    return Err(bad(format!(
                        "partition {i} names node {r}, which is not registered"
                    )));
                }
            }
            let isr: Vec<i32> = replicas
                .iter()
                .copied()
                .filter(|r| self.is_alive(*r))
                .collect();
            let Some(&leader) = isr
                .iter()
                .find(|&&r| self.is_eligible(r))
                .or_else(|| isr.first())
            else {
                return Err(bad(format!("no replica of partition {i} is alive")));
            };
            partitions.push(PartitionRecord {
                replicas: replicas.clone(),
                leader,
                leader_epoch: 0,
                isr,
                partition_epoch: 0,
                target_replicas: None,
                original_replicas: None,
            });
        }
        Ok(partitions)
    }

    /// Deletes topics. Unknown names get UNKNOWN_TOPIC_OR_PARTITION.
    pub fn delete_topics(&mut self, names: &[String]) -> Vec<TopicOutcome> {
        let outcomes = names
            .iter()
            .map(|name| {
                let result = if self.state.topics.contains_key(name) {
                    self.events.push(Event::TopicDeleted {
                        topic: name.clone(),
                    });
                    self.state_mut()
                        .topics
                        .remove(name)
                        .map(Arc::unwrap_or_clone)
                        .ok_or_else(|| unknown(name))
                } else {
                    Err(unknown(name))
                };
                TopicOutcome {
                    name: name.clone(),
                    result,
                }
            })
            .collect();
        self.finish();
        outcomes
    }

    /// Grows topics to `count` partitions each, placing the new ones like new topics.
    pub fn create_partitions(
        &mut self,
        requests: &[(String, i32)],
        validate_only: bool,
    ) -> Vec<TopicOutcome> {
        let mut seen = BTreeSet::new();
        let mut outcomes = Vec::with_capacity(requests.len());
        for (name, count) in requests {
            let result = if seen.insert(name.as_str()) {
                self.grow_topic(name, *count, validate_only)
            } else {
                Err(Error::InvalidRequest {
                    reason: format!("topic {name} appears twice in the request"),
                })
            };
            outcomes.push(TopicOutcome {
                name: name.clone(),
                result,
            });
        }
        self.finish();
        outcomes
    }

    fn grow_topic(&mut self, name: &str, count: i32, validate_only: bool) -> Result<TopicRecord> {
        let topic = self.state.topics.get(name).ok_or_else(|| unknown(name))?;
        let current = topic.partitions.len();
        let target = check_partition_count(name, count)?;
        if target <= current {
            return Err(Error::InvalidPartitions {
                topic: name.to_string(),
                reason: format!(
                    "the topic has {current} partitions; the count can only grow (asked {count})"
                ),
            });
        }
        let alive = self.placement_nodes();
        let rf = check_replication_factor(
            name,
            i32::try_from(topic.replication_factor()).unwrap_or(i32::MAX),
            alive.len(),
        )?;
        let mut load = Load::of(self.state(), &alive);
        let added: Vec<PartitionRecord> = place(&mut load, &alive, target - current, rf)
            .into_iter()
            .map(new_partition)
            .collect();
        let mut record = TopicRecord::clone(topic);
        record.partitions.extend(added);
        if !validate_only {
            self.events.push(Event::PartitionsCreated {
                topic: name.to_string(),
                count: target,
            });
            self.state_mut()
                .topics
                .insert(name.to_string(), Arc::new(record.clone()));
        }
        Ok(record)
    }

    /// Replaces a topic's config overrides with `configs` (the complete set). Enabling unclean
    /// leader election takes effect at once for partitions that have no leader.
    pub fn alter_topic_configs(
        &mut self,
        name: &str,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<()> {
        let topic = self.state.topics.get(name).ok_or_else(|| unknown(name))?;
        if validate_only || topic.configs == configs {
            return Ok(());
        }
        if let Some(t) = self.state_mut().topics.get_mut(name) {
            Arc::make_mut(t).configs = configs;
        }
        self.events.push(Event::TopicConfigsAltered {
            topic: name.to_string(),
        });
        self.elect_leaderless();
        self.complete_reassignments();
        self.finish();
        Ok(())
    }
}

fn unknown(name: &str) -> Error {
    Error::UnknownTopicOrPartition {
        topic: name.to_string(),
        partition: None,
    }
}

fn check_partition_count(topic: &str, count: i32) -> Result<usize> {
    if !(1..=MAX_PARTITIONS).contains(&count) {
        return Err(Error::InvalidPartitions {
            topic: topic.to_string(),
            reason: format!("{count} is outside 1..={MAX_PARTITIONS}"),
        });
    }
    usize::try_from(count).map_err(|_| Error::InvalidPartitions {
        topic: topic.to_string(),
        reason: format!("{count} is not a count"),
    })
}

fn check_replication_factor(topic: &str, rf: i32, alive: usize) -> Result<usize> {
    let invalid = |reason: String| Error::InvalidReplicationFactor {
        topic: topic.to_string(),
        reason,
    };
    let rf_usize = usize::try_from(rf).map_err(|_| invalid(format!("{rf} is below 1")))?;
    if rf_usize == 0 {
        return Err(invalid("0 is below 1".to_string()));
    }
    if rf_usize > alive {
        return Err(invalid(format!(
            "replication factor {rf} is larger than the number of alive nodes ({alive})"
        )));
    }
    Ok(rf_usize)
}

fn new_partition(replicas: Vec<i32>) -> PartitionRecord {
    PartitionRecord {
        leader: replicas.first().copied().unwrap_or(NO_LEADER),
        leader_epoch: 0,
        isr: replicas.clone(),
        replicas,
        partition_epoch: 0,
        target_replicas: None,
        original_replicas: None,
    }
}

/// A random topic id, never the all-zero id (Kafka's "no id") and never one in use.
fn new_topic_id(topics: &BTreeMap<String, Arc<TopicRecord>>) -> uuid::Uuid {
    loop {
        let id = uuid::Uuid::new_v4();
        if !id.is_nil() && topics.values().all(|t| t.topic_id != id) {
            return id;
        }
    }
}
