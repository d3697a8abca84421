//! `memento._memento`: the Rust half of the Python package `memento`
//! (distribution `memento-cache`).
//!
//! The Python half (`python/memento/__init__.py`) binds a call's arguments
//! as joblib does, fingerprints the function's source, and pickles results;
//! this module keys the arguments (`hash.rs`) and stores the pickled bytes
//! (`result.rs`: arrays raw and aligned) through memento's [`Memory`], so a
//! Python result is an entry like any other: checksummed, published
//! atomically, computed once across processes, under the same limits and
//! signing, listed by the `memento` command. With `mmap_mode`, a stored
//! result is looked up as a [`Mapped`] entry, verified, and Python maps its
//! arrays from the same file.

use std::path::PathBuf;
use std::time::Duration;

use memento::codec::Compression;
use memento::{Function, Lookup, Mapped, Memory, StoredResult};
use pyo3::exceptions::{PyKeyError, PyOSError, PyRuntimeError, PyUserWarning, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyList};
use serde::{Serialize, Serializer};

mod hash;
mod remote;
mod result;
mod warn;

use result::Payload;

/// A call's arguments as memento keys them: the digest of their canonical
/// encoding ([`hash::hash_args`]), written as `python:<hex>` (which is also
/// what an entry's info shows for them).
struct Args([u8; 32]);

impl Args {
    fn from_digest(digest: &[u8]) -> PyResult<Args> {
        let digest: [u8; 32] = digest.try_into().map_err(|_| {
            PyValueError::new_err("an argument digest is 32 bytes: make it with hash_args()")
        })?;
        Ok(Args(digest))
    }
}

impl Serialize for Args {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!(
            "python:{}",
            blake3::Hash::from_bytes(self.0).to_hex()
        ))
    }
}

/// memento's errors as Python exceptions, with memento's message (which
/// says what to do).
fn to_py(e: memento::Error) -> PyErr {
    match e {
        memento::Error::NotStored { .. } => PyKeyError::new_err(e.to_string()),
        memento::Error::Io { .. } | memento::Error::Remote { .. } => {
            PyOSError::new_err(e.to_string())
        }
        memento::Error::Option { .. } => PyValueError::new_err(e.to_string()),
        _ => PyRuntimeError::new_err(e.to_string()),
    }
}

/// memento's warnings of a call (see [`warn`]) as `UserWarning`s, shown
/// at the line that called the cached function (stack level 3: this call
/// is made by `MemorizedFunc._run`, called by `__call__`, `call` or
/// `call_and_shelve`).
fn warn_all(py: Python<'_>, warnings: Vec<String>) -> PyResult<()> {
    for message in warnings {
        let message = std::ffi::CString::new(format!("memento: {message}").replace('\0', " "))
            .unwrap_or_default();
        PyErr::warn(py, &py.get_type::<PyUserWarning>(), &message, 3)?;
    }
    Ok(())
}

fn seconds(what: &str, value: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(value).map_err(|_| {
        PyValueError::new_err(format!(
            "{what} must be a number of seconds, 0 or more: got {value}"
        ))
    })
}

/// A cached function's identity and fingerprint.
#[pyclass(frozen, name = "Function", module = "memento._memento")]
struct PyFunction {
    function: Function,
    /// Its results are stored compressed (so never as maps).
    compressed: bool,
}

#[pymethods]
impl PyFunction {
    /// `code`: the material of the fingerprint (the function's tokens),
    /// hashed here with blake3; `signature`: for people; `compress`: `None`,
    /// `("lz4", 0)` or `("zstd", level)`, for the results stored from now on.
    #[new]
    #[pyo3(signature = (module, qualname, code, signature, version = "", compress = None))]
    fn new(
        module: &str,
        qualname: &str,
        code: &[u8],
        signature: &str,
        version: &str,
        compress: Option<(String, i32)>,
    ) -> PyResult<Self> {
        let compression = match compress.as_ref().map(|(n, l)| (n.as_str(), *l)) {
            None => Compression::None,
            Some(("lz4", _)) => Compression::Lz4,
            Some(("zstd", level @ 1..=22)) => Compression::Zstd(level),
            Some((name, level)) => {
                return Err(PyValueError::new_err(format!(
                    "compress=({name:?}, {level}): the codecs are ('lz4', 0) and ('zstd', 1 to 22)"
                )))
            }
        };
        let function = Function::new(module, qualname)
            .fingerprint(*blake3::hash(code).as_bytes(), signature)
            .version(version)
            .compress(compression);
        Ok(PyFunction {
            function,
            compressed: compression != Compression::None,
        })
    }

