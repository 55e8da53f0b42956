//! TLS material for the node's listeners: PEM files turned into a `rustls::ServerConfig`, and
//! reloaded when their contents change, because Kubernetes rotates mounted Secrets in place.
//!
//! Only TLS 1.2 and 1.3 are offered, always with the aws-lc-rs provider passed explicitly, so
//! nothing here depends on (or installs) a process-wide default provider. Client certificates
//! follow Kafka's `ssl.client.auth`: `none`, `requested` (verified when presented) or
//! `required`.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, PoisonError, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::{Error, Result};

/// The largest PEM file we read: a generous bound (public CA bundles are a few hundred KiB)
/// that keeps a mistyped path such as `/dev/zero` from eating the node's memory.
const MAX_PEM_FILE_BYTES: u64 = 8 * 1024 * 1024;

/// Kafka's ssl.client.auth.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// No client certificate is asked for.
    None,
    /// A client certificate is asked for and verified when sent, but may be omitted.
    Requested,
    /// The handshake fails unless the client presents a certificate the client CA vouches for.
    Required,
}

impl FromStr for ClientAuth {
    type Err = Error;

    /// Accepts `none`, `requested` or `required`; like Kafka's config parsing, surrounding
    /// whitespace and letter case do not matter.
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "none" => Ok(Self::None),
            "requested" => Ok(Self::Requested),
            "required" => Ok(Self::Required),
            _ => Err(Error::Tls(format!(
                "ssl.client.auth must be none, requested or required, not {s:?}"
            ))),
        }
    }
}

impl fmt::Display for ClientAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::None => "none",
            Self::Requested => "requested",
            Self::Required => "required",
        })
    }
}

/// Where the PEM files are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key of the leaf: PKCS#8, PKCS#1 or SEC1.
    pub key: PathBuf,
    /// The CA certificates that client certificates must chain to. Not read when
    /// `client_auth` is `None`.
    pub client_ca: Option<PathBuf>,
    /// Whether clients must, may or need not present a certificate.
    pub client_auth: ClientAuth,
}

/// The raw contents of the files, read once so the digest and the parsed material always
/// describe the same bytes even if a file is swapped between two reads.
struct Contents {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

impl Contents {
    fn read(files: &TlsFiles) -> Result<Self> {
        let client_ca = match (&files.client_ca, files.client_auth) {
            (_, ClientAuth::None) => None,
            (Some(path), _) => Some(read_file(path)?),
            (None, auth) => {
                return Err(Error::Tls(format!(
                    "ssl.client.auth={auth} needs a client CA file to verify client certificates"
                )))
            }
        };
        Ok(Self {
            cert: read_file(&files.cert)?,
            key: read_file(&files.key)?,
            client_ca,
        })
    }

    /// SHA-256 over all files, each length-prefixed so moving bytes from one file to the next
    /// still counts as a change.
    fn digest(&self) -> Vec<u8> {
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        for part in [Some(&self.cert), Some(&self.key), self.client_ca.as_ref()] {
            match part {
                Some(bytes) => {
                    ctx.update(&[1]);
                    ctx.update(&(bytes.len() as u64).to_be_bytes());
                    ctx.update(bytes);
                }
                None => ctx.update(&[0]),
            }
        }
        ctx.finish().as_ref().to_vec()
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>> {
    let io_err = |source| Error::Io {
        path: path.display().to_string(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io_err)?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err)?;
    if bytes.len() as u64 > MAX_PEM_FILE_BYTES {
        return Err(Error::Tls(format!(
            "{}: larger than {MAX_PEM_FILE_BYTES} bytes, not a PEM file",
            path.display()
        )));
    }
    Ok(bytes)
}

/// Every certificate in a PEM file; an error when there is none.
fn parse_certs(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Tls(format!("{}: bad PEM: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(Error::Tls(format!(
            "{}: no CERTIFICATE PEM block",
            path.display()
        )));
    }
    Ok(certs)
}

/// The first private key in a PEM file.
fn parse_key(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| {
        let encrypted = pem
            .windows(b"ENCRYPTED PRIVATE KEY".len())
            .any(|w| w == b"ENCRYPTED PRIVATE KEY");
        let what = match e {
            rustls_pki_types::pem::Error::NoItemsFound if encrypted => {
                "the key is encrypted; Strata needs an unencrypted key".to_string()
            }
            rustls_pki_types::pem::Error::NoItemsFound => {
                "no PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY PEM block".to_string()
            }
            other => format!("bad PEM: {other}"),
        };
        Error::Tls(format!("{}: {what}", path.display()))
    })
}

