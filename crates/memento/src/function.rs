//! Functions: the identity of a cached function, the fingerprint of its code
//! and of its output type, and the record (`function.json`) that lets a later
//! process see that either changed.

use std::any::TypeId;
use std::collections::HashMap;

use std::sync::{LazyLock, OnceLock, RwLock};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_reflection::{FormatHolder, Tracer, TracerConfig};

use crate::codec::{Compression, CODEC_POSTCARD, ENTRY_FORMAT_VERSION};
use crate::entry::Metadata;
use crate::key::{Key, KEY_FORMAT_VERSION};

/// A cached function: its identity (module path and name), the fingerprint
/// of its code, and an optional manual version.
///
/// `#[memento::cache]` builds one per function, with the fingerprint of the
/// function's tokens. Code that cannot use the attribute builds its own and
/// passes it to [`Memory::call`](crate::Memory::call); there, bump
/// [`version`](Function::version) whenever the computation changes.
///
/// ```
/// use memento::Function;
///
/// let f = Function::new("my_crate::stats", "mean").version("2");
/// assert_eq!(f.full_name(), "my_crate::stats::mean");
/// assert_eq!(f.folder(), "my_crate/stats/mean");
/// ```
#[derive(Debug, Clone)]
pub struct Function {
    module: String,
    name: String,
    version: String,
    code: Option<[u8; 32]>,
    signature: String,
    generic: bool,
    keep_versions: bool,
    expires_after: Option<Duration>,
    min_duration: Option<Duration>,
    validate: Option<Validate>,
    compression: Compression,
    /// The keyed arguments' names, for [`Why`](crate::Why).
    argument_names: Vec<String>,
    derived: Derived,
    shape: OnceLock<(TypeId, Shape)>,
}

/// A check of a stored result's metadata before it is served: `false`
/// removes the result and computes it again.
pub type Validate = fn(&Metadata) -> bool;

#[derive(Debug, Clone)]
struct Derived {
    hash: [u8; 32],
    folder: String,
    full_name: String,
}

/// The fingerprint of an output type's serde shape.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shape {
    pub(crate) hash: [u8; 32],
    /// False when the shape could not be traced and the type's name stands in.
    pub(crate) traced: bool,
}

impl Function {
    /// A function named `name` in the module `module` (as `module_path!()`
    /// gives it, `::`-separated; its first segment is the crate).
    pub fn new(module: impl Into<String>, name: impl Into<String>) -> Function {
        let mut f = Function {
            module: module.into(),
            name: name.into(),
            version: String::new(),
            code: None,
            signature: String::new(),
            generic: true,
            keep_versions: false,
            expires_after: None,
            min_duration: None,
            validate: None,
            compression: Compression::None,
            argument_names: Vec::new(),
            derived: Derived {
                hash: [0; 32],
                folder: String::new(),
                full_name: String::new(),
            },
            shape: OnceLock::new(),
        };
        f.derive();
        f
    }

    /// A manual version, part of every key: change it to drop old results
    /// when the computation changed in a way the fingerprint cannot see
    /// (a helper function it calls, a data file it reads).
    pub fn version(mut self, version: impl Into<String>) -> Function {
        self.version = version.into();
        self.derive();
        self
    }

    /// Keeps the results of other versions of the code instead of removing
    /// them when the code changes, so that reverting the code brings its
    /// results back at once. They age out under the limits like any result.
    pub fn keep_versions(mut self, keep: bool) -> Function {
        self.keep_versions = keep;
        self
    }

    /// Results older than `ttl` (since they were computed) are removed and
    /// computed again.
    ///
    /// ```
    /// use std::time::Duration;
    /// let f = memento::Function::new("m", "prices").expires_after(Duration::from_secs(3600));
    /// assert_eq!(f.ttl(), Some(Duration::from_secs(3600)));
    /// ```
    pub fn expires_after(mut self, ttl: Duration) -> Function {
        self.expires_after = Some(ttl);
        self
    }

