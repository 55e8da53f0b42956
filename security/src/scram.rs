//! SASL SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677), server side, as Kafka's broker
//! speaks them, and the credentials stored for them (never the password itself).
//!
//! Differences from Kafka's broker, all on purpose:
//! - An unknown user is not refused at the first message: the server answers with a decoy
//!   salt that is stable per user name and fails at the final message with the same error as
//!   a wrong password, so the exchange does not reveal which users exist.
//! - The AuthMessage is built from the bytes the client sent rather than re-serialized, as
//!   RFC 5802 says; for every client that sends no extension in its final message this is
//!   the same string Kafka builds.
//! - The channel-binding attribute of the final message must be the GS2 header of the first
//!   one, and a mandatory extension (`m=`) is refused, both as RFC 5802 requires.
//! - Delegation tokens (`tokenauth=true`) are refused: Strata has none.

use std::fmt;
use std::num::NonZeroU32;
use std::sync::OnceLock;

use aws_lc_rs::{constant_time, digest, hmac, pbkdf2, rand};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

use crate::{Error, Result, Step};

/// A SCRAM mechanism Kafka offers.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum ScramMechanism {
    /// SCRAM-SHA-256 (RFC 7677).
    #[serde(rename = "SCRAM-SHA-256")]
    Sha256,
    /// SCRAM-SHA-512.
    #[serde(rename = "SCRAM-SHA-512")]
    Sha512,
}

impl ScramMechanism {
    /// Every SCRAM mechanism, in Kafka's type order.
    pub const ALL: [ScramMechanism; 2] = [ScramMechanism::Sha256, ScramMechanism::Sha512];

    /// The SASL mechanism name.
    pub fn name(self) -> &'static str {
        match self {
            ScramMechanism::Sha256 => "SCRAM-SHA-256",
            ScramMechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    /// The mechanism with this SASL name (exact, as Kafka matches it).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    /// The id Kafka's DescribeUserScramCredentials and AlterUserScramCredentials use.
    pub fn kafka_type(self) -> i8 {
        match self {
            ScramMechanism::Sha256 => 1,
            ScramMechanism::Sha512 => 2,
        }
    }

    /// The mechanism with this Kafka id (0 is Kafka's UNKNOWN and maps to `None`).
    pub fn from_kafka_type(t: i8) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.kafka_type() == t)
    }

    /// The fewest PBKDF2 iterations Kafka accepts for a credential.
    pub fn min_iterations(self) -> u32 {
        4096
    }

    /// The most PBKDF2 iterations Kafka accepts for a credential.
    pub fn max_iterations(self) -> u32 {
        16384
    }

    /// The length in bytes of the digest, and so of every key and proof.
    pub fn digest_len(self) -> usize {
        self.digest_algorithm().output_len()
    }

    fn digest_algorithm(self) -> &'static digest::Algorithm {
        match self {
            ScramMechanism::Sha256 => &digest::SHA256,
            ScramMechanism::Sha512 => &digest::SHA512,
        }
    }

    fn hmac_algorithm(self) -> hmac::Algorithm {
        match self {
            ScramMechanism::Sha256 => hmac::HMAC_SHA256,
            ScramMechanism::Sha512 => hmac::HMAC_SHA512,
        }
    }

    fn pbkdf2_algorithm(self) -> pbkdf2::Algorithm {
        match self {
            ScramMechanism::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
            ScramMechanism::Sha512 => pbkdf2::PBKDF2_HMAC_SHA512,
        }
    }

    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        let key = hmac::Key::new(self.hmac_algorithm(), key);
        hmac::sign(&key, data).as_ref().to_vec()
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        digest::digest(self.digest_algorithm(), data)
            .as_ref()
            .to_vec()
    }

    /// RFC 5802's Hi(): PBKDF2 with one block of the digest's length.
    fn salted_password(self, password: &[u8], salt: &[u8], iterations: NonZeroU32) -> Vec<u8> {
        let mut out = vec![0u8; self.digest_len()];
        pbkdf2::derive(
            self.pbkdf2_algorithm(),
            iterations,
            salt,
            password,
            &mut out,
        );
        out
    }

    /// Checks an iteration count the way Kafka's controller does (UNACCEPTABLE_CREDENTIAL).
    fn check_iterations(self, iterations: u32) -> Result<NonZeroU32> {
        if iterations < self.min_iterations() {
            return Err(Error::Malformed(format!(
                "Too few iterations: {iterations} is less than the minimum {} for {}",
                self.min_iterations(),
                self.name()
            )));
        }
        if iterations > self.max_iterations() {
            return Err(Error::Malformed(format!(
                "Too many iterations: {iterations} is more than the maximum {} for {}",
                self.max_iterations(),
                self.name()
            )));
        }
        NonZeroU32::new(iterations)
            .ok_or_else(|| Error::Malformed("iterations must be positive".to_string()))
    }
}

impl fmt::Display for ScramMechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A stored credential: never the password.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ScramCredential {
    /// The mechanism whose digest made the keys.
    pub mechanism: ScramMechanism,
    /// The PBKDF2 salt.
    #[serde(with = "base64_bytes")]
    pub salt: Vec<u8>,
    /// The PBKDF2 iteration count.
    pub iterations: u32,
    /// H(HMAC(SaltedPassword, "Client Key")).
    #[serde(with = "base64_bytes")]
    pub stored_key: Vec<u8>,
    /// HMAC(SaltedPassword, "Server Key").
    #[serde(with = "base64_bytes")]
    pub server_key: Vec<u8>,
}

// Written by hand so that logging a credential never prints the salt or the keys (Kafka
// hides them the same way).
impl fmt::Debug for ScramCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramCredential")
            .field("mechanism", &self.mechanism)
            .field("salt", &"[hidden]")
            .field("iterations", &self.iterations)
            .field("stored_key", &"[hidden]")
            .field("server_key", &"[hidden]")
            .finish()
    }
}

