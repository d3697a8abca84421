//! The local folder backend: one file per object under a root folder.

use std::fs::{self, File, TryLockError};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use super::{check_name, LockOutcome, ObjectMeta, Opened, Store, StoreLock};
use crate::error::{Error, Result};

/// Publishes a whole temporary file under `path` if nothing is there;
/// then, with `sweep`, removes leftovers of writers killed in its folder.
fn publish_temp(tmp: tempfile::NamedTempFile, path: &Path, sweep: bool) -> Result<bool> {
    match tmp.persist_noclobber(path) {
        Ok(_) => {
            if let Some(dir) = path.parent().filter(|_| sweep) {
                sweep_folder(dir, LEFTOVER_AGE);
            }
            Ok(true)
        }
        Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(Error::io("write", path, e.error)),
    }
}

/// Prefix of temporary files; listings skip them and a later cleanup may
/// remove them.
use crate::layout::TEMP_PREFIX;

/// Objects as files under a root folder, written atomically: a temporary file
/// in the destination folder, then a rename (or, for
/// [`publish`](Store::publish), a link that fails if the name is taken).
///
/// The root is created on the first write, readable by its owner only
/// (mode 0700 on Unix), with a `.gitignore` holding `*`.
#[derive(Debug)]
pub struct LocalStore {
    root: PathBuf,
    root_ready: AtomicBool,
    publishes: AtomicU64,
    /// Folders created by this store (see [`Store::generation`]).
    created_folders: AtomicU64,
    access_granularity: Duration,
    /// Per-key locks as byte ranges of one file per shard folder.
    #[cfg(target_os = "linux")]
    ranges: super::ranges::Ranges,
}

impl LocalStore {
    /// A store rooted at `root`. Nothing is created until the first write.
    pub fn new(root: impl Into<PathBuf>) -> LocalStore {
        LocalStore {
            root: root.into(),
            root_ready: AtomicBool::new(false),
            publishes: AtomicU64::new(0),
            created_folders: AtomicU64::new(0),
            access_granularity: ACCESS_GRANULARITY,
            #[cfg(target_os = "linux")]
            ranges: Default::default(),
        }
    }

    /// How old a result's recorded last access must be before a read
    /// records a new one ([`ACCESS_GRANULARITY`] by default; zero records
    /// every read, at the cost of a metadata write per hit).
    pub fn access_granularity(mut self, granularity: Duration) -> LocalStore {
        self.access_granularity = granularity;
        self
    }

    /// The root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Runs `f` on `root/name`, building the path on the stack when it is
    /// short (the hit path allocates nothing here).
    #[inline]
    fn with_path<R>(&self, name: &str, f: impl FnOnce(&Path) -> R) -> R {
        #[cfg(unix)]
        {
            use std::ffi::OsStr;
            use std::os::unix::ffi::OsStrExt;
            let root = self.root.as_os_str().as_bytes();
            let mut buf = [0u8; 512];
            let total = root.len() + 1 + name.len();
            if total <= buf.len() {
                buf[..root.len()].copy_from_slice(root);
                buf[root.len()] = b'/';
                buf[root.len() + 1..total].copy_from_slice(name.as_bytes());
                return f(Path::new(OsStr::from_bytes(&buf[..total])));
            }
        }
        f(&self.root.join(name))
    }

    /// Reads the whole object into `out`; records an access (the file's
    /// modification time) when `access`.
    #[inline]
    fn read_whole(&self, name: &str, out: &mut Vec<u8>, access: bool) -> Result<bool> {
        check_name(name)?;
        self.with_path(name, |path| {
            let file = match File::open(path) {
                Ok(f) => f,
                Err(e) if absent(&e) => return Ok(false),
                Err(e) => return Err(Error::io("open", path, e)),
            };
            let meta = file.metadata().map_err(|e| Error::io("read", path, e))?;
            out.clear();
            out.reserve(meta.len() as usize);
            // Objects never change once published: read exactly their size
            // (no extra read to find the end, as `fs::read` does).
            (&file)
                .take(meta.len())
                .read_to_end(out)
                .map_err(|e| Error::io("read", path, e))?;
            if access {
                touch(&file, &meta, self.access_granularity);
            }
            Ok(true)
        })
    }

