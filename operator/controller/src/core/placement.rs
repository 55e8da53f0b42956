//! Replica placement: spread replicas and leaderships evenly over alive nodes, deterministically.
//!
//! Each new partition's leader (replicas[0]) is the alive node with the fewest leaderships
//! (then fewest replicas, then lowest id); its followers are the other alive nodes with the
//! fewest replicas, ties broken by walking the alive list round from the leader, so the
//! preferred successors of different leaders differ and a failure spreads its leaderships.

use std::collections::BTreeMap;

use super::{State, NO_LEADER};

/// How many leaderships and replicas each node holds now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Load {
    /// Leaderships (preferred leaders, i.e. replicas[0]) per node.
    pub leaders: BTreeMap<i32, usize>,
    /// Replicas per node.
    pub replicas: BTreeMap<i32, usize>,
}

impl Load {
    /// The load of every partition in `state`, restricted to `nodes`. Leaderships count the
    /// preferred leader rather than the current one, so placement does not drift while a node
    /// is briefly down.
    pub fn of(state: &State, nodes: &[i32]) -> Load {
        let mut load = Load::default();
        for &n in nodes {
            load.leaders.insert(n, 0);
            load.replicas.insert(n, 0);
        }
        for p in state.topics.values().flat_map(|t| t.partitions.iter()) {
            let preferred = p.replicas.first().copied().unwrap_or(NO_LEADER);
            if let Some(c) = load.leaders.get_mut(&preferred) {
                *c += 1;
            }
            for r in &p.replicas {
                if let Some(c) = load.replicas.get_mut(r) {
                    *c += 1;
                }
            }
        }
        load
    }

    fn leaders_of(&self, n: i32) -> usize {
        self.leaders.get(&n).copied().unwrap_or(0)
    }

    fn replicas_of(&self, n: i32) -> usize {
        self.replicas.get(&n).copied().unwrap_or(0)
    }
}

/// Replica lists for `count` new partitions of replication factor `rf` over `nodes` (ascending
/// ids), updating `load`. The caller has checked `1 <= rf <= nodes.len()`; a larger `rf` is
/// clamped, and no nodes yields no partitions.
pub fn place(load: &mut Load, nodes: &[i32], count: usize, rf: usize) -> Vec<Vec<i32>> {
    let mut nodes = nodes.to_vec();
    nodes.sort_unstable();
    nodes.dedup();
    if nodes.is_empty() {
        return Vec::new();
    }
    let rf = rf.clamp(1, nodes.len());
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let Some((leader_pos, leader)) = nodes
            .iter()
            .copied()
            .enumerate()
            .min_by_key(|&(_, n)| (load.leaders_of(n), load.replicas_of(n), n))
        else {
            break;
        };
        let mut followers: Vec<(usize, i32)> = (1..nodes.len())
            .map(|step| {
                let pos = (leader_pos + step) % nodes.len();
                (step, nodes[pos])
            })
            .collect();
        followers.sort_by_key(|&(step, n)| (load.replicas_of(n), step));
        let mut replicas = Vec::with_capacity(rf);
        replicas.push(leader);
        replicas.extend(followers.iter().take(rf - 1).map(|&(_, n)| n));
        *load.leaders.entry(leader).or_insert(0) += 1;
        for &r in &replicas {
            *load.replicas.entry(r).or_insert(0) += 1;
        }
        out.push(replicas);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spread(counts: &BTreeMap<i32, usize>) -> usize {
        let max = counts.values().max().copied().unwrap_or(0);
        let min = counts.values().min().copied().unwrap_or(0);
        max - min
    }

    #[test]
    fn three_nodes_six_partitions_rf3_gives_two_leaderships_each() {
        let mut load = Load::of(&State::new("c"), &[1, 2, 3]);
        let placed = place(&mut load, &[1, 2, 3], 6, 3);
        assert_eq!(placed.len(), 6);
        assert_eq!(load.leaders, BTreeMap::from([(1, 2), (2, 2), (3, 2)]));
        assert_eq!(load.replicas, BTreeMap::from([(1, 6), (2, 6), (3, 6)]));
        for r in &placed {
            let mut sorted = r.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, vec![1, 2, 3], "each partition on every node once");
        }
        // Successors rotate, so one node's death spreads its leaderships.
        assert_eq!(placed[0], vec![1, 2, 3]);
        assert_eq!(placed[1], vec![2, 3, 1]);
        assert_eq!(placed[2], vec![3, 1, 2]);
    }

    #[test]
    fn placement_is_deterministic() {
        let a = place(&mut Load::default(), &[3, 1, 2, 5], 7, 2);
        let b = place(&mut Load::default(), &[1, 2, 3, 5], 7, 2);
        assert_eq!(a, b);
    }

    #[test]
    fn successive_topics_stay_even() {
        // Table of (nodes, topics as (partitions, rf)).
        type Case<'a> = (&'a [i32], &'a [(usize, usize)]);
        let cases: &[Case] = &[
            (
                &[1, 2, 3],
                &[(1, 1), (1, 1), (1, 1), (2, 2), (5, 3), (4, 1)],
            ),
            (&[1, 2, 3, 4, 5], &[(3, 2), (7, 3), (1, 1), (2, 5), (10, 2)]),
            (&[0, 7], &[(3, 1), (3, 2), (1, 1)]),
            (&[1, 2, 3, 4], &[(1, 3), (1, 3), (1, 3), (1, 3), (6, 2)]),
        ];
        for (nodes, topics) in cases {
            let mut load = Load::default();
            for &(count, rf) in *topics {
                let placed = place(&mut load, nodes, count, rf);
                assert_eq!(placed.len(), count);
                for r in &placed {
                    assert_eq!(r.len(), rf);
                    let mut d = r.clone();
                    d.sort_unstable();
                    d.dedup();
                    assert_eq!(d.len(), rf, "no node twice in {r:?}");
                }
                assert!(
                    spread(&load.leaders) <= 1,
                    "leaders {:?} for {nodes:?}",
                    load.leaders
                );
                assert!(
                    spread(&load.replicas) <= rf,
                    "replicas {:?} for {nodes:?}",
                    load.replicas
                );
            }
        }
    }

    #[test]
    fn rf_is_clamped_and_no_nodes_places_nothing() {
        assert!(place(&mut Load::default(), &[], 3, 1).is_empty());
        let placed = place(&mut Load::default(), &[4], 2, 3);
        assert_eq!(placed, vec![vec![4], vec![4]]);
    }

    #[test]
    fn counts_existing_load_over_the_given_nodes() {
        let mut state = State::new("c");
        state.topics.insert(
            "t".into(),
            std::sync::Arc::new(super::super::TopicRecord {
                topic_id: uuid::Uuid::from_u128(1),
                configs: Default::default(),
                internal: false,
                partitions: vec![super::super::PartitionRecord {
                    replicas: vec![1, 9],
                    leader: 9,
                    leader_epoch: 3,
                    isr: vec![1, 9],
                    partition_epoch: 4,
                    target_replicas: None,
                    original_replicas: None,
                }],
            }),
        );
        let load = Load::of(&state, &[1, 2]);
        assert_eq!(load.leaders, BTreeMap::from([(1, 1), (2, 0)]));
        assert_eq!(load.replicas, BTreeMap::from([(1, 1), (2, 0)]));
        // The next partition's leader is the less loaded node.
        let mut load = load;
        assert_eq!(place(&mut load, &[1, 2], 1, 2), vec![vec![2, 1]]);
    }
}
