"""The columnar body of ``POST /v1/predictions`` with its numeric feature columns read straight into arrays.

orjson builds a Python float for every number of a batch (20,000 in 1,000 records × 20 features)
and the monitor then copies them back into a float64 array: together about a third of a columnar
batch's cost. simdjson copies an array of numbers into a float64 buffer without a Python object
per value. :func:`load_columnar` returns what :func:`~exporter.formats._common.load_json` would,
except that the model's numeric feature columns and the latencies are float64 arrays; for anything else (not a
columnar body, invalid JSON, NaN tokens, integers beyond 64 bits, a repeated key, an array nested
in a numeric column) it returns None and the caller parses with ``load_json``, so every reply and
every error stays exactly what it was.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

import numpy as np

try:
    import simdjson
except ImportError:  # an optional speed-up: without it every body takes load_json
    simdjson = None  # type: ignore[assignment]

_OPEN = ord("[")


def _plain(value: Any) -> Any:
    """A simdjson proxy as the Python value orjson would have built."""
    if isinstance(value, simdjson.Array):
        return value.as_list()
    if isinstance(value, simdjson.Object):
        return value.as_dict()
    return value


def _brackets(value: Any) -> int:
    """How many ``[`` the JSON text of a parsed value holds: one per array, plus those inside strings."""
    if isinstance(value, str):
        return value.count("[")
    if isinstance(value, list):
        try:
            return 1 + "".join(value).count("[")  # a column of strings, in one C pass
        except TypeError:
            pass
        try:
            sum(value, 0.0)  # a column of numbers holds no "[" beyond its own
        except (TypeError, OverflowError):
            return 1 + sum(_brackets(v) for v in value if isinstance(v, (str, list, dict)))
        return 1
    if isinstance(value, dict):
        return sum(k.count("[") + _brackets(v) for k, v in value.items())
    return 0


def _read(value: Any, numbers: bool) -> Any:
    """A value as orjson would build it, or a float64 array if ``numbers`` and it is an array of
    numbers only."""
    if numbers and isinstance(value, simdjson.Array):
        try:
            column = np.frombuffer(value.as_buffer(of_type="d"), dtype=np.float64)
        except TypeError:  # null, a boolean or a string among the numbers: judged value by value later
            pass
        else:
            if column.size == len(value):
                return column
    return _plain(value)


def _accounted(body: bytes, keys: list[str], values: list[Any]) -> bool:
    """Whether every ``[`` of ``body`` belongs to the parsed ``keys`` and ``values`` (an array read
    as a buffer counts one). The usual body has no ``[`` but its columns' own, which settles it
    without looking into a string; otherwise every string and nested value is counted."""
    found = int(np.count_nonzero(np.frombuffer(body, dtype=np.uint8) == _OPEN))
    if found == sum(isinstance(v, (list, np.ndarray)) for v in values):
        return True
    return found == sum(k.count("[") for k in keys) + sum(
        1 if isinstance(v, np.ndarray) else _brackets(v) for v in values)


def _keys(obj: Any) -> list[str] | None:
    """The object's keys, or None when one repeats (orjson keeps the last value, a proxy the first)."""
    keys = list(obj)
    return keys if len(set(keys)) == len(keys) else None


def load_columnar(body: bytes, numeric_features: Callable[[str], Collection[str]]) -> dict[str, Any] | None:
    """``body`` parsed as orjson would, with the numeric features (``numeric_features(model)``) and
    the latencies as float64 arrays; None when the body is not a plain columnar document (see the module docstring).

    simdjson flattens nested arrays into the buffer, so a numeric column holding ``[1]`` would pass
    for a number. Every ``[`` in the body is therefore accounted for (:func:`_accounted`): one per
    numeric column read as a buffer, and those of every other value, counted on its parsed form. A
    nested array anywhere in a numeric column leaves the count short and the body goes to ``load_json``.
    """
    if simdjson is None:
        return None
    try:
        return _columnar(body, numeric_features)
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError):  # ValueError covers invalid JSON and UTF-8
        # e.g. a key written with escapes, which simdjson iterates decoded but looks up as written
        return None


def _columnar(body: bytes, numeric_features: Callable[[str], Collection[str]]) -> dict[str, Any] | None:
    doc = simdjson.Parser().parse(body)
    if not isinstance(doc, simdjson.Object) or "features" not in doc or "records" in doc:
        return None
    keys = _keys(doc)
    model = doc.get("model")
    features = doc["features"]
    if keys is None or not isinstance(features, simdjson.Object) or not isinstance(model, str):
        return None
    names = _keys(features)
    if names is None:
        return None
    numeric = numeric_features(model)
    out = {key: _read(doc[key], key == "latency_seconds") for key in keys if key != "features"}
    columns = {name: _read(features[name], name in numeric) for name in names}
    if not _accounted(body, keys + names, [*out.values(), *columns.values()]):
        return None
    out["features"] = columns
    return out
