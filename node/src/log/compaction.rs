//! Log compaction for `cleanup.policy=compact`: keep the latest record per key in closed
//! segments, drop tombstones once they are older than `delete.retention.ms`.
//!
//! Batches whose records all survive are copied byte for byte; partly cleaned batches are
//! re-encoded with their original codec, offsets, producer id and sequence numbers.
//!
//! Transactions follow Kafka's cleaner: only segments below the first unstable offset are
//! cleaned (every transaction there has its marker); the records of aborted transactions
//! go, and committed ones compact by key like any other; a marker stays while a pass still
//! meets batches of its transaction, and once none are left it goes `delete.retention.ms`
//! after the first pass that found it so, taking its aborted-transaction index entry with
//! it (a read_committed consumer that fetched the transaction's records has had that long
//! to reach the marker). When a marker became removable is kept in memory: a restart
//! starts its horizon again, which only delays the removal.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::io::Write;

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{RecordBatchEncoder, RecordEncodeOptions};

use super::batch::BatchHeader;
use super::partition::PartitionLog;
use super::txn::{AbortedTxn, Marker};
use crate::error::{Error, Result};

/// What one compaction pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CompactionStats {
    pub segments_cleaned: usize,
    pub records_removed: usize,
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// Commit and abort markers removed.
    pub markers_removed: usize,
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
    // An open transaction's records may still abort: nothing from its first record on is
    // cleaned.
    let unstable = log.first_unstable_offset().unwrap_or(i64::MAX);
    let bases: Vec<(i64, i64, u64)> = log
        .closed_segments()
        .take_while(|s| s.max_timestamp <= lag_cutoff)
        .take_while(|s| tiered_upto.is_none_or(|end| s.next_offset <= end))
        .take_while(|s| s.next_offset <= unstable)
        .map(|s| (s.base_offset, s.next_offset, s.size()))
        .collect();
    let (Some(&(first_base, _, _)), Some(&(_, range_end, _))) = (bases.first(), bases.last())
    else {
        return Ok(CompactionStats::default());
    };
    let aborted = log.aborted_between(first_base, range_end);
    // Producer state may be loaded from a snapshot and the batches after it: a snapshot
    // taken inside a transaction whose records and marker compaction removed would reopen
    // it for good. Only markers below every snapshot go (the log keeps the two newest).
    let marker_floor = log.oldest_snapshot()?.unwrap_or(i64::MAX);

    // Pass 1: the latest offset of every key in the cleanable range.
    let mut latest: HashMap<Bytes, i64> = HashMap::new();
    let lookup = AbortedLookup::new(&aborted);
    for seg in log.closed_segments().take(bases.len()) {
        for loc in seg.batches()? {
            note_keys(
                &seg.read(loc.position, loc.header.total_len())?,
                &mut latest,
                Some(&lookup),
            )?;
        }
    }

    // Pass 2: rewrite each segment with only the surviving records.
    let mut stats = CompactionStats::default();
    let mut cleaner = Cleaner::new(&latest, now_ms, cfg.delete_retention_ms).with_transactions(
        TxnTracker::new(aborted, log.take_removable_markers(), marker_floor),
    );
    for (base, next_offset, size_before) in bases {
        let seg = log
            .closed_segments()
            .find(|s| s.base_offset == base)
            .ok_or_else(|| {
                Error::StorageFailed(format!("segment {base} vanished during compaction"))
            })?;
        let mut out: Vec<u8> = Vec::with_capacity(size_before as usize);
        let mut removed = 0usize;
        let mut dropped_aborts = Vec::new();
        let mut markers_removed = 0usize;
        for loc in seg.batches()? {
            let raw = seg.read(loc.position, loc.header.total_len())?;
            let cleaned = cleaner.clean(&raw, &loc.header)?;
            removed += cleaned.removed;
            if let Some(marker) = cleaned.dropped_marker {
                markers_removed += 1;
                if marker == Marker::Abort {
                    dropped_aborts.push(loc.header.base_offset);
                }
            }
            out.extend_from_slice(&cleaned.bytes);
        }
        if removed == 0 {
            continue;
        }
        stats.segments_cleaned += 1;
        stats.records_removed += removed;
        stats.markers_removed += markers_removed;
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
        // A crash before this leaves index entries of markers that are gone, whose
        // records went in an earlier pass: they hide nothing.
        log.forget_aborted(base, next_offset, &dropped_aborts)?;
    }
    if let Some(txns) = cleaner.txns.take() {
        log.set_removable_markers(txns.into_removable());
    }
    log.mark_clean();
    if stats.segments_cleaned > 0 {
        tracing::info!(dir = %log.dir().display(), ?stats, "compacted");
    }
    Ok(stats)
}

