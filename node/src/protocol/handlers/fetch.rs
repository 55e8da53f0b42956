//! Fetch: stored batches returned as they are on disk, with long polling on min_bytes and
//! max_wait_ms, per-partition and per-response byte limits (KIP-74 semantics).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::ProducerId;
use kafka_protocol::messages::{FetchRequest, FetchResponse};

use crate::broker::Reader;
use crate::error::Error;
use crate::node::Node;
use crate::security::Caller;
use strata_security::acl::{Operation, ResourceType};

/// Fetch sessions are not kept: every fetch is a full fetch, and session id 0 tells clients so.
fn session_error(req: &FetchRequest) -> Option<i16> {
    if req.session_id != 0 {
        return Some(ResponseError::FetchSessionIdNotFound.code());
    }
    if req.session_epoch > 0 {
        return Some(ResponseError::InvalidFetchSessionEpoch.code());
    }
    None
}

/// The replica id of a follower's fetch (-1 or less for a consumer).
fn replica_id(v: i16, req: &FetchRequest) -> i32 {
    if v >= 15 {
        req.replica_state.replica_id.0
    } else {
        req.replica_id.0
    }
}

/// Whether the fetch is a consumer's (quotas apply) rather than a follower's.
pub fn is_consumer(v: i16, req: &FetchRequest) -> bool {
    replica_id(v, req) < 0
}

/// The record bytes a response carries (what the consumer byte rate counts).
pub fn records_bytes(resp: &FetchResponse) -> usize {
    resp.responses
        .iter()
        .flat_map(|t| t.partitions.iter())
        .map(|p| p.records.as_ref().map_or(0, |r| r.len()))
        .sum()
}

/// The answer to a throttled fetch: no partitions, as Kafka's throttled response (this
/// node keeps no fetch sessions, so there is no session to carry over).
pub fn throttled(resp: &FetchResponse) -> FetchResponse {
    build!(FetchResponse {
        error_code: resp.error_code,
        session_id: 0
    })
}

/// Which of the request's topics the caller may fetch from, in request order. A follower
/// needs ClusterAction on the cluster for all of them; a consumer needs Read on each topic
/// (by its name; a topic id that names no topic stays allowed, to be UNKNOWN_TOPIC_ID).
fn readable(b: &Node, cx: &Caller, v: i16, req: &FetchRequest) -> Vec<bool> {
    if replica_id(v, req) >= 0 {
        let ok = super::authz::on_cluster(b, cx, Operation::ClusterAction);
        return vec![ok; req.topics.len()];
    }
    req.topics
        .iter()
        .map(|ft| {
            let name = if v >= 13 {
                b.broker.topic_by_id(ft.topic_id).map(|t| t.name)
            } else {
                Some(ft.topic.0.to_string())
            };
            name.is_none_or(|n| {
                b.security
                    .authorize(cx, Operation::Read, ResourceType::Topic, &n)
            })
        })
        .collect()
}

