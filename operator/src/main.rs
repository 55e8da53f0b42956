//! strata-operator: will reconcile `Topic` and `Cluster` resources and host the controller.
//!
//! This is a skeleton: the controller, the `local` mode and the Kubernetes reconcilers are
//! later milestones. It exists so the workspace has its final shape.

use clap::Parser;

/// strata-operator (not implemented yet).
#[derive(Debug, Parser)]
#[command(name = "strata-operator", version, about)]
struct Args {}

fn main() -> anyhow::Result<()> {
    let _args = Args::parse();
    tracing_subscriber::fmt().init();
    tracing::error!(
        "strata-operator is not implemented yet; run strata-node for a single-node broker"
    );
    std::process::exit(2)
}
