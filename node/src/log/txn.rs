//! Transactions in the log: the control records (commit and abort markers) that end a
//! producer's transaction in a partition, and the aborted-transaction index that lets
//! read_committed consumers drop the records of aborted transactions.
//!
//! Both layouts are Kafka's, so that the bytes a client fetches (and a tool dumps) are the
//! ones Kafka would store:
//! - a control batch is transactional and control, holds one record with no sequence, whose
//!   key is `version: i16 = 0, type: i16` (0 abort, 1 commit) and whose value is
//!   `version: i16 = 0, coordinator_epoch: i32`;
//! - a segment's `.txnindex` file is a run of 34-byte entries `version: i16 = 0,
//!   producer_id: i64, first_offset: i64, last_offset: i64, last_stable_offset: i64`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use bytes::Bytes;
use kafka_protocol::records::{Compression, Record, TimestampType};

use super::batch::BatchHeader;
use super::producer_state::{CompletedTxn, ProducerStateTable};
use crate::error::{Error, Result};

/// Commit or abort: the two control record types that end a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    Abort,
    Commit,
}

impl Marker {
    fn type_code(self) -> i16 {
        match self {
            Marker::Abort => 0,
            Marker::Commit => 1,
        }
    }
}

/// The control batch ending `producer_id`'s transaction, written at `timestamp`.
pub fn marker_batch(
    marker: Marker,
    producer_id: i64,
    producer_epoch: i16,
    coordinator_epoch: i32,
    timestamp: i64,
) -> Result<Vec<u8>> {
    let mut key = Vec::with_capacity(4);
    key.extend_from_slice(&0i16.to_be_bytes());
    key.extend_from_slice(&marker.type_code().to_be_bytes());
    let mut value = Vec::with_capacity(6);
    value.extend_from_slice(&0i16.to_be_bytes());
    value.extend_from_slice(&coordinator_epoch.to_be_bytes());
    let record = Record {
        transactional: true,
        control: true,
        delete_horizon: false,
        partition_leader_epoch: 0,
        producer_id,
        producer_epoch,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp,
        key: Some(Bytes::from(key)),
        value: Some(Bytes::from(value)),
        headers: Default::default(),
    };
    super::records::encode(&[record], Compression::None)
}

/// What a control batch says: its marker and coordinator epoch. `batch` is one complete,
/// CRC-checked batch whose header says it is a control batch. Control records of types
/// other than commit and abort (Kafka has a few for its own logs) end no transaction:
/// `None`.
pub fn read_marker(h: &BatchHeader, batch: &[u8]) -> Result<Option<(Marker, i32)>> {
    if !h.is_control() {
        return Ok(None);
    }
    if h.compression() != 0 {
        return Err(Error::CorruptBatch("compressed control batch".into()));
    }
    // A batch cut short by a torn write in a segment recovery does not scan arrives
    // shorter than its header says.
    let whole = batch
        .get(..h.total_len())
        .ok_or_else(|| Error::CorruptBatch("control batch cut short".into()))?;
    let set = super::records::decode_batch(whole)?;
    let Some(r) = set.records.first() else {
        return Err(Error::CorruptBatch("control batch without a record".into()));
    };
    let key = r.key.as_deref().unwrap_or_default();
    if key.len() < 4 {
        return Err(Error::CorruptBatch("control record key too short".into()));
    }
    let marker = match i16::from_be_bytes([key[2], key[3]]) {
        0 => Marker::Abort,
        1 => Marker::Commit,
        _ => return Ok(None),
    };
    let value = r.value.as_deref().unwrap_or_default();
    let coordinator_epoch = if value.len() >= 6 {
        i32::from_be_bytes([value[2], value[3], value[4], value[5]])
    } else {
        return Err(Error::CorruptBatch(
            "transaction marker value too short".into(),
        ));
    };
    Ok(Some((marker, coordinator_epoch)))
}

/// Fold one stored batch into producer state: a control batch is read whole (`read`) to
/// learn its marker. Returns the transaction a marker ended.
pub fn fold(
    table: &mut ProducerStateTable,
    h: &BatchHeader,
    read: impl FnOnce() -> Result<Vec<u8>>,
) -> Result<Option<CompletedTxn>> {
    let marker = if h.is_control() {
        read_marker(h, &read()?)?
    } else {
        None
    };
    Ok(table.record(h, marker))
}

/// One aborted transaction of a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    /// Offset of the abort marker.
    pub last_offset: i64,
    /// The partition's last stable offset when the marker was written.
    pub last_stable_offset: i64,
}

/// Size of one `.txnindex` entry.
pub const ENTRY_LEN: usize = 34;

