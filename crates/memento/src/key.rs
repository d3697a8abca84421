//! Keys: a blake3 hash of a canonical serialization of a call's arguments.
//!
//! This module owns the *key format*. A value is fed through [`serde`] into a
//! [`Serializer`](serde::Serializer) that writes a self-delimiting, tagged byte
//! stream straight into a [`blake3::Hasher`]; nothing is built in between.
//! The stream is designed so that:
//!
//! - it never depends on the platform, the pointer width, the process or the
//!   Rust release (`std::hash::Hash` is never used; integers are little-endian
//!   with a tag for their width, `usize` is serialized by serde as `u64`);
//! - struct and enum names, field names and variant names are written out, so a
//!   renamed or reordered field gives new keys instead of colliding with old ones
//!   (variant *indices* are not written: reordering variants keeps keys);
//! - maps, and the sets of the standard library, `hashbrown`, `indexmap` and
//!   `ahash` (recognised by their type), hash the same whatever their iteration
//!   order: each entry is hashed on its own and the sorted entry digests are
//!   written;
//! - `String`, `&str` and `Box<str>` hash alike, and so do `Vec<T>`, `&[T]` and
//!   `[T; N]` (sequences and tuples share one encoding);
//! - floats hash by bit pattern (`0.0` and `-0.0` differ, a NaN equals itself);
//! - byte strings and long strings go to the hasher in place, and small items
//!   are gathered in a buffer of [`CHUNK`] bytes so that blake3 sees large
//!   updates.
//!
//! Every full key also starts with [`KEY_FORMAT_VERSION`]; a deliberate change
//! of the stream bumps it, and the golden test in `tests/keys.rs` fails on an
//! accidental one.

use std::fmt;
use std::mem::MaybeUninit;

use serde::ser::{self, Serialize};

/// Version of the key format. It is hashed into every key, so bumping it
/// makes every old entry unreachable instead of misread.
pub const KEY_FORMAT_VERSION: u32 = 1;

/// Size of the stack buffer that gathers small items before they reach the
/// hasher: large enough for blake3 to use its widest SIMD path.
pub const CHUNK: usize = 16 * 1024;

/// Items longer than this go to the hasher in place instead of being copied.
const IN_PLACE: usize = 1024;

/// A 256-bit key that names one stored result.
///
/// ```
/// let a = memento::Key::of(&("sine", 0.1_f64)).unwrap();
/// let b = memento::Key::of(&("sine", 0.1_f64)).unwrap();
/// assert_eq!(a, b);
/// assert_eq!(a.to_hex().len(), 64);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key([u8; 32]);

impl Key {
    /// The key of any serializable value on its own (without a function's
    /// identity): useful to check that two values hash alike.
    ///
    /// # Errors
    /// [`KeyError`] when the value's `Serialize` implementation fails.
    pub fn of<T: Serialize + ?Sized>(value: &T) -> Result<Key, KeyError> {
        hash_with::<CHUNK>(blake3::Hasher::new(), |sink| value.serialize(sink))
    }

    /// Wraps raw key bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Key {
        Key(bytes)
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lower-case hexadecimal, 64 characters: the form used in paths.
    pub fn to_hex(&self) -> String {
        self.hex().to_string()
    }

    /// The 64 hex digits, on the stack (blake3's own hex): entry names are
    /// built from it on the hit path without allocating.
    #[inline]
    pub(crate) fn hex(&self) -> impl std::ops::Deref<Target = str> {
        blake3::Hash::from_bytes(self.0).to_hex()
    }

    /// Parses 64 hexadecimal digits (either case).
    pub fn from_hex(text: &str) -> Option<Key> {
        blake3::Hash::from_hex(text)
            .ok()
            .map(|hash| Key(*hash.as_bytes()))
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({self})")
    }
}

/// A value could not be turned into a key: its `Serialize` implementation
/// returned an error, or a [`FileRef`](crate::FileRef) could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot hash the arguments: {0}")]
pub struct KeyError(String, Cause);

/// What failed, for the advice a warning gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    Serialize,
    File,
}

