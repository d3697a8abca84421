//! The eviction index of a local cache: what is stored, without listing the
//! store.
//!
//! Listing a million entries takes tens of seconds, so eviction does not
//! list: each [`Memory`](crate::Memory) appends one small record per result
//! it writes to a log of its own, `<location>/.index/<id>.log` (no two
//! processes share a log, so appends never interleave). A record holds the
//! entry's function folder, key, size on the disk (whole blocks: limits
//! count what the disk holds, not the content's length) and creation time. Eviction reads the
//! logs (a million records are ~100 MB read sequentially), sums the sizes,
//! and takes victims from a heap ordered by the best known last access: a
//! popped entry's real last access (its file's mtime) is read with one
//! `stat`; if it is more recent than the heap knew, it goes back in with that
//! time, else it is the least recently used of all and goes. Each entry is
//! looked at at most twice, and only the oldest ones are. Afterwards the logs
//! are compacted into one.
//!
//! The index is complete once `<location>/.index/complete` exists: written
//! after one full listing of a cache that had results before it had an index
//! (and at once for a new cache). Records of entries removed by other means
//! (a clear, a damaged entry) are dropped when their `stat` fails. A
//! rebuild measures the logs before it lists the store, and a compaction
//! renames each old log aside before it reads what was appended to it, so
//! records appended meanwhile are kept (a writer's next append makes a new
//! log; only a write that started before the rename and lands after the
//! read is lost). A record lost that way, or to a crash between the
//! result's write and its append, only hides that entry from eviction; a
//! full listing (`Memory::rebuild_index`, or `memento gc`) finds it again.
//!
//! # The record, version 1
//!
//! A log is records one after another, each encoded and decoded by
//! [`Record`] and nowhere else (little-endian numbers):
//!
//! | bytes | field |
//! |---|---|
//! | 0 | tag and version: `W` (0x57) is version 1 |
//! | 1..33 | the entry's key |
//! | 33..41 | what the entry takes on the disk, bytes (u64) |
//! | 41..49 | creation time (or best known last access), ms since the Unix epoch (u64) |
//! | 49..51 | length n of the function folder (u16) |
//! | 51..51+n | the function folder, UTF-8, relative to the location |
//!
//! A reader stops at the first record it cannot decode: a torn last record
//! (a crash while appending), or a tag it does not know (a later version's
//! log), whose records are then only missing from eviction until the next
//! full listing. A new version gets a new tag, never a changed meaning of
//! this one. Versions of memento up to 0.3 wrote the content's length as the
//! size; a reader rounds it up to whole blocks.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::evict::{Inventory, Limits};
use crate::key::Key;

/// Folder of the logs under the location.
pub(crate) use crate::layout::INDEX_DIR;
use crate::layout::{INDEX_COMPLETE as COMPLETE, INDEX_LOG_EXTENSION as LOG};

/// One record of a log: an entry as written (its bytes are in the module
/// doc). The only code that encodes or decodes a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record<'a> {
    pub(crate) key: Key,
    /// What the entry takes on the disk.
    pub(crate) size: u64,
    /// Creation (or best known last access), ms since the epoch.
    pub(crate) time_ms: u64,
    /// The function folder.
    pub(crate) folder: std::borrow::Cow<'a, str>,
}

impl<'a> Record<'a> {
    /// The tag, first byte of a record of version 1.
    const TAG: u8 = b'W';
    /// Bytes before the folder.
    const FIXED: usize = 51;

    /// Appends the record's bytes to `out`. False (and nothing appended)
    /// when the folder is longer than a record can hold (64 KiB; no file
    /// system takes such a path).
    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> bool {
        let Ok(len) = u16::try_from(self.folder.len()) else {
            return false;
        };
        out.reserve(Self::FIXED + self.folder.len());
        out.push(Self::TAG);
        out.extend_from_slice(self.key.as_bytes());
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&self.time_ms.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(self.folder.as_bytes());
        true
    }

