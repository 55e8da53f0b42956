//! Listener and security flags, validated into [`SecurityConfig`]: named listeners with
//! their security protocols and advertised addresses (Kafka's `listeners`,
//! `advertised.listeners`, `listener.security.protocol.map`), TLS files, SASL mechanisms,
//! the ACL authorizer and the connection limits.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use strata_security::oauth::ValidatorOptions;
use strata_security::tls::{ClientAuth, TlsFiles};

/// How a listener secures its connections (Kafka's security.protocol).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    /// Kafka's name for it.
    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    /// From Kafka's name (case-insensitive).
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_uppercase().as_str() {
            "PLAINTEXT" => Some(SecurityProtocol::Plaintext),
            "SSL" => Some(SecurityProtocol::Ssl),
            "SASL_PLAINTEXT" => Some(SecurityProtocol::SaslPlaintext),
            "SASL_SSL" => Some(SecurityProtocol::SaslSsl),
            _ => None,
        }
    }

    /// Whether connections are TLS.
    pub fn tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    /// Whether clients must authenticate with SASL before any other request.
    pub fn sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

/// One named listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// Its name (`PLAINTEXT`, `INTERNAL`, ...), upper case.
    pub name: String,
    /// Where it binds.
    pub bind: SocketAddr,
    /// What Metadata tells clients that connected to this listener.
    pub advertised_host: String,
    /// Port advertised; 0 until a port-0 bind is resolved.
    pub advertised_port: i32,
    pub protocol: SecurityProtocol,
}

/// A SASL mechanism Strata serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mechanism {
    Plain,
    ScramSha256,
    ScramSha512,
    OAuthBearer,
}

impl Mechanism {
    /// The IANA name clients send in SaslHandshake.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha512 => "SCRAM-SHA-512",
            Mechanism::OAuthBearer => "OAUTHBEARER",
        }
    }

    /// From its name (exact, as Kafka compares them).
    pub fn parse(s: &str) -> Option<Self> {
        [
            Mechanism::Plain,
            Mechanism::ScramSha256,
            Mechanism::ScramSha512,
            Mechanism::OAuthBearer,
        ]
        .into_iter()
        .find(|m| m.name() == s)
    }
}

/// Where OAUTHBEARER tokens are checked.
#[derive(Debug, Clone)]
pub struct OAuthConfig {
    /// A JWKS file (re-read when it changes) or an `https://` URL (re-fetched periodically).
    pub jwks: JwksSource,
    pub options: ValidatorOptions,
    pub refresh_ms: u64,
}

/// Where the JSON Web Key Set comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    File(PathBuf),
    Url(String),
}

/// Which authorizer runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthorizerKind {
    /// Every principal may do everything (Kafka without authorizer.class.name).
    None,
    /// Kafka's ACLs, kept as cluster metadata.
    Acl,
}

/// Listener and security flags (flattened into the node's arguments).
#[derive(Debug, Clone, Args)]
pub struct SecurityArgs {
    /// Named listeners, NAME://HOST:PORT,... (Kafka's listeners). Without it the node has one
    /// PLAINTEXT listener on --listen.
    #[arg(long, env = "STRATA_LISTENERS")]
    pub listeners: Option<String>,

    /// What each listener advertises in Metadata, NAME://HOST:PORT,... (Kafka's
    /// advertised.listeners); listeners not named advertise their bind address.
    #[arg(long, env = "STRATA_ADVERTISED_LISTENERS")]
    pub advertised_listeners: Option<String>,

    /// NAME:PROTOCOL,... with PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL (Kafka's
    /// listener.security.protocol.map). A listener named after a protocol needs no entry.
    #[arg(long, env = "STRATA_LISTENER_SECURITY_PROTOCOL_MAP")]
    pub listener_security_protocol_map: Option<String>,

