"""Helpers shared by the wire-format parsers: JSON decoding, nested-list shapes, column naming.

Everything here raises :class:`PayloadError` for bad input and nothing else, so a parser built
on these helpers cannot turn a malformed body into a 500.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from typing import Any

import orjson

from exporter.batch import PayloadError
from exporter.limits import lenient_loads

MAX_RANK = 32
"""Deepest nesting accepted in a tensor. Real tensors have a handful of dimensions; the cap keeps
hostile input (``[[[[...]]]]``) away from Python's recursion limit."""

Columns = dict[str, list[Any]]


def type_name(value: Any) -> str:
    """JSON name of a value's type, for error messages written for people who send JSON."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def load_json(data: bytes | bytearray | memoryview | str, field: str = "body") -> Any:
    """Parse JSON with orjson; fall back to the stdlib only when orjson refuses.

    The fallback accepts what Python model servers actually emit and orjson does not: ``NaN`` /
    ``Infinity`` tokens and integers beyond 64 bits. It runs only on the failure path, so the hot
    path stays on orjson.
    """
    if isinstance(data, (bytearray, memoryview)):
        data = bytes(data)
    if not data or (isinstance(data, (bytes, str)) and not data.strip()):
        raise PayloadError(field, "is empty; expected a JSON document")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as first:
        try:
            return lenient_loads(data)
        except PayloadError as exc:
            raise PayloadError(field, exc.reason) from None
        except (ValueError, RecursionError):
            raise PayloadError(field, f"not valid JSON (malformed JSON: {first})") from None


def ensure_json(body: Any, field: str = "body") -> Any:
    """Accept an already parsed body or raw bytes/str, so callers may pass either."""
    if isinstance(body, (bytes, bytearray, memoryview, str)):
        return load_json(body, field)
    return body


def require_object(body: Any, field: str = "body") -> dict[str, Any]:
    if not isinstance(body, dict):
        raise PayloadError(field, f"expected a JSON object, got {type_name(body)}")
    return body


def require_list(value: Any, field: str) -> list[Any]:
    if not isinstance(value, list):
        raise PayloadError(field, f"expected an array, got {type_name(value)}")
    return value


def flatten(value: Any, field: str) -> list[Any]:
    """Row-major flattening of arbitrarily nested lists (the OIP allows flat or nested ``data``)."""
    if not isinstance(value, list):
        return [value]
    if list not in map(type, value):  # flat already (JSON gives exact lists), checked at C speed
        return value
    if all(isinstance(row, list) for row in value):
        flat = [v for row in value for v in row]
        if not any(isinstance(v, list) for v in flat):
            return flat
    out: list[Any] = []
    stack: list[tuple[list[Any], int]] = [(value, 0)]
    while stack:
        items, start = stack.pop()
        for i in range(start, len(items)):
            v = items[i]
            if isinstance(v, list):
                if len(stack) + 1 >= MAX_RANK:
                    raise PayloadError(field, f"nested deeper than {MAX_RANK} levels")
                stack.append((items, i + 1))
                stack.append((v, 0))
                break
            out.append(v)
    return out


def reshape(flat: Sequence[Any], dims: Sequence[int]) -> Any:
    """Inverse of :func:`flatten` for a known shape; ``dims == ()`` gives the scalar."""
    if not dims:
        return flat[0]
    if len(dims) == 1:
        return list(flat)
    step = math.prod(dims[1:])
    return [reshape(flat[i * step:(i + 1) * step], dims[1:]) for i in range(dims[0])]


def column_names(width: int, feature_names: Sequence[str] | None, field: str) -> list[str]:
    """Names of positional columns: the model's configured feature names, else ``f0..f{k-1}``."""
    if feature_names:
        if len(feature_names) != width:
            shown = ", ".join(list(feature_names)[:8]) + (", …" if len(feature_names) > 8 else "")
            raise PayloadError(field, f"rows have {width} values, but the model config names "
                                      f"{len(feature_names)} features ({shown})")
        names = [str(n) for n in feature_names]
        if len(set(names)) != len(names):
            raise PayloadError(field, "the model config names a feature twice; feature names must be unique")
        return names
    return [f"f{j}" for j in range(width)]


