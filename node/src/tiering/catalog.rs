//! The bucket's catalog of topics, and whole-cluster restore from it.
//!
//! Beside each topic's partition folders lies `{prefix}{topic_id}/topic.json`: its name,
//! partition count, replication factor and config overrides. The leader of the topic's
//! partition 0 writes it whenever one of those changes (the node root says which topics it
//! describes; the uploader's pass writes them, so a failed put is retried). A topic deleted
//! with its data retained keeps a descriptor marked deleted.
//!
//! A restore reads the catalog of a prefix (copied first into this node's own prefix when it
//! is another one), and returns, per topic, what the controller needs to recreate it: the
//! same id (the bucket's folders are named by it) and first leader epochs above those in each
//! partition's manifest. Partitions so created open through `Tiering::open_partition`, which
//! restores them from their manifests.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::store::{Bucket, ObjectStoreBucket};
use super::Tiering;
use crate::error::{Error, Result};

/// Format version written by this build; readers refuse newer ones.
pub const CATALOG_VERSION: u32 = 1;
/// Name of a topic's descriptor inside its folder.
pub const DESCRIPTOR: &str = "topic.json";
/// Written into the restoring cluster's prefix once its restore is complete.
pub const RESTORE_MARKER: &str = "restore.json";

/// One topic as the bucket describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicDescriptor {
    pub version: u32,
    pub name: String,
    pub topic_id: uuid::Uuid,
    pub partitions: i32,
    pub replication_factor: i16,
    /// The topic's config overrides (not the node defaults).
    pub configs: BTreeMap<String, String>,
    /// The topic was deleted with its data retained: a restore leaves it out.
    #[serde(default)]
    pub deleted: bool,
}

impl TopicDescriptor {
    pub fn new(
        name: &str,
        topic_id: uuid::Uuid,
        partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
    ) -> Self {
        TopicDescriptor {
            version: CATALOG_VERSION,
            name: name.to_string(),
            topic_id,
            partitions,
            replication_factor,
            configs,
            deleted: false,
        }
    }

    /// Decode and check a descriptor read from `key`.
    pub fn parse(key: &str, raw: &[u8]) -> Result<TopicDescriptor> {
        let corrupt = |reason: String| Error::CorruptManifest {
            key: key.to_string(),
            reason,
        };
        let d: TopicDescriptor = super::manifest::parse_versioned(key, raw, CATALOG_VERSION)?;
        if d.name.is_empty() || d.topic_id.is_nil() {
            return Err(corrupt("no topic name or id".into()));
        }
        if d.partitions < 1 || d.replication_factor < 1 {
            return Err(corrupt(format!(
                "{} partitions, replication factor {}",
                d.partitions, d.replication_factor
            )));
        }
        Ok(d)
    }

    pub fn to_bytes(&self) -> bytes::Bytes {
        bytes::Bytes::from(serde_json::to_vec_pretty(self).expect("serializable"))
    }
}

/// A topic to recreate: its descriptor and each partition's first leader epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoredTopic {
    pub descriptor: TopicDescriptor,
    pub leader_epochs: Vec<i32>,
}

/// What a restore read and copied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreReport {
    pub topics: Vec<RestoredTopic>,
    /// Objects copied from the source prefix, and their bytes.
    pub objects_copied: u64,
    pub bytes_copied: u64,
    /// Bytes that went through this node (0 when the copy stayed on the server).
    pub bytes_read: u64,
    /// One above the highest producer id in the restored producer state: the new cluster
    /// hands out ids from here, so no new producer meets an old one's sequence numbers.
    pub producer_id_floor: i64,
}

/// Which descriptor keys a listing holds: `{prefix}{uuid}/topic.json`, one level deep.
pub fn descriptor_keys<'a>(prefix: &str, listing: &'a [(String, u64)]) -> Vec<&'a str> {
    listing
        .iter()
        .filter_map(|(k, _)| {
            let rest = k.strip_prefix(prefix)?;
            let (folder, name) = rest.split_once('/')?;
            (name == DESCRIPTOR && uuid::Uuid::parse_str(folder).is_ok()).then_some(k.as_str())
        })
        .collect()
}

