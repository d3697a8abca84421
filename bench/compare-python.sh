#!/usr/bin/env bash
# Side by side with joblib, in Python: memento's Python package
# (crates/memento-python, `import memento`) and joblib.Memory, the same
# cases in one run on this machine, then a Markdown table of medians,
# spreads and ratios (bench/python/compare.py).
#
#   bash bench/compare-python.sh            # everything (about 2 minutes, up to 1.4 GB of disk)
#   bash bench/compare-python.sh --quick    # smoke run: tiny sizes, one repetition (about 30 s)
#
# Creates once a virtual environment at
# ${CARGO_TARGET_DIR:-target}/bench-py-venv with the pinned packages below
# (from PyPI), builds memento's package from this workspace with maturin
# (release, into the same target folder) and installs it there, checks the
# script itself (bench/python/test_compare.py: a --quick run whose table
# must hold every case for both libraries), then runs the benchmark.
# Arguments go to compare.py (--quick, --cases a,b, --json FILE).
# PYTHON=/path/to/python3.12 runs it on another interpreter (3.9 or later).
set -euo pipefail

REQUIREMENTS=("joblib==1.5.3" "numpy==2.2.6" "maturin==1.16.0")

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
target=${CARGO_TARGET_DIR:-target}
case "$target" in
/*) ;;
*) target="$repo/$target" ;;
esac
venv="$target/bench-py-venv"
python=${PYTHON:-python3}

die() {
    echo "bench/compare-python.sh: $*" >&2
    exit 2
}

command -v "$python" >/dev/null || die "no $python: install Python 3.9 or later (with venv and pip), or name one with PYTHON="
# Written into the environment once its install completed: an environment
# without it (an install killed half-way, other pins, another Python) is
# made again.
READY_MARK="memento-bench-ready: $("$python" -c 'import sys; print(sys.version)' | head -1) ${REQUIREMENTS[*]}"
mkdir -p "$target"
if [ "$(cat "$venv/memento-ready" 2>/dev/null)" != "$READY_MARK" ]; then
    rm -rf "$venv"
    echo "bench/compare-python.sh: creating $venv (${REQUIREMENTS[*]})" >&2
    "$python" -m venv "$venv" || die "$python -m venv failed: install the venv module (Debian/Ubuntu: apt-get install python3-venv)"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${REQUIREMENTS[@]}" ||
        die "pip could not install ${REQUIREMENTS[*]} from PyPI (is it reachable?)"
    echo "$READY_MARK" >"$venv/memento-ready"
fi

# The package from this workspace, release build (maturin's default for
# pip), with the environment's maturin and this target folder.
PATH="$venv/bin:$PATH" CARGO_TARGET_DIR="$target" "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    --no-build-isolation --no-deps --force-reinstall "$repo/crates/memento-python" ||
    die "building or installing crates/memento-python failed (see above)"

PY="$venv/bin/python"
# The script's own check (like bench/test_peers.py for compare.sh).
"$PY" "$repo/bench/python/test_compare.py"
echo "versions: $("$PY" -c 'import sys, joblib, numpy; print("python", sys.version.split()[0], "joblib", joblib.__version__, "numpy", numpy.__version__)'); $(rustc --version)"
echo "machine: $(nproc) cores, $(uname -r), load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
exec "$PY" "$repo/bench/python/compare.py" "$@"
