//! SASL OAUTHBEARER (RFC 7628) on the broker side, as Apache Kafka does it with KIP-768:
//! the client's first message carries a JWT access token, which is checked against a JSON
//! Web Key Set (signature, expiry, issuer, audience), and a claim of the token names the
//! principal. Fetching and refreshing the JWKS (`sasl.oauthbearer.jwks.endpoint.url`) is the
//! node's job; this module only parses the document it fetched.

use std::collections::BTreeMap;

use aws_lc_rs::signature::{
    self, ParsedPublicKey, RsaParameters, RsaPublicKeyComponents, UnparsedPublicKey,
    VerificationAlgorithm,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{Map, Value};

use crate::{Error, Result, Step};

/// Longest access token accepted; a longer one is refused before any decoding.
pub const MAX_TOKEN_LEN: usize = 64 * 1024;

/// Longest client first message accepted: a maximal token plus room for extensions.
pub const MAX_CLIENT_INITIAL_LEN: usize = MAX_TOKEN_LEN + 8 * 1024;

/// Largest JWKS document accepted; real ones are a few kilobytes.
pub const MAX_JWKS_LEN: usize = 1024 * 1024;

/// The challenge sent for a refused token: Kafka's validator sends exactly this RFC 7628
/// error status, with neither `scope` nor `openid-configuration`.
pub const INVALID_TOKEN_CHALLENGE: &[u8] = br#"{"status":"invalid_token"}"#;

/// RFC 7628's key/value separator, also the client's whole answer to an error challenge.
const SEPARATOR: u8 = 0x01;

/// How much of a client-chosen string (a `kid`, an `alg`) an error message repeats.
const ECHO_LIMIT: usize = 64;

/// The client's first message: GS2 header, then \x01-separated key=value pairs, auth=Bearer <token> required.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInitial {
    /// The authorization identity of the GS2 header (`a=`), with `=2C`/`=3D` decoded.
    pub authzid: Option<String>,
    /// The bearer token of the `auth` pair.
    pub token: String,
    /// Every other key=value pair (SASL extensions, KIP-342).
    pub extensions: BTreeMap<String, String>,
}

/// Parses the client's first message with Kafka's grammar:
/// `n,[a=saslname],\x01(key=value\x01)*\x01`, where `auth=Bearer <b64token>` is required.
pub fn parse_client_initial(msg: &[u8]) -> Result<ClientInitial> {
    if msg.len() > MAX_CLIENT_INITIAL_LEN {
        return Err(malformed(format!(
            "message is {} bytes, over the {MAX_CLIENT_INITIAL_LEN}-byte limit",
            msg.len()
        )));
    }
    let rest = match msg {
        [b'n', b',', rest @ ..] => rest,
        // Kafka's grammar only admits "n": OAUTHBEARER offers no channel binding.
        [b'y', b',', ..] | [b'p', b'=', ..] => {
            return Err(Error::Unsupported(
                "channel binding with OAUTHBEARER (the GS2 flag must be \"n\")".into(),
            ))
        }
        _ => return Err(malformed("the GS2 header must start with \"n,\"")),
    };
    let (authzid, rest) = split_authzid(rest)?;
    let pairs = rest
        .strip_prefix(&[SEPARATOR])
        .ok_or_else(|| malformed("the GS2 header must be followed by %x01"))?
        .strip_suffix(&[SEPARATOR])
        .ok_or_else(|| malformed("the message must end with %x01"))?;

    let mut token = None;
    let mut extensions = BTreeMap::new();
    if !pairs.is_empty() {
        let body = pairs
            .strip_suffix(&[SEPARATOR])
            .ok_or_else(|| malformed("every key=value pair must end with %x01"))?;
        for pair in body.split(|&b| b == SEPARATOR) {
            let (key, value) = parse_pair(pair)?;
            // Kafka keeps the last of repeated keys; refusing them leaves no doubt about
            // which token or extension value was meant.
            if key == "auth" {
                if token.replace(parse_auth(&value)?).is_some() {
                    return Err(malformed("'auth' given twice"));
                }
            } else if extensions.insert(key, value).is_some() {
                return Err(malformed("an extension is given twice"));
            }
        }
    }
    let token = token.ok_or_else(|| malformed("'auth' not specified"))?;
    Ok(ClientInitial {
        authzid,
        token,
        extensions,
    })
}

/// Splits `[a=saslname],` off the GS2 header, decoding the saslname.
fn split_authzid(rest: &[u8]) -> Result<(Option<String>, &[u8])> {
    if let Some(after) = rest.strip_prefix(b"a=") {
        let comma = after
            .iter()
            .position(|&b| b == b',')
            .ok_or_else(|| malformed("the authorization id must end with ','"))?;
        let (raw, tail) = after.split_at(comma);
        let tail = tail.get(1..).unwrap_or_default();
        Ok((Some(decode_saslname(raw)?), tail))
    } else if let Some(tail) = rest.strip_prefix(b",") {
        Ok((None, tail))
    } else {
        Err(malformed("expected \"a=<authzid>,\" or \",\" after \"n,\""))
    }
}

/// Decodes an RFC 5801 saslname: bytes 0x01-0x7F, with ',' and '=' written `=2C` and `=3D`.
fn decode_saslname(raw: &[u8]) -> Result<String> {
    if raw.is_empty() {
        return Err(malformed("the authorization id is empty"));
    }
    let mut name = String::with_capacity(raw.len());
    let mut bytes = raw.iter();
    while let Some(&b) = bytes.next() {
        match b {
            b'=' => match (bytes.next(), bytes.next()) {
                (Some(b'2'), Some(b'C')) => name.push(','),
                (Some(b'3'), Some(b'D')) => name.push('='),
                _ => {
                    return Err(malformed(
                        "the authorization id has an '=' other than =2C or =3D",
                    ))
                }
            },
            0x01..=0x7f => name.push(char::from(b)),
            _ => {
                return Err(malformed(
                    "the authorization id has a byte outside 0x01-0x7F",
                ))
            }
        }
    }
    Ok(name)
}

/// Parses one `key=value` pair: key `[A-Za-z]+`, value `[\x21-\x7E \t\r\n]+` (Kafka's sets).
fn parse_pair(pair: &[u8]) -> Result<(String, String)> {
    let eq = pair
        .iter()
        .position(|&b| b == b'=')
        .ok_or_else(|| malformed("a key=value pair has no '='"))?;
    let (key, value) = pair.split_at(eq);
    let value = value.get(1..).unwrap_or_default();
    if key.is_empty() || !key.iter().all(u8::is_ascii_alphabetic) {
        return Err(malformed("a key must be one or more ASCII letters"));
    }
    let value_byte = |b: &u8| matches!(b, 0x21..=0x7e | b' ' | b'\t' | b'\r' | b'\n');
    if value.is_empty() || !value.iter().all(value_byte) {
        return Err(malformed(
            "a value must be one or more printable ASCII characters, spaces or tabs",
        ));
    }
    Ok((ascii_string(key), ascii_string(value)))
}

/// Parses the `auth` value: `<scheme> <b64token>` with scheme "Bearer" in any case and the
/// RFC 6750 token characters `[-._~+/A-Za-z0-9]+ =*`.
fn parse_auth(value: &str) -> Result<String> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let token = value.trim_start_matches(word);
    let scheme = value.get(..value.len() - token.len()).unwrap_or_default();
    let after_spaces = token.trim_start_matches(' ');
    if scheme.is_empty() || after_spaces.len() == token.len() {
        return Err(malformed(
            "invalid 'auth' format (expected \"Bearer <token>\")",
        ));
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(malformed("the 'auth' scheme must be Bearer"));
    }
    let token = after_spaces;
    let body = token.trim_end_matches('=');
    let token_char =
        |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~' | '+' | '/');
    if body.is_empty() || !body.chars().all(token_char) {
        return Err(malformed(
            "the bearer token has characters outside RFC 6750's b64token",
        ));
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(malformed(format!(
            "the bearer token is over the {MAX_TOKEN_LEN}-byte limit"
        )));
    }
    Ok(token.to_owned())
}