    /// The listener other nodes fetch from (Kafka's inter.broker.listener.name); defaults to
    /// the first listener. Its address is the one registered with the controller.
    #[arg(long, env = "STRATA_INTER_BROKER_LISTENER_NAME")]
    pub inter_broker_listener_name: Option<String>,

    /// With an SSL inter-broker listener: PEM CA certificates that sign the nodes'
    /// certificates. Nodes then replicate over mutual TLS: a follower presents its own
    /// --tls-cert-file and checks the leader's against these CAs, and the inter-broker listener
    /// requires a client certificate they vouch for.
    #[arg(long, env = "STRATA_INTER_BROKER_TLS_CA_FILE")]
    pub inter_broker_tls_ca_file: Option<PathBuf>,

    /// The name a leader's certificate is checked against when a follower connects over
    /// TLS (default: the leader's advertised host), for certificates that name the nodes
    /// some other way than their addresses.
    #[arg(long, env = "STRATA_INTER_BROKER_TLS_SERVER_NAME")]
    pub inter_broker_tls_server_name: Option<String>,

    /// PEM certificate chain (leaf first) of SSL and SASL_SSL listeners; re-read when it
    /// changes.
    #[arg(long, env = "STRATA_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,

    /// PEM private key of --tls-cert-file.
    #[arg(long, env = "STRATA_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,

    /// PEM CA certificates trusted for client certificates (mutual TLS).
    #[arg(long, env = "STRATA_TLS_CLIENT_CA_FILE")]
    pub tls_client_ca_file: Option<PathBuf>,

    /// Client certificates: none, requested or required (Kafka's ssl.client.auth).
    #[arg(long, env = "STRATA_TLS_CLIENT_AUTH", default_value = "none")]
    pub tls_client_auth: String,

    /// How often the TLS files are checked for changes.
    #[arg(long, env = "STRATA_TLS_RELOAD_INTERVAL_MS", default_value_t = 10_000)]
    pub tls_reload_interval_ms: u64,

