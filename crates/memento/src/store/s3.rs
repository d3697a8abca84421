//! The S3 backend: objects in a bucket, under a prefix (cargo feature `s3`).
//!
//! [`S3Store`] keeps each object of a [`Store`] as one S3 object,
//! `<prefix>/<name>`, through the [`object_store`] crate. It speaks to AWS
//! S3 and to the servers that speak its protocol (MinIO, Ceph, R2, moto).
//!
//! ```no_run
//! use memento::store::{S3Store, Store};
//!
//! // Credentials, region and endpoint from the standard environment
//! // (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, ...).
//! let store = S3Store::from_url("s3://my-bucket/memento")?;
//! let memory = memento::Memory::with_store(store);
//! # Ok::<(), memento::Error>(())
//! ```
//!
//! # Why each operation is what it is
//!
//! - **Publication is create-only** ([`Store::publish`]: one `PUT` with
//!   `If-None-Match: *`). When two machines compute the same entry, the
//!   first write wins and the second keeps its own value without replacing
//!   the stored one. A create that the client retried after a 5xx may find
//!   its own first attempt and report "already there": that is the truth
//!   as far as the caller is concerned (it reads the stored entry).
//!   Objects are always written with a single `PUT`, never a multipart
//!   upload: a single `PUT` is atomic (a reader sees the whole object or
//!   none) and it is the only write a create-only condition applies to.
//! - **Reads** are `GET`s (ranged for [`Store::read_range`]); an absent
//!   object is `Ok(false)`, but an absent *bucket* is an error that says so.
//! - **Listing** is by prefix (S3 lists recursively); an object's size on
//!   the "disk" is its size, since that is what S3 bills. An entry's
//!   `modified` is its last access as memento recorded it (below).
//!
//! # Last access, and what "least recently used" means here
//!
//! S3 keeps no access time: an object's `LastModified` is when it was
//! written. Eviction ([`Memory::reduce_size`](crate::Memory::reduce_size),
//! automatic limits, `memento gc`) removes the results least recently
//! *used*, so the store records the uses itself:
//!
//! - A [`Store::read`] of an entry, and a [`Store::touch`] (a hit served
//!   from memory, or from a [`NearCache`](super::NearCache)'s folder),
//!   notes the entry's name and the time in the store's memory: no
//!   request. [`Store::peek`] and [`Store::read_range`] are management
//!   reads and note nothing.
//! - What was noted is written to the bucket at most every
//!   [`S3StoreBuilder::access_flush`] (a minute by default), from the
//!   store's runtime, as **one small object per flush**,
//!   `<prefix>/.access/<host>-<pid>-<nonce>.json` (`{"holder": …,
//!   "accesses": {name: Unix ms, …}}`), and again when the store is dropped
//!   and when the process exits (each waiting at most the request timeout
//!   plus the retry timeout, and not at all while the server is taken for
//!   unreachable), and when [`S3Store::flush_access`] is called. A write
//!   that fails keeps its accesses for the next one.
//! - [`Store::list_meta`] lists the `.access/` objects first, reads them
//!   (they are small, a few at once), lists what was asked, and gives each
//!   object `modified` = the latest of its `LastModified`, the latest
//!   access any record holds for it, and this store's accesses not yet
//!   written. The `.access/` objects themselves are never listed (so
//!   counts and sizes are the results'), and deleting an entry needs
//!   nothing: a record of a name that is gone is ignored.
//! - When a listing finds more than [`ACCESS_COMPACT_ABOVE`] records, it
//!   writes one record merging those it read (names of the listed folder
//!   that are gone are dropped), *then* deletes the ones it read. A record
//!   written meanwhile by another process was not read and is not deleted;
//!   two listings merging at once leave two merged records, and nothing is
//!   lost. A record listed but gone when read (merged by another listing)
//!   makes the listing look at `.access/` again.
//!
//! So on a bucket, "least recently used" means least recently used *as
//! recorded by memento processes*: a hit's access reaches the bucket up to
//! one flush interval late (other processes evicting meanwhile see the
//! older time), and a process killed (or a machine lost) before its flush
//! loses its last interval of accesses: those results look as old as
//! their previous recorded use, or their write. Times are the readers'
//! clocks against the server's `LastModified`: they must roughly agree (NTP
//! does). Reads by other S3 clients are never seen.
//!
//! # Locks are leases
//!
//! S3 has no locks, and a process that dies holding one must not block the
//! others forever. [`Store::lock`] makes a *lease*: an object at the lock's
//! name, created with a create-only `PUT`, whose small JSON body names its
//! holder (host and process id), a random nonce (two bodies never
//! coincide, so their etags never do: moto's etag is the body's MD5) and an
//! expiry (Unix milliseconds, now plus the lease's time to live,
//! [`S3StoreBuilder::lease_ttl`], 30 s by default).
//!
//! - A taker that finds the lease present reads it with its etag. If it has
//!   expired (its holder died, or lost the bucket), the taker replaces it
//!   with a *conditional* `PUT` (`If-Match` on that etag): of two takers,
//!   one succeeds and the other gets a precondition failure and goes back
//!   to waiting. A lease whose body cannot be read counts as expired.
//! - Otherwise the taker waits, polling with a backoff from 50 ms doubling
//!   to 1 s (each pause drawn between half and the whole of it, so that
//!   waiters that began together do not keep colliding), until the lease is gone or expired, or the timeout passes
//!   ([`LockOutcome::TimedOut`]).
//! - The holder renews the lease (a conditional `PUT` on its current etag,
//!   with a later expiry) every third of its time to live, from the store's
//!   runtime, while the [`StoreLock`] lives; dropping the lock stops the
//!   renewals and deletes the lease if it still holds this holder's nonce.
//!   A renewal refused by its condition means that another process took
//!   the lease over (this one stalled past the expiry): a warning says so.
//!
//! Expiry compares the machines' clocks: they must agree to well within the
//! time to live (NTP does). A lease only ever delays a computation; the
//! results themselves stay right without it (create-only publication).
//!
//! # Outages
//!
//! Every request is bounded: a connection must open within 500 ms, a
//! request complete within 2 s, and a failed request is retried at most
//! twice within 3 s ([`S3StoreBuilder::connect_timeout`],
//! [`request_timeout`](S3StoreBuilder::request_timeout),
//! [`max_retries`](S3StoreBuilder::max_retries),
//! [`retry_timeout`](S3StoreBuilder::retry_timeout)). So an operation on a
//! server that accepts connections and never answers fails in about 4 s,
//! and one on a stopped server (connections refused) in well under a
//! second. (object_store's own defaults, 10 retries within 180 s and a
//! 30 s request timeout, let one such `GET` hang for three minutes.) After
//! a request that could not reach the server, the store sends nothing for
//! 5 s ([`outage_pause`](S3StoreBuilder::outage_pause)): its operations
//! fail at once, so that a call (which makes several) pays one timeout,
//! not one per operation; the first operation after the pause asks the
//! server again, so recovery needs no restart. The
//! request timeout covers the whole transfer: raise it for entries larger
//! than the link moves in 2 s. A failed operation is an [`Error::Remote`];
//! a [`Memory`](crate::Memory) turns it into a warning and computes the
//! value, as it does for a local folder it cannot use.
//!
//! # Secrets
//!
//! No error, message, [`Debug`](std::fmt::Debug) output or
//! [`location`](Store::location) holds the access key, the secret key or
//! the session token: they are cut out of every error text, as are URLs'
//! query strings and user parts.
//!
//! # Async callers
//!
//! [`Store`] is synchronous, and object_store is async. The store owns a
//! small tokio runtime (two worker threads); each operation is spawned on
//! it and the calling thread waits for its answer on a channel. So the
//! store works from plain threads and from inside another tokio runtime
//! alike (where `Runtime::block_on` would panic); inside a runtime, the
//! call still blocks that runtime's thread while it waits.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::stream::{self, StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientConfigKey, GetOptions, GetRange, ObjectStore, PutMode, PutOptions,
    PutPayload, PutPayloadMut, RetryConfig, UpdateVersion,
};

