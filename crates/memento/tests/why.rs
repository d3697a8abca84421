//! Why a call missed (`Outcome::why`, `Memory::recent_misses`, the debug
//! line, `calls.json`), results stored only when slow (`min_duration`),
//! and what the cache saved (`Stats::saved`).

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::sync::LazyLock;
use std::time::Duration;

use memento::{Change, Function, Memory, Why};

static MEM: LazyLock<Memory> = LazyLock::new(|| Memory::new(common::fresh_dir("why")));

#[memento::cache(memory = MEM)]
fn scale(x: f64, factor: u32) -> f64 {
    x * factor as f64
}

#[test]
fn a_changed_argument_is_named_with_its_old_and_new_value() {
    let first = scale::call_with_outcome(2.0, 10);
    assert_eq!(first.why, Some(Why::FirstCall));
    let (second, logs) = common::capture_logs(|| scale::call_with_outcome(2.0, 100));
    assert!(!second.hit);
    let why = second.why.unwrap();
    assert_eq!(
        why,
        Why::Changed(vec![Change::Argument {
            index: 1,
            name: Some("factor".into()),
            old: "10".into(),
            new: "100".into(),
        }])
    );
    assert!(
        logs.contains("scale missed: argument factor changed: 10 → 100"),
        "{logs}"
    );
    let hit = scale::call_with_outcome(2.0, 100);
    assert!(hit.hit);
    assert_eq!(hit.why, None, "a hit has no why");
    // Both arguments changed: both are named.
    let both = scale::call_with_outcome(3.0, 7).why.unwrap();
    let Why::Changed(changes) = both else {
        panic!("{both:?}")
    };
    let names: Vec<Option<String>> = changes
        .iter()
        .map(|c| match c {
            Change::Argument { name, .. } => name.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(names, [Some("x".to_string()), Some("factor".to_string())]);
}

#[test]
fn changed_code_or_version_is_said() {
    let dir = tempfile::tempdir().unwrap();
    let memory = Memory::new(dir.path());
    let old = Function::new("why", "coded").fingerprint([1; 32], "f(x)");
    let new = Function::new("why", "coded").fingerprint([2; 32], "f(x)");
    let _: u32 = memory.call(&old, &(1u32,), || 1);
    let _: u32 = memory.call(&new, &(1u32,), || 2);
    let misses = memory.recent_misses_of(&new);
    assert_eq!(misses[0].why, Why::Changed(vec![Change::Code]));
    assert_eq!(misses[1].why, Why::FirstCall);

    let v1 = Function::new("why", "versioned").version("1");
    let v2 = Function::new("why", "versioned").version("2");
    let _: u32 = memory.call(&v1, &(1u32,), || 1);
    let _: u32 = memory.call(&v2, &(1u32,), || 2);
    let why = &memory.recent_misses_of(&v2)[0].why;
    assert_eq!(
        why,
        &Why::Changed(vec![Change::Version {
            old: "1".into(),
            new: "2".into()
        }])
    );
    assert_eq!(why.to_string(), r#"the version changed: "1" → "2""#);
}

static COUNTED: AtomicU32 = AtomicU32::new(0);

#[memento::cache(memory = MEM)]
fn counted(x: u32) -> u32 {
    COUNTED.fetch_add(1, SeqCst);
    x + 1
}

#[test]
fn a_cleared_result_is_gone() {
    assert_eq!(counted::call_with_outcome(1).why, Some(Why::FirstCall));
    counted::call_and_shelve(1).clear().unwrap();
    let again = counted::call_with_outcome(1);
    assert!(!again.hit);
    assert_eq!(again.why, Some(Why::Changed(vec![Change::Gone])));
    // The function's results all cleared: gone too.
    counted::clear().unwrap();
    assert_eq!(
        counted::call_with_outcome(1).why,
        Some(Why::Changed(vec![Change::Gone]))
    );
    assert_eq!(COUNTED.load(SeqCst), 3);
}

#[test]
fn a_first_call_is_first_call() {
    let dir = tempfile::tempdir().unwrap();
    let memory = Memory::new(dir.path());
    let f = Function::new("why", "first");
    let _: u8 = memory.call(&f, &(1u8,), || 1);
    let misses = memory.recent_misses_of(&f);
    assert_eq!(misses.len(), 1);
    assert_eq!(misses[0].why, Why::FirstCall);
    assert_eq!(
        misses[0].why.to_string(),
        "first call: no stored call of this function is recorded"
    );
    // A whole cache cleared: first calls again.
    memory.clear().unwrap();
    let _: u8 = memory.call(&f, &(1u8,), || 1);
    assert_eq!(memory.recent_misses_of(&f)[0].why, Why::FirstCall);
}

/// The function the child processes call.
#[memento::cache]
fn in_child(x: u32) -> u32 {
    x * 2
}

const CHILD: &str = "MEMENTO_WHY_CHILD";

/// `calls.json` is written at exit, and read by the next process's first
/// miss.
#[test]
fn the_record_survives_a_new_process() {
    if let Ok(arg) = std::env::var(CHILD) {
        println!("{}", in_child(arg.parse().unwrap()));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for arg in ["1", "2"] {
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "the_record_survives_a_new_process",
                "--exact",
                "--nocapture",
            ])
            .env(CHILD, arg)
            .env("MEMENTO_DIR", dir.path())
            .env("MEMENTO_LOG", "debug")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        // Without a subscriber, the debug line is on stderr, prefixed once.
        let stderr = String::from_utf8_lossy(&out.stderr);
        if arg == "2" {
            assert!(
                stderr.lines().any(|l| l.starts_with("[memento] ")
                    && l.ends_with("in_child missed: argument x changed: 1 → 2")),
                "{stderr}"
            );
        }
        assert!(!stderr.contains("[memento] memento:"), "{stderr}");
    }
    let memory = Memory::new(dir.path());
    let stats = memory.stats().unwrap();
    let listed = stats
        .functions
        .iter()
        .find(|f| f.name.ends_with("in_child"))
        .unwrap();
    let misses = memory.recent_misses(listed).unwrap();
    assert_eq!(misses.len(), 2, "{misses:?}");
    assert_eq!(misses[0].why.to_string(), "argument x changed: 1 → 2");
    assert_eq!(misses[1].why, Why::FirstCall);
    assert!(misses[0].time() >= misses[1].time());
}

#[test]
fn a_corrupt_or_unknown_calls_json_is_ignored_and_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let f = Function::new("why", "corrupt");
    let file = dir.path().join(f.folder()).join("calls.json");
    {
        let memory = Memory::new(dir.path());
        let _: u8 = memory.call(&f, &(1u8,), || 1);
    }
    assert!(file.exists(), "written when the last Memory went");
    for (x, bad) in [
        (2u8, &b"{not json"[..]),
        (3, br#"{"format":99,"calls":"?"}"#),
    ] {
        std::fs::write(&file, bad).unwrap();
        let memory = Memory::new(dir.path());
        let (_, logs) = common::capture_logs(|| {
            let _: u8 = memory.call(&f, &(x,), || x);
        });
        assert!(logs.contains("ignored and rewritten"), "{logs}");
        assert_eq!(memory.recent_misses_of(&f)[0].why, Why::FirstCall);
        drop(memory);
        let text = std::fs::read_to_string(&file).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["format"], 1, "{text}");
        assert_eq!(json["calls"].as_array().unwrap().len(), 1, "{text}");
        // The value is still served.
        let memory = Memory::new(dir.path());
        let again: u8 = memory.call(&f, &(x,), || unreachable!());
        assert_eq!(again, x);
    }
}

static QUICK: AtomicU32 = AtomicU32::new(0);
static SLOW: AtomicU32 = AtomicU32::new(0);

#[memento::cache(memory = MEM, min_duration = "1h")]
fn quick(x: u32) -> u32 {
    QUICK.fetch_add(1, SeqCst);
    x
}

#[memento::cache(memory = MEM, min_duration = "5ms")]
fn slow(x: u32) -> u32 {
    SLOW.fetch_add(1, SeqCst);
    std::thread::sleep(Duration::from_millis(20));
    x
}

#[test]
fn only_slow_results_are_stored() {
    let (first, logs) = common::capture_logs(|| quick(1));
    assert_eq!(first, 1);
    assert!(logs.contains("less than min_duration"), "{logs}");
    assert_eq!(quick(1), 1);
    assert_eq!(QUICK.load(SeqCst), 2, "a quick result is computed again");
    assert!(!quick::check_call_in_cache(1));

    assert_eq!(slow(1), 1);
    assert_eq!(slow(1), 1);
    assert_eq!(SLOW.load(SeqCst), 1, "a slow result is stored");
    assert!(slow::check_call_in_cache(1));
}

#[test]
fn the_time_saved_is_hits_times_the_mean_duration() {
    let dir = tempfile::tempdir().unwrap();
    {
        let memory = Memory::new(dir.path());
        let f = Function::new("why", "saving");
        for x in [1u8, 2] {
            for _ in 0..3 {
                let _: u8 = memory.call(&f, &(x,), || {
                    std::thread::sleep(Duration::from_millis(10 * x as u64));
                    x
                });
            }
        }
        let other = Function::new("why", "unused");
        let _: u8 = memory.call(&other, &(1u8,), || 1);
    }
    let stats = Memory::new(dir.path()).stats().unwrap();
    let f = stats
        .functions
        .iter()
        .find(|f| f.name == "why::saving")
        .unwrap();
    assert_eq!(f.hits, 4);
    let mean = f.mean_duration.unwrap();
    assert!(mean >= Duration::from_millis(15), "{mean:?}");
    assert_eq!(f.saved, mean * 4);
    let unused = stats
        .functions
        .iter()
        .find(|f| f.name == "why::unused")
        .unwrap();
    assert_eq!(unused.saved, Duration::ZERO);
    assert_eq!(stats.saved, f.saved);
}

#[test]
fn a_changed_input_file_is_the_argument_that_changed() {
    let dir = tempfile::tempdir().unwrap();
    let memory = Memory::new(dir.path().join("cache"));
    let data = dir.path().join("data.csv");
    std::fs::write(&data, "1,2,3").unwrap();
    let f = Function::new("why", "load").argument_names(["data"]);
    let file = memento::FileRef::new(&data);
    let _: usize = memory.call(&f, &(&file,), || 3);
    std::fs::write(&data, "1,2,3,4").unwrap();
    let _: usize = memory.call(&f, &(&file,), || 4);
    let why = &memory.recent_misses_of(&f)[0].why;
    let Why::Changed(changes) = why else {
        panic!("{why:?}")
    };
    assert!(
        matches!(&changes[..], [Change::Argument { index: 0, old, new, .. }] if old == new),
        "{why:?}"
    );
    assert!(
        why.to_string()
            .starts_with("argument data changed (its contents; it reads"),
        "{why}"
    );
}
