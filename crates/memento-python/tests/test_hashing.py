"""Keys of values: equal values, equal keys; different values, different
keys. Ported from joblib's joblib/test/test_hashing.py (the name of each
joblib test is in its docstring) where the case applies, then memento's
own cases (objects, dataclasses, masked and object arrays, pandas, cycles,
binding a call's arguments, the fingerprint's decorator lines).

joblib tests ported: test_trivial_hash (its 22 inputs, and more),
test_hash_methods, test_hash_numpy_arrays, test_hash_numpy_dict_of_arrays,
test_numpy_datetime_array, test_hash_memmap (memento always coerces: a
memmap keys like the array of its contents), test_bound_methods_hash,
test_bound_cached_methods_hash, test_hash_object_dtype, test_numpy_scalar,
test_dict_hash, test_set_hash, test_set_decimal_hash, test_string,
test_numpy_dtype_pickling, test_hashes_stay_the_same (memento's own pinned
digests: joblib's md5 values are of another encoding),
test_0d_array, test_0d_and_1d_array_hashing_is_different,
test_hashes_stay_the_same_with_numpy_objects, test_hashing_pickling_error.

Reversed by design: test_hash_numpy_noncontiguous and
test_hashes_are_different_between_c_and_fortran_contiguous_arrays (memento
keys the logical array: C, Fortran and strided layouts of the same values
share a key; see test_numpy_arrays).

Left out: test_hash_numpy_performance (a timed test: speed is measured by
bench/compare-python.sh), test_wrong_hash_name (memento has no choice of
hash function).
"""

import collections
import dataclasses
import decimal
import enum
import functools
import gc
import inspect
import io
import pickle
import random
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pandas as pd
import pytest

import memento
from memento import Memory, _fingerprint, _memento, hash


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


# --- joblib's cases, continued ---------------------------------------------------


JOBLIB_INPUTS = [
    1, 2, 1.0, 2.0, 1 + 1j, 2.0 + 1j, "a", "b", (1,), (1, 1), [1], [1, 1],
    {1: 1}, {1: 2}, {2: 1}, None, gc.collect, [1].append,
    {"a", 1}, {"a", 1, ("a", 1)}, {"a": 1, 1: 2}, {"a": 1, 1: 2, "d": {"a": 1}},
]


def test_trivial_hash_joblib_inputs():
    """joblib: test_trivial_hash (its inputs: unorderable set elements and
    dict keys, a builtin function, a bound builtin method): two of them share
    a key exactly when they are the same object."""
    keys = [hash(v) for v in JOBLIB_INPUTS]
    for i, a in enumerate(keys):
        for j, b in enumerate(keys):
            assert (a == b) == (i == j), (JOBLIB_INPUTS[i], JOBLIB_INPUTS[j])


def test_hash_methods():
    """joblib: test_hash_methods: a bound method is keyed by its object's
    state."""
    a = io.StringIO("a")
    assert hash(a.flush) == hash(a.flush)
    a1 = collections.deque(range(10))
    a2 = collections.deque(range(9))
    assert hash(a1.extend) != hash(a2.extend)
    assert hash(collections.deque(range(9)).extend) == hash(a2.extend)
    assert hash([1].append) != hash([2].append)
    assert hash([1].append) != hash([1].extend)


def test_hash_numpy_dict_of_arrays_differ():
    """joblib: test_hash_numpy_dict_of_arrays (the unequal half)."""
    rng = np.random.RandomState(0)
    arr1 = rng.random_sample((10, 10))
    arr2 = arr1.copy()
    arr3 = arr2.copy()
    arr3[0] += 1
    assert hash({1: arr1, 2: arr2}) == hash({1: arr2, 2: arr1})
    assert hash({1: arr1, 2: arr2}) != hash({1: arr2, 2: arr3})


def test_hash_numpy_noncontiguous_same_values():
    """joblib: test_hash_numpy_noncontiguous, reversed: the same values in
    another layout are the same array."""
    a = np.asarray(np.arange(6000).reshape((1000, 2, 3)), order="F")[:, :1, :]
    assert hash(a) == hash(np.ascontiguousarray(a)) == hash(np.asfortranarray(a))
    assert hash(a) != hash(a[:, :, :2])


class Klass:
    def f(self, x):
        return x


class KlassWithCachedMethod:
    def __init__(self, location):
        self.f = Memory(location, verbose=0).cache(self.f)

    def f(self, x):
        return x


def test_bound_methods_hash(memory):
    """joblib: test_bound_methods_hash: the same method of two equal
    instances, the same key (as an argument, and as a cached method whose
    `self` is bound)."""
    a, b = Klass(), Klass()
    assert hash(a) == hash(b)
    assert hash(a.f) == hash(b.f)
    f = memory.cache(Klass.f)
    assert _memento.hash_args(f._bind((a, 1), {})) == _memento.hash_args(f._bind((b, 1), {}))
    b.extra = 1
    assert hash(a.f) != hash(b.f)


def test_bound_cached_methods_hash(tmp_path):
    """joblib: test_bound_cached_methods_hash."""
    a = KlassWithCachedMethod(tmp_path)
    b = KlassWithCachedMethod(tmp_path)
    assert _memento.hash_args(a.f._bind((1,), {})) == _memento.hash_args(b.f._bind((1,), {}))
    assert a.f(1) == 1
    assert b.f.check_call_in_cache(1)