    /// `module::qualname`.
    #[getter]
    fn full_name(&self) -> &str {
        self.function.full_name()
    }

    /// The function's folder under the location.
    #[getter]
    fn folder(&self) -> &str {
        self.function.folder()
    }

    fn __repr__(&self) -> String {
        format!("<memento Function {}>", self.function.full_name())
    }
}

/// A cache location with its options: memento's `Memory`.
#[pyclass(frozen, name = "Memory", module = "memento._memento")]
struct PyMemory {
    memory: Memory,
    /// The same Memory for `mmap_mode` lookups: with a signing key, an
    /// entry is still mapped, its signature verified over the mapped file
    /// before Python maps it (see [`PyMemory::call`]).
    mapping: Memory,
    /// The files of mapped entries this Memory verified, as they were then
    /// (see [`Stamp`]): a later mapped hit on the same unchanged file
    /// needs no second pass over its bytes.
    verified: std::sync::Mutex<std::collections::HashSet<Stamp>>,
    /// Argument digests whose stored payload was large (at least
    /// [`result::LARGE`]): their loaded hits go through the entry's file
    /// (see [`PyMemory::call_file`]), so that an unchanged file that was
    /// verified is read without a second checksum pass.
    large: std::sync::Mutex<std::collections::HashSet<[u8; 32]>>,
    /// With a signing key, loaded results are read and checked in one
    /// pass (the bytes checked are the bytes used), never through a file
    /// opened again.
    signed: bool,
}

/// A file as `fstat` sees it: device, inode, size, modification and
/// change times (nanoseconds). Any write to the file, a rename over it or
/// its replacement changes one of them (the change time cannot be set back
/// by anyone but root), so a file whose stamp is unchanged since its bytes
/// were verified still holds them; files changed too recently are not
/// remembered (see [`Stamp::racy`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Stamp([i64; 5]);

impl Stamp {
    /// Was the file changed too recently for its times to show a change
    /// made right after (see [`RACY_NANOS`])?
    fn racy(&self) -> bool {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        // Times in whole seconds (or coarser: FAT's 2 s) have no
        // nanoseconds; times with them tick at the kernel's clock (a few
        // milliseconds).
        let window = if self.0[3] % 1_000_000_000 == 0 && self.0[4] % 1_000_000_000 == 0 {
            RACY_NANOS
        } else {
            RACY_FINE_NANOS
        };
        now.saturating_sub(self.0[4]) < window
    }
}

/// At most this many stamps are kept per Memory (then they are forgotten,
/// and files are verified again).
const STAMPS: usize = 4096;

/// A file changed less than this long ago is verified at every hit
/// through its file (as git treats "racily clean" files): two changes
/// within one tick of the file system's clock leave the same times. For
/// times kept in whole seconds (or FAT's 2 s)...
const RACY_NANOS: i64 = 2_000_000_000;

/// ... and for times with nanoseconds, which tick at the kernel's clock
/// (1 to 10 ms).
const RACY_FINE_NANOS: i64 = 100_000_000;

