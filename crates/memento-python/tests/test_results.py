"""Results: NumPy arrays stored raw and aligned, loaded as writable views
or mapped with mmap_mode, compress, and entries stored before the layout.

Ported from joblib's test_memory.py where a case applies (named in each
test's docstring); the rest is memento's own."""

import gc
import multiprocessing
import pathlib
import pickle
import struct
import time
import warnings

import numpy as np
import pytest

import memento
from memento import Memory

HEADER = 96  # memento's entry header


def entry_files(location):
    return sorted(pathlib.Path(location).rglob("*.bin"))


def counted(memory, func, **options):
    calls = []

    def wrapper(*args, **kwargs):
        calls.append(args)
        return func(*args, **kwargs)

    wrapper.__name__ = wrapper.__qualname__ = func.__name__
    wrapper.__module__ = func.__module__
    return memory.cache(wrapper, **options), calls


def twice(a):
    return a * 2


def corrupt_data(location):
    """Flips a byte in the middle of the only entry (in its data: the
    header stays valid, so only the checksum sees it)."""
    (entry,) = entry_files(location)
    data = bytearray(entry.read_bytes())
    data[len(data) // 2] ^= 0xFF
    entry.write_bytes(bytes(data))


# --- arrays loaded into memory -------------------------------------------------


ARRAYS = {
    "c": np.arange(60, dtype=np.float64).reshape(3, 4, 5),
    "fortran": np.asfortranarray(np.arange(12, dtype=np.int32).reshape(3, 4)),
    "strided": np.arange(100, dtype=np.int16)[::3],
    "transposed_view": np.arange(30, dtype=np.float32).reshape(5, 6)[1:4, ::2].T,
    "scalar": np.array(3.5),
    "empty": np.zeros((0, 3)),
    "complex": np.arange(8) * (1 + 2j),
    "structured": np.array([(1, 2.0), (3, 4.0)], dtype=[("a", "<i4"), ("b", "<f8")]),
    "bool": np.array([True, False, True]),
    "big_endian": np.arange(5, dtype=">u4"),
    "objects": np.array([{"a": 1}, "text", None, 2.5], dtype=object),
}


@pytest.mark.parametrize("name", sorted(ARRAYS))
@pytest.mark.parametrize("mmap_mode", [None, "r"])
def test_arrays_round_trip(tmp_path, name, mmap_mode):
    """joblib: test_memory_numpy (any layout; object arrays in the pickle)."""
    memory = Memory(tmp_path / "cache", verbose=0, mmap_mode=mmap_mode)
    f, calls = counted(memory, lambda key: ARRAYS[key])
    expected = ARRAYS[name]
    for _ in range(2):
        got = f(name)
        assert got.dtype == expected.dtype
        assert got.shape == expected.shape
        if expected.dtype.hasobject:
            assert list(got) == list(expected)
        else:
            np.testing.assert_array_equal(got, expected)
    assert len(calls) == 1
    if name == "fortran":
        assert got.flags.f_contiguous
    # Read from the entry, not from memory: a handle's get() reads the file.
    again = f.call_and_shelve(name).get()
    np.testing.assert_array_equal(again, expected)
    assert len(calls) == 1


def test_loaded_arrays_are_writable_and_their_own(memory):
    """joblib's loaded arrays are writable: so are memento's (views of the
    loaded bytes, small or large), and changing one changes nothing
    stored."""

    @memory.cache
    def make(n):
        return {"small": np.arange(10.0), "large": np.arange(n, dtype=np.float64)}

    n = 300_000  # 2.4 MB: the large payload path
    make(n)
    for _ in range(2):
        got = memory.cache(make.func).call_and_shelve(n).get()
        for key in ("small", "large"):
            assert got[key].flags.writeable
            got[key][0] = -1.0
        got = make(n)
        assert got["small"][0] == 0.0 and got["large"][0] == 0.0
        assert got["small"].flags.writeable and got["large"].flags.writeable
        got["large"] += 1  # in place
    np.testing.assert_array_equal(make(n)["large"], np.arange(n, dtype=np.float64))


@pytest.mark.parametrize("mmap_mode", [None, "r"])
def test_read_only_results_load_writable(tmp_path, mmap_mode):
    """A read-only array (a mapped result cached again, say) loads
    writable, as joblib's loaded arrays are; mapped, as the mode says."""
    location = tmp_path / "cache"
    frozen = np.arange(50.0)
    frozen.flags.writeable = False
    f, calls = counted(Memory(location, verbose=0, mmap_mode=mmap_mode), lambda: frozen)
    f()
    got = f()
    np.testing.assert_array_equal(got, frozen)
    assert got.flags.writeable == (mmap_mode is None)
    assert isinstance(got, np.memmap) == (mmap_mode == "r")
    assert len(calls) == 1


def test_arrays_are_stored_raw_and_aligned(memory, tmp_path):
    """The MPYR layout: the array's raw bytes in the entry, at a file
    offset that is a multiple of 64."""
    a = np.arange(1000, dtype=np.float64) * 1.5
    memory.cache(lambda: (a, "label"))()
    (entry,) = entry_files(tmp_path / "cache")
    data = entry.read_bytes()
    start = data.index(b"MPYR")
    assert start % 64 == 0
    magic, version, _, pickle_len, count = struct.unpack_from("<4sHHQQ", data, start)
    assert (magic, version, count) == (b"MPYR", 1, 1)
    offset, length = struct.unpack_from("<QQ", data, start + 24)
    assert length == a.nbytes
    assert (start + offset) % 64 == 0
    assert data[start + offset : start + offset + length] == a.tobytes()
    # The pickle does not hold the data.
    assert pickle_len < 200


def test_a_bare_pickle_entry_still_loads(tmp_path, monkeypatch):
    """Entries stored before the layout (one in-band pickle) load, loaded
    and mapped."""
    location = tmp_path / "cache"
    a = np.arange(20, dtype=np.int64)
    monkeypatch.setattr(memento, "_encode", lambda value: pickle.dumps(value, protocol=5))
    f, calls = counted(Memory(location, verbose=0), lambda: {"a": a})
    f()
    monkeypatch.undo()
    (entry,) = entry_files(location)
    data = entry.read_bytes()
    assert b"MPYR" not in data and b"\x80\x05" in data  # a bare pickle
    for mmap_mode in (None, "r"):
        g, more = counted(Memory(location, verbose=0, mmap_mode=mmap_mode), lambda: {"a": a})
        np.testing.assert_array_equal(g.call_and_shelve().get()["a"], a)
        np.testing.assert_array_equal(g()["a"], a)
        assert more == []


class Fragile:
    """Pickles; can never be unpickled."""

    def __reduce__(self):
        return (_refuse, ())


def _refuse():
    raise RuntimeError("this result cannot be loaded")


def test_a_result_that_cannot_be_loaded_is_recomputed_with_one_warning(memory):
    """joblib: test_memory_recomputes_after_an_error_while_loading_results."""
    f, calls = counted(memory, lambda x: (x, Fragile()))
    assert f(1)[0] == 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = f(1)
    assert value[0] == 1
    assert len(calls) == 2
    assert len(caught) == 1, [str(w.message) for w in caught]
    assert caught[0].category is UserWarning
    assert "cannot be loaded" in str(caught[0].message)


# --- mmap_mode -----------------------------------------------------------------


def test_memory_numpy_check_mmap_mode(tmp_path):
    """joblib: test_memory_numpy_check_mmap_mode: the first call returns a
    map too; a damaged entry is recomputed with one warning, and mapped."""
    location = tmp_path / "cache"
    memory = Memory(location, mmap_mode="r", verbose=0)
    f, calls = counted(memory, twice)
    a = np.ones(3)
    b = f(a)
    c = f(a)
    for got in (b, c):
        assert isinstance(got, np.memmap)
        assert got.mode == "r"
        assert not got.flags.writeable
        np.testing.assert_array_equal(got, a * 2)
    with pytest.raises(ValueError):
        c[0] = 5.0
    assert len(calls) == 1
    del b, c
    gc.collect()
    corrupt_data(location)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        d = f(a)
    assert len(calls) == 2, "the damaged result was not recomputed"
    assert len(caught) == 1, [str(w.message) for w in caught]
    assert caught[0].category is UserWarning
    assert "damaged" in str(caught[0].message)
    assert isinstance(d, np.memmap) and d.mode == "r"
    np.testing.assert_array_equal(d, a * 2)


@pytest.mark.parametrize("mmap_mode", ["r", None])
def test_a_file_changed_after_a_verified_hit_is_verified_again(tmp_path, mmap_mode):
    """A Memory remembers the files it verified for mapped hits, and for
    large loaded ones (device, inode, size, times), and does not check an
    unchanged one again; a change in place is seen: the damage is found,
    with one warning."""
    location = tmp_path / "cache"
    f, calls = counted(Memory(location, mmap_mode=mmap_mode, verbose=0), twice)
    a = np.arange(1000.0 if mmap_mode else 300_000.0)  # loaded: a large payload
    f(a)
    # Files changed within the last 100 ms (2 s where times are whole
    # seconds) are verified at every hit: their times could not show a
    # change made within the same clock tick.
    time.sleep(2.2)
    for _ in range(3):
        got = f(a)
        assert isinstance(got, np.memmap) == (mmap_mode == "r")
        np.testing.assert_array_equal(got, a * 2)
        if mmap_mode is None:
            assert got.flags.writeable
            got[:] = 0  # the load's own memory
    del got
    gc.collect()
    corrupt_data(location)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        d = f(a)
    assert len(calls) == 2, "the damaged result was not recomputed"
    assert len(caught) == 1, [str(w.message) for w in caught]
    assert "damaged" in str(caught[0].message)
    np.testing.assert_array_equal(d, a * 2)


def test_mapped_result_equals_the_stored_array(tmp_path):
    """A large result mapped: np.memmap, read-only, equal to what was
    stored; several arrays in one result are each mapped."""
    location = tmp_path / "cache"
    big = np.random.default_rng(0).random((512, 300))
    f, calls = counted(Memory(location, verbose=0), lambda: (big, big[::2].copy(), "x"))
    f()
    g, more = counted(Memory(location, verbose=0, mmap_mode="r"), lambda: (big, big[::2].copy(), "x"))
    first, second, label = g()
    assert more == [], "stored without mmap_mode, found with it"
    assert label == "x"
    for got, expected in ((first, big), (second, big[::2])):
        assert isinstance(got, np.memmap)
        assert not got.flags.writeable
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("mmap_mode", ["c", "r+", "w+"])
def test_copy_on_write_maps_leave_the_store_unchanged(tmp_path, mmap_mode):
    """'c' maps copy on write; 'r+' and 'w+' are 'c' too (a stored result
    must never change in the store)."""
    location = tmp_path / "cache"
    f, calls = counted(Memory(location, verbose=0, mmap_mode=mmap_mode), twice)
    a = np.arange(1000.0)
    got = f(a)
    again = f(a)
    for m in (got, again):
        assert isinstance(m, np.memmap)
        assert m.mode == "c"
        assert m.flags.writeable
    again[:] = -1
    del got, again
    gc.collect()
    np.testing.assert_array_equal(f(a), a * 2)
    g, more = counted(Memory(location, verbose=0), twice)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(g(a), a * 2)
    assert len(calls) == 1 and more == []


def test_call_and_shelve_maps_with_mmap_mode(tmp_path):
    """joblib: test_call_and_shelve (its result's get() honours mmap_mode)."""
    memory = Memory(tmp_path / "cache", verbose=0, mmap_mode="r")
    f = memory.cache(twice)
    handle = f.call_and_shelve(np.arange(5.0))
    got = handle.get()
    assert isinstance(got, np.memmap)
    np.testing.assert_array_equal(got, np.arange(5.0) * 2)
    handle.clear()
    with pytest.raises(KeyError):
        handle.get()


def test_mmap_mode_of_a_result_without_arrays(tmp_path):
    f, calls = counted(Memory(tmp_path / "cache", verbose=0, mmap_mode="r"), lambda x: [x, "y"])
    assert f(2) == [2, "y"]
    assert f(2) == [2, "y"]
    assert len(calls) == 1


def test_signed_entries_are_mapped_after_their_signature_is_checked(tmp_path):
    location = tmp_path / "cache"
    a = np.arange(100.0)
    f, calls = counted(Memory(location, verbose=0, mmap_mode="r", signing_key=b"one secret"), twice)
    f(a)
    got = f(a)
    assert isinstance(got, np.memmap)
    np.testing.assert_array_equal(got, a * 2)
    assert len(calls) == 1
    # Another key refuses it: computed again.
    g, more = counted(Memory(location, verbose=0, mmap_mode="r", signing_key=b"another"), twice)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np.testing.assert_array_equal(g(a), a * 2)
    assert len(more) == 1


# --- compress ------------------------------------------------------------------

CODEC_BUFFER_LZ4, CODEC_BUFFER_ZSTD = 5, 6


@pytest.mark.parametrize(
    "compress, codec",
    [
        (True, CODEC_BUFFER_ZSTD),
        (3, CODEC_BUFFER_ZSTD),
        ("zlib", CODEC_BUFFER_ZSTD),
        ("gzip", CODEC_BUFFER_ZSTD),
        ("bz2", CODEC_BUFFER_ZSTD),
        ("lzma", CODEC_BUFFER_ZSTD),
        ("xz", CODEC_BUFFER_ZSTD),
        ("zstd", CODEC_BUFFER_ZSTD),
        (("zstd", 19), CODEC_BUFFER_ZSTD),
        ("lz4", CODEC_BUFFER_LZ4),
        (("lz4", 3), CODEC_BUFFER_LZ4),
        (("zlib", 9), CODEC_BUFFER_ZSTD),
        (0, None),
        (False, None),
    ],
)
def test_compress_round_trips(tmp_path, compress, codec):
    """joblib: test_compress_* in test_numpy_pickle, for Memory's compress."""
    location = tmp_path / "cache"
    value = {"zeros": np.zeros(100_000), "text": "a" * 10_000}
    f, calls = counted(Memory(location, verbose=0, compress=compress), lambda: value)
    f()
    (entry,) = entry_files(location)
    data = entry.read_bytes()
    (stored_codec,) = struct.unpack_from("<H", data, 6)
    if codec is None:
        assert stored_codec & 0x7FFF == 4  # a plain buffer
        assert len(data) > 800_000
    else:
        assert stored_codec & 0x7FFF == codec
        assert len(data) < 100_000
    got = f.call_and_shelve().get()  # read from the entry
    np.testing.assert_array_equal(got["zeros"], value["zeros"])
    assert got["text"] == value["text"]
    assert got["zeros"].flags.writeable
    assert len(calls) == 1


@pytest.mark.parametrize("compress", ["gz", ("zlib", 10), ("zstd", 30), -1, 1.5, ("zstd",), b"zstd"])
def test_unknown_compress_says_what_is_accepted(tmp_path, compress):
    with pytest.raises(ValueError, match="'lz4', 'zstd'"):
        Memory(tmp_path / "cache", compress=compress).cache(twice)


def test_compressed_entries_are_loaded_not_mapped(tmp_path):
    """joblib warns that compressed results cannot be memory-mapped, and
    loads them: so does memento."""
    location = tmp_path / "cache"
    a = np.arange(10_000.0)
    with pytest.warns(UserWarning, match="cannot be memory-mapped"):
        memory = Memory(location, verbose=0, compress=True, mmap_mode="r")
    f, calls = counted(memory, twice)
    for _ in range(2):
        got = f(a)
        assert not isinstance(got, np.memmap)
        np.testing.assert_array_equal(got, a * 2)
    # Stored compressed; read by a Memory that maps: loaded.
    g, more = counted(Memory(location, verbose=0, mmap_mode="r"), twice)
    got = g(a)
    assert not isinstance(got, np.memmap)
    np.testing.assert_array_equal(got, a * 2)
    assert len(calls) == 1 and more == []


# --- processes -----------------------------------------------------------------


def _large_output(location, counter_path, mmap_mode, barrier):
    memory = Memory(location, verbose=0, mmap_mode=mmap_mode)

    def large_output():
        with open(counter_path, "a") as f:
            f.write("computed\n")
        return np.arange(2_000_000, dtype=np.float64), [np.ones((100, 100))] * 3

    f = memory.cache(large_output)
    barrier.wait()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        big, small = f()
    ok = bool(np.array_equal(big, np.arange(2_000_000, dtype=np.float64)))
    ok = ok and all(np.array_equal(s, np.ones((100, 100))) for s in small)
    return ok, isinstance(big, np.memmap), [str(w.message) for w in caught]


@pytest.mark.parametrize("mmap_mode", [None, "r"])
def test_processes_persisting_a_large_output(tmp_path, mmap_mode):
    """joblib: test_cached_function_race_condition_when_persisting_output:
    processes that call a function with a large output at once all get it,
    with no warning, and it is computed once."""
    location = str(tmp_path / "cache")
    counter = tmp_path / "computations"
    counter.touch()
    n = 4
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(n)
        with ctx.Pool(n) as pool:
            results = pool.starmap(
                _large_output, [(location, str(counter), mmap_mode, barrier)] * n
            )
    for ok, mapped, caught in results:
        assert ok
        assert caught == []
        assert mapped == (mmap_mode == "r")
    assert counter.read_text().splitlines() == ["computed"]


# --- the function's code changed in memory ----------------------------------------


def _sum(x, y):
    return x + y


def _product(x, y):
    return x * y


def _function_to_cache(x, y):
    return x + y


def test_memory_in_memory_function_code_change(memory):
    """joblib: test_memory_in_memory_function_code_change: a function whose
    code is replaced at run time computes again (memento warns that its
    results are removed, where joblib warns of a collision)."""
    original = _function_to_cache.__code__
    try:
        _function_to_cache.__code__ = _sum.__code__
        f = memory.cache(_function_to_cache)
        assert f(1, 2) == 3
        assert f(1, 2) == 3
        _function_to_cache.__code__ = _product.__code__
        with pytest.warns(UserWarning, match="code or its output type changed"):
            assert f(1, 2) == 2
        assert f(1, 2) == 2
    finally:
        _function_to_cache.__code__ = original


# --- more: versions, signing, forced calls ----------------------------------------


def test_a_newer_layout_version_is_refused_and_recomputed(memory, monkeypatch):
    """An entry in a layout version this memento does not read is not
    guessed at: one warning that says to update, and it is computed
    again."""
    f, calls = counted(memory, twice)
    a = np.arange(10.0)
    monkeypatch.setattr(memento, "_LAYOUT_VERSION", 2)
    f(a)
    monkeypatch.undo()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = f.call_and_shelve(a)
        np.testing.assert_array_equal(f(a), a * 2)
    assert len(caught) == 1, [str(w.message) for w in caught]
    assert "layout version 2" in str(caught[0].message)
    assert "update memento" in str(caught[0].message)
    assert len(calls) == 2
    np.testing.assert_array_equal(got.get(), a * 2)  # stored again, in version 1


def test_signed_large_results_load(tmp_path):
    """With a signing key a large loaded result is read and checked in one
    pass, at every hit."""
    location = tmp_path / "cache"
    f, calls = counted(Memory(location, verbose=0, signing_key="k"), twice)
    a = np.arange(300_000.0)
    for _ in range(3):
        got = f(a)
        assert got.flags.writeable
        np.testing.assert_array_equal(got, a * 2)
    assert len(calls) == 1


@pytest.mark.parametrize("mmap_mode", [None, "r"])
def test_call_computes_again_and_maps(tmp_path, mmap_mode):
    """joblib: test_memorized_func_call (call() recomputes and returns the
    metadata), with arrays and mmap_mode."""
    f, calls = counted(Memory(tmp_path / "cache", verbose=0, mmap_mode=mmap_mode), twice)
    a = np.arange(300_000.0)
    f(a)
    value, metadata = f.call(a)
    np.testing.assert_array_equal(value, a * 2)
    assert metadata["duration"] >= 0
    assert len(calls) == 2
    again = f(a)
    assert isinstance(again, np.memmap) == (mmap_mode == "r")
    np.testing.assert_array_equal(again, a * 2)
    assert len(calls) == 2


@pytest.mark.parametrize("mmap_mode,compress", [(None, False), ("r", False), (None, 3)])
def test_a_large_array_is_stored_from_its_own_memory(tmp_path, mmap_mode, compress):
    """A result of one array of 1 MiB or more is written without joining
    the pickle and the array first (Pending::store_split): the entry is
    the same layout, the array's bytes aligned in the file, and it loads;
    compressed, the bytes are joined and compressed as before."""
    location = tmp_path / "cache"
    memory = Memory(location, verbose=0, mmap_mode=mmap_mode, compress=compress)
    a = np.arange(300_000, dtype=np.float64) * 0.5
    f, calls = counted(memory, lambda: a)
    first = f()
    if mmap_mode is None:
        assert first is a  # the miss returns the computed value
    got = f()
    np.testing.assert_array_equal(got, a)
    assert len(calls) == 1
    if compress:
        return
    (entry,) = entry_files(location)
    data = entry.read_bytes()
    start = data.index(b"MPYR")
    assert start % 64 == 0
    _, _, _, pickle_len, count = struct.unpack_from("<4sHHQQ", data, start)
    offset, length = struct.unpack_from("<QQ", data, start + 24)
    assert count == 1 and length == a.nbytes
    assert (start + offset) % 64 == 0
    assert data[start + offset : start + offset + length] == a.tobytes()
    # The bytes between the pickle and the array are zeros.
    head_end = start + 24 + 16 * count + pickle_len
    assert data[head_end - 1 : head_end] == b"."  # the pickle's STOP opcode
    assert set(data[head_end : start + offset]) <= {0}
