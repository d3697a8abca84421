//! A Python result's bytes, between the Python half and memento's entries.
//!
//! The Python half (`python/memento/__init__.py`) pickles a result with
//! protocol 5: a bare pickle when it has no out-of-band buffers, else the
//! `MPYR` layout (a small table, the pickle, then each buffer raw, at an
//! offset that is a multiple of 64; see docs/ARCHITECTURE.md). Here:
//!
//! - [`assemble`]: the layout's parts (the head, then each buffer) are
//!   copied once, straight from the arrays' memory into the entry's
//!   payload, with the GIL released for large ones; the entry's payload
//!   starts at a file offset that is a multiple of 64, so the buffers are
//!   aligned in the file too, and can be memory-mapped.
//! - [`split`]: a head and one large buffer (a result holding one array
//!   of 1 MiB or more) are not joined at all: the buffer is written into
//!   the entry from the array's own memory (`Pending::store_split`).
//! - [`Payload`]: a large payload read on a hit is handed to Python without
//!   a copy: Python views its memory (through `ctypes`: a stable-ABI
//!   extension for CPython 3.9 cannot export the buffer protocol itself)
//!   and keeps this object alive for as long as any view of it lives.
//!   The memory is the hit's own, so the arrays viewing it are writable,
//!   as joblib's loaded arrays are.

use std::ffi::c_int;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyList;

use crate::hash::{PyBuffer_Release, PyObject_GetBuffer, RawBuffer};

/// Each part of a payload starts at a multiple of this.
pub(crate) const ALIGN: usize = 64;

/// Payloads at least this large are handed over as a [`Payload`] (no
/// copy); smaller ones are copied into a `bytes` or `bytearray`.
pub(crate) const LARGE: usize = 1 << 20;

/// `PyBUF_SIMPLE`: a contiguous run of bytes, read-only is fine.
const PYBUF_SIMPLE: c_int = 0;

/// A contiguous buffer of a Python object, released on drop (with the GIL
/// held: it never leaves the thread that holds it).
struct Contiguous<'a, 'py> {
    view: Box<RawBuffer>,
    _obj: &'a Bound<'py, PyAny>,
}

impl<'a, 'py> Contiguous<'a, 'py> {
    fn get(obj: &'a Bound<'py, PyAny>) -> PyResult<Contiguous<'a, 'py>> {
        let mut view = RawBuffer::empty();
        // SAFETY: `obj` is a live object; `view` is a writable Py_buffer.
        let rc = unsafe { PyObject_GetBuffer(obj.as_ptr(), &mut *view, PYBUF_SIMPLE) };
        if rc != 0 {
            return Err(PyErr::fetch(obj.py()));
        }
        Ok(Contiguous { view, _obj: obj })
    }

    fn bytes(&self) -> &[u8] {
        if self.view.len <= 0 || self.view.buf.is_null() {
            return &[];
        }
        // SAFETY: a PyBUF_SIMPLE view is `len` contiguous bytes from `buf`,
        // valid until it is released (when `self` drops).
        unsafe { std::slice::from_raw_parts(self.view.buf as *const u8, self.view.len as usize) }
    }
}

impl Drop for Contiguous<'_, '_> {
    fn drop(&mut self) {
        // SAFETY: filled by a successful PyObject_GetBuffer, released once,
        // with the GIL held (the type is not Send).
        unsafe { PyBuffer_Release(&mut *self.view) };
    }
}

/// `len` zero bytes. Large ones are backed by huge pages where the kernel
/// allows (Linux's `MADV_HUGEPAGE`, as numpy does for its arrays): filling
/// 100 MiB then takes 50 page faults instead of 25,600, which is most of
/// the time of reading a large result into memory.
/// The memory comes zeroed from the allocator (`calloc`: fresh pages,
/// untouched), so the advice applies before any page is faulted in. For
/// a hit's payload only: see [`assemble`].
pub(crate) fn zeroed(len: usize) -> Vec<u8> {
    // The core's allocation (one place for the huge-page advice).
    memento::__private::zeroed_bytes(len)
}

/// The next multiple of [`ALIGN`] from `n`.
pub(crate) fn align(n: usize) -> usize {
    n.div_ceil(ALIGN) * ALIGN
}

/// A borrowed run of bytes sent to a thread without the GIL.
struct Run(*const u8, usize);

// SAFETY: the memory stays valid while the `Contiguous` it comes from is
// held, and every `Contiguous` outlives the `detach` that uses the runs;
// the memory is only read.
unsafe impl Send for Run {}

impl Run {
    /// The bytes.
    ///
    /// # Safety
    /// The memory must still be held (see `Run`).
    unsafe fn bytes(&self) -> &[u8] {
        // SAFETY: the caller's promise.
        unsafe { std::slice::from_raw_parts(self.0, self.1) }
    }
}

