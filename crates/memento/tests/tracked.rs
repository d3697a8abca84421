//! `#[memento::tracked]` helpers and `#[memento::cache(depends(..))]`: a
//! change to a helper (or to a helper it depends on) changes the
//! fingerprint of every cached function that depends on it, and of no other.
//!
//! `v1` and `v2` are the same code but for one token in the innermost
//! helper (`geometry::scale`), as a program before and after an edit.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::LazyLock;

use memento::{Function, Memory};
use serde::{Deserialize, Serialize};

static MEM: LazyLock<Memory> = LazyLock::new(|| Memory::new(common::fresh_dir("tracked")));
static RUNS: AtomicUsize = AtomicUsize::new(0);

mod v1 {
    use super::{MEM, RUNS};
    use std::sync::atomic::Ordering::SeqCst;

    pub mod geometry {
        /// The innermost helper.
        #[memento::tracked]
        pub fn scale() -> f64 {
            2.0
        }
    }

    #[memento::tracked(depends(geometry::scale))]
    pub fn area(r: f64) -> f64 {
        geometry::scale() * r * r
    }

    #[memento::tracked]
    pub fn unrelated(x: f64) -> f64 {
        x + 1.0
    }

    #[memento::cache(memory = MEM, depends(area))]
    pub fn total(r: f64) -> f64 {
        RUNS.fetch_add(1, SeqCst);
        area(r)
    }

    /// Depends on the chain's innermost helper directly, by its full path.
    #[memento::cache(memory = MEM, depends(crate::v1::geometry::scale))]
    pub fn doubled(x: f64) -> f64 {
        geometry::scale() * x
    }

    #[memento::cache(memory = MEM, depends(unrelated))]
    pub fn other(x: f64) -> f64 {
        unrelated(x)
    }

    #[memento::cache(memory = MEM)]
    pub fn plain(x: f64) -> f64 {
        x * 3.0
    }
}

mod v2 {
    use super::{MEM, RUNS};
    use std::sync::atomic::Ordering::SeqCst;

    pub mod geometry {
        /// The innermost helper, edited: `2.0` became `3.0`.
        #[memento::tracked]
        pub fn scale() -> f64 {
            3.0
        }
    }

    #[memento::tracked(depends(geometry::scale))]
    pub fn area(r: f64) -> f64 {
        geometry::scale() * r * r
    }

    #[memento::tracked]
    pub fn unrelated(x: f64) -> f64 {
        x + 1.0
    }

    #[memento::cache(memory = MEM, depends(area))]
    pub fn total(r: f64) -> f64 {
        RUNS.fetch_add(1, SeqCst);
        area(r)
    }

    /// Depends on the chain's innermost helper directly, by its full path.
    #[memento::cache(memory = MEM, depends(crate::v2::geometry::scale))]
    pub fn doubled(x: f64) -> f64 {
        geometry::scale() * x
    }

    #[memento::cache(memory = MEM, depends(unrelated))]
    pub fn other(x: f64) -> f64 {
        unrelated(x)
    }

    #[memento::cache(memory = MEM)]
    pub fn plain(x: f64) -> f64 {
        x * 3.0
    }
}

fn code(f: &Function) -> [u8; 32] {
    f.code().expect("the attribute fingerprints the code")
}

#[test]
fn a_change_in_the_innermost_helper_reaches_the_function_through_the_chain() {
    // total -> area -> geometry::scale: one token changed in scale.
    assert_ne!(code(v1::total::function()), code(v2::total::function()));
    // doubled -> geometry::scale, named by its full path.
    assert_ne!(code(v1::doubled::function()), code(v2::doubled::function()));
}

#[test]
fn functions_that_do_not_depend_on_the_changed_helper_keep_their_fingerprint() {
    // `other` depends on a helper that did not change; `plain` on none.
    assert_eq!(code(v1::other::function()), code(v2::other::function()));
    assert_eq!(code(v1::plain::function()), code(v2::plain::function()));
}

#[test]
fn the_same_helper_gives_the_same_fingerprint() {
    // Built twice (two `Function`s are made from the same tokens and consts).
    let a = code(v1::total::function());
    let again = Function::new("x", "y").fingerprint(a, "");
    assert_eq!(again.code(), Some(a));
    // And the tracked consts themselves: equal code, equal fingerprint.
    assert_eq!(
        v1::__memento_tracked_unrelated.fingerprint(),
        v2::__memento_tracked_unrelated.fingerprint()
    );
    assert_ne!(
        v1::__memento_tracked_area.fingerprint(),
        v2::__memento_tracked_area.fingerprint()
    );
    assert_ne!(
        v1::geometry::__memento_tracked_scale.fingerprint(),
        v2::geometry::__memento_tracked_scale.fingerprint()
    );
}

