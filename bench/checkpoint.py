"""Checkpoint write and restore for one model with 20 features and 1,000,000 pending predictions.

Ingests 1M predictions with ids (batches of 10,000, in process), then times ``Service.checkpoint()``
(write + fsync + rename) and building a new ``Service`` on the same state dir (restore, including
the evaluation that follows it), and reports the file size. Reference in the same run: ``np.save``
and ``np.load`` of the pending store's slot array alone, the raw floor of writing and reading the
dominant part of the state; and building a new ``Service`` without a state dir.

    .venv/bin/python bench/checkpoint.py [--n 1000000]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import _common as c
import numpy as np

from exporter.batch import Batch
from exporter.config import StateConfig
from exporter.service import Service
from exporter.state import FILE_NAME


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    args = ap.parse_args()
    c.print_machine()
    baseline = c.make_baseline()
    batch_size = 10_000
    df = c.make_frame(batch_size, seed=2)
    features = {k: (v.to_numpy() if v.dtype.kind == "f" else v.tolist()) for k, v in df.items()}
    preds = c.make_predictions(batch_size, seed=2).tolist()
    with tempfile.TemporaryDirectory() as tmp:
        state_dir = Path(tmp) / "state"
        base_cfg = c.make_service(baseline).config
        cfg = dataclasses.replace(base_cfg, state=StateConfig(dir=state_dir))
        service = Service(cfg, {c.MODEL: baseline})
        monitor = service.monitors[c.MODEL]
        t0 = time.perf_counter()
        for b in range(args.n // batch_size):
            monitor.ingest(Batch(model=c.MODEL, version="v1", size=batch_size, features=features,
                                 predictions=preds, ids=[f"id-{b}-{i}" for i in range(batch_size)]))
        ingest_s = time.perf_counter() - t0
        pending = monitor.snapshot().outcomes.pending  # type: ignore[union-attr]
        t0 = time.perf_counter()
        assert service.checkpoint()
        write_s = time.perf_counter() - t0
        size = (state_dir / FILE_NAME).stat().st_size
        t0 = time.perf_counter()
        Service(base_cfg, {c.MODEL: baseline})
        fresh_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        restored = Service(cfg, {c.MODEL: baseline})
        restore_s = time.perf_counter() - t0
        assert restored.monitors[c.MODEL].snapshot().outcomes.pending == pending  # type: ignore[union-attr]

        slots = monitor.outcomes.store.state()["slots"]
        raw = Path(tmp) / "raw.npy"
        t0 = time.perf_counter()
        with open(raw, "wb") as f:
            np.save(f, slots)
        raw_write = time.perf_counter() - t0
        t0 = time.perf_counter()
        np.load(raw)
        raw_read = time.perf_counter() - t0
    print(f"ingested {args.n:,} predictions with ids in {ingest_s:.1f} s; pending {pending:,}")
    print(f"checkpoint write {write_s * 1000:.0f} ms, restore (new Service, evaluation incl.) "
          f"{restore_s * 1000:.0f} ms, "
          f"file {size / 2**20:.1f} MiB; a new Service without state {fresh_s * 1000:.0f} ms")
    print(f"reference np.save/np.load of the pending slot array alone ({slots.nbytes / 2**20:.1f} MiB): "
          f"{raw_write * 1000:.0f} ms / {raw_read * 1000:.0f} ms; write ratio {write_s / raw_write:.1f}x, "
          f"restore ratio {restore_s / raw_read:.1f}x")


if __name__ == "__main__":
    main()
