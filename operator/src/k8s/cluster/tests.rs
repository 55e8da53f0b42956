//! The objects built from a Cluster (pure): names, labels, owner references, the node command
//! line and environment, secrets only by reference, the security context, scaling and status.

use k8s_openapi::api::core::v1::EnvVar;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde_json::json;
use strata_controller::core::{Blocked, RebalanceOutcome};
use strata_controller::core::{ImageNode, PartitionRecord, TopicRecord};

use super::*;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

fn cfg() -> ClusterConfig {
    ClusterConfig {
        namespace: "kafka".into(),
        node_image: "ghcr.io/strata/strata-node:0.1.0".into(),
        controller_url: "http://strata-operator.kafka.svc:9093".into(),
        cluster_name: "strata".into(),
        identity: "strata-operator-7d9f-0".into(),
        max_partition_moves: 8,
        node_service_account: Some("strata-node".into()),
    }
}

/// A Cluster as the API server returns it (uid, generation), from a spec in JSON.
fn cluster(spec: serde_json::Value) -> Cluster {
    serde_json::from_value(json!({
        "apiVersion": "strata.dev/v1alpha1",
        "kind": "Cluster",
        "metadata": {
            "name": "strata",
            "namespace": "kafka",
            "uid": "8d3c2f9e-0000-4000-8000-000000000001",
            "generation": 4,
        },
        "spec": spec,
    }))
    .unwrap()
}

fn tiered() -> Cluster {
    cluster(json!({
        "nodes": 3,
        "image": "registry.local/strata-node:dev",
        "resources": {"requests": {"cpu": "1", "memory": "2Gi"}},
        "storage": {"size": "50Gi", "storageClassName": "fast"},
        "objectStore": {
            "bucket": "tiered",
            "prefix": "/prod/",
            "endpoint": "http://minio.storage.svc:9000",
            "region": "eu-west-1",
            "credentialsSecretRef": {"name": "s3-keys"},
        },
        "topicDefaults": {"retention.ms": "604800000", "remote.storage.enable": "true"},
        "listener": {"port": 9094},
    }))
}

fn find<'a>(env: &'a [EnvVar], name: &str) -> Option<&'a EnvVar> {
    env.iter().find(|e| e.name == name)
}

fn value<'a>(env: &'a [EnvVar], name: &str) -> Option<&'a str> {
    find(env, name).and_then(|e| e.value.as_deref())
}

fn owned_by_the_cluster(meta: &ObjectMeta) {
    let refs = meta.owner_references.as_ref().expect("owner references");
    assert_eq!(refs.len(), 1);
    let o = &refs[0];
    assert_eq!(
        (o.api_version.as_str(), o.kind.as_str(), o.name.as_str()),
        ("strata.dev/v1alpha1", "Cluster", "strata")
    );
    assert_eq!(o.uid, "8d3c2f9e-0000-4000-8000-000000000001");
    assert_eq!(o.controller, Some(true));
    assert_eq!(o.block_owner_deletion, Some(true));
    assert_eq!(meta.namespace.as_deref(), Some("kafka"));
    let labels = meta.labels.as_ref().unwrap();
    assert_eq!(labels[CLUSTER_LABEL], "strata");
    assert_eq!(labels["app.kubernetes.io/managed-by"], "strata-operator");
}

#[test]
fn every_object_is_owned_by_its_cluster() {
    let c = tiered();
    let cfg = cfg();
    owned_by_the_cluster(&headless_service(&c, &cfg).metadata);
    owned_by_the_cluster(&bootstrap_service(&c, &cfg).metadata);
    owned_by_the_cluster(&config_map(&c, &cfg).metadata);
    owned_by_the_cluster(&pod_disruption_budget(&c, &cfg).metadata);
    owned_by_the_cluster(&statefulset(&c, &cfg, 3).metadata);
}

