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
        }
    }

    /// The numeric Kafka error code.
    pub fn code(&self) -> i16 {
        self.kafka_code().code()
    }
}
