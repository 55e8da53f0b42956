//! Security administration: SCRAM credentials (Describe/AlterUserScramCredentials) and ACLs
//! (CreateAcls, DescribeAcls, DeleteAcls). Changes go to the controller, which keeps them as
//! cluster metadata and publishes them to every node; each answer waits until this node
//! has applied the change.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::*;
use strata_controller::proto as pb;
use strata_security::acl::{AclBinding, AclFilter, Operation, ResourceType};
use strata_security::scram::{ScramCredential, ScramMechanism};

use super::s;
use crate::node::Node;
use crate::security::Caller;

/// Kafka's name of the one cluster resource.
pub const CLUSTER: &str = "kafka-cluster";

fn cluster_allowed(b: &Node, cx: &Caller, op: Operation) -> bool {
    b.security.authorize(cx, op, ResourceType::Cluster, CLUSTER)
}

/// Answer DescribeUserScramCredentials: mechanisms and iterations, never keys or salts.
pub fn describe_user_scram_credentials(
    b: &Arc<Node>,
    cx: &Caller,
    _v: i16,
    req: DescribeUserScramCredentialsRequest,
) -> DescribeUserScramCredentialsResponse {
    let mut resp = DescribeUserScramCredentialsResponse::default();
    if !cluster_allowed(b, cx, Operation::Describe) {
        resp.error_code = ResponseError::ClusterAuthorizationFailed.code();
        return resp;
    }
    let view = b.cluster.view();
    let mut by_user: BTreeMap<&str, Vec<&ScramCredential>> = BTreeMap::new();
    for (u, c) in &view.scram_credentials {
        by_user.entry(u.as_str()).or_default().push(c);
    }
    let info = |creds: &[&ScramCredential]| -> Vec<CredentialInfo> {
        creds
            .iter()
            .map(|c| {
                build!(CredentialInfo {
                    mechanism: c.mechanism.kafka_type(),
                    iterations: i32::try_from(c.iterations).unwrap_or(i32::MAX)
                })
            })
            .collect()
    };
    match req.users.filter(|u| !u.is_empty()) {
        // Every user with a credential.
        None => {
            resp.results = by_user
                .iter()
                .map(|(u, creds)| {
                    build!(DescribeUserScramCredentialsResult {
                        user: s(*u),
                        credential_infos: info(creds)
                    })
                })
                .collect();
        }
        Some(users) => {
            let mut counts: BTreeMap<String, usize> = BTreeMap::new();
            for u in &users {
                *counts.entry(u.name.to_string()).or_default() += 1;
            }
            let mut done = std::collections::HashSet::new();
            for u in users {
                let name = u.name.to_string();
                if !done.insert(name.clone()) {
                    continue;
                }
                let mut r = build!(DescribeUserScramCredentialsResult {
                    user: s(name.clone())
                });
                if counts[&name] > 1 {
                    r.error_code = ResponseError::DuplicateResource.code();
                    r.error_message =
                        Some(s(format!("cannot describe user {name} more than once")));
                } else if let Some(creds) = by_user.get(name.as_str()) {
                    r.credential_infos = info(creds);
                } else {
                    r.error_code = ResponseError::ResourceNotFound.code();
                    r.error_message = Some(s(format!(
                        "attempt to describe a user credential that does not exist: {name}"
                    )));
                }
                resp.results.push(r);
            }
        }
    }
    resp
}

