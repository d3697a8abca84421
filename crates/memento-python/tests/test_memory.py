"""Memory and cached functions. Ported from joblib's test_memory.py (the
name of each joblib test is in its docstring) where the case applies, plus
memento's own guarantees (reformatted code, compute once across
processes)."""

import datetime
import importlib.util
import multiprocessing
import os
import pathlib
import shutil
import signal
import sys
import textwrap
import time
import warnings

import numpy as np
import pytest

import memento_workers
from memento import Memory, MemorizedResult, NotMemorizedFunc, expires_after


def counted(memory, **options):
    """A cached f(x, y=1) -> x + y that records each computation."""
    calls = []

    def f(x, y=1):
        calls.append((x, y))
        return x + y

    return memory.cache(f, **options), calls


def test_integration_hits_and_misses(memory, tmp_path):
    """joblib: test_memory_integration (hits, misses, folder deleted
    mid-run, clear, eval)."""
    f, calls = counted(memory)
    for _ in range(3):
        assert f(1) == 2
    assert calls == [(1, 1)]
    assert f(2) == 3
    assert calls == [(1, 1), (2, 1)]
    # The folder removed under a running process: still right, and stored again.
    shutil.rmtree(tmp_path / "cache")
    assert f(3) == 4
    assert f(3) == 4
    assert calls.count((3, 1)) == 1
    assert (tmp_path / "cache" / ".gitignore").read_text().strip() == "*"
    memory.clear()
    assert f(1) == 2
    assert calls.count((1, 1)) == 2
    # Memory.eval goes through the same cache.
    assert memory.eval(f.func, 1) == 2
    assert calls.count((1, 1)) == 2


def test_no_memory():
    """joblib: test_no_memory, test_call_method_not_memorized,
    test_clear_memory_with_none_location."""
    memory = Memory(None)
    calls = []

    @memory.cache
    def f(x):
        calls.append(x)
        return x

    assert isinstance(f, NotMemorizedFunc)
    for _ in range(3):
        assert f(1) == 1
    assert calls == [1, 1, 1]
    assert f.call(2) == (2, {})
    assert f.check_call_in_cache(1) is False
    assert f.call_and_shelve(4).get() == 4
    assert memory.eval(lambda: 5) == 5
    memory.clear()
    memory.reduce_size(items_limit=0)


def test_keyword_and_positional_arguments_share_a_key(memory):
    """joblib: test_memory_kwarg, test_memory_args_as_kwargs."""
    f, calls = counted(memory)
    assert f(1, 2) == 3
    assert f(1, y=2) == 3
    assert f(x=1, y=2) == 3
    assert f(y=2, x=1) == 3
    assert calls == [(1, 2)]
    # A default applied is the same call as the default passed.
    assert f(5) == f(5, 1) == f(x=5, y=1) == 6
    assert calls == [(1, 2), (5, 1)]


def test_ignore(memory):
    """joblib: test_memory_ignore, test_partial_decoration."""
    calls = []

    @memory.cache(ignore=["verbose"])
    def z(x, verbose=0):
        calls.append(x)
        return x

    assert z(0, verbose=1) == 0
    assert z(0, verbose=2) == 0
    assert z(0) == 0
    assert calls == [0]
    with pytest.raises(ValueError, match="no argument 'nope'"):
        memory.cache(lambda a: a, ignore=["nope"])


def test_ignore_keyword_only_and_var_kwargs(memory):
    """joblib: test_memory_func_with_kwonly_args."""
    calls = []

    @memory.cache(ignore=["kw2"])
    def f(a, *, kw1="b", kw2=0, **rest):
        calls.append((a, kw1, rest))
        return a

    assert f(1, kw1="c", kw2=5, z=1, w=2) == 1
    assert f(1, kw1="c", kw2=6, w=2, z=1) == 1
    assert len(calls) == 1
    assert f(1, kw1="d") == 1
    assert len(calls) == 2
    with pytest.raises(TypeError):
        f(1, 2)


def test_exceptions_are_not_cached(memory):
    """joblib: test_memory_exception."""
    calls = []

    @memory.cache
    def fails(x):
        calls.append(x)
        raise ZeroDivisionError(x)

    for _ in range(3):
        with pytest.raises(ZeroDivisionError):
            fails(1)
    assert calls == [1, 1, 1]
    assert not fails.check_call_in_cache(1)


