//! The `User` resource: a Kafka user of the namespace's Strata cluster, in the spirit of
//! Strimzi's `KafkaUser`. The operator keeps the user's SCRAM credential, ACLs and quotas in
//! the cluster equal to the spec, and writes a Secret (named like the resource) holding what a
//! client needs to connect.

use k8s_openapi::api::core::v1::SecretKeySelector;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// The resource name of ACLs on the cluster (Kafka's only cluster resource).
pub const CLUSTER_RESOURCE_NAME: &str = "kafka-cluster";

/// Desired state of a Kafka user.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "strata.dev",
    version = "v1alpha1",
    kind = "User",
    namespaced,
    status = "UserStatus",
    shortname = "stu",
    category = "strata",
    doc = "A Kafka user of the namespace's Strata cluster: credentials, ACLs and quotas.",
    printcolumn(
        name = "Authentication",
        type_ = "string",
        json_path = ".spec.authentication.type",
        description = "How the user authenticates"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Status of the Ready condition"
    ),
    printcolumn(
        name = "Secret",
        type_ = "string",
        json_path = ".status.secret",
        description = "Secret holding the client settings"
    ),
    printcolumn(
        name = "ACLs",
        type_ = "integer",
        json_path = ".status.acls",
        priority = 1,
        description = "ACL bindings in force for the user"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    validation = Rule::new(
        "!has(self.spec.authentication.password) || \
         self.spec.authentication.password.valueFrom.secretKeyRef.name != self.metadata.name"
    ).message(Message::Message(
        "the password Secret cannot be the Secret the operator writes (the one named like the User)".into()
    ))
    .field_path(".spec.authentication.password"),
    validation = Rule::new("size(self.metadata.name) <= 253")
        .message(Message::Message("metadata.name is the Kafka user name: at most 253 characters".into()))
)]
#[serde(rename_all = "camelCase")]
pub struct UserSpec {
    /// How the user proves who it is. The Kafka user name is metadata.name.
    pub authentication: UserAuthentication,

    /// The user's ACLs. The operator owns every ACL of the user's principal: ACLs added for
    /// it some other way (kafka-acls.sh) are removed, and omitting this grants nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<UserAuthorization>,

    /// Byte-rate and request-time quotas of the user (Kafka's user quotas).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quotas: Option<UserQuotas>,
}

/// How a user authenticates.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.type == 'scram-sha-512' || !has(self.password)")
        .message(Message::Message("password is only for scram-sha-512 authentication".into()))
)]
pub struct UserAuthentication {
    /// scram-sha-512 (a password; SASL/SCRAM-SHA-512) or tls (a client certificate signed by
    /// the cluster's clients CA; the principal is User:CN=<name>).
    #[serde(rename = "type")]
    pub type_: AuthenticationType,

    /// Where the password comes from. Omitted: the operator generates one (32 letters and
    /// digits) and keeps it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Password>,
}

/// How a user authenticates.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuthenticationType {
    /// SASL/SCRAM-SHA-512 with a password.
    #[serde(rename = "scram-sha-512")]
    ScramSha512,
    /// Mutual TLS with a client certificate.
    #[serde(rename = "tls")]
    Tls,
}

/// A password kept in a Secret of the user's own.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Password {
    /// The Secret key holding the password.
    pub value_from: PasswordSource,
}

/// Source of a password.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PasswordSource {
    /// A key of a Secret in the User's namespace.
    pub secret_key_ref: SecretKeySelector,
}

/// The user's ACLs (Kafka's simple authorizer model).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct UserAuthorization {
    /// Only `simple` (Kafka ACLs) is supported.
    #[serde(rename = "type", default)]
    pub type_: AuthorizationType,

    /// The rules; each becomes one ACL binding per operation.
    #[serde(default)]
    #[schemars(length(max = 1000))]
    pub acls: Vec<AclRule>,
}

/// Kind of authorization.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
pub enum AuthorizationType {
    /// Kafka ACLs.
    #[default]
    #[serde(rename = "simple")]
    Simple,
}

/// One ACL rule: operations allowed (or denied) on a resource, from a host.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new(
        "self.resource.type != 'topic' || self.operations.all(o, o in \
         ['All', 'Read', 'Write', 'Create', 'Delete', 'Alter', 'Describe', 'DescribeConfigs', 'AlterConfigs'])"
    ).message(Message::Message(
        "topic operations are All, Read, Write, Create, Delete, Alter, Describe, DescribeConfigs and AlterConfigs".into()
    )),
    validation = Rule::new(
        "self.resource.type != 'group' || self.operations.all(o, o in ['All', 'Read', 'Describe', 'Delete'])"
    ).message(Message::Message("group operations are All, Read, Describe and Delete".into())),
    validation = Rule::new(
        "self.resource.type != 'cluster' || self.operations.all(o, o in \
         ['All', 'Create', 'ClusterAction', 'DescribeConfigs', 'AlterConfigs', 'IdempotentWrite', 'Alter', 'Describe'])"
    ).message(Message::Message(
        "cluster operations are All, Create, ClusterAction, DescribeConfigs, AlterConfigs, IdempotentWrite, Alter and Describe".into()
    )),
    validation = Rule::new(
        "self.resource.type != 'transactionalId' || self.operations.all(o, o in ['All', 'Describe', 'Write'])"
    ).message(Message::Message("transactionalId operations are All, Describe and Write".into()))
)]
pub struct AclRule {
    /// What the rule covers.
    pub resource: AclResource,

