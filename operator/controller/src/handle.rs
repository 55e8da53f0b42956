//! The controller's domain API: [`ControllerHandle`], the pure [`Cluster`] behind a lock, a
//! [`MetadataStore`] every change goes through before anyone hears of it, and a watch channel
//! publishing the metadata [`Image`].
//!
//! Owns: the order of a change (apply to the core, save through the store, then answer and
//! publish; a failed save rolls the core back, so no caller ever sees a change that would be
//! lost on a crash), the clock the core is given, the timers (node deadlines, leader balance)
//! and the partition sizes nodes report.
//!
//! May call: [`crate::core`] and [`crate::store`]. It speaks plain Rust types and the crate's
//! [`Error`] only; protobuf is the gRPC service's business. In-process callers (the
//! operator's reconcilers) and the gRPC service ([`crate::service`]) are its two users.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{watch, Mutex};

use crate::core::{
    self, Cluster, Delta, ElectionType, Event, Image, NewTopic, OngoingReassignment,
    PartitionOutcome, PartitionRecord, ReassignmentRequest, RebalanceOutcome, Registered,
    ScramOutcome, ShutdownProgress, TopicOutcome, TopicRecord,
};
use crate::error::{Error, Result};
use crate::store::MetadataStore;
use strata_security::acl::{AclBinding, AclFilter};
use strata_security::quota::{Alteration, QuotaError};
use strata_security::scram::{ScramCredential, ScramMechanism};

/// Images kept for nodes that reconnect (see [`ControllerHandle::image_at`]).
pub const RECENT_IMAGES: usize = 16;

/// How often nodes' deadlines are checked.
pub const TICK_INTERVAL: Duration = Duration::from_millis(100);

/// Settings of a controller.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    /// The core's rules (session timeout, topic defaults).
    pub core: core::Config,
    /// How often nodes should heartbeat; told to them when they register.
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

/// A node announcing itself (Register).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeRegistration {
    /// The node's id.
    pub node_id: i32,
    /// Kafka listener host.
    pub host: String,
    /// Kafka listener port.
    pub port: i32,
    /// Rack, empty when unset.
    pub rack: String,
    /// Random per process start: a new one means the node restarted.
    pub incarnation_id: String,
    /// Every named listener's advertised address (name -> (host, port)).
    pub listeners: BTreeMap<String, (String, i32)>,
}

/// One replica's size as its node reports it with a heartbeat.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartitionSize {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: i32,
    /// Bytes of the replica's local segments on the reporting node.
    pub local_bytes: i64,
    /// Bytes of the partition's objects in the bucket (reported by its leader; 0 otherwise).
    pub remote_bytes: i64,
}

/// An ISR proposed by a partition's leader (AlterPartition).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IsrProposal {
    /// The proposing node.
    pub node_id: i32,
    /// Its broker epoch.
    pub broker_epoch: i64,
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: i32,
    /// The leader epoch the proposal is based on.
    pub leader_epoch: i32,
    /// The partition epoch the proposal is based on.
    pub partition_epoch: i32,
    /// The proposed ISR.
    pub new_isr: Vec<i32>,
}

/// The answer to an [`IsrProposal`].
#[derive(Debug)]
pub struct IsrOutcome {
    /// The partition as committed, or why the proposal was refused.
    pub committed: Result<PartitionRecord>,
    /// The partition as it is now, so a refused leader can catch up (`None`: no such partition).
    pub current: Option<PartitionRecord>,
}

/// An answer together with the metadata version right after the call made it.
#[derive(Debug)]
pub struct Versioned<T> {
    /// The answer.
    pub value: T,
    /// The metadata version once the change (if any) was committed.
    pub metadata_version: u64,
}

/// The controller, in process: cheap to clone, every clone is the same controller.
///
/// Every method returns the crate's [`Error`]: a refusal (a variant naming what the request
/// got wrong, such as [`Error::TopicAlreadyExists`]) or a failure to make the change durable
/// ([`Error::StoreIo`], or [`Error::StoreConflict`] once another controller took over the
/// store). Batch methods answer each item on its own and fail as a whole only on the latter.
#[derive(Clone)]
pub struct ControllerHandle {
    shared: Arc<Shared>,
}

