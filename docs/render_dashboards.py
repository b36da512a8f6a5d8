#!/usr/bin/env python3
"""Render mlmon's four Grafana dashboards to PNG from a real Prometheus, for the README.

    python docs/render_dashboards.py                  # ~3 min: writes docs/img/<uid>.png
    python docs/render_dashboards.py --duration 90    # quicker, less history

No Grafana is involved. The script starts the same stack as ``tests/test_dashboards_live.py``
(``tests/stack.py``): the exporter fed by the demo churn model through the HTTP API, with labels
~10 s after each prediction and drift injected after ``--drift-after`` seconds, scraped every
second by Debian's ``prometheus`` with the shipped recording and alert rules (alert ``for:``
shortened to 5 s so alerts fire during the run). It then reads each dashboard's JSON and draws
every panel where its ``gridPos`` puts it on Grafana's 24-column grid, from the panel's own
queries run through ``query_range`` (time series, state timelines, stat sparklines) or ``query``
(instant targets: tables, bar charts, bar gauges): template variables get a value of the running
stack, ``$__interval`` / ``$__rate_interval`` are computed from the scrape interval as Grafana does
(``--scrape-interval``: 1 s for the demo stack, Grafana's default 15 s for ``--prometheus``) and
``$__range`` is the rendered range. Repeated rows and panels are repeated over every value, as
Grafana does with "All". Deploy markers are drawn where the annotation query's series start.

Needs matplotlib (``pip install matplotlib``) and the ``prometheus`` binary on PATH.
"""

from __future__ import annotations

import argparse
import io
import math
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import requests  # noqa: E402
import test_dashboards_live as live  # noqa: E402  (template variables and queries, run as the live test runs them)
from matplotlib.colors import LinearSegmentedColormap, ListedColormap  # noqa: E402
from matplotlib.patches import FancyBboxPatch, Rectangle  # noqa: E402
from stack import Prometheus  # noqa: E402

OUT_DIR = ROOT / "docs" / "img"
WIDTH_PX = 1600
DPI = 100
CELL_PX = 30  # Grafana's grid: 30 px per height unit plus an 8 px gap
GAP_PX = 8
HEADER_PX = 84
MAX_PNG_BYTES = 400_000

# Grafana 11 dark theme.
BG, PANEL_BG, BORDER, TEXT, MUTED, GRID = "#111217", "#181b1f", "#2b2e34", "#ccccdc", "#8e8e9e", "#26292f"
NAMED = {"green": "#73bf69", "yellow": "#fade2a", "orange": "#ff9830", "red": "#f2495c", "blue": "#5794f2",
         "purple": "#b877d9", "text": TEXT, "transparent": PANEL_BG}
PALETTE = ["#73bf69", "#f2cc0c", "#8ab8ff", "#ff780a", "#f2495c", "#5794f2", "#b877d9", "#705da0",
           "#37872d", "#fade2a", "#447ebc", "#c15c17", "#890f02", "#0a437c", "#6d1f62", "#584477"]

STEP = 2.0  # s between points of range queries


def color(name: str | None) -> str:
    if not name:
        return TEXT
    return NAMED.get(name, name)


# ------------------------------------------------------------------------------------------------
# Units and values

def _number(v: float, decimals: int | None) -> str:
    if decimals is not None:
        return f"{v:.{decimals}f}"
    a = abs(v)
    if float(v).is_integer() and a < 1e6:
        return f"{v:.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3g}"


