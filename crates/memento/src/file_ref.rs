//! Input files keyed by their contents: [`FileRef`].
//!
//! A `FileRef` argument goes into a call's key as a type tag and the
//! blake3 digest of what the path holds, never as the path: a function over
//! a data file computes again when the file's bytes change, and not when
//! the file is merely touched, or copied or moved elsewhere. A folder is
//! keyed by every entry under it (relative names and file contents).
//!
//! Only memento's key sees the contents. To every other serializer (the
//! JSON of an entry's info, a user's own format) a `FileRef` is its path, a
//! string, and it deserializes from one.
//!
//! Files are not read again while they are unchanged: the digests of
//! files are kept by identity and state (device, inode, size,
//! modification and change times) in this process and in a small file of
//! the user's cache folder (see [`digests`]).

use std::ffi::OsStr;
use std::fmt;
use std::fs;
use std::io;
use std::ops::Deref;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserialize, Deserializer, Visitor};
use serde::ser::{self, Serialize, Serializer};

use crate::key::KeyError;

pub(crate) mod digests;

/// The newtype name a `FileRef` serializes under. Memento's key serializer
/// recognizes it and hashes the contents of the path inside instead of the
/// path; the name is reserved (a user type renamed to it is read as a path).
pub(crate) const SERDE_NAME: &str = "memento::FileRef";

/// The kind byte written after the key's `FILE_REF` tag: a regular file.
const KIND_FILE: u8 = 1;
/// The kind byte written after the key's `FILE_REF` tag: a folder.
const KIND_FOLDER: u8 = 2;

/// A path whose *contents* are the key: an argument of this type makes a
/// cached function compute again when the file (or any file under the
/// folder) changes, and only then.
///
/// - A file is keyed by the blake3 of its bytes (what `b3sum` prints):
///   touching it, or copying it elsewhere, keeps the key; one changed byte
///   changes it. Large files are memory-mapped and hashed on every core
///   (feature `parallel`).
/// - A folder is keyed by every entry under it, sorted: each relative name
///   (with `/` separators), whether it is a file, a folder or something
///   else (a socket, a FIFO: name only), and each file's contents. Adding,
///   removing or renaming an entry, empty folders included, or editing a
///   file changes the key. Symbolic links are followed: a link keys as what
///   it points to, under the link's name; a link to nothing keys as its
///   name and target; a loop is an error.
/// - A file and a folder never share a key, nor does a `FileRef` and any
///   other value (the key has a tag of its own for it).
/// - Unchanged files are not read again: their digests are remembered by
///   (device, inode, size, modification time, change time), in the
///   process and across processes, with the care git's index takes for
///   files written in the same clock tick as their digest was taken.
///
/// A file that cannot be read while the key is computed (missing, no
/// permission) makes the call compute without the cache, with a warning
/// that names the path; the function's own result (or its own error) is
/// returned.
///
/// Equality, ordering and every serializer other than memento's key
/// (an entry's `args` info, your own JSON) see the path. Files are read
/// when the key is computed, and the function reads them again when it
/// runs: a file rewritten in between is keyed by what it held when keyed.
/// As with any memory map, another program that truncates a large file
/// while it is being hashed makes the process crash (SIGBUS).
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// # unsafe { std::env::set_var("MEMENTO_DIR", dir.path().join("cache")) }; // one thread here
/// use memento::FileRef;
///
/// #[memento::cache]
/// fn line_count(data: &FileRef) -> usize {
///     std::fs::read_to_string(data).unwrap().lines().count()
/// }
///
/// let path = dir.path().join("data.csv");
/// std::fs::write(&path, "a\nb\n").unwrap();
/// let data = FileRef::new(&path);
/// assert_eq!(line_count(&data), 2); // computed
/// assert!(line_count::check_call_in_cache(&data)); // stored
///
/// // A copy elsewhere has the same contents: the same key.
/// let copy = dir.path().join("copy.csv");
/// std::fs::copy(&path, &copy).unwrap();
/// assert!(line_count::check_call_in_cache(&FileRef::new(&copy)));
///
/// // New contents: a new key, computed again.
/// std::fs::write(&path, "a\nb\nc\n").unwrap();
/// assert!(!line_count::check_call_in_cache(&data));
/// assert_eq!(line_count(&data), 3);
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileRef {
    path: PathBuf,
}

