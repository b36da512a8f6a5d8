"""Pair logged inference requests with their responses and turn each pair into a :class:`Batch`.

Payload loggers (KServe, Seldon) send a request event and, separately, a response event with the
same pairing key, in either order, at least once. ``EventJoiner`` holds the first half of each
pair until the other arrives, and counts every outcome (:data:`OUTCOMES`) per mlmon model:

* ``paired`` — a request met its response: one record per row.
* ``unanswered`` — no response within the TTL. Loggers send a response only on success, so by
  default (``events.unanswered: error``) its records are failed inferences: they reach the error
  counter and the availability SLO; their features still count for drift and data quality.
* ``orphan_response`` — no request within the TTL: nothing to attribute it to, dropped.
* ``duplicate`` — a redelivered event (same identity: kind, pairing key, component) while its pair
  is pending or within the TTL after it completed: ignored.
* ``ignored_component`` — a KServe component not in ``events.components`` (default: the predictor,
  so a transformer and an explainer do not double-count), or a Seldon graph node other than the
  routed one.
* ``unknown_model`` — the event names no configured model: counted, never buffered.
* ``row_mismatch`` / ``error_response`` / ``invalid_prediction`` — the response does not fit its
  request, reports a failure, or holds predictions of an unusable shape (features kept).
* ``evicted_request`` / ``evicted_response`` — let go early to respect ``max_pending`` or
  ``max_pending_bytes``.

Versions come from the response body (OIP ``model_version``), else from the route that matched
the event (e.g. ``endpoint: canary``), else the configured default — never from another request.

State is plain dicts, lists and tuples (checkpointable); one lock guards it and bodies are parsed
before the lock is taken. Pure Python and numpy: no HTTP or Prometheus here.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from exporter.batch import Batch, PayloadError, Rejection, prediction_problem
from exporter.config import EventRoute, EventsConfig, class_mapping
from exporter.formats import EventRows, InferenceEvent, rows_from_event

OUTCOMES = ("paired", "unanswered", "orphan_response", "duplicate", "ignored_component", "unknown_model",
            "row_mismatch", "error_response", "invalid_prediction", "evicted_request", "evicted_response")
"""Per-model counters returned by :meth:`EventJoiner.stats` (all monotonic; events, except
``invalid_prediction`` which counts records)."""

UNKNOWN_MODEL = "__unknown__"
"""Model label of events that name no configured model (bounds label cardinality)."""

FeatureNames = Mapping[str, Sequence[str]] | Callable[[str], Sequence[str] | None] | None
_Key = tuple[str, str | None, str]


@dataclass
class _Half:
    """One buffered event, reduced to what the record needs (the body is not kept)."""

    id: str
    """Pairing key: the records' ids derive from it, so labels can refer to the request id."""
    kind: str
    model: str
    version: str | None
    """Body version, else the route's: resolved at arrival."""
    time: float | None
    rows: EventRows
    deadline: float
    nbytes: int


def _size_estimate(rows: EventRows) -> int:
    """Rough bytes a parsed half holds (Python objects: ~40 bytes per value plus overhead)."""
    values = sum(len(col) for col in rows.features.values())
    if rows.predictions is not None:
        values += len(rows.predictions)
    return 200 + 40 * values


def _rename(prediction: Any, classes: Mapping[str, str]) -> Any:
    """Apply the class-name mapping to a label or to the keys of a ``{class: probability}`` map."""
    if isinstance(prediction, dict):
        return {classes.get(str(k), k): p for k, p in prediction.items()}
    if isinstance(prediction, (str, int)) and not isinstance(prediction, bool):
        return classes.get(str(prediction), prediction)
    return prediction


