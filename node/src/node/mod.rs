//! The node's root. It opens and owns the parts — the broker (topics, hosted partitions, the
//! write and read paths), the group coordinator, the controller link and replicator
//! (cluster mode), tiering, and the metrics — runs their background tasks under one
//! shutdown token and task tracker, and routes what a change in one part means for the
//! others: a metadata image's partitions to the broker and replication, its offsets
//! leaderships to the coordinator, its deleted topics to tiering.
//!
//! The parts get narrow interfaces, never the node: the coordinator an [`OffsetsLog`], the
//! controller link a [`ClusterHost`], the replicator and the uploader the partition table.
//! Only the request path (`protocol`, `server`) and this module see the whole node.

pub mod metrics;
mod restore;
pub mod standalone;
mod txn_host;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::Broker;
use crate::config::{FlushPolicy, NodeConfig};
use crate::coordinator::group::GroupConfig;
use crate::coordinator::{CoordinatorConfig, GroupCoordinator, OffsetsLog, OFFSETS_TOPIC};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::log::LogConfig;
use crate::metadata::{ClusterView, ImageCell, MetadataImage};
use crate::replication::cluster::{ClusterHost, ClusterLink, PartitionSize};
use crate::replication::fetcher::{ReplicaSettings, Replicator};
use crate::tiering::Tiering;
use metrics::Metrics;

/// A running strata-node.
pub struct Node {
    /// The validated configuration.
    pub config: Arc<NodeConfig>,
    /// Topics, hosted partitions, and the write and read paths.
    pub broker: Arc<Broker>,
    /// Consumer groups and committed offsets.
    pub groups: Arc<GroupCoordinator>,
    /// Transactional ids and the two-phase end of transactions.
    pub txns: Arc<crate::txn::TransactionCoordinator>,
    /// Connections to other nodes' transaction coordinators, for implicit adds.
    txn_adds: txn_host::Peers,
    /// The link to the controller: `strata-operator` (`--controller`), or the controller
    /// embedded in a standalone node.
    pub cluster: Arc<ClusterLink>,
    /// Followers' fetchers and the leader's ISR upkeep.
    pub replicator: Arc<Replicator>,
    /// Tiered storage, with `--object-store`.
    pub tiering: Option<Arc<Tiering>>,
    /// Request and traffic counters for `--metrics-listen`.
    pub metrics: Metrics,
    /// Listeners' TLS, SASL credentials, the authorizer, connection limits.
    pub security: Arc<crate::security::Security>,
    /// Set once the first image is applied (unhosted directories are removed then).
    first_image_applied: std::sync::atomic::AtomicBool,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    /// The data directory's lock, held for the node's life.
    _lock: std::fs::File,
}

