//! Limits: the running count of what a cache holds, eviction (through the
//! eviction index for a local cache), statistics and clearing.

use super::*;
use crate::evict::FunctionStats;

/// Running count of what the store holds, from the last listing plus this
/// Memory's writes since.
#[derive(Default)]
pub(super) struct Usage {
    /// (bytes, items); `None` until the first listing.
    pub(super) known: Option<(u64, u64)>,
    pub(super) last_scan: Option<Instant>,
}

/// Automatic eviction brings each limit down to this fraction of itself, so
/// that the next listing is many writes away.
const AUTO_FRACTION: f64 = 0.9;

/// What [`Memory::reduce_size`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reduction {
    /// Stored results removed.
    pub removed: u64,
    /// Bytes freed.
    pub freed_bytes: u64,
}

impl Memory {
    /// Removes least recently used results until every limit holds, now.
    /// Writes do this by themselves when a limit is crossed.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let memory = memento::Memory::new(dir.path());
    /// let f = memento::Function::new("docs", "id");
    /// for i in 0..10u32 {
    ///     let _: u32 = memory.call(&f, &i, || i);
    /// }
    /// let reduced = memory.clone().items_limit(3).reduce_size().unwrap();
    /// assert_eq!(reduced.removed, 7);
    /// assert_eq!(memory.stats().unwrap().entries, 3);
    /// ```
    pub fn reduce_size(&self) -> Result<Reduction> {
        self.reduce(1.0)
    }

    fn reduce(&self, fraction: f64) -> Result<Reduction> {
        // One eviction at a time per Memory; a writer over a limit waits for
        // a running one, then finds the limit held (or evicts itself), so
        // no write returns with the cache above a limit by more than it.
        let _guard = self
            .inner
            .reducing
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let store = &*self.inner.store;
        let limits = self.inner.options.limits;
        let (done, remaining, first_error) = match (&self.inner.options.location, &self.inner.index)
        {
            (Some(root), Some(_)) => self.reduce_indexed(root, &limits, fraction)?,
            _ => {
                let inventory = Inventory::scan(store)?;
                let victims = inventory.victims(&limits, fraction, SystemTime::now());
                let (removed, freed_bytes, first_error) =
                    evict::remove_entries(store, &victims, &|| {});
                let remaining = (
                    inventory.bytes().saturating_sub(freed_bytes),
                    inventory.items().saturating_sub(removed),
                );
                (
                    Reduction {
                        removed,
                        freed_bytes,
                    },
                    remaining,
                    first_error,
                )
            }
        };
        {
            let mut usage = self.inner.usage.lock().unwrap_or_else(|e| e.into_inner());
            usage.known = Some(remaining);
            usage.last_scan = Some(Instant::now());
        }
        if done.removed > 0 {
            tracing::info!(
                "{}: removed {} least recently used result(s), {}",
                self.location(),
                done.removed,
                bytesize::ByteSize::b(done.freed_bytes)
            );
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(done),
        }
    }

    /// Eviction through the index (see the `index` module): no listing of
    /// the store, except once to build the index of a cache that has none.
    fn reduce_indexed(
        &self,
        root: &Path,
        limits: &Limits,
        fraction: f64,
    ) -> Result<(Reduction, (u64, u64), Option<Error>)> {
        use crate::index;
        let store = &*self.inner.store;
        let index_dir = root.join(index::INDEX_DIR);
        if !index::complete(root) {
            let io = |e| Error::io("build the eviction index in", &index_dir, e);
            let before = index::logs(root).map_err(io)?;
            let inventory = Inventory::scan(store)?;
            index::rebuild(root, &inventory, &before).map_err(io)?;
        }
        let started = std::time::Instant::now();
        let mut snapshot = index::read(root)
            .map_err(|e| Error::io("read the eviction index in", &index_dir, e))?;
        let read = started.elapsed();
        let chosen = index::victims(root, &mut snapshot, limits, fraction, SystemTime::now());
        let chose = started.elapsed();
        let infos: Vec<evict::EntryInfo> = chosen
            .iter()
            .map(|(key, e)| evict::EntryInfo {
                function_folder: e.folder.clone(),
                name: index::entry_file(&e.folder, key),
                key: key.to_hex(),
                bytes: e.size,
                content: e.size,
                last_access: UNIX_EPOCH + Duration::from_millis(e.time_ms),
                complete: true,
            })
            .collect();
        let refs: Vec<&evict::EntryInfo> = infos.iter().collect();
        let (removed, freed_bytes, first_error) = evict::remove_entries(store, &refs, &|| {});
        let gone = started.elapsed();
        let remaining = (snapshot.bytes(), snapshot.entries.len() as u64);
        if !chosen.is_empty() {
            let logs = std::mem::take(&mut snapshot.logs);
            index::compact(root, snapshot.entries.into_iter(), &logs)
                .map_err(|e| Error::io("compact the eviction index in", &index_dir, e))?;
        }
        tracing::debug!(
            "eviction: index read in {read:.2?}, {} victim(s) chosen in {:.2?}, \
             removed in {:.2?}, index compacted in {:.2?}",
            chosen.len(),
            chose - read,
            gone - chose,
            started.elapsed() - gone
        );
        Ok((
            Reduction {
                removed,
                freed_bytes,
            },
            remaining,
            first_error,
        ))
    }

