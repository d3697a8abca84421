//! The in-memory layer: verified payloads of recent small results, so that
//! a repeated hit in one process costs a map lookup and a decode.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use crate::key::Key;

/// Keys are uniform random bytes: their first eight bytes are a good hash.
#[derive(Default)]
pub(super) struct KeyIdHasher(u64);

impl Hasher for KeyIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut b = [0u8; 8];
        let n = bytes.len().min(8);
        b[..n].copy_from_slice(&bytes[..n]);
        self.0 ^= u64::from_le_bytes(b);
    }
    fn write_usize(&mut self, _: usize) {}
}

/// The in-memory layer: verified payloads of recent small results, so that a
/// repeated hit in one process costs a map lookup and a decode.
pub(super) struct Hot {
    limit: u64,
    /// Zero point of `HotEntry::touched`.
    base: Instant,
    map: RwLock<HotMap>,
}

#[derive(Default)]
pub(super) struct HotMap {
    bytes: u64,
    entries: HashMap<Key, HotEntry, BuildHasherDefault<KeyIdHasher>>,
}

pub(super) struct HotEntry {
    payload: Arc<[u8]>,
    /// When the result was computed (ms since the Unix epoch), for expiry.
    created_ms: u64,
    /// Seconds after `Hot::base` when the store last recorded an access.
    touched: AtomicU64,
}

/// How often, at most, a result served from memory has its last access
/// recorded in the store.
const TOUCH_EVERY: u64 = 60;

impl Hot {
    pub(super) fn new(limit: u64) -> Hot {
        Hot {
            limit,
            base: Instant::now(),
            map: RwLock::new(HotMap::default()),
        }
    }

    fn now(&self) -> u64 {
        self.base.elapsed().as_secs()
    }

    /// The payload, and whether the store should record an access (true at
    /// most once a minute per result, so that results used only from
    /// memory do not look unused to eviction).
    #[inline]
    pub(super) fn get(&self, key: &Key) -> Option<(Arc<[u8]>, u64, bool)> {
        if self.limit == 0 {
            return None;
        }
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        let entry = map.entries.get(key)?;
        let now = self.now();
        let touched = entry.touched.load(Ordering::Relaxed);
        let touch = now >= touched + TOUCH_EVERY
            && entry
                .touched
                .compare_exchange(touched, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok();
        Some((entry.payload.clone(), entry.created_ms, touch))
    }

    pub(super) fn insert(&self, key: Key, payload: &[u8], created_ms: u64) {
        let size = payload.len() as u64;
        if self.limit == 0 || size > self.limit / 16 {
            return;
        }
        let now = self.now();
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        if map.entries.contains_key(&key) {
            return;
        }
        while map.bytes + size > self.limit {
            let Some(victim) = map.entries.keys().next().copied() else {
                break;
            };
            if let Some(old) = map.entries.remove(&victim) {
                map.bytes -= old.payload.len() as u64;
            }
        }
        map.bytes += size;
        map.entries.insert(
            key,
            HotEntry {
                payload: Arc::from(payload),
                created_ms,
                touched: AtomicU64::new(now),
            },
        );
    }

    pub(super) fn remove(&self, key: &Key) {
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = map.entries.remove(key) {
            map.bytes -= old.payload.len() as u64;
        }
    }

    pub(super) fn clear(&self) {
        *self.map.write().unwrap_or_else(|e| e.into_inner()) = HotMap::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn hot_hits_record_access_once_a_minute() {
        let mut hot = Hot::new(1 << 20);
        hot.base = Instant::now() - Duration::from_secs(600);
        let key = Key::of(&1u8).unwrap();
        hot.insert(key, b"x", 0);
        assert!(!hot.get(&key).unwrap().2, "just stored: recorded");
        hot.map.read().unwrap().entries[&key]
            .touched
            .store(600 - TOUCH_EVERY, Ordering::Relaxed);
        assert!(hot.get(&key).unwrap().2, "a minute later: record again");
        assert!(!hot.get(&key).unwrap().2, "then not before another minute");
    }

    #[test]
    fn hot_layer_stays_bounded() {
        let hot = Hot::new(16 * 100);
        for i in 0..1000u32 {
            hot.insert(Key::of(&i).unwrap(), &[0u8; 50], 0);
        }
        let map = hot.map.read().unwrap();
        assert!(map.bytes <= 1600);
        assert_eq!(map.bytes, 50 * map.entries.len() as u64);
        drop(map);
        hot.insert(Key::of(&"big").unwrap(), &[0u8; 101], 0);
        assert!(hot.get(&Key::of(&"big").unwrap()).is_none());
    }
}
