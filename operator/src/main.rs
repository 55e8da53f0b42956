//! strata-operator: hosts the Strata controller and reconciles `Topic` resources on
//! Kubernetes.
//!
//! `strata-operator local` runs the controller without Kubernetes, its state in a local
//! directory: several `strata-node` processes on this machine (or others) join it.
//! `strata-operator kubernetes` hosts it on a cluster (src/k8s): Lease election among
//! replicas, state in a Secret, Topic and Cluster resources reconciled (a Cluster becomes
//! the StatefulSet of nodes and its Services; scaling moves partitions).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use strata_controller::core::{self, MAX_PARTITIONS};
use strata_controller::service::{ControllerService, ServiceConfig};
use strata_controller::store::FileStore;
use tracing_subscriber::EnvFilter;

/// strata-operator: hosts the Strata controller.
#[derive(Debug, Parser)]
#[command(
    name = "strata-operator",
    version,
    about,
    arg_required_else_help = true
)]
struct Cli {
    /// Log format (`RUST_LOG` filters; default level info).
    #[arg(long, env = "STRATA_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the controller without Kubernetes, keeping cluster metadata in a local directory.
    Local(LocalArgs),
    /// Host the controller on Kubernetes: elect a leader among replicas with a Lease, keep the
    /// metadata in a ConfigMap, and reconcile Topic resources.
    Kubernetes(Box<KubeArgs>),
}

/// Flags of `strata-operator kubernetes`.
#[derive(Debug, Clone, clap::Args)]
struct KubeArgs {
    /// Namespace of the resources, the Lease and the state Secret (default: the client's).
    #[arg(long, env = "STRATA_NAMESPACE")]
    namespace: Option<String>,

    /// gRPC address nodes connect to while this replica leads.
    #[arg(long, env = "STRATA_CONTROLLER_LISTEN", default_value = "0.0.0.0:9093")]
    listen: SocketAddr,

    /// Serve Prometheus metrics at /metrics (off when unset).
    #[arg(long, env = "STRATA_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,

    /// This replica's name in the Lease (default: $POD_NAME, else the host name and pid).
    #[arg(long, env = "STRATA_IDENTITY")]
    identity: Option<String>,

    /// Name of the coordination.k8s.io Lease replicas compete for.
    #[arg(long, env = "STRATA_LEASE_NAME", default_value = "strata-operator")]
    lease_name: String,

    /// A leader that has not renewed the Lease for this long is replaced.
    #[arg(long, env = "STRATA_LEASE_DURATION_MS", default_value_t = 15_000)]
    lease_duration_ms: u64,

    /// Secret holding the controller's state.
    #[arg(
        long,
        env = "STRATA_STATE_SECRET",
        default_value = "strata-controller-state"
    )]
    state_secret: String,

    /// Legacy ConfigMap the state is migrated from (read once, deleted after the first write
    /// of the Secret).
    #[arg(
        long,
        env = "STRATA_STATE_CONFIGMAP",
        default_value = "strata-controller-state"
    )]
    state_configmap: String,

    /// The namespace's Cluster resource: the one whose nodes this controller serves, and the
    /// one Topic resources made for topics created through Kafka point to.
    #[arg(long, env = "STRATA_CLUSTER_NAME", default_value = "strata")]
    cluster_name: String,

    /// Image of the nodes of Cluster resources that do not name one.
    #[arg(
        long,
        env = "STRATA_NODE_IMAGE",
        default_value = concat!("ghcr.io/strata/strata-node:", env!("CARGO_PKG_VERSION"))
    )]
    node_image: String,

    /// ServiceAccount of node pods (they mount no token; default: the namespace's default).
    #[arg(long, env = "STRATA_NODE_SERVICE_ACCOUNT")]
    node_service_account: Option<String>,

    /// Controller address(es) nodes are given (their `--controller`), comma-separated;
    /// `{namespace}` is replaced by the operator's namespace.
    #[arg(
        long,
        env = "STRATA_CONTROLLER_URL",
        default_value = "http://strata-operator.{namespace}.svc:9093"
    )]
    controller_url: String,

    /// Partitions moving at once while scaling a Cluster rebalances them.
    #[arg(long, env = "STRATA_MAX_PARTITION_MOVES", default_value_t = 8)]
    max_partition_moves: usize,

    #[command(flatten)]
    controller: ControllerArgs,
}

