//! User resources <-> the controller's security metadata. A reconcile reads as: read the
//! password (the user's Secret, or the one the operator generated before) -> plan (pure: the
//! SCRAM credential, ACL bindings and quotas the spec asks for, against what the controller
//! holds) -> apply the differences -> write the user's Secret -> status. A finalizer removes
//! the credentials, ACLs and quotas before the resource goes, so a deleted User loses access.
//!
//! The operator owns every ACL of a User's principals (`User:<name>` and `User:CN=<name>`):
//! whatever else adds for them is removed at the next reconcile, as Strimzi's User Operator
//! does.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::ByteString;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{finalizer, Event};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use strata_controller::core::Image;
use strata_controller::{ControllerHandle, Error as ControllerError};
use strata_security::acl::{AclBinding, Operation, PatternType, Permission, ResourceType};
use strata_security::quota::{Alteration, EntityName, QuotaEntity, QuotaKey, QuotaMap};
use strata_security::scram::{ScramCredential, ScramMechanism};

use crate::crd::cluster::Cluster;
use crate::crd::user::{
    AclOperation, AclPatternType, AclResourceType, AclRule, AclRuleType, AuthenticationType, User,
    UserSpec, UserStatus, CLUSTER_RESOURCE_NAME,
};
use crate::crd::{CONDITION_DEGRADED, CONDITION_READY};
use crate::k8s::certs;
use crate::k8s::cluster::{self as clusters, CLUSTER_LABEL};
use crate::k8s::conditions::{carry_transitions, condition};
use crate::k8s::metrics::OperatorMetrics;

pub const FINALIZER: &str = "strata.dev/user";
/// Label on the Secrets the operator writes for users (its value: the User's name).
pub const USER_LABEL: &str = "strata.dev/user";
/// PBKDF2 rounds of the SCRAM credentials the operator makes (Kafka's default and minimum).
pub const SCRAM_ITERATIONS: u32 = 4096;
/// Length of generated passwords (letters and digits, as Strimzi generates them).
pub const PASSWORD_LENGTH: usize = 32;

/// Secret keys of a user's client settings.
pub const KEY_USERNAME: &str = "username";
pub const KEY_PASSWORD: &str = "password";
pub const KEY_JAAS: &str = "sasl.jaas.config";
pub const KEY_MECHANISM: &str = "sasl.mechanism";
pub const KEY_PROTOCOL: &str = "security.protocol";
pub const KEY_BOOTSTRAP: &str = "bootstrap.servers";

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("kubernetes: {0}")]
    Kube(#[from] kube::Error),
    #[error("controller unavailable: {0}")]
    Unavailable(String),
    #[error("certificates: {0}")]
    Certificates(#[from] certs::CertError),
    #[error("finalizer: {0}")]
    Finalizer(String),
}

/// The explicit mapping of controller errors here: all are transient for a reconcile (the
/// plan is validated before it is sent), so they are retried.
fn unavailable(e: ControllerError) -> ReconcileError {
    ReconcileError::Unavailable(e.to_string())
}

/// What the reconciler works with.
pub struct Ctx {
    pub api: Api<User>,
    pub secrets: Api<Secret>,
    pub clusters: Api<Cluster>,
    pub controller: ControllerHandle,
    pub metrics: Arc<OperatorMetrics>,
    /// The namespace's Cluster (its listener settings go into the users' Secrets).
    pub cluster_name: String,
    /// The Cluster reconciler's settings (names of the CA Secrets, the bootstrap address).
    pub cluster_cfg: clusters::ClusterConfig,
}

// ---- pure: principals, ACLs, quotas, client settings ----------------------------------------

/// The principal a user's connections carry: `User:<name>` with SCRAM, `User:CN=<name>` with
/// a client certificate (Kafka's default mapping of a certificate subject).
pub fn principal(name: &str, auth: AuthenticationType) -> String {
    match auth {
        AuthenticationType::ScramSha512 => format!("User:{name}"),
        AuthenticationType::Tls => format!("User:CN={name}"),
    }
}

/// Every principal a User named `name` may have had.
pub fn principals(name: &str) -> [String; 2] {
    [
        principal(name, AuthenticationType::ScramSha512),
        principal(name, AuthenticationType::Tls),
    ]
}

fn operation(o: AclOperation) -> Operation {
    match o {
        AclOperation::All => Operation::All,
        AclOperation::Read => Operation::Read,
        AclOperation::Write => Operation::Write,
        AclOperation::Create => Operation::Create,
        AclOperation::Delete => Operation::Delete,
        AclOperation::Alter => Operation::Alter,
        AclOperation::Describe => Operation::Describe,
        AclOperation::ClusterAction => Operation::ClusterAction,
        AclOperation::DescribeConfigs => Operation::DescribeConfigs,
        AclOperation::AlterConfigs => Operation::AlterConfigs,
        AclOperation::IdempotentWrite => Operation::IdempotentWrite,
    }
}

/// The bindings of one rule: one per operation.
fn bindings<'a>(rule: &'a AclRule, principal: &str) -> impl Iterator<Item = AclBinding> + 'a {
    let (resource_type, resource_name, pattern_type) = match rule.resource.type_ {
        AclResourceType::Cluster => (
            ResourceType::Cluster,
            CLUSTER_RESOURCE_NAME.to_string(),
            PatternType::Literal,
        ),
        t => (
            match t {
                AclResourceType::Topic => ResourceType::Topic,
                AclResourceType::Group => ResourceType::Group,
                _ => ResourceType::TransactionalId,
            },
            rule.resource.name.clone().unwrap_or_else(|| "*".into()),
            match rule.resource.pattern_type.unwrap_or_default() {
                AclPatternType::Literal => PatternType::Literal,
                AclPatternType::Prefix => PatternType::Prefixed,
            },
        ),
    };
    let permission = match rule.type_ {
        AclRuleType::Allow => Permission::Allow,
        AclRuleType::Deny => Permission::Deny,
    };
    let principal = principal.to_string();
    rule.operations.iter().map(move |o| AclBinding {
        resource_type,
        resource_name: resource_name.clone(),
        pattern_type,
        principal: principal.clone(),
        host: rule.host.clone(),
        operation: operation(*o),
        permission,
    })
}

