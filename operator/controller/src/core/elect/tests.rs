//! ElectLeaders: preferred and unclean elections, errors as Kafka reports them.

use super::super::{Cluster, Config, Event, NewTopic, PartitionRecord, NO_LEADER};
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
    c.take_events();
}

fn part(c: &Cluster, name: &str, p: i32) -> PartitionRecord {
    c.partition(name, p).unwrap().clone()
}

fn beat(c: &mut Cluster, nodes: &[i32], now: u64) {
    for &n in nodes {
        let e = c.state().nodes[&n].broker_epoch;
        c.heartbeat(n, e, now).unwrap();
    }
}

/// Kills `node` (the others heartbeat) and then brings it back and into every ISR, so that
/// partitions it preferred are led by someone else while it is eligible again.
fn bounce(c: &mut Cluster, node: i32, others: &[i32]) {
    beat(c, others, SESSION - 1);
    c.tick(SESSION);
    assert!(!c.is_alive(node));
    beat(c, &[node], SESSION + 1);
    let parts: Vec<(String, i32, PartitionRecord)> = c
        .state()
        .topics
        .iter()
        .flat_map(|(n, t)| {
            t.partitions
                .iter()
                .enumerate()
                .map(move |(i, p)| (n.clone(), i as i32, p.clone()))
        })
        .collect();
    for (name, i, p) in parts {
        if p.isr.contains(&node) || p.leader == NO_LEADER {
            continue;
        }
        let mut isr = p.isr.clone();
        isr.push(node);
        let e = c.state().nodes[&p.leader].broker_epoch;
        c.alter_partition(
            p.leader,
            e,
            &name,
            i,
            p.leader_epoch,
            p.partition_epoch,
            &isr,
        )
        .unwrap();
    }
    c.take_events();
}

fn codes_of(out: &[PartitionOutcome]) -> Vec<(String, i32, i32)> {
    out.iter()
        .map(|o| {
            let code = match &o.result {
                Ok(()) => codes::NONE,
                Err(e) => kafka_code(e),
            };
            (o.topic.clone(), o.partition, code)
        })
        .collect()
}

#[test]
fn preferred_election_moves_leadership_back_and_bumps_the_epochs() {
    let mut c = cluster(3);
    create(&mut c, "t", 3, 3);
    let p = (0..3).find(|&p| part(&c, "t", p).replicas[0] == 1).unwrap();
    bounce(&mut c, 1, &[2, 3]);
    let before = part(&c, "t", p);
    assert_ne!(before.leader, 1, "node 1's death moved its leadership");
    assert!(before.isr.contains(&1));
    let v = c.version();

    let out = c.elect_leaders(ElectionType::Preferred, Some(&[("t".into(), p)]));
    assert_eq!(codes_of(&out), vec![("t".into(), p, codes::NONE)]);
    let after = part(&c, "t", p);
    assert_eq!(after.leader, 1);
    assert_eq!(after.leader_epoch, before.leader_epoch + 1);
    assert_eq!(after.partition_epoch, before.partition_epoch + 1);
    assert_eq!(after.isr, before.isr);
    assert_eq!(c.version(), v + 1);
    assert_eq!(
        c.take_events(),
        vec![Event::LeaderChanged {
            topic: "t".into(),
            partition: p,
            leader: 1,
            leader_epoch: after.leader_epoch,
            unclean: false,
        }]
    );

    // Again: nothing to do, nothing changes.
    let out = c.elect_leaders(ElectionType::Preferred, Some(&[("t".into(), p)]));
    assert_eq!(
        codes_of(&out),
        vec![("t".into(), p, codes::ELECTION_NOT_NEEDED)]
    );
    assert_eq!(c.version(), v + 1);
}

#[test]
fn preferred_election_refuses_a_dead_or_lagging_preferred_replica() {
    let mut c = cluster(3);
    create(&mut c, "t", 3, 3);
    let p = (0..3).find(|&p| part(&c, "t", p).replicas[0] == 1).unwrap();
    // Node 1 dies: not alive.
    beat(&mut c, &[2, 3], SESSION - 1);
    c.tick(SESSION);
    let v = c.version();
    let out = c.elect_leaders(ElectionType::Preferred, Some(&[("t".into(), p)]));
    assert_eq!(
        codes_of(&out),
        vec![("t".into(), p, codes::PREFERRED_LEADER_NOT_AVAILABLE)]
    );
    let msg = out[0].result.as_ref().unwrap_err().to_string();
    assert!(msg.contains("not alive"), "{msg}");
    // Back, but not yet in the ISR: still not eligible.
    beat(&mut c, &[1], SESSION + 1);
    let v2 = c.version();
    assert!(!part(&c, "t", p).isr.contains(&1));
    let out = c.elect_leaders(ElectionType::Preferred, Some(&[("t".into(), p)]));
    assert_eq!(
        codes_of(&out),
        vec![("t".into(), p, codes::PREFERRED_LEADER_NOT_AVAILABLE)]
    );
    assert!(out[0]
        .result
        .as_ref()
        .unwrap_err()
        .to_string()
        .contains("ISR"));
    assert!(v2 > v);
    assert_eq!(c.version(), v2, "refusals change nothing");
}