/// The controller's own knobs, the same in every mode.
#[derive(Debug, Clone, clap::Args)]
struct ControllerArgs {
    /// A node not heard from for this long is declared dead and its leaderships move.
    #[arg(long, env = "STRATA_SESSION_TIMEOUT_MS", default_value_t = 6000)]
    session_timeout_ms: u64,

    /// How often nodes heartbeat (told to them at registration).
    #[arg(long, env = "STRATA_HEARTBEAT_INTERVAL_MS", default_value_t = 500)]
    heartbeat_interval_ms: u64,

    /// Replication factor of topics created without one (Kafka's default.replication.factor).
    #[arg(long, env = "STRATA_DEFAULT_REPLICATION_FACTOR", default_value_t = 1)]
    default_replication_factor: i32,

    /// Partitions of topics created without a count (Kafka's num.partitions).
    #[arg(long, env = "STRATA_NUM_PARTITIONS", default_value_t = 1)]
    num_partitions: i32,

    /// Replication factor of __consumer_offsets (Kafka's offsets.topic.replication.factor).
    #[arg(
        long,
        env = "STRATA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        default_value_t = 3
    )]
    offsets_topic_replication_factor: i32,

    /// Partitions of __consumer_offsets (Kafka's offsets.topic.num.partitions).
    #[arg(
        long,
        env = "STRATA_OFFSETS_TOPIC_NUM_PARTITIONS",
        default_value_t = 50
    )]
    offsets_topic_num_partitions: i32,

    /// A node whose metadata stream closed (its process died) is declared dead this long
    /// after, unless it reconnects; a node that hangs with its connection open still gets the
    /// whole session timeout.
    #[arg(long, env = "STRATA_STREAM_LOSS_GRACE_MS", default_value_t = 500)]
    stream_loss_grace_ms: u64,

    /// Move leaderships back to preferred replicas when a node's share of partitions it
    /// prefers but does not lead passes --leader-imbalance-percentage (Kafka's
    /// auto.leader.rebalance.enable).
    #[arg(long, env = "STRATA_AUTO_LEADER_REBALANCE", default_value_t = true, action = clap::ArgAction::Set)]
    auto_leader_rebalance: bool,

    /// Kafka's leader.imbalance.per.broker.percentage.
    #[arg(long, env = "STRATA_LEADER_IMBALANCE_PERCENTAGE", default_value_t = 10)]
    leader_imbalance_percentage: u32,

    /// How often leadership imbalance is checked (Kafka's leader.imbalance.check.interval.seconds,
    /// 300 s there; a node that caught up gets its leaderships back sooner here).
    #[arg(
        long,
        env = "STRATA_LEADER_IMBALANCE_CHECK_INTERVAL_MS",
        default_value_t = 5000
    )]
    leader_imbalance_check_interval_ms: u64,
}

/// Flags of `strata-operator local`. With none, a controller on 127.0.0.1:9093 keeps its state
/// in ./controller.
#[derive(Debug, Clone, clap::Args)]
struct LocalArgs {
    /// Directory holding controller.json (created if missing).
    #[arg(long, env = "STRATA_STATE_DIR", default_value = "./controller")]
    state_dir: PathBuf,

    /// gRPC address nodes connect to (`--controller` on strata-node).
    #[arg(
        long,
        env = "STRATA_CONTROLLER_LISTEN",
        default_value = "127.0.0.1:9093"
    )]
    listen: SocketAddr,

    #[command(flatten)]
    controller: ControllerArgs,
}

/// `local` mode's validated, immutable configuration.
#[derive(Debug, Clone)]
struct LocalConfig {
    state_dir: PathBuf,
    listen: SocketAddr,
    service: ServiceConfig,
}

