//! The memory handle: where results live, and the path of a call through the
//! cache (key → lookup → hit: verify, decode / miss: compute, encode, write).

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::entry::Metadata;
use crate::error::{Error, Result};
use crate::function::{self, Function};
use crate::key::{self, Key};
use crate::layout::EntryName;
use crate::store::Store;

mod config;
mod hits;
mod hot;
mod limits;
mod mode;
mod once;
mod read;
mod record;
mod refresh;
mod shared;
mod why;
mod write;

use config::Config;
pub use limits::{Collected, DamagedEntry, Reduction, StoredEntry, Verification};
pub(crate) use mode::Mode;
pub use mode::{last_call, last_why, next_call};
use once::{Held, Step, Turn};
use read::Reader;
use record::{FnState, Records};
pub use refresh::{Refresh, Refreshing};
use shared::Shared;
pub(crate) use why::computed;
use why::{CallArgs, Current};
pub use why::{Change, Miss, Why};
use write::Writer;
pub use write::{Pending, SplitBytes};

/// Environment variable naming the default cache folder.
pub const MEMENTO_DIR: &str = "MEMENTO_DIR";

/// Folder of the default cache when `MEMENTO_DIR` is not set, relative to the
/// current directory.
pub const DEFAULT_DIR: &str = ".memento";

/// Where a cache lives: a folder, or a bucket (`s3://bucket/prefix`, with
/// the `s3` feature).
///
/// Built from a `&str`, `String`, `&Path`, `PathBuf`, `&OsStr` or
/// `OsString`; one that starts with `s3://` names a bucket.
///
/// ```
/// let a: memento::Location = "cache".into();
/// let b: memento::Location = std::path::PathBuf::from("cache").into();
/// assert_eq!(a, b);
/// assert_eq!(a.path(), Some(std::path::Path::new("cache")));
///
/// let s3: memento::Location = "s3://my-bucket/results".into();
/// assert_eq!(s3.url(), Some("s3://my-bucket/results"));
/// assert_eq!(s3.path(), None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location(Where);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Where {
    Folder(PathBuf),
    Url(String),
}

/// The schemes of the locations that are not folders.
const URL_SCHEMES: &[&str] = &["s3://"];

impl Location {
    /// The folder of a local cache.
    pub fn path(&self) -> Option<&Path> {
        match &self.0 {
            Where::Folder(path) => Some(path),
            Where::Url(_) => None,
        }
    }

    /// The URL of a remote cache (`s3://bucket/prefix`).
    pub fn url(&self) -> Option<&str> {
        match &self.0 {
            Where::Folder(_) => None,
            Where::Url(url) => Some(url),
        }
    }

    fn of(path: PathBuf) -> Location {
        match path.to_str() {
            Some(text) if URL_SCHEMES.iter().any(|s| text.starts_with(s)) => {
                Location(Where::Url(text.to_string()))
            }
            _ => Location(Where::Folder(path)),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Where::Folder(path) => write!(f, "{}", path.display()),
            Where::Url(url) => f.write_str(url),
        }
    }
}

