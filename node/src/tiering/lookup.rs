//! ListOffsets by time and MAX_TIMESTAMP over a tiered partition: the part of the log that
//! is only in the bucket is searched through the remote segments' time and offset indexes
//! (whole small objects, cached) and ranged reads of the one batch that answers, with the
//! same rules as the local log, so a tiered topic answers exactly as an untiered one.

use std::sync::Arc;

use super::manifest::{Manifest, RemoteSegment};
use super::{Tiering, View};
use crate::error::{Error, Result};
use crate::log::index::{floor_time, IndexEntry, TimeEntry};
use crate::log::records;
use crate::partition::Partition;

/// Attempts before giving up when local retention keeps moving the local log start
/// (data moving to the bucket) while a lookup runs.
const ATTEMPTS: usize = 3;

impl Tiering {
    /// The manifest a lookup below `local_start` must search, or None when nothing of the
    /// partition can be below it.
    fn lookup_manifest(
        &self,
        topic_id: uuid::Uuid,
        p: i32,
        local_start: i64,
    ) -> Result<Option<Arc<Manifest>>> {
        match self.view((topic_id, p)) {
            View::Ready(m) => Ok(Some(m)),
            // A partition whose manifest was never read has local data from its start
            // unless local retention already ran, which needs the manifest.
            View::Unknown if local_start == 0 => Ok(None),
            View::Unknown => Err(Error::RemoteUnavailable(
                "the manifest has not been read yet".into(),
            )),
            View::Failed(e) => Err(Error::RemoteUnavailable(e)),
        }
    }

    /// A remote segment's time index entries (empty when it has none).
    async fn time_index(&self, pp: &str, seg: &RemoteSegment) -> Result<Vec<TimeEntry>> {
        if seg.time_index_size == 0 {
            return Ok(Vec::new());
        }
        let key = format!("{pp}{}", seg.object_name("timeindex"));
        let raw = self.cache.object(&self.bucket, &key).await?;
        if raw.len() % TimeEntry::WIDTH != 0 {
            return Err(Error::CorruptRemoteSegment {
                key,
                reason: format!("{} bytes is not a whole number of entries", raw.len()),
            });
        }
        Ok(raw
            .chunks_exact(TimeEntry::WIDTH)
            .map(TimeEntry::read_from)
            .collect())
    }

    /// Decode the batch at `pos` of a remote segment.
    async fn remote_batch(
        &self,
        pp: &str,
        seg: &RemoteSegment,
        pos: u64,
        len: usize,
    ) -> Result<kafka_protocol::records::RecordSet> {
        let key = format!("{pp}{}", seg.object_name("log"));
        let raw = self
            .cache
            .range(&self.bucket, &key, seg.size, pos, pos + len as u64)
            .await?;
        records::decode_batch(&raw).map_err(|e| Error::CorruptRemoteSegment {
            key,
            reason: format!("batch at {pos}: {e}"),
        })
    }

    /// [`crate::log::PartitionLog::offset_for_timestamp`] inside one remote segment: the
    /// first record at or after `start` with a timestamp of at least `ts`.
    async fn segment_offset_for_timestamp(
        &self,
        pp: &str,
        seg: &RemoteSegment,
        ts: i64,
        start: i64,
    ) -> Result<Option<(i64, i64)>> {
        // Batches before the time index's floor entry all have smaller timestamps.
        let floor = floor_time(&self.time_index(pp, seg).await?, ts)
            .map(|e| seg.base_offset + e.relative_offset as i64)
            .unwrap_or(seg.base_offset);
        let Some((mut pos, mut h)) = self.locate(pp, seg, floor.max(start)).await? else {
            return Ok(None);
        };
        let log_key = format!("{pp}{}", seg.object_name("log"));
        loop {
            if h.max_timestamp >= ts && h.last_offset() >= start {
                let set = self.remote_batch(pp, seg, pos, h.total_len()).await?;
                if let Some(found) = records::first_record_at_or_after(&h, &set, ts, start) {
                    return Ok(Some(found));
                }
            }
            pos += h.total_len() as u64;
            if pos >= seg.size {
                return Ok(None);
            }
            h = self.header_at(&log_key, seg.size, pos).await?;
        }
    }

