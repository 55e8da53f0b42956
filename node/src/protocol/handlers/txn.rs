//! The transaction APIs (KIP-98, KIP-664): the producer's AddPartitionsToTxn,
//! AddOffsetsToTxn, TxnOffsetCommit and EndTxn, the coordinator's WriteTxnMarkers to
//! partition leaders, and the admin's DescribeTransactions, ListTransactions and
//! DescribeProducers. The state machine is in [`crate::txn`]; this is the protocol edge.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::describe_transactions_response::{
    TopicData, TransactionState as DescribedState,
};
use kafka_protocol::messages::list_transactions_response::TransactionState as ListedState;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse, DescribeProducersRequest, DescribeProducersResponse,
    DescribeTransactionsRequest, DescribeTransactionsResponse, EndTxnRequest, EndTxnResponse,
    ListTransactionsRequest, ListTransactionsResponse, ProducerId, TransactionalId,
    TxnOffsetCommitRequest, TxnOffsetCommitResponse, WriteTxnMarkersRequest,
    WriteTxnMarkersResponse,
};

use super::{s, topic_name};
use crate::coordinator::records::partition_for;
use crate::coordinator::{CommitEntry, OFFSETS_TOPIC};
use crate::error::Error;
use crate::log::txn::Marker;
use crate::node::Node;
use crate::security::Caller;
use crate::txn::records::TxnState;
use strata_security::acl::{Operation, ResourceType};

fn txn_allowed(b: &Node, cx: &Caller, op: Operation, id: &str) -> bool {
    b.security
        .authorize(cx, op, ResourceType::TransactionalId, id)
}

fn topic_allowed(b: &Node, cx: &Caller, op: Operation, topic: &str) -> bool {
    b.security.authorize(cx, op, ResourceType::Topic, topic)
}

/// The code of a coordinator error for a client speaking `v` of an API that learned
/// PRODUCER_FENCED at `since` (older clients know only INVALID_PRODUCER_EPOCH).
fn for_version(e: ResponseError, v: i16, since: i16) -> i16 {
    match e {
        ResponseError::ProducerFenced if v < since => ResponseError::InvalidProducerEpoch.code(),
        e => e.code(),
    }
}

/// AddPartitionsToTxn: a producer's (v0-3, one transaction) or a partition leader's
/// (v4+, batched, ClusterAction): a verification (KIP-890's first part) or, for a
/// producer on transaction version 2, the implicit add of the partitions it writes.
pub async fn add_partitions(
    b: &Arc<Node>,
    cx: &Caller,
    v: i16,
    req: AddPartitionsToTxnRequest,
) -> AddPartitionsToTxnResponse {
    if v < 4 {
        let topics = add_one(
            b,
            cx,
            v,
            req.v3_and_below_transactional_id.0.as_str(),
            req.v3_and_below_producer_id.0,
            req.v3_and_below_producer_epoch,
            &req.v3_and_below_topics,
            false,
            true,
            0,
        )
        .await;
        return build!(AddPartitionsToTxnResponse {
            results_by_topic_v3_and_below: topics
        });
    }
    if !super::authz::on_cluster(b, cx, Operation::ClusterAction) {
        return build!(AddPartitionsToTxnResponse {
            error_code: ResponseError::ClusterAuthorizationFailed.code()
        });
    }
    let mut results = Vec::with_capacity(req.transactions.len());
    for t in &req.transactions {
        let topics = add_one(
            b,
            cx,
            v,
            t.transactional_id.0.as_str(),
            t.producer_id.0,
            t.producer_epoch,
            &t.topics,
            t.verify_only,
            false,
            2,
        )
        .await;
        results.push(build!(AddPartitionsToTxnResult {
            transactional_id: t.transactional_id.clone(),
            topic_results: topics
        }));
    }
    build!(AddPartitionsToTxnResponse {
        results_by_transaction: results
    })
}

