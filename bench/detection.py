"""Drift detection you can trust: false alarms, power and delay of mlmon's calibrated rule, side by side
with KS p < 0.05, PSI > 0.1 / 0.25, chi-square p < 0.05 and River's ADWIN, in one run.

Everything runs mlmon's real pipeline: a baseline built from 100,000 training rows, a ModelMonitor
fed raw values in twelve 5-minute batches across a 1 h window (so the recent 5-minute window holds a
twelfth of them), one evaluation at the end of the hour. Each baseline is drawn afresh every
``--per-baseline`` windows: the baseline is a sample, and a two-sample false-alarm rate is a statement
over both draws.

    python bench/detection.py            # full tables (about 10 minutes on 2 cores)
    python bench/detection.py --quick    # fewer windows, for a smoke run

Sections:
1. False alarms per evaluation on drift-free windows: 7 shapes x n in {200, 500, 1k, 5k, 50k}, for
   mlmon at its default rate (1e-5) and configured to 1 % and 5 %, and the comparators.
2. Detection probability for mean shifts 0.1-0.5 sigma, variance x1.2 / x1.5 and share changes
   0.05 / 0.10 / 0.20, for mlmon configured to 1 % against KS p < 0.01 and chi-square p < 0.01
   (the same false-alarm rate), plus mlmon at its default.
3. Median delay from a sudden shift to the replica's flag and to the fleet alert (the shipped rule:
   chi-square on the coarse bins over 1 h and 5 min, `for: 2m`, plus one scrape and one rule
   evaluation of 15 s), at 10 records/s with 15 s evaluations; ADWIN (delta 0.002) on the same stream.
4. Alert episodes per feature and day on a drift-free stream at raised false-alarm rates, the
   measurement behind the README's pages-per-month figure at the default rate.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections import deque
from collections.abc import Callable

import _common
import numpy as np
import pandas as pd
from scipy import stats

from exporter import calibration, drift
from exporter.baseline import Baseline, build_baseline
from exporter.batch import Batch
from exporter.config import DriftConfig, ModelConfig, WindowConfig
from exporter.monitor import RECENT_SHARE, ModelMonitor

N = 100_000
NS = (200, 500, 1_000, 5_000, 50_000)
CHUNKS = 12
ZIPF30 = 1 / np.arange(1, 31) ** 1.1 / np.sum(1 / np.arange(1, 31) ** 1.1)
CAT3 = np.array([0.5, 0.3, 0.2])

Gen = Callable[[np.random.Generator, int], np.ndarray]


def _cats(p: np.ndarray) -> Gen:
    names = np.array([f"c{i:02d}" for i in range(p.size)], dtype=object)
    return lambda r, n: names[r.choice(p.size, n, p=p)]


NUMERIC: dict[str, tuple[Gen, float, float]] = {
    # name: (generator, mean, std)
    "normal": (lambda r, n: r.normal(size=n), 0.0, 1.0),
    "lognormal": (lambda r, n: r.lognormal(size=n), math.exp(0.5), math.sqrt((math.e - 1) * math.e)),
    "t(3)": (lambda r, n: r.standard_t(3, size=n), 0.0, math.sqrt(3.0)),
    "Poisson(3)": (lambda r, n: r.poisson(3, size=n).astype(float), 3.0, math.sqrt(3.0)),
    "beta(2,5)": (lambda r, n: r.beta(2, 5, size=n), 2 / 7, math.sqrt(10 / (49 * 8))),
}
CATEGORICAL: dict[str, np.ndarray] = {"Zipf 30 categories": ZIPF30, "3 categories": CAT3}


def monitor(baseline: Baseline, rate: float | None) -> ModelMonitor:
    drift_cfg = DriftConfig() if rate is None else DriftConfig(false_alarm_rate=rate)
    window = WindowConfig(window_seconds=3600, bucket_seconds=60, evaluation_interval_seconds=15, min_samples=200)
    return ModelMonitor(ModelConfig(name="m", window=window, drift=drift_cfg), baseline, clock=lambda: 0.0)


def ks_pvalue(values: np.ndarray, sorted_train: np.ndarray) -> float:
    """Two-sample KS on the raw values, asymptotic p-value: scipy's ``ks_2samp(method="asymp")``
    statistic with the Kolmogorov limit at n m / (n + m), without re-sorting the baseline every call."""
    w = np.sort(values)
    points = np.concatenate((w, sorted_train))
    d = np.abs(np.searchsorted(w, points, side="right") / w.size
               - np.searchsorted(sorted_train, points, side="right") / sorted_train.size).max()
    n_eff = w.size * sorted_train.size / (w.size + sorted_train.size)
    return float(stats.kstwobign.sf(math.sqrt(n_eff) * d))


class Trial:
    """One baseline and the monitors that judge windows against it."""

    def __init__(self, train: np.ndarray, categorical: bool) -> None:
        self.train = train
        self.sorted_train = None if categorical else np.sort(train)
        frame = pd.DataFrame({"x": train})
        self.baseline = build_baseline(frame, "m", categorical=("x",) if categorical else ())
        self.monitors = {"default": monitor(self.baseline, None), "1%": monitor(self.baseline, 0.01),
                         "5%": monitor(self.baseline, 0.05)}
        self.t0 = 10_000.0

    def judge(self, values: np.ndarray) -> dict[str, bool]:
        """Flags of every monitor and comparator for one window of raw values."""
        out: dict[str, bool] = {}
        chunks = np.array_split(values, CHUNKS)
        for name, mon in self.monitors.items():
            for i, chunk in enumerate(chunks):
                col = chunk.tolist() if chunk.dtype == object else chunk
                mon.ingest(Batch(model="m", version="v", size=len(chunk), features={"x": col}),
                           now=self.t0 + i * 300 + 150)
            fd = mon.evaluate(now=self.t0 + 3_599).features[0]
            out[f"mlmon {name}"] = bool(fd.detected)
            if name == "default":
                out["PSI > 0.1"] = fd.scores["psi"] > 0.1
                out["PSI > 0.25"] = fd.scores["psi"] > 0.25
                if "chi2" in fd.pvalues:
                    out["chi2 p < 0.05"] = fd.pvalues["chi2"] < 0.05
                    out["chi2 p < 0.01"] = fd.pvalues["chi2"] < 0.01
        self.t0 += 7_200  # the next window starts on an empty ring
        if self.sorted_train is not None:
            p = ks_pvalue(values, self.sorted_train)
            out["KS p < 0.05"], out["KS p < 0.01"] = p < 0.05, p < 0.01
        return out


def run_cells(make_values: Callable[[np.random.Generator, int], np.ndarray], train_gen: Gen, categorical: bool,
              windows: int, per_baseline: int, seed: int) -> dict[int, dict[str, float]]:
    rng = np.random.default_rng(seed)
    rates: dict[int, dict[str, float]] = {}
    trials = [Trial(train_gen(rng, N), categorical) for _ in range(max(1, windows // per_baseline))]
    for n in NS:
        hits: dict[str, int] = {}
        total = 0
        for trial in trials:
            for _ in range(per_baseline):
                for k, v in trial.judge(make_values(rng, n)).items():
                    hits[k] = hits.get(k, 0) + int(v)
                total += 1
        rates[n] = {k: v / total for k, v in hits.items()}
    return rates


def table(title: str, rows: dict[str, dict[int, dict[str, float]]], columns: list[str]) -> None:
    print(f"\n### {title}\n")
    for col in columns:
        print(f"**{col}**\n")
        print("| shape / change | " + " | ".join(f"n = {n:,}" for n in NS) + " |")
        print("|---|" + "---|" * len(NS))
        for name, cells in rows.items():
            vals = [cells[n].get(col) for n in NS]
            if all(v is None for v in vals):
                continue
            print(f"| {name} | " + " | ".join("—" if v is None else f"{100 * v:.1f} %" for v in vals) + " |")
        print()


def false_alarms(windows: int, per_baseline: int) -> None:
    rows: dict[str, dict[int, dict[str, float]]] = {}
    for i, (name, (gen, _, _)) in enumerate(NUMERIC.items()):
        rows[name] = run_cells(gen, gen, False, windows, per_baseline, seed=100 + i)
        print(f"  false alarms: {name} done", file=sys.stderr)
    for i, (name, p) in enumerate(CATEGORICAL.items()):
        gen = _cats(p)
        rows[name] = run_cells(gen, gen, True, windows, per_baseline, seed=200 + i)
        print(f"  false alarms: {name} done", file=sys.stderr)
    table(f"1. False alarms per evaluation, drift-free windows ({windows} per cell, baseline N = {N:,})", rows,
          ["mlmon default", "mlmon 1%", "mlmon 5%", "KS p < 0.05", "PSI > 0.1", "PSI > 0.25", "chi2 p < 0.05"])


def _shift(gen: Gen, mean: float, std: float, kind: str, size: float) -> Gen:
    if kind == "mean":
        return lambda r, n: gen(r, n) + size * std
    return lambda r, n: (gen(r, n) - mean) * math.sqrt(size) + mean  # variance x size


def _moved(p: np.ndarray, delta: float) -> np.ndarray:
    q = p.copy()
    q[0] -= delta
    q[1] += delta
    return q


def power(windows: int, per_baseline: int) -> None:
    rows: dict[str, dict[int, dict[str, float]]] = {}
    for i, name in enumerate(("normal", "lognormal", "Poisson(3)")):
        gen, mean, std = NUMERIC[name]
        changes = [("mean", s) for s in (0.1, 0.2, 0.3, 0.4, 0.5)] + [("var", 1.2), ("var", 1.5)]
        for j, (kind, size) in enumerate(changes):
            label = f"{name}: mean +{size}σ" if kind == "mean" else f"{name}: variance ×{size}"
            rows[label] = run_cells(_shift(gen, mean, std, kind, size), gen, False, windows, per_baseline,
                                    seed=300 + 10 * i + j)
        print(f"  power: {name} done", file=sys.stderr)
    for i, (name, p) in enumerate(CATEGORICAL.items()):
        for j, delta in enumerate((0.05, 0.10, 0.20)):
            rows[f"{name}: share change {delta:.2f}"] = run_cells(_cats(_moved(p, delta)), _cats(p), True, windows,
                                                                 per_baseline, seed=400 + 10 * i + j)
        print(f"  power: {name} done", file=sys.stderr)
    table(f"2. Detection probability ({windows} windows per cell)", rows,
          ["mlmon 1%", "KS p < 0.01", "chi2 p < 0.01", "mlmon default"])


def _fleet_detected(base: np.ndarray, counts: np.ndarray, critical: float, min_effect: float) -> bool:
    """The shipped fleet rule on exact sliding counts: chi-square on the coarse bins, floor, min_samples."""
    n = counts.sum()
    if n < 200:
        return False
    stat, _ = drift.chi_square(base, counts)
    n_eff = float(calibration.effective_n(n, base.sum()))
    return bool(stat > max(critical, n_eff * min_effect**2))


def delays(streams: int) -> None:
    from river.drift import ADWIN

    rate, step, warmup, horizon = 10, 15, 3_600, 3_600
    per_step = rate * step
    print(f"\n### 3. Delay from a sudden mean shift to detection ({streams} streams each, normal feature, "
          f"{rate} records/s, {step} s evaluations, 1 h window of 1 min buckets, recent window 5 min)\n")
    print("| shift | mlmon flag (replica), median | fleet alert (shipped rule, for: 2m), median | "
          "ADWIN δ=0.002, median | ADWIN false alarms in the 1 h before the shift |")
    print("|---|---|---|---|---|")
    for shift in (0.3, 0.5, 1.0):
        rng = np.random.default_rng(int(shift * 100))
        flag, alert, adwin, adwin_false = [], [], [], 0
        for _ in range(streams):
            baseline = build_baseline(pd.DataFrame({"x": rng.normal(size=N)}), "m")
            mon = monitor(baseline, None)
            profile = baseline.features["x"]
            base_coarse = profile.coarse_counts(profile.fine_counts).astype(np.float64)
            dof = max(int((base_coarse > 0).sum()) - 1, 1)
            critical = [float(calibration.chi2_critical(1e-5 * share, dof))
                        for share in (1 - RECENT_SHARE, RECENT_SHARE)]
            steps_1h, steps_5m = deque(maxlen=3_600 // step), deque(maxlen=300 // step)
            detector = ADWIN(delta=0.002)
            t, t_flag, t_alert, t_adwin, held_since = 0.0, None, None, None, None
            while t < warmup + horizon and (t_flag is None or t_alert is None or t_adwin is None):
                values = rng.normal(shift if t >= warmup else 0.0, 1.0, per_step)
                mon.ingest(Batch(model="m", version="v", size=per_step, features={"x": values}), now=t + step / 2)
                coarse = profile.coarse_counts(np.bincount(profile.bin_index(values), minlength=profile.n_bins))
                steps_1h.append(coarse)
                steps_5m.append(coarse)
                for k, v in enumerate(values):
                    detector.update(float(v))
                    if detector.drift_detected:
                        when = t + k / rate
                        if when < warmup:
                            adwin_false += 1
                        elif t_adwin is None:
                            t_adwin = when - warmup
                t += step
                if t <= warmup:
                    continue
                if t_flag is None and mon.evaluate(now=t).features[0].detected:
                    t_flag = t - warmup
                fleet = any(_fleet_detected(base_coarse, np.sum(w, axis=0), c, 0.05)
                            for w, c in ((steps_1h, critical[0]), (steps_5m, critical[1])))
                held_since = (held_since if held_since is not None else t) if fleet else None
                if t_alert is None and held_since is not None and t - held_since >= 120:
                    t_alert = t - warmup + 2 * step  # plus one scrape and one rule evaluation
            flag.append(t_flag if t_flag is not None else math.inf)
            alert.append(t_alert if t_alert is not None else math.inf)
            adwin.append(t_adwin if t_adwin is not None else math.inf)

        def fmt(xs: list[float]) -> str:
            m = float(np.median(xs))
            return "not within 1 h" if math.isinf(m) else f"{m / 60:.1f} min ({m:.0f} s)"

        print(f"| +{shift}σ | {fmt(flag)} | {fmt(alert)} | {fmt(adwin)} | "
              f"{adwin_false / streams:.2f} per stream-hour |")


def pages(hours: int) -> None:
    """Alert episodes on a drift-free stream: the flag held for `for: 2m`, once per episode (keep_firing_for)."""
    rng = np.random.default_rng(11)
    baseline = build_baseline(pd.DataFrame({"x": rng.normal(size=N)}), "m")
    print(f"\n### 4. Pages on a drift-free stream ({hours} h at 10 records/s, 15 s evaluations, one feature)\n")
    print("| false-alarm rate | evaluations flagged | alert episodes per feature and day |")
    print("|---|---|---|")
    for rate in (1e-2, 1e-3):
        mon = monitor(baseline, rate)
        t, flagged, evals, episodes, held, firing_until = 0.0, 0, 0, 0, 0, -1.0
        while t < hours * 3_600:
            mon.ingest(Batch(model="m", version="v", size=150, features={"x": rng.normal(size=150)}), now=t + 7)
            t += 15
            if t < 3_600:
                continue
            hit = bool(mon.evaluate(now=t).features[0].detected)
            evals += 1
            flagged += hit
            held = held + 1 if hit else 0
            if held == 9 and t > firing_until:  # held through `for: 2m` (8 more evaluations)
                episodes += 1
            if held >= 9:
                firing_until = t + 600  # keep_firing_for: 10m
        print(f"| {rate:g} | {100 * flagged / evals:.3f} % | {episodes / (hours - 1) * 24:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 windows per cell and 5 delay streams")
    parser.add_argument("--windows", type=int, default=500)
    parser.add_argument("--power-windows", type=int, default=200)
    parser.add_argument("--per-baseline", type=int, default=10)
    parser.add_argument("--streams", type=int, default=15)
    parser.add_argument("--hours", type=int, default=48, help="length of the drift-free stream for pages")
    parser.add_argument("--skip", default="", help="comma-separated sections to skip: fa,power,delay,pages")
    args = parser.parse_args()
    if args.quick:
        args.windows, args.power_windows, args.per_baseline, args.streams, args.hours = 100, 100, 10, 5, 6
    _common.print_machine()
    started = time.perf_counter()
    skip = set(args.skip.split(","))
    if "fa" not in skip:
        false_alarms(args.windows, args.per_baseline)
    if "power" not in skip:
        power(args.power_windows, args.per_baseline)
    if "delay" not in skip:
        delays(args.streams)
    if "pages" not in skip:
        pages(args.hours)
    print(f"\n(total {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
