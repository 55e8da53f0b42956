//! The controller's pure core: cluster metadata as plain data and the rules that change it
//! (registration, liveness, leader election, ISR commits, topic administration, placement,
//! partition reassignment).
//!
//! Owns: [`State`] (the persisted metadata and its JSON format), [`Cluster`] (state plus
//! liveness, with every rule), and the plain request and answer types of those rules
//! ([`NewTopic`], [`TopicOutcome`], [`Image`], ...).
//!
//! May call: nothing outside itself but the crate's [`Error`]. Nothing here does I/O, reads a
//! clock, spawns a task or knows the wire format: callers pass `now_ms` (any monotonic
//! millisecond clock), persist [`State`] themselves and turn [`Image`] into whatever they
//! publish, so every rule is unit-tested directly. Every method that changes the metadata
//! image bumps [`State::version`] exactly once.

mod balance;
// A change of the state as data, what the metadata log stores.
mod delta;
mod placement;
mod reassign;
// Cluster-wide security metadata: SCRAM credentials, ACLs, client quotas.
mod security;
mod shutdown;
mod topics;
// Kafka admin APIs for operations: ElectLeaders, Alter/ListPartitionReassignments.
mod alter_reassignments;
mod elect;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use strata_security::acl::AclBinding;
use strata_security::quota::QuotaMap;
use strata_security::scram::{ScramCredential, ScramMechanism};

pub use delta::{Change, Delta, TopicMeta};
pub use placement::{place, Load};
pub use reassign::{plan, Blocked, Move, Plan, RebalanceOutcome};
pub use shutdown::ShutdownProgress;
pub use topics::{validate_topic_name, NewTopic, TopicOutcome};
// Kafka admin APIs for operations.
pub use alter_reassignments::{OngoingReassignment, ReassignmentRequest};
pub use elect::{ElectionType, PartitionOutcome};
pub use security::ScramOutcome;

/// The persisted format this build writes and the only one it reads.
pub const FORMAT_VERSION: u64 = 1;
/// `leader` of a partition with no eligible replica alive.
pub const NO_LEADER: i32 = -1;
/// Producer ids handed out per AllocateProducerIds call (Kafka's block size).
pub const PRODUCER_ID_BLOCK: i32 = 1000;
/// Topic config that allows electing a replica outside the ISR when no ISR member is alive.
pub const UNCLEAN_LEADER_ELECTION: &str = "unclean.leader.election.enable";
/// The consumer-offsets topic: internal, with its own default size.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// The transaction-state topic: internal.
pub const TRANSACTION_STATE_TOPIC: &str = "__transaction_state";
/// Upper bound on partitions per topic, so a request cannot make the controller allocate
/// without limit.
pub const MAX_PARTITIONS: i32 = 10_000;

/// The persisted cluster metadata. Liveness is deliberately absent: it is re-learnt from
/// heartbeats after a controller restart.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Always [`FORMAT_VERSION`] when written by this build.
    pub format_version: u64,
    /// Kafka cluster id (22 characters of URL-safe base64, as Kafka makes them).
    pub cluster_id: String,
    /// Metadata version: +1 on every change of the image nodes see.
    pub version: u64,
    /// The broker epoch the next (re-)registration with a new incarnation receives.
    pub next_broker_epoch: i64,
    /// The first producer id not yet handed out.
    pub producer_id_block_end: i64,
    /// Registered nodes by id.
    pub nodes: BTreeMap<i32, NodeRecord>,
    /// Topics by name. Shared between states: a commit copies only the topics it changes,
    /// and publishing an image copies none.
    pub topics: BTreeMap<String, Arc<TopicRecord>>,
    /// Nodes new replicas are not placed on: registered but outside the node set of the last
    /// [`Cluster::rebalance`] (being drained, or gone).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub excluded_nodes: BTreeSet<i32>,
    /// The node set replicas were last fully balanced over; a rebalance over another set
    /// moves replicas to even the load, one over the same set only drains.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub balanced_for: BTreeSet<i32>,
    /// SCRAM credentials by user and mechanism (salted and hashed; never passwords).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub scram_credentials: BTreeMap<String, BTreeMap<ScramMechanism, ScramCredential>>,
    /// Kafka ACLs.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub acls: BTreeSet<AclBinding>,
    /// Client quotas (KIP-546) by user and/or client-id entity.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        with = "strata_security::quota::as_list"
    )]
    pub client_quotas: QuotaMap,
}