    /// Counts a write of `added` bytes; lists and evicts when a limit is
    /// crossed (or an age limit is due).
    pub(super) fn after_write(&self, added: u64) {
        let limits = self.inner.options.limits;
        if !limits.any() {
            return;
        }
        // What the write takes on the disk: whole blocks (an estimate; a
        // listing reads the real ones).
        let added = match &self.inner.index {
            Some(index) => index.on_disk(added),
            None => added,
        };
        let due = {
            let mut usage = self.inner.usage.lock().unwrap_or_else(|e| e.into_inner());
            let over = match &mut usage.known {
                None => true,
                Some((bytes, items)) => {
                    *bytes += added;
                    *items += 1;
                    limits.bytes.is_some_and(|l| *bytes > l)
                        || limits.items.is_some_and(|l| *items > l)
                }
            };
            let age_due = limits.age.is_some_and(|age| {
                usage
                    .last_scan
                    .is_none_or(|t| t.elapsed() >= (age / 4).max(Duration::from_secs(1)))
            });
            over || age_due
        };
        if due {
            if let Err(e) = self.reduce(AUTO_FRACTION) {
                self.report_io(&e);
            }
        }
    }

    /// What the cache holds: results and bytes, per function.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let memory = memento::Memory::new(dir.path());
    /// let f = memento::Function::new("docs", "twice");
    /// let _: u32 = memory.call(&f, &2u32, || 4);
    /// let stats = memory.stats().unwrap();
    /// assert_eq!(stats.entries, 1);
    /// assert_eq!(stats.functions[0].name, "docs::twice");
    /// ```
    pub fn stats(&self) -> Result<Stats> {
        let store = &*self.inner.store;
        Ok(Stats::of(&Inventory::scan(store)?, store))
    }

    /// Removes every stored result of every function (the location itself
    /// and its `.gitignore` stay).
    ///
    /// Other threads and processes may go on reading and writing meanwhile:
    /// what was stored when the clear started is removed; what is written
    /// while it runs may stay or go. A folder that fills up under it is no
    /// error.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let memory = memento::Memory::new(dir.path());
    /// let f = memento::Function::new("docs", "cleared");
    /// let _: u8 = memory.call(&f, &1u8, || 2);
    /// memory.clear().unwrap();
    /// assert_eq!(memory.stats().unwrap().entries, 0);
    /// assert!(dir.path().join(".gitignore").exists());
    /// ```
    pub fn clear(&self) -> Result<()> {
        let store = &*self.inner.store;
        let mut tops: Vec<String> = match &self.inner.options.location {
            // The top folders, without listing every entry under them.
            Some(root) => match std::fs::read_dir(root) {
                Ok(listing) => listing
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|name| !name.starts_with(crate::store::TEMP_PREFIX))
                    .collect(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(e) => return Err(Error::io("list", root, e)),
            },
            None => store
                .list("")?
                .into_iter()
                .filter_map(|name| name.split('/').next().map(str::to_string))
                .collect(),
        };
        tops.retain(|top| top != ".gitignore");
        tops.sort();
        tops.dedup();
        for top in tops {
            store.delete_prefix(&top)?;
        }
        self.forget();
        Ok(())
    }

    /// Forgets what this Memory knew of the store (after a clear).
    fn forget(&self) {
        self.inner.hot.clear();
        self.inner
            .functions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        *self.inner.usage.lock().unwrap_or_else(|e| e.into_inner()) = Usage::default();
    }