def fmt(v: float | None, unit: str = "none", decimals: int | None = None) -> str:
    """A value as Grafana shows it for the units the mlmon dashboards use."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "No data"
    if unit == "percentunit":
        return f"{_number(v * 100, 1 if decimals is None and abs(v) < 1 else decimals)}%"
    if unit == "s":
        a = abs(v)
        if a < 1 and a > 0:
            return f"{_number(v * 1000, decimals)} ms"
        if a < 60:
            return f"{_number(v, decimals)} s"
        if a < 3600:
            return f"{_number(v / 60, decimals)} min"
        if a < 86400:
            return f"{_number(v / 3600, decimals)} hour"
        return f"{_number(v / 86400, decimals)} day"
    if unit == "short":
        for div, suffix in ((1e9, " Bil"), (1e6, " Mil"), (1e3, " K")):
            if abs(v) >= div:
                return f"{_number(v / div, decimals)}{suffix}"
        return _number(v, decimals)
    if unit == "bytes":  # Grafana's IEC bytes
        for div, suffix in ((2**30, " GiB"), (2**20, " MiB"), (2**10, " KiB")):
            if abs(v) >= div:
                return f"{_number(v / div, decimals)}{suffix}"
        return f"{_number(v, decimals)} B"
    if unit.startswith("suffix:"):
        return f"{_number(v, decimals)}{unit.removeprefix('suffix:')}"
    return _number(v, decimals)


def threshold_color(v: float | None, steps: dict[str, Any] | None) -> str:
    out = TEXT
    for step in (steps or {}).get("steps", []):
        if step.get("value") is None or (v is not None and v >= step["value"]):
            out = color(step.get("color"))
    return out


def mapped(v: float | None, mappings: list[dict[str, Any]]) -> str | None:
    if v is None or math.isnan(v):
        return None
    for m in mappings or []:
        if m.get("type") == "value":
            key = str(int(v)) if float(v).is_integer() else str(v)
            if key in m.get("options", {}):
                return m["options"][key].get("text")
    return None


def legend_name(fmt_: str, labels: dict[str, str], expr: str) -> str:
    if not fmt_ or fmt_ == "__auto":
        shown = {k: v for k, v in labels.items() if k != "__name__"}
        if not shown:
            return labels.get("__name__") or expr
        return "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(shown.items())) + "}"
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt_).strip()


# ------------------------------------------------------------------------------------------------
# Data

@dataclass
class Series:
    name: str
    labels: dict[str, str]
    t: np.ndarray  # unix seconds
    v: np.ndarray
    ref: str

    @property
    def last(self) -> float | None:
        finite = self.v[np.isfinite(self.v)]
        return float(finite[-1]) if finite.size else None


@dataclass
class Source:
    url: str
    start: float
    end: float
    values: dict[str, str]
    problems: list[str] = field(default_factory=list)

    def _get(self, path: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        body = requests.get(f"{self.url}{path}", params=params, timeout=30).json()
        if body.get("status") != "success":
            raise RuntimeError(f"{params['query']}: {body.get('error')}")
        return body["data"]["result"]

    def expr(self, target: dict[str, Any]) -> str:
        return live.substitute(target["expr"], self.values)

    def series(self, target: dict[str, Any], instant: bool | None = None) -> list[Series]:
        expr = self.expr(target)
        instant = target.get("instant", False) if instant is None else instant
        if instant:
            raw = self._get("/api/v1/query", {"query": expr, "time": self.end})
            pairs = [(r["metric"], [r["value"]]) for r in raw]
        else:
            raw = self._get("/api/v1/query_range", {"query": expr, "start": self.start, "end": self.end,
                                                   "step": STEP})
            pairs = [(r["metric"], r["values"]) for r in raw]
        out = []
        for labels, values in pairs:
            t = np.array([float(x[0]) for x in values])
            v = np.array([float(x[1]) for x in values])
            out.append(Series(legend_name(target.get("legendFormat", ""), labels, expr), labels, t, v,
                              target.get("refId", "A")))
        return out


# ------------------------------------------------------------------------------------------------
# Layout

@dataclass
class Placed:
    panel: dict[str, Any]
    x: int
    y: int
    w: int
    h: int
    values: dict[str, str]  # template values for this copy (repeats)


def expand_repeats(panels: list[dict[str, Any]], values: dict[str, str],
                   choices: dict[str, list[str]]) -> list[Placed]:
    """Grafana's repeat: rows repeat their block per value, panels repeat side by side and wrap."""
    out: list[Placed] = []
    shift = 0
    i = 0
    while i < len(panels):
        p = panels[i]
        g = p["gridPos"]
        if p.get("type") == "row" and p.get("repeat"):
            block = [p]
            j = i + 1
            while j < len(panels) and panels[j].get("type") != "row":
                block.append(panels[j])
                j += 1
            height = max(q["gridPos"]["y"] + q["gridPos"]["h"] for q in block) - g["y"]
            for k, value in enumerate(choices.get(p["repeat"], [values.get(p["repeat"], "")])):
                vals = {**values, p["repeat"]: value}
                for q in block:
                    qg = q["gridPos"]
                    out.append(Placed(q, qg["x"], qg["y"] + shift + k * height, qg["w"], qg["h"], vals))
            shift += height * (len(choices.get(p["repeat"], [""])) - 1)
            i = j
            continue
        if p.get("repeat") and p.get("type") != "row":
            options = choices.get(p["repeat"], [values.get(p["repeat"], "")])
            per_row = min(p.get("maxPerRow") or 4, len(options)) if p.get("repeatDirection") == "h" else 1
            w = 24 // per_row if per_row > 1 else g["w"]
            for k, value in enumerate(options):
                out.append(Placed(p, (k % per_row) * w, g["y"] + shift + (k // per_row) * g["h"], w, g["h"],
                                  {**values, p["repeat"]: value}))
            shift += g["h"] * (math.ceil(len(options) / per_row) - 1)
            i += 1
            continue
        out.append(Placed(p, g["x"], g["y"] + shift, g["w"], g["h"], values))
        i += 1
    return out


class Canvas:
    def __init__(self, rows: int, title: str, subtitle: str) -> None:
        self.col_px = (WIDTH_PX - 2 * GAP_PX) / 24
        height_px = HEADER_PX + rows * (CELL_PX + GAP_PX) + GAP_PX
        self.W, self.H = WIDTH_PX, height_px
        self.fig = plt.figure(figsize=(WIDTH_PX / DPI, height_px / DPI), dpi=DPI, facecolor=BG)
        self.fig.text(GAP_PX / self.W, 1 - 26 / self.H, title, color=TEXT, fontsize=17, weight="bold", va="center")
        self.fig.text(GAP_PX / self.W, 1 - 58 / self.H, subtitle, color=MUTED, fontsize=9, va="center",
                      linespacing=1.5)

    def box(self, x: int, y: int, w: int, h: int) -> tuple[float, float, float, float]:
        """Figure-fraction (left, bottom, width, height) of a grid rectangle, gaps removed."""
        left = GAP_PX + x * self.col_px
        top = HEADER_PX + y * (CELL_PX + GAP_PX)
        width = w * self.col_px - GAP_PX
        height = h * (CELL_PX + GAP_PX) - GAP_PX
        return left / self.W, 1 - (top + height) / self.H, width / self.W, height / self.H

    def px(self, frac_w: float, frac_h: float) -> tuple[float, float]:
        return frac_w * self.W, frac_h * self.H


def style_axes(ax: Any) -> None:
    ax.set_facecolor(PANEL_BG)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    for side in ("left", "bottom"):
        ax.spines[side].set_color(BORDER)
    ax.tick_params(colors=MUTED, labelsize=7.5, length=0, pad=3)
    ax.grid(True, color=GRID, linewidth=0.8)
    ax.set_axisbelow(True)


def time_axis(ax: Any, src: Source) -> None:
    ax.set_xlim(to_dt(src.start), to_dt(src.end))
    ax.xaxis.set_major_locator(mdates.MinuteLocator())
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M", tz=timezone.utc))


def to_dt(t: float) -> datetime:
    return datetime.fromtimestamp(t, tz=timezone.utc)


def unit_axis(ax: Any, unit: str, decimals: int | None) -> None:
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: fmt(v, unit, decimals)))
    ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(4))