def test_numpy_arguments(memory):
    """joblib: test_memory_numpy; memento: layout-free array keys."""
    calls = []

    @memory.cache
    def total(a):
        calls.append(a.shape)
        return float(a.sum())

    a = np.arange(24.0).reshape(4, 6)
    assert total(a) == total(a.copy()) == a.sum()
    assert len(calls) == 1
    # The same logical array in Fortran order, or as a strided view's copy.
    assert total(np.asfortranarray(a)) == a.sum()
    assert len(calls) == 1
    # Other contents, shape or dtype: another key.
    total(a + 1)
    total(a.reshape(6, 4))
    total(a.astype(np.float32))
    assert len(calls) == 4
    # A strided view keys as its contiguous copy.
    v = a[::2, ::3]
    assert not v.flags.c_contiguous
    total(v)
    total(np.ascontiguousarray(v))
    assert len(calls) == 5


def test_numpy_results(memory):
    """joblib: test_memory_numpy (results come back equal)."""

    @memory.cache
    def grid(n):
        return np.arange(n * n, dtype=np.int32).reshape(n, n)

    first = grid(50)
    again = grid(50)
    assert again.dtype == np.int32
    np.testing.assert_array_equal(first, again)


def test_dict_and_set_order(memory):
    """joblib: test_dict_hash, test_set_hash (through a cached function)."""
    calls = []

    @memory.cache
    def f(d, s):
        calls.append(1)
        return len(d) + len(s)

    keys = [f"k{i}" for i in range(50)]
    d1 = {k: i for i, k in enumerate(keys)}
    d2 = {k: d1[k] for k in reversed(keys)}
    assert list(d1) != list(d2)
    s1 = set(keys)
    s2 = set(reversed(keys))
    assert f(d1, s1) == f(d2, s2) == 100
    assert len(calls) == 1


def test_clear(memory):
    """joblib: test_memory_clear (Memory.clear), and MemorizedFunc.clear."""
    f, calls = counted(memory)
    f(1)
    f.clear()
    assert not f.check_call_in_cache(1)
    f(1)
    assert calls == [(1, 1), (1, 1)]
    memory.clear()
    assert not f.check_call_in_cache(1)


def test_check_call_in_cache(memory):
    """joblib: test_check_call_in_cache."""
    f, calls = counted(memory)
    assert f.check_call_in_cache(2) is False
    assert calls == []
    f(2)
    assert f.check_call_in_cache(2) is True
    assert f.check_call_in_cache(x=2, y=1) is True
    assert f.check_call_in_cache(2, 2) is False
    assert calls == [(2, 1)]


def test_call_and_shelve(memory):
    """joblib: test_call_and_shelve."""
    f, calls = counted(memory)
    result = f.call_and_shelve(2)
    assert isinstance(result, MemorizedResult)
    assert result.get() == 3
    assert f.call_and_shelve(2).get() == 3
    assert calls == [(2, 1)]
    result.clear()
    with pytest.raises(KeyError):
        result.get()
    result.clear()  # a second clear does nothing


def test_call_forces_and_returns_metadata(memory):
    """joblib: TestMemorizedFunc.test_call_method_memorized."""
    f, calls = counted(memory)
    assert f(3) == 4
    value, metadata = f.call(3)
    assert value == 4
    assert calls == [(3, 1), (3, 1)]
    assert metadata["input_args"] == {"x": "3", "y": "1"}
    assert metadata["duration"] >= 0
    assert metadata["time"] > 0
    assert f(3) == 4
    assert len(calls) == 2


def test_reduce_size_items(memory):
    """joblib: test_memory_reduce_size_items_limit."""
    f, calls = counted(memory)
    for i in range(4):
        f(i)
    memory.reduce_size(items_limit=10)
    assert all(f.check_call_in_cache(i) for i in range(4))
    memory.reduce_size(items_limit=2)
    assert sum(f.check_call_in_cache(i) for i in range(4)) == 2
    memory.reduce_size(items_limit=0)
    assert not any(f.check_call_in_cache(i) for i in range(4))


def test_reduce_size_age_limit_rejects_negative(memory):
    """joblib: test_memory_reduce_size_age_limit (its error case)."""
    with pytest.raises(ValueError, match="0 or more"):
        memory.reduce_size(age_limit=-1)


def test_unpicklable_argument_is_an_error_that_says_what_to_do(memory):
    """joblib: test_hashing_pickling_error."""

    @memory.cache
    def f(x):
        return 1

    with pytest.raises(TypeError, match=r"ignore=\['x'\]"):
        f(lambda: 0)


