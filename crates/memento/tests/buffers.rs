//! Plain buffers (`Vec<f64>`, slices, arrays): keyed by their bytes,
//! stored raw, read back equal, and refused when damaged.

mod common;

use common::{fresh_dir, output_path};

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::LazyLock;

use memento::codec::{self, CODEC_BUFFER};
use memento::{Function, Mapped, Memory};

/// In-memory layer off: every hit reads the store.
static MEM: LazyLock<Memory> =
    LazyLock::new(|| Memory::new(fresh_dir("buffers")).in_memory_limit(0));

static SUMS: AtomicUsize = AtomicUsize::new(0);

#[memento::cache(memory = MEM)]
fn scaled(v: &[f64], by: f64) -> Vec<f64> {
    SUMS.fetch_add(1, SeqCst);
    v.iter().map(|x| x * by).collect()
}

#[test]
fn slices_key_by_value_and_vectors_round_trip() {
    let data: Vec<f64> = (0..10_000).map(|i| i as f64 * 0.5).collect();
    let first = scaled(&data, 2.0);
    assert_eq!(first.len(), 10_000);
    assert_eq!(scaled(&data, 2.0), first);
    assert_eq!(SUMS.load(SeqCst), 1);
    // Another vector with the same elements: the same key.
    let copy = data.clone();
    assert_eq!(scaled(&copy, 2.0), first);
    assert_eq!(SUMS.load(SeqCst), 1);
    // One element changed, or one less: computed.
    let mut changed = data.clone();
    changed[9_999] = -1.0;
    assert_eq!(scaled(&changed, 2.0)[9_999], -2.0);
    assert_eq!(scaled(&data[..9_999], 2.0).len(), 9_999);
    assert_eq!(SUMS.load(SeqCst), 3);
    // -0.0 and 0.0 differ, NaN equals itself (bit patterns).
    assert_eq!(scaled(&[0.0], 1.0), vec![0.0]);
    assert!(scaled(&[-0.0], 1.0)[0].is_sign_negative());
    assert!(scaled(&[f64::NAN], 1.0)[0].is_nan());
    assert!(scaled(&[f64::NAN], 1.0)[0].is_nan());
    assert_eq!(SUMS.load(SeqCst), 6);
    // Empty.
    assert_eq!(scaled(&[], 1.0), Vec::<f64>::new());
    assert_eq!(scaled(&[], 1.0), Vec::<f64>::new());
    assert_eq!(SUMS.load(SeqCst), 7);
}

