//! Keys of Python values: a canonical, type-tagged byte stream hashed with
//! blake3.
//!
//! Each value starts with a tag byte; lengths are u64 LE; so two different
//! values never write the same bytes. Exact built-in types are encoded by
//! value (`1` and `1.0` and `True` differ, `(1,)` and `[1]` differ); dicts,
//! sets and frozensets hash each item on its own and write the sorted item
//! digests, so insertion order never matters. NumPy arrays are written as
//! their class, dtype, shape and the blake3 digest of their elements in C
//! order, read through the buffer protocol (any layout: C, Fortran,
//! strided), with the GIL released and on every core for large ones.
//! Everything else goes through `pickle.dumps(obj, protocol=4)`, as joblib
//! does. Never change an existing encoding: it would re-key every cache;
//! add tags instead (and bump `KEY_VERSION` if one must change).

use std::ffi::{c_char, c_int, c_void};

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyComplex, PyDict, PyFloat, PyFrozenSet, PyInt, PyList, PySet,
    PyString, PyTuple, PyType,
};

/// Version of the encoding below, hashed first.
const KEY_VERSION: &[u8] = b"memento python args v1";

mod tag {
    pub const NONE: u8 = 0;
    pub const BOOL: u8 = 1;
    pub const INT: u8 = 2;
    pub const BIGINT: u8 = 3;
    pub const FLOAT: u8 = 4;
    pub const COMPLEX: u8 = 5;
    pub const STR: u8 = 6;
    pub const BYTES: u8 = 7;
    pub const BYTEARRAY: u8 = 8;
    pub const TUPLE: u8 = 9;
    pub const LIST: u8 = 10;
    pub const DICT: u8 = 11;
    pub const SET: u8 = 12;
    pub const FROZENSET: u8 = 13;
    pub const ARRAY: u8 = 14;
    pub const NUMPY_SCALAR: u8 = 15;
    pub const PICKLE: u8 = 16;
    pub const ARGS: u8 = 17;
}

/// Containers nested deeper than this are pickled whole (pickle handles
/// cycles: a list that contains itself still gets a key).
const MAX_DEPTH: usize = 200;

/// Arrays of at least this many bytes are hashed with the GIL released, and
/// contiguous ones on every core.
const LARGE: usize = 1 << 20;

/// Small items are gathered up to this many bytes before they reach blake3.
const GATHER: usize = 64 * 1024;

/// The key material of one argument list: `(name, value)` pairs in the
/// order of the signature. Returns the 32-byte digest.
pub fn hash_args(py: Python<'_>, args: &Bound<'_, PyAny>) -> PyResult<[u8; 32]> {
    let cx = Context::new(py)?;
    let mut enc = Encoder::new();
    enc.write(KEY_VERSION);
    enc.tag(tag::ARGS);
    let pairs: Vec<(String, Bound<'_, PyAny>)> = args.extract()?;
    enc.len(pairs.len());
    for (name, value) in &pairs {
        enc.bytes(name.as_bytes());
        cx.encode(&mut enc, value, 0).map_err(|e| {
            let type_name = value
                .get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_else(|_| "?".into());
            let err = PyTypeError::new_err(format!(
                "memento cannot hash the argument '{name}' (of type {type_name}): {e}. Leave it \
                 out of the key with @memory.cache(ignore=['{name}']), or make it picklable"
            ));
            err.set_cause(py, Some(e));
            err
        })?;
    }
    Ok(enc.finish())
}

/// The digest of one value on its own (for tests and tools).
pub fn hash_value(py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<[u8; 32]> {
    let cx = Context::new(py)?;
    let mut enc = Encoder::new();
    enc.write(KEY_VERSION);
    cx.encode(&mut enc, value, 0)?;
    Ok(enc.finish())
}

/// Bytes gathered for a blake3 hasher.
struct Encoder {
    hasher: blake3::Hasher,
    buf: Vec<u8>,
}

impl Encoder {
    fn new() -> Encoder {
        Encoder {
            hasher: blake3::Hasher::new(),
            buf: Vec::with_capacity(256),
        }
    }

    fn write(&mut self, bytes: &[u8]) {
        if self.buf.len() + bytes.len() > GATHER {
            self.flush();
        }
        if bytes.len() >= GATHER {
            self.hasher.update(bytes);
        } else {
            self.buf.extend_from_slice(bytes);
        }
    }

    fn flush(&mut self) {
        self.hasher.update(&self.buf);
        self.buf.clear();
    }

    fn tag(&mut self, tag: u8) {
        self.write(&[tag]);
    }

    fn len(&mut self, n: usize) {
        self.write(&(n as u64).to_le_bytes());
    }

    /// Length, then the bytes.
    fn bytes(&mut self, bytes: &[u8]) {
        self.len(bytes.len());
        self.write(bytes);
    }

    fn finish(mut self) -> [u8; 32] {
        self.flush();
        *self.hasher.finalize().as_bytes()
    }
}

/// What encoding needs from the interpreter, looked up once per key.
struct Context<'py> {
    py: Python<'py>,
    numpy: Option<Numpy<'py>>,
}

struct Numpy<'py> {
    ndarray: Bound<'py, PyType>,
    generic: Bound<'py, PyType>,
    memmap: Bound<'py, PyType>,
}

