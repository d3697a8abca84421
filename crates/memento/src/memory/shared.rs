//! What every [`Memory`](super::Memory) over one location in this process
//! shares.
//!
//! Builder methods return a new `Memory` with its own options, and a program
//! may open one folder twice. If each such value had its own computations in
//! flight, its own in-memory layer and its own view of the functions, then
//! two threads could compute one key twice (the key's lock across processes
//! is held per open file, which the values share), a clear through one value
//! would leave the result served by another, and hits counted by one would
//! be written by whichever wrote next. So what belongs to the *location*
//! lives here, one per location and process, found through a registry of
//! weak references: it goes when the last `Memory` over the location goes.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use super::hot::Hot;
use super::limits::Usage;
use super::once::Flights;
use super::record::Functions;
use crate::error::Error;
use crate::index::IndexLog;
use crate::store::Store;

/// The state of one location in this process. Each part owns its own
/// state behind its own lock; this only holds them together.
pub(super) struct Shared {
    /// The store of the first `Memory` over the location: hits still
    /// counted in memory are written through it when the last `Memory`
    /// goes, or at exit.
    store: Arc<dyn Store>,
    /// Verified payloads of recent small results.
    hot: Hot,
    /// The functions used through this location.
    functions: Functions,
    /// Computations running in this process, by key.
    flights: Arc<Flights>,
    /// The running count of what the store holds, and the eviction lock.
    usage: Usage,
    /// The eviction index's log (local caches).
    index: Option<IndexLog>,
    /// Storage errors, reported without flooding: one per location name
    /// in this process, even for stores given by the user (two handles on
    /// one bucket say an outage once).
    io: Arc<IoReports>,
}

/// Locations in use in this process.
static REGISTRY: Mutex<Vec<(String, Weak<Shared>)>> = Mutex::new(Vec::new());

impl Shared {
    /// The state of `store`'s location: the one already in use in this
    /// process, or a new one. `hot_limit` raises the in-memory layer's bound
    /// to at least that.
    ///
    /// A location opened by name (`by_name`: a folder or a bucket, from
    /// `Memory::new`) is one location however many stores open it; `path`
    /// is a local folder's, whose eviction index this state writes. A
    /// store given by the user (`Memory::with_store`) is its own location,
    /// shared by the clones of its `Memory` only: two such stores may name
    /// themselves alike (two in-memory stores, say) and must never serve
    /// each other's results.
    pub(super) fn of(
        store: &Arc<dyn Store>,
        by_name: bool,
        path: Option<&std::path::Path>,
        hot_limit: u64,
    ) -> Arc<Shared> {
        let location = if by_name {
            store.location()
        } else {
            format!("{}\0store@{:p}", store.location(), Arc::as_ptr(store))
        };
        let mut registry = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
        registry.retain(|(_, weak)| weak.strong_count() > 0);
        if let Some(shared) = registry
            .iter()
            .find(|(l, _)| *l == location)
            .and_then(|(_, weak)| weak.upgrade())
        {
            shared.hot.raise_limit(hot_limit);
            return shared;
        }
        let shared = Arc::new(Shared {
            store: store.clone(),
            hot: Hot::new(hot_limit),
            functions: Functions::default(),
            flights: Arc::default(),
            usage: Usage::default(),
            index: path.map(IndexLog::new),
            io: IoReports::of(&store.location()),
        });
        registry.push((location, Arc::downgrade(&shared)));
        shared
    }

    /// The in-memory layer.
    #[inline]
    pub(super) fn hot(&self) -> &Hot {
        &self.hot
    }

    /// The functions' states.
    #[inline]
    pub(super) fn functions(&self) -> &Functions {
        &self.functions
    }

    /// The computations in flight.
    pub(super) fn flights(&self) -> &Arc<Flights> {
        &self.flights
    }

    /// The count of what the store holds.
    pub(super) fn usage(&self) -> &Usage {
        &self.usage
    }

    /// The eviction index's log, for a local cache.
    pub(super) fn index(&self) -> Option<&IndexLog> {
        self.index.as_ref()
    }

    /// Reports a storage error of this location (see [`IoReports`]).
    pub(super) fn report_io(&self, e: &Error) {
        self.io.report(&self.store.location(), e);
    }

