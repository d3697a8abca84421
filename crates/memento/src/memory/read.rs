//! The read path of a call: the in-memory layer, then the store; an entry
//! is verified (length, header, key, checksum or signature), admitted
//! (expiry, `validate`) and decoded, or refused and removed. Also the reads
//! of handles and management, which never count as a use.
//!
//! An expired entry is refused and removed, except for a reader made with
//! [`Reader::keeping_expired`] (`refresh = "background"`): that one serves
//! it and says so, and the entry stays until its refresh replaces it.

use std::cell::Cell;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;

use super::config::Config;
use super::mode::Mode;
use super::shared::Shared;
use crate::codec;
use crate::entry::Metadata;
use crate::error::{Error, Result};
use crate::function::Function;
use crate::key::Key;
use crate::layout::EntryName;
use crate::store::Store;

mod large;

use large::Got;

/// The read path of one `Memory`: its store and options, over its
/// location's state. Made for each call (three references: free).
pub(super) struct Reader<'a> {
    store: &'a dyn Store,
    config: &'a Config,
    shared: &'a Arc<Shared>,
    /// Set: an expired entry is served (not removed), and this is set to
    /// true when one was.
    keep_expired: Option<&'a Cell<bool>>,
}

impl<'a> Reader<'a> {
    pub(super) fn new(store: &'a dyn Store, config: &'a Config, shared: &'a Arc<Shared>) -> Self {
        Reader {
            store,
            config,
            shared,
            keep_expired: None,
        }
    }

    /// This reader, serving expired entries instead of removing them;
    /// `stale` becomes true when it served one.
    pub(super) fn keeping_expired(self, stale: &'a Cell<bool>) -> Self {
        Reader {
            keep_expired: Some(stale),
            ..self
        }
    }

