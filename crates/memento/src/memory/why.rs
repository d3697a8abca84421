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
use crate::entry::{finish_args_text, Room, ARGS_TEXT_ROOM};
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
    /// blake3 of the argument's canonical bytes (as `Key::of` hashes it);
    /// hex in `calls.json` (zeros when it could not be hashed).
    #[serde(with = "hex32")]
    digest: [u8; 32],
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
        // The key of these arguments was just computed on this thread:
        // their files' digests are taken from it, not read again.
        let (parts, text) =
            crate::file_ref::reusing_digests(|| match args.serialize(Split::new()) {
                Ok(rendered) => rendered,
                Err(_) => {
                    let text = crate::entry::args_text(args);
                    let part = ArgPart {
                        digest: digest(args),
                        text: short(&text),
                    };
                    (vec![part], text)
                }
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

/// `value`'s digest, as `Key::of` hashes it (zeros when it cannot be
/// hashed: such arguments compare equal).
fn digest<T: Serialize + ?Sized>(value: &T) -> [u8; 32] {
    Key::of(value).map_or([0; 32], |k| *k.as_bytes())
}

/// The JSON of `value`, cut to about [`SHORT`] characters: rendered once,
/// into one buffer that stops growing past the cut (what
/// `short(&entry::args_text(value))` gives, without its copies).
fn short_json<T: Serialize + ?Sized>(value: &T) -> String {
    /// Room for [`SHORT`] characters of up to 4 bytes, and one more.
    const ROOM: usize = SHORT * 4 + 4;
    let mut out = Vec::with_capacity(32);
    let complete = serde_json::to_writer(Room(&mut out, ROOM), value).is_ok();
    if !complete && out.is_empty() {
        return short(crate::entry::args_text(value).as_str());
    }
    let text = match String::from_utf8(out) {
        Ok(text) => text,
        // Cut inside a character.
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    };
    let mut text = text;
    match text.char_indices().nth(SHORT) {
        Some((cut, _)) => {
            text.truncate(cut);
            text.push('…');
        }
        // Its Serialize failed part way: cut there.
        None if !complete => text.push('…'),
        None => {}
    }
    text
}

/// 32 bytes as 64 hex digits in `calls.json` (an empty string reads as
/// zeros).
mod hex32 {
    use serde::{de, Deserialize, Deserializer, Serializer};

    use crate::key::Key;

    pub(super) fn serialize<S: Serializer>(bytes: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&Key::from_bytes(*bytes).hex())
    }

    pub(super) fn parse<E: de::Error>(text: &str) -> Result<[u8; 32], E> {
        if text.is_empty() {
            return Ok([0; 32]);
        }
        Key::from_hex(text)
            .map(|k| *k.as_bytes())
            .ok_or_else(|| E::custom(format!("not 64 hex digits: {text:?}")))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        parse(&String::deserialize(d)?)
    }

    /// The same for an `Option` (`null` when none).
    pub(super) mod option {
        use serde::{Deserialize, Deserializer, Serializer};

        use crate::key::Key;

        pub(in super::super) fn serialize<S: Serializer>(
            bytes: &Option<[u8; 32]>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match bytes {
                Some(bytes) => s.serialize_str(&Key::from_bytes(*bytes).hex()),
                None => s.serialize_none(),
            }
        }

        pub(in super::super) fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<[u8; 32]>, D::Error> {
            Option::<String>::deserialize(d)?
                .map(|text| super::parse(&text))
                .transpose()
        }
    }
}

/// A call of a function that was stored, as recorded in `calls.json`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, Deserialize)]
pub(crate) struct StoredCall {
    /// The key (hex in the file, as are the other digests).
    #[serde(with = "hex32")]
    key: [u8; 32],
    args: Vec<ArgPart>,
    /// The code's fingerprint (none for a `Function` without one).
    #[serde(with = "hex32::option")]
    code: Option<[u8; 32]>,
    /// The output type's shape hash.
    #[serde(with = "hex32")]
    output: [u8; 32],
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
            key: *self.key.as_bytes(),
            args: self.args.to_vec(),
            code: self.function.code(),
            output: *self.output,
            version: self.function.version_text().to_string(),
            duration: duration.as_secs_f64(),
            time_ms: now_ms(),
        }
    }

    /// What it is compared by, without copying it.
    fn parts(&self) -> Parts<'_> {
        Parts {
            key: self.key.as_bytes(),
            args: self.args,
            code: self.function.code(),
            output: self.output,
            version: self.function.version_text(),
        }
    }
}