#[test]
fn node_command_line() {
    let c = tiered();
    let sts = statefulset(&c, &cfg(), 3);
    let pod = sts.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let node = &pod.containers[0];
    assert_eq!(
        node.image.as_deref(),
        Some("registry.local/strata-node:dev")
    );
    assert_eq!(node.command, Some(vec!["strata-node".to_string()]));
    assert_eq!(
        node.args.as_ref().unwrap(),
        &[
            "--node-id",
            "$(STRATA_NODE_ID)",
            "--controller",
            "http://strata-operator.kafka.svc:9093",
            "--listen",
            "0.0.0.0:9094",
            "--advertise",
            "$(POD_NAME).strata-nodes.kafka.svc:9094",
            "--data-dir",
            "/data",
            "--metrics-listen",
            "0.0.0.0:9100",
        ]
    );
    let env = node.env.as_ref().unwrap();
    // The ordinal and the pod name come from the downward API.
    let id = find(env, "STRATA_NODE_ID").unwrap();
    let field = id.value_from.as_ref().unwrap().field_ref.as_ref().unwrap();
    assert_eq!(
        field.field_path,
        "metadata.labels['apps.kubernetes.io/pod-index']"
    );
    let pod_name = find(env, "POD_NAME").unwrap();
    assert_eq!(
        pod_name
            .value_from
            .as_ref()
            .unwrap()
            .field_ref
            .as_ref()
            .unwrap()
            .field_path,
        "metadata.name"
    );
    // The kubelet expands $(VAR) only for variables defined in the container.
    for arg in node.args.as_ref().unwrap() {
        for var in ["STRATA_NODE_ID", "POD_NAME"] {
            if arg.contains(&format!("$({var})")) {
                assert!(
                    find(env, var).is_some(),
                    "{var} used in {arg} but not defined"
                );
            }
        }
    }
    let ports: Vec<(Option<&str>, i32)> = node
        .ports
        .as_ref()
        .unwrap()
        .iter()
        .map(|p| (p.name.as_deref(), p.container_port))
        .collect();
    assert_eq!(ports, vec![(Some("kafka"), 9094), (Some("metrics"), 9100)]);
    let ready = node.readiness_probe.as_ref().unwrap();
    let get = ready.http_get.as_ref().unwrap();
    assert_eq!(get.path.as_deref(), Some("/ready"));
    assert_eq!(get.port, IntOrString::String("metrics".into()));
    assert_eq!(
        node.resources.as_ref().unwrap().requests.as_ref().unwrap()["cpu"],
        Quantity("1".into())
    );
}

#[test]
fn default_image_and_advertised_host_template() {
    let mut c = cluster(json!({
        "listener": {
            "advertisedHostTemplate": "{cluster}-{ordinal}.kafka.example.com",
            "advertisedPort": 31000,
        },
    }));
    let cfg = cfg();
    let node = node_container(&c, &cfg);
    assert_eq!(
        node.image.as_deref(),
        Some("ghcr.io/strata/strata-node:0.1.0")
    );
    let args = node.args.unwrap();
    let at = args.iter().position(|a| a == "--advertise").unwrap();
    assert_eq!(
        args[at + 1],
        "strata-$(STRATA_NODE_ID).kafka.example.com:31000"
    );
    assert!(args.contains(&"0.0.0.0:9092".to_string()), "{args:?}");
    // No object store, no topic defaults: no such environment.
    c.spec.topic_defaults.clear();
    let env = node_env(&c);
    for name in [
        "STRATA_OBJECT_STORE",
        "STRATA_REMOTE_DISK_CACHE_BYTES",
        "STRATA_TOPIC_DEFAULT",
        "AWS_ACCESS_KEY_ID",
        "AWS_ENDPOINT",
    ] {
        assert!(find(&env, name).is_none(), "{name}");
    }
}