/// The two versions of `total` as one program before and after the edit
/// would see them: one name, in one location, only the code's fingerprint
/// differs. The result stored by the first is not served to the second.
#[test]
fn a_result_stored_before_the_helper_changed_is_not_served_after() {
    let memory = Memory::new(common::fresh_dir("tracked-one-location"));
    let before = Function::new("lab::physics", "total")
        .fingerprint(code(v1::total::function()), "fn total(r: f64) -> f64");
    let after = Function::new("lab::physics", "total")
        .fingerprint(code(v2::total::function()), "fn total(r: f64) -> f64");
    let runs = AtomicUsize::new(0);
    let run = |value: f64| {
        runs.fetch_add(1, SeqCst);
        value
    };
    let a: f64 = memory.call(&before, &(2.0f64,), || run(v1::area(2.0)));
    let b: f64 = memory.call(&before, &(2.0f64,), || run(v1::area(2.0)));
    assert_eq!(
        (a, b, runs.load(SeqCst)),
        (8.0, 8.0, 1),
        "stored, then read"
    );
    let c: f64 = memory.call(&after, &(2.0f64,), || run(v2::area(2.0)));
    assert_eq!((c, runs.load(SeqCst)), (12.0, 2), "computed again, not 8.0");
    let d: f64 = memory.call(&after, &(2.0f64,), || run(v2::area(2.0)));
    assert_eq!(
        (d, runs.load(SeqCst)),
        (12.0, 2),
        "the new result is stored"
    );
    // Whereas a function whose helpers did not change keeps its results.
    let other_before = Function::new("lab::physics", "other")
        .fingerprint(code(v1::other::function()), "fn other(x: f64) -> f64");
    let other_after = Function::new("lab::physics", "other")
        .fingerprint(code(v2::other::function()), "fn other(x: f64) -> f64");
    let e: f64 = memory.call(&other_before, &(1.0f64,), || run(v1::unrelated(1.0)));
    let f: f64 = memory.call(&other_after, &(1.0f64,), || unreachable!("kept"));
    assert_eq!((e, f, runs.load(SeqCst)), (2.0, 2.0, 3));
}

#[test]
fn functions_with_depends_are_cached_as_usual() {
    let before = RUNS.load(SeqCst);
    assert_eq!(v1::total(3.0), 18.0);
    assert_eq!(v1::total(3.0), 18.0);
    assert_eq!(v2::total(3.0), 27.0);
    assert_eq!(v2::total(3.0), 27.0);
    assert_eq!(RUNS.load(SeqCst) - before, 2);
    assert!(v1::total::check_call_in_cache(3.0));
}

/// The order of the names in `depends(..)` does not count.
mod order {
    pub mod ab {
        #[memento::cache(memory = crate::MEM, depends(crate::v1::unrelated, crate::v1::area))]
        pub fn both(x: f64) -> f64 {
            crate::v1::unrelated(x) + crate::v1::area(x)
        }
    }
    pub mod ba {
        #[memento::cache(memory = crate::MEM, depends(crate::v1::area, crate::v1::unrelated))]
        pub fn both(x: f64) -> f64 {
            crate::v1::unrelated(x) + crate::v1::area(x)
        }
    }
    pub mod a_only {
        #[memento::cache(memory = crate::MEM, depends(crate::v1::area))]
        pub fn both(x: f64) -> f64 {
            crate::v1::unrelated(x) + crate::v1::area(x)
        }
    }
    pub mod none {
        #[memento::cache(memory = crate::MEM)]
        pub fn both(x: f64) -> f64 {
            crate::v1::unrelated(x) + crate::v1::area(x)
        }
    }
}

#[test]
fn the_order_of_depends_does_not_count_but_its_contents_do() {
    let ab = code(order::ab::both::function());
    let ba = code(order::ba::both::function());
    let a_only = code(order::a_only::both::function());
    let none = code(order::none::both::function());
    assert_eq!(ab, ba);
    assert_ne!(ab, a_only);
    assert_ne!(a_only, none);
    assert_ne!(ab, none);
    assert_eq!(order::ab::both(1.0), 4.0);
}

// ---------------------------------------------------------------------
// Methods, generic and async helpers, `super::` paths, a cached helper.

static LENS_RUNS: AtomicUsize = AtomicUsize::new(0);

#[derive(Serialize, Deserialize)]
struct Lens {
    k: f64,
}

impl Lens {
    #[memento::tracked]
    fn factor(&self) -> f64 {
        self.k * 2.0
    }

    #[memento::tracked(depends(Self::factor))]
    pub fn focus(&self, x: f64) -> f64 {
        self.factor() * x
    }

    /// A method depending on a method of its own type, through `Self`.
    #[memento::cache(memory = MEM, depends(Self::focus))]
    fn power(&self, x: f64) -> f64 {
        LENS_RUNS.fetch_add(1, SeqCst);
        self.focus(x) + 1.0
    }
}