    /// The record at the start of `bytes` and its length in bytes; `None`
    /// when they do not start with a whole record of a known version (torn,
    /// foreign or hostile bytes: never a panic). A folder that is not UTF-8
    /// is read lossily.
    pub(crate) fn decode(bytes: &'a [u8]) -> Option<(Record<'a>, usize)> {
        if *bytes.first()? != Self::TAG {
            return None;
        }
        let key: [u8; 32] = bytes.get(1..33)?.try_into().ok()?;
        let num = |at: usize| -> Option<u64> {
            Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
        };
        let (size, time_ms) = (num(33)?, num(41)?);
        let len = u16::from_le_bytes(bytes.get(49..51)?.try_into().ok()?) as usize;
        let folder = bytes.get(Self::FIXED..Self::FIXED + len)?;
        let record = Record {
            key: Key::from_bytes(key),
            size,
            time_ms,
            folder: String::from_utf8_lossy(folder),
        };
        Some((record, Self::FIXED + len))
    }
}

/// This Memory's log. It is opened for each record (a write of a result
/// costs far more), so a log removed under it (a clear, a compaction) is
/// simply created again.
pub(crate) struct IndexLog {
    dir: PathBuf,
    /// Named at the first append: a Memory that only reads pays nothing.
    path: std::sync::OnceLock<PathBuf>,
    /// The file system's block size, read at the first append.
    block: std::sync::OnceLock<u64>,
}

/// A log name no other log of this or another process has: process id,
/// time, and a counter of this process.
fn unique_name(kind: &str) -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!(
        "{kind}-{}-{}-{n}.{LOG}",
        std::process::id(),
        millis(SystemTime::now())
    )
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}

impl IndexLog {
    pub(crate) fn new(root: &Path) -> IndexLog {
        IndexLog {
            dir: root.join(INDEX_DIR),
            path: std::sync::OnceLock::new(),
            block: std::sync::OnceLock::new(),
        }
    }

    /// What a new file of `len` bytes takes on the disk: `len` rounded up
    /// to whole blocks of the file system (`st_blksize`). An estimate, so
    /// that a write costs no `stat` of what it wrote: exact for the usual
    /// file systems (ext4, xfs, btrfs, apfs) unless they compress or keep
    /// tiny files inline, where it counts more than the disk holds; the
    /// listing of an eviction or `memento gc` reads the real blocks.
    pub(crate) fn on_disk(&self, len: u64) -> u64 {
        let block = *self
            .block
            .get_or_init(|| crate::store::block_size(self.dir.parent().unwrap_or(&self.dir)));
        len.div_ceil(block) * block
    }

    /// Appends the record of a written entry of `size` bytes, counted as
    /// what it takes on the disk ([`on_disk`](IndexLog::on_disk)); best
    /// effort: a failure only hides the entry from eviction until the next
    /// full listing.
    pub(crate) fn append(&self, folder: &str, key: &Key, size: u64, created_ms: u64) {
        let record = Record {
            key: *key,
            size: self.on_disk(size),
            time_ms: created_ms,
            folder: folder.into(),
        };
        let mut bytes = Vec::new();
        if !record.encode(&mut bytes) {
            return;
        }
        let path = self.path.get_or_init(|| self.dir.join(unique_name("log")));
        let open = || OpenOptions::new().create(true).append(true).open(path);
        let file = open().or_else(|_| {
            crate::store::make_folders(&self.dir)?;
            open()
        });
        // One write of one small buffer: appends of other processes (to
        // their own logs) and compactions never see half a record.
        if let Ok(mut file) = file {
            let _ = file.write_all(&bytes);
        }
    }
}

/// An entry as the index knows it.
#[derive(Debug, Clone)]
pub(crate) struct Indexed {
    pub(crate) folder: String,
    /// What the entry takes on the disk (allocated blocks).
    pub(crate) size: u64,
    /// Best known last access, ms since the epoch (at first, creation).
    pub(crate) time_ms: u64,
}

/// All the logs, read.
pub(crate) struct Snapshot {
    pub(crate) entries: HashMap<Key, Indexed>,
    /// Each log read, with the length read.
    pub(crate) logs: Vec<(PathBuf, u64)>,
    pub(crate) log_bytes: u64,
    /// Bytes of the files beside the entries: each function's records
    /// (`function.json`, `hits.json`, `calls.json`) and the `.gitignore`.
    pub(crate) other_bytes: u64,
}

impl Snapshot {
    pub(crate) fn bytes(&self) -> u64 {
        self.entries.values().map(|e| e.size).sum::<u64>() + self.log_bytes + self.other_bytes
    }
}

/// Is the index of `root` complete (every result has a record)?
pub(crate) fn complete(root: &Path) -> bool {
    root.join(INDEX_DIR).join(COMPLETE).exists()
}

