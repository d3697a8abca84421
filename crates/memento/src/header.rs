//! The entry header and checksum: the lowest layer of the entry format,
//! below the plain-buffer layout ([`buffer`](crate::buffer)), memory maps
//! ([`mapped`](crate::mapped)) and the codec ([`codec`](crate::codec),
//! which re-exports its public items: `memento::codec::Header` and so on).
//!
//! It is a module of its own so that the modules above can check an entry
//! without depending on each other: the codec picks how a type is stored
//! (a plain buffer, a `Mapped` map, or postcard), and a `Mapped` checks its
//! map's checksum, both through this module. The layout of the header is
//! in the codec's docs; no other module reads a header field by its offset.

use crate::key::Key;

/// Above this many bytes, hashing uses every core (feature `parallel`):
/// below it, starting threads costs more than it saves.
pub(crate) const PARALLEL_HASH: usize = 256 * 1024;

/// Version of the entry layout above. An entry of another version is treated
/// as damaged and recomputed. (Version 1 kept each entry in a folder of its
/// own, with an 88-byte header and the info in a `metadata.json` beside it.)
pub const ENTRY_FORMAT_VERSION: u16 = 2;

/// Payload codec: postcard 1.x. Part of every function's fingerprint, so a
/// change of codec invalidates old results instead of misreading them.
pub const CODEC_POSTCARD: u16 = 1;

/// Payload codec: postcard, then an LZ4 block with its size in front
/// (feature `lz4`).
pub const CODEC_POSTCARD_LZ4: u16 = 2;

/// Payload codec: postcard, then a zstd frame (feature `zstd`).
pub const CODEC_POSTCARD_ZSTD: u16 = 3;

/// Payload codec: a plain buffer (a descriptor, then the elements'
/// little-endian bytes at a file offset that is a multiple of 64; see
/// [`buffer`](crate::buffer)), for the result types
/// [`is_stored_buffer`](crate::codec::is_stored_buffer) accepts.
pub const CODEC_BUFFER: u16 = 4;

/// Payload codec: a plain buffer, then an LZ4 block (feature `lz4`).
pub const CODEC_BUFFER_LZ4: u16 = 5;

/// Payload codec: a plain buffer, then a zstd frame (feature `zstd`).
pub const CODEC_BUFFER_ZSTD: u16 = 6;

/// Length of the header in front of every payload.
pub const HEADER_LEN: usize = 96;

/// End of the checksummed part of the header.
pub(crate) const SIGNED: usize = 64;

/// Where the key starts in the header.
const KEY_AT: usize = 32;

const MAGIC: &[u8; 4] = b"MMTO";

/// Bit of the codec field that marks a signed entry.
const SIGNED_FLAG: u16 = 0x8000;

/// The key that signs entries: derived from a secret with blake3's key
/// derivation, so any secret (a passphrase, random bytes) will do.
#[derive(Clone, PartialEq, Eq)]
pub struct Signer([u8; 32]);

impl Signer {
    /// A short tag of this key, to tell apart results verified with
    /// different keys in memory (not a secret: a hash of the derived key).
    pub(crate) fn tag(&self) -> u64 {
        let hash = blake3::hash(&self.0);
        let mut tag = [0u8; 8];
        tag.copy_from_slice(&hash.as_bytes()[..8]);
        // 0 means "unsigned".
        u64::from_le_bytes(tag).max(1)
    }

    /// A signer from a secret.
    ///
    /// ```
    /// let a = memento::codec::Signer::new("correct horse battery staple");
    /// let b = memento::codec::Signer::new("correct horse battery staple");
    /// assert!(a == b);
    /// ```
    pub fn new(secret: impl AsRef<[u8]>) -> Signer {
        Signer(blake3::derive_key(
            "memento 2026-11 entry signature v1",
            secret.as_ref(),
        ))
    }

    /// The signer named by `MEMENTO_KEY`, if that variable is set.
    pub fn from_env() -> Option<Signer> {
        std::env::var_os("MEMENTO_KEY")
            .filter(|v| !v.is_empty())
            .map(|v| Signer::new(v.as_encoded_bytes()))
    }
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(..)")
    }
}

