//! Eviction: what a cache holds (an inventory from one listing of the
//! store), and which entries go when a limit is exceeded: the least recently
//! used first.
//!
//! Last access is the modification time of an entry's file (a hit
//! read from disk, or a repeated hit from memory, sets it when it is more
//! than a minute old); in a bucket, which keeps none, the latest of the
//! object's write and the accesses memento processes recorded beside it
//! (see `store::s3`, "Last access"): [`ObjectMeta::modified`] either way. [`Memory`](crate::Memory) keeps a running count of the
//! bytes and entries it writes, so it lists the store only when that count
//! crosses a limit (or an age limit is due), then removes entries down to 90%
//! of each limit, so that the next listing is many writes away.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use crate::error::{Error, Result};
use crate::function::FunctionRecord;
use crate::layout::{self, Name};
use crate::store::{read_json, ObjectMeta, Store};

/// Limits on what a cache holds. `None` is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Total bytes the location takes on the disk (its files' allocated
    /// blocks: outputs, records, the eviction index), not their content's
    /// length: 100,000 results of 200 bytes take 400 MB on ext4, not 20 MB.
    pub bytes: Option<u64>,
    /// Number of stored results.
    pub items: Option<u64>,
    /// Longest time since a result's last access.
    pub age: Option<Duration>,
}

impl Limits {
    /// Is any limit set?
    pub fn any(&self) -> bool {
        self.bytes.is_some() || self.items.is_some() || self.age.is_some()
    }

    /// Limits as people write them: a size such as `10GB` (see
    /// [`parse_size`]), a count, a duration such as `30d` (see
    /// [`parse_duration`]).
    ///
    /// ```
    /// let limits = memento::Limits::parse(Some("1KiB"), Some(5), Some("2h")).unwrap();
    /// assert_eq!(limits.bytes, Some(1024));
    /// assert_eq!(limits.age, Some(std::time::Duration::from_secs(7200)));
    /// assert!(memento::Limits::parse(Some("lots"), None, None).is_err());
    /// ```
    pub fn parse(bytes: Option<&str>, items: Option<u64>, age: Option<&str>) -> Result<Limits> {
        Ok(Limits {
            bytes: bytes.map(parse_size).transpose()?,
            items,
            age: age.map(parse_duration).transpose()?,
        })
    }
}

/// One stored result, as found in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryInfo {
    /// The function's folder (`my_crate/module/f`).
    pub function_folder: String,
    /// The entry's file (`my_crate/module/f/ab/<62 hex>.bin`), or the
    /// folder of an entry left by memento 0.1's first layout (entry format
    /// 1: `ab/<62 hex>/output.bin` and `metadata.json`).
    pub name: String,
    /// The key, hex.
    pub key: String,
    /// What it takes on the disk (allocated blocks), which limits count.
    pub bytes: u64,
    /// Its content's length in bytes.
    pub content: u64,
    /// Last access: the file's modification time.
    pub last_access: SystemTime,
    /// False for a leftover of the first layout, which this version never
    /// reads: such leftovers go first.
    pub complete: bool,
}

/// Everything under a location, grouped into entries.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    /// The stored results, least recently used first.
    pub entries: Vec<EntryInfo>,
    /// Other files: `function.json`, `.gitignore`, stray files.
    pub others: Vec<ObjectMeta>,
}

impl Inventory {
    /// Lists the whole store once.
    pub fn scan(store: &dyn Store) -> Result<Inventory> {
        Inventory::scan_prefix(store, "")
    }

    /// Lists the store under the folder `prefix` (`""` for all).
    pub fn scan_prefix(store: &dyn Store, prefix: &str) -> Result<Inventory> {
        let mut entries = Vec::new();
        let mut old: BTreeMap<String, EntryInfo> = BTreeMap::new();
        let mut others = Vec::new();
        for object in store.list_meta(prefix)? {
            match layout::parse(&object.name) {
                Name::Entry { folder, key } => {
                    let function_folder = folder.to_string();
                    entries.push(EntryInfo {
                        function_folder,
                        key: key.to_hex(),
                        bytes: object.disk,
                        content: object.size,
                        last_access: object.modified,
                        complete: true,
                        name: object.name,
                    });
                }
                Name::OldEntry { folder, dir, key } => {
                    let entry = old.entry(dir.to_string()).or_insert_with(|| EntryInfo {
                        function_folder: folder.to_string(),
                        name: dir.to_string(),
                        key: key.to_hex(),
                        bytes: 0,
                        content: 0,
                        last_access: SystemTime::UNIX_EPOCH,
                        complete: false,
                    });
                    entry.bytes += object.disk;
                    entry.content += object.size;
                }
                _ => others.push(object),
            }
        }
        entries.extend(old.into_values());
        entries.sort_by_key(|e| (e.complete, e.last_access));
        Ok(Inventory { entries, others })
    }

