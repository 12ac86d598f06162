//! Caching decorators for the authentication and authorization ports.
//!
//! Authentication results are kept for a short time, never past the token's own expiry (read
//! from a JWT's `exp` when the token is one), keyed by a SHA-256 of the token so no token is
//! held in memory longer than a request. Authorization decisions are kept briefly, allowed
//! and denied for their own durations, keyed by the whole user (name, uid, groups, extra) and
//! the whole question. Failures are never cached. Both caches are bounded.

use std::hash::Hash;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use crate::error::Result;
use crate::expiring::ExpiringCache;
use crate::ports::{Authenticator, Authorizer};
use crate::types::{BearerToken, ResourceAttributes, User};

/// Most entries a cache holds.
pub const MAX_ENTRIES: usize = 10_000;

/// Told of every lookup: `true` for a hit, `false` for a miss (the caller counts them).
pub type LookupObserver = Arc<dyn Fn(bool) + Send + Sync>;

fn unobserved() -> LookupObserver {
    Arc::new(|_| {})
}

/// A port behind a bounded cache of its answers: successes live for `kept`, and where the
/// answer is a denial, denials for `denied`.
pub struct Cached<P: ?Sized, K, V> {
    inner: Arc<P>,
    kept: Duration,
    denied: Duration,
    cache: ExpiringCache<K, V>,
    observer: LookupObserver,
}

/// Caches an [`Authenticator`]'s successes, keyed by the token's SHA-256.
pub type CachedAuthenticator = Cached<dyn Authenticator, [u8; 32], User>;

/// Caches an [`Authorizer`]'s decisions, keyed by the whole user and question.
pub type CachedAuthorizer = Cached<dyn Authorizer, (User, ResourceAttributes), bool>;

impl<P: ?Sized, K: Eq + Hash + Clone, V: Clone> Cached<P, K, V> {
    fn with(inner: Arc<P>, kept: Duration, denied: Duration) -> Self {
        Self {
            inner,
            kept,
            denied,
            cache: ExpiringCache::new(MAX_ENTRIES),
            observer: unobserved(),
        }
    }

    /// Tells `observer` of every lookup, hit or miss.
    #[must_use]
    pub fn observed(mut self, observer: LookupObserver) -> Self {
        self.observer = observer;
        self
    }

    fn lookup(&self, key: &K) -> Option<V> {
        let cached = self.cache.get(key);
        (self.observer)(cached.is_some());
        cached
    }
}

impl CachedAuthenticator {
    /// Keeps successes for `ttl` (never past the token's expiry).
    pub fn new(inner: Arc<dyn Authenticator>, ttl: Duration) -> Self {
        Self::with(inner, ttl, Duration::ZERO)
    }
}

#[async_trait]
impl Authenticator for CachedAuthenticator {
    async fn authenticate(&self, token: &BearerToken) -> Result<User> {
        let key: [u8; 32] = Sha256::digest(token.expose().as_bytes()).into();
        if let Some(user) = self.lookup(&key) {
            return Ok(user);
        }
        let user = self.inner.authenticate(token).await?;
        let ttl = match token.unverified_expiry() {
            Some(exp) => exp
                .duration_since(SystemTime::now())
                .unwrap_or_default()
                .min(self.kept),
            None => self.kept,
        };
        self.cache.insert(key, user.clone(), ttl);
        Ok(user)
    }
}

impl CachedAuthorizer {
    /// Keeps "allowed" for `allowed_ttl` and "denied" for `denied_ttl`.
    pub fn new(inner: Arc<dyn Authorizer>, allowed_ttl: Duration, denied_ttl: Duration) -> Self {
        Self::with(inner, allowed_ttl, denied_ttl)
    }
}

#[async_trait]
impl Authorizer for CachedAuthorizer {
    async fn allowed(&self, user: &User, attributes: &ResourceAttributes) -> Result<bool> {
        let key = (user.clone(), attributes.clone());
        if let Some(decision) = self.lookup(&key) {
            return Ok(decision);
        }
        let decision = self.inner.allowed(user, attributes).await?;
        let ttl = if decision { self.kept } else { self.denied };
        self.cache.insert(key, decision, ttl);
        Ok(decision)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use base64::Engine;

    use super::*;
    use crate::ports::MockAuthenticator;
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

    /// Answers "allowed" for users named jane, counting the questions it is asked.
    #[derive(Default)]
    struct Counting(AtomicUsize);

    #[async_trait]
    impl Authorizer for Counting {
        async fn allowed(&self, user: &User, a: &ResourceAttributes) -> Result<bool> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(user.name == "jane"
                && user.groups.iter().all(|g| g != "banned")
                && a.namespace == "dev")
        }
    }

    fn files() -> ResourceAttributes {
        ResourceAttributes::capture_files(Verb::Get, &CaptureRef::parse("dev", "c").unwrap())
    }

    /// Asks `user` every `step` until the inner authorizer is asked again; the time it took.
    async fn lifetime(cached: &CachedAuthorizer, inner: &Counting, user: &User) -> Duration {
        let start = tokio::time::Instant::now();
        cached.allowed(user, &files()).await.unwrap();
        let asked = inner.0.load(Ordering::SeqCst);
        while inner.0.load(Ordering::SeqCst) == asked {
            tokio::time::advance(Duration::from_millis(100)).await;
            cached.allowed(user, &files()).await.unwrap();
        }
        start.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn permissions_live_ten_seconds_and_denials_five() {
        let inner = Arc::new(Counting::default());
        let cached = CachedAuthorizer::new(
            inner.clone(),
            Duration::from_secs(10),
            Duration::from_secs(5),
        );
        let allowed = lifetime(&cached, &inner, &User::named("jane")).await;
        let denied = lifetime(&cached, &inner, &User::named("bob")).await;
        assert_eq!(allowed, Duration::from_secs(10), "allowed");
        assert_eq!(denied, Duration::from_secs(5), "denied");
    }

    #[tokio::test(start_paused = true)]
    async fn a_user_of_the_same_name_with_other_groups_or_extras_is_asked_anew() {
        let inner = Arc::new(Counting::default());
        let cached = CachedAuthorizer::new(
            inner.clone(),
            Duration::from_secs(10),
            Duration::from_secs(5),
        );
        let jane = User::named("jane");
        let banned = User {
            groups: vec!["banned".into()],
            ..User::named("jane")
        };
        let scoped = User {
            extra: [("scopes".to_owned(), vec!["view".to_owned()])].into(),
            ..User::named("jane")
        };
        assert!(cached.allowed(&jane, &files()).await.unwrap());
        assert!(
            !cached.allowed(&banned, &files()).await.unwrap(),
            "another group set gets its own decision, not jane's cached one"
        );
        assert!(cached.allowed(&scoped, &files()).await.unwrap());
        assert_eq!(
            inner.0.load(Ordering::SeqCst),
            3,
            "three users, three questions"
        );
        assert!(cached.allowed(&jane, &files()).await.unwrap());
        assert_eq!(
            inner.0.load(Ordering::SeqCst),
            3,
            "the same user hits the cache"
        );
    }
}
