//! Hostile entries never panic and never decode into a value: the same
//! checks as the cargo-fuzz target (`fuzz/`), run on every test run with
//! proptest.

use std::collections::BTreeMap;

use memento::codec::{self, Damage};
use memento::entry::Metadata;
use memento::{Key, Mapped};
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

/// Every public function that reads entry bytes, fed `data` as an entry
/// (and as its payload): each returns, none panics.
fn every_public_decoder(data: &[u8]) {
    let signer = codec::Signer::new("k");
    let _ = codec::verify(&key(), data, None);
    let _ = codec::verify(&key(), data, Some(&signer));
    let _ = codec::unpack(data, data);
    let _ = codec::unpack(data, &[]);
    let _ = codec::info(data);
    let _ = codec::decode_entry::<Vec<f64>>(data, data);
    let _ = codec::decode_entry::<Mapped<Vec<u32>>>(data, data);
    let _ = codec::decode_entry::<(u64, String)>(data, data);
    let _ = codec::decode::<Mapped<Box<[u8]>>>(data);
    let _ = codec::decode::<Vec<i16>>(data);
    if let Ok(header) = codec::Header::parse(data) {
        let _ = header.check(&key(), data.len() as u64, None);
        let _ = header.check(&header.key(), data.len() as u64, Some(&signer));
        let _ = (
            header.payload_range(),
            header.info_range(),
            header.entry_len(),
        );
        let _ = Metadata::of_header(&header, data.len() as u64, codec::info(data), "f");
    }
    let _ = Metadata::of_entry(data, data.len() as u64, Some(data), "f");
    let _ = Metadata::of_entry(data, data.len() as u64, codec::info(data), "f");
}

/// A sealed entry whose header fields after the magic (version, codec,
/// lengths, time, reserved bytes) are replaced by `fields`, cut to `cut`
/// bytes: hostile headers that get past the magic.
fn hostile_entry(fields: &[u8; 28], payload: &[u8], cut: usize) -> Vec<u8> {
    let mut entry = codec::seal_with_info(&key(), payload, b"{}", 0, None);
    entry[4..32].copy_from_slice(fields);
    entry.truncate(cut);
    entry
}

#[test]
fn short_input_is_refused_without_panic() {
    assert_eq!(codec::unpack(&[], &[]), Err(Damage::Empty));
    assert!(matches!(
        codec::unpack(b"MMTO\x02\x00", &[]),
        Err(Damage::Truncated { .. })
    ));
    assert!(codec::decode_entry::<u8>(&[], &[]).is_err());
    assert!(codec::decode_entry::<Vec<f64>>(b"MMTO", &[1, 2]).is_err());
    assert_eq!(codec::info(b"MMTO"), None);
    for n in 0..=100 {
        every_public_decoder(&vec![0u8; n]);
        let mut entry = codec::seal(&key(), &[1, 2, 3], 0, None);
        entry.truncate(n);
        every_public_decoder(&entry);
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn public_decoding_never_panics(data in prop::collection::vec(any::<u8>(), 0..300)) {
        every_public_decoder(&data);
        // The same bytes behind a magic, so that more than the first check
        // is reached.
        let mut magic = b"MMTO".to_vec();
        magic.extend_from_slice(&data);
        every_public_decoder(&magic);
    }

    #[test]
    fn hostile_headers_never_panic(
        fields in prop::array::uniform28(any::<u8>()),
        payload in prop::collection::vec(any::<u8>(), 0..200),
        cut in 0usize..400,
    ) {
        every_public_decoder(&hostile_entry(&fields, &payload, cut));
    }

    /// `Metadata::read`, as `memento show` and `ls` use it, on a file of
    /// any bytes.
    #[test]
    fn metadata_of_any_file_never_panics(data in prop::collection::vec(any::<u8>(), 0..300)) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("e.bin"), &data).unwrap();
        let store = memento::store::LocalStore::new(dir.path());
        let _ = Metadata::read(&store, "e.bin");
    }
}
