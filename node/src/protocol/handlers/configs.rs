//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs for topics; broker configs are
//! described (read-only: they come from the node's flags). Describing needs DescribeConfigs
//! and altering AlterConfigs, on the topic (TOPIC_AUTHORIZATION_FAILED) or, for a broker, on
//! the cluster (CLUSTER_AUTHORIZATION_FAILED).

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::*;

use super::s;
use crate::error::Error;
use crate::log::config::{config_def, ConfigSource, ConfigType, LogConfig, TOPIC_CONFIGS};
use crate::node::Node;
use crate::security::Caller;
use strata_security::acl::{Operation, ResourceType};

const TOPIC: i8 = 2;
const BROKER: i8 = 4;

/// The authorization error when `cx` may not do `op` on a config resource; None when it may
/// (and for resource types without configs here, which are refused later).
fn refused(
    b: &Node,
    cx: &Caller,
    op: Operation,
    resource_type: i8,
    name: &str,
) -> Option<ResponseError> {
    match resource_type {
        TOPIC => (!b.security.authorize(cx, op, ResourceType::Topic, name))
            .then_some(ResponseError::TopicAuthorizationFailed),
        BROKER => (!super::authz::on_cluster(b, cx, op))
            .then_some(ResponseError::ClusterAuthorizationFailed),
        _ => None,
    }
}

fn broker_configs(b: &Node) -> Vec<(String, String, ConfigType)> {
    let c = &b.config;
    let mut out = vec![
        (
            "node.id".to_string(),
            c.node_id.to_string(),
            ConfigType::Int,
        ),
        (
            "broker.id".to_string(),
            c.node_id.to_string(),
            ConfigType::Int,
        ),
        (
            "log.dirs".to_string(),
            c.data_dir.display().to_string(),
            ConfigType::String,
        ),
        (
            "auto.create.topics.enable".to_string(),
            c.auto_create_topics.to_string(),
            ConfigType::Boolean,
        ),
        (
            "num.partitions".to_string(),
            c.num_partitions.to_string(),
            ConfigType::Int,
        ),
        (
            "offsets.topic.num.partitions".to_string(),
            c.offsets_topic_partitions.to_string(),
            ConfigType::Int,
        ),
        (
            "socket.request.max.bytes".to_string(),
            c.max_request_bytes.to_string(),
            ConfigType::Int,
        ),
        (
            "default.replication.factor".to_string(),
            "1".to_string(),
            ConfigType::Int,
        ),
        (
            "log.retention.check.interval.ms".to_string(),
            c.retention_check_interval_ms.to_string(),
            ConfigType::Long,
        ),
    ];
    for d in TOPIC_CONFIGS {
        let (v, _) = LogConfig::describe(d.name, &BTreeMap::new(), &c.topic_defaults);
        let broker_name = match d.name {
            "retention.ms"
            | "retention.bytes"
            | "segment.bytes"
            | "cleanup.policy"
            | "index.interval.bytes" => {
                format!("log.{}", d.name)
            }
            "segment.ms" => "log.roll.ms".to_string(),
            "max.message.bytes" => "message.max.bytes".to_string(),
            "message.timestamp.type" => "log.message.timestamp.type".to_string(),
            "delete.retention.ms" => "log.cleaner.delete.retention.ms".to_string(),
            "min.insync.replicas" => "min.insync.replicas".to_string(),
            _ => continue,
        };
        out.push((broker_name, v, d.kind));
    }
    out
}

