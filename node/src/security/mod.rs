//! The node's security edge: listeners and their TLS, SASL sessions, principals, the ACL
//! authorizer and the connection limits. The mechanisms, TLS material and ACL rules are in
//! the pure `strata-security` crate; this module feeds them the node's configuration and
//! the cluster metadata (SCRAM credentials and ACLs, kept by the controller).
//!
//! Owns: [`Security`] (current TLS config, JWKS, credentials and authorizer snapshots,
//! per-address connection counts). May call: `strata-security`, the file system for TLS and
//! JWKS files; nothing else of the node — the node pushes metadata in with
//! [`Security::apply_metadata`].

pub mod config;
pub mod quota;
pub mod session;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use strata_security::acl::{AclBinding, Authorizer, Operation, ResourceType};
use strata_security::oauth::JwtValidator;
use strata_security::principal::PrincipalMapper;
use strata_security::quota::QuotaKey;
use strata_security::scram::{Credentials, ScramCredential, ScramMechanism};
use strata_security::tls::{ClientAuth, ReloadingTls, TlsFiles};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use config::{AuthorizerKind, JwksSource, Mechanism, SecurityConfig};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The SCRAM credentials of the cluster metadata, by (user, mechanism).
#[derive(Default)]
pub struct CredentialStore(HashMap<(String, ScramMechanism), ScramCredential>);

impl CredentialStore {
    /// From every (user, credential) of the metadata.
    pub fn new(all: impl IntoIterator<Item = (String, ScramCredential)>) -> Self {
        CredentialStore(
            all.into_iter()
                .map(|(u, c)| ((u, c.mechanism), c))
                .collect(),
        )
    }
}

impl Credentials for CredentialStore {
    fn scram(&self, mechanism: ScramMechanism, user: &str) -> Option<ScramCredential> {
        self.0.get(&(user.to_string(), mechanism)).cloned()
    }
}

/// Counters for `/metrics`.
#[derive(Default)]
pub struct SecurityMetrics {
    pub auth_ok: AtomicU64,
    pub auth_failed: AtomicU64,
    pub refused_per_ip: AtomicU64,
    pub setup_timeouts: AtomicU64,
    pub idle_closed: AtomicU64,
    pub authorization_denied: AtomicU64,
    pub tls_reloads: AtomicU64,
    /// Throttled responses and their total throttle time (ms), per quota in
    /// [`QuotaKey::ALL`] order.
    pub throttles: [AtomicU64; 3],
    pub throttle_ms: [AtomicU64; 3],
}

/// Who is asking: what every authorization check needs, and the listener (whose
/// addresses Metadata answers with).
#[derive(Debug, Clone)]
pub struct Caller {
    /// `User:name`.
    pub principal: Arc<str>,
    /// The client's IP address as text.
    pub host: Arc<str>,
    /// The listener's name (empty for requests made inside the node).
    pub listener: Arc<str>,
    /// The connection's quota throttle: a handler that throttles the caller mutes the
    /// connection through it (and holds it, see [`Throttle::hold`]).
    pub throttle: Arc<Throttle>,
}

/// A connection muted for a quota's throttle time (KIP-219): the answer goes out at once
/// with `throttle_time_ms`, and the connection reads no further request until the time is
/// over, so a client cannot run past its quota with requests already in flight.
///
/// Or held by a request that must take effect before the next one is dispatched but
/// waits first (a produce that has its partitions added to a transaction before it
/// appends): requests of one connection take effect in order, as on Kafka.
#[derive(Debug, Default)]
pub struct Throttle {
    until: Mutex<Option<tokio::time::Instant>>,
    held: std::sync::atomic::AtomicUsize,
    released: tokio::sync::Notify,
}

/// Holds a connection's dispatch until dropped.
pub struct Hold(Arc<Throttle>);

impl Drop for Hold {
    fn drop(&mut self) {
        self.0
            .held
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        // One waiter (the connection's loop); a permit left unused only wakes it once.
        self.0.released.notify_one();
    }
}

