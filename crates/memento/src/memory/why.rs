//! Why a call missed: what differed from the nearest call of the same
//! function that was stored.
//!
//! A 30-minute computation that runs again unexpectedly is the most common
//! complaint about memoizers. The key of a call is one hash, which cannot
//! say what changed; so, on a miss, memento compares the parts of the key
//! (the code's fingerprint, the output type's shape, the version, each
//! argument's digest) with those of the function's recently stored calls,
//! and names what differs from the nearest one ([`Why`]).
//!
//! What it compares with is kept per function in `calls.json`, in the
//! function's folder (see `docs/ARCHITECTURE.md`, "Why a call missed"):
//! the last [`KEPT_CALLS`] stored calls and the last [`KEPT_MISSES`] misses
//! with their reasons. It is off the hit path: read once per function and
//! process, at the function's first miss (where `function.json` is read),
//! kept in memory, updated on each miss, and written in batches (at most
//! about once every [`FLUSH_SECONDS`], when the last `Memory` over the
//! location goes, and at exit), merged with what other processes wrote.
//! The same file keeps the count and total time of the computations
//! stored, from which [`Memory::stats`](crate::Memory::stats) reports what
//! the cache saved.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::ser::{self, Impossible, Serialize};
use serde::Deserialize;

use super::Memory;
use crate::error::{Error, Result};
use crate::evict::FunctionStats;
use crate::function::Function;
use crate::key::Key;
use crate::store::Store;

/// Why a call computed its result instead of reading it: what
/// [`Outcome::why`](crate::Outcome::why) holds after a miss, and what
/// `memento why FUNCTION` lists.
///
/// ```
/// use memento::{Change, Function, Memory, Why};
///
/// # let dir = tempfile::tempdir().unwrap();
/// let memory = Memory::new(dir.path());
/// let f = Function::new("docs", "scale").argument_names(["x", "factor"]);
/// let _: f64 = memory.call(&f, &(2.0f64, 10u32), || 20.0);
/// let _: f64 = memory.call(&f, &(2.0f64, 100u32), || 200.0);
///
/// let misses = memory.recent_misses_of(&f);
/// // Newest first: the second call differed from the first in `factor`.
/// assert_eq!(
///     misses[0].why,
///     Why::Changed(vec![Change::Argument {
///         index: 1,
///         name: Some("factor".into()),
///         old: "10".into(),
///         new: "100".into(),
///     }])
/// );
/// assert_eq!(misses[0].why.to_string(), "argument factor changed: 10 → 100");
/// assert_eq!(misses[1].why, Why::FirstCall);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Why {
    /// No stored call of the function is recorded at this location (its
    /// first call, or its first since the cache was cleared).
    FirstCall,
    /// What differs from the nearest stored call (the one with the fewest
    /// differences; the most recent of those).
    Changed(Vec<Change>),
}

/// One difference between a call that missed and the nearest stored call.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Change {
    /// The code's fingerprint differs: the function's body changed, or a
    /// helper named in its `depends(..)`.
    Code,
    /// The output type's shape differs.
    OutputType,
    /// The manual version differs.
    Version {
        /// The stored call's version.
        old: String,
        /// This call's.
        new: String,
    },
    /// An argument differs (its digest: its canonical bytes' hash).
    Argument {
        /// Its position among the keyed arguments (then the type and const
        /// parameters of a generic function).
        index: usize,
        /// Its name, when known (`#[memento::cache]` knows them;
        /// [`Function::argument_names`] gives them).
        name: Option<String>,
        /// A short rendering of the stored call's value (JSON, cut to about
        /// 60 characters).
        old: String,
        /// A short rendering of this call's value.
        new: String,
    },
    /// This very call was stored and is no longer: evicted, cleared,
    /// expired, or removed as damaged.
    Gone,
    /// Nothing recorded differs, yet the key does: the key format changed
    /// (another memento version stored the call).
    KeyFormat,
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Why::FirstCall => {
                f.write_str("first call: no stored call of this function is recorded")
            }
            Why::Changed(changes) => {
                for (i, change) in changes.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "{change}")?;
                }
                Ok(())
            }
        }
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Code => f.write_str("the code changed (its body or a depends(..) helper)"),
            Change::OutputType => f.write_str("the output type changed"),
            Change::Version { old, new } => write!(f, "the version changed: {old:?} → {new:?}"),
            Change::Argument {
                index,
                name,
                old,
                new,
            } => {
                match name {
                    Some(name) => write!(f, "argument {name} changed")?,
                    None => write!(f, "argument #{index} changed")?,
                }
                if old == new {
                    // A FileRef whose file changed, or a difference past
                    // the cut of the renderings.
                    write!(f, " (its contents; it reads {new})")
                } else {
                    write!(f, ": {old} → {new}")
                }
            }
            Change::Gone => f.write_str(
                "the same call was stored and is gone (evicted, cleared, expired or damaged)",
            ),
            Change::KeyFormat => {
                f.write_str("the key format changed (stored by another memento version)")
            }
        }
    }
}

