//! Methods, associated functions, trait impls and nested functions: each
//! has its own identity, even where `module_path!()` and the name agree.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::LazyLock;

use memento::Memory;
use serde::{Deserialize, Serialize};

static MEM: LazyLock<Memory> = LazyLock::new(|| Memory::new(common::fresh_dir("methods")));
static RUNS: AtomicUsize = AtomicUsize::new(0);

#[derive(Serialize, Deserialize)]
struct Circle {
    r: f64,
}

#[derive(Serialize, Deserialize)]
struct Square {
    side: f64,
}

impl Circle {
    #[memento::cache(memory = MEM)]
    fn area(&self) -> f64 {
        RUNS.fetch_add(1, SeqCst);
        3.0 * self.r * self.r
    }
}

impl Square {
    #[memento::cache(memory = MEM)]
    fn area(&self) -> f64 {
        RUNS.fetch_add(1, SeqCst);
        self.side * self.side
    }
}

trait Perimeter {
    fn perimeter(&self) -> f64;
}

impl Perimeter for Square {
    #[memento::cache(memory = MEM)]
    fn perimeter(&self) -> f64 {
        4.0 * self.side
    }
}

#[test]
fn same_name_in_two_impls() {
    let c = Circle { r: 2.0 };
    let s = Square { side: 2.0 };
    let before = RUNS.load(SeqCst);
    assert_eq!(c.area(), 12.0);
    assert_eq!(s.area(), 4.0);
    assert_eq!(c.area(), 12.0);
    assert_eq!(s.area(), 4.0);
    assert_eq!(Square { side: 3.0 }.area(), 9.0, "self is part of the key");
    assert_eq!(RUNS.load(SeqCst) - before, 3);
    assert_eq!(s.perimeter(), 8.0);
    let root = MEM.path().unwrap();
    assert!(root.join("methods/Circle/area/function.json").is_file());
    assert!(root.join("methods/Square/area/function.json").is_file());
    let names: Vec<String> = MEM
        .stats()
        .unwrap()
        .functions
        .into_iter()
        .map(|f| f.name)
        .collect();
    assert!(
        names.contains(&"methods::Circle::area".to_string()),
        "{names:?}"
    );
    assert!(
        names.contains(&"methods::<methods::Square as methods::Perimeter>::perimeter".to_string()),
        "{names:?}"
    );
}

/// Not serializable: only usable with `ignore(self)`.
struct Solver {
    calls: AtomicUsize,
}

impl Solver {
    #[memento::cache(memory = MEM, ignore(self))]
    fn solve(&self, n: u64) -> u64 {
        self.calls.fetch_add(1, SeqCst);
        (1..=n).sum()
    }

    /// Associated function naming `Self` (no handle is generated for it).
    #[memento::cache(memory = MEM)]
    fn default_n() -> u64 {
        Self::limit()
    }

    fn limit() -> u64 {
        10
    }
}

#[test]
fn ignored_self() {
    let a = Solver {
        calls: AtomicUsize::new(0),
    };
    let b = Solver {
        calls: AtomicUsize::new(0),
    };
    assert_eq!(a.solve(10), 55);
    assert_eq!(b.solve(10), 55);
    assert_eq!(a.calls.load(SeqCst) + b.calls.load(SeqCst), 1);
    assert_eq!(Solver::default_n(), 10);
}

fn outer_one(x: u32) -> u32 {
    #[memento::cache(memory = MEM)]
    fn inner(x: u32) -> u32 {
        x + 1
    }
    inner(x)
}

fn outer_two(x: u32) -> u32 {
    #[memento::cache(memory = MEM)]
    fn inner(x: u32) -> u32 {
        x + 2
    }
    assert!(inner::check_call_in_cache(x) || !inner::check_call_in_cache(x));
    inner(x)
}

#[test]
fn nested_functions_of_the_same_name() {
    for _ in 0..3 {
        assert_eq!(outer_one(1), 2);
        assert_eq!(outer_two(1), 3);
    }
    let root = MEM.path().unwrap();
    assert!(root.join("methods/outer_one/inner/function.json").is_file());
    assert!(root.join("methods/outer_two/inner/function.json").is_file());
}
