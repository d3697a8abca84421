"""Keys of values. Ported from joblib's test_hashing.py (the name of each
joblib test is in its docstring) where the case applies."""

import decimal
import pickle
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from memento import _memento, hash


class Point:
    def __init__(self, x):
        self.x = x


def test_trivial_hash():
    """joblib: test_trivial_hash: distinct values, distinct keys; the same
    value, the same key."""
    values = [
        None, True, False, 0, 1, 1.0, -0.0, 0.0, 2 ** 70, -(2 ** 70), 1j, 1 + 0j,
        "", " ", "a", "ab", b"", b"a", bytearray(b"a"), (), [], (1,), [1], (1, 2),
        [(1,), 2], ((1, 2),), {}, {1: 2}, {2: 1}, {1: 1}, set(), {1}, frozenset({1}),
        {1, 2}, ("ab", "c"), ("a", "bc"), [[]], [[], []], Point(1), Point(2), decimal.Decimal("1.5"),
        float("nan"), float("inf"), float("-inf"), "\ud800",
    ]
    keys = [hash(v) for v in values]
    for i, a in enumerate(keys):
        for j, b in enumerate(keys):
            assert (a == b) == (i == j), (values[i], values[j])
    # Equal values built apart: equal keys (joblib: test_string).
    again = [pickle.loads(pickle.dumps(v)) for v in values]
    assert [hash(v) for v in again] == keys


def test_ints_of_any_size():
    for n in [0, -1, 2 ** 63 - 1, 2 ** 63, -(2 ** 63), -(2 ** 63) - 1, 2 ** 1000, -(2 ** 1000)]:
        assert hash(n) == hash(int(str(n)))
    assert len({hash(n) for n in [2 ** 63 - 1, 2 ** 63, -(2 ** 63), -(2 ** 63) - 1, 255, 256, -128, -129]}) == 8


def test_numpy_arrays():
    """joblib: test_hash_numpy_arrays, test_hash_numpy_noncontiguous,
    test_hashes_are_different_between_c_and_fortran_contiguous_arrays (a
    design choice reversed: memento keys the logical array, so C, Fortran
    and strided layouts of the same values share a key; the transpose is
    another array and another key)."""
    rng = np.random.RandomState(0)
    a = rng.random_sample((10, 10))
    b = a.copy()
    c = a + 1
    assert hash(a) == hash(b)
    assert hash(a) != hash(c)
    assert hash(a) != hash(a.T)
    assert hash(a) == hash(np.asfortranarray(a))
    assert hash(a[::2, 1::3]) == hash(np.ascontiguousarray(a[::2, 1::3]))
    assert hash(a[::-1]) == hash(np.ascontiguousarray(a[::-1]))
    assert hash(a) != hash(a.astype(np.float32))
    assert hash(a) != hash(a.reshape(100))
    assert hash(a.astype(">f8")) != hash(a), "byte order is part of the dtype"


def test_large_arrays_in_every_layout():
    """Past 1 MiB the GIL is released and contiguous data hashed on every core:
    same keys as the small path's layout rules."""
    a = np.arange(300_000, dtype=np.float64).reshape(600, 500)
    assert a.nbytes > 1 << 20
    f = np.asfortranarray(a)
    assert hash(a) == hash(f) == hash(a.copy())
    b = a.copy()
    b[599, 499] += 1
    assert hash(a) != hash(b)


def test_hashing_releases_the_gil():
    """Another thread runs while a large array is hashed."""
    a = np.ones(64 << 20, dtype=np.uint8)
    ticks = []
    done = threading.Event()

    def tick():
        while not done.is_set():
            ticks.append(time.monotonic())
            time.sleep(0.001)

    t = threading.Thread(target=tick)
    t.start()
    try:
        start = time.monotonic()
        for _ in range(5):
            hash(np.asfortranarray(a.reshape(8192, -1)))
        end = time.monotonic()
    finally:
        done.set()
        t.join()
    inside = [x for x in ticks if start < x < end]
    assert len(inside) >= 3, (len(inside), end - start)


def test_dict_of_arrays():
    """joblib: test_hash_numpy_dict_of_arrays."""
    a, b = np.arange(5), np.arange(5)
    assert hash({1: a, 2: b}) == hash({2: b, 1: a}) == hash({1: b, 2: a})