/// A registered node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Kafka listener host clients and followers connect to.
    pub host: String,
    /// Kafka listener port.
    pub port: i32,
    /// Rack, empty when unset.
    pub rack: String,
    /// Epoch of the node's current registration; every call carries it.
    pub broker_epoch: i64,
    /// Random per process start: a new one means the node restarted.
    pub incarnation_id: String,
    /// Every named listener's advertised address (name -> (host, port)); `host`/`port` is
    /// the one other nodes use.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub listeners: BTreeMap<String, (String, i32)>,
}

/// A topic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRecord {
    /// Kafka topic id.
    pub topic_id: uuid::Uuid,
    /// The complete set of config overrides.
    pub configs: BTreeMap<String, String>,
    /// Internal topics (consumer offsets, transaction state) are flagged in Metadata.
    pub internal: bool,
    /// Partition `i` is `partitions[i]`.
    pub partitions: Vec<PartitionRecord>,
}

impl TopicRecord {
    /// Whether this topic may elect a leader outside the ISR.
    pub fn unclean_election_enabled(&self) -> bool {
        self.configs
            .get(UNCLEAN_LEADER_ELECTION)
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
    }

    /// The replication factor, taken from partition 0 (all partitions share it).
    pub fn replication_factor(&self) -> usize {
        self.partitions.first().map_or(0, |p| p.replicas.len())
    }
}

/// One partition's assignment and leadership.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionRecord {
    /// Assigned replicas, preferred leader first.
    pub replicas: Vec<i32>,
    /// Current leader, or [`NO_LEADER`].
    pub leader: i32,
    /// +1 on every leader change (including to and from [`NO_LEADER`]).
    pub leader_epoch: i32,
    /// In-sync replicas. Never empty: the last member stays even when it dies, so it is the
    /// one elected when it returns.
    pub isr: Vec<i32>,
    /// +1 on every change of leader, ISR or replicas.
    pub partition_epoch: i32,
    /// A reassignment in flight: the replicas the partition is moving to. Meanwhile
    /// `replicas` is these followed by the ones leaving, so no copy goes before the new
    /// ones are in the ISR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_replicas: Option<Vec<i32>>,
    /// The replicas before the move in flight (set with `target_replicas`), so a cancel
    /// can go back to them and ListPartitionReassignments can tell adding from removing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_replicas: Option<Vec<i32>>,
}

impl State {
    /// An empty cluster.
    pub fn new(cluster_id: impl Into<String>) -> Self {
        State {
            format_version: FORMAT_VERSION,
            cluster_id: cluster_id.into(),
            version: 1,
            next_broker_epoch: 1,
            producer_id_block_end: 0,
            nodes: BTreeMap::new(),
            topics: BTreeMap::new(),
            excluded_nodes: BTreeSet::new(),
            balanced_for: BTreeSet::new(),
            scram_credentials: BTreeMap::new(),
            acls: BTreeSet::new(),
            client_quotas: QuotaMap::new(),
        }
    }