#[test]
fn unknown_partitions_are_reported_and_do_not_stop_the_others() {
    let mut c = cluster(3);
    create(&mut c, "t", 1, 3);
    let out = c.elect_leaders(
        ElectionType::Preferred,
        Some(&[
            ("nope".into(), 0),
            ("t".into(), 5),
            ("t".into(), -1),
            ("t".into(), 0),
        ]),
    );
    assert_eq!(
        codes_of(&out),
        vec![
            ("nope".into(), 0, codes::UNKNOWN_TOPIC_OR_PARTITION),
            ("t".into(), 5, codes::UNKNOWN_TOPIC_OR_PARTITION),
            ("t".into(), -1, codes::UNKNOWN_TOPIC_OR_PARTITION),
            ("t".into(), 0, codes::ELECTION_NOT_NEEDED),
        ]
    );
}

#[test]
fn all_partitions_reports_only_partitions_that_needed_an_election() {
    let mut c = cluster(3);
    create(&mut c, "a", 3, 3);
    create(&mut c, "b", 2, 3);
    let none = c.elect_leaders(ElectionType::Preferred, None);
    assert!(none.is_empty(), "{none:?}");
    bounce(&mut c, 2, &[1, 3]);
    let moved: Vec<(String, i32)> = ["a", "b"]
        .iter()
        .flat_map(|t| {
            let c = &c;
            (0..c.state().topics[*t].partitions.len() as i32)
                .filter(move |&p| part(c, t, p).replicas[0] == 2)
                .map(move |p| (t.to_string(), p))
        })
        .collect();
    assert!(!moved.is_empty());
    let out = c.elect_leaders(ElectionType::Preferred, None);
    let want: Vec<(String, i32, i32)> = moved
        .iter()
        .map(|(t, p)| (t.clone(), *p, codes::NONE))
        .collect();
    assert_eq!(codes_of(&out), want);
    for (t, p) in &moved {
        assert_eq!(part(&c, t, *p).leader, 2);
    }
}

#[test]
fn unclean_election_only_for_leaderless_partitions() {
    let mut c = cluster(3);
    create(&mut c, "t", 1, 2);
    let p0 = part(&c, "t", 0);
    let (leader, follower) = (p0.replicas[0], p0.replicas[1]);
    let out = c.elect_leaders(ElectionType::Unclean, Some(&[("t".into(), 0)]));
    assert_eq!(
        codes_of(&out),
        vec![("t".into(), 0, codes::ELECTION_NOT_NEEDED)]
    );

    // The follower falls out of the ISR, then the leader dies: offline, since the topic
    // does not allow unclean elections by itself.
    let e = c.state().nodes[&leader].broker_epoch;
    c.alter_partition(
        leader,
        e,
        "t",
        0,
        p0.leader_epoch,
        p0.partition_epoch,
        &[leader],
    )
    .unwrap();
    let third = (1..=3).find(|n| *n != leader && *n != follower).unwrap();
    beat(&mut c, &[follower, third], SESSION - 1);
    c.tick(SESSION);
    let offline = part(&c, "t", 0);
    assert_eq!(offline.leader, NO_LEADER);
    assert_eq!(offline.isr, vec![leader]);
    c.take_events();

    let out = c.elect_leaders(ElectionType::Unclean, Some(&[("t".into(), 0)]));
    assert_eq!(codes_of(&out), vec![("t".into(), 0, codes::NONE)]);
    let after = part(&c, "t", 0);
    assert_eq!(after.leader, follower);
    assert_eq!(after.isr, vec![follower]);
    assert_eq!(after.leader_epoch, offline.leader_epoch + 1);
    assert_eq!(after.partition_epoch, offline.partition_epoch + 1);
    let events = c.take_events();
    assert!(events.contains(&Event::LeaderChanged {
        topic: "t".into(),
        partition: 0,
        leader: follower,
        leader_epoch: after.leader_epoch,
        unclean: true,
    }));
}

#[test]
fn unclean_election_without_any_alive_replica() {
    let mut c = cluster(2);
    create(&mut c, "t", 1, 1);
    let only = part(&c, "t", 0).replicas[0];
    let other = 3 - only;
    beat(&mut c, &[other], SESSION - 1);
    c.tick(SESSION);
    assert_eq!(part(&c, "t", 0).leader, NO_LEADER);
    let v = c.version();
    let out = c.elect_leaders(ElectionType::Unclean, None);
    assert_eq!(
        codes_of(&out),
        vec![("t".into(), 0, codes::ELIGIBLE_LEADERS_NOT_AVAILABLE)]
    );
    let out = c.elect_leaders(ElectionType::Preferred, None);
    assert_eq!(
        codes_of(&out),
        vec![("t".into(), 0, codes::PREFERRED_LEADER_NOT_AVAILABLE)]
    );
    assert_eq!(c.version(), v);
}

#[test]
fn election_types_from_kafka() {
    assert_eq!(ElectionType::from_kafka(0), Some(ElectionType::Preferred));
    assert_eq!(ElectionType::from_kafka(1), Some(ElectionType::Unclean));
    assert_eq!(ElectionType::from_kafka(2), None);
}
