use super::*;
use proptest::prelude::*;
use strata_security::acl::{Operation, PatternType, Permission, ResourceType};
use strata_security::quota::EntityName;

fn partition(seed: u8) -> PartitionRecord {
    let n = i32::from(seed % 4) + 1;
    PartitionRecord {
        replicas: vec![n, n % 4 + 1, (n + 1) % 4 + 1],
        leader: n,
        leader_epoch: i32::from(seed),
        isr: vec![n],
        partition_epoch: i32::from(seed) * 2,
        target_replicas: seed.is_multiple_of(5).then(|| vec![n]),
        original_replicas: None,
    }
}

fn acl(name: u8, allow: bool) -> AclBinding {
    AclBinding {
        resource_type: ResourceType::Topic,
        resource_name: format!("t{name}"),
        pattern_type: PatternType::Literal,
        principal: "User:alice".into(),
        host: "*".into(),
        operation: Operation::Read,
        permission: if allow {
            Permission::Allow
        } else {
            Permission::Deny
        },
    }
}

fn scram(seed: u8) -> BTreeMap<ScramMechanism, ScramCredential> {
    BTreeMap::from([(
        ScramMechanism::Sha256,
        ScramCredential {
            mechanism: ScramMechanism::Sha256,
            salt: vec![seed; 4],
            iterations: 4096,
            stored_key: vec![seed; 8],
            server_key: vec![seed ^ 1; 8],
        },
    )])
}

/// A state whose every part varies with the generated numbers: topics (the id flips with
/// `id_bit`, so the same name can be a new topic), partitions, nodes, counters, placement
/// sets, SCRAM users, ACLs, quotas.
fn state(
    version: u64,
    topics: Vec<(u8, bool, Vec<u8>, u8)>,
    nodes: Vec<(u8, u8)>,
    users: Vec<(u8, u8)>,
    acls: Vec<(u8, bool)>,
    quotas: Vec<(u8, u8)>,
    counters: (i64, i64),
) -> State {
    let mut s = State::new("cluster");
    s.version = version;
    s.next_broker_epoch = counters.0;
    s.producer_id_block_end = counters.1;
    for (name, id_bit, parts, config) in topics {
        s.topics.insert(
            format!("topic-{}", name % 6),
            std::sync::Arc::new(TopicRecord {
                topic_id: uuid::Uuid::from_u128(u128::from(name % 6) * 2 + u128::from(id_bit)),
                configs: BTreeMap::from([("retention.ms".into(), config.to_string())]),
                internal: config.is_multiple_of(7),
                partitions: parts.into_iter().map(partition).collect(),
            }),
        );
    }
    for (id, host) in nodes {
        s.nodes.insert(
            i32::from(id % 5),
            NodeRecord {
                host: format!("h{host}"),
                port: 9092,
                rack: String::new(),
                broker_epoch: i64::from(host),
                incarnation_id: "x".into(),
                listeners: BTreeMap::new(),
            },
        );
        if host.is_multiple_of(3) {
            s.excluded_nodes.insert(i32::from(id % 5));
        }
        if host.is_multiple_of(2) {
            s.balanced_for.insert(i32::from(id % 5));
        }
    }
    for (user, seed) in users {
        s.scram_credentials
            .insert(format!("u{}", user % 4), scram(seed));
    }
    s.acls
        .extend(acls.into_iter().map(|(n, allow)| acl(n % 5, allow)));
    for (user, value) in quotas {
        s.client_quotas.insert(
            QuotaEntity {
                user: Some(EntityName::Named(format!("u{}", user % 4))),
                client_id: None,
            },
            BTreeMap::from([(
                QuotaKey::ProducerByteRate,
                QuotaValue(f64::from(value) * 1024.0),
            )]),
        );
    }
    s
}

