//! The node's link to the controller: registration and heartbeats, the metadata watch
//! (each image handed to the node's root, which applies it through [`ClusterHost`]), ISR
//! proposals (AlterPartition), and admin requests forwarded from Kafka clients. Protobuf
//! stays here, at the gRPC edge. Calls only `metadata`, `partition` and `coordinator`'s
//! topic name; never the broker.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use parking_lot::Mutex;
use strata_controller::proto::controller_client::ControllerClient;
use strata_controller::proto::{self as pb};
use strata_controller::service::ControllerService;
use tonic::transport::Channel;

use super::image::{topic_meta, WholeImage};
use super::rpc::Rpc;
use crate::error::{Error, Result};
use crate::metadata::{ClusterView, ImageCell, MetadataImage, TopicMeta};
use crate::partition::Partition;
use tokio_util::sync::CancellationToken;

/// Kafka's STALE_BROKER_EPOCH: register again.
const STALE_BROKER_EPOCH: i32 = 77;

/// Where the controller is.
enum Backend {
    /// `strata-operator`, over gRPC: every address given (operator replicas); the one in
    /// use rotates on failure.
    Remote {
        urls: Vec<String>,
        channels: Vec<Channel>,
        current: std::sync::atomic::AtomicUsize,
    },
    /// In this process: a standalone node is a cluster of one.
    Embedded(Arc<ControllerService>),
}

/// The node's link to its controller, remote or embedded.
pub struct ClusterLink {
    pub me: i32,
    backend: Backend,
    incarnation: String,
    broker_epoch: AtomicI64,
    /// The installed metadata (shared with the broker).
    image: Arc<ImageCell>,
    /// Version of the last applied image; admin requests wait on it.
    applied: tokio::sync::watch::Sender<u64>,
    /// When this process first registered (the readiness bound counts from it).
    registered_at: Mutex<Option<std::time::Instant>>,
    /// A controlled shutdown has begun: not ready any more.
    leaving: std::sync::atomic::AtomicBool,
}

/// Why a node is not ready to take traffic in a roll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotReady {
    /// Not registered with the controller, or no metadata image applied yet.
    NoMetadata,
    /// Some partitions this node replicates are not in their ISR yet.
    CatchingUp { partitions: usize },
    /// Shutting down.
    Leaving,
}

impl std::fmt::Display for NotReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotReady::NoMetadata => write!(f, "no cluster metadata yet"),
            NotReady::CatchingUp { partitions } => {
                write!(f, "{partitions} partitions not yet in sync")
            }
            NotReady::Leaving => write!(f, "shutting down"),
        }
    }
}

fn unavailable(e: impl std::fmt::Display) -> Error {
    Error::ControllerUnavailable(e.to_string())
}

fn refused(code: i32, message: String) -> Result<()> {
    use kafka_protocol::error::ResponseError as E;
    match code {
        0 => Ok(()),
        // The broker's own variants, so callers (auto-creation races) match them as in
        // standalone mode.
        c if c == E::TopicAlreadyExists.code() as i32 => Err(Error::TopicAlreadyExists(message)),
        c if c == E::UnknownTopicOrPartition.code() as i32 => {
            Err(Error::UnknownTopicOrPartition(message))
        }
        c => Err(Error::Controller {
            code: c as i16,
            message,
        }),
    }
}

impl ClusterLink {
    /// A link to `urls` (comma-separated controller addresses, for example every operator
    /// replica; only the leading one answers). Connects lazily; must run inside the runtime.
    pub fn new(urls: &str, me: i32, image: Arc<ImageCell>) -> Result<ClusterLink> {
        let urls: Vec<String> = urls
            .split(',')
            .map(|u| u.trim().to_string())
            .filter(|u| !u.is_empty())
            .collect();
        if urls.is_empty() {
            return Err(Error::InvalidRequest("--controller has no address".into()));
        }
        let mut channels = Vec::new();
        for url in &urls {
            channels.push(
                tonic::transport::Endpoint::from_shared(url.clone())
                    .map_err(|e| Error::InvalidRequest(format!("--controller {url:?}: {e}")))?
                    .connect_timeout(Duration::from_secs(3))
                    .tcp_nodelay(true)
                    .connect_lazy(),
            );
        }
        Ok(Self::with_backend(
            me,
            image,
            Backend::Remote {
                urls,
                channels,
                current: std::sync::atomic::AtomicUsize::new(0),
            },
        ))
    }

