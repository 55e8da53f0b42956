//! The crate's one error type. Variants name what failed and carry what a caller needs to act.
//!
//! Owns: [`Error`]. Calls nothing. Every layer returns it; the gRPC service maps it
//! explicitly to Kafka error codes and `tonic::Status` (`service::kafka_code`), and in-process
//! callers (the operator) match on its variants.

use std::path::PathBuf;

/// Everything that can fail in the controller: refused requests (each maps to one Kafka error
/// code) and failures of the metadata store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request carried a broker epoch that is not the node's current one (or the node is
    /// unknown): the node must register again.
    #[error("node {node} sent broker epoch {sent}, current is {current:?}: register again")]
    StaleBrokerEpoch {
        node: i32,
        sent: i64,
        current: Option<i64>,
    },
    /// No such topic, or no such partition of it.
    #[error("unknown topic or partition {topic}{}", partition.map(|p| format!("-{p}")).unwrap_or_default())]
    UnknownTopicOrPartition {
        topic: String,
        partition: Option<i32>,
    },
    /// An AlterPartition came from a node that does not lead the partition.
    #[error("node {node} is not the leader of {topic}-{partition} (leader is {leader})")]
    NotLeader {
        topic: String,
        partition: i32,
        node: i32,
        leader: i32,
    },
    /// An AlterPartition carried a leader epoch other than the current one.
    #[error("leader epoch {sent} of {topic}-{partition} is fenced, current is {current}")]
    FencedLeaderEpoch {
        topic: String,
        partition: i32,
        sent: i32,
        current: i32,
    },
    /// An AlterPartition was based on a partition epoch other than the current one.
    #[error("partition epoch {sent} of {topic}-{partition} is stale, current is {current}")]
    InvalidUpdateVersion {
        topic: String,
        partition: i32,
        sent: i32,
        current: i32,
    },
    /// A proposed ISR is malformed or adds a replica that may not join it.
    #[error("ineligible ISR for {topic}-{partition}: {reason}")]
    IneligibleReplica {
        topic: String,
        partition: i32,
        reason: String,
    },
    /// A topic name Kafka would refuse.
    #[error("invalid topic name {name:?}: {reason}")]
    InvalidTopicName { name: String, reason: String },
    /// Creating a topic that exists.
    #[error("topic {name} already exists")]
    TopicAlreadyExists { name: String },
    /// A partition count that is too small, too large, or does not grow the topic.
    #[error("invalid partition count for {topic}: {reason}")]
    InvalidPartitions { topic: String, reason: String },
    /// A replication factor below 1 or above the number of alive nodes.
    #[error("invalid replication factor for {topic}: {reason}")]
    InvalidReplicationFactor { topic: String, reason: String },
    /// An explicit replica assignment that cannot be honoured.
    #[error("invalid replica assignment for {topic}: {reason}")]
    InvalidReplicaAssignment { topic: String, reason: String },
    /// A request that is malformed as a whole.
    #[error("invalid request: {reason}")]
    InvalidRequest { reason: String },
    /// The cluster-wide producer id space is used up.
    #[error("producer ids exhausted")]
    ProducerIdsExhausted,
    /// The stored state was written by a format this build does not know.
    #[error(
        "metadata state at {path} has format_version {found}; this build reads only {supported}"
    )]
    UnknownStateFormat {
        path: String,
        found: u64,
        supported: u64,
    },
    /// The metadata log does not replay: a gap, a change to a record that does not exist,
    /// or bytes that fail their checksum before the log's end.
    #[error("metadata log at {origin} is broken: {reason}")]
    BrokenLog { origin: String, reason: String },
    /// The stored state is not valid JSON of the expected shape.
    #[error("metadata state at {path} is corrupt: {source}")]
    CorruptState {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    /// The state could not be serialised (never expected: it is plain data).
    #[error("metadata state cannot be encoded: {0}")]
    EncodeState(#[source] serde_json::Error),
    /// A file operation of the metadata store failed.
    #[error("metadata store I/O on {path}: {source}")]
    StoreIo {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A conditional write lost to a concurrent writer (another controller took over).
    #[error("metadata store write conflict: {reason}")]
    StoreConflict { reason: String },
    /// The server could not bind or serve.
    #[error("controller transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    // ---- admin APIs: elections and reassignments ----
    /// An election found the partition already led by the replica it would elect.
    #[error("{topic}-{partition}: leader {leader} is already the one the election would pick")]
    ElectionNotNeeded {
        topic: String,
        partition: i32,
        leader: i32,
    },
    /// A preferred election whose preferred replica is not alive or not in sync.
    #[error("{topic}-{partition}: preferred leader {preferred} is not available: {reason}")]
    PreferredLeaderNotAvailable {
        topic: String,
        partition: i32,
        preferred: i32,
        reason: String,
    },
    /// An unclean election found no alive replica.
    #[error("{topic}-{partition}: no replica is alive to lead")]
    EligibleLeadersNotAvailable { topic: String, partition: i32 },
    /// Cancelling a reassignment of a partition that is not moving.
    #[error("{topic}-{partition} has no reassignment in progress")]
    NoReassignmentInProgress { topic: String, partition: i32 },
    // ---- security metadata ----
    /// A SCRAM credential that cannot be stored (bad user name, iterations, key lengths).
    #[error("unacceptable credential for user {user:?}: {reason}")]
    UnacceptableCredential { user: String, reason: String },
    /// Deleting a SCRAM credential that does not exist.
    #[error("user {user:?} has no {mechanism} credential")]
    CredentialNotFound { user: String, mechanism: String },
    /// A user named twice for one mechanism in one AlterUserScramCredentials.
    #[error("user {user:?} appears more than once for {mechanism}")]
    DuplicateCredential { user: String, mechanism: String },
}

impl Error {
    /// Shorthand for [`Error::StoreIo`].
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::StoreIo {
            path: path.into(),
            source,
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
