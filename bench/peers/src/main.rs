//! The Rust side of `bench/compare.sh`: one case per run, printing
//! `RESULT <peer> <case> <median µs> <samples>` lines that the script
//! gathers into its table.
//!
//! ```text
//! memento-peers <memento|cached|raw> <case> [n]
//! ```
//!
//! memento stores under `MEMENTO_DIR`; the cached crate's redb store under
//! `XDG_CACHE_HOME` (its default folder is picked from there). Cases:
//! `fill N` (N misses of f(f64), small results), `fresh` (one hit, timed
//! from before the store is opened), `steady N` (N stored keys read back
//! once each), `array-arg` (hits with a 100 MiB argument), `array-result`
//! (misses and hits of a 100 MiB result), `raw` (blake3, `fs::read`,
//! `fs::write` of the same bytes, and a small create+write+rename).
//! Diagnostics: `fresh-blake3`, `fresh-parts` and `fresh-steps` split the first hit of a
//! fresh process into its parts.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cached::macros::concurrent_cached;
use memento::Mapped;

const BIG: usize = 100 * 1024 * 1024 / 8;

#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
struct CachedError(String);

impl From<cached::RedbCacheError> for CachedError {
    fn from(e: cached::RedbCacheError) -> Self {
        CachedError(format!("{e:?}"))
    }
}

/// Time spent inside the bodies of the big functions, so that a miss can
/// be charged only for storing (the peers written in Python return a
/// prebuilt array, which costs them nothing).
static BODY_NS: AtomicU64 = AtomicU64::new(0);

fn big_array(seed: u64) -> Vec<f64> {
    let start = Instant::now();
    let v: Vec<f64> = (0..BIG).map(|i| (i as u64 ^ seed) as f64).collect();
    BODY_NS.fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
    v
}

// --- memento -------------------------------------------------------------

#[memento::cache]
fn m_sine(x: f64) -> f64 {
    x.sin()
}

#[memento::cache]
fn m_total(a: &[f64]) -> f64 {
    a.iter().sum()
}

#[memento::cache]
fn m_big(seed: u64) -> Vec<f64> {
    big_array(seed)
}

#[memento::cache(mmap)]
fn m_big_mapped(seed: u64) -> Mapped<Vec<f64>> {
    big_array(seed)
}

// --- the cached crate (4.1, redb) -----------------------------------------

#[concurrent_cached(disk = true)]
fn c_sine(x: f64) -> Result<f64, CachedError> {
    Ok(x.sin())
}

#[concurrent_cached(disk = true)]
fn c_big(seed: u64) -> Result<Vec<f64>, CachedError> {
    Ok(big_array(seed))
}

// --- harness --------------------------------------------------------------

fn median(mut samples: Vec<Duration>) -> f64 {
    samples.sort();
    let n = samples.len();
    let mid = if n % 2 == 1 {
        samples[n / 2]
    } else {
        (samples[n / 2 - 1] + samples[n / 2]) / 2
    };
    mid.as_secs_f64() * 1e6
}

fn report(peer: &str, case: &str, samples: Vec<Duration>) {
    let n = samples.len();
    println!("RESULT {peer} {case} {:.3} {n}", median(samples));
}

fn time<R>(f: impl FnOnce() -> R) -> (Duration, R) {
    let start = Instant::now();
    let r = f();
    (start.elapsed(), r)
}

fn x(i: usize) -> f64 {
    i as f64 * 0.001
}

