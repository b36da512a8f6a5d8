"""Open Inference Protocol JSON (KServe v2, MLServer, Triton, Seldon Core v2) → columns and predictions.

How tensors become features (the same rules on every OIP server, so a dashboard does not change
when a model moves from MLServer to Triton):

* ``parameters.content_type: "pd"`` (MLServer's pandas codec) or several inputs: one feature per
  input, named by the input. A record's value is the scalar for shapes ``[n]`` / ``[n, 1]``, else
  the per-record sub-tensor as a nested list (kept raw; the monitor counts it as a type error).
* one input of shape ``[n, k]``: a positional feature matrix, columns named from the model's
  configured ``feature_names`` or ``f0..f{k-1}``.
* one input of any other rank: one feature named by the input.

``data`` may be flat or nested (row-major, as the protocol allows); its element count must equal
the product of ``shape``. Element values are not judged here. Tensors sent with Triton's binary
data extension carry no JSON data and are refused with a reason. The gRPC-JSON spelling
(``contents.intContents`` …, string dims) that Seldon Core v2 shows is read too.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any, NamedTuple

from exporter.batch import PayloadError
from exporter.formats._common import (
    MAX_RANK,
    Columns,
    column_names,
    ensure_json,
    flatten,
    require_list,
    require_object,
    reshape,
    text,
    type_name,
)

DATATYPES = frozenset({"BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
                       "FP16", "FP32", "FP64", "BF16", "BYTES"})
_ALIASES = {"STRING": "BYTES"}
"""Triton's classification docs print ``"datatype": "STRING"``; the protocol's name is BYTES."""

_CONTENTS = ("bool", "int", "int64", "uint", "uint64", "fp32", "fp64", "bytes")
_CONTENT_KEYS = {f"{t}Contents": t for t in _CONTENTS} | {f"{t}_contents": t for t in _CONTENTS}

_CLASSIFICATION = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*:\s*(\d+)(?::(.*))?$", re.S)
"""Triton classification extension entry: ``<value>:<index>[:<label>]``."""


class Tensor(NamedTuple):
    """One validated input or output tensor, with its data flattened row-major (a named tuple:
    a request builds one per input, and a tuple is built in half the time of a frozen dataclass)."""

    name: str
    shape: tuple[int, ...]
    datatype: str
    data: list[Any]

    @property
    def rows(self) -> int:
        """Batch size: the first dimension (a rank-0 tensor is one record)."""
        return self.shape[0] if self.shape else 1

    def row_values(self) -> list[Any]:
        """Per-record values: scalars when a record holds one element, else nested lists."""
        if not self.shape:
            return [self.data[0]]
        if len(self.shape) == 1:  # [n]: one value per record
            return list(self.data)
        n, rest = self.shape[0], self.shape[1:]
        size = rest[0] if len(rest) == 1 else math.prod(rest)
        if size == 1:
            return list(self.data)
        return [reshape(self.data[i * size:(i + 1) * size], rest) for i in range(n)]


def _shape(item: dict[str, Any], field: str, allow_strings: bool) -> tuple[int, ...]:
    raw = item.get("shape")
    if raw is None:
        raise PayloadError(f"{field}.shape", "is required")
    if not isinstance(raw, list):
        raise PayloadError(f"{field}.shape", f"expected an array of non-negative integers, got "
                                             f"{type_name(raw)} {str(raw)[:40]}")
    if len(raw) == 1 and type(raw[0]) is int and raw[0] >= 0:  # the commonest shape: [n]
        return (raw[0],)
    if len(raw) > MAX_RANK:
        raise PayloadError(f"{field}.shape", f"has {len(raw)} dimensions; at most {MAX_RANK} are supported")
    if all(type(d) is int and d >= 0 for d in raw):  # the usual case, without per-dimension checks
        return tuple(raw)
    dims = []
    for j, d in enumerate(raw):
        if allow_strings and isinstance(d, str) and d.isdigit() and d.isascii():
            d = int(d)
        if isinstance(d, bool) or not isinstance(d, int) or d < 0:
            raise PayloadError(f"{field}.shape[{j}]", f"expected a non-negative integer, got {str(d)[:40]}")
        dims.append(d)
    return tuple(dims)


def _raw_data(item: dict[str, Any], field: str) -> tuple[Any, bool]:
    """The tensor's data and whether it came in the gRPC-JSON ``contents`` spelling."""
    if "data" in item:
        return item["data"], False
    contents = item.get("contents")
    if isinstance(contents, dict):
        found = [k for k in contents if k in _CONTENT_KEYS]
        if len(found) != 1:
            raise PayloadError(f"{field}.contents", "expected exactly one of "
                                                    + ", ".join(f"{t}Contents" for t in _CONTENTS))
        return contents[found[0]], True
    params = item.get("parameters")
    if isinstance(params, dict) and "binary_data_size" in params:
        raise PayloadError(f"{field}.data", "tensor is sent with Triton's binary data extension "
                                            "(parameters.binary_data_size); mlmon reads JSON tensor data only")
    raise PayloadError(f"{field}.data", "is required")


