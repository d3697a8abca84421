//! Hostile entries: any bytes read from a cache folder go through the same
//! verification and decoding as `Memory` uses. Neither may panic, and
//! decoding never runs code of the entry's (postcard only reads data).
//!
//! `RUSTC_BOOTSTRAP=1 cargo fuzz run decode_entry -- -max_total_time=60 -malloc_limit_mb=64`
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use memento::codec;
use serde::Deserialize;

#[derive(Deserialize, Debug)]
#[allow(dead_code)]
enum Shape {
    Empty,
    Circle(f64),
    Rect { w: f64, h: f64 },
    Many(Vec<Shape>),
}

#[derive(Deserialize, Debug)]
#[allow(dead_code)]
struct Record {
    name: String,
    values: Vec<f64>,
    tags: BTreeMap<String, Option<u32>>,
    raw: Vec<u8>,
}

fuzz_target!(|data: &[u8]| {
    let key = memento::Key::of(&0u8).unwrap();
    let signer = codec::Signer::new("fuzz");
    // The bytes as a whole entry, checked with and without a key.
    if let Ok(payload) = codec::verify(&key, data, None) {
        let _ = codec::decode::<Record>(payload);
    }
    let _ = codec::verify(&key, data, Some(&signer));
    // Its info and metadata, as `memento show` reads them (unverified).
    let info = codec::info(data);
    let _ = memento::entry::Metadata::of_entry(data, data.len() as u64, info, "f");
    if let Ok(header) = codec::Header::parse(data) {
        let _ = header.check(&key, data.len() as u64, Some(&signer));
        let _ = memento::entry::Metadata::of_header(&header, data.len() as u64, info, "f");
    }
    // The bytes as an entry whose payload is themselves, unverified: the
    // public decoders must refuse what is not an entry, never panic.
    let _ = codec::unpack(data, data);
    let _ = codec::decode_entry::<Record>(data, data);
    let _ = codec::decode_entry::<Vec<f64>>(data, data);
    // The bytes as a payload that passed verification: decoding into
    // several types.
    let entry = codec::seal(&key, data, 0, None);
    let payload = codec::verify(&key, &entry, None).expect("a sealed entry verifies");
    let _ = codec::decode::<Record>(payload);
    let _ = codec::decode::<Vec<Shape>>(payload);
    let _ = codec::decode::<(u64, f64, Option<Vec<String>>)>(payload);
    let _ = codec::decode::<BTreeMap<String, Vec<u32>>>(payload);
    // Plain buffers: a descriptor, then raw elements.
    let _ = codec::decode::<Vec<f64>>(payload);
    let _ = codec::decode::<Box<[u16]>>(payload);
    let _ = codec::decode::<memento::Mapped<Vec<u32>>>(payload);
});
