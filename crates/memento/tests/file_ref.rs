//! `FileRef` arguments: keyed by what the file or folder holds, not by its
//! name or its times; digests of unchanged files remembered, in the process
//! and in the digest file; unreadable paths computed without the cache.
//!
//! The tests share the process's digests (and count reads per path), so
//! they run one at a time (`serial()`).

mod common;

use common::{capture_logs, count, fresh_dir};

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use memento::__private::file_ref as hooks;
use memento::{FileRef, Key, Memory};

static MEM: LazyLock<Memory> = LazyLock::new(|| Memory::new(fresh_dir("file-ref-cache")));

/// The digest file the tests use (never the user's).
static DIGESTS: LazyLock<PathBuf> =
    LazyLock::new(|| fresh_dir("file-ref-digests").join("this-host"));

/// One test at a time, each starting from the digest file alone (as a new
/// process would).
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    hooks::file_digests_at(Some(DIGESTS.clone()));
    hooks::count_file_reads();
    guard
}

/// A folder of its own for one test's files.
fn files(name: &str) -> PathBuf {
    let dir = fresh_dir(name);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// The sum of the file's bytes; `u64::MAX` when it cannot be read.
#[memento::cache(memory = MEM)]
fn byte_sum(data: &FileRef) -> u64 {
    fs::read(data).map_or(u64::MAX, |b| b.iter().map(|&x| u64::from(x)).sum())
}

/// The file's contents, or the reading's own error.
#[memento::cache(memory = MEM)]
fn contents(data: &FileRef) -> std::io::Result<String> {
    fs::read_to_string(data)
}

/// Every file under the folder: relative name and contents, sorted.
#[memento::cache(memory = MEM)]
fn listing(folder: &FileRef) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for entry in walkdir::WalkDir::new(folder).min_depth(1) {
        let entry = entry.unwrap();
        let name = entry.path().strip_prefix(folder.path()).unwrap();
        let name = name.to_string_lossy().into_owned();
        if entry.file_type().is_file() {
            out.push((name, fs::read_to_string(entry.path()).unwrap()));
        } else {
            out.push((name, String::new()));
        }
    }
    out.sort();
    out
}

fn hit(data: &Path) -> bool {
    byte_sum::call_with_outcome(&FileRef::new(data)).hit
}

fn set_mtime(path: &Path, time: SystemTime) {
    fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(time)
        .unwrap();
}

#[test]
fn changed_contents_are_computed_again() {
    let _s = serial();
    let path = files("edit").join("data.bin");
    fs::write(&path, "changed_contents 1").unwrap();
    let data = FileRef::new(&path);
    let first = byte_sum::call_with_outcome(&data);
    assert!(!first.hit);
    assert!(hit(&path));
    fs::write(&path, "changed_contents 2").unwrap();
    let second = byte_sum::call_with_outcome(&data);
    assert!(!second.hit, "new contents must be computed");
    assert_eq!(second.value, first.value + 1);
    assert!(hit(&path));
    // Back to the first contents: the first result, stored.
    fs::write(&path, "changed_contents 1").unwrap();
    let back = byte_sum::call_with_outcome(&data);
    assert!(back.hit);
    assert_eq!(back.value, first.value);
}

#[test]
fn a_touched_file_is_not_computed_again() {
    let _s = serial();
    let path = files("touch").join("data.bin");
    fs::write(&path, "touched only").unwrap();
    assert!(!hit(&path));
    set_mtime(&path, SystemTime::now() + Duration::from_secs(3600));
    assert!(hit(&path));
    set_mtime(
        &path,
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000),
    );
    assert!(hit(&path));
}

#[test]
fn a_copy_or_a_move_elsewhere_is_a_hit() {
    let _s = serial();
    let dir = files("copy");
    let path = dir.join("data.bin");
    fs::write(&path, "copied and moved").unwrap();
    assert!(!hit(&path));
    let other = files("copy-other");
    let copy = other.join("renamed.dat");
    fs::copy(&path, &copy).unwrap();
    assert!(hit(&copy));
    let moved = other.join("moved.dat");
    fs::rename(&path, &moved).unwrap();
    assert!(hit(&moved));
    // A different file of the same size is not.
    fs::write(&copy, "copied and moveD").unwrap();
    assert!(!hit(&copy));
}

