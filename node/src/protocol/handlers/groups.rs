//! Consumer group APIs: JoinGroup, SyncGroup, Heartbeat, LeaveGroup, OffsetCommit,
//! OffsetFetch, ListGroups, DescribeGroups, DeleteGroups, OffsetDelete.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::*;

use super::{reply, s};
use crate::coordinator::group::{GroupState, JoinRequest, JoinResult, Outcome, SyncResult};
use crate::coordinator::{CommitEntry, PendingWrite};
use crate::error::Error;
use crate::node::Node;
use crate::protocol::Frame;
use crate::protocol::Pending;

fn join_response(v: i16, r: JoinResult) -> JoinGroupResponse {
    build!(JoinGroupResponse {
        error_code: r.error,
        generation_id: r.generation,
        protocol_type: r
            .protocol_type
            .map(s)
            .or_else(|| if v >= 7 { None } else { Some(s("")) }),
        protocol_name: r
            .protocol_name
            .map(s)
            .or_else(|| if v >= 7 { None } else { Some(s("")) }),
        leader: s(r.leader),
        skip_assignment: r.skip_assignment,
        member_id: s(r.member_id),
        members: r
            .members
            .into_iter()
            .map(|(id, inst, meta)| build!(JoinGroupResponseMember {
                member_id: s(id),
                group_instance_id: inst.map(s),
                metadata: meta
            }))
            .collect()
    })
}

/// Answer JoinGroup (waits for the rebalance to complete).
pub fn join_group(b: Arc<Node>, frame: &Frame, req: JoinGroupRequest) -> Pending {
    let v = frame.header.request_api_version;
    let cid = frame.header.correlation_id;
    let group = req.group_id.0.to_string();
    if let Err(e) = b.groups.check_available(&group) {
        let r = JoinResult {
            error: e.code(),
            generation: -1,
            member_id: req.member_id.to_string(),
            ..Default::default()
        };
        return Box::pin(std::future::ready(reply(
            ApiKey::JoinGroup,
            v,
            cid,
            &join_response(v, r),
        )));
    }
    let jr = JoinRequest {
        member_id: req.member_id.to_string(),
        instance_id: req.group_instance_id.as_ref().map(|x| x.to_string()),
        client_id: frame
            .header
            .client_id
            .as_ref()
            .map(|c| c.to_string())
            .unwrap_or_default(),
        client_host: frame.client_host.clone(),
        session_timeout_ms: req.session_timeout_ms,
        // v0 has no rebalance timeout: Kafka uses the session timeout.
        rebalance_timeout_ms: if v == 0 {
            req.session_timeout_ms
        } else {
            req.rebalance_timeout_ms
        },
        protocol_type: req.protocol_type.to_string(),
        protocols: req
            .protocols
            .iter()
            .map(|p| (p.name.to_string(), p.metadata.clone()))
            .collect(),
        require_known_member_id: v >= 4,
        supports_skip_assignment: v >= 9,
    };
    let member = jr.member_id.clone();
    let outcome = b.groups.with_group(&group, true, |g, cfg| {
        g.join(jr, cfg, std::time::Instant::now())
    });
    Box::pin(async move {
        let result = match outcome {
            Some(Outcome::Now(r)) => r,
            Some(Outcome::Wait(rx)) => rx.await.unwrap_or_else(|_| JoinResult {
                error: ResponseError::UnknownMemberId.code(),
                generation: -1,
                member_id: member.clone(),
                ..Default::default()
            }),
            None => JoinResult {
                error: ResponseError::UnknownMemberId.code(),
                generation: -1,
                member_id: member,
                ..Default::default()
            },
        };
        reply(ApiKey::JoinGroup, v, cid, &join_response(v, result))
    })
}

fn sync_response(v: i16, r: SyncResult) -> SyncGroupResponse {
    let _ = v;
    build!(SyncGroupResponse {
        error_code: r.error,
        protocol_type: r.protocol_type.map(s),
        protocol_name: r.protocol_name.map(s),
        assignment: r.assignment
    })
}