/// The bindings the spec asks for (none without `authorization`).
pub fn desired_acls(spec: &UserSpec, principal: &str) -> BTreeSet<AclBinding> {
    spec.authorization
        .iter()
        .flat_map(|a| a.acls.iter())
        .flat_map(|r| bindings(r, principal))
        .collect()
}

/// The bindings to create and to delete so that the principals of User `name` hold exactly
/// `desired`.
pub fn acl_plan(
    current: &BTreeSet<AclBinding>,
    name: &str,
    desired: &BTreeSet<AclBinding>,
) -> (Vec<AclBinding>, Vec<AclBinding>) {
    let owned = principals(name);
    let held: BTreeSet<&AclBinding> = current
        .iter()
        .filter(|b| owned.contains(&b.principal))
        .collect();
    let create = desired
        .iter()
        .filter(|b| !held.contains(b))
        .cloned()
        .collect();
    let delete = held
        .into_iter()
        .filter(|b| !desired.contains(*b))
        .cloned()
        .collect();
    (create, delete)
}

/// The quota entity of a user: quotas name the principal's name (`CN=<name>` for tls).
pub fn quota_entity(principal: &str) -> QuotaEntity {
    QuotaEntity {
        user: Some(EntityName::Named(
            strata_security::quota::quota_user(principal).to_string(),
        )),
        client_id: None,
    }
}

/// The quotas the spec asks for.
pub fn desired_quotas(spec: &UserSpec) -> BTreeMap<QuotaKey, f64> {
    let Some(q) = &spec.quotas else {
        return BTreeMap::new();
    };
    [
        (QuotaKey::ProducerByteRate, q.producer_byte_rate),
        (QuotaKey::ConsumerByteRate, q.consumer_byte_rate),
        (QuotaKey::RequestPercentage, q.request_percentage),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|v| (k, v as f64)))
    .collect()
}

