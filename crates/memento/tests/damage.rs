//! Never a wrong or damaged result: damaged entries, changed code, changed
//! output types, unwritable locations, full disks, unserializable values.

mod common;

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;

use common::{capture_logs, count, fresh_dir, outputs};
use memento::store::{LocalStore, Store};
use memento::{Function, Memory};
use serde::{Deserialize, Serialize};

/// Computes `f(x) = x * 2.5` through a *new* Memory (a new process, as far
/// as the cache can tell) and says whether it ran.
fn run(dir: &Path, x: f64) -> (f64, bool) {
    let memory = Memory::new(dir);
    let f = Function::new("damage", "scale");
    let mut ran = false;
    let y = memory.call(&f, &(x,), || {
        ran = true;
        x * 2.5
    });
    (y, ran)
}

fn damaged_case(name: &str, damage: impl FnOnce(&Path)) {
    let dir = fresh_dir(name);
    assert_eq!(run(&dir, 2.0), (5.0, true));
    assert_eq!(run(&dir, 2.0), (5.0, false), "{name}: stored");
    let out = outputs(&dir);
    assert_eq!(out.len(), 1);
    damage(&out[0]);
    let ((y, ran), logs) = capture_logs(|| run(&dir, 2.0));
    assert_eq!((y, ran), (5.0, true), "{name}: recomputed, never returned");
    assert!(logs.contains("damaged entry"), "{name}: {logs}");
    assert_eq!(count(&logs, "WARN"), 1, "{name}: {logs}");
    // The recomputed entry is whole again.
    assert_eq!(run(&dir, 2.0), (5.0, false), "{name}: rewritten");
}

#[test]
fn truncated_entry() {
    damaged_case("truncated", |p| {
        let bytes = fs::read(p).unwrap();
        fs::write(p, &bytes[..bytes.len() - 3]).unwrap();
    });
}

#[test]
fn truncated_to_half_a_header() {
    damaged_case("half-header", |p| {
        let bytes = fs::read(p).unwrap();
        fs::write(p, &bytes[..40]).unwrap();
    });
}

#[test]
fn flipped_byte_in_payload() {
    damaged_case("flipped", |p| {
        let mut bytes = fs::read(p).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(p, &bytes).unwrap();
    });
}

#[test]
fn flipped_byte_in_header() {
    damaged_case("flipped-header", |p| {
        let mut bytes = fs::read(p).unwrap();
        bytes[20] ^= 0x80; // inside the stored key
        fs::write(p, &bytes).unwrap();
    });
}

#[test]
fn empty_entry() {
    damaged_case("empty", |p| fs::write(p, b"").unwrap());
}

#[test]
fn wrong_format_version() {
    damaged_case("version", |p| {
        let mut bytes = fs::read(p).unwrap();
        bytes[4..6].copy_from_slice(&99u16.to_le_bytes());
        fs::write(p, &bytes).unwrap();
    });
}

#[test]
fn entry_of_another_key() {
    let dir = fresh_dir("moved");
    assert_eq!(run(&dir, 1.0), (2.5, true));
    assert_eq!(run(&dir, 3.0), (7.5, true));
    let out = outputs(&dir);
    // Put one key's (valid) entry in the other's place.
    fs::copy(&out[0], &out[1]).unwrap();
    let ((a, ran_a), logs) = capture_logs(|| (run(&dir, 1.0), run(&dir, 3.0)));
    assert_eq!([a.0, ran_a.0], [2.5, 7.5]);
    assert!(a.1 ^ ran_a.1, "exactly the overwritten one recomputes");
    assert!(logs.contains("belongs to another key"), "{logs}");
}