    /// What everything listed takes on the disk (allocated blocks).
    pub fn bytes(&self) -> u64 {
        self.entries.iter().map(|e| e.bytes).sum::<u64>()
            + self.others.iter().map(|o| o.disk).sum::<u64>()
    }

    /// The length of everything listed: its content, without the rest of
    /// the blocks it takes.
    pub fn content_bytes(&self) -> u64 {
        self.entries.iter().map(|e| e.content).sum::<u64>()
            + self.others.iter().map(|o| o.size).sum::<u64>()
    }

    /// Number of stored results.
    pub fn items(&self) -> u64 {
        self.entries.iter().filter(|e| e.complete).count() as u64
    }

    /// The entries to remove so that every limit holds with `fraction` of
    /// its room (1.0: exactly the limit; 0.9: 10% below it), least recently
    /// used first. Incomplete entries always go.
    pub fn victims(&self, limits: &Limits, fraction: f64, now: SystemTime) -> Vec<&EntryInfo> {
        let target = |limit: u64| (limit as f64 * fraction) as u64;
        let mut bytes = self.bytes();
        let mut items = self.items();
        let mut out = Vec::new();
        for entry in &self.entries {
            let too_old = limits.age.is_some_and(|age| {
                now.duration_since(entry.last_access)
                    .is_ok_and(|since| since > age)
            });
            let over = limits.bytes.is_some_and(|b| bytes > target(b))
                || limits.items.is_some_and(|n| items > target(n));
            if !entry.complete || too_old || over {
                bytes -= entry.bytes;
                items -= u64::from(entry.complete);
                out.push(entry);
            }
        }
        out
    }
}

/// Removes `victims` from `store`, on up to 16 threads (removals are system
/// calls that mostly wait, which overlap well), calling `progress` after
/// each; then removes the shard folders they leave empty (see
/// [`Store::prune`]). Returns the results removed, the bytes freed (on the
/// disk) and the first error met (the others go on).
pub fn remove_entries(
    store: &dyn Store,
    victims: &[&EntryInfo],
    progress: &(dyn Fn() + Sync),
) -> (u64, u64, Option<Error>) {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Mutex;
    let (removed, freed) = (AtomicU64::new(0), AtomicU64::new(0));
    let first_error = Mutex::new(None);
    // Removals wait on the file system's journal far more than they use
    // a core: 16 threads removed 50,000 small files twice as fast as 4 on
    // the 2-core development machine (ext4), and more did no better.
    let threads = (victims.len() / 64).clamp(1, 16);
    let chunk = victims.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        for part in victims.chunks(chunk) {
            let (removed, freed, first_error) = (&removed, &freed, &first_error);
            scope.spawn(move || {
                for victim in part {
                    match remove(store, victim) {
                        Ok(()) => {
                            removed.fetch_add(u64::from(victim.complete), Ordering::Relaxed);
                            freed.fetch_add(victim.bytes, Ordering::Relaxed);
                        }
                        Err(e) => {
                            first_error
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .get_or_insert(e);
                        }
                    }
                    progress();
                }
            });
        }
    });
    let mut first_error = first_error.into_inner().unwrap_or_else(|p| p.into_inner());
    let shards: std::collections::BTreeSet<&str> = victims
        .iter()
        .filter_map(|v| layout::shard_of(&v.name))
        .collect();
    for shard in shards {
        if let Err(e) = store.prune(shard) {
            first_error.get_or_insert(e);
        }
    }
    (removed.into_inner(), freed.into_inner(), first_error)
}

/// Removes one entry: its file, or a first-layout entry's folder.
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// let memory = memento::Memory::new(dir.path());
/// let f = memento::Function::new("docs", "gone");
/// let _: u8 = memory.call(&f, &(1u8,), || 2);
/// let inventory = memento::evict::Inventory::scan(memory.store()).unwrap();
/// memento::evict::remove(memory.store(), &inventory.entries[0]).unwrap();
/// assert_eq!(memento::evict::Inventory::scan(memory.store()).unwrap().items(), 0);
/// ```
pub fn remove(store: &dyn Store, entry: &EntryInfo) -> Result<()> {
    if entry.complete {
        store.delete(&entry.name)
    } else {
        store.delete_prefix(&entry.name)
    }
}