#[pymethods]
impl PyMemory {
    #[new]
    /// `location`: a folder, or `s3://bucket/prefix` with the bucket's
    /// settings in `backend_options` (see `remote.rs`).
    #[pyo3(signature = (location, *, bytes_limit = None, items_limit = None, age_limit = None,
                        signing_key = None, lock_timeout = None, backend_options = None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        location: PathBuf,
        bytes_limit: Option<u64>,
        items_limit: Option<u64>,
        age_limit: Option<f64>,
        signing_key: Option<Vec<u8>>,
        lock_timeout: Option<f64>,
        backend_options: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let mut memory = match location.to_str() {
            Some(url) if remote::is_remote(url) => remote::open(url, backend_options)?,
            _ => Memory::new(location),
        };
        if let Some(bytes) = bytes_limit {
            memory = memory.bytes_limit(bytes);
        }
        if let Some(items) = items_limit {
            memory = memory.items_limit(items);
        }
        if let Some(age) = age_limit {
            memory = memory.age_limit(seconds("age_limit", age)?);
        }
        let signed = signing_key.is_some();
        if let Some(secret) = signing_key {
            if secret.is_empty() {
                return Err(PyValueError::new_err(
                    "signing_key is empty: give a long random secret (bytes or str)",
                ));
            }
            memory = memory.signing_key(secret);
        }
        if let Some(timeout) = lock_timeout {
            memory = memory.lock_timeout(seconds("lock_timeout", timeout)?);
        }
        let mapping = memory.clone().map_signed(true);
        Ok(PyMemory {
            memory,
            mapping,
            verified: Default::default(),
            large: Default::default(),
            signed,
        })
    }

    /// The location, as given.
    #[getter]
    fn location(&self) -> String {
        self.memory.location()
    }

    /// The stored payload of `function` for the argument digest `args`
    /// (a pickle, or the `MPYR` layout), or `compute()`'s, stored.
    /// `compute` returns the payload: `bytes`, or a list of bytes-like
    /// parts that [`result::assemble`] lays out. Returns `(stored, hit)`:
    /// on a miss `stored` is `None` (the caller has the value it computed);
    /// on a hit it is `bytes` or `bytearray` (small payloads), a
    /// [`Payload`] (large ones, not copied), or with `mmap` a tuple
    /// `(fd, offset, length)`: a descriptor of the verified entry's file
    /// (Python closes it), where the payload starts in it, and its length.
    /// An exception of `compute` is raised and nothing is
    /// stored. With `force`, computes and overwrites whatever is stored.
    /// The GIL is released while the store is read and written and while
    /// waiting for the same call in another thread or process.
    #[pyo3(signature = (function, args, compute, force = false, mmap = false))]
    fn call<'py>(
        &self,
        py: Python<'py>,
        function: &PyFunction,
        args: &[u8],
        compute: &Bound<'py, PyAny>,
        force: bool,
        mmap: bool,
    ) -> PyResult<(Py<PyAny>, bool)> {
        let args = Args::from_digest(args)?;
        if mmap || (!function.compressed && !self.signed && self.is_large(&args)) {
            return self.call_file(py, function, &args, compute, force, mmap);
        }
        self.call_loaded(py, function, &args, compute, force)
    }

    /// Is a usable result stored for these arguments? Computes nothing.
    fn contains(&self, py: Python<'_>, function: &PyFunction, args: &[u8]) -> PyResult<bool> {
        let args = Args::from_digest(args)?;
        let (memory, f) = (&self.memory, &function.function);
        Ok(py.detach(|| memory.contains::<Vec<u8>, _>(f, &args)))
    }

    /// A handle on the result of these arguments (stored or not).
    fn shelve(&self, function: &PyFunction, args: &[u8]) -> PyResult<PyStoredResult> {
        let args = Args::from_digest(args)?;
        let f = &function.function;
        let key = self.memory.key_of::<Vec<u8>, _>(f, &args).map_err(to_py)?;
        Ok(PyStoredResult {
            result: StoredResult::__new(&self.memory, f, Some(key)),
        })
    }

    /// The key of these arguments, hex.
    fn key(&self, function: &PyFunction, args: &[u8]) -> PyResult<String> {
        let args = Args::from_digest(args)?;
        let key = self
            .memory
            .key_of::<Vec<u8>, _>(&function.function, &args)
            .map_err(to_py)?;
        Ok(key.to_hex())
    }

    /// Removes every result of the location.
    fn clear(&self, py: Python<'_>) -> PyResult<()> {
        let memory = &self.memory;
        py.detach(|| memory.clear()).map_err(to_py)
    }

    /// Removes the results of one function; returns how many.
    fn clear_function(&self, py: Python<'_>, function: &PyFunction) -> PyResult<usize> {
        let (memory, f) = (&self.memory, &function.function);
        py.detach(|| memory.clear_function(f)).map_err(to_py)
    }

    /// Removes least recently used results until the limits hold: those
    /// given here, else this Memory's. Returns `(removed, freed_bytes)`.
    #[pyo3(signature = (bytes_limit = None, items_limit = None, age_limit = None))]
    fn reduce_size(
        &self,
        py: Python<'_>,
        bytes_limit: Option<u64>,
        items_limit: Option<u64>,
        age_limit: Option<f64>,
    ) -> PyResult<(u64, u64)> {
        let mut memory = self.memory.clone();
        if let Some(bytes) = bytes_limit {
            memory = memory.bytes_limit(bytes);
        }
        if let Some(items) = items_limit {
            memory = memory.items_limit(items);
        }
        if let Some(age) = age_limit {
            memory = memory.age_limit(seconds("age_limit", age)?);
        }
        let done = py.detach(|| memory.reduce_size()).map_err(to_py)?;
        Ok((done.removed, done.freed_bytes))
    }

    /// `(entries, bytes on the disk)` of the whole location.
    fn stats(&self, py: Python<'_>) -> PyResult<(u64, u64)> {
        let memory = &self.memory;
        let stats = py.detach(|| memory.stats()).map_err(to_py)?;
        Ok((stats.entries, stats.bytes))
    }

    fn __repr__(&self) -> String {
        format!("<memento Memory {}>", self.memory.location())
    }
}

