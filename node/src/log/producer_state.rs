//! Idempotent producer state per partition: epochs, the last five batches, and the checks
//! Kafka applies to sequence numbers.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::batch::BatchHeader;
use super::txn::Marker;
use crate::error::{Error, Result};

/// Kafka remembers this many batches per producer for duplicate detection.
pub const DEDUP_WINDOW: usize = 5;

/// Metadata of one appended batch, kept for duplicate detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchMeta {
    pub first_seq: i32,
    pub last_seq: i32,
    pub first_offset: i64,
    pub last_offset: i64,
    pub timestamp: i64,
}

/// What one producer has written to this partition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerEntry {
    pub epoch: i16,
    pub batches: VecDeque<BatchMeta>,
    /// Offset of the producer's first batch in its open transaction here, if one is open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub txn_first_offset: Option<i64>,
    /// Epoch of the transaction coordinator that wrote the producer's last marker here
    /// (a marker from an older coordinator is fenced).
    #[serde(default)]
    pub coordinator_epoch: i32,
    /// Largest timestamp of the producer's last batch or marker here (what
    /// producer.id.expiration.ms counts from, as in Kafka). Snapshots before it was kept
    /// have 0: the last batch's timestamp stands in.
    #[serde(default)]
    pub last_timestamp: i64,
}

impl ProducerEntry {
    /// When the producer last wrote here (a batch or a marker), as far as this state
    /// knows.
    pub fn last_write(&self) -> i64 {
        let last_batch = self.batches.back().map_or(i64::MIN, |b| b.timestamp);
        self.last_timestamp.max(last_batch)
    }
}

/// A transaction a marker ended in this partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompletedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    /// The marker's offset.
    pub last_offset: i64,
    pub marker: Marker,
}

/// The outcome of checking an incoming batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Append it.
    Append,
    /// Already written: answer with the original offsets and write nothing.
    Duplicate(BatchMeta),
}

/// Producer state of one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerStateTable {
    pub producers: HashMap<i64, ProducerEntry>,
}

fn in_sequence(last_seq: i32, next_seq: i32) -> bool {
    next_seq as i64 == last_seq as i64 + 1 || (next_seq == 0 && last_seq == i32::MAX)
}

impl ProducerStateTable {
    /// Check an incoming batch against what the producer wrote before (pure).
    pub fn check(&self, h: &BatchHeader) -> Result<SequenceCheck> {
        if !h.has_producer_id() || h.base_sequence < 0 {
            return Ok(SequenceCheck::Append);
        }
        let Some(entry) = self.producers.get(&h.producer_id) else {
            // No state (new producer, or state removed by retention): any sequence is accepted,
            // as Kafka does.
            return Ok(SequenceCheck::Append);
        };
        if h.producer_epoch < entry.epoch {
            return Err(Error::InvalidProducerEpoch(format!(
                "producer {} epoch {} is older than current epoch {}",
                h.producer_id, h.producer_epoch, entry.epoch
            )));
        }
        if h.producer_epoch > entry.epoch {
            if h.base_sequence != 0 {
                return Err(Error::OutOfOrderSequence(format!(
                    "producer {} new epoch {} must start at sequence 0, got {}",
                    h.producer_id, h.producer_epoch, h.base_sequence
                )));
            }
            return Ok(SequenceCheck::Append);
        }
        if let Some(dup) = entry
            .batches
            .iter()
            .find(|b| b.first_seq == h.base_sequence && b.last_seq == h.last_sequence())
        {
            return Ok(SequenceCheck::Duplicate(*dup));
        }
        match entry.batches.back() {
            Some(last) if !in_sequence(last.last_seq, h.base_sequence) => {
                Err(Error::OutOfOrderSequence(format!(
                    "producer {} expected sequence {} but got {}",
                    h.producer_id,
                    last.last_seq.wrapping_add(1),
                    h.base_sequence
                )))
            }
            _ => Ok(SequenceCheck::Append),
        }
    }

    /// Check a transaction marker the coordinator asks for: an older producer epoch is
    /// fenced, and so is an older coordinator.
    pub fn check_marker(&self, producer_id: i64, epoch: i16, coordinator_epoch: i32) -> Result<()> {
        let Some(entry) = self.producers.get(&producer_id) else {
            return Ok(());
        };
        if epoch < entry.epoch {
            return Err(Error::InvalidProducerEpoch(format!(
                "marker for producer {producer_id} epoch {epoch} is older than current epoch {}",
                entry.epoch
            )));
        }
        if coordinator_epoch < entry.coordinator_epoch {
            return Err(Error::Kafka {
                code: kafka_protocol::error::ResponseError::TransactionCoordinatorFenced,
                message: format!(
                    "marker from coordinator epoch {coordinator_epoch}, older than {}",
                    entry.coordinator_epoch
                ),
            });
        }
        Ok(())
    }

