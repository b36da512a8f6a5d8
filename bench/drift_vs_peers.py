"""End-to-end drift detection, mlmon against raw-sample peers, in the same run.

Reference data: 100,000 records × 20 features (15 numeric, 5 categorical); current data:
another 100,000 from the same generator with a shift on 3 features (2 numeric, 1
categorical). Each tool turns the two data sets into per-feature drift results:

- mlmon: ``build_baseline`` on the reference DataFrame + ``ModelMonitor.ingest`` of the
  current data (10 batches of 10,000, columns as numpy arrays) + ``evaluate()``;
- scipy: ``scipy.stats.ks_2samp`` per feature on the raw samples (categorical features as
  integer category codes), drift when p < 0.05;
- Evidently: ``Report([DataDriftPreset()])`` with its defaults, run in its own venv
  (``bench/.venv-evidently``, created on demand) as a subprocess that times only its own
  drift computation. If the venv cannot be made, that is reported and the rest still runs.

Each timing is the median of ``--runs`` runs; ratios are peer_time / mlmon_time.

    /tmp/venv/bin/python bench/drift_vs_peers.py
    /tmp/venv/bin/python bench/drift_vs_peers.py --quick           # 20,000 rows, 1 run
    /tmp/venv/bin/python bench/drift_vs_peers.py --no-evidently
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common as c
import numpy as np
import pandas as pd
from scipy import stats

from exporter.baseline import build_baseline
from exporter.batch import Batch
from exporter.monitor import ModelMonitor

HERE = Path(__file__).resolve().parent
EVIDENTLY_PIN = "evidently==0.7.23"  # Report + evidently.presets.DataDriftPreset (the 0.7 API)
PANDAS_PIN = "pandas<3"
SHIFT = {"num_02": 0.25, "num_05": 0.25, "cat_01": 0.6}
"""Numeric: shift in the feature's own standard deviations; categorical: share of mass moved."""
ALPHA = 0.05
T = 1_700_000_000.0


STAGES: dict[str, list[float]] = {"build_baseline": [], "ingest": [], "evaluate": []}


def run_mlmon(ref: pd.DataFrame, cur: pd.DataFrame, batch: int = 10_000) -> list[str]:
    t0 = time.perf_counter()
    baseline = build_baseline(ref, c.MODEL)
    t1 = time.perf_counter()
    monitor = ModelMonitor(c.model_config(), baseline, clock=lambda: T)
    for start in range(0, len(cur), batch):
        chunk = cur.iloc[start:start + batch]
        monitor.ingest(Batch(model=c.MODEL, version="v1", size=len(chunk),
                             features={col: chunk[col].to_numpy() for col in chunk.columns}), now=T)
    t2 = time.perf_counter()
    drifted = sorted(monitor.evaluate(T).drifted)
    t3 = time.perf_counter()
    for name, dt in zip(STAGES, (t1 - t0, t2 - t1, t3 - t2), strict=True):
        STAGES[name].append(dt)
    return drifted


def run_scipy(ref: pd.DataFrame, cur: pd.DataFrame) -> list[str]:
    flagged = []
    for col in ref.columns:
        a, b = ref[col], cur[col]
        if not pd.api.types.is_numeric_dtype(a):
            codes = pd.Categorical(pd.concat([a, b], ignore_index=True)).codes
            a, b = codes[:len(a)], codes[len(a):]
        if stats.ks_2samp(np.asarray(a), np.asarray(b)).pvalue < ALPHA:
            flagged.append(col)
    return sorted(flagged)


def evidently_python(venv: Path, install: bool) -> tuple[Path | None, str]:
    """The venv's interpreter with Evidently importable, creating the venv if asked; else why not."""
    py = venv / "bin" / "python"
    check = [str(py), "-c", "import evidently, sys; sys.stdout.write(evidently.__version__)"]
    if py.exists():
        done = subprocess.run(check, capture_output=True, text=True)
        if done.returncode == 0:
            return py, f"evidently {done.stdout} in {venv}"
    if not install:
        return None, f"no Evidently in {venv} and --no-install given"
    print(f"creating {venv} with {EVIDENTLY_PIN} '{PANDAS_PIN}' (one-off, a minute or two)…", flush=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=300)
        pip = subprocess.run([str(py), "-m", "pip", "install", "-q", EVIDENTLY_PIN, PANDAS_PIN],
                             capture_output=True, text=True, timeout=1200)
    except (subprocess.SubprocessError, OSError) as exc:
        return None, f"could not create the Evidently venv: {exc}"
    if pip.returncode != 0:
        tail = "\n".join((pip.stderr or pip.stdout).strip().splitlines()[-5:])
        return None, f"pip install {EVIDENTLY_PIN} failed:\n{tail}"
    done = subprocess.run(check, capture_output=True, text=True)
    if done.returncode != 0:
        return None, f"Evidently installed but does not import: {done.stderr.strip()[-500:]}"
    return py, f"evidently {done.stdout} in {venv} (just installed)"