    /// Serialised form (compact JSON: with 100,000 partitions the indentation alone would be
    /// megabytes; `jq` reads it).
    pub fn to_json(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self).map_err(Error::EncodeState)
    }

    /// Parses a stored state, refusing a format version this build does not know. `origin`
    /// names where the bytes came from, for the error message.
    pub fn from_json(bytes: &[u8], origin: &str) -> Result<State> {
        let corrupt = |source| Error::CorruptState {
            path: origin.to_string(),
            source,
        };
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(corrupt)?;
        let found = value
            .get("format_version")
            .and_then(|v| v.as_u64())
            .unwrap_or(0);
        if found != FORMAT_VERSION {
            return Err(Error::UnknownStateFormat {
                path: origin.to_string(),
                found,
                supported: FORMAT_VERSION,
            });
        }
        serde_json::from_value(value).map_err(corrupt)
    }
}

/// Tunables of the rules, fixed at start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// A node not heard from for this long is dead.
    pub session_timeout_ms: u64,
    /// Replication factor of a topic created with -1.
    pub default_replication_factor: i32,
    /// Partitions of a topic created with -1.
    pub num_partitions: i32,
    /// Replication factor of `__consumer_offsets` created with -1.
    pub offsets_topic_replication_factor: i32,
    /// Partitions of `__consumer_offsets` created with -1.
    pub offsets_topic_num_partitions: i32,
    /// A node whose metadata stream broke (its process died, or its connection did) is
    /// declared dead this long after, unless it heartbeats or watches again meanwhile.
    pub stream_loss_grace_ms: u64,
    /// Kafka's `leader.imbalance.per.broker.percentage`: a node that is the preferred
    /// leader of more partitions than it leads, by more than this share, gets them back.
    pub leader_imbalance_percentage: u32,
}

impl Default for Config {
    /// Kafka's defaults.
    fn default() -> Self {
        Config {
            session_timeout_ms: 6000,
            default_replication_factor: 1,
            num_partitions: 1,
            offsets_topic_replication_factor: 3,
            offsets_topic_num_partitions: 50,
            stream_loss_grace_ms: 500,
            leader_imbalance_percentage: 10,
        }
    }
}

/// Something that happened, for the host to log. The core collects them instead of logging so
/// that it stays free of side effects; [`Cluster::take_events`] drains them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A node registered (`restarted`: it came back with a new incarnation).
    NodeRegistered {
        node: i32,
        broker_epoch: i64,
        restarted: bool,
    },
    /// A node became alive (first registration, return after death, or restart).
    NodeAlive { node: i32 },
    /// A node missed its deadline or restarted, and was fenced.
    NodeDead { node: i32 },
    /// A node asked to shut down: it leads nothing another in-sync replica can take, and it
    /// left every ISR it was not the last member of.
    NodeShuttingDown { node: i32 },
    /// A dead node outside the cluster's node set holds no replica any more and was removed
    /// from the metadata (a scale-down finished).
    NodeUnregistered { node: i32 },
    /// A partition's leader changed; `leader` is [`NO_LEADER`] when it went offline.
    LeaderChanged {
        topic: String,
        partition: i32,
        leader: i32,
        leader_epoch: i32,
        unclean: bool,
    },
    /// A partition's ISR changed.
    IsrChanged {
        topic: String,
        partition: i32,
        isr: Vec<i32>,
        partition_epoch: i32,
    },
    /// A topic was created.
    TopicCreated {
        topic: String,
        partitions: usize,
        replication_factor: usize,
    },
    /// A topic was deleted.
    TopicDeleted { topic: String },
    /// A topic grew.
    PartitionsCreated { topic: String, count: usize },
    /// A topic's config overrides were replaced.
    TopicConfigsAltered { topic: String },
    /// A partition started moving from `from` to `to` (its replicas are now the union).
    ReassignmentStarted {
        topic: String,
        partition: i32,
        from: Vec<i32>,
        to: Vec<i32>,
    },
    /// Every new replica of a moving partition reached the ISR; the old ones were dropped.
    ReassignmentCompleted {
        topic: String,
        partition: i32,
        replicas: Vec<i32>,
    },
}

/// Result of a registration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Registered {
    /// The epoch the node carries from now on.
    pub broker_epoch: i64,
    /// The node came back with a new incarnation and was fenced first.
    pub restarted: bool,
}