    /// Stores only the results that took at least `least` to compute:
    /// quicker ones are returned and not stored (said at debug level), so
    /// that a cache holds the slow calls only.
    ///
    /// ```
    /// use std::time::Duration;
    /// # let dir = tempfile::tempdir().unwrap();
    /// let memory = memento::Memory::new(dir.path());
    /// let f = memento::Function::new("m", "quick").min_duration(Duration::from_secs(1));
    /// let _: u32 = memory.call(&f, &1u32, || 2); // far under a second
    /// assert!(!memory.contains::<u32, _>(&f, &1u32));
    /// ```
    pub fn min_duration(mut self, least: Duration) -> Function {
        self.min_duration = Some(least);
        self
    }

    pub(crate) fn min_duration_of(&self) -> Option<Duration> {
        self.min_duration
    }

    /// Names the arguments, in the order of the tuple passed as the
    /// arguments (`#[memento::cache]` gives its function's): an
    /// explanation of a miss ([`Why`](crate::Why)) then says which
    /// argument changed by its name. They are not part of any key.
    ///
    /// ```
    /// let f = memento::Function::new("m", "fit").argument_names(["data", "alpha"]);
    /// # let _ = f;
    /// ```
    pub fn argument_names<I>(mut self, names: I) -> Function
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.argument_names = names.into_iter().map(Into::into).collect();
        self
    }

    pub(crate) fn argument_names_list(&self) -> &[String] {
        &self.argument_names
    }

    /// The manual version (empty when none was given).
    pub(crate) fn version_text(&self) -> &str {
        &self.version
    }

    /// Checks each stored result's metadata before serving it (like joblib's
    /// `cache_validation_callback`); a rejected result is removed and
    /// computed again. Results of such a function are always read from the
    /// store, never from the in-memory layer.
    ///
    /// ```
    /// fn quick_ones_only(meta: &memento::entry::Metadata) -> bool {
    ///     meta.duration < 1.0
    /// }
    /// let f = memento::Function::new("m", "f").validate(quick_ones_only);
    /// # let _ = f;
    /// ```
    pub fn validate(mut self, check: Validate) -> Function {
        self.validate = Some(check);
        self
    }

    /// Compresses the results stored from now on (results already stored
    /// stay readable whatever their compression). See
    /// [`Compression`]; each kind needs its cargo feature (`lz4`, `zstd`).
    ///
    /// ```
    /// use memento::codec::Compression;
    /// let f = memento::Function::new("m", "big").compress(Compression::None);
    /// # let _ = f;
    /// ```
    pub fn compress(mut self, compression: Compression) -> Function {
        self.compression = compression;
        self
    }

    pub(crate) fn compression(&self) -> Compression {
        self.compression
    }

    /// The time to live set by [`expires_after`](Function::expires_after).
    pub fn ttl(&self) -> Option<Duration> {
        self.expires_after
    }

    pub(crate) fn keeps_versions(&self) -> bool {
        self.keep_versions
    }

    pub(crate) fn validator(&self) -> Option<Validate> {
        self.validate
    }

    /// The fingerprint of the function's code, computed by the caller, and
    /// its signature as text (for people, in `function.json`): part of
    /// every key, and compared with the record at the function's first miss
    /// (a different fingerprint drops the old results, as a changed body
    /// does under `#[memento::cache]`). For code that `#[memento::cache]`
    /// cannot fingerprint, such as the Python package's functions (the
    /// hash of their source's tokens).
    ///
    /// Unlike the attribute, two `Function`s of one name with different
    /// fingerprints in one process are not warned about: an interpreter
    /// redefines functions as a matter of course.
    ///
    /// ```
    /// use memento::Function;
    ///
    /// let code = *blake3::hash(b"def f(x): return x + 1").as_bytes();
    /// let f = Function::new("stats", "f").fingerprint(code, "f(x)");
    /// let g = Function::new("stats", "f").fingerprint([0; 32], "f(x)");
    /// # let dir = tempfile::tempdir().unwrap();
    /// let memory = memento::Memory::new(dir.path());
    /// let a: u32 = memory.call(&f, &1u32, || 2);
    /// let mut ran = false;
    /// let b: u32 = memory.call(&g, &1u32, || { ran = true; 3 });
    /// assert_eq!((a, b, ran), (2, 3, true), "another fingerprint, another key");
    /// ```
    pub fn fingerprint(mut self, fingerprint: [u8; 32], signature: impl Into<String>) -> Function {
        self.code = Some(fingerprint);
        self.signature = signature.into();
        self.derive();
        self
    }

    /// Used by `#[memento::cache]`: the fingerprint of the function's tokens,
    /// its signature as text, and whether it has type or const parameters.
    #[doc(hidden)]
    pub fn __code(mut self, fingerprint: [u8; 32], signature: &str, generic: bool) -> Function {
        self.code = Some(fingerprint);
        self.signature = signature.to_string();
        self.generic = generic;
        self.derive();
        self.register();
        self
    }

    /// Warns when two different functions of this process end up with one
    /// identity: they would share a folder and drop each other's results.
    fn register(&self) {
        static SEEN: LazyLock<std::sync::Mutex<HashMap<String, [u8; 32]>>> =
            LazyLock::new(Default::default);
        let (Some(code), Ok(mut seen)) = (self.code, SEEN.lock()) else {
            return;
        };
        let name = self.full_name().to_string();
        match seen.get(&name) {
            Some(other) if *other != code => crate::log::warning!(
                "memento: two different cached functions are both named {name} (for example \
                 functions of the same name in two closures of one function); they share one \
                 cache folder and drop each other's results: rename one, or give it a version"
            ),
            Some(_) => {}
            None => {
                seen.insert(name, code);
            }
        }
    }

    /// The fingerprint of the function's code, if it has one: the hash of
    /// its tokens under `#[memento::cache]` (with the fingerprints of the
    /// helpers named in `depends(..)` folded in), or the one given to
    /// [`fingerprint`](Function::fingerprint). Part of every key.
    ///
    /// ```
    /// use memento::Function;
    ///
    /// assert_eq!(Function::new("m", "f").code(), None);
    /// let f = Function::new("m", "f").fingerprint([7; 32], "f()");
    /// assert_eq!(f.code(), Some([7; 32]));
    /// ```
    pub fn code(&self) -> Option<[u8; 32]> {
        self.code
    }

    /// `module::name`.
    pub fn full_name(&self) -> &str {
        &self.derived.full_name
    }

    /// The function's folder under the cache location, `/`-separated: one
    /// folder per module path segment, then the name. Characters other than
    /// ASCII letters, digits, `_`, `-` and `.` are percent-encoded, so no
    /// name can leave the location.
    pub fn folder(&self) -> &str {
        &self.derived.folder
    }

    /// Hash of identity, code fingerprint, version and codec: part of every
    /// key, and what `function.json` records.
    pub(crate) fn hash(&self) -> &[u8; 32] {
        &self.derived.hash
    }

    fn derive(&mut self) {
        let mut h = blake3::Hasher::new();
        h.update(b"memento function");
        h.update(&KEY_FORMAT_VERSION.to_le_bytes());
        h.update(&CODEC_POSTCARD.to_le_bytes());
        for part in [&self.module, &self.name, &self.version] {
            h.update(&(part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        match &self.code {
            Some(code) => h.update(&[1]).update(code),
            None => h.update(&[0]),
        };
        let mut folder = String::new();
        for segment in split_path(&self.module)
            .into_iter()
            .chain(split_path(&self.name))
        {
            if !folder.is_empty() {
                folder.push('/');
            }
            push_segment(&mut folder, segment);
        }
        self.derived = Derived {
            hash: *h.finalize().as_bytes(),
            folder,
            full_name: format!("{}::{}", self.module, self.name),
        };
    }

    /// The shape fingerprint of the output type `T`, traced once per type.
    #[inline]
    pub(crate) fn shape<T: DeserializeOwned + 'static>(&self) -> Shape {
        let (id, shape) = self.shape.get_or_init(|| (TypeId::of::<T>(), trace::<T>()));
        if *id == TypeId::of::<T>() {
            *shape
        } else {
            // The same Function used with several output types (generic code
            // or a reused programmatic Function): never reuse another type's
            // shape.
            shape_of_type::<T>()
        }
    }

    /// The record written to `function.json`.
    pub(crate) fn record(&self, shape: Shape, output_type: &str) -> FunctionRecord {
        FunctionRecord {
            format: ENTRY_FORMAT_VERSION,
            function: self.full_name().to_string(),
            fingerprint: hex(&self.derived.hash),
            code: self.code.as_ref().map(hex),
            version: self.version.clone(),
            codec: CODEC_POSTCARD,
            key_format: KEY_FORMAT_VERSION,
            output_type: output_type.to_string(),
            output_shape: (!self.generic).then(|| hex(&shape.hash)),
            output_shape_traced: shape.traced,
            signature: self.signature.clone(),
        }
    }
}

/// The fingerprint of a `#[memento::tracked]` helper, as its attribute
/// writes it: the blake3 of the helper's tokens (signature and body), and
/// the fingerprints of the helpers it names in `depends(..)`. A const, built
/// at compile time; [`Tracked::fingerprint`] folds the whole chain into one
/// hash at run time, once per cached function (when its [`Function`] is
/// made), never per call.
#[doc(hidden)]
#[derive(Debug)]
pub struct Tracked {
    code: [u8; 32],
    /// The helpers named by a path (checked in a const item).
    depends: &'static [&'static Tracked],
    /// The helpers named through `Self` (read in place).
    self_depends: &'static [&'static Tracked],
    /// The stand-in the expansion finds when a name in `depends(..)` is not
    /// tracked ([`tracked`] refuses it at compile time).
    untracked: bool,
}

