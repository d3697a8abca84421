//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::io;
use std::sync::{Arc, Mutex};

/// Collects what `tracing` prints while `f` runs on this thread.
pub fn capture_logs<R>(f: impl FnOnce() -> R) -> (R, String) {
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .without_time()
        .with_writer(move || writer.clone())
        .finish();
    let r = tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8_lossy(&buf.0.lock().unwrap()).into_owned();
    (r, text)
}

/// Number of lines at `level` ("WARN", "ERROR", ...).
pub fn count(logs: &str, level: &str) -> usize {
    logs.lines()
        .filter(|l| l.trim_start().starts_with(level))
        .count()
}

/// Is `p` an entry file (`ab/<62 hex>.bin`)?
pub fn is_entry(p: &std::path::Path) -> bool {
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    name.strip_suffix(".bin")
        .is_some_and(|hex| hex.len() == 62 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Every entry file under `root`.
pub fn outputs(root: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found: Vec<std::path::PathBuf> = walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| !e.file_type().is_dir() && is_entry(e.path()))
        .map(walkdir::DirEntry::into_path)
        .collect();
    found.sort();
    found
}

/// The entry file of `key` of `f` in a local `memory`.
pub fn output_path(
    memory: &memento::Memory,
    f: &memento::Function,
    key: &memento::Key,
) -> std::path::PathBuf {
    let hex = key.to_hex();
    memory
        .path()
        .unwrap()
        .join(f.folder())
        .join(&hex[..2])
        .join(format!("{}.bin", &hex[2..]))
}

/// A new, unique folder path under Cargo's temporary folder for tests (not
/// created).
pub fn fresh_dir(name: &str) -> std::path::PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{name}-{}-{nanos}", std::process::id()))
}

/// A local store with test hooks: writes that fail as on a full disk, a
/// count of whole-store listings, reads as slow as a bucket's (and the
/// store saying it is remote), another name.
#[derive(Debug)]
pub struct Hooked {
    pub inner: memento::store::LocalStore,
    pub disk_full: bool,
    pub listings: Arc<std::sync::atomic::AtomicUsize>,
    /// Each read takes this long, and the store says it is remote.
    pub remote_delay: Option<std::time::Duration>,
    /// The name it gives itself, instead of its folder's.
    pub name: Option<String>,
}

impl Hooked {
    pub fn new(dir: &std::path::Path) -> Hooked {
        Hooked {
            inner: memento::store::LocalStore::new(dir),
            disk_full: false,
            listings: Arc::default(),
            remote_delay: None,
            name: None,
        }
    }

    fn round_trip(&self) {
        if let Some(delay) = self.remote_delay {
            std::thread::sleep(delay);
        }
    }

    fn full(&self) -> memento::Result<()> {
        if self.disk_full {
            return Err(memento::Error::Io {
                action: "write",
                path: "full".into(),
                source: io::Error::from(io::ErrorKind::StorageFull),
            });
        }
        Ok(())
    }
}

impl memento::store::Store for Hooked {
    fn read(&self, name: &str, out: &mut Vec<u8>) -> memento::Result<bool> {
        self.round_trip();
        self.inner.read(name, out)
    }
    fn read_range(
        &self,
        name: &str,
        range: std::ops::Range<u64>,
        out: &mut Vec<u8>,
    ) -> memento::Result<bool> {
        self.round_trip();
        self.inner.read_range(name, range, out)
    }
    fn is_remote(&self) -> bool {
        self.remote_delay.is_some()
    }
    fn publish(&self, name: &str, bytes: &[u8]) -> memento::Result<bool> {
        self.full()?;
        self.inner.publish(name, bytes)
    }
    fn write(&self, name: &str, bytes: &[u8]) -> memento::Result<()> {
        self.full()?;
        self.inner.write(name, bytes)
    }
    fn list_meta(&self, prefix: &str) -> memento::Result<Vec<memento::store::ObjectMeta>> {
        if prefix.is_empty() {
            self.listings
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        self.inner.list_meta(prefix)
    }
    fn delete(&self, name: &str) -> memento::Result<()> {
        self.inner.delete(name)
    }
    fn delete_prefix(&self, prefix: &str) -> memento::Result<()> {
        self.inner.delete_prefix(prefix)
    }
    fn location(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.inner.location())
    }
}
