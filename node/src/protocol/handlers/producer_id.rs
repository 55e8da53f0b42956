//! InitProducerId: a fresh producer id for an idempotent producer, or, with a
//! transactional id, the transaction coordinator's producer id and next epoch.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use crate::node::Node;
use crate::security::Caller;
use strata_security::acl::{Operation, ResourceType};

/// Kafka's error response: no producer id.
fn refused(code: ResponseError) -> InitProducerIdResponse {
    build!(InitProducerIdResponse {
        error_code: code.code(),
        producer_id: ProducerId(-1),
        producer_epoch: -1
    })
}

/// Hand out a fresh producer id with epoch 0. A transactional id needs Write on it; an
/// idempotent producer needs IdempotentWrite on the cluster or Write on some topic (KIP-679).
pub async fn handle(
    b: &Arc<Node>,
    cx: &Caller,
    v: i16,
    req: InitProducerIdRequest,
) -> InitProducerIdResponse {
    match &req.transactional_id {
        Some(id)
            if !b
                .security
                .authorize(cx, Operation::Write, ResourceType::TransactionalId, id) =>
        {
            return refused(ResponseError::TransactionalIdAuthorizationFailed);
        }
        Some(_) => {}
        None => {
            let allowed = super::authz::on_cluster(b, cx, Operation::IdempotentWrite)
                || b.security
                    .authorize_any(cx, Operation::Write, ResourceType::Topic);
            if !allowed {
                return refused(ResponseError::ClusterAuthorizationFailed);
            }
        }
    }
    if let Some(id) = &req.transactional_id {
        let expected = (req.producer_id.0 >= 0).then_some((req.producer_id.0, req.producer_epoch));
        return match b
            .txns
            .init_producer_id(id.0.as_str(), req.transaction_timeout_ms, expected)
            .await
        {
            Ok((pid, epoch)) => build!(InitProducerIdResponse {
                producer_id: ProducerId(pid),
                producer_epoch: epoch
            }),
            // Clients before v4 (KIP-588) know only INVALID_PRODUCER_EPOCH.
            Err(ResponseError::ProducerFenced) if v < 4 => {
                refused(ResponseError::InvalidProducerEpoch)
            }
            Err(code) => refused(code),
        };
    }
    match b.broker.allocate_producer_id().await {
        Ok(id) => build!(InitProducerIdResponse {
            producer_id: ProducerId(id),
            producer_epoch: 0
        }),
        Err(e) => {
            tracing::error!(error = %e, "producer id allocation failed");
            build!(InitProducerIdResponse {
                error_code: ResponseError::KafkaStorageError.code(),
                producer_id: ProducerId(-1),
                producer_epoch: -1
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::handlers::authz::testing::{allow, node, user};
    use crate::protocol::handlers::s;
    use kafka_protocol::messages::TransactionalId;

    #[tokio::test(flavor = "multi_thread")]
    async fn idempotent_producers_need_idempotent_write_or_write_on_a_topic() {
        let dir = tempfile::tempdir().unwrap();
        let b = node(
            dir.path(),
            &[
                allow("alice", Operation::Write, ResourceType::Topic, "t"),
                allow(
                    "carol",
                    Operation::IdempotentWrite,
                    ResourceType::Cluster,
                    "kafka-cluster",
                ),
                allow(
                    "dave",
                    Operation::Write,
                    ResourceType::TransactionalId,
                    "tx",
                ),
            ],
        )
        .await;
        let init = |txn: Option<&str>| {
            build!(InitProducerIdRequest {
                transactional_id: txn.map(|t| TransactionalId(s(t))),
                transaction_timeout_ms: 60_000
            })
        };
        for who in ["alice", "carol"] {
            let r = handle(&b, &user(who), 4, init(None)).await;
            assert_eq!(r.error_code, 0, "{who}");
            assert!(r.producer_id.0 >= 0);
        }
        let r = handle(&b, &user("bob"), 4, init(None)).await;
        assert_eq!(
            (r.error_code, r.producer_id.0),
            (ResponseError::ClusterAuthorizationFailed.code(), -1)
        );
        let r = handle(&b, &user("alice"), 4, init(Some("tx"))).await;
        assert_eq!(
            r.error_code,
            ResponseError::TransactionalIdAuthorizationFailed.code()
        );
        // Allowed: the coordinator answers (not available while its topic is made).
        let r = handle(&b, &user("dave"), 4, init(Some("tx"))).await;
        assert_ne!(
            r.error_code,
            ResponseError::TransactionalIdAuthorizationFailed.code()
        );
    }
}
