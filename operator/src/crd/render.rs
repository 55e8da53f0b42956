//! Renders the CRDs as the YAML files committed in `crds/`: the output of `crdgen`, and what
//! `tests/crds.rs` compares the committed files with.
//!
//! This is the one place that uses `serde_yaml` (deprecated upstream): it only ever writes
//! these files, never reads input. Keys are emitted sorted, whatever order serde_json keeps
//! (its `preserve_order` feature may be switched on by any crate in a build), so the bytes
//! depend on the types alone.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::Value;

/// Command that regenerates `crds/`, quoted in the files and in the drift test's message.
pub const REGENERATE: &str = "cargo run -p strata-operator --bin crdgen";

/// One rendered CRD: where it goes in `crds/` and what it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// File name inside `crds/`: the CRD's name (`<plural>.<group>`) with `.yaml`.
    pub file_name: String,
    /// The YAML text, header comment included.
    pub yaml: String,
}

/// Rendering a CRD failed (a bug in the types, not something an input can cause).
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The CRD did not convert to JSON.
    #[error("CRD {name} does not serialize to JSON: {source}")]
    Json {
        /// Name of the CRD.
        name: String,
        /// What serde_json said.
        source: serde_json::Error,
    },
    /// The JSON did not convert to YAML.
    #[error("CRD {name} does not serialize to YAML: {source}")]
    Yaml {
        /// Name of the CRD.
        name: String,
        /// What serde_yaml said.
        source: serde_yaml::Error,
    },
    /// A CRD without metadata.name cannot be given a file name.
    #[error("a CRD has no metadata.name")]
    Unnamed,
}

/// Every CRD of [`super::crds`], rendered.
pub fn manifests() -> Result<Vec<Manifest>, RenderError> {
    super::crds().iter().map(manifest).collect()
}

/// Renders one CRD.
pub fn manifest(crd: &CustomResourceDefinition) -> Result<Manifest, RenderError> {
    let name = crd.metadata.name.clone().ok_or(RenderError::Unnamed)?;
    let json = serde_json::to_value(crd).map_err(|source| RenderError::Json {
        name: name.clone(),
        source,
    })?;
    let body = serde_yaml::to_string(&Sorted(&json)).map_err(|source| RenderError::Yaml {
        name: name.clone(),
        source,
    })?;
    Ok(Manifest {
        file_name: format!("{name}.yaml"),
        yaml: format!("# Generated from operator/src/crd by `{REGENERATE}`. Do not edit.\n{body}"),
    })
}

/// A JSON value that serializes with every object's keys in sorted order.
struct Sorted<'a>(&'a Value);

impl Serialize for Sorted<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                let mut out = serializer.serialize_map(Some(keys.len()))?;
                for key in keys {
                    out.serialize_entry(key, &Sorted(&map[key]))?;
                }
                out.end()
            }
            Value::Array(items) => {
                let mut out = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    out.serialize_element(&Sorted(item))?;
                }
                out.end()
            }
            scalar => scalar.serialize(serializer),
        }
    }
}
