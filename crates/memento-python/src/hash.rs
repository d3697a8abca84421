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
//! strided), with the GIL released and on every core for large ones; object
//! arrays element by element; masked arrays as data, mask and fill value.
//! pandas `DataFrame`, `Series` and `Index` through their index, columns,
//! dtypes, names and values. Other objects by value too, not by their
//! pickle's bytes (which depend on a set's iteration order, a dict's
//! insertion order and which objects are shared): a dataclass as its class
//! and fields, anything else as the parts pickle would rebuild it from
//! (`__reduce_ex__(4)`: callable, arguments, state, list and dict items),
//! classes and the callables there by module and qualified name. A value
//! that contains itself writes a back reference (how many levels up).
//! Functions, and objects that reduce to a global name, go through
//! `pickle.dumps(obj, protocol=4)` (a reference by name), as does anything
//! nested deeper than [`MAX_DEPTH`]. Numpy and pandas are looked up in
//! `sys.modules`, never imported: no array or frame exists without them.
//!
//! Never change an existing encoding: it would re-key every cache; add
//! tags instead (and bump `KEY_VERSION` if one must change).

use std::cell::{OnceCell, RefCell};
use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void};
use std::rc::Rc;

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
    /// A container already being encoded further up: how many levels up.
    pub const BACKREF: u8 = 18;
    /// A class or a module-level callable: module and qualified name.
    pub const REF: u8 = 19;
    /// An object as its `__reduce_ex__(4)` parts.
    pub const OBJECT: u8 = 20;
    /// A dataclass instance: class, then its fields' names and values.
    pub const DATACLASS: u8 = 21;
    /// A NumPy array of Python objects: class, dtype, shape, elements.
    pub const OBJECT_ARRAY: u8 = 22;
    /// A NumPy masked array: class, data, mask, fill value.
    pub const MASKED_ARRAY: u8 = 23;
    /// An ndarray subclass whose instances carry attributes: the array,
    /// then the attributes.
    pub const ARRAY_STATE: u8 = 24;
    /// A NumPy dtype.
    pub const DTYPE: u8 = 25;
    pub const PD_INDEX: u8 = 26;
    pub const PD_SERIES: u8 = 27;
    pub const PD_FRAME: u8 = 28;
    /// An object's attributes (its state dict, names all strings): sorted
    /// by name, each name then its value.
    pub const ATTRS: u8 = 29;
}

/// Values nested deeper than this are pickled whole.
const MAX_DEPTH: usize = 200;

/// Arrays of at least this many bytes are hashed with the GIL released, and
/// contiguous ones on every core.
const LARGE: usize = 1 << 20;

/// Small items are gathered up to this many bytes before they reach blake3.
const GATHER: usize = 64 * 1024;

/// The key material of one argument list: `(name, value)` pairs in the
/// order of the signature. Returns the 32-byte digest.
pub fn hash_args(py: Python<'_>, args: &Bound<'_, PyAny>) -> PyResult<[u8; 32]> {
    let cx = Context::new(py);
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
    let cx = Context::new(py);
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

    /// A string's UTF-8 bytes (lone surrogates as their own bytes, never
    /// valid UTF-8, so never those of another string), length first.
    fn text(&mut self, s: &Bound<'_, PyString>) -> PyResult<()> {
        match s.to_cow() {
            Ok(text) => self.bytes(text.as_bytes()),
            Err(_) => {
                let b = s.call_method1("encode", ("utf-8", "surrogatepass"))?;
                self.bytes(b.cast::<PyBytes>()?.as_bytes());
            }
        }
        Ok(())
    }

    fn finish(mut self) -> [u8; 32] {
        self.flush();
        *self.hasher.finalize().as_bytes()
    }
}

/// What encoding needs from the interpreter, looked up when first needed
/// (a call with a float argument looks nothing up).
struct Context<'py> {
    py: Python<'py>,
    numpy: OnceCell<Option<Numpy<'py>>>,
    pandas: OnceCell<Option<Pandas<'py>>>,
    /// The containers and objects being encoded, outermost first: a value
    /// met again inside itself is written as a back reference.
    path: RefCell<Vec<usize>>,
    /// Each type met, by address, with how its instances are encoded.
    kinds: RefCell<Kinds<'py>>,
    /// Classes and callables by address, each held, with their bytes by
    /// reference (`None`: not to be written by reference).
    refs: RefCell<Refs<'py>>,
}