def test_dtype_is_part_of_the_key():
    """joblib: test_numpy_datetime_array (the buffer protocol does not carry
    datetime64: their bytes are copied)."""
    ints = np.arange(10, dtype=np.int64)
    dates = ints.astype("datetime64[D]")
    assert hash(ints) != hash(dates)
    assert hash(dates) == hash(dates.copy())
    assert hash(dates) != hash(ints.astype("timedelta64[D]"))


def test_object_arrays():
    """joblib: test_hash_object_dtype."""
    a = np.array([np.arange(i) for i in range(6)], dtype=object)
    b = np.array([np.arange(i) for i in range(6)], dtype=object)
    assert hash(a) == hash(b)


def test_numpy_scalars():
    """joblib: test_numpy_scalar."""
    assert hash(np.float64(2.0)) != hash(np.float64(3.0))
    assert hash(np.float64(2.0)) == hash(np.float64(2.0))
    assert hash(np.float64(2.0)) != hash(np.float32(2.0))
    assert hash(np.int64(2)) != hash(2)


def test_sets_and_dicts_whatever_their_order():
    """joblib: test_dict_hash, test_set_hash, test_set_decimal_hash."""
    k = ["#s12069__c_maps.nii.gz", "#s12158__c_maps.nii.gz", "#s12258__c_maps.nii.gz"]
    d1 = {x: i for i, x in enumerate(k)}
    d2 = {x: d1[x] for x in reversed(k)}
    assert hash(d1) == hash(d2)
    assert hash(set(k)) == hash(set(reversed(k)))
    nan, zero = decimal.Decimal("NaN"), decimal.Decimal(0)
    assert hash({nan, zero}) == hash({zero, nan})
    assert hash({1: {2, 3}, 4: [5]}) == hash({4: [5], 1: {3, 2}})


def test_0d_arrays():
    """joblib: test_0d_array, test_0d_and_1d_array_hashing_is_different."""
    assert hash(np.array(0)) == hash(np.array(0))
    assert hash(np.array(0)) != hash(np.array([0]))
    assert hash(np.zeros((0, 3))) != hash(np.zeros((3, 0)))


def test_memmap_keys_like_its_array(tmp_path):
    """joblib: test_hash_memmap (memento always coerces)."""
    a = np.arange(20.0)
    m = np.memmap(tmp_path / "m", dtype=a.dtype, mode="w+", shape=a.shape)
    m[:] = a
    assert hash(m) == hash(a)


def test_cycles_are_keyed():
    a = [1]
    a.append(a)
    b = [1]
    b.append(b)
    assert hash(a) == hash(b)


def test_same_keys_in_another_process():
    """joblib: test_hashes_stay_the_same_with_numpy_objects (another
    process, another string-hash seed)."""
    code = (
        "import numpy as np; from memento import hash;"
        "print(hash([{'a': 1, 'b': {1, 2, 'x'}}, np.arange(6).reshape(2, 3).T, 2 ** 80, 'é']))"
    )
    outs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={"PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for seed in ["1", "2"]
    }
    local = hash([{"a": 1, "b": {1, 2, "x"}}, np.arange(6).reshape(2, 3).T, 2 ** 80, "é"])
    assert outs == {local}


def test_keys_stay_the_same():
    """joblib: test_hashes_stay_the_same: pinned digests; a change of the
    encoding must be deliberate (it re-keys every cache)."""
    assert hash(None) == "fbb8d00859390022e300975df1cb8de57d1d3e258020c551c71897188560236e"
    assert hash([1, "a", 2.5, {"k": (None, True)}]) == (
        "0731aaaa3d6f836059ac50756a115b50c0fb8e698a92594026391adbaa94954b"
    )
    assert hash(np.arange(4, dtype="<i8")) == (
        "50e20c3ebc15422eb04c47d1538e47c454b6fb556cd9077c121425be874fe3b2"
    )


def test_argument_digests_bind_names():
    assert _memento.hash_args([("x", 1), ("y", 2)]) != _memento.hash_args([("x", 2), ("y", 1)])
    assert _memento.hash_args([("x", 1)]) != _memento.hash_args([("y", 1)])
    assert len(_memento.hash_args([])) == 32
    with pytest.raises(TypeError):
        _memento.hash_args([("x", lambda: 0)])
