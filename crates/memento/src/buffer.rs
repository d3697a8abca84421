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
//! - **Stored results.** A result of one of the types [`stored_buffer`]
//!   knows is stored as the raw element bytes after a small descriptor
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
pub const PARALLEL_HASH: usize = 256 * 1024;

mod sealed {
    pub trait Sealed {}
}

/// A number type whose arrays are plain buffers: fixed size, any bit
/// pattern valid, stored little-endian.
pub trait Element: Copy + Send + Sync + 'static + sealed::Sealed {
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
        // SAFETY: `P` is a plain number type (sealed): no padding, every
        // byte initialized; the byte slice covers exactly the elements.
        Cow::Borrowed(unsafe {
            std::slice::from_raw_parts(
                elements.as_ptr().cast::<u8>(),
                std::mem::size_of_val(elements),
            )
        })
    }
    #[cfg(target_endian = "big")]
    {
        let mut out = Vec::with_capacity(std::mem::size_of_val(elements));
        for e in elements {
            // SAFETY: as above, for one element.
            let bytes = unsafe {
                std::slice::from_raw_parts((e as *const P).cast::<u8>(), std::mem::size_of::<P>())
            };
            out.extend(bytes.iter().rev());
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