type Refs<'py> = HashMap<usize, (Bound<'py, PyAny>, Option<Rc<[u8]>>)>;

/// Types by address, each held (its address is not reused while its entry
/// lives) with its kind.
type Kinds<'py> = HashMap<usize, (Bound<'py, PyType>, Rc<Kind<'py>>)>;

/// How the instances of a type that is not an exact built-in are encoded.
enum Kind<'py> {
    Array,
    Scalar,
    DType,
    Frame,
    Series,
    Index,
    /// A class: by reference.
    Type,
    /// Functions and modules: pickled (a reference by name).
    Pickle,
    /// A builtin function (pickled) or method (its object and name).
    Builtin,
    /// A dataclass: its fields' names.
    Dataclass(Vec<Bound<'py, PyString>>),
    /// Anything else, by its reduce parts: `copyreg`'s reducer for the
    /// type if any, whether it is a pandas type, an `OrderedDict`.
    Object {
        reducer: Option<Bound<'py, PyAny>>,
        pandas: bool,
        ordered: bool,
    },
}

struct Numpy<'py> {
    ndarray: Bound<'py, PyType>,
    generic: Bound<'py, PyType>,
    memmap: Bound<'py, PyType>,
    dtype: Bound<'py, PyType>,
    /// `numpy.ma.MaskedArray` and `numpy.ma.getmaskarray`, once `numpy.ma`
    /// was imported (numpy does not import it itself).
    masked: Option<(Bound<'py, PyType>, Bound<'py, PyAny>)>,
}

struct Pandas<'py> {
    frame: Bound<'py, PyType>,
    series: Bound<'py, PyType>,
    index: Bound<'py, PyType>,
    range_index: Bound<'py, PyType>,
    multi_index: Bound<'py, PyType>,
}

/// A module already imported, or `None`: not imported, or blocked
/// (`sys.modules[name] = None`), or broken.
fn imported<'py>(py: Python<'py>, name: &str) -> Option<Bound<'py, PyAny>> {
    static MODULES: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let modules = MODULES.import(py, "sys", "modules").ok()?;
    let module = modules.get_item(name).ok()?;
    (!module.is_none()).then_some(module)
}

fn class<'py>(module: &Bound<'py, PyAny>, name: &str) -> Option<Bound<'py, PyType>> {
    module.getattr(name).ok()?.cast_into::<PyType>().ok()
}

impl<'py> Numpy<'py> {
    fn find(py: Python<'py>) -> Option<Numpy<'py>> {
        let np = imported(py, "numpy")?;
        let masked = imported(py, "numpy.ma")
            .and_then(|ma| Some((class(&ma, "MaskedArray")?, ma.getattr("getmaskarray").ok()?)));
        Some(Numpy {
            ndarray: class(&np, "ndarray")?,
            generic: class(&np, "generic")?,
            memmap: class(&np, "memmap")?,
            dtype: class(&np, "dtype")?,
            masked,
        })
    }
}

impl<'py> Pandas<'py> {
    fn find(py: Python<'py>) -> Option<Pandas<'py>> {
        let pd = imported(py, "pandas")?;
        Some(Pandas {
            frame: class(&pd, "DataFrame")?,
            series: class(&pd, "Series")?,
            index: class(&pd, "Index")?,
            range_index: class(&pd, "RangeIndex")?,
            multi_index: class(&pd, "MultiIndex")?,
        })
    }
}

/// Interpreter objects looked up once per process.
fn cached<'py>(
    py: Python<'py>,
    cell: &'static PyOnceLock<Py<PyAny>>,
    module: &str,
    name: &str,
) -> PyResult<&'py Bound<'py, PyAny>> {
    cell.import(py, module, name)
}

static DISPATCH_TABLE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static ORDERED_DICT: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static FUNCTION_TYPE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static BUILTIN_TYPE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static MODULE_TYPE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static DATACLASS_FIELDS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

impl<'py> Context<'py> {
    fn new(py: Python<'py>) -> Context<'py> {
        Context {
            py,
            numpy: OnceCell::new(),
            pandas: OnceCell::new(),
            path: RefCell::new(Vec::new()),
            kinds: RefCell::new(HashMap::new()),
            refs: RefCell::new(HashMap::new()),
        }
    }

    fn numpy(&self) -> Option<&Numpy<'py>> {
        self.numpy.get_or_init(|| Numpy::find(self.py)).as_ref()
    }

