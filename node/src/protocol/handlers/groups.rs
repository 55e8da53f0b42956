//! Consumer group APIs: JoinGroup, SyncGroup, Heartbeat, LeaveGroup, OffsetCommit,
//! OffsetFetch, ListGroups, DescribeGroups, DeleteGroups, OffsetDelete.
//!
//! Authorization is Kafka's: taking part in a group (join, sync, heartbeat, leave, commit)
//! needs Read on it, looking at it Describe, deleting it or its offsets Delete; committed
//! offsets are per topic Read to write or delete and Describe to see.

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
use crate::security::Caller;
use strata_security::acl::{Operation, ResourceType};

fn group_allowed(b: &Node, cx: &Caller, op: Operation, group: &str) -> bool {
    b.security.authorize(cx, op, ResourceType::Group, group)
}

fn topic_allowed(b: &Node, cx: &Caller, op: Operation, topic: &str) -> bool {
    b.security.authorize(cx, op, ResourceType::Topic, topic)
}

const GROUP_AUTHORIZATION_FAILED: i16 = ResponseError::GroupAuthorizationFailed.code();
const TOPIC_AUTHORIZATION_FAILED: i16 = ResponseError::TopicAuthorizationFailed.code();

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
    if !group_allowed(&b, &frame.caller(), Operation::Read, &group) {
        // Kafka's error response: no member id.
        let r = JoinResult {
            error: GROUP_AUTHORIZATION_FAILED,
            generation: -1,
            ..Default::default()
        };
        return Box::pin(std::future::ready(reply(
            ApiKey::JoinGroup,
            v,
            cid,
            &join_response(v, r),
        )));
    }
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
    let refused = if group_allowed(&b, &frame.caller(), Operation::Read, &group) {
        b.groups.check_available(&group).err().map(|e| e.code())
    } else {
        Some(GROUP_AUTHORIZATION_FAILED)
    };
    if let Some(code) = refused {
        return Box::pin(std::future::ready(reply(
            ApiKey::SyncGroup,
            v,
            cid,
            &sync_response(v, err(code)),
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
pub fn heartbeat(b: &Arc<Node>, cx: &Caller, _v: i16, req: HeartbeatRequest) -> HeartbeatResponse {
    let group = req.group_id.0.to_string();
    if !group_allowed(b, cx, Operation::Read, &group) {
        return build!(HeartbeatResponse {
            error_code: GROUP_AUTHORIZATION_FAILED
        });
    }
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
pub fn leave_group(
    b: &Arc<Node>,
    cx: &Caller,
    v: i16,
    req: LeaveGroupRequest,
) -> LeaveGroupResponse {
    use kafka_protocol::messages::leave_group_response::MemberResponse;
    let group = req.group_id.0.to_string();
    if !group_allowed(b, cx, Operation::Read, &group) {
        return build!(LeaveGroupResponse {
            error_code: GROUP_AUTHORIZATION_FAILED
        });
    }
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

/// Answer OffsetCommit once the commit is durable. Without Read on the group every
/// partition is GROUP_AUTHORIZATION_FAILED; without Read on a topic its partitions are
/// TOPIC_AUTHORIZATION_FAILED and the others are still committed.
pub fn offset_commit(b: Arc<Node>, frame: &Frame, req: OffsetCommitRequest) -> Pending {
    let v = frame.header.request_api_version;
    let cid = frame.header.correlation_id;
    let cx = frame.caller();
    let group = req.group_id.0.to_string();
    let group_ok = group_allowed(&b, &cx, Operation::Read, &group);
    // Per request topic: the authorization error of all its partitions, if refused.
    let refused: Vec<Option<i16>> = req
        .topics
        .iter()
        .map(|t| {
            if !group_ok {
                Some(GROUP_AUTHORIZATION_FAILED)
            } else if !topic_allowed(&b, &cx, Operation::Read, t.name.0.as_str()) {
                Some(TOPIC_AUTHORIZATION_FAILED)
            } else {
                None
            }
        })
        .collect();
    let entries: Vec<CommitEntry> = req
        .topics
        .iter()
        .zip(&refused)
        .filter(|(_, r)| r.is_none())
        .flat_map(|(t, _)| {
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
    let allowed = entries.len();
    // Nothing the caller may commit: Kafka answers without asking the coordinator.
    let result = (allowed > 0).then(|| {
        b.groups.commit(
            &group,
            req.generation_id_or_member_epoch,
            req.member_id.as_str(),
            req.group_instance_id.as_deref(),
            entries,
        )
    });
    Box::pin(async move {
        // The codes of the allowed partitions, in request order.
        let codes: Vec<i16> = match result {
            None => Vec::new(),
            Some(Err(e)) => vec![e.code(); allowed],
            Some(Ok((codes, write))) => {
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
            .zip(refused)
            .map(|(t, refused)| {
                build!(OffsetCommitResponseTopic {
                    partitions: t
                        .partitions
                        .iter()
                        .map(|p| build!(OffsetCommitResponsePartition {
                            partition_index: p.partition_index,
                            error_code: refused.unwrap_or_else(|| it.next().unwrap_or(0))
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

/// One group's committed offsets by topic, or the group's error.
type Fetched = Result<Vec<(String, Vec<PartitionOffset>)>, ResponseError>;

/// One group's OffsetFetch answer (`topics` None: every topic). Needs Describe on the group;
/// topics the caller may not describe are left out of an "every topic" answer and are
/// TOPIC_AUTHORIZATION_FAILED when named (after the others, as in Kafka).
/// With `require_stable` (KIP-447: read_committed consumers), a partition whose offset an
/// open transaction is about to commit answers UNSTABLE_OFFSET_COMMIT, and the consumer asks
/// again, instead of resuming from an offset the transaction is replacing.
fn fetch_one(
    b: &Node,
    cx: &Caller,
    group: &str,
    topics: Option<Vec<(String, Vec<i32>)>>,
    require_stable: bool,
) -> Fetched {
    let mut out = fetch_committed(b, cx, group, topics)?;
    if require_stable {
        for (t, ps) in out.iter_mut() {
            for (p, offset, _, _, code) in ps.iter_mut() {
                if *code == 0 && b.groups.has_pending_txn_offset(group, t, *p) {
                    *offset = -1;
                    *code = ResponseError::UnstableOffsetCommit.code();
                }
            }
        }
    }
    Ok(out)
}

fn fetch_committed(
    b: &Node,
    cx: &Caller,
    group: &str,
    topics: Option<Vec<(String, Vec<i32>)>>,
) -> Fetched {
    if !group_allowed(b, cx, Operation::Describe, group) {
        return Err(ResponseError::GroupAuthorizationFailed);
    }
    let may_describe = |t: &str| topic_allowed(b, cx, Operation::Describe, t);
    let Some(topics) = topics else {
        let all = grouped(b.groups.fetch_offsets(group, None)?);
        return Ok(all.into_iter().filter(|(t, _)| may_describe(t)).collect());
    };
    let (allowed, refused): (Vec<_>, Vec<_>) =
        topics.into_iter().partition(|(t, _)| may_describe(t));
    let wanted = allowed
        .into_iter()
        .flat_map(|(t, ps)| ps.into_iter().map(move |p| (t.clone(), p)))
        .collect();
    let mut out = grouped(b.groups.fetch_offsets(group, Some(wanted))?);
    out.extend(refused.into_iter().map(|(t, ps)| {
        let ps = ps
            .into_iter()
            .map(|p| (p, -1, -1, String::new(), TOPIC_AUTHORIZATION_FAILED))
            .collect();
        (t, ps)
    }));
    Ok(out)
}

/// (partition, committed offset, leader epoch, metadata, error code).
type PartitionOffset = (i32, i64, i32, String, i16);

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
            Some(v) => (p, v.offset, v.leader_epoch, v.metadata, 0),
            None => (p, -1, -1, String::new(), 0),
        };
        match out.iter_mut().find(|(name, _)| *name == t) {
            Some((_, ps)) => ps.push(entry),
            None => out.push((t, vec![entry])),
        }
    }
    out
}

/// Answer OffsetFetch (one group before v8, a batch of groups from v8).
pub fn offset_fetch(
    b: &Arc<Node>,
    cx: &Caller,
    v: i16,
    req: OffsetFetchRequest,
) -> OffsetFetchResponse {
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
                match fetch_one(b, cx, g.group_id.0.as_str(), topics, req.require_stable) {
                    Err(e) => build!(OffsetFetchResponseGroup {
                        group_id: g.group_id.clone(),
                        error_code: e.code()
                    }),
                    Ok(list) => build!(OffsetFetchResponseGroup {
                        group_id: g.group_id.clone(),
                        topics: list
                            .into_iter()
                            .map(|(t, ps)| build!(OffsetFetchResponseTopics {
                                name: super::topic_name(&t),
                                partitions: ps
                                    .into_iter()
                                    .map(|(p, o, e, m, code)| build!(
                                        OffsetFetchResponsePartitions {
                                            partition_index: p,
                                            committed_offset: o,
                                            committed_leader_epoch: e,
                                            metadata: Some(s(m)),
                                            error_code: code
                                        }
                                    ))
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
    match fetch_one(
        b,
        cx,
        req.group_id.0.as_str(),
        topics,
        v >= 7 && req.require_stable,
    ) {
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
            topics: list
                .into_iter()
                .map(|(t, ps)| build!(OffsetFetchResponseTopic {
                    name: super::topic_name(&t),
                    partitions: ps
                        .into_iter()
                        .map(|(p, o, e, m, code)| build!(OffsetFetchResponsePartition {
                            partition_index: p,
                            committed_offset: o,
                            committed_leader_epoch: e,
                            metadata: Some(s(m)),
                            error_code: code
                        }))
                        .collect()
                }))
                .collect()
        }),
    }
}

/// Answer ListGroups, with the v4 state filter and v5 type filter: every group for a caller
/// that may describe the cluster, otherwise the groups it may describe.
pub fn list_groups(
    b: &Arc<Node>,
    cx: &Caller,
    _v: i16,
    req: ListGroupsRequest,
) -> ListGroupsResponse {
    let every = super::authz::on_cluster(b, cx, Operation::Describe);
    let groups = b
        .groups
        .list()
        .into_iter()
        .filter(|(id, _, _)| every || group_allowed(b, cx, Operation::Describe, id))
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

/// Answer DescribeGroups: each group needs Describe (GROUP_AUTHORIZATION_FAILED), and from
/// v3 the caller's operations on it are included when asked.
pub fn describe_groups(
    b: &Arc<Node>,
    cx: &Caller,
    v: i16,
    req: DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    let with_ops = v >= 3 && req.include_authorized_operations;
    let groups = req
        .groups
        .into_iter()
        .map(|gid| {
            let id = gid.0.to_string();
            if !group_allowed(b, cx, Operation::Describe, &id) {
                return build!(DescribedGroup {
                    group_id: gid,
                    error_code: GROUP_AUTHORIZATION_FAILED,
                    group_state: s(""),
                    authorized_operations: i32::MIN
                });
            }
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
        .map(|mut g| {
            if with_ops && g.error_code == 0 {
                g.authorized_operations = super::authz::authorized_operations(
                    b,
                    cx,
                    ResourceType::Group,
                    g.group_id.0.as_str(),
                );
            }
            g
        })
        .collect();
    build!(DescribeGroupsResponse { groups: groups })
}

/// Answer DeleteGroups.
pub fn delete_groups(b: Arc<Node>, frame: &Frame, req: DeleteGroupsRequest) -> Pending {
    use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
    let v = frame.header.request_api_version;
    let cid = frame.header.correlation_id;
    let cx = frame.caller();
    let results: Vec<(GroupId, Result<Option<PendingWrite>, ResponseError>)> = req
        .groups_names
        .into_iter()
        .map(|g| {
            let r = if group_allowed(&b, &cx, Operation::Delete, g.0.as_str()) {
                b.groups.delete_group(g.0.as_str())
            } else {
                Err(ResponseError::GroupAuthorizationFailed)
            };
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
    let cx = frame.caller();
    if !group_allowed(&b, &cx, Operation::Delete, req.group_id.0.as_str()) {
        let resp = build!(OffsetDeleteResponse {
            error_code: GROUP_AUTHORIZATION_FAILED
        });
        return Box::pin(std::future::ready(reply(
            ApiKey::OffsetDelete,
            v,
            cid,
            &resp,
        )));
    }
    // Per request topic: whether the caller may delete its offsets (Read on it).
    let readable: Vec<bool> = req
        .topics
        .iter()
        .map(|t| topic_allowed(&b, &cx, Operation::Read, t.name.0.as_str()))
        .collect();
    let parts: Vec<(String, i32)> = req
        .topics
        .iter()
        .zip(&readable)
        .filter(|(_, ok)| **ok)
        .flat_map(|(t, _)| {
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
                        .zip(readable)
                        .map(|(t, ok)| build!(OffsetDeleteResponseTopic {
                            partitions: t
                                .partitions
                                .iter()
                                .map(|p| {
                                    let error_code = if !ok {
                                        TOPIC_AUTHORIZATION_FAILED
                                    } else {
                                        match it.next().unwrap_or(0) {
                                            0 => wcode,
                                            c => c,
                                        }
                                    };
                                    build!(OffsetDeleteResponsePartition {
                                        partition_index: p.partition_index,
                                        error_code: error_code
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::handlers::authz::bit_field;
    use crate::protocol::handlers::authz::testing::{admin, allow, answer, frame, node, user};
    use crate::protocol::handlers::topic_name;
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::offset_fetch_request::{
        OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
    };

    const COMMIT_V: i16 = 8;

    fn commit(group: &str, offsets: &[(&str, i64)]) -> OffsetCommitRequest {
        build!(OffsetCommitRequest {
            group_id: GroupId(s(group)),
            generation_id_or_member_epoch: -1,
            topics: offsets
                .iter()
                .map(|(t, o)| build!(OffsetCommitRequestTopic {
                    name: topic_name(t),
                    partitions: vec![build!(OffsetCommitRequestPartition {
                        partition_index: 0,
                        committed_offset: *o,
                        committed_leader_epoch: -1
                    })]
                }))
                .collect()
        })
    }

    async fn commit_as(b: &Arc<Node>, cx: &Caller, req: OffsetCommitRequest) -> Vec<(String, i16)> {
        let f = frame(cx, ApiKey::OffsetCommit, COMMIT_V);
        let resp: OffsetCommitResponse = answer(
            ApiKey::OffsetCommit,
            COMMIT_V,
            offset_commit(b.clone(), &f, req),
        )
        .await
        .unwrap();
        resp.topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(move |p| (t.name.0.to_string(), p.error_code))
            })
            .collect()
    }

    /// (topic, offset, error) of one group's v8 answer, or the group's error.
    fn fetched_v8(r: &OffsetFetchResponseGroup) -> Result<Vec<(String, i64, i16)>, i16> {
        if r.error_code != 0 {
            return Err(r.error_code);
        }
        Ok(r.topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(move |p| (t.name.0.to_string(), p.committed_offset, p.error_code))
            })
            .collect())
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn group_apis_check_the_group_and_each_topic() {
        let dir = tempfile::tempdir().unwrap();
        let b = node(
            dir.path(),
            &[
                allow("alice", Operation::Read, ResourceType::Group, "g"),
                allow("alice", Operation::Read, ResourceType::Topic, "a"),
            ],
        )
        .await;
        for t in ["a", "b"] {
            b.broker
                .create_topic(t, 1, 1, Default::default(), false)
                .await
                .unwrap();
        }
        // The super user commits to both groups (each once its coordinator has loaded: the
        // two groups may live in different offsets partitions).
        for (group, offsets) in [("g", &[("a", 5), ("b", 7)][..]), ("other", &[("a", 1)][..])] {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            loop {
                let codes = commit_as(&b, &admin(), commit(group, offsets)).await;
                if codes.iter().all(|(_, c)| *c == 0) {
                    assert_eq!(codes.len(), offsets.len());
                    break;
                }
                assert!(std::time::Instant::now() < deadline, "{group}: {codes:?}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }

        let group_denied = ResponseError::GroupAuthorizationFailed.code();
        let topic_denied = ResponseError::TopicAuthorizationFailed.code();
        let (alice, bob) = (user("alice"), user("bob"));

        // OffsetCommit: the readable topic is committed, the other refused.
        let codes = commit_as(&b, &alice, commit("g", &[("a", 10), ("b", 11)])).await;
        assert_eq!(codes, vec![("a".into(), 0), ("b".into(), topic_denied)]);
        let codes = commit_as(&b, &bob, commit("g", &[("a", 12), ("b", 13)])).await;
        assert_eq!(
            codes,
            vec![("a".into(), group_denied), ("b".into(), group_denied)]
        );

        // OffsetFetch v8: "every topic" leaves out what alice may not describe; a named
        // topic she may not describe is refused after the others.
        let group = |topics: Option<&[&str]>| {
            build!(OffsetFetchRequestGroup {
                group_id: GroupId(s("g")),
                topics: topics.map(|ts| ts
                    .iter()
                    .map(|t| build!(OffsetFetchRequestTopics {
                        name: topic_name(t),
                        partition_indexes: vec![0]
                    }))
                    .collect())
            })
        };
        let req = build!(OffsetFetchRequest {
            groups: vec![group(None), group(Some(&["b", "a"]))]
        });
        let resp = offset_fetch(&b, &alice, 8, req.clone());
        assert_eq!(fetched_v8(&resp.groups[0]), Ok(vec![("a".into(), 10, 0)]));
        assert_eq!(
            fetched_v8(&resp.groups[1]),
            Ok(vec![("a".into(), 10, 0), ("b".into(), -1, topic_denied)])
        );
        let resp = offset_fetch(&b, &bob, 8, req);
        assert_eq!(fetched_v8(&resp.groups[0]), Err(group_denied));
        // Before v8 the group's error is the response's (per partition before v2).
        let old = build!(OffsetFetchRequest {
            group_id: GroupId(s("g")),
            topics: Some(vec![build!(OffsetFetchRequestTopic {
                name: topic_name("a"),
                partition_indexes: vec![0]
            })])
        });
        assert_eq!(
            offset_fetch(&b, &bob, 7, old.clone()).error_code,
            group_denied
        );
        let v1 = offset_fetch(&b, &bob, 1, old);
        assert_eq!(v1.topics[0].partitions[0].error_code, group_denied);

        // ListGroups: alice sees the group she may describe; the super user every group.
        let listed = |cx: &Caller| -> Vec<String> {
            list_groups(&b, cx, 4, ListGroupsRequest::default())
                .groups
                .iter()
                .map(|g| g.group_id.0.to_string())
                .collect()
        };
        assert_eq!(listed(&alice), vec!["g".to_string()]);
        assert_eq!(listed(&admin()), vec!["g".to_string(), "other".to_string()]);

        // DescribeGroups with authorized operations (Read implies Describe).
        let req = build!(DescribeGroupsRequest {
            groups: vec![GroupId(s("g")), GroupId(s("other"))],
            include_authorized_operations: true
        });
        let resp = describe_groups(&b, &alice, 5, req);
        assert_eq!(resp.groups[0].error_code, 0);
        assert_eq!(
            resp.groups[0].authorized_operations,
            bit_field([Operation::Read, Operation::Describe])
        );
        assert_eq!(resp.groups[1].error_code, group_denied);
        assert_eq!(resp.groups[1].authorized_operations, i32::MIN);

        // Membership needs Read on the group.
        let hb = build!(HeartbeatRequest {
            group_id: GroupId(s("g")),
            generation_id: 1,
            member_id: s("m")
        });
        assert_eq!(heartbeat(&b, &bob, 4, hb).error_code, group_denied);
    }
}