/// Roots for verifying peers, from every certificate in a PEM file.
fn parse_roots(path: &Path, pem: &[u8]) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for (i, cert) in parse_certs(path, pem)?.into_iter().enumerate() {
        roots.add(cert).map_err(|e| {
            Error::Tls(format!(
                "{}: certificate #{} is not a usable trust anchor: {e}",
                path.display(),
                i + 1
            ))
        })?;
    }
    Ok(roots)
}

/// The leaf's notAfter in seconds since the epoch, warning when the leaf is outside its
/// validity period: an expired certificate is served anyway (clients will refuse it, but
/// refusing to start would turn a renewal delay into an outage of plaintext listeners too).
fn check_validity(path: &Path, leaf: &CertificateDer<'_>) -> Result<i64> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).map_err(|e| {
        Error::Tls(format!(
            "{}: the first certificate does not parse: {e}",
            path.display()
        ))
    })?;
    let not_before = cert.validity().not_before.timestamp();
    let not_after = cert.validity().not_after.timestamp();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    if now > not_after {
        tracing::warn!(
            path = %path.display(),
            not_after,
            "TLS certificate has expired; clients will refuse it"
        );
    } else if now < not_before {
        tracing::warn!(
            path = %path.display(),
            not_before,
            "TLS certificate is not yet valid; clients will refuse it"
        );
    }
    Ok(not_after)
}

/// The provider every config here is built with.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// TLS 1.3 first, then 1.2; nothing older.
static VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// The leaf certificate and key, checked to belong together now rather than at the first
/// handshake.
fn certified_key(
    files: &TlsFiles,
    contents: &Contents,
    provider: &CryptoProvider,
) -> Result<(CertifiedKey, i64)> {
    let certs = parse_certs(&files.cert, &contents.cert)?;
    let not_after = match certs.first() {
        Some(leaf) => check_validity(&files.cert, leaf)?,
        None => {
            return Err(Error::Tls(format!(
                "{}: no certificate",
                files.cert.display()
            )))
        }
    };
    let key = parse_key(&files.key, &contents.key)?;
    let signing_key = provider.key_provider.load_private_key(key).map_err(|e| {
        Error::Tls(format!(
            "{}: unusable private key: {e}",
            files.key.display()
        ))
    })?;
    let certified = CertifiedKey::new(certs, signing_key);
    match certified.keys_match() {
        // Unknown only when the key cannot name its public half; aws-lc-rs keys always can,
        // and rustls itself accepts this case.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(Error::Tls(format!(
                "{}: the private key does not match the certificate in {}",
                files.key.display(),
                files.cert.display()
            )))
        }
        Err(e) => {
            return Err(Error::Tls(format!(
                "{}: the first certificate is unusable: {e}",
                files.cert.display()
            )))
        }
    }
    Ok((certified, not_after))
}

/// Builds a server config from file contents already read.
fn build_server(
    files: &TlsFiles,
    contents: &Contents,
    provider: Arc<CryptoProvider>,
) -> Result<(ServerConfig, i64)> {
    let (certified, not_after) = certified_key(files, contents, &provider)?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| Error::Tls(format!("TLS 1.2/1.3 not available: {e}")))?;
    let builder = match (files.client_auth, &files.client_ca, &contents.client_ca) {
        (ClientAuth::None, _, _) => builder.with_no_client_auth(),
        (auth, Some(path), Some(pem)) => {
            let roots = Arc::new(parse_roots(path, pem)?);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider);
            let verifier = if auth == ClientAuth::Requested {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier.build().map_err(|e| {
                Error::Tls(format!(
                    "{}: cannot verify client certificates: {e}",
                    path.display()
                ))
            })?;
            builder.with_client_cert_verifier(verifier)
        }
        (auth, _, _) => {
            return Err(Error::Tls(format!(
                "ssl.client.auth={auth} needs a client CA file to verify client certificates"
            )))
        }
    };
    let config = builder.with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
    Ok((config, not_after))
}

