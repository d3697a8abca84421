//! `async fn`s: cached like any function, on any executor (tokio here).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::LazyLock;
use std::time::Duration;

use memento::Memory;

static MEM: LazyLock<Memory> = LazyLock::new(|| Memory::new(common::fresh_dir("async")));
static FETCHES: AtomicUsize = AtomicUsize::new(0);

#[memento::cache(memory = MEM)]
async fn fetch(id: u32) -> String {
    FETCHES.fetch_add(1, SeqCst);
    tokio::time::sleep(Duration::from_millis(20)).await;
    if id == 0 {
        return "zero".to_string();
    }
    format!("item {id}")
}

#[memento::cache(memory = MEM)]
async fn parse_later(text: String) -> Result<u32, std::num::ParseIntError> {
    tokio::task::yield_now().await;
    let n: u32 = text.parse()?;
    Ok(n + 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_functions_are_cached() {
    assert_eq!(fetch(1).await, "item 1");
    assert_eq!(fetch(1).await, "item 1");
    assert_eq!(fetch(0).await, "zero");
    assert_eq!(FETCHES.load(SeqCst), 2);
    // Stored on disk: a new Memory (a new process) finds it.
    let fresh = Memory::new(MEM.path().unwrap());
    let v: String = fresh.call(fetch::function(), &(&1u32,), || unreachable!());
    assert_eq!(v, "item 1");

    assert_eq!(parse_later("41".into()).await, Ok(42));
    assert!(parse_later("x".into()).await.is_err());
    assert!(parse_later::check_call_in_cache("41".into()));
    assert!(!parse_later::check_call_in_cache("x".into()));
}

static LOADS: AtomicUsize = AtomicUsize::new(0);

#[memento::cache(memory = MEM)]
async fn load(id: u32) -> Vec<u32> {
    LOADS.fetch_add(1, SeqCst);
    tokio::time::sleep(Duration::from_millis(5)).await;
    vec![id; 3]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn futures_are_send_and_handles_await() {
    let task = tokio::spawn(async { load(7).await });
    assert_eq!(task.await.unwrap(), vec![7; 3]);
    let outcome = load::call_with_outcome(7).await;
    assert!(outcome.hit);
    assert_eq!(outcome.value, vec![7; 3]);
    assert!(!load::call_with_outcome(9).await.hit);
    assert_eq!(LOADS.load(SeqCst), 2);
    assert_eq!(load::call_forced(7).await, vec![7; 3]);
    assert_eq!(LOADS.load(SeqCst), 3);
    let shelved = load::call_and_shelve(8).await;
    assert_eq!(shelved.get().unwrap(), vec![8; 3]);
}

static SHARED: AtomicUsize = AtomicUsize::new(0);

#[memento::cache(memory = MEM)]
async fn shared(x: u32) -> u32 {
    SHARED.fetch_add(1, SeqCst);
    tokio::time::sleep(Duration::from_millis(200)).await;
    x + 1
}

/// Two tasks on a one-thread executor call the same key at once: the second
/// waits for the first without blocking the only thread (a blocking wait
/// would deadlock here), and the computation runs once.
#[tokio::test(flavor = "current_thread")]
async fn waiting_does_not_block_the_executor() {
    let (a, b) = tokio::join!(shared(1), shared(1));
    assert_eq!((a, b), (2, 2));
    assert_eq!(SHARED.load(SeqCst), 1);
}

/// `Memory::lookup_async` hashes its arguments before the first await, and
/// its future does not borrow them (edition 2024 would capture their
/// lifetime in the returned `impl Future` unless the signature says
/// otherwise): arguments dropped before the await still compile.
#[tokio::test(flavor = "current_thread")]
async fn lookup_async_future_outlives_its_arguments() {
    let f = memento::Function::new("async_fns", "outlives");
    let future = {
        let args = (String::from("dropped before the await"),);
        MEM.lookup_async::<u32, _>(&f, &args)
    };
    match future.await {
        memento::Lookup::Miss(pending) => assert_eq!(pending.store(7), 7),
        memento::Lookup::Hit(_) => panic!("a fresh function hit"),
    }
    let args = (String::from("dropped before the await"),);
    assert!(MEM.contains::<u32, _>(&f, &args));
}

/// On one executor thread, a lookup over a remote store reads it on a
/// thread of its own: a task beside it keeps running meanwhile.
#[tokio::test(flavor = "current_thread")]
async fn remote_reads_never_block_the_executor() {
    let dir = common::fresh_dir("async-remote");
    let store = common::Hooked {
        remote_delay: Some(Duration::from_millis(150)),
        ..common::Hooked::new(&dir)
    };
    let memory = Memory::with_store(store).in_memory_limit(0);
    let f = memento::Function::new("async_fns", "remote");
    let ticks = std::sync::Arc::new(AtomicUsize::new(0));
    let ticker = {
        let ticks = ticks.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(5)).await;
                ticks.fetch_add(1, SeqCst);
            }
        })
    };
    // A miss (entry read, record read), then a hit (entry read).
    for expect_hit in [false, true] {
        let before = ticks.load(SeqCst);
        let started = std::time::Instant::now();
        let value = match memory.lookup_async::<u32, _>(&f, &1u32).await {
            memento::Lookup::Hit(v) => {
                assert!(expect_hit);
                v
            }
            memento::Lookup::Miss(pending) => {
                assert!(!expect_hit);
                pending.store_async(7).await
            }
        };
        assert_eq!(value, 7);
        let waited = started.elapsed();
        let ticked = ticks.load(SeqCst) - before;
        assert!(waited >= Duration::from_millis(150), "{waited:?}");
        assert!(
            ticked >= 10,
            "the ticker ran {ticked} times in {waited:?}: the executor was blocked"
        );
    }
    ticker.abort();
}
