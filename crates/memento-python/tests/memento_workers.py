"""Functions run by spawned worker processes in the tests (importable by
name, so that a spawned interpreter finds them)."""

import multiprocessing
import os
import time

from memento import Memory


def released_together(target, args_of, n, timeout):
    """Starts ``n`` spawned processes running ``target(*args_of(i),
    barrier)``, where ``barrier`` holds them until all have started; waits
    for them (at most ``timeout`` seconds each) and returns their exit
    codes."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(n)
    workers = [ctx.Process(target=target, args=(*args_of(i), barrier)) for i in range(n)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout)
    return [w.exitcode for w in workers]


def _slow_square(x, counter_path):
    # One line per computation, whichever process runs it.
    with open(counter_path, "a") as f:
        f.write(f"{os.getpid()}\n")
    time.sleep(0.5)
    return x * x


def square_once(location, counter_path, barrier):
    """Waits for every worker, then calls the cached function."""
    memory = Memory(location, verbose=0)
    f = memory.cache(_slow_square, ignore=["counter_path"])
    barrier.wait()
    return f(7, counter_path)


def _marked_triple(x, marker_path, delay=0.0):
    # One line per computation; then the (long) computation itself.
    with open(marker_path, "a") as f:
        f.write(f"{os.getpid()}\n")
    time.sleep(delay)
    return x * 3


def triple_slowly(location, marker_path):
    """Starts a computation that takes a minute (the test kills it)."""
    memory = Memory(location, verbose=0)
    f = memory.cache(_marked_triple, ignore=["marker_path", "delay"])
    return f(5, marker_path, delay=60.0)


def _big(i):
    import numpy as np

    return np.full(1 << 21, i, dtype=np.int64)  # 16 MiB


def write_big_forever(location, started_path):
    """Stores large results over and over (the test kills it mid-write)."""
    memory = Memory(location, verbose=0)
    f = memory.cache(_big)
    open(started_path, "w").close()
    i = 0
    while True:
        f.call(i % 4)
        i += 1


def _counted_range(n, counter_path):
    with open(counter_path, "a") as f:
        f.write(f"{os.getpid()}\n")
    return list(range(n))


def counted_range_with_warnings(location, counter_path, n):
    """The cached _counted_range(n), and the warnings the call gave."""
    import warnings

    memory = Memory(location, verbose=0)
    f = memory.cache(_counted_range, ignore=["counter_path"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = f(n, counter_path)
    return value, [(w.category.__name__, str(w.message)) for w in caught]


def square_once_on_bucket(location, options, counter_path, barrier):
    """One "machine" on a bucket: its own near cache (in ``options``);
    waits for every worker, then calls the cached function."""
    memory = Memory(location, verbose=0, backend_options=options)
    f = memory.cache(_slow_square, ignore=["counter_path"])
    barrier.wait()
    return f(7, counter_path)


def ramp(n):
    import numpy as np

    return np.arange(n, dtype=np.float64) * 0.5


def on_bucket(location, options, name, *args, mmap_mode=None):
    """Another "machine": a process of its own with its own near cache (in
    ``options``) calls the cached function ``name`` of this module. Returns
    whether the call was stored before it, and a summary of its value."""
    memory = Memory(location, verbose=0, mmap_mode=mmap_mode, backend_options=options)
    f = memory.cache(globals()[name])
    stored = f.check_call_in_cache(*args)
    value = f(*args)
    if hasattr(value, "dtype"):
        return stored, (float(value.sum()), len(value), bool(value.flags.writeable))
    return stored, value