impl PyMemory {
    /// [`call`](PyMemory::call) read into memory by the core's read
    /// path (the entry read and its checksum computed in one pass).
    fn call_loaded(
        &self,
        py: Python<'_>,
        function: &PyFunction,
        args: &Args,
        compute: &Bound<'_, PyAny>,
        force: bool,
    ) -> PyResult<(Py<PyAny>, bool)> {
        let (memory, f) = (&self.memory, &function.function);
        let (lookup, warnings) = py.detach(|| {
            warn::collecting(|| {
                if force {
                    memento::__private::next_call(true, false);
                }
                memory.lookup::<Vec<u8>, _>(f, args)
            })
        });
        warn_all(py, warnings)?;
        match lookup {
            Lookup::Hit(value) => {
                if value.len() >= result::LARGE && !function.compressed {
                    self.is_large_now(args);
                }
                Ok((loaded(py, value)?, true))
            }
            Lookup::Miss(pending) => {
                // An exception drops `pending`: nothing stored, the turn
                // released for whoever waits.
                let value = computed(py, compute)?;
                if value.len()? >= result::LARGE && !function.compressed {
                    self.is_large_now(args);
                }
                store_computed(py, pending, value)?;
                Ok((py.None(), false))
            }
        }
    }

    /// [`call`](PyMemory::call) through the entry's file: with `map` for
    /// `mmap_mode`, else for a result known to be large. The entry is
    /// looked up as a [`Mapped`] one and its checksum (or signature)
    /// verified over the map before anything is returned; a damaged one is
    /// removed (one warning) and computed again. Its file is then opened
    /// again here, and must be the file verified (the same device and
    /// inode: a newer entry may have replaced it meanwhile, then it is
    /// looked up again); Python maps the arrays from that descriptor, or
    /// (without `map`) the payload is read from it into memory. A file this
    /// Memory verified and that has not changed since is not verified
    /// again (see [`Stamp`]). An entry fetched from a bucket is looked up
    /// once more when the Memory has a near cache (the fetch copied it
    /// there: a file now). Entries that cannot be mapped (stored
    /// compressed, in a bucket read without a near cache, a bare pickle)
    /// are returned as loaded ones.
    fn call_file(
        &self,
        py: Python<'_>,
        function: &PyFunction,
        args: &Args,
        compute: &Bound<'_, PyAny>,
        force: bool,
        map: bool,
    ) -> PyResult<(Py<PyAny>, bool)> {
        let (memory, f) = (&self.mapping, &function.function);
        let (found, warnings) = py.detach(|| {
            warn::collecting(|| {
                let mut force = force;
                let mut replaced = 0;
                // A result read from a bucket is copied into the near cache
                // once verified: looked up again, it is a file to map.
                let mut fetch_near = map && memory.near_cache_folder().is_some();
                loop {
                    if force {
                        memento::__private::next_call(true, false);
                    }
                    let mapped = match memory.lookup::<Mapped<Vec<u8>>, _>(f, args) {
                        Lookup::Miss(pending) => break Found::Miss(pending),
                        Lookup::Hit(mapped) => mapped,
                    };
                    let opened = open_mapped(&mapped);
                    let seen = match &opened {
                        Opened::File(_, _, stamp) => self.was_verified(stamp),
                        _ => false,
                    };
                    let remembered = matches!(&opened, Opened::File(_, _, stamp) if !stamp.racy());
                    if !map && !seen && !remembered {
                        // Read into memory: in one pass with the checksum,
                        // unless the file can be remembered verified.
                        break Found::Plain;
                    }
                    if !seen && mapped.verify().is_err() {
                        // Removed, with a warning: computed again (forced,
                        // should the removal have failed).
                        force = true;
                        continue;
                    }
                    match opened {
                        Opened::File(file, offset, stamp) => {
                            if !seen {
                                self.verified_now(stamp);
                            }
                            let len = mapped.shape().first().copied().unwrap_or_default();
                            // A bare pickle (the PROTO opcode) holds no
                            // buffers to map: handed over loaded, verified.
                            if first_byte(&file, offset) == Some(0x80) {
                                if mapped.verify().is_err() {
                                    force = true;
                                    continue;
                                }
                                break Found::Loaded(mapped);
                            }
                            break Found::File(file, offset, len);
                        }
                        Opened::Replaced if replaced < 3 => replaced += 1,
                        Opened::Unavailable if fetch_near => fetch_near = false,
                        Opened::Replaced | Opened::Unavailable => break Found::Loaded(mapped),
                    }
                }
            })
        });
        warn_all(py, warnings)?;
        match found {
            Found::File(file, offset, len) if map => {
                let fd = into_fd(file);
                let found = (fd, offset, len).into_pyobject(py)?;
                Ok((found.into_any().unbind(), true))
            }
            Found::File(file, offset, len) => {
                let read = py.detach(|| read_payload(&file, offset, len));
                let value = read.map_err(|e| {
                    PyOSError::new_err(format!("cannot read a stored result's entry: {e}"))
                })?;
                Ok((loaded(py, value)?, true))
            }
            Found::Plain => self.call_loaded(py, function, args, compute, false),
            Found::Loaded(mapped) => {
                let value = if mapped.is_mapped() {
                    mapped.to_vec()
                } else {
                    mapped.into_owned()
                };
                Ok((loaded(py, value)?, true))
            }
            Found::Miss(pending) => {
                store_computed(py, pending, computed(py, compute)?)?;
                Ok((py.None(), false))
            }
        }
    }
}

