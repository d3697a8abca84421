//! Per-key locks as byte ranges of one file per shard folder (Linux).
//!
//! A per-key lock file costs a miss an inode created and removed, the
//! dearest metadata operations of a file system. Here the keys of a shard
//! folder (`<function folder>/ab/`) share one file, `.keys`, kept open by
//! the store; a key locks the one byte at an offset taken from its hex name
//! with an open-file-description lock (`F_OFD_SETLKW`): one `fcntl` to lock,
//! one to unlock. Like `flock`, such locks belong to the open file, are
//! released by the kernel when their process dies, and are byte-range locks
//! over NFS. Unlike a lock file, `.keys` is never removed by its users; if
//! something else removes it (`clear` removes whole folders), a lock taken
//! on the removed file is dropped and taken again on the file now there.
//! A shard folder emptied by an eviction or a function's clear loses its
//! `.keys` only while no byte of it is locked ([`remove_unlocked`] holds the
//! whole file meanwhile), so no holder is left with a lock on a removed
//! file while another locks the same key on the new one.
//!
//! Threads of one process share the open file, so two of them would both
//! hold one range: the in-process flights (`memory/once.rs`) make sure only
//! one thread per key asks.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The file of a shard folder whose bytes are its keys' locks.
pub(super) use crate::layout::SHARD_LOCKS as RANGES_FILE;

/// The open `.keys` files of one store, by shard folder.
#[derive(Debug, Default)]
pub(super) struct Ranges {
    /// Each open file with its (device, inode), read once when opened.
    open: Mutex<HashMap<PathBuf, Opened>>,
}

/// An open `.keys` and its (device, inode).
type Opened = (Arc<File>, (u64, u64));

/// A held range: unlocked when dropped.
pub(super) struct RangeLock {
    file: Arc<File>,
    offset: i64,
}

impl Drop for RangeLock {
    fn drop(&mut self) {
        let _ = fcntl_lock(&self.file, self.offset, libc::F_UNLCK as i16, false);
    }
}

/// Removes `shard`'s `.keys` if no byte of it is locked (taken: the whole
/// file, without waiting, held while the file is removed). `Ok(false)`:
/// some key is locked, the file stays.
pub(super) fn remove_unlocked(shard: &Path) -> io::Result<bool> {
    let path = shard.join(RANGES_FILE);
    let file = match fs::OpenOptions::new().read(true).write(true).open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(true),
        Err(e) => return Err(e),
    };
    // Length 0: from the offset to the end of any file, the whole range.
    if !fcntl_range(&file, 0, 0, libc::F_WRLCK as i16, false)? {
        return Ok(false);
    }
    let removed = match fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(e),
    };
    let _ = fcntl_range(&file, 0, 0, libc::F_UNLCK as i16, false);
    removed
}

fn fcntl_lock(file: &File, offset: i64, kind: i16, wait: bool) -> io::Result<bool> {
    fcntl_range(file, offset, 1, kind, wait)
}

fn fcntl_range(file: &File, offset: i64, len: i64, kind: i16, wait: bool) -> io::Result<bool> {
    // SAFETY: a zeroed `flock` is valid; the fields set below are what
    // F_OFD_* requires (l_pid must be 0).
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = kind;
    lock.l_whence = libc::SEEK_SET as i16;
    lock.l_start = offset;
    lock.l_len = len;
    let cmd = if wait {
        libc::F_OFD_SETLKW
    } else {
        libc::F_OFD_SETLK
    };
    loop {
        // SAFETY: `lock` outlives the call; the descriptor is open.
        let r = unsafe { libc::fcntl(file.as_raw_fd(), cmd, &lock) };
        if r == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) | Some(libc::EACCES) if !wait => return Ok(false),
            _ => return Err(e),
        }
    }
}

/// (device, inode) of a file's metadata.
fn identity(meta: &fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

/// Does `path` name the file of identity `id` now?
fn still_there(id: (u64, u64), path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| identity(&m) == id)
}

