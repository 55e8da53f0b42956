//! The uploader: one background task per node that, for every partition this node leads
//! with `remote.storage.enable=true`, uploads closed segments in order, advances the
//! manifest with conditional puts, applies total retention to the bucket and removes
//! objects left by failed attempts. Errors back off per partition; produce and local
//! fetches never wait for it.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;

use super::manifest::{object_name, Manifest, RemoteSegment};
use super::plan::{self, Upload};
use super::store::{Condition, Version};
use super::{PartitionTierStats, Tiering, View};
use crate::error::{Error, Result};
use crate::log::batch::{self, HEADER_LEN};
use crate::log::producer_state::{ProducerStateTable, Snapshot, SNAPSHOT_VERSION};
use crate::log::retention::SegmentSummary;
use crate::log::segment::Segment;
use crate::partition::{Partition, PartitionTable};

const MIN_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Longest a follower waits between manifest reads while its retention waits on them.
const FOLLOWER_MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Folder, inside a partition's directory, where a new leader builds the segment it uploads
/// when the manifest ends inside one of its local segments.
pub(super) const TAIL_DIR: &str = "upload-tail";
/// Partitions synced at once.
const CONCURRENCY: usize = 4;

/// The uploader's memory of one partition.
pub(super) struct PartState {
    /// The manifest as last read or written, with the version to condition on.
    manifest: Option<(Manifest, Option<Version>)>,
    /// Producer state at an offset (the manifest end), saving a GET per upload.
    snapshot: Option<(i64, ProducerStateTable)>,
    backoff: Duration,
    next_try: Instant,
    /// The manifest's leader epoch when the folder was last checked for orphans (None: not
    /// yet in this leadership). Objects of older epochs become orphans only once a newer
    /// epoch has written the manifest (before that their writer may still commit them), so
    /// the check runs again when the manifest's epoch moves up, typically after this
    /// leader's first write.
    orphans_checked: Option<i32>,
    error: Option<String>,
    /// The leader epoch the uploader last worked in: a new leadership re-reads the manifest,
    /// which other leaders may have moved since.
    led_epoch: Option<i32>,
    /// Follower: wait between manifest reads, and when the next may happen.
    follower_backoff: Duration,
    follower_next_read: Instant,
    /// When the bucket's copy was last compacted.
    pub(super) last_remote_compaction: Option<Instant>,
}

impl PartState {
    /// The manifest as last read or written.
    pub(super) fn manifest(&self) -> Option<&Manifest> {
        self.manifest.as_ref().map(|(m, _)| m)
    }
}

impl Default for PartState {
    fn default() -> Self {
        PartState {
            manifest: None,
            snapshot: None,
            backoff: Duration::ZERO,
            next_try: Instant::now(),
            orphans_checked: None,
            error: None,
            led_epoch: None,
            follower_backoff: Duration::ZERO,
            follower_next_read: Instant::now(),
            last_remote_compaction: None,
        }
    }
}

/// A closed local segment, as the uploader needs it (taken under the partition lock).
struct LocalClosed {
    summary: SegmentSummary,
    file: Arc<File>,
    dir: PathBuf,
}

