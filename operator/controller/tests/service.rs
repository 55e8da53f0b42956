//! The controller service in-process on 127.0.0.1:0, driven by the generated client exactly as
//! nodes drive it: registration, heartbeats, topic creation, watching metadata, failover when
//! a node's heartbeats stop, and a restart from the same state directory.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use strata_controller::codes;
use strata_controller::core::Config;
use strata_controller::proto::{self, controller_client::ControllerClient};
use strata_controller::service::{ControllerService, ServiceConfig};
use strata_controller::store::FileStore;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

const SESSION_MS: u64 = 1000;

struct Running {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    handle: JoinHandle<strata_controller::Result<()>>,
}

impl Running {
    async fn shutdown(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(5), self.handle)
            .await
            .expect("shutdown within 5 s even with open watches")
            .expect("serve task")
            .expect("serve result");
    }
}

async fn start(dir: &Path) -> Running {
    let config = ServiceConfig {
        core: Config {
            session_timeout_ms: SESSION_MS,
            ..Config::default()
        },
        heartbeat_interval_ms: 100,
        ..ServiceConfig::default()
    };
    let store = Arc::new(FileStore::open(dir).unwrap());
    let service = ControllerService::start(config, store).await.unwrap();
    let (listener, addr) = ControllerService::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let (stop, stopped) = oneshot::channel();
    let handle = tokio::spawn(service.serve(listener, async {
        let _ = stopped.await;
    }));
    Running { addr, stop, handle }
}

async fn client(addr: SocketAddr) -> ControllerClient<Channel> {
    strata_controller::connect(&addr.to_string()).await.unwrap()
}

async fn register(c: &mut ControllerClient<Channel>, node: i32, incarnation: &str) -> i64 {
    let r = c
        .register(proto::RegisterRequest {
            node_id: node,
            host: "127.0.0.1".into(),
            port: 9090 + node,
            rack: String::new(),
            incarnation_id: incarnation.into(),
            listeners: Vec::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.error_code, 0, "{}", r.error_message);
    assert_eq!(r.heartbeat_interval_ms, 100);
    assert_eq!(r.session_timeout_ms, SESSION_MS as i64);
    assert_eq!(r.cluster_id.len(), 22);
    r.broker_epoch
}

/// Heartbeats every 100 ms until the returned sender is dropped.
fn heartbeats(mut c: ControllerClient<Channel>, node: i32, epoch: i64) -> oneshot::Sender<()> {
    let (tx, mut rx) = oneshot::channel::<()>();
    tokio::spawn(async move {
        loop {
            let r = c
                .heartbeat(proto::HeartbeatRequest {
                    node_id: node,
                    broker_epoch: epoch,
                    metadata_version: 0,
                    partition_sizes: vec![],
                })
                .await;
            if let Ok(r) = r {
                assert_eq!(r.into_inner().error_code, 0);
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = &mut rx => return,
            }
        }
    });
    tx
}

/// Reads images until `pred` holds, within 10 s.
async fn wait_for(
    stream: &mut tonic::Streaming<proto::ClusterMetadata>,
    pred: impl Fn(&proto::ClusterMetadata) -> bool,
) -> proto::ClusterMetadata {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let image = stream.message().await.unwrap().expect("stream open");
            if pred(&image) {
                return image;
            }
        }
    })
    .await
    .expect("condition reached within 10 s")
}

async fn create_topic(
    c: &mut ControllerClient<Channel>,
    name: &str,
    partitions: i32,
    rf: i32,
) -> proto::TopicResult {
    let r = c
        .create_topics(proto::CreateTopicsRequest {
            topics: vec![proto::CreatableTopic {
                name: name.into(),
                partitions,
                replication_factor: rf,
                ..Default::default()
            }],
            validate_only: false,
        })
        .await
        .unwrap()
        .into_inner();
    r.results.into_iter().next().unwrap()
}

