//! The node's link to the controller: registration and heartbeats, the metadata watch
//! (applied to the broker: which partitions live here, who leads them, the ISR), ISR
//! proposals (AlterPartition), and admin requests forwarded from Kafka clients.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use strata_controller::proto::controller_client::ControllerClient;
use strata_controller::proto::{self as pb};
use tonic::transport::Channel;

use crate::broker::metadata::{MetadataImage, TopicMeta, METADATA_VERSION};
use crate::broker::{Broker, Partition, OFFSETS_TOPIC};
use crate::error::{Error, Result};
use crate::fsutil;

/// Kafka's STALE_BROKER_EPOCH: register again.
const STALE_BROKER_EPOCH: i32 = 77;

/// A node as the cluster metadata describes it.
#[derive(Debug, Clone)]
pub struct NodeAddr {
    pub id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
    pub alive: bool,
}

/// One partition's assignment as last published by the controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub replicas: Vec<i32>,
    pub leader: i32,
    pub leader_epoch: i32,
    pub isr: Vec<i32>,
    pub partition_epoch: i32,
}

/// The cluster metadata image this node has applied.
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    pub version: u64,
    pub cluster_id: String,
    pub controller_id: i32,
    pub nodes: BTreeMap<i32, NodeAddr>,
    pub assignments: HashMap<(String, i32), Assignment>,
}

impl ClusterView {
    pub fn assignment(&self, topic: &str, p: i32) -> Option<&Assignment> {
        self.assignments.get(&(topic.to_string(), p))
    }

    pub fn alive_nodes(&self) -> impl Iterator<Item = &NodeAddr> {
        self.nodes.values().filter(|n| n.alive)
    }
}

/// The controller link of a node in cluster mode.
pub struct ClusterLink {
    pub me: i32,
    /// Every controller address given (operator replicas); the one in use rotates on failure.
    urls: Vec<String>,
    channels: Vec<Channel>,
    current: std::sync::atomic::AtomicUsize,
    incarnation: String,
    broker_epoch: AtomicI64,
    view: RwLock<Arc<ClusterView>>,
    /// Version of the last applied image; admin requests wait on it.
    applied: tokio::sync::watch::Sender<u64>,
    /// Follower fetchers by leader id.
    pub(crate) fetchers: Mutex<HashMap<i32, tokio::task::JoinHandle<()>>>,
    /// Producer ids handed out by the controller: (next, end).
    producer_ids: Mutex<(i64, i64)>,
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
    pub fn new(urls: &str, me: i32) -> Result<ClusterLink> {
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
        let (applied, _) = tokio::sync::watch::channel(0);
        Ok(ClusterLink {
            me,
            urls,
            channels,
            current: std::sync::atomic::AtomicUsize::new(0),
            incarnation: uuid::Uuid::new_v4().to_string(),
            broker_epoch: AtomicI64::new(-1),
            view: RwLock::new(Arc::new(ClusterView {
                controller_id: -1,
                ..Default::default()
            })),
            applied,
            fetchers: Mutex::new(HashMap::new()),
            producer_ids: Mutex::new((0, 0)),
            registered_at: Mutex::new(None),
            leaving: std::sync::atomic::AtomicBool::new(false),
        })
    }

    fn client(&self) -> ControllerClient<Channel> {
        let i = self.current.load(Ordering::Relaxed) % self.channels.len();
        ControllerClient::new(self.channels[i].clone())
    }

    /// The controller address in use (index, URL).
    fn in_use(&self) -> (usize, &str) {
        let i = self.current.load(Ordering::Relaxed) % self.urls.len();
        (i, &self.urls[i])
    }

