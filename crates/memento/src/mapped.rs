//! Results backed by a read-only memory map of their entry.
//!
//! `#[memento::cache(mmap)]` on a function returning [`Mapped<T>`] (where
//! `T` is a `Vec<P>`, a `Box<[P]>` or, with the `ndarray` feature, an
//! `ndarray` array of an [`Element`] type `P`) returns stored results as a
//! map of the entry's file: loading costs O(1) whatever the size, and pages
//! are read from the page cache as they are touched. A fresh result (a
//! miss) is returned as the value just computed.
//!
//! # Verification
//!
//! Loading checks the header (key, signature state, lengths) and the
//! buffer's descriptor. The checksum of the data (or its signature, with
//! a signing key) is verified *lazily*, once, the first time the data is
//! touched through the `Mapped` ([`Deref`], `Mapped::view` with the
//! `ndarray` feature,
//! [`Mapped::into_owned`], ...), on every core; [`Mapped::verify`] does it
//! on demand and returns an error instead. Data that fails it is never
//! handed out: the entry is removed (the next call recomputes it) and the
//! access panics with a message that says so. That needs the bytes of the
//! entry to have changed after they were written: memento itself never
//! writes into a published entry.
//!
//! # What a map guarantees, and other writers
//!
//! A map is only as stable as its file. memento never writes into a
//! published entry (a write goes to a new file that replaces it), so
//! within memento:
//!
//! - A mapped entry that is removed meanwhile (by `clear`, eviction, or
//!   another process) stays readable for as long as it is mapped: removal
//!   unlinks the file, and the kernel keeps its pages until the map goes.
//! - A replaced entry (a forced call, another process's publish) leaves the
//!   map on the old file, unchanged.
//!
//! A shared folder may also have writers that are not memento, and for
//! them a map gives no guarantee beyond memory safety (the elements are
//! plain numbers, so any bytes are valid values):
//!
//! - A file **rewritten in place** after the check changes the elements
//!   under the program: later reads see the new bytes, unchecked.
//! - A file **truncated** under the map makes the lost pages raise
//!   `SIGBUS` when touched, which ends the process.
//!
//! numpy's `memmap` and joblib's `mmap_mode` carry exactly the same
//! hazard. Use maps where the folder's other writers only add and remove
//! files.
//!
//! With a signing key, a signature promises that the value used is the
//! value signed, which a map cannot keep: a signed cache therefore reads a
//! stored `Mapped` result into memory and checks it there
//! ([`is_mapped`](Mapped::is_mapped) is false), and neither hazard
//! applies. [`Memory::map_signed`](crate::Memory::map_signed) opts in to
//! maps anyway, for a folder known to have no such writers.
//!
//! ```
//! # let dir = tempfile::tempdir().unwrap();
//! # unsafe { std::env::set_var("MEMENTO_DIR", dir.path()) }; // one thread here
//! use memento::Mapped;
//!
//! #[memento::cache(mmap)]
//! fn ramp(n: usize) -> Mapped<Vec<f64>> {
//!     (0..n).map(|i| i as f64).collect() // the body returns the Vec itself
//! }
//!
//! let first = ramp(1_000_000); // computed: the Vec just made
//! assert!(!first.is_mapped());
//! let again = ramp(1_000_000); // stored: a map of the entry
//! assert!(again.is_mapped());
//! assert_eq!(again[999_999], 999_999.0); // Deref to [f64]
//! assert_eq!(&*again, &*first);
//! ```

use std::fmt;
use std::ops::Deref;
use std::path::PathBuf;
use std::sync::OnceLock;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::buffer::{Element, KeyBuffer, StoredBuffer};
use crate::header::{self, Damage, Header, Signer};

/// A result that is either a value in memory or a read-only memory map of
/// its stored entry. See the [module documentation](crate::mapped), and
/// its section on other writers: a map does not survive another program
/// truncating its file.
pub struct Mapped<T: StoredBuffer> {
    inner: Inner<T>,
}

enum Inner<T: StoredBuffer> {
    /// In memory, row-major and contiguous.
    Owned(T),
    /// Boxed: a map holds its header, which an owned value does not need.
    Map(Box<Map>),
}

struct Map {
    map: memmap2::Mmap,
    /// The entry's header, checked when it was mapped.
    header: Header,
    /// Where the elements start in the map.
    offset: usize,
    count: usize,
    shape: Vec<u64>,
    signer: Option<Signer>,
    /// The entry's file, removed if the data fails its checksum.
    entry: Option<PathBuf>,
    /// The mapped file's device and inode (Unix).
    file_id: Option<(u64, u64)>,
    verified: OnceLock<Result<(), Damage>>,
}

impl<T: StoredBuffer> From<T> for Mapped<T> {
    /// A result in memory (kept row-major and contiguous).
    fn from(value: T) -> Mapped<T> {
        let value = if value.contiguous().is_some() {
            value
        } else {
            let elements = value.elements().into_owned();
            T::from_elements(&value.shape(), elements)
                .expect("a copy in standard layout has the original's shape")
        };
        Mapped {
            inner: Inner::Owned(value),
        }
    }
}

