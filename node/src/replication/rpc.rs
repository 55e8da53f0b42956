//! The controller's calls, made the same way whether the controller is remote (gRPC to
//! `strata-operator`) or embedded in this process (a standalone node is a cluster of one).
//! Both answer with the same protobuf messages and `tonic::Status` errors, so everything
//! above this module is one code path.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use strata_controller::proto::controller_client::ControllerClient;
use strata_controller::proto::controller_server::Controller;
use strata_controller::proto::{self as pb};
use strata_controller::service::ControllerService;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// A controller to call: a gRPC client, or the embedded service itself.
pub enum Rpc {
    Remote(ControllerClient<Channel>),
    Embedded(Arc<ControllerService>),
}

/// Metadata images as the controller publishes them.
pub type MetadataStream = Pin<Box<dyn Stream<Item = Result<pb::ClusterMetadata, Status>> + Send>>;

type Answer<T> = Result<Response<T>, Status>;

macro_rules! unary {
    ($($(#[$doc:meta])* $name:ident($req:ty) -> $resp:ty;)*) => {
        $(
            $(#[$doc])*
            pub async fn $name(self, r: $req) -> Answer<$resp> {
                match self {
                    Rpc::Remote(mut c) => c.$name(r).await,
                    Rpc::Embedded(s) => Controller::$name(&*s, Request::new(r)).await,
                }
            }
        )*
    };
}

impl Rpc {
    unary! {
        /// Register this node (a new broker epoch).
        register(pb::RegisterRequest) -> pb::RegisterResponse;
        /// Keep the registration alive.
        heartbeat(pb::HeartbeatRequest) -> pb::HeartbeatResponse;
        /// Propose an ISR.
        alter_partition(pb::AlterPartitionRequest) -> pb::AlterPartitionResponse;
        /// CreateTopics.
        create_topics(pb::CreateTopicsRequest) -> pb::CreateTopicsResponse;
        /// DeleteTopics.
        delete_topics(pb::DeleteTopicsRequest) -> pb::DeleteTopicsResponse;
        /// CreatePartitions.
        create_partitions(pb::CreatePartitionsRequest) -> pb::CreatePartitionsResponse;
        /// AlterConfigs of a topic.
        alter_topic_configs(pb::AlterTopicConfigsRequest) -> pb::AlterTopicConfigsResponse;
        /// A block of producer ids.
        allocate_producer_ids(pb::AllocateProducerIdsRequest) -> pb::AllocateProducerIdsResponse;
        /// Move leaderships away before stopping.
        controlled_shutdown(pb::ControlledShutdownRequest) -> pb::ControlledShutdownResponse;
        /// ElectLeaders.
        elect_leaders(pb::ElectLeadersRequest) -> pb::ElectLeadersResponse;
        /// AlterPartitionReassignments.
        alter_partition_reassignments(pb::AlterPartitionReassignmentsRequest)
            -> pb::AlterPartitionReassignmentsResponse;
        /// AlterUserScramCredentials.
        alter_scram_credentials(pb::AlterScramCredentialsRequest)
            -> pb::AlterScramCredentialsResponse;
        /// CreateAcls.
        create_acls(pb::CreateAclsRequest) -> pb::CreateAclsResponse;
        /// DeleteAcls.
        delete_acls(pb::DeleteAclsRequest) -> pb::DeleteAclsResponse;
        /// AlterClientQuotas.
        alter_client_quotas(pb::AlterClientQuotasRequest) -> pb::AlterClientQuotasResponse;
        /// ListPartitionReassignments.
        list_partition_reassignments(pb::ListPartitionReassignmentsRequest)
            -> pb::ListPartitionReassignmentsResponse;
    }

    /// Watch the metadata: the current image, then every change.
    pub async fn watch_metadata(self, r: pb::WatchMetadataRequest) -> Answer<MetadataStream> {
        match self {
            Rpc::Remote(mut c) => {
                let resp = c.watch_metadata(r).await?;
                Ok(Response::new(Box::pin(resp.into_inner()) as MetadataStream))
            }
            Rpc::Embedded(s) => {
                let resp = Controller::watch_metadata(&*s, Request::new(r)).await?;
                Ok(Response::new(Box::pin(resp.into_inner()) as MetadataStream))
            }
        }
    }
}
