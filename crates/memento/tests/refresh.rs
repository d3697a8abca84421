//! Stale while revalidate: `#[memento::cache(expires_after = "..", refresh =
//! "background")]` serves an expired result at once and computes it again
//! on a thread of its own, once per key across threads and processes.
//!
//! Results expire after a nanosecond here, so that every stored result is
//! expired at the next call without sleeping; a computation that must still
//! be running while other calls are made waits for a gate the test opens.
//! The two-process test starts copies of this binary (`--exact` on itself)
//! with a role in the environment.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Barrier, Condvar, LazyLock, Mutex};
use std::time::{Duration, Instant};

use memento::{Lookup, Memory};

/// A gate that computations wait at while it is closed.
struct Gate {
    open: Mutex<bool>,
    cv: Condvar,
}

impl Gate {
    const fn new() -> Gate {
        Gate {
            open: Mutex::new(true),
            cv: Condvar::new(),
        }
    }

    fn close(&self) {
        *self.open.lock().unwrap() = false;
    }

    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.cv.notify_all();
    }

    fn pass(&self) {
        let open = self.open.lock().unwrap();
        let (_open, timeout) = self
            .cv
            .wait_timeout_while(open, Duration::from_secs(120), |open| !*open)
            .unwrap();
        assert!(!timeout.timed_out(), "the gate was never opened");
    }
}

fn memory(name: &str) -> Memory {
    Memory::new(common::fresh_dir(name))
}

/// The stored result of `f` for `args`, read through a copy of its
/// `Function` whose results do not expire (so that reading it starts
/// nothing and removes nothing).
fn stored<T: serde::Serialize + serde::de::DeserializeOwned + 'static>(
    memory: &Memory,
    f: &memento::Function,
    args: &impl serde::Serialize,
) -> Option<T> {
    let lasting = f.clone().expires_after(Duration::from_secs(1 << 40));
    match memory.lookup::<T, _>(&lasting, args) {
        Lookup::Hit(value) => Some(value),
        Lookup::Miss(_) => None,
    }
}

// ---------------------------------------------------------------------
// An expired result is served at once, and replaced.

static SERVED_MEM: LazyLock<Memory> = LazyLock::new(|| memory("refresh-served"));
static SERVED_RUNS: AtomicUsize = AtomicUsize::new(0);
static SERVED_DATA: AtomicU64 = AtomicU64::new(0);
static SERVED_GATE: Gate = Gate::new();

#[memento::cache(memory = SERVED_MEM, expires_after = "1ns", refresh = "background")]
fn price(item: String) -> u64 {
    SERVED_RUNS.fetch_add(1, Ordering::SeqCst);
    let data = SERVED_DATA.load(Ordering::SeqCst);
    SERVED_GATE.pass();
    data + item.len() as u64
}

#[test]
fn an_expired_result_is_served_at_once_and_replaced_by_the_refresh() {
    SERVED_DATA.store(100, Ordering::SeqCst);
    let first = price::call_with_outcome("ab".to_string());
    assert_eq!(
        (first.value, first.hit),
        (102, false),
        "computed in the call"
    );

    // The data changed; the stored result is expired. The call returns it
    // while the refresh is held at the gate: it does not wait for it.
    SERVED_DATA.store(200, Ordering::SeqCst);
    SERVED_GATE.close();
    let stale = price::call_with_outcome("ab".to_string());
    assert_eq!(
        (stale.value, stale.hit),
        (102, true),
        "the expired result, a hit"
    );
    assert_eq!(
        stored::<u64>(&SERVED_MEM, price::function(), &("ab",)),
        Some(102),
        "the expired entry stays while it is refreshed"
    );
    SERVED_GATE.open();
    Memory::wait_for_refreshes();
    assert_eq!(SERVED_RUNS.load(Ordering::SeqCst), 2, "one refresh");
    assert_eq!(
        stored::<u64>(&SERVED_MEM, price::function(), &("ab",)),
        Some(202),
        "the refresh replaced the stored result"
    );
    // The next call serves the refreshed result (expired again here, so it
    // starts another refresh).
    assert_eq!(price("ab".to_string()), 202);
    Memory::wait_for_refreshes();
    assert_eq!(SERVED_RUNS.load(Ordering::SeqCst), 3);
}