/// Answer SyncGroup (followers wait for the leader's assignment).
pub fn sync_group(b: Arc<Node>, frame: &Frame, req: SyncGroupRequest) -> Pending {
    let v = frame.header.request_api_version;
    let cid = frame.header.correlation_id;
    let group = req.group_id.0.to_string();
    let err = |code: i16| SyncResult {
        error: code,
        ..Default::default()
    };
    if let Err(e) = b.groups.check_available(&group) {
        return Box::pin(std::future::ready(reply(
            ApiKey::SyncGroup,
            v,
            cid,
            &sync_response(v, err(e.code())),
        )));
    }
    let assignments = req
        .assignments
        .iter()
        .map(|a| (a.member_id.to_string(), a.assignment.clone()))
        .collect();
    let outcome = b.groups.with_group(&group, false, |g, _| {
        g.sync(
            req.member_id.as_str(),
            req.group_instance_id.as_deref(),
            req.generation_id,
            req.protocol_type.as_deref(),
            req.protocol_name.as_deref(),
            assignments,
            std::time::Instant::now(),
        )
    });
    Box::pin(async move {
        let r = match outcome {
            Some(Outcome::Now(r)) => r,
            Some(Outcome::Wait(rx)) => rx
                .await
                .unwrap_or_else(|_| err(ResponseError::RebalanceInProgress.code())),
            None => err(ResponseError::UnknownMemberId.code()),
        };
        reply(ApiKey::SyncGroup, v, cid, &sync_response(v, r))
    })
}

/// Answer Heartbeat.
pub fn heartbeat(b: &Arc<Node>, _v: i16, req: HeartbeatRequest) -> HeartbeatResponse {
    let group = req.group_id.0.to_string();
    let code = match b.groups.check_available(&group) {
        Err(e) => e.code(),
        Ok(()) => b
            .groups
            .with_group(&group, false, |g, _| {
                g.heartbeat(
                    req.member_id.as_str(),
                    req.group_instance_id.as_deref(),
                    req.generation_id,
                    std::time::Instant::now(),
                )
            })
            .unwrap_or(ResponseError::UnknownMemberId.code()),
    };
    build!(HeartbeatResponse { error_code: code })
}

/// Answer LeaveGroup (one member before v3, a batch from v3).
pub fn leave_group(b: &Arc<Node>, v: i16, req: LeaveGroupRequest) -> LeaveGroupResponse {
    use kafka_protocol::messages::leave_group_response::MemberResponse;
    let group = req.group_id.0.to_string();
    if let Err(e) = b.groups.check_available(&group) {
        return build!(LeaveGroupResponse {
            error_code: e.code()
        });
    }
    let members: Vec<(String, Option<String>)> = if v >= 3 {
        req.members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.as_ref().map(|x| x.to_string()),
                )
            })
            .collect()
    } else {
        vec![(req.member_id.to_string(), None)]
    };
    let codes: Vec<i16> = b
        .groups
        .with_group(&group, false, |g, cfg| {
            let now = std::time::Instant::now();
            members
                .iter()
                .map(|(id, inst)| g.leave(id, inst.as_deref(), cfg, now))
                .collect()
        })
        .unwrap_or_else(|| vec![ResponseError::UnknownMemberId.code(); members.len()]);
    if v >= 3 {
        let responses = members
            .into_iter()
            .zip(codes)
            .map(|((id, inst), code)| {
                build!(MemberResponse {
                    member_id: s(id),
                    group_instance_id: inst.map(s),
                    error_code: code
                })
            })
            .collect();
        build!(LeaveGroupResponse { members: responses })
    } else {
        build!(LeaveGroupResponse {
            error_code: codes.first().copied().unwrap_or(0)
        })
    }
}

