//! Unit tests of the core rules: registration, liveness, election, ISR commits, topics.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::codes;

pub(super) const SESSION: u64 = 6000;

pub(super) fn config() -> Config {
    Config {
        session_timeout_ms: SESSION,
        default_replication_factor: 1,
        num_partitions: 1,
        offsets_topic_replication_factor: 3,
        offsets_topic_num_partitions: 50,
        stream_loss_grace_ms: 1000,
        leader_imbalance_percentage: 10,
    }
}

/// A cluster with nodes 1..=n registered at time 0 (incarnation "a").
pub(super) fn cluster(n: i32) -> Cluster {
    let mut c = Cluster::new("cluster", config());
    for id in 1..=n {
        c.register(id, "127.0.0.1", 9000 + id, "", "a", 0).unwrap();
    }
    c.take_events();
    c
}

pub(super) fn epoch(c: &Cluster, node: i32) -> i64 {
    c.state().nodes[&node].broker_epoch
}

pub(super) fn topic(name: &str, partitions: i32, rf: i32) -> NewTopic {
    NewTopic {
        name: name.to_string(),
        partitions,
        replication_factor: rf,
        ..NewTopic::default()
    }
}

pub(super) fn create(c: &mut Cluster, name: &str, partitions: i32, rf: i32) {
    let out = c.create_topics(&[topic(name, partitions, rf)], false);
    out.into_iter().for_each(|o| {
        o.result.unwrap();
    });
}

pub(super) fn part(c: &Cluster, name: &str, p: i32) -> PartitionRecord {
    c.partition(name, p).unwrap().clone()
}

/// Keeps `nodes` alive at `now` by heartbeating them.
pub(super) fn beat(c: &mut Cluster, nodes: &[i32], now: u64) {
    for &n in nodes {
        let e = epoch(c, n);
        c.heartbeat(n, e, now).unwrap();
    }
}

pub(super) fn code(e: &crate::Error) -> i32 {
    crate::service::kafka_code(e)
}

#[test]
fn first_registration_assigns_epochs_and_bumps_the_version() {
    let mut c = Cluster::new("x", config());
    let v0 = c.version();
    let r1 = c.register(1, "h", 1, "r1", "a", 0).unwrap();
    let r2 = c.register(2, "h", 2, "", "a", 0).unwrap();
    assert_eq!((r1.broker_epoch, r1.restarted), (1, false));
    assert_eq!(r2.broker_epoch, 2);
    assert_eq!(c.version(), v0 + 2);
    assert!(c.is_alive(1) && c.is_alive(2));
    assert_eq!(
        c.take_events(),
        vec![
            Event::NodeRegistered {
                node: 1,
                broker_epoch: 1,
                restarted: false
            },
            Event::NodeAlive { node: 1 },
            Event::NodeRegistered {
                node: 2,
                broker_epoch: 2,
                restarted: false
            },
            Event::NodeAlive { node: 2 },
        ]
    );
}

#[test]
fn reconnect_with_same_incarnation_keeps_epoch_and_changes_nothing() {
    let mut c = cluster(3);
    create(&mut c, "t", 3, 3);
    let before = c.state().clone();
    let r = c.register(2, "127.0.0.1", 9002, "", "a", 100).unwrap();
    assert_eq!(r.broker_epoch, epoch(&c, 2));
    assert!(!r.restarted);
    assert_eq!(c.state(), &before, "no version bump, no partition change");
    // A new address is recorded (and is a change).
    c.register(2, "10.0.0.2", 9002, "", "a", 100).unwrap();
    assert_eq!(c.state().nodes[&2].host, "10.0.0.2");
    assert_eq!(c.version(), before.version + 1);
    assert_eq!(c.state().topics, before.topics);
}

#[test]
fn quick_restart_is_a_death_then_a_return() {
    let mut c = cluster(3);
    create(&mut c, "t", 3, 3);
    let led: Vec<i32> = (0..3).filter(|&p| part(&c, "t", p).leader == 2).collect();
    assert_eq!(led.len(), 1);
    let p = led[0];
    let old = part(&c, "t", p);
    let old_epoch = epoch(&c, 2);
    let v = c.version();
    let r = c.register(2, "127.0.0.1", 9002, "", "b", 10).unwrap();
    assert!(r.restarted);
    assert!(r.broker_epoch > old_epoch);
    assert_eq!(c.version(), v + 1, "one call, one version");
    let now = part(&c, "t", p);
    assert_ne!(
        now.leader, 2,
        "leadership moved away from the restarted node"
    );
    assert!(now.leader_epoch > old.leader_epoch);
    assert!(now.partition_epoch > old.partition_epoch);
    for q in 0..3 {
        assert!(
            !part(&c, "t", q).isr.contains(&2),
            "restarted node left every ISR"
        );
    }
    assert!(c.is_alive(2));
    // The old epoch is fenced.
    let err = c.heartbeat(2, old_epoch, 20).unwrap_err();
    assert_eq!(code(&err), codes::STALE_BROKER_EPOCH);
}

#[test]
fn quick_restart_of_the_only_isr_member_reelects_it() {
    let mut c = cluster(1);
    create(&mut c, "t", 1, 1);
    let old = part(&c, "t", 0);
    c.register(1, "127.0.0.1", 9001, "", "b", 10).unwrap();
    let now = part(&c, "t", 0);
    assert_eq!(now.leader, 1);
    assert_eq!(now.isr, vec![1]);
    assert_eq!(now.leader_epoch, old.leader_epoch + 2, "to -1 and back");
}

