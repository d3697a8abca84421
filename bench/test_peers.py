"""Checks bench/peers.py's timing discipline: run with the bench's venv,
`bench/.venv/bin/python bench/test_peers.py` (compare.sh does).

The README says the Python peers' import times are not counted in the
"fresh process" case. A stand-in `joblib` package whose import takes one
second is put first on the path: the timed case must not see that second,
and the import must be reported apart.
"""

import os
import pathlib
import subprocess
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent

SLOW_JOBLIB = '''
import time
time.sleep(1.0)  # a slow import


class Memory:
    def __init__(self, folder, verbose=0, mmap_mode=None):
        pass

    def cache(self, f):
        return f
'''


def results(stdout):
    found = {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) == 5 and parts[0] == "RESULT":
            found[parts[2]] = float(parts[3])
    return found


def main():
    with tempfile.TemporaryDirectory() as tmp:
        stub = pathlib.Path(tmp, "stub", "joblib")
        stub.mkdir(parents=True)
        (stub / "__init__.py").write_text(SLOW_JOBLIB)
        env = dict(os.environ, PYTHONPATH=str(stub.parent))
        out = subprocess.run(
            [sys.executable, str(HERE / "peers.py"), "joblib", "fresh", str(pathlib.Path(tmp, "store"))],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    found = results(out)
    fresh, imported = found.get("hit-small-fresh"), found.get("import")
    assert fresh is not None, f"no fresh result in {out!r}"
    assert fresh < 500_000, f"the fresh case counted the 1 s import: {fresh:.0f} µs"
    assert imported is not None and imported >= 1_000_000, f"import not reported apart: {out!r}"
    print(f"ok: fresh {fresh:.1f} µs, import reported apart ({imported / 1e6:.2f} s)")


if __name__ == "__main__":
    main()
