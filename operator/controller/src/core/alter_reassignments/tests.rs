//! AlterPartitionReassignments and ListPartitionReassignments: Kafka's request rules over
//! the core's moves.

use super::super::{Cluster, Config, NewTopic, PartitionOutcome, PartitionRecord, NO_LEADER};
use super::*;
use crate::codes;
use crate::service::kafka_code;

const SESSION: u64 = 6000;

fn cluster(n: i32) -> Cluster {
    let mut c = Cluster::new("c", Config::default());
    for id in 1..=n {
        c.register(id, "h", 9000 + id, "", "a", 0).unwrap();
    }
    c
}

/// Topic `t` with one partition on `replicas` (an explicit assignment).
fn create(c: &mut Cluster, replicas: &[i32]) {
    let t = NewTopic {
        name: "t".into(),
        partitions: -1,
        replication_factor: -1,
        assignments: vec![replicas.to_vec()],
        ..NewTopic::default()
    };
    for o in c.create_topics(&[t], false) {
        o.result.unwrap();
    }
    c.take_events();
}

fn part(c: &Cluster) -> PartitionRecord {
    c.partition("t", 0).unwrap().clone()
}

fn beat(c: &mut Cluster, nodes: &[i32], now: u64) {
    for &n in nodes {
        let e = c.state().nodes[&n].broker_epoch;
        c.heartbeat(n, e, now).unwrap();
    }
}

fn to(replicas: &[i32]) -> ReassignmentRequest {
    ReassignmentRequest {
        topic: "t".into(),
        partition: 0,
        replicas: Some(replicas.to_vec()),
    }
}

fn cancel() -> ReassignmentRequest {
    ReassignmentRequest {
        topic: "t".into(),
        partition: 0,
        replicas: None,
    }
}

fn code(out: &[PartitionOutcome]) -> i32 {
    match &out[0].result {
        Ok(()) => codes::NONE,
        Err(e) => kafka_code(e),
    }
}

/// The leader admits `joining` into the ISR (they caught up).
fn join(c: &mut Cluster, joining: &[i32]) {
    let p = part(c);
    let mut isr = p.isr.clone();
    isr.extend(joining.iter().copied().filter(|r| !p.isr.contains(r)));
    let e = c.state().nodes[&p.leader].broker_epoch;
    c.alter_partition(p.leader, e, "t", 0, p.leader_epoch, p.partition_epoch, &isr)
        .unwrap();
}

#[test]
fn a_move_starts_is_listed_and_completes_when_the_targets_are_in_sync() {
    let mut c = cluster(5);
    create(&mut c, &[1, 2, 3]);
    let before = part(&c);
    let out = c.alter_reassignments(&[to(&[4, 5, 1])], false);
    assert_eq!(code(&out), codes::NONE);
    let moving = part(&c);
    assert_eq!(moving.replicas, vec![4, 5, 1, 2, 3]);
    assert_eq!(moving.target_replicas, Some(vec![4, 5, 1]));
    assert_eq!(moving.original_replicas, Some(vec![1, 2, 3]));
    assert_eq!(
        moving.leader, before.leader,
        "leadership stays until completion"
    );
    assert_eq!(moving.partition_epoch, before.partition_epoch + 1);

    let listed = c.list_reassignments(None);
    assert_eq!(
        listed,
        vec![OngoingReassignment {
            topic: "t".into(),
            partition: 0,
            replicas: vec![4, 5, 1, 2, 3],
            adding: vec![4, 5],
            removing: vec![2, 3],
        }]
    );
    assert_eq!(c.list_reassignments(Some(&[("t".into(), 0)])), listed);
    assert!(c.list_reassignments(Some(&[("t".into(), 1)])).is_empty());
    assert!(c.list_reassignments(Some(&[("u".into(), 0)])).is_empty());

    join(&mut c, &[4]);
    assert!(part(&c).target_replicas.is_some(), "5 is not in sync yet");
    join(&mut c, &[5]);
    let done = part(&c);
    assert_eq!(done.replicas, vec![4, 5, 1]);
    assert_eq!(done.target_replicas, None);
    assert_eq!(done.original_replicas, None);
    assert_eq!(done.leader, 4);
    assert!(done.isr.iter().all(|r| [4, 5, 1].contains(r)));
    assert!(c.list_reassignments(None).is_empty());
}

