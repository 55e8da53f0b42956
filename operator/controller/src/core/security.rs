//! Cluster-wide security metadata: SCRAM credentials (AlterUserScramCredentials) and Kafka
//! ACLs (CreateAcls, DeleteAcls). Nodes validate the wire fields into `strata-security`
//! types; these rules keep the stored set consistent and bump the version once per call.

use strata_security::acl::{AclBinding, AclFilter};
use strata_security::quota::{self, Alteration, QuotaEntity, QuotaError};
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

    /// AlterClientQuotas: one answer per entry. Each entry is validated on its own (an
    /// invalid one changes nothing); an entity named by an earlier entry of the same call
    /// is refused, as Kafka does. With `validate_only` nothing is stored.
    pub fn alter_client_quotas(
        &mut self,
        entries: Vec<Alteration>,
        validate_only: bool,
    ) -> Vec<std::result::Result<(), QuotaError>> {
        let mut seen: Vec<QuotaEntity> = Vec::with_capacity(entries.len());
        let mut out = Vec::with_capacity(entries.len());
        for a in &entries {
            let result = match quota::alter(&self.state.client_quotas, a) {
                Ok((entity, _)) if seen.contains(&entity) => Err(QuotaError {
                    code: quota::INVALID_REQUEST,
                    message: format!("Ignoring duplicate entity {entity}"),
                }),
                Ok((entity, values)) => {
                    seen.push(entity.clone());
                    let current = self.state.client_quotas.get(&entity);
                    let changed = match current {
                        Some(c) => *c != values,
                        None => !values.is_empty(),
                    };
                    if changed && !validate_only {
                        let state = self.state_mut();
                        if values.is_empty() {
                            state.client_quotas.remove(&entity);
                        } else {
                            state.client_quotas.insert(entity, values);
                        }
                    }
                    Ok(())
                }
                Err(e) => Err(e),
            };
            out.push(result);
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

#[cfg(test)]
mod tests {
    use super::super::tests::cluster;
    use super::super::State;
    use strata_security::quota::{Alteration, EntityName, QuotaKey, QuotaValue, CLIENT_ID, USER};

    fn set(entity: &[(&str, Option<&str>)], ops: &[(&str, Option<f64>)]) -> Alteration {
        Alteration {
            entity: entity
                .iter()
                .map(|(t, n)| (t.to_string(), n.map(str::to_string)))
                .collect(),
            ops: ops.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        }
    }

    #[test]
    fn client_quotas_are_stored_validated_and_removed() {
        let mut c = cluster(1);
        let v0 = c.state().version;
        let alice = [(USER, Some("alice"))];
        let out = c.alter_client_quotas(
            vec![
                set(&alice, &[("producer_byte_rate", Some(1024.0))]),
                set(&[(CLIENT_ID, None)], &[("request_percentage", Some(50.0))]),
                set(&[(USER, Some("bob"))], &[("producer_byte_rate", Some(1.5))]),
                set(&alice, &[("consumer_byte_rate", Some(1.0))]),
            ],
            false,
        );
        assert!(out[0].is_ok() && out[1].is_ok());
        assert!(out[2].as_ref().unwrap_err().message.contains("fractional"));
        assert!(out[3]
            .as_ref()
            .unwrap_err()
            .message
            .starts_with("Ignoring duplicate entity user=alice"));
        assert_eq!(c.state().version, v0 + 1, "one bump per call");
        let q = &c.state().client_quotas;
        assert_eq!(q.len(), 2);
        let default_client = q
            .iter()
            .find(|(e, _)| e.client_id == Some(EntityName::Default))
            .unwrap();
        assert_eq!(
            default_client.1[&QuotaKey::RequestPercentage],
            QuotaValue(50.0)
        );

        // Validate-only and no-op changes do not bump the version.
        let out = c.alter_client_quotas(
            vec![set(&alice, &[("producer_byte_rate", Some(9.0))])],
            true,
        );
        assert!(out[0].is_ok());
        let out = c.alter_client_quotas(
            vec![set(&alice, &[("producer_byte_rate", Some(1024.0))])],
            false,
        );
        assert!(out[0].is_ok());
        assert_eq!(c.state().version, v0 + 1);

        // The state round-trips through its JSON form.
        let json = c.state().to_json().unwrap();
        assert_eq!(&State::from_json(&json, "mem").unwrap(), c.state());

        // Removing the last key removes the entity.
        let out = c.alter_client_quotas(vec![set(&alice, &[("producer_byte_rate", None)])], false);
        assert!(out[0].is_ok());
        assert_eq!(c.state().client_quotas.len(), 1);
        assert_eq!(c.image().client_quotas, c.state().client_quotas);
    }
}