def test_unpicklable_result_is_returned_not_stored(memory):
    @memory.cache
    def f(x):
        return lambda: x

    with pytest.warns(UserWarning, match="cannot be pickled"):
        assert f(1)() == 1
    assert not f.check_call_in_cache(1)


def test_gitignore(memory, tmp_path):
    """joblib: TestAutoGitignore."""
    f, _ = counted(memory)
    f(1)
    assert (tmp_path / "cache" / ".gitignore").read_text().strip() == "*"


def load_module(directory, name, source):
    """Imports `source` as the module `name` from a file of its own (so
    that inspect finds its source)."""
    directory.mkdir()
    path = directory / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[name]
    return module


ORIGINAL = """
CALLS = []

def g(x, y=2):
    CALLS.append(x)
    return x * y
"""

REFORMATTED = '''
CALLS = []



def g(x,
      y = 2):  # the same code, reformatted
  CALLS.append( x )
  # a comment

  return x*y
'''

CHANGED = """
CALLS = []

def g(x, y=2):
    CALLS.append(x)
    return x * y + 1
"""


def test_reformatted_function_keeps_its_results(memory, tmp_path):
    """joblib: test_memory_file_modification (cosmetic edits keep results;
    joblib itself drops them on any change inside the function)."""
    a = load_module(tmp_path / "a", "reformat_mod", ORIGINAL)
    b = load_module(tmp_path / "b", "reformat_mod", REFORMATTED)
    assert memory.cache(a.g)(3) == 6
    assert a.CALLS == [3]
    assert memory.cache(b.g)(3) == 6
    assert b.CALLS == [], "a reformatted function recomputed"


def test_changed_body_recomputes(memory, tmp_path):
    """joblib: test_memory_file_modification,
    test_memory_in_memory_function_code_change."""
    a = load_module(tmp_path / "a", "change_mod", ORIGINAL)
    c = load_module(tmp_path / "c", "change_mod", CHANGED)
    assert memory.cache(a.g)(3) == 6
    with pytest.warns(UserWarning, match="code or its output type changed"):
        assert memory.cache(c.g)(3) == 7
    assert c.CALLS == [3]
    # Back to the first code: never the other code's result.
    assert memory.cache(a.g)(3) == 6


def test_indentation_is_code(memory, tmp_path):
    """Dropping INDENT/DEDENT as formatting would give these two one key."""
    inside = "def h(x):\n    if x:\n        x = x + 1\n        x = x + 10\n    return x\n"
    outside = "def h(x):\n    if x:\n        x = x + 1\n    x = x + 10\n    return x\n"
    a = load_module(tmp_path / "a", "indent_mod", inside)
    b = load_module(tmp_path / "b", "indent_mod", outside)
    assert memory.cache(a.h)(0) == 0
    with pytest.warns(UserWarning, match="code or its output type changed"):
        assert memory.cache(b.h)(0) == 10


def test_function_without_source(memory):
    """Code built by exec has no file: its code object is fingerprinted."""
    ns_a, ns_b = {}, {}
    exec("def k(x):\n    return x + 1\n", ns_a)
    exec("def k(x):\n    return x + 2\n", ns_b)
    assert memory.cache(ns_a["k"])(1) == 2
    with pytest.warns(UserWarning, match="code or its output type changed"):
        assert memory.cache(ns_b["k"])(1) == 3
    assert memory.cache(ns_a["k"])(1) == 2


def test_eight_processes_compute_a_new_key_once(tmp_path):
    """memento: one computation where joblib does 8 (joblib:
    test_cached_function_race_condition_when_persisting_output, stricter)."""
    counter = tmp_path / "computations"
    counter.touch()
    location = str(tmp_path / "cache")
    exits = memento_workers.released_together(
        memento_workers.square_once, lambda i: (location, str(counter)), 8, timeout=120
    )
    assert exits == [0] * 8
    assert len(counter.read_text().splitlines()) == 1
    memory = Memory(location, verbose=0)
    f = memory.cache(memento_workers._slow_square, ignore=["counter_path"])
    assert f.check_call_in_cache(7, str(counter))


# --- cache_validation_callback and expires_after -------------------------------


def test_expires_after(memory):
    """joblib: TestCacheValidationCallback::test_memory_expires_after."""
    # Wide margins: a loaded machine may pause this process for a while
    # between two calls.
    f, calls = counted(memory, cache_validation_callback=expires_after(seconds=1.5))
    assert f(2) == 3
    assert f(2) == 3
    assert calls == [(2, 1)], "a fresh result was recomputed"
    time.sleep(2.0)
    assert f(2) == 3
    assert calls == [(2, 1), (2, 1)], "an expired result was used"
    # The recomputed result replaced the old one: fresh again.
    assert f(2) == 3
    assert len(calls) == 2


