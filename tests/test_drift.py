"""Drift statistics against independent references on generated data.

Data are drawn from a seeded generator and binned exactly as mlmon does (quantile interior edges,
``searchsorted(side="left")``), then each statistic is compared with scipy on the raw samples or
with a textbook formula written out here. Every test runs with warnings turned into errors, so a
stray numpy RuntimeWarning fails the suite.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon

from exporter import drift
from exporter.drift import EPS

pytestmark = pytest.mark.filterwarnings("error")

N_BASE = 20_000
N_CUR = 5_000
SEED = 20240601
CATEGORIES = ["a", "b", "c", "d", "e", "f", "g"]
CAT_P_BASE = [0.30, 0.20, 0.15, 0.12, 0.10, 0.08, 0.05]
# Current traffic drifts towards "f"/"g" and brings a category "h" the baseline never saw.
CAT_P_CUR = [0.22, 0.18, 0.14, 0.12, 0.10, 0.11, 0.09, 0.04]


# --- binning, as the baseline builder and the monitor do it ------------------------------------


def fine_edges(base: np.ndarray, n_bins: int = 100) -> np.ndarray:
    return np.unique(np.quantile(base, np.linspace(0, 1, n_bins + 1)[1:-1]))


def bin_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    return np.bincount(np.searchsorted(edges, values, side="left"), minlength=edges.size + 1)


def coarse(counts: np.ndarray, n_coarse: int = 10) -> np.ndarray:
    starts = np.unique(np.linspace(0, counts.size, n_coarse + 1)[:-1].astype(int))
    return np.add.reduceat(counts, starts)


def cat_counts(values: np.ndarray, top: list[str]) -> np.ndarray:
    slot = {name: i for i, name in enumerate(top)}
    codes = np.array([slot.get(v, len(top)) for v in values])  # unknown -> __other__
    return np.bincount(codes, minlength=len(top) + 1)


# --- generated data ---------------------------------------------------------------------------


def _draw(shape: str, rng: np.random.Generator, n: int, shifted: bool) -> np.ndarray:
    if shape == "normal":
        return rng.normal(0.5 if shifted else 0.0, 1.0, n)
    if shape == "lognormal":
        return rng.lognormal(0.3 if shifted else 0.0, 1.0, n)
    if shape == "student_t2":
        return rng.standard_t(2, n) + (0.5 if shifted else 0.0)
    raise AssertionError(shape)


@pytest.fixture(scope="module")
def numeric() -> dict[tuple[str, bool], tuple[np.ndarray, np.ndarray]]:
    """(shape, shifted) -> (baseline sample, current sample)."""
    rng = np.random.default_rng(SEED)
    out = {}
    for shape in ("normal", "lognormal", "student_t2"):
        base = _draw(shape, rng, N_BASE, shifted=False)
        for shifted in (False, True):
            out[(shape, shifted)] = (base, _draw(shape, rng, N_CUR, shifted))
    return out


@pytest.fixture(scope="module")
def categorical() -> tuple[np.ndarray, np.ndarray]:
    """Baseline and current counts over the baseline categories plus __other__."""
    rng = np.random.default_rng(SEED + 1)
    base = rng.choice(CATEGORIES, size=N_BASE, p=CAT_P_BASE)
    cur = rng.choice([*CATEGORIES, "h"], size=N_CUR, p=CAT_P_CUR)
    b, c = cat_counts(base, CATEGORIES), cat_counts(cur, CATEGORIES)
    assert b[-1] == 0 and c[-1] > 0  # the empty baseline slot is what makes EPS matter
    return b, c


def _binned(base: np.ndarray, cur: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    edges = fine_edges(base)
    return edges, bin_counts(base, edges), bin_counts(cur, edges)


ALL_CASES = [(s, sh) for s in ("normal", "lognormal", "student_t2") for sh in (False, True)]


# --- textbook formulas, written out independently ---------------------------------------------


def textbook_psi(b, c) -> float:
    nb, nc = sum(b), sum(c)
    total = 0.0
    for bi, ci in zip(b, c, strict=True):
        p, q = max(bi / nb, EPS), max(ci / nc, EPS)
        total += (q - p) * math.log(q / p)
    return total


def textbook_kl(b, c) -> float:
    nb, nc = sum(b), sum(c)
    total = 0.0
    for bi, ci in zip(b, c, strict=True):
        p, q = max(bi / nb, EPS), max(ci / nc, EPS)
        total += q * math.log(q / p)
    return total


# --- KS ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("shape", "shifted"), ALL_CASES)
def test_ks_statistic_close_to_raw_samples(numeric, shape, shifted):
    base, cur = numeric[(shape, shifted)]
    _, b, c = _binned(base, cur)
    d, _ = drift.ks_from_counts(b, c)
    raw = stats.ks_2samp(base, cur).statistic
    # The binned CDFs equal the raw ECDFs at the edges, so D can only miss the supremum inside a
    # bin: it is a lower bound, off by at most one baseline bin's share (1 % here).
    assert d <= raw + 1e-12
    assert raw - d <= 0.01


@pytest.mark.parametrize(("shape", "shifted"), ALL_CASES)
def test_ks_pvalue_is_the_kolmogorov_limit(numeric, shape, shifted):
    base, cur = numeric[(shape, shifted)]
    _, b, c = _binned(base, cur)
    d, p = drift.ks_from_counts(b, c)
    # Samples whose values are the bin indices have exactly the binned CDFs, so scipy sees the
    # same D; the p-value is the limiting distribution at sqrt(n m / (n + m)) D (textbook).
    ref = stats.ks_2samp(np.repeat(np.arange(b.size), b), np.repeat(np.arange(c.size), c), method="asymp")
    n, m = b.sum(), c.sum()
    assert d == pytest.approx(ref.statistic, rel=1e-12, abs=1e-15)
    assert p == pytest.approx(stats.kstwobign.sf(np.sqrt(n * m / (n + m)) * d), rel=1e-9, abs=1e-300)
    # ... and at these sizes it is close to scipy's finite-size asymptotic p-value.
    assert p == pytest.approx(ref.pvalue, abs=0.02)
    raw_p = stats.ks_2samp(base, cur, method="asymp").pvalue
    if shifted:
        assert p < 1e-6 and raw_p < 1e-6
    else:
        assert p > 1e-3 and raw_p > 1e-3


def test_ks_small_sizes_match_scipy():
    b, c = np.array([3, 0, 2, 1]), np.array([0, 4, 1, 2])
    d, p = drift.ks_from_counts(b, c)
    ref = stats.ks_2samp(np.repeat(np.arange(4), b), np.repeat(np.arange(4), c), method="asymp")
    assert d == pytest.approx(ref.statistic, rel=1e-12)
    assert p == pytest.approx(stats.kstwobign.sf(np.sqrt(6 * 7 / 13) * d), rel=1e-9)


# --- chi-square, JS, PSI, KL ------------------------------------------------------------------


def _chi_inputs(numeric, categorical):
    base, cur = numeric[("normal", True)]
    _, b, c = _binned(base, cur)
    yield categorical
    yield coarse(b), coarse(c)
    yield b, c


def test_chi_square_equals_scipy(numeric, categorical):
    """Two-sample homogeneity over the bins that hold a record on either side (rel 1e-12)."""
    for b, c in _chi_inputs(numeric, categorical):
        b, c = np.append(b, 0), np.append(c, 0)  # an empty slot (unused __other__) must not count
        used = (b + c) > 0
        ref = stats.chi2_contingency(np.stack([c[used], b[used]]), correction=False)
        stat, p = drift.chi_square(b, c)
        assert stat == pytest.approx(ref.statistic, rel=1e-12)
        assert p == pytest.approx(ref.pvalue, rel=1e-12, abs=1e-300)


def test_chi_square_no_drift_is_not_significant(numeric):
    base, cur = numeric[("normal", False)]
    _, b, c = _binned(base, cur)
    _, p = drift.chi_square(coarse(b), coarse(c))
    assert p > 1e-3


def test_js_equals_scipy(numeric, categorical):
    cases = [categorical]
    for shape, shifted in ALL_CASES:
        _, b, c = _binned(*numeric[(shape, shifted)])
        cases += [(b, c), (coarse(b), coarse(c))]
    for b, c in cases:
        ref = jensenshannon(b / b.sum(), c / c.sum(), base=2)
        assert drift.js_distance(b, c) == pytest.approx(ref, abs=1e-12)
        assert 0.0 <= drift.js_distance(b, c) <= 1.0


def test_psi_and_kl_equal_textbook_formula(numeric, categorical):
    cases = [categorical, ([120, 0, 300, 80], [100, 40, 0, 60])]
    for shape, shifted in ALL_CASES:
        _, b, c = _binned(*numeric[(shape, shifted)])
        cases += [(b, c), (coarse(b), coarse(c))]
    for b, c in cases:
        assert drift.psi(b, c) == pytest.approx(textbook_psi(list(b), list(c)), rel=1e-12, abs=1e-15)
        assert drift.kl_divergence(b, c) == pytest.approx(textbook_kl(list(b), list(c)), rel=1e-12, abs=1e-15)


def test_epsilon_bounds_the_unseen_category(categorical):
    b, c = categorical
    q = c[-1] / c.sum()
    # The __other__ slot is empty in the baseline: its PSI term is (q - EPS) ln(q / EPS), finite.
    term = (q - EPS) * math.log(q / EPS)
    assert math.isfinite(drift.psi(b, c))
    assert drift.psi(b, c) > term > 0
    assert drift.kl_divergence(b, c) > 0 and math.isfinite(drift.kl_divergence(b, c))


def test_psi_is_symmetric_and_kl_is_not():
    b, c = [50, 30, 20, 0], [10, 30, 40, 20]
    assert drift.psi(b, c) == pytest.approx(drift.psi(c, b), rel=1e-12)
    assert drift.kl_divergence(b, c) != pytest.approx(drift.kl_divergence(c, b), rel=1e-3)


def test_kl_never_negative():
    # Flooring without renormalising would give a slightly negative sum here.
    b, c = [0, 100_000], [2, 99_998]
    assert textbook_kl(b, c) < 0
    assert drift.kl_divergence(b, c) == 0.0


# --- Wasserstein ------------------------------------------------------------------------------


def test_wasserstein_closed_form():
    # Uniform on [0, 1] against uniform on [1, 2]: a shift of 1.
    assert drift.wasserstein_from_counts([1.0], [10, 0], [0, 7], 0.0, 2.0, 1.0) == pytest.approx(
        1.0, rel=1e-15
    )
    # The same, expressed in units of a std of 0.5.
    assert drift.wasserstein_from_counts([1.0], [10, 0], [0, 7], 0.0, 2.0, 0.5) == pytest.approx(
        2.0, rel=1e-15
    )


def test_wasserstein_is_exact_for_uniform_within_bin_mass(numeric):
    """Compare with scipy on the model the function assumes: uniform mass inside each bin."""
    base, cur = numeric[("student_t2", True)]
    edges, b, c = _binned(base, cur)
    lo, hi = base.min(), base.max()
    bounds = np.concatenate(([lo], edges, [hi]))
    per_bin = 2_000  # midpoints of per_bin equal slices approximate the uniform to width / per_bin
    frac = (np.arange(per_bin) + 0.5) / per_bin
    points = (bounds[:-1, None] + np.diff(bounds)[:, None] * frac[None, :]).ravel()
    ref = stats.wasserstein_distance(points, points, np.repeat(b, per_bin), np.repeat(c, per_bin))
    got = drift.wasserstein_from_counts(edges, b, c, lo, hi, 1.0)
    widest = np.diff(bounds).max()
    assert got == pytest.approx(ref, abs=widest / per_bin)


@pytest.mark.parametrize("shift", [0.0, 0.1, 0.25])
def test_wasserstein_close_to_raw_samples(shift):
    rng = np.random.default_rng(SEED + 2)
    base = rng.normal(0.0, 1.0, N_BASE)
    cur = rng.normal(shift * base.std(), 1.0, N_CUR)
    edges, b, c = _binned(base, cur)
    got = drift.wasserstein_from_counts(edges, b, c, base.min(), base.max(), base.std())
    raw = stats.wasserstein_distance(base, cur) / base.std()
    assert got == pytest.approx(raw, abs=0.02)


def test_wasserstein_large_shift_error_is_in_the_outer_bins():
    """At 0.5 std the binned value overshoots, almost all of it from spreading mass uniformly over
    the outer bins, which reach out to the training min and max. The error stays within 0.005 of
    that outer-bin bound: half the outer width times the outer mass difference, each side."""
    rng = np.random.default_rng(SEED + 3)
    base = rng.normal(0.0, 1.0, N_BASE)
    sd = base.std()
    cur = rng.normal(0.5 * sd, 1.0, N_CUR)
    edges, b, c = _binned(base, cur)
    got = drift.wasserstein_from_counts(edges, b, c, base.min(), base.max(), sd)
    raw = stats.wasserstein_distance(base, cur) / sd
    dm_lo = abs(c[0] / c.sum() - b[0] / b.sum())
    dm_hi = abs(c[-1] / c.sum() - b[-1] / b.sum())
    outer = ((edges[0] - base.min()) * dm_lo + (base.max() - edges[-1]) * dm_hi) / 2 / sd
    assert abs(got - raw) <= outer + 0.005


def test_wasserstein_zero_for_identical_distributions(numeric):
    base, _ = numeric[("lognormal", False)]
    edges = fine_edges(base)
    b = bin_counts(base, edges)
    assert drift.wasserstein_from_counts(edges, b, b, base.min(), base.max(), base.std()) == 0.0
    assert drift.wasserstein_from_counts(edges, b, 3 * b, base.min(), base.max(), base.std()) < 1e-12


@pytest.mark.parametrize("scale", [0.0, -1.0, float("nan"), float("inf")])
def test_wasserstein_unusable_scale_means_unscaled(scale):
    assert drift.wasserstein_from_counts([1.0], [10, 0], [0, 7], 0.0, 2.0, scale) == pytest.approx(1.0)


def test_wasserstein_rejects_inconsistent_edges():
    with pytest.raises(ValueError, match="interior edges"):
        drift.wasserstein_from_counts([1.0, 2.0], [1, 2], [2, 1], 0.0, 3.0, 1.0)
    with pytest.raises(ValueError, match="sorted"):
        drift.wasserstein_from_counts([2.0, 1.0], [1, 2, 3], [3, 2, 1], 0.0, 3.0, 1.0)
    with pytest.raises(ValueError, match="lo must not exceed hi"):
        drift.wasserstein_from_counts([1.0], [1, 2], [2, 1], 3.0, 0.0, 1.0)


# --- sensitivity ------------------------------------------------------------------------------


def test_sensitivity_half_std_shift_on_normal_data():
    rng = np.random.default_rng(SEED + 4)
    base = rng.normal(10.0, 2.0, N_BASE)
    sd = base.std()
    edges = fine_edges(base)
    b = bin_counts(base, edges)
    shifted = bin_counts(rng.normal(10.0 + 0.5 * sd, 2.0, N_CUR), edges)
    same = bin_counts(rng.normal(10.0, 2.0, N_CUR), edges)

    def w(c):
        return drift.wasserstein_from_counts(edges, b, c, base.min(), base.max(), sd)

    assert w(shifted) > 0.3
    assert drift.psi(coarse(b), coarse(shifted)) > 0.15
    assert w(same) < 0.06
    assert drift.psi(coarse(b), coarse(same)) < 0.02


# --- degenerate inputs ------------------------------------------------------------------------


def _all_values(b, c) -> list[float]:
    edges = np.arange(1, len(b), dtype=float)
    return [
        drift.psi(b, c),
        drift.kl_divergence(b, c),
        drift.js_distance(b, c),
        *drift.ks_from_counts(b, c),
        *drift.chi_square(b, c),
        drift.wasserstein_from_counts(edges, b, c, 0.0, float(len(b)), 1.0),
    ]


@pytest.mark.parametrize(
    ("b", "c"),
    [([5, 3, 2], [0, 0, 0]), ([0, 0, 0], [5, 3, 2]), ([0, 0, 0], [0, 0, 0])],
    ids=["empty-current", "empty-baseline", "both-empty"],
)
def test_empty_side_gives_nan_without_warning(b, c):
    values = _all_values(np.array(b), np.array(c))
    assert all(isinstance(v, float) and math.isnan(v) for v in values)


def test_all_mass_in_the_same_bin():
    b, c = np.array([0, 0, 500, 0]), np.array([0, 0, 80, 0])
    assert drift.psi(b, c) == 0.0
    assert drift.kl_divergence(b, c) == 0.0
    assert drift.js_distance(b, c) == 0.0
    assert drift.ks_from_counts(b, c) == (0.0, 1.0)
    # Bins empty on both sides are not categories: one category left, nothing to test.
    stat, p = drift.chi_square(b, c)
    assert stat == 0.0 and math.isnan(p)
    assert drift.wasserstein_from_counts([1.0, 2.0, 3.0], b, c, 0.0, 4.0, 1.0) == 0.0


def test_all_mass_in_different_bins():
    b, c = np.array([0, 0, 500, 0]), np.array([80, 0, 0, 0])
    expected_psi = (1 - EPS) * math.log(1 / EPS) * 2
    assert drift.psi(b, c) == pytest.approx(expected_psi, rel=1e-12)
    assert drift.js_distance(b, c) == pytest.approx(1.0, abs=1e-12)
    d, p = drift.ks_from_counts(b, c)
    assert d == 1.0 and p < 1e-20
    stat, p = drift.chi_square(b, c)
    assert math.isfinite(stat) and p < 1e-20
    # Uniform on [0, 1] against uniform on [2, 3].
    assert drift.wasserstein_from_counts([1.0, 2.0, 3.0], b, c, 0.0, 4.0, 1.0) == pytest.approx(2.0)


def test_single_bin():
    assert drift.psi([7], [3]) == 0.0
    assert drift.ks_from_counts([7], [3]) == (0.0, 1.0)
    stat, p = drift.chi_square([7], [3])
    assert stat == 0.0 and math.isnan(p)  # no degrees of freedom, as in scipy
    assert drift.wasserstein_from_counts([], [7], [3], 1.0, 1.0, 0.0) == 0.0


def test_one_record_each_side_has_a_finite_pvalue():
    d, p = drift.ks_from_counts([1, 0], [0, 1])
    assert d == 1.0 and p == pytest.approx(stats.kstwobign.sf(np.sqrt(0.5)), rel=1e-9)


@pytest.mark.parametrize(
    "fn", [drift.psi, drift.kl_divergence, drift.js_distance, drift.ks_from_counts, drift.chi_square]
)
def test_length_mismatch_is_a_clear_error(fn):
    with pytest.raises(ValueError, match=r"same number of bins, got 3 and 4"):
        fn([1, 2, 3], [1, 2, 3, 4])


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ([1, -1, 3], "negative"),
        ([1.0, float("nan"), 3.0], "NaN or infinite"),
        ([], "no bins"),
        # 2-D is now a batch of rows (see test_one_row_batch_returns_arrays); 3-D is still malformed.
        ([[[1, 2]]], "1-D"),
    ],
)
def test_malformed_counts_are_rejected(bad, message):
    with pytest.raises(ValueError, match=message):
        drift.psi(bad, bad)


def test_accepts_lists_and_int_arrays_and_returns_python_floats():
    b, c = [10, 20, 30], np.array([30, 20, 10], dtype=np.int32)
    for value in _all_values(b, c):
        assert type(value) is float and math.isfinite(value)


# --- batches: 2-D (rows, bins) inputs ---------------------------------------------------------

BATCH_BINS = [1, 2, 10, 51, 100]
ROWS = 40


def count_matrices(bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Baseline and current count matrices, one feature per row, with the awkward rows in front."""
    rng = np.random.default_rng(SEED + 5 + bins)
    totals = 10 ** rng.uniform(0, 6, size=(2, ROWS, 1))  # mixed totals, 1 to a million records
    b = rng.poisson(rng.dirichlet(np.full(bins, 0.5), size=ROWS) * totals[0])
    c = rng.poisson(rng.dirichlet(np.full(bins, 0.5), size=ROWS) * totals[1])
    b[rng.random(b.shape) < 0.1] = 0  # scattered empty bins on both sides
    c[rng.random(c.shape) < 0.1] = 0
    b[:8] = rng.integers(1, 1000, size=(8, bins))
    c[1] = 0  # empty current window
    b[2] = 0  # empty baseline
    b[3] = c[3] = 0
    c[4] = b[4]  # identical
    c[5] = 3 * b[5]  # same shares, other total
    b[6], c[6] = 0, 0  # disjoint
    b[6, 0], c[6, -1] = 500, 80
    b[7], c[7] = 0, 0  # flooring alone would make KL negative here
    b[7, -1], c[7, 0], c[7, -1] = 100_000, 2, 99_998
    return b, c


