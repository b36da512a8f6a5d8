"""Data-quality checks and value → bin encoding for one feature column.

Both happen in one pass because they look at the same values: a value that is missing or of
the wrong type is counted here and simply not binned, so the record still counts for every
other feature instead of being thrown away.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import repeat
from numbers import Real
from typing import Any

import numpy as np

from exporter.batch import Coded, all_strings
from exporter.binning import BlockLookup, column_vector
from exporter.profile import CategoricalProfile, NumericProfile, category_key


def _all_numbers(values: list[Any]) -> bool:
    """Whether ``sum`` accepts every value as a number: its float fast path refuses ``str``,
    ``None``, containers and ``Decimal`` with a TypeError, an int beyond float range with an
    OverflowError; one C pass, about 5× cheaper than collecting the set of types."""
    try:
        sum(values, 0.0)
    except (TypeError, OverflowError):
        return False
    return True


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
    if not isinstance(column, list):
        column = list(column)
    if _all_numbers(column):
        try:
            values = np.fromiter(column, dtype=np.float64, count=len(column))
        except (TypeError, ValueError, OverflowError):  # e.g. a complex number: judged value by value below
            pass
        else:
            return values, ~np.isfinite(values), np.zeros(values.size, dtype=bool)
    values = np.full(len(column), np.nan)
    wrong = np.zeros(len(column), dtype=bool)
    for i, v in enumerate(column):
        if v is None:
            continue
        if isinstance(v, (Real, np.number)):  # bool and int are Real, as are Fraction and numpy scalars
            try:
                values[i] = float(v)
            except OverflowError:
                values[i] = np.inf
        else:
            wrong[i] = True
    return values, ~np.isfinite(values) & ~wrong, wrong


def encode_numeric(profile: NumericProfile, column: Any) -> EncodedColumn:
    values, missing, wrong = numeric_values(column)
    n_missing, n_wrong = int(np.count_nonzero(missing)), int(np.count_nonzero(wrong))
    usable = values[~missing & ~wrong] if n_missing or n_wrong else values
    return EncodedColumn(
        bins=profile.bin_index(usable),
        missing=n_missing,
        type_errors=n_wrong,
        out_of_range=int(np.count_nonzero(usable < profile.min)) + int(np.count_nonzero(usable > profile.max)),
    )


@dataclass(frozen=True)
class NumericBlock:
    """Numeric features encoded together (:func:`encode_numeric_block`): their fused grids and
    their training ranges, one row per feature."""

    lookup: BlockLookup
    min: np.ndarray
    max: np.ndarray

    @classmethod
    def of(cls, profiles: Sequence[NumericProfile], offsets: Sequence[int]) -> NumericBlock:
        return cls(BlockLookup([p.edge_lookup for p in profiles], list(offsets)),
                   column_vector([p.min for p in profiles]), column_vector([p.max for p in profiles]))


def encode_numeric_block(block: NumericBlock, columns: Sequence[Any], n: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`encode_numeric` of several columns at once: the offset bins of every usable value, and
    per column its (missing, type_errors, out_of_range, unexpected) counts. A column that is None
    is absent from the batch: all of its ``n`` values are missing.
    """
    rows: list[np.ndarray] = []
    wrong = np.zeros(len(columns), dtype=np.int64)
    for j, column in enumerate(columns):
        if column is None:
            rows.append(np.full(n, np.nan))
        elif isinstance(column, np.ndarray) and column.dtype == np.float64:
            rows.append(column)
        else:
            values, _, bad = numeric_values(column)  # a wrongly typed value is NaN here
            wrong[j] = np.count_nonzero(bad)
            rows.append(values)
    x = np.stack(rows) if rows else np.zeros((0, n))
    finite = np.isfinite(x)
    clean = bool(finite.all())
    if not clean:
        x = np.where(finite, x, block.lookup.low)  # any finite stand-in: its bin is dropped below
    bins = block.lookup(x)
    outside = (x < block.min) | (x > block.max)
    if not clean:
        outside &= finite
    quality = np.zeros((len(columns), 4), dtype=np.int64)
    quality[:, 0] = n - finite.sum(axis=1) - wrong
    quality[:, 1] = wrong
    quality[:, 2] = outside.sum(axis=1)
    return (bins.ravel() if clean else bins[finite]), quality


def encode_categorical(profile: CategoricalProfile, column: Any) -> EncodedColumn:
    """Known categories map to their bin; unseen ones to ``__other__`` and are counted.

    Mappings and lists are type errors: a category is a scalar.
    """
    if isinstance(column, Coded):
        return _encode_coded(profile, column)
    other = len(profile.categories)
    if isinstance(column, list):
        # The common case, at C speed: dict lookups through map(), then a look at the few values
        # that fell into __other__. The keys are strings, so any other type lands there too and
        # sends the column to the value-by-value path (as does an unhashable value, by TypeError).
        try:
            bins_arr = np.fromiter(map(profile.index.get, column, repeat(other)), dtype=np.int64,
                                   count=len(column))
        except TypeError:
            pass
        else:
            rare = [column[i] for i in np.flatnonzero(bins_arr == other).tolist()]
            if all_strings(rare):
                return EncodedColumn(bins_arr, 0, 0, 0, sum(not profile.is_known(v) for v in rare))
    bins: list[int] = []
    problems = [0, 0, 0]  # missing, type_errors, unexpected
    for v in column:
        b, problem = _judge(profile, v)
        if problem is not None:
            problems[problem] += 1
        if b >= 0:
            bins.append(b)
    return EncodedColumn(np.asarray(bins, dtype=np.int64), problems[0], problems[1], 0, problems[2])


def _judge(profile: CategoricalProfile, value: Any) -> tuple[int, int | None]:
    """One categorical value: its bin (-1: not binned) and its problem (0 missing, 1 type error,
    2 unexpected category) or None."""
    if isinstance(value, (dict, list)):
        return -1, 1
    key = value if type(value) is str else category_key(value)
    if key is None:
        return -1, 0
    b = profile.lookup(key)
    return b, (2 if b == len(profile.categories) and not profile.is_known(key) else None)


def _encode_coded(profile: CategoricalProfile, column: Coded) -> EncodedColumn:
    """Each distinct value judged once, then spread over its records."""
    judged = [_judge(profile, v) for v in column.values]
    bins = np.array([b for b, _ in judged] + [-1], dtype=np.int64)
    counts = np.bincount(column.codes[column.codes >= 0], minlength=len(column.values)).tolist()
    problems = [len(column) - sum(counts), 0, 0]  # nulls are missing
    for (_, problem), count in zip(judged, counts, strict=True):
        if problem is not None:
            problems[problem] += count
    record_bins = bins.take(column.codes)  # a null's code, -1, takes the final -1
    return EncodedColumn(record_bins[record_bins >= 0], problems[0], problems[1], 0, problems[2])


def encode(profile: NumericProfile | CategoricalProfile, column: Any) -> EncodedColumn:
    if isinstance(profile, NumericProfile):
        return encode_numeric(profile, column)
    return encode_categorical(profile, column)