/// The metadata image: what nodes watch and in-process callers read, as plain data. The
/// gRPC service turns it into the wire message; nothing here knows that format.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Image {
    /// Metadata version ([`State::version`]).
    pub version: u64,
    /// Kafka cluster id.
    pub cluster_id: String,
    /// The node Kafka clients are told is the controller (the lowest alive one), or
    /// [`NO_LEADER`] when none is alive.
    pub controller_id: i32,
    /// Every registered node by id, with its liveness.
    pub nodes: BTreeMap<i32, ImageNode>,
    /// Every topic by name.
    pub topics: BTreeMap<String, Arc<TopicRecord>>,
    /// SCRAM credentials by user and mechanism.
    pub scram_credentials: BTreeMap<String, BTreeMap<ScramMechanism, ScramCredential>>,
    /// Kafka ACLs.
    pub acls: BTreeSet<AclBinding>,
    /// Client quotas by entity.
    pub client_quotas: QuotaMap,
}

/// A registered node as the image shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageNode {
    /// Kafka listener host.
    pub host: String,
    /// Kafka listener port.
    pub port: i32,
    /// Rack, empty when unset.
    pub rack: String,
    /// Heard from within the session timeout.
    pub alive: bool,
    /// Advertised address of every named listener.
    pub listeners: BTreeMap<String, (String, i32)>,
}

/// Runtime-only liveness of a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Liveness {
    deadline_ms: u64,
    /// Heard from since this controller started. Nodes recovered from the store are alive but
    /// unconfirmed until they register or heartbeat; confirming one may elect it.
    confirmed: bool,
    /// In a controlled shutdown: alive (it still serves and replicates) but never elected,
    /// never added to an ISR and never given new replicas. Cleared only by a new incarnation.
    shutting_down: bool,
}

/// Whether `node` may lead or join an ISR: alive and not shutting down.
fn eligible(live: &BTreeMap<i32, Liveness>, node: i32) -> bool {
    live.get(&node).is_some_and(|l| !l.shutting_down)
}

/// The metadata plus liveness, with every rule that changes them.
///
/// `state` sits behind an `Arc` so a host can keep a cheap snapshot for rollback
/// ([`Cluster::clone`]) and pay for a deep copy only when a call really changes something.
#[derive(Clone, Debug)]
pub struct Cluster {
    state: Arc<State>,
    config: Config,
    live: BTreeMap<i32, Liveness>,
    /// A change to the image happened in the current call; the version is bumped once at its end.
    dirty: bool,
    events: Vec<Event>,
}

impl Cluster {
    /// A new, empty cluster.
    pub fn new(cluster_id: impl Into<String>, config: Config) -> Self {
        Cluster::recover(State::new(cluster_id), config, 0)
    }

    /// A cluster recovered from stored state. Every known node is given one session timeout
    /// from `now_ms` to reconnect, so a controller restart moves no leadership when nodes
    /// come back in time.
    pub fn recover(state: State, config: Config, now_ms: u64) -> Self {
        let deadline_ms = now_ms.saturating_add(config.session_timeout_ms);
        let live = state
            .nodes
            .keys()
            .map(|&id| {
                (
                    id,
                    Liveness {
                        deadline_ms,
                        confirmed: false,
                        shutting_down: false,
                    },
                )
            })
            .collect();
        Cluster {
            state: Arc::new(state),
            config,
            live,
            dirty: false,
            events: Vec::new(),
        }
    }

    /// The current metadata.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The rules' tunables.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The metadata version.
    pub fn version(&self) -> u64 {
        self.state.version
    }

    /// Whether the node is currently considered alive.
    pub fn is_alive(&self, node: i32) -> bool {
        self.live.contains_key(&node)
    }

    /// Ids of alive nodes, ascending.
    pub fn alive_nodes(&self) -> Vec<i32> {
        self.live.keys().copied().collect()
    }