def _empty_rows(b, c) -> np.ndarray:
    return (np.sum(b, axis=1) == 0) | (np.sum(c, axis=1) == 0)


def assert_rowwise(got, want) -> None:
    """The batch result is a float64 vector equal to the 1-D results, NaN where they are NaN."""
    assert isinstance(got, np.ndarray) and got.dtype == np.float64 and got.shape == (len(want),)
    np.testing.assert_allclose(got, np.array(want, dtype=float), rtol=1e-12, atol=0)


@pytest.mark.parametrize("bins", BATCH_BINS)
@pytest.mark.parametrize("fn", [drift.psi, drift.kl_divergence, drift.js_distance])
def test_batch_equals_row_by_row(fn, bins):
    b, c = count_matrices(bins)
    want = [fn(b[i], c[i]) for i in range(ROWS)]
    assert_rowwise(fn(b, c), want)
    assert_rowwise(fn(b.astype(float), np.asfortranarray(c)), want)  # float and column-major input
    assert np.array_equal(np.isnan(fn(b, c)), _empty_rows(b, c))
    assert not np.any(fn(b, c) < 0)


@pytest.mark.parametrize("bins", BATCH_BINS)
@pytest.mark.parametrize("fn", [drift.ks_from_counts, drift.chi_square])
def test_batch_pairs_equal_row_by_row(fn, bins):
    b, c = count_matrices(bins)
    stat, p = fn(b, c)
    rows = [fn(b[i], c[i]) for i in range(ROWS)]
    assert_rowwise(stat, [r[0] for r in rows])
    assert_rowwise(p, [r[1] for r in rows])
    assert np.array_equal(np.isnan(stat), _empty_rows(b, c))
    if fn is drift.chi_square:
        # NaN for empty rows and for rows with fewer than two used bins (no degrees of freedom).
        used = ((b + c) > 0).sum(axis=1)
        assert np.array_equal(np.isnan(p), _empty_rows(b, c) | (used < 2))
    else:
        assert np.array_equal(np.isnan(p), _empty_rows(b, c))