// ---------------------------------------------------------------------
// Many threads, one refresh.

static MANY_MEM: LazyLock<Memory> = LazyLock::new(|| memory("refresh-many"));
static MANY_RUNS: AtomicUsize = AtomicUsize::new(0);
static MANY_GATE: Gate = Gate::new();

#[memento::cache(memory = MANY_MEM, expires_after = "1ns", refresh = "background")]
fn shared_report(day: u32) -> String {
    let run = MANY_RUNS.fetch_add(1, Ordering::SeqCst);
    MANY_GATE.pass();
    format!("report {day}, run {run}")
}

#[test]
fn many_threads_hitting_an_expired_key_start_one_refresh() {
    assert_eq!(shared_report(7), "report 7, run 0");
    MANY_GATE.close();
    let threads = 16;
    let barrier = Barrier::new(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    shared_report::call_with_outcome(7)
                })
            })
            .collect();
        for handle in handles {
            let outcome = handle.join().unwrap();
            assert_eq!(outcome.value, "report 7, run 0");
            assert!(outcome.hit);
        }
    });
    // Every call returned while the refresh that the first of them
    // started was held at the gate (it holds the key's turn from the call
    // that started it to its end).
    MANY_GATE.open();
    Memory::wait_for_refreshes();
    assert_eq!(
        MANY_RUNS.load(Ordering::SeqCst),
        2,
        "one refresh, for 16 calls"
    );
    assert_eq!(
        stored::<String>(&MANY_MEM, shared_report::function(), &(7u32,)).as_deref(),
        Some("report 7, run 1")
    );
}

// ---------------------------------------------------------------------
// A failed refresh keeps the old result.

static FAIL_MEM: LazyLock<Memory> = LazyLock::new(|| memory("refresh-fail"));
static FAIL_RUNS: AtomicUsize = AtomicUsize::new(0);
static FAIL_NOW: AtomicBool = AtomicBool::new(false);

#[memento::cache(memory = FAIL_MEM, expires_after = "1ns", refresh = "background")]
fn fetch_rate(currency: String) -> Result<u64, String> {
    let run = FAIL_RUNS.fetch_add(1, Ordering::SeqCst) as u64;
    if FAIL_NOW.load(Ordering::SeqCst) {
        return Err(format!("{currency}: the server is down"));
    }
    Ok(run)
}

static PANIC_MEM: LazyLock<Memory> = LazyLock::new(|| memory("refresh-panic"));
static PANIC_RUNS: AtomicUsize = AtomicUsize::new(0);

#[memento::cache(memory = PANIC_MEM, expires_after = "1ns", refresh = "background")]
fn fragile(x: u64) -> u64 {
    if PANIC_RUNS.fetch_add(1, Ordering::SeqCst) > 0 {
        panic!("fragile fails after its first run (expected by the test)");
    }
    x
}

#[test]
fn a_failed_refresh_keeps_the_old_result() {
    assert_eq!(fetch_rate("EUR".into()), Ok(0));
    FAIL_NOW.store(true, Ordering::SeqCst);
    for _ in 0..3 {
        // Served, refreshed, failed: the old result stays.
        assert_eq!(fetch_rate("EUR".into()), Ok(0));
        Memory::wait_for_refreshes();
    }
    assert_eq!(
        FAIL_RUNS.load(Ordering::SeqCst),
        4,
        "a later call tries again"
    );
    assert_eq!(
        stored::<u64>(&FAIL_MEM, fetch_rate::function(), &("EUR",)),
        Some(0)
    );
    FAIL_NOW.store(false, Ordering::SeqCst);
    assert_eq!(fetch_rate("EUR".into()), Ok(0));
    Memory::wait_for_refreshes();
    assert_eq!(fetch_rate("EUR".into()), Ok(4), "refreshed once it works");
    Memory::wait_for_refreshes();
}