impl KeyError {
    /// A [`FileRef`](crate::FileRef)'s file or folder could not be read.
    pub(crate) fn file(message: String) -> KeyError {
        KeyError(message, Cause::File)
    }

    /// What to do about it.
    pub(crate) fn advice(&self) -> &'static str {
        match self.1 {
            Cause::Serialize => {
                "Make the argument's Serialize implementation infallible, or leave the argument out of the key with ignore(..)"
            }
            Cause::File => {
                "Check that the path names an existing file or folder that this user can read (a memento::FileRef is keyed by its contents)"
            }
        }
    }
}

impl ser::Error for KeyError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        KeyError(msg.to_string(), Cause::Serialize)
    }
}

/// Hashes the key of one call: the format version, the function's hash
/// (identity, code fingerprint, version), the output type's shape and the
/// arguments.
pub(crate) fn call_key<A: Serialize + ?Sized>(
    function: &[u8; 32],
    shape: &[u8; 32],
    args: &A,
) -> Result<Key, KeyError> {
    hash_with::<CHUNK>(blake3::Hasher::new(), |sink| {
        sink.write(b"memento call key");
        sink.write(&KEY_FORMAT_VERSION.to_le_bytes());
        sink.write(function);
        sink.write(shape);
        args.serialize(sink)
    })
}

// Tags of the canonical stream. Each value starts with one; sequences and
// structs end with `END`, so the stream can be parsed back unambiguously and
// two different values can never write the same bytes.
mod tag {
    pub const BOOL: u8 = 1;
    pub const I8: u8 = 2;
    pub const I16: u8 = 3;
    pub const I32: u8 = 4;
    pub const I64: u8 = 5;
    pub const I128: u8 = 6;
    pub const U8: u8 = 7;
    pub const U16: u8 = 8;
    pub const U32: u8 = 9;
    pub const U64: u8 = 10;
    pub const U128: u8 = 11;
    pub const F32: u8 = 12;
    pub const F64: u8 = 13;
    pub const CHAR: u8 = 14;
    pub const STR: u8 = 15;
    pub const BYTES: u8 = 16;
    pub const NONE: u8 = 17;
    pub const SOME: u8 = 18;
    pub const UNIT: u8 = 19;
    pub const UNIT_STRUCT: u8 = 20;
    pub const UNIT_VARIANT: u8 = 21;
    pub const NEWTYPE_STRUCT: u8 = 22;
    pub const NEWTYPE_VARIANT: u8 = 23;
    pub const SEQ: u8 = 24;
    pub const TUPLE_STRUCT: u8 = 25;
    pub const TUPLE_VARIANT: u8 = 26;
    pub const MAP: u8 = 27;
    pub const STRUCT: u8 = 28;
    pub const STRUCT_VARIANT: u8 = 29;
    pub const SET: u8 = 30;
    pub const END: u8 = 31;
    /// A `FileRef`: then its kind (1 = file, 2 = folder) and the 32-byte
    /// digest of its contents (see `file_ref`).
    pub const FILE_REF: u8 = 32;
}

/// The serializer: a blake3 hasher behind a buffer on the caller's stack.
///
/// The buffer is left uninitialized (zeroing 16 KiB on every call would cost
/// more than hashing a small key) and both live on the stack of
/// [`hash_with`], so nothing large is ever moved.
pub(crate) struct Sink<'b> {
    hasher: &'b mut blake3::Hasher,
    buf: &'b mut [MaybeUninit<u8>],
    /// `buf[..len]` is initialized.
    len: usize,
}

