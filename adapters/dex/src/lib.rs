//! The dex adapter: verifies Dex-issued OIDC ID tokens in the service (SPEC section 3, step 2).
//!
//! RS256 only; keys from the JWKS at the configured URL (trusting `DEX_CA_FILE` when set),
//! cached, fetched again when a token names an unknown `kid`: at most once every
//! [`REFRESH_INTERVAL`] whether the fetch worked or failed (a failure is answered from memory
//! until then), and once for all the requests that need it (single flight: they wait on one
//! fetch, no lock is held across the network). `iss`, `aud` (client id), `exp` and `nbf` are
//! checked with [`LEEWAY`]. [`IssuerRouted`] sends tokens whose (unverified) `iss` is not
//! Dex's to the Kubernetes review.
//!
//! A JWKS body delimited by the connection's close (HTTP/1, no length, not chunked) whose
//! server leaves without TLS close_notify is complete if it parses: the missing alert cannot
//! hide a truncation the JSON parser would not see, which is what curl and Go accept too.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use packetcapture_domain::{
    Authenticator, Backend, BearerToken, Error as DomainError, Result, User,
};
use packetcapture_tls::HttpUrl;
use serde::Deserialize;
use serde_json::Value;
use smart_default::SmartDefault;
use tokio::time::Instant;

/// Clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY: u64 = 30;
/// Least time between two JWKS fetches caused by unknown key ids.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(5);
/// How long a JWKS fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest JWKS accepted.
const MAX_JWKS: usize = 1 << 20;
/// Why a token whose key is not in the JWKS is refused.
const UNKNOWN_KEY: &str = "the token is signed by a key Dex does not publish";

/// Dex settings (`PACKETCAPTURE_API_DEX_*`), with SPEC's defaults.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, SmartDefault)]
#[serde(default, deny_unknown_fields)]
pub struct DexConfig {
    /// Verify Dex tokens in the service.
    pub enabled: bool,
    /// Expected `iss`, exactly.
    #[default(_code = "Issuer(\"https://127.0.0.1:5556/dex\".into())")]
    pub issuer: Issuer,
    /// Expected in `aud`.
    #[default("tigera-manager")]
    pub client_id: String,
    /// The JWKS URL.
    #[default(_code = "default_jwk_url()")]
    pub jwk_url: HttpUrl,
    /// The username claim.
    #[default("email")]
    pub user_claim: String,
    /// The groups claim.
    #[default("groups")]
    pub groups_claim: String,
    /// `-` for none; empty means `{issuer}#` unless the claim is `email`.
    pub username_prefix: String,
    /// Put before each group.
    pub groups_prefix: String,
    /// CA bundle for the JWKS URL; system roots when `None`.
    pub ca_file: Option<PathBuf>,
}

fn default_jwk_url() -> HttpUrl {
    HttpUrl::from_static("https://tigera-dex.tigera-dex.svc.cluster.local:5556/dex/keys")
}

/// The expected issuer: an http(s) URL, kept exactly as configured since `iss` is compared
/// as a string.
#[derive(Clone, Debug, PartialEq, Eq, serde_with::DeserializeFromStr)]
pub struct Issuer(String);

impl Issuer {
    /// The issuer as configured.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Issuer {
    type Err = String;

    fn from_str(value: &str) -> std::result::Result<Self, String> {
        HttpUrl::from_str(value)?;
        Ok(Self(value.trim().to_owned()))
    }
}