fn stored_entry<T, A>(memory: &Memory, f: &Function, args: &A) -> Vec<u8>
where
    T: serde::Serialize + serde::de::DeserializeOwned + 'static,
    A: serde::Serialize,
{
    let path = output_path(memory, f, &memory.key_of::<T, A>(f, args).unwrap());
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn buffers_are_stored_raw_and_aligned() {
    let memory = Memory::new(fresh_dir("raw")).in_memory_limit(0);
    let f = Function::new("buffers", "ramp");
    let make = |n: u32| (0..n).map(|i| i * 3).collect::<Vec<u32>>();
    let v: Vec<u32> = memory.call(&f, &1000u32, || make(1000));
    let again: Vec<u32> = memory.call(&f, &1000u32, || unreachable!("stored"));
    assert_eq!(again, v);
    let entry = stored_entry::<Vec<u32>, _>(&memory, &f, &1000u32);
    assert_eq!(u16::from_le_bytes([entry[6], entry[7]]), CODEC_BUFFER);
    // The info (JSON) follows the payload.
    let payload_end =
        codec::HEADER_LEN + u64::from_le_bytes(entry[8..16].try_into().unwrap()) as usize;
    assert_eq!(entry[payload_end], b'{');
    assert_eq!(*entry.last().unwrap(), b'}');
    let data = payload_end - 4000;
    assert_eq!(data % 64, 0, "the data starts at a multiple of 64");
    assert_eq!(&entry[data..data + 8], &[0, 0, 0, 0, 3, 0, 0, 0]);

    // Box<[P]> and every element type round trip.
    let g = Function::new("buffers", "boxed");
    let b: Box<[i16]> = memory.call(&g, &(), || vec![-1i16, 2, -3].into_boxed_slice());
    let b2: Box<[i16]> = memory.call(&g, &(), || unreachable!("stored"));
    assert_eq!(b, b2);
    let h = Function::new("buffers", "bytes");
    let bytes: Vec<u8> = memory.call(&h, &(), || b"raw bytes".to_vec());
    let bytes2: Vec<u8> = memory.call(&h, &(), || unreachable!("stored"));
    assert_eq!(bytes, bytes2);
}

#[test]
fn a_damaged_buffer_is_recomputed() {
    let memory = Memory::new(fresh_dir("damaged")).in_memory_limit(0);
    let f = Function::new("buffers", "ones");
    let _: Vec<f64> = memory.call(&f, &7u8, || vec![1.0; 5000]);
    let path = output_path(
        &memory,
        &f,
        &memory.key_of::<Vec<f64>, _>(&f, &7u8).unwrap(),
    );
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    let mut computed = false;
    let again: Vec<f64> = memory.call(&f, &7u8, || {
        computed = true;
        vec![1.0; 5000]
    });
    assert!(computed, "the damaged entry was not returned");
    assert_eq!(again, vec![1.0; 5000]);
}

#[test]
fn entries_of_the_other_family_are_refused() {
    // Postcard bytes that claim to be a Vec<f64> are not read as a buffer,
    // and buffer bytes are not read as a postcard type.
    let key = memento::Key::of(&1u8).unwrap();
    let postcard = codec::seal(&key, &[1, 0, 0, 0, 0, 0, 0, 0, 0], 0, None);
    let payload = codec::verify(&key, &postcard, None).unwrap();
    assert!(codec::decode_entry::<Vec<f64>>(&postcard, payload).is_err());
    assert!(codec::decode_entry::<(u8, f64)>(&postcard, payload).is_ok());
}

#[cfg(feature = "ndarray")]
mod arrays {
    use super::*;
    use ndarray::{s, Array, Array2, Array3, ArrayView2, Ix3, IxDyn, ShapeBuilder};

    static TOTALS: AtomicUsize = AtomicUsize::new(0);

    #[memento::cache(memory = MEM)]
    fn doubled(a: ArrayView2<'_, f64>) -> Array2<f64> {
        TOTALS.fetch_add(1, SeqCst);
        a.mapv(|x| x * 2.0)
    }

    #[test]
    fn views_key_like_their_contiguous_copies() {
        let a = Array::from_shape_fn((60, 40), |(i, j)| (i * 40 + j) as f64);
        let first = doubled(a.view());
        assert_eq!(TOTALS.load(SeqCst), 1);
        // A transposed view of the transpose is the same array: same key.
        let t = a.t().to_owned();
        assert_eq!(doubled(t.t()), first);
        assert_eq!(TOTALS.load(SeqCst), 1);
        // A Fortran-order copy with the same elements: same key.
        let mut f = Array2::<f64>::zeros((60, 40).f());
        f.assign(&a);
        assert!(f.as_slice().is_none());
        assert_eq!(doubled(f.view()), first);
        assert_eq!(TOTALS.load(SeqCst), 1);
        // A strided (non-contiguous) view and its contiguous copy.
        let strided = a.slice(s![..;2, 1..;3]);
        assert!(strided.as_slice().is_none());
        let r = doubled(strided);
        assert_eq!(doubled(strided.to_owned().view()), r);
        assert_eq!(TOTALS.load(SeqCst), 2);
        // The same elements in another shape: another key.
        let reshaped = a.to_shape((40, 60)).unwrap().to_owned();
        doubled(reshaped.view());
        assert_eq!(TOTALS.load(SeqCst), 3);
    }

    #[test]
    fn arrays_round_trip_through_the_store() {
        let memory = Memory::new(fresh_dir("arrays")).in_memory_limit(0);
        let f = Function::new("buffers", "cube");
        let make = || Array3::from_shape_fn((4, 5, 6), |(i, j, k)| (i * 100 + j * 10 + k) as i64);
        let a: Array3<i64> = memory.call(&f, &(), make);
        let b: Array3<i64> = memory.call(&f, &(), || unreachable!("stored"));
        assert_eq!(a, b);
        assert_eq!(b.shape(), &[4, 5, 6]);
        let g = Function::new("buffers", "dyn");
        let d: Array<f32, IxDyn> = memory.call(&g, &(), || {
            Array::from_shape_fn(IxDyn(&[2, 3, 4, 5]), |ix| ix[3] as f32)
        });
        let d2: Array<f32, IxDyn> = memory.call(&g, &(), || unreachable!("stored"));
        assert_eq!(d, d2);
        // A Fortran-order result is stored row-major and read back equal.
        let h = Function::new("buffers", "fortran");
        let fo: Array<u16, Ix3> = memory.call(&h, &(), || {
            Array::from_shape_fn((3, 4, 5).f(), |(i, j, k)| (i + 2 * j + 3 * k) as u16)
        });
        let fo2: Array<u16, Ix3> = memory.call(&h, &(), || unreachable!("stored"));
        assert_eq!(fo, fo2);
    }
}

/// Entries of 1 MiB and more are read straight into their array: the same
/// checks apply (checksum over the data, descriptor, length).
#[test]
fn large_buffers_are_checked_like_small_ones() {
    let memory = Memory::new(fresh_dir("large")).in_memory_limit(0);
    let f = Function::new("buffers", "large");
    let make = |seed: u64| {
        (0..(3 << 20) / 8)
            .map(|i| (i ^ seed) as f64)
            .collect::<Vec<f64>>()
    };
    let computed = std::cell::Cell::new(0);
    let call = |seed: u64| -> Vec<f64> {
        memory.call(&f, &seed, || {
            computed.set(computed.get() + 1);
            make(seed)
        })
    };
    assert_eq!(call(1), make(1));
    assert_eq!(call(1), make(1));
    assert_eq!(computed.get(), 1, "read back from the file");

    let path = |seed: u64| {
        output_path(
            &memory,
            &f,
            &memory.key_of::<Vec<f64>, _>(&f, &seed).unwrap(),
        )
    };
    // A bit flipped in the data, in the descriptor, or a truncated file:
    // recomputed, never returned.
    type Damage = fn(&mut Vec<u8>);
    let cases: [(&str, Damage); 3] = [
        ("data", |b| {
            let at = b.len() - 12_345;
            b[at] ^= 1;
        }),
        ("descriptor", |b| b[codec::HEADER_LEN + 8] ^= 1),
        ("truncated", |b| b.truncate(b.len() - 8)),
    ];
    for (what, damage) in cases {
        let before = computed.get();
        let mut bytes = std::fs::read(path(1)).unwrap();
        damage(&mut bytes);
        std::fs::write(path(1), &bytes).unwrap();
        assert_eq!(call(1), make(1), "{what}");
        assert_eq!(computed.get(), before + 1, "{what}: recomputed");
        assert_eq!(call(1), make(1), "{what}");
        assert_eq!(computed.get(), before + 1, "{what}: stored again");
    }
}

static ASYNC_CALLS: AtomicUsize = AtomicUsize::new(0);

#[memento::cache(memory = MEM)]
async fn large_later(n: usize) -> Vec<u8> {
    ASYNC_CALLS.fetch_add(1, SeqCst);
    (0..n).map(|i| (i % 251) as u8).collect()
}

/// Async functions write on a thread of their own: a large buffer is copied
/// for it (the future could be dropped while the write runs).
#[test]
fn large_buffers_of_async_functions() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let expected: Vec<u8> = (0..3 << 20).map(|i| (i % 251) as u8).collect();
    assert_eq!(rt.block_on(large_later(3 << 20)), expected);
    assert_eq!(rt.block_on(large_later(3 << 20)), expected);
    assert_eq!(ASYNC_CALLS.load(SeqCst), 1);
}

