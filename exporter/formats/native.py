"""mlmon's own JSON API: the row form and the columnar form of ``POST /v1/predictions``.

Structure is checked record by record: a record with a malformed id, prediction, latency or
error flag is rejected alone (its index and reason are returned) and the rest of the batch is
kept. Feature *values* are not judged here; the monitor counts them as data-quality problems.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from exporter.batch import Batch, PayloadError, Rejection, prediction_problem

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


_RECORD_CHECKS = (("id", _check_id), ("prediction", prediction_problem),
                  ("latency_seconds", _check_latency), ("error", _check_error), ("groups", _check_groups))


def parse_rows(data: dict[str, Any], model: str, version: str) -> Batch:
    records = data.get("records")
    if not isinstance(records, list):
        raise PayloadError("records", "must be a list of records")
    kept: list[dict[str, Any]] = []
    rejected: list[Rejection] = []
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            rejected.append(Rejection(i, f"records[{i}]", "must be an object"))
            continue
        feats = rec.get("features")
        if not isinstance(feats, dict):
            rejected.append(Rejection(i, f"records[{i}].features", "must be an object of feature values"))
            continue
        problem = next(((k, why) for k, check in _RECORD_CHECKS if (why := check(rec.get(k))) is not None), None)
        if problem:
            rejected.append(Rejection(i, f"records[{i}].{problem[0]}", problem[1]))
            continue
        kept.append(rec)
    features_list = [rec["features"] for rec in kept]
    names: set[str] = set().union(*(f.keys() for f in features_list)) if features_list else set()
    group_names: set[str] = set().union(*((r.get("groups") or {}).keys() for r in kept)) if kept else set()
    latency = [r.get("latency_seconds") for r in kept]
    return Batch(
        model=model, version=version, size=len(kept),
        features={n: [f.get(n) for f in features_list] for n in sorted(names)},
        predictions=[r.get("prediction") for r in kept],
        ids=[None if r.get("id") is None else str(r["id"]) for r in kept],
        latency_seconds=np.array([np.nan if v is None else v for v in latency], dtype=np.float64),
        error=np.array([bool(r.get("error")) for r in kept], dtype=bool),
        groups={g: [(r.get("groups") or {}).get(g) for r in kept] for g in sorted(group_names)},
        rejected=rejected,
    )


def _column(data: dict[str, Any], key: str, n: int | None) -> list[Any] | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, list):
        raise PayloadError(key, "must be a list with one entry per record")
    if n is not None and len(value) != n:
        raise PayloadError(key, f"has {len(value)} entries but the batch has {n} records")
    return value


def _all_valid(key: str, col: list[Any]) -> bool:
    """Whole-column check for the common shapes, so a clean column costs no per-value calls."""
    types = set(map(type, col))
    if key == "ids":
        return types == {str} and max(map(len, col), default=0) <= 256
    if key == "predictions":
        if types <= {str, bool}:
            return True
        return types <= {int, float} and bool(np.isfinite(np.asarray(col, dtype=np.float64)).all())
    if key == "errors":
        return types <= {bool, type(None)}
    return False


def _id_strings(ids: list[Any]) -> list[str | None]:
    if set(map(type, ids)) == {str}:
        return ids
    return [None if v is None else str(v) for v in ids]


def parse_columns(data: dict[str, Any], model: str, version: str) -> Batch:
    feats = data.get("features")
    if not isinstance(feats, dict):
        raise PayloadError("features", "must be an object of feature name → list of values")
    n: int | None = None
    for name, col in feats.items():
        if not isinstance(col, list):
            raise PayloadError(f"features.{name}", "must be a list with one value per record")
        if n is None:
            n = len(col)
        elif len(col) != n:
            raise PayloadError(f"features.{name}", f"has {len(col)} values but other features have {n}")
    ids, preds = _column(data, "ids", n), _column(data, "predictions", n)
    if n is None:  # no features: ids and predictions must agree with each other
        n = len(ids if ids is not None else preds or [])
        _column(data, "predictions", n)
    latency, errors = _column(data, "latency_seconds", n), _column(data, "errors", n)
    raw_groups = data.get("groups") or {}
    if not isinstance(raw_groups, dict):
        raise PayloadError("groups", "must be an object of attribute → list of group values")
    groups = {str(g): _column(raw_groups, g, n) or [None] * n for g in raw_groups}

    bad: dict[int, Rejection] = {}
    for key, col, check in (("ids", ids, _check_id), ("predictions", preds, prediction_problem),
                            ("latency_seconds", latency, _check_latency), ("errors", errors, _check_error)):
        if col is None or _all_valid(key, col):
            continue
        if key == "latency_seconds" and set(map(type, col)) <= {int, float}:
            arr = np.asarray(col, dtype=np.float64)
            invalid = np.flatnonzero(~((arr >= 0) & (arr <= MAX_LATENCY_SECONDS)))  # NaN fails both
            for i in invalid.tolist():
                bad.setdefault(i, Rejection(i, f"latency_seconds[{i}]", _LATENCY_PROBLEM))
            continue
        for i, v in enumerate(col):
            why = check(v)
            if why is not None:
                bad.setdefault(i, Rejection(i, f"{key}[{i}]", why))
    for g, col in groups.items():
        for i, v in enumerate(col):
            if isinstance(v, (dict, list)):
                bad.setdefault(i, Rejection(i, f"groups.{g}[{i}]", "must be a scalar group value"))

    keep = None
    if bad:
        keep = np.ones(n, dtype=bool)
        keep[list(bad)] = False

    def take(col: list[Any]) -> list[Any]:
        if keep is None:
            return col
        return [v for v, k in zip(col, keep, strict=True) if k]

    size = n - len(bad)
    return Batch(
        model=model, version=version, size=size,
        features={str(name): take(col) for name, col in feats.items()},
        predictions=None if preds is None else take(preds),
        ids=None if ids is None else _id_strings(take(ids)),
        latency_seconds=np.full(size, np.nan) if latency is None else np.array(
            [np.nan if v is None else v for v in take(latency)], dtype=np.float64),
        error=np.zeros(size, dtype=bool) if errors is None else np.array([bool(v) for v in take(errors)], dtype=bool),
        groups={g: take(col) for g, col in groups.items()},
        rejected=[bad[i] for i in sorted(bad)],
    )


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
