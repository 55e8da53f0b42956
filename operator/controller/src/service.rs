//! The gRPC edge: the tonic service nodes talk to, over a [`ControllerHandle`].
//!
//! Owns: the wire format. Each RPC converts its protobuf request into the domain API's plain
//! types, calls [`ControllerHandle`], and maps the answer back; the crate's [`Error`] becomes
//! a Kafka error code ([`kafka_code`]) or, when the change could not be made durable, a
//! `tonic::Status` (`status`), in this file only. Also owns serving: the listener, graceful
//! shutdown, and the metadata watch streams.
//!
//! May call: [`crate::handle`] (the domain API), [`crate::proto`] and the `core` types the
//! domain API speaks. It never changes the core directly.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::codes;
use crate::core::{self, Image, PartitionRecord, TopicOutcome, TopicRecord};
use crate::error::{Error, Result};
use crate::handle::{ControllerHandle, IsrProposal, NodeRegistration, PartitionSize};
use crate::proto;
use crate::proto::controller_server::{Controller, ControllerServer};
use crate::store::MetadataStore;
use strata_security::acl::{AclBinding, AclFilter};
use strata_security::quota::{Alteration, QuotaEntity, QuotaKey, QuotaValue};
use strata_security::scram::{ScramCredential, ScramMechanism};

pub use crate::handle::{ServiceConfig, TICK_INTERVAL};

/// The controller's gRPC service: cheap to clone, every clone serves the same controller.
#[derive(Clone)]
pub struct ControllerService {
    controller: ControllerHandle,
    /// Set to `true` when serving ends, so open WatchMetadata streams finish and a graceful
    /// shutdown does not wait for them forever.
    stopping: Arc<watch::Sender<bool>>,
}

impl ControllerService {
    /// Starts a controller ([`ControllerHandle::start`]) and a service over it.
    pub async fn start(config: ServiceConfig, store: Arc<dyn MetadataStore>) -> Result<Self> {
        Ok(ControllerService::new(
            ControllerHandle::start(config, store).await?,
        ))
    }

    /// A service over `controller`.
    pub fn new(controller: ControllerHandle) -> Self {
        let (stopping, _) = watch::channel(false);
        ControllerService {
            controller,
            stopping: Arc::new(stopping),
        }
    }

    /// The controller this service serves, for in-process callers.
    pub fn controller(&self) -> &ControllerHandle {
        &self.controller
    }

    /// Serves gRPC on `listener` until `shutdown` completes, running the controller's timers
    /// ([`ControllerHandle::run_timers`]). Returns an error if the store reported that another
    /// controller took over, so the host exits instead of acting on stale state.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        let ticker = tokio::spawn(self.controller.clone().run_timers());
        let stopping = self.stopping.clone();
        let mut deposed = self.controller.deposed();
        let signal = async move {
            tokio::select! {
                _ = shutdown => {}
                _ = deposed.wait_for(|d| d.is_some()) => {}
            }
            stopping.send_replace(true);
        };
        let served = tonic::transport::Server::builder()
            // A node cut off without a FIN (a partition, a dead host) would otherwise keep its
            // watch stream and task forever.
            .http2_keepalive_interval(Some(Duration::from_secs(10)))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)))
            .add_service(ControllerServer::new(self.clone()))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), signal)
            .await;
        ticker.abort();
        served?;
        let reason = self.controller.deposed().borrow().clone();
        match reason {
            Some(reason) => Err(Error::StoreConflict { reason }),
            None => Ok(()),
        }
    }

    /// Binds `addr` and returns the listener with its bound address (port 0 picks one).
    pub async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr)> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| Error::io(addr.to_string(), e))?;
        let local = listener
            .local_addr()
            .map_err(|e| Error::io(addr.to_string(), e))?;
        Ok((listener, local))
    }
}

// ---- domain -> wire: the image ----

/// The image as nodes receive it.
pub fn image_to_proto(image: &Image) -> proto::ClusterMetadata {
    proto::ClusterMetadata {
        topics: image
            .topics
            .iter()
            .map(|(name, t)| topic_to_proto(name, t))
            .collect(),
        ..image_without_topics(image)
    }
}

/// `image` as the change from `prev` (the watch's previous message): only the topics that
/// differ, and of a topic whose settings and partition count stayed, only the partitions
/// that differ. A node's bytes and decoding per change follow the change, not the cluster.
pub fn image_delta_to_proto(prev: &Image, image: &Image) -> proto::ClusterMetadata {
    let mut topics = Vec::new();
    for (name, t) in &image.topics {
        match prev.topics.get(name) {
            Some(old) if old == t => {}
            Some(old)
                if old.topic_id == t.topic_id
                    && old.configs == t.configs
                    && old.internal == t.internal
                    && old.partitions.len() == t.partitions.len() =>
            {
                let mut info = topic_to_proto(
                    name,
                    &TopicRecord {
                        topic_id: t.topic_id,
                        configs: t.configs.clone(),
                        internal: t.internal,
                        partitions: Vec::new(),
                    },
                );
                info.partial = true;
                info.partitions = t
                    .partitions
                    .iter()
                    .zip(&old.partitions)
                    .enumerate()
                    .filter(|(_, (new, old))| new != old)
                    .map(|(i, (p, _))| partition_to_proto(i, p))
                    .collect();
                topics.push(info);
            }
            _ => topics.push(topic_to_proto(name, t)),
        }
    }
    proto::ClusterMetadata {
        topics,
        incremental: true,
        base_version: prev.version,
        removed_topics: prev
            .topics
            .keys()
            .filter(|name| !image.topics.contains_key(*name))
            .cloned()
            .collect(),
        ..image_without_topics(image)
    }
}