#[tokio::test]
async fn failover_and_restart_from_the_same_directory() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let mut c = client(server.addr).await;

    let mut epochs = Vec::new();
    let mut beats = Vec::new();
    for node in 1..=3 {
        let epoch = register(&mut c, node, "first").await;
        epochs.push(epoch);
        beats.push(Some(heartbeats(c.clone(), node, epoch)));
    }

    let mut watch = c
        .watch_metadata(proto::WatchMetadataRequest {
            node_id: 1,
            broker_epoch: epochs[0],
            // Whole images every time, as nodes of earlier versions watch (the node's own
            // merging of increments is tested in strata-node's replication::image).
            incremental: false,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let first = wait_for(&mut watch, |_| true).await;
    assert_eq!(first.nodes.len(), 3);

    let created = create_topic(&mut c, "orders", 3, 3).await;
    assert_eq!(created.error_code, 0, "{}", created.error_message);
    let topic = created.topic.unwrap();
    assert_eq!(topic.partitions.len(), 3);
    assert!(topic.id().is_some());
    let mut leaders: Vec<i32> = topic.partitions.iter().map(|p| p.leader).collect();
    leaders.sort_unstable();
    assert_eq!(leaders, vec![1, 2, 3], "one leadership per node");

    let image = wait_for(&mut watch, |m| m.topic("orders").is_some()).await;
    let p0 = image.topic("orders").unwrap().partitions[0].clone();
    let victim = p0.leader;

    // The victim's heartbeats stop; its leadership moves with a higher epoch.
    beats[(victim - 1) as usize] = None;
    let image = wait_for(&mut watch, |m| {
        m.topic("orders").unwrap().partitions[0].leader != victim
    })
    .await;
    let moved = &image.topic("orders").unwrap().partitions[0];
    assert_ne!(moved.leader, -1);
    assert!(moved.leader_epoch > p0.leader_epoch);
    assert!(moved.partition_epoch > p0.partition_epoch);
    assert!(!moved.isr.contains(&victim));
    assert!(image.nodes.iter().any(|n| n.node_id == victim && !n.alive));

    // The dead node's epoch is still its own, but it cannot act as leader any more.
    let r = c
        .alter_partition(proto::AlterPartitionRequest {
            node_id: victim,
            broker_epoch: epochs[(victim - 1) as usize],
            topic: "orders".into(),
            partition: 0,
            leader_epoch: p0.leader_epoch,
            partition_epoch: p0.partition_epoch,
            new_isr: vec![victim],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.error_code, codes::NOT_LEADER_OR_FOLLOWER);
    assert_eq!(
        r.partition.unwrap().leader,
        moved.leader,
        "current state returned"
    );

    // Restart the controller from the same directory: identical partition state, and nodes
    // reconnecting in time move nothing.
    drop(watch);
    let mut fresh = c
        .watch_metadata(proto::WatchMetadataRequest::default())
        .await
        .unwrap()
        .into_inner();
    // A new watch starts with the current image.
    let before = wait_for(&mut fresh, |_| true).await;
    assert!(before.version >= image.version);
    drop(fresh);
    server.shutdown().await;
    let server = start(dir.path()).await;
    let mut c = client(server.addr).await;
    for node in (1..=3).filter(|&n| n != victim) {
        let epoch = register(&mut c, node, "first").await;
        assert_eq!(
            epoch,
            epochs[(node - 1) as usize],
            "a reconnect keeps its epoch"
        );
        beats[(node - 1) as usize] = Some(heartbeats(c.clone(), node, epoch));
    }
    let mut watch = c
        .watch_metadata(proto::WatchMetadataRequest::default())
        .await
        .unwrap()
        .into_inner();
    let after = wait_for(&mut watch, |_| true).await;
    assert_eq!(after.cluster_id, before.cluster_id);
    assert_eq!(
        after.topics, before.topics,
        "identical partition state after restart"
    );
    assert!(after.version >= before.version);
    // The victim, still silent, is declared dead again one session after the restart.
    let dead = wait_for(&mut watch, |m| {
        m.nodes.iter().any(|n| n.node_id == victim && !n.alive)
    })
    .await;
    assert_eq!(
        dead.topics, before.topics,
        "it led nothing, so nothing moves"
    );
    drop(beats);
    server.shutdown().await;
}

#[tokio::test]
async fn admin_rpcs_answer_with_kafka_codes() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let mut c = client(server.addr).await;
    let e1 = register(&mut c, 1, "x").await;

    let r = create_topic(&mut c, "bad name", 1, 1).await;
    assert_eq!(r.error_code, codes::INVALID_TOPIC_EXCEPTION);
    let r = create_topic(&mut c, "t", 1, 3).await;
    assert_eq!(r.error_code, codes::INVALID_REPLICATION_FACTOR);
    assert!(
        r.error_message.contains("alive nodes (1)"),
        "{}",
        r.error_message
    );
    let r = create_topic(&mut c, "t", -1, -1).await;
    assert_eq!(r.error_code, 0);
    let r = create_topic(&mut c, "t", -1, -1).await;
    assert_eq!(r.error_code, codes::TOPIC_ALREADY_EXISTS);

    let r = c
        .create_partitions(proto::CreatePartitionsRequest {
            topics: vec![proto::PartitionCount {
                topic: "t".into(),
                count: 1,
            }],
            validate_only: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.results[0].error_code, codes::INVALID_PARTITIONS);

    let r = c
        .alter_topic_configs(proto::AlterTopicConfigsRequest {
            topic: "t".into(),
            configs: [("retention.ms".to_string(), "5".to_string())].into(),
            validate_only: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.error_code, 0);

    let ids = c
        .allocate_producer_ids(proto::AllocateProducerIdsRequest {
            node_id: 1,
            broker_epoch: e1,
            at_least: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((ids.error_code, ids.producer_id_len), (0, 1000));
    let stale = c
        .allocate_producer_ids(proto::AllocateProducerIdsRequest {
            node_id: 1,
            broker_epoch: e1 + 1,
            at_least: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stale.error_code, codes::STALE_BROKER_EPOCH);
    let hb = c
        .heartbeat(proto::HeartbeatRequest {
            node_id: 7,
            broker_epoch: 1,
            metadata_version: 0,
            partition_sizes: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(hb.error_code, codes::STALE_BROKER_EPOCH);

    let r = c
        .delete_topics(proto::DeleteTopicsRequest {
            names: vec!["t".into(), "nope".into()],
        })
        .await
        .unwrap()
        .into_inner();
    let got: Vec<i32> = r.results.iter().map(|r| r.error_code).collect();
    assert_eq!(got, vec![0, codes::UNKNOWN_TOPIC_OR_PARTITION]);
    server.shutdown().await;

    // Producer id blocks never repeat across a restart: each allocation was saved first.
    let server = start(dir.path()).await;
    let mut c = client(server.addr).await;
    let again = c
        .allocate_producer_ids(proto::AllocateProducerIdsRequest {
            node_id: 1,
            broker_epoch: e1,
            at_least: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.producer_id_start, ids.producer_id_start + 1000);
    server.shutdown().await;
}

// ---- Kafka admin APIs for operations: leader elections and reassignments ----

#[tokio::test]
async fn reassignments_over_grpc_survive_a_controller_restart() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(dir.path()).await;
    let mut c = client(running.addr).await;
    let mut epochs = Vec::new();
    for n in 1..=3 {
        epochs.push((n, register(&mut c, n, "a").await));
    }
    let created = c
        .create_topics(proto::CreateTopicsRequest {
            topics: vec![proto::CreatableTopic {
                name: "t".into(),
                partitions: -1,
                replication_factor: -1,
                assignments: vec![proto::ReplicaList {
                    replicas: vec![1, 2],
                }],
                ..Default::default()
            }],
            validate_only: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.results[0].error_code, 0);

    let mv = |replicas: Vec<i32>, cancel: bool| proto::AlterPartitionReassignmentsRequest {
        partitions: vec![proto::PartitionReassignment {
            topic: "t".into(),
            partition: 0,
            cancel,
            replicas,
        }],
        keep_replication_factor: false,
    };
    // Targets must be alive: a slow machine must not let the session expire first.
    for &(node_id, broker_epoch) in &epochs {
        c.heartbeat(proto::HeartbeatRequest {
            node_id,
            broker_epoch,
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let bad = c
        .alter_partition_reassignments(mv(vec![3, 9], false))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(bad.results[0].error_code, codes::INVALID_REPLICA_ASSIGNMENT);
    assert!(bad.results[0].error_message.contains("broker 9"));
    let ok = c
        .alter_partition_reassignments(mv(vec![3, 2], false))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        ok.results[0].error_code, 0,
        "{}",
        ok.results[0].error_message
    );
    assert!(ok.metadata_version > created.metadata_version);

    let listed = |c: &mut ControllerClient<Channel>| {
        let mut c = c.clone();
        async move {
            c.list_partition_reassignments(proto::ListPartitionReassignmentsRequest {
                all_partitions: true,
                topic_partitions: vec![],
            })
            .await
            .unwrap()
            .into_inner()
            .reassignments
        }
    };
    let want = vec![proto::OngoingReassignment {
        topic: "t".into(),
        partition: 0,
        replicas: vec![3, 2, 1],
        adding_replicas: vec![3],
        removing_replicas: vec![1],
    }];
    assert_eq!(listed(&mut c).await, want);

    // The original replicas are part of the stored state: a restarted controller can still
    // list and cancel the move.
    running.shutdown().await;
    let running = start(dir.path()).await;
    let mut c = client(running.addr).await;
    assert_eq!(listed(&mut c).await, want);
    let cancelled = c
        .alter_partition_reassignments(mv(vec![], true))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled.results[0].error_code, 0);
    assert!(listed(&mut c).await.is_empty());
    let again = c
        .alter_partition_reassignments(mv(vec![], true))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        again.results[0].error_code,
        codes::NO_REASSIGNMENT_IN_PROGRESS
    );

    // Elections: every partition is led by its preferred replica, so nothing is reported;
    // a named one answers ELECTION_NOT_NEEDED, an unknown election type is refused.
    let elect = |election_type: i32, all: bool| proto::ElectLeadersRequest {
        election_type,
        all_partitions: all,
        topic_partitions: vec![proto::TopicPartitions {
            topic: "t".into(),
            partitions: vec![0],
        }],
    };
    let all = c.elect_leaders(elect(0, true)).await.unwrap().into_inner();
    assert!(all.results.is_empty(), "{:?}", all.results);
    let named = c.elect_leaders(elect(0, false)).await.unwrap().into_inner();
    assert_eq!(named.results[0].error_code, codes::ELECTION_NOT_NEEDED);
    let status = c.elect_leaders(elect(5, false)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    running.shutdown().await;
}

#[tokio::test]
async fn a_watch_that_knows_a_recent_version_starts_with_the_increment() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(dir.path()).await;
    let mut c = client(running.addr).await;
    let epoch = register(&mut c, 1, "first").await;
    let _beat = heartbeats(c.clone(), 1, epoch);
    for name in ["a", "b"] {
        let r = create_topic(&mut c, name, 50, 1).await;
        assert_eq!(r.error_code, 0, "{}", r.error_message);
    }
    let watcher = c.clone();
    let watch = |known_version: u64, known_cluster_id: String| {
        let mut c = watcher.clone();
        async move {
            c.watch_metadata(proto::WatchMetadataRequest {
                node_id: 1,
                broker_epoch: epoch,
                incremental: true,
                known_version,
                known_cluster_id,
            })
            .await
            .unwrap()
            .into_inner()
        }
    };
    let mut first = watch(0, String::new()).await;
    let held = wait_for(&mut first, |m| m.topic("b").is_some()).await;
    assert!(!held.incremental);
    drop(first);

    // Changed while the node was away: one new topic.
    let r = create_topic(&mut c, "c", 3, 1).await;
    assert_eq!(r.error_code, 0, "{}", r.error_message);
    let mut again = watch(held.version, held.cluster_id.clone()).await;
    let next = wait_for(&mut again, |_| true).await;
    assert!(
        next.incremental,
        "an increment from the version the node holds"
    );
    assert_eq!(next.base_version, held.version);
    let names: Vec<_> = next.topics.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["c"], "only what changed since");

    // Another cluster's version, or one this controller does not hold (too old, or from a
    // state it never had), starts whole.
    let mut other = watch(held.version, "another-cluster".into()).await;
    assert!(!wait_for(&mut other, |_| true).await.incremental);
    let mut unknown = watch(held.version + 1000, held.cluster_id.clone()).await;
    let whole = wait_for(&mut unknown, |_| true).await;
    assert!(!whole.incremental && whole.topics.len() >= 3);
    running.shutdown().await;
}
