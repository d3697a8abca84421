//! Instructions per hit and per miss, counted with callgrind (repeatable on
//! a loaded machine, where timings are not):
//!
//! ```text
//! cargo build --profile bench -p memento --example cg_hits
//! valgrind --tool=callgrind --toggle-collect='*phase_*' \
//!     target/release/examples/cg_hits PHASE 1000
//! ```
//!
//! where PHASE is `disk` (hits read from the entry files), `memory`
//! (repeated hits from the in-memory layer) or `miss` (new arguments,
//! each computed and stored): only the phase's N calls are counted (the
//! setup that fills the cache is not); divide by N. `calls.json` is
//! written at most once a second, so under valgrind (some 50 times
//! slower) a miss run includes a flush or a few (`Calls::flush_if_due`
//! in `callgrind_annotate --inclusive=yes`) that a native run spreads
//! over many more misses.

use std::hint::black_box;
use std::sync::LazyLock;

use memento::Memory;

static DIR: LazyLock<std::path::PathBuf> = LazyLock::new(|| {
    let dir = std::env::temp_dir().join(format!("cg-hits-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
});
static COLD: LazyLock<Memory> = LazyLock::new(|| Memory::new(DIR.join("cold")).in_memory_limit(0));
static WARM: LazyLock<Memory> = LazyLock::new(|| Memory::new(DIR.join("warm")));
static MISSES: LazyLock<Memory> = LazyLock::new(|| Memory::new(DIR.join("misses")));

#[memento::cache(memory = COLD)]
fn cold_sine(x: f64) -> f64 {
    x.sin()
}

#[memento::cache(memory = WARM)]
fn warm_sine(x: f64) -> f64 {
    x.sin()
}

#[memento::cache(memory = MISSES)]
fn stored_sine(x: f64) -> f64 {
    x.sin()
}

#[inline(never)]
fn phase_disk(xs: &[f64]) -> f64 {
    xs.iter().map(|&x| cold_sine(black_box(x))).sum()
}

#[inline(never)]
fn phase_memory(n: usize) -> f64 {
    (0..n).map(|_| warm_sine(black_box(0.5))).sum()
}

#[inline(never)]
fn phase_miss(xs: &[f64]) -> f64 {
    xs.iter().map(|&x| stored_sine(black_box(x))).sum()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let phase = args.next().expect("PHASE: disk, memory or miss");
    let n: usize = args.next().map_or(1000, |n| n.parse().unwrap());
    let xs: Vec<f64> = (0..n).map(|i| i as f64 * 0.001).collect();
    let sum = match phase.as_str() {
        "disk" => {
            for &x in &xs {
                cold_sine(x);
            }
            phase_disk(&xs)
        }
        "memory" => {
            warm_sine(0.5);
            warm_sine(0.5);
            phase_memory(n)
        }
        "miss" => {
            // The function's first miss (its record, calls.json) apart.
            stored_sine(-1.0);
            phase_miss(&xs)
        }
        other => panic!("unknown phase {other}"),
    };
    black_box(sum);
    let _ = std::fs::remove_dir_all(&*DIR);
}
