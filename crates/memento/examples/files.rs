//! An input file keyed by its contents, as a user tries it: the function
//! computes again when the file's bytes change, not when it is touched or
//! copied, and says why it missed.
//!
//! ```sh
//! export MEMENTO_DIR=/tmp/files-demo
//! printf '1\n2\n3\n' > /tmp/data.txt
//! cargo run -p memento --example files -- /tmp/data.txt   # computed (first call)
//! touch /tmp/data.txt
//! cargo run -p memento --example files -- /tmp/data.txt   # a hit: same bytes
//! cp /tmp/data.txt /tmp/copy.txt
//! cargo run -p memento --example files -- /tmp/copy.txt   # a hit: same bytes elsewhere
//! printf '1\n2\n4\n' > /tmp/data.txt
//! cargo run -p memento --example files -- /tmp/data.txt   # computed: its contents changed
//! ```

use std::time::Duration;

use memento::FileRef;

/// The mean of the numbers in a file, one a line (slowly).
#[memento::cache]
fn mean_of(data: &FileRef) -> f64 {
    std::thread::sleep(Duration::from_millis(300));
    let text = std::fs::read_to_string(data).expect("a readable file");
    let values: Vec<f64> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
    values.iter().sum::<f64>() / values.len() as f64
}

fn main() {
    let path = std::env::args()
        .nth(1)
        .expect("usage: files PATH (a text file of numbers, one a line)");
    let outcome = mean_of::call_with_outcome(&FileRef::new(&path));
    let how = if outcome.hit { "hit" } else { "computed" };
    println!(
        "mean_of({path}) = {:.3}: {how} in {:.1?}",
        outcome.value, outcome.duration
    );
    if let Some(why) = &outcome.why {
        println!("  why it missed: {why}");
    }
}
