//! Codec: turns a result into the bytes of an entry file and back, and
//! proves on the way back that the bytes are whole and belong to the key.
//!
//! An entry is one file: a fixed 96-byte header, the payload, then the
//! entry's *info* (JSON for people and tools: the function, how long the
//! computation took, the arguments as text; see [`Info`](crate::entry::Info)):
//!
//! | bytes  | field                                                       |
//! |--------|-------------------------------------------------------------|
//! | 0..4   | magic `MMTO`                                                |
//! | 4..6   | entry format version, `u16` little-endian ([`ENTRY_FORMAT_VERSION`]) |
//! | 6..8   | payload codec, `u16` LE ([`CODEC_POSTCARD`]); bit 15 set: signed |
//! | 8..16  | payload length in bytes, `u64` little-endian               |
//! | 16..24 | when it was computed, ms since the Unix epoch, `u64` LE     |
//! | 24..28 | info length in bytes, `u32` LE                              |
//! | 28..32 | zero (reserved)                                             |
//! | 32..64 | the entry's key                                             |
//! | 64..96 | checksum: blake3 of bytes 0..64 followed by everything after the header (payload, then info), keyed (an HMAC) when signed |
//! | 96..   | payload: the value in postcard (or a plain buffer)          |
//! | then   | info: JSON                                                  |
//!
//! Reading checks, in this order: length, magic, version, codec, payload
//! length, key, signature state, checksum, then decodes and requires that the
//! payload is used up exactly. Any failure is a [`Damage`], never a panic,
//! and the caller recomputes.
//!
//! # Signing
//!
//! With a [`Signer`] (from a secret: `MEMENTO_KEY` or
//! [`Memory::signing_key`](crate::Memory::signing_key)), the checksum is
//! blake3 in keyed mode, and a reader with a signer refuses any entry that
//! is unsigned or whose keyed checksum does not match: a cache shared with
//! others cannot be used to hand it a value. A reader without a signer
//! refuses signed entries (it cannot check them).

use std::borrow::Cow;

use serde::de::DeserializeOwned;
use serde::Serialize;

pub(crate) use crate::header::{check_header, info_of, seal_head};
pub use crate::header::{
    Damage, Header, Signer, CODEC_BUFFER, CODEC_BUFFER_LZ4, CODEC_BUFFER_ZSTD, CODEC_POSTCARD,
    CODEC_POSTCARD_LZ4, CODEC_POSTCARD_ZSTD, ENTRY_FORMAT_VERSION, HEADER_LEN,
};
pub use crate::stored::is_stored_buffer;

use crate::header::{check_checksum, payload_of, Fields};
use crate::key::Key;

/// Compression of stored results: off by default.
///
/// ```
/// use memento::codec::Compression;
/// assert_eq!(Compression::parse("lz4"), Ok(Compression::Lz4));
/// assert_eq!(Compression::parse("zstd:19"), Ok(Compression::Zstd(19)));
/// assert_eq!(Compression::parse("none"), Ok(Compression::None));
/// assert!(Compression::parse("gzip").is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Compression {
    /// Stored as postcard bytes.
    #[default]
    None,
    /// LZ4 (fast, moderate ratio). Needs the `lz4` feature.
    Lz4,
    /// zstd at a level (1 to 22; 3 is zstd's default). Needs the `zstd`
    /// feature.
    Zstd(i32),
}