impl Throttle {
    /// Mute the connection for `ms` milliseconds from now (no-op for 0 or less; a longer
    /// mute already set stays).
    pub fn mute_for(&self, ms: i64) {
        if ms <= 0 {
            return;
        }
        let t = tokio::time::Instant::now() + Duration::from_millis(ms as u64);
        let mut u = self.until.lock();
        if u.is_none_or(|cur| cur < t) {
            *u = Some(t);
        }
    }

    /// Dispatch no further request of the connection until the returned guard is dropped.
    pub fn hold(self: &Arc<Self>) -> Hold {
        self.held.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Hold(self.clone())
    }

    /// Whether a request holds the connection now.
    pub fn held(&self) -> bool {
        self.held.load(std::sync::atomic::Ordering::Acquire) > 0
    }

    /// Resolves when a hold is released (or at once, if one was released since the last
    /// call).
    pub async fn released(&self) {
        self.released.notified().await
    }

    /// When the mute ends, if the connection is muted now.
    pub fn muted_until(&self) -> Option<tokio::time::Instant> {
        let mut u = self.until.lock();
        match *u {
            Some(t) if t > tokio::time::Instant::now() => Some(t),
            Some(_) => {
                *u = None;
                None
            }
            None => None,
        }
    }
}

impl Caller {
    /// A caller inside the node (tests, tools): anonymous, no listener.
    pub fn internal() -> Caller {
        Caller {
            principal: session::ANONYMOUS.into(),
            host: "127.0.0.1".into(),
            listener: "".into(),
            throttle: Arc::new(Throttle::default()),
        }
    }
}

/// The node's security state.
pub struct Security {
    pub config: SecurityConfig,
    tls: Option<ReloadingTls>,
    /// The inter-broker listener's TLS when nodes replicate over mutual TLS: the same
    /// certificate, client certificates required and checked against the nodes' CA.
    inter_broker_tls: Option<ReloadingTls>,
    mapper: PrincipalMapper,
    oauth: RwLock<Option<Arc<JwtValidator>>>,
    /// The JWKS file's last contents, to reload only on change.
    jwks_seen: Mutex<Vec<u8>>,
    credentials: RwLock<Arc<CredentialStore>>,
    /// None: no authorizer (every action allowed).
    authorizer: RwLock<Option<Arc<Authorizer>>>,
    /// The ACL set the authorizer was built from.
    acls_seen: Mutex<Vec<AclBinding>>,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// Recent failed authentications per address: (count, since), for
    /// [`Security::failed_auth_delay`].
    failures: Mutex<HashMap<IpAddr, (u32, std::time::Instant)>>,
    /// Client quotas and the rates measured against them.
    pub quotas: quota::Quotas,
    pub metrics: SecurityMetrics,
}

/// A connection's hold on its address's connection count; released when dropped.
pub struct IpPermit {
    security: Arc<Security>,
    ip: IpAddr,
}