    /// Whether the node is alive and may lead or join ISRs (not in a controlled shutdown).
    pub fn is_eligible(&self, node: i32) -> bool {
        eligible(&self.live, node)
    }

    /// Alive nodes new replicas may be placed on (not excluded by a rebalance, not shutting
    /// down), ascending.
    pub fn placement_nodes(&self) -> Vec<i32> {
        self.live
            .iter()
            .filter(|(n, l)| !l.shutting_down && !self.state.excluded_nodes.contains(n))
            .map(|(&n, _)| n)
            .collect()
    }

    /// Drains what happened since the last call.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    fn state_mut(&mut self) -> &mut State {
        self.dirty = true;
        Arc::make_mut(&mut self.state)
    }

    /// Ends a public call: bumps the version once if anything changed.
    fn finish(&mut self) {
        if self.dirty {
            self.dirty = false;
            let state = Arc::make_mut(&mut self.state);
            state.version = state.version.saturating_add(1);
        }
    }

    /// A node announces itself. A new incarnation gets a new broker epoch; if the node was
    /// still alive (a quick restart) it is first fenced as if it had died, since whatever it
    /// led or replicated before may be behind. The same incarnation (a reconnect) keeps its
    /// epoch and changes no partition.
    pub fn register(
        &mut self,
        node: i32,
        host: &str,
        port: i32,
        rack: &str,
        incarnation_id: &str,
        now_ms: u64,
    ) -> Result<Registered> {
        if node < 0 {
            return Err(Error::InvalidRequest {
                reason: format!("node id {node} is negative"),
            });
        }
        if host.is_empty() || host.len() > 255 {
            return Err(Error::InvalidRequest {
                reason: format!("node {node}: host must be 1..=255 bytes"),
            });
        }
        if !(1..=65535).contains(&port) {
            return Err(Error::InvalidRequest {
                reason: format!("node {node}: port {port} is outside 1..=65535"),
            });
        }
        let record = NodeRecord {
            host: host.to_string(),
            port,
            rack: rack.to_string(),
            broker_epoch: 0,
            incarnation_id: incarnation_id.to_string(),
            listeners: self
                .state
                .nodes
                .get(&node)
                .map(|n| n.listeners.clone())
                .unwrap_or_default(),
        };
        let result = match self.state.nodes.get(&node) {
            Some(existing) if existing.incarnation_id == incarnation_id => {
                let broker_epoch = existing.broker_epoch;
                let same_address =
                    existing.host == host && existing.port == port && existing.rack == rack;
                if !same_address {
                    self.state_mut().nodes.insert(
                        node,
                        NodeRecord {
                            broker_epoch,
                            ..record
                        },
                    );
                }
                self.mark_alive(node, now_ms);
                Registered {
                    broker_epoch,
                    restarted: false,
                }
            }
            existing => {
                let restarted = existing.is_some();
                if restarted && self.live.remove(&node).is_some() {
                    self.fence(node);
                    self.complete_reassignments();
                }
                let state = self.state_mut();
                let broker_epoch = state.next_broker_epoch;
                state.next_broker_epoch = broker_epoch.saturating_add(1);
                state.nodes.insert(
                    node,
                    NodeRecord {
                        broker_epoch,
                        ..record
                    },
                );
                self.events.push(Event::NodeRegistered {
                    node,
                    broker_epoch,
                    restarted,
                });
                self.mark_alive(node, now_ms);
                Registered {
                    broker_epoch,
                    restarted,
                }
            }
        };
        self.finish();
        Ok(result)
    }

    /// Liveness from a node carrying its current broker epoch. A node the controller had
    /// declared dead comes back alive (it was fenced meanwhile, so it rejoins ISRs only
    /// through its leaders' AlterPartition).
    pub fn heartbeat(&mut self, node: i32, broker_epoch: i64, now_ms: u64) -> Result<()> {
        self.check_epoch(node, broker_epoch)?;
        self.mark_alive(node, now_ms);
        self.finish();
        Ok(())
    }

    /// Declares dead every node past its deadline and moves its leaderships. Returns the
    /// nodes that died.
    pub fn tick(&mut self, now_ms: u64) -> Vec<i32> {
        let expired: Vec<i32> = self
            .live
            .iter()
            .filter(|(_, l)| l.deadline_ms <= now_ms)
            .map(|(&id, _)| id)
            .collect();
        // Remove all of them before electing, so no dying node is elected in passing.
        for node in &expired {
            self.live.remove(node);
        }
        for &node in &expired {
            self.fence(node);
        }
        // An unclean election may have left a moving partition's ISR inside its target.
        self.complete_reassignments();
        self.forget_departed();
        self.finish();
        expired
    }

    /// Commits an ISR proposed by a partition's leader (Kafka's AlterPartition rules).
    #[allow(clippy::too_many_arguments)]
    pub fn alter_partition(
        &mut self,
        node: i32,
        broker_epoch: i64,
        topic: &str,
        partition: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        new_isr: &[i32],
    ) -> Result<PartitionRecord> {
        self.check_epoch(node, broker_epoch)?;
        let current = self.partition(topic, partition)?;
        if current.leader != node {
            return Err(Error::NotLeader {
                topic: topic.to_string(),
                partition,
                node,
                leader: current.leader,
            });
        }
        if current.leader_epoch != leader_epoch {
            return Err(Error::FencedLeaderEpoch {
                topic: topic.to_string(),
                partition,
                sent: leader_epoch,
                current: current.leader_epoch,
            });
        }
        if current.partition_epoch != partition_epoch {
            return Err(Error::InvalidUpdateVersion {
                topic: topic.to_string(),
                partition,
                sent: partition_epoch,
                current: current.partition_epoch,
            });
        }
        let ineligible = |reason: String| Error::IneligibleReplica {
            topic: topic.to_string(),
            partition,
            reason,
        };
        if !new_isr.contains(&node) {
            return Err(ineligible(format!("leader {node} is not in it")));
        }
        for (i, r) in new_isr.iter().enumerate() {
            if !current.replicas.contains(r) {
                return Err(ineligible(format!("{r} is not a replica")));
            }
            if new_isr[..i].contains(r) {
                return Err(ineligible(format!("{r} appears twice")));
            }
            if !current.isr.contains(r) && !self.is_alive(*r) {
                return Err(ineligible(format!("{r} is not alive")));
            }
            if !current.isr.contains(r) && !self.is_eligible(*r) {
                return Err(ineligible(format!("{r} is shutting down")));
            }
        }
        if current.isr.as_slice() == new_isr {
            // Nothing to commit; answering with the current state keeps the leader in step.
            return Ok(current.clone());
        }
        let p = self
            .state_mut()
            .topics
            .get_mut(topic)
            .and_then(|t| Arc::make_mut(t).partitions.get_mut(partition as usize));
        let committed = match p {
            Some(p) => {
                p.isr = new_isr.to_vec();
                p.partition_epoch = p.partition_epoch.saturating_add(1);
                p.clone()
            }
            // Looked up above under the same &mut self; unreachable, but never panic.
            None => {
                return Err(Error::UnknownTopicOrPartition {
                    topic: topic.to_string(),
                    partition: Some(partition),
                })
            }
        };
        self.events.push(Event::IsrChanged {
            topic: topic.to_string(),
            partition,
            isr: committed.isr.clone(),
            partition_epoch: committed.partition_epoch,
        });
        // A new replica joining the ISR may finish a reassignment. The leader is answered
        // with the ISR it proposed; the completion reaches it with the next image.
        self.complete_reassignments();
        self.finish();
        Ok(committed)
    }

    /// Hands out the next block of producer ids: `(first id, count)`.
    pub fn allocate_producer_ids(
        &mut self,
        node: i32,
        broker_epoch: i64,
        at_least: i64,
    ) -> Result<(i64, i32)> {
        self.check_epoch(node, broker_epoch)?;
        let start = self.state.producer_id_block_end.max(at_least);
        let end = start
            .checked_add(i64::from(PRODUCER_ID_BLOCK))
            .ok_or(Error::ProducerIdsExhausted)?;
        self.state_mut().producer_id_block_end = end;
        self.finish();
        Ok((start, PRODUCER_ID_BLOCK))
    }

    /// One partition, or UNKNOWN_TOPIC_OR_PARTITION.
    pub fn partition(&self, topic: &str, partition: i32) -> Result<&PartitionRecord> {
        usize::try_from(partition)
            .ok()
            .and_then(|i| self.state.topics.get(topic)?.partitions.get(i))
            .ok_or_else(|| Error::UnknownTopicOrPartition {
                topic: topic.to_string(),
                partition: Some(partition),
            })
    }

    /// The image nodes watch: every node with its liveness, every topic.
    pub fn image(&self) -> Image {
        let nodes = self
            .state
            .nodes
            .iter()
            .map(|(&id, n)| {
                let node = ImageNode {
                    host: n.host.clone(),
                    port: n.port,
                    rack: n.rack.clone(),
                    alive: self.is_alive(id),
                    listeners: n.listeners.clone(),
                };
                (id, node)
            })
            .collect();
        Image {
            version: self.state.version,
            cluster_id: self.state.cluster_id.clone(),
            // Kafka clients send controller-bound requests to this node; any alive node
            // forwards them, and the lowest id is stable while it lives. A node shutting
            // down is passed over while another is there.
            controller_id: self
                .live
                .iter()
                .find(|(_, l)| !l.shutting_down)
                .or_else(|| self.live.iter().next())
                .map_or(NO_LEADER, |(&id, _)| id),
            nodes,
            topics: self.state.topics.clone(),
            scram_credentials: self.state.scram_credentials.clone(),
            acls: self.state.acls.clone(),
            client_quotas: self.state.client_quotas.clone(),
        }
    }

    fn check_epoch(&self, node: i32, broker_epoch: i64) -> Result<()> {
        let current = self.state.nodes.get(&node).map(|n| n.broker_epoch);
        if current == Some(broker_epoch) {
            Ok(())
        } else {
            Err(Error::StaleBrokerEpoch {
                node,
                sent: broker_epoch,
                current,
            })
        }
    }

    /// Refreshes a node's deadline. A node that was dead, or recovered but unconfirmed, may
    /// now lead partitions that have no leader.
    fn mark_alive(&mut self, node: i32, now_ms: u64) {
        let deadline_ms = now_ms.saturating_add(self.config.session_timeout_ms);
        let shutting_down = self.live.get(&node).is_some_and(|l| l.shutting_down);
        let previous = self.live.insert(
            node,
            Liveness {
                deadline_ms,
                confirmed: true,
                shutting_down,
            },
        );
        match previous {
            Some(l) if l.confirmed => {}
            Some(_) => {
                self.elect_leaderless();
                self.complete_reassignments();
            }
            None => {
                self.dirty = true;
                self.events.push(Event::NodeAlive { node });
                self.elect_leaderless();
                self.complete_reassignments();
            }
        }
    }

    /// Fences a node no longer in `live`: it leaves every ISR it is not the last member of,
    /// and every partition it led gets a new leader.
    fn fence(&mut self, node: i32) {
        self.dirty = true;
        self.events.push(Event::NodeDead { node });
        let live = &self.live;
        let state = Arc::make_mut(&mut self.state);
        for (name, t) in state.topics.iter_mut() {
            // Topics shared with earlier states are copied only when they change.
            if !t
                .partitions
                .iter()
                .any(|p| p.leader == node || (p.isr.contains(&node) && p.isr.len() > 1))
            {
                continue;
            }
            let t = Arc::make_mut(t);
            let unclean = t.unclean_election_enabled();
            for (i, p) in t.partitions.iter_mut().enumerate() {
                let mut isr_changed = false;
                if p.isr.contains(&node) && p.isr.len() > 1 {
                    p.isr.retain(|&r| r != node);
                    isr_changed = true;
                }
                let mut leader_changed = None;
                if p.leader == node {
                    p.leader = NO_LEADER;
                    let unclean_used = elect(p, live, unclean).unwrap_or(false);
                    isr_changed |= unclean_used;
                    p.leader_epoch = p.leader_epoch.saturating_add(1);
                    leader_changed = Some(unclean_used);
                }
                if isr_changed || leader_changed.is_some() {
                    p.partition_epoch = p.partition_epoch.saturating_add(1);
                }
                push_partition_events(&mut self.events, name, i, p, isr_changed, leader_changed);
            }
        }
    }

    /// Elects a leader for every partition without one, where an eligible replica is alive.
    fn elect_leaderless(&mut self) {
        let needed = self.state.topics.values().any(|t| {
            t.partitions
                .iter()
                .any(|p| p.leader == NO_LEADER && p.replicas.iter().any(|r| self.is_alive(*r)))
        });
        if !needed {
            return;
        }
        let live = &self.live;
        let state = Arc::make_mut(&mut self.state);
        for (name, t) in state.topics.iter_mut() {
            if t.partitions.iter().all(|p| p.leader != NO_LEADER) {
                continue;
            }
            let t = Arc::make_mut(t);
            let unclean = t.unclean_election_enabled();
            for (i, p) in t.partitions.iter_mut().enumerate() {
                if p.leader != NO_LEADER {
                    continue;
                }
                if let Some(unclean_used) = elect(p, live, unclean) {
                    self.dirty = true;
                    p.leader_epoch = p.leader_epoch.saturating_add(1);
                    p.partition_epoch = p.partition_epoch.saturating_add(1);
                    push_partition_events(
                        &mut self.events,
                        name,
                        i,
                        p,
                        unclean_used,
                        Some(unclean_used),
                    );
                }
            }
        }
    }
}

