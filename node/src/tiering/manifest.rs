//! The per-partition manifest in the bucket: which segments are tiered, their offsets,
//! sizes, timestamps and leader epochs. Pure data and transitions; the uploader writes it
//! with conditional puts, so every transition here starts from the version it read.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::log::producer_state::ProducerStateTable;

/// Format version written by this build; readers refuse newer ones.
pub const MANIFEST_VERSION: u32 = 1;

/// One segment in the bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteSegment {
    pub base_offset: i64,
    /// One past the last offset in the segment.
    pub next_offset: i64,
    /// Bytes of the `.log` object.
    pub size: u64,
    pub index_size: u64,
    pub time_index_size: u64,
    /// Largest batch timestamp in the segment (-1 if unknown).
    pub max_timestamp: i64,
    /// Epoch of the leader that uploaded it; part of its object names.
    pub leader_epoch: i32,
    /// Leader-epoch history entries (epoch, start offset) in force within the segment.
    pub epochs: Vec<(i32, i64)>,
    /// Set once compaction rewrote the segment (its objects then carry it in their names).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compacted: Option<Compacted>,
    /// Transactions aborted by markers in this segment (its `.txnindex`, which Kafka
    /// uploads beside the segment): read_committed reads of the bucket drop their records.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aborted: Vec<crate::log::txn::AbortedTxn>,
}

/// A compacted copy of a segment: the how-many-th, and the leader epoch that wrote it (two
/// leaders rewriting the same segment never write the same object names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compacted {
    pub count: u32,
    pub by_epoch: i32,
}

/// Extensions of the objects uploaded for one segment.
pub const SEGMENT_OBJECTS: [&str; 4] = ["log", "index", "timeindex", "snapshot"];

impl RemoteSegment {
    /// Object name (inside the partition folder) of one of this segment's objects.
    pub fn object_name(&self, ext: &str) -> String {
        match self.compacted {
            None => object_name(self.base_offset, self.leader_epoch, ext),
            Some(c) => format!(
                "{:020}-{}-c{}e{}.{ext}",
                self.base_offset, self.leader_epoch, c.count, c.by_epoch
            ),
        }
    }
}

/// `{base_offset:020}-{leader_epoch}.{ext}` (a segment compaction rewrote adds
/// `-c{count}e{writer epoch}` to the stem).
pub fn object_name(base: i64, epoch: i32, ext: &str) -> String {
    format!("{base:020}-{epoch}.{ext}")
}

/// Parse `{base:020}-{epoch}[-c{n}e{e}].{ext}` back (the compaction part is dropped).
pub fn parse_object_name(name: &str) -> Option<(i64, i32, &str)> {
    let (stem, ext) = name.split_once('.')?;
    let (base, rest) = stem.split_once('-')?;
    if base.len() != 20 {
        return None;
    }
    let epoch = match rest.split_once("-c") {
        Some((epoch, c)) => {
            let (n, by) = c.split_once('e')?;
            n.parse::<u32>().ok()?;
            by.parse::<i32>().ok()?;
            epoch
        }
        None => rest,
    };
    Some((base.parse().ok()?, epoch.parse().ok()?, ext))
}

/// The manifest of one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    pub topic_id: uuid::Uuid,
    pub partition: i32,
    /// Highest leader epoch that has written this manifest; lower epochs are fenced.
    pub leader_epoch: i32,
    /// Bumped on every write (diagnostics).
    pub generation: u64,
    /// First offset readable from the bucket.
    pub log_start_offset: i64,
    /// One past the last tiered offset; survives retention emptying `segments`.
    pub end_offset: i64,
    pub segments: Vec<RemoteSegment>,
    /// What a log that continues after the bucket's copy needs once retention or
    /// DeleteRecords removed every segment (absent while segments remain, and in manifests
    /// written before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired: Option<Retired>,
    /// Compacted topics: the segments below this offset have been compacted against each
    /// other (the clean section); those from it on are dirty.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub cleaned_upto: i64,
}

fn is_zero_i64(n: &i64) -> bool {
    *n == 0
}

