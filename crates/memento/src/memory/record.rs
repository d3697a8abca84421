//! A function's record (`function.json`): checked at a Memory's first use
//! of the function; another fingerprint drops the function's results (once,
//! under the function's lock), unless it keeps its versions.

use super::*;

/// Per-Memory state of one function.
pub(super) struct FnState {
    /// The record check ran (once per process and Memory).
    pub(super) checked: OnceLock<()>,
    /// `function.json` on disk matches this code.
    pub(super) record_on_disk: AtomicBool,
}

impl Memory {
    /// This Memory's state of `function`; the first use checks
    /// `function.json` and drops old results if the code changed.
    pub(super) fn state(
        &self,
        function: &Function,
        shape: Shape,
        output_type: &str,
    ) -> Arc<FnState> {
        let id = function.hash();
        let found = self
            .inner
            .functions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned();
        let state = found.unwrap_or_else(|| {
            self.inner
                .functions
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .entry(*id)
                .or_insert_with(|| {
                    Arc::new(FnState {
                        checked: OnceLock::new(),
                        record_on_disk: AtomicBool::new(false),
                    })
                })
                .clone()
        });
        state
            .checked
            .get_or_init(|| self.check_record(function, &state, shape, output_type));
        state
    }

    fn check_record(&self, function: &Function, state: &FnState, shape: Shape, output_type: &str) {
        let record = function.record(shape, output_type);
        let name = format!("{}/function.json", function.folder());
        let stale = match self.stored_record(&name, &record) {
            Ok(None) => {
                state.record_on_disk.store(true, Ordering::Release);
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
                state.record_on_disk.store(true, Ordering::Release);
                return;
            }
            Ok(Some(_)) => {}
            Err(e) => {
                self.report_io(&e);
                return;
            }
        }
        if function.keeps_versions() {
            tracing::info!(
                "{}: {stale}; the results of other versions are kept (keep_versions)",
                function.full_name()
            );
        } else {
            let removed = self.remove_entries(function).unwrap_or_else(|e| {
                self.report_io(&e);
                0
            });
            tracing::warn!(
                "{}: {stale}; its {removed} stored result(s) are removed",
                function.full_name()
            );
        }
        match self.write_record(&name, &record) {
            Ok(_) => state.record_on_disk.store(true, Ordering::Release),
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
        let name = format!("{}/function.lock", function.folder());
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