    /// Removes every stored result of `function` (and its record); returns
    /// how many results were removed. The results of other functions stay,
    /// those of a function nested in this one's folder too.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let memory = memento::Memory::new(dir.path());
    /// let f = memento::Function::new("docs", "twice");
    /// let _: u32 = memory.call(&f, &2u32, || 4);
    /// assert_eq!(memory.clear_function(&f).unwrap(), 1);
    /// assert_eq!(memory.stats().unwrap().entries, 0);
    /// ```
    pub fn clear_function(&self, function: &Function) -> Result<usize> {
        let removed = self.clear_folder(function.folder())?;
        self.inner
            .functions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(function.hash());
        Ok(removed)
    }

    /// Removes every stored result of a function as listed by
    /// [`stats`](Memory::stats) (its record too), as
    /// [`clear_function`](Memory::clear_function) does for a [`Function`]:
    /// for tools that know a cache's functions by their listing (the
    /// `memento` command). A function nested in its folder keeps its
    /// results. Returns how many results were removed.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let memory = memento::Memory::new(dir.path());
    /// let outer = memento::Function::new("docs", "outer");
    /// let inner = memento::Function::new("docs::outer", "inner");
    /// let _: u8 = memory.call(&outer, &1u8, || 1);
    /// let _: u8 = memory.call(&inner, &1u8, || 2);
    /// let stats = memory.stats().unwrap();
    /// let listed = stats.functions.iter().find(|f| f.name == "docs::outer").unwrap();
    /// assert_eq!(memory.clear_listed(listed).unwrap(), 1);
    /// assert_eq!(memory.stats().unwrap().functions.len(), 1); // docs::outer::inner
    /// ```
    pub fn clear_listed(&self, function: &FunctionStats) -> Result<usize> {
        let removed = self.clear_folder(&function.folder)?;
        // Which in-process state is this function's is not known by its
        // folder: all of it is read again.
        self.inner
            .functions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        Ok(removed)
    }

    /// Removes the results and records of the function whose folder is
    /// `folder`, not those of functions in folders below it.
    fn clear_folder(&self, folder: &str) -> Result<usize> {
        let store = &*self.inner.store;
        let inventory = Inventory::scan_prefix(store, folder)?;
        let victims: Vec<&evict::EntryInfo> = inventory
            .entries
            .iter()
            .filter(|e| e.function_folder == folder)
            .collect();
        let (removed, _, first_error) = evict::remove_entries(store, &victims, &|| {});
        if let Some(e) = first_error {
            return Err(e);
        }
        for file in ["function.json", "hits.json"] {
            store.delete(&format!("{folder}/{file}"))?;
        }
        store.prune(folder)?;
        // Keys do not name their function: drop the whole in-memory layer.
        self.inner.hot.clear();
        // And its records in the eviction index.
        if let (Some(root), Some(_)) = (&self.inner.options.location, &self.inner.index) {
            let _guard = self
                .inner
                .reducing
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let dir = root.join(crate::index::INDEX_DIR);
            let snapshot = crate::index::read(root)
                .map_err(|e| Error::io("read the eviction index in", &dir, e))?;
            let keep = snapshot
                .entries
                .into_iter()
                .filter(|(_, e)| e.folder != folder);
            crate::index::compact(root, keep, &snapshot.logs)
                .map_err(|e| Error::io("compact the eviction index in", &dir, e))?;
        }
        Ok(removed as usize)
    }

    /// Rebuilds the eviction index of a local cache from a listing of it:
    /// after its results were removed by other means than this library
    /// (the `memento` command does this after `gc`, `clear` and `verify
    /// --remove`). Results written while it lists are kept in the index.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let memory = memento::Memory::new(dir.path());
    /// let _: u8 = memory.call(&memento::Function::new("docs", "one"), &(), || 1);
    /// memory.rebuild_index().unwrap();
    /// ```
    pub fn rebuild_index(&self) -> Result<()> {
        let Some(root) = &self.inner.options.location else {
            return Ok(());
        };
        let _guard = self
            .inner
            .reducing
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let io = |e| {
            Error::io(
                "rebuild the eviction index in",
                root.join(crate::index::INDEX_DIR),
                e,
            )
        };
        let before = crate::index::logs(root).map_err(io)?;
        let inventory = Inventory::scan(&*self.inner.store)?;
        crate::index::rebuild(root, &inventory, &before).map_err(io)?;
        *self.inner.usage.lock().unwrap_or_else(|e| e.into_inner()) = Usage::default();
        Ok(())
    }
}