/// Reads every log; a torn last record (a crash while appending) is
/// skipped.
pub(crate) fn read(root: &Path) -> io::Result<Snapshot> {
    let dir = root.join(INDEX_DIR);
    let mut snapshot = Snapshot {
        entries: HashMap::new(),
        logs: Vec::new(),
        log_bytes: 0,
        other_bytes: 0,
    };
    let listing = match fs::read_dir(&dir) {
        Ok(listing) => listing,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(snapshot),
        Err(e) => return Err(e),
    };
    // Records hold disk sizes; those of memento 0.3 and before held the
    // content's length, which this rounds up to whole blocks as a write
    // does (rounding a disk size changes nothing).
    let block = crate::store::block_size(root);
    for entry in listing.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != LOG) {
            continue;
        }
        let mut bytes = Vec::new();
        if File::open(&path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .is_err()
        {
            continue;
        }
        snapshot.log_bytes += fs::metadata(&path).map_or(bytes.len() as u64, |m| {
            crate::store::on_disk(&m).max(bytes.len() as u64)
        });
        snapshot.logs.push((path, bytes.len() as u64));
        let mut rest = bytes.as_slice();
        while let Some((record, len)) = Record::decode(rest) {
            rest = &rest[len..];
            let entry = snapshot.entries.entry(record.key).or_insert(Indexed {
                folder: record.folder.into_owned(),
                size: 0,
                time_ms: 0,
            });
            // A key written again (forced) replaces its record.
            entry.size = record.size.div_ceil(block) * block;
            entry.time_ms = entry.time_ms.max(record.time_ms);
        }
    }
    let size = |p: PathBuf| fs::metadata(p).map_or(0, |m| crate::store::on_disk(&m));
    let folders: std::collections::HashSet<&str> = snapshot
        .entries
        .values()
        .map(|e| e.folder.as_str())
        .collect();
    snapshot.other_bytes = size(root.join(crate::layout::GITIGNORE))
        + folders
            .into_iter()
            .map(|f| {
                size(root.join(crate::layout::record(f)))
                    + size(root.join(crate::layout::hits(f)))
                    + size(root.join(crate::layout::calls(f)))
            })
            .sum::<u64>();
    Ok(snapshot)
}

/// The logs and their lengths now, without reading them: taken before a
/// listing that [`rebuild`] then turns into the index, so that a record
/// appended while the store is listed is carried over, not lost.
pub(crate) fn logs(root: &Path) -> io::Result<Vec<(PathBuf, u64)>> {
    let listing = match fs::read_dir(root.join(INDEX_DIR)) {
        Ok(listing) => listing,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(listing
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|e| e == LOG))
        .filter_map(|path| Some((fs::metadata(&path).ok()?.len(), path)))
        .map(|(len, path)| (path, len))
        .collect())
}