/// Why stored bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Damage {
    /// The file is empty.
    #[error("the entry is empty")]
    Empty,
    /// The file is shorter than its header says.
    #[error("the entry is truncated ({found} bytes, {expected} expected)")]
    Truncated {
        /// Bytes the header announces.
        expected: u64,
        /// Bytes found.
        found: u64,
    },
    /// The file is longer than its header says.
    #[error("the entry has {extra} bytes more than its header announces")]
    TooLong {
        /// Bytes beyond the announced end.
        extra: u64,
    },
    /// The first bytes are not an entry header.
    #[error("the entry does not start with memento's header")]
    BadMagic,
    /// Written by another entry format version.
    #[error("the entry has format version {found}; this memento reads version {expected}")]
    Version {
        /// Version found in the header.
        found: u16,
        /// Version this build reads.
        expected: u16,
    },
    /// Written with an unknown payload codec (or a compression whose feature
    /// is not compiled in).
    #[error("the entry uses payload codec {0}, which this memento cannot read (2 and 5 need the `lz4` feature, 3 and 6 the `zstd` feature)")]
    Codec(u16),
    /// The header names another key: the file was moved or copied.
    #[error("the entry belongs to another key ({0})")]
    WrongKey(Key),
    /// The checksum does not match: the bytes changed after writing.
    #[error("the entry's checksum does not match its contents")]
    Checksum,
    /// A signing key is set and the entry is not signed.
    #[error("the entry is not signed, and a signing key is set (MEMENTO_KEY)")]
    Unsigned,
    /// The entry is signed, and no signing key is set to check it.
    #[error("the entry is signed; set its key (MEMENTO_KEY) to read it")]
    NoKey,
    /// The signature does not match: another key, or the bytes were edited.
    #[error("the entry's signature does not match (another key, or edited after signing)")]
    Signature,
    /// The payload does not decode into the expected type.
    #[error("the entry's payload does not decode: {0}")]
    Decode(String),
}

/// The header's fields, all but the checksum.
pub(crate) struct Fields<'k> {
    pub(crate) key: &'k Key,
    pub(crate) payload_len: u64,
    pub(crate) info_len: usize,
    pub(crate) created_ms: u64,
    pub(crate) signed: bool,
    pub(crate) codec: u16,
}

impl Fields<'_> {
    /// Writes them into the header at the start of `out`; fails for an
    /// info longer than 4 GiB.
    pub(crate) fn write(&self, out: &mut [u8]) -> Result<(), String> {
        let info_len = u32::try_from(self.info_len)
            .map_err(|_| format!("an entry's info of {} bytes", self.info_len))?;
        out[0..4].copy_from_slice(MAGIC);
        out[4..6].copy_from_slice(&ENTRY_FORMAT_VERSION.to_le_bytes());
        let codec = self.codec | if self.signed { SIGNED_FLAG } else { 0 };
        out[6..8].copy_from_slice(&codec.to_le_bytes());
        out[8..16].copy_from_slice(&self.payload_len.to_le_bytes());
        out[16..24].copy_from_slice(&self.created_ms.to_le_bytes());
        out[24..28].copy_from_slice(&info_len.to_le_bytes());
        out[28..KEY_AT].fill(0);
        out[KEY_AT..SIGNED].copy_from_slice(self.key.as_bytes());
        Ok(())
    }
}

/// Writes the checksum into the header `head` (which also holds the start
/// of the payload, or all of the entry) of an entry whose bytes go on with
/// `tail`, then `info`. `parallel`: hash on every core (else on the calling
/// thread only, for a caller that keeps the other cores busy writing).
pub(crate) fn seal_head(
    head: &mut [u8],
    tail: &[u8],
    info: &[u8],
    signer: Option<&Signer>,
    parallel: bool,
) {
    let mut h = checksum_hasher(head, signer);
    h.update(&head[HEADER_LEN..]);
    if parallel {
        update(&mut h, tail);
    } else {
        h.update(tail);
    }
    h.update(info);
    head[SIGNED..HEADER_LEN].copy_from_slice(h.finalize().as_bytes());
}

/// Feeds `bytes` to `h`, on every core when they are large (feature
/// `parallel`).
pub(crate) fn update(h: &mut blake3::Hasher, bytes: &[u8]) {
    #[cfg(feature = "parallel")]
    if bytes.len() >= PARALLEL_HASH {
        h.update_rayon(bytes);
        return;
    }
    h.update(bytes);
}

/// Checks the checksum of a whole entry (`bytes`, from its header on)
/// whose header was checked against its length.
pub(crate) fn check_checksum(
    header: &Header,
    bytes: &[u8],
    signer: Option<&Signer>,
) -> Result<(), Damage> {
    let mut h = header.hasher(signer);
    update(&mut h, bytes.get(HEADER_LEN..).unwrap_or_default());
    if header.matches(&h) {
        Ok(())
    } else {
        Err(header.damage())
    }
}