/// A call that missed, as recorded in the function's `calls.json`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
#[non_exhaustive]
pub struct Miss {
    /// When, in milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// The call's key (hex).
    pub key: String,
    /// Why it missed.
    pub why: Why,
}

impl Miss {
    /// When it missed.
    pub fn time(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.time_ms)
    }
}

/// How many stored calls `calls.json` keeps (the most recent).
pub const KEPT_CALLS: usize = 16;
/// How many misses `calls.json` keeps (the most recent).
pub const KEPT_MISSES: usize = 32;
/// `calls.json` is written at most this often by one process (and when the
/// last `Memory` over the location goes, and at exit).
pub const FLUSH_SECONDS: u64 = 1;
/// The format of `calls.json`; a file of another format is ignored and
/// rewritten.
const FORMAT: u32 = 1;
/// Renderings of arguments are cut to about this many characters.
const SHORT: usize = 60;

/// One argument of a call: its digest and a short rendering.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
pub(crate) struct ArgPart {
    /// blake3 of the argument's canonical bytes (as `Key::of` hashes it),
    /// hex.
    digest: String,
    /// JSON, cut to about [`SHORT`] characters.
    text: String,
}

/// A call's arguments, rendered on a miss: the text of the entry's info,
/// and each argument's part.
#[derive(Debug, Default)]
pub(crate) struct CallArgs {
    pub(crate) text: String,
    pub(crate) parts: Vec<ArgPart>,
}

impl CallArgs {
    /// Renders `args` (a tuple is a list of arguments; anything else is
    /// one). Run on a miss only: it hashes each argument again.
    pub(crate) fn of<A: Serialize + ?Sized>(args: &A) -> CallArgs {
        let text = crate::entry::args_text(args);
        // The key of these arguments was just computed on this thread:
        // their files' digests are taken from it, not read again.
        let parts = crate::file_ref::reusing_digests(|| match args.serialize(Split(Vec::new())) {
            Ok(parts) => parts,
            Err(_) => vec![ArgPart {
                digest: Key::of(args).map(|k| k.to_hex()).unwrap_or_default(),
                text: short(&text),
            }],
        });
        CallArgs { text, parts }
    }
}

/// Cuts `text` to about [`SHORT`] characters.
fn short(text: &str) -> String {
    match text.char_indices().nth(SHORT) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// A call of a function that was stored, as recorded in `calls.json`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, Deserialize)]
pub(crate) struct StoredCall {
    key: String,
    args: Vec<ArgPart>,
    /// The code's fingerprint, hex (none for a `Function` without one).
    code: Option<String>,
    /// The output type's shape hash, hex.
    output: String,
    version: String,
    /// Seconds it took to compute.
    duration: f64,
    /// When it was stored, in milliseconds since the Unix epoch.
    time_ms: u64,
}

/// What a call that missed is compared by.
pub(crate) struct Current<'a> {
    pub(crate) key: &'a Key,
    pub(crate) args: &'a [ArgPart],
    pub(crate) function: &'a Function,
    pub(crate) output: &'a [u8; 32],
}