/// The payload of a result from its parts: each part (a bytes-like object
/// with a contiguous buffer) at the next multiple of [`ALIGN`] after the
/// previous one's end (the first at 0), zeros between them.
pub(crate) fn assemble(py: Python<'_>, parts: &Bound<'_, PyList>) -> PyResult<Vec<u8>> {
    let items: Vec<Bound<'_, PyAny>> = parts.iter().collect();
    let views = items
        .iter()
        .map(Contiguous::get)
        .collect::<PyResult<Vec<_>>>()?;
    let runs: Vec<Run> = views
        .iter()
        .map(|v| {
            let b = v.bytes();
            Run(b.as_ptr(), b.len())
        })
        .collect();
    let mut total = 0usize;
    for run in &runs {
        total = align(total)
            .checked_add(run.1)
            .ok_or_else(|| PyValueError::new_err("a result too large for this machine"))?;
    }
    // Not in huge pages (unlike a hit's payload, see `zeroed`): measured
    // here, a 100 MiB miss laid out in them took 0.9 s instead of 0.26 s,
    // the time going to the write of the entry that follows.
    let build = move || {
        let mut out = Vec::with_capacity(total);
        for Run(ptr, len) in runs {
            out.resize(align(out.len()), 0);
            // SAFETY: see `Run`.
            out.extend_from_slice(unsafe { std::slice::from_raw_parts(ptr, len) });
        }
        out
    };
    let out = if total >= LARGE {
        py.detach(build)
    } else {
        build()
    };
    drop(views);
    Ok(out)
}

/// Is `parts` a head and one large buffer (at least [`LARGE`]), which
/// [`split`] stores without joining them?
pub(crate) fn splits(parts: &Bound<'_, PyList>) -> PyResult<bool> {
    if parts.len() != 2 {
        return Ok(false);
    }
    let buffer = parts.get_item(1)?;
    let len = Contiguous::get(&buffer)?.bytes().len();
    Ok(len >= LARGE)
}

/// The payload's length of a head and one buffer.
pub(crate) fn split_len(parts: &Bound<'_, PyList>) -> PyResult<usize> {
    let (head, buffer) = (parts.get_item(0)?, parts.get_item(1)?);
    let head = Contiguous::get(&head)?.bytes().len();
    let buffer = Contiguous::get(&buffer)?.bytes().len();
    Ok(align(head) + buffer)
}

/// Calls `store` with the payload of `parts` (a head and one buffer, as
/// [`splits`] says) in two pieces, with the GIL released: the head padded
/// with zeros to the next multiple of [`ALIGN`] (where the buffer starts
/// in the layout), then the buffer's own memory, not copied (the miss of
/// a large array writes it straight into the entry; joined first, 100 MiB
/// took about 100 ms more here).
pub(crate) fn split<R: Send>(
    py: Python<'_>,
    parts: &Bound<'_, PyList>,
    store: impl FnOnce(&[u8], &[u8]) -> R + Send,
) -> PyResult<R> {
    let (head, buffer) = (parts.get_item(0)?, parts.get_item(1)?);
    let (head, buffer) = (Contiguous::get(&head)?, Contiguous::get(&buffer)?);
    let mut padded = head.bytes().to_vec();
    padded.resize(align(padded.len()), 0);
    let tail = Run(buffer.bytes().as_ptr(), buffer.bytes().len());
    let out = py.detach(move || {
        // SAFETY: see `Run`; `buffer` is held until after this call.
        store(&padded, unsafe { tail.bytes() })
    });
    drop(buffer);
    Ok(out)
}

/// A large payload read on a hit, owned here and viewed from Python
/// without a copy: `address` and `len()` describe its memory, which lives
/// as long as this object. Python's views write into it (the arrays are
/// writable); Rust never reads it again, it only frees it.
#[pyclass(frozen, name = "Payload", module = "memento._memento")]
pub(crate) struct Payload {
    ptr: Owned,
    len: usize,
    cap: usize,
}

/// The payload's memory: a `Vec<u8>`'s parts, freed on drop.
struct Owned(*mut u8);

// SAFETY: the memory is owned by the Payload alone (no Rust reference to
// it exists after `new`); Python's views of it are synchronised by the GIL
// as any buffer is.
unsafe impl Send for Owned {}
unsafe impl Sync for Owned {}

impl Payload {
    pub(crate) fn new(bytes: Vec<u8>) -> Payload {
        let mut bytes = std::mem::ManuallyDrop::new(bytes);
        Payload {
            ptr: Owned(bytes.as_mut_ptr()),
            len: bytes.len(),
            cap: bytes.capacity(),
        }
    }
}

impl Drop for Payload {
    fn drop(&mut self) {
        // SAFETY: the parts of a Vec<u8> taken apart in `new`, rebuilt once.
        drop(unsafe { Vec::from_raw_parts(self.ptr.0, self.len, self.cap) });
    }
}

#[pymethods]
impl Payload {
    /// The address of the first byte.
    #[getter]
    fn address(&self) -> usize {
        self.ptr.0 as usize
    }

    fn __len__(&self) -> usize {
        self.len
    }

    fn __repr__(&self) -> String {
        format!("<memento Payload of {} bytes>", self.len)
    }
}