class EventJoiner:
    """Joins request and response events into :class:`Batch` objects; thread-safe and bounded.

    ``feature_names`` names positional inputs per model (a mapping, or a callable returning None
    for models without configured names). ``known_models`` are the configured mlmon models; events
    for any other model are counted and not buffered (None: every model is known).
    """

    def __init__(self, config: EventsConfig | None = None, *, feature_names: FeatureNames = None,
                 known_models: Collection[str] | None = None) -> None:
        self.config = config = config or EventsConfig()
        if not config.ttl_seconds > 0:
            raise ValueError("events.ttl must be positive")
        if config.max_pending < 1 or config.max_pending_bytes < 1:
            raise ValueError("events.max_pending and events.max_pending_bytes must be at least 1")
        self.ttl = float(config.ttl_seconds)
        self._names = feature_names
        self._classes = {model: class_mapping(value) for model, value in config.classes.items()}
        self._known = None if known_models is None else frozenset(known_models)
        self._pending: OrderedDict[_Key, _Half] = OrderedDict()
        self._done: OrderedDict[tuple[_Key, str], float] = OrderedDict()
        """Identities of halves already used, with the time until which a redelivery is a duplicate."""
        self._bytes = 0
        self._stats: dict[str, Counter[str]] = {}
        self._lock = threading.Lock()

    # ---- checkpoint ---------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """The halves waiting for their other half and the remembered identities, as JSON-ready data
        (what ``state.write`` checkpoints). Times are wall-clock, so they stay valid across a restart."""
        def plain(values: Any) -> Any:
            return values.tolist() if isinstance(values, np.ndarray) else list(values)

        with self._lock:
            pending = [{"key": list(key), "id": h.id, "kind": h.kind, "model": h.model, "version": h.version,
                        "time": h.time, "deadline": h.deadline, "nbytes": h.nbytes,
                        "rows": {"kind": h.rows.kind, "n_rows": h.rows.n_rows, "format": h.rows.format,
                                 "error": h.rows.error,
                                 "features": {k: plain(v) for k, v in h.rows.features.items()},
                                 "predictions": None if h.rows.predictions is None else plain(h.rows.predictions)}}
                       for key, h in self._pending.items()]
            done = [[list(key), kind, until] for (key, kind), until in self._done.items()]
        return {"pending": pending, "done": done}

    def restore(self, doc: dict[str, Any]) -> None:
        """Load what ``state()`` wrote; halves past their deadline expire (as unanswered) on the next event."""
        with self._lock:
            for item in doc.get("pending", []):
                key = cast(_Key, tuple(item["key"]))
                r = item["rows"]
                rows = EventRows(kind=r["kind"], n_rows=int(r["n_rows"]), features=r["features"],
                                 predictions=r["predictions"], error=r["error"], format=r["format"])
                self._pending[key] = _Half(id=item["id"], kind=item["kind"], model=item["model"],
                                           version=item["version"], time=item["time"], rows=rows,
                                           deadline=float(item["deadline"]), nbytes=int(item["nbytes"]))
                self._bytes += int(item["nbytes"])
            for key, kind, until in doc.get("done", []):
                self._done[(cast(_Key, tuple(key)), kind)] = float(until)

    # ---- public API ---------------------------------------------------------------------

    def add(self, event: InferenceEvent, now: float | None = None) -> list[Batch]:
        """Take one event; return the records it completes plus any whose TTL has passed.

        Raises :class:`PayloadError` if the event's body cannot be read; nothing is kept then.
        """
        now = event.received_at if now is None else now
        route = self.route(event)
        if not self._accepts(event, route):
            self._locked_count(self._service_model(event), "ignored_component")
            return self.flush(now)
        model = self._model(event, route)
        if model is None:
            self._locked_count(UNKNOWN_MODEL, "unknown_model")
            return self.flush(now)
        rows = rows_from_event(event, self._feature_names(model), self.config.outputs.get(model))
        half = _Half(event.id, event.kind, model, event.version or (route.version if route else None), event.time, rows,
                     now + self.ttl, _size_estimate(rows))
        key: _Key = (model, event.component, event.id)
        out: list[Batch] = []
        with self._lock:
            self._expire(now, out)
            if (key, event.kind) in self._done:
                self._count(model, "duplicate")
                return coalesce(out)
            other = self._pending.get(key)
            if other is not None and other.kind == event.kind:
                self._count(model, "duplicate")
            elif other is not None:
                self._remove(key)
                request, response = (half, other) if event.kind == "request" else (other, half)
                self._count(model, "paired")
                self._remember(key, now)
                self._emit(request, response, out)
            else:
                while self._pending and (len(self._pending) >= self.config.max_pending
                                         or self._bytes + half.nbytes > self.config.max_pending_bytes):
                    old_key = next(iter(self._pending))
                    old = self._remove(old_key)
                    self._count(old.model, f"evicted_{old.kind}")
                    if old.kind == "request":
                        self._emit(old, None, out)
                self._pending[key] = half
                self._bytes += half.nbytes
        return coalesce(out)

    def flush(self, now: float | None = None) -> list[Batch]:
        """Emit requests whose TTL has passed (as unanswered) and drop expired responses."""
        now = time.time() if now is None else now
        out: list[Batch] = []
        with self._lock:
            self._expire(now, out)
        return coalesce(out)

    def drain(self) -> list[Batch]:
        """Let go of everything pending (at shutdown), as if every TTL had passed."""
        return self.flush(math.inf)

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    @property
    def pending_bytes(self) -> int:
        """Estimated memory held by buffered halves."""
        with self._lock:
            return self._bytes

    def stats(self) -> dict[str, dict[str, int]]:
        """``{model: {outcome: value}}`` for every outcome in :data:`OUTCOMES`."""
        with self._lock:
            return {m: {name: c[name] for name in OUTCOMES} for m, c in self._stats.items()}

    def route(self, event: InferenceEvent) -> EventRoute | None:
        """The first configured route whose every ``match`` key equals the event's attribute."""
        for route in self.config.routes:
            if all(_attribute(event, k) == v for k, v in route.match):
                return route
        return None

    def rename_class(self, model: str, value: Any) -> Any:
        """Apply ``events.classes`` of a model to a label, as it is applied to predictions."""
        classes = self._classes.get(model)
        return _rename(value, classes) if classes else value

    def model_of(self, event: InferenceEvent) -> str | None:
        """The configured mlmon model an event belongs to (route, its own name, or the default)."""
        return self._model(event, self.route(event))

    # ---- internals ----------------------------------------------------------------------

    def _model(self, event: InferenceEvent, route: EventRoute | None) -> str | None:
        if route is not None:
            return route.model
        if event.model is not None and (self._known is None or event.model in self._known):
            return event.model
        if self.config.default_model is not None:
            return self.config.default_model
        if event.model is None:
            raise PayloadError("ce-inferenceservicename", "the event names no model (no inferenceservicename "
                                                          "or modelid) and no events.default_model is configured")
        return None

    def _service_model(self, event: InferenceEvent) -> str:
        """Model label for an ignored event: the model its service is routed to, if any."""
        for r in self.config.routes:
            if ("inference_service", event.model) in r.match:
                return r.model
        if event.model is not None and (self._known is None or event.model in self._known):
            return event.model
        return self.config.default_model or UNKNOWN_MODEL

    def _accepts(self, event: InferenceEvent, route: EventRoute | None) -> bool:
        """Component filter: an explicit route wins; a service whose routes name components takes only
        those; otherwise KServe events only from ``events.components``."""
        if route is not None or event.component is None:
            return True
        routed = {v for r in self.config.routes for k, v in r.match if k == "component"
                  and ("inference_service", event.model) in r.match}
        if routed:
            return event.component in routed
        if event.server == "kserve":
            return event.component in self.config.components
        return True

    def _feature_names(self, model: str) -> Sequence[str] | None:
        if self._names is None:
            return None
        if callable(self._names):
            return self._names(model)
        return self._names.get(model)

    def _locked_count(self, model: str, name: str) -> None:
        with self._lock:
            self._count(model, name)

    def _count(self, model: str, name: str, n: int = 1) -> None:
        self._stats.setdefault(model, Counter())[name] += n

    def _remove(self, key: _Key) -> _Half:
        half = self._pending.pop(key)
        self._bytes -= half.nbytes
        return half

    def _remember(self, key: _Key, now: float) -> None:
        """Keep a used pair's identity for one TTL so a redelivery is recognised (bounded)."""
        until = now + self.ttl
        self._done[(key, "request")] = until
        self._done[(key, "response")] = until
        while len(self._done) > 2 * self.config.max_pending:
            self._done.popitem(last=False)

    def _expire(self, now: float, out: list[Batch]) -> None:
        """Pop halves (and remembered identities) from the oldest end while their time has passed.

        Arrival order is deadline order up to clock skew between threads, so the scan stops at
        the first live entry; a straggler behind it expires on a later call.
        """
        while self._done:
            ident, until = next(iter(self._done.items()))
            if until > now:
                break
            del self._done[ident]
        while self._pending:
            key = next(iter(self._pending))
            half = self._pending[key]
            if half.deadline > now:
                return
            self._remove(key)
            if half.kind == "request":
                self._count(half.model, "unanswered")
                self._remember(key, now)
                self._emit(half, None, out)
            else:
                self._count(half.model, "orphan_response")

    def _emit(self, request: _Half, response: _Half | None, out: list[Batch]) -> None:
        n = request.rows.n_rows
        if n == 0:
            return
        model = request.model
        error = np.zeros(n, dtype=bool)
        predictions: list[Any] | None = None
        latency = np.full(n, np.nan)
        version = request.version
        bad: list[int] = []
        if response is None:
            if self.config.unanswered == "error":
                error[:] = True
        else:
            version = response.version or version
            if response.rows.error is not None:
                error[:] = True
                self._count(model, "error_response")
            elif response.rows.predictions is not None and len(response.rows.predictions) == n:
                predictions = response.rows.predictions
                classes = self._classes.get(model)
                if classes:
                    predictions = [_rename(p, classes) for p in predictions]
                bad = [i for i, p in enumerate(predictions) if prediction_problem(p) is not None]
                if bad:
                    self._count(model, "invalid_prediction", len(bad))
            else:
                self._count(model, "row_mismatch")
            t0, t1 = request.time, response.time
            if t0 is not None and t1 is not None and t1 >= t0:
                latency[:] = t1 - t0
        version = version or self.config.default_version
        base = request.id
        ids: list[str | None] = [base] if n == 1 else [f"{base}:{i}" for i in range(n)]
        features = request.rows.features
        if not bad:
            out.append(Batch(model=model, version=version, size=n, features=dict(features), predictions=predictions,
                             ids=ids, latency_seconds=latency, error=error))
            return
        # records whose prediction is unusable keep their features, without a prediction
        refused = set(bad)
        good = [i for i in range(n) if i not in refused]
        for rows, preds in ((good, predictions), (bad, None)):
            if rows:
                out.append(Batch(model=model, version=version, size=len(rows),
                                 features={k: [col[i] for i in rows] for k, col in features.items()},
                                 predictions=None if preds is None else [preds[i] for i in rows],
                                 ids=[ids[i] for i in rows], latency_seconds=latency[rows], error=error[rows]))


def _attribute(event: InferenceEvent, key: str) -> str | None:
    if key == "inference_service":
        return event.model
    if key == "component":
        return event.component
    if key == "namespace":
        return event.namespace
    if key == "endpoint":
        return event.endpoint
    return None


def coalesce(batches: Iterable[Batch]) -> list[Batch]:
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
        features: dict[str, Any] = {name: [] for name in names}
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