#[test]
fn a_refresh_that_panics_keeps_the_old_result() {
    assert_eq!(fragile(5), 5);
    assert_eq!(fragile(5), 5);
    Memory::wait_for_refreshes();
    assert_eq!(PANIC_RUNS.load(Ordering::SeqCst), 2, "the refresh ran");
    assert_eq!(fragile(5), 5, "and the stored result stayed");
    Memory::wait_for_refreshes();
    assert_eq!(
        stored::<u64>(&PANIC_MEM, fragile::function(), &(5u64,)),
        Some(5)
    );
}

// ---------------------------------------------------------------------
// Generic functions, `mut` arguments and ignored arguments refresh too.

static GENERIC_MEM: LazyLock<Memory> = LazyLock::new(|| memory("refresh-generic"));
static GENERIC_RUNS: AtomicUsize = AtomicUsize::new(0);

#[memento::cache(
    memory = GENERIC_MEM,
    expires_after = "1ns",
    refresh = "background",
    ignore(progress)
)]
fn doubled<T: serde::Serialize + serde::de::DeserializeOwned + Clone + Send + 'static>(
    mut items: Vec<T>,
    progress: std::sync::Arc<AtomicUsize>,
) -> Vec<T> {
    GENERIC_RUNS.fetch_add(1, Ordering::SeqCst);
    progress.fetch_add(1, Ordering::SeqCst);
    items.extend(items.clone());
    items
}

#[test]
fn generic_functions_and_ignored_arguments_refresh_too() {
    let progress = std::sync::Arc::new(AtomicUsize::new(0));
    assert_eq!(doubled(vec![1u8, 2], progress.clone()), [1, 2, 1, 2]);
    assert_eq!(doubled(vec![1u8, 2], progress.clone()), [1, 2, 1, 2]);
    Memory::wait_for_refreshes();
    // The refresh ran on its thread with the call's (ignored) argument.
    assert_eq!(progress.load(Ordering::SeqCst), 2);
    assert_eq!(GENERIC_RUNS.load(Ordering::SeqCst), 2);
    assert_eq!(doubled(vec!['a'], progress.clone()), ['a', 'a']);
    Memory::wait_for_refreshes();
}

static NO_ARGS_RUNS: AtomicUsize = AtomicUsize::new(0);

#[memento::cache(memory = GENERIC_MEM, expires_after = "1ns", refresh = "background")]
fn catalogue() -> Vec<String> {
    vec![format!("v{}", NO_ARGS_RUNS.fetch_add(1, Ordering::SeqCst))]
}

#[test]
fn a_function_without_arguments_refreshes_too() {
    assert_eq!(catalogue(), ["v0"]);
    assert_eq!(catalogue(), ["v0"]);
    Memory::wait_for_refreshes();
    assert_eq!(catalogue(), ["v1"]);
    Memory::wait_for_refreshes();
}

// ---------------------------------------------------------------------
// Without refresh, nothing changes; a forced call computes in the call.

static PLAIN_MEM: LazyLock<Memory> = LazyLock::new(|| memory("refresh-plain"));
static PLAIN_RUNS: AtomicUsize = AtomicUsize::new(0);

#[memento::cache(memory = PLAIN_MEM, expires_after = "1ns")]
fn plain(x: u64) -> u64 {
    x + PLAIN_RUNS.fetch_add(1, Ordering::SeqCst) as u64
}

#[test]
fn without_refresh_an_expired_result_is_computed_in_the_call() {
    assert_eq!(plain(10), 10);
    let again = plain::call_with_outcome(10);
    assert_eq!((again.value, again.hit), (11, false));
    assert_eq!(PLAIN_RUNS.load(Ordering::SeqCst), 2);
}

static FORCED_MEM: LazyLock<Memory> = LazyLock::new(|| memory("refresh-forced"));
static FORCED_RUNS: AtomicUsize = AtomicUsize::new(0);