# ------------------------------------------------------------------------------------------------
# Panels

@dataclass
class PanelCtx:
    canvas: Canvas
    panel: dict[str, Any]
    src: Source
    rect: tuple[float, float, float, float]  # content area in figure fractions (below the title)
    deploys: list[float]

    @property
    def defaults(self) -> dict[str, Any]:
        return self.panel.get("fieldConfig", {}).get("defaults", {})

    @property
    def unit(self) -> str:
        return self.defaults.get("unit", "none")

    @property
    def decimals(self) -> int | None:
        return self.defaults.get("decimals")

    @property
    def targets(self) -> list[dict[str, Any]]:
        return [t for t in self.panel.get("targets", []) if not t.get("hide")]

    def size_px(self) -> tuple[float, float]:
        return self.canvas.px(self.rect[2], self.rect[3])

    def axes(self, rect: tuple[float, float, float, float] | None = None, **kw: Any) -> Any:
        return self.canvas.fig.add_axes(rect or self.rect, **kw)

    def sub(self, left: float = 0, bottom: float = 0, right: float = 0, top: float = 0) -> tuple[float, ...]:
        """The content rect shrunk by pixel margins."""
        x, y, w, h = self.rect
        W, H = self.canvas.W, self.canvas.H
        return x + left / W, y + bottom / H, w - (left + right) / W, h - (bottom + top) / H


def no_data(ctx: PanelCtx) -> None:
    ax = ctx.axes()
    ax.axis("off")
    ax.text(0.5, 0.5, "No data", color=MUTED, fontsize=11, ha="center", va="center", transform=ax.transAxes)


def override_props(panel: dict[str, Any], name: str) -> dict[str, Any]:
    props: dict[str, Any] = {}
    for o in panel.get("fieldConfig", {}).get("overrides", []):
        m = o.get("matcher", {})
        hit = (m.get("id") == "byRegexp" and re.search(m.get("options", ""), name)) or \
              (m.get("id") == "byName" and m.get("options") == name)
        if hit:
            props.update({p["id"]: p["value"] for p in o.get("properties", [])})
    return props