async fn durable(b: &Node, w: Option<PendingWrite>) -> i16 {
    // Group writes are acks=all writes to the offsets topic, as in Kafka.
    match w {
        Some(w) => match b
            .broker
            .complete_write(
                &w.partition,
                w.last_offset,
                -1,
                std::time::Duration::from_secs(5),
            )
            .await
        {
            Ok(()) => 0,
            // Kafka reports these to group clients as coordinator moves, so they retry.
            Err(Error::NotLeader(_)) => ResponseError::NotCoordinator.code(),
            Err(e @ Error::Kafka { .. }) => {
                tracing::debug!(error = %e, "group write not replicated");
                ResponseError::CoordinatorNotAvailable.code()
            }
            Err(e) => e.code(),
        },
        None => 0,
    }
}

/// Answer OffsetCommit once the commit is durable.
pub fn offset_commit(b: Arc<Node>, frame: &Frame, req: OffsetCommitRequest) -> Pending {
    let v = frame.header.request_api_version;
    let cid = frame.header.correlation_id;
    let group = req.group_id.0.to_string();
    let entries: Vec<CommitEntry> = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(move |p| CommitEntry {
                topic: t.name.0.to_string(),
                partition: p.partition_index,
                offset: p.committed_offset,
                leader_epoch: p.committed_leader_epoch,
                metadata: p
                    .committed_metadata
                    .as_ref()
                    .map(|m| m.to_string())
                    .unwrap_or_default(),
            })
        })
        .collect();
    let result = b.groups.commit(
        &group,
        req.generation_id_or_member_epoch,
        req.member_id.as_str(),
        req.group_instance_id.as_deref(),
        entries,
    );
    Box::pin(async move {
        let codes: Vec<i16> = match result {
            Err(e) => vec![e.code(); req.topics.iter().map(|t| t.partitions.len()).sum()],
            Ok((codes, write)) => {
                let code = durable(&b, write).await;
                codes
                    .into_iter()
                    .map(|c| if c == 0 { code } else { c })
                    .collect()
            }
        };
        let mut it = codes.into_iter();
        let topics = req
            .topics
            .into_iter()
            .map(|t| {
                build!(OffsetCommitResponseTopic {
                    partitions: t
                        .partitions
                        .iter()
                        .map(|p| build!(OffsetCommitResponsePartition {
                            partition_index: p.partition_index,
                            error_code: it.next().unwrap_or(0)
                        }))
                        .collect(),
                    name: t.name
                })
            })
            .collect();
        reply(
            ApiKey::OffsetCommit,
            v,
            cid,
            &build!(OffsetCommitResponse { topics: topics }),
        )
    })
}

type Fetched = Result<
    Vec<(
        String,
        i32,
        Option<crate::coordinator::records::OffsetValue>,
    )>,
    ResponseError,
>;

fn fetch_one(b: &Node, group: &str, topics: Option<Vec<(String, Vec<i32>)>>) -> Fetched {
    let wanted = topics.map(|ts| {
        ts.into_iter()
            .flat_map(|(t, ps)| ps.into_iter().map(move |p| (t.clone(), p)))
            .collect()
    });
    b.groups.fetch_offsets(group, wanted)
}

/// (partition, committed offset, leader epoch, metadata).
type PartitionOffset = (i32, i64, i32, String);

/// Group (topic -> [(partition, offset, epoch, metadata)]) in request order.
fn grouped(
    list: Vec<(
        String,
        i32,
        Option<crate::coordinator::records::OffsetValue>,
    )>,
) -> Vec<(String, Vec<PartitionOffset>)> {
    let mut out: Vec<(String, Vec<PartitionOffset>)> = Vec::new();
    for (t, p, v) in list {
        let entry = match v {
            Some(v) => (p, v.offset, v.leader_epoch, v.metadata),
            None => (p, -1, -1, String::new()),
        };
        match out.iter_mut().find(|(name, _)| *name == t) {
            Some((_, ps)) => ps.push(entry),
            None => out.push((t, vec![entry])),
        }
    }
    out
}

