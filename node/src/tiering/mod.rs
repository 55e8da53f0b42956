//! Tiered storage: closed segments of partitions with `remote.storage.enable=true` are
//! uploaded to an S3-compatible bucket (or a local directory) with their indexes and producer
//! state, recorded in a per-partition manifest written with conditional puts and fenced by
//! leader epoch; local segments go once they are in the manifest and past local retention;
//! reads below the local log start come from the bucket through a bounded block cache;
//! total retention deletes from the bucket; a partition whose local directory is gone is
//! rebuilt from its manifest. Off unless the node is given `--object-store`.
//!
//! Calls `log` and `partition` only; the uploader walks the partition table it is given.
//!
//! Bucket layout: `{prefix}{topic_id}/{partition}/manifest.json` and
//! `{base_offset:020}-{leader_epoch}.{log,index,timeindex,snapshot}` beside it;
//! `{prefix}{topic_id}/topic.json` describes the topic (see `catalog`, which also restores a
//! whole cluster from a prefix).

pub mod cache;
pub mod catalog;
pub mod compaction;
pub mod disk_cache;
mod lookup;
pub mod manifest;
pub mod plan;
pub mod store;
mod uploader;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::log::batch::{self, BatchHeader, HEADER_LEN};
use crate::log::index::{floor_offset, IndexEntry, OffsetEntry};
use crate::log::producer_state::{ProducerStateTable, Snapshot, SNAPSHOT_VERSION};
use crate::log::{LogConfig, PartitionLog};
use cache::BlockCache;
use manifest::Manifest;
use store::{Bucket, ObjectStoreBucket, Version};

/// Node-level tiering settings (from `--object-store` and friends).
#[derive(Debug, Clone)]
pub struct TieringOptions {
    /// `s3://BUCKET/PREFIX` or `file:///PATH`.
    pub url: String,
    /// Byte budget of the read cache.
    pub cache_bytes: u64,
    /// The disk cache beneath it: its directory and byte budget (None: no disk cache).
    pub disk_cache: Option<(std::path::PathBuf, u64)>,
    /// How often the uploader looks for closed segments.
    pub interval: Duration,
    /// Least time between two compactions of a compacted partition's bucket copy.
    pub compaction_interval: Duration,
}

/// The disk cache's directory under the data directory.
pub const DISK_CACHE_DIR: &str = "remote-cache";

/// Read-ahead after a remote read, for sequential consumers.
const READ_AHEAD: u64 = 2 * cache::BLOCK;

/// What readers know about one partition's manifest.
#[derive(Debug, Clone)]
enum View {
    /// Not loaded yet (startup, or the bucket was unreachable).
    Unknown,
    Ready(Arc<Manifest>),
    /// The manifest is unreadable; needs a person.
    Failed(String),
}

/// Node-wide counters.
#[derive(Debug, Default)]
struct Counters {
    segments_uploaded: AtomicU64,
    bytes_uploaded: AtomicU64,
    upload_failures: AtomicU64,
    segments_deleted: AtomicU64,
    orphans_deleted: AtomicU64,
    remote_reads: AtomicU64,
    remote_read_bytes: AtomicU64,
    remote_compactions: AtomicU64,
}

/// Tiering figures of one partition, for metrics and the operator's Topic status.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PartitionTierStats {
    pub topic: String,
    pub partition: i32,
    /// Bytes of local segments.
    pub local_bytes: u64,
    /// Bytes of `.log` objects in the bucket.
    pub remote_bytes: u64,
    /// Closed local segments waiting for upload, and their bytes.
    pub lag_segments: usize,
    pub lag_bytes: u64,
    pub local_start: i64,
    pub remote_start: i64,
    pub remote_end: i64,
    /// Why uploads of this partition are failing, if they are.
    pub error: Option<String>,
}