/// Everything of the image but its topics.
fn image_without_topics(image: &Image) -> proto::ClusterMetadata {
    proto::ClusterMetadata {
        version: image.version,
        cluster_id: image.cluster_id.clone(),
        controller_id: image.controller_id,
        nodes: image
            .nodes
            .iter()
            .map(|(&id, n)| proto::NodeInfo {
                node_id: id,
                host: n.host.clone(),
                port: n.port,
                rack: n.rack.clone(),
                alive: n.alive,
                listeners: n
                    .listeners
                    .iter()
                    .map(|(name, (host, port))| proto::Endpoint {
                        name: name.clone(),
                        host: host.clone(),
                        port: *port,
                    })
                    .collect(),
            })
            .collect(),
        topics: Vec::new(),
        scram_credentials: image
            .scram_credentials
            .iter()
            .flat_map(|(user, per)| per.values().map(move |c| scram_to_proto(user, c)))
            .collect(),
        acls: image.acls.iter().map(acl_to_proto).collect(),
        client_quotas: image
            .client_quotas
            .iter()
            .map(|(e, v)| client_quota_to_proto(e, v))
            .collect(),
        incremental: false,
        base_version: 0,
        removed_topics: Vec::new(),
    }
}

/// The quotas of one entity as nodes receive them.
pub fn client_quota_to_proto(
    entity: &QuotaEntity,
    values: &BTreeMap<QuotaKey, QuotaValue>,
) -> proto::ClientQuotaInfo {
    proto::ClientQuotaInfo {
        entity: entity
            .to_wire()
            .into_iter()
            .map(|(t, n)| proto::QuotaEntityPart {
                entity_type: t.to_string(),
                name: n.map(str::to_string),
            })
            .collect(),
        values: values
            .iter()
            .map(|(k, v)| (k.name().to_string(), v.0))
            .collect(),
    }
}

/// The quotas of one entity from the wire, validated as AlterClientQuotas validates them.
pub fn client_quota_from_proto(
    q: &proto::ClientQuotaInfo,
) -> std::result::Result<(QuotaEntity, BTreeMap<QuotaKey, QuotaValue>), String> {
    let entity = QuotaEntity::from_wire(
        q.entity
            .iter()
            .map(|p| (p.entity_type.as_str(), p.name.as_deref())),
    )
    .map_err(|e| e.to_string())?;
    let values = q
        .values
        .iter()
        .map(|(k, v)| {
            QuotaKey::validate(k, *v)
                .map(|k| (k, QuotaValue(*v)))
                .map_err(|e| e.to_string())
        })
        .collect::<std::result::Result<_, _>>()?;
    Ok((entity, values))
}

/// An AlterClientQuotas entry from the wire (validated by the core).
pub fn quota_alteration_from_proto(a: &proto::QuotaAlteration) -> Alteration {
    Alteration {
        entity: a
            .entity
            .iter()
            .map(|p| (p.entity_type.clone(), p.name.clone()))
            .collect(),
        ops: a
            .ops
            .iter()
            .map(|o| (o.key.clone(), (!o.remove).then_some(o.value)))
            .collect(),
    }
}

/// A stored SCRAM credential as nodes receive it.
pub fn scram_to_proto(user: &str, c: &ScramCredential) -> proto::ScramCredentialInfo {
    proto::ScramCredentialInfo {
        user: user.to_string(),
        mechanism: i32::from(c.mechanism.kafka_type()),
        salt: c.salt.clone(),
        iterations: i32::try_from(c.iterations).unwrap_or(i32::MAX),
        stored_key: c.stored_key.clone(),
        server_key: c.server_key.clone(),
    }
}

/// A SCRAM credential from the wire; `None` for an unknown mechanism.
pub fn scram_from_proto(c: &proto::ScramCredentialInfo) -> Option<ScramCredential> {
    let mechanism = ScramMechanism::from_kafka_type(i8::try_from(c.mechanism).ok()?)?;
    Some(ScramCredential {
        mechanism,
        salt: c.salt.clone(),
        iterations: u32::try_from(c.iterations).ok()?,
        stored_key: c.stored_key.clone(),
        server_key: c.server_key.clone(),
    })
}

/// An ACL binding as nodes receive it.
pub fn acl_to_proto(b: &AclBinding) -> proto::AclInfo {
    proto::AclInfo {
        resource_type: i32::from(b.resource_type.code()),
        resource_name: b.resource_name.clone(),
        pattern_type: i32::from(b.pattern_type.code()),
        principal: b.principal.clone(),
        host: b.host.clone(),
        operation: i32::from(b.operation.code()),
        permission: i32::from(b.permission.code()),
    }
}

/// An ACL binding from the wire, validated as CreateAcls validates it.
pub fn acl_from_proto(a: &proto::AclInfo) -> std::result::Result<AclBinding, String> {
    let code = |v: i32| i8::try_from(v).unwrap_or(0);
    AclBinding::from_wire(
        code(a.resource_type),
        &a.resource_name,
        code(a.pattern_type),
        &a.principal,
        &a.host,
        code(a.operation),
        code(a.permission),
    )
    .map_err(|e| e.to_string())
}