    /// Is it this publish's turn to sweep its folder for leftovers of
    /// killed writers? The first of each store, then one in
    /// [`SWEEP_EVERY`]: a shard folder of a large
    /// cache holds thousands of entries, too many to list on every write.
    fn sweep_due(&self) -> bool {
        self.publishes
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(SWEEP_EVERY)
    }

    fn ensure_root(&self) -> Result<()> {
        if self.root_ready.load(Ordering::Acquire) && self.root.is_dir() {
            return Ok(());
        }
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder
            .create(&self.root)
            .map_err(|e| Error::io("create the cache folder", &self.root, e))?;
        let gitignore = self.root.join(crate::layout::GITIGNORE);
        if !gitignore.exists() {
            fs::write(&gitignore, "*\n").map_err(|e| Error::io("write", &gitignore, e))?;
        }
        self.root_ready.store(true, Ordering::Release);
        Ok(())
    }

    /// Writes `parts` to a new temporary file in the folder of `path`,
    /// creating folders as needed; also tells whether this call created the
    /// folder (a new folder holds no leftovers to sweep).
    fn temp_with(&self, path: &Path, parts: &[&[u8]]) -> Result<(tempfile::NamedTempFile, bool)> {
        let dir = path.parent().unwrap_or(&self.root);
        if !self.root_ready.load(Ordering::Acquire) {
            self.ensure_root()?;
        }
        let make = || {
            tempfile::Builder::new()
                .prefix(TEMP_PREFIX)
                .tempfile_in(dir)
        };
        let mut created = false;
        // A clear in another thread or process may remove the folders
        // between their making and the file's: make them again, a few times.
        let mut attempts = 0;
        let mut tmp = loop {
            match make() {
                Ok(t) => break t,
                Err(e) if e.kind() == io::ErrorKind::NotFound && attempts < FOLDER_ATTEMPTS => {
                    attempts += 1;
                    self.created_folders.fetch_add(1, Ordering::Relaxed);
                    // Usually only the shard folder is missing.
                    match fs::create_dir(dir) {
                        Ok(()) => created = true,
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                        Err(_) => {
                            self.root_ready.store(false, Ordering::Release);
                            self.ensure_root()?;
                            match make_folders(dir) {
                                Ok(()) => created = true,
                                Err(e) => return Err(Error::io("create folder", dir, e)),
                            }
                        }
                    }
                }
                Err(e) => return Err(Error::io("create a file in", dir, e)),
            }
        };
        let mut at = 0;
        for part in parts {
            at = in_pieces(part, at, |piece, _| tmp.write_all(piece))
                .map_err(|e| Error::io("write", tmp.path(), e))?;
        }
        Ok((tmp, created))
    }
}

/// Large writes go to a file in pieces of at most this many bytes, each
/// but the first starting at a file offset that is a multiple of it (a
/// whole number of pages). The kernel puts a write into page-cache folios
/// no larger than the write, and on some virtual machines their size
/// decides the cost. On the 2-core VM the benchmarks run on, the guest
/// hands whole free 2 MiB blocks back to the host (free-page reporting,
/// order 9), and a page of one faults in again at about 11 µs: a 100 MiB
/// array written in one call, or in joblib's 16 MiB calls, went into
/// 2 MiB folios taken from such blocks (about 280 ms), while in 256 KiB
/// pieces it took smaller folios from the smaller free blocks, which are
/// never handed back (about 30 ms, as long as there are some: when they
/// run out it is as slow, and `ahead.rs` (Linux) then takes half of
/// it to another core). Elsewhere the pieces cost a few hundred system
/// calls per 100 MiB: nothing next to the copy.
const WRITE_PIECE: usize = 256 * 1024;

/// Writes `bytes`, whose first byte goes at file offset `at`, by calls of
/// `write(piece, offset)` in pieces as [`WRITE_PIECE`] says; returns the
/// offset after the last byte.
fn in_pieces(
    bytes: &[u8],
    at: u64,
    mut write: impl FnMut(&[u8], u64) -> io::Result<()>,
) -> io::Result<u64> {
    let mut rest = bytes;
    let mut at = at;
    while !rest.is_empty() {
        // Up to the next multiple of WRITE_PIECE.
        let room = WRITE_PIECE - (at % WRITE_PIECE as u64) as usize;
        let (piece, after) = rest.split_at(room.min(rest.len()));
        write(piece, at)?;
        at += piece.len() as u64;
        rest = after;
    }
    Ok(at)
}