/// Answer OffsetFetch (one group before v8, a batch of groups from v8).
pub fn offset_fetch(b: &Arc<Node>, v: i16, req: OffsetFetchRequest) -> OffsetFetchResponse {
    if v >= 8 {
        let groups = req
            .groups
            .iter()
            .map(|g| {
                let topics = g.topics.as_ref().map(|ts| {
                    ts.iter()
                        .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
                        .collect()
                });
                match fetch_one(b, g.group_id.0.as_str(), topics) {
                    Err(e) => build!(OffsetFetchResponseGroup {
                        group_id: g.group_id.clone(),
                        error_code: e.code()
                    }),
                    Ok(list) => build!(OffsetFetchResponseGroup {
                        group_id: g.group_id.clone(),
                        topics: grouped(list)
                            .into_iter()
                            .map(|(t, ps)| build!(OffsetFetchResponseTopics {
                                name: super::topic_name(&t),
                                partitions: ps
                                    .into_iter()
                                    .map(|(p, o, e, m)| build!(OffsetFetchResponsePartitions {
                                        partition_index: p,
                                        committed_offset: o,
                                        committed_leader_epoch: e,
                                        metadata: Some(s(m))
                                    }))
                                    .collect()
                            }))
                            .collect()
                    }),
                }
            })
            .collect();
        return build!(OffsetFetchResponse { groups: groups });
    }
    let topics = req.topics.as_ref().map(|ts| {
        ts.iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
            .collect()
    });
    match fetch_one(b, req.group_id.0.as_str(), topics) {
        Err(e) => {
            // Before v2 errors were per partition only.
            let topics = if v < 2 {
                req.topics
                    .unwrap_or_default()
                    .into_iter()
                    .map(|t| {
                        build!(OffsetFetchResponseTopic {
                            partitions: t
                                .partition_indexes
                                .iter()
                                .map(|p| build!(OffsetFetchResponsePartition {
                                    partition_index: *p,
                                    committed_offset: -1,
                                    committed_leader_epoch: -1,
                                    metadata: Some(s("")),
                                    error_code: e.code()
                                }))
                                .collect(),
                            name: t.name
                        })
                    })
                    .collect()
            } else {
                vec![]
            };
            build!(OffsetFetchResponse {
                error_code: e.code(),
                topics: topics
            })
        }
        Ok(list) => build!(OffsetFetchResponse {
            topics: grouped(list)
                .into_iter()
                .map(|(t, ps)| build!(OffsetFetchResponseTopic {
                    name: super::topic_name(&t),
                    partitions: ps
                        .into_iter()
                        .map(|(p, o, e, m)| build!(OffsetFetchResponsePartition {
                            partition_index: p,
                            committed_offset: o,
                            committed_leader_epoch: e,
                            metadata: Some(s(m))
                        }))
                        .collect()
                }))
                .collect()
        }),
    }
}

/// Answer ListGroups, with the v4 state filter and v5 type filter.
pub fn list_groups(b: &Arc<Node>, _v: i16, req: ListGroupsRequest) -> ListGroupsResponse {
    let groups = b
        .groups
        .list()
        .into_iter()
        .filter(|(_, _, st)| {
            req.states_filter.is_empty()
                || req
                    .states_filter
                    .iter()
                    .any(|f| f.as_str().eq_ignore_ascii_case(st.name()))
        })
        .filter(|_| {
            req.types_filter.is_empty()
                || req
                    .types_filter
                    .iter()
                    .any(|t| t.as_str().eq_ignore_ascii_case("classic"))
        })
        .map(|(id, pt, st)| {
            build!(ListedGroup {
                group_id: GroupId(s(id)),
                protocol_type: s(pt),
                group_state: s(st.name()),
                group_type: s("classic")
            })
        })
        .collect();
    build!(ListGroupsResponse { groups: groups })
}