#[test]
fn object_store_settings_and_keys_only_by_secret_reference() {
    let c = tiered();
    let env = node_env(&c);
    assert_eq!(value(&env, "STRATA_OBJECT_STORE"), Some("s3://tiered/prod"));
    // The disk cache for bucket reads: a tenth of the volume, at most 1 GiB.
    let cache: u64 = value(&env, "STRATA_REMOTE_DISK_CACHE_BYTES")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        cache,
        disk_cache_bytes(&c.spec.storage.size.0),
        "{:?}",
        c.spec.storage.size
    );
    assert_eq!(disk_cache_bytes("2Gi"), 214_748_364);
    assert_eq!(disk_cache_bytes("100Gi"), 1 << 30);
    assert_eq!(
        value(&env, "AWS_ENDPOINT"),
        Some("http://minio.storage.svc:9000")
    );
    assert_eq!(value(&env, "AWS_ALLOW_HTTP"), Some("true"));
    assert_eq!(value(&env, "AWS_REGION"), Some("eu-west-1"));
    for (name, key) in [
        ("AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"),
        ("AWS_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"),
    ] {
        let e = find(&env, name).unwrap();
        assert_eq!(e.value, None, "{name} must never be inline");
        let r = e
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap();
        assert_eq!((r.name.as_str(), r.key.as_str()), ("s3-keys", key));
    }
    // Nothing in the whole StatefulSet holds a key inline.
    let sts = serde_json::to_string(&statefulset(&c, &cfg(), 3)).unwrap();
    assert!(!sts.contains("\"name\":\"AWS_SECRET_ACCESS_KEY\",\"value\""));

    // Other key names in the Secret; https needs no AWS_ALLOW_HTTP; no prefix.
    let c = cluster(json!({
        "objectStore": {
            "bucket": "b",
            "endpoint": "https://s3.example.com",
            "credentialsSecretRef": {
                "name": "k",
                "accessKeyIdKey": "id",
                "secretAccessKeyKey": "secret",
            },
        },
    }));
    let env = node_env(&c);
    assert_eq!(value(&env, "STRATA_OBJECT_STORE"), Some("s3://b"));
    assert!(find(&env, "AWS_ALLOW_HTTP").is_none());
    let key = |n| {
        find(&env, n)
            .unwrap()
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap()
            .key
            .clone()
    };
    assert_eq!(key("AWS_ACCESS_KEY_ID"), "id");
    assert_eq!(key("AWS_SECRET_ACCESS_KEY"), "secret");
}

#[test]
fn topic_defaults_come_from_the_config_map_and_a_change_rolls_the_nodes() {
    let c = tiered();
    let cfg = cfg();
    let cm = config_map(&c, &cfg);
    assert_eq!(cm.metadata.name.as_deref(), Some("strata-config"));
    assert_eq!(
        cm.data.as_ref().unwrap()[TOPIC_DEFAULTS_KEY],
        "remote.storage.enable=true,retention.ms=604800000"
    );
    let env = node_env(&c);
    let r = find(&env, "STRATA_TOPIC_DEFAULT")
        .unwrap()
        .value_from
        .as_ref()
        .unwrap()
        .config_map_key_ref
        .as_ref()
        .unwrap();
    assert_eq!(
        (r.name.as_str(), r.key.as_str()),
        ("strata-config", TOPIC_DEFAULTS_KEY)
    );
    let hash = |c: &Cluster| {
        statefulset(c, &cfg, 3)
            .spec
            .unwrap()
            .template
            .metadata
            .unwrap()
            .annotations
            .unwrap()[CONFIG_HASH_ANNOTATION]
            .clone()
    };
    let mut changed = c.clone();
    changed
        .spec
        .topic_defaults
        .insert("retention.ms".into(), "1000".into());
    assert_ne!(hash(&c), hash(&changed));
    assert_eq!(hash(&c), hash(&tiered()), "stable");
}

#[test]
fn nodes_run_unprivileged() {
    let sts = statefulset(&tiered(), &cfg(), 3);
    let pod = sts.spec.unwrap().template.spec.unwrap();
    // Nodes never call the API: their own ServiceAccount, and no token in the pod.
    assert_eq!(pod.service_account_name.as_deref(), Some("strata-node"));
    assert_eq!(pod.automount_service_account_token, Some(false));
    let psc = pod.security_context.unwrap();
    assert_eq!(psc.run_as_non_root, Some(true));
    assert_eq!(psc.fs_group, Some(NODE_UID), "the volume is writable");
    assert_eq!(psc.seccomp_profile.unwrap().type_, "RuntimeDefault");
    let sc = pod.containers[0].security_context.clone().unwrap();
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.capabilities.unwrap().drop, Some(vec!["ALL".to_string()]));
    assert_eq!(sc.seccomp_profile.unwrap().type_, "RuntimeDefault");
    // A read-only root still needs a writable /tmp and the data volume.
    let mounts: Vec<&str> = pod.containers[0]
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .map(|m| m.mount_path.as_str())
        .collect();
    assert_eq!(mounts, vec!["/data", "/tmp"]);
}

