//! One connection's authentication: who the client is (its principal), and on SASL
//! listeners the SaslHandshake / SaslAuthenticate exchange that must come before any other
//! request but ApiVersions, re-authentication (KIP-368) and the session's end.
//!
//! The connection task calls [`Session::gate`] for every request frame and
//! [`Session::handle`] for the two SASL APIs; both run synchronously, in request order.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{
    ApiKey, SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
    SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;
use strata_security::oauth::OAuthBearerServer;
use strata_security::plain::PlainServer;
use strata_security::scram::{ScramMechanism, ScramServer};
use strata_security::Step;

use super::config::{Listener, Mechanism};
use super::Security;
use crate::protocol::{decode_body, Frame, Reply};

/// The principal of a client that did not authenticate.
pub const ANONYMOUS: &str = "User:ANONYMOUS";

/// What the connection does with a request frame.
pub enum Gate {
    /// Dispatch it as usual.
    Pass,
    /// A SASL API: answer with [`Session::handle`].
    Sasl,
    /// Close the connection (a request before authentication, or after the session ended).
    Close(String),
}

/// What [`Session::handle`] decided.
pub struct Handled {
    pub reply: Reply,
    /// Authentication failed: answer, wait the failed-authentication delay, close.
    pub failed: bool,
}

enum Exchange {
    Plain(PlainServer),
    Scram(ScramServer),
    OAuth(OAuthBearerServer),
}

enum State {
    /// Not a SASL listener, or authenticated.
    Open,
    /// SASL listener: waiting for SaslHandshake.
    AwaitingHandshake,
    /// Handshake done: SaslAuthenticate tokens go to the mechanism.
    Authenticating(Mechanism, Exchange),
}

/// A connection's security state.
pub struct Session {
    security: Arc<Security>,
    listener: Arc<Listener>,
    /// `User:...`; shared with every request frame of the connection.
    principal: Arc<str>,
    state: State,
    /// Whether the client authenticated with SASL at least once.
    authenticated: bool,
    /// When the SASL session ends (KIP-368); requests after it close the connection.
    expires: Option<Instant>,
}

impl Session {
    /// A new connection on `listener`; `tls_user` is the mapped user of a verified client
    /// certificate, if any.
    pub fn new(security: Arc<Security>, listener: Arc<Listener>, tls_user: Option<String>) -> Self {
        let principal: Arc<str> = match tls_user {
            Some(u) => format!("User:{u}").into(),
            None => ANONYMOUS.into(),
        };
        let state = if listener.protocol.sasl() {
            State::AwaitingHandshake
        } else {
            State::Open
        };
        Session {
            security,
            listener,
            principal,
            state,
            authenticated: false,
            expires: None,
        }
    }

    /// The client's principal.
    pub fn principal(&self) -> &Arc<str> {
        &self.principal
    }

    /// The listener's name.
    pub fn listener(&self) -> &Arc<Listener> {
        &self.listener
    }

    /// Whether the connection may send ordinary requests yet (it is authenticated, or needs
    /// not be).
    pub fn ready(&self) -> bool {
        matches!(self.state, State::Open) && (self.authenticated || !self.listener.protocol.sasl())
    }

    /// Decide what to do with a request of `api`.
    pub fn gate(&self, api: ApiKey) -> Gate {
        if matches!(api, ApiKey::SaslHandshake | ApiKey::SaslAuthenticate) {
            return Gate::Sasl;
        }
        if api == ApiKey::ApiVersions {
            return Gate::Pass;
        }
        if !self.ready() {
            return Gate::Close(format!(
                "{api:?} before SASL authentication completed on listener {}",
                self.listener.name
            ));
        }
        if let Some(t) = self.expires {
            if Instant::now() >= t {
                return Gate::Close("the SASL session expired without re-authentication".into());
            }
        }
        Gate::Pass
    }

    /// Answer a SaslHandshake or SaslAuthenticate frame.
    pub fn handle(&mut self, frame: &Frame) -> Handled {
        let v = frame.header.request_api_version;
        let cid = frame.header.correlation_id;
        match frame.api_key {
            ApiKey::SaslHandshake => {
                let Ok(req) = decode_body::<SaslHandshakeRequest>(frame) else {
                    return closed();
                };
                let resp = self.handshake(req.mechanism.as_str(), v);
                ok(crate::protocol::handlers::reply(
                    ApiKey::SaslHandshake,
                    v,
                    cid,
                    &resp,
                ))
            }
            _ => {
                let Ok(req) = decode_body::<SaslAuthenticateRequest>(frame) else {
                    return closed();
                };
                let (resp, failed) = self.authenticate(&req.auth_bytes);
                Handled {
                    reply: crate::protocol::handlers::reply(
                        ApiKey::SaslAuthenticate,
                        v,
                        cid,
                        &resp,
                    ),
                    failed,
                }
            }
        }
    }

