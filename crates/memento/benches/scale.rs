//! Scale: the cost of a hit, and of gc to a byte limit, with many entries in
//! one function.
//!
//! `cargo bench -p memento --bench scale` measures 1,000 and 100,000
//! entries; `MEMENTO_SCALE=1000,1000000 cargo bench -p memento --bench scale`
//! measures other sizes (1,000,000 entries take about 4 GB of disk blocks
//! on ext4 and about a minute to write). Hits are medians of 20,000, on
//! random keys over the whole cache and on a working set of 1,000 keys,
//! measured in rounds that alternate between the sizes; then,
//! per size, a listing, the index built once, a gc to 90% of the bytes (the
//! size of an automatic pass) and one on to 50%, with the phases of each.
//!
//! The entries are written straight to disk in the layout `Memory` writes
//! (same keys, same entry files), which is ~10× faster than computing them
//! through calls; the hits and the gc then go through the library.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use memento::{Function, Memory};

fn function() -> Function {
    Function::new("scale", "f")
}

/// Writes `n` entries of `f(i: u64) -> u64 = i * 2`.
fn fill(dir: &Path, n: u64) {
    let memory = Memory::new(dir);
    let f = function();
    // The first one through a call, so function.json and the folder are
    // what a real run leaves.
    let _: u64 = memory.call(&f, &(0u64,), || 0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    for shard in 0..256 {
        std::fs::create_dir_all(dir.join(f.folder()).join(format!("{shard:02x}"))).unwrap();
    }
    for i in 1..n {
        let key = memory.key_of::<u64, _>(&f, &(i,)).unwrap();
        let hex = key.to_hex();
        let shard = dir.join(f.folder()).join(&hex[..2]);
        let payload = postcard::to_allocvec(&(i * 2)).unwrap();
        let info = format!("{{\"function\":\"scale::f\",\"duration\":0.0,\"args\":\"[{i}]\"}}");
        std::fs::write(
            shard.join(format!("{}.bin", &hex[2..])),
            memento::codec::seal_with_info(&key, &payload, info.as_bytes(), now, None),
        )
        .unwrap();
    }
}

/// Waits until the disk has written back what the fill left dirty, so that
/// the writeback's work does not land in the measurements.
fn settle() {
    let _ = std::process::Command::new("sync").status();
    std::thread::sleep(Duration::from_secs(2));
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// xorshift: the next random index below `n`.
fn next(seed: &mut u64, n: u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed % n
}

/// Entries of every size are on disk at once, and their hits measured in
/// alternating rounds, so that a drift of the machine (writeback, another
/// process) lands on every size alike.
fn main() {
    let sizes: Vec<u64> = std::env::var("MEMENTO_SCALE")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1_000, 100_000]);
    let base = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-scale");
    let dirs: Vec<PathBuf> = sizes
        .iter()
        .map(|n| base.join(format!("{n}-{}", std::process::id())))
        .collect();
    for (n, dir) in sizes.iter().zip(&dirs) {
        let _ = std::fs::remove_dir_all(dir);
        let t = Instant::now();
        fill(dir, *n);
        println!("filled {n} entries in {:.2?}", t.elapsed());
    }
    settle();

    // Hits from disk (in-memory layer off), and the same files read raw (the
    // file system's own cost), in 10 rounds of 2,000 of each per size, on
    // two kinds of keys: random keys over the whole cache (every read is
    // cold in the CPU's caches once the cache outgrows them), and a working
    // set, random keys among the first 1,000 (the same keys in every
    // cache: what a rerun of one analysis reads while the cache holds many
    // other results).
    let f = function();
    let memories: Vec<Memory> = dirs
        .iter()
        .map(|d| Memory::new(d).in_memory_limit(0))
        .collect();
    const WORKING_SET: u64 = 1_000;
    let mut hits = vec![[Vec::new(), Vec::new()]; sizes.len()];
    let mut raws = vec![[Vec::new(), Vec::new()]; sizes.len()];
    let mut seed = 0x9e3779b97f4a7c15u64;
    for _round in 0..10 {
        for (s, &n) in sizes.iter().enumerate() {
            let memory = &memories[s];
            for (kind, range) in [n, n.min(WORKING_SET)].into_iter().enumerate() {
                for _ in 0..2_000 {
                    let i = next(&mut seed, range);
                    let t = Instant::now();
                    let v: u64 = memory.call(&f, &(i,), || unreachable!("stored: {i}"));
                    hits[s][kind].push(t.elapsed());
                    assert_eq!(black_box(v), i * 2);
                }
                for _ in 0..2_000 {
                    let i = next(&mut seed, range);
                    let key = memory.key_of::<u64, _>(&f, &(i,)).unwrap().to_hex();
                    let path = dirs[s]
                        .join(f.folder())
                        .join(&key[..2])
                        .join(format!("{}.bin", &key[2..]));
                    let t = Instant::now();
                    black_box(std::fs::read(&path).unwrap());
                    raws[s][kind].push(t.elapsed());
                }
            }
        }
    }
    let hit: Vec<[Duration; 2]> = hits
        .into_iter()
        .map(|[a, b]| [median(a), median(b)])
        .collect();
    let raw: Vec<[Duration; 2]> = raws
        .into_iter()
        .map(|[a, b]| [median(a), median(b)])
        .collect();
    for (kind, title) in [
        "hits on random keys over the whole cache",
        "hits on a working set: random keys among the first 1,000",
    ]
    .into_iter()
    .enumerate()
    {
        println!();
        println!("{title}");
        println!(
            "{:>10}  {:>13}  {:>9}  {:>13}  {:>9}",
            "entries", "hit (median)", "vs first", "fs::read", "vs first"
        );
        for s in 0..sizes.len() {
            println!(
                "{:>10}  {:>13.2?}  {:>8.2}x  {:>13.2?}  {:>8.2}x",
                sizes[s],
                hit[s][kind],
                hit[s][kind].as_secs_f64() / hit[0][kind].as_secs_f64(),
                raw[s][kind],
                raw[s][kind].as_secs_f64() / raw[0][kind].as_secs_f64()
            );
        }
    }

    println!();
    println!(
        "{:>10}  {:>10}  {:>11}  {:>11}  {:>9}  {:>11}  {:>9}",
        "entries", "listing", "index build", "gc to 90%", "removed", "then to 50%", "removed"
    );
    for (s, &n) in sizes.iter().enumerate() {
        let dir = &dirs[s];
        let t = Instant::now();
        let listed = memento::evict::Inventory::scan(memories[s].store()).unwrap();
        let scan = t.elapsed();
        black_box(listed);
        // These entries were written around the index: build it once (a
        // cache written by memento has it already).
        let t = Instant::now();
        Memory::new(dir)
            .bytes_limit(u64::MAX)
            .reduce_size()
            .unwrap();
        let build = t.elapsed();
        let bytes = memories[s].stats().unwrap().bytes;
        let gc = |fraction: f64| {
            settle();
            // The phases of the pass, from its debug event.
            let subscriber = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::DEBUG)
                .with_target(false)
                .without_time()
                .finish();
            let t = Instant::now();
            let reduced = tracing::subscriber::with_default(subscriber, || {
                Memory::new(dir)
                    .bytes_limit((bytes as f64 * fraction) as u64)
                    .reduce_size()
                    .unwrap()
            });
            (t.elapsed(), reduced.removed)
        };
        let (gc90, removed90) = gc(0.9);
        let (gc50, removed50) = gc(0.5);
        println!(
            "{n:>10}  {scan:>10.2?}  {build:>11.2?}  {gc90:>11.2?}  {removed90:>9}  {gc50:>11.2?}  {removed50:>9}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