/// The parts of a call's key that are compared: a stored call's, or
/// those of the call that missed (borrowed, so that a miss copies
/// nothing to compare).
struct Parts<'a> {
    key: &'a [u8; 32],
    args: &'a [ArgPart],
    code: Option<[u8; 32]>,
    output: &'a [u8; 32],
    version: &'a str,
}

impl StoredCall {
    fn parts(&self) -> Parts<'_> {
        Parts {
            key: &self.key,
            args: &self.args,
            code: self.code,
            output: &self.output,
            version: &self.version,
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
fn explain(calls: &[StoredCall], now: &Parts<'_>, names: &[String]) -> Why {
    if calls.is_empty() {
        return Why::FirstCall;
    }
    if calls.iter().any(|c| c.key == *now.key) {
        return Why::Changed(vec![Change::Gone]);
    }
    // Newest first: of equally near calls, the most recent wins.
    let mut best: Option<(usize, &StoredCall)> = None;
    for call in calls.iter().rev() {
        let n = distance(&call.parts(), now);
        if best.is_none_or(|(least, _)| n < least) {
            best = Some((n, call));
        }
    }
    let mut changes =
        best.map_or_else(Vec::new, |(_, call)| differences(&call.parts(), now, names));
    if changes.is_empty() {
        changes.push(Change::KeyFormat);
    }
    Why::Changed(changes)
}

/// How many parts of the key differ (what [`differences`] lists).
fn distance(old: &Parts<'_>, new: &Parts<'_>) -> usize {
    let args = (0..old.args.len().max(new.args.len()))
        .filter(|&i| old.args.get(i).map(|a| &a.digest) != new.args.get(i).map(|b| &b.digest))
        .count();
    usize::from(old.code != new.code)
        + usize::from(old.output != new.output)
        + usize::from(old.version != new.version)
        + args
}

fn differences(old: &Parts<'_>, new: &Parts<'_>, names: &[String]) -> Vec<Change> {
    let mut changes = Vec::new();
    if old.code != new.code {
        changes.push(Change::Code);
    }
    if old.output != new.output {
        changes.push(Change::OutputType);
    }
    if old.version != new.version {
        changes.push(Change::Version {
            old: old.version.to_string(),
            new: new.version.to_string(),
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

fn merge_misses<M: Clone + Timed>(into: &mut Vec<M>, from: &[M]) {
    for miss in from {
        if !into.iter().any(|m| m.same(miss)) {
            into.push(miss.clone());
        }
    }
    // Stable: ties stay in the order met.
    into.sort_by_key(|m| m.time_ms());
    let extra = into.len().saturating_sub(KEPT_MISSES);
    into.drain(..extra);
}

/// A miss, as merged: by time, one per time and key.
trait Timed {
    fn time_ms(&self) -> u64;
    fn same(&self, other: &Self) -> bool;
}

impl Timed for Miss {
    fn time_ms(&self) -> u64 {
        self.time_ms
    }
    fn same(&self, other: &Miss) -> bool {
        self.time_ms == other.time_ms && self.key == other.key
    }
}

/// A miss as this process keeps it until it is written or listed: its key
/// as bytes (made hex then, not on each miss).
#[derive(Clone)]
struct Recorded {
    time_ms: u64,
    key: [u8; 32],
    why: Why,
}

impl Timed for Recorded {
    fn time_ms(&self) -> u64 {
        self.time_ms
    }
    fn same(&self, other: &Recorded) -> bool {
        self.time_ms == other.time_ms && self.key == other.key
    }
}

impl Recorded {
    fn miss(&self) -> Miss {
        Miss {
            time_ms: self.time_ms,
            key: Key::from_bytes(self.key).to_hex(),
            why: self.why.clone(),
        }
    }

    /// `misses` (from `calls.json`) as kept in memory; one whose key is
    /// not hex is left to the file.
    fn all(misses: &[Miss]) -> Vec<Recorded> {
        misses
            .iter()
            .filter_map(|m| {
                Some(Recorded {
                    time_ms: m.time_ms,
                    key: *Key::from_hex(&m.key)?.as_bytes(),
                    why: m.why.clone(),
                })
            })
            .collect()
    }
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
    /// Oldest first; up to twice [`KEPT_CALLS`], of which the last count
    /// (see [`trim`]).
    calls: Vec<StoredCall>,
    /// Oldest first; up to twice [`KEPT_MISSES`], as `calls`.
    misses: Vec<Recorded>,
    /// Computations stored since the last write, and their total time.
    computed: u64,
    compute_seconds: f64,
    /// Anything not yet written?
    dirty: bool,
}

/// The last `kept` of `list`.
fn recent<T>(list: &[T], kept: usize) -> &[T] {
    &list[list.len().saturating_sub(kept)..]
}

/// Cuts `list` to its last `kept` once it holds twice as many: one cut
/// every `kept` records, not one per record (each would move the whole
/// list). What reads the list takes its last `kept` ([`recent`], the
/// merges).
fn trim<T>(list: &mut Vec<T>, kept: usize) {
    if list.len() >= 2 * kept {
        list.drain(..list.len() - kept);
    }
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
        // What it records before the process exits is written then (once
        // here, not on each miss).
        flush_at_exit();
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
            merge_misses(&mut state.misses, &Recorded::all(&file.misses));
        });
    }

    /// Explains a miss of `now` and records it; returns why when
    /// `wanted`.
    pub(super) fn missed(&self, now: &Current<'_>, wanted: bool) -> Option<Why> {
        let time_ms = now_ms();
        let mut state = self.state();
        let why = explain(
            recent(&state.calls, KEPT_CALLS),
            &now.parts(),
            now.function.argument_names_list(),
        );
        let copy = wanted.then(|| why.clone());
        state.misses.push(Recorded {
            time_ms,
            key: *now.key.as_bytes(),
            why,
        });
        trim(&mut state.misses, KEPT_MISSES);
        state.dirty = true;
        copy
    }

    /// Records a stored call.
    pub(super) fn stored(&self, call: StoredCall) {
        let mut state = self.state();
        state.computed += 1;
        state.compute_seconds += call.duration;
        state.calls.retain(|c| c.key != call.key);
        state.calls.push(call);
        trim(&mut state.calls, KEPT_CALLS);
        state.dirty = true;
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
                state.misses.iter().map(Recorded::miss).collect::<Vec<_>>(),
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
        merge_misses(&mut state.misses, &Recorded::all(&file.misses));
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
            let own: Vec<Miss> = calls.state().misses.iter().map(Recorded::miss).collect();
            merge_misses(misses, &own);
        }
        misses.reverse();
    }
}

/// Splits a tuple of arguments into its parts; anything else is an error
/// (and then one argument). The text of the whole tuple is written as the
/// elements are, each element's short text taken from it: the arguments
/// are rendered once.
struct Split {
    parts: Vec<ArgPart>,
    /// The tuple's JSON as `entry::args_text` writes it (as much as fits
    /// in its room).
    text: Vec<u8>,
    /// The text stopped: out of room, or an element's `Serialize` failed.
    stopped: bool,
}

/// A tuple's parts and text.
type Rendered = (Vec<ArgPart>, String);

impl Split {
    fn new() -> Split {
        Split {
            parts: Vec::new(),
            text: Vec::with_capacity(64),
            stopped: false,
        }
    }
}

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
    type Ok = Rendered;
    type Error = NotATuple;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), NotATuple> {
        use std::io::Write;
        let mut text = None;
        if !self.stopped {
            let first = self.parts.is_empty();
            self.stopped = !first
                && Room(&mut self.text, ARGS_TEXT_ROOM)
                    .write_all(b",")
                    .is_err();
            let start = self.text.len();
            if !self.stopped {
                self.stopped =
                    serde_json::to_writer(Room(&mut self.text, ARGS_TEXT_ROOM), value).is_err();
            }
            if !self.stopped {
                // Whole, so valid UTF-8.
                text = std::str::from_utf8(&self.text[start..]).ok().map(short);
            }
        }
        self.parts.push(ArgPart {
            digest: digest(value),
            text: text.unwrap_or_else(|| short_json(value)),
        });
        Ok(())
    }
    fn end(mut self) -> Result<Rendered, NotATuple> {
        use std::io::Write;
        let complete =
            !self.stopped && Room(&mut self.text, ARGS_TEXT_ROOM).write_all(b"]").is_ok();
        Ok((self.parts, finish_args_text(self.text, complete)))
    }
}

