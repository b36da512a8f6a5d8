"""Drift statistics over binned count vectors.

Everything here is a pure function of count vectors produced by the monitor's binning, so an
evaluation costs O(bins) whatever the traffic was. Nothing here knows about HTTP, Prometheus or
the rest of mlmon; only numpy and scipy.

Binning convention (shared with the baseline builder and the monitor): a numeric feature has
``k - 1`` sorted interior ``edges`` and ``k`` bins, value ``x`` goes to bin
``np.searchsorted(edges, x, side="left")``, so bin ``i`` is ``(edges[i-1], edges[i]]`` with the
outer bins open towards -inf / +inf. A categorical feature has one slot per baseline top-K
category plus a final ``__other__`` slot. ``baseline_counts`` and ``current_counts`` always use
the same bins, so they must have the same length.

Epsilon: a proportion below ``EPS`` (1e-4) is raised to ``EPS`` in PSI and KL, because a bin that
is empty on one side (an unseen category, a tail the training data never reached) would otherwise
make ``ln(c / b)`` infinite and pin the score at +inf for as long as the window holds one such
record; 1e-4 is far below the resolution of any window mlmon evaluates (1 / min_samples = 5e-3 by
default) and of a 1 % quantile bin, so it only matters for truly empty bins. It is the same
constant everywhere so that scores are comparable across features. JS, KS, Wasserstein and the
two-sample chi-square need no epsilon: they stay finite when a bin is empty.

Shapes: every function takes either one feature as 1-D count vectors and returns Python floats,
or many features at once as 2-D ``(rows, bins)`` arrays (one feature per row, all rows with the
same bin count) and returns float64 arrays of length ``rows``. The batch form exists because an
evaluation scores ~100 features with ~6 statistics each, and per-call validation and small numpy
calls dominated its cost; a whole kind of feature now costs one validation and a handful of
array operations. A 1-D call is the batch code on one row, so both forms give the same numbers.

Empty inputs: every function returns NaN (or a pair of NaN) for a row whose baseline or current
total is zero, because "no data" is not "no drift"; the caller leaves the gauge absent. Zero
totals are replaced by 1 before dividing (the row is all zeros, so every intermediate stays
finite) and the row is set to NaN at the end, so no numpy warning is ever raised. Malformed inputs
(shape mismatch, negative or non-finite counts, neither 1-D nor 2-D, no bins) raise
``ValueError``: those are bugs, not empty windows.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike
from scipy import special

__all__ = [
    "CHI2_MIN_EXPECTED",
    "EPS",
    "chi_square",
    "chi_square_dof",
    "gap_area",
    "js_distance",
    "kl_divergence",
    "ks_from_counts",
    "psi",
    "wasserstein_from_counts",
]

EPS: float = 1e-4
"""Floor for proportions in PSI, KL and chi-square expected shares (see the module docstring)."""

_NAN = float("nan")

CHI2_MIN_EXPECTED = 5.0
"""Expected window count below which the monitor pools a category into one column for chi-square
(the textbook rule of thumb; see ``_homogeneity_table``)."""

Score = float | np.ndarray
"""A Python float for 1-D input, a float64 array of length ``rows`` for 2-D input."""


class _Counts:
    """Validated counts as (rows, bins) float64, plus what every statistic needs from them."""

    __slots__ = ("b", "c", "empty", "nb", "nc", "one_d")

    def __init__(self, baseline_counts: ArrayLike, current_counts: ArrayLike) -> None:
        with np.errstate(over="ignore"):  # an overflowing total is reported as a ValueError below
            b, nb = _as_counts("baseline_counts", baseline_counts)
            c, nc = _as_counts("current_counts", current_counts)
        if b.ndim != c.ndim:
            raise ValueError(
                "baseline_counts and current_counts must both be 1-D or both be 2-D, "
                f"got shapes {b.shape} and {c.shape}"
            )
        if b.shape[-1] != c.shape[-1]:
            raise ValueError(
                "baseline_counts and current_counts must have the same number of bins, "
                f"got {b.shape[-1]} and {c.shape[-1]}"
            )
        if b.shape != c.shape:
            raise ValueError(
                "baseline_counts and current_counts must have the same number of rows, "
                f"got {b.shape[0]} and {c.shape[0]}"
            )
        self.one_d = b.ndim == 1
        self.b, self.c = b.reshape(-1, b.shape[-1]), c.reshape(-1, c.shape[-1])
        # Row totals as a column, to broadcast against the bins.
        nb, nc = nb.reshape(-1, 1), nc.reshape(-1, 1)
        self.empty = None
        if not (nb.min(initial=1.0) > 0 and nc.min(initial=1.0) > 0):
            # Empty rows divide by 1 instead of 0 (their counts are all 0, so everything stays
            # finite and warning-free) and are set to NaN by ``out``.
            self.empty = ((nb == 0) | (nc == 0)).ravel()
            nb, nc = np.where(nb == 0, 1.0, nb), np.where(nc == 0, 1.0, nc)
        self.nb, self.nc = nb, nc

    def out(self, values: np.ndarray) -> Score:
        """NaN for empty rows; a Python float for 1-D input, so scalar callers see no numpy types."""
        if self.empty is not None:
            values = np.where(self.empty, _NAN, values)
        return float(values[0]) if self.one_d else values


def _as_counts(name: str, counts: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Validated float64 counts and their totals over the last axis.

    C order, so that a row reduces in the same order whether it came alone or in a batch. Besides
    the totals, which every statistic needs, the happy path costs two reductions: a NaN fails
    ``min >= 0``, and with no negative counts an infinite count shows as an infinite total. Only a
    failure looks closer, to name the problem.
    """
    arr = np.asarray(counts, dtype=np.float64, order="C")
    if arr.ndim not in (1, 2):
        raise ValueError(
            f"{name} must be a 1-D vector of bin counts or a 2-D (rows, bins) array, got shape {arr.shape}"
        )
    if arr.shape[-1] == 0:
        raise ValueError(f"{name} has no bins; a feature always has at least one bin")
    totals = arr.sum(axis=-1)
    if not (arr.min(initial=0.0) >= 0 and totals.max(initial=0.0) < math.inf):
        if not np.isfinite(arr).all():
            raise ValueError(f"{name} contains NaN or infinite counts")
        if (arr < 0).any():
            raise ValueError(f"{name} contains negative counts")
        raise ValueError(f"{name} totals overflow float64")
    return arr, totals