def test_expires_after_is_a_timedelta():
    """expires_after takes timedelta's arguments and compares with 'time'."""
    check = expires_after(minutes=1, seconds=30)
    now = time.time()
    assert check({"time": now - 80, "duration": 0.0, "input_args": {}}) is True
    assert check({"time": now - 100, "duration": 0.0, "input_args": {}}) is False
    assert expires_after(days=1)({"time": now - 3600}) is True
    assert expires_after(hours=1)({"time": now - 2 * 3600}) is False


@pytest.mark.parametrize("valid", [False, True])
def test_constant_cache_validation_callback(memory, valid):
    """joblib: TestCacheValidationCallback::test_constant_cache_validation_callback."""
    f, calls = counted(memory, cache_validation_callback=lambda metadata: valid)
    assert f(2) == 3
    assert f(2) == 3
    assert f(y=1, x=2) == 3
    assert len(calls) == (3 if not valid else 1)
    assert f.check_call_in_cache(2) is valid
    # call_and_shelve goes through the same check.
    assert f.call_and_shelve(2).get() == 3
    assert len(calls) == (4 if not valid else 1)


def test_cache_validation_callback_sees_the_metadata(memory):
    """joblib: TestCacheValidationCallback::test_memory_only_cache_long_run
    (the callback reads the metadata: here it refuses results computed in
    less than 0.1 s)."""
    seen = []

    def long_runs_only(metadata):
        seen.append(metadata)
        return metadata["duration"] > 0.1

    calls = []

    @memory.cache(cache_validation_callback=long_runs_only)
    def f(x, delay=0.0):
        calls.append(x)
        time.sleep(delay)
        return x * 2

    assert seen == [], "called with nothing stored"
    before = time.time()
    assert f(3) == 6
    assert f(3) == 6
    assert calls == [3, 3], "a short run was used"
    assert set(seen[0]) == {"duration", "input_args", "time"}
    assert seen[0]["input_args"] == {"x": "3", "delay": "0.0"}
    # Entries keep their creation time in whole milliseconds (rounded
    # down): it may fall up to 1 ms before a clock read just before it.
    assert before - 0.001 <= seen[0]["time"] <= time.time()
    assert 0 <= seen[0]["duration"] < 0.1
    assert f(4, delay=0.2) == 8
    assert f(4, delay=0.2) == 8
    assert calls == [3, 3, 4], "a long run was recomputed"
    assert seen[-1]["duration"] >= 0.2


def test_cache_validation_callback_must_be_callable(memory):
    """joblib: TestCacheValidationCallback::test_invalid_cache_validation_callback."""
    with pytest.raises(ValueError, match="callable"):
        memory.cache(lambda x: x, cache_validation_callback=1)


# --- damaged entries, reduce_size, processes -----------------------------------


def entry_files(location):
    return sorted(pathlib.Path(location).rglob("*.bin"))