/// Last access is the file's modification time, kept to within
/// [`ACCESS_GRANULARITY`]: setting it costs a metadata write (about 2.5 µs
/// here, more than the rest of a hit), so it is only set when older.
pub const ACCESS_GRANULARITY: Duration = Duration::from_secs(60);

fn touch(file: &File, meta: &fs::Metadata, granularity: Duration) {
    let now = SystemTime::now();
    let stale = meta
        .modified()
        .map(|m| now.duration_since(m).unwrap_or(Duration::ZERO) >= granularity)
        .unwrap_or(true);
    if stale {
        // A read-only cache simply keeps the old time.
        let _ = file.set_modified(now);
    }
}

fn absent(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

impl Store for LocalStore {
    fn read(&self, name: &str, out: &mut Vec<u8>) -> Result<bool> {
        self.read_whole(name, out, true)
    }

    fn peek(&self, name: &str, out: &mut Vec<u8>) -> Result<bool> {
        self.read_whole(name, out, false)
    }

    fn open_file(&self, name: &str) -> Result<Opened> {
        check_name(name)?;
        self.with_path(name, |path| {
            let file = match File::open(path) {
                Ok(f) => f,
                Err(e) if absent(&e) => return Ok(Opened::Absent),
                Err(e) => return Err(Error::io("open", path, e)),
            };
            let meta = file.metadata().map_err(|e| Error::io("read", path, e))?;
            touch(&file, &meta, self.access_granularity);
            Ok(Opened::File(file, meta.len()))
        })
    }

    fn read_range(&self, name: &str, range: Range<u64>, out: &mut Vec<u8>) -> Result<bool> {
        check_name(name)?;
        self.with_path(name, |path| {
            let mut file = match File::open(path) {
                Ok(f) => f,
                Err(e) if absent(&e) => return Ok(false),
                Err(e) => return Err(Error::io("open", path, e)),
            };
            out.clear();
            file.seek(SeekFrom::Start(range.start))
                .and_then(|_| {
                    file.take(range.end.saturating_sub(range.start))
                        .read_to_end(out)
                })
                .map_err(|e| Error::io("read", path, e))?;
            Ok(true)
        })
    }

    fn publish(&self, name: &str, bytes: &[u8]) -> Result<bool> {
        self.publish_parts(name, &[bytes])
    }

    fn publish_parts(&self, name: &str, parts: &[&[u8]]) -> Result<bool> {
        check_name(name)?;
        let path = self.root.join(name);
        let (tmp, created) = self.temp_with(&path, parts)?;
        publish_temp(tmp, &path, !created && self.sweep_due())
    }

    #[cfg(unix)]
    fn publish_computed(
        &self,
        name: &str,
        head_len: usize,
        tail: &[u8],
        end: &[u8],
        head: &(dyn Fn() -> Vec<u8> + Sync),
        replace: bool,
    ) -> Result<bool> {
        use std::os::unix::fs::FileExt;
        check_name(name)?;
        let path = self.root.join(name);
        let (tmp, created) = self.temp_with(&path, &[])?;
        let file = tmp.as_file();
        // How far the file is written (`u64::MAX` once the writing ended).
        let progress = AtomicU64::new(head_len as u64);
        #[cfg(target_os = "linux")]
        let ahead = {
            let len = (head_len + tail.len() + end.len()) as u64;
            super::ahead::Ahead::new(file, len)
        };
        #[cfg(target_os = "linux")]
        let help = || {
            if let Some(ahead) = &ahead {
                ahead.fill(&progress);
            }
        };
        #[cfg(not(target_os = "linux"))]
        let help = || {};
        // The tail is written here while the head is computed beside it;
        // then (on Linux) that thread helps the writing (see `ahead`), and
        // the head goes in front. Nobody sees the file before it is whole:
        // it is published by link or rename only after that.
        let (computed, written) = std::thread::scope(|scope| {
            let computing = scope.spawn(|| {
                let head = head();
                help();
                head
            });
            let written = in_pieces(tail, head_len as u64, |piece, at| {
                file.write_all_at(piece, at)?;
                progress.store(at + piece.len() as u64, Ordering::Relaxed);
                Ok(())
            })
            .and_then(|at| file.write_all_at(end, at));
            // Written or failed: no more help wanted either way.
            progress.store(u64::MAX, Ordering::Relaxed);
            (computing.join(), written)
        });
        #[cfg(target_os = "linux")]
        drop(ahead);
        written.map_err(|e| Error::io("write", tmp.path(), e))?;
        let head = computed.map_err(|_| {
            Error::io(
                "write",
                tmp.path(),
                io::Error::other("computing the entry's header panicked"),
            )
        })?;
        if head.len() != head_len {
            return Err(Error::io(
                "write",
                tmp.path(),
                io::Error::other("a header of another length than announced"),
            ));
        }
        tmp.as_file()
            .write_all_at(&head, 0)
            .map_err(|e| Error::io("write", tmp.path(), e))?;
        if replace {
            tmp.persist(&path)
                .map_err(|e| Error::io("write", &path, e.error))?;
            return Ok(true);
        }
        publish_temp(tmp, &path, !created && self.sweep_due())
    }

    fn write(&self, name: &str, bytes: &[u8]) -> Result<()> {
        self.write_parts(name, &[bytes])
    }

    fn write_parts(&self, name: &str, parts: &[&[u8]]) -> Result<()> {
        check_name(name)?;
        let path = self.root.join(name);
        let (tmp, _) = self.temp_with(&path, parts)?;
        tmp.persist(&path)
            .map_err(|e| Error::io("write", path, e.error))?;
        Ok(())
    }

    fn list_meta(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let start = if prefix.is_empty() {
            self.root.clone()
        } else {
            check_name(prefix)?;
            self.root.join(prefix)
        };
        let mut found = Vec::new();
        // A temporary file is a write going on: neither listed nor entered.
        let walk = walkdir::WalkDir::new(&start)
            .min_depth(1)
            .into_iter()
            .filter_entry(|e| !crate::layout::is_temp_file(&e.file_name().to_string_lossy()));
        for entry in walk {
            let entry = match entry {
                Ok(entry) => entry,
                // No such folder, or removed while listing (another
                // process's cleanup).
                Err(e) if e.io_error().is_some_and(absent) => continue,
                Err(e) => {
                    let path = e.path().unwrap_or(&start).to_path_buf();
                    return Err(Error::io("list", path, e.into()));
                }
            };
            if entry.file_type().is_dir() {
                continue;
            }
            let meta = match entry.metadata() {
                Ok(meta) => meta,
                Err(e) if e.io_error().is_some_and(absent) => continue,
                Err(e) => return Err(Error::io("list", entry.path(), e.into())),
            };
            if let Ok(rel) = entry.path().strip_prefix(&self.root) {
                let parts: Vec<_> = rel.iter().map(|p| p.to_string_lossy()).collect();
                found.push(ObjectMeta {
                    name: parts.join("/"),
                    size: meta.len(),
                    disk: on_disk(&meta),
                    modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                });
            }
        }
        found.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(found)
    }

    fn touch(&self, name: &str) -> Result<()> {
        check_name(name)?;
        self.with_path(name, |path| match File::open(path) {
            Ok(file) => {
                let _ = file.set_modified(SystemTime::now());
                Ok(())
            }
            Err(e) if absent(&e) => Ok(()),
            Err(e) => Err(Error::io("open", path, e)),
        })
    }

    fn delete(&self, name: &str) -> Result<()> {
        check_name(name)?;
        self.with_path(name, |path| match fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if absent(&e) => Ok(()),
            Err(e) => Err(Error::io("delete", path, e)),
        })
    }

    fn delete_prefix(&self, prefix: &str) -> Result<()> {
        check_name(prefix)?;
        let path = self.root.join(prefix);
        let result = if path.is_dir() {
            remove_tree(&path, SystemTime::now())
        } else {
            fs::remove_file(&path).map_err(|e| (path.clone(), e))
        };
        match result {
            Ok(()) => Ok(()),
            Err((_, e)) if absent(&e) => Ok(()),
            Err((path, e)) => Err(Error::io("delete", path, e)),
        }
    }

    fn prune(&self, folder: &str) -> Result<()> {
        check_name(folder)?;
        let dir = self.root.join(folder);
        prune_folder(&dir).map_err(|e| Error::io("delete", dir, e))
    }

    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn generation(&self) -> u64 {
        self.created_folders.load(Ordering::Relaxed)
    }

    fn lock(&self, name: &str, timeout: Option<Duration>) -> Result<LockOutcome> {
        check_name(name)?;
        let path = self.root.join(name);
        #[cfg(target_os = "linux")]
        if let Some(offset) = key_lock_offset(name) {
            let shard = path.parent().unwrap_or(&self.root);
            let make_dir = |dir: &Path| -> io::Result<()> {
                self.created_folders.fetch_add(1, Ordering::Relaxed);
                self.ensure_root().map_err(io::Error::other)?;
                make_folders(dir)
            };
            return match self.ranges.lock(shard, offset, timeout, &make_dir) {
                Ok(Some(lock)) => Ok(LockOutcome::Held(StoreLock::new(lock))),
                Ok(None) => Ok(LockOutcome::TimedOut),
                Err(e) => Err(Error::io("lock", shard.join(super::ranges::RANGES_FILE), e)),
            };
        }
        let open = || {
            fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
        };
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            // Folders are made only when missing: the common case costs one
            // open.
            let file = match open() {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.created_folders.fetch_add(1, Ordering::Relaxed);
                    self.ensure_root()?;
                    if let Some(dir) = path.parent() {
                        make_folders(dir).map_err(|e| Error::io("create folder", dir, e))?;
                    }
                    open().map_err(|e| Error::io("open the lock", &path, e))?
                }
                Err(e) => return Err(Error::io("open the lock", &path, e)),
            };
            match deadline {
                None => file.lock().map_err(|e| Error::io("lock", &path, e))?,
                Some(deadline) => loop {
                    match file.try_lock() {
                        Ok(()) => break,
                        Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        Err(TryLockError::WouldBlock) => return Ok(LockOutcome::TimedOut),
                        Err(TryLockError::Error(e)) => return Err(Error::io("lock", &path, e)),
                    }
                },
            }
            // A holder removes the file before it unlocks: if the name now
            // names another file (or none), this lock is on a removed file
            // and means nothing. Take the lock of the file that is there.
            if same_file(&file, &path) {
                return Ok(LockOutcome::Held(StoreLock::new(LocalLock { file, path })));
            }
        }
    }

    fn sweep(&self, age: Duration) -> Result<u64> {
        let now = SystemTime::now();
        let old = |meta: &fs::Metadata| {
            meta.modified()
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .is_some_and(|d| d >= age)
        };
        let mut removed = 0;
        // What cannot be read is skipped: a sweep is best effort.
        let walk = walkdir::WalkDir::new(&self.root).min_depth(1).into_iter();
        for entry in walk.filter_map(|entry| entry.ok()) {
            if entry.file_type().is_dir() {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            let path = entry.path();
            let name = entry.file_name().to_string_lossy();
            if crate::layout::is_temp_file(&name) && old(&meta) {
                if fs::remove_file(path).is_ok() {
                    removed += 1;
                }
            } else if crate::layout::is_lock_file(&name) && old(&meta) {
                // Only a lock nobody holds; removed while holding it, as
                // a holder does.
                if let Ok(file) = File::open(path) {
                    if file.try_lock().is_ok()
                        && same_file(&file, path)
                        && fs::remove_file(path).is_ok()
                    {
                        removed += 1;
                    }
                }
            }
        }
        Ok(removed)
    }
}

