//! A `Memory`'s configuration: where it is (a folder, or any store), its
//! options, how they are read from the environment, and the builder methods
//! that change them. A builder method returns a new `Memory` with its own
//! [`Config`] over the same [`Shared`] state of the location.
//!
//! [`Config`] is read by the other parts through its methods; only the
//! builders here change it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::shared::Shared;
use super::{Inner, Location, Memory, Where, DEFAULT_DIR, MEMENTO_DIR};
use crate::codec;
use crate::error::{Error, Result};
use crate::evict::{self, Limits};
use crate::store::{LocalStore, NearCache, Store, Unavailable, DEFAULT_NEAR_LIMIT};

/// Default bound of the in-memory layer.
const DEFAULT_IN_MEMORY_BYTES: u64 = 64 << 20;

/// One `Memory`'s options.
#[derive(Clone)]
pub(super) struct Config {
    /// The folder of a local cache (`None`: a store given by the user).
    location: Option<PathBuf>,
    in_memory_bytes: u64,
    limits: Limits,
    lock_timeout: Option<Duration>,
    signer: Option<codec::Signer>,
    /// The signing key's [tag](codec::Signer::tag) (0: none): entries of
    /// the in-memory layer verified with another key are not served.
    signer_tag: u64,
    /// Map signed entries asked for as `Mapped` (see `Memory::map_signed`).
    map_signed: bool,
    /// A bucket's store and its near cache.
    remote: Option<Remote>,
}

/// The parts of a remote location's store.
#[derive(Clone)]
struct Remote {
    /// The bucket.
    far: Arc<dyn Store>,
    /// The near cache's folder (`None`: none).
    near: Option<PathBuf>,
    near_limit: u64,
}

impl Config {
    fn new(location: Option<PathBuf>) -> Config {
        Config {
            location,
            remote: None,
            in_memory_bytes: DEFAULT_IN_MEMORY_BYTES,
            limits: Limits::default(),
            lock_timeout: None,
            signer: None,
            signer_tag: 0,
            map_signed: false,
        }
    }

    /// The folder of a local cache.
    #[inline]
    pub(super) fn folder(&self) -> Option<&Path> {
        self.location.as_deref()
    }

    /// The folder whose files hold this Memory's entries under their
    /// names: a local cache's, or the near cache of a remote location (an
    /// entry read from there is a file in it).
    pub(super) fn files(&self) -> Option<&Path> {
        match &self.remote {
            Some(remote) => remote.near.as_deref(),
            None => self.folder(),
        }
    }

    /// Does this Memory use the in-memory layer?
    #[inline]
    pub(super) fn in_memory(&self) -> bool {
        self.in_memory_bytes > 0
    }

    #[inline]
    pub(super) fn limits(&self) -> Limits {
        self.limits
    }

    #[inline]
    pub(super) fn lock_timeout(&self) -> Option<Duration> {
        self.lock_timeout
    }

    #[inline]
    pub(super) fn signer(&self) -> Option<&codec::Signer> {
        self.signer.as_ref()
    }

    #[inline]
    pub(super) fn signer_tag(&self) -> u64 {
        self.signer_tag
    }

    #[inline]
    pub(super) fn map_signed(&self) -> bool {
        self.map_signed
    }

    fn set_signer(&mut self, signer: codec::Signer) {
        self.signer_tag = signer.tag();
        self.signer = Some(signer);
    }
}

impl Memory {
    /// A cache in the folder `location`, created (mode 0700, with a
    /// `.gitignore` holding `*`) on the first write. A relative path is made
    /// absolute now, so a later change of the current directory does not
    /// move the cache.
    ///
    /// A location `s3://bucket/prefix` is a bucket (with the `s3` feature):
    /// see [`Memory::remote`].
    pub fn new(location: impl Into<Location>) -> Memory {
        match location.into().0 {
            Where::Folder(path) => {
                let path = std::path::absolute(&path).unwrap_or(path);
                Memory::build(
                    Arc::new(LocalStore::new(path.clone())),
                    Config::new(Some(path)),
                    true,
                )
            }
            Where::Url(url) => Memory::remote(&url),
        }
    }

