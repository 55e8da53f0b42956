//! The log of one partition: an ordered set of segments with offsets, epochs, producer
//! state, retention and recovery.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::IoSlice;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::batch::{self, BatchHeader, BatchSpan};
use super::config::LogConfig;
use super::producer_state::{
    snapshot_name, CompletedTxn, ProducerStateTable, SequenceCheck, Snapshot, SNAPSHOT_VERSION,
};
use super::retention::{self, SegmentSummary};
use super::segment::{self, Segment};
use super::txn::{self, AbortedTxn, Marker, TxnIndex};
use crate::error::{Error, Result};
use crate::fsutil;

mod replica;

/// Result of appending one produce record set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    /// LogAppendTime used, or -1 for CreateTime topics.
    pub log_append_time: i64,
    /// Whether the whole set was a retried duplicate and nothing was written.
    pub duplicate: bool,
}

/// A planned read: bytes `[position, position+len)` of `file`, taken outside the lock.
#[derive(Debug, Clone)]
pub struct ReadPlan {
    pub file: Arc<File>,
    pub position: u64,
    pub len: usize,
}

impl ReadPlan {
    /// Perform the read.
    pub fn read(&self) -> Result<Vec<u8>> {
        segment::read_at(&self.file, self.position, self.len)
    }

    /// Perform the read into a pooled buffer, which goes back to the pool when the returned
    /// bytes are dropped (fetch responses, read often and dropped once written).
    pub fn read_bytes(&self) -> Result<Bytes> {
        segment::read_pooled(&self.file, self.position, self.len)
    }
}

/// Persistent per-partition metadata (beside the segments).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PartitionMeta {
    version: u32,
    topic_id: uuid::Uuid,
    log_start_offset: i64,
    /// (leader epoch, first offset written in it), ascending.
    epochs: Vec<(i32, i64)>,
    /// Written while the partition's directory entries were not yet known durable (see
    /// `PartitionLog::entries_unsynced`); absent once they are.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    entries_unsynced: bool,
}

const META_FILE: &str = "partition.json";
const META_VERSION: u32 = 1;

/// One partition's log.
pub struct PartitionLog {
    dir: PathBuf,
    config: LogConfig,
    /// Boxed: a B-tree leaf has room for eleven entries whatever it holds, and eleven
    /// segments inline cost about 3 KB for every partition (most have one segment).
    segments: BTreeMap<i64, Box<Segment>>,
    log_start_offset: i64,
    producers: ProducerStateTable,
    /// Aborted transactions whose markers are in the log.
    txns: TxnIndex,
    topic_id: uuid::Uuid,
    epochs: Vec<(i32, i64)>,
    /// Offset below which everything is fsynced.
    durable_offset: i64,
    /// Set after a failed write or fsync: the log refuses further appends.
    poisoned: Option<String>,
    /// Bytes appended since the last compaction, for the dirty ratio.
    dirty_bytes: u64,
    /// Tiered storage hook: offset below which every segment is in the bucket's manifest
    /// (None: not known yet). With `remote.storage.enable`, only such segments may be
    /// deleted by local retention.
    remote_upto: Option<i64>,
    /// What `partition.json` holds now, so that an unchanged state is not rewritten (two
    /// fsyncs a partition when a node with thousands of them starts or stops).
    meta_on_disk: Option<Vec<u8>>,
    /// A partition created here that has not fsynced anything yet: `partition.json` and the
    /// directory entries (its own, its first segment's) are written without fsyncs, and the
    /// first fsync of its data (a flush, a roll, a clean close) makes them durable first.
    /// Losing them in a crash before that loses nothing: the log holds no durable data, and
    /// the controller's metadata recreates the partition. Creating a topic of 1,000
    /// partitions would otherwise wait for 4,000 fsyncs.
    entries_unsynced: bool,
    /// Whether the directory exists. A partition created here makes it (and its first
    /// segment's file, and `partition.json`) at its first write: creating a topic of
    /// thousands of partitions touches no file until they are written, and a node hosting
    /// many never-written partitions keeps nothing of them on disk.
    on_disk: bool,
    /// Compaction's memory between passes: when each marker it found removable was first
    /// found so, by offset (see `compaction`).
    removable_markers: BTreeMap<i64, i64>,
}