impl Tracked {
    /// A helper's fingerprint: its tokens' hash and its dependencies.
    pub const fn new(
        code: [u8; 32],
        depends: &'static [&'static Tracked],
        self_depends: &'static [&'static Tracked],
    ) -> Tracked {
        Tracked {
            code,
            depends,
            self_depends,
            untracked: false,
        }
    }

    /// What a name that is not tracked resolves to (never folded: the
    /// build stops first, see [`tracked`] and [`IsTracked`]).
    pub const UNTRACKED: Tracked = Tracked {
        code: [0; 32],
        depends: &[],
        self_depends: &[],
        untracked: true,
    };

    /// The helper's whole fingerprint: blake3 over its own tokens' hash and
    /// the whole fingerprints of its dependencies (sorted: the order of the
    /// names does not count), recursively. A change anywhere in the chain
    /// changes it. (A dependency reached twice, through two paths, is
    /// hashed once.)
    pub fn fingerprint(&self) -> [u8; 32] {
        self.fold(&mut Vec::new())
    }

    fn fold(&self, seen: &mut Vec<(*const Tracked, [u8; 32])>) -> [u8; 32] {
        // One address is one const value: the same fingerprint.
        if let Some((_, hash)) = seen.iter().find(|(p, _)| std::ptr::eq(*p, self)) {
            return *hash;
        }
        let mut helpers: Vec<[u8; 32]> = (self.depends.iter())
            .chain(self.self_depends)
            .map(|helper| helper.fold(seen))
            .collect();
        let hash = combine(b"memento tracked v1", &self.code, &mut helpers);
        seen.push((self, hash));
        hash
    }
}

