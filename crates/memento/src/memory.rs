//! The memory handle: where results live, and the path of a call through the
//! cache (key → lookup → hit: verify, decode / miss: compute, encode, write).

use std::cell::Cell;
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec::{self, HEADER_LEN};
use crate::entry::{self, Metadata};
use crate::error::{Error, Result};
use crate::evict::{self, Inventory, Limits, Stats};
use crate::function::{Function, FunctionRecord, Shape};
use crate::handle::Mode;
use crate::key::{self, Key};
use crate::store::{LocalStore, LockOutcome, Store, StoreLock};

/// Environment variable naming the default cache folder.
pub const MEMENTO_DIR: &str = "MEMENTO_DIR";

/// Folder of the default cache when `MEMENTO_DIR` is not set, relative to the
/// current directory.
pub const DEFAULT_DIR: &str = ".memento";

/// Where a cache lives: a folder for now.
///
/// Built from a `&str`, `String`, `&Path`, `PathBuf`, `&OsStr` or `OsString`.
///
/// ```
/// let a: memento::Location = "cache".into();
/// let b: memento::Location = std::path::PathBuf::from("cache").into();
/// assert_eq!(a, b);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location(PathBuf);

impl Location {
    /// The folder.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

macro_rules! location_from {
    ($($t:ty),*) => {$(
        impl From<$t> for Location {
            fn from(value: $t) -> Location {
                Location(PathBuf::from(value))
            }
        }
    )*};
}
location_from!(&str, String, &String, &Path, PathBuf, &PathBuf, &OsStr, OsString);

/// A cache: a location plus options. Cheap to clone; clones share state.
///
/// Results are read and written through [`call`](Memory::call),
/// [`call_result`](Memory::call_result) and [`lookup`](Memory::lookup), or
/// through `#[memento::cache]`, which expands to `lookup`.
///
/// ```
/// use memento::{Function, Memory};
///
/// let dir = tempfile::tempdir().unwrap();
/// let memory = Memory::new(dir.path());
/// let square = Function::new("docs", "square");
///
/// let mut runs = 0;
/// for _ in 0..3 {
///     let y: u64 = memory.call(&square, &(12u64,), || {
///         runs += 1;
///         12 * 12
///     });
///     assert_eq!(y, 144);
/// }
/// assert_eq!(runs, 1);
/// ```
#[derive(Clone)]
pub struct Memory {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    options: Options,
    functions: RwLock<HashMap<[u8; 32], Arc<FnState>, BuildHasherDefault<KeyIdHasher>>>,
    hot: Hot,
    warned_io: AtomicBool,
    usage: Mutex<Usage>,
    reducing: Mutex<()>,
    /// This Memory's eviction index log (local caches).
    index: Option<crate::index::IndexLog>,
    /// Computations running in this process, by key: later callers of the
    /// same key wait for them instead of computing again.
    inflight: Mutex<HashMap<Key, Arc<Flight>, BuildHasherDefault<KeyIdHasher>>>,
}

#[derive(Clone)]
struct Options {
    location: Option<PathBuf>,
    in_memory_bytes: u64,
    limits: Limits,
    lock_timeout: Option<Duration>,
    signer: Option<codec::Signer>,
}

/// One computation in flight in this process.
#[derive(Default)]
struct Flight {
    done: Mutex<bool>,
    cv: Condvar,
}

impl Flight {
    /// Waits until the computation ends; false if `timeout` passed first.
    fn wait(&self, timeout: Option<Duration>) -> bool {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        while !*done {
            match deadline {
                None => done = self.cv.wait(done).unwrap_or_else(|e| e.into_inner()),
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return false;
                    }
                    done = self
                        .cv
                        .wait_timeout(done, deadline - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        }
        true
    }
}

/// The leader of a computation in this process: when it drops (the result
/// stored, or the computation failed or panicked), the waiters wake up.
struct Leader {
    memory: Memory,
    key: Key,
    flight: Arc<Flight>,
}

impl Drop for Leader {
    fn drop(&mut self) {
        self.memory
            .inner
            .inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
        *self.flight.done.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.flight.cv.notify_all();
    }
}

/// Running count of what the store holds, from the last listing plus this
/// Memory's writes since.
#[derive(Default)]
struct Usage {
    /// (bytes, items); `None` until the first listing.
    known: Option<(u64, u64)>,
    last_scan: Option<Instant>,
}

/// Hits are added to `hits.json` at most every [`HITS_FLUSH_SECONDS`]
/// (checked every this many hits), whenever the process stores a result of
/// the function, and when the process exits.
const HITS_CHECK_EVERY: u64 = 1024;

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

/// Per-Memory state of one function.
struct FnState {
    /// The record check ran (once per process and Memory).
    checked: OnceLock<()>,
    /// `function.json` on disk matches this code.
    record_on_disk: AtomicBool,
}

impl fmt::Debug for Memory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Memory")
            .field("location", &self.inner.store.location())
            .field("in_memory_bytes", &self.inner.options.in_memory_bytes)
            .finish()
    }
}

/// The answer of [`Memory::lookup`].
pub enum Lookup<'m, T> {
    /// The stored result.
    Hit(T),
    /// Nothing usable is stored: compute, then hand the value to
    /// [`Pending::store`].
    Miss(Pending<'m, T>),
}

/// A call that missed: it knows its key and stores the value it is given.
#[must_use = "call store() with the computed value, or it is not cached"]
pub struct Pending<'m, T> {
    memory: &'m Memory,
    function: &'m Function,
    state: Option<Arc<FnState>>,
    key: Option<Key>,
    shape: Shape,
    args: String,
    started: Instant,
    mode: Mode,
    /// Released after the result is written, or when the computation
    /// fails: the cross-process lock first, then this process's waiters.
    lock: Option<StoreLock>,
    leader: Option<Leader>,
    _output: PhantomData<fn() -> T>,
}