    fn pandas(&self) -> Option<&Pandas<'py>> {
        self.pandas.get_or_init(|| Pandas::find(self.py)).as_ref()
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
            enc.text(s)?;
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
            self.nested(enc, obj, |enc| {
                enc.tag(tag::LIST);
                enc.len(l.len());
                for item in l.iter() {
                    self.encode(enc, &item, depth + 1)?;
                }
                Ok(())
            })?;
        } else if let Ok(d) = obj.cast_exact::<PyDict>() {
            self.nested(enc, obj, |enc| self.dict(enc, d, depth))?;
        } else if let Ok(s) = obj.cast_exact::<PySet>() {
            self.nested(enc, obj, |enc| {
                let items = self.digests(s.iter(), depth)?;
                self.unordered(enc, tag::SET, items);
                Ok(())
            })?;
        } else if let Ok(s) = obj.cast_exact::<PyFrozenSet>() {
            let items = self.digests(s.iter(), depth)?;
            self.unordered(enc, tag::FROZENSET, items);
        } else {
            self.other(enc, obj, depth)?;
        }
        Ok(())
    }

    /// Encodes `obj` with `body`, or writes a back reference when `obj` is
    /// already being encoded further up (a value that contains itself).
    fn nested(
        &self,
        enc: &mut Encoder,
        obj: &Bound<'py, PyAny>,
        body: impl FnOnce(&mut Encoder) -> PyResult<()>,
    ) -> PyResult<()> {
        let id = obj.as_ptr() as usize;
        let up = {
            let path = self.path.borrow();
            path.iter().rev().position(|&p| p == id)
        };
        if let Some(up) = up {
            enc.tag(tag::BACKREF);
            enc.len(up);
            return Ok(());
        }
        self.path.borrow_mut().push(id);
        let result = body(enc);
        self.path.borrow_mut().pop();
        result
    }

    fn dict(&self, enc: &mut Encoder, d: &Bound<'py, PyDict>, depth: usize) -> PyResult<()> {
        let mut items = Vec::with_capacity(d.len());
        for (k, v) in d.iter() {
            let mut e = Encoder::new();
            self.encode(&mut e, &k, depth + 1)?;
            self.encode(&mut e, &v, depth + 1)?;
            items.push(e.finish());
        }
        self.unordered(enc, tag::DICT, items);
        Ok(())
    }

    /// What a type's instances are encoded as, decided once per type and
    /// key (a list of 100 000 objects of one class classifies it once).
    fn kind(&self, class: &Bound<'py, PyType>) -> PyResult<Rc<Kind<'py>>> {
        let id = class.as_ptr() as usize;
        if let Some((_, kind)) = self.kinds.borrow().get(&id) {
            return Ok(kind.clone());
        }
        let kind = Rc::new(self.classify(class)?);
        self.kinds
            .borrow_mut()
            .insert(id, (class.clone(), kind.clone()));
        Ok(kind)
    }

    fn classify(&self, class: &Bound<'py, PyType>) -> PyResult<Kind<'py>> {
        let py = self.py;
        if let Some(np) = self.numpy() {
            if class.is_subclass(&np.ndarray)? {
                return Ok(Kind::Array);
            }
            if class.is_subclass(&np.generic)? {
                return Ok(Kind::Scalar);
            }
            if class.is_subclass(&np.dtype)? {
                return Ok(Kind::DType);
            }
        }
        if let Some(pd) = self.pandas() {
            if class.is_subclass(&pd.frame)? {
                return Ok(Kind::Frame);
            }
            if class.is_subclass(&pd.series)? {
                return Ok(Kind::Series);
            }
            if class.is_subclass(&pd.index)? {
                return Ok(Kind::Index);
            }
        }
        let is = |cell, module, name| -> PyResult<bool> {
            class.is_subclass(cached(py, cell, module, name)?.cast::<PyType>()?)
        };
        if class.is_subclass_of::<PyType>()? {
            return Ok(Kind::Type);
        }
        if is(&FUNCTION_TYPE, "types", "FunctionType")? || is(&MODULE_TYPE, "types", "ModuleType")?
        {
            return Ok(Kind::Pickle);
        }
        if is(&BUILTIN_TYPE, "types", "BuiltinFunctionType")? {
            return Ok(Kind::Builtin);
        }
        if class.hasattr("__dataclass_fields__")? {
            let fields = cached(py, &DATACLASS_FIELDS, "dataclasses", "fields")?.call1((class,))?;
            let names = fields
                .cast::<PyTuple>()?
                .iter()
                .map(|field| Ok(field.getattr("name")?.cast_into::<PyString>()?))
                .collect::<PyResult<_>>()?;
            return Ok(Kind::Dataclass(names));
        }
        let table = cached(py, &DISPATCH_TABLE, "copyreg", "dispatch_table")?;
        let module = class.getattr("__module__")?;
        Ok(Kind::Object {
            reducer: table.cast::<PyDict>()?.get_item(class)?,
            pandas: module
                .cast::<PyString>()
                .is_ok_and(|m| m.to_cow().is_ok_and(|m| m.starts_with("pandas"))),
            ordered: is(&ORDERED_DICT, "collections", "OrderedDict")?,
        })
    }

    /// Values that are not exact built-in types.
    fn other(&self, enc: &mut Encoder, obj: &Bound<'py, PyAny>, depth: usize) -> PyResult<()> {
        let class = obj.get_type();
        let kind = self.kind(&class)?;
        match &*kind {
            Kind::Array => {
                let np = self.numpy().expect("classified with numpy");
                self.array(enc, np, obj, depth)
            }
            Kind::Scalar => {
                let dtype = obj.getattr("dtype")?;
                if dtype.getattr("hasobject")?.is_truthy()? {
                    return self.pickle(enc, obj);
                }
                enc.tag(tag::NUMPY_SCALAR);
                self.dtype(enc, &dtype)?;
                let data = obj.call_method0("tobytes")?;
                enc.bytes(data.cast::<PyBytes>()?.as_bytes());
                Ok(())
            }
            Kind::DType => {
                enc.tag(tag::DTYPE);
                self.dtype(enc, obj)
            }
            Kind::Frame | Kind::Series | Kind::Index => {
                let pd = self.pandas().expect("classified with pandas");
                match &*kind {
                    Kind::Frame => self.frame(enc, pd, obj, depth),
                    Kind::Series => self.series(enc, pd, obj, depth),
                    _ => self.index(enc, pd, obj, depth),
                }
            }
            Kind::Type => self.reference(enc, obj),
            // By reference (module and name), as joblib; a lambda or a
            // local function cannot be pickled: a clear error.
            Kind::Pickle => self.pickle(enc, obj),
            Kind::Builtin if self.unbound(obj)? => self.pickle(enc, obj),
            Kind::Builtin => self.nested(enc, obj, |enc| self.reduced(enc, obj, None, depth)),
            Kind::Dataclass(names) => self.nested(enc, obj, |enc| {
                if self.dataclass(enc, obj, names, depth)? {
                    return Ok(());
                }
                self.reduced(enc, obj, None, depth)
            }),
            Kind::Object { .. } => {
                self.nested(enc, obj, |enc| self.reduced(enc, obj, Some(&kind), depth))
            }
        }
    }

    /// A builtin function of a module (`len`, `gc.collect`), not a method
    /// bound to an object (`[1].append`, whose object is its state).
    fn unbound(&self, obj: &Bound<'py, PyAny>) -> PyResult<bool> {
        let owner = match obj.getattr("__self__") {
            Ok(owner) => owner,
            Err(_) => return Ok(true),
        };
        Ok(owner.is_none()
            || owner.is_instance(cached(self.py, &MODULE_TYPE, "types", "ModuleType")?)?)
    }

    /// A class, or a callable named by its module and qualified name.
    fn reference(&self, enc: &mut Encoder, obj: &Bound<'py, PyAny>) -> PyResult<()> {
        // Unchecked: always bytes.
        if let Some(bytes) = self.reference_bytes(obj, false)? {
            enc.write(&bytes);
        }
        Ok(())
    }

    /// The bytes of `obj` by reference, made once per object and key (the
    /// class and `copyreg.__newobj__` of 100 000 instances are one each).
    /// With `check`, `None` when `obj` is not a class or a module-level
    /// callable (a lambda, a local function, a bound method).
    fn reference_bytes(&self, obj: &Bound<'py, PyAny>, check: bool) -> PyResult<Option<Rc<[u8]>>> {
        let id = obj.as_ptr() as usize;
        if let Some((_, bytes)) = self.refs.borrow().get(&id) {
            if bytes.is_some() || check {
                return Ok(bytes.clone());
            }
        }
        let named = obj.cast::<PyType>().is_ok() || {
            matches!(
                (obj.getattr("__module__"), obj.getattr("__qualname__")),
                (Ok(m), Ok(q)) if m.is_instance_of::<PyString>()
                    && q.cast::<PyString>()
                        .is_ok_and(|q| q.to_cow().is_ok_and(|q| !q.contains('<')))
            ) && self.unbound(obj)?
        };
        let bytes = if named || !check {
            let mut e = Encoder::new();
            e.tag(tag::REF);
            e.text(obj.getattr("__module__")?.cast::<PyString>()?)?;
            e.text(obj.getattr("__qualname__")?.cast::<PyString>()?)?;
            Some(Rc::from(e.buf.as_slice()))
        } else {
            None
        };
        self.refs
            .borrow_mut()
            .insert(id, (obj.clone(), bytes.clone()));
        Ok(bytes)
    }

    /// The callable of a reduce tuple: by reference when it is a class or a
    /// module-level function (what pickle stores), else by value.
    fn callable(&self, enc: &mut Encoder, obj: &Bound<'py, PyAny>, depth: usize) -> PyResult<()> {
        match self.reference_bytes(obj, true)? {
            Some(bytes) => {
                enc.write(&bytes);
                Ok(())
            }
            None => self.encode(enc, obj, depth + 1),
        }
    }

    /// A dataclass instance as its class and fields, in their order; false
    /// (nothing written) for instances with attributes that are not fields,
    /// or fields not set (those go by their reduce parts).
    fn dataclass(
        &self,
        enc: &mut Encoder,
        obj: &Bound<'py, PyAny>,
        names: &[Bound<'py, PyString>],
        depth: usize,
    ) -> PyResult<bool> {
        if let Ok(attrs) = obj.getattr("__dict__") {
            let attrs = attrs.cast::<PyDict>()?;
            if attrs.len() != names.len() {
                return Ok(false);
            }
            for name in names {
                if !attrs.contains(name)? {
                    return Ok(false);
                }
            }
        }
        let mut values = Vec::with_capacity(names.len());
        for name in names {
            match obj.getattr(name) {
                Ok(v) => values.push(v),
                Err(_) => return Ok(false),
            }
        }
        enc.tag(tag::DATACLASS);
        self.reference(enc, obj.get_type().as_any())?;
        enc.len(names.len());
        for (name, value) in names.iter().zip(&values) {
            enc.text(name)?;
            self.encode(enc, value, depth + 1)?;
        }
        Ok(true)
    }

    /// An object as pickle would rebuild it: `copyreg.dispatch_table`'s
    /// reducer for its type, else `__reduce_ex__(4)`; a reduction to a
    /// global name (a singleton) is pickled, a reference by name. `kind`:
    /// the type's, when it is an `Object` (else looked up here).
    fn reduced(
        &self,
        enc: &mut Encoder,
        obj: &Bound<'py, PyAny>,
        kind: Option<&Kind<'py>>,
        depth: usize,
    ) -> PyResult<()> {
        let (reducer, pandas, ordered) = match kind {
            Some(Kind::Object {
                reducer,
                pandas,
                ordered,
            }) => (reducer.clone(), *pandas, *ordered),
            _ => {
                let table = cached(self.py, &DISPATCH_TABLE, "copyreg", "dispatch_table")?;
                let reducer = table.cast::<PyDict>()?.get_item(obj.get_type())?;
                (reducer, false, false)
            }
        };
        let parts = match reducer {
            Some(reducer) => reducer.call1((obj,))?,
            None => obj.call_method1("__reduce_ex__", (4,))?,
        };
        if parts.is_instance_of::<PyString>() {
            return self.pickle(enc, obj);
        }
        let parts = parts.cast::<PyTuple>().map_err(|_| {
            PyTypeError::new_err(format!(
                "{}.__reduce_ex__(4) returned {}, not a tuple",
                obj.get_type()
                    .name()
                    .map(|n| n.to_string())
                    .unwrap_or_default(),
                parts
                    .get_type()
                    .name()
                    .map(|n| n.to_string())
                    .unwrap_or_default(),
            ))
        })?;
        let part = |i: usize| parts.get_item(i).ok().filter(|p| !p.is_none());
        enc.tag(tag::OBJECT);
        // callable, args
        match part(0) {
            Some(callable) => self.callable(enc, &callable, depth)?,
            None => enc.tag(tag::NONE),
        }
        match part(1) {
            Some(args) => self.encode(enc, &args, depth + 1)?,
            None => enc.tag(tag::NONE),
        }
        // state
        match part(2) {
            Some(state) => self.state(enc, &state, pandas, depth)?,
            None => enc.tag(tag::NONE),
        }
        // list items, in order
        match part(3) {
            Some(items) => {
                let items: Vec<Bound<'py, PyAny>> = items.try_iter()?.collect::<PyResult<_>>()?;
                enc.tag(tag::LIST);
                enc.len(items.len());
                for item in &items {
                    self.encode(enc, item, depth + 1)?;
                }
            }
            None => enc.tag(tag::NONE),
        }
        // dict items: in order for an OrderedDict (its order is part of
        // its value), else whatever their order
        match part(4) {
            Some(items) => {
                let mut digests = Vec::new();
                for item in items.try_iter()? {
                    let item = item?;
                    let (k, v): (Bound<'py, PyAny>, Bound<'py, PyAny>) = item.extract()?;
                    let mut e = Encoder::new();
                    self.encode(&mut e, &k, depth + 1)?;
                    self.encode(&mut e, &v, depth + 1)?;
                    digests.push(e.finish());
                }
                if ordered {
                    enc.tag(tag::LIST);
                    enc.len(digests.len());
                    for d in &digests {
                        enc.write(d);
                    }
                } else {
                    self.unordered(enc, tag::DICT, digests);
                }
            }
            None => enc.tag(tag::NONE),
        }
        match part(5) {
            Some(setter) => self.callable(enc, &setter, depth)?,
            None => enc.tag(tag::NONE),
        }
        Ok(())
    }

    /// An object's state. The usual one, a dict of attributes named by
    /// strings, is written sorted by name, each name then its value (no
    /// digest per attribute); pandas' `_cache` of computed properties is
    /// left out (equal objects that had different properties read are
    /// equal). Any other state as a value.
    fn state(
        &self,
        enc: &mut Encoder,
        state: &Bound<'py, PyAny>,
        pandas: bool,
        depth: usize,
    ) -> PyResult<()> {
        let Ok(attrs) = state.cast_exact::<PyDict>() else {
            return self.encode(enc, state, depth + 1);
        };
        let mut items = Vec::with_capacity(attrs.len());
        for (k, v) in attrs.iter() {
            let name = match k.cast_exact::<PyString>().map(|k| k.to_cow()) {
                Ok(Ok(name)) => name.into_owned(),
                // A name that is not a string, or a lone surrogate.
                _ => return self.encode(enc, state, depth + 1),
            };
            if pandas && name == "_cache" {
                continue;
            }
            items.push((name, v));
        }
        items.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        self.nested(enc, state, |enc| {
            enc.tag(tag::ATTRS);
            enc.len(items.len());
            for (name, value) in &items {
                enc.bytes(name.as_bytes());
                self.encode(enc, value, depth + 1)?;
            }
            Ok(())
        })
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

    /// An array's class: ndarray and memmap (a mapped ndarray) alike; other
    /// subclasses (np.matrix, masked arrays) by their name.
    fn array_class(
        &self,
        enc: &mut Encoder,
        np: &Numpy<'py>,
        obj: &Bound<'py, PyAny>,
    ) -> PyResult<()> {
        let class = obj.get_type();
        if class.is(&np.ndarray) || class.is(&np.memmap) {
            enc.bytes(b"numpy.ndarray");
        } else {
            let module: String = class.getattr("__module__")?.extract()?;
            let name: String = class.getattr("__qualname__")?.extract()?;
            enc.bytes(format!("{module}.{name}").as_bytes());
        }
        Ok(())
    }

    fn shape(&self, enc: &mut Encoder, obj: &Bound<'py, PyAny>) -> PyResult<()> {
        let shape: Vec<u64> = obj.getattr("shape")?.extract()?;
        enc.len(shape.len());
        for n in &shape {
            enc.write(&n.to_le_bytes());
        }
        Ok(())
    }

    fn array(
        &self,
        enc: &mut Encoder,
        np: &Numpy<'py>,
        obj: &Bound<'py, PyAny>,
        depth: usize,
    ) -> PyResult<()> {
        if let Some((masked, getmaskarray)) = &np.masked {
            if obj.is_instance(masked)? {
                // The mask is part of the value (two arrays with the same
                // data and different masks differ), as a full boolean array
                // (no mask and an all-false mask are the same value).
                enc.tag(tag::MASKED_ARRAY);
                self.array_class(enc, np, obj)?;
                self.array(enc, np, &obj.getattr("data")?, depth)?;
                self.array(enc, np, &getmaskarray.call1((obj,))?, depth)?;
                return self.encode(enc, &obj.getattr("fill_value")?, depth + 1);
            }
        }
        let class = obj.get_type();
        if !class.is(&np.ndarray) && !class.is(&np.memmap) {
            // A subclass whose instances carry attributes (a unit, say):
            // those are part of the value.
            if let Ok(attrs) = obj.getattr("__dict__") {
                if attrs.cast::<PyDict>().is_ok_and(|d| !d.is_empty()) {
                    // (Not `nested`: an object array pushes itself below.
                    // An attribute that holds the array meets the dict
                    // again, a back reference.)
                    enc.tag(tag::ARRAY_STATE);
                    self.plain_array(enc, np, obj, depth)?;
                    return self.encode(enc, &attrs, depth + 1);
                }
            }
        }
        self.plain_array(enc, np, obj, depth)
    }

    fn plain_array(
        &self,
        enc: &mut Encoder,
        np: &Numpy<'py>,
        obj: &Bound<'py, PyAny>,
        depth: usize,
    ) -> PyResult<()> {
        let dtype = obj.getattr("dtype")?;
        if dtype.getattr("hasobject")?.is_truthy()? {
            // Pointers to objects: the objects are the value, in C order.
            return self.nested(enc, obj, |enc| {
                enc.tag(tag::OBJECT_ARRAY);
                self.array_class(enc, np, obj)?;
                self.dtype(enc, &dtype)?;
                self.shape(enc, obj)?;
                // As a plain ndarray: a matrix stays 2-D when raveled.
                let flat = obj
                    .call_method1("view", (&np.ndarray,))?
                    .call_method0("ravel")?
                    .call_method0("tolist")?;
                for item in flat.cast::<PyList>()?.iter() {
                    self.encode(enc, &item, depth + 1)?;
                }
                Ok(())
            });
        }
        enc.tag(tag::ARRAY);
        self.array_class(enc, np, obj)?;
        self.dtype(enc, &dtype)?;
        self.shape(enc, obj)?;
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

    /// The values of a Series or an Index: a NumPy dtype's array, or an
    /// extension array (categorical, nullable integers, dates with a time
    /// zone) by value.
    fn pandas_values(
        &self,
        enc: &mut Encoder,
        obj: &Bound<'py, PyAny>,
        depth: usize,
    ) -> PyResult<()> {
        let np = self.numpy();
        let dtype = obj.getattr("dtype")?;
        match np {
            Some(np) if dtype.is_instance(&np.dtype)? => {
                enc.tag(0);
                let values = obj.call_method0("to_numpy")?;
                self.array(enc, np, &values, depth)
            }
            _ => {
                enc.tag(1);
                enc.text(&dtype.str()?)?;
                self.encode(enc, &obj.getattr("array")?, depth + 1)
            }
        }
    }

    fn attrs(&self, enc: &mut Encoder, obj: &Bound<'py, PyAny>, depth: usize) -> PyResult<()> {
        match obj.getattr("attrs") {
            Ok(attrs) => self.encode(enc, &attrs, depth + 1),
            Err(_) => {
                enc.tag(tag::NONE);
                Ok(())
            }
        }
    }

    /// An Index: class, names, then a RangeIndex's start, stop and step, a
    /// MultiIndex's levels and codes, or the values.
    fn index(
        &self,
        enc: &mut Encoder,
        pd: &Pandas<'py>,
        obj: &Bound<'py, PyAny>,
        depth: usize,
    ) -> PyResult<()> {
        enc.tag(tag::PD_INDEX);
        self.reference(enc, obj.get_type().as_any())?;
        let names: Vec<Bound<'py, PyAny>> =
            obj.getattr("names")?.try_iter()?.collect::<PyResult<_>>()?;
        enc.len(names.len());
        for name in &names {
            self.encode(enc, name, depth + 1)?;
        }
        if obj.is_instance(&pd.range_index)? {
            for part in ["start", "stop", "step"] {
                self.encode(enc, &obj.getattr(part)?, depth + 1)?;
            }
        } else if obj.is_instance(&pd.multi_index)? {
            let levels: Vec<Bound<'py, PyAny>> = obj
                .getattr("levels")?
                .try_iter()?
                .collect::<PyResult<_>>()?;
            enc.len(levels.len());
            for level in &levels {
                self.index(enc, pd, level, depth + 1)?;
            }
            let np = self
                .numpy()
                .ok_or_else(|| PyTypeError::new_err("pandas without numpy"))?;
            for codes in obj.getattr("codes")?.try_iter()? {
                self.array(enc, np, &codes?, depth + 1)?;
            }
        } else {
            self.pandas_values(enc, obj, depth)?;
        }
        Ok(())
    }

    fn series(
        &self,
        enc: &mut Encoder,
        pd: &Pandas<'py>,
        obj: &Bound<'py, PyAny>,
        depth: usize,
    ) -> PyResult<()> {
        enc.tag(tag::PD_SERIES);
        self.reference(enc, obj.get_type().as_any())?;
        self.encode(enc, &obj.getattr("name")?, depth + 1)?;
        self.index(enc, pd, &obj.getattr("index")?, depth + 1)?;
        self.pandas_values(enc, obj, depth)?;
        self.attrs(enc, obj, depth)
    }

    /// A DataFrame: columns, index, then each column's dtype and values.
    fn frame(
        &self,
        enc: &mut Encoder,
        pd: &Pandas<'py>,
        obj: &Bound<'py, PyAny>,
        depth: usize,
    ) -> PyResult<()> {
        enc.tag(tag::PD_FRAME);
        self.reference(enc, obj.get_type().as_any())?;
        self.index(enc, pd, &obj.getattr("columns")?, depth + 1)?;
        self.index(enc, pd, &obj.getattr("index")?, depth + 1)?;
        // Columns of one NumPy dtype (a numeric table): sliced from one 2-D
        // array instead of a Series each, the same bytes as `items()`.
        let dtypes: Vec<Bound<'py, PyAny>> =
            obj.getattr("dtypes")?.call_method0("tolist")?.extract()?;
        if let (Some(np), Some(first)) = (self.numpy(), dtypes.first()) {
            if dtypes
                .iter()
                .all(|d| d.is_instance(&np.dtype).unwrap_or(false) && d.eq(first).unwrap_or(false))
            {
                let values = obj.call_method0("to_numpy")?;
                let all = pyo3::types::PySlice::full(self.py);
                enc.len(dtypes.len());
                for i in 0..dtypes.len() {
                    let column = values.get_item((&all, i))?;
                    enc.tag(0);
                    self.array(enc, np, &column, depth + 1)?;
                }
                return self.attrs(enc, obj, depth);
            }
        }
        let columns: Vec<Bound<'py, PyAny>> = obj
            .call_method0("items")?
            .try_iter()?
            .map(|item| item?.get_item(1))
            .collect::<PyResult<_>>()?;
        enc.len(columns.len());
        for column in &columns {
            self.pandas_values(enc, column, depth + 1)?;
        }
        self.attrs(enc, obj, depth)
    }
}

/// `Py_buffer`, laid out as CPython has since 3.3 (part of the stable ABI
/// from 3.11). PyO3 declares it for abi3 builds from 3.11 only; the
/// functions below are exported by every CPython 3 on Linux and macOS.
#[repr(C)]
pub(crate) struct RawBuffer {
    pub(crate) buf: *mut c_void,
    pub(crate) obj: *mut pyo3::ffi::PyObject,
    pub(crate) len: isize,
    pub(crate) itemsize: isize,
    pub(crate) readonly: c_int,
    pub(crate) ndim: c_int,
    pub(crate) format: *mut c_char,
    pub(crate) shape: *mut isize,
    pub(crate) strides: *mut isize,
    pub(crate) suboffsets: *mut isize,
    pub(crate) internal: *mut c_void,
}

impl RawBuffer {
    /// A view for `PyObject_GetBuffer` to fill.
    pub(crate) fn empty() -> Box<RawBuffer> {
        Box::new(RawBuffer {
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
        })
    }
}

unsafe extern "C" {
    pub(crate) fn PyObject_GetBuffer(
        obj: *mut pyo3::ffi::PyObject,
        view: *mut RawBuffer,
        flags: c_int,
    ) -> c_int;
    pub(crate) fn PyBuffer_Release(view: *mut RawBuffer);
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
        let mut view = RawBuffer::empty();
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
