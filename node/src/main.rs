//! strata-node binary: parse config, open the broker, serve until SIGTERM/SIGINT.

use std::time::Duration;

use clap::Parser;
use strata_node::broker::Broker;
use strata_node::config::{Args, LogFormat};
use tracing_subscriber::EnvFilter;

#[global_allocator]
static GLOBAL: strata_node::alloc::LazyLargeAlloc = strata_node::alloc::LazyLargeAlloc;

fn main() -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let args = Args::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    match args.log_format {
        LogFormat::Text => tracing_subscriber::fmt().with_env_filter(filter).init(),
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init(),
    }
    let config = args
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(config, started))
}

async fn run(
    config: strata_node::config::NodeConfig,
    started: std::time::Instant,
) -> anyhow::Result<()> {
    let listen = config.listen;
    let broker = tokio::task::spawn_blocking(move || Broker::open(config)).await??;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    tracing::info!(
        listen = %listener.local_addr()?,
        advertise = %format!("{}:{}", broker.config.advertised_host, broker.config.advertised_port),
        data_dir = %broker.config.data_dir.display(),
        node_id = broker.config.node_id,
        flush_policy = ?broker.config.flush_policy,
        startup_ms = started.elapsed().as_millis() as u64,
        "strata-node ready"
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);

    let b = broker.clone();
    let retention_every = Duration::from_millis(b.config.retention_check_interval_ms);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(retention_every);
        tick.tick().await;
        loop {
            tick.tick().await;
            let b = b.clone();
            let _ = tokio::task::spawn_blocking(move || b.run_retention()).await;
        }
    });
    let b = broker.clone();
    let compaction_every = Duration::from_millis(b.config.compaction_interval_ms);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(compaction_every);
        tick.tick().await;
        loop {
            tick.tick().await;
            let b = b.clone();
            let _ = tokio::task::spawn_blocking(move || b.run_compaction()).await;
        }
    });

    if let Some(addr) = broker.config.metrics_listen {
        let l = tokio::net::TcpListener::bind(addr).await?;
        tracing::info!(%addr, "metrics on http://{addr}/metrics");
        tokio::spawn(strata_node::metrics::serve(broker.clone(), l));
    }
    if broker.cluster.is_some() {
        tracing::info!(controller = ?broker.config.controller, "cluster mode: joining the controller");
        tokio::spawn(strata_node::replication::cluster::run(broker.clone()));
    }
    let uploader = broker.tiering.clone().map(|t| {
        tracing::info!(object_store = %t.options().url, "tiered storage on");
        tokio::spawn(strata_node::tiering::run(t, broker.clone()))
    });

    let b = broker.clone();
    tokio::task::spawn_blocking(move || b.groups.load_all(&b));
    let b = broker.clone();
    let expiry_every = Duration::from_millis(b.config.offsets_retention_check_interval_ms);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let mut last_expiry = tokio::time::Instant::now();
        loop {
            tick.tick().await;
            let expire = last_expiry.elapsed() >= expiry_every;
            if expire {
                last_expiry = tokio::time::Instant::now();
            }
            b.groups.tick(&b, expire);
        }
    });

    let mut signal = Box::pin(shutdown_signal());
    // Like a Kafka broker, a cluster node serves clients only once it has the cluster's
    // metadata; until then connections wait in the listen backlog.
    let mut stopped_early = false;
    if let Some(link) = broker.cluster.clone() {
        tokio::select! {
            _ = link.first_image() => {
                tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "cluster metadata applied; serving clients");
            }
            _ = &mut signal => stopped_early = true,
        }
    }
    let server = tokio::spawn(strata_node::server::serve(
        broker.clone(),
        listener,
        stop_rx,
    ));
    if !stopped_early {
        signal.await;
    }
    tracing::info!("shutting down");
    // Leaderships move away while this node still serves, so clients are told where to
    // go instead of finding the door closed.
    if let Some(link) = broker.cluster.clone() {
        let bound = Duration::from_millis(broker.config.controlled_shutdown_timeout_ms);
        link.controlled_shutdown(bound).await;
    }
    broker.begin_shutdown();
    let _ = stop_tx.send(true);
    if let Some(t) = &broker.tiering {
        t.stop();
    }
    // Connections drain and the segment being uploaded finishes (objects and manifest),
    // so a clean stop leaves no object the manifest does not name. Past the deadline the
    // next start deletes such leftovers.
    let drain = async {
        let _ = server.await;
        if let Some(u) = uploader {
            let _ = u.await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(30), drain)
        .await
        .is_err()
    {
        tracing::warn!("shutdown deadline passed with connections or an upload still open");
    }
    broker.shutdown()?;
    tracing::info!("clean shutdown complete");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}