#[test]
fn a_folder_is_keyed_by_its_names_and_contents() {
    let _s = serial();
    let root = files("folder");
    fs::create_dir(root.join("sub")).unwrap();
    fs::write(root.join("a.txt"), "folder test a").unwrap();
    fs::write(root.join("sub/b.txt"), "folder test b").unwrap();
    let folder = FileRef::new(&root);
    let call = || listing::call_with_outcome(&folder);

    let first = call();
    assert!(!first.hit);
    assert_eq!(
        first.value,
        vec![
            ("a.txt".to_string(), "folder test a".to_string()),
            ("sub".to_string(), String::new()),
            ("sub/b.txt".to_string(), "folder test b".to_string()),
        ]
    );
    assert!(call().hit);

    // A file added.
    fs::write(root.join("sub/c.txt"), "folder test c").unwrap();
    let added = call();
    assert!(!added.hit);
    assert_eq!(added.value.len(), 4);
    fs::remove_file(root.join("sub/c.txt")).unwrap();
    assert!(call().hit, "the first state again");

    // A file renamed, same contents.
    fs::rename(root.join("a.txt"), root.join("z.txt")).unwrap();
    let renamed = call();
    assert!(!renamed.hit);
    assert_eq!(renamed.value[2].0, "z.txt");
    fs::rename(root.join("z.txt"), root.join("a.txt")).unwrap();
    assert!(call().hit);

    // A file edited, same size.
    fs::write(root.join("sub/b.txt"), "folder test B").unwrap();
    assert!(!call().hit);
    fs::write(root.join("sub/b.txt"), "folder test b").unwrap();
    assert!(call().hit);

    // An empty folder added.
    fs::create_dir(root.join("empty")).unwrap();
    assert!(!call().hit);
    fs::remove_dir(root.join("empty")).unwrap();
    assert!(call().hit);

    // Touched, or copied elsewhere whole: the same key.
    set_mtime(
        &root.join("a.txt"),
        SystemTime::now() + Duration::from_secs(60),
    );
    assert!(call().hit);
    let copy = files("folder-copy");
    fs::create_dir(copy.join("sub")).unwrap();
    fs::copy(root.join("a.txt"), copy.join("a.txt")).unwrap();
    fs::copy(root.join("sub/b.txt"), copy.join("sub/b.txt")).unwrap();
    assert!(listing::call_with_outcome(&FileRef::new(&copy)).hit);
}

#[test]
#[cfg(unix)]
fn a_symbolic_link_keys_as_what_it_points_to() {
    let _s = serial();
    let dir = files("links");
    fs::write(dir.join("target.txt"), "linked contents").unwrap();
    std::os::unix::fs::symlink(dir.join("target.txt"), dir.join("link.txt")).unwrap();
    assert_eq!(
        Key::of(&FileRef::new(dir.join("link.txt"))).unwrap(),
        Key::of(&FileRef::new(dir.join("target.txt"))).unwrap()
    );
    // In a folder: under the link's name, with the target's contents.
    let folder = dir.join("folder");
    fs::create_dir(&folder).unwrap();
    std::os::unix::fs::symlink(dir.join("target.txt"), folder.join("l")).unwrap();
    let before = Key::of(&FileRef::new(&folder)).unwrap();
    fs::write(dir.join("target.txt"), "linked contents, edited").unwrap();
    assert_ne!(Key::of(&FileRef::new(&folder)).unwrap(), before);
    // A link to nothing: keyed by its name and target, no error.
    std::os::unix::fs::symlink(dir.join("nowhere"), folder.join("dangling")).unwrap();
    let dangling = Key::of(&FileRef::new(&folder)).unwrap();
    assert_ne!(dangling, before);
    fs::remove_file(folder.join("dangling")).unwrap();
    std::os::unix::fs::symlink(dir.join("elsewhere"), folder.join("dangling")).unwrap();
    assert_ne!(Key::of(&FileRef::new(&folder)).unwrap(), dangling);
    // A loop is an error, not a hang.
    std::os::unix::fs::symlink(&folder, folder.join("loop")).unwrap();
    let e = Key::of(&FileRef::new(&folder)).unwrap_err();
    assert!(e.to_string().contains("loop"), "{e}");
}

#[test]
fn keys_differ_with_contents_and_kind() {
    let _s = serial();
    let dir = files("kinds");
    let empty_file = dir.join("empty-file");
    fs::write(&empty_file, "").unwrap();
    let empty_folder = dir.join("empty-folder");
    fs::create_dir(&empty_folder).unwrap();
    let key = |p: &Path| Key::of(&FileRef::new(p)).unwrap();
    assert_ne!(key(&empty_file), key(&empty_folder));
    // Never the path: as a string, the path keys otherwise.
    assert_ne!(key(&empty_file), Key::of(&empty_file).unwrap());
    let a = dir.join("a");
    let b = dir.join("b");
    fs::write(&a, "x").unwrap();
    fs::write(&b, "y").unwrap();
    assert_ne!(key(&a), key(&b));
    // A folder holding one empty file is not that empty file.
    let holding = dir.join("holding");
    fs::create_dir(&holding).unwrap();
    fs::write(holding.join("f"), "").unwrap();
    assert_ne!(key(&holding), key(&empty_file));
    assert_ne!(key(&holding), key(&empty_folder));
    // Nested in other values too.
    let in_vec = Key::of(&vec![FileRef::new(&a)]).unwrap();
    fs::write(&a, "z").unwrap();
    assert_ne!(Key::of(&vec![FileRef::new(&a)]).unwrap(), in_vec);
}