/// Default bound of the in-memory layer.
const DEFAULT_IN_MEMORY_BYTES: u64 = 64 << 20;

impl Memory {
    /// A cache in the folder `location`, created (mode 0700, with a
    /// `.gitignore` holding `*`) on the first write. A relative path is made
    /// absolute now, so a later change of the current directory does not
    /// move the cache.
    pub fn new(location: impl Into<Location>) -> Memory {
        let path = location.into().0;
        let path = std::path::absolute(&path).unwrap_or(path);
        Memory::build(
            Arc::new(LocalStore::new(path.clone())),
            Options {
                location: Some(path),
                in_memory_bytes: DEFAULT_IN_MEMORY_BYTES,
                limits: Limits::default(),
                lock_timeout: None,
                signer: None,
            },
        )
    }

    /// The default cache: the folder named by `MEMENTO_DIR`, else `.memento`
    /// in the current directory. `#[memento::cache]` without `memory = ..`
    /// uses one such Memory for the whole process.
    ///
    /// Entries are signed with `MEMENTO_KEY` when it is set (see
    /// [`signing_key`](Memory::signing_key)). Limits come from
    /// `MEMENTO_BYTES_LIMIT` (a size such as `10GB`),
    /// `MEMENTO_ITEMS_LIMIT` (a number) and `MEMENTO_AGE_LIMIT` (a duration
    /// such as `30d`); a value that cannot be read is ignored with a warning.
    pub fn from_env() -> Memory {
        let mut memory = match std::env::var_os(MEMENTO_DIR) {
            Some(dir) if !dir.is_empty() => Memory::new(dir),
            _ => Memory::new(DEFAULT_DIR),
        };
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let warn = |name: &str, e: Error| {
            tracing::warn!("{name}: {e}; the limit is not applied");
        };
        if let Some(signer) = codec::Signer::from_env() {
            memory = memory.with_options(|o| o.signer = Some(signer));
        }
        if let Some(v) = var("MEMENTO_BYTES_LIMIT") {
            match evict::parse_size(&v) {
                Ok(n) => memory = memory.bytes_limit(n),
                Err(e) => warn("MEMENTO_BYTES_LIMIT", e),
            }
        }
        if let Some(v) = var("MEMENTO_ITEMS_LIMIT") {
            match v.trim().parse::<u64>() {
                Ok(n) => memory = memory.items_limit(n),
                Err(_) => warn(
                    "MEMENTO_ITEMS_LIMIT",
                    Error::Option {
                        option: "number of items",
                        value: v,
                        expected: "a whole number such as 10000".into(),
                    },
                ),
            }
        }
        if let Some(v) = var("MEMENTO_AGE_LIMIT") {
            match evict::parse_duration(&v) {
                Ok(d) => memory = memory.age_limit(d),
                Err(e) => warn("MEMENTO_AGE_LIMIT", e),
            }
        }
        memory
    }

    /// A cache kept by another [`Store`] backend.
    ///
    /// ```
    /// use memento::store::LocalStore;
    /// let dir = tempfile::tempdir().unwrap();
    /// let memory = memento::Memory::with_store(LocalStore::new(dir.path()));
    /// assert_eq!(memory.location(), dir.path().display().to_string());
    /// ```
    pub fn with_store(store: impl Store) -> Memory {
        Memory::build(
            Arc::new(store),
            Options {
                location: None,
                in_memory_bytes: DEFAULT_IN_MEMORY_BYTES,
                limits: Limits::default(),
                lock_timeout: None,
                signer: None,
            },
        )
    }

    fn build(store: Arc<dyn Store>, options: Options) -> Memory {
        let index = options.location.as_deref().map(crate::index::IndexLog::new);
        Memory {
            inner: Arc::new(Inner {
                store,
                hot: Hot::new(options.in_memory_bytes),
                options,
                functions: RwLock::new(HashMap::default()),
                warned_io: AtomicBool::new(false),
                usage: Mutex::new(Usage::default()),
                reducing: Mutex::new(()),
                inflight: Mutex::new(HashMap::default()),
                index,
            }),
        }
    }

    /// Bounds the in-memory layer that serves repeated hits in this process
    /// (64 MiB by default; entries above 1/16 of it are never kept there).
    /// `0` turns it off: every hit then reads the store.
    ///
    /// ```
    /// let memory = memento::Memory::new("cache").in_memory_limit(0);
    /// # let _ = memory;
    /// ```
    pub fn in_memory_limit(self, bytes: u64) -> Memory {
        self.with_options(|o| o.in_memory_bytes = bytes)
    }

    fn with_options(self, change: impl FnOnce(&mut Options)) -> Memory {
        let mut options = self.inner.options.clone();
        change(&mut options);
        Memory::build(self.inner.store.clone(), options)
    }

    /// Keeps the bytes stored under the location (outputs, metadata,
    /// records) at most `bytes`: after a write that crosses it, the least
    /// recently used results are removed.
    ///
    /// ```
    /// let memory = memento::Memory::new("cache").bytes_limit(10 << 30);
    /// assert_eq!(memory.limits().bytes, Some(10 << 30));
    /// ```
    pub fn bytes_limit(self, bytes: u64) -> Memory {
        self.with_options(|o| o.limits.bytes = Some(bytes))
    }

    /// Keeps at most `items` stored results (least recently used go first).
    pub fn items_limit(self, items: u64) -> Memory {
        self.with_options(|o| o.limits.items = Some(items))
    }

    /// Removes results not used for longer than `age`.
    ///
    /// ```
    /// use std::time::Duration;
    /// let memory = memento::Memory::new("cache").age_limit(Duration::from_secs(30 * 86400));
    /// # let _ = memory;
    /// ```
    pub fn age_limit(self, age: Duration) -> Memory {
        self.with_options(|o| o.limits.age = Some(age))
    }

