//! The attribute on real functions: what is computed once, what is keyed,
//! and that the function keeps its signature.

mod common;

use common::fresh_dir;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::LazyLock;

use memento::Memory;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

static MEM: LazyLock<Memory> = LazyLock::new(|| Memory::new(fresh_dir("cache")));

static SQUARES: AtomicUsize = AtomicUsize::new(0);

#[memento::cache(memory = MEM)]
fn square(x: u64) -> u64 {
    SQUARES.fetch_add(1, SeqCst);
    x * x
}

#[test]
fn computes_once_per_argument() {
    assert_eq!(square(3), 9);
    assert_eq!(square(3), 9);
    assert_eq!(square(4), 16);
    assert_eq!(square(3), 9);
    assert_eq!(SQUARES.load(SeqCst), 2);
}

/// Not serializable at all: only usable as an ignored argument.
struct Progress {
    ticks: AtomicUsize,
}

static IGNORED: AtomicUsize = AtomicUsize::new(0);

#[memento::cache(memory = MEM, ignore(verbose, progress))]
fn with_ignored(x: i32, verbose: bool, progress: &Progress) -> i32 {
    IGNORED.fetch_add(1, SeqCst);
    progress.ticks.fetch_add(1, SeqCst);
    if verbose {
        println!("computing {x}");
    }
    x + 1
}

#[test]
fn ignored_arguments_are_not_keyed() {
    let p = Progress {
        ticks: AtomicUsize::new(0),
    };
    assert_eq!(with_ignored(1, true, &p), 2);
    assert_eq!(with_ignored(1, false, &p), 2);
    assert_eq!(with_ignored(2, false, &p), 3);
    assert_eq!(IGNORED.load(SeqCst), 2);
    assert_eq!(p.ticks.load(SeqCst), 2);
}

static VERSIONED: AtomicUsize = AtomicUsize::new(0);

#[memento::cache(memory = MEM, version = "2")]
fn versioned(x: u8) -> u8 {
    VERSIONED.fetch_add(1, SeqCst);
    x
}

#[test]
fn version_is_recorded_and_keyed() {
    assert_eq!(versioned(1), 1);
    assert_eq!(versioned(1), 1);
    assert_eq!(VERSIONED.load(SeqCst), 1);
    let record =
        std::fs::read_to_string(MEM.path().unwrap().join("cache/versioned/function.json")).unwrap();
    let record: memento::FunctionRecord = serde_json::from_str(&record).unwrap();
    assert_eq!(record.version, "2");
    assert_eq!(record.function, "cache::versioned");

    // The version is part of the key: the same identity with another
    // version does not see these results.
    let dir = fresh_dir("version");
    let memory = Memory::new(&dir);
    let v1 = memento::Function::new("m", "f").version("1");
    let v2 = memento::Function::new("m", "f").version("2");
    let mut runs = 0;
    let _: u8 = memory.call(&v1, &(1u8,), || {
        runs += 1;
        1
    });
    let _: u8 = memory.call(&v2, &(1u8,), || {
        runs += 1;
        1
    });
    let _: u8 = memory.call(&v2, &(1u8,), || {
        runs += 1;
        1
    });
    assert_eq!(runs, 2);
}

#[derive(Debug, PartialEq)]
struct NotSerde(String);

static PARSES: AtomicUsize = AtomicUsize::new(0);

#[memento::cache(memory = MEM)]
fn parse(text: &str) -> Result<i64, NotSerde> {
    PARSES.fetch_add(1, SeqCst);
    let n: i64 = text
        .trim()
        .parse()
        .map_err(|_| NotSerde(text.to_string()))?;
    if n < 0 {
        return Err(NotSerde("negative".into()));
    }
    Ok(n * 10)
}

static IO_READS: AtomicUsize = AtomicUsize::new(0);

#[memento::cache(memory = MEM)]
fn io_len(path: PathBuf) -> std::io::Result<u64> {
    IO_READS.fetch_add(1, SeqCst);
    Ok(std::fs::metadata(path)?.len())
}

#[test]
fn results_store_ok_only() {
    assert_eq!(parse("4"), Ok(40));
    assert_eq!(parse("4"), Ok(40));
    assert_eq!(PARSES.load(SeqCst), 1);
    assert_eq!(parse("x"), Err(NotSerde("x".into())));
    assert_eq!(parse("x"), Err(NotSerde("x".into())));
    assert_eq!(parse("-1"), Err(NotSerde("negative".into())));
    assert_eq!(PARSES.load(SeqCst), 4);

    let missing = fresh_dir("missing-file");
    assert!(io_len(missing.clone()).is_err());
    assert!(io_len(missing).is_err());
    assert_eq!(IO_READS.load(SeqCst), 2);
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let n = io_len(here.clone()).unwrap();
    assert_eq!(io_len(here).unwrap(), n);
    assert_eq!(IO_READS.load(SeqCst), 3);
}

