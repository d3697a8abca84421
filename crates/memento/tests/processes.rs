//! Persistence across processes: a child process computes, a second child
//! finds the result on disk. This file is its own harness (`harness = false`)
//! so that the test binary can start copies of itself as the children.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const ROLE: &str = "MEMENTO_TEST_ROLE";
const COUNTER: &str = "MEMENTO_TEST_COUNTER";

/// The cached function the children call. It appends a line to the counter
/// file each time it really runs.
#[memento::cache]
fn triple(x: u64) -> u64 {
    let counter = std::env::var(COUNTER).expect("counter file");
    let mut text = fs::read_to_string(&counter).unwrap_or_default();
    text.push_str(&format!("computed {x}\n"));
    fs::write(&counter, text).unwrap();
    x * 3
}

fn child(arg: u64) {
    println!("{}", triple(arg));
}

fn run_child(cache: Option<&Path>, cwd: &Path, counter: &Path, arg: u64) -> u64 {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.env(ROLE, arg.to_string())
        .env(COUNTER, counter)
        .current_dir(cwd);
    match cache {
        Some(dir) => cmd.env("MEMENTO_DIR", dir),
        None => cmd.env_remove("MEMENTO_DIR"),
    };
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "child failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn lines(counter: &Path) -> usize {
    fs::read_to_string(counter)
        .unwrap_or_default()
        .lines()
        .count()
}

fn fresh_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// MEMENTO_DIR names the cache; a second process hits what the first stored.
fn second_process_hits() {
    let work = fresh_dir("persist");
    let cache = work.join("cache");
    let counter = work.join("counter.txt");
    assert_eq!(run_child(Some(&cache), &work, &counter, 7), 21);
    assert_eq!(lines(&counter), 1, "first process computes");
    assert_eq!(run_child(Some(&cache), &work, &counter, 7), 21);
    assert_eq!(lines(&counter), 1, "second process reads the stored result");
    assert_eq!(run_child(Some(&cache), &work, &counter, 8), 24);
    assert_eq!(lines(&counter), 2, "other arguments compute");
    assert!(cache.join("processes/triple/function.json").is_file());
}

/// Without MEMENTO_DIR, the cache is `.memento` in the current directory.
fn default_location() {
    let work = fresh_dir("default");
    let counter = work.join("counter.txt");
    assert_eq!(run_child(None, &work, &counter, 2), 6);
    assert_eq!(run_child(None, &work, &counter, 2), 6);
    assert_eq!(lines(&counter), 1);
    assert_eq!(
        fs::read_to_string(work.join(".memento/.gitignore")).unwrap(),
        "*\n"
    );
    assert!(work
        .join(".memento/processes/triple/function.json")
        .is_file());
}

/// A damaged entry left by one process is recomputed by the next.
fn damage_between_processes() {
    let work = fresh_dir("damage");
    let cache = work.join("cache");
    let counter = work.join("counter.txt");
    assert_eq!(run_child(Some(&cache), &work, &counter, 5), 15);
    let shard = fs::read_dir(cache.join("processes/triple"))
        .unwrap()
        .flatten()
        .find(|e| e.path().is_dir())
        .unwrap()
        .path();
    let entry = fs::read_dir(shard).unwrap().next().unwrap().unwrap().path();
    let output = entry.join("output.bin");
    let mut bytes = fs::read(&output).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(&output, bytes).unwrap();
    assert_eq!(run_child(Some(&cache), &work, &counter, 5), 15);
    assert_eq!(lines(&counter), 2, "the damaged entry was recomputed");
    assert_eq!(run_child(Some(&cache), &work, &counter, 5), 15);
    assert_eq!(lines(&counter), 2, "and stored whole again");
}

fn main() {
    if let Ok(arg) = std::env::var(ROLE) {
        child(arg.parse().unwrap());
        return;
    }
    let tests: [(&str, fn()); 3] = [
        ("second_process_hits", second_process_hits),
        ("default_location", default_location),
        ("damage_between_processes", damage_between_processes),
    ];
    let mut failed = 0;
    for (name, test) in tests {
        match std::panic::catch_unwind(test) {
            Ok(()) => println!("test {name} ... ok"),
            Err(_) => {
                println!("test {name} ... FAILED");
                failed += 1;
            }
        }
    }
    println!(
        "processes: {} passed, {failed} failed",
        tests.len() - failed
    );
    if failed > 0 {
        std::process::exit(1);
    }
}