#[test]
fn heartbeat_errors_and_deadlines() {
    let mut c = cluster(2);
    assert_eq!(
        code(&c.heartbeat(9, 1, 0).unwrap_err()),
        codes::STALE_BROKER_EPOCH
    );
    let e = epoch(&c, 1);
    assert_eq!(
        code(&c.heartbeat(1, e + 1, 0).unwrap_err()),
        codes::STALE_BROKER_EPOCH
    );
    let v = c.version();
    c.heartbeat(1, e, 5000).unwrap();
    assert_eq!(c.version(), v, "a routine heartbeat changes nothing");
    assert_eq!(c.tick(SESSION - 1), Vec::<i32>::new());
    assert_eq!(
        c.tick(SESSION),
        vec![2],
        "node 2 missed its deadline, node 1 did not"
    );
    assert!(c.is_alive(1) && !c.is_alive(2));
    assert_eq!(c.version(), v + 1);
    assert_eq!(c.tick(5000 + SESSION), vec![1]);
    assert!(c.alive_nodes().is_empty());
}

#[test]
fn dead_leader_is_replaced_by_the_next_alive_isr_replica() {
    let mut c = cluster(3);
    create(&mut c, "t", 3, 3);
    let before: Vec<PartitionRecord> = (0..3).map(|p| part(&c, "t", p)).collect();
    beat(&mut c, &[2, 3], 4000);
    c.take_events();
    assert_eq!(c.tick(SESSION), vec![1]);
    for (i, old) in before.iter().enumerate() {
        let now = part(&c, "t", i as i32);
        assert_eq!(
            now.isr,
            old.isr
                .iter()
                .copied()
                .filter(|&r| r != 1)
                .collect::<Vec<_>>()
        );
        if old.leader == 1 {
            let expected = *old.replicas.iter().find(|&&r| r != 1).unwrap();
            assert_eq!(
                now.leader, expected,
                "first alive ISR replica in replicas order"
            );
            assert_eq!(now.leader_epoch, old.leader_epoch + 1);
        } else {
            assert_eq!(now.leader, old.leader);
            assert_eq!(
                now.leader_epoch, old.leader_epoch,
                "untouched leadership keeps its epoch"
            );
        }
        assert_eq!(now.partition_epoch, old.partition_epoch + 1);
    }
    let events = c.take_events();
    assert!(events.contains(&Event::NodeDead { node: 1 }));
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::LeaderChanged { leader, unclean: false, .. } if *leader != 1)));
}

#[test]
fn election_skips_replicas_outside_the_isr() {
    let mut c = cluster(3);
    create(&mut c, "t", 1, 3);
    let p = part(&c, "t", 0);
    assert_eq!(p.replicas, vec![1, 2, 3]);
    // Leader 1 shrinks the ISR to [1, 3]: node 2 fell behind.
    let e1 = epoch(&c, 1);
    c.alter_partition(1, e1, "t", 0, p.leader_epoch, p.partition_epoch, &[1, 3])
        .unwrap();
    beat(&mut c, &[2, 3], 4000);
    c.tick(SESSION);
    let now = part(&c, "t", 0);
    assert_eq!(now.leader, 3, "2 is earlier in replicas but not in the ISR");
    assert_eq!(now.isr, vec![3]);
}

#[test]
fn last_isr_member_dying_leaves_the_partition_offline_until_it_returns() {
    let mut c = cluster(2);
    create(&mut c, "t", 1, 2);
    let p = part(&c, "t", 0);
    assert_eq!(p.leader, 1);
    // Node 2 dies first: ISR shrinks to [1].
    beat(&mut c, &[1], 4000);
    c.tick(SESSION);
    assert_eq!(part(&c, "t", 0).isr, vec![1]);
    // Node 2 comes back (not in the ISR), then node 1 dies.
    let e2 = epoch(&c, 2);
    c.heartbeat(2, e2, 5000).unwrap();
    c.tick(4000 + SESSION);
    let offline = part(&c, "t", 0);
    assert_eq!(offline.leader, NO_LEADER);
    assert_eq!(offline.isr, vec![1], "the ISR keeps its last member");
    assert!(c.image().topics["t"].partitions[0].leader == NO_LEADER);
    // Node 1 registers again (restarted) and is elected: it holds all committed data.
    c.register(1, "127.0.0.1", 9001, "", "b", 11_000).unwrap();
    let back = part(&c, "t", 0);
    assert_eq!(back.leader, 1);
    assert_eq!(back.isr, vec![1]);
    assert!(back.leader_epoch > offline.leader_epoch);
}

#[test]
fn unclean_election_when_enabled() {
    for (value, expect_leader) in [
        ("true", 2),
        ("TRUE", 2),
        ("false", NO_LEADER),
        ("", NO_LEADER),
    ] {
        let mut c = cluster(2);
        let mut t = topic("t", 1, 2);
        if !value.is_empty() {
            t.configs
                .insert(UNCLEAN_LEADER_ELECTION.into(), value.into());
        }
        c.create_topics(&[t], false)[0].result.as_ref().unwrap();
        let p = part(&c, "t", 0);
        let e1 = epoch(&c, 1);
        c.alter_partition(1, e1, "t", 0, p.leader_epoch, p.partition_epoch, &[1])
            .unwrap();
        beat(&mut c, &[2], 4000);
        c.tick(SESSION);
        let now = part(&c, "t", 0);
        assert_eq!(now.leader, expect_leader, "unclean={value:?}");
        if expect_leader == 2 {
            assert_eq!(now.isr, vec![2], "ISR reset to the unclean leader");
        } else {
            assert_eq!(now.isr, vec![1]);
        }
    }
}

