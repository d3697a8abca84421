//! `#[memento::cache(mmap)]`: stored results come back as read-only maps
//! of their entries, verified when first touched, and survive removal.

mod common;

use common::{fresh_dir, output_path};

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::LazyLock;

use memento::{Function, Mapped, Memory};

static MEM: LazyLock<Memory> = LazyLock::new(|| Memory::new(fresh_dir("mapped")));

static RAMPS: AtomicUsize = AtomicUsize::new(0);

#[memento::cache(memory = MEM, mmap)]
fn ramp(n: usize) -> Mapped<Vec<f64>> {
    RAMPS.fetch_add(1, SeqCst);
    (0..n).map(|i| i as f64 * 0.25).collect()
}

#[test]
fn stored_results_are_mapped() {
    let first = ramp(300_000);
    assert!(!first.is_mapped(), "a fresh result is the value computed");
    let again = ramp(300_000);
    assert!(again.is_mapped());
    assert_eq!(RAMPS.load(SeqCst), 1);
    assert_eq!(&*again, &*first);
    assert_eq!(again.shape(), vec![300_000]);
    again.verify().unwrap();
    assert_eq!(again.into_owned(), first.into_owned());
    // Small results are mapped too, and empty ones work.
    assert_eq!(ramp(3).len(), 3);
    assert!(ramp(3).is_mapped());
    assert!(ramp(0).is_empty());
    assert!(ramp(0).is_empty());
    assert_eq!(RAMPS.load(SeqCst), 3);
}

#[memento::cache(memory = MEM, mmap)]
fn checked(n: u32) -> Result<Mapped<Box<[u32]>>, String> {
    if n == 0 {
        return Err("zero".to_string());
    }
    Ok((0..n).collect())
}

#[memento::cache(memory = MEM, mmap)]
async fn later(n: u32) -> Mapped<Vec<u32>> {
    (0..n).rev().collect()
}

#[test]
fn results_and_async_functions_can_be_mapped() {
    assert!(checked(0).is_err());
    assert_eq!(&*checked(5).unwrap(), &[0, 1, 2, 3, 4]);
    assert!(checked(5).unwrap().is_mapped());
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    assert_eq!(&*rt.block_on(later(3)), &[2, 1, 0]);
    assert!(rt.block_on(later(3)).is_mapped());
}

fn entry_path(memory: &Memory, f: &Function, arg: &u64) -> std::path::PathBuf {
    output_path(
        memory,
        f,
        &memory.key_of::<Mapped<Vec<u64>>, _>(f, arg).unwrap(),
    )
}

#[test]
fn damage_is_found_when_touched_and_never_handed_out() {
    let memory = Memory::new(fresh_dir("mapped-damage"));
    let f = Function::new("mapped", "squares");
    let make = || (0..100_000u64).map(|i| i * i).collect::<Vec<u64>>();
    let computed = AtomicUsize::new(0);
    let call = || -> Mapped<Vec<u64>> {
        memory.call(&f, &1u64, || {
            computed.fetch_add(1, SeqCst);
            Mapped::from(make())
        })
    };
    let _ = call();
    let path = entry_path(&memory, &f, &1);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() - 100;
    bytes[at] ^= 0x10;
    std::fs::write(&path, &bytes).unwrap();

    // Mapped: the header is fine, so the map is returned; touching it finds
    // the damage, removes the entry and refuses the data.
    let damaged = call();
    assert!(damaged.is_mapped());
    let err = damaged.verify().unwrap_err();
    assert!(err.to_string().contains("checksum"), "{err}");
    assert!(!path.exists(), "the damaged entry was removed");
    let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| damaged[0]));
    let message = panic.unwrap_err();
    let message = message.downcast_ref::<String>().unwrap();
    assert!(message.contains("call the function again"), "{message}");
    // The next call recomputes.
    assert_eq!(computed.load(SeqCst), 1);
    assert_eq!(&*call(), &make()[..]);
    assert_eq!(computed.load(SeqCst), 2);
    assert!(call().is_mapped());
}

#[test]
fn removal_while_mapped_is_harmless() {
    let memory = Memory::new(fresh_dir("mapped-removed"));
    let f = Function::new("mapped", "ones");
    let m: Mapped<Vec<u64>> = memory.call(&f, &2u64, || vec![1u64; 1 << 20].into());
    assert!(!m.is_mapped());
    let m: Mapped<Vec<u64>> = memory.call(&f, &2u64, || unreachable!("stored"));
    assert!(m.is_mapped());
    memory.clear().unwrap();
    assert!(!entry_path(&memory, &f, &2).exists());
    // The pages stay readable while mapped.
    assert_eq!(m.iter().sum::<u64>(), 1 << 20);
    drop(m);
}

#[test]
fn signed_maps_check_their_signature() {
    let dir = fresh_dir("mapped-signed");
    // Signed entries are mapped only when asked (see
    // `a_signed_mapped_result_never_changes_after_its_check`).
    let alpha = Memory::new(&dir).signing_key("alpha").map_signed(true);
    let f = Function::new("mapped", "signed");
    let _: Mapped<Vec<u64>> = alpha.call(&f, &3u64, || vec![7u64; 1000].into());
    let m: Mapped<Vec<u64>> = alpha.call(&f, &3u64, || unreachable!("stored"));
    assert!(m.is_mapped());
    m.verify().unwrap();
    // Another key: the header says signed, the signature does not match.
    let beta = Memory::new(&dir).signing_key("beta").map_signed(true);
    let m: Mapped<Vec<u64>> = beta.call(&f, &3u64, || vec![7u64; 1000].into());
    if m.is_mapped() {
        assert!(m.verify().is_err(), "a foreign signature is refused");
    }
    // No key: a signed entry is refused before mapping.
    let none = Memory::new(&dir);
    let mut computed = false;
    let _: Mapped<Vec<u64>> = none.call(&f, &3u64, || {
        computed = true;
        vec![7u64; 1000].into()
    });
    assert!(computed);
}

