//! The in-memory layer: verified payloads of recent small results, so that
//! a repeated hit in one process costs a map lookup and a decode.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use super::record::FnState;
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
///
/// Least recently used entries go first. A hit only takes the map's read
/// lock and stamps its entry with the clock, which moves at each insert
/// (the only time entries are evicted), so hits in many threads do not
/// serialize on a list; when an insert finds the layer full, it removes
/// the least recently used eighth of the entries at once (one sort of the
/// stamps for many inserts).
pub(super) struct Hot {
    limit: AtomicU64,
    /// Zero point of `HotEntry::touched`.
    base: Instant,
    /// The clock of `HotEntry::used`: one tick per insert.
    tick: AtomicU64,
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
    /// `Hot::tick` at the last use.
    used: AtomicU64,
    /// The signing key it was verified with ([`codec::Signer::tag`], 0:
    /// none): a Memory with another key does not take it.
    signer: u64,
    /// Its function's state in this process (hits are counted there).
    state: Arc<FnState>,
}

/// A result found in the in-memory layer.
pub(super) struct HotHit {
    pub(super) payload: Arc<[u8]>,
    pub(super) created_ms: u64,
    /// The store should record an access (at most once a minute per
    /// result, so that results used only from memory do not look unused
    /// to eviction).
    pub(super) touch: bool,
    pub(super) state: Arc<FnState>,
}

/// How often, at most, a result served from memory has its last access
/// recorded in the store.
const TOUCH_EVERY: u64 = 60;

impl Hot {
    pub(super) fn new(limit: u64) -> Hot {
        Hot {
            limit: AtomicU64::new(limit),
            base: Instant::now(),
            tick: AtomicU64::new(0),
            map: RwLock::new(HotMap::default()),
        }
    }

    /// Raises the bound to `limit` if it is lower (the layer is shared by
    /// every Memory over a location: it holds the largest bound asked).
    pub(super) fn raise_limit(&self, limit: u64) {
        self.limit.fetch_max(limit, Ordering::Relaxed);
    }

    fn now(&self) -> u64 {
        self.base.elapsed().as_secs()
    }