#[test]
fn enabling_unclean_election_elects_offline_partitions_at_once() {
    let mut c = cluster(2);
    create(&mut c, "t", 1, 2);
    let p = part(&c, "t", 0);
    let e1 = epoch(&c, 1);
    c.alter_partition(1, e1, "t", 0, p.leader_epoch, p.partition_epoch, &[1])
        .unwrap();
    beat(&mut c, &[2], 4000);
    c.tick(SESSION);
    assert_eq!(part(&c, "t", 0).leader, NO_LEADER);
    let configs = BTreeMap::from([(UNCLEAN_LEADER_ELECTION.to_string(), "true".to_string())]);
    c.alter_topic_configs("t", configs.clone(), true).unwrap();
    assert_eq!(
        part(&c, "t", 0).leader,
        NO_LEADER,
        "validate_only changes nothing"
    );
    c.alter_topic_configs("t", configs, false).unwrap();
    assert_eq!(part(&c, "t", 0).leader, 2);
    assert_eq!(
        c.state().topics["t"].configs[UNCLEAN_LEADER_ELECTION],
        "true"
    );
}

#[test]
fn a_node_returning_after_death_is_alive_but_not_in_isrs() {
    let mut c = cluster(3);
    create(&mut c, "t", 3, 3);
    beat(&mut c, &[1, 2], 4000);
    c.tick(SESSION);
    assert!(!c.is_alive(3));
    let e3 = epoch(&c, 3);
    let v = c.version();
    c.heartbeat(3, e3, 6500).unwrap();
    assert!(c.is_alive(3));
    assert_eq!(c.version(), v + 1, "alive flags are part of the image");
    for p in 0..3 {
        assert!(!part(&c, "t", p).isr.contains(&3));
    }
    // Its leader re-admits it through AlterPartition.
    let p = part(&c, "t", 0);
    let leader = p.leader;
    let el = epoch(&c, leader);
    let mut isr = p.isr.clone();
    isr.push(3);
    let committed = c
        .alter_partition(leader, el, "t", 0, p.leader_epoch, p.partition_epoch, &isr)
        .unwrap();
    assert_eq!(committed.isr, isr);
}

#[test]
fn alter_partition_follows_kafkas_rules() {
    let mut c = cluster(3);
    create(&mut c, "t", 1, 3);
    let p = part(&c, "t", 0);
    let (le, pe) = (p.leader_epoch, p.partition_epoch);
    let e1 = epoch(&c, 1);
    let e2 = epoch(&c, 2);
    // (node, epoch, topic, partition, leader_epoch, partition_epoch, isr, expected code)
    type Case<'a> = (i32, i64, &'a str, i32, i32, i32, Vec<i32>, i32);
    let cases: Vec<Case> = vec![
        (
            1,
            e1 + 7,
            "t",
            0,
            le,
            pe,
            vec![1, 2],
            codes::STALE_BROKER_EPOCH,
        ),
        (
            1,
            e1,
            "nope",
            0,
            le,
            pe,
            vec![1, 2],
            codes::UNKNOWN_TOPIC_OR_PARTITION,
        ),
        (
            1,
            e1,
            "t",
            1,
            le,
            pe,
            vec![1, 2],
            codes::UNKNOWN_TOPIC_OR_PARTITION,
        ),
        (
            1,
            e1,
            "t",
            -1,
            le,
            pe,
            vec![1, 2],
            codes::UNKNOWN_TOPIC_OR_PARTITION,
        ),
        (
            2,
            e2,
            "t",
            0,
            le,
            pe,
            vec![1, 2],
            codes::NOT_LEADER_OR_FOLLOWER,
        ),
        (
            1,
            e1,
            "t",
            0,
            le + 1,
            pe,
            vec![1, 2],
            codes::FENCED_LEADER_EPOCH,
        ),
        (
            1,
            e1,
            "t",
            0,
            le,
            pe + 1,
            vec![1, 2],
            codes::INVALID_UPDATE_VERSION,
        ),
        (1, e1, "t", 0, le, pe, vec![2, 3], codes::INELIGIBLE_REPLICA),
        (1, e1, "t", 0, le, pe, vec![1, 4], codes::INELIGIBLE_REPLICA),
        (
            1,
            e1,
            "t",
            0,
            le,
            pe,
            vec![1, 2, 2],
            codes::INELIGIBLE_REPLICA,
        ),
        (1, e1, "t", 0, le, pe, vec![], codes::INELIGIBLE_REPLICA),
    ];
    let version = c.version();
    for (node, be, t, p, le, pe, isr, expected) in cases {
        let err = c.alter_partition(node, be, t, p, le, pe, &isr).unwrap_err();
        assert_eq!(code(&err), expected, "{err}");
    }
    assert_eq!(c.version(), version, "refusals change nothing");
    let ok = c.alter_partition(1, e1, "t", 0, le, pe, &[1, 3]).unwrap();
    assert_eq!(ok.isr, vec![1, 3]);
    assert_eq!(ok.partition_epoch, pe + 1);
    assert_eq!(ok.leader_epoch, le);
    assert_eq!(c.version(), version + 1);
    // The same proposal again is now stale.
    let err = c
        .alter_partition(1, e1, "t", 0, le, pe, &[1, 3])
        .unwrap_err();
    assert_eq!(code(&err), codes::INVALID_UPDATE_VERSION);
    // Re-proposing the current ISR commits nothing.
    let same = c
        .alter_partition(1, e1, "t", 0, le, pe + 1, &[1, 3])
        .unwrap();
    assert_eq!(same.partition_epoch, pe + 1);
    assert_eq!(c.version(), version + 1);
}