    /// Rules turning a client certificate's subject into a user name (Kafka's
    /// ssl.principal.mapping.rules).
    #[arg(
        long,
        env = "STRATA_SSL_PRINCIPAL_MAPPING_RULES",
        default_value = "DEFAULT"
    )]
    pub ssl_principal_mapping_rules: String,

    /// SASL mechanisms offered on SASL listeners: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512,
    /// OAUTHBEARER (Kafka's sasl.enabled.mechanisms).
    #[arg(
        long,
        env = "STRATA_SASL_ENABLED_MECHANISMS",
        default_value = "SCRAM-SHA-256,SCRAM-SHA-512"
    )]
    pub sasl_enabled_mechanisms: String,

    /// OAUTHBEARER: the JSON Web Key Set, a file path or an https:// URL
    /// (Kafka's sasl.oauthbearer.jwks.endpoint.url).
    #[arg(long, env = "STRATA_OAUTH_JWKS")]
    pub oauth_jwks: Option<String>,

    /// OAUTHBEARER: the `iss` tokens must carry (sasl.oauthbearer.expected.issuer).
    #[arg(long, env = "STRATA_OAUTH_EXPECTED_ISSUER")]
    pub oauth_expected_issuer: Option<String>,

    /// OAUTHBEARER: audiences, one of which tokens must carry (comma-separated;
    /// sasl.oauthbearer.expected.audience).
    #[arg(long, env = "STRATA_OAUTH_EXPECTED_AUDIENCE")]
    pub oauth_expected_audience: Option<String>,

    /// OAUTHBEARER: the claim naming the user (sasl.oauthbearer.sub.claim.name).
    #[arg(long, env = "STRATA_OAUTH_SUB_CLAIM_NAME", default_value = "sub")]
    pub oauth_sub_claim_name: String,

    /// OAUTHBEARER: the claim holding the scopes (sasl.oauthbearer.scope.claim.name).
    #[arg(long, env = "STRATA_OAUTH_SCOPE_CLAIM_NAME", default_value = "scope")]
    pub oauth_scope_claim_name: String,

    /// OAUTHBEARER: clock skew allowed on exp, nbf and iat (sasl.oauthbearer.clock.skew.seconds).
    #[arg(long, env = "STRATA_OAUTH_CLOCK_SKEW_SECONDS", default_value_t = 30)]
    pub oauth_clock_skew_seconds: i64,

    /// OAUTHBEARER: how often the JWKS is re-read (sasl.oauthbearer.jwks.endpoint.refresh.ms).
    #[arg(
        long,
        env = "STRATA_OAUTH_JWKS_REFRESH_MS",
        default_value_t = 3_600_000
    )]
    pub oauth_jwks_refresh_ms: u64,

    /// SASL sessions end after this long and clients re-authenticate (KIP-368,
    /// connections.max.reauth.ms); 0: never.
    #[arg(long, env = "STRATA_CONNECTIONS_MAX_REAUTH_MS", default_value_t = 0)]
    pub connections_max_reauth_ms: u64,

    /// `acl` checks every request against Kafka ACLs kept in the cluster metadata.
    #[arg(long, env = "STRATA_AUTHORIZER", value_enum, default_value_t = AuthorizerKind::None)]
    pub authorizer: AuthorizerKind,

    /// Principals allowed everything, `User:a;User:b` (Kafka's super.users).
    #[arg(long, env = "STRATA_SUPER_USERS", default_value = "")]
    pub super_users: String,

    /// With the ACL authorizer: allow an action on a resource no ACL names
    /// (allow.everyone.if.no.acl.found).
    #[arg(long, env = "STRATA_ALLOW_EVERYONE_IF_NO_ACL_FOUND", default_value_t = false, action = clap::ArgAction::Set)]
    pub allow_everyone_if_no_acl_found: bool,

    /// Most connections from one IP address (max.connections.per.ip), so that one address
    /// cannot take every connection.
    #[arg(long, env = "STRATA_MAX_CONNECTIONS_PER_IP", default_value_t = 1000)]
    pub max_connections_per_ip: usize,

    /// Per-address exceptions, IP:N,... (max.connections.per.ip.overrides).
    #[arg(
        long,
        env = "STRATA_MAX_CONNECTIONS_PER_IP_OVERRIDES",
        default_value = ""
    )]
    pub max_connections_per_ip_overrides: String,

    /// Close connections idle for this long (connections.max.idle.ms).
    #[arg(
        long,
        env = "STRATA_CONNECTIONS_MAX_IDLE_MS",
        default_value_t = 600_000
    )]
    pub connections_max_idle_ms: u64,

    /// A new connection must finish its TLS handshake, send its first request and, on SASL
    /// listeners, authenticate within this long.
    #[arg(
        long,
        env = "STRATA_CONNECTION_SETUP_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub connection_setup_timeout_ms: u64,

    /// After a failed authentication, wait this long before answering and closing
    /// (connection.failed.authentication.delay.ms), slowing password guessing.
    #[arg(
        long,
        env = "STRATA_FAILED_AUTHENTICATION_DELAY_MS",
        default_value_t = 100
    )]
    pub failed_authentication_delay_ms: u64,
}

/// Replication over mutual TLS: the node's own certificate (`tls`) both ways, peers'
/// certificates checked against `ca`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterBrokerTls {
    /// PEM CA certificates that sign the nodes' certificates.
    pub ca: PathBuf,
    /// The name leaders' certificates are checked against (None: their advertised host).
    pub server_name: Option<String>,
}

