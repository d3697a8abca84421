//! Persistent memoization of slow, pure computations.
//!
//! Put `#[memento::cache]` on a function: the first call with some arguments
//! computes the result and stores it on disk; every later call with the same
//! arguments, in this process or any later one, returns the stored result at
//! once. Change the function's body and its old results are dropped, never
//! served stale. It is what Python's `joblib.Memory` is to scientists.
//!
//! ```
//! # let dir = tempfile::tempdir().unwrap();
//! # unsafe { std::env::set_var("MEMENTO_DIR", dir.path()) }; // one thread here
//! use std::time::{Duration, Instant};
//!
//! #[memento::cache]
//! fn slow_sine(x: f64) -> f64 {
//!     std::thread::sleep(Duration::from_millis(200));
//!     x.sin()
//! }
//!
//! let t = Instant::now();
//! assert_eq!(slow_sine(0.1), 0.1f64.sin()); // computed: 200 ms
//! assert!(t.elapsed() >= Duration::from_millis(200));
//! let t = Instant::now();
//! assert_eq!(slow_sine(0.1), 0.1f64.sin()); // stored: microseconds
//! assert!(t.elapsed() < Duration::from_millis(200));
//! ```
//!
//! # Where results go
//!
//! `#[memento::cache]` alone uses the folder named by the environment
//! variable `MEMENTO_DIR`, else `.memento` in the current directory. To choose
//! the folder in code, name a [`Memory`]:
//!
//! ```
//! use std::sync::LazyLock;
//!
//! static CACHE: LazyLock<memento::Memory> =
//!     LazyLock::new(|| memento::Memory::new(std::env::temp_dir().join("memento-docs")));
//!
//! #[memento::cache(memory = CACHE)]
//! fn mean(xs: &[f64]) -> f64 {
//!     xs.iter().sum::<f64>() / xs.len() as f64
//! }
//!
//! assert_eq!(mean(&[1.0, 2.0]), 1.5);
//! ```
//!
//! The layout is meant to be read by people:
//! `<location>/<crate>/<module>/…/<function>/` holds `function.json` (the
//! function's identity and fingerprint) and one file per result,
//! `ab/<rest of the key>.bin`: a header, the result, and at the end a line
//! of JSON for people (the function, how long it took, the arguments as
//! text).
//!
//! # Options of the attribute
//!
//! - `memory = EXPR`: the [`Memory`] to use (anything that derefs to one,
//!   typically a `static LazyLock<Memory>`).
//! - `ignore(a, b)`: arguments left out of the key (a verbosity flag, a
//!   progress bar); they need no serde traits.
//! - `version = "2"`: a manual version, part of the key. Bump it when the
//!   result changes for a reason the fingerprint cannot see, such as a
//!   data file it reads (for helper functions, see `depends`).
//! - `result = true | false`: whether the output is a `Result` of which only
//!   `Ok` is stored. By default, an output type whose last path segment is
//!   `Result` is one.
//! - `keep_versions`: keep the results of other versions of the code, so
//!   that reverting the code brings them back at once.
//! - `expires_after = "7d"`: results older than this are computed again
//!   (`s`, `m`, `h`, `d`, `w`; a bad value is a compile error).
//! - `refresh = "background"` (with `expires_after`): an expired result is
//!   returned at once and computed again on a thread of its own, once per
//!   key across threads and processes ([`Memory::lookup_refreshing`]);
//!   [`Memory::wait_for_refreshes`] waits for them, and so does the
//!   process at exit. The arguments must be owned and `Send + 'static`.
//! - `validate = path::to::fn`: a `fn(&entry::Metadata) -> bool` asked
//!   before a stored result is served; `false` computes it again.
//! - `compress = "lz4"`, `"zstd"` or `"zstd:19"` (a level): stored results
//!   are compressed (cargo features `lz4`, `zstd`, off by default; results
//!   stored before stay readable).
//! - `mmap`: the function returns [`Mapped<T>`](Mapped) while its body
//!   still returns the `T` (a `Vec<P>`, `Box<[P]>` or ndarray array of
//!   numbers): stored results come back as a read-only memory map of their
//!   entry (see the [`mapped`] module). Not with `compress` (a compile
//!   error).
//! - `handle = false`: no handle struct (see below).
//! - `depends(helper, module::helper, Self::method)`: helpers the body
//!   calls, each marked [`#[memento::tracked]`](macro@tracked): their
//!   fingerprints (and those of the helpers they depend on) are part of the
//!   function's, so changing a helper recomputes the functions that depend
//!   on it, and only them. Naming a function that is not tracked is a
//!   compile error that says what to add.
//!
//! # Handles, methods, async
//!
//! Beside each free function the attribute writes a struct of the same name
//! whose associated functions manage the function's results:
//! `f::check_call_in_cache(args)`, `f::call_with_outcome(args)`,
//! `f::call_forced(args)`, `f::call_and_shelve(args)` and `f::clear()` (see
//! the [`handle`] module), and `f::memory()` and `f::function()`: the
//! function's [`Memory`] and [`Function`], for the [`Memory`] methods that
//! take a function ([`Memory::clear_function`], [`Memory::contains`],
//! whose arguments are the keyed arguments as a tuple). Methods key `&self` (or leave it out with
//! `ignore(self)`), and functions of the same name in two `impl` blocks, or
//! nested in two functions, keep apart. `async fn`s work on any executor.
//!
//! ```
//! # let dir = tempfile::tempdir().unwrap();
//! # unsafe { std::env::set_var("MEMENTO_DIR", dir.path()) }; // one thread here
//! #[derive(serde::Serialize)]
//! struct Circle {
//!     r: f64,
//! }
//!
//! impl Circle {
//!     #[memento::cache]
//!     fn area(&self) -> f64 {
//!         std::f64::consts::PI * self.r * self.r
//!     }
//! }
//!
//! let c = Circle { r: 1.0 };
//! assert_eq!(c.area(), c.area());
//!
//! #[memento::cache]
//! fn cube(x: u64) -> u64 {
//!     x * x * x
//! }
//!
//! assert_eq!(cube(3), 27);
//! let memory = cube::memory();
//! assert!(memory.contains::<u64, _>(cube::function(), &(3u64,)));
//! assert_eq!(memory.clear_function(cube::function()).unwrap(), 1);
//! assert!(!cube::check_call_in_cache(3));
//! ```
//!
//! # Large arrays
//!
//! Arrays of numbers (`Vec<f64>`, `&[u8]`, `Box<[i32]>`, and with the
//! `ndarray` feature ndarray 0.17 arrays and views) are hashed as the bytes they
//! are, on every core, and stored as raw bytes that are read back in one go
//! or, with `#[memento::cache(mmap)]` and a [`Mapped`] result, memory-mapped.
//! The [`buffer`] and [`mapped`] modules tell how.
//!
//! ```
//! # let dir = tempfile::tempdir().unwrap();
//! # unsafe { std::env::set_var("MEMENTO_DIR", dir.path()) }; // one thread here
//! #[memento::cache]
//! fn smooth(samples: &[f64], width: usize) -> Vec<f64> {
//!     samples.windows(width).map(|w| w.iter().sum::<f64>() / width as f64).collect()
//! }
//!
//! let samples: Vec<f64> = (0..100_000).map(|i| (i as f64).sin()).collect();
//! let first = smooth(&samples, 8); // computed
//! assert_eq!(smooth(&samples, 8), first); // the same bytes: stored
//! ```
//!
//! # Limits
//!
//! A [`Memory`] can bound what it keeps: [`Memory::bytes_limit`],
//! [`Memory::items_limit`] and [`Memory::age_limit`] are enforced after
//! writes, least recently used results first (the [`evict`] module tells
//! how); [`Memory::stats`] tells what is kept. The `memento` command
//! (crate `memento-cli`) does the same from the shell.
//!
//! # What makes a key
//!
//! A [`Key`] is blake3 over: the key format version; the function's
//! identity (module path and name), the fingerprint of its tokens (the body
//! and signature, without comments, doc comments or formatting) and its
//! version; the fingerprint of the output type's serde shape (so a struct
//! whose fields were reordered never decodes old bytes); and the arguments
//! through a canonical serialization (see the [`key`] module).
//!
//! # Never a wrong result
//!
//! Each entry file carries its key and a checksum; a damaged, truncated or
//! foreign entry is logged, removed and recomputed (see [`codec`]). Writes are
//! atomic. A cache that cannot be written (read-only folder, full disk) makes
//! the function compute every time, with one warning; the value is always
//! returned.
//!
//! # Without the attribute
//!
//! Closures and functions chosen at run time use a [`Function`] with
//! [`Memory::call`], [`Memory::call_result`] or [`Memory::lookup`] (which the
//! attribute expands to).
//!
//! # Logging
//!
//! Through `tracing`: a miss logs `calling module::f(args)` and the duration
//! (info), a hit a debug event, an invalidation or damaged entry a warning.
//!
//! # Cargo features
//!
//! - `parallel` (default): large argument buffers and checksums are hashed
//!   on every core (blake3's rayon support).
//! - `ndarray`: ndarray arrays and views as arguments and results, for
//!   **ndarray 0.17** (`ndarray = "0.17"` in your `Cargo.toml`). An array of
//!   another ndarray version (0.16, say) is another type to Rust: it gets
//!   "the trait bound `ArrayBase<..>: Serialize` is not satisfied" (or "does
//!   not implement `Serialize`"); `cargo tree -d -i ndarray` shows two
//!   versions then.
//! - `lz4`, `zstd`: `#[memento::cache(compress = "..")]`.
//! - `s3`: `store::S3Store`, a store in an S3 bucket (on `object_store`,
//!   with a tokio runtime of its own), for [`Memory::with_store`].