/// A generic impl: its tracked methods are read through `Self`.
#[derive(Serialize, Deserialize)]
struct Scaled<T> {
    v: T,
}

impl<T: Copy + Into<f64> + Serialize> Scaled<T> {
    #[memento::tracked]
    fn base(&self) -> f64 {
        self.v.into()
    }

    #[memento::cache(memory = MEM, depends(Self::base))]
    fn tripled(&self) -> f64 {
        LENS_RUNS.fetch_add(1, SeqCst);
        self.base() * 3.0
    }

    /// A method depending on a free helper (no `Self`).
    #[memento::cache(memory = MEM, depends(norm))]
    fn with_norm(&self) -> f64 {
        norm(&[self.v])
    }
}

/// A free function depending on a method, through the type's name.
#[memento::cache(memory = MEM, depends(Lens::focus))]
fn through_lens(k: f64, x: f64) -> f64 {
    Lens { k }.focus(x)
}

#[memento::tracked]
fn norm<T: Into<f64> + Copy>(values: &[T]) -> f64 {
    values
        .iter()
        .map(|v| (*v).into().powi(2))
        .sum::<f64>()
        .sqrt()
}

#[memento::cache(memory = MEM, depends(norm))]
fn normalized(values: Vec<f32>) -> Vec<f64> {
    let n = norm(&values);
    values.iter().map(|v| f64::from(*v) / n).collect()
}

#[memento::tracked]
async fn slow_double(x: u32) -> u32 {
    std::future::ready(x * 2).await
}

#[memento::cache(memory = MEM, depends(slow_double))]
async fn quadruple(x: u32) -> u32 {
    slow_double(slow_double(x).await).await
}

/// A helper that is itself cached, and tracked.
#[memento::tracked]
#[memento::cache(memory = MEM)]
fn cached_helper(x: u64) -> u64 {
    x + 10
}

/// The attributes the other way round: tracked sees the expanded body.
#[memento::cache(memory = MEM)]
#[memento::tracked]
fn cached_helper_below(x: u64) -> u64 {
    x + 20
}

#[memento::cache(memory = MEM, depends(cached_helper, cached_helper_below))]
fn uses_cached_helper(x: u64) -> u64 {
    cached_helper(x) * 2 + cached_helper_below(x)
}

mod nested {
    #[memento::cache(memory = crate::MEM, depends(super::norm, super::cached_helper))]
    pub fn from_parent(x: u64) -> u64 {
        super::cached_helper(x) + super::norm(&[3.0f64, 4.0]) as u64
    }
}

#[test]
fn methods_depend_on_methods_through_self_and_through_the_type() {
    let lens = Lens { k: 1.5 };
    let before = LENS_RUNS.load(SeqCst);
    assert_eq!(lens.power(2.0), 7.0);
    assert_eq!(lens.power(2.0), 7.0);
    assert_eq!(LENS_RUNS.load(SeqCst) - before, 1);
    assert_eq!(through_lens(1.5, 2.0), 6.0);
    assert!(through_lens::call_with_outcome(1.5, 2.0).hit);
    let before = LENS_RUNS.load(SeqCst);
    assert_eq!(Scaled { v: 2.0f32 }.tripled(), 6.0);
    assert_eq!(Scaled { v: 2.0f32 }.tripled(), 6.0);
    assert_eq!(Scaled { v: 4u8 }.tripled(), 12.0);
    assert_eq!(LENS_RUNS.load(SeqCst) - before, 2);
    assert_eq!(Scaled { v: -5i32 }.with_norm(), 5.0);
    // The method's chain: focus depends on factor.
    assert_ne!(
        Lens::__memento_tracked_focus.fingerprint(),
        Lens::__memento_tracked_factor.fingerprint()
    );
}

#[test]
fn generic_async_and_cached_helpers_can_be_tracked() {
    let n = normalized(vec![3.0, 4.0]);
    assert_eq!(n, vec![0.6, 0.8]);
    assert!(normalized::call_with_outcome(vec![3.0, 4.0]).hit);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    assert_eq!(runtime.block_on(quadruple(3)), 12);
    assert_eq!(runtime.block_on(quadruple(3)), 12);
    assert_eq!(uses_cached_helper(1), 43);
    assert!(uses_cached_helper::call_with_outcome(1).hit);
    assert_eq!(nested::from_parent(1), 16);
    // A cached helper's tracked fingerprint is its source's, whatever the
    // attribute below it does.
    assert_ne!(
        __memento_tracked_cached_helper.fingerprint(),
        __memento_tracked_norm.fingerprint()
    );
    assert_ne!(
        code(uses_cached_helper::function()),
        code(normalized::function())
    );
}