def test_batch_chi_square_uses_used_bins_minus_one_dof():
    b, c = count_matrices(10)
    keep = ~_empty_rows(b, c)
    b, c = b[keep], c[keep]
    stat, p = drift.chi_square(b, c)
    dof = ((b + c) > 0).sum(axis=1) - 1
    np.testing.assert_array_equal(drift.chi_square_dof(b, c), dof)
    np.testing.assert_allclose(p, stats.chi2.sf(stat, dof), rtol=1e-12, atol=1e-300)


def _wasserstein_rows(bins: int):
    rng = np.random.default_rng(SEED + 6 + bins)
    edges = np.sort(rng.normal(0.0, 2.0, size=(ROWS, bins - 1)), axis=1)
    lo = np.minimum(edges.min(axis=1, initial=0.0), 0.0) - rng.uniform(0.0, 1.0, ROWS)
    hi = np.maximum(edges.max(axis=1, initial=0.0), 0.0) + rng.uniform(0.0, 1.0, ROWS)
    lo[:5] = np.minimum(lo[:5] + 1.5, hi[:5])  # edges outside [lo, hi] are clipped
    hi[5:10] = np.maximum(hi[5:10] - 1.5, lo[5:10])
    lo[10], hi[10] = 0.5, 0.5  # zero-width support
    scale = rng.uniform(0.1, 3.0, ROWS)
    scale[11:15] = [0.0, -1.0, float("nan"), float("inf")]
    return edges, lo, hi, scale


