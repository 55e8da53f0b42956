//! Client quota administration (KIP-546): DescribeClientQuotas answers from the metadata
//! this node has applied; AlterClientQuotas goes to the controller, which validates and
//! keeps the quotas and publishes them to every node, and is answered once this node has
//! applied the change. Enforcement is `security::quota`'s.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_client_quotas_response::{EntityData, EntryData, ValueData};
use kafka_protocol::messages::*;
use strata_controller::proto as pb;
use strata_security::acl::{Operation, ResourceType};
use strata_security::quota::QuotaFilter;

use super::s;
use super::security::CLUSTER;
use crate::node::Node;
use crate::security::Caller;

fn cluster_allowed(b: &Node, cx: &Caller, op: Operation) -> bool {
    b.security.authorize(cx, op, ResourceType::Cluster, CLUSTER)
}

/// Answer DescribeClientQuotas: the entities the filter matches, with their quotas.
/// Needs DescribeConfigs on the cluster, as in Kafka.
pub fn describe_client_quotas(
    b: &Arc<Node>,
    cx: &Caller,
    _v: i16,
    req: DescribeClientQuotasRequest,
) -> DescribeClientQuotasResponse {
    let mut resp = DescribeClientQuotasResponse::default();
    if !cluster_allowed(b, cx, Operation::DescribeConfigs) {
        resp.error_code = ResponseError::ClusterAuthorizationFailed.code();
        resp.error_message = Some(s(ResponseError::ClusterAuthorizationFailed.to_string()));
        return resp;
    }
    let filter = QuotaFilter::from_wire(
        req.components
            .iter()
            .map(|c| (c.entity_type.as_str(), c.match_type, c._match.as_deref())),
        req.strict,
    );
    let filter = match filter {
        Ok(f) => f,
        Err(e) => {
            resp.error_code = e.code;
            resp.error_message = Some(s(e.message));
            return resp;
        }
    };
    let view = b.cluster.view();
    let entries = view
        .client_quotas
        .iter()
        .filter(|(e, _)| filter.matches(e))
        .map(|(e, values)| {
            build!(EntryData {
                entity: e
                    .to_wire()
                    .into_iter()
                    .map(|(t, n)| build!(EntityData {
                        entity_type: s(t),
                        entity_name: n.map(s)
                    }))
                    .collect(),
                values: values
                    .iter()
                    .map(|(k, v)| build!(ValueData {
                        key: s(k.name()),
                        value: v.0
                    }))
                    .collect()
            })
        })
        .collect();
    resp.entries = Some(entries);
    resp
}