/// The objects of a source listing (relative to `from`) that the destination (relative to
/// `to`) lacks or holds with another size, with their sizes. Only topic folders are copied:
/// no restore marker, lock file or other cluster's files.
pub fn to_copy(
    from: &str,
    source: &[(String, u64)],
    to: &str,
    dest: &[(String, u64)],
) -> Vec<(String, u64)> {
    let have: HashMap<&str, u64> = dest
        .iter()
        .filter_map(|(k, n)| Some((k.strip_prefix(to)?, *n)))
        .collect();
    source
        .iter()
        .filter_map(|(k, n)| {
            let rel = k.strip_prefix(from)?;
            let folder = rel.split_once('/')?.0;
            uuid::Uuid::parse_str(folder).ok()?;
            (have.get(rel) != Some(n)).then(|| (rel.to_string(), *n))
        })
        .collect()
}

/// The first leader epoch of a restored partition: above every epoch its manifest saw.
pub fn first_epoch(manifest_epoch: i32, history: &[(i32, i64)]) -> i32 {
    let top = history
        .iter()
        .map(|(e, _)| *e)
        .max()
        .unwrap_or(-1)
        .max(manifest_epoch);
    top.saturating_add(1).max(0)
}

/// The bucket prefix of a restore source URL, if it names the same store as ours.
fn same_store_prefix(ours: &dyn Bucket, url: &str) -> Option<String> {
    let ours = ours.s3_bucket_name()?;
    let rest = url.strip_prefix("s3://")?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket != ours {
        return None;
    }
    let prefix = prefix.trim_matches('/');
    Some(if prefix.is_empty() {
        String::new()
    } else {
        format!("{prefix}/")
    })
}

impl Tiering {
    /// Say which topics this node describes in the catalog (those whose partition 0 it
    /// leads); the uploader's next pass writes the ones that changed.
    pub fn describe_topics(&self, topics: Vec<TopicDescriptor>) {
        let mut c = self.catalog.lock();
        c.wanted = topics.into_iter().map(|d| (d.topic_id, d)).collect();
    }

    /// Mark a topic deleted with its data retained, so a restore leaves it out.
    pub fn retire_topic(&self, mut d: TopicDescriptor) {
        d.deleted = true;
        self.catalog.lock().written.remove(&d.topic_id);
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let bucket = self.bucket.clone();
        let key = self.descriptor_key(d.topic_id);
        rt.spawn(async move {
            if let Err(e) = bucket.put(&key, d.to_bytes()).await {
                tracing::warn!(topic = %d.name, error = %e, "could not mark the retained topic deleted in the bucket's catalog");
            }
        });
    }

    fn descriptor_key(&self, topic_id: uuid::Uuid) -> String {
        format!("{}{}/{DESCRIPTOR}", self.prefix, topic_id.hyphenated())
    }

    /// Write the descriptors that changed since this node last wrote them.
    pub(super) async fn publish_catalog(&self) {
        let due: Vec<TopicDescriptor> = {
            let c = self.catalog.lock();
            c.wanted
                .values()
                .filter(|d| c.written.get(&d.topic_id) != Some(d))
                .cloned()
                .collect()
        };
        for d in due {
            let key = self.descriptor_key(d.topic_id);
            match self.bucket.put(&key, d.to_bytes()).await {
                Ok(()) => {
                    tracing::debug!(topic = %d.name, "topic described in the bucket's catalog");
                    let deleted = {
                        let mut c = self.catalog.lock();
                        let deleted = c.deleted.contains(&d.topic_id);
                        if !deleted {
                            c.written.insert(d.topic_id, d);
                        }
                        deleted
                    };
                    if deleted {
                        // The topic was deleted while the put was out: it must not come
                        // back in a restore.
                        let _ = self.bucket.delete(&key).await;
                    }
                }
                Err(e) => {
                    tracing::warn!(topic = %d.name, error = %e, "could not describe the topic in the bucket's catalog; retrying");
                    return;
                }
            }
        }
    }