/// What is being served now.
struct Current {
    config: Arc<ServerConfig>,
    digest: Vec<u8>,
    not_after: i64,
}

/// A server config that follows its files: Kubernetes rotates mounted Secrets in place.
pub struct ReloadingTls {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    current: RwLock<Current>,
}

impl fmt::Debug for ReloadingTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingTls")
            .field("files", &self.files)
            .field("not_after", &self.not_after())
            .finish_non_exhaustive()
    }
}

impl ReloadingTls {
    /// Reads and checks the files; errors name the file and what is wrong with it.
    pub fn load(files: TlsFiles) -> Result<Self> {
        let provider = provider();
        let contents = Contents::read(&files)?;
        let (config, not_after) = build_server(&files, &contents, provider.clone())?;
        Ok(Self {
            current: RwLock::new(Current {
                config: Arc::new(config),
                digest: contents.digest(),
                not_after,
            }),
            files,
            provider,
        })
    }

    /// The config to hand to the next accepted connection.
    pub fn config(&self) -> Arc<ServerConfig> {
        // A poisoned lock still holds a complete config: swaps only replace whole values.
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        current.config.clone()
    }

    /// Re-read the files; when their contents changed and parse, swap the config and return
    /// Ok(true); unchanged -> Ok(false); on error keep the old config and return the error
    /// (the caller logs it).
    ///
    /// Contents are compared, not mtimes: Kubernetes updates a Secret volume by swapping a
    /// `..data` symlink, which leaves the visible paths' own metadata unchanged.
    pub fn reload_if_changed(&self) -> Result<bool> {
        let contents = Contents::read(&self.files)?;
        let digest = contents.digest();
        {
            let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
            if current.digest == digest {
                return Ok(false);
            }
        }
        let (config, not_after) = build_server(&self.files, &contents, self.provider.clone())?;
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        *current = Current {
            config: Arc::new(config),
            digest,
            not_after,
        };
        drop(current);
        tracing::info!(
            cert = %self.files.cert.display(),
            not_after,
            "reloaded TLS certificate"
        );
        Ok(true)
    }

    /// The files this config is built from.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// The leaf certificate's notAfter, seconds since the epoch (for a metric).
    pub fn not_after(&self) -> Option<i64> {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        Some(current.not_after)
    }
}