#![warn(missing_docs)]

mod background;
pub mod buffer;
mod capped;
pub mod codec;
pub mod entry;
mod error;
pub mod evict;
mod exit;
mod file_ref;
mod function;
pub mod handle;
mod header;
mod index;
pub mod key;
mod layout;
mod log;
pub mod mapped;
mod memory;
pub mod store;
mod stored;

pub use error::{Error, Result};
pub use evict::{FunctionStats, Limits, Stats};
pub use file_ref::FileRef;
pub use function::{Function, FunctionRecord, Validate};
pub use handle::{Outcome, StoredResult};
pub use key::{Key, KeyError};
pub use log::MEMENTO_LOG;
pub use mapped::Mapped;
pub use memento_macros::cache;
/// Marks a helper that cached functions call, so that
/// `#[memento::cache(depends(helper))]` sees its changes.
///
/// The fingerprint of a cached function covers its own tokens only: a
/// change to a helper its body calls is not seen. Put
/// `#[memento::tracked]` on the helper (a free function, a method in an
/// `impl` block, a generic or `async fn`) and name it in the cached
/// function's `depends(..)`: the helper's fingerprint (its signature and
/// body, comments and formatting aside) is folded into the function's, so
/// that changing the helper recomputes every cached function that depends
/// on it, and nothing else. The helper itself is left unchanged: the
/// attribute writes a hidden const beside it (an associated const for a
/// method) that holds its fingerprint, computed at compile time.
///
/// A tracked helper can depend on others in turn,
/// `#[memento::tracked(depends(other))]`: a change anywhere in the chain
/// reaches every cached function above it. Helpers are named by the path
/// of the module or type that defines them (`depends(helper)`,
/// `depends(module::helper)`, `depends(Self::method)`,
/// `depends(Type::method)`); a name that is not a tracked function is a
/// compile error at the name: "add `#[memento::tracked]` to `helper`".
/// Dependencies cannot form a cycle (a compile error: cycle detected when
/// evaluating the const).
///
/// ```
/// mod units {
///     #[memento::tracked]
///     pub fn to_kelvin(celsius: f64) -> f64 {
///         celsius + 273.15
///     }
/// }
///
/// #[memento::tracked(depends(units::to_kelvin))]
/// fn radiance(celsius: f64) -> f64 {
///     5.670374419e-8 * units::to_kelvin(celsius).powi(4)
/// }
///
/// #[memento::cache(depends(radiance))]
/// fn total_radiance(temperatures: Vec<f64>) -> f64 {
///     temperatures.into_iter().map(radiance).sum()
/// }
///
/// fn main() {
/// #   let dir = tempfile::tempdir().unwrap();
/// #   unsafe { std::env::set_var("MEMENTO_DIR", dir.path()) }; // one thread here
///     let watts = total_radiance(vec![20.0, 25.0]); // computed
///     assert_eq!(total_radiance(vec![20.0, 25.0]), watts); // read back
///     // Editing `to_kelvin` or `radiance` changes total_radiance's
///     // fingerprint: its old results are not served, and are removed at
///     // its first miss.
///     assert!(total_radiance::function().code().is_some());
/// }
/// ```
///
/// Helpers are items of a module or methods of inherent `impl` blocks: a
/// function declared inside another function's body cannot be named in
/// `depends`, and a trait impl cannot hold the const (a method of a
/// generic type is named through `Self`).
pub use memento_macros::tracked;
pub use memory::{Change, Miss, Why};
pub use memory::{
    Collected, DamagedEntry, Location, Lookup, Memory, Pending, Reduction, Refresh, Refreshing,
    SplitBytes, StoredEntry, Verification, DEFAULT_DIR, MEMENTO_DIR,
};

