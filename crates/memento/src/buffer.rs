//! Plain buffers: arrays of numbers hashed and stored as the bytes they are.
//!
//! A `Vec<f64>` of 100 MiB serialized element by element costs far more
//! than the memory it sits in. This module gives such *plain buffers*
//! (`Vec<P>`, `&[P]`, `Box<[P]>`, `[P; N]` and, with the `ndarray` feature,
//! `ndarray` arrays and views, where `P` is one of the [`Element`] types)
//! two fast paths:
//!
//! - **Keys.** `#[memento::cache]` picks, at compile time, [`BufferKey`] for
//!   an argument whose type is a plain buffer: the element type, the shape
//!   and the little-endian bytes of the elements in logical (row-major)
//!   order go to the key's hasher in place, multi-threaded above
//!   [`PARALLEL_HASH`] bytes (feature `parallel`, on by default). A
//!   non-contiguous view hashes like its contiguous copy, and an owned
//!   array, a view and a [`Mapped`](crate::Mapped) array with equal elements
//!   and shape hash alike. Other arguments go through serde as before; which
//!   of the two an argument takes depends only on its type, so a function's
//!   keys never mix them.
//! - **Stored results.** A result of one of the types [`is_stored_buffer`]
//!   accepts is stored as the raw element bytes after a small descriptor
//!   (codec [`CODEC_BUFFER`](crate::codec::CODEC_BUFFER)), aligned so that
//!   it can be read in one go or memory-mapped.
//!
//! ```
//! use memento::buffer::BufferKey;
//! use memento::Key;
//!
//! let owned = vec![1.0f64, 2.0, 3.0];
//! let slice: &[f64] = &owned;
//! // The same elements hash alike whatever holds them...
//! assert_eq!(Key::of(&BufferKey(&owned)), Key::of(&BufferKey(&slice)));
//! // ...and the element type is part of the key.
//! let floats = vec![1.0f32, 2.0, 3.0];
//! assert_ne!(Key::of(&BufferKey(&owned)), Key::of(&BufferKey(&floats)));
//! ```

use std::any::{Any, TypeId};
use std::borrow::Cow;

use serde::ser::{Serialize, SerializeTuple, Serializer};

/// Above this many bytes the key hasher uses every core (feature
/// `parallel`): below it, starting threads costs more than it saves.
pub const PARALLEL_HASH: usize = 256 * 1024;

mod sealed {
    /// Seals [`Element`](super::Element).
    pub trait Sealed {}
    /// Seals [`StoredBuffer`](super::StoredBuffer): memento stores exactly
    /// the types it knows (see [`is_stored_buffer`](super::is_stored_buffer)),
    /// and `Mapped` relies on their `contiguous` and `from_elements` being
    /// right.
    pub trait SealedBuffer {}
}

/// A number type whose arrays are plain buffers: fixed size, any bit
/// pattern valid, stored little-endian.
///
/// Every `Element` is [`bytemuck::Pod`]: the casts between elements and
/// their bytes are checked by bytemuck rather than written by hand.
pub trait Element:
    bytemuck::Pod
    + Send
    + Sync
    + serde::Serialize
    + serde::de::DeserializeOwned
    + 'static
    + sealed::Sealed
{
    /// The name hashed into keys and written into stored buffers.
    const NAME: &'static str;
    /// The tag of the element type in a stored buffer's descriptor.
    const TAG: u8;
}

macro_rules! elements {
    ($($t:ty => $tag:expr),* $(,)?) => {$(
        impl sealed::Sealed for $t {}
        impl Element for $t {
            const NAME: &'static str = stringify!($t);
            const TAG: u8 = $tag;
        }
    )*};
}

elements! {
    u8 => 1, u16 => 2, u32 => 3, u64 => 4,
    i8 => 5, i16 => 6, i32 => 7, i64 => 8,
    f32 => 9, f64 => 10,
}

/// The elements' bytes, little-endian, borrowed where the machine is
/// little-endian.
pub(crate) fn le_bytes<P: Element>(elements: &[P]) -> Cow<'_, [u8]> {
    #[cfg(target_endian = "little")]
    {
        Cow::Borrowed(bytemuck::cast_slice(elements))
    }
    #[cfg(target_endian = "big")]
    {
        let mut out = Vec::with_capacity(std::mem::size_of_val(elements));
        for e in elements {
            out.extend(bytemuck::bytes_of(e).iter().rev());
        }
        Cow::Owned(out)
    }
}

