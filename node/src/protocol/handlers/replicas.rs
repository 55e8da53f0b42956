//! ElectLeaders, AlterPartitionReassignments and ListPartitionReassignments: who leads a
//! partition and where its replicas live (`kafka-leader-election.sh`,
//! `kafka-reassign-partitions.sh`).
//!
//! In a cluster these are the controller's decisions, so the node forwards them and answers
//! once its own metadata shows the result. A standalone node is the only replica and leader
//! of every partition: elections are never needed, the only valid assignment is itself, and
//! nothing is ever moving.
//!
//! Electing and reassigning need Alter on the cluster, listing reassignments Describe;
//! refused requests are CLUSTER_AUTHORIZATION_FAILED, on every named partition too.

use std::sync::Arc;

use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::*;

use kafka_protocol::error::ResponseError;
use strata_security::acl::Operation;

use super::{s, topic_name};
use crate::node::Node;
use crate::replication::cluster::PartitionAnswer;
use crate::security::Caller;

const CLUSTER_AUTHORIZATION_FAILED: ResponseError = ResponseError::ClusterAuthorizationFailed;

/// CLUSTER_AUTHORIZATION_FAILED for every named (topic, partition).
fn all_refused(partitions: impl IntoIterator<Item = (String, i32)>) -> Vec<PartitionAnswer> {
    let e = CLUSTER_AUTHORIZATION_FAILED;
    partitions
        .into_iter()
        .map(|(t, p)| (t, p, e.code(), e.to_string()))
        .collect()
}

/// One topic's per-partition answers: (partition, error code, message when refused).
type TopicAnswers = (String, Vec<(i32, i16, Option<String>)>);

/// Per-partition answers grouped by topic, topics in order of first appearance.
fn by_topic(answers: Vec<PartitionAnswer>) -> Vec<TopicAnswers> {
    let mut out: Vec<TopicAnswers> = Vec::new();
    for (topic, partition, code, message) in answers {
        let message = (code != 0 && !message.is_empty()).then_some(message);
        match out.iter_mut().find(|(t, _)| *t == topic) {
            Some((_, parts)) => parts.push((partition, code, message)),
            None => out.push((topic, vec![(partition, code, message)])),
        }
    }
    out
}

/// The same error for every named partition (the controller could not be asked).
fn all_failed(named: &[(String, Vec<i32>)], e: &crate::error::Error) -> Vec<PartitionAnswer> {
    named
        .iter()
        .flat_map(|(t, ps)| {
            ps.iter()
                .map(move |&p| (t.clone(), p, e.code(), e.to_string()))
        })
        .collect()
}

/// Answer ElectLeaders.
pub async fn elect_leaders(
    b: &Arc<Node>,
    cx: &Caller,
    v: i16,
    req: ElectLeadersRequest,
) -> ElectLeadersResponse {
    // v0 has no election type: preferred only.
    let election_type = if v >= 1 { req.election_type } else { 0 };
    let named: Option<Vec<(String, Vec<i32>)>> = req.topic_partitions.map(|tps| {
        tps.into_iter()
            .map(|t| (t.topic.0.to_string(), t.partitions))
            .collect()
    });
    let mut resp = ElectLeadersResponse::default();
    let answers = if !super::authz::on_cluster(b, cx, Operation::Alter) {
        if v >= 1 {
            resp.error_code = CLUSTER_AUTHORIZATION_FAILED.code();
        }
        all_refused(
            named
                .iter()
                .flatten()
                .flat_map(|(t, ps)| ps.iter().map(move |&p| (t.clone(), p))),
        )
    } else if !(0..=1).contains(&election_type) {
        let e =
            crate::error::Error::InvalidRequest(format!("unknown election type {election_type}"));
        if v >= 1 {
            resp.error_code = e.code();
        }
        all_failed(named.as_deref().unwrap_or_default(), &e)
    } else {
        match b.cluster.elect_leaders(election_type, named.clone()).await {
            Ok(answers) => answers,
            Err(e) => {
                tracing::warn!(error = %e, "ElectLeaders could not reach the controller");
                if v >= 1 {
                    resp.error_code = e.code();
                }
                all_failed(named.as_deref().unwrap_or_default(), &e)
            }
        }
    };
    resp.replica_election_results = by_topic(answers)
        .into_iter()
        .map(|(topic, parts)| {
            build!(ReplicaElectionResult {
                topic: topic_name(&topic),
                partition_result: parts
                    .into_iter()
                    .map(|(p, code, msg)| build!(PartitionResult {
                        partition_id: p,
                        error_code: code,
                        error_message: msg.map(s)
                    }))
                    .collect()
            })
        })
        .collect();
    resp
}