    /// Signs every entry written with a key derived from `secret`, and
    /// refuses (recomputes) every entry that is unsigned or signed with
    /// another key: a cache folder or bucket shared with others then cannot
    /// be used to hand this program a value. All programs sharing the cache
    /// must use the same secret.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let memory = memento::Memory::new(dir.path()).signing_key("a long random secret");
    /// let f = memento::Function::new("docs", "signed");
    /// let _: u8 = memory.call(&f, &1u8, || 1);
    /// let mut ran = false;
    /// let other = memento::Memory::new(dir.path()).signing_key("another secret");
    /// let _: u8 = other.call(&f, &1u8, || { ran = true; 1 });
    /// assert!(ran, "another key's entry is not trusted");
    /// ```
    pub fn signing_key(self, secret: impl AsRef<[u8]>) -> Memory {
        let signer = codec::Signer::new(secret);
        self.with_options(|o| o.signer = Some(signer))
    }

    /// Bounds how long a call waits for the same call running in another
    /// thread or process (by default it waits until that one finishes, or
    /// its process dies). After the wait it computes the value itself, with
    /// a warning.
    ///
    /// ```
    /// use std::time::Duration;
    /// let memory = memento::Memory::new("cache").lock_timeout(Duration::from_secs(600));
    /// # let _ = memory;
    /// ```
    pub fn lock_timeout(self, timeout: Duration) -> Memory {
        self.with_options(|o| o.lock_timeout = Some(timeout))
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.inner.options.limits
    }

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
            let inventory = Inventory::scan(store)?;
            index::rebuild(root, &inventory)
                .map_err(|e| Error::io("build the eviction index in", &index_dir, e))?;
        }
        let mut snapshot = index::read(root)
            .map_err(|e| Error::io("read the eviction index in", &index_dir, e))?;
        let chosen = index::victims(root, &mut snapshot, limits, fraction, SystemTime::now());
        let infos: Vec<evict::EntryInfo> = chosen
            .iter()
            .map(|(key, e)| evict::EntryInfo {
                function_folder: e.folder.clone(),
                dir: index::entry_dir(&e.folder, key),
                key: key.to_hex(),
                bytes: e.size,
                last_access: UNIX_EPOCH + Duration::from_millis(e.time_ms),
                complete: true,
            })
            .collect();
        let refs: Vec<&evict::EntryInfo> = infos.iter().collect();
        let (removed, freed_bytes, first_error) = evict::remove_entries(store, &refs, &|| {});
        let remaining = (snapshot.bytes(), snapshot.entries.len() as u64);
        if !chosen.is_empty() {
            let logs = std::mem::take(&mut snapshot.logs);
            index::compact(root, snapshot.entries.into_iter(), &logs)
                .map_err(|e| Error::io("compact the eviction index in", &index_dir, e))?;
        }
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
    fn after_write(&self, added: u64) {
        let limits = self.inner.options.limits;
        if !limits.any() {
            return;
        }
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
    pub fn clear(&self) -> Result<()> {
        let store = &*self.inner.store;
        let mut tops: Vec<String> = store
            .list("")?
            .into_iter()
            .filter_map(|name| name.split('/').next().map(str::to_string))
            .filter(|top| top != ".gitignore")
            .collect();
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

    /// Where the results live (a folder).
    pub fn location(&self) -> String {
        self.inner.store.location()
    }

    /// The folder of a local cache (`None` for another backend).
    pub fn path(&self) -> Option<&Path> {
        self.inner.options.location.as_deref()
    }

    /// The store behind this Memory.
    pub fn store(&self) -> &dyn Store {
        &*self.inner.store
    }

    /// Returns the stored result of `function` for `args`, or computes it
    /// with `compute`, stores it and returns it.
    ///
    /// Storage problems never fail the call: they are logged as warnings
    /// (through `tracing`) and the computed value is returned.
    pub fn call<T, A, F>(&self, function: &Function, args: &A, compute: F) -> T
    where
        T: Serialize + DeserializeOwned + 'static,
        A: Serialize + ?Sized,
        F: FnOnce() -> T,
    {
        match self.lookup(function, args) {
            Lookup::Hit(value) => value,
            Lookup::Miss(pending) => pending.store(compute()),
        }
    }

    /// Like [`call`](Memory::call) for fallible computations: an `Ok` is
    /// stored, an `Err` is returned and never stored. `E` needs no serde.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let memory = memento::Memory::new(dir.path());
    /// let parse = memento::Function::new("docs", "parse");
    /// let r: Result<u32, std::num::ParseIntError> =
    ///     memory.call_result(&parse, "12", || "12".parse());
    /// assert_eq!(r, Ok(12));
    /// let e: Result<u32, std::num::ParseIntError> =
    ///     memory.call_result(&parse, "x", || "x".parse());
    /// assert!(e.is_err());
    /// ```
    pub fn call_result<T, E, A, F>(&self, function: &Function, args: &A, compute: F) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned + 'static,
        A: Serialize + ?Sized,
        F: FnOnce() -> Result<T, E>,
    {
        match self.lookup(function, args) {
            Lookup::Hit(value) => Ok(value),
            Lookup::Miss(pending) => pending.store_result(compute()),
        }
    }

    /// The first half of a call: the key of `args` and the stored result if
    /// there is one. On a miss, compute and give the value to
    /// [`Pending::store`]. Unlike [`call`](Memory::call), the arguments are
    /// no longer borrowed once this returns, so the computation may consume
    /// them (this is what `#[memento::cache]` expands to).
    ///
    /// ```
    /// use memento::{Function, Lookup, Memory};
    /// # let dir = tempfile::tempdir().unwrap();
    /// let memory = Memory::new(dir.path());
    /// let total = Function::new("docs", "total");
    /// let data = vec![1u64, 2, 3];
    /// let sum: u64 = match memory.lookup(&total, &data) {
    ///     Lookup::Hit(sum) => sum,
    ///     Lookup::Miss(pending) => pending.store(data.into_iter().sum()),
    /// };
    /// assert_eq!(sum, 6);
    /// ```
    pub fn lookup<'m, T, A>(&'m self, function: &'m Function, args: &A) -> Lookup<'m, T>
    where
        T: Serialize + DeserializeOwned + 'static,
        A: Serialize + ?Sized,
    {
        let mut contended = match self.lookup_begin::<T, A>(function, args) {
            Begun::Done(lookup) => return lookup,
            Begun::Contended(contended) => contended,
        };
        let mut waited = None;
        loop {
            match contended.step::<T>(self, function, waited.take()) {
                Step::Done(lookup) => return lookup,
                Step::Wait(wait) => waited = Some(wait.block()),
            }
        }
    }

    /// The part of a lookup that needs no waiting: the key, the in-memory
    /// layer, the store. `Contended` when nothing usable is stored and the
    /// call must take its turn to compute.
    #[inline]
    fn lookup_begin<'m, T, A>(&'m self, function: &'m Function, args: &A) -> Begun<'m, T>
    where
        T: Serialize + DeserializeOwned + 'static,
        A: Serialize + ?Sized,
    {
        let mode = Mode::take();
        let shape = function.shape::<T>();
        let key = match key::call_key(function.hash(), &shape.hash, args) {
            Ok(key) => key,
            Err(source) => {
                let e = Error::Key {
                    function: function.full_name().to_string(),
                    source,
                };
                tracing::warn!("{e}");
                let pending = self.pending(function, None, None, shape, String::new(), mode);
                return Begun::Done(Lookup::Miss(pending));
            }
        };
        if mode.force {
            let state = self.state(function, shape, std::any::type_name::<T>());
            let args = entry::args_text(args);
            tracing::info!(
                "calling {}({}) (forced)",
                function.full_name(),
                trim_brackets(&args)
            );
            return Begun::Done(Lookup::Miss(self.pending(
                function,
                Some(state),
                Some(key),
                shape,
                args,
                mode,
            )));
        }
        if let Some(value) = self.find_hot::<T>(function, &key, mode) {
            return Begun::Done(Lookup::Hit(value));
        }
        let state = self.state(function, shape, std::any::type_name::<T>());
        if let Some(value) = self.read::<T>(function, &key) {
            mode.record(true, Some(key));
            self.count_hit(function);
            return Begun::Done(Lookup::Hit(value));
        }
        // Compute once: wait for a computation of this key running in this
        // process, then for one running in another process (a lock per
        // key), and look again after each wait (see `Contended::step`).
        Begun::Contended(Contended {
            state,
            key,
            shape,
            args: entry::args_text(args),
            mode,
            leader: None,
            lock: None,
            phase: Phase::Flight,
        })
    }

    /// [`lookup`](Memory::lookup) for async code: when the same call runs
    /// in another task, thread or process, the wait for it happens on a
    /// thread of its own, so the executor's threads go on (any executor).
    /// The arguments are hashed before the first await: the returned future
    /// does not borrow them. `#[memento::cache]` on an `async fn` expands to
    /// this.
    pub fn lookup_async<'m, T, A>(
        &'m self,
        function: &'m Function,
        args: &A,
    ) -> impl std::future::Future<Output = Lookup<'m, T>> + Send + 'm
    where
        T: Serialize + DeserializeOwned + Send + 'static,
        A: Serialize + ?Sized,
    {
        let begun = self.lookup_begin::<T, A>(function, args);
        async move {
            let mut contended = match begun {
                Begun::Done(lookup) => return lookup,
                Begun::Contended(contended) => contended,
            };
            let mut waited = None;
            loop {
                match contended.step::<T>(self, function, waited.take()) {
                    Step::Done(lookup) => return lookup,
                    Step::Wait(wait) => {
                        waited = Some(crate::background::run(move || wait.block()).await);
                    }
                }
            }
        }
    }

    /// Becomes the leader of `key`'s computation in this process, or gets
    /// the running one to wait for.
    fn lead_or_follow(&self, key: &Key) -> std::result::Result<Leader, Arc<Flight>> {
        let mut inflight = self
            .inner
            .inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(flight) = inflight.get(key) {
            return Err(flight.clone());
        }
        let flight = Arc::new(Flight::default());
        inflight.insert(*key, flight.clone());
        Ok(Leader {
            memory: self.clone(),
            key: *key,
            flight,
        })
    }

    /// A stored result, from the in-memory layer or the store.
    fn find<T: DeserializeOwned>(&self, function: &Function, key: &Key, mode: Mode) -> Option<T> {
        if let Some(value) = self.find_hot(function, key, mode) {
            return Some(value);
        }
        let value = self.read::<T>(function, key)?;
        mode.record(true, Some(*key));
        self.count_hit(function);
        Some(value)
    }

    /// A stored result from the in-memory layer.
    #[inline]
    fn find_hot<T: DeserializeOwned>(
        &self,
        function: &Function,
        key: &Key,
        mode: Mode,
    ) -> Option<T> {
        if let Some((payload, created, touch)) = self.inner.hot.get(key) {
            let fresh = !expired(function, created) && function.validator().is_none();
            if let (true, Ok(value)) = (fresh, codec::decode::<T>(&payload)) {
                tracing::debug!("{}: hit in memory ({key})", function.full_name());
                if touch {
                    let name = EntryName::new(function.folder(), key, "output.bin");
                    if let Err(e) = self.inner.store.touch(name.as_str()) {
                        self.report_io(&e);
                    }
                }
                mode.record(true, Some(*key));
                self.count_hit(function);
                return Some(value);
            }
            self.inner.hot.remove(key);
        }
        None
    }

    /// Is a usable result of `function` for `args` stored? Nothing is
    /// computed; a damaged, expired or rejected entry counts as absent.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let memory = memento::Memory::new(dir.path());
    /// let f = memento::Function::new("docs", "inc");
    /// assert!(!memory.contains::<u32, _>(&f, &1u32));
    /// let _: u32 = memory.call(&f, &1u32, || 2);
    /// assert!(memory.contains::<u32, _>(&f, &1u32));
    /// ```
    pub fn contains<T, A>(&self, function: &Function, args: &A) -> bool
    where
        T: Serialize + DeserializeOwned + 'static,
        A: Serialize + ?Sized,
    {
        let shape = function.shape::<T>();
        let Ok(key) = key::call_key(function.hash(), &shape.hash, args) else {
            return false;
        };
        self.state(function, shape, std::any::type_name::<T>());
        self.read::<T>(function, &key).is_some()
    }

    /// Removes every stored result of `function` (and its record); returns
    /// how many results were removed.
    pub fn clear_function(&self, function: &Function) -> Result<usize> {
        let removed = self.remove_entries(function)?;
        for file in ["function.json", "hits.json"] {
            self.inner
                .store
                .delete(&format!("{}/{file}", function.folder()))?;
        }
        self.inner
            .functions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(function.hash());
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
                .filter(|(_, e)| e.folder != function.folder());
            crate::index::compact(root, keep, &snapshot.logs)
                .map_err(|e| Error::io("compact the eviction index in", &dir, e))?;
        }
        Ok(removed)
    }

    /// Rebuilds the eviction index of a local cache from a listing of it:
    /// after its results were removed by other means than this library
    /// (the `memento` command does this after `gc`, `clear` and `verify
    /// --remove`).
    pub fn rebuild_index(&self, inventory: &Inventory) -> Result<()> {
        let Some(root) = &self.inner.options.location else {
            return Ok(());
        };
        let _guard = self
            .inner
            .reducing
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        crate::index::rebuild(root, inventory).map_err(|e| {
            Error::io(
                "rebuild the eviction index in",
                root.join(crate::index::INDEX_DIR),
                e,
            )
        })?;
        *self.inner.usage.lock().unwrap_or_else(|e| e.into_inner()) = Usage::default();
        Ok(())
    }

    /// The key of a call of `function` with `args` returning `T`.
    pub fn key_of<T, A>(&self, function: &Function, args: &A) -> Result<Key>
    where
        T: DeserializeOwned + 'static,
        A: Serialize + ?Sized,
    {
        let shape = function.shape::<T>();
        key::call_key(function.hash(), &shape.hash, args).map_err(|source| Error::Key {
            function: function.full_name().to_string(),
            source,
        })
    }

    fn pending<'m, T>(
        &'m self,
        function: &'m Function,
        state: Option<Arc<FnState>>,
        key: Option<Key>,
        shape: Shape,
        args: String,
        mode: Mode,
    ) -> Pending<'m, T> {
        Pending {
            memory: self,
            function,
            state,
            key,
            shape,
            args,
            started: Instant::now(),
            mode,
            lock: None,
            leader: None,
            _output: PhantomData,
        }
    }

    /// Reads, verifies and decodes the entry of `key`; a damaged entry is
    /// reported, removed and counted as a miss.
    fn read<T: DeserializeOwned>(&self, function: &Function, key: &Key) -> Option<T> {
        let name = EntryName::new(function.folder(), key, "output.bin");
        let mut buf = READ_BUF.with(Cell::take);
        let result = match self.inner.store.read(name.as_str(), &mut buf) {
            Ok(false) => None,
            Ok(true) => match self.accept::<T>(function, key, &buf) {
                Ok(value) => {
                    tracing::debug!("{}: hit on disk ({key})", function.full_name());
                    if function.validator().is_none() {
                        let created = codec::created_ms(&buf);
                        self.inner.hot.insert(*key, &buf[HEADER_LEN..], created);
                    }
                    Some(value)
                }
                Err(Refusal::Damaged(damage)) => {
                    let e = Error::Damaged {
                        name: format!("{}/{}", self.location(), name.as_str()),
                        damage,
                    };
                    tracing::warn!("{e}; it is removed and recomputed");
                    self.remove_entry(function, key);
                    None
                }
                Err(Refusal::Rejected(why)) => {
                    tracing::info!(
                        "{}: stored result {why}; computing it again",
                        function.full_name()
                    );
                    self.remove_entry(function, key);
                    None
                }
            },
            Err(e) => {
                self.report_io(&e);
                None
            }
        };
        if buf.capacity() <= READ_BUF_KEEP {
            READ_BUF.with(|cell| cell.set(buf));
        }
        result
    }

    /// Verifies an entry, applies the function's expiry and validation, and
    /// decodes it.
    fn accept<T: DeserializeOwned>(
        &self,
        function: &Function,
        key: &Key,
        entry: &[u8],
    ) -> std::result::Result<T, Refusal> {
        let signer = self.inner.options.signer.as_ref();
        let payload = codec::verify(key, entry, signer).map_err(Refusal::Damaged)?;
        let created = codec::created_ms(entry);
        if expired(function, created) {
            return Err(Refusal::Rejected("expired"));
        }
        if let Some(validate) = function.validator() {
            let meta = self.metadata_of(function, key, entry);
            if !validate(&meta) {
                return Err(Refusal::Rejected("was rejected by its validate function"));
            }
        }
        codec::decode(payload).map_err(Refusal::Damaged)
    }

    /// The entry's `metadata.json`, or what its header tells if that file is
    /// missing or unreadable.
    fn metadata_of(&self, function: &Function, key: &Key, entry: &[u8]) -> Metadata {
        let name = EntryName::new(function.folder(), key, "metadata.json");
        let mut buf = Vec::new();
        if let Ok(true) = self.inner.store.read(name.as_str(), &mut buf) {
            if let Ok(meta) = serde_json::from_slice::<Metadata>(&buf) {
                return meta;
            }
        }
        let created = UNIX_EPOCH + Duration::from_millis(codec::created_ms(entry));
        entry::new_metadata(
            function.full_name(),
            key.to_hex(),
            created,
            Duration::ZERO,
            entry.len() as u64,
            String::new(),
        )
    }

    fn remove_entry(&self, function: &Function, key: &Key) {
        self.inner.hot.remove(key);
        let dir = EntryName::new(function.folder(), key, "");
        if let Err(e) = self.inner.store.delete_prefix(dir.as_str()) {
            self.report_io(&e);
        }
    }

    /// This Memory's state of `function`; the first use checks
    /// `function.json` and drops old results if the code changed.
    fn state(&self, function: &Function, shape: Shape, output_type: &str) -> Arc<FnState> {
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

    /// Removes every entry folder (`xx/<62 hex>/`) of `function`; other
    /// files and folders (a nested module's functions) are left alone.
    fn remove_entries(&self, function: &Function) -> Result<usize> {
        let folder = function.folder();
        let mut dirs: Vec<String> = self
            .inner
            .store
            .list(folder)?
            .into_iter()
            .filter_map(|name| {
                let rest = name.strip_prefix(folder)?.strip_prefix('/')?;
                let mut parts = rest.split('/');
                let (shard, entry) = (parts.next()?, parts.next()?);
                let is_hex = |s: &str| s.bytes().all(|b| b.is_ascii_hexdigit());
                (shard.len() == 2 && entry.len() == 62 && is_hex(shard) && is_hex(entry))
                    .then(|| format!("{folder}/{shard}/{entry}"))
            })
            .collect();
        dirs.dedup();
        for dir in &dirs {
            self.inner.store.delete_prefix(dir)?;
        }
        Ok(dirs.len())
    }

    /// Encodes one result and prepares all that is to be written.
    fn prepare<T: Serialize>(
        &self,
        pending: &Pending<'_, T>,
        key: &Key,
        value: &T,
        duration: Duration,
    ) -> Result<Write> {
        let function = pending.function;
        let created = SystemTime::now();
        let created_ms = created
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_millis() as u64;
        let signer = self.inner.options.signer.as_ref();
        let bytes = codec::encode(key, value, created_ms, signer).map_err(|e| Error::Encode {
            function: function.full_name().to_string(),
            type_name: std::any::type_name::<T>(),
            message: e.to_string(),
        })?;
        let record = match &pending.state {
            Some(state) if !state.record_on_disk.load(Ordering::Acquire) => {
                let record = function.record(pending.shape, std::any::type_name::<T>());
                let json = serde_json::to_vec_pretty(&record).unwrap_or_default();
                Some((
                    format!("{}/function.json", function.folder()),
                    json,
                    state.clone(),
                ))
            }
            _ => None,
        };
        let meta = entry::new_metadata(
            function.full_name(),
            key.to_hex(),
            created,
            duration,
            bytes.len() as u64,
            pending.args.clone(),
        );
        Ok(Write {
            key: *key,
            record,
            output: EntryName::new(function.folder(), key, "output.bin")
                .as_str()
                .to_string(),
            bytes,
            metadata: EntryName::new(function.folder(), key, "metadata.json")
                .as_str()
                .to_string(),
            json: serde_json::to_vec_pretty(&meta).unwrap_or_default(),
            force: pending.mode.force,
            created_ms,
            keep_in_memory: function.validator().is_none(),
            hits: (
                format!("{}/hits.json", function.folder()),
                function.hits.swap(0, Ordering::Relaxed),
            ),
            folder: function.folder().to_string(),
        })
    }

    /// Writes a prepared result: the record if needed, `output.bin`
    /// (published if absent, or replaced when forced), then `metadata.json`.
    fn commit(&self, write: Write) -> Result<()> {
        let store = &*self.inner.store;
        let mut written = 0;
        if let Some((name, json, state)) = &write.record {
            // Under the function's lock, and only if no record appeared
            // meanwhile: another process's invalidation must not be undone.
            let lock_name = name.replace("/function.json", "/function.lock");
            let _lock = match store.lock(&lock_name, None) {
                Ok(LockOutcome::Held(lock)) => Some(lock),
                _ => None,
            };
            let mut existing = Vec::new();
            if !store.read(name, &mut existing)? {
                store.write(name, json)?;
                written += json.len() as u64;
            }
            state.record_on_disk.store(true, Ordering::Release);
        }
        let published = if write.force {
            self.inner.hot.remove(&write.key);
            store.write(&write.output, &write.bytes)?;
            true
        } else {
            store.publish(&write.output, &write.bytes)?
        };
        if published {
            store.write(&write.metadata, &write.json)?;
            let size = (write.bytes.len() + write.json.len()) as u64;
            written += size;
            if let Some(index) = &self.inner.index {
                index.append(&write.folder, &write.key, size, write.created_ms);
            }
        }
        if write.keep_in_memory {
            self.inner
                .hot
                .insert(write.key, &write.bytes[HEADER_LEN..], write.created_ms);
        }
        self.add_hits(&write.hits.0, write.hits.1);
        if written > 0 {
            self.after_write(written);
        }
        Ok(())
    }

    /// Counts a hit. Every [`HITS_CHECK_EVERY`] hits, if the last flush of
    /// the function is more than [`HITS_FLUSH_SECONDS`] old, adds them to
    /// its `hits.json` on a thread of its own.
    #[inline]
    fn count_hit(&self, function: &Function) {
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
    fn add_hits(&self, name: &str, n: u64) {
        if n == 0 {
            return;
        }
        #[derive(Serialize, serde::Deserialize, Default)]
        struct Hits {
            hits: u64,
        }
        let mut buf = Vec::new();
        let old = match self.inner.store.read(name, &mut buf) {
            Ok(true) => {
                serde_json::from_slice::<Hits>(&buf)
                    .unwrap_or_default()
                    .hits
            }
            _ => 0,
        };
        let json = serde_json::to_vec(&Hits { hits: old + n }).unwrap_or_default();
        if let Err(e) = self.inner.store.write(name, &json) {
            self.report_io(&e);
        }
    }

    /// Storage errors: the first one of this Memory is a warning, later ones
    /// are debug events (a read-only or full disk would otherwise flood).
    fn report_io(&self, e: &Error) {
        if self.inner.warned_io.swap(true, Ordering::Relaxed) {
            tracing::debug!("{e}");
        } else {
            tracing::warn!("{e}; results are computed but may not be stored");
        }
    }
}

fn trim_brackets(args: &str) -> &str {
    args.strip_prefix('[')
        .and_then(|a| a.strip_suffix(']'))
        .unwrap_or(args)
}

impl<T: Serialize> Pending<'_, T> {
    /// Stores `value` and returns it. Storage problems are logged, never
    /// returned: the value comes back either way.
    pub fn store(self, value: T) -> T {
        let write = self.prepare(&value);
        self.mode.record(false, self.key);
        if let Some(write) = write {
            if let Err(e) = self.memory.commit(write) {
                self.memory.report_io(&e);
            }
        }
        value
    }

    /// Stores an `Ok` value; an `Err` is returned as it is and not stored.
    pub fn store_result<E>(self, result: Result<T, E>) -> Result<T, E> {
        match result {
            Ok(value) => Ok(self.store(value)),
            Err(e) => {
                tracing::debug!(
                    "{}: returned an error; not stored",
                    self.function.full_name()
                );
                Err(e)
            }
        }
    }

    /// [`store`](Pending::store) for async code: the value is encoded here,
    /// and the files are written on a thread of their own, so that the
    /// executor's threads do not wait for the disk. Works with any executor.
    pub async fn store_async(self, value: T) -> T {
        if let Some(write) = self.prepare(&value) {
            let memory = self.memory.clone();
            let committed = crate::background::run(move || memory.commit(write)).await;
            if let Err(e) = committed {
                self.memory.report_io(&e);
            }
        }
        // After the await: the caller's next step runs in this same poll.
        self.mode.record(false, self.key);
        value
    }

    /// [`store_result`](Pending::store_result) for async code.
    pub async fn store_result_async<E>(self, result: Result<T, E>) -> Result<T, E> {
        match result {
            Ok(value) => Ok(self.store_async(value).await),
            Err(e) => {
                tracing::debug!(
                    "{}: returned an error; not stored",
                    self.function.full_name()
                );
                Err(e)
            }
        }
    }

    /// Logs the computation and encodes the value; `None` when there is
    /// nothing to write (no key, or the value cannot be encoded).
    fn prepare(&self, value: &T) -> Option<Write> {
        let duration = self.started.elapsed();
        tracing::info!(
            "{}: computed in {:.3}s",
            self.function.full_name(),
            duration.as_secs_f64()
        );
        let key = self.key?;
        match self.memory.prepare(self, &key, value, duration) {
            Ok(write) => Some(write),
            Err(e @ Error::Encode { .. }) => {
                tracing::error!("{e}");
                None
            }
            Err(e) => {
                self.memory.report_io(&e);
                None
            }
        }
    }

    /// The key of this call (`None` when the arguments could not be hashed).
    pub fn key(&self) -> Option<Key> {
        self.key
    }
}

