//! A function's record (`function.json`): checked at a Memory's first use
//! of the function; another fingerprint drops the function's results (once,
//! under the function's lock), unless it keeps its versions.

use super::*;

/// The state of one function at one location, in this process.
pub(super) struct FnState {
    /// The record check ran (once per process and location).
    pub(super) checked: OnceLock<()>,
    /// The store's [`generation`](crate::store::Store::generation) when
    /// `function.json` was last seen or written matching this code
    /// ([`NOT_RECORDED`] before): a store that created folders since may
    /// have lost it (its folder deleted and re-created).
    pub(super) recorded_at: AtomicU64,
    /// Hits of this process not yet added to `hits.json`.
    pub(super) hits: AtomicU64,
    /// When they were last added (seconds on this process's clock).
    pub(super) hits_flushed: AtomicU64,
    /// The function's folder, where `hits.json` goes.
    pub(super) folder: OnceLock<String>,
}

/// [`FnState::recorded_at`] before the record is known to be stored.
pub(super) const NOT_RECORDED: u64 = u64::MAX;

impl FnState {
    pub(super) fn new() -> FnState {
        FnState {
            checked: OnceLock::new(),
            recorded_at: AtomicU64::new(NOT_RECORDED),
            hits: AtomicU64::new(0),
            hits_flushed: AtomicU64::new(0),
            folder: OnceLock::new(),
        }
    }

    /// Notes that `function.json` matches this code, as of store
    /// generation `generation`.
    pub(super) fn recorded(&self, generation: u64) {
        self.recorded_at.store(generation, Ordering::Release);
    }
}

/// A function's record to check after a write, with the state that
/// remembers it.
pub(super) struct RecordWrite {
    pub(super) record: FunctionRecord,
    pub(super) folder: String,
    pub(super) state: Arc<FnState>,
}

impl Memory {
    /// Writes the function's record if the store may have lost it: the
    /// first write of this process, or the store created folders since it
    /// was seen (its location deleted and re-created under this process).
    /// Under the function's lock, and only if no record is there: another
    /// process's invalidation must not be undone. Returns the bytes written.
    pub(super) fn ensure_record(&self, write: &RecordWrite) -> Result<u64> {
        let store = &*self.inner.store;
        let generation = store.generation();
        if write.state.recorded_at.load(Ordering::Acquire) == generation {
            return Ok(0);
        }
        let name = crate::layout::record(&write.folder);
        let _lock = self.function_lock_in(&write.folder);
        let mut existing = Vec::new();
        let written = if store.read(&name, &mut existing)? {
            0
        } else {
            self.write_record(&name, &write.record)?
        };
        write.state.recorded(generation);
        Ok(written)
    }

    /// This Memory's state of `function`; the first use checks
    /// `function.json` and drops old results if the code changed.
    pub(super) fn state(
        &self,
        function: &Function,
        shape: Shape,
        output_type: &str,
    ) -> Arc<FnState> {
        let state = self.function_state(function);
        state
            .checked
            .get_or_init(|| self.check_record(function, &state, shape, output_type));
        state
    }

    /// This location's state of `function`, without the record check.
    pub(super) fn function_state(&self, function: &Function) -> Arc<FnState> {
        let functions = &self.inner.shared.functions;
        let id = function.hash();
        let found = functions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned();
        found.unwrap_or_else(|| {
            functions
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .entry(*id)
                .or_insert_with(|| {
                    let state = FnState::new();
                    let _ = state.folder.set(function.folder().to_string());
                    Arc::new(state)
                })
                .clone()
        })
    }

    fn check_record(&self, function: &Function, state: &FnState, shape: Shape, output_type: &str) {
        let record = function.record(shape, output_type);
        let name = crate::layout::record(function.folder());
        let generation = self.inner.store.generation();
        let stale = match self.stored_record(&name, &record) {
            Ok(None) => {
                state.recorded(generation);
                return;
            }
            Ok(Some(stale)) => stale,
            Err(e) => {
                self.report_io(&e);
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
                self.report_io(&e);
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
                self.report_io(&e);
                0
            });
            crate::log::warning!(
                "{}: {stale}; its {removed} stored result(s) are removed",
                function.full_name()
            );
        }
        match self.write_record(&name, &record) {
            Ok(_) => state.recorded(generation),
            Err(e) => self.report_io(&e),
        }
    }

    /// Compares the stored `function.json` with `record`: `None` when they
    /// agree, `Some(None)` when there is none, `Some(Some(why))` when it
    /// differs or cannot be read.
    fn stored_record(&self, name: &str, record: &FunctionRecord) -> Result<Option<Option<String>>> {
        let mut buf = Vec::new();
        if !self.inner.store.read(name, &mut buf)? {
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
        self.function_lock_in(function.folder())
    }

    fn function_lock_in(&self, folder: &str) -> Option<StoreLock> {
        let name = crate::layout::record_lock(folder);
        match self.inner.store.lock(&name, None) {
            Ok(LockOutcome::Held(lock)) => Some(lock),
            Ok(_) => None,
            Err(e) => {
                self.report_io(&e);
                None
            }
        }
    }

    /// Writes `function.json`; returns its size.
    fn write_record(&self, name: &str, record: &FunctionRecord) -> Result<u64> {
        let json = serde_json::to_vec_pretty(record).unwrap_or_default();
        self.inner.store.write(name, &json)?;
        Ok(json.len() as u64)
    }

    /// Removes every entry of `function` (and the entry folders of the
    /// first layout); other files and folders (a nested module's
    /// functions) are left alone.
    pub(super) fn remove_entries(&self, function: &Function) -> Result<usize> {
        let folder = function.folder();
        let inventory = Inventory::scan_prefix(&*self.inner.store, folder)?;
        let mut removed = 0;
        for entry in inventory
            .entries
            .iter()
            .filter(|e| e.function_folder == folder)
        {
            evict::remove(&*self.inner.store, entry)?;
            removed += usize::from(entry.complete);
        }
        Ok(removed)
    }
}