impl ScramCredential {
    /// From what AlterUserScramCredentials carries (salt, salted password, iterations); checks
    /// the iteration range and that the salted password has the digest's length.
    pub fn from_salted_password(
        mechanism: ScramMechanism,
        salt: &[u8],
        iterations: u32,
        salted_password: &[u8],
    ) -> Result<Self> {
        mechanism.check_iterations(iterations)?;
        if salted_password.len() != mechanism.digest_len() {
            return Err(Error::Malformed(format!(
                "the salted password for {} must be {} bytes, not {}",
                mechanism.name(),
                mechanism.digest_len(),
                salted_password.len()
            )));
        }
        Ok(Self::from_salted_unchecked(
            mechanism,
            salt,
            iterations,
            salted_password,
        ))
    }

    /// With a fresh random salt (32 bytes).
    pub fn from_password(
        mechanism: ScramMechanism,
        password: &str,
        iterations: u32,
    ) -> Result<Self> {
        let mut salt = [0u8; 32];
        fill_random(&mut salt)?;
        Self::with_salt(mechanism, password, &salt, iterations)
    }

    /// With the given salt, as `kafka-configs --add-config 'SCRAM-SHA-256=[salt=...,password=...]'`.
    pub fn with_salt(
        mechanism: ScramMechanism,
        password: &str,
        salt: &[u8],
        iterations: u32,
    ) -> Result<Self> {
        let rounds = mechanism.check_iterations(iterations)?;
        let salted = mechanism.salted_password(password.as_bytes(), salt, rounds);
        Ok(Self::from_salted_unchecked(
            mechanism, salt, iterations, &salted,
        ))
    }

    /// Whether `password` is this credential's password (constant-time). A credential whose
    /// iteration count is outside the mechanism's range never matches: none is created here,
    /// and refusing one bounds the work a PLAIN attempt can cost the broker.
    pub fn verify_password(&self, password: &str) -> bool {
        let Ok(rounds) = self.mechanism.check_iterations(self.iterations) else {
            return false;
        };
        let salted = self
            .mechanism
            .salted_password(password.as_bytes(), &self.salt, rounds);
        let client_key = self.mechanism.hmac(&salted, b"Client Key");
        let stored_key = self.mechanism.hash(&client_key);
        constant_time::verify_slices_are_equal(&stored_key, &self.stored_key).is_ok()
    }

    fn from_salted_unchecked(
        mechanism: ScramMechanism,
        salt: &[u8],
        iterations: u32,
        salted_password: &[u8],
    ) -> Self {
        let client_key = mechanism.hmac(salted_password, b"Client Key");
        ScramCredential {
            mechanism,
            salt: salt.to_vec(),
            iterations,
            stored_key: mechanism.hash(&client_key),
            server_key: mechanism.hmac(salted_password, b"Server Key"),
        }
    }

    /// A stand-in credential for a user that has none, so that the exchange with an unknown
    /// user looks and costs the same as one with a known user until it fails. Its salt and
    /// keys are HMACs of the user name under a per-process random key: stable for a name
    /// (asking twice gives the same salt, as for a real user) and unguessable.
    pub(crate) fn decoy(mechanism: ScramMechanism, user: &str) -> Result<Self> {
        let key = decoy_key()?;
        let derive = |label: &[u8], alg: hmac::Algorithm| {
            let mut ctx = hmac::Context::with_key(&hmac::Key::new(alg, key));
            ctx.update(label);
            ctx.update(mechanism.name().as_bytes());
            ctx.update(&[0]);
            ctx.update(user.as_bytes());
            ctx.sign().as_ref().to_vec()
        };
        Ok(ScramCredential {
            mechanism,
            salt: derive(b"salt\0", hmac::HMAC_SHA256),
            iterations: mechanism.min_iterations(),
            stored_key: derive(b"stored-key\0", mechanism.hmac_algorithm()),
            server_key: derive(b"server-key\0", mechanism.hmac_algorithm()),
        })
    }

    /// Whether the SCRAM server can use this credential for `mechanism`.
    fn usable_for(&self, mechanism: ScramMechanism) -> bool {
        self.mechanism == mechanism
            && self.iterations >= mechanism.min_iterations()
            && self.stored_key.len() == mechanism.digest_len()
            && self.server_key.len() == mechanism.digest_len()
    }
}

/// Serde helpers that store bytes as standard base64 strings in JSON.
mod base64_bytes {
    use super::BASE64;
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&BASE64.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        BASE64.decode(text).map_err(serde::de::Error::custom)
    }
}

/// Where SASL servers find credentials (the node implements it over its cluster metadata).
pub trait Credentials {
    /// The user's credential for `mechanism`, if it has one.
    fn scram(&self, mechanism: ScramMechanism, user: &str) -> Option<ScramCredential>;
}

/// A random password of `len` ASCII letters and digits, drawn without bias from the
/// system's secure random source (for credentials an operator generates).
pub fn generate_password(len: usize) -> Result<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    // 62 * 4 = 248: bytes at or above it are dropped so each symbol is equally likely.
    let limit = (256 / ALPHABET.len() * ALPHABET.len()) as u8;
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        fill_random(&mut buf)?;
        for b in buf {
            if b < limit && out.len() < len {
                out.push(ALPHABET[usize::from(b) % ALPHABET.len()] as char);
            }
        }
    }
    Ok(out)
}

/// Fills `buf` from the system's secure random source.
fn fill_random(buf: &mut [u8]) -> Result<()> {
    rand::fill(buf).map_err(|_| Error::Unsupported("no secure random source".to_string()))
}

/// The per-process key under which decoy credentials are derived.
fn decoy_key() -> Result<&'static [u8; 32]> {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    if let Some(key) = KEY.get() {
        return Ok(key);
    }
    let mut key = [0u8; 32];
    fill_random(&mut key)?;
    // If another thread won the race its key stays; both are random, so either will do.
    Ok(KEY.get_or_init(|| key))
}

/// The text Kafka sends for every credential failure: it never says whether the user exists.
pub(crate) fn invalid_credentials(mechanism_name: &str) -> Error {
    Error::AuthenticationFailed(format!(
        "Authentication failed during authentication due to invalid credentials with SASL mechanism {mechanism_name}"
    ))
}

/// The text Kafka sends when the authorization id differs from the user name.
pub(crate) fn authzid_mismatch() -> Error {
    Error::AuthenticationFailed(
        "Authentication failed: Client requested an authorization id that is different from username"
            .to_string(),
    )
}