/// A result ready to be written, owning all it needs so that the writing
/// can move to another thread.
struct Write {
    key: Key,
    /// `function.json`, when this Memory has not written it yet.
    record: Option<(String, Vec<u8>, Arc<FnState>)>,
    output: String,
    bytes: Vec<u8>,
    metadata: String,
    json: Vec<u8>,
    force: bool,
    created_ms: u64,
    keep_in_memory: bool,
    /// Hits of this process to add to `hits.json`.
    hits: (String, u64),
    /// The function's folder, for the eviction index.
    folder: String,
}

/// The first, non-waiting part of a lookup.
enum Begun<'m, T> {
    Done(Lookup<'m, T>),
    Contended(Contended),
}

/// A lookup that found nothing and must take its turn to compute.
struct Contended {
    state: Arc<FnState>,
    key: Key,
    shape: Shape,
    args: String,
    mode: Mode,
    leader: Option<Leader>,
    lock: Option<StoreLock>,
    phase: Phase,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Join this process's flight for the key.
    Flight,
    /// Waited for another thread's flight.
    FlightWaited,
    /// Waited for the key's lock across processes.
    LockWaited,
}

/// What a contended lookup waits for next: blocking work, run in place
/// (sync) or on a thread of its own (async).
enum Wait {
    Flight(Arc<Flight>, Option<Duration>),
    Lock(Arc<dyn Store>, String, Option<Duration>),
}

