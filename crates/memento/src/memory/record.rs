//! A function's record (`function.json`): checked at a Memory's first use
//! of the function; another fingerprint drops the function's results (once,
//! under the function's lock), unless it keeps its versions. Also the state
//! this process keeps of each function at a location ([`Functions`]).

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use super::hits::Hits;
use super::hot::KeyIdHasher;
use super::shared::Shared;
use super::why::Calls;
use crate::error::{Error, Result};
use crate::evict::{self, Inventory};
use crate::function::{Function, FunctionRecord, Shape};
use crate::store::{LockOutcome, Store, StoreLock};

/// The state of one function at one location, in this process.
pub(super) struct FnState {
    /// The record check ran (once per process and location).
    checked: OnceLock<()>,
    /// The store's [`generation`](crate::store::Store::generation) when
    /// `function.json` was last seen or written matching this code
    /// ([`NOT_RECORDED`] before): a store that created folders since may
    /// have lost it (its folder deleted and re-created).
    recorded_at: AtomicU64,
    /// Hits of this process not yet added to `hits.json`.
    hits: Hits,
    /// The function's folder, where `hits.json` goes.
    folder: String,
    /// The stored calls and misses of the function's folder (shared by
    /// the states of every version of the function), for [`Why`].
    ///
    /// [`Why`]: crate::Why
    calls: Arc<Calls>,
}

/// [`FnState::recorded_at`] before the record is known to be stored.
const NOT_RECORDED: u64 = u64::MAX;

impl FnState {
    pub(super) fn new(folder: &str, calls: Arc<Calls>) -> FnState {
        FnState {
            checked: OnceLock::new(),
            recorded_at: AtomicU64::new(NOT_RECORDED),
            hits: Hits::default(),
            folder: folder.to_string(),
            calls,
        }
    }

    /// The stored calls and misses of the function's folder.
    pub(super) fn calls(&self) -> &Calls {
        &self.calls
    }

    /// Notes that `function.json` matches this code, as of store
    /// generation `generation`.
    fn recorded(&self, generation: u64) {
        self.recorded_at.store(generation, Ordering::Release);
    }

    /// The function's folder.
    pub(super) fn folder(&self) -> &str {
        &self.folder
    }

    /// The hits counted in this process.
    #[inline]
    pub(super) fn hits(&self) -> &Hits {
        &self.hits
    }

    /// Adds the pending hits to the function's `hits.json` in `store`.
    pub(super) fn flush_hits(&self, store: &dyn Store, report: impl Fn(&Error)) {
        super::hits::flush(store, &self.folder, &self.hits, report);
    }
}

/// The calls of each function folder (see [`Calls`]).
type CallsByFolder = HashMap<String, Arc<Calls>>;

/// The functions used through one location in this process, by function
/// hash.
#[derive(Default)]
pub(super) struct Functions {
    states: RwLock<HashMap<[u8; 32], Arc<FnState>, BuildHasherDefault<KeyIdHasher>>>,
    /// By folder: kept when a function's results are cleared (its next
    /// miss says they are gone), dropped when the location is.
    calls: RwLock<CallsByFolder>,
}

impl Functions {
    /// The state of `function`, without the record check.
    pub(super) fn state_of(&self, function: &Function) -> Arc<FnState> {
        let id = function.hash();
        let found = self
            .states
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned();
        found.unwrap_or_else(|| {
            self.states
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .entry(*id)
                .or_insert_with(|| {
                    Arc::new(FnState::new(
                        function.folder(),
                        self.calls_for(function.folder()),
                    ))
                })
                .clone()
        })
    }

    /// The calls of the folder `folder`, made if new.
    fn calls_for(&self, folder: &str) -> Arc<Calls> {
        self.calls
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(folder.to_string())
            .or_insert_with(|| Arc::new(Calls::new()))
            .clone()
    }

    /// The calls of the folder `folder`, if this process recorded any.
    pub(super) fn calls_of(&self, folder: &str) -> Option<Arc<Calls>> {
        self.calls
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(folder)
            .cloned()
    }

    /// The calls of every folder, with their folders.
    pub(super) fn all_calls(&self) -> Vec<(String, Arc<Calls>)> {
        self.calls
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(folder, calls)| (folder.clone(), calls.clone()))
            .collect()
    }

    /// Every function's state.
    pub(super) fn all(&self) -> Vec<Arc<FnState>> {
        self.states
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Forgets every function (their records are checked again) and their
    /// calls (the location was cleared).
    pub(super) fn clear(&self) {
        self.states
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.calls
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Forgets the function whose folder is `folder`.
    pub(super) fn forget_folder(&self, folder: &str) {
        self.states
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, state| state.folder != folder);
    }
}

/// A function's record to check after a write, with the state that
/// remembers it.
pub(super) struct RecordWrite {
    pub(super) record: FunctionRecord,
    pub(super) state: Arc<FnState>,
}

/// The records of one location: checked and written through its store,
/// their failures reported to its [`Shared`] state.
pub(super) struct Records<'a> {
    store: &'a dyn Store,
    shared: &'a Shared,
}

