"""Side by side with joblib, in Python (bench/compare-python.sh runs it):
memento's Python package and joblib.Memory on the same cases in one run,
interleaved (joblib, memento, joblib, ...), each case in fresh cache
folders; prints a Markdown table of medians, spreads and ratios, then the
targets of issue 13.

    python compare.py [--quick] [--cases hit,miss,...] [--json FILE]

Cases (`--cases` names):
  hit     hits on f(float) in one process (100 keys stored, read in turn)
  fresh   the first hit in a fresh process (child.py, timed from inside
          after the interpreter started): the package's import, reported
          apart, and the call from before the Memory is made to the value
  miss    misses of f(float) storing a float
  arg     hits with a 100 MiB float64 array argument
  result  hits returning a 100 MiB array, loaded and with mmap_mode='r'
  store   misses storing a 100 MiB array (the function returns a prebuilt
          array: a miss is charged for storing only)
  many    8 processes call one new key at once (child.py); the computation
          appends a line to a file, so its lines count the computations

--quick: tiny sizes and one repetition, a smoke run of every case (a few
seconds; bench/python/test_compare.py runs it). --json FILE writes every
sample (seconds) and the computation counts.
"""

import argparse
import datetime
import json
import math
import os
import pathlib
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

import joblib
import numpy as np

import memento

HERE = pathlib.Path(__file__).resolve().parent
CHILD = HERE / "child.py"
LIBS = ("joblib", "memento")
CASES = ("hit", "fresh", "miss", "arg", "result", "store", "many")

FULL = dict(
    keys=100,
    hit_rounds=20,
    miss_rounds=6,
    misses=50,
    fresh=21,
    mib=100,
    arg_reps=9,
    result_reps=9,
    store_reps=5,
    many_rounds=3,
    processes=8,
    work=1_000_000,
)
QUICK = dict(
    keys=3,
    hit_rounds=1,
    miss_rounds=1,
    misses=1,
    fresh=1,
    mib=1,
    arg_reps=1,
    result_reps=1,
    store_reps=1,
    many_rounds=1,
    processes=8,
    work=1000,
)


def sine(x):
    return math.sin(x)


def total(a):
    return float(a.sum())


PREBUILT = None


def big(seed):
    # A prebuilt array: a miss is charged for storing it only.
    return PREBUILT


def timed(f, *args):
    start = time.perf_counter()
    value = f(*args)
    return time.perf_counter() - start, value


def progress(text):
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