    /// A stored result, from the in-memory layer or the store.
    pub(super) fn find<T: DeserializeOwned + 'static>(
        &self,
        function: &Function,
        key: &Key,
        mode: Mode,
    ) -> Option<T> {
        self.find_hot(function, key, mode)
            .or_else(|| self.find_stored(function, key, mode))
    }

    /// A stored result from the store (a hit: recorded and counted).
    pub(super) fn find_stored<T: DeserializeOwned + 'static>(
        &self,
        function: &Function,
        key: &Key,
        mode: Mode,
    ) -> Option<T> {
        let value = self.read::<T>(function, key)?;
        mode.record(true, Some(*key));
        super::hits::count(self.shared, &self.shared.functions().state_of(function));
        Some(value)
    }

    /// A stored result from the in-memory layer.
    #[inline]
    pub(super) fn find_hot<T: DeserializeOwned + 'static>(
        &self,
        function: &Function,
        key: &Key,
        mode: Mode,
    ) -> Option<T> {
        if mapped::<T>() || !self.config.in_memory() {
            // Mapped results come from their file, never from a copy.
            return None;
        }
        let hot = self.shared.hot();
        if let Some(hit) = hot.get(key, self.config.signer_tag()) {
            let fresh = !expired(function, hit.created_ms) && function.validator().is_none();
            if let (true, Ok(value)) = (fresh, codec::decode::<T>(&hit.payload)) {
                tracing::debug!("{}: hit in memory ({key})", function.full_name());
                if hit.touch {
                    let name = EntryName::entry(function.folder(), key);
                    if let Err(e) = self.store.touch(name.as_str()) {
                        self.shared.report_io(&e);
                    }
                }
                mode.record(true, Some(*key));
                super::hits::count(self.shared, &hit.state);
                return Some(value);
            }
            hot.remove(key);
        }
        None
    }

    /// Keeps a verified payload in the in-memory layer, unless this Memory
    /// does not use it.
    pub(super) fn keep_hot(&self, function: &Function, key: Key, payload: &[u8], created_ms: u64) {
        if self.config.in_memory() {
            let state = self.shared.functions().state_of(function);
            let tag = self.config.signer_tag();
            self.shared
                .hot()
                .insert(key, payload, created_ms, tag, &state);
        }
    }

    /// Reads, verifies (with this Memory's signing key) and decodes the
    /// entry of `key` in the function folder `folder`, for a
    /// [`StoredResult`](crate::StoredResult). `Ok(None)` when it is absent.
    pub(super) fn get_entry<T: DeserializeOwned + 'static>(
        &self,
        folder: &str,
        key: &Key,
    ) -> Result<Option<T>> {
        let name = EntryName::entry(folder, key);
        let mut buf = Vec::new();
        if !self.store.read(name.as_str(), &mut buf)? {
            return Ok(None);
        }
        let payload = codec::verify(key, &buf, self.config.signer())
            .map_err(|damage| self.damaged(&name, damage))?;
        let (value, _) =
            codec::decode_entry(&buf, payload).map_err(|damage| self.damaged(&name, damage))?;
        // Verified: a store with a near copy may keep it now.
        self.store.verified(name.as_str(), &buf);
        Ok(Some(value))
    }

    /// The error of the damaged entry `name`, named with its location.
    fn damaged(&self, name: &EntryName, damage: codec::Damage) -> Error {
        Error::Damaged {
            name: format!("{}/{}", self.store.location(), name.as_str()),
            damage,
        }
    }

    /// The metadata of the entry of `key` in `folder` (its checksum not
    /// checked; reading it is not a use). `Ok(None)` when it is absent.
    pub(super) fn entry_metadata(
        &self,
        folder: &str,
        key: &Key,
        function: &str,
    ) -> Result<Option<Metadata>> {
        let name = EntryName::entry(folder, key);
        let mut buf = Vec::new();
        if !self.store.peek(name.as_str(), &mut buf)? {
            return Ok(None);
        }
        let len = buf.len() as u64;
        // Everything but the checksum: the info is for people.
        let header =
            codec::Header::parse(&buf).and_then(|header| match header.check(key, len, None) {
                Ok(()) | Err(codec::Damage::NoKey) => Ok(header),
                Err(damage) => Err(damage),
            });
        let header = header.map_err(|damage| self.damaged(&name, damage))?;
        Ok(Some(Metadata::of_header(
            &header,
            len,
            codec::info(&buf),
            function,
        )))
    }

    /// Removes the entry of `key` in `folder`, from the store and from this
    /// process's in-memory layer.
    pub(super) fn remove_result(&self, folder: &str, key: &Key) -> Result<()> {
        self.shared.hot().remove(key);
        self.store.delete(EntryName::entry(folder, key).as_str())
    }

    /// Reads, verifies and decodes the entry of `key`; a damaged entry is
    /// reported, removed and counted as a miss.
    pub(super) fn read<T: DeserializeOwned + 'static>(
        &self,
        function: &Function,
        key: &Key,
    ) -> Option<T> {
        let name = EntryName::entry(function.folder(), key);
        let mut buf = READ_BUF.with(Cell::take);
        let read = match crate::stored::ops::<T>() {
            Some(ops) => self.read_buffer::<T>(function, key, &name, ops, &mut buf),
            None => self.store.read(name.as_str(), &mut buf).map(|found| {
                if found {
                    Got::Bytes
                } else {
                    Got::Absent
                }
            }),
        };
        let result = match read {
            Ok(Got::Absent) => None,
            Ok(Got::Value(value)) => {
                tracing::debug!("{}: hit on disk ({key})", function.full_name());
                Some(value)
            }
            Ok(Got::Refused(refusal)) => {
                self.refused(function, key, &name, refusal);
                None
            }
            Ok(Got::Bytes) => match self.accept::<T>(function, key, &buf) {
                Ok((value, plain, created)) => {
                    tracing::debug!("{}: hit on disk ({key})", function.full_name());
                    // Verified: a store with a near copy may keep it now.
                    self.store.verified(name.as_str(), &buf);
                    let stale = self.keep_expired.is_some_and(Cell::get);
                    if function.validator().is_none() && !mapped::<T>() && !stale {
                        self.keep_hot(function, *key, &plain, created);
                    }
                    Some(value)
                }
                Err(refusal) => {
                    self.refused(function, key, &name, refusal);
                    None
                }
            },
            Err(e) => {
                self.shared.report_io(&e);
                None
            }
        };
        if buf.capacity() <= READ_BUF_KEEP {
            READ_BUF.with(|cell| cell.set(buf));
        }
        result
    }

    /// Reports a refused entry and removes it, so that it is recomputed.
    pub(super) fn refused(
        &self,
        function: &Function,
        key: &Key,
        name: &EntryName,
        refusal: Refusal,
    ) {
        match refusal {
            Refusal::Damaged(damage) => {
                let e = self.damaged(name, damage);
                crate::log::warning!("{e}; it is removed and recomputed");
            }
            Refusal::Rejected(why) => {
                crate::log::info!(
                    "{}: stored result {why}; computing it again",
                    function.full_name()
                );
            }
        }
        self.remove_entry(function, key);
    }

    /// Verifies an entry, applies the function's expiry and validation, and
    /// decodes it; also returns the unpacked payload and when it was
    /// computed.
    pub(super) fn accept<'e, T: DeserializeOwned + 'static>(
        &self,
        function: &Function,
        key: &Key,
        entry: &'e [u8],
    ) -> std::result::Result<(T, std::borrow::Cow<'e, [u8]>, u64), Refusal> {
        let signer = self.config.signer();
        let (header, payload) = codec::open(key, entry, signer).map_err(Refusal::Damaged)?;
        self.admit(function, key, &header, entry, entry.len() as u64)?;
        let (value, plain) = codec::decode_with(&header, payload).map_err(Refusal::Damaged)?;
        Ok((value, plain, header.created_ms()))
    }

    /// The function's expiry and validation, applied to an entry of
    /// `file_len` bytes whose checked header is `header` and whose first
    /// bytes (at least the header) are `head`.
    pub(super) fn admit(
        &self,
        function: &Function,
        key: &Key,
        header: &codec::Header,
        head: &[u8],
        file_len: u64,
    ) -> std::result::Result<(), Refusal> {
        if expired(function, header.created_ms()) {
            match self.keep_expired {
                Some(stale) => stale.set(true),
                None => return Err(Refusal::Rejected("expired")),
            }
        }
        if let Some(validate) = function.validator() {
            let meta = self.metadata_of(function, key, header, head, file_len);
            if !validate(&meta) {
                return Err(Refusal::Rejected("was rejected by its validate function"));
            }
        }
        Ok(())
    }

    /// The metadata of an entry of `file_len` bytes whose header (at
    /// least) is `head`: its info is read from the store when `head` does
    /// not hold it.
    pub(super) fn metadata_of(
        &self,
        function: &Function,
        key: &Key,
        header: &codec::Header,
        head: &[u8],
        file_len: u64,
    ) -> Metadata {
        let mut read = Vec::new();
        let info = match codec::info_of(header, head) {
            Some(info) => Some(info),
            None => {
                let name = EntryName::entry(function.folder(), key);
                let found = self
                    .store
                    .read_range(name.as_str(), header.info_range(), &mut read);
                found.unwrap_or(false).then_some(&read[..])
            }
        };
        Metadata::of_header(header, file_len, info, function.full_name())
    }

    pub(super) fn remove_entry(&self, function: &Function, key: &Key) {
        self.shared.hot().remove(key);
        let name = EntryName::entry(function.folder(), key);
        if let Err(e) = self.store.delete(name.as_str()) {
            self.shared.report_io(&e);
        }
    }
}

/// Why a stored entry is not served.
pub(super) enum Refusal {
    /// Damaged bytes: a warning.
    Damaged(codec::Damage),
    /// Whole but expired or rejected by `validate`: an info event.
    Rejected(&'static str),
}

/// Is a result computed at `created_ms` past the function's time to live?
/// Is `T` a [`Mapped`](crate::Mapped) result (kept out of the in-memory
/// layer)? Folded at compile time.
#[inline(always)]
pub(super) fn mapped<T: 'static>() -> bool {
    crate::stored::ops::<T>().is_some_and(|ops| ops.mapped)
}

pub(super) fn expired(function: &Function, created_ms: u64) -> bool {
    function.ttl().is_some_and(|ttl| {
        let created = UNIX_EPOCH + Duration::from_millis(created_ms);
        SystemTime::now()
            .duration_since(created)
            .is_ok_and(|age| age > ttl)
    })
}

/// Read buffers above this size are not kept for the next read.
pub(super) const READ_BUF_KEEP: usize = 1 << 20;

thread_local! {
    static READ_BUF: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}