/// A snapshot of every tiering figure, for later metrics.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TieringStats {
    pub segments_uploaded: u64,
    pub bytes_uploaded: u64,
    pub upload_failures: u64,
    pub segments_deleted: u64,
    pub orphans_deleted: u64,
    pub remote_reads: u64,
    pub remote_read_bytes: u64,
    /// Segments of the bucket rewritten by compaction.
    pub remote_compactions: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub cache_bytes: u64,
    pub disk_cache_hits: u64,
    pub disk_cache_misses: u64,
    pub disk_cache_bytes: u64,
    pub bucket_puts: u64,
    pub bucket_gets: u64,
    pub bucket_lists: u64,
    pub bucket_deletes: u64,
    pub bucket_copies: u64,
    pub bucket_errors: u64,
    pub bucket_bytes_up: u64,
    pub bucket_bytes_down: u64,
    pub partitions: Vec<PartitionTierStats>,
}

type PartKey = (uuid::Uuid, i32);

/// The end of the bucket's copy of a partition, and what a log needs to continue there.
#[derive(Debug)]
pub struct RestorePoint {
    /// The manifest's end offset: the first offset the bucket does not hold.
    pub end_offset: i64,
    /// Leader epochs and the offsets they start at, up to `end_offset`.
    pub epochs: Vec<(i32, i64)>,
    /// Producer state at `end_offset`.
    pub producers: ProducerStateTable,
}

/// The tiering service of a node.
pub struct Tiering {
    bucket: Arc<dyn Bucket>,
    prefix: String,
    options: TieringOptions,
    cache: Arc<BlockCache>,
    views: RwLock<HashMap<PartKey, View>>,
    states: Mutex<HashMap<PartKey, Arc<tokio::sync::Mutex<uploader::PartState>>>>,
    part_stats: RwLock<HashMap<PartKey, PartitionTierStats>>,
    /// The topics this node describes in the bucket's catalog.
    catalog: Mutex<catalog::Catalog>,
    counters: Counters,
    /// Set when a manifest could not be read at start-up: the remaining partitions open
    /// without waiting for the bucket (the uploader loads their manifests later).
    unreachable_at_start: std::sync::atomic::AtomicBool,
    /// Set at shutdown: the uploader finishes the segment in hand and starts no other.
    stopping: std::sync::atomic::AtomicBool,
}

/// Run a future to completion from synchronous code (broker start-up), on the current
/// runtime if there is one.
fn block_on<F>(f: F) -> F::Output
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    match tokio::runtime::Handle::try_current() {
        Ok(h) => std::thread::scope(|s| {
            s.spawn(|| h.block_on(f))
                .join()
                .expect("tiering start-up thread panicked")
        }),
        Err(_) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for start-up")
            .block_on(f),
    }
}

impl Tiering {
    /// Open the bucket named by `options.url`.
    pub fn open(options: TieringOptions) -> Result<Tiering> {
        let (bucket, prefix) = ObjectStoreBucket::open(&options.url)?;
        Ok(Self::with_bucket(Arc::new(bucket), prefix, options))
    }

