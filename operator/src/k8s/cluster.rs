//! Cluster resources -> the Kubernetes objects that run the storage nodes, and scaling.
//!
//! A reconcile reads as: pick (is this the namespace's served cluster?) -> validate (pure) ->
//! ask the controller to rebalance over nodes `0..spec.nodes` -> build (pure: headless and
//! bootstrap Services, ConfigMap, PodDisruptionBudget, StatefulSet) -> server-side apply ->
//! grow volumes -> status.
//!
//! Each pod's node id is its StatefulSet ordinal, so the node set is `0..spec.nodes`. Scaling
//! up applies the new replica count at once and, when the new nodes have registered, the
//! controller moves partitions onto them. Scaling down first has the controller move every
//! replica off the nodes that will go (they also stop getting new ones); the StatefulSet
//! shrinks only once nothing is left on them.
//!
//! The operator's controller holds the metadata of one Kafka cluster, so it serves one
//! Cluster resource per namespace: the one named by `--cluster-name`. Others are told so in
//! their status and get no objects.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec, StatefulSetUpdateStrategy};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapKeySelector, Container, ContainerPort, EmptyDirVolumeSource,
    EnvVar, EnvVarSource, HTTPGetAction, ObjectFieldSelector, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, Pod, PodAffinityTerm, PodAntiAffinity, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, SeccompProfile, Secret, SecretKeySelector, SecretVolumeSource,
    SecurityContext, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
    VolumeResourceRequirements, WeightedPodAffinityTerm,
};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::ByteString;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, Preconditions};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use strata_controller::core::{Image, RebalanceOutcome};
use strata_controller::ControllerHandle;
use tracing::Instrument;

use crate::crd::cluster::{Cluster, ClusterStatus, ListenerAuthentication, RollStatus};
use crate::crd::{CONDITION_DEGRADED, CONDITION_PROGRESSING, CONDITION_READY};
use crate::k8s::certs;
use crate::k8s::conditions::{carry_transitions, condition};
use crate::k8s::metrics::OperatorMetrics;
use crate::k8s::roll::{self, NodePod, SetState, Step};

/// Field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "strata-operator";
/// Where each node's volume is mounted (`--data-dir`).
pub const DATA_DIR: &str = "/data";
/// Name of the volume claim template (PVCs are `data-<cluster>-<ordinal>`).
pub const DATA_VOLUME: &str = "data";
/// Port of each node's `/metrics`.
pub const METRICS_PORT: i32 = 9100;
/// Label every object of a cluster carries (its value: the Cluster's name).
pub const CLUSTER_LABEL: &str = "strata.dev/cluster";
/// Pod template annotation: a digest of the ConfigMap, so a change rolls the nodes.
pub const CONFIG_HASH_ANNOTATION: &str = "strata.dev/config-hash";
/// ConfigMap key holding the topic defaults as strata-node reads them (`K=V,K=V`).
pub const TOPIC_DEFAULTS_KEY: &str = "topic-defaults";
/// The downward-API label with a StatefulSet pod's ordinal (Kubernetes 1.28+).
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";
/// User and group the node runs as (the distroless "nonroot" user).
pub const NODE_UID: i64 = 65532;
/// The default advertised host: the pod's own name in the headless Service.
pub const DEFAULT_ADVERTISED_HOST: &str = "{pod}.{service}.{namespace}.svc";
/// Listener of clients when the cluster is secured.
pub const CLIENTS_LISTENER: &str = "CLIENTS";
/// Listener nodes replicate over when the cluster is secured (mutual TLS, nodes only).
pub const REPLICATION_LISTENER: &str = "REPLICATION";
/// Port of the replication listener.
pub const REPLICATION_PORT: i32 = 9091;
/// Where the node's TLS certificate and key are mounted.
pub const TLS_DIR: &str = "/etc/strata/tls";
/// Where the clients CA (for tls authentication) is mounted.
pub const CLIENTS_CA_DIR: &str = "/etc/strata/clients-ca";

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("kubernetes: {0}")]
    Kube(#[from] kube::Error),
    #[error("controller: {0}")]
    Controller(#[from] strata_controller::Error),
}

/// The Cluster reconciler's settings, from the operator's flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// Namespace of the Cluster resources (and of everything made for them).
    pub namespace: String,
    /// Image of nodes whose Cluster names none.
    pub node_image: String,
    /// What nodes get as `--controller`: the operator's controller URL(s), comma-separated.
    pub controller_url: String,
    /// The Cluster resource this namespace's controller serves.
    pub cluster_name: String,
    /// This operator replica (shown as `status.controllerLeader`).
    pub identity: String,
    /// Partitions moving at once while scaling rebalances.
    pub max_partition_moves: usize,
    /// ServiceAccount of node pods (None: the namespace's default). Nodes never call the
    /// API, so their pods mount no token either way.
    pub node_service_account: Option<String>,
}

/// What the reconciler works with.
pub struct Ctx {
    pub client: kube::Client,
    pub api: Api<Cluster>,
    pub controller: ControllerHandle,
    pub metrics: Arc<OperatorMetrics>,
    pub recorder: Recorder,
    pub cfg: ClusterConfig,
}

// ---- pure: names, labels, validation -------------------------------------------------------

/// Secret with the cluster CA's certificate and key (the operator's alone).
pub fn cluster_ca_secret_name(c: &Cluster) -> String {
    format!("{}-cluster-ca", c.name_any())
}

/// Secret with the certificates clients trust (`ca.crt`: the cluster CA bundle).
pub fn cluster_ca_cert_secret_name(c: &Cluster) -> String {
    format!("{}-cluster-ca-cert", c.name_any())
}

/// Secret with the clients CA's certificate and key (the operator's alone).
pub fn clients_ca_secret_name(c: &Cluster) -> String {
    format!("{}-clients-ca", c.name_any())
}

/// Secret with the clients CA bundle the nodes check client certificates against.
pub fn clients_ca_cert_secret_name(c: &Cluster) -> String {
    format!("{}-clients-ca-cert", c.name_any())
}

/// Secret with the nodes' TLS certificate and key.
pub fn node_tls_secret_name(c: &Cluster) -> String {
    format!("{}-nodes-tls", c.name_any())
}

/// The headless Service's own name: the nodes' certificate's subject (CN) and the name
/// followers check their leader's certificate against.
pub fn node_service_host(c: &Cluster, cfg: &ClusterConfig) -> String {
    format!("{}.{}.svc", headless_name(c), namespace_of(c, cfg))
}

/// The principal nodes replicate as (their certificate's subject, Kafka's default mapping).
pub fn node_principal(c: &Cluster, cfg: &ClusterConfig) -> String {
    format!("User:CN={}", node_service_host(c, cfg))
}

