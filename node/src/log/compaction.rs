//! Log compaction for `cleanup.policy=compact`: keep the latest record per key in closed
//! segments, drop tombstones once they are older than `delete.retention.ms`.
//!
//! Batches whose records all survive are copied byte for byte; partly cleaned batches are
//! re-encoded with their original codec, offsets, producer id and sequence numbers.

use std::collections::HashMap;
use std::io::Write;

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{RecordBatchEncoder, RecordEncodeOptions};

use super::partition::PartitionLog;
use crate::error::{Error, Result};

/// What one compaction pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CompactionStats {
    pub segments_cleaned: usize,
    pub records_removed: usize,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// Compact the closed segments of `log` that are older than `min.compaction.lag.ms`.
pub fn compact(log: &mut PartitionLog, now_ms: i64) -> Result<CompactionStats> {
    let cfg = log.config().clone();
    if !cfg.compact {
        return Ok(CompactionStats::default());
    }
    let lag_cutoff = now_ms - cfg.min_compaction_lag_ms;
    // A tiered log compacts only what the bucket holds whole: the uploader needs the
    // segments past the manifest's end as they were written, contiguous (the bucket's copy
    // is compacted by tiering).
    let tiered_upto = cfg
        .remote_storage
        .then(|| log.remote_upto().unwrap_or(i64::MIN));
    let bases: Vec<(i64, u64)> = log
        .closed_segments()
        .take_while(|s| s.max_timestamp <= lag_cutoff)
        .take_while(|s| tiered_upto.is_none_or(|end| s.next_offset <= end))
        .map(|s| (s.base_offset, s.size()))
        .collect();
    if bases.is_empty() {
        return Ok(CompactionStats::default());
    }

    // Pass 1: the latest offset of every key in the cleanable range.
    let mut latest: HashMap<Bytes, i64> = HashMap::new();
    for seg in log.closed_segments().take(bases.len()) {
        for loc in seg.batches()? {
            note_keys(
                &seg.read(loc.position, loc.header.total_len())?,
                &mut latest,
            )?;
        }
    }

    // Pass 2: rewrite each segment with only the surviving records.
    let mut stats = CompactionStats::default();
    let first_base = bases[0].0;
    for (base, size_before) in bases {
        let seg = log
            .closed_segments()
            .find(|s| s.base_offset == base)
            .ok_or_else(|| {
                Error::StorageFailed(format!("segment {base} vanished during compaction"))
            })?;
        let mut out: Vec<u8> = Vec::with_capacity(size_before as usize);
        let mut removed = 0usize;
        for loc in seg.batches()? {
            let raw = seg.read(loc.position, loc.header.total_len())?;
            let (kept, gone) =
                clean_batch(&raw, &loc.header, &latest, now_ms, cfg.delete_retention_ms)?;
            removed += gone;
            out.extend_from_slice(&kept);
        }
        if removed == 0 {
            continue;
        }
        stats.segments_cleaned += 1;
        stats.records_removed += removed;
        stats.bytes_before += size_before;
        stats.bytes_after += out.len() as u64;
        let cleaned = log.dir().join(format!("{base:020}.log.cleaned"));
        {
            let mut f = std::fs::File::create(&cleaned)
                .map_err(|e| Error::io(cleaned.display().to_string(), e))?;
            f.write_all(&out)
                .map_err(|e| Error::io(cleaned.display().to_string(), e))?;
            f.sync_all()
                .map_err(|e| Error::io(cleaned.display().to_string(), e))?;
        }
        if out.is_empty() && base != first_base {
            let _ = std::fs::remove_file(&cleaned);
            log.remove_segment(base)?;
        } else {
            log.replace_segment(base, &cleaned)?;
        }
    }
    log.mark_clean();
    if stats.segments_cleaned > 0 {
        tracing::info!(dir = %log.dir().display(), ?stats, "compacted");
    }
    Ok(stats)
}

/// Note the offset of every keyed record of one batch as its key's latest (batches are
/// fed in offset order).
pub fn note_keys(raw: &[u8], latest: &mut HashMap<Bytes, i64>) -> Result<()> {
    if super::batch::parse_header(raw)?.is_some_and(|h| h.is_transactional()) {
        // A transaction's records may be aborted, and markers' keys are not record keys:
        // neither supersedes anything.
        return Ok(());
    }
    let set = super::records::decode_batch(raw)?;
    for r in set.records {
        if let Some(k) = r.key {
            latest.insert(k, r.offset);
        }
    }
    Ok(())
}