/// Answer AlterUserScramCredentials: the client sends salted passwords, which become
/// stored and server keys here; the controller stores those, never a password.
pub async fn alter_user_scram_credentials(
    b: &Arc<Node>,
    cx: &Caller,
    _v: i16,
    req: AlterUserScramCredentialsRequest,
) -> AlterUserScramCredentialsResponse {
    let users: Vec<String> = {
        let mut u: Vec<String> = req
            .upsertions
            .iter()
            .map(|x| x.name.to_string())
            .chain(req.deletions.iter().map(|x| x.name.to_string()))
            .collect();
        u.sort();
        u.dedup();
        u
    };
    let result = |user: &str, code: ResponseError, msg: Option<String>| {
        build!(AlterUserScramCredentialsResult {
            user: s(user),
            error_code: code.code(),
            error_message: msg.map(s)
        })
    };
    let mut resp = AlterUserScramCredentialsResponse::default();
    if !cluster_allowed(b, cx, Operation::Alter) {
        resp.results = users
            .iter()
            .map(|u| result(u, ResponseError::ClusterAuthorizationFailed, None))
            .collect();
        return resp;
    }
    // Wire entries that cannot become a credential are answered here, per user.
    let mut early: BTreeMap<String, (ResponseError, String)> = BTreeMap::new();
    let mut upsertions = Vec::new();
    for u in &req.upsertions {
        let name = u.name.to_string();
        let Some(m) = ScramMechanism::from_kafka_type(u.mechanism) else {
            early.insert(
                name,
                (
                    ResponseError::UnsupportedSaslMechanism,
                    format!("unknown SCRAM mechanism {}", u.mechanism),
                ),
            );
            continue;
        };
        let iterations = u32::try_from(u.iterations).unwrap_or(0);
        if iterations < m.min_iterations() || iterations > m.max_iterations() {
            early.insert(
                name,
                (
                    ResponseError::UnacceptableCredential,
                    format!(
                        "iterations {} outside {}..={}",
                        u.iterations,
                        m.min_iterations(),
                        m.max_iterations()
                    ),
                ),
            );
            continue;
        }
        if u.salt.is_empty() {
            early.insert(
                name,
                (ResponseError::UnacceptableCredential, "empty salt".into()),
            );
            continue;
        }
        match ScramCredential::from_salted_password(m, &u.salt, iterations, &u.salted_password) {
            Ok(c) => upsertions.push(pb::ScramCredentialInfo {
                user: name,
                mechanism: i32::from(m.kafka_type()),
                salt: c.salt,
                iterations: i32::try_from(c.iterations).unwrap_or(i32::MAX),
                stored_key: c.stored_key,
                server_key: c.server_key,
            }),
            Err(e) => {
                early.insert(name, (ResponseError::UnacceptableCredential, e.to_string()));
            }
        }
    }
    let mut deletions = Vec::new();
    for d in &req.deletions {
        let name = d.name.to_string();
        match ScramMechanism::from_kafka_type(d.mechanism) {
            Some(m) => deletions.push(pb::ScramDeletion {
                user: name,
                mechanism: i32::from(m.kafka_type()),
            }),
            None => {
                early.insert(
                    name,
                    (
                        ResponseError::UnsupportedSaslMechanism,
                        format!("unknown SCRAM mechanism {}", d.mechanism),
                    ),
                );
            }
        }
    }
    upsertions.retain(|u| !early.contains_key(&u.user));
    deletions.retain(|d| !early.contains_key(&d.user));
    let mut answered: BTreeMap<String, AlterUserScramCredentialsResult> = early
        .into_iter()
        .map(|(u, (code, msg))| (u.clone(), result(&u, code, Some(msg))))
        .collect();
    if !upsertions.is_empty() || !deletions.is_empty() {
        match b
            .cluster
            .alter_scram_credentials(pb::AlterScramCredentialsRequest {
                upsertions,
                deletions,
            })
            .await
        {
            Ok(results) => {
                for r in results {
                    let rr = build!(AlterUserScramCredentialsResult {
                        user: s(r.user.clone()),
                        error_code: i16::try_from(r.error_code).unwrap_or(-1),
                        error_message: (!r.error_message.is_empty()).then(|| s(r.error_message))
                    });
                    answered.insert(r.user, rr);
                }
            }
            Err(e) => {
                for u in &users {
                    answered
                        .entry(u.clone())
                        .or_insert_with(|| result(u, e.kafka_code(), Some(e.to_string())));
                }
            }
        }
    }
    resp.results = users
        .iter()
        .map(|u| {
            answered
                .remove(u)
                .unwrap_or_else(|| result(u, ResponseError::UnknownServerError, None))
        })
        .collect();
    resp
}

