//! Helpers a cached function calls: `#[memento::tracked]` and
//! `#[memento::cache(depends(..))]`.
//!
//! ```sh
//! cargo run -p memento --example helpers   # computes, then reads back
//! cargo run -p memento --example helpers   # everything read from .memento
//! # now edit `to_kelvin` below (273.15 -> 273.0, say), and run again:
//! # total_radiance is computed again, mean_celsius is still read back
//! cargo run -p memento --example helpers
//! ```

use std::time::Duration;

mod units {
    /// The innermost helper.
    #[memento::tracked]
    pub fn to_kelvin(celsius: f64) -> f64 {
        celsius + 273.15
    }
}

/// A helper that calls another: it names it in its own `depends`.
#[memento::tracked(depends(units::to_kelvin))]
fn radiance(celsius: f64) -> f64 {
    5.670374419e-8 * units::to_kelvin(celsius).powi(4)
}

/// Depends on `radiance`, and so on `units::to_kelvin` too.
#[memento::cache(depends(radiance))]
fn total_radiance(temperatures: Vec<f64>) -> f64 {
    std::thread::sleep(Duration::from_millis(500));
    temperatures.into_iter().map(radiance).sum()
}

/// Calls no helper: edits of the helpers leave its results alone.
#[memento::cache]
fn mean_celsius(temperatures: Vec<f64>) -> f64 {
    std::thread::sleep(Duration::from_millis(500));
    temperatures.iter().sum::<f64>() / temperatures.len() as f64
}

fn report(name: &str, outcome: memento::Outcome<f64>) {
    let how = if outcome.hit {
        "read from the cache"
    } else {
        "computed"
    };
    println!(
        "{name:>15} = {:>10.4}  ({how} in {:.1?})",
        outcome.value, outcome.duration
    );
}

fn main() {
    let temperatures = vec![12.5, 18.0, 21.25, 25.0];
    println!(
        "cache: {}",
        total_radiance::memory().path().unwrap().display()
    );
    for _ in 0..2 {
        report(
            "total_radiance",
            total_radiance::call_with_outcome(temperatures.clone()),
        );
        report(
            "mean_celsius",
            mean_celsius::call_with_outcome(temperatures.clone()),
        );
    }
}
