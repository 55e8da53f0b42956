//! crdgen: writes the CRDs of `strata_operator::crd` into `crds/`, one YAML file per CRD.
//!
//! `crdgen` writes into the repository's `crds/`; `crdgen DIR` into DIR; `crdgen -` prints
//! every CRD to stdout as one multi-document stream (`crdgen - | kubectl apply -f -`).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use strata_operator::crd::render;

fn main() -> anyhow::Result<()> {
    let target = std::env::args_os().nth(1);
    let manifests = render::manifests()?;
    if target.as_deref() == Some("-".as_ref()) {
        let mut out = std::io::stdout().lock();
        for m in &manifests {
            write!(out, "---\n{}", m.yaml)?;
        }
        return Ok(());
    }
    // operator/ sits in the workspace root, beside crds/.
    let dir = target.map(PathBuf::from).unwrap_or_else(|| {
        let operator = Path::new(env!("CARGO_MANIFEST_DIR"));
        operator.parent().unwrap_or(operator).join("crds")
    });
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for m in &manifests {
        let path = dir.join(&m.file_name);
        std::fs::write(&path, &m.yaml).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
