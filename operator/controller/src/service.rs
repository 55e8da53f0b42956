//! The gRPC service nodes talk to: the pure [`Cluster`] behind a mutex, a [`MetadataStore`]
//! that every change goes through before anyone hears of it, and a watch channel publishing
//! the metadata image.
//!
//! Order of a change: apply to the core, save through the store, then answer and publish. A
//! failed save rolls the core back, so no node or client ever sees a change that would be lost
//! on a crash.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Mutex};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::codes;
use crate::core::{self, Cluster, Event, TopicOutcome};
use crate::error::{Error, Result};
use crate::proto;
use crate::proto::controller_server::{Controller, ControllerServer};
use crate::store::MetadataStore;

/// How often nodes' deadlines are checked.
pub const TICK_INTERVAL: Duration = Duration::from_millis(100);

/// Settings of a controller service.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    /// The core's rules (session timeout, topic defaults).
    pub core: core::Config,
    /// How often nodes should heartbeat; told to them in RegisterResponse.
    pub heartbeat_interval_ms: u64,
    /// How often leadership imbalance is checked (Kafka's
    /// `leader.imbalance.check.interval.seconds`); `None` turns the automatic rebalance off
    /// (Kafka's `auto.leader.rebalance.enable=false`).
    pub leader_balance_interval: Option<Duration>,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            core: core::Config::default(),
            heartbeat_interval_ms: 500,
            leader_balance_interval: Some(Duration::from_secs(5)),
        }
    }
}

/// The controller service: cheap to clone, every clone is the same controller.
#[derive(Clone)]
pub struct ControllerService {
    shared: Arc<Shared>,
}

struct Shared {
    inner: Mutex<Inner>,
    images: watch::Sender<Arc<proto::ClusterMetadata>>,
    /// Set to `true` when serving ends, so open WatchMetadata streams finish and a graceful
    /// shutdown does not wait for them forever.
    stopping: watch::Sender<bool>,
    /// Set when the store reports that another writer took over; the host must stop.
    deposed: watch::Sender<Option<String>>,
    started: Instant,
    heartbeat_interval_ms: u64,
    session_timeout_ms: u64,
    leader_balance_interval: Option<Duration>,
    /// Partition sizes each node last reported (runtime only: they come back with the next
    /// heartbeat after a restart).
    sizes: std::sync::Mutex<std::collections::HashMap<i32, Vec<proto::PartitionSize>>>,
}

struct Inner {
    cluster: Cluster,
    store: Arc<dyn MetadataStore>,
}

impl ControllerService {
    /// Loads the state from `store` (or creates and saves a new cluster) and gives every known
    /// node one session timeout to reconnect.
    pub async fn start(config: ServiceConfig, store: Arc<dyn MetadataStore>) -> Result<Self> {
        let started = Instant::now();
        let cluster = match store.load().await? {
            Some(state) => {
                tracing::info!(
                    cluster_id = %state.cluster_id,
                    version = state.version,
                    nodes = state.nodes.len(),
                    topics = state.topics.len(),
                    "controller state loaded"
                );
                Cluster::recover(state, config.core.clone(), 0)
            }
            None => {
                let cluster = Cluster::new(new_cluster_id(), config.core.clone());
                // Saved at once so the cluster id is the same after a restart.
                store.save(cluster.state()).await?;
                tracing::info!(cluster_id = %cluster.state().cluster_id, "new cluster created");
                cluster
            }
        };
        let (images, _) = watch::channel(Arc::new(cluster.to_proto()));
        let (stopping, _) = watch::channel(false);
        let (deposed, _) = watch::channel(None);
        Ok(ControllerService {
            shared: Arc::new(Shared {
                inner: Mutex::new(Inner { cluster, store }),
                images,
                stopping,
                deposed,
                started,
                heartbeat_interval_ms: config.heartbeat_interval_ms,
                session_timeout_ms: config.core.session_timeout_ms,
                leader_balance_interval: config.leader_balance_interval,
                sizes: Default::default(),
            }),
        })
    }

