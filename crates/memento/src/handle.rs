//! Per-function handles: what `#[memento::cache]` generates beside each
//! function, under the same name, and the types it returns.
//!
//! For `#[memento::cache] fn slow_sine(x: f64) -> f64`, the attribute also
//! writes a struct `slow_sine {}` (a struct with braces lives in the type
//! namespace and the function in the value namespace, so both fit; a struct
//! rather than a module, so that it sees what the function sees even inside
//! a block) whose associated functions are the handle:
//!
//! | item | does |
//! |---|---|
//! | `slow_sine::clear()` | removes every stored result of the function |
//! | `slow_sine::check_call_in_cache(x) -> bool` | is a result for `x` stored? (computes nothing) |
//! | `slow_sine::call_and_shelve(x) -> StoredResult<f64>` | computes or finds the result, returns a handle to it instead |
//! | `slow_sine::call_forced(x) -> f64` | computes again and overwrites |
//! | `slow_sine::call_with_outcome(x) -> Outcome<f64>` | the value, whether it was a hit, how long the call took |
//! | `slow_sine::memory()` | the [`Memory`] it uses |
//! | `slow_sine::function()` | its [`Function`] |
//!
//! Functions in `impl` blocks that take `self` or name `Self` get no handle
//! (no struct can be written inside an `impl` block); other associated
//! functions need `#[memento::cache(handle = false)]` there. Their
//! [`Function`] and [`Memory`] methods
//! (`contains`, `clear_function`, `lookup`) do the same work.
//!
//! ```
//! # let dir = tempfile::tempdir().unwrap();
//! # unsafe { std::env::set_var("MEMENTO_DIR", dir.path()) }; // one thread here
//! #[memento::cache]
//! fn cube(x: u64) -> u64 {
//!     x * x * x
//! }
//!
//! assert!(!cube::check_call_in_cache(3));
//! let outcome = cube::call_with_outcome(3);
//! assert_eq!((outcome.value, outcome.hit), (27, false));
//! assert!(cube::check_call_in_cache(3));
//! assert!(cube::call_with_outcome(3).hit);
//!
//! let shelved = cube::call_and_shelve(4);
//! assert_eq!(shelved.get().unwrap(), 64);
//! let text = serde_json::to_string(&shelved).unwrap(); // to another process
//! let back: memento::StoredResult<u64> = serde_json::from_str(&text).unwrap();
//! assert_eq!(back.get().unwrap(), 64);
//!
//! assert_eq!(cube::call_forced(3), 27);
//! assert_eq!(cube::clear().unwrap(), 2);
//! assert!(!cube::check_call_in_cache(3));
//! ```

use std::cell::Cell;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::codec;
use crate::entry::Metadata;
use crate::error::{Error, Result};
use crate::function::Function;
use crate::key::Key;
use crate::memory::Memory;
use crate::store::{LocalStore, Store};

/// What the next cached call on a thread is asked to do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Mode {
    /// Skip the lookup, compute and overwrite.
    pub(crate) force: bool,
    /// Report hit or miss and the key to `last_call`.
    record: bool,
}

thread_local! {
    static NEXT: Cell<Mode> = const { Cell::new(Mode { force: false, record: false }) };
    static LAST: Cell<Option<(bool, Option<Key>)>> = const { Cell::new(None) };
}

impl Mode {
    /// The mode of this call; later (nested) calls are normal again.
    #[inline]
    pub(crate) fn take() -> Mode {
        NEXT.with(|next| next.replace(Mode::default()))
    }

    #[inline]
    pub(crate) fn record(&self, hit: bool, key: Option<Key>) {
        if self.record {
            LAST.with(|last| last.set(Some((hit, key))));
        }
    }
}

/// Sets what the next cached call on this thread does. Used by the handle
/// modules.
#[doc(hidden)]
pub fn next_call(force: bool, record: bool) {
    NEXT.with(|next| next.set(Mode { force, record }));
    LAST.with(|last| last.set(None));
}

