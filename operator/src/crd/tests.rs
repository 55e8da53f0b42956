//! Defaults, serde round trips, the shape of the generated CRDs, and the CEL rules evaluated
//! client-side with kube-cel (tests/operator checks the same rules against a real API server).

use std::collections::BTreeMap;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::core::cel::Validator;
use kube::CustomResourceExt;
use serde_json::{json, Value};

use super::cluster::{ClusterSpec, DEFAULT_NODES, DEFAULT_PORT, DEFAULT_STORAGE_SIZE};
use super::topic::{PartitionStatus, TopicStatus};
use super::*;

fn schema(crd: &CustomResourceDefinition) -> Value {
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("a derived CRD has an openAPIV3Schema");
    serde_json::to_value(schema).expect("schema serializes")
}

/// Messages of the CEL rules `object` breaks (as an update of `old` when given).
fn refusals(crd: &CustomResourceDefinition, object: &Value, old: Option<&Value>) -> Vec<String> {
    match Validator::new().validate(&schema(crd), object, old) {
        Ok(()) => Vec::new(),
        Err(errors) => errors.iter().map(|e| e.message.clone()).collect(),
    }
}

fn topic(spec: Value) -> Value {
    json!({
        "apiVersion": "strata.dev/v1alpha1",
        "kind": "Topic",
        "metadata": {"name": "orders", "namespace": "default"},
        "spec": spec,
    })
}

fn cluster(spec: Value) -> Value {
    json!({
        "apiVersion": "strata.dev/v1alpha1",
        "kind": "Cluster",
        "metadata": {"name": "main", "namespace": "default"},
        "spec": spec,
    })
}

fn base_topic() -> Value {
    topic(json!({"partitions": 3, "clusterRef": {"name": "main"}}))
}

#[test]
fn topic_omitted_fields_take_their_defaults() {
    let t: Topic = serde_json::from_value(base_topic()).unwrap();
    assert_eq!(t.spec, TopicSpec::new("main", 3));
    assert_eq!(t.spec.deletion_policy, DeletionPolicy::Delete);
    assert_eq!(t.spec.replication_factor, None);
    assert!(t.spec.config.is_empty());
    assert_eq!(t.kafka_name(), Some("orders"));
    assert!(t.status.is_none());
}

#[test]
fn topic_round_trips_through_yaml_and_json() {
    let t: Topic = serde_json::from_value(json!({
        "apiVersion": "strata.dev/v1alpha1",
        "kind": "Topic",
        "metadata": {"name": "orders-v2", "namespace": "shop"},
        "spec": {
            "partitions": 12,
            "replicationFactor": 3,
            "clusterRef": {"name": "main"},
            "deletionPolicy": "Retain",
            "topicName": "Orders_V2",
            "config": {
                "cleanup.policy": "delete",
                "remote.storage.enable": "true",
                "retention.ms": "604800000",
                "local.retention.ms": "3600000",
            },
        },
        "status": {
            "observedGeneration": 4,
            "conditions": [{
                "type": "Ready",
                "status": "True",
                "reason": "Reconciled",
                "message": "12 partitions, all in sync",
                "lastTransitionTime": "2026-01-02T03:04:05Z",
            }],
            "partitions": 12,
            "replicationFactor": 3,
            "topicId": "5b1c2f8e-8a52-4f0c-9d56-0a3c8a0b7e11",
            "partitionStatus": [
                {"partition": 0, "leader": 1, "leaderEpoch": 2, "replicas": [1, 2, 3], "isr": [1, 2]},
            ],
            "underReplicatedPartitions": 1,
            "effectiveConfig": {"retention.ms": "604800000"},
            "localBytes": 1048576,
            "remoteBytes": 73400320,
        },
    }))
    .unwrap();
    assert_eq!(t.kafka_name(), Some("Orders_V2"));
    assert_eq!(t.spec.deletion_policy, DeletionPolicy::Retain);
    assert_eq!(t.spec.config["local.retention.ms"], "3600000");
    let status = t.status.as_ref().unwrap();
    assert!(condition_is_true(&status.conditions, CONDITION_READY));
    assert!(!condition_is_true(&status.conditions, CONDITION_DEGRADED));
    assert_eq!(
        status.partition_status,
        vec![PartitionStatus {
            partition: 0,
            leader: 1,
            leader_epoch: 2,
            replicas: vec![1, 2, 3],
            isr: vec![1, 2],
        }]
    );
    let again: Topic = serde_json::from_value(serde_json::to_value(&t).unwrap()).unwrap();
    assert_eq!(again.spec, t.spec);
    assert_eq!(again.status, t.status);
}

