//! Reassignment: planning (drain, balance, fixed points) and moves through the ISR.

use std::collections::BTreeMap;

use super::super::{Cluster, Config, Event, NewTopic, PartitionRecord, State, NO_LEADER};
use super::*;

fn cluster(n: i32) -> Cluster {
    let mut c = Cluster::new("c", Config::default());
    for id in 1..=n {
        c.register(id, "h", 9000 + id, "", "a", 0).unwrap();
    }
    c.take_events();
    c
}

fn create(c: &mut Cluster, name: &str, partitions: i32, rf: i32) {
    let t = NewTopic {
        name: name.into(),
        partitions,
        replication_factor: rf,
        ..NewTopic::default()
    };
    for o in c.create_topics(&[t], false) {
        o.result.unwrap();
    }
}

fn add_node(c: &mut Cluster, id: i32) {
    c.register(id, "h", 9000 + id, "", "a", 0).unwrap();
}

fn parts(c: &Cluster) -> Vec<(String, usize, PartitionRecord)> {
    c.state()
        .topics
        .iter()
        .flat_map(|(n, t)| {
            t.partitions
                .iter()
                .enumerate()
                .map(move |(i, p)| (n.clone(), i, p.clone()))
        })
        .collect()
}

/// Plays every leader: new replicas that are alive are caught up and proposed for the ISR.
fn catch_up(c: &mut Cluster) {
    for (name, i, p) in parts(c) {
        let Some(to) = &p.target_replicas else {
            continue;
        };
        if p.leader == NO_LEADER {
            continue;
        }
        let mut isr = p.isr.clone();
        let joining: Vec<i32> = to
            .iter()
            .copied()
            .filter(|r| !isr.contains(r) && c.is_alive(*r))
            .collect();
        isr.extend(joining);
        if isr == p.isr {
            continue;
        }
        let e = c.state().nodes[&p.leader].broker_epoch;
        c.alter_partition(
            p.leader,
            e,
            &name,
            i as i32,
            p.leader_epoch,
            p.partition_epoch,
            &isr,
        )
        .unwrap();
    }
}

/// Replicas and preferred leaderships per node.
fn load(c: &Cluster) -> (BTreeMap<i32, usize>, BTreeMap<i32, usize>) {
    let (mut reps, mut leads) = (BTreeMap::new(), BTreeMap::new());
    for (_, _, p) in parts(c) {
        *leads.entry(p.replicas[0]).or_insert(0) += 1;
        for r in p.replicas {
            *reps.entry(r).or_insert(0) += 1;
        }
    }
    (reps, leads)
}

fn spread(m: &BTreeMap<i32, usize>, nodes: &[i32]) -> usize {
    let v: Vec<usize> = nodes
        .iter()
        .map(|n| m.get(n).copied().unwrap_or(0))
        .collect();
    v.iter().max().unwrap() - v.iter().min().unwrap()
}

#[test]
fn a_balanced_cluster_plans_nothing() {
    let mut c = cluster(3);
    create(&mut c, "a", 6, 2);
    create(&mut c, "b", 5, 3);
    create(&mut c, "c", 4, 1);
    let p = plan(c.state(), &[1, 2, 3], true);
    assert_eq!(p, Plan::default());
    let out = c.rebalance(&[1, 2, 3], 10);
    assert!(out.started.is_empty() && out.drained && out.blocked.is_empty());
    assert_eq!(c.state().balanced_for, [1, 2, 3].into());
}

