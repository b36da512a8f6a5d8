"""mlmon's monitoring mixin: one config from which the Prometheus rules, their promtool unit tests
and the Grafana dashboards are generated (``python -m mixin``; ``--check`` in CI)."""