/// Builds a String from bytes already checked to be ASCII.
fn ascii_string(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

fn malformed(what: impl std::fmt::Display) -> Error {
    Error::Malformed(format!("OAUTHBEARER client first message: {what}"))
}

/// How tokens are checked, after the broker configs `sasl.oauthbearer.*`.
#[derive(Debug, Clone)]
pub struct ValidatorOptions {
    /// `sasl.oauthbearer.expected.issuer`: when set, `iss` must equal it.
    pub issuer: Option<String>,
    /// `sasl.oauthbearer.expected.audience`: empty = not checked; else token's aud (string or array) must contain one.
    pub audience: Vec<String>,
    /// `sasl.oauthbearer.sub.claim.name`: the claim naming the principal (default "sub").
    pub principal_claim: String,
    /// `sasl.oauthbearer.scope.claim.name`: the claim listing scopes (default "scope").
    pub scope_claim: String,
    /// `sasl.oauthbearer.clock.skew.seconds`: tolerance on exp, nbf and iat (default 30).
    pub clock_skew_s: i64,
}

impl Default for ValidatorOptions {
    fn default() -> Self {
        Self {
            issuer: None,
            audience: Vec::new(),
            principal_claim: "sub".into(),
            scope_claim: "scope".into(),
            clock_skew_s: 30,
        }
    }
}

/// What a valid token says about its bearer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedToken {
    /// The principal claim's value, trimmed (the principal is `User:{principal}`).
    pub principal: String,
    /// `exp` in milliseconds since the epoch: the session must end then (KIP-368).
    pub expires_at_ms: i64,
    /// The scope claim's entries, in token order.
    pub scopes: Vec<String>,
    /// `iat` in milliseconds since the epoch, when present.
    pub issued_at_ms: Option<i64>,
}

/// A JWS signature algorithm this validator accepts. `none` and the HMAC family are
/// deliberately absent: a JWKS publishes public keys, never shared secrets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Alg {
    Rs256,
    Rs384,
    Rs512,
    Ps256,
    Ps384,
    Ps512,
    Es256,
    Es384,
}

impl Alg {
    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "RS256" => Self::Rs256,
            "RS384" => Self::Rs384,
            "RS512" => Self::Rs512,
            "PS256" => Self::Ps256,
            "PS384" => Self::Ps384,
            "PS512" => Self::Ps512,
            "ES256" => Self::Es256,
            "ES384" => Self::Es384,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Self::Rs256 => "RS256",
            Self::Rs384 => "RS384",
            Self::Rs512 => "RS512",
            Self::Ps256 => "PS256",
            Self::Ps384 => "PS384",
            Self::Ps512 => "PS512",
            Self::Es256 => "ES256",
            Self::Es384 => "ES384",
        }
    }

    /// The RSA verification parameters, for the RSA algorithms.
    fn rsa_params(self) -> Option<&'static RsaParameters> {
        match self {
            Self::Rs256 => Some(&signature::RSA_PKCS1_2048_8192_SHA256),
            Self::Rs384 => Some(&signature::RSA_PKCS1_2048_8192_SHA384),
            Self::Rs512 => Some(&signature::RSA_PKCS1_2048_8192_SHA512),
            Self::Ps256 => Some(&signature::RSA_PSS_2048_8192_SHA256),
            Self::Ps384 => Some(&signature::RSA_PSS_2048_8192_SHA384),
            Self::Ps512 => Some(&signature::RSA_PSS_2048_8192_SHA512),
            Self::Es256 | Self::Es384 => None,
        }
    }

    /// The curve, for the ECDSA algorithms (JWA ties each to one curve).
    fn curve(self) -> Option<Curve> {
        match self {
            Self::Es256 => Some(Curve::P256),
            Self::Es384 => Some(Curve::P384),
            _ => None,
        }
    }
}

/// An elliptic curve a JWK may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Curve {
    P256,
    P384,
}

impl Curve {
    fn from_name(name: &str) -> Option<Self> {
        match name {
            "P-256" => Some(Self::P256),
            "P-384" => Some(Self::P384),
            _ => None,
        }
    }

    /// Length of each coordinate, which RFC 7518 requires at full width.
    fn coordinate_len(self) -> usize {
        match self {
            Self::P256 => 32,
            Self::P384 => 48,
        }
    }

    /// JWS ECDSA signatures are r||s of fixed width, not DER.
    fn verification(self) -> &'static dyn VerificationAlgorithm {
        match self {
            Self::P256 => &signature::ECDSA_P256_SHA256_FIXED,
            Self::P384 => &signature::ECDSA_P384_SHA384_FIXED,
        }
    }
}

/// The public part of one usable JWK.
#[derive(Debug, Clone)]
enum KeyMaterial {
    /// Modulus and exponent, big-endian without leading zeros.
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// The uncompressed point 0x04||x||y.
    Ec { curve: Curve, point: Vec<u8> },
}

/// One usable signing key of the JWKS.
#[derive(Debug, Clone)]
struct Jwk {
    kid: Option<String>,
    /// When the JWK names an `alg`, the key may only verify that one.
    alg: Option<Alg>,
    material: KeyMaterial,
}

impl Jwk {
    /// Whether this key may verify a signature made with `alg`.
    fn fits(&self, alg: Alg) -> bool {
        if self.alg.is_some_and(|own| own != alg) {
            return false;
        }
        match (&self.material, alg.curve()) {
            (KeyMaterial::Rsa { .. }, None) => true,
            (KeyMaterial::Ec { curve, .. }, Some(wanted)) => *curve == wanted,
            _ => false,
        }
    }

    fn verifies(&self, alg: Alg, message: &[u8], sig: &[u8]) -> bool {
        match &self.material {
            KeyMaterial::Rsa { n, e } => alg.rsa_params().is_some_and(|params| {
                RsaPublicKeyComponents {
                    n: n.as_slice(),
                    e: e.as_slice(),
                }
                .verify(params, message, sig)
                .is_ok()
            }),
            KeyMaterial::Ec { curve, point } => {
                alg.curve() == Some(*curve)
                    && UnparsedPublicKey::new(curve.verification(), point)
                        .verify(message, sig)
                        .is_ok()
            }
        }
    }
}

/// Checks JWT access tokens against a JSON Web Key Set, as Kafka's
/// `OAuthBearerValidatorCallbackHandler` with `ValidatorAccessTokenValidator` does.
#[derive(Debug, Clone)]
pub struct JwtValidator {
    keys: Vec<Jwk>,
    options: ValidatorOptions,
}