/// Setup and fetch failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The CA bundle could not be used.
    #[error("cannot use the CA bundle for the JWKS")]
    Ca(#[source] packetcapture_tls::Error),
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client for the JWKS")]
    Client(#[source] reqwest::Error),
    /// Fetching the JWKS failed.
    #[error("fetching the JWKS from {url}")]
    Fetch {
        /// The URL.
        url: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// The JWKS answered with an error status.
    #[error("the JWKS at {url} answered {status}")]
    Status {
        /// The URL.
        url: String,
        /// The status.
        status: u16,
    },
    /// The JWKS is not a key set.
    #[error("the JWKS at {url} is not a JSON key set")]
    Parse {
        /// The URL.
        url: String,
    },
    /// The JWKS is larger than anyone publishes.
    #[error("the JWKS at {url} is larger than {MAX_JWKS} bytes")]
    TooLarge {
        /// The URL.
        url: String,
    },
    /// The fetch ended before it finished (the task running it panicked or was dropped).
    #[error("the JWKS fetch from {url} ended before it finished")]
    Interrupted {
        /// The URL.
        url: String,
    },
}

/// Verifies Dex ID tokens.
pub struct DexAuthenticator {
    config: DexConfig,
    http: reqwest::Client,
    keys: Arc<std::sync::Mutex<KeyCache>>,
    refresh_interval: Duration,
}

type Keys = Arc<HashMap<String, DecodingKey>>;
type Refresh = Shared<BoxFuture<'static, std::result::Result<Keys, Arc<Error>>>>;

/// What is known of Dex's keys. The lock is held only to read or change this, never across
/// a fetch.
#[derive(Default)]
struct KeyCache {
    keys: Keys,
    /// When the last fetch started: the next waits [`DexAuthenticator::refresh_interval`].
    attempted: Option<Instant>,
    /// Why the last fetch failed, until one works.
    failure: Option<Arc<Error>>,
    /// The fetch under way, which every request that needs it awaits.
    refreshing: Option<Refresh>,
}

fn lock(cache: &std::sync::Mutex<KeyCache>) -> std::sync::MutexGuard<'_, KeyCache> {
    cache
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Clears the fetch under way when the task running it ends, however it ends.
struct Ending(Arc<std::sync::Mutex<KeyCache>>);

impl Drop for Ending {
    fn drop(&mut self) {
        lock(&self.0).refreshing = None;
    }
}

impl std::fmt::Debug for DexAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DexAuthenticator")
            .field("issuer", &self.config.issuer)
            .finish()
    }
}

fn unauthenticated(reason: impl Into<String>) -> DomainError {
    DomainError::Unauthenticated {
        reason: reason.into(),
    }
}

impl DexAuthenticator {
    /// Builds the HTTP client (with the CA bundle); fetches nothing yet.
    pub fn new(config: DexConfig) -> std::result::Result<Self, Error> {
        let mut builder = reqwest::Client::builder().timeout(FETCH_TIMEOUT);
        if let Some(path) = &config.ca_file {
            let certs = packetcapture_tls::certificates(path)
                .map_err(Error::Ca)?
                .iter()
                .map(|der| reqwest::Certificate::from_der(der))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(Error::Client)?;
            builder = builder.tls_certs_only(certs);
        }
        Ok(Self {
            config,
            http: builder.build().map_err(Error::Client)?,
            keys: Arc::new(std::sync::Mutex::new(KeyCache::default())),
            refresh_interval: REFRESH_INTERVAL,
        })
    }

    /// Changes the least time between two fetches for unknown key ids.
    pub fn with_refresh_interval(mut self, interval: Duration) -> Self {
        self.refresh_interval = interval;
        self
    }

    /// True if the token says Dex issued it.
    pub fn issued_here(&self, token: &BearerToken) -> bool {
        token
            .unverified_issuer()
            .is_some_and(|iss| iss == self.config.issuer.as_str())
    }