def test_dict_and_set_hash_after_a_round_trip(memory):
    """joblib: test_dict_hash, test_set_hash: a value returned by a cached
    function (pickled, stored, loaded: its order may differ) keys like the
    argument."""
    names = [f"#s{n}__c_maps.nii.gz" for n in (12069, 12158, 12258, 12277, 12300, 12401,
                                                 12430, 13817, 13903, 13916, 13981, 13982)]
    f = memory.cache(lambda x: x)
    d = {k: [33] for k in names}
    s = set(names)
    for value in (d, s):
        a = f(value)
        b = f(a)
        assert hash(a) == hash(b) == hash(value)


def test_string():
    """joblib: test_string: keys do not depend on the strings' past."""
    string = "foo"
    a = {string: "bar"}
    b = {string: "bar"}
    c = pickle.loads(pickle.dumps(b))
    assert hash([a, b]) == hash([a, c])


def test_numpy_dtype_pickling():
    """joblib: test_numpy_dtype_pickling: dtypes key by value, whatever
    their identity."""
    dt1 = np.dtype("f4")
    dt1_again = pickle.loads(pickle.dumps(dt1))
    assert hash(dt1) == hash(np.dtype("f4")) == hash(dt1_again)
    assert hash([dt1, dt1]) == hash([dt1_again, dt1_again]) == hash([dt1, dt1_again])
    complex1 = np.dtype([("name", np.str_, 16), ("grades", np.float64, (2,))])
    complex2 = np.dtype([("name", np.str_, 16), ("grades", np.float64, (2,))])
    complex_again = pickle.loads(pickle.dumps(complex1))
    assert hash(complex1) == hash(complex2) == hash(complex_again)
    assert hash([complex1, complex1]) == hash([complex_again, complex1])
    assert hash(np.dtype("f4")) != hash(np.dtype("f8"))
    assert hash(np.dtype("<f8")) != hash(np.dtype(">f8"))
    assert hash(complex1) != hash(np.dtype([("name", np.str_, 16), ("grades", np.float64, (3,))]))
    assert hash(np.dtype("f4")) != hash(np.float32)


class MyClass:
    def __init__(self, a, b):
        self.a, self.b = a, b
        self.c = "fixed"


def _objects_to_hash():
    rng = np.random.RandomState(42)
    return [
        rng.randint(-1000, high=1000, size=50).astype("<i8"),
        tuple(rng.randn(3).astype("<f4") for _ in range(5)),
        [rng.randn(3).astype("<f4") for _ in range(5)],
        {-3333: rng.randn(3, 5).astype("<f4"), 0: [rng.randint(10, size=20).astype("<i8")]},
        np.arange(100, dtype="<i8").reshape((10, 10)),
        np.asfortranarray(np.arange(100, dtype="<i8").reshape((10, 10))),
        np.arange(100, dtype="<i8").reshape((10, 10))[:, :2],
        [3, "abc", None, MyClass(1, 2)],
        [random.Random(42).random() for _ in range(5)],
    ]


def test_hashes_stay_the_same_with_numpy_objects_built_apart():
    """joblib: test_hashes_stay_the_same_with_numpy_objects (copies built
    apart; across processes: test_same_keys_in_another_process)."""
    assert [hash(o) for o in _objects_to_hash()] == [hash(o) for o in _objects_to_hash()]


def test_hashing_pickling_error():
    """joblib: test_hashing_pickling_error: a value that cannot be keyed is
    a clear error, never a key of part of it."""

    def non_picklable():
        return 42

    with pytest.raises((pickle.PicklingError, AttributeError), match="local"):
        hash(non_picklable)
    with pytest.raises(TypeError, match=r"ignore=\['f'\]"):
        _memento.hash_args([("f", non_picklable)])
    with pytest.raises(TypeError, match="cannot hash the argument 'f'"):
        _memento.hash_args([("f", [1, {"k": MyClass(non_picklable, 2)}])])


# --- objects by value -----------------------------------------------------------------


class Holder:
    def __init__(self, value):
        self.value = value


@dataclasses.dataclass
class Point2:
    x: float
    y: float = 0.0
    tags: list = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class OtherPoint2:
    x: float
    y: float = 0.0
    tags: list = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class Frozen:
    a: object
    b: object = None


class Color(enum.Enum):
    RED = 1
    BLUE = 2


class Slotted:
    __slots__ = ("a", "b")

    def __init__(self, a, b):
        self.a, self.b = a, b


