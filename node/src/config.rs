//! Command-line and environment configuration, validated into an immutable `NodeConfig`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};

use crate::log::config::{validate_entry_for, validate_for_node};

/// When appended data is fsynced before a produce is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FlushPolicy {
    /// fsync (group-committed) before acknowledging acks=all produces; acks=0/1 rely on the
    /// page cache. Survives process crashes always and power loss for acks=all.
    AcksAll,
    /// fsync before acknowledging every produce, whatever its acks.
    Always,
    /// Never fsync on the produce path (Apache Kafka's default): survives process crashes,
    /// not power loss. Segments are still fsynced when they roll and at shutdown.
    Never,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// strata-node: a Kafka-compatible storage node.
///
/// With no flags it is a complete single-node broker on 127.0.0.1:9092 keeping data in ./data.
#[derive(Debug, Clone, Parser)]
#[command(name = "strata-node", version, about, long_about = None)]
pub struct Args {
    /// Address the Kafka listener binds to.
    #[arg(long, env = "STRATA_LISTEN", default_value = "127.0.0.1:9092")]
    pub listen: SocketAddr,

    /// Address advertised to clients in Metadata (HOST:PORT); defaults to the listen address.
    #[arg(long, env = "STRATA_ADVERTISE")]
    pub advertise: Option<String>,

    /// Directory holding partition logs and metadata.
    #[arg(long, env = "STRATA_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// This node's id in the cluster.
    #[arg(long, env = "STRATA_NODE_ID", default_value_t = 1)]
    pub node_id: i32,

    /// When produced data is fsynced before the produce is acknowledged.
    #[arg(long, env = "STRATA_FLUSH_POLICY", value_enum, default_value_t = FlushPolicy::AcksAll)]
    pub flush_policy: FlushPolicy,

    /// Largest request frame accepted; larger frames close the connection before any
    /// allocation (Kafka's socket.request.max.bytes).
    #[arg(long, env = "STRATA_MAX_REQUEST_BYTES", default_value_t = 104_857_600)]
    pub max_request_bytes: usize,

    /// Most client connections served at once.
    #[arg(long, env = "STRATA_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// Segment files kept open at once; the least recently used are closed past it and
    /// reopened on use, so a node hosts far more partitions than its file limit. Default:
    /// half of the file limit (raised to its hard value at start) after a reserve of 256.
    #[arg(long, env = "STRATA_MAX_OPEN_FILES")]
    pub max_open_files: Option<usize>,

    /// Create unknown topics on Metadata and Produce (Kafka's auto.create.topics.enable).
    #[arg(long, env = "STRATA_AUTO_CREATE_TOPICS", default_value_t = true, action = clap::ArgAction::Set)]
    pub auto_create_topics: bool,

    /// Serve Prometheus metrics on `http://HOST:PORT/metrics` (off when unset).
    #[arg(long, env = "STRATA_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// Join a cluster: the controller's gRPC address (`http://HOST:PORT`, served by
    /// `strata-operator`). Without it the node is a standalone broker with its own metadata.
    #[arg(long, env = "STRATA_CONTROLLER")]
    pub controller: Option<String>,

    /// A follower that has not caught up with the leader's log end for this long leaves the
    /// ISR (Kafka's replica.lag.time.max.ms).
    #[arg(long, env = "STRATA_REPLICA_LAG_TIME_MAX_MS", default_value_t = 30_000)]
    pub replica_lag_time_max_ms: u64,

    /// Longest a follower's fetch waits at the leader for new data (replica.fetch.wait.max.ms).
    #[arg(long, env = "STRATA_REPLICA_FETCH_WAIT_MAX_MS", default_value_t = 500)]
    pub replica_fetch_wait_max_ms: u64,

