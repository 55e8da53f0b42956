//! Metadata and DescribeCluster: this node leads every partition.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::*;

use super::{s, topic_name};
use crate::broker::TopicView;
use crate::error::Error;
use crate::node::Node;
use crate::security::Caller;
use strata_security::acl::{Operation, ResourceType};

fn topic_entry(b: &Node, t: &TopicView) -> MetadataResponseTopic {
    let view = b.cluster.view();
    build!(MetadataResponseTopic {
        error_code: 0,
        name: Some(topic_name(&t.name)),
        topic_id: t.meta.id,
        is_internal: t.meta.internal,
        partitions: (0..t.meta.partitions)
            .map(|p| match view.assignment(&t.name, p) {
                Some(a) => build!(MetadataResponsePartition {
                    error_code: if a.leader < 0 {
                        ResponseError::LeaderNotAvailable.code()
                    } else {
                        0
                    },
                    partition_index: p,
                    leader_id: BrokerId(a.leader),
                    leader_epoch: a.leader_epoch,
                    replica_nodes: a.replicas.iter().map(|r| BrokerId(*r)).collect(),
                    isr_nodes: a.isr.iter().map(|r| BrokerId(*r)).collect(),
                    offline_replicas: a
                        .replicas
                        .iter()
                        .filter(|r| !view.nodes.get(r).is_some_and(|n| n.alive))
                        .map(|r| BrokerId(*r))
                        .collect()
                }),
                None => build!(MetadataResponsePartition {
                    error_code: ResponseError::LeaderNotAvailable.code(),
                    partition_index: p,
                    leader_id: BrokerId(-1),
                    leader_epoch: -1
                }),
            })
            .collect(),
        topic_authorized_operations: i32::MIN
    })
}

fn error_entry(name: Option<TopicName>, id: uuid::Uuid, code: i16) -> MetadataResponseTopic {
    build!(MetadataResponseTopic {
        error_code: code,
        name: name,
        topic_id: id,
        topic_authorized_operations: i32::MIN
    })
}

/// Answer Metadata, auto-creating requested topics where allowed. With an authorizer, a
/// listing shows only the topics the caller may describe, a named topic it may not is
/// TOPIC_AUTHORIZATION_FAILED, and auto-creation needs Create (on the cluster or the topic).
pub async fn handle(b: &Arc<Node>, cx: &Caller, v: i16, req: MetadataRequest) -> MetadataResponse {
    let may = |op: Operation, name: &str| b.security.authorize(cx, op, ResourceType::Topic, name);
    // v0 treats an empty list as "all topics"; v1+ uses null for that.
    let all = match &req.topics {
        None => true,
        Some(t) => t.is_empty() && v == 0,
    };
    let allow_auto = v < 4 || req.allow_auto_topic_creation;
    let topics = if all {
        b.broker
            .topics()
            .iter()
            .filter(|t| may(Operation::Describe, &t.name))
            .map(|t| topic_entry(b, t))
            .collect()
    } else {
        let mut found_topics = Vec::new();
        for rt in req.topics.unwrap_or_default() {
            let entry = {
                let by_name = rt
                    .name
                    .as_ref()
                    .map(|n| n.0.to_string())
                    .filter(|n| !n.is_empty());
                match by_name {
                    Some(name) if !may(Operation::Describe, &name) => error_entry(
                        rt.name,
                        uuid::Uuid::nil(),
                        ResponseError::TopicAuthorizationFailed.code(),
                    ),
                    Some(name) => {
                        let may_create = allow_auto
                            && (b.security.authorize(
                                cx,
                                Operation::Create,
                                ResourceType::Cluster,
                                super::security::CLUSTER,
                            ) || may(Operation::Create, &name));
                        let found = if may_create {
                            b.broker.get_or_auto_create(&name).await
                        } else {
                            Ok(b.broker.topic(&name))
                        };
                        match found {
                            Ok(Some(t)) => topic_entry(b, &t),
                            // Kafka: a topic that would be auto-created but may not be.
                            Ok(None) if allow_auto && !may_create => error_entry(
                                rt.name,
                                uuid::Uuid::nil(),
                                ResponseError::TopicAuthorizationFailed.code(),
                            ),
                            Ok(None) => error_entry(
                                rt.name,
                                uuid::Uuid::nil(),
                                ResponseError::UnknownTopicOrPartition.code(),
                            ),
                            Err(e @ Error::InvalidTopic(..)) => {
                                error_entry(rt.name, uuid::Uuid::nil(), e.code())
                            }
                            Err(e) => {
                                tracing::warn!(topic = %name, error = %e, "auto-create failed");
                                error_entry(
                                    rt.name,
                                    uuid::Uuid::nil(),
                                    ResponseError::LeaderNotAvailable.code(),
                                )
                            }
                        }
                    }
                    None => match b.broker.topic_by_id(rt.topic_id) {
                        Some(t) if !may(Operation::Describe, &t.name) => error_entry(
                            None,
                            rt.topic_id,
                            ResponseError::TopicAuthorizationFailed.code(),
                        ),
                        Some(t) => topic_entry(b, &t),
                        None => {
                            error_entry(None, rt.topic_id, ResponseError::UnknownTopicId.code())
                        }
                    },
                }
            };
            found_topics.push(entry);
        }
        found_topics
    };
    let (brokers, controller_id) = brokers(b, &cx.listener);
    build!(MetadataResponse {
        brokers: brokers
            .into_iter()
            .map(|(id, host, port, rack)| build!(MetadataResponseBroker {
                node_id: BrokerId(id),
                host: s(host),
                port: port,
                rack: rack.map(s)
            }))
            .collect(),
        cluster_id: Some(s(b.broker.cluster_id())),
        controller_id: BrokerId(controller_id),
        topics: topics,
        cluster_authorized_operations: i32::MIN
    })
}

/// The brokers clients are told about (id, host, port, rack) and the controller id they
/// send admin requests to: the cluster's live nodes (a standalone node: itself).
/// A broker as Metadata and DescribeCluster list it: (id, host, port, rack).
type BrokerAddr = (i32, String, i32, Option<String>);

/// The nodes as clients of `listener` reach them (nodes without that listener are left out,
/// as Kafka does).
fn brokers(b: &Node, listener: &str) -> (Vec<BrokerAddr>, i32) {
    let view = b.cluster.view();
    let list = view
        .alive_nodes()
        .filter_map(|n| {
            n.endpoint(listener)
                .map(|(host, port)| (n.id, host.to_string(), port, n.rack.clone()))
        })
        .collect();
    (list, view.controller_id)
}

/// Answer DescribeCluster.
pub fn describe_cluster(
    b: &Arc<Node>,
    cx: &Caller,
    _v: i16,
    _req: DescribeClusterRequest,
) -> DescribeClusterResponse {
    let (brokers, controller_id) = brokers(b, &cx.listener);
    build!(DescribeClusterResponse {
        cluster_id: s(b.broker.cluster_id()),
        controller_id: BrokerId(controller_id),
        endpoint_type: 1,
        brokers: brokers
            .into_iter()
            .map(|(id, host, port, rack)| build!(DescribeClusterBroker {
                broker_id: BrokerId(id),
                host: s(host),
                port: port,
                rack: rack.map(s)
            }))
            .collect(),
        cluster_authorized_operations: i32::MIN
    })
}
