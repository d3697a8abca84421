"""The fresh-process side of bench/python/compare.py: one call per process,
timed from inside, after the interpreter has started. It imports nothing
of its own but `sys`, `time` and `math` before the timer starts, so that
the package's import is charged with everything it loads (numpy included,
if it imports it).

    python child.py fill  <joblib|memento> <folder>
    python child.py fresh <joblib|memento> <folder>
    python child.py many  <joblib|memento> <folder> <counter file> <work>

Prints one JSON line: `fresh` times the package's import (`import`) and
then, from before the Memory is made to the value, the first call
(`first_hit`), and whether the import loaded numpy (`numpy`); `many`
imports and decorates, prints `ready`, waits for a line on its standard
input (the parent sends it to all the processes once every one is ready),
calls `work` (which appends a line to <counter file> each time it is
computed) and reports when its call started and ended (`start`, `end`,
Unix seconds).
"""

import math
import sys
import time


def sine(x):
    return math.sin(x)


def work(n, counter):
    # Counts its computations: one line per run, appended (O_APPEND: the
    # processes' lines never mix).
    with open(counter, "a") as f:
        f.write("computed\n")
    total = 0
    for i in range(n):
        total += i * i
    return total


def package(lib):
    if lib == "joblib":
        import joblib

        return joblib
    if lib == "memento":
        import memento

        return memento
    raise SystemExit(f"unknown library {lib!r}: joblib or memento")


def main():
    mode, lib, folder = sys.argv[1], sys.argv[2], sys.argv[3]
    if mode == "fresh":
        start = time.perf_counter()
        pkg = package(lib)
        imported = time.perf_counter()
        f = pkg.Memory(folder, verbose=0).cache(sine)
        value = f(0.5)
        done = time.perf_counter()
        assert value == math.sin(0.5), value
        numpy = "numpy" in sys.modules  # did the package's import load numpy?
        print(
            '{"import": %r, "first_hit": %r, "numpy": %s}'
            % (imported - start, done - imported, str(numpy).lower())
        )
        return
    if mode == "fill":
        pkg = package(lib)
        assert pkg.Memory(folder, verbose=0).cache(sine)(0.5) == math.sin(0.5)
        print("{}")
        return
    if mode == "many":
        counter, n = sys.argv[4], int(sys.argv[5])
        pkg = package(lib)
        f = pkg.Memory(folder, verbose=0).cache(work, ignore=["counter"])
        print("ready", flush=True)
        sys.stdin.readline()  # go
        start = time.time()
        value = f(n, counter)
        end = time.time()
        assert value == sum(i * i for i in range(n)), value
        print('{"start": %r, "end": %r}' % (start, end))
        return
    raise SystemExit(f"unknown mode {mode!r}: fill, fresh or many")


if __name__ == "__main__":
    main()