/// Decode a JSON document of the bucket that carries a `version` field: one newer than
/// `supported` is refused as such, anything unreadable as corrupt.
pub(crate) fn parse_versioned<T: serde::de::DeserializeOwned>(
    key: &str,
    raw: &[u8],
    supported: u32,
) -> Result<T> {
    let corrupt = |reason: String| Error::CorruptManifest {
        key: key.to_string(),
        reason,
    };
    let v: serde_json::Value = serde_json::from_slice(raw).map_err(|e| corrupt(e.to_string()))?;
    let found = v
        .get("version")
        .and_then(|x| x.as_u64())
        .ok_or_else(|| corrupt("no version field".into()))?;
    if found > supported as u64 {
        return Err(Error::UnknownManifestVersion {
            key: key.to_string(),
            found: found.min(u32::MAX as u64) as u32,
            supported,
        });
    }
    serde_json::from_value(v).map_err(|e| corrupt(e.to_string()))
}

/// The state at `end_offset` of a manifest whose segments are all gone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retired {
    /// The leader-epoch history of the removed segments.
    pub epochs: Vec<(i32, i64)>,
    /// Producer state at `end_offset` (None when it could not be read before the
    /// segments went; idempotent producers then start over as after a restart).
    pub producers: Option<ProducerStateTable>,
}

impl Manifest {
    /// The manifest of a partition with nothing tiered yet.
    pub fn empty(topic_id: uuid::Uuid, partition: i32) -> Manifest {
        Manifest {
            version: MANIFEST_VERSION,
            topic_id,
            partition,
            leader_epoch: -1,
            generation: 0,
            log_start_offset: 0,
            end_offset: 0,
            segments: Vec::new(),
            retired: None,
            cleaned_upto: 0,
        }
    }

    /// Decode and check a manifest read from `key`.
    pub fn parse(key: &str, raw: &[u8]) -> Result<Manifest> {
        let m: Manifest = parse_versioned(key, raw, MANIFEST_VERSION)?;
        m.check().map_err(|reason| Error::CorruptManifest {
            key: key.to_string(),
            reason,
        })?;
        Ok(m)
    }

    /// Encode for the bucket.
    pub fn to_bytes(&self) -> bytes::Bytes {
        bytes::Bytes::from(serde_json::to_vec_pretty(self).expect("serializable"))
    }

    /// Invariants: segments contiguous and non-empty, offsets and epochs non-decreasing,
    /// start and end consistent with them.
    pub fn check(&self) -> Result<(), String> {
        let mut prev: Option<&RemoteSegment> = None;
        for s in &self.segments {
            if s.next_offset <= s.base_offset {
                return Err(format!("segment {} is empty or inverted", s.base_offset));
            }
            if let Some(p) = prev {
                if s.base_offset != p.next_offset {
                    return Err(format!(
                        "segment {} does not follow segment {} ending at {}",
                        s.base_offset, p.base_offset, p.next_offset
                    ));
                }
                if s.leader_epoch < p.leader_epoch {
                    return Err(format!(
                        "segment {} has epoch {} below its predecessor's {}",
                        s.base_offset, s.leader_epoch, p.leader_epoch
                    ));
                }
            }
            prev = Some(s);
        }
        if let (Some(first), Some(last)) = (self.segments.first(), self.segments.last()) {
            if self.log_start_offset < first.base_offset
                || self.log_start_offset >= last.next_offset
            {
                return Err(format!(
                    "log start {} outside the segments [{}, {})",
                    self.log_start_offset, first.base_offset, last.next_offset
                ));
            }
            if self.end_offset != last.next_offset {
                return Err(format!(
                    "end offset {} differs from the last segment's end {}",
                    self.end_offset, last.next_offset
                ));
            }
        } else if self.log_start_offset != self.end_offset {
            return Err("no segments but start differs from end".into());
        }
        if let Some(s) = self.segments.last() {
            if s.leader_epoch > self.leader_epoch {
                return Err("a segment has a higher epoch than the manifest".into());
            }
        }
        Ok(())
    }