#[test]
fn statefulset_shape() {
    let c = tiered();
    let sts = statefulset(&c, &cfg(), 5);
    assert_eq!(sts.metadata.name.as_deref(), Some("strata"));
    let spec = sts.spec.unwrap();
    assert_eq!(spec.replicas, Some(5));
    assert_eq!(spec.service_name.as_deref(), Some("strata-nodes"));
    assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
    let strategy = spec.update_strategy.unwrap();
    assert_eq!(
        strategy.type_.as_deref(),
        Some("OnDelete"),
        "the operator rolls the pods itself"
    );
    let selector = spec.selector.match_labels.unwrap();
    let pod_labels = spec.template.metadata.unwrap().labels.unwrap();
    for (k, v) in &selector {
        assert_eq!(pod_labels.get(k), Some(v), "pods match the selector");
    }
    let claims = spec.volume_claim_templates.unwrap();
    assert_eq!(claims.len(), 1);
    let claim = &claims[0];
    assert_eq!(claim.metadata.name.as_deref(), Some("data"));
    let cs = claim.spec.as_ref().unwrap();
    assert_eq!(cs.storage_class_name.as_deref(), Some("fast"));
    assert_eq!(cs.access_modes, Some(vec!["ReadWriteOnce".to_string()]));
    assert_eq!(
        cs.resources.as_ref().unwrap().requests.as_ref().unwrap()["storage"],
        Quantity("50Gi".into())
    );
}

#[test]
fn services_and_budget() {
    let c = tiered();
    let cfg = cfg();
    let h = headless_service(&c, &cfg);
    assert_eq!(h.metadata.name.as_deref(), Some("strata-nodes"));
    let hs = h.spec.unwrap();
    assert_eq!(hs.cluster_ip.as_deref(), Some("None"));
    assert_eq!(hs.publish_not_ready_addresses, Some(true));
    assert_eq!(hs.selector, Some(selector_labels(&c)));
    let b = bootstrap_service(&c, &cfg);
    assert_eq!(b.metadata.name.as_deref(), Some("strata-bootstrap"));
    let bs = b.spec.unwrap();
    let ports = bs.ports.unwrap();
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0].port, 9094);
    assert_eq!(
        bootstrap_address(&c, &cfg),
        "strata-bootstrap.kafka.svc:9094"
    );
    let pdb = pod_disruption_budget(&c, &cfg).spec.unwrap();
    assert_eq!(pdb.max_unavailable, Some(IntOrString::Int(1)));
    assert_eq!(
        pdb.selector.unwrap().match_labels,
        Some(selector_labels(&c))
    );
}

#[test]
fn objects_serialize_for_server_side_apply() {
    // Apply bodies need apiVersion and kind.
    let c = tiered();
    let cfg = cfg();
    for (v, kind) in [
        (
            serde_json::to_value(statefulset(&c, &cfg, 3)).unwrap(),
            "StatefulSet",
        ),
        (
            serde_json::to_value(headless_service(&c, &cfg)).unwrap(),
            "Service",
        ),
        (
            serde_json::to_value(config_map(&c, &cfg)).unwrap(),
            "ConfigMap",
        ),
        (
            serde_json::to_value(pod_disruption_budget(&c, &cfg)).unwrap(),
            "PodDisruptionBudget",
        ),
    ] {
        assert_eq!(v["kind"], kind);
        assert!(v["apiVersion"].is_string());
    }
}

#[test]
fn invalid_clusters_are_refused_with_a_reason() {
    assert_eq!(validate(&tiered()), Ok(()));
    let mut c = tiered();
    c.metadata.name = Some("Strata.Prod".into());
    assert!(validate(&c).unwrap_err().contains("52 characters"));
    c.metadata.name = Some("a".repeat(53));
    assert!(validate(&c).is_err());
    let mut c = tiered();
    c.spec
        .topic_defaults
        .insert("cleanup.policy".into(), "compact,delete".into());
    assert!(validate(&c).unwrap_err().contains("cleanup.policy"));
}

#[test]
fn scaling_down_waits_for_the_drain() {
    assert_eq!(replicas_to_apply(3, None, false), 3, "first apply");
    assert_eq!(replicas_to_apply(5, Some(3), false), 5, "up at once");
    assert_eq!(
        replicas_to_apply(3, Some(5), false),
        5,
        "down only when drained"
    );
    assert_eq!(replicas_to_apply(3, Some(5), true), 3);
    assert_eq!(replicas_to_apply(3, Some(3), false), 3);
}