enum Waited {
    Flight(bool),
    Lock(Result<LockOutcome>),
}

impl Wait {
    fn block(self) -> Waited {
        match self {
            Wait::Flight(flight, timeout) => Waited::Flight(flight.wait(timeout)),
            Wait::Lock(store, name, timeout) => Waited::Lock(store.lock(&name, timeout)),
        }
    }
}

enum Step<'m, T> {
    Done(Lookup<'m, T>),
    Wait(Wait),
}

impl Contended {
    /// One step of taking the turn to compute; `waited` is the answer to the
    /// last `Step::Wait`.
    fn step<'m, T: DeserializeOwned>(
        &mut self,
        memory: &'m Memory,
        function: &'m Function,
        waited: Option<Waited>,
    ) -> Step<'m, T> {
        let timeout = memory.inner.options.lock_timeout;
        match (self.phase, waited) {
            (Phase::FlightWaited, Some(Waited::Flight(true))) => {
                if let Some(value) = memory.find::<T>(function, &self.key, self.mode) {
                    return Step::Done(Lookup::Hit(value));
                }
                // The leader failed: try to lead.
                self.phase = Phase::Flight;
                self.step(memory, function, None)
            }
            (Phase::FlightWaited, Some(Waited::Flight(false))) => {
                tracing::warn!(
                    "{}: waited {:?} for the same call running in another thread; \
                     computing it here too (lock_timeout)",
                    function.full_name(),
                    timeout.unwrap_or_default()
                );
                self.lock_step(memory, function)
            }
            (Phase::LockWaited, Some(Waited::Lock(outcome))) => {
                match outcome {
                    Ok(LockOutcome::Held(lock)) => {
                        self.lock = Some(lock);
                        // Another process may have finished while we waited.
                        if let Some(value) = memory.find::<T>(function, &self.key, self.mode) {
                            return Step::Done(Lookup::Hit(value));
                        }
                    }
                    Ok(LockOutcome::TimedOut) => tracing::warn!(
                        "{}: waited {:?} for the same call running in another process; \
                         computing it here too (lock_timeout)",
                        function.full_name(),
                        timeout.unwrap_or_default()
                    ),
                    Ok(LockOutcome::Unsupported) => {}
                    Err(e) => memory.report_io(&e),
                }
                tracing::info!(
                    "calling {}({})",
                    function.full_name(),
                    trim_brackets(&self.args)
                );
                let mut pending = memory.pending(
                    function,
                    Some(self.state.clone()),
                    Some(self.key),
                    self.shape,
                    std::mem::take(&mut self.args),
                    self.mode,
                );
                pending.lock = self.lock.take();
                pending.leader = self.leader.take();
                Step::Done(Lookup::Miss(pending))
            }
            _ => match memory.lead_or_follow(&self.key) {
                Ok(leader) => {
                    self.leader = Some(leader);
                    self.lock_step(memory, function)
                }
                Err(flight) => {
                    self.phase = Phase::FlightWaited;
                    Step::Wait(Wait::Flight(flight, timeout))
                }
            },
        }
    }

    /// Asks for the key's lock across processes:
    /// `<folder>/ab/<62 hex>.lock`, beside the entry's folder.
    fn lock_step<'m, T>(&mut self, memory: &'m Memory, function: &'m Function) -> Step<'m, T> {
        let name = EntryName::new(function.folder(), &self.key, ".lock")
            .as_str()
            .replace("/.lock", ".lock");
        self.phase = Phase::LockWaited;
        Step::Wait(Wait::Lock(
            memory.inner.store.clone(),
            name,
            memory.inner.options.lock_timeout,
        ))
    }
}