def _floored(p: np.ndarray) -> np.ndarray:
    """Raise proportions below EPS to EPS, so logs and divisions stay finite."""
    return np.maximum(p, EPS)


def _cdf_gap(x: _Counts) -> np.ndarray:
    """F_cur - F_base at the interior bin boundaries, shape (rows, bins - 1)."""
    return np.cumsum(x.c[:, :-1], axis=1) / x.nc - np.cumsum(x.b[:, :-1], axis=1) / x.nb


def psi(baseline_counts: ArrayLike, current_counts: ArrayLike) -> Score:
    """Population Stability Index: sum over bins of (c - b) * ln(c / b) on floored proportions.

    Symmetric in its arguments and never negative (each term is a product of two numbers with the
    same sign), which is why it is the conventional coarse-bin drift score.
    """
    x = _Counts(baseline_counts, current_counts)
    pb = _floored(x.b / x.nb)
    pc = _floored(x.c / x.nc)
    return x.out(((pc - pb) * np.log(pc / pb)).sum(axis=1))


def kl_divergence(baseline_counts: ArrayLike, current_counts: ArrayLike) -> Score:
    """KL(current || baseline) in nats on floored proportions: the cost of coding live traffic
    with the training distribution.

    Flooring without renormalising can push a value a hair below zero when the two distributions
    are nearly equal; the result is clipped at 0 because a divergence is never negative.
    """
    x = _Counts(baseline_counts, current_counts)
    pb = _floored(x.b / x.nb)
    pc = _floored(x.c / x.nc)
    return x.out(np.maximum((pc * np.log(pc / pb)).sum(axis=1), 0.0))


def js_distance(baseline_counts: ArrayLike, current_counts: ArrayLike) -> Score:
    """Jensen-Shannon distance with base-2 logs, so 0 means identical and 1 means disjoint.

    Both sides are compared with their mixture, which has mass wherever either side has, so no
    epsilon is needed; ``rel_entr`` treats 0 * ln(0) as 0 without warnings.
    """
    x = _Counts(baseline_counts, current_counts)
    pb = x.b / x.nb
    pc = x.c / x.nc
    m = (pb + pc) / 2.0
    js = (special.rel_entr(pb, m).sum(axis=1) + special.rel_entr(pc, m).sum(axis=1)) / (2.0 * math.log(2.0))
    # Rounding can leave a tiny negative number for near-identical inputs; sqrt of it would be NaN.
    return x.out(np.sqrt(np.maximum(js, 0.0)))


