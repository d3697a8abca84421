//! A near cache: a local folder in front of a far store (a bucket).
//!
//! Why: a hit from a bucket costs a round trip and a download, on every
//! call of every process. With a near cache, a result read from the far
//! store once is kept on the local disk, and later hits (in this process or
//! the next) are local-disk fast, mapped results included.
//!
//! What it promises:
//! - **Nothing unverified is copied down.** A read from the far store is
//!   served to the caller as it came, and the caller (`Memory`'s read path)
//!   verifies it: its length, key, checksum, and signature when a signing
//!   key is set. Only then does the caller call [`Store::verified`], and
//!   only then is the object copied into the near folder. A damaged or
//!   foreign object in the bucket is refused by the caller and never kept.
//! - **The far store is the truth.** Writes go to the far store first:
//!   create-only publication there decides which of two machines' results
//!   is kept, and the near folder gets the winner's (ours only when ours
//!   was published; otherwise the next read copies the stored one down).
//!   When the far store cannot be reached, the near folder still gets the
//!   result, so this machine keeps its own work through an outage.
//! - Listing, locks, generations and deletions are the far store's
//!   (deletions also reach the near folder): management of a shared
//!   location sees the bucket.
//! - **A near hit is a use of the far object.** A read or an open served
//!   by the near folder [touches](Store::touch) the far object, so that
//!   eviction of the far store (least recently used first) sees the
//!   machines that read it from their near folders. For an S3 store a
//!   touch costs no request: the store notes it in memory and writes its
//!   notes to the bucket once a minute (see the `s3` module's "Last
//!   access"). A far store in a local folder sets the file's time: a
//!   system call per near hit.
//! - **Bounded.** The near folder has its own size limit (on the disk, in
//!   blocks); past it, its least recently used objects go (they remain in
//!   the far store).

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::{LocalStore, LockOutcome, ObjectMeta, Opened, Store};
use crate::error::Result;
use crate::evict::{self, Inventory, Limits};

thread_local! {
    /// Did this thread's last [`NearCache::read`] come from the far store?
    /// (The caller verifies a read on the thread that made it.)
    static FROM_FAR: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The near folder's size limit unless another is given: 10 GiB on disk.
pub const DEFAULT_NEAR_LIMIT: u64 = 10 << 30;

/// A far store with a local folder in front of it. See the module docs.
///
/// ```
/// use memento::store::{LocalStore, NearCache, Store};
/// let (near, far) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
/// let store = NearCache::new(near.path(), LocalStore::new(far.path()));
/// assert!(store.publish("f/a.bin", b"hello").unwrap());
/// // Written to both.
/// assert!(near.path().join("f/a.bin").exists() && far.path().join("f/a.bin").exists());
/// ```
pub struct NearCache {
    near: LocalStore,
    far: Arc<dyn Store>,
    limit: u64,
    /// Bytes written to the near folder since it was last measured.
    added: AtomicU64,
    /// What the near folder held when last measured (`None`: not yet).
    measured: Mutex<Option<u64>>,
}

impl std::fmt::Debug for NearCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NearCache")
            .field("near", &self.near.location())
            .field("far", &self.far)
            .field("limit", &self.limit)
            .finish()
    }
}

impl NearCache {
    /// `far` behind the local folder `near` (created on the first write),
    /// with the default size limit ([`DEFAULT_NEAR_LIMIT`]).
    pub fn new(near: impl Into<PathBuf>, far: impl Store) -> NearCache {
        NearCache::over(near, Arc::new(far))
    }

    /// [`new`](NearCache::new) over a shared far store.
    pub fn over(near: impl Into<PathBuf>, far: Arc<dyn Store>) -> NearCache {
        NearCache {
            near: LocalStore::new(near.into()),
            far,
            limit: DEFAULT_NEAR_LIMIT,
            added: AtomicU64::new(0),
            measured: Mutex::new(None),
        }
    }

    /// Keeps the near folder under `bytes` on the disk: past it, its least
    /// recently used objects are removed from it (not from the far store).
    ///
    /// ```
    /// # let (near, far) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    /// use memento::store::{LocalStore, NearCache};
    /// let store = NearCache::new(near.path(), LocalStore::new(far.path())).limit(1 << 30);
    /// assert_eq!(store.near_limit(), 1 << 30);
    /// ```
    pub fn limit(mut self, bytes: u64) -> NearCache {
        self.limit = bytes;
        self
    }

    /// The near folder's size limit.
    pub fn near_limit(&self) -> u64 {
        self.limit
    }

    /// The near folder.
    pub fn near_path(&self) -> &Path {
        self.near.root()
    }

    /// The far store.
    pub fn far(&self) -> &dyn Store {
        &*self.far
    }

