"""Predictions waiting for their ground-truth label (delayed labels), for one model.

Labels often arrive hours or days after the prediction they judge, so every prediction that
carries an ``id`` waits here until its label comes (``take``), its TTL passes (``expire``) or
newer predictions push it out because the store is full (capacity eviction).

Why not a ``dict[str, tuple]``: with UUID ids, a dict from id to a small tuple measures about
235 bytes per entry (tracemalloc, the id strings it keeps alive included), 235 MB for a
full default store per model. This store keeps no Python object per prediction, about 61
bytes per entry at capacity with a 12-byte payload (see tests/test_pending.py):

* ids go through a hash table of 64-bit id hashes (:mod:`exporter.hashtable`) that maps an id
  to its slot. The table doubles up to the size that holds ``capacity`` pending plus
  ``remember_taken`` labelled ids, and never shrinks.
* the predictions live in a ring of records (arrival time, table cell, payload), in arrival
  order, so TTL expiry and capacity eviction pop from the head and new predictions go at the
  tail; a label's join reads one record. Labels leave holes (cell -1) that the head skips;
  when the tail catches up with the head they are squeezed out in place, chunk by chunk. The
  ring has 25 % slack over ``capacity``, so this is amortised O(1) per insert even when full.
* ids already labelled are remembered (the last ``remember_taken`` of them) so that a second
  label for the same id is told apart: "duplicate" rather than "unmatched". They stay in the
  table, their value pointing into a ring of their cells, until that ring wraps.

The ring and the table start small and grow geometrically (the ring jumps to its final
size rather than double past half of it) until the store is full. From then on nothing is
reallocated, and an operation's temporaries are bounded by its batch or by a chunk of 16,384
slots, whatever the capacity: memory stays flat however long the process runs. (Temporaries
the size of the store, allocated and freed over and over, are what glibc's heap keeps: +87 MB
RSS between 1M and 10M ingested records before this design.) An idle model costs a few tens
of kilobytes.
Ids should be strings (``hash(1) == hash(1.0) == hash(True)`` but ``hash("1")`` differs).
The store is not thread-safe: the owning monitor serialises calls with its lock.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

from exporter.hashtable import BUCKET as _B
from exporter.hashtable import MAX_LOAD as _MAX_LOAD
from exporter.hashtable import MIN_BUCKETS as _MIN_BUCKETS
from exporter.hashtable import HashTable, first_occurrences, first_per_cell, hash_ids

__all__ = [
    "DUPLICATE",
    "MATCHED",
    "UNMATCHED",
    "AddResult",
    "PendingStore",
    "TakeResult",
]

#: Status of one label in :class:`TakeResult`.
MATCHED, DUPLICATE, UNMATCHED = 0, 1, 2

# Hash-table values: >= 0 is the slot of a pending prediction, <= -2 an id already labelled
# (-2 - its position in the ring of remembered ids).
_CHUNK = 1 << 14  # slots per step of bulk moves (compaction, growth, expiry): bounds temporaries
_SLACK = 0.25  # ring slots beyond capacity
_FILL = 0.75  # grow the ring, rather than compact it, when live + new exceed this fraction

ColumnSpec = DTypeLike | tuple[DTypeLike, int]


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
        self._max_size = self.capacity + max(int(self.capacity * _SLACK), 16)
        # The table holds pending and remembered ids: at most capacity + remember_taken keys.
        self._max_buckets = max(_MIN_BUCKETS, math.ceil((self.capacity + self.remember_taken) / (_MAX_LOAD * _B)))
        big = max(self._max_size, self.remember_taken + 2, self._max_buckets * _B) >= 2**31
        self._index = np.dtype(np.int64 if big else np.int32)  # slots, cells, ring positions
        self._specs: dict[str, tuple[np.dtype, tuple[int, ...]]] = {}
        for name, spec in (columns or {}).items():
            if isinstance(spec, tuple):
                dtype, width = spec
                self._specs[name] = (np.dtype(dtype), (int(width),))
            else:
                self._specs[name] = (np.dtype(spec), ())
        # One record per slot (arrival time, table cell or -1 once gone, payload), so that a
        # label's join reads one place in memory, not one per column.
        self._dtype = np.dtype(
            [("t", np.float64), ("c", self._index)]
            + [(f"p{i}", dt, shape) for i, (dt, shape) in enumerate(self._specs.values())]
        )
        # The ring of slots, in arrival order: [head, head + span) modulo its size.
        self._use(self._new_slots(max(1, min(self._max_size, int(initial_size)))))
        self._head = 0
        self._span = 0  # slots in use, holes left by labels included
        self._live = 0
        self._last_t = -math.inf
        self._table = HashTable(min(_MIN_BUCKETS, self._max_buckets), self._index)
        # Ring of the table cells of labelled ids; grows up to remember_taken, then wraps.
        self._taken = np.zeros(min(self.remember_taken, self._slots.size), dtype=self._index)
        self._taken_count = 0  # total ever pushed
        # Counters (monotonic, for Prometheus counters).
        self.matched = 0
        self.unmatched = 0
        self.duplicates = 0  # duplicate labels (mlmon_labels_duplicate_total)
        self.duplicate_predictions = 0
        self.expired_ttl = 0
        self.evicted_capacity = 0

    # ------------------------------------------------------------------ checkpoints
    def state(self) -> dict[str, np.ndarray]:
        """Arrays that rebuild the store exactly: the slot ring, the id table and the taken ring.
        Counters are left out: they are Prometheus counters and restart from zero."""
        t = self._table
        return {"slots": self._slots, "keys": t.keys, "vals": t.vals, "over": t.over, "taken": self._taken,
                "scalars": np.array([self._head, self._span, self._live, self._taken_count, t.live],
                                    dtype=np.int64),
                "last_t": np.asarray(self._last_t, dtype=np.float64)}

    def restore(self, state: dict[str, np.ndarray]) -> None:
        slots = state["slots"]
        if slots.dtype != self._dtype or slots.size > self._max_size:
            raise ValueError(f"pending store layout {slots.dtype} does not match {self._dtype}")
        keys, vals, over = state["keys"], state["vals"], state["over"]
        if vals.dtype != self._index or keys.ndim != 2 or keys.shape[1] != _B or keys.shape[0] > self._max_buckets:
            raise ValueError("pending store id table does not match this store")
        head, span, live, taken_count, table_live = (int(v) for v in state["scalars"])
        table = HashTable(keys.shape[0], self._index)
        table.keys[:] = keys
        table.vals[:] = vals
        table.over[:] = over
        table.live = table_live
        self._use(slots.copy())
        self._table = table
        self._taken = state["taken"].astype(self._index)
        self._head, self._span, self._live, self._taken_count = head, span, live, taken_count
        self._last_t = float(state["last_t"])

    # ------------------------------------------------------------------ introspection
    def __len__(self) -> int:
        return self._live

    @property
    def pending(self) -> int:
        return self._live

    @property
    def nbytes(self) -> int:
        """Bytes held by the store's arrays (what grows with the number of entries)."""
        return int(self._slots.nbytes + self._taken.nbytes) + self._table.nbytes

    def __contains__(self, id_: object) -> bool:
        h, _ = hash_ids([id_])
        return bool(self._table.values(self._table.find(h))[0] >= 0)

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
        repeats = first_occurrences(h[vi])
        cand = vi if repeats is None else vi[repeats[0]]  # first occurrence of each id, in batch order
        found, hint = self._table.find_or_free(h[cand])
        absent = (found < 0).nonzero()[0]
        new, hint = cand[absent], hint[absent]
        dups = vi.size - new.size
        self.duplicate_predictions += dups

        evicted = 0
        if new.size > self.capacity:  # the batch alone overflows: only its newest fit
            evicted += new.size - self.capacity
            new, hint = new[new.size - self.capacity :], hint[new.size - self.capacity :]
        overflow = self._live + new.size - self.capacity
        if overflow > 0:
            evicted += self._evict_oldest(overflow)
        self.evicted_capacity += evicted

        n = new.size
        if n:
            self._make_room(n)
            start = self._head + self._span
            if start >= self._slots.size:
                start -= self._slots.size
            where: slice | NDArray[np.intp]
            if start + n <= self._slots.size:
                where = slice(start, start + n)
                slots = np.arange(start, start + n, dtype=self._index)
            else:  # wraps around the end of the ring
                where = slots = (start + np.arange(n, dtype=self._index)) % self._slots.size
            self._time[where] = t
            everything = n == len(ids)  # the common case: no None, no duplicate
            for name, (dtype, _shape) in self._specs.items():
                if name in columns:
                    values = np.asarray(columns[name], dtype=dtype)
                    self._cols[name][where] = values if everything else values[new]
                else:
                    self._cols[name][where] = _fill_value(dtype)
            grown = self._reserve_table(n)
            self._cell[where] = self._table.insert(h[new], slots, None if grown else hint)
            self._span += n
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
        h, valid = hash_ids(ids)
        vi = None if valid.all() else valid.nonzero()[0]
        if vi is not None:
            h = h[vi]
        cells = self._table.find(h)
        vals = self._table.values(cells)
        status = np.where(vals >= 0, MATCHED, np.where(vals <= -2, DUPLICATE, UNMATCHED)).astype(np.int8)
        m = (vals >= 0).nonzero()[0]  # positions in h of ids pending
        if m.size > 1:
            # An id repeated in the batch is found at the same cell each time: its first
            # occurrence is the match, the others are duplicates. Spot repeats by writing each
            # position into its cell's value and reading it back (the values of these cells
            # are rewritten below when the ids are remembered or deleted).
            self._table.vals[cells[m]] = m
            won = self._table.vals[cells[m]] == m
            if not won.all():
                m = m[first_per_cell(cells[m], won)]
                status[status == MATCHED] = DUPLICATE
                status[m] = MATCHED
        cells, slots = cells[m], vals[m].astype(np.intp)
        got = self._slots.take(slots)
        arrival = np.ascontiguousarray(got["t"])
        if vi is not None:  # positions among all the ids
            m = vi[m]
            every = np.full(len(ids), UNMATCHED, dtype=np.int8)
            every[vi] = status
            status = every
        result = TakeResult(
            status=status,
            index=m,
            arrival=arrival,
            delay=np.maximum(float(now) - arrival, 0.0),
            columns={name: np.ascontiguousarray(got[f"p{i}"]) for i, name in enumerate(self._specs)},
        )
        self._cell[slots] = -1
        self._live -= slots.size
        if self.remember_taken:
            self._remember(cells)
        else:
            self._table.delete(cells)
        self.matched += result.matched
        self.duplicates += result.duplicates
        self.unmatched += result.unmatched
        return result

    def expire(self, now: float) -> int:
        """Drop predictions older than the TTL at ``now``; returns how many were pending."""
        cutoff = float(now) - self.ttl_seconds
        if not self._span or self._time[self._head] >= cutoff:  # the common case: nothing to do
            return 0
        end = 0
        for a, b in self._segments(0, self._span):  # times ascend in ring order
            # (np.searchsorted would copy the strided times: bisect reads ~20 of them)
            k = bisect.bisect_left(self._time, cutoff, a, b) - a
            end += k
            if k < b - a:
                break
        if not end:
            return 0
        dropped = 0
        for a, b in self._segments(0, end):
            for s in range(a, b, _CHUNK):
                cells = self._cell[s : min(s + _CHUNK, b)]
                which = np.flatnonzero(cells >= 0)
                self._forget(cells, which)
                dropped += which.size
        self._advance(end)
        self.expired_ttl += dropped
        return dropped

    # ------------------------------------------------------------------ internals
    def _segments(self, start: int, stop: int) -> Iterator[tuple[int, int]]:
        """The (at most two) physical ranges of the ring positions [start, stop) after the head."""
        size = self._slots.size
        a = self._head + start
        if a >= size:
            a -= size
        length = stop - start
        first = min(length, size - a)
        if first > 0:
            yield a, a + first
        if length > first:
            yield 0, length - first

    def _advance(self, k: int) -> None:
        """Move the head past ``k`` slots (all dropped or holes)."""
        self._head = (self._head + k) % self._slots.size
        self._span -= k

    def _forget(self, cells: NDArray[np.integer], which: NDArray[np.intp]) -> None:
        """Drop pending predictions (expiry or eviction): ``cells`` is a view of ``_cell``,
        ``which`` the positions in it of pending ones. They leave no trace."""
        if which.size:
            self._table.delete(cells[which])
            cells[which] = -1
            self._live -= which.size

    def _evict_oldest(self, k: int) -> int:
        """Drop the ``k`` oldest pending predictions."""
        k = min(k, self._live)
        left, pos = k, 0
        chunk = min(k + 256, _CHUNK)  # the head is mostly alive when the store is full
        while left:
            a, b = next(self._segments(pos, min(self._span, pos + chunk)))
            cells = self._cell[a:b]
            which = np.flatnonzero(cells >= 0)[:left]
            self._forget(cells, which)
            left -= which.size
            pos += int(which[-1]) + 1 if not left else b - a
            chunk = _CHUNK
        self._advance(pos)
        return k

    def _make_room(self, n: int) -> None:
        """Ensure ``n`` free slots after the tail: squeeze out holes, growing if crowded."""
        size = self._slots.size
        free = size - self._span
        if n <= free:
            return
        needed = self._live + n
        if size < self._max_size and needed > _FILL * size:
            size = min(self._max_size, max(2 * size, math.ceil(needed / _FILL)))
            if 2 * size > self._max_size:  # the next doubling would pass the end: go there now
                size = self._max_size
            self._regrow(size)
        else:  # there are enough holes, as live + n <= capacity
            self._compact()

    def _chunks(self, stop: int) -> Iterator[tuple[int, int]]:
        """Physical ranges of at most _CHUNK slots covering the ring positions [0, stop)."""
        for a, b in self._segments(0, stop):
            for s in range(a, b, _CHUNK):
                yield s, min(s + _CHUNK, b)

    def _live_chunks(self) -> Iterator[NDArray[np.intp]]:
        """Pending slots in ring order, a chunk at a time."""
        for s, e in self._chunks(self._span):
            yield s + np.flatnonzero(self._cell[s:e] >= 0)

    def _compact(self) -> None:
        """Squeeze the holes out of the ring, in place: pending predictions move towards the
        tail, keeping their order, and the head moves past the slots freed.

        Only the part up to the last hole is read. Chunks are moved last first: a chunk's
        destinations are at or after its sources and before everything already written, so
        it is read whole before it is written and nothing is overwritten before it is read.
        """
        want = self._span - self._live
        prefix: list[tuple[int, int, int]] = []  # chunks: (start, stop, ring position of the stop)
        holes = stop = 0
        for s, e in self._chunks(self._span):
            holes += int(np.count_nonzero(self._cell[s:e] < 0))
            stop += e - s
            prefix.append((s, e, stop))
            if holes >= want:
                break
        dst = stop  # ring position after the last slot written
        for s, e, end in reversed(prefix):
            src = s + np.flatnonzero(self._cell[s:e] >= 0)
            k = src.size
            if dst == end and k == e - s:  # a full chunk already in place
                dst -= k
                continue
            moved = np.take(self._slots, src)
            self._cell[s:e] = -1
            dst -= k
            for a, b in self._segments(dst, dst + k):  # slices: a structured fancy write is slow
                self._slots[a:b] = moved[: b - a]
                self._table.vals[moved["c"][: b - a]] = np.arange(a, b)
                moved = moved[b - a :]
        self._advance(dst)  # the first dst ring positions are now free

    def _regrow(self, size: int) -> None:
        """Move to a ring of ``size`` slots, the pending predictions first in ring order."""
        slots = self._new_slots(size)
        dst = 0
        for src in self._live_chunks():
            slots[dst : dst + src.size] = moved = np.take(self._slots, src)
            self._table.vals[moved["c"]] = np.arange(dst, dst + src.size)
            dst += src.size
        self._use(slots)
        self._head, self._span = 0, dst

    def _new_slots(self, size: int) -> NDArray[np.void]:
        slots = np.zeros(size, dtype=self._dtype)
        slots["c"] = -1
        return slots

    def _use(self, slots: NDArray[np.void]) -> None:
        """Make ``slots`` the ring, with views of its fields."""
        self._slots = slots
        self._time = slots["t"]
        self._cell = slots["c"]
        self._cols = {name: slots[f"p{i}"] for i, name in enumerate(self._specs)}

    def _reserve_table(self, n: int) -> bool:
        """Grow the hash table (doubling, up to its final size) if ``n`` more keys would load it
        beyond _MAX_LOAD; returns whether it did."""
        old = self._table
        if old.live + n <= _MAX_LOAD * old.cells or old.buckets >= self._max_buckets:
            return False
        want = math.ceil((old.live + n) / (_MAX_LOAD * _B))
        new = HashTable(min(self._max_buckets, max(2 * old.buckets, want)), self._index)
        step = max(1, _CHUNK // _B)
        for start in range(0, old.buckets, step):
            used = (old.keys[start : start + step] != 0).ravel().nonzero()[0] + start * _B
            vals = old.vals[used]
            cells = new.insert(old.flat_keys[used], vals)
            pending = vals >= 0
            self._cell[vals[pending]] = cells[pending]
            taken = ~pending
            self._taken[-2 - vals[taken]] = cells[taken]
        self._table = new
        return True

    def _remember(self, cells: NDArray[np.intp]) -> None:
        """Mark labelled ids as such in the table; forget the oldest beyond remember_taken."""
        for start in range(0, cells.size, self.remember_taken):
            part = cells[start : start + self.remember_taken]
            count = self._taken_count
            if count + part.size > self._taken.size and self._taken.size < self.remember_taken:
                grown = min(self.remember_taken, max(2 * self._taken.size, count + part.size))
                self._taken = np.concatenate([self._taken, np.zeros(grown - self._taken.size, self._index)])
            size = self._taken.size
            # The id pushed n-th goes to position n % size; from n = size on it replaces one.
            old = [self._taken[a:b] for a, b in _ring(max(count, size), count + part.size, size)]
            if old:
                self._table.delete(old[0] if len(old) == 1 else np.concatenate(old))
            done = 0
            for a, b in _ring(count, count + part.size, size):
                self._taken[a:b] = part[done : done + b - a]
                self._table.vals[part[done : done + b - a]] = -2 - np.arange(a, b)
                done += b - a
            self._taken_count += part.size


def _ring(start: int, stop: int, size: int) -> list[tuple[int, int]]:
    """The (at most two) ranges of positions in a ring of ``size`` of the items pushed
    ``start``-th to ``stop``-th (excluded)."""
    a, n = start % size, stop - start
    if n <= 0:
        return []
    if a + n <= size:
        return [(a, a + n)]
    return [(a, size), (0, a + n - size)]
