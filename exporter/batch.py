"""The columnar batch every wire format is parsed into.

Parsers validate structure only; they keep raw feature values as they came so that the
monitor can count data-quality problems (a string in a numeric feature, a NaN) instead of
the parser dropping them silently.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def all_strings(values: list[Any]) -> bool:
    """Whether every value is a ``str``: one C pass (``str.join`` refuses anything else), about
    4× cheaper than collecting the set of types."""
    try:
        "".join(values)
    except TypeError:
        return False
    return True


class PayloadError(ValueError):
    """The request as a whole cannot be used (malformed JSON, wrong top-level shape).

    Answered with HTTP 400; ``field`` is a JSON path such as ``features.age``.
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class Rejection:
    """One record refused by a parser or the monitor; the rest of its batch is kept."""

    index: int
    field: str
    reason: str
    code: str = "invalid_record"

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "field": self.field, "reason": self.reason}


@dataclass(frozen=True)
class Coded:
    """A column as codes into its distinct values, -1 for null: how an Arrow dictionary array
    arrives (exporter/formats/arrow.py). The monitor judges each distinct value once."""

    codes: np.ndarray
    values: list[Any]

    def __len__(self) -> int:
        return int(self.codes.size)

    def __iter__(self) -> Iterator[Any]:
        """The values record by record (None for null), as the JSON form would have listed them."""
        values = [*self.values, None]
        return iter([values[c] for c in self.codes.tolist()])

    def take(self, keep: np.ndarray) -> Coded:
        return Coded(self.codes[keep], self.values)


_UNSET_FLOAT = np.empty(0, dtype=np.float64)
_UNSET_BOOL = np.empty(0, dtype=bool)
"""Defaults of the optional columns, replaced in ``__post_init__`` by a column of ``size``."""


@dataclass
class Batch:
    """Records of one model and version, column by column.

    Every column has ``size`` entries and holds only the records that were kept;
    ``rejected`` names the refused ones by their index in the original request.

    ``predictions`` entries are a class label (str/int/bool), a number (score or
    regression output), or a mapping ``{class: probability}`` for classifiers that
    send probabilities; ``None`` where the record carried no prediction.
    """

    model: str
    version: str
    size: int
    features: Mapping[str, list[Any] | np.ndarray | Coded] = field(default_factory=dict)
    predictions: list[Any] | None = None
    ids: list[str | None] | None = None
    latency_seconds: np.ndarray = field(default_factory=lambda: _UNSET_FLOAT)
    """Seconds per record, NaN where not reported; left out, no record reported one."""
    error: np.ndarray = field(default_factory=lambda: _UNSET_BOOL)
    """True where the model server marked the record failed; left out, none was."""
    groups: dict[str, list[Any]] = field(default_factory=dict)
    rejected: list[Rejection] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.latency_seconds is _UNSET_FLOAT:
            self.latency_seconds = np.full(self.size, np.nan)
        if self.error is _UNSET_BOOL:
            self.error = np.zeros(self.size, dtype=bool)


def prediction_problem(value: Any) -> str | None:
    """None if a prediction has one of the shapes ``Batch`` documents, else why not.

    Every parser uses this, so a prediction means the same whatever the wire format.
    """
    if value is None or isinstance(value, (str, bool)):
        return None
    if isinstance(value, (int, float)):
        return None if math.isfinite(value) else "must be a finite number"
    if isinstance(value, dict):
        if not value:
            return "must not be an empty mapping"
        for k, p in value.items():
            if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
                return f"probability of class {k!r} must be a number in [0, 1]"
        return None
    if isinstance(value, list):
        if not value or any(isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1 for p in value):
            return "a list prediction must hold class probabilities in [0, 1]"
        return None
    return "must be a class label, a number, or a mapping of class to probability"
