"""More of joblib's test_memory.py, ported where the case applies to a
Python drop-in (each test's docstring names its joblib origin).

Ported: test_memory_lambda, test_memory_name_collision,
test_memory_warning_lambda_collisions, test_memory_warning_collision_detection,
test_memory_partial, test_memory_eval, test_argument_change,
test_memorized_result_forwards_mmap_mode, test_memory_ignore_decorated,
test_persistence (also across processes, and for a function decorated
in a module), test_memorized_pickling, test_memorized_result_pickle,
test_memory_pickle_dump_load, test_memorized_repr, test_memory_objects_repr,
test_instanciate_store_backend_with_pathlib_path,
test_memory_default_store_backend,
test_parallel_call_cached_function_defined_in_jupyter,
test_cached_function_race_condition_when_persisting_output_2,
test_call_and_shelve_lazily_load_stored_result, test_info_log,
test_memory_func_with_signature.

Where memento deliberately differs, the test asserts memento's behaviour
and says why:

- Collisions (two functions of one name in one module): joblib warns
  ``JobLibCollisionWarning`` and shares one folder. memento keys a function
  by its module, name and code, so each call returns its own function's
  result; a name whose code changed removes the other code's results with a
  ``UserWarning`` (memento's "code changed" warning), as joblib does.
- An unknown backend is a ``ValueError`` naming memento's, ``'local'`` and
  ``'s3'`` (joblib: ``TypeError``, "Unknown location").
- Verbose output is printed (joblib's format), never on a hit: a hit does
  no work it does not need, at any verbosity (joblib logs "Querying").
- A ``MemorizedFunc`` is made by ``Memory.cache`` (its constructor takes
  memento's core, not a location), so the pickling tests cache through a
  ``Memory``; a pickled ``Memory`` names its folder by its absolute path.
- A lazy ``call_and_shelve`` is checked by the result never being
  unpickled (joblib checks the output file's atime, which filesystems
  mounted ``noatime`` or ``relatime`` do not keep).

Left out: ``compare(vars(...))`` and ``hash(memory)`` equality of
test_memory_pickle_dump_load (memento's objects hold a handle on the Rust
core, compared here by what they do instead), and joblib's ``Parallel``
(not a dependency: spawned processes stand in for its workers).
"""

import functools
import multiprocessing
import os
import pathlib
import pickle
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

from memento import MemorizedFunc, MemorizedResult, Memory, NotMemorizedFunc

# --- module-level functions (picklable by reference) -----------------------------

CALLS = []


def square(x):
    CALLS.append(x)
    return x * x


def count_and_append(x=[]):  # noqa: B006 - the mutable default is the test
    """joblib's: returns the length of its argument, then appends to it."""
    len_x = len(x)
    x.append(None)
    return len_x


def arange(n):
    return np.arange(n, dtype=np.float64)


def conditional_complex_output(complex_output=True):
    complex_obj = {str(i): i for i in range(100_000)}
    return complex_obj if complex_output else "simple output"


def call_conditional(location, flag):
    """Run in a worker: the cached call, its value's summary, its warnings."""
    memory = Memory(location, verbose=0)
    f = memory.cache(conditional_complex_output)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = f(flag)
    summary = len(value) if isinstance(value, dict) else value
    return summary, [str(w.message) for w in caught]


UNPICKLED = []


def _loud_loaded(tag):
    UNPICKLED.append(tag)
    return Loud(tag)


class Loud:
    """A value that records each time it is unpickled."""

    def __init__(self, tag):
        self.tag = tag

    def __reduce__(self):
        return (_loud_loaded, (self.tag,))


def make_loud(tag):
    return Loud(tag)


# --- functions --------------------------------------------------------------------


def test_memory_lambda(memory):
    """joblib: test_memory_lambda."""
    calls = []
    f = memory.cache(lambda x: calls.append(x) or x + 1)
    assert [f(1) for _ in range(3)] == [2, 2, 2]
    assert calls == [1]