use super::{check_name, LockOutcome, ObjectMeta, Store, StoreLock};
use crate::error::{Error, Result};
use crate::layout;

/// How long a lease lives without renewal, by default.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(30);
/// How long opening a connection may take, by default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// How long one request may take, from connecting to the last byte of the
/// answer, by default.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How many times a failed request is retried, by default.
pub const DEFAULT_MAX_RETRIES: usize = 2;
/// How long after its first attempt a request may still be retried, by
/// default.
pub const DEFAULT_RETRY_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the store sends nothing after the server could not be reached,
/// by default.
pub const DEFAULT_OUTAGE_PAUSE: Duration = Duration::from_secs(5);

/// How often, by default, the accesses a store noted are written to the
/// bucket (see the [module](self)'s "Last access").
pub const DEFAULT_ACCESS_FLUSH: Duration = Duration::from_secs(60);
/// The shortest interval between two writes of the accesses.
const MIN_ACCESS_FLUSH: Duration = Duration::from_millis(10);
/// A listing that finds more access records than this merges them into
/// one.
pub const ACCESS_COMPACT_ABOVE: usize = 32;
/// Access records read at once by a listing.
const ACCESS_READS_AT_ONCE: usize = 8;

/// The first pause of a lock's waiter; it doubles up to [`MAX_POLL`].
const FIRST_POLL: Duration = Duration::from_millis(50);
const MAX_POLL: Duration = Duration::from_secs(1);

/// What `S3Store` answers for every action that failed because its
/// runtime is gone.
const RUNTIME_GONE: &str = "the S3 client's runtime stopped";

/// A [`Store`] in an S3 bucket, under a prefix. See the
/// [module](self) for what each operation does, and why.
///
/// Cheap to share: a [`Memory`](crate::Memory) takes it by value (clones of
/// the `Memory` share it).
pub struct S3Store {
    inner: Arc<Inner>,
}

struct Inner {
    s3: Arc<AmazonS3>,
    bucket: String,
    /// Without leading or trailing '/'; may be empty.
    prefix: String,
    /// The endpoint, for `Debug` (without user part or query).
    endpoint: Option<String>,
    region: Option<String>,
    /// Texts cut out of every error message.
    secrets: Vec<String>,
    /// `host:pid`, in lease bodies.
    holder: String,
    lease_ttl: Duration,
    outage_pause: Duration,
    /// The entries' accesses not yet written to the bucket.
    accesses: Arc<Accesses>,
    /// How often they are written.
    access_flush: Duration,
    /// How long a drop or the exit waits for their last write.
    last_flush_wait: Duration,
    /// The origin of the two times below.
    epoch: Instant,
    /// Milliseconds after `epoch` when the server last could not be
    /// reached (a connection refused or timed out), and until when
    /// operations fail without a request (0: they are sent).
    unreachable_at: AtomicU64,
    unreachable_until: AtomicU64,
    handle: tokio::runtime::Handle,
    /// Taken (and shut down without waiting) when the store goes.
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The accesses noted since the last flush (the background task
        // ends with the runtime).
        self.flush_before_going();
        // A runtime dropped inside another runtime's context panics;
        // shutting it down in the background never does.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl fmt::Debug for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.inner;
        f.debug_struct("S3Store")
            .field("bucket", &inner.bucket)
            .field("prefix", &inner.prefix)
            .field("endpoint", &inner.endpoint)
            .field("region", &inner.region)
            .field("lease_ttl", &inner.lease_ttl)
            .field("access_flush", &inner.access_flush)
            .finish_non_exhaustive()
    }
}

/// Builds an [`S3Store`]: [`S3Store::builder`].
///
/// The standard environment is read first (`AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION` or
/// `AWS_DEFAULT_REGION`, `AWS_ENDPOINT_URL` or `AWS_ENDPOINT`,
/// `AWS_ALLOW_HTTP`, and object_store's other `AWS_*` settings); each
/// method given here overrides it.
///
/// ```no_run
/// use std::time::Duration;
/// use memento::store::S3Store;
///
/// let store = S3Store::builder("s3://results/team-a")
///     .endpoint("http://127.0.0.1:9000")
///     .allow_http(true)
///     .region("us-east-1")
///     .credentials("my-key-id", "my-secret")
///     .lease_ttl(Duration::from_secs(10))
///     .build()?;
/// # Ok::<(), memento::Error>(())
/// ```
#[derive(Clone)]
pub struct S3StoreBuilder {
    location: String,
    endpoint: Option<String>,
    region: Option<String>,
    allow_http: Option<bool>,
    credentials: Option<(String, String)>,
    session_token: Option<String>,
    lease_ttl: Duration,
    connect_timeout: Duration,
    request_timeout: Duration,
    max_retries: usize,
    retry_timeout: Duration,
    outage_pause: Duration,
    access_flush: Duration,
}

impl fmt::Debug for S3StoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3StoreBuilder")
            .field("location", &self.location)
            .field("endpoint", &self.endpoint.as_deref().map(clean_url))
            .field("region", &self.region)
            .field("allow_http", &self.allow_http)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|_| "<given, not shown>"),
            )
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<given, not shown>"),
            )
            .field("lease_ttl", &self.lease_ttl)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("max_retries", &self.max_retries)
            .field("retry_timeout", &self.retry_timeout)
            .field("outage_pause", &self.outage_pause)
            .field("access_flush", &self.access_flush)
            .finish()
    }
}

