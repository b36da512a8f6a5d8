"""BucketRing against a brute-force sum of the events that fall inside the window."""

from __future__ import annotations

import numpy as np
import pytest

from exporter.window import BucketRing


def test_total_equals_brute_force_over_random_traffic():
    rng = np.random.default_rng(0)
    ring = BucketRing(width=7, n_buckets=12, bucket_seconds=5.0, now=0.0)
    events: list[tuple[float, np.ndarray]] = []
    t = 0.0
    for _ in range(400):
        t += float(rng.exponential(1.5))
        if rng.random() < 0.05:
            t += float(rng.uniform(0, 80))  # idle gaps, some longer than the whole window
        idx = rng.integers(0, 7, rng.integers(0, 20))
        ring.add_indices(t, idx)
        events.append((t, np.bincount(idx, minlength=7)))
        current = np.floor(t / 5.0)
        expected = sum((v for s, v in events if current - np.floor(s / 5.0) < 12), np.zeros(7, dtype=np.int64))
        assert np.array_equal(ring.total(t), expected)
        recent = sum((v for s, v in events if current - np.floor(s / 5.0) < 3), np.zeros(7, dtype=np.int64))
        assert np.array_equal(ring.recent(t, 3), recent)
        assert np.array_equal(ring.recent(t, 50), expected)  # longer than the ring: the whole window


def test_float_sums_and_full_expiry():
    ring = BucketRing(width=2, n_buckets=3, bucket_seconds=1.0, now=0.0, dtype=np.float64)
    ring.add(0.5, np.array([0.1, 0.2]))
    ring.add(1.5, np.array([0.3, 0.4]))
    assert ring.total(2.9) == pytest.approx([0.4, 0.6])
    assert ring.total(3.0) == pytest.approx([0.3, 0.4])
    assert np.array_equal(ring.total(100.0), [0.0, 0.0])


def test_time_going_backwards_adds_to_the_current_bucket():
    ring = BucketRing(width=1, n_buckets=2, bucket_seconds=1.0, now=10.0)
    ring.add_indices(10.5, np.array([0]))
    ring.add_indices(9.0, np.array([0]))  # a clock step back never loses data
    assert ring.total(10.9)[0] == 2


def test_memory_is_fixed():
    ring = BucketRing(width=100, n_buckets=60, bucket_seconds=60, now=0)
    assert ring.nbytes == (60 + 1) * 100 * 8


def test_invalid_shape_is_refused():
    with pytest.raises(ValueError):
        BucketRing(width=0, n_buckets=1, bucket_seconds=1, now=0)