/// The payload of the entry `bytes` whose header is `header`, if the bytes
/// hold it.
pub(crate) fn payload_of<'a>(header: &Header, bytes: &'a [u8]) -> Option<&'a [u8]> {
    let range = header.payload_range();
    bytes.get(usize::try_from(range.start).ok()?..usize::try_from(range.end).ok()?)
}

/// The info of the entry `bytes` whose header is `header`, if the bytes
/// hold it.
pub(crate) fn info_of<'a>(header: &Header, bytes: &'a [u8]) -> Option<&'a [u8]> {
    let range = header.info_range();
    bytes.get(usize::try_from(range.start).ok()?..usize::try_from(range.end).ok()?)
}

/// An entry's header: the first [`HEADER_LEN`] bytes of every entry,
/// parsed once (the layout is in the [codec's docs](crate::codec)). Everything the
/// rest of memento knows of an entry's bytes before its payload comes from
/// here: no other module reads a header field by its offset.
///
/// [`Header::parse`] only needs the magic; [`Header::check`] then checks
/// it against the key, the file's length and the signing state.
///
/// ```
/// use memento::codec::{self, Damage, Header};
/// let key = memento::Key::of(&1u8).unwrap();
/// let entry = codec::seal_with_info(&key, &[42], b"{}", 1_000, None);
/// let header = Header::parse(&entry).unwrap();
/// assert_eq!((header.payload_len(), header.info_len(), header.created_ms()), (1, 2, 1_000));
/// assert_eq!(header.key(), key);
/// assert_eq!(header.check(&key, entry.len() as u64, None), Ok(()));
/// assert!(matches!(header.check(&key, 5, None), Err(Damage::Truncated { .. })));
/// assert_eq!(Header::parse(&entry[..10]), Err(Damage::Truncated { expected: 96, found: 10 }));
/// assert_eq!(Header::parse(b""), Err(Damage::Empty));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Header {
    /// The raw bytes: the checksum covers the first 64.
    raw: [u8; HEADER_LEN],
    version: u16,
    /// Without the signed bit.
    codec: u16,
    signed: bool,
    payload_len: u64,
    created_ms: u64,
    info_len: u32,
    key: Key,
}

impl Header {
    /// Length of a header in bytes ([`HEADER_LEN`]).
    pub const LEN: usize = HEADER_LEN;

