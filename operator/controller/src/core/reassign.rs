//! Partition reassignment: moving replicas between nodes without ever having fewer copies.
//!
//! A move follows Kafka's order. It starts by making `replicas` the new replicas followed by
//! the old ones still leaving (the union), with the target remembered in
//! [`PartitionRecord::target_replicas`]: the leader now serves the new replicas as followers
//! and adds them to the ISR through AlterPartition once they have caught up. When every
//! target replica is in the ISR, the move completes: `replicas` becomes the target, the ISR
//! loses the leaving replicas, and leadership goes to the preferred (first) target replica.
//! Nothing leaves before its replacement holds the data.
//!
//! [`plan`] decides the moves (pure, deterministic): drain every replica off nodes outside the
//! given set, then, when asked, even out replicas and preferred leaderships over the set with
//! as few moves as it can. [`Cluster::rebalance`] starts them a few at a time.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::{push_partition_events, Cluster, Event, State, NO_LEADER};

/// One partition's change of replicas.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Move {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: i32,
    /// Its replicas now (the target of a move in flight).
    pub from: Vec<i32>,
    /// Its replicas after the move, preferred leader first.
    pub to: Vec<i32>,
}

/// A partition that cannot leave the nodes outside the set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blocked {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: i32,
    /// Why, for an operator to read.
    pub reason: String,
}

/// The moves [`plan`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Moves taking replicas off nodes outside the set (they go first).
    pub drains: Vec<Move>,
    /// Moves evening out the load over the set.
    pub balance: Vec<Move>,
    /// Partitions that cannot be drained.
    pub blocked: Vec<Blocked>,
}

/// What one [`Cluster::rebalance`] call did and what is left.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RebalanceOutcome {
    /// Nodes of the set that are not alive: nothing is planned until they are.
    pub waiting_for: Vec<i32>,
    /// Moves started by this call.
    pub started: Vec<Move>,
    /// Planned moves not started because enough are in flight.
    pub deferred: usize,
    /// Partitions moving now (this call's and earlier ones).
    pub in_flight: usize,
    /// Partitions that cannot be drained (for example a replication factor above the set's
    /// size).
    pub blocked: Vec<Blocked>,
    /// No replica, moving or not, is on a node outside the set: those nodes may go.
    pub drained: bool,
}

/// Replicas and preferred leaderships per node of the set.
struct Counts {
    replicas: BTreeMap<i32, usize>,
    leaders: BTreeMap<i32, usize>,
}

impl Counts {
    fn add(&mut self, node: i32, leader: bool, delta: isize) {
        if let Some(c) = self.replicas.get_mut(&node) {
            *c = c.saturating_add_signed(delta);
        }
        if leader {
            if let Some(c) = self.leaders.get_mut(&node) {
                *c = c.saturating_add_signed(delta);
            }
        }
    }

    fn replicas_of(&self, n: i32) -> usize {
        self.replicas.get(&n).copied().unwrap_or(0)
    }

    fn leaders_of(&self, n: i32) -> usize {
        self.leaders.get(&n).copied().unwrap_or(0)
    }
}

/// One partition as the planner works on it.
struct Slot {
    topic: String,
    partition: i32,
    /// Replicas now (the target, for a move in flight).
    current: Vec<i32>,
    /// Replicas as planned.
    planned: Vec<i32>,
    in_flight: bool,
}