/// A value that is a plain buffer: elements of one [`Element`] type in a
/// shape. Implemented for `Vec<P>`, `[P]`, `Box<[P]>`, `[P; N]`,
/// references to those, and (feature `ndarray`) every `ndarray` array.
pub trait KeyBuffer {
    /// The element type's name.
    fn element(&self) -> &'static str;
    /// Calls `f` with the shape and the little-endian bytes of the elements
    /// in logical (row-major) order; a non-contiguous array is copied.
    fn with_bytes<R>(&self, f: impl FnOnce(&[u64], &[u8]) -> R) -> R;
}

impl<P: Element> KeyBuffer for [P] {
    fn element(&self) -> &'static str {
        P::NAME
    }
    fn with_bytes<R>(&self, f: impl FnOnce(&[u64], &[u8]) -> R) -> R {
        f(&[self.len() as u64], &le_bytes(self))
    }
}

impl<P: Element> KeyBuffer for Vec<P> {
    fn element(&self) -> &'static str {
        P::NAME
    }
    fn with_bytes<R>(&self, f: impl FnOnce(&[u64], &[u8]) -> R) -> R {
        self.as_slice().with_bytes(f)
    }
}

impl<P: Element> KeyBuffer for Box<[P]> {
    fn element(&self) -> &'static str {
        P::NAME
    }
    fn with_bytes<R>(&self, f: impl FnOnce(&[u64], &[u8]) -> R) -> R {
        (**self).with_bytes(f)
    }
}

impl<P: Element, const N: usize> KeyBuffer for [P; N] {
    fn element(&self) -> &'static str {
        P::NAME
    }
    fn with_bytes<R>(&self, f: impl FnOnce(&[u64], &[u8]) -> R) -> R {
        self.as_slice().with_bytes(f)
    }
}

impl<B: KeyBuffer + ?Sized> KeyBuffer for &B {
    fn element(&self) -> &'static str {
        (**self).element()
    }
    fn with_bytes<R>(&self, f: impl FnOnce(&[u64], &[u8]) -> R) -> R {
        (**self).with_bytes(f)
    }
}

#[cfg(feature = "ndarray")]
impl<P, S, D> KeyBuffer for ndarray::ArrayBase<S, D>
where
    P: Element,
    S: ndarray::Data<Elem = P>,
    D: ndarray::Dimension,
{
    fn element(&self) -> &'static str {
        P::NAME
    }
    fn with_bytes<R>(&self, f: impl FnOnce(&[u64], &[u8]) -> R) -> R {
        let shape: Vec<u64> = self.shape().iter().map(|&n| n as u64).collect();
        let standard = self.as_standard_layout();
        let elements = standard
            .as_slice()
            .expect("an array in standard layout is contiguous");
        f(&shape, &le_bytes(elements))
    }
}

/// The key form of a plain buffer: serializes as the newtype struct
/// `memento::Buffer` around (element name, shape, bytes), the bytes as one
/// byte string, so the key's serializer hashes them in place.
#[repr(transparent)]
pub struct BufferKey<B: ?Sized>(pub B);

impl<B: ?Sized> BufferKey<B> {
    /// The key form of a borrowed buffer.
    pub fn of(buffer: &B) -> &BufferKey<B> {
        // SAFETY: `BufferKey` is `repr(transparent)` over `B`.
        unsafe { &*(buffer as *const B as *const BufferKey<B>) }
    }
}

impl<B: KeyBuffer + ?Sized> Serialize for BufferKey<B> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct Parts<'p> {
            element: &'static str,
            shape: &'p [u64],
            bytes: &'p [u8],
        }
        struct Bytes<'p>(&'p [u8]);
        impl Serialize for Bytes<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(self.0)
            }
        }
        impl Serialize for Parts<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut t = s.serialize_tuple(3)?;
                t.serialize_element(self.element)?;
                t.serialize_element(self.shape)?;
                t.serialize_element(&Bytes(self.bytes))?;
                t.end()
            }
        }
        let element = self.0.element();
        self.0.with_bytes(|shape, bytes| {
            serializer.serialize_newtype_struct(
                "memento::Buffer",
                &Parts {
                    element,
                    shape,
                    bytes,
                },
            )
        })
    }
}

/// How `#[memento::cache]` picks the key form of an argument at compile
/// time (autoref specialization): `(&Probe(&arg)).key_arg()` finds
/// [`ViaBuffer`] first when the argument is a plain buffer, else
/// [`ViaSerde`].
#[doc(hidden)]
pub struct Probe<'a, T: ?Sized>(pub &'a T);