impl S3StoreBuilder {
    /// The S3 endpoint's URL (`https://…`, or `http://…` with
    /// [`allow_http`](Self::allow_http)), for servers other than AWS;
    /// overrides `AWS_ENDPOINT_URL` / `AWS_ENDPOINT`.
    pub fn endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoint = Some(url.into());
        self
    }

    /// The bucket's region; overrides `AWS_REGION` / `AWS_DEFAULT_REGION`
    /// (`us-east-1` when neither is set).
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// Whether a plain `http://` endpoint may be used; overrides
    /// `AWS_ALLOW_HTTP`. Off by default.
    pub fn allow_http(mut self, allow: bool) -> Self {
        self.allow_http = Some(allow);
        self
    }

    /// The access key id and the secret access key; override
    /// `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`. Neither appears in
    /// any message or `Debug` output.
    pub fn credentials(
        mut self,
        access_key_id: impl Into<String>,
        secret: impl Into<String>,
    ) -> Self {
        self.credentials = Some((access_key_id.into(), secret.into()));
        self
    }

    /// A session token (temporary credentials); overrides
    /// `AWS_SESSION_TOKEN`.
    pub fn session_token(mut self, token: impl Into<String>) -> Self {
        self.session_token = Some(token.into());
        self
    }

    /// How long a lease (the lock of a key being computed) lives without
    /// renewal: after its holder dies, other processes wait at most this
    /// long before one takes it over. The holder renews it every third of
    /// it. [`DEFAULT_LEASE_TTL`] by default; at least 100 ms.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    /// How long opening a connection may take
    /// ([`DEFAULT_CONNECT_TIMEOUT`] by default).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long one request may take, from connecting to the answer's last
    /// byte ([`DEFAULT_REQUEST_TIMEOUT`] by default): raise it for results
    /// larger than the link moves in that time.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How many times a failed request is retried
    /// ([`DEFAULT_MAX_RETRIES`] by default; 0: never).
    pub fn max_retries(mut self, retries: usize) -> Self {
        self.max_retries = retries;
        self
    }

    /// How long after its first attempt a request may still be retried
    /// ([`DEFAULT_RETRY_TIMEOUT`] by default).
    pub fn retry_timeout(mut self, timeout: Duration) -> Self {
        self.retry_timeout = timeout;
        self
    }

    /// After a request could not reach the server (connection refused or
    /// timed out, retries included), the store's operations fail at once,
    /// without a request, for this long; the first one after it asks the
    /// server again. A call then pays one timeout per pause, not one per
    /// operation (a [`Memory`](crate::Memory) call makes several).
    /// [`DEFAULT_OUTAGE_PAUSE`] by default; zero turns it off. Lease
    /// renewals and releases are always sent.
    pub fn outage_pause(mut self, pause: Duration) -> Self {
        self.outage_pause = pause;
        self
    }

    /// How often the entries' accesses that the store noted (its reads and
    /// touches of entries) are written to the bucket, as one small object
    /// under `.access/`; they are also written when the store is dropped
    /// and when the process exits. Eviction in other processes sees an
    /// access up to this late, and a process killed loses at most this
    /// much of them (see the [module](self)'s "Last access").
    /// [`DEFAULT_ACCESS_FLUSH`] by default; at least 10 ms.
    pub fn access_flush(mut self, interval: Duration) -> Self {
        self.access_flush = interval;
        self
    }

    /// Makes the store. Nothing is sent to the server yet (a missing bucket
    /// or wrong credentials show in the first operation's error).
    ///
    /// # Errors
    ///
    /// [`Error::Option`] for a location that is not `s3://bucket[/prefix]`
    /// with a valid bucket name, for a plain `http://` endpoint without
    /// [`allow_http`](Self::allow_http), and for a timeout of zero;
    /// [`Error::Remote`] when object_store refuses the settings.
    pub fn build(self) -> Result<S3Store> {
        let (bucket, prefix) = parse_location(&self.location)?;
        for (option, value) in [
            ("S3 connect timeout", self.connect_timeout),
            ("S3 request timeout", self.request_timeout),
        ] {
            if value.is_zero() {
                return Err(Error::Option {
                    option,
                    value: "0s".into(),
                    expected: "a duration above zero".into(),
                });
            }
        }
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(&bucket);
        if let Some(endpoint) = &self.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if let Some(region) = &self.region {
            builder = builder.with_region(region);
        }
        if let Some(allow) = self.allow_http {
            builder = builder.with_allow_http(allow);
        }
        if let Some((key, secret)) = &self.credentials {
            builder = builder
                .with_access_key_id(key)
                .with_secret_access_key(secret);
        }
        if let Some(token) = &self.session_token {
            builder = builder.with_token(token);
        }
        let client = |key| AmazonS3ConfigKey::Client(key);
        builder = builder
            .with_config(
                client(ClientConfigKey::ConnectTimeout),
                humantime::format_duration(self.connect_timeout).to_string(),
            )
            .with_config(
                client(ClientConfigKey::Timeout),
                humantime::format_duration(self.request_timeout).to_string(),
            )
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(1),
                    base: 2.0,
                },
                max_retries: self.max_retries,
                retry_timeout: self.retry_timeout,
            });
        let endpoint = builder.get_config_value(&AmazonS3ConfigKey::Endpoint);
        let allow_http = builder
            .get_config_value(&client(ClientConfigKey::AllowHttp))
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true") || v.trim() == "1");
        if let Some(endpoint) = &endpoint {
            if endpoint.to_ascii_lowercase().starts_with("http://") && !allow_http {
                return Err(Error::Option {
                    option: "S3 endpoint",
                    value: clean_url(endpoint),
                    expected: "an https:// URL, or allow_http(true) (AWS_ALLOW_HTTP=true) \
                               for a plain http:// one"
                        .into(),
                });
            }
        }
        let secrets: Vec<String> = [
            AmazonS3ConfigKey::AccessKeyId,
            AmazonS3ConfigKey::SecretAccessKey,
            AmazonS3ConfigKey::Token,
        ]
        .iter()
        .filter_map(|key| builder.get_config_value(key))
        .filter(|s| !s.is_empty())
        .collect();
        let region = builder
            .get_config_value(&AmazonS3ConfigKey::Region)
            .or_else(|| builder.get_config_value(&AmazonS3ConfigKey::DefaultRegion));
        let location = display_location(&bucket, &prefix);
        let s3 = builder.build().map_err(|e| Error::Remote {
            action: "open",
            location: location.clone(),
            name: String::new(),
            message: format!(
                "{}; check the S3 settings (AWS_* environment variables, the builder's methods)",
                redact(&error_text(&e), &secrets)
            ),
        })?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("memento-s3")
            .enable_all()
            .build()
            .map_err(|e| Error::Remote {
                action: "open",
                location: location.clone(),
                name: String::new(),
                message: format!("cannot start the S3 client's threads: {e}"),
            })?;
        let s3 = Arc::new(s3);
        let holder = holder_id();
        let accesses = Arc::new(Accesses {
            pending: Mutex::new(HashMap::new()),
            flushing: tokio::sync::Mutex::new(()),
            s3: s3.clone(),
            prefix: prefix.clone(),
            holder: holder.clone(),
        });
        let access_flush = self.access_flush.max(MIN_ACCESS_FLUSH);
        // Ends with the runtime; holds no `Inner`, so the store can go.
        runtime.spawn(flush_every(accesses.clone(), access_flush, secrets.clone()));
        let inner = Arc::new(Inner {
            s3,
            bucket,
            prefix,
            endpoint: endpoint.as_deref().map(clean_url),
            region,
            secrets,
            holder,
            lease_ttl: self.lease_ttl.max(Duration::from_millis(100)),
            outage_pause: self.outage_pause,
            accesses,
            access_flush,
            last_flush_wait: self.request_timeout + self.retry_timeout,
            epoch: Instant::now(),
            unreachable_at: AtomicU64::new(0),
            unreachable_until: AtomicU64::new(0),
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
        });
        flush_at_exit(&inner);
        Ok(S3Store { inner })
    }
}

impl S3Store {
    /// A store at `location`, `s3://bucket/prefix` (the prefix may be
    /// empty), configured from the standard environment (see
    /// [`S3StoreBuilder`]).
    ///
    /// ```
    /// use memento::store::S3Store;
    ///
    /// assert!(S3Store::from_url("s3://").is_err()); // no bucket
    /// assert!(S3Store::from_url("gs://bucket/prefix").is_err()); // not S3
    /// ```
    ///
    /// # Errors
    ///
    /// As [`S3StoreBuilder::build`].
    pub fn from_url(location: &str) -> Result<S3Store> {
        S3Store::builder(location).build()
    }

    /// A builder for a store at `location`, `s3://bucket/prefix`, with
    /// settings from the environment that its methods override.
    pub fn builder(location: impl Into<String>) -> S3StoreBuilder {
        S3StoreBuilder {
            location: location.into(),
            endpoint: None,
            region: None,
            allow_http: None,
            credentials: None,
            session_token: None,
            lease_ttl: DEFAULT_LEASE_TTL,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_retries: DEFAULT_MAX_RETRIES,
            retry_timeout: DEFAULT_RETRY_TIMEOUT,
            outage_pause: DEFAULT_OUTAGE_PAUSE,
            access_flush: DEFAULT_ACCESS_FLUSH,
        }
    }

    /// The bucket's name.
    pub fn bucket(&self) -> &str {
        &self.inner.bucket
    }

    /// The prefix under which the objects are (without leading or trailing
    /// `/`; empty for the whole bucket).
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The endpoint's URL when one is set (builder or environment), without
    /// user part or query string; `None` for AWS's own, chosen by region.
    /// Two stores of one bucket name at two endpoints are two locations.
    pub fn endpoint(&self) -> Option<&str> {
        self.inner.endpoint.as_deref()
    }

