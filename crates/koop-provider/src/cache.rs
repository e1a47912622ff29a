//! The data cache in front of `get_data`: keyed by `create_key`, entries expire after their
//! `ttl`, and the cache is bounded by entries and bytes (least recently used goes first).
//!
//! Koop's own memory cache never expires entries; this one does. Time is tokio's clock
//! ([`tokio::time::Instant`]), so tests can pause and advance it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::error::ProviderError;
use crate::model::{ProviderData, ProviderRequest};
use crate::provider::Provider;
use crate::validate::GeoJsonValidator;

struct Entry {
    data: Arc<ProviderData>,
    expires: Instant,
    bytes: usize,
    used: u64,
}

struct Inner {
    entries: HashMap<String, Entry>,
    bytes: usize,
    clock: u64,
}

/// A bounded, expiring cache of provider data.
pub struct DataCache {
    max_entries: usize,
    max_bytes: usize,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for DataCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataCache")
            .field("max_entries", &self.max_entries)
            .field("max_bytes", &self.max_bytes)
            .finish_non_exhaustive()
    }
}

impl Default for DataCache {
    /// 1,000 entries and 256 MiB.
    fn default() -> Self {
        Self::new(1_000, 256 << 20)
    }
}

impl DataCache {
    /// A cache of at most `max_entries` entries and about `max_bytes` bytes of GeoJSON.
    pub fn new(max_entries: usize, max_bytes: usize) -> Self {
        Self {
            max_entries,
            max_bytes,
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                bytes: 0,
                clock: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The entry under `key`, unless it expired (an expired entry is removed).
    pub fn get(&self, key: &str) -> Option<Arc<ProviderData>> {
        let mut inner = self.lock();
        inner.clock += 1;
        let clock = inner.clock;
        let now = Instant::now();
        match inner.entries.get_mut(key) {
            Some(entry) if entry.expires > now => {
                entry.used = clock;
                Some(entry.data.clone())
            }
            Some(_) => {
                if let Some(entry) = inner.entries.remove(key) {
                    inner.bytes -= entry.bytes;
                }
                None
            }
            None => None,
        }
    }

    /// Keeps `data` under `key` for `ttl`, evicting the least recently used entries to stay
    /// within bounds. Data larger than the whole cache is not kept.
    pub fn insert(&self, key: String, data: Arc<ProviderData>, ttl: Duration) {
        let bytes = serde_json::to_vec(&data.features).map_or(0, |json| json.len()) + key.len();
        if bytes > self.max_bytes || self.max_entries == 0 {
            return;
        }
        let mut inner = self.lock();
        inner.clock += 1;
        let used = inner.clock;
        if let Some(old) = inner.entries.remove(&key) {
            inner.bytes -= old.bytes;
        }
        while !inner.entries.is_empty()
            && (inner.entries.len() >= self.max_entries || inner.bytes + bytes > self.max_bytes)
        {
            let oldest = inner
                .entries
                .iter()
                .min_by_key(|(_, entry)| entry.used)
                .map(|(key, _)| key.clone());
            if let Some(oldest) = oldest
                && let Some(entry) = inner.entries.remove(&oldest)
            {
                inner.bytes -= entry.bytes;
            }
        }
        inner.bytes += bytes;
        inner.entries.insert(
            key,
            Entry {
                data,
                expires: Instant::now() + ttl,
                bytes,
                used,
            },
        );
    }

    /// Number of entries (expired ones included until they are next looked up).
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// `true` when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `get_data` through the cache: a fresh entry under `create_key` is answered without calling
/// the provider; otherwise the provider is called, its data validated (outside production), and
/// kept for its `ttl` if it has one. Pass-through providers (no `ttl`) are never cached.
///
/// # Errors
///
/// The provider's.
pub async fn get_data_cached(
    provider: &dyn Provider,
    request: &ProviderRequest,
    cache: &DataCache,
    validator: &GeoJsonValidator,
) -> Result<Arc<ProviderData>, ProviderError> {
    let key = provider.create_key(request);
    if let Some(hit) = cache.get(&key) {
        return Ok(hit);
    }
    let data = Arc::new(provider.get_data(request).await?);
    validator.check_data(&key, &data);
    if let Some(ttl) = data.ttl {
        cache.insert(key, data.clone(), ttl);
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(name: &str) -> Arc<ProviderData> {
        let feature: geojson::Feature = serde_json::from_value(serde_json::json!({
            "type": "Feature", "geometry": null, "properties": {"name": name}
        }))
        .expect("a feature");
        Arc::new(ProviderData {
            features: vec![feature],
            ..ProviderData::default()
        })
    }

    #[test]
    fn the_least_recently_used_entry_goes_first() {
        let cache = DataCache::new(2, 1 << 20);
        let hour = Duration::from_secs(3600);
        cache.insert("a".into(), data("a"), hour);
        cache.insert("b".into(), data("b"), hour);
        assert!(cache.get("a").is_some(), "a is now the most recently used");
        cache.insert("c".into(), data("c"), hour);
        assert_eq!(cache.len(), 2);
        assert!(cache.get("b").is_none(), "b was evicted");
        assert!(cache.get("a").is_some() && cache.get("c").is_some());
    }

    #[test]
    fn bytes_are_bounded_and_entries_expire() {
        let one = serde_json::to_vec(&data("a").features).map_or(0, |json| json.len()) + 1;
        let cache = DataCache::new(100, one * 2);
        let hour = Duration::from_secs(3600);
        for key in ["a", "b", "c"] {
            cache.insert(key.into(), data(key), hour);
        }
        assert_eq!(cache.len(), 2, "two fit in the byte budget");
        let huge = Arc::new(ProviderData {
            features: vec![data("x").features[0].clone(); 50],
            ..ProviderData::default()
        });
        cache.insert("huge".into(), huge, hour);
        assert!(
            cache.get("huge").is_none(),
            "larger than the whole cache: not kept"
        );
        cache.insert("short".into(), data("s"), Duration::ZERO);
        assert!(cache.get("short").is_none(), "expired at once");
    }
}
