"""A small logistic-regression churn model in numpy, trained deterministically from ``world.py``.

Training takes well under a second, so the server trains at start-up instead of shipping a
weights file; ``train.py`` writes the same model's training data for ``mlmon baseline``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import numpy as np
from world import CONTRACTS, FEATURES, NUMERIC, sample_customer, sample_label

SEED = 7


@dataclass(frozen=True)
class LogisticModel:
    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: float

    def _matrix(self, rows: list[dict[str, Any]]) -> np.ndarray:
        numeric = np.array([[_number(r.get(f), f) for f in NUMERIC] for r in rows], dtype=np.float64)
        numeric = np.where(np.isnan(numeric), self.mean, numeric)  # impute missing with the training mean
        onehot = np.array([[float(r.get("contract") == c) for c in CONTRACTS] for r in rows])
        return np.hstack([(numeric - self.mean) / self.scale, onehot])

    def predict_proba(self, rows: list[dict[str, Any]]) -> np.ndarray:
        """Probability of churn (class "1") per row; raises ValueError on a malformed row."""
        for r in rows:
            unknown = set(r) - set(FEATURES)
            if unknown:
                raise ValueError(f"unknown features: {sorted(unknown)}")
        z = self._matrix(rows) @ self.weights + self.bias
        return 1.0 / (1.0 + np.exp(-z))


def _number(value: Any, name: str) -> float:
    if value is None:
        return float("nan")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"feature {name!r} must be a number, not {value!r}")
    return float(value)


def training_data(rows: int, seed: int) -> tuple[list[dict[str, Any]], list[dict[str, str]], np.ndarray]:
    rng = random.Random(seed)
    feats, groups, labels = [], [], []
    for _ in range(rows):
        f, g = sample_customer(rng)
        feats.append(f)
        groups.append(g)
        labels.append(sample_label(rng, f, g))
    return feats, groups, np.array(labels, dtype=np.float64)


def train(rows: int = 20_000, seed: int = SEED, epochs: int = 400, lr: float = 0.5, l2: float = 1e-3) -> LogisticModel:
    feats, _, y = training_data(rows, seed)
    numeric = np.array([[f[n] for n in NUMERIC] for f in feats], dtype=np.float64)
    mean, scale = numeric.mean(axis=0), numeric.std(axis=0)
    model = LogisticModel(mean, scale, np.zeros(len(NUMERIC) + len(CONTRACTS)), 0.0)
    x = model._matrix(feats)
    w, b = np.zeros(x.shape[1]), 0.0
    for _ in range(epochs):  # full-batch gradient descent: small data, deterministic result
        p = 1.0 / (1.0 + np.exp(-(x @ w + b)))
        w -= lr * (x.T @ (p - y) / len(y) + l2 * w)
        b -= lr * float(np.mean(p - y))
    return LogisticModel(mean, scale, w, b)