impl<'py> Context<'py> {
    fn new(py: Python<'py>) -> PyResult<Context<'py>> {
        // An array can only exist once numpy was imported: never import it.
        let modules = py.import("sys")?.getattr("modules")?;
        let numpy = match modules.get_item("numpy") {
            Ok(np) => Some(Numpy {
                ndarray: np.getattr("ndarray")?.cast_into()?,
                generic: np.getattr("generic")?.cast_into()?,
                memmap: np.getattr("memmap")?.cast_into()?,
            }),
            Err(_) => None,
        };
        Ok(Context { py, numpy })
    }

    fn encode(&self, enc: &mut Encoder, obj: &Bound<'py, PyAny>, depth: usize) -> PyResult<()> {
        if obj.is_none() {
            enc.tag(tag::NONE);
        } else if let Ok(b) = obj.cast_exact::<PyBool>() {
            enc.tag(tag::BOOL);
            enc.write(&[b.is_true() as u8]);
        } else if obj.is_exact_instance_of::<PyInt>() {
            match obj.extract::<i64>() {
                Ok(i) => {
                    enc.tag(tag::INT);
                    enc.write(&i.to_le_bytes());
                }
                Err(_) => {
                    // Two's complement, little-endian, in as few bytes as
                    // hold the value and its sign.
                    let bits: usize = obj.call_method0("bit_length")?.extract()?;
                    let n = bits / 8 + 1;
                    let kw = PyDict::new(self.py);
                    kw.set_item("signed", true)?;
                    let signed = obj.call_method("to_bytes", (n, "little"), Some(&kw))?;
                    enc.tag(tag::BIGINT);
                    enc.bytes(signed.cast::<PyBytes>()?.as_bytes());
                }
            }
        } else if let Ok(f) = obj.cast_exact::<PyFloat>() {
            enc.tag(tag::FLOAT);
            enc.write(&f.value().to_bits().to_le_bytes());
        } else if obj.is_exact_instance_of::<PyComplex>() {
            let re: f64 = obj.getattr("real")?.extract()?;
            let im: f64 = obj.getattr("imag")?.extract()?;
            enc.tag(tag::COMPLEX);
            enc.write(&re.to_bits().to_le_bytes());
            enc.write(&im.to_bits().to_le_bytes());
        } else if let Ok(s) = obj.cast_exact::<PyString>() {
            enc.tag(tag::STR);
            match s.to_cow() {
                Ok(text) => enc.bytes(text.as_bytes()),
                // Lone surrogates: their own bytes, never valid UTF-8, so
                // never those of another string.
                Err(_) => {
                    let b = s.call_method1("encode", ("utf-8", "surrogatepass"))?;
                    enc.bytes(b.cast::<PyBytes>()?.as_bytes());
                }
            }
        } else if let Ok(b) = obj.cast_exact::<PyBytes>() {
            enc.tag(tag::BYTES);
            enc.bytes(b.as_bytes());
        } else if let Ok(b) = obj.cast_exact::<PyByteArray>() {
            enc.tag(tag::BYTEARRAY);
            enc.bytes(&b.to_vec());
        } else if depth >= MAX_DEPTH {
            self.pickle(enc, obj)?;
        } else if let Ok(t) = obj.cast_exact::<PyTuple>() {
            enc.tag(tag::TUPLE);
            enc.len(t.len());
            for item in t.iter() {
                self.encode(enc, &item, depth + 1)?;
            }
        } else if let Ok(l) = obj.cast_exact::<PyList>() {
            enc.tag(tag::LIST);
            enc.len(l.len());
            for item in l.iter() {
                self.encode(enc, &item, depth + 1)?;
            }
        } else if let Ok(d) = obj.cast_exact::<PyDict>() {
            let mut items = Vec::with_capacity(d.len());
            for (k, v) in d.iter() {
                let mut e = Encoder::new();
                self.encode(&mut e, &k, depth + 1)?;
                self.encode(&mut e, &v, depth + 1)?;
                items.push(e.finish());
            }
            self.unordered(enc, tag::DICT, items);
        } else if let Ok(s) = obj.cast_exact::<PySet>() {
            let items = self.digests(s.iter(), depth)?;
            self.unordered(enc, tag::SET, items);
        } else if let Ok(s) = obj.cast_exact::<PyFrozenSet>() {
            let items = self.digests(s.iter(), depth)?;
            self.unordered(enc, tag::FROZENSET, items);
        } else if let Some(np) = &self.numpy {
            if obj.is_instance(&np.ndarray)? {
                self.array(enc, np, obj)?;
            } else if obj.is_instance(&np.generic)? {
                let dtype = obj.getattr("dtype")?;
                if dtype.getattr("hasobject")?.is_truthy()? {
                    return self.pickle(enc, obj);
                }
                enc.tag(tag::NUMPY_SCALAR);
                self.dtype(enc, &dtype)?;
                let data = obj.call_method0("tobytes")?;
                enc.bytes(data.cast::<PyBytes>()?.as_bytes());
            } else {
                self.pickle(enc, obj)?;
            }
        } else {
            self.pickle(enc, obj)?;
        }
        Ok(())
    }

    fn digests(
        &self,
        items: impl Iterator<Item = Bound<'py, PyAny>>,
        depth: usize,
    ) -> PyResult<Vec<[u8; 32]>> {
        items
            .map(|item| {
                let mut e = Encoder::new();
                self.encode(&mut e, &item, depth + 1)?;
                Ok(e.finish())
            })
            .collect()
    }

    /// A dict's or set's items, whatever their order: the sorted digests.
    fn unordered(&self, enc: &mut Encoder, tag: u8, mut items: Vec<[u8; 32]>) {
        items.sort_unstable();
        enc.tag(tag);
        enc.len(items.len());
        for item in &items {
            enc.write(item);
        }
    }

    fn pickle(&self, enc: &mut Encoder, obj: &Bound<'py, PyAny>) -> PyResult<()> {
        static DUMPS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
        let dumps = DUMPS.import(self.py, "pickle", "dumps")?;
        let kw = PyDict::new(self.py);
        kw.set_item("protocol", 4)?;
        let data = dumps.call((obj,), Some(&kw))?;
        enc.tag(tag::PICKLE);
        enc.bytes(data.cast::<PyBytes>()?.as_bytes());
        Ok(())
    }

    /// A dtype: its `str` (kind, byte order, size: `<f8`), and for
    /// structured dtypes their fields (`descr`).
    fn dtype(&self, enc: &mut Encoder, dtype: &Bound<'py, PyAny>) -> PyResult<()> {
        let text: String = dtype.getattr("str")?.extract()?;
        enc.bytes(text.as_bytes());
        if dtype.getattr("fields")?.is_none() {
            enc.tag(0);
        } else {
            enc.tag(1);
            let descr = dtype.getattr("descr")?.str()?;
            enc.bytes(descr.to_cow()?.as_bytes());
        }
        Ok(())
    }

    fn array(&self, enc: &mut Encoder, np: &Numpy<'py>, obj: &Bound<'py, PyAny>) -> PyResult<()> {
        let dtype = obj.getattr("dtype")?;
        if dtype.getattr("hasobject")?.is_truthy()? {
            // Pointers to objects: their contents are what counts.
            return self.pickle(enc, obj);
        }
        enc.tag(tag::ARRAY);
        // ndarray and memmap (a mapped ndarray) alike; other subclasses
        // (np.matrix, masked arrays) by their class.
        let class = obj.get_type();
        if class.is(&np.ndarray) || class.is(&np.memmap) {
            enc.bytes(b"numpy.ndarray");
        } else {
            let module: String = class.getattr("__module__")?.extract()?;
            let name: String = class.getattr("__qualname__")?.extract()?;
            enc.bytes(format!("{module}.{name}").as_bytes());
        }
        self.dtype(enc, &dtype)?;
        let shape: Vec<u64> = obj.getattr("shape")?.extract()?;
        enc.len(shape.len());
        for n in &shape {
            enc.write(&n.to_le_bytes());
        }
        let digest = match Buffer::get(obj) {
            Some(buffer) => buffer.digest(self.py),
            // Types the buffer protocol does not carry (datetime64):
            // their bytes in C order, copied.
            None => {
                let data = obj.call_method0("tobytes")?;
                *blake3::hash(data.cast::<PyBytes>()?.as_bytes()).as_bytes()
            }
        };
        enc.write(&digest);
        Ok(())
    }
}

/// `Py_buffer`, laid out as CPython has since 3.3 (part of the stable ABI
/// from 3.11). PyO3 declares it for abi3 builds from 3.11 only; the
/// functions below are exported by every CPython 3 on Linux and macOS.
#[repr(C)]
struct RawBuffer {
    buf: *mut c_void,
    obj: *mut pyo3::ffi::PyObject,
    len: isize,
    itemsize: isize,
    readonly: c_int,
    ndim: c_int,
    format: *mut c_char,
    shape: *mut isize,
    strides: *mut isize,
    suboffsets: *mut isize,
    internal: *mut c_void,
}

unsafe extern "C" {
    fn PyObject_GetBuffer(
        obj: *mut pyo3::ffi::PyObject,
        view: *mut RawBuffer,
        flags: c_int,
    ) -> c_int;
    fn PyBuffer_Release(view: *mut RawBuffer);
}

/// `PyBUF_RECORDS_RO`: strides and format, read-only is fine.
const PYBUF_RECORDS_RO: c_int = 0x0010 | 0x0008 | 0x0004;

/// A buffer view, released on drop (with the GIL held: it never leaves the
/// thread that holds it; only the plain description below does).
struct Buffer<'a, 'py> {
    view: Box<RawBuffer>,
    _obj: &'a Bound<'py, PyAny>,
}

/// What hashing needs of a buffer, without the GIL.
struct Layout {
    buf: *const u8,
    itemsize: usize,
    shape: Vec<usize>,
    strides: Vec<isize>,
}

// SAFETY: the pointer stays valid while the `Buffer` it comes from is held
// (the exporter keeps its memory until PyBuffer_Release), and the `Buffer`
// outlives every use of the `Layout` (it is dropped after `detach`
// returns). The memory is only read.
unsafe impl Send for Layout {}

impl<'a, 'py> Buffer<'a, 'py> {
    /// The buffer of `obj`, or `None` (and no error set) when it has none.
    fn get(obj: &'a Bound<'py, PyAny>) -> Option<Buffer<'a, 'py>> {
        let mut view = Box::new(RawBuffer {
            buf: std::ptr::null_mut(),
            obj: std::ptr::null_mut(),
            len: 0,
            itemsize: 0,
            readonly: 0,
            ndim: 0,
            format: std::ptr::null_mut(),
            shape: std::ptr::null_mut(),
            strides: std::ptr::null_mut(),
            suboffsets: std::ptr::null_mut(),
            internal: std::ptr::null_mut(),
        });
        // SAFETY: `obj` is a live object; `view` is a writable Py_buffer.
        let rc = unsafe { PyObject_GetBuffer(obj.as_ptr(), &mut *view, PYBUF_RECORDS_RO) };
        if rc != 0 {
            // Consumes the exception the failed call set.
            let _ = PyErr::take(obj.py());
            return None;
        }
        if !view.suboffsets.is_null() || view.itemsize <= 0 {
            // SAFETY: the view was filled by a successful call.
            unsafe { PyBuffer_Release(&mut *view) };
            return None;
        }
        Some(Buffer { view, _obj: obj })
    }

