//! The write path of a call that missed: a [`Pending`] knows its key and
//! holds this process's turn to compute (the flight and the key's lock);
//! the value it is given is encoded ([`Write`]), published (create-only, or
//! replaced when forced), indexed for eviction, kept in the in-memory
//! layer, and the function's record is checked.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::config::Config;
use super::mode::Mode;
use super::once::Held;
use super::read::mapped;
use super::record::{FnState, RecordWrite, Records};
use super::shared::Shared;
use super::why::{CallArgs, Current, StoredCall, Why};
use super::Memory;
use crate::codec;
use crate::entry;
use crate::error::{Error, Result};
use crate::function::{Function, Shape};
use crate::key::Key;
use crate::layout::EntryName;
use crate::store::Store;

/// A call that missed: it knows its key and stores the value it is given.
#[must_use = "call store() with the computed value, or it is not cached"]
pub struct Pending<'m, T> {
    memory: &'m Memory,
    function: &'m Function,
    state: Option<Arc<FnState>>,
    key: Option<Key>,
    shape: Shape,
    /// Boxed, as `why`: a `Lookup` holding a `Pending` stays small.
    args: Box<CallArgs>,
    /// Why it missed (`None` for a forced call, or when nothing would be
    /// stored).
    why: Option<Box<Why>>,
    started: Instant,
    mode: Mode,
    /// This process's turn to compute, held until the result is written
    /// (or the computation fails): released when this drops.
    _held: Held,
    _output: PhantomData<fn() -> T>,
}

impl<'m, T> Pending<'m, T> {
    /// A miss of `function` with the key `key` (`None`: the arguments
    /// could not be hashed, nothing is written), whose record was checked
    /// into `state` (`None`: not checked, nothing is written), holding the
    /// turn `held`; it missed because of `why`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        memory: &'m Memory,
        function: &'m Function,
        state: Option<Arc<FnState>>,
        key: Option<Key>,
        shape: Shape,
        args: CallArgs,
        why: Option<Why>,
        mode: Mode,
        held: Held,
    ) -> Pending<'m, T> {
        Pending {
            memory,
            function,
            state,
            key,
            shape,
            args: Box::new(args),
            why: why.map(Box::new),
            started: Instant::now(),
            mode,
            _held: held,
            _output: PhantomData,
        }
    }
}

/// The write path of one `Memory`: its store and options, over its
/// location's state.
pub(super) struct Writer<'a> {
    store: &'a dyn Store,
    config: &'a Config,
    shared: &'a Arc<Shared>,
}

impl<'a> Writer<'a> {
    pub(super) fn new(store: &'a dyn Store, config: &'a Config, shared: &'a Arc<Shared>) -> Self {
        Writer {
            store,
            config,
            shared,
        }
    }

