//! The metadata a node acts on: topics (their ids, partition counts, config overrides), and
//! the nodes and each partition's assignment, installed as one [`Image`]; and the store an
//! earlier standalone version kept its topics in (`meta/metadata.json`), read once to import
//! it into the embedded controller. A leaf: it calls nothing of the node but `fsutil`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{MappedRwLockReadGuard, RwLock, RwLockReadGuard};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fsutil;

/// One topic as the controller knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopicMeta {
    pub id: uuid::Uuid,
    pub partitions: i32,
    pub replication_factor: i16,
    pub configs: BTreeMap<String, String>,
    pub leader_epoch: i32,
    #[serde(default)]
    pub internal: bool,
}

/// The whole persisted metadata image.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetadataImage {
    pub version: u32,
    pub cluster_id: String,
    /// Producer ids below this value may have been handed out.
    pub producer_id_block_end: i64,
    pub topics: BTreeMap<String, TopicMeta>,
}

/// Format version written by this build.
pub const METADATA_VERSION: u32 = 1;

/// A node as the cluster metadata describes it.
#[derive(Debug, Clone)]
pub struct NodeAddr {
    pub id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
    pub alive: bool,
    /// Every named listener's advertised (host, port).
    pub listeners: BTreeMap<String, (String, i32)>,
}

impl NodeAddr {
    /// The address clients of `listener` reach this node at; None when it has no such
    /// listener. The empty name (requests not from a listener) gets the default address.
    pub fn endpoint(&self, listener: &str) -> Option<(&str, i32)> {
        if listener.is_empty() || self.listeners.is_empty() {
            return Some((&self.host, self.port));
        }
        self.listeners.get(listener).map(|(h, p)| (h.as_str(), *p))
    }
}

/// One partition's assignment as last published by the controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub replicas: Vec<i32>,
    pub leader: i32,
    pub leader_epoch: i32,
    pub isr: Vec<i32>,
    pub partition_epoch: i32,
}

/// The cluster metadata image this node has applied.
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    pub version: u64,
    pub cluster_id: String,
    pub controller_id: i32,
    pub nodes: BTreeMap<i32, NodeAddr>,
    /// Every partition's assignment, by topic. Shared between successive views, so that a
    /// change copies only the topics it touches.
    pub assignments: BTreeMap<String, Arc<BTreeMap<i32, Assignment>>>,
    /// SCRAM credentials (user, credential).
    pub scram_credentials: Vec<(String, strata_security::scram::ScramCredential)>,
    /// Kafka ACLs.
    pub acls: Vec<strata_security::acl::AclBinding>,
    /// Client quotas by entity.
    pub client_quotas: std::sync::Arc<strata_security::quota::QuotaMap>,
}

impl ClusterView {
    pub fn assignment(&self, topic: &str, p: i32) -> Option<&Assignment> {
        self.assignments.get(topic)?.get(&p)
    }

    /// Every partition's assignment.
    pub fn all_assignments(&self) -> impl Iterator<Item = &Assignment> {
        self.assignments.values().flat_map(|t| t.values())
    }

    pub fn alive_nodes(&self) -> impl Iterator<Item = &NodeAddr> {
        self.nodes.values().filter(|n| n.alive)
    }
}

/// The metadata this node acts on, as one value: topics, and in a cluster the nodes and
/// every partition's assignment. Replaced whole, so that no reader sees new topics with
/// old assignments.
#[derive(Debug, Clone, Default)]
pub struct Image {
    /// Topics (standalone: the node's own store; cluster: the controller's).
    pub meta: MetadataImage,
    /// Nodes and assignments (cluster mode; empty standalone).
    pub cluster: Arc<ClusterView>,
}

/// The installed [`Image`], shared by the broker and the controller link.
#[derive(Default)]
pub struct ImageCell {
    image: RwLock<Image>,
}

impl ImageCell {
    /// A cell holding `meta` and an empty cluster view.
    pub fn new(meta: MetadataImage) -> Self {
        ImageCell {
            image: RwLock::new(Image {
                meta,
                cluster: Arc::new(ClusterView {
                    controller_id: -1,
                    ..Default::default()
                }),
            }),
        }
    }