    fn layout(&self) -> Layout {
        let v = &*self.view;
        let ndim = v.ndim.max(0) as usize;
        // SAFETY: with PyBUF_STRIDES the exporter fills `ndim` shapes and
        // strides (both may be null only when ndim is 0).
        let (shape, strides) = unsafe {
            if ndim == 0 {
                (Vec::new(), Vec::new())
            } else {
                let shape = std::slice::from_raw_parts(v.shape, ndim);
                let strides = std::slice::from_raw_parts(v.strides, ndim);
                (
                    shape.iter().map(|&n| n.max(0) as usize).collect(),
                    strides.to_vec(),
                )
            }
        };
        Layout {
            buf: v.buf as *const u8,
            itemsize: v.itemsize as usize,
            shape,
            strides,
        }
    }

    /// blake3 of the elements in C order.
    fn digest(&self, py: Python<'_>) -> [u8; 32] {
        let layout = self.layout();
        let bytes = layout.itemsize * layout.shape.iter().product::<usize>();
        if bytes < LARGE {
            layout.digest()
        } else {
            py.detach(move || layout.digest())
        }
    }
}

impl Drop for Buffer<'_, '_> {
    fn drop(&mut self) {
        // SAFETY: the view was filled by a successful PyObject_GetBuffer and
        // is released once, with the GIL held (the Buffer is not Send).
        unsafe { PyBuffer_Release(&mut *self.view) };
    }
}

impl Layout {
    fn count(&self) -> usize {
        self.shape.iter().product()
    }