fn any_state() -> impl Strategy<Value = State> {
    (
        1u64..1000,
        proptest::collection::vec(
            (
                any::<u8>(),
                any::<bool>(),
                proptest::collection::vec(any::<u8>(), 1..6),
                any::<u8>(),
            ),
            0..5,
        ),
        proptest::collection::vec((any::<u8>(), any::<u8>()), 0..4),
        proptest::collection::vec((any::<u8>(), any::<u8>()), 0..3),
        proptest::collection::vec((any::<u8>(), any::<bool>()), 0..4),
        proptest::collection::vec((any::<u8>(), 1u8..50), 0..3),
        (0i64..5, 0i64..5000),
    )
        .prop_map(|(v, t, n, u, a, q, c)| state(v, t, n, u, a, q, c))
}

proptest! {
    #[test]
    fn replaying_the_difference_gives_the_later_state(a in any_state(), b in any_state()) {
        let delta = Delta::between(&a, &b);
        let mut replayed = a.clone();
        delta.apply(&mut replayed, "test").unwrap();
        prop_assert_eq!(&replayed, &b);
        // What the stores write parses back to the same delta.
        let parsed = Delta::from_json(&delta.to_json().unwrap(), "test").unwrap();
        prop_assert_eq!(parsed, delta);
    }

    #[test]
    fn a_chain_of_differences_replays_to_the_last_state(states in proptest::collection::vec(any_state(), 2..6)) {
        let mut states = states;
        for (i, s) in states.iter_mut().enumerate() {
            s.version = i as u64 + 1;
        }
        let mut replayed = states[0].clone();
        for pair in states.windows(2) {
            Delta::between(&pair[0], &pair[1]).apply(&mut replayed, "test").unwrap();
        }
        prop_assert_eq!(&replayed, states.last().unwrap());
    }
}

#[test]
fn an_isr_change_is_one_partition_record() {
    let mut a = state(
        5,
        vec![(1, false, (0..200).collect(), 1)],
        vec![(1, 1)],
        vec![],
        vec![],
        vec![],
        (1, 0),
    );
    a.topics.insert("other".into(), a.topics["topic-1"].clone());
    let mut b = a.clone();
    b.version = 6;
    std::sync::Arc::make_mut(b.topics.get_mut("topic-1").unwrap()).partitions[17].isr = vec![1, 2];
    let delta = Delta::between(&a, &b);
    assert_eq!(delta.changes.len(), 1, "{delta:?}");
    assert!(matches!(
        &delta.changes[0],
        Change::Partition { topic, index: 17, .. } if topic == "topic-1"
    ));
    assert!(delta.to_json().unwrap().len() < 300);
    assert!(a.to_json().unwrap().len() / delta.to_json().unwrap().len() > 100);
}

#[test]
fn a_delta_from_another_version_is_refused() {
    let a = State::new("c");
    let mut b = a.clone();
    b.version = 2;
    b.next_broker_epoch = 9;
    let delta = Delta::between(&a, &b);
    let mut other = a.clone();
    other.version = 3;
    let err = delta.apply(&mut other, "log").unwrap_err();
    assert!(
        err.to_string().contains("from version 1 follows version 3"),
        "{err}"
    );
}

#[test]
fn a_partition_without_its_topic_is_refused() {
    let delta = Delta {
        from: 1,
        to: 2,
        changes: vec![Change::Partition {
            topic: "ghost".into(),
            index: 0,
            record: partition(1),
        }],
    };
    let err = delta.apply(&mut State::new("c"), "log").unwrap_err();
    assert!(matches!(err, Error::BrokenLog { .. }), "{err}");

    // A topic grown without the new partitions' records is refused too.
    let delta = Delta {
        from: 1,
        to: 2,
        changes: vec![Change::Topic {
            name: "t".into(),
            meta: Some(TopicMeta {
                topic_id: uuid::Uuid::nil(),
                configs: BTreeMap::new(),
                internal: false,
                partitions: 2,
            }),
        }],
    };
    let err = delta.apply(&mut State::new("c"), "log").unwrap_err();
    assert!(
        err.to_string().contains("t-0 created without its record"),
        "{err}"
    );
}