def test_lambdas_on_one_line_keep_apart(memory):
    """joblib: test_memory_warning_lambda_collisions. Two lambdas share a
    name and a line (their source): memento tells them apart by their code,
    and each returns its own result. They share the name, so calling them
    in turn removes the other's results with memento's warning (joblib
    warns of a collision)."""
    a, b = memory.cache(lambda x: x), memory.cache(lambda x: x + 1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert [a(1), b(1), a(1), b(1)] == [1, 2, 1, 2]
    messages = [str(w.message) for w in caught]
    assert messages and all("<lambda>" in m and "changed" in m for m in messages)


def test_memory_name_collision(memory):
    """joblib: test_memory_name_collision. Two functions of one name in one
    scope: each call returns its own function's result (memento keys by
    code too); the switch warns, naming the function."""

    @memory.cache
    def name_collision(x):
        """A first function called name_collision."""
        return x

    a = name_collision

    @memory.cache
    def name_collision(x):
        """A second function called name_collision."""
        return -x

    b = name_collision
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert [a(1), b(1), a(2), b(2)] == [1, -1, 2, -2]
    assert caught
    assert all("name_collision" in str(w.message) for w in caught)


def test_functions_without_source_keep_apart(memory):
    """joblib: test_memory_warning_collision_detection. Functions built by
    ``exec`` have no source; memento fingerprints their code object, so two
    of one name with different bodies keep apart."""
    namespace_a, namespace_b = {}, {}
    exec("def no_source(x):\n    return x + 10\n", namespace_a)  # noqa: S102
    exec("def no_source(x):\n    return x + 20\n", namespace_b)  # noqa: S102
    a = memory.cache(namespace_a["no_source"])
    b = memory.cache(namespace_b["no_source"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert [a(1), b(1), a(1), b(1)] == [11, 21, 11, 21]


def test_memory_partial(memory):
    """joblib: test_memory_partial. A ``functools.partial`` is cached; its
    bound arguments are part of what it is (``partial(f, 1)`` and
    ``partial(f, 2)`` keep apart)."""
    calls = []

    def func(x, y):
        calls.append((x, y))
        return x * 100 + y

    one = memory.cache(functools.partial(func, 1))
    assert [one(2), one(2), one(y=2)] == [102, 102, 102]
    assert calls == [(1, 2)]
    two = memory.cache(functools.partial(func, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # neither removes the other's results
        assert two(2) == 202
        assert calls == [(1, 2), (2, 2)]
        assert one(2) == 102
        assert two(2) == 202
    assert len(calls) == 2


def test_memory_eval(memory):
    """joblib: test_memory_eval."""
    calls = []

    def f(x):
        calls.append(x)
        return 3 * x

    assert memory.eval(f, 1) == f(1) == 3
    assert memory.eval(f, 1) == 3
    assert memory.eval(f, x=1) == 3
    assert calls == [1, 1]  # the direct f(1), and the first eval
    assert Memory(None).eval(f, 2) == 6


def test_argument_change(memory):
    """joblib: test_argument_change. The key is taken before the call: a
    mutable default the body changes gives a new key next time, and an
    argument the body mutates is keyed as it was passed."""
    func = memory.cache(count_and_append)
    assert func() == 0  # keyed with x=[]
    assert func() == 1  # x=[None] now: not stored yet, computed
    assert func() == 2

    calls = []

    @memory.cache
    def consume(items):
        calls.append(list(items))
        total = sum(items)
        items.clear()
        return total

    assert consume([1, 2, 3]) == 6
    assert consume([1, 2, 3]) == 6
    assert calls == [[1, 2, 3]]


def test_memorized_result_forwards_mmap_mode(tmp_path):
    """joblib: test_memorized_result_forwards_mmap_mode. A handle, and a
    handle rebuilt by pickle, return the result mapped as the function's
    calls do."""
    memory = Memory(tmp_path / "cache", mmap_mode="r", verbose=0)
    f = memory.cache(arange)
    f(1000)
    for handle in (f.call_and_shelve(1000), pickle.loads(pickle.dumps(f.call_and_shelve(1000)))):
        value = handle.get()
        assert isinstance(value, np.memmap)
        assert value.mode == "r"
        np.testing.assert_array_equal(value, np.arange(1000, dtype=np.float64))


def test_memory_ignore_decorated(memory):
    """joblib: test_memory_ignore_decorated. ``ignore`` names an argument of
    the function a ``functools.wraps`` decorator wraps."""
    calls = []

    def decorate(f):
        @functools.wraps(f)
        def wrapped(*args, **kwargs):
            return f(*args, **kwargs)

        return wrapped

    @memory.cache(ignore=["y"])
    @decorate
    def z(x, y=1):
        calls.append((x, y))
        return x

    assert z.ignore == ["y"]
    assert [z(0, y=1), z(0, y=1), z(0, y=2)] == [0, 0, 0]
    assert calls == [(0, 1)]


# --- pickling ---------------------------------------------------------------------


def test_persistence(memory):
    """joblib: test_persistence. A pickled cached function finds the stored
    results; a pickled Memory names the same folder; with caching disabled
    both pickle too."""
    g = memory.cache(square)
    CALLS.clear()
    assert g(7) == 49
    h = pickle.loads(pickle.dumps(g))
    assert isinstance(h, MemorizedFunc)
    assert h.check_call_in_cache(7)
    assert h(7) == 49
    assert CALLS == [7]
    memory2 = pickle.loads(pickle.dumps(memory))
    assert memory2.location == memory.location
    assert memory2.cache(square)(7) == 49
    assert CALLS == [7]

    disabled = Memory(None, verbose=0)
    assert pickle.loads(pickle.dumps(disabled)).location is None
    gp = pickle.loads(pickle.dumps(disabled.cache(square)))
    assert isinstance(gp, NotMemorizedFunc)
    assert gp(3) == 9


def test_pickled_function_in_another_process(memory):
    """joblib: test_persistence, across processes: a cached function sent to
    a spawned worker (as a process pool sends it) finds the stored result."""
    f = memory.cache(square)
    f(6)
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        assert pool.apply(f.check_call_in_cache, (6,)) is True
        assert pool.apply(f, (6,)) == 36
        assert pool.apply(f, (5,)) == 25
    assert f.check_call_in_cache(5)


def test_decorated_in_a_module_pickles_by_reference(tmp_path, monkeypatch):
    """joblib: test_persistence, for ``@memory.cache`` above a ``def`` in a
    module: the module's name for the function is the cached function, so
    it pickles by that name (pickle cannot send the function itself), and
    a spawned worker finds the stored results through it."""
    package = tmp_path / "modules"
    package.mkdir()
    location = tmp_path / "cache"
    (package / "decorated_module.py").write_text(
        "from memento import Memory\n"
        f"memory = Memory({str(location)!r}, verbose=0)\n"
        "@memory.cache\n"
        "def cube(x):\n"
        "    return x ** 3\n"
    )
    monkeypatch.syspath_prepend(str(package))
    import decorated_module

    assert decorated_module.cube(2) == 8
    assert pickle.loads(pickle.dumps(decorated_module.cube)) is decorated_module.cube
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        assert pool.apply(decorated_module.cube.check_call_in_cache, (2,)) is True
        assert pool.apply(decorated_module.cube, (3,)) == 27
    assert decorated_module.cube.check_call_in_cache(3)
    sys.modules.pop("decorated_module")


def test_memorized_pickling(memory):
    """joblib: test_memorized_pickling."""
    for func in (memory.cache(square), NotMemorizedFunc(square)):
        result = func.call_and_shelve(2)
        result2 = pickle.loads(pickle.dumps(result))
        assert result2.get() == result.get() == 4


def test_memorized_result_pickle(tmp_path):
    """joblib: test_memorized_result_pickle (joblib#747)."""
    memory = Memory(tmp_path / "cache")

    @memory.cache
    def g(x):
        return x**2

    result = g.call_and_shelve(4)
    loaded = pickle.loads(pickle.dumps(result))
    assert isinstance(loaded, MemorizedResult)
    assert loaded.func == result.func
    assert loaded.key == result.key
    assert str(loaded) == str(result)
    assert loaded.get() == 16
    loaded.clear()
    assert not g.check_call_in_cache(4)


@pytest.mark.parametrize(
    "memory_kwargs",
    [
        {"compress": 3, "verbose": 2},
        {"mmap_mode": "r", "verbose": 5, "backend_options": {"parameter": "unused"}},
    ],
)
def test_memory_pickle_dump_load(tmp_path, memory_kwargs):
    """joblib: test_memory_pickle_dump_load. The Memory, a cached function
    and a result handle keep their settings and find the same results."""
    memory = Memory(tmp_path / "cache", **memory_kwargs)
    reloaded = pickle.loads(pickle.dumps(memory))
    for name in ("location", "mmap_mode", "compress", "bytes_limit", "backend_options"):
        assert getattr(reloaded, name) == getattr(memory, name), name
    assert reloaded._verbose == memory._verbose

    func = memory.cache(arange, ignore=None)
    func_reloaded = pickle.loads(pickle.dumps(func))
    for name in ("func", "ignore", "mmap_mode", "compress", "cache_validation_callback"):
        assert getattr(func_reloaded, name) == getattr(func, name), name
    assert repr(func_reloaded) == repr(func)

    result = func.call_and_shelve(10)
    result_reloaded = pickle.loads(pickle.dumps(result))
    assert repr(result_reloaded) == repr(result)
    assert func_reloaded.check_call_in_cache(10)
    np.testing.assert_array_equal(result_reloaded.get(), np.arange(10, dtype=np.float64))


def test_memory_signing_key_survives_pickling(tmp_path, monkeypatch):
    """joblib: test_memory_pickle_dump_load, for memento's signing key: a
    pickled Memory given a key still reads what it signed."""
    monkeypatch.delenv("MEMENTO_KEY", raising=False)
    memory = Memory(tmp_path / "cache", verbose=0, signing_key="secret")
    f = memory.cache(square)
    f(4)
    assert pickle.loads(pickle.dumps(f)).check_call_in_cache(4)


# --- repr -------------------------------------------------------------------------


def test_memorized_repr(tmp_path, capsys):
    """joblib: test_memorized_repr. Two cached functions of one function
    have one repr and share results; verbose levels are smoke-tested."""
    memory = Memory(tmp_path / "cache", verbose=0)
    func, func2 = memory.cache(square), memory.cache(square)
    assert func.call_and_shelve(2).get() == func2.call_and_shelve(2).get() == 4
    assert repr(func) == repr(func2)
    not_memorized = NotMemorizedFunc(square)
    assert "square" in repr(not_memorized)
    assert "4" in repr(not_memorized.call_and_shelve(2))
    for verbose in (11, 5):
        result = memory.cache(square, verbose=verbose).call_and_shelve(verbose)
        assert result.get() == verbose * verbose
    assert "square" in capsys.readouterr().out


def test_memory_objects_repr(tmp_path):
    """joblib: test_memory_objects_repr."""
    memory = Memory(tmp_path / "cache", verbose=0)
    f = memory.cache(square)
    result = f.call_and_shelve(3)
    location = str(tmp_path / "cache")
    assert repr(memory) == f"Memory(location={location!r})"
    assert repr(f).startswith("MemorizedFunc(func=<function square at ")
    assert repr(f).endswith(f"location={location!r})")
    assert repr(result) == f"MemorizedResult(func={result.func!r}, key={result.key!r})"
    assert "square" in result.func
    assert repr(Memory(None)) == "Memory(location=None)"


# --- location and backend ---------------------------------------------------------


def test_instanciate_store_backend_with_pathlib_path(tmp_path, monkeypatch):
    """joblib: test_instanciate_store_backend_with_pathlib_path. A
    ``pathlib.Path`` and a relative location work; a relative location is
    where it was when the Memory was made."""
    memory = Memory(pathlib.Path(tmp_path / "by_path"), verbose=0)
    assert memory.location == str(tmp_path / "by_path")
    assert memory.cache(square)(2) == 4
    assert (tmp_path / "by_path").is_dir()

    monkeypatch.chdir(tmp_path)
    relative = Memory(pathlib.Path("relative"), verbose=0)
    assert relative.location == "relative"
    f = relative.cache(square)
    f(3)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert f.check_call_in_cache(3)
    assert not (tmp_path / "elsewhere" / "relative").exists()
    assert Memory(tmp_path / "relative", verbose=0).cache(square).check_call_in_cache(3)


def test_memory_default_store_backend(tmp_path):
    """joblib: test_memory_default_store_backend. An unknown backend is a
    clear error (memento: a ValueError naming the backend it has)."""
    with pytest.raises(ValueError, match=r"backend='unknown'.*'local'"):
        Memory(tmp_path / "cache", backend="unknown")


# --- processes --------------------------------------------------------------------

_CELL = """
def f(x):
    return x
"""

_WORKER = """
import sys
from memento import Memory
namespace = {}
exec(compile(sys.argv[2], sys.argv[3], "exec"), namespace)
f = namespace["f"]
f.__module__ = "notebook"
cached = Memory(sys.argv[1], verbose=0).cache(f)
assert cached(int(sys.argv[4])) == int(sys.argv[4])
"""


def _cell_function(session):
    """f, as a notebook cell defines it: no source file to read."""
    namespace = {}
    cell = textwrap.dedent(_CELL)
    exec(compile(cell, f"<ipython-input-{session}-000000000000>", "exec"), namespace)  # noqa: S102
    f = namespace["f"]
    # joblib sets "__main__"; memento names a __main__ by its script, which
    # a worker does not share with pytest: a fixed module stands for it.
    f.__module__ = "notebook"
    return f


def _workers(location, session, xs):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    cell = textwrap.dedent(_CELL)
    filename = f"<ipython-input-{session}-000000000000>"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(location), cell, filename, str(x)], env=env
        )
        for x in xs
    ]
    assert [p.wait(timeout=120) for p in procs] == [0] * len(xs)


@pytest.mark.parametrize("call_before_reducing", [True, False])
def test_parallel_call_cached_function_defined_in_jupyter(tmp_path, call_before_reducing):
    """joblib: test_parallel_call_cached_function_defined_in_jupyter
    (joblib#1035). Workers first using a cached function defined in a
    notebook cell (no source: fingerprinted by its code) keep the entries
    stored before them, and a second session finds them all."""
    location = tmp_path / "cache"
    cached_f = Memory(location, verbose=0).cache(_cell_function(0))
    assert cached_f(1) == 1 and cached_f.func.__code__.co_filename.startswith("<ipython-input-0")
    cached_f.clear()
    if call_before_reducing:
        cached_f(3)
        _workers(location, 0, [1, 2])
    else:
        _workers(location, 0, [1, 2])
        assert cached_f.check_call_in_cache(1) and cached_f.check_call_in_cache(2)
        cached_f(3)
    assert all(cached_f.check_call_in_cache(x) for x in (1, 2, 3))
    # A second session: the cell run again, a new Memory.
    again = Memory(location, verbose=0).cache(_cell_function(1))
    assert all(again.check_call_in_cache(x) for x in (1, 2, 3))


def test_cached_function_race_condition_when_persisting_output_2(tmp_path):
    """joblib: test_cached_function_race_condition_when_persisting_output_2
    (joblib#490). Workers writing and reading the same new results at once
    all get them whole, without a warning."""
    location = str(tmp_path / "cache")
    flags = [i % 2 == 0 for i in range(6)]
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        results = pool.starmap(call_conditional, [(location, flag) for flag in flags])
    for flag, (summary, messages) in zip(flags, results):
        assert summary == (100_000 if flag else "simple output")
        assert messages == []


def test_call_and_shelve_lazily_load_stored_result(memory):
    """joblib: test_call_and_shelve_lazily_load_stored_result. A handle on a
    stored result does not unpickle it; ``get()`` does."""
    f = memory.cache(make_loud)
    UNPICKLED.clear()
    assert f("a").tag == "a"  # computed: not unpickled
    assert UNPICKLED == []
    result = f.call_and_shelve("a")
    assert isinstance(result, MemorizedResult)
    assert UNPICKLED == []
    assert result.get().tag == "a"
    assert UNPICKLED == ["a"]
    # A handle on a new call computes it, and still does not unpickle it.
    result = f.call_and_shelve("b")
    assert UNPICKLED == ["a"]
    assert result.get().tag == "b"
    assert UNPICKLED == ["a", "b"]


def test_info_log(tmp_path, capsys):
    """joblib: test_info_log. With verbose, a computation is reported (joblib's
    "[Memory] Calling ..." line); a hit says nothing at any verbosity
    (memento does no work on a hit that it does not need); verbose=0 says
    nothing."""
    loud = Memory(tmp_path / "cache", verbose=20)

    @loud.cache
    def f(x):
        return x**2

    assert f(3) == 9
    out = capsys.readouterr().out
    assert "[Memory] Calling" in out and "x=3" in out
    assert f(3) == 9
    assert capsys.readouterr().out == ""

    quiet = Memory(tmp_path / "cache", verbose=0)

    @quiet.cache
    def f(x):  # noqa: F811 - joblib's test redefines it too
        return x**2

    assert f(4) == 16
    assert f(4) == 16
    assert capsys.readouterr().out == ""


def fast_func_with_signature(a: int, b: float) -> float:
    return a + b


def annotated(a: int, b: "float" = 2.0, *rest: int, scale: float = 1.0, **extra: str) -> float:
    return (a + b + sum(rest)) * scale + len(extra)


def test_memory_func_with_signature(memory):
    """joblib: test_memory_func_with_signature (annotations), and memento's
    binding of annotated signatures with defaults, ``*args``, keyword-only
    arguments and ``**kwargs``: equal calls share one result."""
    func_cached = memory.cache(fast_func_with_signature)
    assert func_cached(1, 2.0) == 3.0
    assert func_cached.check_call_in_cache(1, b=2.0)

    f = memory.cache(annotated)
    assert f(1) == 3.0
    assert f.check_call_in_cache(1, 2.0)
    assert f.check_call_in_cache(a=1, b=2.0, scale=1.0)
    assert not f.check_call_in_cache(1, 2.0, 3)
    assert f(1, 2.0, 3, scale=2.0, tag="x") == 13.0
    assert f.check_call_in_cache(1, 2.0, 3, tag="x", scale=2.0)
    assert not f.check_call_in_cache(1, 2.0, 3, scale=2.0, tag="y")
