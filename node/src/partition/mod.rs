//! Partitions hosted on this node: each one's log, replication state and high watermark
//! ([`Partition`]), and the table of them ([`PartitionTable`]).
//!
//! This module sits below everything that works on partitions (the broker's write and read
//! paths, the group coordinator, replication, tiering, metrics) and knows none of them: it
//! may call only `log` and its own pure [`replica`] rules. Who hosts which partition, and
//! when, is decided above it (the broker opens logs, replication applies roles).

mod guard;
pub mod replica;
mod table;

pub use guard::Guard;
pub use table::PartitionTable;

use std::sync::Arc;

use parking_lot::Mutex;

use guard::Kind;

use crate::error::{Error, Result};
use crate::log::PartitionLog;
use replica::ReplicaState;

/// One partition hosted here. Shared as `Arc<Partition>`; its name and index never change.
pub struct Partition {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub index: i32,
    log: Mutex<PartitionLog>,
    flush_lock: tokio::sync::Mutex<()>,
    /// Role, leader epoch, ISR and follower progress. The one place the leader epoch is
    /// kept.
    repl: Mutex<ReplicaState>,
    /// High watermark: consumers read below it, acks=all completes once it passes.
    /// Every change (and every role or ISR change) notifies the watchers.
    hw: tokio::sync::watch::Sender<i64>,
}

impl Partition {
    /// A partition in a given replication state, with its high watermark to start from.
    pub fn new(
        topic: &str,
        index: i32,
        repl: ReplicaState,
        hw: i64,
        log: PartitionLog,
    ) -> Partition {
        let (hw_tx, _) = tokio::sync::watch::channel(hw);
        Partition {
            topic: topic.to_string(),
            index,
            log: Mutex::new(log),
            flush_lock: tokio::sync::Mutex::new(()),
            repl: Mutex::new(repl),
            hw: hw_tx,
        }
    }

    /// `topic-index`, for messages.
    pub fn name(&self) -> String {
        format!("{}-{}", self.topic, self.index)
    }

    /// The log, locked. Hold the guard briefly and never across an await or while taking
    /// the replica state's lock after it (the order is replica state, then log).
    pub fn log(&self) -> Guard<'_, PartitionLog> {
        Guard::lock(&self.log, Kind::Log, &|| self.name())
    }

    /// The replication state, locked (the lock order is replica state, then log).
    pub fn replica(&self) -> Guard<'_, ReplicaState> {
        Guard::lock(&self.repl, Kind::Replica, &|| self.name())
    }

    /// The current leader epoch (what appended batches are stamped with).
    pub fn leader_epoch(&self) -> i32 {
        self.replica().leader_epoch
    }

    /// Whether this node leads the partition now.
    pub fn is_leader(&self) -> bool {
        self.replica().is_leader()
    }

    /// The log end offset.
    pub fn log_end_offset(&self) -> i64 {
        self.log().log_end_offset()
    }

    /// Bytes of the local log.
    pub fn size_bytes(&self) -> u64 {
        self.log().size_bytes()
    }

    /// The high watermark.
    pub fn high_watermark(&self) -> i64 {
        *self.hw.borrow()
    }

    /// The last stable offset: the high watermark, held back by the oldest open
    /// transaction (read_committed consumers read below it).
    pub fn last_stable_offset(&self) -> i64 {
        let hw = self.high_watermark();
        match self.log().first_unstable_offset() {
            Some(first) => first.min(hw),
            None => hw,
        }
    }

    /// Raise the high watermark (it never goes back, except through `reset_high_watermark`).
    pub fn advance_high_watermark(&self, hw: i64) -> bool {
        self.hw.send_if_modified(|cur| {
            if hw > *cur {
                *cur = hw;
                true
            } else {
                false
            }
        })
    }

    /// Set the high watermark to `hw` (a follower's truncation).
    pub fn reset_high_watermark(&self, hw: i64) {
        self.hw.send_replace(hw);
    }

    /// Wake everything waiting on this partition (role or ISR changed).
    pub fn notify_state_change(&self) {
        self.hw.send_modify(|_| {});
    }

    /// Watch the high watermark and state changes.
    pub fn subscribe_high_watermark(&self) -> tokio::sync::watch::Receiver<i64> {
        self.hw.subscribe()
    }

    /// The leader's high watermark after its own log grew (or a follower fetched).
    pub fn recompute_high_watermark(&self) -> bool {
        let leo = self.log().log_end_offset();
        let hw = {
            let r = self.replica();
            if !r.is_leader() {
                return false;
            }
            r.high_watermark(leo)
        };
        self.advance_high_watermark(hw)
    }

    /// Block (a thread, not a task) until the high watermark reaches the log end, for at
    /// most `bound`, or until this node stops leading: a new leader's coordinator replays
    /// only what its followers have too.
    pub fn wait_caught_up(&self, bound: std::time::Duration) {
        let deadline = std::time::Instant::now() + bound;
        while std::time::Instant::now() < deadline
            && self.high_watermark() < self.log_end_offset()
            && self.is_leader()
        {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// fsync the log until at least `offset` is durable; concurrent callers share one fsync.
    pub async fn flush_to(self: &Arc<Self>, offset: i64) -> Result<()> {
        let _turn = self.flush_lock.lock().await;
        let (file, upto) = {
            let log = self.log();
            if log.durable_offset() >= offset {
                return Ok(());
            }
            log.sync_handle()?
        };
        let part = self.clone();
        let res = tokio::task::spawn_blocking(move || {
            // A partition's first fsync makes its directory entries durable first (three
            // fsyncs, once), under the log lock but off the runtime's threads.
            part.log()
                .sync_entries()
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            file.sync_data()
        })
        .await;
        match res {
            Ok(Ok(())) => {
                self.log().mark_durable(upto);
                Ok(())
            }
            Ok(Err(e)) => {
                // After a failed fsync the page cache state is unknown: stop accepting writes.
                let err = Error::StorageFailed(format!("fsync of {} failed: {e}", self.name()));
                self.log().poison(err.to_string());
                Err(err)
            }
            Err(join) => Err(Error::StorageFailed(format!("fsync task failed: {join}"))),
        }
    }
}