impl FileRef {
    /// A reference to the file or folder at `path` (relative paths are
    /// relative to the current directory when the key is computed). Nothing
    /// is read until a key is computed.
    ///
    /// ```
    /// let data = memento::FileRef::new("data/input.csv");
    /// assert_eq!(data.path(), std::path::Path::new("data/input.csv"));
    /// ```
    pub fn new(path: impl Into<PathBuf>) -> FileRef {
        FileRef { path: path.into() }
    }

    /// The path.
    ///
    /// ```
    /// let data = memento::FileRef::from("input.csv");
    /// assert_eq!(data.path().extension().unwrap(), "csv");
    /// ```
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path, taken out.
    ///
    /// ```
    /// let data = memento::FileRef::from("input.csv");
    /// assert_eq!(data.into_path_buf(), std::path::PathBuf::from("input.csv"));
    /// ```
    pub fn into_path_buf(self) -> PathBuf {
        self.path
    }
}

impl fmt::Debug for FileRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("FileRef").field(&self.path).finish()
    }
}

impl Deref for FileRef {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.path
    }
}

impl AsRef<Path> for FileRef {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

impl AsRef<OsStr> for FileRef {
    fn as_ref(&self) -> &OsStr {
        self.path.as_os_str()
    }
}

impl From<PathBuf> for FileRef {
    fn from(path: PathBuf) -> FileRef {
        FileRef::new(path)
    }
}

impl From<&Path> for FileRef {
    fn from(path: &Path) -> FileRef {
        FileRef::new(path)
    }
}

impl From<&str> for FileRef {
    fn from(path: &str) -> FileRef {
        FileRef::new(path)
    }
}

impl From<String> for FileRef {
    fn from(path: String) -> FileRef {
        FileRef::new(path)
    }
}

/// The path as serde sees it: a string, or on Unix the raw bytes of a path
/// that is not UTF-8.
struct PathText<'a>(&'a Path);

impl Serialize for PathText<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0.to_str() {
            Some(text) => serializer.serialize_str(text),
            #[cfg(unix)]
            None => {
                use std::os::unix::ffi::OsStrExt;
                serializer.serialize_bytes(self.0.as_os_str().as_bytes())
            }
            #[cfg(not(unix))]
            None => Err(ser::Error::custom(format!(
                "the path {} is not valid Unicode",
                self.0.display()
            ))),
        }
    }
}

impl Serialize for FileRef {
    /// A newtype named `memento::FileRef` around the path. Memento's key
    /// serializer hashes the contents instead; any other serializer writes
    /// the path.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_newtype_struct(SERDE_NAME, &PathText(&self.path))
    }
}

impl<'de> Deserialize<'de> for FileRef {
    /// From the path, as [`Serialize`] writes it.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<FileRef, D::Error> {
        deserializer.deserialize_newtype_struct(SERDE_NAME, PathVisitor)
    }
}

/// Reads a path from a string (or bytes, on Unix).
struct PathVisitor;