#[test]
fn alter_partition_refuses_adding_a_dead_replica_but_may_keep_one() {
    let mut c = cluster(3);
    create(&mut c, "t", 1, 3);
    let p = part(&c, "t", 0);
    let e1 = epoch(&c, 1);
    let p = c
        .alter_partition(1, e1, "t", 0, p.leader_epoch, p.partition_epoch, &[1, 2])
        .unwrap();
    beat(&mut c, &[1, 2], 4000);
    c.tick(SESSION); // 3 dies; it was not in the ISR.
    let p2 = part(&c, "t", 0);
    assert_eq!(p2.isr, vec![1, 2]);
    let err = c
        .alter_partition(
            1,
            e1,
            "t",
            0,
            p2.leader_epoch,
            p2.partition_epoch,
            &[1, 2, 3],
        )
        .unwrap_err();
    assert_eq!(code(&err), codes::INELIGIBLE_REPLICA);
    assert!(err.to_string().contains("3 is not alive"), "{err}");
    assert_eq!(p.partition_epoch, p2.partition_epoch);
}

#[test]
fn topic_names_follow_kafkas_rules() {
    let long = "a".repeat(249);
    let too_long = "a".repeat(250);
    let cases: Vec<(&str, bool)> = vec![
        ("orders", true),
        ("a.b_c-D9", true),
        (long.as_str(), true),
        ("", false),
        (".", false),
        ("..", false),
        ("...", true),
        (too_long.as_str(), false),
        ("has space", false),
        ("slash/", false),
        ("ünïcode", false),
    ];
    for (name, valid) in cases {
        assert_eq!(validate_topic_name(name).is_ok(), valid, "{name:?}");
        let mut c = cluster(1);
        let out = c.create_topics(&[topic(name, 1, 1)], false);
        let r = &out[0].result;
        if valid {
            assert!(r.is_ok(), "{name:?}: {r:?}");
        } else {
            assert_eq!(
                code(r.as_ref().unwrap_err()),
                codes::INVALID_TOPIC_EXCEPTION
            );
        }
    }
}

#[test]
fn create_topics_errors() {
    let mut c = cluster(2);
    create(&mut c, "exists", 1, 1);
    create(&mut c, "a.b", 1, 1);
    let cases: Vec<(NewTopic, i32)> = vec![
        (topic("exists", 1, 1), codes::TOPIC_ALREADY_EXISTS),
        (topic("a_b", 1, 1), codes::INVALID_TOPIC_EXCEPTION),
        (topic("p0", 0, 1), codes::INVALID_PARTITIONS),
        (topic("pneg", -2, 1), codes::INVALID_PARTITIONS),
        (
            topic("phuge", MAX_PARTITIONS + 1, 1),
            codes::INVALID_PARTITIONS,
        ),
        (topic("r0", 1, 0), codes::INVALID_REPLICATION_FACTOR),
        (topic("rneg", 1, -5), codes::INVALID_REPLICATION_FACTOR),
        (topic("r3", 1, 3), codes::INVALID_REPLICATION_FACTOR),
        (
            NewTopic {
                assignments: vec![vec![1]],
                ..topic("both", 1, -1)
            },
            codes::INVALID_REQUEST,
        ),
        (
            NewTopic {
                assignments: vec![vec![1, 1]],
                ..topic("dup", -1, -1)
            },
            codes::INVALID_REPLICA_ASSIGNMENT,
        ),
        (
            NewTopic {
                assignments: vec![vec![1, 9]],
                ..topic("unknown-node", -1, -1)
            },
            codes::INVALID_REPLICA_ASSIGNMENT,
        ),
        (
            NewTopic {
                assignments: vec![vec![1, 2], vec![2]],
                ..topic("uneven", -1, -1)
            },
            codes::INVALID_REPLICA_ASSIGNMENT,
        ),
        (
            NewTopic {
                assignments: vec![vec![]],
                ..topic("empty", -1, -1)
            },
            codes::INVALID_REPLICA_ASSIGNMENT,
        ),
    ];
    let version = c.version();
    for (t, expected) in cases {
        let name = t.name.clone();
        let out = c.create_topics(&[t], false);
        let err = out[0].result.as_ref().unwrap_err();
        assert_eq!(code(err), expected, "{name}: {err}");
    }
    assert_eq!(c.version(), version);
    let out = c.create_topics(&[topic("r3", 1, 3)], false);
    let msg = out[0].result.as_ref().unwrap_err().to_string();
    assert!(
        msg.contains("replication factor 3") && msg.contains("alive nodes (2)"),
        "{msg}"
    );
    // Twice in one request: the first wins, the second is refused.
    let out = c.create_topics(&[topic("twice", 1, 1), topic("twice", 1, 1)], false);
    assert!(out[0].result.is_ok());
    assert_eq!(
        code(out[1].result.as_ref().unwrap_err()),
        codes::INVALID_REQUEST
    );
}

#[test]
fn create_topics_defaults_validate_only_and_internal_topics() {
    let mut c = cluster(3);
    let version = c.version();
    let out = c.create_topics(&[topic("v", 4, 2)], true);
    let t = out[0].result.as_ref().unwrap();
    assert_eq!((t.partitions.len(), t.replication_factor()), (4, 2));
    assert!(c.state().topics.is_empty());
    assert_eq!(c.version(), version, "validate_only commits nothing");

    let out = c.create_topics(&[topic("d", -1, -1), topic(OFFSETS_TOPIC, -1, -1)], false);
    let d = out[0].result.as_ref().unwrap();
    assert_eq!((d.partitions.len(), d.replication_factor()), (1, 1));
    assert!(!d.internal);
    let o = out[1].result.as_ref().unwrap();
    assert_eq!((o.partitions.len(), o.replication_factor()), (50, 3));
    assert!(o.internal);
    assert_eq!(c.version(), version + 1, "one batch, one version");
    let p = &o.partitions[0];
    assert_eq!(p.leader, p.replicas[0]);
    assert_eq!(p.isr, p.replicas);
    assert_eq!((p.leader_epoch, p.partition_epoch), (0, 0));
    assert_ne!(
        c.state().topics["d"].topic_id,
        c.state().topics[OFFSETS_TOPIC].topic_id
    );

    // The offsets topic's RF default is enforced against alive nodes.
    let mut small = cluster(1);
    let out = small.create_topics(&[topic(OFFSETS_TOPIC, -1, -1)], false);
    assert_eq!(
        code(out[0].result.as_ref().unwrap_err()),
        codes::INVALID_REPLICATION_FACTOR
    );
}