impl Compression {
    /// Parses `none`, `lz4`, `zstd` or `zstd:LEVEL`; usable in constants.
    pub const fn parse(text: &str) -> Result<Compression, &'static str> {
        let b = text.as_bytes();
        match b {
            b"none" => Ok(Compression::None),
            b"lz4" => Ok(Compression::Lz4),
            b"zstd" => Ok(Compression::Zstd(3)),
            [b'z', b's', b't', b'd', b':', level @ ..] if !level.is_empty() => {
                let mut n: i32 = 0;
                let mut i = 0;
                while i < level.len() {
                    if !level[i].is_ascii_digit() || n > 100 {
                        return Err("the zstd level is a number from 1 to 22, as in \"zstd:3\"");
                    }
                    n = n * 10 + (level[i] - b'0') as i32;
                    i += 1;
                }
                if n < 1 || n > 22 {
                    return Err("the zstd level is a number from 1 to 22, as in \"zstd:3\"");
                }
                Ok(Compression::Zstd(n))
            }
            _ => Err("compression is \"none\", \"lz4\", \"zstd\" or \"zstd:LEVEL\""),
        }
    }

    /// Is the feature this compression needs compiled in?
    pub const fn available(self) -> bool {
        match self {
            Compression::None => true,
            Compression::Lz4 => cfg!(feature = "lz4"),
            Compression::Zstd(_) => cfg!(feature = "zstd"),
        }
    }

    fn codec(self, buffer: bool) -> u16 {
        let postcard = match self {
            Compression::None => CODEC_POSTCARD,
            Compression::Lz4 => CODEC_POSTCARD_LZ4,
            Compression::Zstd(_) => CODEC_POSTCARD_ZSTD,
        };
        if buffer {
            postcard + (CODEC_BUFFER - CODEC_POSTCARD)
        } else {
            postcard
        }
    }
}

/// An encoded entry, and its payload before compression when compressed.
/// A large plain buffer is not copied: `entry` then holds the header and
/// the descriptor, `tail` the data, borrowed from the value, and `info`
/// what follows it; the header's checksum is then still to be written
/// ([`seal_head`]). Otherwise `entry` is the whole entry and `tail` and
/// `info` are empty.
pub(crate) struct Encoded<'v> {
    pub(crate) entry: Vec<u8>,
    pub(crate) plain: Option<Vec<u8>>,
    pub(crate) tail: &'v [u8],
    pub(crate) info: Vec<u8>,
}

/// Plain buffers at least this large are written from the value's own
/// memory.
pub(crate) const BORROW_TAIL: usize = 1024 * 1024;

/// Encodes `value` as a whole entry for `key`, with `info` after the
/// payload: a plain buffer if `T` is one of the buffer types, else
/// postcard.
pub(crate) fn encode<'v, T: Serialize + 'static>(
    key: &Key,
    value: &'v T,
    created_ms: u64,
    signer: Option<&Signer>,
    compression: Compression,
    info: &[u8],
) -> Result<Encoded<'v>, String> {
    let buffer = crate::stored::ops::<T>();
    let fields = |out: &mut [u8], payload_len: usize, codec: u16| {
        Fields {
            key,
            payload_len: payload_len as u64,
            info_len: info.len(),
            created_ms,
            signed: signer.is_some(),
            codec,
        }
        .write(out)
    };
    if let (Some(ops), Compression::None) = (buffer, compression) {
        if let Some(parts) = (ops.parts)(value).filter(|p| p.data.len() >= BORROW_TAIL) {
            let (tag, shape) = (parts.tag, &parts.shape);
            return borrowing(key, tag, shape, &[], parts.data, created_ms, signer, info);
        }
    }
    let payload_into = |out: Vec<u8>| -> Result<Vec<u8>, String> {
        match buffer {
            Some(ops) => {
                let mut out = out;
                (ops.encode)(value, &mut out)?;
                Ok(out)
            }
            None => postcard::to_extend(value, out).map_err(|e| e.to_string()),
        }
    };
    let codec = compression.codec(buffer.is_some());
    let (mut out, plain) = if compression == Compression::None {
        (payload_into(vec![0u8; HEADER_LEN])?, None)
    } else {
        let plain = payload_into(Vec::new())?;
        let packed = compress(&plain, compression)?;
        let mut out = Vec::with_capacity(HEADER_LEN + packed.len() + info.len());
        out.resize(HEADER_LEN, 0);
        out.extend_from_slice(&packed);
        (out, Some(plain))
    };
    let payload_len = out.len() - HEADER_LEN;
    out.extend_from_slice(info);
    fields(&mut out, payload_len, codec)?;
    seal_head(&mut out, &[], &[], signer, true);
    Ok(Encoded {
        entry: out,
        plain,
        tail: &[],
        info: Vec::new(),
    })
}

