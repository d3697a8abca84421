//! Limits: the running count of what a cache holds, eviction (through the
//! eviction index for a local cache), statistics and clearing.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::Memory;
use crate::codec;
use crate::entry::Metadata;
use crate::error::{Error, Result};
use crate::evict::{self, FunctionStats, Inventory, Limits, Stats};
use crate::function::{Function, FunctionRecord};
use crate::key::Key;

/// Running count of what the store holds, from the last listing plus the
/// writes of this process since; and the lock that lets one eviction run at
/// a time.
#[derive(Default)]
pub(super) struct Usage {
    counts: Mutex<Counts>,
    reducing: Mutex<()>,
}

#[derive(Default)]
struct Counts {
    /// (bytes, items); `None` until the first listing.
    known: Option<(u64, u64)>,
    last_scan: Option<Instant>,
}

impl Usage {
    fn counts(&self) -> MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One eviction (or index rewrite) at a time.
    fn reducing(&self) -> MutexGuard<'_, ()> {
        self.reducing.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets the count: the next write lists the store.
    pub(super) fn reset(&self) {
        *self.counts() = Counts::default();
    }

    /// Notes what a listing (or an eviction) found.
    fn scanned(&self, remaining: (u64, u64)) {
        let mut counts = self.counts();
        counts.known = Some(remaining);
        counts.last_scan = Some(Instant::now());
    }

