//! The `Cluster` resource: a set of Strata nodes (a StatefulSet), their hot-tier disks, the
//! object store they tier to, and how clients reach them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::config;

/// Nodes of a cluster whose spec omits `nodes`.
pub const DEFAULT_NODES: i32 = 3;
/// Kafka listener port of a cluster whose spec omits it.
pub const DEFAULT_PORT: i32 = 9092;
/// Hot-tier volume size of a cluster whose spec omits it.
pub const DEFAULT_STORAGE_SIZE: &str = "10Gi";
/// Secret key holding the access key id, unless the reference names another.
pub const DEFAULT_ACCESS_KEY_ID_KEY: &str = "AWS_ACCESS_KEY_ID";
/// Secret key holding the secret access key, unless the reference names another.
pub const DEFAULT_SECRET_ACCESS_KEY_KEY: &str = "AWS_SECRET_ACCESS_KEY";

/// Desired state of a Strata cluster.
// clippy reads two printcolumns of the same type as a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "strata.dev",
    version = "v1alpha1",
    kind = "Cluster",
    namespaced,
    status = "ClusterStatus",
    shortname = "stc",
    category = "strata",
    doc = "A Strata cluster: storage nodes with local hot-tier disks tiering to an object store.",
    printcolumn(
        name = "Nodes",
        type_ = "integer",
        json_path = ".spec.nodes",
        description = "Nodes asked for"
    ),
    printcolumn(
        name = "Ready",
        type_ = "integer",
        json_path = ".status.readyNodes",
        description = "Nodes registered with the controller and serving"
    ),
    printcolumn(
        name = "Bootstrap",
        type_ = "string",
        json_path = ".status.bootstrapAddress",
        description = "bootstrap.servers for Kafka clients"
    ),
    printcolumn(
        name = "Controller",
        type_ = "string",
        json_path = ".status.controllerLeader",
        priority = 1,
        description = "Operator replica hosting the controller"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.restoreFrom) || has(self.objectStore)")
        .message(Message::Message("restoreFrom needs objectStore: the restore reads that bucket".into())),
    validation = Rule::new(
        "!has(self.authorization) || (has(self.listener) && has(self.listener.authentication) && \
         self.listener.authentication != 'none')"
    )
    .message(Message::Message(
        "authorization needs authenticated clients: set listener.authentication".into()
    ))
)]
pub struct ClusterSpec {
    /// Number of storage nodes (pods). Scaling down drains a node before its pod goes away.
    #[serde(default = "default_nodes")]
    #[schemars(range(min = 1))]
    pub nodes: i32,

    /// Container image of the nodes. Omitted: the operator's own version of strata-node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub image: Option<String>,

    /// CPU and memory of each node's container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Each node's local disk (a PersistentVolumeClaim) for the hot tail of every partition.
    #[serde(default)]
    pub storage: StorageSpec,

    /// Object store that closed segments are tiered to. Omitted: no tiering, everything stays
    /// on local disks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_store: Option<ObjectStoreSpec>,

    /// Recreate the topics (names, configs, and the data in the bucket) of a cluster that
    /// tiered to another prefix of the same bucket, for example one that was lost. Done once,
    /// when the nodes first start; data the old cluster had not yet tiered is not restored.
    /// Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(
        validation = Rule::new("self == oldSelf")
            .message(Message::Message("restoreFrom is immutable".into()))
            .reason(Reason::FieldValueForbidden)
    )]
    pub restore_from: Option<RestoreSpec>,

    /// Topic configs applied to every topic of the cluster that does not set them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "config::config_map_schema")]
    #[x_kube(
        validation = config::retention_integers_rule(),
        validation = config::retention_ranges_rule(),
        validation = config::local_retention_bytes_rule(),
        validation = config::local_retention_ms_rule()
    )]
    pub topic_defaults: BTreeMap<String, String>,

    /// Kafka listener: the port nodes listen on and the addresses they advertise to clients.
    #[serde(default)]
    pub listener: ListenerSpec,

    /// ACLs checked on every request (Kafka's simple authorizer). Omitted: every client may do
    /// everything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<ClusterAuthorization>,
}

/// Authorization of a cluster's Kafka requests.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterAuthorization {
    /// Only `simple` (Kafka ACLs, managed with User resources or kafka-acls.sh) is supported.
    #[serde(rename = "type", default)]
    pub type_: super::user::AuthorizationType,

    /// Principals allowed everything, `Type:name`, for example User:admin or User:CN=ops.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 100),
        inner(length(min = 3, max = 512), regex(pattern = r"^[A-Za-z]+:.+$"))
    )]
    pub super_users: Vec<String>,
}

/// How clients authenticate on the Kafka listener.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
pub enum ListenerAuthentication {
    /// No authentication: every client is User:ANONYMOUS.
    #[default]
    #[serde(rename = "none")]
    None,
    /// SASL/SCRAM-SHA-512 with the credentials of User resources.
    #[serde(rename = "scram-sha-512")]
    ScramSha512,
    /// Client certificates signed by the cluster's clients CA (needs tls).
    #[serde(rename = "tls")]
    Tls,
}

/// Hot-tier volume of each node.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Size of each node's volume (for example 100Gi). With tiering it only needs to hold the
    /// local retention of every partition the node replicates. It may grow (when the
    /// StorageClass allows volume expansion), never shrink.
    #[x_kube(
        validation = Rule::new("isQuantity(string(self))")
            .message(Message::Message("size must be a quantity, for example 100Gi".into())),
        validation = Rule::new(
            "!isQuantity(string(self)) || !isQuantity(string(oldSelf)) || \
             quantity(string(self)).compareTo(quantity(string(oldSelf))) >= 0"
        )
        .message(Message::Message("storage.size cannot be decreased: volumes only grow".into()))
        .reason(Reason::FieldValueForbidden)
    )]
    pub size: Quantity,

    /// StorageClass of the volumes. Omitted: the namespace's default class. Immutable once set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(
        validation = Rule::new("self == oldSelf")
            .message(Message::Message("storageClassName is immutable".into()))
            .reason(Reason::FieldValueForbidden)
    )]
    pub storage_class_name: Option<String>,
}