#[test]
fn scaling_up_moves_replicas_and_leaderships_onto_the_new_node() {
    let mut c = cluster(3);
    create(&mut c, "t", 12, 2);
    let before = parts(&c);
    add_node(&mut c, 4);
    let v = c.version();
    let out = c.rebalance(&[1, 2, 3, 4], 100);
    assert_eq!(c.version(), v + 1, "one call, one version");
    assert!(out.waiting_for.is_empty() && out.blocked.is_empty() && out.drained);
    assert_eq!(out.deferred, 0);
    // 24 replicas over 4 nodes: node 4 takes 6, each move carrying one replica or swapping
    // a leadership, never more than needed for both.
    let moved_replicas: usize = out
        .started
        .iter()
        .map(|m| m.to.iter().filter(|r| !m.from.contains(r)).count())
        .sum();
    assert_eq!(moved_replicas, 6, "{:?}", out.started);
    for m in &out.started {
        let mut to = m.to.clone();
        to.sort_unstable();
        to.dedup();
        assert_eq!(to.len(), 2, "rf kept, no node twice: {m:?}");
        let p = c.partition(&m.topic, m.partition).unwrap();
        assert_eq!(p.target_replicas.as_ref(), Some(&m.to));
        // New replicas first, the leaving ones after: nothing leaves before the ISR says so.
        assert_eq!(&p.replicas[..2], &m.to[..]);
        assert!(m.from.iter().all(|r| p.replicas.contains(r)));
    }
    // Untouched partitions keep their epochs; moving ones bumped the partition epoch only.
    for (name, i, old) in &before {
        let now = c.partition(name, *i as i32).unwrap();
        if now.target_replicas.is_none() {
            assert_eq!(now, old);
        } else if now.replicas.len() > 2 {
            assert_eq!(now.partition_epoch, old.partition_epoch + 1);
            assert_eq!(
                (now.leader, now.leader_epoch),
                (old.leader, old.leader_epoch)
            );
            assert_eq!(
                now.isr, old.isr,
                "new replicas join the ISR through the leader"
            );
        }
    }
    assert!(c
        .take_events()
        .iter()
        .any(|e| matches!(e, Event::ReassignmentStarted { .. })));

    catch_up(&mut c);
    assert_eq!(c.in_flight(), 0);
    let (reps, leads) = load(&c);
    assert_eq!(reps, BTreeMap::from([(1, 6), (2, 6), (3, 6), (4, 6)]));
    assert_eq!(leads, BTreeMap::from([(1, 3), (2, 3), (3, 3), (4, 3)]));
    for (name, _, p) in parts(&c) {
        assert_eq!(p.replicas.len(), 2, "{name}");
        assert_eq!(
            p.leader, p.replicas[0],
            "leadership on the preferred replica"
        );
        assert!(p.isr.iter().all(|r| p.replicas.contains(r)));
    }
    let events = c.take_events();
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::ReassignmentCompleted { .. })));
    // Balanced now: nothing more to do.
    let out = c.rebalance(&[1, 2, 3, 4], 100);
    assert!(out.started.is_empty());
    assert_eq!(plan(c.state(), &[1, 2, 3, 4], true), Plan::default());
}

#[test]
fn a_move_completes_only_when_every_new_replica_is_in_the_isr() {
    let mut c = cluster(2);
    create(&mut c, "t", 1, 2);
    add_node(&mut c, 3);
    add_node(&mut c, 4);
    // Move [1,2] -> [3,4] by draining 1 and 2.
    let out = c.rebalance(&[3, 4], 10);
    assert_eq!(out.started.len(), 1);
    assert!(!out.drained);
    let p = c.partition("t", 0).unwrap().clone();
    assert_eq!(p.target_replicas, Some(vec![3, 4]));
    assert_eq!(p.replicas, vec![3, 4, 1, 2]);
    assert_eq!(p.leader, 1);
    // Node 3 catches up first: still moving, the old replicas stay.
    let e1 = c.state().nodes[&1].broker_epoch;
    c.alter_partition(1, e1, "t", 0, p.leader_epoch, p.partition_epoch, &[1, 2, 3])
        .unwrap();
    let p = c.partition("t", 0).unwrap().clone();
    assert_eq!(p.target_replicas, Some(vec![3, 4]));
    assert_eq!(p.leader, 1);
    // Node 4 too: done. 1 and 2 leave replicas and ISR, 3 leads in a new epoch.
    c.alter_partition(
        1,
        e1,
        "t",
        0,
        p.leader_epoch,
        p.partition_epoch,
        &[1, 2, 3, 4],
    )
    .unwrap();
    let done = c.partition("t", 0).unwrap().clone();
    assert_eq!(done.replicas, vec![3, 4]);
    assert_eq!(done.isr, vec![3, 4]);
    assert_eq!(done.leader, 3);
    assert_eq!(done.leader_epoch, p.leader_epoch + 1);
    assert!(done.partition_epoch > p.partition_epoch + 1);
    assert_eq!(done.target_replicas, None);
    let out = c.rebalance(&[3, 4], 10);
    assert!(out.drained && out.started.is_empty() && out.in_flight == 0);
}

