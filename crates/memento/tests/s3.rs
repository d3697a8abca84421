//! The S3 store against a real S3 server on 127.0.0.1: moto's, started by
//! `scripts/moto.sh` (installed from PyPI on first use). Without the
//! server these tests fail; they never skip.
//!
//! This file is its own harness (`harness = false`): it starts the server,
//! makes the bucket, runs each case (catching its panic), always stops the
//! server, and starts copies of itself as the processes of the
//! multi-process cases. Every case works under a prefix of its own.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use memento::store::{LockOutcome, NearCache, S3Store, Store};
use memento::Memory;

const BUCKET: &str = "memento-test";
const KEY_ID: &str = "AKIDMEMENTOTEST";
const SECRET: &str = "memento-test-secret-key";

/// Child processes: what to do, and with what.
const ROLE: &str = "MEMENTO_S3_ROLE";
const PREFIX: &str = "MEMENTO_S3_PREFIX";
const COUNTER: &str = "MEMENTO_S3_COUNTER";
const SLEEP_MS: &str = "MEMENTO_S3_SLEEP_MS";
const TTL_MS: &str = "MEMENTO_S3_TTL_MS";

/// The main server's URL.
static ENDPOINT: OnceLock<String> = OnceLock::new();

fn endpoint() -> &'static str {
    ENDPOINT.get().expect("the server's URL")
}

/// Keys of the functions whose results the cases store (the bodies are
/// given to `Memory::call`, which counts them).
#[memento::cache]
fn slow(x: u64) -> u64 {
    x * 10
}

#[memento::cache]
fn triple(x: u64) -> u64 {
    x * 3
}

#[memento::cache]
fn words_len(n: u64) -> Vec<u64> {
    (0..n).collect()
}

#[memento::cache]
fn words(n: u64) -> Vec<String> {
    (0..n).map(|i| format!("word {i}")).collect()
}

// ---------------------------------------------------------------------------
// The server

/// A moto server started by `scripts/moto.sh`; stopped when dropped.
struct Moto {
    url: String,
    pidfile: PathBuf,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/moto.sh")
}