#[test]
fn quantities() {
    assert_eq!(quantity_bytes("10Gi"), Some(10.0 * 1073741824.0));
    assert_eq!(quantity_bytes("500M"), Some(5e8));
    assert_eq!(quantity_bytes("1.5Ti"), Some(1.5 * 1099511627776.0));
    assert_eq!(quantity_bytes("1e9"), Some(1e9));
    assert_eq!(quantity_bytes("1024"), Some(1024.0));
    assert!(quantity_bytes("10Gi").unwrap() > quantity_bytes("10G").unwrap());
    assert_eq!(quantity_bytes("ten"), None);
}

fn md(nodes: &[(i32, bool)]) -> Image {
    Image {
        nodes: nodes
            .iter()
            .map(|&(id, alive)| {
                let node = ImageNode {
                    host: "h".into(),
                    port: 1,
                    rack: String::new(),
                    alive,
                    listeners: Default::default(),
                };
                (id, node)
            })
            .collect(),
        ..Default::default()
    }
}

fn cond<'a>(s: &'a ClusterStatus, t: &str) -> &'a Condition {
    s.conditions.iter().find(|c| c.type_ == t).unwrap()
}

#[test]
fn status_ready_when_every_node_is_alive() {
    let c = tiered();
    let cfg = cfg();
    // Node 7 is not part of the cluster; node 2 never registered yet.
    let (ready, down) = node_health(&md(&[(0, true), (1, true), (7, true)]), 3);
    assert_eq!((ready, down.clone()), (2, vec![]));
    let o = Observed {
        ready_nodes: ready,
        down_nodes: down,
        replicas: 3,
        rebalance: Some(RebalanceOutcome {
            waiting_for: vec![2],
            ..Default::default()
        }),
        ..Default::default()
    };
    let s = status_for(&c, &cfg, &o);
    assert_eq!(s.ready_nodes, Some(2));
    assert_eq!(s.observed_generation, Some(4));
    assert_eq!(
        s.bootstrap_address.as_deref(),
        Some("strata-bootstrap.kafka.svc:9094")
    );
    assert_eq!(
        s.controller_leader.as_deref(),
        Some("strata-operator-7d9f-0")
    );
    assert_eq!(cond(&s, "Ready").status, "False");
    assert_eq!(cond(&s, "Progressing").reason, "WaitingForNodes");
    assert_eq!(cond(&s, "Degraded").status, "False");

    let (ready, down) = node_health(&md(&[(0, true), (1, true), (2, true)]), 3);
    let o = Observed {
        ready_nodes: ready,
        down_nodes: down,
        replicas: 3,
        rebalance: Some(RebalanceOutcome {
            drained: true,
            ..Default::default()
        }),
        ..Default::default()
    };
    let s = status_for(&c, &cfg, &o);
    assert_eq!(cond(&s, "Ready").status, "True");
    assert_eq!(cond(&s, "Progressing").status, "False");
    assert_eq!(cond(&s, "Degraded").status, "False");
    assert!(s
        .conditions
        .iter()
        .all(|c| c.observed_generation == Some(4)));
}