    /// Bytes per topic as the nodes last reported them: (local bytes summed over every
    /// replica, remote bytes summed over partitions as their leaders report them).
    pub fn topic_sizes(&self) -> std::collections::HashMap<String, (i64, i64)> {
        let sizes = self.shared.sizes.lock().expect("not poisoned");
        let mut out: std::collections::HashMap<String, (i64, i64)> = Default::default();
        for reports in sizes.values() {
            for p in reports {
                let e = out.entry(p.topic.clone()).or_default();
                e.0 += p.local_bytes;
                e.1 += p.remote_bytes;
            }
        }
        out
    }

    /// The metadata image, current value first; for in-process watchers.
    pub fn subscribe(&self) -> watch::Receiver<Arc<proto::ClusterMetadata>> {
        self.shared.images.subscribe()
    }

    /// A copy of the cluster as it is now (for tests and diagnostics).
    pub async fn snapshot(&self) -> Cluster {
        self.shared.inner.lock().await.cluster.clone()
    }

    /// Makes `nodes` the cluster's node set and starts the partition moves that drain the
    /// others and balance the load ([`Cluster::rebalance`]), at most `max_in_flight` at once.
    pub async fn rebalance(
        &self,
        nodes: Vec<i32>,
        max_in_flight: usize,
    ) -> Result<core::RebalanceOutcome> {
        self.apply(|c, _| c.rebalance(&nodes, max_in_flight)).await
    }

    /// Checks deadlines once; [`ControllerService::serve`] does this every [`TICK_INTERVAL`].
    pub async fn tick(&self) -> Result<Vec<i32>> {
        self.apply(|c, now| c.tick(now)).await
    }

