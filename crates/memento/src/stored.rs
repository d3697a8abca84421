//! How a result type is stored, chosen by its `TypeId` (which the compiler
//! folds away): a plain buffer ([`buffer`](crate::buffer)), a plain buffer
//! returned as a memory map ([`Mapped`](crate::Mapped)), or else postcard;
//! and how large plain-buffer entries are read straight from a local file
//! into their array, or mapped.
//!
//! This sits above `buffer`, `mapped` and the entry header
//! ([`header`](crate::header)), and below the codec and `Memory`, so that
//! none of those depend on each other in a circle: the buffer layout knows
//! nothing of maps, and a map checks its checksum through the header module
//! alone.

use std::any::{Any, TypeId};
use std::borrow::Cow;

use crate::buffer::{
    bytes_mut, encode, encode_parts, from_le_in_place, layout, le_bytes, zeroed_elements, Element,
    StoredBuffer,
};

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
        crate::header::update(hasher, dst);
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
    pub(crate) header: &'a crate::header::Header,
    /// The bytes read after the header: the buffer's descriptor (at least;
    /// fewer when the file is short).
    pub(crate) descriptor: &'a [u8],
    /// The file's length.
    pub(crate) len: u64,
    pub(crate) signer: Option<&'a crate::header::Signer>,
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
            decode: |payload, out| put(out, crate::buffer::decode::<B>(payload)?),
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
            decode: |payload, out| {
                put(
                    out,
                    crate::Mapped::from(crate::buffer::decode::<B>(payload)?),
                )
            },
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
                    crate::header::Header::LEN + layout.offset,
                    layout.count,
                    layout.shape,
                    entry.signer.cloned(),
                    entry.path,
                    crate::mapped::file_id(entry.file),
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
/// use memento::codec::is_stored_buffer;
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
