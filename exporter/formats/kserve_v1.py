"""The ``instances`` / ``predictions`` family: KServe v1, TF Serving predict/classify/regress, Seldon v1.

These protocols share one idea — a list of records, or named columns — in several spellings:

* KServe v1 and TF Serving row form: ``{"instances": [...]}``. A record is a list of values
  (positional features, named from the model's ``feature_names`` or ``f0..f{k-1}``), a scalar (one
  positional feature), or an object ``{input: value}`` (named features; a name missing from a
  record is a missing value).
* TF Serving columnar form: ``{"inputs": {name: [one entry per record]}}``, or ``{"inputs": [...]}``
  for a single unnamed tensor (read like ``instances``). TF classify/regress: ``{"examples": [...]}``.
* Seldon v1: ``{"data": {"names": [...], "ndarray": [[...]]}}`` or ``"tensor": {"shape", "values"}``;
  ``data.names`` name the columns and win over the configured feature names.

A value that is itself a vector stays a list (the monitor counts it as a type error on a scalar
feature), except that a one-element vector ``[x]`` is read as ``x``. TF Serving's ``{"b64": "..."}``
binary values are kept as the opaque base64 string.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from exporter.batch import PayloadError
from exporter.formats._common import (
    Columns,
    cell,
    column_names,
    ensure_json,
    label_scores,
    load_json,
    positional_columns,
    prediction_cell,
    require_list,
    require_object,
    reshape,
    type_name,
    unwrap_b64,
)

REQUEST_KEYS = ("instances", "inputs", "examples", "data")
RESPONSE_KEYS = ("predictions", "outputs", "results", "data")
_SELDON_OPAQUE = ("jsonData", "strData", "binData")
_NO_TABLE = ("holds no table: expected {column: [values]}, [{feature: value}, ...], [[values], ...] "
             "or {feature: value}")


def _keys(body: dict[str, Any]) -> str:
    keys = list(body)[:10]
    return ", ".join(repr(k) for k in keys) if keys else "none"


def _names(raw: Any, field: str) -> list[str] | None:
    if raw is None:
        return None
    raw = require_list(raw, field)
    if not all(isinstance(n, str) for n in raw):
        raise PayloadError(field, "expected an array of strings")
    return raw or None


def _rows(items: Any, field: str, feature_names: Sequence[str] | None,
          names: list[str] | None = None, names_field: str = "") -> tuple[int, Columns]:
    """Records → columns. ``names`` (sent in the payload) win over the configured names."""
    items = require_list(items, field)
    n = len(items)
    if n == 0:
        return 0, {}
    items = [unwrap_b64(v) for v in items]
    first = items[0]
    if isinstance(first, dict):
        for i, row in enumerate(items):
            if not isinstance(row, dict):
                raise PayloadError(f"{field}[{i}]", f"expected an object like {field}[0], got {type_name(row)}")
        keys = dict.fromkeys(k for row in items for k in row)
        return n, {k: [cell(row.get(k)) for row in items] for k in keys}
    if isinstance(first, list):
        width = len(first)
        for i, row in enumerate(items):
            if not isinstance(row, list):
                raise PayloadError(f"{field}[{i}]", f"expected an array like {field}[0], got {type_name(row)}")
            if len(row) != width:
                raise PayloadError(f"{field}[{i}]", f"has {len(row)} values, but {field}[0] has {width}")
        if names:
            if len(names) != width:
                raise PayloadError(names_field, f"{len(names)} names, but records have {width} values")
            if len(set(names)) != len(names):
                raise PayloadError(names_field, "names must be unique")
            cols = names
        else:
            cols = column_names(width, feature_names, field)
        return n, positional_columns(items, width, cols)
    for i, v in enumerate(items):
        if isinstance(v, (dict, list)):
            raise PayloadError(f"{field}[{i}]", f"expected a scalar like {field}[0], got {type_name(v)}")
    if names:
        if len(names) != 1:
            raise PayloadError(names_field, f"{len(names)} names, but each record is a single value")
        cols = names
    else:
        cols = column_names(1, feature_names, field)
    return n, {cols[0]: items}


def _named_columns(inputs: dict[str, Any], field: str) -> tuple[int, Columns]:
    """TF Serving columnar ``inputs``: every named input lists one entry per record."""
    n: int | None = None
    first = ""
    columns: Columns = {}
    for name, values in inputs.items():
        if not isinstance(values, list):
            raise PayloadError(f"{field}.{name}", f"expected an array with one entry per record, "
                                                  f"got {type_name(values)}")
        if n is None:
            n, first = len(values), name
        elif len(values) != n:
            raise PayloadError(f"{field}.{name}", f"{len(values)} records, but {field}.{first} has {n}; "
                                                  "named inputs must share the batch dimension")
        columns[name] = [cell(v) for v in values]
    return n or 0, columns


def _seldon_tensor(data: dict[str, Any], key: str) -> list[Any]:
    """Seldon's ``{"shape": [...], "values": [...]}`` → records (nested lists)."""
    field = f"data.{key}"
    tensor = data[key]
    if not isinstance(tensor, dict):
        raise PayloadError(field, f"expected an object with shape and values, got {type_name(tensor)}")
    shape = require_list(tensor.get("shape"), f"{field}.shape")
    if not shape or len(shape) > 32 or any(isinstance(d, bool) or not isinstance(d, int) or d < 0 for d in shape):
        raise PayloadError(f"{field}.shape", "expected an array of 1 to 32 non-negative integers")
    if shape[0] and 0 in shape[1:]:
        raise PayloadError(f"{field}.shape", f"dimension {shape.index(0, 1)} is 0: the records carry no values")
    values = require_list(tensor.get("values"), f"{field}.values")
    if any(isinstance(v, (list, dict)) for v in values):
        raise PayloadError(f"{field}.values", "expected a flat array of numbers")
    if math.prod(shape) != len(values):
        raise PayloadError(f"{field}.shape", f"product {math.prod(shape)} does not match {len(values)} values")
    return reshape(values, shape)