    /// Serves gRPC on `listener` until `shutdown` completes, checking node deadlines every
    /// [`TICK_INTERVAL`]. Returns an error if the store reported that another controller took
    /// over, so the host exits instead of acting on stale state.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        let ticker = tokio::spawn(self.clone().tick_forever());
        let shared = self.shared.clone();
        let mut deposed = shared.deposed.subscribe();
        let signal = async move {
            tokio::select! {
                _ = shutdown => {}
                _ = deposed.wait_for(|d| d.is_some()) => {}
            }
            shared.stopping.send_replace(true);
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
        match self.shared.deposed.borrow().clone() {
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

    /// Moves leaderships back to preferred replicas where nodes are imbalanced; the service
    /// does this every `leader_balance_interval`.
    pub async fn balance_leaders(&self) -> Result<usize> {
        self.apply(|c, _| c.balance_leaders()).await
    }

    async fn tick_forever(self) {
        let mut interval = tokio::time::interval(TICK_INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        let mut next_balance = self
            .shared
            .leader_balance_interval
            .map(|every| Instant::now() + every);
        loop {
            interval.tick().await;
            if let (Some(at), Some(every)) = (next_balance, self.shared.leader_balance_interval) {
                if Instant::now() >= at {
                    next_balance = Some(Instant::now() + every);
                    if let Err(e) = self.balance_leaders().await {
                        tracing::warn!(error = %e, "could not commit a leader rebalance");
                    }
                }
            }
            match self.tick().await {
                Ok(_) => failing = false,
                // Logged once per streak: the tick retries every interval.
                Err(e) if !failing => {
                    failing = true;
                    tracing::error!(error = %e, "could not commit node deaths; retrying");
                }
                Err(_) => {}
            }
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.shared.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Runs `f` on the core; if the metadata changed, saves it and then publishes the new
    /// image. A failed save restores the core as it was before `f`.
    async fn apply<T>(&self, f: impl FnOnce(&mut Cluster, u64) -> T) -> Result<T> {
        let mut inner = self.shared.inner.lock().await;
        if let Some(reason) = self.shared.deposed.borrow().clone() {
            return Err(Error::StoreConflict { reason });
        }
        // Cheap: the state is behind an Arc and is deep-copied only if `f` changes it.
        let before = inner.cluster.clone();
        let out = f(&mut inner.cluster, self.now_ms());
        let events = inner.cluster.take_events();
        if inner.cluster.version() == before.version() {
            return Ok(out);
        }
        let store = inner.store.clone();
        if let Err(e) = store.save(inner.cluster.state()).await {
            inner.cluster = before;
            if let Error::StoreConflict { reason } = &e {
                tracing::error!(%reason, "metadata store taken over by another writer; stopping");
                self.shared.deposed.send_replace(Some(reason.clone()));
            }
            return Err(e);
        }
        let version = inner.cluster.version();
        for event in &events {
            log_event(event, version);
        }
        self.shared
            .images
            .send_replace(Arc::new(inner.cluster.to_proto()));
        Ok(out)
    }
}

/// A new Kafka-style cluster id: a random UUID in URL-safe base64 without padding (22 chars).
pub fn new_cluster_id() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let value = uuid::Uuid::new_v4().as_u128();
    // 128 bits in 6-bit groups from the top: 21 full groups and 2 bits left, padded to 6.
    (0..22)
        .map(|i| {
            let shift = 128i32 - 6 * (i + 1);
            let group = if shift >= 0 {
                (value >> shift) & 0x3f
            } else {
                (value << -shift) & 0x3f
            };
            char::from(ALPHABET[group as usize])
        })
        .collect()
}

fn log_event(event: &Event, version: u64) {
    match event {
        Event::NodeRegistered {
            node,
            broker_epoch,
            restarted,
        } => tracing::info!(node, broker_epoch, restarted, version, "node registered"),
        Event::NodeAlive { node } => tracing::info!(node, version, "node alive"),
        Event::NodeDead { node } => tracing::info!(node, version, "node dead, fenced"),
        Event::NodeShuttingDown { node } => {
            tracing::info!(
                node,
                version,
                "node shutting down: leaderships moved, ISRs left"
            )
        }
        Event::NodeUnregistered { node } => {
            tracing::info!(node, version, "drained node removed from the metadata")
        }
        Event::LeaderChanged {
            topic,
            partition,
            leader,
            leader_epoch,
            unclean,
        } => {
            if *leader == core::NO_LEADER {
                tracing::warn!(%topic, partition, leader_epoch, version, "partition offline: no eligible replica alive");
            } else {
                tracing::info!(%topic, partition, leader, leader_epoch, unclean, version, "leader elected");
            }
        }
        Event::IsrChanged {
            topic,
            partition,
            isr,
            partition_epoch,
        } => tracing::info!(%topic, partition, ?isr, partition_epoch, version, "ISR changed"),
        Event::TopicCreated {
            topic,
            partitions,
            replication_factor,
        } => tracing::info!(%topic, partitions, replication_factor, version, "topic created"),
        Event::TopicDeleted { topic } => tracing::info!(%topic, version, "topic deleted"),
        Event::PartitionsCreated { topic, count } => {
            tracing::info!(%topic, count, version, "partitions created")
        }
        Event::TopicConfigsAltered { topic } => {
            tracing::info!(%topic, version, "topic configs altered")
        }
        Event::ReassignmentStarted {
            topic,
            partition,
            from,
            to,
        } => tracing::info!(%topic, partition, ?from, ?to, version, "reassignment started"),
        Event::ReassignmentCompleted {
            topic,
            partition,
            replicas,
        } => tracing::info!(%topic, partition, ?replicas, version, "reassignment completed"),
    }
}

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
        | Error::EncodeState(_)
        | Error::StoreIo { .. }
        | Error::Transport(_) => codes::UNKNOWN_SERVER_ERROR,
        // ---- admin APIs: elections and reassignments ----
        Error::ElectionNotNeeded { .. } => codes::ELECTION_NOT_NEEDED,
        Error::PreferredLeaderNotAvailable { .. } => codes::PREFERRED_LEADER_NOT_AVAILABLE,
        Error::EligibleLeadersNotAvailable { .. } => codes::ELIGIBLE_LEADERS_NOT_AVAILABLE,
        Error::NoReassignmentInProgress { .. } => codes::NO_REASSIGNMENT_IN_PROGRESS,
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
                topic: Some(core::topic_to_proto(&o.name, &record)),
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
                .apply(|c, now| {
                    c.register(r.node_id, &r.host, r.port, &r.rack, &r.incarnation_id, now)
                })
                .await
                .and_then(|r| r);
            let mut response = proto::RegisterResponse {
                heartbeat_interval_ms: i64::try_from(self.shared.heartbeat_interval_ms)
                    .unwrap_or(i64::MAX),
                session_timeout_ms: i64::try_from(self.shared.session_timeout_ms)
                    .unwrap_or(i64::MAX),
                ..Default::default()
            };
            match answer(result)? {
                Ok(registered) => {
                    response.broker_epoch = registered.broker_epoch;
                    response.cluster_id = self.shared.images.borrow().cluster_id.clone();
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
        let mut r = request.into_inner();
        let span = tracing::debug_span!("heartbeat", node = r.node_id, epoch = r.broker_epoch);
        let reported = std::mem::take(&mut r.partition_sizes);
        async move {
            let result = self
                .apply(|c, now| {
                    c.heartbeat(r.node_id, r.broker_epoch, now)
                        .map(|()| c.version())
                })
                .await
                .and_then(|r| r);
            let response = match answer(result)? {
                Ok(version) => {
                    self.shared
                        .sizes
                        .lock()
                        .expect("not poisoned")
                        .insert(r.node_id, reported);
                    proto::HeartbeatResponse {
                        metadata_version: version,
                        ..Default::default()
                    }
                }
                Err((code, message)) => {
                    tracing::info!(code, %message, "heartbeat refused");
                    proto::HeartbeatResponse {
                        error_code: code,
                        error_message: message,
                        metadata_version: self.shared.images.borrow().version,
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
        let mut images = self.shared.images.subscribe();
        let mut stopping = self.shared.stopping.subscribe();
        // A node's own stream is part of its liveness: opening it counts as a heartbeat and
        // its end (the connection closed: the process died or is leaving) starts the grace.
        let (node, epoch) = (r.node_id, r.broker_epoch);
        let watcher = self.clone();
        if let Err(e) = watcher
            .apply(|c, now| c.stream_opened(node, epoch, now))
            .await
        {
            return Err(status(e));
        }
        // One slot: a slow watcher holds back only itself, and after it catches up it is sent
        // the newest image, skipping the ones in between.
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(
            async move {
                tracing::debug!("watch started");
                loop {
                    let image = (**images.borrow_and_update()).clone();
                    tokio::select! {
                        sent = tx.send(Ok(image)) => if sent.is_err() { break },
                        _ = stopping.wait_for(|s| *s) => break,
                    }
                    tokio::select! {
                        changed = images.changed() => if changed.is_err() { break },
                        _ = stopping.wait_for(|s| *s) => break,
                        _ = tx.closed() => break,
                    }
                }
                tracing::debug!("watch ended");
                if !*stopping.borrow() {
                    let _ = watcher
                        .apply(|c, now| c.stream_lost(node, epoch, now))
                        .await;
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
            let result = self
                .apply(|c, _| {
                    let committed = c.alter_partition(
                        r.node_id,
                        r.broker_epoch,
                        &r.topic,
                        r.partition,
                        r.leader_epoch,
                        r.partition_epoch,
                        &r.new_isr,
                    );
                    // On a refusal, the current state lets the leader catch up.
                    let current = c.partition(&r.topic, r.partition).ok().cloned();
                    (committed, current)
                })
                .await;
            let (committed, current) = match result {
                Ok(pair) => pair,
                Err(e) => return Err(status(e)),
            };
            let index = usize::try_from(r.partition).unwrap_or(0);
            let response = match answer(committed)? {
                Ok(p) => proto::AlterPartitionResponse {
                    partition: Some(core::partition_to_proto(index, &p)),
                    ..Default::default()
                },
                Err((code, message)) => {
                    tracing::info!(code, %message, "AlterPartition refused");
                    proto::AlterPartitionResponse {
                        error_code: code,
                        error_message: message,
                        partition: current.map(|p| core::partition_to_proto(index, &p)),
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
                .map(|t| core::NewTopic {
                    name: t.name,
                    partitions: t.partitions,
                    replication_factor: t.replication_factor,
                    configs: to_btree(t.configs),
                    assignments: t.assignments.into_iter().map(|a| a.replicas).collect(),
                })
                .collect();
            let (outcomes, version) = self
                .apply(|c, _| (c.create_topics(&topics, r.validate_only), c.version()))
                .await
                .map_err(status)?;
            Ok(Response::new(proto::CreateTopicsResponse {
                results: topic_results(outcomes),
                metadata_version: version,
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
            let (outcomes, version) = self
                .apply(|c, _| (c.delete_topics(&r.names), c.version()))
                .await
                .map_err(status)?;
            Ok(Response::new(proto::DeleteTopicsResponse {
                results: topic_results(outcomes),
                metadata_version: version,
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
            let (outcomes, version) = self
                .apply(|c, _| (c.create_partitions(&requests, r.validate_only), c.version()))
                .await
                .map_err(status)?;
            Ok(Response::new(proto::CreatePartitionsResponse {
                results: topic_results(outcomes),
                metadata_version: version,
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
            let configs = to_btree(r.configs);
            let result = self
                .apply(|c, _| {
                    c.alter_topic_configs(&r.topic, configs, r.validate_only)
                        .map(|()| c.version())
                })
                .await
                .and_then(|r| r);
            let response = match answer(result)? {
                Ok(version) => proto::AlterTopicConfigsResponse {
                    metadata_version: version,
                    ..Default::default()
                },
                Err((code, message)) => proto::AlterTopicConfigsResponse {
                    error_code: code,
                    error_message: message,
                    metadata_version: self.shared.images.borrow().version,
                },
            };
            Ok(Response::new(response))
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
                .apply(|c, _| c.allocate_producer_ids(r.node_id, r.broker_epoch))
                .await
                .and_then(|r| r);
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
                .apply(|c, now| {
                    c.controlled_shutdown(r.node_id, r.broker_epoch, now)
                        .map(|p| (p, c.version()))
                })
                .await
                .and_then(|r| r);
            let response = match answer(result)? {
                Ok((progress, version)) => {
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
                        metadata_version: version,
                        ..Default::default()
                    }
                }
                Err((code, message)) => proto::ControlledShutdownResponse {
                    error_code: code,
                    error_message: message,
                    metadata_version: self.shared.images.borrow().version,
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
            let (outcomes, version) = self
                .apply(|c, _| (c.elect_leaders(kind, named.as_deref()), c.version()))
                .await
                .map_err(status)?;
            Ok(Response::new(proto::ElectLeadersResponse {
                results: partition_results(outcomes)?,
                metadata_version: version,
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
            let (outcomes, version) = self
                .apply(|c, _| {
                    (
                        c.alter_reassignments(&requests, r.keep_replication_factor),
                        c.version(),
                    )
                })
                .await
                .map_err(status)?;
            Ok(Response::new(proto::AlterPartitionReassignmentsResponse {
                results: partition_results(outcomes)?,
                metadata_version: version,
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
        let cluster = self.snapshot().await;
        let reassignments = cluster
            .list_reassignments(named.as_deref())
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

        fn save<'a>(&'a self, state: &'a State) -> BoxFuture<'a, Result<()>> {
            Box::pin(async move {
                match self.mode.load(Ordering::SeqCst) {
                    0 => {
                        *self.saved.lock().unwrap() = Some(state.clone());
                        Ok(())
                    }
                    1 => Err(Error::io("flaky", std::io::Error::other("disk full"))),
                    _ => Err(Error::StoreConflict {
                        reason: "another controller".into(),
                    }),
                }
            })
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
        let images = service.subscribe();
        let version = images.borrow().version;

        store.mode.store(1, Ordering::SeqCst);
        let status = service
            .create_topics(create_request("t"))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(
            service.snapshot().await.state().topics.is_empty(),
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
    fn cluster_ids_look_like_kafkas() {
        let id = new_cluster_id();
        assert_eq!(id.len(), 22);
        assert!(id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_ne!(id, new_cluster_id());
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