#[test]
fn a_large_file_is_keyed_by_every_byte() {
    let _s = serial();
    let dir = files("large");
    let path = dir.join("large.bin");
    let mut bytes: Vec<u8> = (0..3u32 << 20).map(|i| (i % 251) as u8).collect();
    fs::write(&path, &bytes).unwrap();
    let copy = dir.join("copy.bin");
    fs::copy(&path, &copy).unwrap();
    let key = |p: &Path| Key::of(&FileRef::new(p)).unwrap();
    assert_eq!(key(&path), key(&copy));
    let middle = bytes.len() / 2 + 7;
    bytes[middle] ^= 1;
    fs::write(&path, &bytes).unwrap();
    assert_ne!(key(&path), key(&copy));
}

#[test]
fn unchanged_files_are_not_read_again_and_racy_ones_are() {
    let _s = serial();
    let dir = files("digests");
    let old = dir.join("old.bin");
    let kept = dir.join("kept-mtime.bin");
    let folder = dir.join("folder");
    fs::write(&old, "an old file").unwrap();
    fs::write(&kept, "rsync -t 1").unwrap();
    let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
    set_mtime(&kept, an_hour_ago);
    fs::create_dir(&folder).unwrap();
    fs::write(folder.join("one"), "folder one").unwrap();
    fs::write(folder.join("two"), "folder two").unwrap();
    // Older than the margin (2 s) of git-like racy-timestamp care.
    std::thread::sleep(Duration::from_millis(2200));

    assert!(!hit(&old));
    assert!(hit(&old));
    assert!(hit(&old));
    assert_eq!(hooks::file_reads(&old), 1, "an old file is read once");

    // A file whose times are not older than the moment its digest is
    // taken cannot be told from one rewritten within the same clock tick:
    // it is read at every use (here its mtime is ahead, as from a file
    // server whose clock runs ahead; a file written in the last 2 s is
    // the same case).
    let racy = dir.join("racy.bin");
    fs::write(&racy, "a racy file").unwrap();
    let tick = SystemTime::now() + Duration::from_secs(10);
    set_mtime(&racy, tick);
    assert!(!hit(&racy));
    assert!(hit(&racy));
    assert_eq!(hooks::file_reads(&racy), 2);
    // ... so a same-size rewrite within the tick, its mtime put back, is
    // computed again.
    fs::write(&racy, "a Racy file").unwrap();
    set_mtime(&racy, tick);
    assert_eq!(fs::metadata(&racy).unwrap().modified().unwrap(), tick);
    let rewritten = byte_sum::call_with_outcome(&FileRef::new(&racy));
    assert!(!rewritten.hit, "a racy rewrite must be read again");
    let sum: u64 = fs::read(&racy).unwrap().iter().map(|&b| u64::from(b)).sum();
    assert_eq!(rewritten.value, sum);

    // A rewrite that keeps the size and the modification time (rsync -t,
    // cp -p) is read again: its change time moved.
    assert!(!hit(&kept));
    assert_eq!(hooks::file_reads(&kept), 1);
    fs::write(&kept, "rsync -t 2").unwrap();
    set_mtime(&kept, an_hour_ago);
    let synced = byte_sum::call_with_outcome(&FileRef::new(&kept));
    assert!(!synced.hit);
    assert_eq!(hooks::file_reads(&kept), 2);

    // A later process (this one, its digests forgotten) reads the digest
    // file instead of the file.
    assert!(DIGESTS.is_file());
    hooks::file_digests_at(Some(DIGESTS.clone()));
    assert!(hit(&old));
    assert_eq!(hooks::file_reads(&old), 1, "remembered in the digest file");

    // A damaged digest file is ignored, silently, and replaced.
    let whole = fs::read(&*DIGESTS).unwrap();
    fs::write(&*DIGESTS, &whole[..whole.len() - 1]).unwrap();
    hooks::file_digests_at(Some(DIGESTS.clone()));
    let (was_hit, logs) = capture_logs(|| hit(&old));
    assert!(was_hit);
    assert_eq!(count(&logs, "WARN"), 0, "{logs}");
    assert_eq!(hooks::file_reads(&old), 2, "read again");
    // Saved again, whole: a new process reads it.
    hooks::file_digests_at(Some(DIGESTS.clone()));
    assert!(hit(&old));
    assert_eq!(hooks::file_reads(&old), 2);

    // A folder's unchanged files are not read again either.
    let key = Key::of(&FileRef::new(&folder)).unwrap();
    assert_eq!(Key::of(&FileRef::new(&folder)).unwrap(), key);
    assert_eq!(hooks::file_reads(&folder.join("one")), 1);
    fs::write(folder.join("two"), "folder TWO").unwrap();
    assert_ne!(Key::of(&FileRef::new(&folder)).unwrap(), key);
    assert_eq!(hooks::file_reads(&folder.join("one")), 1);
    assert_eq!(hooks::file_reads(&folder.join("two")), 2);
}

