//! Fetch: stored batches returned as they are on disk, with long polling on min_bytes and
//! max_wait_ms, per-partition and per-response byte limits (KIP-74 semantics).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse};

use crate::error::Error;
use crate::node::Node;

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

async fn collect(b: &Arc<Node>, v: i16, req: &FetchRequest) -> (FetchResponse, usize, bool) {
    // A follower's fetch (replica id set) reads to the log end and reports its progress;
    // a consumer's reads only what the ISR has (below the high watermark).
    let replica = if v >= 15 {
        req.replica_state.replica_id.0
    } else {
        req.replica_id.0
    };
    let mut remaining = req.max_bytes.max(0) as usize;
    let mut total = 0usize;
    let mut any_error = false;
    let mut responses = Vec::with_capacity(req.topics.len());
    for ft in &req.topics {
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
            let read = b
                .broker
                .read(&part, fp.fetch_offset, limit, total == 0, replica >= 0)
                .await;
            pd.high_watermark = read.high_watermark;
            pd.last_stable_offset = read.high_watermark;
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
pub async fn handle(b: Arc<Node>, v: i16, req: FetchRequest) -> FetchResponse {
    if let Some(code) = session_error(&req) {
        return build!(FetchResponse {
            error_code: code,
            session_id: 0
        });
    }
    let deadline = Instant::now() + Duration::from_millis(req.max_wait_ms.clamp(0, 300_000) as u64);
    let mut appended = b.broker.subscribe_appends();
    loop {
        appended.borrow_and_update();
        let (resp, bytes, any_error) = collect(&b, v, &req).await;
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
            return collect(&b, v, &req).await.0;
        }
    }
}
