//! Hit counts: counted in memory, added to each function's `hits.json` in
//! batches (see [`HITS_CHECK_EVERY`]).

use super::*;
use crate::evict::HitsFile;

/// Hits are added to `hits.json` at most every [`HITS_FLUSH_SECONDS`]
/// (checked every this many hits), whenever the process stores a result of
/// the function, and when the process exits.
pub(super) const HITS_CHECK_EVERY: u64 = 1024;

/// See [`HITS_CHECK_EVERY`].
pub(crate) const HITS_FLUSH_SECONDS: u64 = 10;

/// Hits still counted in memory when the process exits are added to their
/// `hits.json` then (on Unix, through `atexit`; not after a crash or a
/// signal).
mod at_exit {
    use std::sync::atomic::AtomicU64;
    use std::sync::{Arc, Mutex, Once};

    use super::Memory;
    use crate::function::Function;

    type Pending = Vec<(Memory, String, Arc<AtomicU64>)>;
    static PENDING: Mutex<Pending> = Mutex::new(Vec::new());

    pub(super) fn register(memory: &Memory, function: &Function) {
        static HOOK: Once = Once::new();
        HOOK.call_once(|| {
            #[cfg(unix)]
            // SAFETY: `flush` is an `extern "C" fn()` that does not unwind.
            unsafe {
                libc::atexit(flush);
            }
        });
        let mut pending = PENDING.lock().unwrap_or_else(|e| e.into_inner());
        if !pending.iter().any(|(m, folder, _)| {
            Arc::ptr_eq(&m.inner, &memory.inner) && folder == function.folder()
        }) {
            pending.push((
                memory.clone(),
                function.folder().to_string(),
                function.hits.clone(),
            ));
        }
    }

    #[cfg(unix)]
    extern "C" fn flush() {
        let _ = std::panic::catch_unwind(|| {
            let pending = std::mem::take(&mut *PENDING.lock().unwrap_or_else(|e| e.into_inner()));
            for (memory, folder, hits) in pending {
                memory.flush_hits(&folder, &hits);
            }
        });
    }
}

impl Memory {
    /// Counts a hit. Every [`HITS_CHECK_EVERY`] hits, if the last flush of
    /// the function is more than [`HITS_FLUSH_SECONDS`] old, adds them to
    /// its `hits.json` on a thread of its own.
    #[inline]
    pub(super) fn count_hit(&self, function: &Function) {
        let n = function.hits.fetch_add(1, Ordering::Relaxed) + 1;
        if n == 1 {
            at_exit::register(self, function);
        }
        if n.is_multiple_of(HITS_CHECK_EVERY) && function.hits_flush_due() {
            let n = function.hits.swap(0, Ordering::Relaxed);
            let memory = self.clone();
            let name = format!("{}/hits.json", function.folder());
            drop(crate::background::run(move || memory.add_hits(&name, n)));
        }
    }

    /// Adds the function's pending hits to its `hits.json`.
    pub(crate) fn flush_hits(&self, folder: &str, hits: &AtomicU64) {
        let n = hits.swap(0, Ordering::Relaxed);
        self.add_hits(&format!("{folder}/hits.json"), n);
    }

    /// Adds `n` to the count in `hits.json` (read, add, replace: two
    /// processes flushing at once may lose one's count; it is a statistic).
    ///
    /// Not when the function has no record (`function.json`): its results
    /// were cleared (by this process or another) since the hits, which
    /// counted results that are gone. Written anyway, the count would make
    /// a folder of a function without results, which `memento ls` would
    /// list. A function that stores a result writes its record first.
    pub(super) fn add_hits(&self, name: &str, n: u64) {
        if n == 0 {
            return;
        }
        let Some(folder) = name.strip_suffix("/hits.json") else {
            return;
        };
        let mut probe = Vec::new();
        let record = format!("{folder}/function.json");
        if !matches!(
            self.inner.store.read_range(&record, 0..1, &mut probe),
            Ok(true)
        ) {
            return;
        }
        let old = crate::store::read_json::<HitsFile>(&*self.inner.store, name)
            .unwrap_or_default()
            .hits;
        let json = serde_json::to_vec(&HitsFile { hits: old + n }).unwrap_or_default();
        if let Err(e) = self.inner.store.write(name, &json) {
            self.report_io(&e);
        }
    }
}
