//! In-process server on port 0: framing, version negotiation, pipelining and bad input.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use strata_node::config::NodeConfig;
use strata_node::node::Node;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[global_allocator]
static GLOBAL: strata_node::alloc::LazyLargeAlloc = strata_node::alloc::LazyLargeAlloc;

struct Server {
    addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::watch::Sender<bool>,
}

async fn start() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = NodeConfig::for_tests(dir.path().to_path_buf());
    cfg.max_request_bytes = 64 * 1024;
    let broker: Arc<Node> = Node::open_and_start(cfg).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(strata_node::server::serve(
        broker.clone(),
        vec![strata_node::server::Bound::first(&broker, listener)],
        rx,
    ));
    Server {
        addr,
        _dir: dir,
        _stop: tx,
    }
}

fn frame<T: Encodable>(key: ApiKey, version: i16, correlation_id: i32, body: &T) -> BytesMut {
    let mut header = RequestHeader::default();
    header.request_api_key = key as i16;
    header.request_api_version = version;
    header.correlation_id = correlation_id;
    header.client_id = Some(StrBytes::from_static_str("it"));
    let mut buf = BytesMut::new();
    header
        .encode(&mut buf, key.request_header_version(version))
        .unwrap();
    body.encode(&mut buf, version).unwrap();
    let mut out = BytesMut::new();
    out.put_i32(buf.len() as i32);
    out.extend_from_slice(&buf);
    out
}

async fn read_response(s: &mut TcpStream) -> Option<Bytes> {
    let mut len = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut len))
        .await
        .ok()?
        .ok()?;
    let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).await.ok()?;
    Some(Bytes::from(body))
}