#[doc(hidden)]
pub trait ViaBuffer<'a, T: ?Sized> {
    fn key_arg(&self) -> &'a BufferKey<T>;
}

impl<'a, T: KeyBuffer + ?Sized> ViaBuffer<'a, T> for Probe<'a, T> {
    #[inline(always)]
    fn key_arg(&self) -> &'a BufferKey<T> {
        BufferKey::of(self.0)
    }
}

#[doc(hidden)]
pub trait ViaSerde<'a, T: ?Sized> {
    fn key_arg(&self) -> &'a T;
}

impl<'a, T: ?Sized> ViaSerde<'a, T> for &Probe<'a, T> {
    #[inline(always)]
    fn key_arg(&self) -> &'a T {
        self.0
    }
}

// ---------------------------------------------------------------------
// Stored results.
//
// Payload of a buffer entry (codec `CODEC_BUFFER`, after the 96-byte
// header):
//
// | bytes            | field                                         |
// |------------------|-----------------------------------------------|
// | 0                | element tag ([`Element::TAG`])                |
// | 1                | number of dimensions `n` (at most 32)         |
// | 2..8             | zero                                          |
// | 8..8+8n          | the shape, `u64` little-endian each           |
// | ..data           | zero, so that the data starts at a file offset that is a multiple of 64 |
// | data..           | the elements, little-endian, row-major        |

/// Most dimensions a stored buffer may have (ndarray's `IxDyn` has no
/// limit; 32 keeps a hostile descriptor small).
pub const MAX_DIMS: usize = 32;

/// Data starts at a file offset that is a multiple of this.
pub const DATA_ALIGN: usize = 64;

/// A result type stored as a plain buffer. Which types are stored so is
/// decided by [`is_stored_buffer`]; this trait says how. It is sealed:
/// implemented for exactly those types (`Vec<P>`, `Box<[P]>` and, with
/// the `ndarray` feature, `ndarray::Array<P, D>`), whose `contiguous`,
/// `elements` and `from_elements` [`Mapped`](crate::Mapped) and the codec
/// rely on. A type of one's own cannot implement it:
///
/// ```compile_fail,E0277
/// use memento::buffer::StoredBuffer;
///
/// struct Samples(Vec<f64>);
///
/// impl StoredBuffer for Samples {
///     type Elem = f64;
///     const DIMS: Option<usize> = Some(1);
///     fn shape(&self) -> Vec<u64> {
///         vec![self.0.len() as u64]
///     }
///     fn contiguous(&self) -> Option<&[f64]> {
///         Some(&self.0)
///     }
///     fn serialize_parts<S: serde::Serializer>(
///         _: &[u64],
///         e: &[f64],
///         s: S,
///     ) -> Result<S::Ok, S::Error> {
///         serde::Serialize::serialize(e, s)
///     }
///     fn from_elements(_: &[u64], e: Vec<f64>) -> Result<Self, String> {
///         Ok(Samples(e))
///     }
/// }
/// ```
pub trait StoredBuffer: Sized + 'static + sealed::SealedBuffer {
    /// The element type.
    type Elem: Element;
    /// Dimensions: `Some(n)` for a fixed number, `None` for any.
    const DIMS: Option<usize>;
    /// The shape.
    fn shape(&self) -> Vec<u64>;
    /// The elements when they are row-major and contiguous in memory.
    fn contiguous(&self) -> Option<&[Self::Elem]>;
    /// The elements, row-major and contiguous (copied if they are not).
    fn elements(&self) -> Cow<'_, [Self::Elem]> {
        Cow::Borrowed(self.contiguous().expect("contiguous unless overridden"))
    }
    /// Serializes a value of this type given as its shape and row-major
    /// elements, exactly as the type's own `Serialize` would.
    fn serialize_parts<S: Serializer>(
        shape: &[u64],
        elements: &[Self::Elem],
        serializer: S,
    ) -> Result<S::Ok, S::Error>;
    /// The value from its shape and elements (`elements.len()` is the
    /// product of `shape`).
    fn from_elements(shape: &[u64], elements: Vec<Self::Elem>) -> Result<Self, String>;
}

impl<P: Element> sealed::SealedBuffer for Vec<P> {}
impl<P: Element> sealed::SealedBuffer for Box<[P]> {}
#[cfg(feature = "ndarray")]
impl<P: Element, D: ndarray::Dimension + serde::Serialize + 'static> sealed::SealedBuffer
    for ndarray::Array<P, D>
{
}