    /// Whether a restore from `from` already completed into this prefix.
    pub async fn restore_done(&self, from: &str) -> Result<bool> {
        let key = format!("{}{RESTORE_MARKER}", self.prefix);
        Ok(match self.bucket.get(&key).await? {
            None => false,
            Some((raw, _)) => serde_json::from_slice::<serde_json::Value>(&raw)
                .ok()
                .and_then(|v| v.get("from").and_then(|f| f.as_str()).map(|f| f == from))
                .unwrap_or(false),
        })
    }

    /// Record that the restore from `from` is complete.
    pub async fn mark_restored(&self, from: &str, topics: &[String]) -> Result<()> {
        let key = format!("{}{RESTORE_MARKER}", self.prefix);
        let body = serde_json::json!({
            "from": from,
            "finished_ms": crate::fsutil::now_ms(),
            "topics": topics,
        });
        self.bucket
            .put(&key, bytes::Bytes::from(body.to_string()))
            .await
    }

    /// Read the catalog of `from` (a URL: this node's own `--object-store` restores in
    /// place; another prefix is first copied into ours, on the server when it is in the same
    /// S3 bucket) and say how to recreate each live topic in it.
    pub async fn read_catalog_for_restore(&self, from: &str) -> Result<RestoreReport> {
        let mut report = RestoreReport::default();
        if from.trim_end_matches('/') != self.options.url.trim_end_matches('/') {
            self.copy_prefix(from, &mut report).await?;
        }
        let listing = self.bucket.list(&self.prefix).await?;
        for key in descriptor_keys(&self.prefix, &listing) {
            let Some((raw, _)) = self.bucket.get(key).await? else {
                continue;
            };
            let d = TopicDescriptor::parse(key, &raw)?;
            if d.deleted {
                tracing::info!(topic = %d.name, "restore: leaving out a topic deleted with its data retained");
                continue;
            }
            let mut leader_epochs = Vec::with_capacity(d.partitions as usize);
            for p in 0..d.partitions {
                let (m, _) = self.load_manifest(d.topic_id, p).await?;
                leader_epochs.push(first_epoch(m.leader_epoch, &m.epoch_history()));
                let producers = match m.segments.last() {
                    Some(last) => self.load_snapshot(d.topic_id, p, last).await?,
                    None => m.retired_producers(),
                };
                if let Some(top) = producers.producers.keys().max() {
                    report.producer_id_floor = report.producer_id_floor.max(top.saturating_add(1));
                }
            }
            report.topics.push(RestoredTopic {
                descriptor: d,
                leader_epochs,
            });
        }
        report
            .topics
            .sort_by(|a, b| a.descriptor.name.cmp(&b.descriptor.name));
        Ok(report)
    }

    /// Copy the topic folders of `from` that our prefix lacks.
    async fn copy_prefix(&self, from: &str, report: &mut RestoreReport) -> Result<()> {
        let dest = self.bucket.list(&self.prefix).await?;
        if let Some(src_prefix) = same_store_prefix(self.bucket.as_ref(), from) {
            let source = self.bucket.list(&src_prefix).await?;
            for (rel, size) in to_copy(&src_prefix, &source, &self.prefix, &dest) {
                self.bucket
                    .copy(
                        &format!("{src_prefix}{rel}"),
                        &format!("{}{rel}", self.prefix),
                    )
                    .await?;
                report.objects_copied += 1;
                report.bytes_copied += size;
            }
            return Ok(());
        }
        let (src, src_prefix) = ObjectStoreBucket::open(from)?;
        let source = src.list(&src_prefix).await?;
        for (rel, size) in to_copy(&src_prefix, &source, &self.prefix, &dest) {
            let key = format!("{src_prefix}{rel}");
            let (data, _) = src.get(&key).await?.ok_or_else(|| {
                Error::RemoteUnavailable(format!("{key} vanished while restoring from {from}"))
            })?;
            report.bytes_read += data.len() as u64;
            self.bucket
                .put(&format!("{}{rel}", self.prefix), data)
                .await?;
            report.objects_copied += 1;
            report.bytes_copied += size;
        }
        Ok(())
    }
}