/// Which transactional records were aborted: the aborted-transaction entries of the range
/// being compacted, by producer.
#[derive(Debug, Default)]
pub struct AbortedLookup(HashMap<i64, Vec<(i64, i64)>>);

impl AbortedLookup {
    pub fn new(entries: &[AbortedTxn]) -> Self {
        let mut by_producer: HashMap<i64, Vec<(i64, i64)>> = HashMap::new();
        for e in entries {
            by_producer
                .entry(e.producer_id)
                .or_default()
                .push((e.first_offset, e.last_offset));
        }
        AbortedLookup(by_producer)
    }

    /// Whether the batch of `producer_id` at `offset` belongs to an aborted transaction.
    pub fn holds(&self, producer_id: i64, offset: i64) -> bool {
        self.0.get(&producer_id).is_some_and(|v| {
            v.iter()
                .any(|(first, last)| (*first..=*last).contains(&offset))
        })
    }
}

/// Note the offset of every keyed record of one batch as its key's latest (batches are
/// fed in offset order). With `aborted`, the range is stable: committed transactional
/// records count and aborted ones do not; without it, no transactional record counts.
pub fn note_keys(
    raw: &[u8],
    latest: &mut HashMap<Bytes, i64>,
    aborted: Option<&AbortedLookup>,
) -> Result<()> {
    if let Some(h) = super::batch::parse_header(raw)? {
        if h.is_transactional() {
            // Markers' keys are not record keys; an aborted record supersedes nothing.
            let counts =
                !h.is_control() && aborted.is_some_and(|a| !a.holds(h.producer_id, h.base_offset));
            if !counts {
                return Ok(());
            }
        }
    }
    let set = super::records::decode_batch(raw)?;
    for r in set.records {
        if let Some(k) = r.key {
            latest.insert(k, r.offset);
        }
    }
    Ok(())
}

/// One batch after cleaning.
#[derive(Debug)]
pub struct Cleaned {
    /// The bytes to keep: the batch as it was when nothing goes, re-encoded when some
    /// records go, nothing when all go.
    pub bytes: Bytes,
    /// Records removed.
    pub removed: usize,
    /// The marker removed, when the batch was one.
    pub dropped_marker: Option<Marker>,
}

impl Cleaned {
    fn kept(raw: &[u8]) -> Self {
        Cleaned {
            bytes: Bytes::copy_from_slice(raw),
            removed: 0,
            dropped_marker: None,
        }
    }
}

/// Cleans the batches of a range in offset order against the latest offsets of its keys.
pub struct Cleaner<'a> {
    latest: &'a HashMap<Bytes, i64>,
    now_ms: i64,
    delete_retention_ms: i64,
    /// Without it, transactional batches are kept whole.
    txns: Option<TxnTracker>,
}

impl<'a> Cleaner<'a> {
    pub fn new(latest: &'a HashMap<Bytes, i64>, now_ms: i64, delete_retention_ms: i64) -> Self {
        Cleaner {
            latest,
            now_ms,
            delete_retention_ms,
            txns: None,
        }
    }