/// An ACL filter from the wire.
pub fn acl_filter_from_proto(f: &proto::AclFilterInfo) -> std::result::Result<AclFilter, String> {
    let code = |v: i32| i8::try_from(v).unwrap_or(0);
    AclFilter::from_wire(
        code(f.resource_type),
        f.resource_name.as_deref(),
        code(f.pattern_type),
        f.principal.as_deref(),
        f.host.as_deref(),
        code(f.operation),
        code(f.permission),
    )
    .map_err(|e| e.to_string())
}

/// One partition as nodes see it.
fn partition_to_proto(index: usize, p: &PartitionRecord) -> proto::PartitionInfo {
    proto::PartitionInfo {
        partition: i32::try_from(index).unwrap_or(i32::MAX),
        replicas: p.replicas.clone(),
        leader: p.leader,
        leader_epoch: p.leader_epoch,
        isr: p.isr.clone(),
        partition_epoch: p.partition_epoch,
    }
}

/// One topic as nodes see it.
fn topic_to_proto(name: &str, t: &TopicRecord) -> proto::TopicInfo {
    proto::TopicInfo {
        name: name.to_string(),
        topic_id: t.topic_id.as_bytes().to_vec(),
        configs: t
            .configs
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        partitions: t
            .partitions
            .iter()
            .enumerate()
            .map(|(i, p)| partition_to_proto(i, p))
            .collect(),
        internal: t.internal,
        partial: false,
    }
}

// ---- domain errors -> Kafka error codes and gRPC statuses ----

/// The Kafka error code a refused request answers with (the explicit mapping of the crate's
/// errors at the service boundary).
pub fn kafka_code(e: &Error) -> i32 {
    match e {
        Error::StaleBrokerEpoch { .. } => codes::STALE_BROKER_EPOCH,
        Error::UnknownTopicOrPartition { .. } => codes::UNKNOWN_TOPIC_OR_PARTITION,
        Error::NotLeader { .. } => codes::NOT_LEADER_OR_FOLLOWER,
        Error::FencedLeaderEpoch { .. } => codes::FENCED_LEADER_EPOCH,
        Error::InvalidUpdateVersion { .. } => codes::INVALID_UPDATE_VERSION,
        Error::IneligibleReplica { .. } => codes::INELIGIBLE_REPLICA,
        Error::InvalidTopicName { .. } => codes::INVALID_TOPIC_EXCEPTION,
        Error::TopicAlreadyExists { .. } => codes::TOPIC_ALREADY_EXISTS,
        Error::InvalidPartitions { .. } => codes::INVALID_PARTITIONS,
        Error::InvalidReplicationFactor { .. } => codes::INVALID_REPLICATION_FACTOR,
        Error::InvalidReplicaAssignment { .. } => codes::INVALID_REPLICA_ASSIGNMENT,
        Error::InvalidRequest { .. } => codes::INVALID_REQUEST,
        Error::StoreConflict { .. } => codes::NOT_CONTROLLER,
        Error::ProducerIdsExhausted
        | Error::UnknownStateFormat { .. }
        | Error::CorruptState { .. }
        | Error::BrokenLog { .. }
        | Error::EncodeState(_)
        | Error::StoreIo { .. }
        | Error::Transport(_) => codes::UNKNOWN_SERVER_ERROR,
        // ---- admin APIs: elections and reassignments ----
        Error::ElectionNotNeeded { .. } => codes::ELECTION_NOT_NEEDED,
        Error::PreferredLeaderNotAvailable { .. } => codes::PREFERRED_LEADER_NOT_AVAILABLE,
        Error::EligibleLeadersNotAvailable { .. } => codes::ELIGIBLE_LEADERS_NOT_AVAILABLE,
        Error::NoReassignmentInProgress { .. } => codes::NO_REASSIGNMENT_IN_PROGRESS,
        // ---- security metadata ----
        Error::UnacceptableCredential { .. } => codes::UNACCEPTABLE_CREDENTIAL,
        Error::CredentialNotFound { .. } => codes::RESOURCE_NOT_FOUND,
        Error::DuplicateCredential { .. } => codes::DUPLICATE_RESOURCE,
    }
}

/// Failures that are not an answer to the request (the change could not be made durable)
/// become a gRPC status, so a node retries instead of passing a Kafka error to its client.
fn status(e: Error) -> Status {
    match e {
        Error::StoreIo { .. } => Status::unavailable(e.to_string()),
        Error::StoreConflict { .. } => Status::unavailable(e.to_string()),
        other => Status::internal(other.to_string()),
    }
}

/// Splits a core result into a Kafka answer (`Ok`) or a transport failure (`Err`).
fn answer<T>(r: Result<T>) -> Result<Result<T, (i32, String)>, Status> {
    match r {
        Ok(v) => Ok(Ok(v)),
        Err(e @ (Error::StoreIo { .. } | Error::StoreConflict { .. })) => Err(status(e)),
        Err(e) => Ok(Err((kafka_code(&e), e.to_string()))),
    }
}

fn topic_results(outcomes: Vec<TopicOutcome>) -> Vec<proto::TopicResult> {
    outcomes
        .into_iter()
        .map(|o| match o.result {
            Ok(record) => proto::TopicResult {
                topic: Some(topic_to_proto(&o.name, &record)),
                name: o.name,
                error_code: codes::NONE,
                error_message: String::new(),
            },
            Err(e) => proto::TopicResult {
                name: o.name,
                error_code: kafka_code(&e),
                error_message: e.to_string(),
                topic: None,
            },
        })
        .collect()
}

fn to_btree(map: std::collections::HashMap<String, String>) -> BTreeMap<String, String> {
    map.into_iter().collect()
}

