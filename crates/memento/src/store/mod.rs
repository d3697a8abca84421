//! Storage backends: where entries live.
//!
//! A [`Store`] holds named objects (`'/'`-separated relative names such as
//! `my_crate/sine/ab/cdef….bin`) and knows nothing of keys, functions
//! or formats. Its operations are the ones an object store offers too, so a
//! remote backend fits without any change above this trait:
//! publish-if-absent, atomic replace, whole and ranged reads, listing and
//! deletion. The trait itself relies on no rename and no lock; those are
//! details of [`LocalStore`]. With the cargo feature `s3`, `S3Store`
//! (module `s3`) keeps the objects in an S3 bucket.

use std::fmt;
use std::ops::Range;
use std::time::{Duration, SystemTime};

use crate::error::{Error, Result};

#[cfg(target_os = "linux")]
mod ahead;
mod local;
mod near;
#[cfg(target_os = "linux")]
mod ranges;
#[cfg(feature = "s3")]
pub mod s3;
mod unavailable;

pub(crate) use local::{block_size, make_folders, on_disk};
pub use local::{LocalStore, ACCESS_GRANULARITY};
pub use near::{NearCache, DEFAULT_NEAR_LIMIT};
#[cfg(feature = "s3")]
pub use s3::{S3Store, S3StoreBuilder};
pub(crate) use unavailable::Unavailable;

/// What [`Store::open_file`] found.
#[derive(Debug)]
#[non_exhaustive]
pub enum Opened {
    /// The store's objects are not local files.
    Unsupported,
    /// No such object.
    Absent,
    /// The object's file, and its length.
    File(std::fs::File, u64),
}