fn acl_to_wire(a: &AclBinding) -> pb::AclInfo {
    strata_controller::service::acl_to_proto(a)
}

/// Answer CreateAcls.
pub async fn create_acls(
    b: &Arc<Node>,
    cx: &Caller,
    _v: i16,
    req: CreateAclsRequest,
) -> CreateAclsResponse {
    let mut resp = CreateAclsResponse::default();
    if !cluster_allowed(b, cx, Operation::Alter) {
        resp.results = req
            .creations
            .iter()
            .map(|_| {
                build!(AclCreationResult {
                    error_code: ResponseError::ClusterAuthorizationFailed.code()
                })
            })
            .collect();
        return resp;
    }
    let parsed: Vec<Result<AclBinding, String>> = req
        .creations
        .iter()
        .map(|c| {
            AclBinding::from_wire(
                c.resource_type,
                &c.resource_name,
                c.resource_pattern_type,
                &c.principal,
                &c.host,
                c.operation,
                c.permission_type,
            )
            .map_err(|e| e.to_string())
        })
        .collect();
    let valid: Vec<pb::AclInfo> = parsed
        .iter()
        .filter_map(|p| p.as_ref().ok())
        .map(acl_to_wire)
        .collect();
    let outcome = if valid.is_empty() {
        Ok(Vec::new())
    } else {
        b.cluster
            .create_acls(pb::CreateAclsRequest { acls: valid })
            .await
    };
    let mut applied = match &outcome {
        Ok(r) => r.clone().into_iter(),
        Err(_) => Vec::new().into_iter(),
    };
    resp.results = parsed
        .into_iter()
        .map(|p| match (p, &outcome) {
            (Err(reason), _) => build!(AclCreationResult {
                error_code: ResponseError::InvalidRequest.code(),
                error_message: Some(s(reason))
            }),
            (Ok(_), Err(e)) => build!(AclCreationResult {
                error_code: e.code(),
                error_message: Some(s(e.to_string()))
            }),
            (Ok(_), Ok(_)) => match applied.next() {
                Some(r) => build!(AclCreationResult {
                    error_code: i16::try_from(r.error_code).unwrap_or(-1),
                    error_message: (!r.error_message.is_empty()).then(|| s(r.error_message))
                }),
                None => build!(AclCreationResult {
                    error_code: ResponseError::UnknownServerError.code()
                }),
            },
        })
        .collect();
    resp
}

/// Answer DescribeAcls: the bindings the filter matches, grouped by resource pattern.
pub fn describe_acls(
    b: &Arc<Node>,
    cx: &Caller,
    _v: i16,
    req: DescribeAclsRequest,
) -> DescribeAclsResponse {
    let mut resp = DescribeAclsResponse::default();
    if !cluster_allowed(b, cx, Operation::Describe) {
        resp.error_code = ResponseError::ClusterAuthorizationFailed.code();
        resp.error_message = Some(s("Cluster authorization failed."));
        return resp;
    }
    let filter = match AclFilter::from_wire(
        req.resource_type_filter,
        req.resource_name_filter.as_deref(),
        req.pattern_type_filter,
        req.principal_filter.as_deref(),
        req.host_filter.as_deref(),
        req.operation,
        req.permission_type,
    ) {
        Ok(f) => f,
        Err(e) => {
            resp.error_code = ResponseError::InvalidRequest.code();
            resp.error_message = Some(s(e.to_string()));
            return resp;
        }
    };
    let view = b.cluster.view();
    let mut groups: BTreeMap<(i8, String, i8), Vec<AclDescription>> = BTreeMap::new();
    for a in view.acls.iter().filter(|a| filter.matches(a)) {
        groups
            .entry((
                a.resource_type.code(),
                a.resource_name.clone(),
                a.pattern_type.code(),
            ))
            .or_default()
            .push(build!(AclDescription {
                principal: s(a.principal.clone()),
                host: s(a.host.clone()),
                operation: a.operation.code(),
                permission_type: a.permission.code()
            }));
    }
    resp.resources = groups
        .into_iter()
        .map(|((rt, name, pt), acls)| {
            build!(DescribeAclsResource {
                resource_type: rt,
                resource_name: s(name),
                pattern_type: pt,
                acls: acls
            })
        })
        .collect();
    resp
}