impl<'de> Visitor<'de> for PathVisitor {
    type Value = FileRef;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a path")
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<FileRef, D::Error> {
        d.deserialize_string(PathVisitor)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<FileRef, E> {
        Ok(FileRef::new(v))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<FileRef, E> {
        Ok(FileRef::new(v))
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<FileRef, E> {
        path_of_bytes(v)
            .map(FileRef::new)
            .ok_or_else(|| E::custom("a path that is not valid UTF-8"))
    }
}

/// A path from the bytes [`PathText`] wrote (any bytes on Unix, UTF-8
/// elsewhere).
#[cfg(unix)]
fn path_of_bytes(bytes: &[u8]) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    Some(PathBuf::from(OsStr::from_bytes(bytes)))
}

/// A path from the bytes [`PathText`] wrote (any bytes on Unix, UTF-8
/// elsewhere).
#[cfg(not(unix))]
fn path_of_bytes(bytes: &[u8]) -> Option<PathBuf> {
    std::str::from_utf8(bytes).ok().map(PathBuf::from)
}

/// The key's part for the value a `FileRef` serialized under
/// [`SERDE_NAME`]: the kind (file or folder) and the digest of the
/// contents. Called by the key serializer only.
pub(crate) fn contents<T: Serialize + ?Sized>(value: &T) -> Result<(u8, [u8; 32]), KeyError> {
    let path = value.serialize(Capture)?;
    let id = path_id(&path);
    if REUSE.get() {
        if let Some(&(_, kind, digest)) = RECENT.get().iter().find(|(i, ..)| *i == id) {
            return Ok((kind, digest));
        }
    }
    let meta = fs::metadata(&path).map_err(|e| unreadable(&path, &e))?;
    let found = if meta.is_file() {
        let digest = digests::file(&path, &meta).map_err(|e| unreadable(&path, &e))?;
        digests::save_if_changed();
        (KIND_FILE, digest)
    } else if meta.is_dir() {
        let digest = folder(&path);
        digests::save_if_changed();
        (KIND_FOLDER, digest?)
    } else {
        return Err(KeyError::file(format!(
            "the memento::FileRef {} is neither a regular file nor a folder",
            path.display()
        )));
    };
    let mut recent = RECENT.get();
    recent.rotate_right(1);
    recent[0] = (id, found.0, found.1);
    RECENT.set(recent);
    Ok(found)
}

thread_local! {
    /// The last contents digests this thread took, by [`path_id`]: the
    /// explanation of a miss (`memory/why.rs`) hashes each argument again
    /// right after the key, and takes a file's digest from here rather than
    /// read a racy file twice.
    static RECENT: std::cell::Cell<[(u64, u8, [u8; 32]); 4]> =
        const { std::cell::Cell::new([(0, 0, [0; 32]); 4]) };
    /// Set while [`reusing_digests`] runs.
    static REUSE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` (which hashes again arguments whose key was just computed on
/// this thread) taking the digests of their files from that computation.
pub(crate) fn reusing_digests<R>(f: impl FnOnce() -> R) -> R {
    /// Unset even if `f` panics: a key must never take a digest from here.
    struct Unset;
    impl Drop for Unset {
        fn drop(&mut self) {
            REUSE.set(false);
        }
    }
    REUSE.set(true);
    let _unset = Unset;
    f()
}

fn path_id(path: &Path) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    path.hash(&mut h);
    h.finish() | 1
}

fn unreadable(path: &Path, e: &io::Error) -> KeyError {
    KeyError::file(format!(
        "cannot read the memento::FileRef {}: {e}",
        path.display()
    ))
}

/// Kinds of the entries of a folder, in its digest.
const ENTRY_FILE: u8 = b'f';
const ENTRY_FOLDER: u8 = b'd';
const ENTRY_OTHER: u8 = b'o';
const ENTRY_BROKEN_LINK: u8 = b'l';

/// The digest of a folder: blake3 of `"memento folder 1\0"`, then for each
/// entry under it in byte order of their relative names: the entry's kind
/// (`f`, `d`, `o`, or `l` for a link to nothing), the name's length (u64
/// LE) and bytes (for `l`: the name, a zero byte and the link's target),
/// and for a file the blake3 of its contents; then the number of entries
/// (u64 LE).
fn folder(root: &Path) -> Result<[u8; 32], KeyError> {
    let mut entries: Vec<(Vec<u8>, u8, PathBuf, Option<fs::Metadata>)> = Vec::new();
    for entry in walkdir::WalkDir::new(root).follow_links(true).min_depth(1) {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                let path = e.path().unwrap_or(root).to_path_buf();
                if let Some(target) = broken_link(&path) {
                    // A link to nothing: its name and what it names.
                    let relative = path.strip_prefix(root).unwrap_or(&path);
                    let mut name = name_bytes(relative)?;
                    let target = name_bytes(&target)?;
                    name.push(0);
                    name.extend_from_slice(&target);
                    entries.push((name, ENTRY_BROKEN_LINK, path, None));
                    continue;
                }
                return Err(match e.into_io_error() {
                    Some(io) => unreadable(&path, &io),
                    None => KeyError::file(format!(
                        "the memento::FileRef {} holds a symbolic link loop at {}",
                        root.display(),
                        path.display()
                    )),
                });
            }
        };
        let relative = entry.path().strip_prefix(root).unwrap_or(entry.path());
        let name = name_bytes(relative)?;
        // With links followed, the entry's type and metadata are those of
        // what a link points to.
        if entry.file_type().is_file() {
            let meta = entry
                .metadata()
                .map_err(|e| unreadable(entry.path(), &io::Error::from(e)))?;
            entries.push((name, ENTRY_FILE, entry.into_path(), Some(meta)));
        } else {
            let kind = if entry.file_type().is_dir() {
                ENTRY_FOLDER
            } else {
                ENTRY_OTHER
            };
            entries.push((name, kind, entry.into_path(), None));
        }
    }
    entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"memento folder 1\0");
    for (name, kind, path, meta) in &entries {
        hasher.update(&[*kind]);
        if *kind == ENTRY_BROKEN_LINK {
            // The name, a zero byte, the target.
            hasher.update(&(name.len() as u64).to_le_bytes());
            hasher.update(name);
            continue;
        }
        hasher.update(&(name.len() as u64).to_le_bytes());
        hasher.update(name);
        if let Some(meta) = meta {
            hasher.update(&digests::file(path, meta).map_err(|e| unreadable(path, &e))?);
        }
    }
    hasher.update(&(entries.len() as u64).to_le_bytes());
    Ok(*hasher.finalize().as_bytes())
}

/// The target of `path` if it is a symbolic link to nothing.
fn broken_link(path: &Path) -> Option<PathBuf> {
    let link = fs::symlink_metadata(path).ok()?;
    if !link.file_type().is_symlink() {
        return None;
    }
    match fs::metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => fs::read_link(path).ok(),
        _ => None,
    }
}

/// A relative name with `/` between its parts.
#[cfg(unix)]
fn name_bytes(relative: &Path) -> Result<Vec<u8>, KeyError> {
    use std::os::unix::ffi::OsStrExt;
    Ok(relative.as_os_str().as_bytes().to_vec())
}

/// A relative name with `/` between its parts.
#[cfg(not(unix))]
fn name_bytes(relative: &Path) -> Result<Vec<u8>, KeyError> {
    let mut parts = Vec::new();
    for part in relative.components() {
        let text = part.as_os_str().to_str().ok_or_else(|| {
            KeyError::file(format!(
                "the name {} in a memento::FileRef folder is not valid Unicode",
                relative.display()
            ))
        })?;
        parts.push(text);
    }
    Ok(parts.join("/").into_bytes())
}

/// A serializer that accepts a path (a string, or bytes on Unix) and
/// nothing else: the key's way to read what a `FileRef` holds.
struct Capture;

fn not_a_path<T>() -> Result<T, KeyError> {
    Err(<KeyError as ser::Error>::custom(format!(
        "a value serialized as {SERDE_NAME} (a name memento reserves) does not hold a path"
    )))
}

macro_rules! refuse {
    ($($method:ident($($arg:ty),*)),* $(,)?) => {$(
        fn $method(self, $(_: $arg),*) -> Result<PathBuf, KeyError> {
            not_a_path()
        }
    )*};
}

impl Serializer for Capture {
    type Ok = PathBuf;
    type Error = KeyError;
    type SerializeSeq = ser::Impossible<PathBuf, KeyError>;
    type SerializeTuple = ser::Impossible<PathBuf, KeyError>;
    type SerializeTupleStruct = ser::Impossible<PathBuf, KeyError>;
    type SerializeTupleVariant = ser::Impossible<PathBuf, KeyError>;
    type SerializeMap = ser::Impossible<PathBuf, KeyError>;
    type SerializeStruct = ser::Impossible<PathBuf, KeyError>;
    type SerializeStructVariant = ser::Impossible<PathBuf, KeyError>;

    fn serialize_str(self, v: &str) -> Result<PathBuf, KeyError> {
        Ok(PathBuf::from(v))
    }

    fn serialize_bytes(self, v: &[u8]) -> Result<PathBuf, KeyError> {
        path_of_bytes(v).map_or_else(not_a_path, Ok)
    }

    refuse!(
        serialize_bool(bool),
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_i64(i64),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
        serialize_f32(f32),
        serialize_f64(f64),
        serialize_char(char),
        serialize_none(),
        serialize_unit(),
        serialize_unit_struct(&'static str),
        serialize_unit_variant(&'static str, u32, &'static str),
    );

    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<PathBuf, KeyError> {
        not_a_path()
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: &T,
    ) -> Result<PathBuf, KeyError> {
        not_a_path()
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<PathBuf, KeyError> {
        not_a_path()
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, KeyError> {
        not_a_path()
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, KeyError> {
        not_a_path()
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, KeyError> {
        not_a_path()
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, KeyError> {
        not_a_path()
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, KeyError> {
        not_a_path()
    }
    fn serialize_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStruct, KeyError> {
        not_a_path()
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, KeyError> {
        not_a_path()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Key;

    #[test]
    fn other_serializers_see_the_path() {
        let data = FileRef::new("some/data.csv");
        let json = serde_json::to_string(&data).unwrap();
        assert_eq!(json, r#""some/data.csv""#);
        let back: FileRef = serde_json::from_str(&json).unwrap();
        assert_eq!(back, data);
        let bytes = postcard::to_allocvec(&data).unwrap();
        let back: FileRef = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn a_file_a_folder_and_a_string_never_collide() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("empty");
        fs::write(&file, b"").unwrap();
        let folder = dir.path().join("folder");
        fs::create_dir(&folder).unwrap();
        let of_file = Key::of(&FileRef::new(&file)).unwrap();
        let of_folder = Key::of(&FileRef::new(&folder)).unwrap();
        assert_ne!(of_file, of_folder);
        // Neither is the path, as a string or as the newtype it is elsewhere.
        assert_ne!(of_file, Key::of(&file).unwrap());
        assert_ne!(of_file, Key::of(&PathText(&file)).unwrap());
        // A file is its contents' blake3, behind the tag and kind.
        let empty = blake3::hash(b"");
        assert_eq!(
            contents(&PathText(&file)).unwrap(),
            (KIND_FILE, *empty.as_bytes())
        );
        // A folder holding an empty file differs from the empty folder.
        fs::write(folder.join("x"), b"").unwrap();
        assert_ne!(Key::of(&FileRef::new(&folder)).unwrap(), of_folder);
    }

    #[test]
    fn a_value_under_the_reserved_name_that_is_no_path_is_an_error() {
        struct Fake;
        impl Serialize for Fake {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_newtype_struct(SERDE_NAME, &7u32)
            }
        }
        let e = Key::of(&Fake).unwrap_err();
        assert!(e.to_string().contains("does not hold a path"), "{e}");
    }

    #[test]
    fn a_missing_file_is_a_file_error_that_names_it() {
        let e = Key::of(&FileRef::new("/nonexistent/memento/data.csv")).unwrap_err();
        assert!(
            e.to_string().contains("/nonexistent/memento/data.csv"),
            "{e}"
        );
        assert!(e.advice().contains("existing file or folder"));
    }
}
