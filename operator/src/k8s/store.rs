//! The controller's metadata store on Kubernetes: one ConfigMap holding the state document,
//! written with resourceVersion compare-and-swap, so two operator replicas can never both
//! write (the loser of a race gets a conflict and steps down).
//!
//! Why one object and not the Topic and Cluster statuses: the controller changes several
//! topics at once (a node's death moves leaders of many partitions); Kubernetes has no
//! multi-object transaction, so a crash between status writes would leave metadata split
//! across objects. The Topic statuses are a projection written after each committed change.

use std::collections::BTreeMap;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ObjectMeta, PostParams};
use kube::Api;
use strata_controller::core::State;
use strata_controller::store::{BoxFuture, MetadataStore};
use strata_controller::{Error, Result};

/// Key of the state document in the ConfigMap.
pub const STATE_KEY: &str = "state.json";

pub struct ConfigMapStore {
    api: Api<ConfigMap>,
    name: String,
    /// resourceVersion of the ConfigMap as last read or written: the next write's condition.
    version: Mutex<Option<String>>,
}

/// A failed API call: the change is not committed (the service rolls it back and the
/// caller retries); unlike a conflict it does not depose this controller.
fn transport(what: &str, e: kube::Error) -> Error {
    Error::StoreIo {
        path: what.into(),
        source: std::io::Error::other(e.to_string()),
    }
}

impl ConfigMapStore {
    pub fn new(api: Api<ConfigMap>, name: impl Into<String>) -> Self {
        ConfigMapStore {
            api,
            name: name.into(),
            version: Mutex::new(None),
        }
    }
}

impl MetadataStore for ConfigMapStore {
    fn load(&self) -> BoxFuture<'_, Result<Option<State>>> {
        Box::pin(async move {
            let cm = self
                .api
                .get_opt(&self.name)
                .await
                .map_err(|e| transport("reading the state ConfigMap", e))?;
            let Some(cm) = cm else {
                *self.version.lock().expect("not poisoned") = None;
                return Ok(None);
            };
            *self.version.lock().expect("not poisoned") = cm.metadata.resource_version.clone();
            let Some(doc) = cm.data.as_ref().and_then(|d| d.get(STATE_KEY)) else {
                return Ok(None);
            };
            State::from_json(doc.as_bytes(), &format!("configmap/{}", self.name)).map(Some)
        })
    }

    fn save<'a>(&'a self, state: &'a State) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let doc = String::from_utf8(state.to_json()?).map_err(|e| Error::StoreConflict {
                reason: format!("state is not UTF-8: {e}"),
            })?;
            let version = self.version.lock().expect("not poisoned").clone();
            let cm = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    resource_version: version.clone(),
                    labels: Some(BTreeMap::from([(
                        "app.kubernetes.io/managed-by".to_string(),
                        "strata-operator".to_string(),
                    )])),
                    ..Default::default()
                },
                data: Some(BTreeMap::from([(STATE_KEY.to_string(), doc)])),
                ..Default::default()
            };
            let res = match version {
                Some(_) => {
                    self.api
                        .replace(&self.name, &PostParams::default(), &cm)
                        .await
                }
                None => self.api.create(&PostParams::default(), &cm).await,
            };
            match res {
                Ok(written) => {
                    *self.version.lock().expect("not poisoned") = written.metadata.resource_version;
                    Ok(())
                }
                Err(kube::Error::Api(s)) if s.code == 409 => Err(Error::StoreConflict {
                    reason: format!(
                        "ConfigMap {} was written by someone else (another operator replica?): {}",
                        self.name, s.message
                    ),
                }),
                Err(e) => Err(transport("writing the state ConfigMap", e)),
            }
        })
    }
}
