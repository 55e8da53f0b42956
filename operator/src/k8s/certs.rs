//! The operator's certificate authority: a cluster CA, the node (server) and client
//! certificates it signs, and the decision of when to renew them; plus thin edges that keep
//! them in Kubernetes Secrets.
//!
//! Why Secrets and in-place renewal: Kubernetes rotates mounted Secrets in place and the node
//! reloads its PEM files when they change, so a reissued node certificate needs no pod
//! restart. A renewed CA (new key) would break whoever trusts only the old one, so it is
//! trusted through a bundle the Strimzi way: the CA Secret's `ca-bundle.crt` holds the current
//! CA followed by the previous one until the previous one expires, and nodes and clients trust
//! the bundle. Renewing the CA also reissues every leaf, because a leaf whose signature the
//! current CA does not verify is reissued.
//!
//! The pure part decides and makes; the edges (below `---- the edges`) only read and write
//! Secrets. Key material is never logged: [`KeyPair`]'s `Debug` prints the subject and expiry.

use std::collections::BTreeSet;
use std::fmt;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{ObjectMeta, PostParams};
use kube::Api;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyUsagePurpose, SanType, PKCS_ECDSA_P256_SHA256,
};
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

/// A PEM certificate and its PEM private key (PKCS#8).
#[derive(Clone, PartialEq, Eq)]
pub struct KeyPair {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, PKCS#8 PEM; never logged.
    pub key_pem: String,
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (subject, not_after) = match der_of(&self.cert_pem) {
            Ok(der) => match x509_parser::parse_x509_certificate(&der) {
                Ok((_, c)) => (c.subject().to_string(), c.validity().not_after.to_string()),
                Err(_) => ("<unparsable>".to_string(), "?".to_string()),
            },
            Err(_) => ("<unparsable>".to_string(), "?".to_string()),
        };
        f.debug_struct("KeyPair")
            .field("subject", &subject)
            .field("not_after", &not_after)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// How long a certificate is valid, and how long before its expiry it is renewed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// Validity from issuance, in days.
    pub days: u32,
    /// Renew (reissue) when the certificate expires within this many days.
    pub renew_before_days: u32,
}

impl Default for Validity {
    /// Strimzi's defaults, for the CA and leaves alike: 365 days, renewed 30 days before.
    fn default() -> Self {
        Validity {
            days: 365,
            renew_before_days: 30,
        }
    }
}

/// Why a certificate could not be made, read or stored.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// Making or signing a certificate failed (or its inputs are unusable).
    #[error("cannot generate certificate: {0}")]
    Generate(String),
    /// A certificate or key does not parse.
    #[error("cannot parse certificate: {0}")]
    Parse(String),
    /// Reading or writing a Secret failed (a 409 Conflict included: the caller retries).
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

/// What to do with an existing certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// It is fine as it is.
    Keep,
    /// Make a new one, for this reason (for an Event or a log line).
    Reissue(String),
}