    /// A link to a controller running in this process (a standalone node).
    pub fn embedded(me: i32, image: Arc<ImageCell>, controller: ControllerService) -> ClusterLink {
        Self::with_backend(me, image, Backend::Embedded(Arc::new(controller)))
    }

    fn with_backend(me: i32, image: Arc<ImageCell>, backend: Backend) -> ClusterLink {
        let (applied, _) = tokio::sync::watch::channel(0);
        ClusterLink {
            me,
            backend,
            incarnation: uuid::Uuid::new_v4().to_string(),
            broker_epoch: AtomicI64::new(-1),
            image,
            applied,
            registered_at: Mutex::new(None),
            leaving: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Whether the controller runs in this process (a standalone node).
    pub fn is_embedded(&self) -> bool {
        matches!(self.backend, Backend::Embedded(_))
    }

    fn client(&self) -> Rpc {
        match &self.backend {
            Backend::Remote {
                channels, current, ..
            } => {
                let i = current.load(Ordering::Relaxed) % channels.len();
                Rpc::Remote(ControllerClient::new(channels[i].clone()))
            }
            Backend::Embedded(s) => Rpc::Embedded(s.clone()),
        }
    }

    /// The controller address in use (index, URL).
    fn in_use(&self) -> (usize, &str) {
        match &self.backend {
            Backend::Remote { urls, current, .. } => {
                let i = current.load(Ordering::Relaxed) % urls.len();
                (i, &urls[i])
            }
            Backend::Embedded(_) => (0, "the embedded controller"),
        }
    }

    /// A call through address `i` failed in transport: move on to the next address (unless
    /// another task already did).
    fn failed(&self, i: usize) {
        if let Backend::Remote { urls, current, .. } = &self.backend {
            if urls.len() > 1 {
                let _ = current.compare_exchange(
                    i,
                    (i + 1) % urls.len(),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
        }
    }

    /// Map a transport failure of a call through address `i`, rotating to the next one.
    fn down(&self, i: usize, e: tonic::Status) -> Error {
        self.failed(i);
        unavailable(e)
    }

    /// The metadata applied last.
    pub fn view(&self) -> Arc<ClusterView> {
        self.image.cluster()
    }

    /// A controller call with a bound: one that does not answer in 15 s moves the link to
    /// the next address and fails as unavailable.
    async fn timed<T>(&self, f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
        tokio::time::timeout(Duration::from_secs(15), f)
            .await
            .map_err(|_| {
                let (i, url) = self.in_use();
                self.failed(i);
                unavailable(format!("{url} did not answer in 15 s"))
            })?
    }

    /// Wait until the first metadata image is applied: a node answers Kafka clients only
    /// from then on (before it, it would name no controller and a cluster id of its own).
    pub async fn first_image(&self) {
        let mut rx = self.applied.subscribe();
        let _ = rx.wait_for(|v| *v >= 1).await;
    }

    /// Ready for traffic in a rolling restart: registered, metadata applied, and every
    /// partition this node replicates back in its ISR — or `catch_up_bound` passed since it
    /// registered (a partition whose leader is gone cannot catch up).
    pub fn readiness(&self, catch_up_bound: Duration) -> std::result::Result<(), NotReady> {
        if self.leaving.load(Ordering::Relaxed) {
            return Err(NotReady::Leaving);
        }
        let Some(since) = *self.registered_at.lock() else {
            return Err(NotReady::NoMetadata);
        };
        let view = self.view();
        if view.version == 0 || *self.applied.borrow() == 0 {
            return Err(NotReady::NoMetadata);
        }
        let lagging = view
            .all_assignments()
            .filter(|a| a.replicas.contains(&self.me) && !a.isr.contains(&self.me))
            .count();
        if lagging > 0 && since.elapsed() < catch_up_bound {
            return Err(NotReady::CatchingUp {
                partitions: lagging,
            });
        }
        Ok(())
    }

    /// Kafka's controlled shutdown: ask the controller to move every leadership this node
    /// holds to another in-sync replica and to take it out of the ISRs, and wait until this
    /// node has applied that image; repeated (a follower may catch up meanwhile) until
    /// nothing is left or `bound` passes. Returns the partitions it still leads (it is their
    /// last in-sync replica).
    pub async fn controlled_shutdown(&self, bound: Duration) -> Vec<(String, i32)> {
        self.leaving.store(true, Ordering::Relaxed);
        let started = tokio::time::Instant::now();
        let deadline = started + bound;
        let mut left: Vec<(String, i32)> = Vec::new();
        loop {
            let epoch = self.broker_epoch.load(Ordering::Relaxed);
            if epoch < 0 {
                tracing::info!("controlled shutdown: never registered, nothing to move");
                return Vec::new();
            }
            let (i, url) = self.in_use();
            let url = url.to_string();
            let call = self
                .client()
                .controlled_shutdown(pb::ControlledShutdownRequest {
                    node_id: self.me,
                    broker_epoch: epoch,
                });
            match tokio::time::timeout_at(deadline, call).await {
                Ok(Ok(resp)) => {
                    let resp = resp.into_inner();
                    if resp.error_code == 0 {
                        let applied = tokio::time::timeout_at(deadline, async {
                            let mut rx = self.applied.subscribe();
                            let _ = rx.wait_for(|v| *v >= resp.metadata_version).await;
                        });
                        let _ = applied.await;
                        left = resp
                            .still_leading
                            .into_iter()
                            .map(|tp| (tp.topic, tp.partition))
                            .collect();
                        if left.is_empty() {
                            tracing::info!(
                                elapsed_ms = started.elapsed().as_millis() as u64,
                                "controlled shutdown: leaderships moved, ISRs left"
                            );
                            return left;
                        }
                    } else {
                        tracing::warn!(code = resp.error_code, message = %resp.error_message, "controlled shutdown refused; retrying");
                    }
                }
                Ok(Err(e)) if e.code() == tonic::Code::Unimplemented => {
                    // A controller older than this node: stop as before (the session
                    // timeout moves the leaderships).
                    tracing::warn!(controller = %url, "the controller has no controlled shutdown; stopping without it");
                    return Vec::new();
                }
                Ok(Err(e)) => {
                    self.failed(i);
                    tracing::warn!(controller = %url, error = %e, "controlled shutdown call failed; retrying");
                }
                Err(_) => {}
            }
            if tokio::time::Instant::now() + Duration::from_millis(250) >= deadline {
                tracing::warn!(
                    partitions = ?left,
                    bound_ms = bound.as_millis() as u64,
                    "controlled shutdown bound passed; this node is the last in-sync replica of these partitions and stops anyway"
                );
                return left;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Wait until metadata of at least `version` is applied here (so this node's own
    /// Metadata answers already show the change).
    async fn caught_up(&self, version: u64) {
        let mut rx = self.applied.subscribe();
        let _ = tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|v| *v >= version)).await;
    }

    // ---- admin requests forwarded from Kafka clients ----------------------------------

    /// An admin change forwarded to the controller: `call`'s answer once this node has
    /// applied the metadata version the change produced, so the next request here sees it.
    async fn forward<T, Fut>(&self, call: impl FnOnce(Rpc) -> Fut) -> Result<T>
    where
        Fut: std::future::Future<Output = std::result::Result<(u64, T), tonic::Status>>,
    {
        self.timed(async {
            let (i, _) = self.in_use();
            let (version, answer) = call(self.client()).await.map_err(|e| self.down(i, e))?;
            self.caught_up(version).await;
            Ok(answer)
        })
        .await
    }

    /// CreateTopics: with `assignments` (partition i gets `assignments[i]`) instead of a
    /// partition count and replication factor, the controller places nothing itself.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
        assignments: Vec<Vec<i32>>,
        validate_only: bool,
    ) -> Result<TopicMeta> {
        let topic = pb::CreatableTopic {
            name: name.to_string(),
            partitions,
            replication_factor: replication_factor as i32,
            configs: configs.into_iter().collect(),
            assignments: assignments
                .into_iter()
                .map(|replicas| pb::ReplicaList { replicas })
                .collect(),
            ..Default::default()
        };
        self.create(topic, validate_only).await
    }

    /// CreateTopics for a topic restored from a bucket: under the id its data is filed by,
    /// with each partition's first leader epoch above those of its bucket copy.
    pub async fn create_restored_topic(
        &self,
        name: &str,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
        topic_id: uuid::Uuid,
        leader_epochs: Vec<i32>,
    ) -> Result<TopicMeta> {
        let topic = pb::CreatableTopic {
            name: name.to_string(),
            partitions: leader_epochs.len() as i32,
            replication_factor: replication_factor as i32,
            configs: configs.into_iter().collect(),
            topic_id: topic_id.hyphenated().to_string(),
            leader_epochs,
            ..Default::default()
        };
        self.create(topic, false).await
    }

    async fn create(&self, topic: pb::CreatableTopic, validate_only: bool) -> Result<TopicMeta> {
        self.timed(async {
            let (i, _) = self.in_use();
            let resp = self
                .client()
                .create_topics(pb::CreateTopicsRequest {
                    topics: vec![topic],
                    validate_only,
                })
                .await
                .map_err(|e| self.down(i, e))?
                .into_inner();
            let r = resp
                .results
                .into_iter()
                .next()
                .ok_or_else(|| unavailable("empty CreateTopics answer"))?;
            refused(r.error_code, r.error_message)?;
            if !validate_only {
                self.caught_up(resp.metadata_version).await;
            }
            let t = r
                .topic
                .ok_or_else(|| unavailable("CreateTopics answer without the topic"))?;
            Ok(topic_meta(&t))
        })
        .await
    }

    pub async fn delete_topic(&self, name: &str) -> Result<uuid::Uuid> {
        self.timed(async {
            let (i, _) = self.in_use();
            let resp = self
                .client()
                .delete_topics(pb::DeleteTopicsRequest {
                    names: vec![name.to_string()],
                })
                .await
                .map_err(|e| self.down(i, e))?
                .into_inner();
            let r = resp
                .results
                .into_iter()
                .next()
                .ok_or_else(|| unavailable("empty DeleteTopics answer"))?;
            refused(r.error_code, r.error_message)?;
            self.caught_up(resp.metadata_version).await;
            Ok(r.topic.map(|t| topic_meta(&t).id).unwrap_or_default())
        })
        .await
    }

    pub async fn create_partitions(
        &self,
        name: &str,
        count: i32,
        validate_only: bool,
    ) -> Result<()> {
        self.timed(async {
            let (i, _) = self.in_use();
            let resp = self
                .client()
                .create_partitions(pb::CreatePartitionsRequest {
                    topics: vec![pb::PartitionCount {
                        topic: name.to_string(),
                        count,
                    }],
                    validate_only,
                })
                .await
                .map_err(|e| self.down(i, e))?
                .into_inner();
            let r = resp
                .results
                .into_iter()
                .next()
                .ok_or_else(|| unavailable("empty CreatePartitions answer"))?;
            refused(r.error_code, r.error_message)?;
            if !validate_only {
                self.caught_up(resp.metadata_version).await;
            }
            Ok(())
        })
        .await
    }

    pub async fn alter_topic_configs(
        &self,
        name: &str,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<()> {
        self.timed(async {
            let (i, _) = self.in_use();
            let resp = self
                .client()
                .alter_topic_configs(pb::AlterTopicConfigsRequest {
                    topic: name.to_string(),
                    configs: configs.into_iter().collect(),
                    validate_only,
                })
                .await
                .map_err(|e| self.down(i, e))?
                .into_inner();
            refused(resp.error_code, resp.error_message)?;
            if !validate_only {
                self.caught_up(resp.metadata_version).await;
            }
            Ok(())
        })
        .await
    }

    /// AlterUserScramCredentials through the controller; waits until this node has the
    /// resulting metadata, so the next authentication here sees it.
    pub async fn alter_scram_credentials(
        &self,
        r: pb::AlterScramCredentialsRequest,
    ) -> Result<Vec<pb::ScramResult>> {
        self.forward(|c| async {
            let resp = c.alter_scram_credentials(r).await?.into_inner();
            Ok((resp.metadata_version, resp.results))
        })
        .await
    }

    /// CreateAcls through the controller; waits until this node has the result.
    pub async fn create_acls(&self, r: pb::CreateAclsRequest) -> Result<Vec<pb::AclResult>> {
        self.forward(|c| async {
            let resp = c.create_acls(r).await?.into_inner();
            Ok((resp.metadata_version, resp.results))
        })
        .await
    }

    /// AlterClientQuotas through the controller; waits until this node has the result, so
    /// the next request here is measured against it.
    pub async fn alter_client_quotas(
        &self,
        r: pb::AlterClientQuotasRequest,
    ) -> Result<Vec<pb::QuotaResult>> {
        self.forward(|c| async {
            let resp = c.alter_client_quotas(r).await?.into_inner();
            Ok((resp.metadata_version, resp.results))
        })
        .await
    }

    /// DeleteAcls through the controller; waits until this node has the result.
    pub async fn delete_acls(&self, r: pb::DeleteAclsRequest) -> Result<Vec<pb::DeletedAcls>> {
        self.forward(|c| async {
            let resp = c.delete_acls(r).await?.into_inner();
            Ok((resp.metadata_version, resp.results))
        })
        .await
    }

    /// A block of producer ids from the controller, starting at `at_least` or above:
    /// (first, end).
    pub async fn allocate_producer_id_block(&self, at_least: i64) -> Result<(i64, i64)> {
        let epoch = self.broker_epoch.load(Ordering::Relaxed);
        let (i, _) = self.in_use();
        let resp = self
            .timed(async {
                self.client()
                    .allocate_producer_ids(pb::AllocateProducerIdsRequest {
                        node_id: self.me,
                        broker_epoch: epoch,
                        at_least,
                    })
                    .await
                    .map_err(|e| self.down(i, e))
                    .map(|r| r.into_inner())
            })
            .await?;
        refused(resp.error_code, resp.error_message)?;
        Ok((
            resp.producer_id_start,
            resp.producer_id_start + resp.producer_id_len as i64,
        ))
    }

    /// Propose a new ISR for a partition this node leads; applies the committed state.
    ///
    /// Until the controller answers, the high watermark counts the proposal too (the
    /// maximal ISR). When the outcome is unknown (the controller unreachable) the proposal
    /// stays pending and is sent again, because the controller may have committed it; when
    /// the answer shows that another node leads now, it stays pending until this node
    /// applies that image and follows.
    pub async fn alter_isr(&self, part: &Arc<Partition>, new_isr: Vec<i32>) -> Result<()> {
        let (leader_epoch, partition_epoch) = {
            let mut r = part.replica();
            if r.pending_isr.is_some() || !r.is_leader() {
                return Ok(());
            }
            r.pending_isr = Some(new_isr.clone());
            (r.leader_epoch, r.partition_epoch)
        };
        let still_pending = || {
            let r = part.replica();
            r.is_leader()
                && r.leader_epoch == leader_epoch
                && r.partition_epoch == partition_epoch
                && r.pending_isr.as_ref() == Some(&new_isr)
        };
        let mut backoff = Duration::from_millis(100);
        let resp = loop {
            let res = self
                .client()
                .alter_partition(pb::AlterPartitionRequest {
                    node_id: self.me,
                    broker_epoch: self.broker_epoch.load(Ordering::Relaxed),
                    topic: part.topic.clone(),
                    partition: part.index,
                    leader_epoch,
                    partition_epoch,
                    new_isr: new_isr.clone(),
                })
                .await;
            match res {
                Ok(resp) => break resp.into_inner(),
                Err(e) => {
                    tracing::debug!(topic = %part.topic, partition = part.index, error = %e.message(), "ISR change not answered; sending it again");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    if !still_pending() {
                        // The image moved on: it decided the change either way.
                        return Err(unavailable(e));
                    }
                }
            }
        };
        let mut r = part.replica();
        let mine = r.is_leader() && r.leader_epoch == leader_epoch;
        match &resp.partition {
            Some(p) if mine && (p.leader != self.me || p.leader_epoch > leader_epoch) => {
                // Leadership moved with (or since) this change: keep counting the maximal
                // ISR until the image that makes this node a follower arrives.
            }
            Some(p) if mine && p.partition_epoch >= r.partition_epoch => {
                r.isr = p.isr.clone();
                r.partition_epoch = p.partition_epoch;
                r.pending_isr = None;
            }
            _ => {
                if r.pending_isr.as_ref() == Some(&new_isr) {
                    r.pending_isr = None;
                }
            }
        }
        drop(r);
        if resp.error_code == 0 {
            tracing::info!(topic = %part.topic, partition = part.index, isr = ?new_isr, "ISR changed");
        } else {
            tracing::info!(topic = %part.topic, partition = part.index, code = resp.error_code, message = %resp.error_message, "ISR change refused");
        }
        part.recompute_high_watermark();
        part.notify_state_change();
        refused(resp.error_code, resp.error_message)
    }
}

// ---- Kafka admin APIs for operations: elections and reassignments, forwarded ---------

/// One partition's answer from the controller: (topic, partition, Kafka error code, message).
pub type PartitionAnswer = (String, i32, i16, String);

fn partition_answers(results: Vec<pb::PartitionResult>) -> Vec<PartitionAnswer> {
    results
        .into_iter()
        .map(|r| (r.topic, r.partition, r.error_code as i16, r.error_message))
        .collect()
}

fn topic_partitions(named: Option<Vec<(String, Vec<i32>)>>) -> (bool, Vec<pb::TopicPartitions>) {
    match named {
        None => (true, Vec::new()),
        Some(named) => (
            false,
            named
                .into_iter()
                .map(|(topic, partitions)| pb::TopicPartitions { topic, partitions })
                .collect(),
        ),
    }
}

impl ClusterLink {
    /// ElectLeaders: `election_type` is Kafka's (0 preferred, 1 unclean); `None` elects on
    /// every partition. Answers once this node's metadata shows the new leaders.
    pub async fn elect_leaders(
        &self,
        election_type: i8,
        named: Option<Vec<(String, Vec<i32>)>>,
    ) -> Result<Vec<PartitionAnswer>> {
        let (all_partitions, topic_partitions) = topic_partitions(named);
        self.timed(async {
            let (i, _) = self.in_use();
            let resp = self
                .client()
                .elect_leaders(pb::ElectLeadersRequest {
                    election_type: i32::from(election_type),
                    all_partitions,
                    topic_partitions,
                })
                .await
                .map_err(|e| self.down(i, e))?
                .into_inner();
            self.caught_up(resp.metadata_version).await;
            Ok(partition_answers(resp.results))
        })
        .await
    }

    /// AlterPartitionReassignments: each partition's target replicas, `None` to cancel.
    pub async fn alter_reassignments(
        &self,
        partitions: Vec<(String, i32, Option<Vec<i32>>)>,
        keep_replication_factor: bool,
    ) -> Result<Vec<PartitionAnswer>> {
        let partitions = partitions
            .into_iter()
            .map(|(topic, partition, replicas)| pb::PartitionReassignment {
                topic,
                partition,
                cancel: replicas.is_none(),
                replicas: replicas.unwrap_or_default(),
            })
            .collect();
        self.timed(async {
            let (i, _) = self.in_use();
            let resp = self
                .client()
                .alter_partition_reassignments(pb::AlterPartitionReassignmentsRequest {
                    partitions,
                    keep_replication_factor,
                })
                .await
                .map_err(|e| self.down(i, e))?
                .into_inner();
            self.caught_up(resp.metadata_version).await;
            Ok(partition_answers(resp.results))
        })
        .await
    }

    /// ListPartitionReassignments: the moves in flight, of every partition with `None`.
    pub async fn list_reassignments(
        &self,
        named: Option<Vec<(String, Vec<i32>)>>,
    ) -> Result<Vec<pb::OngoingReassignment>> {
        let (all_partitions, topic_partitions) = topic_partitions(named);
        self.timed(async {
            let (i, _) = self.in_use();
            let resp = self
                .client()
                .list_partition_reassignments(pb::ListPartitionReassignmentsRequest {
                    all_partitions,
                    topic_partitions,
                })
                .await
                .map_err(|e| self.down(i, e))?
                .into_inner();
            Ok(resp.reassignments)
        })
        .await
    }
}

// ---- the session: register, heartbeat, watch ------------------------------------------

/// What the link needs of the node it serves; the node's root implements it.
pub trait ClusterHost: Send + Sync + 'static {
    /// Apply a controller image (topics, nodes, assignments) to this node: host and drop
    /// partitions, take up roles, route what changed. `changed` names the topics that
    /// differ from the image applied before (added, changed or deleted); `None` means any
    /// may have (a watch's first image). Runs on a blocking thread.
    fn apply_image(
        &self,
        meta: MetadataImage,
        view: ClusterView,
        changed: Option<&BTreeSet<String>>,
    ) -> Result<()>;
    /// What this node holds, for the controller's Topic status.
    fn partition_sizes(&self) -> Vec<PartitionSize>;
}

/// One replica's bytes, as the heartbeat reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionSize {
    pub topic: String,
    pub partition: i32,
    /// Bytes in the local log.
    pub local_bytes: u64,
    /// Bytes in the bucket (reported by the leader only).
    pub remote_bytes: u64,
}

/// What a node registers: the address other nodes fetch from, and every named listener's
/// advertised address (name, host, port) for clients.
#[derive(Debug, Clone)]
pub struct Advertised {
    pub host: String,
    pub port: i32,
    pub listeners: Vec<(String, String, i32)>,
}

/// Run the node's side of the cluster until `shutdown` (or the host is gone): register,
/// heartbeat, and apply every metadata image the controller publishes through `host`.
pub async fn run(
    link: Arc<ClusterLink>,
    host: std::sync::Weak<dyn ClusterHost>,
    advertised: Advertised,
    shutdown: CancellationToken,
) {
    let watch = tokio::spawn(watch_loop(link.clone(), host.clone(), shutdown.clone()));
    tokio::select! {
        _ = session(&link, &host, advertised) => {}
        _ = shutdown.cancelled() => {}
    }
    watch.abort();
}

async fn session(
    link: &ClusterLink,
    host: &std::sync::Weak<dyn ClusterHost>,
    advertised: Advertised,
) {
    loop {
        let (i, url) = link.in_use();
        let url = url.to_string();
        let reg = link
            .client()
            .register(pb::RegisterRequest {
                node_id: link.me,
                host: advertised.host.clone(),
                port: advertised.port,
                rack: String::new(),
                incarnation_id: link.incarnation.clone(),
                listeners: advertised
                    .listeners
                    .iter()
                    .map(|(name, host, port)| pb::Endpoint {
                        name: name.clone(),
                        host: host.clone(),
                        port: *port,
                    })
                    .collect(),
            })
            .await;
        let reg = match reg {
            Ok(r) => r.into_inner(),
            Err(e) => {
                link.failed(i);
                tracing::warn!(controller = %url, error = %e, "cannot register with the controller; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        if reg.error_code != 0 {
            tracing::error!(code = reg.error_code, message = %reg.error_message, "controller refused registration; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        link.broker_epoch.store(reg.broker_epoch, Ordering::Relaxed);
        link.registered_at
            .lock()
            .get_or_insert_with(std::time::Instant::now);
        tracing::info!(controller = %url, broker_epoch = reg.broker_epoch, cluster_id = %reg.cluster_id, "registered with the controller");
        let every = Duration::from_millis(reg.heartbeat_interval_ms.clamp(50, 10_000) as u64);
        // Heartbeat until the controller says the registration is stale.
        loop {
            tokio::time::sleep(every).await;
            let applied = *link.applied.borrow();
            let Some(host) = host.upgrade() else {
                return;
            };
            let partition_sizes = host
                .partition_sizes()
                .into_iter()
                .map(|p| pb::PartitionSize {
                    topic: p.topic,
                    partition: p.partition,
                    local_bytes: p.local_bytes as i64,
                    remote_bytes: p.remote_bytes as i64,
                })
                .collect();
            let (i, _) = link.in_use();
            let hb = link
                .client()
                .heartbeat(pb::HeartbeatRequest {
                    node_id: link.me,
                    broker_epoch: reg.broker_epoch,
                    metadata_version: applied,
                    partition_sizes,
                })
                .await;
            match hb {
                Ok(r) if r.get_ref().error_code == STALE_BROKER_EPOCH => {
                    tracing::warn!(
                        "controller no longer knows this registration; registering again"
                    );
                    break;
                }
                Ok(r) if r.get_ref().error_code != 0 => {
                    tracing::warn!(code = r.get_ref().error_code, message = %r.get_ref().error_message, "heartbeat refused");
                }
                Ok(_) => {}
                Err(e) => {
                    link.failed(i);
                    tracing::debug!(error = %e, "heartbeat failed");
                }
            }
        }
    }
}

async fn watch_loop(
    link: Arc<ClusterLink>,
    host: std::sync::Weak<dyn ClusterHost>,
    shutdown: CancellationToken,
) {
    // The image merged so far: increments are merged into it, every one of them, even those
    // not applied (the next builds on it). Kept across watches, so that a new watch starts
    // from its version when the controller still has it (an increment, not everything).
    let mut whole: Option<WholeImage> = None;
    // The image last decoded and handed to the node, and the topics changed since then
    // (`None`: any may have, as after a whole image or a failed apply).
    let mut decoded: Option<Arc<(MetadataImage, ClusterView)>> = None;
    let mut changed: Option<BTreeSet<String>> = None;
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        let epoch = link.broker_epoch.load(Ordering::Relaxed);
        if epoch < 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let (i, _) = link.in_use();
        let stream = link
            .client()
            .watch_metadata(pb::WatchMetadataRequest {
                node_id: link.me,
                broker_epoch: epoch,
                incremental: true,
                known_version: whole.as_ref().map_or(0, |w| w.rest.version),
                known_cluster_id: whole
                    .as_ref()
                    .map(|w| w.rest.cluster_id.clone())
                    .unwrap_or_default(),
            })
            .await;
        let mut stream = match stream {
            Ok(s) => s.into_inner(),
            Err(e) => {
                link.failed(i);
                tracing::debug!(error = %e, "metadata watch failed; retrying");
                tokio::time::sleep(Duration::from_millis(300)).await;
                continue;
            }
        };
        let mut first = true;
        loop {
            match stream.next().await {
                Some(Ok(md)) => {
                    let version = md.version;
                    if std::mem::take(&mut first) && whole.is_some() {
                        if md.incremental {
                            tracing::info!(
                                from = md.base_version,
                                version,
                                topics = md.topics.len() + md.removed_topics.len(),
                                "metadata watch resumed with the increment since the image held"
                            );
                        } else {
                            tracing::info!(version, "metadata watch resumed with a whole image");
                        }
                    }
                    let named = md.incremental.then(|| {
                        md.topics
                            .iter()
                            .map(|t| t.name.clone())
                            .chain(md.removed_topics.iter().cloned())
                            .collect::<Vec<_>>()
                    });
                    match WholeImage::merge(whole.take(), md) {
                        Ok(w) => whole = Some(w),
                        Err(reason) => {
                            tracing::warn!(%reason, "metadata increment does not fit; watching again from a whole image");
                            break;
                        }
                    }
                    match (named, &mut changed) {
                        (Some(named), Some(set)) => set.extend(named),
                        _ => changed = None,
                    }
                    let current = link.view().version;
                    if version <= current && current != 0 {
                        continue;
                    }
                    let since = changed
                        .replace(BTreeSet::new())
                        .filter(|_| decoded.is_some());
                    let next = Arc::new(
                        whole
                            .as_ref()
                            .expect("just merged")
                            .decode(decoded.as_deref().zip(since.as_ref())),
                    );
                    decoded = Some(next.clone());
                    let Some(host) = host.upgrade() else {
                        return;
                    };
                    let res = tokio::task::spawn_blocking(move || {
                        let (meta, view) = Arc::unwrap_or_clone(next);
                        host.apply_image(meta, view, since.as_ref())
                    })
                    .await;
                    match res {
                        Ok(Ok(())) => {
                            link.applied.send_replace(version);
                        }
                        Ok(Err(e)) => {
                            // Retried whole with the next message.
                            changed = None;
                            tracing::error!(version, error = %e, "could not apply cluster metadata")
                        }
                        Err(e) => {
                            changed = None;
                            tracing::error!(error = %e, "metadata apply task failed")
                        }
                    }
                }
                None => break,
                Some(Err(e)) => {
                    link.failed(i);
                    tracing::debug!(error = %e, "metadata watch ended");
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