impl LocalArgs {
    fn validate(self) -> anyhow::Result<LocalConfig> {
        Ok(LocalConfig {
            state_dir: self.state_dir,
            listen: self.listen,
            service: self.controller.validate()?,
        })
    }
}

impl KubeArgs {
    fn validate(self) -> anyhow::Result<strata_operator::k8s::KubeConfig> {
        anyhow::ensure!(
            self.lease_duration_ms >= 3000,
            "--lease-duration-ms must be at least 3000"
        );
        let identity = self.identity.unwrap_or_else(|| {
            std::env::var("POD_NAME").unwrap_or_else(|_| {
                let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|h| h.trim().to_string())
                    .unwrap_or_else(|_| "strata-operator".into());
                format!("{host}-{}", std::process::id())
            })
        });
        anyhow::ensure!(
            !self.node_image.is_empty(),
            "--node-image must not be empty"
        );
        for url in self.controller_url.split(',') {
            anyhow::ensure!(
                url.starts_with("http://") || url.starts_with("https://"),
                "--controller-url {url:?} must be http://HOST:PORT (several: comma-separated)"
            );
        }
        anyhow::ensure!(
            self.max_partition_moves >= 1,
            "--max-partition-moves must be at least 1"
        );
        let duration = std::time::Duration::from_millis(self.lease_duration_ms);
        Ok(strata_operator::k8s::KubeConfig {
            namespace: self.namespace,
            listen: self.listen,
            metrics_listen: self.metrics_listen,
            lease: strata_operator::k8s::lease::LeaseConfig {
                name: self.lease_name,
                identity,
                duration,
                renew_every: duration / 5,
            },
            state_secret: self.state_secret,
            state_configmap: self.state_configmap,
            cluster_name: self.cluster_name,
            node_image: self.node_image,
            controller_url: self.controller_url,
            max_partition_moves: self.max_partition_moves,
            node_service_account: self.node_service_account.filter(|s| !s.is_empty()),
            service: self.controller.validate()?,
        })
    }
}

