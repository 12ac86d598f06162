//! A simulated Dex: OpenID discovery, JWKS, RS256 ID tokens, key rotation on request.
//!
//! Its keys are fixed test keys (`tests/fixtures/dex`), so starting it costs no key generation.
//! When the cluster's `dexDown` fault is set, its connections are closed at once.

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::cluster::lock;
use crate::http::{Body, json, text};

const KEYS: [(&str, &str); 3] = [
    (
        include_str!("../fixtures/dex/key1.pem"),
        include_str!("../fixtures/dex/key1.modulus"),
    ),
    (
        include_str!("../fixtures/dex/key2.pem"),
        include_str!("../fixtures/dex/key2.modulus"),
    ),
    (
        include_str!("../fixtures/dex/key3.pem"),
        include_str!("../fixtures/dex/key3.modulus"),
    ),
];

/// The audience Dex issues tokens for (the manager's client id).
pub const CLIENT_ID: &str = "tigera-manager";

/// The simulated Dex.
#[derive(Default)]
pub struct Dex {
    /// `https://127.0.0.1:{port}/dex`, set once the port is known.
    issuer: std::sync::OnceLock<String>,
    /// Index into the fixture keys of the signing key; the JWKS publishes it and the previous one.
    current: Mutex<usize>,
    /// Requests for the JWKS so far.
    keys_requests: std::sync::atomic::AtomicUsize,
    /// How long the JWKS takes to answer, in milliseconds.
    keys_delay_ms: std::sync::atomic::AtomicU64,
    /// Answer the JWKS with 500.
    keys_failing: std::sync::atomic::AtomicBool,
}

fn kid(index: usize) -> String {
    format!("sim-key-{}", index + 1)
}

fn jwk(index: usize) -> Value {
    let hex = KEYS[index].1.trim();
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap_or(0))
        .collect();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    json!({"kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid(index), "n": b64.encode(bytes), "e": "AQAB"})
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Dex {
    /// A Dex whose issuer is set later with [`Dex::set_issuer`].
    pub fn new() -> Self {
        Self::default()
    }

    /// How many times the JWKS was asked for.
    pub fn keys_requests(&self) -> usize {
        self.keys_requests.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Makes the JWKS answer after `delay`, or with 500 when `failing`.
    pub fn set_keys_behaviour(&self, delay: std::time::Duration, failing: bool) {
        use std::sync::atomic::Ordering::SeqCst;
        self.keys_delay_ms
            .store(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX), SeqCst);
        self.keys_failing.store(failing, SeqCst);
    }

    /// Sets the issuer once the listening port is known.
    pub fn set_issuer(&self, issuer: String) {
        let _ = self.issuer.set(issuer);
    }

    /// The issuer, `https://127.0.0.1:{port}/dex`.
    pub fn issuer(&self) -> &str {
        self.issuer.get().map(String::as_str).unwrap_or_default()
    }

    /// The id of the key tokens are signed with now.
    pub fn current_kid(&self) -> String {
        kid(*lock(&self.current))
    }

    /// Switches to the next signing key; the JWKS then publishes it (and the previous one).
    pub fn rotate(&self) -> String {
        let mut current = lock(&self.current);
        *current = (*current + 1) % KEYS.len();
        kid(*current)
    }

    /// The published key set.
    pub fn jwks(&self) -> Value {
        let current = *lock(&self.current);
        let previous = (current + KEYS.len() - 1) % KEYS.len();
        let mut keys = vec![jwk(current)];
        if previous != current && current != 0 {
            keys.push(jwk(previous));
        }
        json!({"keys": keys})
    }

    /// Signs `claims` with the current key.
    pub fn sign(&self, claims: &Value) -> String {
        let index = *lock(&self.current);
        sign_with(index, claims)
    }

    /// An ID token for `email` with `groups`, valid for an hour.
    pub fn id_token(&self, email: &str, groups: &[String]) -> String {
        let t = now();
        self.sign(&json!({
            "iss": self.issuer(), "aud": CLIENT_ID, "sub": format!("Cg{}", crate::cluster::short_hash(email, 10)),
            "email": email, "email_verified": true, "groups": groups, "name": email.split('@').next().unwrap_or(email),
            "iat": t, "exp": t + 3600,
        }))
    }

    /// Handles one request.
    pub async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        match req.uri().path() {
            "/dex/.well-known/openid-configuration" => json(
                StatusCode::OK,
                &json!({
                    "issuer": self.issuer(),
                    "authorization_endpoint": format!("{}/auth", self.issuer()),
                    "token_endpoint": format!("{}/token", self.issuer()),
                    "jwks_uri": format!("{}/keys", self.issuer()),
                    "response_types_supported": ["code"],
                    "subject_types_supported": ["public"],
                    "id_token_signing_alg_values_supported": ["RS256"],
                    "scopes_supported": ["openid", "email", "groups", "profile", "offline_access"],
                    "claims_supported": ["iss", "sub", "aud", "iat", "exp", "email", "email_verified", "groups", "name"],
                }),
            ),
            "/dex/keys" => {
                use std::sync::atomic::Ordering::SeqCst;
                self.keys_requests.fetch_add(1, SeqCst);
                let delay = self.keys_delay_ms.load(SeqCst);
                if delay > 0 {
                    tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
                }
                if self.keys_failing.load(SeqCst) {
                    text(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
                } else {
                    json(StatusCode::OK, &self.jwks())
                }
            }
            _ => text(StatusCode::NOT_FOUND, "404 page not found"),
        }
    }
}

/// Signs `claims` with fixture key `index` (tests use a key outside the published set).
pub fn sign_with(index: usize, claims: &Value) -> String {
    let key = EncodingKey::from_rsa_pem(KEYS[index].0.as_bytes()).expect("a valid fixture key");
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid(index));
    jsonwebtoken::encode(&header, claims, &key).expect("signing a token")
}
