//! Scale: the cost of a hit, and of gc to a byte limit, with many entries in
//! one function.
//!
//! `cargo bench -p memento --bench scale` measures 1,000 and 100,000
//! entries; `MEMENTO_SCALE=1000,1000000 cargo bench -p memento --bench scale`
//! measures other sizes (1,000,000 entries take about 4 GB of disk blocks
//! on ext4 and a few minutes to write). Each figure is a median of one run.
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

fn main() {
    let sizes: Vec<u64> = std::env::var("MEMENTO_SCALE")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1_000, 100_000]);
    let base = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-scale");
    println!(
        "{:>10}  {:>10}  {:>13}  {:>13}  {:>10}  {:>11}  {:>9}",
        "entries", "fill", "hit (median)", "fs::read", "listing", "gc to 50%", "removed"
    );
    println!("{:>10}  (then: index build once, from a listing)", "");
    for n in sizes {
        let dir = base.join(format!("{n}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let t = Instant::now();
        fill(&dir, n);
        let filled = t.elapsed();
        settle();

        // Hits from disk (in-memory layer off) on random keys.
        let memory = Memory::new(&dir).in_memory_limit(0);
        let f = function();
        let mut seed = 0x9e3779b97f4a7c15u64;
        let mut samples = Vec::with_capacity(20_000);
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let i = seed % n;
            let t = Instant::now();
            let v: u64 = memory.call(&f, &(i,), || unreachable!("stored: {i}"));
            samples.push(t.elapsed());
            black_box(v);
        }
        let hit = median(samples);
        // The same files read raw, for scale: the file system's own cost.
        let mut raw = Vec::with_capacity(20_000);
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let i = seed % n;
            let key = memory.key_of::<u64, _>(&f, &(i,)).unwrap().to_hex();
            let path = dir
                .join(f.folder())
                .join(&key[..2])
                .join(format!("{}.bin", &key[2..]));
            let t = Instant::now();
            black_box(std::fs::read(&path).unwrap());
            raw.push(t.elapsed());
        }
        let raw = median(raw);
        let t = Instant::now();
        let listed = memento::evict::Inventory::scan(memory.store()).unwrap();
        let scan = t.elapsed();
        black_box(listed);

        // These entries were written around the index: build it once (a
        // cache written by memento has it already), then gc to half the
        // bytes.
        let t = Instant::now();
        Memory::new(&dir)
            .bytes_limit(u64::MAX)
            .reduce_size()
            .unwrap();
        let build = t.elapsed();
        let stats = memory.stats().unwrap();
        settle();
        let t = Instant::now();
        // The phases of the pass, from its debug event.
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_target(false)
            .without_time()
            .finish();
        let reduced = tracing::subscriber::with_default(subscriber, || {
            Memory::new(&dir)
                .bytes_limit(stats.bytes / 2)
                .reduce_size()
                .unwrap()
        });
        let gc = t.elapsed();
        println!(
            "{n:>10}  {:>10.2?}  {:>13.2?}  {:>13.2?}  {:>10.2?}  {:>11.2?}  {:>9}  (index build {:.2?})",
            filled, hit, raw, scan, gc, reduced.removed, build
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
