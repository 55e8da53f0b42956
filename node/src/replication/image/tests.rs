use super::*;
use crate::metadata::{Assignment, ClusterView, MetadataImage};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use strata_controller::core::{Image, ImageNode, PartitionRecord, TopicRecord};
use strata_controller::service::{image_delta_to_proto, image_to_proto};

fn partition(leader: i32, isr: Vec<i32>) -> PartitionRecord {
    PartitionRecord {
        replicas: vec![1, 2, 3],
        leader,
        leader_epoch: leader,
        isr,
        partition_epoch: 1,
        target_replicas: None,
        original_replicas: None,
    }
}

fn topic(id: u128, partitions: usize) -> Arc<TopicRecord> {
    Arc::new(TopicRecord {
        topic_id: uuid::Uuid::from_u128(id),
        configs: BTreeMap::new(),
        internal: false,
        partitions: (0..partitions)
            .map(|_| partition(1, vec![1, 2, 3]))
            .collect(),
    })
}

fn image(version: u64, topics: Vec<(&str, Arc<TopicRecord>)>) -> Image {
    Image {
        version,
        cluster_id: "c".into(),
        controller_id: 0,
        nodes: BTreeMap::from([(
            1,
            ImageNode {
                host: "h".into(),
                port: 9092,
                rack: String::new(),
                alive: version.is_multiple_of(2),
                listeners: BTreeMap::new(),
            },
        )]),
        topics: topics
            .into_iter()
            .map(|(n, t)| (n.to_string(), t))
            .collect(),
        scram_credentials: BTreeMap::new(),
        acls: BTreeSet::new(),
        client_quotas: Default::default(),
    }
}

fn whole(img: &Image) -> WholeImage {
    WholeImage::merge(None, image_to_proto(img)).unwrap()
}

#[test]
fn increments_merge_to_the_whole_image() {
    let a = image(
        1,
        vec![
            ("big", topic(1, 500)),
            ("gone", topic(2, 3)),
            ("same", topic(3, 2)),
        ],
    );
    let mut b = a.clone();
    b.version = 2;
    Arc::make_mut(b.topics.get_mut("big").unwrap()).partitions[42] = partition(2, vec![2, 3]);
    b.topics.remove("gone");
    b.topics.insert("new".into(), topic(4, 2));
    let mut c = b.clone();
    c.version = 3;
    // Recreated under the same name: a new id and size.
    c.topics.insert("same".into(), topic(5, 4));
    Arc::make_mut(c.topics.get_mut("big").unwrap())
        .configs
        .insert("retention.ms".into(), "1".into());

    let ab = image_delta_to_proto(&a, &b);
    // One partition of the big topic, the new topic whole, the deleted one by name.
    let big = ab.topics.iter().find(|t| t.name == "big").unwrap();
    assert!(big.partial && big.partitions.len() == 1 && big.partitions[0].partition == 42);
    assert_eq!(ab.removed_topics, vec!["gone".to_string()]);
    assert_eq!(ab.topics.len(), 2);
    let sent: usize = ab.topics.iter().map(|t| t.partitions.len()).sum();
    assert_eq!(sent, 3, "the changed partition and the new topic's two");

    let merged = WholeImage::merge(Some(whole(&a)), ab).unwrap();
    assert_eq!(merged, whole(&b));
    let merged = WholeImage::merge(Some(merged), image_delta_to_proto(&b, &c)).unwrap();
    assert_eq!(merged, whole(&c));
}

#[test]
fn an_increment_on_another_base_is_refused() {
    let a = image(1, vec![("t", topic(1, 2))]);
    let mut b = a.clone();
    b.version = 2;
    Arc::make_mut(b.topics.get_mut("t").unwrap()).partitions[1] = partition(3, vec![3]);
    let mut c = b.clone();
    c.version = 3;
    let err = WholeImage::merge(Some(whole(&a)), image_delta_to_proto(&b, &c)).unwrap_err();
    assert!(err.contains("from version 2 follows version 1"), "{err}");
    assert!(WholeImage::merge(None, image_delta_to_proto(&a, &b)).is_err());
    // A partial topic the base holds under another id.
    let other = image(1, vec![("t", topic(9, 2))]);
    let err = WholeImage::merge(Some(whole(&other)), image_delta_to_proto(&a, &b)).unwrap_err();
    assert!(err.contains("partial topic t"), "{err}");
}

/// What decoding gives, in comparable form: topics, and every assignment by partition.
fn decoded(d: &(MetadataImage, ClusterView)) -> (MetadataImage, Vec<(String, i32, Assignment)>) {
    let assignments =
        d.1.assignments
            .iter()
            .flat_map(|(t, ps)| ps.iter().map(move |(p, a)| (t.clone(), *p, a.clone())))
            .collect();
    (d.0.clone(), assignments)
}

#[test]
fn decoding_only_the_changed_topics_equals_decoding_everything() {
    let a = image(
        1,
        vec![
            ("big", topic(1, 50)),
            ("gone", topic(2, 3)),
            ("same", topic(3, 2)),
        ],
    );
    let mut b = a.clone();
    b.version = 2;
    Arc::make_mut(b.topics.get_mut("big").unwrap()).partitions[7] = partition(2, vec![2, 3]);
    b.topics.remove("gone");
    b.topics.insert("new".into(), topic(4, 2));
    b.topics.insert("same".into(), topic(5, 4));
    let before = whole(&a).decode(None);
    let delta = image_delta_to_proto(&a, &b);
    let changed: BTreeSet<String> = delta
        .topics
        .iter()
        .map(|t| t.name.clone())
        .chain(delta.removed_topics.iter().cloned())
        .collect();
    assert_eq!(changed.len(), 4);
    let merged = WholeImage::merge(Some(whole(&a)), delta).unwrap();
    let step = merged.decode(Some((&before, &changed)));
    assert_eq!(decoded(&step), decoded(&whole(&b).decode(None)));
    assert_eq!(step.1.assignment("big", 7).unwrap().leader, 2);
    assert!(step.1.assignment("gone", 0).is_none());
    // Untouched topics are shared with the image before, not copied.
    let unchanged = BTreeSet::from(["big".to_string()]);
    let again = merged.decode(Some((&step, &unchanged)));
    assert!(Arc::ptr_eq(
        &again.1.assignments["same"],
        &step.1.assignments["same"]
    ));
    assert!(!Arc::ptr_eq(
        &again.1.assignments["big"],
        &step.1.assignments["big"]
    ));
}
