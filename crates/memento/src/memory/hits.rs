//! Hit counts: counted in memory, in the function's state at the location
//! that served them, and added to the function's `hits.json` in batches
//! (see [`HITS_CHECK_EVERY`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Instant;

use super::record::FnState;
use super::shared::{self, Shared};
use crate::error::Error;
use crate::evict::HitsFile;
use crate::store::Store;

/// The hits of one function in this process not yet added to its
/// `hits.json`.
#[derive(Default)]
pub(super) struct Hits {
    pending: AtomicU64,
    /// When they were last added (seconds on this process's clock).
    flushed: AtomicU64,
}

/// Hits are added to `hits.json` at most every [`HITS_FLUSH_SECONDS`]
/// (checked every this many hits), whenever the process stores a result of
/// the function, when the last `Memory` over the location is dropped, and
/// when the process exits.
pub(super) const HITS_CHECK_EVERY: u64 = 1024;

/// See [`HITS_CHECK_EVERY`].
pub(super) const HITS_FLUSH_SECONDS: u64 = 10;

/// Hits still counted in memory when the process exits are added to their
/// `hits.json` then (see [`crate::exit`]). The hook holds no `Memory`: it
/// visits the locations still in use (see [`shared`]); a location dropped
/// earlier flushed its hits then.
fn flush_at_exit() {
    crate::exit::on_exit("hit counts", shared::flush_every_location);
}

/// Adds the pending `hits` of the function whose folder is `folder` to
/// its `hits.json`.
///
/// Not when the function has no record (`function.json`): its results
/// were cleared (by this process or another) since the hits, which counted
/// results that are gone. Written anyway, the count would make a folder of a
/// function without results, which `memento ls` would list. A function that
/// stores a result writes its record.
pub(super) fn flush(store: &dyn Store, folder: &str, hits: &Hits, report: impl Fn(&Error)) {
    let n = hits.pending.swap(0, Ordering::Relaxed);
    if n == 0 {
        return;
    }
    let mut probe = Vec::new();
    if !matches!(
        store.read_range(&crate::layout::record(folder), 0..1, &mut probe),
        Ok(true)
    ) {
        return;
    }
    let name = crate::layout::hits(folder);
    let old = crate::store::read_json::<HitsFile>(store, &name)
        .unwrap_or_default()
        .hits;
    let json = serde_json::to_vec(&HitsFile { hits: old + n }).unwrap_or_default();
    // Read, add, replace: two processes flushing at once may lose one's
    // count; it is a statistic.
    if let Err(e) = store.write(&name, &json) {
        report(&e);
    }
}

/// Is it time to add this process's hits to `hits.json`? (True at most
/// once every [`HITS_FLUSH_SECONDS`].)
fn flush_due(hits: &Hits) -> bool {
    static START: LazyLock<Instant> = LazyLock::new(Instant::now);
    let now = START.elapsed().as_secs();
    let last = hits.flushed.load(Ordering::Relaxed);
    now >= last + HITS_FLUSH_SECONDS
        && hits
            .flushed
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
}

/// Counts a hit of the function of `state` at the location of `shared`.
/// Every [`HITS_CHECK_EVERY`] hits, if the last flush of the function is
/// more than [`HITS_FLUSH_SECONDS`] old, adds them to its `hits.json` on a
/// thread of its own.
#[inline]
pub(super) fn count(shared: &Arc<Shared>, state: &Arc<FnState>) {
    let hits = state.hits();
    let n = hits.pending.fetch_add(1, Ordering::Relaxed) + 1;
    if n == 1 {
        flush_at_exit();
    }
    if n.is_multiple_of(HITS_CHECK_EVERY) && flush_due(hits) {
        let shared = shared.clone();
        let state = state.clone();
        drop(crate::background::run(move || shared.flush_hits(&state)));
    }
}