macro_rules! not_a_tuple {
    ($($method:ident($($arg:ty),*);)*) => {$(
        fn $method(self, $(_: $arg),*) -> Result<Rendered, NotATuple> {
            Err(NotATuple)
        }
    )*};
}

type No = Impossible<Rendered, NotATuple>;

impl ser::Serializer for Split {
    type Ok = Rendered;
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

    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<Rendered, NotATuple> {
        Err(NotATuple)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: &T,
    ) -> Result<Rendered, NotATuple> {
        Err(NotATuple)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<Rendered, NotATuple> {
        Err(NotATuple)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<No, NotATuple> {
        Err(NotATuple)
    }
    fn serialize_tuple(mut self, _: usize) -> Result<Split, NotATuple> {
        self.text.push(b'[');
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
        assert_eq!(parts[0].digest, *Key::of(&1u32).unwrap().as_bytes());
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
    fn the_text_of_the_arguments_is_entry_args_text() {
        struct Fails;
        impl Serialize for Fails {
            fn serialize<S: ser::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
                Err(ser::Error::custom("no"))
            }
        }
        let long = "y".repeat(3000);
        let wide = "é".repeat(700);
        fn check<A: Serialize + ?Sized>(args: &A) {
            let rendered = CallArgs::of(args);
            assert_eq!(rendered.text, crate::entry::args_text(args));
        }
        check(&(1u32, "a"));
        check(&(0.5f64,));
        check(&(long.as_str(), 2u8));
        check(&(1u8, long.as_str()));
        check(&(wide.as_str(), wide.as_str()));
        check(&("x".repeat(1020), 12345u32));
        check(&(1u8, Fails, 2u8));
        check(&(Fails,));
        check(&vec![1u8, 2]);
        check("a str");
        check(&());
        let parts = CallArgs::of(&(1u8, Fails, long.as_str())).parts;
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0].text, "1");
        assert_eq!(parts[1].text, "<arguments not printable as JSON>");
        assert_eq!(parts[2].text, short(&format!("{long:?}")));
    }

