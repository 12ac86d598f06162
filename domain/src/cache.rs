//! Caching decorators for the authentication and authorization ports.
//!
//! Authentication results are kept for a short time, never past the token's own expiry (read
//! from a JWT's `exp` when the token is one), keyed by a SHA-256 of the token so no token is
//! held in memory longer than a request. Authorization decisions are kept briefly, allowed
//! and denied for their own durations. Failures are never cached. Both caches are bounded.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use base64::Engine;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::error::Result;
use crate::ports::{Authenticator, Authorizer};
use crate::types::{BearerToken, ResourceAttributes, User};

/// Most entries a cache holds; past that, expired entries go, then everything.
pub const MAX_ENTRIES: usize = 10_000;

/// A bounded map whose entries expire.
#[derive(Debug)]
struct Expiring<K, V> {
    entries: Mutex<HashMap<K, (Instant, V)>>,
}

impl<K: Eq + Hash, V: Clone> Expiring<K, V> {
    fn new() -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, key: &K) -> Option<V> {
        let entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        entries
            .get(key)
            .filter(|(until, _)| Instant::now() < *until)
            .map(|(_, v)| v.clone())
    }

    fn put(&self, key: K, value: V, ttl: Duration) {
        if ttl.is_zero() {
            return;
        }
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if entries.len() >= MAX_ENTRIES {
            let now = Instant::now();
            entries.retain(|_, (until, _)| now < *until);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(key, (Instant::now() + ttl, value));
    }
}

/// The `exp` of a JWT, read without verifying it: used only to shorten a cache lifetime.
pub fn jwt_expiry(token: &str) -> Option<SystemTime> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?.as_f64()?;
    (exp.is_finite() && exp >= 0.0).then(|| UNIX_EPOCH + Duration::from_secs_f64(exp))
}

/// Caches an [`Authenticator`]'s successes.
pub struct CachedAuthenticator {
    inner: Arc<dyn Authenticator>,
    ttl: Duration,
    cache: Expiring<[u8; 32], User>,
}

impl CachedAuthenticator {
    /// Keeps successes for `ttl` (never past the token's expiry).
    pub fn new(inner: Arc<dyn Authenticator>, ttl: Duration) -> Self {
        Self {
            inner,
            ttl,
            cache: Expiring::new(),
        }
    }
}

#[async_trait]
impl Authenticator for CachedAuthenticator {
    async fn authenticate(&self, token: &BearerToken) -> Result<User> {
        let key: [u8; 32] = Sha256::digest(token.expose().as_bytes()).into();
        if let Some(user) = self.cache.get(&key) {
            return Ok(user);
        }
        let user = self.inner.authenticate(token).await?;
        let ttl = match jwt_expiry(token.expose()) {
            Some(exp) => exp
                .duration_since(SystemTime::now())
                .unwrap_or_default()
                .min(self.ttl),
            None => self.ttl,
        };
        self.cache.put(key, user.clone(), ttl);
        Ok(user)
    }
}

/// Caches an [`Authorizer`]'s decisions.
pub struct CachedAuthorizer {
    inner: Arc<dyn Authorizer>,
    allowed_ttl: Duration,
    denied_ttl: Duration,
    cache: Expiring<(User, ResourceAttributes), bool>,
}

impl CachedAuthorizer {
    /// Keeps "allowed" for `allowed_ttl` and "denied" for `denied_ttl`.
    pub fn new(inner: Arc<dyn Authorizer>, allowed_ttl: Duration, denied_ttl: Duration) -> Self {
        Self {
            inner,
            allowed_ttl,
            denied_ttl,
            cache: Expiring::new(),
        }
    }
}

#[async_trait]
impl Authorizer for CachedAuthorizer {
    async fn allowed(&self, user: &User, attributes: &ResourceAttributes) -> Result<bool> {
        let key = (user.clone(), attributes.clone());
        if let Some(decision) = self.cache.get(&key) {
            return Ok(decision);
        }
        let decision = self.inner.allowed(user, attributes).await?;
        self.cache.put(
            key,
            decision,
            if decision {
                self.allowed_ttl
            } else {
                self.denied_ttl
            },
        );
        Ok(decision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::{MockAuthenticator, MockAuthorizer};
    use crate::types::{CaptureRef, Verb};

    fn jwt(exp: u64) -> String {
        let e = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        format!(
            "{}.{}.sig",
            e(r#"{"alg":"RS256"}"#),
            e(&format!(r#"{{"exp":{exp}}}"#))
        )
    }

    #[tokio::test(start_paused = true)]
    async fn authentication_is_cached_for_its_ttl_then_asked_again() {
        let mut inner = MockAuthenticator::new();
        inner
            .expect_authenticate()
            .times(2)
            .returning(|_| Ok(User::named("jane")));
        let cached = CachedAuthenticator::new(Arc::new(inner), Duration::from_secs(10));
        let token = BearerToken::new("opaque-token").unwrap();
        assert_eq!(cached.authenticate(&token).await.unwrap().name, "jane");
        tokio::time::advance(Duration::from_secs(9)).await;
        cached.authenticate(&token).await.unwrap();
        tokio::time::advance(Duration::from_secs(2)).await;
        cached.authenticate(&token).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn failures_are_not_cached_and_expired_jwts_are_not_kept() {
        let mut inner = MockAuthenticator::new();
        inner.expect_authenticate().times(2).returning(|_| {
            Err(crate::Error::Unauthenticated {
                reason: "no".into(),
            })
        });
        let cached = CachedAuthenticator::new(Arc::new(inner), Duration::from_secs(10));
        let token = BearerToken::new("bad").unwrap();
        assert!(cached.authenticate(&token).await.is_err());
        assert!(cached.authenticate(&token).await.is_err());

        let mut inner = MockAuthenticator::new();
        inner
            .expect_authenticate()
            .times(2)
            .returning(|_| Ok(User::named("jane")));
        let cached = CachedAuthenticator::new(Arc::new(inner), Duration::from_secs(10));
        let expired = BearerToken::new(&jwt(1)).unwrap();
        cached.authenticate(&expired).await.unwrap();
        cached.authenticate(&expired).await.unwrap();
    }

    #[test]
    fn jwt_expiry_reads_exp_and_ignores_other_tokens() {
        assert_eq!(
            jwt_expiry(&jwt(2_000_000_000)),
            Some(UNIX_EPOCH + Duration::from_secs(2_000_000_000))
        );
        assert_eq!(jwt_expiry("opaque"), None);
        assert_eq!(jwt_expiry("a.!!!.c"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn denials_are_kept_shorter_than_permissions() {
        let mut inner = MockAuthorizer::new();
        inner
            .expect_allowed()
            .times(3)
            .returning(|u, _| Ok(u.name == "jane"));
        let cached = CachedAuthorizer::new(
            Arc::new(inner),
            Duration::from_secs(10),
            Duration::from_secs(5),
        );
        let attrs =
            ResourceAttributes::capture_files(Verb::Get, &CaptureRef::parse("dev", "c").unwrap());
        let (jane, bob) = (User::named("jane"), User::named("bob"));
        assert!(cached.allowed(&jane, &attrs).await.unwrap());
        assert!(!cached.allowed(&bob, &attrs).await.unwrap());
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(cached.allowed(&jane, &attrs).await.unwrap()); // still cached
        assert!(!cached.allowed(&bob, &attrs).await.unwrap()); // asked again
    }
}