    /// A cache in a bucket, `s3://bucket/prefix` (with the `s3` feature),
    /// with a near cache: a local folder in front of it, by default
    /// `<user cache folder>/memento/<bucket>/<prefix>` (`$XDG_CACHE_HOME`,
    /// else `~/.cache`), bounded by [`DEFAULT_NEAR_LIMIT`] (see
    /// [`near_cache`](Memory::near_cache)). Credentials, region and endpoint
    /// come from the standard environment (`AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`,
    /// `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`); for other settings, build the
    /// store yourself and use `Memory::s3` (feature `s3`).
    ///
    /// A location that cannot be used (no bucket in the URL, or a build
    /// without the `s3` feature) is said once, in a warning that says what
    /// to change; calls are then computed and not stored. A bucket that
    /// cannot be reached is a warning once per outage.
    ///
    /// ```no_run
    /// let memory = memento::Memory::new("s3://my-bucket/results");
    /// assert_eq!(memory.location(), "s3://my-bucket/results");
    /// ```
    pub fn remote(url: &str) -> Memory {
        match open_remote(url) {
            Ok(far) => Memory::over_remote(url, far),
            Err(e) => {
                crate::log::warning!("{e}; calls are computed but not stored");
                let store = Unavailable::new(url, e.to_string());
                Memory::build(Arc::new(store), Config::new(None), true)
            }
        }
    }

    /// A cache in the bucket of `store`, an [`S3Store`](crate::store::S3Store)
    /// built with settings of its own (endpoint, region, credentials, lease
    /// length...), with a near cache in front of it as
    /// [`Memory::remote`] has (see [`near_cache`](Memory::near_cache)). Every
    /// Memory of this process on the same bucket and prefix shares its state
    /// (locks, the in-memory layer), as Memories of one folder do.
    ///
    /// ```no_run
    /// use memento::store::S3Store;
    ///
    /// let store = S3Store::builder("s3://results/team-a")
    ///     .endpoint("http://127.0.0.1:9000")
    ///     .allow_http(true)
    ///     .build()?;
    /// let memory = memento::Memory::s3(store).near_cache("/scratch/near");
    /// assert_eq!(memory.location(), "s3://results/team-a");
    /// # Ok::<(), memento::Error>(())
    /// ```
    #[cfg(feature = "s3")]
    pub fn s3(store: crate::store::S3Store) -> Memory {
        let url = store.location();
        Memory::over_remote(&url, Arc::new(store))
    }

    /// A Memory over the remote store `far` of `url`, with the default
    /// near cache in front of it.
    fn over_remote(url: &str, far: Arc<dyn Store>) -> Memory {
        let near = default_near_folder(url);
        let config = Config {
            remote: Some(Remote {
                far: far.clone(),
                near: near.clone(),
                near_limit: DEFAULT_NEAR_LIMIT,
            }),
            ..Config::new(None)
        };
        let store: Arc<dyn Store> = match near {
            Some(dir) => Arc::new(NearCache::over(dir, far)),
            None => far,
        };
        Memory::build(store, config, true)
    }

