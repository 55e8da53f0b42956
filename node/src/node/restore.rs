//! Whole-cluster restore (`--restore-from`): recreate the topics a bucket prefix describes,
//! under their own ids and with leader epochs above their bucket copies, through the
//! controller like any CreateTopics. Each created partition then opens from its manifest
//! (`Tiering::open_partition`): readable from the bucket's first offset, written after its
//! last uploaded one. Runs once per prefix (a marker in the bucket records it), retries
//! while the bucket or the controller is unreachable, and is idempotent, so every node of a
//! cluster may run it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Node;
use crate::error::{Error, Result};
use crate::tiering::catalog::RestoredTopic;
use crate::tiering::Tiering;

/// How long a cluster waits for enough nodes to place a topic with its old replication
/// factor before it places it on the nodes it has.
const WAIT_FOR_NODES: Duration = Duration::from_secs(120);

/// What one attempt achieved.
#[derive(Debug, Default)]
struct Outcome {
    restored: Vec<String>,
    skipped: Vec<String>,
}

impl Node {
    /// Run the restore from `from` to completion (or until shutdown).
    pub(super) async fn restore(self: Arc<Self>, tiering: Arc<Tiering>, from: String) {
        self.first_image().await;
        let started = Instant::now();
        let mut backoff = Duration::from_millis(500);
        loop {
            if self.is_shutting_down() {
                return;
            }
            match self.restore_once(&tiering, &from, started).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(from = %from, error = %e, "restore not finished; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = self.shutdown.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    async fn restore_once(&self, tiering: &Tiering, from: &str, started: Instant) -> Result<()> {
        if tiering.restore_done(from).await? {
            tracing::info!(from = %from, "restore from this prefix already done");
            return Ok(());
        }
        let bytes_down = tiering.stats().bucket_bytes_down;
        let report = tiering.read_catalog_for_restore(from).await?;
        tracing::info!(
            from = %from,
            topics = report.topics.len(),
            objects_copied = report.objects_copied,
            bytes_copied = report.bytes_copied,
            "restore: catalog read"
        );
        if report.producer_id_floor > 0 {
            self.broker
                .producer_ids_from(report.producer_id_floor)
                .await?;
        }
        let mut out = Outcome::default();
        for t in &report.topics {
            self.restore_topic(t, started, &mut out).await?;
        }
        tiering.mark_restored(from, &out.restored).await?;
        tracing::info!(
            from = %from,
            restored = out.restored.len(),
            skipped = out.skipped.len(),
            objects_copied = report.objects_copied,
            bytes_copied = report.bytes_copied,
            bytes_read = report.bytes_read + tiering.stats().bucket_bytes_down.saturating_sub(bytes_down),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "restore finished"
        );
        Ok(())
    }

    /// Create one topic; a refusal that waiting cannot mend leaves it out (logged).
    async fn restore_topic(
        &self,
        t: &RestoredTopic,
        started: Instant,
        out: &mut Outcome,
    ) -> Result<()> {
        let d = &t.descriptor;
        if let Some(existing) = self.broker.topic(&d.name) {
            if existing.meta.id == d.topic_id {
                out.restored.push(d.name.clone());
            } else {
                tracing::warn!(topic = %d.name, bucket_id = %d.topic_id, id = %existing.meta.id, "restore: a topic of this name already exists with another id; left as it is");
                out.skipped.push(d.name.clone());
            }
            return Ok(());
        }
        let alive = self.broker.image().cluster().alive_nodes().count().max(1) as i16;
        let rf = if d.replication_factor <= alive {
            d.replication_factor
        } else if self.cluster.is_embedded() || started.elapsed() >= WAIT_FOR_NODES {
            tracing::warn!(topic = %d.name, was = d.replication_factor, now = alive, "restore: fewer nodes than the topic's replication factor; placed on the nodes there are");
            alive
        } else {
            return Err(Error::ControllerUnavailable(format!(
                "waiting for {} nodes to restore topic {} (alive: {alive})",
                d.replication_factor, d.name
            )));
        };
        match self
            .cluster
            .create_restored_topic(
                &d.name,
                rf,
                d.configs.clone(),
                d.topic_id,
                t.leader_epochs.clone(),
            )
            .await
        {
            Ok(meta) => {
                tracing::info!(topic = %d.name, topic_id = %meta.id, partitions = meta.partitions, "restore: topic recreated");
                out.restored.push(d.name.clone());
                Ok(())
            }
            Err(Error::TopicAlreadyExists(_)) => {
                // Another node of the cluster got there first; the next attempt checks ids.
                Err(Error::ControllerUnavailable(format!(
                    "topic {} appeared meanwhile",
                    d.name
                )))
            }
            Err(e @ (Error::ControllerUnavailable(_) | Error::RemoteUnavailable(_))) => Err(e),
            Err(e) => {
                tracing::error!(topic = %d.name, error = %e, "restore: the controller refused the topic; left out");
                out.skipped.push(d.name.clone());
                Ok(())
            }
        }
    }
}