    /// Refuse a writer whose epoch is older than the manifest's.
    pub fn fence(&self, writer_epoch: i32) -> Result<()> {
        if writer_epoch < self.leader_epoch {
            return Err(Error::ManifestFenced {
                ours: writer_epoch,
                manifest_epoch: self.leader_epoch,
            });
        }
        Ok(())
    }

    fn next_generation(&self, writer_epoch: i32) -> Manifest {
        let mut m = self.clone();
        m.version = MANIFEST_VERSION;
        m.generation += 1;
        m.leader_epoch = writer_epoch.max(self.leader_epoch);
        m
    }

    /// The manifest with `seg` added at the end.
    pub fn with_segment(&self, seg: RemoteSegment, writer_epoch: i32) -> Result<Manifest> {
        self.fence(writer_epoch)?;
        let not_contiguous = || Error::UploadNotContiguous {
            base: seg.base_offset,
            next: seg.next_offset,
            expected: self.end_offset,
        };
        if seg.next_offset <= seg.base_offset || seg.leader_epoch > writer_epoch {
            return Err(not_contiguous());
        }
        let mut m = self.next_generation(writer_epoch);
        if self.segments.is_empty() {
            // Nothing tiered (yet, or any more): the bucket starts wherever the local log
            // now does, never before what it already covered.
            if seg.base_offset < self.end_offset {
                return Err(not_contiguous());
            }
            m.log_start_offset = seg.base_offset;
        } else if seg.base_offset != self.end_offset {
            return Err(not_contiguous());
        }
        m.end_offset = seg.next_offset;
        m.segments.push(seg);
        m.retired = None;
        Ok(m)
    }

    /// The manifest with segments replaced by compacted copies covering the same offsets,
    /// and everything below `cleaned_upto` clean.
    pub fn with_rewritten(
        &self,
        copies: &[RemoteSegment],
        cleaned_upto: i64,
        writer_epoch: i32,
    ) -> Result<Manifest> {
        self.fence(writer_epoch)?;
        let mut m = self.next_generation(writer_epoch);
        m.cleaned_upto = cleaned_upto.clamp(self.cleaned_upto, self.end_offset);
        for c in copies {
            let slot = m
                .segments
                .iter_mut()
                .find(|s| s.base_offset == c.base_offset && s.next_offset == c.next_offset)
                .ok_or(Error::UploadNotContiguous {
                    base: c.base_offset,
                    next: c.next_offset,
                    expected: c.base_offset,
                })?;
            let newer = match (c.compacted, slot.compacted) {
                (Some(new), Some(old)) => new.count > old.count,
                (Some(_), None) => true,
                (None, _) => false,
            };
            if !newer
                || c.leader_epoch != slot.leader_epoch
                || c.compacted.is_some_and(|n| n.by_epoch > writer_epoch)
            {
                return Err(Error::UploadNotContiguous {
                    base: c.base_offset,
                    next: c.next_offset,
                    expected: c.base_offset,
                });
            }
            *slot = c.clone();
        }
        Ok(m)
    }

    /// The manifest without its first `n` segments (total retention).
    pub fn without_prefix(&self, n: usize, writer_epoch: i32) -> Result<Manifest> {
        self.fence(writer_epoch)?;
        let mut m = self.next_generation(writer_epoch);
        let n = n.min(m.segments.len());
        m.segments.drain(..n);
        m.log_start_offset = match m.segments.first() {
            Some(s) => s.base_offset.max(self.log_start_offset),
            None => m.end_offset,
        };
        if m.segments.is_empty() && !self.segments.is_empty() {
            // The epochs go with the segments unless kept here; the producer state is the
            // caller's to add (it lives in the last segment's snapshot object).
            m.retired = Some(Retired {
                epochs: self.epoch_history(),
                producers: None,
            });
        }
        Ok(m)
    }

    /// The manifest with `seg` appended, never starting below `log_start` (the partition's
    /// log start): when nothing is tiered, records DeleteRecords removed before the upload
    /// may still sit at the front of the segment.
    pub fn with_segment_from(
        &self,
        seg: RemoteSegment,
        writer_epoch: i32,
        log_start: i64,
    ) -> Result<Manifest> {
        let mut m = self.with_segment(seg, writer_epoch)?;
        if self.segments.is_empty() {
            m.log_start_offset = m.log_start_offset.max(log_start.min(m.end_offset - 1));
        }
        Ok(m)
    }

