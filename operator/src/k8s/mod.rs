//! `strata-operator kubernetes`: the controller hosted on Kubernetes. Replicas elect a leader
//! with a Lease; the leader keeps the controller's state in a Secret (it holds credentials;
//! compare-and-swap on resourceVersion), serves the controller's gRPC to the nodes, and
//! reconciles Topic, Cluster and User resources. Standbys wait for the lease and serve nothing, so nodes (given every
//! replica's address) reconnect to whichever replica leads.

pub mod certs;
pub mod cluster;
pub mod conditions;
pub mod lease;
pub mod metrics;
pub mod roll;
pub mod store;
pub mod topics;
pub mod users;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use strata_controller::service::{ControllerService, ServiceConfig};
use strata_controller::ControllerHandle;

use crate::crd::cluster::Cluster;
use crate::crd::topic::Topic;

/// Validated settings of the Kubernetes mode.
#[derive(Debug, Clone)]
pub struct KubeConfig {
    /// Namespace of the Topic and Cluster resources, the lease and the state (None: the
    /// client's default namespace).
    pub namespace: Option<String>,
    pub listen: SocketAddr,
    pub metrics_listen: Option<SocketAddr>,
    pub lease: lease::LeaseConfig,
    /// Secret holding the controller's state.
    pub state_secret: String,
    /// Legacy ConfigMap the state is migrated from (read once, deleted after the first write
    /// of the Secret).
    pub state_configmap: String,
    /// Cluster name put in Topic resources made for topics created through Kafka, and the
    /// one Cluster resource of the namespace the controller serves.
    pub cluster_name: String,
    /// Image of nodes whose Cluster names none.
    pub node_image: String,
    /// What nodes are given as `--controller` ({namespace} replaced).
    pub controller_url: String,
    /// Partitions moving at once while a Cluster's scaling rebalances.
    pub max_partition_moves: usize,
    /// ServiceAccount of node pods.
    pub node_service_account: Option<String>,
    pub service: ServiceConfig,
}

/// Run until SIGTERM/SIGINT, or until leadership is lost (then return an error, so the
/// process exits and its supervisor restarts it as a standby).
pub async fn run(
    cfg: KubeConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    // Dependencies enable more than one rustls crypto provider; choose one for the process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = kube::Client::try_default()
        .await
        .context("no Kubernetes client configuration (KUBECONFIG or in-cluster)")?;
    let ns = cfg
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    let m = Arc::new(metrics::OperatorMetrics::default());
    if let Some(addr) = cfg.metrics_listen {
        let l = tokio::net::TcpListener::bind(addr).await?;
        tracing::info!(%addr, "metrics on http://{addr}/metrics");
        tokio::spawn(metrics::serve(m.clone(), l));
    }
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    tracing::info!(namespace = %ns, identity = %cfg.lease.identity, lease = %cfg.lease.name, "waiting for leadership");
    tokio::pin!(shutdown);
    tokio::select! {
        _ = lease::acquire(&leases, &cfg.lease) => {}
        _ = &mut shutdown => return Ok(()),
    }
    m.is_leader.store(1, Ordering::Relaxed);
    tracing::info!(identity = %cfg.lease.identity, "leading: starting the controller");

    let store = store::SecretStore::new(
        Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), &ns),
        cfg.state_secret.clone(),
        Some((
            Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client.clone(), &ns),
            cfg.state_configmap.clone(),
        )),
    );
    let service = ControllerService::start(cfg.service.clone(), Arc::new(store)).await?;
    let (listener, addr) = ControllerService::bind(cfg.listen).await?;
    // Scripts wait for this exact line (the address ends it).
    tracing::info!("strata-operator kubernetes: controller listening on {addr}");

    let ctx = Arc::new(topics::Ctx {
        api: Api::<Topic>::namespaced(client.clone(), &ns),
        controller: service.controller().clone(),
        metrics: m.clone(),
        default_cluster: cfg.cluster_name.clone(),
    });
    tokio::spawn(topics::run(ctx));
    let cluster_cfg = cluster::ClusterConfig {
        namespace: ns.clone(),
        node_image: cfg.node_image.clone(),
        controller_url: cfg.controller_url.replace("{namespace}", &ns),
        cluster_name: cfg.cluster_name.clone(),
        identity: cfg.lease.identity.clone(),
        max_partition_moves: cfg.max_partition_moves,
        node_service_account: cfg.node_service_account.clone(),
    };
    tokio::spawn(users::run(Arc::new(users::Ctx {
        api: Api::namespaced(client.clone(), &ns),
        secrets: Api::namespaced(client.clone(), &ns),
        clusters: Api::namespaced(client.clone(), &ns),
        controller: service.controller().clone(),
        metrics: m.clone(),
        cluster_name: cfg.cluster_name.clone(),
        cluster_cfg: cluster_cfg.clone(),
    })));
    let cluster_ctx = Arc::new(cluster::Ctx {
        client: client.clone(),
        api: Api::<Cluster>::namespaced(client.clone(), &ns),
        controller: service.controller().clone(),
        metrics: m.clone(),
        recorder: cluster::recorder(client.clone(), &cfg.lease.identity),
        cfg: cluster_cfg,
    });
    tokio::spawn(cluster::run(cluster_ctx));
    tokio::spawn(track_controller(service.controller().clone(), m.clone()));

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serve = service.serve(listener, async move {
        let _ = stop_rx.await;
    });
    tokio::pin!(serve);
    let outcome = tokio::select! {
        r = &mut serve => r.map_err(anyhow::Error::from),
        why = lease::hold(&leases, &cfg.lease) => Err(anyhow::anyhow!("lost leadership: {why}")),
        _ = &mut shutdown => {
            let _ = stop_tx.send(());
            let _ = tokio::time::timeout(Duration::from_secs(10), &mut serve).await;
            release(&leases, &cfg.lease).await;
            Ok(())
        }
    };
    m.is_leader.store(0, Ordering::Relaxed);
    outcome
}

/// Give the lease up at a clean stop so a standby takes over at once.
async fn release(api: &Api<Lease>, cfg: &lease::LeaseConfig) {
    let Ok(Some(mut l)) = api.get_opt(&cfg.name).await else {
        return;
    };
    if let Some(spec) = l.spec.as_mut() {
        if spec.holder_identity.as_deref() == Some(cfg.identity.as_str()) {
            spec.holder_identity = None;
            spec.renew_time = None;
            match api.replace(&cfg.name, &Default::default(), &l).await {
                Ok(_) => tracing::info!("released the lease"),
                Err(e) => tracing::warn!(error = %e, "could not release the lease"),
            }
        }
    }
}

async fn track_controller(controller: ControllerHandle, m: Arc<metrics::OperatorMetrics>) {
    let mut rx = controller.subscribe();
    loop {
        {
            let md = rx.borrow_and_update().clone();
            let alive = md.nodes.values().filter(|n| n.alive).count() as u64;
            let parts = md.topics.values().flat_map(|t| t.partitions.iter());
            let leaderless = parts.clone().filter(|p| p.leader < 0).count() as u64;
            let under = parts.filter(|p| p.isr.len() < p.replicas.len()).count() as u64;
            *m.controller.lock().expect("not poisoned") = (
                md.version,
                alive,
                md.nodes.len() as u64,
                md.topics.len() as u64,
                leaderless,
                under,
            );
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}