    /// Clean transactions too (the range is below the first unstable offset and `txns`
    /// knows its aborted transactions).
    pub fn with_transactions(mut self, txns: TxnTracker) -> Self {
        self.txns = Some(txns);
        self
    }

    /// The next batch of the range.
    pub fn clean(&mut self, raw: &[u8], header: &BatchHeader) -> Result<Cleaned> {
        if !header.is_transactional() {
            return clean_records(
                raw,
                header,
                self.latest,
                self.now_ms,
                self.delete_retention_ms,
            );
        }
        let Some(txns) = self.txns.as_mut() else {
            return Ok(Cleaned::kept(raw));
        };
        match txns.on_batch(raw, header, self.now_ms, self.delete_retention_ms)? {
            TxnVerdict::Keep => Ok(Cleaned::kept(raw)),
            TxnVerdict::Compact => clean_records(
                raw,
                header,
                self.latest,
                self.now_ms,
                self.delete_retention_ms,
            ),
            TxnVerdict::DropAborted => Ok(Cleaned {
                bytes: Bytes::new(),
                removed: header.record_count.max(0) as usize,
                dropped_marker: None,
            }),
            TxnVerdict::DropMarker(marker) => Ok(Cleaned {
                bytes: Bytes::new(),
                removed: 1,
                dropped_marker: Some(marker),
            }),
        }
    }
}

/// What compaction does with one transactional batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnVerdict {
    /// Keep it as it is (a marker whose transaction still has batches, or whose delete
    /// horizon has not passed).
    Keep,
    /// A committed transaction's records: compact them by key.
    Compact,
    /// An aborted transaction's records: all go.
    DropAborted,
    /// A marker no batch of its transaction is left for, past its delete horizon.
    DropMarker(Marker),
}

/// The transactions compaction meets as it walks a stable range in offset order: which
/// producer's batches are aborted, and which markers a batch of their transaction was met
/// for in this pass (those stay until a later pass meets none).
#[derive(Debug, Default)]
pub struct TxnTracker {
    /// Aborted transactions not reached yet, by first offset.
    pending: VecDeque<AbortedTxn>,
    /// Producers inside an aborted transaction: whether a batch of it was met.
    aborted: HashMap<i64, bool>,
    /// Producers inside a committed transaction a batch of which was met.
    committed: HashSet<i64>,
    /// When each marker of an earlier pass was first found removable, by offset.
    removable_before: BTreeMap<i64, i64>,
    /// The same for the markers this pass keeps.
    removable: BTreeMap<i64, i64>,
    /// Markers at or above this offset stay.
    floor: i64,
}

impl TxnTracker {
    /// `aborted`: the aborted transactions overlapping the range; `removable`: when the
    /// markers earlier passes found removable were first found so, by offset; markers at
    /// or above `floor` stay.
    pub fn new(mut aborted: Vec<AbortedTxn>, removable: BTreeMap<i64, i64>, floor: i64) -> Self {
        aborted.sort_by_key(|e| e.first_offset);
        TxnTracker {
            pending: aborted.into(),
            removable_before: removable,
            floor,
            ..TxnTracker::default()
        }
    }

    /// When the markers this pass kept were first found removable, for the next pass.
    pub fn into_removable(self) -> BTreeMap<i64, i64> {
        self.removable
    }