def test_objects_by_class_and_state():
    """An object keys by its class and state (what pickle rebuilds it from),
    not by the bytes of its pickle."""
    assert hash(Holder(1)) == hash(Holder(1))
    assert hash(Holder(1)) != hash(Holder(2))
    assert hash(Holder(1)) != hash(MyClass(1, 2))
    # Its dict's insertion order, a set's order: not part of the value
    # (pickle's bytes differ for both).
    h1, h2 = Holder(1), Holder(1)
    h1.z, h1.w = 1, 2
    h2.w, h2.z = 2, 1
    assert pickle.dumps(h1) != pickle.dumps(h2)
    assert hash(h1) == hash(h2)
    # Shared or copied parts: the same value (pickle memoizes the shared one).
    part = [1, 2]
    assert pickle.dumps(Holder([part, part])) != pickle.dumps(Holder([part, [1, 2]]))
    assert hash(Holder([part, part])) == hash(Holder([part, [1, 2]]))
    # Objects inside arrays, dicts and other objects.
    assert hash(Holder(Holder(np.arange(3)))) == hash(Holder(Holder(np.arange(3))))
    assert hash(Holder(Holder(np.arange(3)))) != hash(Holder(Holder(np.arange(4))))
    assert hash(Slotted(1, [2])) == hash(Slotted(1, [2]))
    assert hash(Slotted(1, [2])) != hash(Slotted(1, [3]))
    assert hash(Color.RED) == hash(Color(1))
    assert hash(Color.RED) != hash(Color.BLUE)
    assert hash(decimal.Decimal("1.50")) != hash(decimal.Decimal("1.5"))
    assert hash(functools.partial(max, 1)) == hash(functools.partial(max, 1))
    assert hash(functools.partial(max, 1)) != hash(functools.partial(max, 2))
    assert hash(Ellipsis) == hash(...)


class Lazy:
    """An object whose __reduce__ leaves out a cache: what pickle keeps is
    its value."""

    def __init__(self, n):
        self.n = n
        self._cache = None

    def __reduce__(self):
        return (Lazy, (self.n,))


class Stateful:
    def __init__(self, n):
        self.n = n

    def __getstate__(self):
        return {"n": self.n, "version": 1}

    def __setstate__(self, state):
        self.n = state["n"]


def test_objects_with_reduce_and_getstate():
    """joblib: objects with __reduce__ (its parts are the key)."""
    a, b = Lazy(3), Lazy(3)
    b._cache = "computed"
    assert hash(a) == hash(b)
    assert hash(a) != hash(Lazy(4))
    assert hash(Stateful(1)) == hash(Stateful(1))
    assert hash(Stateful(1)) != hash(Stateful(2))


def test_classes_by_module_and_name():
    """joblib: classes (and functions) are keyed by their module and
    qualified name; an instance's class is part of its key, even a local
    class (pickle refuses those)."""
    assert hash(Holder) == hash(Holder)
    assert hash(Holder) != hash(MyClass)
    assert hash(int) != hash(float)

    def make():
        class Local:
            def __init__(self, v):
                self.v = v

        return Local

    local = make()
    assert hash(local(1)) == hash(local(1))
    assert hash(local(1)) != hash(local(2))
    assert hash(local(1)) != hash(Holder(1))
    assert hash(max) == hash(max)
    assert hash(max) != hash(min)


def test_subclasses_of_builtins_by_class_and_value():
    class MyList(list):
        pass

    class MyDict(dict):
        pass

    assert hash(MyList([1, 2])) == hash(MyList([1, 2]))
    assert hash(MyList([1, 2])) != hash(MyList([2, 1]))
    assert hash(MyList([1, 2])) != hash([1, 2])
    assert hash(MyDict(a=1, b=2)) == hash(MyDict(b=2, a=1))
    assert hash(MyDict(a=1)) != hash({"a": 1})
    # A defaultdict's and a Counter's order is not part of their value, an
    # OrderedDict's is.
    assert hash(collections.Counter("abc")) == hash(collections.Counter("cba"))
    d1, d2 = collections.defaultdict(list), collections.defaultdict(list)
    d1["a"], d1["b"] = 1, 2
    d2["b"], d2["a"] = 2, 1
    assert hash(d1) == hash(d2)
    assert hash(d1) != hash(collections.defaultdict(set, d1))
    o1 = collections.OrderedDict([("a", 1), ("b", 2)])
    o2 = collections.OrderedDict([("b", 2), ("a", 1)])
    assert o1 != o2
    assert hash(o1) != hash(o2)
    assert hash(o1) == hash(collections.OrderedDict([("a", 1), ("b", 2)]))


def test_dataclasses_by_class_and_fields():
    assert hash(Point2(1.0, 2.0, ["a"])) == hash(Point2(1.0, 2.0, ["a"]))
    assert hash(Point2(1.0, 2.0)) != hash(Point2(2.0, 1.0))
    assert hash(Point2(1.0)) == hash(Point2(1.0, 0.0, []))
    assert hash(Point2(1.0)) != hash(OtherPoint2(1.0))
    assert hash(Point2(1.0, tags=[{1, 2}])) == hash(Point2(1.0, tags=[{2, 1}]))
    assert hash(Frozen(1)) == hash(Frozen(1))
    assert hash(Frozen(1)) != hash(Frozen(1, 2))
    assert hash(Frozen(Point2(1.0))) != hash(Frozen(Point2(1.5)))
    # An attribute that is not a field is part of the value too.
    p, q = Point2(1.0), Point2(1.0)
    p.note = "x"
    assert hash(p) != hash(q)
    q.note = "x"
    assert hash(p) == hash(q)


def test_frozensets():
    assert hash(frozenset({"a", "b", 3})) == hash(frozenset({3, "b", "a"}))
    assert hash(frozenset({1})) != hash({1})
    assert hash({frozenset({1, 2}), frozenset({3})}) == hash({frozenset({3}), frozenset({2, 1})})
    assert hash(frozenset()) != hash(frozenset({None}))