    /// Offset of the first batch of the oldest open transaction: the last stable offset
    /// cannot pass it.
    pub fn first_unstable_offset(&self) -> Option<i64> {
        self.producers
            .values()
            .filter_map(|e| e.txn_first_offset)
            .min()
    }

    /// Forget the producers with no transaction open whose last write is
    /// `expiration_ms` or more before `now_ms` (producer.id.expiration.ms). Returns how
    /// many went.
    pub fn expire(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers.retain(|_, e| {
            e.txn_first_offset.is_some() || now_ms.saturating_sub(e.last_write()) < expiration_ms
        });
        before - self.producers.len()
    }

    /// Record an appended batch (offsets already assigned); `marker` is what a control
    /// batch says. Returns the transaction a marker ended.
    pub fn record(
        &mut self,
        h: &BatchHeader,
        marker: Option<(Marker, i32)>,
    ) -> Option<CompletedTxn> {
        if !h.has_producer_id() {
            return None;
        }
        let entry = self.producers.entry(h.producer_id).or_default();
        if h.producer_epoch != entry.epoch {
            entry.epoch = h.producer_epoch;
            entry.batches.clear();
        }
        entry.last_timestamp = entry.last_timestamp.max(h.max_timestamp);
        if let Some((marker, coordinator_epoch)) = marker {
            entry.coordinator_epoch = coordinator_epoch;
            return entry.txn_first_offset.take().map(|first| CompletedTxn {
                producer_id: h.producer_id,
                first_offset: first,
                last_offset: h.base_offset,
                marker,
            });
        }
        if h.is_transactional() {
            entry.txn_first_offset.get_or_insert(h.base_offset);
        }
        if h.base_sequence < 0 {
            return None;
        }
        entry.batches.push_back(BatchMeta {
            first_seq: h.base_sequence,
            last_seq: h.last_sequence(),
            first_offset: h.base_offset,
            last_offset: h.last_offset(),
            timestamp: h.max_timestamp,
        });
        while entry.batches.len() > DEDUP_WINDOW {
            entry.batches.pop_front();
        }
        None
    }
}

/// On-disk snapshot of the producer state at a log offset.
#[derive(Debug, Serialize, Deserialize)]
pub struct Snapshot {
    pub version: u32,
    /// State covers every batch below this offset.
    pub offset: i64,
    pub table: ProducerStateTable,
}

/// Version written by this build.
pub const SNAPSHOT_VERSION: u32 = 1;