#[test]
fn explicit_assignments_are_honoured() {
    let mut c = cluster(3);
    beat(&mut c, &[1, 3], 4000);
    c.tick(SESSION); // 2 dies
    let t = NewTopic {
        assignments: vec![vec![3, 1], vec![2, 3], vec![1, 2]],
        ..topic("manual", -1, -1)
    };
    let out = c.create_topics(&[t], false);
    let rec = out[0].result.as_ref().unwrap();
    let got: Vec<(Vec<i32>, i32, Vec<i32>)> = rec
        .partitions
        .iter()
        .map(|p| (p.replicas.clone(), p.leader, p.isr.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (vec![3, 1], 3, vec![3, 1]),
            (vec![2, 3], 3, vec![3]),
            (vec![1, 2], 1, vec![1]),
        ]
    );
    let all_dead = NewTopic {
        assignments: vec![vec![2]],
        ..topic("dead", -1, -1)
    };
    let out = c.create_topics(&[all_dead], false);
    assert_eq!(
        code(out[0].result.as_ref().unwrap_err()),
        codes::INVALID_REPLICA_ASSIGNMENT
    );
}

#[test]
fn placement_through_create_topics_is_even() {
    let mut c = cluster(3);
    create(&mut c, "a", 6, 3);
    let leaders = |c: &Cluster| {
        let mut m = BTreeMap::new();
        for t in c.state().topics.values() {
            for p in &t.partitions {
                *m.entry(p.leader).or_insert(0) += 1;
            }
        }
        m
    };
    assert_eq!(leaders(&c), BTreeMap::from([(1, 2), (2, 2), (3, 2)]));
    for (i, name) in ["b", "c", "d", "e"].iter().enumerate() {
        create(&mut c, name, 1 + i as i32, 1 + (i as i32 % 3));
        let m = leaders(&c);
        let spread = m.values().max().unwrap() - m.values().min().unwrap();
        assert!(spread <= 1, "{m:?}");
    }
}

#[test]
fn delete_grow_and_configure_topics() {
    let mut c = cluster(3);
    create(&mut c, "t", 2, 2);
    let v = c.version();
    let out = c.delete_topics(&["nope".to_string()]);
    assert_eq!(
        code(out[0].result.as_ref().unwrap_err()),
        codes::UNKNOWN_TOPIC_OR_PARTITION
    );
    assert_eq!(c.version(), v);

    let cases: Vec<(&str, i32, i32)> = vec![
        ("nope", 3, codes::UNKNOWN_TOPIC_OR_PARTITION),
        ("t", 2, codes::INVALID_PARTITIONS),
        ("t", 1, codes::INVALID_PARTITIONS),
        ("t", MAX_PARTITIONS + 1, codes::INVALID_PARTITIONS),
    ];
    for (name, count, expected) in cases {
        let out = c.create_partitions(&[(name.to_string(), count)], false);
        assert_eq!(
            code(out[0].result.as_ref().unwrap_err()),
            expected,
            "{name} {count}"
        );
    }
    let out = c.create_partitions(&[("t".to_string(), 5)], true);
    assert_eq!(out[0].result.as_ref().unwrap().partitions.len(), 5);
    assert_eq!(c.state().topics["t"].partitions.len(), 2, "validate_only");
    let before = c.state().topics["t"].partitions.clone();
    let out = c.create_partitions(&[("t".to_string(), 5)], false);
    let grown = out[0].result.as_ref().unwrap();
    assert_eq!(grown.partitions.len(), 5);
    assert_eq!(
        &grown.partitions[..2],
        &before[..],
        "existing partitions untouched"
    );
    assert!(grown.partitions.iter().all(|p| p.replicas.len() == 2));
    assert_eq!(c.version(), v + 1);

    let err = c
        .alter_topic_configs("nope", BTreeMap::new(), false)
        .unwrap_err();
    assert_eq!(code(&err), codes::UNKNOWN_TOPIC_OR_PARTITION);
    let configs = BTreeMap::from([("retention.ms".to_string(), "1000".to_string())]);
    c.alter_topic_configs("t", configs.clone(), false).unwrap();
    assert_eq!(c.state().topics["t"].configs, configs);
    let v = c.version();
    c.alter_topic_configs("t", configs, false).unwrap();
    assert_eq!(c.version(), v, "the same set is no change");
    c.alter_topic_configs("t", BTreeMap::new(), false).unwrap();
    assert!(
        c.state().topics["t"].configs.is_empty(),
        "the full set replaces"
    );

    let out = c.delete_topics(&["t".to_string()]);
    assert!(out[0].result.is_ok());
    assert!(c.state().topics.is_empty());
    assert_eq!(c.version(), v + 2);
}

#[test]
fn producer_ids_come_in_disjoint_blocks() {
    let mut c = cluster(2);
    let e1 = epoch(&c, 1);
    let e2 = epoch(&c, 2);
    assert_eq!(c.allocate_producer_ids(1, e1, 0).unwrap(), (0, 1000));
    assert_eq!(c.allocate_producer_ids(2, e2, 0).unwrap(), (1000, 1000));
    assert_eq!(
        code(&c.allocate_producer_ids(2, e1, 0).unwrap_err()),
        codes::STALE_BROKER_EPOCH
    );
    assert_eq!(c.state().producer_id_block_end, 2000);
    // A floor moves the next block above it; a floor below the end changes nothing.
    assert_eq!(c.allocate_producer_ids(1, e1, 5000).unwrap(), (5000, 1000));
    assert_eq!(c.allocate_producer_ids(1, e1, 10).unwrap(), (6000, 1000));
}

