//! The follower's side of the log: appending batches whose offsets the leader assigned, and
//! truncating after a leader change (the offset comes from OffsetForLeaderEpoch).

use super::*;

impl PartitionLog {
    /// Append batches fetched from the leader, stored exactly as the leader stored them.
    /// `data` may end in a partial batch (Kafka fetches may cut the last one); it is left
    /// for the next fetch. Returns the new log end offset.
    pub fn append_replicated(&mut self, data: &[u8]) -> Result<i64> {
        if let Some(reason) = &self.poisoned {
            return Err(Error::StorageFailed(reason.clone()));
        }
        self.materialize()?;
        let mut pos = 0usize;
        let mut headers: Vec<(BatchHeader, usize)> = Vec::new();
        let mut expected = self.log_end_offset();
        while pos < data.len() {
            let rest = &data[pos..];
            let Some(h) = batch::parse_header(rest)? else {
                break;
            };
            let len = h.total_len();
            if len > rest.len() {
                break;
            }
            batch::verify_crc(&h, &rest[..len])?;
            if h.base_offset != expected {
                return Err(Error::CorruptBatch(format!(
                    "replicated batch starts at {} but the log ends at {expected}",
                    h.base_offset
                )));
            }
            headers.push((h, pos));
            expected = h.last_offset() + 1;
            pos += len;
        }
        if headers.is_empty() {
            return Ok(self.log_end_offset());
        }
        let total = pos;
        let first_ts = headers
            .iter()
            .map(|(h, _)| h.max_timestamp)
            .max()
            .unwrap_or(-1);
        if self.should_roll(total, first_ts) {
            self.roll()?;
        }
        if let Err(e) = self.active_mut().append(&data[..total], &headers) {
            tracing::error!(dir = %self.dir.display(), error = %e, "replicated append failed; partition refuses writes until restart");
            self.poisoned = Some(e.to_string());
            return Err(e);
        }
        let mut epochs_changed = false;
        let active_base = self.active().base_offset;
        for (h, at) in &headers {
            let done = txn::fold(&mut self.producers, h, || {
                Ok(data[*at..*at + h.total_len()].to_vec())
            })?;
            if let Some(done) = done {
                self.note_completed(active_base, &done)?;
            }
            let latest = self.epochs.last().map(|(e, _)| *e);
            if latest.is_none_or(|e| h.partition_leader_epoch > e) {
                self.epochs.push((h.partition_leader_epoch, h.base_offset));
                epochs_changed = true;
            }
        }
        if epochs_changed {
            self.write_meta()?;
        }
        self.dirty_bytes += total as u64;
        Ok(self.log_end_offset())
    }

    /// Record that a new leader epoch starts at the current log end (a leader taking over),
    /// so that OffsetForLeaderEpoch answers followers right even before the first append.
    pub fn begin_epoch(&mut self, epoch: i32) -> Result<()> {
        if self.epochs.last().is_some_and(|(e, _)| *e >= epoch) {
            return Ok(());
        }
        let leo = self.log_end_offset();
        self.epochs.push((epoch, leo));
        self.write_meta()
    }

    /// Remove every batch at or above `offset` (batch boundary). Below the log start it
    /// empties the log and restarts it at `offset` instead.
    pub fn truncate_to(&mut self, offset: i64) -> Result<()> {
        if offset < 0 {
            return Err(Error::InvalidRequest(format!(
                "truncation to offset {offset}"
            )));
        }
        let leo = self.log_end_offset();
        if offset >= leo {
            return Ok(());
        }
        if offset < self.log_start_offset {
            return self.reset_to(offset);
        }
        // Whole segments above the cut go; the one holding it is cut back.
        let doomed: Vec<i64> = self
            .segments
            .keys()
            .copied()
            .filter(|b| *b >= offset && *b != self.first_segment_base())
            .collect();
        for b in doomed {
            if let Some(s) = self.segments.remove(&b) {
                s.delete();
            }
        }
        let cut_in = *self
            .segments
            .range(..=offset)
            .next_back()
            .map(|(b, _)| b)
            .unwrap_or(&self.first_segment_base());
        if let Some(seg) = self.segments.get_mut(&cut_in) {
            seg.truncate_to(offset)?;
            seg.sync()?;
        }
        let new_leo = self.log_end_offset();
        self.after_truncation(new_leo)?;
        tracing::info!(dir = %self.dir.display(), from = leo, to = new_leo, "truncated log");
        Ok(())
    }

