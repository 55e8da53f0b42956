//! The custom resources the operator serves: `Topic`, `Cluster` and `User` in
//! `strata.dev/v1alpha1`.
//!
//! The types are the single source of the CRDs: `crdgen` renders them into `crds/`, and
//! `tests/crds.rs` fails when the committed YAML drifts from what these types generate. Invalid
//! edits are refused by the API server itself through CEL rules (`x-kubernetes-validations`)
//! declared here next to the fields they guard; see [`topic`] and [`cluster`].

pub mod cluster;
pub mod config;
pub mod render;
pub mod topic;
pub mod user;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

pub use cluster::{Cluster, ClusterSpec, ClusterStatus};
pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
pub use topic::{DeletionPolicy, Topic, TopicSpec, TopicStatus};
pub use user::{User, UserSpec, UserStatus};

/// API group of every Strata resource.
pub const GROUP: &str = "strata.dev";
/// The one served (and stored) version.
pub const VERSION: &str = "v1alpha1";
/// Category shared by all Strata kinds: `kubectl get strata` lists them together.
pub const CATEGORY: &str = "strata";

/// Condition type: the resource is in the state its spec asks for.
pub const CONDITION_READY: &str = "Ready";
/// Condition type: the operator is moving the resource towards its spec.
pub const CONDITION_PROGRESSING: &str = "Progressing";
/// Condition type: the resource works but not fully (for example under-replicated partitions).
pub const CONDITION_DEGRADED: &str = "Degraded";

/// Every CRD the operator serves, in the order `crdgen` writes them.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![Topic::crd(), Cluster::crd(), User::crd()]
}

/// Whether `conditions` holds a condition of `type_` with status `"True"`.
pub fn condition_is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

#[cfg(test)]
mod tests;
