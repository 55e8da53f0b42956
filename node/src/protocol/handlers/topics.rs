//! CreateTopics, DeleteTopics and CreatePartitions, with the checks of Kafka's controller:
//! Create on the cluster or the topic (and DescribeConfigs on it to see its configs in the
//! answer), Delete on the cluster or the topic, Alter on the topic.

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
use crate::security::Caller;
use strata_security::acl::{Operation, ResourceType};

fn topic_allowed(b: &Node, cx: &Caller, op: Operation, topic: &str) -> bool {
    b.security.authorize(cx, op, ResourceType::Topic, topic)
}

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
    cx: &Caller,
    v: i16,
    req: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let cluster_create = super::authz::on_cluster(b, cx, Operation::Create);
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
                if !cluster_create && !topic_allowed(b, cx, Operation::Create, &name) {
                    return Err((
                        ResponseError::TopicAuthorizationFailed.code(),
                        "Authorization failed.".into(),
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
                    // Its settings only to a caller that may describe its configs.
                    if topic_allowed(b, cx, Operation::DescribeConfigs, &name) {
                        r.num_partitions = view.meta.partitions;
                        r.replication_factor = view.meta.replication_factor;
                        if v >= 5 {
                            r.configs = Some(effective_configs(b, &view));
                        }
                    } else {
                        r.topic_config_error_code = ResponseError::TopicAuthorizationFailed.code();
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

/// Answer DeleteTopics (by name, or by id from v6). A topic named by a caller that may not
/// describe it is refused before it is looked up; one given by id is named in the answer
/// only to a caller that may describe it.
pub async fn delete_topics(
    b: &Arc<Node>,
    cx: &Caller,
    v: i16,
    req: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    let cluster_delete = super::authz::on_cluster(b, cx, Operation::Delete);
    let may = |op: Operation, topic: &str| cluster_delete || topic_allowed(b, cx, op, topic);
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
            let mut r = build!(DeletableTopicResult {
                name: name.as_deref().map(topic_name),
                topic_id: id
            });
            if name
                .as_deref()
                .is_some_and(|n| !may(Operation::Describe, n))
            {
                r.error_code = ResponseError::TopicAuthorizationFailed.code();
                responses.push(r);
                continue;
            }
            let resolved = match &name {
                Some(n) => b.broker.topic(n),
                None => b.broker.topic_by_id(id),
            };
            match resolved {
                None => {
                    r.error_code = if name.is_none() {
                        ResponseError::UnknownTopicId.code()
                    } else {
                        ResponseError::UnknownTopicOrPartition.code()
                    };
                }
                Some(view) if !may(Operation::Delete, &view.name) => {
                    r.error_code = ResponseError::TopicAuthorizationFailed.code();
                    if may(Operation::Describe, &view.name) {
                        r.name = Some(topic_name(&view.name));
                    }
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

/// Answer CreatePartitions (Alter on each topic).
pub async fn create_partitions(
    b: &Arc<Node>,
    cx: &Caller,
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
            if !topic_allowed(b, cx, Operation::Alter, &name) {
                r.error_code = ResponseError::TopicAuthorizationFailed.code();
                results.push(r);
                continue;
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::handlers::authz::testing::{admin, allow, node, user};
    use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    use kafka_protocol::messages::delete_topics_request::DeleteTopicState;

    const DENIED: i16 = ResponseError::TopicAuthorizationFailed.code();

    fn create(names: &[&str]) -> CreateTopicsRequest {
        build!(CreateTopicsRequest {
            topics: names
                .iter()
                .map(|n| build!(CreatableTopic {
                    name: topic_name(n),
                    num_partitions: 1,
                    replication_factor: 1
                }))
                .collect()
        })
    }

    fn delete(targets: &[(Option<&str>, uuid::Uuid)]) -> DeleteTopicsRequest {
        build!(DeleteTopicsRequest {
            topics: targets
                .iter()
                .map(|(n, id)| build!(DeleteTopicState {
                    name: n.map(topic_name),
                    topic_id: *id
                }))
                .collect()
        })
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn topic_admin_needs_create_delete_and_alter() {
        let dir = tempfile::tempdir().unwrap();
        let acls: Vec<_> = [Operation::Create, Operation::Delete, Operation::Alter]
            .into_iter()
            .map(|op| allow("alice", op, ResourceType::Topic, "mine"))
            .chain([allow(
                "bob",
                Operation::Describe,
                ResourceType::Topic,
                "seen",
            )])
            .collect();
        let b = node(dir.path(), &acls).await;
        let alice = user("alice");

        // Create on the topic suffices; without DescribeConfigs its settings stay hidden.
        let resp = create_topics(&b, &alice, 7, create(&["mine", "theirs"])).await;
        let mine = &resp.topics[0];
        assert_eq!((mine.error_code, mine.num_partitions), (0, -1));
        assert_eq!(mine.topic_config_error_code, DENIED);
        assert!(mine.configs.as_ref().is_none_or(|c| c.is_empty()));
        assert_eq!(resp.topics[1].error_code, DENIED);
        assert!(b.broker.topic("mine").is_some() && b.broker.topic("theirs").is_none());
        // Create on the cluster covers every topic, and the super user sees the settings.
        let resp = create_topics(&b, &admin(), 7, create(&["seen", "other"])).await;
        assert!(resp
            .topics
            .iter()
            .all(|t| t.error_code == 0 && t.num_partitions == 1));

        // CreatePartitions: Alter on the topic.
        let grow = |n: &str| {
            build!(CreatePartitionsTopic {
                name: topic_name(n),
                count: 2
            })
        };
        let req = build!(CreatePartitionsRequest {
            topics: vec![grow("mine"), grow("other")]
        });
        let codes: Vec<i16> = create_partitions(&b, &alice, 1, req)
            .await
            .results
            .iter()
            .map(|r| r.error_code)
            .collect();
        assert_eq!(codes, vec![0, DENIED]);

        // DeleteTopics: a topic given by id is named only to a caller that may describe it;
        // a named topic the caller may not describe is refused whether or not it exists.
        let id = |n: &str| b.broker.topic(n).unwrap().meta.id;
        let req = delete(&[
            (None, id("other")),
            (None, id("seen")),
            (Some("ghost"), uuid::Uuid::nil()),
        ]);
        let resp = delete_topics(&b, &user("bob"), 6, req).await;
        let got: Vec<(Option<String>, i16)> = resp
            .responses
            .iter()
            .map(|r| (r.name.as_ref().map(|n| n.0.to_string()), r.error_code))
            .collect();
        assert_eq!(
            got,
            vec![
                (None, DENIED),
                (Some("seen".into()), DENIED),
                (Some("ghost".into()), DENIED)
            ]
        );
        let resp = delete_topics(&b, &alice, 6, delete(&[(Some("mine"), uuid::Uuid::nil())])).await;
        assert_eq!(resp.responses[0].error_code, 0);
        assert!(b.broker.topic("other").is_some() && b.broker.topic("seen").is_some());
    }
}
