//! Errors. A cached call never fails because of the cache: these errors are
//! logged as warnings by [`Memory`](crate::Memory) and the value is still
//! returned. They are returned as such by the management and lower-level
//! APIs ([`Memory::stats`](crate::Memory::stats),
//! [`Memory::clear`](crate::Memory::clear),
//! [`StoredResult::get`](crate::StoredResult::get),
//! [`Store`](crate::store::Store)).
//!
//! [`Error`] is `#[non_exhaustive]`: new kinds of failure (a remote store's)
//! can be added without breaking a `match` that ends with `_`.

use std::io;
use std::path::PathBuf;

use crate::codec::Damage;
use crate::key::KeyError;

/// Everything that can go wrong between a call and its stored result.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file or folder of the cache could not be read or written.
    #[error("cannot {action} {}: {source}; check that the cache location is a writable folder on a disk with free space, or choose another one with MEMENTO_DIR or Memory::new", path.display())]
    Io {
        /// What was being done ("write", "read", "create folder", ...).
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The arguments could not be hashed into a key.
    #[error("{function}: {source}; the call is computed without the cache. {}", .source.advice())]
    Key {
        /// The function's full name.
        function: String,
        /// What the serializer said.
        #[source]
        source: KeyError,
    },
    /// The result could not be serialized.
    #[error("{function}: cannot store a result of type {type_name}: {message}; the value is returned but not cached. Sequences must know their length and maps their keys (postcard's limits)")]
    Encode {
        /// The function's full name.
        function: String,
        /// The output type.
        type_name: &'static str,
        /// What the encoder said.
        message: String,
    },
    /// A stored entry failed verification.
    #[error("damaged entry {name}: {damage}")]
    Damaged {
        /// The entry's name in the store.
        name: String,
        /// What is wrong with it.
        #[source]
        damage: Damage,
    },
    /// A shelved result is not (or no longer) in the cache.
    #[error("{function}: no stored result {key}; it was cleared or evicted, or never stored (the computation failed): call the function again")]
    NotStored {
        /// The function's full name.
        function: String,
        /// The key, hex.
        key: String,
    },
    /// An option's value could not be understood.
    #[error("invalid {option} {value:?}: expected {expected}")]
    Option {
        /// Which kind of option ("size", "duration", ...).
        option: &'static str,
        /// The value given.
        value: String,
        /// What would have been understood.
        expected: String,
    },
    /// An operation on a remote store (an S3 bucket) failed. The message
    /// ends with what to check (the endpoint, the credentials, the bucket);
    /// it never holds a secret: no access key, secret key or session
    /// token, and URLs without their query strings.
    #[error("cannot {action} {name} in {location}: {message}")]
    Remote {
        /// What was being done ("read", "publish", "list", ...).
        action: &'static str,
        /// The store's location (`s3://bucket/prefix`).
        location: String,
        /// The object's name in the store (`""` for the whole store).
        name: String,
        /// What went wrong, and what to check.
        message: String,
    },
    /// The cache's location cannot be used (no bucket in an `s3://` URL,
    /// or a build without the `s3` feature): said once when it was opened;
    /// calls are computed and not stored, and management returns this.
    #[error("{reason}")]
    Unusable {
        /// The location as given.
        location: String,
        /// Why, and what to change.
        reason: String,
    },
    /// A name given to the store would leave the cache location.
    #[error("invalid object name {0:?}: names are relative, '/'-separated, without empty, '.' or '..' parts")]
    InvalidName(String),
}

impl Error {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

/// `Result` with memento's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
