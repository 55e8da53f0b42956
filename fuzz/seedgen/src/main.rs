//! Writes the seed corpora of the fuzz targets: real request frames, record sets and
//! partition directories encoded with the kafka-protocol crate.
//!
//! Usage: strata-fuzz-seedgen OUT_DIR   (writes OUT_DIR/{request_frame,record_batches,log_recovery,disk_cache_entry,bucket_documents,txn_records}/)

use std::path::Path;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

/// Build a non-exhaustive kafka-protocol message from field values.
macro_rules! build {
    ($t:path { $($f:ident : $e:expr),* $(,)? }) => {{
        #[allow(unused_mut)]
        let mut v = <$t>::default();
        $(v.$f = $e;)*
        v
    }};
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn tn(v: &str) -> TopicName {
    TopicName(s(v))
}

const TS: i64 = 1_700_000_000_000;

/// One v2 batch of (key, value) records at offsets `base..`.
fn batch(
    kv: &[(Option<&[u8]>, &[u8])],
    base: i64,
    pid: i64,
    seq: i32,
    compression: Compression,
) -> Vec<u8> {
    let records: Vec<Record> = kv
        .iter()
        .enumerate()
        .map(|(i, (k, v))| {
            let mut headers = indexmap::IndexMap::new();
            if i == 1 {
                headers.insert(s("h"), Some(Bytes::from_static(b"hv")));
            }
            Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: pid,
                producer_epoch: if pid >= 0 { 0 } else { -1 },
                timestamp_type: TimestampType::Creation,
                offset: base + i as i64,
                sequence: if seq >= 0 { seq + i as i32 } else { -1 },
                timestamp: TS + i as i64,
                key: k.map(Bytes::copy_from_slice),
                value: Some(Bytes::copy_from_slice(v)),
                headers,
            }
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .expect("encode batch");
    buf.to_vec()
}

fn simple(base: i64) -> Vec<u8> {
    batch(&[(None, b"hello")], base, -1, -1, Compression::None)
}

fn keyed(base: i64, compression: Compression) -> Vec<u8> {
    batch(
        &[
            (Some(b"k1"), b"value-one"),
            (Some(b"k2"), b"value-two"),
            (Some(b"k1"), b"value-three"),
        ],
        base,
        -1,
        -1,
        compression,
    )
}

/// A request frame without its size prefix, as `parse_frame` takes it.
fn frame<T: Encodable>(key: ApiKey, version: i16, body: &T) -> Vec<u8> {
    let header = build!(RequestHeader {
        request_api_key: key as i16,
        request_api_version: version,
        correlation_id: 7,
        client_id: Some(s("seed"))
    });
    let mut buf = BytesMut::new();
    header
        .encode(&mut buf, key.request_header_version(version))
        .expect("encode header");
    body.encode(&mut buf, version).expect("encode body");
    buf.to_vec()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).expect("mkdir");
    std::fs::write(dir.join(name), bytes).expect("write seed");
}

fn produce(topic: &str, acks: i16, records: Vec<u8>) -> ProduceRequest {
    build!(ProduceRequest {
        acks: acks,
        timeout_ms: 1000,
        topic_data: vec![build!(produce_request::TopicProduceData {
            name: tn(topic),
            partition_data: vec![build!(produce_request::PartitionProduceData {
                index: 0,
                records: Some(Bytes::from(records))
            })]
        })]
    })
}

fn fetch(topic: &str, offset: i64, max_wait_ms: i32) -> FetchRequest {
    build!(FetchRequest {
        replica_id: BrokerId(-1),
        max_wait_ms: max_wait_ms,
        min_bytes: 1,
        max_bytes: 1 << 20,
        topics: vec![build!(fetch_request::FetchTopic {
            topic: tn(topic),
            partitions: vec![build!(fetch_request::FetchPartition {
                partition: 0,
                current_leader_epoch: -1,
                fetch_offset: offset,
                last_fetched_epoch: -1,
                log_start_offset: -1,
                partition_max_bytes: 1 << 20
            })]
        })]
    })
}

fn request_frames(dir: &Path) {
    let w = |name: &str, bytes: Vec<u8>| write(dir, name, &bytes);
    w(
        "api_versions_v0",
        frame(ApiKey::ApiVersions, 0, &ApiVersionsRequest::default()),
    );
    w(
        "api_versions_v3",
        frame(
            ApiKey::ApiVersions,
            3,
            &build!(ApiVersionsRequest {
                client_software_name: s("seed"),
                client_software_version: s("1.0")
            }),
        ),
    );
    w(
        "metadata_v1_all",
        frame(
            ApiKey::Metadata,
            1,
            &build!(MetadataRequest { topics: None }),
        ),
    );
    w(
        "metadata_v9_topic",
        frame(
            ApiKey::Metadata,
            9,
            &build!(MetadataRequest {
                topics: Some(vec![build!(metadata_request::MetadataRequestTopic {
                    name: Some(tn("fuzz"))
                })]),
                allow_auto_topic_creation: true
            }),
        ),
    );
    w(
        "metadata_v12_topic",
        frame(
            ApiKey::Metadata,
            12,
            &build!(MetadataRequest {
                topics: Some(vec![build!(metadata_request::MetadataRequestTopic {
                    name: Some(tn("fuzz"))
                })]),
                allow_auto_topic_creation: true
            }),
        ),
    );
    w(
        "describe_cluster_v0",
        frame(
            ApiKey::DescribeCluster,
            0,
            &DescribeClusterRequest::default(),
        ),
    );
    w(
        "create_topics_v5",
        frame(
            ApiKey::CreateTopics,
            5,
            &build!(CreateTopicsRequest {
                timeout_ms: 1000,
                topics: vec![
                    build!(create_topics_request::CreatableTopic {
                        name: tn("fuzz"),
                        num_partitions: 2,
                        replication_factor: 1,
                        configs: vec![build!(create_topics_request::CreatableTopicConfig {
                            name: s("retention.ms"),
                            value: Some(s("60000"))
                        })]
                    }),
                    build!(create_topics_request::CreatableTopic {
                        name: tn("fuzz-compact"),
                        num_partitions: -1,
                        replication_factor: -1,
                        configs: vec![build!(create_topics_request::CreatableTopicConfig {
                            name: s("cleanup.policy"),
                            value: Some(s("compact"))
                        })]
                    })
                ]
            }),
        ),
    );
    w(
        "produce_v3_acks1",
        frame(ApiKey::Produce, 3, &produce("fuzz", 1, simple(0))),
    );
    w(
        "produce_v9_acks_all",
        frame(
            ApiKey::Produce,
            9,
            &produce(
                "fuzz",
                -1,
                [simple(0), keyed(0, Compression::None)].concat(),
            ),
        ),
    );
    w(
        "produce_v11_idempotent_gzip",
        frame(
            ApiKey::Produce,
            11,
            &produce(
                "fuzz-compact",
                -1,
                batch(
                    &[(Some(b"k"), b"v"), (Some(b"k2"), b"v2")],
                    0,
                    1000,
                    0,
                    Compression::Gzip,
                ),
            ),
        ),
    );
    w(
        "produce_v7_acks0",
        frame(ApiKey::Produce, 7, &produce("fuzz", 0, simple(0))),
    );
    w("fetch_v4", frame(ApiKey::Fetch, 4, &fetch("fuzz", 0, 100)));
    w(
        "fetch_v12",
        frame(ApiKey::Fetch, 12, &fetch("fuzz", 0, 500)),
    );
    w(
        "fetch_v12_long_poll",
        frame(ApiKey::Fetch, 12, &fetch("fuzz", 1000, 300_000)),
    );
    let mut f16 = fetch("", 0, 0);
    f16.topics[0].topic_id = uuid::Uuid::from_u128(1);
    w("fetch_v16_topic_id", frame(ApiKey::Fetch, 16, &f16));
    let list = |ts: i64| {
        build!(ListOffsetsRequest {
            replica_id: BrokerId(-1),
            topics: vec![build!(list_offsets_request::ListOffsetsTopic {
                name: tn("fuzz"),
                partitions: vec![build!(list_offsets_request::ListOffsetsPartition {
                    partition_index: 0,
                    current_leader_epoch: -1,
                    timestamp: ts
                })]
            })]
        })
    };
    w(
        "list_offsets_v1_latest",
        frame(ApiKey::ListOffsets, 1, &list(-1)),
    );
    w(
        "list_offsets_v7_earliest",
        frame(ApiKey::ListOffsets, 7, &list(-2)),
    );
    w(
        "list_offsets_v8_time",
        frame(ApiKey::ListOffsets, 8, &list(TS)),
    );
    w(
        "list_offsets_v8_max_ts",
        frame(ApiKey::ListOffsets, 8, &list(-3)),
    );
    w(
        "offset_for_leader_epoch_v4",
        frame(
            ApiKey::OffsetForLeaderEpoch,
            4,
            &build!(OffsetForLeaderEpochRequest {
                replica_id: BrokerId(-1),
                topics: vec![build!(
                    offset_for_leader_epoch_request::OffsetForLeaderTopic {
                        topic: tn("fuzz"),
                        partitions: vec![build!(
                            offset_for_leader_epoch_request::OffsetForLeaderPartition {
                                partition: 0,
                                current_leader_epoch: -1,
                                leader_epoch: 0
                            }
                        )]
                    }
                )]
            }),
        ),
    );
    w(
        "delete_records_v2",
        frame(
            ApiKey::DeleteRecords,
            2,
            &build!(DeleteRecordsRequest {
                timeout_ms: 1000,
                topics: vec![build!(delete_records_request::DeleteRecordsTopic {
                    name: tn("fuzz"),
                    partitions: vec![build!(delete_records_request::DeleteRecordsPartition {
                        partition_index: 0,
                        offset: 1
                    })]
                })]
            }),
        ),
    );
    w(
        "create_partitions_v3",
        frame(
            ApiKey::CreatePartitions,
            3,
            &build!(CreatePartitionsRequest {
                timeout_ms: 1000,
                topics: vec![build!(create_partitions_request::CreatePartitionsTopic {
                    name: tn("fuzz"),
                    count: 4,
                    assignments: None
                })]
            }),
        ),
    );
    let describe = |rtype: i8, name: &str| {
        build!(DescribeConfigsRequest {
            resources: vec![build!(describe_configs_request::DescribeConfigsResource {
                resource_type: rtype,
                resource_name: s(name),
                configuration_keys: None
            })],
            include_synonyms: true,
            include_documentation: false
        })
    };
    w(
        "describe_configs_v4_topic",
        frame(ApiKey::DescribeConfigs, 4, &describe(2, "fuzz")),
    );
    w(
        "describe_configs_v1_broker",
        frame(ApiKey::DescribeConfigs, 1, &describe(4, "0")),
    );
    w(
        "alter_configs_v2",
        frame(
            ApiKey::AlterConfigs,
            2,
            &build!(AlterConfigsRequest {
                resources: vec![build!(alter_configs_request::AlterConfigsResource {
                    resource_type: 2,
                    resource_name: s("fuzz"),
                    configs: vec![build!(alter_configs_request::AlterableConfig {
                        name: s("segment.bytes"),
                        value: Some(s("1048576"))
                    })]
                })]
            }),
        ),
    );
    w(
        "incremental_alter_configs_v1",
        frame(
            ApiKey::IncrementalAlterConfigs,
            1,
            &build!(IncrementalAlterConfigsRequest {
                resources: vec![build!(
                    incremental_alter_configs_request::AlterConfigsResource {
                        resource_type: 2,
                        resource_name: s("fuzz"),
                        configs: vec![
                            build!(incremental_alter_configs_request::AlterableConfig {
                                name: s("cleanup.policy"),
                                config_operation: 2,
                                value: Some(s("compact"))
                            }),
                            build!(incremental_alter_configs_request::AlterableConfig {
                                name: s("retention.ms"),
                                config_operation: 1,
                                value: None
                            })
                        ]
                    }
                )]
            }),
        ),
    );
    w(
        "init_producer_id_v4",
        frame(
            ApiKey::InitProducerId,
            4,
            &build!(InitProducerIdRequest {
                transaction_timeout_ms: 60000,
                producer_id: ProducerId(-1),
                producer_epoch: -1
            }),
        ),
    );
    // Operations: log directories, leader elections, partition reassignments.
    w(
        "describe_log_dirs_v4_all",
        frame(
            ApiKey::DescribeLogDirs,
            4,
            &build!(DescribeLogDirsRequest { topics: None }),
        ),
    );
    w(
        "elect_leaders_v2_preferred",
        frame(
            ApiKey::ElectLeaders,
            2,
            &build!(ElectLeadersRequest {
                election_type: 0,
                topic_partitions: Some(vec![build!(elect_leaders_request::TopicPartitions {
                    topic: tn("fuzz"),
                    partitions: vec![0, 1]
                })]),
                timeout_ms: 1000
            }),
        ),
    );
    w(
        "alter_partition_reassignments_v1",
        frame(
            ApiKey::AlterPartitionReassignments,
            1,
            &build!(AlterPartitionReassignmentsRequest {
                allow_replication_factor_change: false,
                topics: vec![build!(
                    alter_partition_reassignments_request::ReassignableTopic {
                        name: tn("fuzz"),
                        partitions: vec![
                            build!(
                                alter_partition_reassignments_request::ReassignablePartition {
                                    partition_index: 0,
                                    replicas: Some(vec![BrokerId(1)])
                                }
                            ),
                            build!(
                                alter_partition_reassignments_request::ReassignablePartition {
                                    partition_index: 1,
                                    replicas: None
                                }
                            )
                        ]
                    }
                )]
            }),
        ),
    );
    w(
        "list_partition_reassignments_v0",
        frame(
            ApiKey::ListPartitionReassignments,
            0,
            &build!(ListPartitionReassignmentsRequest { topics: None }),
        ),
    );
    w(
        "find_coordinator_v3",
        frame(
            ApiKey::FindCoordinator,
            3,
            &build!(FindCoordinatorRequest {
                key: s("group"),
                key_type: 0
            }),
        ),
    );
    w(
        "find_coordinator_v4",
        frame(
            ApiKey::FindCoordinator,
            4,
            &build!(FindCoordinatorRequest {
                key_type: 0,
                coordinator_keys: vec![s("group-a"), s("group-b")]
            }),
        ),
    );
    w(
        "delete_topics_v4",
        frame(
            ApiKey::DeleteTopics,
            4,
            &build!(DeleteTopicsRequest {
                topic_names: vec![tn("fuzz")],
                timeout_ms: 1000
            }),
        ),
    );
    w(
        "delete_topics_v6",
        frame(
            ApiKey::DeleteTopics,
            6,
            &build!(DeleteTopicsRequest {
                topics: vec![build!(delete_topics_request::DeleteTopicState {
                    name: Some(tn("fuzz-compact"))
                })],
                timeout_ms: 1000
            }),
        ),
    );
}

fn record_batches(dir: &Path) {
    let w = |name: &str, bytes: Vec<u8>| write(dir, name, &bytes);
    w("one_record", simple(0));
    w("keyed_three", keyed(0, Compression::None));
    w("gzip", keyed(0, Compression::Gzip));
    w("snappy", keyed(0, Compression::Snappy));
    w("lz4", keyed(0, Compression::Lz4));
    w("zstd", keyed(0, Compression::Zstd));
    w(
        "idempotent",
        batch(
            &[(Some(b"k"), b"a"), (None, b"b")],
            0,
            42,
            0,
            Compression::None,
        ),
    );
    w(
        "two_batches",
        [
            simple(0),
            batch(&[(None, b"x")], 0, 42, 5, Compression::None),
        ]
        .concat(),
    );
}

/// Offset index entry: relative offset, position (both u32, big-endian).
fn index_entry(rel: u32, pos: u32) -> Vec<u8> {
    [rel.to_be_bytes(), pos.to_be_bytes()].concat()
}

/// Time index entry: timestamp (i64), relative offset (u32), big-endian.
fn time_entry(ts: i64, rel: u32) -> Vec<u8> {
    [ts.to_be_bytes().to_vec(), rel.to_be_bytes().to_vec()].concat()
}

fn section(b: &[u8]) -> Vec<u8> {
    [(b.len() as u16).to_be_bytes().to_vec(), b.to_vec()].concat()
}

/// Input for the log_recovery target (layout documented in fuzz_targets/log_recovery.rs).
fn partition_dir(
    flags: u8,
    base: Option<i64>,
    index: &[u8],
    timeindex: &[u8],
    meta: &[u8],
    log: &[u8],
) -> Vec<u8> {
    let mut out = vec![flags | if base.is_some() { 0x10 } else { 0 }];
    if let Some(b) = base {
        out.extend_from_slice(&b.to_be_bytes());
    }
    if flags & 0x01 != 0 {
        out.extend(section(index));
    }
    if flags & 0x02 != 0 {
        out.extend(section(timeindex));
    }
    if flags & 0x04 != 0 {
        out.extend(section(meta));
    }
    out.extend_from_slice(log);
    out
}

fn log_recovery(dir: &Path) {
    let w = |name: &str, bytes: Vec<u8>| write(dir, name, &bytes);
    // A segment of three batches at offsets 0..=4 and its indexes.
    let b0 = keyed(0, Compression::None); // offsets 0..=2
    let b1 = simple(3); // offset 3
    let b2 = batch(&[(Some(b"k"), b"v")], 4, 42, 0, Compression::Zstd); // offset 4
    let seg = [b0.clone(), b1.clone(), b2.clone()].concat();
    let index = index_entry(3, b0.len() as u32);
    let timeindex = [time_entry(TS + 2, 0), time_entry(TS, 3)].concat();
    let meta = br#"{"version":1,"topic_id":"00000000-0000-0000-0000-000000000000","log_start_offset":1,"epochs":[[0,0],[3,3]]}"#;
    w("segment_only", partition_dir(0, None, &[], &[], &[], &seg));
    w(
        "full_dir",
        partition_dir(0x07, None, &index, &timeindex, meta, &seg),
    );
    w(
        "full_dir_no_recovery",
        partition_dir(0x0f, None, &index, &timeindex, meta, &seg),
    );
    w(
        "torn_tail",
        partition_dir(0x07, None, &index, &timeindex, meta, &seg[..seg.len() - 9]),
    );
    let mut corrupt = seg.clone();
    let n = b0.len() + b1.len() - 3;
    corrupt[n] ^= 0x40;
    w(
        "corrupt_middle",
        partition_dir(0, None, &[], &[], &[], &corrupt),
    );
    let high = [simple(1_000_000), keyed(1_000_001, Compression::Lz4)].concat();
    w(
        "high_base_offset",
        partition_dir(0x01, Some(1_000_000), &index_entry(1, 0), &[], &[], &high),
    );
    w("empty", Vec::new());
}

/// Files of the disk cache for bucket reads: intact blocks and whole objects, an empty one,
/// and one with a flipped data byte.
fn disk_cache_entries(dir: &Path) {
    use strata_node::tiering::disk_cache::encode_entry;
    std::fs::create_dir_all(dir).unwrap();
    let w = |name: &str, bytes: Vec<u8>| std::fs::write(dir.join(name), bytes).unwrap();
    let block: Vec<u8> = (0..1024u32).map(|i| i as u8).collect();
    w(
        "block",
        encode_entry(
            "prefix/6f1c2d3e-0000-4000-8000-000000000001/0/00000000000000000000-0.log",
            0,
            &block,
        ),
    );
    w(
        "whole_index",
        encode_entry(
            "prefix/t/0/00000000000000001000-3.index",
            u64::MAX,
            &[[0u8; 8], [1u8; 8]].concat(),
        ),
    );
    w("empty_data", encode_entry("o", 7, &[]));
    let mut bad = encode_entry("o", 1, b"abcdef");
    *bad.last_mut().unwrap() ^= 1;
    w("bad_crc", bad);
}

/// A partition's manifest (first byte 0) and a topic's catalog entry (first byte 1): as
/// written, and with fields a reader must refuse.
fn bucket_documents(dir: &Path) {
    use strata_node::tiering::catalog::TopicDescriptor;
    use strata_node::tiering::manifest::{Manifest, RemoteSegment};
    std::fs::create_dir_all(dir).unwrap();
    let w = |name: &str, kind: u8, doc: &[u8]| {
        std::fs::write(dir.join(name), [&[kind][..], doc].concat()).unwrap()
    };
    let id = uuid::Uuid::from_u128(0x6f1c_2d3e_0000_4000_8000_0000_0000_0001);
    let mut m = Manifest::empty(id, 0);
    m.leader_epoch = 3;
    m.generation = 9;
    m.end_offset = 200;
    m.segments = vec![
        RemoteSegment {
            base_offset: 0,
            next_offset: 120,
            size: 4096,
            index_size: 16,
            time_index_size: 24,
            max_timestamp: 1_700_000_000_000,
            leader_epoch: 1,
            epochs: vec![(0, 0), (1, 80)],
            compacted: None,
            aborted: vec![strata_node::log::txn::AbortedTxn {
                producer_id: 7,
                first_offset: 10,
                last_offset: 30,
                last_stable_offset: 10,
            }],
        },
        RemoteSegment {
            base_offset: 120,
            next_offset: 200,
            size: 2048,
            index_size: 8,
            time_index_size: 12,
            max_timestamp: -1,
            leader_epoch: 3,
            epochs: vec![(3, 120)],
            compacted: Some(strata_node::tiering::manifest::Compacted {
                count: 2,
                by_epoch: 3,
            }),
            aborted: Vec::new(),
        },
    ];
    w("manifest", 0, &m.to_bytes());
    w("manifest_empty", 0, &Manifest::empty(id, 2).to_bytes());
    let text = String::from_utf8(m.to_bytes().to_vec()).unwrap();
    w(
        "manifest_gap",
        0,
        text.replace("\"base_offset\": 120", "\"base_offset\": 121")
            .as_bytes(),
    );
    w(
        "manifest_newer",
        0,
        text.replace("\"version\": 1", "\"version\": 2").as_bytes(),
    );
    let mut configs = std::collections::BTreeMap::new();
    configs.insert("remote.storage.enable".to_string(), "true".to_string());
    configs.insert("retention.ms".to_string(), "2592000000".to_string());
    let d = TopicDescriptor::new("orders", id, 6, 3, configs);
    w("topic", 1, &d.to_bytes());
    let text = String::from_utf8(d.to_bytes().to_vec()).unwrap();
    w(
        "topic_no_partitions",
        1,
        text.replace("\"partitions\": 6", "\"partitions\": 0")
            .as_bytes(),
    );
}

/// Transaction bytes from disk: a segment's aborted-transaction index (whole, torn, of an
/// unknown version), control batches (commit, abort), and `__transaction_state` records.
fn txn_records(dir: &Path) {
    use strata_node::log::txn::{marker_batch, AbortedTxn, Marker};
    use strata_node::txn::records::{encode_key, TxnMeta, TxnState};
    let e = |pid, first, last| AbortedTxn {
        producer_id: pid,
        first_offset: first,
        last_offset: last,
        last_stable_offset: first,
    };
    let index: Vec<u8> = [e(1, 0, 5), e(2, 3, 9)]
        .iter()
        .flat_map(|a| a.encode())
        .collect();
    write(dir, "index", &index);
    write(dir, "index_torn", &index[..50]);
    let mut newer = index.clone();
    newer[1] = 1;
    write(dir, "index_newer", &newer);
    write(
        dir,
        "commit_marker",
        &marker_batch(Marker::Commit, 42, 3, 7, 1_700_000_000_000).unwrap(),
    );
    write(
        dir,
        "abort_marker",
        &marker_batch(Marker::Abort, 42, 3, 0, 1_700_000_000_000).unwrap(),
    );
    let meta = TxnMeta {
        producer_id: 4000,
        producer_epoch: 2,
        timeout_ms: 60_000,
        state: TxnState::Ongoing,
        partitions: [("orders".to_string(), 0), ("orders".to_string(), 3)]
            .into_iter()
            .collect(),
        update_ms: 1_700_000_000_000,
        start_ms: 1_699_999_999_000,
        client_version: 0,
        prev_producer_id: -1,
        next_producer_id: -1,
    };
    write(dir, "state_value", &meta.encode());
    let v1 = TxnMeta {
        client_version: 2,
        prev_producer_id: 3999,
        next_producer_id: 4001,
        ..meta.clone()
    };
    write(dir, "state_value_v1", &v1.encode());
    write(dir, "state_key", &encode_key("payments-tx"));
}

fn main() {
    let out = std::env::args()
        .nth(1)
        .expect("usage: strata-fuzz-seedgen OUT_DIR");
    let out = Path::new(&out);
    request_frames(&out.join("request_frame"));
    record_batches(&out.join("record_batches"));
    log_recovery(&out.join("log_recovery"));
    disk_cache_entries(&out.join("disk_cache_entry"));
    bucket_documents(&out.join("bucket_documents"));
    txn_records(&out.join("txn_records"));
}