/// blake3 over a domain, a code hash and the sorted helpers' hashes.
fn combine(domain: &[u8], code: &[u8; 32], helpers: &mut [[u8; 32]]) -> [u8; 32] {
    helpers.sort_unstable();
    let mut h = blake3::Hasher::new();
    h.update(domain);
    h.update(code);
    h.update(&(helpers.len() as u64).to_le_bytes());
    for helper in helpers.iter() {
        h.update(helper);
    }
    *h.finalize().as_bytes()
}

/// A name in `depends(..)`, checked at compile time: the expansion calls it
/// in a const, with the stand-in when the name is not tracked, and then
/// the build stops with `message` ("add `#[memento::tracked]` to ..").
#[doc(hidden)]
#[track_caller]
pub const fn tracked(helper: &'static Tracked, message: &'static str) -> &'static Tracked {
    if helper.untracked {
        panic!("{}", message)
    }
    helper
}

/// The second const of a tracked helper, `__memento_is_tracked_<name>`: it
/// says that the helper is tracked, to the type checker (for
/// `depends(Self::method)`, which a const cannot name).
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub struct IsTrackedMark;

/// The stand-in of [`IsTrackedMark`] for a method that is not tracked; `N`
/// is a marker type of the helper's name, for the error.
#[doc(hidden)]
pub struct Untracked<N>(std::marker::PhantomData<N>);