    /// Encodes one result and prepares all that is to be written.
    fn prepare<'v, T: Serialize + 'static>(
        &self,
        pending: &Pending<'_, T>,
        key: &Key,
        value: Value<'v, T>,
        duration: Duration,
    ) -> Result<Write<'v>> {
        let function = pending.function;
        let created = SystemTime::now();
        let created_ms = created
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_millis() as u64;
        let signer = self.config.signer();
        let mut compression = function.compression();
        if mapped::<T>() && compression != codec::Compression::None {
            // A compressed entry could not be mapped: store it plain.
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                crate::log::warning!(
                    "{}: Mapped results are stored uncompressed (a compressed entry cannot be \
                     memory-mapped); remove the compression from this function",
                    function.full_name()
                );
            });
            compression = codec::Compression::None;
        }
        let info = entry::new_info(function.full_name(), duration, &pending.args.text);
        let encoded = match value {
            Value::Whole(value) => {
                codec::encode(key, value, created_ms, signer, compression, &info)
            }
            Value::Split(head, tail) => {
                codec::encode_split(key, head, tail, created_ms, signer, &info)
            }
        }
        .map_err(|message| Error::Encode {
            function: function.full_name().to_string(),
            type_name: std::any::type_name::<T>(),
            message,
        })?;
        let bytes = encoded.entry;
        let tail = encoded.tail;
        Ok(Write {
            key: *key,
            record: pending.state.clone().map(|state| RecordWrite {
                record: function.record(pending.shape, std::any::type_name::<T>()),
                state,
            }),
            output: EntryName::entry(function.folder(), key)
                .as_str()
                .to_string(),
            bytes,
            tail,
            info: encoded.info,
            plain: encoded.plain,
            force: pending.mode.force,
            created_ms,
            keep_in_memory: function.validator().is_none() && !mapped::<T>() && tail.is_empty(),
            folder: function.folder().to_string(),
            call: Current {
                key,
                args: &pending.args.parts,
                function,
                output: &pending.shape.hash,
            }
            .stored(duration),
        })
    }

    /// Writes a prepared result: the entry (published if absent, or
    /// replaced when forced), then the function's record if this process
    /// has not seen it since the store last created a folder. Returns the
    /// bytes written (for the limits).
    fn commit(&self, write: Write<'_>) -> Result<u64> {
        let store = self.store;
        let mut written = 0;
        if write.force {
            self.shared.hot().remove(&write.key);
        }
        let published = if !write.tail.is_empty() {
            // A large buffer: its checksum is computed while the store
            // writes its data.
            let signer = self.config.signer();
            let seal = || {
                let mut head = write.bytes.clone();
                codec::seal_head(&mut head, write.tail, &write.info, signer, false);
                head
            };
            store.publish_computed(
                &write.output,
                write.bytes.len(),
                write.tail,
                &write.info,
                &seal,
                write.force,
            )?
        } else if write.force {
            store.write(&write.output, &write.bytes)?;
            true
        } else {
            store.publish(&write.output, &write.bytes)?
        };
        if published {
            let size = (write.bytes.len() + write.tail.len() + write.info.len()) as u64;
            written += size;
            if let Some(index) = self.shared.index() {
                index.append(&write.folder, &write.key, size, write.created_ms);
            }
        }
        if let Some(record) = &write.record {
            written += Records::new(store, self.shared).ensure(record)?;
            if published {
                // What later misses are compared with (see `why.rs`).
                record.state.calls().stored(write.call);
                self.shared.flush_calls_if_due(&record.state);
            }
            let plain = write
                .plain
                .as_deref()
                .or_else(|| codec::payload(&write.bytes));
            if let (true, Some(plain)) = (write.keep_in_memory && self.config.in_memory(), plain) {
                let tag = self.config.signer_tag();
                self.shared
                    .hot()
                    .insert(write.key, plain, write.created_ms, tag, &record.state);
            }
            self.shared.flush_hits(&record.state);
        }
        Ok(written)
    }
}

impl<T: Serialize + 'static> Pending<'_, T> {
    /// Stores `value` and returns it. Storage problems are logged, never
    /// returned: the value comes back either way.
    pub fn store(mut self, value: T) -> T {
        let write = self.prepare(Value::Whole(&value));
        self.publish(write);
        value
    }

    /// Records the miss, then commits `write` (what [`prepare`](Self::prepare)
    /// made, if anything): storage problems are reported, never returned.
    fn publish(&mut self, write: Option<Write<'_>>) {
        self.mode.record(false, self.key);
        self.mode.record_why(self.why.take().map(|why| *why));
        if let Some(write) = write {
            let memory = self.memory;
            match memory.writer().commit(write) {
                Ok(written) => {
                    memory.shared().storage_works();
                    memory.after_write(written);
                }
                Err(e) => memory.report_io(&e),
            }
        }
    }

    /// Stores an `Ok` value; an `Err` is returned as it is and not stored.
    pub fn store_result<E>(self, result: Result<T, E>) -> Result<T, E> {
        match result {
            Ok(value) => Ok(self.store(value)),
            Err(e) => {
                tracing::debug!(
                    "{}: returned an error; not stored",
                    self.function.full_name()
                );
                Err(e)
            }
        }
    }

    /// [`store`](Pending::store) for async code: the value is encoded here,
    /// and the files are written on a thread of their own, so that the
    /// executor's threads do not wait for the disk. Works with any executor.
    pub async fn store_async(mut self, value: T) -> T {
        if let Some(write) = self.prepare(Value::Whole(&value)) {
            // The write outlives this borrow of the value (the future may be
            // dropped while it runs): it takes its own copy.
            let memory = self.memory.clone();
            let write = write.into_owned(memory.config().signer());
            let committed = crate::background::run(move || {
                let written = memory.writer().commit(write)?;
                memory.shared().storage_works();
                memory.after_write(written);
                Ok::<(), Error>(())
            })
            .await;
            if let Err(e) = committed {
                self.memory.report_io(&e);
            }
        }
        // After the await: the caller's next step runs in this same poll.
        self.mode.record(false, self.key);
        self.mode.record_why(self.why.take().map(|why| *why));
        value
    }