impl<P: Element> StoredBuffer for Vec<P> {
    type Elem = P;
    const DIMS: Option<usize> = Some(1);
    fn shape(&self) -> Vec<u64> {
        vec![self.len() as u64]
    }
    fn contiguous(&self) -> Option<&[P]> {
        Some(self)
    }
    fn from_elements(_: &[u64], elements: Vec<P>) -> Result<Self, String> {
        Ok(elements)
    }
    fn serialize_parts<S: Serializer>(_: &[u64], e: &[P], s: S) -> Result<S::Ok, S::Error> {
        e.serialize(s)
    }
}

impl<P: Element> StoredBuffer for Box<[P]> {
    type Elem = P;
    const DIMS: Option<usize> = Some(1);
    fn shape(&self) -> Vec<u64> {
        vec![self.len() as u64]
    }
    fn contiguous(&self) -> Option<&[P]> {
        Some(self)
    }
    fn from_elements(_: &[u64], elements: Vec<P>) -> Result<Self, String> {
        Ok(elements.into_boxed_slice())
    }
    fn serialize_parts<S: Serializer>(_: &[u64], e: &[P], s: S) -> Result<S::Ok, S::Error> {
        e.serialize(s)
    }
}

#[cfg(feature = "ndarray")]
impl<P: Element, D: ndarray::Dimension + serde::Serialize + 'static> StoredBuffer
    for ndarray::Array<P, D>
{
    type Elem = P;
    const DIMS: Option<usize> = D::NDIM;
    fn shape(&self) -> Vec<u64> {
        self.shape().iter().map(|&n| n as u64).collect()
    }
    fn elements(&self) -> Cow<'_, [P]> {
        match self.as_slice() {
            Some(s) => Cow::Borrowed(s),
            None => Cow::Owned(self.iter().copied().collect()),
        }
    }
    fn contiguous(&self) -> Option<&[P]> {
        self.as_slice()
    }
    fn serialize_parts<S: Serializer>(shape: &[u64], e: &[P], s: S) -> Result<S::Ok, S::Error> {
        let view = array_view::<P, D>(shape, e).map_err(serde::ser::Error::custom)?;
        view.serialize(s)
    }
    fn from_elements(shape: &[u64], elements: Vec<P>) -> Result<Self, String> {
        ndarray::Array::from_shape_vec(dim_of::<D>(shape)?, elements).map_err(|e| e.to_string())
    }
}

/// The ndarray dimension of a stored shape.
#[cfg(feature = "ndarray")]
fn dim_of<D: ndarray::Dimension>(shape: &[u64]) -> Result<D, String> {
    let shape: Vec<usize> = shape
        .iter()
        .map(|&n| usize::try_from(n).map_err(|_| "a dimension too large".to_string()))
        .collect::<Result<_, _>>()?;
    D::from_dimension(&ndarray::IxDyn(&shape))
        .ok_or_else(|| format!("a {}-dimensional array is stored", shape.len()))
}

/// A view of row-major `elements` in `shape`.
#[cfg(feature = "ndarray")]
pub(crate) fn array_view<'a, P: Element, D: ndarray::Dimension>(
    shape: &[u64],
    elements: &'a [P],
) -> Result<ndarray::ArrayView<'a, P, D>, String> {
    ndarray::ArrayView::from_shape(dim_of::<D>(shape)?, elements).map_err(|e| e.to_string())
}

/// Where the data of a buffer payload with `dims` dimensions starts,
/// relative to the payload (which starts at file offset `Header::LEN`).
pub(crate) fn data_offset(dims: usize) -> usize {
    let descriptor = crate::codec::Header::LEN + 8 + 8 * dims;
    descriptor.div_ceil(DATA_ALIGN) * DATA_ALIGN - crate::codec::Header::LEN
}

/// Appends the payload of `value` to `out`.
pub(crate) fn encode<B: StoredBuffer>(value: &B, out: &mut Vec<u8>) {
    encode_parts::<B::Elem>(&value.shape(), &value.elements(), out);
}

/// Appends the payload of `elements` in `shape` to `out`.
pub(crate) fn encode_parts<P: Element>(shape: &[u64], elements: &[P], out: &mut Vec<u8>) {
    let bytes = le_bytes(elements);
    out.reserve(data_offset(shape.len()) + bytes.len());
    #[cfg(target_os = "linux")]
    advise_huge_pages(
        out.spare_capacity_mut().as_mut_ptr().cast(),
        data_offset(shape.len()) + bytes.len(),
    );
    write_descriptor(P::TAG, shape, out);
    out.extend_from_slice(&bytes);
}

