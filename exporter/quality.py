"""Data-quality checks and value → bin encoding for one feature column.

Both happen in one pass because they look at the same values: a value that is missing or of
the wrong type is counted here and simply not binned, so the record still counts for every
other feature instead of being thrown away.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import repeat
from typing import Any

import numpy as np

from exporter.profile import CategoricalProfile, NumericProfile, category_key

_NUMBER_TYPES = frozenset({int, float})


@dataclass(frozen=True)
class EncodedColumn:
    """Bin indices of the usable values and the count of each problem found."""

    bins: np.ndarray
    missing: int = 0
    type_errors: int = 0
    out_of_range: int = 0
    unexpected: int = 0


def numeric_values(column: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Float values plus masks of missing (None, NaN, ±Inf) and wrongly typed entries.

    Strings are type errors even when they look like numbers: a model server that sends
    ``"42"`` has a serialisation bug worth seeing. Booleans are read as 0/1.
    """
    if isinstance(column, np.ndarray) and column.dtype.kind in "fiub":
        values = column.astype(np.float64, copy=False)
        return values, ~np.isfinite(values), np.zeros(values.size, dtype=bool)
    column = list(column)
    if set(map(type, column)) <= _NUMBER_TYPES:
        try:
            values = np.asarray(column, dtype=np.float64)
        except OverflowError:  # an int beyond float range: checked value by value below
            pass
        else:
            return values, ~np.isfinite(values), np.zeros(values.size, dtype=bool)
    values = np.full(len(column), np.nan)
    wrong = np.zeros(len(column), dtype=bool)
    for i, v in enumerate(column):
        if v is None:
            continue
        if isinstance(v, (bool, int, float, np.number)):
            try:
                values[i] = float(v)
            except OverflowError:
                values[i] = np.inf
        else:
            wrong[i] = True
    return values, ~np.isfinite(values) & ~wrong, wrong


def encode_numeric(profile: NumericProfile, column: Any) -> EncodedColumn:
    values, missing, wrong = numeric_values(column)
    usable = values[~missing & ~wrong]
    return EncodedColumn(
        bins=profile.bin_index(usable),
        missing=int(missing.sum()),
        type_errors=int(wrong.sum()),
        out_of_range=int(np.count_nonzero((usable < profile.min) | (usable > profile.max))),
    )


def encode_categorical(profile: CategoricalProfile, column: Any) -> EncodedColumn:
    """Known categories map to their bin; unseen ones to ``__other__`` and are counted.

    Mappings and lists are type errors: a category is a scalar.
    """
    other = len(profile.categories)
    if isinstance(column, list) and set(map(type, column)) == {str}:
        # The common case, at C speed: dict lookups through map(), then a check of the few
        # values that fell into __other__.
        bins_arr = np.fromiter(map(profile.index.get, column, repeat(other)), dtype=np.int64, count=len(column))
        rare = np.flatnonzero(bins_arr == other)
        unexpected = sum(not profile.is_known(column[i]) for i in rare.tolist())
        return EncodedColumn(bins_arr, 0, 0, 0, unexpected)
    bins: list[int] = []
    missing = wrong = unexpected = 0
    lookup = profile.lookup
    for v in column:
        key = v if type(v) is str else (None if isinstance(v, (dict, list)) else category_key(v))
        if key is None:
            if isinstance(v, (dict, list)):
                wrong += 1
            else:
                missing += 1
            continue
        b = lookup(key)
        if b == other and not profile.is_known(key):
            unexpected += 1
        bins.append(b)
    return EncodedColumn(np.asarray(bins, dtype=np.int64), missing, wrong, 0, unexpected)


def encode(profile: NumericProfile | CategoricalProfile, column: Any) -> EncodedColumn:
    if isinstance(profile, NumericProfile):
        return encode_numeric(profile, column)
    return encode_categorical(profile, column)