fn target_dir() -> PathBuf {
    // CARGO_TARGET_TMPDIR is <target>/tmp: the virtual environment goes
    // in this build's target folder, wherever it is.
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

impl Moto {
    /// Starts a server (on `port`, or a free one), with `env` for it.
    fn start(name: &str, port: Option<u16>, env: &[(&str, &str)]) -> Result<Moto, String> {
        let pidfile = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("moto-{name}-{}.pid", std::process::id()));
        let mut cmd = Command::new("bash");
        cmd.arg(script())
            .arg("start")
            .arg(&pidfile)
            .env("CARGO_TARGET_DIR", target_dir())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(port) = port {
            cmd.arg(port.to_string());
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script().display()))?;
        if !out.status.success() {
            return Err(format!(
                "scripts/moto.sh start failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let url = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !url.starts_with("http://127.0.0.1:") {
            return Err(format!("scripts/moto.sh printed {url:?}, not a URL"));
        }
        Ok(Moto { url, pidfile })
    }

    fn port(&self) -> u16 {
        self.url.rsplit(':').next().unwrap().parse().unwrap()
    }

    fn stop(&mut self) {
        if self.url.is_empty() {
            return;
        }
        let status = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(&self.pidfile)
            .env("CARGO_TARGET_DIR", target_dir())
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!(
                "s3: could not stop the server of {}",
                self.pidfile.display()
            );
        }
        self.url.clear();
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends one raw HTTP request; returns the status line and the body.
fn http(url: &str, method: &str, path: &str) -> std::io::Result<(String, String)> {
    let host = url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(host)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let status = answer.lines().next().unwrap_or("").to_string();
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// Creates the bucket with a plain `PUT /bucket` (object_store cannot).
fn create_bucket(url: &str) -> Result<(), String> {
    let (status, body) =
        http(url, "PUT", &format!("/{BUCKET}")).map_err(|e| format!("PUT /{BUCKET}: {e}"))?;
    if status.contains(" 200 ") {
        Ok(())
    } else {
        Err(format!("PUT /{BUCKET}: {status} {body}"))
    }
}

// ---------------------------------------------------------------------------
// Helpers

fn unique(case: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{case}-{}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn store_at(url: &str, prefix: &str) -> S3Store {
    S3Store::builder(format!("s3://{BUCKET}/{prefix}"))
        .endpoint(url)
        .allow_http(true)
        .region("us-east-1")
        .credentials(KEY_ID, SECRET)
        .lease_ttl(Duration::from_secs(2))
        .build()
        .unwrap()
}

fn store(prefix: &str) -> S3Store {
    store_at(endpoint(), prefix)
}

fn fresh_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(unique(name));
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn count(counter: &Path, what: &str) -> usize {
    fs::read_to_string(counter)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with(what))
        .count()
}

fn log_line(counter: &Path, what: &str) {
    let mut f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(counter)
        .unwrap();
    writeln!(f, "{what} {}", std::process::id()).unwrap();
}

/// A copy of this binary in `role`, configured through the standard AWS
/// environment (none of the caller's AWS_* settings leak in).
fn spawn(role: &str, url: &str, prefix: &str, counter: &Path, sleep_ms: u64, ttl_ms: u64) -> Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("AWS_") {
            cmd.env_remove(key);
        }
    }
    cmd.env(ROLE, role)
        .env(PREFIX, prefix)
        .env(COUNTER, counter)
        .env(SLEEP_MS, sleep_ms.to_string())
        .env(TTL_MS, ttl_ms.to_string())
        .env("AWS_ENDPOINT_URL", url)
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env_remove("MEMENTO_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

struct Output {
    stdout: String,
    stderr: String,
}

fn finish(child: Child) -> Output {
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "child failed: {stderr}");
    Output { stdout, stderr }
}

// ---------------------------------------------------------------------------
// Children

fn child(role: &str) {
    if let Some(url) = role.strip_prefix("down:") {
        // Two handles on one bucket whose server is gone: every call
        // returns its value, and the outage is said once.
        let prefix = std::env::var(PREFIX).unwrap();
        let a = Memory::with_store(store_at(url, &prefix));
        let b = Memory::with_store(store_at(url, &prefix));
        let mut timings = Vec::new();
        for x in 0..6u64 {
            let memory = if x % 2 == 0 { &a } else { &b };
            let t = Instant::now();
            let v: u64 = memory.call(triple::function(), &(&x,), || x * 3);
            timings.push(t.elapsed());
            assert_eq!(v, x * 3);
        }
        println!("{timings:?}");
        return;
    }
    if let Some(arg) = role.strip_prefix("located:") {
        // The cache as a user opens it: MEMENTO_DIR=s3://bucket/prefix, the
        // standard AWS environment, the near cache under XDG_CACHE_HOME.
        let counter = PathBuf::from(std::env::var(COUNTER).unwrap());
        let memory = Memory::from_env();
        let x: u64 = arg.parse().unwrap();
        for _ in 0..2 {
            let v: u64 = memory.call(triple::function(), &(&x,), || {
                log_line(&counter, "computed");
                x * 3
            });
            println!("{v}");
        }
        return;
    }
    let prefix = std::env::var(PREFIX).unwrap();
    let counter = PathBuf::from(std::env::var(COUNTER).unwrap());
    let sleep_ms: u64 = std::env::var(SLEEP_MS).unwrap().parse().unwrap();
    let ttl_ms: u64 = std::env::var(TTL_MS).unwrap().parse().unwrap();
    // Everything but the lease's time to live from the environment.
    let store = S3Store::builder(format!("s3://{BUCKET}/{prefix}"))
        .lease_ttl(Duration::from_millis(ttl_ms))
        .build()
        .unwrap();
    let memory = Memory::with_store(store);
    let (what, arg) = role.split_once(':').unwrap();
    let x: u64 = arg.parse().unwrap();
    match what {
        // A slow computation, logged at its start and end.
        "slow" => {
            let v: u64 = memory.call(slow::function(), &(&x,), || {
                log_line(&counter, "start");
                std::thread::sleep(Duration::from_millis(sleep_ms));
                log_line(&counter, "done");
                x * 10
            });
            println!("{v}");
        }
        // Two calls (the second a hit when the store works).
        "triple" => {
            for _ in 0..2 {
                let v: u64 = memory.call(triple::function(), &(&x,), || {
                    log_line(&counter, "computed");
                    x * 3
                });
                println!("{v}");
            }
        }
        // One hit that reaches the store, then an exit that runs no
        // destructor: only the store's exit hook writes the access.
        "hit_exit" => {
            let memory = memory.in_memory_limit(0);
            let v: u64 = memory.call(triple::function(), &(&x,), || {
                log_line(&counter, "computed");
                x * 3
            });
            println!("{v}");
            std::process::exit(0);
        }
        other => panic!("unknown role {other}"),
    }
}

// ---------------------------------------------------------------------------
// Cases

/// The store's operations, one by one.
fn store_basics() {
    let prefix = unique("basics");
    let s = store(&prefix);
    let mut buf = Vec::new();
    assert_eq!(s.location(), format!("s3://{BUCKET}/{prefix}"));
    assert_eq!(s.endpoint(), Some(endpoint()));
    assert_eq!((s.bucket(), s.prefix()), (BUCKET, prefix.as_str()));
    assert!(!s.read("a/b.bin", &mut buf).unwrap(), "absent");
    assert!(!s.peek("a/b.bin", &mut buf).unwrap(), "absent");
    assert!(!s.read_range("a/b.bin", 0..4, &mut buf).unwrap(), "absent");

    // Create-only: the second publish keeps the first.
    assert!(s.publish("a/b.bin", b"first").unwrap());
    assert!(!s.publish("a/b.bin", b"second").unwrap());
    assert!(s.read("a/b.bin", &mut buf).unwrap());
    assert_eq!(buf, b"first");
    assert!(s
        .publish_parts("a/parts.bin", &[b"ab", b"", b"cd"])
        .unwrap());
    assert!(s.peek("a/parts.bin", &mut buf).unwrap());
    assert_eq!(buf, b"abcd");

    // Ranges, cut at the end.
    assert!(s.read_range("a/b.bin", 1..3, &mut buf).unwrap());
    assert_eq!(buf, b"ir");
    assert!(s.read_range("a/b.bin", 3..u64::MAX, &mut buf).unwrap());
    assert_eq!(buf, b"st");
    assert!(s.read_range("a/b.bin", 2..100, &mut buf).unwrap());
    assert_eq!(buf, b"rst");
    assert!(s.read_range("a/b.bin", 10..20, &mut buf).unwrap());
    assert!(buf.is_empty(), "past the end: empty");
    assert!(s.read_range("a/b.bin", 2..2, &mut buf).unwrap());
    assert!(buf.is_empty());

    // Overwrite, and an empty object.
    s.write("a/c.json", b"[1]").unwrap();
    s.write_parts("a/c.json", &[b"[1,", b"2]"]).unwrap();
    assert!(s.read("a/c.json", &mut buf).unwrap());
    assert_eq!(buf, b"[1,2]");
    assert_eq!(
        memento::store::read_json::<Vec<u8>>(&s, "a/c.json"),
        Some(vec![1, 2])
    );
    s.write("e/empty", b"").unwrap();
    assert!(s.read("e/empty", &mut buf).unwrap());
    assert!(buf.is_empty());
    assert!(s.read_range("e/empty", 0..u64::MAX, &mut buf).unwrap());
    assert!(buf.is_empty());
    s.write("ab/other.bin", b"xyz").unwrap();

    // Listing by folder: "a" is not "ab".
    let listed = s.list_meta("a").unwrap();
    let names: Vec<_> = listed.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["a/b.bin", "a/c.json", "a/parts.bin"]);
    assert_eq!(listed[0].size, 5);
    assert_eq!(listed[0].disk, 5);
    let age = std::time::SystemTime::now()
        .duration_since(listed[0].modified)
        .unwrap_or_default();
    assert!(age < Duration::from_secs(300), "modified {age:?} ago");
    assert_eq!(
        s.list("").unwrap(),
        [
            "a/b.bin",
            "a/c.json",
            "a/parts.bin",
            "ab/other.bin",
            "e/empty"
        ]
    );
    assert!(s.list("nothing").unwrap().is_empty());

    // Deletion; deleting an absent object is no error.
    s.delete("a/b.bin").unwrap();
    assert!(!s.read("a/b.bin", &mut buf).unwrap());
    s.delete("a/b.bin").unwrap();
    s.delete_prefix("a").unwrap();
    assert!(s.list("a").unwrap().is_empty());
    assert_eq!(s.list("").unwrap(), ["ab/other.bin", "e/empty"]);
    s.delete_prefix("nothing").unwrap();

    // Names that would leave the prefix are refused.
    assert!(s.read("../x", &mut buf).is_err());
    assert!(s.publish("/abs", b"x").is_err());

    // Another prefix of the same bucket sees none of it.
    assert!(store(&unique("other")).list("").unwrap().is_empty());

    // Debug shows no secret.
    let debug = format!("{s:?}");
    assert!(debug.contains(BUCKET), "{debug}");
    assert!(
        !debug.contains(KEY_ID) && !debug.contains(SECRET),
        "{debug}"
    );
    println!("  publish/read/ranges/write/list/delete: as the Store trait says");
}

/// Bad locations and settings: one clear error each.
fn bad_locations() {
    for (location, says) in [
        ("s3://", "bucket's name is missing"),
        ("s3:///prefix", "bucket's name is missing"),
        ("gs://bucket/prefix", "scheme must be s3://"),
        ("/tmp/cache", "starts with s3://"),
        ("s3://No_Such", "3 to 63 lowercase"),
        ("s3://bucket/a//b", "prefix"),
    ] {
        let e = S3Store::from_url(location).unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, memento::Error::Option { .. }), "{text}");
        assert!(text.contains(says), "{location}: {text}");
        assert!(text.contains("s3://bucket/prefix"), "{text}");
    }
    // A bucket that does not exist: the first operation says so.
    let s = S3Store::builder(format!("s3://no-such-bucket-{}/p", std::process::id()))
        .endpoint(endpoint())
        .allow_http(true)
        .credentials(KEY_ID, SECRET)
        .build()
        .unwrap();
    let mut buf = Vec::new();
    let e = s.read("a.bin", &mut buf).unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, memento::Error::Remote { .. }), "{text}");
    assert!(text.contains("check the bucket's name"), "{text}");
    assert!(!text.contains(SECRET) && !text.contains(KEY_ID), "{text}");
    println!("  missing bucket: {text}");
}

