//! Partition reassignments asked for by an operator (Kafka's AlterPartitionReassignments and
//! ListPartitionReassignments, `kafka-reassign-partitions.sh`).
//!
//! A move goes through the same machinery as a rebalance ([`super::reassign`]): `replicas`
//! becomes the target followed by the replicas leaving, and the move completes when every
//! target replica is in the ISR. What this adds is Kafka's request rules:
//!
//! - targets are checked first: not empty, no duplicates, every node registered and alive
//!   (INVALID_REPLICA_ASSIGNMENT), and, when asked (Kafka's v1 flag), the same size as now
//!   (INVALID_REPLICATION_FACTOR); the replication factor may change otherwise;
//! - a target equal to the current replicas (or to the target in flight) changes nothing;
//!   a target equal to the original replicas of a move in flight cancels it;
//! - a cancel (Kafka's null replicas) reverts to the original replicas: the ISR keeps its
//!   original members, and a leader that was not one of them hands over to the first
//!   original replica in sync. A cancel that would leave no in-sync replica is refused
//!   (Kafka would elect uncleanly); the move can be re-targeted or left to complete instead.

use super::elect::PartitionOutcome;
use super::{push_partition_events, Cluster, NO_LEADER};
use crate::error::{Error, Result};

/// One partition of an AlterPartitionReassignments request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReassignmentRequest {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: i32,
    /// Target replicas, preferred leader first; `None` cancels the move in flight.
    pub replicas: Option<Vec<i32>>,
}

/// A move in flight as ListPartitionReassignments reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OngoingReassignment {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: i32,
    /// Current replicas: the target followed by the replicas leaving.
    pub replicas: Vec<i32>,
    /// Target replicas that were not replicas before the move.
    pub adding: Vec<i32>,
    /// Replicas that leave when the move completes.
    pub removing: Vec<i32>,
}

impl Cluster {
    /// Starts, re-targets or cancels moves. With `keep_replication_factor`, a target whose
    /// size differs from the partition's replication factor is refused.
    pub fn alter_reassignments(
        &mut self,
        requests: &[ReassignmentRequest],
        keep_replication_factor: bool,
    ) -> Vec<PartitionOutcome> {
        let mut out = Vec::with_capacity(requests.len());
        for r in requests {
            let result = match &r.replicas {
                Some(to) => self.reassign_one(&r.topic, r.partition, to, keep_replication_factor),
                None => self.cancel_one(&r.topic, r.partition),
            };
            out.push(PartitionOutcome {
                topic: r.topic.clone(),
                partition: r.partition,
                result,
            });
        }
        // Targets already in the ISR (reorders, shrinks) complete at once; a move onto alive
        // nodes may give a leaderless partition a leader.
        self.elect_leaderless();
        self.complete_reassignments();
        self.finish();
        out
    }

    /// The moves in flight, of every partition or of the named ones.
    pub fn list_reassignments(
        &self,
        partitions: Option<&[(String, i32)]>,
    ) -> Vec<OngoingReassignment> {
        let mut out = Vec::new();
        for (name, t) in &self.state.topics {
            for (i, p) in t.partitions.iter().enumerate() {
                let index = i32::try_from(i).unwrap_or(i32::MAX);
                if partitions
                    .is_some_and(|want| !want.iter().any(|(n, x)| n == name && *x == index))
                {
                    continue;
                }
                let Some(to) = &p.target_replicas else {
                    continue;
                };
                let original = p.original_replicas.as_ref().unwrap_or(&p.replicas);
                out.push(OngoingReassignment {
                    topic: name.clone(),
                    partition: index,
                    replicas: p.replicas.clone(),
                    adding: to
                        .iter()
                        .copied()
                        .filter(|r| !original.contains(r))
                        .collect(),
                    removing: p
                        .replicas
                        .iter()
                        .copied()
                        .filter(|r| !to.contains(r))
                        .collect(),
                });
            }
        }
        out
    }

    fn reassign_one(
        &mut self,
        topic: &str,
        partition: i32,
        to: &[i32],
        keep_replication_factor: bool,
    ) -> Result<()> {
        let current = self.partition(topic, partition)?;
        let invalid = |reason: String| Error::InvalidReplicaAssignment {
            topic: format!("{topic}-{partition}"),
            reason,
        };
        if to.is_empty() {
            return Err(invalid("the target replica list is empty".into()));
        }
        for (i, r) in to.iter().enumerate() {
            if to[..i].contains(r) {
                return Err(invalid(format!("replica {r} appears more than once")));
            }
            if !self.state.nodes.contains_key(r) {
                return Err(invalid(format!("broker {r} is not registered")));
            }
            if !self.is_alive(*r) {
                return Err(invalid(format!("broker {r} is not alive")));
            }
        }
        let original = current
            .original_replicas
            .clone()
            .unwrap_or_else(|| current.replicas.clone());
        if keep_replication_factor && to.len() != original.len() {
            return Err(Error::InvalidReplicationFactor {
                topic: format!("{topic}-{partition}"),
                reason: format!(
                    "the replication factor would change from {} to {} and the request does not allow it",
                    original.len(),
                    to.len()
                ),
            });
        }
        let (target, replicas) = (current.target_replicas.clone(), current.replicas.clone());
        match &target {
            None if replicas == to => Ok(()),
            Some(target) if target == to => Ok(()),
            Some(_) if original == to => self.cancel_one(topic, partition),
            _ => {
                self.start_reassignment(topic, partition, to);
                Ok(())
            }
        }
    }

    fn cancel_one(&mut self, topic: &str, partition: i32) -> Result<()> {
        let current = self.partition(topic, partition)?;
        if current.target_replicas.is_none() {
            return Err(Error::NoReassignmentInProgress {
                topic: topic.to_string(),
                partition,
            });
        }
        let original = current
            .original_replicas
            .clone()
            .unwrap_or_else(|| current.replicas.clone());
        let isr: Vec<i32> = current
            .isr
            .iter()
            .copied()
            .filter(|r| original.contains(r))
            .collect();
        if isr.is_empty() {
            return Err(Error::InvalidReplicaAssignment {
                topic: format!("{topic}-{partition}"),
                reason: format!(
                    "cancelling would leave no in-sync replica (ISR {:?}, original replicas {original:?}); re-target the move or let it complete",
                    current.isr
                ),
            });
        }
        let leader = if original.contains(&current.leader) {
            current.leader
        } else {
            original
                .iter()
                .copied()
                .find(|r| isr.contains(r) && self.is_eligible(*r))
                .or_else(|| {
                    original
                        .iter()
                        .copied()
                        .find(|r| isr.contains(r) && self.is_alive(*r))
                })
                .unwrap_or(NO_LEADER)
        };
        let Ok(index) = usize::try_from(partition) else {
            return Ok(());
        };
        self.dirty = true;
        let state = std::sync::Arc::make_mut(&mut self.state);
        let Some(p) = state
            .topics
            .get_mut(topic)
            .and_then(|t| std::sync::Arc::make_mut(t).partitions.get_mut(index))
        else {
            return Ok(());
        };
        let isr_changed = p.isr != isr;
        let leader_changed = p.leader != leader;
        p.replicas = original;
        p.target_replicas = None;
        p.original_replicas = None;
        p.isr = isr;
        if leader_changed {
            p.leader = leader;
            p.leader_epoch = p.leader_epoch.saturating_add(1);
        }
        p.partition_epoch = p.partition_epoch.saturating_add(1);
        push_partition_events(
            &mut self.events,
            topic,
            index,
            p,
            isr_changed,
            leader_changed.then_some(false),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests;
