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
    /// Nothing closed is waiting.
    CaughtUp,
}

/// The next closed local segment to upload, in order. `closed` excludes the active segment.
/// A gap (the local log no longer has the segment the manifest needs next) is an error:
/// uploading past it would make the bucket skip offsets.
pub fn next_upload(closed: &[SegmentSummary], manifest: &Manifest) -> Result<Upload> {
    let end = manifest.end_offset;
    let Some(i) = closed.iter().position(|s| s.next_offset > end) else {
        return Ok(Upload::CaughtUp);
    };
    let s = closed[i];
    if s.next_offset <= s.base_offset {
        return Ok(Upload::CaughtUp);
    }
    if s.base_offset < end {
        // A segment straddling the manifest end: the local log was rewritten under it.
        return Err(Error::UploadNotContiguous {
            base: s.base_offset,
            next: s.next_offset,
            expected: end,
        });
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

/// Bytes and count of closed segments not yet in the bucket (the tiering lag).
pub fn lag(closed: &[SegmentSummary], remote_end: i64) -> (u64, usize) {
    closed
        .iter()
        .filter(|s| s.next_offset > remote_end && s.next_offset > s.base_offset)
        .fold((0, 0), |(b, n), s| (b + s.size, n + 1))
}

/// Of the `n` leading segments local retention would delete, how many are already in the
/// manifest (entirely below `remote_end`). None: the manifest is not known, nothing goes.
pub fn cap_to_uploaded(segments: &[SegmentSummary], n: usize, remote_end: Option<i64>) -> usize {
    let Some(end) = remote_end else { return 0 };
    segments[..n.min(segments.len())]
        .iter()
        .take_while(|s| s.next_offset <= end && s.next_offset > s.base_offset)
        .count()
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
        assert_eq!(
            next_upload(&closed, &manifest(&[])).unwrap(),
            Upload::Segment(0)
        );
        assert_eq!(
            next_upload(&closed, &manifest(&[(0, 10)])).unwrap(),
            Upload::Segment(1)
        );
        assert_eq!(
            next_upload(&closed, &manifest(&[(0, 10), (10, 20), (20, 30)])).unwrap(),
            Upload::CaughtUp
        );
        // The local log starts later than an empty manifest: start there.
        assert_eq!(
            next_upload(&closed[1..], &manifest(&[])).unwrap(),
            Upload::Segment(0)
        );
        // But never skip over offsets the manifest does not have.
        assert!(next_upload(&closed[2..], &manifest(&[(0, 10)])).is_err());
        assert_eq!(lag(&closed, 10), (200, 2));
        assert_eq!(lag(&closed, 30), (0, 0));
    }

    #[test]
    fn local_deletion_waits_for_the_manifest() {
        let segs = [s(0, 10, 100), s(10, 20, 100), s(20, 30, 100), s(30, 30, 0)];
        assert_eq!(cap_to_uploaded(&segs, 3, None), 0);
        assert_eq!(cap_to_uploaded(&segs, 3, Some(0)), 0);
        assert_eq!(cap_to_uploaded(&segs, 3, Some(15)), 1);
        assert_eq!(cap_to_uploaded(&segs, 1, Some(30)), 1);
        assert_eq!(cap_to_uploaded(&segs, 4, Some(30)), 3);
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
