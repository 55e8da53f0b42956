//! ListOffsets, OffsetForLeaderEpoch and DeleteRecords.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::list_offsets_request::ListOffsetsPartition;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::*;

use crate::broker::{Partition, TopicView};
use crate::error::Error;
use crate::node::Node;

/// ListOffsets special timestamps.
const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;

fn lookup(b: &Node, topic: &str, p: i32) -> Result<(TopicView, Arc<Partition>), i16> {
    let view = b
        .broker
        .topic(topic)
        .ok_or(ResponseError::UnknownTopicOrPartition.code())?;
    // Hosted elsewhere: clients refresh metadata and go to the leader.
    let part = b
        .broker
        .partition(topic, p)
        .ok_or(ResponseError::NotLeaderOrFollower.code())?;
    if !part.is_leader() {
        return Err(ResponseError::NotLeaderOrFollower.code());
    }
    Ok((view, part))
}

fn epoch_check(current: i32, epoch: i32) -> Result<(), i16> {
    if current >= 0 && current < epoch {
        return Err(ResponseError::FencedLeaderEpoch.code());
    }
    if current > epoch {
        return Err(ResponseError::UnknownLeaderEpoch.code());
    }
    Ok(())
}

/// Answer ListOffsets. Asynchronous because lookups by time on tiered partitions may
/// read from the bucket.
pub async fn list_offsets(b: Arc<Node>, v: i16, req: ListOffsetsRequest) -> ListOffsetsResponse {
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            let mut r = build!(ListOffsetsPartitionResponse {
                partition_index: p.partition_index,
                timestamp: -1,
                offset: -1,
                leader_epoch: -1
            });
            match list_offset(&b, t.name.0.as_str(), p).await {
                Ok((offset, ts, epoch)) => {
                    r.offset = offset;
                    r.timestamp = ts;
                    // The field exists from v4; older versions must leave it unset.
                    if v >= 4 {
                        r.leader_epoch = epoch;
                    }
                }
                Err(code) => r.error_code = code,
            }
            partitions.push(r);
        }
        topics.push(build!(ListOffsetsTopicResponse {
            partitions: partitions,
            name: t.name
        }));
    }
    build!(ListOffsetsResponse { topics: topics })
}

/// One partition's ListOffsets answer: (offset, timestamp, leader epoch).
async fn list_offset(
    b: &Node,
    topic: &str,
    p: &ListOffsetsPartition,
) -> Result<(i64, i64, i32), i16> {
    let (_, part) = lookup(b, topic, p.partition_index)?;
    let epoch = part.leader_epoch();
    epoch_check(p.current_leader_epoch, epoch)?;
    let code = |e: Error| e.code();
    let found = |r: Option<(i64, i64)>| match r {
        Some((o, ts)) => (o, ts, epoch),
        None => (-1, -1, -1),
    };
    Ok(match p.timestamp {
        LATEST => (part.high_watermark(), -1, epoch),
        // Tiering hook: the earliest offset is the bucket's start, and lookups by time
        // include the bucket's part of the log; EARLIEST_LOCAL stays the local log's.
        EARLIEST => (b.broker.earliest_offset(&part).map_err(code)?, -1, epoch),
        EARLIEST_LOCAL => (part.log().log_start_offset(), -1, epoch),
        MAX_TIMESTAMP => found(b.broker.max_timestamp_offset(&part).await.map_err(code)?),
        ts if ts >= 0 => found(
            b.broker
                .offset_for_timestamp(&part, ts)
                .await
                .map_err(code)?,
        ),
        _ => return Err(ResponseError::InvalidRequest.code()),
    })
}

/// Answer OffsetForLeaderEpoch from the partition's epoch history.
pub fn offset_for_leader_epoch(
    b: &Arc<Node>,
    _v: i16,
    req: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            build!(OffsetForLeaderTopicResult {
                partitions: t
                    .partitions
                    .iter()
                    .map(|p| {
                        let mut r = build!(EpochEndOffset {
                            partition: p.partition,
                            leader_epoch: -1,
                            end_offset: -1
                        });
                        match lookup(b, t.topic.0.as_str(), p.partition).and_then(|(_, part)| {
                            let epoch = part.leader_epoch();
                            epoch_check(p.current_leader_epoch, epoch).map(|_| part)
                        }) {
                            Ok(part) => {
                                let (epoch, end) = part.log().epoch_end_offset(p.leader_epoch);
                                r.leader_epoch = epoch;
                                r.end_offset = end;
                            }
                            Err(code) => r.error_code = code,
                        }
                        r
                    })
                    .collect(),
                topic: t.topic
            })
        })
        .collect();
    build!(OffsetForLeaderEpochResponse { topics: topics })
}

/// Answer DeleteRecords by advancing log start offsets (asynchronous: on tiered partitions
/// the bucket's manifest moves first).
pub async fn delete_records(
    b: Arc<Node>,
    _v: i16,
    req: DeleteRecordsRequest,
) -> DeleteRecordsResponse {
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            let mut r = build!(DeleteRecordsPartitionResult {
                partition_index: p.partition_index,
                low_watermark: -1
            });
            match lookup(&b, t.name.0.as_str(), p.partition_index) {
                Ok((_, part)) => match b.broker.delete_records(&part, p.offset).await {
                    Ok(lw) => r.low_watermark = lw,
                    Err(e) => r.error_code = e.code(),
                },
                Err(code) => r.error_code = code,
            }
            partitions.push(r);
        }
        topics.push(build!(DeleteRecordsTopicResult {
            partitions: partitions,
            name: t.name
        }));
    }
    build!(DeleteRecordsResponse { topics: topics })
}