impl JwtValidator {
    /// Loads the RSA and EC (P-256, P-384) signing keys of a JWKS document; other keys are skipped.
    pub fn from_jwks(jwks_json: &[u8], options: ValidatorOptions) -> Result<Self> {
        if jwks_json.len() > MAX_JWKS_LEN {
            return Err(Error::InvalidJwks(format!(
                "document is {} bytes, over the {MAX_JWKS_LEN}-byte limit",
                jwks_json.len()
            )));
        }
        let doc: Value = serde_json::from_slice(jwks_json)
            .map_err(|e| Error::InvalidJwks(format!("not JSON: {e}")))?;
        let entries = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| Error::InvalidJwks("expected an object with a \"keys\" array".into()))?;
        let mut keys = Vec::new();
        for (index, entry) in entries.iter().enumerate() {
            match parse_jwk(entry) {
                Ok(Some(jwk)) => keys.push(jwk),
                Ok(None) => {}
                // One broken key should not lock every client out; the others still work.
                Err(reason) => tracing::warn!(index, %reason, "skipping unusable JWK"),
            }
        }
        if keys.is_empty() {
            return Err(Error::InvalidJwks(
                "no usable signing key (RSA, or EC on P-256 or P-384)".into(),
            ));
        }
        Ok(Self { keys, options })
    }

    /// Whether a key with this `kid` was loaded, so the node can refresh the JWKS when a
    /// token names a key it does not know yet (as Kafka's refreshing resolver does).
    pub fn has_key_id(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }

    /// The options tokens are checked with.
    pub fn options(&self) -> &ValidatorOptions {
        &self.options
    }

    /// Verifies the token's signature, then its claims at `now_ms`; the error says which check failed.
    pub fn validate(&self, token: &str, now_ms: i64) -> Result<ValidatedToken> {
        // Kafka trims the serialized JWT before splitting it.
        let token = token.trim();
        if token.len() > MAX_TOKEN_LEN {
            return Err(invalid(format!(
                "token is {} bytes, over the {MAX_TOKEN_LEN}-byte limit",
                token.len()
            )));
        }
        let mut sections = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(sig_b64), None) = (
            sections.next(),
            sections.next(),
            sections.next(),
            sections.next(),
        ) else {
            return Err(invalid(
                "expected three base64url sections (header.payload.signature)",
            ));
        };
        let header = decode_json_object(header_b64, "header")?;
        let alg = header_alg(&header)?;
        if header.contains_key("crit") {
            return Err(invalid(
                "header lists critical extensions (crit), none of which are supported",
            ));
        }
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(kid)) => Some(kid.as_str()),
            Some(_) => return Err(invalid("header kid is not a string")),
        };
        // Checked after alg so that an unsigned "alg":"none" token is named as such.
        if sig_b64.is_empty() {
            return Err(invalid("signature section is empty"));
        }
        let sig = decode_b64(sig_b64, "signature")?;
        let signed_len = header_b64.len() + 1 + payload_b64.len();
        let signing_input = token
            .as_bytes()
            .get(..signed_len)
            .ok_or_else(|| invalid("token sections are inconsistent"))?;
        self.verify_signature(alg, kid, signing_input, &sig)?;
        // Claims are only read once the signature shows who wrote them.
        let claims = decode_json_object(payload_b64, "payload")?;
        self.check_claims(&claims, now_ms)
    }

    fn verify_signature(
        &self,
        alg: Alg,
        kid: Option<&str>,
        message: &[u8],
        sig: &[u8],
    ) -> Result<()> {
        let candidates: Vec<&Jwk> = match kid {
            Some(kid) => {
                let named: Vec<&Jwk> = self
                    .keys
                    .iter()
                    .filter(|k| k.kid.as_deref() == Some(kid))
                    .collect();
                if named.is_empty() {
                    return Err(invalid(format!(
                        "no key with kid {} in the JWKS",
                        echo(kid)
                    )));
                }
                let fitting: Vec<&Jwk> = named.into_iter().filter(|k| k.fits(alg)).collect();
                if fitting.is_empty() {
                    return Err(invalid(format!(
                        "key {} does not fit alg {}",
                        echo(kid),
                        alg.name()
                    )));
                }
                fitting
            }
            None => {
                let fitting: Vec<&Jwk> = self.keys.iter().filter(|k| k.fits(alg)).collect();
                match fitting.len() {
                    0 => {
                        return Err(invalid(format!(
                            "no key in the JWKS fits alg {}",
                            alg.name()
                        )))
                    }
                    1 => fitting,
                    n => {
                        return Err(invalid(format!(
                            "token has no kid and {n} keys fit alg {}",
                            alg.name()
                        )))
                    }
                }
            }
        };
        if candidates.iter().any(|k| k.verifies(alg, message, sig)) {
            Ok(())
        } else {
            Err(invalid("signature does not verify"))
        }
    }

    fn check_claims(&self, claims: &Map<String, Value>, now_ms: i64) -> Result<ValidatedToken> {
        let options = &self.options;
        let skew_ms = options.clock_skew_s.max(0).saturating_mul(1000);
        let latest_start = now_ms.saturating_add(skew_ms);

        let exp_ms = numeric_date(claims, "exp")?.ok_or_else(|| invalid("exp claim missing"))?;
        if now_ms > exp_ms.saturating_add(skew_ms) {
            return Err(invalid(format!(
                "token expired (exp {exp_ms} ms, now {now_ms} ms, clock skew {} s)",
                options.clock_skew_s
            )));
        }
        if let Some(nbf_ms) = numeric_date(claims, "nbf")? {
            if nbf_ms > latest_start {
                return Err(invalid(format!(
                    "token not valid yet (nbf {nbf_ms} ms, now {now_ms} ms, clock skew {} s)",
                    options.clock_skew_s
                )));
            }
        }
        let issued_at_ms = numeric_date(claims, "iat")?;
        if let Some(iat_ms) = issued_at_ms {
            if iat_ms > latest_start {
                return Err(invalid(format!(
                    "token issued in the future (iat {iat_ms} ms, now {now_ms} ms, clock skew {} s)",
                    options.clock_skew_s
                )));
            }
        }
        if let Some(expected) = &options.issuer {
            match claims.get("iss") {
                Some(Value::String(iss)) if iss == expected => {}
                Some(Value::String(_)) => {
                    return Err(invalid("iss claim is not the expected issuer"))
                }
                Some(_) => return Err(invalid("iss claim is not a string")),
                None => return Err(invalid("iss claim missing")),
            }
        }
        if !options.audience.is_empty() {
            check_audience(claims, &options.audience)?;
        }
        let principal = principal(claims, &options.principal_claim)?;
        let scopes = scopes(claims, &options.scope_claim)?;
        Ok(ValidatedToken {
            principal,
            expires_at_ms: exp_ms,
            scopes,
            issued_at_ms,
        })
    }
}

/// Reads one JWK; `Ok(None)` for keys skipped on purpose (not for signing, or of a type
/// this validator does not use), `Err` for keys that claim to be usable but are broken.
fn parse_jwk(entry: &Value) -> std::result::Result<Option<Jwk>, String> {
    let obj = entry.as_object().ok_or("not a JSON object")?;
    let kid = match obj.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err("kid is not a string".into()),
    };
    if let Some(usage) = obj.get("use") {
        if usage != "sig" {
            tracing::debug!(?kid, %usage, "skipping JWK not meant for signatures");
            return Ok(None);
        }
    }
    if let Some(ops) = obj.get("key_ops").and_then(Value::as_array) {
        if !ops.iter().any(|op| op == "verify") {
            tracing::debug!(?kid, "skipping JWK whose key_ops exclude verify");
            return Ok(None);
        }
    }
    let alg = match obj.get("alg") {
        None => None,
        Some(Value::String(name)) => match Alg::from_name(name) {
            Some(alg) => Some(alg),
            None => {
                tracing::debug!(?kid, alg = %name, "skipping JWK for an unsupported alg");
                return Ok(None);
            }
        },
        Some(_) => return Err("alg is not a string".into()),
    };
    let kty = obj
        .get("kty")
        .and_then(Value::as_str)
        .ok_or("kty missing")?;
    let material = match kty {
        "RSA" => {
            let n = strip_leading_zeros(jwk_bytes(obj, "n")?);
            let e = strip_leading_zeros(jwk_bytes(obj, "e")?);
            let bits = bit_len(&n);
            if !(2048..=8192).contains(&bits) {
                return Err(format!("RSA modulus of {bits} bits is outside 2048..=8192"));
            }
            RsaPublicKeyComponents {
                n: n.as_slice(),
                e: e.as_slice(),
            }
            .to_parsed_public_key(&signature::RSA_PKCS1_2048_8192_SHA256)
            .map_err(|e| format!("RSA key rejected: {e}"))?;
            KeyMaterial::Rsa { n, e }
        }
        "EC" => {
            let crv = obj
                .get("crv")
                .and_then(Value::as_str)
                .ok_or("crv missing")?;
            let Some(curve) = Curve::from_name(crv) else {
                tracing::debug!(?kid, %crv, "skipping EC JWK on an unsupported curve");
                return Ok(None);
            };
            let x = jwk_bytes(obj, "x")?;
            let y = jwk_bytes(obj, "y")?;
            let width = curve.coordinate_len();
            if x.len() != width || y.len() != width {
                return Err(format!("{crv} coordinates must be {width} bytes each"));
            }
            let mut point = Vec::with_capacity(1 + 2 * width);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            ParsedPublicKey::new(curve.verification(), &point)
                .map_err(|e| format!("EC point rejected: {e}"))?;
            KeyMaterial::Ec { curve, point }
        }
        other => {
            tracing::debug!(?kid, kty = %other, "skipping JWK of an unsupported kty");
            return Ok(None);
        }
    };
    let jwk = Jwk { kid, alg, material };
    if let Some(alg) = alg {
        if !jwk.fits(alg) {
            return Err(format!("alg {} does not suit a {kty} key", alg.name()));
        }
    }
    Ok(Some(jwk))
}

/// A base64url member of a JWK; padding is tolerated since the JWKS is trusted config.
fn jwk_bytes(obj: &Map<String, Value>, name: &str) -> std::result::Result<Vec<u8>, String> {
    let text = obj
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{name} missing"))?;
    URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .map_err(|_| format!("{name} is not base64url"))
}

fn strip_leading_zeros(mut bytes: Vec<u8>) -> Vec<u8> {
    let zeros = bytes.iter().take_while(|&&b| b == 0).count();
    bytes.drain(..zeros);
    bytes
}

/// Bit length of a big-endian number without leading zero bytes.
fn bit_len(bytes: &[u8]) -> usize {
    match bytes.first() {
        None => 0,
        Some(&top) => (bytes.len() - 1) * 8 + (8 - top.leading_zeros() as usize),
    }
}