def positional_columns(rows: Sequence[Sequence[Any]], width: int, names: list[str]) -> Columns:
    """Transpose equal-width rows into named columns (C-speed slicing of the flattened rows)."""
    flat = [v for row in rows for v in row]
    return {name: flat[j::width] for j, name in enumerate(names)}


def unwrap_b64(value: Any, depth: int = 0) -> Any:
    """TF Serving's ``{"b64": "..."}`` becomes the base64 string itself: opaque bytes stay opaque."""
    if isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str):
        return value["b64"]
    if isinstance(value, list) and depth < MAX_RANK and any(isinstance(v, (dict, list)) for v in value):
        return [unwrap_b64(v, depth + 1) for v in value]
    return value


def cell(value: Any) -> Any:
    """One record's value of a named input: a one-element vector ``[x]`` is the scalar ``x``."""
    value = unwrap_b64(value)
    if isinstance(value, list) and len(value) == 1 and not isinstance(value[0], list):
        return value[0]
    return value


def prediction_cell(value: Any) -> Any:
    """One record's prediction: ``[x]`` (an ``[n, 1]`` output) is the scalar ``x``; a longer
    vector stays a list (class probabilities or scores)."""
    if isinstance(value, list) and len(value) == 1:
        inner = value[0]
        if not isinstance(inner, list):
            return inner
        if len(inner) == 1 and not isinstance(inner[0], list):
            return inner[0]
    return unwrap_b64(value)


def text(value: Any) -> str | None:
    """A header or attribute value, with empty meaning absent (KServe sends ``endpoint: ""``)."""
    if value is None:
        return None
    s = str(value).strip()
    return s or None


def _is_label_score(value: Any) -> bool:
    return (isinstance(value, dict) and len(value) == 2 and "label" in value and "score" in value
            and isinstance(value["label"], (str, int)) and not isinstance(value["label"], bool))


def label_scores(value: Any) -> Any:
    """``{"label", "score"}`` objects (Hugging Face pipelines, many custom servers) → ``{label: score}``.

    One object or a list of them (top-k) per record becomes one mapping, which the monitor reads as
    class probabilities; anything else is returned unchanged.
    """
    if _is_label_score(value):
        return {str(value["label"]): value["score"]}
    if isinstance(value, list) and value and all(_is_label_score(v) for v in value):
        return {str(v["label"]): v["score"] for v in value}
    return value


GZIP_MAGIC = b"\x1f\x8b"


def decompress_body(raw: bytes, content_encoding: str | None, limit: int) -> bytes:
    """Undo gzip (``Content-Encoding: gzip`` or the gzip magic bytes) with a cap on the result.

    Loggers and proxies may compress bodies; the cap keeps a small compressed body from growing
    past the server's body limit. Any other encoding than gzip/identity is refused with a reason.
    """
    encoding = (content_encoding or "").strip().lower()
    if encoding in ("", "identity") and not raw.startswith(GZIP_MAGIC):
        return raw
    if encoding not in ("", "identity", "gzip", "x-gzip"):
        raise PayloadError("content-encoding", f"unsupported encoding {encoding[:40]!r} (mlmon reads gzip)")
    inflater = zlib.decompressobj(wbits=47)  # gzip or zlib header, detected
    try:
        out = inflater.decompress(raw, limit + 1)
    except zlib.error as exc:
        raise PayloadError("body", f"not valid gzip: {exc}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise PayloadError("body", f"decompresses to more than {limit} bytes (server.max_body_bytes)")
    return out


def read_json_body(raw: bytes, content_encoding: str | None, limit: int) -> Any:
    """A request body as JSON: gzip undone (capped at ``limit``), then parsed; errors name ``$``."""
    return load_json(decompress_body(raw, content_encoding, limit), "$")
