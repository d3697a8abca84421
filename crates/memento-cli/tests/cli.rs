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
    let header = text.lines().next().unwrap();
    assert!(
        header.contains("DISK") && header.contains("CONTENT"),
        "{text}"
    );
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

/// `memento clear F` clears F exactly: a function nested in F's folder
/// (`lab::outer::inner` under `lab::outer`) keeps its results.
#[test]
fn clear_one_function_keeps_a_nested_one() {
    let dir = tempfile::tempdir().unwrap();
    let loc = dir.path().join("cache");
    let memory = Memory::new(&loc);
    let outer = Function::new("lab", "outer");
    let inner = Function::new("lab::outer", "inner");
    let _: u8 = memory.call(&outer, &1u8, || 1);
    let _: u8 = memory.call(&inner, &1u8, || 2);
    let _: u8 = memory.call(&inner, &2u8, || 3);
    let out = memento(&loc, &["clear", "lab::outer"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("removed 1 result(s) of lab::outer"),
        "{}",
        stdout(&out)
    );
    let stats = Memory::new(&loc).stats().unwrap();
    let names: Vec<&str> = stats.functions.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["lab::outer::inner"]);
    assert_eq!(stats.entries, 2);
    assert!(memory.contains::<u8, _>(&inner, &2u8));
}

fn modified(p: &Path) -> std::time::SystemTime {
    std::fs::metadata(p).unwrap().modified().unwrap()
}