/// Locks are leases: exclusive, bounded waits, released on drop, and
/// usable from inside a tokio runtime.
fn leases() {
    let prefix = unique("leases");
    let a = store(&prefix);
    let b = store(&prefix);
    let held = match a.lock("f/ab/k.lock", Some(Duration::from_secs(1))).unwrap() {
        LockOutcome::Held(lock) => lock,
        other => panic!("{other:?}"),
    };
    let mut buf = Vec::new();
    assert!(a.read("f/ab/k.lock", &mut buf).unwrap(), "the lease object");
    let body: serde_json::Value = serde_json::from_slice(&buf).unwrap();
    assert!(body["nonce"].as_str().unwrap().len() == 32, "{body}");
    assert!(body["holder"]
        .as_str()
        .unwrap()
        .ends_with(&format!(":{}", std::process::id())));
    let t = Instant::now();
    assert!(matches!(
        b.lock("f/ab/k.lock", Some(Duration::from_millis(300)))
            .unwrap(),
        LockOutcome::TimedOut
    ));
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    // Another name is free.
    assert!(matches!(
        b.lock("f/ab/j.lock", Some(Duration::ZERO)).unwrap(),
        LockOutcome::Held(_)
    ));
    // Held past its time to live (2 s): renewed, so still exclusive.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(matches!(
        b.lock("f/ab/k.lock", Some(Duration::from_millis(200)))
            .unwrap(),
        LockOutcome::TimedOut
    ));
    drop(held);
    assert!(
        !a.read("f/ab/k.lock", &mut buf).unwrap(),
        "released: deleted"
    );
    let t = Instant::now();
    let again = b.lock("f/ab/k.lock", Some(Duration::from_secs(1))).unwrap();
    assert!(matches!(again, LockOutcome::Held(_)));
    let took = t.elapsed();
    drop(again);

    // Inside a caller's tokio runtime: no panic (no block_on of its own),
    // and a store dropped there shuts its runtime down quietly.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let s = store(&prefix);
        assert!(s.publish("rt/x.bin", b"in a runtime").unwrap());
        let mut buf = Vec::new();
        assert!(s.read("rt/x.bin", &mut buf).unwrap());
        assert_eq!(buf, b"in a runtime");
        let lock = s.lock("rt/x.lock", None).unwrap();
        assert!(matches!(lock, LockOutcome::Held(_)));
        drop(lock);
        drop(s);
    });
    println!("  timed out after {waited:?}; renewed past its ttl; free again in {took:?}");
}