    /// Fetches and parses the JWKS.
    async fn fetch(
        http: &reqwest::Client,
        url: &str,
    ) -> std::result::Result<HashMap<String, DecodingKey>, Error> {
        let fetch_error = |source| Error::Fetch {
            url: url.to_owned(),
            source,
        };
        let mut response = http.get(url).send().await.map_err(fetch_error)?;
        if !response.status().is_success() {
            return Err(Error::Status {
                url: url.to_owned(),
                status: response.status().as_u16(),
            });
        }
        let delimited_by_close = response.version() <= reqwest::Version::HTTP_11
            && !response
                .headers()
                .contains_key(reqwest::header::CONTENT_LENGTH)
            && !response
                .headers()
                .get_all(reqwest::header::TRANSFER_ENCODING)
                .iter()
                .any(|v| {
                    v.to_str()
                        .is_ok_and(|v| v.to_ascii_lowercase().contains("chunked"))
                });
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > MAX_JWKS {
                        return Err(Error::TooLarge {
                            url: url.to_owned(),
                        });
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) if delimited_by_close && ended_without_close_notify(&e) => {
                    tracing::debug!(
                        url,
                        "the JWKS server closed without TLS close_notify; the body ends there"
                    );
                    break;
                }
                Err(e) => return Err(fetch_error(e)),
            }
        }
        let set: Value = serde_json::from_slice(&body).map_err(|_| Error::Parse {
            url: url.to_owned(),
        })?;
        let keys = set
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| Error::Parse {
                url: url.to_owned(),
            })?;
        let mut out = HashMap::new();
        for k in keys {
            let text = |name: &str| k.get(name).and_then(Value::as_str);
            let usable = text("kty") == Some("RSA")
                && text("use").is_none_or(|u| u == "sig")
                && text("alg").is_none_or(|a| a == "RS256");
            if let (true, Some(kid), Some(n), Some(e)) = (usable, text("kid"), text("n"), text("e"))
            {
                match DecodingKey::from_rsa_components(n, e) {
                    Ok(key) => {
                        out.insert(kid.to_owned(), key);
                    }
                    Err(err) => tracing::warn!(kid, error = %err, "skipping an unusable JWKS key"),
                }
            }
        }
        Ok(out)
    }

    /// The key for `kid`: cached, or from a fetch (shared with every request waiting for one,
    /// and at most one started every refresh interval).
    async fn key(&self, kid: &str) -> Result<DecodingKey> {
        let refresh = {
            let mut cache = lock(&self.keys);
            if let Some(key) = cache.keys.get(kid) {
                return Ok(key.clone());
            }
            match &cache.refreshing {
                Some(refresh) => refresh.clone(),
                None => {
                    if let Some(at) = cache.attempted
                        && at.elapsed() < self.refresh_interval
                    {
                        return Err(match &cache.failure {
                            Some(e) => DomainError::unavailable(
                                Backend::IdentityProvider,
                                format!(
                                    "fetch the signing keys of Dex (the last attempt, {} s ago, failed; tried again at most every {} s)",
                                    at.elapsed().as_secs(),
                                    self.refresh_interval.as_secs_f32()
                                ),
                                e.clone(),
                            ),
                            None => unauthenticated(UNKNOWN_KEY),
                        });
                    }
                    cache.attempted = Some(Instant::now());
                    let refresh = self.start_refresh();
                    cache.refreshing = Some(refresh.clone());
                    refresh
                }
            }
        };
        match refresh.await {
            Ok(keys) => keys
                .get(kid)
                .cloned()
                .ok_or_else(|| unauthenticated(UNKNOWN_KEY)),
            // Without the key there is nothing to verify with: Dex is needed now.
            Err(e) => Err(DomainError::unavailable(
                Backend::IdentityProvider,
                "fetch the signing keys of Dex",
                e,
            )),
        }
    }

    /// Starts a fetch in a task of its own (it finishes even if every waiter leaves) that
    /// stores what it learns.
    fn start_refresh(&self) -> Refresh {
        let (http, url, cache) = (
            self.http.clone(),
            self.config.jwk_url.to_string(),
            self.keys.clone(),
        );
        let task = tokio::spawn({
            let url = url.clone();
            async move {
                let ending = Ending(cache);
                let outcome = Self::fetch(&http, &url)
                    .await
                    .map(Arc::new)
                    .map_err(Arc::new);
                let mut cache = lock(&ending.0);
                match &outcome {
                    Ok(keys) => {
                        cache.keys = keys.clone();
                        cache.failure = None;
                    }
                    Err(e) => {
                        tracing::warn!(error = %packetcapture_domain::error::chain(e.as_ref()), "fetching Dex's signing keys failed");
                        cache.failure = Some(e.clone());
                    }
                }
                outcome
            }
        });
        async move {
            task.await
                .unwrap_or_else(|_| Err(Arc::new(Error::Interrupted { url })))
        }
        .boxed()
        .shared()
    }

    fn user(&self, claims: &Value) -> Result<User> {
        let c = &self.config;
        let name = claims
            .get(&c.user_claim)
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| unauthenticated(format!("the token has no {} claim", c.user_claim)))?;
        if c.user_claim == "email"
            && claims.get("email_verified").and_then(Value::as_bool) == Some(false)
        {
            return Err(unauthenticated("the token's email is not verified"));
        }
        let prefix = match c.username_prefix.as_str() {
            "-" => String::new(),
            "" if c.user_claim != "email" => format!("{}#", c.issuer.as_str()),
            p => p.to_owned(),
        };
        let groups = match claims.get(&c.groups_claim) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(g)) => vec![g.clone()],
            Some(Value::Array(items)) => items
                .iter()
                .map(|g| g.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    unauthenticated(format!(
                        "the {} claim is not a list of strings",
                        c.groups_claim
                    ))
                })?,
            Some(_) => {
                return Err(unauthenticated(format!(
                    "the {} claim is not a list of strings",
                    c.groups_claim
                )));
            }
        };
        let mut extra = BTreeMap::new();
        for key in ["iss", "sub"] {
            if let Some(v) = claims.get(key).and_then(Value::as_str) {
                extra.insert(key.to_owned(), vec![v.to_owned()]);
            }
        }
        Ok(User {
            name: format!("{prefix}{name}"),
            uid: String::new(),
            groups: groups
                .into_iter()
                .map(|g| format!("{}{g}", c.groups_prefix))
                .collect(),
            extra,
        })
    }
}