impl Current<'_> {
    /// The record of this call, stored after `duration` of computing.
    pub(crate) fn stored(&self, duration: Duration) -> StoredCall {
        StoredCall {
            key: self.key.to_hex(),
            args: self.args.to_vec(),
            code: self.function.code().as_ref().map(crate::function::hex),
            output: crate::function::hex(self.output),
            version: self.function.version_text().to_string(),
            duration: duration.as_secs_f64(),
            time_ms: now_ms(),
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

/// Compares a call that missed with the stored calls (oldest first).
fn explain(calls: &[StoredCall], now: &StoredCall, names: &[String]) -> Why {
    if calls.is_empty() {
        return Why::FirstCall;
    }
    if calls.iter().any(|c| c.key == now.key) {
        return Why::Changed(vec![Change::Gone]);
    }
    // Newest first: of equally near calls, the most recent wins.
    let mut best: Option<(usize, &StoredCall)> = None;
    for call in calls.iter().rev() {
        let n = distance(call, now);
        if best.is_none_or(|(least, _)| n < least) {
            best = Some((n, call));
        }
    }
    let mut changes = best.map_or_else(Vec::new, |(_, call)| differences(call, now, names));
    if changes.is_empty() {
        changes.push(Change::KeyFormat);
    }
    Why::Changed(changes)
}

/// How many parts of the key differ (what [`differences`] lists).
fn distance(old: &StoredCall, new: &StoredCall) -> usize {
    let args = (0..old.args.len().max(new.args.len()))
        .filter(|&i| old.args.get(i).map(|a| &a.digest) != new.args.get(i).map(|b| &b.digest))
        .count();
    usize::from(old.code != new.code)
        + usize::from(old.output != new.output)
        + usize::from(old.version != new.version)
        + args
}

fn differences(old: &StoredCall, new: &StoredCall, names: &[String]) -> Vec<Change> {
    let mut changes = Vec::new();
    if old.code != new.code {
        changes.push(Change::Code);
    }
    if old.output != new.output {
        changes.push(Change::OutputType);
    }
    if old.version != new.version {
        changes.push(Change::Version {
            old: old.version.clone(),
            new: new.version.clone(),
        });
    }
    for index in 0..old.args.len().max(new.args.len()) {
        let (a, b) = (old.args.get(index), new.args.get(index));
        if a.map(|a| &a.digest) != b.map(|b| &b.digest) {
            let text = |p: Option<&ArgPart>| p.map_or_else(|| "(none)".into(), |p| p.text.clone());
            changes.push(Change::Argument {
                index,
                name: names.get(index).cloned(),
                old: text(a),
                new: text(b),
            });
        }
    }
    changes
}

/// `calls.json`.
#[derive(Debug, Default, serde::Serialize, Deserialize)]
struct CallsFile {
    format: u32,
    /// Stored calls, oldest first.
    calls: Vec<StoredCall>,
    /// Misses, oldest first.
    misses: Vec<Miss>,
    /// How many computations were stored, all told.
    computed: u64,
    /// How long they took, all told, in seconds.
    compute_seconds: f64,
}

impl CallsFile {
    /// Reads `calls.json` in `folder`; missing, unreadable or of another
    /// format: empty (said at debug level).
    fn read(store: &dyn Store, folder: &str) -> CallsFile {
        CallsFile::try_read(store, folder).unwrap_or_else(|e| {
            tracing::debug!("memento: {e}; the calls recorded there are not seen");
            CallsFile::default()
        })
    }

    /// [`read`](CallsFile::read), with the store's error when it cannot
    /// be read.
    fn try_read(store: &dyn Store, folder: &str) -> Result<CallsFile> {
        let name = crate::layout::calls(folder);
        let mut buf = Vec::new();
        if !store.read(&name, &mut buf)? {
            return Ok(CallsFile::default());
        }
        Ok(match serde_json::from_slice::<CallsFile>(&buf) {
            Ok(file) if file.format == FORMAT => file,
            Ok(file) => {
                tracing::debug!(
                    "memento: {name} is of format {}, not {FORMAT}; ignored and rewritten",
                    file.format
                );
                CallsFile::default()
            }
            Err(e) => {
                tracing::debug!("memento: {name} is unreadable ({e}); ignored and rewritten");
                CallsFile::default()
            }
        })
    }

    /// Merges `other`'s calls and misses into this one's (by key and time),
    /// keeping the most recent.
    fn merge(&mut self, calls: &[StoredCall], misses: &[Miss]) {
        merge_calls(&mut self.calls, calls);
        merge_misses(&mut self.misses, misses);
    }
}

fn merge_calls(into: &mut Vec<StoredCall>, from: &[StoredCall]) {
    // One per key, the latest; in order of time, ties in the order met
    // (the file's, then this process's).
    let mut calls: Vec<StoredCall> = Vec::with_capacity(into.len() + from.len());
    for call in into.drain(..).chain(from.iter().cloned()) {
        match calls.iter_mut().find(|kept| kept.key == call.key) {
            Some(kept) if kept.time_ms > call.time_ms => {}
            Some(kept) => *kept = call,
            None => calls.push(call),
        }
    }
    calls.sort_by_key(|c| c.time_ms);
    let extra = calls.len().saturating_sub(KEPT_CALLS);
    calls.drain(..extra);
    *into = calls;
}

fn merge_misses(into: &mut Vec<Miss>, from: &[Miss]) {
    for miss in from {
        if !into
            .iter()
            .any(|m| m.time_ms == miss.time_ms && m.key == miss.key)
        {
            into.push(miss.clone());
        }
    }
    // Stable: ties stay in the order met.
    into.sort_by_key(|m| m.time_ms);
    let extra = into.len().saturating_sub(KEPT_MISSES);
    into.drain(..extra);
}

/// The calls of one function folder in this process: what `calls.json`
/// held when first read, merged with this process's stored calls and
/// misses; the computations not yet added to the file's totals.
#[derive(Default)]
pub(super) struct Calls {
    loaded: OnceLock<()>,
    state: Mutex<State>,
    /// When it was last written (seconds on this process's clock); a
    /// write is due [`FLUSH_SECONDS`] later.
    flushed: AtomicU64,
}

#[derive(Default)]
struct State {
    calls: Vec<StoredCall>,
    misses: Vec<Miss>,
    /// Computations stored since the last write, and their total time.
    computed: u64,
    compute_seconds: f64,
    /// Anything not yet written?
    dirty: bool,
}

/// Seconds on this process's clock.
fn clock() -> u64 {
    static START: LazyLock<Instant> = LazyLock::new(Instant::now);
    START.elapsed().as_secs()
}

impl Calls {
    pub(super) fn new() -> Calls {
        let calls = Calls::default();
        calls.flushed.store(clock(), Ordering::Relaxed);
        calls
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads `calls.json` of `folder`, once per process.
    pub(super) fn load(&self, store: &dyn Store, folder: &str) {
        self.loaded.get_or_init(|| {
            let file = CallsFile::read(store, folder);
            let mut state = self.state();
            merge_calls(&mut state.calls, &file.calls);
            merge_misses(&mut state.misses, &file.misses);
        });
    }

    /// Explains a miss of `now` and records it; returns why.
    pub(super) fn missed(&self, now: &Current<'_>) -> Why {
        let call = now.stored(Duration::ZERO);
        let mut state = self.state();
        let why = explain(&state.calls, &call, now.function.argument_names_list());
        let miss = Miss {
            time_ms: call.time_ms,
            key: call.key,
            why: why.clone(),
        };
        state.misses.push(miss);
        let extra = state.misses.len().saturating_sub(KEPT_MISSES);
        state.misses.drain(..extra);
        state.dirty = true;
        drop(state);
        flush_at_exit();
        why
    }

    /// Records a stored call.
    pub(super) fn stored(&self, call: StoredCall) {
        let mut state = self.state();
        state.computed += 1;
        state.compute_seconds += call.duration;
        state.calls.retain(|c| c.key != call.key);
        state.calls.push(call);
        let extra = state.calls.len().saturating_sub(KEPT_CALLS);
        state.calls.drain(..extra);
        state.dirty = true;
        drop(state);
        flush_at_exit();
    }

    /// Writes `calls.json` if [`FLUSH_SECONDS`] passed since the last
    /// write and there is something to write.
    pub(super) fn flush_if_due(&self, store: &dyn Store, folder: &str, report: impl Fn(&Error)) {
        let now = clock();
        let last = self.flushed.load(Ordering::Relaxed);
        if now >= last + FLUSH_SECONDS
            && self.state().dirty
            && self
                .flushed
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.flush(store, folder, report);
        }
    }

    /// Merges what this process recorded into `calls.json` of `folder`
    /// (read, merge, atomic replace). Not when the function has no record
    /// (`function.json`): its results were cleared since, and the file
    /// would make a folder of a function without results.
    pub(super) fn flush(&self, store: &dyn Store, folder: &str, report: impl Fn(&Error)) {
        let (calls, misses, computed, seconds) = {
            let mut state = self.state();
            if !state.dirty {
                return;
            }
            let mut probe = Vec::new();
            if !matches!(
                store.read_range(&crate::layout::record(folder), 0..1, &mut probe),
                Ok(true)
            ) {
                return;
            }
            state.dirty = false;
            let taken = (
                state.calls.clone(),
                state.misses.clone(),
                state.computed,
                state.compute_seconds,
            );
            state.computed = 0;
            state.compute_seconds = 0.0;
            taken
        };
        let mut file = CallsFile::read(store, folder);
        file.format = FORMAT;
        file.merge(&calls, &misses);
        file.computed += computed;
        file.compute_seconds += seconds;
        let json = serde_json::to_vec(&file).unwrap_or_default();
        // Read, merge, replace: two processes writing at once may lose
        // one's latest records; they explain misses, and count statistics.
        if let Err(e) = store.write(&crate::layout::calls(folder), &json) {
            report(&e);
        }
        // What other processes wrote is seen from now on too.
        let mut state = self.state();
        merge_calls(&mut state.calls, &file.calls);
        merge_misses(&mut state.misses, &file.misses);
    }
}

/// Records still in memory at exit are written then (see `crate::exit`),
/// with the hit counts.
fn flush_at_exit() {
    crate::exit::on_exit("hit counts", super::shared::flush_every_location);
}

/// The count and total time of the computations stored for the function
/// whose folder is `folder`, from its `calls.json` (for the statistics).
pub(crate) fn computed(store: &dyn Store, folder: &str) -> Option<(u64, f64)> {
    let file = CallsFile::read(store, folder);
    (file.computed > 0).then_some((file.computed, file.compute_seconds))
}

impl Memory {
    /// The recent misses of the function listed as `function` (by
    /// [`stats`](Memory::stats)) and why each missed, newest first: those
    /// written to its `calls.json` (by every process), with this process's
    /// not yet written.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let memory = memento::Memory::new(dir.path());
    /// let f = memento::Function::new("docs", "double");
    /// let _: u32 = memory.call(&f, &(1u32,), || 2);
    /// let _: u32 = memory.call(&f, &(2u32,), || 4);
    /// let stats = memory.stats().unwrap();
    /// let misses = memory.recent_misses(&stats.functions[0]).unwrap();
    /// assert_eq!(misses.len(), 2);
    /// assert_eq!(misses[0].why.to_string(), "argument #0 changed: 1 → 2");
    /// ```
    ///
    /// # Errors
    /// [`Error::Io`] when the store cannot read `calls.json` (a file that
    /// does not parse, or of another format, counts as empty).
    pub fn recent_misses(&self, function: &FunctionStats) -> Result<Vec<Miss>> {
        self.misses_in(&function.folder)
    }

    /// [`recent_misses`](Memory::recent_misses) of a [`Function`]; a store
    /// that cannot be read gives those of this process only (said at debug
    /// level).
    pub fn recent_misses_of(&self, function: &Function) -> Vec<Miss> {
        self.misses_in(function.folder()).unwrap_or_else(|e| {
            tracing::debug!("memento: {e}");
            let mut misses = Vec::new();
            self.merge_own_misses(function.folder(), &mut misses);
            misses
        })
    }

    fn misses_in(&self, folder: &str) -> Result<Vec<Miss>> {
        let mut misses = CallsFile::try_read(self.store(), folder)?.misses;
        self.merge_own_misses(folder, &mut misses);
        Ok(misses)
    }

    /// Merges this process's misses of `folder` into `misses` (oldest
    /// first), then turns them newest first.
    fn merge_own_misses(&self, folder: &str, misses: &mut Vec<Miss>) {
        if let Some(calls) = self.shared().functions().calls_of(folder) {
            merge_misses(misses, &calls.state().misses);
        }
        misses.reverse();
    }
}

/// Splits a tuple of arguments into its parts; anything else is an error
/// (and then one argument).
struct Split(Vec<ArgPart>);

#[derive(Debug)]
struct NotATuple;

impl fmt::Display for NotATuple {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a tuple")
    }
}

impl std::error::Error for NotATuple {}

impl ser::Error for NotATuple {
    fn custom<T: fmt::Display>(_: T) -> Self {
        NotATuple
    }
}

impl ser::SerializeTuple for Split {
    type Ok = Vec<ArgPart>;
    type Error = NotATuple;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), NotATuple> {
        self.0.push(ArgPart {
            digest: Key::of(value).map(|k| k.to_hex()).unwrap_or_default(),
            text: short(&crate::entry::args_text(value)),
        });
        Ok(())
    }
    fn end(self) -> Result<Vec<ArgPart>, NotATuple> {
        Ok(self.0)
    }
}

