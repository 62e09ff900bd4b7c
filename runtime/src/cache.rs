//! The result cache: bounded, shared by all models, keyed by bundle id plus the item's own key.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

/// Hit and miss counts since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that had to run the model.
    pub misses: u64,
    /// Entries held now.
    pub entries: u64,
}

/// A size-bounded cache of per-item outputs; capacity 0 turns it off.
pub struct ResultCache<V> {
    inner: Option<moka::sync::Cache<u64, V>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl<V: Clone + Send + Sync + 'static> ResultCache<V> {
    /// A cache holding at most `capacity` entries.
    pub fn new(capacity: u64) -> ResultCache<V> {
        let inner = (capacity > 0).then(|| moka::sync::Cache::new(capacity));
        ResultCache { inner, hits: AtomicU64::new(0), misses: AtomicU64::new(0) }
    }

    /// The full key: the bundle id scopes the item key, so a reloaded bundle never sees stale results.
    pub fn key(bundle_id: &str, item_key: u64) -> u64 {
        let mut h = DefaultHasher::new();
        bundle_id.hash(&mut h);
        item_key.hash(&mut h);
        h.finish()
    }

    /// Looks `key` up and counts the hit or miss under `model`.
    pub fn get(&self, key: u64, model: &str) -> Option<V> {
        let inner = self.inner.as_ref()?;
        let found = inner.get(&key);
        if found.is_some() {
            self.hits.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("tandem_cache_hits_total", "model" => model.to_owned()).increment(1);
        } else {
            self.misses.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("tandem_cache_misses_total", "model" => model.to_owned()).increment(1);
        }
        found
    }

    /// Stores a value.
    pub fn insert(&self, key: u64, value: V) {
        if let Some(inner) = &self.inner {
            inner.insert(key, value);
        }
    }

    /// Counts so far.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            entries: self.inner.as_ref().map_or(0, |c| {
                c.run_pending_tasks();
                c.entry_count()
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_hits_and_misses_and_zero_capacity_disables() {
        let cache = ResultCache::<u32>::new(10);
        let k = ResultCache::<u32>::key("sha256:a", 7);
        assert_eq!(cache.get(k, "m"), None);
        cache.insert(k, 3);
        assert_eq!(cache.get(k, "m"), Some(3));
        assert_eq!(cache.get(ResultCache::<u32>::key("sha256:b", 7), "m"), None);
        let s = cache.stats();
        assert_eq!((s.hits, s.misses, s.entries), (1, 2, 1));

        let off = ResultCache::<u32>::new(0);
        off.insert(k, 3);
        assert_eq!(off.get(k, "m"), None);
        assert_eq!(off.stats(), CacheStats::default());
    }

    #[test]
    fn capacity_bounds_the_entries() {
        let cache = ResultCache::<u32>::new(4);
        for i in 0..100 {
            cache.insert(i, i as u32);
        }
        assert!(cache.stats().entries <= 4);
    }
}