/// Stores the payload `value` computed for `pending` (a large buffer
/// without joining it to the pickle: [`result::split`]), the GIL released
/// for the write; memento's warnings are raised as `UserWarning`s.
fn store_computed<'m, T>(
    py: Python<'_>,
    pending: memento::Pending<'m, T>,
    value: Computed<'_>,
) -> PyResult<()>
where
    T: memento::SplitBytes + Send,
    memento::Pending<'m, T>: Send,
{
    let ((), warnings) = match value {
        Computed::Whole(value) => {
            let value = T::from_bytes(value);
            py.detach(move || warn::collecting(|| drop(pending.store(value))))
        }
        Computed::Split(parts) => result::split(py, &parts, move |head, tail| {
            warn::collecting(|| pending.store_split(head, tail))
        })?,
    };
    warn_all(py, warnings)
}

/// What a mapped lookup found.
enum Found<'m> {
    /// The verified entry's file, opened again, the payload's offset in it
    /// and its length.
    File(std::fs::File, u64, usize),
    /// A stored result to hand over loaded.
    Loaded(Mapped<Vec<u8>>),
    /// A stored result to read into memory by the core's read path.
    Plain,
    Miss(memento::Pending<'m, Mapped<Vec<u8>>>),
}

impl PyMemory {
    fn is_large(&self, args: &Args) -> bool {
        let large = self.large.lock().unwrap_or_else(|e| e.into_inner());
        !large.is_empty() && large.contains(&args.0)
    }