/// verify, ls, show and du read entries without counting an access: two
/// entries back-dated by 10 minutes keep their time, so a later gc still
/// removes them first.
#[test]
fn management_reads_are_no_access() {
    let (_dir, loc) = filled();
    let entries: Vec<PathBuf> = walk(&loc)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "bin"))
        .take(2)
        .collect();
    assert_eq!(entries.len(), 2);
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(600);
    for p in &entries {
        let file = std::fs::File::options().write(true).open(p).unwrap();
        file.set_modified(old).unwrap();
    }
    let before: Vec<_> = entries.iter().map(|p| modified(p)).collect();
    for args in [
        &["verify"][..],
        &["ls"],
        &["show", "lab::sine"],
        &["show", "mean"],
        &["du"],
    ] {
        let out = memento(&loc, args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
    let after: Vec<_> = entries.iter().map(|p| modified(p)).collect();
    assert_eq!(before, after, "a management read recorded an access");
    // And the library's own management reads.
    let memory = Memory::new(&loc);
    memory.stats().unwrap();
    let after: Vec<_> = entries.iter().map(|p| modified(p)).collect();
    assert_eq!(before, after, "stats recorded an access");
    // gc then removes the two back-dated entries first.
    let out = memento(&loc, &["gc", "--items", "3"]);
    assert!(out.status.success(), "{}", stderr(&out));
    for p in &entries {
        assert!(!p.exists(), "{} was kept", p.display());
    }
}

/// After a clear, `ls` lists no function, and no shard folder keeps a
/// `.keys` file of its emptied shards.
#[test]
fn emptied_shards_keep_no_keys_file() {
    let (_dir, loc) = filled();
    let keys = |loc: &Path| {
        walk(loc)
            .into_iter()
            .filter(|p| p.file_name().is_some_and(|n| n == ".keys"))
            .count()
    };
    if cfg!(target_os = "linux") {
        assert!(keys(&loc) > 0, "the writes made .keys files");
    }
    let out = memento(&loc, &["gc", "--items", "0"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(keys(&loc), 0, "{:?}", walk(&loc));
    let out = memento(&loc, &["ls", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["entries"], 0);
}

/// `memento show`'s headers line up with its rows: each header starts
/// where its column's cells start (left-aligned) or ends where they end
/// (right-aligned).
#[test]
fn show_columns_line_up() {
    let (_dir, loc) = filled();
    let out = memento(&loc, &["show", "lab::sine"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    let head = lines.iter().position(|l| l.starts_with("KEY")).unwrap();
    let header = lines[head];
    let rows = &lines[head + 1..];
    assert_eq!(rows.len(), 4, "{text}");
    // Text columns (key, times, arguments) are left-aligned: each cell
    // starts where its header starts. Numbers (took, size) are
    // right-aligned: each cell ends where its header ends.
    let chars = |l: &str| l.chars().collect::<Vec<char>>();
    for (title, left) in [
        ("KEY", true),
        ("CREATED", true),
        ("TOOK", false),
        ("SIZE", false),
        ("LAST ACCESS", true),
        ("ARGUMENTS", true),
    ] {
        let start = header.find(title).unwrap();
        let end = start + title.len();
        for row in rows {
            let row = chars(row);
            let (inside, outside) = if left {
                (start, start.checked_sub(1))
            } else {
                (end - 1, Some(end))
            };
            assert!(
                row.get(inside).is_some_and(|c| *c != ' ')
                    && outside.is_none_or(|o| row.get(o).is_none_or(|c| *c == ' ')),
                "{title} is not over its cells:\n{text}"
            );
        }
    }
}

/// A signed cache verifies with its key from MEMENTO_KEY, and not with
/// another.
#[test]
fn verify_checks_signatures_with_memento_key() {
    let dir = tempfile::tempdir().unwrap();
    let loc = dir.path().join("cache");
    let memory = Memory::new(&loc).signing_key("the secret");
    let _: u8 = memory.call(&Function::new("lab", "signed"), &1u8, || 1);
    let run = |key: &str| {
        Command::new(env!("CARGO_BIN_EXE_memento"))
            .args(["verify"])
            .env("MEMENTO_DIR", &loc)
            .env("MEMENTO_KEY", key)
            .output()
            .unwrap()
    };
    let out = run("the secret");
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("verified 1 result(s): all whole"));
    let out = run("another secret");
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
}

/// `memento why F` lists F's recent misses, newest first, with their
/// reasons; an unknown function is a clear error.
#[test]
fn why_lists_recent_misses_newest_first() {
    let (_dir, loc) = filled();
    let out = memento(&loc, &["why", "sine"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].contains("lab::sine: 4 recent miss(es)"), "{text}");
    assert!(
        lines[1].starts_with("TIME") && lines[1].contains("WHY"),
        "{text}"
    );
    assert!(
        lines[2].ends_with("argument #0 changed: 0.3 → 0.4"),
        "{text}"
    );
    assert!(
        lines[5].ends_with("first call: no stored call of this function is recorded"),
        "{text}"
    );

    let out = memento(&loc, &["why", "lab::sine", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 4);
    assert_eq!(json[0]["reason"], "argument #0 changed: 0.3 → 0.4");
    assert_eq!(json[0]["why"]["changed"][0]["argument"]["new"], "0.4");
    assert_eq!(json[3]["why"], "first_call");

    let out = memento(&loc, &["why", "cosine"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("memento ls"), "{}", stderr(&out));
}

/// `memento ls` shows the time saved per function (hits × mean compute
/// time) and in all.
#[test]
fn ls_shows_the_time_saved() {
    let dir = tempfile::tempdir().unwrap();
    let loc = dir.path().join("cache");
    {
        let memory = Memory::new(&loc);
        let slow = Function::new("lab", "slow");
        for _ in 0..3 {
            let _: u8 = memory.call(&slow, &(1u8,), || {
                std::thread::sleep(std::time::Duration::from_millis(50));
                1
            });
        }
    }
    let out = memento(&loc, &["ls"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let header = text.lines().find(|l| l.starts_with("FUNCTION")).unwrap();
    assert!(header.contains("HITS  SAVED"), "{text}");
    let slow = text.lines().find(|l| l.starts_with("lab::slow")).unwrap();
    let saved = slow.split_whitespace().nth(5).unwrap();
    let ms: u64 = saved.strip_suffix("ms").unwrap().parse().unwrap();
    assert!(
        (100..1000).contains(&ms),
        "two hits of 50 ms or more: {slow}"
    );
    assert!(
        text.lines()
            .last()
            .unwrap()
            .starts_with(&format!("saved {saved} of computation in all")),
        "{text}"
    );
    let out = memento(&loc, &["ls", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let f = &json["functions"][0];
    assert_eq!(f["hits"], 2);
    let mean = f["mean_duration"].as_f64().unwrap();
    assert!(mean >= 0.05, "{f}");
    assert_eq!(
        f["saved"].as_f64().unwrap(),
        json["saved"].as_f64().unwrap()
    );
}
