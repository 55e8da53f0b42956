//! Every handler's response encodes at every version we advertise (a field set beyond its
//! version makes the codec refuse, which would close the client's connection).

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};
use strata_node::config::NodeConfig;
use strata_node::node::Node;
use strata_node::protocol::versions::SUPPORTED;
use strata_node::protocol::Reply;
use strata_node::protocol::{handlers, parse_frame, Parsed};

#[global_allocator]
static GLOBAL: strata_node::alloc::LazyLargeAlloc = strata_node::alloc::LazyLargeAlloc;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn raw<T: Encodable>(key: ApiKey, version: i16, body: &T) -> Option<Bytes> {
    let mut header = RequestHeader::default();
    header.request_api_key = key as i16;
    header.request_api_version = version;
    header.correlation_id = 1;
    header.client_id = Some(s("versions-test"));
    let mut buf = BytesMut::new();
    header
        .encode(&mut buf, key.request_header_version(version))
        .ok()?;
    // Some fields do not exist at some versions; skip combinations the codec refuses.
    body.encode(&mut buf, version).ok()?;
    Some(buf.freeze())
}

async fn check<T: Encodable>(b: &Arc<Node>, key: ApiKey, body: &T) {
    let (_, lo, hi) = SUPPORTED
        .iter()
        .find(|(k, _, _)| *k == key)
        .copied()
        .expect("supported");
    for v in lo..=hi {
        let Some(frame) = raw(key, v, body) else {
            continue;
        };
        let Parsed::Request(frame) = parse_frame(frame) else {
            panic!("{key:?} v{v} not parsed")
        };
        let reply = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            handlers::dispatch(b, frame),
        )
        .await
        .expect("answered");
        assert!(
            matches!(reply, Reply::Bytes(_)),
            "{key:?} v{v} did not encode: {reply:?}"
        );
    }
}

