//! Key properties (proptest) and the golden keys that pin the key format.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use memento::{Function, Key, Lookup, Memory};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use serde::Serialize;

fn key<T: Serialize + ?Sized>(v: &T) -> Key {
    Key::of(v).unwrap()
}

proptest! {
    // A failing case is saved to `tests/proptest-regressions/` (proptest's
    // default looks for a `lib.rs` beside the test and warns).
    #![proptest_config(ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "tests/proptest-regressions/keys.txt",
        ))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn strings_hash_alike(s in ".*") {
        let boxed: Box<str> = s.clone().into_boxed_str();
        prop_assert_eq!(key(&s), key(s.as_str()));
        prop_assert_eq!(key(&s), key(&boxed));
    }

    #[test]
    fn sequences_hash_alike(v in prop::array::uniform4(any::<i32>())) {
        let vec: Vec<i32> = v.to_vec();
        prop_assert_eq!(key(&vec), key(&v));
        prop_assert_eq!(key(&vec), key(&vec[..]));
        prop_assert_eq!(key(&vec), key(&std::collections::VecDeque::from(vec.clone())));
    }

    #[test]
    fn maps_ignore_insertion_order(pairs in prop::collection::vec((any::<u16>(), ".{0,8}"), 0..40)) {
        let forward: HashMap<u16, String> = pairs.iter().cloned().collect();
        // The same contents, built in another order and with another capacity.
        let mut backward: HashMap<u16, String> = HashMap::with_capacity(200);
        for (k, v) in forward.iter().collect::<Vec<_>>().into_iter().rev() {
            backward.insert(*k, v.clone());
        }
        let sorted: BTreeMap<u16, String> = forward.clone().into_iter().collect();
        prop_assert_eq!(key(&forward), key(&backward));
        prop_assert_eq!(key(&forward), key(&sorted));
    }

    #[test]
    fn sets_ignore_insertion_order(items in prop::collection::vec(any::<i64>(), 0..60)) {
        let a: HashSet<i64> = items.iter().copied().collect();
        let mut b: HashSet<i64> = HashSet::with_capacity(500);
        b.extend(items.iter().rev().copied());
        let c: BTreeSet<i64> = items.iter().copied().collect();
        prop_assert_eq!(key(&a), key(&b));
        prop_assert_eq!(key(&a), key(&c));
    }

    #[test]
    fn different_values_different_keys(
        a in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..4), 0..6),
        b in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..4), 0..6),
    ) {
        prop_assume!(a != b);
        prop_assert_ne!(key(&a), key(&b));
    }

    #[test]
    fn different_tuples_different_keys(
        a in (any::<Option<u32>>(), ".{0,6}", any::<f64>()),
        b in (any::<Option<u32>>(), ".{0,6}", any::<f64>()),
    ) {
        prop_assume!(a.0 != b.0 || a.1 != b.1 || a.2.to_bits() != b.2.to_bits());
        prop_assert_ne!(key(&a), key(&b));
    }

    #[test]
    fn floats_hash_by_bits(x in any::<f64>()) {
        prop_assert_eq!(key(&x), key(&f64::from_bits(x.to_bits())));
        prop_assert_ne!(key(&x), key(&f64::from_bits(x.to_bits() ^ 1)));
    }

    #[test]
    fn sequence_of_sets_keeps_its_order(a in any::<u8>(), b in any::<u8>()) {
        prop_assume!(a != b);
        let x = vec![HashSet::from([a]), HashSet::from([b])];
        let y = vec![HashSet::from([b]), HashSet::from([a])];
        prop_assert_ne!(key(&x), key(&y));
    }
}

#[test]
fn structure_is_part_of_the_key() {
    #[derive(Serialize)]
    struct A {
        x: u8,
    }
    #[derive(Serialize)]
    struct Renamed {
        y: u8,
    }
    #[derive(Serialize)]
    struct Pair {
        x: u8,
        y: u8,
    }
    #[derive(Serialize)]
    struct Swapped {
        y: u8,
        x: u8,
    }
    #[derive(Serialize)]
    #[allow(dead_code)]
    enum E {
        One(u8),
        Two(u8),
    }
    assert_ne!(key(&A { x: 1 }), key(&Renamed { y: 1 }));
    assert_ne!(key(&Pair { x: 1, y: 2 }), key(&Swapped { y: 2, x: 1 }));
    assert_ne!(key(&E::One(1)), key(&E::Two(1)));
    assert_ne!(key(&0.0f64), key(&-0.0f64));
    assert_ne!(key(&1u32), key(&1u64));
    assert_ne!(key(&Some(())), key(&()));
    assert_ne!(key(&("ab", "c")), key(&("a", "bc")));
    assert_ne!(
        key(&vec![vec![1u8, 2], vec![3]]),
        key(&vec![vec![1u8], vec![2, 3]])
    );
    assert_eq!(key(&f64::NAN), key(&f64::NAN));
    // usize is serialized as u64: stable across pointer widths.
    assert_eq!(key(&7usize), key(&7u64));
}

