//! Large arrays: a 100 MiB `&[f64]` argument hashed into the key, a
//! 100 MiB `Vec<f64>` result read back and stored, each beside the limit
//! the hardware sets in the same run (blake3 of the buffer alone, on one
//! thread and on every core; `std::fs::read` and `std::fs::write` of the
//! same bytes).
//!
//! `cargo bench -p memento --bench arrays`

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use memento::{Function, Memory};

const MIB: usize = 1024 * 1024;
const LEN: usize = 100 * MIB / 8;

fn bench_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/bench-cache")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

static MEM: LazyLock<Memory> = LazyLock::new(|| Memory::new(bench_dir("arrays")));

#[memento::cache(memory = MEM)]
fn total(v: &[f64]) -> f64 {
    v.iter().sum()
}

fn data() -> Vec<f64> {
    (0..LEN).map(|i| (i as f64).sqrt()).collect()
}

fn arguments(c: &mut Criterion) {
    let v = data();
    let bytes: &[u8] = unsafe {
        std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), std::mem::size_of_val(&v[..]))
    };
    let mut g = c.benchmark_group("argument");
    g.sample_size(20).measurement_time(Duration::from_secs(8));
    g.bench_function("blake3 of 100 MiB, one thread", |b| {
        b.iter(|| blake3::hash(black_box(bytes)))
    });
    g.bench_function("blake3 of 100 MiB, update_rayon", |b| {
        b.iter(|| {
            blake3::Hasher::new()
                .update_rayon(black_box(bytes))
                .finalize()
        })
    });
    total(&v);
    g.bench_function("hit with a 100 MiB &[f64] argument (memento)", |b| {
        b.iter(|| total(black_box(&v)))
    });
    g.finish();
}

fn results(c: &mut Criterion) {
    let v = data();
    let cold = Memory::new(bench_dir("results")).in_memory_limit(0);
    let f = Function::new("bench", "hundred_mib");
    let _: Vec<f64> = cold.call(&f, &0u64, || v.clone());
    let stored = cold.path().unwrap().to_path_buf();
    let entry = find_output(&stored);
    let raw = std::fs::read(&entry).unwrap();
    let scratch = stored.join("scratch.bin");

    let mut g = c.benchmark_group("result");
    g.sample_size(20).measurement_time(Duration::from_secs(8));
    g.bench_function("std::fs::read of the 100 MiB entry", |b| {
        b.iter(|| std::fs::read(black_box(&entry)).unwrap())
    });
    g.bench_function("hit returning a 100 MiB Vec<f64> (memento)", |b| {
        b.iter(|| -> Vec<f64> { cold.call(&f, &0u64, || unreachable!("stored")) })
    });
    g.bench_function("std::fs::write of 100 MiB", |b| {
        b.iter(|| std::fs::write(&scratch, black_box(&raw)).unwrap())
    });
    let next = AtomicU64::new(1);
    g.bench_function("miss storing a 100 MiB Vec<f64> (memento)", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                let k = next.fetch_add(1, Ordering::Relaxed);
                let value = v.clone();
                let start = Instant::now();
                let out: Vec<f64> = cold.call(&f, &k, || value);
                spent += start.elapsed();
                black_box(out);
                // Keep the disk from filling: drop the entry, untimed.
                cold.store().delete(&entry_file(&cold, &f, k)).unwrap();
            }
            spent
        })
    });
    g.finish();
}

fn entry_file(memory: &Memory, f: &Function, k: u64) -> String {
    let hex = memory.key_of::<Vec<f64>, _>(f, &k).unwrap().to_hex();
    format!("{}/{}/{}.bin", f.folder(), &hex[..2], &hex[2..])
}

fn find_output(root: &std::path::Path) -> PathBuf {
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "bin") {
                return p;
            }
        }
    }
    panic!("no entry file under {}", root.display())
}

criterion_group!(benches, arguments, results);
criterion_main!(benches);