/// What the leases rely on, asked of the server through object_store:
/// create-only puts refuse an existing object, conditional puts refuse a
/// stale etag; and of four stores that find one expired lease at once,
/// exactly one takes it over.
fn conditional_writes() {
    use object_store::aws::AmazonS3Builder;
    use object_store::{ObjectStore, PutMode, PutOptions, PutPayload, UpdateVersion};
    let prefix = unique("conditions");
    let s3 = AmazonS3Builder::new()
        .with_endpoint(endpoint())
        .with_allow_http(true)
        .with_bucket_name(BUCKET)
        .with_region("us-east-1")
        .with_access_key_id(KEY_ID)
        .with_secret_access_key(SECRET)
        .build()
        .unwrap();
    let path = object_store::path::Path::from(format!("{prefix}/x"));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let put = |body: &'static [u8], mode: PutMode| {
            s3.put_opts(&path, PutPayload::from_static(body), PutOptions::from(mode))
        };
        let first = put(b"one", PutMode::Create).await.unwrap();
        let again = put(b"two", PutMode::Create).await.unwrap_err();
        assert!(
            matches!(again, object_store::Error::AlreadyExists { .. }),
            "{again}"
        );
        let version = |r: &object_store::PutResult| UpdateVersion {
            e_tag: r.e_tag.clone(),
            version: r.version.clone(),
        };
        let second = put(b"three", PutMode::Update(version(&first)))
            .await
            .unwrap();
        let stale = put(b"four", PutMode::Update(version(&first)))
            .await
            .unwrap_err();
        assert!(
            matches!(stale, object_store::Error::Precondition { .. }),
            "{stale}"
        );
        put(b"five", PutMode::Update(version(&second)))
            .await
            .unwrap();
    });

    let mut taken = Vec::new();
    for round in 0..5 {
        let name = format!("k{round}.lock");
        let expired =
            format!(r#"{{"holder":"gone:1","nonce":"{round}","expires_unix_ms":1,"renewal":0}}"#);
        store(&prefix).write(&name, expired.as_bytes()).unwrap();
        let stores: Vec<_> = (0..4).map(|_| store(&prefix)).collect();
        let barrier = std::sync::Barrier::new(4);
        let outcomes: Vec<bool> = std::thread::scope(|scope| {
            let handles: Vec<_> = stores
                .iter()
                .map(|s| {
                    let (barrier, name) = (&barrier, &name);
                    scope.spawn(move || {
                        barrier.wait();
                        match s.lock(name, Some(Duration::ZERO)).unwrap() {
                            LockOutcome::Held(lock) => {
                                // Hold it until all have tried.
                                std::thread::sleep(Duration::from_millis(500));
                                drop(lock);
                                true
                            }
                            LockOutcome::TimedOut => false,
                            other => panic!("{other:?}"),
                        }
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        taken.push(outcomes.iter().filter(|t| **t).count());
    }
    println!(
        "  create-only and if-match honoured; expired lease taken over by {taken:?} of 4 per round"
    );
    assert!(taken.iter().all(|n| *n == 1), "{taken:?}");
}

/// A `Memory` over the bucket: computes once, hits after, and a second
/// process with its own store hits without computing.
fn memory_over_s3() {
    let prefix = unique("memory");
    let work = fresh_dir("memory");
    let counter = work.join("counter.txt");
    let computed = AtomicUsize::new(0);
    let memory = Memory::with_store(store(&prefix));
    let compute = || {
        computed.fetch_add(1, Ordering::SeqCst);
        (0..5).map(|i| format!("word {i}")).collect::<Vec<_>>()
    };
    let first: Vec<String> = memory.call(words::function(), &(&5u64,), compute);
    let second: Vec<String> = memory.call(words::function(), &(&5u64,), compute);
    assert_eq!(first, second);
    assert_eq!(computed.load(Ordering::SeqCst), 1, "the second call hits");
    // A new Memory (empty in-memory layer) over a new store: from the bucket.
    let again = Memory::with_store(store(&prefix));
    let third: Vec<String> = again.call(words::function(), &(&5u64,), || unreachable!("stored"));
    assert_eq!(third, first);
    let names = store(&prefix).list("").unwrap();
    assert!(
        names.iter().any(|n| n.ends_with(".bin"))
            && names.iter().any(|n| n.ends_with("function.json")),
        "{names:?}"
    );
    assert!(
        !names.iter().any(|n| n.ends_with(".lock")),
        "leases left: {names:?}"
    );

    // Another process: computes once, its second call hits; a third
    // process hits at once.
    let out = finish(spawn("triple:7", endpoint(), &prefix, &counter, 0, 2000));
    assert_eq!(out.stdout, "21\n21");
    assert_eq!(count(&counter, "computed"), 1);
    let out = finish(spawn("triple:7", endpoint(), &prefix, &counter, 0, 2000));
    assert_eq!(out.stdout, "21\n21");
    assert_eq!(count(&counter, "computed"), 1, "the second process hits");
    // And this process finds what the child stored.
    let v: u64 = memory.call(triple::function(), &(&7u64,), || {
        unreachable!("stored by a child")
    });
    assert_eq!(v, 21);
    println!("  computed once; hits in this process, a new Memory and another process");
}

/// 8 processes race on one key whose computation takes 1 s: it runs once
/// (the lease), and all get the same value.
fn eight_processes_race() {
    let prefix = unique("race");
    let work = fresh_dir("race");
    let counter = work.join("counter.txt");
    let t = Instant::now();
    let children: Vec<_> = (0..8)
        .map(|_| spawn("slow:4", endpoint(), &prefix, &counter, 1000, 5000))
        .collect();
    let values: Vec<String> = children.into_iter().map(|c| finish(c).stdout).collect();
    let took = t.elapsed();
    assert!(values.iter().all(|v| v == "40"), "{values:?}");
    let (starts, dones) = (count(&counter, "start"), count(&counter, "done"));
    println!(
        "  8 processes: {} value(s) \"40\", {starts} computation(s) started, {dones} finished, in {took:?}",
        values.len()
    );
    assert_eq!(starts, 1, "computed once");
    assert_eq!(dones, 1, "computed once");
    assert!(!store(&prefix)
        .list("")
        .unwrap()
        .iter()
        .any(|n| n.ends_with(".lock")));
}

/// The holder of a key's lease is SIGKILLed mid-computation: a waiting
/// process takes the lease over once it expires, and completes.
fn lease_holder_killed() {
    let prefix = unique("killed");
    let work = fresh_dir("killed");
    let counter = work.join("counter.txt");
    let ttl_ms = 2000;
    let mut holder = spawn("slow:5", endpoint(), &prefix, &counter, 60_000, ttl_ms);
    let started = Instant::now();
    while count(&counter, "start") == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "holder never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let waiter = spawn("slow:5", endpoint(), &prefix, &counter, 100, ttl_ms);
    // Longer than the ttl: the holder renews its lease, the waiter waits.
    std::thread::sleep(Duration::from_millis(3000));
    assert_eq!(
        count(&counter, "start"),
        1,
        "the waiter waits while the holder lives"
    );
    holder.kill().unwrap(); // SIGKILL: no cleanup
    holder.wait().unwrap();
    let killed = Instant::now();
    let out = finish(waiter);
    let took = killed.elapsed();
    assert_eq!(out.stdout, "50");
    assert_eq!(count(&counter, "start"), 2);
    assert_eq!(count(&counter, "done"), 1, "only the waiter finished");
    assert!(took < Duration::from_secs(15), "{took:?}");
    let v: u64 = Memory::with_store(store(&prefix)).call(slow::function(), &(&5u64,), || {
        unreachable!("stored by the waiter")
    });
    assert_eq!(v, 50);
    println!("  holder killed; the waiter took over its lease (ttl {ttl_ms} ms) and finished {took:?} later");
}

/// Wrong credentials on a server that checks them: one clear error without
/// the secret, and the calls still return their values.
fn wrong_credentials() {
    // A second server that checks every request's credentials.
    let strict = Moto::start("strict", None, &[("INITIAL_NO_AUTH_ACTION_COUNT", "0")]).unwrap();
    let s = store_at(&strict.url, "p");
    let mut buf = Vec::new();
    let e = s.read("a.bin", &mut buf).unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, memento::Error::Remote { .. }), "{text}");
    assert!(text.contains("check the credentials"), "{text}");
    for secret in [KEY_ID, SECRET] {
        assert!(!text.contains(secret), "{text}");
        assert!(!format!("{e:?}").contains(secret), "{e:?}");
    }
    assert!(s.publish("a.bin", b"x").is_err());
    assert!(s.list("").is_err());

    let work = fresh_dir("credentials");
    let counter = work.join("counter.txt");
    let t = Instant::now();
    let out = finish(spawn("triple:4", &strict.url, "p", &counter, 0, 2000));
    let took = t.elapsed();
    assert_eq!(out.stdout, "12\n12", "values returned");
    assert_eq!(
        count(&counter, "computed"),
        2,
        "nothing stored: computed twice"
    );
    let warnings: Vec<_> = out
        .stderr
        .lines()
        .filter(|l| l.contains("warning"))
        .collect();
    assert_eq!(warnings.len(), 1, "one warning: {}", out.stderr);
    assert!(
        warnings[0].contains("check the credentials"),
        "{}",
        warnings[0]
    );
    for secret in [KEY_ID, SECRET] {
        assert!(!out.stderr.contains(secret), "{}", out.stderr);
    }
    println!("  two calls in {took:?}, one warning: {}", warnings[0]);
}

/// An entry overwritten with garbage is refused and recomputed.
fn damaged_entry() {
    let prefix = unique("damaged");
    let s = store(&prefix);
    let computed = AtomicUsize::new(0);
    let compute = || {
        computed.fetch_add(1, Ordering::SeqCst);
        33u64
    };
    let v: u64 = Memory::with_store(store(&prefix)).call(triple::function(), &(&11u64,), compute);
    assert_eq!(v, 33);
    let entry = s
        .list("")
        .unwrap()
        .into_iter()
        .find(|n| n.ends_with(".bin"))
        .expect("the entry");
    s.write(&entry, b"not an entry at all").unwrap();
    let v: u64 = Memory::with_store(store(&prefix)).call(triple::function(), &(&11u64,), compute);
    assert_eq!(v, 33);
    assert_eq!(computed.load(Ordering::SeqCst), 2, "refused and recomputed");
    // Stored whole again: a third Memory hits.
    let v: u64 = Memory::with_store(store(&prefix)).call(triple::function(), &(&11u64,), compute);
    assert_eq!(v, 33);
    assert_eq!(computed.load(Ordering::SeqCst), 2, "stored again");
    let mut buf = Vec::new();
    assert!(s.read(&entry, &mut buf).unwrap());
    assert!(buf.starts_with(b"MMTO"), "a real entry again");

    // A wrong but well-formed entry (another key's bytes) is refused too.
    let _: u64 = Memory::with_store(store(&prefix)).call(triple::function(), &(&12u64,), || 36);
    let other = s
        .list("")
        .unwrap()
        .into_iter()
        .filter(|n| n.ends_with(".bin"))
        .find(|n| *n != entry)
        .unwrap();
    let mut foreign = Vec::new();
    assert!(s.read(&other, &mut foreign).unwrap());
    s.write(&entry, &foreign).unwrap();
    let v: u64 = Memory::with_store(store(&prefix)).call(triple::function(), &(&11u64,), compute);
    assert_eq!(v, 33, "not the other key's 36");
    assert_eq!(computed.load(Ordering::SeqCst), 3);
    println!("  garbage and another key's entry: refused, recomputed, stored again");
}

/// The server stops mid-run: calls return their values (computed) in
/// bounded time; after a restart (moto keeps nothing) they store again.
fn server_outage() {
    let mut moto = Moto::start("outage", None, &[]).unwrap();
    create_bucket(&moto.url).unwrap();
    let url = moto.url.clone();
    let port = moto.port();
    let prefix = unique("outage");
    let computed = AtomicUsize::new(0);
    let call = |memory: &Memory, x: u64| -> u64 {
        memory.call(triple::function(), &(&x,), || {
            computed.fetch_add(1, Ordering::SeqCst);
            x * 3
        })
    };
    let memory = Memory::with_store(store_at(&url, &prefix));
    assert_eq!(call(&memory, 1), 3);
    assert_eq!(call(&memory, 1), 3);
    assert_eq!(computed.load(Ordering::SeqCst), 1);

    moto.stop();
    // The same Memory (its store stops asking after the first failure,
    // for outage_pause), then a new one over a new store, for a key stored
    // before the outage.
    let mut timings = Vec::new();
    for x in [2, 3, 4] {
        let t = Instant::now();
        assert_eq!(call(&memory, x), x * 3);
        timings.push(t.elapsed());
    }
    let fresh = Memory::with_store(store_at(&url, &prefix));
    let t = Instant::now();
    assert_eq!(call(&fresh, 1), 3);
    timings.push(t.elapsed());
    println!("  server down: 4 calls took {timings:?}");
    assert_eq!(
        computed.load(Ordering::SeqCst),
        5,
        "all computed while down"
    );
    for took in &timings {
        assert!(*took < Duration::from_secs(10), "{timings:?}");
    }

    // Restarted on the same port, empty: the same Memory stores again
    // once its pause is over, without a restart of this process.
    let restarted = Moto::start("outage", Some(port), &[]).unwrap();
    create_bucket(&restarted.url).unwrap();
    assert_eq!(restarted.url, url);
    let t = Instant::now();
    let mut x = 100;
    let stored = loop {
        assert_eq!(call(&memory, x), x * 3);
        let names = store_at(&url, &prefix).list("").unwrap();
        if names.iter().any(|n| n.ends_with(".bin")) {
            break x;
        }
        assert!(t.elapsed() < Duration::from_secs(15), "never stored again");
        std::thread::sleep(Duration::from_millis(250));
        x += 1;
    };
    let recovered = t.elapsed();
    let before = computed.load(Ordering::SeqCst);
    let other = Memory::with_store(store_at(&url, &prefix));
    assert_eq!(call(&other, stored), stored * 3);
    assert_eq!(
        computed.load(Ordering::SeqCst),
        before,
        "stored after the restart"
    );
    assert_eq!(call(&other, 2), 6);
    assert_eq!(
        computed.load(Ordering::SeqCst),
        before + 1,
        "moto forgot: computed again"
    );
    assert_eq!(call(&Memory::with_store(store_at(&url, &prefix)), 2), 6);
    assert_eq!(
        computed.load(Ordering::SeqCst),
        before + 1,
        "and stored again"
    );
    println!(
        "  restarted: stores again {recovered:?} after the restart ({} call(s)); later calls hit",
        stored - 99
    );
}

/// A server that accepts connections and never answers: one operation
/// fails within the bounds (about 4 s), not object_store's 180 s.
fn hanging_server_bounded() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let held = std::thread::spawn(move || {
        let mut open = Vec::new();
        for conn in listener.incoming().take(16) {
            open.push(conn); // accepted, never answered
        }
        std::thread::sleep(Duration::from_secs(30));
    });
    let s = store_at(&url, "p");
    let mut buf = Vec::new();
    let t = Instant::now();
    let e = s.read("a.bin", &mut buf).unwrap_err();
    let took = t.elapsed();
    let text = e.to_string();
    assert!(took < Duration::from_secs(8), "{took:?}");
    assert!(text.contains("check the endpoint"), "{text}");
    println!("  a GET on a server that never answers failed after {took:?}: {text}");
    // A Memory call pays one timeout; the next ones, none, while the
    // store pauses (outage_pause).
    let memory = Memory::with_store(store_at(&url, "p"));
    let mut timings = Vec::new();
    for x in [9u64, 10, 11] {
        let t = Instant::now();
        let v: u64 = memory.call(triple::function(), &(&x,), || x * 3);
        assert_eq!(v, x * 3);
        timings.push(t.elapsed());
    }
    println!("  Memory calls on it took {timings:?}");
    assert!(timings[0] < Duration::from_secs(8), "{timings:?}");
    assert!(
        timings[1] < Duration::from_secs(1) && timings[2] < Duration::from_secs(1),
        "{timings:?}"
    );
    drop(held);
}

/// `MEMENTO_DIR=s3://bucket/prefix`, as a user sets it: two processes with
/// near caches of their own (`XDG_CACHE_HOME`); the second hits without
/// computing, its near cache gets the entry, and a third process with that
/// near cache hits while the bucket is out of reach.
fn located_with_near_caches() {
    let prefix = unique("located");
    let work = fresh_dir("located");
    let counter = work.join("counter.txt");
    let run = |xdg: &str, url: &str| {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("AWS_") {
                cmd.env_remove(key);
            }
        }
        let out = cmd
            .env(ROLE, "located:5")
            .env(COUNTER, &counter)
            .env("MEMENTO_DIR", format!("s3://{BUCKET}/{prefix}"))
            .env("XDG_CACHE_HOME", work.join(xdg))
            .env("AWS_ENDPOINT_URL", url)
            .env("AWS_ALLOW_HTTP", "true")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", KEY_ID)
            .env("AWS_SECRET_ACCESS_KEY", SECRET)
            .env_remove("MEMENTO_LOG")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "child failed: {stderr}");
        (
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
            stderr,
        )
    };
    let near_entries = |xdg: &str| -> usize {
        let dir = work.join(xdg).join("memento").join(BUCKET).join(&prefix);
        walk(&dir).iter().filter(|n| n.ends_with(".bin")).count()
    };
    let (out, _) = run("a", endpoint());
    assert_eq!(out, "15\n15");
    assert_eq!(count(&counter, "computed"), 1);
    assert_eq!(near_entries("a"), 1, "a miss is written near too");
    assert!(
        store(&prefix)
            .list("")
            .unwrap()
            .iter()
            .any(|n| n.ends_with(".bin")),
        "and to the bucket"
    );
    let (out, _) = run("b", endpoint());
    assert_eq!(out, "15\n15");
    assert_eq!(count(&counter, "computed"), 1, "the second machine hits");
    assert_eq!(near_entries("b"), 1, "and keeps a near copy");
    // The bucket out of reach (nothing listens there): b's near copy serves.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let (out, stderr) = run("b", &dead);
    assert_eq!(out, "15\n15");
    assert_eq!(
        count(&counter, "computed"),
        1,
        "hit from the near cache: {stderr}"
    );
    println!("  second process hit through its own near cache; near hits with the bucket down");
}

/// A signed cache over a bucket refuses an unsigned object another writer
/// put there, recomputes, and never copies the foreign object down.
fn signed_refuses_foreign() {
    let prefix = unique("signed");
    let near = fresh_dir("signed-near");
    let _: u64 = Memory::with_store(store(&prefix)).call(triple::function(), &(&4u64,), || 666);
    let s = store(&prefix);
    let entry = s
        .list("")
        .unwrap()
        .into_iter()
        .find(|n| n.ends_with(".bin"))
        .unwrap();
    let mut foreign = Vec::new();
    assert!(s.read(&entry, &mut foreign).unwrap());
    let signed = Memory::with_store(NearCache::new(&near, store(&prefix))).signing_key("k");
    let mut runs = 0;
    let v: u64 = signed.call(triple::function(), &(&4u64,), || {
        runs += 1;
        12
    });
    assert_eq!((v, runs), (12, 1), "refused and recomputed");
    let near_copy = fs::read(near.join(&entry)).unwrap();
    assert_ne!(near_copy, foreign, "the foreign object was not kept near");
    let mut stored = Vec::new();
    assert!(s.read(&entry, &mut stored).unwrap());
    assert_eq!(stored, near_copy, "the bucket holds the signed one now");
    println!("  unsigned object refused by a signed cache, recomputed, replaced");
}

/// Least recently used on a bucket means least recently *read*: a result
/// written first and hit afterwards outlives one written later and never
/// read. The hits reach the store (`in_memory_limit(0)`) and are noted in
/// its memory; the eviction runs over a fresh store, which knows only what
/// reached the bucket. Twice: the notes written when the last `Memory`
/// goes (the store's drop); then hits served by a near cache's folder,
/// written by the background flush while the `Memory` lives on.
fn lru_is_last_access() {
    // Before access records, both rounds removed the entry read since; the
    // second did too before near hits touched the far store.
    let prefix = unique("lru");
    let memory = Memory::with_store(store(&prefix)).in_memory_limit(0);
    let (old, new) = write_two_hit_first(&memory, &prefix);
    drop(memory);
    let left = evict_to_one(&prefix, &old, &new, "notes written on drop");
    assert_eq!(left, [old], "the entry read since it was written stays");

    let prefix = unique("lru-near");
    let flush = Duration::from_millis(300);
    let far = S3Store::builder(format!("s3://{BUCKET}/{prefix}"))
        .endpoint(endpoint())
        .allow_http(true)
        .region("us-east-1")
        .credentials(KEY_ID, SECRET)
        .access_flush(flush)
        .build()
        .unwrap();
    assert_eq!(far.access_flush(), flush);
    let near = fresh_dir("lru-near");
    let memory = Memory::with_store(NearCache::new(&near, far)).in_memory_limit(0);
    let (old, new) = write_two_hit_first(&memory, &prefix);
    // The hits came from the near folder (no request), and the bucket
    // learns of them with the next flush.
    std::thread::sleep(flush * 3);
    let left = evict_to_one(
        &prefix,
        &old,
        &new,
        "near-cache hits, background flush every 300 ms",
    );
    assert_eq!(left, [old], "the entry read since it was written stays");
    drop(memory);
}

/// A process that hits and exits without dropping its `Memory` (as with
/// a global one) still writes its access: at exit.
fn accesses_written_at_exit() {
    use std::time::{SystemTime, UNIX_EPOCH};
    let prefix = unique("exit");
    let counter = fresh_dir("exit").join("counter.txt");
    let _: u64 = Memory::with_store(store(&prefix)).call(triple::function(), &(&8u64,), || 24);
    let entry = entry_names(&prefix).remove(0);
    std::thread::sleep(Duration::from_millis(1100));
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let before = UNIX_EPOCH + Duration::from_millis(ms as u64);
    let out = finish(spawn("hit_exit:8", endpoint(), &prefix, &counter, 0, 2000));
    assert_eq!(out.stdout, "24");
    assert_eq!(count(&counter, "computed"), 0, "a hit");
    assert_eq!(raw_records(&prefix).len(), 1, "one record, from the exit");
    let listed = store(&prefix).list_meta("").unwrap();
    let seen = listed.iter().find(|m| m.name == entry).unwrap().modified;
    assert!(seen >= before, "{seen:?} < {before:?}");
    println!(
        "  the child's hit recorded at its exit: last access {:?} after the parent's clock read",
        seen.duration_since(before).unwrap()
    );
}

/// The names of the entries stored under `prefix`.
fn entry_names(prefix: &str) -> Vec<String> {
    store(prefix)
        .list("")
        .unwrap()
        .into_iter()
        .filter(|n| n.ends_with(".bin"))
        .collect()
}

/// Through `memory`: stores `triple(1)`, a second later `triple(2)`, then
/// hits `triple(1)` three times. Their entries' names, in that order.
fn write_two_hit_first(memory: &Memory, prefix: &str) -> (String, String) {
    let _: u64 = memory.call(triple::function(), &(&1u64,), || 3);
    let old = entry_names(prefix);
    assert_eq!(old.len(), 1, "{old:?}");
    // S3 keeps LastModified to the second (moto too).
    std::thread::sleep(Duration::from_millis(1100));
    let _: u64 = memory.call(triple::function(), &(&2u64,), || 6);
    let new: Vec<String> = entry_names(prefix)
        .into_iter()
        .filter(|n| *n != old[0])
        .collect();
    assert_eq!(new.len(), 1, "{new:?}");
    for _ in 0..3 {
        let v: u64 = memory.call(triple::function(), &(&1u64,), || unreachable!("stored"));
        assert_eq!(v, 3);
    }
    (old[0].clone(), new[0].clone())
}

/// `items_limit(1).reduce_size()` over a fresh store at `prefix`: one
/// removed; what is left.
fn evict_to_one(prefix: &str, old: &str, new: &str, how: &str) -> Vec<String> {
    let evicted = Memory::with_store(store(prefix)).items_limit(1);
    let reduction = evicted.reduce_size().unwrap();
    let left = entry_names(prefix);
    let kept = if left == [old] {
        "the one written first and read since"
    } else if left == [new] {
        "the one written last and never read"
    } else {
        "?"
    };
    println!(
        "  {how}: items_limit(1) removed {}, kept {kept}",
        reduction.removed
    );
    assert_eq!(reduction.removed, 1);
    left
}

/// The access records themselves: only reads and touches of entries are
/// noted, a store lists its own notes before they are written, a listing
/// never shows `.access/`, and past `ACCESS_COMPACT_ABOVE` records a
/// listing merges them into one, keeping the times of the names still
/// there.
fn access_records() {
    use memento::store::s3::ACCESS_COMPACT_ABOVE;
    use std::time::{SystemTime, UNIX_EPOCH};
    let prefix = unique("records");
    let s = store(&prefix);
    let (a, b) = (
        format!("f/ab/{:062x}.bin", 1),
        format!("f/ab/{:062x}.bin", 2),
    );
    assert!(s.publish(&a, b"a").unwrap() && s.publish(&b, b"b").unwrap());
    s.write("f/function.json", b"{}").unwrap();
    let modified = |s: &S3Store, name: &str| {
        s.list_meta("")
            .unwrap()
            .into_iter()
            .find(|m| m.name == name)
            .unwrap()
            .modified
    };
    // Milliseconds, as the records keep them.
    let now_ms = || {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis();
        UNIX_EPOCH + Duration::from_millis(ms as u64)
    };
    std::thread::sleep(Duration::from_millis(1100));
    let written = modified(&s, &a);

    // Management reads and non-entries: nothing noted.
    let mut buf = Vec::new();
    assert!(s.peek(&a, &mut buf).unwrap());
    assert!(s.read_range(&a, 0..1, &mut buf).unwrap());
    assert!(s.read("f/function.json", &mut buf).unwrap());
    s.touch("f/function.json").unwrap();
    assert_eq!(s.flush_access().unwrap(), 0, "nothing noted");
    assert_eq!(modified(&s, &a), written);

    // A touch: this store lists it at once; the bucket learns it with the
    // flush.
    let touched = now_ms();
    s.touch(&a).unwrap();
    assert!(modified(&s, &a) >= touched);
    assert_eq!(modified(&store(&prefix), &a), written, "not flushed yet");
    assert_eq!(s.flush_access().unwrap(), 1);
    assert_eq!(s.flush_access().unwrap(), 0, "written once");
    let a_seen = modified(&store(&prefix), &a);
    assert!(a_seen >= touched, "{a_seen:?} < {touched:?}");

    // More flushes than ACCESS_COMPACT_ABOVE, each a read of b.
    let n = ACCESS_COMPACT_ABOVE + 4;
    let mut last_read = now_ms();
    for _ in 0..n {
        last_read = now_ms();
        assert!(s.read(&b, &mut buf).unwrap());
        assert_eq!(s.flush_access().unwrap(), 1);
    }
    let before = raw_records(&prefix);
    assert_eq!(before.len(), n + 1, "{before:?}");
    // A fresh store lists: no record shows, the times are the records',
    // and the records are merged into one.
    let listed = store(&prefix).list_meta("").unwrap();
    let names: Vec<&str> = listed.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, [a.as_str(), b.as_str(), "f/function.json"]);
    let after = raw_records(&prefix);
    println!(
        "  {} access records before a listing, {} after it (merged past {ACCESS_COMPACT_ABOVE})",
        before.len(),
        after.len()
    );
    assert_eq!(after.len(), 1, "{after:?}");
    assert!(!before.contains(&after[0]), "a new record");
    assert_eq!(listed[0].modified, a_seen);
    assert!(listed[1].modified >= last_read);
    let again = store(&prefix).list_meta("").unwrap();
    assert_eq!(again, listed, "the merged record keeps the times");
    let stats = Memory::with_store(store(&prefix)).stats().unwrap();
    assert_eq!(stats.entries, 2, "{stats:?}");

    // A name that is gone leaves the records at the next merge; a listing
    // of a folder keeps the names outside it.
    s.delete(&a).unwrap();
    let c = format!("g/ab/{:062x}.bin", 3);
    assert!(s.publish(&c, b"c").unwrap());
    s.touch(&c).unwrap();
    for i in 0..ACCESS_COMPACT_ABOVE {
        assert!(s.read(&b, &mut buf).unwrap());
        assert_eq!(s.flush_access().unwrap(), if i == 0 { 2 } else { 1 });
    }
    let listed = store(&prefix).list_meta("f").unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    let merged = raw_records(&prefix);
    assert_eq!(merged.len(), 1, "{merged:?}");
    assert!(s.peek(&merged[0], &mut buf).unwrap());
    let body: serde_json::Value = serde_json::from_slice(&buf).unwrap();
    let held = body["accesses"].as_object().unwrap();
    assert!(!held.contains_key(&a), "gone: {body}");
    assert!(held.contains_key(&b) && held.contains_key(&c), "{body}");
    assert!(body["holder"]
        .as_str()
        .unwrap()
        .ends_with(&format!(":{}", std::process::id())));
}