#[derive(Serialize)]
struct Point {
    x: f64,
    y: f64,
}

#[derive(Serialize)]
enum Shape {
    Empty,
    Circle(f64),
    Rect { w: f64, h: f64 },
}

/// The golden keys. If this test fails, the key format changed: results
/// stored by earlier releases would no longer be found. If the change is
/// deliberate, bump `memento::key::KEY_FORMAT_VERSION` and update the table.
#[test]
fn golden_keys() {
    let cases: Vec<(&str, Key)> = vec![
        ("unit", key(&())),
        ("bool", key(&true)),
        ("u32", key(&42u32)),
        ("i64", key(&-7i64)),
        ("f64", key(&0.1f64)),
        ("str", key("hello")),
        ("bytes", key(&vec![1u8, 2, 3])),
        ("tuple", key(&(1u16, "a", 2.5f32))),
        ("option", key(&Some(3u8))),
        ("map", key(&BTreeMap::from([("a", 1u8), ("b", 2)]))),
        ("set", key(&HashSet::from([3u8, 1, 2]))),
        ("struct", key(&Point { x: 1.0, y: -2.0 })),
        (
            "enum",
            key(&[
                Shape::Empty,
                Shape::Circle(1.0),
                Shape::Rect { w: 2.0, h: 3.0 },
            ]),
        ),
    ];
    let expected = [
        (
            "unit",
            "0485473d79ccb771ea6b664036f506341d684ddf8a11bcddbb232dc7870db26b",
        ),
        (
            "bool",
            "2022ec9d571ba774cf9e83d0194962f5d1e3aa1a48d486a67e2762a6c7959015",
        ),
        (
            "u32",
            "7b1ff1bedf1671db641f34a98f09e0aef3948b9eeadc31248b983e3a72a2d939",
        ),
        (
            "i64",
            "e56b929bbe12fb46db7e92e3c00ead68bcde334e1581bb15500ac8b766ea484c",
        ),
        (
            "f64",
            "e2e58f2b74169a54ad727551443d7247c14fe4972cfa6781a562756c89134f50",
        ),
        (
            "str",
            "a762396d0180a9b0b11e3e61d751ed501a9489fef764fa5fb3aaa78ce81ce00a",
        ),
        (
            "bytes",
            "ce367b28413dc029dd86556fb02ba8ffa82068c0c6cfddc69220ebf5678b0b1c",
        ),
        (
            "tuple",
            "921e7d7855be7ca7cadb2c5427784ebee4cb980e458a5bf40b2fc93feccd0272",
        ),
        (
            "option",
            "de159748002cf8de30977fbf36a28f87120f04214f8a44525dbc4559f86d7c8f",
        ),
        (
            "map",
            "d147b59dab3b782298734abc14cdabbec01171cbe67392fb1aed78284ddefb76",
        ),
        (
            "set",
            "f58a1341e7fc958dc84f53606fb78ed4b1b10cf80e945747a80ad4f2606e6733",
        ),
        (
            "struct",
            "a66bcdfdc8dd5fc5585276b92d7d47da96ef36c46e231d16faf130a457cefeaf",
        ),
        (
            "enum",
            "1c6c3d2032fce4a70c617ac25113b1c4d58538e03da0146b427643af66ed6dad",
        ),
    ];
    let printed: Vec<String> = cases
        .iter()
        .map(|(name, key)| format!("(\"{name}\", \"{key}\"),"))
        .collect();
    for ((name, got), (exp_name, exp)) in cases.iter().zip(expected.iter()) {
        assert_eq!(name, exp_name);
        assert_eq!(
            &got.to_hex(),
            exp,
            "key of {name} changed; all keys:\n{}",
            printed.join("\n")
        );
    }
    assert_eq!(
        cases.len(),
        expected.len(),
        "all keys:\n{}",
        printed.join("\n")
    );
}

/// The key of a whole call: format version, function identity and
/// fingerprint, output shape and arguments.
#[test]
fn golden_call_key() {
    let dir = tempfile::tempdir().unwrap();
    let memory = Memory::new(dir.path());
    let f = Function::new("golden", "sine");
    let key = match memory.lookup::<f64, _>(&f, &(0.1f64,)) {
        Lookup::Hit(_) => unreachable!("empty cache"),
        Lookup::Miss(pending) => pending.key().unwrap(),
    };
    assert_eq!(
        key.to_hex(),
        "13f16d78d934a15e4e09467b62dca1c264e8ed0f9276fff23e565acca16668e4"
    );
    let coded = Function::new("golden", "sine").__code([9; 32], "fn sine(x: f64) -> f64", false);
    let other = match memory.lookup::<f64, _>(&coded, &(0.1f64,)) {
        Lookup::Hit(_) => unreachable!("empty cache"),
        Lookup::Miss(pending) => pending.key().unwrap(),
    };
    assert_ne!(key, other);
}
