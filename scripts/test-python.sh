#!/usr/bin/env bash
# The Python package's tests (crates/memento-python): pytest against the
# package built from this workspace.
#
#   scripts/test-python.sh [PYTEST ARGS...]
#
# Creates once a virtual environment at ${CARGO_TARGET_DIR:-target}/py-venv
# with the pinned test requirements below (from PyPI), builds the package
# with maturin (dev profile, feature s3, into the same target folder) and
# installs it there,
# then runs pytest on crates/memento-python/tests; exits with pytest's
# status. `cargo test -p memento-python` (and so the README's test command)
# runs this script.
#
# Needs Python 3.9 or later with venv and pip ($PYTHON, default python3) and
# the Rust toolchain; PyPI only for the first run. Concurrent runs take
# turns: an exclusive lock (flock) on ${CARGO_TARGET_DIR:-target}/py-venv.lock
# is held from the install to the end of the tests, so that no run installs
# into an environment another one is testing with.
set -euo pipefail

# pandas: keys of DataFrames, Series and Index (tests/test_hashing.py); a
# version with wheels for CPython 3.11 and numpy 2.2.
REQUIREMENTS=("maturin==1.16.0" "pytest==8.4.2" "numpy==2.2.6" "pandas==2.3.3")
# Written into the environment once the install completed: an environment
# without it (an install killed half-way, other pins) is made again.
READY_MARK="memento-python-ready: ${REQUIREMENTS[*]}"

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
target=${CARGO_TARGET_DIR:-target}
case "$target" in
/*) ;;
*) target="$repo/$target" ;;
esac
venv="$target/py-venv"
python=${PYTHON:-python3}

die() {
    echo "scripts/test-python.sh: $*" >&2
    exit 2
}

command -v "$python" >/dev/null ||
    die "no $python: install Python 3.9 or later (with venv and pip), or name one with PYTHON=/path/to/python3"
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 9))' ||
    die "$python is $("$python" --version 2>&1); memento's Python package needs 3.9 or later: name another with PYTHON="
command -v flock >/dev/null || die "no flock (util-linux): install it"

mkdir -p "$target"
exec 9>"$target/py-venv.lock"
flock -x 9

if [ "$(cat "$venv/memento-ready" 2>/dev/null)" != "$READY_MARK" ]; then
    rm -rf "$venv"
    echo "scripts/test-python.sh: creating $venv (${REQUIREMENTS[*]})" >&2
    "$python" -m venv "$venv" ||
        die "$python -m venv failed: install the venv module (Debian/Ubuntu: apt-get install python3-venv)"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${REQUIREMENTS[@]}" ||
        die "pip could not install ${REQUIREMENTS[*]} from PyPI (is it reachable?)"
    echo "$READY_MARK" >"$venv/memento-ready"
fi

# The build uses the environment's maturin (no isolated build environment:
# no download; maturin found on PATH), and this workspace's target folder,
# in the dev profile with the s3 feature: what `cargo test --workspace
# --all-features` (the README's test command, which runs this script) has
# just built for the Rust tests is reused, so the package costs seconds to
# build, S3 support included, where a release build takes minutes of its
# own. Speed is measured by bench/compare-python.sh, which builds in
# release.
PATH="$venv/bin:$PATH" CARGO_TARGET_DIR="$target" MATURIN_PEP517_ARGS="--profile dev --features s3" \
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    --no-build-isolation --no-deps --force-reinstall "$repo/crates/memento-python" ||
    die "building or installing crates/memento-python failed (see above)"

cd "$repo/crates/memento-python"
exec "$venv/bin/python" -m pytest -p no:cacheprovider -q tests "$@"