/// Hashes what `f` writes into a sink over `hasher` with a stack buffer of
/// `N` bytes.
#[inline]
fn hash_with<const N: usize>(
    mut hasher: blake3::Hasher,
    f: impl FnOnce(&mut Sink<'_>) -> Result<(), KeyError>,
) -> Result<Key, KeyError> {
    let mut buf = [MaybeUninit::<u8>::uninit(); N];
    let mut sink = Sink {
        hasher: &mut hasher,
        buf: &mut buf,
        len: 0,
    };
    f(&mut sink)?;
    sink.flush();
    Ok(Key(*hasher.finalize().as_bytes()))
}

impl Sink<'_> {
    #[inline]
    fn append(&mut self, bytes: &[u8]) {
        debug_assert!(self.len + bytes.len() <= self.buf.len());
        // SAFETY: the destination range lies inside `buf` (checked by the
        // callers) and does not overlap `bytes`, which is borrowed elsewhere.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.buf.as_mut_ptr().add(self.len).cast::<u8>(),
                bytes.len(),
            );
        }
        self.len += bytes.len();
    }

    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        if self.len + bytes.len() <= self.buf.len() {
            self.append(bytes);
        } else {
            self.flush();
            if bytes.len() >= crate::buffer::PARALLEL_HASH {
                #[cfg(feature = "parallel")]
                self.hasher.update_rayon(bytes);
                #[cfg(not(feature = "parallel"))]
                self.hasher.update(bytes);
            } else if bytes.len() > IN_PLACE.min(self.buf.len()) {
                self.hasher.update(bytes);
            } else {
                self.append(bytes);
            }
        }
    }

    #[inline]
    fn flush(&mut self) {
        if self.len > 0 {
            // SAFETY: `buf[..len]` was initialized by `append`.
            let filled =
                unsafe { std::slice::from_raw_parts(self.buf.as_ptr().cast::<u8>(), self.len) };
            self.hasher.update(filled);
            self.len = 0;
        }
    }

    #[inline]
    fn tag(&mut self, t: u8) {
        self.write(&[t]);
    }

    #[inline]
    fn len_prefix(&mut self, n: usize) {
        self.write(&(n as u64).to_le_bytes());
    }

    #[inline]
    fn name(&mut self, s: &str) {
        self.len_prefix(s.len());
        self.write(s.as_bytes());
    }
}

/// Hashes one value on its own, for order-independent collections.
fn digest_of<T: Serialize + ?Sized>(value: &T) -> Result<[u8; 32], KeyError> {
    Ok(*hash_with::<256>(blake3::Hasher::new(), |sink| value.serialize(sink))?.as_bytes())
}

/// Is the outermost type one of the well-known unordered (or sorted) sets?
/// `type_name` is only used to pick the order-independent encoding, and only
/// its outermost path is looked at, so `Vec<HashSet<T>>` stays ordered.
fn is_set_type(type_name: &str) -> bool {
    let outer = type_name.trim_start_matches('&').trim_start_matches("mut ");
    let outer = outer.split('<').next().unwrap_or(outer);
    let last = outer.rsplit("::").next().unwrap_or(outer);
    matches!(last, "HashSet" | "BTreeSet" | "IndexSet" | "AHashSet")
}

/// Entries of a set or a map, hashed one by one and sorted at the end.
pub(crate) struct Unordered<'a, 'b> {
    sink: &'a mut Sink<'b>,
    tag: u8,
    digests: Vec<[u8; 32]>,
    pending_key: Option<blake3::Hasher>,
}

impl Unordered<'_, '_> {
    fn end(self) {
        let Unordered {
            sink,
            tag,
            mut digests,
            ..
        } = self;
        digests.sort_unstable();
        sink.tag(tag);
        sink.len_prefix(digests.len());
        for d in &digests {
            sink.write(d);
        }
    }
}

macro_rules! number {
    ($method:ident, $ty:ty, $tag:expr) => {
        #[inline]
        fn $method(self, v: $ty) -> Result<(), KeyError> {
            self.tag($tag);
            self.write(&v.to_le_bytes());
            Ok(())
        }
    };
}

impl<'a, 'b> ser::Serializer for &'a mut Sink<'b> {
    type Ok = ();
    type Error = KeyError;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Unordered<'a, 'b>;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    fn serialize_bool(self, v: bool) -> Result<(), KeyError> {
        self.write(&[tag::BOOL, v as u8]);
        Ok(())
    }
    number!(serialize_i8, i8, tag::I8);
    number!(serialize_i16, i16, tag::I16);
    number!(serialize_i32, i32, tag::I32);
    number!(serialize_i64, i64, tag::I64);
    number!(serialize_i128, i128, tag::I128);
    number!(serialize_u8, u8, tag::U8);
    number!(serialize_u16, u16, tag::U16);
    number!(serialize_u32, u32, tag::U32);
    number!(serialize_u64, u64, tag::U64);
    number!(serialize_u128, u128, tag::U128);