/// The AlterClientQuotas entries that bring every principal of User `name` to `desired` on
/// `active` (the other principal gets none), or nothing when they already match.
pub fn quota_plan(
    current: &QuotaMap,
    name: &str,
    active: &str,
    desired: &BTreeMap<QuotaKey, f64>,
) -> Vec<Alteration> {
    let mut out = Vec::new();
    for p in principals(name) {
        let entity = quota_entity(&p);
        let want: BTreeMap<QuotaKey, f64> = if p == active {
            desired.clone()
        } else {
            BTreeMap::new()
        };
        let have: BTreeMap<QuotaKey, f64> = current
            .get(&entity)
            .map(|m| m.iter().map(|(k, v)| (*k, v.0)).collect())
            .unwrap_or_default();
        if have == want {
            continue;
        }
        let ops = QuotaKey::ALL
            .into_iter()
            .filter(|k| want.contains_key(k) || have.contains_key(k))
            .map(|k| (k.name().to_string(), want.get(&k).copied()))
            .collect();
        out.push(Alteration {
            entity: entity
                .to_wire()
                .into_iter()
                .map(|(t, n)| (t.to_string(), n.map(str::to_string)))
                .collect(),
            ops,
        });
    }
    out
}

/// Kafka's `sasl.jaas.config` for a SCRAM user; quotes and backslashes escaped as Kafka's
/// JAAS parser reads them.
pub fn jaas_config(user: &str, password: &str) -> String {
    let q = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    format!(
        "org.apache.kafka.common.security.scram.ScramLoginModule required username=\"{}\" password=\"{}\";",
        q(user),
        q(password)
    )
}

/// What a client of the cluster needs besides its credentials.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientSettings {
    /// bootstrap.servers.
    pub bootstrap: Option<String>,
    /// security.protocol of the client listener.
    pub protocol: Option<String>,
    /// The certificates that vouch for the nodes (PEM), when the listener has TLS.
    pub ca_bundle: Option<String>,
}

/// The Secret data of a SCRAM user.
pub fn scram_secret_data(
    user: &str,
    password: &str,
    settings: &ClientSettings,
) -> BTreeMap<String, String> {
    let mut d = BTreeMap::from([
        (KEY_USERNAME.to_string(), user.to_string()),
        (KEY_PASSWORD.to_string(), password.to_string()),
        (KEY_JAAS.to_string(), jaas_config(user, password)),
        (KEY_MECHANISM.to_string(), "SCRAM-SHA-512".to_string()),
    ]);
    settings_into(&mut d, settings);
    d
}

fn settings_into(d: &mut BTreeMap<String, String>, s: &ClientSettings) {
    if let Some(b) = &s.bootstrap {
        d.insert(KEY_BOOTSTRAP.into(), b.clone());
    }
    if let Some(p) = &s.protocol {
        d.insert(KEY_PROTOCOL.into(), p.clone());
    }
    if let Some(ca) = &s.ca_bundle {
        d.insert(certs::CA_CERT.into(), ca.clone());
    }
}

/// A fresh password of letters and digits.
pub fn generate_password() -> Result<String, ReconcileError> {
    strata_security::scram::generate_password(PASSWORD_LENGTH)
        .map_err(|e| ReconcileError::Unavailable(e.to_string()))
}

/// Whether `secret` was written by the operator for `u` (an owner reference to its uid).
fn owned_by(secret: &Secret, u: &User) -> bool {
    let uid = u.metadata.uid.as_deref();
    secret
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| Some(o.uid.as_str()) == uid && o.kind == "User")
}

fn decode(secret: &Secret, key: &str) -> Option<String> {
    let from_data = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .and_then(|b| String::from_utf8(b.0.clone()).ok());
    from_data.or_else(|| {
        secret
            .string_data
            .as_ref()
            .and_then(|d| d.get(key).cloned())
    })
}

// ---- the edges -------------------------------------------------------------------------------

