//! The digests of input files, kept so that unchanged files are not read
//! again.
//!
//! A file's digest is remembered under its *state*: (device, inode, size,
//! modification time, change time), both times to the nanosecond. A file
//! whose state is the one remembered is not read; any write changes its
//! change time (which no program can set back), so its state no longer
//! matches and it is read again.
//!
//! **Racy timestamps** (git's "racily clean" index entries): a file written
//! again within the same clock tick as its digest was taken keeps the same
//! times, and with the same size, the same state. So a digest is kept only
//! when both the file's times are at least [`MARGIN`] older than the moment
//! it started to be read; a younger file is read again at each use until it
//! is old enough (its next digest is then kept). The margin covers a file
//! system's timestamp granularity (2 s on FAT; a clock tick elsewhere) and
//! assumes a file server's clock within it of ours. A file whose state
//! changed while it was read is not kept either.
//!
//! The digests live in this process (a map) and in a file of the user's
//! cache folder, `$XDG_CACHE_HOME/memento/.file-digests/<host>` (else
//! `$HOME/.cache/...`), so that a later process does not read the file
//! again. Not beside the cache's location: the key is computed before a
//! location is involved (and [`Key::of`](crate::Key::of) has none), a
//! location may be shared by machines (a network folder, a bucket), and
//! device and inode numbers only mean something on the machine that read
//! them; hence one file per host name too, for home folders shared by a
//! cluster's machines. The name starts with a dot, which no bucket's name
//! does, so it never meets a near cache's `<bucket>` folder.
//!
//! Format, version 1 (numbers little-endian):
//!
//! | bytes | field |
//! |---|---|
//! | 0..4 | magic `MMFD` |
//! | 4..6 | version (u16), 1 |
//! | 6..8 | zero |
//! | 8..12 | number of records n (u32) |
//! | 12..16 | zero |
//! | 16..16+88n | records: device, inode, size (u64 each), modification time (i64 seconds, u32 nanoseconds), change time (u32 nanoseconds, i64 seconds), last use (u64, Unix seconds), blake3 of the contents (32 bytes) |
//! | then 32 bytes | blake3 of everything before |
//!
//! A file of another length, magic, version or checksum is ignored (and
//! replaced by the next save). Saves merge what the file holds with this
//! process's digests, keep the [`MAX_RECORDS`] most recently used, and
//! replace the file atomically (a temporary file renamed over it). Failing
//! to read or write it only costs reading the files again. Not on Windows:
//! there (no inode or change time in `std`) files are read at each key.

use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::path::Path;

/// How much older than the moment its digest was taken a file's times must
/// be for the digest to be kept.
pub(crate) const MARGIN: std::time::Duration = std::time::Duration::from_secs(2);

/// Files of this size and more are memory-mapped to be hashed.
const MMAP_FROM: u64 = 1 << 20;

/// At most this many digests are kept in the file.
pub(crate) const MAX_RECORDS: usize = 16_384;

/// The digest (blake3) of the file at `path`, whose metadata (through
/// symbolic links) is `meta`: remembered, or read.
pub(crate) fn file(path: &Path, meta: &Metadata) -> io::Result<[u8; 32]> {
    #[cfg(unix)]
    {
        cached::file(path, meta)
    }
    #[cfg(not(unix))]
    {
        let file = File::open(path)?;
        hash(path, &file, meta.len())
    }
}

/// Writes the digests taken since the last save to the digest file.
pub(crate) fn save_if_changed() {
    #[cfg(unix)]
    cached::save_if_changed();
}