/// The moves that put every replica on `nodes` and, with `balance`, even out replicas and
/// preferred leaderships over them (each node within one of the others where moves allow).
///
/// Draining keeps each surviving replica where it is and fills the gaps with the least loaded
/// nodes. Balancing moves one replica at a time from the most to the least loaded node,
/// followers before leaders, then swaps preferred leaders within replica lists (no data moves
/// for that). Partitions already moving are only re-planned when their target leaves the set.
pub fn plan(state: &State, nodes: &[i32], balance: bool) -> Plan {
    let set: BTreeSet<i32> = nodes.iter().copied().collect();
    let mut slots = Vec::new();
    for (name, t) in &state.topics {
        for (i, p) in t.partitions.iter().enumerate() {
            let current = p
                .target_replicas
                .clone()
                .unwrap_or_else(|| p.replicas.clone());
            slots.push(Slot {
                topic: name.clone(),
                partition: i32::try_from(i).unwrap_or(i32::MAX),
                planned: current.clone(),
                current,
                in_flight: p.target_replicas.is_some(),
            });
        }
    }
    let mut counts = Counts {
        replicas: set.iter().map(|&n| (n, 0)).collect(),
        leaders: set.iter().map(|&n| (n, 0)).collect(),
    };
    for s in &slots {
        for (pos, &r) in s.planned.iter().enumerate() {
            counts.add(r, pos == 0, 1);
        }
    }
    let mut out = Plan::default();

    for s in &mut slots {
        if s.planned.iter().all(|r| set.contains(r)) {
            continue;
        }
        if s.planned.len() > set.len() {
            out.blocked.push(Blocked {
                topic: s.topic.clone(),
                partition: s.partition,
                reason: format!(
                    "replication factor {} is larger than the {} nodes it may stay on",
                    s.planned.len(),
                    set.len()
                ),
            });
            continue;
        }
        for pos in 0..s.planned.len() {
            if set.contains(&s.planned[pos]) {
                continue;
            }
            let free = set.iter().copied().filter(|n| !s.planned.contains(n));
            let pick = if pos == 0 {
                free.min_by_key(|&n| (counts.leaders_of(n), counts.replicas_of(n), n))
            } else {
                free.min_by_key(|&n| (counts.replicas_of(n), counts.leaders_of(n), n))
            };
            // The length check above leaves a free node for every gap.
            let Some(n) = pick else { break };
            s.planned[pos] = n;
            counts.add(n, pos == 0, 1);
        }
    }

    if balance && !set.is_empty() {
        balance_replicas(&mut slots, &mut counts, &set);
        balance_leaders(&mut slots, &mut counts, &set);
    }

    for s in slots {
        if s.planned == s.current {
            continue;
        }
        let drain = s.current.iter().any(|r| !set.contains(r));
        let m = Move {
            topic: s.topic,
            partition: s.partition,
            from: s.current,
            to: s.planned,
        };
        if drain {
            out.drains.push(m);
        } else {
            out.balance.push(m);
        }
    }
    out
}

/// Moves replicas from the most to the least loaded node until no two differ by more than
/// one. Each move lowers the sum of squared loads, so this ends.
fn balance_replicas(slots: &mut [Slot], counts: &mut Counts, set: &BTreeSet<i32>) {
    let total: usize = slots.iter().map(|s| s.planned.len()).sum();
    for _ in 0..=total {
        let Some(most) = set
            .iter()
            .copied()
            .max_by_key(|&n| (counts.replicas_of(n), std::cmp::Reverse(n)))
        else {
            return;
        };
        let Some(least) = set
            .iter()
            .copied()
            .min_by_key(|&n| (counts.replicas_of(n), n))
        else {
            return;
        };
        if counts.replicas_of(most) <= counts.replicas_of(least) + 1 {
            return;
        }
        let movable = |s: &Slot| {
            !s.in_flight
                && s.planned.iter().all(|r| set.contains(r))
                && s.planned.contains(&most)
                && !s.planned.contains(&least)
        };
        // A follower moves without a leadership change; take a leader only if no follower.
        let pick = slots
            .iter()
            .position(|s| movable(s) && s.planned[0] != most)
            .or_else(|| slots.iter().position(movable));
        let Some(i) = pick else { return };
        let Some(pos) = slots[i].planned.iter().position(|&r| r == most) else {
            return;
        };
        slots[i].planned[pos] = least;
        counts.add(most, pos == 0, -1);
        counts.add(least, pos == 0, 1);
    }
}