/// Support for the code `#[memento::cache]` generates. Not a public API.
#[doc(hidden)]
pub mod __private {
    use std::sync::LazyLock;

    pub use serde::Serialize;

    mod bounds;
    pub use bounds::*;

    pub use crate::memory::{last_call, last_why, next_call};

    pub use crate::file_ref::digests::hooks as file_ref;

    /// `len` zero bytes, large ones backed by huge pages where the kernel
    /// allows (see `buffer.rs`): for memento's Python package, which reads
    /// large results into memory the way the core does. Not part of the API.
    pub fn zeroed_bytes(len: usize) -> Vec<u8> {
        crate::buffer::zeroed_elements::<u8>(len)
    }

    /// The type stored for an output type: `T` for `Result<T, E>`.
    pub trait ResultOk {
        /// The `Ok` type.
        type Ok;
    }

    impl<T, E> ResultOk for Result<T, E> {
        type Ok = T;
    }

    use crate::Memory;

    /// The function's name qualified by what `module_path!()` cannot see:
    /// the type of an `impl` block (`Circle::area`), the enclosing
    /// functions of a nested function (`outer::inner`). `here` is the type
    /// name of an item declared beside the expansion, `strip` its own part.
    /// A trait impl's method is `<Type as Trait>::name`.
    pub fn qualified_name(module: &str, here: &str, strip: &str, name: &str) -> String {
        let Some(path) = here.strip_suffix(strip) else {
            return name.to_string();
        };
        if path.starts_with('<') {
            return path.to_string();
        }
        path.strip_prefix(module)
            .and_then(|rest| rest.strip_prefix("::"))
            .filter(|rest| !rest.is_empty())
            .map_or_else(|| name.to_string(), str::to_string)
    }

    /// `compress = ".."`, checked at compile time, feature included.
    pub const fn compression(text: &str) -> crate::codec::Compression {
        match crate::codec::Compression::parse(text) {
            Ok(c) if c.available() => c,
            Ok(crate::codec::Compression::Lz4) => panic!(
                "#[memento::cache(compress = \"lz4\")] needs memento's `lz4` feature: \
                 features = [\"lz4\"] in Cargo.toml"
            ),
            Ok(_) => panic!(
                "#[memento::cache(compress = \"zstd\")] needs memento's `zstd` feature: \
                 features = [\"zstd\"] in Cargo.toml"
            ),
            Err(message) => panic!("{}", message),
        }
    }

    /// The Memory of `#[memento::cache]` without `memory = ..`.
    pub fn default_memory() -> &'static Memory {
        static DEFAULT: LazyLock<Memory> = LazyLock::new(Memory::from_env);
        &DEFAULT
    }

    pub use crate::buffer::{Probe, ViaBuffer, ViaSerde};

    pub use crate::function::{
        is_tracked, tracked, with_depends, IsTracked, IsTrackedMark, Tracked, Untracked,
    };
}
