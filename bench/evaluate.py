"""Evaluation time of one model with 100 features (80 numeric, 20 categorical) and a full window.

The window (60 buckets of 1 min) is filled with traffic in every bucket, some features
shifted, then ``ModelMonitor.evaluate()`` — every drift method on every feature plus the
prediction — is timed N times (median and p95). The reference, in the same run, is what a
raw-sample tool does for the same question: ``scipy.stats.ks_2samp`` per feature on the raw
baseline and window samples (categorical features as integer category codes).

Target: evaluation <= 10 ms (median and p95 over >= 50 evaluations).

    /tmp/venv/bin/python bench/evaluate.py
    /tmp/venv/bin/python bench/evaluate.py --quick
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time

import _common as c
import numpy as np
import pandas as pd
from scipy import stats

from exporter.batch import Batch

TARGET_MS = 10.0
N_NUMERIC, N_CATEGORICAL = 80, 20


def columnar_batch(df: pd.DataFrame, preds: np.ndarray) -> Batch:
    """A parsed batch as the native parser would produce it (values as Python lists)."""
    return Batch(model=c.MODEL, version="v1", size=len(df),
                 features={col: df[col].tolist() for col in df.columns}, predictions=list(preds),
                 latency_seconds=np.full(len(df), 0.02))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller window traffic, 50 evaluations, 1 scipy run")
    ap.add_argument("--evaluations", type=int, help="number of timed evaluations (default 200, quick 50)")
    ap.add_argument("--per-bucket", type=int, help="records per 1-minute bucket (default 2000, quick 500)")
    args = ap.parse_args()
    n_eval = args.evaluations or (50 if args.quick else 200)
    per_bucket = args.per_bucket or (500 if args.quick else 2000)
    baseline_rows = 20_000 if args.quick else 50_000
    scipy_runs = 1 if args.quick else 3

    c.print_machine()
    shift = {"num_00": 0.5, "num_07": 0.3, "cat_02": 0.3}
    train = c.training_frame(baseline_rows, seed=0, n_numeric=N_NUMERIC, n_categorical=N_CATEGORICAL)
    t_build, baseline = c.timed(lambda: c.build_baseline(train, c.MODEL, prediction="prediction"))
    t0 = 1_700_000_000.0  # a fixed clock: the window is filled without sleeping
    # Start-up: the null quantiles of the drift thresholds are simulated when a monitor is built. The
    # reference is the same construction with the grid cache cleared before every feature's null.
    from exporter import calibration
    calibration._ks_null_on_grid.cache_clear()
    t_start, monitor = c.timed(lambda: c.make_monitor(baseline, clock=lambda: t0))
    uncached = time.perf_counter()
    for p in baseline.features.values():
        calibration._ks_null_on_grid.cache_clear()
        calibration.ks_null(p.fine_counts)
    uncached = time.perf_counter() - uncached
    print(f"monitor construction (null quantiles of {len(baseline.features)} features): {t_start:.3f} s; "
          f"reference, one simulation per feature (cache cleared): {uncached:.3f} s ({uncached / t_start:.1f}×)")
    win = monitor.config.window
    n_buckets = win.n_buckets
    print(f"config: {N_NUMERIC} numeric + {N_CATEGORICAL} categorical features + prediction; baseline "
          f"{baseline_rows:,} rows (built in {t_build:.2f} s); window {win.window_seconds:g} s = {n_buckets} "
          f"buckets × {per_bucket:,} records = {n_buckets * per_bucket:,} records; {n_eval} evaluations")

    # Fill every bucket of the window.
    current_parts = []
    for b in range(n_buckets):
        df = c.make_frame(per_bucket, N_NUMERIC, N_CATEGORICAL, seed=1000 + b, shift=shift)
        preds = c.make_predictions(per_bucket, seed=1000 + b)
        monitor.ingest(columnar_batch(df, preds), now=t0 + b * win.bucket_seconds)
        current_parts.append(df)
    now = t0 + (n_buckets - 1) * win.bucket_seconds + 1
    current = pd.concat(current_parts, ignore_index=True)
    ev = monitor.evaluate(now)
    ring = getattr(monitor, "_window", None)  # private: only to show that every bucket holds traffic
    filled = (f"{int(np.count_nonzero(ring._buckets.sum(axis=1)))}/{n_buckets} buckets"
              if ring is not None and hasattr(ring, "_buckets") else "? buckets")
    print(f"window: {ev.samples:,} records in {filled}")
    if ev.samples != n_buckets * per_bucket:
        raise SystemExit(f"the window holds {ev.samples} records, expected {n_buckets * per_bucket}")

    for _ in range(5):  # warm-up
        ev = monitor.evaluate(now)
    times, cpu = [], []
    for _ in range(n_eval):
        t, tc = time.perf_counter(), time.thread_time()
        ev = monitor.evaluate(now)
        times.append(time.perf_counter() - t)
        cpu.append(time.thread_time() - tc)
    med_ms, p95_ms = c.med(times) * 1e3, c.pct(times, 95) * 1e3
    cpu_med_ms, cpu_p95_ms = c.med(cpu) * 1e3, c.pct(cpu, 95) * 1e3
    n_scores = sum(len(f.scores) for f in ev.features)
    print(f"mlmon evaluate(): median {med_ms:.2f} ms, p95 {p95_ms:.2f} ms, min {min(times) * 1e3:.2f} ms, "
          f"max {max(times) * 1e3:.2f} ms over {n_eval} runs ({len(ev.features)} features, {n_scores} scores); "
          f"CPU time of the evaluating thread: median {cpu_med_ms:.2f} ms, p95 {cpu_p95_ms:.2f} ms")
    print(f"drifted features flagged: {', '.join(ev.drifted) or 'none'} (shifted: {', '.join(shift)})")

    # Reference: ks_2samp per feature on the raw samples (baseline rows vs window rows).
    def codes(col: str) -> tuple[np.ndarray, np.ndarray]:
        if col.startswith("num_"):
            return train[col].to_numpy(np.float64), current[col].to_numpy(np.float64)
        cats = pd.Categorical(pd.concat([train[col], current[col]], ignore_index=True))
        all_codes = cats.codes.astype(np.float64)
        return all_codes[:len(train)], all_codes[len(train):]

    samples = {col: codes(col) for col in current.columns}

    def ks_all() -> dict[str, float]:
        return {col: float(stats.ks_2samp(a, b).pvalue) for col, (a, b) in samples.items()}

    ks_times = []
    for _ in range(scipy_runs):
        dt, pvalues = c.timed(ks_all)
        ks_times.append(dt)
    ks_ms = c.med(ks_times) * 1e3
    flagged = sorted(k for k, p in pvalues.items() if p < 0.01)
    print(f"reference scipy.stats.ks_2samp × {len(samples)} features on raw samples "
          f"({len(train):,} vs {len(current):,}): median {ks_ms:.1f} ms over {scipy_runs} run(s); "
          f"p < 0.01 on {len(flagged)} features")

    prof = cProfile.Profile()
    prof.enable()
    for _ in range(20):
        monitor.evaluate(now)
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).strip_dirs().sort_stats("tottime").print_stats(10)
    print("\ncProfile of 20 evaluations (top 10 by own time):")
    print("\n".join(line for line in buf.getvalue().splitlines() if line.strip()))

    ok = med_ms <= TARGET_MS and p95_ms <= TARGET_MS
    print(f"\nload average at end {c.loadavg()}")
    print("\n| measure | value | target | met |")
    print("|---|---|---|---|")
    for label, value in ((f"median of {n_eval}", med_ms), (f"p95 of {n_eval}", p95_ms)):
        print(f"| mlmon evaluate(), {label} | {value:.2f} ms | ≤ {TARGET_MS:g} ms | {c.verdict(value <= TARGET_MS)} |")
    print(f"| thread CPU time per evaluate(), median / p95 (less sensitive to other load) | {cpu_med_ms:.2f} / "
          f"{cpu_p95_ms:.2f} ms | — | — |")
    print(f"| reference: scipy ks_2samp × 100 features on raw samples ({len(train):,} vs {len(current):,}) | "
          f"{ks_ms:.1f} ms | — | — |")
    print(f"| ratio reference / mlmon median | {ks_ms / med_ms:.0f}× | — | — |")
    print(f"| overall | | | {c.verdict(ok)} |")


if __name__ == "__main__":
    main()