/// How many times a write makes its folders again when they vanish under
/// it (each time, a clear removed them in between).
const FOLDER_ATTEMPTS: u32 = 16;

/// What a file takes on the disk: its allocated blocks (`st_blocks` × 512
/// on Unix), which for small files is far more than its length (a 200-byte
/// entry takes a whole 4 KiB block on ext4). Elsewhere, its length.
pub(crate) fn on_disk(meta: &fs::Metadata) -> u64 {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        meta.blocks() * 512
    }
    #[cfg(not(unix))]
    {
        meta.len()
    }
}

/// The block size of the file system under `path` (`st_blksize`; 4096 when
/// unknown), by which a new file's disk size is estimated.
pub(crate) fn block_size(path: &Path) -> u64 {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let Ok(meta) = fs::metadata(path) {
            return meta.blksize().max(512);
        }
    }
    let _ = path;
    4096
}

/// `fs::create_dir_all` for folders that a clear may remove at any time:
/// `create_dir_all` fails with `NotFound` when a parent goes between its
/// steps, and with `AlreadyExists` when the folder was made by another and
/// removed again before it looked. Both are tried again, a few times.
pub(crate) fn make_folders(dir: &Path) -> io::Result<()> {
    let mut attempts = 0;
    loop {
        match fs::create_dir_all(dir) {
            Ok(()) => return Ok(()),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::AlreadyExists
                ) && attempts < FOLDER_ATTEMPTS =>
            {
                attempts += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Is this the error of a folder that is not empty (something was written
/// in it meanwhile)?
fn filled(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::DirectoryNotEmpty
}

/// Removes the folder `dir` with everything that was in it when the walk
/// listed it; what another thread or process writes there meanwhile may
/// stay (and then so does its folder): a folder that filled up under the
/// removal is no error, and neither is a file already gone. Temporary files
/// of writes still going on (younger than [`LEFTOVER_AGE`] at `started`) are
/// left to their writers, which publish them: a clear does not make a
/// concurrent write fail. Locks in use (a `.keys` with a locked key, a held
/// lock file) stay too, so that a clear never lets two holders in.
fn remove_tree(dir: &Path, started: SystemTime) -> std::result::Result<(), (PathBuf, io::Error)> {
    let listing = match fs::read_dir(dir) {
        Ok(listing) => listing,
        Err(e) if absent(&e) => return Ok(()),
        Err(e) => return Err((dir.to_path_buf(), e)),
    };
    for entry in listing {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) if absent(&e) => continue,
            Err(e) => return Err((dir.to_path_buf(), e)),
        };
        let path = entry.path();
        let kind = match entry.file_type() {
            Ok(kind) => kind,
            Err(e) if absent(&e) => continue,
            Err(e) => return Err((path, e)),
        };
        if kind.is_dir() {
            remove_tree(&path, started)?;
            continue;
        }
        let name = entry.file_name();
        let name = name.to_string_lossy();
        // A shard's `.keys` goes only while no key of it is locked, and a
        // lock file only while nobody holds it (removed under its lock, as
        // its holder does): a holder must never find its lock on a removed
        // file while another takes the same lock on a new one.
        if is_keys(&entry.file_name()) {
            remove_keys(dir).map_err(|e| (path.clone(), e))?;
            continue;
        }
        if crate::layout::is_lock_file(&name) {
            if let Ok(file) = File::open(&path) {
                if file.try_lock().is_ok() && same_file(&file, &path) {
                    match fs::remove_file(&path) {
                        Ok(()) => {}
                        Err(e) if absent(&e) => {}
                        Err(e) => return Err((path, e)),
                    }
                }
            }
            continue;
        }
        if crate::layout::is_temp_file(&name) {
            let young = entry
                .metadata()
                .and_then(|m| m.modified())
                .map(|m| started.duration_since(m).unwrap_or(Duration::ZERO) < LEFTOVER_AGE)
                .unwrap_or(false);
            if young {
                continue;
            }
        }
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if absent(&e) => {}
            Err(e) => return Err((path, e)),
        }
    }
    match fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if absent(&e) || filled(&e) => Ok(()),
        Err(e) => Err((dir.to_path_buf(), e)),
    }
}