/// One batch with only its surviving records: those no later record of the same key
/// supersedes in `latest`, minus tombstones older than `delete_retention_ms` (and records
/// without a key, which a compacted topic cannot hold). Returns the bytes to keep (the batch as it
/// was when nothing goes, re-encoded with its codec, offsets, producer id and sequence
/// numbers when some records go, nothing when all go) and how many records went.
pub fn clean_batch(
    raw: &[u8],
    header: &super::batch::BatchHeader,
    latest: &HashMap<Bytes, i64>,
    now_ms: i64,
    delete_retention_ms: i64,
) -> Result<(Bytes, usize)> {
    if header.is_transactional() {
        // Transactions are kept whole, markers included: dropping an aborted transaction's
        // records and then its marker is not done yet, and keeping them loses nothing.
        return Ok((Bytes::copy_from_slice(raw), 0));
    }
    let set = super::records::decode_batch(raw)?;
    let tombstone_expired = header.max_timestamp.saturating_add(delete_retention_ms) < now_ms;
    let total = set.records.len();
    let mut keep: Vec<_> = set
        .records
        .into_iter()
        .filter(|r| {
            let Some(k) = &r.key else { return false };
            let superseded = latest.get(k).is_some_and(|o| *o > r.offset);
            let expired_tombstone = r.value.is_none() && tombstone_expired;
            !(superseded || expired_tombstone)
        })
        .collect();
    let removed = total - keep.len();
    if removed == 0 {
        return Ok((Bytes::copy_from_slice(raw), 0));
    }
    if keep.is_empty() {
        return Ok((Bytes::new(), removed));
    }
    // The encoder derives the base sequence from the first record; non-idempotent batches
    // must keep -1.
    if header.producer_id < 0 {
        if let Some(first) = keep.first().map(|r| r.offset) {
            for r in keep.iter_mut() {
                r.sequence = (r.offset - first) as i32 - 1;
            }
        }
    }
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &keep,
        &RecordEncodeOptions {
            version: 2,
            compression: set.compression,
        },
    )
    .map_err(|e| Error::CorruptBatch(format!("compaction encode: {e}")))?;
    Ok((buf.freeze(), removed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsutil;
    use crate::log::batch;
    use crate::log::batch::tests::make_batch_keyed;
    use crate::log::config::LogConfig;
    use kafka_protocol::records::RecordBatchDecoder;

    fn collect(log: &PartitionLog) -> Vec<(i64, Option<Bytes>, Option<Bytes>)> {
        let mut out = Vec::new();
        let mut off = log.log_start_offset();
        while let Some(plan) = log
            .plan_read(off, 1 << 20, true, log.log_end_offset())
            .unwrap()
        {
            let mut raw = Bytes::from(plan.read().unwrap());
            let mut last = off;
            while !raw.is_empty() {
                let set = RecordBatchDecoder::decode(&mut raw).unwrap();
                for r in set.records {
                    last = r.offset;
                    out.push((r.offset, r.key, r.value));
                }
            }
            off = last + 1;
        }
        out
    }

    #[test]
    fn keeps_latest_per_key_and_drops_old_tombstones() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig {
            compact: true,
            delete: false,
            segment_bytes: 200,
            delete_retention_ms: 1000,
            ..LogConfig::default()
        };
        let mut log = PartitionLog::open(dir.path(), uuid::Uuid::new_v4(), cfg, false).unwrap();
        let now = fsutil::now_ms();
        let old = now - 10_000;
        let mut put = |k: &[u8], v: Option<&[u8]>, ts: i64| {
            let b = make_batch_keyed(vec![(Some(k), v)], ts, -1, -1);
            let spans = batch::validate_produce_records(&b).unwrap();
            log.append(&b, &spans, 0, now).unwrap();
        };
        put(b"a", Some(b"1"), old); // 0
        put(b"b", Some(b"1"), old); // 1
        put(b"a", Some(b"2"), old); // 2
        put(b"c", Some(b"1"), old); // 3
        put(b"b", None, old); // 4: old tombstone -> dropped
        put(b"c", None, now); // 5: fresh tombstone -> kept
        put(b"d", Some(b"1"), now); // 6
        put(b"e", Some(b"1"), now); // 7 (likely in the active segment)
        let before = collect(&log);
        assert_eq!(before.len(), 8);
        let stats = compact(&mut log, now).unwrap();
        assert!(stats.records_removed >= 3, "{stats:?}");
        let after = collect(&log);
        let keys: Vec<_> = after
            .iter()
            .map(|(o, k, _)| (*o, k.clone().unwrap()))
            .collect();
        assert!(keys.contains(&(2, Bytes::from_static(b"a"))));
        assert!(!keys
            .iter()
            .any(|(o, _)| *o == 0 || *o == 1 || *o == 3 || *o == 4));
        assert!(keys.contains(&(5, Bytes::from_static(b"c"))));
        // Offsets are preserved and increasing.
        let offs: Vec<i64> = after.iter().map(|(o, _, _)| *o).collect();
        assert!(offs.windows(2).all(|w| w[0] < w[1]));
        // Survives reopen with recovery.
        drop(log);
        let cfg2 = LogConfig {
            compact: true,
            delete: false,
            segment_bytes: 200,
            ..LogConfig::default()
        };
        let log = PartitionLog::open(dir.path(), uuid::Uuid::new_v4(), cfg2, true).unwrap();
        assert_eq!(collect(&log).len(), after.len());
        assert_eq!(log.log_end_offset(), 8);
    }
}
