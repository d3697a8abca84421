//! The memory handle: where results live, and the path of a call through the
//! cache (key → lookup → hit: verify, decode / miss: compute, encode, write).

use std::cell::Cell;
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::hash::BuildHasherDefault;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec::{self, HEADER_LEN};
use crate::entry::{self, Metadata, ENTRY_SUFFIX};
use crate::error::{Error, Result};
use crate::evict::{self, Inventory, Limits, Stats};
use crate::function::{Function, FunctionRecord, Shape};
use crate::handle::Mode;
use crate::key::{self, Key};
use crate::store::{LocalStore, LockOutcome, Store, StoreLock};

mod hits;
mod hot;
mod large;
mod limits;
mod once;
mod record;

pub(crate) use hits::HITS_FLUSH_SECONDS;
use hot::{Hot, KeyIdHasher};
use large::Got;
use limits::Usage;
pub use limits::{Collected, DamagedEntry, Reduction, StoredEntry, Verification};
use once::{Begun, Contended, Flight, Leader, Phase, Step};
use record::FnState;

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
        // A hit needs no look at `function.json`: the key holds the code's
        // fingerprint and the output type's shape, so an entry of other code
        // is never found. Old results are dropped at the function's first
        // miss, before it writes.
        if let Some(value) = self.find_stored::<T>(function, &key, mode) {
            return Begun::Done(Lookup::Hit(value));
        }
        let state = self.state(function, shape, std::any::type_name::<T>());
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

    /// A stored result, from the in-memory layer or the store.
    fn find<T: DeserializeOwned + 'static>(
        &self,
        function: &Function,
        key: &Key,
        mode: Mode,
    ) -> Option<T> {
        self.find_hot(function, key, mode)
            .or_else(|| self.find_stored(function, key, mode))
    }

    /// A stored result from the store (a hit: recorded and counted).
    fn find_stored<T: DeserializeOwned + 'static>(
        &self,
        function: &Function,
        key: &Key,
        mode: Mode,
    ) -> Option<T> {
        let value = self.read::<T>(function, key)?;
        mode.record(true, Some(*key));
        self.count_hit(function);
        Some(value)
    }

    /// A stored result from the in-memory layer.
    #[inline]
    fn find_hot<T: DeserializeOwned + 'static>(
        &self,
        function: &Function,
        key: &Key,
        mode: Mode,
    ) -> Option<T> {
        if mapped::<T>() {
            // Mapped results come from their file, never from a copy.
            return None;
        }
        if let Some((payload, created, touch)) = self.inner.hot.get(key) {
            let fresh = !expired(function, created) && function.validator().is_none();
            if let (true, Ok(value)) = (fresh, codec::decode::<T>(&payload)) {
                tracing::debug!("{}: hit in memory ({key})", function.full_name());
                if touch {
                    let name = EntryName::entry(function.folder(), key);
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
    fn read<T: DeserializeOwned + 'static>(&self, function: &Function, key: &Key) -> Option<T> {
        let name = EntryName::entry(function.folder(), key);
        let mut buf = READ_BUF.with(Cell::take);
        let read = match crate::buffer::ops::<T>() {
            Some(ops) => self.read_buffer::<T>(function, key, &name, ops, &mut buf),
            None => self.inner.store.read(name.as_str(), &mut buf).map(|found| {
                if found {
                    Got::Bytes
                } else {
                    Got::Absent
                }
            }),
        };
        let result = match read {
            Ok(Got::Absent) => None,
            Ok(Got::Value(value)) => {
                tracing::debug!("{}: hit on disk ({key})", function.full_name());
                Some(value)
            }
            Ok(Got::Refused(refusal)) => {
                self.refused(function, key, &name, refusal);
                None
            }
            Ok(Got::Bytes) => match self.accept::<T>(function, key, &buf) {
                Ok((value, plain)) => {
                    tracing::debug!("{}: hit on disk ({key})", function.full_name());
                    if function.validator().is_none() && !mapped::<T>() {
                        let created = codec::created_ms(&buf);
                        self.inner.hot.insert(*key, &plain, created);
                    }
                    Some(value)
                }
                Err(refusal) => {
                    self.refused(function, key, &name, refusal);
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

    /// Reports a refused entry and removes it, so that it is recomputed.
    fn refused(&self, function: &Function, key: &Key, name: &EntryName, refusal: Refusal) {
        match refusal {
            Refusal::Damaged(damage) => {
                let e = Error::Damaged {
                    name: format!("{}/{}", self.location(), name.as_str()),
                    damage,
                };
                tracing::warn!("{e}; it is removed and recomputed");
            }
            Refusal::Rejected(why) => {
                tracing::info!(
                    "{}: stored result {why}; computing it again",
                    function.full_name()
                );
            }
        }
        self.remove_entry(function, key);
    }

    /// Verifies an entry, applies the function's expiry and validation, and
    /// decodes it.
    fn accept<'e, T: DeserializeOwned + 'static>(
        &self,
        function: &Function,
        key: &Key,
        entry: &'e [u8],
    ) -> std::result::Result<(T, std::borrow::Cow<'e, [u8]>), Refusal> {
        let signer = self.inner.options.signer.as_ref();
        let payload = codec::verify(key, entry, signer).map_err(Refusal::Damaged)?;
        self.admit(function, key, entry, entry.len() as u64)?;
        codec::decode_entry(entry, payload).map_err(Refusal::Damaged)
    }

    /// The function's expiry and validation, applied to an entry of
    /// `file_len` bytes whose header (at least) is `head`.
    fn admit(
        &self,
        function: &Function,
        key: &Key,
        head: &[u8],
        file_len: u64,
    ) -> std::result::Result<(), Refusal> {
        if expired(function, codec::created_ms(head)) {
            return Err(Refusal::Rejected("expired"));
        }
        if let Some(validate) = function.validator() {
            let meta = self.metadata_of(function, key, head, file_len);
            if !validate(&meta) {
                return Err(Refusal::Rejected("was rejected by its validate function"));
            }
        }
        Ok(())
    }

    /// The metadata of an entry of `file_len` bytes whose header (at
    /// least) is `head`: its info is read from the store when `head` does
    /// not hold it.
    fn metadata_of(&self, function: &Function, key: &Key, head: &[u8], file_len: u64) -> Metadata {
        let mut read = Vec::new();
        let info = match codec::info(head) {
            Some(info) => Some(info),
            None => {
                let start = (HEADER_LEN as u64).saturating_add(codec::payload_len(head));
                let name = EntryName::entry(function.folder(), key);
                let found = self
                    .inner
                    .store
                    .read_range(name.as_str(), start..file_len, &mut read);
                found.unwrap_or(false).then_some(&read[..])
            }
        };
        Metadata::of_entry(head, file_len, info, function.full_name())
    }

    fn remove_entry(&self, function: &Function, key: &Key) {
        self.inner.hot.remove(key);
        let name = EntryName::entry(function.folder(), key);
        if let Err(e) = self.inner.store.delete(name.as_str()) {
            self.report_io(&e);
        }
    }

    /// Encodes one result and prepares all that is to be written.
    fn prepare<'v, T: Serialize + 'static>(
        &self,
        pending: &Pending<'_, T>,
        key: &Key,
        value: &'v T,
        duration: Duration,
    ) -> Result<Write<'v>> {
        let function = pending.function;
        let created = SystemTime::now();
        let created_ms = created
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_millis() as u64;
        let signer = self.inner.options.signer.as_ref();
        let mut compression = function.compression();
        if mapped::<T>() && compression != codec::Compression::None {
            // A compressed entry could not be mapped: store it plain.
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                tracing::warn!(
                    "{}: Mapped results are stored uncompressed (a compressed entry cannot be \
                     memory-mapped); remove the compression from this function",
                    function.full_name()
                );
            });
            compression = codec::Compression::None;
        }
        let info = entry::new_info(function.full_name(), duration, &pending.args);
        let encoded = codec::encode(key, value, created_ms, signer, compression, &info).map_err(
            |message| Error::Encode {
                function: function.full_name().to_string(),
                type_name: std::any::type_name::<T>(),
                message,
            },
        )?;
        let bytes = encoded.entry;
        let tail = encoded.tail;
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
        Ok(Write {
            key: *key,
            record,
            output: EntryName::entry(function.folder(), key)
                .as_str()
                .to_string(),
            bytes,
            tail,
            info: encoded.info,
            plain: encoded.plain,
            force: pending.mode.force,
            created_ms,
            keep_in_memory: function.validator().is_none() && !mapped::<T>() && tail.is_empty(),
            hits: (
                format!("{}/hits.json", function.folder()),
                function.hits.swap(0, Ordering::Relaxed),
            ),
            folder: function.folder().to_string(),
        })
    }

    /// Writes a prepared result: the record if needed, then the entry
    /// (published if absent, or replaced when forced).
    fn commit(&self, write: Write<'_>) -> Result<()> {
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
        if write.force {
            self.inner.hot.remove(&write.key);
        }
        let published = if !write.tail.is_empty() {
            // A large buffer: its checksum is computed while the store
            // writes its data.
            let signer = self.inner.options.signer.as_ref();
            let seal = || {
                let mut head = write.bytes.clone();
                codec::seal_head(&mut head, write.tail, &write.info, signer, false);
                head
            };
            store.publish_computed(
                &write.output,
                write.bytes.len(),
                write.tail,
                &write.info,
                &seal,
                write.force,
            )?
        } else if write.force {
            store.write(&write.output, &write.bytes)?;
            true
        } else {
            store.publish(&write.output, &write.bytes)?
        };
        if published {
            let size = (write.bytes.len() + write.tail.len() + write.info.len()) as u64;
            written += size;
            if let Some(index) = &self.inner.index {
                index.append(&write.folder, &write.key, size, write.created_ms);
            }
        }
        if write.keep_in_memory {
            let payload = HEADER_LEN..HEADER_LEN + codec::payload_len(&write.bytes) as usize;
            let plain = write.plain.as_deref().unwrap_or(&write.bytes[payload]);
            self.inner.hot.insert(write.key, plain, write.created_ms);
        }
        self.add_hits(&write.hits.0, write.hits.1);
        if written > 0 {
            self.after_write(written);
        }
        Ok(())
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

impl<T: Serialize + 'static> Pending<'_, T> {
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
            // The write outlives this borrow of the value (the future may be
            // dropped while it runs): it takes its own copy.
            let write = write.into_owned(self.memory.inner.options.signer.as_ref());
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
    fn prepare<'v>(&self, value: &'v T) -> Option<Write<'v>> {
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
struct Write<'v> {
    key: Key,
    /// `function.json`, when this Memory has not written it yet.
    record: Option<(String, Vec<u8>, Arc<FnState>)>,
    output: String,
    bytes: Vec<u8>,
    /// The entry's bytes after `bytes`: a large plain buffer's data,
    /// borrowed from the value (empty otherwise). When it is not empty, the
    /// checksum in `bytes` is still to be written.
    tail: &'v [u8],
    /// The entry's info, after `tail` (empty when `bytes` holds it).
    info: Vec<u8>,
    /// The postcard bytes, when `bytes` holds them compressed.
    plain: Option<Vec<u8>>,
    force: bool,
    created_ms: u64,
    keep_in_memory: bool,
    /// Hits of this process to add to `hits.json`.
    hits: (String, u64),
    /// The function's folder, for the eviction index.
    folder: String,
}

impl Write<'_> {
    /// The same write, owning all its bytes (and its checksum written).
    fn into_owned(self, signer: Option<&codec::Signer>) -> Write<'static> {
        let mut bytes = self.bytes;
        if !self.tail.is_empty() {
            codec::seal_head(&mut bytes, self.tail, &self.info, signer, true);
            bytes.extend_from_slice(self.tail);
            bytes.extend_from_slice(&self.info);
        }
        Write {
            key: self.key,
            record: self.record,
            output: self.output,
            bytes,
            tail: &[],
            info: Vec::new(),
            plain: self.plain,
            force: self.force,
            created_ms: self.created_ms,
            keep_in_memory: self.keep_in_memory,
            hits: self.hits,
            folder: self.folder,
        }
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
/// Is `T` a [`Mapped`](crate::Mapped) result (kept out of the in-memory
/// layer)? Folded at compile time.
#[inline(always)]
fn mapped<T: 'static>() -> bool {
    crate::buffer::ops::<T>().is_some_and(|ops| ops.mapped)
}

fn expired(function: &Function, created_ms: u64) -> bool {
    function.ttl().is_some_and(|ttl| {
        let created = UNIX_EPOCH + Duration::from_millis(created_ms);
        SystemTime::now()
            .duration_since(created)
            .is_ok_and(|age| age > ttl)
    })
}

/// `folder/ab/<62 hex><suffix>` (the entry file with [`ENTRY_SUFFIX`],
/// its lock with `.lock`), built without allocating when short.
struct EntryName {
    buf: [u8; 320],
    len: usize,
    heap: Option<String>,
}

impl EntryName {
    #[inline]
    fn new(folder: &str, key: &Key, suffix: &str) -> EntryName {
        let mut hex = [0u8; 64];
        key.write_hex(&mut hex);
        let parts: [&[u8]; 6] = [
            folder.as_bytes(),
            b"/",
            &hex[..2],
            b"/",
            &hex[2..],
            suffix.as_bytes(),
        ];
        let total: usize = parts.iter().map(|p| p.len()).sum::<usize>();
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
            name.heap = Some(s);
            return name;
        }
        for p in parts {
            name.buf[name.len..name.len + p.len()].copy_from_slice(p);
            name.len += p.len();
        }
        name
    }

    /// The entry file of `key`.
    #[inline]
    fn entry(folder: &str, key: &Key) -> EntryName {
        EntryName::new(folder, key, ENTRY_SUFFIX)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names() {
        let key = Key::of(&1u8).unwrap();
        let hex = key.to_hex();
        let n = EntryName::entry("c/m/f", &key);
        assert_eq!(n.as_str(), format!("c/m/f/{}/{}.bin", &hex[..2], &hex[2..]));
        let n = EntryName::new("c/m/f", &key, ".lock");
        assert_eq!(
            n.as_str(),
            format!("c/m/f/{}/{}.lock", &hex[..2], &hex[2..])
        );
        let long = "x".repeat(400);
        let n = EntryName::entry(&long, &key);
        assert!(
            n.as_str().starts_with(&long) && n.as_str().ends_with(&format!("/{}.bin", &hex[2..]))
        );
    }
}