// ---- Kafka admin APIs for operations: leader elections and reassignments ----

/// (topic, partition) pairs of a request, in order.
fn flatten(topics: &[proto::TopicPartitions]) -> Vec<(String, i32)> {
    topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|&p| (t.topic.clone(), p)))
        .collect()
}

/// Per-partition Kafka answers; a store failure inside is a transport failure.
fn partition_results(
    outcomes: Vec<core::PartitionOutcome>,
) -> Result<Vec<proto::PartitionResult>, Status> {
    outcomes
        .into_iter()
        .map(|o| {
            let (error_code, error_message) = match answer(o.result)? {
                Ok(()) => (codes::NONE, String::new()),
                Err(refused) => refused,
            };
            Ok(proto::PartitionResult {
                topic: o.topic,
                partition: o.partition,
                error_code,
                error_message,
            })
        })
        .collect()
}

// ---- the RPCs: wire -> domain request, domain API, domain answer -> wire ----

#[tonic::async_trait]
impl Controller for ControllerService {
    async fn register(
        &self,
        request: Request<proto::RegisterRequest>,
    ) -> Result<Response<proto::RegisterResponse>, Status> {
        let r = request.into_inner();
        let span = tracing::info_span!("register", node = r.node_id, host = %r.host, port = r.port);
        async move {
            let result = self
                .controller
                .register(NodeRegistration {
                    node_id: r.node_id,
                    host: r.host,
                    port: r.port,
                    rack: r.rack,
                    incarnation_id: r.incarnation_id,
                    listeners: r
                        .listeners
                        .into_iter()
                        .map(|e| (e.name, (e.host, e.port)))
                        .collect(),
                })
                .await;
            let mut response = proto::RegisterResponse {
                heartbeat_interval_ms: i64::try_from(self.controller.heartbeat_interval_ms())
                    .unwrap_or(i64::MAX),
                session_timeout_ms: i64::try_from(self.controller.session_timeout_ms())
                    .unwrap_or(i64::MAX),
                ..Default::default()
            };
            match answer(result)? {
                Ok(registered) => {
                    response.broker_epoch = registered.broker_epoch;
                    response.cluster_id = self.controller.image().cluster_id.clone();
                }
                Err((code, message)) => {
                    response.error_code = code;
                    response.error_message = message;
                    response.broker_epoch = -1;
                }
            }
            Ok(Response::new(response))
        }
        .instrument(span)
        .await
    }

    async fn heartbeat(
        &self,
        request: Request<proto::HeartbeatRequest>,
    ) -> Result<Response<proto::HeartbeatResponse>, Status> {
        let r = request.into_inner();
        let span = tracing::debug_span!("heartbeat", node = r.node_id, epoch = r.broker_epoch);
        async move {
            let sizes = r
                .partition_sizes
                .into_iter()
                .map(|p| PartitionSize {
                    topic: p.topic,
                    partition: p.partition,
                    local_bytes: p.local_bytes,
                    remote_bytes: p.remote_bytes,
                })
                .collect();
            let result = self
                .controller
                .heartbeat(r.node_id, r.broker_epoch, sizes)
                .await;
            let response = match answer(result)? {
                Ok(version) => proto::HeartbeatResponse {
                    metadata_version: version,
                    ..Default::default()
                },
                Err((code, message)) => {
                    tracing::info!(code, %message, "heartbeat refused");
                    proto::HeartbeatResponse {
                        error_code: code,
                        error_message: message,
                        metadata_version: self.controller.metadata_version(),
                    }
                }
            };
            Ok(Response::new(response))
        }
        .instrument(span)
        .await
    }

    type WatchMetadataStream = ReceiverStream<Result<proto::ClusterMetadata, Status>>;

