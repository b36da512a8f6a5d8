"""mlmon's own JSON API: the row form and the columnar form of ``POST /v1/predictions``.

Structure is checked record by record: a record with a malformed id, prediction, latency or
error flag is rejected alone (its index and reason are returned) and the rest of the batch is
kept. Feature *values* are not judged here; the monitor counts them as data-quality problems.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import repeat
from typing import Any

import numpy as np

from exporter.batch import Batch, Coded, PayloadError, Rejection, all_strings, prediction_problem

DEFAULT_VERSION = "unknown"
_MAX_NAME = 128


def _name(data: dict[str, Any], key: str, default: str | None = None) -> str:
    value = data.get(key, default)
    if value is None:
        raise PayloadError(key, "is required")
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value) or len(str(value)) > _MAX_NAME:
        raise PayloadError(key, f"must be a non-empty string of at most {_MAX_NAME} characters")
    return str(value)


MAX_LATENCY_SECONDS = 86_400.0
"""A latency above a day is not a latency; accepting 1e308 would make the histogram's sum +Inf for good."""
_LATENCY_PROBLEM = f"must be a number of seconds from 0 to {MAX_LATENCY_SECONDS:,.0f}"


def _check_latency(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= MAX_LATENCY_SECONDS:
        return _LATENCY_PROBLEM
    return None


def _check_error(value: Any) -> str | None:
    if value is None or isinstance(value, (bool, str)):
        return None
    return "must be true/false (or an error message)"


def _check_id(value: Any) -> str | None:
    if value is None or (isinstance(value, (str, int)) and not isinstance(value, bool) and len(str(value)) <= 256):
        return None
    return "must be a string or integer of at most 256 characters"


def _check_groups(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, dict) or any(isinstance(v, (dict, list)) for v in value.values()):
        return "must be a mapping of attribute to a scalar group value"
    return None


def _all_valid(key: str, col: Any) -> bool:
    """Whole-column check for the common shapes, so a clean column costs no per-value calls."""
    if key == "ids":
        return all_strings(col) and max(map(len, col), default=0) <= 256
    if key == "predictions" and all_strings(col):
        return True
    types = set(map(type, col))
    if key == "predictions":
        if types <= {str, bool}:
            return True
        return types <= {int, float} and bool(np.isfinite(np.asarray(col, dtype=np.float64)).all())
    if key == "errors":
        return types <= {bool, type(None)}
    if key == "groups":
        return types == {type(None)}
    return False


def _id_strings(ids: list[Any]) -> list[str | None]:
    if all_strings(ids):
        return ids
    return [None if v is None else str(v) for v in ids]


_CHECKS = (("ids", _check_id), ("predictions", prediction_problem), ("latency_seconds", _check_latency),
           ("errors", _check_error))
_ROW_KEYS = {"ids": "id", "predictions": "prediction", "errors": "error", "latency_seconds": "latency_seconds"}


class _Columns:
    """The record fields of either form as columns, checked column by column: a clean column costs
    one C-level pass; a failing value refuses its record alone, under ``where(key, i)``."""

    def __init__(self, n: int, columns: Mapping[str, list[Any] | np.ndarray | None], groups: dict[str, list[Any]],
                 where: Any) -> None:
        self.n = n
        self.columns = columns
        self.groups = groups
        self.bad: dict[int, Rejection] = {}
        self.latency: np.ndarray | None = None  # the latencies as floats, when every one is a number
        for key, check in _CHECKS:
            col = columns.get(key)
            if col is None:
                continue
            if key == "latency_seconds" and (isinstance(col, np.ndarray) or set(map(type, col)) <= {int, float}):
                self.latency = arr = np.asarray(col, dtype=np.float64)
                for i in np.flatnonzero(~((arr >= 0) & (arr <= MAX_LATENCY_SECONDS))).tolist():  # NaN fails both
                    self.refuse(i, where(key, i), _LATENCY_PROBLEM)
                continue
            if _all_valid(key, col):
                continue
            for i, v in enumerate(col):
                why = check(v)
                if why is not None:
                    self.refuse(i, where(key, i), why)

    def refuse(self, i: int, field: str, reason: str) -> None:
        self.bad.setdefault(i, Rejection(i, field, reason))

    def batch(self, model: str, version: str, features: dict[str, list[Any]], positions: list[int] | None = None,
              refused: list[Rejection] | None = None) -> Batch:
        """The kept records; ``positions`` maps row i back to its index in the request."""
        bad = self.bad
        keep = None
        if bad:
            keep = np.ones(self.n, dtype=bool)
            keep[list(bad)] = False

        def take(col: Any) -> Any:  # a list, or an array read by fastjson
            if keep is None:
                return col
            if isinstance(col, np.ndarray):
                return col[keep]
            if isinstance(col, Coded):
                return col.take(keep)
            return [v for v, k in zip(col, keep, strict=True) if k]

        size = self.n - len(bad)
        ids, preds = self.columns.get("ids"), self.columns.get("predictions")
        latency, errors = self.columns.get("latency_seconds"), self.columns.get("errors")
        rejected = [r if positions is None else Rejection(positions[i], r.field, r.reason)
                    for i, r in sorted(bad.items())]
        if refused:
            rejected = sorted([*refused, *rejected], key=lambda r: r.index)
        return Batch(
            model=model, version=version, size=size,
            features={name: take(col) for name, col in features.items()},
            predictions=None if preds is None else take(preds),
            ids=None if ids is None else _id_strings(take(ids)),
            latency_seconds=np.full(size, np.nan) if latency is None else (
                np.array([np.nan if v is None else v for v in take(latency)], dtype=np.float64)
                if self.latency is None else self.latency if keep is None else self.latency[keep]),
            error=np.zeros(size, dtype=bool) if errors is None
            else np.array([bool(v) for v in take(errors)], dtype=bool),
            groups={g: take(col) for g, col in self.groups.items()},
            rejected=rejected,
        )


def parse_rows(data: dict[str, Any], model: str, version: str) -> Batch:
    """The row form, turned into columns first (C-level ``map(dict.get)`` per field), so that it
    shares the columnar form's checks: about twice as fast as judging record by record."""
    records = data.get("records")
    if not isinstance(records, list):
        raise PayloadError("records", "must be a list of records")
    refused: list[Rejection] = []
    positions: list[int] | None = None
    feats: list[Any] = list(map(dict.get, records, repeat("features"))) if set(map(type, records)) <= {dict} else []
    if len(feats) < len(records) or set(map(type, feats)) - {dict}:
        ok = []
        for i, rec in enumerate(records):
            if not isinstance(rec, dict):
                refused.append(Rejection(i, f"records[{i}]", "must be an object"))
            elif not isinstance(rec.get("features"), dict):
                refused.append(Rejection(i, f"records[{i}].features", "must be an object of feature values"))
            else:
                ok.append(i)
        positions = ok
        records = [records[i] for i in ok]
        feats = [rec["features"] for rec in records]
    pos = positions

    def where(key: str, i: int) -> str:
        return f"records[{i if pos is None else pos[i]}].{_ROW_KEYS[key]}"

    columns = {key: list(map(dict.get, records, repeat(row_key))) for key, row_key in _ROW_KEYS.items()}
    cols = _Columns(len(records), columns, {}, where)
    raw_groups = list(map(dict.get, records, repeat("groups")))
    if not _all_valid("groups", raw_groups):
        for i, g in enumerate(raw_groups):
            why = _check_groups(g)
            if why is not None:
                cols.refuse(i, f"records[{i if pos is None else pos[i]}].groups", why)
        kept = [g for i, g in enumerate(raw_groups) if i not in cols.bad and g]
        cols.groups = {str(name): [g.get(name) if isinstance(g, dict) else None for g in raw_groups]
                       for name in sorted(set().union(*kept))}
    names: set[str] = set().union(*(feats if not cols.bad else [f for i, f in enumerate(feats) if i not in cols.bad]))
    features = {n: list(map(dict.get, feats, repeat(n))) for n in sorted(names)}
    return cols.batch(model, version, features, positions, refused)


def _column(data: dict[str, Any], key: str, n: int | None) -> list[Any] | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, list):
        raise PayloadError(key, "must be a list with one entry per record")
    if n is not None and len(value) != n:
        raise _length_error(key, len(value), n)
    return value


