//! Cluster metadata held by the standalone node's embedded controller: topics, their ids,
//! partition counts, config overrides, and the producer-id allocator. Persisted atomically.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetadataImage {
    pub version: u32,
    pub cluster_id: String,
    /// Producer ids below this value may have been handed out.
    pub producer_id_block_end: i64,
    pub topics: BTreeMap<String, TopicMeta>,
}

/// Format version written by this build.
pub const METADATA_VERSION: u32 = 1;

/// Persistent store for the metadata image.
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
