"""The running sidecar: one ``ModelMonitor`` per configured model and the evaluation timer.

Evaluation runs on its own thread so neither an ingest request nor a scrape ever computes
statistics; a scrape that finds a stale result only wakes the timer.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry

from exporter import state
from exporter.batch import Batch, PayloadError
from exporter.compat import baseline_problems
from exporter.config import Config, ConfigError, ModelConfig
from exporter.events import EventJoiner, coalesce
from exporter.formats import InferenceEvent
from exporter.formats.kserve_v1 import seldon_feedback
from exporter.malloc import keep_freed_buffers
from exporter.metrics import MlmonCollector
from exporter.monitor import ModelMonitor
from exporter.offload import Offload
from exporter.profile import Baseline, load_baseline
from exporter.selfmon import SelfMonitor

log = logging.getLogger("mlmon")

EVENT_FLUSH_RECORDS = 512
EVENT_FLUSH_SECONDS = 0.1
"""Joined event records are handed to the monitors in micro-batches of this many records or after
this long, whichever comes first (and before every scrape and label join): ingesting one record at
a time costs ~15 times more per record than a batch of hundreds."""

MAX_CLIENTS = 10_000
"""Client ids whose last loss report is remembered (each report is cumulative)."""

UNATTRIBUTED = "__unknown__"
"""Model label for rejections that cannot be tied to a configured model (bounds cardinality)."""


class Service:
    def __init__(self, config: Config, baselines: dict[str, Baseline] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self._baselines = {m.name: (baselines or {}).get(m.name) or self._load(m) for m in config.models}
        problems: list[str] = []
        for i, model in enumerate(config.models):
            problems += baseline_problems(model, self._baselines[model.name], f"models[{i}]")
        if problems:
            raise ConfigError(problems)
        self.monitors: dict[str, ModelMonitor] = self._fresh_monitors()
        self._state_dir = config.state.dir
        self._checkpoint_lock = threading.Lock()
        self._last_checkpoint = clock()
        self._checkpoint_duration = 0.0
        self._checkpoint_failures = 0
        self._unattributed: Counter[tuple[str, str]] = Counter()
        self._client_loss: Counter[tuple[str, str]] = Counter()
        self.proxy_stats: Callable[[], dict[str, Any]] | None = None
        """Set by ``mlmon proxy``: its request and monitoring counters, for /metrics."""
        self._clients: dict[tuple[str, str], dict[str, int]] = {}
        self.joiner = self._new_joiner()
        if self._state_dir is not None and \
                state.restore(self._state_dir, self.monitors, self.joiner.restore) == "aside":
            # Nothing half-loaded survives a bad checkpoint: fresh monitors and joiner.
            self.monitors, self.joiner = self._fresh_monitors(), self._new_joiner()
        self._lock = threading.Lock()
        self._event_lock = threading.Lock()
        self._event_batches: list[Batch] = []
        self._event_records = 0
        self._event_since = 0.0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.draining = False
        """Set on SIGTERM: /readyz answers 503 while in-flight requests finish."""
        self._checkpointer: threading.Thread | None = None
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = MlmonCollector(lambda: list(self.monitors.values()), self.unattributed_rejections,
                                        self._on_scrape, self.checkpoint_stats, events=self.event_stats)
        self.registry.register(self.collector)
        self.selfmon = SelfMonitor(self.registry, self.collector.text)
        self.offload = Offload(config, self._baselines, workers=config.server.ingest_workers)
        """Worker processes for large prediction batches; none run until the first one arrives."""

    def _new_joiner(self) -> EventJoiner:
        config = self.config
        return EventJoiner(config.events, known_models=[m.name for m in config.models],
                           feature_names=lambda name: ((m := config.model(name)) and m.feature_names) or None)

    def _fresh_monitors(self) -> dict[str, ModelMonitor]:
        return {m.name: ModelMonitor(m, self._baselines[m.name], self.clock) for m in self.config.models}

    @staticmethod
    def _load(model: ModelConfig) -> Baseline:
        if not model.baseline:
            raise ValueError(f"models[{model.name}].baseline: is required to run the model")
        return load_baseline(model.baseline)

    def monitor(self, name: str) -> ModelMonitor | None:
        return self.monitors.get(name)

    def ingest_batches(self, batches: list[Batch]) -> int:
        """Hand joined CloudEvent batches to their monitors; returns records ingested."""
        ingested = 0
        for batch in batches:
            monitor = self.monitors.get(batch.model)
            if monitor is None:
                self.count_unattributed("unknown_model", batch.size)
                continue
            ingested += monitor.ingest(batch).accepted
        return ingested

    def handle_event(self, event: InferenceEvent) -> dict[str, Any]:
        """One decoded CloudEvent: inference halves go to the joiner, Seldon feedback to the labels.

        Raises :class:`PayloadError` for an event that cannot be used; nothing is kept then.
        """
        if event.kind != "feedback":
            return {"ingested": self._buffer_events(self.joiner.add(event)), "pending": self.joiner.pending}
        self.flush_events()
        model = self.joiner.model_of(event)
        monitor = self.monitors.get(model) if model else None
        if monitor is None:
            raise PayloadError("ce-inferenceservicename", f"feedback for an unconfigured model {event.model!r}")
        puid, labels = seldon_feedback(event.body)
        base = puid or event.id
        ids = [base] if len(labels) == 1 else [f"{base}:{i}" for i in range(len(labels))]
        result = monitor.ingest_labels(ids, [self.joiner.rename_class(monitor.name, v) for v in labels])
        return {"matched": result.matched, "unmatched": result.unmatched, "duplicates": result.duplicates,
                "rejected": result.rejected}

    def _buffer_events(self, batches: list[Batch]) -> int:
        """Queue joined records for the next micro-batch; returns how many were queued."""
        records = sum(b.size for b in batches)
        if not batches:
            return 0
        now = time.monotonic()
        with self._event_lock:
            if not self._event_batches:
                self._event_since = now
            self._event_batches.extend(batches)
            self._event_records += records
            due = self._event_records >= EVENT_FLUSH_RECORDS or now - self._event_since >= EVENT_FLUSH_SECONDS
        if due:
            self.flush_events()
        return records

    def flush_events(self) -> int:
        """Ingest the queued event records now; returns records ingested."""
        with self._event_lock:
            batches, self._event_batches, self._event_records = self._event_batches, [], 0
        return self.ingest_batches(coalesce(batches)) if batches else 0

    def _on_scrape(self) -> None:
        self.flush_events()
        self.wake_if_stale()

    def record_client_loss(self, model: str, client_id: str, counts: dict[str, int]) -> None:
        """A client's cumulative loss counts; the increase since its last report is added.

        At most ``MAX_CLIENTS`` clients are tracked; the oldest one's counts are folded into a
        per-model total, so the exported counters never go down.
        """
        with self._lock:
            last = self._clients.pop((model, client_id), None) or {}
            for reason, value in counts.items():
                self._client_loss[(model, reason)] += max(0, value - last.get(reason, 0))
            self._clients[(model, client_id)] = {r: max(v, last.get(r, 0)) for r, v in counts.items()}
            while len(self._clients) > MAX_CLIENTS:
                del self._clients[next(iter(self._clients))]

    def client_loss(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self._client_loss)

    def event_stats(self) -> dict[str, Any]:
        """Joiner outcomes per model and what it buffers, for /metrics."""
        return {"outcomes": self.joiner.stats(), "pending": self.joiner.pending,
                "pending_bytes": self.joiner.pending_bytes, "client_loss": self.client_loss(),
                "proxy": self.proxy_stats() if self.proxy_stats else None}

    def count_unattributed(self, reason: str, count: int = 1) -> None:
        with self._lock:
            self._unattributed[(UNATTRIBUTED, reason)] += count

    def unattributed_rejections(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self._unattributed)

    # ---- evaluation timer --------------------------------------------------------------

    def evaluate_due(self) -> float:
        """Evaluate every monitor whose interval has passed; return seconds until the next is due."""
        now = self.clock()
        next_due = 60.0
        for monitor in self.monitors.values():
            interval = monitor.config.window.evaluation_interval_seconds
            last = monitor.evaluation.timestamp if monitor.evaluation else None
            if last is None or now - last >= interval:
                try:
                    monitor.evaluate(now)
                except Exception:  # one model's failure must not stop the others' evaluation
                    log.exception("evaluation of model %s failed", monitor.name)
                last = now
            next_due = min(next_due, max(0.05, last + interval - now))
        return next_due

    def wake_if_stale(self) -> None:
        now = self.clock()
        for monitor in self.monitors.values():
            ev = monitor.evaluation
            if ev is None or now - ev.timestamp > monitor.config.window.evaluation_interval_seconds:
                self._wake.set()
                return

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._buffer_events(self.joiner.flush())  # requests whose response never came
                self.flush_events()
            except Exception:
                log.exception("flushing inference events failed")
            wait = min(self.evaluate_due(), self.joiner.ttl / 4, EVENT_FLUSH_SECONDS)
            self._wake.wait(wait)
            self._wake.clear()

    def start(self) -> None:
        keep_freed_buffers()
        self._stop.clear()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="mlmon-evaluator", daemon=True)
            self._thread.start()
        if self._state_dir is not None and self._checkpointer is None:
            self._checkpointer = threading.Thread(target=self._checkpoint_loop, name="mlmon-checkpointer",
                                                  daemon=True)
            self._checkpointer.start()

    def stop(self) -> None:
        """Stop the timers and write a last checkpoint, so any clean stop keeps the state."""
        self._stop.set()
        self._wake.set()
        for thread in (self._thread, self._checkpointer):
            if thread is not None:
                thread.join(timeout=5)
        self._thread = self._checkpointer = None
        self.offload.close()
        self.flush_events()
        self.checkpoint()

    # ---- checkpoints -------------------------------------------------------------------

    def checkpoint(self) -> bool:
        """Write the state of every model now; False (logged and counted) when it failed or is off."""
        if self._state_dir is None:
            return False
        with self._checkpoint_lock:
            started = time.monotonic()
            try:
                state.write(self._state_dir, self.monitors, self.clock(), self.joiner.state())
            except Exception:  # a full disk must not stop monitoring; the failure is exported
                self._checkpoint_failures += 1
                log.exception("checkpoint to %s failed", self._state_dir)
                return False
            self._checkpoint_duration = time.monotonic() - started
            self._last_checkpoint = self.clock()
            return True

    def checkpoint_stats(self) -> state.CheckpointStats | None:
        if self._state_dir is None:
            return None
        return state.CheckpointStats(max(0.0, self.clock() - self._last_checkpoint), self._checkpoint_duration,
                                     self._checkpoint_failures)

    def _checkpoint_loop(self) -> None:
        while not self._stop.wait(self.config.state.checkpoint_interval_seconds):
            self.checkpoint()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()
