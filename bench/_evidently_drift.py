"""Evidently's data-drift report on two data sets; run by ``bench/drift_vs_peers.py`` inside
its own venv (Evidently pins an older pandas than mlmon). Not importable from mlmon's venv.

    <venv>/bin/python bench/_evidently_drift.py DATA.npz RUNS

``DATA.npz`` holds ``ref__<column>`` and ``cur__<column>`` arrays (float64 for numeric,
unicode for categorical columns). Only the drift computation is timed: building the two
``Dataset`` objects, ``Report([DataDriftPreset()]).run(...)`` and reading the results; the
imports and the loading of the data are not. Prints one JSON object on stdout.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import pandas as pd


def main() -> None:
    path, runs = sys.argv[1], int(sys.argv[2])
    import evidently
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    with np.load(path, allow_pickle=False) as data:
        cols = sorted({k.split("__", 1)[1] for k in data.files}, key=lambda k: (not k.startswith("num_"), k))
        ref = pd.DataFrame({col: data[f"ref__{col}"] for col in cols})
        cur = pd.DataFrame({col: data[f"cur__{col}"] for col in cols})
    for col in cols:
        if ref[col].dtype.kind == "U":
            ref[col] = ref[col].astype(object)
            cur[col] = cur[col].astype(object)
    numeric = [col for col in cols if ref[col].dtype.kind == "f"]
    categorical = [col for col in cols if col not in numeric]
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)

    def drift() -> dict[str, dict[str, object]]:
        snapshot = Report([DataDriftPreset()]).run(
            Dataset.from_pandas(cur, data_definition=definition),
            Dataset.from_pandas(ref, data_definition=definition))
        out = {}
        for metric in snapshot.dict()["metrics"]:
            cfg = metric["config"]
            if not cfg.get("type", "").endswith("ValueDrift"):
                continue
            method, threshold, value = cfg["method"], float(cfg["threshold"]), float(metric["value"])
            # Evidently's rule: a p-value test drifts when p < threshold, a distance when d >= threshold.
            detected = value < threshold if "p_value" in method else value >= threshold
            out[cfg["column"]] = {"method": method, "value": value, "threshold": threshold, "detected": detected}
        return out

    times = []
    result: dict[str, dict[str, object]] = {}
    for _ in range(runs):
        t0 = time.perf_counter()
        result = drift()
        times.append(time.perf_counter() - t0)
    print(json.dumps({
        "evidently": evidently.__version__, "pandas": pd.__version__, "numpy": np.__version__,
        "python": sys.version.split()[0], "rows": [len(ref), len(cur)], "times": times,
        "columns": result, "flagged": sorted(c for c, r in result.items() if r["detected"]),
    }))


if __name__ == "__main__":
    main()
