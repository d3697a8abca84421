#!/usr/bin/env bash
# Side-by-side benchmark: memento, joblib.Memory, python-diskcache's
# memoize and the Rust `cached` crate's disk store (4.1, redb), the same
# cases on this machine in one run, then a table of medians and ratios.
#
#   bash bench/compare.sh            # everything (about two minutes, up to 3 GB of disk)
#
# It installs joblib, numpy and diskcache with pip into bench/.venv and
# builds bench/peers (memento and cached) in release mode. Results stay in
# target/compare/results.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=$ROOT/bench/.venv
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install --quiet --disable-pip-version-check joblib numpy diskcache
PY="$VENV/bin/python"
# The Python side's timing discipline (imports outside the timed regions).
"$PY" "$ROOT/bench/test_peers.py"
cargo build --quiet --release --manifest-path bench/peers/Cargo.toml
RS=$ROOT/bench/peers/target/release/memento-peers

OUT=$ROOT/target/compare
rm -rf "$OUT"
# ext4 stalls writers that reuse blocks freed moments ago until its journal
# commits them (every 5 s), and this machine's disk slows down for a while
# after large writes: let the removal above settle, and remove nothing else
# until the end.
sync
sleep 20
mkdir -p "$OUT"
RESULTS=$OUT/results.txt
: > "$RESULTS"

run() { # peer case [n]: one process, its RESULT lines appended
    local peer=$1 case=$2 n=${3:-1000} dir=$OUT/$1
    # Nobody starts while the kernel still writes back someone else's data.
    sync
    case $peer in
    joblib | diskcache) "$PY" "$ROOT/bench/peers.py" "$peer" "$case" "$dir/store" "$n" ;;
    *) MEMENTO_DIR=$dir/store XDG_CACHE_HOME=$dir/xdg "$RS" "$peer" "$case" "$n" ;;
    esac | tee -a "$RESULTS"
}

echo "versions: $("$PY" -c 'import joblib, numpy, diskcache, sys; print("python", sys.version.split()[0], "joblib", joblib.__version__, "numpy", numpy.__version__, "diskcache", diskcache.__version__)'); cached 4.1.0; $(rustc --version)"
echo "machine: $(nproc) cores, $(uname -r)"
echo

run raw small
for peer in memento cached joblib diskcache; do
    echo "== $peer: small results"
    run "$peer" fill 1000 > /dev/null
    for _ in $(seq 21); do run "$peer" fresh > /dev/null; done
    run "$peer" steady 1000 > /dev/null
done
# Large writes: this machine's disk slows down for a while after a few
# hundred megabytes (its writeback, or the virtual disk's budget), which
# would charge one peer for another's writes. Every large case starts
# after a pause, and the raw write is measured in the same conditions.
settle() { sync; sleep 8; }
for peer in memento joblib diskcache; do
    echo "== $peer: 100 MiB argument"
    settle
    run "$peer" array-arg
done
settle
run raw big
for peer in memento cached joblib diskcache; do
    echo "== $peer: 100 MiB result"
    settle
    run "$peer" array-result
done
for peer in memento cached joblib diskcache; do
    rm -rf "${OUT:?}/$peer"
done
echo
"$PY" "$ROOT/bench/table.py" "$RESULTS" | tee "$OUT/table.txt"