    fn is_large_now(&self, args: &Args) {
        let mut large = self.large.lock().unwrap_or_else(|e| e.into_inner());
        if large.len() >= STAMPS {
            large.clear();
        }
        large.insert(args.0);
    }

    fn was_verified(&self, stamp: &Stamp) -> bool {
        let verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        verified.contains(stamp)
    }

    /// Remembers a verified file's stamp, unless its last change is too
    /// recent to tell apart from a change right after it (file times are
    /// coarse: a write within the same tick leaves them as they were).
    fn verified_now(&self, stamp: Stamp) {
        if stamp.racy() {
            return;
        }
        let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if verified.len() >= STAMPS {
            verified.clear();
        }
        verified.insert(stamp);
    }
}

/// The file of a mapped entry, opened again.
enum Opened {
    /// The very file that is mapped (the same device and inode), where
    /// the payload starts in it, and its stamp.
    File(std::fs::File, u64, Stamp),
    /// The path names another file now (or none): look again.
    Replaced,
    /// Not a local file (or not on Unix): hand the mapped bytes over.
    Unavailable,
}

fn open_mapped(mapped: &Mapped<Vec<u8>>) -> Opened {
    let (Some((path, offset)), Some(id)) = (mapped.entry_file(), mapped.file_id()) else {
        return Opened::Unavailable;
    };
    let Ok(file) = std::fs::File::open(path) else {
        return Opened::Replaced;
    };
    match stamp(&file) {
        Some(stamp) if (stamp.0[0] as u64, stamp.0[1] as u64) == id => {
            Opened::File(file, offset, stamp)
        }
        _ => Opened::Replaced,
    }
}

#[cfg(unix)]
fn stamp(file: &std::fs::File) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = file.metadata().ok()?;
    let nanos = |s: i64, ns: i64| s.saturating_mul(1_000_000_000).saturating_add(ns);
    Some(Stamp([
        m.dev() as i64,
        m.ino() as i64,
        m.size() as i64,
        nanos(m.mtime(), m.mtime_nsec()),
        nanos(m.ctime(), m.ctime_nsec()),
    ]))
}

#[cfg(not(unix))]
fn stamp(_: &std::fs::File) -> Option<Stamp> {
    None
}

/// `len` bytes of `file` from `offset`, into memory.
fn read_payload(file: &std::fs::File, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let mut value = result::zeroed(len);
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileExt;
        file.read_exact_at(&mut value, offset)?;
    }
    #[cfg(not(unix))]
    {
        let _ = (file, offset);
        return Err(std::io::Error::other("not on this platform"));
    }
    Ok(value)
}

/// The payload's first byte, read from the file.
fn first_byte(file: &std::fs::File, offset: u64) -> Option<u8> {
    let mut byte = [0u8; 1];
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileExt;
        file.read_exact_at(&mut byte, offset).ok()?;
    }
    #[cfg(not(unix))]
    {
        let _ = (file, offset);
        return None;
    }
    Some(byte[0])
}

/// The descriptor of `file`, given to Python (which closes it).
#[cfg(unix)]
fn into_fd(file: std::fs::File) -> i64 {
    use std::os::fd::IntoRawFd;
    i64::from(file.into_raw_fd())
}

#[cfg(not(unix))]
fn into_fd(_: std::fs::File) -> i64 {
    unreachable!("file_id() is None off Unix: no file is opened")
}

/// A computed payload.
enum Computed<'py> {
    /// Its bytes.
    Whole(Vec<u8>),
    /// A head and one large buffer, stored without joining them (see
    /// [`result::split`]).
    Split(Bound<'py, PyList>),
}

impl Computed<'_> {
    fn len(&self) -> PyResult<usize> {
        match self {
            Computed::Whole(value) => Ok(value.len()),
            Computed::Split(parts) => result::split_len(parts),
        }
    }
}

