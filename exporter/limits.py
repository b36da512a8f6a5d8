"""Edge validation of what a client controls: decoded JSON, names and label values.

A string that reaches a metric label or a JSON answer is checked once, here, so that nothing
accepted can break a later ``/metrics`` or ``/v1/models`` (a lone UTF-16 surrogate cannot be
encoded as UTF-8; a 1 MB version would become 1 MB metric lines). Numbers too large for a float
become infinite, which every record check already rejects with a reason, instead of raising
``OverflowError`` deep inside a parser.
"""

from __future__ import annotations

import json
import math
from typing import Any

from exporter.batch import PayloadError

OTHER = "__other__"
_FLOAT_MAX = 1.7976931348623157e308
_INT64 = 1 << 63
MAX_DEPTH = 64
"""Deepest JSON nesting walked; deeper documents are refused (real payloads nest a handful of levels)."""


def valid_text(value: str) -> bool:
    """True if ``value`` can be written as UTF-8 (no lone surrogates)."""
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def safe_label(value: str, max_length: int) -> str | None:
    """``value`` if it may become a label value, else None (too long or not encodable)."""
    if len(value) > max_length or not valid_text(value):
        return None
    return value


def _number(value: int) -> int | float:
    if -_INT64 <= value < _INT64:
        return value
    if abs(value) <= _FLOAT_MAX:
        return float(value)
    return math.inf if value > 0 else -math.inf


def _walk(value: Any, path: str, depth: int) -> Any:
    """Check every string (and key) for invalid Unicode; bring huge integers into float range."""
    if isinstance(value, str):
        if not valid_text(value):
            raise PayloadError(path, "holds invalid Unicode (a lone UTF-16 surrogate)")
        return value
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return value
    if isinstance(value, int):
        return _number(value)
    if depth >= MAX_DEPTH:
        raise PayloadError(path, f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, list):
        for i, v in enumerate(value):
            value[i] = _walk(v, path, depth + 1)
        return value
    if isinstance(value, dict):
        for k in list(value):
            if not valid_text(k):
                raise PayloadError(path, "holds a key with invalid Unicode (a lone UTF-16 surrogate)")
            value[k] = _walk(value[k], f"{path}.{k}" if len(k) <= 64 else f"{path}.<key>", depth + 1)
        return value
    return value


def lenient_loads(raw: bytes | str) -> Any:
    """The stdlib fallback behind orjson: ``NaN``/``Infinity`` tokens and integers beyond 64 bits.

    orjson already refuses invalid UTF-8, lone surrogates and integers beyond 64 bits, so only this
    path needs the walk. Raises ``ValueError`` (or ``RecursionError``) for malformed JSON and
    :class:`PayloadError` for a well-formed document that holds invalid Unicode.
    """
    text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    return _walk(json.loads(text), "$", 0)


MMAP_THRESHOLD = 256 * 1024


def return_large_allocations() -> None:
    """Make glibc serve allocations over 256 KB with mmap, so they go back to the OS when freed.

    glibc raises its mmap threshold after the first large free, after which request-sized buffers
    (a 1 MB string, a 10 MB body) stay cached in each worker thread's arena: a few large requests
    then hold ~10 MB of RSS per thread for the life of the process. A fixed threshold keeps RSS
    flat (bench/RESULTS.md, "cardinality"). No-op where the C library is not glibc.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = getattr(libc, "mallopt", None)
    except OSError:
        return
    if mallopt is not None:
        mallopt(-3, MMAP_THRESHOLD)  # M_MMAP_THRESHOLD