    /// The default cache: the folder named by `MEMENTO_DIR`, else `.memento`
    /// in the current directory. `#[memento::cache]` without `memory = ..`
    /// uses one such Memory for the whole process.
    ///
    /// Entries are signed with `MEMENTO_KEY` when it is set (see
    /// [`signing_key`](Memory::signing_key)). Limits come from
    /// `MEMENTO_BYTES_LIMIT` (a size such as `10GB`),
    /// `MEMENTO_ITEMS_LIMIT` (a number) and `MEMENTO_AGE_LIMIT` (a duration
    /// such as `30d`); a value that cannot be read is ignored with a warning.
    pub fn from_env() -> Memory {
        let mut memory = match std::env::var_os(MEMENTO_DIR) {
            Some(dir) if !dir.is_empty() => Memory::new(dir),
            _ => Memory::new(DEFAULT_DIR),
        };
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let warn = |name: &str, e: Error| {
            crate::log::warning!("{name}: {e}; the limit is not applied");
        };
        memory = memory.with_env_signer();
        if let Some(v) = var("MEMENTO_BYTES_LIMIT") {
            match evict::parse_size(&v) {
                Ok(n) => memory = memory.bytes_limit(n),
                Err(e) => warn("MEMENTO_BYTES_LIMIT", e),
            }
        }
        if let Some(v) = var("MEMENTO_ITEMS_LIMIT") {
            match v.trim().parse::<u64>() {
                Ok(n) => memory = memory.items_limit(n),
                Err(_) => warn(
                    "MEMENTO_ITEMS_LIMIT",
                    Error::Option {
                        option: "number of items",
                        value: v,
                        expected: "a whole number such as 10000".into(),
                    },
                ),
            }
        }
        if let Some(v) = var("MEMENTO_AGE_LIMIT") {
            match evict::parse_duration(&v) {
                Ok(d) => memory = memory.age_limit(d),
                Err(e) => warn("MEMENTO_AGE_LIMIT", e),
            }
        }
        memory
    }

    /// A cache kept by another [`Store`] backend.
    ///
    /// ```
    /// use memento::store::LocalStore;
    /// let dir = tempfile::tempdir().unwrap();
    /// let memory = memento::Memory::with_store(LocalStore::new(dir.path()));
    /// assert_eq!(memory.location(), dir.path().display().to_string());
    /// ```
    pub fn with_store(store: impl Store) -> Memory {
        Memory::build(Arc::new(store), Config::new(None), false)
    }

    /// A Memory over `store`; `by_name`: every Memory over a store of the
    /// same location shares its state (a folder, a bucket), else only this
    /// one's clones (a store given by the user).
    fn build(store: Arc<dyn Store>, config: Config, by_name: bool) -> Memory {
        let shared = Shared::of(&store, by_name, config.folder(), config.in_memory_bytes);
        Memory {
            inner: Arc::new(Inner {
                store,
                config,
                shared,
            }),
        }
    }

    /// Bounds the in-memory layer that serves repeated hits in this process
    /// (64 MiB by default; entries above 1/16 of it are never kept there).
    /// `0` turns it off: every hit then reads the store.
    ///
    /// ```
    /// let memory = memento::Memory::new("cache").in_memory_limit(0);
    /// # let _ = memory;
    /// ```
    pub fn in_memory_limit(self, bytes: u64) -> Memory {
        self.with_config(|c| c.in_memory_bytes = bytes)
    }

    /// This Memory with its config changed by `change`, over the same
    /// store and location state.
    fn with_config(self, change: impl FnOnce(&mut Config)) -> Memory {
        let mut config = self.inner.config.clone();
        change(&mut config);
        self.inner.shared.hot().raise_limit(config.in_memory_bytes);
        Memory {
            inner: Arc::new(Inner {
                store: self.inner.store.clone(),
                config,
                shared: self.inner.shared.clone(),
            }),
        }
    }

    /// Keeps the bytes stored under the location (outputs, metadata,
    /// records) at most `bytes`: after a write that crosses it, the least
    /// recently used results are removed.
    ///
    /// ```
    /// let memory = memento::Memory::new("cache").bytes_limit(10 << 30);
    /// assert_eq!(memory.limits().bytes, Some(10 << 30));
    /// ```
    pub fn bytes_limit(self, bytes: u64) -> Memory {
        self.with_config(|c| c.limits.bytes = Some(bytes))
    }

    /// Keeps at most `items` stored results (least recently used go first).
    pub fn items_limit(self, items: u64) -> Memory {
        self.with_config(|c| c.limits.items = Some(items))
    }