/// Where a restored cluster's topics come from.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RestoreSpec {
    /// Prefix, inside `objectStore.bucket`, that the other cluster tiered to (its
    /// `objectStore.prefix`). Equal to this cluster's own prefix: restore in place.
    #[serde(default)]
    pub prefix: String,
}

/// An S3-compatible bucket. Bucket and prefix are immutable: tiered segments live there.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new(
        "self.bucket == oldSelf.bucket && \
         (has(self.prefix) ? self.prefix : '') == (has(oldSelf.prefix) ? oldSelf.prefix : '')"
    )
    .message(Message::Message(
        "objectStore.bucket and objectStore.prefix are immutable: tiered data lives there".into()
    ))
    .reason(Reason::FieldValueForbidden)
)]
pub struct ObjectStoreSpec {
    /// Bucket name.
    #[schemars(length(min = 1, max = 255))]
    pub bucket: String,

    /// Key prefix inside the bucket, so several clusters can share one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,

    /// Endpoint URL of an S3-compatible service (MinIO, Ceph, ...). Omitted: AWS S3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    #[x_kube(
        validation = Rule::new("self.startsWith('http://') || self.startsWith('https://')")
            .message(Message::Message("endpoint must be an http:// or https:// URL".into()))
    )]
    pub endpoint: Option<String>,

    /// Region of the bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,

    /// Secret holding the access keys. Omitted: the pod's own identity (for example IRSA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<CredentialsSecretRef>,
}

/// Keys of a Secret (same namespace) holding object-store credentials.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsSecretRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,

    /// Key of the access key id in the Secret.
    #[serde(default = "default_access_key_id_key")]
    #[schemars(length(min = 1))]
    pub access_key_id_key: String,

    /// Key of the secret access key in the Secret.
    #[serde(default = "default_secret_access_key_key")]
    #[schemars(length(min = 1))]
    pub secret_access_key_key: String,
}

/// The Kafka listener of every node.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.authentication) || self.authentication != 'tls' || (has(self.tls) && self.tls)")
        .message(Message::Message("tls authentication needs tls: true".into()))
)]
pub struct ListenerSpec {
    /// Port the nodes accept Kafka clients on.
    #[serde(default = "default_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,

    /// Host each node advertises to clients, with {pod}, {ordinal}, {cluster}, {service} (the
    /// headless Service) and {namespace} replaced. Omitted: {pod}.{service}.{namespace}.svc,
    /// reachable from inside the Kubernetes cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub advertised_host_template: Option<String>,

    /// Port each node advertises, when clients reach the nodes through a port other than
    /// `port` (for example a NodePort). Omitted: `port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub advertised_port: Option<i32>,

    /// How clients authenticate: none, scram-sha-512 (User resources' passwords) or tls
    /// (client certificates of User resources).
    #[serde(default)]
    pub authentication: ListenerAuthentication,

    /// Encrypt the listener with TLS, the nodes' certificates issued by the operator's
    /// cluster CA (Secret <cluster>-cluster-ca-cert holds what clients trust).
    #[serde(default)]
    pub tls: bool,
}

/// Observed state of a Strata cluster, written by the operator.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// The metadata.generation the rest of this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Ready, Progressing and Degraded, with reasons and messages.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// Nodes registered with the controller and serving.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_nodes: Option<i32>,

    /// bootstrap.servers for Kafka clients (host:port of the bootstrap Service).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap_address: Option<String>,

    /// The operator replica (pod name) holding the controller lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller_leader: Option<String>,

    /// A rolling replacement of the node pods in progress (absent when every pod runs the
    /// current template).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roll: Option<RollStatus>,
}

/// Progress of a roll: the operator replaces node pods one at a time, only while every other
/// pod is Ready and no partition is under-replicated.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RollStatus {
    /// The StatefulSet revision pods are being moved to.
    pub revision: String,
    /// Node pods already at that revision.
    pub updated_nodes: i32,
    /// Node pods in all.
    pub nodes: i32,
    /// The pod being replaced now, if one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replacing: Option<String>,
    /// What the next replacement waits for, if anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
}

fn default_nodes() -> i32 {
    DEFAULT_NODES
}

fn default_port() -> i32 {
    DEFAULT_PORT
}

fn default_access_key_id_key() -> String {
    DEFAULT_ACCESS_KEY_ID_KEY.to_owned()
}

fn default_secret_access_key_key() -> String {
    DEFAULT_SECRET_ACCESS_KEY_KEY.to_owned()
}

impl Default for StorageSpec {
    fn default() -> Self {
        Self {
            size: Quantity(DEFAULT_STORAGE_SIZE.to_owned()),
            storage_class_name: None,
        }
    }
}

impl Default for ListenerSpec {
    fn default() -> Self {
        Self {
            port: DEFAULT_PORT,
            advertised_host_template: None,
            advertised_port: None,
            authentication: ListenerAuthentication::None,
            tls: false,
        }
    }
}

impl Default for ClusterSpec {
    fn default() -> Self {
        Self {
            nodes: DEFAULT_NODES,
            image: None,
            resources: None,
            storage: StorageSpec::default(),
            object_store: None,
            restore_from: None,
            topic_defaults: BTreeMap::new(),
            listener: ListenerSpec::default(),
            authorization: None,
        }
    }
}