impl Node {
    /// Take the data directory, start the controller link (to `--controller`, or the
    /// embedded controller of a standalone node) and build every part; starts nothing.
    pub async fn open(config: NodeConfig) -> Result<Arc<Node>> {
        let config = Arc::new(config);
        let meta = config.data_dir.join("meta");
        std::fs::create_dir_all(&meta).map_err(|e| Error::io(meta.display().to_string(), e))?;
        let lock = fsutil::lock_exclusive(&meta.join("lock"))?;
        let security = crate::security::Security::open(config.security.clone())?;
        let image = Arc::new(ImageCell::new(MetadataImage::default()));
        let link = Arc::new(match &config.controller {
            Some(urls) => ClusterLink::new(urls, config.node_id, image.clone())?,
            None => ClusterLink::embedded(
                config.node_id,
                image.clone(),
                standalone::open(&config).await?,
            ),
        });
        let broker = {
            let (config, image, link) = (config.clone(), image, link.clone());
            tokio::task::spawn_blocking(move || Broker::open(config, image, link))
                .await
                .map_err(|e| Error::StorageFailed(format!("opening the broker: {e}")))??
        };
        let shutdown = CancellationToken::new();
        let groups = Arc::new(GroupCoordinator::new(
            CoordinatorConfig {
                group: GroupConfig {
                    initial_rebalance_delay: Duration::from_millis(
                        config.group_initial_rebalance_delay_ms,
                    ),
                    min_session_timeout_ms: config.group_min_session_timeout_ms,
                    max_session_timeout_ms: config.group_max_session_timeout_ms,
                },
                offsets_retention: Duration::from_secs(config.offsets_retention_minutes * 60),
            },
            broker.clone() as Arc<dyn OffsetsLog>,
        ));
        let replicator = Replicator::new(
            link.clone(),
            broker.table().clone(),
            broker.tiering.clone(),
            ReplicaSettings {
                fetch_wait_max_ms: config.replica_fetch_wait_max_ms as i32,
                flush: config.flush_policy != FlushPolicy::Never,
                lag_time_max_ms: config.replica_lag_time_max_ms as i64,
            },
            security.clone(),
            shutdown.clone(),
        );
        let tiering = broker.tiering.clone();
        let txn_config = crate::txn::TxnConfig {
            max_timeout_ms: config.transaction_max_timeout_ms,
            id_expiration_ms: config.transactional_id_expiration_ms,
        };
        Ok(Arc::new_cyclic(|me| Node {
            config,
            broker,
            groups,
            txns: Arc::new(crate::txn::TransactionCoordinator::new(
                Arc::new(txn_host::NodeTxnHost::new(me.clone())),
                txn_config,
            )),
            txn_adds: txn_host::Peers::default(),
            cluster: link,
            replicator,
            tiering,
            metrics: Metrics::default(),
            security,
            first_image_applied: std::sync::atomic::AtomicBool::new(false),
            shutdown,
            tasks: TaskTracker::new(),
            _lock: lock,
        }))
    }

    /// Open and start a node and wait for its first metadata image: what a node run in
    /// process (tests, tools) needs before it takes requests.
    pub async fn open_and_start(config: NodeConfig) -> Result<Arc<Node>> {
        let node = Self::open(config).await?;
        node.start();
        node.first_image().await;
        Ok(node)
    }

