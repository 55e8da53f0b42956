//! Prometheus metrics: request counts and latencies per Kafka API, bytes in and out,
//! partition offsets and replication state, consumer-group lag and tiering lag, served in the
//! text exposition format on `--metrics-listen`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::Node;

/// Highest Kafka API key counted (keys above share nothing: they are never dispatched).
const MAX_KEY: usize = 80;
/// Latency bucket upper bounds, in seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

struct ApiStats {
    count: AtomicU64,
    micros: AtomicU64,
    buckets: [AtomicU64; BUCKETS.len()],
}

impl Default for ApiStats {
    fn default() -> Self {
        ApiStats {
            count: AtomicU64::new(0),
            micros: AtomicU64::new(0),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// Node-wide counters, updated on the request path with relaxed atomics.
pub struct Metrics {
    apis: Vec<ApiStats>,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub connections: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            apis: (0..=MAX_KEY).map(|_| ApiStats::default()).collect(),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            connections: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    /// One request of API `key` answered after `took`.
    pub fn observe(&self, key: i16, took: Duration) {
        let Some(s) = usize::try_from(key).ok().and_then(|k| self.apis.get(k)) else {
            return;
        };
        s.count.fetch_add(1, Ordering::Relaxed);
        s.micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        let secs = took.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            s.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn api_name(key: usize) -> String {
    kafka_protocol::messages::ApiKey::try_from(key as i16)
        .map(|k| format!("{k:?}"))
        .unwrap_or_else(|_| key.to_string())
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The whole exposition, from the counters and the broker's current state.
pub fn render(b: &Node) -> String {
    let m = &b.metrics;
    let mut o = String::with_capacity(16 * 1024);
    let _ = writeln!(
        o,
        "# HELP strata_requests_total Kafka requests answered, by API."
    );
    let _ = writeln!(o, "# TYPE strata_requests_total counter");
    for (k, s) in m.apis.iter().enumerate() {
        let n = s.count.load(Ordering::Relaxed);
        if n > 0 {
            let _ = writeln!(o, "strata_requests_total{{api=\"{}\"}} {n}", api_name(k));
        }
    }
    let (open, opened, closed) = crate::log::files::stats();
    let _ = writeln!(
        o,
        "# HELP strata_segment_files_open Segment files open now (bounded by --max-open-files)."
    );
    let _ = writeln!(o, "# TYPE strata_segment_files_open gauge");
    let _ = writeln!(o, "strata_segment_files_open {open}");
    let _ = writeln!(
        o,
        "# HELP strata_segment_files_max Most segment files kept open at once."
    );
    let _ = writeln!(o, "# TYPE strata_segment_files_max gauge");
    let _ = writeln!(
        o,
        "strata_segment_files_max {}",
        crate::log::files::budget()
    );
    let _ = writeln!(o, "# HELP strata_segment_file_opens_total Segment files opened (created, or reopened after the budget closed them).");
    let _ = writeln!(o, "# TYPE strata_segment_file_opens_total counter");
    let _ = writeln!(o, "strata_segment_file_opens_total {opened}");
    let _ = writeln!(o, "# HELP strata_segment_file_evictions_total Segment files closed to stay within the budget.");
    let _ = writeln!(o, "# TYPE strata_segment_file_evictions_total counter");
    let _ = writeln!(o, "strata_segment_file_evictions_total {closed}");
    let _ = writeln!(o, "# HELP strata_request_duration_seconds Time from a request's arrival to its answer, by API.");
    let _ = writeln!(o, "# TYPE strata_request_duration_seconds histogram");
    for (k, s) in m.apis.iter().enumerate() {
        let n = s.count.load(Ordering::Relaxed);
        if n == 0 {
            continue;
        }
        let api = api_name(k);
        let mut cum = 0;
        for (i, b) in BUCKETS.iter().enumerate() {
            cum += s.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(
                o,
                "strata_request_duration_seconds_bucket{{api=\"{api}\",le=\"{b}\"}} {cum}"
            );
        }
        let _ = writeln!(
            o,
            "strata_request_duration_seconds_bucket{{api=\"{api}\",le=\"+Inf\"}} {n}"
        );
        let sum = s.micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(
            o,
            "strata_request_duration_seconds_sum{{api=\"{api}\"}} {sum}"
        );
        let _ = writeln!(
            o,
            "strata_request_duration_seconds_count{{api=\"{api}\"}} {n}"
        );
    }
    let _ = writeln!(
        o,
        "# HELP strata_network_bytes_total Kafka protocol bytes received (in) and sent (out)."
    );
    let _ = writeln!(o, "# TYPE strata_network_bytes_total counter");
    let _ = writeln!(
        o,
        "strata_network_bytes_total{{direction=\"in\"}} {}",
        m.bytes_in.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        o,
        "strata_network_bytes_total{{direction=\"out\"}} {}",
        m.bytes_out.load(Ordering::Relaxed)
    );
    let (fetched, rebuilds) = b.replicator.counters();
    let _ = writeln!(
        o,
        "# HELP strata_replica_fetched_bytes_total Record bytes this node copied from leaders as a follower."
    );
    let _ = writeln!(o, "# TYPE strata_replica_fetched_bytes_total counter");
    let _ = writeln!(o, "strata_replica_fetched_bytes_total {fetched}");
    let _ = writeln!(
        o,
        "# HELP strata_replica_rebuilds_from_bucket_total Times a follower too far behind its leader started again at the end of the bucket's copy instead of copying it."
    );
    let _ = writeln!(
        o,
        "# TYPE strata_replica_rebuilds_from_bucket_total counter"
    );
    let _ = writeln!(o, "strata_replica_rebuilds_from_bucket_total {rebuilds}");
    let _ = writeln!(o, "# HELP strata_connections Open client connections.");
    let _ = writeln!(o, "# TYPE strata_connections gauge");
    let _ = writeln!(
        o,
        "strata_connections {}",
        m.connections.load(Ordering::Relaxed)
    );

    render_security(b, &mut o);

    // Partitions hosted here.
    let mut parts = b.broker.all_partitions();
    parts.sort_by(|a, c| (&a.topic, a.index).cmp(&(&c.topic, c.index)));
    let gauges = [
        (
            "strata_partition_log_end_offset",
            "Next offset to be written.",
        ),
        (
            "strata_partition_high_watermark",
            "Offset below which records are committed (readable by consumers).",
        ),
        (
            "strata_partition_log_start_offset",
            "First offset kept on local disk.",
        ),
        (
            "strata_partition_local_bytes",
            "Bytes of the partition's local segments.",
        ),
        (
            "strata_partition_leader",
            "1 when this node leads the partition.",
        ),
        (
            "strata_partition_isr_size",
            "In-sync replicas (as known here; exact on the leader).",
        ),
        (
            "strata_partition_under_replicated",
            "1 when this node leads the partition and its ISR is smaller than its replica set.",
        ),
    ];
    let rows: Vec<(String, [i64; 7])> = parts
        .iter()
        .map(|p| {
            let (leo, start, bytes) = {
                let log = p.log();
                (
                    log.log_end_offset(),
                    log.log_start_offset(),
                    log.size_bytes() as i64,
                )
            };
            let r = p.replica();
            let labels = format!("topic=\"{}\",partition=\"{}\"", esc(&p.topic), p.index);
            let under = r.is_leader() && r.isr.len() < r.replicas.len();
            (
                labels,
                [
                    leo,
                    p.high_watermark(),
                    start,
                    bytes,
                    r.is_leader() as i64,
                    r.isr.len() as i64,
                    under as i64,
                ],
            )
        })
        .collect();
    for (i, (name, help)) in gauges.iter().enumerate() {
        let _ = writeln!(o, "# HELP {name} {help}");
        let _ = writeln!(o, "# TYPE {name} gauge");
        for (labels, v) in &rows {
            let _ = writeln!(o, "{name}{{{labels}}} {}", v[i]);
        }
    }

    // Consumer lag of the groups this node coordinates: high watermark minus committed.
    let _ = writeln!(o, "# HELP strata_consumer_group_lag Records between a group's committed offset and the partition's high watermark (groups coordinated by this node, partitions it leads).");
    let _ = writeln!(o, "# TYPE strata_consumer_group_lag gauge");
    for (group, topic, partition, committed) in b.groups.committed_offsets() {
        if let Some(p) = b.broker.partition(&topic, partition) {
            if p.is_leader() {
                let lag = (p.high_watermark() - committed).max(0);
                let _ = writeln!(
                    o,
                    "strata_consumer_group_lag{{group=\"{}\",topic=\"{}\",partition=\"{partition}\"}} {lag}",
                    esc(&group),
                    esc(&topic)
                );
            }
        }
    }

    if let Some(t) = &b.tiering {
        let s = t.stats();
        let _ = writeln!(
            o,
            "# HELP strata_tiering_lag_bytes Bytes of closed local segments not yet uploaded."
        );
        let _ = writeln!(o, "# TYPE strata_tiering_lag_bytes gauge");
        for p in &s.partitions {
            let _ = writeln!(
                o,
                "strata_tiering_lag_bytes{{topic=\"{}\",partition=\"{}\"}} {}",
                esc(&p.topic),
                p.partition,
                p.lag_bytes
            );
        }
        let _ = writeln!(
            o,
            "# HELP strata_tiering_remote_bytes Bytes of log objects in the bucket."
        );
        let _ = writeln!(o, "# TYPE strata_tiering_remote_bytes gauge");
        for p in &s.partitions {
            let _ = writeln!(
                o,
                "strata_tiering_remote_bytes{{topic=\"{}\",partition=\"{}\"}} {}",
                esc(&p.topic),
                p.partition,
                p.remote_bytes
            );
        }
        let _ = writeln!(o, "# TYPE strata_tiering_uploaded_bytes_total counter");
        let _ = writeln!(
            o,
            "strata_tiering_uploaded_bytes_total {}",
            s.bytes_uploaded
        );
        let _ = writeln!(o, "# TYPE strata_tiering_upload_failures_total counter");
        let _ = writeln!(
            o,
            "strata_tiering_upload_failures_total {}",
            s.upload_failures
        );
        let _ = writeln!(
            o,
            "# HELP strata_tiering_bucket_requests_total Requests to the bucket, by operation."
        );
        let _ = writeln!(o, "# TYPE strata_tiering_bucket_requests_total counter");
        for (op, n) in [
            ("put", s.bucket_puts),
            ("get", s.bucket_gets),
            ("list", s.bucket_lists),
            ("delete", s.bucket_deletes),
            ("copy", s.bucket_copies),
        ] {
            let _ = writeln!(o, "strata_tiering_bucket_requests_total{{op=\"{op}\"}} {n}");
        }
        let _ = writeln!(
            o,
            "# HELP strata_tiering_bucket_errors_total Bucket requests that failed."
        );
        let _ = writeln!(o, "# TYPE strata_tiering_bucket_errors_total counter");
        let _ = writeln!(o, "strata_tiering_bucket_errors_total {}", s.bucket_errors);
        let _ = writeln!(
            o,
            "# HELP strata_tiering_bucket_bytes_total Bytes sent to (up) and read from (down) the bucket."
        );
        let _ = writeln!(o, "# TYPE strata_tiering_bucket_bytes_total counter");
        for (dir, n) in [("up", s.bucket_bytes_up), ("down", s.bucket_bytes_down)] {
            let _ = writeln!(
                o,
                "strata_tiering_bucket_bytes_total{{direction=\"{dir}\"}} {n}"
            );
        }
        let _ = writeln!(
            o,
            "# HELP strata_tiering_remote_read_bytes_total Record bytes served to fetches from the bucket."
        );
        let _ = writeln!(o, "# TYPE strata_tiering_remote_read_bytes_total counter");
        let _ = writeln!(
            o,
            "strata_tiering_remote_read_bytes_total {}",
            s.remote_read_bytes
        );
        let _ = writeln!(
            o,
            "# HELP strata_tiering_remote_compactions_total Segments of the bucket rewritten by compaction (cleanup.policy=compact)."
        );
        let _ = writeln!(o, "# TYPE strata_tiering_remote_compactions_total counter");
        let _ = writeln!(
            o,
            "strata_tiering_remote_compactions_total {}",
            s.remote_compactions
        );
        let _ = writeln!(
            o,
            "# HELP strata_tiering_cache_requests_total Reads of the bucket's block cache, by result."
        );
        let _ = writeln!(o, "# TYPE strata_tiering_cache_requests_total counter");
        for (result, n) in [("hit", s.cache_hits), ("miss", s.cache_misses)] {
            let _ = writeln!(
                o,
                "strata_tiering_cache_requests_total{{result=\"{result}\"}} {n}"
            );
        }
        let _ = writeln!(
            o,
            "# HELP strata_tiering_disk_cache_requests_total Reads of the disk cache beneath the block cache, by result."
        );
        let _ = writeln!(o, "# TYPE strata_tiering_disk_cache_requests_total counter");
        for (result, n) in [("hit", s.disk_cache_hits), ("miss", s.disk_cache_misses)] {
            let _ = writeln!(
                o,
                "strata_tiering_disk_cache_requests_total{{result=\"{result}\"}} {n}"
            );
        }
        let _ = writeln!(
            o,
            "# HELP strata_tiering_disk_cache_bytes Bytes of bucket data held in the disk cache."
        );
        let _ = writeln!(o, "# TYPE strata_tiering_disk_cache_bytes gauge");
        let _ = writeln!(o, "strata_tiering_disk_cache_bytes {}", s.disk_cache_bytes);
    }
    o
}

/// Whether the node should take traffic (the pod's readiness): once it has the metadata
/// and its partitions are in sync, until it stops (see
/// [`crate::replication::cluster::ClusterLink::readiness`]).
/// Authentication, authorization, connection limits, TLS and quotas.
fn render_security(b: &Node, o: &mut String) {
    let sm = &b.security.metrics;
    let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let _ = writeln!(
        o,
        "# HELP strata_authentications_total SASL authentications, by outcome."
    );
    let _ = writeln!(o, "# TYPE strata_authentications_total counter");
    let _ = writeln!(
        o,
        "strata_authentications_total{{result=\"ok\"}} {}",
        get(&sm.auth_ok)
    );
    let _ = writeln!(
        o,
        "strata_authentications_total{{result=\"failed\"}} {}",
        get(&sm.auth_failed)
    );
    let _ = writeln!(
        o,
        "# HELP strata_authorization_denied_total Actions the ACL authorizer denied."
    );
    let _ = writeln!(o, "# TYPE strata_authorization_denied_total counter");
    let _ = writeln!(
        o,
        "strata_authorization_denied_total {}",
        get(&sm.authorization_denied)
    );
    let _ = writeln!(o, "# HELP strata_connections_closed_total Connections refused or closed by the node's limits, by reason.");
    let _ = writeln!(o, "# TYPE strata_connections_closed_total counter");
    for (reason, c) in [
        ("per_ip_limit", &sm.refused_per_ip),
        ("setup_timeout", &sm.setup_timeouts),
        ("idle", &sm.idle_closed),
    ] {
        let _ = writeln!(
            o,
            "strata_connections_closed_total{{reason=\"{reason}\"}} {}",
            get(c)
        );
    }
    let _ = writeln!(
        o,
        "# HELP strata_tls_reloads_total Times changed TLS files were loaded."
    );
    let _ = writeln!(o, "# TYPE strata_tls_reloads_total counter");
    let _ = writeln!(o, "strata_tls_reloads_total {}", get(&sm.tls_reloads));
    if let Some(t) = b.security.tls_not_after() {
        let _ = writeln!(o, "# HELP strata_tls_certificate_expiry_timestamp_seconds When the listeners' certificate expires.");
        let _ = writeln!(
            o,
            "# TYPE strata_tls_certificate_expiry_timestamp_seconds gauge"
        );
        let _ = writeln!(o, "strata_tls_certificate_expiry_timestamp_seconds {t}");
    }
    let _ = writeln!(
        o,
        "# HELP strata_quota_throttles_total Responses throttled by a client quota, by quota."
    );
    let _ = writeln!(o, "# TYPE strata_quota_throttles_total counter");
    for (i, k) in strata_security::quota::QuotaKey::ALL.iter().enumerate() {
        let _ = writeln!(
            o,
            "strata_quota_throttles_total{{quota=\"{}\"}} {}",
            k.name(),
            get(&sm.throttles[i])
        );
    }
    let _ = writeln!(
        o,
        "# HELP strata_quota_throttle_seconds_total Throttle time given to clients, by quota."
    );
    let _ = writeln!(o, "# TYPE strata_quota_throttle_seconds_total counter");
    for (i, k) in strata_security::quota::QuotaKey::ALL.iter().enumerate() {
        let _ = writeln!(
            o,
            "strata_quota_throttle_seconds_total{{quota=\"{}\"}} {:.3}",
            k.name(),
            get(&sm.throttle_ms[i]) as f64 / 1000.0
        );
    }
}

fn readiness(b: &Node) -> Result<(), String> {
    if b.is_shutting_down() {
        return Err("shutting down".into());
    }
    b.cluster
        .readiness(Duration::from_millis(b.config.ready_catch_up_timeout_ms))
        .map_err(|e| e.to_string())
}

/// Serve `GET /metrics` and `GET /ready` (anything else: 404) until the process ends. Requests are read with
/// a bound and a timeout; this is a scrape endpoint, not a web server.
pub async fn serve(b: Arc<Node>, listener: TcpListener) {
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            continue;
        };
        let b = b.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 8192];
            let mut n = 0;
            let read = tokio::time::timeout(Duration::from_secs(5), async {
                while n < buf.len() {
                    let r = s.read(&mut buf[n..]).await?;
                    if r == 0 {
                        break;
                    }
                    n += r;
                    if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                Ok::<_, std::io::Error>(())
            })
            .await;
            if !matches!(read, Ok(Ok(()))) {
                return;
            }
            let head = String::from_utf8_lossy(&buf[..n]);
            let path = head.split_whitespace().nth(1).unwrap_or("");
            let (status, body) = if head.starts_with("GET ") && path == "/ready" {
                match readiness(&b) {
                    Ok(()) => ("200 OK", "ready\n".to_string()),
                    Err(why) => ("503 Service Unavailable", format!("not ready: {why}\n")),
                }
            } else if head.starts_with("GET ")
                && (path == "/metrics" || path.starts_with("/metrics?"))
            {
                let b2 = b.clone();
                match tokio::task::spawn_blocking(move || render(&b2)).await {
                    Ok(body) => ("200 OK", body),
                    Err(_) => ("500 Internal Server Error", String::new()),
                }
            } else {
                ("404 Not Found", "try /metrics or /ready\n".to_string())
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(resp.as_bytes()).await;
            let _ = s.shutdown().await;
        });
    }
}