    /// Drop every segment and start an empty log at `offset` (the leader's log start is
    /// past everything this replica has).
    pub fn reset_to(&mut self, offset: i64) -> Result<()> {
        if offset < 0 {
            return Err(Error::InvalidRequest(format!(
                "log reset to offset {offset}"
            )));
        }
        self.materialize()?;
        let bases: Vec<i64> = self.segments.keys().copied().collect();
        for b in bases {
            if let Some(s) = self.segments.remove(&b) {
                s.delete();
            }
        }
        let seg = Segment::create(&self.dir, offset, self.config.index_interval_bytes)?;
        fsutil::sync_dir(&self.dir)?;
        self.segments.insert(offset, Box::new(seg));
        self.log_start_offset = offset;
        self.epochs.clear();
        self.producers = ProducerStateTable::default();
        self.txns.clear();
        self.removable_markers.clear();
        for off in self.snapshot_offsets()? {
            let _ = std::fs::remove_file(self.dir.join(snapshot_name(off)));
        }
        self.after_truncation(offset)?;
        tracing::info!(dir = %self.dir.display(), offset, "log reset to the leader's start");
        Ok(())
    }

    /// Start over at `start` from the bucket's copy (a follower whose log ends below the
    /// leader's local start): every local batch goes, and the log continues with the epoch
    /// history and producer state the bucket holds for `start`, saved before it returns so
    /// that a crash keeps them.
    pub fn reset_to_restored(
        &mut self,
        start: i64,
        epochs: Vec<(i32, i64)>,
        producers: ProducerStateTable,
    ) -> Result<()> {
        self.reset_to(start)?;
        self.epochs = epochs;
        self.producers = producers;
        self.snapshot_producers()?;
        self.write_meta()?;
        tracing::info!(dir = %self.dir.display(), offset = start, "log rebuilt from the bucket's copy");
        Ok(())
    }

    /// After the log was cut at `leo`: producer state is rebuilt from the newest snapshot
    /// at or below the cut and the batches after it (a cut may reopen a transaction whose
    /// marker it removed), and aborted-transaction entries above the cut go.
    fn after_truncation(&mut self, leo: i64) -> Result<()> {
        for off in self.snapshot_offsets()? {
            if off > leo {
                let _ = std::fs::remove_file(self.dir.join(snapshot_name(off)));
            }
        }
        let cut_segment = self
            .segments
            .range(..=leo)
            .next_back()
            .map(|(b, _)| *b)
            .unwrap_or_else(|| self.first_segment_base());
        self.txns.truncate(&self.dir, leo, cut_segment)?;
        self.removable_markers.split_off(&leo);
        self.load_producer_state()?;
        self.epochs.retain(|(_, start)| *start < leo);
        self.durable_offset = self.durable_offset.min(leo);
        self.write_meta()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::tests::make_batch;

    fn cfg() -> LogConfig {
        LogConfig {
            segment_bytes: 400,
            index_interval_bytes: 100,
            ..LogConfig::default()
        }
    }

    /// A leader log with `n` single-batch appends, two records each, in `epoch`.
    fn leader_append(log: &mut PartitionLog, n: usize, epoch: i32, pid: i64, seq0: i32) {
        for i in 0..n {
            let b = make_batch(&[b"a", b"b"], 1_000, pid, seq0 + 2 * i as i32);
            let spans = batch::validate_produce_records(&b).unwrap();
            log.append(&b, &spans, epoch, 1_000).unwrap();
        }
    }

    fn all_bytes(log: &PartitionLog, from: i64) -> Vec<u8> {
        let mut out = Vec::new();
        let mut off = from;
        while let Some(plan) = log
            .plan_read(off, 1 << 20, true, log.log_end_offset())
            .unwrap()
        {
            let bytes = plan.read().unwrap();
            let spans = batch::validate_produce_records(&bytes).unwrap();
            off = spans.last().unwrap().header.last_offset() + 1;
            out.extend_from_slice(&bytes);
        }
        out
    }

    #[test]
    fn follower_copies_the_leader_byte_for_byte_with_epochs_and_producers() {
        let dir = tempfile::tempdir().unwrap();
        let id = uuid::Uuid::new_v4();
        let mut leader = PartitionLog::open(&dir.path().join("l"), id, cfg(), false).unwrap();
        leader_append(&mut leader, 5, 0, 7, 0);
        leader_append(&mut leader, 5, 3, 7, 10);
        let mut follower = PartitionLog::open(&dir.path().join("f"), id, cfg(), false).unwrap();
        // Fetched in two pieces, the second cut mid-batch as a Kafka fetch may be.
        let bytes = all_bytes(&leader, 0);
        let cut = bytes.len() / 2 + 3;
        let leo = follower.append_replicated(&bytes[..cut]).unwrap();
        assert!(leo > 0 && leo < leader.log_end_offset());
        let rest = all_bytes(&leader, leo);
        assert_eq!(follower.append_replicated(&rest).unwrap(), 20);
        assert_eq!(all_bytes(&follower, 0), bytes);
        assert_eq!(follower.epochs(), leader.epochs());
        assert_eq!(follower.epoch_end_offset(0), (0, 10));
        // Producer state came along: a retry of the last batch is a duplicate here too.
        let retry = make_batch(&[b"a", b"b"], 1_000, 7, 18);
        let spans = batch::validate_produce_records(&retry).unwrap();
        assert!(follower.append(&retry, &spans, 4, 1_000).unwrap().duplicate);
        // Batches that do not continue the log are refused, nothing written.
        let again = all_bytes(&leader, 10);
        assert!(follower.append_replicated(&again).is_err());
        assert_eq!(follower.log_end_offset(), 20);
    }

    #[test]
    fn truncation_cuts_at_batch_boundaries_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let id = uuid::Uuid::new_v4();
        let path = dir.path().join("p");
        let mut log = PartitionLog::open(&path, id, cfg(), false).unwrap();
        leader_append(&mut log, 6, 1, 9, 0);
        leader_append(&mut log, 6, 2, 9, 12);
        assert!(log.segment_count() > 1, "spans segments");
        log.truncate_to(12).unwrap();
        assert_eq!(log.log_end_offset(), 12);
        assert_eq!(log.epochs(), &[(1, 0)]);
        // Mid-batch: the batch holding offset 5 (4..=5) is kept whole.
        log.truncate_to(5).unwrap();
        assert_eq!(log.log_end_offset(), 6);
        // The producer may continue after the cut, from the sequence it has there.
        leader_append(&mut log, 1, 3, 9, 6);
        assert_eq!(log.log_end_offset(), 8);
        drop(log);
        let log = PartitionLog::open(&path, id, cfg(), true).unwrap();
        assert_eq!(log.log_end_offset(), 8);
        assert_eq!(log.epochs(), &[(1, 0), (3, 6)]);
    }

