//! How nodes leave: a controlled shutdown (the node asks, its leaderships move to other
//! in-sync replicas and it leaves the ISRs before it stops), a crash noticed through the
//! broken metadata stream (fenced after a short grace instead of a whole session timeout),
//! and the removal of nodes a scale-down drained.

use std::sync::Arc;

use super::{eligible, push_partition_events, Cluster, Event, NO_LEADER};
use crate::error::Result;

/// Where a node's controlled shutdown stands.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShutdownProgress {
    /// Partitions the node still leads because no other replica in the ISR is eligible
    /// (it is the last in-sync replica). Empty: the node may stop without interrupting any
    /// partition that has another copy.
    pub still_leading: Vec<(String, i32)>,
}

impl Cluster {
    /// A node is about to stop: from now on it is never elected, never added to an ISR and
    /// given no new replica; every partition it leads moves to the first eligible in-sync
    /// replica in preferred order, and it leaves every ISR it is not the last member of (so
    /// acks=all writes stop waiting for it). Idempotent: the node calls it again until
    /// nothing is left (a replica may catch up meanwhile and become eligible).
    pub fn controlled_shutdown(
        &mut self,
        node: i32,
        broker_epoch: i64,
        now_ms: u64,
    ) -> Result<ShutdownProgress> {
        self.check_epoch(node, broker_epoch)?;
        // Alive until it stops: the call itself proves it, like a heartbeat.
        self.mark_alive(node, now_ms);
        let first = match self.live.get_mut(&node) {
            Some(l) if !l.shutting_down => {
                l.shutting_down = true;
                true
            }
            _ => false,
        };
        if first {
            self.events.push(Event::NodeShuttingDown { node });
        }
        let mut progress = ShutdownProgress::default();
        let touches = self.state.topics.values().any(|t| {
            t.partitions
                .iter()
                .any(|p| p.leader == node || (p.isr.contains(&node) && p.isr.len() > 1))
        });
        if touches {
            let live = &self.live;
            let state = Arc::make_mut(&mut self.state);
            for (name, t) in state.topics.iter_mut() {
                // Topics shared with earlier states are copied only when they change.
                if !t
                    .partitions
                    .iter()
                    .any(|p| p.leader == node || (p.isr.contains(&node) && p.isr.len() > 1))
                {
                    continue;
                }
                for (i, p) in Arc::make_mut(t).partitions.iter_mut().enumerate() {
                    let mut leader_changed = None;
                    if p.leader == node {
                        let successor = p
                            .replicas
                            .iter()
                            .copied()
                            .find(|&r| r != node && eligible(live, r) && p.isr.contains(&r));
                        match successor {
                            Some(r) => {
                                p.leader = r;
                                p.leader_epoch = p.leader_epoch.saturating_add(1);
                                leader_changed = Some(false);
                            }
                            None => {
                                let partition = i32::try_from(i).unwrap_or(i32::MAX);
                                progress.still_leading.push((name.clone(), partition));
                            }
                        }
                    }
                    let mut isr_changed = false;
                    if p.leader != node && p.isr.contains(&node) && p.isr.len() > 1 {
                        p.isr.retain(|&r| r != node);
                        isr_changed = true;
                    }
                    if isr_changed || leader_changed.is_some() {
                        self.dirty = true;
                        p.partition_epoch = p.partition_epoch.saturating_add(1);
                        push_partition_events(
                            &mut self.events,
                            name,
                            i,
                            p,
                            isr_changed,
                            leader_changed,
                        );
                    }
                }
            }
        }
        // The image tells clients who to ask for controller-bound requests.
        if first {
            self.dirty = true;
        }
        self.finish();
        Ok(progress)
    }

    /// The metadata stream of a node's registration `broker_epoch` ended (the controller saw
    /// the connection close). A process that died closes it at once; a healthy node opens a
    /// new one and keeps heartbeating within the grace, so only a dead node is fenced this
    /// early. A node hung without closing its connection still waits for the session timeout.
    pub fn stream_lost(&mut self, node: i32, broker_epoch: i64, now_ms: u64) {
        if self.check_epoch(node, broker_epoch).is_err() {
            return;
        }
        let grace = self.config.stream_loss_grace_ms;
        if let Some(l) = self.live.get_mut(&node) {
            // A node that was shutting down has said goodbye: no grace.
            let deadline = if l.shutting_down {
                now_ms
            } else {
                now_ms.saturating_add(grace)
            };
            l.deadline_ms = l.deadline_ms.min(deadline);
        }
    }

    /// A node opened its metadata stream: as good as a heartbeat. Stale registrations are
    /// ignored (the stream's own end will be too).
    pub fn stream_opened(&mut self, node: i32, broker_epoch: i64, now_ms: u64) {
        if self.check_epoch(node, broker_epoch).is_ok() {
            self.mark_alive(node, now_ms);
            self.finish();
        }
    }

    /// Removes dead nodes that a rebalance left outside the node set once no partition names
    /// them any more, so a scale-down leaves no registration behind (Kafka's
    /// UnregisterBroker, done when it is safe instead of by hand).
    pub(super) fn forget_departed(&mut self) {
        let departed: Vec<i32> = self
            .state
            .excluded_nodes
            .iter()
            .copied()
            .filter(|n| !self.live.contains_key(n))
            .filter(|n| {
                !self.state.topics.values().any(|t| {
                    t.partitions.iter().any(|p| {
                        p.replicas.contains(n)
                            || p.isr.contains(n)
                            || p.leader == *n
                            || p.target_replicas.as_ref().is_some_and(|to| to.contains(n))
                    })
                })
            })
            .collect();
        if departed.is_empty() {
            return;
        }
        let state = self.state_mut();
        for n in &departed {
            state.nodes.remove(n);
            state.excluded_nodes.remove(n);
            state.balanced_for.remove(n);
        }
        for n in departed {
            self.events.push(Event::NodeUnregistered { node: n });
        }
        debug_assert!(self.state.nodes.keys().all(|n| *n != NO_LEADER));
    }
}

#[cfg(test)]
mod tests;
