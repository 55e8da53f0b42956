//! strata-node binary: parse config, open the broker, serve until SIGTERM/SIGINT.

use clap::Parser;
use strata_node::config::{Args, LogFormat};
use strata_node::node::Node;
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
    open_file_budget(&config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(config, started))
}

async fn run(
    config: strata_node::config::NodeConfig,
    started: std::time::Instant,
) -> anyhow::Result<()> {
    let mut config = config;
    let mut bound = Vec::new();
    for l in config.security.listeners.iter_mut() {
        let socket = tokio::net::TcpListener::bind(l.bind)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {} ({}): {e}", l.bind, l.name))?;
        if l.advertised_port == 0 {
            // HOST:0: advertise the port the system picked.
            l.advertised_port = i32::from(socket.local_addr()?.port());
        }
        if l.name == config.security.inter_broker_listener {
            config.advertised_port = l.advertised_port;
        }
        tracing::info!(listener = %l.name, protocol = l.protocol.name(), bind = %socket.local_addr()?,
            advertised = %format!("{}:{}", l.advertised_host, l.advertised_port), "listening");
        bound.push((std::sync::Arc::new(l.clone()), socket));
    }
    let node = Node::open(config).await?;
    let cfg = node.config.clone();
    tracing::info!(
        advertise = %format!("{}:{}", cfg.advertised_host, cfg.advertised_port),
        data_dir = %cfg.data_dir.display(),
        node_id = cfg.node_id,
        flush_policy = ?cfg.flush_policy,
        startup_ms = started.elapsed().as_millis() as u64,
        "strata-node ready"
    );
    if let Some(addr) = cfg.metrics_listen {
        let l = tokio::net::TcpListener::bind(addr).await?;
        tracing::info!(%addr, "metrics on http://{addr}/metrics");
        tokio::spawn(strata_node::node::metrics::serve(node.clone(), l));
    }
    node.start();

    let mut signal = Box::pin(shutdown_signal());
    let mut stopped_early = false;
    {
        tokio::select! {
            _ = node.first_image() => {
                tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "cluster metadata applied; serving clients");
            }
            _ = &mut signal => stopped_early = true,
        }
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let listeners = bound
        .into_iter()
        .map(|(listener, socket)| strata_node::server::Bound { listener, socket })
        .collect();
    let server = tokio::spawn(strata_node::server::serve(node.clone(), listeners, stop_rx));
    if !stopped_early {
        signal.await;
    }
    tracing::info!("shutting down");
    node.stop(async {
        let _ = stop_tx.send(true);
        let _ = server.await;
    })
    .await?;
    tracing::info!("clean shutdown complete");
    Ok(())
}

/// Raise the file limit to its hard value and size the set of open segment files from it
/// (or from `--max-open-files`).
fn open_file_budget(config: &strata_node::config::NodeConfig) {
    use strata_node::log::files;
    let limit = match files::raise_file_limit() {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the file limit; assuming 1024");
            1024
        }
    };
    let budget = config
        .max_open_files
        .unwrap_or_else(|| files::auto_budget(limit));
    files::set_budget(budget);
    tracing::info!(
        file_limit = limit,
        max_open_files = files::budget(),
        "open segment files bounded"
    );
    if (files::budget() + config.max_connections) as u64 > limit {
        tracing::warn!(file_limit = limit, max_open_files = files::budget(), max_connections = config.max_connections,
            "open segment files and connections together may exceed the file limit; new connections fail with EMFILE once it is reached");
    }
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