    /// A call through address `i` failed in transport: move on to the next address (unless
    /// another task already did).
    fn failed(&self, i: usize) {
        if self.urls.len() > 1 {
            let _ = self.current.compare_exchange(
                i,
                (i + 1) % self.urls.len(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    /// Map a transport failure of a call through address `i`, rotating to the next one.
    fn down(&self, i: usize, e: tonic::Status) -> Error {
        self.failed(i);
        unavailable(e)
    }

    /// The metadata applied last.
    pub fn view(&self) -> Arc<ClusterView> {
        self.view.read().clone()
    }

    /// Block the calling (handler) thread on a controller call. Admin requests are rare and
    /// their handlers are synchronous; the runtime keeps serving other connections.
    pub fn block_on<T>(&self, f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
        let timed = async {
            tokio::time::timeout(Duration::from_secs(15), f)
                .await
                .map_err(|_| {
                    let (i, url) = self.in_use();
                    self.failed(i);
                    unavailable(format!("{url} did not answer in 15 s"))
                })?
        };
        tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(timed))
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
            .assignments
            .values()
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
            let mut client = self.client();
            let call = client.controlled_shutdown(pb::ControlledShutdownRequest {
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

    pub fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<TopicMeta> {
        self.block_on(async {
            let (i, _) = self.in_use();
            let resp = self
                .client()
                .create_topics(pb::CreateTopicsRequest {
                    topics: vec![pb::CreatableTopic {
                        name: name.to_string(),
                        partitions,
                        replication_factor: replication_factor as i32,
                        configs: configs.into_iter().collect(),
                        assignments: vec![],
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
    }

    pub fn delete_topic(&self, name: &str) -> Result<uuid::Uuid> {
        self.block_on(async {
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
    }

    pub fn create_partitions(&self, name: &str, count: i32, validate_only: bool) -> Result<()> {
        self.block_on(async {
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
    }

    pub fn alter_topic_configs(
        &self,
        name: &str,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<()> {
        self.block_on(async {
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
    }

    /// A cluster-unique producer id (blocks come from the controller).
    pub fn allocate_producer_id(&self) -> Result<i64> {
        let mut ids = self.producer_ids.lock();
        if ids.0 >= ids.1 {
            let epoch = self.broker_epoch.load(Ordering::Relaxed);
            let (i, _) = self.in_use();
            let resp = self.block_on(async {
                self.client()
                    .allocate_producer_ids(pb::AllocateProducerIdsRequest {
                        node_id: self.me,
                        broker_epoch: epoch,
                    })
                    .await
                    .map_err(|e| self.down(i, e))
                    .map(|r| r.into_inner())
            })?;
            refused(resp.error_code, resp.error_message)?;
            *ids = (
                resp.producer_id_start,
                resp.producer_id_start + resp.producer_id_len as i64,
            );
        }
        let id = ids.0;
        ids.0 += 1;
        Ok(id)
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
    pub fn elect_leaders(
        &self,
        election_type: i8,
        named: Option<Vec<(String, Vec<i32>)>>,
    ) -> Result<Vec<PartitionAnswer>> {
        let (all_partitions, topic_partitions) = topic_partitions(named);
        self.block_on(async {
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
    }

    /// AlterPartitionReassignments: each partition's target replicas, `None` to cancel.
    pub fn alter_reassignments(
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
        self.block_on(async {
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
    }

    /// ListPartitionReassignments: the moves in flight, of every partition with `None`.
    pub fn list_reassignments(
        &self,
        named: Option<Vec<(String, Vec<i32>)>>,
    ) -> Result<Vec<pb::OngoingReassignment>> {
        let (all_partitions, topic_partitions) = topic_partitions(named);
        self.block_on(async {
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
    }
}

/// A topic's metadata from the controller's form.
fn topic_meta(t: &pb::TopicInfo) -> TopicMeta {
    TopicMeta {
        id: uuid::Uuid::from_slice(&t.topic_id).unwrap_or_default(),
        partitions: t.partitions.len() as i32,
        replication_factor: t
            .partitions
            .first()
            .map(|p| p.replicas.len() as i16)
            .unwrap_or(0),
        configs: t
            .configs
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        leader_epoch: 0,
        internal: t.internal || t.name == OFFSETS_TOPIC,
    }
}

// ---- the session: register, heartbeat, watch ------------------------------------------

/// Run the node's side of the cluster until shutdown.
pub async fn run(b: Arc<Broker>) {
    let Some(link) = b.cluster.clone() else {
        return;
    };
    let watch_b = b.clone();
    let watch_link = link.clone();
    tokio::spawn(async move { watch_loop(watch_b, watch_link).await });
    let isr_b = b.clone();
    tokio::spawn(async move { super::fetcher::isr_maintenance(isr_b).await });
    loop {
        if b.is_shutting_down() {
            return;
        }
        let (i, url) = link.in_use();
        let url = url.to_string();
        let reg = link
            .client()
            .register(pb::RegisterRequest {
                node_id: link.me,
                host: b.config.advertised_host.clone(),
                port: b.config.advertised_port,
                rack: String::new(),
                incarnation_id: link.incarnation.clone(),
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
            if b.is_shutting_down() {
                return;
            }
            let applied = *link.applied.borrow();
            let partition_sizes = partition_sizes(&b);
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

/// What this node holds, for the controller (Topic status): local bytes of every replica
/// here, and bucket bytes of the partitions it leads.
fn partition_sizes(b: &Broker) -> Vec<pb::PartitionSize> {
    let remote: HashMap<(String, i32), u64> = b
        .tiering
        .as_ref()
        .map(|t| {
            t.stats()
                .partitions
                .into_iter()
                .map(|p| ((p.topic, p.partition), p.remote_bytes))
                .collect()
        })
        .unwrap_or_default();
    b.all_partitions()
        .iter()
        .map(|p| {
            let leader = p.is_leader();
            pb::PartitionSize {
                topic: p.topic.clone(),
                partition: p.index,
                local_bytes: p.log().size_bytes() as i64,
                remote_bytes: if leader {
                    remote
                        .get(&(p.topic.clone(), p.index))
                        .copied()
                        .unwrap_or(0) as i64
                } else {
                    0
                },
            }
        })
        .collect()
}

async fn watch_loop(b: Arc<Broker>, link: Arc<ClusterLink>) {
    loop {
        if b.is_shutting_down() {
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
        loop {
            match stream.message().await {
                Ok(Some(md)) => {
                    let b2 = b.clone();
                    let version = md.version;
                    let res = tokio::task::spawn_blocking(move || apply(&b2, md)).await;
                    match res {
                        Ok(Ok(())) => {
                            link.applied.send_replace(version);
                            super::fetcher::ensure_fetchers(&b);
                        }
                        Ok(Err(e)) => {
                            tracing::error!(version, error = %e, "could not apply cluster metadata")
                        }
                        Err(e) => tracing::error!(error = %e, "metadata apply task failed"),
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    link.failed(i);
                    tracing::debug!(error = %e, "metadata watch ended");
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Apply a metadata image: topics, the partitions this node hosts and their roles.
fn apply(b: &Arc<Broker>, md: pb::ClusterMetadata) -> Result<()> {
    let Some(link) = b.cluster.clone() else {
        return Ok(());
    };
    if md.version <= link.view().version && link.view().version != 0 {
        return Ok(());
    }
    let mut view = ClusterView {
        version: md.version,
        cluster_id: md.cluster_id.clone(),
        controller_id: md.controller_id,
        ..Default::default()
    };
    for n in &md.nodes {
        view.nodes.insert(
            n.node_id,
            NodeAddr {
                id: n.node_id,
                host: n.host.clone(),
                port: n.port,
                rack: (!n.rack.is_empty()).then(|| n.rack.clone()),
                alive: n.alive,
            },
        );
    }
    let mut image = MetadataImage {
        version: METADATA_VERSION,
        cluster_id: md.cluster_id.clone(),
        producer_id_block_end: 0,
        topics: BTreeMap::new(),
    };
    for t in &md.topics {
        let meta = topic_meta(t);
        for p in &t.partitions {
            view.assignments.insert(
                (t.name.clone(), p.partition),
                Assignment {
                    replicas: p.replicas.clone(),
                    leader: p.leader,
                    leader_epoch: p.leader_epoch,
                    isr: p.isr.clone(),
                    partition_epoch: p.partition_epoch,
                },
            );
        }
        image.topics.insert(t.name.clone(), meta);
    }
    let me = link.me;
    let now = fsutil::now_ms();
    // Partitions this node hosts now.
    let mut offsets_leadership = Vec::new();
    for (name, meta) in &image.topics {
        for p in 0..meta.partitions {
            let Some(a) = view.assignment(name, p) else {
                continue;
            };
            if !a.replicas.contains(&me) {
                continue;
            }
            let part = b.host_partition(name, meta, p)?;
            let was_leader = part.is_leader();
            let changed = {
                let mut r = part.replica();
                let before = r.clone();
                if a.leader == me {
                    if !r.is_leader() || r.leader_epoch != a.leader_epoch {
                        let hw = part.high_watermark();
                        part.log().begin_epoch(a.leader_epoch)?;
                        r.become_leader(
                            a.leader_epoch,
                            a.partition_epoch,
                            a.replicas.clone(),
                            a.isr.clone(),
                            hw,
                            now,
                        );
                        tracing::info!(topic = %name, partition = p, epoch = a.leader_epoch, isr = ?a.isr, "leading");
                    } else if a.partition_epoch >= r.partition_epoch {
                        let hw = part.high_watermark();
                        r.become_leader(
                            a.leader_epoch,
                            a.partition_epoch,
                            a.replicas.clone(),
                            a.isr.clone(),
                            hw,
                            now,
                        );
                    }
                } else if r.is_leader()
                    || r.leader_epoch != a.leader_epoch
                    || r.role != (crate::partition::replica::Role::Follower { leader: a.leader })
                {
                    r.become_follower(
                        a.leader,
                        a.leader_epoch,
                        a.partition_epoch,
                        a.replicas.clone(),
                        a.isr.clone(),
                    );
                    r.truncate_pending = true;
                    tracing::info!(topic = %name, partition = p, leader = a.leader, epoch = a.leader_epoch, "following");
                } else {
                    r.isr = a.isr.clone();
                    r.partition_epoch = a.partition_epoch;
                }
                *r != before
            };
            if changed {
                part.recompute_high_watermark();
                part.notify_state_change();
            }
            if name == OFFSETS_TOPIC && was_leader != part.is_leader() {
                offsets_leadership.push((p, part.is_leader()));
            }
        }
    }
    // Partitions no longer hosted here (deleted topics, moved replicas) go.
    for part in b.all_partitions() {
        let keep = image
            .topics
            .get(&part.topic)
            .is_some_and(|m| m.id == part.log().topic_id())
            && view
                .assignment(&part.topic, part.index)
                .is_some_and(|a| a.replicas.contains(&me));
        if !keep {
            b.drop_partition(&part);
            if part.topic == OFFSETS_TOPIC && part.is_leader() {
                offsets_leadership.push((part.index, false));
            }
        }
    }
    // Topics deleted by this image: their tiered data goes too, unless the operator marked
    // it to keep (deletionPolicy: Retain). Every node that knew the topic asks; deleting
    // objects is idempotent.
    if let Some(t) = &b.tiering {
        for old in b.topics() {
            if image.topics.values().any(|m| m.id == old.meta.id) {
                continue;
            }
            let cfg = crate::log::LogConfig::resolve(&old.meta.configs, b.topic_defaults());
            let retain = old
                .meta
                .configs
                .get(strata_controller::RETAIN_REMOTE_DATA_CONFIG)
                .is_some_and(|v| v == "true");
            if cfg.remote_storage && !retain {
                t.delete_topic_data(old.meta.id);
            } else if cfg.remote_storage {
                tracing::info!(topic = %old.name, topic_id = %old.meta.id, "topic deleted; its tiered data is retained");
            }
        }
    }
    b.install_cluster_image(image);
    *link.view.write() = Arc::new(view);
    for (p, leading) in offsets_leadership {
        b.groups.on_offsets_leadership(b, p, leading);
    }
    b.notify_appended();
    Ok(())
}