#[memento::cache(memory = FORCED_MEM, expires_after = "1h", refresh = "background")]
fn hourly(x: u64) -> u64 {
    x + FORCED_RUNS.fetch_add(1, Ordering::SeqCst) as u64
}

#[test]
fn results_not_expired_are_hits_and_a_forced_call_computes_in_the_call() {
    assert_eq!(hourly(1), 1);
    let hit = hourly::call_with_outcome(1);
    assert_eq!((hit.value, hit.hit), (1, true));
    assert_eq!(hourly::call_forced(1), 2);
    assert_eq!(FORCED_RUNS.load(Ordering::SeqCst), 2, "no refresh started");
    Memory::wait_for_refreshes();
    assert_eq!(FORCED_RUNS.load(Ordering::SeqCst), 2);
    assert_eq!(hourly(1), 2);
}

// ---------------------------------------------------------------------
// Two processes, one refresh; a process waits for its refresh at exit.

const ROLE: &str = "MEMENTO_TEST_REFRESH_ROLE";
const LOG: &str = "MEMENTO_TEST_REFRESH_LOG";
const DATA: &str = "MEMENTO_TEST_REFRESH_DATA";
const GATE: &str = "MEMENTO_TEST_REFRESH_GATE";

/// Uses the default `Memory` (`MEMENTO_DIR`). Logs each run to the file
/// named by `LOG`; with `GATE` set, waits for that file to exist.
#[memento::cache(expires_after = "1ns", refresh = "background")]
fn across(x: u64) -> u64 {
    let data: u64 = std::env::var(DATA).unwrap().parse().unwrap();
    let log = std::env::var(LOG).unwrap();
    let mut f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .unwrap();
    use std::io::Write;
    writeln!(f, "run {} {data}", std::process::id()).unwrap();
    drop(f);
    if let Ok(gate) = std::env::var(GATE) {
        let start = Instant::now();
        while !Path::new(&gate).exists() {
            assert!(start.elapsed() < Duration::from_secs(120), "no gate");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    x + data
}

const CHILD_TEST: &str = "two_processes_start_one_refresh_and_exit_waits_for_it";

fn spawn_child(cache: &Path, log: &Path, data: u64, gate: Option<&Path>) -> Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", CHILD_TEST, "--nocapture", "--test-threads=1"])
        .env(ROLE, "child")
        .env("MEMENTO_DIR", cache)
        .env(LOG, log)
        .env(DATA, data.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match gate {
        Some(gate) => cmd.env(GATE, gate),
        None => cmd.env_remove(GATE),
    };
    cmd.spawn().unwrap()
}

/// The value a child printed.
fn value_of(child: Child) -> u64 {
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // libtest prints the test's name on the same line.
    let (_, value) = stdout
        .split_once("value=")
        .unwrap_or_else(|| panic!("no value in {stdout}"));
    value.split_whitespace().next().unwrap().parse().unwrap()
}

fn runs(log: &Path) -> Vec<String> {
    fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn two_processes_start_one_refresh_and_exit_waits_for_it() {
    if std::env::var(ROLE).is_ok() {
        println!("value={}", across(1));
        return;
    }
    let work: PathBuf = common::fresh_dir("refresh-processes");
    fs::create_dir_all(&work).unwrap();
    let (cache, log, gate) = (work.join("cache"), work.join("runs"), work.join("gate"));

    // The first process computes and stores 1 + 100.
    assert_eq!(value_of(spawn_child(&cache, &log, 100, None)), 101);
    assert_eq!(runs(&log).len(), 1);

    // The second finds it expired, serves it and refreshes it (held at
    // the gate); it cannot exit before the refresh is done.
    let refresher = spawn_child(&cache, &log, 200, Some(&gate));
    let start = Instant::now();
    while runs(&log).len() < 2 {
        assert!(start.elapsed() < Duration::from_secs(120), "no refresh");
        std::thread::sleep(Duration::from_millis(10));
    }
    // A third, meanwhile: served, and it starts no refresh of its own.
    assert_eq!(value_of(spawn_child(&cache, &log, 300, Some(&gate))), 101);
    assert_eq!(
        runs(&log).len(),
        2,
        "one refresh across processes: {:?}",
        runs(&log)
    );

    fs::write(&gate, "").unwrap();
    assert_eq!(value_of(refresher), 101, "the expired result was served");
    let runs = runs(&log);
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert!(runs[1].ends_with(" 200"), "{runs:?}");
    // The refresher's exit waited for its refresh, which stored 1 + 200.
    assert_eq!(
        stored::<u64>(&Memory::new(&cache), across::function(), &(1u64,)),
        Some(201)
    );
}

// ---------------------------------------------------------------------
// A refresh that keeps failing warns once (on stderr, with no subscriber).

const WARN_ROLE: &str = "MEMENTO_TEST_REFRESH_WARN";

#[memento::cache(expires_after = "1ns", refresh = "background")]
fn flaky(x: u64) -> Result<u64, String> {
    if std::env::var(WARN_ROLE).as_deref() == Ok("failing") {
        return Err("down".into());
    }
    Ok(x)
}

#[test]
fn a_refresh_that_keeps_failing_warns_once() {
    if std::env::var(WARN_ROLE).is_ok() {
        for _ in 0..3 {
            println!("value={}", flaky(8).unwrap());
            Memory::wait_for_refreshes();
        }
        return;
    }
    let work = common::fresh_dir("refresh-warn");
    let run = |role: &str| {
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "a_refresh_that_keeps_failing_warns_once",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(WARN_ROLE, role)
            .env("MEMENTO_DIR", &work)
            .env_remove(memento::MEMENTO_LOG)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        (
            String::from_utf8_lossy(&out.stdout)
                .matches("value=8")
                .count(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (values, stderr) = run("working");
    assert_eq!(values, 3);
    assert!(!stderr.contains("warning"), "{stderr}");
    // Three expired calls, three failed refreshes, one warning; the stored
    // result is served every time.
    let (values, stderr) = run("failing");
    assert_eq!(values, 3);
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("[memento] warning:"))
        .collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(
        warnings[0].contains("refresh::flaky: the background refresh of an expired result failed"),
        "{stderr}"
    );
}

// ---------------------------------------------------------------------
// Mapped results and bodies with `?` refresh too.

static MAPPED_MEM: LazyLock<Memory> = LazyLock::new(|| memory("refresh-mapped"));
static MAPPED_RUNS: AtomicUsize = AtomicUsize::new(0);

#[memento::cache(memory = MAPPED_MEM, expires_after = "1ns", refresh = "background", mmap)]
fn samples(n: usize) -> memento::Mapped<Vec<f64>> {
    let run = MAPPED_RUNS.fetch_add(1, Ordering::SeqCst);
    vec![run as f64; n]
}

static PARSED_RUNS: AtomicUsize = AtomicUsize::new(0);

#[memento::cache(memory = MAPPED_MEM, expires_after = "1ns", refresh = "background")]
fn parsed(text: String) -> Result<u64, std::num::ParseIntError> {
    PARSED_RUNS.fetch_add(1, Ordering::SeqCst);
    let n: u64 = text.trim().parse()?;
    Ok(n)
}

#[test]
fn mapped_results_and_bodies_with_question_marks_refresh_too() {
    assert_eq!(&samples(4)[..], [0.0; 4]);
    assert_eq!(&samples(4)[..], [0.0; 4], "expired: served");
    Memory::wait_for_refreshes();
    assert_eq!(&samples(4)[..], [1.0; 4], "refreshed");
    Memory::wait_for_refreshes();

    assert_eq!(parsed(" 12 ".into()), Ok(12));
    assert_eq!(parsed(" 12 ".into()), Ok(12));
    assert!(parsed("x".into()).is_err(), "an error is not stored");
    Memory::wait_for_refreshes();
    assert_eq!(PARSED_RUNS.load(Ordering::SeqCst), 3, "one refresh");
}