/// Large buffers are written from the value's memory, their checksum (or
/// signature) computed while the data is written: signed, replaced, read.
#[test]
fn large_buffers_signed_and_replaced() {
    let dir = fresh_dir("large-signed");
    let alpha = Memory::new(&dir).signing_key("alpha").in_memory_limit(0);
    let f = Function::new("buffers", "signed_large");
    let make = |k: u8| vec![k; 5 << 20];
    let v: Vec<u8> = alpha.call(&f, &1u8, || make(1));
    assert_eq!(v, make(1));
    let again: Vec<u8> = alpha.call(&f, &1u8, || unreachable!("stored"));
    assert_eq!(again, make(1));
    // Another key does not trust it.
    let beta = Memory::new(&dir).signing_key("beta").in_memory_limit(0);
    let mut computed = false;
    let _: Vec<u8> = beta.call(&f, &1u8, || {
        computed = true;
        make(1)
    });
    assert!(computed, "a foreign signature is refused");
    // Replaced in place (a forced call, as the handles' call_forced does).
    let key = alpha.key_of::<Vec<u8>, _>(&f, &2u8).unwrap();
    let _: Vec<u8> = alpha.call(&f, &2u8, || make(2));
    let name = {
        let hex = key.to_hex();
        format!("{}/{}/{}.bin", f.folder(), &hex[..2], &hex[2..])
    };
    let mut bytes = Vec::new();
    assert!(alpha.store().read(&name, &mut bytes).unwrap());
    let payload = codec::verify(&key, &bytes, Some(&codec::Signer::new("alpha"))).unwrap();
    assert_eq!(
        codec::decode_entry::<Vec<u8>>(&bytes, payload).unwrap().0,
        make(2)
    );
}