    fn serialize_f32(self, v: f32) -> Result<(), KeyError> {
        self.tag(tag::F32);
        self.write(&v.to_bits().to_le_bytes());
        Ok(())
    }
    fn serialize_f64(self, v: f64) -> Result<(), KeyError> {
        self.tag(tag::F64);
        self.write(&v.to_bits().to_le_bytes());
        Ok(())
    }
    fn serialize_char(self, v: char) -> Result<(), KeyError> {
        self.tag(tag::CHAR);
        self.write(&(v as u32).to_le_bytes());
        Ok(())
    }
    fn serialize_str(self, v: &str) -> Result<(), KeyError> {
        self.tag(tag::STR);
        self.name(v);
        Ok(())
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<(), KeyError> {
        self.tag(tag::BYTES);
        self.len_prefix(v.len());
        self.write(v);
        Ok(())
    }
    fn serialize_none(self) -> Result<(), KeyError> {
        self.tag(tag::NONE);
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), KeyError> {
        self.tag(tag::SOME);
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), KeyError> {
        self.tag(tag::UNIT);
        Ok(())
    }
    fn serialize_unit_struct(self, name: &'static str) -> Result<(), KeyError> {
        self.tag(tag::UNIT_STRUCT);
        self.name(name);
        Ok(())
    }
    fn serialize_unit_variant(
        self,
        name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), KeyError> {
        self.tag(tag::UNIT_VARIANT);
        self.name(name);
        self.name(variant);
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<(), KeyError> {
        if name == crate::file_ref::SERDE_NAME {
            // A FileRef: keyed by its contents, never by its path.
            let (kind, digest) = crate::file_ref::contents(value)?;
            self.write(&[tag::FILE_REF, kind]);
            self.write(&digest);
            return Ok(());
        }
        self.tag(tag::NEWTYPE_STRUCT);
        self.name(name);
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), KeyError> {
        self.tag(tag::NEWTYPE_VARIANT);
        self.name(name);
        self.name(variant);
        value.serialize(self)
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<Self, KeyError> {
        self.tag(tag::SEQ);
        Ok(self)
    }
    fn serialize_tuple(self, _len: usize) -> Result<Self, KeyError> {
        // Arrays `[T; N]` serialize as tuples: they hash like `Vec<T>`.
        self.tag(tag::SEQ);
        Ok(self)
    }
    fn serialize_tuple_struct(self, name: &'static str, _len: usize) -> Result<Self, KeyError> {
        self.tag(tag::TUPLE_STRUCT);
        self.name(name);
        Ok(self)
    }
    fn serialize_tuple_variant(
        self,
        name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Self, KeyError> {
        self.tag(tag::TUPLE_VARIANT);
        self.name(name);
        self.name(variant);
        Ok(self)
    }
    fn serialize_map(self, len: Option<usize>) -> Result<Unordered<'a, 'b>, KeyError> {
        Ok(Unordered {
            sink: self,
            tag: tag::MAP,
            digests: Vec::with_capacity(len.unwrap_or(0).min(4096)),
            pending_key: None,
        })
    }
    fn serialize_struct(self, name: &'static str, _len: usize) -> Result<Self, KeyError> {
        self.tag(tag::STRUCT);
        self.name(name);
        Ok(self)
    }
    fn serialize_struct_variant(
        self,
        name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Self, KeyError> {
        self.tag(tag::STRUCT_VARIANT);
        self.name(name);
        self.name(variant);
        Ok(self)
    }

    fn collect_seq<I>(self, iter: I) -> Result<(), KeyError>
    where
        I: IntoIterator,
        I::Item: Serialize,
    {
        if is_set_type(std::any::type_name::<I>()) {
            let mut digests = Vec::new();
            for item in iter {
                digests.push(digest_of(&item)?);
            }
            Unordered {
                sink: self,
                tag: tag::SET,
                digests,
                pending_key: None,
            }
            .end();
            return Ok(());
        }
        self.tag(tag::SEQ);
        for item in iter {
            item.serialize(&mut *self)?;
        }
        self.tag(tag::END);
        Ok(())
    }
}

/// Sequences, tuples and tuple-like structs and variants: elements in
/// order, then `END`.
macro_rules! elements {
    ($($trait:ident :: $method:ident),*) => {$(
        impl ser::$trait for &mut Sink<'_> {
            type Ok = ();
            type Error = KeyError;
            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), KeyError> {
                value.serialize(&mut **self)
            }
            fn end(self) -> Result<(), KeyError> {
                self.tag(tag::END);
                Ok(())
            }
        }
    )*};
}
elements!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field
);

/// Structs and struct variants: each field's name and value, then `END`.
macro_rules! fields {
    ($($trait:ident),*) => {$(
        impl ser::$trait for &mut Sink<'_> {
            type Ok = ();
            type Error = KeyError;
            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                key: &'static str,
                value: &T,
            ) -> Result<(), KeyError> {
                self.name(key);
                value.serialize(&mut **self)
            }
            fn end(self) -> Result<(), KeyError> {
                self.tag(tag::END);
                Ok(())
            }
        }
    )*};
}
fields!(SerializeStruct, SerializeStructVariant);