type Outcome = Result<u32, String>;
static ALIASED: AtomicUsize = AtomicUsize::new(0);

/// `result = true` for an alias the macro cannot recognise.
#[memento::cache(memory = MEM, result = true)]
fn aliased(x: u32) -> Outcome {
    ALIASED.fetch_add(1, SeqCst);
    if x == 0 {
        Err("zero".into())
    } else {
        Ok(x)
    }
}

static WHOLE: AtomicUsize = AtomicUsize::new(0);

/// `result = false`: the whole `Result`, `Err` included, is stored.
#[memento::cache(memory = MEM, result = false)]
fn whole(x: u32) -> Result<u32, String> {
    WHOLE.fetch_add(1, SeqCst);
    if x == 0 {
        Err("zero".into())
    } else {
        Ok(x)
    }
}

#[test]
fn result_override() {
    assert_eq!(aliased(0), Err("zero".into()));
    assert_eq!(aliased(0), Err("zero".into()));
    assert_eq!(aliased(1), Ok(1));
    assert_eq!(aliased(1), Ok(1));
    assert_eq!(ALIASED.load(SeqCst), 3);
    assert_eq!(whole(0), Err("zero".into()));
    assert_eq!(whole(0), Err("zero".into()));
    assert_eq!(WHOLE.load(SeqCst), 1);
}

static GENERIC: AtomicUsize = AtomicUsize::new(0);

/// Generics, a where clause, patterns, `mut`, early return, a consumed
/// argument, visibility.
#[memento::cache(memory = MEM)]
pub(crate) fn generic<T>(items: Vec<T>, (lo, hi): (usize, usize), mut scale: u32) -> Vec<T>
where
    T: Serialize + DeserializeOwned + Clone + 'static,
{
    GENERIC.fetch_add(1, SeqCst);
    scale += 0;
    if lo >= hi || scale == 0 {
        return Vec::new();
    }
    items.into_iter().skip(lo).take(hi - lo).collect()
}

