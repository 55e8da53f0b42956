//! Produce: validate, append in arrival order, then wait for durability per the flush policy.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse};

use super::{reply, s};
use crate::broker::Partition;
use crate::error::Error;
use crate::node::Node;
use crate::protocol::{Pending, Reply};

struct Appended {
    part: Arc<Partition>,
    last_offset: i64,
}

/// Append every partition's records now; the returned future waits for fsync and answers.
pub fn handle(b: Arc<Node>, v: i16, correlation_id: i32, req: ProduceRequest) -> Pending {
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
        let view = match &topic {
            Some(name) => b.broker.topic(name),
            None => None,
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
        for (ti, pi, a) in to_sync {
            if let Err(e) = b
                .broker
                .complete_write(&a.part, a.last_offset, acks, timeout)
                .await
            {
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
                responses: responses
            }),
        )
    })
}
