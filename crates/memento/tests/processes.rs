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

/// A slow computation: one second (or `MEMENTO_TEST_SLEEP_MS`), logged at
/// its start and end in the counter file.
#[memento::cache]
fn slow_once(x: u64) -> u64 {
    let counter = std::env::var(COUNTER).expect("counter file");
    let log = |what: &str| {
        use std::io::Write;
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&counter)
            .unwrap();
        writeln!(f, "{what} {}", std::process::id()).unwrap();
    };
    log("start");
    let ms = std::env::var("MEMENTO_TEST_SLEEP_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    std::thread::sleep(std::time::Duration::from_millis(ms));
    log("done");
    x * 10
}

/// A large result (256 KiB) whose every byte tells which call made it.
#[memento::cache]
fn big(i: u64) -> Vec<u8> {
    vec![(i % 251) as u8; 1 << 18]
}

fn child(role: &str) {
    let (what, arg) = role.split_once(':').unwrap_or((role, "0"));
    let arg: u64 = arg.parse().unwrap();
    match what {
        "triple" => println!("{}", triple(arg)),
        "slow" => println!("{}", slow_once(arg)),
        "writer" => {
            // Write large entries until killed.
            for i in 0.. {
                let _ = big(i % 64);
                let _ = big::call_forced(i % 64);
            }
        }
        "hit_then_clear" => {
            // A hit counted in memory, then a clear: the hits are of
            // results that are gone, and are not written at exit.
            println!("{}", triple(arg));
            println!("{}", triple(arg));
            triple::memory().clear().unwrap();
        }
        other => panic!("unknown role {other}"),
    }
}

fn run_child(cache: Option<&Path>, cwd: &Path, counter: &Path, arg: u64) -> u64 {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.env(ROLE, format!("triple:{arg}"))
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

/// Hits counted before a clear are not flushed at exit into a folder whose
/// results are gone: `memento ls` would list a function without results.
fn hits_after_clear_make_no_function() {
    let work = fresh_dir("hits-clear");
    let cache = work.join("cache");
    let counter = work.join("counter.txt");
    let out = Command::new(std::env::current_exe().unwrap())
        .env(ROLE, "hit_then_clear:4")
        .env(COUNTER, &counter)
        .env("MEMENTO_DIR", &cache)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(lines(&counter), 1, "the second call was a hit");
    let stats = memento::Memory::new(&cache).stats().unwrap();
    assert!(
        stats.functions.is_empty(),
        "functions listed after a clear: {:?}",
        stats.functions
    );
    assert!(!cache.join("processes/triple/hits.json").exists());
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
    // The entry's file (the shard also holds the keys' lock file).
    let output = fs::read_dir(shard)
        .unwrap()
        .flatten()
        .find(|e| e.path().extension().is_some_and(|x| x == "bin"))
        .unwrap()
        .path();
    let mut bytes = fs::read(&output).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(&output, bytes).unwrap();
    assert_eq!(run_child(Some(&cache), &work, &counter, 5), 15);
    assert_eq!(lines(&counter), 2, "the damaged entry was recomputed");
    assert_eq!(run_child(Some(&cache), &work, &counter, 5), 15);
    assert_eq!(lines(&counter), 2, "and stored whole again");
}

fn spawn(role: &str, cache: &Path, counter: &Path, sleep_ms: u64) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .env(ROLE, role)
        .env(COUNTER, counter)
        .env("MEMENTO_DIR", cache)
        .env("MEMENTO_TEST_SLEEP_MS", sleep_ms.to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

fn count(counter: &Path, what: &str) -> usize {
    fs::read_to_string(counter)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with(what))
        .count()
}

/// 16 processes started together on one key whose computation takes 1 s:
/// it runs once, and all 16 get its value.
fn sixteen_processes_compute_once() {
    let work = fresh_dir("sixteen");
    let (cache, counter) = (work.join("cache"), work.join("counter.txt"));
    let children: Vec<_> = (0..16)
        .map(|_| spawn("slow:4", &cache, &counter, 1000))
        .collect();
    let mut values = Vec::new();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        values.push(String::from_utf8(out.stdout).unwrap().trim().to_string());
    }
    assert!(values.iter().all(|v| v == "40"), "{values:?}");
    assert_eq!(count(&counter, "done"), 1, "computed once");
    assert_eq!(count(&counter, "start"), 1, "started once");
    println!(
        "  16 processes: {} value(s) \"40\", 1 computation",
        values.len()
    );
}

/// The process computing a key is killed: a process waiting for it takes
/// over and completes.
fn lock_holder_killed() {
    let work = fresh_dir("killed");
    let (cache, counter) = (work.join("cache"), work.join("counter.txt"));
    let mut holder = spawn("slow:5", &cache, &counter, 60_000);
    let started = std::time::Instant::now();
    while count(&counter, "start") == 0 {
        assert!(started.elapsed().as_secs() < 30, "holder never started");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let waiter = spawn("slow:5", &cache, &counter, 100);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(count(&counter, "start"), 1, "the waiter waits");
    holder.kill().unwrap();
    holder.wait().unwrap();
    let out = waiter.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), "50");
    assert_eq!(count(&counter, "start"), 2);
    assert_eq!(count(&counter, "done"), 1, "only the waiter finished");
    println!(
        "  holder killed after {:?}; the waiter completed",
        started.elapsed()
    );
}