impl PartitionLog {
    /// Open or create the partition directory `dir`. With `recover`, the active segment is
    /// checked batch by batch and a torn or corrupt tail is truncated.
    pub fn open(
        dir: &Path,
        topic_id: uuid::Uuid,
        config: LogConfig,
        recover: bool,
    ) -> Result<Self> {
        match std::fs::symlink_metadata(dir) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Self::fresh(dir, topic_id, config)
            }
            Err(e) => return Err(Error::io(dir.display().to_string(), e)),
        }
        let mut bases = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir.display().to_string(), e))? {
            let entry = entry.map_err(|e| Error::io(dir.display().to_string(), e))?;
            let name = entry.file_name().to_string_lossy().to_string();
            if name.ends_with(".cleaned") || name.ends_with(".tmp") {
                let _ = std::fs::remove_file(entry.path());
                continue;
            }
            if let Some(b) = segment::parse_log_name(&name) {
                bases.push(b);
            }
        }
        bases.sort_unstable();
        let meta_path = dir.join(META_FILE);
        let mut meta_on_disk = None;
        let no_data = || {
            bases.iter().all(|b| {
                std::fs::metadata(dir.join(segment::log_name(*b))).is_ok_and(|m| m.len() == 0)
            })
        };
        let fresh = !meta_path.exists() && bases.is_empty();
        let meta = if meta_path.exists() {
            let raw = std::fs::read(&meta_path)
                .map_err(|e| Error::io(meta_path.display().to_string(), e))?;
            match serde_json::from_slice::<PartitionMeta>(&raw) {
                Ok(m) => Some((m, raw)),
                // Written without an fsync when the partition was created and cut short by
                // a crash before any data of it was durable: nothing to lose, start afresh.
                Err(e) if no_data() => {
                    tracing::warn!(path = %meta_path.display(), error = %e, "unreadable metadata of a partition without data; starting it afresh");
                    None
                }
                Err(e) => {
                    return Err(Error::CorruptMetadata {
                        path: meta_path.display().to_string(),
                        reason: e.to_string(),
                    })
                }
            }
        } else {
            None
        };
        let meta = if let Some((m, raw)) = meta {
            if m.version > META_VERSION {
                return Err(Error::UnknownFormatVersion {
                    path: meta_path.display().to_string(),
                    found: m.version,
                    supported: META_VERSION,
                });
            }
            meta_on_disk = Some(raw);
            Some(m)
        } else {
            None
        };
        let mut segments = BTreeMap::new();
        let n = bases.len();
        for (i, base) in bases.into_iter().enumerate() {
            let last = i + 1 == n;
            let seg = Segment::open(dir, base, config.index_interval_bytes, recover && last)?;
            segments.insert(base, Box::new(seg));
        }
        if segments.is_empty() {
            segments.insert(
                0,
                Box::new(Segment::create(dir, 0, config.index_interval_bytes)?),
            );
        }
        let first_base = *segments.keys().next().expect("one segment");
        // Whether what this partition created has been fsynced is in its metadata; without
        // metadata, nothing of it is known durable.
        let unsynced = fresh || meta.as_ref().is_none_or(|m| m.entries_unsynced);
        let mut log = Self::assemble(dir, topic_id, config, segments, unsynced);
        log.log_start_offset = first_base;
        log.meta_on_disk = meta_on_disk;
        if let Some(m) = meta {
            log.topic_id = m.topic_id;
            log.log_start_offset = m.log_start_offset.max(first_base);
            log.epochs = m.epochs;
        }
        let leo = log.log_end_offset();
        log.log_start_offset = log.log_start_offset.min(leo);
        log.epochs.retain(|(_, start)| *start < leo || leo == 0);
        log.durable_offset = leo;
        let bases: Vec<i64> = log.segments.keys().copied().collect();
        log.txns = TxnIndex::load(dir, &bases)?;
        log.load_producer_state()?;
        if log.entries_unsynced && leo > log.log_start_offset {
            // Its epoch history was written without an fsync: after a crash it may lack
            // epochs its batches carry. Complete it from them, as Kafka's recovery does.
            log.complete_epochs_from_batches()?;
        }
        log.write_meta()?;
        Ok(log)
    }

    /// Add every leader epoch the batches carry that the epoch history lacks.
    fn complete_epochs_from_batches(&mut self) -> Result<()> {
        let mut epochs = self.epochs.clone();
        for seg in self.segments.values() {
            for loc in seg.batches()? {
                let (epoch, base) = (loc.header.partition_leader_epoch, loc.header.base_offset);
                if epoch >= 0 && epochs.last().is_none_or(|(e, _)| *e < epoch) {
                    epochs.push((epoch, base));
                }
            }
        }
        self.epochs = epochs;
        Ok(())
    }

    /// A partition whose directory does not exist: nothing to read back, and nothing
    /// written until its first write (see `on_disk` and `entries_unsynced`).
    fn fresh(dir: &Path, topic_id: uuid::Uuid, config: LogConfig) -> Result<Self> {
        let seg = Segment::unborn(dir, 0, config.index_interval_bytes)?;
        let segments = BTreeMap::from([(0, Box::new(seg))]);
        let mut log = Self::assemble(dir, topic_id, config, segments, true);
        log.on_disk = false;
        Ok(log)
    }

    /// Create the directory of a partition that has none yet (before its first write, or
    /// when its directory must exist anyway).
    pub(crate) fn materialize(&mut self) -> Result<()> {
        if self.on_disk {
            return Ok(());
        }
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| Error::io(self.dir.display().to_string(), e))?;
        self.on_disk = true;
        self.write_meta()
    }

    fn assemble(
        dir: &Path,
        topic_id: uuid::Uuid,
        config: LogConfig,
        segments: BTreeMap<i64, Box<Segment>>,
        entries_unsynced: bool,
    ) -> Self {
        PartitionLog {
            dir: dir.to_path_buf(),
            config,
            segments,
            log_start_offset: 0,
            producers: ProducerStateTable::default(),
            txns: TxnIndex::default(),
            topic_id,
            epochs: Vec::new(),
            durable_offset: 0,
            poisoned: None,
            dirty_bytes: 0,
            remote_upto: None,
            meta_on_disk: None,
            entries_unsynced,
            on_disk: true,
            removable_markers: BTreeMap::new(),
        }
    }

    fn write_meta(&mut self) -> Result<()> {
        if !self.on_disk {
            // Kept in memory until the first write creates the directory.
            return Ok(());
        }
        let m = PartitionMeta {
            version: META_VERSION,
            topic_id: self.topic_id,
            log_start_offset: self.log_start_offset,
            epochs: self.epochs.clone(),
            entries_unsynced: self.entries_unsynced,
        };
        let bytes = serde_json::to_vec_pretty(&m).expect("serializable");
        if self.meta_on_disk.as_ref() == Some(&bytes) {
            return Ok(());
        }
        // Forget the old content first: after a failed write the file's state is unknown.
        self.meta_on_disk = None;
        let path = self.dir.join(META_FILE);
        if self.entries_unsynced {
            fsutil::write_replace(&path, &bytes)?;
        } else {
            fsutil::write_atomic(&path, &bytes)?;
        }
        self.meta_on_disk = Some(bytes);
        Ok(())
    }

    /// Make what a freshly created partition wrote without fsyncs durable (`partition.json`,
    /// its directory, its entry in the data directory): before its data's first fsync.
    pub fn sync_entries(&mut self) -> Result<()> {
        if !self.entries_unsynced {
            return Ok(());
        }
        self.materialize()?;
        // The partition's own entry first; then `partition.json` saying so, written durably
        // (its directory's fsync also makes the segment files' entries durable). A crash in
        // between leaves the metadata still saying "unsynced", and the next run syncs again.
        if let Some(parent) = self.dir.parent() {
            fsutil::sync_dir(parent)?;
        }
        self.entries_unsynced = false;
        if let Err(e) = self.write_meta() {
            self.entries_unsynced = true;
            return Err(e);
        }
        Ok(())
    }

    fn snapshot_offsets(&self) -> Result<Vec<i64>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir)
            .map_err(|e| Error::io(self.dir.display().to_string(), e))?
        {
            let entry = entry.map_err(|e| Error::io(self.dir.display().to_string(), e))?;
            let name = entry.file_name().to_string_lossy().to_string();
            if let Some(stem) = name.strip_suffix(".snapshot") {
                if let Ok(o) = stem.parse::<i64>() {
                    out.push(o);
                }
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// Offset of the oldest producer-state snapshot on disk.
    pub(crate) fn oldest_snapshot(&self) -> Result<Option<i64>> {
        Ok(self.snapshot_offsets()?.first().copied())
    }

    /// Load the newest usable producer-state snapshot, then replay batch headers after it.
    fn load_producer_state(&mut self) -> Result<()> {
        let leo = self.log_end_offset();
        let mut from = self.log_start_offset.min(self.first_segment_base());
        let mut table = ProducerStateTable::default();
        for off in self.snapshot_offsets()?.into_iter().rev() {
            let path = self.dir.join(snapshot_name(off));
            if off > leo {
                // The log was truncated below this snapshot: it describes batches that are gone.
                let _ = std::fs::remove_file(&path);
                continue;
            }
            let parsed = std::fs::read(&path)
                .ok()
                .and_then(|raw| serde_json::from_slice::<Snapshot>(&raw).ok())
                .filter(|s| s.version <= SNAPSHOT_VERSION);
            match parsed {
                Some(s) => {
                    table = s.table;
                    from = s.offset;
                    break;
                }
                None => {
                    tracing::warn!(path = %path.display(), "ignoring unreadable producer snapshot");
                }
            }
        }
        // Markers above the snapshot may have aborted transactions whose index entries a
        // crash lost: replaying them finds those again.
        let mut found = Vec::new();
        for seg in self.segments.values() {
            if seg.next_offset <= from {
                continue;
            }
            for loc in seg.batches()? {
                if loc.header.last_offset() >= from {
                    let done = txn::fold(&mut table, &loc.header, || {
                        seg.read(loc.position, loc.header.total_len())
                    })?;
                    if let Some(done) = done {
                        found.push((seg.base_offset, done, table.first_unstable_offset()));
                    }
                }
            }
        }
        self.producers = table;
        for (base, done, unstable) in found {
            if done.marker == Marker::Abort && !self.txns.contains(done.last_offset) {
                self.txns
                    .add(&self.dir, base, aborted_entry(&done, unstable))?;
            }
        }
        Ok(())
    }

    /// Write a producer-state snapshot at the current log end, keeping the two newest.
    /// The aborted-transaction entries below it are made durable first (the snapshot's
    /// offset is where replay at open starts looking for them).
    pub fn snapshot_producers(&mut self) -> Result<()> {
        self.materialize()?;
        self.txns.sync(&self.dir)?;
        let leo = self.log_end_offset();
        let snap = Snapshot {
            version: SNAPSHOT_VERSION,
            offset: leo,
            table: self.producers.clone(),
        };
        let bytes = serde_json::to_vec(&snap).expect("serializable");
        fsutil::write_atomic(&self.dir.join(snapshot_name(leo)), &bytes)?;
        let offsets = self.snapshot_offsets()?;
        if offsets.len() > 2 {
            for off in &offsets[..offsets.len() - 2] {
                let _ = std::fs::remove_file(self.dir.join(snapshot_name(*off)));
            }
        }
        Ok(())
    }

    fn first_segment_base(&self) -> i64 {
        *self.segments.keys().next().expect("at least one segment")
    }

    fn active(&self) -> &Segment {
        self.segments
            .values()
            .next_back()
            .expect("at least one segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .values_mut()
            .next_back()
            .expect("at least one segment")
    }

    /// The topic id this partition belongs to.
    pub fn topic_id(&self) -> uuid::Uuid {
        self.topic_id
    }

    /// One past the last offset written.
    pub fn log_end_offset(&self) -> i64 {
        self.active().next_offset
    }

    /// First offset still readable.
    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }

    /// Total bytes on disk in segments.
    pub fn size_bytes(&self) -> u64 {
        self.segments.values().map(|s| s.size()).sum()
    }

    /// Number of segments.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// The effective config.
    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Replace the effective config (takes effect on the next append or retention pass).
    pub fn set_config(&mut self, config: LogConfig) {
        self.config = config;
    }

    /// Offset below which data is known to be fsynced.
    pub fn durable_offset(&self) -> i64 {
        self.durable_offset
    }

    /// The latest leader epoch written to this log, if any.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.epochs.last().map(|(e, _)| *e)
    }

    /// The leader-epoch history: (epoch, first offset written in it), ascending.
    pub fn epochs(&self) -> &[(i32, i64)] {
        &self.epochs
    }

    /// Tiered storage hook: everything below `offset` is in the bucket's manifest.
    pub fn set_remote_upto(&mut self, offset: Option<i64>) {
        self.remote_upto = offset;
    }

    /// Offset, size and max timestamp of every segment, the active one last.
    pub fn segment_summaries(&self) -> Vec<SegmentSummary> {
        self.segments
            .values()
            .map(|s| SegmentSummary {
                base_offset: s.base_offset,
                next_offset: s.next_offset,
                size: s.size(),
                max_timestamp: s.max_timestamp,
            })
            .collect()
    }

    /// Tiered storage hook (restore): start a partition directory whose data lives in the
    /// bucket up to `start`: an empty log at `start` with the given epoch history and
    /// producer state, so appends continue at the right offset and sequence.
    pub fn create_restored(
        dir: &Path,
        topic_id: uuid::Uuid,
        config: LogConfig,
        start: i64,
        epochs: Vec<(i32, i64)>,
        producers: ProducerStateTable,
    ) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir.display().to_string(), e))?;
        let mut seg = Segment::create(dir, start, config.index_interval_bytes)?;
        seg.sync()?;
        let snap = Snapshot {
            version: SNAPSHOT_VERSION,
            offset: start,
            table: producers,
        };
        let bytes = serde_json::to_vec(&snap).expect("serializable");
        fsutil::write_atomic(&dir.join(snapshot_name(start)), &bytes)?;
        let meta = PartitionMeta {
            version: META_VERSION,
            topic_id,
            log_start_offset: start,
            epochs,
            entries_unsynced: false,
        };
        let bytes = serde_json::to_vec_pretty(&meta).expect("serializable");
        fsutil::write_atomic(&dir.join(META_FILE), &bytes)?;
        if let Some(parent) = dir.parent() {
            fsutil::sync_dir(parent)?;
        }
        drop(seg);
        Self::open(dir, topic_id, config, false)
    }

    /// Check a validated record set against topic limits and producer state, assign offsets,
    /// and append it. `data` is left as it is: the log gets a patched copy of each batch
    /// header followed by the rest of the batch from `data`.
    pub fn append(
        &mut self,
        data: &[u8],
        spans: &[BatchSpan],
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo> {
        if let Some(reason) = &self.poisoned {
            return Err(Error::StorageFailed(reason.clone()));
        }
        self.materialize()?;
        for s in spans {
            let size = s.header.total_len();
            if size > self.config.max_message_bytes {
                return Err(Error::MessageTooLarge {
                    size,
                    max: self.config.max_message_bytes,
                });
            }
            if s.header.is_control() {
                return Err(Error::InvalidRecord(
                    "clients may not write control records".into(),
                ));
            }
            if s.header.is_transactional() && !s.header.has_producer_id() {
                return Err(Error::InvalidRecord(
                    "a transactional batch needs a producer id".into(),
                ));
            }
        }
        if self.config.compact && spans.iter().any(|s| s.any_null_key) {
            return Err(Error::InvalidRecord(
                "compacted topic cannot accept a record without a key".into(),
            ));
        }
        // Idempotence: all batches of a request share one producer in practice; check each.
        let mut duplicate_of = None;
        for s in spans {
            match self.producers.check(&s.header)? {
                SequenceCheck::Append => {}
                SequenceCheck::Duplicate(meta) => duplicate_of = Some(meta),
            }
        }
        if let Some(meta) = duplicate_of {
            if spans.len() == 1 {
                return Ok(AppendInfo {
                    base_offset: meta.first_offset,
                    last_offset: meta.last_offset,
                    log_append_time: if self.config.log_append_time {
                        meta.timestamp
                    } else {
                        -1
                    },
                    duplicate: true,
                });
            }
            return Err(Error::InvalidRecord(
                "duplicate batch inside a multi-batch request".into(),
            ));
        }
        self.write_batches(data, spans, &[], leader_epoch, now_ms)
    }

    /// Append the control batch that ends `producer_id`'s transaction in this partition
    /// (the coordinator's WriteTxnMarkers). A marker from an older producer epoch or an
    /// older coordinator is refused. Returns the marker's offset.
    pub fn append_marker(
        &mut self,
        marker: Marker,
        producer_id: i64,
        producer_epoch: i16,
        coordinator_epoch: i32,
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo> {
        if let Some(reason) = &self.poisoned {
            return Err(Error::StorageFailed(reason.clone()));
        }
        self.producers
            .check_marker(producer_id, producer_epoch, coordinator_epoch)?;
        self.materialize()?;
        let data = txn::marker_batch(
            marker,
            producer_id,
            producer_epoch,
            coordinator_epoch,
            now_ms,
        )?;
        let spans = batch::validate_produce_records(&data)?;
        self.write_batches(
            &data,
            &spans,
            &[Some((marker, coordinator_epoch))],
            leader_epoch,
            now_ms,
        )
    }

    /// Assign offsets to checked batches and append them; `markers` holds what the control
    /// batches among them say (by position; missing entries are data batches).
    fn write_batches(
        &mut self,
        data: &[u8],
        spans: &[BatchSpan],
        markers: &[Option<(Marker, i32)>],
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo> {
        let total: usize = spans.iter().map(|s| s.header.total_len()).sum();
        let first_max_ts = if self.config.log_append_time {
            now_ms
        } else {
            spans
                .iter()
                .map(|s| s.header.max_timestamp)
                .max()
                .unwrap_or(now_ms)
        };
        if self.should_roll(total, first_max_ts) {
            self.roll()?;
        }

        let base_offset = self.log_end_offset();
        let log_append_time = self.config.log_append_time.then_some(now_ms);
        let mut next = base_offset;
        // Only the headers change: patch copies of them and write the producer's bytes for
        // the rest, instead of copying the whole record set to patch it in place.
        let mut patched = Vec::with_capacity(spans.len());
        let mut headers: Vec<(BatchHeader, usize)> = Vec::with_capacity(spans.len());
        let mut written = 0usize;
        for s in spans {
            let len = s.header.total_len();
            let b = &data[s.position..s.position + len];
            let header = batch::patched_header(b, next, leader_epoch, log_append_time);
            let h = batch::parse_header(&header)?.expect("validated header");
            patched.push(header);
            headers.push((h, written));
            next = h.last_offset() + 1;
            written += len;
        }
        let mut pieces = Vec::with_capacity(2 * spans.len());
        for (s, header) in spans.iter().zip(&patched) {
            let body = s.position + batch::HEADER_LEN..s.position + s.header.total_len();
            pieces.push(IoSlice::new(header));
            pieces.push(IoSlice::new(&data[body]));
        }
        if let Err(e) = self.active_mut().append_vectored(&mut pieces, &headers) {
            tracing::error!(dir = %self.dir.display(), error = %e, "append failed; partition refuses writes until restart");
            if !matches!(&e, Error::Io { source, .. } if source.raw_os_error() == Some(libc::ENOSPC))
            {
                self.poisoned = Some(e.to_string());
            }
            return Err(e);
        }
        let active_base = self.active().base_offset;
        for (i, (h, _)) in headers.iter().enumerate() {
            let marker = markers.get(i).copied().flatten();
            if let Some(done) = self.producers.record(h, marker) {
                self.note_completed(active_base, &done)?;
            }
        }
        if self.epochs.last().map(|(e, _)| *e) != Some(leader_epoch) {
            self.epochs.push((leader_epoch, base_offset));
            self.write_meta()?;
        }
        self.dirty_bytes += total as u64;
        Ok(AppendInfo {
            base_offset,
            last_offset: next - 1,
            log_append_time: if self.config.log_append_time {
                now_ms
            } else {
                -1
            },
            duplicate: false,
        })
    }

    fn should_roll(&self, incoming: usize, incoming_max_ts: i64) -> bool {
        let a = self.active();
        if a.is_empty() {
            return false;
        }
        if a.size() + incoming as u64 > self.config.segment_bytes {
            return true;
        }
        if let Some(first) = a.first_batch_timestamp {
            if incoming_max_ts.saturating_sub(first) > self.config.segment_ms {
                return true;
            }
        }
        // Relative offsets in the index are u32.
        self.log_end_offset() - a.base_offset > (u32::MAX / 2) as i64
    }

    /// Close the active segment (fsync it) and start a new one at the log end.
    pub fn roll(&mut self) -> Result<()> {
        let leo = self.log_end_offset();
        if self.active().is_empty() {
            return Ok(());
        }
        self.sync_entries()?;
        self.active_mut().sync()?;
        let seg = Segment::create(&self.dir, leo, self.config.index_interval_bytes)?;
        fsutil::sync_dir(&self.dir)?;
        self.segments.insert(leo, Box::new(seg));
        self.snapshot_producers()?;
        self.durable_offset = self.durable_offset.max(leo);
        Ok(())
    }

    /// Index a transaction a marker in the segment at `segment_base` ended, if it aborted.
    fn note_completed(&mut self, segment_base: i64, done: &CompletedTxn) -> Result<()> {
        if done.marker != Marker::Abort {
            return Ok(());
        }
        let entry = aborted_entry(done, self.producers.first_unstable_offset());
        self.txns.add(&self.dir, segment_base, entry)
    }

    /// The first offset of the oldest open transaction, if any (the last stable offset
    /// cannot pass it).
    pub fn first_unstable_offset(&self) -> Option<i64> {
        self.producers.first_unstable_offset()
    }

    /// Aborted transactions that may have records in `[from, upto)`, for a read_committed
    /// fetch.
    pub fn aborted_between(&self, from: i64, upto: i64) -> Vec<AbortedTxn> {
        self.txns.overlapping(from, upto)
    }

    /// Forget producers idle for `expiration_ms` with no transaction open
    /// (producer.id.expiration.ms); returns how many went. The next snapshot leaves them
    /// out; one loaded from before is expired again at the next check.
    pub fn expire_producers(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        self.producers.expire(now_ms, expiration_ms)
    }

    /// The producer state (DescribeProducers).
    pub fn producers(&self) -> &ProducerStateTable {
        &self.producers
    }

    /// Handle for an fsync of the active segment taken outside the partition lock; returns
    /// the file and the offset it makes durable.
    pub fn sync_handle(&self) -> Result<(Arc<File>, i64)> {
        Ok((self.active().file()?, self.log_end_offset()))
    }

    /// Record that everything below `offset` is fsynced.
    pub fn mark_durable(&mut self, offset: i64) {
        self.durable_offset = self.durable_offset.max(offset);
    }

    /// Mark the log failed (after an fsync error): appends are refused from now on.
    pub fn poison(&mut self, reason: String) {
        self.poisoned = Some(reason);
    }

    /// Plan a fetch read from `offset`, up to `max_bytes` (always at least one whole batch when
    /// `min_one`), not past `upper` (exclusive).
    pub fn plan_read(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one: bool,
        upper: i64,
    ) -> Result<Option<ReadPlan>> {
        let leo = self.log_end_offset();
        if offset < self.log_start_offset || offset > leo {
            return Err(Error::OffsetOutOfRange {
                offset,
                start: self.log_start_offset,
                end: leo,
            });
        }
        if offset >= upper {
            return Ok(None);
        }
        let iter = self
            .segments
            .range(..=offset)
            .next_back()
            .into_iter()
            .chain(self.segments.range(offset + 1..));
        for (_, seg) in iter {
            let Some(first) = seg.locate(offset)? else {
                continue;
            };
            let start = first.position;
            let mut end = start;
            let mut pos = start;
            while let Some(h) = seg.header_at(pos)? {
                if h.base_offset >= upper {
                    break;
                }
                let len = h.total_len() as u64;
                if pos + len > seg.size() {
                    break;
                }
                let taken = (end - start) as usize;
                if taken + len as usize > max_bytes && !(min_one && taken == 0) {
                    break;
                }
                end = pos + len;
                pos = end;
            }
            if end == start {
                return Ok(None);
            }
            return Ok(Some(ReadPlan {
                file: seg.file()?,
                position: start,
                len: (end - start) as usize,
            }));
        }
        Ok(None)
    }

    /// ListOffsets by time: (offset, timestamp) of the first record at or after the log
    /// start whose timestamp is at least `ts` (the first batch whose max timestamp reaches
    /// `ts`, found through the time index, then the first such record in it).
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(i64, i64)>> {
        let start = self.log_start_offset;
        for seg in self.segments.values() {
            if seg.max_timestamp < ts || seg.next_offset <= start {
                continue;
            }
            let Some(loc) = seg.locate_time(ts)? else {
                continue;
            };
            let mut pos = loc.position;
            while let Some(h) = seg.header_at(pos)? {
                if h.max_timestamp >= ts && h.last_offset() >= start {
                    let raw = seg.read(pos, h.total_len())?;
                    let set = super::records::decode_batch(&raw)?;
                    if let Some(found) =
                        super::records::first_record_at_or_after(&h, &set, ts, start)
                    {
                        return Ok(Some(found));
                    }
                }
                pos += h.total_len() as u64;
            }
        }
        Ok(None)
    }

    /// Largest batch timestamp of any non-empty segment (None when the log is empty).
    pub fn max_timestamp(&self) -> Option<i64> {
        self.segments
            .values()
            .filter(|s| !s.is_empty())
            .map(|s| s.max_timestamp)
            .max()
    }

    /// (offset, timestamp) of the record with the largest timestamp.
    pub fn max_timestamp_offset(&self) -> Result<Option<(i64, i64)>> {
        let Some(seg) = self
            .segments
            .values()
            .filter(|s| !s.is_empty())
            .max_by_key(|s| s.max_timestamp)
        else {
            return Ok(None);
        };
        let Some(loc) = seg.locate(seg.offset_of_max_timestamp)? else {
            return Ok(None);
        };
        let raw = seg.read(loc.position, loc.header.total_len())?;
        let set = super::records::decode_batch(&raw)?;
        Ok(super::records::max_timestamp_record(&loc.header, &set))
    }

    /// Kafka's OffsetForLeaderEpoch answer: the largest epoch <= `epoch` and its end offset.
    pub fn epoch_end_offset(&self, epoch: i32) -> (i32, i64) {
        let leo = self.log_end_offset();
        match self.epochs.iter().rposition(|(e, _)| *e <= epoch) {
            None => (-1, -1),
            Some(i) => {
                let end = self
                    .epochs
                    .get(i + 1)
                    .map(|(_, start)| *start)
                    .unwrap_or(leo);
                (self.epochs[i].0, end)
            }
        }
    }

    /// Advance the log start offset (DeleteRecords); returns the new start.
    pub fn delete_records_before(&mut self, offset: i64) -> Result<i64> {
        let leo = self.log_end_offset();
        if offset > leo || offset < 0 {
            return Err(Error::OffsetOutOfRange {
                offset,
                start: self.log_start_offset,
                end: leo,
            });
        }
        if offset > self.log_start_offset {
            let previous = self.log_start_offset;
            self.log_start_offset = offset;
            if let Err(first) = self.write_meta() {
                // On a full disk the metadata cannot be rewritten until space is freed:
                // dropping the segments below the new start frees it, then retry.
                self.delete_segments_below_start()?;
                if self.write_meta().is_err() {
                    self.log_start_offset = previous.max(self.first_segment_base());
                    return Err(first);
                }
                return Ok(self.log_start_offset);
            }
            self.delete_segments_below_start()?;
        }
        Ok(self.log_start_offset)
    }

    fn delete_segments_below_start(&mut self) -> Result<()> {
        let start = self.log_start_offset;
        let doomed: Vec<i64> = self
            .segments
            .iter()
            .filter(|(_, s)| s.next_offset <= start && !s.is_empty())
            .map(|(b, _)| *b)
            .collect();
        let active_base = self.active().base_offset;
        for b in doomed {
            if b == active_base {
                self.roll()?;
            }
            if let Some(s) = self.segments.remove(&b) {
                s.delete();
            }
        }
        self.txns.drop_below(self.first_segment_base());
        Ok(())
    }

    /// The retention limits this log's own copy is held to.
    /// Whether retention deletes local segments: with `cleanup.policy=delete`, and with
    /// tiering whatever the policy (local retention moves a compacted log's old segments to
    /// the bucket, where it is compacted on).
    fn deletes_segments(&self) -> bool {
        self.config.delete || self.config.remote_storage
    }

    fn retention_limits(&self, now_ms: i64) -> retention::Limits {
        // Tiered storage hook: with remote storage the local tier keeps local.retention.*
        // (total retention is the uploader's job).
        let (retention_ms, retention_bytes) = if self.config.remote_storage {
            (
                self.config.local_retention_ms,
                self.config.local_retention_bytes,
            )
        } else {
            (self.config.retention_ms, self.config.retention_bytes)
        };
        retention::Limits {
            retention_ms,
            retention_bytes,
            now_ms,
            log_start_offset: self.log_start_offset,
        }
    }

    /// Tiered storage hook: the offset below which retention would delete local segments
    /// if the bucket held all of them (None: it would delete nothing). A follower reads the
    /// manifest only when this passes what it knows the manifest covers.
    pub fn retention_wants_upto(&self, now_ms: i64) -> Option<i64> {
        if !self.deletes_segments() {
            return None;
        }
        let summaries = self.segment_summaries();
        let n = retention::deletable_prefix(&summaries, self.retention_limits(now_ms));
        n.checked_sub(1).map(|last| summaries[last].next_offset)
    }

    /// Tiered storage hook: the offset below which every segment is known to be in the
    /// bucket's manifest (None: not known yet).
    pub fn remote_upto(&self) -> Option<i64> {
        self.remote_upto
    }

    /// The latest offset of every key in the batches that end at `offset` or later (for
    /// compacting the bucket's copy against the local tail).
    pub fn keys_from(&self, offset: i64) -> Result<std::collections::HashMap<bytes::Bytes, i64>> {
        let mut latest = std::collections::HashMap::new();
        for seg in self.segments.values().filter(|s| s.next_offset > offset) {
            for loc in seg.batches()? {
                if loc.header.last_offset() >= offset {
                    let raw = seg.read(loc.position, loc.header.total_len())?;
                    super::compaction::note_keys(&raw, &mut latest, None)?;
                }
            }
        }
        Ok(latest)
    }

    /// How many leading segments retention deletes now (of `summaries`, this log's).
    fn deletable(&self, summaries: &[SegmentSummary], now_ms: i64) -> usize {
        if !self.deletes_segments() {
            return 0;
        }
        let n = retention::deletable_prefix(summaries, self.retention_limits(now_ms));
        // Tiered storage hook: a segment goes only once the bucket's manifest holds it.
        if self.config.remote_storage {
            return retention::cap_prefix(summaries, n, self.remote_upto);
        }
        n
    }

    /// Whether `apply_retention` would delete anything now (a cheap check before it).
    pub fn retention_due(&self, now_ms: i64) -> bool {
        self.deletable(&self.segment_summaries(), now_ms) > 0
    }

    /// Apply time and size retention; returns how many segments were deleted.
    pub fn apply_retention(&mut self, now_ms: i64) -> Result<usize> {
        let summaries = self.segment_summaries();
        let n = self.deletable(&summaries, now_ms);
        if n == 0 {
            return Ok(0);
        }
        if n == summaries.len() {
            self.roll()?;
        }
        for s in &summaries[..n] {
            if let Some(seg) = self.segments.remove(&s.base_offset) {
                seg.delete();
            }
        }
        let new_start = self.first_segment_base().max(self.log_start_offset);
        if new_start != self.log_start_offset {
            self.log_start_offset = new_start;
        }
        self.txns.drop_below(self.first_segment_base());
        self.write_meta()?;
        tracing::info!(dir = %self.dir.display(), deleted = n, log_start = self.log_start_offset, "retention deleted segments");
        Ok(n)
    }

    /// Bytes written since the last compaction and the total size of closed segments.
    pub fn dirty_ratio(&self) -> f64 {
        let closed: u64 = self.segments.values().rev().skip(1).map(|s| s.size()).sum();
        if closed == 0 {
            return 0.0;
        }
        (self.dirty_bytes as f64 / closed as f64).min(1.0)
    }

    /// Closed segments (everything but the active one), for the compactor.
    pub(crate) fn closed_segments(&self) -> impl Iterator<Item = &Segment> {
        let n = self.segments.len();
        self.segments
            .values()
            .take(n.saturating_sub(1))
            .map(|s| s.as_ref())
    }

    /// Swap a compacted segment file in place of the segment at `base`.
    pub(crate) fn replace_segment(&mut self, base: i64, cleaned: &Path) -> Result<()> {
        let target = self.dir.join(segment::log_name(base));
        let _ = std::fs::remove_file(self.dir.join(format!("{base:020}.index")));
        let _ = std::fs::remove_file(self.dir.join(format!("{base:020}.timeindex")));
        std::fs::rename(cleaned, &target)
            .map_err(|e| Error::io(target.display().to_string(), e))?;
        fsutil::sync_dir(&self.dir)?;
        let mut seg = Segment::open(&self.dir, base, self.config.index_interval_bytes, true)?;
        seg.sync()?;
        self.segments.insert(base, Box::new(seg));
        Ok(())
    }

    /// Drop a closed segment that compaction emptied.
    pub(crate) fn remove_segment(&mut self, base: i64) -> Result<()> {
        if let Some(seg) = self.segments.remove(&base) {
            seg.delete();
        }
        fsutil::sync_dir(&self.dir)
    }

    /// Forget the aborted transactions whose abort markers at `markers`, in the segment
    /// `[base, next_offset)`, compaction removed.
    pub(crate) fn forget_aborted(
        &mut self,
        base: i64,
        next_offset: i64,
        markers: &[i64],
    ) -> Result<()> {
        self.txns.remove(&self.dir, base..next_offset, markers)
    }

    /// When the markers compaction found removable were first found so (its memory
    /// between passes; not persisted).
    pub(crate) fn take_removable_markers(&mut self) -> BTreeMap<i64, i64> {
        std::mem::take(&mut self.removable_markers)
    }

    pub(crate) fn set_removable_markers(&mut self, markers: BTreeMap<i64, i64>) {
        self.removable_markers = markers;
    }

    /// Reset the dirty counter after a compaction pass.
    pub(crate) fn mark_clean(&mut self) {
        self.dirty_bytes = 0;
    }

    /// Directory of this partition.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// fsync everything and snapshot producer state (clean shutdown). What is durable
    /// already is not synced or written again: a node stopping with thousands of idle
    /// partitions would otherwise spend seconds in fsyncs that change nothing.
    pub fn close(&mut self) -> Result<()> {
        let leo = self.log_end_offset();
        if self.entries_unsynced && leo == 0 {
            // Never written: nothing to make durable (a crash losing these files loses
            // nothing), so a node stopping after creating thousands of partitions does not
            // spend seconds in fsyncs. One never written here has no directory at all.
            return self.write_meta();
        }
        self.sync_entries()?;
        if self.durable_offset < leo {
            self.active_mut().sync()?;
            self.durable_offset = leo;
        } else {
            self.active_mut().sync_indexes()?;
        }
        if self.snapshot_offsets()?.last() != Some(&leo) {
            self.snapshot_producers()?;
        }
        self.write_meta()
    }
}

/// The index entry of an aborted transaction; `unstable` is the first offset of a
/// transaction still open after it (the last stable offset then).
fn aborted_entry(done: &CompletedTxn, unstable: Option<i64>) -> AbortedTxn {
    AbortedTxn {
        producer_id: done.producer_id,
        first_offset: done.first_offset,
        last_offset: done.last_offset,
        last_stable_offset: unstable.unwrap_or(done.last_offset + 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::tests::{make_batch, make_batch_keyed};

    fn cfg() -> LogConfig {
        LogConfig {
            segment_bytes: 400,
            index_interval_bytes: 100,
            ..LogConfig::default()
        }
    }

    fn append(log: &mut PartitionLog, b: Vec<u8>) -> Result<AppendInfo> {
        let spans = batch::validate_produce_records(&b)?;
        log.append(&b, &spans, 0, fsutil::now_ms())
    }

    fn read_all(log: &PartitionLog, from: i64) -> Vec<i64> {
        let mut out = Vec::new();
        let mut off = from;
        while let Some(plan) = log
            .plan_read(off, 1 << 20, true, log.log_end_offset())
            .unwrap()
        {
            let bytes = plan.read().unwrap();
            let spans = batch::validate_produce_records(&bytes).unwrap();
            for s in spans {
                for o in s.header.base_offset..=s.header.last_offset() {
                    if o >= from {
                        out.push(o);
                    }
                }
                off = s.header.last_offset() + 1;
            }
        }
        out
    }

    /// A transactional batch of `n` records of producer `pid` (epoch 0) from `seq`.
    fn txn_batch(pid: i64, seq: i32, n: usize) -> Vec<u8> {
        let kv = vec![(None, Some(&b"v"[..])); n];
        crate::log::batch::tests::make_txn_batch(kv, fsutil::now_ms(), pid, seq)
    }

    #[test]
    fn transactions_hold_the_stable_offset_and_aborts_survive_a_crash_and_a_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t-0");
        let id = uuid::Uuid::new_v4();
        let now = fsutil::now_ms();
        let mut log = PartitionLog::open(&path, id, cfg(), false).unwrap();
        // Producer 1 aborts offsets 0..3; producer 2 opens at 3 and stays open.
        append(&mut log, txn_batch(1, 0, 3)).unwrap();
        append(&mut log, txn_batch(2, 0, 2)).unwrap();
        assert_eq!(log.first_unstable_offset(), Some(0));
        let abort = log.append_marker(Marker::Abort, 1, 0, 0, 0, now).unwrap();
        assert_eq!(abort.base_offset, 5);
        assert_eq!(log.first_unstable_offset(), Some(3));
        let got = log.aborted_between(0, 10);
        assert_eq!(got.len(), 1);
        assert_eq!(
            (got[0].producer_id, got[0].first_offset, got[0].last_offset),
            (1, 0, 5)
        );
        assert!(log.aborted_between(6, 10).is_empty());
        // Clients may not write markers; an older coordinator or epoch is fenced.
        let marker = txn::marker_batch(Marker::Commit, 2, 0, 0, now).unwrap();
        assert!(matches!(
            append(&mut log, marker),
            Err(Error::InvalidRecord(_))
        ));
        log.append_marker(Marker::Commit, 2, 0, 3, 0, now).unwrap();
        assert_eq!(log.first_unstable_offset(), None);
        assert!(log.append_marker(Marker::Commit, 2, 0, 2, 0, now).is_err());
        let leo = log.log_end_offset();
        drop(log); // a crash: no clean close, and the unsynced index entry lost with it
        for e in std::fs::read_dir(&path).unwrap().flatten() {
            if e.file_name().to_string_lossy().ends_with(".txnindex") {
                std::fs::remove_file(e.path()).unwrap();
            }
        }
        let mut log = PartitionLog::open(&path, id, cfg(), true).unwrap();
        assert_eq!(log.log_end_offset(), leo);
        assert_eq!(log.aborted_between(0, 10).len(), 1);
        assert_eq!(log.first_unstable_offset(), None);
        // Cutting off producer 2's commit marker reopens its transaction.
        log.truncate_to(6).unwrap();
        assert_eq!(log.first_unstable_offset(), Some(3));
        // Cutting off the abort marker forgets the abort.
        log.truncate_to(5).unwrap();
        assert!(log.aborted_between(0, 10).is_empty());
        assert_eq!(log.first_unstable_offset(), Some(0));
        log.close().unwrap();
        let log = PartitionLog::open(&path, id, cfg(), true).unwrap();
        assert!(log.aborted_between(0, 10).is_empty());
        assert_eq!(log.first_unstable_offset(), Some(0));
    }

    #[test]
    fn a_fresh_partition_defers_its_fsyncs_until_its_data_is_synced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t-0");
        let id = uuid::Uuid::new_v4();
        let mut log = PartitionLog::open(&path, id, cfg(), false).unwrap();
        assert!(log.entries_unsynced, "created here: nothing fsynced yet");
        log.begin_epoch(1).unwrap();
        log.close().unwrap();
        assert!(
            log.entries_unsynced,
            "no data: a clean close has nothing to make durable"
        );
        assert!(!path.exists(), "never written: nothing on disk");
        drop(log);
        let mut log = PartitionLog::open(&path, id, cfg(), true).unwrap();
        let now = fsutil::now_ms();
        append(&mut log, make_batch(&[b"x"], now, -1, -1)).unwrap();
        log.close().unwrap();
        assert!(
            !log.entries_unsynced,
            "with data, a clean close makes it durable"
        );
        drop(log);
        let log = PartitionLog::open(&path, id, cfg(), true).unwrap();
        assert!(!log.entries_unsynced, "reopened: it was durable");
        assert_eq!(log.log_end_offset(), 1);

        // A fresh one is made durable by its first roll, before its data's fsync.
        let path = dir.path().join("t-1");
        let mut log = PartitionLog::open(&path, id, cfg(), false).unwrap();
        for _ in 0..10 {
            append(&mut log, make_batch(&[b"0123456789abcdef"], now, -1, -1)).unwrap();
        }
        assert!(log.segment_count() > 1);
        assert!(!log.entries_unsynced);

        // Killed before its first fsync: the next run still knows nothing is durable.
        let path = dir.path().join("t-2");
        let mut log = PartitionLog::open(&path, id, cfg(), false).unwrap();
        log.begin_epoch(3).unwrap();
        let b = make_batch(&[b"x"], now, -1, -1);
        let spans = batch::validate_produce_records(&b).unwrap();
        log.append(&b, &spans, 3, now).unwrap();
        drop(log);
        // As if partition.json had not reached the disk: the epoch comes from the batch.
        std::fs::remove_file(path.join(META_FILE)).unwrap();
        let mut log = PartitionLog::open(&path, id, cfg(), true).unwrap();
        assert!(log.entries_unsynced);
        assert_eq!(log.epochs(), &[(3, 0)]);
        log.sync_entries().unwrap();
        drop(log);
        let log = PartitionLog::open(&path, id, cfg(), true).unwrap();
        assert!(!log.entries_unsynced);
        assert_eq!(log.log_end_offset(), 1);
    }

    #[test]
    fn unreadable_metadata_is_refused_unless_the_partition_has_no_data() {
        let dir = tempfile::tempdir().unwrap();
        let id = uuid::Uuid::new_v4();
        // A crash right after creation can leave partition.json empty: no data, so the
        // partition starts afresh under the controller's topic id.
        let empty = dir.path().join("empty-0");
        let mut log = PartitionLog::open(&empty, id, cfg(), false).unwrap();
        log.materialize().unwrap();
        drop(log);
        std::fs::write(empty.join(META_FILE), b"").unwrap();
        let log = PartitionLog::open(&empty, id, cfg(), true).unwrap();
        assert_eq!((log.topic_id(), log.log_end_offset()), (id, 0));
        drop(log);
        assert!(!std::fs::read(empty.join(META_FILE)).unwrap().is_empty());

        // With data, torn metadata is an error, never silently replaced.
        let full = dir.path().join("full-0");
        let mut log = PartitionLog::open(&full, id, cfg(), false).unwrap();
        append(&mut log, make_batch(&[b"x"], fsutil::now_ms(), -1, -1)).unwrap();
        log.close().unwrap();
        drop(log);
        std::fs::write(full.join(META_FILE), b"{\"vers").unwrap();
        assert!(matches!(
            PartitionLog::open(&full, id, cfg(), true),
            Err(Error::CorruptMetadata { .. })
        ));
    }

    #[test]
    fn append_roll_read_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let id = uuid::Uuid::new_v4();
        let mut log = PartitionLog::open(dir.path(), id, cfg(), false).unwrap();
        let now = fsutil::now_ms();
        for i in 0..40 {
            let info = append(
                &mut log,
                make_batch(&[b"0123456789", b"abcdefghij"], now, -1, -1),
            )
            .unwrap();
            assert_eq!(info.base_offset, i * 2);
        }
        assert!(log.segment_count() > 3, "rolled by segment.bytes");
        assert_eq!(read_all(&log, 0), (0..80).collect::<Vec<_>>());
        assert_eq!(read_all(&log, 33), (33..80).collect::<Vec<_>>());
        log.close().unwrap();
        drop(log);
        let log = PartitionLog::open(dir.path(), id, cfg(), true).unwrap();
        assert_eq!(log.log_end_offset(), 80);
        assert_eq!(read_all(&log, 0).len(), 80);
        assert!(matches!(
            log.plan_read(81, 100, true, 80),
            Err(Error::OffsetOutOfRange { .. })
        ));
    }

    #[test]
    fn idempotent_duplicates_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let id = uuid::Uuid::new_v4();
        let mut log = PartitionLog::open(dir.path(), id, cfg(), false).unwrap();
        append(&mut log, make_batch(&[b"a", b"b"], 1, 5, 0)).unwrap();
        append(&mut log, make_batch(&[b"c"], 1, 5, 2)).unwrap();
        drop(log); // no clean close: state must be rebuilt from the log
        let mut log = PartitionLog::open(dir.path(), id, cfg(), true).unwrap();
        let dup = append(&mut log, make_batch(&[b"c"], 1, 5, 2)).unwrap();
        assert!(dup.duplicate);
        assert_eq!(dup.base_offset, 2);
        assert!(matches!(
            append(&mut log, make_batch(&[b"x"], 1, 5, 9)),
            Err(Error::OutOfOrderSequence(_))
        ));
        assert_eq!(log.log_end_offset(), 3);
    }

    #[test]
    fn timestamps_and_epochs() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = PartitionLog::open(dir.path(), uuid::Uuid::new_v4(), cfg(), false).unwrap();
        append(&mut log, make_batch(&[b"a", b"b", b"c"], 1000, -1, -1)).unwrap(); // ts 1000..1002
        append(&mut log, make_batch(&[b"d"], 5000, -1, -1)).unwrap();
        assert_eq!(log.offset_for_timestamp(1001).unwrap(), Some((1, 1001)));
        assert_eq!(log.offset_for_timestamp(1003).unwrap(), Some((3, 5000)));
        assert_eq!(log.offset_for_timestamp(6000).unwrap(), None);
        assert_eq!(log.max_timestamp_offset().unwrap(), Some((3, 5000)));
        assert_eq!(log.epoch_end_offset(0), (0, 4));
        assert_eq!(log.epoch_end_offset(5), (0, 4));
    }

    #[test]
    fn time_lookup_skips_records_below_the_log_start_but_not_later_batches() {
        use crate::log::batch::tests::make_batch_stamped;
        let dir = tempfile::tempdir().unwrap();
        let mut log = PartitionLog::open(dir.path(), uuid::Uuid::new_v4(), cfg(), false).unwrap();
        append(&mut log, make_batch_stamped(&[2000, 100], b"a")).unwrap(); // offsets 0, 1
        append(&mut log, make_batch_stamped(&[1600, 1700], b"b")).unwrap(); // offsets 2, 3
        assert_eq!(log.offset_for_timestamp(1500).unwrap(), Some((0, 2000)));
        log.delete_records_before(1).unwrap();
        // The batch reaching 1500 first only does so below the start: the next one answers.
        assert_eq!(log.offset_for_timestamp(1500).unwrap(), Some((2, 1600)));
        assert_eq!(log.offset_for_timestamp(1650).unwrap(), Some((3, 1700)));
        assert_eq!(log.max_timestamp(), Some(2000));
    }

    #[test]
    fn delete_records_and_retention() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = PartitionLog::open(dir.path(), uuid::Uuid::new_v4(), cfg(), false).unwrap();
        for _ in 0..30 {
            append(
                &mut log,
                make_batch(&[b"0123456789012345678901234567890123456789"], 1000, -1, -1),
            )
            .unwrap();
        }
        let segs = log.segment_count();
        assert_eq!(log.delete_records_before(10).unwrap(), 10);
        assert!(log.segment_count() < segs);
        assert!(matches!(
            log.plan_read(5, 100, true, 30),
            Err(Error::OffsetOutOfRange { .. })
        ));
        assert_eq!(read_all(&log, 10).first(), Some(&10));
        // Everything is older than retention.ms: all segments go and the log restarts at the end.
        let mut c = cfg();
        c.retention_ms = 1000;
        log.set_config(c);
        log.apply_retention(10_000_000_000_000).unwrap();
        assert_eq!(log.log_start_offset(), 30);
        assert_eq!(log.log_end_offset(), 30);
        assert_eq!(
            append(&mut log, make_batch(&[b"x"], 1, -1, -1))
                .unwrap()
                .base_offset,
            30
        );
    }

    #[test]
    fn tiered_retention_deletes_only_what_the_manifest_holds() {
        let dir = tempfile::tempdir().unwrap();
        let c = LogConfig {
            remote_storage: true,
            local_retention_bytes: 400,
            ..cfg()
        };
        let mut log = PartitionLog::open(dir.path(), uuid::Uuid::new_v4(), c, false).unwrap();
        for _ in 0..30 {
            append(
                &mut log,
                make_batch(&[b"0123456789012345678901234567890123456789"], 1000, -1, -1),
            )
            .unwrap();
        }
        let segs = log.segment_summaries();
        assert!(segs.len() > 4, "{segs:?}");
        // Retention wants the old segments gone, but nothing is known to be in the bucket.
        let wanted = log.retention_wants_upto(0).unwrap();
        assert!(wanted > segs[1].next_offset);
        assert!(!log.retention_due(0));
        assert_eq!(log.apply_retention(0).unwrap(), 0);
        // The manifest ends inside the third segment: the first two go, no more.
        log.set_remote_upto(Some(segs[2].base_offset + 1));
        assert!(log.retention_due(0));
        assert_eq!(log.apply_retention(0).unwrap(), 2);
        assert_eq!(log.log_start_offset(), segs[2].base_offset);
        assert!(!log.retention_due(0));
        // Covered entirely: retention stops at local.retention.bytes, never the active one.
        log.set_remote_upto(Some(log.log_end_offset()));
        log.apply_retention(0).unwrap();
        assert!(log.size_bytes() >= 400);
        assert_eq!(log.retention_wants_upto(0), None);
        assert_eq!(read_all(&log, log.log_start_offset()).last(), Some(&29));
    }

    #[test]
    fn message_too_large_and_compact_needs_keys() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = cfg();
        c.max_message_bytes = 100;
        c.compact = true;
        let mut log = PartitionLog::open(dir.path(), uuid::Uuid::new_v4(), c, false).unwrap();
        let big = vec![b'x'; 200];
        assert!(matches!(
            append(
                &mut log,
                make_batch_keyed(vec![(Some(b"k"), Some(&big))], 1, -1, -1)
            ),
            Err(Error::MessageTooLarge { .. })
        ));
        assert!(matches!(
            append(&mut log, make_batch(&[b"v"], 1, -1, -1)),
            Err(Error::InvalidRecord(_))
        ));
        append(
            &mut log,
            make_batch_keyed(vec![(Some(b"k"), Some(b"v"))], 1, -1, -1),
        )
        .unwrap();
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use crate::log::batch::tests::make_batch;
    use bytes::Bytes;
    use kafka_protocol::records::RecordBatchDecoder;
    use proptest::prelude::*;

    fn values_from(log: &PartitionLog, from: i64) -> Vec<(i64, Vec<u8>)> {
        let mut out = Vec::new();
        let mut off = from;
        while let Some(plan) = log
            .plan_read(off, 1 << 16, true, log.log_end_offset())
            .unwrap()
        {
            let mut raw = Bytes::from(plan.read().unwrap());
            while !raw.is_empty() {
                let set = RecordBatchDecoder::decode(&mut raw).unwrap();
                for r in set.records {
                    if r.offset >= from {
                        out.push((r.offset, r.value.unwrap().to_vec()));
                    }
                    off = r.offset + 1;
                }
            }
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Whatever the batch sizes and segment size, every appended record reads back at its
        /// offset, from any start, before and after a reopen with recovery.
        #[test]
        fn appended_records_read_back(
            batches in proptest::collection::vec(proptest::collection::vec(1usize..40, 1..6), 1..40),
            segment_bytes in 100u64..2000,
            from_frac in 0.0f64..1.0,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let cfg = LogConfig { segment_bytes, index_interval_bytes: 64, ..LogConfig::default() };
            let mut log = PartitionLog::open(dir.path(), uuid::Uuid::nil(), cfg.clone(), false).unwrap();
            let mut expected = Vec::new();
            for (bi, sizes) in batches.iter().enumerate() {
                let vals: Vec<Vec<u8>> = sizes.iter().enumerate().map(|(i, n)| vec![(bi * 7 + i) as u8; *n]).collect();
                let refs: Vec<&[u8]> = vals.iter().map(|v| v.as_slice()).collect();
                let b = make_batch(&refs, 1000 + bi as i64, -1, -1);
                let spans = batch::validate_produce_records(&b).unwrap();
                let info = log.append(&b, &spans, 0, 0).unwrap();
                for (i, v) in vals.into_iter().enumerate() {
                    expected.push((info.base_offset + i as i64, v));
                }
            }
            let from = (expected.len() as f64 * from_frac) as i64;
            prop_assert_eq!(values_from(&log, from), expected[from as usize..].to_vec());
            drop(log);
            let log = PartitionLog::open(dir.path(), uuid::Uuid::nil(), cfg, true).unwrap();
            prop_assert_eq!(log.log_end_offset(), expected.len() as i64);
            prop_assert_eq!(values_from(&log, from), expected[from as usize..].to_vec());
        }

        /// Cutting the active segment anywhere leaves, after recovery, a prefix of what was
        /// written, and appends continue right after it.
        #[test]
        fn torn_tail_recovers_to_a_prefix(n in 1usize..30, cut_frac in 0.0f64..1.0) {
            let dir = tempfile::tempdir().unwrap();
            let mut log = PartitionLog::open(dir.path(), uuid::Uuid::nil(), LogConfig::default(), false).unwrap();
            let mut expected = Vec::new();
            for i in 0..n {
                let v = format!("record-{i}").into_bytes();
                let b = make_batch(&[&v], i as i64, -1, -1);
                let spans = batch::validate_produce_records(&b).unwrap();
                log.append(&b, &spans, 0, 0).unwrap();
                expected.push((i as i64, v));
            }
            drop(log);
            let seg = dir.path().join(segment::log_name(0));
            let len = std::fs::metadata(&seg).unwrap().len();
            let cut = (len as f64 * cut_frac) as u64;
            std::fs::OpenOptions::new().write(true).open(&seg).unwrap().set_len(cut).unwrap();
            let mut log = PartitionLog::open(dir.path(), uuid::Uuid::nil(), LogConfig::default(), true).unwrap();
            let got = values_from(&log, 0);
            prop_assert!(expected.starts_with(&got));
            let leo = log.log_end_offset();
            prop_assert_eq!(leo, got.len() as i64);
            let b = make_batch(&[b"after"], 0, -1, -1);
            let spans = batch::validate_produce_records(&b).unwrap();
            prop_assert_eq!(log.append(&b, &spans, 0, 0).unwrap().base_offset, leo);
        }
    }
}
