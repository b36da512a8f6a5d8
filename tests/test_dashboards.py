"""Static checks of the Grafana dashboards and provisioning (no Grafana server needed).

``lint_dashboard`` is reusable: it returns one readable problem per line, empty when the
dashboard follows mlmon's conventions (DESIGN.md, "Alerting and dashboards"):

* a ``datasource`` variable (type ``datasource``, query ``prometheus``) used by every panel,
  target, variable and annotation; ``model`` and ``version`` query variables from ``label_values()``;
* every panel has a title, and every non-row panel a description and a unit;
* counters (``*_total``, ``*_bucket``, ``*_count``, ``*_sum``) appear only directly inside
  ``rate()`` / ``increase()``, whose range is ``$__rate_interval`` — or ``$__range`` for totals
  over the selected time range (distributions, confusion matrix), or one of the fixed SLO policy
  windows for ``mlmon_slo_*`` counters (a burn rate over 1h means 1h whatever the zoom);
* unique panel ids, grid positions inside the 24 columns and not overlapping;
* ``editable: false`` and ``schemaVersion`` 39.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.contract import series_names

ROOT = Path(__file__).resolve().parents[1]
GRAFANA = ROOT / "grafana"
DASHBOARD_DIR = GRAFANA / "dashboards"

# Stable uids: links, bookmarks and alert annotations point at these. Change only on purpose.
EXPECTED_UIDS = {
    "overview.json": "mlmon-overview",
    "service.json": "mlmon-service",
    "drift.json": "mlmon-drift",
    "quality.json": "mlmon-quality",
}

SCHEMA_VERSION = 39
COUNTER_SUFFIXES = ("_total", "_bucket", "_count", "_sum")
RANGE_FUNCTIONS = {"rate", "increase"}
WINDOW_VARIABLES = {"$__rate_interval", "$__range"}
SLO_WINDOWS = {"5m", "30m", "1h", "2h", "6h", "1d", "3d", "30d"}  # DESIGN.md burn-rate policy + period
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
KEYWORDS = GROUPING | {"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"}
DS_UID = "${datasource}"

_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
  | (?P<labels>\{(?:"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|[^{}"'])*\})
  | (?P<range>\[[^\]]*\])
  | (?P<number>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?(?:ms|[smhdwy])?)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<open>\()
  | (?P<close>\))
  | (?P<other>.)
""", re.VERBOSE)


def _tokens(expr: str) -> list[tuple[str, str]]:
    return [(m.lastgroup, m.group()) for m in _TOKEN.finditer(expr) if m.lastgroup != "space"]


def lint_expr(expr: str) -> list[str]:
    """Counter and range-window rules for one PromQL expression (a small tokenizer, not a parser)."""
    problems: list[str] = []
    toks = _tokens(expr)
    stack: list[str | None] = []  # enclosing call per open paren: function name, None, or "<labels>"
    last_metric: str | None = None
    depth_ok = True
    for i, (kind, text) in enumerate(toks):
        nxt = toks[i + 1] if i + 1 < len(toks) else ("", "")
        if kind == "open":
            prev_kind, prev = toks[i - 1] if i else ("", "")
            if prev_kind == "ident" and prev in GROUPING:
                stack.append("<labels>")
            elif prev_kind == "ident":
                stack.append(prev)
            else:
                stack.append(None)
        elif kind == "close":
            if not stack:
                depth_ok = False
                break
            stack.pop()
        elif kind == "ident":
            if stack and stack[-1] == "<labels>":
                continue  # label names of by (...) / on (...)
            if text in KEYWORDS or nxt[0] == "open":
                continue  # keyword, or a function / aggregation name
            last_metric = text
            if text.endswith(COUNTER_SUFFIXES):
                inside = stack[-1] if stack else None
                ranged = nxt[0] == "range" or (nxt[0] == "labels" and i + 2 < len(toks)
                                                and toks[i + 2][0] == "range")
                if inside not in RANGE_FUNCTIONS or not ranged:
                    problems.append(f"counter {text} used outside rate()/increase(): {expr}")
        elif kind == "range":
            window = text[1:-1].strip()
            if ":" in window:
                problems.append(f"subquery [{window}] (use a recording rule): {expr}")
            elif window in WINDOW_VARIABLES or (window in SLO_WINDOWS and (last_metric or "").startswith("mlmon_slo_")):
                pass
            else:
                problems.append(f"range [{window}] on {last_metric}: use $__rate_interval "
                                f"(or $__range for whole-range totals): {expr}")
            if not stack or stack[-1] not in RANGE_FUNCTIONS:
                problems.append(f"range [{window}] outside rate()/increase(): {expr}")
    if not depth_ok or stack:
        problems.append(f"unbalanced parentheses: {expr}")
    return problems