/// A client config trusting `ca` (PEM) and optionally presenting a client cert (used by tests
/// and by node-to-node links later); `client_cert` is `(chain, key)`.
pub fn client_config(ca: &Path, client_cert: Option<(&Path, &Path)>) -> Result<ClientConfig> {
    let provider = provider();
    let roots = parse_roots(ca, &read_file(ca)?)?;
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| Error::Tls(format!("TLS 1.2/1.3 not available: {e}")))?
        .with_root_certificates(roots);
    match client_cert {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let files = TlsFiles {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
                client_ca: None,
                client_auth: ClientAuth::None,
            };
            let contents = Contents {
                cert: read_file(cert)?,
                key: read_file(key)?,
                client_ca: None,
            };
            let (certified, _) = certified_key(&files, &contents, &provider)?;
            Ok(builder.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(certified))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    };
    use rustls::{ClientConnection, ServerConnection};
    use std::path::PathBuf;

    /// A CA able to sign leaves.
    struct Ca {
        params: CertificateParams,
        key: KeyPair,
        pem: String,
    }

    fn make_ca(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        let key = KeyPair::generate().expect("key");
        let pem = params.self_signed(&key).expect("self-signed").pem();
        Ca { params, key, pem }
    }

    /// A leaf signed by `ca`: (cert PEM, key PEM, cert DER).
    fn leaf(ca: &Ca, sans: &[&str], dn: DistinguishedName) -> (String, String, Vec<u8>) {
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("params");
        params.distinguished_name = dn;
        let key = KeyPair::generate().expect("key");
        let issuer = Issuer::from_params(&ca.params, &ca.key);
        let cert = params.signed_by(&key, &issuer).expect("sign");
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }

    fn server_leaf(ca: &Ca) -> (String, String, Vec<u8>) {
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "localhost");
        leaf(ca, &["localhost", "127.0.0.1"], dn)
    }

    fn alice(ca: &Ca) -> (String, String, Vec<u8>) {
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CountryName, "US");
        dn.push(DnType::OrganizationName, "Acme");
        dn.push(DnType::OrganizationalUnitName, "Eng");
        dn.push(DnType::CommonName, "alice");
        leaf(ca, &[], dn)
    }

    struct Dir {
        dir: tempfile::TempDir,
    }

    impl Dir {
        fn new() -> Self {
            Self {
                dir: tempfile::tempdir().expect("tempdir"),
            }
        }
        fn write(&self, name: &str, contents: &str) -> PathBuf {
            let path = self.dir.path().join(name);
            std::fs::write(&path, contents).expect("write");
            path
        }
        fn path(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }
    }

    /// Server files for `ca` in `dir`, with the given client auth (client CA = `ca`).
    fn server_files(dir: &Dir, ca: &Ca, auth: ClientAuth) -> (TlsFiles, Vec<u8>) {
        let (cert, key, der) = server_leaf(ca);
        let files = TlsFiles {
            cert: dir.write("tls.crt", &cert),
            key: dir.write("tls.key", &key),
            client_ca: Some(dir.write("ca.crt", &ca.pem)),
            client_auth: auth,
        };
        (files, der)
    }

    /// Runs a handshake over in-memory buffers; returns the server's view of the client's
    /// certificates and the client's view of the server's leaf.
    fn handshake(
        server: Arc<ServerConfig>,
        client: ClientConfig,
    ) -> std::result::Result<(Option<Vec<u8>>, Vec<u8>), rustls::Error> {
        let mut server = ServerConnection::new(server)?;
        let mut client =
            ClientConnection::new(Arc::new(client), "localhost".try_into().expect("name"))?;
        // Bounded so a bug cannot spin forever.
        for _ in 0..20 {
            let mut buf = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut buf).expect("client write");
            }
            let mut rd = &buf[..];
            while !rd.is_empty() {
                server.read_tls(&mut rd).expect("server read");
                server.process_new_packets()?;
            }
            let mut buf = Vec::new();
            while server.wants_write() {
                server.write_tls(&mut buf).expect("server write");
            }
            let mut rd = &buf[..];
            while !rd.is_empty() {
                client.read_tls(&mut rd).expect("client read");
                client.process_new_packets()?;
            }
            if !client.is_handshaking() && !server.is_handshaking() && !client.wants_write() {
                let client_cert = server
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|c| c.to_vec());
                let server_cert = client
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|c| c.to_vec())
                    .expect("server cert");
                return Ok((client_cert, server_cert));
            }
        }
        panic!("handshake did not finish");
    }

    #[test]
    fn client_auth_parses_like_kafka() {
        assert_eq!("none".parse::<ClientAuth>().ok(), Some(ClientAuth::None));
        assert_eq!(
            " Requested ".parse::<ClientAuth>().ok(),
            Some(ClientAuth::Requested)
        );
        assert_eq!(
            "REQUIRED".parse::<ClientAuth>().ok(),
            Some(ClientAuth::Required)
        );
        assert!("want".parse::<ClientAuth>().is_err());
        assert_eq!(ClientAuth::Requested.to_string(), "requested");
    }

    #[test]
    fn loads_and_serves_a_handshake() {
        let dir = Dir::new();
        let ca = make_ca("test-ca");
        let (files, der) = server_files(&dir, &ca, ClientAuth::None);
        let tls = ReloadingTls::load(files.clone()).expect("load");
        assert_eq!(tls.files(), &files);
        let not_after = tls.not_after().expect("not_after");
        assert!(not_after > 0);
        let client = client_config(files.client_ca.as_deref().expect("ca"), None).expect("client");
        let (client_cert, server_cert) = handshake(tls.config(), client).expect("handshake");
        assert_eq!(client_cert, None);
        assert_eq!(server_cert, der);
        // Unchanged files: nothing to do, same config.
        let before = tls.config();
        assert!(!tls.reload_if_changed().expect("reload"));
        assert!(Arc::ptr_eq(&before, &tls.config()));
    }

    #[test]
    fn tls12_only_client_still_connects() {
        let dir = Dir::new();
        let ca = make_ca("test-ca");
        let (files, _) = server_files(&dir, &ca, ClientAuth::None);
        let tls = ReloadingTls::load(files.clone()).expect("load");
        let mut roots = RootCertStore::empty();
        for c in parse_certs(&files.cert, ca.pem.as_bytes()).expect("ca") {
            roots.add(c).expect("root");
        }
        let client = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS12])
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        handshake(tls.config(), client).expect("TLS 1.2 handshake");
    }

    #[test]
    fn required_client_auth_accepts_only_certified_clients() {
        let dir = Dir::new();
        let ca = make_ca("test-ca");
        let (files, _) = server_files(&dir, &ca, ClientAuth::Required);
        let tls = ReloadingTls::load(files.clone()).expect("load");
        let ca_path = files.client_ca.clone().expect("ca");

        let (cert, key, alice_der) = alice(&ca);
        let cert_path = dir.write("alice.crt", &cert);
        let key_path = dir.write("alice.key", &key);
        let client = client_config(&ca_path, Some((&cert_path, &key_path))).expect("client");
        let (client_cert, _) = handshake(tls.config(), client).expect("with a client cert");
        let client_cert = client_cert.expect("client cert seen by the server");
        assert_eq!(client_cert, alice_der);
        assert_eq!(
            crate::principal::subject_name(&client_cert).expect("subject"),
            "CN=alice,OU=Eng,O=Acme,C=US"
        );

        let anonymous = client_config(&ca_path, None).expect("client");
        let err = handshake(tls.config(), anonymous).expect_err("no client cert");
        assert!(
            matches!(err, rustls::Error::NoCertificatesPresented),
            "{err:?}"
        );

        // A certificate from another CA is refused too.
        let other = make_ca("other-ca");
        let (cert, key, _) = alice(&other);
        let cert_path = dir.write("mallory.crt", &cert);
        let key_path = dir.write("mallory.key", &key);
        let client = client_config(&ca_path, Some((&cert_path, &key_path))).expect("client");
        assert!(handshake(tls.config(), client).is_err());
    }

    #[test]
    fn requested_client_auth_allows_anonymous_clients() {
        let dir = Dir::new();
        let ca = make_ca("test-ca");
        let (files, _) = server_files(&dir, &ca, ClientAuth::Requested);
        let tls = ReloadingTls::load(files.clone()).expect("load");
        let ca_path = files.client_ca.clone().expect("ca");
        let anonymous = client_config(&ca_path, None).expect("client");
        let (client_cert, _) = handshake(tls.config(), anonymous).expect("anonymous");
        assert_eq!(client_cert, None);
        let (cert, key, der) = alice(&ca);
        let client = client_config(
            &ca_path,
            Some((&dir.write("a.crt", &cert), &dir.write("a.key", &key))),
        )
        .expect("client");
        let (client_cert, _) = handshake(tls.config(), client).expect("with cert");
        assert_eq!(client_cert, Some(der));
    }

    #[test]
    fn mismatched_key_is_an_error_at_load() {
        let dir = Dir::new();
        let ca = make_ca("test-ca");
        let (files, _) = server_files(&dir, &ca, ClientAuth::None);
        let (_, other_key, _) = server_leaf(&ca);
        std::fs::write(&files.key, other_key).expect("write");
        let err = ReloadingTls::load(files.clone()).expect_err("mismatch");
        let text = err.to_string();
        assert!(text.contains("does not match"), "{text}");
        assert!(text.contains("tls.key"), "{text}");
    }

    #[test]
    fn client_auth_without_client_ca_is_an_error() {
        let dir = Dir::new();
        let ca = make_ca("test-ca");
        for auth in [ClientAuth::Required, ClientAuth::Requested] {
            let (mut files, _) = server_files(&dir, &ca, auth);
            files.client_ca = None;
            let err = ReloadingTls::load(files).expect_err("no client CA");
            assert!(err.to_string().contains("client CA"), "{err}");
        }
        // With none, a missing client CA is fine and a configured one is not even read.
        let (mut files, _) = server_files(&dir, &ca, ClientAuth::None);
        files.client_ca = Some(dir.path("does-not-exist.crt"));
        ReloadingTls::load(files).expect("none ignores the client CA");
    }

    #[test]
    fn errors_name_the_file_and_the_problem() {
        let dir = Dir::new();
        let ca = make_ca("test-ca");
        let (files, _) = server_files(&dir, &ca, ClientAuth::Required);

        let mut missing = files.clone();
        missing.cert = dir.path("nope.crt");
        let err = ReloadingTls::load(missing).expect_err("missing");
        assert!(matches!(err, Error::Io { ref path, .. } if path.ends_with("nope.crt")));

        let mut no_pem = files.clone();
        no_pem.cert = dir.write("garbage.crt", "not a certificate");
        let err = ReloadingTls::load(no_pem).expect_err("no PEM");
        let text = err.to_string();
        assert!(
            text.contains("garbage.crt") && text.contains("no CERTIFICATE"),
            "{text}"
        );

        let mut key_is_cert = files.clone();
        key_is_cert.key = files.cert.clone();
        let err = ReloadingTls::load(key_is_cert).expect_err("no key");
        assert!(err.to_string().contains("no PRIVATE KEY"), "{err}");

        let mut encrypted = files.clone();
        encrypted.key = dir.write(
            "enc.key",
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
        );
        let err = ReloadingTls::load(encrypted).expect_err("encrypted");
        assert!(err.to_string().contains("encrypted"), "{err}");

        let mut bad_ca = files.clone();
        bad_ca.client_ca = Some(dir.write("empty-ca.crt", ""));
        let err = ReloadingTls::load(bad_ca).expect_err("empty CA");
        assert!(err.to_string().contains("empty-ca.crt"), "{err}");

        let mut broken_pem = files;
        broken_pem.cert = dir.write(
            "broken.crt",
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        );
        let err = ReloadingTls::load(broken_pem).expect_err("bad base64");
        assert!(err.to_string().contains("broken.crt"), "{err}");
    }

    #[test]
    fn expired_certificate_loads_with_a_warning() {
        let dir = Dir::new();
        let ca = make_ca("test-ca");
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
        params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        let key = KeyPair::generate().expect("key");
        let cert = params
            .signed_by(&key, &Issuer::from_params(&ca.params, &ca.key))
            .expect("sign");
        let files = TlsFiles {
            cert: dir.write("old.crt", &cert.pem()),
            key: dir.write("old.key", &key.serialize_pem()),
            client_ca: None,
            client_auth: ClientAuth::None,
        };
        let tls = ReloadingTls::load(files).expect("expired still loads");
        assert_eq!(tls.not_after(), Some(978_307_200));
    }

    #[test]
    fn reload_swaps_to_the_new_certificate() {
        let dir = Dir::new();
        let ca = make_ca("test-ca");
        let (files, first_der) = server_files(&dir, &ca, ClientAuth::Required);
        let tls = ReloadingTls::load(files.clone()).expect("load");
        let ca_path = files.client_ca.clone().expect("ca");
        let (cert, key, _) = alice(&ca);
        let alice_files = (dir.write("alice.crt", &cert), dir.write("alice.key", &key));
        let client =
            || client_config(&ca_path, Some((&alice_files.0, &alice_files.1))).expect("client");
        let before = tls.config();
        assert_eq!(
            handshake(before.clone(), client()).expect("hs").1,
            first_der
        );

        let (cert, key, second_der) = server_leaf(&ca);
        std::fs::write(&files.cert, cert).expect("write");
        std::fs::write(&files.key, key).expect("write");
        assert!(tls.reload_if_changed().expect("reload"));
        let after = tls.config();
        assert!(!Arc::ptr_eq(&before, &after));
        assert_eq!(
            handshake(after.clone(), client()).expect("hs").1,
            second_der
        );
        assert!(!tls.reload_if_changed().expect("second reload"));
        assert!(Arc::ptr_eq(&after, &tls.config()));
    }

    #[test]
    fn reload_follows_a_kubernetes_style_symlink_swap() {
        let dir = Dir::new();
        let ca = make_ca("test-ca");
        let (cert1, key1, der1) = server_leaf(&ca);
        let (cert2, key2, der2) = server_leaf(&ca);
        std::fs::create_dir(dir.path("v1")).expect("mkdir");
        std::fs::create_dir(dir.path("v2")).expect("mkdir");
        dir.write("v1/tls.crt", &cert1);
        dir.write("v1/tls.key", &key1);
        dir.write("v2/tls.crt", &cert2);
        dir.write("v2/tls.key", &key2);
        std::os::unix::fs::symlink("v1", dir.path("..data")).expect("symlink");
        std::os::unix::fs::symlink("..data/tls.crt", dir.path("tls.crt")).expect("symlink");
        std::os::unix::fs::symlink("..data/tls.key", dir.path("tls.key")).expect("symlink");
        let files = TlsFiles {
            cert: dir.path("tls.crt"),
            key: dir.path("tls.key"),
            client_ca: Some(dir.write("ca.crt", &ca.pem)),
            client_auth: ClientAuth::None,
        };
        let tls = ReloadingTls::load(files.clone()).expect("load");
        let ca_path = files.client_ca.clone().expect("ca");
        let cert_of = |tls: &ReloadingTls| {
            handshake(tls.config(), client_config(&ca_path, None).expect("client"))
                .expect("hs")
                .1
        };
        assert_eq!(cert_of(&tls), der1);
        // Atomic swap the way kubelet does it: a new link renamed over `..data`.
        std::os::unix::fs::symlink("v2", dir.path("..data_tmp")).expect("symlink");
        std::fs::rename(dir.path("..data_tmp"), dir.path("..data")).expect("rename");
        assert!(tls.reload_if_changed().expect("reload"));
        assert_eq!(cert_of(&tls), der2);
    }

    #[test]
    fn broken_reload_keeps_the_old_config() {
        let dir = Dir::new();
        let ca = make_ca("test-ca");
        let (files, der) = server_files(&dir, &ca, ClientAuth::None);
        let tls = ReloadingTls::load(files.clone()).expect("load");
        let before = tls.config();
        let not_after = tls.not_after();

        std::fs::write(&files.cert, "-----BEGIN CERTIFICATE-----\n").expect("write");
        let err = tls.reload_if_changed().expect_err("broken cert");
        assert!(err.to_string().contains("tls.crt"), "{err}");
        assert!(Arc::ptr_eq(&before, &tls.config()));
        assert_eq!(tls.not_after(), not_after);

        // A half-finished rotation (new cert, old key) is refused the same way.
        let (cert, _, _) = server_leaf(&ca);
        std::fs::write(&files.cert, cert).expect("write");
        assert!(tls.reload_if_changed().is_err());
        assert!(Arc::ptr_eq(&before, &tls.config()));

        std::fs::remove_file(&files.key).expect("rm");
        assert!(matches!(tls.reload_if_changed(), Err(Error::Io { .. })));
        let client = client_config(files.client_ca.as_deref().expect("ca"), None).expect("c");
        assert_eq!(handshake(tls.config(), client).expect("hs").1, der);
    }

    #[test]
    fn client_config_errors() {
        let dir = Dir::new();
        assert!(matches!(
            client_config(&dir.path("none.pem"), None),
            Err(Error::Io { .. })
        ));
        let empty = dir.write("empty.pem", "");
        assert!(client_config(&empty, None).is_err());
    }

    #[test]
    fn key_formats_pkcs8_pkcs1_sec1_load() {
        use aws_lc_rs::encoding::AsDer;
        use base64::Engine;
        let pem = |label: &str, der: &[u8]| {
            let b64 = base64::engine::general_purpose::STANDARD.encode(der);
            format!("-----BEGIN {label}-----\n{b64}\n-----END {label}-----\n")
        };
        let dir = Dir::new();
        let ca = make_ca("test-ca");
        let issuer = Issuer::from_params(&ca.params, &ca.key);
        let params = CertificateParams::new(vec!["localhost".to_string()]).expect("params");

        // RSA, written as PKCS#1 ("RSA PRIVATE KEY").
        let rsa = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("rsa");
        let pkcs8 = rsa.as_der().expect("pkcs8");
        let key = KeyPair::try_from(pkcs8.as_ref()).expect("rcgen rsa key");
        let cert = params.signed_by(&key, &issuer).expect("sign");
        let pkcs1 = rsa_pkcs8_inner_key(pkcs8.as_ref());
        let files = TlsFiles {
            cert: dir.write("rsa.crt", &cert.pem()),
            key: dir.write("rsa.key", &pem("RSA PRIVATE KEY", pkcs1)),
            client_ca: None,
            client_auth: ClientAuth::None,
        };
        ReloadingTls::load(files.clone()).expect("pkcs1");
        // The same key as PKCS#8 ("PRIVATE KEY").
        std::fs::write(&files.key, pem("PRIVATE KEY", pkcs8.as_ref())).expect("write");
        ReloadingTls::load(files).expect("pkcs8");

        // P-256, written as SEC1 ("EC PRIVATE KEY").
        let ec = aws_lc_rs::signature::EcdsaKeyPair::generate(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        )
        .expect("ec");
        let ec_pkcs8 = ec.to_pkcs8v1().expect("pkcs8");
        let key = KeyPair::try_from(ec_pkcs8.as_ref()).expect("rcgen ec key");
        let cert = params.signed_by(&key, &issuer).expect("sign");
        let sec1 = ec.private_key().as_der().expect("sec1");
        let files = TlsFiles {
            cert: dir.write("ec.crt", &cert.pem()),
            key: dir.write("ec.key", &pem("EC PRIVATE KEY", sec1.as_ref())),
            client_ca: None,
            client_auth: ClientAuth::None,
        };
        ReloadingTls::load(files).expect("sec1");
    }

    /// The RSAPrivateKey (PKCS#1) inside a PKCS#8 PrivateKeyInfo.
    fn rsa_pkcs8_inner_key(pkcs8: &[u8]) -> &[u8] {
        // PrivateKeyInfo ::= SEQUENCE { version, algorithm, privateKey OCTET STRING }
        let (_, body, _) = tlv(pkcs8);
        let (_, _, rest) = tlv(body);
        let (_, _, rest) = tlv(rest);
        let (tag, key, _) = tlv(rest);
        assert_eq!(tag, 0x04);
        key
    }

    fn tlv(input: &[u8]) -> (u8, &[u8], &[u8]) {
        let tag = input[0];
        let (len, hdr) = match input[1] {
            n if n < 0x80 => (n as usize, 2),
            0x81 => (input[2] as usize, 3),
            0x82 => (((input[2] as usize) << 8) | input[3] as usize, 4),
            _ => panic!("long length"),
        };
        (tag, &input[hdr..hdr + len], &input[hdr + len..])
    }
}