#[test]
fn edited_info_is_damage() {
    let dir = fresh_dir("edited-info");
    assert_eq!(run(&dir, 2.0), (5.0, true));
    let out = outputs(&dir);
    // The info (the arguments as text, at the end) is checksummed with the
    // value: an edit is caught, and the result recomputed.
    let mut bytes = fs::read(&out[0]).unwrap();
    let at = bytes.len() - 3;
    assert_eq!(&bytes[at - 4..at + 3], br#"[2.0]"}"#);
    bytes[at - 2] = b'5';
    fs::write(&out[0], &bytes).unwrap();
    let ((y, ran), logs) = capture_logs(|| run(&dir, 2.0));
    assert_eq!((y, ran), (5.0, true));
    assert!(logs.contains("checksum"), "{logs}");
    assert_eq!(run(&dir, 2.0), (5.0, false));
}

#[test]
fn garbled_function_record_drops_results() {
    let dir = fresh_dir("record");
    assert_eq!(run(&dir, 2.0), (5.0, true));
    let record = dir.join("damage/scale/function.json");
    let good = fs::read(&record).unwrap();
    fs::write(&record, b"{not json").unwrap();
    // A hit needs no record: the entry's key holds the code's fingerprint.
    assert_eq!(run(&dir, 2.0), (5.0, false));
    // The function's next miss finds the record unreadable, drops the
    // results it cannot vouch for, and writes the record again.
    let ((y, ran), logs) = capture_logs(|| run(&dir, 3.0));
    assert_eq!((y, ran), (7.5, true));
    assert!(logs.contains("damage::scale"), "{logs}");
    assert!(logs.contains("unreadable"), "{logs}");
    assert_eq!(fs::read(&record).unwrap(), good);
    assert_eq!(run(&dir, 2.0), (5.0, true));
    assert_eq!(run(&dir, 2.0), (5.0, false));
}

#[test]
fn changed_code_drops_old_results_with_a_warning() {
    let dir = fresh_dir("code");
    let v1 = Function::new("lab", "fit").__code([1; 32], "fn fit(x: u32) -> u32", false);
    let v2 = Function::new("lab", "fit").__code([2; 32], "fn fit(x: u32) -> u32", false);
    let runs = AtomicUsize::new(0);
    let call = |f: &Function, value: u32| -> u32 {
        Memory::new(&dir).call(f, &(7u32,), || {
            runs.fetch_add(1, SeqCst);
            value
        })
    };
    assert_eq!(call(&v1, 10), 10);
    assert_eq!(call(&v1, 99), 10);
    assert_eq!(outputs(&dir).len(), 1);
    let (y, logs) = capture_logs(|| call(&v2, 20));
    assert_eq!(y, 20, "new code, new result");
    assert!(
        logs.contains("lab::fit") && logs.contains("code or its output type changed"),
        "{logs}"
    );
    assert!(logs.contains("1 stored result(s) are removed"), "{logs}");
    assert_eq!(outputs(&dir).len(), 1, "only the new result is left");
    assert_eq!(call(&v2, 99), 20);
    // Reverting the code does not bring back a result that was removed.
    assert_eq!(call(&v1, 30), 30);
    assert_eq!(runs.load(SeqCst), 3);
}

mod before {
    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    pub struct Point {
        pub x: f64,
        pub y: f64,
    }
}

mod after {
    /// The same struct with its two fields swapped: postcard would decode
    /// old bytes into it without complaint, x into y and y into x.
    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    pub struct Point {
        pub y: f64,
        pub x: f64,
    }
}

#[test]
fn changed_output_type_is_never_decoded() {
    let dir = fresh_dir("shape");
    // The same function (same identity, same code) before and after the
    // output type's definition changed.
    let f = || Function::new("geo", "origin").__code([7; 32], "fn origin() -> Point", false);
    let p: before::Point = Memory::new(&dir).call(&f(), &(), || before::Point { x: 1.0, y: 2.0 });
    assert_eq!(p, before::Point { x: 1.0, y: 2.0 });
    let (q, logs) =
        capture_logs(|| Memory::new(&dir).call(&f(), &(), || after::Point { y: 20.0, x: 10.0 }));
    assert_eq!(
        q,
        after::Point { y: 20.0, x: 10.0 },
        "computed, not decoded"
    );
    assert!(logs.contains("output type changed"), "{logs}");
    let again: after::Point = Memory::new(&dir).call(&f(), &(), || unreachable!());
    assert_eq!(again, q);
}

#[test]
fn one_function_used_with_two_output_types() {
    let dir = fresh_dir("two-types");
    let memory = Memory::new(&dir);
    let f = Function::new("geo", "shared");
    let p: before::Point = memory.call(&f, &1u8, || before::Point { x: 1.0, y: 2.0 });
    let q: after::Point = memory.call(&f, &1u8, || after::Point { y: 3.0, x: 4.0 });
    assert_eq!(p, before::Point { x: 1.0, y: 2.0 });
    assert_eq!(q, after::Point { y: 3.0, x: 4.0 });
}

#[test]
fn unwritable_location_still_computes_with_one_warning() {
    // A folder below a regular file cannot be created, even by root.
    let dir = fresh_dir("unwritable");
    fs::create_dir_all(&dir).unwrap();
    let file = dir.join("a-file");
    fs::write(&file, b"x").unwrap();
    let memory = Memory::new(file.join("cache"));
    let f = Function::new("w", "double");
    let runs = AtomicUsize::new(0);
    let (values, logs) = capture_logs(|| {
        (0..5)
            .map(|i| {
                memory.call(&f, &(i % 2,), || {
                    runs.fetch_add(1, SeqCst);
                    (i % 2) * 2
                })
            })
            .collect::<Vec<u32>>()
    });
    assert_eq!(values, [0, 2, 0, 2, 0]);
    assert!(runs.load(SeqCst) >= 2);
    assert_eq!(count(&logs, "WARN"), 1, "{logs}");
    assert!(logs.contains("cannot"), "{logs}");
    assert!(logs.contains("MEMENTO_DIR"), "says what to do: {logs}");
}

#[test]
fn full_disk_keeps_what_is_stored() {
    let dir = fresh_dir("full");
    assert_eq!(run(&dir, 2.0), (5.0, true));
    // A disk that is full: every write fails with ENOSPC.
    let mut full = common::Hooked::new(&dir);
    full.disk_full = true;
    let memory = Memory::with_store(full);
    let f = Function::new("damage", "scale");
    let (out, logs) = capture_logs(|| {
        let old: f64 = memory.call(&f, &(2.0f64,), || unreachable!("stored before"));
        let new: f64 = memory.call(&f, &(3.0f64,), || 7.5);
        let again: f64 = memory.call(&f, &(4.0f64,), || 10.0);
        (old, new, again)
    });
    assert_eq!(out, (5.0, 7.5, 10.0));
    assert_eq!(count(&logs, "WARN"), 1, "{logs}");
    assert_eq!(outputs(&dir).len(), 1, "nothing stored is lost");
}

/// A value whose serialization fails.
#[derive(Debug, PartialEq, Deserialize)]
struct Refuses(u8);

impl Serialize for Refuses {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom(
            "this value refuses to be serialized",
        ))
    }
}

