"""Checkpoints of every model's state in one file, so a restart forgets at most one interval.

Format: an uncompressed ``.npz`` (no pickles, ``allow_pickle=False`` on load) holding each model's
arrays under ``<index>/...`` and a JSON ``__meta__`` with the format version, each model's name and
config fingerprint, and the non-array state. Written to a temp file in the same directory, fsynced,
renamed over the old one and the directory fsynced: a crash leaves the old or the new file, never half.
A file that cannot be read or does not fit the configuration is moved aside and the sidecar starts clean.
"""

from __future__ import annotations

import io
import json
import logging
import os
import sys
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from exporter.monitor import ModelMonitor

log = logging.getLogger("mlmon")

FORMAT_VERSION = 1
FILE_NAME = "checkpoint.npz"
_META = "__meta__"


@dataclass(frozen=True)
class CheckpointStats:
    """What the exposition reports about checkpoints (the collector never touches the file)."""

    age_seconds: float
    duration_seconds: float
    failures: int


HASH_SEED_FILE = "hashseed"
_HASH_PROBE = "mlmon-hash-probe"


def pin_hash_seed(directory: Path) -> None:
    """Make this process hash strings as the one that wrote the checkpoint, re-executing if needed.

    The pending-label store keys predictions by Python's ``hash()`` of their ids, and string hashes
    are salted per process: a restored store would never match a label sent after a restart. The
    salt is kept, random and private (a public fixed one would invite hash flooding with crafted
    ids), in ``<state.dir>/hashseed``; when ``PYTHONHASHSEED`` differs, the process replaces itself
    (same pid, before any port is bound) with the same command line and that seed.
    """
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / HASH_SEED_FILE
    if not path.exists():
        tmp = directory / f".{HASH_SEED_FILE}.{os.getpid()}.tmp"
        tmp.write_text(str(int.from_bytes(os.urandom(4), "big")))
        os.replace(tmp, path)
    seed = path.read_text().strip()
    if os.environ.get("PYTHONHASHSEED") != seed:
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], {**os.environ, "PYTHONHASHSEED": seed})


class IncompatibleCheckpoint(ValueError):
    """The checkpoint is readable but was written for another format or configuration."""


def write(directory: Path, monitors: dict[str, ModelMonitor], now: float,
          events: dict[str, Any] | None = None) -> Path:
    """Write every monitor's state, and the event joiner's pending halves, atomically; returns the path."""
    directory.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    models = []
    for i, (name, monitor) in enumerate(monitors.items()):
        model_arrays, meta = monitor.state()
        arrays.update({f"{i}/{k}": v for k, v in model_arrays.items()})
        models.append({"name": name, "fingerprint": monitor.fingerprint(), "state": meta})
    meta_doc = {"format": FORMAT_VERSION, "written_at": now, "models": models, "events": events,
                "hash_probe": hash(_HASH_PROBE)}
    arrays[_META] = np.frombuffer(json.dumps(meta_doc).encode(), dtype=np.uint8)
    path = directory / FILE_NAME
    tmp = directory / f".{FILE_NAME}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)  # type: ignore[arg-type]
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


def _read(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta = json.loads(arrays.pop(_META).tobytes().decode())
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION:
        raise IncompatibleCheckpoint(f"format {meta.get('format') if isinstance(meta, dict) else '?'}, "
                                     f"expected {FORMAT_VERSION}")
    return meta, arrays


def restore(directory: Path, monitors: dict[str, ModelMonitor],
            events: Callable[[dict[str, Any]], None] | None = None) -> str:
    """Load the checkpoint into fresh monitors: ``restored``, ``none`` (no file) or ``aside`` (set aside,
    the caller then rebuilds its monitors: one model may already hold loaded state).

    Models are checked first and loaded only when all fit, so a bad file never leaves half a state.
    """
    path = directory / FILE_NAME
    if not path.exists():
        return "none"
    try:
        meta, arrays = _read(path)
        if meta.get("hash_probe") != hash(_HASH_PROBE):
            raise IncompatibleCheckpoint("written by a process that hashes ids differently: its pending "
                                         "predictions could never be joined (run `mlmon serve`, which keeps the "
                                         "hash seed in the state directory, or set PYTHONHASHSEED)")
        by_name = {m["name"]: (i, m) for i, m in enumerate(meta["models"])}
        for name, monitor in monitors.items():
            if name in by_name and by_name[name][1]["fingerprint"] != monitor.fingerprint():
                raise IncompatibleCheckpoint(f"model {name!r}: baseline or window layout changed")
        for name, monitor in monitors.items():
            if name not in by_name:
                continue
            i, model = by_name[name]
            prefix = f"{i}/"
            monitor.restore({k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}, model["state"])
        if events is not None and meta.get("events"):
            events(meta["events"])
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile, EOFError, io.UnsupportedOperation) as exc:
        aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
        os.replace(path, aside)
        kind = "incompatible" if isinstance(exc, IncompatibleCheckpoint) else "unreadable"
        log.error("checkpoint %s is %s (%s); moved to %s, starting with empty state", path, kind, exc, aside.name)
        return "aside"
    log.info("restored state of %d model(s) from %s", len(set(monitors) & set(by_name)), path)
    return "restored"