async fn closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    matches!(
        tokio::time::timeout(Duration::from_secs(10), s.read(&mut b)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test]
async fn api_versions_and_unsupported_version_fallback() {
    let srv = start().await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(&frame(
        ApiKey::ApiVersions,
        3,
        1,
        &ApiVersionsRequest::default(),
    ))
    .await
    .unwrap();
    let mut r = read_response(&mut s).await.unwrap();
    assert_eq!(r.get_i32(), 1);
    // Response header v0 even for v3: no tagged-field byte before the body.
    let resp = ApiVersionsResponse::decode(&mut r, 3).unwrap();
    assert_eq!(resp.error_code, 0);
    assert!(resp
        .api_keys
        .iter()
        .any(|k| k.api_key == ApiKey::Produce as i16));
    assert!(
        !resp
            .api_keys
            .iter()
            .any(|k| k.api_key == ApiKey::ConsumerGroupHeartbeat as i16),
        "only implemented APIs"
    );

    // A version from the future: v0 body with UNSUPPORTED_VERSION (35) and the list.
    let mut raw = BytesMut::new();
    raw.put_i16(ApiKey::ApiVersions as i16);
    raw.put_i16(99);
    raw.put_i32(2);
    raw.put_i16(-1);
    let mut f = BytesMut::new();
    f.put_i32(raw.len() as i32);
    f.extend_from_slice(&raw);
    s.write_all(&f).await.unwrap();
    let mut r = read_response(&mut s).await.unwrap();
    assert_eq!(r.get_i32(), 2);
    let resp = ApiVersionsResponse::decode(&mut r, 0).unwrap();
    assert_eq!(resp.error_code, 35);
    assert!(!resp.api_keys.is_empty());
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let srv = start().await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    let mut all = BytesMut::new();
    // A long-polling fetch first, then quick requests: answers still come back in order.
    let mut fetch = FetchRequest::default();
    fetch.max_wait_ms = 300;
    fetch.min_bytes = 1;
    fetch.max_bytes = 1 << 20;
    fetch.replica_id = BrokerId(-1);
    all.extend_from_slice(&frame(ApiKey::Fetch, 12, 10, &fetch));
    for i in 11..20 {
        all.extend_from_slice(&frame(
            ApiKey::ApiVersions,
            0,
            i,
            &ApiVersionsRequest::default(),
        ));
    }
    s.write_all(&all).await.unwrap();
    for i in 10..20 {
        let mut r = read_response(&mut s).await.unwrap();
        assert_eq!(r.get_i32(), i);
    }
}

#[tokio::test]
async fn oversized_frame_closes_before_reading_it() {
    let srv = start().await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    // Claims 1 GiB; the server must not wait for (or allocate) it.
    s.write_all(&(1i32 << 30).to_be_bytes()).await.unwrap();
    assert!(closed(&mut s).await);
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(&(-5i32).to_be_bytes()).await.unwrap();
    assert!(closed(&mut s).await);
}

#[tokio::test]
async fn unknown_api_and_malformed_body_close_the_connection() {
    let srv = start().await;
    for raw in [
        // Unknown API key 9999.
        vec![0x27, 0x0f, 0, 0, 0, 0, 0, 1, 0xff, 0xff],
        // Produce v9 with a truncated body.
        vec![0, 0, 0, 9, 0, 0, 0, 2, 0, 0, 0, 5, 1, 2],
        // Metadata v1 whose topic array claims 2^31-1 entries.
        vec![0, 3, 0, 1, 0, 0, 0, 3, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff],
        // A known API at a version we do not implement.
        vec![0, 0, 0, 99, 0, 0, 0, 4, 0xff, 0xff],
    ] {
        let mut s = TcpStream::connect(srv.addr).await.unwrap();
        let mut f = (raw.len() as i32).to_be_bytes().to_vec();
        f.extend_from_slice(&raw);
        s.write_all(&f).await.unwrap();
        assert!(closed(&mut s).await, "connection closed for {raw:?}");
    }
    // The node still serves.
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(&frame(
        ApiKey::ApiVersions,
        0,
        5,
        &ApiVersionsRequest::default(),
    ))
    .await
    .unwrap();
    assert!(read_response(&mut s).await.is_some());
}

/// CreateTopics over `s`: the new topic's id.
async fn create_topic(s: &mut TcpStream, topic: TopicName, partitions: i32) -> uuid::Uuid {
    let mut ct = CreateTopicsRequest::default();
    let mut c = kafka_protocol::messages::create_topics_request::CreatableTopic::default();
    c.name = topic;
    c.num_partitions = partitions;
    c.replication_factor = 1;
    ct.topics = vec![c];
    ct.timeout_ms = 5000;
    s.write_all(&frame(ApiKey::CreateTopics, 7, 1, &ct))
        .await
        .unwrap();
    let mut r = read_response(s).await.unwrap();
    ResponseHeader::decode(&mut r, ApiKey::CreateTopics.response_header_version(7)).unwrap();
    let created = CreateTopicsResponse::decode(&mut r, 7).unwrap();
    assert_eq!(created.topics[0].error_code, 0);
    created.topics[0].topic_id
}

#[tokio::test]
async fn produce_with_bad_crc_is_corrupt_message_and_writes_nothing() {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::records::*;
    let srv = start().await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    // Kafka creates no topic on Produce (a client's Metadata request does).
    create_topic(&mut s, TopicName(StrBytes::from_static_str("crc-test")), 1).await;
    let rec = Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: 0,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp: 1,
        key: None,
        value: Some(Bytes::from_static(b"payload")),
        headers: Default::default(),
    };
    let mut batch = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut batch,
        &[rec],
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .unwrap();
    let n = batch.len();
    batch[n - 1] ^= 0xff;
    let mut pd = PartitionProduceData::default();
    pd.index = 0;
    pd.records = Some(batch.freeze());
    let mut td = TopicProduceData::default();
    td.name = TopicName(StrBytes::from_static_str("crc-test"));
    td.partition_data = vec![pd];
    let mut req = ProduceRequest::default();
    req.acks = -1;
    req.timeout_ms = 5000;
    req.topic_data = vec![td];
    s.write_all(&frame(ApiKey::Produce, 9, 1, &req))
        .await
        .unwrap();
    let mut r = read_response(&mut s).await.unwrap();
    assert_eq!(r.get_i32(), 1);
    let _tagged = r.get_u8();
    let resp = ProduceResponse::decode(&mut r, 9).unwrap();
    let p = &resp.responses[0].partition_responses[0];
    assert_eq!(p.error_code, 2, "CORRUPT_MESSAGE");

    let mut lo = ListOffsetsRequest::default();
    let mut t = kafka_protocol::messages::list_offsets_request::ListOffsetsTopic::default();
    t.name = TopicName(StrBytes::from_static_str("crc-test"));
    let mut p = kafka_protocol::messages::list_offsets_request::ListOffsetsPartition::default();
    p.timestamp = -1;
    t.partitions = vec![p];
    lo.topics = vec![t];
    lo.replica_id = BrokerId(-1);
    s.write_all(&frame(ApiKey::ListOffsets, 5, 2, &lo))
        .await
        .unwrap();
    let mut r = read_response(&mut s).await.unwrap();
    assert_eq!(r.get_i32(), 2);
    let resp = ListOffsetsResponse::decode(&mut r, 5).unwrap();
    assert_eq!(
        resp.topics[0].partitions[0].offset, 0,
        "nothing was written"
    );
}

