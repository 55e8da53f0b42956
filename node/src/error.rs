//! The node's error type and its mapping to Kafka error codes.

use kafka_protocol::error::ResponseError;

/// Everything that can fail inside the node.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("i/o error on {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("corrupt record batch: {0}")]
    CorruptBatch(String),
    #[error("unsupported record batch magic {0} (only v2 is accepted)")]
    UnsupportedMagic(i8),
    #[error("invalid record: {0}")]
    InvalidRecord(String),
    #[error("record batch of {size} bytes exceeds max.message.bytes {max}")]
    MessageTooLarge { size: usize, max: usize },
    #[error("offset {offset} out of range [{start}, {end}]")]
    OffsetOutOfRange { offset: i64, start: i64, end: i64 },
    #[error("unknown topic or partition {0}")]
    UnknownTopicOrPartition(String),
    #[error("topic {0} already exists")]
    TopicAlreadyExists(String),
    #[error("invalid topic name {0:?}: {1}")]
    InvalidTopic(String, String),
    #[error("invalid config {key}={value}: {reason}")]
    InvalidConfig {
        key: String,
        value: String,
        reason: String,
    },
    #[error("invalid partitions: {0}")]
    InvalidPartitions(String),
    #[error("invalid replication factor: {0}")]
    InvalidReplicationFactor(String),
    #[error("out of order sequence: {0}")]
    OutOfOrderSequence(String),
    #[error("invalid producer epoch: {0}")]
    InvalidProducerEpoch(String),
    #[error("the log is poisoned after a failed write or fsync: {0}")]
    StorageFailed(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("corrupt metadata file {path}: {reason}")]
    CorruptMetadata { path: String, reason: String },
    #[error("unknown format version {found} in {path} (this build reads up to {supported})")]
    UnknownFormatVersion {
        path: String,
        found: u32,
        supported: u32,
    },
    #[error("bad --object-store {url:?}: {reason}")]
    ObjectStoreUrl { url: String, reason: String },
    #[error("object store {op} {key}: {reason}")]
    BucketRequest {
        op: &'static str,
        key: String,
        reason: String,
    },
    #[error("conditional write of {key} lost a race (precondition failed)")]
    ManifestConflict { key: String },
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
    ManifestFenced { ours: i32, manifest_epoch: i32 },
    #[error("segment [{base}, {next}) does not follow the manifest, which ends at {expected}")]
    UploadNotContiguous { base: i64, next: i64, expected: i64 },
    #[error("remote segment {key} is corrupt: {reason}")]
    CorruptRemoteSegment { key: String, reason: String },
    #[error("remote data of this partition is not available yet: {0}")]
    RemoteUnavailable(String),
    #[error("disk cache entry is damaged: {0}")]
    CorruptCacheEntry(String),
    #[error("replication: {0}")]
    Replication(String),
    #[error("controller unreachable: {0}")]
    ControllerUnavailable(String),
    #[error("controller refused: {message}")]
    Controller { code: i16, message: String },
    #[error("this node does not lead {0}")]
    NotLeader(String),
    /// A Kafka error decided by replication (NOT_ENOUGH_REPLICAS, REQUEST_TIMED_OUT, ...).
    #[error("{message}")]
    Kafka {
        code: ResponseError,
        message: String,
    },
}

