//! The committed `crds/` must be exactly what the types generate: a change to the types without
//! regenerating, or a hand edit of the YAML, fails here.

use std::collections::BTreeSet;
use std::path::PathBuf;

use strata_operator::crd::render::{self, REGENERATE};

fn crds_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../crds"))
}

#[test]
fn committed_crds_match_the_types() {
    let dir = crds_dir();
    let mut stale = Vec::new();
    for m in render::manifests().expect("CRDs render") {
        let path = dir.join(&m.file_name);
        match std::fs::read_to_string(&path) {
            Ok(committed) if committed == m.yaml => {}
            Ok(committed) => {
                let line = committed
                    .lines()
                    .zip(m.yaml.lines())
                    .position(|(a, b)| a != b)
                    .map_or_else(
                        || committed.lines().count().min(m.yaml.lines().count()) + 1,
                        |i| i + 1,
                    );
                stale.push(format!(
                    "crds/{} differs from the generated CRD from line {line}",
                    m.file_name
                ));
            }
            Err(e) => stale.push(format!("crds/{} cannot be read: {e}", m.file_name)),
        }
    }
    assert!(
        stale.is_empty(),
        "{}\nrun `{REGENERATE}` and commit crds/",
        stale.join("\n")
    );
}

#[test]
fn crds_holds_no_yaml_the_types_do_not_generate() {
    let generated: BTreeSet<String> = render::manifests()
        .expect("CRDs render")
        .into_iter()
        .map(|m| m.file_name)
        .collect();
    let extra: Vec<String> = std::fs::read_dir(crds_dir())
        .expect("crds/ exists")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| (n.ends_with(".yaml") || n.ends_with(".yml")) && !generated.contains(n))
        .collect();
    assert!(
        extra.is_empty(),
        "crds/ holds {extra:?}, which no type generates: delete them, run `{REGENERATE}` and \
         commit crds/"
    );
}