/// The data of a mapped entry failed its checksum: see
/// [`Mapped::verify`].
#[derive(Debug, Clone, thiserror::Error)]
#[error("the stored result mapped from {entry} is damaged ({damage}); it was removed, call the function again to recompute it")]
pub struct MappedDamage {
    /// The entry's file.
    pub entry: String,
    /// What was wrong.
    pub damage: Damage,
}

impl<T: StoredBuffer> Mapped<T> {
    /// Maps a stored entry whose header was checked and whose descriptor
    /// says `shape` and `count` elements from `offset` on.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn map(
        map: memmap2::Mmap,
        header: Header,
        offset: usize,
        count: usize,
        shape: Vec<u64>,
        signer: Option<Signer>,
        entry: Option<PathBuf>,
        file_id: Option<(u64, u64)>,
    ) -> Mapped<T> {
        Mapped {
            inner: Inner::Map(Box::new(Map {
                map,
                header,
                offset,
                count,
                shape,
                signer,
                entry,
                file_id,
                verified: OnceLock::new(),
            })),
        }
    }

    /// Is this a memory map of a stored entry (rather than a value in
    /// memory)?
    pub fn is_mapped(&self) -> bool {
        matches!(self.inner, Inner::Map(_))
    }

    /// Where a mapped result's bytes are: the entry's local file and the
    /// offset of the elements in it, for another reader of the same bytes
    /// (memento's Python package maps arrays from them with numpy, after
    /// [`verify`](Mapped::verify)). `None` for a value in memory or an
    /// entry that is not a local file. The path may name another file by
    /// the time it is opened (a newer result replaced the entry): compare
    /// the opened file's device and inode with [`file_id`](Mapped::file_id).
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// use memento::{Function, Lookup, Mapped, Memory};
    ///
    /// let memory = Memory::new(dir.path());
    /// let f = Function::new("docs", "bytes");
    /// let data = vec![7u8; 1000];
    /// let _: Mapped<Vec<u8>> = memory.call(&f, &1u8, || data.clone().into());
    /// let Lookup::Hit(stored) = memory.lookup::<Mapped<Vec<u8>>, _>(&f, &1u8) else {
    ///     panic!("stored above")
    /// };
    /// stored.verify().unwrap();
    /// let (path, offset) = stored.entry_file().unwrap();
    /// assert_eq!(offset % 64, 0);
    /// let file = std::fs::File::open(path).unwrap();
    /// #[cfg(unix)]
    /// {
    ///     use std::os::unix::fs::MetadataExt;
    ///     let meta = file.metadata().unwrap();
    ///     assert_eq!(stored.file_id(), Some((meta.dev(), meta.ino())));
    /// }
    /// let bytes = std::fs::read(path).unwrap();
    /// assert_eq!(&bytes[offset as usize..][..1000], &data[..]);
    /// ```
    pub fn entry_file(&self) -> Option<(&std::path::Path, u64)> {
        let Inner::Map(map) = &self.inner else {
            return None;
        };
        Some((map.entry.as_deref()?, map.offset as u64))
    }

    /// The device and inode of the file a mapped result is mapped from
    /// (Unix; `None` elsewhere and for a value in memory): the identity
    /// of the file that [`verify`](Mapped::verify) checks.
    pub fn file_id(&self) -> Option<(u64, u64)> {
        match &self.inner {
            Inner::Map(map) => map.file_id,
            Inner::Owned(_) => None,
        }
    }

    /// The shape: the length of each dimension (one for vectors).
    pub fn shape(&self) -> Vec<usize> {
        match &self.inner {
            Inner::Owned(value) => value.shape().iter().map(|&n| n as usize).collect(),
            Inner::Map(map) => map.shape.iter().map(|&n| n as usize).collect(),
        }
    }

    /// Verifies the checksum of a mapped entry's data (once; later calls
    /// return the first answer). A value in memory is always `Ok`. On
    /// damage, the entry is removed so that the next call recomputes it.
    pub fn verify(&self) -> Result<(), MappedDamage> {
        let Inner::Map(map) = &self.inner else {
            return Ok(());
        };
        map.verified
            .get_or_init(|| {
                let checked = header::check_checksum(&map.header, &map.map, map.signer.as_ref());
                let Err(damage) = checked else {
                    return Ok(());
                };
                if let Some(entry) = &map.entry {
                    crate::log::warning!(
                        "{}: a mapped result is damaged ({damage}); it is removed",
                        entry.display()
                    );
                    let _ = std::fs::remove_file(entry);
                }
                Err(damage)
            })
            .clone()
            .map_err(|damage| MappedDamage {
                entry: map
                    .entry
                    .as_ref()
                    .map_or_else(String::new, |p| p.display().to_string()),
                damage,
            })
    }

    /// The elements, row-major, after [`verify`](Mapped::verify).
    pub fn try_elements(&self) -> Result<&[T::Elem], MappedDamage> {
        match &self.inner {
            Inner::Owned(value) => Ok(value.contiguous().expect("kept row-major and contiguous")),
            Inner::Map(map) => {
                self.verify()?;
                Ok(map_elements::<T::Elem>(map))
            }
        }
    }

    /// The value in memory: itself, or a copy of the mapped elements.
    ///
    /// # Panics
    /// When a mapped entry fails its checksum (see [`verify`](Mapped::verify)).
    pub fn into_owned(self) -> T {
        match self.inner {
            Inner::Owned(value) => value,
            Inner::Map(ref map) => {
                let elements = self.deref().to_vec();
                T::from_elements(&map.shape, elements)
                    .expect("the descriptor was checked against the type")
            }
        }
    }
}

