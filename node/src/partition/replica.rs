//! Pure per-partition replication state: role, ISR, follower progress and the high
//! watermark rules. No I/O; the broker applies what these functions decide.

use std::collections::HashMap;

/// What this node is for a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Leader,
    /// Following `leader` (-1: no leader is alive).
    Follower {
        leader: i32,
    },
}

/// A follower's position as the leader sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// The follower's log end offset (its last fetch offset).
    pub leo: i64,
    /// Last time the follower had everything the leader had (ms).
    pub caught_up_ms: i64,
    /// Time and leader log end of the follower's previous fetch (Kafka's rule: a fetch
    /// reaching the leader's log end as of the previous fetch counts as caught up then).
    pub last_fetch_ms: i64,
    pub leo_at_last_fetch: i64,
}

/// Replication state of one partition on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaState {
    pub me: i32,
    pub role: Role,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    /// Leader only: every other replica's progress.
    pub followers: HashMap<i32, Progress>,
    /// An ISR change sent to the controller and not answered yet.
    pub pending_isr: Option<Vec<i32>>,
    /// Follower only: the log may hold batches the new leader does not have; ask it
    /// (OffsetForLeaderEpoch) and truncate before fetching.
    pub truncate_pending: bool,
}

impl ReplicaState {
    /// A single-node partition: this node leads and is the whole ISR.
    pub fn standalone(me: i32, leader_epoch: i32) -> Self {
        ReplicaState {
            me,
            role: Role::Leader,
            leader_epoch,
            partition_epoch: 0,
            replicas: vec![me],
            isr: vec![me],
            followers: HashMap::new(),
            pending_isr: None,
            truncate_pending: false,
        }
    }

    pub fn is_leader(&self) -> bool {
        self.role == Role::Leader
    }

    /// Become leader (or stay, with new ISR/replicas). Followers start at `hw`: until they
    /// fetch, they are assumed to hold exactly what is committed, so the high watermark
    /// cannot advance on their behalf.
    pub fn become_leader(
        &mut self,
        epoch: i32,
        partition_epoch: i32,
        replicas: Vec<i32>,
        isr: Vec<i32>,
        hw: i64,
        now_ms: i64,
    ) {
        let new_term = self.role != Role::Leader || self.leader_epoch != epoch;
        // A proposed ISR stays pending (and counted in the high watermark) until the
        // partition's state moves past the one it was proposed against.
        if new_term || partition_epoch > self.partition_epoch {
            self.pending_isr = None;
        }
        self.role = Role::Leader;
        self.leader_epoch = epoch;
        self.partition_epoch = partition_epoch;
        self.replicas = replicas;
        self.isr = isr;
        self.truncate_pending = false;
        if new_term {
            self.followers.clear();
        }
        let me = self.me;
        let reps = self.replicas.clone();
        self.followers.retain(|r, _| reps.contains(r));
        for r in reps.into_iter().filter(|r| *r != me) {
            self.followers.entry(r).or_insert(Progress {
                leo: hw,
                caught_up_ms: now_ms,
                last_fetch_ms: now_ms,
                leo_at_last_fetch: hw,
            });
        }
    }

    pub fn become_follower(
        &mut self,
        leader: i32,
        epoch: i32,
        partition_epoch: i32,
        replicas: Vec<i32>,
        isr: Vec<i32>,
    ) {
        self.role = Role::Follower { leader };
        self.leader_epoch = epoch;
        self.partition_epoch = partition_epoch;
        self.replicas = replicas;
        self.isr = isr;
        self.followers.clear();
        self.pending_isr = None;
    }

    /// The high watermark the leader may publish: the smallest log end over the maximal
    /// ISR, the committed ISR together with a change sent to the controller and not yet
    /// answered (as Kafka does). A replica being added counts from the moment it is proposed:
    /// the controller may make it leader as soon as it commits the change, so every record
    /// acknowledged from then on must already be on it.
    pub fn high_watermark(&self, leader_leo: i64) -> i64 {
        let mut hw = leader_leo;
        let pending = self.pending_isr.iter().flatten();
        for r in self.isr.iter().chain(pending) {
            if *r == self.me {
                continue;
            }
            // An ISR member we have no progress for (not a replica any more) holds it back
            // at nothing: only known followers count.
            if let Some(p) = self.followers.get(r) {
                hw = hw.min(p.leo);
            }
        }
        hw
    }

    /// Record a follower's fetch at `fetch_offset` while the leader's log ends at `leo`.
    pub fn on_follower_fetch(&mut self, replica: i32, fetch_offset: i64, leo: i64, now_ms: i64) {
        let p = self.followers.entry(replica).or_insert(Progress {
            leo: fetch_offset,
            caught_up_ms: 0,
            last_fetch_ms: now_ms,
            leo_at_last_fetch: leo,
        });
        p.leo = fetch_offset;
        if fetch_offset >= leo {
            p.caught_up_ms = now_ms;
        } else if fetch_offset >= p.leo_at_last_fetch {
            p.caught_up_ms = p.caught_up_ms.max(p.last_fetch_ms);
        }
        p.last_fetch_ms = now_ms;
        p.leo_at_last_fetch = leo;
    }