def _json_table(value: Any, field: str) -> tuple[list[Any], list[str] | None]:
    """Seldon ``jsonData`` (or JSON inside ``strData``) → records, when it is a table."""
    if isinstance(value, list) and value:
        if all(isinstance(r, dict) for r in value) or not any(isinstance(r, dict) for r in value):
            return value, None
    elif isinstance(value, dict) and value:
        cols = list(value.values())
        if all(isinstance(c, list) for c in cols):
            n = len(cols[0])
            for name, col in value.items():
                if len(col) != n:
                    raise PayloadError(f"{field}.{name}", f"{len(col)} values, but the first column has {n}")
            return [list(row) for row in zip(*cols, strict=True)], [str(k) for k in value]
        if not any(isinstance(c, (list, dict)) for c in cols):
            return [cols], [str(k) for k in value]
    raise PayloadError(field, _NO_TABLE)


def _seldon_records(body: dict[str, Any]) -> tuple[list[Any], list[str] | None, str]:
    if "data" not in body:
        if "jsonData" in body:
            records, names = _json_table(body["jsonData"], "jsonData")
            return records, names, "jsonData"
        if "strData" in body:
            raw = body["strData"]
            if not isinstance(raw, str):
                raise PayloadError("strData", f"expected a string, got {type_name(raw)}")
            try:
                parsed = load_json(raw, "strData") if raw.lstrip()[:1] in ("{", "[") else None
            except PayloadError:
                parsed = None
            if parsed is None:
                raise PayloadError("strData", "holds free text, not a table of features or predictions; send "
                                              "data.ndarray, data.tensor, or JSON rows in jsonData")
            records, names = _json_table(parsed, "strData")
            return records, names, "strData"
        if "binData" in body:
            raise PayloadError("binData", "Seldon binData payloads carry no tabular features or predictions; "
                                          "send data.ndarray or data.tensor")
    data = require_object(body["data"], "data")
    names = _names(data.get("names"), "data.names")
    if "ndarray" in data:
        return require_list(data["ndarray"], "data.ndarray"), names, "data.ndarray"
    if "tensor" in data:
        return _seldon_tensor(data, "tensor"), names, "data.tensor"
    if "tftensor" in data:
        raise PayloadError("data.tftensor", "TensorFlow TensorProto payloads are not supported; "
                                            "send data.ndarray or data.tensor")
    raise PayloadError("data", f"expected ndarray or tensor, got keys {_keys(data)}")


def looks_like_request(body: Any) -> bool:
    return isinstance(body, dict) and any(k in body for k in (*REQUEST_KEYS, *_SELDON_OPAQUE))


def looks_like_response(body: Any) -> bool:
    return isinstance(body, dict) and any(k in body for k in (*RESPONSE_KEYS, *_SELDON_OPAQUE, "status", "error"))


def parse_request(body: Any, feature_names: Sequence[str] | None = None) -> tuple[int, Columns]:
    """A KServe v1 / TF Serving / Seldon v1 request → ``(n_rows, {feature: column})``."""
    body = require_object(ensure_json(body))
    if "instances" in body:
        return _rows(body["instances"], "instances", feature_names)
    if "inputs" in body:
        inputs = body["inputs"]
        if isinstance(inputs, dict):
            return _named_columns(inputs, "inputs")
        if isinstance(inputs, list):
            return _rows(inputs, "inputs", feature_names)
        raise PayloadError("inputs", f"expected an object of named inputs or an array, got {type_name(inputs)}")
    if "examples" in body:
        examples = require_list(body["examples"], "examples")
        for i, ex in enumerate(examples):
            if not isinstance(ex, dict):
                raise PayloadError(f"examples[{i}]", f"expected an object of features, got {type_name(ex)}")
        return _rows(examples, "examples", feature_names)
    if "data" in body or any(k in body for k in _SELDON_OPAQUE):
        records, names, field = _seldon_records(body)
        return _rows(records, field, feature_names, names, "data.names")
    raise PayloadError("body", "expected instances, inputs or examples (KServe v1 / TF Serving) or data "
                               f"(Seldon), got keys {_keys(body)}")


