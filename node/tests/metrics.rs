//! The /metrics endpoint: a real server and a produce over the Kafka protocol, then a scrape.

use std::sync::Arc;
use std::time::Duration;

use bytes::BufMut;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, RequestHeader};
use kafka_protocol::protocol::{Encodable, StrBytes};
use strata_node::config::NodeConfig;
use strata_node::node::Node;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[global_allocator]
static GLOBAL: strata_node::alloc::LazyLargeAlloc = strata_node::alloc::LazyLargeAlloc;

async fn scrape(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrape_shows_requests_bytes_and_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = NodeConfig::for_tests(dir.path().to_path_buf());
    let broker: Arc<Node> = Node::open_and_start(cfg).await.unwrap();
    broker
        .broker
        .create_topic("m", 2, 1, Default::default(), false)
        .await
        .unwrap();
    let kafka = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let kafka_addr = kafka.local_addr().unwrap();
    let (_tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(strata_node::server::serve(
        broker.clone(),
        vec![strata_node::server::Bound::first(&broker, kafka)],
        rx,
    ));
    let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_addr = metrics.local_addr().unwrap();
    tokio::spawn(strata_node::node::metrics::serve(broker.clone(), metrics));

    // Three ApiVersions requests over the Kafka listener.
    let mut s = TcpStream::connect(kafka_addr).await.unwrap();
    for cid in 0..3 {
        let mut h = RequestHeader::default();
        h.request_api_key = ApiKey::ApiVersions as i16;
        h.request_api_version = 3;
        h.correlation_id = cid;
        h.client_id = Some(StrBytes::from_static_str("it"));
        let mut body = bytes::BytesMut::new();
        h.encode(&mut body, 2).unwrap();
        let mut req = ApiVersionsRequest::default();
        req.client_software_name = StrBytes::from_static_str("it");
        req.client_software_version = StrBytes::from_static_str("1");
        req.encode(&mut body, 3).unwrap();
        let mut f = bytes::BytesMut::new();
        f.put_i32(body.len() as i32);
        f.extend_from_slice(&body);
        s.write_all(&f).await.unwrap();
        let n = s.read_i32().await.unwrap();
        let mut resp = vec![0u8; n as usize];
        s.read_exact(&mut resp).await.unwrap();
    }

    let out = scrape(metrics_addr, "/metrics").await;
    assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
    assert!(
        out.contains("strata_requests_total{api=\"ApiVersions\"} 3"),
        "{out}"
    );
    assert!(out.contains("strata_request_duration_seconds_count{api=\"ApiVersions\"} 3"));
    assert!(
        out.contains("strata_request_duration_seconds_bucket{api=\"ApiVersions\",le=\"+Inf\"} 3")
    );
    let bytes_in: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("strata_network_bytes_total{direction=\"in\"} "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(bytes_in > 3 * 10, "{bytes_in}");
    assert!(out.contains("strata_partition_log_end_offset{topic=\"m\",partition=\"1\"} 0"));
    assert!(out.contains("strata_partition_leader{topic=\"m\",partition=\"0\"} 1"));
    assert!(out.contains("strata_connections 1"), "{out}");

    let missing = scrape(metrics_addr, "/nope").await;
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
}