/// Run the uploader over the hosted partitions until tiering is stopped.
pub async fn run(tiering: Arc<Tiering>, table: Arc<PartitionTable>) {
    let mut tick = tokio::time::interval(tiering.options.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_report = Instant::now();
    let mut last_seen = None;
    loop {
        tick.tick().await;
        if tiering.is_stopping() {
            break;
        }
        let parts = table.all();
        futures::stream::iter(parts)
            .for_each_concurrent(CONCURRENCY, |p| {
                let t = tiering.clone();
                async move { t.sync_partition(&p).await }
            })
            .await;
        tiering.publish_catalog().await;
        if last_report.elapsed() >= Duration::from_secs(10) {
            let s = tiering.stats();
            // Only when something moved, so an idle node stays quiet.
            let seen = (
                s.bucket_puts,
                s.bucket_gets,
                s.bucket_deletes,
                s.upload_failures,
            );
            if last_seen != Some(seen) {
                last_seen = Some(seen);
                last_report = Instant::now();
                tracing::info!(
                    segments_uploaded = s.segments_uploaded,
                    bytes_uploaded = s.bytes_uploaded,
                    upload_failures = s.upload_failures,
                    remote_reads = s.remote_reads,
                    remote_read_bytes = s.remote_read_bytes,
                    cache_hits = s.cache_hits,
                    cache_misses = s.cache_misses,
                    bucket_puts = s.bucket_puts,
                    bucket_gets = s.bucket_gets,
                    bucket_lists = s.bucket_lists,
                    bucket_deletes = s.bucket_deletes,
                    bucket_bytes_up = s.bucket_bytes_up,
                    bucket_bytes_down = s.bucket_bytes_down,
                    lag_bytes = s.partitions.iter().map(|p| p.lag_bytes).sum::<u64>(),
                    "tiering stats"
                );
            }
        }
    }
}

impl Tiering {
    fn state(&self, key: super::PartKey) -> Arc<tokio::sync::Mutex<PartState>> {
        self.states.lock().entry(key).or_default().clone()
    }

    /// One pass over one partition: never fails, backs off on errors.
    pub(crate) async fn sync_partition(&self, part: &Arc<Partition>) {
        let (topic_id, tiered) = {
            let log = part.log();
            (log.topic_id(), log.config().remote_storage)
        };
        if !tiered {
            return;
        }
        let key = (topic_id, part.index);
        let state = self.state(key);
        let mut st = state.lock().await;
        // Only the leader uploads; a new leader continues from the manifest. Followers
        // trim their copy to what the manifest holds.
        if !part.is_leader() {
            st.led_epoch = None;
            self.trim_follower(&mut st, part, topic_id).await;
            return;
        }
        let epoch = part.leader_epoch();
        if st.led_epoch != Some(epoch) {
            st.manifest = None;
            st.snapshot = None;
            st.orphans_checked = None;
            st.backoff = Duration::ZERO;
            st.next_try = Instant::now();
            st.led_epoch = Some(epoch);
        }
        if Instant::now() < st.next_try {
            return;
        }
        let result = self.sync_inner(&mut st, part, topic_id).await;
        // Whatever reached the manifest may leave the local disk now, not at the next
        // retention check.
        apply_local_retention(part).await;
        match result {
            Ok(()) => {
                st.backoff = Duration::ZERO;
                st.error = None;
            }
            Err(e) => {
                self.counters
                    .upload_failures
                    .fetch_add(1, Ordering::Relaxed);
                st.backoff = (st.backoff * 2).clamp(MIN_BACKOFF, MAX_BACKOFF);
                st.next_try = Instant::now() + st.backoff;
                if matches!(e, Error::ManifestConflict { .. }) {
                    // Someone (or our own lost response) changed the manifest: re-read it.
                    st.manifest = None;
                    st.snapshot = None;
                }
                if matches!(
                    e,
                    Error::CorruptManifest { .. } | Error::UnknownManifestVersion { .. }
                ) {
                    tracing::error!(topic = %part.topic, partition = part.index, error = %e, "tiering stopped for this partition");
                    self.set_view(key, View::Failed(e.to_string()));
                } else {
                    tracing::warn!(topic = %part.topic, partition = part.index, error = %e, retry_in_ms = st.backoff.as_millis() as u64, "tiering failed; will retry");
                }
                st.error = Some(e.to_string());
            }
        }
        self.update_stats(&st, part, topic_id);
    }

    /// A follower's share of tiering: it never uploads, but trims its local copy to local
    /// retention once the bucket's manifest holds the segments. It reads the manifest from
    /// the bucket itself, and only while retention wants segments gone that the manifest it
    /// knows does not cover; the manifest it read also serves reads below its local start
    /// if it becomes leader.
    async fn trim_follower(&self, st: &mut PartState, part: &Arc<Partition>, topic_id: uuid::Uuid) {
        let (wanted, known) = {
            let log = part.log();
            (
                log.retention_wants_upto(crate::fsutil::now_ms()),
                log.remote_upto(),
            )
        };
        if plan::follower_needs_manifest(wanted, known) && Instant::now() >= st.follower_next_read {
            let advanced = match self.load_manifest(topic_id, part.index).await {
                Ok((m, _)) => {
                    let end = m.end_offset;
                    // Readers first, as on the leader: once segments may go, reads below the
                    // local start must already find them in the manifest.
                    self.set_view((topic_id, part.index), View::Ready(Arc::new(m)));
                    part.log().set_remote_upto(Some(end));
                    known.is_none_or(|k| end > k)
                }
                Err(e) => {
                    tracing::debug!(topic = %part.topic, partition = part.index, error = %e, "follower could not read the manifest; will retry");
                    false
                }
            };
            st.follower_backoff = plan::follower_backoff(
                st.follower_backoff,
                advanced,
                self.options.interval,
                FOLLOWER_MAX_BACKOFF,
            );
            st.follower_next_read = Instant::now() + st.follower_backoff;
        }
        apply_local_retention(part).await;
    }

    fn update_stats(&self, st: &PartState, part: &Arc<Partition>, topic_id: uuid::Uuid) {
        let log = part.log();
        let sums = log.segment_summaries();
        let (remote_bytes, remote_start, remote_end) = match &st.manifest {
            Some((m, _)) => (m.bytes(), m.log_start_offset, m.end_offset),
            None => (0, -1, -1),
        };
        let closed = &sums[..sums.len().saturating_sub(1)];
        let (lag_bytes, lag_segments) = plan::lag(closed, remote_end.max(0));
        self.part_stats.write().insert(
            (topic_id, part.index),
            PartitionTierStats {
                topic: part.topic.clone(),
                partition: part.index,
                local_bytes: log.size_bytes(),
                remote_bytes,
                lag_segments,
                lag_bytes,
                local_start: log.log_start_offset(),
                remote_start,
                remote_end,
                error: st.error.clone(),
            },
        );
    }

    /// Delete the objects of a segment the manifest no longer names.
    pub(super) async fn delete_segment_objects(&self, pp: &str, seg: &RemoteSegment) -> Result<()> {
        for ext in super::manifest::SEGMENT_OBJECTS {
            self.bucket
                .delete(&format!("{pp}{}", seg.object_name(ext)))
                .await?;
        }
        Ok(())
    }

    pub(super) async fn write_manifest(
        &self,
        st: &mut PartState,
        part: &Arc<Partition>,
        next: Manifest,
    ) -> Result<()> {
        let key = self.manifest_key(next.topic_id, next.partition);
        let cond = match st.manifest.as_ref().and_then(|(_, v)| v.clone()) {
            Some(v) => Condition::Match(v),
            None => Condition::Create,
        };
        let v = self.bucket.put_if(&key, next.to_bytes(), cond).await?;
        // Readers first: once local retention may delete a segment, lookups below the
        // local start must already see it in the manifest.
        self.set_view(
            (next.topic_id, next.partition),
            View::Ready(Arc::new(next.clone())),
        );
        part.log().set_remote_upto(Some(next.end_offset));
        st.manifest = Some((next, Some(v)));
        Ok(())
    }

    /// Read the manifest into the partition's state if it is not there.
    async fn ensure_manifest(
        &self,
        st: &mut PartState,
        part: &Arc<Partition>,
        topic_id: uuid::Uuid,
    ) -> Result<()> {
        if st.manifest.is_none() {
            let (m, v) = self.load_manifest(topic_id, part.index).await?;
            self.set_view((topic_id, part.index), View::Ready(Arc::new(m.clone())));
            part.log().set_remote_upto(Some(m.end_offset));
            st.manifest = Some((m, v));
        }
        Ok(())
    }

    async fn sync_inner(
        &self,
        st: &mut PartState,
        part: &Arc<Partition>,
        topic_id: uuid::Uuid,
    ) -> Result<()> {
        let p = part.index;
        let epoch = part.leader_epoch();
        self.ensure_manifest(st, part, topic_id).await?;
        let pp = self.partition_prefix(topic_id, p);
        let manifest_epoch = st.manifest.as_ref().expect("loaded").0.leader_epoch;
        if st.orphans_checked.is_none_or(|e| e < manifest_epoch) {
            let m = &st.manifest.as_ref().expect("loaded").0;
            m.fence(epoch)?;
            let names: Vec<String> = self
                .bucket
                .list(&pp)
                .await?
                .into_iter()
                .filter_map(|(k, _)| k.strip_prefix(&pp).map(str::to_string))
                .collect();
            for name in plan::orphans(m, &names) {
                tracing::info!(topic = %part.topic, partition = p, object = %name, "deleting object left by a failed upload or deletion");
                self.bucket.delete(&format!("{pp}{name}")).await?;
                self.counters
                    .orphans_deleted
                    .fetch_add(1, Ordering::Relaxed);
            }
            st.orphans_checked = Some(manifest_epoch);
        }
        loop {
            if self.is_stopping() {
                // Between uploads: the bucket holds only what the manifest names.
                return Ok(());
            }
            // Below the last stable offset only, as Kafka copies: a segment holding records
            // of an open transaction waits for its marker.
            let hw = part.last_stable_offset();
            let (sums, dir, epochs, log_start, index_interval) = {
                let log = part.log();
                let dir = log.dir().to_path_buf();
                let closed: Vec<SegmentSummary> = log
                    .closed_segments()
                    .map(|s| SegmentSummary {
                        base_offset: s.base_offset,
                        next_offset: s.next_offset,
                        size: s.size(),
                        max_timestamp: s.max_timestamp,
                    })
                    .collect();
                (
                    closed,
                    dir,
                    log.epochs().to_vec(),
                    log.log_start_offset(),
                    log.config().index_interval_bytes,
                )
            };
            let m = st.manifest.as_ref().expect("loaded").0.clone();
            // Only the segment to upload is opened: the others may be closed files the
            // open-file budget keeps shut.
            let (local, tail) = match plan::next_upload(&sums, &m, hw)? {
                Upload::CaughtUp => break,
                Upload::Segment(i) => (local_closed(part, sums[i], &dir)?, false),
                Upload::Tail(i) => {
                    let whole = local_closed(part, sums[i], &dir)?;
                    let tail = tail_from(part, whole, m.end_offset, index_interval).await?;
                    tracing::info!(topic = %part.topic, partition = p, base = tail.summary.base_offset, next = tail.summary.next_offset, "uploading the part of a local segment past the manifest's end");
                    (tail, true)
                }
            };
            let uploaded = self
                .upload_segment(st, &m, &local, &epochs, epoch, &pp)
                .await;
            if tail {
                let _ = tokio::fs::remove_dir_all(&local.dir).await;
            }
            let seg = uploaded?;
            let size = seg.size;
            let next = m.with_segment_from(seg, epoch, log_start)?;
            self.write_manifest(st, part, next).await?;
            apply_local_retention(part).await;
            self.counters
                .segments_uploaded
                .fetch_add(1, Ordering::Relaxed);
            self.counters
                .bytes_uploaded
                .fetch_add(size, Ordering::Relaxed);
            tracing::debug!(topic = %part.topic, partition = p, base = local.summary.base_offset, "segment tiered");
        }
        self.apply_total_retention(st, part, epoch, &pp).await?;
        self.compact_remote(st, part, epoch, &pp).await
    }

    /// Upload the objects of one closed segment; returns its manifest entry.
    async fn upload_segment(
        &self,
        st: &mut PartState,
        m: &Manifest,
        local: &LocalClosed,
        epochs: &[(i32, i64)],
        epoch: i32,
        pp: &str,
    ) -> Result<RemoteSegment> {
        let s = local.summary;
        let start_state = match &st.snapshot {
            Some((off, t)) if *off == s.base_offset => t.clone(),
            _ => match m.segments.last() {
                Some(last) if last.next_offset == s.base_offset => {
                    self.load_snapshot(m.topic_id, m.partition, last).await?
                }
                None if m.end_offset == s.base_offset => m.retired_producers(),
                _ => ProducerStateTable::default(),
            },
        };
        let file = local.file.clone();
        let size = s.size;
        let (table, aborted) =
            tokio::task::spawn_blocking(move || fold_producers(&file, size, start_state))
                .await
                .map_err(|e| Error::RemoteUnavailable(e.to_string()))??;
        let read = |ext: &str| {
            let path = local.dir.join(format!("{:020}.{ext}", s.base_offset));
            async move {
                tokio::fs::read(&path)
                    .await
                    .map(Bytes::from)
                    .map_err(|e| Error::io(path.display().to_string(), e))
            }
        };
        let index = read("index").await?;
        let time_index = read("timeindex").await?;
        let key = |ext: &str| format!("{pp}{}", object_name(s.base_offset, epoch, ext));
        self.bucket
            .put_file(&key("log"), local.file.clone(), s.size)
            .await?;
        let (index_size, time_index_size) = (index.len() as u64, time_index.len() as u64);
        self.bucket.put(&key("index"), index).await?;
        self.bucket.put(&key("timeindex"), time_index).await?;
        let snap = Snapshot {
            version: SNAPSHOT_VERSION,
            offset: s.next_offset,
            table: table.clone(),
        };
        self.bucket
            .put(
                &key("snapshot"),
                Bytes::from(serde_json::to_vec(&snap).expect("serializable")),
            )
            .await?;
        st.snapshot = Some((s.next_offset, table));
        let in_force = epochs
            .iter()
            .rev()
            .find(|(_, start)| *start <= s.base_offset)
            .copied();
        let seg_epochs: Vec<(i32, i64)> = in_force
            .into_iter()
            .chain(
                epochs
                    .iter()
                    .filter(|(_, start)| *start > s.base_offset && *start < s.next_offset)
                    .copied(),
            )
            .collect();
        Ok(RemoteSegment {
            base_offset: s.base_offset,
            next_offset: s.next_offset,
            size: s.size,
            index_size,
            time_index_size,
            max_timestamp: s.max_timestamp,
            leader_epoch: epoch,
            epochs: seg_epochs,
            compacted: None,
            aborted,
        })
    }

    /// Total retention (`retention.ms`/`retention.bytes` across both tiers) on the bucket:
    /// the manifest drops the segments first, then their objects go.
    async fn apply_total_retention(
        &self,
        st: &mut PartState,
        part: &Arc<Partition>,
        epoch: i32,
        pp: &str,
    ) -> Result<()> {
        let (config, sums) = {
            let log = part.log();
            (log.config().clone(), log.segment_summaries())
        };
        if !config.delete {
            return Ok(());
        }
        let m = st.manifest.as_ref().expect("loaded").0.clone();
        let local_only: u64 = sums
            .iter()
            .filter(|s| s.base_offset >= m.end_offset)
            .map(|s| s.size)
            .sum();
        let n = plan::remote_expired(
            &m.segments,
            local_only,
            config.retention_ms,
            config.retention_bytes,
            crate::fsutil::now_ms(),
        );
        if n == 0 {
            return Ok(());
        }
        let doomed: Vec<RemoteSegment> = m.segments[..n].to_vec();
        let mut next = m.without_prefix(n, epoch)?;
        self.keep_producers(st, &m, &mut next).await;
        let new_start = next.log_start_offset;
        self.write_manifest(st, part, next).await?;
        {
            // Data gone from the bucket is gone from the partition: the local copy of it
            // (if any is left) must not be served either.
            let mut log = part.log();
            if log.log_start_offset() < new_start && new_start <= log.log_end_offset() {
                log.delete_records_before(new_start)?;
            }
        }
        for s in &doomed {
            self.delete_segment_objects(pp, s).await?;
            self.counters
                .segments_deleted
                .fetch_add(1, Ordering::Relaxed);
        }
        tracing::info!(topic = %part.topic, partition = part.index, segments = n, remote_start = new_start, "total retention deleted segments from the bucket");
        Ok(())
    }
}

impl Tiering {
    /// DeleteRecords on a tiered partition: everything below `offset` goes from both tiers.
    /// The manifest's log start moves first and the objects of segments wholly below it are
    /// deleted after (a failure there leaves orphans the next pass removes), then the local
    /// log's start. Returns the new low watermark.
    pub async fn delete_records(&self, part: &Arc<Partition>, offset: i64) -> Result<i64> {
        let (topic_id, start, leo) = {
            let log = part.log();
            (log.topic_id(), log.log_start_offset(), log.log_end_offset())
        };
        if offset < 0 || offset > leo {
            return Err(Error::OffsetOutOfRange {
                offset,
                start,
                end: leo,
            });
        }
        let key = (topic_id, part.index);
        let state = self.state(key);
        // The uploader's turn: uploads, retention and this never interleave.
        let mut st = state.lock().await;
        let epoch = part.leader_epoch();
        let pp = self.partition_prefix(topic_id, part.index);
        let mut attempts = 0;
        let doomed = loop {
            self.ensure_manifest(&mut st, part, topic_id).await?;
            let m = st.manifest.as_ref().expect("loaded").0.clone();
            if m.segments.is_empty() || offset <= m.log_start_offset {
                break Vec::new();
            }
            let (mut next, doomed) = m.with_log_start(offset, epoch)?;
            self.keep_producers(&st, &m, &mut next).await;
            match self.write_manifest(&mut st, part, next).await {
                Ok(()) => break doomed,
                Err(Error::ManifestConflict { .. }) if attempts == 0 => {
                    // Our own lost response or another writer: read it again, once.
                    attempts += 1;
                    st.manifest = None;
                    st.snapshot = None;
                }
                Err(e) => return Err(e),
            }
        };
        for s in &doomed {
            if let Err(e) = self.delete_segment_objects(&pp, s).await {
                tracing::warn!(topic = %part.topic, partition = part.index, error = %e, "could not delete objects below the new log start; the next pass will");
                st.orphans_checked = None;
            }
            self.counters
                .segments_deleted
                .fetch_add(1, Ordering::Relaxed);
        }
        let local_start = {
            let mut log = part.log();
            if offset > log.log_start_offset() {
                log.delete_records_before(offset)?;
            }
            log.log_start_offset()
        };
        tracing::info!(topic = %part.topic, partition = part.index, offset, remote_segments_deleted = doomed.len(), "deleted records");
        self.earliest(topic_id, part.index, local_start)
    }
}

impl Tiering {
    /// `next` is `old` without segments; when it has none left, it keeps the producer state
    /// at its end, which goes with the last segment's snapshot object otherwise (from the
    /// uploader's copy, or read from the bucket). Idempotent producers then continue after
    /// a restore or a follower's rebuild as they would have before retention ran.
    async fn keep_producers(&self, st: &PartState, old: &Manifest, next: &mut Manifest) {
        let Some(retired) = next.retired.as_mut() else {
            return;
        };
        let Some(last) = old.segments.last() else {
            return;
        };
        if !next.segments.is_empty() || retired.producers.is_some() {
            return;
        }
        retired.producers = match &st.snapshot {
            Some((off, t)) if *off == last.next_offset => Some(t.clone()),
            _ => match self.load_snapshot(old.topic_id, old.partition, last).await {
                Ok(t) => Some(t),
                Err(e) => {
                    tracing::warn!(topic_id = %old.topic_id, partition = old.partition, error = %e, "the producer state at the bucket's end could not be read; it is not kept");
                    None
                }
            },
        };
    }
}

/// Producer state after the batches of a closed segment file, starting from `table`, and
/// the transactions its abort markers ended.
fn fold_producers(
    file: &File,
    size: u64,
    mut table: ProducerStateTable,
) -> Result<(ProducerStateTable, Vec<crate::log::txn::AbortedTxn>)> {
    let mut aborted = Vec::new();
    let mut pos = 0u64;
    let mut buf = [0u8; HEADER_LEN];
    while pos < size {
        let bad = |reason: String| {
            Error::CorruptBatch(format!("closed segment at position {pos}: {reason}"))
        };
        file.read_exact_at(&mut buf, pos)
            .map_err(|e| bad(e.to_string()))?;
        let h = batch::parse_header(&buf)
            .map_err(|e| bad(e.to_string()))?
            .ok_or_else(|| bad("short header".into()))?;
        let at = pos;
        let done = crate::log::txn::fold(&mut table, &h, || {
            let mut raw = vec![0u8; h.total_len()];
            file.read_exact_at(&mut raw, at).map_err(|e| {
                Error::CorruptBatch(format!("closed segment at position {at}: {e}"))
            })?;
            Ok(raw)
        })?;
        if let Some(d) = done.filter(|d| d.marker == crate::log::txn::Marker::Abort) {
            aborted.push(crate::log::txn::AbortedTxn {
                producer_id: d.producer_id,
                first_offset: d.first_offset,
                last_offset: d.last_offset,
                last_stable_offset: table.first_unstable_offset().unwrap_or(d.last_offset + 1),
            });
        }
        pos += h.total_len() as u64;
    }
    Ok((table, aborted))
}

/// Local retention on a tiered partition, off the async threads (it unlinks files). It
/// deletes only segments the manifest already holds.
async fn apply_local_retention(part: &Arc<Partition>) {
    if !part.log().retention_due(crate::fsutil::now_ms()) {
        return;
    }
    let p = part.clone();
    let done =
        tokio::task::spawn_blocking(move || p.log().apply_retention(crate::fsutil::now_ms())).await;
    match done {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::warn!(topic = %part.topic, partition = part.index, error = %e, "local retention failed")
        }
        Err(e) => {
            tracing::warn!(topic = %part.topic, partition = part.index, error = %e, "local retention task failed")
        }
    }
}

