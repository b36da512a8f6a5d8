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

Epsilon: a proportion below ``EPS`` (1e-4) is raised to ``EPS`` in PSI, KL and the chi-square
expected shares, because a bin that is empty on one side (an unseen category, a tail the training
data never reached) would otherwise make ``ln(c / b)`` or ``(o - e)**2 / e`` infinite and pin the
score at +inf for as long as the window holds one such record; 1e-4 is far below the resolution of
any window mlmon evaluates (1 / min_samples = 5e-3 by default) and of a 1 % quantile bin, so it
only matters for truly empty bins. It is the same constant everywhere so that scores are
comparable across features and with one set of thresholds. JS, KS and Wasserstein need no
epsilon: they stay finite when a bin is empty.

Empty inputs: every function returns NaN (or a pair of NaN) when either side has a zero total,
because "no data" is not "no drift"; the caller leaves the gauge absent. Malformed inputs (length
mismatch, negative or non-finite counts, not 1-D, no bins) raise ``ValueError``: those are bugs,
not empty windows.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike
from scipy import special, stats

__all__ = [
    "EPS",
    "chi_square",
    "js_distance",
    "kl_divergence",
    "ks_from_counts",
    "psi",
    "wasserstein_from_counts",
]

EPS: float = 1e-4
"""Floor for proportions in PSI, KL and chi-square expected shares (see the module docstring)."""

_NAN = float("nan")