/// The DNS names the nodes' certificate covers, its subject first: every pod of the headless
/// Service and the bootstrap Service, short and qualified.
pub fn node_dns_names(c: &Cluster, cfg: &ClusterConfig) -> Vec<String> {
    let ns = namespace_of(c, cfg);
    let (headless, bootstrap) = (headless_name(c), bootstrap_name(c));
    let mut names = vec![
        node_service_host(c, cfg),
        format!("*.{headless}.{ns}.svc"),
        format!("*.{headless}.{ns}.svc.cluster.local"),
        format!("{bootstrap}.{ns}.svc"),
        format!("{bootstrap}.{ns}.svc.cluster.local"),
        format!("{bootstrap}.{ns}"),
        bootstrap,
    ];
    // Addresses advertised outside the cluster: one name per node.
    if c.spec.listener.advertised_host_template.is_some() {
        for i in 0..c.spec.nodes {
            let host = advertised_host(c, cfg)
                .replace("$(POD_NAME)", &format!("{}-{i}", c.name_any()))
                .replace("$(STRATA_NODE_ID)", &i.to_string());
            if host.parse::<std::net::IpAddr>().is_err() && !names.contains(&host) {
                names.push(host);
            }
        }
    }
    names
}

/// Who may reach the nodes: clients on the Kafka port and scrapers on the metrics port from
/// anywhere, the replication listener from the cluster's own nodes only.
pub fn network_policy(c: &Cluster, cfg: &ClusterConfig) -> NetworkPolicy {
    let port = |p: i32| NetworkPolicyPort {
        port: Some(IntOrString::Int(p)),
        protocol: Some("TCP".into()),
        ..Default::default()
    };
    let nodes = NetworkPolicyPeer {
        pod_selector: Some(LabelSelector {
            match_labels: Some(selector_labels(c)),
            ..Default::default()
        }),
        ..Default::default()
    };
    NetworkPolicy {
        metadata: meta(c, cfg, format!("{}-nodes", c.name_any())),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(selector_labels(c)),
                ..Default::default()
            }),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![
                NetworkPolicyIngressRule {
                    ports: Some(vec![port(c.spec.listener.port), port(METRICS_PORT)]),
                    from: None,
                },
                NetworkPolicyIngressRule {
                    ports: Some(vec![port(REPLICATION_PORT)]),
                    from: Some(vec![nodes]),
                },
            ]),
            ..Default::default()
        }),
    }
}

/// Name of the headless Service giving each node its DNS name.
pub fn headless_name(c: &Cluster) -> String {
    format!("{}-nodes", c.name_any())
}

/// Name of the bootstrap Service clients connect to first.
pub fn bootstrap_name(c: &Cluster) -> String {
    format!("{}-bootstrap", c.name_any())
}

/// Name of the nodes' ConfigMap.
pub fn config_map_name(c: &Cluster) -> String {
    format!("{}-config", c.name_any())
}

fn namespace_of(c: &Cluster, cfg: &ClusterConfig) -> String {
    c.namespace().unwrap_or_else(|| cfg.namespace.clone())
}

/// `bootstrap.servers` for clients inside the Kubernetes cluster.
pub fn bootstrap_address(c: &Cluster, cfg: &ClusterConfig) -> String {
    format!(
        "{}.{}.svc:{}",
        bootstrap_name(c),
        namespace_of(c, cfg),
        c.spec.listener.port
    )
}

/// Labels selecting a cluster's pods (immutable in the StatefulSet: never add to these).
pub fn selector_labels(c: &Cluster) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "strata".to_string()),
        ("app.kubernetes.io/instance".to_string(), c.name_any()),
        (
            "app.kubernetes.io/component".to_string(),
            "node".to_string(),
        ),
    ])
}

/// Labels of every object made for a cluster.
pub fn labels(c: &Cluster) -> BTreeMap<String, String> {
    let mut l = selector_labels(c);
    l.insert(
        "app.kubernetes.io/managed-by".to_string(),
        FIELD_MANAGER.to_string(),
    );
    l.insert(CLUSTER_LABEL.to_string(), c.name_any());
    l
}

/// The owner reference that makes every object go with its Cluster.
pub fn owner_reference(c: &Cluster) -> Option<OwnerReference> {
    let mut o = c.controller_owner_ref(&())?;
    o.block_owner_deletion = Some(true);
    Some(o)
}

fn meta(c: &Cluster, cfg: &ClusterConfig, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(namespace_of(c, cfg)),
        labels: Some(labels(c)),
        owner_references: owner_reference(c).map(|o| vec![o]),
        ..Default::default()
    }
}

/// Why a Cluster cannot be built as it is, for its status; objects wait for a spec change.
pub fn validate(c: &Cluster) -> Result<(), String> {
    let name = c.name_any();
    // Service names are DNS-1035 labels; the StatefulSet adds "-<hash>" (11 characters) to
    // its name in the controller-revision-hash label, which must stay within 63.
    let dns1035 = name.starts_with(|ch: char| ch.is_ascii_lowercase())
        && name
            .chars()
            .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-')
        && !name.ends_with('-');
    if !dns1035 || name.len() > 52 {
        return Err(format!(
            "the name {name:?} must be at most 52 characters of a-z, 0-9 and '-', starting \
             with a letter (it names the Services and pods)"
        ));
    }
    for (k, v) in &c.spec.topic_defaults {
        if k.contains(',') || k.contains('=') || v.contains(',') {
            return Err(format!(
                "topicDefaults {k}={v}: strata-node takes defaults as K=V,K=V, so keys cannot \
                 hold ',' or '=' and values cannot hold ','"
            ));
        }
    }
    if let Some(os) = &c.spec.object_store {
        if os.bucket.contains('/') {
            return Err(format!(
                "objectStore.bucket {:?} cannot hold '/'",
                os.bucket
            ));
        }
    }
    Ok(())
}

/// The host each node advertises, with the pod's name and ordinal left as `$(POD_NAME)` and
/// `$(STRATA_NODE_ID)` for the kubelet to expand.
pub fn advertised_host(c: &Cluster, cfg: &ClusterConfig) -> String {
    let template = c
        .spec
        .listener
        .advertised_host_template
        .as_deref()
        .unwrap_or(DEFAULT_ADVERTISED_HOST);
    template
        .replace("{pod}", "$(POD_NAME)")
        .replace("{ordinal}", "$(STRATA_NODE_ID)")
        .replace("{service}", &headless_name(c))
        .replace("{cluster}", &c.name_any())
        .replace("{namespace}", &namespace_of(c, cfg))
}

/// The object-store URL strata-node takes (`s3://bucket/prefix`), if tiering is on.
pub fn object_store_url(c: &Cluster) -> Option<String> {
    let os = c.spec.object_store.as_ref()?;
    let prefix = os.prefix.as_deref().unwrap_or("").trim_matches('/');
    Some(if prefix.is_empty() {
        format!("s3://{}", os.bucket)
    } else {
        format!("s3://{}/{prefix}", os.bucket)
    })
}