class Run:
    def __init__(self, root, sizes):
        self.root = root
        self.sizes = sizes
        self.samples = {}  # (row, lib) -> [seconds or counts]
        self.notes = []

    def folder(self, lib):
        """A fresh cache folder (kept to the end: removing large files
        while others are written slows the writers down on ext4)."""
        return tempfile.mkdtemp(prefix=f"{lib}-", dir=self.root)

    def add(self, row, lib, value):
        self.samples.setdefault((row, lib), []).append(value)

    def memory(self, lib, folder, mmap_mode=None):
        if lib == "joblib":
            return joblib.Memory(folder, verbose=0, mmap_mode=mmap_mode)
        with warnings.catch_warnings():
            # No warning is expected (a warning would be noise in the table).
            warnings.simplefilter("ignore")
            return memento.Memory(folder, verbose=0, mmap_mode=mmap_mode)

    def child(self, *args):
        done = subprocess.run([sys.executable, str(CHILD), *args], capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"child.py {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
        return json.loads(done.stdout.strip().splitlines()[-1])

    # --- the cases -------------------------------------------------------

    def hit(self):
        s = self.sizes
        keys = [i * 0.001 for i in range(s["keys"])]
        fs = {lib: self.memory(lib, self.folder(lib)).cache(sine) for lib in LIBS}
        for lib in LIBS:
            for x in keys:
                fs[lib](x)
        for _ in range(s["hit_rounds"]):
            for lib in LIBS:
                f = fs[lib]
                for x in keys:
                    t, v = timed(f, x)
                    assert v == math.sin(x), (lib, v)
                    self.add("hit", lib, t)

    def fresh(self):
        folders = {lib: self.folder(lib) for lib in LIBS}
        for lib in LIBS:
            self.child("fill", lib, folders[lib])
        numpy = {}
        for _ in range(self.sizes["fresh"]):
            for lib in LIBS:
                r = self.child("fresh", lib, folders[lib])
                numpy[lib] = r["numpy"]
                self.add("import", lib, r["import"])
                self.add("fresh", lib, r["first_hit"])
                self.add("fresh+import", lib, r["import"] + r["first_hit"])
        said = {True: "loads numpy", False: "does not load numpy"}
        self.notes.append("at import, " + ", ".join(f"{lib} {said[numpy[lib]]}" for lib in LIBS))

    def miss(self):
        s = self.sizes
        fs = {lib: self.memory(lib, self.folder(lib)).cache(sine) for lib in LIBS}
        for lib in LIBS:
            fs[lib](-1.0)  # the function's first miss writes its record: not timed
        n = 0
        for _ in range(s["miss_rounds"]):
            for lib in LIBS:
                for i in range(s["misses"]):
                    x = 1000.0 + n + i
                    t, v = timed(fs[lib], x)
                    assert v == math.sin(x)
                    self.add("miss", lib, t)
            n += s["misses"]

    def arg(self):
        a = np.sqrt(np.arange(self.sizes["mib"] * 1024 * 1024 // 8, dtype=np.float64))
        expected = total(a)
        fs = {lib: self.memory(lib, self.folder(lib)).cache(total) for lib in LIBS}
        for lib in LIBS:
            assert fs[lib](a) == expected
        for _ in range(self.sizes["arg_reps"]):
            for lib in LIBS:
                t, v = timed(fs[lib], a)
                assert v == expected, (lib, v)
                self.add("arg", lib, t)

    def _prebuilt(self):
        global PREBUILT
        PREBUILT = np.arange(self.sizes["mib"] * 1024 * 1024 // 8, dtype=np.float64)
        return PREBUILT

    def result(self):
        expected = self._prebuilt()
        folders = {lib: self.folder(lib) for lib in LIBS}
        fs = {lib: self.memory(lib, folders[lib]).cache(big) for lib in LIBS}
        for lib in LIBS:
            fs[lib](0)  # the miss
            assert np.array_equal(fs[lib](0), expected)
        for _ in range(self.sizes["result_reps"]):
            for lib in LIBS:
                t, v = timed(fs[lib], 0)
                assert v.shape == expected.shape and v[::4097].tolist() == expected[::4097].tolist()
                self.add("result", lib, t)
                del v
        gs = {lib: self.memory(lib, folders[lib], mmap_mode="r").cache(big) for lib in LIBS}
        for lib in LIBS:
            v = gs[lib](0)
            assert np.array_equal(v, expected)
            self.notes.append(f"{lib} with mmap_mode='r' returns {type(v).__module__}.{type(v).__name__}")
            del v
        for _ in range(self.sizes["result_reps"]):
            for lib in LIBS:
                t, v = timed(gs[lib], 0)
                assert v.shape == expected.shape and v[::4097].tolist() == expected[::4097].tolist()
                self.add("mmap", lib, t)
                del v

    def store(self):
        expected = self._prebuilt()
        fs = {lib: self.memory(lib, self.folder(lib)).cache(big) for lib in LIBS}
        for lib in LIBS:
            fs[lib](-1)  # the function's first miss writes its record: not timed
        for seed in range(self.sizes["store_reps"]):
            for lib in LIBS:
                # Nobody starts while the kernel still writes back the other's data.
                os.sync()
                t, v = timed(fs[lib], seed)
                assert v is expected
                self.add("store", lib, t)
        for lib in LIBS:
            assert np.array_equal(fs[lib](0), expected)

    def many(self):
        s = self.sizes
        for _ in range(s["many_rounds"]):
            for lib in LIBS:
                folder = self.folder(lib)
                counter = os.path.join(folder, "computations.txt")
                args = [sys.executable, str(CHILD), "many", lib, folder, counter, str(s["work"])]
                procs = [
                    subprocess.Popen(
                        args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
                    )
                    for _ in range(s["processes"])
                ]
                # Every process imported and decorated: then all are told to go.
                for p in procs:
                    assert p.stdout.readline().strip() == "ready", f"a {lib} process did not start"
                for p in procs:
                    p.stdin.write("go\n")
                    p.stdin.flush()
                reports, warned = [], []
                for p in procs:
                    out, err = p.communicate()
                    if p.returncode != 0:
                        raise SystemExit(
                            f"a {lib} process of the {s['processes']}-process case failed:\n{err}"
                        )
                    reports.append(json.loads(out.strip().splitlines()[-1]))
                    warned += re.findall(r"\b(\w+Warning)\b:", err)
                if warned:
                    name = ", ".join(sorted(set(warned)))
                    self.notes.append(
                        f"{s['processes']} processes ({lib}): {len(warned)} warning(s) on stderr ({name})"
                    )
                first = min(r["start"] for r in reports)
                last = max(r["end"] for r in reports)
                with open(counter) as f:
                    computed = sum(1 for _ in f)
                self.add("many", lib, last - first)
                self.add("computations", lib, computed)


# --- the table --------------------------------------------------------------

ROWS = [
    ("hit", "hit on `f(float)`, in process ({keys} keys stored, read in turn)"),
    ("fresh+import", "first hit in a fresh process, import included"),
    ("import", "of which the package's import (fresh process)"),
    ("fresh", "of which the first call (Memory, decorate, call)"),
    ("miss", "small miss: `f(float)` storing a float"),
    ("arg", "hit with a {mib} MiB float64 array argument"),
    ("result", "hit returning a {mib} MiB array, loaded"),
    ("mmap", "hit returning a {mib} MiB array, `mmap_mode='r'`"),
    ("store", "miss storing a {mib} MiB array"),
    ("many", "{processes} processes on one new key: first call to last value"),
    ("computations", "{processes} processes on one new key: computations"),
]


def fmt(seconds):
    if seconds is None:
        return "n/a"
    us = seconds * 1e6
    if us < 1000:
        return f"{us:.1f} µs"
    if us < 1_000_000:
        return f"{us / 1000:.2f} ms"
    return f"{us / 1e6:.2f} s"


def spread(values):
    """The middle half (25th to 75th percentile) of 20 samples or more, else
    the whole range."""
    if len(values) >= 20:
        q = statistics.quantiles(values, n=4)
        return q[0], q[2]
    return min(values), max(values)


def table(run):
    s = run.sizes
    med = {k: statistics.median(v) for k, v in run.samples.items()}
    lines = [
        "| case | joblib | (spread) | memento | (spread) | joblib/memento | n |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row, title in ROWS:
        if (row, "memento") not in run.samples or (row, "joblib") not in run.samples:
            continue
        cells = []
        for lib in LIBS:
            values = run.samples[(row, lib)]
            lo, hi = spread(values)
            if row == "computations":
                cells += [f"{med[(row, lib)]:g}", f"{lo:g}–{hi:g}"]
            else:
                cells += [fmt(med[(row, lib)]), f"{fmt(lo)}–{fmt(hi)}"]
        j, m = med[(row, "joblib")], med[(row, "memento")]
        ratio = f"{j / m:.1f}x" if m else "n/a"
        n = len(run.samples[(row, "memento")])
        lines.append(f"| {title.format(**s)} | " + " | ".join(cells) + f" | {ratio} | {n} |")
    return "\n".join(lines), med


def targets(med):
    def get(row, lib):
        return med.get((row, lib))

    out = []
    timed_rows = [r for r, _ in ROWS if r not in ("import", "fresh", "computations")]
    slower = [
        r for r in timed_rows if get(r, "memento") is not None and get(r, "memento") >= get(r, "joblib")
    ]
    present = [r for r in timed_rows if get(r, "memento") is not None]
    if present:
        out.append(
            (not slower, "every case faster than joblib" + (f" (not: {', '.join(slower)})" if slower else ""))
        )
    if get("hit", "memento"):
        r = get("hit", "joblib") / get("hit", "memento")
        out.append((r >= 20, f"a hit at least 20x faster: {r:.1f}x"))
    if get("arg", "memento"):
        r = get("arg", "joblib") / get("arg", "memento")
        out.append((r >= 8, f"the array argument at least 8x faster: {r:.1f}x"))
    if get("computations", "memento") is not None:
        m, j = get("computations", "memento"), get("computations", "joblib")
        out.append((m == 1, f"one computation where joblib does {j:g}: memento {m:g}"))
    return [f"- [{'met' if ok else 'MISSED'}] {text}" for ok, text in out]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repetition (a smoke run)")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    parser.add_argument("--json", help="write every sample here")
    args = parser.parse_args()
    cases = [c for c in args.cases.split(",") if c]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {unknown}: choose among {', '.join(CASES)}")
    sizes = QUICK if args.quick else FULL
    began = time.time()
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="memento-bench-py-") as root:
        run = Run(root, sizes)
        for case in cases:
            progress(f"{case}...")
            getattr(run, case)()
        progress("removing the cache folders")
    text, med = table(run)
    took = time.time() - began
    print(
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, "
        f"load average {load[0]:.2f} at the start and {os.getloadavg()[0]:.2f} at the end, "
        f"{took:.0f} s{' (--quick)' if args.quick else ''}; Python {platform.python_version()}, "
        f"joblib {joblib.__version__}, numpy {np.__version__}"
    )
    print()
    print(text)
    print()
    print(
        "Medians; spread: the middle half (25th to 75th percentile) of 20 samples or more, else min to max."
    )
    for note in run.notes:
        print(f"- {note}")
    print()
    print(
        "Targets (issue 13):"
        + (" (--quick: tiny sizes, one repetition; they say nothing here)" if args.quick else "")
    )
    for line in targets(med):
        print(line)
    if args.json:
        data = {
            "sizes": sizes,
            "samples": {f"{row}/{lib}": v for (row, lib), v in run.samples.items()},
            "notes": run.notes,
        }
        pathlib.Path(args.json).write_text(json.dumps(data, indent=1))


if __name__ == "__main__":
    main()