/// Answer DeleteAcls: every binding each filter matches goes.
pub async fn delete_acls(
    b: &Arc<Node>,
    cx: &Caller,
    _v: i16,
    req: DeleteAclsRequest,
) -> DeleteAclsResponse {
    let mut resp = DeleteAclsResponse::default();
    if !cluster_allowed(b, cx, Operation::Alter) {
        resp.filter_results = req
            .filters
            .iter()
            .map(|_| {
                build!(DeleteAclsFilterResult {
                    error_code: ResponseError::ClusterAuthorizationFailed.code()
                })
            })
            .collect();
        return resp;
    }
    let parsed: Vec<Result<pb::AclFilterInfo, String>> = req
        .filters
        .iter()
        .map(|f| {
            AclFilter::from_wire(
                f.resource_type_filter,
                f.resource_name_filter.as_deref(),
                f.pattern_type_filter,
                f.principal_filter.as_deref(),
                f.host_filter.as_deref(),
                f.operation,
                f.permission_type,
            )
            .map(|_| pb::AclFilterInfo {
                resource_type: i32::from(f.resource_type_filter),
                resource_name: f.resource_name_filter.as_ref().map(|x| x.to_string()),
                pattern_type: i32::from(f.pattern_type_filter),
                principal: f.principal_filter.as_ref().map(|x| x.to_string()),
                host: f.host_filter.as_ref().map(|x| x.to_string()),
                operation: i32::from(f.operation),
                permission: i32::from(f.permission_type),
            })
            .map_err(|e| e.to_string())
        })
        .collect();
    let valid: Vec<pb::AclFilterInfo> = parsed
        .iter()
        .filter_map(|p| p.as_ref().ok().cloned())
        .collect();
    let outcome = if valid.is_empty() {
        Ok(Vec::new())
    } else {
        b.cluster
            .delete_acls(pb::DeleteAclsRequest { filters: valid })
            .await
    };
    let mut applied = match &outcome {
        Ok(r) => r.clone().into_iter(),
        Err(_) => Vec::new().into_iter(),
    };
    resp.filter_results = parsed
        .into_iter()
        .map(|p| match (p, &outcome) {
            (Err(reason), _) => build!(DeleteAclsFilterResult {
                error_code: ResponseError::InvalidRequest.code(),
                error_message: Some(s(reason))
            }),
            (Ok(_), Err(e)) => build!(DeleteAclsFilterResult {
                error_code: e.code(),
                error_message: Some(s(e.to_string()))
            }),
            (Ok(_), Ok(_)) => match applied.next() {
                Some(r) => build!(DeleteAclsFilterResult {
                    error_code: i16::try_from(r.error_code).unwrap_or(-1),
                    error_message: (!r.error_message.is_empty()).then(|| s(r.error_message)),
                    matching_acls: r
                        .acls
                        .iter()
                        .map(|a| build!(DeleteAclsMatchingAcl {
                            resource_type: i8::try_from(a.resource_type).unwrap_or(0),
                            resource_name: s(a.resource_name.clone()),
                            pattern_type: i8::try_from(a.pattern_type).unwrap_or(0),
                            principal: s(a.principal.clone()),
                            host: s(a.host.clone()),
                            operation: i8::try_from(a.operation).unwrap_or(0),
                            permission_type: i8::try_from(a.permission).unwrap_or(0)
                        }))
                        .collect()
                }),
                None => build!(DeleteAclsFilterResult {
                    error_code: ResponseError::UnknownServerError.code()
                }),
            },
        })
        .collect();
    resp
}