/// Answer AlterClientQuotas: one result per entry. Needs AlterConfigs on the cluster.
pub async fn alter_client_quotas(
    b: &Arc<Node>,
    cx: &Caller,
    _v: i16,
    req: AlterClientQuotasRequest,
) -> AlterClientQuotasResponse {
    use kafka_protocol::messages::alter_client_quotas_response::{
        EntityData as RespEntity, EntryData as RespEntry,
    };
    let entity_of = |e: &alter_client_quotas_request::EntryData| -> Vec<RespEntity> {
        e.entity
            .iter()
            .map(|d| {
                build!(RespEntity {
                    entity_type: d.entity_type.clone(),
                    entity_name: d.entity_name.clone()
                })
            })
            .collect()
    };
    let answer = |code: i16, message: Option<String>| {
        req.entries
            .iter()
            .map(|e| {
                build!(RespEntry {
                    error_code: code,
                    error_message: message.clone().map(s),
                    entity: entity_of(e)
                })
            })
            .collect::<Vec<_>>()
    };
    let mut resp = AlterClientQuotasResponse::default();
    if !cluster_allowed(b, cx, Operation::AlterConfigs) {
        resp.entries = answer(ResponseError::ClusterAuthorizationFailed.code(), None);
        return resp;
    }
    let wire = pb::AlterClientQuotasRequest {
        entries: req
            .entries
            .iter()
            .map(|e| pb::QuotaAlteration {
                entity: e
                    .entity
                    .iter()
                    .map(|d| pb::QuotaEntityPart {
                        entity_type: d.entity_type.to_string(),
                        name: d.entity_name.as_ref().map(|n| n.to_string()),
                    })
                    .collect(),
                ops: e
                    .ops
                    .iter()
                    .map(|o| pb::QuotaOp {
                        key: o.key.to_string(),
                        value: o.value,
                        remove: o.remove,
                    })
                    .collect(),
            })
            .collect(),
        validate_only: req.validate_only,
    };
    if wire.entries.is_empty() {
        return resp;
    }
    match b.cluster.alter_client_quotas(wire).await {
        Err(e) => resp.entries = answer(e.code(), Some(e.to_string())),
        Ok(results) => {
            resp.entries = req
                .entries
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    let (code, message) = match results.get(i) {
                        Some(r) => (
                            i16::try_from(r.error_code).unwrap_or(-1),
                            (!r.error_message.is_empty()).then(|| s(r.error_message.clone())),
                        ),
                        None => (ResponseError::UnknownServerError.code(), None),
                    };
                    build!(RespEntry {
                        error_code: code,
                        error_message: message,
                        entity: entity_of(e)
                    })
                })
                .collect();
        }
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::tests::make_batch;
    use crate::protocol::handlers::authz::testing::{admin, allow, answer, frame, node, user};
    use crate::protocol::handlers::{dispatch, topic_name};
    use kafka_protocol::messages::alter_client_quotas_request::{
        EntityData as AlterEntity, EntryData as AlterEntry, OpData,
    };
    use kafka_protocol::messages::describe_client_quotas_request::ComponentData;
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::protocol::Encodable;

    fn set_user_quota(user: &str, key: &str, value: f64) -> AlterClientQuotasRequest {
        build!(AlterClientQuotasRequest {
            entries: vec![build!(AlterEntry {
                entity: vec![build!(AlterEntity {
                    entity_type: s("user"),
                    entity_name: Some(s(user))
                })],
                ops: vec![build!(OpData {
                    key: s(key),
                    value: value
                })]
            })]
        })
    }

    fn users(strict: bool) -> DescribeClientQuotasRequest {
        build!(DescribeClientQuotasRequest {
            components: vec![build!(ComponentData {
                entity_type: s("user"),
                match_type: 2
            })],
            strict: strict
        })
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn quotas_are_altered_described_and_enforced_on_produce() {
        let dir = tempfile::tempdir().unwrap();
        let b = node(
            dir.path(),
            &[allow("alice", Operation::Write, ResourceType::Topic, "t")],
        )
        .await;
        b.broker
            .create_topic("t", 1, 1, Default::default(), false)
            .await
            .unwrap();

        // Only a caller with AlterConfigs / DescribeConfigs on the cluster.
        let r = alter_client_quotas(
            &b,
            &user("bob"),
            1,
            set_user_quota("x", "producer_byte_rate", 1.0),
        )
        .await;
        assert_eq!(
            r.entries[0].error_code,
            ResponseError::ClusterAuthorizationFailed.code()
        );
        let r = describe_client_quotas(&b, &user("bob"), 1, users(false));
        assert_eq!(
            r.error_code,
            ResponseError::ClusterAuthorizationFailed.code()
        );
        // Kafka's validation comes back per entry.
        let r = alter_client_quotas(
            &b,
            &admin(),
            1,
            set_user_quota("x", "producer_byte_rate", 0.5),
        )
        .await;
        assert_eq!(
            r.entries[0].error_code,
            ResponseError::InvalidRequest.code()
        );
        assert_eq!(
            r.entries[0].error_message.as_deref(),
            Some("producer_byte_rate cannot be a fractional value.")
        );

        // A produce request whose size is known before the quota is chosen.
        let batch = make_batch(&[&[7u8; 2000]], 1, -1, -1);
        let req = build!(ProduceRequest {
            acks: 1,
            timeout_ms: 5000,
            topic_data: vec![build!(TopicProduceData {
                name: topic_name("t"),
                partition_data: vec![build!(PartitionProduceData {
                    index: 0,
                    records: Some(bytes::Bytes::from(batch))
                })]
            })]
        });
        let mut body = bytes::BytesMut::new();
        req.encode(&mut body, 9).unwrap();
        let size = body.len();
        // A bound of size/11 B/s: one request is size/10 B/s over the 10 s minimum window,
        // so Kafka's arithmetic asks for about one second.
        let bound = (size / 11) as f64;
        let r = alter_client_quotas(
            &b,
            &admin(),
            1,
            set_user_quota("alice", "producer_byte_rate", bound),
        )
        .await;
        assert_eq!(
            r.entries[0].error_code, 0,
            "{:?}",
            r.entries[0].error_message
        );
        let r = describe_client_quotas(&b, &admin(), 1, users(true));
        let entries = r.entries.unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].entity[0].entity_name.as_deref(), Some("alice"));
        assert_eq!(entries[0].values[0].key.as_str(), "producer_byte_rate");
        assert_eq!(entries[0].values[0].value, bound);

        let alice = user("alice");
        let mut f = frame(&alice, ApiKey::Produce, 9);
        f.header.client_id = Some(s("app"));
        f.body = body.freeze();
        let started = tokio::time::Instant::now();
        let resp: ProduceResponse = answer(ApiKey::Produce, 9, dispatch(&b, f)).await.unwrap();
        assert_eq!(resp.responses[0].partition_responses[0].error_code, 0);
        let t = resp.throttle_time_ms;
        assert!((900..=1300).contains(&t), "throttle {t} ms");
        // The answer came at once and the connection is muted for the throttle time.
        let until = alice.throttle.muted_until().expect("muted");
        assert!(until >= started + std::time::Duration::from_millis(t as u64));
        assert!(started.elapsed() < std::time::Duration::from_millis(500));

        // Bob has no quota: never throttled.
        assert_eq!(
            b.security.quotas.record(
                "bob",
                "",
                strata_security::quota::QuotaKey::ProducerByteRate,
                1e9,
                0
            ),
            0
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_consumer_over_its_rate_gets_an_empty_throttled_fetch() {
        use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
        let dir = tempfile::tempdir().unwrap();
        let b = node(
            dir.path(),
            &[allow("carol", Operation::Read, ResourceType::Topic, "t")],
        )
        .await;
        b.broker
            .create_topic("t", 1, 1, Default::default(), false)
            .await
            .unwrap();
        let batch = make_batch(&[&[9u8; 3000]], 1, -1, -1);
        let size = batch.len();
        let part = b.broker.partition("t", 0).unwrap();
        b.broker.append(&part, &batch).unwrap();
        // A bound of size/11 B/s: fetching the batch once is size/10 B/s over 10 s.
        let bound = (size / 11) as f64;
        let r = alter_client_quotas(
            &b,
            &admin(),
            1,
            build!(AlterClientQuotasRequest {
                entries: vec![build!(AlterEntry {
                    entity: vec![build!(AlterEntity {
                        entity_type: s("client-id"),
                        entity_name: None
                    })],
                    ops: vec![build!(OpData {
                        key: s("consumer_byte_rate"),
                        value: bound
                    })]
                })]
            }),
        )
        .await;
        assert_eq!(
            r.entries[0].error_code, 0,
            "{:?}",
            r.entries[0].error_message
        );
        let fetch = build!(FetchRequest {
            replica_id: kafka_protocol::messages::BrokerId(-1),
            max_wait_ms: 0,
            max_bytes: 1 << 20,
            session_epoch: -1,
            topics: vec![build!(FetchTopic {
                topic: topic_name("t"),
                partitions: vec![build!(FetchPartition {
                    partition_max_bytes: 1 << 20
                })]
            })]
        });
        let mut body = bytes::BytesMut::new();
        fetch.encode(&mut body, 12).unwrap();
        let mut f = frame(&user("carol"), ApiKey::Fetch, 12);
        f.body = body.freeze();
        let resp: FetchResponse = answer(ApiKey::Fetch, 12, dispatch(&b, f)).await.unwrap();
        // The default client-id quota applies to carol's client: throttled, no data.
        let t = resp.throttle_time_ms;
        assert!((900..=1300).contains(&t), "throttle {t} ms");
        assert!(resp.responses.is_empty());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn request_time_over_the_percentage_holds_the_answer_back_a_window_at_most() {
        let dir = tempfile::tempdir().unwrap();
        let b = node(dir.path(), &[]).await;
        let r = alter_client_quotas(
            &b,
            &admin(),
            1,
            set_user_quota("dave", "request_percentage", 1e-6),
        )
        .await;
        assert_eq!(
            r.entries[0].error_code, 0,
            "{:?}",
            r.entries[0].error_message
        );
        let dave = user("dave");
        let erin = user("erin");
        let ask = |who: &Caller| {
            let mut f = frame(who, ApiKey::DescribeCluster, 0);
            let mut body = bytes::BytesMut::new();
            DescribeClusterRequest::default()
                .encode(&mut body, 0)
                .unwrap();
            f.body = body.freeze();
            dispatch(&b, f)
        };
        // Any handler time is far above a millionth of a percent: the connection is muted,
        // at most one quota window (Kafka's ClientRequestQuotaManager cap).
        let started = tokio::time::Instant::now();
        let _: DescribeClusterResponse = answer(ApiKey::DescribeCluster, 0, ask(&dave))
            .await
            .unwrap();
        let until = dave.throttle.muted_until().expect("muted");
        assert!(
            until >= started + std::time::Duration::from_millis(900),
            "{until:?}"
        );
        assert!(
            until <= started + std::time::Duration::from_millis(1100),
            "{until:?}"
        );
        // Others are not muted.
        let started = std::time::Instant::now();
        let _: DescribeClusterResponse = answer(ApiKey::DescribeCluster, 0, ask(&erin))
            .await
            .unwrap();
        assert!(erin.throttle.muted_until().is_none());
        assert!(started.elapsed() < std::time::Duration::from_millis(500));
    }
}