    /// Parses the first [`HEADER_LEN`] bytes of `bytes`. Checks only that
    /// they are there and start with the magic: see [`check`](Header::check)
    /// for the rest.
    pub fn parse(bytes: &[u8]) -> Result<Header, Damage> {
        if bytes.is_empty() {
            return Err(Damage::Empty);
        }
        let Some(raw) = bytes.first_chunk::<HEADER_LEN>() else {
            return Err(Damage::Truncated {
                expected: HEADER_LEN as u64,
                found: bytes.len() as u64,
            });
        };
        if !raw.starts_with(MAGIC) {
            return Err(Damage::BadMagic);
        }
        let u16_at = |i: usize| u16::from_le_bytes([raw[i], raw[i + 1]]);
        let u64_at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&raw[i..i + 8]);
            u64::from_le_bytes(b)
        };
        let mut key = [0u8; 32];
        key.copy_from_slice(&raw[KEY_AT..SIGNED]);
        Ok(Header {
            raw: *raw,
            version: u16_at(4),
            codec: u16_at(6) & !SIGNED_FLAG,
            signed: u16_at(6) & SIGNED_FLAG != 0,
            payload_len: u64_at(8),
            created_ms: u64_at(16),
            info_len: u32::from_le_bytes([raw[24], raw[25], raw[26], raw[27]]),
            key: Key::from_bytes(key),
        })
    }

    /// Checks everything but the checksum, for an entry of `file_len`
    /// bytes read for `key`, in this order: version, codec, reserved
    /// bytes, length, key, signature state.
    pub fn check(&self, key: &Key, file_len: u64, signer: Option<&Signer>) -> Result<(), Damage> {
        if self.version != ENTRY_FORMAT_VERSION {
            return Err(Damage::Version {
                found: self.version,
                expected: ENTRY_FORMAT_VERSION,
            });
        }
        let known = [
            (CODEC_POSTCARD, true),
            (CODEC_POSTCARD_LZ4, cfg!(feature = "lz4")),
            (CODEC_POSTCARD_ZSTD, cfg!(feature = "zstd")),
            (CODEC_BUFFER, true),
            (CODEC_BUFFER_LZ4, cfg!(feature = "lz4")),
            (CODEC_BUFFER_ZSTD, cfg!(feature = "zstd")),
        ]
        .contains(&(self.codec, true));
        if !known {
            return Err(Damage::Codec(self.codec));
        }
        if self.raw[28..KEY_AT] != [0; 4] {
            return Err(Damage::BadMagic);
        }
        let expected = self.entry_len();
        if file_len < expected {
            return Err(Damage::Truncated {
                expected,
                found: file_len,
            });
        }
        if file_len > expected {
            return Err(Damage::TooLong {
                extra: file_len - expected,
            });
        }
        if self.key != *key {
            return Err(Damage::WrongKey(self.key));
        }
        match (self.signed, signer) {
            (false, Some(_)) => Err(Damage::Unsigned),
            (true, None) => Err(Damage::NoKey),
            _ => Ok(()),
        }
    }

    /// The entry format version.
    pub fn version(&self) -> u16 {
        self.version
    }

    /// The payload codec, without the signed bit.
    pub fn codec(&self) -> u16 {
        self.codec
    }

    /// Is the entry signed?
    pub fn is_signed(&self) -> bool {
        self.signed
    }

    /// Is the payload a plain buffer ([`CODEC_BUFFER`] and its compressed
    /// forms)?
    pub fn is_buffer(&self) -> bool {
        self.codec >= CODEC_BUFFER
    }

    /// The payload's length in bytes.
    pub fn payload_len(&self) -> u64 {
        self.payload_len
    }

    /// The info's length in bytes.
    pub fn info_len(&self) -> u64 {
        u64::from(self.info_len)
    }

    /// When the result was computed, in ms since the Unix epoch.
    pub fn created_ms(&self) -> u64 {
        self.created_ms
    }

    /// The key the entry belongs to.
    pub fn key(&self) -> Key {
        self.key
    }

    /// Where the payload lies in the entry's file.
    pub fn payload_range(&self) -> std::ops::Range<u64> {
        let start = HEADER_LEN as u64;
        start..start.saturating_add(self.payload_len)
    }

    /// Where the info lies in the entry's file.
    pub fn info_range(&self) -> std::ops::Range<u64> {
        let start = self.payload_range().end;
        start..start.saturating_add(self.info_len())
    }

    /// The length of the whole entry the header announces.
    pub fn entry_len(&self) -> u64 {
        self.info_range().end
    }

    /// A hasher for the entry's checksum, fed with the checked part of the
    /// header: the caller feeds everything after the header, then asks
    /// [`matches`](Header::matches).
    pub(crate) fn hasher(&self, signer: Option<&Signer>) -> blake3::Hasher {
        checksum_hasher(&self.raw, signer)
    }

    /// Does the checksum that `h` computed match the header's?
    pub(crate) fn matches(&self, h: &blake3::Hasher) -> bool {
        h.finalize().as_bytes()[..] == self.raw[SIGNED..HEADER_LEN]
    }

    /// The damage of an entry whose checksum does not match.
    pub(crate) fn damage(&self) -> Damage {
        if self.signed {
            Damage::Signature
        } else {
            Damage::Checksum
        }
    }
}

impl std::fmt::Debug for Header {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Header")
            .field("version", &self.version)
            .field("codec", &self.codec)
            .field("signed", &self.signed)
            .field("payload_len", &self.payload_len)
            .field("created_ms", &self.created_ms)
            .field("info_len", &self.info_len)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// Parses and checks everything but the checksum of an entry of `file_len`
/// bytes that `head` starts (at least the header), for `key`.
pub(crate) fn check_header(
    key: &Key,
    head: &[u8],
    file_len: u64,
    signer: Option<&Signer>,
) -> Result<Header, Damage> {
    if file_len == 0 {
        return Err(Damage::Empty);
    }
    if head.len() < HEADER_LEN {
        return Err(Damage::Truncated {
            expected: HEADER_LEN as u64,
            found: file_len,
        });
    }
    let header = Header::parse(head)?;
    header.check(key, file_len, signer)?;
    Ok(header)
}

/// A hasher for the checksum of an entry, fed with the checked part of its
/// header.
pub(crate) fn checksum_hasher(head: &[u8], signer: Option<&Signer>) -> blake3::Hasher {
    let mut h = match signer {
        Some(signer) => blake3::Hasher::new_keyed(&signer.0),
        None => blake3::Hasher::new(),
    };
    h.update(&head[..SIGNED]);
    h
}
