//! Stale while revalidate: `refresh = "background"` serves an expired
//! result at once and computes it again on a thread of its own.
//!
//! ```sh
//! cargo run -p memento --example refresh
//! ```

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A slow lookup whose answer goes out of date: kept 2 seconds, then
/// served while it is fetched again.
#[memento::cache(expires_after = "2s", refresh = "background")]
fn exchange_rate(currency: String) -> String {
    std::thread::sleep(Duration::from_millis(500)); // a slow remote call
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    format!("{currency} rate as of t={:.1}s", now.as_secs_f64() % 1000.0)
}

fn timed(what: &str) {
    let start = Instant::now();
    let outcome = exchange_rate::call_with_outcome("EUR".to_string());
    println!(
        "{what:<34} {:<28} {:>8.1?}  hit: {}",
        outcome.value,
        start.elapsed(),
        outcome.hit
    );
}

fn main() {
    timed("first call (or stored by a run)");
    timed("again");
    std::thread::sleep(Duration::from_millis(2500));
    timed("2.5 s later: expired, served");
    memento::Memory::wait_for_refreshes();
    timed("after the background refresh");
}