macro_rules! location_from {
    ($($t:ty),*) => {$(
        impl From<$t> for Location {
            fn from(value: $t) -> Location {
                Location::of(PathBuf::from(value))
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

/// A `Memory` is made of parts with one job each (see
/// `docs/ARCHITECTURE.md`): its [`Config`] (`config.rs`), the read path
/// ([`Reader`], `read.rs`), the write path ([`Writer`] and [`Pending`],
/// `write.rs`), compute-once ([`Turn`], `once.rs`), the functions' records
/// ([`Records`], `record.rs`), and management (`limits.rs`), over the state
/// its location shares with every other `Memory` over it in this process
/// ([`Shared`]: the in-memory layer, the functions' states and hit counts,
/// the computations in flight, the usage count). This file only routes a
/// call through them.
struct Inner {
    /// This Memory's own: the store it was given and its options.
    store: Arc<dyn Store>,
    config: Config,
    /// What every Memory over this location in this process shares.
    shared: Arc<Shared>,
}

impl fmt::Debug for Memory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Memory")
            .field("location", &self.inner.store.location())
            .field("limits", &self.inner.config.limits())
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

impl Memory {
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
        match self.lookup_near::<T, A>(function, args) {
            Near::Done(lookup) => lookup,
            Near::Keyed(keyed) => self.lookup_far(function, keyed, args),
        }
    }

    /// The rest of a lookup that missed the in-memory layer: the store,
    /// then compute once. Kept out of line, so that a hit from memory
    /// stays small where it is inlined.
    #[inline(never)]
    fn lookup_far<'m, T, A>(
        &'m self,
        function: &'m Function,
        keyed: Keyed,
        args: &A,
    ) -> Lookup<'m, T>
    where
        T: Serialize + DeserializeOwned + 'static,
        A: Serialize + ?Sized,
    {
        match self.lookup_stored(function, keyed, || CallArgs::of(args)) {
            Begun::Done(lookup) => lookup,
            Begun::Missed(missed) => self.compute_once(function, missed),
        }
    }

    /// A lookup that found nothing stored: waits its turn (running the
    /// waits in place), looking again after each wait.
    fn compute_once<'m, T>(&'m self, function: &'m Function, mut missed: Missed) -> Lookup<'m, T>
    where
        T: Serialize + DeserializeOwned + 'static,
    {
        let mut waited = None;
        loop {
            match missed.step(self, function, waited.take(), None) {
                Ok(lookup) => return lookup,
                Err(wait) => waited = Some(wait.block()),
            }
        }
    }

    /// [`lookup`](Memory::lookup) for a function whose expired results are
    /// served while they are computed again (`#[memento::cache(expires_after
    /// = "..", refresh = "background")]` expands to this): an expired result
    /// comes back as [`Refreshing::Stale`] with the turn to recompute it,
    /// once per key across the threads and processes that share the cache
    /// (the key's lock of compute-once, taken without waiting: a call that
    /// finds it held returns the expired result as a plain
    /// [`Refreshing::Hit`]). A result that is not expired is a hit as with
    /// `lookup`, at the same cost.
    ///
    /// [`Memory::wait_for_refreshes`] waits for the refreshes this process
    /// started; a process waits for them at exit too.
    ///
    /// ```
    /// use std::time::Duration;
    /// use memento::{Function, Memory, Refreshing};
    /// # let dir = tempfile::tempdir().unwrap();
    /// let memory = Memory::new(dir.path());
    /// // Results are stale at once here, to show the flow.
    /// let quote = Function::new("docs", "quote").expires_after(Duration::from_nanos(1));
    /// let fetch = |version: u32| -> u32 {
    ///     match memory.lookup_refreshing(&quote, "ACME") {
    ///         Refreshing::Hit(price) => price,
    ///         Refreshing::Stale(price, refresh) => {
    ///             refresh.spawn(move || version); // on a thread of its own
    ///             price
    ///         }
    ///         Refreshing::Miss(pending) => pending.store(version),
    ///     }
    /// };
    /// assert_eq!(fetch(1), 1); // computed and stored
    /// assert_eq!(fetch(2), 1); // expired: served, and computed again
    /// Memory::wait_for_refreshes();
    /// assert_eq!(fetch(3), 2); // the refreshed result
    /// # Memory::wait_for_refreshes();
    /// ```
    pub fn lookup_refreshing<'m, T, A>(
        &'m self,
        function: &'m Function,
        args: &A,
    ) -> Refreshing<'m, T>
    where
        T: Serialize + DeserializeOwned + 'static,
        A: Serialize + ?Sized,
    {
        let keyed = match self.lookup_near::<T, A>(function, args) {
            Near::Done(Lookup::Hit(value)) => return Refreshing::Hit(value),
            Near::Done(Lookup::Miss(pending)) => return Refreshing::Miss(pending),
            Near::Keyed(keyed) => keyed,
        };
        self.lookup_stale(function, keyed, args)
    }

    /// The rest of [`lookup_refreshing`](Memory::lookup_refreshing): the
    /// store, serving an expired entry (and taking the turn to refresh
    /// it), else compute once.
    #[inline(never)]
    fn lookup_stale<'m, T, A>(
        &'m self,
        function: &'m Function,
        keyed: Keyed,
        args: &A,
    ) -> Refreshing<'m, T>
    where
        T: Serialize + DeserializeOwned + 'static,
        A: Serialize + ?Sized,
    {
        let stale = std::cell::Cell::new(false);
        let found = self
            .reader()
            .keeping_expired(&stale)
            .find_stored::<T>(function, &keyed.key, keyed.mode);
        let Some(value) = found else {
            let state = self
                .records()
                .state(function, keyed.shape, std::any::type_name::<T>());
            let missed = self.missed(function, keyed, state, CallArgs::of(args));
            return match self.compute_once(function, missed) {
                Lookup::Hit(value) => Refreshing::Hit(value),
                Lookup::Miss(pending) => Refreshing::Miss(pending),
            };
        };
        if !stale.get() {
            return Refreshing::Hit(value);
        }
        let key = keyed.key;
        let lock = EntryName::key_lock(function.folder(), &key);
        let flights = self.inner.shared.flights();
        let held = match once::try_turn(flights, &key, &*self.inner.store, lock.as_str()) {
            Ok(Some(held)) => held,
            // Refreshed by another thread or process right now.
            Ok(None) => return Refreshing::Hit(value),
            Err(e) => {
                self.report_io(&e);
                return Refreshing::Hit(value);
            }
        };
        // Another thread or process may have refreshed it between the read
        // and the turn: then the new result is served, and nothing starts.
        let again = std::cell::Cell::new(false);
        if let Some(fresh) = self
            .reader()
            .keeping_expired(&again)
            .read::<T>(function, &key)
        {
            if !again.get() {
                return Refreshing::Hit(fresh);
            }
        }
        let refresh = Refresh::new(refresh::Parts {
            memory: self.clone(),
            function: function.clone(),
            key,
            shape: keyed.shape,
            args: CallArgs::of(args),
            held,
        });
        Refreshing::Stale(value, refresh)
    }

    /// Blocks until the background refreshes this process started
    /// ([`Memory::lookup_refreshing`], `refresh = "background"`) are done,
    /// whichever `Memory` started them. A process waits for them at exit
    /// too (a normal exit: returning from `main`, or `std::process::exit`).
    ///
    /// ```
    /// memento::Memory::wait_for_refreshes(); // none running: returns at once
    /// ```
    pub fn wait_for_refreshes() {
        refresh::wait_for_refreshes();
    }

    /// The part of a lookup that reads nothing but memory: the key, and the
    /// in-memory layer. (Always inlined: it is all of a hit from memory.)
    #[inline(always)]
    fn lookup_near<'m, T, A>(&'m self, function: &'m Function, args: &A) -> Near<'m, T>
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
                crate::log::warning!("{e}");
                let pending = Pending::new(
                    self,
                    function,
                    None,
                    None,
                    shape,
                    CallArgs::default(),
                    None,
                    mode,
                    Held::default(),
                );
                return Near::Done(Lookup::Miss(pending));
            }
        };
        if mode.force {
            let state = self
                .records()
                .state(function, shape, std::any::type_name::<T>());
            let args = CallArgs::of(args);
            crate::log::info!(
                "calling {}({}) (forced)",
                function.full_name(),
                trim_brackets(&args.text)
            );
            return Near::Done(Lookup::Miss(Pending::new(
                self,
                function,
                Some(state),
                Some(key),
                shape,
                args,
                None,
                mode,
                Held::default(),
            )));
        }
        if let Some(value) = self.reader().find_hot::<T>(function, &key, mode) {
            return Near::Done(Lookup::Hit(value));
        }
        Near::Keyed(Keyed { key, shape, mode })
    }

    /// The part of a lookup that reads the store: the entry, then (when
    /// there is none) the function's record; `Missed` when the call must
    /// take its turn to compute. `args` renders the arguments for the
    /// logs, the entry's info and the explanation of the miss, on a miss
    /// only.
    fn lookup_stored<'m, T>(
        &'m self,
        function: &'m Function,
        keyed: Keyed,
        args: impl FnOnce() -> CallArgs,
    ) -> Begun<'m, T>
    where
        T: Serialize + DeserializeOwned + 'static,
    {
        // A hit needs no look at `function.json`: the key holds the code's
        // fingerprint and the output type's shape, so an entry of other code
        // is never found. Old results are dropped at the function's first
        // miss, before it writes.
        if let Some(value) = self
            .reader()
            .find_stored::<T>(function, &keyed.key, keyed.mode)
        {
            return Begun::Done(Lookup::Hit(value));
        }
        let state = self
            .records()
            .state(function, keyed.shape, std::any::type_name::<T>());
        Begun::Missed(self.missed(function, keyed, state, args()))
    }

    /// A lookup that found nothing stored: compute once. It waits for a
    /// computation of this key running in this process, then for one
    /// running in another process (a lock per key), and looks again after
    /// each wait (see `once::Turn::step`).
    fn missed(
        &self,
        function: &Function,
        keyed: Keyed,
        state: Arc<FnState>,
        args: CallArgs,
    ) -> Missed {
        let Keyed { key, shape, mode } = keyed;
        let turn = Turn::new(
            key,
            EntryName::key_lock(function.folder(), &key)
                .as_str()
                .to_string(),
            self.inner.shared.flights().clone(),
            self.inner.store.clone(),
            self.inner.config.lock_timeout(),
        );
        Missed {
            state,
            key,
            shape,
            args,
            mode,
            turn,
        }
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
        // Everything that reads the arguments happens before the first
        // await, and a local store is read here too (as `lookup` does).
        let remote = self.inner.store.is_remote();
        let start = match self.lookup_near::<T, A>(function, args) {
            Near::Done(lookup) => Start::Done(lookup),
            Near::Keyed(keyed) if remote => Start::Remote(keyed, CallArgs::of(args)),
            Near::Keyed(keyed) => {
                match self.lookup_stored(function, keyed, || CallArgs::of(args)) {
                    Begun::Done(lookup) => Start::Done(lookup),
                    Begun::Missed(missed) => Start::Missed(missed),
                }
            }
        };
        async move {
            let mut missed = match start {
                Start::Done(lookup) => return lookup,
                Start::Missed(missed) => missed,
                // A remote store's reads are round trips: on a thread of
                // their own, as the waits are.
                Start::Remote(keyed, args) => {
                    let (memory, owned) = (self.clone(), function.clone());
                    let (key, shape, mode) = (keyed.key, keyed.shape, keyed.mode);
                    let found = crate::background::run(move || {
                        match memory.reader().find_stored::<T>(&owned, &key, mode.quiet()) {
                            Some(value) => Ok(value),
                            None => Err(memory.records().state(
                                &owned,
                                shape,
                                std::any::type_name::<T>(),
                            )),
                        }
                    })
                    .await;
                    match found {
                        Ok(value) => {
                            mode.record(true, Some(key));
                            return Lookup::Hit(value);
                        }
                        Err(state) => self.missed(function, keyed, state, args),
                    }
                }
            };
            let mut waited = None;
            let mut looked = None;
            loop {
                match missed.step(self, function, waited.take(), looked.take()) {
                    Ok(lookup) => return lookup,
                    Err(wait) if remote => {
                        // The look that follows a wait, there too.
                        let (memory, owned) = (self.clone(), function.clone());
                        let (key, mode) = (missed.key, missed.mode.quiet());
                        let (w, found) = crate::background::run(move || {
                            let w = wait.block();
                            let found = w
                                .calls_for_a_look()
                                .then(|| memory.reader().find::<T>(&owned, &key, mode))
                                .flatten();
                            (w, found)
                        })
                        .await;
                        waited = Some(w);
                        looked = Some(found);
                    }
                    Err(wait) => {
                        waited = Some(crate::background::run(move || wait.block()).await);
                    }
                }
            }
        }
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
        self.records()
            .state(function, shape, std::any::type_name::<T>());
        self.reader().read::<T>(function, &key).is_some()
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

    /// Storage errors: the first is a warning, later ones are summed up in
    /// a warning at most once a minute (a read-only or full disk would
    /// otherwise flood).
    fn report_io(&self, e: &Error) {
        self.inner.shared.report_io(e);
    }

    /// This Memory's options.
    fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The state of this Memory's location.
    fn shared(&self) -> &Arc<Shared> {
        &self.inner.shared
    }

    /// The read path.
    #[inline]
    fn reader(&self) -> Reader<'_> {
        Reader::new(&*self.inner.store, &self.inner.config, &self.inner.shared)
    }

    /// The write path.
    fn writer(&self) -> Writer<'_> {
        Writer::new(&*self.inner.store, &self.inner.config, &self.inner.shared)
    }

    /// The functions' records.
    fn records(&self) -> Records<'_> {
        Records::new(&*self.inner.store, &self.inner.shared)
    }

    /// Reads, verifies (with this Memory's signing key) and decodes the
    /// entry of `key` in the function folder `folder`, for a
    /// [`StoredResult`](crate::StoredResult). `Ok(None)` when it is absent.
    pub(crate) fn get_entry<T: DeserializeOwned + 'static>(
        &self,
        folder: &str,
        key: &Key,
    ) -> Result<Option<T>> {
        self.reader().get_entry(folder, key)
    }

    /// The metadata of the entry of `key` in `folder` (its checksum not
    /// checked; reading it is not a use). `Ok(None)` when it is absent.
    pub(crate) fn entry_metadata(
        &self,
        folder: &str,
        key: &Key,
        function: &str,
    ) -> Result<Option<Metadata>> {
        self.reader().entry_metadata(folder, key, function)
    }

    /// Removes the entry of `key` in `folder`, from the store and from this
    /// process's in-memory layer.
    pub(crate) fn remove_result(&self, folder: &str, key: &Key) -> Result<()> {
        self.reader().remove_result(folder, key)
    }
}