    /// Notes that a storage operation of this location worked: after
    /// failures, says that the store works again (once per outage).
    #[inline]
    pub(super) fn storage_works(&self) {
        if self.io.failing() {
            self.io.recovered(&self.store.location());
        }
    }

    /// Forgets what this process knew of the location's results (after a
    /// clear): the in-memory layer, the functions' states, the count.
    pub(super) fn forget(&self) {
        self.hot.clear();
        self.functions.clear();
        self.usage.reset();
    }

    /// Forgets what this process knew of the function whose folder is
    /// `folder` (after its results were cleared): its state, so that its
    /// record is checked again, and its results in the in-memory layer.
    pub(super) fn forget_function(&self, folder: &str) {
        self.functions.forget_folder(folder);
        self.hot.retain(|state| state.folder() != folder);
    }

    /// Adds the hits still counted in memory to their `hits.json`.
    pub(super) fn flush_all_hits(&self) {
        for state in self.functions.all() {
            state.flush_hits(&*self.store, |e| self.report_io(e));
        }
    }

    /// Writes the stored calls and misses recorded in memory to their
    /// `calls.json` (see `why.rs`).
    pub(super) fn flush_all_calls(&self) {
        for (folder, calls) in self.functions.all_calls() {
            calls.flush(&*self.store, &folder, |e| self.report_io(e));
        }
    }

    /// Writes `state`'s stored calls and misses to its `calls.json` if a
    /// write is due (see `why.rs`).
    pub(super) fn flush_calls_if_due(&self, state: &super::record::FnState) {
        state
            .calls()
            .flush_if_due(&*self.store, state.folder(), |e| self.report_io(e));
    }

    /// Adds `state`'s pending hits to its `hits.json` through this
    /// location's store.
    pub(super) fn flush_hits(&self, state: &super::record::FnState) {
        state.flush_hits(&*self.store, |e| self.report_io(e));
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.flush_all_hits();
        self.flush_all_calls();
    }
}

/// Adds the hits of every location still in use to their `hits.json`, and
/// their recorded calls to their `calls.json` (at exit).
pub(super) fn flush_every_location() {
    let all: Vec<Arc<Shared>> = REGISTRY
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter_map(|(_, weak)| weak.upgrade())
        .collect();
    for shared in all {
        shared.flush_all_hits();
        shared.flush_all_calls();
    }
}

/// Storage errors: the first is a warning; later ones are counted and said
/// again at warn level at most once a minute ("N more writes failed"), so
/// that a disk full for an hour is neither silent nor a flood.
#[derive(Default)]
pub(super) struct IoReports {
    warned: AtomicBool,
    since: AtomicU64,
    last: Mutex<Option<Instant>>,
}

/// The storage-error reports of the locations in use, by name.
static REPORTS: Mutex<Vec<(String, Weak<IoReports>)>> = Mutex::new(Vec::new());

impl IoReports {
    /// The reports of the location named `location` in this process.
    fn of(location: &str) -> Arc<IoReports> {
        let mut reports = REPORTS.lock().unwrap_or_else(|e| e.into_inner());
        reports.retain(|(_, weak)| weak.strong_count() > 0);
        if let Some(found) = reports
            .iter()
            .find(|(name, _)| name == location)
            .and_then(|(_, weak)| weak.upgrade())
        {
            return found;
        }
        let new = Arc::new(IoReports::default());
        reports.push((location.to_string(), Arc::downgrade(&new)));
        new
    }
}

/// How often, at most, failures after the first are summed up.
const IO_REPORT_EVERY: Duration = Duration::from_secs(60);

impl IoReports {
    /// Was a failure reported since the store last worked? (One atomic
    /// load: callers ask it after every write that worked.)
    #[inline]
    pub(super) fn failing(&self) -> bool {
        self.warned.load(Ordering::Relaxed)
    }

    /// The store works again: the outage ends (an info line, with how
    /// many operations failed since the last warning); the next failure
    /// starts a new outage, a warning again.
    pub(super) fn recovered(&self, location: &str) {
        if self.warned.swap(false, Ordering::Relaxed) {
            let failed = self.since.swap(0, Ordering::Relaxed);
            crate::log::info!(
                "{location}: storage works again ({failed} more operation(s) failed since the \
                 last warning); results are stored again"
            );
        }
    }