    /// Start the background work: retention, compaction, the group coordinator's load and
    /// timers, the cluster session and replication, and the tiering uploader.
    pub fn start(self: &Arc<Self>) {
        let every = |ms: u64| Duration::from_millis(ms.max(1));
        let b = self.broker.clone();
        self.periodic(every(self.config.retention_check_interval_ms), move || {
            b.run_retention()
        });
        let b = self.broker.clone();
        self.periodic(every(self.config.compaction_interval_ms), move || {
            b.run_compaction()
        });
        let b = self.broker.clone();
        let expiration_ms = self.config.producer_id_expiration_ms;
        self.periodic(
            every(self.config.producer_id_expiration_check_interval_ms),
            move || b.expire_producers(expiration_ms),
        );
        self.tasks
            .spawn(self.security.clone().run(self.shutdown.clone()));
        let groups = self.groups.clone();
        self.tasks.spawn_blocking(move || groups.load_all());
        let txns = self.txns.clone();
        let stop = self.shutdown.clone();
        self.tasks.spawn(async move {
            // Kafka's transaction.abort.timed.out.transaction.cleanup.interval.ms is 10 s;
            // a second costs little and aborts a timed-out transaction sooner.
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.cancelled() => return,
                }
                txns.tick().await;
            }
        });
        let groups = self.groups.clone();
        let expiry_every = every(self.config.offsets_retention_check_interval_ms);
        let stop = self.shutdown.clone();
        self.tasks.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            let mut last_expiry = tokio::time::Instant::now();
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.cancelled() => return,
                }
                let expire = last_expiry.elapsed() >= expiry_every;
                if expire {
                    last_expiry = tokio::time::Instant::now();
                }
                groups.tick(expire);
            }
        });
        {
            let (link, replicator) = (self.cluster.clone(), self.replicator.clone());
            if link.is_embedded() {
                tracing::info!("standalone: a cluster of one, with the controller in process");
            } else {
                tracing::info!(controller = ?self.config.controller, "cluster mode: joining the controller");
            }
            let advertised = crate::replication::cluster::Advertised {
                host: self.config.advertised_host.clone(),
                port: self.config.advertised_port,
                listeners: self
                    .config
                    .security
                    .listeners
                    .iter()
                    .map(|l| (l.name.clone(), l.advertised_host.clone(), l.advertised_port))
                    .collect(),
            };
            // Weak: the session must not keep a dropped node alive.
            let host = Arc::downgrade(&(self.clone() as Arc<dyn ClusterHost>));
            // The session (heartbeats) goes on through a controlled shutdown; the token is
            // cancelled after it.
            self.tasks.spawn(crate::replication::cluster::run(
                link,
                host,
                advertised,
                self.shutdown.clone(),
            ));
            self.tasks
                .spawn(async move { replicator.isr_maintenance().await });
        }
        if let Some(t) = self.tiering.clone() {
            tracing::info!(object_store = %t.options().url, "tiered storage on");
            self.tasks
                .spawn(crate::tiering::run(t.clone(), self.broker.table().clone()));
            if let Some(from) = self.config.restore_from.clone() {
                tracing::info!(from = %from, "restoring the topics of a bucket prefix");
                self.tasks.spawn(self.clone().restore(t, from));
            }
        }
    }

    /// Run `f` on a blocking thread every `every`, until shutdown.
    fn periodic(&self, every: Duration, f: impl Fn() + Send + Sync + 'static) {
        let stop = self.shutdown.clone();
        let f = Arc::new(f);
        self.tasks.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.cancelled() => return,
                }
                let f = f.clone();
                let _ = tokio::task::spawn_blocking(move || f()).await;
            }
        });
    }

    /// Wait until the first metadata image is applied (a node answers clients only from
    /// then on).
    pub async fn first_image(&self) {
        self.cluster.first_image().await;
    }

    /// Whether shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// Stop: in a cluster, Kafka's controlled shutdown first (leaderships move while this
    /// node still serves); then cancel the background work, wake long-polling fetches and
    /// stop tiering, and wait up to 30 s for `server` and the tracked tasks before closing
    /// every log cleanly.
    pub async fn stop(&self, server: impl std::future::Future<Output = ()>) -> Result<()> {
        // A cluster of one has no other node to hand leaderships to.
        if !self.cluster.is_embedded() {
            let bound = Duration::from_millis(self.config.controlled_shutdown_timeout_ms);
            self.cluster.controlled_shutdown(bound).await;
        }
        self.shutdown.cancel();
        self.broker.table().notify_appended();
        if let Some(t) = &self.tiering {
            t.stop();
        }
        self.tasks.close();
        let drain = async {
            server.await;
            self.tasks.wait().await;
        };
        if tokio::time::timeout(Duration::from_secs(30), drain)
            .await
            .is_err()
        {
            tracing::warn!("shutdown deadline passed with connections or an upload still open");
        }
        self.broker.shutdown()
    }

    /// A token cancelled when shutdown begins.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}