/// The header's `alg`, refusing `none` and HMAC by name so the error says why.
fn header_alg(header: &Map<String, Value>) -> Result<Alg> {
    let name = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("header has no alg"))?;
    if let Some(alg) = Alg::from_name(name) {
        return Ok(alg);
    }
    if name.eq_ignore_ascii_case("none") {
        Err(invalid("alg none refused: the token is unsigned"))
    } else if name.starts_with("HS") {
        Err(invalid(format!(
            "alg {} refused: HMAC needs a shared secret, the JWKS holds public keys",
            echo(name)
        )))
    } else {
        Err(invalid(format!("alg {} is not supported", echo(name))))
    }
}

/// Base64url without padding, as JWS compact serialization requires; the decoder also
/// refuses non-zero trailing bits, so one signature has one spelling.
fn decode_b64(section: &str, what: &str) -> Result<Vec<u8>> {
    URL_SAFE_NO_PAD
        .decode(section)
        .map_err(|_| invalid(format!("{what} is not base64url without padding")))
}

fn decode_json_object(section: &str, what: &str) -> Result<Map<String, Value>> {
    if section.is_empty() {
        return Err(invalid(format!("{what} section is empty")));
    }
    let bytes = decode_b64(section, what)?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(invalid(format!("{what} is not a JSON object"))),
        Err(_) => Err(invalid(format!("{what} is not valid JSON"))),
    }
}

/// A NumericDate claim (seconds, possibly fractional) in milliseconds; negative values
/// are refused as Kafka does.
fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<i64>> {
    let Some(value) = claims.get(name) else {
        return Ok(None);
    };
    let Value::Number(number) = value else {
        return Err(invalid(format!("{name} claim is not a number")));
    };
    let ms = if let Some(secs) = number.as_i64() {
        secs.saturating_mul(1000)
    } else if number.as_u64().is_some() {
        i64::MAX
    } else {
        match number.as_f64() {
            // `as` saturates, which is what a date beyond i64 milliseconds should do.
            Some(secs) if secs.is_finite() => (secs * 1000.0) as i64,
            _ => return Err(invalid(format!("{name} claim is not a finite number"))),
        }
    };
    if ms < 0 {
        return Err(invalid(format!("{name} claim is negative")));
    }
    Ok(Some(ms))
}

fn check_audience(claims: &Map<String, Value>, expected: &[String]) -> Result<()> {
    let wanted = |aud: &str| expected.iter().any(|e| e == aud);
    let matches = match claims.get("aud") {
        None => return Err(invalid("aud claim missing")),
        Some(Value::String(aud)) => wanted(aud),
        Some(Value::Array(items)) => {
            let mut any = false;
            for item in items {
                let aud = item
                    .as_str()
                    .ok_or_else(|| invalid("aud claim array holds a non-string"))?;
                any |= wanted(aud);
            }
            any
        }
        Some(_) => return Err(invalid("aud claim is neither a string nor an array")),
    };
    if matches {
        Ok(())
    } else {
        Err(invalid("aud claim names none of the expected audiences"))
    }
}

/// Trims as Java's `String.trim` does (Kafka trims the subject), dropping chars <= ' '.
fn java_trim(s: &str) -> &str {
    s.trim_matches(|c: char| c <= ' ')
}

fn principal(claims: &Map<String, Value>, name: &str) -> Result<String> {
    let value = match claims.get(name) {
        Some(Value::String(value)) => java_trim(value),
        Some(_) => {
            return Err(invalid(format!(
                "principal claim {} is not a string",
                echo(name)
            )))
        }
        None => return Err(invalid(format!("principal claim {} missing", echo(name)))),
    };
    if value.is_empty() {
        return Err(invalid(format!("principal claim {} is empty", echo(name))));
    }
    Ok(value.to_owned())
}

/// The scope claim: a space-separated string (RFC 6749 section 3.3) or an array of strings;
/// absent or of another type means no scopes, as in Kafka.
fn scopes(claims: &Map<String, Value>, name: &str) -> Result<Vec<String>> {
    let raw: Vec<&str> = match claims.get(name) {
        Some(Value::String(scope)) => scope.split(' ').filter(|s| !s.is_empty()).collect(),
        Some(Value::Array(items)) => {
            let mut raw = Vec::with_capacity(items.len());
            for item in items {
                let scope = item.as_str().ok_or_else(|| {
                    invalid(format!("scope claim {} holds a non-string", echo(name)))
                })?;
                raw.push(scope);
            }
            raw
        }
        _ => Vec::new(),
    };
    let mut scopes: Vec<String> = Vec::with_capacity(raw.len());
    for scope in raw {
        let scope = java_trim(scope);
        if scope.is_empty() {
            return Err(invalid(format!(
                "scope claim {} has an empty entry",
                echo(name)
            )));
        }
        if scopes.iter().any(|s| s == scope) {
            return Err(invalid(format!(
                "scope claim {} repeats an entry",
                echo(name)
            )));
        }
        scopes.push(scope.to_owned());
    }
    Ok(scopes)
}

/// Quotes a client-chosen string for an error message, cut to a bounded length.
fn echo(s: &str) -> String {
    let cut: String = s.chars().take(ECHO_LIMIT).collect();
    if cut.len() < s.len() {
        format!("{cut:?}...")
    } else {
        format!("{cut:?}")
    }
}

fn invalid(what: impl Into<String>) -> Error {
    Error::InvalidToken(what.into())
}

/// Where the server is in the exchange.
#[derive(Debug, Default)]
enum ServerState {
    /// Waiting for the client's first message.
    #[default]
    AwaitingToken,
    /// The error challenge was sent; RFC 7628 has the client answer with a lone %x01.
    AwaitingErrorAck { reason: String },
    /// The client is authenticated.
    Done,
    /// The exchange failed; nothing more is accepted.
    Failed,
}

/// The server side of one SASL/OAUTHBEARER exchange, as Kafka's `OAuthBearerSaslServer`.
#[derive(Debug, Default)]
pub struct OAuthBearerServer {
    state: ServerState,
    extensions: BTreeMap<String, String>,
    token: Option<ValidatedToken>,
}

impl OAuthBearerServer {
    /// A server waiting for the client's first message.
    pub fn new() -> Self {
        Self::default()
    }

    /// First token: parse, validate -> Step::Done{response: empty, user: principal, expires_at_ms: Some(exp)};
    /// invalid token -> Step::Challenge(`{"status":"invalid_token"}`), then the client's lone
    /// 0x01 -> Err(AuthenticationFailed(<which check failed>)).
    pub fn step(&mut self, token: &[u8], validator: &JwtValidator, now_ms: i64) -> Result<Step> {
        // Any error below leaves the exchange failed for good.
        match std::mem::replace(&mut self.state, ServerState::Failed) {
            ServerState::AwaitingToken => self.first_message(token, validator, now_ms),
            ServerState::AwaitingErrorAck { reason } => {
                if token == [SEPARATOR] {
                    Err(Error::AuthenticationFailed(format!(
                        "invalid_token: {reason}"
                    )))
                } else {
                    Err(Error::Malformed(
                        "OAUTHBEARER: after an error challenge the client must send a lone %x01"
                            .into(),
                    ))
                }
            }
            ServerState::Done | ServerState::Failed => Err(Error::Malformed(
                "OAUTHBEARER exchange already finished".into(),
            )),
        }
    }

    fn first_message(
        &mut self,
        message: &[u8],
        validator: &JwtValidator,
        now_ms: i64,
    ) -> Result<Step> {
        let initial = parse_client_initial(message)?;
        let validated = match validator.validate(&initial.token, now_ms) {
            Ok(validated) => validated,
            Err(err) => {
                let reason = match err {
                    Error::InvalidToken(reason) => reason,
                    other => other.to_string(),
                };
                tracing::warn!(%reason, "OAUTHBEARER token refused");
                self.state = ServerState::AwaitingErrorAck { reason };
                return Ok(Step::Challenge(INVALID_TOKEN_CHALLENGE.to_vec()));
            }
        };
        // As in SASL generally and Kafka: an authzid is allowed but must be the principal.
        if let Some(authzid) = &initial.authzid {
            if *authzid != validated.principal {
                return Err(Error::AuthenticationFailed(format!(
                    "authorization id {} differs from the token's principal {}",
                    echo(authzid),
                    echo(&validated.principal)
                )));
            }
        }
        let step = Step::Done {
            response: Vec::new(),
            user: validated.principal.clone(),
            expires_at_ms: Some(validated.expires_at_ms),
        };
        tracing::debug!(principal = %validated.principal, "OAUTHBEARER authenticated");
        self.state = ServerState::Done;
        self.extensions = initial.extensions;
        self.token = Some(validated);
        Ok(step)
    }