    /// Reports a failure: the first of an outage is a warning (unless one
    /// was said less than [`IO_REPORT_EVERY`] ago: a store that fails and
    /// works by turns must not flood either); later ones are counted and
    /// summed up in a warning at most once every [`IO_REPORT_EVERY`].
    pub(super) fn report(&self, location: &str, e: &Error) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let due = last.is_none_or(|t| t.elapsed() >= IO_REPORT_EVERY);
        if !self.warned.swap(true, Ordering::Relaxed) && due {
            *last = Some(Instant::now());
            crate::log::warning!("{e}; results are computed but may not be stored");
            return;
        }
        tracing::debug!("{e}");
        let failed = self.since.fetch_add(1, Ordering::Relaxed) + 1;
        if due {
            *last = Some(Instant::now());
            self.since.fetch_sub(failed, Ordering::Relaxed);
            crate::log::warning!(
                "{location}: {failed} more storage operation(s) failed since the last warning \
                 (the latest: {e}); results are computed but may not be stored"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Function, Memory};

    /// What `tracing` prints at warn level while `f` runs on this thread.
    fn warnings(f: impl FnOnce()) -> Vec<String> {
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .without_time()
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8_lossy(&buf.0.lock().unwrap()).into_owned();
        text.lines().map(str::to_string).collect()
    }

    #[test]
    fn failures_after_the_first_are_summed_up_once_a_minute() {
        let io = IoReports::default();
        let e = || Error::io("write", "/x", std::io::Error::other("disk full"));
        let said = warnings(|| {
            for _ in 0..5 {
                io.report("loc", &e());
            }
        });
        assert_eq!(said.len(), 1, "{said:?}");
        // A minute later, the next failure says how many failed since.
        *io.last.lock().unwrap() = Some(Instant::now() - IO_REPORT_EVERY);
        let said = warnings(|| io.report("loc", &e()));
        assert_eq!(said.len(), 1, "{said:?}");
        assert!(
            said[0].contains("5 more storage operation(s) failed"),
            "{said:?}"
        );
    }

    #[test]
    fn each_outage_is_one_warning_and_a_store_that_flaps_does_not_flood() {
        let io = IoReports::default();
        let e = || Error::io("write", "/x", std::io::Error::other("disk full"));
        let said = warnings(|| {
            io.report("loc", &e());
            io.report("loc", &e());
        });
        assert_eq!(said.len(), 1, "{said:?}");
        assert!(io.failing());
        io.recovered("loc");
        assert!(!io.failing(), "the outage ended");
        // Failing again within the minute: counted, not said at once.
        let said = warnings(|| io.report("loc", &e()));
        assert!(said.is_empty(), "{said:?}");
        io.recovered("loc");
        // A new outage a minute after the last warning: a warning again.
        *io.last.lock().unwrap() = Some(Instant::now() - IO_REPORT_EVERY);
        let said = warnings(|| io.report("loc", &e()));
        assert_eq!(said.len(), 1, "{said:?}");
        assert!(said[0].contains("disk full"), "{said:?}");
    }

    #[test]
    fn a_dropped_memory_is_freed_and_its_hits_written() {
        let dir = tempfile::tempdir().unwrap();
        let memory = Memory::new(dir.path());
        let f = Function::new("shared", "dropped");
        let _: u8 = memory.call(&f, &1u8, || 1);
        for _ in 0..3 {
            let _: u8 = memory.call(&f, &1u8, || unreachable!());
        }
        let builder_copy = memory.clone().lock_timeout(Duration::from_secs(1));
        let weak = Arc::downgrade(&memory.inner.shared);
        drop((memory, builder_copy));
        assert!(weak.upgrade().is_none(), "nothing keeps a dropped Memory");
        let hits: crate::evict::HitsFile = crate::store::read_json(
            &crate::store::LocalStore::new(dir.path()),
            &crate::layout::hits(f.folder()),
        )
        .unwrap();
        assert_eq!(hits.hits, 3, "its hits were written when it went");
    }
}
