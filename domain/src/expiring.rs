//! One bounded map whose entries expire, for every cache of the service (authentication,
//! authorization, managed-cluster clients and presence).
//!
//! Clocked by `tokio::time::Instant`, so tests with paused time assert lifetimes exactly. When
//! full, an insert first drops expired entries, then the entry closest to expiry.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// A bounded map whose entries expire after their own time to live.
#[derive(Debug)]
pub struct ExpiringCache<K, V> {
    entries: Mutex<HashMap<K, (Instant, V)>>,
    capacity: usize,
}

impl<K: Eq + Hash + Clone, V: Clone> ExpiringCache<K, V> {
    /// A cache holding at most `capacity` entries (at least one).
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, (Instant, V)>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The value, if present and not expired.
    pub fn get(&self, key: &K) -> Option<V> {
        let entries = self.lock();
        entries
            .get(key)
            .filter(|(until, _)| Instant::now() < *until)
            .map(|(_, v)| v.clone())
    }

    /// Keeps `value` for `ttl`; a zero `ttl` keeps nothing.
    pub fn insert(&self, key: K, value: V, ttl: Duration) {
        if ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut entries = self.lock();
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            entries.retain(|_, (until, _)| now < *until);
            if entries.len() >= self.capacity
                && let Some(soonest) = entries
                    .iter()
                    .min_by_key(|(_, (until, _))| *until)
                    .map(|(k, _)| k.clone())
            {
                entries.remove(&soonest);
            }
        }
        entries.insert(key, (now + ttl, value));
    }

    /// The value for `key`, or the one `make` builds (kept for `ttl`).
    pub fn get_or_insert_with<E>(
        &self,
        key: &K,
        ttl: Duration,
        make: impl FnOnce() -> Result<V, E>,
    ) -> Result<V, E> {
        if let Some(v) = self.get(key) {
            return Ok(v);
        }
        let value = make()?;
        self.insert(key.clone(), value.clone(), ttl);
        Ok(value)
    }

    /// How many entries are held, expired ones included.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn entries_live_exactly_their_own_time() {
        let cache = ExpiringCache::new(10);
        cache.insert("a", 1, Duration::from_secs(5));
        cache.insert("b", 2, Duration::from_secs(10));
        cache.insert("zero", 3, Duration::ZERO);
        assert_eq!(cache.get(&"zero"), None, "a zero lifetime keeps nothing");
        tokio::time::advance(Duration::from_millis(4_999)).await;
        assert_eq!((cache.get(&"a"), cache.get(&"b")), (Some(1), Some(2)));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!((cache.get(&"a"), cache.get(&"b")), (None, Some(2)));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(cache.get(&"b"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_cache_drops_expired_entries_then_the_one_closest_to_expiry() {
        let cache = ExpiringCache::new(2);
        cache.insert(1, "short", Duration::from_secs(1));
        cache.insert(2, "long", Duration::from_secs(100));
        cache.insert(3, "new", Duration::from_secs(50));
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get(&1), None, "the one closest to expiry went");
        assert_eq!((cache.get(&2), cache.get(&3)), (Some("long"), Some("new")));
        tokio::time::advance(Duration::from_secs(60)).await;
        cache.insert(4, "later", Duration::from_secs(100));
        assert_eq!(cache.get(&2), Some("long"), "only the expired one went");
        assert_eq!(cache.get(&4), Some("later"));
        cache.insert(2, "replaced", Duration::from_secs(1));
        assert_eq!((cache.len(), cache.get(&2)), (2, Some("replaced")));
    }
}
