"""Binning live values against a feature's quantile edges: numpy's binary search vs the grid look-up.

Every numeric value a sidecar ingests is binned against ~100 fine quantile edges. The reference,
in the same run, is ``np.searchsorted(edges, x, side="left")``: on fresh values it mispredicts a
branch at most levels of its search, while on values it has seen before (the usual micro-benchmark
mistake) the branch predictor has learnt them; both are shown. The grid look-ups
(``exporter/binning.py``) are timed on the same fresh values: one feature at a time
(``EdgeLookup``) and the 15 numeric features of the benchmark model in one block
(``BlockLookup``, what ``ModelMonitor.prepare`` uses). Results are checked equal to the reference.

    /tmp/venv/bin/python bench/binning.py
"""

from __future__ import annotations

import argparse
import time

import _common as c
import numpy as np

from exporter.binning import BlockLookup, EdgeLookup
from exporter.profile import NumericProfile


def per_thousand(fn: object, batches: list, n: int) -> float:
    """µs per 1,000 values of ``fn(batch)`` over every batch (each batch used once)."""
    start = time.perf_counter()
    for batch in batches:
        fn(batch)  # type: ignore[operator]
    return (time.perf_counter() - start) / (len(batches) * n) * 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", type=int, default=400, help="fresh 1,000-record batches per measurement")
    args = ap.parse_args()
    c.print_machine()
    n = 1000
    profiles = [p for p in c.make_monitor(c.make_baseline()).profiles
                if isinstance(p, NumericProfile) and p.edge_lookup.uses_grid]
    frames = [c.make_frame(n, seed=1000 + k) for k in range(args.batches)]
    blocks = [np.stack([f[p.name].to_numpy(dtype=np.float64) for p in profiles]) for f in frames]
    lookups = [EdgeLookup(p.edges) for p in profiles]
    block = BlockLookup(lookups, [0] * len(lookups))

    for x in blocks[:20]:  # same integers as the reference
        for row, p, lookup in zip(x, profiles, lookups, strict=True):
            assert np.array_equal(lookup(row), np.searchsorted(p.edges, row, side="left"))
        assert np.array_equal(block(x), np.stack([np.searchsorted(p.edges, r, side="left")
                                                  for p, r in zip(profiles, x, strict=True)]))

    features = len(profiles)
    fresh = per_thousand(lambda x: [np.searchsorted(p.edges, r, side="left")
                                    for p, r in zip(profiles, x, strict=True)], blocks, n * features)
    first, row = profiles[0], blocks[0][0]  # one feature, the same 1,000 values every call
    repeated = per_thousand(lambda x: np.searchsorted(first.edges, x, side="left"), [row] * len(blocks) * features, n)
    edge = per_thousand(lambda x: [lookup(r) for lookup, r in zip(lookups, x, strict=True)], blocks, n * features)
    fused = per_thousand(block, blocks, n * features)

    print(f"\n{features} numeric features × {n:,} values per batch, {len(blocks)} fresh batches\n")
    print("| binning | µs per 1,000 values | ratio to np.searchsorted on fresh values |")
    print("|---|---|---|")
    print(f"| np.searchsorted, fresh values (reference) | {fresh:.1f} | 1 |")
    print(f"| np.searchsorted, one feature's same 1,000 values every call | {repeated:.1f} | "
          f"{fresh / repeated:.1f}× faster |")
    print(f"| EdgeLookup, one feature at a time | {edge:.1f} | {fresh / edge:.1f}× faster |")
    print(f"| BlockLookup, all {features} features at once | {fused:.1f} | {fresh / fused:.1f}× faster |")


if __name__ == "__main__":
    main()