impl<N> Untracked<N> {
    /// The stand-in.
    pub const NEW: Untracked<N> = Untracked(std::marker::PhantomData);
}

/// Implemented by [`IsTrackedMark`] only: what `depends(Self::method)`
/// asks of the method's second const.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "`Self::{N}` in depends(..) is not a #[memento::tracked] function: add #[memento::tracked] to `{N}`",
    label = "not #[memento::tracked]"
)]
pub trait IsTracked<N> {}

impl<N> IsTracked<N> for IsTrackedMark {}

/// The check of `depends(Self::method)`: compiles only for a tracked method.
#[doc(hidden)]
pub const fn is_tracked<N, T: IsTracked<N>>(_: &T) {}

/// The code fingerprint of a cached function with `depends(..)`: its own
/// tokens' hash and its helpers' whole fingerprints (sorted, so that the
/// order of the names does not count). Without `depends`, the attribute
/// does not call it, and the fingerprint is the tokens' hash alone, as it
/// always was.
#[doc(hidden)]
pub fn with_depends(code: [u8; 32], depends: &[&Tracked], self_depends: &[&Tracked]) -> [u8; 32] {
    let mut seen = Vec::new();
    let mut helpers: Vec<[u8; 32]> = (depends.iter())
        .chain(self_depends)
        .map(|helper| helper.fold(&mut seen))
        .collect();
    combine(b"memento code with depends v1", &code, &mut helpers)
}

/// Splits a Rust path at its `::`s, but not at those inside `<..>`
/// (`<a::A as b::Tr>::go` is two segments).
fn split_path(path: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start, mut i) = (0i32, 0, 0);
    let bytes = path.as_bytes();
    while i < bytes.len() {
        match bytes[i] {
            b'<' => depth += 1,
            b'>' => depth -= 1,
            b':' if depth == 0 && bytes.get(i + 1) == Some(&b':') => {
                parts.push(&path[start..i]);
                start = i + 2;
                i += 1;
            }
            _ => {}
        }
        i += 1;
    }
    parts.push(&path[start..]);
    parts
}

fn push_segment(out: &mut String, segment: &str) {
    let segment = segment.strip_prefix("r#").unwrap_or(segment);
    if segment.is_empty() {
        out.push_str("%00");
        return;
    }
    if segment == "." || segment == ".." {
        out.push_str(&segment.replace('.', "%2E"));
        return;
    }
    out.extend(percent_encoding::utf8_percent_encode(segment, ESCAPED));
}

/// The bytes escaped in a folder's segment (as `%XX`, upper-case): all but
/// ASCII letters, digits, `_`, `-` and `.`, so that a segment is a plain
/// file name on every file system. Never changed: it names the folders of
/// existing caches.
const ESCAPED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'_')
    .remove(b'-')
    .remove(b'.');

pub(crate) fn hex(bytes: &[u8; 32]) -> String {
    Key::from_bytes(*bytes).to_hex()
}

/// Shapes of types seen through generic functions, one per type.
fn shape_of_type<T: DeserializeOwned + 'static>() -> Shape {
    static SHAPES: LazyLock<RwLock<HashMap<TypeId, Shape>>> = LazyLock::new(Default::default);
    let id = TypeId::of::<T>();
    if let Some(shape) = SHAPES.read().unwrap_or_else(|e| e.into_inner()).get(&id) {
        return *shape;
    }
    let shape = trace::<T>();
    SHAPES
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .insert(id, shape);
    shape
}