impl Drop for Node {
    /// A node dropped without `stop` (tests, a failed start) still ends its background work.
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A topic's entry in the bucket's catalog.
fn descriptor(
    name: &str,
    m: &crate::metadata::TopicMeta,
    view: &ClusterView,
) -> crate::tiering::catalog::TopicDescriptor {
    let rf = view
        .assignment(name, 0)
        .map_or(m.replication_factor, |a| a.replicas.len() as i16);
    crate::tiering::catalog::TopicDescriptor::new(
        name,
        m.id,
        m.partitions,
        rf.max(1),
        m.configs.clone(),
    )
}

impl ClusterHost for Node {
    fn apply_image(
        &self,
        meta: MetadataImage,
        view: ClusterView,
        changed: Option<&BTreeSet<String>>,
    ) -> Result<()> {
        self.security.apply_metadata(
            view.scram_credentials.iter().cloned(),
            &view.acls,
            view.client_quotas.clone(),
        );
        let me = self.cluster.me;
        let now = fsutil::now_ms();
        // Partitions this node hosts now, in the role the assignment gives it: of the topics
        // that changed (the others are as the last image left them).
        let touched = |name: &str| changed.is_none_or(|c| c.contains(name));
        let hosted: Vec<_> = meta
            .topics
            .iter()
            .filter(|(name, _)| touched(name))
            .flat_map(|(name, topic)| {
                let view = &view;
                (0..topic.partitions).filter_map(move |p| {
                    let a = view.assignment(name, p)?;
                    a.replicas.contains(&me).then_some((name, topic, p, a))
                })
            })
            .collect();
        let offsets_moves = parking_lot::Mutex::new(Vec::new());
        fsutil::for_each_parallel(&hosted, |&(name, topic, p, a)| {
            let part = self.broker.host_partition(name, topic, p)?;
            let was_leader = part.is_leader();
            crate::replication::roles::take_up(&part, a, me, now)?;
            if (name == OFFSETS_TOPIC || name == crate::txn::TXN_TOPIC)
                && was_leader != part.is_leader()
            {
                offsets_moves
                    .lock()
                    .push((name == OFFSETS_TOPIC, p, part.is_leader()));
            }
            Ok(())
        })?;
        let mut offsets_leadership = offsets_moves.into_inner();
        // Partitions no longer hosted here (deleted topics, moved replicas) go.
        for part in self.broker.table().all() {
            if !touched(&part.topic) {
                continue;
            }
            let keep = meta
                .topics
                .get(&part.topic)
                .is_some_and(|m| m.id == part.log().topic_id())
                && view
                    .assignment(&part.topic, part.index)
                    .is_some_and(|a| a.replicas.contains(&me));
            if !keep {
                let was_leader = part.is_leader();
                self.broker.drop_partition(&part);
                if (part.topic == OFFSETS_TOPIC || part.topic == crate::txn::TXN_TOPIC)
                    && was_leader
                {
                    offsets_leadership.push((part.topic == OFFSETS_TOPIC, part.index, false));
                }
            }
        }
        // Topics deleted by this image: their tiered data and catalog entry go too, unless
        // the operator marked the data to keep (deletionPolicy: Retain). Every node that knew
        // the topic asks; deleting objects is idempotent.
        if let Some(t) = &self.tiering {
            for old in self.broker.topics() {
                if meta.topics.values().any(|m| m.id == old.meta.id) {
                    continue;
                }
                let cfg = LogConfig::resolve(&old.meta.configs, &self.config.topic_defaults);
                let retain = old
                    .meta
                    .configs
                    .get(strata_controller::RETAIN_REMOTE_DATA_CONFIG)
                    .is_some_and(|v| v == "true");
                if !(cfg.remote_storage && retain) {
                    t.delete_topic_data(old.meta.id);
                } else {
                    tracing::info!(topic = %old.name, topic_id = %old.meta.id, "topic deleted; its tiered data is retained");
                    t.retire_topic(descriptor(&old.name, &old.meta, &view));
                }
            }
            // The catalog entries this node keeps: topics whose partition 0 it leads.
            t.describe_topics(
                meta.topics
                    .iter()
                    .filter(|(name, m)| {
                        !m.internal && view.assignment(name, 0).is_some_and(|a| a.leader == me)
                    })
                    .map(|(name, m)| descriptor(name, m, &view))
                    .collect(),
            );
        }
        self.broker.image().install(meta, view);
        for (offsets, p, leading) in offsets_leadership {
            if offsets {
                self.groups.on_offsets_leadership(p, leading);
            } else {
                self.txns.on_leadership(p, leading);
            }
        }
        self.broker.table().notify_appended();
        self.replicator.ensure_fetchers();
        if !self
            .first_image_applied
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            self.broker.remove_unhosted_dirs()?;
        }
        Ok(())
    }

    fn partition_sizes(&self) -> Vec<PartitionSize> {
        let remote: HashMap<(String, i32), u64> = self
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
        self.broker
            .table()
            .all()
            .iter()
            .map(|p| PartitionSize {
                topic: p.topic.clone(),
                partition: p.index,
                local_bytes: p.size_bytes(),
                remote_bytes: if p.is_leader() {
                    remote
                        .get(&(p.topic.clone(), p.index))
                        .copied()
                        .unwrap_or(0)
                } else {
                    0
                },
            })
            .collect()
    }
}