/// Validated security settings.
#[derive(Debug, Clone)]
pub struct SecurityConfig {
    /// At least one; the first is the default for tools that want "the" address.
    pub listeners: Vec<Listener>,
    /// Name of the listener other nodes use.
    pub inter_broker_listener: String,
    pub tls: Option<TlsFiles>,
    /// Mutual TLS between nodes (an SSL inter-broker listener).
    pub inter_broker_tls: Option<InterBrokerTls>,
    pub tls_reload_interval_ms: u64,
    pub principal_mapping_rules: String,
    pub mechanisms: Vec<Mechanism>,
    pub oauth: Option<OAuthConfig>,
    pub reauth_ms: u64,
    pub authorizer: AuthorizerKind,
    pub super_users: Vec<String>,
    pub allow_everyone_if_no_acl_found: bool,
    pub max_connections_per_ip: usize,
    pub max_connections_per_ip_overrides: HashMap<IpAddr, usize>,
    pub connections_max_idle_ms: u64,
    pub connection_setup_timeout_ms: u64,
    pub failed_authentication_delay_ms: u64,
}

impl SecurityConfig {
    /// The listener named `name`.
    pub fn listener(&self, name: &str) -> Option<&Listener> {
        self.listeners.iter().find(|l| l.name == name)
    }

    /// The listener other nodes fetch from.
    pub fn inter_broker(&self) -> &Listener {
        self.listener(&self.inter_broker_listener)
            .unwrap_or(&self.listeners[0])
    }

    /// The most connections `ip` may hold.
    pub fn connection_limit_for(&self, ip: IpAddr) -> usize {
        self.max_connections_per_ip_overrides
            .get(&ip)
            .copied()
            .unwrap_or(self.max_connections_per_ip)
    }
}

/// `NAME://HOST:PORT` split into (NAME, HOST, PORT); HOST may be empty or a bracketed IPv6.
fn parse_endpoint(s: &str, flag: &str) -> Result<(String, String, u16), String> {
    let (name, rest) = s
        .split_once("://")
        .ok_or_else(|| format!("{flag} entry {s:?} must be NAME://HOST:PORT"))?;
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| format!("{flag} entry {s:?} must be NAME://HOST:PORT"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{flag} entry {s:?}: bad port"))?;
    let name = name.trim().to_ascii_uppercase();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(format!("{flag} entry {s:?}: bad listener name"));
    }
    Ok((
        name,
        host.trim_matches(|c| c == '[' || c == ']').to_string(),
        port,
    ))
}

fn entries(s: &str) -> impl Iterator<Item = &str> {
    s.split(',').map(str::trim).filter(|e| !e.is_empty())
}

