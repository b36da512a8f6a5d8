"""``GET /v1/models``: a model's state as JSON, built from its snapshot (the monitor only keeps state)."""

from __future__ import annotations

from typing import Any

from exporter.monitor import ModelMonitor
from exporter.profile import PREDICTION


def model_status(monitor: ModelMonitor) -> dict[str, Any]:
    snap = monitor.snapshot()
    ev = snap.evaluation
    window = monitor.config.window
    outcomes = snap.outcomes
    quality = None if ev is None else ev.quality
    return {
        "model": snap.model,
        "task": monitor.baseline.task,
        "features": [f.feature for f in snap.features if f.feature != PREDICTION],
        "versions": {v: {"predictions": s.predictions, "errors": s.errors, "first_seen": s.first_seen,
                         "last_seen": s.last_seen} for v, s in snap.versions.items()},
        "window": {"seconds": window.window_seconds, "bucket_seconds": window.bucket_seconds,
                   "samples": snap.window_samples, "min_samples": snap.window_min_samples},
        "last_evaluation": None if ev is None else {
            "timestamp": ev.timestamp, "duration_seconds": ev.duration_seconds, "samples": ev.samples,
            "drifted_features": list(ev.drifted),
            "prediction_drift": next((f.detected for f in ev.features if f.feature == PREDICTION), None),
            "features_below_min_samples": [f.feature for f in ev.features if f.detected is None],
        },
        "rejected": snap.rejected,
        "unknown_features": list(snap.unknown_feature_names),
        "labels": None if outcomes is None else {
            "pending": outcomes.pending, "joined": outcomes.counters.labels,
            "unmatched": outcomes.counters.unmatched},
        "quality": None if quality is None else quality.per_version,
        "estimated_accuracy": None if quality is None else quality.estimated_accuracy,
        "health": None if ev is None else {"score": ev.health, "components": ev.health_components},
    }