@pytest.mark.parametrize("bins", BATCH_BINS)
def test_batch_wasserstein_equals_row_by_row(bins):
    b, c = count_matrices(bins)
    edges, lo, hi, scale = _wasserstein_rows(bins)
    want = [drift.wasserstein_from_counts(edges[i], b[i], c[i], lo[i], hi[i], scale[i]) for i in range(ROWS)]
    assert_rowwise(drift.wasserstein_from_counts(edges, b, c, lo, hi, scale), want)
    assert np.array_equal(np.isnan(want), _empty_rows(b, c))
    # Scalars broadcast to every row.
    lo_s, hi_s = min(lo.min(), edges.min(initial=0.0)), max(hi.max(), edges.max(initial=0.0))
    want = [drift.wasserstein_from_counts(edges[i], b[i], c[i], lo_s, hi_s, 0.7) for i in range(ROWS)]
    assert_rowwise(drift.wasserstein_from_counts(edges, b, c, lo_s, hi_s, 0.7), want)


def test_one_row_batch_returns_arrays():
    assert_rowwise(drift.psi([[1, 2]], [[2, 1]]), [drift.psi([1, 2], [2, 1])])
    d, p = drift.ks_from_counts([[1, 2]], [[2, 1]])
    assert_rowwise(d, [drift.ks_from_counts([1, 2], [2, 1])[0]])
    assert_rowwise(p, [drift.ks_from_counts([1, 2], [2, 1])[1]])
    got = drift.wasserstein_from_counts([[1.0]], [[10, 0]], [[0, 7]], 0.0, 2.0, 1.0)
    assert_rowwise(got, [1.0])


