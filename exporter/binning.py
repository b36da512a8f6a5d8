"""``searchsorted(edges, x, side="left")`` for fixed edges, without a binary search per value.

A numeric feature has about a hundred quantile edges and every live value is binned against
them. numpy's binary search takes a data-dependent branch at each of its ~7 levels; on live
data about half of them mispredict, so binning 1,000 fresh values costs about 4× as much as
repeating the same 1,000 (the branch predictor learns those; bench/binning.py). A uniform grid over
the edges' range maps a value to the one or two edges it can lie between with a multiply and a
table look-up, then compares with those edges: a handful of vector operations, no branch that
depends on the data, and the same integers as ``searchsorted``.
"""

from __future__ import annotations

import numpy as np

MAX_CELLS = 1 << 14
"""Largest grid tried (a 128 KiB table of int64 look-ups; beyond it the table leaves the cache)."""
MAX_SPAN = 2
"""Most edges a cell may hold (comparisons per value); feature ranges that need more keep
the binary search, e.g. a heavy tail that leaves most edges in a few cells."""


def column_vector(values: list[float]) -> np.ndarray:
    """Per-row parameters as a ``rows × 1`` array, to broadcast against a ``rows × n`` block."""
    return np.array(values, dtype=np.float64).reshape(-1, 1)


class EdgeLookup:
    """Bin indices of finite values against sorted ``edges``, as ``np.searchsorted(edges, x, "left")``.

    Edges may repeat (a discrete feature's quantiles do); the grid works on the distinct edges
    and maps the result back, so a value still lands in the first of equal bins.
    """

    __slots__ = ("_base", "_block", "_hi", "_lo", "_offset", "_scale", "_span", "_to_bin", "distinct", "edges")

    def __init__(self, edges: np.ndarray) -> None:
        self.edges = np.ascontiguousarray(edges, dtype=np.float64)
        self._base: np.ndarray | None = None
        self._block: BlockLookup | None = None
        self.distinct = distinct = np.unique(self.edges)
        if distinct.size < 2 or not np.isfinite(distinct).all():
            return
        lo, hi = float(distinct[0]), float(distinct[-1])
        grid = None
        for span in range(1, MAX_SPAN + 1):  # one comparison per value if a grid within MAX_CELLS allows it
            cells = 1 << max(2, int(distinct.size * 4).bit_length())
            while grid is None and cells <= MAX_CELLS:
                grid = self._grid(distinct, lo, hi, cells, span)
                cells *= 2
            if grid is not None:
                break
        else:
            return
        base, span = grid
        self._lo, self._hi, self._scale, self._span = lo, hi, base.size / (hi - lo), span
        self._offset = lo * self._scale
        self._base = np.append(base, base[-1])  # hi itself may round to the cell past the last
        # k distinct edges below x means as many edges below x as come before the k-th distinct one
        self._to_bin = np.append(np.searchsorted(self.edges, distinct, side="left"), self.edges.size)
        self._block = BlockLookup([self], [0])  # the look-up itself: a block of one row
    @staticmethod
    def _grid(distinct: np.ndarray, lo: float, hi: float, cells: int, span: int) -> tuple[np.ndarray, int] | None:
        """Per cell, the fewest distinct edges below any value the cell can receive; None if some
        cell may hold more than ``span`` edges or the range is too narrow for its magnitude."""
        width = (hi - lo) / cells
        # Rounding in x * scale - lo * scale moves a value by far less than the half-cell margins
        # here as long as the cell is wide against the values' magnitude.
        if not width > max(1e-9 * max(abs(lo), abs(hi)), 1e-290):  # 1e-290: clear of subnormal numbers
            return None
        base = np.searchsorted(distinct, lo + (np.arange(cells) - 0.5) * width, side="left")
        top = np.searchsorted(distinct, lo + (np.arange(cells) + 1.5) * width, side="right")
        base[0], top[-1] = 0, distinct.size  # values below lo and above hi fall into the end cells
        if int((top - base).max()) > span:
            return None
        return base.astype(np.intp), span

    @property
    def uses_grid(self) -> bool:
        return self._base is not None

    def __call__(self, values: np.ndarray) -> np.ndarray:
        x = np.asarray(values, dtype=np.float64)
        if self._block is None or x.size < 16 or not np.isfinite(x.sum()):
            return np.searchsorted(self.edges, x, side="left")
        return self._block(x.reshape(1, -1)).reshape(x.shape)


class BlockLookup:
    """Several features' grids fused, so that one set of vector operations bins a whole block of
    columns (one row per feature) instead of a dozen small operations per column; each row's bins
    come out shifted by its feature's ``offset`` (its place in the monitor's count vector).

    The tables are concatenated: row j's cells index its part of one cell table, whose entries
    index its part of one padded edge array, whose positions map to its part of one bin array.
    """

    def __init__(self, lookups: list[EdgeLookup], offsets: list[int]) -> None:
        if not all(lookup.uses_grid for lookup in lookups):
            raise ValueError("every lookup of a block must use its grid")
        span = max((lookup._span for lookup in lookups), default=1)
        tables, edges, bins, cells = [], [], [], []
        position = cell = 0
        for lookup, offset in zip(lookups, offsets, strict=True):
            size, table = lookup.distinct.size, lookup._base
            assert table is not None
            tables.append(table + position)
            cells.append(cell)
            cell += table.size
            edges.append(np.concatenate((lookup.distinct, np.full(span, np.inf))))
            bins.append(offset + np.concatenate((lookup._to_bin, np.full(span - 1, lookup._to_bin[-1]))))
            position += size + span

        self._span = span
        self.low = column_vector([lookup._lo for lookup in lookups])
        """Each row's lowest edge, a column vector."""
        self._hi = column_vector([lookup._hi for lookup in lookups])
        self._scale = column_vector([lookup._scale for lookup in lookups])
        self._offset = column_vector([lookup._offset for lookup in lookups])
        self._cell = np.array(cells, dtype=np.intp).reshape(-1, 1)
        self._table = np.concatenate(tables) if tables else np.zeros(0, np.intp)
        self._edges = np.concatenate(edges) if edges else np.zeros(0)
        self._bins = np.concatenate(bins).astype(np.int64) if bins else np.zeros(0, np.int64)

    def __call__(self, block: np.ndarray) -> np.ndarray:
        """Bins (offset) of a finite ``rows × n`` block, as each row's lookup would give plus its offset."""
        t = np.maximum(block, self.low)  # clipping the values first keeps x * scale finite
        np.minimum(t, self._hi, out=t)
        t *= self._scale
        t -= self._offset
        cells = t.astype(np.intp)
        cells += self._cell
        base = self._table.take(cells)
        k = base + (self._edges.take(base) < block)
        for _ in range(1, self._span):
            base += 1
            k += self._edges.take(base) < block
        return self._bins.take(k)
