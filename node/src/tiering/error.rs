//! What can go wrong while tiering, and how it maps to Kafka error codes at the edge.

use kafka_protocol::error::ResponseError;

/// Errors of the tiering layer.
#[derive(Debug, thiserror::Error)]
pub enum TierError {
    #[error("bad --object-store {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("object store {op} {key}: {reason}")]
    Bucket {
        op: &'static str,
        key: String,
        reason: String,
    },
    #[error("conditional write of {key} lost a race (precondition failed)")]
    Conflict { key: String },
    #[error("manifest {key} is unreadable: {reason} (tiering of this partition stops until it is repaired; it is never reset)")]
    CorruptManifest { key: String, reason: String },
    #[error("manifest {key} has format version {found}; this build reads up to {supported}")]
    UnknownManifestVersion {
        key: String,
        found: u32,
        supported: u32,
    },
    #[error(
        "fenced: manifest written by leader epoch {manifest_epoch}, this leader has epoch {ours}"
    )]
    Fenced { ours: i32, manifest_epoch: i32 },
    #[error("segment [{base}, {next}) does not follow the manifest, which ends at {expected}")]
    NotContiguous { base: i64, next: i64, expected: i64 },
    #[error("remote segment {key} is corrupt: {reason}")]
    CorruptSegment { key: String, reason: String },
    #[error("remote data of this partition is not available yet: {0}")]
    Unavailable(String),
    #[error("local log: {0}")]
    Local(#[from] crate::error::Error),
}

impl TierError {
    /// The Kafka error a client sees when a request needed the bucket and it failed.
    pub fn kafka_code(&self) -> ResponseError {
        match self {
            TierError::Local(e) => e.kafka_code(),
            // Retriable for clients: they back off and try again while the bucket heals.
            _ => ResponseError::KafkaStorageError,
        }
    }

    /// Whether a later retry may succeed without anyone repairing anything.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            TierError::Bucket { .. }
                | TierError::Conflict { .. }
                | TierError::Unavailable(_)
                | TierError::Local(_)
        )
    }
}

impl From<TierError> for crate::error::Error {
    fn from(e: TierError) -> Self {
        match e {
            TierError::Local(e) => e,
            other => {
                crate::error::Error::io("tiered storage", std::io::Error::other(other.to_string()))
            }
        }
    }
}
