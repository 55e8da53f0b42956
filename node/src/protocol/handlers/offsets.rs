//! ListOffsets, OffsetForLeaderEpoch and DeleteRecords. A topic the caller may not act on
//! is TOPIC_AUTHORIZATION_FAILED on each of its partitions, without being looked up.

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
use crate::security::Caller;
use strata_security::acl::{Operation, ResourceType};

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

fn topic_allowed(b: &Node, cx: &Caller, op: Operation, topic: &str) -> bool {
    b.security.authorize(cx, op, ResourceType::Topic, topic)
}

const TOPIC_AUTHORIZATION_FAILED: i16 = ResponseError::TopicAuthorizationFailed.code();

/// Answer ListOffsets (Describe on each topic). Asynchronous because lookups by time on
/// tiered partitions may read from the bucket.
pub async fn list_offsets(
    b: Arc<Node>,
    cx: &Caller,
    v: i16,
    req: ListOffsetsRequest,
) -> ListOffsetsResponse {
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let allowed = topic_allowed(&b, cx, Operation::Describe, t.name.0.as_str());
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            let mut r = build!(ListOffsetsPartitionResponse {
                partition_index: p.partition_index,
                timestamp: -1,
                offset: -1,
                leader_epoch: -1
            });
            if !allowed {
                r.error_code = TOPIC_AUTHORIZATION_FAILED;
                partitions.push(r);
                continue;
            }
            match list_offset(&b, t.name.0.as_str(), p, req.isolation_level == 1).await {
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
    read_committed: bool,
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
        LATEST if read_committed => (part.last_stable_offset(), -1, epoch),
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

/// Answer OffsetForLeaderEpoch from the partition's epoch history. Followers need
/// ClusterAction on the cluster; consumers (KIP-320) Describe on each topic.
pub fn offset_for_leader_epoch(
    b: &Arc<Node>,
    cx: &Caller,
    _v: i16,
    req: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let cluster_action = super::authz::on_cluster(b, cx, Operation::ClusterAction);
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            if !cluster_action && !topic_allowed(b, cx, Operation::Describe, t.topic.0.as_str()) {
                return build!(OffsetForLeaderTopicResult {
                    partitions: t
                        .partitions
                        .iter()
                        .map(|p| build!(EpochEndOffset {
                            partition: p.partition,
                            error_code: TOPIC_AUTHORIZATION_FAILED,
                            leader_epoch: -1,
                            end_offset: -1
                        }))
                        .collect(),
                    topic: t.topic
                });
            }
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

/// Answer DeleteRecords (Delete on each topic) by advancing log start offsets
/// (asynchronous: on tiered partitions the bucket's manifest moves first).
pub async fn delete_records(
    b: Arc<Node>,
    cx: &Caller,
    _v: i16,
    req: DeleteRecordsRequest,
) -> DeleteRecordsResponse {
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let allowed = topic_allowed(&b, cx, Operation::Delete, t.name.0.as_str());
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            let mut r = build!(DeleteRecordsPartitionResult {
                partition_index: p.partition_index,
                low_watermark: -1
            });
            if !allowed {
                r.error_code = TOPIC_AUTHORIZATION_FAILED;
                partitions.push(r);
                continue;
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::handlers::authz::testing::{admin, allow, node, user};
    use crate::protocol::handlers::topic_name;
    use kafka_protocol::messages::delete_records_request::{
        DeleteRecordsPartition, DeleteRecordsTopic,
    };
    use kafka_protocol::messages::list_offsets_request::ListOffsetsTopic;
    use kafka_protocol::messages::offset_for_leader_epoch_request::{
        OffsetForLeaderPartition, OffsetForLeaderTopic,
    };

    #[tokio::test(flavor = "multi_thread")]
    async fn offsets_need_describe_and_deleting_records_delete() {
        let dir = tempfile::tempdir().unwrap();
        let b = node(
            dir.path(),
            &[allow(
                "alice",
                Operation::Describe,
                ResourceType::Topic,
                "a",
            )],
        )
        .await;
        for t in ["a", "b"] {
            b.broker
                .create_topic(t, 1, 1, Default::default(), false)
                .await
                .unwrap();
        }
        let alice = user("alice");
        let denied = TOPIC_AUTHORIZATION_FAILED;

        let req = build!(ListOffsetsRequest {
            replica_id: BrokerId(-1),
            topics: ["a", "b", "ghost"]
                .iter()
                .map(|t| build!(ListOffsetsTopic {
                    name: topic_name(t),
                    partitions: vec![build!(ListOffsetsPartition {
                        partition_index: 0,
                        timestamp: LATEST
                    })]
                }))
                .collect()
        });
        let resp = list_offsets(b.clone(), &alice, 5, req).await;
        let codes: Vec<(i16, i64)> = resp
            .topics
            .iter()
            .map(|t| (t.partitions[0].error_code, t.partitions[0].offset))
            .collect();
        assert_eq!(codes, vec![(0, 0), (denied, -1), (denied, -1)]);

        // Consumers need Describe on the topic; followers ClusterAction (the super user has).
        let req = build!(OffsetForLeaderEpochRequest {
            topics: ["a", "b"]
                .iter()
                .map(|t| build!(OffsetForLeaderTopic {
                    topic: topic_name(t),
                    partitions: vec![build!(OffsetForLeaderPartition {
                        partition: 0,
                        current_leader_epoch: -1,
                        leader_epoch: 0
                    })]
                }))
                .collect()
        });
        let codes = |r: OffsetForLeaderEpochResponse| -> Vec<i16> {
            r.topics
                .iter()
                .map(|t| t.partitions[0].error_code)
                .collect()
        };
        assert_eq!(
            codes(offset_for_leader_epoch(&b, &alice, 4, req.clone())),
            vec![0, denied]
        );
        assert_eq!(
            codes(offset_for_leader_epoch(&b, &admin(), 4, req)),
            vec![0, 0]
        );

        // Describe does not imply Delete.
        let req = build!(DeleteRecordsRequest {
            topics: vec![build!(DeleteRecordsTopic {
                name: topic_name("a"),
                partitions: vec![build!(DeleteRecordsPartition {
                    partition_index: 0,
                    offset: 0
                })]
            })]
        });
        let resp = delete_records(b.clone(), &alice, 2, req).await;
        assert_eq!(resp.topics[0].partitions[0].error_code, denied);
    }
}