    /// Tiering over a given bucket (tests use an in-memory one).
    pub fn with_bucket(bucket: Arc<dyn Bucket>, prefix: String, options: TieringOptions) -> Self {
        let mut cache = BlockCache::new(options.cache_bytes);
        if let Some((dir, bytes)) = &options.disk_cache {
            match disk_cache::DiskCache::open(dir, *bytes) {
                Ok(d) => {
                    tracing::info!(dir = %dir.display(), max_bytes = bytes, held = d.bytes(), "disk cache for bucket reads");
                    cache = cache.with_disk(Arc::new(d));
                }
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "no disk cache for bucket reads")
                }
            }
        }
        Tiering {
            bucket,
            prefix,
            cache: Arc::new(cache),
            options,
            views: RwLock::new(HashMap::new()),
            states: Mutex::new(HashMap::new()),
            part_stats: RwLock::new(HashMap::new()),
            catalog: Mutex::new(catalog::Catalog::default()),
            counters: Counters::default(),
            unreachable_at_start: std::sync::atomic::AtomicBool::new(false),
            stopping: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The settings in force.
    pub fn options(&self) -> &TieringOptions {
        &self.options
    }

    fn partition_prefix(&self, topic_id: uuid::Uuid, p: i32) -> String {
        format!("{}{}/{}/", self.prefix, topic_id.hyphenated(), p)
    }

    fn manifest_key(&self, topic_id: uuid::Uuid, p: i32) -> String {
        format!("{}manifest.json", self.partition_prefix(topic_id, p))
    }

    fn set_view(&self, key: PartKey, v: View) {
        self.views.write().insert(key, v);
    }

    fn view(&self, key: PartKey) -> View {
        self.views
            .read()
            .get(&key)
            .cloned()
            .unwrap_or(View::Unknown)
    }

    /// Read the manifest; an absent one is the empty manifest (with no version).
    async fn load_manifest(
        &self,
        topic_id: uuid::Uuid,
        p: i32,
    ) -> Result<(Manifest, Option<Version>)> {
        let key = self.manifest_key(topic_id, p);
        match self.bucket.get(&key).await? {
            None => Ok((Manifest::empty(topic_id, p), None)),
            Some((raw, v)) => {
                let m = Manifest::parse(&key, &raw)?;
                if m.topic_id != topic_id || m.partition != p {
                    return Err(Error::CorruptManifest {
                        key,
                        reason: format!(
                            "it belongs to {}/{}, not {topic_id}/{p}",
                            m.topic_id, m.partition
                        ),
                    });
                }
                Ok((m, Some(v)))
            }
        }
    }

    /// Producer state at the end of a remote segment, from its snapshot object.
    async fn load_snapshot(
        &self,
        topic_id: uuid::Uuid,
        p: i32,
        seg: &manifest::RemoteSegment,
    ) -> Result<ProducerStateTable> {
        let key = format!(
            "{}{}",
            self.partition_prefix(topic_id, p),
            seg.object_name("snapshot")
        );
        let corrupt = |reason: String| Error::CorruptRemoteSegment {
            key: key.clone(),
            reason,
        };
        let (raw, _) = self
            .bucket
            .get(&key)
            .await?
            .ok_or_else(|| corrupt("missing".into()))?;
        let s: Snapshot = serde_json::from_slice(&raw).map_err(|e| corrupt(e.to_string()))?;
        if s.version > SNAPSHOT_VERSION || s.offset != seg.next_offset {
            return Err(corrupt(format!(
                "version {} at offset {} (expected version <= {SNAPSHOT_VERSION} at {})",
                s.version, s.offset, seg.next_offset
            )));
        }
        Ok(s.table)
    }

    /// Where a replica can start from the bucket's copy of partition `p`: the manifest's
    /// end offset, with the epoch history and the producer state there (None while the
    /// bucket holds nothing). A follower whose log ends below its leader's local start
    /// rebuilds from this instead of fetching the bucket's data through the leader.
    pub async fn restore_point(
        &self,
        topic_id: uuid::Uuid,
        p: i32,
    ) -> Result<Option<RestorePoint>> {
        let (m, _) = self.load_manifest(topic_id, p).await?;
        let producers = match m.segments.last() {
            Some(last) => self.load_snapshot(topic_id, p, last).await?,
            None if m.end_offset > 0 => m.retired_producers(),
            None => return Ok(None),
        };
        let point = RestorePoint {
            end_offset: m.end_offset,
            epochs: m.epoch_history(),
            producers,
        };
        self.set_view((topic_id, p), View::Ready(Arc::new(m)));
        Ok(Some(point))
    }

    /// Open a tiered partition at broker start: load its manifest (so reads below the local
    /// start work at once) and, when the local directory is gone, rebuild the partition
    /// from the manifest. A partition that must be restored but whose manifest cannot be
    /// read stops the start with a clear error rather than start empty at offset 0.
    pub fn open_partition(
        &self,
        dir: &Path,
        topic_id: uuid::Uuid,
        p: i32,
        config: LogConfig,
        recover: bool,
    ) -> crate::error::Result<PartitionLog> {
        // A tail copy left by a crash mid-upload (see the uploader): rebuilt when needed.
        let _ = std::fs::remove_dir_all(dir.join(uploader::TAIL_DIR));
        let _ = std::fs::remove_dir_all(dir.join(compaction::COMPACT_DIR));
        let restore = !dir.join("partition.json").exists();
        if !restore && self.unreachable_at_start.load(Ordering::Relaxed) {
            return PartitionLog::open(dir, topic_id, config, recover);
        }
        let loaded = block_on(async {
            let (m, _) = tokio::time::timeout(
                Duration::from_secs(if restore { 120 } else { 20 }),
                self.load_manifest(topic_id, p),
            )
            .await
            .map_err(|_| Error::RemoteUnavailable("timed out reading the manifest".into()))??;
            let table = match (restore, m.segments.last()) {
                (true, Some(last)) => self.load_snapshot(topic_id, p, last).await?,
                (true, None) => m.retired_producers(),
                _ => ProducerStateTable::default(),
            };
            Ok::<_, Error>((m, table))
        });
        let key = (topic_id, p);
        let (m, table) = match loaded {
            Ok(x) => x,
            Err(e) => {
                if restore {
                    tracing::error!(dir = %dir.display(), error = %e, "cannot restore partition from the bucket");
                    return Err(e);
                }
                tracing::warn!(dir = %dir.display(), error = %e, "manifest not loaded at start; retrying in the background");
                if e.is_transient() {
                    self.unreachable_at_start.store(true, Ordering::Relaxed);
                } else {
                    self.set_view(key, View::Failed(e.to_string()));
                }
                return PartitionLog::open(dir, topic_id, config, recover);
            }
        };
        let mut log = if restore && m.end_offset > 0 {
            tracing::info!(
                dir = %dir.display(),
                remote_start = m.log_start_offset,
                remote_end = m.end_offset,
                segments = m.segments.len(),
                "restoring partition from the bucket"
            );
            PartitionLog::create_restored(
                dir,
                topic_id,
                config,
                m.end_offset,
                m.epoch_history(),
                table,
            )?
        } else {
            PartitionLog::open(dir, topic_id, config, recover)?
        };
        // Its directory and partition.json now, though it may never be written: without
        // them the next start would take it for a partition to restore and ask the bucket.
        log.materialize()?;
        log.set_remote_upto(Some(m.end_offset));
        self.set_view(key, View::Ready(Arc::new(m)));
        Ok(log)
    }

    /// Aborted transactions whose markers are in the bucket's segments and that may have
    /// records in `[from, upto)` (a read_committed read).
    pub fn aborted(
        &self,
        topic_id: uuid::Uuid,
        p: i32,
        from: i64,
        upto: i64,
    ) -> Vec<crate::log::txn::AbortedTxn> {
        let View::Ready(m) = self.view((topic_id, p)) else {
            return Vec::new();
        };
        m.segments
            .iter()
            .filter(|s| s.next_offset > from)
            .flat_map(|s| s.aborted.iter())
            .filter(|a| a.last_offset >= from && a.first_offset < upto)
            .copied()
            .collect()
    }

    /// The earliest offset a consumer can read: the bucket's start when it holds data. While
    /// the manifest is unknown (the bucket was unreachable when the node started) and the
    /// local log no longer starts at 0, the bucket may hold older data: a retriable
    /// KAFKA_STORAGE_ERROR, never the local start passed off as the log's.
    pub fn earliest(&self, topic_id: uuid::Uuid, p: i32, local_start: i64) -> Result<i64> {
        match self.view((topic_id, p)) {
            View::Ready(m) if !m.segments.is_empty() => Ok(m.log_start_offset.min(local_start)),
            View::Ready(_) => Ok(local_start),
            View::Unknown if local_start == 0 => Ok(0),
            View::Unknown => Err(Error::RemoteUnavailable(
                "the manifest has not been read yet".into(),
            )),
            View::Failed(e) => Err(Error::RemoteUnavailable(e)),
        }
    }

    async fn header_at(&self, key: &str, size: u64, pos: u64) -> Result<BatchHeader> {
        let corrupt = |reason: String| Error::CorruptRemoteSegment {
            key: key.to_string(),
            reason,
        };
        if pos + HEADER_LEN as u64 > size {
            return Err(corrupt(format!("no batch header at {pos} of {size}")));
        }
        let raw = self
            .cache
            .range(&self.bucket, key, size, pos, pos + HEADER_LEN as u64)
            .await?;
        let h = batch::parse_header(&raw)
            .map_err(|e| corrupt(e.to_string()))?
            .ok_or_else(|| corrupt(format!("short header at {pos}")))?;
        if (h.total_len() as u64) < HEADER_LEN as u64 || pos + h.total_len() as u64 > size {
            return Err(corrupt(format!("batch at {pos} runs past the end")));
        }
        Ok(h)
    }

    /// Position and header of the first batch of a remote segment whose last offset is at
    /// least `offset` (None past its end), through the segment's remote offset index.
    async fn locate(
        &self,
        pp: &str,
        seg: &manifest::RemoteSegment,
        offset: i64,
    ) -> Result<Option<(u64, BatchHeader)>> {
        let log_key = format!("{pp}{}", seg.object_name("log"));
        let index_key = format!("{pp}{}", seg.object_name("index"));
        let index = self.cache.object(&self.bucket, &index_key).await?;
        if index.len() % OffsetEntry::WIDTH != 0 {
            return Err(Error::CorruptRemoteSegment {
                key: index_key,
                reason: format!("{} bytes is not a whole number of entries", index.len()),
            });
        }
        let rel = (offset - seg.base_offset).clamp(0, u32::MAX as i64) as u32;
        let entries: Vec<OffsetEntry> = index
            .chunks_exact(OffsetEntry::WIDTH)
            .map(OffsetEntry::read_from)
            .filter(|e| (e.position as u64) < seg.size)
            .collect();
        let mut pos = floor_offset(&entries, rel)
            .map(|e| e.position as u64)
            .unwrap_or(0);
        let mut h = self.header_at(&log_key, seg.size, pos).await?;
        while h.last_offset() < offset {
            pos += h.total_len() as u64;
            if pos >= seg.size {
                return Ok(None);
            }
            h = self.header_at(&log_key, seg.size, pos).await?;
        }
        Ok(Some((pos, h)))
    }

    /// Whole batches from the bucket starting with the one holding `offset`, up to
    /// `max_bytes` (at least one batch when `min_one`), from a single segment.
    pub async fn read(
        &self,
        topic_id: uuid::Uuid,
        p: i32,
        offset: i64,
        max_bytes: usize,
        min_one: bool,
    ) -> Result<Option<Bytes>> {
        let m = match self.view((topic_id, p)) {
            View::Ready(m) => m,
            View::Unknown => {
                return Err(Error::RemoteUnavailable(
                    "the manifest has not been read yet".into(),
                ))
            }
            View::Failed(e) => return Err(Error::RemoteUnavailable(e)),
        };
        let Some(seg) = m.find(offset) else {
            if offset < m.log_start_offset || m.segments.is_empty() {
                return Err(Error::OffsetOutOfRange {
                    offset,
                    start: m.log_start_offset,
                    end: m.end_offset,
                });
            }
            return Ok(None);
        };
        let pp = self.partition_prefix(topic_id, p);
        // Compaction may have left a segment with nothing at or after `offset` (or nothing
        // at all): the read goes on in the next one, as a compacted local log does.
        let mut seg = seg;
        let mut from = offset;
        let (pos, h) = loop {
            if seg.size > 0 {
                if let Some(found) = self.locate(&pp, seg, from).await? {
                    break found;
                }
            }
            match m.after(seg.base_offset) {
                Some(next) => {
                    from = next.base_offset;
                    seg = next;
                }
                None => return Ok(None),
            }
        };
        let log_key = format!("{pp}{}", seg.object_name("log"));
        let start = pos;
        let mut end = pos;
        while end < seg.size {
            let len = if end == start {
                h.total_len() as u64
            } else {
                self.header_at(&log_key, seg.size, end).await?.total_len() as u64
            };
            if (end - start + len) as usize > max_bytes && !(min_one && end == start) {
                break;
            }
            end += len;
        }
        if end == start {
            return Ok(None);
        }
        let data = self
            .cache
            .range(&self.bucket, &log_key, seg.size, start, end)
            .await?;
        self.counters.remote_reads.fetch_add(1, Ordering::Relaxed);
        self.counters
            .remote_read_bytes
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        // Read-ahead: the rest of this block and the next ones, then the next segment.
        self.cache
            .prefetch(&self.bucket, &log_key, seg.size, end, end + READ_AHEAD);
        let left = (end + READ_AHEAD).saturating_sub(seg.size);
        if left > 0 {
            if let Some(next) = m.after(seg.base_offset) {
                let next_log = format!("{pp}{}", next.object_name("log"));
                self.cache
                    .prefetch(&self.bucket, &next_log, next.size, 0, left);
                let cache = self.cache.clone();
                let bucket = self.bucket.clone();
                let next_index = format!("{pp}{}", next.object_name("index"));
                tokio::spawn(async move {
                    let _ = cache.object(&bucket, &next_index).await;
                });
            }
        }
        Ok(Some(data))
    }

    /// Ask the uploader to stop: the upload in hand completes (objects and manifest), no
    /// new one starts. `run` returns once its current pass is over.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// Delete every object of a deleted topic, in the background (a restart before it
    /// finishes leaves them; the topic id is never reused, so they are inert).
    pub fn delete_topic_data(&self, topic_id: uuid::Uuid) {
        self.views.write().retain(|(id, _), _| *id != topic_id);
        self.states.lock().retain(|(id, _), _| *id != topic_id);
        self.part_stats.write().retain(|(id, _), _| *id != topic_id);
        {
            let mut c = self.catalog.lock();
            c.wanted.remove(&topic_id);
            c.written.remove(&topic_id);
            c.deleted.insert(topic_id);
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let bucket = self.bucket.clone();
        let prefix = format!("{}{}/", self.prefix, topic_id.hyphenated());
        rt.spawn(async move {
            let result = async {
                let objects = bucket.list(&prefix).await?;
                for (key, _) in &objects {
                    bucket.delete(key).await?;
                }
                Ok::<_, Error>(objects.len())
            }
            .await;
            match result {
                Ok(n) => tracing::info!(%topic_id, objects = n, "deleted the topic's tiered data"),
                Err(e) => {
                    tracing::warn!(%topic_id, error = %e, "could not delete the topic's tiered data")
                }
            }
        });
    }

    /// Every figure, for metrics.
    pub fn stats(&self) -> TieringStats {
        let c = &self.counters;
        let b = self.bucket.counters();
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut partitions: Vec<PartitionTierStats> =
            self.part_stats.read().values().cloned().collect();
        partitions.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        TieringStats {
            segments_uploaded: l(&c.segments_uploaded),
            bytes_uploaded: l(&c.bytes_uploaded),
            upload_failures: l(&c.upload_failures),
            segments_deleted: l(&c.segments_deleted),
            orphans_deleted: l(&c.orphans_deleted),
            remote_reads: l(&c.remote_reads),
            remote_read_bytes: l(&c.remote_read_bytes),
            remote_compactions: l(&c.remote_compactions),
            cache_hits: l(&self.cache.counters.hits),
            cache_misses: l(&self.cache.counters.misses),
            cache_bytes: self.cache.bytes(),
            disk_cache_hits: self.cache.disk().map_or(0, |d| l(&d.hits)),
            disk_cache_misses: self.cache.disk().map_or(0, |d| l(&d.misses)),
            disk_cache_bytes: self.cache.disk().map_or(0, |d| d.bytes()),
            bucket_puts: l(&b.puts),
            bucket_gets: l(&b.gets),
            bucket_lists: l(&b.lists),
            bucket_deletes: l(&b.deletes),
            bucket_copies: l(&b.copies),
            bucket_errors: l(&b.errors),
            bucket_bytes_up: l(&b.bytes_up),
            bucket_bytes_down: l(&b.bytes_down),
            partitions,
        }
    }
}

pub use uploader::run;

#[cfg(test)]
mod tests;