/// Answer DescribeGroups.
pub fn describe_groups(
    b: &Arc<Node>,
    _v: i16,
    req: DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    let groups = req
        .groups
        .into_iter()
        .map(|gid| {
            let id = gid.0.to_string();
            if let Err(e) = b.groups.check_available(&id) {
                return build!(DescribedGroup {
                    group_id: gid,
                    error_code: e.code(),
                    group_state: s("")
                });
            }
            b.groups
                .with_group(&id, false, |g, _| {
                    let proto = g.protocol.clone().unwrap_or_default();
                    let stable_ish = matches!(
                        g.state,
                        GroupState::Stable | GroupState::CompletingRebalance
                    );
                    build!(DescribedGroup {
                        group_id: gid.clone(),
                        group_state: s(g.state.name()),
                        protocol_type: s(g.protocol_type.clone().unwrap_or_default()),
                        protocol_data: s(if g.state == GroupState::Stable {
                            proto.clone()
                        } else {
                            String::new()
                        }),
                        authorized_operations: i32::MIN,
                        members: g
                            .members
                            .values()
                            .map(|m| build!(DescribedGroupMember {
                                member_id: s(m.id.clone()),
                                group_instance_id: m.instance_id.clone().map(s),
                                client_id: s(m.client_id.clone()),
                                client_host: s(m.client_host.clone()),
                                member_metadata: m
                                    .protocols
                                    .iter()
                                    .find(|(n, _)| *n == proto)
                                    .map(|(_, md)| md.clone())
                                    .unwrap_or_default(),
                                member_assignment: if stable_ish {
                                    m.assignment.clone()
                                } else {
                                    Default::default()
                                }
                            }))
                            .collect()
                    })
                })
                .unwrap_or_else(|| {
                    build!(DescribedGroup {
                        group_id: gid.clone(),
                        group_state: s("Dead"),
                        authorized_operations: i32::MIN
                    })
                })
        })
        .collect();
    build!(DescribeGroupsResponse { groups: groups })
}

/// Answer DeleteGroups.
pub fn delete_groups(b: Arc<Node>, frame: &Frame, req: DeleteGroupsRequest) -> Pending {
    use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
    let v = frame.header.request_api_version;
    let cid = frame.header.correlation_id;
    let results: Vec<(GroupId, Result<Option<PendingWrite>, ResponseError>)> = req
        .groups_names
        .into_iter()
        .map(|g| {
            let r = b.groups.delete_group(g.0.as_str());
            (g, r)
        })
        .collect();
    Box::pin(async move {
        let mut out = Vec::new();
        for (g, r) in results {
            let code = match r {
                Ok(w) => durable(&b, w).await,
                Err(e) => e.code(),
            };
            out.push(build!(DeletableGroupResult {
                group_id: g,
                error_code: code
            }));
        }
        reply(
            ApiKey::DeleteGroups,
            v,
            cid,
            &build!(DeleteGroupsResponse { results: out }),
        )
    })
}

/// Answer OffsetDelete.
pub fn offset_delete(b: Arc<Node>, frame: &Frame, req: OffsetDeleteRequest) -> Pending {
    use kafka_protocol::messages::offset_delete_response::{
        OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
    };
    let v = frame.header.request_api_version;
    let cid = frame.header.correlation_id;
    let parts: Vec<(String, i32)> = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| (t.name.0.to_string(), p.partition_index))
        })
        .collect();
    let result = b.groups.delete_offsets(req.group_id.0.as_str(), parts);
    Box::pin(async move {
        let resp = match result {
            Err(e) => build!(OffsetDeleteResponse {
                error_code: e.code()
            }),
            Ok((codes, w)) => {
                let wcode = durable(&b, w).await;
                let mut it = codes.into_iter();
                build!(OffsetDeleteResponse {
                    topics: req
                        .topics
                        .into_iter()
                        .map(|t| build!(OffsetDeleteResponseTopic {
                            partitions: t
                                .partitions
                                .iter()
                                .map(|p| {
                                    let c = it.next().unwrap_or(0);
                                    build!(OffsetDeleteResponsePartition {
                                        partition_index: p.partition_index,
                                        error_code: if c == 0 { wcode } else { c }
                                    })
                                })
                                .collect(),
                            name: t.name
                        }))
                        .collect()
                })
            }
        };
        reply(ApiKey::OffsetDelete, v, cid, &resp)
    })
}