#[allow(clippy::too_many_arguments)]
async fn add_one(
    b: &Arc<Node>,
    cx: &Caller,
    v: i16,
    id: &str,
    producer_id: i64,
    epoch: i16,
    topics: &[kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic],
    verify_only: bool,
    check_acls: bool,
    client_version: i16,
) -> Vec<AddPartitionsToTxnTopicResult> {
    let answer = |codes: &dyn Fn(&str, i32) -> i16| -> Vec<AddPartitionsToTxnTopicResult> {
        topics
            .iter()
            .map(|t| {
                build!(AddPartitionsToTxnTopicResult {
                    name: t.name.clone(),
                    results_by_partition: t
                        .partitions
                        .iter()
                        .map(|p| build!(AddPartitionsToTxnPartitionResult {
                            partition_index: *p,
                            partition_error_code: codes(t.name.0.as_str(), *p)
                        }))
                        .collect()
                })
            })
            .collect()
    };
    if check_acls && !txn_allowed(b, cx, Operation::Write, id) {
        let code = ResponseError::TransactionalIdAuthorizationFailed.code();
        return answer(&|_, _| code);
    }
    // Refused or unknown partitions fail alone; the others are not attempted, as in Kafka.
    let bad = |t: &str, p: i32| -> Option<i16> {
        if check_acls && !topic_allowed(b, cx, Operation::Write, t) {
            return Some(ResponseError::TopicAuthorizationFailed.code());
        }
        let known = b
            .broker
            .topic(t)
            .is_some_and(|v| p >= 0 && p < v.meta.partitions);
        (!known).then_some(ResponseError::UnknownTopicOrPartition.code())
    };
    let any_bad = topics.iter().any(|t| {
        t.partitions
            .iter()
            .any(|p| bad(t.name.0.as_str(), *p).is_some())
    });
    if any_bad {
        let not_attempted = ResponseError::OperationNotAttempted.code();
        return answer(&|t, p| bad(t, p).unwrap_or(not_attempted));
    }
    let partitions: Vec<(String, i32)> = topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| (t.name.0.to_string(), *p)))
        .collect();
    let code = match b
        .txns
        .add_partitions(
            id,
            producer_id,
            epoch,
            partitions,
            verify_only,
            client_version,
        )
        .await
    {
        Ok(()) => 0,
        Err(e) => for_version(e, v, 2),
    };
    answer(&|_, _| code)
}

/// The group's offsets partition joins the transaction of a producer on transaction
/// version 2 (its TxnOffsetCommit v5 implies it).
async fn add_offsets_partition(
    b: &Arc<Node>,
    id: &str,
    producer_id: i64,
    epoch: i16,
    group: &str,
) -> Result<(), i16> {
    let t = b
        .broker
        .ensure_offsets_topic()
        .await
        .map_err(|_| ResponseError::CoordinatorNotAvailable.code())?;
    let p = partition_for(group, t.meta.partitions);
    b.add_to_transaction(
        id,
        producer_id,
        epoch,
        vec![(OFFSETS_TOPIC.to_string(), p)],
        false,
    )
    .await
    .map_err(|e| match e {
        // What an older producer's AddOffsetsToTxn would have told it to retry on.
        ResponseError::NetworkException => ResponseError::CoordinatorNotAvailable.code(),
        e => e.code(),
    })
}

/// AddOffsetsToTxn: the group's offsets partition joins the transaction.
pub async fn add_offsets(
    b: &Arc<Node>,
    cx: &Caller,
    v: i16,
    req: AddOffsetsToTxnRequest,
) -> AddOffsetsToTxnResponse {
    let id = req.transactional_id.0.as_str();
    let code = if !txn_allowed(b, cx, Operation::Write, id) {
        ResponseError::TransactionalIdAuthorizationFailed.code()
    } else if !b.security.authorize(
        cx,
        Operation::Read,
        ResourceType::Group,
        req.group_id.0.as_str(),
    ) {
        ResponseError::GroupAuthorizationFailed.code()
    } else {
        match b.broker.ensure_offsets_topic().await {
            Err(_) => ResponseError::CoordinatorNotAvailable.code(),
            Ok(t) => {
                let p = partition_for(req.group_id.0.as_str(), t.meta.partitions);
                match b
                    .txns
                    .add_partitions(
                        id,
                        req.producer_id.0,
                        req.producer_epoch,
                        vec![(OFFSETS_TOPIC.to_string(), p)],
                        false,
                        0,
                    )
                    .await
                {
                    Ok(()) => 0,
                    Err(e) => for_version(e, v, 2),
                }
            }
        }
    };
    build!(AddOffsetsToTxnResponse { error_code: code })
}

