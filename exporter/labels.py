"""Predictions waiting for their ground-truth label (delayed labels), for one model.

Labels often arrive hours or days after the prediction they judge, so every prediction that
carries an ``id`` waits here until its label comes (``take``), its TTL passes (``expire``) or
newer predictions push it out because the store is full (capacity eviction).

Why not a ``dict[str, tuple]``: with UUID ids, a dict from id to a small tuple measures about
235 bytes per entry (tracemalloc, the id strings it keeps alive included), 235 MB for a
full default store per model. This store keeps no Python object per prediction, about 57
bytes per entry at capacity with a 12-byte payload (see tests/test_labels.py):

* ids are reduced to their 64-bit Python ``hash()``. ``str`` hashing is SipHash keyed per
  process, so ids cannot be crafted to collide; the chance that two of ≤2,000,000 live ids
  share a 64-bit hash is about 1e-7, and the cost of such a collision is one mis-joined label.
* an open-addressing hash table (two numpy arrays: key hash, slot) maps an id to its slot.
  Lookups and inserts are vectorised over the whole batch; deletions leave tombstones and the
  table is rebuilt (which also shrinks it) when live + tombstones exceed 60 % of its cells.
* the payload lives in numpy columns indexed by slot, in arrival order, so TTL expiry and
  capacity eviction pop from the head. Labelled entries leave holes that are squeezed out when
  the buffer runs out of room; the buffer has 25 % slack over ``capacity`` so that compaction
  is amortised O(1) per insert even when the store is nearly full.
* ids already labelled are remembered (hash only, last ``remember_taken`` of them) so that a
  second label for the same id is told apart: "duplicate" rather than "unmatched".

Arrays start small and grow by doubling (the slot buffer never shrinks, the hash table does
on rebuild), so an idle model costs a few tens of kilobytes.
Ids should be strings (``hash(1) == hash(1.0) == hash(True)`` but ``hash("1")`` differs).
The store is not thread-safe: the owning monitor serialises calls with its lock.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

__all__ = [
    "DUPLICATE",
    "MATCHED",
    "UNMATCHED",
    "AddResult",
    "PendingStore",
    "TakeResult",
    "hash_ids",
]

#: Status of one label in :class:`TakeResult`.
MATCHED, DUPLICATE, UNMATCHED = 0, 1, 2

# Hash-table cell states (values >= 0 are slots of pending predictions).
_EMPTY, _TOMB, _TAKEN = -1, -2, -3
_MAX_LOAD = 0.6  # rebuild when (live + tombstones) / cells exceeds this ...
_REBUILD_LOAD = 0.3  # ... to a table where live / cells is this
_MIN_CELLS = 64
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # odd multiplier: spreads sequential hashes over the table
_SHIFT32 = np.uint64(32)

ColumnSpec = DTypeLike | tuple[DTypeLike, int]


def hash_ids(ids: Sequence[Any]) -> tuple[NDArray[np.uint64], NDArray[np.bool_]]:
    """64-bit hashes of ``ids`` and a mask of the usable (non-None) ones."""
    n = len(ids)
    hashes = np.fromiter(map(hash, ids), dtype=np.int64, count=n).view(np.uint64)
    if None not in ids:  # the common case, checked at C speed
        return hashes, np.ones(n, dtype=bool)
    return hashes, np.fromiter((i is not None for i in ids), dtype=bool, count=n)


class _HashTable:
    """Open addressing with linear probing: uint64 key hash -> int32 value, batch operations."""

    def __init__(self, cells: int = _MIN_CELLS) -> None:
        self._alloc(cells)

    def _alloc(self, cells: int) -> None:
        self.cells = int(cells)
        self.keys = np.zeros(self.cells, dtype=np.uint64)
        self.vals = np.full(self.cells, _EMPTY, dtype=np.int32)
        self.live = 0  # cells holding a key
        self.used = 0  # live + tombstones: what bounds probe lengths

    @property
    def nbytes(self) -> int:
        return int(self.keys.nbytes + self.vals.nbytes)

    def _home(self, h: NDArray[np.uint64]) -> NDArray[np.int64]:
        # Multiply-shift mixing, then Lemire's multiply-high range reduction (any table size).
        mixed = (h * _GOLDEN) >> _SHIFT32
        return ((mixed * np.uint64(self.cells)) >> _SHIFT32).astype(np.int64)

    def find(self, h: NDArray[np.uint64]) -> NDArray[np.int64]:
        """Cell of each key, -1 where absent."""
        result = np.full(h.size, -1, dtype=np.int64)
        pos = self._home(h)
        active = np.arange(h.size)
        while active.size:
            p = pos[active]
            v = self.vals[p]
            hit = (v != _EMPTY) & (v != _TOMB) & (self.keys[p] == h[active])
            result[active[hit]] = p[hit]
            more = ~hit & (v != _EMPTY)
            active = active[more]
            nxt = p[more] + 1
            nxt[nxt == self.cells] = 0
            pos[active] = nxt
        return result

    def insert(self, h: NDArray[np.uint64], values: NDArray[np.integer]) -> None:
        """Add keys known to be absent and distinct."""
        if self.used + h.size > _MAX_LOAD * self.cells:
            self.rebuild(extra=h.size)
        pos = self._home(h)
        active = np.arange(h.size)
        while active.size:
            p = pos[active]
            v = self.vals[p]
            free = (v == _EMPTY) | (v == _TOMB)
            # Several keys of the batch may reach the same free cell: the first one takes it,
            # the others find it occupied and probe on.
            cells, first = np.unique(p[free], return_index=True)
            winners = active[free][first]
            self.used += int(np.count_nonzero(self.vals[cells] == _EMPTY))
            self.keys[cells] = h[winners]
            self.vals[cells] = values[winners]
            self.live += winners.size
            placed = np.zeros(active.size, dtype=bool)
            placed[np.flatnonzero(free)[first]] = True
            active = active[~placed]
            nxt = p[~placed] + 1
            nxt[nxt == self.cells] = 0
            pos[active] = nxt

    def delete(self, cells: NDArray[np.int64]) -> None:
        cells = cells[cells >= 0]
        self.vals[cells] = _TOMB
        self.live -= cells.size

    def rebuild(self, extra: int = 0) -> None:
        """Re-insert live keys into a table sized for them plus ``extra``; drops tombstones."""
        occupied = (self.vals != _EMPTY) & (self.vals != _TOMB)
        keys, vals = self.keys[occupied], self.vals[occupied]
        self._alloc(max(_MIN_CELLS, math.ceil((keys.size + extra) / _REBUILD_LOAD)))
        if keys.size:
            self.insert(keys, vals)


@dataclass(frozen=True)
class AddResult:
    """What happened to one batch of predictions."""

    stored: int  # new pending predictions
    duplicates: int  # ids already pending or already labelled (the first copy is kept)
    no_id: int  # records without an id: not stored, they can never be joined
    evicted_capacity: int  # pending predictions dropped (oldest first) to stay within capacity
    expired_ttl: int  # pending predictions that expired before this batch was added


@dataclass(frozen=True)
class TakeResult:
    """Outcome of one batch of labels.

    ``status[i]`` is MATCHED, DUPLICATE or UNMATCHED for the i-th id given to ``take``.
    The other arrays describe the matched labels only, in the order of ``index`` (ascending
    positions in the batch): the prediction's arrival time, the prediction-to-label delay
    (never negative) and its payload columns.
    """

    status: NDArray[np.int8]
    index: NDArray[np.int64]
    arrival: NDArray[np.float64]
    delay: NDArray[np.float64]
    columns: dict[str, NDArray[Any]] = field(default_factory=dict)

    @property
    def found_mask(self) -> NDArray[np.bool_]:
        return self.status == MATCHED

    @property
    def matched(self) -> int:
        return int(self.index.size)

    @property
    def duplicates(self) -> int:
        return int(np.count_nonzero(self.status == DUPLICATE))

    @property
    def unmatched(self) -> int:
        return int(np.count_nonzero(self.status == UNMATCHED))


def _fill_value(dtype: np.dtype) -> Any:
    """Default for a payload column the caller did not send: NaN, -1 (max if unsigned) or False."""
    if np.issubdtype(dtype, np.floating):
        return np.nan
    if np.issubdtype(dtype, np.bool_):
        return False
    if np.issubdtype(dtype, np.unsignedinteger):
        return np.iinfo(dtype).max
    return -1


class PendingStore:
    """Bounded store of predictions awaiting labels; batch operations, no object per entry.

    ``columns`` declares the payload kept for each prediction, e.g.
    ``{"predicted": np.int32, "proba": (np.float32, 4), "version": np.int16}``; a tuple gives
    a per-prediction vector of that width. Keep dtypes small: they are most of the memory.
    """

    def __init__(
        self,
        capacity: int,
        ttl_seconds: float,
        columns: Mapping[str, ColumnSpec] | None = None,
        *,
        remember_taken: int | None = None,
        initial_size: int = 1024,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        if not ttl_seconds > 0:
            raise ValueError(f"ttl_seconds must be > 0, got {ttl_seconds}")
        self.capacity = int(capacity)
        self.ttl_seconds = float(ttl_seconds)
        self.remember_taken = self.capacity if remember_taken is None else int(remember_taken)
        if self.remember_taken < 0:
            raise ValueError(f"remember_taken must be >= 0, got {remember_taken}")
        self._max_size = self.capacity + max(self.capacity // 4, 16)
        self._specs: dict[str, tuple[np.dtype, tuple[int, ...]]] = {}
        for name, spec in (columns or {}).items():
            if isinstance(spec, tuple):
                dtype, width = spec
                self._specs[name] = (np.dtype(dtype), (int(width),))
            else:
                self._specs[name] = (np.dtype(spec), ())
        size = max(1, min(self._max_size, int(initial_size)))
        self._key = np.zeros(size, dtype=np.uint64)
        self._time = np.zeros(size, dtype=np.float64)
        self._alive = np.zeros(size, dtype=bool)
        self._cols = {n: np.zeros((size, *shape), dtype=dt) for n, (dt, shape) in self._specs.items()}
        self._head = 0  # first slot that may be alive
        self._tail = 0  # next free slot
        self._live = 0
        self._last_t = -math.inf
        self._table = _HashTable()
        # Ring of hashes of labelled ids; grows up to remember_taken, then wraps.
        self._taken = np.zeros(min(self.remember_taken, size), dtype=np.uint64)
        self._taken_count = 0  # total ever pushed
        # Counters (monotonic, for Prometheus counters).
        self.matched = 0
        self.unmatched = 0
        self.duplicates = 0  # duplicate labels (mlmon_labels_duplicate_total)
        self.duplicate_predictions = 0
        self.expired_ttl = 0
        self.evicted_capacity = 0

    # ------------------------------------------------------------------ introspection
    def __len__(self) -> int:
        return self._live

    @property
    def pending(self) -> int:
        return self._live

    @property
    def nbytes(self) -> int:
        """Bytes held by the store's arrays (what grows with the number of entries)."""
        arrays = [self._key, self._time, self._alive, self._taken, *self._cols.values()]
        return int(sum(a.nbytes for a in arrays)) + self._table.nbytes

    def __contains__(self, id_: object) -> bool:
        h, _ = hash_ids([id_])
        cell = self._table.find(h)[0]
        return bool(cell >= 0 and self._table.vals[cell] >= 0)

    def stats(self) -> dict[str, int]:
        return {
            "pending": self._live,
            "matched": self.matched,
            "unmatched": self.unmatched,
            "duplicates": self.duplicates,
            "duplicate_predictions": self.duplicate_predictions,
            "expired_ttl": self.expired_ttl,
            "evicted_capacity": self.evicted_capacity,
        }

    # ------------------------------------------------------------------ operations
    def add(
        self,
        ids: Sequence[str | None],
        t: float,
        columns: Mapping[str, ArrayLike] | None = None,
    ) -> AddResult:
        """Store a batch of predictions that arrived at time ``t`` (seconds, e.g. time.time()).

        ``columns`` maps declared column names to arrays aligned with ``ids``; a missing
        column is filled with NaN / -1 / False. An id already pending or already labelled is
        a duplicate (a client retry): the first copy is kept. Records whose id is None are
        not stored. Predictions expired at ``t`` are dropped first.
        """
        columns = columns or {}
        unknown = set(columns) - set(self._specs)
        if unknown:
            raise KeyError(f"undeclared payload columns: {sorted(unknown)}")
        expired = self.expire(t)
        # Arrival order must be time order for expiry to pop from the head: a wall clock that
        # steps back is absorbed by clamping (errors bounded by the step).
        self._last_t = t = max(float(t), self._last_t)

        h, valid = hash_ids(ids)
        vi = np.flatnonzero(valid)
        _, first = np.unique(h[vi], return_index=True)
        cand = vi[np.sort(first)]  # first occurrence of each id, in batch order
        new = cand[self._table.find(h[cand]) < 0]
        dups = vi.size - new.size
        self.duplicate_predictions += dups

        evicted = 0
        if new.size > self.capacity:  # the batch alone overflows: only its newest fit
            evicted += new.size - self.capacity
            new = new[new.size - self.capacity :]
        overflow = self._live + new.size - self.capacity
        if overflow > 0:
            evicted += self._evict_oldest(overflow)
        self.evicted_capacity += evicted

        n = new.size
        if n:
            self._make_room(n)
            s = slice(self._tail, self._tail + n)
            self._key[s] = h[new]
            self._time[s] = t
            self._alive[s] = True
            for name, (dtype, _shape) in self._specs.items():
                if name in columns:
                    self._cols[name][s] = np.asarray(columns[name], dtype=dtype)[new]
                else:
                    self._cols[name][s] = _fill_value(dtype)
            self._table.insert(h[new], np.arange(self._tail, self._tail + n, dtype=np.int32))
            self._tail += n
            self._live += n
        return AddResult(
            stored=int(n),
            duplicates=int(dups),
            no_id=int(len(ids) - vi.size),
            evicted_capacity=int(evicted),
            expired_ttl=expired,
        )

    def take(self, ids: Sequence[str | None], now: float) -> TakeResult:
        """Join a batch of labels received at ``now``: remove and return their predictions.

        Per id: MATCHED (the prediction was pending), DUPLICATE (its label was already taken,
        within the last ``remember_taken`` labels, or the id repeats within this batch) or
        UNMATCHED (never seen, expired, evicted, or None). Predictions older than the TTL
        are expired first, so a label arriving after the TTL is unmatched.
        """
        self.expire(now)
        n = len(ids)
        status = np.full(n, UNMATCHED, dtype=np.int8)
        h, valid = hash_ids(ids)
        vi = np.flatnonzero(valid)
        uniq, first, inverse = np.unique(h[vi], return_index=True, return_inverse=True)
        cells = self._table.find(uniq)
        vals = np.where(cells >= 0, self._table.vals[cells], _EMPTY)
        ustatus = np.where(vals >= 0, MATCHED, np.where(vals == _TAKEN, DUPLICATE, UNMATCHED))
        per_record = ustatus[inverse.ravel()].astype(np.int8)
        repeat = np.ones(vi.size, dtype=bool)
        repeat[first] = False
        per_record[repeat & (per_record == MATCHED)] = DUPLICATE
        status[vi] = per_record

        m = np.flatnonzero(vals >= 0)
        m = m[np.argsort(first[m], kind="stable")]  # batch order
        slots = vals[m].astype(np.int64)
        arrival = self._time[slots]
        result = TakeResult(
            status=status,
            index=vi[first[m]],
            arrival=arrival,
            delay=np.maximum(float(now) - arrival, 0.0),
            columns={name: col[slots] for name, col in self._cols.items()},
        )
        self._alive[slots] = False
        self._live -= slots.size
        if self.remember_taken:
            self._table.vals[cells[m]] = _TAKEN
            self._remember(uniq[m])
        else:
            self._table.delete(cells[m])
        self.matched += result.matched
        self.duplicates += result.duplicates
        self.unmatched += result.unmatched
        return result

    def expire(self, now: float) -> int:
        """Drop predictions older than the TTL at ``now``; returns how many were pending."""
        cutoff = float(now) - self.ttl_seconds
        head, tail = self._head, self._tail
        end = head + int(np.searchsorted(self._time[head:tail], cutoff, side="left"))
        if end == head:
            return 0
        alive = self._alive[head:end]
        slots = head + np.flatnonzero(alive)
        self._drop(slots)
        self._head = end
        self.expired_ttl += slots.size
        return int(slots.size)

    # ------------------------------------------------------------------ internals
    def _drop(self, slots: NDArray[np.int64]) -> None:
        """Forget pending predictions (expiry or eviction): they leave no trace."""
        if slots.size:
            self._table.delete(self._table.find(self._key[slots]))
            self._alive[slots] = False
            self._live -= slots.size

    def _evict_oldest(self, k: int) -> int:
        """Drop the ``k`` oldest pending predictions."""
        k = min(k, self._live)
        head, tail = self._head, self._tail
        chunk = max(4 * k, 1024)
        while True:  # the head is mostly alive when the store is full: look at a short prefix
            stop = min(tail, head + chunk)
            alive_pos = np.flatnonzero(self._alive[head:stop])
            if alive_pos.size >= k or stop == tail:
                break
            chunk *= 4
        slots = head + alive_pos[:k]
        self._drop(slots)
        if slots.size:
            self._head = int(slots[-1]) + 1
        return int(slots.size)

    def _make_room(self, n: int) -> None:
        """Ensure ``n`` free slots after the tail: squeeze out holes, growing if crowded."""
        size = self._key.size
        if self._tail + n <= size:
            return
        live_slots = self._head + np.flatnonzero(self._alive[self._head : self._tail])
        needed = live_slots.size + n
        if needed > 0.75 * size and size < self._max_size:
            size = min(self._max_size, max(2 * size, math.ceil(needed / 0.75)))
        cells = self._table.find(self._key[live_slots])
        m = live_slots.size
        self._key = self._moved(self._key, live_slots, size)
        self._time = self._moved(self._time, live_slots, size)
        self._alive = np.zeros(size, dtype=bool)
        self._alive[:m] = True
        for name in self._cols:
            self._cols[name] = self._moved(self._cols[name], live_slots, size)
        self._table.vals[cells] = np.arange(m, dtype=np.int32)
        self._head, self._tail = 0, m

    @staticmethod
    def _moved(arr: NDArray[Any], slots: NDArray[np.int64], size: int) -> NDArray[Any]:
        kept = arr[slots]
        out = arr if size == arr.shape[0] else np.zeros((size, *arr.shape[1:]), dtype=arr.dtype)
        out[: slots.size] = kept
        return out

    def _remember(self, h: NDArray[np.uint64]) -> None:
        """Push labelled id hashes into the bounded memory; forget the oldest beyond it."""
        for start in range(0, h.size, self.remember_taken):
            part = h[start : start + self.remember_taken]
            count = self._taken_count
            if count + part.size > self._taken.size and self._taken.size < self.remember_taken:
                grown = min(self.remember_taken, max(2 * self._taken.size, count + part.size))
                self._taken = np.concatenate([self._taken, np.zeros(grown - self._taken.size, np.uint64)])
            size = self._taken.size
            pos = (count + np.arange(part.size)) % size
            if count + part.size > size:  # wrapped: the overwritten hashes are forgotten
                old = self._taken[pos[count + np.arange(part.size) >= size]]
                self._table.delete(self._table.find(old))
            self._taken[pos] = part
            self._taken_count += part.size