/// Why a stored entry is not served.
enum Refusal {
    /// Damaged bytes: a warning.
    Damaged(codec::Damage),
    /// Whole but expired or rejected by `validate`: an info event.
    Rejected(&'static str),
}

/// Is a result computed at `created_ms` past the function's time to live?
fn expired(function: &Function, created_ms: u64) -> bool {
    function.ttl().is_some_and(|ttl| {
        let created = UNIX_EPOCH + Duration::from_millis(created_ms);
        SystemTime::now()
            .duration_since(created)
            .is_ok_and(|age| age > ttl)
    })
}

/// `folder/ab/<62 hex>/file` built without allocating when short.
struct EntryName {
    buf: [u8; 320],
    len: usize,
    heap: Option<String>,
}

impl EntryName {
    #[inline]
    fn new(folder: &str, key: &Key, file: &str) -> EntryName {
        let mut hex = [0u8; 64];
        key.write_hex(&mut hex);
        let parts: [&[u8]; 6] = [
            folder.as_bytes(),
            b"/",
            &hex[..2],
            b"/",
            &hex[2..],
            if file.is_empty() { b"" } else { b"/" },
        ];
        let total: usize = parts.iter().map(|p| p.len()).sum::<usize>() + file.len();
        let mut name = EntryName {
            buf: [0; 320],
            len: 0,
            heap: None,
        };
        if total > name.buf.len() {
            let mut s = String::with_capacity(total);
            for p in parts {
                s.push_str(std::str::from_utf8(p).unwrap_or_default());
            }
            s.push_str(file);
            name.heap = Some(s);
            return name;
        }
        for p in parts.into_iter().chain([file.as_bytes()]) {
            name.buf[name.len..name.len + p.len()].copy_from_slice(p);
            name.len += p.len();
        }
        name
    }

