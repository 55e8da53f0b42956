//! The operator's Prometheus metrics: reconciles, their durations and errors, and the
//! controller's state (leadership, nodes, topics), at `/metrics` on `--metrics-listen`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[derive(Default)]
struct Kind {
    total: u64,
    errors: u64,
    micros: u64,
}

#[derive(Default)]
pub struct OperatorMetrics {
    kinds: Mutex<std::collections::BTreeMap<&'static str, Kind>>,
    pub is_leader: AtomicU64,
    pub lease_transitions: AtomicU64,
    /// Latest controller figures: (metadata version, alive nodes, known nodes, topics,
    /// partitions without a leader, under-replicated partitions).
    pub controller: Mutex<(u64, u64, u64, u64, u64, u64)>,
}

impl OperatorMetrics {
    pub fn observe_reconcile(&self, kind: &'static str, took: Duration, ok: bool) {
        let mut k = self.kinds.lock().expect("not poisoned");
        let e = k.entry(kind).or_default();
        e.total += 1;
        e.micros += took.as_micros() as u64;
        if !ok {
            e.errors += 1;
        }
    }

    pub fn render(&self) -> String {
        let mut o = String::new();
        let kinds = self.kinds.lock().expect("not poisoned");
        let _ = writeln!(o, "# TYPE strata_operator_reconciles_total counter");
        for (k, v) in kinds.iter() {
            let _ = writeln!(
                o,
                "strata_operator_reconciles_total{{kind=\"{k}\"}} {}",
                v.total
            );
        }
        let _ = writeln!(o, "# TYPE strata_operator_reconcile_errors_total counter");
        for (k, v) in kinds.iter() {
            let _ = writeln!(
                o,
                "strata_operator_reconcile_errors_total{{kind=\"{k}\"}} {}",
                v.errors
            );
        }
        let _ = writeln!(o, "# TYPE strata_operator_reconcile_seconds_total counter");
        for (k, v) in kinds.iter() {
            let _ = writeln!(
                o,
                "strata_operator_reconcile_seconds_total{{kind=\"{k}\"}} {}",
                v.micros as f64 / 1e6
            );
        }
        let _ = writeln!(o, "# TYPE strata_operator_leader gauge");
        let _ = writeln!(
            o,
            "strata_operator_leader {}",
            self.is_leader.load(Ordering::Relaxed)
        );
        let (version, alive, nodes, topics, leaderless, under) =
            *self.controller.lock().expect("not poisoned");
        let _ = writeln!(o, "# TYPE strata_controller_metadata_version gauge");
        let _ = writeln!(o, "strata_controller_metadata_version {version}");
        let _ = writeln!(o, "# TYPE strata_controller_nodes gauge");
        let _ = writeln!(o, "strata_controller_nodes{{state=\"alive\"}} {alive}");
        let _ = writeln!(
            o,
            "strata_controller_nodes{{state=\"dead\"}} {}",
            nodes.saturating_sub(alive)
        );
        let _ = writeln!(o, "# TYPE strata_controller_topics gauge");
        let _ = writeln!(o, "strata_controller_topics {topics}");
        let _ = writeln!(o, "# TYPE strata_controller_offline_partitions gauge");
        let _ = writeln!(o, "strata_controller_offline_partitions {leaderless}");
        let _ = writeln!(
            o,
            "# TYPE strata_controller_under_replicated_partitions gauge"
        );
        let _ = writeln!(o, "strata_controller_under_replicated_partitions {under}");
        o
    }
}

/// Serve `GET /metrics` until the process ends.
pub async fn serve(m: Arc<OperatorMetrics>, listener: TcpListener) {
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            continue;
        };
        let m = m.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut n = 0;
            let _ = tokio::time::timeout(Duration::from_secs(5), async {
                while n < buf.len() {
                    match s.read(&mut buf[n..]).await {
                        Ok(0) | Err(_) => break,
                        Ok(r) => n += r,
                    }
                    if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
            })
            .await;
            let head = String::from_utf8_lossy(&buf[..n]);
            let ok = head.starts_with("GET /metrics");
            let body = if ok {
                m.render()
            } else {
                "try /metrics\n".into()
            };
            let status = if ok { "200 OK" } else { "404 Not Found" };
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(resp.as_bytes()).await;
        });
    }
}