/// Answer DescribeConfigs.
pub fn describe_configs(
    b: &Arc<Node>,
    cx: &Caller,
    v: i16,
    req: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let results = req
        .resources
        .into_iter()
        .map(|res| {
            let wanted = |k: &str| {
                res.configuration_keys
                    .as_ref()
                    .is_none_or(|keys| keys.iter().any(|x| x.as_str() == k))
            };
            let mut r = build!(DescribeConfigsResult {
                resource_type: res.resource_type,
                resource_name: res.resource_name.clone()
            });
            if let Some(e) = refused(
                b,
                cx,
                Operation::DescribeConfigs,
                res.resource_type,
                res.resource_name.as_str(),
            ) {
                r.error_code = e.code();
                r.error_message = Some(s(e.to_string()));
                return r;
            }
            match res.resource_type {
                TOPIC => match b.broker.topic(res.resource_name.as_str()) {
                    None => {
                        r.error_code = ResponseError::UnknownTopicOrPartition.code();
                        r.error_message = Some(s(format!(
                            "topic {} does not exist",
                            res.resource_name.as_str()
                        )));
                    }
                    Some(view) => {
                        r.configs = TOPIC_CONFIGS
                            .iter()
                            .filter(|d| wanted(d.name))
                            .map(|d| {
                                let (value, source) = LogConfig::describe(
                                    d.name,
                                    &view.meta.configs,
                                    b.broker.topic_defaults(),
                                );
                                let mut synonyms = Vec::new();
                                if req.include_synonyms {
                                    if let Some(o) = view.meta.configs.get(d.name) {
                                        synonyms.push(build!(DescribeConfigsSynonym {
                                            name: s(d.name),
                                            value: Some(s(o.clone())),
                                            source: ConfigSource::Topic.code()
                                        }));
                                    }
                                    synonyms.push(build!(DescribeConfigsSynonym {
                                        name: s(d.name),
                                        value: Some(s(d.default)),
                                        source: ConfigSource::Default.code()
                                    }));
                                }
                                build!(DescribeConfigsResourceResult {
                                    name: s(d.name),
                                    value: Some(s(value)),
                                    read_only: false,
                                    config_source: if v == 0 { -1 } else { source.code() },
                                    is_sensitive: false,
                                    synonyms: synonyms,
                                    config_type: d.kind.code(),
                                    documentation: if req.include_documentation {
                                        Some(s(d.doc))
                                    } else {
                                        None
                                    }
                                })
                            })
                            .collect();
                    }
                },
                BROKER => {
                    let name = res.resource_name.as_str();
                    if !name.is_empty() && name != b.config.node_id.to_string() {
                        r.error_code = ResponseError::InvalidRequest.code();
                        r.error_message =
                            Some(s(format!("this is node {}, not {name}", b.config.node_id)));
                    } else {
                        r.configs = broker_configs(b)
                            .into_iter()
                            .filter(|(k, _, _)| wanted(k))
                            .map(|(k, val, kind)| {
                                build!(DescribeConfigsResourceResult {
                                    name: s(k),
                                    value: Some(s(val)),
                                    read_only: true,
                                    config_source: 4,
                                    is_sensitive: false,
                                    config_type: kind.code()
                                })
                            })
                            .collect();
                    }
                }
                other => {
                    r.error_code = ResponseError::InvalidRequest.code();
                    r.error_message = Some(s(format!("resource type {other} is not supported")));
                }
            }
            r
        })
        .collect();
    build!(DescribeConfigsResponse { results: results })
}

fn refuse_non_topic(resource_type: i8) -> Option<(i16, String)> {
    match resource_type {
        TOPIC => None,
        BROKER => Some((
            ResponseError::InvalidRequest.code(),
            "broker configs are set with strata-node flags and cannot be altered at run time"
                .into(),
        )),
        other => Some((
            ResponseError::InvalidRequest.code(),
            format!("resource type {other} is not supported"),
        )),
    }
}

/// Apply `f` to a topic's overrides (refusing other resource types): (error code, message).
async fn alter_resource(
    b: &Node,
    resource_type: i8,
    name: &str,
    validate_only: bool,
    f: impl FnOnce(&mut BTreeMap<String, String>) -> Result<(), Error> + Send,
) -> (i16, Option<kafka_protocol::protocol::StrBytes>) {
    if let Some((code, msg)) = refuse_non_topic(resource_type) {
        return (code, Some(s(msg)));
    }
    match b.broker.alter_topic_configs(name, f, validate_only).await {
        Ok(()) => (0, None),
        Err(e) => (e.code(), Some(s(e.to_string()))),
    }
}