fn malformed(what: &str) -> Error {
    Error::Malformed(format!("invalid SCRAM {what}"))
}

/// A parsed client-first-message; borrowed parts point into the client's bytes.
#[derive(Debug, PartialEq, Eq)]
struct ClientFirst<'a> {
    /// `n,,` or `n,a=...,`, exactly as sent: the final message's `c=` must carry it.
    gs2_header: &'a str,
    /// The unescaped authorization id, if one was given.
    authzid: Option<String>,
    /// The unescaped user name.
    user: String,
    /// The client's nonce.
    nonce: &'a str,
    /// client-first-message-bare, exactly as sent, for the AuthMessage.
    bare: &'a str,
    /// Whether the client asked for delegation-token authentication.
    token_auth: bool,
}

/// Parses `gs2-header client-first-message-bare`.
fn parse_client_first(token: &[u8]) -> Result<ClientFirst<'_>> {
    let msg = std::str::from_utf8(token).map_err(|_| malformed("client-first message"))?;
    if msg.contains('\0') {
        return Err(malformed("client-first message"));
    }
    let (flag, rest) = msg
        .split_once(',')
        .ok_or_else(|| malformed("client-first message"))?;
    match flag {
        "n" => {}
        "y" => {
            return Err(Error::Unsupported(
                "SCRAM channel binding (GS2 flag y)".to_string(),
            ))
        }
        _ if flag.starts_with("p=") => {
            return Err(Error::Unsupported(
                "SCRAM channel binding (GS2 flag p)".to_string(),
            ))
        }
        _ => return Err(malformed("GS2 header")),
    }
    let (authzid, bare) = rest
        .split_once(',')
        .ok_or_else(|| malformed("client-first message"))?;
    let authzid = if authzid.is_empty() {
        None
    } else {
        let name = authzid
            .strip_prefix("a=")
            .ok_or_else(|| malformed("GS2 header"))?;
        Some(unescape_saslname(name)?)
    };
    let gs2_header = &msg[..msg.len() - bare.len()];
    if bare.starts_with("m=") {
        return Err(Error::Unsupported(
            "mandatory SCRAM extensions (m=)".to_string(),
        ));
    }
    let mut attrs = bare.split(',');
    let user = attrs
        .next()
        .and_then(|a| a.strip_prefix("n="))
        .ok_or_else(|| malformed("client-first message: no user name"))?;
    let user = unescape_saslname(user)?;
    let nonce = attrs
        .next()
        .and_then(|a| a.strip_prefix("r="))
        .ok_or_else(|| malformed("client-first message: no nonce"))?;
    check_nonce(nonce)?;
    let mut token_auth = false;
    for ext in attrs {
        let (name, value) = parse_extension(ext)?;
        // Kafka's only extension; the others it ignores, and so do we.
        if name == "tokenauth" && value.eq_ignore_ascii_case("true") {
            token_auth = true;
        }
    }
    Ok(ClientFirst {
        gs2_header,
        authzid,
        user,
        nonce,
        bare,
        token_auth,
    })
}

/// A parsed client-final-message; the borrowed parts point into the client's bytes.
#[derive(Debug, PartialEq, Eq)]
struct ClientFinal<'a> {
    /// The decoded `c=` attribute.
    channel_binding: Vec<u8>,
    /// The combined nonce the client echoes.
    nonce: &'a str,
    /// The decoded ClientProof.
    proof: Vec<u8>,
    /// client-final-message-without-proof, exactly as sent, for the AuthMessage.
    without_proof: &'a str,
}

/// Parses `c=... ,r=... [,ext=value]* ,p=...`.
fn parse_client_final(token: &[u8]) -> Result<ClientFinal<'_>> {
    let msg = std::str::from_utf8(token).map_err(|_| malformed("client-final message"))?;
    if msg.contains('\0') {
        return Err(malformed("client-final message"));
    }
    let (without_proof, proof) = msg
        .rsplit_once(",p=")
        .ok_or_else(|| malformed("client-final message: no proof"))?;
    let proof = BASE64
        .decode(proof)
        .map_err(|_| malformed("client-final message: proof is not base64"))?;
    let mut attrs = without_proof.split(',');
    let channel_binding = attrs
        .next()
        .and_then(|a| a.strip_prefix("c="))
        .ok_or_else(|| malformed("client-final message: no channel binding"))?;
    let channel_binding = BASE64
        .decode(channel_binding)
        .map_err(|_| malformed("client-final message: channel binding is not base64"))?;
    let nonce = attrs
        .next()
        .and_then(|a| a.strip_prefix("r="))
        .ok_or_else(|| malformed("client-final message: no nonce"))?;
    check_nonce(nonce)?;
    for ext in attrs {
        parse_extension(ext)?;
    }
    Ok(ClientFinal {
        channel_binding,
        nonce,
        proof,
        without_proof,
    })
}

/// RFC 5802 saslname: `,` travels as `=2C` and `=` as `=3D`; any other `=` is an error.
fn unescape_saslname(name: &str) -> Result<String> {
    if name.is_empty() {
        return Err(malformed("user name: empty"));
    }
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(at) = rest.find('=') {
        out.push_str(&rest[..at]);
        let escape = rest.get(at..at + 3);
        match escape {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(malformed("user name: bad '=' escape")),
        }
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A nonce is one or more printable ASCII characters other than `,`.
fn check_nonce(nonce: &str) -> Result<()> {
    if nonce.is_empty()
        || !nonce
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
    {
        return Err(malformed("nonce"));
    }
    Ok(())
}

/// An extension `name=value`: name letters only (Kafka's `tokenauth` is longer than RFC 5802's
/// one letter), value non-empty.
fn parse_extension(ext: &str) -> Result<(&str, &str)> {
    let (name, value) = ext.split_once('=').ok_or_else(|| malformed("extension"))?;
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphabetic()) || value.is_empty() {
        return Err(malformed("extension"));
    }
    Ok((name, value))
}

/// What the server remembers between its first and final message.
struct Pending {
    user: String,
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
    credential: ScramCredential,
    /// False when `credential` is a decoy: the exchange must then fail whatever the proof.
    known_user: bool,
}

enum State {
    ClientFirst,
    ClientFinal(Box<Pending>),
    Done,
    Failed,
}

/// The server side of one SCRAM exchange.
pub struct ScramServer {
    mechanism: ScramMechanism,
    state: State,
    /// A fixed server nonce, for published test vectors; `None` draws a fresh one.
    server_nonce: Option<String>,
}

impl fmt::Debug for ScramServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::ClientFirst => "client-first",
            State::ClientFinal(_) => "client-final",
            State::Done => "done",
            State::Failed => "failed",
        };
        f.debug_struct("ScramServer")
            .field("mechanism", &self.mechanism)
            .field("state", &state)
            .finish()
    }
}