#[test]
fn a_missing_file_is_computed_with_a_warning() {
    let _s = serial();
    let path = files("missing").join("not-there.csv");
    let data = FileRef::new(&path);
    let (outcome, logs) = capture_logs(|| byte_sum::call_with_outcome(&data));
    assert_eq!(outcome.value, u64::MAX, "the function's own result");
    assert!(!outcome.hit);
    assert_eq!(count(&logs, "WARN"), 1, "{logs}");
    assert!(logs.contains(&path.display().to_string()), "{logs}");
    assert!(
        logs.contains("Check that the path names an existing file"),
        "{logs}"
    );
    assert!(logs.contains("computed without the cache"), "{logs}");
    // Nothing stored: computed again, and not in the cache.
    assert!(!byte_sum::call_with_outcome(&data).hit);
    assert!(!byte_sum::check_call_in_cache(&data));

    // A function returning Result returns its own error.
    let (result, logs) = capture_logs(|| contents(&data));
    assert_eq!(result.unwrap_err().kind(), std::io::ErrorKind::NotFound);
    assert_eq!(count(&logs, "WARN"), 1, "{logs}");

    // Once the file is there, it is keyed and stored.
    fs::write(&path, "now there").unwrap();
    assert_eq!(contents(&data).unwrap(), "now there");
    assert!(contents::check_call_in_cache(&data));
}

#[test]
#[cfg(unix)]
fn a_path_that_is_neither_file_nor_folder_is_computed_with_a_warning() {
    let _s = serial();
    let path = files("socket").join("a.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let data = FileRef::new(&path);
    let (outcome, logs) = capture_logs(|| byte_sum::call_with_outcome(&data));
    assert_eq!(outcome.value, u64::MAX, "the function's own result");
    assert_eq!(count(&logs, "WARN"), 1, "{logs}");
    assert!(logs.contains(&path.display().to_string()), "{logs}");
    assert!(
        logs.contains("neither a regular file nor a folder"),
        "{logs}"
    );
    assert!(!byte_sum::check_call_in_cache(&data));
}

#[test]
fn the_key_format_is_pinned() {
    let _s = serial();
    let dir = files("pinned");
    fs::write(dir.join("data"), "abc").unwrap();
    // A file: tag 32, kind 1, blake3 of the contents.
    let mut stream = vec![32u8, 1];
    stream.extend_from_slice(blake3::hash(b"abc").as_bytes());
    assert_eq!(
        Key::of(&FileRef::new(dir.join("data"))).unwrap(),
        Key::from_bytes(*blake3::hash(&stream).as_bytes())
    );
    // A folder: tag 32, kind 2, the digest of its sorted entries.
    fs::create_dir(dir.join("sub")).unwrap();
    fs::write(dir.join("sub/x"), "").unwrap();
    let mut folder = blake3::Hasher::new();
    folder.update(b"memento folder 1\0");
    for (kind, name, contents) in [
        (b'f', "data", Some(&b"abc"[..])),
        (b'd', "sub", None),
        (b'f', "sub/x", Some(&b""[..])),
    ] {
        folder.update(&[kind]);
        folder.update(&(name.len() as u64).to_le_bytes());
        folder.update(name.as_bytes());
        if let Some(contents) = contents {
            folder.update(blake3::hash(contents).as_bytes());
        }
    }
    folder.update(&3u64.to_le_bytes());
    let mut stream = vec![32u8, 2];
    stream.extend_from_slice(folder.finalize().as_bytes());
    assert_eq!(
        Key::of(&FileRef::new(&dir)).unwrap(),
        Key::from_bytes(*blake3::hash(&stream).as_bytes())
    );
}