    /// The entry of `key`, if it was verified with the signing key `signer`.
    #[inline]
    pub(super) fn get(&self, key: &Key, signer: u64) -> Option<HotHit> {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        let entry = map.entries.get(key)?;
        if entry.signer != signer {
            return None;
        }
        // The clock moves at inserts only (the only time entries are
        // evicted), so a hit costs two plain loads, and a store only for
        // the first use of an entry since the last insert.
        let tick = self.tick.load(Ordering::Relaxed);
        if entry.used.load(Ordering::Relaxed) != tick {
            entry.used.store(tick, Ordering::Relaxed);
        }
        let now = self.now();
        let touched = entry.touched.load(Ordering::Relaxed);
        let touch = now >= touched + TOUCH_EVERY
            && entry
                .touched
                .compare_exchange(touched, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok();
        Some(HotHit {
            payload: entry.payload.clone(),
            created_ms: entry.created_ms,
            touch,
            state: entry.state.clone(),
        })
    }

    pub(super) fn insert(
        &self,
        key: Key,
        payload: &[u8],
        created_ms: u64,
        signer: u64,
        state: &Arc<FnState>,
    ) {
        let size = payload.len() as u64;
        let limit = self.limit.load(Ordering::Relaxed);
        if limit == 0 || size > limit / 16 {
            return;
        }
        let now = self.now();
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        if map.entries.contains_key(&key) {
            return;
        }
        if map.bytes + size > limit {
            map.evict_least_recently_used(limit - size);
        }
        map.bytes += size;
        map.entries.insert(
            key,
            HotEntry {
                payload: Arc::from(payload),
                created_ms,
                touched: AtomicU64::new(now),
                used: AtomicU64::new(self.tick.fetch_add(1, Ordering::Relaxed) + 1),
                signer,
                state: state.clone(),
            },
        );
    }

    pub(super) fn remove(&self, key: &Key) {
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = map.entries.remove(key) {
            map.bytes -= old.payload.len() as u64;
        }
    }

    /// Keeps only the entries whose function's state passes `keep`.
    pub(super) fn retain(&self, keep: impl Fn(&FnState) -> bool) {
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        let mut freed = 0;
        map.entries.retain(|_, entry| {
            let kept = keep(&entry.state);
            if !kept {
                freed += entry.payload.len() as u64;
            }
            kept
        });
        map.bytes -= freed;
    }

    pub(super) fn clear(&self) {
        *self.map.write().unwrap_or_else(|e| e.into_inner()) = HotMap::default();
    }
}

impl HotMap {
    /// Removes the least recently used entries until at most `room` bytes
    /// are held, and at least an eighth of the entries.
    fn evict_least_recently_used(&mut self, room: u64) {
        let mut by_use: Vec<(u64, Key, u64)> = self
            .entries
            .iter()
            .map(|(key, e)| (e.used.load(Ordering::Relaxed), *key, e.payload.len() as u64))
            .collect();
        by_use.sort_unstable_by_key(|(used, _, _)| *used);
        let at_least = by_use.len().div_ceil(8);
        for (i, (_, key, size)) in by_use.into_iter().enumerate() {
            if i >= at_least && self.bytes <= room {
                break;
            }
            self.entries.remove(&key);
            self.bytes -= size;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn state() -> Arc<FnState> {
        Arc::new(FnState::new("f", Default::default()))
    }

    #[test]
    fn hot_hits_record_access_once_a_minute() {
        let mut hot = Hot::new(1 << 20);
        hot.base = Instant::now() - Duration::from_secs(600);
        let key = Key::of(&1u8).unwrap();
        hot.insert(key, b"x", 0, 0, &state());
        assert!(!hot.get(&key, 0).unwrap().touch, "just stored: recorded");
        hot.map.read().unwrap().entries[&key]
            .touched
            .store(600 - TOUCH_EVERY, Ordering::Relaxed);
        assert!(
            hot.get(&key, 0).unwrap().touch,
            "a minute later: record again"
        );
        assert!(
            !hot.get(&key, 0).unwrap().touch,
            "then not before another minute"
        );
    }

    #[test]
    fn hot_layer_stays_bounded() {
        let hot = Hot::new(16 * 100);
        let state = state();
        for i in 0..1000u32 {
            hot.insert(Key::of(&i).unwrap(), &[0u8; 50], 0, 0, &state);
        }
        let map = hot.map.read().unwrap();
        assert!(map.bytes <= 1600);
        assert_eq!(map.bytes, 50 * map.entries.len() as u64);
        drop(map);
        hot.insert(Key::of(&"big").unwrap(), &[0u8; 101], 0, 0, &state);
        assert!(hot.get(&Key::of(&"big").unwrap(), 0).is_none());
    }

    #[test]
    fn hot_layer_evicts_the_least_recently_used() {
        // Room for 32 entries of 50 bytes.
        let hot = Hot::new(50 * 32);
        let state = state();
        let key = |i: u32| Key::of(&i).unwrap();
        for i in 0..32 {
            hot.insert(key(i), &[0u8; 50], 0, 0, &state);
        }
        // Use the first half again: the second half is now the oldest.
        for i in 0..16 {
            assert!(hot.get(&key(i), 0).is_some());
        }
        for i in 32..40 {
            hot.insert(key(i), &[0u8; 50], 0, 0, &state);
        }
        for i in 0..16 {
            assert!(hot.get(&key(i), 0).is_some(), "recently used {i} kept");
        }
        for i in 32..40 {
            assert!(hot.get(&key(i), 0).is_some(), "new {i} kept");
        }
        let gone = (16..32).filter(|&i| hot.get(&key(i), 0).is_none()).count();
        assert!(
            gone >= 8,
            "the least recently used went first ({gone} of 16)"
        );
    }

    #[test]
    fn an_entry_verified_with_another_signing_key_is_not_served() {
        let hot = Hot::new(1 << 20);
        let key = Key::of(&1u8).unwrap();
        hot.insert(key, b"x", 0, 0, &state());
        assert!(hot.get(&key, 0).is_some());
        assert!(hot.get(&key, 42).is_none(), "unsigned entry, signed reader");
    }
}
