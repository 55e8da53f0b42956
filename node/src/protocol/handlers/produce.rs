//! Produce: authorize, validate, append in arrival order, then wait for durability per the
//! flush policy.

use std::sync::Arc;

use futures::StreamExt;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse};

use super::{reply, s};
use crate::broker::Partition;
use crate::error::Error;
use crate::log::batch;
use crate::node::Node;
use crate::protocol::{Pending, Reply};

/// Partitions of one produce request completed (fsynced, replicated) at a time.
const COMPLETE_AT_ONCE: usize = 64;
use crate::security::Caller;
use strata_security::acl::{Operation, ResourceType};

struct Appended {
    part: Arc<Partition>,
    last_offset: i64,
}

/// Whether the first batch of any partition is transactional (Kafka's
/// `RequestUtils.hasTransactionalRecords`, which looks at first batches only).
fn has_transactional_records(req: &ProduceRequest) -> bool {
    req.topic_data
        .iter()
        .flat_map(|t| &t.partition_data)
        .filter_map(|p| p.records.as_deref())
        .any(|r| {
            matches!(batch::parse_header(r), Ok(Some(h)) if h.attributes & batch::ATTR_TRANSACTIONAL != 0)
        })
}

/// The answer when the request's transactional id may not be written: the error on every
/// partition, as Kafka's error response has it (acks=0: the connection closes instead).
fn refuse_all(v: i16, correlation_id: i32, req: ProduceRequest, code: ResponseError) -> Pending {
    if req.acks == 0 {
        return Box::pin(std::future::ready(Reply::Close));
    }
    let responses = req
        .topic_data
        .into_iter()
        .map(|td| {
            build!(TopicProduceResponse {
                partition_responses: td
                    .partition_data
                    .iter()
                    .map(|pd| build!(PartitionProduceResponse {
                        index: pd.index,
                        error_code: code.code(),
                        error_message: Some(s(code.to_string())),
                        base_offset: -1,
                        log_append_time_ms: -1,
                        log_start_offset: -1
                    }))
                    .collect(),
                name: td.name,
                topic_id: td.topic_id
            })
        })
        .collect();
    let resp = build!(ProduceResponse {
        responses: responses
    });
    Box::pin(std::future::ready(reply(
        ApiKey::Produce,
        v,
        correlation_id,
        &resp,
    )))
}

/// Append every partition's records now; the returned future waits for fsync and answers.
/// Transactional records need Write on the transactional id, and each topic needs Write
/// (TOPIC_AUTHORIZATION_FAILED on its partitions; the others are still written).
pub fn handle(
    b: Arc<Node>,
    cx: &Caller,
    v: i16,
    correlation_id: i32,
    throttle_time_ms: i32,
    req: ProduceRequest,
) -> Pending {
    if has_transactional_records(&req) {
        let allowed = req.transactional_id.as_ref().is_some_and(|id| {
            b.security
                .authorize(cx, Operation::Write, ResourceType::TransactionalId, id)
        });
        if !allowed {
            return refuse_all(
                v,
                correlation_id,
                req,
                ResponseError::TransactionalIdAuthorizationFailed,
            );
        }
    }
    match transaction_check(&b, cx, v, &req) {
        Err(code) => refuse_all(v, correlation_id, req, code),
        Ok(None) => append_all(b, cx, v, correlation_id, throttle_time_ms, req, None),
        Ok(Some(check)) => {
            // The append waits for the coordinator, and the connection's next requests for
            // the append.
            let hold = cx.throttle.hold();
            let cx = cx.clone();
            Box::pin(async move {
                let failed = b
                    .add_to_transaction(
                        &check.id,
                        check.producer_id,
                        check.epoch,
                        check.partitions.clone(),
                        check.verify_only,
                    )
                    .await
                    .err()
                    .map(|e| (check.partitions, produce_error(e, v)));
                let pending = append_all(b, &cx, v, correlation_id, throttle_time_ms, req, failed);
                drop(hold);
                pending.await
            })
        }
    }
}