#[test]
fn signature_is_kept() {
    let f: fn(Vec<u8>, (usize, usize), u32) -> Vec<u8> = generic::<u8>;
    assert_eq!(f(vec![1, 2, 3, 4], (1, 3), 1), vec![2, 3]);
    assert_eq!(generic(vec![1u8, 2, 3, 4], (1, 3), 1), vec![2, 3]);
    assert_eq!(GENERIC.load(SeqCst), 1);
    // Other type, same values: another key, another shape.
    assert_eq!(generic(vec![1u16, 2, 3, 4], (1, 3), 1), vec![2u16, 3]);
    assert_eq!(
        generic(vec!["a".to_string(), "b".into()], (0, 1), 1),
        vec!["a".to_string()]
    );
    assert_eq!(generic(vec![1u8, 2, 3, 4], (1, 3), 0), Vec::<u8>::new());
    assert_eq!(GENERIC.load(SeqCst), 4);
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Summary {
    count: usize,
    mean: f64,
    by_name: BTreeMap<String, f64>,
}

static SUMMARIES: AtomicUsize = AtomicUsize::new(0);

#[memento::cache(memory = MEM)]
fn summarize(data: &[(String, f64)]) -> Summary {
    SUMMARIES.fetch_add(1, SeqCst);
    Summary {
        count: data.len(),
        mean: data.iter().map(|d| d.1).sum::<f64>() / data.len() as f64,
        by_name: data.iter().cloned().collect(),
    }
}

#[test]
fn structured_values() {
    let data = vec![("a".to_string(), 1.0), ("b".to_string(), 3.0)];
    let s = summarize(&data);
    assert_eq!(s.mean, 2.0);
    assert_eq!(summarize(&data), s);
    assert_eq!(SUMMARIES.load(SeqCst), 1);
    let other = vec![("a".to_string(), 1.0), ("b".to_string(), 5.0)];
    assert_eq!(summarize(&other).mean, 3.0);
    assert_eq!(SUMMARIES.load(SeqCst), 2);
}

static UNIT_ARGS: AtomicUsize = AtomicUsize::new(0);

#[memento::cache(memory = MEM)]
fn no_arguments() -> String {
    UNIT_ARGS.fetch_add(1, SeqCst);
    "constant".to_string()
}

#[test]
fn no_arguments_is_one_entry() {
    assert_eq!(no_arguments(), "constant");
    assert_eq!(no_arguments(), "constant");
    assert_eq!(UNIT_ARGS.load(SeqCst), 1);
}

mod a {
    pub mod b {
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        pub static RUNS: AtomicUsize = AtomicUsize::new(0);
        #[memento::cache(memory = super::super::MEM)]
        pub fn same_name(x: u8) -> u8 {
            RUNS.fetch_add(1, SeqCst);
            x
        }
    }
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    pub static RUNS: AtomicUsize = AtomicUsize::new(0);
    #[memento::cache(memory = super::MEM)]
    pub fn same_name(x: u8) -> u8 {
        RUNS.fetch_add(1, SeqCst);
        x + 100
    }
}

#[test]
fn module_path_tells_functions_apart() {
    assert_eq!(a::same_name(1), 101);
    assert_eq!(a::b::same_name(1), 1);
    assert_eq!(a::same_name(1), 101);
    assert_eq!(a::b::same_name(1), 1);
    assert_eq!(a::RUNS.load(SeqCst) + a::b::RUNS.load(SeqCst), 2);
    let root = MEM.path().unwrap();
    assert!(root.join("cache/a/same_name/function.json").is_file());
    assert!(root.join("cache/a/b/same_name/function.json").is_file());
}

#[test]
fn location_is_created_with_gitignore() {
    let dir = fresh_dir("layout");
    let memory = Memory::new(&dir);
    assert!(!dir.exists(), "nothing is created before the first write");
    let f = memento::Function::new("my_crate::stats", "mean");
    let v: f64 = memory.call(&f, &(vec![1.0f64, 2.0],), || 1.5);
    assert_eq!(v, 1.5);
    assert_eq!(
        std::fs::read_to_string(dir.join(".gitignore")).unwrap(),
        "*\n"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }
    let outputs = common::outputs(&dir);
    assert_eq!(outputs.len(), 1);
    let rel = outputs[0].strip_prefix(&dir).unwrap();
    let parts: Vec<_> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    assert_eq!(parts[..3], ["my_crate", "stats", "mean"]);
    assert_eq!(parts.len(), 5, "one file per entry: {parts:?}");
    assert_eq!(parts[3].len(), 2);
    let rest = parts[4].strip_suffix(".bin").unwrap();
    assert_eq!(rest.len(), 62);
    let name = rel.to_string_lossy().into_owned();
    let meta = memento::entry::Metadata::read(memory.store(), &name)
        .unwrap()
        .unwrap();
    assert_eq!(meta.key, format!("{}{rest}", parts[3]));
    assert_eq!(meta.function, "my_crate::stats::mean");
    assert_eq!(meta.args, "[[1.0,2.0]]");
    assert_eq!(
        meta.output_size,
        std::fs::metadata(&outputs[0]).unwrap().len()
    );
    assert!(meta.created.ends_with('Z'));
    // The info is readable at the end of the file.
    let bytes = std::fs::read(&outputs[0]).unwrap();
    assert!(bytes.ends_with(br#""args":"[[1.0,2.0]]"}"#));
}

#[test]
fn threads_share_one_memory() {
    let f = memento::Function::new("threads", "cube");
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let memory = MEM.clone();
            std::thread::spawn(move || {
                let f = memento::Function::new("threads", "cube");
                for i in 0..50u64 {
                    let x = (i + t) % 20;
                    let y: u64 = memory.call(&f, &(x,), || x * x * x);
                    assert_eq!(y, x * x * x);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let y: u64 = MEM.call(&f, &(3u64,), || unreachable!("stored by the threads"));
    assert_eq!(y, 27);
}

#[test]
fn memory_is_clone_send_sync_and_cheap() {
    fn assert_traits<T: Clone + Send + Sync + 'static>() {}
    assert_traits::<Memory>();
    assert_traits::<memento::Function>();
    assert_eq!(std::mem::size_of::<Memory>(), std::mem::size_of::<usize>());
}

#[memento::cache(memory = MEM)]
fn size_of_type<T: 'static>() -> usize {
    std::mem::size_of::<T>()
}

#[memento::cache(memory = MEM)]
fn repeat<const N: usize>(x: u8) -> Vec<u8> {
    vec![x; N]
}

#[test]
fn concrete_types_and_constants_are_keyed() {
    assert_eq!(size_of_type::<u8>(), 1);
    assert_eq!(size_of_type::<u64>(), 8);
    assert_eq!(size_of_type::<u8>(), 1);
    assert_eq!(repeat::<2>(7), vec![7, 7]);
    assert_eq!(repeat::<3>(7), vec![7, 7, 7]);
}