static FORCED: AtomicUsize = AtomicUsize::new(0);

#[memento::cache(memory = MEM)]
fn big_forced(n: usize) -> Vec<u16> {
    let round = FORCED.fetch_add(1, SeqCst) as u16;
    vec![round; n]
}

#[test]
fn large_buffers_replaced_by_a_forced_call() {
    let n = 1 << 20;
    assert_eq!(big_forced(n), vec![0; n]);
    assert_eq!(big_forced::call_forced(n), vec![1; n]);
    // The replacement is what is stored now.
    assert_eq!(big_forced(n), vec![1; n]);
    assert_eq!(FORCED.load(SeqCst), 2);
}

/// A store whose objects are not local files (the trait's defaults: no
/// `open_file`, joined parts, the header computed first): large buffers and
/// mapped results still round trip, as values in memory; a full disk still
/// returns the value.
#[test]
fn large_buffers_through_a_store_without_files() {
    let dir = fresh_dir("no-files");
    let memory = Memory::with_store(common::Hooked::new(&dir)).in_memory_limit(0);
    let f = Function::new("buffers", "no_files");
    let make = || (0..(2 << 20) / 8).map(|i| i as f64).collect::<Vec<f64>>();
    let v: Vec<f64> = memory.call(&f, &1u8, make);
    let again: Vec<f64> = memory.call(&f, &1u8, || unreachable!("stored"));
    assert_eq!(again, v);
    let g = Function::new("buffers", "no_files_mapped");
    let _: Mapped<Vec<f64>> = memory.call(&g, &1u8, || make().into());
    let m: Mapped<Vec<f64>> = memory.call(&g, &1u8, || unreachable!("stored"));
    assert!(!m.is_mapped(), "no file to map: a value in memory");
    assert_eq!(&*m, &make()[..]);

    let mut full = common::Hooked::new(&fresh_dir("no-files-full"));
    full.disk_full = true;
    let memory = Memory::with_store(full).in_memory_limit(0);
    let v: Vec<f64> = memory.call(&f, &2u8, make);
    assert_eq!(v, make());
}