/// A place that keeps named objects.
///
/// Every write is atomic: a reader sees a whole object or none.
///
/// ```
/// use memento::store::{LocalStore, Store};
///
/// let dir = tempfile::tempdir().unwrap();
/// let store = LocalStore::new(dir.path());
/// assert!(store.publish("a/b.bin", b"hello").unwrap());
/// assert!(!store.publish("a/b.bin", b"other").unwrap()); // already there: kept
/// let mut buf = Vec::new();
/// assert!(store.read("a/b.bin", &mut buf).unwrap());
/// assert_eq!(buf, b"hello");
/// assert_eq!(store.list("a").unwrap(), vec!["a/b.bin".to_string()]);
/// store.delete("a/b.bin").unwrap();
/// assert!(!store.read("a/b.bin", &mut buf).unwrap());
/// ```
pub trait Store: Send + Sync + fmt::Debug + 'static {
    /// Reads the whole object into `out` (cleared first). `Ok(false)` when it
    /// does not exist. A backend may record the access (the local one sets
    /// the file's modification time, which is the entry's last access, when
    /// it is more than [`ACCESS_GRANULARITY`] old; the S3 one notes it in
    /// memory and writes its notes to the bucket in batches).
    fn read(&self, name: &str, out: &mut Vec<u8>) -> Result<bool>;

    /// Reads the whole object into `out` (cleared first) as
    /// [`read`](Store::read) does, without recording an access: management
    /// reads (verify, metadata, statistics) must not make a result look
    /// recently used, or an eviction after them would keep the wrong ones.
    /// The default reads the whole range.
    ///
    /// ```
    /// use memento::store::{LocalStore, Store};
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = LocalStore::new(dir.path());
    /// store.write("a.bin", b"abc").unwrap();
    /// let mut buf = Vec::new();
    /// assert!(store.peek("a.bin", &mut buf).unwrap());
    /// assert_eq!(buf, b"abc");
    /// assert!(!store.peek("b.bin", &mut buf).unwrap());
    /// ```
    fn peek(&self, name: &str, out: &mut Vec<u8>) -> Result<bool> {
        self.read_range(name, 0..u64::MAX, out)
    }

    /// Tells the store that the caller read the whole object `name`
    /// (`bytes`, through [`read`](Store::read)) and verified it: its key,
    /// checksum and signature. A store with a local copy of a far one
    /// ([`NearCache`]) keeps it then, and never before. The default does
    /// nothing.
    fn verified(&self, name: &str, bytes: &[u8]) {
        let _ = (name, bytes);
    }

    /// Is every read a round trip over a network (a bucket)? Async callers
    /// then run reads on a thread of their own instead of the executor's.
    /// The default: no.
    fn is_remote(&self) -> bool {
        false
    }

    /// Opens the object as a local file, for reads straight into an array
    /// and for memory maps, recording the access as [`read`](Store::read)
    /// does. Stores whose objects are not local files keep the default,
    /// [`Opened::Unsupported`], and are read with `read`.
    fn open_file(&self, name: &str) -> Result<Opened> {
        let _ = name;
        Ok(Opened::Unsupported)
    }

    /// Reads `range` of the object into `out` (cleared first); a range past
    /// the end is cut at the end. `Ok(false)` when it does not exist.
    fn read_range(&self, name: &str, range: Range<u64>, out: &mut Vec<u8>) -> Result<bool>;

    /// Writes the object only if no object of that name exists. Returns
    /// `true` if this call wrote it, `false` if one was there already (and is
    /// kept).
    fn publish(&self, name: &str, bytes: &[u8]) -> Result<bool>;

    /// Writes the object, replacing any previous one atomically.
    fn write(&self, name: &str, bytes: &[u8]) -> Result<()>;

    /// [`publish`](Store::publish) of an object given in parts, written one
    /// after the other (large results are written from their own memory,
    /// without a copy). The default joins them.
    fn publish_parts(&self, name: &str, parts: &[&[u8]]) -> Result<bool> {
        self.publish(name, &parts.concat())
    }

    /// Writes an object made of a head of `head_len` bytes, `tail`, then
    /// `end`, where the head is computed by `head` (from the rest: a checksum),
    /// then publishes it ([`publish`](Store::publish), or
    /// [`write`](Store::write) when `replace`). A backend may compute the
    /// head on another thread while it writes the tail, as the local one
    /// does; the default computes it first.
    fn publish_computed(
        &self,
        name: &str,
        head_len: usize,
        tail: &[u8],
        end: &[u8],
        head: &(dyn Fn() -> Vec<u8> + Sync),
        replace: bool,
    ) -> Result<bool> {
        let head = head();
        debug_assert_eq!(head.len(), head_len);
        if replace {
            self.write_parts(name, &[&head, tail, end]).map(|()| true)
        } else {
            self.publish_parts(name, &[&head, tail, end])
        }
    }

    /// [`write`](Store::write) of an object given in parts. The default
    /// joins them.
    fn write_parts(&self, name: &str, parts: &[&[u8]]) -> Result<()> {
        self.write(name, &parts.concat())
    }

    /// Every object under the folder `prefix` (`""` for all) with its size
    /// and last modification (for entries: last access), sorted by name.
    fn list_meta(&self, prefix: &str) -> Result<Vec<ObjectMeta>>;

    /// Names of all objects under the folder `prefix` (`""` for all), sorted.
    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        Ok(self
            .list_meta(prefix)?
            .into_iter()
            .map(|m| m.name)
            .collect())
    }

    /// Records an access to the object (its last access time), if the
    /// backend keeps one. Missing objects are not an error.
    fn touch(&self, name: &str) -> Result<()> {
        let _ = name;
        Ok(())
    }

    /// Deletes the object; deleting a missing object is not an error.
    fn delete(&self, name: &str) -> Result<()>;

    /// Deletes every object under the folder `prefix`.
    fn delete_prefix(&self, prefix: &str) -> Result<()> {
        for name in self.list(prefix)? {
            self.delete(&name)?;
        }
        Ok(())
    }

    /// Tidies the folder `folder` after objects in it were deleted: a
    /// backend whose folders are real removes it when nothing is left in it
    /// but its own files (the local store: the shard's `.keys`, when no key
    /// of it is locked). The default does nothing.
    fn prune(&self, folder: &str) -> Result<()> {
        let _ = folder;
        Ok(())
    }

    /// Where the objects live, for messages (a folder, a URL).
    fn location(&self) -> String;

    /// A number that changes whenever this store creates a folder (or
    /// whatever its backend has instead): a `Memory` that wrote a
    /// function's record (`function.json`) checks it again when this
    /// changed, so that a folder deleted and re-created under a running
    /// process gets its record back. Backends without folders keep the
    /// default, 0.
    fn generation(&self) -> u64 {
        0
    }

    /// Takes the exclusive lock `name` across processes (and machines, where
    /// the backend can), waiting at most `timeout` (`None`: until it is
    /// free, or its holder dies). The lock is held until the returned
    /// [`StoreLock`] drops. A backend without locks answers
    /// [`LockOutcome::Unsupported`]: callers then go on without one.
    fn lock(&self, name: &str, timeout: Option<Duration>) -> Result<LockOutcome> {
        let _ = (name, timeout);
        Ok(LockOutcome::Unsupported)
    }

    /// Removes leftovers older than `age`: temporary files of interrupted
    /// writes and lock files nobody holds. Returns how many went.
    fn sweep(&self, age: Duration) -> Result<u64> {
        let _ = age;
        Ok(0)
    }
}