#[test]
fn register_refuses_bad_addresses() {
    let mut c = Cluster::new("x", config());
    for (node, host, port) in [(-1, "h", 1), (1, "", 1), (1, "h", 0), (1, "h", 70000)] {
        let err = c.register(node, host, port, "", "a", 0).unwrap_err();
        assert_eq!(code(&err), codes::INVALID_REQUEST);
    }
    assert!(c.state().nodes.is_empty());
}

#[test]
fn image_names_lowest_alive_node_controller() {
    let mut c = cluster(3);
    create(&mut c, "t", 2, 2);
    let img = c.image();
    assert_eq!(img.controller_id, 1);
    assert_eq!(img.version, c.version());
    assert_eq!(img.nodes.len(), 3);
    assert!(img.nodes.values().all(|n| n.alive));
    assert_eq!(img.topics["t"].topic_id, c.state().topics["t"].topic_id);
    beat(&mut c, &[2, 3], 4000);
    c.tick(SESSION);
    let img = c.image();
    assert_eq!(img.controller_id, 2);
    assert!(!img.nodes[&1].alive);
    c.tick(100_000);
    assert_eq!(c.image().controller_id, NO_LEADER);
}

#[test]
fn state_round_trips_and_refuses_unknown_formats() {
    let mut c = cluster(2);
    create(&mut c, "t", 3, 2);
    let json = c.state().to_json().unwrap();
    let back = State::from_json(&json, "mem").unwrap();
    assert_eq!(&back, c.state());
    let mut v: serde_json::Value = serde_json::from_slice(&json).unwrap();
    v["format_version"] = serde_json::json!(99);
    let err = State::from_json(&serde_json::to_vec(&v).unwrap(), "mem").unwrap_err();
    assert!(err.to_string().contains("format_version 99"), "{err}");
    v.as_object_mut().unwrap().remove("format_version");
    assert!(State::from_json(&serde_json::to_vec(&v).unwrap(), "mem").is_err());
}

#[test]
fn recovery_keeps_leaders_and_gives_nodes_a_fresh_deadline() {
    let mut c = cluster(3);
    create(&mut c, "t", 3, 3);
    let state = c.state().clone();
    // The controller restarts at its own time 0; nodes reconnect with the same incarnation.
    let mut r = Cluster::recover(state.clone(), config(), 0);
    assert_eq!(r.alive_nodes(), vec![1, 2, 3]);
    for n in 1..=3 {
        r.register(n, "127.0.0.1", 9000 + n, "", "a", 100).unwrap();
    }
    assert_eq!(r.state(), &state, "no churn");
    // A node that never comes back dies one session timeout after it reconnected or after
    // the restart.
    let mut r = Cluster::recover(state.clone(), config(), 0);
    beat(&mut r, &[1, 2], 3000);
    assert!(r.tick(SESSION - 1).is_empty());
    assert_eq!(r.tick(SESSION), vec![3]);
}

#[test]
fn recovered_offline_partition_is_elected_when_its_node_confirms() {
    let mut c = cluster(2);
    create(&mut c, "t", 1, 1);
    let leader = part(&c, "t", 0).leader;
    let other = 3 - leader;
    beat(&mut c, &[other], 4000);
    c.tick(SESSION);
    assert_eq!(part(&c, "t", 0).leader, NO_LEADER);
    let mut r = Cluster::recover(c.state().clone(), config(), 0);
    assert_eq!(
        part(&r, "t", 0).leader,
        NO_LEADER,
        "not elected before it is heard from"
    );
    let e = epoch(&r, leader);
    r.heartbeat(leader, e, 10).unwrap();
    assert_eq!(part(&r, "t", 0).leader, leader);
}

#[test]
fn events_name_what_changed() {
    let mut c = cluster(2);
    create(&mut c, "t", 1, 2);
    assert_eq!(
        c.take_events(),
        vec![Event::TopicCreated {
            topic: "t".into(),
            partitions: 1,
            replication_factor: 2
        }]
    );
    let p = part(&c, "t", 0);
    let e = epoch(&c, p.leader);
    let other = p.replicas[1];
    c.alter_partition(
        p.leader,
        e,
        "t",
        0,
        p.leader_epoch,
        p.partition_epoch,
        &[p.leader],
    )
    .unwrap();
    assert_eq!(
        c.take_events(),
        vec![Event::IsrChanged {
            topic: "t".into(),
            partition: 0,
            isr: vec![p.leader],
            partition_epoch: 1
        }]
    );
    beat(&mut c, &[other], 4000);
    c.tick(SESSION);
    let events = c.take_events();
    assert!(events.contains(&Event::LeaderChanged {
        topic: "t".into(),
        partition: 0,
        leader: NO_LEADER,
        leader_epoch: 1,
        unclean: false
    }));
}