/// Swaps preferred leaders inside replica lists until no two nodes' leaderships differ by
/// more than one, where a swap can do it. Each swap lowers the sum of squares, so this ends.
fn balance_leaders(slots: &mut [Slot], counts: &mut Counts, set: &BTreeSet<i32>) {
    let total = slots.len();
    'outer: for _ in 0..=total {
        let mut by_leaders: Vec<i32> = set.iter().copied().collect();
        by_leaders.sort_by_key(|&n| (std::cmp::Reverse(counts.leaders_of(n)), n));
        for &hi in &by_leaders {
            for &lo in by_leaders.iter().rev() {
                if counts.leaders_of(hi) < counts.leaders_of(lo) + 2 {
                    break;
                }
                let found = slots.iter().position(|s| {
                    !s.in_flight
                        && s.planned.first() == Some(&hi)
                        && s.planned.contains(&lo)
                        && s.planned.iter().all(|r| set.contains(r))
                });
                if let Some(i) = found {
                    let s = &mut slots[i];
                    let Some(j) = s.planned.iter().position(|&r| r == lo) else {
                        continue;
                    };
                    s.planned.swap(0, j);
                    if let Some(c) = counts.leaders.get_mut(&hi) {
                        *c -= 1;
                    }
                    if let Some(c) = counts.leaders.get_mut(&lo) {
                        *c += 1;
                    }
                    continue 'outer;
                }
            }
        }
        return;
    }
}

impl Cluster {
    /// Makes `nodes` the cluster's node set: new replicas go only there, replicas elsewhere
    /// are moved onto it and, the first time the set differs from the one last balanced,
    /// replicas and leaderships are evened out over it. At most `max_in_flight` partitions
    /// move at once; call again (every metadata change or so) to start the rest. Nothing
    /// moves while a node of the set is not alive (a move onto it could not complete), and
    /// nothing changes at all when some partition cannot fit on the set
    /// ([`RebalanceOutcome::blocked`]).
    pub fn rebalance(&mut self, nodes: &[i32], max_in_flight: usize) -> RebalanceOutcome {
        let set: BTreeSet<i32> = nodes.iter().copied().collect();
        self.complete_reassignments();
        let full = self.state.balanced_for != set;
        let plan = plan(&self.state, nodes, full);
        let mut out = RebalanceOutcome {
            waiting_for: set.iter().copied().filter(|&n| !self.is_alive(n)).collect(),
            blocked: plan.blocked,
            ..Default::default()
        };
        // A set some partition cannot fit on is refused whole: draining the others would
        // only churn data for a shrink that cannot happen.
        if out.blocked.is_empty() {
            let excluded: BTreeSet<i32> = self
                .state
                .nodes
                .keys()
                .copied()
                .filter(|n| !set.contains(n))
                .collect();
            if excluded != self.state.excluded_nodes {
                self.state_mut().excluded_nodes = excluded;
            }
        }
        if out.blocked.is_empty() && out.waiting_for.is_empty() {
            let mut in_flight = self.in_flight();
            for m in plan.drains.into_iter().chain(plan.balance) {
                let retarget = self
                    .partition(&m.topic, m.partition)
                    .is_ok_and(|p| p.target_replicas.is_some());
                if !retarget && in_flight >= max_in_flight {
                    out.deferred += 1;
                    continue;
                }
                self.start_reassignment(&m.topic, m.partition, &m.to);
                if !retarget {
                    in_flight += 1;
                }
                out.started.push(m);
            }
            // An offline partition may elect a new replica (unclean election); reorders of
            // replicas already in the ISR finish at once.
            self.elect_leaderless();
            self.complete_reassignments();
            if full && out.deferred == 0 {
                self.state_mut().balanced_for = set.clone();
            }
        }
        out.in_flight = self.in_flight();
        out.drained = self
            .state
            .topics
            .values()
            .flat_map(|t| t.partitions.iter())
            .all(|p| p.replicas.iter().all(|r| set.contains(r)));
        self.forget_departed();
        self.finish();
        out
    }