    /// Any caller may watch: the image holds nothing secret, and a fenced node learns from it
    /// that it lost its leaderships.
    async fn watch_metadata(
        &self,
        request: Request<proto::WatchMetadataRequest>,
    ) -> Result<Response<Self::WatchMetadataStream>, Status> {
        let r = request.into_inner();
        let span = tracing::info_span!("watch_metadata", node = r.node_id);
        let mut images = self.controller.subscribe();
        let mut stopping = self.stopping.subscribe();
        // A node's own stream is part of its liveness: opening it counts as a heartbeat and
        // its end (the connection closed: the process died or is leaving) starts the grace.
        let (node, epoch, incremental) = (r.node_id, r.broker_epoch, r.incremental);
        let known = (r.known_version > 0).then(|| (r.known_version, r.known_cluster_id.clone()));
        let watcher = self.controller.clone();
        if let Err(e) = watcher.watch_opened(node, epoch).await {
            return Err(status(e));
        }
        // One slot: a slow watcher holds back only itself, and after it catches up it is sent
        // the newest image, skipping the ones in between.
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(
            async move {
                tracing::debug!(incremental, "watch started");
                // The image the node was last sent: the base of the next increment. A node
                // that held an image before this watch starts from it when it is still here.
                let known_version = known.as_ref().map(|(v, _)| *v);
                let mut sent: Option<Arc<Image>> =
                    known
                        .filter(|_| incremental)
                        .and_then(|(version, cluster)| {
                            watcher
                                .image_at(version)
                                .filter(|i| i.cluster_id == cluster)
                        });
                tracing::debug!(
                    known = ?known_version,
                    catching_up = sent.is_some(),
                    "watch base"
                );
                loop {
                    let image = images.borrow_and_update().clone();
                    let message = match &sent {
                        Some(prev) if incremental => image_delta_to_proto(prev, &image),
                        _ => image_to_proto(&image),
                    };
                    tokio::select! {
                        ok = tx.send(Ok(message)) => if ok.is_err() { break },
                        _ = stopping.wait_for(|s| *s) => break,
                    }
                    sent = Some(image);
                    tokio::select! {
                        changed = images.changed() => if changed.is_err() { break },
                        _ = stopping.wait_for(|s| *s) => break,
                        _ = tx.closed() => break,
                    }
                }
                tracing::debug!("watch ended");
                if !*stopping.borrow() {
                    let _ = watcher.watch_closed(node, epoch).await;
                }
            }
            .instrument(span),
        );
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn alter_partition(
        &self,
        request: Request<proto::AlterPartitionRequest>,
    ) -> Result<Response<proto::AlterPartitionResponse>, Status> {
        let r = request.into_inner();
        let span = tracing::info_span!(
            "alter_partition",
            node = r.node_id,
            topic = %r.topic,
            partition = r.partition,
        );
        async move {
            let index = usize::try_from(r.partition).unwrap_or(0);
            let outcome = self
                .controller
                .alter_partition(IsrProposal {
                    node_id: r.node_id,
                    broker_epoch: r.broker_epoch,
                    topic: r.topic,
                    partition: r.partition,
                    leader_epoch: r.leader_epoch,
                    partition_epoch: r.partition_epoch,
                    new_isr: r.new_isr,
                })
                .await
                .map_err(status)?;
            let response = match answer(outcome.committed)? {
                Ok(p) => proto::AlterPartitionResponse {
                    partition: Some(partition_to_proto(index, &p)),
                    ..Default::default()
                },
                Err((code, message)) => {
                    tracing::info!(code, %message, "AlterPartition refused");
                    proto::AlterPartitionResponse {
                        error_code: code,
                        error_message: message,
                        partition: outcome.current.map(|p| partition_to_proto(index, &p)),
                    }
                }
            };
            Ok(Response::new(response))
        }
        .instrument(span)
        .await
    }

    async fn create_topics(
        &self,
        request: Request<proto::CreateTopicsRequest>,
    ) -> Result<Response<proto::CreateTopicsResponse>, Status> {
        let r = request.into_inner();
        let span = tracing::info_span!(
            "create_topics",
            count = r.topics.len(),
            validate_only = r.validate_only
        );
        async move {
            let topics: Vec<core::NewTopic> = r
                .topics
                .into_iter()
                .map(|t| {
                    Ok(core::NewTopic {
                        name: t.name.clone(),
                        partitions: t.partitions,
                        replication_factor: t.replication_factor,
                        configs: to_btree(t.configs),
                        assignments: t.assignments.into_iter().map(|a| a.replicas).collect(),
                        topic_id: match t.topic_id.as_str() {
                            "" => None,
                            id => Some(uuid::Uuid::parse_str(id).map_err(|e| {
                                Status::invalid_argument(format!(
                                    "topic {}: bad topic id {id:?}: {e}",
                                    t.name
                                ))
                            })?),
                        },
                        leader_epochs: t.leader_epochs,
                    })
                })
                .collect::<Result<_, Status>>()?;
            let done = self
                .controller
                .create_topics(topics, r.validate_only)
                .await
                .map_err(status)?;
            Ok(Response::new(proto::CreateTopicsResponse {
                results: topic_results(done.value),
                metadata_version: done.metadata_version,
            }))
        }
        .instrument(span)
        .await
    }

    async fn delete_topics(
        &self,
        request: Request<proto::DeleteTopicsRequest>,
    ) -> Result<Response<proto::DeleteTopicsResponse>, Status> {
        let r = request.into_inner();
        let span = tracing::info_span!("delete_topics", count = r.names.len());
        async move {
            let done = self
                .controller
                .delete_topics(r.names)
                .await
                .map_err(status)?;
            Ok(Response::new(proto::DeleteTopicsResponse {
                results: topic_results(done.value),
                metadata_version: done.metadata_version,
            }))
        }
        .instrument(span)
        .await
    }

    async fn create_partitions(
        &self,
        request: Request<proto::CreatePartitionsRequest>,
    ) -> Result<Response<proto::CreatePartitionsResponse>, Status> {
        let r = request.into_inner();
        let span = tracing::info_span!(
            "create_partitions",
            count = r.topics.len(),
            validate_only = r.validate_only
        );
        async move {
            let requests: Vec<(String, i32)> =
                r.topics.into_iter().map(|t| (t.topic, t.count)).collect();
            let done = self
                .controller
                .create_partitions(requests, r.validate_only)
                .await
                .map_err(status)?;
            Ok(Response::new(proto::CreatePartitionsResponse {
                results: topic_results(done.value),
                metadata_version: done.metadata_version,
            }))
        }
        .instrument(span)
        .await
    }

    async fn alter_topic_configs(
        &self,
        request: Request<proto::AlterTopicConfigsRequest>,
    ) -> Result<Response<proto::AlterTopicConfigsResponse>, Status> {
        let r = request.into_inner();
        let span = tracing::info_span!("alter_topic_configs", topic = %r.topic, validate_only = r.validate_only);
        async move {
            let result = self
                .controller
                .alter_topic_configs(&r.topic, to_btree(r.configs), r.validate_only)
                .await;
            let response = match answer(result)? {
                Ok(version) => proto::AlterTopicConfigsResponse {
                    metadata_version: version,
                    ..Default::default()
                },
                Err((code, message)) => proto::AlterTopicConfigsResponse {
                    error_code: code,
                    error_message: message,
                    metadata_version: self.controller.metadata_version(),
                },
            };
            Ok(Response::new(response))
        }
        .instrument(span)
        .await
    }

    async fn alter_scram_credentials(
        &self,
        request: Request<proto::AlterScramCredentialsRequest>,
    ) -> Result<Response<proto::AlterScramCredentialsResponse>, Status> {
        let r = request.into_inner();
        let span = tracing::info_span!(
            "alter_scram_credentials",
            upsertions = r.upsertions.len(),
            deletions = r.deletions.len()
        );
        async move {
            // Entries the wire cannot express as a credential are answered per user here.
            let mut early = Vec::new();
            let mut upsertions = Vec::new();
            for c in &r.upsertions {
                match scram_from_proto(c) {
                    Some(cred) => upsertions.push((c.user.clone(), cred)),
                    None => early.push(proto::ScramResult {
                        user: c.user.clone(),
                        error_code: codes::UNSUPPORTED_SASL_MECHANISM,
                        error_message: format!("unknown SCRAM mechanism {}", c.mechanism),
                    }),
                }
            }
            let mut deletions = Vec::new();
            for d in &r.deletions {
                match i8::try_from(d.mechanism)
                    .ok()
                    .and_then(ScramMechanism::from_kafka_type)
                {
                    Some(m) => deletions.push((d.user.clone(), m)),
                    None => early.push(proto::ScramResult {
                        user: d.user.clone(),
                        error_code: codes::UNSUPPORTED_SASL_MECHANISM,
                        error_message: format!("unknown SCRAM mechanism {}", d.mechanism),
                    }),
                }
            }
            upsertions.retain(|(u, _)| !early.iter().any(|e| e.user == *u));
            deletions.retain(|(u, _)| !early.iter().any(|e| e.user == *u));
            let done = self
                .controller
                .alter_scram_credentials(upsertions, deletions)
                .await
                .map_err(status)?;
            let mut results = early;
            results.extend(done.value.into_iter().map(|o| match o.result {
                Ok(()) => proto::ScramResult {
                    user: o.user,
                    ..Default::default()
                },
                Err(e) => proto::ScramResult {
                    user: o.user,
                    error_code: kafka_code(&e),
                    error_message: e.to_string(),
                },
            }));
            Ok(Response::new(proto::AlterScramCredentialsResponse {
                results,
                metadata_version: done.metadata_version,
            }))
        }
        .instrument(span)
        .await
    }

    async fn create_acls(
        &self,
        request: Request<proto::CreateAclsRequest>,
    ) -> Result<Response<proto::CreateAclsResponse>, Status> {
        let r = request.into_inner();
        let span = tracing::info_span!("create_acls", count = r.acls.len());
        async move {
            let parsed: Vec<std::result::Result<AclBinding, String>> =
                r.acls.iter().map(acl_from_proto).collect();
            let valid: Vec<AclBinding> = parsed.iter().filter_map(|p| p.clone().ok()).collect();
            let done = self.controller.create_acls(valid).await.map_err(status)?;
            let mut applied = done.value.into_iter();
            let results = parsed
                .into_iter()
                .map(|p| match p {
                    Ok(_) => match applied.next() {
                        Some(Ok(())) => proto::AclResult::default(),
                        Some(Err(e)) => proto::AclResult {
                            error_code: kafka_code(&e),
                            error_message: e.to_string(),
                        },
                        None => proto::AclResult {
                            error_code: codes::UNKNOWN_SERVER_ERROR,
                            error_message: "missing outcome".into(),
                        },
                    },
                    Err(reason) => proto::AclResult {
                        error_code: codes::INVALID_REQUEST,
                        error_message: reason,
                    },
                })
                .collect();
            Ok(Response::new(proto::CreateAclsResponse {
                results,
                metadata_version: done.metadata_version,
            }))
        }
        .instrument(span)
        .await
    }

    async fn alter_client_quotas(
        &self,
        request: Request<proto::AlterClientQuotasRequest>,
    ) -> Result<Response<proto::AlterClientQuotasResponse>, Status> {
        let r = request.into_inner();
        let span = tracing::info_span!(
            "alter_client_quotas",
            entries = r.entries.len(),
            validate_only = r.validate_only
        );
        async move {
            let entries = r.entries.iter().map(quota_alteration_from_proto).collect();
            let done = self
                .controller
                .alter_client_quotas(entries, r.validate_only)
                .await
                .map_err(status)?;
            let results = done
                .value
                .into_iter()
                .map(|o| match o {
                    Ok(()) => proto::QuotaResult::default(),
                    Err(e) => proto::QuotaResult {
                        error_code: i32::from(e.code),
                        error_message: e.message,
                    },
                })
                .collect();
            Ok(Response::new(proto::AlterClientQuotasResponse {
                results,
                metadata_version: done.metadata_version,
            }))
        }
        .instrument(span)
        .await
    }

    async fn delete_acls(
        &self,
        request: Request<proto::DeleteAclsRequest>,
    ) -> Result<Response<proto::DeleteAclsResponse>, Status> {
        let r = request.into_inner();
        let span = tracing::info_span!("delete_acls", filters = r.filters.len());
        async move {
            let parsed: Vec<std::result::Result<AclFilter, String>> =
                r.filters.iter().map(acl_filter_from_proto).collect();
            let valid: Vec<AclFilter> = parsed.iter().filter_map(|p| p.clone().ok()).collect();
            let done = self.controller.delete_acls(valid).await.map_err(status)?;
            let mut applied = done.value.into_iter();
            let results = parsed
                .into_iter()
                .map(|p| match p {
                    Ok(_) => proto::DeletedAcls {
                        acls: applied
                            .next()
                            .unwrap_or_default()
                            .iter()
                            .map(acl_to_proto)
                            .collect(),
                        ..Default::default()
                    },
                    Err(reason) => proto::DeletedAcls {
                        error_code: codes::INVALID_REQUEST,
                        error_message: reason,
                        acls: Vec::new(),
                    },
                })
                .collect();
            Ok(Response::new(proto::DeleteAclsResponse {
                results,
                metadata_version: done.metadata_version,
            }))
        }
        .instrument(span)
        .await
    }

    async fn allocate_producer_ids(
        &self,
        request: Request<proto::AllocateProducerIdsRequest>,
    ) -> Result<Response<proto::AllocateProducerIdsResponse>, Status> {
        let r = request.into_inner();
        let span = tracing::info_span!("allocate_producer_ids", node = r.node_id);
        async move {
            let result = self
                .controller
                .allocate_producer_ids(r.node_id, r.broker_epoch, r.at_least)
                .await;
            let response = match answer(result)? {
                Ok((start, len)) => {
                    tracing::debug!(start, len, "producer ids allocated");
                    proto::AllocateProducerIdsResponse {
                        producer_id_start: start,
                        producer_id_len: len,
                        ..Default::default()
                    }
                }
                Err((code, message)) => proto::AllocateProducerIdsResponse {
                    error_code: code,
                    error_message: message,
                    producer_id_start: -1,
                    producer_id_len: 0,
                },
            };
            Ok(Response::new(response))
        }
        .instrument(span)
        .await
    }

    async fn controlled_shutdown(
        &self,
        request: Request<proto::ControlledShutdownRequest>,
    ) -> Result<Response<proto::ControlledShutdownResponse>, Status> {
        let r = request.into_inner();
        let span = tracing::info_span!("controlled_shutdown", node = r.node_id);
        async move {
            let result = self
                .controller
                .controlled_shutdown(r.node_id, r.broker_epoch)
                .await;
            let response = match answer(result)? {
                Ok(done) => {
                    let progress = done.value;
                    if !progress.still_leading.is_empty() {
                        tracing::info!(
                            count = progress.still_leading.len(),
                            "node is the last in-sync replica of some partitions"
                        );
                    }
                    proto::ControlledShutdownResponse {
                        still_leading: progress
                            .still_leading
                            .into_iter()
                            .map(|(topic, partition)| proto::TopicPartition { topic, partition })
                            .collect(),
                        metadata_version: done.metadata_version,
                        ..Default::default()
                    }
                }
                Err((code, message)) => proto::ControlledShutdownResponse {
                    error_code: code,
                    error_message: message,
                    metadata_version: self.controller.metadata_version(),
                    ..Default::default()
                },
            };
            Ok(Response::new(response))
        }
        .instrument(span)
        .await
    }

    // ---- Kafka admin APIs for operations: leader elections and reassignments ----

    async fn elect_leaders(
        &self,
        request: Request<proto::ElectLeadersRequest>,
    ) -> Result<Response<proto::ElectLeadersResponse>, Status> {
        let r = request.into_inner();
        let span = tracing::info_span!(
            "elect_leaders",
            election_type = r.election_type,
            all = r.all_partitions
        );
        async move {
            let Some(kind) = core::ElectionType::from_kafka(r.election_type) else {
                return Err(Status::invalid_argument(format!(
                    "unknown election type {}",
                    r.election_type
                )));
            };
            let named = (!r.all_partitions).then(|| flatten(&r.topic_partitions));
            let done = self
                .controller
                .elect_leaders(kind, named)
                .await
                .map_err(status)?;
            Ok(Response::new(proto::ElectLeadersResponse {
                results: partition_results(done.value)?,
                metadata_version: done.metadata_version,
            }))
        }
        .instrument(span)
        .await
    }

    async fn alter_partition_reassignments(
        &self,
        request: Request<proto::AlterPartitionReassignmentsRequest>,
    ) -> Result<Response<proto::AlterPartitionReassignmentsResponse>, Status> {
        let r = request.into_inner();
        let span = tracing::info_span!("alter_partition_reassignments", count = r.partitions.len());
        async move {
            let requests: Vec<core::ReassignmentRequest> = r
                .partitions
                .into_iter()
                .map(|p| core::ReassignmentRequest {
                    topic: p.topic,
                    partition: p.partition,
                    replicas: (!p.cancel).then_some(p.replicas),
                })
                .collect();
            for q in requests.iter().filter(|q| q.replicas.is_none()) {
                tracing::info!(topic = %q.topic, partition = q.partition, "reassignment cancel requested");
            }
            let done = self
                .controller
                .alter_reassignments(requests, r.keep_replication_factor)
                .await
                .map_err(status)?;
            Ok(Response::new(proto::AlterPartitionReassignmentsResponse {
                results: partition_results(done.value)?,
                metadata_version: done.metadata_version,
            }))
        }
        .instrument(span)
        .await
    }

    async fn list_partition_reassignments(
        &self,
        request: Request<proto::ListPartitionReassignmentsRequest>,
    ) -> Result<Response<proto::ListPartitionReassignmentsResponse>, Status> {
        let r = request.into_inner();
        let named = (!r.all_partitions).then(|| flatten(&r.topic_partitions));
        let reassignments = self
            .controller
            .list_reassignments(named.as_deref())
            .await
            .into_iter()
            .map(|o| proto::OngoingReassignment {
                topic: o.topic,
                partition: o.partition,
                replicas: o.replicas,
                adding_replicas: o.adding,
                removing_replicas: o.removing,
            })
            .collect();
        Ok(Response::new(proto::ListPartitionReassignmentsResponse {
            reassignments,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::State;
    use crate::store::BoxFuture;
    use std::sync::atomic::{AtomicU8, Ordering};

    /// A store that keeps the last saved state in memory and fails on demand.
    #[derive(Default)]
    struct FlakyStore {
        saved: std::sync::Mutex<Option<State>>,
        /// 0: succeed, 1: fail with I/O, 2: fail with a conflict.
        mode: AtomicU8,
    }

    impl MetadataStore for FlakyStore {
        fn load(&self) -> BoxFuture<'_, Result<Option<State>>> {
            let state = self.saved.lock().unwrap().clone();
            Box::pin(async move { Ok(state) })
        }

        fn commit<'a>(
            &'a self,
            delta: &'a crate::core::Delta,
            state: &'a State,
        ) -> BoxFuture<'a, Result<()>> {
            Box::pin(async move {
                self.fail()?;
                // Replays the delta, so every change the service commits in these tests is
                // also checked to turn the previous state into the new one.
                let mut saved = self.saved.lock().unwrap();
                let mut replayed = saved.clone().expect("a state was stored first");
                delta.apply(&mut replayed, "flaky")?;
                assert_eq!(&replayed, state);
                *saved = Some(replayed);
                Ok(())
            })
        }

        fn replace<'a>(&'a self, state: &'a State) -> BoxFuture<'a, Result<()>> {
            Box::pin(async move {
                self.fail()?;
                *self.saved.lock().unwrap() = Some(state.clone());
                Ok(())
            })
        }
    }

    impl FlakyStore {
        fn fail(&self) -> Result<()> {
            match self.mode.load(Ordering::SeqCst) {
                0 => Ok(()),
                1 => Err(Error::io("flaky", std::io::Error::other("disk full"))),
                _ => Err(Error::StoreConflict {
                    reason: "another controller".into(),
                }),
            }
        }
    }

    fn create_request(name: &str) -> Request<proto::CreateTopicsRequest> {
        Request::new(proto::CreateTopicsRequest {
            topics: vec![proto::CreatableTopic {
                name: name.into(),
                partitions: 1,
                replication_factor: 1,
                ..Default::default()
            }],
            validate_only: false,
        })
    }

    /// A service over `store` with node 1 registered.
    async fn with_one_node(store: Arc<FlakyStore>) -> ControllerService {
        let service = ControllerService::start(ServiceConfig::default(), store)
            .await
            .unwrap();
        let registered = service
            .register(Request::new(proto::RegisterRequest {
                node_id: 1,
                host: "h".into(),
                port: 1,
                rack: String::new(),
                incarnation_id: "a".into(),
                listeners: Vec::new(),
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(registered.error_code, 0);
        service
    }

    #[tokio::test]
    async fn a_failed_save_rolls_back_and_publishes_nothing() {
        let store = Arc::new(FlakyStore::default());
        let service = with_one_node(store.clone()).await;
        let images = service.controller().subscribe();
        let version = images.borrow().version;

        store.mode.store(1, Ordering::SeqCst);
        let status = service
            .create_topics(create_request("t"))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(
            service
                .controller()
                .snapshot()
                .await
                .state()
                .topics
                .is_empty(),
            "rolled back"
        );
        assert_eq!(images.borrow().version, version, "nothing published");
        let saved = store.saved.lock().unwrap().clone().unwrap();
        assert_eq!(saved.version, version);

        store.mode.store(0, Ordering::SeqCst);
        let ok = service
            .create_topics(create_request("t"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(ok.results[0].error_code, 0);
        assert_eq!(ok.metadata_version, version + 1);
        assert_eq!(images.borrow().version, version + 1);
        assert_eq!(
            store.saved.lock().unwrap().as_ref().unwrap().version,
            version + 1
        );
    }

    #[tokio::test]
    async fn a_write_conflict_deposes_the_controller() {
        let store = Arc::new(FlakyStore::default());
        let service = with_one_node(store.clone()).await;
        let (listener, _) = ControllerService::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let serving = tokio::spawn(service.clone().serve(listener, std::future::pending()));
        store.mode.store(2, Ordering::SeqCst);
        let status = service
            .create_topics(create_request("t"))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable);
        let served = tokio::time::timeout(Duration::from_secs(5), serving)
            .await
            .expect("serve stops once deposed")
            .unwrap();
        assert!(matches!(served, Err(Error::StoreConflict { .. })));
        // Deposed for good: later changes are refused even if the store would take them.
        store.mode.store(0, Ordering::SeqCst);
        let status = service
            .create_topics(create_request("u"))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable);
    }

    #[test]
    fn every_refusal_has_a_kafka_code() {
        let e = Error::StaleBrokerEpoch {
            node: 1,
            sent: 2,
            current: Some(3),
        };
        assert_eq!(kafka_code(&e), 77);
        let e = Error::InvalidUpdateVersion {
            topic: "t".into(),
            partition: 0,
            sent: 1,
            current: 2,
        };
        assert_eq!(kafka_code(&e), 96);
        assert!(matches!(
            answer::<()>(Err(Error::io("x", std::io::Error::other("disk")))),
            Err(s) if s.code() == tonic::Code::Unavailable
        ));
    }
}
