//! Limits: eviction order under each limit, amortized enforcement, clear,
//! stats.

mod common;

use std::path::Path;
use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, SystemTime};

use common::{fresh_dir, outputs};
use memento::{Function, Memory};

fn f() -> Function {
    Function::new("limits", "blob")
}

/// Stores a 1000-byte result for `i`.
fn put(memory: &Memory, i: u32) {
    let v: Vec<u8> = memory.call(&f(), &i, || vec![i as u8; 1000]);
    assert_eq!(v, vec![i as u8; 1000]);
}

/// The metadata of the entry file `out`.
fn meta_of(out: &Path) -> memento::entry::Metadata {
    let (root, name) = (out.parent().unwrap(), out.file_name().unwrap());
    let store = memento::store::LocalStore::new(root);
    memento::entry::Metadata::read(&store, name.to_str().unwrap())
        .unwrap()
        .unwrap()
}

fn entry_of(dir: &Path, i: u32) -> std::path::PathBuf {
    // Entries are told apart by their info's arguments.
    for out in outputs(dir) {
        if meta_of(&out).args == i.to_string() {
            return out;
        }
    }
    panic!("no entry for {i}");
}

fn age(dir: &Path, i: u32, ago: Duration) {
    let out = entry_of(dir, i);
    let file = std::fs::File::options().write(true).open(&out).unwrap();
    file.set_modified(SystemTime::now() - ago).unwrap();
}

fn stored(dir: &Path) -> Vec<u32> {
    let mut found: Vec<u32> = outputs(dir)
        .into_iter()
        .map(|out| meta_of(&out).args.parse().unwrap())
        .collect();
    found.sort();
    found
}

#[test]
fn least_recently_used_go_first() {
    let dir = fresh_dir("lru");
    let memory = Memory::new(&dir);
    for i in 0..4 {
        put(&memory, i);
    }
    let hour = Duration::from_secs(3600);
    for (i, hours) in [(0, 4), (1, 3), (2, 2), (3, 1)] {
        age(&dir, i, hour * hours);
    }
    // Reading 0 from disk (a fresh Memory) makes it the most recently used.
    put(&Memory::new(&dir).in_memory_limit(0), 0);
    let reduced = Memory::new(&dir).items_limit(2).reduce_size().unwrap();
    assert_eq!(reduced.removed, 2);
    assert_eq!(stored(&dir), [0, 3]);
}

#[test]
fn bytes_limit_holds_after_every_write() {
    let dir = fresh_dir("bytes");
    let limit = 20_000;
    let memory = Memory::new(&dir).bytes_limit(limit);
    let mut largest_entry = 0;
    for i in 0..60 {
        put(&memory, i);
        let stats = memory.stats().unwrap();
        let entry = stats.bytes / stats.entries.max(1);
        largest_entry = largest_entry.max(entry);
        assert!(
            stats.bytes <= limit + 2 * largest_entry,
            "write {i}: {} bytes over a {limit} limit",
            stats.bytes
        );
    }
    let stats = memory.stats().unwrap();
    assert!(stats.bytes <= limit, "{} > {limit}", stats.bytes);
    // The newest results are the ones kept.
    let kept = stored(&dir);
    assert!(kept.contains(&59) && !kept.contains(&0), "{kept:?}");
}

#[test]
fn enforcement_is_amortized() {
    let dir = fresh_dir("amortized");
    let store = common::Hooked::new(&dir);
    let scans = store.listings.clone();
    let memory = Memory::with_store(store).items_limit(100);
    let writes = 600;
    for i in 0..writes {
        put(&memory, i);
    }
    let scans = scans.load(SeqCst);
    // One listing at the first write, then one each time the running count
    // crosses the limit: eviction goes down to 90, so every 10 writes.
    assert!(
        scans <= 1 + (writes as usize - 100) / 10 + 1,
        "{scans} listings"
    );
    assert!(scans >= 2, "the limit was enforced: {scans} listings");
    let n = outputs(&dir).len();
    assert!((90..=100).contains(&n), "{n} entries");
}

#[test]
fn age_limit_removes_old_results() {
    let dir = fresh_dir("age");
    let memory = Memory::new(&dir);
    for i in 0..3 {
        put(&memory, i);
    }
    age(&dir, 0, Duration::from_secs(10 * 86400));
    age(&dir, 1, Duration::from_secs(2 * 86400));
    let week = Memory::new(&dir).age_limit(Duration::from_secs(7 * 86400));
    // Automatically, at the first write of a Memory with an age limit.
    put(&week, 3);
    assert_eq!(stored(&dir), [1, 2, 3]);
    let day = Memory::new(&dir).age_limit(Duration::from_secs(86400));
    assert_eq!(day.reduce_size().unwrap().removed, 1);
    assert_eq!(stored(&dir), [2, 3]);
}

