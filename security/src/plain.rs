//! SASL PLAIN (RFC 4616), server side, checked against the users' SCRAM credentials: Strata
//! stores no clear passwords, so the password is derived with the stored salt and iteration
//! count and the result compared with the stored key in constant time.
//!
//! Differences from Kafka's PlainSaslServer, on purpose:
//! - A token with a third NUL is refused; Kafka silently cuts the password at it.
//! - An authorization id other than the user name is refused before the password is checked,
//!   which spares a PBKDF2 run for a request that fails anyway (Kafka checks it after).
//! - An unknown user costs the same PBKDF2 run as a known one, so timing does not tell them
//!   apart.

use crate::scram::{authzid_mismatch, Credentials, ScramCredential, ScramMechanism};
use crate::{Error, Result, Step};

/// The SASL mechanism name.
pub const MECHANISM: &str = "PLAIN";

/// The text Kafka's PLAIN server sends for a wrong user name or password.
fn invalid_user_or_password() -> Error {
    Error::AuthenticationFailed("Authentication failed: Invalid username or password".to_string())
}

/// Splits `[authzid] NUL authcid NUL passwd` into (authzid, authcid, password); an empty
/// authzid is `None`. User name and password must be non-empty and the token valid UTF-8.
pub fn parse(token: &[u8]) -> Result<(Option<String>, String, String)> {
    let text = std::str::from_utf8(token)
        .map_err(|_| Error::Malformed("invalid SASL/PLAIN message: not UTF-8".to_string()))?;
    let mut parts = text.split('\0');
    let (Some(authzid), Some(user), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Error::Malformed(
            "invalid SASL/PLAIN message: expected 3 NUL-separated fields".to_string(),
        ));
    };
    if user.is_empty() {
        return Err(Error::Malformed(
            "invalid SASL/PLAIN message: username not specified".to_string(),
        ));
    }
    if password.is_empty() {
        return Err(Error::Malformed(
            "invalid SASL/PLAIN message: password not specified".to_string(),
        ));
    }
    let authzid = (!authzid.is_empty()).then(|| authzid.to_string());
    Ok((authzid, user.to_string(), password.to_string()))
}

/// The server side of one PLAIN exchange: a single client token.
#[derive(Debug, Default)]
pub struct PlainServer {
    /// Set by the first token, whatever its outcome: PLAIN takes exactly one.
    used: bool,
}

impl PlainServer {
    /// A server waiting for the client's only token.
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks the client's token; success is `Step::Done` with an empty response. A second
    /// token, after success or failure, is an error.
    pub fn step(&mut self, token: &[u8], credentials: &dyn Credentials) -> Result<Step> {
        if std::mem::replace(&mut self.used, true) {
            return Err(Error::Malformed(
                "SASL/PLAIN exchange already finished".to_string(),
            ));
        }
        let (authzid, user, password) = parse(token)?;
        if authzid.is_some_and(|a| a != user) {
            return Err(authzid_mismatch());
        }
        if verify(credentials, &user, &password)? {
            Ok(Step::Done {
                response: Vec::new(),
                user,
                expires_at_ms: None,
            })
        } else {
            Err(invalid_user_or_password())
        }
    }
}

