//! What a hit costs: `f(f64) -> f64` served from disk (the in-memory layer
//! off, so every call opens, reads and verifies the entry's file), beside a plain
//! `std::fs::read` of the same files; a repeated hit served by the in-memory
//! layer; and the key alone.
//!
//! `cargo bench -p memento --bench hit`

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::LazyLock;

use criterion::{criterion_group, criterion_main, Criterion};
use memento::Memory;

const KEYS: usize = 1000;

fn bench_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/bench-cache")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

static COLD: LazyLock<Memory> = LazyLock::new(|| Memory::new(bench_dir("cold")).in_memory_limit(0));
static WARM: LazyLock<Memory> = LazyLock::new(|| Memory::new(bench_dir("warm")));

#[memento::cache(memory = COLD)]
fn cold_sine(x: f64) -> f64 {
    x.sin()
}

#[memento::cache(memory = WARM)]
fn warm_sine(x: f64) -> f64 {
    x.sin()
}

// The same with `refresh = "background"` (results not expired): such a
// hit must cost what a plain one does.
static COLD_REFRESH: LazyLock<Memory> =
    LazyLock::new(|| Memory::new(bench_dir("cold-refresh")).in_memory_limit(0));

#[memento::cache(memory = COLD_REFRESH, expires_after = "3650d", refresh = "background")]
fn cold_sine_refreshing(x: f64) -> f64 {
    x.sin()
}

#[memento::cache(memory = WARM, expires_after = "3650d", refresh = "background")]
fn warm_sine_refreshing(x: f64) -> f64 {
    x.sin()
}

fn outputs(root: &std::path::Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        // Absent when the benchmark that fills it was filtered out.
        let Ok(listing) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in listing.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "bin") {
                found.push(p);
            }
        }
    }
    found
}

fn hits(c: &mut Criterion) {
    let xs: Vec<f64> = (0..KEYS).map(|i| i as f64 * 0.001).collect();
    for &x in &xs {
        cold_sine(x);
        cold_sine_refreshing(x);
    }
    warm_sine(0.5);
    warm_sine_refreshing(0.5);
    let files = outputs(COLD.path().unwrap());
    assert_eq!(files.len(), KEYS);

    let mut group = c.benchmark_group("hit");
    let mut i = 0;
    group.bench_function("disk hit f(f64) (memento)", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            black_box(cold_sine(black_box(xs[i])))
        })
    });
    let mut r = 0;
    group.bench_function("disk hit f(f64), refresh = background, not expired", |b| {
        b.iter(|| {
            r = (r + 1) % KEYS;
            black_box(cold_sine_refreshing(black_box(xs[r])))
        })
    });
    let mut j = 0;
    group.bench_function("std::fs::read of the entry file", |b| {
        b.iter(|| {
            j = (j + 1) % KEYS;
            black_box(std::fs::read(&files[j]).unwrap())
        })
    });
    // The same disk hits with the last access written on every read (the
    // worst case of last-access recording; by default it is written at most
    // once a minute per result, so the hit above almost never pays it).
    let touching = Memory::with_store(
        memento::store::LocalStore::new(COLD.path().unwrap())
            .access_granularity(std::time::Duration::ZERO),
    )
    .in_memory_limit(0);
    let f = cold_sine::function();
    let mut k = 0;
    group.bench_function("disk hit f(f64), last access written every time", |b| {
        b.iter(|| {
            k = (k + 1) % KEYS;
            let x = xs[k];
            let y: f64 = touching.call(f, &(&x,), || unreachable!("stored"));
            black_box(y)
        })
    });
    // The same hits through a near cache (the folder above as its near
    // folder; the far store, a local folder, holds nothing and is only
    // touched, one system call a hit, where a bucket's store notes the
    // access in memory): what a hit on a bucket's machine pays once the
    // result is local.
    let near = Memory::with_store(memento::store::NearCache::new(
        COLD.path().unwrap(),
        memento::store::LocalStore::new(bench_dir("far-unused")),
    ))
    .in_memory_limit(0);
    let mut n = 0;
    group.bench_function("near-cache hit f(f64) (far store not reached)", |b| {
        b.iter(|| {
            n = (n + 1) % KEYS;
            let x = xs[n];
            let y: f64 = near.call(f, &(&x,), || unreachable!("stored near"));
            black_box(y)
        })
    });
    group.bench_function("repeated hit f(f64) (memento, in memory)", |b| {
        b.iter(|| black_box(warm_sine(black_box(0.5))))
    });
    group.bench_function(
        "repeated hit f(f64), refresh = background, not expired",
        |b| b.iter(|| black_box(warm_sine_refreshing(black_box(0.5)))),
    );
    group.bench_function("key of (f64,) alone", |b| {
        b.iter(|| black_box(memento::Key::of(&(black_box(0.5f64),)).unwrap()))
    });
    group.finish();
}

static MISSES: LazyLock<Memory> = LazyLock::new(|| Memory::new(bench_dir("misses")));

#[memento::cache(memory = MISSES)]
fn stored_sine(x: f64) -> f64 {
    x.sin()
}

/// What a miss costs beyond the computation: key, lock, encode, write
/// (the entry file, the index record), beside a raw create + write +
/// rename of the same number of bytes.
fn misses(c: &mut Criterion) {
    let mut group = c.benchmark_group("miss");
    let mut x = 0.0f64;
    group.bench_function("miss storing f(f64) -> f64 (memento)", |b| {
        b.iter(|| {
            x += 1.0;
            black_box(stored_sine(black_box(x)))
        })
    });
    let dir = bench_dir("raw-writes");
    std::fs::create_dir_all(&dir).unwrap();
    // As many bytes as a stored entry of the bench above.
    let size = outputs(MISSES.path().unwrap())
        .first()
        .map_or(192, |p| std::fs::metadata(p).unwrap().len() as usize);
    let bytes = vec![7u8; size];
    let mut n = 0u64;
    group.bench_function("raw create+write+rename of as many bytes", |b| {
        b.iter(|| {
            use std::io::Write;
            n += 1;
            let mut tmp = tempfile::NamedTempFile::new_in(&dir).unwrap();
            tmp.write_all(&bytes).unwrap();
            tmp.persist(dir.join(format!("{n}.bin"))).unwrap();
        })
    });
    group.finish();
}

criterion_group!(benches, hits, misses);
criterion_main!(benches);