def _all_panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for p in panels:
        out.append(p)
        out.extend(p.get("panels") or [])  # a collapsed row keeps its panels inside it
    return out


def _overlaps(a: dict[str, int], b: dict[str, int]) -> bool:
    return (a["x"] < b["x"] + b["w"] and b["x"] < a["x"] + a["w"]
            and a["y"] < b["y"] + b["h"] and b["y"] < a["y"] + a["h"])


def _ds_uid(obj: dict[str, Any]) -> str | None:
    ds = obj.get("datasource")
    return ds.get("uid") if isinstance(ds, dict) else ds


def lint_dashboard(dashboard: dict[str, Any]) -> list[str]:
    """Every convention problem of one dashboard, as readable strings (empty list = clean)."""
    problems: list[str] = []
    name = dashboard.get("uid") or dashboard.get("title") or "<dashboard>"

    def bad(msg: str) -> None:
        problems.append(f"{name}: {msg}")

    if not dashboard.get("uid"):
        bad("no uid")
    if not dashboard.get("title"):
        bad("no title")
    if dashboard.get("editable") is not False:
        bad("editable must be false (provisioned dashboards are changed in the generator)")
    if dashboard.get("schemaVersion") != SCHEMA_VERSION:
        bad(f"schemaVersion must be {SCHEMA_VERSION}, not {dashboard.get('schemaVersion')!r}")

    # -- variables
    variables = {v.get("name"): v for v in dashboard.get("templating", {}).get("list", [])}
    ds = variables.get("datasource")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        bad("needs a 'datasource' variable of type datasource with query 'prometheus'")
    for required in ("model", "version"):
        if required not in variables:
            bad(f"needs a '{required}' variable")
    for vname, var in variables.items():
        if var.get("type") != "query":
            continue
        query = var.get("query")
        text = query.get("query", "") if isinstance(query, dict) else str(query or "")
        if not text.startswith("label_values("):
            bad(f"variable {vname}: query must use label_values(...), not {text!r}")
        if _ds_uid(var) != DS_UID:
            bad(f"variable {vname}: datasource must be {DS_UID}")

    # -- annotations
    for ann in dashboard.get("annotations", {}).get("list", []):
        if ann.get("builtIn"):
            continue
        if _ds_uid(ann) != DS_UID:
            bad(f"annotation {ann.get('name')!r}: datasource must be {DS_UID}")
        if ann.get("expr"):
            problems.extend(f"{name}: annotation {ann.get('name')!r}: {p}" for p in lint_expr(ann["expr"]))

    # -- panels
    seen_ids: dict[Any, str] = {}
    for p in _all_panels(dashboard.get("panels", [])):
        title = p.get("title") or ""
        label = f"panel {p.get('id')} {title!r}"
        if not title.strip():
            bad(f"{label}: no title")
        pid = p.get("id")
        if pid is None:
            bad(f"{label}: no id")
        elif pid in seen_ids:
            bad(f"{label}: id {pid} also used by {seen_ids[pid]!r}")
        else:
            seen_ids[pid] = title
        grid = p.get("gridPos") or {}
        if not all(isinstance(grid.get(k), int) for k in ("x", "y", "w", "h")):
            bad(f"{label}: gridPos needs integer x, y, w, h")
        elif grid["w"] <= 0 or grid["h"] <= 0 or grid["x"] < 0 or grid["x"] + grid["w"] > 24:
            bad(f"{label}: gridPos {grid} is outside the 24-column grid")
        if p.get("type") == "row":
            continue
        if not (p.get("description") or "").strip():
            bad(f"{label}: no description")
        if not ((p.get("fieldConfig") or {}).get("defaults") or {}).get("unit"):
            bad(f"{label}: no unit (fieldConfig.defaults.unit)")
        if _ds_uid(p) != DS_UID:
            bad(f"{label}: datasource must be {DS_UID}")
        targets = p.get("targets") or []
        if not targets:
            bad(f"{label}: no queries")
        ref_ids = [t.get("refId") for t in targets]
        if len(set(ref_ids)) != len(ref_ids) or None in ref_ids:
            bad(f"{label}: refIds must be present and unique, got {ref_ids}")
        for t in targets:
            if _ds_uid(t) != DS_UID:
                bad(f"{label} {t.get('refId')}: datasource must be {DS_UID}")
            if not t.get("expr"):
                bad(f"{label} {t.get('refId')}: empty expr")
                continue
            problems.extend(f"{name}: {label} {t.get('refId')}: {msg}" for msg in lint_expr(t["expr"]))

    def check_overlaps(panels: list[dict[str, Any]], where: str) -> None:
        placed = [(p, p["gridPos"]) for p in panels if isinstance(p.get("gridPos"), dict)
                  and all(isinstance(p["gridPos"].get(k), int) for k in ("x", "y", "w", "h"))]
        for i, (a, ga) in enumerate(placed):
            for b, gb in placed[i + 1:]:
                if _overlaps(ga, gb):
                    bad(f"{where}: panels {a.get('title')!r} and {b.get('title')!r} overlap ({ga} / {gb})")

    top = dashboard.get("panels", [])
    check_overlaps(top, "grid")
    for row in top:
        if row.get("panels"):
            check_overlaps(row["panels"], f"collapsed row {row.get('title')!r}")
    return problems


