//! One handler per Kafka API. Handlers that do not wait run to completion when the frame is
//! dispatched, so requests on one connection take effect in order; Produce waits for its
//! fsync, Fetch for data, and ListOffsets and DeleteRecords for the bucket (tiered
//! partitions) in the returned future.

/// Build a `kafka-protocol` message (its structs are non-exhaustive) from field values.
macro_rules! build {
    ($t:path { $($f:ident : $e:expr),* $(,)? }) => {{
        #[allow(unused_mut)]
        let mut v = <$t>::default();
        $(v.$f = $e;)*
        v
    }};
}

pub mod api_versions;
pub mod authz;
pub mod configs;
pub mod fetch;
pub mod find_coordinator;
pub mod groups;
pub mod log_dirs;
pub mod metadata;
pub mod offsets;
pub mod produce;
pub mod producer_id;
pub mod quotas;
pub mod replicas;
pub mod security;
pub mod topics;
pub mod txn;

use std::sync::Arc;

use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};

use super::{decode_body, encode_fetch_response, encode_response, Frame, ResponseBytes};
use super::{Pending, Reply};
use crate::node::Node;
use crate::security::quota;
use strata_security::quota::QuotaKey;

/// Encode a response for `frame`, or close the connection if it cannot be encoded.
pub fn reply<T: Encodable>(
    frame_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &T,
) -> Reply {
    encoded(encode_response(frame_key, version, correlation_id, body))
}

/// The reply for an encoded response, or close the connection if it could not be encoded.
fn encoded(response: crate::error::Result<ResponseBytes>) -> Reply {
    match response {
        Ok(b) => Reply::Bytes(b),
        Err(e) => {
            tracing::error!(error = %e, "response encoding failed; closing connection");
            Reply::Close
        }
    }
}

fn ready(r: Reply) -> Pending {
    Box::pin(std::future::ready(r))
}

/// Route a parsed frame to its handler, measuring the time its handler takes against the
/// caller's request quota (KIP-124) when one applies.
pub fn dispatch(broker: &Arc<Node>, frame: Frame) -> Pending {
    let quotas = &broker.security.quotas;
    if quotas.is_empty() {
        return route(broker, frame);
    }
    let (user, client_id) = quota_identity(&frame);
    let request_limited = !request_quota_exempt(frame.api_key)
        && quotas.limited(&user, &client_id, QuotaKey::RequestPercentage)
        && !is_follower_fetch(&frame);
    if !request_limited {
        return route(broker, frame);
    }
    let started = std::time::Instant::now();
    let throttle_gate = frame.caller.throttle.clone();
    let pending = route(broker, frame);
    let b = broker.clone();
    let spent = started.elapsed();
    Box::pin(async move {
        let (reply, polled) = PollTimed::new(pending).await;
        // Kafka records thread time as a percentage of one second.
        let percent = (spent + polled).as_secs_f64() * 100.0;
        let throttle = b.security.quotas.record(
            &user,
            &client_id,
            QuotaKey::RequestPercentage,
            percent,
            quota::mono_ms(),
        );
        b.security
            .note_throttle(QuotaKey::RequestPercentage, throttle);
        throttle_gate.mute_for(throttle);
        reply
    })
}

/// The (user, client id) quotas are resolved for: the principal's name and the header's
/// client id.
fn quota_identity(frame: &Frame) -> (String, String) {
    (
        strata_security::quota::quota_user(&frame.caller.principal).to_string(),
        frame
            .header
            .client_id
            .as_ref()
            .map_or(String::new(), |c| c.to_string()),
    )
}

/// Requests Kafka never throttles on request time: those a client needs to connect and
/// authenticate (followers' fetches are exempted by [`is_follower_fetch`]).
fn request_quota_exempt(key: ApiKey) -> bool {
    matches!(
        key,
        ApiKey::ApiVersions | ApiKey::SaslHandshake | ApiKey::SaslAuthenticate
    )
}