/// Appends the descriptor of a buffer payload (up to its data) to `out`.
pub(crate) fn write_descriptor(tag: u8, shape: &[u64], out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[tag, shape.len() as u8, 0, 0, 0, 0, 0, 0]);
    for n in shape {
        out.extend_from_slice(&n.to_le_bytes());
    }
    out.resize(start + data_offset(shape.len()), 0);
}

/// A stored buffer's parts, its data borrowed from the value itself: what
/// a large result is written from, without a copy.
pub(crate) struct Parts<'a> {
    pub(crate) tag: u8,
    pub(crate) shape: Vec<u64>,
    /// The elements' little-endian bytes.
    pub(crate) data: &'a [u8],
}

/// The parts of `value` when its elements are contiguous and already
/// little-endian in memory.
fn parts_of<B: StoredBuffer>(value: &B) -> Option<Parts<'_>> {
    let elements = value.contiguous()?;
    match le_bytes(elements) {
        Cow::Borrowed(data) => Some(Parts {
            tag: B::Elem::TAG,
            shape: value.shape(),
            data,
        }),
        Cow::Owned(_) => None,
    }
}

/// What the descriptor of a buffer payload says.
pub(crate) struct Layout {
    pub(crate) shape: Vec<u64>,
    /// Data offset in the payload.
    pub(crate) offset: usize,
    /// Number of elements.
    pub(crate) count: usize,
}

/// Reads and checks the descriptor of a buffer payload of `payload_len`
/// bytes that `head` starts (at least its descriptor) for a `B`.
pub(crate) fn layout<B: StoredBuffer>(head: &[u8], payload_len: u64) -> Result<Layout, String> {
    let [tag, dims, ..] = *head else {
        return Err("no buffer descriptor".into());
    };
    if tag != B::Elem::TAG {
        return Err(format!(
            "a buffer of element tag {tag} is stored, {} ({}) expected",
            B::Elem::TAG,
            B::Elem::NAME
        ));
    }
    let dims = dims as usize;
    if dims > MAX_DIMS || B::DIMS.is_some_and(|n| n != dims) {
        return Err(format!("a {dims}-dimensional buffer is stored"));
    }
    if head.len() < 8 + 8 * dims || head[2..8] != [0; 6] {
        return Err("a damaged buffer descriptor".into());
    }
    let shape: Vec<u64> = head[8..8 + 8 * dims]
        .chunks_exact(8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
        .collect();
    let offset = data_offset(dims);
    let count = shape
        .iter()
        .try_fold(1u64, |acc, &n| acc.checked_mul(n))
        .ok_or("a buffer shape that overflows")?;
    let size = std::mem::size_of::<B::Elem>() as u64;
    let expected = count
        .checked_mul(size)
        .and_then(|n| n.checked_add(offset as u64))
        .ok_or("a buffer shape that overflows")?;
    if expected != payload_len {
        return Err(format!(
            "a buffer payload of {payload_len} bytes, {expected} expected from its shape"
        ));
    }
    if head.len() >= offset && head[8 + 8 * dims..offset].iter().any(|&b| b != 0) {
        return Err("a damaged buffer descriptor".into());
    }
    let count = usize::try_from(count).map_err(|_| "a buffer too large for this machine")?;
    Ok(Layout {
        shape,
        offset,
        count,
    })
}

/// A new vector of `count` zero elements, whose bytes the caller then
/// fills. The allocation is zeroed by the allocator (`calloc`), which for
/// a large vector means fresh pages from the kernel, already zero: no
/// pass over the memory, so it costs what an uninitialised one would.
/// Large vectors ask the kernel for huge pages (as numpy does) before they
/// are first touched, which halves the cost of touching them.
pub(crate) fn zeroed_elements<P: Element>(count: usize) -> Vec<P> {
    #[allow(unused_mut)]
    let mut v: Vec<P> = bytemuck::zeroed_vec(count);
    #[cfg(target_os = "linux")]
    advise_huge_pages(v.as_mut_ptr().cast(), std::mem::size_of_val(&v[..]));
    v
}

#[cfg(target_os = "linux")]
fn advise_huge_pages(ptr: *mut u8, len: usize) {
    const HUGE: usize = 2 * 1024 * 1024;
    if len < 4 * HUGE {
        return;
    }
    let start = (ptr as usize).div_ceil(HUGE) * HUGE;
    let end = (ptr as usize + len) / HUGE * HUGE;
    if end > start {
        // SAFETY: the range lies inside the allocation; MADV_HUGEPAGE only
        // changes how the kernel backs it.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
        }
    }
}