    /// [`store_result`](Pending::store_result) for async code.
    pub async fn store_result_async<E>(self, result: Result<T, E>) -> Result<T, E> {
        match result {
            Ok(value) => Ok(self.store_async(value).await),
            Err(e) => {
                tracing::debug!(
                    "{}: returned an error; not stored",
                    self.function.full_name()
                );
                Err(e)
            }
        }
    }

    /// Logs the computation and encodes the value; `None` when there is
    /// nothing to write (no key, or the value cannot be encoded).
    fn prepare<'v>(&self, value: Value<'v, T>) -> Option<Write<'v>> {
        let duration = self.started.elapsed();
        crate::log::info!(
            "{}: computed in {:.3}s",
            self.function.full_name(),
            duration.as_secs_f64()
        );
        let key = self.key?;
        if let Some(least) = self
            .function
            .min_duration_of()
            .filter(|least| duration < *least)
        {
            crate::log::debug!(
                "{}: computed in {duration:?}, less than min_duration ({least:?}); not stored",
                self.function.full_name()
            );
            return None;
        }
        match self.memory.writer().prepare(self, &key, value, duration) {
            Ok(write) => Some(write),
            Err(e @ Error::Encode { .. }) => {
                crate::log::error!("{e}");
                None
            }
            Err(e) => {
                self.memory.report_io(&e);
                None
            }
        }
    }

    /// The key of this call (`None` when the arguments could not be hashed).
    pub fn key(&self) -> Option<Key> {
        self.key
    }
}

/// What a [`Pending`] stores: a value, or the bytes of a byte buffer in
/// two pieces ([`Pending::store_split`]).
enum Value<'v, T> {
    Whole(&'v T),
    Split(&'v [u8], &'v [u8]),
}

/// The byte buffer types [`Pending::store_split`] is for.
pub trait SplitBytes: Serialize + Sized + 'static {
    /// The value holding these bytes.
    #[doc(hidden)]
    fn from_bytes(bytes: Vec<u8>) -> Self;
}

impl SplitBytes for Vec<u8> {
    fn from_bytes(bytes: Vec<u8>) -> Self {
        bytes
    }
}

impl SplitBytes for crate::Mapped<Vec<u8>> {
    fn from_bytes(bytes: Vec<u8>) -> Self {
        crate::Mapped::from(bytes)
    }
}

impl<T: SplitBytes> Pending<'_, T> {
    /// Stores the bytes `head` followed by `tail`: the same entry as
    /// [`store`](Pending::store) of a `Vec<u8>` holding both, without
    /// joining them first. A large `tail` (1 MiB or more) is written
    /// straight from its memory, checksummed as it is written (for
    /// results made of a small header and a large block that lives
    /// elsewhere, such as a Python result's pickle and its array). A
    /// compressed function, or a small `tail`, gets the bytes joined and
    /// stored as `store` does. Storage problems are logged, never
    /// returned.
    ///
    /// ```
    /// use memento::{Function, Lookup, Memory};
    ///
    /// let dir = tempfile::tempdir().unwrap();
    /// let memory = Memory::new(dir.path());
    /// let f = Function::new("doc", "split");
    /// let head = b"a small header".to_vec();
    /// let tail = vec![7u8; 2 << 20];
    /// match memory.lookup::<Vec<u8>, _>(&f, &1u32) {
    ///     Lookup::Miss(pending) => pending.store_split(&head, &tail),
    ///     Lookup::Hit(_) => unreachable!("nothing is stored yet"),
    /// }
    /// let Lookup::Hit(stored) = memory.lookup::<Vec<u8>, _>(&f, &1u32) else {
    ///     panic!("stored above");
    /// };
    /// assert_eq!(stored, [head, tail].concat());
    /// ```
    pub fn store_split(mut self, head: &[u8], tail: &[u8]) {
        let compressed = !mapped::<T>() && self.function.compression() != codec::Compression::None;
        if compressed || tail.len() < codec::BORROW_TAIL {
            drop(self.store(T::from_bytes([head, tail].concat())));
            return;
        }
        let write = self.prepare(Value::Split(head, tail));
        self.publish(write);
    }
}