/// A follower's fetch: replication is never throttled by client quotas (the body is
/// decoded once more only when a request quota applies to the caller).
fn is_follower_fetch(frame: &Frame) -> bool {
    frame.api_key == ApiKey::Fetch
        && decode_body::<FetchRequest>(frame)
            .is_ok_and(|r| !fetch::is_consumer(frame.header.request_api_version, &r))
}

/// A future with the time spent polling it: the handler's own time, not its waits.
struct PollTimed {
    inner: Pending,
    spent: std::time::Duration,
}

impl PollTimed {
    fn new(inner: Pending) -> Self {
        PollTimed {
            inner,
            spent: std::time::Duration::ZERO,
        }
    }
}

impl std::future::Future for PollTimed {
    type Output = (Reply, std::time::Duration);

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let started = std::time::Instant::now();
        let polled = self.inner.as_mut().poll(cx);
        self.spent += started.elapsed();
        polled.map(|r| (r, self.spent))
    }
}

/// Records a produce request's size against the caller's producer byte rate; the
/// throttle time in milliseconds.
fn produce_throttle(broker: &Node, frame: &Frame) -> i64 {
    let quotas = &broker.security.quotas;
    if quotas.is_empty() {
        return 0;
    }
    let (user, client_id) = quota_identity(frame);
    quotas.record(
        &user,
        &client_id,
        QuotaKey::ProducerByteRate,
        frame.body.len() as f64,
        quota::mono_ms(),
    )
}