    /// The ISR without followers that have lagged longer than `lag_max_ms`, if that
    /// differs from the current one and no change is pending.
    pub fn isr_to_shrink(&self, now_ms: i64, lag_max_ms: i64) -> Option<Vec<i32>> {
        if !self.is_leader() || self.pending_isr.is_some() {
            return None;
        }
        let keep: Vec<i32> = self
            .isr
            .iter()
            .copied()
            .filter(|r| {
                *r == self.me
                    || self
                        .followers
                        .get(r)
                        .is_some_and(|p| now_ms - p.caught_up_ms <= lag_max_ms)
            })
            .collect();
        (keep.len() != self.isr.len()).then_some(keep)
    }

    /// The ISR plus `replica` when it has caught up to the high watermark (and at least
    /// to the start of the current leader epoch), if it is not in yet.
    pub fn isr_to_expand(&self, replica: i32, hw: i64, epoch_start: i64) -> Option<Vec<i32>> {
        if !self.is_leader() || self.pending_isr.is_some() || self.isr.contains(&replica) {
            return None;
        }
        if !self.replicas.contains(&replica) {
            return None;
        }
        let p = self.followers.get(&replica)?;
        if p.leo >= hw && p.leo >= epoch_start {
            let mut isr = self.isr.clone();
            isr.push(replica);
            isr.sort_unstable();
            return Some(isr);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leader() -> ReplicaState {
        let mut s = ReplicaState::standalone(1, 0);
        s.become_leader(1, 1, vec![1, 2, 3], vec![1, 2, 3], 0, 0);
        s
    }

    #[test]
    fn hw_is_the_smallest_isr_log_end() {
        let mut s = leader();
        assert_eq!(
            s.high_watermark(10),
            0,
            "followers have fetched nothing yet"
        );
        s.on_follower_fetch(2, 10, 10, 5);
        assert_eq!(s.high_watermark(10), 0, "3 still at 0");
        s.on_follower_fetch(3, 7, 10, 5);
        assert_eq!(s.high_watermark(10), 7);
        s.isr = vec![1, 2];
        assert_eq!(
            s.high_watermark(10),
            10,
            "out of the ISR, 3 no longer holds it back"
        );
    }

    #[test]
    fn a_replica_proposed_for_the_isr_holds_the_hw_back_before_the_commit() {
        let mut s = leader();
        s.isr = vec![1, 2];
        s.on_follower_fetch(2, 10, 10, 5);
        s.on_follower_fetch(3, 10, 10, 5);
        s.pending_isr = s.isr_to_expand(3, 10, 0);
        assert_eq!(s.pending_isr, Some(vec![1, 2, 3]));
        // The leader appends 5 more; 2 has them, 3 not yet.
        s.on_follower_fetch(2, 15, 15, 6);
        assert_eq!(
            s.high_watermark(15),
            10,
            "3 may lead once the controller commits: nothing it lacks is acknowledged"
        );
        s.on_follower_fetch(3, 15, 15, 7);
        assert_eq!(s.high_watermark(15), 15);
        // A pending shrink keeps the leaving replica counted until it is committed.
        s.isr = vec![1, 2, 3];
        s.pending_isr = Some(vec![1, 2]);
        assert_eq!(s.high_watermark(20), 15);
    }

    #[test]
    fn lagging_follower_leaves_isr_and_returns_when_caught_up() {
        let mut s = leader();
        s.on_follower_fetch(2, 10, 10, 1_000);
        s.on_follower_fetch(3, 4, 10, 1_000);
        assert_eq!(s.isr_to_shrink(20_000, 30_000), None);
        s.on_follower_fetch(2, 10, 10, 40_000);
        assert_eq!(s.isr_to_shrink(40_000, 30_000), Some(vec![1, 2]));
        s.isr = vec![1, 2];
        assert_eq!(s.isr_to_expand(3, 10, 0), None, "still behind the hw");
        s.on_follower_fetch(3, 10, 10, 41_000);
        assert_eq!(s.isr_to_expand(3, 10, 0), Some(vec![1, 2, 3]));
        s.pending_isr = Some(vec![1, 2, 3]);
        assert_eq!(s.isr_to_expand(3, 10, 0), None, "one change at a time");
    }

    #[test]
    fn fetch_reaching_previous_log_end_counts_as_caught_up_then() {
        let mut s = leader();
        s.on_follower_fetch(2, 0, 10, 1_000); // leader had 10 then
        s.on_follower_fetch(2, 10, 20, 2_000); // reached 10, leader moved on to 20
        assert_eq!(s.followers[&2].caught_up_ms, 1_000);
    }

    #[test]
    fn followers_and_standalone() {
        let s = ReplicaState::standalone(7, 3);
        assert!(s.is_leader());
        assert_eq!(s.high_watermark(42), 42);
        assert_eq!(s.isr_to_shrink(1 << 40, 1), None);
        let mut f = leader();
        f.become_follower(2, 2, 2, vec![1, 2, 3], vec![2, 3]);
        assert!(!f.is_leader());
        assert!(f.followers.is_empty());
        assert_eq!(f.isr_to_shrink(1 << 40, 1), None);
    }
}