    /// DeleteRecords: the manifest with its log start moved up to `offset`, without the
    /// segments wholly below it (returned, for deleting their objects afterwards).
    pub fn with_log_start(
        &self,
        offset: i64,
        writer_epoch: i32,
    ) -> Result<(Manifest, Vec<RemoteSegment>)> {
        let n = self.segments.partition_point(|s| s.next_offset <= offset);
        let mut m = self.without_prefix(n, writer_epoch)?;
        if !m.segments.is_empty() {
            m.log_start_offset = m.log_start_offset.max(offset);
        }
        Ok((m, self.segments[..n].to_vec()))
    }

    /// The segment holding `offset`, if tiered and not yet past retention.
    pub fn find(&self, offset: i64) -> Option<&RemoteSegment> {
        if offset < self.log_start_offset || offset >= self.end_offset {
            return None;
        }
        let i = self.segments.partition_point(|s| s.next_offset <= offset);
        self.segments.get(i).filter(|s| s.base_offset <= offset)
    }

    /// The segment after the one starting at `base`.
    pub fn after(&self, base: i64) -> Option<&RemoteSegment> {
        let i = self.segments.partition_point(|s| s.base_offset <= base);
        self.segments.get(i)
    }

    /// Bytes of `.log` objects.
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.size).sum()
    }

    /// The leader-epoch history covered by the bucket, merged across segments (or kept from
    /// the removed ones, once none is left).
    pub fn epoch_history(&self) -> Vec<(i32, i64)> {
        let mut out: Vec<(i32, i64)> = Vec::new();
        let retired = self.retired.iter().flat_map(|r| r.epochs.iter());
        for &(e, start) in retired.chain(self.segments.iter().flat_map(|s| s.epochs.iter())) {
            if out.last().is_none_or(|(le, _)| *le < e) {
                out.push((e, start));
            }
        }
        out
    }

    /// The producer state kept when the last segment went (empty when none was kept).
    pub fn retired_producers(&self) -> ProducerStateTable {
        self.retired
            .as_ref()
            .and_then(|r| r.producers.clone())
            .unwrap_or_default()
    }

    /// Every object name (inside the partition folder) the manifest references.
    pub fn referenced(&self) -> impl Iterator<Item = String> + '_ {
        self.segments
            .iter()
            .flat_map(|s| SEGMENT_OBJECTS.iter().map(move |ext| s.object_name(ext)))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn seg(base: i64, next: i64, epoch: i32) -> RemoteSegment {
        RemoteSegment {
            base_offset: base,
            next_offset: next,
            size: (next - base) as u64 * 100,
            index_size: 8,
            time_index_size: 12,
            max_timestamp: base * 10,
            leader_epoch: epoch,
            epochs: vec![(epoch, base)],
            compacted: None,
            aborted: Vec::new(),
        }
    }

    fn m() -> Manifest {
        Manifest::empty(uuid::Uuid::nil(), 0)
    }

    #[test]
    fn appends_must_be_contiguous() {
        let a = m().with_segment(seg(5, 10, 0), 0).unwrap();
        assert_eq!((a.log_start_offset, a.end_offset, a.generation), (5, 10, 1));
        let b = a.with_segment(seg(10, 20, 0), 0).unwrap();
        assert_eq!(b.end_offset, 20);
        assert!(matches!(
            b.with_segment(seg(21, 30, 0), 0),
            Err(Error::UploadNotContiguous { expected: 20, .. })
        ));
        assert!(matches!(
            b.with_segment(seg(15, 30, 0), 0),
            Err(Error::UploadNotContiguous { .. })
        ));
        assert!(b.with_segment(seg(20, 20, 0), 0).is_err());
        b.check().unwrap();
    }

    #[test]
    fn fencing_by_leader_epoch() {
        let a = m().with_segment(seg(0, 10, 3), 3).unwrap();
        assert_eq!(a.leader_epoch, 3);
        assert!(matches!(
            a.with_segment(seg(10, 20, 2), 2),
            Err(Error::ManifestFenced {
                ours: 2,
                manifest_epoch: 3
            })
        ));
        assert!(matches!(
            a.without_prefix(1, 2),
            Err(Error::ManifestFenced { .. })
        ));
        // A segment cannot claim an epoch above its writer's.
        assert!(a.with_segment(seg(10, 20, 5), 4).is_err());
        let b = a.with_segment(seg(10, 20, 4), 4).unwrap();
        assert_eq!(b.leader_epoch, 4);
        assert_eq!(b.epoch_history(), vec![(3, 0), (4, 10)]);
    }

    #[test]
    fn retention_keeps_the_end() {
        let a = m()
            .with_segment(seg(0, 10, 0), 0)
            .unwrap()
            .with_segment(seg(10, 20, 0), 0)
            .unwrap();
        let b = a.without_prefix(1, 0).unwrap();
        assert_eq!((b.log_start_offset, b.end_offset), (10, 20));
        let c = b.without_prefix(5, 0).unwrap();
        assert_eq!(
            (c.log_start_offset, c.end_offset, c.segments.len()),
            (20, 20, 0)
        );
        c.check().unwrap();
        // The epochs of the removed segments stay for a log that continues at the end;
        // the producer state is added by the uploader; both survive a round trip.
        assert_eq!(c.epoch_history(), vec![(0, 10)]);
        let mut kept = c.clone();
        let mut table = ProducerStateTable::default();
        table.producers.insert(42, Default::default());
        kept.retired.as_mut().unwrap().producers = Some(table.clone());
        let again = Manifest::parse("k", &kept.to_bytes()).unwrap();
        assert_eq!(again, kept);
        assert_eq!(again.retired_producers(), table);
        // Manifests written before the field existed read as having none.
        let mut old: serde_json::Value = serde_json::from_slice(&b.to_bytes()).unwrap();
        old.as_object_mut().unwrap().remove("retired");
        let old = Manifest::parse("k", &serde_json::to_vec(&old).unwrap()).unwrap();
        assert_eq!(old.retired, None);
        // After total retention emptied the bucket, the next upload continues at the end or later.
        assert!(c.with_segment(seg(15, 25, 0), 0).is_err());
        let d = c.with_segment(seg(30, 40, 0), 0).unwrap();
        assert_eq!(d.log_start_offset, 30);
        assert_eq!(d.retired, None);
    }

    #[test]
    fn delete_records_moves_the_start() {
        let a = m()
            .with_segment(seg(0, 10, 0), 0)
            .unwrap()
            .with_segment(seg(10, 20, 0), 0)
            .unwrap();
        let (b, gone) = a.with_log_start(4, 0).unwrap();
        assert!(gone.is_empty());
        assert_eq!((b.log_start_offset, b.segments.len()), (4, 2));
        let (c, gone) = b.with_log_start(10, 0).unwrap();
        assert_eq!(gone, vec![seg(0, 10, 0)]);
        assert_eq!((c.log_start_offset, c.segments.len()), (10, 1));
        let (d, _) = c.with_log_start(15, 0).unwrap();
        assert_eq!(d.log_start_offset, 15);
        d.check().unwrap();
        let (e, gone) = d.with_log_start(25, 0).unwrap();
        assert_eq!(gone.len(), 1);
        assert_eq!((e.log_start_offset, e.end_offset), (20, 20));
        e.check().unwrap();
        assert!(matches!(
            a.with_log_start(5, -1),
            Err(Error::ManifestFenced { .. })
        ));
        // The next upload after the bucket emptied starts no lower than the log start.
        let f = e.with_segment_from(seg(20, 30, 0), 0, 23).unwrap();
        assert_eq!((f.log_start_offset, f.end_offset), (23, 30));
        f.check().unwrap();
        let g = f.with_segment_from(seg(30, 40, 0), 0, 35).unwrap();
        assert_eq!(
            g.log_start_offset, 23,
            "only an empty manifest takes the floor"
        );
    }

    #[test]
    fn find_and_after() {
        let a = m()
            .with_segment(seg(0, 10, 0), 0)
            .unwrap()
            .with_segment(seg(10, 20, 0), 0)
            .unwrap();
        assert_eq!(a.find(0).unwrap().base_offset, 0);
        assert_eq!(a.find(9).unwrap().base_offset, 0);
        assert_eq!(a.find(10).unwrap().base_offset, 10);
        assert!(a.find(20).is_none());
        assert!(a.find(-1).is_none());
        assert_eq!(a.after(0).unwrap().base_offset, 10);
        assert!(a.after(10).is_none());
    }

    #[test]
    fn parse_refuses_garbage_and_future_versions() {
        let a = m().with_segment(seg(0, 10, 0), 0).unwrap();
        assert_eq!(Manifest::parse("k", &a.to_bytes()).unwrap(), a);
        assert!(matches!(
            Manifest::parse("k", b"{not json"),
            Err(Error::CorruptManifest { .. })
        ));
        let mut v: serde_json::Value = serde_json::from_slice(&a.to_bytes()).unwrap();
        v["version"] = 99.into();
        assert!(matches!(
            Manifest::parse("k", v.to_string().as_bytes()),
            Err(Error::UnknownManifestVersion { found: 99, .. })
        ));
        let mut bad = a.clone();
        bad.segments.push(seg(11, 20, 0));
        bad.end_offset = 20;
        assert!(matches!(
            Manifest::parse("k", &bad.to_bytes()),
            Err(Error::CorruptManifest { .. })
        ));
    }

    #[test]
    fn object_names_round_trip() {
        let s = seg(42, 50, 7);
        assert_eq!(s.object_name("log"), "00000000000000000042-7.log");
        assert_eq!(
            parse_object_name("00000000000000000042-7.timeindex"),
            Some((42, 7, "timeindex"))
        );
        assert_eq!(parse_object_name("manifest.json"), None);
        let rewritten = RemoteSegment {
            compacted: Some(Compacted {
                count: 3,
                by_epoch: 9,
            }),
            ..s
        };
        assert_eq!(
            rewritten.object_name("log"),
            "00000000000000000042-7-c3e9.log"
        );
        assert_eq!(
            parse_object_name("00000000000000000042-7-c3e9.index"),
            Some((42, 7, "index"))
        );
        assert_eq!(parse_object_name("00000000000000000042-7-c3.index"), None);
    }

    #[test]
    fn compacted_copies_replace_segments_in_place() {
        let a = m()
            .with_segment(seg(0, 10, 0), 0)
            .unwrap()
            .with_segment(seg(10, 20, 1), 1)
            .unwrap();
        let copy = RemoteSegment {
            size: 5,
            compacted: Some(Compacted {
                count: 1,
                by_epoch: 2,
            }),
            ..seg(0, 10, 0)
        };
        let b = a
            .with_rewritten(std::slice::from_ref(&copy), 20, 2)
            .unwrap();
        assert_eq!(b.segments[0], copy);
        assert_eq!(b.segments[1], a.segments[1]);
        assert_eq!((b.cleaned_upto, b.end_offset, b.leader_epoch), (20, 20, 2));
        assert!(b.check().is_ok());
        // Other offsets, an older copy, another epoch of origin or a fenced writer: refused.
        let moved = RemoteSegment {
            next_offset: 9,
            ..copy.clone()
        };
        assert!(a.with_rewritten(&[moved], 20, 2).is_err());
        assert!(b
            .with_rewritten(std::slice::from_ref(&copy), 20, 2)
            .is_err());
        let relabelled = RemoteSegment {
            leader_epoch: 1,
            compacted: Some(Compacted {
                count: 2,
                by_epoch: 2,
            }),
            ..copy.clone()
        };
        assert!(b.with_rewritten(&[relabelled], 20, 2).is_err());
        assert!(b.with_rewritten(&[], 20, 1).is_err());
        // The clean section never moves back or past the end.
        assert_eq!(b.with_rewritten(&[], 5, 2).unwrap().cleaned_upto, 20);
        assert_eq!(a.with_rewritten(&[], 99, 2).unwrap().cleaned_upto, 20);
    }
}