/// One step of a random history.
#[derive(Clone, Debug)]
enum Op {
    Heartbeat(i32),
    Restart(i32),
    Advance(u64),
    Shrink(usize, usize),
    Expand(usize, usize),
    Create(i32, i32),
    Unclean(usize, bool),
    /// Rebalance over the nodes whose bits are set (of 1..=4), at most this many moving.
    Rebalance(u8, usize),
    /// A moving partition's leader proposes the ISR plus its alive moving-in replicas.
    CatchUp(usize),
    /// A node starts (or repeats) a controlled shutdown.
    Shutdown(i32),
    /// A node's metadata stream closes.
    StreamLost(i32),
    /// The periodic preferred-leader rebalance.
    BalanceLeaders,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1..=4i32).prop_map(Op::Heartbeat),
        1 => (1..=4i32).prop_map(Op::Restart),
        3 => (0..4000u64).prop_map(Op::Advance),
        2 => (0..8usize, 0..4usize).prop_map(|(t, r)| Op::Shrink(t, r)),
        2 => (0..8usize, 0..4usize).prop_map(|(t, r)| Op::Expand(t, r)),
        1 => (1..4i32, 1..4i32).prop_map(|(p, r)| Op::Create(p, r)),
        1 => (0..8usize, any::<bool>()).prop_map(|(t, u)| Op::Unclean(t, u)),
        1 => (1..16u8, 1..4usize).prop_map(|(m, n)| Op::Rebalance(m, n)),
        2 => (0..8usize).prop_map(Op::CatchUp),
        1 => (1..=4i32).prop_map(Op::Shutdown),
        1 => (1..=4i32).prop_map(Op::StreamLost),
        1 => Just(Op::BalanceLeaders),
    ]
}

/// Invariants every state must keep, whatever happened.
fn check_invariants(c: &Cluster, epochs_before: &BTreeMap<(String, usize), (i32, i32)>) {
    for (name, t) in &c.state().topics {
        for (i, p) in t.partitions.iter().enumerate() {
            assert!(!p.isr.is_empty(), "{name}-{i}: empty ISR");
            let mut distinct = p.replicas.clone();
            distinct.sort_unstable();
            distinct.dedup();
            assert_eq!(distinct.len(), p.replicas.len(), "{name}-{i}: a node twice");
            if let Some(to) = &p.target_replicas {
                assert!(!to.is_empty(), "{name}-{i}: empty target");
                assert_eq!(&p.replicas[..to.len()], &to[..], "{name}-{i}: target first");
                assert!(
                    !to.iter().all(|r| p.isr.contains(r)) || !to.iter().any(|r| c.is_alive(*r)),
                    "{name}-{i}: a move that could complete is still in flight: {p:?} alive {:?}",
                    c.alive_nodes()
                );
            }
            assert!(
                p.isr.iter().all(|r| p.replicas.contains(r)),
                "{name}-{i}: ISR ⊄ replicas"
            );
            if p.leader != NO_LEADER {
                assert!(p.isr.contains(&p.leader), "{name}-{i}: leader not in ISR");
                assert!(c.is_alive(p.leader), "{name}-{i}: dead leader {}", p.leader);
            } else {
                // Offline only if nobody eligible is alive.
                let eligible = p
                    .replicas
                    .iter()
                    .any(|r| c.is_alive(*r) && (p.isr.contains(r) || t.unclean_election_enabled()));
                assert!(
                    !eligible,
                    "{name}-{i}: offline with an eligible replica alive"
                );
            }
            if let Some(&(le, pe)) = epochs_before.get(&(name.clone(), i)) {
                assert!(
                    p.leader_epoch >= le && p.partition_epoch >= pe,
                    "{name}-{i}: epochs went back"
                );
            }
        }
    }
}