#[test]
fn empty_status_serializes_as_an_empty_object() {
    assert_eq!(
        serde_json::to_value(TopicStatus::default()).unwrap(),
        json!({})
    );
    assert_eq!(
        serde_json::to_value(ClusterStatus::default()).unwrap(),
        json!({})
    );
}

#[test]
fn cluster_omitted_fields_take_their_defaults() {
    let c: Cluster = serde_json::from_value(cluster(json!({}))).unwrap();
    assert_eq!(c.spec, ClusterSpec::default());
    assert_eq!(c.spec.nodes, DEFAULT_NODES);
    assert_eq!(c.spec.listener.port, DEFAULT_PORT);
    assert_eq!(
        c.spec.storage.size,
        Quantity(DEFAULT_STORAGE_SIZE.to_owned())
    );
    assert!(c.spec.object_store.is_none());

    let c: Cluster = serde_json::from_value(cluster(json!({
        "objectStore": {"bucket": "b", "credentialsSecretRef": {"name": "s3"}}
    })))
    .unwrap();
    let creds = c.spec.object_store.unwrap().credentials_secret_ref.unwrap();
    assert_eq!(creds.access_key_id_key, "AWS_ACCESS_KEY_ID");
    assert_eq!(creds.secret_access_key_key, "AWS_SECRET_ACCESS_KEY");
}

#[test]
fn cluster_round_trips() {
    let c: Cluster = serde_json::from_value(json!({
        "apiVersion": "strata.dev/v1alpha1",
        "kind": "Cluster",
        "metadata": {"name": "main", "namespace": "shop"},
        "spec": {
            "nodes": 5,
            "image": "strata/node:0.1.0",
            "resources": {"requests": {"cpu": "2", "memory": "4Gi"}},
            "storage": {"size": "100Gi", "storageClassName": "fast"},
            "objectStore": {
                "bucket": "strata",
                "prefix": "prod",
                "endpoint": "http://minio:9000",
                "region": "eu-west-1",
                "credentialsSecretRef": {"name": "s3", "accessKeyIdKey": "id", "secretAccessKeyKey": "key"},
            },
            "topicDefaults": {"retention.ms": "-1", "local.retention.ms": "86400000"},
            "listener": {
                "port": 19092,
                "advertisedHostTemplate": "{pod}.kafka.example.com",
                "advertisedPort": 31092,
            },
        },
        "status": {
            "observedGeneration": 2,
            "readyNodes": 5,
            "bootstrapAddress": "main-bootstrap.shop.svc:19092",
            "controllerLeader": "strata-operator-0",
        },
    }))
    .unwrap();
    assert_eq!(c.spec.nodes, 5);
    assert_eq!(c.spec.storage.storage_class_name.as_deref(), Some("fast"));
    let again: Cluster = serde_json::from_value(serde_json::to_value(&c).unwrap()).unwrap();
    assert_eq!(again.spec, c.spec);
    assert_eq!(again.status, c.status);
}