#[test]
fn draining_moves_everything_off_and_placement_avoids_the_drained_nodes() {
    let mut c = cluster(3);
    create(&mut c, "t", 6, 2);
    let out = c.rebalance(&[1, 2], 100);
    assert!(!out.drained);
    assert!(out.blocked.is_empty());
    assert_eq!(c.state().excluded_nodes, [3].into());
    // Every partition that had a replica on 3 moves; the others stay.
    let touched = parts(&c)
        .iter()
        .filter(|(_, _, p)| p.target_replicas.is_some())
        .count();
    assert_eq!(out.started.len(), touched);
    assert!(
        touched >= 4,
        "6 partitions x 2 replicas over 3 nodes: 4 on node 3"
    );
    // New topics stay off the excluded node while it is still alive.
    create(&mut c, "new", 4, 2);
    for p in &c.state().topics["new"].partitions {
        assert!(!p.replicas.contains(&3), "{p:?}");
    }
    catch_up(&mut c);
    let out = c.rebalance(&[1, 2], 100);
    assert!(out.drained && out.in_flight == 0);
    for (_, _, p) in parts(&c) {
        assert!(!p.replicas.contains(&3) && !p.isr.contains(&3));
    }
    let (reps, _) = load(&c);
    assert!(spread(&reps, &[1, 2]) <= 1, "{reps:?}");
}

#[test]
fn a_replication_factor_above_the_new_size_blocks_the_drain() {
    let mut c = cluster(3);
    create(&mut c, "rf3", 1, 3);
    create(&mut c, "rf1", 3, 1);
    let before = c.state().clone();
    let out = c.rebalance(&[1, 2], 100);
    assert_eq!(out.blocked.len(), 1);
    assert_eq!(out.blocked[0].topic, "rf3");
    assert!(out.blocked[0].reason.contains("replication factor 3"));
    assert!(!out.drained);
    // Refused whole: no partial drain (the shrink cannot happen anyway), node 3 still takes
    // new replicas.
    assert!(out.started.is_empty());
    assert_eq!(c.state(), &before);
    create(&mut c, "another", 1, 3);
    // A set that fits is taken.
    let out = c.rebalance(&[1, 2, 3], 100);
    assert!(out.blocked.is_empty() && out.drained);
}

#[test]
fn at_most_max_in_flight_moves_at_once() {
    let mut c = cluster(2);
    create(&mut c, "t", 8, 1);
    add_node(&mut c, 3);
    add_node(&mut c, 4);
    let out = c.rebalance(&[1, 2, 3, 4], 2);
    assert_eq!(out.started.len(), 2);
    assert_eq!(out.in_flight, 2);
    assert!(out.deferred > 0);
    assert!(
        c.state().balanced_for.is_empty(),
        "not balanced until all moves started"
    );
    let again = c.rebalance(&[1, 2, 3, 4], 2);
    assert!(again.started.is_empty(), "two in flight already");
    let mut rounds = 0;
    while c.in_flight() > 0 || c.rebalance(&[1, 2, 3, 4], 2).in_flight > 0 {
        catch_up(&mut c);
        rounds += 1;
        assert!(rounds < 10);
    }
    let (reps, leads) = load(&c);
    assert_eq!(reps, BTreeMap::from([(1, 2), (2, 2), (3, 2), (4, 2)]));
    assert_eq!(leads, reps);
    assert_eq!(c.state().balanced_for, [1, 2, 3, 4].into());
}

#[test]
fn nothing_moves_while_a_node_of_the_set_is_not_alive() {
    let mut c = cluster(3);
    create(&mut c, "t", 3, 3);
    let v = c.version();
    let out = c.rebalance(&[1, 2, 3, 4, 5], 10);
    assert_eq!(out.waiting_for, vec![4, 5]);
    assert!(out.started.is_empty());
    assert_eq!(c.version(), v, "nothing excluded, nothing moved");
}