def _length_error(key: str, got: int, n: int) -> PayloadError:
    return PayloadError(key, f"has {got} entries but the batch has {n} records")


def parse_columns(data: dict[str, Any], model: str, version: str) -> Batch:
    """The columnar form; a feature column may be a float64 array (``fastjson``, ``arrow``) or a
    ``Coded`` column (``arrow``)."""
    feats = data.get("features")
    if not isinstance(feats, dict):
        raise PayloadError("features", "must be an object of feature name → list of values")
    n: int | None = None
    for name, col in feats.items():
        if not isinstance(col, (list, np.ndarray, Coded)):
            raise PayloadError(f"features.{name}", "must be a list with one value per record")
        if n is None:
            n = len(col)
        elif len(col) != n:
            raise PayloadError(f"features.{name}", f"has {len(col)} values but other features have {n}")
    ids, preds = _column(data, "ids", n), _column(data, "predictions", n)
    if n is None:  # no features: ids and predictions must agree with each other
        n = len(ids if ids is not None else preds or [])
        _column(data, "predictions", n)
    latency = data.get("latency_seconds")
    if not isinstance(latency, np.ndarray):  # an array: read by fastjson, as numbers
        latency = _column(data, "latency_seconds", n)
    elif n is not None and len(latency) != n:
        raise _length_error("latency_seconds", len(latency), n)
    columns = {"ids": ids, "predictions": preds, "latency_seconds": latency, "errors": _column(data, "errors", n)}
    raw_groups = data.get("groups") or {}
    if not isinstance(raw_groups, dict):
        raise PayloadError("groups", "must be an object of attribute → list of group values")
    groups = {str(g): _column(raw_groups, g, n) or [None] * n for g in raw_groups}
    cols = _Columns(n, columns, groups, lambda key, i: f"{key}[{i}]")
    for g, col in groups.items():
        for i, v in enumerate(col):
            if isinstance(v, (dict, list)):
                cols.refuse(i, f"groups.{g}[{i}]", "must be a scalar group value")
    return cols.batch(model, version, {str(name): col for name, col in feats.items()})


def parse_predictions(data: Any) -> Batch:
    """Dispatch on the shape: ``records`` → row form, ``features`` → columnar form."""
    if not isinstance(data, dict):
        raise PayloadError("$", "must be a JSON object")
    model = _name(data, "model")
    version = _name(data, "version", DEFAULT_VERSION)
    if "records" in data and "features" in data:
        raise PayloadError("$", "use either 'records' (row form) or 'features' (columnar form), not both")
    if "records" in data:
        return parse_rows(data, model, version)
    if "features" in data:
        return parse_columns(data, model, version)
    raise PayloadError("records", "is required (row form), or 'features' (columnar form)")
