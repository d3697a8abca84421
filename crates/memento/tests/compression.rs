//! Compressed results (features `lz4` and `zstd`; CI runs with
//! `--all-features`).
#![cfg(all(feature = "lz4", feature = "zstd"))]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::LazyLock;

use memento::codec::Compression;
use memento::{Function, Memory};

static MEM: LazyLock<Memory> = LazyLock::new(|| Memory::new(common::fresh_dir("compress")));
static RUNS: AtomicUsize = AtomicUsize::new(0);

#[memento::cache(memory = MEM, compress = "lz4")]
fn ramp_lz4(n: u64) -> Vec<u64> {
    RUNS.fetch_add(1, SeqCst);
    (0..n).map(|i| i % 10).collect()
}

#[memento::cache(memory = MEM, compress = "zstd:5")]
fn ramp_zstd(n: u64) -> Vec<u64> {
    RUNS.fetch_add(1, SeqCst);
    (0..n).map(|i| i % 10).collect()
}

fn output_size(memory: &Memory, f: &Function) -> u64 {
    let stats = memory.stats().unwrap();
    let folder = f.folder();
    stats
        .functions
        .iter()
        .find(|s| s.folder == folder)
        .map(|s| s.content_bytes)
        .unwrap()
}

#[test]
fn compressed_results_round_trip() {
    let expected: Vec<u64> = (0..100_000).map(|i| i % 10).collect();
    assert_eq!(ramp_lz4(100_000), expected);
    assert_eq!(ramp_zstd(100_000), expected);
    assert_eq!(ramp_lz4(100_000), expected, "from memory");
    // From disk, in a new Memory.
    let fresh = Memory::new(MEM.path().unwrap());
    let v: Vec<u64> = fresh.call(ramp_lz4::function(), &(&100_000u64,), || unreachable!());
    assert_eq!(v, expected);
    let v: Vec<u64> = fresh.call(ramp_zstd::function(), &(&100_000u64,), || unreachable!());
    assert_eq!(v, expected);
    assert_eq!(RUNS.load(SeqCst), 2);
    // Much smaller than the 100,000 postcard bytes.
    assert!(output_size(&fresh, ramp_lz4::function()) < 20_000);
    assert!(output_size(&fresh, ramp_zstd::function()) < 5_000);
}

#[test]
fn compression_can_change_without_losing_results() {
    let dir = common::fresh_dir("compress-change");
    let plain = Function::new("c", "f");
    let _: Vec<u8> = Memory::new(&dir).call(&plain, &1u8, || vec![1; 5000]);
    // The same function, now compressed: the old entry still reads.
    let zstd = Function::new("c", "f").compress(Compression::Zstd(3));
    let v: Vec<u8> = Memory::new(&dir).call(&zstd, &1u8, || unreachable!());
    assert_eq!(v, vec![1; 5000]);
    let v: Vec<u8> = Memory::new(&dir).call(&zstd, &2u8, || vec![2; 5000]);
    assert_eq!(v, vec![2; 5000]);
    let lz4 = Function::new("c", "f").compress(Compression::Lz4);
    let v: Vec<u8> = Memory::new(&dir).call(&lz4, &2u8, || unreachable!());
    assert_eq!(v, vec![2; 5000]);
}
