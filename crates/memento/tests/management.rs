//! Old versions kept on request, expiry, and validation callbacks.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::LazyLock;
use std::time::Duration;

use common::{capture_logs, fresh_dir, outputs};
use memento::entry::Metadata;
use memento::{Function, Memory};

#[test]
fn keep_versions_brings_results_back_on_revert() {
    let dir = fresh_dir("keep");
    let v1 = || {
        Function::new("lab", "fit")
            .__code([1; 32], "fn fit()", false)
            .keep_versions(true)
    };
    let v2 = || {
        Function::new("lab", "fit")
            .__code([2; 32], "fn fit()", false)
            .keep_versions(true)
    };
    let runs = AtomicUsize::new(0);
    let call = |f: Function, value: u32| -> u32 {
        Memory::new(&dir).call(&f, &(), || {
            runs.fetch_add(1, SeqCst);
            value
        })
    };
    assert_eq!(call(v1(), 10), 10);
    assert_eq!(call(v2(), 20), 20);
    assert_eq!(outputs(&dir).len(), 2, "both versions kept");
    assert_eq!(
        call(v1(), 99),
        10,
        "reverting the code brings its result back"
    );
    assert_eq!(call(v2(), 99), 20);
    assert_eq!(runs.load(SeqCst), 2);
    // Without keep_versions, the change removes the other version.
    let v3 = Function::new("lab", "fit").__code([3; 32], "fn fit()", false);
    assert_eq!(call(v3, 30), 30);
    assert_eq!(outputs(&dir).len(), 1);
}

#[test]
fn expired_results_are_computed_again() {
    let dir = fresh_dir("ttl");
    let memory = Memory::new(&dir);
    let f = Function::new("market", "prices").expires_after(Duration::from_millis(300));
    let runs = AtomicUsize::new(0);
    let call =
        |memory: &Memory| -> usize { memory.call(&f, &(), || runs.fetch_add(1, SeqCst) + 1) };
    assert_eq!(call(&memory), 1);
    assert_eq!(call(&memory), 1, "fresh: served from memory");
    assert_eq!(call(&Memory::new(&dir)), 1, "fresh: served from disk");
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(call(&memory), 2, "expired in memory: computed again");
    std::thread::sleep(Duration::from_millis(400));
    let (v, logs) = capture_logs(|| call(&Memory::new(&dir)));
    assert_eq!(v, 3, "expired on disk: computed again");
    assert!(logs.contains("expired"), "{logs}");
    assert_eq!(outputs(&dir).len(), 1, "the expired entry was replaced");
}

static CALLS: AtomicUsize = AtomicUsize::new(0);

fn reject_small(meta: &Metadata) -> bool {
    CALLS.fetch_add(1, SeqCst);
    assert_eq!(meta.function, "checks::square");
    meta.args != "[2]"
}

#[test]
fn validate_sees_metadata_and_can_reject() {
    let dir = fresh_dir("validate");
    let memory = Memory::new(&dir);
    let f = Function::new("checks", "square").validate(reject_small);
    let runs = AtomicUsize::new(0);
    let square = |x: u32| -> u32 {
        memory.call(&f, &(x,), || {
            runs.fetch_add(1, SeqCst);
            x * x
        })
    };
    assert_eq!(square(2), 4);
    assert_eq!(square(3), 9);
    assert_eq!(runs.load(SeqCst), 2);
    assert_eq!(square(3), 9, "accepted: served");
    assert_eq!(runs.load(SeqCst), 2);
    assert_eq!(square(2), 4, "rejected: computed again");
    assert_eq!(runs.load(SeqCst), 3);
    assert!(CALLS.load(SeqCst) >= 2, "called on every hit");
}

static MEM: LazyLock<Memory> = LazyLock::new(|| Memory::new(fresh_dir("attr")));
static ATTR_RUNS: AtomicUsize = AtomicUsize::new(0);

fn always(_: &Metadata) -> bool {
    true
}

#[memento::cache(memory = MEM, keep_versions, expires_after = "7d", validate = always)]
fn managed(x: u8) -> u8 {
    ATTR_RUNS.fetch_add(1, SeqCst);
    x
}

#[test]
fn attribute_options() {
    assert_eq!(managed(1), 1);
    assert_eq!(managed(1), 1);
    assert_eq!(ATTR_RUNS.load(SeqCst), 1);
}

#[test]
fn a_cache_of_the_first_layout_is_cleared_on_first_use() {
    // memento 0.1's first layout: a folder per entry, with output.bin and
    // metadata.json, and entry format 1 in function.json.
    let dir = fresh_dir("first-layout");
    let f = Function::new("lab", "old");
    let v: u32 = Memory::new(&dir).call(&f, &1u8, || 10);
    assert_eq!(v, 10);
    let record = dir.join("lab/old/function.json");
    let json = std::fs::read_to_string(&record).unwrap();
    let old = json.replace("\"format\": 2", "\"format\": 1");
    assert_ne!(json, old);
    std::fs::write(&record, old).unwrap();
    for out in outputs(&dir) {
        std::fs::remove_file(out).unwrap();
    }
    let entry = dir.join(format!("lab/old/ab/{}", "c".repeat(62)));
    std::fs::create_dir_all(&entry).unwrap();
    std::fs::write(entry.join("output.bin"), b"MMTO\x01\x00 old").unwrap();
    std::fs::write(entry.join("metadata.json"), b"{}").unwrap();
    let stats = Memory::new(&dir).stats().unwrap();
    assert_eq!(stats.entries, 0, "the old folder is not a result");

    let (v, logs) = capture_logs(|| Memory::new(&dir).call(&f, &1u8, || 11u32));
    assert_eq!(v, 11);
    assert!(logs.contains("entry format 1"), "{logs}");
    assert!(!entry.exists(), "the old entry folder is removed");
    assert_eq!(outputs(&dir).len(), 1);
    let v: u32 = Memory::new(&dir).call(&f, &1u8, || unreachable!("stored"));
    assert_eq!(v, 11);
}

static QUIET: std::sync::LazyLock<Memory> =
    std::sync::LazyLock::new(|| Memory::new(common::fresh_dir("quiet")));

#[memento::cache(memory = QUIET)]
fn looked_at(x: u8) -> u8 {
    x + 1
}

/// A handle's `metadata()` and `stats()` are no access: an entry
/// back-dated by 10 minutes keeps its time.
#[test]
fn metadata_and_stats_are_no_access() {
    let handle = looked_at::call_and_shelve(3);
    let root = QUIET.path().unwrap().to_path_buf();
    let entry = common::outputs(&root).pop().unwrap();
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(600);
    std::fs::File::options()
        .write(true)
        .open(&entry)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let before = std::fs::metadata(&entry).unwrap().modified().unwrap();
    assert_eq!(handle.metadata().unwrap().args, "[3]");
    QUIET.stats().unwrap();
    let after = std::fs::metadata(&entry).unwrap().modified().unwrap();
    assert_eq!(before, after, "a management read recorded an access");
    // A real read does record one.
    assert_eq!(handle.get().unwrap(), 4);
    assert!(std::fs::metadata(&entry).unwrap().modified().unwrap() > before);
}