/// A new self-signed CA with common name `cn`, valid from `now` - 1h for `validity.days`
/// (ECDSA P-256, BasicConstraints CA with path length 0, keyCertSign + cRLSign).
pub fn new_ca(cn: &str, now: SystemTime, validity: &Validity) -> Result<KeyPair, CertError> {
    if cn.is_empty() {
        return Err(CertError::Generate("empty CA common name".into()));
    }
    let mut params = CertificateParams::default();
    set_validity(&mut params, now, validity)?;
    params.distinguished_name = common_name(cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = rcgen::KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(gen)?;
    let cert = params.self_signed(&key).map_err(gen)?;
    Ok(KeyPair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A node certificate signed by `ca` for `dns_names` (wildcards allowed; CN = the first
/// name), EKU serverAuth + clientAuth since nodes also authenticate to each other.
pub fn issue_server(
    ca: &KeyPair,
    dns_names: &[String],
    now: SystemTime,
    validity: &Validity,
) -> Result<KeyPair, CertError> {
    let Some(first) = dns_names.first() else {
        return Err(CertError::Generate(
            "no DNS names for a server certificate".into(),
        ));
    };
    let mut sans = Vec::with_capacity(dns_names.len());
    let mut seen = BTreeSet::new();
    for n in dns_names {
        if seen.insert(n.to_ascii_lowercase()) {
            let ia5 = n
                .clone()
                .try_into()
                .map_err(|e| CertError::Generate(format!("DNS name {n:?}: {e}")))?;
            sans.push(SanType::DnsName(ia5));
        }
    }
    let mut params = CertificateParams::default();
    params.subject_alt_names = sans;
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    issue_leaf(ca, params, first, now, validity)
}

/// A client certificate with subject CN=`user` (Kafka's principal `User:CN=<user>`), EKU
/// clientAuth, signed by `ca`.
pub fn issue_client(
    ca: &KeyPair,
    user: &str,
    now: SystemTime,
    validity: &Validity,
) -> Result<KeyPair, CertError> {
    if user.is_empty() {
        return Err(CertError::Generate("empty user name".into()));
    }
    let mut params = CertificateParams::default();
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    issue_leaf(ca, params, user, now, validity)
}

/// Whether a node certificate still fits: parses, is signed by `ca`, does not expire within
/// `renew_before_days`, has exactly `dns_names` as SANs (order-insensitive) and both EKUs.
pub fn check_server(
    cert_pem: &str,
    ca: &KeyPair,
    dns_names: &[String],
    now: SystemTime,
    validity: &Validity,
) -> Verdict {
    check_leaf(cert_pem, ca, now, validity, |c| {
        let want: BTreeSet<String> = dns_names.iter().map(|n| n.to_ascii_lowercase()).collect();
        let have = match dns_sans(c) {
            Ok(h) => h,
            Err(why) => return Verdict::Reissue(why),
        };
        if have != want {
            return Verdict::Reissue(format!("DNS names changed: has {have:?}, wants {want:?}"));
        }
        match c.extended_key_usage() {
            Ok(Some(e)) if e.value.server_auth && e.value.client_auth => Verdict::Keep,
            _ => Verdict::Reissue("not usable for serverAuth and clientAuth".into()),
        }
    })
}

/// Whether a client certificate still fits: parses, is signed by `ca`, does not expire within
/// `renew_before_days`, has subject CN=`user` and EKU clientAuth.
pub fn check_client(
    cert_pem: &str,
    ca: &KeyPair,
    user: &str,
    now: SystemTime,
    validity: &Validity,
) -> Verdict {
    check_leaf(cert_pem, ca, now, validity, |c| {
        let cns: Vec<&str> = c
            .subject()
            .iter_common_name()
            .filter_map(|a| a.as_str().ok())
            .collect();
        if cns != [user] {
            return Verdict::Reissue(format!("subject CN is {cns:?}, wants {user:?}"));
        }
        match c.extended_key_usage() {
            Ok(Some(e)) if e.value.client_auth => Verdict::Keep,
            _ => Verdict::Reissue("not usable for clientAuth".into()),
        }
    })
}

/// Whether the CA is kept or renewed (a new CA with a new key): renewed when it does not
/// parse, is not a self-signed CA, its key does not match, or it expires within
/// `renew_before_days`.
pub fn check_ca(ca: &KeyPair, now: SystemTime, validity: &Validity) -> Verdict {
    let der = match der_of(&ca.cert_pem) {
        Ok(d) => d,
        Err(e) => return Verdict::Reissue(e.to_string()),
    };
    let cert = match x509_parser::parse_x509_certificate(&der) {
        Ok((_, c)) => c,
        Err(e) => return Verdict::Reissue(format!("CA certificate does not parse: {e}")),
    };
    if !cert.is_ca() {
        return Verdict::Reissue("not a CA certificate".into());
    }
    if cert.verify_signature(None).is_err() {
        return Verdict::Reissue("CA certificate is not self-signed".into());
    }
    if !key_matches(&cert, &ca.key_pem) {
        return Verdict::Reissue("CA key does not match the CA certificate".into());
    }
    expiry_verdict(&cert, now, validity)
}

/// The trust bundle: `current`'s certificate, then `previous_cert_pem` while it has not
/// expired at `now` (it is dropped when expired, unparsable or the same as the current one).
pub fn bundle(current: &KeyPair, previous_cert_pem: Option<&str>, now: SystemTime) -> String {
    let mut out = normalized(&current.cert_pem);
    if let Some(prev) = previous_cert_pem {
        let same = match (der_of(prev), der_of(&current.cert_pem)) {
            (Ok(p), Ok(c)) => p == c,
            _ => false,
        };
        let live = matches!(not_after(prev), Ok(t) if t > now);
        if live && !same {
            out.push_str(&normalized(prev));
        }
    }
    out
}

/// The not-after instant of a PEM certificate.
pub fn not_after(cert_pem: &str) -> Result<SystemTime, CertError> {
    let der = der_of(cert_pem)?;
    let (_, cert) =
        x509_parser::parse_x509_certificate(&der).map_err(|e| CertError::Parse(e.to_string()))?;
    Ok(SystemTime::from(cert.validity().not_after.to_datetime()))
}

/// A subject of a single common name.
fn common_name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

fn gen(e: rcgen::Error) -> CertError {
    CertError::Generate(e.to_string())
}

/// Valid from `now` - 1h (clock skew) for `validity.days`.
fn set_validity(
    params: &mut CertificateParams,
    now: SystemTime,
    validity: &Validity,
) -> Result<(), CertError> {
    let now = OffsetDateTime::from(now);
    let (Some(from), Some(to)) = (
        now.checked_sub(time::Duration::hours(1)),
        now.checked_add(time::Duration::days(i64::from(validity.days))),
    ) else {
        return Err(CertError::Generate("validity out of range".into()));
    };
    params.not_before = from;
    params.not_after = to;
    Ok(())
}

/// Sign a leaf (CN = `cn`, digitalSignature) for a fresh P-256 key with `ca`.
fn issue_leaf(
    ca: &KeyPair,
    mut params: CertificateParams,
    cn: &str,
    now: SystemTime,
    validity: &Validity,
) -> Result<KeyPair, CertError> {
    let ca_key = rcgen::KeyPair::from_pem(&ca.key_pem)
        .map_err(|e| CertError::Parse(format!("CA key: {e}")))?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key)
        .map_err(|e| CertError::Parse(format!("CA certificate: {e}")))?;
    set_validity(&mut params, now, validity)?;
    params.distinguished_name = common_name(cn);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    let key = rcgen::KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(gen)?;
    let cert = params.signed_by(&key, &issuer).map_err(gen)?;
    Ok(KeyPair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// The checks common to leaves (parses, signed by `ca`, not near expiry), then `rest`.
fn check_leaf(
    cert_pem: &str,
    ca: &KeyPair,
    now: SystemTime,
    validity: &Validity,
    rest: impl FnOnce(&X509Certificate<'_>) -> Verdict,
) -> Verdict {
    let der = match der_of(cert_pem) {
        Ok(d) => d,
        Err(e) => return Verdict::Reissue(e.to_string()),
    };
    let cert = match x509_parser::parse_x509_certificate(&der) {
        Ok((_, c)) => c,
        Err(e) => return Verdict::Reissue(format!("certificate does not parse: {e}")),
    };
    let ca_der = match der_of(&ca.cert_pem) {
        Ok(d) => d,
        Err(e) => return Verdict::Reissue(format!("CA: {e}")),
    };
    let ca_cert = match x509_parser::parse_x509_certificate(&ca_der) {
        Ok((_, c)) => c,
        Err(e) => return Verdict::Reissue(format!("CA certificate does not parse: {e}")),
    };
    if cert.issuer().as_raw() != ca_cert.subject().as_raw()
        || cert.verify_signature(Some(ca_cert.public_key())).is_err()
    {
        return Verdict::Reissue("not signed by the current CA".into());
    }
    match expiry_verdict(&cert, now, validity) {
        Verdict::Keep => rest(&cert),
        reissue => reissue,
    }
}

/// Reissue when `cert` expires within `renew_before_days` of `now`.
fn expiry_verdict(cert: &X509Certificate<'_>, now: SystemTime, validity: &Validity) -> Verdict {
    let end = cert.validity().not_after.to_datetime();
    let window = Duration::from_secs(u64::from(validity.renew_before_days) * 86_400);
    let renew_at = SystemTime::from(end).checked_sub(window);
    match renew_at {
        Some(at) if now < at => Verdict::Keep,
        _ => Verdict::Reissue(format!(
            "expires at {end}, within {} days",
            validity.renew_before_days
        )),
    }
}

/// Whether the PEM private key is the one of `cert`'s public key.
fn key_matches(cert: &X509Certificate<'_>, key_pem: &str) -> bool {
    match rcgen::KeyPair::from_pem(key_pem) {
        Ok(k) => k.public_key_raw() == cert.public_key().subject_public_key.data.as_ref(),
        Err(_) => false,
    }
}

/// Whether the PEM private key is the one of the PEM certificate.
fn pem_key_matches(cert_pem: &str, key_pem: &str) -> bool {
    let Ok(der) = der_of(cert_pem) else {
        return false;
    };
    match x509_parser::parse_x509_certificate(&der) {
        Ok((_, c)) => key_matches(&c, key_pem),
        Err(_) => false,
    }
}

/// The DNS SANs of `cert`, lowercased; an error when it has SANs of another kind.
fn dns_sans(cert: &X509Certificate<'_>) -> Result<BTreeSet<String>, String> {
    let ext = cert
        .subject_alternative_name()
        .map_err(|e| format!("bad subjectAltName: {e}"))?;
    let mut out = BTreeSet::new();
    for n in ext.iter().flat_map(|e| e.value.general_names.iter()) {
        match n {
            GeneralName::DNSName(d) => {
                out.insert(d.to_ascii_lowercase());
            }
            other => return Err(format!("unexpected subjectAltName {other:?}")),
        }
    }
    Ok(out)
}

/// The DER of the first `CERTIFICATE` block of a PEM text.
fn der_of(pem: &str) -> Result<Vec<u8>, CertError> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| CertError::Parse(format!("not PEM: {e}")))?;
    if p.label != "CERTIFICATE" {
        return Err(CertError::Parse(format!(
            "PEM block is {:?}, not CERTIFICATE",
            p.label
        )));
    }
    Ok(p.contents)
}

/// The `CERTIFICATE` blocks of a PEM text, each as its own PEM text.
fn pem_blocks(pem: &str) -> Vec<String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut out = Vec::new();
    let mut rest = pem;
    while let Some(b) = rest.find(BEGIN) {
        let Some(e) = rest[b..].find(END) else {
            break;
        };
        let end = b + e + END.len();
        out.push(format!("{}\n", &rest[b..end]));
        rest = &rest[end..];
    }
    out
}

/// PEM text ending in exactly one newline.
fn normalized(pem: &str) -> String {
    format!("{}\n", pem.trim())
}

// ---- the edges: keeping the CA and the leaves in Secrets.

/// Secret key of the current CA certificate (in leaf Secrets: the trust bundle).
pub const CA_CERT: &str = "ca.crt";
/// Secret key of the CA private key (only in the CA Secret).
pub const CA_KEY: &str = "ca.key";
/// Secret key of the trust bundle: the current CA, then the previous one until it expires.
pub const CA_BUNDLE: &str = "ca-bundle.crt";
/// Secret key of a leaf certificate (kubernetes.io/tls layout, cert-manager friendly).
pub const TLS_CERT: &str = "tls.crt";
/// Secret key of a leaf private key (kubernetes.io/tls layout).
pub const TLS_KEY: &str = "tls.key";

/// Type of the CA Secret.
const OPAQUE: &str = "Opaque";
/// Type of the leaf Secrets.
const TLS_TYPE: &str = "kubernetes.io/tls";

/// Keep the CA in Secret `name` (CN = `name`): create it when missing, renew it when
/// [`check_ca`] says so (keeping the old certificate in the bundle), write only on change.
/// Returns the CA, the bundle PEM, and whether the Secret was written.
pub async fn ensure_ca(
    api: &Api<Secret>,
    name: &str,
    meta: ObjectMeta,
    now: SystemTime,
    validity: &Validity,
) -> Result<(KeyPair, String, bool), CertError> {
    let existing = api.get_opt(name).await?;
    let (ca, previous) = match &existing {
        None => {
            tracing::info!(secret = %name, "creating the cluster CA");
            (new_ca(name, now, validity)?, None)
        }
        Some(s) => {
            let current = KeyPair {
                cert_pem: text(s, CA_CERT).unwrap_or_default(),
                key_pem: text(s, CA_KEY).unwrap_or_default(),
            };
            match check_ca(&current, now, validity) {
                Verdict::Keep => {
                    let stored = text(s, CA_BUNDLE).unwrap_or_default();
                    let previous = previous_in(&stored, &current.cert_pem);
                    (current, previous)
                }
                Verdict::Reissue(why) => {
                    tracing::info!(secret = %name, reason = %why, "renewing the cluster CA");
                    let previous = Some(current.cert_pem).filter(|p| !p.is_empty());
                    (new_ca(name, now, validity)?, previous)
                }
            }
        }
    };
    let trust = bundle(&ca, previous.as_deref(), now);
    let changed = write(
        api,
        name,
        &meta,
        existing,
        OPAQUE,
        [
            (CA_CERT, ca.cert_pem.as_str()),
            (CA_KEY, ca.key_pem.as_str()),
            (CA_BUNDLE, trust.as_str()),
        ],
    )
    .await?;
    Ok((ca, trust, changed))
}

/// Keep Secret `name` (kubernetes.io/tls: TLS_CERT, TLS_KEY, CA_CERT = `bundle`) holding a
/// node certificate for `dns_names` signed by `ca`; reissue per [`check_server`] (or when the
/// key does not match), write only on change. Returns whether the Secret was written.
#[allow(clippy::too_many_arguments)] // the reconciler's interface: every input is distinct
pub async fn ensure_server(
    api: &Api<Secret>,
    name: &str,
    meta: ObjectMeta,
    ca: &KeyPair,
    bundle: &str,
    dns_names: &[String],
    now: SystemTime,
    validity: &Validity,
) -> Result<bool, CertError> {
    ensure_leaf(
        api,
        name,
        meta,
        bundle,
        |cert| check_server(cert, ca, dns_names, now, validity),
        || issue_server(ca, dns_names, now, validity),
    )
    .await
}

/// Keep Secret `name` (kubernetes.io/tls: TLS_CERT, TLS_KEY, CA_CERT = `bundle`; no PKCS#12)
/// holding a client certificate of `user` signed by `ca`; reissue per [`check_client`] (or
/// when the key does not match), write only on change. Returns whether the Secret was written.
#[allow(clippy::too_many_arguments)] // the reconciler's interface: every input is distinct
pub async fn ensure_client(
    api: &Api<Secret>,
    name: &str,
    meta: ObjectMeta,
    ca: &KeyPair,
    bundle: &str,
    user: &str,
    now: SystemTime,
    validity: &Validity,
) -> Result<bool, CertError> {
    ensure_leaf(
        api,
        name,
        meta,
        bundle,
        |cert| check_client(cert, ca, user, now, validity),
        || issue_client(ca, user, now, validity),
    )
    .await
}

/// The leaf Secret's read-check-reissue-write cycle.
async fn ensure_leaf(
    api: &Api<Secret>,
    name: &str,
    meta: ObjectMeta,
    bundle: &str,
    check: impl FnOnce(&str) -> Verdict,
    issue: impl FnOnce() -> Result<KeyPair, CertError>,
) -> Result<bool, CertError> {
    let existing = api.get_opt(name).await?;
    let current = existing.as_ref().map(|s| KeyPair {
        cert_pem: text(s, TLS_CERT).unwrap_or_default(),
        key_pem: text(s, TLS_KEY).unwrap_or_default(),
    });
    let reissue = match &current {
        None => Some("missing".to_string()),
        Some(kp) => match check(&kp.cert_pem) {
            Verdict::Reissue(why) => Some(why),
            Verdict::Keep if !pem_key_matches(&kp.cert_pem, &kp.key_pem) => {
                Some("private key does not match the certificate".into())
            }
            Verdict::Keep => None,
        },
    };
    let leaf = match (reissue, current) {
        (None, Some(kp)) => kp,
        (why, _) => {
            let why = why.unwrap_or_else(|| "missing".into());
            tracing::info!(secret = %name, reason = %why, "issuing certificate");
            issue()?
        }
    };
    write(
        api,
        name,
        &meta,
        existing,
        TLS_TYPE,
        [
            (TLS_CERT, leaf.cert_pem.as_str()),
            (TLS_KEY, leaf.key_pem.as_str()),
            (CA_CERT, bundle),
        ],
    )
    .await
}

/// Write `entries` (and `meta`'s labels, annotations and owner references) into Secret
/// `name`: replace `existing` (its resourceVersion makes a concurrent change a 409) or create
/// it; nothing when it already holds them. Returns whether it wrote.
async fn write<const N: usize>(
    api: &Api<Secret>,
    name: &str,
    meta: &ObjectMeta,
    existing: Option<Secret>,
    type_: &str,
    entries: [(&str, &str); N],
) -> Result<bool, CertError> {
    let mut desired = existing.clone().unwrap_or_else(|| Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            ..ObjectMeta::default()
        },
        type_: Some(type_.to_string()),
        ..Secret::default()
    });
    if let Some(labels) = &meta.labels {
        let l = desired.metadata.labels.get_or_insert_with(Default::default);
        l.extend(labels.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    if let Some(annotations) = &meta.annotations {
        let a = desired
            .metadata
            .annotations
            .get_or_insert_with(Default::default);
        a.extend(annotations.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    if meta.owner_references.is_some() {
        desired.metadata.owner_references = meta.owner_references.clone();
    }
    let data = desired.data.get_or_insert_with(Default::default);
    for (k, v) in entries {
        data.insert(k.to_string(), ByteString(v.as_bytes().to_vec()));
    }
    let pp = PostParams::default();
    match existing {
        Some(old) if old == desired => Ok(false),
        Some(_) => {
            api.replace(name, &pp, &desired).await?;
            Ok(true)
        }
        None => {
            api.create(&pp, &desired).await?;
            Ok(true)
        }
    }
}

/// The UTF-8 text under `key` in the Secret's data.
fn text(s: &Secret, key: &str) -> Option<String> {
    let b = s.data.as_ref()?.get(key)?;
    String::from_utf8(b.0.clone()).ok()
}

/// The first certificate of a stored bundle that is not `current`: the previous CA.
fn previous_in(stored_bundle: &str, current: &str) -> Option<String> {
    let cur = der_of(current).ok();
    pem_blocks(stored_bundle)
        .into_iter()
        .find(|b| der_of(b).ok() != cur)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use rustls::server::WebPkiClientVerifier;
    use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};

    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn v() -> Validity {
        Validity::default()
    }

    fn names() -> Vec<String> {
        vec![
            "*.strata-nodes.ns.svc".to_string(),
            "strata-bootstrap.ns.svc".to_string(),
        ]
    }

    fn parsed(pem: &str) -> Vec<u8> {
        der_of(pem).unwrap()
    }

    #[test]
    fn new_ca_is_a_self_signed_ca() {
        let now = SystemTime::now();
        let ca = new_ca("strata-cluster-ca", now, &v()).unwrap();
        assert!(ca.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let der = parsed(&ca.cert_pem);
        let (_, c) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert!(c.is_ca());
        let bc = c.basic_constraints().unwrap().unwrap().value;
        assert_eq!(bc.path_len_constraint, Some(0));
        let ku = c.key_usage().unwrap().unwrap().value;
        assert!(ku.key_cert_sign() && ku.crl_sign());
        assert_eq!(c.subject().to_string(), "CN=strata-cluster-ca");
        assert_eq!(c.subject().as_raw(), c.issuer().as_raw());
        c.verify_signature(None).unwrap();
        let end = not_after(&ca.cert_pem).unwrap();
        let want = now + 365 * DAY;
        assert!(end <= want && end + Duration::from_secs(2) >= want);
        assert_eq!(check_ca(&ca, now, &v()), Verdict::Keep);
    }

    #[test]
    fn debug_hides_the_key() {
        let ca = new_ca("strata-cluster-ca", SystemTime::now(), &v()).unwrap();
        let shown = format!("{ca:?}");
        assert!(shown.contains("CN=strata-cluster-ca"), "{shown}");
        assert!(shown.contains("<redacted>"));
        assert!(!shown.contains("PRIVATE KEY"));
    }

    #[test]
    fn server_cert_is_signed_by_the_ca_with_exactly_the_sans() {
        let now = SystemTime::now();
        let ca = new_ca("strata-cluster-ca", now, &v()).unwrap();
        let leaf = issue_server(&ca, &names(), now, &v()).unwrap();
        let ca_der = parsed(&ca.cert_pem);
        let (_, ca_cert) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
        let der = parsed(&leaf.cert_pem);
        let (_, c) = x509_parser::parse_x509_certificate(&der).unwrap();
        c.verify_signature(Some(ca_cert.public_key())).unwrap();
        assert_eq!(c.issuer().as_raw(), ca_cert.subject().as_raw());
        assert!(!c.is_ca());
        assert_eq!(c.subject().to_string(), "CN=*.strata-nodes.ns.svc");
        let want: BTreeSet<String> = names().into_iter().collect();
        assert_eq!(dns_sans(&c).unwrap(), want);
        let eku = c.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && eku.client_auth);
        assert!(pem_key_matches(&leaf.cert_pem, &leaf.key_pem));
        assert!(!pem_key_matches(&leaf.cert_pem, &ca.key_pem));
    }

    #[test]
    fn client_cert_names_the_user() {
        let now = SystemTime::now();
        let ca = new_ca("strata-cluster-ca", now, &v()).unwrap();
        let leaf = issue_client(&ca, "alice", now, &v()).unwrap();
        let der = parsed(&leaf.cert_pem);
        let (_, c) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert_eq!(c.subject().to_string(), "CN=alice");
        let eku = c.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);
        assert_eq!(
            check_client(&leaf.cert_pem, &ca, "alice", now, &v()),
            Verdict::Keep
        );
        assert!(matches!(
            check_client(&leaf.cert_pem, &ca, "bob", now, &v()),
            Verdict::Reissue(_)
        ));
        // A client certificate is no server certificate.
        assert!(matches!(
            check_server(&leaf.cert_pem, &ca, &["alice".to_string()], now, &v()),
            Verdict::Reissue(_)
        ));
    }

    #[test]
    fn bad_inputs_are_errors() {
        let now = SystemTime::now();
        let ca = new_ca("strata-cluster-ca", now, &v()).unwrap();
        assert!(issue_server(&ca, &[], now, &v()).is_err());
        assert!(issue_client(&ca, "", now, &v()).is_err());
        assert!(new_ca("", now, &v()).is_err());
        let broken = KeyPair {
            cert_pem: ca.cert_pem.clone(),
            key_pem: "garbage".into(),
        };
        assert!(matches!(
            issue_client(&broken, "alice", now, &v()),
            Err(CertError::Parse(_))
        ));
        assert!(not_after("garbage").is_err());
    }

    #[test]
    fn check_server_keeps_a_fresh_cert() {
        let now = SystemTime::now();
        let ca = new_ca("strata-cluster-ca", now, &v()).unwrap();
        let leaf = issue_server(&ca, &names(), now, &v()).unwrap();
        assert_eq!(
            check_server(&leaf.cert_pem, &ca, &names(), now, &v()),
            Verdict::Keep
        );
        // Order-insensitive.
        let mut reversed = names();
        reversed.reverse();
        assert_eq!(
            check_server(&leaf.cert_pem, &ca, &reversed, now, &v()),
            Verdict::Keep
        );
        // Still kept a while later, outside the renewal window.
        let later = now + 300 * DAY;
        assert_eq!(
            check_server(&leaf.cert_pem, &ca, &names(), later, &v()),
            Verdict::Keep
        );
    }

    #[test]
    fn check_server_reissues_near_expiry() {
        let now = SystemTime::now();
        let ca = new_ca(
            "strata-cluster-ca",
            now,
            &Validity {
                days: 3650,
                renew_before_days: 30,
            },
        )
        .unwrap();
        let leaf = issue_server(&ca, &names(), now, &v()).unwrap();
        let late = now + 340 * DAY;
        assert!(matches!(
            check_server(&leaf.cert_pem, &ca, &names(), late, &v()),
            Verdict::Reissue(why) if why.contains("expires")
        ));
        let expired = now + 400 * DAY;
        assert!(matches!(
            check_server(&leaf.cert_pem, &ca, &names(), expired, &v()),
            Verdict::Reissue(_)
        ));
    }

    #[test]
    fn check_server_reissues_when_sans_change() {
        let now = SystemTime::now();
        let ca = new_ca("strata-cluster-ca", now, &v()).unwrap();
        let leaf = issue_server(&ca, &names(), now, &v()).unwrap();
        let mut more = names();
        more.push("strata-external.example.com".to_string());
        assert!(matches!(
            check_server(&leaf.cert_pem, &ca, &more, now, &v()),
            Verdict::Reissue(why) if why.contains("DNS names")
        ));
        assert!(matches!(
            check_server(&leaf.cert_pem, &ca, &names()[..1], now, &v()),
            Verdict::Reissue(_)
        ));
    }

    #[test]
    fn check_server_reissues_when_signed_by_another_ca() {
        let now = SystemTime::now();
        // Same common name: only the signature tells them apart.
        let ca = new_ca("strata-cluster-ca", now, &v()).unwrap();
        let other = new_ca("strata-cluster-ca", now, &v()).unwrap();
        let leaf = issue_server(&other, &names(), now, &v()).unwrap();
        assert!(matches!(
            check_server(&leaf.cert_pem, &ca, &names(), now, &v()),
            Verdict::Reissue(why) if why.contains("not signed")
        ));
        let client = issue_client(&other, "alice", now, &v()).unwrap();
        assert!(matches!(
            check_client(&client.cert_pem, &ca, "alice", now, &v()),
            Verdict::Reissue(_)
        ));
    }

    #[test]
    fn check_server_reissues_garbage() {
        let now = SystemTime::now();
        let ca = new_ca("strata-cluster-ca", now, &v()).unwrap();
        for garbage in [
            "",
            "garbage",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            ca.key_pem.as_str(),
        ] {
            assert!(matches!(
                check_server(garbage, &ca, &names(), now, &v()),
                Verdict::Reissue(_)
            ));
        }
    }

    #[test]
    fn check_ca_keeps_a_fresh_ca_and_renews_near_expiry() {
        let now = SystemTime::now();
        let ca = new_ca("strata-cluster-ca", now, &v()).unwrap();
        assert_eq!(check_ca(&ca, now, &v()), Verdict::Keep);
        assert_eq!(check_ca(&ca, now + 300 * DAY, &v()), Verdict::Keep);
        assert!(matches!(
            check_ca(&ca, now + 340 * DAY, &v()),
            Verdict::Reissue(why) if why.contains("expires")
        ));
    }

    #[test]
    fn check_ca_renews_when_the_key_does_not_match() {
        let now = SystemTime::now();
        let ca = new_ca("strata-cluster-ca", now, &v()).unwrap();
        let other = new_ca("strata-cluster-ca", now, &v()).unwrap();
        let mixed = KeyPair {
            cert_pem: ca.cert_pem.clone(),
            key_pem: other.key_pem.clone(),
        };
        assert!(matches!(
            check_ca(&mixed, now, &v()),
            Verdict::Reissue(why) if why.contains("key")
        ));
        let garbage = KeyPair {
            cert_pem: "garbage".into(),
            key_pem: ca.key_pem.clone(),
        };
        assert!(matches!(check_ca(&garbage, now, &v()), Verdict::Reissue(_)));
        // A leaf is no CA.
        let leaf = issue_server(&ca, &names(), now, &v()).unwrap();
        assert!(matches!(check_ca(&leaf, now, &v()), Verdict::Reissue(_)));
    }

    #[test]
    fn bundle_keeps_an_unexpired_previous_ca_and_drops_an_expired_one() {
        let now = SystemTime::now();
        let old = new_ca("strata-cluster-ca", now, &v()).unwrap();
        let new = new_ca("strata-cluster-ca", now + 340 * DAY, &v()).unwrap();
        let b = bundle(&new, Some(&old.cert_pem), now + 340 * DAY);
        let blocks = pem_blocks(&b);
        assert_eq!(blocks.len(), 2);
        assert_eq!(parsed(&blocks[0]), parsed(&new.cert_pem));
        assert_eq!(parsed(&blocks[1]), parsed(&old.cert_pem));
        assert_eq!(
            previous_in(&b, &new.cert_pem).as_deref(),
            Some(blocks[1].as_str())
        );

        let b = bundle(&new, Some(&old.cert_pem), now + 366 * DAY);
        assert_eq!(pem_blocks(&b).len(), 1);
        assert_eq!(parsed(&b), parsed(&new.cert_pem));
        assert_eq!(previous_in(&b, &new.cert_pem), None);

        assert_eq!(bundle(&new, None, now), normalized(&new.cert_pem));
        assert_eq!(
            bundle(&new, Some("garbage"), now),
            normalized(&new.cert_pem)
        );
        assert_eq!(
            bundle(&new, Some(&new.cert_pem), now),
            normalized(&new.cert_pem)
        );
    }

    /// Complete a handshake in memory; Err carries the first TLS error.
    fn handshake(
        mut client: ClientConnection,
        mut server: ServerConnection,
    ) -> Result<(ClientConnection, ServerConnection), rustls::Error> {
        let mut client_to_server = Vec::new();
        let mut server_to_client = Vec::new();
        for _ in 0..20 {
            while client.wants_write() {
                client.write_tls(&mut client_to_server).unwrap();
            }
            let mut rd = &client_to_server[..];
            while !rd.is_empty() {
                server.read_tls(&mut rd).unwrap();
                server.process_new_packets()?;
            }
            client_to_server.clear();
            while server.wants_write() {
                server.write_tls(&mut server_to_client).unwrap();
            }
            let mut rd = &server_to_client[..];
            while !rd.is_empty() {
                client.read_tls(&mut rd).unwrap();
                client.process_new_packets()?;
            }
            server_to_client.clear();
            if !client.is_handshaking() && !server.is_handshaking() {
                return Ok((client, server));
            }
        }
        panic!("handshake did not finish");
    }

    fn certs(pem: &str) -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap()
    }

    fn key(pem: &str) -> PrivateKeyDer<'static> {
        PrivateKeyDer::from_pem_slice(pem.as_bytes()).unwrap()
    }

    /// Mutual TLS: the node's server certificate, a client certificate, both sides trusting
    /// `trust`; the client connects to `host`.
    fn connect(
        trust: &str,
        server_leaf: &KeyPair,
        client_leaf: &KeyPair,
        host: &str,
    ) -> Result<(ClientConnection, ServerConnection), rustls::Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        for c in certs(trust) {
            roots.add(c).unwrap();
        }
        let roots = Arc::new(roots);
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .unwrap();
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs(&server_leaf.cert_pem), key(&server_leaf.key_pem))
            .unwrap();
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(certs(&client_leaf.cert_pem), key(&client_leaf.key_pem))
            .unwrap();
        let name = ServerName::try_from(host.to_string()).unwrap();
        handshake(
            ClientConnection::new(Arc::new(client), name).unwrap(),
            ServerConnection::new(Arc::new(server)).unwrap(),
        )
    }

    #[test]
    fn rustls_mutual_tls_handshake_with_issued_certs() {
        use std::io::{Read as _, Write as _};

        let now = SystemTime::now();
        let ca = new_ca("strata-cluster-ca", now, &v()).unwrap();
        let trust = bundle(&ca, None, now);
        let node = issue_server(&ca, &names(), now, &v()).unwrap();
        let alice = issue_client(&ca, "alice", now, &v()).unwrap();

        let (mut client, mut server) =
            connect(&trust, &node, &alice, "strata-0.strata-nodes.ns.svc").unwrap();
        let peer = server.peer_certificates().unwrap();
        assert_eq!(peer[0].as_ref(), parsed(&alice.cert_pem).as_slice());
        client.writer().write_all(b"ping").unwrap();
        let mut wire = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut wire).unwrap();
        }
        server.read_tls(&mut &wire[..]).unwrap();
        server.process_new_packets().unwrap();
        let mut got = [0u8; 4];
        server.reader().read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ping");

        // The other SAN, and a name the certificate does not cover.
        connect(&trust, &node, &alice, "strata-bootstrap.ns.svc").unwrap();
        assert!(connect(&trust, &node, &alice, "evil.example.com").is_err());
        // A client certificate cannot serve.
        assert!(connect(&trust, &alice, &alice, "strata-0.strata-nodes.ns.svc").is_err());
    }

    #[test]
    fn rustls_trusts_both_cas_through_the_bundle_during_renewal() {
        let now = SystemTime::now();
        let old = new_ca("strata-cluster-ca", now, &v()).unwrap();
        let new = new_ca("strata-cluster-ca", now, &v()).unwrap();
        let trust = bundle(&new, Some(&old.cert_pem), now);
        // A node still on the old CA's certificate, a client already on the new one.
        let node = issue_server(&old, &names(), now, &v()).unwrap();
        let alice = issue_client(&new, "alice", now, &v()).unwrap();
        connect(&trust, &node, &alice, "strata-1.strata-nodes.ns.svc").unwrap();
        // Trusting only the new CA, the old node certificate fails.
        let only_new = bundle(&new, None, now);
        assert!(connect(&only_new, &node, &alice, "strata-1.strata-nodes.ns.svc").is_err());
    }
}