def ks_from_counts(baseline_counts: ArrayLike, current_counts: ArrayLike) -> tuple[Score, Score]:
    """Two-sample Kolmogorov-Smirnov statistic and asymptotic p-value from fine-bin counts.

    The statistic is max |F_cur - F_base| over the bin boundaries, a lower bound on the raw-sample
    statistic that is off by at most one baseline bin's share (about 1 % with 100 quantile bins).
    The p-value is the limiting (Kolmogorov) distribution at sqrt(n * m / (n + m)) * D with
    n = sum(baseline), m = sum(current): ``scipy.special.kolmogorov``, the textbook large-sample
    test. scipy's ``ks_2samp(method="asymp")`` instead evaluates the exact one-sample
    distribution at a rounded size, which costs milliseconds per call; windows hold hundreds to
    millions of records, where the two agree closely, and evaluation must stay O(bins).
    """
    x = _Counts(baseline_counts, current_counts)
    # The last boundary is +inf where both CDFs are 1, so it is left out; with one bin no boundary
    # is left and ``initial`` makes D = 0.
    d = np.minimum(np.abs(_cdf_gap(x)).max(axis=1, initial=0.0), 1.0)
    n_eff = (x.nb * x.nc / (x.nb + x.nc)).ravel()
    p = np.minimum(np.maximum(special.kolmogorov(np.sqrt(n_eff) * d), 0.0), 1.0)
    return x.out(d), x.out(p)