    #[inline]
    fn as_str(&self) -> &str {
        match &self.heap {
            Some(s) => s,
            // Built from `&str`s and ASCII hex.
            None => std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default(),
        }
    }
}

/// Read buffers above this size are not kept for the next read.
const READ_BUF_KEEP: usize = 1 << 20;

thread_local! {
    static READ_BUF: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// Keys are uniform random bytes: their first eight bytes are a good hash.
#[derive(Default)]
struct KeyIdHasher(u64);

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
struct Hot {
    limit: u64,
    /// Zero point of `HotEntry::touched`.
    base: Instant,
    map: RwLock<HotMap>,
}

#[derive(Default)]
struct HotMap {
    bytes: u64,
    entries: HashMap<Key, HotEntry, BuildHasherDefault<KeyIdHasher>>,
}

struct HotEntry {
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
    fn new(limit: u64) -> Hot {
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
    fn get(&self, key: &Key) -> Option<(Arc<[u8]>, u64, bool)> {
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

    fn insert(&self, key: Key, payload: &[u8], created_ms: u64) {
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

    fn remove(&self, key: &Key) {
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = map.entries.remove(key) {
            map.bytes -= old.payload.len() as u64;
        }
    }

    fn clear(&self) {
        *self.map.write().unwrap_or_else(|e| e.into_inner()) = HotMap::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names() {
        let key = Key::of(&1u8).unwrap();
        let hex = key.to_hex();
        let n = EntryName::new("c/m/f", &key, "output.bin");
        assert_eq!(
            n.as_str(),
            format!("c/m/f/{}/{}/output.bin", &hex[..2], &hex[2..])
        );
        let n = EntryName::new("c/m/f", &key, "");
        assert_eq!(n.as_str(), format!("c/m/f/{}/{}", &hex[..2], &hex[2..]));
        let long = "x".repeat(400);
        let n = EntryName::new(&long, &key, "output.bin");
        assert!(n.as_str().starts_with(&long) && n.as_str().ends_with("/output.bin"));
    }

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
