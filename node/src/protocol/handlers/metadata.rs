//! Metadata and DescribeCluster: this node leads every partition.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::*;

use super::{s, topic_name};
use crate::broker::{Broker, TopicView};
use crate::error::Error;

fn topic_entry(b: &Broker, t: &TopicView) -> MetadataResponseTopic {
    let me = BrokerId(b.config.node_id);
    build!(MetadataResponseTopic {
        error_code: 0,
        name: Some(topic_name(&t.name)),
        topic_id: t.meta.id,
        is_internal: t.meta.internal,
        partitions: (0..t.meta.partitions)
            .map(|p| build!(MetadataResponsePartition {
                error_code: 0,
                partition_index: p,
                leader_id: me,
                leader_epoch: t.meta.leader_epoch,
                replica_nodes: vec![me],
                isr_nodes: vec![me],
                offline_replicas: vec![]
            }))
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

/// Answer Metadata, auto-creating requested topics where allowed.
pub fn handle(b: &Arc<Broker>, v: i16, req: MetadataRequest) -> MetadataResponse {
    // v0 treats an empty list as "all topics"; v1+ uses null for that.
    let all = match &req.topics {
        None => true,
        Some(t) => t.is_empty() && v == 0,
    };
    let allow_auto = v < 4 || req.allow_auto_topic_creation;
    let topics = if all {
        b.topics().iter().map(|t| topic_entry(b, t)).collect()
    } else {
        req.topics
            .unwrap_or_default()
            .into_iter()
            .map(|rt| {
                let by_name = rt
                    .name
                    .as_ref()
                    .map(|n| n.0.to_string())
                    .filter(|n| !n.is_empty());
                match by_name {
                    Some(name) => {
                        let found = if allow_auto {
                            b.get_or_auto_create(&name)
                        } else {
                            Ok(b.topic(&name))
                        };
                        match found {
                            Ok(Some(t)) => topic_entry(b, &t),
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
                    None => match b.topic_by_id(rt.topic_id) {
                        Some(t) => topic_entry(b, &t),
                        None => {
                            error_entry(None, rt.topic_id, ResponseError::UnknownTopicId.code())
                        }
                    },
                }
            })
            .collect()
    };
    build!(MetadataResponse {
        brokers: vec![build!(MetadataResponseBroker {
            node_id: BrokerId(b.config.node_id),
            host: s(b.config.advertised_host.clone()),
            port: b.config.advertised_port,
            rack: None
        })],
        cluster_id: Some(s(b.cluster_id())),
        controller_id: BrokerId(b.config.node_id),
        topics: topics,
        cluster_authorized_operations: i32::MIN
    })
}

/// Answer DescribeCluster.
pub fn describe_cluster(
    b: &Arc<Broker>,
    _v: i16,
    _req: DescribeClusterRequest,
) -> DescribeClusterResponse {
    build!(DescribeClusterResponse {
        cluster_id: s(b.cluster_id()),
        controller_id: BrokerId(b.config.node_id),
        endpoint_type: 1,
        brokers: vec![build!(DescribeClusterBroker {
            broker_id: BrokerId(b.config.node_id),
            host: s(b.config.advertised_host.clone()),
            port: b.config.advertised_port,
            rack: None
        })],
        cluster_authorized_operations: i32::MIN
    })
}