#[test]
fn a_reassignment_to_the_current_replicas_changes_nothing() {
    let mut c = cluster(3);
    create(&mut c, &[1, 2, 3]);
    let v = c.version();
    let out = c.alter_reassignments(&[to(&[1, 2, 3])], false);
    assert_eq!(code(&out), codes::NONE);
    assert_eq!(c.version(), v);
    // The same target again while a move is in flight changes nothing either.
    let mut c = cluster(4);
    create(&mut c, &[1, 2, 3]);
    c.alter_reassignments(&[to(&[4, 2, 3])], false);
    let v = c.version();
    let out = c.alter_reassignments(&[to(&[4, 2, 3])], false);
    assert_eq!(code(&out), codes::NONE);
    assert_eq!(c.version(), v);
}

#[test]
fn invalid_targets_are_refused_with_a_reason() {
    let mut c = cluster(4);
    create(&mut c, &[1, 2, 3]);
    beat(&mut c, &[1, 2, 3], SESSION - 1);
    c.tick(SESSION);
    assert!(!c.is_alive(4));
    let v = c.version();
    for (target, want) in [
        (vec![], "empty"),
        (vec![1, 2, 1], "more than once"),
        (vec![1, 2, 9], "broker 9 is not registered"),
        (vec![1, 2, -1], "broker -1 is not registered"),
        (vec![1, 2, 4], "broker 4 is not alive"),
    ] {
        let out = c.alter_reassignments(&[to(&target)], false);
        assert_eq!(code(&out), codes::INVALID_REPLICA_ASSIGNMENT, "{target:?}");
        let msg = out[0].result.as_ref().unwrap_err().to_string();
        assert!(msg.contains(want), "{target:?}: {msg}");
    }
    let out = c.alter_reassignments(
        &[ReassignmentRequest {
            topic: "nope".into(),
            partition: 0,
            replicas: Some(vec![1]),
        }],
        false,
    );
    assert_eq!(code(&out), codes::UNKNOWN_TOPIC_OR_PARTITION);
    assert_eq!(c.version(), v, "refusals change nothing");
}

#[test]
fn the_replication_factor_may_change_unless_the_request_forbids_it() {
    let mut c = cluster(3);
    create(&mut c, &[1, 2]);
    let out = c.alter_reassignments(&[to(&[1, 2, 3])], true);
    assert_eq!(code(&out), codes::INVALID_REPLICATION_FACTOR);
    assert!(part(&c).target_replicas.is_none());
    let out = c.alter_reassignments(&[to(&[1, 2, 3])], false);
    assert_eq!(code(&out), codes::NONE);
    join(&mut c, &[3]);
    assert_eq!(part(&c).replicas, vec![1, 2, 3]);
    // Shrinking completes at once: the remaining replicas are already in sync.
    let out = c.alter_reassignments(&[to(&[3])], false);
    assert_eq!(code(&out), codes::NONE);
    let p = part(&c);
    assert_eq!((p.replicas, p.isr, p.leader), (vec![3], vec![3], 3));
}

