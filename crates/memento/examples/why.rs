//! Why a call missed, results stored only when slow, and what the cache
//! saved, as a user tries them:
//!
//! ```sh
//! export MEMENTO_DIR=/tmp/why-demo
//! cargo run -p memento --example why -- 0.1   # first call
//! cargo run -p memento --example why -- 0.1   # a hit
//! cargo run -p memento --example why -- 0.5   # argument alpha changed: 0.1 → 0.5
//! memento ls                                  # SAVED column and total
//! memento why fit                             # the recent misses, newest first
//! ```

use std::time::Duration;

/// A slow fit (300 ms).
#[memento::cache]
fn fit(data: Vec<f64>, alpha: f64) -> f64 {
    std::thread::sleep(Duration::from_millis(300));
    data.iter().map(|x| x * alpha).sum()
}

/// Too quick to be worth a file: not stored.
#[memento::cache(min_duration = "100ms")]
fn quick(n: u64) -> u64 {
    n * 2
}

fn main() {
    let alpha: f64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(0.1);
    let outcome = fit::call_with_outcome(vec![1.0, 2.0, 3.0], alpha);
    let how = if outcome.hit { "hit" } else { "computed" };
    println!(
        "fit(alpha = {alpha}) = {:.2}: {how} in {:.1?}",
        outcome.value, outcome.duration
    );
    if let Some(why) = &outcome.why {
        println!("  why it missed: {why}");
    }
    quick(21);
    println!(
        "quick(21) stored? {} (min_duration = \"100ms\")",
        quick::check_call_in_cache(21)
    );
}
