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
//! | `slow_sine::call_with_outcome(x) -> Outcome<f64>` | the value, whether it was a hit, how long the call took, why it missed |
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
//! assert_eq!(outcome.why, Some(memento::Why::FirstCall));
//! assert!(cube::check_call_in_cache(3));
//! assert!(cube::call_with_outcome(3).hit);
//! let other = cube::call_with_outcome(4);
//! assert_eq!(other.why.unwrap().to_string(), "argument x changed: 3 → 4");
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

use std::fmt;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::entry::Metadata;
use crate::error::{Error, Result};
use crate::function::Function;
use crate::key::Key;
use crate::memory::Memory;

/// A call's value and how it was obtained.
///
/// ```
/// use std::time::Duration;
/// let outcome = memento::Outcome::new(2.5, true, Duration::from_micros(3));
/// assert!(outcome.hit && outcome.why.is_none());
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Outcome<T> {
    /// The value returned.
    pub value: T,
    /// True when it was read from the cache, false when computed.
    pub hit: bool,
    /// How long the call took.
    pub duration: Duration,
    /// On a miss, why: what differed from the nearest stored call of the
    /// function (see [`Why`](crate::Why)); `None` on a hit, and for a
    /// call whose arguments could not be hashed.
    pub why: Option<crate::Why>,
}

impl<T> Outcome<T> {
    /// An outcome with no explanation (`why` is `None`).
    pub fn new(value: T, hit: bool, duration: Duration) -> Outcome<T> {
        Outcome {
            value,
            hit,
            duration,
            why: None,
        }
    }
}

/// A handle to a stored result: where it is, not the value. It can be
/// serialized and sent to another process, which reads the value with
/// [`get`](StoredResult::get).
///
/// A handle made by a call reads and clears through that call's [`Memory`]
/// (its store and signing key, and its in-memory layer, so that a cleared
/// result is cleared in this process too). A handle deserialized in another
/// process opens its location as [`Memory::new`] does, with the signing key
/// of `MEMENTO_KEY` when set.
#[derive(Clone, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct StoredResult<T> {
    location: PathBuf,
    folder: String,
    function: String,
    key: Option<Key>,
    #[serde(skip)]
    memory: Option<Memory>,
    #[serde(skip)]
    _value: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for StoredResult<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredResult")
            .field("location", &self.location)
            .field("function", &self.function)
            .field("key", &self.key)
            .finish()
    }
}

/// Two handles are equal when they name the same result.
impl<T> PartialEq for StoredResult<T> {
    fn eq(&self, other: &Self) -> bool {
        (&self.location, &self.folder, &self.key) == (&other.location, &other.folder, &other.key)
    }
}

impl<T> Eq for StoredResult<T> {}

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
            memory: Some(memory.clone()),
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

    /// The Memory this handle reads through: its call's, or (deserialized)
    /// one over its location with the signing key of `MEMENTO_KEY`.
    fn memory(&self) -> Memory {
        match &self.memory {
            Some(memory) => memory.clone(),
            None => Memory::new(&self.location).with_env_signer(),
        }
    }

    fn stored_key(&self) -> Result<Key> {
        self.key.ok_or_else(|| self.not_stored())
    }

    fn not_stored(&self) -> Error {
        Error::NotStored {
            function: self.function.clone(),
            key: self.key.map(|k| k.to_hex()).unwrap_or_default(),
        }
    }

    /// The entry's metadata: its header and its info, whose checksum is
    /// not checked (use [`get`](StoredResult::get) to check the entry).
    /// Reading it does not count as a use of the result.
    pub fn metadata(&self) -> Result<Metadata> {
        let key = self.stored_key()?;
        self.memory()
            .entry_metadata(&self.folder, &key, &self.function)?
            .ok_or_else(|| self.not_stored())
    }

    /// Removes the stored result (from this process's in-memory layer too).
    pub fn clear(&self) -> Result<()> {
        let key = self.stored_key()?;
        self.memory().remove_result(&self.folder, &key)
    }
}

impl<T: DeserializeOwned + 'static> StoredResult<T> {
    /// Reads, verifies and decodes the value, with the signing key of the
    /// handle's [`Memory`].
    ///
    /// # Errors
    /// [`Error::NotStored`] when it is gone (cleared, evicted, or never
    /// stored because the computation failed), [`Error::Damaged`] when its
    /// bytes are damaged or not signed with the expected key,
    /// [`Error::Io`] when the store cannot be read.
    pub fn get(&self) -> Result<T> {
        let key = self.stored_key()?;
        self.memory()
            .get_entry(&self.folder, &key)?
            .ok_or_else(|| self.not_stored())
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