/// A result ready to be written, owning all it needs so that the writing
/// can move to another thread.
struct Write<'v> {
    key: Key,
    /// The function's record, checked (and written if missing) after the
    /// entry.
    record: Option<RecordWrite>,
    output: String,
    bytes: Vec<u8>,
    /// The entry's bytes after `bytes`: a large plain buffer's data,
    /// borrowed from the value (empty otherwise). When it is not empty, the
    /// checksum in `bytes` is still to be written.
    tail: &'v [u8],
    /// The entry's info, after `tail` (empty when `bytes` holds it).
    info: Vec<u8>,
    /// The postcard bytes, when `bytes` holds them compressed.
    plain: Option<Vec<u8>>,
    force: bool,
    created_ms: u64,
    keep_in_memory: bool,
    /// The function's folder, for the eviction index.
    folder: String,
    /// The call, recorded once stored (see `why.rs`).
    call: StoredCall,
}

impl Write<'_> {
    /// The same write, owning all its bytes (and its checksum written).
    fn into_owned(self, signer: Option<&codec::Signer>) -> Write<'static> {
        let mut bytes = self.bytes;
        if !self.tail.is_empty() {
            codec::seal_head(&mut bytes, self.tail, &self.info, signer, true);
            bytes.extend_from_slice(self.tail);
            bytes.extend_from_slice(&self.info);
        }
        Write {
            key: self.key,
            record: self.record,
            output: self.output,
            bytes,
            tail: &[],
            info: Vec::new(),
            plain: self.plain,
            force: self.force,
            created_ms: self.created_ms,
            keep_in_memory: self.keep_in_memory,
            folder: self.folder,
            call: self.call,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{Function, Lookup, Mapped, Memory};

    fn entries(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                entries(&path, out);
            } else if path.extension().is_some_and(|x| x == "bin") {
                out.push(path);
            }
        }
    }

    #[test]
    fn a_split_store_is_the_joined_entry_signed_checked_and_mapped() {
        let dir = tempfile::tempdir().unwrap();
        let memory = Memory::new(dir.path()).signing_key(b"secret");
        let f = Function::new("t", "split");
        let head = vec![1u8; 100];
        let tail: Vec<u8> = (0..3 << 20).map(|i| (i % 251) as u8).collect();
        let joined = [head.clone(), tail.clone()].concat();
        match memory.lookup::<Vec<u8>, _>(&f, &1u8) {
            Lookup::Miss(p) => p.store_split(&head, &tail),
            Lookup::Hit(_) => panic!("empty store"),
        }
        match memory.lookup::<Vec<u8>, _>(&f, &1u8) {
            Lookup::Hit(v) => assert_eq!(v, joined),
            Lookup::Miss(_) => panic!("stored above"),
        }
        // As a Mapped result too (the same key, the same entry).
        let mapping = memory.clone().map_signed(true);
        match mapping.lookup::<Mapped<Vec<u8>>, _>(&f, &2u8) {
            Lookup::Miss(p) => p.store_split(&head, &tail),
            Lookup::Hit(_) => panic!("empty store"),
        }
        match mapping.lookup::<Mapped<Vec<u8>>, _>(&f, &2u8) {
            Lookup::Hit(m) => {
                m.verify().unwrap();
                assert_eq!(&m[..], &joined[..]);
            }
            Lookup::Miss(_) => panic!("stored above"),
        }
        // A byte of the tail changed: refused (and removed), not served.
        let mut files = Vec::new();
        entries(dir.path(), &mut files);
        assert_eq!(files.len(), 2);
        for file in &files {
            let mut bytes = std::fs::read(file).unwrap();
            let at = bytes.len() - 1000;
            bytes[at] ^= 1;
            std::fs::write(file, bytes).unwrap();
        }
        assert!(matches!(
            memory.lookup::<Vec<u8>, _>(&f, &1u8),
            Lookup::Miss(_)
        ));
    }
}