struct Shared {
    inner: Mutex<Inner>,
    images: watch::Sender<Arc<Image>>,
    /// The last images published, oldest first, so that a node that reconnects is sent the
    /// increment from the version it holds. Topics are shared between images, so each one
    /// costs its topic map and the topics its commit changed.
    recent: std::sync::Mutex<VecDeque<Arc<Image>>>,
    /// Set when the store reports that another writer took over; the host must stop.
    deposed: watch::Sender<Option<String>>,
    started: Instant,
    heartbeat_interval_ms: u64,
    session_timeout_ms: u64,
    leader_balance_interval: Option<Duration>,
    /// Partition sizes each node last reported (runtime only: they come back with the next
    /// heartbeat after a restart).
    sizes: std::sync::Mutex<HashMap<i32, Vec<PartitionSize>>>,
}

struct Inner {
    cluster: Cluster,
    store: Arc<dyn MetadataStore>,
}

impl ControllerHandle {
    /// Loads the state from `store` (or creates and saves a new cluster) and gives every known
    /// node one session timeout to reconnect. Timers run only once [`Self::run_timers`] does.
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
                store.replace(cluster.state()).await?;
                tracing::info!(cluster_id = %cluster.state().cluster_id, "new cluster created");
                cluster
            }
        };
        let first = Arc::new(cluster.image());
        let (images, _) = watch::channel(first.clone());
        let (deposed, _) = watch::channel(None);
        Ok(ControllerHandle {
            shared: Arc::new(Shared {
                inner: Mutex::new(Inner { cluster, store }),
                images,
                recent: std::sync::Mutex::new(VecDeque::from([first])),
                deposed,
                started,
                heartbeat_interval_ms: config.heartbeat_interval_ms,
                session_timeout_ms: config.core.session_timeout_ms,
                leader_balance_interval: config.leader_balance_interval,
                sizes: Default::default(),
            }),
        })
    }

    // ---- reading ----

    /// The metadata image, current value first, changing with every committed change.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Image>> {
        self.shared.images.subscribe()
    }

    /// The image this controller published at `version`, if it is among the last
    /// [`RECENT_IMAGES`] (a node catching up from it gets the increment, not everything).
    pub fn image_at(&self, version: u64) -> Option<Arc<Image>> {
        let recent = self.shared.recent.lock().expect("not poisoned");
        recent.iter().find(|i| i.version == version).cloned()
    }

    /// The metadata image as last published.
    pub fn image(&self) -> Arc<Image> {
        self.shared.images.borrow().clone()
    }

    /// The version of the last published image.
    pub fn metadata_version(&self) -> u64 {
        self.shared.images.borrow().version
    }

    /// How often nodes should heartbeat.
    pub fn heartbeat_interval_ms(&self) -> u64 {
        self.shared.heartbeat_interval_ms
    }

    /// How long a silent node stays alive.
    pub fn session_timeout_ms(&self) -> u64 {
        self.shared.session_timeout_ms
    }

    /// Bytes per topic as the nodes last reported them: (local bytes summed over every
    /// replica, remote bytes summed over partitions as their leaders report them).
    pub fn topic_sizes(&self) -> HashMap<String, (i64, i64)> {
        let sizes = self.shared.sizes.lock().expect("not poisoned");
        let mut out: HashMap<String, (i64, i64)> = Default::default();
        for reports in sizes.values() {
            for p in reports {
                let e = out.entry(p.topic.clone()).or_default();
                e.0 += p.local_bytes;
                e.1 += p.remote_bytes;
            }
        }
        out
    }

    /// A copy of the cluster as it is now (for tests and diagnostics).
    pub async fn snapshot(&self) -> Cluster {
        self.shared.inner.lock().await.cluster.clone()
    }

    /// Ongoing reassignments of the named partitions, or of all with `None`.
    pub async fn list_reassignments(
        &self,
        partitions: Option<&[(String, i32)]>,
    ) -> Vec<OngoingReassignment> {
        self.snapshot().await.list_reassignments(partitions)
    }

    /// Why this controller stopped acting (another writer took over the store), once it has.
    pub fn deposed(&self) -> watch::Receiver<Option<String>> {
        self.shared.deposed.subscribe()
    }

    // ---- nodes ----

    /// Registers a node (again): it gets a new broker epoch.
    pub async fn register(&self, node: NodeRegistration) -> Result<Registered> {
        self.apply(|c, now| {
            let registered = c.register(
                node.node_id,
                &node.host,
                node.port,
                &node.rack,
                &node.incarnation_id,
                now,
            )?;
            c.set_listeners(node.node_id, node.listeners.clone());
            Ok(registered)
        })
        .await?
    }

    /// Liveness from a node, with the sizes of its replicas. Returns the metadata version.
    pub async fn heartbeat(
        &self,
        node: i32,
        broker_epoch: i64,
        sizes: Vec<PartitionSize>,
    ) -> Result<u64> {
        let version = self
            .apply(|c, now| c.heartbeat(node, broker_epoch, now).map(|()| c.version()))
            .await??;
        self.shared
            .sizes
            .lock()
            .expect("not poisoned")
            .insert(node, sizes);
        Ok(version)
    }

    /// A node's metadata watch opened: it counts as a heartbeat.
    pub async fn watch_opened(&self, node: i32, broker_epoch: i64) -> Result<()> {
        self.apply(|c, now| c.stream_opened(node, broker_epoch, now))
            .await
    }

    /// A node's metadata watch ended (its process died, or its connection did): the node is
    /// declared dead after a grace unless it comes back meanwhile.
    pub async fn watch_closed(&self, node: i32, broker_epoch: i64) -> Result<()> {
        self.apply(|c, now| c.stream_lost(node, broker_epoch, now))
            .await
    }

    /// Commits an ISR proposed by a partition's leader.
    pub async fn alter_partition(&self, p: IsrProposal) -> Result<IsrOutcome> {
        self.apply(|c, _| {
            let committed = c.alter_partition(
                p.node_id,
                p.broker_epoch,
                &p.topic,
                p.partition,
                p.leader_epoch,
                p.partition_epoch,
                &p.new_isr,
            );
            // On a refusal, the current state lets the leader catch up.
            let current = c.partition(&p.topic, p.partition).ok().cloned();
            IsrOutcome { committed, current }
        })
        .await
    }

    /// Hands out the next block of producer ids: `(first id, count)`.
    pub async fn allocate_producer_ids(
        &self,
        node: i32,
        broker_epoch: i64,
        at_least: i64,
    ) -> Result<(i64, i32)> {
        self.apply(|c, _| c.allocate_producer_ids(node, broker_epoch, at_least))
            .await?
    }

    /// A node asks to shut down: its leaderships move where another in-sync replica can take
    /// them, and it leaves the ISRs it is not the last member of.
    pub async fn controlled_shutdown(
        &self,
        node: i32,
        broker_epoch: i64,
    ) -> Result<Versioned<ShutdownProgress>> {
        self.apply(|c, now| {
            c.controlled_shutdown(node, broker_epoch, now)
                .map(|value| Versioned {
                    value,
                    metadata_version: c.version(),
                })
        })
        .await?
    }

    // ---- topics ----

    /// Creates topics (or only validates them); each succeeds or is refused on its own.
    pub async fn create_topics(
        &self,
        topics: Vec<NewTopic>,
        validate_only: bool,
    ) -> Result<Versioned<Vec<TopicOutcome>>> {
        self.apply(|c, _| versioned(c, |c| c.create_topics(&topics, validate_only)))
            .await
    }

    /// Deletes topics; an unknown name is refused with [`Error::UnknownTopicOrPartition`].
    pub async fn delete_topics(&self, names: Vec<String>) -> Result<Versioned<Vec<TopicOutcome>>> {
        self.apply(|c, _| versioned(c, |c| c.delete_topics(&names)))
            .await
    }

    /// Grows topics to `(name, count)` partitions each (or only validates it).
    pub async fn create_partitions(
        &self,
        requests: Vec<(String, i32)>,
        validate_only: bool,
    ) -> Result<Versioned<Vec<TopicOutcome>>> {
        self.apply(|c, _| versioned(c, |c| c.create_partitions(&requests, validate_only)))
            .await
    }

    /// Replaces a topic's config overrides with `configs` (the complete set). Returns the
    /// metadata version.
    pub async fn alter_topic_configs(
        &self,
        name: &str,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<u64> {
        self.apply(|c, _| {
            c.alter_topic_configs(name, configs, validate_only)
                .map(|()| c.version())
        })
        .await?
    }

    // ---- security metadata ----

    /// AlterUserScramCredentials: one outcome per user.
    pub async fn alter_scram_credentials(
        &self,
        upsertions: Vec<(String, ScramCredential)>,
        deletions: Vec<(String, ScramMechanism)>,
    ) -> Result<Versioned<Vec<ScramOutcome>>> {
        self.apply(|c, _| versioned(c, |c| c.alter_scram_credentials(upsertions, deletions)))
            .await
    }

    /// CreateAcls: one outcome per binding.
    pub async fn create_acls(&self, acls: Vec<AclBinding>) -> Result<Versioned<Vec<Result<()>>>> {
        self.apply(|c, _| versioned(c, |c| c.create_acls(acls)))
            .await
    }

    /// AlterClientQuotas: one outcome per entry, with Kafka's error code.
    pub async fn alter_client_quotas(
        &self,
        entries: Vec<Alteration>,
        validate_only: bool,
    ) -> Result<Versioned<Vec<std::result::Result<(), QuotaError>>>> {
        self.apply(|c, _| versioned(c, |c| c.alter_client_quotas(entries, validate_only)))
            .await
    }

    /// DeleteAcls: the bindings each filter removed.
    pub async fn delete_acls(
        &self,
        filters: Vec<AclFilter>,
    ) -> Result<Versioned<Vec<Vec<AclBinding>>>> {
        self.apply(|c, _| versioned(c, |c| c.delete_acls(filters)))
            .await
    }

    /// Creates one topic.
    pub async fn create_topic(&self, topic: NewTopic) -> Result<TopicRecord> {
        let name = topic.name.clone();
        single(&name, self.create_topics(vec![topic], false).await?.value)
    }

    /// Grows one topic to `count` partitions.
    pub async fn grow_topic(&self, name: &str, count: i32) -> Result<TopicRecord> {
        let requests = vec![(name.to_string(), count)];
        single(name, self.create_partitions(requests, false).await?.value)
    }

    /// Deletes one topic; returns it as it was.
    pub async fn delete_topic(&self, name: &str) -> Result<TopicRecord> {
        single(
            name,
            self.delete_topics(vec![name.to_string()]).await?.value,
        )
    }

    // ---- operations: elections, reassignments, rebalancing ----

    /// Runs an election on each named partition, or on every partition with `None`.
    pub async fn elect_leaders(
        &self,
        kind: ElectionType,
        partitions: Option<Vec<(String, i32)>>,
    ) -> Result<Versioned<Vec<PartitionOutcome>>> {
        self.apply(|c, _| versioned(c, |c| c.elect_leaders(kind, partitions.as_deref())))
            .await
    }

    /// Starts or cancels partition moves.
    pub async fn alter_reassignments(
        &self,
        requests: Vec<ReassignmentRequest>,
        keep_replication_factor: bool,
    ) -> Result<Versioned<Vec<PartitionOutcome>>> {
        self.apply(|c, _| {
            versioned(c, |c| {
                c.alter_reassignments(&requests, keep_replication_factor)
            })
        })
        .await
    }

    /// Makes `nodes` the cluster's node set and starts the partition moves that drain the
    /// others and balance the load ([`Cluster::rebalance`]), at most `max_in_flight` at once.
    pub async fn rebalance(
        &self,
        nodes: Vec<i32>,
        max_in_flight: usize,
    ) -> Result<RebalanceOutcome> {
        self.apply(|c, _| c.rebalance(&nodes, max_in_flight)).await
    }

    /// Moves leaderships back to preferred replicas where nodes are imbalanced;
    /// [`Self::run_timers`] does this every `leader_balance_interval`.
    pub async fn balance_leaders(&self) -> Result<usize> {
        self.apply(|c, _| c.balance_leaders()).await
    }

    /// Checks deadlines once; [`Self::run_timers`] does this every [`TICK_INTERVAL`].
    pub async fn tick(&self) -> Result<Vec<i32>> {
        self.apply(|c, now| c.tick(now)).await
    }

    /// Checks node deadlines every [`TICK_INTERVAL`] and leader balance every
    /// `leader_balance_interval`, forever (abort the task to stop).
    pub async fn run_timers(self) {
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
        let delta = Delta::between(before.state(), inner.cluster.state());
        if let Err(e) = store.commit(&delta, inner.cluster.state()).await {
            inner.cluster = before;
            if let Error::StoreConflict { reason } = &e {
                tracing::error!(%reason, "metadata store taken over by another writer; stopping");
                self.shared.deposed.send_replace(Some(reason.clone()));
            }
            return Err(e);
        }
        let version = inner.cluster.version();
        log_events(&events, version);
        let image = Arc::new(inner.cluster.image());
        {
            let mut recent = self.shared.recent.lock().expect("not poisoned");
            if recent.len() >= RECENT_IMAGES {
                recent.pop_front();
            }
            recent.push_back(image.clone());
        }
        self.shared.images.send_replace(image);
        Ok(out)
    }
}