#[test]
fn unserializable_output_is_returned_with_an_error() {
    let dir = fresh_dir("unserializable");
    let memory = Memory::new(&dir);
    let f = Function::new("bad", "output");
    let (v, logs) = capture_logs(|| memory.call(&f, &1u8, || Refuses(3)));
    assert_eq!(v, Refuses(3));
    assert_eq!(count(&logs, "ERROR"), 1, "{logs}");
    assert!(logs.contains("bad::output"), "names the function: {logs}");
    assert!(logs.contains("Refuses"), "names the type: {logs}");
    assert!(outputs(&dir).is_empty());
}

#[test]
fn unserializable_argument_computes_without_cache() {
    let dir = fresh_dir("bad-arg");
    let memory = Memory::new(&dir);
    let f = Function::new("bad", "argument");
    let runs = AtomicUsize::new(0);
    let (v, logs) = capture_logs(|| {
        (0..2)
            .map(|_| {
                memory.call(&f, &Refuses(1), || {
                    runs.fetch_add(1, SeqCst);
                    5u8
                })
            })
            .collect::<Vec<_>>()
    });
    assert_eq!(v, [5, 5]);
    assert_eq!(runs.load(SeqCst), 2);
    assert!(logs.contains("bad::argument"), "{logs}");
    assert!(logs.contains("refuses to be serialized"), "{logs}");
}