/// Traces the serde shape of `T` (its fields, their names, order and types,
/// recursively) and hashes it. A type that cannot be traced (a
/// `deserialize_any` format, a validating `Deserialize`) falls back to its
/// type name, with a warning: changes of its definition are then not seen.
fn trace<T: DeserializeOwned + 'static>() -> Shape {
    builtin_shape::<T>().unwrap_or_else(traced::<T>)
}

/// The shape of a primitive output type, exactly as tracing finds it (the
/// hash of a lone format and an empty registry, pinned equal by a test),
/// without running the tracer or hashing: the first hit in a fresh process
/// pays for neither.
fn builtin_shape<T: 'static>() -> Option<Shape> {
    let t = TypeId::of::<T>();
    macro_rules! builtin {
        ($($ty:ty => $hash:literal),* $(,)?) => {$(
            if t == TypeId::of::<$ty>() {
                return Some(Shape {
                    hash: const { unhex($hash) },
                    traced: true,
                });
            }
        )*};
    }
    builtin! {
        bool => "a660957cd4b8e9a58fd96029664752a52a0e06e59295500e68115c923ffc74b8",
        char => "1c04326c2e97592d7675c38b5d7b9d0e9c8f2cb160dc81ae51f5c2b177eac1c0",
        String => "3da034bbbc054422a4b7670ffb0a5e11755343bbaa457b4735154bbcbc58a5ee",
        () => "3854d46de7930b4fdc1389381860d9fa046db8c63fcf0430fc72290783c5bf3d",
        i8 => "29e3d68af62fcc89fd1e3655ff82cdf206e99ae1437fcaeea040c8cf15834152",
        i16 => "ab6b4841303987ab09a3b2008dd30ea2bdba37cc8ba7a31c0f71bd479e7bcea7",
        i32 => "098c65b5c27685fb175d4fc527b51d2c4c756fe7d53476f34f1326431cb21a0a",
        i64 => "ffa402fd1638e66cd5a8b6a7e4467aa566657cbb259ae5db81a3fcb4daaf741e",
        i128 => "3bc508a83d11338028ee9acf01c3fa5dd55e7d34b3d8b01423dd9adfab3ccd45",
        u8 => "b8e55aa5b42b03a257d7ed97f75b31aabf2e464f0a978aa968c7cef1fa22db2d",
        u16 => "2a90bc6ca669a5af6a95efcf4b229494a49ecfe7b763a3e59646bf273fc7bd01",
        u32 => "7de2a1bf7747ad730b401cc3b63d10789893e8232fb829ab80dc0e54d7613008",
        u64 => "9cee4a7a8c3e7f1be68e56b7b7a86989cfcbaf5a64c3b3dcbdd7e7b98d59e687",
        u128 => "f5decc2515ee5bc5aaa5c80b2bd3d3d5c131f7753739fcfa394fa4c1bfa00d4f",
        f32 => "f5e65fab161cbc6cf371149b7b6029c1c8b0e3c293c87e306e990830384adae9",
        f64 => "cd2af4950376f96027b365e7a79e395ce5359cb12c041fc0fabadc4b6e247f48",
    }
    None
}

/// 64 hex digits as 32 bytes, at compile time or run time.
const fn unhex(text: &str) -> [u8; 32] {
    const fn digit(c: u8) -> u8 {
        match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => panic!("not a lowercase hex digit"),
        }
    }
    let b = text.as_bytes();
    let mut out = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        out[i] = digit(b[2 * i]) << 4 | digit(b[2 * i + 1]);
        i += 1;
    }
    out
}