/// Runs a batch on the core and pairs its answers with the version after it.
fn versioned<T>(c: &mut Cluster, f: impl FnOnce(&mut Cluster) -> T) -> Versioned<T> {
    let value = f(c);
    Versioned {
        value,
        metadata_version: c.version(),
    }
}

/// The one answer of a one-topic batch.
fn single(name: &str, outcomes: Vec<TopicOutcome>) -> Result<TopicRecord> {
    match outcomes.into_iter().next() {
        Some(o) => o.result,
        // A batch answers every topic it was given; never reached.
        None => Err(Error::InvalidRequest {
            reason: format!("no answer for topic {name}"),
        }),
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

/// Per-partition events of one commit logged one by one at most; the rest at debug level
/// behind one summary line (a node's restart moves every one of its 20,000 leaderships).
const PARTITION_EVENTS_LOGGED: usize = 16;

fn log_events(events: &[Event], version: u64) {
    let (mut partition_events, mut offline) = (0usize, 0usize);
    for event in events {
        let per_partition = matches!(
            event,
            Event::LeaderChanged { .. } | Event::IsrChanged { .. }
        );
        if per_partition {
            partition_events += 1;
            if partition_events > PARTITION_EVENTS_LOGGED {
                if matches!(event, Event::LeaderChanged { leader, .. } if *leader == core::NO_LEADER)
                {
                    offline += 1;
                }
                tracing::debug!(?event, version, "partition event");
                continue;
            }
        }
        log_event(event, version);
    }
    let more = partition_events.saturating_sub(PARTITION_EVENTS_LOGGED);
    if offline > 0 {
        tracing::warn!(more, offline, version, "more leader elections and ISR changes in this commit, some partitions offline (listed at debug level)");
    } else if more > 0 {
        tracing::info!(
            more,
            version,
            "more leader elections and ISR changes in this commit (listed at debug level)"
        );
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::FileStore;

    /// A controller over a fresh file store, with node 1 registered.
    async fn with_one_node(dir: &std::path::Path) -> ControllerHandle {
        let store = Arc::new(FileStore::open(dir).unwrap());
        let controller = ControllerHandle::start(ServiceConfig::default(), store)
            .await
            .unwrap();
        controller
            .register(NodeRegistration {
                node_id: 1,
                host: "h".into(),
                port: 1,
                rack: String::new(),
                incarnation_id: "a".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        controller
    }

    fn topic(name: &str, partitions: i32) -> NewTopic {
        NewTopic {
            name: name.into(),
            partitions,
            replication_factor: 1,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn topic_calls_answer_with_typed_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let controller = with_one_node(dir.path()).await;
        let created = controller.create_topic(topic("t", 1)).await.unwrap();
        assert_eq!(*controller.image().topics["t"], created);
        assert!(matches!(
            controller.create_topic(topic("t", 1)).await,
            Err(Error::TopicAlreadyExists { name }) if name == "t"
        ));
        assert!(matches!(
            controller.create_topic(topic("a/b", 1)).await,
            Err(Error::InvalidTopicName { .. })
        ));
        assert_eq!(
            controller
                .grow_topic("t", 3)
                .await
                .unwrap()
                .partitions
                .len(),
            3
        );
        assert!(matches!(
            controller.grow_topic("t", 2).await,
            Err(Error::InvalidPartitions { .. })
        ));
        let configs = BTreeMap::from([("retention.ms".to_string(), "1".to_string())]);
        let version = controller
            .alter_topic_configs("t", configs.clone(), false)
            .await
            .unwrap();
        assert_eq!(version, controller.metadata_version());
        assert_eq!(controller.image().topics["t"].configs, configs);
        controller.delete_topic("t").await.unwrap();
        assert!(matches!(
            controller.delete_topic("t").await,
            Err(Error::UnknownTopicOrPartition { topic, partition: None }) if topic == "t"
        ));
        assert!(controller.image().topics.is_empty());
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
}
