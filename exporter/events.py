"""Pair logged inference requests with their responses and turn each pair into a :class:`Batch`.

Payload loggers send a request event and, separately, a response event with the same pairing
key, in either order. ``EventJoiner`` holds the first half of each pair until the other arrives:

* a request whose response never comes is emitted without predictions once its TTL passes — its
  features still count for drift and data quality — and counted as ``unanswered``;
* a response whose request never comes cannot be attributed to features and is dropped and
  counted as ``orphaned``;
* at most ``max_pending`` halves are held; beyond that the oldest is let go early (a request is
  emitted without predictions, a response dropped) and counted as ``evicted_*``, so memory stays
  bounded whatever the loggers do.

A request event with N records and a response with N predictions give N records, with ids
``"{id}:{row}"`` (a single record keeps the bare id, so labels can refer to the request id). When
both events carry a ``time`` attribute the difference is reported as the records' latency: newer
KServe stamps request arrival and response completion; older loggers stamp the send time, which
makes it an approximation.

Pure Python and numpy: no HTTP or Prometheus here. All state sits behind one lock; bodies are
parsed before the lock is taken.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from exporter.batch import Batch, PayloadError, Rejection, prediction_problem
from exporter.formats import EventRows, InferenceEvent, rows_from_event

DEFAULT_TTL_SECONDS = 60.0
DEFAULT_MAX_PENDING = 100_000
DEFAULT_VERSION = "unknown"

COUNTERS = ("joined", "unanswered", "orphaned", "evicted_requests", "evicted_responses",
            "duplicate_requests", "duplicate_responses", "row_mismatch", "error_responses",
            "invalid_predictions")
"""Per-model counters returned by :meth:`EventJoiner.stats` (all monotonic)."""

FeatureNames = Mapping[str, Sequence[str]] | Callable[[str], Sequence[str] | None] | None
_Key = tuple[str, str | None, str]


@dataclass
class _Half:
    event: InferenceEvent
    rows: EventRows
    model: str
    deadline: float


class EventJoiner:
    """Joins request and response events into :class:`Batch` objects; thread-safe and bounded.

    ``feature_names`` names positional inputs per model (a mapping, or a callable returning None
    for models without configured names). ``default_model`` is used for events that name no
    model (KServe sends an empty ``inferenceservicename`` outside an InferenceService pod).
    """

    def __init__(self, *, ttl: float = DEFAULT_TTL_SECONDS, max_pending: int = DEFAULT_MAX_PENDING,
                 feature_names: FeatureNames = None, default_model: str | None = None,
                 default_version: str = DEFAULT_VERSION, output: str | None = None) -> None:
        if not ttl > 0:
            raise ValueError("ttl must be positive")
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self.ttl = float(ttl)
        self.max_pending = int(max_pending)
        self.default_model = default_model
        self.default_version = default_version
        self.output = output
        self._names = feature_names
        self._pending: OrderedDict[_Key, _Half] = OrderedDict()
        self._stats: dict[str, Counter[str]] = {}
        self._versions: dict[str, str] = {}
        """Last version each model's responses named: the best guess for its unanswered requests."""
        self._lock = threading.Lock()

    # ---- public API ---------------------------------------------------------------------

    def add(self, event: InferenceEvent, now: float | None = None) -> list[Batch]:
        """Take one event; return the records it completes plus any whose TTL has passed.

        Raises :class:`PayloadError` if the event's body cannot be read; nothing is kept then.
        """
        now = event.received_at if now is None else now
        model = event.model or self.default_model
        if model is None:
            raise PayloadError("ce-inferenceservicename", "the event names no model (no inferenceservicename "
                                                          "or modelid) and no default model is configured")
        rows = rows_from_event(event, self._feature_names(model), self.output)
        half = _Half(event, rows, model, now + self.ttl)
        key: _Key = (model, event.component, event.id)
        out: list[Batch] = []
        with self._lock:
            self._expire(now, out)
            other = self._pending.get(key)
            if other is not None and other.event.kind != event.kind:
                del self._pending[key]
                request, response = (half, other) if event.kind == "request" else (other, half)
                self._count(model, "joined")
                self._emit(request, response, out)
            else:
                if other is not None:
                    del self._pending[key]
                    self._count(model, f"duplicate_{event.kind}s")
                    if other.event.kind == "request":
                        self._emit(other, None, out)
                while len(self._pending) >= self.max_pending:
                    _, old = self._pending.popitem(last=False)
                    self._count(old.model, f"evicted_{old.event.kind}s")
                    if old.event.kind == "request":
                        self._emit(old, None, out)
                self._pending[key] = half
        return _coalesce(out)

    def flush(self, now: float | None = None) -> list[Batch]:
        """Emit requests whose TTL has passed (without predictions) and drop expired responses."""
        now = time.time() if now is None else now
        out: list[Batch] = []
        with self._lock:
            self._expire(now, out)
        return _coalesce(out)

    def drain(self) -> list[Batch]:
        """Let go of everything pending (at shutdown), as if every TTL had passed."""
        return self.flush(math.inf)

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def stats(self) -> dict[str, dict[str, int]]:
        """``{model: {counter: value}}`` for every counter in :data:`COUNTERS`."""
        with self._lock:
            return {m: {name: c[name] for name in COUNTERS} for m, c in self._stats.items()}

    # ---- internals (called with the lock held) -----------------------------------------

    def _feature_names(self, model: str) -> Sequence[str] | None:
        if self._names is None:
            return None
        if callable(self._names):
            return self._names(model)
        return self._names.get(model)

    def _count(self, model: str, name: str, n: int = 1) -> None:
        self._stats.setdefault(model, Counter())[name] += n

    def _expire(self, now: float, out: list[Batch]) -> None:
        """Pop halves from the oldest end while their deadline has passed.

        Arrival order is deadline order up to clock skew between threads, so the scan stops at
        the first live entry; a straggler behind it expires on a later call.
        """
        while self._pending:
            key = next(iter(self._pending))
            half = self._pending[key]
            if half.deadline > now:
                return
            del self._pending[key]
            if half.event.kind == "request":
                self._count(half.model, "unanswered")
                self._emit(half, None, out)
            else:
                self._count(half.model, "orphaned")

    def _emit(self, request: _Half, response: _Half | None, out: list[Batch]) -> None:
        n = request.rows.n_rows
        if n == 0:
            return
        model = request.model
        error = np.zeros(n, dtype=bool)
        predictions: list[Any] | None = None
        latency = np.full(n, np.nan)
        version = request.event.version or self._versions.get(model)
        rejected: list[Rejection] = []
        keep: list[int] | None = None
        if response is not None:
            if response.event.version:
                version = self._versions[model] = response.event.version
            if response.rows.error is not None:
                error[:] = True
                self._count(model, "error_responses")
            elif response.rows.predictions is not None and len(response.rows.predictions) == n:
                predictions = response.rows.predictions
                reasons = [prediction_problem(p) for p in predictions]
                if any(reasons):
                    keep = [i for i, r in enumerate(reasons) if r is None]
                    rejected = [Rejection(i, "prediction", r) for i, r in enumerate(reasons) if r is not None]
                    self._count(model, "invalid_predictions", len(rejected))
            else:
                self._count(model, "row_mismatch")
            t0, t1 = request.event.time, response.event.time
            if t0 is not None and t1 is not None and t1 >= t0:
                latency[:] = t1 - t0
        base = request.event.id
        ids: list[str | None] = [base] if n == 1 else [f"{base}:{i}" for i in range(n)]
        features = request.rows.features
        if keep is not None:
            ids = [ids[i] for i in keep]
            features = {name: [col[i] for i in keep] for name, col in features.items()}
            predictions = [predictions[i] for i in keep] if predictions is not None else None
            latency, error = latency[keep], error[keep]
        out.append(Batch(model=model, version=version or self.default_version, size=len(ids),
                         features=dict(features), predictions=predictions, ids=ids,
                         latency_seconds=latency, error=error, rejected=rejected))


