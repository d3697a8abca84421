//! 100,000 entries in one function: hits stay right and gc to a byte limit
//! completes and holds the limit. (The benchmark `benches/scale.rs` measures
//! the times, up to 1,000,000 entries.)

mod common;

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use memento::{Function, Memory};

const N: u64 = 100_000;

#[test]
fn one_hundred_thousand_entries() {
    let dir = common::fresh_dir("scale");
    let memory = Memory::new(&dir).in_memory_limit(0);
    let f = Function::new("scale", "f");
    // The first result through a call; the others written straight in the
    // same layout (a call per entry would take minutes in a debug build).
    let _: u64 = memory.call(&f, &(0u64,), || 0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let t = Instant::now();
    for i in 1..N {
        let key = memory.key_of::<u64, _>(&f, &(i,)).unwrap();
        let hex = key.to_hex();
        let shard = dir.join(f.folder()).join(&hex[..2]);
        std::fs::create_dir_all(&shard).unwrap();
        let payload = postcard::to_allocvec(&(i * 2)).unwrap();
        // Older entries look older: the oldest go first.
        let entry_bytes = memento::codec::seal(&key, &payload, now - (N - i), None);
        std::fs::write(shard.join(format!("{}.bin", &hex[2..])), entry_bytes).unwrap();
    }
    let filled = t.elapsed();

    // Hits on keys all over the range read the right values.
    for i in (0..N).step_by(997) {
        let v: u64 = memory.call(&f, &(i,), || unreachable!("stored: {i}"));
        assert_eq!(v, i * 2);
    }

    // Entries written around the library: its eviction index is built once,
    // from a listing. Then gc to 90% and to 60% of the bytes (the index's
    // own bytes included).
    let t = Instant::now();
    let none = memory.clone().items_limit(u64::MAX).reduce_size().unwrap();
    let build = t.elapsed();
    assert_eq!(none.removed, 0);
    let bytes = memory.stats().unwrap().bytes;
    let t = Instant::now();
    let first = memory
        .clone()
        .bytes_limit(bytes * 9 / 10)
        .reduce_size()
        .unwrap();
    let first_pass = t.elapsed();
    let t = Instant::now();
    let second = memory
        .clone()
        .bytes_limit(bytes * 6 / 10)
        .reduce_size()
        .unwrap();
    let second_pass = t.elapsed();
    let after = memory.stats().unwrap();
    assert!(
        after.bytes <= bytes * 6 / 10,
        "{} > {}",
        after.bytes,
        bytes * 6 / 10
    );
    assert!(
        first.removed > 0 && second.removed > 0,
        "{first:?} {second:?} {bytes}"
    );
    assert_eq!(after.entries, N - first.removed - second.removed);
    // What is left still hits, right.
    let mut hits = 0;
    for i in (0..N).step_by(101) {
        if memory.contains::<u64, _>(&f, &(i,)) {
            let v: u64 = memory.call(&f, &(i,), || unreachable!());
            assert_eq!(v, i * 2);
            hits += 1;
        }
    }
    assert!(hits > 0);
    println!(
        "{N} entries written in {filled:.2?}; index built in {build:.2?}; gc to 90% in \
         {first_pass:.2?} ({} removed), then to 60% in {second_pass:.2?} ({} removed); {} left",
        first.removed, second.removed, after.entries
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