/// `hits.json`: the hits counted for a function.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct HitsFile {
    pub(crate) hits: u64,
}

/// What a cache holds, per function.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Stats {
    /// Number of stored results.
    pub entries: u64,
    /// What the location takes on the disk (allocated blocks).
    pub bytes: u64,
    /// The length of its files' content (less than `bytes`: a file takes
    /// whole blocks).
    pub content_bytes: u64,
    /// Per function, sorted by name.
    pub functions: Vec<FunctionStats>,
    /// The computation time the cache saved, all functions together (the
    /// sum of their [`saved`](FunctionStats::saved)).
    pub saved: Duration,
}

/// What a cache holds for one function.
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// let memory = memento::Memory::new(dir.path());
/// let f = memento::Function::new("docs", "slow");
/// for _ in 0..4 {
///     let _: u8 = memory.call(&f, &1u8, || {
///         std::thread::sleep(std::time::Duration::from_millis(20));
///         1
///     });
/// }
/// drop(memory); // writes the counts kept in memory
/// let stats = memento::Memory::new(dir.path()).stats().unwrap();
/// let f = &stats.functions[0];
/// assert_eq!(f.hits, 3);
/// assert!(f.mean_duration.unwrap() >= std::time::Duration::from_millis(20));
/// assert_eq!(f.saved, f.mean_duration.unwrap() * 3);
/// assert_eq!(stats.saved, f.saved);
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct FunctionStats {
    /// `module::name` from `function.json` (the folder if it has none).
    pub name: String,
    /// The function's folder.
    pub folder: String,
    /// Number of stored results.
    pub entries: u64,
    /// What its results and its records take on the disk (allocated
    /// blocks).
    pub bytes: u64,
    /// The length of its results and records.
    pub content_bytes: u64,
    /// The most recent last access among its results.
    pub last_access: Option<SystemTime>,
    /// Hits recorded in `hits.json`: approximate, since each process adds
    /// its hits in batches (every 1024 hits, at most every 10 s; when it
    /// stores a result; when its last `Memory` over the location is
    /// dropped; and at exit).
    pub hits: u64,
    /// The mean time its stored results took to compute (of every result
    /// stored since its results were last cleared, as recorded in its
    /// `calls.json`); `None` when none is recorded.
    pub mean_duration: Option<Duration>,
    /// The computation time the cache saved it: [`hits`](Self::hits) ×
    /// [`mean_duration`](Self::mean_duration) (approximate as the hits are).
    pub saved: Duration,
}

impl Stats {
    /// Gathers the statistics of an inventory, reading each function's
    /// record for its name.
    pub fn of(inventory: &Inventory, store: &dyn Store) -> Stats {
        let mut functions: BTreeMap<String, FunctionStats> = BTreeMap::new();
        fn stats_of<'a>(
            functions: &'a mut BTreeMap<String, FunctionStats>,
            folder: &str,
        ) -> &'a mut FunctionStats {
            functions
                .entry(folder.to_string())
                .or_insert_with(|| FunctionStats {
                    name: folder.replace('/', "::"),
                    folder: folder.to_string(),
                    entries: 0,
                    bytes: 0,
                    content_bytes: 0,
                    last_access: None,
                    hits: 0,
                    mean_duration: None,
                    saved: Duration::ZERO,
                })
        }
        for entry in inventory.entries.iter() {
            let f = stats_of(&mut functions, &entry.function_folder);
            f.bytes += entry.bytes;
            f.content_bytes += entry.content;
            if entry.complete {
                f.entries += 1;
                f.last_access = f.last_access.max(Some(entry.last_access));
            }
        }
        for other in &inventory.others {
            match layout::parse(&other.name) {
                Name::Hits { folder } => {
                    let hits = read_json::<HitsFile>(store, &other.name);
                    let f = stats_of(&mut functions, folder);
                    f.bytes += other.disk;
                    f.content_bytes += other.size;
                    f.hits += hits.map_or(0, |h| h.hits);
                }
                Name::Record { folder } => {
                    let record = read_json::<FunctionRecord>(store, &other.name);
                    let f = stats_of(&mut functions, folder);
                    f.bytes += other.disk;
                    f.content_bytes += other.size;
                    if let Some(record) = record {
                        f.name = record.function;
                    }
                }
                _ => {}
            }
        }
        // `calls.json` alone (left after a clear, to explain the next
        // miss) makes no function of a folder.
        for other in &inventory.others {
            if let Name::Calls { folder } = layout::parse(&other.name) {
                if let Some(f) = functions.get_mut(folder) {
                    f.bytes += other.disk;
                    f.content_bytes += other.size;
                    if let Some((count, seconds)) = crate::memory::computed(store, folder) {
                        let mean = Duration::from_secs_f64(seconds.max(0.0) / count as f64);
                        f.mean_duration = Some(mean);
                        f.saved = mean.saturating_mul(f.hits.min(u32::MAX as u64) as u32);
                    }
                }
            }
        }
        let mut functions: Vec<FunctionStats> = functions.into_values().collect();
        functions.sort_by(|a, b| a.name.cmp(&b.name));
        Stats {
            entries: inventory.items(),
            bytes: inventory.bytes(),
            content_bytes: inventory.content_bytes(),
            saved: functions.iter().map(|f| f.saved).sum(),
            functions,
        }
    }
}