impl ser::SerializeMap for Unordered<'_, '_> {
    type Ok = ();
    type Error = KeyError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), KeyError> {
        let mut hasher = blake3::Hasher::new();
        key.serialize(&mut Sink {
            hasher: &mut hasher,
            buf: &mut [],
            len: 0,
        })?;
        self.pending_key = Some(hasher);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), KeyError> {
        let hasher = self
            .pending_key
            .take()
            .ok_or_else(|| <KeyError as ser::Error>::custom("map value without a key"))?;
        let digest = hash_with::<256>(hasher, |sink| value.serialize(sink))?;
        self.digests.push(*digest.as_bytes());
        Ok(())
    }
    fn end(self) -> Result<(), KeyError> {
        if self.pending_key.is_some() {
            return Err(<KeyError as ser::Error>::custom("map key without a value"));
        }
        Unordered::end(self);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_detection_looks_at_the_outer_type_only() {
        assert!(is_set_type("&std::collections::hash::set::HashSet<i32>"));
        assert!(is_set_type("&alloc::collections::btree::set::BTreeSet<u8>"));
        assert!(is_set_type("&indexmap::set::IndexSet<u8, S>"));
        assert!(!is_set_type(
            "&alloc::vec::Vec<std::collections::hash::set::HashSet<i32>>"
        ));
        assert!(!is_set_type("&[u8]"));
    }

    #[test]
    fn hex_round_trip() {
        let k = Key::of(&42u32).unwrap();
        assert_eq!(Key::from_hex(&k.to_hex()), Some(k));
        assert_eq!(Key::from_hex("zz"), None);
        assert_eq!(format!("{k}"), k.to_hex());
        // Lower case out, either case in, nothing else.
        let bytes: [u8; 32] = std::array::from_fn(|i| (i * 37 + 5) as u8);
        let k = Key::from_bytes(bytes);
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(k.to_hex(), hex);
        assert_eq!(Key::from_hex(&hex.to_uppercase()), Some(k));
        assert_eq!(Key::from_hex(&format!("{}g", &hex[1..])), None);
        assert_eq!(Key::from_hex(&format!("{hex}0")), None);
        assert_eq!(Key::from_hex(&format!("{}é", &hex[2..])), None);
    }

    #[test]
    fn buffer_boundaries_do_not_change_the_hash() {
        // A value larger than the chunk buffer, made of small and large items,
        // hashes the same through the buffered sink as through an unbuffered one.
        let v: Vec<(u64, String)> = (0..5000u64)
            .map(|i| (i, "x".repeat((i % 1500) as usize)))
            .collect();
        let unbuffered = hash_with::<0>(blake3::Hasher::new(), |s| v.serialize(s)).unwrap();
        assert_eq!(Key::of(&v).unwrap(), unbuffered);
    }
}
