"""Prints bench/compare.sh's table from the RESULT lines of one run."""

import collections
import statistics
import sys

PEERS = ["joblib", "diskcache", "cached", "memento"]
CASES = [
    ("hit-small-fresh", "hit f(f64), fresh process (store opened)"),
    ("hit-small-steady", "hit f(f64), steady state (1000 stored keys)"),
    ("miss-small", "miss storing f(f64) -> f64"),
    ("hit-array-arg", "hit, 100 MiB f64 array argument"),
    ("hit-array-result", "hit returning a 100 MiB array"),
    ("hit-array-result-mmap", "hit returning a 100 MiB array, mmap"),
    ("miss-array", "miss storing a 100 MiB array"),
]
RAW = [
    ("blake3-1-thread", "blake3 of 100 MiB, one thread"),
    ("blake3-all-cores", "blake3 of 100 MiB, all cores"),
    ("fs-read-100MiB", "std::fs::read of 100 MiB"),
    ("fs-write-100MiB", "std::fs::write of 100 MiB (new file)"),
    ("create-write-rename-small", "create+write+rename of a 176-byte file"),
    ("sum-of-100MiB-vec", "sum of a 100 MiB Vec<f64> (in memory)"),
    ("mmap-first-touch-sum", "sum over a fresh 100 MiB map (faults + checksum)"),
]


def fmt(us):
    if us is None:
        return "n/a"
    if us >= 1000:
        return f"{us / 1000:.2f} ms"
    return f"{us:.1f} µs"


def main():
    found = collections.defaultdict(list)
    for line in open(sys.argv[1]):
        parts = line.split()
        if len(parts) == 5 and parts[0] == "RESULT":
            found[(parts[1], parts[2])].append(float(parts[3]))
    # Cases run once per process (fresh) hold one sample per run: take the
    # median over the runs.
    med = {k: statistics.median(v) for k, v in found.items()}

    head = ["case"] + PEERS + [f"{p}/memento" for p in PEERS[:-1]]
    rows = []
    for case, title in CASES:
        cells = [med.get((p, case)) for p in PEERS]
        m = cells[-1]
        ratios = [
            (f"{c / m:.1f}x" if c is not None and m else "n/a") for c in cells[:-1]
        ]
        rows.append([title] + [fmt(c) for c in cells] + ratios)
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    line = "  ".join(h.ljust(widths[i]) if i == 0 else h.rjust(widths[i]) for i, h in enumerate(head))
    print(line)
    print("-" * len(line))
    for r in rows:
        print("  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r)))
    print()
    print("raw limits, same run:")
    for case, title in RAW:
        print(f"  {title:<50} {fmt(med.get(('raw', case)) or med.get(('memento', case))):>10}")

    print()
    print("imports, fresh process (not in the table: the timer starts after them):")
    for peer in PEERS[:2]:
        print(f"  {'import ' + peer:<50} {fmt(med.get((peer, 'import'))):>10}")

    def get(peer, case):
        return med.get((peer, case))

    print()
    print("targets (memento):")
    checks = []
    m = get("memento", "hit-small-fresh")
    checks.append(("first hit in a fresh process < 50 µs", m, m is not None and m < 50))
    m, raw = get("memento", "miss-small"), get("raw", "create-write-rename-small")
    if m and raw:
        checks.append((f"miss small within 2x of create+write+rename: {m / raw:.2f}x", m, m <= 2 * raw))
    peers = [get(p, "miss-small") for p in PEERS[:-1]]
    if m:
        ok = all(p is None or m < p for p in peers)
        checks.append(("miss small faster than every peer", m, ok))
    m, raw = get("memento", "hit-array-arg"), get("raw", "blake3-all-cores")
    if m and raw:
        checks.append((f"array argument at {100 * raw / m:.0f}% of all-core blake3 (>= 90%)", m, raw / m >= 0.9))
    j = get("joblib", "hit-array-arg")
    if m and j:
        checks.append((f"array argument {j / m:.1f}x faster than joblib (about 8x)", m, j / m >= 8))
    m, j = get("memento", "hit-array-result"), get("joblib", "hit-array-result")
    if m and j:
        checks.append(("100 MiB result faster than joblib's load", m, m < j))
    m = get("memento", "hit-array-result-mmap")
    checks.append(("100 MiB result with mmap < 0.1 ms", m, m is not None and m < 100))
    m, w, j = get("memento", "miss-array"), get("raw", "fs-write-100MiB"), get("joblib", "miss-array")
    if m and w:
        checks.append((f"miss storing 100 MiB at {100 * w / m:.0f}% of fs::write (>= 70%)", m, w / m >= 0.7))
    if m and j:
        checks.append(("miss storing 100 MiB faster than joblib", m, m < j))
    for text, value, ok in checks:
        print(f"  [{'met ' if ok else 'MISS'}] {text} ({fmt(value)})")


if __name__ == "__main__":
    main()