/// Whether `password` is `user`'s: against the SCRAM-SHA-512 credential if the user has one,
/// else the SCRAM-SHA-256 one, else a decoy that costs the same and never matches.
fn verify(credentials: &dyn Credentials, user: &str, password: &str) -> Result<bool> {
    let stored = [ScramMechanism::Sha512, ScramMechanism::Sha256]
        .into_iter()
        .find_map(|m| credentials.scram(m, user).filter(|c| c.mechanism == m));
    match stored {
        Some(credential) => Ok(credential.verify_password(password)),
        None => {
            let decoy = ScramCredential::decoy(ScramMechanism::Sha512, user)?;
            // Run the derivation for its cost only; the user does not exist.
            let _ = decoy.verify_password(password);
            Ok(false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[derive(Default)]
    struct Store(HashMap<(ScramMechanism, String), ScramCredential>);

    impl Store {
        fn with(mut self, user: &str, mechanism: ScramMechanism, password: &str) -> Self {
            let credential = ScramCredential::from_password(mechanism, password, 4096).unwrap();
            self.0.insert((mechanism, user.to_string()), credential);
            self
        }
    }

    impl Credentials for Store {
        fn scram(&self, mechanism: ScramMechanism, user: &str) -> Option<ScramCredential> {
            self.0.get(&(mechanism, user.to_string())).cloned()
        }
    }

    fn step(store: &Store, token: &[u8]) -> Result<Step> {
        PlainServer::new().step(token, store)
    }

    fn done(user: &str) -> Step {
        Step::Done {
            response: Vec::new(),
            user: user.to_string(),
            expires_at_ms: None,
        }
    }

    #[test]
    fn parse_fields() {
        assert_eq!(
            parse(b"\0alice\0secret").unwrap(),
            (None, "alice".to_string(), "secret".to_string())
        );
        assert_eq!(
            parse("admin\0alice\0pä\u{1F511}".as_bytes()).unwrap(),
            (
                Some("admin".to_string()),
                "alice".to_string(),
                "pä\u{1F511}".to_string()
            )
        );
    }

    #[test]
    fn malformed_tokens() {
        for bad in [
            &b""[..],
            b"alice",
            b"\0alice",
            b"\0alice\0",
            b"\0\0secret",
            b"\0alice\0secret\0",
            b"\0alice\0sec\0ret",
            b"\0al\xffice\0secret",
        ] {
            assert!(matches!(parse(bad), Err(Error::Malformed(_))), "{bad:?}");
            assert!(matches!(
                step(&Store::default(), bad),
                Err(Error::Malformed(_))
            ));
        }
    }

    #[test]
    fn right_and_wrong_password() {
        let store = Store::default().with("alice", ScramMechanism::Sha256, "secret");
        assert_eq!(step(&store, b"\0alice\0secret").unwrap(), done("alice"));
        assert_eq!(
            step(&store, b"alice\0alice\0secret").unwrap(),
            done("alice")
        );
        let err = step(&store, b"\0alice\0Secret").unwrap_err();
        assert!(matches!(err, Error::AuthenticationFailed(_)));
        assert!(!err.to_string().contains("Secret"));
    }

    #[test]
    fn sha512_credential_is_preferred() {
        let store = Store::default()
            .with("bob", ScramMechanism::Sha256, "old")
            .with("bob", ScramMechanism::Sha512, "new");
        assert_eq!(step(&store, b"\0bob\0new").unwrap(), done("bob"));
        assert!(step(&store, b"\0bob\0old").is_err());
    }

    #[test]
    fn unknown_user_fails_like_a_wrong_password() {
        let store = Store::default().with("alice", ScramMechanism::Sha512, "secret");
        let unknown = step(&store, b"\0mallory\0secret").unwrap_err();
        let wrong = step(&store, b"\0alice\0nope").unwrap_err();
        assert_eq!(unknown.to_string(), wrong.to_string());
        assert!(matches!(unknown, Error::AuthenticationFailed(_)));
    }

    #[test]
    fn authzid_must_be_the_user() {
        let store = Store::default().with("alice", ScramMechanism::Sha256, "secret");
        let err = step(&store, b"admin\0alice\0secret").unwrap_err();
        assert!(matches!(err, Error::AuthenticationFailed(_)));
        assert!(err.to_string().contains("authorization id"));
    }

    #[test]
    fn one_token_only() {
        let store = Store::default().with("alice", ScramMechanism::Sha256, "secret");
        let mut server = PlainServer::new();
        assert!(server.step(b"\0alice\0secret", &store).is_ok());
        assert!(server.step(b"\0alice\0secret", &store).is_err());
        let mut server = PlainServer::new();
        assert!(server.step(b"\0alice\0wrong", &store).is_err());
        assert!(server.step(b"\0alice\0secret", &store).is_err());
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn parse_round_trips(
            authzid in "[^\u{0}]{0,12}",
            user in "[^\u{0}]{1,12}",
            password in "[^\u{0}]{1,12}",
        ) {
            let token = format!("{authzid}\0{user}\0{password}");
            let (a, u, p) = parse(token.as_bytes()).unwrap();
            prop_assert_eq!(a, (!authzid.is_empty()).then_some(authzid));
            prop_assert_eq!(u, user);
            prop_assert_eq!(p, password);
        }
    }

    proptest! {
        // Each case runs a PBKDF2 derivation, so fewer cases.
        #![proptest_config(ProptestConfig::with_cases(16))]
        #[test]
        fn step_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let store = Store::default().with("alice", ScramMechanism::Sha256, "secret");
            let _ = PlainServer::new().step(&bytes, &store);
        }
    }
}
