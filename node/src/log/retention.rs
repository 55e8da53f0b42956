//! Retention decisions: pure functions over segment summaries.

/// What retention needs to know about one segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentSummary {
    pub base_offset: i64,
    pub next_offset: i64,
    pub size: u64,
    pub max_timestamp: i64,
}

/// Retention limits in force.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// -1: unbounded.
    pub retention_ms: i64,
    /// -1: unbounded.
    pub retention_bytes: i64,
    pub now_ms: i64,
    /// Segments entirely below this offset go regardless of time and size.
    pub log_start_offset: i64,
}

/// How many leading segments may be deleted. The last segment (the active one) is included
/// only when `include_active` and it is expired too; the caller then rolls first.
pub fn deletable_prefix(segments: &[SegmentSummary], limits: Limits) -> usize {
    let n = segments.len();
    let total: u64 = segments.iter().map(|s| s.size).sum();
    let mut remaining = total;
    let mut count = 0;
    for (i, s) in segments.iter().enumerate() {
        let is_active = i + 1 == n;
        let below_start = s.next_offset <= limits.log_start_offset && s.next_offset > s.base_offset;
        let expired = limits.retention_ms >= 0
            && s.max_timestamp >= 0
            && s.max_timestamp < limits.now_ms - limits.retention_ms;
        // Kafka deletes a segment when what is left without it still meets retention.bytes.
        let size_ok = limits.retention_bytes >= 0
            && !is_active
            && remaining.saturating_sub(s.size) >= limits.retention_bytes as u64;
        if below_start || expired || size_ok {
            if is_active && s.size == 0 {
                break;
            }
            count += 1;
            remaining -= s.size;
        } else {
            break;
        }
    }
    count
}

/// Of the `n` leading segments retention would delete, how many lie entirely below `cap`
/// (the log's retention cap: for a tiered log, what the bucket already holds). None: no
/// cap is known yet, nothing goes.
pub fn cap_prefix(segments: &[SegmentSummary], n: usize, cap: Option<i64>) -> usize {
    let Some(end) = cap else { return 0 };
    segments[..n.min(segments.len())]
        .iter()
        .take_while(|s| s.next_offset <= end && s.next_offset > s.base_offset)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(base: i64, next: i64, size: u64, ts: i64) -> SegmentSummary {
        SegmentSummary {
            base_offset: base,
            next_offset: next,
            size,
            max_timestamp: ts,
        }
    }

    fn lim(ms: i64, bytes: i64, now: i64, start: i64) -> Limits {
        Limits {
            retention_ms: ms,
            retention_bytes: bytes,
            now_ms: now,
            log_start_offset: start,
        }
    }

    #[test]
    fn time_retention_stops_at_first_live_segment() {
        let s = [
            seg(0, 10, 100, 1000),
            seg(10, 20, 100, 5000),
            seg(20, 30, 100, 1500),
        ];
        // now 6000, retention 2000: cutoff 4000. First expires; second is live, so stop.
        assert_eq!(deletable_prefix(&s, lim(2000, -1, 6000, 0)), 1);
    }

    #[test]
    fn all_expired_includes_active() {
        let s = [seg(0, 10, 100, 1000), seg(10, 20, 100, 1000)];
        assert_eq!(deletable_prefix(&s, lim(10, -1, 6000, 0)), 2);
        // An empty active segment is never deleted.
        let s = [seg(0, 10, 100, 1000), seg(10, 10, 0, -1)];
        assert_eq!(deletable_prefix(&s, lim(10, -1, 6000, 0)), 1);
    }

    #[test]
    fn size_retention_keeps_at_least_the_limit() {
        let s = [
            seg(0, 10, 100, 1),
            seg(10, 20, 100, 1),
            seg(20, 30, 100, 1),
            seg(30, 35, 50, 1),
        ];
        // 350 total, limit 200: deleting the first leaves 250 >= 200, second leaves 150 < 200.
        assert_eq!(deletable_prefix(&s, lim(-1, 200, 0, 0)), 1);
        assert_eq!(deletable_prefix(&s, lim(-1, 0, 0, 0)), 3);
        assert_eq!(deletable_prefix(&s, lim(-1, -1, 0, 0)), 0);
    }

    #[test]
    fn log_start_offset_deletes_covered_segments() {
        let s = [seg(0, 10, 100, 1), seg(10, 20, 100, 1), seg(20, 30, 100, 1)];
        assert_eq!(deletable_prefix(&s, lim(-1, -1, 0, 15)), 1);
        assert_eq!(deletable_prefix(&s, lim(-1, -1, 0, 20)), 2);
    }
    #[test]
    fn local_deletion_waits_for_the_manifest() {
        let segs = [
            seg(0, 10, 100, 0),
            seg(10, 20, 100, 0),
            seg(20, 30, 100, 0),
            seg(30, 30, 0, 0),
        ];
        assert_eq!(cap_prefix(&segs, 3, None), 0);
        assert_eq!(cap_prefix(&segs, 3, Some(0)), 0);
        assert_eq!(cap_prefix(&segs, 3, Some(15)), 1);
        assert_eq!(cap_prefix(&segs, 1, Some(30)), 1);
        assert_eq!(cap_prefix(&segs, 4, Some(30)), 3);
    }
}