    /// On SIGTERM in a cluster, wait at most this long for the controller to move this node's
    /// leaderships to other in-sync replicas before closing the listener (Kafka's controlled
    /// shutdown). A node that is the last in-sync replica of a partition stops after it.
    #[arg(
        long,
        env = "STRATA_CONTROLLED_SHUTDOWN_TIMEOUT_MS",
        default_value_t = 30_000
    )]
    pub controlled_shutdown_timeout_ms: u64,

    /// `/ready` (on the metrics listener) turns true once this node has the cluster metadata
    /// and every partition it follows is back in the ISR, or this long after it registered,
    /// whichever comes first (a partition whose leader is gone cannot be caught up).
    #[arg(
        long,
        env = "STRATA_READY_CATCH_UP_TIMEOUT_MS",
        default_value_t = 300_000
    )]
    pub ready_catch_up_timeout_ms: u64,

    /// Partitions of auto-created topics and of CreateTopics with -1 (Kafka's num.partitions).
    #[arg(long, env = "STRATA_NUM_PARTITIONS", default_value_t = 1)]
    pub num_partitions: i32,

    /// Partitions of the internal __consumer_offsets topic (offsets.topic.num.partitions).
    #[arg(long, env = "STRATA_OFFSETS_TOPIC_PARTITIONS", default_value_t = 50)]
    pub offsets_topic_partitions: i32,

    /// Partitions of the internal __transaction_state topic
    /// (transaction.state.log.num.partitions).
    #[arg(
        long,
        env = "STRATA_TRANSACTION_STATE_PARTITIONS",
        default_value_t = 50
    )]
    pub transaction_state_partitions: i32,

    /// Longest transaction timeout a producer may ask for (transaction.max.timeout.ms).
    #[arg(
        long,
        env = "STRATA_TRANSACTION_MAX_TIMEOUT_MS",
        default_value_t = 900_000
    )]
    pub transaction_max_timeout_ms: i32,

    /// How long a transactional id with no transaction open is kept after its last change
    /// (transactional.id.expiration.ms).
    #[arg(
        long,
        env = "STRATA_TRANSACTIONAL_ID_EXPIRATION_MS",
        default_value_t = 604_800_000
    )]
    pub transactional_id_expiration_ms: i64,

    /// How long a producer's state in a partition (its epoch, sequence numbers for
    /// duplicate detection) is kept after its last write, when it has no transaction open
    /// (producer.id.expiration.ms). A producer that writes again after that is taken as new.
    #[arg(
        long,
        env = "STRATA_PRODUCER_ID_EXPIRATION_MS",
        default_value_t = 86_400_000
    )]
    pub producer_id_expiration_ms: i64,

    /// How often expired producer state is removed
    /// (producer.id.expiration.check.interval.ms).
    #[arg(
        long,
        env = "STRATA_PRODUCER_ID_EXPIRATION_CHECK_INTERVAL_MS",
        default_value_t = 600_000
    )]
    pub producer_id_expiration_check_interval_ms: u64,

    /// The finalized `transaction.version` feature level clients are told (KIP-584):
    /// 2 lets Java 4.x producers use KIP-890's second part (an epoch bump at the end of
    /// every transaction, partitions added by produce), 0 keeps every client on the
    /// first protocol, as `kafka-features.sh downgrade` would.
    #[arg(
        long,
        env = "STRATA_TRANSACTION_VERSION",
        default_value_t = 2,
        value_parser = clap::value_parser!(i16).range(0..=2)
    )]
    pub transaction_version: i16,

    /// Node-wide default for a topic config, KEY=VALUE with Kafka's topic config names
    /// (repeatable; comma-separated in the environment variable).
    #[arg(
        long = "topic-default",
        env = "STRATA_TOPIC_DEFAULT",
        value_delimiter = ','
    )]
    pub topic_defaults: Vec<String>,

    /// How often retention runs (Kafka's log.retention.check.interval.ms).
    #[arg(
        long,
        env = "STRATA_RETENTION_CHECK_INTERVAL_MS",
        default_value_t = 300_000
    )]
    pub retention_check_interval_ms: u64,

    /// How often the compactor looks for dirty compacted logs (log.cleaner.backoff.ms).
    #[arg(long, env = "STRATA_COMPACTION_INTERVAL_MS", default_value_t = 15_000)]
    pub compaction_interval_ms: u64,

    /// How long the first rebalance of an empty group waits for more members
    /// (Kafka's group.initial.rebalance.delay.ms).
    #[arg(
        long,
        env = "STRATA_GROUP_INITIAL_REBALANCE_DELAY_MS",
        default_value_t = 3000
    )]
    pub group_initial_rebalance_delay_ms: u64,

    /// Smallest session timeout a consumer may ask for (group.min.session.timeout.ms).
    #[arg(
        long,
        env = "STRATA_GROUP_MIN_SESSION_TIMEOUT_MS",
        default_value_t = 6000
    )]
    pub group_min_session_timeout_ms: i32,

    /// Largest session timeout a consumer may ask for (group.max.session.timeout.ms).
    #[arg(
        long,
        env = "STRATA_GROUP_MAX_SESSION_TIMEOUT_MS",
        default_value_t = 1_800_000
    )]
    pub group_max_session_timeout_ms: i32,

    /// How long committed offsets of an empty group are kept (offsets.retention.minutes).
    #[arg(
        long,
        env = "STRATA_OFFSETS_RETENTION_MINUTES",
        default_value_t = 10080
    )]
    pub offsets_retention_minutes: u64,

    /// How often expired offsets are removed (offsets.retention.check.interval.ms).
    #[arg(
        long,
        env = "STRATA_OFFSETS_RETENTION_CHECK_INTERVAL_MS",
        default_value_t = 600_000
    )]
    pub offsets_retention_check_interval_ms: u64,

    /// Log output format.
    #[arg(long, env = "STRATA_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Tiered storage: `s3://BUCKET/PREFIX` (endpoint, region and keys from AWS_ENDPOINT,
    /// AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ALLOW_HTTP) or
    /// `file:///PATH`. Without it, topics cannot enable remote.storage.enable.
    #[arg(long, env = "STRATA_OBJECT_STORE")]
    pub object_store: Option<String>,

    /// Bytes of bucket data cached in memory for reads below the local log start.
    #[arg(long, env = "STRATA_REMOTE_CACHE_BYTES", default_value_t = 256 << 20)]
    pub remote_cache_bytes: u64,

    /// Bytes of bucket data kept on the node's volume (under the data directory's
    /// remote-cache/) for reads below the local log start; it survives restarts. 0: none.
    #[arg(long, env = "STRATA_REMOTE_DISK_CACHE_BYTES", default_value_t = 1 << 30)]
    pub remote_disk_cache_bytes: u64,

    /// How often the uploader looks for closed segments to tier.
    #[arg(long, env = "STRATA_TIERING_INTERVAL_MS", default_value_t = 1000)]
    pub tiering_interval_ms: u64,

    /// Restore the topics (names, configs, data) of a cluster from its bucket prefix
    /// (`s3://BUCKET/PREFIX` or `file:///PATH`, as `--object-store`): this node's own
    /// `--object-store` restores in place, another prefix is copied into ours first. Done
    /// once: a `restore.json` in our prefix records it. Needs `--object-store`.
    #[arg(long, env = "STRATA_RESTORE_FROM")]
    pub restore_from: Option<String>,

    #[command(flatten)]
    pub security: crate::security::config::SecurityArgs,
}