    /// Puts a copy of `name` in the near folder; a failure only costs a
    /// later far read.
    fn keep_near(&self, name: &str, bytes: &[u8]) {
        match self.near.publish(name, bytes) {
            Ok(true) => self.grew(bytes.len() as u64),
            Ok(false) => {}
            Err(e) => tracing::debug!("near cache: {e}"),
        }
    }

    /// Counts `bytes` written to the near folder, and trims it when it
    /// may be past its limit.
    fn grew(&self, bytes: u64) {
        let block = super::block_size(self.near.root()).max(1);
        let on_disk = bytes.div_ceil(block) * block;
        let added = self.added.fetch_add(on_disk, Ordering::Relaxed) + on_disk;
        let mut measured = self.measured.lock().unwrap_or_else(|e| e.into_inner());
        let over = match *measured {
            Some(held) => held + added > self.limit,
            None => true,
        };
        if !over {
            return;
        }
        self.added.store(0, Ordering::Relaxed);
        match self.trim() {
            Ok(held) => *measured = Some(held),
            Err(e) => tracing::debug!("near cache: {e}"),
        }
    }

    /// Removes the near folder's least recently used objects until it
    /// holds at most 90% of its limit; returns what it holds then.
    fn trim(&self) -> Result<u64> {
        let inventory = Inventory::scan(&self.near)?;
        let limits = Limits {
            bytes: Some(self.limit),
            ..Limits::default()
        };
        let victims = inventory.victims(&limits, 0.9, SystemTime::now());
        let (_, freed, first_error) = evict::remove_entries(&self.near, &victims, &|| {});
        if let Some(e) = first_error {
            return Err(e);
        }
        Ok(inventory.bytes().saturating_sub(freed))
    }
}

impl Store for NearCache {
    fn read(&self, name: &str, out: &mut Vec<u8>) -> Result<bool> {
        FROM_FAR.with(|far| far.set(false));
        if matches!(self.near.read(name, out), Ok(true)) {
            let _ = self.far.touch(name);
            return Ok(true);
        }
        // Served as it came; copied down once the caller verified it.
        let found = self.far.read(name, out)?;
        FROM_FAR.with(|far| far.set(found));
        Ok(found)
    }

    fn verified(&self, name: &str, bytes: &[u8]) {
        // Only what this thread's last read brought from the far store: a
        // near hit needs no copy.
        if FROM_FAR.with(|far| far.replace(false)) {
            self.keep_near(name, bytes);
        }
    }

    fn peek(&self, name: &str, out: &mut Vec<u8>) -> Result<bool> {
        if matches!(self.near.peek(name, out), Ok(true)) {
            return Ok(true);
        }
        self.far.peek(name, out)
    }

    fn open_file(&self, name: &str) -> Result<Opened> {
        match self.near.open_file(name) {
            Ok(Opened::File(file, len)) => {
                let _ = self.far.touch(name);
                Ok(Opened::File(file, len))
            }
            // Not here: the caller reads it from the far store.
            _ => Ok(Opened::Unsupported),
        }
    }

    fn read_range(&self, name: &str, range: Range<u64>, out: &mut Vec<u8>) -> Result<bool> {
        if matches!(self.near.read_range(name, range.clone(), out), Ok(true)) {
            return Ok(true);
        }
        self.far.read_range(name, range, out)
    }

    fn publish(&self, name: &str, bytes: &[u8]) -> Result<bool> {
        self.publish_parts(name, &[bytes])
    }

    fn publish_parts(&self, name: &str, parts: &[&[u8]]) -> Result<bool> {
        match self.far.publish_parts(name, parts) {
            Ok(true) => {
                self.keep_near(name, &parts.concat());
                Ok(true)
            }
            // Another machine's is there: the next read copies it down.
            Ok(false) => Ok(false),
            Err(e) => {
                // The far store is out of reach: keep ours near, and say so.
                self.keep_near(name, &parts.concat());
                Err(e)
            }
        }
    }

    fn write(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let far = self.far.write(name, bytes);
        if let Err(e) = self.near.write(name, bytes) {
            tracing::debug!("near cache: {e}");
        } else {
            self.grew(bytes.len() as u64);
        }
        far
    }

    fn write_parts(&self, name: &str, parts: &[&[u8]]) -> Result<()> {
        self.write(name, &parts.concat())
    }

    fn list_meta(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        self.far.list_meta(prefix)
    }

    fn touch(&self, name: &str) -> Result<()> {
        let _ = self.near.touch(name);
        self.far.touch(name)
    }

    fn delete(&self, name: &str) -> Result<()> {
        let _ = self.near.delete(name);
        self.far.delete(name)
    }

    fn delete_prefix(&self, prefix: &str) -> Result<()> {
        let _ = self.near.delete_prefix(prefix);
        self.far.delete_prefix(prefix)
    }

    fn prune(&self, folder: &str) -> Result<()> {
        let _ = self.near.prune(folder);
        self.far.prune(folder)
    }