fn epochs(c: &Cluster) -> BTreeMap<(String, usize), (i32, i32)> {
    let mut m = BTreeMap::new();
    for (name, t) in &c.state().topics {
        for (i, p) in t.partitions.iter().enumerate() {
            m.insert((name.clone(), i), (p.leader_epoch, p.partition_epoch));
        }
    }
    m
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn random_histories_keep_the_invariants(ops in proptest::collection::vec(op(), 1..80)) {
        let mut c = Cluster::new("p", config());
        for id in 1..=4 {
            c.register(id, "h", 9000 + id, "", "0", 0).unwrap();
        }
        let mut now = 0u64;
        let mut incarnation = 0u32;
        for op in ops {
            let before = epochs(&c);
            let version = c.version();
            match op {
                // A node a scale-down removed is gone until it registers again.
                Op::Heartbeat(n) | Op::Shutdown(n) | Op::StreamLost(n)
                    if !c.state().nodes.contains_key(&n) => {}
                Op::Heartbeat(n) => {
                    let e = epoch(&c, n);
                    c.heartbeat(n, e, now).unwrap();
                }
                Op::Shutdown(n) => {
                    let e = epoch(&c, n);
                    let progress = c.controlled_shutdown(n, e, now).unwrap();
                    for (name, i) in progress.still_leading {
                        prop_assert_eq!(c.partition(&name, i).unwrap().leader, n);
                    }
                    prop_assert!(!c.is_eligible(n));
                }
                Op::StreamLost(n) => {
                    let e = epoch(&c, n);
                    c.stream_lost(n, e, now);
                    prop_assert_eq!(c.version(), version);
                }
                Op::BalanceLeaders => {
                    c.balance_leaders();
                }
                Op::Restart(n) => {
                    incarnation += 1;
                    c.register(n, "h", 9000 + n, "", &incarnation.to_string(), now).unwrap();
                }
                Op::Advance(ms) => {
                    now += ms;
                    c.tick(now);
                }
                Op::Shrink(t, r) | Op::Expand(t, r) => {
                    let names: Vec<String> = c.state().topics.keys().cloned().collect();
                    if names.is_empty() { continue; }
                    let name = &names[t % names.len()];
                    let p = c.state().topics[name].partitions[0].clone();
                    if p.leader == NO_LEADER { continue; }
                    let mut isr = p.isr.clone();
                    let r = p.replicas[r % p.replicas.len()];
                    if matches!(op, Op::Shrink(..)) {
                        isr.retain(|&x| x != r || x == p.leader);
                    } else if !isr.contains(&r) {
                        isr.push(r);
                    }
                    let e = epoch(&c, p.leader);
                    let res = c.alter_partition(p.leader, e, name, 0, p.leader_epoch, p.partition_epoch, &isr);
                    if let Err(err) = res {
                        prop_assert_eq!(code(&err), codes::INELIGIBLE_REPLICA);
                        prop_assert_eq!(c.version(), version);
                    }
                }
                Op::Create(parts, rf) => {
                    let name = format!("t{}", c.state().topics.len());
                    let out = c.create_topics(&[topic(&name, parts, rf)], false);
                    if let Err(e) = &out[0].result {
                        prop_assert_eq!(code(e), codes::INVALID_REPLICATION_FACTOR);
                        prop_assert!(rf as usize > c.placement_nodes().len());
                    }
                }
                Op::Unclean(t, on) => {
                    let names: Vec<String> = c.state().topics.keys().cloned().collect();
                    if names.is_empty() { continue; }
                    let name = &names[t % names.len()];
                    let configs = BTreeMap::from([(UNCLEAN_LEADER_ELECTION.to_string(), on.to_string())]);
                    c.alter_topic_configs(name, configs, false).unwrap();
                }
                Op::Rebalance(mask, max) => {
                    let nodes: Vec<i32> = (1..=4).filter(|n| mask & (1 << (n - 1)) != 0).collect();
                    let moving_before = c.in_flight();
                    let out = c.rebalance(&nodes, max);
                    if out.waiting_for.is_empty() {
                        prop_assert!(out.in_flight <= max.max(moving_before));
                    } else {
                        prop_assert!(out.started.is_empty());
                    }
                    if out.drained {
                        for t in c.state().topics.values() {
                            for p in &t.partitions {
                                prop_assert!(p.replicas.iter().all(|r| nodes.contains(r)));
                            }
                        }
                    }
                }
                Op::CatchUp(k) => {
                    let moving: Vec<(String, usize, PartitionRecord)> = c
                        .state()
                        .topics
                        .iter()
                        .flat_map(|(n, t)| t.partitions.iter().enumerate().map(move |(i, p)| (n.clone(), i, p.clone())))
                        .filter(|(_, _, p)| p.target_replicas.is_some() && p.leader != NO_LEADER)
                        .collect();
                    if moving.is_empty() { continue; }
                    let (name, i, p) = &moving[k % moving.len()];
                    let to = p.target_replicas.clone().unwrap_or_default();
                    let mut isr = p.isr.clone();
                    isr.extend(to.iter().copied().filter(|r| !p.isr.contains(r) && c.is_alive(*r)));
                    isr.retain(|r| p.isr.contains(r) || c.is_eligible(*r));
                    let e = epoch(&c, p.leader);
                    c.alter_partition(p.leader, e, name, *i as i32, p.leader_epoch, p.partition_epoch, &isr).unwrap();
                }
            }
            prop_assert!(c.version() >= version && c.version() <= version + 1, "at most one bump per call");
            check_invariants(&c, &before);
        }
    }
}

#[test]
fn a_restored_topic_keeps_its_id_and_continues_its_epochs() {
    let mut c = cluster(2);
    let id = uuid::Uuid::from_u128(0x5157_4a7a);
    let restored = NewTopic {
        topic_id: Some(id),
        leader_epochs: vec![7, 0],
        ..topic("restored", 2, 2)
    };
    let out = c.create_topics(&[restored], false);
    let t = out[0].result.as_ref().unwrap();
    assert_eq!(t.topic_id, id);
    let epochs: Vec<i32> = t.partitions.iter().map(|p| p.leader_epoch).collect();
    assert_eq!(epochs, vec![7, 0]);
    assert_eq!(c.state().topics["restored"].topic_id, id);
    // An id in use, the nil id, and epochs that do not match the partitions are refused.
    let refused = [
        NewTopic {
            topic_id: Some(id),
            ..topic("other", 1, 1)
        },
        NewTopic {
            topic_id: Some(uuid::Uuid::nil()),
            ..topic("nil", 1, 1)
        },
        NewTopic {
            leader_epochs: vec![1, 2],
            ..topic("short", 1, 1)
        },
        NewTopic {
            leader_epochs: vec![-3],
            ..topic("negative", 1, 1)
        },
    ];
    for t in refused {
        let name = t.name.clone();
        let out = c.create_topics(&[t], false);
        let err = out[0].result.as_ref().unwrap_err();
        assert_eq!(code(err), codes::INVALID_REQUEST, "{name}: {err}");
    }
}

#[test]
fn a_change_copies_only_the_topics_it_touches() {
    // Node 3 replicates only "touched": its death changes that topic alone.
    let mut c = cluster(3);
    let assign = |replicas: Vec<i32>| NewTopic {
        assignments: vec![replicas],
        partitions: -1,
        replication_factor: -1,
        ..topic("", 1, 1)
    };
    for (name, replicas) in [("touched", vec![1, 3]), ("kept", vec![1, 2])] {
        let out = c.create_topics(
            &[NewTopic {
                name: name.into(),
                ..assign(replicas)
            }],
            false,
        );
        out.into_iter().for_each(|o| {
            o.result.unwrap();
        });
    }
    let before = c.state().clone();
    let image = c.image();
    beat(&mut c, &[1, 2], 4000);
    assert_eq!(c.tick(SESSION), vec![3]);
    let after = c.state();
    assert!(!Arc::ptr_eq(
        &before.topics["touched"],
        &after.topics["touched"]
    ));
    assert!(Arc::ptr_eq(&before.topics["kept"], &after.topics["kept"]));
    // A published image shares the topics of the state it was made from.
    assert!(Arc::ptr_eq(&image.topics["kept"], &after.topics["kept"]));
    let delta = Delta::between(&before, after);
    assert!(delta
        .changes
        .iter()
        .all(|ch| !matches!(ch, Change::Partition { topic, .. } if topic == "kept")));
}
