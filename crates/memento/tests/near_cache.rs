//! A near cache in front of a far store, through `Memory`: the far store is
//! a second local folder here (the S3 tests run the same over a bucket).

use std::path::Path;

use memento::store::{LocalStore, NearCache, Store};
use memento::{Function, Memory};

fn memory(near: &Path, far: &Path) -> Memory {
    Memory::with_store(NearCache::new(near, LocalStore::new(far)))
}

/// The entry files under `dir`.
fn entries(dir: &Path) -> Vec<String> {
    let store = LocalStore::new(dir);
    store
        .list("")
        .unwrap()
        .into_iter()
        .filter(|n| n.ends_with(".bin"))
        .collect()
}

#[test]
fn a_second_machine_hits_through_its_own_near_cache() {
    let far = tempfile::tempdir().unwrap();
    let (near_a, near_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let f = Function::new("near", "square");
    let a = memory(near_a.path(), far.path());
    let y: u64 = a.call(&f, &7u64, || 49);
    assert_eq!(y, 49);
    assert_eq!(entries(far.path()).len(), 1, "published far");
    assert_eq!(entries(near_a.path()).len(), 1, "and kept near");

    let b = memory(near_b.path(), far.path());
    let y: u64 = b.call(&f, &7u64, || unreachable!("stored far"));
    assert_eq!(y, 49);
    assert_eq!(
        entries(near_b.path()),
        entries(far.path()),
        "copied down once read"
    );

    // Later hits need no far store (in a new Memory, so not from memory).
    std::fs::remove_dir_all(far.path()).unwrap();
    let b = memory(near_b.path(), far.path()).in_memory_limit(0);
    let y: u64 = b.call(&f, &7u64, || unreachable!("kept near"));
    assert_eq!(y, 49);
}

#[test]
fn a_damaged_far_object_is_refused_recomputed_and_never_copied_down() {
    let far = tempfile::tempdir().unwrap();
    let near = tempfile::tempdir().unwrap();
    let f = Function::new("near", "damaged");
    let writer = Memory::new(far.path());
    let _: u64 = writer.call(&f, &1u64, || 1);
    let name = entries(far.path()).pop().unwrap();
    let path = far.path().join(&name);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();

    let mut runs = 0;
    let y: u64 = memory(near.path(), far.path()).call(&f, &1u64, || {
        runs += 1;
        1
    });
    assert_eq!((y, runs), (1, 1), "refused and recomputed");
    let near_copy = std::fs::read(near.path().join(&name)).unwrap();
    assert_ne!(near_copy, bytes, "the damaged bytes were not kept near");
    assert_eq!(
        near_copy,
        std::fs::read(&path).unwrap(),
        "the recomputed one was"
    );
}

#[test]
fn a_signed_cache_refuses_an_unsigned_far_object_and_keeps_it_away_from_near() {
    let far = tempfile::tempdir().unwrap();
    let near = tempfile::tempdir().unwrap();
    let f = Function::new("near", "signed");
    // Another writer, without the key.
    let _: u64 = Memory::new(far.path()).call(&f, &1u64, || 666);
    let name = entries(far.path()).pop().unwrap();

    let signed = memory(near.path(), far.path()).signing_key("secret");
    let store = NearCache::new(near.path(), LocalStore::new(far.path()));
    let mut buf = Vec::new();
    assert!(
        store.read(&name, &mut buf).unwrap(),
        "the foreign object is there"
    );
    let y: u64 = signed.call(&f, &1u64, || 1);
    assert_eq!(y, 1, "refused and recomputed");
    let near_copy = std::fs::read(near.path().join(&name)).unwrap();
    assert_ne!(near_copy, buf, "the unsigned object was never kept near");
}

mod handle {
    use super::*;
    use std::sync::LazyLock;

    static DIRS: LazyLock<(tempfile::TempDir, tempfile::TempDir)> =
        LazyLock::new(|| (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()));
    static NEAR: LazyLock<Memory> =
        LazyLock::new(|| memory(DIRS.0.path(), DIRS.1.path()).in_memory_limit(0));

    #[memento::cache(memory = NEAR)]
    fn cube(x: u64) -> u64 {
        x * x * x
    }

    /// A handle's `get` verifies what it reads from the far store, and then
    /// the near cache keeps it, as a call's read does.
    #[test]
    fn a_handle_read_from_the_far_store_is_copied_down() {
        let shelved = cube::call_and_shelve(3);
        let name = entries(DIRS.0.path()).pop().expect("kept near when stored");
        std::fs::remove_file(DIRS.0.path().join(&name)).unwrap();
        assert_eq!(shelved.get().unwrap(), 27);
        assert!(
            DIRS.0.path().join(&name).exists(),
            "copied down after the handle's verified read"
        );
    }
}