/// EndTxn: commit or abort the producer's open transaction. From v5 (transaction
/// version 2) every end bumps the producer epoch, and the answer carries the producer id
/// and epoch of the next transaction.
pub async fn end_txn(b: &Arc<Node>, cx: &Caller, v: i16, req: EndTxnRequest) -> EndTxnResponse {
    let id = req.transactional_id.0.as_str();
    let (pid, epoch) = (req.producer_id.0, req.producer_epoch);
    let result = if !txn_allowed(b, cx, Operation::Write, id) {
        Err(ResponseError::TransactionalIdAuthorizationFailed.code())
    } else if v >= 5 {
        b.txns
            .end_transaction_v2(id, req.committed, pid, epoch)
            .await
            .map_err(|e| e.code())
    } else {
        b.txns
            .end_transaction(id, req.committed, Some((pid, epoch)), false)
            .await
            .map(|()| (-1, -1))
            .map_err(|e| for_version(e, v, 2))
    };
    let (code, (producer_id, producer_epoch)) = match result {
        Ok(next) => (0, next),
        Err(code) => (code, (-1, -1)),
    };
    build!(EndTxnResponse {
        error_code: code,
        producer_id: ProducerId(producer_id),
        producer_epoch: producer_epoch
    })
}

/// TxnOffsetCommit: offsets committed within the transaction, visible at its commit.
pub async fn txn_offset_commit(
    b: &Arc<Node>,
    cx: &Caller,
    v: i16,
    req: TxnOffsetCommitRequest,
) -> TxnOffsetCommitResponse {
    let id = req.transactional_id.0.as_str();
    let group = req.group_id.0.as_str();
    let mut whole = if !txn_allowed(b, cx, Operation::Write, id) {
        Some(ResponseError::TransactionalIdAuthorizationFailed.code())
    } else if !b
        .security
        .authorize(cx, Operation::Read, ResourceType::Group, group)
    {
        Some(ResponseError::GroupAuthorizationFailed.code())
    } else {
        None
    };
    if whole.is_none() && v >= 5 {
        // Transaction version 2: this commit is also the AddOffsetsToTxn of older
        // producers, the group's offsets partition joining the transaction.
        whole = add_offsets_partition(b, id, req.producer_id.0, req.producer_epoch, group)
            .await
            .err();
    }
    let refused: Vec<Option<i16>> = req
        .topics
        .iter()
        .map(|t| {
            whole.or_else(|| {
                (!topic_allowed(b, cx, Operation::Read, t.name.0.as_str()))
                    .then_some(ResponseError::TopicAuthorizationFailed.code())
            })
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
    let codes: Vec<i16> = if allowed == 0 {
        Vec::new()
    } else {
        // The offsets partition must be in the transaction (AddOffsetsToTxn came first).
        match b.groups.txn_commit(
            group,
            req.producer_id.0,
            req.producer_epoch,
            req.generation_id,
            req.member_id.as_str(),
            req.group_instance_id.as_deref(),
            entries,
        ) {
            Err(e) => vec![e.code(); allowed],
            Ok((codes, write)) => {
                let code = match write {
                    None => 0,
                    Some(w) => match b
                        .broker
                        .complete_write(&w.partition, w.last_offset, -1, Duration::from_secs(5))
                        .await
                    {
                        Ok(()) => 0,
                        Err(Error::NotLeader(_)) => ResponseError::NotCoordinator.code(),
                        Err(_) => ResponseError::CoordinatorNotAvailable.code(),
                    },
                };
                codes
                    .into_iter()
                    .map(|c| if c == 0 { code } else { c })
                    .collect()
            }
        }
    };
    let mut codes = codes.into_iter();
    let topics = req
        .topics
        .iter()
        .zip(&refused)
        .map(|(t, r)| {
            build!(TxnOffsetCommitResponseTopic {
                name: t.name.clone(),
                partitions: t
                    .partitions
                    .iter()
                    .map(|p| build!(TxnOffsetCommitResponsePartition {
                        partition_index: p.partition_index,
                        error_code: r.unwrap_or_else(|| codes.next().unwrap_or(0))
                    }))
                    .collect()
            })
        })
        .collect();
    build!(TxnOffsetCommitResponse { topics: topics })
}

/// Append one marker to a partition led here and wait until it is replicated, then let
/// the group coordinator apply or drop the transaction's offsets (for offsets
/// partitions). Shared by WriteTxnMarkers and the coordinator's own local markers.
pub async fn write_marker(
    b: &Arc<Node>,
    topic: &str,
    p: i32,
    marker: Marker,
    producer_id: i64,
    producer_epoch: i16,
    coordinator_epoch: i32,
) -> Result<(), Error> {
    let Some(part) = b.broker.partition(topic, p) else {
        if b.broker.topic(topic).is_some_and(|t| p < t.meta.partitions) {
            return Err(Error::NotLeader(format!("{topic}-{p}")));
        }
        return Err(Error::UnknownTopicOrPartition(format!("{topic}-{p}")));
    };
    // An acks=all write, as Kafka appends markers: refused up front when the ISR is below
    // min.insync.replicas, rather than appended and then reported failed (and retried).
    b.broker.check_writable(&part, -1)?;
    let info = b.broker.append_marker(
        &part,
        marker,
        producer_id,
        producer_epoch,
        coordinator_epoch,
    )?;
    b.broker
        .complete_write(&part, info.last_offset, -1, Duration::from_secs(30))
        .await?;
    if topic == OFFSETS_TOPIC {
        b.groups
            .complete_txn(p, producer_id, marker == Marker::Commit);
    }
    Ok(())
}

/// WriteTxnMarkers: a transaction coordinator's markers for partitions led here.
pub async fn write_txn_markers(
    b: &Arc<Node>,
    cx: &Caller,
    _v: i16,
    req: WriteTxnMarkersRequest,
) -> WriteTxnMarkersResponse {
    let allowed = super::authz::on_cluster(b, cx, Operation::ClusterAction);
    let mut markers = Vec::with_capacity(req.markers.len());
    for m in &req.markers {
        let marker = if m.transaction_result {
            Marker::Commit
        } else {
            Marker::Abort
        };
        let mut topics = Vec::with_capacity(m.topics.len());
        for t in &m.topics {
            let mut partitions = Vec::with_capacity(t.partition_indexes.len());
            for &p in &t.partition_indexes {
                let code = if !allowed {
                    ResponseError::ClusterAuthorizationFailed.code()
                } else {
                    match write_marker(
                        b,
                        t.name.0.as_str(),
                        p,
                        marker,
                        m.producer_id.0,
                        m.producer_epoch,
                        m.coordinator_epoch,
                    )
                    .await
                    {
                        Ok(()) => 0,
                        Err(e) => e.code(),
                    }
                };
                partitions.push(build!(WritableTxnMarkerPartitionResult {
                    partition_index: p,
                    error_code: code
                }));
            }
            topics.push(build!(WritableTxnMarkerTopicResult {
                name: t.name.clone(),
                partitions: partitions
            }));
        }
        markers.push(build!(WritableTxnMarkerResult {
            producer_id: m.producer_id,
            topics: topics
        }));
    }
    build!(WriteTxnMarkersResponse { markers: markers })
}

/// DescribeTransactions (Describe on each transactional id).
pub fn describe_transactions(
    b: &Arc<Node>,
    cx: &Caller,
    _v: i16,
    req: DescribeTransactionsRequest,
) -> DescribeTransactionsResponse {
    let states = req
        .transactional_ids
        .iter()
        .map(|id| {
            let mut st = build!(DescribedState {
                transactional_id: id.clone(),
                transaction_state: s(""),
                transaction_start_time_ms: -1,
                producer_id: ProducerId(-1),
                producer_epoch: -1
            });
            if !txn_allowed(b, cx, Operation::Describe, id.0.as_str()) {
                st.error_code = ResponseError::TransactionalIdAuthorizationFailed.code();
                return st;
            }
            match b.txns.describe(id.0.as_str()) {
                Err(e) => st.error_code = e.code(),
                Ok(m) => {
                    st.transaction_state = s(m.state.name());
                    st.transaction_timeout_ms = m.timeout_ms;
                    st.transaction_start_time_ms = m.start_ms;
                    st.producer_id = ProducerId(m.producer_id);
                    st.producer_epoch = m.producer_epoch;
                    let mut topics: Vec<TopicData> = Vec::new();
                    for (t, p) in &m.partitions {
                        match topics.last_mut() {
                            Some(last) if last.topic.0.as_str() == t.as_str() => {
                                last.partitions.push(*p)
                            }
                            _ => topics.push(build!(TopicData {
                                topic: topic_name(t),
                                partitions: vec![*p]
                            })),
                        }
                    }
                    st.topics = topics;
                }
            }
            st
        })
        .collect();
    build!(DescribeTransactionsResponse {
        transaction_states: states
    })
}

/// ListTransactions: the transactions coordinated here the caller may describe, filtered
/// by state, producer id and (v1) how long they have been open.
pub fn list_transactions(
    b: &Arc<Node>,
    cx: &Caller,
    _v: i16,
    req: ListTransactionsRequest,
) -> ListTransactionsResponse {
    let known = [
        TxnState::Empty,
        TxnState::Ongoing,
        TxnState::PrepareCommit,
        TxnState::PrepareAbort,
        TxnState::CompleteCommit,
        TxnState::CompleteAbort,
        TxnState::Dead,
        TxnState::PrepareEpochFence,
    ];
    let unknown: Vec<_> = req
        .state_filters
        .iter()
        .filter(|f| !known.iter().any(|k| k.name() == f.as_str()))
        .cloned()
        .collect();
    let now = crate::fsutil::now_ms();
    let states = b
        .txns
        .list()
        .into_iter()
        .filter(|t| {
            req.state_filters.is_empty()
                || req
                    .state_filters
                    .iter()
                    .any(|f| f.as_str() == t.meta.state.name())
        })
        .filter(|t| {
            req.producer_id_filters.is_empty()
                || req
                    .producer_id_filters
                    .contains(&ProducerId(t.meta.producer_id))
        })
        .filter(|t| {
            req.duration_filter < 0
                || (t.meta.state == TxnState::Ongoing
                    && now - t.meta.start_ms >= req.duration_filter)
        })
        .filter(|t| txn_allowed(b, cx, Operation::Describe, &t.transactional_id))
        .map(|t| {
            build!(ListedState {
                transactional_id: TransactionalId(s(t.transactional_id)),
                producer_id: ProducerId(t.meta.producer_id),
                transaction_state: s(t.meta.state.name())
            })
        })
        .collect();
    build!(ListTransactionsResponse {
        unknown_state_filters: unknown,
        transaction_states: states
    })
}

/// DescribeProducers: the producer state of partitions led here (Read on the topic).
pub fn describe_producers(
    b: &Arc<Node>,
    cx: &Caller,
    _v: i16,
    req: DescribeProducersRequest,
) -> DescribeProducersResponse {
    let topics = req
        .topics
        .iter()
        .map(|t| {
            let allowed = topic_allowed(b, cx, Operation::Read, t.name.0.as_str());
            let partitions = t
                .partition_indexes
                .iter()
                .map(|&p| {
                    let mut r = build!(PartitionResponse { partition_index: p });
                    if !allowed {
                        r.error_code = ResponseError::TopicAuthorizationFailed.code();
                        return r;
                    }
                    let Some(part) = b.broker.partition(t.name.0.as_str(), p) else {
                        r.error_code = ResponseError::UnknownTopicOrPartition.code();
                        return r;
                    };
                    if !part.is_leader() {
                        r.error_code = ResponseError::NotLeaderOrFollower.code();
                        return r;
                    }
                    let log = part.log();
                    let mut producers: Vec<_> = log.producers().producers.iter().collect();
                    producers.sort_by_key(|(pid, _)| **pid);
                    r.active_producers = producers
                        .into_iter()
                        .map(|(pid, e)| {
                            let last = e.batches.back();
                            build!(ProducerState {
                                producer_id: ProducerId(*pid),
                                producer_epoch: e.epoch as i32,
                                last_sequence: last.map_or(-1, |l| l.last_seq),
                                last_timestamp: Some(e.last_write())
                                    .filter(|t| *t > 0)
                                    .unwrap_or(-1),
                                coordinator_epoch: e.coordinator_epoch,
                                current_txn_start_offset: e.txn_first_offset.unwrap_or(-1)
                            })
                        })
                        .collect();
                    r
                })
                .collect();
            build!(TopicResponse {
                name: t.name.clone(),
                partitions: partitions
            })
        })
        .collect();
    build!(DescribeProducersResponse { topics: topics })
}
