"""Shared pieces of the benchmarks: machine description, synthetic data, in-memory service.

Imported by the scripts in this folder as ``import _common`` (each script is run as
``python bench/<name>.py``, which puts this folder first on ``sys.path``).
"""

from __future__ import annotations

import dataclasses
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # so ``exporter`` imports without an editable install too
    sys.path.insert(0, str(ROOT))

from exporter.baseline import Baseline, build_baseline  # noqa: E402
from exporter.config import Config, ModelConfig, ServerConfig, WindowConfig  # noqa: E402
from exporter.monitor import ModelMonitor  # noqa: E402
from exporter.service import Service  # noqa: E402

MODEL = "bench"
CLASSES = ("no", "yes")


# ---- machine --------------------------------------------------------------------------------

def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    import numpy
    import orjson
    import scipy

    return {"nproc": os.cpu_count(), "sched_affinity": len(os.sched_getaffinity(0)), "cpu": cpu_model(),
            "python": platform.python_version(), "numpy": numpy.__version__, "scipy": scipy.__version__,
            "pandas": pd.__version__, "orjson": orjson.__version__, "platform": platform.platform(),
            "loadavg": loadavg()}


def loadavg() -> str:
    """1/5/15-minute load averages: other work on the machine makes every figure noisier."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def source_state() -> str:
    """The commit the exporter code was measured at, and whether the work tree differed from it
    (read-only git calls; ``--no-optional-locks`` keeps ``status`` from touching the index)."""
    import subprocess

    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "--no-optional-locks", "status", "--porcelain", "--", "exporter"],
                               cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git)"
    return f"{head or 'unknown'}{' + uncommitted changes in exporter/' if dirty else ''}"


def print_machine() -> dict[str, Any]:
    m = machine()
    m["source"] = source_state()
    print(f"machine: nproc={m['nproc']} cpu={m['cpu']!r} python={m['python']} numpy={m['numpy']} "
          f"scipy={m['scipy']} pandas={m['pandas']} orjson={m['orjson']}")
    print(f"         {m['platform']}; load average at start {m['loadavg']}; exporter at {m['source']}")
    return m


# ---- synthetic data -------------------------------------------------------------------------

def _vocab(prefix: str, k: int) -> np.ndarray:
    return np.array([f"{prefix}_{i:02d}" for i in range(k)], dtype=object)


def make_frame(n: int, n_numeric: int = 15, n_categorical: int = 5, seed: int = 0,
               shift: dict[str, float] | None = None) -> pd.DataFrame:
    """``n`` rows of ``n_numeric`` numeric (``num_00``…) and ``n_categorical`` categorical
    (``cat_00``…) features from a fixed generator.

    ``shift`` maps a feature name to a shift size: a numeric feature moves by that many of its
    own standard deviations; a categorical feature moves that share of its mass to the
    rarest categories.
    """
    rng = np.random.default_rng(seed)
    shift = shift or {}
    cols: dict[str, np.ndarray] = {}
    for j in range(n_numeric):
        name = f"num_{j:02d}"
        kind = j % 5
        if kind == 0:
            v, sd = rng.normal(10 * j, 1 + j, n), 1 + j
        elif kind == 1:
            v, sd = rng.lognormal(1.0, 0.6, n), 2.0
        elif kind == 2:
            v, sd = rng.gamma(2.0, 3.0, n), 4.2
        elif kind == 3:
            v, sd = rng.uniform(-5, 5, n), 2.9
        else:
            v, sd = rng.poisson(4, n).astype(np.float64), 2.0
        if name in shift:
            v = v + shift[name] * sd
        cols[name] = v
    sizes = (3, 5, 10, 20, 40)
    for j in range(n_categorical):
        name = f"cat_{j:02d}"
        k = sizes[j % len(sizes)]
        p = np.arange(k, 0, -1, dtype=np.float64)
        p /= p.sum()
        if name in shift:
            moved = shift[name] * p
            p = p - moved + moved[::-1]
        cols[name] = _vocab(name, k)[rng.choice(k, n, p=p)]
    return pd.DataFrame(cols)


def make_predictions(n: int, seed: int = 0) -> np.ndarray:
    return np.asarray(CLASSES, dtype=object)[np.random.default_rng(seed + 1000).integers(0, 2, n)]


def training_frame(n: int, seed: int = 0, **kw: Any) -> pd.DataFrame:
    df = make_frame(n, seed=seed, **kw)
    df["prediction"] = make_predictions(n, seed)
    return df


# ---- service --------------------------------------------------------------------------------

def model_config(min_samples: int = 200) -> ModelConfig:
    window = WindowConfig(window_seconds=3600, bucket_seconds=60, evaluation_interval_seconds=15,
                          min_samples=min_samples)
    return ModelConfig(name=MODEL, task="classification", window=window)


def make_baseline(n: int = 50_000, seed: int = 0, **kw: Any) -> Baseline:
    return build_baseline(training_frame(n, seed, **kw), MODEL, prediction="prediction")


def make_monitor(baseline: Baseline, clock: Callable[[], float] = time.time) -> ModelMonitor:
    return ModelMonitor(model_config(), baseline, clock)


def model_names(models: int = 1) -> list[str]:
    """``bench``, or ``bench_00``… when a benchmark serves several models of one baseline."""
    return [MODEL] if models == 1 else [f"{MODEL}_{i:02d}" for i in range(models)]


def make_service(baseline: Baseline, host: str = "127.0.0.1", port: int = 0, models: int = 1,
                 ingest_workers: int | None = None) -> Service:
    configs = tuple(dataclasses.replace(model_config(), name=name) for name in model_names(models))
    server = ServerConfig(listen=f"{host}:{port}", max_body_bytes=64 * 1024 * 1024)
    if ingest_workers is not None:
        server = dataclasses.replace(server, ingest_workers=ingest_workers)
    cfg = Config(server=server,
                 defaults=configs[0].window, models=configs)
    return Service(cfg, {m.name: dataclasses.replace(baseline, model=m.name) for m in configs})


# ---- request bodies -------------------------------------------------------------------------

ID_PLACEHOLDER = "@@@@@@@@"
"""Every id in a serialised body is ``@@@@@@@@-<index>``; :func:`stamp_ids` makes them unique per
request with one ``bytes.replace``, so bodies stay pre-serialised while every request carries
fresh ids, as real traffic does (mlmon keeps the ids of predictions waiting for labels)."""


def stamp_ids(body: bytes, request_no: int) -> bytes:
    return body.replace(ID_PLACEHOLDER.encode(), b"%08x" % (request_no & 0xFFFFFFFF))


def columnar_body(df: pd.DataFrame, predictions: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """The columnar form of ``POST /v1/predictions`` as a model server would send it
    (ids carry :data:`ID_PLACEHOLDER`; serialise, then :func:`stamp_ids` per request)."""
    n = len(df)
    rng = np.random.default_rng(seed)
    return {
        "model": MODEL, "version": "v1",
        "ids": [f"{ID_PLACEHOLDER}-{i:05d}" for i in range(n)],
        "features": {c: df[c].tolist() for c in df.columns},
        "predictions": list(predictions),
        "latency_seconds": np.round(rng.lognormal(np.log(0.02), 0.5, n), 6).tolist(),
    }


def arrow_body(df: pd.DataFrame, predictions: np.ndarray, seed: int = 0) -> bytes:
    """The columnar form as an Arrow IPC stream (``application/vnd.apache.arrow.stream``): the same
    fields, ``features`` a struct column, model and version in the schema metadata (ids carry
    :data:`ID_PLACEHOLDER`, which :func:`stamp_ids` replaces in place: same length)."""
    import pyarrow as pa

    col = columnar_body(df, predictions, seed)
    features = pa.StructArray.from_arrays([pa.array(df[name].to_numpy()) for name in df.columns],
                                          names=list(df.columns))
    table = pa.table({"ids": col["ids"], "features": features, "predictions": col["predictions"],
                      "latency_seconds": col["latency_seconds"]})
    table = table.replace_schema_metadata({"model": col["model"], "version": col["version"]})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def row_body(df: pd.DataFrame, predictions: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """The row form of ``POST /v1/predictions``: one object per record (ids as in
    :func:`columnar_body`)."""
    col = columnar_body(df, predictions, seed)
    records = [{"id": i, "features": f, "prediction": p, "latency_seconds": lat}
               for i, f, p, lat in zip(col["ids"], df.to_dict("records"), col["predictions"],
                                       col["latency_seconds"], strict=True)]
    return {"model": MODEL, "version": "v1", "records": records}


# ---- timing ---------------------------------------------------------------------------------

def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def repeat_for(fn: Callable[[], Any], seconds: float, min_runs: int = 3) -> list[float]:
    """Run ``fn`` repeatedly for about ``seconds`` (at least ``min_runs`` times); per-run times."""
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(times) < min_runs or time.perf_counter() < deadline:
        dt, _ = timed(fn)
        times.append(dt)
    return times


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def med(values: list[float]) -> float:
    return statistics.median(values)


def verdict(ok: bool) -> str:
    return "MET" if ok else "NOT MET"


def start_listener(n_baseline: int = 5_000) -> tuple[Service, Any]:
    """A started service and its one listener (``build_listeners``, as ``mlmon serve`` runs it) on an
    ephemeral loopback port; stop with ``service.stop(); listener.close()``."""
    from exporter.server import build_listeners

    service = make_service(make_baseline(n=n_baseline))
    [listener] = build_listeners(service)
    listener.start()
    service.start()
    return service, listener