/// Answer AlterPartitionReassignments.
pub async fn alter_partition_reassignments(
    b: &Arc<Node>,
    cx: &Caller,
    v: i16,
    req: AlterPartitionReassignmentsRequest,
) -> AlterPartitionReassignmentsResponse {
    // v0 always allows the replication factor to change (the field defaults to true).
    let keep_rf = v >= 1 && !req.allow_replication_factor_change;
    let partitions: Vec<(String, i32, Option<Vec<i32>>)> = req
        .topics
        .into_iter()
        .flat_map(|t| {
            let name = t.name.0.to_string();
            t.partitions.into_iter().map(move |p| {
                (
                    name.clone(),
                    p.partition_index,
                    p.replicas.map(|r| r.into_iter().map(|id| id.0).collect()),
                )
            })
        })
        .collect();
    let mut resp = AlterPartitionReassignmentsResponse::default();
    if v >= 1 {
        resp.allow_replication_factor_change = !keep_rf;
    }
    let answers = if !super::authz::on_cluster(b, cx, Operation::Alter) {
        resp.error_code = CLUSTER_AUTHORIZATION_FAILED.code();
        resp.error_message = Some(s(CLUSTER_AUTHORIZATION_FAILED.to_string()));
        all_refused(partitions.into_iter().map(|(t, p, _)| (t, p)))
    } else {
        match b
            .cluster
            .alter_reassignments(partitions.clone(), keep_rf)
            .await
        {
            Ok(answers) => answers,
            Err(e) => {
                tracing::warn!(error = %e, "AlterPartitionReassignments could not reach the controller");
                resp.error_code = e.code();
                resp.error_message = Some(s(e.to_string()));
                partitions
                    .into_iter()
                    .map(|(t, p, _)| (t, p, e.code(), e.to_string()))
                    .collect()
            }
        }
    };
    resp.responses = by_topic(answers)
        .into_iter()
        .map(|(topic, parts)| {
            build!(ReassignableTopicResponse {
                name: topic_name(&topic),
                partitions: parts
                    .into_iter()
                    .map(|(p, code, msg)| build!(ReassignablePartitionResponse {
                        partition_index: p,
                        error_code: code,
                        error_message: msg.map(s)
                    }))
                    .collect()
            })
        })
        .collect();
    resp
}