    /// [`crate::log::PartitionLog::max_timestamp_offset`] inside one remote segment.
    async fn segment_max_timestamp_offset(
        &self,
        pp: &str,
        seg: &RemoteSegment,
    ) -> Result<Option<(i64, i64)>> {
        // The time index gains an entry whenever a batch raises the segment's largest
        // timestamp, so its last entry is the batch that holds it.
        let target = self
            .time_index(pp, seg)
            .await?
            .last()
            .map(|e| seg.base_offset + e.relative_offset as i64)
            .unwrap_or(seg.base_offset);
        let Some((pos, h)) = self.locate(pp, seg, target).await? else {
            return Ok(None);
        };
        let set = self.remote_batch(pp, seg, pos, h.total_len()).await?;
        Ok(records::max_timestamp_record(&h, &set))
    }

    /// ListOffsets by time over a tiered partition: the segments only in the bucket first,
    /// then the local log.
    pub async fn offset_for_timestamp(
        &self,
        part: &Arc<Partition>,
        ts: i64,
    ) -> Result<Option<(i64, i64)>> {
        for _ in 0..ATTEMPTS {
            let (topic_id, local_start) = {
                let log = part.log();
                (log.topic_id(), log.log_start_offset())
            };
            if let Some(m) = self.lookup_manifest(topic_id, part.index, local_start)? {
                let pp = self.partition_prefix(topic_id, part.index);
                for seg in remote_only(&m, local_start) {
                    if seg.max_timestamp < ts {
                        continue;
                    }
                    let found = self
                        .segment_offset_for_timestamp(&pp, seg, ts, m.log_start_offset)
                        .await?;
                    if found.is_some() {
                        return Ok(found);
                    }
                }
            }
            let log = part.log();
            if log.log_start_offset() == local_start {
                return log.offset_for_timestamp(ts);
            }
            // Local retention moved segments we did not search to the bucket: again.
        }
        Err(Error::RemoteUnavailable(
            "the local log start kept moving during the lookup".into(),
        ))
    }

    /// ListOffsets MAX_TIMESTAMP over a tiered partition: the segment with the largest
    /// timestamp (the later one on ties, as in the local log) answers, wherever it is.
    pub async fn max_timestamp_offset(&self, part: &Arc<Partition>) -> Result<Option<(i64, i64)>> {
        for _ in 0..ATTEMPTS {
            let (topic_id, local_start, local_max) = {
                let log = part.log();
                (log.topic_id(), log.log_start_offset(), log.max_timestamp())
            };
            if let Some(m) = self.lookup_manifest(topic_id, part.index, local_start)? {
                let best =
                    remote_only(&m, local_start).fold(
                        None::<&RemoteSegment>,
                        |best, s| match best {
                            Some(b) if s.max_timestamp < b.max_timestamp => Some(b),
                            _ => Some(s),
                        },
                    );
                if let Some(seg) = best.filter(|s| local_max.is_none_or(|l| s.max_timestamp > l)) {
                    let pp = self.partition_prefix(topic_id, part.index);
                    return self.segment_max_timestamp_offset(&pp, seg).await;
                }
            }
            let log = part.log();
            if log.log_start_offset() == local_start {
                return log.max_timestamp_offset();
            }
        }
        Err(Error::RemoteUnavailable(
            "the local log start kept moving during the lookup".into(),
        ))
    }
}

/// The manifest's segments holding data the local log no longer has, in offset order
/// (without those compaction emptied).
fn remote_only(m: &Manifest, local_start: i64) -> impl Iterator<Item = &RemoteSegment> {
    m.segments
        .iter()
        .take_while(move |s| s.base_offset < local_start)
        .filter(|s| s.size > 0)
}