/// A v2 batch of records with the given values.
fn batch_of(values: &[Vec<u8>]) -> Bytes {
    use kafka_protocol::records::*;
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // The encoder starts a new batch where sequences are not consecutive.
            sequence: i as i32 - 1,
            timestamp: 1000 + i as i64,
            key: None,
            value: Some(Bytes::from(v.clone())),
            headers: Default::default(),
        })
        .collect();
    let mut out = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut out,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .unwrap();
    let count = i32::from_be_bytes(out[57..61].try_into().unwrap());
    assert_eq!(count as usize, values.len(), "one batch");
    out.freeze()
}

/// Produce multi-batch record sets, then fetch them back, pipelined, at every Fetch version:
/// the stored batches come back byte for byte (apart from the offset and leader epoch the log
/// assigns), whether the response carries them as chunks of their own (4 KiB or more) or
/// copied, and every response is framed right.
#[tokio::test]
async fn produced_batches_fetch_back_byte_for_byte_at_every_fetch_version() {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    let srv = start().await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    let topic = TopicName(StrBytes::from_static_str("zero-copy"));

    let topic_id = create_topic(&mut s, topic.clone(), 3).await;

    // Partitions 0 and 1: two batches each, large enough to be spliced; partition 2: one
    // small batch, copied into the response.
    let sets: Vec<Vec<Bytes>> = (0..3u8)
        .map(|p| {
            if p == 2 {
                vec![batch_of(&[vec![2; 100]])]
            } else {
                vec![
                    batch_of(&[vec![p; 3000], vec![p + 10; 3000], vec![p + 20; 3000]]),
                    batch_of(&[vec![p + 30; 5000]]),
                ]
            }
        })
        .collect();
    let mut td = TopicProduceData::default();
    td.name = topic.clone();
    td.partition_data = sets
        .iter()
        .enumerate()
        .map(|(p, batches)| {
            let mut pd = PartitionProduceData::default();
            pd.index = p as i32;
            pd.records = Some(batches.concat().into());
            pd
        })
        .collect();
    let mut req = ProduceRequest::default();
    req.acks = -1;
    req.timeout_ms = 5000;
    req.topic_data = vec![td];
    s.write_all(&frame(ApiKey::Produce, 9, 2, &req))
        .await
        .unwrap();
    let mut r = read_response(&mut s).await.unwrap();
    ResponseHeader::decode(&mut r, ApiKey::Produce.response_header_version(9)).unwrap();
    let produced = ProduceResponse::decode(&mut r, 9).unwrap();
    for p in &produced.responses[0].partition_responses {
        assert_eq!(
            (p.error_code, p.base_offset),
            (0, 0),
            "partition {}",
            p.index
        );
    }

    let versions = 4..=16i16;
    let mut all = BytesMut::new();
    for v in versions.clone() {
        let mut ft = FetchTopic::default();
        if v >= 13 {
            ft.topic_id = topic_id;
        } else {
            ft.topic = topic.clone();
        }
        ft.partitions = (0..3)
            .map(|p| {
                let mut fp = FetchPartition::default();
                fp.partition = p;
                fp.partition_max_bytes = 1 << 20;
                fp
            })
            .collect();
        let mut fetch = FetchRequest::default();
        if v < 15 {
            fetch.replica_id = BrokerId(-1);
        }
        fetch.max_bytes = 10 << 20;
        fetch.min_bytes = 1;
        fetch.topics = vec![ft];
        all.extend_from_slice(&frame(ApiKey::Fetch, v, 100 + v as i32, &fetch));
    }
    s.write_all(&all).await.unwrap();
    for v in versions {
        let mut r = read_response(&mut s).await.unwrap();
        let header =
            ResponseHeader::decode(&mut r, ApiKey::Fetch.response_header_version(v)).unwrap();
        assert_eq!(header.correlation_id, 100 + v as i32);
        let resp = FetchResponse::decode(&mut r, v).unwrap();
        assert!(!r.has_remaining(), "Fetch v{v}: bytes after the response");
        let parts = &resp.responses[0].partitions;
        assert_eq!(parts.len(), 3);
        for (pd, batches) in parts.iter().zip(&sets) {
            assert_eq!(pd.error_code, 0, "Fetch v{v}");
            let got = pd.records.clone().unwrap_or_default();
            assert_eq!(got.len(), batches.iter().map(|b| b.len()).sum::<usize>());
            let mut pos = 0;
            let mut offset = 0i64;
            for b in batches {
                let stored = &got[pos..pos + b.len()];
                assert_eq!(i64::from_be_bytes(stored[..8].try_into().unwrap()), offset);
                // Length, then (after the leader epoch) magic, CRC and everything after.
                assert_eq!(stored[8..12], b[8..12], "Fetch v{v}: batch length");
                assert_eq!(stored[16..], b[16..], "Fetch v{v}: batch bytes");
                offset += i32::from_be_bytes(b[23..27].try_into().unwrap()) as i64 + 1;
                pos += b.len();
            }
        }
    }
}
