//! The tutorial's slow sine, cached.
//!
//! `cargo run --release -p memento-demo`: the first run computes each
//! value once (about 200 ms), then serves it instantly; a second run serves
//! every call from disk.
//!
//! A package of its own, with no dev-dependencies, so that a newcomer's
//! first build compiles memento and its runtime dependencies only (an
//! example of the `memento` crate would build every dev-dependency of that
//! crate: criterion, proptest, trybuild, tokio, ...).

use std::time::{Duration, Instant};

/// Pretend it is the 16th century and `sin` is slow.
#[memento::cache]
fn slow_sine(x: f64) -> f64 {
    std::thread::sleep(Duration::from_millis(200));
    x.sin()
}

fn main() {
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_target(false)
        .without_time()
        .init();
    let memory = memento::Memory::from_env();
    println!("cache location: {}", memory.location());
    for x in [0.1, 0.1, 0.2, 0.2, 0.1] {
        let start = Instant::now();
        let y = slow_sine(x);
        let took = start.elapsed();
        println!(
            "slow_sine({x}) = {y:.6}  took {:>10.3} ms",
            took.as_secs_f64() * 1e3
        );
    }
}