def _counts_pair(baseline_counts: ArrayLike, current_counts: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert both count vectors to float64, so every statistic sees the same input."""
    b = np.asarray(baseline_counts, dtype=np.float64)
    c = np.asarray(current_counts, dtype=np.float64)
    for name, arr in (("baseline_counts", b), ("current_counts", c)):
        if arr.ndim != 1:
            raise ValueError(f"{name} must be a 1-D vector of bin counts, got shape {arr.shape}")
        if arr.size == 0:
            raise ValueError(f"{name} has no bins; a feature always has at least one bin")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} contains NaN or infinite counts")
        if np.any(arr < 0):
            raise ValueError(f"{name} contains negative counts")
    if b.shape != c.shape:
        raise ValueError(
            f"baseline_counts and current_counts must have the same number of bins, got {b.size} and {c.size}"
        )
    return b, c


def _floored(p: np.ndarray) -> np.ndarray:
    """Raise proportions below EPS to EPS, so logs and divisions stay finite."""
    return np.maximum(p, EPS)


def psi(baseline_counts: ArrayLike, current_counts: ArrayLike) -> float:
    """Population Stability Index: sum over bins of (c - b) * ln(c / b) on floored proportions.

    Symmetric in its arguments and never negative (each term is a product of two numbers with the
    same sign), which is why it is the conventional coarse-bin drift score.
    """
    b, c = _counts_pair(baseline_counts, current_counts)
    nb, nc = b.sum(), c.sum()
    if nb == 0 or nc == 0:
        return _NAN
    pb = _floored(b / nb)
    pc = _floored(c / nc)
    return float(np.sum((pc - pb) * np.log(pc / pb)))


def kl_divergence(baseline_counts: ArrayLike, current_counts: ArrayLike) -> float:
    """KL(current || baseline) in nats on floored proportions: the cost of coding live traffic
    with the training distribution.

    Flooring without renormalising can push a value a hair below zero when the two distributions
    are nearly equal; the result is clipped at 0 because a divergence is never negative.
    """
    b, c = _counts_pair(baseline_counts, current_counts)
    nb, nc = b.sum(), c.sum()
    if nb == 0 or nc == 0:
        return _NAN
    pb = _floored(b / nb)
    pc = _floored(c / nc)
    return max(float(np.sum(pc * np.log(pc / pb))), 0.0)


def js_distance(baseline_counts: ArrayLike, current_counts: ArrayLike) -> float:
    """Jensen-Shannon distance with base-2 logs, so 0 means identical and 1 means disjoint.

    Both sides are compared with their mixture, which has mass wherever either side has, so no
    epsilon is needed; ``rel_entr`` treats 0 * ln(0) as 0 without warnings.
    """
    b, c = _counts_pair(baseline_counts, current_counts)
    nb, nc = b.sum(), c.sum()
    if nb == 0 or nc == 0:
        return _NAN
    pb = b / nb
    pc = c / nc
    m = (pb + pc) / 2.0
    js = (np.sum(special.rel_entr(pb, m)) + np.sum(special.rel_entr(pc, m))) / (2.0 * math.log(2.0))
    # Rounding can leave a tiny negative number for near-identical inputs; sqrt of it would be NaN.
    return math.sqrt(max(float(js), 0.0))


def ks_from_counts(baseline_counts: ArrayLike, current_counts: ArrayLike) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov statistic and asymptotic p-value from fine-bin counts.

    The statistic is max |F_cur - F_base| over the bin boundaries, a lower bound on the raw-sample
    statistic that is off by at most one baseline bin's share (about 1 % with 100 quantile bins).
    The p-value is the limiting (Kolmogorov) distribution at sqrt(n * m / (n + m)) * D with
    n = sum(baseline), m = sum(current): ``scipy.special.kolmogorov``, the textbook large-sample
    test. scipy's ``ks_2samp(method="asymp")`` instead evaluates the exact one-sample
    distribution at a rounded size, which costs milliseconds per call; windows hold hundreds to
    millions of records, where the two agree closely, and evaluation must stay O(bins).
    """
    b, c = _counts_pair(baseline_counts, current_counts)
    nb, nc = b.sum(), c.sum()
    if nb == 0 or nc == 0:
        return _NAN, _NAN
    # The last boundary is +inf where both CDFs are 1, so it is left out.
    diff = np.cumsum(c[:-1]) / nc - np.cumsum(b[:-1]) / nb
    d = float(np.max(np.abs(diff))) if diff.size else 0.0
    d = min(d, 1.0)
    p = float(np.clip(special.kolmogorov(math.sqrt(nb * nc / (nb + nc)) * d), 0.0, 1.0))
    return d, p


def chi_square(baseline_counts: ArrayLike, current_counts: ArrayLike) -> tuple[float, float]:
    """Pearson chi-square goodness-of-fit of the current counts against the baseline shares.

    Expected counts are the floored baseline proportions, renormalised to sum to 1, times the
    current total; renormalising keeps observed and expected totals equal, as the test requires.
    The result equals ``scipy.stats.chisquare(current_counts, f_exp=expected)``; with one bin there
    are no degrees of freedom and the p-value is NaN, as in scipy.
    """
    b, c = _counts_pair(baseline_counts, current_counts)
    nb, nc = b.sum(), c.sum()
    if nb == 0 or nc == 0:
        return _NAN, _NAN
    shares = _floored(b / nb)
    expected = shares / shares.sum() * nc
    stat = float(np.sum((c - expected) ** 2 / expected))
    dof = b.size - 1
    if dof < 1:
        return stat, _NAN
    return stat, float(stats.chi2.sf(stat, dof))


def wasserstein_from_counts(
    edges: ArrayLike,
    baseline_counts: ArrayLike,
    current_counts: ArrayLike,
    lo: float,
    hi: float,
    scale: float,
) -> float:
    """Wasserstein-1 (earth mover's) distance between two binned distributions, in units of ``scale``.

    Mass is spread uniformly inside each bin, and the two open outer bins are closed at ``lo`` and
    ``hi`` (the baseline min and max), so both CDFs are piecewise linear on the boundaries
    ``[lo, *edges, hi]`` and W1 = integral of |F_cur - F_base| is exact on each segment. Current
    values beyond the baseline range count as if they sat inside it, so a shift past the training
    range is underestimated rather than unbounded. Edges outside ``[lo, hi]`` are clipped to it so
    no bin has a negative width. Dividing by ``scale`` (the baseline std) makes one threshold fit
    every feature; when ``scale`` is 0, negative or not finite (a constant feature) the distance is
    returned unscaled (scale 1.0).
    """
    b, c = _counts_pair(baseline_counts, current_counts)
    e = np.asarray(edges, dtype=np.float64)
    if e.ndim != 1 or e.size != b.size - 1:
        raise ValueError(
            f"edges must be a 1-D vector of {b.size - 1} interior edges for {b.size} bins, "
            f"got shape {e.shape}"
        )
    if not np.all(np.isfinite(e)):
        raise ValueError("edges contains NaN or infinite values")
    if np.any(np.diff(e) < 0):
        raise ValueError("edges must be sorted in increasing order")
    lo_f, hi_f = float(lo), float(hi)
    if not (math.isfinite(lo_f) and math.isfinite(hi_f)):
        raise ValueError(f"lo and hi must be finite, got lo={lo!r}, hi={hi!r}")
    if lo_f > hi_f:
        raise ValueError(f"lo must not exceed hi, got lo={lo_f!r}, hi={hi_f!r}")
    nb, nc = b.sum(), c.sum()
    if nb == 0 or nc == 0:
        return _NAN
    s = float(scale)
    if not math.isfinite(s) or s <= 0:
        s = 1.0

    bounds = np.concatenate(([lo_f], np.clip(e, lo_f, hi_f), [hi_f]))
    width = np.diff(bounds)
    # CDF difference at every boundary: 0 at lo and at hi by construction, exact zeros there
    # rather than 1 - 1 after rounding.
    g = np.zeros(b.size + 1)
    g[1:-1] = np.cumsum(c[:-1]) / nc - np.cumsum(b[:-1]) / nb
    g0, g1 = g[:-1], g[1:]
    a0, a1 = np.abs(g0), np.abs(g1)
    crossing = g0 * g1 < 0
    # On a segment where the difference keeps its sign the integral is a trapezoid; where it
    # changes sign it is two triangles meeting at the root: w * (g0^2 + g1^2) / (2 (|g0| + |g1|)).
    safe_sum = np.where(crossing, a0 + a1, 1.0)
    area = np.where(crossing, width * (g0 * g0 + g1 * g1) / (2.0 * safe_sum), width * (a0 + a1) / 2.0)
    return float(np.sum(area)) / s