    /// How long a lease lives without renewal.
    pub fn lease_ttl(&self) -> Duration {
        self.inner.lease_ttl
    }

    /// How often the entries' accesses noted by this store are written to
    /// the bucket ([`S3StoreBuilder::access_flush`]).
    pub fn access_flush(&self) -> Duration {
        self.inner.access_flush
    }

    /// Writes the entries' accesses noted by this store since its last
    /// flush now, as one object under `.access/` (the background flush,
    /// the drop and the exit do the same; see the [module](self)'s "Last
    /// access"). Returns how many entries' accesses it wrote: 0 when none
    /// was noted, and then nothing is sent.
    ///
    /// # Errors
    ///
    /// [`Error::Remote`] when the write fails; the accesses are kept for
    /// the next flush.
    pub fn flush_access(&self) -> Result<usize> {
        let inner = &self.inner;
        if inner.accesses.is_empty() {
            return Ok(0);
        }
        let accesses = inner.accesses.clone();
        let written = inner.run("record accesses", layout::ACCESS_DIR, async move {
            accesses.flush().await
        })?;
        written.map_err(|e| inner.error("record accesses", layout::ACCESS_DIR, &e))
    }

    /// Merges the access records a listing of `prefix` read into one, then
    /// deletes them. Of the names under `prefix`, only those `listed` are
    /// kept (the others are gone); names outside it are kept.
    fn compact(&self, prefix: &str, recorded: Recorded, listed: &[ObjectMeta]) -> Result<()> {
        let inner = &self.inner;
        let present: HashSet<&str> = listed.iter().map(|m| m.name.as_str()).collect();
        let under = |name: &str| {
            prefix.is_empty()
                || name
                    .strip_prefix(prefix)
                    .is_some_and(|rest| rest.starts_with('/'))
        };
        let merged: HashMap<String, u64> = recorded
            .latest
            .into_iter()
            .filter(|(name, _)| !under(name) || present.contains(name.as_str()))
            .collect();
        const ACTION: &str = "merge the access records";
        if !merged.is_empty() {
            // First the merged record: a failure deletes nothing.
            let name = layout::access_record(&inner.holder, &nonce());
            let body = AccessBody {
                holder: inner.holder.clone(),
                accesses: merged,
            };
            let payload = PutPayload::from(serde_json::to_vec(&body).unwrap_or_default());
            inner
                .put(ACTION, &name, payload, PutMode::Overwrite)?
                .map_err(|e| inner.error(ACTION, &name, &e))?;
        }
        inner.delete_paths(layout::ACCESS_DIR, recorded.objects)
    }
}

/// The accesses of entries a store noted that the bucket does not know
/// yet, and their writing: one object per flush (see the module's "Last
/// access").
struct Accesses {
    /// Entry name → its latest access, Unix milliseconds.
    pending: Mutex<HashMap<String, u64>>,
    /// One flush at a time: a last flush waits for a running one.
    flushing: tokio::sync::Mutex<()>,
    s3: Arc<AmazonS3>,
    /// The store's prefix.
    prefix: String,
    /// `host:pid`.
    holder: String,
}

impl Accesses {
    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes an access to `name` now, if it is an entry.
    fn note(&self, name: &str) {
        if !layout::is_entry(name) {
            return;
        }
        let now = unix_ms();
        let mut pending = self.pending();
        match pending.get_mut(name) {
            Some(at) => *at = (*at).max(now),
            None => {
                pending.insert(name.to_string(), now);
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.pending().is_empty()
    }

    /// Puts back accesses that could not be written.
    fn restore(&self, accesses: HashMap<String, u64>) {
        let mut pending = self.pending();
        for (name, at) in accesses {
            let kept = pending.entry(name).or_insert(at);
            *kept = (*kept).max(at);
        }
    }

    /// Writes the accesses noted since the last flush as one record;
    /// returns how many names it held (0: none, nothing sent). On failure
    /// they are kept for the next flush.
    async fn flush(&self) -> std::result::Result<usize, object_store::Error> {
        let _one = self.flushing.lock().await;
        let taken = std::mem::take(&mut *self.pending());
        if taken.is_empty() {
            return Ok(0);
        }
        let count = taken.len();
        let name = layout::access_record(&self.holder, &nonce());
        let path = if self.prefix.is_empty() {
            Path::from(name)
        } else {
            Path::from(format!("{}/{name}", self.prefix))
        };
        let body = AccessBody {
            holder: self.holder.clone(),
            accesses: taken,
        };
        let payload = PutPayload::from(serde_json::to_vec(&body).unwrap_or_default());
        let options = PutOptions::from(PutMode::Overwrite);
        match self.s3.put_opts(&path, payload, options).await {
            Ok(_) => Ok(count),
            Err(e) => {
                self.restore(body.accesses);
                Err(e)
            }
        }
    }
}

/// The store's background task: writes the noted accesses every
/// `interval`, until the runtime ends.
async fn flush_every(accesses: Arc<Accesses>, interval: Duration, secrets: Vec<String>) {
    loop {
        tokio::time::sleep(interval).await;
        if let Err(e) = accesses.flush().await {
            tracing::debug!(
                "S3 access record not written (kept for the next flush): {}",
                redact(&error_text(&e), &secrets)
            );
        }
    }
}

/// The body of an access record.
#[derive(serde::Serialize, serde::Deserialize)]
struct AccessBody {
    /// `host:pid` of its writer, for people.
    holder: String,
    /// Entry name (in the store, without its prefix) → its latest access,
    /// Unix milliseconds.
    accesses: HashMap<String, u64>,
}

/// What a bucket's access records hold.
#[derive(Default)]
struct Recorded {
    /// The latest access of each name.
    latest: HashMap<String, u64>,
    /// The records read (whether their body parsed or not).
    objects: Vec<Path>,
}

/// Reads every access record in `dir` (a few at once).
async fn read_records(
    s3: &AmazonS3,
    dir: &Path,
) -> std::result::Result<Recorded, object_store::Error> {
    let mut recorded = Recorded::default();
    let mut seen: HashSet<Path> = HashSet::new();
    // A record listed but gone when read was merged by another listing
    // into a newer record, which the next look finds.
    for _ in 0..3 {
        let listed: Vec<object_store::ObjectMeta> = s3.list(Some(dir)).try_collect().await?;
        let new: Vec<Path> = listed
            .into_iter()
            .map(|meta| meta.location)
            .filter(|path| !seen.contains(path))
            .collect();
        if new.is_empty() {
            break;
        }
        let mut reads = stream::iter(new)
            .map(|path| async move {
                let got = match s3.get_opts(&path, GetOptions::default()).await {
                    Ok(result) => result.bytes().await,
                    Err(e) => Err(e),
                };
                (path, got)
            })
            .buffer_unordered(ACCESS_READS_AT_ONCE);
        let mut gone = false;
        while let Some((path, got)) = reads.next().await {
            seen.insert(path.clone());
            match got {
                Ok(bytes) => {
                    if let Ok(body) = serde_json::from_slice::<AccessBody>(&bytes) {
                        for (name, at) in body.accesses {
                            let latest = recorded.latest.entry(name).or_insert(at);
                            *latest = (*latest).max(at);
                        }
                    }
                    recorded.objects.push(path);
                }
                Err(object_store::Error::NotFound { .. }) => gone = true,
                Err(e) => return Err(e),
            }
        }
        if !gone {
            break;
        }
    }
    Ok(recorded)
}

/// The stores of this process, whose noted accesses are written at exit.
static OPEN: Mutex<Vec<Weak<Inner>>> = Mutex::new(Vec::new());

/// Remembers `inner` for the exit (and, the first time, asks for the exit
/// hook).
fn flush_at_exit(inner: &Arc<Inner>) {
    let mut open = OPEN.lock().unwrap_or_else(|e| e.into_inner());
    open.retain(|store| store.strong_count() > 0);
    open.push(Arc::downgrade(inner));
    drop(open);
    crate::exit::on_exit("bucket access notes", flush_open_stores);
}

/// At exit (see [`crate::exit`]): the stores still open write their noted
/// accesses.
fn flush_open_stores() {
    let open: Vec<Arc<Inner>> = OPEN
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter_map(Weak::upgrade)
        .collect();
    for inner in open {
        inner.flush_before_going();
    }
}

/// Splits `s3://bucket/prefix` into the bucket and the prefix (without
/// leading or trailing '/').
fn parse_location(location: &str) -> Result<(String, String)> {
    let bad = |why: &str| Error::Option {
        option: "S3 location",
        value: clean_url(location),
        expected: format!("s3://bucket/prefix ({why})"),
    };
    let rest = match location.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("s3") => rest,
        Some(_) => return Err(bad("the scheme must be s3://")),
        None => return Err(bad("it starts with s3://")),
    };
    if rest.contains(['?', '#']) {
        return Err(bad("no query or fragment"));
    }
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(bad("the bucket's name is missing"));
    }
    let valid_bucket = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && bucket.as_bytes()[0].is_ascii_alphanumeric()
        && bucket.as_bytes()[bucket.len() - 1].is_ascii_alphanumeric();
    if !valid_bucket {
        return Err(bad(
            "a bucket's name is 3 to 63 lowercase letters, digits, '.' and '-', \
             starting and ending with a letter or digit",
        ));
    }
    let prefix = prefix.trim_matches('/');
    if !prefix.is_empty() && (check_name(prefix).is_err() || Path::parse(prefix).is_err()) {
        return Err(bad(
            "the prefix is '/'-separated parts, none empty, '.' or '..', without control characters",
        ));
    }
    Ok((bucket.to_string(), prefix.to_string()))
}