    #[test]
    fn a_rebuild_from_the_bucket_keeps_its_epochs_and_producers_across_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let id = uuid::Uuid::new_v4();
        // What the bucket holds: 20 offsets of producer 7, in epochs 0 and 3.
        let mut remote = PartitionLog::open(&dir.path().join("r"), id, cfg(), false).unwrap();
        leader_append(&mut remote, 5, 0, 7, 0);
        leader_append(&mut remote, 5, 3, 7, 10);
        // A follower far behind, with an older producer's batches.
        let path = dir.path().join("f");
        let mut log = PartitionLog::open(&path, id, cfg(), false).unwrap();
        leader_append(&mut log, 3, 0, 1, 0);
        log.reset_to_restored(20, remote.epochs().to_vec(), remote.producers.clone())
            .unwrap();
        drop(log);
        let mut log = PartitionLog::open(&path, id, cfg(), true).unwrap();
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (20, 20));
        assert_eq!(log.epochs(), remote.epochs());
        // The producer's retry of its last batch is still known as a duplicate, and its next
        // batch continues at the restored offset.
        let retry = make_batch(&[b"a", b"b"], 1_000, 7, 18);
        let spans = batch::validate_produce_records(&retry).unwrap();
        assert!(log.append(&retry, &spans, 4, 1_000).unwrap().duplicate);
        let next = make_batch(&[b"a", b"b"], 1_000, 7, 20);
        let spans = batch::validate_produce_records(&next).unwrap();
        let info = log.append(&next, &spans, 4, 1_000).unwrap();
        assert!(!info.duplicate);
        assert_eq!(log.log_end_offset(), 22);
    }

    #[test]
    fn reset_restarts_the_log_at_the_leaders_start() {
        let dir = tempfile::tempdir().unwrap();
        let mut log =
            PartitionLog::open(&dir.path().join("p"), uuid::Uuid::new_v4(), cfg(), false).unwrap();
        leader_append(&mut log, 3, 0, 1, 0);
        log.truncate_to(-5).unwrap_err();
        log.reset_to(100).unwrap();
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (100, 100));
        assert!(log.epochs().is_empty());
    }
}