#[test]
fn custom_store_through_the_trait() {
    let dir = fresh_dir("custom");
    let store: Arc<LocalStore> = Arc::new(LocalStore::new(&dir));
    assert!(store.publish("x/y.bin", b"1").unwrap());
    let mut buf = Vec::new();
    assert!(store.read_range("x/y.bin", 0..10, &mut buf).unwrap());
    assert_eq!(buf, b"1");
    assert!(store.write("../escape", b"no").is_err());
}

#[test]
fn signed_cache_refuses_unsigned_and_edited_entries() {
    let dir = fresh_dir("signed");
    let f = Function::new("trust", "answer");
    let plain = Memory::new(&dir);
    let _: u32 = plain.call(&f, &1u8, || 666);
    // With a key, the unsigned entry is recomputed, never returned.
    let signed = || Memory::new(&dir).signing_key("s3cret").in_memory_limit(0);
    let (v, logs) = capture_logs(|| signed().call(&f, &1u8, || 42u32));
    assert_eq!(v, 42);
    assert!(logs.contains("not signed"), "{logs}");
    let v: u32 = signed().call(&f, &1u8, || unreachable!("signed and stored"));
    assert_eq!(v, 42);

    // Edited after signing, even with a fixed-up plain checksum: refused.
    let out = outputs(&dir).pop().unwrap();
    let mut bytes = fs::read(&out).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 0x7f;
    let sum = blake3::Hasher::new()
        .update(&bytes[..64])
        .update(&bytes[96..])
        .finalize();
    bytes[64..96].copy_from_slice(sum.as_bytes());
    fs::write(&out, &bytes).unwrap();
    let (v, logs) = capture_logs(|| signed().call(&f, &1u8, || 42u32));
    assert_eq!(v, 42);
    assert!(logs.contains("signature does not match"), "{logs}");

    // Another key does not trust it either; no key cannot check it.
    let other: u32 = Memory::new(&dir).signing_key("other").call(&f, &1u8, || 7);
    assert_eq!(other, 7);
    let (v, logs) = capture_logs(|| Memory::new(&dir).call(&f, &1u8, || 9u32));
    assert_eq!(v, 9);
    assert!(logs.contains("MEMENTO_KEY"), "{logs}");
}

#[test]
fn leftovers_of_killed_writers_are_cleaned() {
    let dir = fresh_dir("leftovers");
    assert_eq!(run(&dir, 2.0), (5.0, true));
    let out = outputs(&dir).pop().unwrap();
    let shard = out.parent().unwrap().to_path_buf();
    // A writer killed before its rename leaves a temporary file and no
    // entry.
    fs::remove_file(&out).unwrap();
    let tmp = shard.join(".tmp-killed");
    fs::write(&tmp, b"half a result").unwrap();
    let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    fs::File::options()
        .write(true)
        .open(&tmp)
        .unwrap()
        .set_modified(hour_ago)
        .unwrap();
    // It never makes the call miss forever: computed, stored, and the
    // leftover removed by that write (a store's first write sweeps its
    // folder, then one in 1024).
    assert_eq!(run(&dir, 2.0), (5.0, true));
    assert_eq!(run(&dir, 2.0), (5.0, false));
    assert!(!tmp.exists());

    // Store::sweep: old temporary files and unheld locks go, held ones stay.
    let store = LocalStore::new(&dir);
    let stray = dir.join("damage/.tmp-stray");
    fs::write(&stray, b"x").unwrap();
    let stale_lock = dir.join("damage/stale.lock");
    fs::write(&stale_lock, b"").unwrap();
    let held = match store.lock("damage/held.lock", None).unwrap() {
        memento::store::LockOutcome::Held(lock) => lock,
        other => panic!("{other:?}"),
    };
    assert_eq!(store.sweep(std::time::Duration::ZERO).unwrap(), 2);
    assert!(!stray.exists() && !stale_lock.exists());
    assert!(dir.join("damage/held.lock").exists());
    drop(held);
    assert!(
        !dir.join("damage/held.lock").exists(),
        "a holder removes its lock"
    );
}