/// File name for a snapshot at `offset`.
pub fn snapshot_name(offset: i64) -> String {
    format!("{offset:020}.snapshot")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr(pid: i64, epoch: i16, seq: i32, base: i64, count: i32) -> BatchHeader {
        BatchHeader {
            base_offset: base,
            batch_length: 100,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: count - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            record_count: count,
        }
    }

    impl ProducerStateTable {
        fn record_plain(&mut self, h: &BatchHeader) {
            assert_eq!(self.record(h, None), None);
        }
    }

    #[test]
    fn transactions_open_at_their_first_batch_and_end_at_their_marker() {
        let mut t = ProducerStateTable::default();
        let mut b = hdr(7, 0, 0, 10, 3);
        b.attributes = super::super::batch::ATTR_TRANSACTIONAL;
        t.record_plain(&b);
        let mut b2 = hdr(8, 0, 0, 13, 1);
        b2.attributes = super::super::batch::ATTR_TRANSACTIONAL;
        t.record_plain(&b2);
        let mut more = hdr(7, 0, 3, 14, 2);
        more.attributes = super::super::batch::ATTR_TRANSACTIONAL;
        t.record_plain(&more);
        assert_eq!(t.first_unstable_offset(), Some(10));
        let mut m = hdr(7, 0, -1, 16, 1);
        m.attributes = super::super::batch::ATTR_TRANSACTIONAL | super::super::batch::ATTR_CONTROL;
        assert_eq!(
            t.record(&m, Some((Marker::Abort, 2))),
            Some(CompletedTxn {
                producer_id: 7,
                first_offset: 10,
                last_offset: 16,
                marker: Marker::Abort
            })
        );
        assert_eq!(t.first_unstable_offset(), Some(13));
        // Fencing: an older epoch, or an older coordinator.
        assert!(t.check_marker(7, 0, 2).is_ok());
        assert!(matches!(t.check_marker(7, 0, 1), Err(Error::Kafka { .. })));
        let mut bumped = m;
        bumped.producer_epoch = 1;
        bumped.base_offset = 17;
        assert_eq!(t.record(&bumped, Some((Marker::Abort, 2))), None);
        assert!(matches!(
            t.check_marker(7, 0, 2),
            Err(Error::InvalidProducerEpoch(_))
        ));
    }

    #[test]
    fn in_order_then_duplicate_then_gap() {
        let mut t = ProducerStateTable::default();
        let b0 = hdr(7, 0, 0, 0, 5);
        assert_eq!(t.check(&b0).unwrap(), SequenceCheck::Append);
        t.record_plain(&b0);
        let b1 = hdr(7, 0, 5, 5, 5);
        assert_eq!(t.check(&b1).unwrap(), SequenceCheck::Append);
        t.record_plain(&b1);
        // Retry of b0 is a duplicate with its original offsets.
        match t.check(&hdr(7, 0, 0, -1, 5)).unwrap() {
            SequenceCheck::Duplicate(m) => assert_eq!((m.first_offset, m.last_offset), (0, 4)),
            other => panic!("{other:?}"),
        }
        // A gap is out of order.
        assert!(matches!(
            t.check(&hdr(7, 0, 20, -1, 1)),
            Err(Error::OutOfOrderSequence(_))
        ));
        // An old epoch is fenced.
        let mut t2 = t.clone();
        t2.record_plain(&hdr(7, 1, 0, 10, 1));
        assert!(matches!(
            t2.check(&hdr(7, 0, 10, -1, 1)),
            Err(Error::InvalidProducerEpoch(_))
        ));
        // A new epoch must start at 0.
        assert!(matches!(
            t.check(&hdr(7, 1, 3, -1, 1)),
            Err(Error::OutOfOrderSequence(_))
        ));
        assert_eq!(
            t.check(&hdr(7, 1, 0, -1, 1)).unwrap(),
            SequenceCheck::Append
        );
    }

    #[test]
    fn window_is_five_batches() {
        let mut t = ProducerStateTable::default();
        for i in 0..7 {
            t.record_plain(&hdr(1, 0, i, i as i64, 1));
        }
        assert_eq!(t.producers[&1].batches.len(), DEDUP_WINDOW);
        // The oldest two fell out of the window: a retry of seq 0 is now out of order.
        assert!(t.check(&hdr(1, 0, 0, -1, 1)).is_err());
        assert!(matches!(
            t.check(&hdr(1, 0, 3, -1, 1)).unwrap(),
            SequenceCheck::Duplicate(_)
        ));
    }

    #[test]
    fn idle_producers_expire_unless_a_transaction_is_open() {
        let mut t = ProducerStateTable::default();
        let mut idle = hdr(1, 0, 0, 0, 1);
        idle.max_timestamp = 1_000;
        t.record_plain(&idle);
        let mut recent = hdr(2, 0, 0, 1, 1);
        recent.max_timestamp = 9_000;
        t.record_plain(&recent);
        let mut open = hdr(3, 0, 0, 2, 1);
        open.max_timestamp = 1_000;
        open.attributes = super::super::batch::ATTR_TRANSACTIONAL;
        t.record_plain(&open);
        assert_eq!(t.expire(10_000, 5_000), 1);
        assert!(!t.producers.contains_key(&1));
        assert!(t.producers.contains_key(&2) && t.producers.contains_key(&3));
        // An expired producer is a new one: any sequence is taken.
        assert_eq!(
            t.check(&hdr(1, 0, 7, -1, 1)).unwrap(),
            SequenceCheck::Append
        );
        // A marker counts as a write; once the transaction ends, the clock runs from it.
        let mut m = hdr(3, 0, -1, 3, 1);
        m.max_timestamp = 9_500;
        m.attributes = super::super::batch::ATTR_TRANSACTIONAL | super::super::batch::ATTR_CONTROL;
        assert!(t.record(&m, Some((Marker::Commit, 0))).is_some());
        assert_eq!(t.expire(13_900, 5_000), 0);
        assert_eq!(t.expire(14_600, 5_000), 2);
        assert!(t.producers.is_empty());
    }

    #[test]
    fn unknown_producer_accepts_any_sequence() {
        let t = ProducerStateTable::default();
        assert_eq!(
            t.check(&hdr(9, 0, 42, -1, 1)).unwrap(),
            SequenceCheck::Append
        );
    }
}
