"""Null distributions of the drift statistics: what "no drift" looks like at a window of n records.

A fixed effect-size threshold is not a statement about evidence: on 200 records sampling noise
alone crosses it, on a million records a real change never does. mlmon instead flags a feature when
its statistic exceeds the statistic's *null quantile* for the window's actual n against a baseline
of N rows, at a configured false-alarm rate alpha, and the change is larger than a relevance floor.

How each null is obtained (all pure numpy/scipy, computed once per feature when a monitor starts):

* **KS on fine bins** (numeric). Under no drift, sqrt(n_eff) (F_window - F_baseline) at the bin
  boundaries tends to a Brownian bridge B observed at the baseline's cumulative shares t_j, with
  n_eff = n N / (n + N) (both sides are samples). So sqrt(n_eff) * D tends to max_j |B(t_j)|: the
  Kolmogorov distribution when the bins are fine and the data continuous, and a smaller one for a
  discrete feature (Poisson counts, a few distinct values) whose bins are few and uneven. The
  distribution of max_j |B(t_j)| is simulated (``DRAWS`` bridges with a fixed seed, so every replica
  computes identical thresholds) and stored as quantiles; Stephens' finite-sample correction
  (sqrt(n) + 0.12 + 0.11 / sqrt(n)) maps the limit to the window's n.
* **Wasserstein** (numeric): the same simulated bridges, integrated over the bin widths exactly as
  ``drift.wasserstein_from_counts`` integrates the observed CDF gap, give sqrt(n_eff) * W.
* **chi-square** (categorical): the two-sample homogeneity statistic is chi-square with (non-empty
  bins - 1) degrees of freedom; its critical value is exact in the limit (``special.chdtri``).
* **PSI, KL, JS** (coarse bins): second-order expansions of the same table give PSI ~ X2 / n_eff,
  KL ~ X2 / (2 n_eff) and JS distance ~ sqrt(X2 / (8 n_eff ln 2)), with X2 the chi-square quantile.
  These are approximations (PSI and KL floor empty bins at ``drift.EPS``); KS and chi-square are
  the calibrated defaults.

Below a survival probability of ``TAIL_FROM`` the simulation has too few exceedances, so the
quantile comes from a Gaussian-type tail, log P(T > x) = a - b x^2, fitted to the simulated tail
between ``TAIL_FROM`` and ``TAIL_FIT_TOP``; for the sup of a Gaussian process that is the shape of the
tail, and the fit is anchored where the simulation is accurate.

The relevance floor turns "certain" into "certain and not negligible": a threshold is never below
the method's minimum effect size (``config.DEFAULT_MIN_EFFECT``, overridable per feature; for
chi-square Cohen's w, so the floor on the statistic is n_eff * w^2).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy import special

from exporter.drift import gap_area

DRAWS = 20_000
"""Simulated bridges per feature: enough for quantiles down to ~1e-3 directly (20 exceedances)."""
SEED = 8_675_309
TAIL_FROM = 2e-3
TAIL_FIT_TOP = 5e-2
_SURVIVAL_GRID = np.geomspace(0.5, TAIL_FROM, 40)

@dataclass(frozen=True)
class NullQuantiles:
    """Quantiles of a scaled statistic sqrt(n_eff) * T under no drift, with a fitted upper tail."""

    survival: np.ndarray
    values: np.ndarray
    tail_a: float
    tail_b: float

    def quantile(self, alpha: float) -> float:
        """The value x with P(sqrt(n_eff) * T > x) = alpha under no drift."""
        if alpha >= self.survival[0]:
            return float(self.values[0])
        if alpha >= self.survival[-1]:
            # Interpolate linearly in log(survival), where the quantile function is smooth.
            return float(np.interp(-math.log(alpha), -np.log(self.survival), self.values))
        if not self.tail_b > 0:
            return float(self.values[-1])
        return float(math.sqrt(max((self.tail_a - math.log(alpha)) / self.tail_b, self.values[-1] ** 2)))


def _quantiles(samples: np.ndarray) -> NullQuantiles:
    samples = np.sort(samples)
    values = np.quantile(samples, 1.0 - _SURVIVAL_GRID)
    # Tail fit: log S(x) = a - b x^2 over the simulated points between TAIL_FIT_TOP and TAIL_FROM.
    m = samples.size
    ranks = np.arange(m, 0, -1) / (m + 1.0)  # survival of each sorted sample
    sel = (ranks <= TAIL_FIT_TOP) & (ranks >= TAIL_FROM)
    x2, y = samples[sel] ** 2, np.log(ranks[sel])
    if x2.size >= 3 and np.ptp(x2) > 0:
        slope, intercept = np.polyfit(x2, y, 1)
        a, b = float(intercept), float(-slope)
    else:
        a, b = 0.0, 0.0
    return NullQuantiles(survival=_SURVIVAL_GRID, values=np.maximum.accumulate(values), tail_a=a, tail_b=b)


def bridge_at(shares: np.ndarray, draws: int = DRAWS, seed: int = SEED) -> np.ndarray:
    """Simulated Brownian bridges at the interior boundaries of bins with these shares.

    Returns (draws, k - 1) values B(t_j), t_j the cumulative shares. Built from independent Gaussian
    increments with variance = each bin's share, minus t_j W(1); a bin with share 0 adds nothing.
    """
    shares = np.asarray(shares, dtype=np.float64)
    total = shares.sum()
    p = shares / total if total > 0 else shares
    rng = np.random.default_rng(seed)
    w = np.cumsum(rng.standard_normal((draws, p.size)) * np.sqrt(p), axis=1)
    t = np.cumsum(p)
    return w[:, :-1] - w[:, -1:] * t[:-1]


def ks_null(shares: np.ndarray) -> NullQuantiles:
    """Null of sqrt(n_eff) * D for KS over bins with these baseline shares.

    The null depends only on the cumulative shares at the boundaries, rounded here to 1e-3 (far
    below what moves a quantile): features binned at their own quantiles share one grid, so a model
    with many numeric features simulates it once (``_ks_null_on_grid`` is cached). The result is a
    function of the baseline alone, so every replica computes the same thresholds.
    """
    shares = np.asarray(shares, dtype=np.float64)
    total = shares.sum()
    cumulative = np.cumsum(shares)[:-1] / total if total > 0 else np.zeros(max(shares.size - 1, 0))
    return _ks_null_on_grid(tuple(np.round(cumulative, 3).tolist()))


@functools.lru_cache(maxsize=256)
def _ks_null_on_grid(grid: tuple[float, ...]) -> NullQuantiles:
    if not grid:
        return NullQuantiles(_SURVIVAL_GRID, np.zeros_like(_SURVIVAL_GRID), 0.0, 0.0)
    t = np.array([0.0, *grid, 1.0])
    bridge = bridge_at(np.maximum(np.diff(t), 0.0))
    return _quantiles(np.abs(bridge).max(axis=1))


def wasserstein_null(shares: np.ndarray, widths: np.ndarray, scale: float) -> NullQuantiles:
    """Null of sqrt(n_eff) * W / scale, W integrated over ``widths`` (the k bin widths)."""
    bridge = bridge_at(shares)
    g = np.zeros((bridge.shape[0], bridge.shape[1] + 2))
    g[:, 1:-1] = bridge
    return _quantiles(gap_area(g, np.asarray(widths, dtype=np.float64)) / scale)


def effective_n(n: np.ndarray | float, big_n: np.ndarray | float) -> np.ndarray:
    """n N / (n + N): the sample size of a two-sample comparison; 0 when either side is empty."""
    n, big_n = np.asarray(n, dtype=np.float64), np.asarray(big_n, dtype=np.float64)
    total = n + big_n
    return np.where((n > 0) & (big_n > 0), n * big_n / np.where(total > 0, total, 1.0), 0.0)


def stephens_root(n_eff: np.ndarray) -> np.ndarray:
    """sqrt(n) + 0.12 + 0.11 / sqrt(n): Stephens' finite-sample scaling of the KS limit."""
    root = np.sqrt(np.maximum(n_eff, 1e-12))
    return root + 0.12 + 0.11 / root


def chi2_critical(alpha: float | np.ndarray, dof: np.ndarray | float) -> np.ndarray:
    """The chi-square statistic exceeded with probability alpha at ``dof`` degrees of freedom."""
    return np.asarray(special.chdtri(np.maximum(np.asarray(dof, dtype=np.float64), 1.0), alpha))


def coarse_threshold(method: str, alpha: float | np.ndarray, dof: np.ndarray | float,
                     n_eff: np.ndarray | float) -> np.ndarray:
    """Null quantile of PSI, KL or JS on coarse bins from the chi-square limit of the same table."""
    x2 = chi2_critical(alpha, dof) / np.maximum(n_eff, 1e-12)
    if method == "psi":
        return x2
    if method == "kl":
        return x2 / 2.0
    if method == "js":
        return np.sqrt(x2 / (8.0 * math.log(2.0)))
    raise ValueError(f"no chi-square approximation for method {method!r}")
