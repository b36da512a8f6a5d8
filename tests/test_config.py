"""Config validation: every error names its key path and reason; all errors at once."""

from __future__ import annotations

import textwrap

import pytest
import yaml

from exporter.cli import main
from exporter.config import ConfigError, config_from_dict, load_config, parse_duration

VALID = """
server: {listen: "127.0.0.1:9100", max_body_bytes: 2000000}
defaults: {window: 30m, bucket: 30s, evaluation_interval: 10s, min_samples: 100}
models:
  - name: churn
    baseline: churn.baseline.json
    task: classification
    positive_class: churn
    drift:
      methods: [psi, js, ks, wasserstein, chi2]
      detection: {numeric: ks, categorical: js}
      thresholds: {psi: 0.25, ks: 0.15}
      features: {age: {detection: psi, thresholds: {psi: 0.3}}}
    latency_buckets: [0.01, 0.1, 1]
    slos:
      - {name: fast, type: latency, threshold: 200ms, objective: 0.99}
      - {name: up, type: availability, objective: 0.999}
    quality: {thresholds: {accuracy: "baseline - 0.05", mae: 3}}
    labels: {ttl: 2d, max_pending: 5000, stale_after: 6h}
    fairness: {attributes: [gender], threshold: 0.2}
  - name: price
    task: regression
    window: {window: 2h}
    slos: [{name: correct, type: correctness, objective: 0.9, tolerance: 5}]
"""


def test_valid_config_is_typed():
    cfg = config_from_dict(yaml.safe_load(VALID))
    assert cfg.server.port == 9100 and cfg.server.host == "127.0.0.1"
    churn, price = cfg.models
    assert churn.window.window_seconds == 1800 and churn.window.bucket_seconds == 30
    assert churn.window.n_buckets == 60 and churn.window.min_samples == 100
    assert churn.drift.detection_for("age", "numeric") == "psi"
    assert churn.drift.detection_for("income", "numeric") == "ks"
    assert churn.drift.threshold_for("age", "psi") == 0.3
    assert churn.drift.threshold_for("income", "psi") == 0.25
    assert churn.drift.threshold_for("income", "js") is None  # auto: calibrated to the window's n
    assert churn.slos[0].threshold_seconds == pytest.approx(0.2)
    assert churn.quality_thresholds["accuracy"].resolve(0.9) == pytest.approx(0.85)
    assert churn.quality_thresholds["mae"].resolve(None) == 3
    assert churn.labels.ttl_seconds == 2 * 86400 and churn.labels.stale_after_seconds == 6 * 3600
    assert price.window.window_seconds == 7200 and price.window.bucket_seconds == 30
    assert price.slos[0].tolerance == 5


@pytest.mark.parametrize(("patch", "expected"), [
    ({"models": [{"name": "a", "drift": {"thresholds": {"psi": -1}}}]},
     "models[0].drift.thresholds.psi: must be a positive number"),
    ({"models": [{"name": "a", "drift": {"thresholds": {"chi2": 5}}}]},
     "models[0].drift.thresholds.chi2: must be at most 1"),
    ({"models": [{"name": "a", "drift": {"methods": ["psi", "magic"]}}]},
     "models[0].drift.methods[1]: unknown method 'magic'"),
    ({"models": [{"name": "a", "drift": {"methods": ["psi"], "detection": {"numeric": "ks"}}}]},
     "models[0].drift.detection.numeric: method 'ks' is not in drift.methods"),
    ({"models": [{"name": "a", "task": "ranking"}]},
     "models[0].task: must be one of classification, regression, not 'ranking'"),
    ({"models": [{"name": "a", "slos": [{"type": "latency", "objective": 0.99}]}]},
     "models[0].slos[0].threshold: is required for a latency SLO"),
    ({"models": [{"name": "a", "slos": [{"type": "availability", "objective": 1}]}]},
     "models[0].slos[0].objective: must be below 1"),
    ({"models": [{"name": "a", "quality": {"thresholds": {"accuracy": "best"}}}]},
     "models[0].quality.thresholds.accuracy: must be a number or 'baseline - X'"),
    ({"models": [{"name": "a", "window": {"window": "soon"}}]},
     "models[0].window.window: must be a duration such as 15s"),
    ({"models": [{"name": "a"}, {"name": "a"}]}, "models[1].name: duplicate model name 'a'"),
    ({"models": [{"name": "a", "colour": "red"}]}, "models[0].colour: unknown key"),
    ({"server": {"listen": "8000"}, "models": [{"name": "a"}]}, "server.listen: must be HOST:PORT"),
    ({"models": []}, "models: must be a non-empty list"),
    ({"models": [{"name": "a", "latency_buckets": [1, 0.5]}]}, "models[0].latency_buckets: must be"),
])
def test_errors_name_the_key_path(patch, expected):
    with pytest.raises(ConfigError) as err:
        config_from_dict(patch)
    assert any(p.startswith(expected) for p in err.value.problems), err.value.problems


def test_all_problems_are_reported_at_once():
    with pytest.raises(ConfigError) as err:
        config_from_dict({"models": [{"name": "a", "task": "x", "drift": {"thresholds": {"psi": "high"}}}],
                          "server": {"threads": 0}})
    assert len(err.value.problems) == 3


@pytest.mark.parametrize(("text", "seconds"), [("200ms", 0.2), ("15s", 15), ("1m", 60), ("1h", 3600),
                                               ("7d", 604800), (30, 30), ("1.5h", 5400)])
def test_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


def test_baseline_paths_are_relative_to_the_config_file(tmp_path):
    (tmp_path / "mlmon.yaml").write_text("models: [{name: a, baseline: a.json}]\n")
    assert load_config(tmp_path / "mlmon.yaml").models[0].baseline == str(tmp_path / "a.json")


def test_invalid_yaml_names_the_line(tmp_path):
    (tmp_path / "bad.yaml").write_text("models:\n  - name: [a\n")
    with pytest.raises(ConfigError, match="invalid YAML at line"):
        load_config(tmp_path / "bad.yaml")


def test_check_config_command(tmp_path, capsys, small_baseline):
    small_baseline.save(tmp_path / "shop.json")
    good = tmp_path / "good.yaml"
    good.write_text(textwrap.dedent("""
        models:
          - name: shop
            baseline: shop.json
            drift: {features: {age: {thresholds: {wasserstein: 0.2}}}}
    """))
    assert main(["check-config", str(good)]) == 0
    assert "OK (1 model(s)" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  - name: shop\n    baseline: shop.json\n    drift: {features: {height: {}}}\n")
    assert main(["check-config", str(bad)]) == 1
    assert "drift.features: height not in the baseline" in capsys.readouterr().err
    missing = tmp_path / "missing.yaml"
    missing.write_text("models: [{name: shop, baseline: nope.json}]\n")
    assert main(["check-config", str(missing)]) == 1
    assert "nope.json: cannot read" in capsys.readouterr().err
