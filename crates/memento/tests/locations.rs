//! Locations: folders, and `s3://` URLs that cannot be used (no bucket, or
//! no `s3` feature): one warning, calls computed, management says why.

use memento::{Function, Location, Memory};

#[test]
fn a_url_is_not_a_folder() {
    let s3 = Location::from("s3://bucket/prefix");
    assert_eq!(s3.url(), Some("s3://bucket/prefix"));
    assert_eq!(s3.path(), None);
    assert_eq!(s3.to_string(), "s3://bucket/prefix");
    let folder = Location::from(std::path::PathBuf::from("s3-results"));
    assert_eq!(folder.path(), Some(std::path::Path::new("s3-results")));
    assert_eq!(folder.url(), None);
}

#[test]
fn an_unusable_location_computes_every_call_and_says_why() {
    let cwd = std::env::current_dir().unwrap();
    // No bucket: unusable with or without the s3 feature. (Without the
    // in-memory layer, which would serve repeats within this process.)
    let memory = Memory::new("s3://").in_memory_limit(0);
    let f = Function::new("locations", "unusable");
    let mut runs = 0;
    for _ in 0..3 {
        let y: u32 = memory.call(&f, &1u32, || {
            runs += 1;
            7
        });
        assert_eq!(y, 7);
    }
    assert_eq!(runs, 3, "nothing is stored, every call computes");
    assert_eq!(memory.path(), None);
    let e = memory.stats().unwrap_err().to_string();
    assert!(e.contains("s3://"), "{e}");
    // Nothing was made in the current folder.
    assert!(!cwd.join("s3:").exists());
}
