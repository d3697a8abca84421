//! The memory handle: where results live, and the path of a call through the
//! cache (key → lookup → hit: verify, decode / miss: compute, encode, write).

use std::cell::Cell;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec;
use crate::entry::{self, Metadata};
use crate::error::{Error, Result};
use crate::evict::{self, Inventory, Limits, Stats};
use crate::function::{Function, FunctionRecord, Shape};
use crate::key::{self, Key};
use crate::layout::EntryName;
use crate::store::{LocalStore, LockOutcome, Store, StoreLock};

mod config;
mod hits;
mod hot;
mod large;
mod limits;
mod mode;
mod once;
mod read;
mod record;
mod shared;
mod write;

use config::Options;
use large::Got;
pub use limits::{Collected, DamagedEntry, Reduction, StoredEntry, Verification};
pub(crate) use mode::Mode;
pub use mode::{last_call, next_call};
use once::{Begun, Contended, Leader, Phase, Step};
use read::{mapped, Refusal};
use record::{FnState, RecordWrite};
use shared::Shared;
pub use write::Pending;

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
    /// This Memory's own: the store it was given and its options.
    store: Arc<dyn Store>,
    options: Options,
    /// The signing key's [tag](codec::Signer::tag) (0: none).
    signer_tag: u64,
    /// What every Memory over this location in this process shares.
    shared: Arc<Shared>,
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
                crate::log::warning!("{e}");
                let pending = self.pending(function, None, None, shape, String::new(), mode);
                return Begun::Done(Lookup::Miss(pending));
            }
        };
        if mode.force {
            let state = self.state(function, shape, std::any::type_name::<T>());
            let args = entry::args_text(args);
            crate::log::info!(
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

    /// Storage errors: the first is a warning, later ones are summed up in
    /// a warning at most once a minute (a read-only or full disk would
    /// otherwise flood).
    fn report_io(&self, e: &Error) {
        self.inner.shared.io.report(&self.location(), e);
    }
}

fn trim_brackets(args: &str) -> &str {
    args.strip_prefix('[')
        .and_then(|a| a.strip_suffix(']'))
        .unwrap_or(args)
}