/// Reads and hashes the file: memory-mapped when large, on every core
/// (feature `parallel`) when larger still.
fn hash(path: &Path, file: &File, len: u64) -> io::Result<[u8; 32]> {
    hooks::count(path);
    let mut hasher = blake3::Hasher::new();
    if len >= MMAP_FROM {
        // SAFETY: the map is read-only and dropped before this returns. A
        // program that truncates the file meanwhile makes the reads fault
        // (SIGBUS), as with any map of a file; `FileRef`'s documentation
        // says so.
        let map = unsafe { memmap2::Mmap::map(file)? };
        #[cfg(feature = "parallel")]
        if map.len() >= crate::buffer::PARALLEL_HASH {
            hasher.update_rayon(&map);
        } else {
            hasher.update(&map);
        }
        #[cfg(not(feature = "parallel"))]
        hasher.update(&map);
    } else {
        let mut buf = vec![0u8; 64 * 1024];
        let mut reader = file;
        loop {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    hasher.update(&buf[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(*hasher.finalize().as_bytes())
}

/// Test hooks: count the reads of files, and choose the digest file.
pub mod hooks {
    use std::collections::HashMap;
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    /// Per path, how many times its contents were read; `None`: not
    /// counting (the default: nothing is counted).
    static READS: Mutex<Option<HashMap<PathBuf, u64>>> = Mutex::new(None);

    pub(super) fn count(path: &Path) {
        let mut reads = READS.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(reads) = reads.as_mut() {
            *reads.entry(path.to_path_buf()).or_default() += 1;
        }
    }

    /// Starts counting the reads of files' contents by `FileRef` keys.
    pub fn count_file_reads() {
        let mut reads = READS.lock().unwrap_or_else(|e| e.into_inner());
        reads.get_or_insert_with(HashMap::new);
    }

    /// How many times the contents of `path` were read since
    /// [`count_file_reads`].
    pub fn file_reads(path: &Path) -> u64 {
        let reads = READS.lock().unwrap_or_else(|e| e.into_inner());
        reads
            .as_ref()
            .and_then(|r| r.get(path).copied())
            .unwrap_or(0)
    }

    /// Uses `path` as the digest file (`None`: none), and forgets the
    /// digests this process holds, as a new process would.
    pub fn file_digests_at(path: Option<PathBuf>) {
        #[cfg(unix)]
        super::cached::reset(path);
        #[cfg(not(unix))]
        let _ = path;
    }
}

#[cfg(unix)]
mod cached {
    use super::*;
    use std::collections::HashMap;
    use std::fs;
    use std::os::unix::fs::MetadataExt;
    use std::path::PathBuf;
    use std::sync::Mutex;
    use std::time::{SystemTime, UNIX_EPOCH};

    /// A file's state: what must be unchanged for its digest to hold.
    #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
    struct State {
        dev: u64,
        ino: u64,
        size: u64,
        mtime: (i64, u32),
        ctime: (i64, u32),
    }

    impl State {
        fn of(meta: &Metadata) -> State {
            State {
                dev: meta.dev(),
                ino: meta.ino(),
                size: meta.size(),
                mtime: (meta.mtime(), meta.mtime_nsec() as u32),
                ctime: (meta.ctime(), meta.ctime_nsec() as u32),
            }
        }
    }

    /// Nanoseconds since the Unix epoch.
    fn nanos((secs, nanos): (i64, u32)) -> i128 {
        i128::from(secs) * 1_000_000_000 + i128::from(nanos)
    }

    /// May the digest of a file in `state`, whose reading started at
    /// `taken`, be used later? Only when both its times are [`MARGIN`]
    /// older than `taken`: a write after `taken` then gives it a later
    /// change time, so another state.
    fn trusted(state: &State, taken: SystemTime) -> bool {
        let Ok(taken) = taken.duration_since(UNIX_EPOCH) else {
            return false;
        };
        let limit = taken.as_nanos() as i128 - MARGIN.as_nanos() as i128;
        nanos(state.mtime) <= limit && nanos(state.ctime) <= limit
    }

    #[derive(Clone, Copy)]
    struct Record {
        digest: [u8; 32],
        /// Last use, Unix seconds.
        used: u64,
    }

    struct Digests {
        records: HashMap<State, Record>,
        /// The digest file was read (or there is none).
        loaded: bool,
        /// Records were added since the last save.
        dirty: bool,
        /// The digest file; `None` before it is resolved.
        path: Option<Option<PathBuf>>,
    }

    static DIGESTS: std::sync::LazyLock<Mutex<Digests>> = std::sync::LazyLock::new(|| {
        Mutex::new(Digests {
            records: HashMap::new(),
            loaded: false,
            dirty: false,
            path: None,
        })
    });

    fn digests() -> std::sync::MutexGuard<'static, Digests> {
        DIGESTS.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now_secs() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }

    impl Digests {
        fn path(&mut self) -> Option<PathBuf> {
            self.path.get_or_insert_with(default_path).clone()
        }

        fn load(&mut self) {
            if self.loaded {
                return;
            }
            self.loaded = true;
            if let Some(path) = self.path() {
                for (state, record) in read_file(&path) {
                    self.records.entry(state).or_insert(record);
                }
            }
        }

        fn insert(&mut self, state: State, digest: [u8; 32]) {
            if self.records.len() >= 2 * MAX_RECORDS {
                // Keep the most recently used half.
                let mut all: Vec<(State, Record)> = self.records.drain().collect();
                all.sort_unstable_by_key(|r| std::cmp::Reverse(r.1.used));
                all.truncate(MAX_RECORDS);
                self.records.extend(all);
            }
            let used = now_secs();
            self.records.insert(state, Record { digest, used });
            self.dirty = true;
        }
    }

    pub(super) fn file(path: &Path, meta: &Metadata) -> io::Result<[u8; 32]> {
        let state = State::of(meta);
        if let Some(digest) = remembered(&state) {
            return Ok(digest);
        }
        let file = File::open(path)?;
        let before = State::of(&file.metadata()?);
        if before != state {
            if let Some(digest) = remembered(&before) {
                return Ok(digest);
            }
        }
        let taken = SystemTime::now();
        let digest = hash(path, &file, before.size)?;
        let after = State::of(&file.metadata()?);
        if after == before && trusted(&before, taken) {
            digests().insert(before, digest);
        }
        Ok(digest)
    }

    fn remembered(state: &State) -> Option<[u8; 32]> {
        let mut digests = digests();
        digests.load();
        let record = digests.records.get_mut(state)?;
        record.used = now_secs();
        Some(record.digest)
    }

    pub(super) fn save_if_changed() {
        let (path, mut records) = {
            let mut digests = digests();
            if !digests.dirty {
                return;
            }
            digests.dirty = false;
            let Some(path) = digests.path() else {
                return;
            };
            (path, digests.records.clone())
        };
        for (state, record) in read_file(&path) {
            records.entry(state).or_insert(record);
        }
        let mut records: Vec<(State, Record)> = records.into_iter().collect();
        if records.len() > MAX_RECORDS {
            records.sort_unstable_by_key(|r| std::cmp::Reverse(r.1.used));
            records.truncate(MAX_RECORDS);
        }
        if let Err(e) = write_file(&path, &records) {
            tracing::debug!(
                "cannot save file digests to {}: {e}; files will be read again",
                path.display()
            );
        }
    }

    pub(super) fn reset(path: Option<PathBuf>) {
        let mut digests = digests();
        digests.records.clear();
        digests.loaded = false;
        digests.dirty = false;
        digests.path = Some(path);
    }

    /// `$XDG_CACHE_HOME/memento/.file-digests/<host>`, else under
    /// `$HOME/.cache`; `None` without either.
    #[cfg(not(test))]
    fn default_path() -> Option<PathBuf> {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        let base = match var("XDG_CACHE_HOME") {
            Some(dir) => PathBuf::from(dir),
            None => PathBuf::from(var("HOME")?).join(".cache"),
        };
        Some(base.join("memento").join(".file-digests").join(host()))
    }

    /// Unit tests leave the user's cache folder alone.
    #[cfg(test)]
    fn default_path() -> Option<PathBuf> {
        None
    }

    /// This machine's name, reduced to characters safe in a file name.
    fn host() -> String {
        let mut buf = [0u8; 256];
        // SAFETY: the buffer is valid for its length; gethostname writes at
        // most that many bytes.
        let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
        let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        let name: String = buf[..if ok { len } else { 0 }]
            .iter()
            .map(|&b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' => b as char,
                b'.' => '.',
                _ => '_',
            })
            .collect();
        match name.trim_start_matches('.') {
            "" => "localhost".to_string(),
            name => name.to_string(),
        }
    }

    const MAGIC: &[u8; 4] = b"MMFD";
    const VERSION: u16 = 1;
    const HEADER: usize = 16;
    const RECORD: usize = 88;
    const CHECKSUM: usize = 32;

    fn encode(records: &[(State, Record)]) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + RECORD * records.len() + CHECKSUM);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&(records.len() as u32).to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        for (s, r) in records {
            out.extend_from_slice(&s.dev.to_le_bytes());
            out.extend_from_slice(&s.ino.to_le_bytes());
            out.extend_from_slice(&s.size.to_le_bytes());
            out.extend_from_slice(&s.mtime.0.to_le_bytes());
            out.extend_from_slice(&s.mtime.1.to_le_bytes());
            out.extend_from_slice(&s.ctime.1.to_le_bytes());
            out.extend_from_slice(&s.ctime.0.to_le_bytes());
            out.extend_from_slice(&r.used.to_le_bytes());
            out.extend_from_slice(&r.digest);
        }
        let checksum = blake3::hash(&out);
        out.extend_from_slice(checksum.as_bytes());
        out
    }

    /// The records of a digest file's bytes; `None` if they are not one of
    /// version 1, whole.
    fn decode(bytes: &[u8]) -> Option<Vec<(State, Record)>> {
        let body_len = bytes.len().checked_sub(CHECKSUM)?;
        let (body, checksum) = bytes.split_at(body_len);
        if body.len() < HEADER
            || &body[0..4] != MAGIC
            || body[4..6] != VERSION.to_le_bytes()
            || blake3::hash(body).as_bytes() != checksum
        {
            return None;
        }
        let count = u32::from_le_bytes(body[8..12].try_into().ok()?) as usize;
        if body.len() - HEADER != count.checked_mul(RECORD)? {
            return None;
        }
        let u64_at = |r: &[u8], at: usize| u64::from_le_bytes(r[at..at + 8].try_into().unwrap());
        let u32_at = |r: &[u8], at: usize| u32::from_le_bytes(r[at..at + 4].try_into().unwrap());
        let records = body[HEADER..]
            .chunks_exact(RECORD)
            .map(|r| {
                let state = State {
                    dev: u64_at(r, 0),
                    ino: u64_at(r, 8),
                    size: u64_at(r, 16),
                    mtime: (u64_at(r, 24) as i64, u32_at(r, 32)),
                    ctime: (u64_at(r, 40) as i64, u32_at(r, 36)),
                };
                let mut digest = [0u8; 32];
                digest.copy_from_slice(&r[56..88]);
                let used = u64_at(r, 48);
                (state, Record { digest, used })
            })
            .collect();
        Some(records)
    }

    /// What the digest file holds; nothing if it is missing or damaged.
    fn read_file(path: &Path) -> Vec<(State, Record)> {
        match fs::read(path) {
            Ok(bytes) => decode(&bytes).unwrap_or_else(|| {
                tracing::debug!(
                    "ignoring the damaged file digests {} (they will be taken again)",
                    path.display()
                );
                Vec::new()
            }),
            Err(_) => Vec::new(),
        }
    }

    fn write_file(path: &Path, records: &[(State, Record)]) -> io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::DirBuilderExt;
        let dir = path.parent().unwrap_or(Path::new("."));
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let mut temp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
        temp.write_all(&encode(records))?;
        temp.persist(path).map_err(|e| e.error)?;
        Ok(())
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use std::time::Duration;

        fn state_of(path: &Path) -> State {
            State::of(&fs::metadata(path).unwrap())
        }

        #[test]
        fn a_digest_taken_in_the_tick_of_the_files_write_is_not_trusted() {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("f");
            fs::write(&path, b"v1").unwrap();
            let state = state_of(&path);
            let written = UNIX_EPOCH
                + Duration::new(state.ctime.0 as u64, state.ctime.1)
                    .max(Duration::new(state.mtime.0 as u64, state.mtime.1));
            // Taken in the same tick, or within the margin: not kept.
            assert!(!trusted(&state, written));
            assert!(!trusted(&state, written + MARGIN - Duration::from_nanos(1)));
            // Taken a margin later: kept.
            assert!(trusted(&state, written + MARGIN));
        }

        #[test]
        fn a_rewrite_in_the_same_tick_is_read_again() {
            // The situation git's racy-clean check is for, made certain:
            // the digest of v1 remembered under the state v2 has (same
            // size, same times), as if v2 had been written in the clock
            // tick in which v1 was read.
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("racy");
            fs::write(&path, b"v1").unwrap();
            let v1 = *blake3::hash(b"v1").as_bytes();
            fs::write(&path, b"v2").unwrap();
            let state = state_of(&path);
            let meta = fs::metadata(&path).unwrap();
            // file() keeps a digest only when trusted: the state is young,
            // so the digest of what is there now is computed and not kept.
            assert_eq!(file(&path, &meta).unwrap(), *blake3::hash(b"v2").as_bytes());
            assert!(!digests().records.contains_key(&state));
            // A record planted for this state is what a trusted digest
            // looks like: it is used without reading (so the file must
            // be old for one to exist; see trusted()).
            digests().insert(state, v1);
            assert_eq!(file(&path, &meta).unwrap(), v1);
            digests().records.remove(&state);
        }

        #[test]
        fn the_file_format_round_trips_and_refuses_damage() {
            let state = State {
                dev: 1,
                ino: 2,
                size: 3,
                mtime: (-4, 5),
                ctime: (6, 999_999_999),
            };
            let record = Record {
                digest: [9; 32],
                used: 10,
            };
            let bytes = encode(&[(state, record)]);
            assert_eq!(bytes.len(), HEADER + RECORD + CHECKSUM);
            let back = decode(&bytes).unwrap();
            assert_eq!(back.len(), 1);
            assert_eq!(back[0].0, state);
            assert_eq!(back[0].1.digest, [9; 32]);
            assert_eq!(back[0].1.used, 10);
            for cut in 0..bytes.len() {
                assert!(decode(&bytes[..cut]).is_none(), "cut at {cut}");
            }
            for at in 0..bytes.len() {
                let mut bad = bytes.clone();
                bad[at] ^= 1;
                assert!(decode(&bad).is_none(), "flipped byte {at}");
            }
            assert_eq!(decode(&encode(&[])).unwrap().len(), 0);
        }

        #[test]
        fn the_host_name_is_a_plain_file_name() {
            let host = host();
            assert!(!host.is_empty() && !host.starts_with('.'));
            assert!(!host.contains('/'));
        }
    }
}