def run_evidently(py: Path, ref: pd.DataFrame, cur: pd.DataFrame, runs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="mlmon-bench-") as tmp:
        path = Path(tmp) / "data.npz"
        arrays = {}
        for name, df in (("ref", ref), ("cur", cur)):
            for col in df.columns:
                values = df[col].to_numpy()
                arrays[f"{name}__{col}"] = values.astype(np.float64 if col.startswith("num_") else str)
        np.savez(path, **arrays)
        done = subprocess.run([str(py), str(HERE / "_evidently_drift.py"), str(path), str(runs)],
                              capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip()[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def describe(flagged: list[str]) -> str:
    expected = set(SHIFT)
    missed, extra = sorted(expected - set(flagged)), sorted(set(flagged) - expected)
    if not missed and not extra:
        return "yes (exactly the 3)"
    parts = []
    if missed:
        parts.append(f"missed {', '.join(missed)}")
    if extra:
        parts.append(f"also flagged {', '.join(extra)}")
    return "no: " + "; ".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="20,000 rows per side, 1 run per tool")
    ap.add_argument("--rows", type=int, help="rows per side (default 100,000; quick 20,000)")
    ap.add_argument("--runs", type=int, help="timed runs per tool, median reported (default 3; quick 1)")
    ap.add_argument("--no-evidently", action="store_true", help="skip Evidently")
    ap.add_argument("--no-install", action="store_true", help="do not create the Evidently venv if missing")
    ap.add_argument("--evidently-venv", type=Path, default=HERE / ".venv-evidently")
    args = ap.parse_args()
    rows = args.rows or (20_000 if args.quick else 100_000)
    runs = args.runs or (1 if args.quick else 3)

    c.print_machine()
    ref = c.make_frame(rows, seed=1)
    cur = c.make_frame(rows, seed=2, shift=SHIFT)
    print(f"config: reference {rows:,} × {ref.shape[1]}, current {rows:,} × {cur.shape[1]} with shifts {SHIFT}; "
          f"median of {runs} run(s) per tool")

    run_mlmon(ref.iloc[:2000], cur.iloc[:2000])  # import/first-call warm-up, not timed
    for times_ in STAGES.values():
        times_.clear()
    results: dict[str, dict[str, Any]] = {}
    times = [c.timed(lambda: run_mlmon(ref, cur)) for _ in range(runs)]
    results["mlmon"] = {"time": c.med([t for t, _ in times]), "flagged": times[-1][1],
                        "how": "build_baseline(ref) + ingest(cur) + evaluate(); wasserstein>0.1 numeric, psi>0.2 cat."}
    times = [c.timed(lambda: run_scipy(ref, cur)) for _ in range(runs)]
    results["scipy ks_2samp"] = {"time": c.med([t for t, _ in times]), "flagged": times[-1][1],
                                 "how": f"ks_2samp per feature on raw samples, p < {ALPHA}"}
    evidently_note = "skipped (--no-evidently)"
    if not args.no_evidently:
        py, evidently_note = evidently_python(args.evidently_venv, install=not args.no_install)
        if py is not None:
            try:
                ev = run_evidently(py, ref, cur, runs)
                methods = sorted({r["method"] for r in ev["columns"].values()})
                results[f"Evidently {ev['evidently']}"] = {
                    "time": c.med(ev["times"]), "flagged": ev["flagged"],
                    "how": f"DataDriftPreset defaults ({'; '.join(methods)}), pandas {ev['pandas']}",
                    "runs": ev["times"]}
            except (RuntimeError, subprocess.SubprocessError, ValueError) as exc:
                evidently_note = f"Evidently run failed: {exc}"
    print(f"Evidently: {evidently_note}")
    print("mlmon stages (median s): " + ", ".join(f"{k} {c.med(v):.3f}" for k, v in STAGES.items()))
    for name, r in results.items():
        if "runs" in r:
            print(f"{name}: each run (the first is cold) {', '.join(f'{t:.3f}' for t in r['runs'])} s")

    mlmon_time = results["mlmon"]["time"]
    for name, r in results.items():
        print(f"{name:18s} {r['time']:8.3f} s  flagged {', '.join(r['flagged']) or 'none'}  ({r['how']})")
    print(f"load average at end {c.loadavg()}")
    print("\n| tool | end-to-end time (s) | ratio peer / mlmon | flagged the 3 shifted features? | method |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        ratio = "1 (reference)" if name == "mlmon" else f"{r['time'] / mlmon_time:.1f}×"
        print(f"| {name} | {r['time']:.3f} | {ratio} | {describe(r['flagged'])} | {r['how']} |")
    if not any(name.startswith("Evidently") for name in results):
        print(f"| Evidently | — | — | — | {evidently_note.splitlines()[0]} |")


if __name__ == "__main__":
    main()
