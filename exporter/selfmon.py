"""Self-monitoring: what the sidecar itself costs, in one place.

The registry is custom (no default collectors), so the process (CPU, memory, file descriptors),
platform and garbage-collector collectors are added here, together with the time a scrape takes
to render, which the dashboards' resource row and the runbooks ("raise the memory limit") read.
The evaluation duration is exported per model by the collector (``mlmon_evaluation_duration_seconds``).
"""

from __future__ import annotations

import time

from prometheus_client import (
    GC_COLLECTOR,
    CollectorRegistry,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)

from exporter.contract import spec

SCRAPE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class SelfMonitor:
    """Registers the process/platform/GC collectors and times every exposition."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        if GC_COLLECTOR is not None:  # None on interpreters without gc statistics
            GCCollector(registry=registry)
        # The histogram is the contract's _bucket/_sum/_count only: no extra _created gauge (the
        # collector's families have none either).
        disable_created_metrics()
        declared = spec("mlmon_scrape_duration_seconds")
        self.scrape_duration = Histogram(declared.name, declared.help, buckets=SCRAPE_BUCKETS, registry=registry)

    def exposition(self) -> bytes:
        start = time.perf_counter()
        body = generate_latest(self.registry)
        self.scrape_duration.observe(time.perf_counter() - start)
        return body
