//! Leader election among operator replicas with a coordination.k8s.io Lease. Only the holder
//! runs the controller; every write of the lease is conditioned on its resourceVersion, so two
//! replicas cannot both believe they acquired it.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::Api;

/// Settings of the election.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub name: String,
    pub identity: String,
    /// A holder that has not renewed for this long may be replaced.
    pub duration: Duration,
    /// How often the holder renews (and candidates retry).
    pub renew_every: Duration,
}

/// What one attempt found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// We hold the lease (acquired or renewed).
    Held,
    /// Someone else holds a live lease.
    HeldBy(String),
}

fn now() -> MicroTime {
    MicroTime(Timestamp::now())
}

/// One acquire-or-renew attempt.
pub async fn try_acquire(api: &Api<Lease>, cfg: &LeaseConfig) -> Result<Attempt, kube::Error> {
    let secs = cfg.duration.as_secs().max(1) as i32;
    let current = api.get_opt(&cfg.name).await?;
    let Some(mut lease) = current else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(cfg.name.clone()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(cfg.identity.clone()),
                lease_duration_seconds: Some(secs),
                acquire_time: Some(now()),
                renew_time: Some(now()),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(Attempt::Held),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Attempt::HeldBy("?".into())),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.clone().unwrap_or_default();
    let expired = match &spec.renew_time {
        Some(MicroTime(t)) => {
            let age = Timestamp::now().duration_since(*t);
            let limit = spec.lease_duration_seconds.unwrap_or(secs).max(1) as i64;
            age.as_secs() >= limit
        }
        None => true,
    };
    if holder != cfg.identity && !holder.is_empty() && !expired {
        return Ok(Attempt::HeldBy(holder));
    }
    let taking_over = holder != cfg.identity;
    let mut next = spec;
    next.holder_identity = Some(cfg.identity.clone());
    next.lease_duration_seconds = Some(secs);
    next.renew_time = Some(now());
    if taking_over {
        next.acquire_time = Some(now());
        next.lease_transitions = Some(next.lease_transitions.unwrap_or(0) + 1);
    }
    lease.spec = Some(next);
    // The read's resourceVersion stays in the object: a concurrent writer makes this a 409.
    match api.replace(&cfg.name, &PostParams::default(), &lease).await {
        Ok(_) => {
            if taking_over {
                tracing::info!(lease = %cfg.name, previous = %holder, "acquired the lease");
            }
            Ok(Attempt::Held)
        }
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(Attempt::HeldBy(holder)),
        Err(e) => Err(e),
    }
}

/// Wait until this replica holds the lease.
pub async fn acquire(api: &Api<Lease>, cfg: &LeaseConfig) {
    let mut last_holder = None;
    loop {
        match try_acquire(api, cfg).await {
            Ok(Attempt::Held) => return,
            Ok(Attempt::HeldBy(h)) => {
                if last_holder.as_ref() != Some(&h) {
                    tracing::info!(lease = %cfg.name, holder = %h, "standing by: another replica leads");
                    last_holder = Some(h);
                }
            }
            Err(e) => {
                tracing::warn!(lease = %cfg.name, error = %e, "cannot read or write the lease")
            }
        }
        tokio::time::sleep(cfg.renew_every).await;
    }
}

/// Renew until a renewal fails for longer than the lease lasts (or someone else holds it);
/// returns why leadership was lost. The caller must stop acting as leader at once.
pub async fn hold(api: &Api<Lease>, cfg: &LeaseConfig) -> String {
    let mut last_ok = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(cfg.renew_every).await;
        match try_acquire(api, cfg).await {
            Ok(Attempt::Held) => last_ok = tokio::time::Instant::now(),
            Ok(Attempt::HeldBy(h)) => return format!("the lease is held by {h}"),
            Err(e) => {
                // Stop before the lease can expire in the others' eyes.
                if last_ok.elapsed() + cfg.renew_every >= cfg.duration {
                    return format!("could not renew the lease: {e}");
                }
                tracing::warn!(error = %e, "lease renewal failed; retrying");
            }
        }
    }
}