#[test]
fn clear_and_stats() {
    let dir = fresh_dir("clear");
    let memory = Memory::new(&dir);
    for i in 0..5 {
        put(&memory, i);
    }
    let g = Function::new("limits::other", "g");
    let _: u8 = memory.call(&g, &(), || 1);
    let stats = memory.stats().unwrap();
    assert_eq!(stats.entries, 6);
    let names: Vec<_> = stats
        .functions
        .iter()
        .map(|f| (f.name.as_str(), f.entries))
        .collect();
    assert_eq!(names, [("limits::blob", 5), ("limits::other::g", 1)]);
    let content: u64 = walk_bytes(&dir);
    assert_eq!(
        stats.content_bytes, content,
        "every byte under the location counts"
    );
    #[cfg(unix)]
    assert_eq!(stats.bytes, disk_usage(&dir), "and every block");
    assert!(stats.functions.iter().all(|f| f.last_access.is_some()));

    memory.clear().unwrap();
    assert_eq!(memory.stats().unwrap().entries, 0);
    assert!(dir.join(".gitignore").is_file());
    let mut ran = false;
    let _: Vec<u8> = memory.call(&f(), &1u32, || {
        ran = true;
        vec![1; 1000]
    });
    assert!(
        ran,
        "cleared results are computed again, not served from memory"
    );
}

fn walk_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        total += if p.is_dir() {
            walk_bytes(&p)
        } else {
            std::fs::metadata(&p).unwrap().len()
        };
    }
    total
}

#[test]
fn the_index_forgets_cleared_functions() {
    let dir = fresh_dir("index-clear");
    let memory = Memory::new(&dir);
    let g = Function::new("limits", "other");
    for i in 0..10 {
        put(&memory, i);
        let _: Vec<u8> = memory.call(&g, &i, || vec![0; 1000]);
    }
    // Build the index, then clear one function.
    memory.clone().items_limit(1000).reduce_size().unwrap();
    assert_eq!(memory.clear_function(&g).unwrap(), 10);
    // What is left fits its own size exactly: nothing may go.
    let bytes = memory.stats().unwrap().bytes;
    let reduced = memory.clone().bytes_limit(bytes).reduce_size().unwrap();
    assert_eq!(reduced.removed, 0);
    assert_eq!(stored(&dir).len(), 10);
    // And a real limit still evicts the oldest.
    let reduced = memory.clone().items_limit(4).reduce_size().unwrap();
    assert_eq!(reduced.removed, 6);
}

/// What the files under `root` take on the disk: their allocated blocks.
#[cfg(unix)]
fn disk_usage(root: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for entry in std::fs::read_dir(root).unwrap().flatten() {
        let meta = entry.metadata().unwrap();
        if meta.is_dir() {
            total += disk_usage(&entry.path());
        } else {
            total += meta.blocks() * 512;
        }
    }
    total
}

/// A byte limit counts what the disk holds, not the content's length: 200
/// small results (about 200 bytes each, a whole block each on the disk)
/// under a limit of 100 KiB leave at most 100 KiB of allocated blocks,
/// and `stats` reports those blocks beside the content's length.
#[cfg(unix)]
#[test]
fn limits_and_stats_count_blocks() {
    let dir = fresh_dir("blocks");
    let memory = Memory::new(&dir).bytes_limit(100 * 1024);
    let small = Function::new("limits", "small");
    for i in 0..200u32 {
        let _: Vec<u8> = memory.call(&small, &i, || vec![1; 150]);
    }
    let stats = memory.stats().unwrap();
    let files_disk: u64 = {
        // Entries and records, not the folders themselves.
        disk_usage(&dir)
    };
    assert_eq!(stats.bytes, files_disk, "stats count the allocated blocks");
    assert!(
        stats.content_bytes < stats.bytes,
        "content {} < disk {}",
        stats.content_bytes,
        stats.bytes
    );
    assert!(
        files_disk <= 100 * 1024,
        "{files_disk} bytes on the disk for a limit of 100 KiB ({} results kept)",
        stats.entries
    );
    assert!(stats.entries > 0);
}