/// Parses a size such as `10GB`, `512 MiB` or `1000` (bytes).
///
/// ```
/// assert_eq!(memento::evict::parse_size("10GB").unwrap(), 10_000_000_000);
/// assert_eq!(memento::evict::parse_size("1 KiB").unwrap(), 1024);
/// assert!(memento::evict::parse_size("ten").is_err());
/// ```
pub fn parse_size(text: &str) -> Result<u64> {
    text.trim()
        .parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| Error::Option {
            option: "size",
            value: text.to_string(),
            expected: format!("a size such as 500MB, 10GB or 2GiB ({e})"),
        })
}

/// Parses a duration such as `30d`, `12h`, `15m`, `90s` or `2w`.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(memento::evict::parse_duration("7d").unwrap(), Duration::from_secs(7 * 86400));
/// assert_eq!(memento::evict::parse_duration("90 s").unwrap(), Duration::from_secs(90));
/// assert!(memento::evict::parse_duration("soon").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<Duration> {
    humantime::parse_duration(text.trim()).map_err(|e| Error::Option {
        option: "duration",
        value: text.to_string(),
        expected: format!("a number and a unit, such as 30d, 12h or 1h 30m ({e})"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, bytes: u64, age_s: u64, complete: bool) -> EntryInfo {
        EntryInfo {
            function_folder: "f".into(),
            name: name.into(),
            key: name.into(),
            bytes,
            content: bytes,
            last_access: SystemTime::UNIX_EPOCH + Duration::from_secs(1000 - age_s),
            complete,
        }
    }

    fn inventory(mut entries: Vec<EntryInfo>) -> Inventory {
        entries.sort_by_key(|e| (e.complete, e.last_access));
        Inventory {
            entries,
            others: Vec::new(),
        }
    }

    fn names(v: Vec<&EntryInfo>) -> Vec<&str> {
        v.into_iter().map(|e| e.name.as_str()).collect()
    }

    #[test]
    fn least_recently_used_go_first() {
        let inv = inventory(vec![
            entry("new", 10, 1, true),
            entry("old", 10, 100, true),
            entry("mid", 10, 50, true),
        ]);
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let bytes = Limits {
            bytes: Some(20),
            ..Limits::default()
        };
        assert_eq!(names(inv.victims(&bytes, 1.0, now)), ["old"]);
        assert_eq!(names(inv.victims(&bytes, 0.5, now)), ["old", "mid"]);
        let items = Limits {
            items: Some(1),
            ..Limits::default()
        };
        assert_eq!(names(inv.victims(&items, 1.0, now)), ["old", "mid"]);
        let age = Limits {
            age: Some(Duration::from_secs(60)),
            ..Limits::default()
        };
        assert_eq!(names(inv.victims(&age, 1.0, now)), ["old"]);
        assert!(inv.victims(&Limits::default(), 1.0, now).is_empty());
    }

    #[test]
    fn leftovers_always_go() {
        let inv = inventory(vec![
            entry("whole", 10, 1, true),
            entry("half", 3, 0, false),
        ]);
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        assert_eq!(names(inv.victims(&Limits::default(), 1.0, now)), ["half"]);
    }
}