fn sine(peer: &str, v: f64) -> f64 {
    match peer {
        "memento" => m_sine(v),
        "cached" => c_sine(v).expect("cached disk store"),
        _ => unreachable!(),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let peer = args.get(1).map(String::as_str).unwrap_or("");
    let case = args.get(2).map(String::as_str).unwrap_or("");
    let n: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(1000);
    match (peer, case) {
        ("memento" | "cached", "fill") => {
            let samples = (0..n)
                .map(|i| time(|| black_box(sine(peer, x(i)))).0)
                .collect();
            report(peer, "miss-small", samples);
        }
        ("memento", "fresh-blake3") => {
            let (a, _) = time(|| blake3::hash(b"x"));
            let (b, _) = time(|| blake3::hash(b"y"));
            let (c, _) = time(|| String::from("hello world").repeat(3));
            let (d, _) = time(|| memento::Function::new("prog", "cosine"));
            println!("first blake3 {a:?} second {b:?} string {c:?} Function::new {d:?}");
        }
        ("memento", "fresh-steps") => {
            // The first hit's parts, each the first of its kind in this
            // process: what the macro's call is left with after them.
            let (a, memory) = time(memento::Memory::from_env);
            let (b, _) = time(|| blake3::hash(b"x"));
            let (c, f) = time(|| memento::Function::new("memento_peers", "probe"));
            let (d, key) = time(|| memory.key_of::<f64, _>(&f, &(0.5f64,)).unwrap());
            let mut buf = Vec::new();
            let (e, _) = time(|| {
                memory
                    .store()
                    .read("memento_peers/m_sine/hits.json", &mut buf)
            });
            let (g, _) = time(|| m_sine(x(0)));
            let (h, _) = time(|| m_sine(x(1)));
            println!(
                "Memory::from_env {a:?}, first blake3 {b:?}, Function::new {c:?}, key {d:?}, \
                 a store read {e:?}, then the first hit {g:?}, a second hit {h:?} ({})",
                key.to_hex().len()
            );
        }
        ("memento", "fresh-parts") => {
            let (t0, _) = time(memento::__private::default_memory);
            let (t1, _) = time(|| m_sine(x(0)));
            let (t2, _) = time(|| m_sine(x(1)));
            println!("memory {:?} first hit {:?} second key {:?}", t0, t1, t2);
        }
        ("memento" | "cached", "fresh") => {
            let (t, v) = time(|| sine(peer, x(0)));
            assert_eq!(v, x(0).sin());
            report(peer, "hit-small-fresh", vec![t]);
        }
        ("memento" | "cached", "steady") => {
            // Open the store first: this case is the steady state.
            black_box(sine(peer, x(n)));
            let samples = (0..n)
                .map(|i| {
                    let (t, v) = time(|| sine(peer, x(i)));
                    assert_eq!(v, x(i).sin());
                    t
                })
                .collect();
            report(peer, "hit-small-steady", samples);
        }
        ("memento", "array-arg") => {
            let a = big_array(1);
            let expected = m_total(&a);
            let samples = (0..10)
                .map(|_| {
                    let (t, v) = time(|| m_total(black_box(&a)));
                    assert_eq!(v, expected);
                    t
                })
                .collect();
            report(peer, "hit-array-arg", samples);
        }
        ("memento" | "cached", "array-result") => array_result(peer),
        ("raw", "small") => raw_small(),
        ("raw", "big") => raw_big(),
        _ => {
            eprintln!("usage: memento-peers <memento|cached|raw> <case> [n]");
            std::process::exit(2);
        }
    }
}

fn array_result(peer: &str) {
    let call = |seed: u64| -> Vec<f64> {
        match peer {
            "memento" => m_big(seed),
            _ => c_big(seed).expect("cached disk store"),
        }
    };
    // Misses: the call's time minus the body's.
    let mut misses = Vec::new();
    for seed in 100..105 {
        BODY_NS.store(0, Ordering::Relaxed);
        let (t, v) = time(|| call(seed));
        black_box(v);
        let storing = t.saturating_sub(Duration::from_nanos(BODY_NS.load(Ordering::Relaxed)));
        if std::env::var_os("PEERS_VERBOSE").is_some() {
            eprintln!("miss {seed}: call {t:?}, storing {storing:?}");
        }
        misses.push(storing);
    }
    report(peer, "miss-array", misses);
    let expected = big_array(0);
    call(0);
    let hits = (0..10)
        .map(|_| {
            let (t, v) = time(|| call(0));
            assert!(v == expected);
            t
        })
        .collect();
    report(peer, "hit-array-result", hits);
    if peer == "memento" {
        m_big_mapped(0);
        let hits = (0..10)
            .map(|_| {
                let (t, v) = time(|| m_big_mapped(0));
                assert!(v.is_mapped());
                black_box(v);
                t
            })
            .collect();
        report(peer, "hit-array-result-mmap", hits);
        // What touching every element of the map costs the first time
        // (page faults and the lazy checksum), beside summing a Vec.
        let touch = (0..5)
            .map(|_| {
                let v = m_big_mapped(0);
                time(|| black_box(v.iter().sum::<f64>())).0
            })
            .collect();
        report(peer, "mmap-first-touch-sum", touch);
        let owned = expected.clone();
        let sums = (0..5)
            .map(|_| time(|| black_box(owned.iter().sum::<f64>())).0)
            .collect();
        report("raw", "sum-of-100MiB-vec", sums);
    }
}

fn raw_dir() -> PathBuf {
    let dir = PathBuf::from(std::env::var_os("MEMENTO_DIR").expect("MEMENTO_DIR"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn raw_big() {
    let dir = raw_dir();
    let v = big_array(7);
    // SAFETY: f64s are plain bytes.
    let bytes: &[u8] = unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), v.len() * 8) };
    let hash1 = (0..10)
        .map(|_| time(|| black_box(blake3::hash(bytes))).0)
        .collect();
    report("raw", "blake3-1-thread", hash1);
    let hashn = (0..10)
        .map(|_| time(|| black_box(blake3::Hasher::new().update_rayon(bytes).finalize())).0)
        .collect();
    report("raw", "blake3-all-cores", hashn);
    // Each write to a new file, kept, as misses write new entries: the
    // file system's writeback of the earlier ones weighs on the later ones
    // here as it does there.
    let path = dir.join("raw.bin");
    let writes = (0..5)
        .map(|i| time(|| std::fs::write(dir.join(format!("raw-{i}.bin")), bytes).unwrap()).0)
        .collect();
    std::fs::rename(dir.join("raw-0.bin"), &path).unwrap();
    report("raw", "fs-write-100MiB", writes);
    let reads = (0..10)
        .map(|_| time(|| black_box(std::fs::read(&path).unwrap())).0)
        .collect();
    report("raw", "fs-read-100MiB", reads);
    std::fs::remove_file(&path).unwrap();
    for i in 1..5 {
        std::fs::remove_file(dir.join(format!("raw-{i}.bin"))).unwrap();
    }
}

fn raw_small() {
    let dir = raw_dir();
    // A small entry's worth (memento's entry of f(f64): 96-byte header, 8-byte
    // value, about 70 bytes of info): create a temp file, write, rename.
    let small = [7u8; 176];
    let smalls = (0..1000)
        .map(|i| {
            time(|| {
                let tmp = dir.join(format!(".tmp-{i}"));
                std::fs::write(&tmp, small).unwrap();
                std::fs::rename(&tmp, dir.join(format!("small-{i}.bin"))).unwrap();
            })
            .0
        })
        .collect();
    report("raw", "create-write-rename-small", smalls);
    for i in 0..1000 {
        let _ = std::fs::remove_file(dir.join(format!("small-{i}.bin")));
    }
}