    /// Removes results not used for longer than `age`.
    ///
    /// ```
    /// use std::time::Duration;
    /// let memory = memento::Memory::new("cache").age_limit(Duration::from_secs(30 * 86400));
    /// # let _ = memory;
    /// ```
    pub fn age_limit(self, age: Duration) -> Memory {
        self.with_config(|c| c.limits.age = Some(age))
    }

    /// Signs every entry written with a key derived from `secret`, and
    /// refuses (recomputes) every entry that is unsigned or signed with
    /// another key: a cache folder or bucket shared with others then cannot
    /// be used to hand this program a value. All programs sharing the cache
    /// must use the same secret.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let memory = memento::Memory::new(dir.path()).signing_key("a long random secret");
    /// let f = memento::Function::new("docs", "signed");
    /// let _: u8 = memory.call(&f, &1u8, || 1);
    /// let mut ran = false;
    /// let other = memento::Memory::new(dir.path()).signing_key("another secret");
    /// let _: u8 = other.call(&f, &1u8, || { ran = true; 1 });
    /// assert!(ran, "another key's entry is not trusted");
    /// ```
    pub fn signing_key(self, secret: impl AsRef<[u8]>) -> Memory {
        let signer = codec::Signer::new(secret);
        self.with_config(|c| c.set_signer(signer))
    }

    /// Bounds how long a call waits for the same call running in another
    /// thread or process (by default it waits until that one finishes, or
    /// its process dies). After the wait it computes the value itself, with
    /// a warning.
    ///
    /// ```
    /// use std::time::Duration;
    /// let memory = memento::Memory::new("cache").lock_timeout(Duration::from_secs(600));
    /// # let _ = memory;
    /// ```
    pub fn lock_timeout(self, timeout: Duration) -> Memory {
        self.with_config(|c| c.lock_timeout = Some(timeout))
    }

    /// With a signing key, return stored [`Mapped`](crate::Mapped) results
    /// as memory maps after all (off by default).
    ///
    /// A signature promises that the value a program uses is the value that
    /// was signed. A map cannot keep that promise: its checksum is checked
    /// once, and another process that rewrites the file in place afterwards
    /// (memento never does) changes the elements under the program. So with
    /// a signing key, a stored `Mapped` result is read into memory and
    /// checked there (`is_mapped()` is false), unless this opt-in says the
    /// folder has no such writer and loading in O(1) matters more. Without
    /// a signing key, stored `Mapped` results are always maps.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// use memento::{Function, Mapped, Memory};
    /// let f = Function::new("docs", "ramp");
    /// let ramp = || -> Mapped<Vec<f64>> { (0..1000).map(f64::from).collect::<Vec<_>>().into() };
    ///
    /// let signed = Memory::new(dir.path()).signing_key("secret");
    /// let _ = signed.call(&f, &1u8, ramp); // computed
    /// assert!(!signed.call(&f, &1u8, ramp).is_mapped()); // read into memory
    ///
    /// let mapping = Memory::new(dir.path()).signing_key("secret").map_signed(true);
    /// assert!(mapping.call(&f, &1u8, ramp).is_mapped()); // mapped
    /// ```
    pub fn map_signed(self, map: bool) -> Memory {
        self.with_config(|c| c.map_signed = map)
    }

    /// Puts the near cache of a remote location in `folder`, bounded by
    /// [`DEFAULT_NEAR_LIMIT`] unless [`near_cache_limit`](Memory::near_cache_limit)
    /// says otherwise. No effect on a local folder.
    ///
    /// ```no_run
    /// let memory = memento::Memory::new("s3://my-bucket/results").near_cache("/scratch/near");
    /// # let _ = memory;
    /// ```
    pub fn near_cache(self, folder: impl Into<PathBuf>) -> Memory {
        let folder = folder.into();
        self.with_remote(|remote| remote.near = Some(folder))
    }

