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
//! - **Stored results.** A result of one of the types [`is_stored_buffer`](crate::codec::is_stored_buffer)
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

use std::borrow::Cow;

use serde::ser::{Serialize, SerializeTuple, Serializer};

/// Above this many bytes the key hasher uses every core (feature
/// `parallel`): below it, starting threads costs more than it saves.
pub const PARALLEL_HASH: usize = crate::header::PARALLEL_HASH;

mod sealed {
    /// Seals [`Element`](super::Element).
    pub trait Sealed {}
    /// Seals [`StoredBuffer`](super::StoredBuffer): memento stores exactly
    /// the types it knows (see [`is_stored_buffer`](crate::codec::is_stored_buffer)),
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
/// decided by [`is_stored_buffer`](crate::codec::is_stored_buffer); this trait says how. It is sealed:
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
    let descriptor = crate::header::HEADER_LEN + 8 + 8 * dims;
    descriptor.div_ceil(DATA_ALIGN) * DATA_ALIGN - crate::header::HEADER_LEN
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