/// Encodes the plain `u8` buffer whose bytes are `head` then `tail` (the
/// entry of a `Vec<u8>` holding both, byte for byte) without joining them:
/// `head` goes into `entry` after the descriptor, `tail` is borrowed, and
/// the checksum is left to [`seal_head`]. `tail` must not be empty.
pub(crate) fn encode_split<'v>(
    key: &Key,
    head: &[u8],
    tail: &'v [u8],
    created_ms: u64,
    signer: Option<&Signer>,
    info: &[u8],
) -> Result<Encoded<'v>, String> {
    let tag = <u8 as crate::buffer::Element>::TAG;
    let len = (head.len() + tail.len()) as u64;
    borrowing(key, tag, &[len], head, tail, created_ms, signer, info)
}

/// The entry of a plain buffer (`tag`, `shape`) whose data is `head` then
/// `tail`, uncompressed: the header's fields, the descriptor and `head` in
/// `entry`, `tail` borrowed. The checksum is left to [`seal_head`], which
/// the writer runs while it writes `tail`.
#[allow(clippy::too_many_arguments)]
fn borrowing<'v>(
    key: &Key,
    tag: u8,
    shape: &[u64],
    head: &[u8],
    tail: &'v [u8],
    created_ms: u64,
    signer: Option<&Signer>,
    info: &[u8],
) -> Result<Encoded<'v>, String> {
    let mut out = vec![0u8; HEADER_LEN];
    crate::buffer::write_descriptor(tag, shape, &mut out);
    out.extend_from_slice(head);
    let payload_len = out.len() - HEADER_LEN + tail.len();
    Fields {
        key,
        payload_len: payload_len as u64,
        info_len: info.len(),
        created_ms,
        signed: signer.is_some(),
        codec: Compression::None.codec(true),
    }
    .write(&mut out)?;
    Ok(Encoded {
        entry: out,
        plain: None,
        tail,
        info: info.to_vec(),
    })
}

fn compress(plain: &[u8], compression: Compression) -> Result<Vec<u8>, String> {
    match compression {
        Compression::None => Ok(plain.to_vec()),
        #[cfg(feature = "lz4")]
        Compression::Lz4 => Ok(lz4_flex::compress_prepend_size(plain)),
        #[cfg(feature = "zstd")]
        Compression::Zstd(level) => zstd::bulk::compress(plain, level).map_err(|e| e.to_string()),
        #[allow(unreachable_patterns)]
        other => Err(format!(
            "{other:?} needs memento's `{}` feature",
            if other == Compression::Lz4 {
                "lz4"
            } else {
                "zstd"
            }
        )),
    }
}

/// The postcard bytes of a verified entry: its payload, decompressed if it
/// is compressed. A compressed payload may not claim more than 255 times its
/// size (LZ4's most) or, for zstd, more than its frame declares.
///
/// `entry` is the entry (at least its header); bytes that are not one are
/// refused, never a panic:
///
/// ```
/// use memento::codec::{unpack, Damage};
/// assert_eq!(unpack(&[], &[]), Err(Damage::Empty));
/// assert_eq!(unpack(b"MMTO", &[]), Err(Damage::Truncated { expected: 96, found: 4 }));
/// ```
pub fn unpack<'a>(entry: &[u8], payload: &'a [u8]) -> Result<Cow<'a, [u8]>, Damage> {
    unpack_with(&Header::parse(entry)?, payload)
}

/// [`unpack`] for an entry whose header is parsed.
pub(crate) fn unpack_with<'a>(header: &Header, payload: &'a [u8]) -> Result<Cow<'a, [u8]>, Damage> {
    match header.codec() {
        CODEC_POSTCARD | CODEC_BUFFER => Ok(Cow::Borrowed(payload)),
        #[cfg(feature = "lz4")]
        CODEC_POSTCARD_LZ4 | CODEC_BUFFER_LZ4 => {
            let claimed = payload
                .get(..4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
                .ok_or_else(|| Damage::Decode("no LZ4 size".into()))?;
            if claimed > payload.len().saturating_mul(255) + 64 {
                return Err(Damage::Decode(format!(
                    "an LZ4 payload of {} bytes claims {claimed}",
                    payload.len()
                )));
            }
            lz4_flex::decompress_size_prepended(payload)
                .map(Cow::Owned)
                .map_err(|e| Damage::Decode(e.to_string()))
        }
        #[cfg(feature = "zstd")]
        CODEC_POSTCARD_ZSTD | CODEC_BUFFER_ZSTD => {
            let size = zstd::zstd_safe::get_frame_content_size(payload)
                .ok()
                .flatten()
                .ok_or_else(|| Damage::Decode("a zstd frame without its size".into()))?;
            let size = usize::try_from(size).map_err(|_| Damage::Decode("too large".into()))?;
            zstd::bulk::decompress(payload, size)
                .map(Cow::Owned)
                .map_err(|e| Damage::Decode(e.to_string()))
        }
        other => Err(Damage::Codec(other)),
    }
}