async fn collect(
    b: &Arc<Node>,
    v: i16,
    req: &FetchRequest,
    readable: &[bool],
) -> (FetchResponse, usize, bool) {
    // A follower's fetch (replica id set) reads to the log end and reports its progress;
    // a consumer's reads only what the ISR has (below the high watermark).
    let replica = replica_id(v, req);
    let mut remaining = req.max_bytes.max(0) as usize;
    let mut total = 0usize;
    let mut any_error = false;
    let mut responses = Vec::with_capacity(req.topics.len());
    for (ft, &may_read) in req.topics.iter().zip(readable) {
        let view = if v >= 13 {
            b.broker.topic_by_id(ft.topic_id)
        } else {
            b.broker.topic(ft.topic.0.as_str())
        };
        let mut parts = Vec::with_capacity(ft.partitions.len());
        for fp in &ft.partitions {
            let mut pd = build!(PartitionData {
                partition_index: fp.partition,
                high_watermark: -1,
                last_stable_offset: -1,
                log_start_offset: -1,
                aborted_transactions: Some(vec![]),
                preferred_read_replica: kafka_protocol::messages::BrokerId(-1),
                records: Some(Bytes::new())
            });
            // Refused partitions do not end the wait for the others, as in Kafka.
            if !may_read {
                pd.error_code = ResponseError::TopicAuthorizationFailed.code();
                parts.push(pd);
                continue;
            }
            let Some(view) = &view else {
                pd.error_code = if v >= 13 {
                    ResponseError::UnknownTopicId.code()
                } else {
                    ResponseError::UnknownTopicOrPartition.code()
                };
                any_error = true;
                parts.push(pd);
                continue;
            };
            let Some(part) = b.broker.partition(&view.name, fp.partition) else {
                pd.error_code = ResponseError::UnknownTopicOrPartition.code();
                any_error = true;
                parts.push(pd);
                continue;
            };
            if !part.is_leader() {
                pd.error_code = ResponseError::NotLeaderOrFollower.code();
                any_error = true;
                parts.push(pd);
                continue;
            }
            let epoch = part.leader_epoch();
            if fp.current_leader_epoch >= 0 && fp.current_leader_epoch != epoch {
                pd.error_code = if fp.current_leader_epoch < epoch {
                    ResponseError::FencedLeaderEpoch.code()
                } else {
                    ResponseError::UnknownLeaderEpoch.code()
                };
                any_error = true;
                parts.push(pd);
                continue;
            }
            let limit = (fp.partition_max_bytes.max(0) as usize).min(remaining);
            if replica >= 0 {
                b.replicator
                    .on_replica_fetch(&part, replica, fp.fetch_offset);
            }
            let reader = if replica >= 0 {
                Reader::Follower
            } else if v >= 4 && req.isolation_level == 1 {
                Reader::Committed
            } else {
                Reader::Uncommitted
            };
            let read = b
                .broker
                .read(&part, fp.fetch_offset, limit, total == 0, reader)
                .await;
            pd.high_watermark = read.high_watermark;
            pd.last_stable_offset = read.last_stable_offset;
            if reader == Reader::Committed {
                pd.aborted_transactions = Some(
                    read.aborted
                        .iter()
                        .map(|a| {
                            build!(AbortedTransaction {
                                producer_id: ProducerId(a.producer_id),
                                first_offset: a.first_offset
                            })
                        })
                        .collect(),
                );
            }
            pd.log_start_offset = read.log_start_offset;
            let result = read.records;
            match result {
                Ok(Some(bytes)) => {
                    remaining = remaining.saturating_sub(bytes.len());
                    total += bytes.len();
                    pd.records = Some(bytes);
                }
                Ok(None) => {}
                Err(
                    e @ (Error::OffsetOutOfRange { .. }
                    | Error::Kafka {
                        code: ResponseError::OffsetMovedToTieredStorage,
                        ..
                    }),
                ) => {
                    tracing::debug!(topic = %view.name, partition = fp.partition, error = %e, "fetch out of range");
                    pd.error_code = e.code();
                    any_error = true;
                }
                Err(e) => {
                    tracing::warn!(topic = %view.name, partition = fp.partition, error = %e, "fetch read failed");
                    pd.error_code = e.code();
                    any_error = true;
                }
            }
            parts.push(pd);
        }
        responses.push(build!(FetchableTopicResponse {
            topic: ft.topic.clone(),
            topic_id: view.as_ref().map(|t| t.meta.id).unwrap_or(ft.topic_id),
            partitions: parts
        }));
    }
    (
        build!(FetchResponse {
            responses: responses,
            session_id: 0
        }),
        total,
        any_error,
    )
}