/// Removes the folder `dir` if nothing is left in it but its `.keys`, and
/// that only when no key of it is locked (see `ranges`): a lock holder
/// keeps its file. A waiter that then locks the removed file finds it gone
/// and locks the one made next, as after a clear.
fn prune_folder(dir: &Path) -> io::Result<()> {
    let listing = match fs::read_dir(dir) {
        Ok(listing) => listing,
        Err(e) if absent(&e) => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut keys = false;
    for entry in listing {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) if absent(&e) => continue,
            Err(e) => return Err(e),
        };
        if !is_keys(&entry.file_name()) {
            // Something else is here: the folder stays.
            return Ok(());
        }
        keys = true;
    }
    if keys && !remove_keys(dir)? {
        return Ok(());
    }
    match fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if absent(&e) || filled(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Is `name` a shard's `.keys` (the key locks on Linux)?
fn is_keys(name: &std::ffi::OsStr) -> bool {
    #[cfg(target_os = "linux")]
    {
        name == super::ranges::RANGES_FILE
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = name;
        false
    }
}

/// Removes `dir`'s `.keys` unless a key of it is locked (`Ok(false)`).
fn remove_keys(dir: &Path) -> io::Result<bool> {
    #[cfg(target_os = "linux")]
    {
        super::ranges::remove_unlocked(dir)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = dir;
        Ok(true)
    }
}

/// One publish in this many sweeps its folder.
const SWEEP_EVERY: u64 = 1024;

/// Temporary files older than this, in a folder being written, are
/// leftovers of a killed writer.
pub(crate) const LEFTOVER_AGE: Duration = Duration::from_secs(60);

/// Removes the temporary files older than `age` in one folder.
fn sweep_folder(dir: &Path, age: Duration) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let now = SystemTime::now();
    for entry in entries.flatten() {
        if !crate::layout::is_temp_file(&entry.file_name().to_string_lossy()) {
            continue;
        }
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .is_some_and(|d| d >= age);
        if old {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// A held lock file: removed, then unlocked, when dropped.
struct LocalLock {
    file: File,
    path: PathBuf,
}

impl Drop for LocalLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
        let _ = self.file.unlock();
    }
}

#[cfg(target_os = "linux")]
use crate::layout::key_lock_offset;

/// Is the open `file` the one at `path` now?
fn same_file(file: &File, path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (file.metadata(), fs::metadata(path)) {
            (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = file;
        path.exists()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_cover_the_bytes_in_order_and_end_on_multiples_of_the_piece() {
        let bytes: Vec<u8> = (0..3 * WRITE_PIECE + 1234).map(|i| i as u8).collect();
        for start in [
            0,
            1,
            320,
            WRITE_PIECE as u64 - 1,
            WRITE_PIECE as u64,
            5 << 20,
        ] {
            let mut seen = Vec::new();
            let mut offsets = Vec::new();
            let end = in_pieces(&bytes, start, |piece, at| {
                offsets.push((at, piece.len()));
                seen.extend_from_slice(piece);
                Ok(())
            })
            .unwrap();
            assert_eq!(seen, bytes, "from {start}");
            assert_eq!(end, start + bytes.len() as u64);
            let mut next = start;
            for (i, &(at, len)) in offsets.iter().enumerate() {
                assert_eq!(at, next, "from {start}: piece {i} follows the previous one");
                assert!(len > 0 && len <= WRITE_PIECE);
                if i + 1 < offsets.len() {
                    let piece_end = at + len as u64;
                    assert_eq!(piece_end % WRITE_PIECE as u64, 0, "from {start}: piece {i}");
                }
                next = at + len as u64;
            }
        }
        let mut calls = 0;
        let end = in_pieces(&[], 77, |_, _| {
            calls += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!((end, calls), (77, 0), "nothing to write: no call");
    }

    #[test]
    fn a_failed_piece_stops_the_write_with_its_error() {
        let bytes = vec![0u8; 4 * WRITE_PIECE];
        let mut calls = 0;
        let err = in_pieces(&bytes, 0, |_, _| {
            calls += 1;
            if calls == 2 {
                Err(io::Error::other("disk full"))
            } else {
                Ok(())
            }
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "disk full");
        assert_eq!(calls, 2);
    }

    #[cfg(unix)]
    #[test]
    fn a_computed_object_of_many_pieces_is_published_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        // Of a few pieces, and large enough for the writer to get help on
        // Linux (see `ahead`).
        for tail_len in [5 * WRITE_PIECE + 77, 40 * WRITE_PIECE + 77] {
            let folder = format!("{tail_len}");
            publish_a_computed_object(&store, &folder, tail_len);
        }
    }

    #[cfg(unix)]
    fn publish_a_computed_object(store: &LocalStore, folder: &str, tail_len: usize) {
        let tail: Vec<u8> = (0..tail_len).map(|i| (i % 251) as u8).collect();
        let end = b"the end".to_vec();
        let head_len = 320;
        let head = || {
            // What a checksum would be computed from: the tail itself.
            let mut head = vec![0u8; head_len];
            head[..32].copy_from_slice(blake3::hash(&tail).as_bytes());
            head
        };
        let (b, c) = (format!("{folder}/b.bin"), format!("{folder}/c.bin"));
        for (name, replace) in [(b.as_str(), false), (c.as_str(), true)] {
            assert!(store
                .publish_computed(name, head_len, &tail, &end, &head, replace)
                .unwrap());
            let mut stored = Vec::new();
            assert!(store.read(name, &mut stored).unwrap());
            assert_eq!(stored, [head(), tail.clone(), end.clone()].concat());
        }
        // Published if absent: the second one is not written.
        let other = || vec![1u8; head_len];
        assert!(!store
            .publish_computed(&b, head_len, &tail, &end, &other, false)
            .unwrap());
        let mut stored = Vec::new();
        assert!(store.read(&b, &mut stored).unwrap());
        assert_eq!(&stored[..head_len], &head()[..]);
    }
}