def test_values_that_contain_themselves():
    """A cycle is a back reference (how many levels up): equal structures
    share a key, different ones do not, and nothing recurses forever."""
    a, b = Holder(1), Holder(1)
    a.me, b.me = a, b
    assert hash(a) == hash(b)
    c = Holder(2)
    c.me = c
    assert hash(a) != hash(c)
    d = Holder(1)
    d.me = Holder(1)  # not a cycle
    assert hash(a) != hash(d)
    x, y = [], []
    x.append(x)
    y.append([y])
    assert hash(x) != hash(y)
    m, n = {}, {}
    m["self"], n["self"] = m, n
    assert hash(m) == hash(n)
    s = Holder(None)
    s.items = [s, {"k": s}]
    t = Holder(None)
    t.items = [t, {"k": t}]
    assert hash(s) == hash(t)


def test_objects_that_cannot_be_keyed_say_what_to_do():
    """Whatever pickle refuses, memento refuses, with the argument's name
    and what to do; a `__reduce_ex__` that breaks its contract, too."""

    class Bad:
        def __reduce_ex__(self, protocol):
            return 42

    with pytest.raises(TypeError, match=r"cannot pickle '_thread.lock'.*ignore=\['state'\]"):
        _memento.hash_args([("state", Holder(threading.Lock()))])
    with pytest.raises(TypeError, match="returned int, not a tuple"):
        hash(Bad())
    with pytest.raises(TypeError, match="cannot hash the argument 'gen'"):
        _memento.hash_args([("gen", (i for i in range(3)))])


def test_deep_values_are_keyed():
    """Past 200 levels the rest is pickled whole: still keyed, still
    equal for equal values."""

    def nested(depth, leaf, wrap=lambda v: [v]):
        v = leaf
        for _ in range(depth):
            v = wrap(v)
        return v

    assert hash(nested(500, 1)) == hash(nested(500, 1))
    assert hash(nested(500, 1)) != hash(nested(500, 2))
    assert hash(nested(500, 1)) != hash(nested(499, 1))
    assert hash(nested(300, 1, Holder)) == hash(nested(300, 1, Holder))
    assert hash(nested(300, 1, Holder)) != hash(nested(300, 2, Holder))