/// Answer ListPartitionReassignments.
pub async fn list_partition_reassignments(
    b: &Arc<Node>,
    cx: &Caller,
    _v: i16,
    req: ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    let mut resp = ListPartitionReassignmentsResponse::default();
    if !super::authz::on_cluster(b, cx, Operation::Describe) {
        // Kafka's error response echoes the named partitions, without replicas.
        resp.error_code = CLUSTER_AUTHORIZATION_FAILED.code();
        resp.error_message = Some(s(CLUSTER_AUTHORIZATION_FAILED.to_string()));
        resp.topics = req
            .topics
            .unwrap_or_default()
            .into_iter()
            .map(|t| {
                build!(OngoingTopicReassignment {
                    partitions: t
                        .partition_indexes
                        .iter()
                        .map(|&p| build!(OngoingPartitionReassignment { partition_index: p }))
                        .collect(),
                    name: t.name
                })
            })
            .collect();
        return resp;
    }
    let link = &b.cluster;
    let named: Option<Vec<(String, Vec<i32>)>> = req.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes))
            .collect()
    });
    match link.list_reassignments(named).await {
        Ok(ongoing) => {
            let mut topics: Vec<OngoingTopicReassignment> = Vec::new();
            for o in ongoing {
                let part = build!(OngoingPartitionReassignment {
                    partition_index: o.partition,
                    replicas: o.replicas.into_iter().map(BrokerId).collect(),
                    adding_replicas: o.adding_replicas.into_iter().map(BrokerId).collect(),
                    removing_replicas: o.removing_replicas.into_iter().map(BrokerId).collect()
                });
                match topics.iter_mut().find(|t| t.name.0.as_str() == o.topic) {
                    Some(t) => t.partitions.push(part),
                    None => topics.push(build!(OngoingTopicReassignment {
                        name: topic_name(&o.topic),
                        partitions: vec![part]
                    })),
                }
            }
            resp.topics = topics;
        }
        Err(e) => {
            tracing::warn!(error = %e, "ListPartitionReassignments could not reach the controller");
            resp.error_code = e.code();
            resp.error_message = Some(s(e.to_string()));
        }
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NodeConfig;
    use kafka_protocol::error::ResponseError;

    async fn broker(dir: &std::path::Path) -> Arc<Node> {
        let b = Node::open_and_start(NodeConfig::for_tests(dir.to_path_buf()))
            .await
            .unwrap();
        b.broker
            .create_topic("t", 2, 1, Default::default(), false)
            .await
            .unwrap();
        b
    }

    fn codes(r: &ElectLeadersResponse) -> Vec<(String, i32, i16)> {
        r.replica_election_results
            .iter()
            .flat_map(|t| {
                t.partition_result
                    .iter()
                    .map(move |p| (t.topic.0.to_string(), p.partition_id, p.error_code))
            })
            .collect()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_standalone_node_never_needs_an_election() {
        let dir = tempfile::tempdir().unwrap();
        let b = broker(dir.path()).await;
        let mut req = ElectLeadersRequest::default();
        let mut tp = kafka_protocol::messages::elect_leaders_request::TopicPartitions::default();
        tp.topic = topic_name("t");
        tp.partitions = vec![0, 1, 2];
        let mut other = tp.clone();
        other.topic = topic_name("nope");
        other.partitions = vec![0];
        req.topic_partitions = Some(vec![tp, other]);
        let resp = elect_leaders(&b, &Caller::internal(), 2, req.clone()).await;
        let not_needed = ResponseError::ElectionNotNeeded.code();
        let unknown = ResponseError::UnknownTopicOrPartition.code();
        assert_eq!(
            codes(&resp),
            vec![
                ("t".into(), 0, not_needed),
                ("t".into(), 1, not_needed),
                ("t".into(), 2, unknown),
                ("nope".into(), 0, unknown),
            ]
        );
        // Every partition: none needed an election, so none is reported.
        req.topic_partitions = None;
        assert!(elect_leaders(&b, &Caller::internal(), 2, req.clone())
            .await
            .replica_election_results
            .is_empty());
        req.election_type = 7;
        assert_eq!(
            elect_leaders(&b, &Caller::internal(), 2, req)
                .await
                .error_code,
            ResponseError::InvalidRequest.code()
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_standalone_node_accepts_only_itself_as_replica() {
        use kafka_protocol::messages::alter_partition_reassignments_request::{
            ReassignablePartition, ReassignableTopic,
        };
        let dir = tempfile::tempdir().unwrap();
        let b = broker(dir.path()).await;
        let me = b.config.node_id;
        let mut topic = ReassignableTopic::default();
        topic.name = topic_name("t");
        for (p, replicas) in [
            (0, Some(vec![me])),
            (0, Some(vec![me + 1])),
            (0, Some(vec![me, me])),
            (0, Some(vec![])),
            (1, None),
            (5, Some(vec![me])),
        ] {
            let mut rp = ReassignablePartition::default();
            rp.partition_index = p;
            rp.replicas = replicas.map(|r| r.into_iter().map(BrokerId).collect());
            topic.partitions.push(rp);
        }
        let mut req = AlterPartitionReassignmentsRequest::default();
        req.topics = vec![topic];
        let resp = alter_partition_reassignments(&b, &Caller::internal(), 0, req).await;
        let got: Vec<i16> = resp.responses[0]
            .partitions
            .iter()
            .map(|p| p.error_code)
            .collect();
        let invalid = ResponseError::InvalidReplicaAssignment.code();
        assert_eq!(
            got,
            vec![
                0,
                invalid,
                invalid,
                invalid,
                ResponseError::NoReassignmentInProgress.code(),
                ResponseError::UnknownTopicOrPartition.code(),
            ]
        );
        let msg = resp.responses[0].partitions[1]
            .error_message
            .as_ref()
            .unwrap()
            .to_string();
        assert!(msg.contains("not registered"), "{msg}");
        let list = list_partition_reassignments(
            &b,
            &Caller::internal(),
            0,
            ListPartitionReassignmentsRequest::default(),
        )
        .await;
        assert!(list.topics.is_empty());
        assert_eq!(list.error_code, 0);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn operations_need_the_cluster() {
        use crate::protocol::handlers::authz::testing::{node, user};
        let dir = tempfile::tempdir().unwrap();
        let b = node(dir.path(), &[]).await;
        let bob = user("bob");
        let denied = ResponseError::ClusterAuthorizationFailed.code();
        let mut tp = kafka_protocol::messages::elect_leaders_request::TopicPartitions::default();
        tp.topic = topic_name("t");
        tp.partitions = vec![0, 1];
        let mut req = ElectLeadersRequest::default();
        req.topic_partitions = Some(vec![tp]);
        let resp = elect_leaders(&b, &bob, 2, req).await;
        assert_eq!(resp.error_code, denied);
        assert_eq!(
            codes(&resp),
            vec![("t".into(), 0, denied), ("t".into(), 1, denied)]
        );
        let resp = alter_partition_reassignments(
            &b,
            &bob,
            1,
            AlterPartitionReassignmentsRequest::default(),
        )
        .await;
        assert_eq!(resp.error_code, denied);
        let resp =
            list_partition_reassignments(&b, &bob, 0, ListPartitionReassignmentsRequest::default())
                .await;
        assert_eq!(resp.error_code, denied);
        let resp = super::super::log_dirs::describe_log_dirs(
            &b,
            &bob,
            4,
            DescribeLogDirsRequest::default(),
        );
        assert_eq!(resp.error_code, denied);
        assert!(resp.results.is_empty());
    }
}