#[cfg(feature = "ndarray")]
#[test]
fn arrays_are_mapped_as_views() {
    use ndarray::{Array2, ShapeBuilder};

    let memory = Memory::new(fresh_dir("mapped-arrays"));
    let f = Function::new("mapped", "grid");
    // A Fortran-order result: stored row-major, viewed equal.
    let make = || Array2::from_shape_fn((300, 200).f(), |(i, j)| (i * 1000 + j) as f32);
    let fresh: Mapped<Array2<f32>> = memory.call(&f, &(), || make().into());
    let stored: Mapped<Array2<f32>> = memory.call(&f, &(), || unreachable!("stored"));
    assert!(stored.is_mapped());
    assert_eq!(stored.view(), make());
    assert_eq!(fresh.view(), make());
    assert_eq!(stored.shape(), vec![300, 200]);
    // A mapped array as an argument keys like its owned copy.
    let a = memento::Key::of(memento::buffer::BufferKey::of(&stored)).unwrap();
    let b = memento::Key::of(memento::buffer::BufferKey::of(&make())).unwrap();
    assert_eq!(a, b);
}

/// The first `n` squares, stored as a `Mapped` result by `memory`.
fn squares(memory: &Memory, f: &Function, n: u64) -> Mapped<Vec<u64>> {
    memory.call(f, &n, || (0..n).map(|i| i * i).collect::<Vec<u64>>().into())
}

/// Overwrites bytes in the middle of the file in place, as another writer
/// sharing the folder might (memento never does).
fn rewrite_in_place(path: &std::path::Path) {
    use std::io::{Seek, SeekFrom, Write};
    let len = std::fs::metadata(path).unwrap().len();
    let mut file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.seek(SeekFrom::Start(len / 2)).unwrap();
    file.write_all(&[0xAB; 64]).unwrap();
    file.sync_all().unwrap();
}

#[test]
fn a_signed_mapped_result_never_changes_after_its_check() {
    let dir = fresh_dir("mapped-signed-rewrite");
    let memory = Memory::new(&dir).signing_key("alpha");
    let f = Function::new("mapped", "squares_signed");
    let expected: Vec<u64> = (0..100_000u64).map(|i| i * i).collect();
    let _ = squares(&memory, &f, 100_000);
    let stored = squares(&memory, &f, 100_000);
    assert_eq!(&*stored, &expected[..], "checked and read");
    rewrite_in_place(&entry_path(&memory, &f, &100_000));
    assert_eq!(&*stored, &expected[..], "unchanged by the rewrite");
    stored.verify().unwrap();
    assert!(
        !stored.is_mapped(),
        "with a signing key a stored result is read into memory"
    );
    // The rewritten entry is refused, and recomputed, by the next call.
    assert_eq!(&*squares(&memory, &f, 100_000), &expected[..]);
}

#[test]
fn signed_maps_are_an_opt_in() {
    let dir = fresh_dir("mapped-signed-opt-in");
    let f = Function::new("mapped", "squares_opt_in");
    let memory = Memory::new(&dir).signing_key("alpha").map_signed(true);
    let _ = squares(&memory, &f, 1000);
    let stored = squares(&memory, &f, 1000);
    assert!(stored.is_mapped(), "map_signed(true) maps signed entries");
    stored.verify().unwrap();
    let unsigned = Memory::new(fresh_dir("mapped-unsigned-maps"));
    let _ = squares(&unsigned, &f, 1000);
    assert!(squares(&unsigned, &f, 1000).is_mapped(), "unsigned: maps");
}

/// What `Mapped` does not survive: another process truncating the entry
/// under an unsigned map. Touching the lost pages raises SIGBUS, which ends
/// the process, as it would for numpy's `memmap` or joblib's `mmap_mode`.
/// With a signing key the result is in memory and the truncation is
/// harmless. Each case runs in a child process (this test binary again).
#[cfg(target_os = "linux")]
#[test]
fn truncation_under_a_map() {
    use std::os::unix::process::ExitStatusExt;
    const CHILD: &str = "MEMENTO_TEST_TRUNCATE";
    if let Ok(how) = std::env::var(CHILD) {
        let dir = fresh_dir(&format!("mapped-truncated-{how}"));
        let mut memory = Memory::new(&dir);
        if how == "signed" {
            memory = memory.signing_key("alpha");
        }
        let f = Function::new("mapped", "squares_truncated");
        let _ = squares(&memory, &f, 1 << 20);
        let stored = squares(&memory, &f, 1 << 20);
        // Another writer empties the file.
        let path = entry_path(&memory, &f, &(1 << 20));
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(0)
            .unwrap();
        assert_eq!(stored[(1 << 20) - 1], ((1u64 << 20) - 1).pow(2));
        return;
    }
    let run = |how: &str| {
        std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "truncation_under_a_map", "--test-threads=1"])
            .env(CHILD, how)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap()
    };
    let signed = run("signed");
    assert!(signed.success(), "a signed result is in memory: {signed:?}");
    let unsigned = run("unsigned");
    assert_eq!(
        unsigned.signal(),
        Some(7), // SIGBUS
        "an unsigned map of a truncated entry raises SIGBUS: {unsigned:?}"
    );
}
