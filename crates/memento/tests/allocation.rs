//! A hostile payload never makes the decoder reserve more than a small
//! multiple of its own size: measured with a counting allocator (this test
//! binary's global allocator).

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use memento::codec;

struct Largest;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Largest {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), SeqCst);
        // SAFETY: forwarded as it came.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as it came.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, SeqCst);
        // SAFETY: forwarded as it came.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Largest = Largest;

/// The largest single allocation made while decoding `payload` as `T`.
fn largest_while<T: serde::de::DeserializeOwned + 'static>(payload: &[u8]) -> usize {
    LARGEST.store(0, SeqCst);
    let _ = codec::decode::<T>(payload);
    LARGEST.load(SeqCst)
}

#[test]
fn claimed_lengths_reserve_nothing_large() {
    // A length of 2^40 in 6 bytes, then nothing: as a map, a sequence, a
    // string, and nested.
    let claim = postcard::to_allocvec(&(1u64 << 40)).unwrap();
    let mut nested = postcard::to_allocvec(&3u8).unwrap();
    nested.extend_from_slice(&claim);
    let bound = 4096;
    for (what, largest) in [
        (
            "HashMap<u64, u64>",
            largest_while::<HashMap<u64, u64>>(&claim),
        ),
        (
            "BTreeMap<String, u64>",
            largest_while::<BTreeMap<String, u64>>(&claim),
        ),
        ("Vec<String>", largest_while::<Vec<String>>(&claim)),
        ("Vec<u64>", largest_while::<Vec<u64>>(&claim)),
        ("String", largest_while::<String>(&claim)),
        (
            "Vec<HashMap<u8, u8>>",
            largest_while::<Vec<HashMap<u8, u8>>>(&nested),
        ),
        ("Vec<f64> (plain buffer)", largest_while::<Vec<f64>>(&claim)),
    ] {
        assert!(
            largest < bound,
            "{what}: an allocation of {largest} bytes for a {}-byte payload",
            claim.len()
        );
    }
}