impl AbortedTxn {
    pub fn encode(&self) -> [u8; ENTRY_LEN] {
        let mut out = [0u8; ENTRY_LEN];
        out[2..10].copy_from_slice(&self.producer_id.to_be_bytes());
        out[10..18].copy_from_slice(&self.first_offset.to_be_bytes());
        out[18..26].copy_from_slice(&self.last_offset.to_be_bytes());
        out[26..34].copy_from_slice(&self.last_stable_offset.to_be_bytes());
        out
    }
}

fn be_i64(b: &[u8]) -> i64 {
    i64::from_be_bytes(b[..8].try_into().expect("eight bytes"))
}

/// Decode a `.txnindex` file. A torn last entry (a crash while it was appended) is dropped;
/// an unknown version or an entry that contradicts itself is an error.
pub fn decode_index(raw: &[u8]) -> Result<Vec<AbortedTxn>> {
    let mut out = Vec::with_capacity(raw.len() / ENTRY_LEN);
    for chunk in raw.chunks_exact(ENTRY_LEN) {
        let version = i16::from_be_bytes([chunk[0], chunk[1]]);
        if version != 0 {
            return Err(Error::CorruptBatch(format!(
                "transaction index entry of unknown version {version}"
            )));
        }
        let e = AbortedTxn {
            producer_id: be_i64(&chunk[2..]),
            first_offset: be_i64(&chunk[10..]),
            last_offset: be_i64(&chunk[18..]),
            last_stable_offset: be_i64(&chunk[26..]),
        };
        if e.first_offset < 0 || e.last_offset < e.first_offset {
            return Err(Error::CorruptBatch(format!(
                "transaction index entry with offsets {}..{}",
                e.first_offset, e.last_offset
            )));
        }
        out.push(e);
    }
    Ok(out)
}

/// File name of the index of the segment starting at `base`.
pub fn index_name(base: i64) -> String {
    format!("{base:020}.txnindex")
}

/// The aborted transactions of one partition, in memory and in one `.txnindex` file per
/// segment holding abort markers. An entry belongs to the segment holding its marker, so a
/// segment's file goes when the segment does.
///
/// Entries reach their file without an fsync; the log syncs a segment's file before it
/// writes the producer snapshot that follows it, and replays markers above the snapshot at
/// open, so an entry lost in a crash is found again.
#[derive(Debug, Default)]
pub struct TxnIndex {
    /// By marker offset.
    entries: BTreeMap<i64, AbortedTxn>,
    /// Segments whose file has entries not yet fsynced.
    unsynced: Vec<i64>,
}

impl TxnIndex {
    /// Load the files of the segments at `bases` (sorted) from `dir`. Entries are placed
    /// by their marker offset; files of segments that no longer exist are removed.
    pub fn load(dir: &Path, bases: &[i64]) -> Result<TxnIndex> {
        let mut idx = TxnIndex::default();
        let Ok(listing) = std::fs::read_dir(dir) else {
            return Ok(idx);
        };
        for entry in listing.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            let Some(base) = name
                .strip_suffix(".txnindex")
                .and_then(|s| s.parse::<i64>().ok())
            else {
                continue;
            };
            let path = entry.path();
            if bases.binary_search(&base).is_err() {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            let raw = std::fs::read(&path).map_err(|e| Error::io(path.display().to_string(), e))?;
            for e in decode_index(&raw).map_err(|e| Error::CorruptMetadata {
                path: path.display().to_string(),
                reason: e.to_string(),
            })? {
                idx.entries.insert(e.last_offset, e);
            }
        }
        Ok(idx)
    }

    /// Whether an entry for the marker at `last_offset` is known.
    pub fn contains(&self, last_offset: i64) -> bool {
        self.entries.contains_key(&last_offset)
    }