#[test]
fn a_move_onto_a_node_that_leaves_the_set_is_retargeted() {
    let mut c = cluster(2);
    create(&mut c, "t", 4, 1);
    add_node(&mut c, 3);
    let out = c.rebalance(&[1, 2, 3], 10);
    let m = out.started.first().expect("a move onto node 3").clone();
    assert!(m.to.contains(&3));
    // Before it completes, node 3 is to go after all: the move is re-planned off node 3.
    // Here the least loaded node is the one the partition came from, so the replica that
    // never left is the whole new target and the move is over at once (a cancellation).
    let out = c.rebalance(&[1, 2], 10);
    assert!(out.started.iter().any(|x| x.partition == m.partition));
    let p = c.partition(&m.topic, m.partition).unwrap().clone();
    assert_eq!(p.target_replicas, None);
    assert_eq!(p.replicas, m.from, "{p:?}");
    assert!(out.drained, "{:?}", parts(&c));
    assert_eq!(c.in_flight(), 0);
}

#[test]
fn a_reorder_finishes_at_once_and_moves_leadership_to_the_preferred_replica() {
    let mut c = cluster(2);
    // Two partitions both preferring node 1 (explicit assignment).
    let t = NewTopic {
        name: "t".into(),
        partitions: -1,
        replication_factor: -1,
        assignments: vec![vec![1, 2], vec![1, 2]],
        ..NewTopic::default()
    };
    for o in c.create_topics(&[t], false) {
        o.result.unwrap();
    }
    let out = c.rebalance(&[1, 2], 10);
    assert_eq!(out.started.len(), 1);
    assert_eq!(out.in_flight, 0, "no data to copy: done in the same call");
    let (_, leads) = load(&c);
    assert_eq!(leads, BTreeMap::from([(1, 1), (2, 1)]));
    let moved = c.partition("t", out.started[0].partition).unwrap();
    assert_eq!(moved.leader, 2);
    assert_eq!(moved.leader_epoch, 1);
}

#[test]
fn moving_a_single_replica_hands_leadership_to_the_new_node() {
    let mut c = cluster(2);
    create(&mut c, "t", 1, 1);
    let p = c.partition("t", 0).unwrap().clone();
    let other = if p.leader == 1 { 2 } else { 1 };
    let out = c.rebalance(&[other], 10);
    assert_eq!(out.started.len(), 1);
    let p = c.partition("t", 0).unwrap().clone();
    assert_eq!(p.replicas.len(), 2, "both copies while moving");
    let e = c.state().nodes[&p.leader].broker_epoch;
    c.alter_partition(
        p.leader,
        e,
        "t",
        0,
        p.leader_epoch,
        p.partition_epoch,
        &[p.leader, other],
    )
    .unwrap();
    let done = c.partition("t", 0).unwrap().clone();
    assert_eq!(done.replicas, vec![other]);
    assert_eq!(done.leader, other);
}

#[test]
fn state_with_moves_round_trips_and_old_states_still_load() {
    let mut c = cluster(3);
    create(&mut c, "t", 3, 2);
    c.rebalance(&[1, 2], 10);
    let json = c.state().to_json().unwrap();
    let back = State::from_json(&json, "test").unwrap();
    assert_eq!(&back, c.state());
    // A state written before reassignment existed has none of the new fields.
    let mut old: serde_json::Value = serde_json::from_slice(&json).unwrap();
    old.as_object_mut().unwrap().remove("excluded_nodes");
    old.as_object_mut().unwrap().remove("balanced_for");
    for p in old["topics"]["t"]["partitions"].as_array_mut().unwrap() {
        p.as_object_mut().unwrap().remove("target_replicas");
    }
    let parsed = State::from_json(&serde_json::to_vec(&old).unwrap(), "old").unwrap();
    assert!(parsed.excluded_nodes.is_empty());
    assert!(parsed.topics["t"]
        .partitions
        .iter()
        .all(|p| p.target_replicas.is_none()));
}