/// Closed segment `summary` of `part`, with its file open, or an error if retention or a
/// truncation removed it since the summary was taken.
fn local_closed(part: &Partition, summary: SegmentSummary, dir: &Path) -> Result<LocalClosed> {
    let log = part.log();
    let seg = log
        .closed_segments()
        .find(|seg| seg.base_offset == summary.base_offset && seg.size() == summary.size)
        .ok_or(Error::UploadNotContiguous {
            base: summary.base_offset,
            next: summary.next_offset,
            expected: summary.base_offset,
        })?;
    Ok(LocalClosed {
        summary,
        file: seg.file()?,
        dir: dir.to_path_buf(),
    })
}

/// The part of closed segment `whole` from offset `from` on, copied into a segment of its
/// own (with its indexes) under the partition's `upload-tail` folder, for upload. `from`
/// must start a batch in it, or the local log and the manifest disagree.
async fn tail_from(
    part: &Arc<Partition>,
    whole: LocalClosed,
    from: i64,
    index_interval: u64,
) -> Result<LocalClosed> {
    let s = whole.summary;
    let not_contiguous = || Error::UploadNotContiguous {
        base: s.base_offset,
        next: s.next_offset,
        expected: from,
    };
    let position = {
        let log = part.log();
        let seg = log
            .closed_segments()
            .find(|seg| seg.base_offset == s.base_offset)
            .ok_or_else(not_contiguous)?;
        match seg.locate(from)? {
            Some(loc) if loc.header.base_offset == from => loc.position,
            _ => return Err(not_contiguous()),
        }
    };
    let dir = whole.dir.join(TAIL_DIR);
    let file = whole.file.clone();
    let seg = tokio::task::spawn_blocking(move || {
        copy_batches(&file, position, s.size, &dir, from, index_interval).map(|seg| (seg, dir))
    })
    .await
    .map_err(|e| Error::RemoteUnavailable(e.to_string()))?;
    let (seg, dir) = seg?;
    if seg.next_offset != s.next_offset {
        return Err(not_contiguous());
    }
    Ok(LocalClosed {
        summary: SegmentSummary {
            base_offset: from,
            next_offset: seg.next_offset,
            size: seg.size(),
            max_timestamp: seg.max_timestamp,
        },
        file: seg.file()?,
        dir,
    })
}