#[tokio::test]
async fn all_handlers_encode_at_all_versions() {
    let dir = tempfile::tempdir().unwrap();
    let b = Node::open_and_start(NodeConfig::for_tests(dir.path().to_path_buf()))
        .await
        .unwrap();
    b.broker
        .create_topic("t", 2, 1, Default::default(), false)
        .await
        .unwrap();
    b.broker.ensure_offsets_topic().await.unwrap();
    b.groups.load_all();
    let topic = TopicName(s("t"));

    let mut md = MetadataRequest::default();
    md.topics = None;
    check(&b, ApiKey::Metadata, &md).await;
    let mut mt = metadata_request::MetadataRequestTopic::default();
    mt.name = Some(topic.clone());
    md.topics = Some(vec![mt]);
    check(&b, ApiKey::Metadata, &md).await;

    let mut lo = ListOffsetsRequest::default();
    let mut lt = list_offsets_request::ListOffsetsTopic::default();
    lt.name = topic.clone();
    lt.partitions = [-1i64, -2, 0]
        .iter()
        .map(|ts| {
            let mut p = list_offsets_request::ListOffsetsPartition::default();
            p.timestamp = *ts;
            p
        })
        .collect();
    lo.topics = vec![lt];
    check(&b, ApiKey::ListOffsets, &lo).await;

    let mut ct = CreateTopicsRequest::default();
    let mut c = create_topics_request::CreatableTopic::default();
    c.name = TopicName(s("created"));
    c.num_partitions = 1;
    c.replication_factor = 1;
    ct.topics = vec![c];
    ct.validate_only = true;
    check(&b, ApiKey::CreateTopics, &ct).await;

    let mut dc = DescribeConfigsRequest::default();
    let mut r = describe_configs_request::DescribeConfigsResource::default();
    r.resource_type = 2;
    r.resource_name = s("t");
    dc.resources = vec![r];
    check(&b, ApiKey::DescribeConfigs, &dc).await;

    let mut fc = FindCoordinatorRequest::default();
    fc.key = s("g");
    fc.coordinator_keys = vec![s("g")];
    check(&b, ApiKey::FindCoordinator, &fc).await;

    check(
        &b,
        ApiKey::DescribeCluster,
        &DescribeClusterRequest::default(),
    )
    .await;
    check(
        &b,
        ApiKey::InitProducerId,
        &InitProducerIdRequest::default(),
    )
    .await;
    check(&b, ApiKey::ApiVersions, &ApiVersionsRequest::default()).await;

    let mut oe = OffsetForLeaderEpochRequest::default();
    let mut ot = offset_for_leader_epoch_request::OffsetForLeaderTopic::default();
    ot.topic = topic.clone();
    ot.partitions = vec![offset_for_leader_epoch_request::OffsetForLeaderPartition::default()];
    oe.topics = vec![ot];
    check(&b, ApiKey::OffsetForLeaderEpoch, &oe).await;

    let mut dr = DeleteRecordsRequest::default();
    let mut dt = delete_records_request::DeleteRecordsTopic::default();
    dt.name = topic.clone();
    dt.partitions = vec![delete_records_request::DeleteRecordsPartition::default()];
    dr.topics = vec![dt];
    check(&b, ApiKey::DeleteRecords, &dr).await;

    let mut cp = CreatePartitionsRequest::default();
    let mut ctp = create_partitions_request::CreatePartitionsTopic::default();
    ctp.name = topic.clone();
    ctp.count = 1;
    cp.topics = vec![ctp];
    check(&b, ApiKey::CreatePartitions, &cp).await;

    let mut f = FetchRequest::default();
    let mut ft = fetch_request::FetchTopic::default();
    ft.topic = topic.clone();
    ft.topic_id = b.broker.topic("t").unwrap().meta.id;
    let mut fp = fetch_request::FetchPartition::default();
    fp.partition_max_bytes = 1 << 20;
    ft.partitions = vec![fp];
    f.topics = vec![ft];
    f.max_bytes = 1 << 20;
    check(&b, ApiKey::Fetch, &f).await;

    let mut oc = OffsetCommitRequest::default();
    oc.group_id = GroupId(s("g"));
    oc.generation_id_or_member_epoch = -1;
    let mut oct = offset_commit_request::OffsetCommitRequestTopic::default();
    oct.name = topic.clone();
    let mut ocp = offset_commit_request::OffsetCommitRequestPartition::default();
    ocp.committed_offset = 0;
    oct.partitions = vec![ocp];
    oc.topics = vec![oct];
    check(&b, ApiKey::OffsetCommit, &oc).await;

    let mut of = OffsetFetchRequest::default();
    of.group_id = GroupId(s("g"));
    of.topics = None;
    let mut ofg = offset_fetch_request::OffsetFetchRequestGroup::default();
    ofg.group_id = GroupId(s("g"));
    of.groups = vec![ofg];
    check(&b, ApiKey::OffsetFetch, &of).await;

    let mut dg = DescribeGroupsRequest::default();
    dg.groups = vec![GroupId(s("g")), GroupId(s("missing"))];
    check(&b, ApiKey::DescribeGroups, &dg).await;
    check(&b, ApiKey::ListGroups, &ListGroupsRequest::default()).await;

    let mut hb = HeartbeatRequest::default();
    hb.group_id = GroupId(s("g"));
    check(&b, ApiKey::Heartbeat, &hb).await;

    let mut jg = JoinGroupRequest::default();
    jg.group_id = GroupId(s("j"));
    jg.session_timeout_ms = 10;
    jg.protocol_type = s("consumer");
    check(&b, ApiKey::JoinGroup, &jg).await;

    let mut lg = LeaveGroupRequest::default();
    lg.group_id = GroupId(s("g"));
    let mut lm = leave_group_request::MemberIdentity::default();
    lm.member_id = s("nobody");
    lg.members = vec![lm];
    lg.member_id = s("nobody");
    check(&b, ApiKey::LeaveGroup, &lg).await;

    // Operations: log directories, leader elections, partition reassignments.
    let mut dl = DescribeLogDirsRequest::default();
    dl.topics = None;
    check(&b, ApiKey::DescribeLogDirs, &dl).await;
    let mut dlt = describe_log_dirs_request::DescribableLogDirTopic::default();
    dlt.topic = topic.clone();
    dlt.partitions = vec![0, 1, 7];
    dl.topics = Some(vec![dlt]);
    check(&b, ApiKey::DescribeLogDirs, &dl).await;

    for election_type in [0, 1, 2] {
        let mut el = ElectLeadersRequest::default();
        el.election_type = election_type;
        el.topic_partitions = None;
        check(&b, ApiKey::ElectLeaders, &el).await;
        let mut etp = elect_leaders_request::TopicPartitions::default();
        etp.topic = topic.clone();
        etp.partitions = vec![0, 9];
        let mut missing = elect_leaders_request::TopicPartitions::default();
        missing.topic = TopicName(s("missing"));
        missing.partitions = vec![0];
        el.topic_partitions = Some(vec![etp, missing]);
        check(&b, ApiKey::ElectLeaders, &el).await;
    }

    for allow in [true, false] {
        let mut ar = AlterPartitionReassignmentsRequest::default();
        ar.allow_replication_factor_change = allow;
        let mut art = alter_partition_reassignments_request::ReassignableTopic::default();
        art.name = topic.clone();
        art.partitions = [Some(vec![1]), Some(vec![2]), Some(vec![]), None]
            .into_iter()
            .enumerate()
            .map(|(i, replicas)| {
                let mut p = alter_partition_reassignments_request::ReassignablePartition::default();
                p.partition_index = i as i32 % 2;
                p.replicas = replicas.map(|r| r.into_iter().map(BrokerId).collect());
                p
            })
            .collect();
        ar.topics = vec![art];
        check(&b, ApiKey::AlterPartitionReassignments, &ar).await;
    }

    let mut lr = ListPartitionReassignmentsRequest::default();
    lr.topics = None;
    check(&b, ApiKey::ListPartitionReassignments, &lr).await;
    let mut lrt = list_partition_reassignments_request::ListPartitionReassignmentsTopics::default();
    lrt.name = topic.clone();
    lrt.partition_indexes = vec![0];
    lr.topics = Some(vec![lrt]);
    check(&b, ApiKey::ListPartitionReassignments, &lr).await;
}