    /// Operations allowed or denied.
    #[schemars(length(min = 1, max = 16))]
    #[x_kube(
        validation = Rule::new("self.all(o, self.exists_one(p, p == o))")
            .message(Message::Message("operations are listed once each".into()))
    )]
    pub operations: Vec<AclOperation>,

    /// The client address the rule applies to: an IP address, or `*` for any.
    #[serde(default = "any_host")]
    #[schemars(length(min = 1, max = 45))]
    #[x_kube(
        validation = Rule::new("self == '*' || isIP(self)")
            .message(Message::Message("host must be * or an IP address".into()))
    )]
    pub host: String,

    /// allow or deny; a deny wins over any allow.
    #[serde(rename = "type", default)]
    pub type_: AclRuleType,
}

/// The resource of an ACL rule.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.type == 'cluster' || (has(self.name) && size(self.name) > 0)")
        .message(Message::Message("a topic, group or transactionalId rule needs a name (* for all)".into())),
    validation = Rule::new("self.type != 'cluster' || !has(self.name) || self.name == 'kafka-cluster'")
        .message(Message::Message("the cluster resource is named kafka-cluster (or left unnamed)".into())),
    validation = Rule::new("self.type != 'cluster' || !has(self.patternType) || self.patternType == 'literal'")
        .message(Message::Message("the cluster resource takes no prefix pattern".into()))
)]
pub struct AclResource {
    /// topic, group, cluster or transactionalId.
    #[serde(rename = "type")]
    pub type_: AclResourceType,

    /// The resource's name, a prefix of names (patternType prefix), or `*` for all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub name: Option<String>,

    /// literal (the exact name, or `*`) or prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern_type: Option<AclPatternType>,
}

/// Kind of ACL resource.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub enum AclResourceType {
    /// A topic.
    Topic,
    /// A consumer group.
    Group,
    /// The cluster.
    Cluster,
    /// A transactional id.
    TransactionalId,
}

/// How an ACL rule's name matches.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
#[serde(rename_all = "camelCase")]
pub enum AclPatternType {
    /// The exact name (or `*`, every resource).
    #[default]
    Literal,
    /// Every resource whose name starts with the name.
    Prefix,
}

/// Allow or deny.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
#[serde(rename_all = "camelCase")]
pub enum AclRuleType {
    /// The operations are allowed.
    #[default]
    Allow,
    /// The operations are denied, whatever allows them.
    Deny,
}

/// An ACL operation (Kafka's names).
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AclOperation {
    /// Every operation.
    All,
    /// Consume, commit offsets.
    Read,
    /// Produce.
    Write,
    /// Create topics.
    Create,
    /// Delete topics, records or groups.
    Delete,
    /// Alter partitions and other resources.
    Alter,
    /// Metadata, offsets, group descriptions.
    Describe,
    /// Inter-broker actions.
    ClusterAction,
    /// Read configs.
    DescribeConfigs,
    /// Change configs.
    AlterConfigs,
    /// Idempotent produce.
    IdempotentWrite,
}

/// Kafka user quotas; an omitted quota is not limited.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct UserQuotas {
    /// Bytes per second the user's producers may send, per node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub producer_byte_rate: Option<i64>,

    /// Bytes per second the user's consumers may fetch, per node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub consumer_byte_rate: Option<i64>,

    /// Percentage of one request-handling thread's time the user may take, per node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub request_percentage: Option<i64>,
}

/// Observed state of a Kafka user, written by the operator.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UserStatus {
    /// The metadata.generation the rest of this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Ready (credentials, ACLs and quotas in force) and Degraded, with reasons.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// The Kafka user name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,

    /// The principal ACLs name (User:<name>, or User:CN=<name> for tls).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,

    /// The Secret holding the client settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,

    /// ACL bindings in force for the user's principal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acls: Option<i32>,
}

fn any_host() -> String {
    "*".to_owned()
}

impl User {
    /// The Kafka user name: the resource name.
    pub fn username(&self) -> Option<&str> {
        self.metadata.name.as_deref()
    }
}