/// Builds the index from a full listing, taken after the logs were
/// measured (`before`, from [`logs`]), and marks it complete.
pub(crate) fn rebuild(
    root: &Path,
    inventory: &Inventory,
    before: &[(PathBuf, u64)],
) -> io::Result<()> {
    let entries = inventory
        .entries
        .iter()
        .filter(|e| e.complete)
        .filter_map(|e| {
            Some((
                Key::from_hex(&e.key)?,
                Indexed {
                    folder: e.function_folder.clone(),
                    size: e.bytes,
                    time_ms: millis(e.last_access),
                },
            ))
        });
    if !compact(root, entries, before)? {
        // A clear removed the index meanwhile: it stays incomplete.
        return Ok(());
    }
    match File::create(root.join(INDEX_DIR).join(COMPLETE)) {
        Ok(_) => {}
        // A clear removed the index meanwhile: it stays incomplete, and the
        // next eviction lists the store again.
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    Ok(())
}

/// Writes `entries` as one new log (atomically), then removes the `old`
/// logs; records appended to them since they were read are carried over.
/// Each old log is first renamed out of the way, so that a writer's next
/// append makes a new log instead of landing in one being removed.
///
/// `Ok(false)` when a clear removed the index folder (or the files being
/// compacted) meanwhile: what was compacted is gone with the results it
/// named, which is what the clear asked; nothing is published.
pub(crate) fn compact(
    root: &Path,
    entries: impl Iterator<Item = (Key, Indexed)>,
    old: &[(PathBuf, u64)],
) -> io::Result<bool> {
    let dir = root.join(INDEX_DIR);
    // A clear may remove the folder between its making and the file's.
    let mut attempts = 0;
    let mut tmp = loop {
        crate::store::make_folders(&dir)?;
        match tempfile::Builder::new()
            .prefix(crate::layout::TEMP_PREFIX)
            .tempfile_in(&dir)
        {
            Ok(tmp) => break tmp,
            Err(e) if e.kind() == io::ErrorKind::NotFound && attempts < 16 => attempts += 1,
            // Clears keep removing the folder: the index is being emptied.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        }
    };
    // Old logs renamed aside: (where it is now, where it was).
    let mut moved: Vec<(PathBuf, &Path)> = Vec::new();
    let written = (|| -> io::Result<()> {
        let mut out = io::BufWriter::new(tmp.as_file_mut());
        let mut bytes = Vec::new();
        for (key, e) in entries {
            let record = Record {
                key,
                size: e.size,
                time_ms: e.time_ms,
                folder: e.folder.into(),
            };
            bytes.clear();
            if record.encode(&mut bytes) {
                out.write_all(&bytes)?;
            }
        }
        // Records appended since the snapshot.
        for (i, (log, read)) in old.iter().enumerate() {
            let aside = dir.join(format!(
                "{}compacting-{}-{i}",
                crate::layout::TEMP_PREFIX,
                unique_name("old")
            ));
            if fs::rename(log, &aside).is_err() {
                continue;
            }
            moved.push((aside.clone(), log));
            let bytes = fs::read(&aside)?;
            if let Some(tail) = bytes.get(*read as usize..) {
                out.write_all(tail)?;
            }
        }
        out.flush()
    })();
    let new = dir.join(unique_name("compact"));
    let published =
        written.and_then(|()| tmp.persist_noclobber(&new).map(drop).map_err(|e| e.error));
    if let Err(e) = published {
        // The old logs go back where they were: nothing is lost.
        for (aside, log) in moved {
            let _ = fs::rename(aside, log);
        }
        if e.kind() == io::ErrorKind::NotFound {
            // Removed under us by a clear.
            return Ok(false);
        }
        return Err(e);
    }
    for (aside, _) in moved {
        let _ = fs::remove_file(aside);
    }
    Ok(true)
}

/// The entry file of a record, relative to the location.
pub(crate) use crate::layout::entry_file;

/// Chooses least recently used victims until every limit holds with
/// `fraction` of its room, reading real last-access times (one `stat` each)
/// only for the entries at the old end. Entries whose file is gone
/// leave the snapshot, and so do the victims. Returns the victims.
pub(crate) fn victims(
    root: &Path,
    snapshot: &mut Snapshot,
    limits: &Limits,
    fraction: f64,
    now: SystemTime,
) -> Vec<(Key, Indexed)> {
    let target = |limit: u64| (limit as f64 * fraction) as u64;
    let mut bytes = snapshot.bytes();
    let mut items = snapshot.entries.len() as u64;
    let cutoff = limits
        .age
        .map(|age| millis(now).saturating_sub(age.as_millis() as u64));
    let mut heap: BinaryHeap<Reverse<(u64, Key)>> = snapshot
        .entries
        .iter()
        .map(|(k, e)| Reverse((e.time_ms, *k)))
        .collect();
    let mut checked: HashMap<Key, ()> = HashMap::new();
    let mut out = Vec::new();
    let over = |bytes: u64, items: u64| {
        limits.bytes.is_some_and(|b| bytes > target(b))
            || limits.items.is_some_and(|n| items > target(n))
    };
    let old = |time_ms: u64| cutoff.is_some_and(|c| time_ms < c);
    while over(bytes, items) || heap.peek().is_some_and(|Reverse((t, _))| old(*t)) {
        // The next entries at the old end, whose real last access is read
        // (one `stat` each) on several threads at once: the reads wait on
        // the file system more than they use a core.
        let mut batch = Vec::with_capacity(STAT_BATCH);
        while batch.len() < STAT_BATCH {
            match heap.pop() {
                Some(Reverse(popped)) => batch.push(popped),
                None => break,
            }
        }
        if batch.is_empty() {
            break;
        }
        let unchecked: Vec<(usize, PathBuf)> = batch
            .iter()
            .enumerate()
            .filter(|(_, (_, key))| !checked.contains_key(key))
            .filter_map(|(i, (_, key))| {
                let entry = snapshot.entries.get(key)?;
                Some((i, root.join(entry_file(&entry.folder, key))))
            })
            .collect();
        let mut real: Vec<Option<Option<u64>>> = vec![None; batch.len()];
        for (i, time) in stat_all(&unchecked) {
            real[i] = Some(time);
        }
        let mut done = false;
        for (i, (time_ms, key)) in batch.into_iter().enumerate() {
            let Some(entry) = snapshot.entries.get(&key).cloned() else {
                continue;
            };
            // What the stat found: gone, or a later access than known
            // (the entry goes back with it).
            match real[i] {
                Some(None) => {
                    // Gone already (cleared, damaged, another gc).
                    bytes = bytes.saturating_sub(entry.size);
                    items = items.saturating_sub(1);
                    snapshot.entries.remove(&key);
                    continue;
                }
                Some(Some(found)) => {
                    checked.insert(key, ());
                    if found > time_ms {
                        if let Some(e) = snapshot.entries.get_mut(&key) {
                            e.time_ms = found;
                        }
                        heap.push(Reverse((found, key)));
                        continue;
                    }
                }
                None => {}
            }
            // Its last access is known now. A victim while a limit is
            // exceeded, unless an entry put back is older: then the rest of
            // the batch goes back, and the next batch starts there.
            let oldest = heap.peek().is_none_or(|Reverse((t, _))| *t >= time_ms);
            done = done || !oldest || !(over(bytes, items) || old(time_ms));
            if done {
                heap.push(Reverse((time_ms, key)));
                continue;
            }
            bytes = bytes.saturating_sub(entry.size);
            items = items.saturating_sub(1);
            snapshot.entries.remove(&key);
            out.push((key, entry));
        }
    }
    out
}

/// Entries whose last access is read at once, on [`STAT_THREADS`].
const STAT_BATCH: usize = 1024;
const STAT_THREADS: usize = 16;

/// The modification times (ms) of `paths`, `None` for a file that is gone,
/// read on several threads.
fn stat_all(paths: &[(usize, PathBuf)]) -> Vec<(usize, Option<u64>)> {
    let stat = |path: &Path| {
        fs::metadata(path)
            .and_then(|m| m.modified())
            .ok()
            .map(millis)
    };
    if paths.len() < 64 {
        return paths.iter().map(|(i, p)| (*i, stat(p))).collect();
    }
    let chunk = paths.len().div_ceil(STAT_THREADS);
    std::thread::scope(|scope| {
        let parts: Vec<_> = paths
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || part.iter().map(|(i, p)| (*i, stat(p))).collect::<Vec<_>>())
            })
            .collect();
        parts
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot_of(root: &Path) -> Vec<(Key, u64)> {
        let mut v: Vec<(Key, u64)> = read(root)
            .unwrap()
            .entries
            .into_iter()
            .map(|(k, e)| (k, e.size))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn victims_are_the_least_recently_used_by_real_access() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let log = IndexLog::new(root);
        let base = SystemTime::now() - Duration::from_secs(100_000);
        // 3000 entries (three batches), written in order; every third was
        // read later than the index knows (its file's mtime is newer).
        let mut real = Vec::new();
        for i in 0..3000u64 {
            let key = Key::of(&i).unwrap();
            let path = root.join(entry_file("c/f", &key));
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, b"x").unwrap();
            let written = base + Duration::from_secs(i);
            let accessed = if i % 3 == 0 {
                written + Duration::from_secs(5000)
            } else {
                written
            };
            File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(accessed)
                .unwrap();
            log.append("c/f", &key, 1, millis(written));
            real.push((millis(accessed), key));
        }
        // One entry is gone (cleared behind the index's back).
        let gone = Key::of(&1u64).unwrap();
        fs::remove_file(root.join(entry_file("c/f", &gone))).unwrap();
        real.retain(|(_, k)| *k != gone);
        let mut snapshot = read(root).unwrap();
        let limits = Limits {
            items: Some(1000),
            ..Limits::default()
        };
        let chosen = victims(root, &mut snapshot, &limits, 1.0, SystemTime::now());
        real.sort();
        let expected: std::collections::BTreeSet<Key> =
            real[..real.len() - 1000].iter().map(|(_, k)| *k).collect();
        let got: std::collections::BTreeSet<Key> = chosen.iter().map(|(k, _)| *k).collect();
        assert_eq!(got.len(), chosen.len(), "no entry chosen twice");
        assert_eq!(got, expected);
        assert_eq!(snapshot.entries.len(), 1000);
    }

    #[test]
    fn records_round_trip_and_never_panic_on_torn_or_hostile_bytes() {
        let records: Vec<Record> = (0..3u64)
            .map(|i| Record {
                key: Key::of(&i).unwrap(),
                size: 4096 * (i + 1),
                time_ms: 1_700_000_000_000 + i,
                folder: format!("c/m/f{}", "é".repeat(i as usize)).into(),
            })
            .collect();
        let mut bytes = Vec::new();
        for r in &records {
            assert!(r.encode(&mut bytes));
        }
        assert_eq!(bytes[0], b'W');
        assert_eq!(&bytes[1..33], records[0].key.as_bytes());
        assert_eq!(&bytes[33..41], &4096u64.to_le_bytes());
        assert_eq!(&bytes[49..51], &5u16.to_le_bytes());
        let mut rest = bytes.as_slice();
        let mut back = Vec::new();
        while let Some((r, len)) = Record::decode(rest) {
            rest = &rest[len..];
            back.push(r);
        }
        assert_eq!(back, records);
        assert!(rest.is_empty());
        // Every torn record (every strict prefix) decodes to nothing.
        let mut one = Vec::new();
        assert!(records[2].encode(&mut one));
        for cut in 0..one.len() {
            assert_eq!(Record::decode(&one[..cut]), None, "cut at {cut}");
        }
        // A length running past the end, and an unknown tag.
        let mut long = one.clone();
        long[49..51].copy_from_slice(&u16::MAX.to_le_bytes());
        assert_eq!(Record::decode(&long), None);
        one[0] = b'X';
        assert_eq!(Record::decode(&one), None);
        // A folder too long for a record is not written.
        let huge = Record {
            folder: "x".repeat(usize::from(u16::MAX) + 1).into(),
            ..records[0].clone()
        };
        let mut out = Vec::new();
        assert!(!huge.encode(&mut out) && out.is_empty());
        // Random bytes (a fixed xorshift, so failures repeat), with the tag
        // in front half the time: decoding never panics, and what it
        // decodes lies within the bytes.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut decoded = 0;
        for round in 0..20_000 {
            let len = (next() % 160) as usize;
            let mut junk: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if round % 2 == 0 {
                if let Some(first) = junk.first_mut() {
                    *first = b'W';
                }
                // Short folder lengths, so that some records are whole.
                if junk.len() > 50 {
                    junk[50] = 0;
                    junk[49] %= 64;
                }
            }
            if let Some((r, used)) = Record::decode(&junk) {
                decoded += 1;
                assert!((51..=junk.len()).contains(&used));
                assert_eq!(r.key.as_bytes(), &junk[1..33]);
            }
        }
        assert!(
            decoded > 100,
            "the random cases reach whole records: {decoded}"
        );
    }

    #[test]
    fn appends_compactions_and_torn_records() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let log = IndexLog::new(root);
        let keys: Vec<Key> = (0..3u8).map(|i| Key::of(&i).unwrap()).collect();
        for (i, k) in keys.iter().enumerate() {
            log.append("c/f", k, 100 + i as u64, 1000);
        }
        assert_eq!(snapshot_of(root).len(), 3);
        // Two compactions in a row (the same millisecond, often) keep
        // everything.
        for _ in 0..2 {
            let snap = read(root).unwrap();
            compact(root, snap.entries.into_iter(), &snap.logs).unwrap();
        }
        assert_eq!(snapshot_of(root).len(), 3);
        // A record appended after a snapshot is carried over by compaction.
        let snap = read(root).unwrap();
        let late = Key::of(&"late").unwrap();
        log.append("c/f", &late, 7, 2000);
        compact(root, snap.entries.into_iter(), &snap.logs).unwrap();
        // Sizes are what the entry takes on the disk: whole blocks.
        let disk = log.on_disk(7);
        assert!(disk >= 512 && disk.is_multiple_of(512), "{disk}");
        assert!(snapshot_of(root).contains(&(late, disk)));
        // A torn record at the end of a log is ignored.
        let torn = root.join(INDEX_DIR).join("torn.log");
        std::fs::write(&torn, [Record::TAG, 1, 2, 3]).unwrap();
        assert_eq!(snapshot_of(root).len(), 4);
    }
}
