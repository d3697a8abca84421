//! End-to-end: a test program (this one) fills a real cache through the
//! library, then the `memento` binary looks after it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use memento::{Function, Memory};

fn memento(location: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_memento"))
        .args(args)
        .env("MEMENTO_DIR", location)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A cache with two functions: `lab::sine` (3 results, 2 hits) and
/// `lab::stats::mean` (1 result).
fn filled() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let location = dir.path().join("cache");
    let memory = Memory::new(&location);
    let sine = Function::new("lab", "sine");
    for x in [0.1f64, 0.2, 0.3, 0.1, 0.2] {
        let _: f64 = memory.call(&sine, &(x,), || x.sin());
    }
    let mean = Function::new("lab::stats", "mean");
    let _: f64 = memory.call(&mean, &(vec![1.0f64, 2.0],), || 1.5);
    // Hits reach hits.json when a result is stored.
    let _: f64 = memory.call(&sine, &(0.4f64,), || 0.4f64.sin());
    (dir, location)
}

#[test]
fn ls_lists_functions() {
    let (_dir, loc) = filled();
    let out = memento(&loc, &["ls"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("FUNCTION"), "{text}");
    let sine = text.lines().find(|l| l.starts_with("lab::sine")).unwrap();
    let cols: Vec<&str> = sine.split_whitespace().collect();
    assert_eq!(cols[1], "4", "{sine}");
    assert_eq!(cols[4], "2", "hits: {sine}");
    assert!(text.contains("lab::stats::mean"), "{text}");

    // The location as an argument, and JSON.
    let out = Command::new(env!("CARGO_BIN_EXE_memento"))
        .args(["ls", loc.to_str().unwrap(), "--json"])
        .env_remove("MEMENTO_DIR")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["entries"], 5);
    assert_eq!(json["functions"][0]["function"], "lab::sine");
    assert_eq!(json["functions"][0]["entries"], 4);
    assert_eq!(json["functions"][1]["function"], "lab::stats::mean");
}

#[test]
fn show_a_function_and_an_entry() {
    let (_dir, loc) = filled();
    let out = memento(&loc, &["show", "mean"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("function:  lab::stats::mean"), "{text}");
    assert!(text.contains("[[1.0,2.0]]"), "{text}");
    let key_line = text.lines().last().unwrap();
    let prefix = &key_line[..8];
    let out = memento(&loc, &["show", "lab::stats::mean", prefix]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["metadata"]["function"], "lab::stats::mean");
    assert!(json["metadata"]["key"]
        .as_str()
        .unwrap()
        .starts_with(prefix));

    let out = memento(&loc, &["show", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("memento ls"), "{}", stderr(&out));
}

#[test]
fn verify_finds_and_removes_damage() {
    let (_dir, loc) = filled();
    let out = memento(&loc, &["verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("verified 5 result(s): all whole"));

    // Damage one entry.
    let victim = walk(&loc)
        .into_iter()
        .find(|p| p.extension().is_some_and(|x| x == "bin"))
        .unwrap();
    let mut bytes = std::fs::read(&victim).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&victim, bytes).unwrap();

    let out = memento(&loc, &["verify"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("checksum"), "{}", stdout(&out));
    assert!(victim.exists(), "left in place without --remove");
    let out = memento(&loc, &["verify", "--remove"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(!victim.exists());
    let out = memento(&loc, &["verify"]);
    assert!(stdout(&out).contains("verified 4 result(s): all whole"));
}

#[test]
fn gc_applies_limits() {
    let (_dir, loc) = filled();
    let out = memento(&loc, &["gc", "--items", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("removed 3 result(s)"),
        "{}",
        stdout(&out)
    );
    let stats = Memory::new(&loc).stats().unwrap();
    assert_eq!(stats.entries, 2);

    let out = memento(&loc, &["gc", "--bytes", "1"]);
    assert!(out.status.success());
    assert_eq!(Memory::new(&loc).stats().unwrap().entries, 0);

    let out = memento(&loc, &["gc"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--bytes 10GB"), "{}", stderr(&out));
    let out = memento(&loc, &["gc", "--bytes", "lots"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("500MB"), "{}", stderr(&out));
    let out = memento(&loc, &["gc", "--age", "30d"]);
    assert!(out.status.success());
}

#[test]
fn clear_one_function_or_all() {
    let (_dir, loc) = filled();
    let out = memento(&loc, &["clear", "lab::sine"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("removed 4 result(s) of lab::sine"));
    let stats = Memory::new(&loc).stats().unwrap();
    assert_eq!(stats.entries, 1);
    let out = memento(&loc, &["clear"]);
    assert!(out.status.success());
    assert_eq!(Memory::new(&loc).stats().unwrap().entries, 0);
    assert!(loc.join(".gitignore").exists());
}

#[test]
fn du_and_missing_cache() {
    let (_dir, loc) = filled();
    let out = memento(&loc, &["du"]);
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(text.lines().next().unwrap().contains("SIZE"));
    assert!(text.contains("total:"), "{text}");
    let sine = text.lines().position(|l| l.ends_with("lab::sine")).unwrap();
    let mean = text
        .lines()
        .position(|l| l.ends_with("lab::stats::mean"))
        .unwrap();
    assert!(sine < mean, "largest first: {text}");

    let out = memento(&loc.join("missing"), &["ls"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no cache at"), "{}", stderr(&out));
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            found.extend(walk(&p));
        } else {
            found.push(p);
        }
    }
    found
}
