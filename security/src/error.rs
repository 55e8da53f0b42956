//! The crate's one error type.

/// What went wrong in a security check or while loading security material.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A client's SASL message does not follow its mechanism's grammar.
    #[error("malformed SASL message: {0}")]
    Malformed(String),
    /// The client's credentials were refused. The text is safe to send to the client: it
    /// never says whether the user exists.
    #[error("authentication failed: {0}")]
    AuthenticationFailed(String),
    /// A feature of a mechanism that Strata does not offer (a SCRAM extension, channel
    /// binding, ...).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A certificate, key or trust store that cannot be used.
    #[error("invalid TLS material: {0}")]
    Tls(String),
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A bearer token that is malformed, badly signed, expired or for someone else.
    #[error("invalid token: {0}")]
    InvalidToken(String),
    /// A JSON Web Key Set that cannot be used.
    #[error("invalid JWKS: {0}")]
    InvalidJwks(String),
    /// An ACL binding or filter that is not valid.
    #[error("invalid ACL: {0}")]
    InvalidAcl(String),
    /// A principal mapping rule that does not parse.
    #[error("invalid principal mapping rule: {0}")]
    InvalidRule(String),
}

/// Results of this crate.
pub type Result<T> = std::result::Result<T, Error>;