def parse_tensors(items: Any, field: str) -> list[Tensor]:
    """Validate ``inputs`` / ``outputs``: names, shapes, datatypes, and data size against shape."""
    if items is None:
        raise PayloadError(field, "is required")
    items = require_list(items, field)
    if not items:
        raise PayloadError(field, "is empty")
    tensors: list[Tensor] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        if type(item) is dict:  # the usual tensor, [n] with n flat values, taken without the checks below
            name, datatype, raw, dims = item.get("name"), item.get("datatype"), item.get("data"), item.get("shape")
            if (type(name) is str and name and name not in seen and type(datatype) is str and datatype in DATATYPES
                    and type(raw) is list
                    and type(dims) is list and len(dims) == 1 and type(dims[0]) is int and dims[0] == len(raw)
                    and type(item.get("parameters", {})) is dict and list not in map(type, raw)):
                seen.add(name)
                tensors.append(Tensor(name, (dims[0],), datatype, raw))
                continue
        f = f"{field}[{i}]"
        if not isinstance(item, dict):
            raise PayloadError(f, f"expected an object, got {type_name(item)}")
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise PayloadError(f"{f}.name", "expected a non-empty string")
        if name in seen:
            raise PayloadError(f"{f}.name", f"duplicate tensor name {name!r}")
        seen.add(name)
        datatype = item.get("datatype")
        if not isinstance(datatype, str) or _ALIASES.get(datatype, datatype) not in DATATYPES:
            raise PayloadError(f"{f}.datatype", f"unsupported datatype {str(datatype)[:40]!r} "
                                                f"(expected one of {', '.join(sorted(DATATYPES))})")
        params = item.get("parameters")
        if params is not None and not isinstance(params, dict):
            raise PayloadError(f"{f}.parameters", f"expected an object, got {type_name(params)}")
        raw, grpc_json = _raw_data(item, f)
        shape = _shape(item, f, allow_strings=grpc_json)
        if shape and shape[0] and 0 in shape[1:]:
            # records without values: nothing to monitor, and [10**9, 0] must not become 10**9 records
            raise PayloadError(f"{f}.shape", f"dimension {shape.index(0, 1)} is 0: the records carry no values")
        if not isinstance(raw, list):
            raise PayloadError(f"{f}.data", f"expected an array, got {type_name(raw)}")
        flat = flatten(raw, f"{f}.data")
        expected = math.prod(shape)
        if expected != len(flat):
            raise PayloadError(f"{f}.shape", f"product {expected} does not match {len(flat)} data elements")
        tensors.append(Tensor(name, shape, _ALIASES.get(datatype, datatype), flat))
    return tensors


def _content_type(body: dict[str, Any]) -> str | None:
    params = body.get("parameters")
    return params.get("content_type") if isinstance(params, dict) else None


