"""The columnar form of ``POST /v1/predictions`` as an Apache Arrow IPC stream (optional: ``mlmon[arrow]``).

For high-volume senders: typed columns arrive as buffers, so a batch costs no JSON parse and no
Python object per number or per categorical value (bench/ingest_http.py, form "arrow").

The stream carries the fields of the JSON columnar form, with the same names and meaning:
``ids``, ``predictions``, ``latency_seconds``, ``errors``, a struct column ``features`` (one child
per feature) and optionally a struct column ``groups``; the model and version are the schema's
metadata keys ``model`` and ``version``. Numeric features become float64 arrays (nulls → NaN,
booleans → 0/1, as in JSON), the model's categorical features ``Coded`` columns (Arrow's
dictionary encoding: each distinct value is judged once), everything else the Python values
that the JSON form would have given.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

import numpy as np

from exporter.batch import Coded, PayloadError

MEDIA_TYPE = "application/vnd.apache.arrow.stream"
"""The IANA media type of the Arrow IPC stream format."""

pa: Any = None
"""pyarrow, imported by the first Arrow request: a sidecar fed JSON never pays for it (~40 MB)."""


def available() -> bool:
    """Whether pyarrow can be imported (the ``arrow`` extra is installed)."""
    global pa
    if pa is None:
        try:
            import pyarrow
            import pyarrow.ipc
        except ImportError:
            return False
        pa = pyarrow
    return True


def _numbers(array: Any) -> np.ndarray | None:
    """A float64 array of an integer, floating or boolean column (null → NaN); None for other types."""
    kind = array.type
    if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)):
        return None
    if pa.types.is_boolean(kind):
        array = array.cast(pa.uint8())
    return np.asarray(array.to_numpy(zero_copy_only=False), dtype=np.float64)


def _coded(array: Any) -> Coded | list[Any]:
    """Codes into the distinct values; the Python values where Arrow cannot encode the type (a list)."""
    try:
        encoded = array if pa.types.is_dictionary(array.type) else array.dictionary_encode()
    except (pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return array.to_pylist()
    indices = encoded.indices.fill_null(-1) if encoded.indices.null_count else encoded.indices
    codes = indices.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    return Coded(codes, encoded.dictionary.to_pylist())


def _struct(table: Any, name: str) -> dict[str, Any] | None:
    if name not in table.column_names:
        return None
    column = table.column(name).combine_chunks()
    if not pa.types.is_struct(column.type):
        raise PayloadError(name, f"must be a struct column (one child per {name[:-1]}), got {column.type}")
    children = column.flatten()  # a null struct row makes its children's values null too
    return {column.type.field(i).name: child for i, child in enumerate(children)}


def load_arrow(body: bytes, numeric_features: Callable[[str], Collection[str]],
               categorical_features: Callable[[str], Collection[str]]) -> dict[str, Any]:
    """The stream as the dict :func:`~exporter.formats.native.parse_predictions` reads."""
    if not available():
        raise PayloadError("Content-Type", f"{MEDIA_TYPE} needs pyarrow on the sidecar (pip install mlmon[arrow])")
    try:
        table = pa.ipc.open_stream(pa.py_buffer(body)).read_all()
        table.validate(full=True)  # offsets and lengths of a hostile stream, before any buffer is read
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise PayloadError("$", f"not a valid Arrow IPC stream ({exc})") from None
    try:
        return _columns(table, numeric_features, categorical_features)
    except (pa.ArrowException, TypeError, ValueError) as exc:  # a column type this reading does not handle
        if isinstance(exc, PayloadError):
            raise
        raise PayloadError("$", f"cannot read the Arrow stream's columns ({exc})") from None


def _columns(table: Any, numeric_features: Callable[[str], Collection[str]],
             categorical_features: Callable[[str], Collection[str]]) -> dict[str, Any]:
    meta = {key.decode("utf-8", "replace"): value.decode("utf-8", "replace")
            for key, value in (table.schema.metadata or {}).items()}
    if "model" not in meta:
        raise PayloadError("model", "is required: the schema metadata key 'model' of the Arrow stream")
    out: dict[str, Any] = {key: meta[key] for key in ("model", "version") if key in meta}
    for name in ("ids", "predictions", "latency_seconds", "errors"):
        if name in table.column_names:
            field = table.column(name).combine_chunks()
            numbers = _numbers(field) if name == "latency_seconds" and not field.null_count else None
            out[name] = numbers if numbers is not None else field.to_pylist()
    features = _struct(table, "features")
    out["features"] = {}
    numeric, categorical = numeric_features(out["model"]), categorical_features(out["model"])
    for name, child in (features or {}).items():
        column: Any = _numbers(child) if name in numeric else None
        if column is None:
            column = _coded(child) if name in categorical else child.to_pylist()
        out["features"][name] = column
    groups = _struct(table, "groups")
    if groups is not None:
        out["groups"] = {name: child.to_pylist() for name, child in groups.items()}
    return out