    /// Partitions with a move in flight.
    pub fn in_flight(&self) -> usize {
        self.state
            .topics
            .values()
            .flat_map(|t| t.partitions.iter())
            .filter(|p| p.target_replicas.is_some())
            .count()
    }

    /// Starts (or re-targets) a move of one partition to `to`.
    pub(super) fn start_reassignment(&mut self, topic: &str, partition: i32, to: &[i32]) {
        let Ok(index) = usize::try_from(partition) else {
            return;
        };
        let Some(p) = self
            .state_mut()
            .topics
            .get_mut(topic)
            .and_then(|t| Arc::make_mut(t).partitions.get_mut(index))
        else {
            return;
        };
        let from = p
            .target_replicas
            .clone()
            .unwrap_or_else(|| p.replicas.clone());
        let mut union = to.to_vec();
        union.extend(p.replicas.iter().copied().filter(|r| !to.contains(r)));
        if p.original_replicas.is_none() {
            p.original_replicas = Some(p.replicas.clone());
        }
        p.replicas = union;
        p.target_replicas = Some(to.to_vec());
        p.partition_epoch = p.partition_epoch.saturating_add(1);
        self.events.push(Event::ReassignmentStarted {
            topic: topic.to_string(),
            partition,
            from,
            to: to.to_vec(),
        });
    }

    /// Completes every move whose target replicas are all in the ISR and one of them is
    /// alive to lead: the leaving replicas go, and the preferred target replica leads.
    pub(super) fn complete_reassignments(&mut self) {
        let ready = self.state.topics.values().any(|t| {
            t.partitions.iter().any(|p| {
                p.target_replicas
                    .as_ref()
                    .is_some_and(|to| to.iter().all(|r| p.isr.contains(r)))
            })
        });
        if !ready {
            return;
        }
        let live = &self.live;
        let state = Arc::make_mut(&mut self.state);
        for (name, t) in state.topics.iter_mut() {
            if t.partitions.iter().all(|p| p.target_replicas.is_none()) {
                continue;
            }
            for (i, p) in Arc::make_mut(t).partitions.iter_mut().enumerate() {
                let Some(to) = p.target_replicas.clone() else {
                    continue;
                };
                if !to.iter().all(|r| p.isr.contains(r)) {
                    continue;
                }
                // A target replica shutting down leads only if no other is alive.
                let Some(&leader) = to
                    .iter()
                    .find(|&&r| super::eligible(live, r))
                    .or_else(|| to.iter().find(|r| live.contains_key(r)))
                else {
                    continue;
                };
                self.dirty = true;
                let isr_before = p.isr.len();
                p.replicas = to.clone();
                p.target_replicas = None;
                p.original_replicas = None;
                p.isr.retain(|r| to.contains(r));
                let isr_changed = p.isr.len() != isr_before;
                let leader_changed = p.leader != leader;
                if leader_changed {
                    p.leader = leader;
                    p.leader_epoch = p.leader_epoch.saturating_add(1);
                }
                p.partition_epoch = p.partition_epoch.saturating_add(1);
                let partition = i32::try_from(i).unwrap_or(i32::MAX);
                self.events.push(Event::ReassignmentCompleted {
                    topic: name.clone(),
                    partition,
                    replicas: to,
                });
                push_partition_events(
                    &mut self.events,
                    name,
                    i,
                    p,
                    isr_changed,
                    leader_changed.then_some(false),
                );
            }
        }
        debug_assert!(self
            .state
            .topics
            .values()
            .flat_map(|t| t.partitions.iter())
            .all(|p| p.leader == NO_LEADER || p.isr.contains(&p.leader)));
    }
}

#[cfg(test)]
mod tests;
