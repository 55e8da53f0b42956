//! Taking up a hosted partition's role (leader or follower, epochs, ISR) from the
//! controller's assignment. Calls only `partition` and `metadata`.

use crate::error::Result;
use crate::metadata::Assignment;
use crate::partition::replica::Role;
use crate::partition::Partition;

/// Bring `part`'s replication state to assignment `a` (this node is `me`). A new leader
/// epoch starts an epoch in the log; a new leader to follow makes the follower truncate
/// before it fetches. Waiters are woken when anything changed.
pub fn take_up(part: &Partition, a: &Assignment, me: i32, now: i64) -> Result<()> {
    let changed = {
        let mut r = part.replica();
        let before = r.clone();
        if a.leader == me {
            if !r.is_leader() || r.leader_epoch != a.leader_epoch {
                let hw = part.high_watermark();
                part.log().begin_epoch(a.leader_epoch)?;
                r.become_leader(
                    a.leader_epoch,
                    a.partition_epoch,
                    a.replicas.clone(),
                    a.isr.clone(),
                    hw,
                    now,
                );
                tracing::info!(topic = %part.topic, partition = part.index, epoch = a.leader_epoch, isr = ?a.isr, "leading");
            } else if a.partition_epoch >= r.partition_epoch {
                let hw = part.high_watermark();
                r.become_leader(
                    a.leader_epoch,
                    a.partition_epoch,
                    a.replicas.clone(),
                    a.isr.clone(),
                    hw,
                    now,
                );
            }
        } else if r.is_leader()
            || r.leader_epoch != a.leader_epoch
            || r.role != (Role::Follower { leader: a.leader })
        {
            r.become_follower(
                a.leader,
                a.leader_epoch,
                a.partition_epoch,
                a.replicas.clone(),
                a.isr.clone(),
            );
            r.truncate_pending = true;
            tracing::info!(topic = %part.topic, partition = part.index, leader = a.leader, epoch = a.leader_epoch, "following");
        } else {
            r.isr = a.isr.clone();
            r.partition_epoch = a.partition_epoch;
        }
        *r != before
    };
    if changed {
        part.recompute_high_watermark();
        part.notify_state_change();
    }
    Ok(())
}