/// A process writing 256 KiB entries is killed at random moments, 200 times:
/// every entry left is whole and right, and every call then returns the
/// right value.
fn crash_loop() {
    let work = fresh_dir("crash");
    let (cache, counter) = (work.join("cache"), work.join("counter.txt"));
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    let mut random = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let memory = memento::Memory::new(&cache);
    let (mut whole, mut checked_rounds) = (0usize, 0usize);
    for _ in 0..200 {
        let mut child = spawn("writer", &cache, &counter, 0);
        std::thread::sleep(std::time::Duration::from_micros(2_000 + random(60_000)));
        child.kill().unwrap();
        child.wait().unwrap();
        // Every entry that can be read is whole and holds the right bytes.
        let inventory = memento::evict::Inventory::scan(memory.store()).unwrap();
        let mut buf = Vec::new();
        for entry in inventory.entries.iter().filter(|e| e.complete) {
            if !memory.store().read(&entry.name, &mut buf).unwrap() {
                continue;
            }
            let key = memento::Key::from_hex(&entry.key).unwrap();
            let payload = memento::codec::verify(&key, &buf, None)
                .unwrap_or_else(|d| panic!("{}: {d}", entry.name));
            let (bytes, _) = memento::codec::decode_entry::<Vec<u8>>(&buf, payload)
                .unwrap_or_else(|d| panic!("{}: {d}", entry.name));
            assert_eq!(bytes.len(), 1 << 18);
            assert!(
                bytes.iter().all(|b| *b == bytes[0]),
                "mixed bytes in {}",
                entry.name
            );
            whole += 1;
        }
        checked_rounds += 1;
    }
    // Every call returns the right value, whatever was left.
    for i in 0..64u64 {
        let v = memory.call(big::function(), &(&i,), || vec![(i % 251) as u8; 1 << 18]);
        assert_eq!(v, vec![(i % 251) as u8; 1 << 18], "big({i})");
    }
    let swept = memory.store().sweep(std::time::Duration::ZERO).unwrap();
    println!(
        "  {checked_rounds} kills; {whole} whole entries checked after them; {swept} leftover temp/lock file(s) swept"
    );
}

/// MEMENTO_KEY signs what a process writes; a process with another key (or
/// none) does not trust it and computes again.
fn signed_between_processes() {
    let work = fresh_dir("signed");
    let (cache, counter) = (work.join("cache"), work.join("counter.txt"));
    let run = |key: Option<&str>| {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.env(ROLE, "triple:9")
            .env(COUNTER, &counter)
            .env("MEMENTO_DIR", &cache);
        match key {
            Some(k) => cmd.env("MEMENTO_KEY", k),
            None => cmd.env_remove("MEMENTO_KEY"),
        };
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), "27");
        lines(&counter)
    };
    assert_eq!(run(Some("alpha")), 1, "computed and signed");
    assert_eq!(run(Some("alpha")), 1, "same key: trusted");
    assert_eq!(run(Some("beta")), 2, "another key: computed again");
    assert_eq!(run(None), 3, "no key: cannot check a signed entry");
    assert_eq!(run(None), 3, "its own unsigned entry: trusted");
    assert_eq!(
        run(Some("alpha")),
        4,
        "unsigned entry under a key: computed again"
    );
}

/// The same guarantees on a second file system: tmpfs at /dev/shm (where
/// the machine has one; the run says so when it has not). Locks, links and
/// renames behave per file system.
fn on_tmpfs() {
    let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
    let Some(shm) = mounts
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() > 2 && f[2] == "tmpfs" && f[1] == "/dev/shm")
        .map(|f| PathBuf::from(f[1]))
    else {
        println!("  no tmpfs at /dev/shm on this machine: this case did not run");
        return;
    };
    let work = shm.join(format!("memento-test-{}", std::process::id()));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).unwrap();
    let (cache, counter) = (work.join("cache"), work.join("counter.txt"));
    let children: Vec<_> = (0..6)
        .map(|_| spawn("slow:6", &cache, &counter, 500))
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), "60");
    }
    assert_eq!(count(&counter, "done"), 1, "computed once on tmpfs");
    let memory = memento::Memory::new(&cache);
    let v: u64 = memory.call(slow_once::function(), &(&6u64,), || unreachable!("stored"));
    assert_eq!(v, 60);
    let mut child = spawn("writer", &cache, &counter, 0);
    std::thread::sleep(std::time::Duration::from_millis(100));
    child.kill().unwrap();
    child.wait().unwrap();
    for i in 0..64u64 {
        let v = memory.call(big::function(), &(&i,), || vec![(i % 251) as u8; 1 << 18]);
        assert_eq!(v, vec![(i % 251) as u8; 1 << 18]);
    }
    fs::remove_dir_all(&work).unwrap();
    println!(
        "  tmpfs at {}: 6 processes, 1 computation; killed writer, all values right",
        shm.display()
    );
}

fn main() {
    if let Ok(role) = std::env::var(ROLE) {
        child(&role);
        return;
    }
    let tests: [(&str, fn()); 9] = [
        (
            "hits_after_clear_make_no_function",
            hits_after_clear_make_no_function,
        ),
        ("on_tmpfs", on_tmpfs),
        ("signed_between_processes", signed_between_processes),
        ("second_process_hits", second_process_hits),
        ("default_location", default_location),
        ("damage_between_processes", damage_between_processes),
        (
            "sixteen_processes_compute_once",
            sixteen_processes_compute_once,
        ),
        ("lock_holder_killed", lock_holder_killed),
        ("crash_loop", crash_loop),
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