/// FNV-1a (64 bits): a digest stable across builds, unlike std's hasher.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

// ---- pure: the objects ---------------------------------------------------------------------

fn kafka_port(c: &Cluster) -> ServicePort {
    ServicePort {
        name: Some("kafka".into()),
        port: c.spec.listener.port,
        target_port: Some(IntOrString::String("kafka".into())),
        protocol: Some("TCP".into()),
        ..Default::default()
    }
}

/// The headless Service: `<pod>.<name>-nodes.<ns>.svc` for every node, ready or not (nodes
/// must reach each other while starting).
pub fn headless_service(c: &Cluster, cfg: &ClusterConfig) -> Service {
    Service {
        metadata: meta(c, cfg, headless_name(c)),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(selector_labels(c)),
            ports: Some(vec![
                kafka_port(c),
                ServicePort {
                    name: Some("metrics".into()),
                    port: METRICS_PORT,
                    target_port: Some(IntOrString::String("metrics".into())),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The bootstrap Service: one stable address for `bootstrap.servers`, over ready nodes.
pub fn bootstrap_service(c: &Cluster, cfg: &ClusterConfig) -> Service {
    Service {
        metadata: meta(c, cfg, bootstrap_name(c)),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector_labels(c)),
            ports: Some(vec![kafka_port(c)]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The nodes' ConfigMap: settings every node reads at start (today the topic defaults).
pub fn config_map(c: &Cluster, cfg: &ClusterConfig) -> ConfigMap {
    let defaults = c
        .spec
        .topic_defaults
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    ConfigMap {
        metadata: meta(c, cfg, config_map_name(c)),
        data: Some(BTreeMap::from([(TOPIC_DEFAULTS_KEY.to_string(), defaults)])),
        ..Default::default()
    }
}

/// At most one node down for voluntary disruptions (drains, upgrades).
pub fn pod_disruption_budget(c: &Cluster, cfg: &ClusterConfig) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: meta(c, cfg, c.name_any()),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(c)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    }
}

fn env_from(name: &str, source: EnvVarSource) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(source),
        ..Default::default()
    }
}

fn field_ref(path: &str) -> EnvVarSource {
    EnvVarSource {
        field_ref: Some(ObjectFieldSelector {
            field_path: path.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The node container's environment. Object-store keys come only from the Secret.
pub fn node_env(c: &Cluster) -> Vec<EnvVar> {
    let mut out = vec![
        env_from("POD_NAME", field_ref("metadata.name")),
        env_from(
            "STRATA_NODE_ID",
            field_ref(&format!("metadata.labels['{POD_INDEX_LABEL}']")),
        ),
        env("STRATA_LOG_FORMAT", "json"),
    ];
    if !c.spec.topic_defaults.is_empty() {
        out.push(env_from(
            "STRATA_TOPIC_DEFAULT",
            EnvVarSource {
                config_map_key_ref: Some(ConfigMapKeySelector {
                    name: config_map_name(c),
                    key: TOPIC_DEFAULTS_KEY.into(),
                    optional: Some(false),
                }),
                ..Default::default()
            },
        ));
    }
    if let (Some(os), Some(url)) = (&c.spec.object_store, object_store_url(c)) {
        out.push(env("STRATA_OBJECT_STORE", url));
        if let Some(r) = &c.spec.restore_from {
            let prefix = r.prefix.trim_matches('/');
            let from = if prefix.is_empty() {
                format!("s3://{}", os.bucket)
            } else {
                format!("s3://{}/{prefix}", os.bucket)
            };
            out.push(env("STRATA_RESTORE_FROM", from));
        }
        out.push(env(
            "STRATA_REMOTE_DISK_CACHE_BYTES",
            disk_cache_bytes(&c.spec.storage.size.0).to_string(),
        ));
        if let Some(endpoint) = &os.endpoint {
            out.push(env("AWS_ENDPOINT", endpoint.clone()));
            if endpoint.starts_with("http://") {
                out.push(env("AWS_ALLOW_HTTP", "true"));
            }
        }
        if let Some(region) = &os.region {
            out.push(env("AWS_REGION", region.clone()));
        }
        if let Some(secret) = &os.credentials_secret_ref {
            for (name, key) in [
                ("AWS_ACCESS_KEY_ID", &secret.access_key_id_key),
                ("AWS_SECRET_ACCESS_KEY", &secret.secret_access_key_key),
            ] {
                out.push(env_from(
                    name,
                    EnvVarSource {
                        secret_key_ref: Some(SecretKeySelector {
                            name: secret.name.clone(),
                            key: key.clone(),
                            optional: Some(false),
                        }),
                        ..Default::default()
                    },
                ));
            }
        }
    }
    out
}

/// The node's disk cache for bucket reads: a tenth of its volume, at most 1 GiB (the node's
/// own default), so that the cache never crowds out the hot tail it sits beside.
pub fn disk_cache_bytes(volume: &str) -> u64 {
    const MAX: u64 = 1 << 30;
    quantity_bytes(volume).map_or(MAX, |b| ((b / 10.0) as u64).min(MAX))
}

/// The node command line; `$(VAR)` is expanded by the kubelet from the environment.
pub fn node_args(c: &Cluster, cfg: &ClusterConfig) -> Vec<String> {
    let port = c.spec.listener.port;
    let advertised_port = c.spec.listener.advertised_port.unwrap_or(port);
    let mut args: Vec<String> = [
        "--node-id",
        "$(STRATA_NODE_ID)",
        "--controller",
        &cfg.controller_url,
    ]
    .map(String::from)
    .to_vec();
    match client_protocol(c) {
        // No security: the one listener of old, clients and replication alike.
        "PLAINTEXT" => args.extend(
            [
                "--listen",
                &format!("0.0.0.0:{port}"),
                "--advertise",
                &format!("{}:{advertised_port}", advertised_host(c, cfg)),
            ]
            .map(String::from),
        ),
        proto => {
            // Clients get their own listener; nodes replicate over mutual TLS on another,
            // with the certificate the operator issues them (and a NetworkPolicy that opens
            // that port to the nodes only).
            let replication_host = DEFAULT_ADVERTISED_HOST
                .replace("{pod}", "$(POD_NAME)")
                .replace("{service}", &headless_name(c))
                .replace("{namespace}", &namespace_of(c, cfg));
            args.extend(
                [
                    "--listeners",
                    &format!("{REPLICATION_LISTENER}://0.0.0.0:{REPLICATION_PORT},{CLIENTS_LISTENER}://0.0.0.0:{port}"),
                    "--advertised-listeners",
                    &format!(
                        "{REPLICATION_LISTENER}://{replication_host}:{REPLICATION_PORT},{CLIENTS_LISTENER}://{}:{advertised_port}",
                        advertised_host(c, cfg)
                    ),
                    "--listener-security-protocol-map",
                    &format!("{REPLICATION_LISTENER}:SSL,{CLIENTS_LISTENER}:{proto}"),
                    "--inter-broker-listener-name",
                    REPLICATION_LISTENER,
                    "--inter-broker-tls-ca-file",
                    &format!("{TLS_DIR}/{}", certs::CA_CERT),
                    "--inter-broker-tls-server-name",
                    &node_service_host(c, cfg),
                    "--tls-cert-file",
                    &format!("{TLS_DIR}/{}", certs::TLS_CERT),
                    "--tls-key-file",
                    &format!("{TLS_DIR}/{}", certs::TLS_KEY),
                ]
                .map(String::from),
            );
        }
    }
    let listener = &c.spec.listener;
    if listener.authentication == ListenerAuthentication::ScramSha512 {
        args.extend(["--sasl-enabled-mechanisms", "SCRAM-SHA-512"].map(String::from));
    }
    if listener.authentication == ListenerAuthentication::Tls {
        args.extend(
            [
                "--tls-client-auth",
                "required",
                "--tls-client-ca-file",
                &format!("{CLIENTS_CA_DIR}/{}", certs::CA_CERT),
            ]
            .map(String::from),
        );
    }
    if let Some(authz) = &c.spec.authorization {
        // Followers fetch as the subject of the nodes' certificate and need ClusterAction.
        let nodes = node_principal(c, cfg);
        let supers: Vec<&str> = std::iter::once(nodes.as_str())
            .chain(authz.super_users.iter().map(String::as_str))
            .collect();
        args.extend([
            "--authorizer".to_string(),
            "acl".to_string(),
            "--super-users".to_string(),
            supers.join(";"),
        ]);
    }
    args.extend(
        [
            "--data-dir",
            DATA_DIR,
            "--metrics-listen",
            &format!("0.0.0.0:{METRICS_PORT}"),
        ]
        .map(String::from),
    );
    args
}

/// Kafka's security protocol of the client listener.
pub fn client_protocol(c: &Cluster) -> &'static str {
    let l = &c.spec.listener;
    match (l.authentication, l.tls) {
        (ListenerAuthentication::None, false) => "PLAINTEXT",
        (ListenerAuthentication::None | ListenerAuthentication::Tls, true) => "SSL",
        (ListenerAuthentication::ScramSha512, false) => "SASL_PLAINTEXT",
        (ListenerAuthentication::ScramSha512, true) => "SASL_SSL",
        // Refused at admission (tls authentication needs tls); plaintext would be wrong.
        (ListenerAuthentication::Tls, false) => "SSL",
    }
}

/// Whether the nodes carry more than the single plaintext listener of old.
pub fn secured(c: &Cluster) -> bool {
    client_protocol(c) != "PLAINTEXT"
}

/// The node container.
pub fn node_container(c: &Cluster, cfg: &ClusterConfig) -> Container {
    Container {
        name: "node".into(),
        image: Some(
            c.spec
                .image
                .clone()
                .unwrap_or_else(|| cfg.node_image.clone()),
        ),
        command: Some(vec!["strata-node".into()]),
        args: Some(node_args(c, cfg)),
        env: Some(node_env(c)),
        ports: Some(
            vec![
                ContainerPort {
                    name: Some("kafka".into()),
                    container_port: c.spec.listener.port,
                    protocol: Some("TCP".into()),
                    ..Default::default()
                },
                ContainerPort {
                    name: Some("metrics".into()),
                    container_port: METRICS_PORT,
                    protocol: Some("TCP".into()),
                    ..Default::default()
                },
            ]
            .into_iter()
            .chain(secured(c).then(|| ContainerPort {
                name: Some("replication".into()),
                container_port: REPLICATION_PORT,
                protocol: Some("TCP".into()),
                ..Default::default()
            }))
            .collect(),
        ),
        resources: c.spec.resources.clone(),
        // Ready means caught up: the node has the cluster metadata and every partition it
        // replicates is back in the ISR (bounded by --ready-catch-up-timeout-ms), so a
        // StatefulSet roll moves to the next pod only once this one is in sync again.
        readiness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/ready".into()),
                port: IntOrString::String("metrics".into()),
                ..Default::default()
            }),
            period_seconds: Some(2),
            failure_threshold: Some(2),
            timeout_seconds: Some(2),
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(NODE_UID),
            run_as_group: Some(NODE_UID),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        volume_mounts: Some(
            vec![
                VolumeMount {
                    name: DATA_VOLUME.into(),
                    mount_path: DATA_DIR.into(),
                    ..Default::default()
                },
                VolumeMount {
                    name: "tmp".into(),
                    mount_path: "/tmp".into(),
                    ..Default::default()
                },
            ]
            .into_iter()
            .chain(secret_volumes(c).into_iter().map(|(v, dir)| VolumeMount {
                name: v.name,
                mount_path: dir.into(),
                read_only: Some(true),
                ..Default::default()
            }))
            .collect(),
        ),
        ..Default::default()
    }
}

/// The Secret volumes of a node and where each is mounted. Kubernetes updates a mounted
/// Secret in place and the node rereads its PEM files, so renewed certificates need no
/// restart.
fn secret_volumes(c: &Cluster) -> Vec<(Volume, &'static str)> {
    let secret = |volume: &str, name: String| Volume {
        name: volume.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(name),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut out = Vec::new();
    if secured(c) {
        out.push((secret("tls", node_tls_secret_name(c)), TLS_DIR));
    }
    if c.spec.listener.authentication == ListenerAuthentication::Tls {
        out.push((
            secret("clients-ca", clients_ca_cert_secret_name(c)),
            CLIENTS_CA_DIR,
        ));
    }
    out
}

/// The claim template each node's volume comes from.
pub fn data_claim_template(c: &Cluster) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(DATA_VOLUME.into()),
            labels: Some(selector_labels(c)),
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: c.spec.storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    c.spec.storage.size.clone(),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The StatefulSet of `replicas` nodes (the reconciler decides the count while draining).
pub fn statefulset(c: &Cluster, cfg: &ClusterConfig, replicas: i32) -> StatefulSet {
    let config_hash = format!(
        "{:016x}",
        fnv1a(
            serde_json::to_string(&config_map(c, cfg).data)
                .unwrap_or_default()
                .as_bytes()
        )
    );
    StatefulSet {
        metadata: meta(c, cfg, c.name_any()),
        spec: Some(StatefulSetSpec {
            replicas: Some(replicas),
            service_name: Some(headless_name(c)),
            pod_management_policy: Some("Parallel".into()),
            // The operator replaces pods itself, one at a time and only while every partition
            // is in sync (k8s::roll); the StatefulSet controller would not wait for that.
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("OnDelete".into()),
                rolling_update: None,
            }),
            selector: LabelSelector {
                match_labels: Some(selector_labels(c)),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(c)),
                    annotations: Some(BTreeMap::from([(
                        CONFIG_HASH_ANNOTATION.to_string(),
                        config_hash,
                    )])),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![node_container(c, cfg)],
                    service_account_name: cfg.node_service_account.clone(),
                    automount_service_account_token: Some(false),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(NODE_UID),
                        run_as_group: Some(NODE_UID),
                        fs_group: Some(NODE_UID),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    // On SIGTERM a node moves its leaderships away (controlled shutdown, 30 s
                    // bound), then drains connections and uploads (30 s bound): this covers
                    // both with room to spare.
                    termination_grace_period_seconds: Some(75),
                    affinity: Some(k8s_openapi::api::core::v1::Affinity {
                        pod_anti_affinity: Some(PodAntiAffinity {
                            preferred_during_scheduling_ignored_during_execution: Some(vec![
                                WeightedPodAffinityTerm {
                                    weight: 100,
                                    pod_affinity_term: PodAffinityTerm {
                                        topology_key: "kubernetes.io/hostname".into(),
                                        label_selector: Some(LabelSelector {
                                            match_labels: Some(selector_labels(c)),
                                            ..Default::default()
                                        }),
                                        ..Default::default()
                                    },
                                },
                            ]),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    volumes: Some(
                        std::iter::once(Volume {
                            name: "tmp".into(),
                            empty_dir: Some(EmptyDirVolumeSource::default()),
                            ..Default::default()
                        })
                        .chain(secret_volumes(c).into_iter().map(|(v, _)| v))
                        .collect(),
                    ),
                    ..Default::default()
                }),
            },
            volume_claim_templates: Some(vec![data_claim_template(c)]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

// ---- pure: scaling and status --------------------------------------------------------------

/// The StatefulSet size to apply: up at once, down only once the leaving nodes are drained.
pub fn replicas_to_apply(desired: i32, current: Option<i32>, drained: bool) -> i32 {
    match current {
        Some(n) if desired < n && !drained => n,
        _ => desired,
    }
}

/// Bytes in a Kubernetes quantity (`10Gi`, `500M`, `1.5Ti`, `1e9`), when it is one.
pub fn quantity_bytes(q: &str) -> Option<f64> {
    let q = q.trim();
    const SUFFIXES: [(&str, f64); 13] = [
        ("Ki", 1024.0),
        ("Mi", 1048576.0),
        ("Gi", 1073741824.0),
        ("Ti", 1099511627776.0),
        ("Pi", 1125899906842624.0),
        ("Ei", 1152921504606846976.0),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
        ("m", 1e-3),
    ];
    for (s, mult) in SUFFIXES {
        if let Some(n) = q.strip_suffix(s) {
            return n.parse::<f64>().ok().map(|v| v * mult);
        }
    }
    q.parse::<f64>().ok()
}

/// What the reconcile observed, for [`status_for`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// Nodes of `0..spec.nodes` alive in the controller.
    pub ready_nodes: i32,
    /// Nodes of `0..spec.nodes` registered once but not alive now.
    pub down_nodes: Vec<i32>,
    /// The StatefulSet size applied.
    pub replicas: i32,
    /// The controller's rebalance, when it ran.
    pub rebalance: Option<RebalanceOutcome>,
    /// Volumes that could not be grown.
    pub resize_failures: Vec<String>,
    /// Why the cluster is not served (another cluster is, or the spec is invalid).
    pub refused: Option<(&'static str, String)>,
    /// A roll of the node pods, when one is under way.
    pub roll: Option<roll::Progress>,
}

fn list(nodes: &[i32]) -> String {
    nodes
        .iter()
        .map(i32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The status a Cluster should show.
pub fn status_for(c: &Cluster, cfg: &ClusterConfig, o: &Observed) -> ClusterStatus {
    let gen = c.metadata.generation;
    let want = c.spec.nodes;
    if let Some((reason, why)) = &o.refused {
        return ClusterStatus {
            observed_generation: gen,
            conditions: vec![
                condition(CONDITION_READY, false, reason, why.clone(), gen),
                condition(CONDITION_PROGRESSING, false, reason, why.clone(), gen),
                condition(CONDITION_DEGRADED, true, reason, why.clone(), gen),
            ],
            ready_nodes: None,
            bootstrap_address: None,
            controller_leader: Some(cfg.identity.clone()),
            roll: None,
        };
    }
    let r = o.rebalance.clone().unwrap_or_default();
    let ready = o.ready_nodes == want;
    let ready_msg = format!("{} of {want} nodes registered and alive", o.ready_nodes);
    let leaving: Vec<i32> = (want..o.replicas).collect();
    let (progressing, p_reason, p_msg) = if !leaving.is_empty() && !r.blocked.is_empty() {
        (
            false,
            "ScaleDownBlocked",
            format!(
                "staying at {} nodes: partitions cannot leave nodes {}",
                o.replicas,
                list(&leaving)
            ),
        )
    } else if !leaving.is_empty() && !r.waiting_for.is_empty() {
        (
            true,
            "Draining",
            format!(
                "waiting for nodes {} to be alive before moving partitions off nodes {}",
                list(&r.waiting_for),
                list(&leaving)
            ),
        )
    } else if !leaving.is_empty() {
        (
            true,
            "Draining",
            format!(
                "moving partitions off nodes {} before they go ({} moving)",
                list(&leaving),
                r.in_flight
            ),
        )
    } else if let Some(p) = &o.roll {
        let what = match &p.step {
            Step::Replace { pod, .. } => format!("replacing pod {pod}"),
            Step::Wait { message, .. } => message.clone(),
            Step::Done => String::new(),
        };
        (
            true,
            "Rolling",
            format!(
                "{} of {} node pods at revision {}; {what}",
                p.updated, p.nodes, p.revision
            ),
        )
    } else if !r.waiting_for.is_empty() {
        (
            true,
            "WaitingForNodes",
            format!("waiting for nodes {} to register", list(&r.waiting_for)),
        )
    } else if r.in_flight > 0 || r.deferred > 0 {
        (
            true,
            "Rebalancing",
            format!(
                "{} partitions moving, {} more to move",
                r.in_flight, r.deferred
            ),
        )
    } else {
        (
            false,
            "Reconciled",
            format!("{want} nodes, partitions balanced over them"),
        )
    };
    let (degraded, d_reason, d_msg) = if !r.blocked.is_empty() && o.replicas > want {
        let some: Vec<String> = r
            .blocked
            .iter()
            .take(5)
            .map(|b| format!("{}-{}: {}", b.topic, b.partition, b.reason))
            .collect();
        (
            true,
            "ScaleDownBlocked",
            format!(
                "cannot drain to {want} nodes ({} partitions cannot move): {}",
                r.blocked.len(),
                some.join("; ")
            ),
        )
    } else if !o.resize_failures.is_empty() {
        (true, "VolumeResizeFailed", o.resize_failures.join("; "))
    } else if !o.down_nodes.is_empty() {
        (
            true,
            "NodesDown",
            format!("nodes {} are not alive", list(&o.down_nodes)),
        )
    } else {
        (false, "Healthy", "every node is alive".to_string())
    };
    ClusterStatus {
        observed_generation: gen,
        conditions: vec![
            condition(
                CONDITION_READY,
                ready,
                if ready { "Ready" } else { "NodesNotReady" },
                ready_msg,
                gen,
            ),
            condition(CONDITION_PROGRESSING, progressing, p_reason, p_msg, gen),
            condition(CONDITION_DEGRADED, degraded, d_reason, d_msg, gen),
        ],
        ready_nodes: Some(o.ready_nodes),
        bootstrap_address: Some(bootstrap_address(c, cfg)),
        controller_leader: Some(cfg.identity.clone()),
        roll: o.roll.as_ref().map(|p| RollStatus {
            revision: p.revision.clone(),
            updated_nodes: p.updated,
            nodes: p.nodes,
            replacing: match &p.step {
                Step::Replace { pod, .. } => Some(pod.clone()),
                _ => None,
            },
            waiting_for: match &p.step {
                Step::Wait { message, .. } => Some(message.clone()),
                _ => None,
            },
        }),
    }
}

/// The JSON merge patch (RFC 7386) that turns `old` into `new`: fields `new` no longer has
/// are set to null, so an optional status field that went away (a finished roll) is removed
/// rather than left as it was.
pub fn merge_patch(old: &serde_json::Value, new: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let mut out = serde_json::Map::new();
            for (k, v) in n {
                let patched = match o.get(k) {
                    Some(ov) => merge_patch(ov, v),
                    None => v.clone(),
                };
                out.insert(k.clone(), patched);
            }
            for k in o.keys().filter(|k| !n.contains_key(*k)) {
                out.insert(k.clone(), Value::Null);
            }
            Value::Object(out)
        }
        _ => new.clone(),
    }
}

/// Partitions (`topic-partition`) whose ISR is smaller than their replica set.
pub fn under_replicated(md: &Image) -> Vec<String> {
    md.topics
        .iter()
        .flat_map(|(name, t)| {
            t.partitions
                .iter()
                .enumerate()
                .filter(|(_, p)| p.isr.len() < p.replicas.len())
                .map(move |(i, _)| format!("{name}-{i}"))
        })
        .collect()
}

/// Alive and down (registered, not alive) nodes of `0..nodes` in the controller's image.
pub fn node_health(md: &Image, nodes: i32) -> (i32, Vec<i32>) {
    let mut alive = 0;
    let mut down = Vec::new();
    for (&id, n) in md.nodes.iter().filter(|(id, _)| (0..nodes).contains(*id)) {
        if n.alive {
            alive += 1;
        } else {
            down.push(id);
        }
    }
    (alive, down)
}

// ---- the edges: apply, events, status ------------------------------------------------------

/// What a server-side apply did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Applied {
    Created,
    Updated,
    Unchanged,
}

/// Server-side applies `obj`; returns what happened and the object as stored.
async fn apply<K>(api: &Api<K>, obj: &K) -> Result<(Applied, K), kube::Error>
where
    K: Resource + Clone + Serialize + DeserializeOwned + Debug,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    let before = api
        .get_opt(&name)
        .await?
        .map(|o| o.meta().resource_version.clone());
    let after = api
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(obj),
        )
        .await?;
    let what = match before {
        None => Applied::Created,
        Some(v) if v != after.meta().resource_version => Applied::Updated,
        Some(_) => Applied::Unchanged,
    };
    Ok((what, after))
}

/// The API server's own message for a refused call (without the debug dump of the status).
fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    }
}

/// `s` cut to at most `max` bytes on a character boundary.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max.saturating_sub(3);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// Publishes an event about `c`, about `related` too when given (events are grouped by
/// reason and related object, so each object's creation is its own event).
async fn publish(
    ctx: &Ctx,
    c: &Cluster,
    type_: EventType,
    reason: &str,
    note: String,
    related: Option<ObjectReference>,
) {
    let ev = KubeEvent {
        type_,
        reason: reason.into(),
        // The API server refuses notes over 1 kB.
        note: Some(truncate(&note, 1024)),
        action: "Reconcile".into(),
        secondary: related,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &c.object_ref(&())).await {
        tracing::warn!(cluster = %c.name_any(), error = %e, "could not publish an event");
    }
}

async fn apply_and_tell<K>(ctx: &Ctx, c: &Cluster, obj: &K) -> Result<(), ReconcileError>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Serialize
        + DeserializeOwned
        + Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &namespace_of(c, &ctx.cfg));
    let what = format!(
        "{} {}",
        K::kind(&()),
        obj.meta().name.as_deref().unwrap_or("")
    );
    let (applied, stored) = apply(&api, obj).await?;
    let related = Some(stored.object_ref(&()));
    match applied {
        Applied::Created => {
            tracing::info!(cluster = %c.name_any(), object = %what, "created");
            let note = format!("created {what}");
            publish(ctx, c, EventType::Normal, "Created", note, related).await;
        }
        Applied::Updated => {
            tracing::info!(cluster = %c.name_any(), object = %what, "updated");
            let note = format!("updated {what}");
            publish(ctx, c, EventType::Normal, "Updated", note, related).await;
        }
        Applied::Unchanged => {}
    }
    Ok(())
}

/// The cluster CA and the nodes' certificate when the listener has TLS, the clients CA when
/// clients authenticate with certificates; each kept in its Secret and renewed before it
/// expires. Nodes reread renewed files in place; a renewed CA stays trusted beside the new
/// one (the bundle) until it expires. Returns why it failed, for the status.
async fn ensure_certificates(c: &Cluster, ctx: &Ctx) -> Result<(), String> {
    let l = &c.spec.listener;
    if !secured(c) {
        return Ok(());
    }
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace_of(c, &ctx.cfg));
    let now = std::time::SystemTime::now();
    let validity = certs::Validity::default();
    let fail = |what: &str, e: certs::CertError| format!("{what}: {e}");
    // (CA Secret, public Secret, what it is). The cluster CA signs the nodes' certificate,
    // which serves the client listener with tls and, on every secured cluster, the mutual
    // TLS nodes replicate over.
    let mut cas = vec![(
        cluster_ca_secret_name(c),
        cluster_ca_cert_secret_name(c),
        "cluster CA",
    )];
    if l.authentication == ListenerAuthentication::Tls {
        cas.push((
            clients_ca_secret_name(c),
            clients_ca_cert_secret_name(c),
            "clients CA",
        ));
    }
    for (private, public, what) in cas {
        let (ca, bundle, changed) = certs::ensure_ca(
            &secrets,
            &private,
            meta(c, &ctx.cfg, private.clone()),
            now,
            &validity,
        )
        .await
        .map_err(|e| fail(what, e))?;
        if changed {
            let note = format!("{what} in Secret {private} created or renewed");
            publish(
                ctx,
                c,
                EventType::Normal,
                "CertificateAuthority",
                note,
                None,
            )
            .await;
        }
        let trust = Secret {
            metadata: meta(c, &ctx.cfg, public.clone()),
            data: Some(BTreeMap::from([(
                certs::CA_CERT.to_string(),
                ByteString(bundle.clone().into_bytes()),
            )])),
            type_: Some("Opaque".into()),
            ..Default::default()
        };
        apply_and_tell(ctx, c, &trust)
            .await
            .map_err(|e| format!("{what} certificate Secret {public}: {e}"))?;
        if what == "cluster CA" {
            let name = node_tls_secret_name(c);
            let changed = certs::ensure_server(
                &secrets,
                &name,
                meta(c, &ctx.cfg, name.clone()),
                &ca,
                &bundle,
                &node_dns_names(c, &ctx.cfg),
                now,
                &validity,
            )
            .await
            .map_err(|e| fail("node certificate", e))?;
            if changed {
                let note = format!("node certificate in Secret {name} issued");
                publish(ctx, c, EventType::Normal, "Certificate", note, None).await;
            }
        }
    }
    Ok(())
}

/// Grows every existing volume of the cluster to `spec.storage.size` (the StatefulSet's claim
/// template cannot change, so its PVCs are patched). Returns what failed.
async fn grow_volumes(ctx: &Ctx, c: &Cluster, replicas: i32) -> Vec<String> {
    let want = &c.spec.storage.size.0;
    let Some(want_bytes) = quantity_bytes(want) else {
        return vec![format!("storage.size {want:?} is not a quantity")];
    };
    let api: Api<PersistentVolumeClaim> =
        Api::namespaced(ctx.client.clone(), &namespace_of(c, &ctx.cfg));
    let mut failures = Vec::new();
    for i in 0..replicas {
        let name = format!("{DATA_VOLUME}-{}-{i}", c.name_any());
        let pvc = match api.get_opt(&name).await {
            Ok(Some(p)) => p,
            Ok(None) => continue,
            Err(e) => {
                failures.push(format!("{name}: {}", api_message(&e)));
                continue;
            }
        };
        let has = pvc
            .spec
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage"))
            .and_then(|q| quantity_bytes(&q.0));
        if has.is_some_and(|h| h >= want_bytes) {
            continue;
        }
        let patch = serde_json::json!({"spec": {"resources": {"requests": {"storage": want}}}});
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        match api.patch(&name, &params, &Patch::Merge(&patch)).await {
            Ok(_) => {
                tracing::info!(pvc = %name, size = %want, "volume grown");
                publish(
                    ctx,
                    c,
                    EventType::Normal,
                    "VolumeResized",
                    format!("asked for {want} on {name}"),
                    Some(pvc.object_ref(&())),
                )
                .await;
            }
            Err(e) => failures.push(format!("{name}: {}", api_message(&e))),
        }
    }
    failures
}

async fn write_status(c: &Cluster, ctx: &Ctx, o: &Observed) -> Result<(), ReconcileError> {
    let mut status = status_for(c, &ctx.cfg, o);
    if let Some(old) = &c.status {
        carry_transitions(&old.conditions, &mut status.conditions);
        if *old == status {
            return Ok(());
        }
        let was_degraded = old
            .conditions
            .iter()
            .find(|x| x.type_ == CONDITION_DEGRADED);
        let now_degraded = status
            .conditions
            .iter()
            .find(|x| x.type_ == CONDITION_DEGRADED);
        if let Some(d) = now_degraded.filter(|d| d.status == "True") {
            if was_degraded.map(|w| (&w.status, &w.reason)) != Some((&d.status, &d.reason)) {
                publish(
                    ctx,
                    c,
                    EventType::Warning,
                    &d.reason,
                    d.message.clone(),
                    None,
                )
                .await;
            }
        }
    }
    let old = serde_json::to_value(&c.status).unwrap_or_default();
    let new = serde_json::to_value(&status).unwrap_or_default();
    let patch = serde_json::json!({ "status": merge_patch(&old, &new) });
    ctx.api
        .patch_status(
            &c.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    Ok(())
}

async fn apply_cluster(c: &Cluster, ctx: &Ctx) -> Result<Action, ReconcileError> {
    if c.name_any() != ctx.cfg.cluster_name {
        let why = format!(
            "this namespace's controller serves Cluster {:?} (strata-operator --cluster-name); \
             a namespace holds one Strata cluster",
            ctx.cfg.cluster_name
        );
        let o = Observed {
            refused: Some(("NotServed", why)),
            ..Default::default()
        };
        write_status(c, ctx, &o).await?;
        return Ok(Action::await_change());
    }
    if let Err(why) = validate(c) {
        let o = Observed {
            refused: Some(("InvalidSpec", why)),
            ..Default::default()
        };
        write_status(c, ctx, &o).await?;
        return Ok(Action::await_change());
    }
    let ns = namespace_of(c, &ctx.cfg);
    let sts_api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &ns);
    let existing = sts_api.get_opt(&c.name_any()).await?;
    let current = existing
        .as_ref()
        .and_then(|s| s.spec.as_ref())
        .and_then(|s| s.replicas);
    let want = c.spec.nodes;
    let outcome = ctx
        .controller
        .rebalance((0..want).collect(), ctx.cfg.max_partition_moves)
        .await?;
    if !outcome.started.is_empty() {
        let moving: Vec<String> = outcome
            .started
            .iter()
            .take(10)
            .map(|m| format!("{}-{} {:?}->{:?}", m.topic, m.partition, m.from, m.to))
            .collect();
        publish(
            ctx,
            c,
            EventType::Normal,
            "Rebalancing",
            format!(
                "started moving {} partitions: {}",
                outcome.started.len(),
                moving.join(", ")
            ),
            None,
        )
        .await;
    }
    let replicas = replicas_to_apply(want, current, outcome.drained);
    if current.is_some_and(|n| replicas < n) {
        publish(
            ctx,
            c,
            EventType::Normal,
            "ScalingDown",
            format!("nodes {want}.. drained; shrinking the StatefulSet to {replicas}"),
            None,
        )
        .await;
    }

    apply_and_tell(ctx, c, &config_map(c, &ctx.cfg)).await?;
    apply_and_tell(ctx, c, &headless_service(c, &ctx.cfg)).await?;
    apply_and_tell(ctx, c, &bootstrap_service(c, &ctx.cfg)).await?;
    apply_and_tell(ctx, c, &pod_disruption_budget(c, &ctx.cfg)).await?;
    if secured(c) {
        apply_and_tell(ctx, c, &network_policy(c, &ctx.cfg)).await?;
    }
    if let Err(why) = ensure_certificates(c, ctx).await {
        let o = Observed {
            refused: Some(("CertificatesFailed", why)),
            ..Default::default()
        };
        write_status(c, ctx, &o).await?;
        return Ok(Action::requeue(Duration::from_secs(10)));
    }
    let mut sts = statefulset(c, &ctx.cfg, replicas);
    // Claim templates are immutable: keep the existing ones; volumes grow through their PVCs.
    if let (Some(spec), Some(old)) = (
        sts.spec.as_mut(),
        existing.as_ref().and_then(|s| s.spec.as_ref()),
    ) {
        spec.volume_claim_templates = old.volume_claim_templates.clone();
    }
    apply_and_tell(ctx, c, &sts).await?;
    let resize_failures = grow_volumes(ctx, c, replicas.max(current.unwrap_or(0))).await;

    let md = ctx.controller.subscribe().borrow().clone();
    let (ready_nodes, down_nodes) = node_health(&md, want);
    let roll = roll_nodes(ctx, c, &ns, &md).await?;
    let busy = replicas != want
        || outcome.in_flight > 0
        || outcome.deferred > 0
        || !outcome.waiting_for.is_empty()
        || roll.is_some();
    let o = Observed {
        ready_nodes,
        down_nodes,
        replicas,
        rebalance: Some(outcome),
        resize_failures,
        refused: None,
        roll,
    };
    write_status(c, ctx, &o).await?;
    Ok(Action::requeue(if busy {
        Duration::from_secs(5)
    } else {
        Duration::from_secs(60)
    }))
}

/// The roller's view of a node pod (None for a pod whose name has no ordinal).
fn node_pod(c: &Cluster, p: &Pod) -> Option<NodePod> {
    let name = p.name_any();
    let ordinal = name
        .strip_prefix(&format!("{}-", c.name_any()))?
        .parse()
        .ok()?;
    let ready = p
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    Some(NodePod {
        ordinal,
        uid: p.metadata.uid.clone(),
        revision: p.labels().get("controller-revision-hash").cloned(),
        ready,
        terminating: p.metadata.deletion_timestamp.is_some(),
        name,
    })
}

/// One step of a roll of the node pods (see [`roll`]): reads the StatefulSet and its pods
/// fresh from the API server, deletes at most one pod, and says how far the roll is.
async fn roll_nodes(
    ctx: &Ctx,
    c: &Cluster,
    ns: &str,
    md: &Image,
) -> Result<Option<roll::Progress>, ReconcileError> {
    let sts_api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), ns);
    let Some(sts) = sts_api.get_opt(&c.name_any()).await? else {
        return Ok(None);
    };
    let status = sts.status.clone().unwrap_or_default();
    let set = SetState {
        update_revision: status.update_revision.clone(),
        observed: status.observed_generation >= sts.metadata.generation,
        replicas: sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0),
    };
    if set.update_revision.is_none() {
        return Ok(None);
    }
    let selector = selector_labels(c)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let pod_api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let pods: Vec<NodePod> = pod_api
        .list(&ListParams::default().labels(&selector))
        .await?
        .items
        .iter()
        .filter_map(|p| node_pod(c, p))
        .collect();
    let progress = roll::next_step(&set, &pods, &under_replicated(md));
    if let Some(roll::Progress {
        step: Step::Replace { pod, uid, why },
        updated,
        nodes,
        revision,
    }) = &progress
    {
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match pod_api.delete(pod, &dp).await {
            Ok(_) => {
                tracing::info!(%pod, %revision, updated, nodes, %why, "replacing node pod");
                publish(
                    ctx,
                    c,
                    EventType::Normal,
                    "RestartingNode",
                    format!(
                        "replacing pod {pod} for revision {revision} ({updated} of {nodes} \
                         updated): {why}"
                    ),
                    // The pod as the related object: Events of one key are aggregated, so
                    // without it every replacement after the first would only bump a count.
                    Some(ObjectReference {
                        api_version: Some("v1".into()),
                        kind: Some("Pod".into()),
                        name: Some(pod.clone()),
                        namespace: Some(ns.to_string()),
                        uid: uid.clone(),
                        ..Default::default()
                    }),
                )
                .await;
            }
            // Gone or replaced since the list: the next reconcile sees what is there now.
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(progress)
}

async fn reconcile(c: Arc<Cluster>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    let started = Instant::now();
    let span = tracing::info_span!("reconcile", cluster = %c.name_any());
    let res = apply_cluster(&c, &ctx).instrument(span).await;
    ctx.metrics
        .observe_reconcile("cluster", started.elapsed(), res.is_ok());
    res
}

fn error_policy(c: Arc<Cluster>, e: &ReconcileError, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(cluster = %c.name_any(), error = %e, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

/// A recorder for events about Cluster resources, reported as this operator replica.
pub fn recorder(client: kube::Client, identity: &str) -> Recorder {
    Recorder::new(
        client,
        Reporter {
            controller: FIELD_MANAGER.into(),
            instance: Some(identity.into()),
        },
    )
}

/// Run the Cluster controller until the process stops.
pub async fn run(ctx: Arc<Ctx>) {
    let ns = ctx.cfg.namespace.clone();
    let owned = || watcher::Config::default().labels(CLUSTER_LABEL);
    // Node liveness and partition moves show in the controller's image: each change
    // re-reconciles (debounced), which also starts the next moves.
    let trigger = tokio_stream::wrappers::WatchStream::new(ctx.controller.subscribe()).map(|_| ());
    Controller::new(ctx.api.clone(), watcher::Config::default())
        .owns(
            Api::<StatefulSet>::namespaced(ctx.client.clone(), &ns),
            owned(),
        )
        .owns(Api::<Service>::namespaced(ctx.client.clone(), &ns), owned())
        .owns(
            Api::<ConfigMap>::namespaced(ctx.client.clone(), &ns),
            owned(),
        )
        .owns(
            Api::<PodDisruptionBudget>::namespaced(ctx.client.clone(), &ns),
            owned(),
        )
        // Node pods going Ready (or away) move a roll on.
        .watches(
            Api::<Pod>::namespaced(ctx.client.clone(), &ns),
            owned(),
            |pod| {
                let ns = pod.namespace()?;
                let name = pod.labels().get(CLUSTER_LABEL)?.clone();
                Some(kube::runtime::reflector::ObjectRef::<Cluster>::new(&name).within(&ns))
            },
        )
        .with_config(ControllerConfig::default().debounce(Duration::from_millis(500)))
        .reconcile_all_on(trigger)
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|_| async {})
        .await;
}

#[cfg(test)]
mod tests;