def _coalesce(batches: Iterable[Batch]) -> list[Batch]:
    """Merge batches of the same model and version, so the monitor ingests fewer, larger batches.

    Records with and without predictions are never merged (a None prediction would count as a
    missing value). A feature absent from some merged events is None (missing) in their records;
    rejected indexes are shifted to the merged records' positions.
    """
    groups: dict[tuple[str, str, bool], list[Batch]] = {}
    for b in batches:
        groups.setdefault((b.model, b.version, b.predictions is None), []).append(b)
    out: list[Batch] = []
    for (model, version, _), group in groups.items():
        if len(group) == 1:
            out.append(group[0])
            continue
        names = dict.fromkeys(name for b in group for name in b.features)
        features: dict[str, list[Any]] = {name: [] for name in names}
        predictions: list[Any] = []
        ids: list[str | None] = []
        rejected: list[Rejection] = []
        offset = 0
        for b in group:
            for name in names:
                col = b.features.get(name)
                features[name].extend(list(col) if col is not None else [None] * b.size)
            if b.predictions is not None:
                predictions.extend(b.predictions)
            ids.extend(b.ids if b.ids is not None else [None] * b.size)
            rejected.extend(Rejection(r.index + offset, r.field, r.reason, r.code) for r in b.rejected)
            offset += b.size + len(b.rejected)
        out.append(Batch(model=model, version=version, size=sum(b.size for b in group), features=features,
                         predictions=None if group[0].predictions is None else predictions, ids=ids,
                         latency_seconds=np.concatenate([b.latency_seconds for b in group]),
                         error=np.concatenate([b.error for b in group]), rejected=rejected))
    return out