    fn c_contiguous(&self) -> bool {
        let mut expected = self.itemsize as isize;
        for (&n, &s) in self.shape.iter().zip(&self.strides).rev() {
            if n != 1 && s != expected {
                return false;
            }
            expected *= n as isize;
        }
        true
    }

    fn digest(&self) -> [u8; 32] {
        let mut hasher = blake3::Hasher::new();
        let count = self.count();
        if count == 0 {
            return *hasher.finalize().as_bytes();
        }
        if self.c_contiguous() {
            // SAFETY: a C-contiguous buffer holds count * itemsize bytes
            // from `buf`.
            let data = unsafe { std::slice::from_raw_parts(self.buf, count * self.itemsize) };
            if data.len() >= LARGE {
                hasher.update_rayon(data);
            } else {
                hasher.update(data);
            }
            return *hasher.finalize().as_bytes();
        }
        // Strided: the elements in C order, gathered.
        let mut out = Vec::with_capacity(GATHER + self.itemsize * 1024);
        self.walk(0, self.buf, &mut |run: &[u8]| {
            out.extend_from_slice(run);
            if out.len() >= GATHER {
                hasher.update(&out);
                out.clear();
            }
        });
        hasher.update(&out);
        *hasher.finalize().as_bytes()
    }

    /// Calls `sink` with the bytes of the elements under `ptr` along the
    /// dimensions from `dim`, in C order (a contiguous last dimension in
    /// one run).
    fn walk(&self, dim: usize, ptr: *const u8, sink: &mut impl FnMut(&[u8])) {
        let last = self.shape.len() - 1;
        let (n, stride) = (self.shape[dim], self.strides[dim]);
        if dim == last && stride == self.itemsize as isize {
            // SAFETY: n contiguous elements of the exporter's memory.
            sink(unsafe { std::slice::from_raw_parts(ptr, n * self.itemsize) });
            return;
        }
        for i in 0..n {
            // SAFETY: index i < shape[dim] along a stride the exporter gave.
            let p = unsafe { ptr.offset(i as isize * stride) };
            if dim == last {
                // SAFETY: one element at p.
                sink(unsafe { std::slice::from_raw_parts(p, self.itemsize) });
            } else {
                self.walk(dim + 1, p, sink);
            }
        }
    }
}