    /// Reads and writes a remote location with no near cache: every hit
    /// is a download. No effect on a local folder.
    pub fn no_near_cache(self) -> Memory {
        self.with_remote(|remote| remote.near = None)
    }

    /// Bounds the near cache of a remote location to `bytes` on the disk:
    /// past it, its least recently used results leave it (they stay in the
    /// bucket). No effect on a local folder.
    pub fn near_cache_limit(self, bytes: u64) -> Memory {
        self.with_remote(|remote| remote.near_limit = bytes)
    }

    /// This Memory with its remote parts changed by `change`, and its
    /// store made again from them (over the same location state).
    fn with_remote(self, change: impl FnOnce(&mut Remote)) -> Memory {
        let Some(mut remote) = self.inner.config.remote.clone() else {
            return self;
        };
        change(&mut remote);
        let store: Arc<dyn Store> = match &remote.near {
            Some(dir) => {
                Arc::new(NearCache::over(dir.clone(), remote.far.clone()).limit(remote.near_limit))
            }
            None => remote.far.clone(),
        };
        let mut config = self.inner.config.clone();
        config.remote = Some(remote);
        Memory {
            inner: Arc::new(Inner {
                store,
                config,
                shared: self.inner.shared.clone(),
            }),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.inner.config.limits
    }

    /// Where the results live (a folder).
    pub fn location(&self) -> String {
        self.inner.store.location()
    }

    /// The folder of a local cache (`None` for another backend).
    pub fn path(&self) -> Option<&Path> {
        self.inner.config.folder()
    }

    /// The near cache's folder of a remote location (`None` for a local
    /// folder, or a remote location read without one).
    ///
    /// ```
    /// let local = memento::Memory::new("cache");
    /// assert_eq!(local.near_cache_folder(), None);
    /// # #[cfg(feature = "s3")] {
    /// let remote = memento::Memory::new("s3://my-bucket/results").near_cache("/scratch/near");
    /// assert_eq!(remote.near_cache_folder(), Some(std::path::Path::new("/scratch/near")));
    /// assert_eq!(remote.no_near_cache().near_cache_folder(), None);
    /// # }
    /// ```
    pub fn near_cache_folder(&self) -> Option<&Path> {
        self.inner.config.remote.as_ref()?.near.as_deref()
    }

    /// The store behind this Memory.
    pub fn store(&self) -> &dyn Store {
        &*self.inner.store
    }

    /// This Memory with the signing key of `MEMENTO_KEY`, when set.
    pub(crate) fn with_env_signer(self) -> Memory {
        match codec::Signer::from_env() {
            Some(signer) => self.with_config(|c| c.set_signer(signer)),
            None => self,
        }
    }
}

/// The store of a remote location.
#[cfg(feature = "s3")]
fn open_remote(url: &str) -> Result<Arc<dyn Store>> {
    Ok(Arc::new(crate::store::S3Store::from_url(url)?))
}

/// The store of a remote location: none in a build without the `s3`
/// feature.
#[cfg(not(feature = "s3"))]
fn open_remote(url: &str) -> Result<Arc<dyn Store>> {
    Err(Error::Option {
        option: "location",
        value: url.to_string(),
        expected: "a folder: this build of memento has no `s3` feature. Enable it (memento = \
                   { version = \"0.1\", features = [\"s3\"] }) to keep results in a bucket"
            .to_string(),
    })
}

/// The default near cache of `url` (`s3://bucket/prefix`):
/// `<user cache folder>/memento/bucket/prefix`, where the user cache folder
/// is `$XDG_CACHE_HOME`, else `$HOME/.cache`. `None` when neither is set.
fn default_near_folder(url: &str) -> Option<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    let base = match var("XDG_CACHE_HOME") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(var("HOME")?).join(".cache"),
    };
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let mut folder = base.join("memento");
    // Only plain parts: a prefix cannot lead out of the cache folder.
    for part in rest.split('/') {
        if !matches!(part, "" | "." | "..") {
            folder.push(part);
        }
    }
    Some(folder)
}