def test_objects_key_the_same_in_another_process(tmp_path):
    """An object holding a set of strings: pickle writes the set in an order
    that depends on the string-hash seed, memento's key does not."""
    module = tmp_path / "seeded_mod.py"
    module.write_text(textwrap.dedent("""
        import dataclasses

        class Holder:
            def __init__(self, value):
                self.value = value

        @dataclasses.dataclass
        class Data:
            names: set
    """))
    code = (
        "import pickle, hashlib, numpy as np, seeded_mod as m; from memento import hash;"
        "v = [m.Holder({'alpha', 'beta', 'gamma', 'delta'}), m.Data({'x', 'y', 'z', 'w'}),"
        " np.array([{'p', 'q', 'r'}, 'a'], dtype=object)];"
        "print(hash(v), hashlib.sha256(pickle.dumps(v[0])).hexdigest())"
    )
    outs = [
        subprocess.run(
            [sys.executable, "-c", code],
            env={"PYTHONHASHSEED": seed, "PYTHONPATH": str(tmp_path)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        for seed in ["1", "2", "3", "4"]
    ]
    assert len({key for key, _ in outs}) == 1
    assert len({pickled for _, pickled in outs}) > 1, "pickle's bytes did not depend on the seed"


def _random_value(rng, depth=0):
    kinds = ["int", "float", "str", "bytes", "none", "bool", "decimal", "array", "masked",
             "frame", "series"]
    if depth < 4:
        kinds += ["tuple", "list", "dict", "set", "frozenset", "holder", "dataclass", "ordered",
                  "objects"]
    kind = rng.choice(kinds)
    n = rng.randrange(4)
    if kind == "masked":
        mask = [rng.random() < 0.5 for _ in range(3)]
        return np.ma.array(np.arange(3.0) * rng.randrange(2), mask=mask,
                           fill_value=rng.choice([1.0, 2.0]))
    if kind == "frame":
        columns = rng.sample(["a", "b", "c"], k=rng.randrange(1, 4))
        data = {c: np.arange(2, dtype=rng.choice(["<i8", "<f8"])) + rng.randrange(2)
                for c in columns}
        if rng.random() < 0.4:
            data[columns[0]] = [rng.choice(["x", "y"]), None]
        return pd.DataFrame(data, index=rng.choice([None, ["r", "s"]]))
    if kind == "series":
        return pd.Series([rng.randrange(3), rng.randrange(3)],
                         name=rng.choice([None, "s"]), dtype=rng.choice(["<i8", "Int64"]))
    if kind == "objects":
        a = np.empty(n, dtype=object)
        for i in range(n):
            a[i] = _random_value(rng, depth + 1)
        return a
    if kind == "int":
        return rng.choice([rng.randrange(-5, 5), rng.getrandbits(100) - (1 << 99)])
    if kind == "float":
        return rng.choice([rng.random(), -0.0, float("inf")])
    if kind == "str":
        return "".join(rng.choice("abcé\u4e2d") for _ in range(n))
    if kind == "bytes":
        return bytes(rng.randrange(256) for _ in range(n))
    if kind == "none":
        return None
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "decimal":
        return decimal.Decimal(rng.randrange(100)) / 7
    if kind == "array":
        # (Native byte order: pickle turns a '>f8' array into a '<f8' one,
        # another dtype and so another key.)
        a = np.arange(rng.randrange(1, 13), dtype=rng.choice(["<i8", "<f4", "<c16", "u1"]))
        return a.reshape(-1, 1) if rng.random() < 0.3 else a[:: rng.choice([1, 2])]
    items = [_random_value(rng, depth + 1) for _ in range(n)]
    if kind == "tuple":
        return tuple(items)
    if kind == "list":
        return items
    if kind == "dict":
        return {f"k{i}{rng.random():.3f}": v for i, v in enumerate(items)}
    if kind in ("set", "frozenset"):
        elements = {f"e{rng.randrange(1000)}" for _ in range(n)} | {rng.randrange(9) for _ in range(n)}
        return set(elements) if kind == "set" else frozenset(elements)
    if kind == "holder":
        return Holder(items)
    if kind == "dataclass":
        return Point2(rng.random(), tags=items)
    return collections.OrderedDict((f"o{i}", v) for i, v in enumerate(items))


def _canonical(v):
    """A plain, order-free description of a generated value: two values are
    equal exactly when their descriptions are."""
    if isinstance(v, np.ma.MaskedArray):
        return ("masked", _canonical(v.data), _canonical(np.ma.getmaskarray(v)), v.fill_value)
    if isinstance(v, np.ndarray) and v.dtype == object:
        return ("objects", v.shape, tuple(_canonical(x) for x in v.ravel()))
    if isinstance(v, pd.DataFrame):
        return ("frame", tuple(v.columns), tuple(v.index), tuple(map(str, v.dtypes)),
                tuple(_canonical(v[c].to_numpy()) for c in v.columns))
    if isinstance(v, pd.Series):
        return ("series", v.name, str(v.dtype), tuple(v.index), tuple(map(repr, v)))
    if isinstance(v, np.ndarray):
        return ("array", v.dtype.str, v.shape, np.ascontiguousarray(v).tobytes())
    if isinstance(v, float):
        return ("float", v.hex())
    if isinstance(v, (bool, int, str, bytes, type(None), decimal.Decimal)):
        return (type(v).__name__, str(v) if isinstance(v, decimal.Decimal) else v)
    if isinstance(v, collections.OrderedDict):
        return ("ordered", tuple((k, _canonical(x)) for k, x in v.items()))
    if isinstance(v, dict):
        return ("dict", tuple(sorted((k, repr(_canonical(x))) for k, x in v.items())))
    if isinstance(v, (set, frozenset)):
        return (type(v).__name__, tuple(sorted(repr(_canonical(x)) for x in v)))
    if isinstance(v, (tuple, list)):
        return (type(v).__name__, tuple(_canonical(x) for x in v))
    if isinstance(v, Holder):
        return ("Holder", _canonical(v.value))
    if isinstance(v, Point2):
        return ("Point2", _canonical(v.x), _canonical(v.y), _canonical(v.tags))
    raise TypeError(type(v))


def test_random_values_equal_exactly_when_their_keys_are():
    """Over generated nested values: built twice from one seed, deep-copied,
    through pickle (which rebuilds dicts and sets, and shares nothing): one
    key; and two values share a key exactly when they are equal."""
    import copy

    seen = {}
    for seed in range(300):
        value = _random_value(random.Random(seed))
        key = hash(value)
        assert hash(_random_value(random.Random(seed))) == key, seed
        assert hash(copy.deepcopy(value)) == key, seed
        assert hash(pickle.loads(pickle.dumps(value))) == key, seed
        seen.setdefault(key, set()).add(repr(_canonical(value)))
    assert all(len(described) == 1 for described in seen.values()), "unequal values, one key"
    described = [d for ds in seen.values() for d in ds]
    assert len(described) == len(set(described)), "equal values, two keys"
    assert len(seen) > 150, "the generated values were mostly the same"


# --- NumPy: object arrays, masked arrays, subclasses, numpy blocked ----------------------


def test_object_arrays_element_by_element():
    """Object arrays key by their elements' values, like the same values in
    a list (a dict's insertion order does not count; pickle's bytes would)."""
    a = np.empty(2, dtype=object)
    b = np.empty(2, dtype=object)
    a[0], a[1] = {"x": 1, "y": 2}, "s"
    b[0], b[1] = {"y": 2, "x": 1}, "s"
    assert hash(a) == hash(b)
    b[1] = "t"
    assert hash(a) != hash(b)
    grid = np.array([[1, "a"], [None, 2.5]], dtype=object)
    assert hash(grid) == hash(np.asfortranarray(grid)) == hash(grid.copy())
    assert hash(grid) != hash(grid.T)
    assert hash(grid) != hash(grid.reshape(4))
    assert hash(np.array([1, 2], dtype=object)) != hash(np.array([1, 2]))
    assert hash(np.array([1, 2], dtype=object)) != hash(np.array([1.0, 2.0], dtype=object))
    # An object array that holds itself.
    c = np.empty(1, dtype=object)
    c[0] = c
    d = np.empty(1, dtype=object)
    d[0] = d
    assert hash(c) == hash(d)


def test_masked_arrays_by_data_mask_and_fill_value():
    """Two masked arrays with the same data and different masks are
    different values (keying the data alone gave them one key)."""
    data = np.arange(5.0)
    a = np.ma.array(data, mask=[0, 1, 0, 0, 0])
    b = np.ma.array(data, mask=[0, 0, 1, 0, 0])
    assert hash(a) != hash(b)
    assert hash(a) == hash(np.ma.array(data.copy(), mask=[0, 1, 0, 0, 0]))
    # No mask and an all-false mask are the same value.
    assert hash(np.ma.array(data)) == hash(np.ma.array(data, mask=np.zeros(5, bool)))
    assert hash(np.ma.array(data)) != hash(data)
    assert hash(np.ma.array(data, fill_value=1.0)) != hash(np.ma.array(data, fill_value=2.0))
    f = np.ma.array(np.arange(6.0).reshape(2, 3), mask=[[0, 1, 0], [1, 0, 0]])
    assert hash(f) == hash(np.ma.array(np.asfortranarray(f.data), mask=f.mask))


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
def test_array_subclass_attributes_are_part_of_the_key():
    class Tagged(np.ndarray):
        pass

    a = np.arange(3.0).view(Tagged)
    b = np.arange(3.0).view(Tagged)
    assert hash(a) == hash(b)
    a.unit, b.unit = "m", "s"
    assert hash(a) != hash(b)
    b.unit = "m"
    assert hash(a) == hash(b)
    a.me, b.me = a, b
    assert hash(a) == hash(b)
    # A matrix (whose instances carry an attribute) by class, dtype, shape,
    # contents; of objects, element by element.
    assert hash(np.matrix([[1, 2]])) == hash(np.matrix([[1, 2]]))
    assert hash(np.matrix([[1, 2]])) != hash(np.array([[1, 2]]))
    objects = np.matrix([["a", None], [{1}, 2.5]], dtype=object)
    assert hash(objects) == hash(np.matrix([["a", None], [{1}, 2.5]], dtype=object))
    assert hash(objects) != hash(np.matrix([["a", None], [{1}, 2.0]], dtype=object))


def test_numpy_blocked_or_absent_is_no_numpy():
    """`sys.modules["numpy"] = None` (an import blocked on purpose) is no
    numpy: no crash, and the keys of a process without numpy."""
    values = "[1, 'a', 2.5, {1, 2}, {'k': (None, True)}, frozenset({3}), max, Ellipsis]"
    outs = set()
    for prelude in ["", "import sys; sys.modules['numpy'] = None; sys.modules['pandas'] = None;",
                    "import numpy;"]:
        out = subprocess.run(
            [sys.executable, "-c",
             f"{prelude}from memento import hash; import decimal;"
             f"print(hash({values}), hash(decimal.Decimal(2)))"],
            capture_output=True, text=True, check=True,
        ).stdout
        outs.add(out)
    assert len(outs) == 1, outs


def test_hashing_imports_neither_numpy_nor_pandas():
    out = subprocess.run(
        [sys.executable, "-c",
         "import sys; from memento import hash; import decimal;"
         "hash([1, decimal.Decimal(2), {'a': [1.5]}, max]);"
         "print('numpy' in sys.modules, 'pandas' in sys.modules)"],
        capture_output=True, text=True, check=True,
    ).stdout.split()
    assert out == ["False", "False"]


# --- pandas ------------------------------------------------------------------------------


def _frame():
    return pd.DataFrame(
        {
            "a": [1, 2, 3],
            "b": [1.5, np.nan, 3.5],
            "c": ["x", "y", "z"],
            "d": pd.Categorical(["u", "v", "u"]),
            "e": pd.array([1, None, 3], dtype="Int64"),
            "f": pd.date_range("2024-01-01", periods=3, tz="UTC"),
        },
        index=pd.Index([10, 20, 30], name="id"),
    )


def test_pandas_frames_by_value():
    """pandas: a DataFrame keys by its columns, index, dtypes and values."""
    df = _frame()
    assert hash(df) == hash(_frame()) == hash(df.copy())
    assert hash(df) == hash(pickle.loads(pickle.dumps(df)))
    changed = _frame()
    changed.loc[20, "a"] = 5
    assert hash(df) != hash(changed)
    assert hash(df) != hash(df.rename(columns={"a": "A"}))
    assert hash(df) != hash(df[["b", "a", "c", "d", "e", "f"]])
    assert hash(df) != hash(df.set_axis([10, 20, 31]))
    assert hash(df) != hash(df.rename_axis("ID"))
    floats = df.astype({"a": "float64"})
    assert hash(df) != hash(floats)
    other_categories = _frame()
    other_categories["d"] = pd.Categorical(["u", "v", "u"], categories=["v", "u"])
    assert hash(df) != hash(other_categories)
    other_tz = _frame()
    other_tz["f"] = pd.date_range("2024-01-01", periods=3, tz="Europe/Paris")
    assert hash(df) != hash(other_tz)
    # Computed properties cached inside pandas objects are not values.
    probe = _frame()
    _ = probe.index.is_unique, probe["d"].cat.codes, probe.values
    assert hash(probe) == hash(df)
    # The same values in one float block or in columns of their own.
    grid = np.arange(12.0).reshape(4, 3)
    assert hash(pd.DataFrame(grid)) == hash(pd.DataFrame(np.asfortranarray(grid)))
    columns = pd.Index([0, 1, 2])
    assert hash(pd.DataFrame(grid, columns=columns)) == hash(
        pd.DataFrame({i: grid[:, i] for i in range(3)})
    )
    # attrs are part of the value.
    tagged = _frame()
    tagged.attrs["source"] = "lab"
    assert hash(df) != hash(tagged)


def test_pandas_series_and_index():
    s = pd.Series([1.0, 2.0], index=["a", "b"], name="s")
    assert hash(s) == hash(pd.Series([1.0, 2.0], index=["a", "b"], name="s"))
    assert hash(s) != hash(s.rename("t"))
    assert hash(s) != hash(pd.Series([1.0, 2.0], index=["a", "c"], name="s"))
    assert hash(s) != hash(pd.Series([1.0, 2.5], index=["a", "b"], name="s"))
    assert hash(s) != hash(s.astype("float32"))
    assert hash(s) != hash(s.to_frame())
    assert hash(pd.RangeIndex(5)) == hash(pd.RangeIndex(0, 5))
    assert hash(pd.RangeIndex(5)) != hash(pd.RangeIndex(6))
    assert hash(pd.RangeIndex(5)) != hash(pd.Index([0, 1, 2, 3, 4]))
    m1 = pd.MultiIndex.from_tuples([(1, "a"), (2, "b")], names=["n", "l"])
    m2 = pd.MultiIndex.from_tuples([(1, "a"), (2, "c")], names=["n", "l"])
    assert hash(m1) == hash(pd.MultiIndex.from_tuples([(1, "a"), (2, "b")], names=["n", "l"]))
    assert hash(m1) != hash(m2)
    assert hash(m1) != hash(m1.set_names(["n", "L"]))
    assert hash(pd.Series([1, None], dtype="Int64")) != hash(pd.Series([1, 0], dtype="Int64"))
    assert hash(pd.Series(["a", None])) != hash(pd.Series(["a", "None"]))


def test_pandas_objects_key_the_same_in_another_process():
    code = (
        "import pandas as pd, numpy as np; from memento import hash;"
        "df = pd.DataFrame({'c': pd.Categorical(['u', 'v']), 's': [{'a', 'b', 'c'}, 'x'],"
        " 'n': [1.5, 2.5]}, index=pd.MultiIndex.from_tuples([(1, 'a'), (2, 'b')]));"
        "print(hash(df))"
    )
    outs = {
        subprocess.run(
            [sys.executable, "-c", code], env={"PYTHONHASHSEED": seed},
            capture_output=True, text=True, check=True,
        ).stdout.strip()
        for seed in ["1", "2", "3"]
    }
    assert len(outs) == 1


# --- a call's arguments, bound ------------------------------------------------------------


def _slow_bind(f, args, kwargs):
    bound = f._signature.bind(*args, **kwargs)
    bound.apply_defaults()
    return [(n, v) for n, v in bound.arguments.items() if n not in f._ignored]


def test_fast_binding_is_inspects_binding(memory):
    """The hit path binds plain signatures without inspect; the pairs are
    those of inspect.Signature.bind, and its errors are inspect's."""

    def f(x, y=2, z=(3,)):
        return x

    def g(a, b, /, c=1):
        return a

    def h(a, *rest, k=1, **kw):
        return a

    cached = {fn.__name__: memory.cache(fn) for fn in (f, g, h)}
    ignoring = memory.cache(f, ignore=["y"])
    assert cached["f"]._fast is not None and cached["g"]._fast is not None
    assert cached["h"]._fast is None
    calls = {
        "f": [((1,), {}), ((1, 2), {}), ((1, 2, 3), {}), ((1,), {"y": 5}), ((), {"x": 1}),
              ((), {"z": 0, "x": 1}), ((1,), {"z": 0}), ((1, 2), {"z": 0})],
        "g": [((1, 2), {}), ((1, 2, 3), {}), ((1, 2), {"c": 4})],
        "h": [((1,), {}), ((1, 2, 3), {"k": 2, "q": 3})],
    }
    for name, cases in calls.items():
        fn = cached[name]
        for args, kwargs in cases:
            assert fn._bind(args, kwargs) == _slow_bind(fn, args, kwargs), (name, args, kwargs)
    for args, kwargs in calls["f"]:
        assert ignoring._bind(args, kwargs) == _slow_bind(ignoring, args, kwargs)
        assert "y" not in dict(ignoring._bind(args, kwargs))
    # f(1, y=2) and f(1, 2) and f(1): one key.
    key = _memento.hash_args(cached["f"]._bind((1, 2), {}))
    assert _memento.hash_args(cached["f"]._bind((1,), {"y": 2})) == key
    assert _memento.hash_args(cached["f"]._bind((1,), {})) == key
    bad = [
        ("f", (), {}), ("f", (1, 2, 3, 4), {}), ("f", (1,), {"x": 1}), ("f", (1,), {"w": 1}),
        ("g", (1,), {"b": 2}), ("g", (1,), {}), ("f", (), {"y": 1}),
    ]
    for name, args, kwargs in bad:
        with pytest.raises(TypeError):
            cached[name]._bind(args, kwargs)
        with pytest.raises(TypeError):
            inspect.signature(cached[name].func).bind(*args, **kwargs)


# --- the fingerprint: decorator lines ---------------------------------------------------


def _load(tmp_path, name, source):
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    namespace = {"__name__": name}
    exec(compile(path.read_text(), str(path), "exec"), namespace)
    return namespace


def test_fingerprint_leaves_out_the_decorator_lines(tmp_path):
    """`@memory.cache` above the def and `f = memory.cache(f)` below it are
    the same function (joblib fingerprints the decorator line too, and
    computes again: the tutorial's In[73]-[75])."""
    decorated = _load(tmp_path, "deco_a", """
        import functools
        from memento import Memory
        memory = Memory(None)

        def register(f):
            return f

        @memory.cache(
            ignore=[],  # a comment
        )
        @register
        def f(x):
            return x + 1
    """)
    plain = _load(tmp_path, "deco_b", """
        def f(x):
            return x + 1
    """)
    changed = _load(tmp_path, "deco_c", """
        def f(x):
            return x + 2
    """)
    fp = _fingerprint(decorated["f"].func)
    assert fp == _fingerprint(plain["f"])
    assert fp != _fingerprint(changed["f"])


def test_fingerprint_keeps_the_lines_of_a_wrapping_decorator(tmp_path):
    """A decorator that wraps (functools.wraps) changes what runs: its line
    stays in the fingerprint."""
    source = """
        import functools

        def twice(f):
            @functools.wraps(f)
            def wrapper(x):
                return 2 * f(x)
            return wrapper

        def thrice(f):
            @functools.wraps(f)
            def wrapper(x):
                return 3 * f(x)
            return wrapper

        @{}
        def f(x):
            return x + 1
    """
    a = _load(tmp_path, "wrap_a", source.format("twice"))
    b = _load(tmp_path, "wrap_b", source.format("thrice"))
    assert _fingerprint(a["f"]) != _fingerprint(b["f"])


# --- the fingerprint without tokenize (Python 3.11) -------------------------------------

fast_path = pytest.mark.skipif(
    memento._TokenizerIter is None, reason="the C tokenizer's way is for Python 3.11 only"
)


def _both(func):
    """The fingerprint the fast way and tokenize's (``None`` when the fast
    way fell back)."""
    decorators = hasattr(func, "__wrapped__")
    slow = memento._slow_fingerprint(func, decorators)
    try:
        memento._fast_material(func, decorators)
    except memento._NoFastPath:
        return None, slow
    return _fingerprint(func), slow


@fast_path
def test_fast_fingerprint_matches_tokenize_over_the_standard_library():
    """Every function and method of these modules gets the same material
    from the C tokenizer as from inspect.getsource and tokenize: results
    stored before keep their fingerprint."""
    import importlib
    import types

    names = ["json", "inspect", "textwrap", "tokenize", "ast", "argparse", "dataclasses",
             "typing", "pathlib", "functools", "email.message", "logging", "tarfile",
             "difflib", "decimal", "_pydecimal", "asyncio.tasks", "memento"]
    compared = fell_back = 0
    for name in names:
        module = importlib.import_module(name)
        functions = []
        for value in vars(module).values():
            if isinstance(value, types.FunctionType):
                functions.append(value)
            elif isinstance(value, type):
                for member in vars(value).values():
                    member = getattr(member, "__func__", member)
                    if isinstance(member, types.FunctionType):
                        functions.append(member)
        for func in functions:
            fast, slow = _both(func)
            if fast is None:
                fell_back += 1
                continue
            compared += 1
            assert fast == slow, f"{name}.{func.__qualname__}"
    assert compared > 1000
    assert fell_back < compared // 50, (fell_back, compared)


@fast_path
def test_fast_fingerprint_of_awkward_sources(tmp_path):
    """Decorators with and without arguments, one-liners followed by other
    code, lambdas, methods, nested blocks, comments after the body,
    multi-line strings (dedented), continuation lines, tabs, async, and a
    file without a final newline: the C tokenizer's material is tokenize's,
    and it is the one used."""
    source = '''
        import functools

        def deco(f):
            return f

        def wrap(f):
            @functools.wraps(f)
            def w(*a):
                return f(*a)
            return w

        @deco
        @functools.lru_cache(
            maxsize=None,  # comment
        )
        def a(x): return x  # one-liner
        # a comment at column 0
        b = lambda x: (x +
                       1)

        class K:
            @staticmethod
            def m(x):
                """Doc
                   on two lines."""
                s = """
        text at column 0
            indented"""
                if x:
                    return s
                else:
                    pass
                # trailing comment, indented like the body

            # less indented comment
            async def n(self, y):
                total = 1 + \\
                    y
                return total

        @wrap
        def c(x):
        \tif x:
        \t\treturn f"{x!r:>10}" 'tail', b'bytes'
        \treturn None

        def d(x):
            def inner(y):
                return y
            return inner(x)'''
    ns = _load(tmp_path, "awkward", source.rstrip("\n"))
    funcs = [ns["a"], ns["b"], ns["K"].m, ns["K"].n, ns["c"], ns["c"].__wrapped__, ns["d"]]
    for func in funcs:
        fast, slow = _both(func)
        assert fast is not None, func
        assert fast == slow, func
        assert fast.startswith(b"memento python source tokens v1")
