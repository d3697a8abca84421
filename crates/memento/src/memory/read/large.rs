//! Reading stored plain buffers: small ones through the store's byte
//! buffer like any entry, large ones from a local file straight into their
//! array, with the checksum computed while the bytes arrive.

use std::io::Read;

use serde::de::DeserializeOwned;

use super::{Reader, Refusal};
use crate::codec::{self, CODEC_BUFFER};
use crate::error::{Error, Result};
use crate::function::Function;
use crate::key::Key;
use crate::layout::EntryName;
use crate::store::Opened;
use crate::stored::{self, Checked, FileEntry, Ops, ReadError, LARGE_READ};

/// What reading an entry gave.
pub(super) enum Got<T> {
    /// No entry.
    Absent,
    /// The entry's bytes are in the caller's buffer, to be verified.
    Bytes,
    /// A verified value, read straight from the file.
    Value(T),
    /// The entry was read and refused.
    Refused(Refusal),
}

/// Bytes read in front of a large buffer's data: the header and the
/// descriptor (at most 8 + 8 × 32 bytes, padded to 64).
const HEAD: usize = 512;

impl Reader<'_> {
    /// The local file of an entry (in a local cache, or in the near cache
    /// of a remote one), for a mapped value to remove if its data turns out
    /// damaged.
    fn entry_file(&self, function: &Function, key: &Key) -> Option<std::path::PathBuf> {
        let name = EntryName::entry(function.folder(), key);
        self.config.files().map(|root| root.join(name.as_str()))
    }

    /// Reads the entry of a plain buffer result.
    pub(super) fn read_buffer<T: DeserializeOwned + 'static>(
        &self,
        function: &Function,
        key: &Key,
        name: &EntryName,
        ops: Ops,
        buf: &mut Vec<u8>,
    ) -> Result<Got<T>> {
        let (file, len) = match self.store.open_file(name.as_str())? {
            Opened::Unsupported => {
                let found = self.store.read(name.as_str(), buf)?;
                return Ok(if found { Got::Bytes } else { Got::Absent });
            }
            Opened::Absent => return Ok(Got::Absent),
            Opened::File(file, len) => (file, len),
        };
        let io = |e| {
            Error::io(
                "read",
                format!("{}/{}", self.store.location(), name.as_str()),
                e,
            )
        };
        if len >= LARGE_READ || ops.mapped {
            let mut head = [0u8; HEAD];
            let head = &mut head[..(len as usize).min(HEAD)];
            stored::read_at(&file, head, 0).map_err(io)?;
            let signer = self.config.signer();
            let header = match codec::check_header(key, head, len, signer) {
                Ok(header) => header,
                Err(damage) => return Ok(Got::Refused(Refusal::Damaged(damage))),
            };
            // Compressed buffers are read whole and decompressed.
            if header.codec() == CODEC_BUFFER {
                if let Err(refusal) = self.admit(function, key, &header, head, len) {
                    return Ok(Got::Refused(refusal));
                }
                let mut hasher = header.hasher(signer);
                let mut slot: Option<T> = None;
                let entry = FileEntry {
                    file: &file,
                    header: &header,
                    descriptor: head.get(codec::Header::LEN..).unwrap_or_default(),
                    len,
                    signer,
                    map_signed: self.config.map_signed(),
                    path: ops.mapped.then(|| self.entry_file(function, key)).flatten(),
                };
                return match (ops.read_file)(entry, &mut hasher, &mut slot) {
                    Err(ReadError::Io(e)) => Err(io(e)),
                    Err(ReadError::Damage(why)) => {
                        Ok(Got::Refused(Refusal::Damaged(codec::Damage::Decode(why))))
                    }
                    Ok(Checked::Now) if !header.matches(&hasher) => {
                        Ok(Got::Refused(Refusal::Damaged(header.damage())))
                    }
                    Ok(_) => Ok(slot.map_or(Got::Absent, Got::Value)),
                };
            }
        }
        buf.clear();
        buf.reserve(len as usize);
        (&file).take(len).read_to_end(buf).map_err(io)?;
        Ok(Got::Bytes)
    }
}
