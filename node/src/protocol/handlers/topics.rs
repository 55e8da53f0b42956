//! CreateTopics, DeleteTopics and CreatePartitions.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::*;

use super::{s, topic_name};
use crate::broker::TopicView;
use crate::error::Error;
use crate::log::config::{LogConfig, TOPIC_CONFIGS};
use crate::node::Node;

fn effective_configs(b: &Node, t: &TopicView) -> Vec<CreatableTopicConfigs> {
    TOPIC_CONFIGS
        .iter()
        .map(|d| {
            let (value, source) =
                LogConfig::describe(d.name, &t.meta.configs, b.broker.topic_defaults());
            build!(CreatableTopicConfigs {
                name: s(d.name),
                value: Some(s(value)),
                read_only: false,
                config_source: source.code(),
                is_sensitive: false
            })
        })
        .collect()
}

/// Answer CreateTopics.
pub async fn create_topics(
    b: &Arc<Node>,
    v: i16,
    req: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let mut seen = HashSet::new();
    let dupes: HashSet<String> = req
        .topics
        .iter()
        .filter(|t| !seen.insert(t.name.0.to_string()))
        .map(|t| t.name.0.to_string())
        .collect();
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        {
            let name = t.name.0.to_string();
            let mut r = build!(CreatableTopicResult {
                name: t.name.clone(),
                num_partitions: -1,
                replication_factor: -1
            });
            let res = async {
                if dupes.contains(&name) {
                    return Err((
                        ResponseError::InvalidRequest.code(),
                        format!("topic {name} appears twice in the request"),
                    ));
                }
                let configs: BTreeMap<String, String> = t
                    .configs
                    .iter()
                    .filter_map(|c| {
                        c.value
                            .as_ref()
                            .map(|v| (c.name.to_string(), v.to_string()))
                    })
                    .collect();
                if t.assignments.is_empty() {
                    return b
                        .broker
                        .create_topic(
                            &name,
                            t.num_partitions,
                            t.replication_factor,
                            configs,
                            req.validate_only,
                        )
                        .await
                        .map_err(|e: Error| (e.code(), e.to_string()));
                }
                if t.num_partitions != -1 || t.replication_factor != -1 {
                    return Err((
                        ResponseError::InvalidRequest.code(),
                        "both replica assignments and partitions/replication factor were given"
                            .into(),
                    ));
                }
                // Kafka's order: the assignment of partition i is the entry whose
                // partition_index is i.
                let mut listed: Vec<_> = t
                    .assignments
                    .iter()
                    .map(|a| {
                        (
                            a.partition_index,
                            a.broker_ids.iter().map(|id| id.0).collect(),
                        )
                    })
                    .collect();
                listed.sort_by_key(|(i, _)| *i);
                if listed.iter().enumerate().any(|(i, (p, _))| *p != i as i32) {
                    return Err((
                        ResponseError::InvalidReplicaAssignment.code(),
                        "the assignment's partition indexes are not 0, 1, 2, ...".into(),
                    ));
                }
                let assignments = listed.into_iter().map(|(_, r)| r).collect();
                b.broker
                    .create_topic_assigned(&name, assignments, configs, req.validate_only)
                    .await
                    .map_err(|e: Error| (e.code(), e.to_string()))
            }
            .await;
            match res {
                Ok(view) => {
                    r.topic_id = if req.validate_only {
                        uuid::Uuid::nil()
                    } else {
                        view.meta.id
                    };
                    r.num_partitions = view.meta.partitions;
                    r.replication_factor = view.meta.replication_factor;
                    if v >= 5 {
                        r.configs = Some(effective_configs(b, &view));
                    }
                }
                Err((code, msg)) => {
                    r.error_code = code;
                    r.error_message = Some(s(msg));
                }
            }
            topics.push(r);
        }
    }
    build!(CreateTopicsResponse { topics: topics })
}

/// Answer DeleteTopics (by name, or by id from v6).
pub async fn delete_topics(
    b: &Arc<Node>,
    v: i16,
    req: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    let targets: Vec<(Option<String>, uuid::Uuid)> = if v >= 6 {
        req.topics
            .iter()
            .map(|t| {
                (
                    t.name
                        .as_ref()
                        .map(|n| n.0.to_string())
                        .filter(|n| !n.is_empty()),
                    t.topic_id,
                )
            })
            .collect()
    } else {
        req.topic_names
            .iter()
            .map(|n| (Some(n.0.to_string()), uuid::Uuid::nil()))
            .collect()
    };
    let mut responses = Vec::with_capacity(targets.len());
    for (name, id) in targets {
        {
            let resolved = match &name {
                Some(n) => b.broker.topic(n),
                None => b.broker.topic_by_id(id),
            };
            let mut r = build!(DeletableTopicResult {
                name: name.as_deref().map(topic_name),
                topic_id: id
            });
            match resolved {
                None => {
                    r.error_code = if name.is_none() {
                        ResponseError::UnknownTopicId.code()
                    } else {
                        ResponseError::UnknownTopicOrPartition.code()
                    };
                }
                Some(view) => {
                    r.name = Some(topic_name(&view.name));
                    r.topic_id = view.meta.id;
                    if let Err(e) = b.broker.delete_topic(&view.name).await {
                        r.error_code = e.code();
                        r.error_message = Some(s(e.to_string()));
                    }
                }
            }
            responses.push(r);
        }
    }
    build!(DeleteTopicsResponse {
        responses: responses
    })
}

/// Answer CreatePartitions.
pub async fn create_partitions(
    b: &Arc<Node>,
    _v: i16,
    req: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let me = b.config.node_id;
    let mut results = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        {
            let name = t.name.0.to_string();
            let mut r = build!(CreatePartitionsTopicResult {
                name: t.name.clone()
            });
            let bad_assignment = t
                .assignments
                .as_ref()
                .is_some_and(|a| a.iter().any(|x| x.broker_ids.iter().any(|id| id.0 != me)));
            let res = if bad_assignment {
                Err((
                    ResponseError::InvalidReplicaAssignment.code(),
                    format!("assignment names brokers other than node {me}"),
                ))
            } else {
                b.broker
                    .create_partitions(&name, t.count, req.validate_only)
                    .await
                    .map_err(|e| (e.code(), e.to_string()))
            };
            if let Err((code, msg)) = res {
                r.error_code = code;
                r.error_message = Some(s(msg));
            }
            results.push(r);
        }
    }
    build!(CreatePartitionsResponse { results: results })
}
