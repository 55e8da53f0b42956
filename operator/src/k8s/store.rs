//! The controller's metadata store on Kubernetes: one Secret holding the state document,
//! written with resourceVersion compare-and-swap, so two operator replicas can never both
//! write (the loser of a race gets a conflict and steps down).
//!
//! Why one object and not the Topic and Cluster statuses: the controller changes several
//! topics at once (a node's death moves leaders of many partitions); Kubernetes has no
//! multi-object transaction, so a crash between status writes would leave metadata split
//! across objects. The Topic statuses are a projection written after each committed change.
//!
//! Why a Secret: the document holds the SCRAM credentials (salted and hashed, but still what
//! an offline dictionary attack needs) and the ACLs, so it gets the access rules, audit and
//! encryption at rest Kubernetes gives Secrets, not those of ConfigMaps.
//!
//! Migration: earlier versions kept the document in a ConfigMap. When the Secret does not
//! exist yet, [`SecretStore::load`] reads that legacy ConfigMap; the first successful write
//! then creates the Secret and deletes the ConfigMap. From then on the Secret is the truth.

use std::collections::BTreeMap;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::ByteString;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::Api;
use strata_controller::core::State;
use strata_controller::store::{BoxFuture, MetadataStore};
use strata_controller::{Error, Result};

/// Key of the state document in the Secret (and in the legacy ConfigMap).
pub const STATE_KEY: &str = "state.json";

pub struct SecretStore {
    api: Api<Secret>,
    name: String,
    /// The ConfigMap earlier versions kept the state in, read when the Secret does not exist.
    legacy: Option<(Api<ConfigMap>, String)>,
    /// The state was loaded from the legacy ConfigMap: delete it once the Secret is written.
    legacy_read: Mutex<bool>,
    /// resourceVersion of the Secret as last read or written: the next write's condition.
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

impl SecretStore {
    /// `legacy`: the ConfigMap (api, name) to migrate the state from, if any.
    pub fn new(
        api: Api<Secret>,
        name: impl Into<String>,
        legacy: Option<(Api<ConfigMap>, String)>,
    ) -> Self {
        SecretStore {
            api,
            name: name.into(),
            legacy,
            legacy_read: Mutex::new(false),
            version: Mutex::new(None),
        }
    }

    /// The state in the legacy ConfigMap, if it exists and holds one.
    async fn load_legacy(&self) -> Result<Option<State>> {
        let Some((cms, cm_name)) = &self.legacy else {
            return Ok(None);
        };
        let cm = cms
            .get_opt(cm_name)
            .await
            .map_err(|e| transport("reading the legacy state ConfigMap", e))?;
        let Some(doc) = cm.as_ref().and_then(|cm| cm.data.as_ref()?.get(STATE_KEY)) else {
            return Ok(None);
        };
        let state = State::from_json(doc.as_bytes(), &format!("configmap/{cm_name}"))?;
        tracing::info!(
            configmap = %cm_name,
            secret = %self.name,
            "migrating the controller state from the legacy ConfigMap to a Secret \
             (the ConfigMap is deleted after the first write)"
        );
        *self.legacy_read.lock().expect("not poisoned") = true;
        Ok(Some(state))
    }

    /// After the Secret was written: drop the legacy ConfigMap the state was read from. A
    /// failure only warns; the Secret is the truth now and `load` prefers it.
    async fn delete_legacy(&self) {
        let Some((cms, cm_name)) = &self.legacy else {
            return;
        };
        if !std::mem::take(&mut *self.legacy_read.lock().expect("not poisoned")) {
            return;
        }
        match cms.delete(cm_name, &DeleteParams::default()).await {
            Ok(_) => tracing::info!(
                configmap = %cm_name,
                secret = %self.name,
                "controller state migrated to the Secret; deleted the legacy ConfigMap"
            ),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => tracing::warn!(
                configmap = %cm_name,
                secret = %self.name,
                error = %e,
                "controller state migrated to the Secret, but the legacy ConfigMap could not \
                 be deleted (it is ignored from now on; delete it by hand)"
            ),
        }
    }
}

impl MetadataStore for SecretStore {
    fn load(&self) -> BoxFuture<'_, Result<Option<State>>> {
        Box::pin(async move {
            let secret = self
                .api
                .get_opt(&self.name)
                .await
                .map_err(|e| transport("reading the state Secret", e))?;
            let Some(secret) = secret else {
                *self.version.lock().expect("not poisoned") = None;
                return self.load_legacy().await;
            };
            *self.version.lock().expect("not poisoned") = secret.metadata.resource_version.clone();
            let Some(doc) = secret.data.as_ref().and_then(|d| d.get(STATE_KEY)) else {
                return Ok(None);
            };
            State::from_json(&doc.0, &format!("secret/{}", self.name)).map(Some)
        })
    }

    fn save<'a>(&'a self, state: &'a State) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let doc = state.to_json()?;
            let version = self.version.lock().expect("not poisoned").clone();
            let secret = Secret {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    resource_version: version.clone(),
                    labels: Some(BTreeMap::from([(
                        "app.kubernetes.io/managed-by".to_string(),
                        "strata-operator".to_string(),
                    )])),
                    ..Default::default()
                },
                type_: Some("Opaque".to_string()),
                data: Some(BTreeMap::from([(STATE_KEY.to_string(), ByteString(doc))])),
                ..Default::default()
            };
            let res = match version {
                Some(_) => {
                    self.api
                        .replace(&self.name, &PostParams::default(), &secret)
                        .await
                }
                None => self.api.create(&PostParams::default(), &secret).await,
            };
            match res {
                Ok(written) => {
                    *self.version.lock().expect("not poisoned") = written.metadata.resource_version;
                    self.delete_legacy().await;
                    Ok(())
                }
                Err(kube::Error::Api(s)) if s.code == 409 => Err(Error::StoreConflict {
                    reason: format!(
                        "Secret {} was written by someone else (another operator replica?): {}",
                        self.name, s.message
                    ),
                }),
                Err(e) => Err(transport("writing the state Secret", e)),
            }
        })
    }
}