/// Picks a leader for a partition that has none: the first replica (preferred order) alive
/// and in the ISR; failing that, when `unclean` allows, the first alive replica with the ISR
/// reset to it. Returns whether the election was unclean, or `None` if nobody is eligible.
fn elect(p: &mut PartitionRecord, live: &BTreeMap<i32, Liveness>, unclean: bool) -> Option<bool> {
    // A replica in a controlled shutdown leads only when no other in-sync one is alive: it
    // still serves until it stops, which beats an offline partition.
    if let Some(&r) = p
        .replicas
        .iter()
        .find(|&&r| eligible(live, r) && p.isr.contains(&r))
        .or_else(|| {
            p.replicas
                .iter()
                .find(|r| live.contains_key(r) && p.isr.contains(r))
        })
    {
        p.leader = r;
        return Some(false);
    }
    if unclean {
        if let Some(&r) = p
            .replicas
            .iter()
            .find(|&&r| eligible(live, r))
            .or_else(|| p.replicas.iter().find(|r| live.contains_key(r)))
        {
            p.leader = r;
            p.isr = vec![r];
            return Some(true);
        }
    }
    None
}

fn push_partition_events(
    events: &mut Vec<Event>,
    topic: &str,
    index: usize,
    p: &PartitionRecord,
    isr_changed: bool,
    leader_changed: Option<bool>,
) {
    let partition = i32::try_from(index).unwrap_or(i32::MAX);
    if let Some(unclean) = leader_changed {
        events.push(Event::LeaderChanged {
            topic: topic.to_string(),
            partition,
            leader: p.leader,
            leader_epoch: p.leader_epoch,
            unclean,
        });
    }
    if isr_changed {
        events.push(Event::IsrChanged {
            topic: topic.to_string(),
            partition,
            isr: p.isr.clone(),
            partition_epoch: p.partition_epoch,
        });
    }
}
