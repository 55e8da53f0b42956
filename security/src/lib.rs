//! Strata's security core, free of sockets and of the node: the SASL mechanisms (PLAIN,
//! SCRAM-SHA-256/512, OAUTHBEARER), TLS material loaded from PEM files and reloaded when
//! they change, principals taken from client certificates, Kafka's ACL authorizer, and the
//! rules of Kafka's client quotas (entities, keys, filters, precedence).
//! The node (`strata-node`) wires these into its listeners and request path.

pub mod acl;
pub mod error;
pub mod oauth;
pub mod plain;
pub mod principal;
pub mod quota;
pub mod scram;
pub mod tls;

pub use error::{Error, Result};

/// What a SASL server answers to one token from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send this challenge and wait for the client's next token.
    Challenge(Vec<u8>),
    /// The client is authenticated as `user`: send `response` (possibly empty) as the
    /// server's last token.
    Done {
        /// The server's last token.
        response: Vec<u8>,
        /// The authenticated user name (the principal is `User:{user}`).
        user: String,
        /// For credentials that expire (OAUTHBEARER tokens): milliseconds since the epoch
        /// when they do, so the session ends then (KIP-368).
        expires_at_ms: Option<i64>,
    },
}