impl SecurityArgs {
    /// Validate, given the legacy single-listener flags (`--listen`, `--advertise` split
    /// into host and port).
    pub fn validate(
        self,
        listen: SocketAddr,
        advertised: (String, i32),
    ) -> Result<SecurityConfig, String> {
        let mut map: BTreeMap<String, SecurityProtocol> = BTreeMap::new();
        if let Some(m) = &self.listener_security_protocol_map {
            for e in entries(m) {
                let (name, proto) = e.split_once(':').ok_or_else(|| {
                    format!("--listener-security-protocol-map entry {e:?} must be NAME:PROTOCOL")
                })?;
                let proto = SecurityProtocol::parse(proto.trim()).ok_or_else(|| {
                    format!("--listener-security-protocol-map: unknown protocol {proto:?}")
                })?;
                map.insert(name.trim().to_ascii_uppercase(), proto);
            }
        }
        let protocol_of = |name: &str| -> Result<SecurityProtocol, String> {
            map.get(name)
                .copied()
                .or_else(|| SecurityProtocol::parse(name))
                .ok_or_else(|| {
                    format!(
                        "listener {name} has no security protocol: add {name}:PROTOCOL to \
                         --listener-security-protocol-map"
                    )
                })
        };
        let mut listeners = Vec::new();
        match &self.listeners {
            None => listeners.push(Listener {
                name: "PLAINTEXT".into(),
                bind: listen,
                advertised_host: advertised.0,
                advertised_port: advertised.1,
                protocol: protocol_of("PLAINTEXT")?,
            }),
            Some(spec) => {
                for e in entries(spec) {
                    let (name, host, port) = parse_endpoint(e, "--listeners")?;
                    let host = if host.is_empty() {
                        "0.0.0.0".into()
                    } else {
                        host
                    };
                    let bind = (host.as_str(), port)
                        .to_socket_addrs()
                        .map_err(|err| format!("--listeners {e:?}: {err}"))?
                        .next()
                        .ok_or_else(|| format!("--listeners {e:?}: no address"))?;
                    if listeners.iter().any(|l: &Listener| l.name == name) {
                        return Err(format!("--listeners names {name} twice"));
                    }
                    if listeners
                        .iter()
                        .any(|l: &Listener| l.bind == bind && port != 0)
                    {
                        return Err(format!("--listeners binds {bind} twice"));
                    }
                    let advertised_host = if bind.ip().is_unspecified() {
                        "127.0.0.1".to_string()
                    } else {
                        bind.ip().to_string()
                    };
                    listeners.push(Listener {
                        protocol: protocol_of(&name)?,
                        name,
                        bind,
                        advertised_host,
                        advertised_port: port as i32,
                    });
                }
                if listeners.is_empty() {
                    return Err("--listeners names no listener".into());
                }
            }
        }
        if let Some(spec) = &self.advertised_listeners {
            for e in entries(spec) {
                let (name, host, port) = parse_endpoint(e, "--advertised-listeners")?;
                let l = listeners
                    .iter_mut()
                    .find(|l| l.name == name)
                    .ok_or_else(|| {
                        format!("--advertised-listeners names {name}, which --listeners does not")
                    })?;
                if host.is_empty() {
                    return Err(format!("--advertised-listeners {e:?} needs a host"));
                }
                l.advertised_host = host;
                l.advertised_port = port as i32;
            }
        }
        let inter_broker_listener = match self.inter_broker_listener_name {
            Some(n) => {
                let n = n.trim().to_ascii_uppercase();
                if !listeners.iter().any(|l| l.name == n) {
                    return Err(format!(
                        "--inter-broker-listener-name {n} is not a listener"
                    ));
                }
                n
            }
            None => listeners[0].name.clone(),
        };
        let client_auth: ClientAuth = self
            .tls_client_auth
            .parse()
            .map_err(|e| format!("--tls-client-auth: {e}"))?;
        let tls = match (self.tls_cert_file, self.tls_key_file) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert,
                key,
                client_ca: self.tls_client_ca_file,
                client_auth,
            }),
            (None, None) => None,
            _ => return Err("--tls-cert-file and --tls-key-file go together".into()),
        };
        if tls.is_none() && listeners.iter().any(|l| l.protocol.tls()) {
            return Err(
                "SSL and SASL_SSL listeners need --tls-cert-file and --tls-key-file".into(),
            );
        }
        let inter_protocol = listeners
            .iter()
            .find(|l| l.name == inter_broker_listener)
            .map(|l| l.protocol);
        let inter_broker_tls = match (inter_protocol, self.inter_broker_tls_ca_file) {
            (Some(SecurityProtocol::Plaintext), None) => None,
            (Some(SecurityProtocol::Ssl), Some(ca)) => Some(InterBrokerTls {
                ca,
                server_name: self.inter_broker_tls_server_name.clone(),
            }),
            (Some(SecurityProtocol::Ssl), None) => {
                return Err(format!(
                    "the inter-broker listener {inter_broker_listener} is SSL: name the CA of the \
                     nodes' certificates with --inter-broker-tls-ca-file (nodes replicate over \
                     mutual TLS)"
                ))
            }
            (Some(SecurityProtocol::Plaintext), Some(_)) => {
                return Err("--inter-broker-tls-ca-file needs an SSL inter-broker listener".into())
            }
            (p, _) => {
                return Err(format!(
                    "the inter-broker listener {inter_broker_listener} is {}: nodes replicate \
                     over PLAINTEXT or SSL (mutual TLS), not SASL; give replication its own \
                     listener and name it with --inter-broker-listener-name",
                    p.map_or("unknown", |p| p.name())
                ))
            }
        };
        let mut mechanisms = Vec::new();
        for m in entries(&self.sasl_enabled_mechanisms) {
            let mech = Mechanism::parse(m).ok_or_else(|| {
                format!(
                    "--sasl-enabled-mechanisms: {m:?} is not one of PLAIN, SCRAM-SHA-256, \
                     SCRAM-SHA-512, OAUTHBEARER"
                )
            })?;
            if !mechanisms.contains(&mech) {
                mechanisms.push(mech);
            }
        }
        if mechanisms.is_empty() && listeners.iter().any(|l| l.protocol.sasl()) {
            return Err("SASL listeners need at least one --sasl-enabled-mechanisms".into());
        }
        let oauth = match &self.oauth_jwks {
            Some(j) => Some(OAuthConfig {
                jwks: if j.starts_with("https://") || j.starts_with("http://") {
                    JwksSource::Url(j.clone())
                } else {
                    JwksSource::File(PathBuf::from(j))
                },
                options: ValidatorOptions {
                    issuer: self.oauth_expected_issuer.clone(),
                    audience: self
                        .oauth_expected_audience
                        .as_deref()
                        .map(|a| entries(a).map(String::from).collect())
                        .unwrap_or_default(),
                    principal_claim: self.oauth_sub_claim_name.clone(),
                    scope_claim: self.oauth_scope_claim_name.clone(),
                    clock_skew_s: self.oauth_clock_skew_seconds.max(0),
                },
                refresh_ms: self.oauth_jwks_refresh_ms.max(1000),
            }),
            None => None,
        };
        if mechanisms.contains(&Mechanism::OAuthBearer) && oauth.is_none() {
            return Err("OAUTHBEARER needs --oauth-jwks (a JWKS file or URL)".into());
        }
        // Parse the rules now so that a bad rule stops the node at start.
        strata_security::principal::PrincipalMapper::parse(&self.ssl_principal_mapping_rules)
            .map_err(|e| format!("--ssl-principal-mapping-rules: {e}"))?;
        let super_users: Vec<String> = self
            .super_users
            .split(';')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        for u in &super_users {
            if !u.contains(':') {
                return Err(format!(
                    "--super-users: {u:?} must be TYPE:NAME, e.g. User:admin"
                ));
            }
        }
        let mut overrides = HashMap::new();
        for e in entries(&self.max_connections_per_ip_overrides) {
            let (ip, n) = e.rsplit_once(':').ok_or_else(|| {
                format!("--max-connections-per-ip-overrides entry {e:?} must be IP:N")
            })?;
            let ip: IpAddr = ip
                .trim_matches(|c| c == '[' || c == ']')
                .parse()
                .map_err(|_| format!("--max-connections-per-ip-overrides: bad IP in {e:?}"))?;
            let n: usize = n
                .parse()
                .map_err(|_| format!("--max-connections-per-ip-overrides: bad count in {e:?}"))?;
            overrides.insert(ip, n);
        }
        Ok(SecurityConfig {
            listeners,
            inter_broker_listener,
            tls,
            inter_broker_tls,
            tls_reload_interval_ms: self.tls_reload_interval_ms.max(100),
            principal_mapping_rules: self.ssl_principal_mapping_rules,
            mechanisms,
            oauth,
            reauth_ms: self.connections_max_reauth_ms,
            authorizer: self.authorizer,
            super_users,
            allow_everyone_if_no_acl_found: self.allow_everyone_if_no_acl_found,
            max_connections_per_ip: self.max_connections_per_ip.max(1),
            max_connections_per_ip_overrides: overrides,
            connections_max_idle_ms: self.connections_max_idle_ms.max(100),
            connection_setup_timeout_ms: self.connection_setup_timeout_ms.max(100),
            failed_authentication_delay_ms: self.failed_authentication_delay_ms,
        })
    }
}
