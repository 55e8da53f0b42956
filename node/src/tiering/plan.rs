//! Pure tiering decisions over plain data: what to upload next, which local segments may
//! go, what total retention removes from the bucket, which objects are orphans.

use super::manifest::{parse_object_name, Manifest, RemoteSegment, SEGMENT_OBJECTS};
use crate::error::{Error, Result};
use crate::log::retention::SegmentSummary;

/// What to do next for one partition's uploads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upload {
    /// Upload the closed segment at this index of the list given.
    Segment(usize),
    /// Upload the part of the closed segment at this index from the manifest's end on: it
    /// starts below the end because this replica rolled its segments at other offsets than
    /// the leader that uploaded before it (a follower that took over). The caller checks
    /// that the end is a batch boundary in it.
    Tail(usize),
    /// Nothing closed is waiting.
    CaughtUp,
}

/// The next closed local segment to upload, in order. `closed` excludes the active segment;
/// only segments wholly below `upto` (the high watermark) qualify, so the bucket never holds
/// records a new leader could truncate away. A gap (the local log no longer has the offsets
/// the manifest needs next) is an error: uploading past it would make the bucket skip
/// offsets.
pub fn next_upload(closed: &[SegmentSummary], manifest: &Manifest, upto: i64) -> Result<Upload> {
    let end = manifest.end_offset;
    let Some(i) = closed.iter().position(|s| s.next_offset > end) else {
        return Ok(Upload::CaughtUp);
    };
    let s = closed[i];
    if s.next_offset <= s.base_offset || s.next_offset > upto {
        return Ok(Upload::CaughtUp);
    }
    if s.base_offset < end {
        return Ok(Upload::Tail(i));
    }
    if s.base_offset > end && !manifest.segments.is_empty() {
        return Err(Error::UploadNotContiguous {
            base: s.base_offset,
            next: s.next_offset,
            expected: end,
        });
    }
    Ok(Upload::Segment(i))
}

/// Whether a follower should read the manifest from the bucket: local retention wants the
/// segments below `wanted` gone, and the manifest it knows (covering everything below
/// `known`) does not hold them all. A follower never uploads, so only the bucket can say.
pub fn follower_needs_manifest(wanted: Option<i64>, known: Option<i64>) -> bool {
    match (wanted, known) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some(w), Some(k)) => w > k,
    }
}

/// A follower's wait before its next manifest read: one uploader interval after the
/// manifest moved, doubling (up to `max`) while it stays where it was, so a stalled leader
/// costs a bounded number of GETs.
pub fn follower_backoff(
    previous: std::time::Duration,
    advanced: bool,
    interval: std::time::Duration,
    max: std::time::Duration,
) -> std::time::Duration {
    if advanced {
        interval
    } else {
        (previous * 2).clamp(interval, max.max(interval))
    }
}

/// Bytes and count of closed segments not yet in the bucket (the tiering lag).
pub fn lag(closed: &[SegmentSummary], remote_end: i64) -> (u64, usize) {
    closed
        .iter()
        .filter(|s| s.next_offset > remote_end && s.next_offset > s.base_offset)
        .fold((0, 0), |(b, n), s| (b + s.size, n + 1))
}

/// Total retention over both tiers: how many leading remote segments to delete.
/// `local_only_bytes` counts local data not in the bucket (it is part of the total too).
pub fn remote_expired(
    segments: &[RemoteSegment],
    local_only_bytes: u64,
    retention_ms: i64,
    retention_bytes: i64,
    now_ms: i64,
) -> usize {
    let mut total: u64 = segments.iter().map(|s| s.size).sum::<u64>() + local_only_bytes;
    let mut n = 0;
    for s in segments {
        let expired =
            retention_ms >= 0 && s.max_timestamp >= 0 && s.max_timestamp < now_ms - retention_ms;
        let too_big =
            retention_bytes >= 0 && total.saturating_sub(s.size) >= retention_bytes as u64;
        if !(expired || too_big) {
            break;
        }
        total -= s.size;
        n += 1;
    }
    n
}