/// Validated, immutable node configuration.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub listen: SocketAddr,
    pub advertised_host: String,
    pub advertised_port: i32,
    pub data_dir: PathBuf,
    pub node_id: i32,
    pub flush_policy: FlushPolicy,
    pub max_request_bytes: usize,
    pub max_connections: usize,
    pub max_open_files: Option<usize>,
    pub auto_create_topics: bool,
    pub num_partitions: i32,
    pub offsets_topic_partitions: i32,
    pub transaction_state_partitions: i32,
    pub transaction_max_timeout_ms: i32,
    pub transactional_id_expiration_ms: i64,
    pub producer_id_expiration_ms: i64,
    pub producer_id_expiration_check_interval_ms: u64,
    pub transaction_version: i16,
    pub topic_defaults: BTreeMap<String, String>,
    pub retention_check_interval_ms: u64,
    pub compaction_interval_ms: u64,
    pub group_initial_rebalance_delay_ms: u64,
    pub group_min_session_timeout_ms: i32,
    pub group_max_session_timeout_ms: i32,
    pub offsets_retention_minutes: u64,
    pub offsets_retention_check_interval_ms: u64,
    /// The controller to join (cluster mode), or None (standalone).
    pub controller: Option<String>,
    /// Where `/metrics` is served, if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    pub replica_lag_time_max_ms: u64,
    pub replica_fetch_wait_max_ms: u64,
    /// Bound of the controlled shutdown on SIGTERM (cluster mode).
    pub controlled_shutdown_timeout_ms: u64,
    /// Longest `/ready` waits for this node's partitions to be in sync.
    pub ready_catch_up_timeout_ms: u64,
    /// Tiered storage settings, when `--object-store` is given.
    pub tiering: Option<crate::tiering::TieringOptions>,
    /// Restore the topics of the cluster whose bucket prefix this is, once.
    pub restore_from: Option<String>,
    /// Listeners, TLS, SASL, the authorizer and connection limits.
    pub security: crate::security::config::SecurityConfig,
}