# ------------------------------------------------------------------------------------------------

def _load_builder():
    spec = importlib.util.spec_from_file_location("build_dashboards", GRAFANA / "build_dashboards.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _dashboards() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text(encoding="utf-8")) for p in sorted(DASHBOARD_DIR.glob("*.json"))}


def test_expected_dashboards_exist_with_stable_uids():
    dashboards = _dashboards()
    assert set(dashboards) == set(EXPECTED_UIDS)
    for file, uid in EXPECTED_UIDS.items():
        assert dashboards[file]["uid"] == uid, f"{file}: uid changed; links and bookmarks would break"


@pytest.mark.parametrize("file", sorted(EXPECTED_UIDS))
def test_dashboard_follows_conventions(file):
    problems = lint_dashboard(json.loads((DASHBOARD_DIR / file).read_text(encoding="utf-8")))
    assert problems == [], "\n".join(problems)


def test_lint_reports_missing_unit_and_description():
    broken = copy.deepcopy(_dashboards()["service.json"])
    panels = [p for p in broken["panels"] if p["type"] != "row"]
    no_unit, no_description = panels[0], panels[1]
    del no_unit["fieldConfig"]["defaults"]["unit"]
    no_description["description"] = ""
    problems = lint_dashboard(broken)
    assert any("no unit" in p and repr(no_unit["title"]) in p for p in problems), problems
    assert any("no description" in p and repr(no_description["title"]) in p for p in problems), problems
    assert len(problems) == 2, problems


def test_lint_reports_layout_and_variable_problems():
    broken = copy.deepcopy(_dashboards()["drift.json"])
    panels = [p for p in broken["panels"] if p["type"] != "row"]
    panels[1]["gridPos"] = dict(panels[0]["gridPos"])  # on top of its neighbour
    panels[2]["id"] = panels[3]["id"]
    broken["templating"]["list"] = [v for v in broken["templating"]["list"] if v["name"] != "datasource"]
    broken["editable"] = True
    text = "\n".join(lint_dashboard(broken))
    for expected in ("overlap", "also used by", "'datasource' variable", "editable must be false"):
        assert expected in text, text


@pytest.mark.parametrize(("expr", "expected"), [
    ('sum(rate(mlmon_predictions_total{model=~"$model"}[$__rate_interval]))', None),
    ('histogram_quantile(0.99, sum by (model, le) (rate(mlmon_prediction_latency_seconds_bucket[$__rate_interval])))',
     None),
    ("sum by (bin) (increase(mlmon_feature_bin_total[$__range]))", None),
    ("sum(rate(mlmon_slo_bad_events_total[1h])) / sum(rate(mlmon_slo_events_total[1h]))", None),
    ('(sum by (m) (rate(a_total[$__rate_interval])) or sum by (m) (rate(b_total[$__rate_interval])) * 0)', None),
    ("min by (model, version) (mlmon_model_version_first_seen_timestamp_seconds) * 1000", None),
    ('ALERTS{alertname=~"Mlmon.*", alertstate="firing"} or on() vector(0)', None),
    ("mlmon_predictions_total", "outside rate()"),
    ("sum(mlmon_confusion_total)", "outside rate()"),
    ("mlmon_prediction_latency_seconds_sum / mlmon_prediction_latency_seconds_count", "outside rate()"),
    ("delta(mlmon_predictions_total[$__rate_interval])", "outside rate()"),
    ("rate(mlmon_predictions_total[5m])", "use $__rate_interval"),
    ("rate(mlmon_predictions_total[1h])", "use $__rate_interval"),
    ("max_over_time(mlmon_window_samples[$__rate_interval:1m])", "subquery"),
    ("sum(rate(mlmon_predictions_total[$__rate_interval])", "unbalanced"),
])
def test_lint_expr(expr, expected):
    problems = lint_expr(expr)
    if expected is None:
        assert problems == []
    else:
        assert any(expected in p for p in problems), problems


def test_committed_json_matches_generator():
    built = _load_builder().build_all()
    assert set(built) == {p.name for p in DASHBOARD_DIR.glob("*.json")}
    for name, text in built.items():
        assert (DASHBOARD_DIR / name).read_text(encoding="utf-8") == text, (
            f"{name} differs from grafana/build_dashboards.py output; run python grafana/build_dashboards.py")


def test_generator_is_deterministic():
    builder = _load_builder()
    assert builder.build_all() == builder.build_all()


def test_dashboards_link_to_each_other():
    for file, dashboard in _dashboards().items():
        targets = {link.get("url", "").split("/")[2] for link in dashboard["links"] if link.get("url")}
        others = set(EXPECTED_UIDS.values()) - {dashboard["uid"]}
        assert others <= targets, f"{file}: missing links to {sorted(others - targets)}"
        assert all(link.get("keepTime") and link.get("includeVars") for link in dashboard["links"])


def test_dashboard_specifics():
    boards = _dashboards()
    overview = boards["overview.json"]
    assert any(p["type"] == "row" and p.get("repeat") == "model" for p in overview["panels"]), \
        "overview must repeat one row per model"
    exprs = {name: " ".join(t["expr"] for p in b["panels"] for t in p.get("targets", []))
             for name, b in boards.items()}
    assert "mlmon_model_health_score" in exprs["overview.json"]
    assert 'ALERTS{alertname=~"Mlmon.*", alertstate="firing"' in exprs["overview.json"]
    assert "mlmon_slo_latency_threshold_seconds" in exprs["service.json"]
    assert "histogram_quantile(0.99" in exprs["service.json"]
    assert '"__prediction__"' in exprs["drift.json"] and "mlmon_baseline_bin_ratio" in exprs["drift.json"]
    assert "mlmon_confusion_total" in exprs["quality.json"] and "mlmon_fairness_gap" in exprs["quality.json"]
    deploys = [a for a in boards["service.json"]["annotations"]["list"]
               if "first_seen" in a.get("expr", "")]
    assert deploys and deploys[0]["useValueForTime"] and "* 1000" in deploys[0]["expr"]
    drift_vars = {v["name"] for v in boards["drift.json"]["templating"]["list"]}
    assert "feature" in drift_vars


def _contract_text() -> str | None:
    """The catalogue (exporter/contract.py) as text: every series name it declares."""
    return " ".join(sorted(series_names()))


def test_dashboards_use_only_contract_metrics():
    contract = _contract_text()
    assert contract, "exporter/contract.py declares no metric"
    used = set()
    for dashboard in _dashboards().values():
        texts = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
        texts += [a.get("expr", "") for a in dashboard["annotations"]["list"]]
        texts += [v.get("definition", "") for v in dashboard["templating"]["list"]]
        for text in texts:
            used.update(re.findall(r"\bmlmon_[a-z0-9_]+", text))
    documented = set(re.findall(r"\bmlmon_[a-z0-9_]+", contract))
    # histograms are documented by their base name
    documented |= {f"{m}{s}" for m in documented for s in ("_bucket", "_count", "_sum")}
    missing = sorted(m for m in used if m not in documented)
    assert not missing, f"metrics not in the contract: {missing}"


# -- provisioning --------------------------------------------------------------------------------

def test_datasource_provisioning():
    doc = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text(encoding="utf-8"))
    assert doc["apiVersion"] == 1
    [ds] = doc["datasources"]
    assert ds["type"] == "prometheus"
    assert ds["uid"] == "prometheus"
    assert ds["url"].startswith("http")
    assert ds["name"] and ds.get("access", "proxy") == "proxy"


def test_dashboard_provisioning():
    doc = yaml.safe_load((GRAFANA / "provisioning/dashboards/mlmon.yml").read_text(encoding="utf-8"))
    assert doc["apiVersion"] == 1
    [provider] = doc["providers"]
    assert provider["type"] == "file"
    assert provider["folder"] == "mlmon"
    assert provider["options"]["path"].startswith("/")
    assert provider["name"]