/// Answer AlterConfigs: the given set replaces all topic overrides.
pub async fn alter_configs(
    b: &Arc<Node>,
    cx: &Caller,
    _v: i16,
    req: AlterConfigsRequest,
) -> AlterConfigsResponse {
    use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
    let mut responses = Vec::with_capacity(req.resources.len());
    for res in req.resources {
        {
            let new: BTreeMap<String, String> = res
                .configs
                .iter()
                .filter_map(|c| {
                    c.value
                        .as_ref()
                        .map(|v| (c.name.to_string(), v.to_string()))
                })
                .collect();
            let name = res.resource_name.as_str();
            let (code, msg) = match refused(b, cx, Operation::AlterConfigs, res.resource_type, name)
            {
                Some(e) => (e.code(), Some(s(e.to_string()))),
                None => {
                    alter_resource(b, res.resource_type, name, req.validate_only, |cfg| {
                        *cfg = new;
                        Ok(())
                    })
                    .await
                }
            };
            responses.push(build!(AlterConfigsResourceResponse {
                error_code: code,
                error_message: msg,
                resource_type: res.resource_type,
                resource_name: res.resource_name
            }));
        }
    }
    build!(AlterConfigsResponse {
        responses: responses
    })
}

/// Answer IncrementalAlterConfigs: SET, DELETE, APPEND and SUBTRACT per key.
pub async fn incremental_alter_configs(
    b: &Arc<Node>,
    cx: &Caller,
    _v: i16,
    req: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
    let mut responses = Vec::with_capacity(req.resources.len());
    for res in req.resources {
        {
            let ops: Vec<(String, i8, Option<String>)> = res
                .configs
                .iter()
                .map(|c| {
                    (
                        c.name.to_string(),
                        c.config_operation,
                        c.value.as_ref().map(|v| v.to_string()),
                    )
                })
                .collect();
            let name = res.resource_name.as_str();
            let refusal = refused(b, cx, Operation::AlterConfigs, res.resource_type, name);
            let (code, msg) = match refusal {
                Some(e) => (e.code(), Some(s(e.to_string()))),
                None => match throttle_ops(b, res.resource_type, name, &ops) {
                    Throttles::Answer(code, msg) => (code, msg.map(s)),
                    Throttles::Rest(ops) => {
                        alter_resource(b, res.resource_type, name, req.validate_only, |cfg| {
                            apply_incremental(cfg, &ops)
                        })
                        .await
                    }
                },
            };
            responses.push(build!(AlterConfigsResourceResponse {
                error_code: code,
                error_message: msg,
                resource_type: res.resource_type,
                resource_name: res.resource_name
            }));
        }
    }
    build!(IncrementalAlterConfigsResponse {
        responses: responses
    })
}

// ---- replication throttles (kafka-reassign-partitions.sh --throttle) ------------------

/// Kafka's replication throttle configs: rates on brokers, throttled replica lists on
/// topics. Strata does not throttle replication: setting them is refused, deleting them (what
/// `kafka-reassign-partitions.sh --verify` does once a move is done) is a no-op, since they
/// can never be set.
pub const THROTTLE_CONFIGS: &[(i8, &str)] = &[
    (BROKER, "leader.replication.throttled.rate"),
    (BROKER, "follower.replication.throttled.rate"),
    (BROKER, "replica.alter.log.dirs.io.max.bytes.per.second"),
    (TOPIC, "leader.replication.throttled.replicas"),
    (TOPIC, "follower.replication.throttled.replicas"),
];

/// What to do with a resource's incremental operations once throttles are looked at.
#[derive(Debug, PartialEq)]
pub enum Throttles {
    /// Answer now with (error code, message).
    Answer(i16, Option<String>),
    /// Apply these remaining operations as usual.
    Rest(Vec<(String, i8, Option<String>)>),
}

/// Sorts out the throttle configs of one resource's operations (DELETE = 1).
pub fn throttle_ops(
    b: &Node,
    resource_type: i8,
    resource_name: &str,
    ops: &[(String, i8, Option<String>)],
) -> Throttles {
    let is_throttle = |key: &str| {
        THROTTLE_CONFIGS
            .iter()
            .any(|(t, k)| *t == resource_type && *k == key)
    };
    if let Some((key, _, _)) = ops.iter().find(|(k, op, _)| is_throttle(k) && *op != 1) {
        return Throttles::Answer(
            ResponseError::InvalidConfig.code(),
            Some(format!(
                "{key}: Strata does not throttle replication; reassign partitions without --throttle"
            )),
        );
    }
    let rest: Vec<_> = ops
        .iter()
        .filter(|(k, _, _)| !is_throttle(k))
        .cloned()
        .collect();
    if rest.len() == ops.len() {
        return Throttles::Rest(rest);
    }
    // Only throttle deletions (or deletions besides other changes, handled as usual).
    match resource_type {
        BROKER if rest.is_empty() => Throttles::Answer(0, None),
        TOPIC if rest.is_empty() => match b.broker.topic(resource_name) {
            Some(_) => Throttles::Answer(0, None),
            None => Throttles::Answer(
                ResponseError::UnknownTopicOrPartition.code(),
                Some(format!("unknown topic {resource_name}")),
            ),
        },
        _ => Throttles::Rest(rest),
    }
}

