//! Compaction of the bucket's copy of a compacted topic (`cleanup.policy=compact` with
//! `remote.storage.enable=true`), so a changelog of any size keeps a small local disk.
//!
//! Segments are uploaded as they were written; the leader's uploader then rewrites the
//! remote ones that hold records superseded by a later record with the same key (or
//! tombstones older than `delete.retention.ms`), keeping each segment's offset range, so
//! the manifest stays contiguous. A rewritten segment goes up under new object names (the
//! copy's number and the writer's epoch) with rebuilt indexes (its producer-state snapshot is copied on the server),
//! the manifest swaps the entries in one conditional put, and only then the old objects are
//! deleted: a reader sees either copy, never a mix. A crash in between leaves objects the
//! manifest does not name, which the orphan check deletes.
//!
//! The latest offset of each key is taken over the whole partition (bucket and local log),
//! the same rule as local compaction (`log::compaction::Cleaner`), so reads from the
//! first offset see the latest value per key across both tiers. Transactional batches and
//! markers are kept whole in the bucket's copy: aborted records stay there, and
//! read_committed consumers drop them through the uploaded transaction index.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::manifest::{Compacted, RemoteSegment};
use super::uploader::PartState;
use super::Tiering;
use crate::error::{Error, Result};
use crate::log::batch::{self, HEADER_LEN};
use crate::log::compaction::{note_keys, Cleaner};
use crate::log::segment::Segment;
use crate::partition::Partition;

/// Folder, inside a partition's directory, where rewritten segments get their indexes.
pub(super) const COMPACT_DIR: &str = "remote-compaction";

/// What one remote compaction pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RemoteCompactionStats {
    pub segments_rewritten: usize,
    pub records_removed: usize,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// Whole batches of a segment's bytes, as (position, header).
fn batches_of(key: &str, data: &[u8]) -> Result<Vec<(usize, batch::BatchHeader)>> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos < data.len() {
        let h = batch::parse_header(&data[pos..])?
            .filter(|h| h.total_len() >= HEADER_LEN && pos + h.total_len() <= data.len())
            .ok_or_else(|| Error::CorruptRemoteSegment {
                key: key.to_string(),
                reason: format!("no whole batch at position {pos}"),
            })?;
        out.push((pos, h));
        pos += h.total_len();
    }
    Ok(out)
}

/// A segment at `base` in `dir` (emptied first) holding `data`: its indexes are built as
/// the batches are appended.
fn segment_of(
    dir: &std::path::Path,
    base: i64,
    index_interval: u64,
    data: &[u8],
    headers: Vec<(batch::BatchHeader, usize)>,
) -> Result<Segment> {
    let mut seg = super::uploader::segment_in_empty_dir(dir, base, index_interval)?;
    if !data.is_empty() {
        seg.append(data, &headers)?;
    }
    seg.sync()?;
    Ok(seg)
}

impl Tiering {
    /// Read a whole `.log` object of a segment.
    async fn segment_bytes(&self, pp: &str, seg: &RemoteSegment) -> Result<Bytes> {
        let key = format!("{pp}{}", seg.object_name("log"));
        if seg.size == 0 {
            return Ok(Bytes::new());
        }
        let data = self.bucket.get_range(&key, 0..seg.size).await?;
        if data.len() as u64 != seg.size {
            return Err(Error::CorruptRemoteSegment {
                key,
                reason: format!("{} bytes, the manifest says {}", data.len(), seg.size),
            });
        }
        Ok(data)
    }