macro_rules! not_a_tuple {
    ($($method:ident($($arg:ty),*);)*) => {$(
        fn $method(self, $(_: $arg),*) -> Result<Vec<ArgPart>, NotATuple> {
            Err(NotATuple)
        }
    )*};
}

type No = Impossible<Vec<ArgPart>, NotATuple>;

impl ser::Serializer for Split {
    type Ok = Vec<ArgPart>;
    type Error = NotATuple;
    type SerializeSeq = No;
    type SerializeTuple = Split;
    type SerializeTupleStruct = No;
    type SerializeTupleVariant = No;
    type SerializeMap = No;
    type SerializeStruct = No;
    type SerializeStructVariant = No;

    not_a_tuple! {
        serialize_bool(bool);
        serialize_i8(i8);
        serialize_i16(i16);
        serialize_i32(i32);
        serialize_i64(i64);
        serialize_i128(i128);
        serialize_u8(u8);
        serialize_u16(u16);
        serialize_u32(u32);
        serialize_u64(u64);
        serialize_u128(u128);
        serialize_f32(f32);
        serialize_f64(f64);
        serialize_char(char);
        serialize_str(&str);
        serialize_bytes(&[u8]);
        serialize_none();
        serialize_unit();
        serialize_unit_struct(&'static str);
        serialize_unit_variant(&'static str, u32, &'static str);
    }

    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<Vec<ArgPart>, NotATuple> {
        Err(NotATuple)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: &T,
    ) -> Result<Vec<ArgPart>, NotATuple> {
        Err(NotATuple)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<Vec<ArgPart>, NotATuple> {
        Err(NotATuple)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<No, NotATuple> {
        Err(NotATuple)
    }
    fn serialize_tuple(self, _: usize) -> Result<Split, NotATuple> {
        Ok(self)
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<No, NotATuple> {
        Err(NotATuple)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<No, NotATuple> {
        Err(NotATuple)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<No, NotATuple> {
        Err(NotATuple)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<No, NotATuple> {
        Err(NotATuple)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<No, NotATuple> {
        Err(NotATuple)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tuple_is_split_into_its_arguments_and_anything_else_is_one() {
        let parts = CallArgs::of(&(1u32, "a")).parts;
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].digest, Key::of(&1u32).unwrap().to_hex());
        assert_eq!(
            (parts[0].text.as_str(), parts[1].text.as_str()),
            ("1", "\"a\"")
        );
        let one = CallArgs::of(&vec![1u8, 2]).parts;
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].text, "[1,2]");
        let long = CallArgs::of(&("x".repeat(500),)).parts;
        assert_eq!(long[0].text.chars().count(), SHORT + 1);
        assert!(long[0].text.ends_with('…'));
    }

    #[test]
    fn the_nearest_call_is_the_one_with_the_fewest_differences() {
        let call = |key: &str, a: &str, b: &str| StoredCall {
            key: key.into(),
            args: [a, b]
                .iter()
                .map(|t| ArgPart {
                    digest: t.to_string(),
                    text: t.to_string(),
                })
                .collect(),
            code: None,
            output: String::new(),
            version: String::new(),
            duration: 0.0,
            time_ms: 0,
        };
        let stored = [call("k1", "1", "2"), call("k2", "5", "6")];
        let names = ["a".to_string()];
        let why = explain(&stored, &call("k3", "1", "3"), &names);
        assert_eq!(
            why,
            Why::Changed(vec![Change::Argument {
                index: 1,
                name: None,
                old: "2".into(),
                new: "3".into()
            }])
        );
        assert_eq!(
            explain(&stored, &call("k2", "5", "6"), &names),
            Why::Changed(vec![Change::Gone])
        );
        assert_eq!(explain(&[], &call("k", "1", "2"), &names), Why::FirstCall);
    }

    #[test]
    fn merging_keeps_the_latest_of_each_key_and_the_most_recent() {
        let mut calls = Vec::new();
        let new = |i: u64, key: &str| StoredCall {
            key: key.into(),
            args: Vec::new(),
            code: None,
            output: String::new(),
            version: String::new(),
            duration: 0.0,
            time_ms: i,
        };
        let many: Vec<StoredCall> = (0..40).map(|i| new(i, &format!("k{i}"))).collect();
        merge_calls(&mut calls, &many);
        merge_calls(&mut calls, &[new(100, "k39")]);
        assert_eq!(calls.len(), KEPT_CALLS);
        assert_eq!(calls.last().unwrap().time_ms, 100);
        assert_eq!(calls.iter().filter(|c| c.key == "k39").count(), 1);
    }
}
