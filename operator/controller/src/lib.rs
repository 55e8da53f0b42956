//! strata-controller: the one implementation of Strata's cluster metadata.
//!
//! Layers, each calling only the ones below it:
//!
//! - [`service`]: the gRPC edge nodes talk to. The only module that converts between protobuf
//!   and the domain types, and that maps [`Error`] to Kafka error codes and `tonic::Status`.
//! - [`handle`]: the domain API, [`ControllerHandle`]: plain Rust requests and answers, the
//!   crate's [`Error`]; serialises changes, persists them, publishes the metadata image. The
//!   operator's reconcilers call it in process.
//! - [`core`]: the pure rules (registration, liveness, leader election, ISR commits, topic
//!   administration, placement) over plain data. No I/O, no clock, no protobuf.
//! - [`store`]: where the metadata is persisted ([`store::MetadataStore`]; a file today,
//!   Kubernetes resources later).
//! - [`proto`]: the generated gRPC contract (`proto/strata/controller/v1/controller.proto`),
//!   client and server; nodes use [`proto::controller_client::ControllerClient`].

pub mod core;
mod error;
pub mod handle;
pub mod service;
pub mod store;

pub use error::{Error, Result};
pub use handle::ControllerHandle;

/// Topic config the operator sets before deleting a topic whose resource says
/// `deletionPolicy: Retain`: nodes then leave the topic's tiered data in the bucket. Without
/// it, deleting a tiered topic deletes its objects too (as deleting a Kafka topic does).
pub const RETAIN_REMOTE_DATA_CONFIG: &str = "strata.retain.remote.data.on.delete";

/// The generated gRPC contract: messages, `controller_client` and `controller_server`.
#[allow(missing_docs, clippy::all)]
pub mod proto {
    tonic::include_proto!("strata.controller.v1");

    impl TopicInfo {
        /// The topic id as a UUID, or `None` when the field is not exactly 16 bytes.
        pub fn id(&self) -> Option<uuid::Uuid> {
            uuid::Uuid::from_slice(&self.topic_id).ok()
        }
    }

    impl ClusterMetadata {
        /// The topic with this name, if any.
        pub fn topic(&self, name: &str) -> Option<&TopicInfo> {
            self.topics.iter().find(|t| t.name == name)
        }
    }
}

/// Kafka error codes the controller answers with (0 = none), named for readability at call
/// sites on both sides of the contract.
pub mod codes {
    /// No error.
    pub const NONE: i32 = 0;
    /// An unexpected server-side failure.
    pub const UNKNOWN_SERVER_ERROR: i32 = -1;
    /// Unknown topic or partition.
    pub const UNKNOWN_TOPIC_OR_PARTITION: i32 = 3;
    /// The sender does not lead the partition.
    pub const NOT_LEADER_OR_FOLLOWER: i32 = 6;
    /// The controller cannot commit now (metadata store unavailable).
    pub const REQUEST_TIMED_OUT: i32 = 7;
    /// The topic name is invalid.
    pub const INVALID_TOPIC_EXCEPTION: i32 = 17;
    /// The topic exists.
    pub const TOPIC_ALREADY_EXISTS: i32 = 36;
    /// Bad partition count.
    pub const INVALID_PARTITIONS: i32 = 37;
    /// Bad replication factor.
    pub const INVALID_REPLICATION_FACTOR: i32 = 38;
    /// Bad explicit replica assignment.
    pub const INVALID_REPLICA_ASSIGNMENT: i32 = 39;
    /// Malformed request.
    pub const INVALID_REQUEST: i32 = 42;
    /// The sender's leader epoch is stale.
    pub const FENCED_LEADER_EPOCH: i32 = 74;
    /// The sender's broker epoch is stale: register again.
    pub const STALE_BROKER_EPOCH: i32 = 77;
    /// The AlterPartition was based on a stale partition epoch.
    pub const INVALID_UPDATE_VERSION: i32 = 96;
    /// A proposed ISR member may not join.
    pub const INELIGIBLE_REPLICA: i32 = 107;
    /// The controller is not the active one (another took over the store).
    pub const NOT_CONTROLLER: i32 = 41;
    // ---- admin APIs: elections and reassignments ----
    /// The preferred replica cannot lead (not alive or not in sync).
    pub const PREFERRED_LEADER_NOT_AVAILABLE: i32 = 80;
    /// No replica can lead.
    pub const ELIGIBLE_LEADERS_NOT_AVAILABLE: i32 = 83;
    /// The partition already has the leader the election would pick.
    pub const ELECTION_NOT_NEEDED: i32 = 84;
    /// Cancelling a reassignment that does not exist.
    pub const NO_REASSIGNMENT_IN_PROGRESS: i32 = 85;
    /// A SCRAM mechanism this build does not know.
    pub const UNSUPPORTED_SASL_MECHANISM: i32 = 33;
    /// Deleting a SCRAM credential that does not exist.
    pub const RESOURCE_NOT_FOUND: i32 = 91;
    /// A user named twice for one mechanism.
    pub const DUPLICATE_RESOURCE: i32 = 92;
    /// A SCRAM credential that cannot be stored.
    pub const UNACCEPTABLE_CREDENTIAL: i32 = 93;
}

/// Connects a client to a controller at `addr`, given as `host:port` or a full `http://` URI.
pub async fn connect(
    addr: &str,
) -> Result<proto::controller_client::ControllerClient<tonic::transport::Channel>> {
    let uri = if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    let endpoint = tonic::transport::Endpoint::from_shared(uri)?;
    Ok(proto::controller_client::ControllerClient::new(
        endpoint.connect().await?,
    ))
}