    fn handshake(&mut self, mechanism: &str, version: i16) -> SaslHandshakeResponse {
        let enabled: Vec<StrBytes> = self
            .security
            .config
            .mechanisms
            .iter()
            .map(|m| StrBytes::from_static_str(m.name()))
            .collect();
        let mut resp = SaslHandshakeResponse::default();
        resp.mechanisms = enabled;
        if !self.listener.protocol.sasl() {
            resp.error_code = ResponseError::IllegalSaslState.code();
            return resp;
        }
        // v0 handshakes are followed by raw tokens without Kafka framing; only the framed
        // (v1) exchange is served, which every current client uses.
        if version < 1 {
            resp.error_code = ResponseError::UnsupportedVersion.code();
            return resp;
        }
        let reauthenticating = self.authenticated;
        match (&self.state, reauthenticating) {
            (State::AwaitingHandshake, _) | (State::Open, true) => {}
            _ => {
                resp.error_code = ResponseError::IllegalSaslState.code();
                return resp;
            }
        }
        let Some(mech) =
            Mechanism::parse(mechanism).filter(|m| self.security.config.mechanisms.contains(m))
        else {
            resp.error_code = ResponseError::UnsupportedSaslMechanism.code();
            return resp;
        };
        let exchange = match mech {
            Mechanism::Plain => Exchange::Plain(PlainServer::new()),
            Mechanism::ScramSha256 => Exchange::Scram(ScramServer::new(ScramMechanism::Sha256)),
            Mechanism::ScramSha512 => Exchange::Scram(ScramServer::new(ScramMechanism::Sha512)),
            Mechanism::OAuthBearer => Exchange::OAuth(OAuthBearerServer::new()),
        };
        self.state = State::Authenticating(mech, exchange);
        resp
    }

    fn authenticate(&mut self, token: &[u8]) -> (SaslAuthenticateResponse, bool) {
        let mut resp = SaslAuthenticateResponse::default();
        let State::Authenticating(mech, exchange) = &mut self.state else {
            resp.error_code = ResponseError::IllegalSaslState.code();
            resp.error_message = Some(StrBytes::from_static_str(
                "SaslAuthenticate without a SaslHandshake",
            ));
            return (resp, true);
        };
        let mech = *mech;
        let creds = self.security.credentials();
        let now_ms = crate::security::now_ms();
        let step = match exchange {
            Exchange::Plain(s) => s.step(token, &*creds),
            Exchange::Scram(s) => s.step(token, &*creds),
            Exchange::OAuth(s) => match self.security.oauth_validator() {
                Some(v) => s.step(token, &v, now_ms),
                None => Err(strata_security::Error::AuthenticationFailed(
                    "no JSON Web Key Set is loaded".into(),
                )),
            },
        };
        match step {
            Ok(Step::Challenge(bytes)) => {
                resp.auth_bytes = bytes.into();
                (resp, false)
            }
            Ok(Step::Done {
                response,
                user,
                expires_at_ms,
            }) => {
                let principal = format!("User:{user}");
                if self.authenticated && *self.principal != *principal {
                    // KIP-368: re-authentication may not change who the connection is.
                    resp.error_code = ResponseError::SaslAuthenticationFailed.code();
                    resp.error_message = Some(StrBytes::from_static_str(
                        "re-authentication must keep the same principal",
                    ));
                    self.security.note_auth(mech, false);
                    return (resp, true);
                }
                let lifetime = self.session_lifetime_ms(expires_at_ms, now_ms);
                resp.auth_bytes = response.into();
                resp.session_lifetime_ms = lifetime;
                self.expires =
                    (lifetime > 0).then(|| Instant::now() + Duration::from_millis(lifetime as u64));
                self.principal = principal.into();
                self.authenticated = true;
                self.state = State::Open;
                self.security.note_auth(mech, true);
                tracing::info!(principal = %self.principal, mechanism = mech.name(), "authenticated");
                (resp, false)
            }
            Err(e) => {
                // Only the mechanism's client-safe text: never tokens or passwords.
                let text = match &e {
                    strata_security::Error::AuthenticationFailed(_)
                    | strata_security::Error::InvalidToken(_) => format!(
                        "Authentication failed during authentication due to invalid \
                         credentials with SASL mechanism {}",
                        mech.name()
                    ),
                    other => format!("{other}"),
                };
                tracing::info!(mechanism = mech.name(), reason = %e, "authentication failed");
                self.security.note_auth(mech, false);
                resp.error_code = ResponseError::SaslAuthenticationFailed.code();
                resp.error_message = Some(StrBytes::from_string(text));
                (resp, true)
            }
        }
    }

    /// KIP-368: with connections.max.reauth.ms set, the session lasts that long or until
    /// the credential expires, whichever is sooner; without it sessions do not end.
    fn session_lifetime_ms(&self, expires_at_ms: Option<i64>, now_ms: i64) -> i64 {
        let max = self.security.config.reauth_ms as i64;
        if max <= 0 {
            return 0;
        }
        match expires_at_ms {
            Some(t) => (t - now_ms).clamp(1, max),
            None => max,
        }
    }
}

fn ok(reply: Reply) -> Handled {
    Handled {
        reply,
        failed: false,
    }
}

fn closed() -> Handled {
    Handled {
        reply: Reply::Close,
        failed: true,
    }
}