/// The bytes of `elements`, to be filled with their little-endian form.
pub(crate) fn bytes_mut<P: Element>(elements: &mut [P]) -> &mut [u8] {
    bytemuck::cast_slice_mut(elements)
}

/// Turns elements just filled with little-endian bytes into native ones.
pub(crate) fn from_le_in_place<P: Element>(elements: &mut [P]) {
    #[cfg(target_endian = "big")]
    for e in elements.iter_mut() {
        let b = bytes_mut(std::slice::from_mut(e));
        b.reverse();
    }
    #[cfg(target_endian = "little")]
    let _ = elements;
}

/// Decodes a whole buffer payload (descriptor and data).
pub(crate) fn decode<B: StoredBuffer>(payload: &[u8]) -> Result<B, String> {
    let layout = layout::<B>(payload, payload.len() as u64)?;
    let data = payload
        .get(layout.offset..)
        .ok_or("a damaged buffer descriptor")?;
    let mut elements = zeroed_elements::<B::Elem>(layout.count);
    bytes_mut(&mut elements).copy_from_slice(data);
    from_le_in_place(&mut elements);
    B::from_elements(&layout.shape, elements)
}

/// Entries at least this large are read straight into their array instead
/// of through a byte buffer.
pub(crate) const LARGE_READ: u64 = 1024 * 1024;

/// Why a large buffer could not be read.
pub(crate) enum ReadError {
    Io(std::io::Error),
    Damage(String),
}

/// Reads `dst.len()` bytes at `offset`.
pub(crate) fn read_at(file: &std::fs::File, dst: &mut [u8], offset: u64) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileExt;
        file.read_exact_at(dst, offset)
    }
    #[cfg(not(unix))]
    {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = file;
        f.seek(SeekFrom::Start(offset))?;
        f.read_exact(dst)
    }
}

/// Reads `dst` from `file` at `offset` and feeds it to `hasher`: large
/// reads in pieces on a thread of their own, hashed here as they arrive,
/// so that reading and hashing overlap.
fn read_hashing(
    file: &std::fs::File,
    offset: u64,
    dst: &mut [u8],
    hasher: &mut blake3::Hasher,
) -> std::io::Result<()> {
    const PIECE: usize = 4 * 1024 * 1024;
    if dst.len() < 4 * PIECE {
        read_at(file, dst, offset)?;
        crate::codec::update(hasher, dst);
        return Ok(());
    }
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<&[u8]>(4);
        let reader = scope.spawn(move || -> std::io::Result<()> {
            let mut at = offset;
            for piece in dst.chunks_mut(PIECE) {
                read_at(file, piece, at)?;
                at += piece.len() as u64;
                if tx.send(&*piece).is_err() {
                    break;
                }
            }
            Ok(())
        });
        for piece in rx {
            hasher.update(piece);
        }
        reader
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the reading thread panicked")))
    })
}

/// Reads a large buffer entry straight into a new `B`, feeding the
/// payload and the info after it to `hasher` on the way (the caller checks
/// the checksum before using the value).
pub(crate) fn read_file<B: StoredBuffer>(
    entry: &FileEntry<'_>,
    hasher: &mut blake3::Hasher,
) -> Result<B, ReadError> {
    let header = entry.header;
    let layout = layout::<B>(entry.descriptor, header.payload_len()).map_err(ReadError::Damage)?;
    let descriptor = entry
        .descriptor
        .get(..layout.offset)
        .ok_or_else(|| ReadError::Damage("a damaged buffer descriptor".into()))?;
    hasher.update(descriptor);
    let mut elements = zeroed_elements::<B::Elem>(layout.count);
    let data_at = header.payload_range().start + layout.offset as u64;
    read_hashing(entry.file, data_at, bytes_mut(&mut elements), hasher).map_err(ReadError::Io)?;
    // The info after the payload (the header was checked against the
    // file's length).
    let info_at = header.info_range();
    let mut info = vec![0u8; (info_at.end - info_at.start) as usize];
    read_at(entry.file, &mut info, info_at.start).map_err(ReadError::Io)?;
    hasher.update(&info);
    from_le_in_place(&mut elements);
    B::from_elements(&layout.shape, elements).map_err(ReadError::Damage)
}