def _homogeneity_table(x: _Counts, min_expected: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(window, baseline, used) columns of the 2 × k table the chi-square test runs on.

    Bins empty on both sides are not categories. With ``min_expected`` > 0, the bins whose expected
    window count n (c + b) / (n + N) is below it are pooled into one extra column: the classic rule
    that keeps Pearson's statistic close to its chi-square limit when a window is small against many
    categories (30 Zipf categories at n = 200 leave most of them with under one expected record).
    """
    used = (x.c + x.b) > 0
    if not min_expected > 0:
        return x.c, x.b, used
    rare = used & (x.nc * (x.c + x.b) / (x.nc + x.nb) < min_expected)
    keep = used & ~rare
    c = np.concatenate([np.where(keep, x.c, 0.0), (x.c * rare).sum(axis=1, keepdims=True)], axis=1)
    b = np.concatenate([np.where(keep, x.b, 0.0), (x.b * rare).sum(axis=1, keepdims=True)], axis=1)
    return c, b, np.concatenate([keep, rare.any(axis=1, keepdims=True)], axis=1)


def chi_square(baseline_counts: ArrayLike, current_counts: ArrayLike,
               min_expected: float = 0.0) -> tuple[Score, Score]:
    """Pearson chi-square test of homogeneity between the window and the baseline (a 2 × k table).

    The baseline is itself a sample, so the test is two-sample: with n window and N baseline records
    and pooled shares, the statistic is sum_j (c_j N - n b_j)^2 / (n N (c_j + b_j)) over the bins that
    hold at least one record on either side, with (that many bins - 1) degrees of freedom. A bin empty
    on both sides (a top-K slot or ``__other__`` that nobody used) is not a category and adds neither
    statistic nor a degree of freedom; no epsilon is involved. It equals
    ``scipy.stats.chi2_contingency([current, baseline], correction=False)`` on the non-empty columns
    (after pooling the rare ones, see ``_homogeneity_table``, when ``min_expected`` is set).
    With fewer than two non-empty bins there is nothing to compare: statistic 0 and p-value NaN.
    The p-value is ``chdtrc`` (what ``scipy.stats.chi2.sf`` calls), per row.
    """
    x = _Counts(baseline_counts, current_counts)
    c, b, used = _homogeneity_table(x, min_expected)
    pooled = c + b
    terms = (c * x.nb - x.nc * b) ** 2 / np.where(used, pooled, 1.0)
    stat = terms.sum(axis=1) / (x.nc * x.nb).ravel()
    dof = used.sum(axis=1) - 1
    with np.errstate(invalid="ignore"):
        p = np.where(dof >= 1, special.chdtrc(np.maximum(dof, 1), stat), _NAN)
    return x.out(stat), x.out(p)


def chi_square_dof(baseline_counts: ArrayLike, current_counts: ArrayLike, min_expected: float = 0.0) -> Score:
    """Degrees of freedom ``chi_square`` uses with the same arguments: used columns minus one."""
    x = _Counts(baseline_counts, current_counts)
    return x.out(_homogeneity_table(x, min_expected)[2].sum(axis=1).astype(np.float64) - 1.0)


def _per_row(name: str, value: ArrayLike, rows: int) -> np.ndarray:
    """A scalar or one value per row, as a column that broadcasts against (rows, bins)."""
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim != 0 and arr.shape != (rows,):
        raise ValueError(f"{name} must be a scalar or a vector of {rows} values (one per row), got shape {arr.shape}")
    return arr.reshape(-1, 1)


def _check_support(lo: ArrayLike, hi: ArrayLike, lo_a: np.ndarray, hi_a: np.ndarray, one_d: bool) -> None:
    """Name the first row whose [lo, hi] is not finite or reversed (the slow path of a failed check)."""
    rows = max(lo_a.shape[0], hi_a.shape[0])
    lo_a, hi_a = np.broadcast_to(lo_a, (rows, 1)).ravel(), np.broadcast_to(hi_a, (rows, 1)).ravel()
    bad = ~(np.isfinite(lo_a) & np.isfinite(hi_a))
    if bad.any():
        if one_d:
            raise ValueError(f"lo and hi must be finite, got lo={lo!r}, hi={hi!r}")
        i = int(np.argmax(bad))
        raise ValueError(f"lo and hi must be finite, got lo={float(lo_a[i])!r}, hi={float(hi_a[i])!r} in row {i}")
    bad = lo_a > hi_a
    if bad.any():
        i = int(np.argmax(bad))
        where = "" if one_d else f" in row {i}"
        raise ValueError(f"lo must not exceed hi, got lo={float(lo_a[i])!r}, hi={float(hi_a[i])!r}{where}")


def gap_area(g: np.ndarray, width: np.ndarray) -> np.ndarray:
    """Integral of |g| for a CDF difference ``g`` that is linear between boundaries.

    ``g`` is (..., k + 1) values at the boundaries and ``width`` the (..., k) segment widths. On a
    segment where g keeps its sign the integral is a trapezoid; where it changes sign, two triangles
    meeting at the root: w * (g0^2 + g1^2) / (2 (|g0| + |g1|)). Shared with the null-distribution
    simulation (``calibration``), which integrates simulated CDF gaps the same way.
    """
    g0, g1 = g[..., :-1], g[..., 1:]
    a0, a1 = np.abs(g0), np.abs(g1)
    crossing = g0 * g1 < 0
    safe_sum = np.where(crossing, a0 + a1, 1.0)
    area = np.where(crossing, width * (g0 * g0 + g1 * g1) / (2.0 * safe_sum), width * (a0 + a1) / 2.0)
    return area.sum(axis=-1)


def wasserstein_from_counts(
    edges: ArrayLike,
    baseline_counts: ArrayLike,
    current_counts: ArrayLike,
    lo: ArrayLike,
    hi: ArrayLike,
    scale: ArrayLike,
) -> Score:
    """Wasserstein-1 (earth mover's) distance between two binned distributions, in units of ``scale``.

    Mass is spread uniformly inside each bin, and the two open outer bins are closed at ``lo`` and
    ``hi`` (the baseline min and max), so both CDFs are piecewise linear on the boundaries
    ``[lo, *edges, hi]`` and W1 = integral of |F_cur - F_base| is exact on each segment. Current
    values beyond the baseline range count as if they sat inside it, so a shift past the training
    range is underestimated rather than unbounded. Edges outside ``[lo, hi]`` are clipped to it so
    no bin has a negative width. Dividing by ``scale`` (the baseline std) makes one threshold fit
    every feature; when ``scale`` is 0, negative or not finite (a constant feature) the distance is
    returned unscaled (scale 1.0).

    With 2-D counts, ``edges`` is (rows, bins - 1) and ``lo``, ``hi``, ``scale`` are scalars or
    one value per row.
    """
    x = _Counts(baseline_counts, current_counts)
    rows, k = x.b.shape
    e = np.asarray(edges, dtype=np.float64)
    if x.one_d:
        if e.ndim != 1 or e.size != k - 1:
            raise ValueError(
                f"edges must be a 1-D vector of {k - 1} interior edges for {k} bins, got shape {e.shape}"
            )
        e = e.reshape(1, -1)
    elif e.shape != (rows, k - 1):
        raise ValueError(
            f"edges must be a ({rows}, {k - 1}) array, {k - 1} interior edges for each row of {k} bins, "
            f"got shape {e.shape}"
        )
    if not np.isfinite(e).all():
        raise ValueError("edges contains NaN or infinite values")
    if (e[:, 1:] < e[:, :-1]).any():
        raise ValueError("edges must be sorted in increasing order")
    lo_a, hi_a = _per_row("lo", lo, rows), _per_row("hi", hi, rows)
    # -inf < lo <= hi < inf is false for NaN too, so one combined test covers the happy path.
    if not ((lo_a <= hi_a) & (lo_a > -math.inf) & (hi_a < math.inf)).all():
        _check_support(lo, hi, lo_a, hi_a, x.one_d)
    s = _per_row("scale", scale, rows)
    s = np.where(np.isfinite(s) & (s > 0), s, 1.0).ravel()

    bounds = np.empty((rows, k + 1))
    bounds[:, :1], bounds[:, -1:] = lo_a, hi_a
    np.minimum(np.maximum(e, lo_a), hi_a, out=bounds[:, 1:-1])  # clip the edges to [lo, hi]
    width = bounds[:, 1:] - bounds[:, :-1]
    # CDF difference at every boundary: 0 at lo and at hi by construction, exact zeros there
    # rather than 1 - 1 after rounding.
    g = np.zeros((rows, k + 1))
    g[:, 1:-1] = _cdf_gap(x)
    return x.out(gap_area(g, width) / s)