/// A new segment at `base`, alone in `dir` (emptied first): the scratch space where a
/// segment to upload is rebuilt with its indexes.
pub(super) fn segment_in_empty_dir(
    dir: &std::path::Path,
    base: i64,
    index_interval: u64,
) -> Result<Segment> {
    let io = |e| Error::io(dir.display().to_string(), e);
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
        _ => {}
    }
    std::fs::create_dir_all(dir).map_err(io)?;
    Segment::create(dir, base, index_interval)
}

/// Copy the whole batches of `src` from byte `from` to `size` into a new segment at `base`
/// in `dir` (emptied first), a chunk at a time; the segment builds its own indexes.
fn copy_batches(
    src: &File,
    from: u64,
    size: u64,
    dir: &std::path::Path,
    base: i64,
    index_interval: u64,
) -> Result<Segment> {
    const CHUNK: u64 = 1 << 20;
    let mut seg = segment_in_empty_dir(dir, base, index_interval)?;
    let mut pos = from;
    while pos < size {
        let mut buf = crate::log::segment::read_at(src, pos, (size - pos).min(CHUNK) as usize)?;
        let mut headers = Vec::new();
        let mut used = 0usize;
        while let Some(h) = batch::parse_header(&buf[used..])? {
            let len = h.total_len();
            if len < HEADER_LEN || used + len > buf.len() {
                break;
            }
            headers.push((h, used));
            used += len;
        }
        if headers.is_empty() {
            // One batch larger than a chunk: read it whole.
            let h = batch::parse_header(&buf)?
                .filter(|h| h.total_len() >= HEADER_LEN && pos + h.total_len() as u64 <= size)
                .ok_or_else(|| {
                    Error::CorruptBatch(format!("closed segment at position {pos}: no whole batch"))
                })?;
            buf = crate::log::segment::read_at(src, pos, h.total_len())?;
            used = buf.len();
            headers.push((h, 0));
        }
        seg.append(&buf[..used], &headers)?;
        pos += used as u64;
    }
    seg.sync()?;
    Ok(seg)
}