/// The names of the access records under `prefix`, straight from the
/// bucket.
fn raw_records(prefix: &str) -> Vec<String> {
    use futures::TryStreamExt;
    use object_store::aws::AmazonS3Builder;
    use object_store::ObjectStore;
    let s3 = AmazonS3Builder::new()
        .with_endpoint(endpoint())
        .with_allow_http(true)
        .with_bucket_name(BUCKET)
        .with_region("us-east-1")
        .with_access_key_id(KEY_ID)
        .with_secret_access_key(SECRET)
        .build()
        .unwrap();
    let dir = object_store::path::Path::from(format!("{prefix}/.access"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let listed: Vec<object_store::ObjectMeta> =
        runtime.block_on(s3.list(Some(&dir)).try_collect()).unwrap();
    let mut names: Vec<String> = listed
        .into_iter()
        .map(|m| m.location.as_ref()[prefix.len() + 1..].to_string())
        .collect();
    names.sort();
    names
}

/// Latencies on loopback (medians of 21): a miss that publishes, a remote
/// hit with an empty near cache, a near-cache hit, beside the S3 store's
/// own read and publish of the same bytes.
fn latencies() {
    let prefix = unique("latency");
    let n = 21u64;
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let near_a = fresh_dir("latency-a");
    let near_b = fresh_dir("latency-b");
    let a = Memory::with_store(NearCache::new(&near_a, store(&prefix))).in_memory_limit(0);
    let b = Memory::with_store(NearCache::new(&near_b, store(&prefix))).in_memory_limit(0);
    let value = |i: u64| -> Vec<u64> { (0..128).map(|j| i * j).collect() };
    let time = |f: &dyn Fn()| {
        let t = Instant::now();
        f();
        t.elapsed()
    };
    // Warm both (a first request opens the connection).
    let _: Vec<u64> = a.call(words_len::function(), &(&u64::MAX,), || value(0));
    let _: Vec<u64> = b.call(words_len::function(), &(&u64::MAX,), || value(0));
    let mut miss = Vec::new();
    let mut remote_hit = Vec::new();
    let mut near_hit = Vec::new();
    for i in 0..n {
        miss.push(time(&|| {
            let _: Vec<u64> = a.call(words_len::function(), &(&i,), || value(i));
        }));
        remote_hit.push(time(&|| {
            let v: Vec<u64> = b.call(words_len::function(), &(&i,), || unreachable!());
            assert_eq!(v, value(i));
        }));
        near_hit.push(time(&|| {
            let v: Vec<u64> = b.call(words_len::function(), &(&i,), || unreachable!());
            assert_eq!(v, value(i));
        }));
    }
    let s = store(&prefix);
    let entry = s
        .list("")
        .unwrap()
        .into_iter()
        .find(|n| n.ends_with(".bin"))
        .unwrap();
    let mut bytes = Vec::new();
    assert!(s.read(&entry, &mut bytes).unwrap());
    let mut get = Vec::new();
    let mut put = Vec::new();
    for i in 0..n {
        get.push(time(&|| {
            let mut buf = Vec::new();
            assert!(s.read(&entry, &mut buf).unwrap());
        }));
        put.push(time(&|| {
            assert!(s.publish(&format!("raw/{i}.bin"), &bytes).unwrap());
        }));
    }
    println!(
        "  entry of {} bytes, medians of {n}: miss that publishes {:?}; remote hit, empty near \
         cache {:?}; near-cache hit {:?}; S3Store read {:?}, publish {:?}",
        bytes.len(),
        median(miss),
        median(remote_hit),
        median(near_hit),
        median(get),
        median(put)
    );
}

/// The management API the `memento` command uses, over a bucket: stats,
/// entries, verify (and remove), gc by limits, clear one function, clear.
fn management() {
    let prefix = unique("manage");
    let s = store(&prefix);
    let memory = Memory::with_store(store(&prefix));
    for i in 0..5u64 {
        let _: u64 = memory.call(triple::function(), &(&i,), || i * 3);
    }
    let _: u64 = memory.call(slow::function(), &(&1u64,), || 10);
    let stats = memory.stats().unwrap();
    assert_eq!(stats.entries, 6, "{stats:?}");
    let listed = stats
        .functions
        .iter()
        .find(|f| f.name.ends_with("triple"))
        .unwrap();
    let entries = memory.entries(listed).unwrap();
    assert_eq!(entries.len(), 5);
    assert!(entries.iter().all(|e| e.metadata.is_some()));
    let found = memory.verify(false, &|_, _| {}).unwrap();
    assert_eq!((found.checked, found.damaged.len()), (6, 0));
    s.write(&entries[0].name, b"garbage").unwrap();
    let found = memory.verify(true, &|_, _| {}).unwrap();
    assert_eq!((found.damaged.len(), found.removed), (1, 1));
    let limits = memento::Limits {
        items: Some(3),
        ..Default::default()
    };
    let done = memory.gc(&limits, &|_, _| {}).unwrap();
    assert_eq!((done.removed, done.left), (2, 3), "{done:?}");
    let removed = memory.clear_function(slow::function()).unwrap();
    assert!(removed <= 1);
    assert!(memory
        .stats()
        .unwrap()
        .functions
        .iter()
        .all(|f| !f.name.ends_with("slow")));
    memory.clear().unwrap();
    assert_eq!(memory.stats().unwrap().entries, 0);
    assert!(s.list("").unwrap().is_empty(), "{:?}", s.list("").unwrap());
    println!("  stats, entries, verify --remove, gc, clear_function, clear over the bucket");
}

/// A process whose bucket is down: calls return their values, and the
/// outage is one warning however many calls and handles meet it.
fn one_warning_per_outage() {
    let prefix = unique("down");
    let work = fresh_dir("down");
    let dead = format!("http://127.0.0.1:{}", free_port());
    let child = spawn(
        &format!("down:{dead}"),
        &dead,
        &prefix,
        &work.join("counter.txt"),
        0,
        2000,
    );
    let out = finish(child);
    let warnings: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("warning"))
        .collect();
    assert_eq!(warnings.len(), 1, "{}", out.stderr);
    assert!(
        warnings[0].contains("check the endpoint"),
        "{}",
        warnings[0]
    );
    println!(
        "  6 calls on 2 handles, server down: {}; 1 warning",
        out.stdout
    );
}

/// Every file under `dir`, as paths relative to it.
fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(listing) = fs::read_dir(&d) else {
            continue;
        };
        for e in listing.flatten() {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(rel) = path.strip_prefix(dir) {
                out.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    out
}

/// `Memory::s3` over a store built with its own settings: a near cache
/// per "machine"; a result fetched from the bucket is copied into the
/// reader's near cache once verified, and a mapped lookup then maps that
/// file (its path known, so that a damaged copy can be removed).
fn s3_memory_maps_from_the_near_cache() {
    let prefix = unique("s3-mapped");
    let (near_a, near_b) = (fresh_dir("s3-mapped-a"), fresh_dir("s3-mapped-b"));
    let a = Memory::s3(store(&prefix))
        .near_cache(&near_a)
        .in_memory_limit(0);
    assert_eq!(a.location(), format!("s3://{BUCKET}/{prefix}"));
    assert_eq!(a.near_cache_folder(), Some(near_a.as_path()));
    let f = words_len::function();
    let ramp = || memento::Mapped::from((0..100_000u64).collect::<Vec<u64>>());
    let stored: memento::Mapped<Vec<u64>> = a.call(f, &(&100_000u64,), ramp);
    assert_eq!(stored.len(), 100_000);

    // Another machine: the first lookup fetches from the bucket (in
    // memory), the second maps the copy in its near cache.
    let b = Memory::s3(store(&prefix))
        .near_cache(&near_b)
        .in_memory_limit(0);
    let fetched: memento::Mapped<Vec<u64>> = b.call(f, &(&100_000u64,), || unreachable!("stored"));
    assert!(!fetched.is_mapped());
    assert_eq!(fetched.to_vec(), (0..100_000u64).collect::<Vec<_>>());
    let mapped: memento::Mapped<Vec<u64>> = b.call(f, &(&100_000u64,), || unreachable!("stored"));
    assert!(mapped.is_mapped(), "read from b's near cache, mapped");
    let (path, _) = mapped.entry_file().expect("the near copy's path");
    assert!(path.starts_with(&near_b), "{path:?} is in b's near cache");
    mapped.verify().unwrap();
    assert_eq!(mapped.to_vec(), (0..100_000u64).collect::<Vec<_>>());
    assert_eq!(b.no_near_cache().near_cache_folder(), None);
}

/// A port nothing listens on (bound, then let go).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn main() {
    if let Ok(role) = std::env::var(ROLE) {
        child(&role);
        return;
    }
    let tests: [(&str, fn()); 20] = [
        ("store_basics", store_basics),
        ("bad_locations", bad_locations),
        ("conditional_writes", conditional_writes),
        ("leases", leases),
        ("memory_over_s3", memory_over_s3),
        ("lru_is_last_access", lru_is_last_access),
        ("access_records", access_records),
        ("accesses_written_at_exit", accesses_written_at_exit),
        ("located_with_near_caches", located_with_near_caches),
        ("signed_refuses_foreign", signed_refuses_foreign),
        ("latencies", latencies),
        ("management", management),
        ("eight_processes_race", eight_processes_race),
        ("lease_holder_killed", lease_holder_killed),
        ("wrong_credentials", wrong_credentials),
        ("damaged_entry", damaged_entry),
        ("server_outage", server_outage),
        ("one_warning_per_outage", one_warning_per_outage),
        ("hanging_server_bounded", hanging_server_bounded),
        (
            "s3_memory_maps_from_the_near_cache",
            s3_memory_maps_from_the_near_cache,
        ),
    ];
    // `cargo test --test s3 -- NAME...`: only the cases whose names hold
    // one of the words.
    let words: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let tests: Vec<(&str, fn())> = tests
        .into_iter()
        .filter(|(name, _)| words.is_empty() || words.iter().any(|w| name.contains(w.as_str())))
        .collect();
    let started = Instant::now();
    let server = Moto::start("main", None, &[]).and_then(|m| create_bucket(&m.url).map(|()| m));
    let server = match server {
        Ok(server) => server,
        Err(e) => {
            println!("s3: no S3 server: {e}");
            println!("s3: 0 passed, {} failed", tests.len());
            std::process::exit(1);
        }
    };
    println!(
        "s3: moto at {} (ready in {:?})",
        server.url,
        started.elapsed()
    );
    ENDPOINT.set(server.url.clone()).unwrap();
    let mut failed = 0;
    for &(name, test) in &tests {
        let t = Instant::now();
        match std::panic::catch_unwind(test) {
            Ok(()) => println!("test {name} ... ok ({:?})", t.elapsed()),
            Err(_) => {
                println!("test {name} ... FAILED ({:?})", t.elapsed());
                failed += 1;
            }
        }
    }
    drop(server);
    println!("s3: {} passed, {failed} failed", tests.len() - failed);
    if failed > 0 {
        std::process::exit(1);
    }
}
