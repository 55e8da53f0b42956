//! A client's side of a SASL exchange, and a client certificate, as a hostile client may
//! send them: the first byte picks the mechanism (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512,
//! OAUTHBEARER, a certificate's subject and the principal mapping rules), the rest is split
//! on 0xFF into the client's successive tokens, each fed to the server's `step` in order.
//!
//! Nothing may panic; a successful exchange must name the one user that has credentials
//! (hostile bytes cannot forge a SCRAM proof or a signature), and once an exchange has
//! failed or finished, no later token succeeds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_security::oauth::{JwtValidator, OAuthBearerServer, ValidatorOptions};
use strata_security::plain::PlainServer;
use strata_security::principal::{subject_name, PrincipalMapper};
use strata_security::scram::{Credentials, ScramCredential, ScramMechanism, ScramServer};
use strata_security::Step;

#[global_allocator]
static ALLOC: strata_node::alloc::LazyLargeAlloc = strata_node::alloc::LazyLargeAlloc;

/// One user, "user" with password "pencil", for both SCRAM mechanisms.
struct One;

impl Credentials for One {
    fn scram(&self, mechanism: ScramMechanism, user: &str) -> Option<ScramCredential> {
        (user == "user")
            .then(|| ScramCredential::with_salt(mechanism, "pencil", b"fuzz-salt", 4096).ok())
            .flatten()
    }
}

/// A key set with one RSA key whose private half nobody has.
const JWKS: &[u8] = br#"{"keys":[{"kty":"RSA","kid":"k1","use":"sig","alg":"RS256","n":"sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw","e":"AQAB"}]}"#;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    let tokens: Vec<&[u8]> = rest.split(|&b| b == 0xFF).take(4).collect();
    match kind % 5 {
        0 => {
            let mut s = PlainServer::new();
            run(tokens, |t| s.step(t, &One));
        }
        1 | 2 => {
            let m = if kind % 5 == 1 {
                ScramMechanism::Sha256
            } else {
                ScramMechanism::Sha512
            };
            let mut s = ScramServer::new(m);
            run(tokens, |t| s.step(t, &One));
        }
        3 => {
            let v = JwtValidator::from_jwks(JWKS, ValidatorOptions::default())
                .expect("the fixed key set loads");
            let mut s = OAuthBearerServer::new();
            run(tokens, |t| s.step(t, &v, 1_800_000_000_000));
        }
        _ => {
            let cert = tokens.first().copied().unwrap_or_default();
            let rules = tokens.get(1).map(|r| String::from_utf8_lossy(r).into_owned());
            if let Ok(name) = subject_name(cert) {
                let mapper = match rules.as_deref().map(PrincipalMapper::parse) {
                    Some(Ok(m)) => m,
                    _ => PrincipalMapper::default_rules(),
                };
                let _ = mapper.map(&name);
            }
        }
    }
});

/// Feed the tokens in order; after the exchange ends (done or failed) nothing else may succeed.
fn run(tokens: Vec<&[u8]>, mut step: impl FnMut(&[u8]) -> strata_security::Result<Step>) {
    let mut ended = false;
    for t in tokens {
        match step(t) {
            Ok(Step::Challenge(_)) => assert!(!ended, "a challenge after the exchange ended"),
            Ok(Step::Done { user, .. }) => {
                assert!(!ended, "success after the exchange ended");
                // PLAIN and SCRAM can only succeed for the one user with credentials, and
                // only with its password, which the fuzzer would have to find; OAUTHBEARER
                // cannot succeed without the key's private half.
                assert_eq!(user, "user", "authenticated someone without credentials");
                ended = true;
            }
            Err(_) => ended = true,
        }
    }
}
