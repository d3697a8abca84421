//! Hostile entries never panic and never decode into a value: the same
//! checks as the cargo-fuzz target (`fuzz/`), run on every test run with
//! proptest.

use std::collections::BTreeMap;

use memento::codec::{self, Damage};
use memento::Key;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

fn key() -> Key {
    Key::of(&0u8).unwrap()
}

/// 2,000 cases; a failing case is saved to `tests/proptest-regressions/`
/// (proptest's default looks for a `lib.rs` beside the test and warns).
fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 2000,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "tests/proptest-regressions/hostile.txt",
        ))),
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_entries_are_refused_without_panic(data in prop::collection::vec(any::<u8>(), 0..300)) {
        // Random bytes almost never form a valid entry; if they did, they
        // would carry the right checksum, which is the point.
        let _ = codec::verify(&key(), &data, None);
        let _ = codec::verify(&key(), &data, Some(&codec::Signer::new("k")));
    }

    #[test]
    fn arbitrary_payloads_decode_or_fail_cleanly(data in prop::collection::vec(any::<u8>(), 0..300)) {
        let entry = codec::seal(&key(), &data, 0, None);
        let payload = codec::verify(&key(), &entry, None).unwrap();
        let _ = codec::decode::<Vec<String>>(payload);
        // Plain buffers: the descriptor is checked against the payload's
        // length before anything is allocated.
        let _ = codec::decode::<Vec<f64>>(payload);
        let _ = codec::decode::<Box<[u16]>>(payload);
        let _ = codec::decode::<(u64, f64, Option<Vec<u8>>)>(payload);
        let _ = codec::decode::<BTreeMap<String, Vec<u32>>>(payload);
    }
}

#[test]
fn huge_length_claims_fail_fast() {
    // A payload claiming 2^62 bytes follow, in a 10-byte entry payload.
    let mut payload = vec![0xff; 8];
    payload.push(0x3f);
    let entry = codec::seal(&key(), &payload, 0, None);
    let bytes = codec::verify(&key(), &entry, None).unwrap();
    assert!(matches!(
        codec::decode::<Vec<u8>>(bytes),
        Err(Damage::Decode(_))
    ));
    assert!(matches!(
        codec::decode::<Vec<Vec<u64>>>(bytes),
        Err(Damage::Decode(_))
    ));
    assert!(matches!(
        codec::decode::<String>(bytes),
        Err(Damage::Decode(_))
    ));
}

proptest! {
    #![proptest_config(config())]

    /// Buffer descriptors with any tag, rank and shape, before data of any
    /// length: refused unless the shape matches the length exactly.
    #[test]
    fn buffer_descriptors_are_checked(
        tag in 0u8..12,
        dims in 0u8..40,
        shape in prop::collection::vec(any::<u64>(), 0..4),
        data in 0usize..200,
    ) {
        let mut payload = vec![tag, dims, 0, 0, 0, 0, 0, 0];
        for n in &shape {
            payload.extend_from_slice(&n.to_le_bytes());
        }
        payload.resize(payload.len() + data, 0);
        if let Ok(v) = codec::decode::<Vec<f64>>(&payload) {
            prop_assert_eq!(tag, 10);
            prop_assert_eq!(dims, 1);
            prop_assert_eq!(v.len() as u64, shape[0]);
        }
    }
}