def in_new_process(function, *args):
    """function(*args) in a spawned process (where no result is held in
    memory: memento keeps recent results in the process, so a damaged file
    is seen by the next process that reads it)."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(function, args)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "one byte"])
def test_damaged_entry_is_recomputed_with_one_warning(tmp_path, damage):
    """joblib: test_memory_recomputes_after_an_error_while_loading_results,
    test_memory_numpy_check_mmap_mode (its corruption part)."""
    location = str(tmp_path / "cache")
    counter = tmp_path / "computations"
    counter.touch()
    run = memento_workers.counted_range_with_warnings
    assert in_new_process(run, location, str(counter), 1000) == (list(range(1000)), [])
    (entry,) = entry_files(location)
    data = entry.read_bytes()
    if damage == "garbage":
        entry.write_bytes(b"garbage" * 100)
    elif damage == "truncated":
        entry.write_bytes(data[: len(data) // 2])
    else:
        middle = len(data) // 2
        entry.write_bytes(data[:middle] + bytes([data[middle] ^ 1]) + data[middle + 1 :])
    value, caught = in_new_process(run, location, str(counter), 1000)
    assert value == list(range(1000))
    assert len(counter.read_text().splitlines()) == 2, "the damaged result was not recomputed"
    assert len(caught) == 1, caught
    category, message = caught[0]
    assert category == "UserWarning"
    assert "damaged" in message, message
    # Repaired: read back, without a warning.
    assert in_new_process(run, location, str(counter), 1000) == (list(range(1000)), [])
    assert len(counter.read_text().splitlines()) == 2


def test_reduce_size_bytes(memory):
    """joblib: test_memory_reduce_size_bytes_limit."""
    calls = []

    @memory.cache
    def blob(i):
        calls.append(i)
        return bytes([i]) * 10_000

    for i in range(4):
        blob(i)
        time.sleep(0.05)
    assert 10_000 <= blob.call_and_shelve(0).metadata()["output_size"] < 12_000
    # Limits count bytes on the disk (whole blocks): one entry's share.
    entries, on_disk = memory._memory.stats()
    assert entries == 4
    size = on_disk / 4
    memory.reduce_size()  # no limit: nothing removed
    assert all(blob.check_call_in_cache(i) for i in range(4))
    memory.reduce_size(bytes_limit="1M")
    assert all(blob.check_call_in_cache(i) for i in range(4))
    memory.reduce_size(bytes_limit=int(2.5 * size))
    kept = [i for i in range(4) if blob.check_call_in_cache(i)]
    assert len(kept) == 2, kept
    memory.reduce_size(bytes_limit=100)
    assert not any(blob.check_call_in_cache(i) for i in range(4))
    assert len(calls) == 4


def test_reduce_size_age(memory):
    """joblib: test_memory_reduce_size_age_limit."""
    f, calls = counted(memory)
    f(1)
    f(2)
    time.sleep(1.5)
    f(3)
    memory.reduce_size(age_limit=datetime.timedelta(days=1))
    assert all(f.check_call_in_cache(i) for i in (1, 2, 3))
    memory.reduce_size(age_limit=datetime.timedelta(seconds=1))
    assert [f.check_call_in_cache(i) for i in (1, 2, 3)] == [False, False, True]
    memory.reduce_size(age_limit=datetime.timedelta(seconds=0))
    assert not f.check_call_in_cache(3)
    assert len(calls) == 3


def test_sixteen_processes_compute_a_new_key_once(tmp_path):
    """memento (issue 13): 16 processes on one new key, one computation."""
    counter = tmp_path / "computations"
    counter.touch()
    location = str(tmp_path / "cache")
    exits = memento_workers.released_together(
        memento_workers.square_once, lambda i: (location, str(counter)), 16, timeout=180
    )
    assert exits == [0] * 16
    assert len(counter.read_text().splitlines()) == 1


def wait_for(path, timeout=60):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def test_writer_killed_mid_computation(tmp_path):
    """memento (issue 13): a process SIGKILLed while it computes a new key
    leaves nothing stored and nothing locked: the next call computes."""
    ctx = multiprocessing.get_context("spawn")
    location = str(tmp_path / "cache")
    marker = tmp_path / "computations"
    writer = ctx.Process(target=memento_workers.triple_slowly, args=(location, str(marker)))
    writer.start()
    wait_for(marker)
    while not marker.read_text():
        time.sleep(0.02)
    os.kill(writer.pid, signal.SIGKILL)
    writer.join(30)
    assert writer.exitcode == -signal.SIGKILL
    f = Memory(location, verbose=0, lock_timeout=30).cache(
        memento_workers._marked_triple, ignore=["marker_path", "delay"]
    )
    assert not f.check_call_in_cache(5, str(marker))
    assert f(5, str(marker)) == 15
    assert len(marker.read_text().splitlines()) == 2
    assert f(5, str(marker)) == 15
    assert len(marker.read_text().splitlines()) == 2


def test_writer_killed_mid_write(tmp_path):
    """memento (issue 13): a process SIGKILLed while it writes large results
    leaves no damaged result: what is stored reads back right, and the rest
    is computed."""
    ctx = multiprocessing.get_context("spawn")
    location = str(tmp_path / "cache")
    started = tmp_path / "started"
    for delay in (0.05, 0.2, 0.45):
        started.unlink(missing_ok=True)
        writer = ctx.Process(
            target=memento_workers.write_big_forever, args=(location, str(started))
        )
        writer.start()
        wait_for(started)
        time.sleep(delay)
        os.kill(writer.pid, signal.SIGKILL)
        writer.join(30)
        assert writer.exitcode == -signal.SIGKILL
    f = Memory(location, verbose=0, lock_timeout=30).cache(memento_workers._big)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(4):
            np.testing.assert_array_equal(f(i), np.full(1 << 21, i, dtype=np.int64))
    assert caught == [], [str(w.message) for w in caught]
    # No temporary file of the killed writer left as an entry.
    assert len(entry_files(location)) == 4