fn traced<T: DeserializeOwned>() -> Shape {
    let type_name = std::any::type_name::<T>();
    let mut tracer = Tracer::new(TracerConfig::default());
    let traced = tracer
        .trace_simple_type::<T>()
        .map_err(|e| e.to_string())
        .and_then(|(mut format, _)| {
            format.normalize().map_err(|e| e.to_string())?;
            let registry = tracer.registry().map_err(|e| e.to_string())?;
            Key::of(&("memento shape v1", &format, &registry)).map_err(|e| e.to_string())
        });
    match traced {
        Ok(key) => Shape {
            hash: *key.as_bytes(),
            traced: true,
        },
        Err(reason) => {
            crate::log::warning!(
                "memento cannot trace the serde shape of the output type {type_name} ({reason}); \
                 a change of that type's definition will not be detected: when you change it, \
                 bump the function's version (#[memento::cache(version = \"..\")])"
            );
            let key = Key::of(&("memento shape by name v1", type_name))
                .unwrap_or_else(|_| Key::from_bytes([0; 32]));
            Shape {
                hash: *key.as_bytes(),
                traced: false,
            }
        }
    }
}

/// `function.json`: what a later process compares to see whether the code or
/// the output type changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionRecord {
    /// Entry format version.
    pub format: u16,
    /// `module::name`.
    pub function: String,
    /// Hash of identity, code fingerprint, version and codec, hex.
    pub fingerprint: String,
    /// The fingerprint of the function's tokens, hex (`None` for a
    /// programmatic [`Function`]).
    pub code: Option<String>,
    /// The manual version.
    pub version: String,
    /// Payload codec.
    pub codec: u16,
    /// Key format version.
    pub key_format: u32,
    /// The output type's name, for people.
    pub output_type: String,
    /// Fingerprint of the output type's serde shape, hex (`None` for generic
    /// functions, whose keys carry each instance's shape).
    pub output_shape: Option<String>,
    /// False when the shape could not be traced and the type's name stands
    /// in for it (a change of the type's fields is then not detected).
    pub output_shape_traced: bool,
    /// The signature, for people.
    pub signature: String,
}

impl FunctionRecord {
    /// Do entries written under `stored` stay valid for `self`?
    pub(crate) fn same_code(&self, stored: &FunctionRecord) -> bool {
        self.fingerprint == stored.fingerprint
            && self.output_shape == stored.output_shape
            && self.format == stored.format
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_shapes_are_the_traced_ones() {
        fn same<T: DeserializeOwned + 'static>() {
            let quick = trace::<T>();
            let slow = traced::<T>();
            assert_eq!(quick.hash, slow.hash, "{}", std::any::type_name::<T>());
            assert!(builtin_shape::<T>().is_some());
        }
        same::<bool>();
        same::<char>();
        same::<String>();
        same::<()>();
        same::<i8>();
        same::<i16>();
        same::<i32>();
        same::<i64>();
        same::<i128>();
        same::<u8>();
        same::<u16>();
        same::<u32>();
        same::<u64>();
        same::<u128>();
        same::<f32>();
        same::<f64>();
        assert!(builtin_shape::<Vec<f64>>().is_none());
    }

    #[test]
    fn folders_stay_inside() {
        let f = Function::new("a::..::b c", "r#type");
        assert_eq!(f.folder(), "a/%2E%2E/b%20c/type");
        let f = Function::new("x/y", "");
        assert_eq!(f.folder(), "x%2Fy/%00");
    }