    /// The topics, read-locked.
    pub fn meta(&self) -> MappedRwLockReadGuard<'_, MetadataImage> {
        RwLockReadGuard::map(self.image.read(), |i| &i.meta)
    }

    /// Replace the topics (standalone admin changes).
    pub fn set_meta(&self, meta: MetadataImage) {
        self.image.write().meta = meta;
    }

    /// The cluster view installed last.
    pub fn cluster(&self) -> Arc<ClusterView> {
        self.image.read().cluster.clone()
    }

    /// Install a controller image: topics and cluster view in one write.
    pub fn install(&self, meta: MetadataImage, cluster: ClusterView) {
        *self.image.write() = Image {
            meta,
            cluster: Arc::new(cluster),
        };
    }
}

/// The metadata file of an earlier standalone version (read to import it).
pub struct MetadataStore {
    path: PathBuf,
}

impl MetadataStore {
    /// Store under `data_dir/meta/metadata.json`.
    pub fn new(data_dir: &Path) -> Result<Self> {
        let dir = data_dir.join("meta");
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(dir.display().to_string(), e))?;
        Ok(MetadataStore {
            path: dir.join("metadata.json"),
        })
    }

    /// Whether an image was ever saved here.
    pub fn exists(&self) -> bool {
        self.path.exists()
    }

    /// Load the image, or create a fresh one with a new cluster id.
    pub fn load(&self) -> Result<MetadataImage> {
        if !self.path.exists() {
            return Ok(MetadataImage {
                version: METADATA_VERSION,
                cluster_id: new_cluster_id(),
                producer_id_block_end: 0,
                topics: BTreeMap::new(),
            });
        }
        let raw =
            std::fs::read(&self.path).map_err(|e| Error::io(self.path.display().to_string(), e))?;
        let image: MetadataImage =
            serde_json::from_slice(&raw).map_err(|e| Error::CorruptMetadata {
                path: self.path.display().to_string(),
                reason: e.to_string(),
            })?;
        if image.version > METADATA_VERSION {
            return Err(Error::UnknownFormatVersion {
                path: self.path.display().to_string(),
                found: image.version,
                supported: METADATA_VERSION,
            });
        }
        Ok(image)
    }

    /// Persist the image atomically.
    pub fn save(&self, image: &MetadataImage) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(image).expect("serializable");
        fsutil::write_atomic(&self.path, &bytes)
    }
}

/// A Kafka-style cluster id: 16 random bytes, URL-safe base64 without padding.
fn new_cluster_id() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = uuid::Uuid::new_v4().into_bytes();
    let mut out = String::new();
    let mut acc: u32 = 0;
    let mut bits = 0;
    for b in bytes {
        acc = (acc << 8) | b as u32;
        bits += 8;
        while bits >= 6 {
            bits -= 6;
            out.push(ALPHABET[((acc >> bits) & 63) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (6 - bits)) & 63) as usize] as char);
    }
    out
}

/// Validate a topic name as Kafka does.
pub fn validate_topic_name(name: &str) -> Result<()> {
    let bad = |why: &str| Error::InvalidTopic(name.to_string(), why.to_string());
    if name.is_empty() {
        return Err(bad("name is empty"));
    }
    if name == "." || name == ".." {
        return Err(bad("'.' and '..' are not allowed"));
    }
    if name.len() > 249 {
        return Err(bad("longer than 249 characters"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-')
    {
        return Err(bad(
            "only ASCII alphanumerics, '.', '_' and '-' are allowed",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        assert!(validate_topic_name("test_topic").is_ok());
        assert!(validate_topic_name("a.b-c_d").is_ok());
        assert!(validate_topic_name("").is_err());
        assert!(validate_topic_name("..").is_err());
        assert!(validate_topic_name("a/b").is_err());
        assert!(validate_topic_name(&"x".repeat(250)).is_err());
    }

    #[test]
    fn cluster_id_shape() {
        let id = new_cluster_id();
        assert_eq!(id.len(), 22);
    }

    #[test]
    fn roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let store = MetadataStore::new(dir.path()).unwrap();
        let mut img = store.load().unwrap();
        img.topics.insert(
            "t".into(),
            TopicMeta {
                id: uuid::Uuid::new_v4(),
                partitions: 3,
                replication_factor: 1,
                configs: BTreeMap::new(),
                leader_epoch: 0,
                internal: false,
            },
        );
        store.save(&img).unwrap();
        assert_eq!(store.load().unwrap(), img);
        std::fs::write(dir.path().join("meta/metadata.json"), b"{nonsense").unwrap();
        assert!(matches!(store.load(), Err(Error::CorruptMetadata { .. })));
    }
}