    /// The verdict on the next transactional batch. `raw` is the whole batch (a marker's
    /// type is in its record).
    pub fn on_batch(
        &mut self,
        raw: &[u8],
        header: &BatchHeader,
        now_ms: i64,
        delete_retention_ms: i64,
    ) -> Result<TxnVerdict> {
        while let Some(e) = self.pending.front() {
            if e.first_offset > header.last_offset() {
                break;
            }
            self.aborted.insert(e.producer_id, false);
            self.pending.pop_front();
        }
        let pid = header.producer_id;
        if !header.is_control() {
            if let Some(met) = self.aborted.get_mut(&pid) {
                *met = true;
                return Ok(TxnVerdict::DropAborted);
            }
            self.committed.insert(pid);
            return Ok(TxnVerdict::Compact);
        }
        let Some((marker, _)) = super::txn::read_marker(header, raw)? else {
            return Ok(TxnVerdict::Keep);
        };
        let batches_left = match marker {
            Marker::Abort => self.aborted.remove(&pid).unwrap_or(false),
            Marker::Commit => self.committed.remove(&pid),
        };
        if batches_left || header.base_offset >= self.floor {
            return Ok(TxnVerdict::Keep);
        }
        let offset = header.base_offset;
        let since = self
            .removable_before
            .get(&offset)
            .copied()
            .unwrap_or(now_ms);
        if since.saturating_add(delete_retention_ms) < now_ms {
            return Ok(TxnVerdict::DropMarker(marker));
        }
        self.removable.insert(offset, since);
        Ok(TxnVerdict::Keep)
    }
}