    /// Whether the client is authenticated.
    pub fn is_complete(&self) -> bool {
        matches!(self.state, ServerState::Done)
    }

    /// The client's SASL extensions once authenticated (Kafka's default validator accepts
    /// them all); empty before.
    pub fn extensions(&self) -> &BTreeMap<String, String> {
        &self.extensions
    }

    /// The validated token once authenticated.
    pub fn validated_token(&self) -> Option<&ValidatedToken> {
        self.token.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::LazyLock;

    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
    use aws_lc_rs::signature::{
        EcdsaKeyPair, KeyPair as _, RsaEncoding, ECDSA_P256_SHA256_FIXED_SIGNING,
        ECDSA_P384_SHA384_FIXED_SIGNING, RSA_PKCS1_SHA256, RSA_PKCS1_SHA512, RSA_PSS_SHA256,
        RSA_PSS_SHA384,
    };
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    /// Key pairs are generated once: RSA generation is the slow part of these tests.
    struct Keys {
        rsa: RsaKeyPair,
        rsa_other: RsaKeyPair,
        ec: EcdsaKeyPair,
        ec384: EcdsaKeyPair,
    }

    static KEYS: LazyLock<Keys> = LazyLock::new(|| Keys {
        rsa: RsaKeyPair::generate(KeySize::Rsa2048).expect("rsa key"),
        rsa_other: RsaKeyPair::generate(KeySize::Rsa2048).expect("rsa key"),
        ec: EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("p256 key"),
        ec384: EcdsaKeyPair::generate(&ECDSA_P384_SHA384_FIXED_SIGNING).expect("p384 key"),
    });

    /// 2023-11-14T22:13:20Z, the clock of every test.
    const NOW_MS: i64 = 1_700_000_000_000;
    const NOW_S: i64 = NOW_MS / 1000;

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    fn rsa_jwk(key: &RsaKeyPair, kid: &str) -> Value {
        let public = key.public_key();
        json!({
            "kty": "RSA",
            "kid": kid,
            "use": "sig",
            "n": b64(public.modulus().big_endian_without_leading_zero()),
            "e": b64(public.exponent().big_endian_without_leading_zero()),
        })
    }

    fn ec_jwk(key: &EcdsaKeyPair, crv: &str, kid: &str) -> Value {
        let point = key.public_key().as_ref();
        let width = (point.len() - 1) / 2;
        json!({
            "kty": "EC",
            "kid": kid,
            "crv": crv,
            "x": b64(&point[1..1 + width]),
            "y": b64(&point[1 + width..]),
        })
    }

    /// The test JWKS: one RSA, one P-256 and one P-384 key, plus keys that must be skipped.
    fn jwks() -> Vec<u8> {
        let keys = &*KEYS;
        let mut enc = rsa_jwk(&keys.rsa_other, "enc");
        enc["use"] = json!("enc");
        json!({"keys": [
            rsa_jwk(&keys.rsa, "rsa1"),
            ec_jwk(&keys.ec, "P-256", "ec1"),
            ec_jwk(&keys.ec384, "P-384", "ec384"),
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            enc,
        ]})
        .to_string()
        .into_bytes()
    }

    fn options() -> ValidatorOptions {
        ValidatorOptions {
            issuer: Some("https://idp.example".into()),
            audience: vec!["kafka".into()],
            ..ValidatorOptions::default()
        }
    }

    fn validator() -> JwtValidator {
        JwtValidator::from_jwks(&jwks(), options()).expect("jwks")
    }

    fn claims() -> Value {
        json!({
            "sub": "alice",
            "iss": "https://idp.example",
            "aud": "kafka",
            "exp": NOW_S + 3600,
            "iat": NOW_S - 10,
            "scope": "read write",
        })
    }

    enum Signer {
        Rsa(&'static RsaKeyPair, &'static dyn RsaEncoding),
        Ec(&'static EcdsaKeyPair),
    }

    fn sign_raw(header: &Value, claims_json: &str, signer: Signer) -> String {
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims_json.as_bytes())
        );
        let sig = match signer {
            Signer::Rsa(key, encoding) => {
                let mut sig = vec![0; key.public_modulus_len()];
                key.sign(encoding, &SystemRandom::new(), input.as_bytes(), &mut sig)
                    .expect("rsa sign");
                sig
            }
            Signer::Ec(key) => key
                .sign(&SystemRandom::new(), input.as_bytes())
                .expect("ec sign")
                .as_ref()
                .to_vec(),
        };
        format!("{input}.{}", b64(&sig))
    }

    fn sign(header: Value, claims: Value, signer: Signer) -> String {
        sign_raw(&header, &claims.to_string(), signer)
    }

    fn rs256(claims: Value) -> String {
        sign(
            json!({"alg": "RS256", "kid": "rsa1", "typ": "JWT"}),
            claims,
            Signer::Rsa(&KEYS.rsa, &RSA_PKCS1_SHA256),
        )
    }

    fn refused(token: &str, v: &JwtValidator) -> String {
        match v.validate(token, NOW_MS) {
            Err(Error::InvalidToken(reason)) => reason,
            other => panic!("expected InvalidToken, got {other:?}"),
        }
    }

    fn with(mut base: Value, key: &str, value: Value) -> Value {
        base[key] = value;
        base
    }

    fn without(mut base: Value, key: &str) -> Value {
        base.as_object_mut().expect("object").remove(key);
        base
    }

    #[test]
    fn valid_rs256() {
        let token = validator()
            .validate(&rs256(claims()), NOW_MS)
            .expect("valid");
        assert_eq!(
            token,
            ValidatedToken {
                principal: "alice".into(),
                expires_at_ms: (NOW_S + 3600) * 1000,
                scopes: vec!["read".into(), "write".into()],
                issued_at_ms: Some((NOW_S - 10) * 1000),
            }
        );
    }

