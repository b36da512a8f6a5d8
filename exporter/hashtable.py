"""A bucketed open-addressing hash table over 64-bit id hashes, with batch operations.

It maps prediction ids (reduced to their 64-bit Python ``hash()``) to integer slots for the
pending-prediction store (:mod:`exporter.pending`); no Python object per key.

* ``str`` hashing is SipHash keyed per process, so ids cannot be crafted to collide; the chance
  that two of ≤2,000,000 live ids share a 64-bit hash is about 1e-7, and the cost of such a
  collision is one mis-joined label.
* buckets of 16 cells, a key in its home bucket or, if that was full, in one of the next ones,
  and per bucket a count of the keys that went past it (as in Folly's F14). Deleting empties
  the cell and decrements those counts, so there are no tombstones and nothing to rebuild; at a
  load of at most 0.5 almost every key is in its home bucket, so looking up or inserting a batch
  is one vectorised round (a row gather and a compare) and a short loop for the few others.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import DTypeLike, NDArray

__all__ = ["BUCKET", "MAX_LOAD", "MIN_BUCKETS", "HashTable", "first_occurrences", "first_per_cell", "hash_ids"]

# A free cell holds key 0, which hash_ids never returns; its value is meaningless (EMPTY until first used).
EMPTY = -1
_LOG_B = 4
BUCKET = 1 << _LOG_B  # cells per bucket
_B = BUCKET
_TAIL = 8  # keys left after a probing round that are finished one at a time
MAX_LOAD = 0.5  # the table grows when live keys would exceed this fraction of its cells
MIN_BUCKETS = 8
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # odd multiplier: spreads sequential hashes over the table
_SHIFT32 = np.uint64(32)
_NONE_HASH = hash(None)


def hash_ids(ids: Sequence[Any]) -> tuple[NDArray[np.uint64], NDArray[np.bool_]]:
    """64-bit hashes of ``ids`` (never 0: that marks a free cell) and a mask of the usable
    (non-None) ones."""
    n = len(ids)
    hashes = np.fromiter(map(hash, ids), dtype=np.int64, count=n)
    valid = hashes != _NONE_HASH  # faster than ``None in ids``; then check the few suspects
    if not valid.all():
        suspects = np.flatnonzero(~valid)
        valid[suspects] = [ids[i] is not None for i in suspects.tolist()]
    keys = hashes.view(np.uint64)
    np.maximum(keys, 1, out=keys)  # hash("") == 0; 0 and 1 share a key, like any collision
    return keys, valid


def _rows_any(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """``mask.any(axis=1)`` for a C-contiguous (n, _B) mask, read as uint64 words: much faster."""
    words = mask.view(np.uint64)
    return words[:, 0] != 0 if _B == 8 else (words[:, 0] | words[:, 1]) != 0


def first_occurrences(h: NDArray[np.uint64]) -> tuple[NDArray[np.intp], NDArray[np.intp]] | None:
    """None if all of ``h`` differ, else (positions of first occurrences in ascending order,
    for every element the index of its first occurrence in that array)."""
    if h.size < 2:
        return None
    s = np.sort(h)
    if not (s[1:] == s[:-1]).any():  # the common case: one sort, no index bookkeeping
        return None
    _, first, inverse = np.unique(h, return_index=True, return_inverse=True)
    order = np.argsort(first)
    rank = np.empty(order.size, dtype=np.intp)
    rank[order] = np.arange(order.size)
    return first[order], rank[inverse.ravel()]


def first_per_cell(cells: NDArray[np.intp], won: NDArray[np.bool_]) -> NDArray[np.intp]:
    """Indices of the first occurrence of each cell in ``cells``, where ``won`` is False for
    all but one occurrence of each repeated cell."""
    keep = ~np.isin(cells, cells[~won])  # cells seen once
    rep = (~keep).nonzero()[0]
    order = np.argsort(cells[rep], kind="stable")  # by cell, then batch order
    grouped = cells[rep][order]
    first = np.ones(rep.size, dtype=bool)
    first[1:] = grouped[1:] != grouped[:-1]
    keep[rep[order][first]] = True
    return keep.nonzero()[0]


class HashTable:
    """Bucketed open addressing: uint64 key -> integer value, batch operations, no tombstones.

    A bucket is ``_B`` cells (a key in ``keys``, its value in ``vals``; key 0 marks a free
    cell) and a count, ``over``, of the keys stored beyond it whose probe passed it (as in
    Folly's F14). A key goes to the first bucket, from its home on, with a free cell; a lookup
    goes on past a bucket only while its count is non-zero, and a deletion empties the cell
    and decrements the counts its key had raised. Cells are numbered ``bucket * _B + i``.

    At a load of at most 0.5, all but about 0.5 % of the keys sit in their home bucket, so a
    batch takes one vectorised round (one row gather and one compare for all its keys); the
    few keys left are finished by more rounds while many remain, then one at a time. The
    table must never be full: its owner keeps it at most half full.
    """

    def __init__(self, buckets: int, dtype: DTypeLike) -> None:
        self.buckets = int(buckets)
        self.keys = np.zeros((self.buckets, _B), dtype=np.uint64)
        self.flat_keys = self.keys.reshape(-1)
        self.vals = np.zeros(self.buckets * _B, dtype=dtype)  # meaningless where the key is 0
        self.over = np.zeros(self.buckets, dtype=np.int32)
        self.live = 0
        self._nb = np.uint64(self.buckets)

    @property
    def cells(self) -> int:
        return self.buckets * _B

    @property
    def nbytes(self) -> int:
        return int(self.keys.nbytes + self.vals.nbytes + self.over.nbytes)

    def _home(self, h: NDArray[np.uint64]) -> NDArray[np.intp]:
        # Multiply-shift mixing, then Lemire's multiply-high range reduction (any table size).
        return ((((h * _GOLDEN) >> _SHIFT32) * self._nb) >> _SHIFT32).astype(np.intp)

    def find(self, h: NDArray[np.uint64]) -> NDArray[np.intp]:
        """Cell of each key, -1 where absent."""
        return self._probe(h, False)[0]

    def find_or_free(self, h: NDArray[np.uint64]) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
        """Cell of each key (-1 where absent), and a free cell of its home bucket (-1 if full):
        a hint for ``insert`` while no key is added."""
        cells, hint = self._probe(h, True)
        assert hint is not None
        return cells, hint

    def _probe(self, h: NDArray[np.uint64], free: bool) -> tuple[NDArray[np.intp], NDArray[np.intp] | None]:
        cells = np.full(h.size, -1, dtype=np.intp)
        b = self._home(h)
        rows = self.keys.take(b, axis=0)
        hint = None
        if free:
            empty = rows == 0
            hint = (b << _LOG_B) + empty.argmax(axis=1)
            hint[~_rows_any(empty)] = -1
        idx = None  # after the first round: positions in the batch of the keys still sought
        seen = 0  # buckets looked at, from the home one on
        while True:
            hit = (rows == h[:, None]).ravel().nonzero()[0]
            r = hit >> _LOG_B
            cells[r if idx is None else idx[r]] = hit + ((b[r] - r) << _LOG_B)
            seen += 1
            more = self.over.take(b) > 0  # a key went past this bucket: the one sought may be further
            more[r] = False
            go = more.nonzero()[0]
            if go.size <= _TAIL or seen == self.buckets:
                break
            idx = go if idx is None else idx[go]
            h, b = h[go], self._next(b[go])
            rows = self.keys.take(b, axis=0)
        if go.size:  # the last few, one at a time
            for i, key, bucket in zip(
                (go if idx is None else idx[go]).tolist(), h[go].tolist(), b[go].tolist(), strict=True
            ):
                for _ in range(seen, self.buckets):  # (never a full turn: that is every bucket)
                    if not self.over[bucket]:
                        break
                    bucket = bucket + 1 if bucket + 1 < self.buckets else 0
                    row = self.keys[bucket].tolist()
                    if key in row:
                        cells[i] = bucket * _B + row.index(key)
                        break
        return cells, hint

    def values(self, cells: NDArray[np.intp]) -> NDArray[np.integer]:
        """The value in each cell, EMPTY where the cell is -1 (a key not found)."""
        vals = self.vals.take(cells)
        vals[cells < 0] = EMPTY
        return vals

    def insert(
        self, h: NDArray[np.uint64], values: NDArray[np.integer], hint: NDArray[np.intp] | None = None
    ) -> NDArray[np.intp]:
        """Add keys known to be absent and distinct; returns their cells. ``hint`` is the free
        cells ``find_or_free`` gave for these keys, if no key was added since."""
        out = np.empty(h.size, dtype=np.intp)
        self.live += h.size
        idx = np.arange(h.size)
        first = hint  # the free cells to try in the first round
        b = None if first is not None else self._home(h)
        while idx.size > _TAIL:
            if first is not None:  # the first round, with hints
                cells, first = first, None
                has = cells >= 0
            else:
                assert b is not None  # set before or at the end of the first round
                free = self.keys.take(b, axis=0) == 0
                cells = (b << _LOG_B) + free.argmax(axis=1)
                has = _rows_any(free)
            tried = None if has.all() else has.nonzero()[0]  # keys whose bucket has a free cell
            if tried is not None:
                cells, hk = cells[tried], h[tried]
            else:
                hk = h
            # Keys of the batch sharing a bucket may pick the same free cell: one write lands,
            # the others see it taken and try that bucket again in the next round.
            self.flat_keys[cells] = hk
            won = self.flat_keys[cells] == hk
            if tried is None and won.all():  # the common case: all placed at once
                self.vals[cells] = values[idx]
                out[idx] = cells
                return out
            placed = (np.arange(idx.size) if tried is None else tried)[won]
            cells = cells[won]
            self.vals[cells] = values[idx[placed]]
            out[idx[placed]] = cells
            left = np.ones(idx.size, dtype=bool)
            left[placed] = False
            if b is None:
                b = self._home(h)
            if tried is not None:  # the others go past their full bucket
                full = ~has
                np.add.at(self.over, b[full], 1)
                b[full] = self._next(b[full])
            go = left.nonzero()[0]
            idx, h, b = idx[go], h[go], b[go]
        if b is None:
            b = self._home(h)
        for i, key, bucket in zip(idx.tolist(), h.tolist(), b.tolist(), strict=True):  # the last few
            while True:
                row = self.keys[bucket].tolist()
                if 0 in row:
                    out[i] = cell = bucket * _B + row.index(0)
                    self.flat_keys[cell] = key
                    self.vals[cell] = values[i]
                    break
                self.over[bucket] += 1
                bucket = bucket + 1 if bucket + 1 < self.buckets else 0
        return out

    def delete(self, cells: NDArray[np.integer]) -> None:
        """Empty these cells (each holding a key) and undo the counts their keys raised."""
        if not cells.size:
            return
        home = self._home(self.flat_keys[cells])
        self.flat_keys[cells] = 0
        self.live -= cells.size
        dist = (cells >> _LOG_B) - home
        away = dist.nonzero()[0]
        if away.size:  # each passed the buckets home, home + 1, ..., its own - 1
            dist = dist[away]
            dist[dist < 0] += self.buckets
            steps = np.arange(int(dist.sum())) - np.repeat(np.cumsum(dist) - dist, dist)
            passed = np.repeat(home[away], dist) + steps
            passed[passed >= self.buckets] -= self.buckets
            np.subtract.at(self.over, passed, 1)

    def _next(self, b: NDArray[np.intp]) -> NDArray[np.intp]:
        b += 1
        b[b == self.buckets] = 0
        return b