impl Ranges {
    /// The open `.keys` of `shard`, opened (and the folder made, by
    /// `make_dir`) when needed.
    fn file(&self, shard: &Path, make_dir: &dyn Fn(&Path) -> io::Result<()>) -> io::Result<Opened> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(found) = open.get(shard) {
            return Ok(found.clone());
        }
        let path = shard.join(RANGES_FILE);
        let opener = || {
            fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
        };
        // A clear may remove the folder between its making and the open.
        let mut attempts = 0;
        let file = loop {
            match opener() {
                Ok(f) => break f,
                Err(e) if e.kind() == io::ErrorKind::NotFound && attempts < 16 => {
                    attempts += 1;
                    match make_dir(shard) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => return Err(e),
            }
        };
        let id = identity(&file.metadata()?);
        let file = Arc::new(file);
        open.insert(shard.to_path_buf(), (file.clone(), id));
        Ok((file, id))
    }

    fn forget(&self, shard: &Path) {
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(shard);
    }

    /// Locks byte `offset` of `shard`'s `.keys`, waiting as long as
    /// `timeout` allows (`None`: until it is free). `Ok(None)`: timed out.
    pub(super) fn lock(
        &self,
        shard: &Path,
        offset: i64,
        timeout: Option<Duration>,
        make_dir: &dyn Fn(&Path) -> io::Result<()>,
    ) -> io::Result<Option<RangeLock>> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let path = shard.join(RANGES_FILE);
        loop {
            let (file, id) = self.file(shard, make_dir)?;
            let held = match deadline {
                None => fcntl_lock(&file, offset, libc::F_WRLCK as i16, true)?,
                Some(deadline) => loop {
                    if fcntl_lock(&file, offset, libc::F_WRLCK as i16, false)? {
                        break true;
                    }
                    if Instant::now() >= deadline {
                        break false;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                },
            };
            if !held {
                return Ok(None);
            }
            let lock = RangeLock { file, offset };
            if still_there(id, &path) {
                return Ok(Some(lock));
            }
            // `.keys` was removed (a clear) or replaced: this lock means
            // nothing. Take it on the file that is there now.
            drop(lock);
            self.forget(shard);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_exclude_other_open_files_and_are_released() {
        let dir = tempfile::tempdir().unwrap();
        let make = |d: &Path| fs::create_dir_all(d);
        let a = Ranges::default();
        let b = Ranges::default(); // another open file: as another process
        let shard = dir.path().join("ab");
        let held = a.lock(&shard, 7, None, &make).unwrap().unwrap();
        // The same byte from another open file: busy.
        let t = Some(Duration::from_millis(30));
        assert!(b.lock(&shard, 7, t, &make).unwrap().is_none());
        // Another byte: free at once.
        assert!(b.lock(&shard, 8, t, &make).unwrap().is_some());
        drop(held);
        assert!(b.lock(&shard, 7, t, &make).unwrap().is_some());
    }

    #[test]
    fn keys_go_only_when_no_key_is_locked() {
        let dir = tempfile::tempdir().unwrap();
        let make = |d: &Path| fs::create_dir_all(d);
        let a = Ranges::default();
        let b = Ranges::default();
        let shard = dir.path().join("ef");
        let held = a.lock(&shard, 1 << 40, None, &make).unwrap().unwrap();
        assert!(!remove_unlocked(&shard).unwrap(), "a key is locked");
        assert!(shard.join(RANGES_FILE).exists());
        drop(held);
        assert!(remove_unlocked(&shard).unwrap());
        assert!(!shard.join(RANGES_FILE).exists());
        // Both open files were of the removed `.keys`: each locks the new
        // one, and they exclude each other there.
        let held = a.lock(&shard, 3, None, &make).unwrap().unwrap();
        let t = Some(Duration::from_millis(30));
        assert!(b.lock(&shard, 3, t, &make).unwrap().is_none());
        drop(held);
        assert!(remove_unlocked(&dir.path().join("none")).unwrap());
    }

    #[test]
    fn a_removed_file_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let make = |d: &Path| fs::create_dir_all(d);
        let a = Ranges::default();
        let b = Ranges::default();
        let shard = dir.path().join("cd");
        let old = a.lock(&shard, 1, None, &make).unwrap().unwrap();
        drop(old);
        // `b` opens the file, then it is removed and made again.
        let (stale, _) = b.file(&shard, &make).unwrap();
        fs::remove_dir_all(&shard).unwrap();
        let held = a.lock(&shard, 1, None, &make).unwrap().unwrap();
        // `b` sees its open file is not the one there now, and takes the
        // lock on the new one: busy, as it must be.
        drop(stale);
        let t = Some(Duration::from_millis(30));
        assert!(b.lock(&shard, 1, t, &make).unwrap().is_none());
        drop(held);
        assert!(b.lock(&shard, 1, t, &make).unwrap().is_some());
    }
}
