//! strata-operator as a library: the custom resource types shared by the operator binary, the
//! `crdgen` generator and the tests.

pub mod crd;
pub mod k8s;