/// Checks a whole entry read for `key` and returns its payload.
///
/// ```
/// let key = memento::Key::of(&1u8).unwrap();
/// assert_eq!(memento::codec::verify(&key, b"", None), Err(memento::codec::Damage::Empty));
/// ```
pub fn verify<'a>(key: &Key, bytes: &'a [u8], signer: Option<&Signer>) -> Result<&'a [u8], Damage> {
    open(key, bytes, signer).map(|(_, payload)| payload)
}

/// [`verify`], also returning the checked header.
pub(crate) fn open<'a>(
    key: &Key,
    bytes: &'a [u8],
    signer: Option<&Signer>,
) -> Result<(Header, &'a [u8]), Damage> {
    let header = check_header(key, bytes, bytes.len() as u64, signer)?;
    check_checksum(&header, bytes, signer)?;
    let payload = payload_of(&header, bytes).ok_or(Damage::Truncated {
        expected: header.entry_len(),
        found: bytes.len() as u64,
    })?;
    Ok((header, payload))
}

/// The payload of an entry this process encoded (or verified).
pub(crate) fn payload(entry: &[u8]) -> Option<&[u8]> {
    payload_of(&Header::parse(entry).ok()?, entry)
}

/// The info of a whole entry whose header was checked ([`verify`]): the
/// bytes after the payload. `None` when `entry` does not start with a
/// header or does not hold the info it announces.
///
/// ```
/// use memento::codec;
/// let key = memento::Key::of(&1u8).unwrap();
/// let entry = codec::seal_with_info(&key, &[42], b"{}", 0, None);
/// codec::verify(&key, &entry, None).unwrap();
/// assert_eq!(codec::info(&entry), Some(&b"{}"[..]));
/// assert_eq!(codec::info(&entry[..50]), None);
/// ```
pub fn info(entry: &[u8]) -> Option<&[u8]> {
    info_of(&Header::parse(entry).ok()?, entry)
}

/// Wraps payload bytes already in postcard form into a whole entry for
/// `key`, without info: for tools, tests and fuzzing.
///
/// ```
/// use memento::codec;
/// let key = memento::Key::of(&1u8).unwrap();
/// let entry = codec::seal(&key, &[42], 0, None);
/// let payload = codec::verify(&key, &entry, None).unwrap();
/// assert_eq!(codec::decode::<u8>(payload), Ok(42));
/// ```
pub fn seal(key: &Key, payload: &[u8], created_ms: u64, signer: Option<&Signer>) -> Vec<u8> {
    seal_with_info(key, payload, &[], created_ms, signer)
}

/// [`seal`] with `info` after the payload (an entry as a call writes it
/// has JSON there: see [`Info`](crate::entry::Info)).
pub fn seal_with_info(
    key: &Key,
    payload: &[u8],
    info: &[u8],
    created_ms: u64,
    signer: Option<&Signer>,
) -> Vec<u8> {
    seal_codec(key, payload, info, created_ms, signer, CODEC_POSTCARD)
}

fn seal_codec(
    key: &Key,
    payload: &[u8],
    info: &[u8],
    created_ms: u64,
    signer: Option<&Signer>,
    codec: u16,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len() + info.len());
    out.resize(HEADER_LEN, 0);
    out.extend_from_slice(payload);
    out.extend_from_slice(info);
    // Infos over 4 GiB cannot be written; cut them to nothing.
    let info_len = if u32::try_from(info.len()).is_ok() {
        info.len()
    } else {
        out.truncate(HEADER_LEN + payload.len());
        0
    };
    let fields = Fields {
        key,
        payload_len: payload.len() as u64,
        info_len,
        created_ms,
        signed: signer.is_some(),
        codec,
    };
    fields.write(&mut out).expect("an info under 4 GiB");
    seal_head(&mut out, &[], &[], signer, true);
    out
}