    #[test]
    fn a_short_rendering_is_the_cut_of_the_full_one() {
        let values = [
            serde_json::json!(0.1),
            serde_json::json!("x".repeat(500)),
            serde_json::json!("é".repeat(300)),
            serde_json::json!(["a", 1, null]),
            serde_json::json!("a".repeat(SHORT)),
        ];
        for value in &values {
            assert_eq!(
                short_json(value),
                short(&crate::entry::args_text(value)),
                "{value}"
            );
        }
    }

    #[test]
    fn digests_are_hex_in_calls_json_and_read_back() {
        let call = StoredCall {
            key: [0xab; 32],
            args: CallArgs::of(&(1u32,)).parts,
            code: Some([1; 32]),
            output: [2; 32],
            version: "v".into(),
            duration: 0.5,
            time_ms: 7,
        };
        let json = serde_json::to_value(&call).unwrap();
        assert_eq!(json["key"], "ab".repeat(32));
        assert_eq!(json["code"], "01".repeat(32));
        assert_eq!(json["args"][0]["digest"], Key::of(&1u32).unwrap().to_hex());
        let back: StoredCall = serde_json::from_value(json).unwrap();
        assert_eq!(back, call);
        let none = StoredCall { code: None, ..call };
        let json = serde_json::to_value(&none).unwrap();
        assert!(json["code"].is_null());
        assert_eq!(serde_json::from_value::<StoredCall>(json).unwrap(), none);
    }

    #[test]
    fn the_nearest_call_is_the_one_with_the_fewest_differences() {
        let call = |key: u8, a: &str, b: &str| StoredCall {
            key: [key; 32],
            args: [a, b]
                .iter()
                .map(|t| ArgPart {
                    digest: *Key::of(t).unwrap().as_bytes(),
                    text: t.to_string(),
                })
                .collect(),
            code: None,
            output: [0; 32],
            version: String::new(),
            duration: 0.0,
            time_ms: 0,
        };
        let stored = [call(1, "1", "2"), call(2, "5", "6")];
        let names = ["a".to_string()];
        let why = explain(&stored, &call(3, "1", "3").parts(), &names);
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
            explain(&stored, &call(2, "5", "6").parts(), &names),
            Why::Changed(vec![Change::Gone])
        );
        assert_eq!(
            explain(&[], &call(9, "1", "2").parts(), &names),
            Why::FirstCall
        );
    }

    #[test]
    fn merging_keeps_the_latest_of_each_key_and_the_most_recent() {
        let mut calls = Vec::new();
        let new = |i: u64, key: u8| StoredCall {
            key: [key; 32],
            args: Vec::new(),
            code: None,
            output: [0; 32],
            version: String::new(),
            duration: 0.0,
            time_ms: i,
        };
        let many: Vec<StoredCall> = (0..40).map(|i| new(i, i as u8)).collect();
        merge_calls(&mut calls, &many);
        merge_calls(&mut calls, &[new(100, 39)]);
        assert_eq!(calls.len(), KEPT_CALLS);
        assert_eq!(calls.last().unwrap().time_ms, 100);
        assert_eq!(calls.iter().filter(|c| c.key == [39; 32]).count(), 1);
    }
}