/// A large or mapped entry opened as a local file, its header checked
/// against the key, the file's length and the signing state.
pub(crate) struct FileEntry<'a> {
    pub(crate) file: &'a std::fs::File,
    pub(crate) header: &'a crate::codec::Header,
    /// The bytes read after the header: the buffer's descriptor (at least;
    /// fewer when the file is short).
    pub(crate) descriptor: &'a [u8],
    /// The file's length.
    pub(crate) len: u64,
    pub(crate) signer: Option<&'a crate::codec::Signer>,
    /// With a signer: map the entry anyway (see
    /// [`Memory::map_signed`](crate::Memory::map_signed)). Otherwise a
    /// signed entry asked for as a `Mapped` is read into memory, so that
    /// the value checked is the value used.
    pub(crate) map_signed: bool,
    /// The entry's file, for a mapped value to remove if it is damaged.
    pub(crate) path: Option<std::path::PathBuf>,
}

/// Whether the payload's checksum was computed on the way (the caller
/// compares it) or is left to the value (a map verifies when touched).
pub(crate) enum Checked {
    Now,
    Deferred,
}

/// A stored buffer type's operations, type-erased so that the codec can
/// pick them for a result type `T` at run time (by `TypeId`, which the
/// compiler folds away).
#[derive(Clone, Copy)]
pub(crate) struct Ops {
    pub(crate) encode: fn(&dyn Any, &mut Vec<u8>) -> Result<(), String>,
    pub(crate) decode: fn(&[u8], &mut dyn Any) -> Result<(), String>,
    pub(crate) read_file: ReadFile,
    pub(crate) parts: fn(&dyn Any) -> Option<Parts<'_>>,
    /// A [`Mapped`](crate::Mapped) type: stored entries are mapped, not read.
    pub(crate) mapped: bool,
}

type ReadFile = fn(FileEntry<'_>, &mut blake3::Hasher, &mut dyn Any) -> Result<Checked, ReadError>;

fn put<V: 'static>(out: &mut dyn Any, value: V) -> Result<(), String> {
    let slot = out
        .downcast_mut::<Option<V>>()
        .ok_or("internal: a buffer decoded for another type")?;
    *slot = Some(value);
    Ok(())
}

impl Ops {
    fn of<B: StoredBuffer>() -> Ops {
        Ops {
            encode: |value, out| {
                let v = value.downcast_ref::<B>().ok_or("internal: not a buffer")?;
                encode(v, out);
                Ok(())
            },
            decode: |payload, out| put(out, decode::<B>(payload)?),
            read_file: |entry, hasher, out| {
                let value = read_file::<B>(&entry, hasher)?;
                put(out, value).map_err(ReadError::Damage)?;
                Ok(Checked::Now)
            },
            parts: |value| parts_of(value.downcast_ref::<B>()?),
            mapped: false,
        }
    }

    fn mapped<B: StoredBuffer>() -> Ops {
        Ops {
            encode: |value, out| {
                let v = value
                    .downcast_ref::<crate::Mapped<B>>()
                    .ok_or("internal: not a mapped buffer")?;
                let elements = v.try_elements().map_err(|e| e.to_string())?;
                let shape: Vec<u64> = v.shape().iter().map(|&n| n as u64).collect();
                encode_parts(&shape, elements, out);
                Ok(())
            },
            decode: |payload, out| put(out, crate::Mapped::from(decode::<B>(payload)?)),
            read_file: |entry, hasher, out| {
                if entry.signer.is_some() && !entry.map_signed {
                    // A signature promises that the value checked is the
                    // value used: a map could change under it (another
                    // writer rewriting the file in place), so the entry
                    // is read into memory and checked now.
                    let value = read_file::<B>(&entry, hasher)?;
                    put(out, crate::Mapped::from(value)).map_err(ReadError::Damage)?;
                    return Ok(Checked::Now);
                }
                let layout = layout::<B>(entry.descriptor, entry.header.payload_len())
                    .map_err(ReadError::Damage)?;
                // SAFETY: memmap2 maps are unsafe because the file may
                // change under them. memento never writes into a published
                // entry (a write goes to a new file that replaces it), but
                // another process may: the guarantees that remain are in
                // `Mapped`'s docs (a truncation raises SIGBUS when the lost
                // pages are touched; a rewrite changes the elements, which
                // are plain numbers, so no invalid value arises).
                let map = unsafe { memmap2::Mmap::map(entry.file) }.map_err(ReadError::Io)?;
                if map.len() as u64 != entry.len {
                    return Err(ReadError::Damage("the entry changed while mapped".into()));
                }
                let value = crate::Mapped::<B>::map(
                    map,
                    entry.header.clone(),
                    crate::codec::Header::LEN + layout.offset,
                    layout.count,
                    layout.shape,
                    entry.signer.cloned(),
                    entry.path,
                );
                put(out, value).map_err(ReadError::Damage)?;
                Ok(Checked::Deferred)
            },
            parts: |value| {
                let v = value.downcast_ref::<crate::Mapped<B>>()?;
                let data = match le_bytes(v.try_elements().ok()?) {
                    Cow::Borrowed(data) => data,
                    Cow::Owned(_) => return None,
                };
                Some(Parts {
                    tag: B::Elem::TAG,
                    shape: v.shape().iter().map(|&n| n as u64).collect(),
                    data,
                })
            },
            mapped: true,
        }
    }
}