/// The answer of [`Store::lock`].
#[derive(Debug)]
#[non_exhaustive]
pub enum LockOutcome {
    /// The lock is held until this drops.
    Held(StoreLock),
    /// The timeout passed while another holder kept it.
    TimedOut,
    /// The backend has no locks.
    Unsupported,
}

/// A held lock of a [`Store`]; dropping it releases the lock.
pub struct StoreLock(#[allow(dead_code)] Box<dyn Send + Sync>);

impl StoreLock {
    /// Wraps a backend's guard, which releases the lock when dropped.
    pub fn new(guard: impl Send + Sync + 'static) -> StoreLock {
        StoreLock(Box::new(guard))
    }
}

impl fmt::Debug for StoreLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StoreLock")
    }
}

/// Reads the object `name` as JSON; `None` when it is absent, unreadable or
/// not of that shape (the small records beside entries: `function.json`,
/// `hits.json`).
///
/// ```
/// use memento::store::{read_json, LocalStore, Store};
/// let dir = tempfile::tempdir().unwrap();
/// let store = LocalStore::new(dir.path());
/// store.write("a.json", b"[1, 2]").unwrap();
/// assert_eq!(read_json::<Vec<u8>>(&store, "a.json"), Some(vec![1, 2]));
/// assert_eq!(read_json::<Vec<u8>>(&store, "b.json"), None);
/// ```
pub fn read_json<T: serde::de::DeserializeOwned>(store: &dyn Store, name: &str) -> Option<T> {
    let mut buf = Vec::new();
    match store.peek(name, &mut buf) {
        Ok(true) => serde_json::from_slice(&buf).ok(),
        _ => None,
    }
}

/// An object as listed: its name, size and last modification time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// The object's name.
    pub name: String,
    /// Its size in bytes (its content).
    pub size: u64,
    /// What it takes on the disk: its allocated blocks, for a local file
    /// (a 200-byte file takes a 4 KiB block on most file systems); the
    /// size, for a backend that bills content.
    pub disk: u64,
    /// When it was last written or, for entries, last read.
    pub modified: SystemTime,
}

/// Checks that `name` is relative, '/'-separated, with no empty, `.` or `..`
/// part and no NUL or backslash: it cannot leave the store's root.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && !name.starts_with('/')
        && !name.contains(['\\', '\0'])
        && name.split('/').all(|part| !matches!(part, "" | "." | ".."));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidName(name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::check_name;

    #[test]
    fn names_cannot_escape() {
        for bad in [
            "",
            "/etc/passwd",
            "a/../b",
            "..",
            "a//b",
            "a/./b",
            "a\\b",
            "a/",
            "a\0",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        for good in ["a", "a/b.bin", "my_crate/f/ab/cd.bin", "..a/b.."] {
            assert!(check_name(good).is_ok(), "{good:?}");
        }
    }
}
