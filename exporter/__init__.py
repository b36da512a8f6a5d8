"""mlmon: a Prometheus sidecar that keeps machine-learning models in production honest."""

__version__ = "0.1.0"