impl Args {
    /// Validate into a `NodeConfig`, explaining the first problem found.
    pub fn validate(self) -> Result<NodeConfig, String> {
        let (host, port) = match &self.advertise {
            Some(a) => {
                let (h, p) = a
                    .rsplit_once(':')
                    .ok_or_else(|| format!("--advertise {a:?} must be HOST:PORT"))?;
                let p: u16 = p
                    .parse()
                    .map_err(|_| format!("--advertise {a:?}: bad port"))?;
                (
                    h.trim_matches(|c| c == '[' || c == ']').to_string(),
                    p as i32,
                )
            }
            None => {
                let ip = self.listen.ip();
                let host = if ip.is_unspecified() {
                    "127.0.0.1".to_string()
                } else {
                    ip.to_string()
                };
                (host, self.listen.port() as i32)
            }
        };
        if self.node_id < 0 {
            return Err("--node-id must be 0 or more".into());
        }
        if self.transaction_state_partitions < 1
            || self.transaction_max_timeout_ms < 1
            || self.transactional_id_expiration_ms < 1
            || self.producer_id_expiration_ms < 1
        {
            return Err(
                "--transaction-state-partitions, --transaction-max-timeout-ms, --transactional-id-expiration-ms and --producer-id-expiration-ms must be at least 1"
                    .into(),
            );
        }
        if self.num_partitions < 1 || self.offsets_topic_partitions < 1 {
            return Err(
                "--num-partitions and --offsets-topic-partitions must be at least 1".into(),
            );
        }
        if self.group_min_session_timeout_ms > self.group_max_session_timeout_ms {
            return Err(
                "--group-min-session-timeout-ms exceeds --group-max-session-timeout-ms".into(),
            );
        }
        if self.max_request_bytes < 1024 {
            return Err("--max-request-bytes must be at least 1024".into());
        }
        let tiering = match &self.object_store {
            Some(url) if !url.starts_with("s3://") && !url.starts_with("file:///") => {
                return Err(format!(
                    "--object-store {url:?} must be s3://BUCKET/PREFIX or file:///PATH"
                ));
            }
            Some(url) => Some(crate::tiering::TieringOptions {
                url: url.clone(),
                cache_bytes: self.remote_cache_bytes.max(1 << 20),
                disk_cache: (self.remote_disk_cache_bytes > 0).then(|| {
                    (
                        self.data_dir.join(crate::tiering::DISK_CACHE_DIR),
                        self.remote_disk_cache_bytes,
                    )
                }),
                interval: std::time::Duration::from_millis(self.tiering_interval_ms.max(10)),
                compaction_interval: std::time::Duration::from_millis(
                    self.compaction_interval_ms.max(10),
                ),
            }),
            None => None,
        };
        match (&self.restore_from, &tiering) {
            (Some(_), None) => return Err("--restore-from needs --object-store".into()),
            (Some(url), Some(_)) if !url.starts_with("s3://") && !url.starts_with("file:///") => {
                return Err(format!(
                    "--restore-from {url:?} must be s3://BUCKET/PREFIX or file:///PATH"
                ))
            }
            _ => {}
        }
        let mut defaults = BTreeMap::new();
        for kv in &self.topic_defaults {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| format!("--topic-default {kv:?} must be KEY=VALUE"))?;
            validate_entry_for(k, v, tiering.is_some())
                .map_err(|e| format!("--topic-default: {e}"))?;
            defaults.insert(k.to_string(), v.to_string());
        }
        validate_for_node(&BTreeMap::new(), &defaults, tiering.is_some())
            .map_err(|e| format!("--topic-default: {e}"))?;
        let security = self.security.validate(self.listen, (host, port))?;
        let inter = security.inter_broker().clone();
        Ok(NodeConfig {
            listen: inter.bind,
            advertised_host: inter.advertised_host,
            advertised_port: inter.advertised_port,
            data_dir: self.data_dir,
            node_id: self.node_id,
            flush_policy: self.flush_policy,
            max_request_bytes: self.max_request_bytes,
            max_connections: self.max_connections.max(1),
            max_open_files: self.max_open_files,
            auto_create_topics: self.auto_create_topics,
            num_partitions: self.num_partitions,
            offsets_topic_partitions: self.offsets_topic_partitions,
            transaction_state_partitions: self.transaction_state_partitions,
            transaction_max_timeout_ms: self.transaction_max_timeout_ms,
            transactional_id_expiration_ms: self.transactional_id_expiration_ms,
            producer_id_expiration_ms: self.producer_id_expiration_ms,
            producer_id_expiration_check_interval_ms: self
                .producer_id_expiration_check_interval_ms
                .max(10),
            transaction_version: self.transaction_version,
            topic_defaults: defaults,
            retention_check_interval_ms: self.retention_check_interval_ms.max(10),
            compaction_interval_ms: self.compaction_interval_ms.max(10),
            group_initial_rebalance_delay_ms: self.group_initial_rebalance_delay_ms,
            group_min_session_timeout_ms: self.group_min_session_timeout_ms,
            group_max_session_timeout_ms: self.group_max_session_timeout_ms,
            offsets_retention_minutes: self.offsets_retention_minutes,
            offsets_retention_check_interval_ms: self.offsets_retention_check_interval_ms.max(10),
            controller: self.controller,
            metrics_listen: self.metrics_listen,
            replica_lag_time_max_ms: self.replica_lag_time_max_ms.max(100),
            replica_fetch_wait_max_ms: self.replica_fetch_wait_max_ms.max(1),
            controlled_shutdown_timeout_ms: self.controlled_shutdown_timeout_ms,
            ready_catch_up_timeout_ms: self.ready_catch_up_timeout_ms,
            tiering,
            restore_from: self.restore_from,
            security,
        })
    }
}