/// Whether the last recorded call was a hit, and its key.
#[doc(hidden)]
pub fn last_call() -> Option<(bool, Option<Key>)> {
    LAST.with(Cell::take)
}

/// A call's value and how it was obtained.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome<T> {
    /// The value returned.
    pub value: T,
    /// True when it was read from the cache, false when computed.
    pub hit: bool,
    /// How long the call took.
    pub duration: Duration,
}

/// A handle to a stored result: where it is, not the value. It can be
/// serialized and sent to another process, which reads the value with
/// [`get`](StoredResult::get).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct StoredResult<T> {
    location: PathBuf,
    folder: String,
    function: String,
    key: Option<Key>,
    #[serde(skip)]
    _value: PhantomData<fn() -> T>,
}

impl<T> StoredResult<T> {
    #[doc(hidden)]
    pub fn __new(memory: &Memory, function: &Function, key: Option<Key>) -> StoredResult<T> {
        StoredResult {
            location: memory
                .path()
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(memory.location())),
            folder: function.folder().to_string(),
            function: function.full_name().to_string(),
            key,
            _value: PhantomData,
        }
    }

    /// The result's key (`None` if the arguments could not be hashed, in
    /// which case nothing was stored).
    pub fn key(&self) -> Option<Key> {
        self.key
    }

    /// `module::name` of the function.
    pub fn function(&self) -> &str {
        &self.function
    }

    fn store(&self) -> LocalStore {
        LocalStore::new(&self.location)
    }

    /// The entry file's name in the store.
    fn name(&self) -> Result<String> {
        let key = self.key.ok_or_else(|| self.not_stored())?;
        Ok(crate::index::entry_file(&self.folder, &key))
    }

    fn not_stored(&self) -> Error {
        Error::NotStored {
            function: self.function.clone(),
            key: self.key.map(|k| k.to_hex()).unwrap_or_default(),
        }
    }

    /// The entry's metadata: its header and its info, whose checksum is
    /// not checked (use [`get`](StoredResult::get) to check the entry).
    pub fn metadata(&self) -> Result<Metadata> {
        let name = self.name()?;
        let mut buf = Vec::new();
        if !self.store().read(&name, &mut buf)? {
            return Err(self.not_stored());
        }
        let key = self.key.ok_or_else(|| self.not_stored())?;
        let len = buf.len() as u64;
        // Everything but the checksum: the info is for people.
        let head = buf.get(..codec::HEADER_LEN).unwrap_or_default();
        match codec::check_header(&key, &buf, len, None) {
            Ok(_) | Err(codec::Damage::NoKey) => {}
            Err(damage) => return Err(Error::Damaged { name, damage }),
        }
        Ok(Metadata::of_entry(
            head,
            len,
            codec::info(&buf),
            &self.function,
        ))
    }

    /// Removes the stored result.
    pub fn clear(&self) -> Result<()> {
        self.store().delete(&self.name()?)
    }
}

impl<T: DeserializeOwned + 'static> StoredResult<T> {
    /// Reads, verifies and decodes the value (with the signing key of
    /// `MEMENTO_KEY`, when set).
    ///
    /// # Errors
    /// [`Error::NotStored`] when it is gone (cleared, evicted, or never
    /// stored because the computation failed), [`Error::Damaged`] when its
    /// bytes are damaged, [`Error::Io`] when the store cannot be read.
    pub fn get(&self) -> Result<T> {
        let name = self.name()?;
        let key = self.key.ok_or_else(|| self.not_stored())?;
        let mut buf = Vec::new();
        if !self.store().read(&name, &mut buf)? {
            return Err(self.not_stored());
        }
        codec::verify(&key, &buf, codec::Signer::from_env().as_ref())
            .and_then(|payload| codec::decode_entry(&buf, payload).map(|(value, _)| value))
            .map_err(|damage| Error::Damaged { name, damage })
    }
}

impl Serialize for Key {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Key, D::Error> {
        let text = String::deserialize(d)?;
        Key::from_hex(&text).ok_or_else(|| serde::de::Error::custom("expected 64 hex digits"))
    }
}
