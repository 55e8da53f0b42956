//! Leader elections asked for by an operator (Kafka's ElectLeaders, `kafka-leader-election.sh`).
//!
//! - **Preferred**: leadership goes to the first replica when it is alive and in the ISR
//!   (ELECTION_NOT_NEEDED when it already leads, PREFERRED_LEADER_NOT_AVAILABLE otherwise).
//! - **Unclean**: only for partitions without a leader; an alive ISR member is taken first,
//!   then any alive replica, whose ISR becomes itself (ELIGIBLE_LEADERS_NOT_AVAILABLE when no
//!   replica is alive). The topic's `unclean.leader.election.enable` does not matter: the
//!   operator asked for it explicitly, as in Kafka.
//!
//! A leader change bumps the leader epoch and the partition epoch and emits
//! [`Event::LeaderChanged`], as the automatic elections do. Asked for every partition,
//! partitions that needed no election are left out of the answer, as Kafka does.

use super::{elect, push_partition_events, Cluster, NO_LEADER};
use crate::error::{Error, Result};

/// Kafka's election types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElectionType {
    /// Move leadership to the first (preferred) replica.
    Preferred,
    /// Elect any alive replica of a partition that has no leader.
    Unclean,
}

impl ElectionType {
    /// From Kafka's `election_type` byte (0 preferred, 1 unclean).
    pub fn from_kafka(value: i32) -> Option<ElectionType> {
        match value {
            0 => Some(ElectionType::Preferred),
            1 => Some(ElectionType::Unclean),
            _ => None,
        }
    }
}

/// One partition's answer to an admin request.
#[derive(Debug)]
pub struct PartitionOutcome {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: i32,
    /// `Ok` when the change was made.
    pub result: Result<()>,
}

impl Cluster {
    /// Runs an election on each named partition, or on every partition with `None` (then
    /// partitions that needed none are not reported).
    pub fn elect_leaders(
        &mut self,
        kind: ElectionType,
        partitions: Option<&[(String, i32)]>,
    ) -> Vec<PartitionOutcome> {
        let all: Vec<(String, i32)>;
        let (targets, every) = match partitions {
            Some(p) => (p, false),
            None => {
                all = self
                    .state
                    .topics
                    .iter()
                    .flat_map(|(name, t)| {
                        (0..t.partitions.len())
                            .map(move |i| (name.clone(), i32::try_from(i).unwrap_or(i32::MAX)))
                    })
                    .collect();
                (all.as_slice(), true)
            }
        };
        let mut out = Vec::new();
        for (topic, partition) in targets {
            let result = self.elect_one(kind, topic, *partition);
            if every && matches!(result, Err(Error::ElectionNotNeeded { .. })) {
                continue;
            }
            out.push(PartitionOutcome {
                topic: topic.clone(),
                partition: *partition,
                result,
            });
        }
        self.finish();
        out
    }

    fn elect_one(&mut self, kind: ElectionType, topic: &str, partition: i32) -> Result<()> {
        let current = self.partition(topic, partition)?;
        let not_needed = || Error::ElectionNotNeeded {
            topic: topic.to_string(),
            partition,
            leader: current.leader,
        };
        match kind {
            ElectionType::Preferred => {
                let preferred = current.replicas.first().copied().unwrap_or(NO_LEADER);
                if current.leader == preferred {
                    return Err(not_needed());
                }
                let why = if !self.is_alive(preferred) {
                    Some("it is not alive")
                } else if !self.is_eligible(preferred) {
                    Some("it is shutting down")
                } else if !current.isr.contains(&preferred) {
                    Some("it is not in the ISR")
                } else {
                    None
                };
                if let Some(reason) = why {
                    return Err(Error::PreferredLeaderNotAvailable {
                        topic: topic.to_string(),
                        partition,
                        preferred,
                        reason: reason.to_string(),
                    });
                }
                self.change_partition(topic, partition, |p, _| {
                    p.leader = preferred;
                    Some(false)
                });
                Ok(())
            }
            ElectionType::Unclean => {
                if current.leader != NO_LEADER {
                    return Err(not_needed());
                }
                if !current.replicas.iter().any(|r| self.is_alive(*r)) {
                    return Err(Error::EligibleLeadersNotAvailable {
                        topic: topic.to_string(),
                        partition,
                    });
                }
                self.change_partition(topic, partition, |p, live| elect(p, live, true));
                Ok(())
            }
        }
    }

    /// Applies a leader change made by `f` (which returns whether the ISR was reset, or
    /// `None` if it changed nothing): bumps the epochs and records the events.
    fn change_partition(
        &mut self,
        topic: &str,
        partition: i32,
        f: impl FnOnce(
            &mut super::PartitionRecord,
            &std::collections::BTreeMap<i32, super::Liveness>,
        ) -> Option<bool>,
    ) {
        let Ok(index) = usize::try_from(partition) else {
            return;
        };
        self.dirty = true;
        let live = &self.live;
        let state = std::sync::Arc::make_mut(&mut self.state);
        let Some(p) = state
            .topics
            .get_mut(topic)
            .and_then(|t| std::sync::Arc::make_mut(t).partitions.get_mut(index))
        else {
            return;
        };
        let Some(isr_reset) = f(p, live) else {
            return;
        };
        p.leader_epoch = p.leader_epoch.saturating_add(1);
        p.partition_epoch = p.partition_epoch.saturating_add(1);
        push_partition_events(
            &mut self.events,
            topic,
            index,
            p,
            isr_reset,
            Some(isr_reset),
        );
    }
}

#[cfg(test)]
mod tests;