impl NodeConfig {
    /// A config for tests: loopback on port 0, data in `dir`.
    pub fn for_tests(dir: PathBuf) -> NodeConfig {
        Args::parse_from(["strata-node", "--listen", "127.0.0.1:0"])
            .validate()
            .map(|mut c| {
                c.data_dir = dir;
                // Registration with the controller needs a real port to advertise.
                c.advertised_port = 9092;
                c.security.listeners[0].advertised_port = 9092;
                c
            })
            .expect("valid test config")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_single_node_localhost() {
        let c = Args::parse_from(["strata-node"]).validate().unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:9092");
        assert_eq!(
            (c.advertised_host.as_str(), c.advertised_port),
            ("127.0.0.1", 9092)
        );
        assert_eq!(c.data_dir, PathBuf::from("./data"));
        assert_eq!(c.flush_policy, FlushPolicy::AcksAll);
    }

    #[test]
    fn advertise_and_topic_defaults() {
        let c = Args::parse_from([
            "strata-node",
            "--advertise",
            "broker-0.example:19092",
            "--topic-default",
            "retention.ms=1000",
        ])
        .validate()
        .unwrap();
        assert_eq!(c.advertised_host, "broker-0.example");
        assert_eq!(c.advertised_port, 19092);
        assert_eq!(c.topic_defaults["retention.ms"], "1000");
        assert!(
            Args::parse_from(["strata-node", "--topic-default", "bogus=1"])
                .validate()
                .is_err()
        );
    }

    fn with_replication(protocol: &str, extra: &[&str]) -> Result<NodeConfig, String> {
        let map = format!("REPLICATION:{protocol},CLIENTS:SASL_SSL");
        let mut args = vec![
            "strata-node",
            "--listeners",
            "REPLICATION://127.0.0.1:0,CLIENTS://127.0.0.1:0",
            "--listener-security-protocol-map",
            &map,
            "--inter-broker-listener-name",
            "REPLICATION",
            "--tls-cert-file",
            "/certs/tls.crt",
            "--tls-key-file",
            "/certs/tls.key",
        ];
        args.extend_from_slice(extra);
        Args::parse_from(args).validate()
    }

    #[test]
    fn nodes_replicate_over_plaintext_or_mutual_tls() {
        assert!(with_replication("PLAINTEXT", &[]).is_ok());
        let c = with_replication(
            "SSL",
            &[
                "--inter-broker-tls-ca-file",
                "/certs/ca.crt",
                "--inter-broker-tls-server-name",
                "nodes.example",
            ],
        )
        .unwrap();
        let ib = c
            .security
            .inter_broker_tls
            .expect("mutual TLS between nodes");
        assert_eq!(ib.ca, PathBuf::from("/certs/ca.crt"));
        assert_eq!(ib.server_name.as_deref(), Some("nodes.example"));

        let no_ca = with_replication("SSL", &[]).unwrap_err();
        assert!(no_ca.contains("--inter-broker-tls-ca-file"), "{no_ca}");
        let sasl = with_replication("SASL_SSL", &[]).unwrap_err();
        assert!(sasl.contains("not SASL"), "{sasl}");
        let stray = with_replication(
            "PLAINTEXT",
            &["--inter-broker-tls-ca-file", "/certs/ca.crt"],
        )
        .unwrap_err();
        assert!(
            stray.contains("needs an SSL inter-broker listener"),
            "{stray}"
        );
    }
}