def test_batch_of_zero_rows():
    b = np.zeros((0, 4))
    for fn in (drift.psi, drift.kl_divergence, drift.js_distance):
        assert fn(b, b).shape == (0,)
    for fn in (drift.ks_from_counts, drift.chi_square):
        assert [v.shape for v in fn(b, b)] == [(0,), (0,)]
    assert drift.wasserstein_from_counts(np.zeros((0, 3)), b, b, 0.0, 1.0, 1.0).shape == (0,)


@pytest.mark.parametrize(
    ("b", "c", "message"),
    [
        (np.ones((3, 4)), np.ones((3, 5)), r"same number of bins, got 4 and 5"),
        (np.ones((3, 4)), np.ones((2, 4)), r"same number of rows, got 3 and 2"),
        (np.ones((3, 4)), np.ones(4), r"both be 1-D or both be 2-D, got shapes \(3, 4\) and \(4,\)"),
        (np.ones(4), np.ones((1, 4)), r"both be 1-D or both be 2-D"),
        (np.ones((3, 0)), np.ones((3, 0)), r"baseline_counts has no bins"),
        (np.ones((2, 3, 4)), np.ones((2, 3, 4)), r"1-D vector of bin counts or a 2-D \(rows, bins\) array"),
        (np.ones((3, 4)), [[1, 1, 1, 1], [1, -1, 1, 1], [1, 1, 1, 1]], r"current_counts contains negative"),
        ([[1, 1], [1, float("nan")]], np.ones((2, 2)), r"baseline_counts contains NaN or infinite"),
        ([[1, 1], [1, float("inf")]], np.ones((2, 2)), r"baseline_counts contains NaN or infinite"),
        ([1.0, float("inf")], [1.0, 1.0], r"baseline_counts contains NaN or infinite"),
        ([[1, 1], [1e308, 1e308]], np.ones((2, 2)), r"baseline_counts totals overflow float64"),
    ],
)
@pytest.mark.parametrize(
    "fn", [drift.psi, drift.kl_divergence, drift.js_distance, drift.ks_from_counts, drift.chi_square]
)
def test_batch_shape_errors(fn, b, c, message):
    with pytest.raises(ValueError, match=message):
        fn(b, c)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"edges": np.zeros((3, 2))}, r"edges must be a \(3, 3\) array, 3 interior edges for each row of 4 bins"),
        ({"edges": np.zeros(3)}, r"interior edges"),
        ({"edges": [[1, 2, 3], [1, 3, 2], [1, 2, 3]]}, r"sorted"),
        ({"edges": [[1, 2, 3], [1, 2, float("nan")], [1, 2, 3]]}, r"NaN or infinite"),
        ({"lo": [0.0, 0.0]}, r"lo must be a scalar or a vector of 3 values \(one per row\), got shape \(2,\)"),
        ({"scale": np.ones((3, 1))}, r"scale must be a scalar or a vector of 3 values"),
        ({"hi": [4.0, float("inf"), 4.0]}, r"lo and hi must be finite, got lo=0.0, hi=inf in row 1"),
        ({"lo": [0.0, 0.0, 5.0]}, r"lo must not exceed hi, got lo=5.0, hi=4.0 in row 2"),
    ],
)
def test_batch_wasserstein_errors(change, message):
    args = {"edges": [[1.0, 2.0, 3.0]] * 3, "lo": 0.0, "hi": 4.0, "scale": 1.0} | change
    b = np.ones((3, 4))
    with pytest.raises(ValueError, match=message):
        drift.wasserstein_from_counts(args["edges"], b, b, args["lo"], args["hi"], args["scale"])