macro_rules! for_each_element {
    ($m:ident) => {
        $m!(u8);
        $m!(u16);
        $m!(u32);
        $m!(u64);
        $m!(i8);
        $m!(i16);
        $m!(i32);
        $m!(i64);
        $m!(f32);
        $m!(f64);
    };
}

/// Is a result of type `T` stored as a plain buffer? `Vec<P>` and
/// `Box<[P]>` are, for every [`Element`] `P`, and (feature `ndarray`)
/// `Array<P, D>` for `D` in `Ix0`..`Ix6` and `IxDyn`. Any other type (a
/// struct holding a `Vec<f64>`, say) goes through serde (postcard).
///
/// ```
/// use memento::buffer::is_stored_buffer;
/// assert!(is_stored_buffer::<Vec<f64>>());
/// assert!(is_stored_buffer::<Box<[u8]>>());
/// assert!(!is_stored_buffer::<Vec<String>>());
/// assert!(!is_stored_buffer::<(Vec<f64>, u8)>());
/// ```
pub fn is_stored_buffer<T: 'static>() -> bool {
    ops::<T>().is_some()
}

pub(crate) fn ops<T: 'static>() -> Option<Ops> {
    let t = TypeId::of::<T>();
    macro_rules! check {
        ($p:ty) => {
            if t == TypeId::of::<Vec<$p>>() {
                return Some(Ops::of::<Vec<$p>>());
            }
            if t == TypeId::of::<Box<[$p]>>() {
                return Some(Ops::of::<Box<[$p]>>());
            }
            if t == TypeId::of::<crate::Mapped<Vec<$p>>>() {
                return Some(Ops::mapped::<Vec<$p>>());
            }
            if t == TypeId::of::<crate::Mapped<Box<[$p]>>>() {
                return Some(Ops::mapped::<Box<[$p]>>());
            }
            #[cfg(feature = "ndarray")]
            {
                use ndarray::{Array, Ix0, Ix1, Ix2, Ix3, Ix4, Ix5, Ix6, IxDyn};
                check_dims!($p; Ix0, Ix1, Ix2, Ix3, Ix4, Ix5, Ix6, IxDyn);
            }
        };
    }
    #[cfg(feature = "ndarray")]
    macro_rules! check_dims {
        ($p:ty; $($d:ty),*) => {$(
            if t == TypeId::of::<Array<$p, $d>>() {
                return Some(Ops::of::<Array<$p, $d>>());
            }
            if t == TypeId::of::<crate::Mapped<Array<$p, $d>>>() {
                return Some(Ops::mapped::<Array<$p, $d>>());
            }
        )*};
    }
    for_each_element!(check);
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Key;

    #[test]
    #[allow(clippy::needless_borrow)] // the borrow is the point: autoref
    fn probe_picks_the_buffer_form_for_buffers_only() {
        let v = vec![1u8, 2, 3];
        let by_probe = Key::of((&Probe(&v)).key_arg()).unwrap();
        assert_eq!(by_probe, Key::of(BufferKey::of(&v)).unwrap());
        assert_ne!(by_probe, Key::of(&v).unwrap());
        let s = String::from("x");
        assert_eq!(
            Key::of((&Probe(&s)).key_arg()).unwrap(),
            Key::of(&s).unwrap()
        );
    }

    #[test]
    fn holders_hash_alike_and_shape_counts() {
        let v: Vec<u16> = (0..100).collect();
        let b: Box<[u16]> = v.clone().into_boxed_slice();
        let a: [u16; 100] = std::array::from_fn(|i| i as u16);
        let k = Key::of(&BufferKey(&v)).unwrap();
        assert_eq!(k, Key::of(&BufferKey(&b)).unwrap());
        assert_eq!(k, Key::of(&BufferKey(&a)).unwrap());
        assert_eq!(k, Key::of(&BufferKey(&&v[..])).unwrap());
        assert_ne!(k, Key::of(&BufferKey(&v[..99])).unwrap());
    }
}