/// The payload `compute` returned: `bytes`, or a list of parts.
fn computed<'py>(py: Python<'py>, compute: &Bound<'py, PyAny>) -> PyResult<Computed<'py>> {
    let payload = compute.call0()?;
    if let Ok(bytes) = payload.cast::<PyBytes>() {
        return Ok(Computed::Whole(bytes.as_bytes().to_vec()));
    }
    if let Ok(parts) = payload.cast::<PyList>() {
        if result::splits(parts)? {
            return Ok(Computed::Split(parts.clone()));
        }
        return result::assemble(py, parts).map(Computed::Whole);
    }
    Err(PyValueError::new_err(format!(
        "the computation must return the encoded result (bytes, or a list of parts): got {}",
        payload.get_type().name()?
    )))
}

/// A payload read on a hit, for Python: small ones copied (into `bytes`
/// for a bare pickle, a `bytearray` for the `MPYR` layout, whose arrays
/// are then writable views of it), large ones as a [`Payload`] (no copy).
fn loaded(py: Python<'_>, value: Vec<u8>) -> PyResult<Py<PyAny>> {
    Ok(if value.len() >= result::LARGE {
        Py::new(py, Payload::new(value))?.into_any()
    } else if value.first() == Some(&0x80) {
        PyBytes::new(py, &value).into_any().unbind()
    } else {
        PyByteArray::new(py, &value).into_any().unbind()
    })
}

/// A handle on one stored result: `memento.StoredResult` wraps it.
#[pyclass(frozen, name = "StoredResult", module = "memento._memento")]
struct PyStoredResult {
    result: StoredResult<Vec<u8>>,
}

#[pymethods]
impl PyStoredResult {
    /// The stored payload, verified (as [`PyMemory::call`] returns a
    /// loaded one). `KeyError` when it is not stored.
    fn get(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let result = &self.result;
        let value = py.detach(|| result.get()).map_err(to_py)?;
        loaded(py, value)
    }

    /// Removes the stored result. `KeyError` when it is not stored.
    fn clear(&self, py: Python<'_>) -> PyResult<()> {
        let result = &self.result;
        py.detach(|| result.clear()).map_err(to_py)
    }

    /// The entry's metadata as a dict (`KeyError` when it is not stored).
    fn metadata<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let result = &self.result;
        let m = py.detach(|| result.metadata()).map_err(to_py)?;
        let d = PyDict::new(py);
        d.set_item("function", m.function)?;
        d.set_item("key", m.key)?;
        d.set_item("created", m.created)?;
        d.set_item("time", m.created_unix)?;
        d.set_item("duration", m.duration)?;
        d.set_item("output_size", m.output_size)?;
        d.set_item("args", m.args)?;
        Ok(d)
    }

    /// The result's key, hex.
    #[getter]
    fn key(&self) -> Option<String> {
        self.result.key().map(|k| k.to_hex())
    }

    fn __repr__(&self) -> String {
        format!(
            "<memento StoredResult {} {}>",
            self.result.function(),
            self.key().unwrap_or_default()
        )
    }
}

/// The 32-byte digest of bound arguments: a list of `(name, value)`.
#[pyfunction]
fn hash_args<'py>(py: Python<'py>, args: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
    let digest = hash::hash_args(py, args)?;
    Ok(PyBytes::new(py, &digest))
}

/// The 32-byte digest of one value (equal values, equal digests).
#[pyfunction]
fn hash_value<'py>(py: Python<'py>, value: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
    let digest = hash::hash_value(py, value)?;
    Ok(PyBytes::new(py, &digest))
}

#[pymodule]
fn _memento(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyFunction>()?;
    m.add_class::<PyMemory>()?;
    m.add_class::<PyStoredResult>()?;
    m.add_class::<Payload>()?;
    m.add_function(wrap_pyfunction!(hash_args, m)?)?;
    m.add_function(wrap_pyfunction!(hash_value, m)?)?;
    m.add("S3", remote::AVAILABLE)?;
    m.add("S3_OPTIONS", remote::OPTIONS.to_vec())?;
    m.add("S3_REBUILD", remote::REBUILD)?;
    Ok(())
}