/// Decodes a verified, unpacked payload into a `T`: a plain buffer if `T`
/// is one of the buffer types, else postcard, whose payload must be used up
/// exactly. Never panics and runs no code of the entry's: both only read
/// data. (Use [`decode_entry`] on whole entries: it also checks that the
/// entry's codec is the one `T` is stored with.)
pub fn decode<T: DeserializeOwned + 'static>(payload: &[u8]) -> Result<T, Damage> {
    if let Some(ops) = crate::stored::ops::<T>() {
        let mut slot: Option<T> = None;
        (ops.decode)(payload, &mut slot).map_err(Damage::Decode)?;
        return slot.ok_or_else(|| Damage::Decode("internal: no value".into()));
    }
    // Size hints clamped to the payload: a hostile length reserves no more
    // than the payload could hold.
    let mut de = postcard::Deserializer::from_bytes(payload);
    let value = T::deserialize(crate::capped::Capped {
        inner: &mut de,
        cap: payload.len(),
    })
    .map_err(|e| Damage::Decode(e.to_string()))?;
    match de.finalize() {
        Ok([]) => Ok(value),
        Ok(rest) => Err(Damage::Decode(format!(
            "{} bytes left over after the value",
            rest.len()
        ))),
        Err(e) => Err(Damage::Decode(e.to_string())),
    }
}

/// Is the entry stored with the codec family (buffer or postcard) that
/// `T` is stored with?
pub(crate) fn check_family<T: 'static>(header: &Header) -> Result<(), Damage> {
    if header.is_buffer() != crate::stored::ops::<T>().is_some() {
        return Err(Damage::Decode(format!(
            "stored with codec {}, which is not how {} is stored",
            header.codec(),
            std::any::type_name::<T>()
        )));
    }
    Ok(())
}

/// Unpacks and decodes a verified entry (`payload` is what [`verify`]
/// returned) into a `T`, after checking that its codec is the one `T` is
/// stored with. Also returns the unpacked payload. Bytes that are not an
/// entry are refused, never a panic.
///
/// ```
/// use memento::codec::{self, Damage};
/// assert_eq!(codec::decode_entry::<u8>(&[], &[]).err(), Some(Damage::Empty));
/// ```
pub fn decode_entry<'p, T: DeserializeOwned + 'static>(
    entry: &[u8],
    payload: &'p [u8],
) -> Result<(T, Cow<'p, [u8]>), Damage> {
    decode_with(&Header::parse(entry)?, payload)
}