fn display_location(bucket: &str, prefix: &str) -> String {
    if prefix.is_empty() {
        format!("s3://{bucket}")
    } else {
        format!("s3://{bucket}/{prefix}")
    }
}

/// `host:pid`, naming a lease's holder for people.
fn holder_id() -> String {
    format!("{}:{}", host_name(), std::process::id())
}

fn host_name() -> String {
    #[cfg(unix)]
    {
        let mut buf = [0u8; 256];
        // SAFETY: the buffer is valid for its length; gethostname writes at
        // most that many bytes.
        let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
        if ok {
            let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
            if end > 0 {
                return String::from_utf8_lossy(&buf[..end]).into_owned();
            }
        }
    }
    std::env::var("HOSTNAME")
        .or_else(|_| std::env::var("COMPUTERNAME"))
        .unwrap_or_else(|_| "unknown-host".into())
}

/// 128 random bits, hex: std's randomly keyed hasher over the time, the
/// process, a counter and the thread, hashed again with blake3.
fn nonce() -> String {
    use std::hash::BuildHasher;
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let keyed = std::collections::hash_map::RandomState::new().hash_one((
        nanos,
        std::process::id(),
        count,
        std::thread::current().id(),
    ));
    let mut hasher = blake3::Hasher::new();
    hasher.update(&keyed.to_le_bytes());
    hasher.update(&nanos.to_le_bytes());
    hasher.update(&std::process::id().to_le_bytes());
    hasher.update(&count.to_le_bytes());
    hasher.finalize().to_hex()[..32].to_string()
}

/// Between half and the whole of `pause`, drawn with a xorshift on `seed`.
fn jitter(pause: Duration, seed: &mut u64) -> Duration {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    let fraction = 0.5 + (*seed % 1024) as f64 / 2048.0;
    pause.mul_f64(fraction)
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The body of a lease object.
#[derive(serde::Serialize, serde::Deserialize)]
struct LeaseBody {
    /// `host:pid`, for people.
    holder: String,
    /// Random per taking: tells this holder's lease from any other.
    nonce: String,
    /// When it expires unless renewed, Unix milliseconds.
    expires_unix_ms: u64,
    /// How many times it was renewed (so every body differs).
    renewal: u64,
}

fn lease_payload(holder: &str, nonce: &str, ttl: Duration, renewal: u64) -> PutPayload {
    let body = LeaseBody {
        holder: holder.to_string(),
        nonce: nonce.to_string(),
        expires_unix_ms: unix_ms().saturating_add(ttl.as_millis() as u64),
        renewal,
    };
    PutPayload::from(serde_json::to_vec(&body).unwrap_or_default())
}

/// Is it the answer of a conditional write that lost (the object is
/// there, or changed, or went)?
fn lost_condition(e: &object_store::Error) -> bool {
    matches!(
        e,
        object_store::Error::AlreadyExists { .. }
            | object_store::Error::Precondition { .. }
            | object_store::Error::NotModified { .. }
            | object_store::Error::NotFound { .. }
    )
}

/// The text of an error and of each of its sources that it does not
/// already say, on one line, with S3's XML error documents cut to their
/// code and message.
fn error_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !more.is_empty() && !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    let text = condense_xml(&text);
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `<?xml …><Error><Code>C</Code><Message>M</Message>…</Error>` as `C (M)`.
fn condense_xml(text: &str) -> String {
    let (Some(start), Some(end)) = (text.find("<?xml"), text.find("</Error>")) else {
        return text.to_string();
    };
    if end < start {
        return text.to_string();
    }
    let document = &text[start..end];
    let field = |tag: &str| {
        let open = format!("<{tag}>");
        let from = document.find(&open)? + open.len();
        let to = document[from..].find('<')? + from;
        Some(document[from..to].to_string())
    };
    let short = match (field("Code"), field("Message")) {
        (Some(code), Some(message)) => format!("{code} ({message})"),
        (Some(code), None) => code,
        _ => return text.to_string(),
    };
    format!(
        "{}{short}{}",
        &text[..start],
        &text[end + "</Error>".len()..]
    )
}

/// `text` without `secrets`, and its URLs without user parts and query
/// strings.
fn redact(text: &str, secrets: &[String]) -> String {
    // URLs first: cut the query string (a presigned URL's signature and
    // credential) and the user part.
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = find_url(rest) {
        out.push_str(&rest[..at]);
        let url_end = rest[at..]
            .find(|c: char| c.is_whitespace() || matches!(c, ')' | '"' | '\'' | '<' | '>'))
            .map_or(rest.len(), |end| at + end);
        out.push_str(&clean_url(&rest[at..url_end]));
        rest = &rest[url_end..];
    }
    out.push_str(rest);
    for secret in secrets {
        if !secret.is_empty() {
            out = out.replace(secret.as_str(), "<redacted>");
        }
    }
    out
}

fn find_url(text: &str) -> Option<usize> {
    let lower = text.to_ascii_lowercase();
    match (lower.find("http://"), lower.find("https://")) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// A URL without its query string, fragment and user part.
fn clean_url(url: &str) -> String {
    let url = url.split(['?', '#']).next().unwrap_or("");
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = match rest.find('/') {
                Some(slash) => rest.split_at(slash),
                None => (rest, ""),
            };
            let host = authority.rsplit('@').next().unwrap_or(authority);
            format!("{scheme}://{host}{path}")
        }
        None => url.to_string(),
    }
}

