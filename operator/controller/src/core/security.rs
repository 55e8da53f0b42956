//! Cluster-wide security metadata: SCRAM credentials (AlterUserScramCredentials) and Kafka
//! ACLs (CreateAcls, DeleteAcls). Nodes validate the wire fields into `strata-security`
//! types; these rules keep the stored set consistent and bump the version once per call.

use strata_security::acl::{AclBinding, AclFilter};
use strata_security::scram::{ScramCredential, ScramMechanism};

use super::Cluster;
use crate::error::{Error, Result};

/// Longest user name accepted (Kafka has no explicit bound; this keeps metadata small).
const MAX_USER_LEN: usize = 512;

/// The answer for one user of an AlterUserScramCredentials call.
#[derive(Debug)]
pub struct ScramOutcome {
    pub user: String,
    pub result: Result<()>,
}

impl Cluster {
    /// Upserts and deletes SCRAM credentials. Like Kafka, every user gets one answer: a
    /// user with any bad entry has none of its changes applied, the others do.
    pub fn alter_scram_credentials(
        &mut self,
        upsertions: Vec<(String, ScramCredential)>,
        deletions: Vec<(String, ScramMechanism)>,
    ) -> Vec<ScramOutcome> {
        let mut users: Vec<String> = upsertions
            .iter()
            .map(|(u, _)| u.clone())
            .chain(deletions.iter().map(|(u, _)| u.clone()))
            .collect();
        users.sort();
        users.dedup();
        let mut out = Vec::with_capacity(users.len());
        for user in users {
            let ups: Vec<&ScramCredential> = upsertions
                .iter()
                .filter(|(u, _)| *u == user)
                .map(|(_, c)| c)
                .collect();
            let dels: Vec<ScramMechanism> = deletions
                .iter()
                .filter(|(u, _)| *u == user)
                .map(|(_, m)| *m)
                .collect();
            let result = self.check_scram(&user, &ups, &dels);
            if result.is_ok() {
                let state = self.state_mut();
                for m in &dels {
                    if let Some(per) = state.scram_credentials.get_mut(&user) {
                        per.remove(m);
                        if per.is_empty() {
                            state.scram_credentials.remove(&user);
                        }
                    }
                }
                for c in ups {
                    state
                        .scram_credentials
                        .entry(user.clone())
                        .or_default()
                        .insert(c.mechanism, c.clone());
                }
            }
            out.push(ScramOutcome { user, result });
        }
        self.finish();
        out
    }

    fn check_scram(
        &self,
        user: &str,
        ups: &[&ScramCredential],
        dels: &[ScramMechanism],
    ) -> Result<()> {
        if user.is_empty() || user.len() > MAX_USER_LEN {
            return Err(Error::UnacceptableCredential {
                user: user.to_string(),
                reason: format!("the user name must be 1..={MAX_USER_LEN} bytes"),
            });
        }
        let mut seen: Vec<ScramMechanism> = Vec::new();
        for m in ups.iter().map(|c| c.mechanism).chain(dels.iter().copied()) {
            if seen.contains(&m) {
                return Err(Error::DuplicateCredential {
                    user: user.to_string(),
                    mechanism: m.name().to_string(),
                });
            }
            seen.push(m);
        }
        for c in ups {
            if c.iterations < c.mechanism.min_iterations()
                || c.iterations > c.mechanism.max_iterations()
            {
                return Err(Error::UnacceptableCredential {
                    user: user.to_string(),
                    reason: format!(
                        "iterations {} outside {}..={}",
                        c.iterations,
                        c.mechanism.min_iterations(),
                        c.mechanism.max_iterations()
                    ),
                });
            }
        }
        for m in dels {
            let exists = self
                .state
                .scram_credentials
                .get(user)
                .is_some_and(|per| per.contains_key(m));
            if !exists {
                return Err(Error::CredentialNotFound {
                    user: user.to_string(),
                    mechanism: m.name().to_string(),
                });
            }
        }
        Ok(())
    }

    /// Adds ACL bindings (already validated by the node); adding one that exists is a
    /// success that changes nothing, as in Kafka.
    pub fn create_acls(&mut self, acls: Vec<AclBinding>) -> Vec<Result<()>> {
        let out = acls
            .into_iter()
            .map(|b| {
                if !self.state.acls.contains(&b) {
                    self.state_mut().acls.insert(b);
                }
                Ok(())
            })
            .collect();
        self.finish();
        out
    }

    /// Removes every binding each filter matches; returns them per filter.
    pub fn delete_acls(&mut self, filters: Vec<AclFilter>) -> Vec<Vec<AclBinding>> {
        let mut out = Vec::with_capacity(filters.len());
        for f in filters {
            let matched: Vec<AclBinding> = self
                .state
                .acls
                .iter()
                .filter(|b| f.matches(b))
                .cloned()
                .collect();
            if !matched.is_empty() {
                let state = self.state_mut();
                for b in &matched {
                    state.acls.remove(b);
                }
            }
            out.push(matched);
        }
        self.finish();
        out
    }

    /// Records a node's named listeners (after its registration).
    pub fn set_listeners(
        &mut self,
        node: i32,
        listeners: std::collections::BTreeMap<String, (String, i32)>,
    ) {
        let changed = self
            .state
            .nodes
            .get(&node)
            .is_some_and(|n| n.listeners != listeners);
        if changed {
            if let Some(n) = self.state_mut().nodes.get_mut(&node) {
                n.listeners = listeners;
            }
        }
        self.finish();
    }
}