    /// Counts a write of `added` bytes; true when `limits` call for an
    /// eviction (a limit crossed, or an age limit due).
    fn add(&self, added: u64, limits: &Limits) -> bool {
        let mut counts = self.counts();
        let over = match &mut counts.known {
            None => true,
            Some((bytes, items)) => {
                *bytes += added;
                *items += 1;
                limits.bytes.is_some_and(|l| *bytes > l) || limits.items.is_some_and(|l| *items > l)
            }
        };
        let age_due = limits.age.is_some_and(|age| {
            counts
                .last_scan
                .is_none_or(|t| t.elapsed() >= (age / 4).max(Duration::from_secs(1)))
        });
        over || age_due
    }
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
        let _guard = self.shared().usage().reducing();
        let store = self.store();
        let limits = self.config().limits();
        let (done, remaining, first_error) = match (self.config().folder(), self.shared().index()) {
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
        self.shared().usage().scanned(remaining);
        if done.removed > 0 {
            crate::log::info!(
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
        let store = self.store();
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
        if added == 0 {
            return;
        }
        let limits = self.config().limits();
        if !limits.any() {
            return;
        }
        // What the write takes on the disk: whole blocks (an estimate; a
        // listing reads the real ones).
        let added = match self.shared().index() {
            Some(index) => index.on_disk(added),
            None => added,
        };
        if self.shared().usage().add(added, &limits) {
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
        let store = self.store();
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
        let store = self.store();
        let mut tops: Vec<String> = match self.config().folder() {
            // The top folders, without listing every entry under them.
            Some(root) => match std::fs::read_dir(root) {
                Ok(listing) => listing
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|name| !crate::layout::is_temp_file(name))
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
        tops.retain(|top| top != crate::layout::GITIGNORE);
        tops.sort();
        tops.dedup();
        for top in tops {
            store.delete_prefix(&top)?;
        }
        // What this process knew of the store.
        self.shared().forget();
        Ok(())
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
        self.clear_folder(function.folder())
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
        self.clear_folder(&function.folder)
    }

    /// Removes the results and records of the function whose folder is
    /// `folder`, not those of functions in folders below it.
    fn clear_folder(&self, folder: &str) -> Result<usize> {
        let store = self.store();
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
        store.delete(&crate::layout::record(folder))?;
        store.delete(&crate::layout::hits(folder))?;
        store.prune(folder)?;
        // What this process knew of it: its state, its results in memory.
        self.shared().forget_function(folder);
        // And its records in the eviction index.
        if let (Some(root), Some(_)) = (self.config().folder(), self.shared().index()) {
            let _guard = self.shared().usage().reducing();
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
        let Some(root) = self.config().folder() else {
            return Ok(());
        };
        let _guard = self.shared().usage().reducing();
        let io = |e| {
            Error::io(
                "rebuild the eviction index in",
                root.join(crate::index::INDEX_DIR),
                e,
            )
        };
        let before = crate::index::logs(root).map_err(io)?;
        let inventory = Inventory::scan(self.store())?;
        crate::index::rebuild(root, &inventory, &before).map_err(io)?;
        self.shared().usage().reset();
        Ok(())
    }
}

/// A stored result of one function, as [`Memory::entries`] lists it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct StoredEntry {
    /// The key, hex.
    pub key: String,
    /// Its file (or a first-layout leftover's folder), relative to the
    /// location.
    pub name: String,
    /// What it takes on the disk (allocated blocks).
    pub bytes: u64,
    /// Its length.
    pub content_bytes: u64,
    /// Its last access (its file's modification time).
    pub last_access: SystemTime,
    /// False for a leftover of memento 0.1's first layout, never read.
    pub complete: bool,
    /// Its header and info, when readable (the checksum is not checked).
    pub metadata: Option<Metadata>,
}

/// What [`Memory::verify`] found.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Verification {
    /// Stored results (and first-layout leftovers) checked.
    pub checked: u64,
    /// Those found damaged, with the reason.
    pub damaged: Vec<DamagedEntry>,
    /// How many of them were removed (with `remove`).
    pub removed: u64,
}

/// A damaged stored result found by [`Memory::verify`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct DamagedEntry {
    /// Its file, relative to the location.
    pub name: String,
    /// What is wrong with it.
    pub problem: String,
}

/// What [`Memory::gc`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Collected {
    /// Stored results removed.
    pub removed: u64,
    /// Disk bytes freed.
    pub freed_bytes: u64,
    /// Stored results left.
    pub left: u64,
    /// Disk bytes left.
    pub left_bytes: u64,
    /// Leftovers of interrupted writes removed (temporary files and unheld
    /// lock files more than an hour old).
    pub swept: u64,
}

/// Management: what tools that look after a cache (the `memento` command)
/// need, without reaching into the store's layout. Every read here is no
/// access: it leaves the results' last access as it was.
impl Memory {
    /// The record (`function.json`) of a function as listed by
    /// [`stats`](Memory::stats), if it has a readable one.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let memory = memento::Memory::new(dir.path());
    /// let _: u8 = memory.call(&memento::Function::new("docs", "rec"), &1u8, || 1);
    /// let stats = memory.stats().unwrap();
    /// let record = memory.function_record(&stats.functions[0]).unwrap();
    /// assert_eq!(record.function, "docs::rec");
    /// ```
    pub fn function_record(&self, function: &FunctionStats) -> Option<FunctionRecord> {
        crate::store::read_json(self.store(), &crate::layout::record(&function.folder))
    }

    /// The stored results of a function as listed by
    /// [`stats`](Memory::stats) (not those of functions nested in its
    /// folder), oldest first, each with its metadata.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let memory = memento::Memory::new(dir.path());
    /// let f = memento::Function::new("docs", "listed");
    /// let _: u8 = memory.call(&f, &(1u8,), || 1);
    /// let stats = memory.stats().unwrap();
    /// let entries = memory.entries(&stats.functions[0]).unwrap();
    /// assert_eq!(entries[0].metadata.as_ref().unwrap().args, "[1]");
    /// ```
    pub fn entries(&self, function: &FunctionStats) -> Result<Vec<StoredEntry>> {
        let store = self.store();
        let inventory = Inventory::scan_prefix(store, &function.folder)?;
        let mut entries: Vec<StoredEntry> = inventory
            .entries
            .into_iter()
            .filter(|e| e.function_folder == function.folder)
            .map(|e| {
                let metadata = if e.complete {
                    Metadata::read(store, &e.name).ok().flatten()
                } else {
                    None
                };
                StoredEntry {
                    key: e.key,
                    name: e.name,
                    bytes: e.bytes,
                    content_bytes: e.content,
                    last_access: e.last_access,
                    complete: e.complete,
                    metadata,
                }
            })
            .collect();
        entries.sort_by(|a, b| {
            let created = |e: &StoredEntry| e.metadata.as_ref().map_or(0.0, |m| m.created_unix);
            created(a).total_cmp(&created(b))
        });
        Ok(entries)
    }

