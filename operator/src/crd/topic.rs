//! The `Topic` resource: one Kafka topic of a Strata cluster in the same namespace.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::config;

/// Longest Kafka topic name (Kafka's limit).
pub const MAX_TOPIC_NAME_LENGTH: u64 = 249;

/// Desired state of a Kafka topic.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "strata.dev",
    version = "v1alpha1",
    kind = "Topic",
    namespaced,
    status = "TopicStatus",
    shortname = "stt",
    category = "strata",
    doc = "A Kafka topic of the Strata cluster named by spec.clusterRef.",
    printcolumn(
        name = "Partitions",
        type_ = "integer",
        json_path = ".spec.partitions",
        description = "Partitions asked for"
    ),
    printcolumn(
        name = "Replication",
        type_ = "integer",
        json_path = ".status.replicationFactor",
        description = "Replication factor in effect"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Status of the Ready condition"
    ),
    printcolumn(
        name = "Local",
        type_ = "integer",
        format = "int64",
        json_path = ".status.localBytes",
        description = "Bytes on the nodes' local disks (all replicas)"
    ),
    printcolumn(
        name = "Remote",
        type_ = "integer",
        format = "int64",
        json_path = ".status.remoteBytes",
        description = "Bytes in the object store"
    ),
    printcolumn(
        name = "Cluster",
        type_ = "string",
        json_path = ".spec.clusterRef.name",
        priority = 1,
        description = "The Cluster holding the topic"
    ),
    printcolumn(
        name = "Under-replicated",
        type_ = "integer",
        json_path = ".status.underReplicatedPartitions",
        priority = 1,
        description = "Partitions whose ISR is smaller than their replica set"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    validation = Rule::new(
        "has(self.spec.topicName) || size(self.metadata.name) <= 249"
    ).message(Message::Message(
        "metadata.name is longer than a Kafka topic name may be (249): set spec.topicName".into()
    )),
    validation = Rule::new(
        "(has(self.spec.topicName) ? self.spec.topicName : self.metadata.name) == \
         (has(oldSelf.spec.topicName) ? oldSelf.spec.topicName : oldSelf.metadata.name)"
    ).message(Message::Message(
        "the Kafka topic name (spec.topicName, or metadata.name when it is omitted) is immutable".into()
    ))
    .reason(Reason::FieldValueForbidden)
    .field_path(".spec.topicName")
)]
#[serde(rename_all = "camelCase")]
pub struct TopicSpec {
    /// Number of partitions (1 to 10000). Partitions can be added, never removed.
    #[x_kube(
        validation = Rule::new("self >= oldSelf")
            .message(Message::Message("partitions cannot be decreased".into()))
            .reason(Reason::FieldValueForbidden)
    )]
    #[schemars(range(min = 1, max = strata_controller::core::MAX_PARTITIONS))]
    pub partitions: i32,

    /// Copies of each partition (1 to 32767). Omitted: the cluster's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 32767))]
    pub replication_factor: Option<i32>,

    /// Kafka topic configs (for example retention.ms, cleanup.policy, remote.storage.enable,
    /// local.retention.ms, local.retention.bytes). Omitted keys take the cluster's topicDefaults,
    /// then Kafka's defaults.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "config::config_map_schema")]
    #[x_kube(
        validation = config::retention_integers_rule(),
        validation = config::retention_ranges_rule(),
        validation = config::local_retention_bytes_rule(),
        validation = config::local_retention_ms_rule()
    )]
    pub config: BTreeMap<String, String>,

    /// The Cluster (same namespace) that holds the topic. Immutable.
    #[x_kube(
        validation = Rule::new("self == oldSelf")
            .message(Message::Message("clusterRef is immutable".into()))
            .reason(Reason::FieldValueForbidden)
    )]
    pub cluster_ref: ClusterRef,

    /// What deleting this resource does to the Kafka topic: Delete removes the topic and its
    /// data; Retain leaves them in the cluster.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,

    /// Kafka topic name when it differs from metadata.name (Kafka names may hold capitals and
    /// underscores, Kubernetes names may not). Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_TOPIC_NAME_LENGTH), regex(pattern = r"^[a-zA-Z0-9._-]+$"))]
    #[x_kube(
        validation = Rule::new("self != '.' && self != '..'")
            .message(Message::Message("topicName cannot be '.' or '..'".into()))
    )]
    pub topic_name: Option<String>,
}

/// Reference to the `Cluster` holding a topic, by name in the topic's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ClusterRef {
    /// Name of the Cluster.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// What happens to the Kafka topic when its `Topic` resource is deleted.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
pub enum DeletionPolicy {
    /// Delete the Kafka topic and its data (local and in the object store).
    #[default]
    Delete,
    /// Keep the Kafka topic and its data; only the resource goes away.
    Retain,
}

/// Observed state of a Kafka topic, written by the operator.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TopicStatus {
    /// The metadata.generation the rest of this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Ready, Progressing and Degraded, with reasons and messages.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// Partitions the topic has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<i32>,

    /// Replication factor in effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_factor: Option<i32>,

    /// Kafka topic id (a UUID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_id: Option<String>,

    /// Per partition: replicas, leader and in-sync replicas.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["partition".into()]))]
    pub partition_status: Vec<PartitionStatus>,

    /// Partitions whose in-sync replica set is smaller than their replica set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub under_replicated_partitions: Option<i32>,

    /// Every config in effect, the cluster's and Kafka's defaults included.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub effective_config: BTreeMap<String, String>,

    /// Bytes on the nodes' local disks, summed over all replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_bytes: Option<i64>,

    /// Bytes in the object store (one copy per partition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_bytes: Option<i64>,
}

/// Leadership and replication of one partition.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PartitionStatus {
    /// Partition index.
    pub partition: i32,

    /// Node id of the leader; -1 while the partition has no leader.
    pub leader: i32,

    /// Leader epoch, raised at every leader change.
    #[serde(default)]
    pub leader_epoch: i32,

    /// Node ids of the assigned replicas, preferred leader first.
    #[serde(default)]
    pub replicas: Vec<i32>,

    /// Node ids of the in-sync replicas.
    #[serde(default)]
    pub isr: Vec<i32>,
}

impl TopicSpec {
    /// A spec for `partitions` partitions on the cluster `cluster`, every other field omitted.
    pub fn new(cluster: impl Into<String>, partitions: i32) -> Self {
        Self {
            partitions,
            replication_factor: None,
            config: BTreeMap::new(),
            cluster_ref: ClusterRef {
                name: cluster.into(),
            },
            deletion_policy: DeletionPolicy::default(),
            topic_name: None,
        }
    }
}

impl Topic {
    /// The Kafka topic name: `spec.topicName`, or the resource name when it is omitted.
    pub fn kafka_name(&self) -> Option<&str> {
        self.spec
            .topic_name
            .as_deref()
            .or(self.metadata.name.as_deref())
    }
}