/// Answer a fetch, waiting up to max_wait_ms for min_bytes of data.
pub async fn handle(b: Arc<Node>, cx: &Caller, v: i16, req: FetchRequest) -> FetchResponse {
    if let Some(code) = session_error(&req) {
        return build!(FetchResponse {
            error_code: code,
            session_id: 0
        });
    }
    let readable = readable(&b, cx, v, &req);
    // Every topic refused: answer now (Kafka does not wait without a partition to read).
    if !readable.is_empty() && !readable.contains(&true) {
        return collect(&b, v, &req, &readable).await.0;
    }
    let deadline = Instant::now() + Duration::from_millis(req.max_wait_ms.clamp(0, 300_000) as u64);
    let mut appended = b.broker.subscribe_appends();
    loop {
        appended.borrow_and_update();
        let (resp, bytes, any_error) = collect(&b, v, &req, &readable).await;
        let now = Instant::now();
        if bytes >= req.min_bytes.max(0) as usize
            || any_error
            || now >= deadline
            || b.is_shutting_down()
        {
            return resp;
        }
        if tokio::time::timeout(deadline - now, appended.changed())
            .await
            .is_err()
        {
            // Deadline: answer with whatever there is now.
            return collect(&b, v, &req, &readable).await.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::tests::make_batch;
    use crate::protocol::handlers::authz::testing::{admin, allow, node, user};
    use crate::protocol::handlers::topic_name;
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::BrokerId;

    fn request(replica: i32, topics: &[&str]) -> FetchRequest {
        build!(FetchRequest {
            replica_id: BrokerId(replica),
            max_wait_ms: 5000,
            min_bytes: 1 << 20,
            session_epoch: -1,
            topics: topics
                .iter()
                .map(|t| build!(FetchTopic {
                    topic: topic_name(t),
                    partitions: vec![build!(FetchPartition {
                        partition_max_bytes: 1 << 20
                    })]
                }))
                .collect()
        })
    }

    /// (topic, error code, bytes of records) per partition.
    fn codes(r: &FetchResponse) -> Vec<(String, i16, usize)> {
        r.responses
            .iter()
            .flat_map(|t| {
                t.partitions.iter().map(move |p| {
                    let n = p.records.as_ref().map_or(0, |r| r.len());
                    (t.topic.0.to_string(), p.error_code, n)
                })
            })
            .collect()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn consumers_need_read_and_followers_cluster_action() {
        let dir = tempfile::tempdir().unwrap();
        let b = node(
            dir.path(),
            &[allow("alice", Operation::Read, ResourceType::Topic, "a")],
        )
        .await;
        for t in ["a", "b"] {
            b.broker
                .create_topic(t, 1, 1, Default::default(), false)
                .await
                .unwrap();
            let part = b.broker.partition(t, 0).unwrap();
            let (info, _) = b
                .broker
                .append(&part, make_batch(&[b"v"], 1, -1, -1))
                .unwrap();
            b.broker
                .complete_write(&part, info.last_offset, -1, Duration::from_secs(5))
                .await
                .unwrap();
        }
        let alice = user("alice");
        let denied = ResponseError::TopicAuthorizationFailed.code();
        // A consumer: the readable topic's records, the other refused.
        let mut req = request(-1, &["a", "b"]);
        req.min_bytes = 1;
        let resp = handle(b.clone(), &alice, 12, req).await;
        let got = codes(&resp);
        assert_eq!((got[0].0.as_str(), got[0].1), ("a", 0));
        assert!(got[0].2 > 0, "{got:?}");
        assert_eq!(got[1], ("b".into(), denied, 0));

        // Nothing readable: the answer comes at once, not after max_wait_ms.
        let started = Instant::now();
        let resp = handle(b.clone(), &alice, 12, request(-1, &["b"])).await;
        assert_eq!(codes(&resp), vec![("b".into(), denied, 0)]);
        assert!(started.elapsed() < Duration::from_secs(2));

        // A follower's fetch without ClusterAction: every partition refused.
        let resp = handle(b.clone(), &alice, 12, request(1, &["a", "b"])).await;
        assert_eq!(
            codes(&resp),
            vec![("a".into(), denied, 0), ("b".into(), denied, 0)]
        );
        // With it (a super user), the follower reads.
        let mut req = request(1, &["a"]);
        req.min_bytes = 1;
        let resp = handle(b.clone(), &admin(), 12, req).await;
        assert_eq!(codes(&resp)[0].1, 0);
    }
}