impl Drop for IpPermit {
    fn drop(&mut self) {
        let mut m = self.security.per_ip.lock();
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

impl Security {
    /// Load TLS material and the JWKS file; errors stop the node at start.
    pub fn open(config: SecurityConfig) -> Result<Arc<Security>> {
        let tls = match &config.tls {
            Some(files) => Some(
                ReloadingTls::load(files.clone())
                    .map_err(|e| Error::InvalidRequest(format!("TLS: {e}")))?,
            ),
            None => None,
        };
        let inter_broker_tls = match (&config.tls, &config.inter_broker_tls) {
            (Some(files), Some(ib)) => Some(
                ReloadingTls::load(TlsFiles {
                    client_ca: Some(ib.ca.clone()),
                    client_auth: ClientAuth::Required,
                    ..files.clone()
                })
                .map_err(|e| Error::InvalidRequest(format!("inter-broker TLS: {e}")))?,
            ),
            _ => None,
        };
        let mapper = PrincipalMapper::parse(&config.principal_mapping_rules)
            .map_err(|e| Error::InvalidRequest(format!("--ssl-principal-mapping-rules: {e}")))?;
        let authorizer = match config.authorizer {
            AuthorizerKind::None => None,
            AuthorizerKind::Acl => Some(Arc::new(Authorizer::new(
                Vec::new(),
                config.super_users.clone(),
                config.allow_everyone_if_no_acl_found,
            ))),
        };
        let s = Arc::new(Security {
            tls,
            inter_broker_tls,
            mapper,
            oauth: RwLock::new(None),
            jwks_seen: Mutex::new(Vec::new()),
            credentials: RwLock::new(Arc::new(CredentialStore::default())),
            authorizer: RwLock::new(authorizer),
            acls_seen: Mutex::new(Vec::new()),
            per_ip: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            quotas: quota::Quotas::default(),
            metrics: SecurityMetrics::default(),
            config,
        });
        if let Some(o) = &s.config.oauth {
            if let JwksSource::File(_) = &o.jwks {
                s.reload_jwks_file()?;
            }
        }
        Ok(s)
    }

    /// Reload TLS files and the JWKS when they change, until `stop`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let tls_every = Duration::from_millis(self.config.tls_reload_interval_ms);
        let jwks_every = self
            .config
            .oauth
            .as_ref()
            .map(|o| Duration::from_millis(o.refresh_ms.min(60_000)));
        let mut tls_tick = tokio::time::interval(tls_every);
        let mut jwks_tick = tokio::time::interval(jwks_every.unwrap_or(Duration::from_secs(3600)));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tls_tick.tick() => {
                    for t in self.tls.iter().chain(self.inter_broker_tls.iter()) {
                        match t.reload_if_changed() {
                            Ok(true) => {
                                self.metrics.tls_reloads.fetch_add(1, Ordering::Relaxed);
                                tracing::info!(cert = %t.files().cert.display(), "TLS certificate reloaded");
                            }
                            Ok(false) => {}
                            Err(e) => tracing::warn!(error = %e, "TLS files changed but cannot be used; keeping the current ones"),
                        }
                    }
                }
                _ = jwks_tick.tick(), if jwks_every.is_some() => {
                    if let Err(e) = self.refresh_jwks().await {
                        tracing::warn!(error = %e, "cannot refresh the JWKS; keeping the current keys");
                    }
                }
            }
        }
    }

    fn reload_jwks_file(&self) -> Result<()> {
        let Some(o) = &self.config.oauth else {
            return Ok(());
        };
        let JwksSource::File(path) = &o.jwks else {
            return Ok(());
        };
        let bytes = std::fs::read(path).map_err(|e| Error::io(path.display().to_string(), e))?;
        self.install_jwks(bytes)
    }

    fn install_jwks(&self, bytes: Vec<u8>) -> Result<()> {
        let Some(o) = &self.config.oauth else {
            return Ok(());
        };
        let mut seen = self.jwks_seen.lock();
        if *seen == bytes {
            return Ok(());
        }
        let v = JwtValidator::from_jwks(&bytes, o.options.clone())
            .map_err(|e| Error::InvalidRequest(format!("JWKS: {e}")))?;
        *self.oauth.write() = Some(Arc::new(v));
        *seen = bytes;
        tracing::info!("JWKS loaded");
        Ok(())
    }

    async fn refresh_jwks(&self) -> Result<()> {
        let Some(o) = &self.config.oauth else {
            return Ok(());
        };
        match &o.jwks {
            JwksSource::File(_) => self.reload_jwks_file(),
            JwksSource::Url(url) => {
                let bytes = fetch_url(url).await?;
                self.install_jwks(bytes)
            }
        }
    }

    /// The current TLS server config, for a new TLS connection.
    pub fn tls_config(&self) -> Option<Arc<rustls::ServerConfig>> {
        self.tls.as_ref().map(|t| t.config())
    }

    /// The TLS server config of a new connection on `listener`: the inter-broker listener's
    /// own when nodes replicate over mutual TLS.
    pub fn tls_config_for(&self, listener: &str) -> Option<Arc<rustls::ServerConfig>> {
        match &self.inter_broker_tls {
            Some(t) if listener == self.config.inter_broker_listener => Some(t.config()),
            _ => self.tls_config(),
        }
    }

    /// How a follower reaches its leader over mutual TLS: a client config built from the
    /// node's certificate files as they are now (renewed files are picked up by the next
    /// connection) and the name to check the leader's certificate against. None: plaintext.
    pub fn peer_tls(
        &self,
        leader_host: &str,
    ) -> Result<Option<(Arc<rustls::ClientConfig>, String)>> {
        let (Some(files), Some(ib)) = (&self.config.tls, &self.config.inter_broker_tls) else {
            return Ok(None);
        };
        let config = strata_security::tls::client_config(&ib.ca, Some((&files.cert, &files.key)))
            .map_err(|e| Error::Replication(format!("inter-broker TLS: {e}")))?;
        let name = ib
            .server_name
            .clone()
            .unwrap_or_else(|| leader_host.to_string());
        Ok(Some((Arc::new(config), name)))
    }

    /// The leaf certificate's expiry (seconds since the epoch), for a metric.
    pub fn tls_not_after(&self) -> Option<i64> {
        self.tls.as_ref().and_then(|t| t.not_after())
    }

    /// The user a verified client certificate maps to (None when it does not map).
    pub fn tls_user(&self, cert_der: &[u8]) -> Option<String> {
        let name = strata_security::principal::subject_name(cert_der).ok()?;
        match self.mapper.map(&name) {
            Ok(u) => Some(u),
            Err(e) => {
                tracing::info!(subject = %name, error = %e, "client certificate maps to no principal");
                None
            }
        }
    }

    /// Count a new connection from `ip`, or None when the address is at its limit.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<IpPermit> {
        let limit = self.config.connection_limit_for(ip);
        let mut m = self.per_ip.lock();
        let n = m.entry(ip).or_insert(0);
        if *n >= limit {
            if *n == 0 {
                m.remove(&ip);
            }
            self.metrics.refused_per_ip.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *n += 1;
        Some(IpPermit {
            security: self.clone(),
            ip,
        })
    }

    /// How long to hold the answer to a failed authentication from `ip` before closing:
    /// `--failed-authentication-delay-ms`, doubled for every further failure from the same
    /// address within a minute, up to 64 times it (so a password guesser from one address
    /// slows to one try every few seconds; others are not affected).
    pub fn failed_auth_delay(&self, ip: IpAddr) -> Duration {
        const WINDOW: Duration = Duration::from_secs(60);
        let base = self.config.failed_authentication_delay_ms;
        let mut m = self.failures.lock();
        let now = std::time::Instant::now();
        if m.len() > 100_000 {
            m.retain(|_, (_, since)| now.duration_since(*since) < WINDOW);
        }
        let e = m.entry(ip).or_insert((0, now));
        if now.duration_since(e.1) >= WINDOW {
            *e = (0, now);
        }
        e.0 = e.0.saturating_add(1);
        Duration::from_millis(base.saturating_mul(1 << (e.0 - 1).min(6)))
    }

    /// The current SCRAM credentials.
    pub fn credentials(&self) -> Arc<CredentialStore> {
        self.credentials.read().clone()
    }

    /// The current OAUTHBEARER validator.
    pub fn oauth_validator(&self) -> Option<Arc<JwtValidator>> {
        self.oauth.read().clone()
    }

    /// Count a response throttled by the quota of `key` for `ms` milliseconds (nothing when
    /// `ms` is 0).
    pub fn note_throttle(&self, key: QuotaKey, ms: i64) {
        if ms <= 0 {
            return;
        }
        if let Some(i) = QuotaKey::ALL.iter().position(|k| *k == key) {
            self.metrics.throttles[i].fetch_add(1, Ordering::Relaxed);
            self.metrics.throttle_ms[i].fetch_add(ms as u64, Ordering::Relaxed);
        }
    }

    /// Count an authentication outcome.
    pub fn note_auth(&self, _mech: Mechanism, ok: bool) {
        let c = if ok {
            &self.metrics.auth_ok
        } else {
            &self.metrics.auth_failed
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Install the credentials, ACLs and client quotas of a new metadata image.
    pub fn apply_metadata(
        &self,
        credentials: impl IntoIterator<Item = (String, ScramCredential)>,
        acls: &[AclBinding],
        quotas: Arc<strata_security::quota::QuotaMap>,
    ) {
        *self.credentials.write() = Arc::new(CredentialStore::new(credentials));
        self.quotas.set(quotas);
        if self.config.authorizer == AuthorizerKind::Acl {
            let mut seen = self.acls_seen.lock();
            if seen.as_slice() != acls {
                *self.authorizer.write() = Some(Arc::new(Authorizer::new(
                    acls.to_vec(),
                    self.config.super_users.clone(),
                    self.config.allow_everyone_if_no_acl_found,
                )));
                *seen = acls.to_vec();
            }
        }
    }

    /// Whether an authorizer is on.
    pub fn authorizing(&self) -> bool {
        self.authorizer.read().is_some()
    }

    /// May `caller` do `op` on the resource? Always yes without an authorizer.
    pub fn authorize(
        &self,
        caller: &Caller,
        op: Operation,
        resource: ResourceType,
        name: &str,
    ) -> bool {
        let Some(a) = self.authorizer.read().clone() else {
            return true;
        };
        let ok = a.authorize(&caller.principal, &caller.host, op, resource, name);
        if !ok {
            self.metrics
                .authorization_denied
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(principal = %caller.principal, host = %caller.host, ?op, ?resource, name, "denied");
        }
        ok
    }

    /// May `caller` do `op` on some resource of the type (KIP-679)?
    pub fn authorize_any(&self, caller: &Caller, op: Operation, resource: ResourceType) -> bool {
        let Some(a) = self.authorizer.read().clone() else {
            return true;
        };
        a.authorize_any(&caller.principal, &caller.host, op, resource)
    }
}

/// GET a small document over HTTP(S) (the JWKS endpoint): 10 s, at most 1 MiB.
async fn fetch_url(url: &str) -> Result<Vec<u8>> {
    let fail = |e: String| Error::InvalidRequest(format!("JWKS {url}: {e}"));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| fail(e.to_string()))?;
    let mut resp = client
        .get(url)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| fail(e.to_string()))?;
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| fail(e.to_string()))? {
        body.extend_from_slice(&chunk);
        if body.len() > 1 << 20 {
            return Err(fail("larger than 1 MiB".into()));
        }
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn security(extra: &[&str]) -> Arc<Security> {
        let mut argv = vec!["strata-node"];
        argv.extend_from_slice(extra);
        let c = crate::config::Args::parse_from(argv).validate().unwrap();
        Security::open(c.security).unwrap()
    }

    #[test]
    fn one_address_cannot_take_every_connection() {
        let s = security(&[
            "--max-connections-per-ip",
            "2",
            "--max-connections-per-ip-overrides",
            "10.0.0.9:3",
        ]);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let p1 = s.admit(a).unwrap();
        let _p2 = s.admit(a).unwrap();
        assert!(s.admit(a).is_none(), "third from one address");
        assert!(s.admit(b).is_some(), "another address is served");
        drop(p1);
        assert!(s.admit(a).is_some(), "a closed connection frees its place");
        let big: IpAddr = "10.0.0.9".parse().unwrap();
        let held: Vec<_> = (0..3).map(|_| s.admit(big).unwrap()).collect();
        assert!(s.admit(big).is_none());
        drop(held);
        assert!(
            s.per_ip.lock().get(&big).is_none(),
            "no entry left for a gone address"
        );
    }

    #[test]
    fn repeated_failures_from_one_address_wait_longer() {
        let s = security(&["--failed-authentication-delay-ms", "100"]);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let delays: Vec<u128> = (0..9).map(|_| s.failed_auth_delay(a).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 6400, 6400, 6400]);
        assert_eq!(s.failed_auth_delay(b).as_millis(), 100);
    }
}