def _select(row: Any, output: str | None, field: str) -> Any:
    if output is not None and isinstance(row, dict):
        if output not in row:
            raise PayloadError(field, f"has no output named {output!r}")
        return row[output]
    return row


def _tf_results(results: Any) -> list[Any]:
    """TF classify (``[[label, score], ...]`` per record → ``{label: score}``) or regress (scores)."""
    out: list[Any] = []
    for i, row in enumerate(require_list(results, "results")):
        if isinstance(row, list):
            mapping: dict[str, Any] = {}
            for j, pair in enumerate(row):
                if not (isinstance(pair, list) and len(pair) == 2 and not isinstance(pair[0], (list, dict))):
                    raise PayloadError(f"results[{i}][{j}]", "expected a [label, score] pair")
                mapping[str(pair[0])] = pair[1]
            out.append(mapping)
        elif isinstance(row, dict):
            raise PayloadError(f"results[{i}]", "expected a score or a list of [label, score] pairs")
        else:
            out.append(row)
    return out


def _seldon_predictions(body: dict[str, Any]) -> list[Any]:
    records, names, _ = _seldon_records(body)
    out: list[Any] = []
    for row in records:
        row = label_scores(row)
        if isinstance(row, list) and len(row) > 1 and names and len(names) == len(row) \
                and not any(isinstance(v, (list, dict)) for v in row):
            out.append(dict(zip(names, row, strict=True)))
        else:
            out.append(prediction_cell(row))
    return out


def parse_response(body: Any, output: str | None = None) -> list[Any]:
    """A KServe v1 / TF Serving / Seldon v1 response → one prediction per record.

    A record's prediction is a scalar, a list (a probability or score vector), or a mapping:
    ``{label: score}`` for TF classify and for Seldon rows whose columns are named. With several
    named outputs the first is used unless ``output`` names another.
    """
    body = require_object(ensure_json(body))
    error = response_error(body)
    if error is not None:
        raise PayloadError("body", f"is an error response: {error}")
    if "predictions" in body:
        preds = require_list(body["predictions"], "predictions")
        return [prediction_cell(label_scores(_select(unwrap_b64(p), output, f"predictions[{i}]")))
                for i, p in enumerate(preds)]
    if "outputs" in body:
        outputs = body["outputs"]
        if isinstance(outputs, dict):
            if not outputs:
                raise PayloadError("outputs", "is empty")
            name = output if output is not None else next(iter(outputs))
            if name not in outputs:
                raise PayloadError("outputs", f"no output named {name!r} (outputs: {_keys(outputs)})")
            outputs = require_list(outputs[name], f"outputs.{name}")
        outputs = require_list(outputs, "outputs")
        return [prediction_cell(unwrap_b64(p)) for p in outputs]
    if "results" in body:
        return _tf_results(body["results"])
    if "data" in body or any(k in body for k in _SELDON_OPAQUE):
        return _seldon_predictions(body)
    raise PayloadError("body", "expected predictions, outputs or results (KServe v1 / TF Serving) or data "
                               f"(Seldon), got keys {_keys(body)}")


def response_error(body: Any) -> str | None:
    """The server's error message when the body reports a failure, else None.

    KServe v1 / TF Serving answer ``{"error": "..."}``; Seldon v1 answers a ``status`` object whose
    ``status`` is ``"FAILURE"``.
    """
    if not isinstance(body, dict):
        return None
    if "error" in body and not any(k in body for k in RESPONSE_KEYS):
        return str(body["error"])[:500] or "error"
    status = body.get("status")
    if isinstance(status, dict) and status.get("status") == "FAILURE":
        parts = [str(status[k]) for k in ("code", "reason", "info") if status.get(k) not in (None, "")]
        return " ".join(parts)[:500] or "FAILURE"
    return None


def seldon_feedback(body: Any) -> tuple[str | None, list[Any]]:
    """Seldon v1 feedback ``{"request", "response", "truth", "reward"}`` → ``(puid, labels)``.

    The prediction's id is the ``meta.puid`` Seldon stamped on the response (else the request);
    ``truth`` is a Seldon message with one row per record, each a single value (the true class or
    target). Feedback without ``truth`` carries only a reward and gives no label.
    """
    body = require_object(ensure_json(body))
    puid = None
    for part in ("response", "request"):
        meta = body.get(part, {}).get("meta") if isinstance(body.get(part), dict) else None
        if isinstance(meta, dict) and isinstance(meta.get("puid"), str) and meta["puid"]:
            puid = meta["puid"]
            break
    if "truth" not in body:
        raise PayloadError("truth", "is required: feedback without truth (a reward only) carries no label")
    truth = require_object(body["truth"], "truth")
    if "data" not in truth:
        raise PayloadError("truth.data", "is required (ndarray or tensor with one row per record)")
    records, _, field = _seldon_records(truth)
    labels: list[Any] = []
    for i, row in enumerate(records):
        value = prediction_cell(row)
        if isinstance(value, (list, dict)):
            raise PayloadError(f"truth.{field}[{i}]", "expected one value per record (the true class or target)")
        labels.append(value)
    return puid, labels