/// What went wrong that the user must fix (shown in the status; the reconcile waits).
struct Refusal(&'static str, String);

fn secret_meta(u: &User, cluster: &str) -> ObjectMeta {
    let name = u.name_any();
    ObjectMeta {
        name: Some(name.clone()),
        namespace: u.namespace(),
        labels: Some(BTreeMap::from([
            (USER_LABEL.to_string(), name),
            (CLUSTER_LABEL.to_string(), cluster.to_string()),
            (
                "app.kubernetes.io/managed-by".to_string(),
                "strata-operator".to_string(),
            ),
        ])),
        owner_references: u.controller_owner_ref(&()).map(|o: OwnerReference| vec![o]),
        ..Default::default()
    }
}

/// The client settings of the namespace's Cluster, and its CA bundle when the listener has
/// TLS.
async fn client_settings(ctx: &Ctx) -> Result<(Option<Cluster>, ClientSettings), ReconcileError> {
    let Some(c) = ctx.clusters.get_opt(&ctx.cluster_name).await? else {
        return Ok((None, ClientSettings::default()));
    };
    let mut s = ClientSettings {
        bootstrap: Some(clusters::bootstrap_address(&c, &ctx.cluster_cfg)),
        protocol: Some(clusters::client_protocol(&c).to_string()),
        ca_bundle: None,
    };
    if c.spec.listener.tls {
        s.ca_bundle = ctx
            .secrets
            .get_opt(&clusters::cluster_ca_cert_secret_name(&c))
            .await?
            .and_then(|sec| decode(&sec, certs::CA_CERT));
    }
    Ok((Some(c), s))
}

/// The password of a SCRAM user: from its Secret reference, else the one the operator wrote
/// before, else a new one.
async fn password(
    u: &User,
    ctx: &Ctx,
    own: Option<&Secret>,
) -> Result<Result<String, Refusal>, ReconcileError> {
    if let Some(p) = &u.spec.authentication.password {
        let r = &p.value_from.secret_key_ref;
        let Some(secret) = ctx.secrets.get_opt(&r.name).await? else {
            return Ok(Err(Refusal(
                "PasswordSecretNotFound",
                format!(
                    "Secret {:?} (spec.authentication.password) does not exist",
                    r.name
                ),
            )));
        };
        return Ok(match decode(&secret, &r.key) {
            Some(p) if !p.is_empty() => Ok(p),
            _ => Err(Refusal(
                "PasswordKeyNotFound",
                format!("Secret {:?} has no non-empty UTF-8 key {:?}", r.name, r.key),
            )),
        });
    }
    if let Some(p) = own
        .and_then(|s| decode(s, KEY_PASSWORD))
        .filter(|p| !p.is_empty())
    {
        return Ok(Ok(p));
    }
    Ok(Ok(generate_password()?))
}

/// Makes the controller hold a SCRAM-SHA-512 credential for `password` (and no other
/// mechanism); with `None`, no credential at all.
async fn sync_scram(
    name: &str,
    password: Option<&str>,
    md: &Image,
    ctx: &Ctx,
) -> Result<(), ReconcileError> {
    let held = md.scram_credentials.get(name);
    let mut upserts = Vec::new();
    let mut deletes = Vec::new();
    for m in held.into_iter().flat_map(|per| per.keys()) {
        if password.is_none() || *m != ScramMechanism::Sha512 {
            deletes.push((name.to_string(), *m));
        }
    }
    if let Some(p) = password {
        let current = held
            .and_then(|per| per.get(&ScramMechanism::Sha512))
            .is_some_and(|c| c.verify_password(p));
        if !current {
            let c = ScramCredential::from_password(ScramMechanism::Sha512, p, SCRAM_ITERATIONS)
                .map_err(|e| ReconcileError::Unavailable(e.to_string()))?;
            upserts.push((name.to_string(), c));
        }
    }
    if upserts.is_empty() && deletes.is_empty() {
        return Ok(());
    }
    let out = ctx
        .controller
        .alter_scram_credentials(upserts, deletes)
        .await
        .map_err(unavailable)?;
    for o in out.value {
        o.result.map_err(unavailable)?;
    }
    tracing::info!(user = %name, "SCRAM credentials set from the User resource");
    Ok(())
}

async fn sync_acls(
    name: &str,
    desired: &BTreeSet<AclBinding>,
    md: &Image,
    ctx: &Ctx,
) -> Result<(), ReconcileError> {
    let (create, delete) = acl_plan(&md.acls, name, desired);
    if !delete.is_empty() {
        let filters = delete.iter().map(AclBinding::to_filter).collect();
        ctx.controller
            .delete_acls(filters)
            .await
            .map_err(unavailable)?;
    }
    if !create.is_empty() {
        let out = ctx
            .controller
            .create_acls(create.clone())
            .await
            .map_err(unavailable)?;
        for r in out.value {
            r.map_err(unavailable)?;
        }
    }
    if !create.is_empty() || !delete.is_empty() {
        tracing::info!(user = %name, created = create.len(), deleted = delete.len(), "ACLs set from the User resource");
    }
    Ok(())
}

async fn sync_quotas(
    name: &str,
    active: &str,
    desired: &BTreeMap<QuotaKey, f64>,
    md: &Image,
    ctx: &Ctx,
) -> Result<(), ReconcileError> {
    let plan = quota_plan(&md.client_quotas, name, active, desired);
    if plan.is_empty() {
        return Ok(());
    }
    let out = ctx
        .controller
        .alter_client_quotas(plan, false)
        .await
        .map_err(unavailable)?;
    for r in out.value {
        r.map_err(|e| ReconcileError::Unavailable(e.to_string()))?;
    }
    tracing::info!(user = %name, "quotas set from the User resource");
    Ok(())
}

/// Creates or replaces the user's Secret when its data differs.
async fn write_secret(
    u: &User,
    ctx: &Ctx,
    own: Option<Secret>,
    data: BTreeMap<String, String>,
) -> Result<(), ReconcileError> {
    let data: BTreeMap<String, ByteString> = data
        .into_iter()
        .map(|(k, v)| (k, ByteString(v.into_bytes())))
        .collect();
    let meta = secret_meta(u, &ctx.cluster_name);
    match own {
        Some(mut s) => {
            if s.data.as_ref() == Some(&data) && s.metadata.labels == meta.labels {
                return Ok(());
            }
            s.data = Some(data);
            s.string_data = None;
            s.metadata.labels = meta.labels;
            ctx.secrets
                .replace(&u.name_any(), &PostParams::default(), &s)
                .await?;
        }
        None => {
            let s = Secret {
                metadata: meta,
                data: Some(data),
                type_: Some("Opaque".into()),
                ..Default::default()
            };
            ctx.secrets.create(&PostParams::default(), &s).await?;
            tracing::info!(user = %u.name_any(), "wrote the user's Secret");
        }
    }
    Ok(())
}

async fn apply(u: Arc<User>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    let name = u.name_any();
    let auth = u.spec.authentication.type_;
    let active = principal(&name, auth);
    let own = ctx.secrets.get_opt(&name).await?;
    if let Some(s) = &own {
        if !owned_by(s, &u) {
            let why = format!(
                "a Secret named {name:?} exists and was not written for this User; \
                 delete or rename it so the operator can write the user's settings there"
            );
            write_status(&u, &ctx, &active, Some(Refusal("SecretConflict", why))).await?;
            return Ok(Action::requeue(Duration::from_secs(30)));
        }
    }
    let (cluster, settings) = client_settings(&ctx).await?;
    let md = ctx.controller.image();
    let refusal = match auth {
        AuthenticationType::ScramSha512 => match password(&u, &ctx, own.as_ref()).await? {
            Err(r) => Some(r),
            Ok(p) => {
                sync_scram(&name, Some(&p), &md, &ctx).await?;
                write_secret(&u, &ctx, own, scram_secret_data(&name, &p, &settings)).await?;
                None
            }
        },
        AuthenticationType::Tls => {
            sync_scram(&name, None, &md, &ctx).await?;
            tls_user(&u, &ctx, cluster.as_ref(), &settings).await?
        }
    };
    if refusal.is_none() {
        sync_acls(&name, &desired_acls(&u.spec, &active), &md, &ctx).await?;
        sync_quotas(&name, &active, &desired_quotas(&u.spec), &md, &ctx).await?;
    }
    write_status(&u, &ctx, &active, refusal).await?;
    // Referenced password Secrets and CA renewals change without touching the User.
    Ok(Action::requeue(Duration::from_secs(60)))
}

/// A tls user's certificate, signed by the cluster's clients CA, in the user's Secret.
async fn tls_user(
    u: &User,
    ctx: &Ctx,
    cluster: Option<&Cluster>,
    settings: &ClientSettings,
) -> Result<Option<Refusal>, ReconcileError> {
    let Some(c) = cluster else {
        return Ok(Some(Refusal(
            "ClusterNotFound",
            format!(
                "Cluster {:?} does not exist yet: its clients CA signs the certificate",
                ctx.cluster_name
            ),
        )));
    };
    let ca_secret = ctx
        .secrets
        .get_opt(&clusters::clients_ca_secret_name(c))
        .await?;
    let ca = ca_secret.as_ref().and_then(|s| {
        Some(certs::KeyPair {
            cert_pem: decode(s, certs::CA_CERT)?,
            key_pem: decode(s, certs::CA_KEY)?,
        })
    });
    let Some(ca) = ca else {
        return Ok(Some(Refusal(
            "ClientsCaNotReady",
            format!(
                "Cluster {:?} has no clients CA yet (it makes one when listener.authentication is tls)",
                ctx.cluster_name
            ),
        )));
    };
    let bundle = settings.ca_bundle.clone().unwrap_or_default();
    let meta = secret_meta(u, &ctx.cluster_name);
    certs::ensure_client(
        &ctx.secrets,
        &u.name_any(),
        meta,
        &ca,
        &bundle,
        &u.name_any(),
        SystemTime::now(),
        &certs::Validity::default(),
    )
    .await?;
    Ok(None)
}

async fn write_status(
    u: &User,
    ctx: &Ctx,
    active: &str,
    refusal: Option<Refusal>,
) -> Result<(), ReconcileError> {
    let generation = u.metadata.generation;
    let md = ctx.controller.image();
    let acls = md.acls.iter().filter(|b| b.principal == active).count() as i32;
    let (ready, reason, msg) = match &refusal {
        None => (
            true,
            "Ready",
            format!("{active} has its credentials, {acls} ACLs and its quotas"),
        ),
        Some(Refusal(reason, why)) => (false, *reason, why.clone()),
    };
    let mut status = UserStatus {
        observed_generation: generation,
        conditions: vec![
            condition(CONDITION_READY, ready, reason, msg.clone(), generation),
            condition(
                CONDITION_DEGRADED,
                !ready,
                if ready { "Healthy" } else { reason },
                if ready { "nothing to fix".into() } else { msg },
                generation,
            ),
        ],
        username: Some(u.name_any()),
        principal: Some(active.to_string()),
        secret: refusal.is_none().then(|| u.name_any()),
        acls: Some(acls),
    };
    if let Some(old) = &u.status {
        carry_transitions(&old.conditions, &mut status.conditions);
        if *old == status {
            return Ok(());
        }
    }
    let patch = serde_json::json!({ "status": status });
    ctx.api
        .patch_status(
            &u.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    Ok(())
}

/// Removes everything the User granted: credentials, ACLs and quotas of both principals,
/// and the Secret the operator wrote (garbage collection would too, later).
async fn cleanup(u: Arc<User>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    let name = u.name_any();
    let md = ctx.controller.image();
    sync_scram(&name, None, &md, &ctx).await?;
    sync_acls(&name, &BTreeSet::new(), &md, &ctx).await?;
    sync_quotas(&name, "", &BTreeMap::new(), &md, &ctx).await?;
    if let Some(s) = ctx.secrets.get_opt(&name).await? {
        if owned_by(&s, &u) {
            match ctx.secrets.delete(&name, &Default::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    tracing::info!(user = %name, "removed the user's credentials, ACLs and quotas");
    Ok(Action::await_change())
}

async fn reconcile(u: Arc<User>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    let started = Instant::now();
    let res = finalizer(&ctx.api, FINALIZER, u, |ev| async {
        match ev {
            Event::Apply(u) => apply(u, ctx.clone()).await,
            Event::Cleanup(u) => cleanup(u, ctx.clone()).await,
        }
    })
    .await
    .map_err(|e| ReconcileError::Finalizer(e.to_string()));
    ctx.metrics
        .observe_reconcile("user", started.elapsed(), res.is_ok());
    res
}

fn error_policy(u: Arc<User>, e: &ReconcileError, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(user = %u.name_any(), error = %e, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

/// Run the User controller until the process stops. The Secrets it writes are watched too,
/// so a deleted or edited user Secret is written again at once.
pub async fn run(ctx: Arc<Ctx>) {
    Controller::new(ctx.api.clone(), watcher::Config::default())
        .owns(
            ctx.secrets.clone(),
            watcher::Config::default().labels(USER_LABEL),
        )
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|_| async {})
        .await;
}

#[cfg(test)]
mod tests;