impl ScramServer {
    /// A server waiting for the client-first message.
    pub fn new(mechanism: ScramMechanism) -> Self {
        ScramServer {
            mechanism,
            state: State::ClientFirst,
            server_nonce: None,
        }
    }

    /// A server whose nonce part is `server_nonce`, to replay published exchanges.
    #[cfg(test)]
    pub(crate) fn with_nonce(mechanism: ScramMechanism, server_nonce: &str) -> Self {
        ScramServer {
            server_nonce: Some(server_nonce.to_string()),
            ..Self::new(mechanism)
        }
    }

    /// The mechanism this server speaks.
    pub fn mechanism(&self) -> ScramMechanism {
        self.mechanism
    }

    /// Whether the client has been authenticated.
    pub fn is_complete(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// One client token: client-first gives `Step::Challenge(server-first)`, client-final gives
    /// `Step::Done` with the server-final message; anything out of order, after a failure or
    /// after completion is an error, and every error ends the exchange.
    pub fn step(&mut self, token: &[u8], credentials: &dyn Credentials) -> Result<Step> {
        let state = std::mem::replace(&mut self.state, State::Failed);
        match state {
            State::ClientFirst => {
                let pending = self.client_first(token, credentials)?;
                let challenge = pending.server_first.clone().into_bytes();
                self.state = State::ClientFinal(Box::new(pending));
                Ok(Step::Challenge(challenge))
            }
            State::ClientFinal(pending) => {
                let step = self.client_final(token, &pending)?;
                self.state = State::Done;
                Ok(step)
            }
            State::Done => Err(Error::Malformed(
                "SCRAM exchange already complete".to_string(),
            )),
            State::Failed => Err(Error::Malformed(
                "SCRAM exchange already failed".to_string(),
            )),
        }
    }

    fn client_first(&self, token: &[u8], credentials: &dyn Credentials) -> Result<Pending> {
        let first = parse_client_first(token)?;
        if first.token_auth {
            return Err(Error::Unsupported(
                "SCRAM delegation-token authentication (tokenauth)".to_string(),
            ));
        }
        // Refused before the credential lookup, so it says nothing about the user.
        if first.authzid.as_ref().is_some_and(|a| *a != first.user) {
            return Err(authzid_mismatch());
        }
        let (credential, known_user) = match credentials.scram(self.mechanism, &first.user) {
            Some(c) if c.usable_for(self.mechanism) => (c, true),
            Some(_) => {
                tracing::warn!(
                    user = %first.user,
                    mechanism = self.mechanism.name(),
                    "stored SCRAM credential is unusable (iterations below minimum or keys of the wrong length); refusing"
                );
                (ScramCredential::decoy(self.mechanism, &first.user)?, false)
            }
            None => (ScramCredential::decoy(self.mechanism, &first.user)?, false),
        };
        let server_nonce = match &self.server_nonce {
            Some(n) => n.clone(),
            None => random_nonce()?,
        };
        let nonce = format!("{}{}", first.nonce, server_nonce);
        let server_first = format!(
            "r={nonce},s={},i={}",
            BASE64.encode(&credential.salt),
            credential.iterations
        );
        Ok(Pending {
            user: first.user,
            gs2_header: first.gs2_header.to_string(),
            client_first_bare: first.bare.to_string(),
            server_first,
            nonce,
            credential,
            known_user,
        })
    }

    fn client_final(&self, token: &[u8], pending: &Pending) -> Result<Step> {
        let last = parse_client_final(token)?;
        if last.channel_binding != pending.gs2_header.as_bytes() {
            return Err(malformed(
                "client-final message: channel binding differs from the GS2 header",
            ));
        }
        if last.nonce != pending.nonce {
            return Err(malformed("client-final message: nonce does not match"));
        }
        if last.proof.len() != self.mechanism.digest_len() {
            return Err(malformed(
                "client-final message: proof has the wrong length",
            ));
        }
        let auth_message = format!(
            "{},{},{}",
            pending.client_first_bare, pending.server_first, last.without_proof
        );
        let credential = &pending.credential;
        let client_signature = self
            .mechanism
            .hmac(&credential.stored_key, auth_message.as_bytes());
        let client_key: Vec<u8> = last
            .proof
            .iter()
            .zip(&client_signature)
            .map(|(p, s)| p ^ s)
            .collect();
        let computed = self.mechanism.hash(&client_key);
        let matches =
            constant_time::verify_slices_are_equal(&computed, &credential.stored_key).is_ok();
        if !(matches && pending.known_user) {
            return Err(invalid_credentials(self.mechanism.name()));
        }
        let server_signature = self
            .mechanism
            .hmac(&credential.server_key, auth_message.as_bytes());
        Ok(Step::Done {
            response: format!("v={}", BASE64.encode(server_signature)).into_bytes(),
            user: pending.user.clone(),
            expires_at_ms: None,
        })
    }
}

/// A fresh server nonce: 24 random bytes in base64, 32 printable characters without `,`.
fn random_nonce() -> Result<String> {
    let mut bytes = [0u8; 24];
    fill_random(&mut bytes)?;
    Ok(BASE64.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_passwords_are_alphanumeric_of_the_asked_length_and_differ() {
        let a = generate_password(32).unwrap();
        let b = generate_password(32).unwrap();
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
        assert_eq!(generate_password(0).unwrap(), "");
        assert_eq!(generate_password(1000).unwrap().len(), 1000);
    }
    use proptest::prelude::*;
    use std::collections::HashMap;

    /// An in-memory credential store.
    #[derive(Default)]
    struct Store(HashMap<(ScramMechanism, String), ScramCredential>);

    impl Store {
        fn with(mut self, user: &str, credential: ScramCredential) -> Self {
            self.0
                .insert((credential.mechanism, user.to_string()), credential);
            self
        }
    }

    impl Credentials for Store {
        fn scram(&self, mechanism: ScramMechanism, user: &str) -> Option<ScramCredential> {
            self.0.get(&(mechanism, user.to_string())).cloned()
        }
    }

    /// A minimal SCRAM client, written from RFC 5802 apart from the server code.
    struct Client {
        mechanism: ScramMechanism,
        password: String,
        gs2_header: String,
        first_bare: String,
        nonce: String,
    }

    fn escape(name: &str) -> String {
        name.replace('=', "=3D").replace(',', "=2C")
    }

    impl Client {
        fn new(mechanism: ScramMechanism, user: &str, password: &str) -> Self {
            Client {
                mechanism,
                password: password.to_string(),
                gs2_header: "n,,".to_string(),
                first_bare: format!("n={},r=fyko+d2lbbFgONRv9qkxdawL", escape(user)),
                nonce: "fyko+d2lbbFgONRv9qkxdawL".to_string(),
            }
        }

        fn first(&self) -> Vec<u8> {
            format!("{}{}", self.gs2_header, self.first_bare).into_bytes()
        }

        /// The client-final message and the server signature the client expects.
        fn last(&self, server_first: &[u8]) -> (Vec<u8>, Vec<u8>) {
            let server_first = std::str::from_utf8(server_first).unwrap();
            let mut nonce = "";
            let mut salt = Vec::new();
            let mut iterations = 0u32;
            for attr in server_first.split(',') {
                let (k, v) = attr.split_once('=').unwrap();
                match k {
                    "r" => nonce = v,
                    "s" => salt = BASE64.decode(v).unwrap(),
                    "i" => iterations = v.parse().unwrap(),
                    _ => {}
                }
            }
            assert!(nonce.starts_with(&self.nonce));
            let (pbkdf, alg) = match self.mechanism {
                ScramMechanism::Sha256 => (pbkdf2::PBKDF2_HMAC_SHA256, hmac::HMAC_SHA256),
                ScramMechanism::Sha512 => (pbkdf2::PBKDF2_HMAC_SHA512, hmac::HMAC_SHA512),
            };
            let len = alg.digest_algorithm().output_len();
            let mut salted = vec![0u8; len];
            pbkdf2::derive(
                pbkdf,
                NonZeroU32::new(iterations).unwrap(),
                &salt,
                self.password.as_bytes(),
                &mut salted,
            );
            let salted = hmac::Key::new(alg, &salted);
            let client_key = hmac::sign(&salted, b"Client Key");
            let stored_key = digest::digest(alg.digest_algorithm(), client_key.as_ref());
            let without_proof = format!("c={},r={nonce}", BASE64.encode(&self.gs2_header));
            let auth = format!("{},{server_first},{without_proof}", self.first_bare);
            let signature = hmac::sign(&hmac::Key::new(alg, stored_key.as_ref()), auth.as_bytes());
            let proof: Vec<u8> = client_key
                .as_ref()
                .iter()
                .zip(signature.as_ref())
                .map(|(a, b)| a ^ b)
                .collect();
            let server_key = hmac::sign(&salted, b"Server Key");
            let server_signature =
                hmac::sign(&hmac::Key::new(alg, server_key.as_ref()), auth.as_bytes());
            (
                format!("{without_proof},p={}", BASE64.encode(proof)).into_bytes(),
                format!("v={}", BASE64.encode(server_signature)).into_bytes(),
            )
        }
    }

    fn challenge(step: Step) -> Vec<u8> {
        match step {
            Step::Challenge(c) => c,
            other => panic!("expected a challenge, got {other:?}"),
        }
    }

    fn store(mechanism: ScramMechanism, user: &str, password: &str) -> Store {
        Store::default().with(
            user,
            ScramCredential::from_password(mechanism, password, 4096).unwrap(),
        )
    }

    /// Runs a whole exchange with the test client.
    fn exchange(
        mechanism: ScramMechanism,
        store: &Store,
        user: &str,
        password: &str,
    ) -> Result<Step> {
        let client = Client::new(mechanism, user, password);
        let mut server = ScramServer::new(mechanism);
        let server_first = challenge(server.step(&client.first(), store)?);
        let (last, _) = client.last(&server_first);
        server.step(&last, store)
    }

    #[test]
    fn mechanism_names_ids_and_iterations() {
        for m in ScramMechanism::ALL {
            assert_eq!(ScramMechanism::from_name(m.name()), Some(m));
            assert_eq!(ScramMechanism::from_kafka_type(m.kafka_type()), Some(m));
            assert_eq!(m.min_iterations(), 4096);
            assert_eq!(m.max_iterations(), 16384);
        }
        assert_eq!(ScramMechanism::Sha256.kafka_type(), 1);
        assert_eq!(ScramMechanism::Sha512.kafka_type(), 2);
        assert_eq!(ScramMechanism::Sha256.name(), "SCRAM-SHA-256");
        assert_eq!(ScramMechanism::Sha512.name(), "SCRAM-SHA-512");
        assert_eq!(ScramMechanism::from_name("scram-sha-256"), None);
        assert_eq!(ScramMechanism::from_kafka_type(0), None);
        assert_eq!(ScramMechanism::from_kafka_type(3), None);
        assert_eq!(ScramMechanism::Sha512.digest_len(), 64);
    }

    /// RFC 7677 section 3, byte for byte.
    #[test]
    fn rfc7677_sha256_exchange() {
        let salt = BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let credential =
            ScramCredential::with_salt(ScramMechanism::Sha256, "pencil", &salt, 4096).unwrap();
        let store = Store::default().with("user", credential);
        let mut server =
            ScramServer::with_nonce(ScramMechanism::Sha256, "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0");
        let first = server
            .step(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO", &store)
            .unwrap();
        assert_eq!(
            first,
            Step::Challenge(
                b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
                    .to_vec()
            )
        );
        let last = server
            .step(
                b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
                &store,
            )
            .unwrap();
        assert_eq!(
            last,
            Step::Done {
                response: b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=".to_vec(),
                user: "user".to_string(),
                expires_at_ms: None,
            }
        );
        assert!(server.is_complete());
    }

    /// The SCRAM-SHA-512 exchange that Qpid, proton-dotnet and other clients test against
    /// (RFC 7677's inputs; not from an RFC, since none covers SHA-512).
    #[test]
    fn sha512_interop_exchange() {
        let salt = BASE64
            .decode("Yin2FuHTt/M0kJWb0t9OI32n2VmOGi3m+JfjOvuDF88=")
            .unwrap();
        let credential =
            ScramCredential::with_salt(ScramMechanism::Sha512, "pencil", &salt, 4096).unwrap();
        let store = Store::default().with("user", credential);
        let nonce = "rOprNGfwEbeRWgbNEkqO02431b08-2f89-4bad-a4e6-80c0564ec865";
        let mut server = ScramServer::with_nonce(
            ScramMechanism::Sha512,
            "02431b08-2f89-4bad-a4e6-80c0564ec865",
        );
        let first = challenge(
            server
                .step(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO", &store)
                .unwrap(),
        );
        assert_eq!(
            first,
            format!("r={nonce},s=Yin2FuHTt/M0kJWb0t9OI32n2VmOGi3m+JfjOvuDF88=,i=4096").into_bytes()
        );
        let last = format!("c=biws,r={nonce},p=Hc5yec3NmCD7t+kFRw4/3yD6/F3SQHc7AVYschRja+Bc3sbdjlA0eH1OjJc0DD4ghn1tnXN5/Wr6qm9xmaHt4A==");
        let done = server.step(last.as_bytes(), &store).unwrap();
        assert_eq!(
            done,
            Step::Done {
                response: b"v=BQuhnKHqYDwQWS5jAw4sZed+C9KFUALsbrq81bB0mh+bcUUbbMPNNmBIupnS2AmyyDnG5CTBQtkjJ9kyY4kzmw==".to_vec(),
                user: "user".to_string(),
                expires_at_ms: None,
            }
        );
    }

    #[test]
    fn round_trip_both_mechanisms() {
        for m in ScramMechanism::ALL {
            // A name that needs escaping, and a non-ASCII password.
            let user = "al,i=ce";
            let store = store(m, user, "pässwörd");
            let client = Client::new(m, user, "pässwörd");
            let mut server = ScramServer::new(m);
            let server_first = challenge(server.step(&client.first(), &store).unwrap());
            let text = std::str::from_utf8(&server_first).unwrap();
            assert!(text.starts_with("r=fyko+d2lbbFgONRv9qkxdawL"));
            assert!(text.ends_with(",i=4096"));
            let (last, expected) = client.last(&server_first);
            assert_eq!(
                server.step(&last, &store).unwrap(),
                Step::Done {
                    response: expected,
                    user: user.to_string(),
                    expires_at_ms: None
                }
            );
        }
    }

    #[test]
    fn server_nonces_are_fresh() {
        let store = store(ScramMechanism::Sha256, "u", "p");
        let client = Client::new(ScramMechanism::Sha256, "u", "p");
        let a = challenge(
            ScramServer::new(ScramMechanism::Sha256)
                .step(&client.first(), &store)
                .unwrap(),
        );
        let b = challenge(
            ScramServer::new(ScramMechanism::Sha256)
                .step(&client.first(), &store)
                .unwrap(),
        );
        assert_ne!(a, b);
    }

    #[test]
    fn authzid_equal_to_user_and_ignored_extensions_are_accepted() {
        let m = ScramMechanism::Sha256;
        let store = store(m, "bob", "secret");
        let mut client = Client::new(m, "bob", "secret");
        client.gs2_header = "n,a=bob,".to_string();
        client.first_bare.push_str(",foo=bar,tokenauth=false");
        let mut server = ScramServer::new(m);
        let server_first = challenge(server.step(&client.first(), &store).unwrap());
        let (last, expected) = client.last(&server_first);
        match server.step(&last, &store).unwrap() {
            Step::Done { response, user, .. } => {
                assert_eq!(response, expected);
                assert_eq!(user, "bob");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn wrong_password_fails_without_leaking() {
        for m in ScramMechanism::ALL {
            let store = store(m, "bob", "right");
            let err = exchange(m, &store, "bob", "wrong-password").unwrap_err();
            assert!(matches!(err, Error::AuthenticationFailed(_)));
            let text = err.to_string();
            assert!(text.contains(&format!(
                "Authentication failed during authentication due to invalid credentials with SASL mechanism {}",
                m.name()
            )));
            assert!(!text.contains("wrong-password") && !text.contains("bob"));
        }
    }

    #[test]
    fn unknown_user_fails_at_the_final_step_like_a_wrong_password() {
        for m in ScramMechanism::ALL {
            let store = store(m, "bob", "right");
            let client = Client::new(m, "mallory", "whatever");
            let mut server = ScramServer::new(m);
            // The first step succeeds and looks like a real user's.
            let server_first = challenge(server.step(&client.first(), &store).unwrap());
            let text = std::str::from_utf8(&server_first).unwrap().to_string();
            assert!(text.ends_with(",i=4096"));
            let salt = text.split(",s=").nth(1).unwrap().split(',').next().unwrap();
            assert_eq!(BASE64.decode(salt).unwrap().len(), 32);
            let (last, _) = client.last(&server_first);
            let unknown = server.step(&last, &store).unwrap_err();
            let wrong = exchange(m, &store, "bob", "wrong").unwrap_err();
            assert_eq!(unknown.to_string(), wrong.to_string());
            assert!(matches!(unknown, Error::AuthenticationFailed(_)));
        }
    }

    #[test]
    fn decoy_salt_is_stable_per_user() {
        let store = Store::default();
        let salt_of = |m: ScramMechanism, user: &str| {
            let first = format!("n,,n={user},r=abc");
            let reply = challenge(ScramServer::new(m).step(first.as_bytes(), &store).unwrap());
            let reply = String::from_utf8(reply).unwrap();
            reply.split(",s=").nth(1).unwrap().to_string()
        };
        let m = ScramMechanism::Sha256;
        assert_eq!(salt_of(m, "ghost"), salt_of(m, "ghost"));
        assert_ne!(salt_of(m, "ghost"), salt_of(m, "phantom"));
        assert_ne!(
            salt_of(m, "ghost"),
            salt_of(ScramMechanism::Sha512, "ghost")
        );
    }

    #[test]
    fn unusable_stored_credential_fails_like_a_wrong_password() {
        let m = ScramMechanism::Sha256;
        let mut weak = ScramCredential::from_password(m, "pw", 4096).unwrap();
        weak.iterations = 1000;
        let store = Store::default().with("bob", weak);
        let err = exchange(m, &store, "bob", "pw").unwrap_err();
        assert_eq!(err.to_string(), invalid_credentials(m.name()).to_string());
    }

    #[test]
    fn messages_out_of_order_or_replayed_fail() {
        let m = ScramMechanism::Sha256;
        let store = store(m, "bob", "pw");
        let client = Client::new(m, "bob", "pw");

        // A client-final first.
        let mut server = ScramServer::new(m);
        let first = challenge(ScramServer::new(m).step(&client.first(), &store).unwrap());
        let (last, _) = client.last(&first);
        assert!(server.step(&last, &store).is_err());
        // The server has failed for good: even a proper client-first is refused now.
        assert!(server.step(&client.first(), &store).is_err());

        // A client-first twice.
        let mut server = ScramServer::new(m);
        server.step(&client.first(), &store).unwrap();
        assert!(server.step(&client.first(), &store).is_err());

        // A finished exchange takes nothing more.
        let mut server = ScramServer::new(m);
        let first = challenge(server.step(&client.first(), &store).unwrap());
        let (last, _) = client.last(&first);
        assert!(matches!(server.step(&last, &store), Ok(Step::Done { .. })));
        assert!(server.step(&last, &store).is_err());
        assert!(server.step(&client.first(), &store).is_err());

        // A recorded client-final replayed into a new exchange: the nonce differs.
        let mut server = ScramServer::new(m);
        server.step(&client.first(), &store).unwrap();
        assert!(matches!(
            server.step(&last, &store),
            Err(Error::Malformed(_))
        ));
    }

    #[test]
    fn client_first_refusals() {
        let m = ScramMechanism::Sha256;
        let store = store(m, "bob", "pw");
        let step = |token: &str| ScramServer::new(m).step(token.as_bytes(), &store);
        assert!(matches!(step("y,,n=bob,r=abc"), Err(Error::Unsupported(_))));
        assert!(matches!(
            step("p=tls-unique,,n=bob,r=abc"),
            Err(Error::Unsupported(_))
        ));
        assert!(matches!(
            step("n,,n=bob,r=abc,tokenauth=true"),
            Err(Error::Unsupported(_))
        ));
        assert!(matches!(
            step("n,,n=bob,r=abc,tokenauth=TRUE"),
            Err(Error::Unsupported(_))
        ));
        assert!(matches!(
            step("n,,m=ext,n=bob,r=abc"),
            Err(Error::Unsupported(_))
        ));
        let mismatch = step("n,a=alice,n=bob,r=abc").unwrap_err();
        assert_eq!(mismatch.to_string(), authzid_mismatch().to_string());
        for bad in [
            "",
            "n",
            "n,",
            "n,,",
            "x,,n=bob,r=abc",
            "n,,r=abc,n=bob",
            "n,,n=bob",
            "n,,n=bob,r=",
            "n,,n=,r=abc",
            "n,,n=b=ob,r=abc",
            "n,,n=b=2c,r=abc",
            "n,,n=bob=2,r=abc",
            "n,,n=bob,r=a b",
            "n,,n=bob,r=abc,=x",
            "n,,n=bob,r=abc,1=x",
            "n,,n=bob,r=abc,x=",
            "n,,n=bob,r=abc,x",
            "n,b=bob,n=bob,r=abc",
            "n,a=,n=bob,r=abc",
            "n,,n=bo\0b,r=abc",
        ] {
            assert!(
                matches!(step(bad), Err(Error::Malformed(_))),
                "{bad:?} gave {:?}",
                step(bad)
            );
        }
        assert!(matches!(
            ScramServer::new(m).step(b"n,,n=\xff,r=abc", &store),
            Err(Error::Malformed(_))
        ));
    }

    #[test]
    fn saslname_unescaping() {
        assert_eq!(unescape_saslname("a=2Cb=3Dc").unwrap(), "a,b=c");
        assert_eq!(unescape_saslname("=3D=2C").unwrap(), "=,");
        assert!(unescape_saslname("a=").is_err());
        assert!(unescape_saslname("a=3").is_err());
        assert!(unescape_saslname("a=3d").is_err());
        assert!(unescape_saslname("a=é").is_err());
        assert!(unescape_saslname("").is_err());
        let first = parse_client_first(b"n,a=x=2Cy,n=x=2Cy,r=n0nce,ext=1").unwrap();
        assert_eq!(first.gs2_header, "n,a=x=2Cy,");
        assert_eq!(first.authzid.as_deref(), Some("x,y"));
        assert_eq!(first.user, "x,y");
        assert_eq!(first.nonce, "n0nce");
        assert_eq!(first.bare, "n=x=2Cy,r=n0nce,ext=1");
        assert!(!first.token_auth);
    }

    #[test]
    fn client_final_refusals() {
        let m = ScramMechanism::Sha256;
        let store = store(m, "bob", "pw");
        let client = Client::new(m, "bob", "pw");
        let started = || {
            let mut server = ScramServer::with_nonce(m, "SRV");
            server.step(&client.first(), &store).unwrap();
            server
        };
        let nonce = "fyko+d2lbbFgONRv9qkxdawLSRV";
        let proof = BASE64.encode([0u8; 32]);
        // The channel binding must be the GS2 header the client sent (`n,,` is "biws").
        let other_header = BASE64.encode("n,a=bob,");
        for bad in [
            format!("c={other_header},r={nonce},p={proof}"),
            format!("c=biws,r={nonce}x,p={proof}"),
            format!("c=biws,r={nonce},p={}", BASE64.encode([0u8; 31])),
            format!("c=biws,r={nonce},p=not base64"),
            format!("c=biws,r={nonce},p=AAAA="),
            format!("c=biws,r={nonce}"),
            format!("r={nonce},c=biws,p={proof}"),
            format!("c=biws,p={proof}"),
            format!("c=bi!s,r={nonce},p={proof}"),
            format!("c=biws,r={nonce},=1,p={proof}"),
            String::new(),
        ] {
            let got = started().step(bad.as_bytes(), &store);
            assert!(
                matches!(got, Err(Error::Malformed(_))),
                "{bad:?} gave {got:?}"
            );
            // Nothing of the proof is echoed.
            if let Err(e) = got {
                assert!(!e.to_string().contains(&proof));
            }
        }
        // Well formed but the wrong proof.
        let got = started().step(format!("c=biws,r={nonce},p={proof}").as_bytes(), &store);
        assert!(matches!(got, Err(Error::AuthenticationFailed(_))));
    }

    #[test]
    fn from_salted_password_equals_with_salt() {
        for m in ScramMechanism::ALL {
            let salt = b"some salt bytes";
            let mut salted = vec![0u8; m.digest_len()];
            pbkdf2::derive(
                m.pbkdf2_algorithm(),
                NonZeroU32::new(8192).unwrap(),
                salt,
                b"hunter2",
                &mut salted,
            );
            let a = ScramCredential::from_salted_password(m, salt, 8192, &salted).unwrap();
            let b = ScramCredential::with_salt(m, "hunter2", salt, 8192).unwrap();
            assert_eq!(a, b);
            assert!(a.verify_password("hunter2"));
            assert!(!a.verify_password("hunter3"));
            assert!(!a.verify_password(""));
        }
    }

    #[test]
    fn credential_checks() {
        let m = ScramMechanism::Sha256;
        let salted = [0u8; 32];
        assert!(ScramCredential::from_salted_password(m, b"s", 4095, &salted).is_err());
        assert!(ScramCredential::from_salted_password(m, b"s", 16385, &salted).is_err());
        assert!(ScramCredential::from_salted_password(m, b"s", 0, &salted).is_err());
        assert!(ScramCredential::from_salted_password(m, b"s", 4096, &salted).is_ok());
        assert!(ScramCredential::from_salted_password(m, b"s", 16384, &salted).is_ok());
        assert!(ScramCredential::from_salted_password(m, b"s", 4096, &salted[..31]).is_err());
        assert!(
            ScramCredential::from_salted_password(ScramMechanism::Sha512, b"s", 4096, &salted)
                .is_err()
        );
        assert!(ScramCredential::from_password(m, "pw", 100).is_err());
        let c = ScramCredential::from_password(m, "pw", 4096).unwrap();
        assert_eq!(c.salt.len(), 32);
        assert_eq!(c.stored_key.len(), 32);
        assert_eq!(c.server_key.len(), 32);
        assert_ne!(
            c.salt,
            ScramCredential::from_password(m, "pw", 4096).unwrap().salt
        );
        // An empty password and salt still derive (Kafka allows both).
        let empty = ScramCredential::with_salt(m, "", b"", 4096).unwrap();
        assert!(empty.verify_password(""));
        // A stored credential outside the range never verifies.
        let mut odd = c.clone();
        odd.iterations = 0;
        assert!(!odd.verify_password("pw"));
        // Debug output hides the secrets.
        let shown = format!("{c:?}");
        assert!(shown.contains("[hidden]") && !shown.contains(&format!("{:?}", c.stored_key)));
    }

    #[test]
    fn credential_json_round_trip() {
        let c = ScramCredential::with_salt(ScramMechanism::Sha512, "pw", b"salt", 4096).unwrap();
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["mechanism"], "SCRAM-SHA-512");
        assert_eq!(json["salt"], BASE64.encode(b"salt"));
        assert_eq!(json["iterations"], 4096);
        assert_eq!(json["stored_key"], BASE64.encode(&c.stored_key));
        assert_eq!(json["server_key"], BASE64.encode(&c.server_key));
        let back: ScramCredential = serde_json::from_value(json).unwrap();
        assert_eq!(back, c);
        let text = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<ScramCredential>(&text).unwrap(), c);
        assert!(serde_json::from_str::<ScramCredential>(
            r#"{"mechanism":"SCRAM-SHA-512","salt":"!!","iterations":4096,"stored_key":"","server_key":""}"#
        )
        .is_err());
    }

    proptest! {
        #[test]
        fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse_client_first(&bytes);
            let _ = parse_client_final(&bytes);
            if let Ok(text) = std::str::from_utf8(&bytes) {
                let _ = unescape_saslname(text);
                let _ = check_nonce(text);
                let _ = parse_extension(text);
            }
        }

        #[test]
        fn parsers_never_panic_on_near_misses(
            head in "[nyp]?(=[a-z-]*)?,(a=)?[a-z=23CD,]{0,8}",
            tail in "[a-zA-Z0-9=,+/ ]{0,40}",
        ) {
            let _ = parse_client_first(format!("{head},n={tail}").as_bytes());
            let _ = parse_client_final(format!("c={tail},p={head}").as_bytes());
        }

        #[test]
        fn steps_never_panic(
            first in proptest::collection::vec(any::<u8>(), 0..128),
            second in proptest::collection::vec(any::<u8>(), 0..128),
            suffix in "[a-zA-Z0-9=,+/]{0,60}",
        ) {
            let store = Store::default();
            let m = ScramMechanism::Sha256;
            let mut server = ScramServer::new(m);
            let _ = server.step(&first, &store);
            let _ = server.step(&second, &store);
            let _ = server.step(&second, &store);
            // A valid first message, then arbitrary final messages.
            let mut server = ScramServer::with_nonce(m, "s");
            prop_assert!(server.step(b"n,,n=u,r=c", &store).is_ok());
            let _ = server.step(format!("c=biws,r=cs,{suffix}").as_bytes(), &store);
            let mut server = ScramServer::with_nonce(m, "s");
            prop_assert!(server.step(b"n,,n=u,r=c", &store).is_ok());
            let _ = server.step(&second, &store);
        }
    }
}