#[test]
fn status_while_draining_blocked_or_with_a_node_down() {
    let c = tiered();
    let cfg = cfg();
    let draining = Observed {
        ready_nodes: 3,
        replicas: 5,
        rebalance: Some(RebalanceOutcome {
            in_flight: 2,
            ..Default::default()
        }),
        ..Default::default()
    };
    let s = status_for(&c, &cfg, &draining);
    let p = cond(&s, "Progressing");
    assert_eq!((p.status.as_str(), p.reason.as_str()), ("True", "Draining"));
    assert!(p.message.contains("nodes 3, 4") && p.message.contains("2 moving"));
    assert_eq!(cond(&s, "Degraded").status, "False");
    let waiting = Observed {
        rebalance: Some(RebalanceOutcome {
            waiting_for: vec![1],
            ..Default::default()
        }),
        ..draining.clone()
    };
    let p = status_for(&c, &cfg, &waiting).conditions[1].clone();
    assert_eq!(p.reason, "Draining");
    assert!(p.message.contains("waiting for nodes 1"), "{}", p.message);
    let o = Observed {
        ready_nodes: 3,
        replicas: 5,
        rebalance: Some(RebalanceOutcome {
            in_flight: 2,
            blocked: vec![Blocked {
                topic: "orders".into(),
                partition: 0,
                reason: "replication factor 5 is larger than the 3 nodes it may stay on".into(),
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    let s = status_for(&c, &cfg, &o);
    let p = cond(&s, "Progressing");
    assert_eq!(
        (p.status.as_str(), p.reason.as_str()),
        ("False", "ScaleDownBlocked")
    );
    assert!(p.message.contains("nodes 3, 4"), "{}", p.message);
    let d = cond(&s, "Degraded");
    assert_eq!(
        (d.status.as_str(), d.reason.as_str()),
        ("True", "ScaleDownBlocked")
    );
    assert!(d.message.contains("orders-0"));

    let (ready, down) = node_health(&md(&[(0, true), (1, false), (2, true)]), 3);
    let o = Observed {
        ready_nodes: ready,
        down_nodes: down,
        replicas: 3,
        rebalance: Some(RebalanceOutcome::default()),
        ..Default::default()
    };
    let s = status_for(&c, &cfg, &o);
    assert_eq!(s.ready_nodes, Some(2));
    assert_eq!(cond(&s, "Degraded").reason, "NodesDown");
}

#[test]
fn status_during_a_roll_names_the_pod_or_what_it_waits_for() {
    let c = tiered();
    let cfg = cfg();
    let rolling = Observed {
        ready_nodes: 3,
        replicas: 3,
        rebalance: Some(RebalanceOutcome::default()),
        roll: Some(roll::Progress {
            revision: "strata-5c8d".into(),
            updated: 1,
            nodes: 3,
            step: Step::Replace {
                pod: "strata-1".into(),
                uid: None,
                why: "ready".into(),
            },
        }),
        ..Default::default()
    };
    let s = status_for(&c, &cfg, &rolling);
    let p = cond(&s, "Progressing");
    assert_eq!((p.status.as_str(), p.reason.as_str()), ("True", "Rolling"));
    assert!(
        p.message.contains("1 of 3") && p.message.contains("replacing pod strata-1"),
        "{}",
        p.message
    );
    let r = s.roll.unwrap();
    assert_eq!((r.updated_nodes, r.nodes), (1, 3));
    assert_eq!(r.replacing.as_deref(), Some("strata-1"));
    assert_eq!(r.waiting_for, None);

    let waiting = Observed {
        roll: Some(roll::Progress {
            revision: "strata-5c8d".into(),
            updated: 2,
            nodes: 3,
            step: Step::Wait {
                reason: "UnderReplicated",
                message: "waiting for 1 under-replicated partitions".into(),
            },
        }),
        ..rolling
    };
    let s = status_for(&c, &cfg, &waiting);
    assert!(cond(&s, "Progressing").message.contains("under-replicated"));
    let r = s.roll.unwrap();
    assert_eq!(r.replacing, None);
    assert!(r.waiting_for.unwrap().contains("under-replicated"));
    let done = Observed {
        roll: None,
        ..waiting
    };
    assert_eq!(status_for(&c, &cfg, &done).roll, None);
}

#[test]
fn status_patches_remove_what_went_away() {
    let old = json!({"readyNodes": 3, "roll": {"revision": "r", "replacing": "strata-0"},
                     "conditions": [{"type": "Ready"}]});
    let new = json!({"readyNodes": 3, "conditions": [{"type": "Ready"}, {"type": "Degraded"}]});
    assert_eq!(
        merge_patch(&old, &new),
        json!({"readyNodes": 3, "roll": null,
               "conditions": [{"type": "Ready"}, {"type": "Degraded"}]})
    );
    let waiting = json!({"roll": {"revision": "r", "waitingFor": "PodNotReady"}});
    assert_eq!(
        merge_patch(&old, &waiting),
        json!({"readyNodes": null, "conditions": null,
               "roll": {"revision": "r", "replacing": null, "waitingFor": "PodNotReady"}})
    );
    assert_eq!(merge_patch(&serde_json::Value::Null, &new), new);
}

#[test]
fn under_replicated_partitions_are_named() {
    let mut m = md(&[(0, true), (1, true)]);
    let partition = |isr: Vec<i32>| PartitionRecord {
        replicas: vec![0, 1],
        leader: isr[0],
        leader_epoch: 0,
        isr,
        partition_epoch: 0,
        target_replicas: None,
        original_replicas: None,
    };
    let topic = TopicRecord {
        topic_id: uuid::Uuid::new_v4(),
        configs: Default::default(),
        internal: false,
        partitions: vec![partition(vec![0, 1]), partition(vec![1])],
    };
    m.topics.insert("t".into(), std::sync::Arc::new(topic));
    assert_eq!(under_replicated(&m), vec!["t-1".to_string()]);
}

#[test]
fn a_cluster_not_served_says_why() {
    let mut c = tiered();
    c.metadata.name = Some("other".into());
    let o = Observed {
        refused: Some(("NotServed", "serves strata".into())),
        ..Default::default()
    };
    let s = status_for(&c, &cfg(), &o);
    assert_eq!(cond(&s, "Ready").reason, "NotServed");
    assert_eq!(cond(&s, "Degraded").status, "True");
    assert_eq!(s.ready_nodes, None);
    assert_eq!(s.bootstrap_address, None);
}

#[test]
fn truncation_keeps_characters_whole() {
    assert_eq!(truncate("short", 1024), "short");
    let long = "é".repeat(600);
    let t = truncate(&long, 1024);
    assert!(t.len() <= 1024 && t.ends_with("..."));
}

#[test]
fn a_restored_cluster_tells_its_nodes_where_from() {
    let c = cluster(json!({
        "objectStore": {"bucket": "b", "prefix": "new"},
        "restoreFrom": {"prefix": "/old/"},
    }));
    let env = node_env(&c);
    assert_eq!(value(&env, "STRATA_RESTORE_FROM"), Some("s3://b/old"));
    assert_eq!(value(&env, "STRATA_OBJECT_STORE"), Some("s3://b/new"));
    let c = cluster(json!({"objectStore": {"bucket": "b"}}));
    assert!(find(&node_env(&c), "STRATA_RESTORE_FROM").is_none());
}

fn secured_cluster() -> Cluster {
    cluster(json!({
        "nodes": 3,
        "listener": {"port": 9094, "authentication": "scram-sha-512", "tls": true,
                     "advertisedHostTemplate": "kafka-{ordinal}.example.com", "advertisedPort": 443},
        "authorization": {"superUsers": ["User:admin"]},
    }))
}

fn arg<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

#[test]
fn a_secured_cluster_gets_a_client_listener_and_a_replication_listener() {
    let c = secured_cluster();
    assert_eq!(client_protocol(&c), "SASL_SSL");
    let args = node_args(&c, &cfg());
    assert_eq!(
        arg(&args, "--listen"),
        None,
        "named listeners replace --listen"
    );
    assert_eq!(
        arg(&args, "--listeners"),
        Some("REPLICATION://0.0.0.0:9091,CLIENTS://0.0.0.0:9094")
    );
    assert_eq!(
        arg(&args, "--advertised-listeners"),
        Some(
            "REPLICATION://$(POD_NAME).strata-nodes.kafka.svc:9091,\
             CLIENTS://kafka-$(STRATA_NODE_ID).example.com:443"
        )
    );
    assert_eq!(
        arg(&args, "--listener-security-protocol-map"),
        Some("REPLICATION:SSL,CLIENTS:SASL_SSL")
    );
    assert_eq!(
        arg(&args, "--inter-broker-listener-name"),
        Some("REPLICATION")
    );
    assert_eq!(
        arg(&args, "--inter-broker-tls-ca-file"),
        Some("/etc/strata/tls/ca.crt")
    );
    assert_eq!(
        arg(&args, "--inter-broker-tls-server-name"),
        Some("strata-nodes.kafka.svc")
    );
    assert_eq!(
        arg(&args, "--sasl-enabled-mechanisms"),
        Some("SCRAM-SHA-512")
    );
    assert_eq!(
        arg(&args, "--tls-cert-file"),
        Some("/etc/strata/tls/tls.crt")
    );
    assert_eq!(
        arg(&args, "--tls-key-file"),
        Some("/etc/strata/tls/tls.key")
    );
    assert_eq!(arg(&args, "--tls-client-auth"), None);
    assert_eq!(arg(&args, "--authorizer"), Some("acl"));
    assert_eq!(
        arg(&args, "--super-users"),
        Some("User:CN=strata-nodes.kafka.svc;User:admin")
    );

    // The certificate Secret is mounted where the args point, read-only.
    let sts = statefulset(&c, &cfg(), 3);
    let pod = sts.spec.unwrap().template.spec.unwrap();
    let mounts = pod.containers[0].volume_mounts.clone().unwrap();
    let tls = mounts
        .iter()
        .find(|m| m.mount_path == TLS_DIR)
        .expect("tls mount");
    assert_eq!(tls.read_only, Some(true));
    let vol = pod
        .volumes
        .unwrap()
        .into_iter()
        .find(|v| v.name == tls.name)
        .unwrap();
    assert_eq!(
        vol.secret.unwrap().secret_name.as_deref(),
        Some("strata-nodes-tls")
    );
    let ports = pod.containers[0].ports.clone().unwrap();
    assert!(ports.iter().any(|p| p.container_port == REPLICATION_PORT));

    // Its names cover every pod, the bootstrap Service and the advertised hosts.
    let names = node_dns_names(&c, &cfg());
    assert_eq!(
        names[0], "strata-nodes.kafka.svc",
        "the subject comes first"
    );
    for n in [
        "*.strata-nodes.kafka.svc",
        "strata-bootstrap.kafka.svc",
        "kafka-0.example.com",
        "kafka-2.example.com",
    ] {
        assert!(names.contains(&n.to_string()), "{n} in {names:?}");
    }
}

#[test]
fn tls_authentication_mounts_the_clients_ca_and_requires_certificates() {
    let c = cluster(json!({"listener": {"authentication": "tls", "tls": true}}));
    assert_eq!(client_protocol(&c), "SSL");
    let args = node_args(&c, &cfg());
    assert_eq!(arg(&args, "--tls-client-auth"), Some("required"));
    assert_eq!(
        arg(&args, "--tls-client-ca-file"),
        Some("/etc/strata/clients-ca/ca.crt")
    );
    assert_eq!(arg(&args, "--sasl-enabled-mechanisms"), None);
    let pod = statefulset(&c, &cfg(), 3)
        .spec
        .unwrap()
        .template
        .spec
        .unwrap();
    let ca = pod
        .volumes
        .unwrap()
        .into_iter()
        .find(|v| v.name == "clients-ca")
        .expect("clients CA volume");
    assert_eq!(
        ca.secret.unwrap().secret_name.as_deref(),
        Some("strata-clients-ca-cert")
    );
}

#[test]
fn sasl_without_tls_still_replicates_over_mutual_tls() {
    let c = cluster(json!({"listener": {"authentication": "scram-sha-512"}}));
    assert_eq!(client_protocol(&c), "SASL_PLAINTEXT");
    let args = node_args(&c, &cfg());
    assert_eq!(
        arg(&args, "--listener-security-protocol-map"),
        Some("REPLICATION:SSL,CLIENTS:SASL_PLAINTEXT")
    );
    assert_eq!(
        arg(&args, "--tls-cert-file"),
        Some("/etc/strata/tls/tls.crt")
    );
    let pod = statefulset(&c, &cfg(), 3)
        .spec
        .unwrap()
        .template
        .spec
        .unwrap();
    assert!(pod.volumes.unwrap().iter().any(|v| v.name == "tls"));
}

#[test]
fn a_plain_cluster_keeps_its_single_listener() {
    let c = tiered();
    assert!(!secured(&c));
    let args = node_args(&c, &cfg());
    assert_eq!(arg(&args, "--listen"), Some("0.0.0.0:9094"));
    assert_eq!(arg(&args, "--listeners"), None);
    assert_eq!(arg(&args, "--authorizer"), None);
    let pod = statefulset(&c, &cfg(), 3)
        .spec
        .unwrap()
        .template
        .spec
        .unwrap();
    assert_eq!(pod.volumes.unwrap().len(), 1, "only the tmp volume");
}

#[test]
fn the_network_policy_opens_replication_to_the_nodes_only() {
    let c = secured_cluster();
    let np = network_policy(&c, &cfg());
    let spec = np.spec.unwrap();
    let rules = spec.ingress.unwrap();
    let open = &rules[0];
    assert!(open.from.is_none());
    let open_ports: Vec<_> = open
        .ports
        .iter()
        .flatten()
        .map(|p| p.port.clone())
        .collect();
    assert_eq!(
        open_ports,
        [
            Some(IntOrString::Int(9094)),
            Some(IntOrString::Int(METRICS_PORT))
        ]
    );
    let repl = &rules[1];
    assert_eq!(
        repl.ports.as_ref().unwrap()[0].port,
        Some(IntOrString::Int(REPLICATION_PORT))
    );
    let peer = &repl.from.as_ref().unwrap()[0];
    assert_eq!(
        peer.pod_selector.as_ref().unwrap().match_labels,
        Some(selector_labels(&c))
    );
    assert_eq!(np.metadata.owner_references.unwrap()[0].kind, "Cluster");
}