    fn location(&self) -> String {
        self.far.location()
    }

    fn generation(&self) -> u64 {
        self.far.generation()
    }

    fn lock(&self, name: &str, timeout: Option<Duration>) -> Result<LockOutcome> {
        self.far.lock(name, timeout)
    }

    fn sweep(&self, age: Duration) -> Result<u64> {
        let _ = self.near.sweep(age);
        self.far.sweep(age)
    }

    fn is_remote(&self) -> bool {
        self.far.is_remote()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (tempfile::TempDir, tempfile::TempDir, NearCache) {
        let near = tempfile::tempdir().unwrap();
        let far = tempfile::tempdir().unwrap();
        let store = NearCache::new(near.path(), LocalStore::new(far.path()));
        (near, far, store)
    }

    #[test]
    fn a_far_object_is_copied_down_only_once_verified() {
        let (near, far, store) = pair();
        LocalStore::new(far.path())
            .write("f/a.bin", b"far")
            .unwrap();
        let mut buf = Vec::new();
        assert!(store.read("f/a.bin", &mut buf).unwrap());
        assert_eq!(buf, b"far");
        assert!(!near.path().join("f/a.bin").exists(), "not before verified");
        store.verified("f/a.bin", &buf);
        assert_eq!(std::fs::read(near.path().join("f/a.bin")).unwrap(), b"far");
        // Later reads are near: the far copy is no longer needed.
        std::fs::remove_file(far.path().join("f/a.bin")).unwrap();
        assert!(store.read("f/a.bin", &mut buf).unwrap());
        assert_eq!(buf, b"far");
    }

    #[test]
    fn the_far_store_decides_which_result_is_kept() {
        let (near, far, store) = pair();
        LocalStore::new(far.path())
            .write("f/a.bin", b"theirs")
            .unwrap();
        assert!(!store.publish("f/a.bin", b"ours").unwrap());
        assert!(!near.path().join("f/a.bin").exists(), "ours was not kept");
        let mut buf = Vec::new();
        assert!(store.read("f/a.bin", &mut buf).unwrap());
        assert_eq!(buf, b"theirs");
    }

    #[test]
    fn an_unreachable_far_store_still_leaves_the_result_near() {
        let near = tempfile::tempdir().unwrap();
        let blocker = tempfile::NamedTempFile::new().unwrap();
        // A "folder" below a file: every write fails.
        let store = NearCache::new(near.path(), LocalStore::new(blocker.path().join("far")));
        assert!(store.publish("f/a.bin", b"ours").is_err());
        assert_eq!(std::fs::read(near.path().join("f/a.bin")).unwrap(), b"ours");
    }

    #[test]
    fn the_near_folder_stays_under_its_limit() {
        let near = tempfile::tempdir().unwrap();
        let far = tempfile::tempdir().unwrap();
        let block = super::super::block_size(near.path()).max(1);
        let store = NearCache::new(near.path(), LocalStore::new(far.path())).limit(10 * block);
        for i in 0..40 {
            let name = format!("f/ab/{:062x}.bin", i);
            store.publish(&name, &[i as u8; 100]).unwrap();
        }
        let held = Inventory::scan(&LocalStore::new(near.path())).unwrap();
        assert!(
            held.bytes() <= 10 * block,
            "{} > {}",
            held.bytes(),
            10 * block
        );
        let all = Inventory::scan(&LocalStore::new(far.path())).unwrap();
        assert_eq!(all.items(), 40, "the far store keeps everything");
    }

    #[test]
    fn a_near_hit_touches_the_far_object() {
        let (near, far, store) = pair();
        store.publish("f/a.bin", b"x").unwrap();
        let long_ago = SystemTime::now() - Duration::from_secs(3600);
        let set = |root: &Path| {
            std::fs::File::options()
                .write(true)
                .open(root.join("f/a.bin"))
                .unwrap()
                .set_modified(long_ago)
                .unwrap()
        };
        let far_time = || {
            std::fs::metadata(far.path().join("f/a.bin"))
                .unwrap()
                .modified()
                .unwrap()
        };
        for open in [false, true] {
            set(near.path());
            set(far.path());
            if open {
                assert!(matches!(store.open_file("f/a.bin"), Ok(Opened::File(..))));
            } else {
                let mut buf = Vec::new();
                assert!(store.read("f/a.bin", &mut buf).unwrap());
            }
            let since = SystemTime::now().duration_since(far_time()).unwrap();
            assert!(since < Duration::from_secs(60), "open {open}: {since:?}");
        }
    }

    #[test]
    fn deletions_reach_both() {
        let (near, far, store) = pair();
        store.publish("f/a.bin", b"x").unwrap();
        store.delete("f/a.bin").unwrap();
        assert!(!near.path().join("f/a.bin").exists());
        assert!(!far.path().join("f/a.bin").exists());
    }
}
