"""Time-bucketed ring of count vectors: a sliding window with bounded memory.

Adding touches one bucket; reading the window is O(width) because a running total is kept
(expired buckets are subtracted from it as the ring advances). Memory is
``n_buckets × width × 8`` bytes whatever the traffic.
"""

from __future__ import annotations

import math

import numpy as np


class BucketRing:
    """``n_buckets`` buckets of ``bucket_seconds`` each, each a vector of ``width`` counts."""

    def __init__(self, width: int, n_buckets: int, bucket_seconds: float, now: float,
                 dtype: type = np.int64) -> None:
        if width < 1 or n_buckets < 1 or not bucket_seconds > 0:
            raise ValueError("width and n_buckets must be >= 1 and bucket_seconds > 0")
        self.bucket_seconds = float(bucket_seconds)
        self.n_buckets = n_buckets
        self._buckets: np.ndarray = np.zeros((n_buckets, width), dtype=dtype)
        self._total: np.ndarray = np.zeros(width, dtype=dtype)
        self._epoch = self._epoch_of(now)

    @property
    def width(self) -> int:
        return self._total.size

    @property
    def nbytes(self) -> int:
        return self._buckets.nbytes + self._total.nbytes

    def _epoch_of(self, t: float) -> int:
        return math.floor(t / self.bucket_seconds)

    def advance(self, now: float) -> None:
        """Expire buckets that fell out of the window. Time never runs backwards here."""
        epoch = self._epoch_of(now)
        if epoch <= self._epoch:
            return
        steps = min(epoch - self._epoch, self.n_buckets)
        for e in range(epoch - steps + 1, epoch + 1):
            slot = e % self.n_buckets
            self._total -= self._buckets[slot]
            self._buckets[slot] = 0
        if steps == self.n_buckets and np.issubdtype(self._total.dtype, np.floating):
            self._total[:] = 0  # drop accumulated rounding once the ring is fully recycled
        self._epoch = epoch

    def add(self, now: float, vector: np.ndarray) -> None:
        """Add a full-width vector to the bucket of ``now``."""
        self.advance(now)
        self._buckets[self._epoch % self.n_buckets] += vector
        self._total += vector

    def add_indices(self, now: float, indices: np.ndarray) -> None:
        """Count each index once (a vectorised histogram of bin indices)."""
        if indices.size:
            self.add(now, np.bincount(indices, minlength=self.width).astype(self._total.dtype, copy=False))

    def total(self, now: float) -> np.ndarray:
        """Sum of the buckets in the window ending at ``now`` (a copy)."""
        self.advance(now)
        return self._total.copy()

    def recent(self, now: float, n_buckets: int) -> np.ndarray:
        """Sum of the last ``n_buckets`` buckets, the current one included: a shorter window from the
        same ring, so testing recent traffic costs no memory. O(n_buckets × width)."""
        self.advance(now)
        k = max(1, min(n_buckets, self.n_buckets))
        slots = [(self._epoch - i) % self.n_buckets for i in range(k)]
        return self._buckets[slots].sum(axis=0)

    def state(self) -> dict[str, np.ndarray]:
        """Arrays that rebuild this ring exactly (checkpoints)."""
        return {"buckets": self._buckets, "total": self._total, "epoch": np.asarray(self._epoch, dtype=np.int64)}

    def restore(self, state: dict[str, np.ndarray]) -> None:
        """Load ``state()`` output; time then continues from the clock, so expired buckets expire."""
        buckets, total = state["buckets"], state["total"]
        mine = self._buckets
        if buckets.shape != mine.shape or buckets.dtype != mine.dtype or total.shape != self._total.shape:
            raise ValueError(f"window shape {buckets.shape} does not match {self._buckets.shape}")
        self._buckets = buckets.copy()
        self._total = total.copy()
        self._epoch = int(state["epoch"])