/// What this node has put in the catalog and wants there.
#[derive(Debug, Default)]
pub(super) struct Catalog {
    pub wanted: HashMap<uuid::Uuid, TopicDescriptor>,
    pub written: HashMap<uuid::Uuid, TopicDescriptor>,
    /// Topics deleted while this node ran (ids are never reused).
    pub deleted: std::collections::HashSet<uuid::Uuid>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d() -> TopicDescriptor {
        let mut configs = BTreeMap::new();
        configs.insert("remote.storage.enable".into(), "true".into());
        TopicDescriptor::new("orders", uuid::Uuid::from_u128(42), 3, 2, configs)
    }

    #[test]
    fn descriptors_round_trip_and_bad_ones_are_refused() {
        let raw = d().to_bytes();
        assert_eq!(TopicDescriptor::parse("k", &raw).unwrap(), d());
        let newer = String::from_utf8(raw.to_vec())
            .unwrap()
            .replace("\"version\": 1", "\"version\": 9");
        assert!(matches!(
            TopicDescriptor::parse("k", newer.as_bytes()),
            Err(Error::UnknownManifestVersion { found: 9, .. })
        ));
        for bad in [
            &b"{"[..],
            b"{}",
            b"[1]",
            br#"{"version":1,"name":"","topic_id":"00000000-0000-0000-0000-00000000002a","partitions":1,"replication_factor":1,"configs":{}}"#,
            br#"{"version":1,"name":"t","topic_id":"00000000-0000-0000-0000-000000000000","partitions":1,"replication_factor":1,"configs":{}}"#,
            br#"{"version":1,"name":"t","topic_id":"00000000-0000-0000-0000-00000000002a","partitions":0,"replication_factor":1,"configs":{}}"#,
        ] {
            assert!(
                matches!(
                    TopicDescriptor::parse("k", bad),
                    Err(Error::CorruptManifest { .. })
                ),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn descriptor_keys_are_one_level_under_a_topic_id() {
        let id = uuid::Uuid::from_u128(42).hyphenated().to_string();
        let listing: Vec<(String, u64)> = [
            format!("p/{id}/topic.json"),
            format!("p/{id}/0/manifest.json"),
            format!("p/{id}/0/topic.json"),
            "p/not-a-uuid/topic.json".to_string(),
            "p/restore.json".to_string(),
            format!("q/{id}/topic.json"),
        ]
        .into_iter()
        .map(|k| (k, 1))
        .collect();
        assert_eq!(
            descriptor_keys("p/", &listing),
            vec![format!("p/{id}/topic.json").as_str()]
        );
    }

    #[test]
    fn a_copy_takes_only_missing_or_different_topic_objects() {
        let id = uuid::Uuid::from_u128(7).hyphenated().to_string();
        let source: Vec<(String, u64)> = vec![
            (format!("old/{id}/topic.json"), 10),
            (format!("old/{id}/0/manifest.json"), 20),
            (format!("old/{id}/0/00000000000000000000-0.log"), 300),
            ("old/restore.json".into(), 5),
            ("old/.strata-manifest.lock".into(), 0),
        ];
        let dest: Vec<(String, u64)> = vec![
            (format!("new/{id}/topic.json"), 10),
            (format!("new/{id}/0/manifest.json"), 19),
        ];
        let mut got = to_copy("old/", &source, "new/", &dest);
        got.sort();
        assert_eq!(
            got,
            vec![
                (format!("{id}/0/00000000000000000000-0.log"), 300),
                (format!("{id}/0/manifest.json"), 20),
            ]
        );
    }

    #[test]
    fn restored_epochs_continue_above_the_bucket_copy() {
        assert_eq!(first_epoch(-1, &[]), 0);
        assert_eq!(first_epoch(4, &[(0, 0), (3, 10)]), 5);
        assert_eq!(first_epoch(2, &[(0, 0), (6, 10)]), 7);
        assert_eq!(first_epoch(i32::MAX, &[]), i32::MAX);
    }
}
