//! Every `Memory` over one location in one process behaves as one cache:
//! one computation per key, one in-memory layer that a clear empties, hit
//! counts that go to the location they were counted in, and handles that
//! read with what their `Memory` knows (its store, its signing key).

mod common;

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::sync::{mpsc, Arc, LazyLock};
use std::time::Duration;

use memento::{Function, Memory};

/// Two threads call one key through two `Memory` values over one location:
/// `first` starts computing, then `second` calls; one computation only.
fn one_computation(first: Memory, second: Memory) {
    let f = Arc::new(Function::new("one_location", "slow"));
    let runs = Arc::new(AtomicU32::new(0));
    let (started_tx, started_rx) = mpsc::channel();
    let leader = {
        let (f, runs) = (f.clone(), runs.clone());
        std::thread::spawn(move || {
            first.call(&f, &7u32, || {
                runs.fetch_add(1, SeqCst);
                started_tx.send(()).unwrap();
                std::thread::sleep(Duration::from_millis(300));
                49u32
            })
        })
    };
    started_rx.recv().unwrap();
    let follower = {
        let (f, runs) = (f.clone(), runs.clone());
        std::thread::spawn(move || {
            second.call(&f, &7u32, || {
                runs.fetch_add(1, SeqCst);
                49u32
            })
        })
    };
    assert_eq!(leader.join().unwrap(), 49);
    assert_eq!(follower.join().unwrap(), 49);
    assert_eq!(runs.load(SeqCst), 1, "one computation for one key");
}

#[test]
fn a_clone_built_further_computes_once() {
    let memory = Memory::new(common::fresh_dir("once-clone"));
    let other = memory.clone().lock_timeout(Duration::from_secs(60));
    one_computation(memory, other);
}

#[test]
fn a_second_memory_over_the_same_folder_computes_once() {
    let dir = common::fresh_dir("once-second");
    one_computation(
        Memory::new(&dir),
        Memory::new(&dir).in_memory_limit(1 << 20),
    );
}

static SIGNED: LazyLock<Memory> =
    LazyLock::new(|| Memory::new(common::fresh_dir("signed-handle")).signing_key("a secret"));

#[memento::cache(memory = SIGNED)]
fn signed_square(x: u64) -> u64 {
    x * x
}

#[test]
fn a_handle_reads_with_its_memorys_signing_key() {
    let shelved = signed_square::call_and_shelve(12);
    assert_eq!(shelved.get().unwrap(), 144, "read with the Memory's key");
    assert!(shelved.metadata().is_ok());
    shelved.clear().unwrap();
    assert!(!signed_square::check_call_in_cache(12));
}

static PLAIN: LazyLock<Memory> = LazyLock::new(|| Memory::new(common::fresh_dir("cleared")));
static PLAIN_RUNS: AtomicU32 = AtomicU32::new(0);

#[memento::cache(memory = PLAIN)]
fn counted(x: u32) -> u32 {
    PLAIN_RUNS.fetch_add(1, SeqCst);
    x + 1
}

#[test]
fn a_cleared_result_is_computed_again_in_the_same_process() {
    assert_eq!(counted(1), 2);
    assert_eq!(counted(1), 2, "served from memory");
    assert_eq!(PLAIN_RUNS.load(SeqCst), 1);
    counted::call_and_shelve(1).clear().unwrap();
    assert!(!counted::check_call_in_cache(1));
    assert_eq!(counted(1), 2);
    assert_eq!(
        PLAIN_RUNS.load(SeqCst),
        2,
        "the clear reached the in-memory layer"
    );
    assert!(counted::check_call_in_cache(1), "and it is stored again");

    // A clear through another Memory value over the same folder is a clear
    // for this one too.
    let other = Memory::new(PLAIN.path().unwrap());
    other.clear().unwrap();
    assert_eq!(counted(1), 2);
    assert_eq!(
        PLAIN_RUNS.load(SeqCst),
        3,
        "cleared everywhere in the process"
    );
}

#[test]
fn a_folder_deleted_under_a_writer_gets_its_record_again() {
    let dir = common::fresh_dir("deleted");
    let memory = Memory::new(&dir);
    let f = Function::new("one_location", "recorded");
    let _: u32 = memory.call(&f, &1u32, || 1);
    let record = dir.join(f.folder()).join("function.json");
    assert!(record.exists());
    std::fs::remove_dir_all(&dir).unwrap();
    let _: u32 = memory.call(&f, &2u32, || 2);
    assert!(
        common::outputs(&dir).len() == 1,
        "the new result is stored in the re-created folder"
    );
    assert!(
        record.exists(),
        "function.json written again, so a code change can find these results"
    );
}

#[test]
fn hits_are_counted_in_the_location_that_served_them() {
    let a = Memory::new(common::fresh_dir("hits-a"));
    let b = Memory::new(common::fresh_dir("hits-b"));
    let f = Function::new("one_location", "hits");
    let _: u32 = a.call(&f, &1u32, || 1);
    for _ in 0..3 {
        let _: u32 = a.call(&f, &1u32, || unreachable!());
    }
    let _: u32 = b.call(&f, &1u32, || 1); // a miss in b writes b's hits
    let _: u32 = a.call(&f, &2u32, || 2); // a miss in a writes a's hits
    let hits = |m: &Memory| m.stats().unwrap().functions[0].hits;
    assert_eq!(hits(&a), 3, "a's hits stay a's");
    assert_eq!(hits(&b), 0, "b served nothing");
}

/// A store of the user's that names itself like another (two in-memory
/// stores, say): each is its own cache, never served the other's results.
#[test]
fn stores_given_by_the_user_are_never_shared_by_name() {
    let named = |dir: &str| common::Hooked {
        name: Some("the same name".into()),
        ..common::Hooked::new(&common::fresh_dir(dir))
    };
    let a = Memory::with_store(named("named-a"));
    let b = Memory::with_store(named("named-b"));
    let f = Function::new("one_location", "named");
    let _: u32 = a.call(&f, &1u32, || 1);
    let from_b: u32 = b.call(&f, &1u32, || 2);
    assert_eq!(from_b, 2, "b computed its own value, not a's from memory");
}