/// One batch with only its surviving records: those no later record of the same key
/// supersedes in `latest`, minus tombstones older than `delete_retention_ms` (and records
/// without a key, which a compacted topic cannot hold).
fn clean_records(
    raw: &[u8],
    header: &BatchHeader,
    latest: &HashMap<Bytes, i64>,
    now_ms: i64,
    delete_retention_ms: i64,
) -> Result<Cleaned> {
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
        return Ok(Cleaned::kept(raw));
    }
    if keep.is_empty() {
        return Ok(Cleaned {
            bytes: Bytes::new(),
            removed,
            dropped_marker: None,
        });
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
    Ok(Cleaned {
        bytes: buf.freeze(),
        removed,
        dropped_marker: None,
    })
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

    /// One transactional record of `pid` with `key` and `value`.
    fn txn_keyed(pid: i64, seq: i32, key: &[u8], value: &[u8], ts: i64) -> Vec<u8> {
        batch::tests::make_txn_batch(vec![(Some(key), Some(value))], ts, pid, seq)
    }

    #[test]
    fn aborted_records_go_and_markers_follow_once_their_transactions_are_empty() {
        use crate::log::txn::Marker;
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig {
            compact: true,
            delete: false,
            segment_bytes: 150,
            delete_retention_ms: 1000,
            ..LogConfig::default()
        };
        let id = uuid::Uuid::new_v4();
        let mut log = PartitionLog::open(dir.path(), id, cfg.clone(), false).unwrap();
        let now = fsutil::now_ms();
        let old = now - 10_000;
        let put = |log: &mut PartitionLog, b: Vec<u8>| {
            let spans = batch::validate_produce_records(&b).unwrap();
            log.append(&b, &spans, 0, now).unwrap().base_offset
        };
        assert_eq!(put(&mut log, txn_keyed(1, 0, b"a", b"aborted", old)), 0);
        assert_eq!(put(&mut log, txn_keyed(2, 0, b"b", b"committed", old)), 1);
        assert_eq!(put(&mut log, txn_keyed(2, 1, b"c", b"committed", old)), 2);
        let abort = log.append_marker(Marker::Abort, 1, 0, 0, 0, old).unwrap();
        let commit = log.append_marker(Marker::Commit, 2, 0, 0, 0, old).unwrap();
        assert_eq!((abort.base_offset, commit.base_offset), (3, 4));
        // b is superseded by a plain record; c stays.
        put(
            &mut log,
            make_batch_keyed(vec![(Some(b"b"), Some(b"2"))], old, -1, -1),
        ); // 5
           // Producer 3 opens a transaction that is still open: nothing from it on is cleaned.
        let open = put(&mut log, txn_keyed(3, 0, b"c", b"open", old));
        put(
            &mut log,
            make_batch_keyed(vec![(Some(b"c"), Some(b"3"))], old, -1, -1),
        );
        put(
            &mut log,
            make_batch_keyed(vec![(Some(b"d"), Some(b"1"))], old, -1, -1),
        );
        assert_eq!(log.first_unstable_offset(), Some(open));
        assert_eq!(log.aborted_between(0, 100).len(), 1);

        let offsets =
            |log: &PartitionLog| -> Vec<i64> { collect(log).iter().map(|r| r.0).collect() };
        // First pass: the aborted record and the superseded committed one go; the markers
        // stay because their transactions still had batches in this pass.
        let stats = compact(&mut log, now).unwrap();
        assert_eq!(
            (stats.records_removed, stats.markers_removed),
            (2, 0),
            "{stats:?}"
        );
        let after = offsets(&log);
        assert!(!after.contains(&0) && !after.contains(&1), "{after:?}");
        assert!(after.contains(&2) && after.contains(&3) && after.contains(&4));
        assert_eq!(log.aborted_between(0, 100).len(), 1);
        // Second pass: the abort marker's transaction is empty; its delete horizon starts.
        let stats = compact(&mut log, now).unwrap();
        assert_eq!(stats.markers_removed, 0, "{stats:?}");
        assert_eq!(log.aborted_between(0, 100).len(), 1);
        // Past delete.retention.ms it goes with its index entry. The commit marker stays
        // (record 2 is left of its transaction).
        let stats = compact(&mut log, now + 1500).unwrap();
        assert_eq!(stats.markers_removed, 1, "{stats:?}");
        let after = offsets(&log);
        assert!(!after.contains(&3) && after.contains(&4), "{after:?}");
        assert!(log.aborted_between(0, 100).is_empty());
        // The open transaction and what follows it are untouched.
        assert!(after.contains(&open) && after.contains(&(open + 1)));
        // A crash and recovery from the log agree.
        drop(log);
        for e in std::fs::read_dir(dir.path()).unwrap().flatten() {
            if e.file_name().to_string_lossy().ends_with(".snapshot") {
                std::fs::remove_file(e.path()).unwrap();
            }
        }
        let log = PartitionLog::open(dir.path(), id, cfg, true).unwrap();
        assert!(log.aborted_between(0, 100).is_empty());
        assert_eq!(log.first_unstable_offset(), Some(open));
        assert_eq!(offsets(&log), after);
    }

    #[test]
    fn markers_wait_out_their_horizon_and_transactional_batches_stay_whole_without_a_tracker() {
        let latest = HashMap::new();
        let now = fsutil::now_ms();
        let marker =
            crate::log::txn::marker_batch(crate::log::txn::Marker::Commit, 7, 0, 0, now).unwrap();
        let h = batch::parse_header(&marker).unwrap().unwrap();
        // The horizon counts from the first pass that found the marker removable, whatever
        // the marker's age.
        let mut tracker = TxnTracker::new(vec![], BTreeMap::new(), i64::MAX);
        assert_eq!(
            tracker.on_batch(&marker, &h, now + 10_000, 1000).unwrap(),
            TxnVerdict::Keep
        );
        let removable = tracker.into_removable();
        assert_eq!(removable.get(&h.base_offset), Some(&(now + 10_000)));
        let mut tracker = TxnTracker::new(vec![], removable.clone(), i64::MAX);
        assert_eq!(
            tracker.on_batch(&marker, &h, now + 10_500, 1000).unwrap(),
            TxnVerdict::Keep
        );
        let mut tracker = TxnTracker::new(vec![], removable, i64::MAX);
        assert_eq!(
            tracker.on_batch(&marker, &h, now + 11_001, 1000).unwrap(),
            TxnVerdict::DropMarker(crate::log::txn::Marker::Commit)
        );
        let data = txn_keyed(7, 0, b"k", b"v", now - 100_000);
        let hd = batch::parse_header(&data).unwrap().unwrap();
        let mut plain = Cleaner::new(&latest, now, 0);
        let kept = plain.clean(&data, &hd).unwrap();
        assert_eq!((kept.bytes.len(), kept.removed), (data.len(), 0));
        let kept = plain.clean(&marker, &h).unwrap();
        assert_eq!(kept.bytes.len(), marker.len());
    }
}