impl ControllerArgs {
    fn validate(self) -> anyhow::Result<ServiceConfig> {
        anyhow::ensure!(
            self.heartbeat_interval_ms >= 1,
            "--heartbeat-interval-ms must be at least 1"
        );
        // Two missed heartbeats must not be enough to declare a node dead.
        anyhow::ensure!(
            self.session_timeout_ms >= 2 * self.heartbeat_interval_ms,
            "--session-timeout-ms ({}) must be at least twice --heartbeat-interval-ms ({})",
            self.session_timeout_ms,
            self.heartbeat_interval_ms
        );
        anyhow::ensure!(
            self.leader_imbalance_check_interval_ms >= 100,
            "--leader-imbalance-check-interval-ms must be at least 100"
        );
        anyhow::ensure!(
            self.leader_imbalance_percentage <= 100,
            "--leader-imbalance-percentage must be 0..=100"
        );
        for (flag, value) in [
            (
                "--default-replication-factor",
                self.default_replication_factor,
            ),
            (
                "--offsets-topic-replication-factor",
                self.offsets_topic_replication_factor,
            ),
        ] {
            anyhow::ensure!(value >= 1, "{flag} must be at least 1 (got {value})");
        }
        for (flag, value) in [
            ("--num-partitions", self.num_partitions),
            (
                "--offsets-topic-num-partitions",
                self.offsets_topic_num_partitions,
            ),
        ] {
            anyhow::ensure!(
                (1..=MAX_PARTITIONS).contains(&value),
                "{flag} must be in 1..={MAX_PARTITIONS} (got {value})"
            );
        }
        Ok(ServiceConfig {
            core: core::Config {
                session_timeout_ms: self.session_timeout_ms,
                default_replication_factor: self.default_replication_factor,
                num_partitions: self.num_partitions,
                offsets_topic_replication_factor: self.offsets_topic_replication_factor,
                offsets_topic_num_partitions: self.offsets_topic_num_partitions,
                stream_loss_grace_ms: self.stream_loss_grace_ms,
                leader_imbalance_percentage: self.leader_imbalance_percentage,
            },
            heartbeat_interval_ms: self.heartbeat_interval_ms,
            leader_balance_interval: self
                .auto_leader_rebalance
                .then(|| std::time::Duration::from_millis(self.leader_imbalance_check_interval_ms)),
        })
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    match cli.log_format {
        // Colour only on a terminal, so log files and test captures stay plain text.
        LogFormat::Text => tracing_subscriber::fmt()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .with_env_filter(filter)
            .init(),
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init(),
    }
    match cli.command {
        Command::Local(args) => {
            let config = args
                .validate()
                .context("invalid configuration for strata-operator local")?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(run_local(config))
        }
        Command::Kubernetes(args) => {
            let config = args
                .validate()
                .context("invalid configuration for strata-operator kubernetes")?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(strata_operator::k8s::run(config, shutdown_signal()))
        }
    }
}

async fn run_local(config: LocalConfig) -> anyhow::Result<()> {
    let store = FileStore::open(&config.state_dir)?;
    tracing::info!(state = %store.path().display(), "opening controller state");
    let service = ControllerService::start(config.service.clone(), Arc::new(store)).await?;
    let (listener, addr) = ControllerService::bind(config.listen).await?;
    tracing::info!(
        session_timeout_ms = config.service.core.session_timeout_ms,
        heartbeat_interval_ms = config.service.heartbeat_interval_ms,
        "controller settings"
    );
    // Scripts wait for this exact line (the address ends it), so it carries no fields.
    tracing::info!("strata-operator local: controller listening on {addr}");
    service.serve(listener, shutdown_signal()).await?;
    tracing::info!("clean shutdown complete");
    Ok(())
}

/// Completes on SIGTERM or SIGINT. If the handlers cannot be installed, it never completes
/// (the process can still be killed) rather than stopping a healthy controller.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(term), Ok(int)) => (term, int),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "cannot install signal handlers; stop with SIGKILL");
            return std::future::pending().await;
        }
    };
    let which = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(signal = which, "shutting down");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("strata-operator").chain(args.iter().copied()))
    }

    #[test]
    fn local_defaults_work_with_no_flags() {
        let Command::Local(args) = parse(&["local"]).unwrap().command else {
            panic!("local subcommand");
        };
        let config = args.validate().unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:9093");
        assert_eq!(config.service.heartbeat_interval_ms, 500);
        assert_eq!(config.service.core, core::Config::default());
    }

    #[test]
    fn bad_flags_are_refused_at_start() {
        for args in [
            &["local", "--session-timeout-ms", "500"][..],
            &["local", "--default-replication-factor", "0"],
            &["local", "--num-partitions", "0"],
            &["local", "--offsets-topic-num-partitions", "1000000"],
        ] {
            let Command::Local(a) = parse(args).unwrap().command else {
                panic!("local subcommand");
            };
            assert!(a.validate().is_err(), "{args:?}");
        }
        assert!(parse(&["local", "--listen", "nonsense"]).is_err());
    }

    #[test]
    fn kubernetes_flags_default_and_are_checked() {
        let Command::Kubernetes(args) = parse(&["kubernetes", "--identity", "op-0"])
            .unwrap()
            .command
        else {
            panic!("kubernetes subcommand");
        };
        let c = args.validate().unwrap();
        assert_eq!(
            c.controller_url,
            "http://strata-operator.{namespace}.svc:9093"
        );
        assert_eq!(
            c.node_image,
            concat!("ghcr.io/strata/strata-node:", env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(c.max_partition_moves, 8);
        for args in [
            &["kubernetes", "--controller-url", "strata-operator:9093"][..],
            &["kubernetes", "--controller-url", "http://a:1,b:2"],
            &["kubernetes", "--max-partition-moves", "0"],
            &["kubernetes", "--node-image", ""],
        ] {
            let Command::Kubernetes(a) = parse(args).unwrap().command else {
                panic!("kubernetes subcommand");
            };
            assert!(a.validate().is_err(), "{args:?}");
        }
    }

    #[test]
    fn no_subcommand_is_an_error_with_help() {
        let err = parse(&[]).unwrap_err();
        assert_eq!(
            err.kind(),
            clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
        );
    }
}