/// What to check, for an error's kind and text.
fn hint(e: Option<&object_store::Error>, text: &str, bucket: &str) -> String {
    let says = |words: &[&str]| words.iter().any(|w| text.contains(w));
    let denied = matches!(
        e,
        Some(
            object_store::Error::PermissionDenied { .. }
                | object_store::Error::Unauthenticated { .. }
        )
    );
    if denied
        || says(&[
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
            "AccessDenied",
            "ExpiredToken",
            "InvalidToken",
            "403 Forbidden",
            "Unauthenticated",
        ])
    {
        "check the credentials: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and \
         AWS_SESSION_TOKEN for temporary ones), or the builder's credentials(..), must be \
         valid at this endpoint and allowed to use the bucket"
            .to_string()
    } else if says(&["NoSuchBucket"]) {
        format!(
            "check the bucket's name: there is no bucket {bucket:?} at this endpoint \
             (memento does not create buckets: create it first)"
        )
    } else if says(&[
        "error sending request",
        "onnection refused",
        "timed out",
        "Timeout",
        "dns error",
        "tcp connect",
        "connection closed",
        "onnection reset",
        "not allowed",
    ]) {
        "check the endpoint (AWS_ENDPOINT_URL, or the builder's endpoint(..)) and that the S3 \
         server is reachable from here; meanwhile calls compute their values"
            .to_string()
    } else {
        "check the endpoint, the credentials and the bucket's name".to_string()
    }
}

/// Is it the error of a request that never got an answer (refused, reset,
/// timed out, retries included), rather than the server's answer?
fn unreachable(e: &object_store::Error, text: &str) -> bool {
    matches!(e, object_store::Error::Generic { .. })
        && !text.contains("Server returned")
        && [
            "error sending request",
            "timed out",
            "onnection refused",
            "onnection reset",
            "connection closed",
            "tcp connect",
            "dns error",
        ]
        .iter()
        .any(|w| text.contains(w))
}

/// The answer of a `GET`.
struct Got {
    bytes: Vec<u8>,
    version: UpdateVersion,
}

impl Inner {
    fn location(&self) -> String {
        display_location(&self.bucket, &self.prefix)
    }

