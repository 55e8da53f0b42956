//! Preferred leaders come back: Kafka's automatic leader rebalance. After a node restarts
//! and catches up, the partitions it is the preferred (first) replica of are led by others;
//! once its share of such partitions passes the imbalance threshold, leadership returns to
//! it, so a rolling restart does not end with one node leading everything.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{eligible, push_partition_events, Cluster};

impl Cluster {
    /// Moves leadership back to the preferred replica of every partition whose preferred
    /// replica is eligible and in the ISR, for each node whose imbalance (partitions it
    /// prefers but does not lead, over partitions it prefers) exceeds
    /// [`super::Config::leader_imbalance_percentage`]. Partitions being reassigned are left
    /// alone (completion elects their new preferred leader). Returns the leaderships moved.
    pub fn balance_leaders(&mut self) -> usize {
        let mut preferred: BTreeMap<i32, (usize, usize)> = BTreeMap::new();
        for t in self.state.topics.values() {
            for p in &t.partitions {
                let Some(&first) = p.replicas.first() else {
                    continue;
                };
                if p.target_replicas.is_some() {
                    continue;
                }
                let e = preferred.entry(first).or_default();
                e.0 += 1;
                if p.leader != first {
                    e.1 += 1;
                }
            }
        }
        let threshold = u64::from(self.config.leader_imbalance_percentage);
        let imbalanced: Vec<i32> = preferred
            .into_iter()
            .filter(|&(node, (total, not_leading))| {
                not_leading > 0
                    && eligible(&self.live, node)
                    && (not_leading as u64) * 100 > threshold * (total as u64)
            })
            .map(|(node, _)| node)
            .collect();
        if imbalanced.is_empty() {
            return 0;
        }
        let live = &self.live;
        let state = Arc::make_mut(&mut self.state);
        let mut moved = 0;
        for (name, t) in state.topics.iter_mut() {
            if t.partitions
                .iter()
                .all(|p| p.replicas.first().is_none_or(|f| p.leader == *f))
            {
                continue;
            }
            for (i, p) in Arc::make_mut(t).partitions.iter_mut().enumerate() {
                let Some(&first) = p.replicas.first() else {
                    continue;
                };
                if p.leader == first
                    || p.target_replicas.is_some()
                    || !imbalanced.contains(&first)
                    || !p.isr.contains(&first)
                    || !eligible(live, first)
                {
                    continue;
                }
                p.leader = first;
                p.leader_epoch = p.leader_epoch.saturating_add(1);
                p.partition_epoch = p.partition_epoch.saturating_add(1);
                self.dirty = true;
                moved += 1;
                push_partition_events(&mut self.events, name, i, p, false, Some(false));
            }
        }
        self.finish();
        moved
    }
}