def looks_like_request(body: Any) -> bool:
    inputs = body.get("inputs") if isinstance(body, dict) else None
    return isinstance(inputs, list) and bool(inputs) and isinstance(inputs[0], dict)


def looks_like_response(body: Any) -> bool:
    outputs = body.get("outputs") if isinstance(body, dict) else None
    return isinstance(outputs, list) and bool(outputs) and isinstance(outputs[0], dict)


def parse_request(body: Any, feature_names: Sequence[str] | None = None) -> tuple[int, Columns]:
    """An inference request → ``(n_rows, {feature: column})``."""
    body = require_object(ensure_json(body))
    inputs = parse_tensors(body.get("inputs"), "inputs")
    n = inputs[0].rows
    for i, t in enumerate(inputs[1:], start=1):
        if t.rows != n:
            raise PayloadError(f"inputs[{i}].shape", f"{t.rows} records, but inputs[0] has {n}")
    if len(inputs) == 1 and len(inputs[0].shape) == 2 and _content_type(body) != "pd":
        t = inputs[0]
        k = t.shape[1]
        names = column_names(k, feature_names, "inputs[0].shape")
        return n, {name: t.data[j::k] for j, name in enumerate(names)}
    return n, {t.name: t.row_values() for t in inputs}


def _top_class(entries: list[Any]) -> Any:
    """The best entry of one record's classification strings: its label, else its class index."""
    best: tuple[float, Any] | None = None
    for entry in entries:
        m = _CLASSIFICATION.match(entry)
        if m is None:  # the caller checked every entry; keep the type checker honest
            continue
        value = float(m.group(1))
        label = m.group(3) if m.group(3) else int(m.group(2))
        if best is None or value > best[0]:
            best = (value, label)
    return None if best is None else best[1]


def _is_classification(t: Tensor) -> bool:
    return (t.datatype == "BYTES" and bool(t.data)
            and all(isinstance(v, str) and _CLASSIFICATION.match(v) for v in t.data))


def parse_response(body: Any, output: str | None = None) -> list[Any]:
    """An inference response → one prediction per record.

    The prediction is the output named ``output``, else the first output (servers list the
    primary output first; pass ``output`` to choose another). A record's prediction is a scalar
    for shapes ``[n]`` / ``[n, 1]`` and a list (class probabilities or scores) for ``[n, k]``.
    Triton classification strings (``"0.9:3:label"``) become the top class per record: a 1-D
    output is one record's top-k, a 2-D output ``[n, k]`` is n records.
    """
    body = require_object(ensure_json(body))
    outputs = parse_tensors(body.get("outputs"), "outputs")
    t = outputs[0]
    if output is not None:
        matches = [o for o in outputs if o.name == output]
        if not matches:
            raise PayloadError("outputs", f"no output named {output!r} (outputs: "
                                          f"{', '.join(o.name for o in outputs)})")
        t = matches[0]
    if _is_classification(t):
        if len(t.shape) <= 1:
            return [_top_class(t.data)]
        per_row = math.prod(t.shape[1:])
        return [_top_class(t.data[i * per_row:(i + 1) * per_row]) for i in range(t.shape[0])]
    return t.row_values()


def response_error(body: Any) -> str | None:
    """The server's error message when the body is an OIP error response (``{"error": "..."}``)."""
    if isinstance(body, dict) and "error" in body and "outputs" not in body:
        return str(body["error"])[:500] or "error"
    return None


def model_info(body: Any) -> tuple[str | None, str | None]:
    """``(model_name, model_version)`` a response names (REST or gRPC-JSON spelling)."""
    if not isinstance(body, dict):
        return None, None
    name = body.get("model_name", body.get("modelName"))
    version = body.get("model_version", body.get("modelVersion"))
    return (text(name) if isinstance(name, (str, int)) else None,
            text(version) if isinstance(version, (str, int)) else None)