    /// Checks every stored result's checksum (and signature, with a
    /// signing key), reading none as an access; with `remove`, removes the
    /// damaged ones (and rebuilds the eviction index). `progress` is called
    /// with (checked, total) after each.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let memory = memento::Memory::new(dir.path());
    /// let _: u8 = memory.call(&memento::Function::new("docs", "v"), &1u8, || 1);
    /// let found = memory.verify(false, &|_, _| {}).unwrap();
    /// assert_eq!((found.checked, found.damaged.len()), (1, 0));
    /// ```
    pub fn verify(
        &self,
        remove: bool,
        progress: &(dyn Fn(u64, u64) + Sync),
    ) -> Result<Verification> {
        let store = self.store();
        let inventory = Inventory::scan(store)?;
        let total = inventory.entries.len() as u64;
        let signer = self.config().signer();
        let mut found = Verification::default();
        let mut victims = Vec::new();
        let mut buf = Vec::new();
        for entry in &inventory.entries {
            let problem = if !entry.complete {
                Some("an entry folder of memento 0.1's first layout, never read".to_string())
            } else {
                match Key::from_hex(&entry.key) {
                    None => Some("a file name that is no key".to_string()),
                    Some(key) => match store.peek(&entry.name, &mut buf) {
                        Ok(true) => codec::verify(&key, &buf, signer)
                            .err()
                            .map(|d| d.to_string()),
                        Ok(false) => Some("removed while verifying".into()),
                        Err(e) => Some(e.to_string()),
                    },
                }
            };
            found.checked += 1;
            progress(found.checked, total);
            if let Some(problem) = problem {
                found.damaged.push(DamagedEntry {
                    name: entry.name.clone(),
                    problem,
                });
                victims.push(entry);
            }
        }
        if remove && !victims.is_empty() {
            let (_, _, first_error) = evict::remove_entries(store, &victims, &|| {});
            if let Some(e) = first_error {
                return Err(e);
            }
            found.removed = victims.len() as u64;
            self.rebuild_index()?;
        }
        Ok(found)
    }

    /// Removes least recently used results until every limit of `limits`
    /// holds (whatever this Memory's own limits), then leftovers of
    /// interrupted writes more than an hour old, and rebuilds the eviction
    /// index. `progress` is called with (removed, to remove) after each
    /// removal.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let memory = memento::Memory::new(dir.path());
    /// let f = memento::Function::new("docs", "gc");
    /// for i in 0..5u8 {
    ///     let _: u8 = memory.call(&f, &i, || i);
    /// }
    /// let limits = memento::Limits { items: Some(2), ..Default::default() };
    /// let done = memory.gc(&limits, &|_, _| {}).unwrap();
    /// assert_eq!((done.removed, done.left), (3, 2));
    /// ```
    pub fn gc(&self, limits: &Limits, progress: &(dyn Fn(u64, u64) + Sync)) -> Result<Collected> {
        let store = self.store();
        let inventory = Inventory::scan(store)?;
        let victims = inventory.victims(limits, 1.0, SystemTime::now());
        let total = victims.len() as u64;
        let done = std::sync::atomic::AtomicU64::new(0);
        let (removed, freed_bytes, first_error) = evict::remove_entries(store, &victims, &|| {
            progress(done.fetch_add(1, Ordering::Relaxed) + 1, total)
        });
        if let Some(e) = first_error {
            return Err(e);
        }
        self.rebuild_index()?;
        let swept = store.sweep(Duration::from_secs(3600))?;
        Ok(Collected {
            removed,
            freed_bytes,
            left: inventory.items().saturating_sub(removed),
            left_bytes: inventory.bytes().saturating_sub(freed_bytes),
            swept,
        })
    }
}