/// Objects in a partition folder (names relative to it) that no manifest entry references
/// and that no upload in progress can still claim: below the manifest end, or written by an
/// older leader epoch. `manifest.json` and names this build does not write are left alone.
pub fn orphans(manifest: &Manifest, names: &[String]) -> Vec<String> {
    let referenced: std::collections::HashSet<String> = manifest.referenced().collect();
    names
        .iter()
        .filter(|n| !referenced.contains(*n))
        .filter(|n| match parse_object_name(n) {
            Some((base, epoch, ext)) if SEGMENT_OBJECTS.contains(&ext) => {
                base < manifest.end_offset || epoch < manifest.leader_epoch
            }
            _ => false,
        })
        .cloned()
        .collect()
}

/// Problems a scrub of one partition folder finds (empty when healthy): manifest invariants,
/// referenced objects missing or of the wrong size, unreferenced objects.
pub fn scrub(manifest: &Manifest, objects: &[(String, u64)]) -> Vec<String> {
    let mut problems = Vec::new();
    if let Err(e) = manifest.check() {
        problems.push(e);
    }
    let sizes: std::collections::HashMap<&str, u64> =
        objects.iter().map(|(n, s)| (n.as_str(), *s)).collect();
    for s in &manifest.segments {
        for (ext, want) in [
            ("log", Some(s.size)),
            ("index", Some(s.index_size)),
            ("timeindex", Some(s.time_index_size)),
            ("snapshot", None),
        ] {
            let name = s.object_name(ext);
            match (sizes.get(name.as_str()), want) {
                (None, _) => problems.push(format!("{name} is missing")),
                (Some(got), Some(w)) if *got != w => {
                    problems.push(format!("{name} has {got} bytes, manifest says {w}"))
                }
                _ => {}
            }
        }
    }
    let referenced: std::collections::HashSet<String> = manifest.referenced().collect();
    for (n, _) in objects {
        if n != "manifest.json" && !referenced.contains(n) {
            problems.push(format!("{n} is not referenced by the manifest"));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::super::manifest::tests::seg as rseg;
    use super::*;

    fn s(base: i64, next: i64, size: u64) -> SegmentSummary {
        SegmentSummary {
            base_offset: base,
            next_offset: next,
            size,
            max_timestamp: base,
        }
    }

    fn manifest(segs: &[(i64, i64)]) -> Manifest {
        segs.iter()
            .fold(Manifest::empty(uuid::Uuid::nil(), 0), |m, (b, n)| {
                m.with_segment(rseg(*b, *n, 0), 0).unwrap()
            })
    }

    #[test]
    fn uploads_go_in_order_without_gaps() {
        let closed = [s(0, 10, 100), s(10, 20, 100), s(20, 30, 100)];
        let hw = 30;
        assert_eq!(
            next_upload(&closed, &manifest(&[]), hw).unwrap(),
            Upload::Segment(0)
        );
        assert_eq!(
            next_upload(&closed, &manifest(&[(0, 10)]), hw).unwrap(),
            Upload::Segment(1)
        );
        assert_eq!(
            next_upload(&closed, &manifest(&[(0, 10), (10, 20), (20, 30)]), hw).unwrap(),
            Upload::CaughtUp
        );
        // The local log starts later than an empty manifest: start there.
        assert_eq!(
            next_upload(&closed[1..], &manifest(&[]), hw).unwrap(),
            Upload::Segment(0)
        );
        // But never skip over offsets the manifest does not have.
        assert!(next_upload(&closed[2..], &manifest(&[(0, 10)]), hw).is_err());
        assert_eq!(lag(&closed, 10), (200, 2));
        assert_eq!(lag(&closed, 30), (0, 0));
    }

    #[test]
    fn uploads_stop_at_the_high_watermark() {
        let closed = [s(0, 10, 100), s(10, 20, 100)];
        // Records above the high watermark may still be truncated by a new leader.
        assert_eq!(
            next_upload(&closed, &manifest(&[]), 15).unwrap(),
            Upload::Segment(0)
        );
        assert_eq!(
            next_upload(&closed, &manifest(&[(0, 10)]), 19).unwrap(),
            Upload::CaughtUp
        );
        assert_eq!(
            next_upload(&closed, &manifest(&[(0, 10)]), 20).unwrap(),
            Upload::Segment(1)
        );
    }

    #[test]
    fn a_new_leader_continues_inside_its_own_segment() {
        // A former follower rolled at 0, 7, 25; the old leader uploaded [0, 10), [10, 20).
        let closed = [s(0, 7, 70), s(7, 25, 180), s(25, 30, 50)];
        let m = manifest(&[(0, 10), (10, 20)]);
        assert_eq!(next_upload(&closed, &m, 30).unwrap(), Upload::Tail(1));
        // Nothing is uploaded twice: after the tail [20, 25), the next segment follows.
        let m = manifest(&[(0, 10), (10, 20), (20, 25)]);
        assert_eq!(next_upload(&closed, &m, 30).unwrap(), Upload::Segment(2));
        // An emptied manifest (total retention) that ends inside a local segment too.
        let mut emptied = manifest(&[(0, 10), (10, 20)]);
        emptied = emptied.without_prefix(2, 0).unwrap();
        assert_eq!(next_upload(&closed, &emptied, 30).unwrap(), Upload::Tail(1));
    }

    #[test]
    fn followers_read_the_manifest_only_when_retention_needs_it() {
        assert!(!follower_needs_manifest(None, None));
        assert!(!follower_needs_manifest(None, Some(10)));
        assert!(follower_needs_manifest(Some(10), None));
        assert!(follower_needs_manifest(Some(20), Some(10)));
        assert!(!follower_needs_manifest(Some(10), Some(10)));
        assert!(!follower_needs_manifest(Some(5), Some(10)));
        let ms = std::time::Duration::from_millis;
        let (i, max) = (ms(1000), ms(8000));
        assert_eq!(follower_backoff(ms(0), false, i, max), i);
        assert_eq!(follower_backoff(i, false, i, max), ms(2000));
        assert_eq!(follower_backoff(ms(6000), false, i, max), max);
        assert_eq!(follower_backoff(max, true, i, max), i);
    }

    #[test]
    fn total_retention_counts_both_tiers() {
        let segs = [rseg(0, 10, 0), rseg(10, 20, 0), rseg(20, 30, 0)]; // 1000 bytes each
                                                                       // 3000 remote + 500 local, limit 2000: dropping one leaves 2500, two leave 1500 < 2000.
        assert_eq!(remote_expired(&segs, 500, -1, 2000, 0), 1);
        assert_eq!(remote_expired(&segs, 0, -1, -1, 0), 0);
        assert_eq!(remote_expired(&segs, 0, -1, 0, 0), 3);
        // max_timestamp = base*10: 0, 100, 200. now 250, retention 100: cutoff 150.
        assert_eq!(remote_expired(&segs, 0, 100, -1, 250), 2);
    }

    #[test]
    fn orphans_and_scrub() {
        let mut m = manifest(&[(0, 10), (10, 20)]);
        m.leader_epoch = 2;
        m.segments[1].leader_epoch = 2;
        let mut names: Vec<String> = m.referenced().collect();
        names.push("manifest.json".into());
        assert!(orphans(&m, &names).is_empty());
        names.push(rseg(0, 10, 1).object_name("log")); // old epoch, below end
        names.push(rseg(20, 30, 1).object_name("log")); // a deposed leader's attempt
        names.push(rseg(20, 30, 2).object_name("index")); // our own upload in progress
        names.push("README".into());
        let o = orphans(&m, &names);
        assert_eq!(
            o,
            vec![
                rseg(0, 10, 1).object_name("log"),
                rseg(20, 30, 1).object_name("log")
            ]
        );
        let objs: Vec<(String, u64)> = m
            .segments
            .iter()
            .flat_map(|s| {
                [
                    (s.object_name("log"), s.size),
                    (s.object_name("index"), s.index_size),
                    (s.object_name("timeindex"), s.time_index_size),
                    (s.object_name("snapshot"), 3),
                ]
            })
            .chain([("manifest.json".to_string(), 10)])
            .collect();
        assert!(scrub(&m, &objs).is_empty(), "{:?}", scrub(&m, &objs));
        let mut broken = objs.clone();
        broken.remove(0);
        broken.push(("stray".into(), 1));
        assert_eq!(scrub(&m, &broken).len(), 2);
    }
}