fn reason(e: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::ExpiredSignature => "the token has expired".into(),
        K::ImmatureSignature => "the token is not valid yet".into(),
        K::InvalidAudience => "the token is not for this client".into(),
        K::InvalidIssuer => "the token is from another issuer".into(),
        K::InvalidSignature => "the token's signature does not verify".into(),
        K::InvalidAlgorithm => "the token's algorithm is not RS256".into(),
        K::MissingRequiredClaim(c) => format!("the token has no {c} claim"),
        _ => "the token is malformed".into(),
    }
}

#[async_trait]
impl Authenticator for DexAuthenticator {
    async fn authenticate(&self, token: &BearerToken) -> Result<User> {
        let header =
            jsonwebtoken::decode_header(token.expose()).map_err(|e| unauthenticated(reason(&e)))?;
        if header.alg != Algorithm::RS256 {
            return Err(unauthenticated("the token's algorithm is not RS256"));
        }
        let kid = header
            .kid
            .ok_or_else(|| unauthenticated("the token names no signing key"))?;
        let key = self.key(&kid).await?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.leeway = LEEWAY;
        validation.validate_nbf = true;
        validation.set_issuer(&[self.config.issuer.as_str()]);
        validation.set_audience(&[&self.config.client_id]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let data = jsonwebtoken::decode::<Value>(token.expose(), &key, &validation)
            .map_err(|e| unauthenticated(reason(&e)))?;
        self.user(&data.claims)
    }
}

/// True when `e` comes from the TLS stream ending without close_notify.
fn ended_without_close_notify(e: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::UnexpectedEof
        {
            return true;
        }
        source = err.source();
    }
    false
}

/// Dex's tokens to Dex, every other token to the review.
pub struct IssuerRouted {
    dex: Arc<DexAuthenticator>,
    review: Arc<dyn Authenticator>,
}

impl IssuerRouted {
    /// Routes by the token's `iss`.
    pub fn new(dex: Arc<DexAuthenticator>, review: Arc<dyn Authenticator>) -> Self {
        Self { dex, review }
    }
}

#[async_trait]
impl Authenticator for IssuerRouted {
    async fn authenticate(&self, token: &BearerToken) -> Result<User> {
        if self.dex.issued_here(token) {
            self.dex.authenticate(token).await
        } else {
            self.review.authenticate(token).await
        }
    }
}