/// The part of a lookup that reads only memory.
enum Near<'m, T> {
    Done(Lookup<'m, T>),
    Keyed(Keyed),
}

/// A call that missed the in-memory layer: its key, and what the rest of
/// the lookup needs.
struct Keyed {
    key: Key,
    shape: function::Shape,
    mode: Mode,
}

/// Where `lookup_async`'s future starts.
enum Start<'m, T> {
    Done(Lookup<'m, T>),
    Missed(Missed),
    /// The store is remote: read it on a thread of its own (with the
    /// arguments rendered already).
    Remote(Keyed, CallArgs),
}

/// The first, non-waiting part of a lookup.
enum Begun<'m, T> {
    Done(Lookup<'m, T>),
    Missed(Missed),
}

/// A lookup that found nothing stored: it takes its turn to compute
/// (`once`), looking again after each wait (`read`), and becomes a
/// [`Pending`] (`write`) when the turn is its own.
struct Missed {
    state: Arc<FnState>,
    key: Key,
    shape: function::Shape,
    args: CallArgs,
    mode: Mode,
    turn: Turn,
}

impl Missed {
    /// One step of the turn: the lookup's answer, or what to wait for
    /// before the next step.
    ///
    /// `looked`: the look that follows `waited`, when the caller made it
    /// already (on the thread that waited; `Some(None)`: found nothing).
    fn step<'m, T: DeserializeOwned + 'static>(
        &mut self,
        memory: &'m Memory,
        function: &'m Function,
        waited: Option<once::Waited>,
        looked: Option<Option<T>>,
    ) -> std::result::Result<Lookup<'m, T>, once::Wait> {
        let (key, mode) = (self.key, self.mode);
        let reader = memory.reader();
        let step = match looked {
            Some(mut found) => self.turn.step(waited, &mut || found.take()),
            None => self
                .turn
                .step(waited, &mut || reader.find::<T>(function, &key, mode)),
        };
        match step {
            Step::Found(value) => {
                mode.record(true, Some(key));
                Ok(Lookup::Hit(value))
            }
            Step::Wait(wait) => Err(wait),
            Step::Compute {
                held,
                waited_out,
                error,
            } => {
                for whom in [
                    (waited_out.thread, "another thread"),
                    (waited_out.process, "another process"),
                ]
                .into_iter()
                .filter_map(|(waited, whom)| waited.then_some(whom))
                {
                    crate::log::warning!(
                        "{}: waited {:?} for the same call running in {whom}; \
                         computing it here too (lock_timeout)",
                        function.full_name(),
                        memory.config().lock_timeout().unwrap_or_default()
                    );
                }
                if let Some(e) = error {
                    memory.report_io(&e);
                }
                crate::log::info!(
                    "calling {}({})",
                    function.full_name(),
                    trim_brackets(&self.args.text)
                );
                // Why it missed: compared with the function's stored
                // calls, in memory (read from `calls.json` at its first
                // miss in this process), and recorded there; a copy only
                // for whoever asked (`call_with_outcome`, the debug line).
                let wanted = mode.records() || crate::log::debug_enabled();
                let why = self.state.calls().missed(
                    &Current {
                        key: &key,
                        args: &self.args.parts,
                        function,
                        output: &self.shape.hash,
                    },
                    wanted,
                );
                if let Some(why) = &why {
                    crate::log::debug!("{} missed: {why}", function.full_name());
                }
                memory.shared().flush_calls_if_due(&self.state);
                Ok(Lookup::Miss(Pending::new(
                    memory,
                    function,
                    Some(self.state.clone()),
                    Some(key),
                    self.shape,
                    std::mem::take(&mut self.args),
                    why,
                    mode,
                    held,
                )))
            }
        }
    }
}

fn trim_brackets(args: &str) -> &str {
    args.strip_prefix('[')
        .and_then(|a| a.strip_suffix(']'))
        .unwrap_or(args)
}