    /// The folder of an existing function never moves: every character
    /// (to U+07FF, and some beyond) is written exactly as memento 0.1 to 0.3
    /// wrote it (ASCII letters, digits, `_`, `-`, `.` as they are; every
    /// other byte of its UTF-8 as `%XX`, upper-case).
    #[test]
    fn folder_segments_are_written_as_they_always_were() {
        fn as_before(segment: &str) -> String {
            let mut out = String::new();
            for b in segment.bytes() {
                if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.') {
                    out.push(b as char);
                } else {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
            out
        }
        let chars = (1u32..0x800)
            .chain([0xFFFD, 0x1F600])
            .filter_map(char::from_u32);
        for c in chars {
            let segment = format!("a{c}b");
            let mut now = String::new();
            push_segment(&mut now, &segment);
            assert_eq!(now, as_before(&segment), "{c:?}");
        }
        assert_eq!(Function::new("m", "é~!").folder(), "m/%C3%A9%7E%21");
        assert_eq!(Function::new("m", "a.b-c_d").folder(), "m/a.b-c_d");
        assert_eq!(Function::new("m", ".").folder(), "m/%2E");
    }

    #[test]
    fn paths_split_outside_angle_brackets() {
        assert_eq!(split_path("a::b"), ["a", "b"]);
        assert_eq!(split_path("<m::A as m::Tr>::go"), ["<m::A as m::Tr>", "go"]);
        assert_eq!(split_path("B<_>::area"), ["B<_>", "area"]);
        let f = Function::new("c::m", "<c::m::A as c::m::Tr>::go");
        assert_eq!(
            f.folder(),
            "c/m/%3Cc%3A%3Am%3A%3AA%20as%20c%3A%3Am%3A%3ATr%3E/go"
        );
        assert_eq!(Function::new("c::m", "A::area").folder(), "c/m/A/area");
    }

    #[test]
    fn version_and_code_change_the_hash() {
        let a = Function::new("m", "f");
        let b = Function::new("m", "f").version("2");
        let c = Function::new("m", "f").__code([1; 32], "fn f()", false);
        assert_ne!(a.hash(), b.hash());
        assert_ne!(a.hash(), c.hash());
        assert_eq!(a.hash(), Function::new("m", "f").hash());
    }

    const INNER: Tracked = Tracked::new([1; 32], &[], &[]);
    const INNER_EDITED: Tracked = Tracked::new([2; 32], &[], &[]);
    const OTHER: Tracked = Tracked::new([3; 32], &[], &[]);
    const MID: Tracked = Tracked::new([4; 32], &[&INNER], &[]);
    const MID_EDITED: Tracked = Tracked::new([4; 32], &[&INNER_EDITED], &[]);
    const TOP: Tracked = Tracked::new([5; 32], &[&MID, &OTHER], &[]);
    const TOP_EDITED: Tracked = Tracked::new([5; 32], &[&MID_EDITED, &OTHER], &[]);
    const TOP_REORDERED: Tracked = Tracked::new([5; 32], &[&OTHER], &[&MID]);
    const DIAMOND: Tracked = Tracked::new([6; 32], &[&TOP, &MID, &INNER], &[]);

    #[test]
    fn a_change_anywhere_in_the_chain_changes_the_fingerprint() {
        assert_ne!(TOP.fingerprint(), TOP_EDITED.fingerprint());
        assert_ne!(MID.fingerprint(), MID_EDITED.fingerprint());
        assert_eq!(TOP.fingerprint(), TOP.fingerprint());
        // The order of the names (and whether through Self) does not count.
        assert_eq!(TOP.fingerprint(), TOP_REORDERED.fingerprint());
        // Own code and dependencies are told apart.
        assert_ne!(INNER.fingerprint(), MID.fingerprint());
        assert_ne!(DIAMOND.fingerprint(), TOP.fingerprint());
        let code = [9; 32];
        assert_ne!(
            with_depends(code, &[&TOP], &[]),
            with_depends(code, &[&TOP_EDITED], &[])
        );
        assert_eq!(
            with_depends(code, &[&MID, &OTHER], &[]),
            with_depends(code, &[&OTHER], &[&MID])
        );
        assert_ne!(with_depends(code, &[], &[]), code);
        assert_ne!(
            with_depends(code, &[&INNER], &[]),
            with_depends(code, &[&INNER, &INNER], &[])
        );
    }

    #[test]
    #[should_panic(expected = "add #[memento::tracked]")]
    fn the_stand_in_is_refused() {
        tracked(&Tracked::UNTRACKED, "add #[memento::tracked] to `f`");
    }

    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct P {
        x: f64,
        y: f64,
    }
    mod swapped {
        #[derive(serde::Deserialize)]
        #[allow(dead_code)]
        pub struct P {
            pub y: f64,
            pub x: f64,
        }
    }

    #[test]
    fn shape_sees_field_order() {
        assert!(trace::<P>().traced);
        assert_ne!(trace::<P>().hash, trace::<swapped::P>().hash);
        assert_eq!(trace::<P>().hash, trace::<P>().hash);
        assert_ne!(trace::<f64>().hash, trace::<f32>().hash);
    }
}
