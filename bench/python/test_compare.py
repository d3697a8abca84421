"""Checks bench/python/compare.py so that it cannot rot: run with the
bench's environment, `${CARGO_TARGET_DIR:-target}/bench-py-venv/bin/python
bench/python/test_compare.py` (bench/compare-python.sh runs it before the
benchmark; about 15 s).

1. A --quick run (tiny sizes, one repetition) of every case: it must exit
   0, print the Markdown table with every row for both libraries, and
   memento must compute the 8 processes' new key once.
2. The fresh-process discipline: a stand-in `joblib` whose import takes
   one second is put first on the path; the first call must not be charged
   that second, and the import must be reported apart.
"""

import json
import os
import pathlib
import subprocess
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import compare  # noqa: E402

SLOW_JOBLIB = """
import time
time.sleep(1.0)  # a slow import


class Memory:
    def __init__(self, folder, verbose=0):
        pass

    def cache(self, f):
        return f
"""


def quick_run(tmp):
    samples = pathlib.Path(tmp, "samples.json")
    out = subprocess.run(
        [sys.executable, str(HERE / "compare.py"), "--quick", "--json", str(samples)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    data = json.loads(samples.read_text())["samples"]
    for row, title in compare.ROWS:
        for lib in compare.LIBS:
            values = data.get(f"{row}/{lib}")
            assert values and all(v > 0 for v in values), f"{row}/{lib}: {values!r}\n{out}"
        # The row is in the printed table, with a ratio.
        line = next(
            (line for line in out.splitlines() if line.startswith("| " + title.format(**compare.QUICK))), None
        )
        assert line is not None and line.count("|") == 8 and "x |" in line, f"no row {row!r} in\n{out}"
    assert data["computations/memento"] == [
        1
    ], f"memento computed the new key {data['computations/memento']} times"
    assert 1 <= data["computations/joblib"][0] <= 8, data["computations/joblib"]
    assert "Targets (issue 13):" in out, out
    return len(compare.ROWS)


def import_apart(tmp):
    stub = pathlib.Path(tmp, "stub", "joblib")
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text(SLOW_JOBLIB)
    env = dict(os.environ, PYTHONPATH=str(stub.parent))
    out = subprocess.run(
        [sys.executable, str(HERE / "child.py"), "fresh", "joblib", str(pathlib.Path(tmp, "store"))],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    found = json.loads(out)
    assert found["first_hit"] < 0.5, f"the first call counted the 1 s import: {found}"
    assert found["import"] >= 1.0, f"the import was not reported apart: {found}"
    return found


def main():
    with tempfile.TemporaryDirectory() as tmp:
        rows = quick_run(tmp)
        print(
            f"ok: --quick printed all {rows} rows for joblib and memento; memento computed the new key once"
        )
    with tempfile.TemporaryDirectory() as tmp:
        found = import_apart(tmp)
        print(
            f"ok: first call {found['first_hit'] * 1e6:.1f} µs, import reported apart ({found['import']:.2f} s)"
        )


if __name__ == "__main__":
    main()