/// Partitions of a transactional produce that its producer's transaction coordinator must
/// know of before they are written.
struct TxnCheck {
    id: String,
    producer_id: i64,
    epoch: i16,
    partitions: Vec<(String, i32)>,
    /// Produce before v12 (KIP-890's first part): the partitions must be in the open
    /// transaction already (INVALID_TXN_STATE otherwise), so a late or stray write cannot
    /// open a transaction that nothing will ever end. From v12 (transaction version 2) the
    /// produce itself adds them.
    verify_only: bool,
}

/// The partitions of a transactional produce to check with the coordinator: those hosted
/// here, writable by the caller, whose producer state shows no transaction of this producer
/// epoch open yet (a partition already written in the transaction needs no check). Batches
/// of two producers in one request are refused, as Kafka does.
fn transaction_check(
    b: &Node,
    cx: &Caller,
    v: i16,
    req: &ProduceRequest,
) -> Result<Option<TxnCheck>, ResponseError> {
    let Some(id) = req.transactional_id.as_ref().map(|t| t.0.to_string()) else {
        return Ok(None);
    };
    let mut producer: Option<(i64, i16)> = None;
    let mut partitions = Vec::new();
    for td in &req.topic_data {
        let name = td.name.0.as_str();
        if !b
            .security
            .authorize(cx, Operation::Write, ResourceType::Topic, name)
        {
            continue;
        }
        for pd in &td.partition_data {
            let data: &[u8] = pd.records.as_deref().unwrap_or_default();
            let Ok(Some(h)) = batch::parse_header(data) else {
                continue;
            };
            if !h.is_transactional() || h.is_control() {
                continue;
            }
            match producer {
                None => producer = Some((h.producer_id, h.producer_epoch)),
                Some((pid, _)) if pid != h.producer_id => {
                    return Err(ResponseError::InvalidProducerIdMapping)
                }
                Some(_) => {}
            }
            let Some(part) = b.broker.partition(name, pd.index) else {
                continue;
            };
            let open = part
                .log()
                .producers()
                .producers
                .get(&h.producer_id)
                .is_some_and(|e| e.epoch == h.producer_epoch && e.txn_first_offset.is_some());
            if !open {
                partitions.push((name.to_string(), pd.index));
            }
        }
    }
    Ok(match producer {
        Some((producer_id, epoch)) if !partitions.is_empty() => Some(TxnCheck {
            id,
            producer_id,
            epoch,
            partitions,
            verify_only: v < 12,
        }),
        _ => None,
    })
}

/// How a failed check reaches the producer (Kafka's translation): a fence is
/// INVALID_PRODUCER_EPOCH; a coordinator that could not be reached (and, before v12, one
/// busy ending the previous transaction) is NOT_ENOUGH_REPLICAS, which every client retries
/// without a metadata refresh; before v12 a partition not in the transaction is
/// INVALID_TXN_STATE.
fn produce_error(e: ResponseError, v: i16) -> ResponseError {
    match e {
        ResponseError::ProducerFenced => ResponseError::InvalidProducerEpoch,
        ResponseError::NetworkException
        | ResponseError::CoordinatorLoadInProgress
        | ResponseError::CoordinatorNotAvailable
        | ResponseError::NotCoordinator => ResponseError::NotEnoughReplicas,
        ResponseError::ConcurrentTransactions if v < 12 => ResponseError::NotEnoughReplicas,
        ResponseError::InvalidProducerIdMapping if v < 12 => ResponseError::InvalidTxnState,
        e => e,
    }
}