/// Route a parsed frame to its handler.
fn route(broker: &Arc<Node>, frame: Frame) -> Pending {
    let key = frame.api_key;
    let v = frame.header.request_api_version;
    let cid = frame.header.correlation_id;
    let span = tracing::debug_span!("request", api = ?key, version = v, correlation_id = cid);
    let _enter = span.enter();

    macro_rules! decode {
        ($t:ty) => {
            match decode_body::<$t>(&frame) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "malformed request; closing connection");
                    return ready(Reply::Close);
                }
            }
        };
    }
    macro_rules! sync {
        ($t:ty, $f:path) => {{
            let req = decode!($t);
            let resp = $f(broker, v, req);
            ready(reply(key, v, cid, &resp))
        }};
    }

    // A handler that checks who is asking.
    macro_rules! sync_cx {
        ($t:ty, $f:path) => {{
            let req = decode!($t);
            let cx = frame.caller();
            let resp = $f(broker, &cx, v, req);
            ready(reply(key, v, cid, &resp))
        }};
    }

    // A handler that waits (on the controller, in a cluster) without holding up the
    // connection's other requests, and checks who is asking.
    macro_rules! deferred_cx {
        ($t:ty, $f:path) => {{
            let req = decode!($t);
            let b = broker.clone();
            let cx = frame.caller();
            Box::pin(async move {
                let resp = $f(&b, &cx, v, req).await;
                reply(key, v, cid, &resp)
            })
        }};
    }

    match key {
        ApiKey::ApiVersions => sync!(ApiVersionsRequest, api_versions::handle),
        ApiKey::Metadata => deferred_cx!(MetadataRequest, authz::metadata),
        ApiKey::DescribeCluster => sync_cx!(DescribeClusterRequest, authz::describe_cluster),
        ApiKey::Produce => {
            let req = decode!(ProduceRequest);
            // Like Kafka, the records are appended whatever the quota; the answer says how
            // long to wait and goes out at once, and the connection is muted that long.
            let throttle = produce_throttle(broker, &frame);
            broker
                .security
                .note_throttle(QuotaKey::ProducerByteRate, throttle);
            let t = i32::try_from(throttle).unwrap_or(i32::MAX);
            frame.caller.throttle.mute_for(throttle);
            produce::handle(broker.clone(), &frame.caller(), v, cid, t, req)
        }
        ApiKey::Fetch => {
            let mut req = decode!(FetchRequest);
            let b = broker.clone();
            let cx = frame.caller();
            let (user, client_id) = quota_identity(&frame);
            let limited = fetch::is_consumer(v, &req)
                && b.security
                    .quotas
                    .limited(&user, &client_id, QuotaKey::ConsumerByteRate);
            if limited {
                // Never more than the quota lets through in its windows (Kafka's
                // getMaxValueInQuotaWindow), or a large response would be refused forever.
                if let Some(max) =
                    b.security
                        .quotas
                        .max_in_window(&user, &client_id, QuotaKey::ConsumerByteRate)
                {
                    let max = max.min(i32::MAX as f64) as i32;
                    req.max_bytes = req.max_bytes.min(max.max(1));
                }
            }
            Box::pin(async move {
                let mut resp = fetch::handle(b.clone(), &cx, v, req).await;
                let mut throttle = 0;
                if limited {
                    let size = fetch::records_bytes(&resp) as f64;
                    let now = quota::mono_ms();
                    let q = &b.security.quotas;
                    throttle = q.record(&user, &client_id, QuotaKey::ConsumerByteRate, size, now);
                    if throttle > 0 {
                        // Kafka answers a throttled fetch without its data and takes the
                        // bytes back: the consumer fetches them again after the wait.
                        q.unrecord(&user, &client_id, QuotaKey::ConsumerByteRate, size, now);
                        resp = fetch::throttled(&resp);
                    }
                    resp.throttle_time_ms = i32::try_from(throttle).unwrap_or(i32::MAX);
                    b.security
                        .note_throttle(QuotaKey::ConsumerByteRate, throttle);
                }
                cx.throttle.mute_for(throttle);
                // Record sets go out as chunks of their own instead of being copied.
                encoded(encode_fetch_response(v, cid, &resp))
            })
        }
        ApiKey::ListOffsets => {
            let req = decode!(ListOffsetsRequest);
            let b = broker.clone();
            let cx = frame.caller();
            Box::pin(async move {
                let resp = offsets::list_offsets(b, &cx, v, req).await;
                reply(key, v, cid, &resp)
            })
        }
        ApiKey::OffsetForLeaderEpoch => sync_cx!(
            OffsetForLeaderEpochRequest,
            offsets::offset_for_leader_epoch
        ),
        ApiKey::DeleteRecords => {
            let req = decode!(DeleteRecordsRequest);
            let b = broker.clone();
            let cx = frame.caller();
            Box::pin(async move {
                let resp = offsets::delete_records(b, &cx, v, req).await;
                reply(key, v, cid, &resp)
            })
        }
        ApiKey::CreateTopics => deferred_cx!(CreateTopicsRequest, topics::create_topics),
        ApiKey::DeleteTopics => deferred_cx!(DeleteTopicsRequest, topics::delete_topics),
        ApiKey::CreatePartitions => {
            deferred_cx!(CreatePartitionsRequest, topics::create_partitions)
        }
        ApiKey::DescribeConfigs => sync_cx!(DescribeConfigsRequest, configs::describe_configs),
        ApiKey::AlterConfigs => deferred_cx!(AlterConfigsRequest, configs::alter_configs),
        ApiKey::IncrementalAlterConfigs => deferred_cx!(
            IncrementalAlterConfigsRequest,
            configs::incremental_alter_configs
        ),
        ApiKey::InitProducerId => deferred_cx!(InitProducerIdRequest, producer_id::handle),
        ApiKey::AddPartitionsToTxn => {
            deferred_cx!(AddPartitionsToTxnRequest, txn::add_partitions)
        }
        ApiKey::AddOffsetsToTxn => deferred_cx!(AddOffsetsToTxnRequest, txn::add_offsets),
        ApiKey::EndTxn => deferred_cx!(EndTxnRequest, txn::end_txn),
        ApiKey::TxnOffsetCommit => {
            deferred_cx!(TxnOffsetCommitRequest, txn::txn_offset_commit)
        }
        ApiKey::WriteTxnMarkers => deferred_cx!(WriteTxnMarkersRequest, txn::write_txn_markers),
        ApiKey::DescribeTransactions => {
            sync_cx!(DescribeTransactionsRequest, txn::describe_transactions)
        }
        ApiKey::ListTransactions => sync_cx!(ListTransactionsRequest, txn::list_transactions),
        ApiKey::DescribeProducers => {
            sync_cx!(DescribeProducersRequest, txn::describe_producers)
        }
        ApiKey::FindCoordinator => {
            deferred_cx!(FindCoordinatorRequest, find_coordinator::handle)
        }
        ApiKey::JoinGroup => {
            let req = decode!(JoinGroupRequest);
            groups::join_group(broker.clone(), &frame, req)
        }
        ApiKey::SyncGroup => {
            let req = decode!(SyncGroupRequest);
            groups::sync_group(broker.clone(), &frame, req)
        }
        ApiKey::Heartbeat => sync_cx!(HeartbeatRequest, groups::heartbeat),
        ApiKey::LeaveGroup => sync_cx!(LeaveGroupRequest, groups::leave_group),
        ApiKey::OffsetCommit => {
            let req = decode!(OffsetCommitRequest);
            groups::offset_commit(broker.clone(), &frame, req)
        }
        ApiKey::OffsetFetch => sync_cx!(OffsetFetchRequest, groups::offset_fetch),
        ApiKey::ListGroups => sync_cx!(ListGroupsRequest, groups::list_groups),
        ApiKey::DescribeGroups => sync_cx!(DescribeGroupsRequest, groups::describe_groups),
        ApiKey::DeleteGroups => {
            let req = decode!(DeleteGroupsRequest);
            groups::delete_groups(broker.clone(), &frame, req)
        }
        ApiKey::OffsetDelete => {
            let req = decode!(OffsetDeleteRequest);
            groups::offset_delete(broker.clone(), &frame, req)
        }
        // Operations: log directories, leader elections, partition reassignments.
        ApiKey::DescribeLogDirs => sync_cx!(DescribeLogDirsRequest, log_dirs::describe_log_dirs),
        ApiKey::ElectLeaders => deferred_cx!(ElectLeadersRequest, replicas::elect_leaders),
        ApiKey::AlterPartitionReassignments => deferred_cx!(
            AlterPartitionReassignmentsRequest,
            replicas::alter_partition_reassignments
        ),
        ApiKey::ListPartitionReassignments => deferred_cx!(
            ListPartitionReassignmentsRequest,
            replicas::list_partition_reassignments
        ),
        // Security administration.
        ApiKey::DescribeUserScramCredentials => sync_cx!(
            DescribeUserScramCredentialsRequest,
            security::describe_user_scram_credentials
        ),
        ApiKey::AlterUserScramCredentials => deferred_cx!(
            AlterUserScramCredentialsRequest,
            security::alter_user_scram_credentials
        ),
        ApiKey::CreateAcls => deferred_cx!(CreateAclsRequest, security::create_acls),
        ApiKey::DescribeAcls => sync_cx!(DescribeAclsRequest, security::describe_acls),
        ApiKey::DeleteAcls => deferred_cx!(DeleteAclsRequest, security::delete_acls),
        ApiKey::DescribeClientQuotas => {
            sync_cx!(DescribeClientQuotasRequest, quotas::describe_client_quotas)
        }
        ApiKey::AlterClientQuotas => {
            deferred_cx!(AlterClientQuotasRequest, quotas::alter_client_quotas)
        }
        other => {
            // parse_frame only lets advertised APIs through; this is a programming error.
            tracing::error!(api = ?other, "advertised API without a handler; closing connection");
            ready(Reply::Close)
        }
    }
}

/// StrBytes from a `String`.
pub fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

/// A TopicName from a `&str`.
pub fn topic_name(v: &str) -> TopicName {
    TopicName(s(v))
}