/// Result alias for the node.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wrap an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// The Kafka error this maps to at the protocol boundary.
    pub fn kafka_code(&self) -> ResponseError {
        match self {
            Error::Io { .. } | Error::StorageFailed(_) => ResponseError::KafkaStorageError,
            Error::CorruptBatch(_) => ResponseError::CorruptMessage,
            Error::UnsupportedMagic(_) => ResponseError::UnsupportedForMessageFormat,
            Error::InvalidRecord(_) => ResponseError::InvalidRecord,
            Error::MessageTooLarge { .. } => ResponseError::MessageTooLarge,
            Error::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
            Error::UnknownTopicOrPartition(_) => ResponseError::UnknownTopicOrPartition,
            Error::TopicAlreadyExists(_) => ResponseError::TopicAlreadyExists,
            Error::InvalidTopic(..) => ResponseError::InvalidTopicException,
            Error::InvalidConfig { .. } => ResponseError::InvalidConfig,
            Error::InvalidPartitions(_) => ResponseError::InvalidPartitions,
            Error::InvalidReplicationFactor(_) => ResponseError::InvalidReplicationFactor,
            Error::OutOfOrderSequence(_) => ResponseError::OutOfOrderSequenceNumber,
            Error::InvalidProducerEpoch(_) => ResponseError::InvalidProducerEpoch,
            Error::InvalidRequest(_) => ResponseError::InvalidRequest,
            Error::CorruptMetadata { .. } | Error::UnknownFormatVersion { .. } => {
                ResponseError::UnknownServerError
            }
            // A request that needed the bucket: retriable for clients, which back off and
            // try again while the bucket heals or someone repairs the manifest.
            Error::ObjectStoreUrl { .. }
            | Error::BucketRequest { .. }
            | Error::ManifestConflict { .. }
            | Error::CorruptManifest { .. }
            | Error::UnknownManifestVersion { .. }
            | Error::UploadNotContiguous { .. }
            | Error::CorruptRemoteSegment { .. }
            | Error::CorruptCacheEntry(_)
            | Error::RemoteUnavailable(_) => ResponseError::KafkaStorageError,
            // A newer leader owns the partition's manifest: this node no longer leads it.
            Error::ManifestFenced { .. } => ResponseError::NotLeaderOrFollower,
            Error::Replication(_) => ResponseError::NetworkException,
            Error::ControllerUnavailable(_) => ResponseError::NotController,
            Error::Controller { code, .. } => {
                ResponseError::try_from_code(*code).unwrap_or(ResponseError::UnknownServerError)
            }
            Error::NotLeader(_) => ResponseError::NotLeaderOrFollower,
            Error::Kafka { code, .. } => *code,
        }
    }

    /// Whether a later retry may succeed without anyone repairing anything. Tiering backs
    /// off and retries these; the others stop tiering of the partition.
    pub fn is_transient(&self) -> bool {
        !matches!(
            self,
            Error::ObjectStoreUrl { .. }
                | Error::CorruptManifest { .. }
                | Error::UnknownManifestVersion { .. }
                | Error::ManifestFenced { .. }
                | Error::UploadNotContiguous { .. }
                | Error::CorruptRemoteSegment { .. }
        )
    }

    /// The numeric Kafka error code.
    pub fn code(&self) -> i16 {
        self.kafka_code().code()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiering_failures_map_explicitly() {
        let storage = [
            Error::ObjectStoreUrl {
                url: "x".into(),
                reason: "y".into(),
            },
            Error::BucketRequest {
                op: "get",
                key: "k".into(),
                reason: "timed out".into(),
            },
            Error::ManifestConflict { key: "k".into() },
            Error::CorruptManifest {
                key: "k".into(),
                reason: "r".into(),
            },
            Error::UnknownManifestVersion {
                key: "k".into(),
                found: 9,
                supported: 1,
            },
            Error::UploadNotContiguous {
                base: 5,
                next: 9,
                expected: 4,
            },
            Error::CorruptRemoteSegment {
                key: "k".into(),
                reason: "r".into(),
            },
            Error::RemoteUnavailable("r".into()),
            Error::CorruptCacheEntry("r".into()),
        ];
        for e in &storage {
            assert_eq!(e.kafka_code(), ResponseError::KafkaStorageError, "{e}");
        }
        let fenced = Error::ManifestFenced {
            ours: 1,
            manifest_epoch: 2,
        };
        assert_eq!(fenced.kafka_code(), ResponseError::NotLeaderOrFollower);
        // Transient: the uploader retries with backoff; the rest need a repair.
        let transient: Vec<bool> = storage.iter().map(Error::is_transient).collect();
        assert_eq!(
            transient,
            [false, true, true, false, false, false, false, true, true]
        );
        assert!(!fenced.is_transient());
        assert!(Error::io("x", std::io::Error::other("y")).is_transient());
    }
}
