"""The Python side of bench/compare.sh: joblib.Memory and diskcache's
memoize, one case per run, printing `RESULT <peer> <case> <median µs> <n>`
lines like the Rust side (bench/peers).

    python peers.py <joblib|diskcache> <case> <folder> [n]

Cases: fill N (N misses of f(float), small results), fresh (one hit, timed
from before the store is opened, the package imported before that and
its import reported apart as `import`), steady N (N stored keys read back once
each), array-arg (hits with a 100 MiB argument), array-result (misses and
hits of a 100 MiB result; joblib also with mmap_mode='r').
"""

import math
import statistics
import sys
import time

import numpy as np

BIG = 100 * 1024 * 1024 // 8


def sine(x):
    return math.sin(x)


def total(a):
    return float(a.sum())


PREBUILT = None


def big(seed):
    # Returns a prebuilt array: a miss is charged only for storing it.
    return PREBUILT


def x(i):
    return i * 0.001


def report(peer, case, samples):
    median = statistics.median(samples) * 1e6
    print(f"RESULT {peer} {case} {median:.3f} {len(samples)}", flush=True)


def timed(f, *args):
    start = time.perf_counter()
    value = f(*args)
    return time.perf_counter() - start, value


def package(peer):
    """Imports `peer`'s package. Kept apart from `store` so that no timed
    region pays for an import: the README counts no import time."""
    if peer == "joblib":
        import joblib

        return joblib
    import diskcache

    return diskcache


def store(peer, folder, mmap=False):
    """The memoizing decorator of `peer` over `folder` (its package imported
    already, or imported here)."""
    lib = package(peer)
    if peer == "joblib":
        memory = lib.Memory(folder, verbose=0, mmap_mode="r" if mmap else None)
        return memory.cache
    cache = lib.Cache(folder)
    return cache.memoize()


def main():
    global PREBUILT
    peer, case, folder = sys.argv[1], sys.argv[2], sys.argv[3]
    n = int(sys.argv[4]) if len(sys.argv) > 4 else 1000
    if case == "fresh":
        # The import, timed apart and shown under the table, not in it.
        report(peer, "import", [timed(package, peer)[0]])
        start = time.perf_counter()
        f = store(peer, folder)(sine)
        value = f(x(0))
        elapsed = time.perf_counter() - start
        assert value == math.sin(x(0))
        report(peer, "hit-small-fresh", [elapsed])
        return
    if case == "fill":
        f = store(peer, folder)(sine)
        report(peer, "miss-small", [timed(f, x(i))[0] for i in range(n)])
        return
    if case == "steady":
        f = store(peer, folder)(sine)
        f(x(n))
        samples = []
        for i in range(n):
            t, v = timed(f, x(i))
            assert v == math.sin(x(i))
            samples.append(t)
        report(peer, "hit-small-steady", samples)
        return
    if case == "array-arg":
        a = np.sqrt(np.arange(BIG, dtype=np.float64))
        f = store(peer, folder)(total)
        expected = f(a)
        reps = 10 if peer == "joblib" else 3
        samples = []
        for _ in range(reps):
            t, v = timed(f, a)
            assert v == expected
            samples.append(t)
        report(peer, "hit-array-arg", samples)
        return
    if case == "array-result":
        PREBUILT = np.arange(BIG, dtype=np.float64)
        f = store(peer, folder)(big)
        report(peer, "miss-array", [timed(f, seed)[0] for seed in range(100, 105)])
        f(0)
        samples = []
        for _ in range(10):
            t, v = timed(f, 0)
            assert v.shape == (BIG,)
            samples.append(t)
        report(peer, "hit-array-result", samples)
        if peer == "joblib":
            g = store(peer, folder, mmap=True)(big)
            g(0)
            samples = []
            for _ in range(10):
                t, v = timed(g, 0)
                assert v.shape == (BIG,)
                samples.append(t)
            report(peer, "hit-array-result-mmap", samples)
        return
    raise SystemExit(f"unknown case {case}")


if __name__ == "__main__":
    main()