    /// Record an aborted transaction whose marker is in the segment at `segment_base`.
    pub fn add(&mut self, dir: &Path, segment_base: i64, e: AbortedTxn) -> Result<()> {
        if self.entries.insert(e.last_offset, e).is_some() {
            return Ok(());
        }
        let path = dir.join(index_name(segment_base));
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|err| Error::io(path.display().to_string(), err))?;
        f.write_all(&e.encode())
            .map_err(|err| Error::io(path.display().to_string(), err))?;
        if !self.unsynced.contains(&segment_base) {
            self.unsynced.push(segment_base);
        }
        Ok(())
    }

    /// fsync the files written since the last sync.
    pub fn sync(&mut self, dir: &Path) -> Result<()> {
        for base in std::mem::take(&mut self.unsynced) {
            let path = dir.join(index_name(base));
            match std::fs::File::open(&path) {
                Ok(f) => f
                    .sync_all()
                    .map_err(|e| Error::io(path.display().to_string(), e))?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(path.display().to_string(), e)),
            }
        }
        Ok(())
    }

    /// Aborted transactions a read of `[from, upto)` may hold records of: those whose
    /// marker is at or after `from` and which started before `upto`.
    pub fn overlapping(&self, from: i64, upto: i64) -> Vec<AbortedTxn> {
        self.entries
            .range(from..)
            .map(|(_, e)| *e)
            .filter(|e| e.first_offset < upto)
            .collect()
    }

    /// Forget entries whose marker is below `offset` (segments removed from the start).
    /// Files go with their segments.
    pub fn drop_below(&mut self, offset: i64) {
        self.entries = self.entries.split_off(&offset);
    }

    /// Forget entries whose marker is at or above `offset` (a truncation), rewriting the
    /// file of the segment at `cut_segment` which may keep some of its entries, and removing
    /// the files of segments above it.
    pub fn truncate(&mut self, dir: &Path, offset: i64, cut_segment: i64) -> Result<()> {
        let gone = self.entries.split_off(&offset);
        if gone.is_empty() {
            return Ok(());
        }
        let kept: Vec<u8> = self
            .entries
            .range(cut_segment..)
            .flat_map(|(_, e)| e.encode())
            .collect();
        let path = dir.join(index_name(cut_segment));
        if kept.is_empty() {
            let _ = std::fs::remove_file(&path);
        } else {
            crate::fsutil::write_atomic(&path, &kept)?;
        }
        self.unsynced.retain(|b| *b < cut_segment);
        Ok(())
    }

    /// Forget the entries of the markers at `markers` (compaction removed them), rewriting
    /// the file of the segment covering `segment`.
    pub fn remove(
        &mut self,
        dir: &Path,
        segment: std::ops::Range<i64>,
        markers: &[i64],
    ) -> Result<()> {
        let mut changed = false;
        for m in markers {
            changed |= self.entries.remove(m).is_some();
        }
        if !changed {
            return Ok(());
        }
        let kept: Vec<u8> = self
            .entries
            .range(segment.clone())
            .flat_map(|(_, e)| e.encode())
            .collect();
        let path = dir.join(index_name(segment.start));
        if kept.is_empty() {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(path.display().to_string(), e)),
            }
        } else {
            crate::fsutil::write_atomic(&path, &kept)?;
        }
        self.unsynced.retain(|b| *b != segment.start);
        Ok(())
    }

    /// Forget everything (the log restarted elsewhere; its files went with its segments).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.unsynced.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_round_trip_through_the_batch_layout() {
        for (m, ce) in [(Marker::Commit, 7), (Marker::Abort, 0)] {
            let raw = marker_batch(m, 42, 3, ce, 1000).unwrap();
            let h = super::super::batch::parse_header(&raw).unwrap().unwrap();
            assert!(h.is_control());
            assert_ne!(h.attributes & super::super::batch::ATTR_TRANSACTIONAL, 0);
            assert_eq!(
                (h.producer_id, h.producer_epoch, h.base_sequence),
                (42, 3, -1)
            );
            super::super::batch::verify_crc(&h, &raw).unwrap();
            assert_eq!(read_marker(&h, &raw).unwrap(), Some((m, ce)));
            assert!(matches!(
                read_marker(&h, &raw[..raw.len() - 1]),
                Err(Error::CorruptBatch(_))
            ));
        }
    }

    #[test]
    fn index_entries_round_trip_and_a_torn_tail_is_dropped() {
        let e = AbortedTxn {
            producer_id: 9,
            first_offset: 10,
            last_offset: 20,
            last_stable_offset: 10,
        };
        let mut raw = e.encode().to_vec();
        raw.extend_from_slice(&e.encode()[..20]);
        assert_eq!(decode_index(&raw).unwrap(), vec![e]);
        let mut bad = e.encode();
        bad[1] = 1;
        assert!(decode_index(&bad).is_err());
    }

    #[test]
    fn files_follow_segments_and_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let mut idx = TxnIndex::default();
        let e = |pid, first, last| AbortedTxn {
            producer_id: pid,
            first_offset: first,
            last_offset: last,
            last_stable_offset: first,
        };
        idx.add(dir.path(), 0, e(1, 0, 5)).unwrap();
        idx.add(dir.path(), 0, e(2, 3, 8)).unwrap();
        idx.add(dir.path(), 10, e(3, 9, 12)).unwrap();
        idx.sync(dir.path()).unwrap();
        assert_eq!(idx.overlapping(6, 100).len(), 2);
        assert_eq!(idx.overlapping(0, 3).len(), 1);
        let back = TxnIndex::load(dir.path(), &[0, 10]).unwrap();
        assert_eq!(back.entries, idx.entries);
        idx.truncate(dir.path(), 7, 0).unwrap();
        assert_eq!(idx.overlapping(0, 100), vec![e(1, 0, 5)]);
        std::fs::remove_file(dir.path().join(index_name(10))).unwrap();
        let back = TxnIndex::load(dir.path(), &[0]).unwrap();
        assert_eq!(back.entries, idx.entries);
    }
}