    /// One compaction pass over the bucket's copy of a compacted partition this node leads,
    /// in the uploader's turn for it. Runs when segments were uploaded since the last pass
    /// and the compaction interval has passed.
    pub(super) async fn compact_remote(
        &self,
        st: &mut PartState,
        part: &Arc<Partition>,
        epoch: i32,
        pp: &str,
    ) -> Result<()> {
        let cfg = part.log().config().clone();
        let Some(m) = st.manifest().cloned() else {
            return Ok(());
        };
        if !cfg.compact
            || m.segments.is_empty()
            || st
                .last_remote_compaction
                .is_some_and(|t| t.elapsed() < self.options.compaction_interval)
        {
            return Ok(());
        }
        // Kafka's rule: clean once the dirty part (segments uploaded since the last pass)
        // is at least min.cleanable.dirty.ratio of the whole, so the bucket's copy is read
        // a bounded number of times per byte written, however large it grows.
        let dirty: Vec<&RemoteSegment> = m
            .segments
            .iter()
            .filter(|s| s.next_offset > m.cleaned_upto)
            .collect();
        let dirty_bytes: u64 = dirty.iter().map(|s| s.size).sum();
        if dirty.is_empty()
            || (dirty_bytes as f64) < cfg.min_cleanable_dirty_ratio * m.bytes().max(1) as f64
        {
            return Ok(());
        }
        m.fence(epoch)?;
        st.last_remote_compaction = Some(Instant::now());
        let started = Instant::now();
        let now = crate::fsutil::now_ms();
        // Pass 1: the latest offset of every key in the dirty segments and the local log
        // past the manifest's end (the clean section has each key once already).
        let mut latest: HashMap<Bytes, i64> = HashMap::new();
        for seg in dirty {
            let key = format!("{pp}{}", seg.object_name("log"));
            let data = self.segment_bytes(pp, seg).await?;
            for (pos, h) in batches_of(&key, &data)? {
                note_keys(&data[pos..pos + h.total_len()], &mut latest, None)?;
            }
        }
        let local = {
            let part = part.clone();
            let from = m.end_offset;
            tokio::task::spawn_blocking(move || part.log().keys_from(from))
                .await
                .map_err(|e| Error::StorageFailed(format!("reading local keys: {e}")))??
        };
        latest.extend(local);

        // Pass 2: rewrite the segments past min.compaction.lag.ms that lose records.
        let lag_cutoff = now - cfg.min_compaction_lag_ms;
        let dir = part.log().dir().join(COMPACT_DIR);
        let mut stats = RemoteCompactionStats::default();
        let mut rewritten: Vec<RemoteSegment> = Vec::new();
        // Transactional batches stay whole in the bucket's copy.
        let mut cleaner = Cleaner::new(&latest, now, cfg.delete_retention_ms);
        for seg in &m.segments {
            if seg.max_timestamp > lag_cutoff {
                break;
            }
            let key = format!("{pp}{}", seg.object_name("log"));
            let data = self.segment_bytes(pp, seg).await?;
            let mut out: Vec<u8> = Vec::with_capacity(data.len());
            let mut removed = 0usize;
            for (pos, h) in batches_of(&key, &data)? {
                let cleaned = cleaner.clean(&data[pos..pos + h.total_len()], &h)?;
                removed += cleaned.removed;
                out.extend_from_slice(&cleaned.bytes);
            }
            if removed == 0 {
                continue;
            }
            let headers: Vec<(batch::BatchHeader, usize)> = batches_of(&key, &out)?
                .into_iter()
                .map(|(pos, h)| (h, pos))
                .collect();
            let max_timestamp = headers
                .iter()
                .map(|(h, _)| h.max_timestamp)
                .max()
                .unwrap_or(-1);
            let (index, time_index) = {
                let (dir, base, interval) =
                    (dir.clone(), seg.base_offset, cfg.index_interval_bytes);
                let out = out.clone();
                tokio::task::spawn_blocking(move || -> Result<(Vec<u8>, Vec<u8>)> {
                    let s = segment_of(&dir, base, interval, &out, headers)?;
                    drop(s);
                    let read = |ext: &str| {
                        let path = dir.join(format!("{base:020}.{ext}"));
                        std::fs::read(&path).map_err(|e| Error::io(path.display().to_string(), e))
                    };
                    let (index, time_index) = (read("index")?, read("timeindex")?);
                    let _ = std::fs::remove_dir_all(&dir);
                    Ok((index, time_index))
                })
                .await
                .map_err(|e| Error::StorageFailed(format!("indexing a compacted segment: {e}")))??
            };
            let next = RemoteSegment {
                size: out.len() as u64,
                index_size: index.len() as u64,
                time_index_size: time_index.len() as u64,
                compacted: Some(Compacted {
                    count: seg.compacted.map_or(1, |c| c.count + 1),
                    by_epoch: epoch,
                }),
                max_timestamp,
                ..seg.clone()
            };
            let name = |ext: &str| format!("{pp}{}", next.object_name(ext));
            self.bucket.put(&name("log"), Bytes::from(out)).await?;
            self.bucket.put(&name("index"), Bytes::from(index)).await?;
            self.bucket
                .put(&name("timeindex"), Bytes::from(time_index))
                .await?;
            self.bucket
                .copy(
                    &format!("{pp}{}", seg.object_name("snapshot")),
                    &name("snapshot"),
                )
                .await?;
            stats.segments_rewritten += 1;
            stats.records_removed += removed;
            stats.bytes_before += seg.size;
            stats.bytes_after += next.size;
            rewritten.push(next);
        }
        let next = m.with_rewritten(&rewritten, m.end_offset, epoch)?;
        self.write_manifest(st, part, next).await?;
        // The manifest names the new copies: the old objects go.
        for old in m
            .segments
            .iter()
            .filter(|s| rewritten.iter().any(|r| r.base_offset == s.base_offset))
        {
            self.delete_segment_objects(pp, old).await?;
        }
        self.counters
            .remote_compactions
            .fetch_add(stats.segments_rewritten as u64, Ordering::Relaxed);
        tracing::info!(
            topic = %part.topic,
            partition = part.index,
            segments = stats.segments_rewritten,
            records_removed = stats.records_removed,
            bytes_before = stats.bytes_before,
            bytes_after = stats.bytes_after,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "compacted the bucket's copy"
        );
        Ok(())
    }
}