/// Apply incremental operations to a set of overrides (pure).
pub fn apply_incremental(
    cfg: &mut BTreeMap<String, String>,
    ops: &[(String, i8, Option<String>)],
) -> Result<(), Error> {
    for (key, op, value) in ops {
        let invalid = |reason: &str| Error::InvalidConfig {
            key: key.clone(),
            value: value.clone().unwrap_or_default(),
            reason: reason.to_string(),
        };
        let def = config_def(key).ok_or_else(|| invalid("unknown topic config"))?;
        match op {
            0 => {
                let v = value.clone().ok_or_else(|| invalid("SET needs a value"))?;
                cfg.insert(key.clone(), v);
            }
            1 => {
                cfg.remove(key);
            }
            2 | 3 => {
                if def.kind != ConfigType::List {
                    return Err(invalid("APPEND and SUBTRACT apply only to list configs"));
                }
                let current = cfg
                    .get(key)
                    .cloned()
                    .unwrap_or_else(|| def.default.to_string());
                let mut items: Vec<String> = current
                    .split(',')
                    .map(|x| x.trim().to_string())
                    .filter(|x| !x.is_empty())
                    .collect();
                for v in value
                    .clone()
                    .unwrap_or_default()
                    .split(',')
                    .map(|x| x.trim().to_string())
                {
                    if v.is_empty() {
                        continue;
                    }
                    if *op == 2 {
                        if !items.contains(&v) {
                            items.push(v);
                        }
                    } else {
                        items.retain(|x| *x != v);
                    }
                }
                cfg.insert(key.clone(), items.join(","));
            }
            other => return Err(invalid(&format!("unknown operation {other}"))),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incremental_ops() {
        let mut c = BTreeMap::new();
        apply_incremental(&mut c, &[("retention.ms".into(), 0, Some("5".into()))]).unwrap();
        assert_eq!(c["retention.ms"], "5");
        apply_incremental(
            &mut c,
            &[("cleanup.policy".into(), 2, Some("compact".into()))],
        )
        .unwrap();
        assert_eq!(c["cleanup.policy"], "delete,compact");
        apply_incremental(
            &mut c,
            &[("cleanup.policy".into(), 3, Some("delete".into()))],
        )
        .unwrap();
        assert_eq!(c["cleanup.policy"], "compact");
        apply_incremental(&mut c, &[("retention.ms".into(), 1, None)]).unwrap();
        assert!(!c.contains_key("retention.ms"));
        assert!(
            apply_incremental(&mut c, &[("retention.ms".into(), 2, Some("1".into()))]).is_err()
        );
        assert!(apply_incremental(&mut c, &[("nope".into(), 0, Some("1".into()))]).is_err());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn configs_need_describe_configs_and_alter_configs() {
        use crate::protocol::handlers::authz::testing::{allow, node, user};
        use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
        use kafka_protocol::messages::incremental_alter_configs_request::{
            AlterConfigsResource, AlterableConfig,
        };
        let dir = tempfile::tempdir().unwrap();
        let b = node(
            dir.path(),
            &[allow(
                "alice",
                Operation::AlterConfigs,
                ResourceType::Topic,
                "t",
            )],
        )
        .await;
        for t in ["t", "u"] {
            b.broker
                .create_topic(t, 1, 1, Default::default(), false)
                .await
                .unwrap();
        }
        let alice = user("alice");
        let topic_denied = ResponseError::TopicAuthorizationFailed.code();
        let cluster_denied = ResponseError::ClusterAuthorizationFailed.code();
        // AlterConfigs implies DescribeConfigs; brokers need it on the cluster.
        let describe = |rt: i8, name: &str| {
            build!(DescribeConfigsResource {
                resource_type: rt,
                resource_name: s(name),
                configuration_keys: None
            })
        };
        let req = build!(DescribeConfigsRequest {
            resources: vec![
                describe(TOPIC, "t"),
                describe(TOPIC, "u"),
                describe(BROKER, "")
            ]
        });
        let resp = describe_configs(&b, &alice, 4, req);
        let codes: Vec<i16> = resp.results.iter().map(|r| r.error_code).collect();
        assert_eq!(codes, vec![0, topic_denied, cluster_denied]);
        assert!(!resp.results[0].configs.is_empty() && resp.results[1].configs.is_empty());

        // Refusals come before anything else is looked at (a throttle deletion included).
        let alter = |rt: i8, name: &str, key: &str, op: i8| {
            build!(AlterConfigsResource {
                resource_type: rt,
                resource_name: s(name),
                configs: vec![build!(AlterableConfig {
                    name: s(key),
                    config_operation: op,
                    value: Some(s("5"))
                })]
            })
        };
        let req = build!(IncrementalAlterConfigsRequest {
            resources: vec![
                alter(TOPIC, "t", "retention.ms", 0),
                alter(TOPIC, "u", "retention.ms", 0),
                alter(BROKER, "1", "leader.replication.throttled.rate", 1),
            ]
        });
        let resp = incremental_alter_configs(&b, &alice, 1, req).await;
        let codes: Vec<i16> = resp.responses.iter().map(|r| r.error_code).collect();
        assert_eq!(codes, vec![0, topic_denied, cluster_denied]);
        assert_eq!(
            b.broker.topic("t").unwrap().meta.configs["retention.ms"],
            "5"
        );
        assert!(b.broker.topic("u").unwrap().meta.configs.is_empty());

        use kafka_protocol::messages::alter_configs_request::AlterConfigsResource as Legacy;
        let req = build!(AlterConfigsRequest {
            resources: vec![build!(Legacy {
                resource_type: TOPIC,
                resource_name: s("u")
            })]
        });
        let resp = alter_configs(&b, &alice, 1, req).await;
        assert_eq!(resp.responses[0].error_code, topic_denied);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn throttles_are_refused_and_their_deletion_is_a_no_op() {
        let dir = tempfile::tempdir().unwrap();
        let b = Node::open_and_start(crate::config::NodeConfig::for_tests(
            dir.path().to_path_buf(),
        ))
        .await
        .unwrap();
        b.broker
            .create_topic("t", 1, 1, Default::default(), false)
            .await
            .unwrap();
        let op = |k: &str, o: i8, v: Option<&str>| (k.to_string(), o, v.map(String::from));
        let rate = "leader.replication.throttled.rate";
        let replicas = "leader.replication.throttled.replicas";
        // SET of a throttle: refused with a reason, on brokers and topics alike.
        for (rt, name, key) in [(BROKER, "1", rate), (TOPIC, "t", replicas)] {
            match throttle_ops(&b, rt, name, &[op(key, 0, Some("1000"))]) {
                Throttles::Answer(code, Some(msg)) => {
                    assert_eq!(code, ResponseError::InvalidConfig.code());
                    assert!(msg.contains("does not throttle"), "{msg}");
                }
                other => panic!("{other:?}"),
            }
        }
        // DELETE: nothing to do.
        assert_eq!(
            throttle_ops(&b, BROKER, "1", &[op(rate, 1, None)]),
            Throttles::Answer(0, None)
        );
        assert_eq!(
            throttle_ops(
                &b,
                TOPIC,
                "t",
                &[
                    op(replicas, 1, None),
                    op("follower.replication.throttled.replicas", 1, None)
                ]
            ),
            Throttles::Answer(0, None)
        );
        assert!(matches!(
            throttle_ops(&b, TOPIC, "nope", &[op(replicas, 1, None)]),
            Throttles::Answer(3, _)
        ));
        // Other operations go through as usual, without the throttle deletions.
        assert_eq!(
            throttle_ops(
                &b,
                TOPIC,
                "t",
                &[op(replicas, 1, None), op("retention.ms", 0, Some("5"))]
            ),
            Throttles::Rest(vec![op("retention.ms", 0, Some("5"))])
        );
        // A topic config named like a broker throttle is not one.
        assert_eq!(
            throttle_ops(&b, TOPIC, "t", &[op(rate, 1, None)]),
            Throttles::Rest(vec![op(rate, 1, None)])
        );
    }
}