def draw_timeseries(ctx: PanelCtx) -> bool:
    series = [s for t in ctx.targets for s in ctx.src.series(t)]
    if not series:
        no_data(ctx)
        return False
    p, d = ctx.panel, ctx.defaults
    custom = d.get("custom", {})
    legend = p.get("options", {}).get("legend", {})
    calcs = legend.get("calcs", [])
    wpx, hpx = ctx.size_px()
    longest = max(len(s.name) for s in series) + (28 if calcs else 0)
    ncol = max(1, min(len(series), int((wpx - 16) // (longest * 5.2 + 34))))
    legend_rows = math.ceil(len(series) / ncol)
    legend_px = 6 + 13 * legend_rows
    ax = ctx.axes(ctx.sub(left=52, bottom=legend_px + 18, right=10, top=4))
    style_axes(ax)
    stacked = custom.get("stacking", {}).get("mode") == "normal"
    fill = custom.get("fillOpacity", 0) / 100
    base = None
    handles = []
    fills = []  # drawn once the y axis is known: Grafana fills down to the axis, which need not be 0
    for i, s in enumerate(series):
        props = override_props(p, s.name)
        c = color(props.get("color", {}).get("fixedColor")) if "color" in props else PALETTE[i % len(PALETTE)]
        dashed = "custom.lineStyle" in props
        y = s.v.copy()
        t = [to_dt(x) for x in s.t]
        if stacked:
            lower = base if base is not None and len(base) == len(y) else np.zeros_like(y)
            y = lower + np.nan_to_num(y)
            ax.fill_between(t, lower, y, color=c, alpha=fill, linewidth=0)
            base = y
        elif fill and not dashed:
            fills.append((t, y, c))
        label = s.name
        if calcs:
            finite = s.v[np.isfinite(s.v)]
            stats = {"lastNotNull": ("last", s.last), "max": ("max", finite.max() if finite.size else None),
                     "mean": ("mean", finite.mean() if finite.size else None)}
            label += "   " + "  ".join(f"{stats[c_][0]} {fmt(stats[c_][1], ctx.unit, ctx.decimals)}"
                                      for c_ in calcs if c_ in stats)
        (h,) = ax.plot(t, y, color=c, linewidth=1.3 if not dashed else 1.2,
                       linestyle=(0, (5, 4)) if dashed else "-", label=label)
        handles.append(h)
    lo, hi = ax.get_ylim()
    if "min" in d:
        lo = d["min"]
    if "max" in d:
        hi = d["max"]
    if hi <= lo:
        hi = lo + 1
    ax.set_ylim(lo, hi)
    for t, y, c in fills:
        ax.fill_between(t, lo, y, color=c, alpha=fill * 0.6, linewidth=0)
    if custom.get("thresholdsStyle", {}).get("mode") in {"dashed", "line"}:
        for step in d.get("thresholds", {}).get("steps", [])[1:]:
            if lo <= step["value"] <= hi:
                ax.axhline(step["value"], color=color(step["color"]), linestyle=(0, (5, 4)), linewidth=1)
    for t_ in ctx.deploys:
        if ctx.src.start <= t_ <= ctx.src.end:
            ax.axvline(to_dt(t_), color=NAMED["purple"], linewidth=1, alpha=0.8)
    time_axis(ax, ctx.src)
    unit_axis(ax, ctx.unit, ctx.decimals)
    leg_ax = ctx.axes(ctx.sub(left=8, top=hpx - legend_px - 2))
    leg_ax.axis("off")
    leg_ax.legend(handles=handles, loc="upper left", ncol=ncol, frameon=False, fontsize=7.5, labelcolor=TEXT,
                  handlelength=1.4, columnspacing=1.2, borderaxespad=0, handletextpad=0.5, labelspacing=0.35)
    return True


def draw_stat(ctx: PanelCtx) -> bool:
    opts = ctx.panel.get("options", {})
    series = [s for t in ctx.targets for s in ctx.src.series(t)]
    if not series:
        no_data(ctx)
        return False
    d = ctx.defaults
    mode = d.get("color", {}).get("mode")
    fixed = color(d.get("color", {}).get("fixedColor")) if mode == "fixed" else None
    text_mode = opts.get("textMode", "auto")
    wpx, hpx = ctx.size_px()
    n = len(series)
    horizontal = wpx >= hpx or n == 1
    x, y, w, h = ctx.sub(left=4, right=4, bottom=4, top=0)
    boxes = [(x + i * w / n, y, w / n, h) if horizontal else (x, y + (n - 1 - i) * h / n, w, h / n)
             for i in range(n)]
    show_name = text_mode == "value_and_name" or (text_mode == "auto" and n > 1)
    texts = [s.name if text_mode == "name" else
             (mapped(s.last, d.get("mappings", [])) or fmt(s.last, ctx.unit, ctx.decimals)) for s in series]
    # One font size for all values (and one for all names), as Grafana does: at most ~40% of a box's
    # height, and the longest text (bold digits ≈ 0.72 em) within 85% of its width.
    rw, rh = ctx.canvas.px(boxes[0][2], boxes[0][3])
    longest = max(max(len(t) for t in texts), 3)
    size = min(rh * 0.42 * (0.75 if show_name else 1), rw * 0.85 / (longest * 0.72)) * 72 / DPI
    name_size = min(size * 0.4, 10, rw * 0.85 / (max(len(s.name) for s in series) * 0.6 + 1) * 72 / DPI)
    background = opts.get("colorMode") == "background"
    for s, r, text in zip(series, boxes, texts, strict=True):
        ax = ctx.axes(r)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.axis("off")
        c = fixed or threshold_color(s.last, d.get("thresholds"))
        if background:
            ax.add_patch(FancyBboxPatch((0.01, 0.03), 0.98, 0.94, boxstyle="round,pad=0,rounding_size=0.02",
                                        facecolor=c, edgecolor="none", alpha=0.85, transform=ax.transAxes))
        if opts.get("graphMode") == "area" and np.isfinite(s.v).sum() > 1:
            finite = np.isfinite(s.v)
            v = s.v[finite]
            span = float(v.max() - v.min()) or 1.0
            xs = (s.t[finite] - ctx.src.start) / (ctx.src.end - ctx.src.start)
            ys = 0.05 + 0.3 * (v - v.min()) / span
            line_c = "white" if background else c
            ax.fill_between(xs, 0.03, ys, color=line_c, alpha=0.18, linewidth=0)
            ax.plot(xs, ys, color=line_c, alpha=0.7, linewidth=1)
        fg = "#ffffff" if background else c
        ax.text(0.5, 0.42 if show_name else 0.5, text, color=fg, fontsize=max(size, 8), ha="center", va="center",
                weight="bold")
        if show_name:
            ax.text(0.5, 0.83, s.name, color=fg, fontsize=max(name_size, 6), ha="center", va="center")
    return True


def draw_bargauge(ctx: PanelCtx) -> bool:
    series = [s for t in ctx.targets for s in ctx.src.series(t)]
    if not series:
        no_data(ctx)
        return False
    d = ctx.defaults
    lo, hi = d.get("min", 0), d.get("max", max((s.last or 0) for s in series) or 1)
    ax = ctx.axes(ctx.sub(left=6, right=6, bottom=4, top=2))
    ax.axis("off")
    n = len(series)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, n)
    for i, s in enumerate(series):
        row = n - 1 - i
        v = s.last
        c = threshold_color(v, d.get("thresholds"))
        frac = 0 if v is None else min(max((v - lo) / (hi - lo), 0), 1)
        ax.text(0, row + 0.5, s.name, color=TEXT, fontsize=7.5, va="center", ha="left")
        ax.add_patch(Rectangle((0.36, row + 0.18), 0.5, 0.64, facecolor="#22252b", edgecolor="none"))
        ax.add_patch(Rectangle((0.36, row + 0.18), 0.5 * max(frac, 0.004), 0.64, facecolor=c, edgecolor="none"))
        ax.text(1, row + 0.5, fmt(v, ctx.unit, ctx.decimals), color=c, fontsize=8.5, va="center", ha="right",
                weight="bold")
    return True


def table_frame(ctx: PanelCtx) -> tuple[list[str], list[dict[str, Any]]]:
    """Run the table targets and apply the transformations the mlmon dashboards use."""
    targets = ctx.targets
    frames: list[tuple[str, list[Series]]] = [(t["refId"], ctx.src.series(t, instant=True)) for t in targets]
    rows: dict[tuple, dict[str, Any]] = {}
    columns: list[str] = []
    multi = len(frames) > 1
    for ref, series in frames:
        for s in series:
            labels = dict(s.labels)
            key = tuple(sorted(labels.items()))
            row = rows.setdefault(key, dict(labels))
            col = f"Value #{ref}" if multi else "Value"
            row[col] = s.last
            for k in [*labels, col]:
                if k not in columns:
                    columns.append(k)
    table = list(rows.values())
    label_cols = [c for c in columns if not c.startswith("Value")]
    value_cols = [c for c in columns if c.startswith("Value")]
    columns = label_cols + value_cols
    for tr in ctx.panel.get("transformations", []):
        o = tr.get("options", {})
        if tr["id"] == "merge":
            merged: dict[tuple, dict[str, Any]] = {}
            keys = [c for c in label_cols]
            for row in table:
                k = tuple(row.get(c) for c in keys if c in row and c not in value_cols)
                merged.setdefault(k, {}).update(row)
            table = list(merged.values())
        elif tr["id"] == "groupingToMatrix":
            rf, cf, vf = o["rowField"], o["columnField"], o["valueField"]
            vf = vf if any(vf in r for r in table) else (value_cols[0] if value_cols else vf)
            row_keys = sorted({r[rf] for r in table})
            col_keys = sorted({r[cf] for r in table})
            first = f"{rf}\\{cf}"
            table = [{first: rk, **{ck: next((r[vf] for r in table if r[rf] == rk and r[cf] == ck), None)
                                    for ck in col_keys}} for rk in row_keys]
            columns = [first, *col_keys]
        elif tr["id"] == "organize":
            exclude = {k for k, v in o.get("excludeByName", {}).items() if v}
            columns = [c for c in columns if c not in exclude]
            index = o.get("indexByName", {})
            position = {c: index.get(c, 100 + i) for i, c in enumerate(columns)}
            columns.sort(key=position.__getitem__)
            renames = o.get("renameByName", {})
            table = [{renames.get(k, k): v for k, v in r.items()} for r in table]
            columns = [renames.get(c, c) for c in columns]
    columns = [c for c in columns if c not in {"__name__"}]
    sort = ctx.panel.get("options", {}).get("sortBy") or []
    if sort and sort[0].get("displayName") in columns:
        name = sort[0]["displayName"]
        table.sort(key=lambda r: (r.get(name) is None, r.get(name) if r.get(name) is not None else 0),
                   reverse=bool(sort[0].get("desc")))
        if sort[0].get("desc"):
            table.sort(key=lambda r: r.get(name) is None)
    return columns, table


def draw_table(ctx: PanelCtx) -> bool:
    columns, table = table_frame(ctx)
    if not table:
        no_data(ctx)
        return False
    d = ctx.defaults
    cell_type = d.get("custom", {}).get("cellOptions", {}).get("type")
    scheme = d.get("color", {}).get("mode", "")
    numbers = [v for r in table for v in r.values() if isinstance(v, float) and math.isfinite(v)]
    cmap = LinearSegmentedColormap.from_list("blpu", ["#2b3a67", "#6d4aa7", "#b86fc9"]) \
        if scheme.startswith("continuous") else None
    vmin, vmax = (min(numbers), max(numbers)) if numbers else (0, 1)

    def cell(col: str, v: Any) -> tuple[str, str | None, str]:
        """(text, background, foreground) of a cell."""
        if not isinstance(v, float):
            return ("" if v is None else str(v)), None, TEXT
        props = override_props(ctx.panel, col)
        unit = props.get("unit", ctx.unit)
        text = mapped(v, props.get("mappings", [])) or fmt(v, unit, ctx.decimals)
        ctype = props.get("custom.cellOptions", {}).get("type", cell_type)
        steps = props.get("thresholds")
        if ctype == "color-background":
            if steps:
                return text, threshold_color(v, steps), "#ffffff"
            if cmap is not None:
                return text, matplotlib.colors.to_hex(cmap((v - vmin) / ((vmax - vmin) or 1))), "#ffffff"
        if ctype == "color-text" and steps:
            return text, None, threshold_color(v, steps)
        return text, None, TEXT

    cells = [[cell(c, r.get(c)) for c in columns] for r in table]
    hpx = ctx.size_px()[1]
    row_px = 22
    max_rows = max(int((hpx - row_px - 4) // row_px), 1)
    shown = cells[:max_rows]
    widths = np.array([max([len(c)] + [len(x[0]) for x in (row[j] for row in shown)]) + 2
                       for j, c in enumerate(columns)], dtype=float)
    widths = widths / widths.sum()
    ax = ctx.axes(ctx.sub(left=4, right=4, top=0, bottom=0))
    ax.axis("off")
    ax.set_xlim(0, 1)
    ax.set_ylim(hpx, 0)
    font = 7.5 if len(columns) > 5 else 8
    xs = np.concatenate([[0], np.cumsum(widths)])
    for j, c in enumerate(columns):
        ax.text(xs[j] + 0.005, row_px / 2, c, color=NAMED["blue"], fontsize=font, va="center", weight="bold",
                clip_on=True)
    ax.axhline(row_px, color=BORDER, linewidth=1)
    for i, row in enumerate(shown):
        top = row_px * (i + 1)
        for j, (text, bg, fg) in enumerate(row):
            if bg:
                ax.add_patch(Rectangle((xs[j], top + 1), widths[j] - 0.003, row_px - 2, facecolor=bg,
                                       edgecolor="none", alpha=0.9))
            ax.text(xs[j] + 0.005, top + row_px / 2, text, color=fg, fontsize=font, va="center", clip_on=True)
        ax.axhline(top + row_px, color=GRID, linewidth=0.6)
    if len(cells) > max_rows:
        ax.text(1, hpx - 4, f"+{len(cells) - max_rows} more rows", color=MUTED, fontsize=7, ha="right", va="bottom")
    return True


def draw_barchart(ctx: PanelCtx) -> bool:
    columns, table = table_frame(ctx)
    x_field = ctx.panel.get("options", {}).get("xField")
    value_cols = [c for c in columns if c != x_field and any(isinstance(r.get(c), float) for r in table)]
    if not table or not value_cols:
        no_data(ctx)
        return False
    table.sort(key=lambda r: str(r.get(x_field)))
    hpx = ctx.size_px()[1]
    ax = ctx.axes(ctx.sub(left=48, bottom=58, right=8, top=4))
    style_axes(ax)
    ax.grid(True, axis="y", color=GRID)
    ax.grid(False, axis="x")
    n = len(value_cols)
    width = 0.8 / n
    xs = np.arange(len(table))
    handles = []
    for k, col in enumerate(value_cols):
        props = override_props(ctx.panel, col)
        c = color(props["color"]["fixedColor"]) if "color" in props else PALETTE[k]
        vals = [r.get(col) if isinstance(r.get(col), float) else 0 for r in table]
        handles.append(ax.bar(xs + (k - (n - 1) / 2) * width, vals, width * 0.95, color=c, alpha=0.85, label=col))
    labels = [str(r.get(x_field)) for r in table]
    ax.set_xticks(xs)
    ax.set_xticklabels(labels, rotation=25 if max(map(len, labels)) > 8 else 0, ha="right"
                       if max(map(len, labels)) > 8 else "center", fontsize=6.5)
    unit_axis(ax, ctx.unit, ctx.decimals)
    ax.set_ylim(bottom=ctx.defaults.get("min", None))
    leg_ax = ctx.axes(ctx.sub(left=8, top=hpx - 16))
    leg_ax.axis("off")
    leg_ax.legend(handles=handles, loc="upper left", ncol=n, frameon=False, fontsize=7.5, labelcolor=TEXT,
                  borderaxespad=0, handlelength=1.2)
    return True


def draw_state_timeline(ctx: PanelCtx) -> bool:
    series = [s for t in ctx.targets for s in ctx.src.series(t)]
    if not series:
        no_data(ctx)
        return False
    series.sort(key=lambda s: s.name)
    steps = ctx.defaults.get("thresholds", {}).get("steps", [])
    grid_t = np.arange(ctx.src.start, ctx.src.end + STEP / 2, STEP)
    data = np.full((len(series), len(grid_t)), np.nan)
    for i, s in enumerate(series):
        idx = np.clip(np.round((s.t - ctx.src.start) / STEP).astype(int), 0, len(grid_t) - 1)
        for j, v in zip(idx, s.v, strict=True):
            if np.isfinite(v):
                data[i, j] = sum(1 for st in steps[1:] if v >= st["value"])
    cmap = ListedColormap([color(st["color"]) for st in steps] or [TEXT])
    cmap.set_bad(PANEL_BG)
    hpx = ctx.size_px()[1]
    ax = ctx.axes(ctx.sub(left=max(len(s.name) for s in series) * 6 + 10, bottom=40, right=8, top=2))
    ax.set_facecolor(PANEL_BG)
    ax.imshow(np.ma.masked_invalid(data), aspect="auto", cmap=cmap, vmin=-0.5, vmax=len(steps) - 0.5,
              interpolation="nearest", alpha=0.85,
              extent=(mdates.date2num(to_dt(ctx.src.start)), mdates.date2num(to_dt(ctx.src.end)), len(series), 0))
    ax.hlines(np.arange(1, len(series)), *ax.get_xlim(), color=PANEL_BG, linewidth=2.5)
    ax.set_yticks(np.arange(len(series)) + 0.5)
    ax.set_yticklabels([s.name for s in series], fontsize=7.5, color=TEXT)
    ax.tick_params(colors=MUTED, labelsize=7.5, length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.xaxis_date()
    time_axis(ax, ctx.src)
    leg_ax = ctx.axes(ctx.sub(left=8, top=hpx - 14))
    leg_ax.axis("off")
    labels = []
    for i, st in enumerate(steps):
        lo = "" if st.get("value") is None else fmt(st["value"], ctx.unit)
        hi = fmt(steps[i + 1]["value"], ctx.unit) if i + 1 < len(steps) else ""
        labels.append(f"< {hi}" if not lo else (f"≥ {lo}" if not hi else f"{lo} – {hi}"))
    handles = [Rectangle((0, 0), 1, 1, color=color(st["color"])) for st in steps]
    leg_ax.legend(handles, labels, loc="upper left", ncol=len(steps), frameon=False, fontsize=7.5, labelcolor=TEXT,
                  borderaxespad=0, handlelength=1.2)
    return True


DRAW: dict[str, Callable[[PanelCtx], bool]] = {
    "timeseries": draw_timeseries, "stat": draw_stat, "bargauge": draw_bargauge, "table": draw_table,
    "barchart": draw_barchart, "state-timeline": draw_state_timeline,
}


# ------------------------------------------------------------------------------------------------
# Dashboards

def annotation_starts(src: Source, ann: dict[str, Any]) -> list[float]:
    """Times of an annotation query's events: the value (ms) with ``useValueForTime``, else where
    each run of consecutive points of a series begins (Grafana joins a run into one region)."""
    if ann.get("useValueForTime"):
        return [s.last / 1000 for s in src.series({"expr": ann["expr"]}, instant=True) if s.last]
    starts = []
    for s in src.series({"expr": ann["expr"]}, instant=False):
        gaps = np.flatnonzero(np.diff(s.t) > 1.5 * STEP) + 1
        starts += [float(s.t[i]) for i in (0, *gaps) if s.t.size]
    return starts


def render_dashboard(dashboard: dict[str, Any], prom: Prometheus, start: float, end: float,
                     drift_at: float | None, out: Path, scrape_interval: float) -> list[str]:
    """Draw one dashboard; returns the titles of panels that had no data."""
    prom_url = prom.url
    builtins = live.grafana_builtins(scrape_interval, range_s=round(end - start))
    values = live.resolve_variables(prom, dashboard, builtins)
    choices: dict[str, list[str]] = {}
    for var in dashboard["templating"]["list"]:
        if var.get("type") == "query":
            all_values = live.label_values(prom, live.substitute(live.variable_query(var), values))
            multi_all = var.get("includeAll") and (var.get("current") or {}).get("value") == ["$__all"]
            choices[var["name"]] = all_values if multi_all else [values[var["name"]]]
    placed = expand_repeats(dashboard["panels"], values, choices)
    rows = max(p.y + p.h for p in placed)
    shown_vars = "   ".join(f"{v['label'] or v['name']}: "
                           + (f"All ({len(choices[v['name']])})" if len(choices[v["name"]]) > 1 else values[v["name"]])
                           for v in dashboard["templating"]["list"] if v["name"] in choices)
    drift = f" (demo traffic; drift injected at {to_dt(drift_at):%H:%M:%S})" if drift_at else ""
    subtitle = (f"{shown_vars}      {to_dt(start):%H:%M:%S} – {to_dt(end):%H:%M:%S} UTC{drift}\n"
                "drawn by docs/render_dashboards.py from the dashboard JSON and live Prometheus queries "
                "(not a Grafana screenshot)")
    canvas = Canvas(rows, dashboard["title"], subtitle)
    deploys = []
    for ann in dashboard["annotations"]["list"]:
        if ann.get("expr") and ann.get("enable") and ann.get("name") == "Deploys":
            deploys += annotation_starts(Source(prom_url, start, end, values), ann)
    empty = []
    for pl in placed:
        p = pl.panel
        title = live.substitute(p.get("title", ""), pl.values)
        left, bottom, width, height = canvas.box(pl.x, pl.y, pl.w, pl.h)
        if p["type"] == "row":
            canvas.fig.text(left, bottom + height / 2, title, color=TEXT, fontsize=11, weight="bold", va="center")
            continue
        canvas.fig.patches.append(FancyBboxPatch((left, bottom), width, height, transform=canvas.fig.transFigure,
                                                 boxstyle="round,pad=0,rounding_size=0.002", facecolor=PANEL_BG,
                                                 edgecolor=BORDER, linewidth=1, zorder=-1))
        canvas.fig.text(left + 8 / canvas.W, bottom + height - 14 / canvas.H, title, color=TEXT, fontsize=9.5,
                        weight="bold", va="center", clip_on=True)
        ctx = PanelCtx(canvas, p, Source(prom_url, start, end, pl.values), (left, bottom, width,
                       height - 28 / canvas.H), deploys)
        draw = DRAW.get(p["type"])
        try:
            ok = draw(ctx) if draw else False
        except Exception as e:  # show the problem in the picture and report it
            ok = False
            ctx.axes().text(0.5, 0.5, f"error: {e}"[:120], color=NAMED["red"], fontsize=8, ha="center",
                            va="center", wrap=True)
            print(f"  {dashboard['uid']}: {title}: {e!r}", file=sys.stderr)
        if not ok:
            empty.append(title)
    save_png(canvas.fig, out)
    plt.close(canvas.fig)
    return empty


def save_png(fig: Any, out: Path) -> None:
    """Save, and quantize to a 256-colour palette if the PNG would exceed the README budget."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, facecolor=BG)
    data = buf.getvalue()
    if len(data) > MAX_PNG_BYTES * 0.9:
        from PIL import Image  # Pillow comes with matplotlib

        image = Image.open(io.BytesIO(data)).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
        buf = io.BytesIO()
        image.save(buf, format="PNG", optimize=True)
        data = buf.getvalue()
    out.write_bytes(data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=170, help="seconds of demo traffic (default: %(default)s)")
    parser.add_argument("--drift-after", type=float, default=60, help="drift starts after (default: %(default)s s)")
    parser.add_argument("--rate", type=float, default=100, help="predictions per second (default: %(default)s)")
    parser.add_argument("--label-delay", type=float, default=10, help="mean label delay (default: %(default)s s)")
    parser.add_argument("--prometheus", metavar="URL",
                        help="render the last --duration seconds of this running Prometheus instead of starting "
                             "the demo stack (e.g. http://localhost:9090 of docker-compose.yml)")
    parser.add_argument("--scrape-interval", type=float, metavar="SECONDS",
                        help="the data source's scrape interval for $__rate_interval (default: 1 for the demo "
                             "stack, which scrapes every second; 15, Grafana's default, with --prometheus)")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="output folder (default: docs/img)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.prometheus:
        end = time.time()
        return render_all(Prometheus(args.prometheus.rstrip("/"), None), end - args.duration, end, None, args.out,
                          args.scrape_interval or 15.0)
    if shutil.which("prometheus") is None:
        print("prometheus is not on PATH (apt-get install prometheus)", file=sys.stderr)
        return 2
    from stack import demo_exporter, prometheus, rules_with_short_for

    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        with demo_exporter(rate=args.rate, drift_after=args.drift_after, label_delay=args.label_delay) as exporter, \
                prometheus(tmp, [exporter.target], rules_with_short_for(tmp)) as prom:
            start = time.time()
            print(f"demo traffic for {args.duration:g} s, drift after {args.drift_after:g} s ...", flush=True)
            time.sleep(args.duration)
            return render_all(prom, start + 5, time.time(), start + args.drift_after, args.out,
                              args.scrape_interval or 1.0)


def render_all(prom: Prometheus, start: float, end: float, drift_at: float | None, out_dir: Path,
               scrape_interval: float) -> int:
    failed = 0
    for dashboard in live.load_dashboards().values():
        path = out_dir / f"{dashboard['uid']}.png"
        empty = render_dashboard(dashboard, prom, start, end, drift_at, path, scrape_interval)
        size = path.stat().st_size
        shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
        print(f"wrote {shown} ({size // 1024} KB)" + (f"; panels without data: {empty}" if empty else ""))
        failed += size > MAX_PNG_BYTES
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