#[test]
fn cancel_reverts_to_the_original_replicas() {
    let mut c = cluster(5);
    create(&mut c, &[1, 2, 3]);
    let out = c.alter_reassignments(&[cancel()], false);
    assert_eq!(code(&out), codes::NO_REASSIGNMENT_IN_PROGRESS);

    let before = part(&c);
    c.alter_reassignments(&[to(&[4, 5, 3])], false);
    join(&mut c, &[4]);
    let moving = part(&c);
    assert!(moving.isr.contains(&4));
    let out = c.alter_reassignments(&[cancel()], false);
    assert_eq!(code(&out), codes::NONE);
    let p = part(&c);
    assert_eq!(p.replicas, vec![1, 2, 3]);
    assert_eq!(p.target_replicas, None);
    assert_eq!(p.original_replicas, None);
    assert_eq!(p.isr, before.isr, "the new replica leaves the ISR");
    assert_eq!(p.leader, before.leader);
    assert_eq!(p.leader_epoch, before.leader_epoch, "the leader stayed");
    assert!(p.partition_epoch > moving.partition_epoch);
    assert!(c.list_reassignments(None).is_empty());
}

#[test]
fn a_target_equal_to_the_original_replicas_cancels() {
    let mut c = cluster(4);
    create(&mut c, &[1, 2, 3]);
    c.alter_reassignments(&[to(&[4, 2, 3])], false);
    let out = c.alter_reassignments(&[to(&[1, 2, 3])], false);
    assert_eq!(code(&out), codes::NONE);
    let p = part(&c);
    assert_eq!((p.replicas, p.target_replicas), (vec![1, 2, 3], None));
}

#[test]
fn retargeting_keeps_the_first_original_replicas() {
    let mut c = cluster(5);
    create(&mut c, &[1, 2, 3]);
    c.alter_reassignments(&[to(&[4, 2, 3])], false);
    c.alter_reassignments(&[to(&[5, 2, 3])], false);
    let p = part(&c);
    assert_eq!(p.target_replicas, Some(vec![5, 2, 3]));
    assert_eq!(p.original_replicas, Some(vec![1, 2, 3]));
    let listed = c.list_reassignments(None);
    assert_eq!(listed[0].adding, vec![5]);
    // 4 never joined; it leaves with 1 when the move completes.
    assert_eq!(listed[0].removing, vec![4, 1]);
    c.alter_reassignments(&[cancel()], false);
    assert_eq!(part(&c).replicas, vec![1, 2, 3]);
}

#[test]
fn cancel_that_would_leave_no_in_sync_replica_is_refused() {
    let mut c = cluster(4);
    create(&mut c, &[1, 2]);
    c.alter_reassignments(&[to(&[4, 3])], false);
    join(&mut c, &[4]);
    // Both original replicas die: 4, in sync, leads alone.
    beat(&mut c, &[3, 4], SESSION - 1);
    c.tick(SESSION);
    let p = part(&c);
    assert_eq!((p.leader, p.isr), (4, vec![4]));
    let v = c.version();
    let out = c.alter_reassignments(&[cancel()], false);
    assert_eq!(code(&out), codes::INVALID_REPLICA_ASSIGNMENT);
    assert!(out[0]
        .result
        .as_ref()
        .unwrap_err()
        .to_string()
        .contains("no in-sync replica"));
    assert_eq!(c.version(), v);
}

#[test]
fn cancel_elects_an_original_replica_when_the_leader_is_leaving() {
    let mut c = cluster(4);
    create(&mut c, &[1, 2]);
    c.alter_reassignments(&[to(&[4, 3])], false);
    join(&mut c, &[4]);
    // The leader (1) dies: 4 comes first in the moving replica list and is in sync.
    beat(&mut c, &[2, 3, 4], SESSION - 1);
    c.tick(SESSION);
    let leading = part(&c);
    assert_eq!(leading.leader, 4);
    assert_eq!(leading.isr, vec![2, 4]);
    let out = c.alter_reassignments(&[cancel()], false);
    assert_eq!(code(&out), codes::NONE);
    let p = part(&c);
    assert_eq!(p.replicas, vec![1, 2]);
    assert_eq!(p.isr, vec![2]);
    assert_eq!(p.leader, 2, "1 is dead; 2 is the original replica in sync");
    assert_eq!(p.leader_epoch, leading.leader_epoch + 1);
    assert_ne!(p.leader, NO_LEADER);
}