/// The x-kubernetes-validations rules at `path` (property names from the root schema).
fn rules_at(crd: &CustomResourceDefinition, path: &[&str]) -> Vec<(String, String)> {
    let mut node = schema(crd);
    for p in path {
        node = node["properties"][p].clone();
    }
    node["x-kubernetes-validations"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|r| {
            (
                r["rule"].as_str().unwrap_or_default().to_owned(),
                r["message"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[test]
fn topic_schema_carries_the_admission_rules() {
    let crd = Topic::crd();
    assert_eq!(
        rules_at(&crd, &["spec", "partitions"]),
        [(
            "self >= oldSelf".into(),
            "partitions cannot be decreased".into()
        )]
    );
    assert_eq!(
        rules_at(&crd, &["spec", "clusterRef"]),
        [("self == oldSelf".into(), "clusterRef is immutable".into())]
    );
    let config = rules_at(&crd, &["spec", "config"]);
    assert_eq!(config.len(), 4);
    assert!(config
        .iter()
        .any(|(_, m)| m.starts_with("local.retention.bytes cannot exceed retention.bytes")));
    assert!(config
        .iter()
        .any(|(_, m)| m.starts_with("local.retention.ms cannot exceed retention.ms")));
    let root = rules_at(&crd, &[]);
    assert!(root
        .iter()
        .any(|(r, _)| r.contains("oldSelf.spec.topicName")));

    let s = schema(&crd);
    let spec = &s["properties"]["spec"];
    assert_eq!(spec["required"], json!(["clusterRef", "partitions"]));
    assert_eq!(spec["properties"]["partitions"]["minimum"], json!(1.0));
    assert_eq!(spec["properties"]["partitions"]["maximum"], json!(10000.0));
    assert_eq!(
        spec["properties"]["replicationFactor"]["minimum"],
        json!(1.0)
    );
    assert_eq!(
        spec["properties"]["deletionPolicy"]["enum"],
        json!(["Delete", "Retain"])
    );
    assert_eq!(
        spec["properties"]["deletionPolicy"]["default"],
        json!("Delete")
    );
    let conditions = &s["properties"]["status"]["properties"]["conditions"];
    assert_eq!(conditions["x-kubernetes-list-type"], json!("map"));
    assert_eq!(conditions["x-kubernetes-list-map-keys"], json!(["type"]));
}

#[test]
fn crds_have_names_columns_and_status_subresource() {
    let topic = Topic::crd();
    assert_eq!(topic.metadata.name.as_deref(), Some("topics.strata.dev"));
    assert_eq!(topic.spec.group, GROUP);
    assert_eq!(topic.spec.versions[0].name, VERSION);
    assert_eq!(topic.spec.names.short_names, Some(vec!["stt".into()]));
    assert_eq!(topic.spec.names.categories, Some(vec![CATEGORY.into()]));
    let columns: Vec<_> = topic.spec.versions[0]
        .additional_printer_columns
        .iter()
        .flatten()
        .filter(|c| c.priority.unwrap_or(0) == 0)
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        columns,
        [
            "Partitions",
            "Replication",
            "Ready",
            "Local",
            "Remote",
            "Age"
        ]
    );

    let cluster = Cluster::crd();
    assert_eq!(
        cluster.metadata.name.as_deref(),
        Some("clusters.strata.dev")
    );
    assert_eq!(cluster.spec.names.short_names, Some(vec!["stc".into()]));
    let columns: Vec<_> = cluster.spec.versions[0]
        .additional_printer_columns
        .iter()
        .flatten()
        .filter(|c| c.priority.unwrap_or(0) == 0)
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(columns, ["Nodes", "Ready", "Bootstrap", "Age"]);

    for crd in [&topic, &cluster] {
        assert_eq!(crd.spec.scope, "Namespaced");
        let sub = crd.spec.versions[0].subresources.as_ref().unwrap();
        assert!(
            sub.status.is_some(),
            "{:?} has no status subresource",
            crd.metadata.name
        );
    }
}

#[test]
fn render_is_deterministic_and_headed() {
    let a = render::manifests().unwrap();
    let b = render::manifests().unwrap();
    assert_eq!(a, b);
    let names: Vec<_> = a.iter().map(|m| m.file_name.as_str()).collect();
    assert_eq!(
        names,
        [
            "topics.strata.dev.yaml",
            "clusters.strata.dev.yaml",
            "users.strata.dev.yaml"
        ]
    );
    for m in &a {
        assert!(m.yaml.starts_with("# Generated from operator/src/crd by"));
        let parsed: CustomResourceDefinition = serde_yaml::from_str(&m.yaml).unwrap();
        assert_eq!(
            Some(m.file_name.trim_end_matches(".yaml")),
            parsed.metadata.name.as_deref()
        );
    }
}

fn config(pairs: &[(&str, &str)]) -> Value {
    let map: BTreeMap<_, _> = pairs.iter().copied().collect();
    json!({"partitions": 3, "clusterRef": {"name": "main"}, "config": map})
}

#[test]
fn retention_rules_follow_kafka() {
    let crd = Topic::crd();
    let accepted: &[&[(&str, &str)]] = &[
        &[],
        &[
            ("local.retention.bytes", "1000"),
            ("retention.bytes", "1000"),
        ],
        &[("local.retention.bytes", "10"), ("retention.bytes", "1000")],
        &[("local.retention.bytes", "-2"), ("retention.bytes", "1000")],
        &[("local.retention.bytes", "-1"), ("retention.bytes", "-1")],
        &[
            ("local.retention.bytes", "1000000"),
            ("retention.bytes", "-1"),
        ],
        &[
            ("local.retention.ms", "3600000"),
            ("retention.ms", "604800000"),
        ],
        &[("local.retention.ms", "-2"), ("retention.ms", "0")],
        &[("local.retention.ms", "99999999999")],
        &[("retention.ms", "-1"), ("cleanup.policy", "compact")],
        &[("retention.ms", "9223372036854775807")],
    ];
    for case in accepted {
        assert_eq!(
            refusals(&crd, &topic(config(case)), None),
            Vec::<String>::new(),
            "{case:?}"
        );
    }
    let refused: &[(&[(&str, &str)], &str)] = &[
        (
            &[
                ("local.retention.bytes", "1001"),
                ("retention.bytes", "1000"),
            ],
            "local.retention.bytes cannot exceed retention.bytes",
        ),
        (
            &[("local.retention.bytes", "-1"), ("retention.bytes", "1000")],
            "local.retention.bytes cannot exceed retention.bytes",
        ),
        (
            &[
                ("local.retention.ms", "86400001"),
                ("retention.ms", "86400000"),
            ],
            "local.retention.ms cannot exceed retention.ms",
        ),
        (&[("retention.ms", "7d")], "must be integers"),
        (&[("local.retention.bytes", "")], "must be integers"),
        (
            &[("retention.bytes", "-2")],
            "must be -1 (unlimited) or more",
        ),
        (
            &[("local.retention.ms", "-3")],
            "must be -2 (same as the total",
        ),
    ];
    for (case, message) in refused {
        let got = refusals(&crd, &topic(config(case)), None);
        assert_eq!(got.len(), 1, "{case:?}: {got:?}");
        assert!(got[0].contains(message), "{case:?}: {got:?}");
    }
}

#[test]
fn topic_transitions() {
    let crd = Topic::crd();
    let old = base_topic();
    let with = |patch: Value| {
        let mut t = old.clone();
        json_merge(&mut t, &patch);
        t
    };
    let cases: &[(Value, Option<&str>)] = &[
        (json!({"spec": {"partitions": 6}}), None),
        (json!({"spec": {"partitions": 3}}), None),
        (
            json!({"spec": {"partitions": 2}}),
            Some("partitions cannot be decreased"),
        ),
        (
            json!({"spec": {"clusterRef": {"name": "other"}}}),
            Some("clusterRef is immutable"),
        ),
        (
            json!({"spec": {"topicName": "Orders"}}),
            Some("the Kafka topic name (spec.topicName, or metadata.name when it is omitted) is immutable"),
        ),
        // Naming the resource's own name explicitly changes nothing.
        (json!({"spec": {"topicName": "orders"}}), None),
        (json!({"spec": {"replicationFactor": 2, "deletionPolicy": "Retain"}}), None),
    ];
    for (patch, message) in cases {
        let got = refusals(&crd, &with(patch.clone()), Some(&old));
        match message {
            None => assert!(got.is_empty(), "{patch}: {got:?}"),
            Some(m) => assert_eq!(got, [m.to_string()], "{patch}"),
        }
    }

    // An update that omits every optional field set before is not a change to refuse.
    let full = topic(json!({
        "partitions": 3, "clusterRef": {"name": "main"}, "replicationFactor": 3,
        "deletionPolicy": "Retain", "topicName": "orders",
        "config": {"retention.ms": "1000"},
    }));
    assert!(refusals(&crd, &base_topic(), Some(&full)).is_empty());
    // Dropping an explicit topicName that differs from metadata.name renames the topic.
    let named =
        topic(json!({"partitions": 3, "clusterRef": {"name": "main"}, "topicName": "Orders"}));
    assert_eq!(refusals(&crd, &base_topic(), Some(&named)).len(), 1);
}

#[test]
fn cluster_transitions() {
    let crd = Cluster::crd();
    let old = cluster(json!({
        "nodes": 3,
        "storage": {"size": "10Gi", "storageClassName": "fast"},
        "objectStore": {"bucket": "b", "prefix": "p"},
    }));
    assert!(refusals(&crd, &old, None).is_empty());
    // Scaling, a bigger disk, omitting storageClassName: accepted.
    let ok = cluster(json!({
        "nodes": 5,
        "storage": {"size": "0.5Ti"},
        "objectStore": {"bucket": "b", "prefix": "p", "endpoint": "https://s3.example.com"},
    }));
    assert!(refusals(&crd, &ok, Some(&old)).is_empty());
    let cases = [
        (
            json!({"storage": {"size": "10Gi", "storageClassName": "slow"}, "objectStore": {"bucket": "b", "prefix": "p"}}),
            "storageClassName is immutable",
        ),
        (
            json!({"objectStore": {"bucket": "c", "prefix": "p"}}),
            "objectStore.bucket and objectStore.prefix are immutable: tiered data lives there",
        ),
        (
            json!({"objectStore": {"bucket": "b"}}),
            "objectStore.bucket and objectStore.prefix are immutable: tiered data lives there",
        ),
        (
            json!({"objectStore": {"bucket": "b", "prefix": "p", "endpoint": "s3.example.com"}}),
            "endpoint must be an http:// or https:// URL",
        ),
        (
            json!({"storage": {"size": "9Gi", "storageClassName": "fast"}, "objectStore": {"bucket": "b", "prefix": "p"}}),
            "storage.size cannot be decreased: volumes only grow",
        ),
        (
            json!({"storage": {"size": "lots"}, "objectStore": {"bucket": "b", "prefix": "p"}}),
            "size must be a quantity, for example 100Gi",
        ),
    ];
    for (spec, message) in cases {
        let got = refusals(&crd, &cluster(spec.clone()), Some(&old));
        assert_eq!(got, [message.to_string()], "{spec}");
    }
}

/// JSON merge patch (RFC 7386), as `kubectl patch --type merge` applies it.
fn json_merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    json_merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

#[test]
fn restore_from_needs_an_object_store_and_stays_as_set() {
    let crd = Cluster::crd();
    let restored = cluster(json!({
        "objectStore": {"bucket": "b", "prefix": "new"},
        "restoreFrom": {"prefix": "old"},
    }));
    assert!(refusals(&crd, &restored, None).is_empty());
    let no_store = cluster(json!({"restoreFrom": {"prefix": "old"}}));
    assert_eq!(
        refusals(&crd, &no_store, None),
        ["restoreFrom needs objectStore: the restore reads that bucket".to_string()]
    );
    let moved = cluster(json!({
        "objectStore": {"bucket": "b", "prefix": "new"},
        "restoreFrom": {"prefix": "elsewhere"},
    }));
    assert_eq!(
        refusals(&crd, &moved, Some(&restored)),
        ["restoreFrom is immutable".to_string()]
    );
}

fn user(name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "strata.dev/v1alpha1",
        "kind": "User",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    })
}

#[test]
fn user_round_trips_and_takes_defaults() {
    let u: User = serde_json::from_value(user(
        "alice",
        json!({
            "authentication": {"type": "scram-sha-512"},
            "authorization": {"acls": [{"resource": {"type": "topic", "name": "a"}, "operations": ["Read"]}]},
            "quotas": {"producerByteRate": 1024},
        }),
    ))
    .unwrap();
    let rule = &u.spec.authorization.as_ref().unwrap().acls[0];
    assert_eq!(rule.host, "*");
    assert_eq!(rule.type_, user::AclRuleType::Allow);
    assert_eq!(u.username(), Some("alice"));
    let back: User = serde_json::from_value(serde_json::to_value(&u).unwrap()).unwrap();
    assert_eq!(back.spec, u.spec);
}

#[test]
fn user_rules_refuse_invalid_acls_and_passwords() {
    let crd = User::crd();
    let acl = |rule: Value| {
        user(
            "alice",
            json!({"authentication": {"type": "scram-sha-512"}, "authorization": {"acls": [rule]}}),
        )
    };
    let ok = [
        json!({"resource": {"type": "topic", "name": "orders-", "patternType": "prefix"}, "operations": ["Read", "Write"]}),
        json!({"resource": {"type": "group", "name": "*"}, "operations": ["All"], "type": "deny", "host": "10.1.2.3"}),
        json!({"resource": {"type": "cluster"}, "operations": ["IdempotentWrite", "Describe"]}),
        json!({"resource": {"type": "cluster", "name": "kafka-cluster"}, "operations": ["Alter"]}),
        json!({"resource": {"type": "transactionalId", "name": "tx-"}, "operations": ["Write"]}),
    ];
    for rule in ok {
        assert!(
            refusals(&crd, &acl(rule.clone()), None).is_empty(),
            "{rule}"
        );
    }
    let bad = [
        (json!({"resource": {"type": "group", "name": "g"}, "operations": ["Write"]}),
         "group operations are All, Read, Describe and Delete"),
        (json!({"resource": {"type": "topic", "name": "t"}, "operations": ["IdempotentWrite"]}),
         "topic operations are All, Read, Write, Create, Delete, Alter, Describe, DescribeConfigs and AlterConfigs"),
        (json!({"resource": {"type": "transactionalId", "name": "t"}, "operations": ["Read"]}),
         "transactionalId operations are All, Describe and Write"),
        (json!({"resource": {"type": "cluster"}, "operations": ["Read"]}),
         "cluster operations are All, Create, ClusterAction, DescribeConfigs, AlterConfigs, IdempotentWrite, Alter and Describe"),
        (json!({"resource": {"type": "topic"}, "operations": ["Read"]}),
         "a topic, group or transactionalId rule needs a name (* for all)"),
        (json!({"resource": {"type": "cluster", "name": "other"}, "operations": ["Alter"]}),
         "the cluster resource is named kafka-cluster (or left unnamed)"),
        (json!({"resource": {"type": "cluster", "patternType": "prefix"}, "operations": ["Alter"]}),
         "the cluster resource takes no prefix pattern"),
        (json!({"resource": {"type": "topic", "name": "t"}, "operations": ["Read", "Read"]}),
         "operations are listed once each"),
    ];
    for (rule, message) in bad {
        assert_eq!(
            refusals(&crd, &acl(rule.clone()), None),
            [message.to_string()],
            "{rule}"
        );
    }
    let with_password = |secret: &str, auth: &str| {
        user(
            "alice",
            json!({"authentication": {"type": auth, "password": {"valueFrom": {"secretKeyRef": {"name": secret, "key": "pw"}}}}}),
        )
    };
    assert!(refusals(&crd, &with_password("alice-pw", "scram-sha-512"), None).is_empty());
    assert_eq!(
        refusals(&crd, &with_password("alice", "scram-sha-512"), None),
        ["the password Secret cannot be the Secret the operator writes (the one named like the User)"]
    );
    assert_eq!(
        refusals(&crd, &with_password("alice-pw", "tls"), None),
        ["password is only for scram-sha-512 authentication"]
    );
}

#[test]
fn cluster_security_rules() {
    let crd = Cluster::crd();
    let ok = cluster(json!({
        "listener": {"authentication": "tls", "tls": true},
        "authorization": {"type": "simple", "superUsers": ["User:admin", "User:CN=ops"]},
    }));
    assert!(refusals(&crd, &ok, None).is_empty());
    let c: Cluster = serde_json::from_value(ok).unwrap();
    assert_eq!(
        c.spec.listener.authentication,
        cluster::ListenerAuthentication::Tls
    );
    assert!(c.spec.listener.tls);
    let cases = [
        (
            json!({"listener": {"authentication": "tls"}}),
            "tls authentication needs tls: true",
        ),
        (
            json!({"authorization": {"superUsers": []}}),
            "authorization needs authenticated clients: set listener.authentication",
        ),
    ];
    for (spec, message) in cases {
        assert_eq!(
            refusals(&crd, &cluster(spec.clone()), None),
            [message.to_string()],
            "{spec}"
        );
    }
}