/// [`decode_entry`] for an entry whose header is parsed.
pub(crate) fn decode_with<'p, T: DeserializeOwned + 'static>(
    header: &Header,
    payload: &'p [u8],
) -> Result<(T, Cow<'p, [u8]>), Damage> {
    check_family::<T>(header)?;
    let plain = unpack_with(header, payload)?;
    let value = decode::<T>(&plain)?;
    Ok((value, plain))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::{checksum_hasher, update, SIGNED};

    fn key() -> Key {
        Key::of("k").unwrap()
    }

    fn checksum(head: &[u8], payload: &[u8], signer: Option<&Signer>) -> [u8; 32] {
        let mut h = checksum_hasher(head, signer);
        update(&mut h, payload);
        *h.finalize().as_bytes()
    }

    #[test]
    fn round_trip() {
        let bytes = encode(
            &key(),
            &(1.5f64, "x".to_string()),
            7,
            None,
            Compression::None,
            b"{\"args\":\"[1.5]\"}",
        )
        .unwrap()
        .entry;
        let payload = verify(&key(), &bytes, None).unwrap();
        let v: (f64, String) = decode(payload).unwrap();
        assert_eq!(v, (1.5, "x".to_string()));
        assert_eq!(Header::parse(&bytes).unwrap().created_ms(), 7);
        assert_eq!(info(&bytes), Some(&b"{\"args\":\"[1.5]\"}"[..]));
    }

    #[test]
    fn every_single_byte_flip_is_caught() {
        let bytes = encode(&key(), &vec![1u32, 2, 3], 7, None, Compression::None, b"{}")
            .unwrap()
            .entry;
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            assert!(
                verify(&key(), &b, None).is_err(),
                "flip at {i} went unnoticed"
            );
        }
    }

    #[test]
    fn every_truncation_is_caught() {
        let bytes = encode(&key(), &vec![1u32, 2, 3], 7, None, Compression::None, b"{}")
            .unwrap()
            .entry;
        for n in 0..bytes.len() {
            assert!(
                verify(&key(), &bytes[..n], None).is_err(),
                "truncation to {n}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            verify(&key(), &longer, None),
            Err(Damage::TooLong { extra: 1 })
        );
    }

    #[cfg(any(feature = "lz4", feature = "zstd"))]
    #[test]
    fn compressed_round_trips_and_damage() {
        let value: Vec<u64> = (0..10_000).map(|i| i % 7).collect();
        let mut modes = Vec::new();
        if cfg!(feature = "lz4") {
            modes.push(Compression::Lz4);
        }
        if cfg!(feature = "zstd") {
            modes.push(Compression::Zstd(3));
        }
        for mode in modes {
            let enc = encode(&key(), &value, 7, None, mode, b"{}").unwrap();
            assert!(
                enc.entry.len() < enc.plain.as_ref().unwrap().len(),
                "{mode:?} compresses"
            );
            let payload = verify(&key(), &enc.entry, None).unwrap();
            let plain = unpack(&enc.entry, payload).unwrap();
            assert_eq!(decode::<Vec<u64>>(&plain).unwrap(), value);
            // A flipped byte is caught by the checksum before decompression.
            let mut bad = enc.entry.clone();
            let last = bad.len() - 1;
            bad[last] ^= 1;
            assert_eq!(verify(&key(), &bad, None), Err(Damage::Checksum));
        }
    }

    #[cfg(feature = "lz4")]
    #[test]
    fn lz4_size_claims_are_bounded() {
        let mut payload = u32::MAX.to_le_bytes().to_vec();
        payload.extend_from_slice(&[0x10, 0x41]);
        let entry = seal_codec(&key(), &payload, &[], 0, None, CODEC_POSTCARD_LZ4);
        let p = verify(&key(), &entry, None).unwrap();
        assert!(matches!(unpack(&entry, p), Err(Damage::Decode(_))));
    }

    #[test]
    fn signatures() {
        let alice = Signer::new("alice");
        let bob = Signer::new("bob");
        let signed = encode(&key(), &5u32, 7, Some(&alice), Compression::None, b"{}")
            .unwrap()
            .entry;
        assert!(verify(&key(), &signed, Some(&alice)).is_ok());
        assert_eq!(verify(&key(), &signed, Some(&bob)), Err(Damage::Signature));
        assert_eq!(verify(&key(), &signed, None), Err(Damage::NoKey));
        let plain = encode(&key(), &5u32, 7, None, Compression::None, b"{}")
            .unwrap()
            .entry;
        assert_eq!(verify(&key(), &plain, Some(&alice)), Err(Damage::Unsigned));
        // Editing a signed entry and fixing a plain checksum does not help.
        let mut forged = signed.clone();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        let sum = checksum(&forged[..SIGNED], &forged[HEADER_LEN..], None);
        forged[SIGNED..HEADER_LEN].copy_from_slice(&sum);
        assert_eq!(
            verify(&key(), &forged, Some(&alice)),
            Err(Damage::Signature)
        );
        // Nor does clearing the signed flag.
        forged[6..8].copy_from_slice(&CODEC_POSTCARD.to_le_bytes());
        let sum = checksum(&forged[..SIGNED], &forged[HEADER_LEN..], None);
        forged[SIGNED..HEADER_LEN].copy_from_slice(&sum);
        assert_eq!(verify(&key(), &forged, Some(&alice)), Err(Damage::Unsigned));
    }

    #[test]
    fn another_key_is_refused() {
        let bytes = encode(&key(), &1u8, 7, None, Compression::None, b"{}")
            .unwrap()
            .entry;
        let other = Key::of("other").unwrap();
        assert!(matches!(
            verify(&other, &bytes, None),
            Err(Damage::WrongKey(_))
        ));
    }

    #[test]
    fn leftover_payload_is_refused() {
        let bytes = encode(&key(), &(1u8, 2u8), 7, None, Compression::None, b"{}")
            .unwrap()
            .entry;
        let payload = verify(&key(), &bytes, None).unwrap();
        assert!(matches!(decode::<u8>(payload), Err(Damage::Decode(_))));
    }
}