/// Append every partition's records now (those whose implicit add to a transaction
/// failed get its error); the returned future waits for fsync and answers.
fn append_all(
    b: Arc<Node>,
    cx: &Caller,
    v: i16,
    correlation_id: i32,
    throttle_time_ms: i32,
    req: ProduceRequest,
    not_added: Option<(Vec<(String, i32)>, ResponseError)>,
) -> Pending {
    let acks = req.acks;
    let timeout = std::time::Duration::from_millis(req.timeout_ms.max(0) as u64);
    let mut responses = Vec::with_capacity(req.topic_data.len());
    let mut to_sync: Vec<(usize, usize, Appended)> = Vec::new();
    let mut any_error = false;
    for (ti, td) in req.topic_data.into_iter().enumerate() {
        let topic = if td.name.0.is_empty() {
            b.broker.topic_by_id(td.topic_id).map(|t| t.name)
        } else {
            Some(td.name.0.to_string())
        };
        // Checked before the topic is looked up, so that a refused caller learns nothing of
        // whether it exists.
        let may_write = topic.as_ref().is_none_or(|name| {
            b.security
                .authorize(cx, Operation::Write, ResourceType::Topic, name)
        });
        let view = match &topic {
            Some(name) if may_write => b.broker.topic(name),
            _ => None,
        };
        let mut parts = Vec::with_capacity(td.partition_data.len());
        for (pi, pd) in td.partition_data.into_iter().enumerate() {
            let mut resp = build!(PartitionProduceResponse {
                index: pd.index,
                base_offset: -1,
                log_append_time_ms: -1,
                log_start_offset: -1
            });
            let result: Result<_, (i16, String)> = (|| {
                if !may_write {
                    return Err((
                        ResponseError::TopicAuthorizationFailed.code(),
                        ResponseError::TopicAuthorizationFailed.to_string(),
                    ));
                }
                if !matches!(acks, -1..=1) {
                    return Err((
                        ResponseError::InvalidRequiredAcks.code(),
                        format!("acks={acks} is not -1, 0 or 1"),
                    ));
                }
                let view = view.as_ref().ok_or((
                    ResponseError::UnknownTopicOrPartition.code(),
                    "unknown topic".to_string(),
                ))?;
                if view.meta.internal {
                    return Err((
                        ResponseError::InvalidTopicException.code(),
                        "cannot produce to an internal topic".to_string(),
                    ));
                }
                // A partition of the topic that is not hosted here (moved away by a
                // reassignment, or not yet created locally) is someone else's: NOT_LEADER, as
                // Kafka answers, so the client retries there. UNKNOWN_TOPIC_OR_PARTITION would
                // tell an idempotent producer the batch was never written, and a retry of the
                // batches after it would then leave a gap in its sequence numbers.
                let part = b.broker.partition(&view.name, pd.index).ok_or_else(|| {
                    if (0..view.meta.partitions).contains(&pd.index) {
                        (
                            ResponseError::NotLeaderOrFollower.code(),
                            format!("{}-{} is not led by this node", view.name, pd.index),
                        )
                    } else {
                        (
                            ResponseError::UnknownTopicOrPartition.code(),
                            "unknown partition".to_string(),
                        )
                    }
                })?;
                b.broker
                    .check_writable(&part, acks)
                    .map_err(|e: Error| (e.code(), e.to_string()))?;
                // A slice of the request frame: the log writes it without copying it first.
                let data: &[u8] = pd.records.as_deref().unwrap_or_default();
                if let Some((parts, code)) = &not_added {
                    if parts.iter().any(|(t, p)| *t == view.name && *p == pd.index) {
                        return Err((
                            code.code(),
                            format!(
                                "{}-{} could not join the transaction: {code}",
                                view.name, pd.index
                            ),
                        ));
                    }
                }
                let (info, log_start) = b
                    .broker
                    .append(&part, data)
                    .map_err(|e: Error| (e.code(), e.to_string()))?;
                Ok((part, info, log_start))
            })();
            match result {
                Ok((part, info, log_start)) => {
                    resp.base_offset = info.base_offset;
                    resp.log_append_time_ms = info.log_append_time;
                    resp.log_start_offset = log_start;
                    if (b.broker.must_sync(acks) || acks == -1) && !info.duplicate {
                        to_sync.push((
                            ti,
                            pi,
                            Appended {
                                part,
                                last_offset: info.last_offset,
                            },
                        ));
                    }
                }
                Err((code, msg)) => {
                    any_error = true;
                    tracing::debug!(topic = ?topic, partition = pd.index, code, %msg, "produce refused");
                    resp.error_code = code;
                    resp.error_message = Some(s(msg));
                }
            }
            parts.push(resp);
        }
        responses.push(build!(TopicProduceResponse {
            name: td.name,
            topic_id: td.topic_id,
            partition_responses: parts
        }));
    }
    Box::pin(async move {
        // The partitions of one request complete side by side: their fsyncs overlap (one
        // request may carry thousands of partitions), and so do their replication waits.
        let completed: Vec<_> = futures::stream::iter(to_sync)
            .map(|(ti, pi, a)| {
                let b = &b;
                async move {
                    let res = b
                        .broker
                        .complete_write(&a.part, a.last_offset, acks, timeout)
                        .await;
                    (ti, pi, res)
                }
            })
            .buffer_unordered(COMPLETE_AT_ONCE)
            .collect()
            .await;
        for (ti, pi, res) in completed {
            if let Err(e) = res {
                any_error = true;
                let r = &mut responses[ti].partition_responses[pi];
                r.error_code = e.code();
                r.error_message = Some(s(e.to_string()));
                r.base_offset = -1;
            }
        }
        if acks == 0 {
            // A fire-and-forget producer learns of failures only by a closed connection.
            return if any_error {
                Reply::Close
            } else {
                Reply::Nothing
            };
        }
        reply(
            ApiKey::Produce,
            v,
            correlation_id,
            &build!(ProduceResponse {
                responses: responses,
                throttle_time_ms: throttle_time_ms
            }),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::tests::make_batch;
    use crate::protocol::handlers::authz::testing::{allow, answer, node, user};
    use crate::protocol::handlers::topic_name;
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::TransactionalId;

    fn request(acks: i16, topics: &[&str], records: &[u8]) -> ProduceRequest {
        build!(ProduceRequest {
            acks: acks,
            timeout_ms: 5000,
            topic_data: topics
                .iter()
                .map(|t| build!(TopicProduceData {
                    name: topic_name(t),
                    partition_data: vec![build!(PartitionProduceData {
                        index: 0,
                        records: Some(bytes::Bytes::copy_from_slice(records))
                    })]
                }))
                .collect()
        })
    }

    /// (topic, error code, base offset) per partition.
    fn codes(r: &ProduceResponse) -> Vec<(String, i16, i64)> {
        r.responses
            .iter()
            .flat_map(|t| {
                t.partition_responses
                    .iter()
                    .map(move |p| (t.name.0.to_string(), p.error_code, p.base_offset))
            })
            .collect()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn only_topics_the_caller_may_write_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let b = node(
            dir.path(),
            &[allow("alice", Operation::Write, ResourceType::Topic, "ok")],
        )
        .await;
        for t in ["ok", "no"] {
            b.broker
                .create_topic(t, 1, 1, Default::default(), false)
                .await
                .unwrap();
        }
        let alice = user("alice");
        let batch = make_batch(&[b"v"], 1, -1, -1);
        let denied = ResponseError::TopicAuthorizationFailed.code();
        let pending = handle(
            b.clone(),
            &alice,
            9,
            1,
            0,
            request(1, &["ok", "no", "ghost"], &batch),
        );
        let resp: ProduceResponse = answer(ApiKey::Produce, 9, pending).await.unwrap();
        // A topic that does not exist is refused like one that does: nothing leaks.
        assert_eq!(
            codes(&resp),
            vec![
                ("ok".into(), 0, 0),
                ("no".into(), denied, -1),
                ("ghost".into(), denied, -1)
            ]
        );
        assert_eq!(
            b.broker.partition("no", 0).unwrap().log().log_end_offset(),
            0
        );

        // acks=0: the producer learns of the refusal by the connection closing.
        let pending = handle(b.clone(), &alice, 9, 2, 0, request(0, &["no"], &batch));
        assert!(matches!(pending.await, Reply::Close));

        // Transactional records need Write on the transactional id: every partition refused.
        let mut txn = make_batch(&[b"v"], 1, 5, 0);
        let attributes = i16::from_be_bytes([txn[21], txn[22]]) | batch::ATTR_TRANSACTIONAL;
        txn[21..23].copy_from_slice(&attributes.to_be_bytes());
        let mut req = request(-1, &["ok"], &txn);
        req.transactional_id = Some(TransactionalId(s("tx")));
        let pending = handle(b.clone(), &alice, 9, 3, 0, req);
        let resp: ProduceResponse = answer(ApiKey::Produce, 9, pending).await.unwrap();
        let refused = ResponseError::TransactionalIdAuthorizationFailed.code();
        assert_eq!(codes(&resp), vec![("ok".into(), refused, -1)]);
        assert_eq!(
            b.broker.partition("ok", 0).unwrap().log().log_end_offset(),
            1
        );
    }
}