    #[test]
    fn valid_other_rsa_algorithms() {
        let v = validator();
        let cases: [(&str, &'static dyn RsaEncoding); 3] = [
            ("PS256", &RSA_PSS_SHA256),
            ("PS384", &RSA_PSS_SHA384),
            ("RS512", &RSA_PKCS1_SHA512),
        ];
        for (alg, encoding) in cases {
            let token = sign(
                json!({"alg": alg, "kid": "rsa1"}),
                claims(),
                Signer::Rsa(&KEYS.rsa, encoding),
            );
            assert_eq!(v.validate(&token, NOW_MS).expect(alg).principal, "alice");
        }
        // The padding must be the one the header names.
        let token = sign(
            json!({"alg": "RS256", "kid": "rsa1"}),
            claims(),
            Signer::Rsa(&KEYS.rsa, &RSA_PSS_SHA256),
        );
        assert!(refused(&token, &v).contains("signature"));
    }

    #[test]
    fn valid_es256_and_es384() {
        let v = validator();
        let token = sign(
            json!({"alg": "ES256", "kid": "ec1"}),
            claims(),
            Signer::Ec(&KEYS.ec),
        );
        assert_eq!(
            v.validate(&token, NOW_MS).expect("es256").principal,
            "alice"
        );
        // Without kid, the only P-384 key is chosen.
        let token = sign(json!({"alg": "ES384"}), claims(), Signer::Ec(&KEYS.ec384));
        assert_eq!(
            v.validate(&token, NOW_MS).expect("es384").principal,
            "alice"
        );
    }

    #[test]
    fn wrong_key_and_tampering_are_refused() {
        let v = validator();
        let forged = sign(
            json!({"alg": "RS256", "kid": "rsa1"}),
            claims(),
            Signer::Rsa(&KEYS.rsa_other, &RSA_PKCS1_SHA256),
        );
        assert_eq!(refused(&forged, &v), "signature does not verify");

        let good = rs256(claims());
        let parts: Vec<&str> = good.split('.').collect();
        let evil = b64(with(claims(), "sub", json!("mallory"))
            .to_string()
            .as_bytes());
        let tampered = format!("{}.{}.{}", parts[0], evil, parts[2]);
        assert_eq!(refused(&tampered, &v), "signature does not verify");

        // An EC signature from the P-256 key presented as the P-384 key's.
        let token = sign(
            json!({"alg": "ES256", "kid": "ec384"}),
            claims(),
            Signer::Ec(&KEYS.ec),
        );
        assert!(refused(&token, &v).contains("does not fit alg ES256"));
    }

    #[test]
    fn expiry_and_clock_skew() {
        let v = validator();
        let expired = rs256(with(claims(), "exp", json!(NOW_S - 31)));
        assert!(refused(&expired, &v).starts_with("token expired"));
        let within_skew = rs256(with(claims(), "exp", json!(NOW_S - 29)));
        assert!(v.validate(&within_skew, NOW_MS).is_ok());
        let missing = rs256(without(claims(), "exp"));
        assert_eq!(refused(&missing, &v), "exp claim missing");
        let text = rs256(with(claims(), "exp", json!("tomorrow")));
        assert_eq!(refused(&text, &v), "exp claim is not a number");
        let negative = rs256(with(claims(), "exp", json!(-5)));
        assert_eq!(refused(&negative, &v), "exp claim is negative");
        let fractional = rs256(with(claims(), "exp", json!(NOW_S as f64 + 0.5)));
        assert_eq!(
            v.validate(&fractional, NOW_MS)
                .expect("fractional")
                .expires_at_ms,
            NOW_MS + 500
        );
        let strict = JwtValidator::from_jwks(
            &jwks(),
            ValidatorOptions {
                clock_skew_s: 0,
                ..options()
            },
        )
        .expect("jwks");
        let just_expired = rs256(with(claims(), "exp", json!(NOW_S - 1)));
        assert!(refused(&just_expired, &strict).starts_with("token expired"));
    }

    #[test]
    fn not_yet_valid_is_refused() {
        let v = validator();
        let early = rs256(with(claims(), "nbf", json!(NOW_S + 60)));
        assert!(refused(&early, &v).starts_with("token not valid yet"));
        let nbf_within_skew = rs256(with(claims(), "nbf", json!(NOW_S + 20)));
        assert!(v.validate(&nbf_within_skew, NOW_MS).is_ok());
        let future_iat = rs256(with(claims(), "iat", json!(NOW_S + 60)));
        assert!(refused(&future_iat, &v).starts_with("token issued in the future"));
        let no_iat = rs256(without(claims(), "iat"));
        assert_eq!(
            v.validate(&no_iat, NOW_MS).expect("no iat").issued_at_ms,
            None
        );
    }

    #[test]
    fn issuer_is_checked() {
        let v = validator();
        let wrong = rs256(with(claims(), "iss", json!("https://evil.example")));
        assert_eq!(refused(&wrong, &v), "iss claim is not the expected issuer");
        let missing = rs256(without(claims(), "iss"));
        assert_eq!(refused(&missing, &v), "iss claim missing");
        let unchecked = JwtValidator::from_jwks(
            &jwks(),
            ValidatorOptions {
                issuer: None,
                ..options()
            },
        )
        .expect("jwks");
        assert!(unchecked.validate(&wrong, NOW_MS).is_ok());
    }

    #[test]
    fn audience_is_checked_in_both_forms() {
        let v = validator();
        let wrong = rs256(with(claims(), "aud", json!("billing")));
        assert_eq!(
            refused(&wrong, &v),
            "aud claim names none of the expected audiences"
        );
        let array_without = rs256(with(claims(), "aud", json!(["billing", "audit"])));
        assert_eq!(
            refused(&array_without, &v),
            "aud claim names none of the expected audiences"
        );
        let array_with = rs256(with(claims(), "aud", json!(["billing", "kafka"])));
        assert!(v.validate(&array_with, NOW_MS).is_ok());
        let missing = rs256(without(claims(), "aud"));
        assert_eq!(refused(&missing, &v), "aud claim missing");
        let number = rs256(with(claims(), "aud", json!(7)));
        assert!(refused(&number, &v).contains("neither a string nor an array"));
        let unchecked = JwtValidator::from_jwks(
            &jwks(),
            ValidatorOptions {
                audience: Vec::new(),
                ..options()
            },
        )
        .expect("jwks");
        assert!(unchecked.validate(&wrong, NOW_MS).is_ok());
    }

    #[test]
    fn principal_claim() {
        let v = validator();
        let missing = rs256(without(claims(), "sub"));
        assert_eq!(refused(&missing, &v), "principal claim \"sub\" missing");
        let blank = rs256(with(claims(), "sub", json!("  ")));
        assert_eq!(refused(&blank, &v), "principal claim \"sub\" is empty");
        let number = rs256(with(claims(), "sub", json!(42)));
        assert_eq!(
            refused(&number, &v),
            "principal claim \"sub\" is not a string"
        );
        let padded = rs256(with(claims(), "sub", json!(" alice\t")));
        assert_eq!(
            v.validate(&padded, NOW_MS).expect("trimmed").principal,
            "alice"
        );

        let custom = JwtValidator::from_jwks(
            &jwks(),
            ValidatorOptions {
                principal_claim: "client_id".into(),
                ..options()
            },
        )
        .expect("jwks");
        let token = rs256(with(claims(), "client_id", json!("svc-orders")));
        assert_eq!(
            custom.validate(&token, NOW_MS).expect("custom").principal,
            "svc-orders"
        );
        assert_eq!(
            refused(&rs256(claims()), &custom),
            "principal claim \"client_id\" missing"
        );
    }

    #[test]
    fn scope_claim() {
        let v = validator();
        let array = rs256(with(claims(), "scope", json!(["a", "b"])));
        assert_eq!(
            v.validate(&array, NOW_MS).expect("array").scopes,
            ["a", "b"]
        );
        let absent = rs256(without(claims(), "scope"));
        assert!(v
            .validate(&absent, NOW_MS)
            .expect("absent")
            .scopes
            .is_empty());
        let repeated = rs256(with(claims(), "scope", json!("a b a")));
        assert!(refused(&repeated, &v).contains("repeats"));
        let custom = JwtValidator::from_jwks(
            &jwks(),
            ValidatorOptions {
                scope_claim: "scp".into(),
                ..options()
            },
        )
        .expect("jwks");
        let token = rs256(with(claims(), "scp", json!(["x"])));
        assert_eq!(custom.validate(&token, NOW_MS).expect("scp").scopes, ["x"]);
    }

    #[test]
    fn alg_none_and_hmac_are_refused() {
        let v = validator();
        let unsigned = format!(
            "{}.{}.",
            b64(br#"{"alg":"none"}"#),
            b64(claims().to_string().as_bytes())
        );
        assert_eq!(
            refused(&unsigned, &v),
            "alg none refused: the token is unsigned"
        );

        // The classic confusion attack: HS256 keyed with the RSA public key's bytes.
        let input = format!(
            "{}.{}",
            b64(br#"{"alg":"HS256","kid":"rsa1"}"#),
            b64(claims().to_string().as_bytes())
        );
        let mac_key =
            aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, KEYS.rsa.public_key().as_ref());
        let mac = aws_lc_rs::hmac::sign(&mac_key, input.as_bytes());
        let hs256 = format!("{input}.{}", b64(mac.as_ref()));
        assert!(refused(&hs256, &v).starts_with("alg \"HS256\" refused"));

        let odd = sign(json!({"alg": "ES512"}), claims(), Signer::Ec(&KEYS.ec));
        assert_eq!(refused(&odd, &v), "alg \"ES512\" is not supported");
    }

    #[test]
    fn key_selection() {
        let v = validator();
        let unknown = sign(
            json!({"alg": "RS256", "kid": "rotated"}),
            claims(),
            Signer::Rsa(&KEYS.rsa, &RSA_PKCS1_SHA256),
        );
        assert_eq!(
            refused(&unknown, &v),
            "no key with kid \"rotated\" in the JWKS"
        );
        assert!(!v.has_key_id("rotated") && v.has_key_id("rsa1"));
        // The enc key was skipped at load.
        assert!(!v.has_key_id("enc"));

        // No kid and exactly one RSA key: it is used.
        let no_kid = sign(
            json!({"alg": "RS256"}),
            claims(),
            Signer::Rsa(&KEYS.rsa, &RSA_PKCS1_SHA256),
        );
        assert!(v.validate(&no_kid, NOW_MS).is_ok());

        // No kid and two RSA keys: ambiguous.
        let two = json!({"keys": [rsa_jwk(&KEYS.rsa, "a"), rsa_jwk(&KEYS.rsa_other, "b")]});
        let ambiguous =
            JwtValidator::from_jwks(two.to_string().as_bytes(), options()).expect("jwks");
        assert_eq!(
            refused(&no_kid, &ambiguous),
            "token has no kid and 2 keys fit alg RS256"
        );

        // A JWK's own alg restricts it.
        let pinned = json!({"keys": [with(rsa_jwk(&KEYS.rsa, "rsa1"), "alg", json!("PS256"))]});
        let pinned =
            JwtValidator::from_jwks(pinned.to_string().as_bytes(), options()).expect("jwks");
        assert_eq!(
            refused(&rs256(claims()), &pinned),
            "key \"rsa1\" does not fit alg RS256"
        );
    }

    #[test]
    fn malformed_tokens_say_what_is_wrong() {
        let v = validator();
        assert!(refused("abc", &v).starts_with("expected three"));
        assert!(refused("a.b.c.d", &v).starts_with("expected three"));
        assert_eq!(refused(".b.c", &v), "header section is empty");
        assert_eq!(
            refused("!!.b.c", &v),
            "header is not base64url without padding"
        );
        let header = b64(br#"{"alg":"RS256","kid":"rsa1"}"#);
        assert_eq!(
            refused(&format!("{header}.e30."), &v),
            "signature section is empty"
        );
        let padded = format!("{}=", rs256(claims()));
        assert_eq!(
            refused(&padded, &v),
            "signature is not base64url without padding"
        );
        assert_eq!(
            refused(&format!("{}.e30.AAAA", b64(b"[1]")), &v),
            "header is not a JSON object"
        );
        let crit = sign(
            json!({"alg": "RS256", "kid": "rsa1", "crit": ["exp"]}),
            claims(),
            Signer::Rsa(&KEYS.rsa, &RSA_PKCS1_SHA256),
        );
        assert!(refused(&crit, &v).contains("crit"));
        let not_json = sign_raw(
            &json!({"alg": "RS256", "kid": "rsa1"}),
            "not json",
            Signer::Rsa(&KEYS.rsa, &RSA_PKCS1_SHA256),
        );
        assert_eq!(refused(&not_json, &v), "payload is not valid JSON");
        let huge = "a".repeat(MAX_TOKEN_LEN + 1);
        assert!(refused(&huge, &v).contains("limit"));
        // Surrounding whitespace is trimmed, as Kafka does.
        assert!(v
            .validate(&format!(" {} ", rs256(claims())), NOW_MS)
            .is_ok());
    }

    #[test]
    fn jwks_loading() {
        let no_keys = JwtValidator::from_jwks(br#"{"keys":[]}"#, options());
        assert!(matches!(no_keys, Err(Error::InvalidJwks(_))));
        let only_skipped = br#"{"keys":[{"kty":"oct","k":"c2VjcmV0"},{"kty":"RSA","use":"enc","n":"AQAB","e":"AQAB"}]}"#;
        assert!(matches!(
            JwtValidator::from_jwks(only_skipped, options()),
            Err(Error::InvalidJwks(_))
        ));
        for garbage in [&b"not json"[..], b"[]", br#"{"keys":{}}"#] {
            assert!(matches!(
                JwtValidator::from_jwks(garbage, options()),
                Err(Error::InvalidJwks(_))
            ));
        }
        // Small RSA moduli and off-curve points are skipped, leaving the good key.
        let mut bad_point = ec_jwk(&KEYS.ec, "P-256", "bad");
        bad_point["y"] = json!(b64(&[7u8; 32]));
        let doc = json!({"keys": [
            {"kty": "RSA", "kid": "small", "n": b64(&[0xc5; 128]), "e": "AQAB"},
            bad_point,
            rsa_jwk(&KEYS.rsa, "rsa1"),
        ]});
        let v = JwtValidator::from_jwks(doc.to_string().as_bytes(), options()).expect("jwks");
        assert!(v.has_key_id("rsa1") && !v.has_key_id("small") && !v.has_key_id("bad"));
        assert!(v.validate(&rs256(claims()), NOW_MS).is_ok());
    }

    fn initial(token: &str) -> Vec<u8> {
        format!("n,,\x01auth=Bearer {token}\x01\x01").into_bytes()
    }

    #[test]
    fn server_accepts_a_valid_token() {
        let v = validator();
        let mut server = OAuthBearerServer::new();
        let token = rs256(claims());
        let msg = format!("n,a=alice,\x01auth=Bearer {token}\x01traceId=42\x01\x01");
        let step = server.step(msg.as_bytes(), &v, NOW_MS).expect("step");
        assert_eq!(
            step,
            Step::Done {
                response: Vec::new(),
                user: "alice".into(),
                expires_at_ms: Some((NOW_S + 3600) * 1000),
            }
        );
        assert!(server.is_complete());
        assert_eq!(
            server.extensions().get("traceId").map(String::as_str),
            Some("42")
        );
        assert_eq!(
            server.validated_token().map(|t| t.principal.as_str()),
            Some("alice")
        );
        assert!(server.step(b"\x01", &v, NOW_MS).is_err());
    }

    #[test]
    fn server_refuses_a_foreign_authzid() {
        let v = validator();
        let mut server = OAuthBearerServer::new();
        let msg = format!("n,a=bob,\x01auth=Bearer {}\x01\x01", rs256(claims()));
        match server.step(msg.as_bytes(), &v, NOW_MS) {
            Err(Error::AuthenticationFailed(reason)) => {
                assert!(reason.contains("\"bob\"") && reason.contains("\"alice\""))
            }
            other => panic!("expected AuthenticationFailed, got {other:?}"),
        }
        assert!(!server.is_complete());
    }

    #[test]
    fn server_failure_path_follows_rfc7628() {
        let v = validator();
        let mut server = OAuthBearerServer::new();
        let expired = rs256(with(claims(), "exp", json!(NOW_S - 3600)));
        let step = server
            .step(&initial(&expired), &v, NOW_MS)
            .expect("challenge");
        assert_eq!(
            step,
            Step::Challenge(br#"{"status":"invalid_token"}"#.to_vec())
        );
        match server.step(b"\x01", &v, NOW_MS) {
            Err(Error::AuthenticationFailed(reason)) => {
                assert!(
                    reason.starts_with("invalid_token: token expired"),
                    "{reason}"
                );
                assert!(!reason.contains(&expired));
            }
            other => panic!("expected AuthenticationFailed, got {other:?}"),
        }
        // The exchange is over.
        assert!(server.step(&initial(&rs256(claims())), &v, NOW_MS).is_err());

        // Anything but a lone %x01 after the challenge is a protocol error.
        let mut server = OAuthBearerServer::new();
        assert!(matches!(
            server.step(&initial("a.b.c"), &v, NOW_MS),
            Ok(Step::Challenge(_))
        ));
        assert!(matches!(
            server.step(&initial(&rs256(claims())), &v, NOW_MS),
            Err(Error::Malformed(_))
        ));
    }

    #[test]
    fn server_refuses_malformed_first_messages() {
        let v = validator();
        for msg in [&b"\x01"[..], b"", b"n,,\x01\x01", b"garbage"] {
            let mut server = OAuthBearerServer::new();
            assert!(matches!(
                server.step(msg, &v, NOW_MS),
                Err(Error::Malformed(_))
            ));
        }
    }

    #[test]
    fn client_initial_rfc7628_example() {
        // RFC 7628 section 4.1, with ^A written as \x01.
        let msg = b"n,a=user@example.com,\x01host=server.example.com\x01port=143\x01auth=Bearer vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==\x01\x01";
        let parsed = parse_client_initial(msg).expect("rfc example");
        assert_eq!(parsed.authzid.as_deref(), Some("user@example.com"));
        assert_eq!(parsed.token, "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==");
        assert_eq!(
            parsed.extensions,
            BTreeMap::from([
                ("host".to_string(), "server.example.com".to_string()),
                ("port".to_string(), "143".to_string()),
            ])
        );
    }

    #[test]
    fn client_initial_kafka_cases() {
        // From Kafka's OAuthBearerClientInitialResponseTest.
        let parsed = parse_client_initial(b"n,,\x01auth=Bearer 123.345.567\x01nineteen=42\x01\x01")
            .expect("kafka");
        assert_eq!(parsed.authzid, None);
        assert_eq!(parsed.token, "123.345.567");
        assert_eq!(
            parsed.extensions.get("nineteen").map(String::as_str),
            Some("42")
        );

        let parsed = parse_client_initial(
            b"n,,\x01propA=valueA1, valueA2\x01auth=Bearer 567\x01propB=valueB\x01\x01",
        )
        .expect("extensions");
        assert_eq!(parsed.extensions["propA"], "valueA1, valueA2");
        assert_eq!(parsed.extensions["propB"], "valueB");

        let parsed = parse_client_initial(
            b"n,a=user@example.com,\x01auth=Bearer vF-9.df_t4qm~Tc2Nvb3RlckBhbHR+hdmlzdGEuY29/tCg==\x01\x01",
        )
        .expect("rfc 6750 characters");
        assert_eq!(
            parsed.token,
            "vF-9.df_t4qm~Tc2Nvb3RlckBhbHR+hdmlzdGEuY29/tCg=="
        );
        assert!(parsed.extensions.is_empty());

        let parsed =
            parse_client_initial(b"n,a=myuser,\x01auth=bearer   345\x01\x01").expect("scheme");
        assert_eq!(parsed.authzid.as_deref(), Some("myuser"));
        assert_eq!(parsed.token, "345");
    }

    #[test]
    fn client_initial_authzid_escapes() {
        let parsed =
            parse_client_initial(b"n,a=a=2Cb=3Dc,\x01auth=Bearer t\x01\x01").expect("escapes");
        assert_eq!(parsed.authzid.as_deref(), Some("a,b=c"));
        for bad in [
            &b"n,a=a=41,\x01auth=Bearer t\x01\x01"[..],
            b"n,a=,\x01auth=Bearer t\x01\x01",
            b"n,a=x\xc3\xa9,\x01auth=Bearer t\x01\x01",
            b"n,a=user\x01auth=Bearer t\x01\x01",
        ] {
            assert!(
                matches!(parse_client_initial(bad), Err(Error::Malformed(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn client_initial_refusals() {
        let malformed = [
            // auth missing, or empty pairs.
            &b"n,,\x01\x01"[..],
            b"n,,\x01host=x\x01\x01",
            // Separators: missing final %x01, missing first %x01, ',' between pairs, a
            // doubled %x01 between pairs.
            b"n,,\x01auth=Bearer t\x01",
            b"n,,auth=Bearer t\x01\x01",
            b"n,,\x01auth=Bearer t,host=x\x01\x01",
            b"n,,\x01auth=Bearer t\x01\x01host=x\x01\x01",
            b"n\x01auth=Bearer t\x01\x01",
            // Scheme and token grammar.
            b"n,,\x01auth=Basic dXNlcg\x01\x01",
            b"n,,\x01auth=Bearer\x01\x01",
            b"n,,\x01auth=Bearer \x01\x01",
            b"n,,\x01auth=Bearer a b\x01\x01",
            b"n,,\x01auth=Bearer a=b\x01\x01",
            b"n,,\x01auth= Bearer t\x01\x01",
            // Keys are letters; values printable ASCII; neither empty; no duplicates.
            b"n,,\x01auth=Bearer t\x01nineteen9=42\x01\x01",
            b"n,,\x01auth=Bearer t\x01=42\x01\x01",
            b"n,,\x01auth=Bearer t\x01k=\x01\x01",
            b"n,,\x01auth=Bearer t\x01k=v\x00\x01\x01",
            b"n,,\x01auth=Bearer t\x01k=caf\xc3\xa9\x01\x01",
            b"n,,\x01auth=Bearer t\x01auth=Bearer u\x01\x01",
            b"n,,\x01auth=Bearer t\x01k=a\x01k=b\x01\x01",
            b"N,,\x01auth=Bearer t\x01\x01",
            b"",
        ];
        for msg in malformed {
            assert!(
                matches!(parse_client_initial(msg), Err(Error::Malformed(_))),
                "{msg:?}"
            );
        }
        for msg in [
            &b"y,,\x01auth=Bearer t\x01\x01"[..],
            b"p=tls-unique,,\x01auth=Bearer t\x01\x01",
        ] {
            assert!(
                matches!(parse_client_initial(msg), Err(Error::Unsupported(_))),
                "{msg:?}"
            );
        }
        let long = initial(&"a".repeat(MAX_TOKEN_LEN + 1));
        assert!(matches!(
            parse_client_initial(&long),
            Err(Error::Malformed(_))
        ));
        // "auth" is a key only for the token; any case other than lower is an extension,
        // as in Kafka.
        let parsed = parse_client_initial(b"n,,\x01AUTH=x\x01auth=Bearer t\x01\x01").expect("AUTH");
        assert_eq!(parsed.extensions["AUTH"], "x");
    }

    /// Any JSON a claim might hold, including the wrong types.
    fn json_leaf() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(|f| json!(f)),
            "\\PC{0,12}".prop_map(Value::from),
            Just(json!("kafka")),
            Just(json!("https://idp.example")),
        ];
        leaf.prop_recursive(2, 8, 4, |inner| {
            proptest::collection::vec(inner, 0..4).prop_map(Value::Array)
        })
    }

    proptest! {
        #[test]
        fn parse_client_initial_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_client_initial(&bytes);
        }

        #[test]
        fn parse_client_initial_never_panics_on_near_misses(
            authzid in "[a-z=,\\x01]{0,8}",
            pairs in proptest::collection::vec("[a-zA-Z=\\x01 ]{0,12}", 0..4),
            tail in "[\\x01,]{0,3}",
        ) {
            let msg = format!("n,a={authzid},\x01{}\x01{tail}", pairs.join("\x01"));
            let _ = parse_client_initial(msg.as_bytes());
        }

        #[test]
        fn validate_never_panics(token in "\\PC{0,300}", now in any::<i64>()) {
            let _ = validator().validate(&token, now);
        }

        #[test]
        fn validate_never_panics_on_jwt_shaped_input(
            header in "\\PC{0,60}",
            payload in "\\PC{0,120}",
            sig in proptest::collection::vec(any::<u8>(), 0..300),
            now in any::<i64>(),
        ) {
            let token = format!("{}.{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()), b64(&sig));
            let _ = validator().validate(&token, now);
            // A real header, to reach the signature and claim checks.
            let token = format!("{}.{}.{}", b64(br#"{"alg":"ES256","kid":"ec1"}"#), b64(payload.as_bytes()), b64(&sig));
            let _ = validator().validate(&token, now);
        }

        #[test]
        fn claims_never_panic(exp in any::<i64>(), nbf in any::<f64>(), skew in any::<i64>(), now in any::<i64>()) {
            let v = JwtValidator::from_jwks(&jwks(), ValidatorOptions { clock_skew_s: skew, ..options() }).expect("jwks");
            let mut c = with(claims(), "exp", json!(exp));
            if nbf.is_finite() {
                c = with(c, "nbf", json!(nbf));
            }
            let _ = v.validate(&rs256(c), now);
        }

        #[test]
        fn signed_claims_never_panic(
            values in proptest::collection::vec(json_leaf(), 7),
            raw in "\\PC{0,80}",
            now in any::<i64>(),
        ) {
            let names = ["exp", "nbf", "iat", "iss", "aud", "sub", "scope"];
            let c: Map<String, Value> = names.iter().map(|n| n.to_string()).zip(values).collect();
            let header = json!({"alg": "ES256", "kid": "ec1"});
            let _ = validator().validate(&sign(header.clone(), Value::Object(c), Signer::Ec(&KEYS.ec)), now);
            let _ = validator().validate(&sign_raw(&header, &raw, Signer::Ec(&KEYS.ec)), now);
        }

        #[test]
        fn step_never_panics(
            first in proptest::collection::vec(any::<u8>(), 0..256),
            second in proptest::collection::vec(any::<u8>(), 0..4),
            now in any::<i64>(),
        ) {
            let v = validator();
            let mut server = OAuthBearerServer::new();
            let _ = server.step(&first, &v, now);
            let _ = server.step(&second, &v, now);
            let mut server = OAuthBearerServer::new();
            let _ = server.step(&initial(&String::from_utf8_lossy(&first)), &v, now);
            let _ = server.step(&second, &v, now);
        }

        #[test]
        fn from_jwks_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = JwtValidator::from_jwks(&bytes, ValidatorOptions::default());
        }

        #[test]
        fn from_jwks_never_panics_on_key_shaped_input(
            kty in "(RSA|EC|oct)",
            crv in "(P-256|P-384|P-521)",
            a in "[A-Za-z0-9_=-]{0,100}",
            b in "[A-Za-z0-9_=-]{0,100}",
        ) {
            let doc = json!({"keys": [{"kty": kty, "crv": crv, "n": a, "e": b, "x": a, "y": b}]});
            let _ = JwtValidator::from_jwks(doc.to_string().as_bytes(), ValidatorOptions::default());
        }
    }
}