impl<'a> Records<'a> {
    pub(super) fn new(store: &'a dyn Store, shared: &'a Shared) -> Records<'a> {
        Records { store, shared }
    }

    /// Writes the function's record if the store may have lost it: the
    /// first write of this process, or the store created folders since it
    /// was seen (its location deleted and re-created under this process).
    /// Published create-only: a record already there (another process's,
    /// perhaps from an invalidation) is never replaced, with no lock and no
    /// read first. Returns the bytes written.
    pub(super) fn ensure(&self, write: &RecordWrite) -> Result<u64> {
        let store = self.store;
        let generation = store.generation();
        if write.state.recorded_at.load(Ordering::Acquire) == generation {
            return Ok(0);
        }
        let name = crate::layout::record(&write.state.folder);
        let json = serde_json::to_vec_pretty(&write.record).unwrap_or_default();
        let written = if store.publish(&name, &json)? {
            json.len() as u64
        } else {
            0
        };
        write.state.recorded(generation);
        Ok(written)
    }

    /// The state of `function`; the first use in this process checks
    /// `function.json` and drops old results if the code changed.
    pub(super) fn state(
        &self,
        function: &Function,
        shape: Shape,
        output_type: &str,
    ) -> Arc<FnState> {
        let state = self.shared.functions().state_of(function);
        state
            .checked
            .get_or_init(|| self.check_record(function, &state, shape, output_type));
        // What explains misses: read once per folder and process.
        state.calls.load(self.store, &state.folder);
        state
    }

    fn check_record(&self, function: &Function, state: &FnState, shape: Shape, output_type: &str) {
        let record = function.record(shape, output_type);
        let name = crate::layout::record(function.folder());
        let generation = self.store.generation();
        let stale = match self.stored_record(&name, &record) {
            Ok(None) => {
                state.recorded(generation);
                return;
            }
            Ok(Some(stale)) => stale,
            Err(e) => {
                self.shared.report_io(&e);
                return;
            }
        };
        let Some(stale) = stale else {
            // No record: a new function (written with its first result).
            // Results left without a record can only be of other code, whose
            // keys differ: they are never read, and age out under limits.
            return;
        };
        // One process invalidates; the others, waiting on the lock, then
        // find the new record and keep what it wrote.
        let _lock = self.function_lock(function);
        match self.stored_record(&name, &record) {
            Ok(None) => {
                state.recorded(generation);
                return;
            }
            Ok(Some(_)) => {}
            Err(e) => {
                self.shared.report_io(&e);
                return;
            }
        }
        if function.keeps_versions() {
            crate::log::info!(
                "{}: {stale}; the results of other versions are kept (keep_versions)",
                function.full_name()
            );
        } else {
            let removed = self.remove_entries(function).unwrap_or_else(|e| {
                self.shared.report_io(&e);
                0
            });
            crate::log::warning!(
                "{}: {stale}; its {removed} stored result(s) are removed",
                function.full_name()
            );
        }
        match self.write_record(&name, &record) {
            Ok(_) => state.recorded(generation),
            Err(e) => self.shared.report_io(&e),
        }
    }

    /// Compares the stored `function.json` with `record`: `None` when they
    /// agree, `Some(None)` when there is none, `Some(Some(why))` when it
    /// differs or cannot be read.
    fn stored_record(&self, name: &str, record: &FunctionRecord) -> Result<Option<Option<String>>> {
        let mut buf = Vec::new();
        if !self.store.read(name, &mut buf)? {
            return Ok(Some(None));
        }
        Ok(match serde_json::from_slice::<FunctionRecord>(&buf) {
            Ok(stored) if record.same_code(&stored) => None,
            Ok(stored) if stored.format != record.format => Some(Some(format!(
                "its results were stored in entry format {}, and this memento uses {}",
                stored.format, record.format
            ))),
            Ok(_) => Some(Some(
                "its code or its output type changed since they were stored".to_string(),
            )),
            Err(e) => Some(Some(format!("its function.json is unreadable ({e})"))),
        })
    }

    /// The lock that serializes changes of a function's record.
    fn function_lock(&self, function: &Function) -> Option<StoreLock> {
        let name = crate::layout::record_lock(function.folder());
        match self.store.lock(&name, None) {
            Ok(LockOutcome::Held(lock)) => Some(lock),
            Ok(_) => None,
            Err(e) => {
                self.shared.report_io(&e);
                None
            }
        }
    }

    /// Writes `function.json`; returns its size.
    fn write_record(&self, name: &str, record: &FunctionRecord) -> Result<u64> {
        let json = serde_json::to_vec_pretty(record).unwrap_or_default();
        self.store.write(name, &json)?;
        Ok(json.len() as u64)
    }

    /// Removes every entry of `function` (and the entry folders of the
    /// first layout); other files and folders (a nested module's
    /// functions) are left alone.
    fn remove_entries(&self, function: &Function) -> Result<usize> {
        let folder = function.folder();
        let inventory = Inventory::scan_prefix(self.store, folder)?;
        let mut removed = 0;
        for entry in inventory
            .entries
            .iter()
            .filter(|e| e.function_folder == folder)
        {
            evict::remove(self.store, entry)?;
            removed += usize::from(entry.complete);
        }
        Ok(removed)
    }
}