/// The device and inode of `file` (Unix).
pub(crate) fn file_id(file: &std::fs::File) -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        file.metadata().ok().map(|m| (m.dev(), m.ino()))
    }
    #[cfg(not(unix))]
    {
        let _ = file;
        None
    }
}

fn map_elements<P: Element>(map: &Map) -> &[P] {
    #[cfg(target_endian = "big")]
    compile_error!("memory-mapped results need a little-endian machine");
    // The data starts at a file offset that is a multiple of 64 in a
    // page-aligned map, so it is aligned for `P`, and spans exactly `count`
    // elements (the descriptor was checked against the file's length):
    // bytemuck checks both again.
    let bytes = map
        .map
        .get(map.offset..map.offset + map.count * std::mem::size_of::<P>())
        .expect("the descriptor was checked against the file's length");
    bytemuck::cast_slice(bytes)
}

impl<T: StoredBuffer> Deref for Mapped<T> {
    type Target = [T::Elem];

    /// The elements, row-major.
    ///
    /// # Panics
    /// When a mapped entry fails its checksum the first time it is touched
    /// (the entry is removed; see [`verify`](Mapped::verify)).
    fn deref(&self) -> &[T::Elem] {
        match self.try_elements() {
            Ok(elements) => elements,
            Err(e) => panic!("memento: {e}"),
        }
    }
}

#[cfg(feature = "ndarray")]
impl<P: Element, D: ndarray::Dimension + Serialize + 'static> Mapped<ndarray::Array<P, D>> {
    /// A view of the array.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # unsafe { std::env::set_var("MEMENTO_DIR", dir.path()) }; // one thread here
    /// use memento::Mapped;
    /// use ndarray::{Array2, ArrayView2};
    ///
    /// #[memento::cache(mmap)]
    /// fn outer(a: ArrayView2<'_, f64>, scale: f64) -> Mapped<Array2<f64>> {
    ///     a.mapv(|x| x * scale) // the body returns the Array2 itself
    /// }
    ///
    /// let a = Array2::from_shape_fn((300, 200), |(i, j)| (i * j) as f64);
    /// let fresh = outer(a.view(), 2.0);
    /// let stored = outer(a.view(), 2.0); // mapped from its entry
    /// assert!(stored.is_mapped());
    /// assert_eq!(stored.view(), fresh.view());
    /// assert_eq!(stored.view()[[299, 199]], 2.0 * 299.0 * 199.0);
    /// ```
    ///
    /// # Panics
    /// When a mapped entry fails its checksum (see [`verify`](Mapped::verify)).
    pub fn view(&self) -> ndarray::ArrayView<'_, P, D> {
        match &self.inner {
            Inner::Owned(value) => value.view(),
            Inner::Map(map) => crate::buffer::array_view::<P, D>(&map.shape, self)
                .expect("the descriptor was checked against the type"),
        }
    }
}

impl<T: StoredBuffer> AsRef<[T::Elem]> for Mapped<T> {
    /// The elements, row-major (see [`Deref`]).
    fn as_ref(&self) -> &[T::Elem] {
        self
    }
}

impl<T: StoredBuffer> fmt::Debug for Mapped<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mapped")
            .field("element", &T::Elem::NAME)
            .field("shape", &self.shape())
            .field("mapped", &self.is_mapped())
            .finish()
    }
}

impl<T: StoredBuffer> Serialize for Mapped<T> {
    /// As `T` serializes.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let elements = self.try_elements().map_err(serde::ser::Error::custom)?;
        let shape: Vec<u64> = self.shape().iter().map(|&n| n as u64).collect();
        T::serialize_parts(&shape, elements, serializer)
    }
}

impl<'de, T: StoredBuffer + Deserialize<'de>> Deserialize<'de> for Mapped<T> {
    /// As `T` deserializes: a value in memory.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::deserialize(deserializer).map(Mapped::from)
    }
}

impl<T: StoredBuffer> KeyBuffer for Mapped<T> {
    fn element(&self) -> &'static str {
        T::Elem::NAME
    }
    /// As the value in memory would: a mapped array and its owned copy
    /// give the same key.
    fn with_bytes<R>(&self, f: impl FnOnce(&[u64], &[u8]) -> R) -> R {
        let shape: Vec<u64> = self.shape().iter().map(|&n| n as u64).collect();
        f(&shape, &crate::buffer::le_bytes(self))
    }
}