    /// The object path of `name` (checked).
    fn path(&self, name: &str) -> Result<Path> {
        check_name(name)?;
        let full = if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}/{name}", self.prefix)
        };
        Path::parse(&full).map_err(|_| Error::InvalidName(name.to_string()))
    }

    /// The object path of the folder `prefix` (`None`: the whole store).
    fn folder(&self, prefix: &str) -> Result<Option<Path>> {
        if prefix.is_empty() {
            if self.prefix.is_empty() {
                return Ok(None);
            }
            return Path::parse(&self.prefix)
                .map(Some)
                .map_err(|_| Error::InvalidName(self.prefix.clone()));
        }
        self.path(prefix).map(Some)
    }

    /// The name in this store of an object path (`None`: not under the
    /// prefix).
    fn name_of<'a>(&self, path: &'a str) -> Option<&'a str> {
        if self.prefix.is_empty() {
            return Some(path);
        }
        path.strip_prefix(self.prefix.as_str())?.strip_prefix('/')
    }

    /// Milliseconds since `epoch`, at least 1.
    fn now_ms(&self) -> u64 {
        (self.epoch.elapsed().as_millis() as u64).max(1)
    }

    /// [`run_always`](Self::run_always), unless the server could not be
    /// reached less than `outage_pause` ago: then an error at once.
    fn run<T: Send + 'static>(
        &self,
        action: &'static str,
        name: &str,
        future: impl Future<Output = T> + Send + 'static,
    ) -> Result<T> {
        if let Some((ago, left)) = self.paused() {
            return Err(Error::Remote {
                action,
                location: self.location(),
                name: name.to_string(),
                message: format!(
                    "not sent: the S3 server could not be reached {ago:?} ago, and is asked \
                     again in {left:?} (outage_pause); {}",
                    hint(None, "error sending request", &self.bucket)
                ),
            });
        }
        self.run_always(action, name, future)
    }

    /// While the server is taken for unreachable (see `outage_pause`): how
    /// long ago it could not be reached, and how long until it is asked
    /// again.
    fn paused(&self) -> Option<(Duration, Duration)> {
        let until = self.unreachable_until.load(Ordering::Relaxed);
        if until == 0 {
            return None;
        }
        let now = self.now_ms();
        if now >= until {
            return None;
        }
        let at = self.unreachable_at.load(Ordering::Relaxed);
        Some((
            Duration::from_millis(now.saturating_sub(at)),
            Duration::from_millis(until - now),
        ))
    }

    /// The last write of the noted accesses (the store goes, or the
    /// process exits): waits at most `last_flush_wait`, and sends nothing
    /// when none is noted or while the server is taken for unreachable.
    fn flush_before_going(&self) {
        if self.accesses.is_empty() {
            return;
        }
        if self.paused().is_some() {
            tracing::debug!(
                "{}: the server could not be reached: the last accesses are not recorded",
                self.location()
            );
            return;
        }
        let accesses = self.accesses.clone();
        let (tx, rx) = mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let _ = tx.send(accesses.flush().await);
        });
        match rx.recv_timeout(self.last_flush_wait) {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::debug!(
                "{}: the last accesses are not recorded: {}",
                self.location(),
                redact(&error_text(&e), &self.secrets)
            ),
            Err(_) => tracing::debug!(
                "{}: the last accesses are not recorded (no answer in {:?})",
                self.location(),
                self.last_flush_wait
            ),
        }
    }

    /// The paths of every object under the folder `prefix`, as listed.
    fn list_paths(&self, prefix: &str) -> Result<Vec<Path>> {
        let folder = self.folder(prefix)?;
        let s3 = self.s3.clone();
        let listed = self.run("list", prefix, async move {
            s3.list(folder.as_ref())
                .map_ok(|meta| meta.location)
                .try_collect::<Vec<Path>>()
                .await
        })?;
        listed.map_err(|e| self.error("list", prefix, &e))
    }

    /// Runs `future` on the store's runtime; the calling thread waits for
    /// its answer on a channel (so it works inside another runtime too).
    fn run_always<T: Send + 'static>(
        &self,
        action: &'static str,
        name: &str,
        future: impl Future<Output = T> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let _ = tx.send(future.await);
        });
        rx.recv().map_err(|_| Error::Remote {
            action,
            location: self.location(),
            name: name.to_string(),
            message: RUNTIME_GONE.to_string(),
        })
    }

    /// An object_store error as memento's, without secrets, with what to
    /// check.
    /// Notes an unreachable server (see `outage_pause`).
    fn error(&self, action: &'static str, name: &str, e: &object_store::Error) -> Error {
        let text = redact(&error_text(e), &self.secrets);
        if unreachable(e, &text) && !self.outage_pause.is_zero() {
            let now = self.now_ms();
            self.unreachable_at.store(now, Ordering::Relaxed);
            self.unreachable_until.store(
                now + self.outage_pause.as_millis() as u64,
                Ordering::Relaxed,
            );
        }
        let hint = hint(Some(e), &text, &self.bucket);
        Error::Remote {
            action,
            location: self.location(),
            name: name.to_string(),
            message: format!("{text}; {hint}"),
        }
    }

    /// `GET` of `name` (a `range` of it); `None` when absent. An absent
    /// bucket is an error.
    fn get(
        &self,
        action: &'static str,
        name: &str,
        range: Option<GetRange>,
    ) -> Result<Option<Got>> {
        let path = self.path(name)?;
        let s3 = self.s3.clone();
        let answer = self.run(action, name, async move {
            let options = GetOptions {
                range,
                ..GetOptions::default()
            };
            let result = s3.get_opts(&path, options).await?;
            let version = UpdateVersion {
                e_tag: result.meta.e_tag.clone(),
                version: result.meta.version.clone(),
            };
            let bytes = result.bytes().await?;
            Ok::<_, object_store::Error>(Got {
                bytes: Vec::from(bytes),
                version,
            })
        })?;
        match answer {
            Ok(got) => Ok(Some(got)),
            Err(e) => self.absent_or_error(action, name, e),
        }
    }

    /// `HEAD` of `name`: its size, `None` when absent.
    fn head(&self, action: &'static str, name: &str) -> Result<Option<u64>> {
        let path = self.path(name)?;
        let s3 = self.s3.clone();
        let answer = self.run(action, name, async move {
            let options = GetOptions {
                head: true,
                ..GetOptions::default()
            };
            s3.get_opts(&path, options).await.map(|r| r.meta.size)
        })?;
        match answer {
            Ok(size) => Ok(Some(size)),
            Err(e) => self.absent_or_error(action, name, e),
        }
    }

    /// `Ok(None)` for an absent object; an error for anything else,
    /// an absent bucket included.
    fn absent_or_error<T>(
        &self,
        action: &'static str,
        name: &str,
        e: object_store::Error,
    ) -> Result<Option<T>> {
        if matches!(e, object_store::Error::NotFound { .. })
            && !error_text(&e).contains("NoSuchBucket")
        {
            return Ok(None);
        }
        Err(self.error(action, name, &e))
    }

    /// One `PUT` of `payload` at `name` with `mode`; the new version.
    fn put(
        &self,
        action: &'static str,
        name: &str,
        payload: PutPayload,
        mode: PutMode,
    ) -> Result<std::result::Result<UpdateVersion, object_store::Error>> {
        let path = self.path(name)?;
        let s3 = self.s3.clone();
        self.run(action, name, async move {
            s3.put_opts(&path, payload, PutOptions::from(mode))
                .await
                .map(|r| UpdateVersion {
                    e_tag: r.e_tag,
                    version: r.version,
                })
        })
    }

    /// Deletes the objects at `paths` (one request per thousand); absent
    /// ones are no error.
    fn delete_paths(&self, name: &str, paths: Vec<Path>) -> Result<()> {
        if paths.is_empty() {
            return Ok(());
        }
        let s3 = self.s3.clone();
        let answer = self.run("delete", name, async move {
            let locations = stream::iter(paths.into_iter().map(Ok)).boxed();
            let mut deleted = s3.delete_stream(locations);
            let mut first_error = None;
            while let Some(result) = deleted.next().await {
                match result {
                    Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
            first_error.map_or(Ok(()), Err)
        })?;
        answer.map_err(|e| self.error("delete", name, &e))
    }
}

fn payload_of(parts: &[&[u8]]) -> PutPayload {
    let mut payload = PutPayloadMut::new();
    for part in parts {
        payload.extend_from_slice(part);
    }
    payload.freeze()
}

impl Store for S3Store {
    fn is_remote(&self) -> bool {
        true
    }

    fn read(&self, name: &str, out: &mut Vec<u8>) -> Result<bool> {
        let found = self.peek(name, out)?;
        if found {
            // A use: noted (an entry only), written with the next flush.
            self.inner.accesses.note(name);
        }
        Ok(found)
    }

    fn peek(&self, name: &str, out: &mut Vec<u8>) -> Result<bool> {
        match self.inner.get("read", name, None)? {
            Some(got) => {
                *out = got.bytes;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn touch(&self, name: &str) -> Result<()> {
        self.inner.accesses.note(name);
        Ok(())
    }

    fn read_range(&self, name: &str, range: Range<u64>, out: &mut Vec<u8>) -> Result<bool> {
        out.clear();
        if range.start >= range.end {
            return Ok(self.inner.head("read", name)?.is_some());
        }
        let get = if range.end == u64::MAX {
            GetRange::Offset(range.start)
        } else {
            GetRange::Bounded(range.clone())
        };
        match self.inner.get("read", name, Some(get)) {
            Ok(Some(got)) => {
                *out = got.bytes;
                Ok(true)
            }
            Ok(None) => Ok(false),
            // A range that starts at or past the end (an empty object's
            // too) is refused by S3 (416); here it reads as empty.
            Err(e) => match self.inner.head("read", name)? {
                None => Ok(false),
                Some(size) if size <= range.start => Ok(true),
                Some(_) => Err(e),
            },
        }
    }

    fn publish(&self, name: &str, bytes: &[u8]) -> Result<bool> {
        self.publish_parts(name, &[bytes])
    }

    fn publish_parts(&self, name: &str, parts: &[&[u8]]) -> Result<bool> {
        match self
            .inner
            .put("publish", name, payload_of(parts), PutMode::Create)?
        {
            Ok(_) => Ok(true),
            // There already (maybe this very write, retried after a 5xx):
            // the caller reads the stored one.
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => Ok(false),
            Err(e) => Err(self.inner.error("publish", name, &e)),
        }
    }

    fn write(&self, name: &str, bytes: &[u8]) -> Result<()> {
        self.write_parts(name, &[bytes])
    }

    fn write_parts(&self, name: &str, parts: &[&[u8]]) -> Result<()> {
        self.inner
            .put("write", name, payload_of(parts), PutMode::Overwrite)?
            .map(|_| ())
            .map_err(|e| self.inner.error("write", name, &e))
    }

    fn list_meta(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let folder = self.inner.folder(prefix)?;
        let records = self.inner.path(layout::ACCESS_DIR)?;
        let s3 = self.inner.s3.clone();
        let listed = self.inner.run("list", prefix, async move {
            // The records first: every name in them was read before they
            // were written, so before this listing began; a name they hold
            // that it misses is gone.
            let recorded = read_records(&s3, &records).await?;
            let listed = s3
                .list(folder.as_ref())
                .try_collect::<Vec<object_store::ObjectMeta>>()
                .await?;
            Ok::<_, object_store::Error>((recorded, listed))
        })?;
        let (recorded, listed) = listed.map_err(|e| self.inner.error("list", prefix, &e))?;
        let pending = self.inner.accesses.pending();
        let mut found: Vec<ObjectMeta> = listed
            .into_iter()
            .filter_map(|meta| {
                let name = self.inner.name_of(meta.location.as_ref())?;
                if layout::is_access_record(name) {
                    return None;
                }
                let accessed = recorded
                    .latest
                    .get(name)
                    .copied()
                    .max(pending.get(name).copied());
                let written = SystemTime::from(meta.last_modified);
                let modified = accessed.map_or(written, |ms| {
                    written.max(UNIX_EPOCH + Duration::from_millis(ms))
                });
                Some(ObjectMeta {
                    name: name.to_string(),
                    size: meta.size,
                    disk: meta.size,
                    modified,
                })
            })
            .collect();
        drop(pending);
        found.sort_by(|a, b| a.name.cmp(&b.name));
        if recorded.objects.len() > ACCESS_COMPACT_ABOVE {
            let count = recorded.objects.len();
            if let Err(e) = self.compact(prefix, recorded, &found) {
                tracing::debug!("{count} access records not merged: {e}");
            }
        }
        Ok(found)
    }

    fn delete(&self, name: &str) -> Result<()> {
        let path = self.inner.path(name)?;
        self.inner.delete_paths(name, vec![path])
    }

    fn delete_prefix(&self, prefix: &str) -> Result<()> {
        check_name(prefix)?;
        let paths = self.inner.list_paths(prefix)?;
        self.inner.delete_paths(prefix, paths)
    }

    fn location(&self) -> String {
        self.inner.location()
    }

    fn lock(&self, name: &str, timeout: Option<Duration>) -> Result<LockOutcome> {
        let inner = &self.inner;
        let path = inner.path(name)?;
        let nonce = nonce();
        let ttl = inner.lease_ttl;
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut pause = FIRST_POLL;
        let mut seed = u64::from_str_radix(&nonce[..16], 16).unwrap_or(1) | 1;
        loop {
            let payload = lease_payload(&inner.holder, &nonce, ttl, 0);
            match inner.put("take the lease", name, payload, PutMode::Create)? {
                Ok(version) => return Ok(self.held(path, nonce, version)),
                Err(e) if lost_condition(&e) => {}
                Err(e) => return Err(inner.error("take the lease", name, &e)),
            }
            // Someone holds it: expired?
            let released = match inner.get("read the lease", name, None)? {
                None => true,
                Some(got) => {
                    let expired = serde_json::from_slice::<LeaseBody>(&got.bytes)
                        .map_or(true, |lease| lease.expires_unix_ms <= unix_ms());
                    if expired {
                        let payload = lease_payload(&inner.holder, &nonce, ttl, 0);
                        match inner.put(
                            "take over the lease",
                            name,
                            payload,
                            PutMode::Update(got.version),
                        )? {
                            Ok(version) => return Ok(self.held(path, nonce, version)),
                            // Another waiter took it over first.
                            Err(e) if lost_condition(&e) => {}
                            Err(e) => return Err(inner.error("take over the lease", name, &e)),
                        }
                    }
                    false
                }
            };
            let now = Instant::now();
            if let Some(deadline) = deadline {
                if now >= deadline {
                    return Ok(LockOutcome::TimedOut);
                }
                pause = pause.min(deadline - now);
            }
            // Released meanwhile: take it at once.
            if released {
                continue;
            }
            // Waiters that began together would poll together, and all
            // but one find the lease taken again: each pause is drawn
            // between half and the whole of the backoff.
            std::thread::sleep(jitter(pause, &mut seed));
            pause = (pause * 2).min(MAX_POLL);
        }
    }
}

impl S3Store {
    /// The guard of a lease just taken: renews it until dropped.
    fn held(&self, path: Path, nonce: String, version: UpdateVersion) -> LockOutcome {
        let inner = &self.inner;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let renewer = inner.handle.spawn(renew(
            inner.s3.clone(),
            path.clone(),
            inner.holder.clone(),
            nonce.clone(),
            inner.lease_ttl,
            version,
            stopped,
        ));
        LockOutcome::Held(StoreLock::new(Lease {
            store: inner.clone(),
            path,
            nonce,
            stop: Some(stop),
            renewer: Some(renewer),
        }))
    }
}

/// Renews a lease every third of its time to live until `stop` (sent or
/// dropped).
async fn renew(
    s3: Arc<AmazonS3>,
    path: Path,
    holder: String,
    nonce: String,
    ttl: Duration,
    mut version: UpdateVersion,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let mut renewal = 0;
    loop {
        if tokio::time::timeout(ttl / 3, &mut stop).await.is_ok() {
            return;
        }
        renewal += 1;
        let payload = lease_payload(&holder, &nonce, ttl, renewal);
        let options = PutOptions::from(PutMode::Update(version.clone()));
        match s3.put_opts(&path, payload, options).await {
            Ok(result) => {
                version = UpdateVersion {
                    e_tag: result.e_tag,
                    version: result.version,
                }
            }
            Err(e) if lost_condition(&e) => {
                crate::log::warning!(
                    "the lease {path} expired and another process took it over \
                     (this one could not renew it in time): the same call may be \
                     computed twice; the stored result stays right"
                );
                return;
            }
            // An outage: try again at the next tick (the lease may expire
            // meanwhile; then another process may take it over).
            Err(_) => {}
        }
    }
}

/// A held lease: renewed while it lives, deleted when dropped.
struct Lease {
    store: Arc<Inner>,
    path: Path,
    nonce: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    renewer: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        drop(self.stop.take());
        let renewer = self.renewer.take();
        let s3 = self.store.s3.clone();
        let path = self.path.clone();
        let nonce = std::mem::take(&mut self.nonce);
        let name = path.to_string();
        // The renewals end first (no renewal after the delete), then the
        // lease goes if it is still this holder's.
        let _ = self
            .store
            .run_always("release the lease", &name, async move {
                if let Some(renewer) = renewer {
                    let _ = renewer.await;
                }
                let Ok(got) = s3.get_opts(&path, GetOptions::default()).await else {
                    return;
                };
                let Ok(bytes) = got.bytes().await else { return };
                let ours = serde_json::from_slice::<LeaseBody>(&bytes)
                    .is_ok_and(|lease| lease.nonce == nonce);
                if ours {
                    let once = stream::iter([Ok(path)]).boxed();
                    let _ = s3.delete_stream(once).collect::<Vec<_>>().await;
                }
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        let ok = |l: &str| parse_location(l).unwrap();
        assert_eq!(ok("s3://bucket"), ("bucket".into(), "".into()));
        assert_eq!(ok("s3://bucket/"), ("bucket".into(), "".into()));
        assert_eq!(
            ok("s3://my.bucket-1/a/b/"),
            ("my.bucket-1".into(), "a/b".into())
        );
        assert_eq!(ok("S3://bucket/p"), ("bucket".into(), "p".into()));
        for bad in [
            "s3://",
            "s3:///prefix",
            "bucket/prefix",
            "gs://bucket/prefix",
            "https://bucket/prefix",
            "s3://ab",
            "s3://Bucket",
            "s3://bucket_1",
            "s3://-bucket",
            "s3://bucket/a//b",
            "s3://bucket/a/../b",
            "s3://bucket/p?x=1",
        ] {
            let e = parse_location(bad).unwrap_err();
            assert!(matches!(e, Error::Option { .. }), "{bad}: {e}");
            assert!(e.to_string().contains("s3://bucket/prefix"), "{e}");
        }
    }

    #[test]
    fn redaction() {
        let secrets = vec!["AKIDSECRET".to_string(), "s3cr3t/key".to_string()];
        let text = "Error performing GET http://user:pw@127.0.0.1:9/b/k?X-Amz-Signature=abc&X-Amz-Credential=AKIDSECRET in 1s - body AKIDSECRET and s3cr3t/key";
        let clean = redact(text, &secrets);
        assert!(!clean.contains("AKIDSECRET"), "{clean}");
        assert!(!clean.contains("s3cr3t"), "{clean}");
        assert!(!clean.contains("Signature"), "{clean}");
        assert!(!clean.contains("pw@"), "{clean}");
        assert!(clean.contains("http://127.0.0.1:9/b/k in 1s"), "{clean}");
        assert_eq!(clean_url("https://h/p?q#f"), "https://h/p");
        assert_eq!(clean_url("http://a:b@h:1"), "http://h:1");
    }

    #[test]
    fn xml_errors_condensed() {
        let text = "403 Forbidden: <?xml version=\"1.0\" encoding=\"utf-8\"?>\n<Error><Code>InvalidAccessKeyId</Code><Message>The key is wrong</Message><RequestId>R</RequestId></Error> end";
        assert_eq!(
            condense_xml(text),
            "403 Forbidden: InvalidAccessKeyId (The key is wrong) end"
        );
        assert_eq!(condense_xml("no xml"), "no xml");
    }

    #[test]
    fn nonces_differ() {
        let a: std::collections::HashSet<_> = (0..1000).map(|_| nonce()).collect();
        assert_eq!(a.len(), 1000);
        assert!(a.iter().all(|n| n.len() == 32));
    }

    #[test]
    fn builder_debug_shows_no_secret() {
        let builder = S3Store::builder("s3://bucket/p")
            .credentials("AKIDVISIBLE", "SECRETVISIBLE")
            .session_token("TOKENVISIBLE")
            .endpoint("http://user:pw@127.0.0.1:1/?sig=1");
        let text = format!("{builder:?}");
        for secret in ["AKIDVISIBLE", "SECRETVISIBLE", "TOKENVISIBLE", "pw", "sig"] {
            assert!(!text.contains(secret), "{text}");
        }
    }

    #[test]
    fn plain_http_needs_allowing() {
        let e = S3Store::builder("s3://bucket/p")
            .endpoint("http://127.0.0.1:1")
            .allow_http(false)
            .build()
            .unwrap_err();
        assert!(e.to_string().contains("allow_http"), "{e}");
    }
}
